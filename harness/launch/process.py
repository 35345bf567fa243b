"""The fresh-process launcher: every cell in its own worker process, under a timeout.

Isolation is what makes the numbers trustworthy and the sweep robust: torch and
TensorFlow never share a process, one cell's allocator state or thread pools cannot
leak into the next, and a segfault, an OOM kill or a hang costs one cell (recorded as
``failed`` with the exit status and the tail of the worker's output), not the run.

The worker (``python -m harness.launch.worker REQUEST.json RESULT.json``) runs in its own
session in a scratch directory (``dlh-cell-*``) that is removed afterwards; it dies with
us and keeps its own deadline (:mod:`harness.core.lifeline`).

A cell that cannot run here is skipped before any process starts
(:func:`harness.launch.base.precheck`). ``duration_s`` of every cell is the wall time
this launcher spent on it, start to record (process start and imports included);
``runtime.launch`` says how it was started. The pieces the zygote launcher shares
(:mod:`harness.launch.zygote`: the cell's environment and time limit, how an exit
becomes a cell record) are the functions :func:`cell_environment`, :func:`exit_cell`
and :func:`timeout_cell`, so both classify a crash, an OOM kill or a hang alike.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.core.cells import Settings, TaskSpec, failed_cell, read_message, write_request
from harness.launch.base import (
    FRESH_PROCESS,
    IDLE_WINDOW,
    TORCHRUN,
    Launcher,
    finish_wall,
    os_error_cause,
    precheck_cell,
    set_launch,
    worker_env,
)

STDERR_TAIL_CHARS = 4000
DP_GRACE_S = 60.0  # extra time allowed to a data-parallel cell to stop torchrun
WORKER_DEADLINE_GRACE_S = 30.0  # a worker's own deadline: the launcher's limit plus this
WORKER_MODULE = "harness.launch.worker"


class ProcessLauncher(Launcher):
    """Each cell in a fresh ``python -m harness.launch.worker`` process (``python``:
    the interpreter to run it with)."""

    name = "process"

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python

    def launch(self, spec: TaskSpec, settings: Settings) -> dict[str, Any]:
        """Run one cell in a fresh worker process and return its cell record (never
        raises, except KeyboardInterrupt, after killing the worker); a cell that cannot
        run here is skipped without a worker (:func:`harness.launch.base.precheck`)."""
        t0 = time.perf_counter()
        return precheck_cell(spec, settings, t0) or self.launch_fresh(spec, settings, started=t0)

    def launch_fresh(self, spec: TaskSpec, settings: Settings, reason: str | None = None,
                     started: float | None = None) -> dict[str, Any]:
        """Run one cell in a fresh worker process, without the precheck; ``reason``
        (why not another launch method) is recorded in ``runtime.launch``.

        An ``OSError`` of our own (the scratch directory, request or log file cannot be
        written: a full ``$TMPDIR``; the worker cannot be started) fails this cell with
        the path and cause, and the sweep goes on: it is the same kind of per-cell
        failure as a crashed worker, and the cells already measured must not be lost to it.
        """
        t0 = time.perf_counter() if started is None else started
        try:
            cell = self._launch(spec, settings)
        except OSError as e:
            cell = launcher_error_cell(spec, e, "start")
        finish_wall(cell, t0)
        return set_launch(cell, TORCHRUN if runs_torchrun(spec) else FRESH_PROCESS, reason)

    def _launch(self, spec: TaskSpec, settings: Settings) -> dict[str, Any]:
        # a failed clean-up of the scratch directory must not turn a measured cell into an error
        with tempfile.TemporaryDirectory(prefix="dlh-cell-", ignore_cleanup_errors=True) as td:
            req, res, log = Path(td, "request.json"), Path(td, "result.json"), Path(td, "worker.log")
            write_request(req, spec, settings)
            t0 = time.perf_counter()
            env, policy, limit = cell_environment(spec, settings, td)
            with open(log, "wb") as logf:
                proc = subprocess.Popen(
                    [self.python, "-m", WORKER_MODULE, str(req), str(res)],
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,  # terminal Ctrl-C reaches the parent only
                )
                try:
                    rc = proc.wait(timeout=limit)
                except subprocess.TimeoutExpired:
                    _kill_group(proc)
                    return timeout_cell(spec, settings, log, t0)
                except BaseException:
                    _kill_group(proc)
                    raise
            return exit_cell(spec, res, log, rc, policy, t0)


def run_in_worker(spec: TaskSpec, settings: Settings, python: str = sys.executable) -> dict[str, Any]:
    """:meth:`ProcessLauncher.launch` as a function (``python``: the worker's interpreter)."""
    return ProcessLauncher(python).launch(spec, settings)


def runs_torchrun(spec: TaskSpec) -> bool:
    """Whether the worker of ``spec`` starts torchrun (a data-parallel cell of a
    backend whose engine is torchrun); False when the backend cannot be loaded."""
    if spec.world_size is None:
        return False
    from harness.core import registry

    try:
        return registry.load("backend", spec.backend).data_parallel == "torchrun"
    except Exception:  # noqa: BLE001 - the worker reports a backend that does not load
        return False


def launcher_error_cell(spec: TaskSpec, e: OSError, what: str = "start") -> dict[str, Any]:
    """The failed cell for an ``OSError`` of the launcher itself (``what`` it could not do)."""
    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    reason = f"the runner could not prepare, {what} or read the worker: {os_error_cause(e)}{where}"
    return failed_cell(spec, type(e).__name__, reason, stderr_tail="", returncode=None)


def timeout_cell(spec: TaskSpec, settings: Settings, log: Path, started: float) -> dict[str, Any]:
    """The failed cell of a worker we killed at the time limit (output tail kept)."""
    return failed_cell(spec, "Timeout", f"timed out after {settings.timeout_s:g} s (raise it with --timeout)",
                       time.perf_counter() - started, stderr_tail=_tail(log), returncode=None)


def exit_cell(spec: TaskSpec, res: Path, log: Path, rc: int, policy: Any, started: float) -> dict[str, Any]:
    """The cell of a worker that exited with status ``rc`` (negative: killed by that
    signal, as ``subprocess`` reports it): the record it wrote, or a ``WorkerCrash``
    naming the exit status when it wrote none (an OOM kill, a segfault, ``os._exit``)."""
    tail = _tail(log)
    if res.exists():
        return _reported_cell(spec, res, tail, rc, policy)
    return failed_cell(spec, "WorkerCrash", _describe_exit(rc), time.perf_counter() - started,
                       stderr_tail=tail, returncode=rc)


#: the variables only this cell's worker reads (at run time, never at import): a zygote
#: can serve cells whose environments differ in these alone
PER_CELL_ENV = ("DLH_CELL_DIR", "DLH_PARENT_PID", "DLH_DEADLINE_S")


def cell_environment(spec: TaskSpec, settings: Settings, scratch: str) -> tuple[dict[str, str], Any, float]:
    """The worker's environment, its thread policy and our time limit for it (seconds)."""
    env = worker_env()
    # the thread policy (docs/contention.md): OpenMP's default on a quiet machine;
    # idle threads sleep (OMP_WAIT_POLICY=PASSIVE) when other processes already
    # compete for the cores as the cell starts (sampled for 0.25 s, runner idle)
    # (the window opens when the previous worker exits: harness.launch.base.IDLE_WINDOW)
    from harness.core.contention import process_cpus, thread_policy

    policy_env, policy = thread_policy(settings.threads, len(process_cpus()),
                                       other_cores=IDLE_WINDOW.other_cores())
    policy["other_cpu_window_s"] = IDLE_WINDOW.last_window_s  # seconds the decision looked at
    env.update(policy_env)
    env["DLH_CELL_DIR"] = scratch  # scratch space removed by us even if the worker is killed
    # the worker dies with us and keeps its own deadline (harness/core/lifeline.py): a
    # grace after our limit, so that we normally record the timeout first
    env["DLH_PARENT_PID"] = str(os.getpid())
    # a data-parallel cell enforces its timeout itself (so torchrun can stop its
    # workers and the output is kept); this is the backstop
    limit = settings.timeout_s + (DP_GRACE_S if spec.world_size is not None else 0.0)
    env["DLH_DEADLINE_S"] = f"{limit + WORKER_DEADLINE_GRACE_S:g}"
    return env, policy, limit


_environment = cell_environment  # its former name


def _reported_cell(spec: TaskSpec, res: Path, tail: str, rc: int, policy: Any) -> dict[str, Any]:
    """The cell the worker wrote, with the output tail and exit status of a failed one
    (and the thread policy of an ok one); a failed cell when the message is unreadable."""
    import json

    try:
        cell = read_message(res)
    except (json.JSONDecodeError, KeyError) as e:
        cell = failed_cell(spec, "BadWorkerMessage", f"worker wrote an unreadable result ({e})",
                           stderr_tail=tail, returncode=rc)
        cell["error"]["message"] = str(e)
        return cell
    if cell.get("status") == "failed" and cell.get("error") is not None:
        cell["error"]["stderr_tail"] = tail
        cell["error"]["returncode"] = rc
    if cell.get("status") == "ok" and isinstance(cell.get("runtime"), dict):
        cell["runtime"]["thread_policy"] = policy
    return cell


def _tail(path: Path, chars: int = STDERR_TAIL_CHARS) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - chars))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not hang
        pass


def _describe_exit(rc: int) -> str:
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        hint = " (killed: out of memory?)" if -rc == signal.SIGKILL else ""
        return f"worker died with {name}{hint}"
    return f"worker exited with status {rc} without writing a result"
