"""The runner with real worker processes: plugins from another package, a crashing
worker, a raising workload, a timeout, Ctrl-C, and skips."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.conftest import ROOT, interruptible, only_result


def _cells(doc):
    return {c["spec"]["workload"]: c for c in doc["cells"]}


def test_third_party_workload_is_discovered_and_runs(plugin_site, cli, tmp_path):
    listing = cli(["list", "workloads"])
    assert listing.returncode == 0
    assert "toy" in listing.stdout and "mlp" in listing.stdout
    proc = cli(["run", "-w", "toy", "--size", "tiny", "--min-time", "0.05", "--out", str(tmp_path), "--no-progress"])
    assert proc.returncode == 0, proc.stderr
    doc = only_result(tmp_path)
    cell = doc["cells"][0]
    assert cell["status"] == "ok"
    assert cell["metrics"]["params"] == 16 * 10 + 10
    assert len(cell["samples_ms"]) >= 5
    # no file of ours names the plugin: discovery went through its dist-info only
    assert "toy" not in (ROOT / "pyproject.toml").read_text()


def test_failing_crashing_and_timed_out_cells_are_recorded_and_the_sweep_goes_on(plugin_site, cli, tmp_path):
    proc = cli(
        ["run", "-w", "toy_raise", "-w", "toy_crash", "-w", "toy_hang", "-w", "toy",
         "--size", "tiny", "--min-time", "0.05", "--timeout", "20", "--out", str(tmp_path), "--no-progress"]
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    doc = only_result(tmp_path)
    cells = _cells(doc)
    assert [c["spec"]["workload"] for c in doc["cells"]] == ["toy_raise", "toy_crash", "toy_hang", "toy"]

    raised = cells["toy_raise"]
    assert raised["status"] == "failed"
    assert "boom: toy_raise always fails to build" in raised["reason"]
    assert raised["error"]["type"] == "RuntimeError"
    assert "build_torch" in raised["error"]["traceback"]

    crashed = cells["toy_crash"]
    assert crashed["status"] == "failed"
    assert "SIGSEGV" in crashed["reason"]
    assert crashed["error"]["returncode"] == -signal.SIGSEGV
    assert "toy_crash: about to die" in crashed["error"]["stderr_tail"]

    hung = cells["toy_hang"]
    assert hung["status"] == "failed"
    assert "timed out after 20 s" in hung["reason"]
    assert "sleeping forever" in hung["error"]["stderr_tail"]
    assert hung["duration_s"] < 45

    assert cells["toy"]["status"] == "ok"  # the sweep went on
    assert doc["complete"] is True and doc["not_run"] == []


def test_unsupported_mode_and_missing_cuda_are_skipped_with_reasons(plugin_site, cli, tmp_path):
    proc = cli(
        ["run", "-w", "toy_inference_only", "--mode", "training", "-w", "toy", "-d", "cuda",
         "--size", "tiny", "--min-time", "0.05", "--out", str(tmp_path), "--no-progress"]
    )
    assert proc.returncode == 0, proc.stderr
    doc = only_result(tmp_path)
    reasons = {c["spec"]["workload"]: c for c in doc["cells"]}
    assert all(c["status"] == "skipped" for c in doc["cells"])
    assert "does not support mode 'training'" in reasons["toy_inference_only"]["reason"]
    assert "cuda:0 requested but" in reasons["toy"]["reason"]
    assert "CUDA" in reasons["toy"]["reason"]


def test_ctrl_c_keeps_finished_cells(plugin_site, tmp_path):
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "run", "-w", "toy", "-w", "toy_hang",
         "--mode", "inference", "--size", "tiny", "--min-time", "0.05", "--timeout", "120",
         "--out", str(tmp_path), "--no-progress"],
        cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=interruptible,
    )
    # wait until the first cell is saved and the hanging one is running
    deadline = time.time() + 90
    while time.time() < deadline:
        files = list(tmp_path.glob("*.json"))
        if files:
            try:
                doc = json.loads(files[0].read_text())
            except json.JSONDecodeError:
                doc = {"cells": []}
            if len(doc["cells"]) == 1:
                break
        time.sleep(0.2)
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    doc = only_result(tmp_path)
    assert [c["status"] for c in doc["cells"]] == ["ok"]
    assert doc["complete"] is False and doc["interrupted"] is True
    # the cell that was running when Ctrl-C came is listed as not run, not as failed
    assert doc["not_run"] == ["toy_hang/torch/cpu/fp32/inference/bs4/tiny"]
    # no orphaned worker left hanging
    ps = subprocess.run(["pgrep", "-f", "harness.launch.worker"], capture_output=True, text=True)
    assert ps.stdout.strip() == "" or str(proc.pid) not in ps.stdout
    # an interrupted run is still a valid, loadable result
    from harness.store.results import load_result

    load_result(next(tmp_path.glob("*.json")))
