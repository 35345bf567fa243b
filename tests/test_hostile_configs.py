"""Hostile config files (issue 13): suites, price lists and compare configs are
untrusted. Non-finite or absurd numbers, non-UTF-8 text, duplicate keys and values that
could only fail at run time are refused when the file is loaded: exit 2, one line
``FILE:LINE: what is wrong ... what is allowed``, no traceback; the equivalent flags go
through the same bounds (harness/core/suite.py: LIMITS).

Most cases run the real CLI in this process (``harness.cli.main``, with the runner
replaced by a tripwire so that nothing is ever measured); a few run ``python -m harness``
as a user would, to show the process-level contract (exit code, stderr)."""

from __future__ import annotations

import codecs
import json
import math
from pathlib import Path
from typing import Any

import pytest

from harness.core.suite import Settings

ZEROS_400 = "1" + "0" * 400  # an int literal of 401 digits (10**400)
DIGITS_5000 = "1" + "0" * 5000  # over Python's 4300-digit int conversion limit
QUICK = "settings:\n  size: tiny\n  min_time_s: 0.01\n  warmup_max_s: 0.01\n"  # cheap if it ever ran


@pytest.fixture
def harness_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """``harness ARGS`` in this process -> (exit code, stdout, stderr); a command that
    got past validation hits a tripwire instead of measuring anything (on code without
    the bounds, ``calibrate --budget 1e9`` would otherwise time for 30 years)."""
    import harness.core.calibrate
    import harness.analysis.parity
    import harness.launch.runner

    def tripwire(*a: Any, **k: Any) -> Any:
        raise AssertionError("got past validation: a measurement was started")

    monkeypatch.setattr(harness.launch.runner, "run_suite", tripwire)
    monkeypatch.setattr(harness.core.calibrate, "measure_device", tripwire)
    monkeypatch.setattr(harness.analysis.parity, "verify", tripwire)

    def call(args: list[str]) -> tuple[int, str, str]:
        from harness.cli import main

        try:
            rc = main(args)
        except SystemExit as e:  # argparse errors
            rc = int(e.code or 0)
        out, err = capsys.readouterr()
        return rc, out, err

    return call


def _one_line(rc: int, err: str, where: str, *needles: str) -> None:
    """Exit 2; one line on stderr, ``...: error: WHERE: ...`` with every needle; no traceback."""
    assert rc == 2, (rc, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"error: {where}: " in lines[0], (where, lines[0])
    for n in needles:
        assert n in lines[0], (n, lines[0])


# ----------------------------------------------------------------------------- suites

SUITE_CASES = [
    # (id, file text, line, needles)
    ("inf", "settings:\n  size: tiny\n  min_time_s: .inf\n", 3, ["settings.min_time_s", "<= 86400 s (24 h)", "inf"]),
    ("nan", "settings:\n  warmup_max_s: .nan\n", 2, ["settings.warmup_max_s", "<= 86400", "nan"]),
    ("neg-inf", "settings:\n  idle_baseline_s: -.inf\n", 2, ["settings.idle_baseline_s", ">= 0 and <= 3600"]),
    ("1e308", "settings:\n  timeout_s: 1.0e+308\n", 2, ["settings.timeout_s", "<= 604800 s (7 days)"]),
    ("timeout-a-year", "settings:\n  timeout_s: 31536000\n", 2, ["settings.timeout_s", "7 days"]),
    ("min-time-1e9", "settings:\n  min_time_s: 1000000000\n", 2, ["settings.min_time_s", "24 h"]),
    ("int-10**400", f"settings:\n  min_samples: {ZEROS_400}\n", 2,
     ["settings.min_samples", "401-digit integer", "<= 10,000,000"]),
    ("int-5000-digits", f"name: x\nsettings:\n  seed: {DIGITS_5000}\n", 3, ["5001 digits"]),
    ("min-samples-1e9", "settings:\n  min_samples: 1000000000\n", 2, ["settings.min_samples", "<= 10,000,000"]),
    ("min-samples-1e9-text", "settings:\n  min_samples: 1e9\n", 2,
     ["settings.min_samples", "not of type integer", "write 1000000000"]),
    ("repeats", "settings:\n  repeats: 1000000\n", 2, ["settings.repeats", "<= 1,000"]),
    ("threads", "settings:\n  threads: 100000000\n", 2, ["settings.threads", "<= 4,096"]),
    ("seed-negative", "settings:\n  seed: -1\n", 2, ["settings.seed", ">= 0 and <= 4,294,967,295"]),
    ("nnodes", "settings:\n  nnodes: 1000000\n  rdzv_endpoint: h:1\n", 2, ["settings.nnodes", "<= 4,096"]),
    ("batch-size", "matrix:\n  workload: [mlp]\n  batch_size: [8, 1000000000]\n", 3,
     ["matrix.batch_size[1]", "<= 1,048,576"]),
    ("batch-size-per-workload", "matrix:\n  batch_size:\n    mlp: [1000000000]\n", 3,
     ["matrix.batch_size.mlp[0]", "<= 1,048,576"]),
    ("world-size", "matrix:\n  mode: [training]\n  world_size: [2, 1000000]\n", 3,
     ["matrix.world_size[1]", "<= 65,536"]),
    ("workers-per-node", "matrix:\n  workload: [mlp]\n  mode: [training]\n  world_size: [4096]\n", 4,
     ["matrix.world_size", "at most 1024 per node"]),
    ("exclude-batch-size", "matrix: {workload: [mlp]}\nexclude:\n  - {batch_size: .inf}\n", 3,
     ["exclude[0].batch_size", "not of type integer"]),
    ("dup-nested", "name: x\nsettings:\n  min_time_s: 1\n  size: tiny\n  min_time_s: 60\n", 5,
     ["duplicate key 'min_time_s'", "lines 3 and 5"]),
    ("dup-top", "settings: {size: tiny}\nmatrix: {workload: [mlp]}\nsettings: {size: base}\n", 3,
     ["duplicate key 'settings'", "lines 1 and 3"]),
    ("dup-flow", "matrix: {workload: [mlp], workload: [cnn]}\n", 1, ["duplicate key 'workload'", "twice on line 1"]),
    ("bad-date", "name: x\ndescription: 2001-02-30\n", 2, ["2001-02-30", "out of range"]),
    ("control-char", "name: x\ndescription: \"a\x07b\"\n", 2, ["#x0007", "not allowed"]),
    ("too-many-cells", "matrix:\n  workload: [mlp]\n  device: [" + ", ".join(f"cuda:{i}" for i in range(200))
     + "]\n  batch_size: [" + ", ".join(str(i) for i in range(1, 101)) + "]\n", 2,
     ["matrix: 20,000 cells", "at most 10,000"]),
]


@pytest.mark.parametrize("text, line, needles", [c[1:] for c in SUITE_CASES], ids=[c[0] for c in SUITE_CASES])
def test_hostile_suite_values_are_refused_at_load(harness_main: Any, tmp_path: Path, text: str, line: int,
                                                  needles: list[str]) -> None:
    f = tmp_path / "suite.yaml"
    f.write_text(text, encoding="utf-8")
    rc, _, err = harness_main(["run", "--suite", str(f), "--out", str(tmp_path / "res"), "--no-progress"])
    _one_line(rc, err, f"{f}:{line}", *needles)


ENCODING_CASES = [
    ("latin-1", "name: café\nmatrix: {workload: [mlp]}\n".encode("latin-1"), 1, ["not UTF-8", "0xe9", "UTF-8"]),
    ("latin-1-line-3", b"name: x\nmatrix: {workload: [mlp]}\ndescription: na\xefve\n", 3, ["not UTF-8", "0xef"]),
    ("utf-16-bom", "name: x\nmatrix: {workload: [mlp]}\n".encode("utf-16"), 1, ["UTF-16", "save it as UTF-8"]),
    ("utf-16-le-no-bom", "name: x\nmatrix: {workload: [mlp]}\n".encode("utf-16-le"), 1, ["binary data", "UTF-8"]),
    ("utf-32-bom", codecs.BOM_UTF32_LE + "name: x\n".encode("utf-32-le"), 1, ["UTF-32"]),
    ("binary", b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4, 1, ["binary data"]),
]


@pytest.mark.parametrize("raw, line, needles", [c[1:] for c in ENCODING_CASES], ids=[c[0] for c in ENCODING_CASES])
def test_suite_that_is_not_utf8_text_is_refused(harness_main: Any, tmp_path: Path, raw: bytes, line: int,
                                                needles: list[str]) -> None:
    f = tmp_path / "suite.yaml"
    f.write_bytes(raw)
    rc, _, err = harness_main(["run", "--suite", str(f), "--out", str(tmp_path / "res")])
    _one_line(rc, err, f"{f}:{line}", *needles)


def test_utf8_with_bom_and_non_ascii_text_still_load(harness_main: Any, tmp_path: Path) -> None:
    from harness.core.suite import load_suite

    f = tmp_path / "suite.yaml"
    f.write_bytes(codecs.BOM_UTF8 + "name: café\ndescription: naïve — ok\nmatrix: {workload: [mlp]}\n".encode())
    s = load_suite(str(f))
    assert s.name == "café" and s.description == "naïve — ok"


def test_bounds_are_inclusive_and_builtin_suites_are_within_them(tmp_path: Path) -> None:
    from harness.core.suite import builtin_suites, expand, load_suite, parse_suite

    top = ("settings:\n  min_time_s: 86400\n  timeout_s: 604800\n  min_samples: 10000000\n  repeats: 1000\n"
           "  seed: 4294967295\n  threads: 4096\nmatrix:\n  workload: [mlp]\n  batch_size: [1048576]\n")
    s = parse_suite(top, "top.yaml")
    assert (s.settings.min_time_s, s.settings.repeats, s.settings.seed) == (86400, 1000, 2**32 - 1)
    assert expand(s)[0].batch_size == 2**20
    for name in builtin_suites():
        expand(load_suite(name))  # every shipped suite passes its own bounds


@pytest.mark.parametrize("field, value", [
    ("min_time_s", math.inf), ("min_time_s", math.nan), ("timeout_s", 8 * 24 * 3600.0), ("warmup_max_s", math.nan),
    ("min_samples", 10**9), ("repeats", 10**6), ("seed", -1), ("threads", 10**6), ("nnodes", 10**5),
    ("idle_baseline_s", math.inf), ("min_samples", 10**400),
])
def test_settings_built_in_code_have_the_same_bounds(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"^{field} must be .*(<=| to ) ?[0-9]"):
        Settings(**{field: value})


# ----------------------------------------------------------------------------- flags


FLAG_CASES = [
    (["run", "-w", "mlp", "--min-time", "inf"], "--min-time", "<= 86400 s (24 h)"),
    (["run", "-w", "mlp", "--min-time", "nan"], "--min-time", "<= 86400"),
    (["run", "-w", "mlp", "--min-time", "1e9"], "--min-time", "<= 86400"),
    (["run", "-w", "mlp", "--timeout", "1e300"], "--timeout", "<= 604800 s (7 days)"),
    (["run", "-w", "mlp", "--timeout", "31536000"], "--timeout", "7 days"),
    (["run", "-w", "mlp", "--repeats", "1000000"], "--repeats", "<= 1,000"),
    (["run", "-w", "mlp", "--batch-size", "1000000000"], "--batch-size", "<= 1,048,576"),
    (["run", "-w", "mlp", "--mode", "training", "--world-size", "1,1000000"], "--world-size", "<= 65,536"),
    (["run", "-w", "mlp", "--threads", "100000000"], "--threads", "<= 4,096"),
    (["run", "-w", "mlp", "--nnodes", "100000"], "--nnodes", "<= 4,096"),
    (["run", "-w", "mlp", "--repeats", DIGITS_5000], "--repeats", "<= 1,000"),
    (["compare", "a.json", "b.json", "--alpha", "nan"], "--alpha", "between 0 and 0.5"),
    (["compare", "a.json", "b.json", "--alpha", "inf"], "--alpha", "between 0 and 0.5"),
    (["calibrate", "--budget", "1e9"], "--budget", "<= 3600"),
    (["calibrate", "--threads", "-3"], "--threads", "<= 4,096"),
    (["verify", "--batch-size", "1000000000"], "--batch-size", "<= 1,048,576"),
]


@pytest.mark.parametrize("args, flag, allowed", FLAG_CASES, ids=[" ".join(c[0][-2:])[:30] for c in FLAG_CASES])
def test_flags_have_the_same_bounds(harness_main: Any, args: list[str], flag: str, allowed: str) -> None:
    rc, _, err = harness_main(args)
    assert rc == 2 and "Traceback" not in err, (rc, err)
    first = err.strip().splitlines()[0]  # argparse's line (the second is the --help hint)
    assert f"argument {flag}: must be" in first and allowed in first, first


def test_compare_threshold_flag_refuses_non_finite(harness_main: Any, tmp_path: Path) -> None:
    doc = _result_file(tmp_path)
    for bad in ("nan", "inf", "-inf", "1e400"):
        rc, _, err = harness_main(["compare", str(doc), str(doc), f"--threshold={bad}"])
        assert rc == 2 and "Traceback" not in err and "threshold must be between 0% and 1000%" in err, err


def test_world_size_per_node_bound_applies_to_flags(harness_main: Any, tmp_path: Path) -> None:
    rc, _, err = harness_main(["run", "-w", "mlp", "--mode", "training", "--world-size", "2048",
                               "--out", str(tmp_path / "res")])
    assert rc == 2 and "at most 1024 per node" in err and "Traceback" not in err, err


# ----------------------------------------------------------------------------- prices and compare configs


def _result_file(tmp_path: Path) -> Path:
    from tests.test_report import make_doc, ok_cell

    doc = tmp_path / "r.json"
    doc.write_text(json.dumps(make_doc([ok_cell("mlp", seed=1)])))
    return doc


PRICE_CASES = [
    ("hourly-inf", "machines:\n  a: {hourly: .inf}\n", 2, ["hourly must be a positive number", "1e+12"]),
    ("hourly-nan", "machines:\n  a:\n    hourly: .nan\n", 3, ["hourly", "nan"]),
    ("purchase-huge", f"machines:\n  a: {{purchase: {ZEROS_400}}}\n", 2, ["purchase", "401-digit integer"]),
    ("hourly-denormal", "machines:\n  a: {hourly: 1.0e-320}\n", 2, ["hourly", "from 1e-06"]),
    ("dup-machine", "machines:\n  a: {hourly: 1}\n  b: {hourly: 2}\n  a: {hourly: 3}\n", 4,
     ["duplicate key 'a'", "lines 2 and 4"]),
    ("dup-price", "machines:\n  a: {hourly: 1, hourly: 2}\n", 2, ["duplicate key 'hourly'"]),
    ("unknown-top", "machines: {a: {hourly: 1}}\ncurency: EUR\n", 2, ["unknown key 'curency'", "currency, machines"]),
    ("currency-number", "currency: .inf\nmachines: {a: {hourly: 1}}\n", 1, ["currency must be a name"]),
    ("huge-int-text", f"machines:\n  a: {{hourly: {DIGITS_5000}}}\n", 2, ["5001 digits"]),
]


@pytest.mark.parametrize("text, line, needles", [c[1:] for c in PRICE_CASES], ids=[c[0] for c in PRICE_CASES])
def test_hostile_price_file_is_refused_with_its_line(harness_main: Any, tmp_path: Path, text: str, line: int,
                                                     needles: list[str]) -> None:
    doc = _result_file(tmp_path)
    f = tmp_path / "prices.yaml"
    f.write_text(text)
    rc, _, err = harness_main(["report", str(doc), "--prices", str(f), "-o", str(tmp_path / "o.html")])
    _one_line(rc, err, f"{f}:{line}", *needles)
    assert not (tmp_path / "o.html").exists()


def test_price_file_in_utf16_is_refused(harness_main: Any, tmp_path: Path) -> None:
    doc = _result_file(tmp_path)
    f = tmp_path / "prices.yaml"
    f.write_bytes("machines:\n  a: {hourly: 1}\n".encode("utf-16"))
    rc, _, err = harness_main(["report", str(doc), "--prices", str(f), "-o", str(tmp_path / "o.html")])
    _one_line(rc, err, f"{f}:1", "UTF-16")


def test_price_file_keys_are_taken_as_written() -> None:
    from harness.core import safeyaml
    from harness.analysis.procurement import parse_prices

    data, root = safeyaml.load("machines:\n  0123: {hourly: 1}\n  on: {hourly: 2}\n  gpu-box: {purchase: 5}\n")
    prices = parse_prices(data, "p.yaml", root)  # YAML 1.1 alone would give 83 and True
    assert set(prices.machines) == {"0123", "on", "gpu-box"}


CONFIG_CASES = [
    ("threshold-nan", "threshold: .nan\n", 1, ["threshold must be between 0% and 1000%"]),
    ("threshold-inf", "alpha: 0.05\nthreshold: .inf\n", 2, ["threshold must be between 0% and 1000%"]),
    ("threshold-huge-int", f"threshold: {ZEROS_400}\n", 1, ["between 0% and 1000%"]),
    ("alpha-nan", "alpha: .nan\n", 1, ["alpha must be a number between 0 and 0.5"]),
    ("alpha-huge", "alpha: 1.0e+400\n", 1, ["alpha must be", "inf"]),
    ("workload-inf", "workloads:\n  mlp: 5%\n  cnn: .inf\n", 3, ["workloads.cnn", "1000%"]),
    ("cell-list", "cells:\n  mlp/torch: [5]\n", 2, ["cells.mlp/torch", "a percentage"]),
    ("fallback-nan", "fallback_threshold: .nan\n", 1, ["fallback_threshold", "1000%"]),
    ("dup-threshold", "threshold: 5%\nstat: min\nthreshold: 50%\n", 3, ["duplicate key 'threshold'", "lines 1 and 3"]),
    ("unknown-key", "stat: min\ntreshold: 5\n", 2, ["unknown key 'treshold'", "threshold, alpha"]),
    ("stat", "stat: p99\n", 1, ["'p99' is not valid", "min, p10, p50, mean"]),
]


@pytest.mark.parametrize("text, line, needles", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_hostile_compare_config_is_refused_with_its_line(harness_main: Any, tmp_path: Path, text: str, line: int,
                                                         needles: list[str]) -> None:
    doc = _result_file(tmp_path)
    f = tmp_path / "thresholds.yaml"
    f.write_text(text)
    rc, out, err = harness_main(["compare", str(doc), str(doc), "--config", str(f)])
    _one_line(rc, err, f"{f}:{line}", *needles)
    assert out == ""


def test_compare_config_in_latin1_is_refused(harness_main: Any, tmp_path: Path) -> None:
    doc = _result_file(tmp_path)
    f = tmp_path / "thresholds.yaml"
    f.write_bytes("workloads:\n  modèle: 5%\n".encode("latin-1"))
    rc, _, err = harness_main(["compare", str(doc), str(doc), "--config", str(f)])
    _one_line(rc, err, f"{f}:2", "not UTF-8")


# ----------------------------------------------------------------------------- as a user runs it


@pytest.mark.parametrize("kind, raw, where, needle", [
    ("suite", "settings:\n  min_time_s: .inf\n".encode(), ":2", "<= 86400"),
    ("suite", b"name: caf\xe9\n", ":1", "not UTF-8"),
    ("suite", ("name: x\n" + QUICK + "  min_time_s: 0.02\nmatrix: {workload: [mlp]}\n").encode(), ":6",
     "duplicate key 'min_time_s' on lines 4 and 6"),
    ("prices", "machines:\n  a: {hourly: 1}\n".encode("utf-16"), ":1", "UTF-16"),
    ("config", b"threshold: .nan\n", ":1", "1000%"),
], ids=["suite-inf", "suite-latin1", "suite-dup", "prices-utf16", "config-nan"])
def test_real_cli_process_exit_2_one_line(cli: Any, tmp_path: Path, kind: str, raw: bytes, where: str,
                                          needle: str) -> None:
    f = tmp_path / "x.yaml"
    f.write_bytes(raw)
    if kind == "suite":
        args = ["run", "--suite", str(f), "--out", str(tmp_path / "res"), "--no-progress"]
    else:
        doc = _result_file(tmp_path)
        args = (["report", str(doc), "--prices", str(f), "-o", str(tmp_path / "o.html")] if kind == "prices"
                else ["compare", str(doc), str(doc), "--config", str(f)])
    proc = cli(args, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-800:])
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{f}{where}: " in lines[0] and needle in lines[0], proc.stderr
    assert not (tmp_path / "res").exists() or not list((tmp_path / "res").glob("*.json"))


def test_limits_table_is_the_documented_one() -> None:
    """The README's Suites section states the bounds of LIMITS (one place, documented)."""
    from harness.core.suite import LIMITS

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Suites"):]
    section = section[: section.index("\n### ", 5)]
    assert "harness/core/cells.py: LIMITS" in section
    for text in ("86400 s (24 h)", "604800 s (7 days)", "10,000,000", "1,000", "4,096", "2^20", "65,536",
                 "1,024 workers per node", "10,000 cells"):
        assert text in section, text
    assert (LIMITS["min_time_s"].high, LIMITS["timeout_s"].high, LIMITS["min_samples"].high) == (86400, 604800, 10**7)
    assert (LIMITS["repeats"].high, LIMITS["batch_size"].high, LIMITS["world_size"].high) == (1000, 2**20, 65536)
