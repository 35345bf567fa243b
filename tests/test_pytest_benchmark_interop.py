"""pytest-benchmark interop: the ``harness_workload`` fixture (pytest11 plugin) and
``harness import pytest-benchmark``.

Real pytest-benchmark sessions run in subprocesses on a generated test file (tiny MLP,
few rounds); their JSON is imported through the CLI, then validated, mapped back to the
harness spec, compared and reported. Nothing here depends on how fast anything runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, run_cli

BENCH_TESTS = textwrap.dedent(
    '''
    import sys

    import pytest


    def test_plugin_is_light_and_registered(request):
        # runs first: nothing heavy is imported by the plugin itself
        assert request.config.pluginmanager.hasplugin("dl_harness")
        assert "torch" not in sys.modules
        assert "numpy" not in sys.modules


    def test_mlp_inference(benchmark, harness_workload):
        cell = harness_workload("mlp", size="tiny", mode="inference")
        assert cell.spec.workload == "mlp" and cell.spec.mode == "inference"
        benchmark(cell.step)


    def test_mlp_training(benchmark, harness_workload):
        cell = harness_workload("mlp", size="tiny", mode="training", batch_size=4)
        benchmark.pedantic(cell.step, rounds=4, iterations=2, warmup_rounds=1)


    def test_plain_python(benchmark):
        benchmark(sum, range(200))


    def test_two_cells_need_record_false(benchmark, harness_workload):
        first = harness_workload("mlp", size="tiny")
        with pytest.raises(ValueError, match="record=False"):
            harness_workload("mlp", size="tiny", mode="training")
        other = harness_workload("mlp", size="tiny", mode="training", record=False)
        benchmark.pedantic(first.step, rounds=2, iterations=1)
        assert benchmark.extra_info["dl_harness"]["spec"]["mode"] == "inference"
        assert other.spec.mode == "training"


    def test_unknown_names_are_errors(harness_workload):
        with pytest.raises(ValueError, match="choose from"):
            harness_workload("no-such-workload")
        with pytest.raises(ValueError, match="choose from"):
            harness_workload("mlp", variant="no-such-variant")


    def test_cell_that_cannot_run_here_skips(harness_workload):
        harness_workload("mlp", device="cuda:99")
        raise AssertionError("not reached: cuda:99 cannot exist")
    '''
)

BENCH_OPTS = ["--benchmark-min-rounds=3", "--benchmark-max-time=0.05", "--benchmark-warmup=off"]


def _pytest_session(workdir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "test_bench_harness.py").write_text(BENCH_TESTS)
    import os

    # a session of its own, also when this one is a pytest-xdist worker (pytest-benchmark
    # does not save from inside an xdist worker, which it recognises by these variables)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST_", "PYTEST_CURRENT_TEST"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "no:xdist",
         "--rootdir", str(workdir), "test_bench_harness.py", *BENCH_OPTS, *extra],
        capture_output=True, text=True, timeout=300, cwd=str(workdir), check=False, env=env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two real pytest-benchmark sessions: A writes --benchmark-json and a summary-only
    --benchmark-save; B writes --benchmark-json and a --benchmark-save-data save."""
    base = tmp_path_factory.mktemp("pb")
    store = base / "store"
    out: dict[str, Any] = {"base": base}
    for name, save_data in (("a", False), ("b", True)):
        extra = [f"--benchmark-json={base / f'{name}.json'}", f"--benchmark-save={name}",
                 f"--benchmark-storage=file://{store}"] + (["--benchmark-save-data"] if save_data else [])  # fmt: skip
        proc = _pytest_session(base / f"work_{name}", *extra)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        out[name] = proc
        saved = sorted(store.rglob(f"*_{name}.json"))
        assert len(saved) == 1, saved
        out[f"{name}_saved"] = saved[0]
    return out


def _by_fullname(path: Path) -> dict[str, dict[str, Any]]:
    doc = json.loads(path.read_text())
    return {b["fullname"].split("::")[-1]: b for b in doc["benchmarks"]}


def _import(files: list[Path], out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli(["import", "pytest-benchmark", *map(str, files), "-o", str(out), *extra])


def _result_paths(proc: subprocess.CompletedProcess[str]) -> list[Path]:
    return [Path(line.split("result: ", 1)[1]) for line in proc.stdout.splitlines() if line.startswith("result: ")]


def _cells_by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(c["imported"]["fullname"]).split("::")[-1]: c for c in doc["cells"]}


# ----------------------------------------------------------------------------- the fixture


def test_session_ran_fixture_tests_and_skipped_the_impossible_cell(sessions: dict[str, Any]) -> None:
    out = sessions["a"].stdout
    assert "6 passed, 1 skipped" in out, out[-2000:]
    assert "harness cell cannot run here: cuda:99 requested but" in out


def test_fixture_records_the_cell_spec_in_extra_info(sessions: dict[str, Any]) -> None:
    from harness.core import registry

    benches = _by_fullname(sessions["base"] / "a.json")
    mlp = registry.load("workload", "mlp")("tiny")
    rec = benches["test_mlp_inference"]["extra_info"]["dl_harness"]
    assert rec["spec"]["workload"] == "mlp" and rec["spec"]["backend"] == "torch"
    assert rec["spec"]["device"] == "cpu" and rec["spec"]["variant"] == "fp32"
    assert rec["spec"]["mode"] == "inference" and rec["spec"]["size"] == "tiny"
    assert rec["spec"]["batch_size"] == mlp.batch_size_for("tiny")  # default batch size of the preset
    assert rec["params"] == rec["params_analytic"] == mlp.analytic_params()
    assert rec["flops_analytic"] == mlp.analytic_flops(rec["spec"]["batch_size"])
    assert rec["runtime"]["torch"].startswith("2.")
    train = benches["test_mlp_training"]["extra_info"]["dl_harness"]
    assert train["spec"]["mode"] == "training" and train["spec"]["batch_size"] == 4
    assert train["flops_analytic"] == 3 * mlp.analytic_flops(4)
    assert "dl_harness" not in benches["test_plain_python"]["extra_info"]


def test_plugin_module_imports_nothing_heavy() -> None:
    code = "import sys, harness.pytest_plugin; bad = [m for m in ('torch', 'numpy', 'tensorflow') if m in sys.modules]; print(bad)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- import


def test_import_maps_back_to_the_harness_cells_with_raw_samples(sessions: dict[str, Any], tmp_path: Path) -> None:
    from harness.store.results import load_result

    src = sessions["base"] / "a.json"
    proc = _import([src], tmp_path)
    assert proc.returncode == 0, proc.stderr
    (path,) = _result_paths(proc)
    doc = load_result(path)  # version check + schema validation
    assert doc["environment"]["host"] and doc["environment"]["cpu"]["model"]
    benches = _by_fullname(src)
    cells = _cells_by_name(doc)
    assert set(cells) == set(benches)

    for name in ("test_mlp_inference", "test_mlp_training"):
        bench, cell = benches[name], cells[name]
        assert cell["status"] == "ok"
        assert cell["spec"] == bench["extra_info"]["dl_harness"]["spec"]
        assert cell["id"] == bench["extra_info"]["dl_harness"]["cell_id"]
        data = bench["stats"]["data"]
        assert cell["samples_ms"] == [x * 1000.0 for x in data]  # one sample per round, ms per call
        assert cell["timing"]["iters_per_sample"] == bench["stats"]["iterations"]
        lat = cell["metrics"]["latency_ms"]
        assert lat["min"] == pytest.approx(bench["stats"]["min"] * 1e3, rel=1e-12)
        assert lat["p50"] == pytest.approx(bench["stats"]["median"] * 1e3, rel=1e-9)
        assert lat["mean"] == pytest.approx(bench["stats"]["mean"] * 1e3, rel=1e-9)
        bs = cell["spec"]["batch_size"]
        # sustained (items / summed round time), not batch / p50; the per-step rate keeps its own name
        assert cell["metrics"]["throughput_per_s"] == pytest.approx(bs * 1e3 / lat["mean"])
        assert cell["metrics"]["throughput_p50_per_s"] == pytest.approx(bs * 1e3 / lat["p50"])
        assert cell["metrics"]["params"] == bench["extra_info"]["dl_harness"]["params"]
        # not measured by pytest-benchmark: null with the reason, never 0
        assert cell["metrics"]["peak_host_mem_bytes"] is None
        assert "pytest-benchmark" in cell["unavailable"]["peak_host_mem_bytes"]
        assert cell["runtime"]["threads"] >= 1
    train = cells["test_mlp_training"]
    assert len(train["samples_ms"]) == 4 and train["timing"]["iters_per_sample"] == 2  # pedantic rounds x iterations
    # a second benchmark of the same cell: kept (with its samples) but skipped, so a run
    # never holds one cell twice (compare would count it as another run)
    dup = cells["test_two_cells_need_record_false"]
    assert dup["id"] == cells["test_mlp_inference"]["id"]
    assert dup["status"] == "skipped" and "same cell as" in dup["reason"] and dup["samples_ms"]

    plain = cells["test_plain_python"]
    assert plain["spec"]["backend"] == "pytest-benchmark" and plain["spec"]["batch_size"] == 1
    assert plain["spec"]["workload"] == benches["test_plain_python"]["fullname"]
    assert plain["samples_ms"] == [x * 1000.0 for x in benches["test_plain_python"]["stats"]["data"]]
    assert plain["unavailable"]["params"]
    assert plain["status"] == "ok" and plain["metrics"]["params"] is None


def test_summary_only_save_imports_as_skipped_and_save_data_as_ok(sessions: dict[str, Any], tmp_path: Path) -> None:
    from harness.store.results import load_result

    summary_only, with_data = sessions["a_saved"], sessions["b_saved"]
    assert "data" not in json.loads(summary_only.read_text())["benchmarks"][0]["stats"]
    proc = _import([summary_only, with_data], tmp_path)
    assert proc.returncode == 0, proc.stderr
    p_summary, p_data = _result_paths(proc)
    cells = _cells_by_name(load_result(p_summary))
    bench = _by_fullname(summary_only)["test_mlp_inference"]
    cell = cells["test_mlp_inference"]
    assert cell["status"] == "skipped" and "--benchmark-save-data" in cell["reason"]
    assert cell["samples_ms"] == [] and cell["metrics"] == {}  # nothing invented
    assert cell["imported"]["stats_s"]["min"] == bench["stats"]["min"]  # the summary is kept as reported
    assert cell["spec"] == bench["extra_info"]["dl_harness"]["spec"]
    cells_b = _cells_by_name(load_result(p_data))
    raw = _by_fullname(with_data)["test_mlp_inference"]["stats"]["data"]
    assert cells_b["test_mlp_inference"]["status"] == "ok"
    assert cells_b["test_mlp_inference"]["samples_ms"] == [x * 1000.0 for x in raw]


def test_compare_and_report_work_on_imports(sessions: dict[str, Any], tmp_path: Path) -> None:
    base_dir, cand_dir = tmp_path / "base", tmp_path / "cand"
    assert _import([sessions["base"] / "a.json"], base_dir).returncode == 0
    assert _import([sessions["base"] / "b.json"], cand_dir).returncode == 0
    cmp = run_cli(["compare", str(base_dir), str(cand_dir), "--format", "json"])
    assert cmp.returncode in (0, 1), cmp.stderr
    verdicts = {c["key"]: c["verdict"] for c in json.loads(cmp.stdout)["cells"]}
    key = "mlp/torch/cpu/fp32/training/bs4/tiny"
    assert verdicts[key] not in ("only_baseline", "only_candidate", "not_comparable")
    html = tmp_path / "report.html"
    rep = run_cli(["report", str(base_dir), str(cand_dir), "-o", str(html)])
    assert rep.returncode == 0, rep.stderr
    text = html.read_text()
    assert "mlp" in text and "pytest-benchmark" in text


def test_reimport_is_skipped_unless_forced(sessions: dict[str, Any], tmp_path: Path) -> None:
    src = sessions["base"] / "b.json"
    assert _import([src], tmp_path).returncode == 0
    again = _import([src], tmp_path)
    assert again.returncode == 0 and "already imported" in again.stdout
    assert len(list(tmp_path.glob("*.json"))) == 1
    forced = _import([src], tmp_path, "--force", "--tag", "t2")
    assert forced.returncode == 0
    assert len(list(tmp_path.glob("*.json"))) == 2
    (path,) = _result_paths(forced)
    assert json.loads(path.read_text())["tag"] == "t2"


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "no such file"),
        ("{not json", "not JSON"),
        ('{"a": 1}', "not a pytest-benchmark JSON file"),
        ('{"schema_version": 1, "cells": []}', "already a dl-harness result"),
        ('{"machine_info": {}, "benchmarks": []}', "holds no benchmarks"),
        (('{"machine_info": {}, "benchmarks": [{"name": "t", "stats": {"data": ["x"], "iterations": 1}}], '
          '"datetime": "2026-01-01T00:00:00+00:00"}'), "non-negative seconds"),
        (('{"machine_info": {}, "benchmarks": [{"name": "t", "extra_info": {"dl_harness": {"spec": {"workload": "mlp"}}}, '
          '"stats": {"data": [0.001], "iterations": 1}}], "datetime": "2026-01-01T00:00:00+00:00"}'), "not a valid cell spec"),
    ],
)  # fmt: skip
def test_bad_inputs_exit_2_with_one_line(tmp_path: Path, content: str | None, expected: str) -> None:
    f = tmp_path / "in.json"
    if content is not None:
        f.write_text(content)
    out = tmp_path / "out"
    proc = _import([f], out)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() or not list(out.glob("*.json"))  # nothing written


def test_unknown_format_is_a_usage_error(tmp_path: Path) -> None:
    proc = run_cli(["import", "junit", str(tmp_path / "x.json")])
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


# ----------------------------------------------------------------------------- conversion units


def _pb_doc(bench: dict[str, Any]) -> dict[str, Any]:
    return {
        "machine_info": {"node": "box", "system": "Linux", "release": "6", "machine": "x86_64", "python_version": "3.11.7",
                         "cpu": {"brand_raw": "Some CPU", "count": 4, "flags": ["avx2", "avx512f"]}},
        "commit_info": {"id": "abc", "dirty": False},
        "benchmarks": [bench],
        "datetime": "2026-11-23T12:00:00+00:00",
        "version": "5.3.1",
    }  # fmt: skip


def test_foreign_cell_has_null_params_with_the_reason() -> None:
    from harness.store.importers import pytest_benchmark as pb

    bench = {"name": "test_f", "fullname": "t.py::test_f", "extra_info": {}, "options": {"timer": "perf_counter"},
             "stats": {"data": [0.002, 0.001, 0.003], "iterations": 5, "rounds": 3, "min": 0.001}}  # fmt: skip
    cell = pb.convert_benchmark(bench, "2026-11-23T12:00:00Z", "cpu", "x.json")
    assert cell["status"] == "ok" and cell["metrics"]["params"] is None and cell["unavailable"]["params"]
    assert cell["samples_ms"] == [2.0, 1.0, 3.0] and cell["timing"]["iters_per_sample"] == 5
    assert cell["metrics"]["latency_ms"]["p50"] == 2.0
    assert cell["metrics"]["throughput_per_s"] == pytest.approx(500.0)  # 1 item / 2 ms
    assert cell["imported"]["assumed"]["mode"]  # the schema-required mode is labelled as assumed


def test_environment_and_provenance_come_from_machine_and_commit_info() -> None:
    from harness.store.importers import pytest_benchmark as pb

    bench = {"name": "test_f", "fullname": "t.py::test_f", "stats": {"data": [0.001, 0.002], "iterations": 1}}
    doc = pb.convert(_pb_doc(bench), "x.json", tag="n", device="cuda", sha256="f" * 64)
    env = doc["environment"]
    assert env["host"] == "box" and env["python"] == "3.11.7" and env["cpu"]["model"] == "Some CPU"
    assert env["cpu"]["logical_cores"] == 4 and env["cpu"]["flags_dl"]["avx2"] and not env["cpu"]["flags_dl"]["avx"]
    assert env["memory_bytes"] is None and env["gpus_reason"]
    assert doc["cells"][0]["spec"]["device"] == "cuda:0"  # --device, normalized
    assert doc["imported"]["commit_info"]["id"] == "abc" and doc["imported"]["sha256"] == "f" * 64
    assert doc["created"] == "2026-11-23T12:00:00Z" and doc["run_id"].startswith("20261123T120000Z-box-")
    with pytest.raises(ValueError, match="unknown device"):
        pb.convert(_pb_doc(bench), "x.json", device="gpu")


# ----------------------------------------------------------------------------- hostile inputs, bounded cost

_GOOD_BENCH = {"name": "t", "fullname": "t.py::t", "stats": {"data": [0.001, 0.002, 0.0015], "iterations": 1}}
_HEAD = '{"machine_info": {"node": "box"}, "datetime": "2026-01-01T00:00:00+00:00", "benchmarks": '


def _hostile_file(bench: dict[str, Any] | None = None, **top: Any) -> str:
    doc = _pb_doc(bench or _GOOD_BENCH)
    doc.update(top)
    return json.dumps(doc)


def _with_stats_literal(literal: str) -> str:
    """A file whose benchmark's stats.data is the raw JSON text ``literal``."""
    return _HEAD + '[{"name": "t", "stats": {"iterations": 1, "data": ' + literal + "}}]}"


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``harness ARGV`` in this process (a subprocess per case would cost ~1 s of imports)."""
    from harness.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


_HOSTILE = [
    ("nan-summary", _hostile_file({**_GOOD_BENCH, "stats": {**_GOOD_BENCH["stats"], "mean": float("nan")}}), "NaN"),
    ("infinite-min", _hostile_file({**_GOOD_BENCH, "stats": {**_GOOD_BENCH["stats"], "min": float("inf")}}), "Infinity"),
    ("overflowing-float", _with_stats_literal("[0.001, 1e400]"), "too large for a double"),
    ("5000-digit-rounds", _HEAD + '[{"name": "t", "stats": {"data": [0.001], "iterations": 1, "rounds": '
     + "9" * 5000 + "}}]}", "5,000 digits"),
    ("4000-digit-sample", _with_stats_literal("[" + "9" * 4000 + "]"), "4,000 digits"),
    ("negative-time", _with_stats_literal("[0.001, -0.002]"), "non-negative seconds"),
    ("absurd-time", _with_stats_literal("[0.001, 1e300]"), "more than a year"),
    ("deep-nesting", _HEAD + '[{"name": "t", "extra_info": {"x": ' + "[" * 50_000 + "]" * 50_000
     + '}, "stats": {"data": [0.001], "iterations": 1}}]}', "nested more than 64 levels"),
    ("moderately-deep", _HEAD + '[{"name": "t", "extra_info": {"x": ' + "[" * 200 + "]" * 200
     + '}, "stats": {"data": [0.001], "iterations": 1}}]}', "nested more than 64 levels"),
    ("data-is-a-string", _hostile_file({**_GOOD_BENCH, "stats": {"data": "0.001", "iterations": 1}}),
     "stats.data must be a list"),
    ("data-holds-lists", _with_stats_literal("[[0.001], [0.002]]"), "non-negative seconds"),
    ("data-holds-bools", _with_stats_literal("[true, false]"), "non-negative seconds"),
    ("name-is-a-list", _hostile_file({**_GOOD_BENCH, "name": ["t"], "fullname": None}), "must be text"),
    ("iterations-is-a-string", _hostile_file({**_GOOD_BENCH, "stats": {"data": [0.001], "iterations": "5"}}),
     "positive integer"),
    ("iterations-huge", _HEAD + '[{"name": "t", "stats": {"data": [0.001], "iterations": 1' + "0" * 30 + "}}]}",
     "positive integer"),
    ("datetime-year-1", _hostile_file(datetime="0001-01-01T00:00:00+14:00"), "before 1970"),
    ("too-many-benchmarks", _HEAD + "[" + ",".join(['{"name": "t", "stats": {}}'] * 10_001) + "]}",
     "at most 10,000"),
    ("not-utf-8", '{"machine_info": {}, "benchmarks": [], "x": "\udcff"}', "not UTF-8"),
]  # fmt: skip


@pytest.mark.parametrize("content, expected", [c[1:] for c in _HOSTILE], ids=[c[0] for c in _HOSTILE])
def test_hostile_files_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               content: str, expected: str) -> None:  # fmt: skip
    f = tmp_path / "in.json"
    f.write_bytes(content.encode("utf-8", "surrogateescape"))
    out = tmp_path / "out"
    code, _, err = _main(["import", "pytest-benchmark", str(f), "-o", str(out)], capsys)
    assert code == 2, err[-2000:]
    assert len(err.strip().splitlines()) == 1 and expected in err and str(f) in err, err[-2000:]
    assert "Traceback" not in err
    assert not out.exists() or not list(out.glob("*.json"))  # nothing written


def test_wrong_types_in_metadata_are_ignored_not_fatal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = _pb_doc({**_GOOD_BENCH, "options": ["not", "a", "dict"], "params": 5,
                   "extra_info": {"dl_harness_not": 1, "big": list(range(20_000))}})  # fmt: skip
    doc["machine_info"] = {"node": {"a": 1}, "system": 7, "cpu": {"flags": 5, "brand_raw": ["x"], "count": "4"}}
    doc["benchmarks"].append({"name": "tiny", "stats": {"data": [5e-324, 5e-324], "iterations": 1}})
    f = tmp_path / "in.json"
    f.write_text(json.dumps(doc))
    code, out, err = _main(["import", "pytest-benchmark", str(f), "-o", str(tmp_path / "o")], capsys)
    assert code == 0, err[-2000:]
    (path,) = [Path(line.split("result: ", 1)[1]) for line in out.splitlines() if line.startswith("result: ")]
    res = json.loads(path.read_text())
    env = res["environment"]
    assert env["host"] == "unknown" and env["cpu"]["model"] == "unknown" and env["cpu"]["flags_source"] == "unavailable"
    assert env["cpu"]["logical_cores"] is None and res["run_id"].startswith("20261123T120000Z-host-")
    ok, tiny = res["cells"]
    assert ok["status"] == "ok" and "omitted" in ok["imported"]["extra_info"]  # 20,000 values: not copied verbatim
    # times of 5e-324 s: the reciprocal (throughput) overflows, so the benchmark is skipped with the reason
    assert tiny["status"] == "skipped" and "not finite" in tiny["reason"]


def test_absurd_rounds_and_params_are_noted_not_trusted() -> None:
    from harness.store.importers import pytest_benchmark as pb

    record = {"spec": {"workload": "mlp", "backend": "torch", "device": "cpu", "variant": "fp32", "mode": "inference",
                       "batch_size": 8, "size": "tiny"}, "params": 1e300, "flops_analytic": -5}  # fmt: skip
    bench = {"name": "t", "extra_info": {"dl_harness": record},
             "stats": {"data": [0.001, 0.002], "iterations": 1, "rounds": 10**12}}  # fmt: skip
    cell = pb.convert_benchmark(bench, "2026-11-23T12:00:00Z", "cpu", "x.json")
    assert cell["status"] == "ok" and cell["metrics"]["params"] is None and "flops_analytic" not in cell["metrics"]
    assert "1000000000000" in cell["imported"]["note"] and cell["timing"]["samples"] == 2


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_fifo_or_device_named_json_is_refused_without_hanging(tmp_path: Path, kind: str) -> None:
    import os

    f = tmp_path / "in.json"
    if kind == "fifo":
        os.mkfifo(f)
    else:
        f.symlink_to("/dev/zero")
    proc = run_cli(["import", "pytest-benchmark", str(f), "-o", str(tmp_path / "o")], timeout=60)
    assert proc.returncode == 2 and "not a regular file" in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_fifo_in_the_output_directory_does_not_hang_the_duplicate_check(tmp_path: Path) -> None:
    import os

    out = tmp_path / "o"
    out.mkdir()
    os.mkfifo(out / "trap.json")
    f = tmp_path / "in.json"
    f.write_text(_hostile_file())
    proc = run_cli(["import", "pytest-benchmark", str(f), "-o", str(out)], timeout=60)
    assert proc.returncode == 0 and "result: " in proc.stdout, proc.stderr[-2000:]


def test_size_limit_and_its_environment_variable(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    f = tmp_path / "in.json"
    f.write_text(_hostile_file())
    monkeypatch.setenv("DLH_MAX_RESULT_BYTES", "100")
    code, _, err = _main(["import", "pytest-benchmark", str(f), "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "over the 100-byte limit" in err and "DLH_MAX_RESULT_BYTES" in err, err
    assert len(err.strip().splitlines()) == 1
    monkeypatch.setenv("DLH_MAX_RESULT_BYTES", "lots")
    code, _, err = _main(["import", "pytest-benchmark", str(f), "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "DLH_MAX_RESULT_BYTES='lots' is not a positive whole number" in err, err
    monkeypatch.setenv("DLH_MAX_RESULT_BYTES", str(1 << 20))
    code, _, err = _main(["import", "pytest-benchmark", str(f), "-o", str(tmp_path / "o")], capsys)
    assert code == 0, err


def test_many_rounds_are_summarised_from_all_data_and_stored_as_a_documented_subsample(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """150,000 rounds: statistics from all of them (no O(resamples x n) bootstrap over
    more than 10,000 rounds), samples_ms an evenly strided subsample of 100,000 with
    ``timing.samples_subsampled`` saying so."""
    import numpy as np

    import harness.core.stats
    from harness.store.importers import pytest_benchmark as pb

    def no_big_bootstrap(samples: Any, *a: Any, **k: Any) -> Any:
        assert len(samples) <= 10_000, f"bootstrap over {len(samples)} samples: O(2000 x n), unbounded cost"
        return real(samples, *a, **k)

    real = harness.core.stats.bootstrap_median_ci
    monkeypatch.setattr(harness.core.stats, "bootstrap_median_ci", no_big_bootstrap)
    n = 150_000
    rng = np.random.default_rng(7)
    data = (0.001 + 0.0002 * rng.random(n)).tolist()
    bench = {"name": "t", "fullname": "t.py::t", "stats": {"data": data, "iterations": 3, "rounds": n}}
    doc = pb.convert(_pb_doc(bench), "x.json", sha256="0" * 64)
    cell = doc["cells"][0]
    full = np.asarray(data) * 1e3
    lat = cell["metrics"]["latency_ms"]
    assert cell["status"] == "ok" and lat["n"] == n and cell["timing"]["samples"] == n
    assert lat["p50"] == float(np.percentile(full, 50)) and lat["mean"] == float(full.mean())
    assert lat["p99"] == float(np.percentile(full, 99)) and lat["max"] == float(full.max())
    assert lat["ci95_low"] < lat["p50"] < lat["ci95_high"]
    assert "order statistics" in cell["imported"]["statistics"]["ci95_method"] == lat["ci95_method"]
    sub = cell["timing"]["samples_subsampled"]
    assert (sub["kept"], sub["total"]) == (100_000, n) and "floor(j*(total-1)/(kept-1))" in sub["method"]
    assert len(cell["samples_ms"]) == 100_000
    idx = [j * (n - 1) // (100_000 - 1) for j in (0, 1, 12_345, 99_999)]  # the documented rule, reproduced
    assert [cell["samples_ms"][j] for j in (0, 1, 12_345, 99_999)] == [float(full[i]) for i in idx]
    # a small benchmark keeps every sample and the harness's own bootstrap (as harness run)
    small = pb.convert_benchmark({"name": "s", "stats": {"data": data[:500], "iterations": 1}}, "t", "cpu", "x.json")
    assert small["samples_ms"] == (full[:500]).tolist() and "samples_subsampled" not in small["timing"]
    expected = {k: v for k, v in harness.core.stats.summarize(full[:500]).items() if k != "noisy"}
    assert small["metrics"]["latency_ms"] == expected
    assert "bootstrap" in small["imported"]["statistics"]["ci95_method"]


@pytest.mark.parametrize("with_orjson", [True, False], ids=["orjson", "stdlib-json"])
def test_strict_json_reader_refuses_the_same_things_with_or_without_orjson(
    monkeypatch: pytest.MonkeyPatch, with_orjson: bool
) -> None:
    import sys as _sys

    from harness.store.importers.safe_read import InputFileError, loads_strict

    if not with_orjson:
        monkeypatch.setitem(_sys.modules, "orjson", None)  # as if not installed
    good = b'{"a": [1, 2.5, "x", null, true], "b": {"c": -3}}'
    assert loads_strict(good, "f.json") == {"a": [1, 2.5, "x", None, True], "b": {"c": -3}}
    for bad, why in ((b"[NaN]", "NaN"), (b'{"x": -Infinity}', "Infinity"), (b"[1e400]", "too large for a double"),
                     (b"[" + b"9" * 5000 + b"]", "5,000 digits"), (b"[" + b"9" * 25 + b"]", None),
                     (b"[" * 100_000 + b"]" * 100_000, "nested more than 64"), (b"[" * 65 + b"]" * 65, "nested"),
                     (b'["\xff"]', "not UTF-8"), (b"{", "not JSON")):  # fmt: skip
        if why is None:  # 25 digits: orjson reads it as a float, the standard library refuses it
            if with_orjson:
                assert loads_strict(bad, "f.json") == [float("9" * 25)]
            else:
                with pytest.raises(InputFileError, match="25 digits"):
                    loads_strict(bad, "f.json")
            continue
        with pytest.raises(InputFileError, match=why) as e:
            loads_strict(bad, "f.json")
        assert str(e.value).startswith("f.json: ") and "\n" not in str(e.value)
    assert loads_strict(b"[" * 64 + b"]" * 64, "f.json") is not None  # 64 levels are fine
