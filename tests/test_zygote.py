"""The zygote launcher (harness/launch/zygote.py) and skips decided without a worker.

Isolation is shown with a third-party probe plugin (tests/fixtures/third_party/zygote_probe,
"installed" through its own dist-info): its model build records what the process sees
(torch threads, default dtype, RNG state, TF32 flags, an environment variable, the
working directory, a module global) and then changes all of it. Cells forked one after
the other from the same zygote must see the same state -- the same state a fresh worker
process sees. Crashes, an OOM-style SIGKILL and a hang must become failed cells with
the same classification as the fresh-process launcher gives, and the next cell must
run; a zygote that dies costs no cell; killing the runner leaves nothing alive. Real
processes, real signals, tiny models.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest

from harness.core.cells import Settings, TaskSpec
from harness.launch.base import precheck
from harness.launch.inprocess import run_cell
from harness.launch.process import ProcessLauncher
from harness.launch.zygote import ZygoteLauncher
from tests.conftest import ROOT, pids_with_env

PROBE = ROOT / "tests" / "fixtures" / "third_party" / "zygote_probe"
FAST = Settings(size="tiny", min_time_s=0.02, warmup_max_s=0.05, min_samples=3, idle_baseline_s=0, timeout_s=120)
STATE = ("threads", "default_dtype", "matmul_allow_tf32", "cudnn_allow_tf32", "float32_matmul_precision", "env",
         "cwd", "builds_before")
FRESH_ENTROPY = ("initial_seed", "rng_state", "numpy_rng")  # seeded from the OS in every fresh process


def spec(workload: str, batch_size: int = 4, backend: str = "torch", device: str = "cpu",
         variant: str = "fp32", world_size: int | None = None) -> TaskSpec:
    mode = "training" if world_size else "inference"
    return TaskSpec(workload, backend, device, variant, mode, batch_size, "tiny", world_size)


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, ZygoteLauncher, list[str]]]:
    """The probe plugin on the path of this process and its workers, a directory for its
    records, and one launcher (one torch zygote) shared by the tests of this module."""
    records = tmp_path_factory.mktemp("zprobe")
    said: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(PROBE))
        old = os.environ.get("PYTHONPATH", "")
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(PROBE), old) if p))
        mp.setenv("DLH_ZPROBE_DIR", str(records))
        mp.delenv("DLH_ZPROBE_VAR", raising=False)
        mp.setenv("OMP_WAIT_POLICY", "PASSIVE")  # one thread policy whatever the load: one zygote
        launcher = ZygoteLauncher(say=said.append)
        try:
            yield records, launcher, said
        finally:
            launcher.close()


def _records(d: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"), key=lambda p: int(p.name.split("-")[0]))]


def _method(cell: dict[str, Any]) -> str:
    return cell["runtime"]["launch"]["method"]


def _as_in_a_fresh_process(r: dict[str, Any]) -> None:
    """What a fresh worker process sees at its model build: torch's defaults, the
    runner's environment and directory, and the probe module not yet used."""
    assert (r["default_dtype"], r["matmul_allow_tf32"], r["cudnn_allow_tf32"], r["float32_matmul_precision"]) == \
        ("torch.float32", False, True, "highest"), r
    assert r["env"] is None and r["builds_before"] == 0 and r["cwd"] == os.getcwd(), r
    assert r["initial_seed"] != 12345, r


def test_a_cell_that_changes_global_state_does_not_change_what_the_next_cell_sees(probe: Any) -> None:
    records, launcher, said = probe
    first, second = launcher.launch(spec("zprobe", 4), FAST), launcher.launch(spec("zprobe", 5), FAST)
    assert _method(first) == _method(second) == "zygote-fork", (first["runtime"], second["runtime"])
    assert first["status"] == second["status"], (first["reason"], second["reason"])
    a, b = _records(records)
    assert a["ppid"] == b["ppid"] and a["ppid"] in launcher.zygote_pids()  # two children of one zygote...
    assert a["pid"] != b["pid"]
    for key in STATE:  # ...and the second saw nothing the first changed
        assert a[key] == b[key], (key, a[key], b[key])
    _as_in_a_fresh_process(a)
    _as_in_a_fresh_process(b)
    # torch's and numpy's global RNGs start from fresh entropy in each process, as in a
    # fresh worker (not from the zygote's stream, and not where the first cell left them)
    for key in FRESH_ENTROPY:
        assert a[key] != b[key], key
    assert os.environ.get("DLH_ZPROBE_VAR") is None and not said


def test_crash_oom_kill_and_hang_fail_like_a_fresh_worker_and_the_next_cell_runs(probe: Any) -> None:
    _, launcher, said = probe
    cells = {
        "exit": launcher.launch(spec("zprobe_exit"), FAST),
        "segv": launcher.launch(spec("zprobe_segv"), FAST),
        "oom": launcher.launch(spec("zprobe_oom"), FAST),
        "hang": launcher.launch(spec("zprobe_hang"), dataclasses.replace(FAST, timeout_s=3)),
        "ok": launcher.launch(spec("zprobe_ok"), FAST),
    }
    assert {k: _method(c) for k, c in cells.items()} == dict.fromkeys(cells, "zygote-fork")
    expected = {
        "exit": ("WorkerCrash", "worker exited with status 3 without writing a result", 3, "exiting with status 3"),
        "segv": ("WorkerCrash", "worker died with SIGSEGV", -signal.SIGSEGV, "about to die"),
        "oom": ("WorkerCrash", "worker died with SIGKILL (killed: out of memory?)", -signal.SIGKILL, "OOM killer"),
        "hang": ("Timeout", "timed out after 3 s (raise it with --timeout)", None, "sleeping forever"),
    }
    for name, (etype, reason, rc, tail) in expected.items():
        cell = cells[name]
        assert cell["status"] == "failed", (name, cell["reason"])
        assert (cell["error"]["type"], cell["reason"], cell["error"]["returncode"]) == (etype, reason, rc), name
        assert tail in cell["error"]["stderr_tail"], (name, cell["error"]["stderr_tail"])
    assert cells["hang"]["duration_s"] < 30
    assert cells["ok"]["status"] == "ok", cells["ok"]["reason"]
    (zygote,) = launcher.zygote_pids()
    assert psutil.Process(zygote).children() == []  # every child reaped, the hanging one killed
    # the fresh-process launcher classifies the same death the same way
    fresh = ProcessLauncher().launch(spec("zprobe_oom"), FAST)
    assert (fresh["error"]["type"], fresh["reason"], fresh["error"]["returncode"]) == expected["oom"][:3]
    assert not said


def test_a_zygote_that_dies_under_a_cell_costs_no_cell_and_is_not_used_again(probe: Any) -> None:
    records, launcher, said = probe  # (runs after the tests above: it ends the shared zygote)
    (zygote,) = launcher.zygote_pids()
    seen = len(_records(records))
    cell = launcher.launch(spec("zprobe_kill_zygote"), FAST)  # kills its zygote, then dies with it
    assert cell["status"] == "ok", cell["reason"]  # run again in a fresh process
    why = cell["runtime"]["launch"]["reason"]
    assert _method(cell) == "fresh-process"
    assert f"the torch zygote (pid {zygote}) died with SIGKILL while a cell ran" in why, why
    assert not psutil.pid_exists(zygote) and launcher.zygote_pids() == []
    assert said == [f"warning: {why}"] and "torch cells start fresh processes from then on" in why
    # the fresh worker saw what forked children see
    (fresh,) = _records(records)[seen:]
    assert fresh["ppid"] == os.getpid()
    _as_in_a_fresh_process(fresh)
    # later torch cells: fresh processes, for the same recorded reason
    assert launcher._why_not_fork(spec("zprobe_ok"), "auto") == why


def test_a_backend_whose_import_leaves_a_thread_running_is_not_forked_unless_asked(probe: Any) -> None:
    threaded = spec("zprobe", backend="zprobe_threaded", variant="zprobe_plain")
    launcher = ZygoteLauncher()
    try:
        first, second = launcher.launch(threaded, FAST), launcher.launch(threaded, FAST)
        assert first["status"] == second["status"] == "ok", (first["reason"], second["reason"])
        for cell in (first, second):  # the zygote that found out ran the first cell itself
            assert _method(cell) == "fresh-process"
            assert "left 1 more thread(s) running" in cell["runtime"]["launch"]["reason"]
        assert launcher.zygote_pids() == []
        forced = launcher.launch(threaded, dataclasses.replace(FAST, launch="fork"))
        assert forced["status"] == "ok" and _method(forced) == "zygote-fork"
        assert forced["runtime"]["launch"]["reason"].startswith(
            "launch setting 'fork' (--launch or the suite's settings.launch): forked although importing")
        plain = launcher.launch(threaded, dataclasses.replace(FAST, launch="process"))
        assert plain["runtime"]["launch"] == {
            "method": "fresh-process", "reason": "launch setting 'process' (--launch or the suite's settings.launch)"}
    finally:
        launcher.close()


def test_killing_the_runner_leaves_no_zygote_and_no_cell_alive(probe: Any, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch), DLH_TEST_MARK=marker)
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "run", "-w", "zprobe_hang", "--size", "tiny", "--timeout", "300",
         "--out", str(tmp_path / "out"), "--no-progress", "--launch", "fork"],  # fork: a 1-cell run
        cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(
                "sleeping forever" in p.read_text(errors="replace") for p in scratch.glob("dlh-cell-*/worker.log")):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        pids = pids_with_env(f"DLH_TEST_MARK={marker}")
        cmdlines = [" ".join(psutil.Process(p).cmdline()) for p in pids]
        assert sum("harness.launch.zygote" in c for c in cmdlines) == 2, cmdlines  # the zygote and its child
        proc.kill()  # kill -9: no handler of the runner runs
        proc.communicate(timeout=10)
        deadline = time.monotonic() + 15
        while pids_with_env(f"DLH_TEST_MARK={marker}") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pids_with_env(f"DLH_TEST_MARK={marker}") == []
        deadline = time.monotonic() + 5
        while list(scratch.glob("dlh-*")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(scratch.glob("dlh-*")) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in pids_with_env(f"DLH_TEST_MARK={marker}"):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.cuda
@pytest.mark.skipif(not any(Path("/dev").glob("nvidia[0-9]*")), reason="no NVIDIA GPU here")
def test_cuda_cells_fork_from_a_zygote_without_a_cuda_context(probe: Any) -> None:
    launcher = ZygoteLauncher()
    try:
        cells = [launcher.launch(spec("zprobe_ok", device="cuda:0"), FAST) for _ in range(2)]
    finally:
        launcher.close()
    assert [(c["status"], _method(c)) for c in cells] == [("ok", "zygote-fork")] * 2, [c["reason"] for c in cells]


# ----------------------------------------------------------------------------- skips decided by the parent


def test_skips_decided_without_a_worker_give_the_workers_reason_in_milliseconds(probe: Any) -> None:
    cores = os.cpu_count() or 1
    cases = [
        spec("zprobe_ok", backend="zprobe_threaded", variant="fp32"),  # variant the backend cannot do
        spec("mlp", backend="zprobe_threaded", variant="zprobe_plain"),  # workload without that backend
        spec("no_such_workload"),  # unknown name
        spec("zprobe_ok", world_size=cores + 1),  # more data-parallel CPU workers than cores
    ]
    if not any(Path("/dev").glob("nvidia*")):  # absent device (torch without CUDA, or no driver, here)
        cases += [spec("zprobe_ok", device="cuda:0"), spec("zprobe_ok", device="cuda:0", world_size=2)]
    precheck(cases[0], FAST)  # warm the registry's entry-point cache once
    for s in cases:
        t0 = time.perf_counter()
        reason = precheck(s, FAST)
        elapsed = time.perf_counter() - t0
        worker = run_cell(s, FAST)  # what the worker decides, in this process
        assert worker["status"] == "skipped", (s.id, worker["reason"])
        assert reason == worker["reason"], s.id
        assert elapsed < 0.05, (s.id, elapsed)
    assert precheck(spec("zprobe_ok"), FAST) is None  # a cell that can run is left to the worker
    # the launchers record such a cell as skipped by the runner, with no process started
    launcher = ZygoteLauncher()
    cell = launcher.launch(cases[0], FAST)
    assert cell["status"] == "skipped" and _method(cell) == "precheck" and cell["duration_s"] < 0.05
    assert launcher.zygote_pids() == []


def test_the_precheck_imports_no_framework() -> None:
    code = ("import sys, time\nfrom harness.core.cells import Settings, TaskSpec\nfrom harness.launch.base import precheck\n"
            "t0 = time.perf_counter()\n"
            "r = [precheck(TaskSpec('mlp', b, 'cuda:0', 'fp32', 'inference', 8, 'tiny'), Settings()) for b in "
            "('torch', 'tensorflow')]\n"
            "print(repr(r), 'torch' in sys.modules, 'tensorflow' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("False False"), out.stdout


def test_auto_starts_a_zygote_only_for_runs_with_enough_cells_of_its_backend(probe: Any) -> None:
    """A zygote imports more than one fresh worker: under ``auto`` a run with fewer than
    ZYGOTE_MIN_CELLS cells of a backend starts them fresh (saying why); a longer run
    forks; ``--launch fork`` forks whatever the count."""
    from harness.launch.zygote import ZYGOTE_MIN_CELLS

    one = spec("zprobe", variant="zprobe_plain")
    launcher = ZygoteLauncher()
    try:
        launcher.plan([one])
        cell = launcher.launch(one, FAST)
        assert cell["status"] == "ok", cell["reason"]
        assert _method(cell) == "fresh-process"
        assert cell["runtime"]["launch"]["reason"].startswith("auto: 1 torch cell(s) in this run")
        assert launcher.zygote_pids() == []
        launcher.plan([one] * ZYGOTE_MIN_CELLS)
        assert _method(launcher.launch(one, FAST)) == "zygote-fork"
        launcher.plan([one])
        assert _method(launcher.launch(one, dataclasses.replace(FAST, launch="fork"))) == "zygote-fork"
    finally:
        launcher.close()
