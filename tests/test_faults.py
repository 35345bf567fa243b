"""Fault injection: a running ``harness run`` gets kill -9, SIGHUP, SIGTERM or SIGINT
while a cell is running (README "Exit codes": 130 for HUP/TERM/INT, and "a worker never
outlives its runner").

Each scenario runs ``-w toy -w toy_hang``: the ``toy`` cell finishes, then the
``toy_hang`` worker sleeps inside its model build and the runner is signalled. Checked
for every signal: the finished cell is kept in the result file, the file says
``complete: false``, no process of the run survives (found by a unique environment
marker in ``/proc/*/environ``, which every worker, torchrun and their children inherit)
and no scratch directory (``dlh-*``) is left in the run's own ``TMPDIR``. For HUP, TERM
and INT additionally: exit 130, no traceback, ``interrupted: true``.

The four scenarios run concurrently (one module fixture) so that the file costs the
time of one run, not four. Write errors of ``--out`` are covered in depth by
tests/test_write_errors.py and not repeated here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import PLUGIN_SITE, ROOT, interruptible, pids_with_env

SIGNALS = ("SIGKILL", "SIGHUP", "SIGTERM", "SIGINT")
TOY_ID = "toy/torch/cpu/fp32/inference/bs4/tiny"
HANG_ID = "toy_hang/torch/cpu/fp32/inference/bs4/tiny"
READY_TIMEOUT_S = 240.0  # four runs start at once on a shared 2-core machine
EXIT_TIMEOUT_S = 60.0
REAP_TIMEOUT_S = 15.0  # kill -9: the worker's lifeline notices within POLL_S; PDEATHSIG is asynchronous


@dataclass
class Scenario:
    sig: str
    root: Path
    marker: str
    proc: subprocess.Popen[str] | None = None
    signalled_after_s: float | None = None
    pids_at_signal: list[int] = field(default_factory=list)
    scratch_at_signal: list[str] = field(default_factory=list)
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    problem: str | None = None  # the scenario could not be set up (not a verdict on the harness)

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def scratch(self) -> list[str]:
        return sorted(p.name for p in self.tmp.glob("dlh-*"))

    def ready(self) -> bool:
        """The toy cell is saved and the toy_hang worker is inside its (endless) build."""
        files = list(self.out.glob("*.json"))
        if len(files) != 1:
            return False
        try:
            if len(json.loads(files[0].read_text())["cells"]) != 1:
                return False
        except (OSError, ValueError, KeyError, TypeError):
            return False
        for log in self.tmp.glob("dlh-cell-*/worker.log"):
            try:
                if "toy_hang: sleeping forever" in log.read_text(errors="replace"):
                    return True
            except OSError:
                continue
        return False

    def doc(self) -> dict[str, Any]:
        files = sorted(self.out.glob("*.json"))
        assert len(files) == 1, f"{self.sig}: expected one result file in {self.out}, found {files}"
        return json.loads(files[0].read_text())

    def context(self) -> str:
        return (f"[{self.sig}] rc={self.returncode} signalled after {self.signalled_after_s} s\n"
                f"stdout tail:\n{self.stdout[-1500:]}\nstderr tail:\n{self.stderr[-3000:]}")


def _start(sc: Scenario) -> None:
    sc.out.mkdir(parents=True)
    sc.tmp.mkdir(parents=True)
    env = dict(os.environ)
    env["TMPDIR"] = str(sc.tmp)  # this run's scratch directories only: nothing of other tests
    env["DLH_TEST_MARK"] = sc.marker
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PLUGIN_SITE), env.get("PYTHONPATH", "")) if p)
    sc.proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "run", "-w", "toy", "-w", "toy_hang", "--mode", "inference",
         "--size", "tiny", "--min-time", "0.05", "--timeout", "300", "--out", str(sc.out), "--no-progress"],
        cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # like a CI job: a signal reaches the runner only, as sent here
        preexec_fn=interruptible,  # SIGINT as a terminal's Ctrl-C, even if this session ignores it
    )


def _kill_leftovers(sc: Scenario) -> None:
    """Never leave processes of this test behind, whatever the outcome (by pid, ours only)."""
    if sc.proc is not None and sc.proc.poll() is None:
        sc.proc.kill()
        try:
            sc.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    for pid in pids_with_env(f"DLH_TEST_MARK={sc.marker}"):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture(scope="module")
def interrupted_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Scenario]]:
    """All four scenarios, started together; each is signalled as soon as it is ready."""
    base = tmp_path_factory.mktemp("faults")
    scenarios = {s: Scenario(sig=s, root=base / s.lower(), marker=uuid.uuid4().hex) for s in SIGNALS}
    try:
        t0 = time.monotonic()
        for sc in scenarios.values():
            _start(sc)
        pending = set(scenarios)
        while pending and time.monotonic() - t0 < READY_TIMEOUT_S:
            for name in sorted(pending):
                sc = scenarios[name]
                assert sc.proc is not None
                if sc.proc.poll() is not None:
                    sc.problem = f"harness run ended (rc {sc.proc.returncode}) before the hanging cell started"
                    pending.discard(name)
                elif sc.ready():
                    time.sleep(0.3)  # well inside time.sleep(3600) now
                    sc.pids_at_signal = pids_with_env(f"DLH_TEST_MARK={sc.marker}")
                    sc.scratch_at_signal = sc.scratch()
                    sc.proc.send_signal(getattr(signal, sc.sig))
                    sc.signalled_after_s = round(time.monotonic() - t0, 1)
                    pending.discard(name)
            time.sleep(0.2)
        for name in pending:
            scenarios[name].problem = (f"not ready after {READY_TIMEOUT_S:g} s "
                                       "(the toy cell or the hanging worker never started)")
        for sc in scenarios.values():
            assert sc.proc is not None
            try:
                sc.stdout, sc.stderr = sc.proc.communicate(timeout=EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                sc.problem = sc.problem or f"harness run did not exit within {EXIT_TIMEOUT_S:g} s of {sc.sig}"
                sc.proc.kill()
                sc.stdout, sc.stderr = sc.proc.communicate(timeout=10)
            sc.returncode = sc.proc.returncode
        yield scenarios
    finally:
        for sc in scenarios.values():
            _kill_leftovers(sc)


def _wait_until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


@pytest.mark.parametrize("sig", SIGNALS)
def test_signal_during_a_cell_keeps_finished_cells_and_leaves_nothing_behind(
        interrupted_runs: dict[str, Scenario], sig: str) -> None:
    sc = interrupted_runs[sig]
    assert sc.problem is None, sc.problem + "\n" + sc.context()
    # the signal hit a live run: the runner and the hanging worker (at least) carried the marker
    assert sc.proc is not None and sc.proc.pid in sc.pids_at_signal, sc.context()
    assert len(sc.pids_at_signal) >= 2, (sc.pids_at_signal, sc.context())
    assert any(name.startswith("dlh-cell-") for name in sc.scratch_at_signal), sc.scratch_at_signal

    if sig == "SIGKILL":
        assert sc.returncode == -signal.SIGKILL, sc.context()
    else:
        assert sc.returncode == 130, sc.context()
        assert "Traceback" not in sc.stderr, sc.context()

    # finished cells are kept; the file says the run is not complete
    doc = sc.doc()
    assert [(c["id"], c["status"]) for c in doc["cells"]] == [(TOY_ID, "ok")], sc.context()
    assert doc["complete"] is False
    assert doc["not_run"] == [HANG_ID]
    if sig != "SIGKILL":  # kill -9 leaves the file as saved after the toy cell
        assert doc["interrupted"] is True
        assert doc["finished"]

    # no process of the run survives: not the worker, not anything it started
    marker = f"DLH_TEST_MARK={sc.marker}"
    survivors = pids_with_env(marker)
    if survivors:
        _wait_until(lambda: not pids_with_env(marker), REAP_TIMEOUT_S if sig == "SIGKILL" else 5.0)
        survivors = pids_with_env(marker)
    details = []
    for pid in survivors:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            details.append(f"{pid}: {cmdline[:200]}")
        except OSError:
            details.append(str(pid))
    assert not survivors, f"processes of the run outlived it after {sig}: {details}"

    # no scratch directory left in the run's TMPDIR (the worker removes it itself after kill -9)
    _wait_until(lambda: not sc.scratch(), 10.0)
    assert sc.scratch() == [], f"scratch left behind after {sig}: {sc.scratch()} in {sc.tmp}"
