"""The in-process launcher: the cell in the caller's own process.

What every worker process runs (:mod:`harness.launch.worker`), and what tests and the
pytest plugin use directly (no isolation, no timeout: a crash or a hang of the cell is
the caller's). The order is: resolve the cell (:func:`harness.launch.measure.resolve_cell`),
then, for a data-parallel cell, decide whether and how it can run here
(:func:`harness.launch.distributed.data_parallel_engine`) -- a torchrun engine hands the
cell to :class:`~harness.launch.torchrun.TorchrunLauncher`, an in-process engine measures
here through :class:`~harness.launch.distributed.InProcessContext` -- then measure
(:func:`harness.launch.measure.measure_into`).
"""

from __future__ import annotations

from typing import Any

from harness.core.cells import Settings, TaskSpec, empty_cell
from harness.launch.base import Launcher
from harness.launch.distributed import InProcessContext, data_parallel_engine
from harness.launch.measure import Phases, measure_into, recording, resolve_cell
from harness.launch.torchrun import TorchrunLauncher


class InProcessLauncher(Launcher):
    """Each cell in this process (see the module doc)."""

    name = "in-process"

    def launch(self, spec: TaskSpec, settings: Settings) -> dict[str, Any]:
        """Build, warm up and time one cell here; never raises (except KeyboardInterrupt)."""
        return run_cell(spec, settings)


def run_cell(spec: TaskSpec, settings: Settings) -> dict[str, Any]:
    """:meth:`InProcessLauncher.launch` as a function."""
    cell = empty_cell(spec)
    phases = Phases()
    with recording(cell):
        with phases("resolve"):
            workload, variant, backend = resolve_cell(spec, settings)
        dp = None
        if spec.world_size is not None:
            if data_parallel_engine(spec, settings, backend) == "torchrun":
                return TorchrunLauncher().launch(spec, settings)
            dp = InProcessContext(spec.world_size)
        measure_into(cell, spec, settings, workload, variant, backend, dp, phases)
    return cell
