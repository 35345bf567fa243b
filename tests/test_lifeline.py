"""A worker dies with its runner and keeps its own deadline (harness/core/lifeline.py);
SIGHUP stops a run like SIGTERM. Real processes, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.conftest import ROOT, only_result


def _cell_scratch(p: psutil.Process) -> Path | None:
    """The scratch directory of a cell's process: its stdout is the cell's worker.log
    there (a fresh worker and a child forked from a zygote alike)."""
    try:
        out = Path(os.readlink(f"/proc/{p.pid}/fd/1"))
    except OSError:
        return None
    return out.parent if out.name == "worker.log" and out.parent.name.startswith("dlh-cell-") else None


def _wait_for_worker(parent: subprocess.Popen[str], timeout: float = 90) -> psutil.Process:
    """The process running the cell: a fresh ``harness.launch.worker`` or a child forked
    from a zygote (found by its output going to the cell's worker.log)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for child in psutil.Process(parent.pid).children(recursive=True):
            try:
                if _cell_scratch(child) is not None:
                    return child
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.2)
    raise AssertionError("no worker started")


def test_kill_9_of_the_runner_kills_the_worker_and_removes_its_scratch(plugin_site: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "run", "-w", "toy_hang", "--mode", "inference", "--size", "tiny",
         "--timeout", "300", "--out", str(tmp_path), "--no-progress"],
        cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        worker = _wait_for_worker(proc)
        scratch = _cell_scratch(worker)
        assert scratch is not None and scratch.is_dir()
        zygotes = [p for p in psutil.Process(proc.pid).children(recursive=True)
                   if "harness.launch.zygote" in " ".join(p.cmdline())]
        time.sleep(1.0)  # the worker is inside its (endless) step now
        proc.kill()  # kill -9: no handler of the runner runs
        proc.wait(timeout=10)
        gone, alive = psutil.wait_procs([worker, *zygotes], timeout=15)
        assert not alive, "the worker (or its zygote) outlived its runner"
        deadline = time.time() + 5
        while scratch.exists() and time.time() < deadline:
            time.sleep(0.1)
        assert not scratch.exists(), "the worker's scratch directory was left behind"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_worker_keeps_its_own_deadline(tmp_path: Path) -> None:
    scratch = tmp_path / "cell"
    scratch.mkdir()
    code = ("import time\nfrom harness.core.lifeline import bind_from_env\nbind_from_env()\n"
            "time.sleep(60)\n")
    env = dict(os.environ, DLH_PARENT_PID=str(os.getpid()), DLH_CELL_DIR=str(scratch), DLH_DEADLINE_S="1",
               PYTHONPATH=str(ROOT))
    t0 = time.time()
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30,
                       start_new_session=True)
    assert time.time() - t0 < 15
    assert p.returncode in (124, -signal.SIGKILL), (p.returncode, p.stderr)  # its own group is killed last
    assert "own deadline of 1 s passed" in p.stdout
    assert not scratch.exists()


def test_sighup_stops_a_run_like_sigterm(plugin_site: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "run", "-w", "toy", "-w", "toy_hang", "--mode", "inference",
         "--size", "tiny", "--min-time", "0.05", "--timeout", "120", "--out", str(tmp_path), "--no-progress"],
        cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while time.time() < deadline:
        files = list(tmp_path.glob("*.json"))
        if files:
            try:
                if len(json.loads(files[0].read_text())["cells"]) == 1:
                    break
            except (json.JSONDecodeError, KeyError):
                pass
        time.sleep(0.2)
    worker = _wait_for_worker(proc)
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    doc = only_result(tmp_path)
    assert [c["status"] for c in doc["cells"]] == ["ok"] and doc["interrupted"] is True
    _, alive = psutil.wait_procs([worker], timeout=10)
    assert not alive
