"""A worker's lifeline to its parent: it dies with the runner and enforces its own deadline.

Why: the runner enforces a cell's timeout, but only while the runner lives. After
``kill -9`` of ``harness run`` (or a lost SSH session, a CI runner that vanished) a
worker would keep running with no parent and no time limit, and its scratch directory
would stay behind. So every worker:

* asks the kernel for a signal when its parent dies (Linux ``PR_SET_PDEATHSIG``,
  SIGTERM, whose handler removes the scratch directory and exits);
* runs a watchdog thread that polls ``os.getppid()`` (the portable backstop, also for
  a parent that died before the request was made) and the cell's own deadline (the
  runner's timeout plus a grace, so the runner normally records the timeout first);
  either way it removes the scratch directory and kills its own process group (a
  worker may have started torchrun), then exits.

The runner passes ``DLH_PARENT_PID``, ``DLH_CELL_DIR`` and ``DLH_DEADLINE_S`` in the
worker's environment; :func:`bind_from_env` reads them.

A cell forked from a zygote (:mod:`harness.launch.zygote`) binds the same way, with the
zygote as its parent; the zygote itself dies with the runner through
:func:`set_parent_death_signal` and a poll of its parent in its (single-threaded) loop,
and kills its children as it goes -- a watchdog thread there would make every fork a
fork of a multi-threaded process.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from typing import Callable

EXIT_ORPHANED = 143  # as if terminated by SIGTERM
EXIT_DEADLINE = 124  # as timeout(1) does
POLL_S = 0.5


def _cleanup(scratch: str | None) -> None:
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)


def _die(code: int, scratch: str | None) -> None:
    """Remove the scratch directory, kill our own process group (children such as
    torchrun live in it: the runner starts each worker in a new session) and exit."""
    try:
        _cleanup(scratch)
        if os.getpgid(0) == os.getpid():  # only when we lead our own group (never the user's shell)
            os.killpg(os.getpid(), signal.SIGKILL)
    except Exception:  # noqa: BLE001 - dying must not fail
        pass
    os._exit(code)


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Linux: ask the kernel to send ``sig`` to this process when its parent dies
    (``PR_SET_PDEATHSIG``; cleared by ``fork``, so every process sets its own).
    Returns False where that is not available (the caller's poll of ``os.getppid()``
    is then the only lifeline)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        return libc.prctl(1, int(sig)) == 0  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def bind(parent_pid: int, scratch: str | None, deadline_s: float | None,
         now: Callable[[], float] = time.monotonic) -> threading.Thread:
    """Tie this process to ``parent_pid`` (see the module doc); returns the watchdog."""
    set_parent_death_signal(signal.SIGTERM)  # Linux: SIGTERM when the parent dies

    def on_term(signum: int, frame: object) -> None:
        _die(EXIT_ORPHANED, scratch)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)
    start = now()

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                _die(EXIT_ORPHANED, scratch)
            if deadline_s is not None and now() - start > deadline_s:
                print(f"worker: own deadline of {deadline_s:g} s passed; exiting", flush=True)
                _die(EXIT_DEADLINE, scratch)
            time.sleep(POLL_S)

    t = threading.Thread(target=watch, name="dlh-lifeline", daemon=True)
    t.start()
    if os.getppid() != parent_pid:  # the parent died before we could ask for the signal
        _die(EXIT_ORPHANED, scratch)
    return t


def bind_from_env() -> threading.Thread | None:
    """:func:`bind` with the runner's ``DLH_PARENT_PID``/``DLH_CELL_DIR``/``DLH_DEADLINE_S``;
    nothing when the worker was started by hand (no ``DLH_PARENT_PID``)."""
    try:
        parent = int(os.environ["DLH_PARENT_PID"])
    except (KeyError, ValueError):
        return None
    try:
        deadline: float | None = float(os.environ["DLH_DEADLINE_S"])
    except (KeyError, ValueError):
        deadline = None
    return bind(parent, os.environ.get("DLH_CELL_DIR") or None, deadline)
