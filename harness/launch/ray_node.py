"""What a fleet run (``harness run --ray``, :mod:`harness.launch.fleet`) executes on a
Ray node: the node's environment block, and one cell through the fresh-process
launcher. Plain functions; the driver wraps them with ``ray.remote`` (this module never
imports Ray, so a node needs only the harness and Ray's own worker).

The cell still runs in a fresh ``python -m harness.launch.worker`` process of its own
(:class:`harness.launch.process.ProcessLauncher`), under the cell's timeout and with
the lifeline (the cell's worker dies with the Ray worker that started it: a cancelled
task or a lost node leaves nothing running). What Ray changes in its worker's
environment for a task is undone for the cell (:func:`cell_environ`), so the cell sees
the node as a local run there would.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from typing import Any, Iterator

from harness.core.cells import Settings, TaskSpec

#: variables Ray sets in its worker for the duration of a task when the node's own
#: environment lacks them (``ray._private.utils.set_omp_num_threads_if_unset``)
RAY_TASK_ENV = ("OMP_NUM_THREADS",)


def _initial_environ() -> dict[str, str] | None:
    """The environment this process was started with (Linux ``/proc/self/environ``,
    which changes of ``os.environ`` do not touch); None where it cannot be read."""
    try:
        with open("/proc/self/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    out = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return out


@contextlib.contextmanager
def cell_environ() -> Iterator[None]:
    """While inside: ``os.environ`` without the variables Ray set for this task only
    (``OMP_NUM_THREADS=<the task's CPUs>``): a cell's thread count must be what the
    node gives a local run, not an artefact of the resources the fleet asked for."""
    initial = _initial_environ()
    removed: dict[str, str] = {}
    if initial is not None:
        for key in RAY_TASK_ENV:
            if key in os.environ and key not in initial:
                removed[key] = os.environ.pop(key)
    try:
        yield
    finally:
        os.environ.update(removed)


def node_identity() -> dict[str, Any]:
    """Which node and process this is: Ray's node id, the host name and the Ray worker's pid."""
    node_id = None
    try:
        import ray  # present: we run inside a Ray worker

        node_id = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray (a unit test calling this directly)
        pass
    return {"node_id": node_id, "hostname": socket.gethostname(), "ray_worker_pid": os.getpid()}


def node_environment() -> dict[str, Any]:
    """The result file's ``environment`` and ``harness`` blocks as this node sees them
    (the same functions a local run calls), plus its identity."""
    from harness.core.environment import collect_environment, harness_info

    with cell_environ():
        return {"environment": collect_environment(), "harness": harness_info(), "node": node_identity()}


def run_cell(spec: TaskSpec, settings: Settings, fleet: dict[str, Any]) -> dict[str, Any]:
    """Run one cell on this node in a fresh worker process and return its record, with
    ``runtime.fleet``: ``fleet`` (target, ...) plus this node's id and host name, the
    Ray worker's pid and the cell's start and end (Unix seconds, this node's clock)."""
    from harness.launch.process import ProcessLauncher

    started = time.time()
    with cell_environ():
        cell = ProcessLauncher().launch(spec, settings)
    ended = time.time()
    runtime = cell.get("runtime")
    if not isinstance(runtime, dict):
        runtime = cell["runtime"] = {}
    runtime["fleet"] = {**fleet, **node_identity(), "started_unix": started, "ended_unix": ended}
    return cell
