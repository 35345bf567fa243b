"""Hostile or broken result files never crash the tool (issue 13).

Result files are untrusted input. Each case below puts one hostile file next to good
ones in a results directory and runs the commands that read results -- ``report``
(Markdown and HTML, which includes the procurement view: the good runs come from two
machines), ``export``, ``compare`` and ``baseline set`` -- exactly as a user would
(``harness.cli.main``, in-process for speed; a subprocess with a timeout where the old
code hung). The contract (README "Exit codes", DESIGN "Untrusted input"):

* the bad file is reported in one line naming it and skipped; the good files' data is
  still used (exit 0 or 1 -- never 3, never a traceback, never a hang);
* ``baseline set`` is all-or-nothing: exit 2 with one line naming the bad file;
* a bad file named directly, with nothing usable left, is exit 2.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from harness.store import results
from harness.cli import main
from tests.conftest import ROOT
from tests.test_store import make_cell, make_doc

CELL_ID = "mlp/torch/cpu/fp32/inference/bs8/tiny"
MAX_BYTES_ENV = "DLH_MAX_RESULT_BYTES"  # documented in README and docs; harness.store.results.MAX_BYTES_ENV
SUBPROCESS_TIMEOUT_S = 120.0  # generous for a loaded shared machine; a hang is far longer


def good_doc(run_id: str, host: str, created: str) -> dict[str, Any]:
    """A valid result with the fields the wrongly-typed cases below break."""
    doc = make_doc(run_id=run_id, host=host, created=created, cells=[make_cell(), make_cell("cnn", "training", 4)])
    doc["environment"]["cpu"] = {"model": "test CPU", "flags_dl": {"avx2": True}, "physical_cores": 2, "logical_cores": 2}
    doc["environment"]["gpus"] = []
    doc["environment"]["frameworks"] = {"torch": "2.13.0"}
    for cell in doc["cells"]:
        cell["timing"]["contention"] = {"detected": False, "reasons": [], "evidence": {"ncpu": 2}}
        cell["runtime"]["threads"] = 2
    return doc


GOOD_A = good_doc("run-good-a", "host-a", "2026-11-01T00:00:00Z")
GOOD_B = good_doc("run-good-b", "host-b", "2026-11-02T00:00:00Z")  # a second machine: procurement view
GOOD_TEXT = json.dumps(GOOD_A, indent=1)


def _mutated(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        doc = copy.deepcopy(GOOD_A)
        doc["run_id"] = "run-bad"
        change(doc)
        path.write_text(json.dumps(doc))

    return write


def _text(make: Callable[[], str]) -> Callable[[Path], None]:
    return lambda path: path.write_text(make())


def _replaced(old: str, new: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        assert old in GOOD_TEXT, old
        path.write_text(GOOD_TEXT.replace('"run-good-a"', '"run-bad"').replace(old, new, 1))

    return write


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        cur = doc
        for k in path[:-1]:
            cur = cur[k]
        cur[path[-1]] = value

    return change


def _symlink(target: str) -> Callable[[Path], None]:
    return lambda path: os.symlink(target, path)


# name -> writes the hostile file at the given path
HOSTILE: dict[str, Callable[[Path], None]] = {
    "deep array": _text(lambda: "[" * 100_000 + "]" * 100_000),
    "deep object": _text(lambda: '{"a":' * 50_000 + "1" + "}" * 50_000),
    "deep field (300 levels: parses, refused)": _replaced('"noisy": false', '"noisy": false, "custom": ' + "[" * 300 + "]" * 300),
    "5,000-digit integer": _replaced('"batch_size": 8', '"batch_size": ' + "9" * 5000),
    "5,000-digit integer in metrics": _replaced('"peak_host_mem_bytes": 250000000', '"peak_host_mem_bytes": ' + "7" * 5000),
    "NaN": _replaced('"p50": 1.2', '"p50": NaN'),
    "Infinity": _replaced('"throughput_per_s": ', '"throughput_per_s": Infinity, "x": '),
    "-Infinity sample": _replaced('"samples_ms": [', '"samples_ms": [-Infinity, '),
    "1e999": _replaced('"flops": 54272', '"flops": 1e999'),
    "1e308 (finite, but squares and exp overflow)": _replaced('"p50": 1.2', '"p50": 1e308'),
    "5e-324 sample (subnormal)": _replaced('"samples_ms": [', '"samples_ms": [5e-324, '),
    "lone surrogate": _replaced('"tag": "nightly"', '"tag": "\\ud800"'),
    "not UTF-8": lambda p: p.write_bytes(GOOD_TEXT.encode().replace(b"nightly", b"night\xffly")),
    "symlink loop": _symlink("b_bad.json"),
    "dangling symlink": _symlink("does-not-exist.json"),
    "directory named *.json (a loop to itself)": _symlink("."),
    # wrongly typed fields that pass the old schema; consumers read every one of them
    "timing is a string": _mutated(_set(("cells", 0, "timing"), "fast")),
    "environment.cpu is a number": _mutated(_set(("environment", "cpu"), 7)),
    "runtime.threads is a list": _mutated(_set(("cells", 0, "runtime", "threads"), [2])),
    "environment.gpus is a string": _mutated(_set(("environment", "gpus"), "none")),
    "a gpu is a number": _mutated(_set(("environment", "gpus"), [3])),
    "git_commit is a number": _mutated(_set(("harness", "git_commit"), 1234)),
    "cell id is a number": _mutated(_set(("cells", 0, "id"), 7)),
    "contention is a string": _mutated(_set(("cells", 0, "timing", "contention"), "yes")),
    "metrics.energy is a list": _mutated(_set(("cells", 0, "metrics", "energy"), [1])),
    "a declared metric is a string": _mutated(_set(("cells", 0, "metrics", "flops"), "many")),
    "cpu flags are strings": _mutated(_set(("environment", "cpu", "flags_dl"), {"avx2": "yes"})),
    "frameworks map to numbers": _mutated(_set(("environment", "frameworks"), {"torch": 2})),
    "suite name is an object": _mutated(_set(("suite", "name"), {"x": 1})),
    "error of a failed cell is a string": _mutated(lambda d: d["cells"].append(
        {**make_cell("rnn", status="failed"), "error": "boom"})),
    "repeats is a string": _mutated(_set(("cells", 0, "repeats"), "twice")),
    "a repeat's samples are strings": _mutated(_set(("cells", 0, "repeats"), [
        {"index": 0, "status": "ok", "samples_ms": ["fast"], "metrics": {}}])),
    "schema_version is true": _mutated(_set(("schema_version",), True)),
    "cells is a string": _mutated(_set(("cells",), "none")),
}  # fmt: skip

# the old code hung on these: run them in a subprocess with a timeout
HANGING: dict[str, Callable[[Path], None]] = {
    "FIFO": lambda p: os.mkfifo(p),
    "/dev/zero behind a symlink": _symlink("/dev/zero"),
}


def _cli(argv: list[str]) -> tuple[Any, str, str]:
    """``harness ARGV`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code: Any = main(argv)
        except SystemExit as e:  # argparse
            code = e.code
    return code, out.getvalue(), err.getvalue()


_DRIVER = """
import contextlib, io, json, sys
from harness.cli import main
res = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    res.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(res))
"""


def _cli_batch_subprocess(argvs: list[list[str]], env: dict[str, str] | None = None) -> list[tuple[Any, str, str]]:
    """Several ``harness`` invocations in one fresh process (one start-up), under a
    timeout: a hang fails the test instead of hanging it."""
    e = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps(argvs)], capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT_S, cwd=str(ROOT), env=e)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [tuple(r) for r in json.loads(proc.stdout.strip().splitlines()[-1])]  # type: ignore[misc]


def _directory(tmp_path: Path, write_bad: Callable[[Path], None]) -> tuple[Path, Path]:
    """results/ with two good runs (two machines) and ``b_bad.json``; cand/ with one good run."""
    d = tmp_path / "results"
    d.mkdir(parents=True)
    (d / "a_good.json").write_text(GOOD_TEXT)
    (d / "c_good.json").write_text(json.dumps(GOOD_B))
    write_bad(d / "b_bad.json")
    cand = tmp_path / "cand"
    cand.mkdir()
    other = copy.deepcopy(GOOD_A)
    other["run_id"] = "run-cand"
    (cand / "cand.json").write_text(json.dumps(other))
    return d, cand


def _commands(d: Path, cand: Path, store: Path) -> list[list[str]]:
    return [
        ["report", str(d), "--format", "markdown"],
        ["report", str(d)],  # HTML beside the inputs: results/report.html
        ["export", str(d)],
        ["compare", str(d), str(cand)],
        ["baseline", "set", str(d), "--store", str(store)],
    ]




def _check(case: str, d: Path, results: list[tuple[Any, str, str]]) -> None:
    names = ["report markdown", "report html", "export", "compare", "baseline set"]
    for name, (code, out, err) in zip(names, results):
        what = f"{case} / {name}: exit {code}\n{err[-2000:]}"
        assert "Traceback" not in err and "internal error" not in err, what
        bad_lines = [ln for ln in err.splitlines() if "b_bad.json" in ln]
        if name == "baseline set":  # all-or-nothing: refused, naming the bad file
            assert code == 2 and len(err.strip().splitlines()) == 1 and bad_lines, what
            continue
        assert code in (0, 1), what
        assert len(bad_lines) == 1 and bad_lines[0].startswith("warning: skipped"), what  # one line, named
        if name == "report markdown" or name == "export":
            assert "run-good-a" in out and "run-good-b" in out, what  # the good runs are still used
        elif name == "report html":
            html = (d / "report.html").read_text()
            assert "run-good-a" in html and "run-good-b" in html and "b_bad.json" in html, what
        elif name == "compare":
            assert CELL_ID in out, what


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_file_in_a_directory_is_reported_and_skipped(case: str, tmp_path: Path) -> None:
    d, cand = _directory(tmp_path, HOSTILE[case])
    results = [_cli(argv) for argv in _commands(d, cand, tmp_path / "store")]
    _check(case, d, results)


def test_fifos_and_devices_named_json_never_hang(tmp_path: Path) -> None:
    argvs, dirs = [], []
    for i, (case, write_bad) in enumerate(HANGING.items()):
        d, cand = _directory(tmp_path / str(i), write_bad)
        argvs += _commands(d, cand, tmp_path / str(i) / "store")
        dirs.append((case, d))
    results = _cli_batch_subprocess(argvs)
    n = len(argvs) // len(dirs)
    for k, (case, d) in enumerate(dirs):
        _check(case, d, results[k * n : (k + 1) * n])
        assert "not a result file" in results[k * n][2], results[k * n][2]


@pytest.mark.parametrize("case", ["deep array", "5,000-digit integer", "NaN", "symlink loop", "timing is a string",
                                  "environment.cpu is a number"])  # fmt: skip
def test_a_bad_file_named_directly_is_exit_2(case: str, tmp_path: Path) -> None:
    bad = tmp_path / "b_bad.json"
    HOSTILE[case](bad)
    for argv in (["report", str(bad), "--format", "markdown"], ["export", str(bad)],
                 ["compare", str(bad), str(bad)], ["baseline", "set", str(bad), "--store", str(tmp_path / "s")]):  # fmt: skip
        code, _, err = _cli(argv)
        assert code == 2 and "Traceback" not in err and "b_bad.json" in err, (case, argv, err)


def test_a_file_over_the_size_limit_is_refused_with_its_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d, cand = _directory(tmp_path, lambda p: p.write_text(GOOD_TEXT.replace("run-good-a", "run-bad") + " " * 20_000))
    limit = max(len(GOOD_TEXT), len(json.dumps(GOOD_B))) + 1000
    monkeypatch.setenv(MAX_BYTES_ENV, str(limit))
    code, out, err = _cli(["export", str(d)])
    size = (d / "b_bad.json").stat().st_size
    assert code == 0 and "run-good-a" in out, err
    line = next(ln for ln in err.splitlines() if "b_bad.json" in ln)
    assert "too large" in line and f"{size:,} bytes" in line and f"{limit:,}" in line and MAX_BYTES_ENV in line
    monkeypatch.setenv(MAX_BYTES_ENV, "lots")  # a broken setting is named, not a crash
    code, _, err = _cli(["export", str(d)])
    assert code == 2 and "Traceback" not in err and f"{MAX_BYTES_ENV}='lots'" in err


@pytest.mark.parametrize("orjson_installed", [True, False])
def test_the_parse_refuses_the_same_files_with_or_without_orjson(orjson_installed: bool, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    if not orjson_installed:
        monkeypatch.setitem(sys.modules, "orjson", None)  # as if not installed
    texts = {case: None for case in HOSTILE if case in (
        "deep array", "deep object", "deep field (300 levels: parses, refused)", "5,000-digit integer", "NaN",
        "Infinity", "-Infinity sample", "1e999", "lone surrogate")}  # fmt: skip
    for case in texts:
        p = tmp_path / f"{len(os.listdir(tmp_path))}.json"
        HOSTILE[case](p)
        with pytest.raises(results.ResultFileError) as err:
            results.parse_result(p.read_bytes(), "x.json")
        msg = str(err.value)
        assert msg.startswith("x.json: ") and "\n" not in msg, msg
        texts[case] = msg.split(": ", 1)[1][:60]
    assert "nested more than 64 levels" in texts["deep array"]
    assert texts["deep field (300 levels: parses, refused)"].startswith("cells/0/metrics/custom/0/0/0/0/0/0/0/...: nested")
    assert texts["NaN"].startswith("cells/0/metrics/latency_ms/p50: NaN")
    assert texts["5,000-digit integer"].startswith("cells/0/spec/batch_size: Infinity")
    # integers beyond the signed 64-bit range are floats with either parser (a Parquet
    # int64 column, numpy or SQL never meets one); the rest stay exact integers
    for big in (2**63, 2**64 - 1, 10**30, -(2**63) - 1):
        doc = results.parse_result(GOOD_TEXT.replace('"flops": 54272', f'"flops": {big}'))
        assert doc["cells"][0]["metrics"]["flops"] == float(big) and type(doc["cells"][0]["metrics"]["flops"]) is float
    doc = results.parse_result(GOOD_TEXT.replace('"flops": 54272', f'"flops": {2**63 - 1}'))
    assert doc["cells"][0]["metrics"]["flops"] == 2**63 - 1


def test_loading_a_directory_survives_loops_and_unlistable_entries(tmp_path: Path) -> None:
    d = tmp_path / "r"
    d.mkdir()
    (d / "a.json").write_text(GOOD_TEXT)
    os.symlink("loop.json", d / "loop.json")
    os.symlink(".", d / "self.json")
    os.symlink("gone", d / "gone.json")
    os.symlink(str(d / "a.json"), d / "same.json")  # the same file twice is one run
    loaded = results.load_results([d, d / "a.json"])
    assert [r["run_id"] for r in loaded.runs] == ["run-good-a"]
    assert sorted(e.split(":", 1)[0].rsplit("/", 1)[1] for e in loaded.errors) == ["gone.json", "loop.json", "self.json"]
    assert any("symlink loop" in e for e in loaded.errors) and any("is a directory" in e for e in loaded.errors)


# ----------------------------------------------------------------------------- baseline store


def _store_with_baseline(tmp_path: Path) -> tuple[Path, Path, Path]:
    src = tmp_path / "src"
    src.mkdir(parents=True)
    (src / "a.json").write_text(GOOD_TEXT)
    store = tmp_path / "store"
    code, _, err = _cli(["baseline", "set", str(src), "--store", str(store)])
    assert code == 0, err
    stored = next((store / "default" / "runs").glob("*.json"))
    assert stored.read_text() == GOOD_TEXT  # byte-for-byte the validated input
    cand = tmp_path / "cand"
    cand.mkdir()
    (cand / "c.json").write_text(GOOD_TEXT.replace("run-good-a", "run-cand"))
    return store, stored, cand


MANIFEST_CASES: dict[str, Callable[[Path], None]] = {
    "deep": lambda p: p.write_text("[" * 100_000 + "]" * 100_000),
    "NaN": lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "cell_count": 1}).replace(
        '"cell_count": 1', '"cell_count": NaN')),
    "git_commits are numbers": lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "git_commits": [1]})),
    "runs is a number": lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "runs": 5})),
    "a symlink loop": lambda p: (p.unlink(), os.symlink("manifest.json", p)),
}


@pytest.mark.parametrize("case", list(MANIFEST_CASES))
def test_a_damaged_baseline_manifest_is_one_line_and_can_be_cleared(case: str, tmp_path: Path) -> None:
    store, _, cand = _store_with_baseline(tmp_path)
    MANIFEST_CASES[case](store / "default" / "manifest.json")
    for argv in (["baseline", "show", "--store", str(store)], ["compare", "--baseline", "default", str(cand),
                                                                "--store", str(store)]):  # fmt: skip
        code, _, err = _cli(argv)
        assert code == 2 and "Traceback" not in err and "manifest" in err and len(err.strip().splitlines()) == 1, (
            case, argv, err)
    code, out, err = _cli(["baseline", "list", "--store", str(store)])
    assert code == 0 and "Traceback" not in err, err
    code, _, err = _cli(["baseline", "clear", "--store", str(store)])
    assert code == 0 and not (store / "default").exists(), err


def test_a_stored_run_swapped_for_a_fifo_loop_or_device_never_hangs(tmp_path: Path) -> None:
    argvs = []
    for i, swap in enumerate((lambda p: os.mkfifo(p), lambda p: os.symlink(p.name, p),
                              lambda p: os.symlink("/dev/zero", p))):  # fmt: skip
        store, stored, cand = _store_with_baseline(tmp_path / str(i))
        stored.unlink()
        swap(stored)
        argvs.append(["compare", "--baseline", "default", str(cand), "--store", str(store)])
    for code, _, err in _cli_batch_subprocess(argvs):
        assert code == 2 and "Traceback" not in err and "set the baseline again" in err, err


# ----------------------------------------------------------------------------- consumers at the edges


def test_history_survives_extreme_but_finite_values() -> None:
    """Doubles whose log-scale differences overflow ``math.exp`` (1e-300 ms next to
    1e300 ms) raised OverflowError in the history section of a report. The loader now
    refuses numbers beyond 1e+-100, but ``build_history`` is an API of its own."""
    from harness.analysis.history import detect_changes

    for values in ([1e-300] * 3 + [1e300] * 3, [5e-324] * 4 + [1e308] * 4, [10.0 ** (-300 + 60 * i) for i in range(11)]):
        changes = detect_changes(values)
        assert changes and all(c["change"] > 0 for c in changes), values


def test_an_output_option_with_a_symlink_loop_among_the_inputs(tmp_path: Path) -> None:
    d, _ = _directory(tmp_path, HOSTILE["symlink loop"])
    code, out, err = _cli(["export", str(d), "-o", str(tmp_path / "out.csv")])
    assert code == 0 and "Traceback" not in err and "b_bad.json" in err, err
