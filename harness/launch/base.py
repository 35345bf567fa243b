"""The launcher interface: one way of starting a cell, ``launch(spec, settings) -> cell record``.

The launchers, one module each:

* :class:`harness.launch.process.ProcessLauncher` -- a fresh worker process per cell
  (``python -m harness.launch.worker``) under a timeout, with a lifeline; the runner's
  default, and what makes a crash, an OOM kill or a hang cost one cell, not the run;
* :class:`harness.launch.torchrun.TorchrunLauncher` -- a data-parallel torch cell as
  one torchrun job (started from inside the cell's worker process);
* :class:`harness.launch.inprocess.InProcessLauncher` -- the cell in the caller's own
  process (tests, the pytest plugin, and the body of every worker process).

A launcher returns a complete cell record (:func:`harness.core.cells.empty_cell` shape,
``status`` ok | skipped | failed) and never raises for a cell that failed; only
``KeyboardInterrupt`` propagates, after the launcher has stopped what it started.
The runner takes any launcher (or any callable with the same signature) and never
looks inside it: ``run_suite(..., cell_runner=MyLauncher())``.
"""

from __future__ import annotations

import abc
import os
from pathlib import Path
from typing import Any, ClassVar

from harness.core.cells import Settings, TaskSpec

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
