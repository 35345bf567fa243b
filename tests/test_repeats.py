"""``run --repeats N``: each cell measured in N worker processes, interleaved in a
randomised order over the suite, merged into one cell with ``repeats``; sustained
throughput; the v2 -> v3 migration; contention in the terminal and the exit code."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from harness.core import repeats

from harness.store import results
from harness.core.suite import Settings, Suite, TaskSpec
from harness.core.timing import Measurement
from harness.launch.worker import empty_cell, sustained_throughput
from tests.conftest import ROOT, only_result


def _spec(w: str) -> TaskSpec:
    return TaskSpec(workload=w, backend="torch", device="cpu", variant="fp32", mode="inference",
                    batch_size=4, size="tiny")


def _ok(spec: TaskSpec, samples: list[float], wall: float, contended: bool = False) -> dict[str, Any]:
    c = empty_cell(spec)
    c["status"] = "ok"
    c["samples_ms"] = samples
    from harness.core.stats import summarize

    lat = summarize(samples)
    lat.pop("noisy")
    c["metrics"] = {"latency_ms": lat, "flops": 1e6, "peak_host_mem_bytes": 1, "params": 3,
                    "throughput_per_s": len(samples) * spec.batch_size / wall}
    c["timing"] = {"samples": len(samples), "iters_per_sample": 1, "loop_wall_s": wall,
                   "contention": {"detected": contended, "reasons": ["other processes used 1.8 cores"]}}
    return c


def test_schedule_interleaves_rounds_in_shuffled_orders() -> None:
    cells = [_spec(f"w{i}") for i in range(8)]
    order = repeats.schedule(cells, 3, seed=1)
    assert len(order) == 24
    rounds = [order[r * 8:(r + 1) * 8] for r in range(3)]
    for r, rnd in enumerate(rounds):  # every round runs every cell exactly once
        assert sorted(i for i, _ in rnd) == list(range(8)) and {k for _, k in rnd} == {r}
    assert len({tuple(i for i, _ in rnd) for rnd in rounds}) > 1  # orders differ between rounds
    assert order == repeats.schedule(cells, 3, seed=1)  # seeded: reproducible
    assert repeats.schedule(cells, 1) == [(i, 0) for i in range(8)]  # a plain run keeps the suite order


def test_merge_pools_samples_and_keeps_each_process() -> None:
    spec = _spec("mlp")
    a = _ok(spec, [1.0, 1.0, 1.0, 1.0], wall=0.005)
    b = _ok(spec, [2.0, 2.0, 2.0, 2.0], wall=0.010, contended=True)
    cell = repeats.merge([a, b], planned=2, global_batch=4)
    assert cell["status"] == "ok"
    assert [e["index"] for e in cell["repeats"]] == [0, 1]
    assert cell["repeats"][1]["samples_ms"] == [2.0] * 4 and cell["repeats"][0]["timing"]["loop_wall_s"] == 0.005
    assert cell["samples_ms"] == [1.0] * 4 + [2.0] * 4
    # sustained over processes: 8 steps x 4 samples / 15 ms of loop wall time
    assert cell["metrics"]["throughput_per_s"] == pytest.approx(32 / 0.015)
    assert cell["metrics"]["throughput_p50_per_s"] == pytest.approx(4e3 / cell["metrics"]["latency_ms"]["p50"])
    assert cell["timing"]["contention"]["detected"] is True
    assert cell["timing"]["contention"]["processes_contended"] == [2]
    assert cell["repeats_summary"]["processes"] == 2


def test_merge_a_failed_process_fails_the_cell_but_keeps_the_ok_samples() -> None:
    spec = _spec("mlp")
    bad = empty_cell(spec)
    bad["reason"] = "worker died with SIGSEGV"
    bad["error"] = {"type": "WorkerCrash", "message": "x", "returncode": -11, "stderr_tail": "..."}
    cell = repeats.merge([_ok(spec, [1.0, 1.1], 0.003), bad], planned=3, global_batch=4)
    assert cell["status"] == "failed" and "process 2 of 2 failed: worker died with SIGSEGV" in cell["reason"]
    assert cell["repeats"][0]["status"] == "ok" and cell["repeats"][0]["samples_ms"] == [1.0, 1.1]
    assert cell["repeats_planned"] == 3


def test_runner_runs_rounds_interleaved_and_does_not_repeat_skips(tmp_path: Path) -> None:
    from harness.launch.runner import run_suite

    cells = [_spec("a"), _spec("b"), _spec("skipme"), _spec("c")]
    calls: list[str] = []

    def fake_runner(spec: TaskSpec, settings: Settings) -> dict[str, Any]:
        calls.append(spec.workload)
        if spec.workload == "skipme":
            c = empty_cell(spec)
            c["status"], c["reason"] = "skipped", "no such device"
            return c
        return _ok(spec, [1.0 + 0.1 * len(calls)] * 5, wall=0.01)

    suite = Suite(name="t", settings=Settings(repeats=3, seed=7))
    out = run_suite(suite, cells, tmp_path, show_progress=False, cell_runner=fake_runner)
    assert calls.count("skipme") == 1 and all(calls.count(w) == 3 for w in "abc")
    first_round = calls[:4]
    assert sorted(first_round) == ["a", "b", "c", "skipme"]  # every cell once before any repeats
    assert [c["spec"]["workload"] for c in out.doc["cells"]] == ["a", "b", "skipme", "c"]  # suite order
    by = {c["spec"]["workload"]: c for c in out.doc["cells"]}
    assert len(by["a"]["repeats"]) == 3 and by["skipme"]["status"] == "skipped"
    assert out.doc["measurement_order"]["rounds"] == 3
    # the stored file is a valid v3 result that round-trips
    doc = results.load_result(out.path)
    assert doc["schema_version"] == results.SCHEMA_VERSION == 3
    assert len(doc["cells"][0]["repeats"]) == 3


def test_sustained_throughput_is_samples_over_loop_wall_time_not_batch_over_p50() -> None:
    # steps that vary a lot (12 ms .. 1,440 ms): batch / p50 overstates what was processed
    samples = [0.012] * 6 + [1.44] * 5
    m = Measurement(samples_s=samples, iters_per_sample=1, warmup_iters=3, warmup_s=0.1, warmup_stable=True,
                    first_iter_s=0.02, timed_s=sum(samples), clock="perf_counter", clock_overhead_s=1e-7,
                    loop_window_s=(100.0, 100.0 + sum(samples) + 0.001))
    bs = 8
    sustained = sustained_throughput(m, bs)
    assert sustained == pytest.approx(len(samples) * bs / (sum(samples) + 0.001))
    p50_rate = bs / sorted(samples)[len(samples) // 2]
    assert p50_rate > 600 and sustained < 13  # the old definition reported ~50x what the loop processed


def test_v2_files_migrate_throughput(tmp_path: Path) -> None:
    doc = {"schema_version": 2, "run_id": "r", "environment": {}, "suite": {}, "harness": {},
           "cells": [{"spec": {"workload": "mlp", "backend": "torch", "device": "cpu", "variant": "fp32",
                               "mode": "inference", "batch_size": 8, "size": "tiny"},
                      "status": "ok", "reason": None, "samples_ms": [1.0],
                      "metrics": {"throughput_per_s": 8000.0},
                      "timing": {"samples": 100, "iters_per_sample": 2, "loop_wall_s": 0.4}},
                     {"spec": {"batch_size": 8}, "status": "ok", "samples_ms": [1.0],
                      "metrics": {"throughput_per_s": 8000.0}, "timing": {}}]}
    out = results.migrate(doc)
    m0, m1 = out["cells"][0]["metrics"], out["cells"][1]["metrics"]
    assert out["schema_version"] == 3
    assert m0["throughput_p50_per_s"] == 8000.0 and m0["throughput_per_s"] == pytest.approx(200 * 8 / 0.4)
    assert m1["throughput_per_s"] == 8000.0 and "batch/p50" in m1["throughput_method"]


def test_real_run_with_repeats_records_each_process(plugin_site: Path, cli: Any, tmp_path: Path) -> None:
    proc = cli(["run", "-w", "toy", "--mode", "inference", "--mode", "training", "--size", "tiny",
                "--min-time", "0.05", "--repeats", "2", "--out", str(tmp_path), "--no-progress"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = only_result(tmp_path)
    assert doc["suite"]["settings"]["repeats"] == 2
    for cell in doc["cells"]:
        assert cell["status"] == "ok" and len(cell["repeats"]) == 2
        per = [len(r["samples_ms"]) for r in cell["repeats"]]
        assert len(cell["samples_ms"]) == sum(per)
        steps = sum(r["timing"]["samples"] * r["timing"]["iters_per_sample"] for r in cell["repeats"])
        wall = sum(r["timing"]["loop_wall_s"] for r in cell["repeats"])
        assert cell["metrics"]["throughput_per_s"] == pytest.approx(steps * cell["spec"]["batch_size"] / wall)
        for r in cell["repeats"]:  # each process's own sustained throughput, within 1%
            t = r["timing"]
            own = t["samples"] * t["iters_per_sample"] * cell["spec"]["batch_size"] / t["loop_wall_s"]
            assert r["metrics"]["throughput_per_s"] == pytest.approx(own, rel=0.01)
            assert "detected" in t["contention"]
    assert "process 2/2" in proc.stdout + proc.stderr


def test_contended_run_is_flagged_and_fail_on_contention_exits_1(plugin_site: Path, cli: Any,
                                                                 tmp_path: Path) -> None:
    hog = "import time\nt=time.time()\nwhile time.time()-t<120: pass\n"
    hogs = [subprocess.Popen([sys.executable, "-c", hog]) for _ in range(3)]
    try:
        time.sleep(0.5)
        proc = cli(["run", "-w", "toy", "--mode", "inference", "--size", "tiny", "--min-time", "0.5",
                    "--out", str(tmp_path), "--no-progress", "--fail-on-contention"])
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    out = proc.stdout + proc.stderr
    doc = only_result(tmp_path)
    cell = doc["cells"][0]
    assert cell["status"] == "ok"
    assert cell["timing"]["contention"]["detected"] is True, json.dumps(cell["timing"]["contention"])
    assert "CONTENDED" in out and "contention:" in out
    assert proc.returncode == 1, out
    assert "Traceback" not in proc.stderr


def test_repeats_setting_is_validated(cli: Any) -> None:
    proc = cli(["run", "-w", "mlp", "--repeats", "0"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    with pytest.raises(ValueError, match="repeats must be a positive integer"):
        Settings(repeats=0)
    assert ROOT.exists()
