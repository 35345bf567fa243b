"""The launcher interface: one way of starting a cell, ``launch(spec, settings) -> cell record``.

The launchers, one module each:

* :class:`harness.launch.zygote.ZygoteLauncher` -- the runner's default: each cell in
  its own process forked from a per-backend zygote that imported the framework once
  (``--launch auto|fork|process``; a fresh process where forking is unsafe), under
  the same timeout and lifeline as a fresh worker (docs/launch.md);
* :class:`harness.launch.process.ProcessLauncher` -- a fresh worker process per cell
  (``python -m harness.launch.worker``) under a timeout, with a lifeline; what makes a
  crash, an OOM kill or a hang cost one cell, not the run;
* :class:`harness.launch.torchrun.TorchrunLauncher` -- a data-parallel torch cell as
  one torchrun job (started from inside the cell's worker process);
* :class:`harness.launch.inprocess.InProcessLauncher` -- the cell in the caller's own
  process (tests, the pytest plugin, and the body of every worker process).

A launcher returns a complete cell record (:func:`harness.core.cells.empty_cell` shape,
``status`` ok | skipped | failed) and never raises for a cell that failed; only
``KeyboardInterrupt`` propagates, after the launcher has stopped what it started.
The runner takes any launcher (or any callable with the same signature) and never
looks inside it: ``run_suite(..., cell_runner=MyLauncher())``.

:func:`precheck` decides in milliseconds, without a worker and without importing a
framework, that a cell cannot run here (the launchers above call it first); every
cell they return records how it was started in ``runtime.launch``
(:func:`launch_record`).
"""

from __future__ import annotations

import abc
import dataclasses
import os
import time
from pathlib import Path
from typing import Any, ClassVar

from harness.core.cells import Settings, TaskSpec, empty_cell
from harness.core.contention import IdleWindow

_ROOT = Path(__file__).resolve().parents[2]


class Launcher(abc.ABC):
    """One way of starting a cell. Subclasses set ``name`` and implement :meth:`launch`."""

    name: ClassVar[str] = ""

    @abc.abstractmethod
    def launch(self, spec: TaskSpec, settings: Settings) -> dict[str, Any]:
        """Run the cell ``spec`` with the run ``settings`` and return its cell record
        (never raises for a failed cell; ``KeyboardInterrupt`` propagates)."""

    def __call__(self, spec: TaskSpec, settings: Settings) -> dict[str, Any]:
        """A launcher is also a plain cell runner: ``launcher(spec, settings)``."""
        return self.launch(spec, settings)


def worker_env() -> dict[str, str]:
    """The environment of a process we start (a worker, torchrun): ours, with this
    harness's source root importable."""
    env = dict(os.environ)
    parts = [str(_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def os_error_cause(e: BaseException) -> str:
    """The cause of an OS error as one short phrase: ``No space left on device``."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


# ----------------------------------------------------------------------------- how a cell was started

#: ``runtime.launch.method`` values written by the launchers of this package
FRESH_PROCESS = "fresh-process"  # python -m harness.launch.worker
ZYGOTE_FORK = "zygote-fork"  # forked from the backend's zygote (harness.launch.zygote)
TORCHRUN = "torchrun"  # a data-parallel torch cell: a fresh worker process that starts torchrun
PRECHECK = "precheck"  # skipped by the runner before any process was started


def launch_record(method: str, reason: str | None = None) -> dict[str, Any]:
    """The cell's ``runtime.launch``: how its process was started (``method``) and,
    for a fallback or a skip without a worker, why (``reason``)."""
    return {"method": method, "reason": reason}


def set_launch(cell: dict[str, Any], method: str, reason: str | None = None) -> dict[str, Any]:
    """Record ``runtime.launch`` on ``cell`` (a ``runtime`` that is not a dict is
    replaced) and return the cell."""
    runtime = cell.get("runtime")
    if not isinstance(runtime, dict):
        runtime = cell["runtime"] = {}
    runtime["launch"] = launch_record(method, reason)
    return cell


# ----------------------------------------------------------------------------- skips decided without a worker

PRECHECK_NOTE = "skipped by the runner without starting a worker (docs/launch.md)"


class _Undecided(Exception):
    """The precheck cannot tell; the worker decides."""


def precheck(spec: TaskSpec, settings: Settings) -> str | None:
    """Why ``spec`` cannot run on this machine -- the exact reason the worker's
    :class:`~harness.api.SkipCell` gives -- or None when it may run (or when this
    cannot be decided here; the worker then decides as before).

    Decided in this process in milliseconds and without importing a deep-learning
    framework, in the worker's own order (:func:`harness.launch.measure.resolve_cell`,
    then :func:`harness.launch.distributed.data_parallel_engine`, then the backend's
    device check): an unknown plugin name, a mode the workload lacks, a backend not
    installed, a workload or variant without an implementation for the backend, a
    data-parallel cell the machine cannot hold (more CPU workers than cores, fewer
    GPUs than workers, ...), and a device the backend's :meth:`~harness.api.Backend.precheck`
    knows to be absent. A plugin that fails to load is left to the worker (it fails
    the cell with the error, as before). ``DLH_PRECHECK=0`` in the environment turns
    this off (every skip is the worker's again): the escape hatch for a wrong precheck."""
    if os.environ.get("DLH_PRECHECK", "1").strip() == "0":
        return None
    from harness.api import SkipCell
    from harness.core import registry
    from harness.launch.distributed import data_parallel_engine

    try:
        wcls = registry.load("workload", spec.workload)
        if spec.mode not in wcls.modes:
            return (f"workload {spec.workload!r} does not support mode {spec.mode!r} "
                    f"(supports: {', '.join(wcls.modes)})")
        workload = wcls(size=spec.size)
        bcls = registry.load("backend", spec.backend)
        installed, why = bcls.is_installed()
        if not installed:
            return f"backend {spec.backend!r} unavailable: {why}"
        if not workload.supports_backend(getattr(bcls, "builds_with", None) or spec.backend):
            return workload.unsupported_reason(spec.backend)
        variant = registry.load("variant", spec.variant)()
        if not variant.supports_backend(spec.backend):
            return registry.variant_not_supported(spec.variant, spec.backend)
        if spec.world_size is not None:
            def resolve_device(self: Any, device: str) -> Any:
                reason = bcls.precheck(dataclasses.replace(spec, device=device, world_size=None))
                if reason:
                    raise SkipCell(reason)
                raise _Undecided

            proxy = type("PrecheckBackend", (), {"data_parallel": bcls.data_parallel,
                                                 "resolve_device": resolve_device})()
            data_parallel_engine(spec, settings, proxy)  # type: ignore[arg-type]
        reason = bcls.precheck(spec)
        return reason if isinstance(reason, str) and reason else None
    except registry.UnknownName as e:
        return str(e)
    except SkipCell as e:
        return str(e)
    except Exception:  # noqa: BLE001 - _Undecided, or a plugin that fails here fails in the worker too
        return None


def precheck_cell(spec: TaskSpec, settings: Settings, started: float | None = None) -> dict[str, Any] | None:
    """The skipped cell record when :func:`precheck` finds a reason (``duration_s``
    since ``started``, a ``time.perf_counter()`` value), else None."""
    t0 = time.perf_counter() if started is None else started
    reason = precheck(spec, settings)
    if reason is None:
        return None
    cell = empty_cell(spec)
    cell["status"] = "skipped"
    cell["reason"] = reason
    cell["duration_s"] = time.perf_counter() - t0
    return set_launch(cell, PRECHECK, PRECHECK_NOTE)


#: the window over which the next cell's thread policy samples other processes' CPU:
#: opened when a worker ends (:func:`finish_wall`), closed by the next cell's
#: :func:`harness.launch.process.cell_environment` (see :class:`IdleWindow`)
IDLE_WINDOW = IdleWindow(0.25)


def finish_wall(cell: dict[str, Any], started: float) -> dict[str, Any]:
    """Set ``duration_s`` to the wall time since ``started`` (a ``time.perf_counter()``
    value) as the runner saw it, and, for a cell the worker measured, add
    ``timing.phases_s.outside_worker``: that wall time minus the worker's own
    ``duration_s`` (process start or fork, imports, the thread-policy sample, request
    and result files)."""
    wall = time.perf_counter() - started
    inner = cell.get("duration_s")
    timing = cell.get("timing")
    phases = timing.get("phases_s") if isinstance(timing, dict) else None
    if isinstance(phases, dict) and isinstance(inner, (int, float)) and not isinstance(inner, bool):
        phases["outside_worker"] = round(max(0.0, wall - float(inner)), 6)
    cell["duration_s"] = wall
    IDLE_WINDOW.open()
    return cell
