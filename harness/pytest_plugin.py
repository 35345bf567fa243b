"""pytest plugin: benchmark dl-harness workloads from an existing pytest-benchmark suite.

Registered through the ``pytest11`` entry point ``dl_harness``, so pytest loads it in
every session where dl-harness is installed (disable with ``-p no:dl_harness``). It only
defines the ``harness_workload`` fixture; tests that do not request it are unaffected,
and nothing heavy (torch, TensorFlow) is imported until the fixture is called.

Usage (with pytest-benchmark's ``benchmark`` fixture)::

    def test_mlp(benchmark, harness_workload):
        cell = harness_workload("mlp", size="tiny", mode="inference")
        benchmark(cell.step)

``harness_workload(...)`` builds the cell exactly as the harness worker does (registry
-> workload -> backend.setup -> backend.prepare with the variant, seeded inputs already
on the device, see :func:`harness.launch.measure.resolve_cell`, shared with the launchers) and returns a
:class:`HarnessCell`. One call of ``cell.step()`` runs one step (one batch of
``batch_size``) and then synchronizes the device (a no-op on CPU; ``cuda.synchronize``
on CUDA), so a host wall-clock timer such as pytest-benchmark's measures the finished
work, not queued kernel launches.

When the test also uses ``benchmark``, the cell's spec and cheap model facts are stored
in ``benchmark.extra_info["dl_harness"]``; ``harness import pytest-benchmark FILE.json``
maps such benchmarks back to real harness cells (see docs/pytest-benchmark.md).
A cell that cannot run here (no CUDA device, a variant the backend lacks) skips the
test with the harness's reason. Cells are closed at fixture teardown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest

if TYPE_CHECKING:  # only for type checkers: keep the import of this module light
    from harness.api import Backend, Step, Variant, Workload
    from harness.core.cells import TaskSpec

EXTRA_INFO_KEY = "dl_harness"  # key in pytest-benchmark's extra_info
EXTRA_INFO_FORMAT = 1  # version of the record stored under EXTRA_INFO_KEY


class HarnessCell:
    """One prepared harness cell: ``step`` (callable, one step + device sync), ``spec``
    (:class:`harness.core.cells.TaskSpec`), and the objects it was built from."""

    def __init__(self, spec: TaskSpec, workload: Workload, variant: Variant, backend: Backend, step: Step) -> None:
        self.spec = spec
        self.workload = workload
        self.variant = variant
        self.backend = backend
        self.harness_step = step  # the harness's Step (run(n), sync(), ...)
        self._closed = False

        run, sync = step.run, step.sync

        def one_step() -> None:
            run(1)
            sync()

        self.step: Callable[[], None] = one_step

    def __call__(self) -> None:
        self.step()

    @property
    def params(self) -> int:
        """Parameters of the model actually built (after the variant)."""
        p = self.harness_step.params
        return int(p if p is not None else self.workload.analytic_params())

    @property
    def flops_analytic(self) -> int | None:
        """FLOPs of one step from the workload's formula (forward, or ~3x for training);
        None for a workload without a formula (zoo and custom models)."""
        f = self.workload.analytic_flops_for(self.spec.batch_size, self.spec.mode)
        return None if f is None else int(f)

    def info(self) -> dict[str, Any]:
        """The record stored in ``benchmark.extra_info["dl_harness"]`` (JSON-ready)."""
        from harness import __version__

        try:
            runtime = dict(self.backend.runtime_info())
            runtime.update(self.harness_step.runtime_info())  # precision_method etc., as the worker records it
        except Exception as e:  # noqa: BLE001 - facts for the record, never fatal
            runtime = {"error": f"{type(e).__name__}: {e}"}
        return {
            "format": EXTRA_INFO_FORMAT,
            "harness_version": __version__,
            "cell_id": self.spec.id,
            "spec": self.spec.to_dict(),
            "params": self.params,
            "params_analytic": int(self.workload.analytic_params()),
            "flops_analytic": self.flops_analytic,
            "call": "one call = one step on one batch of batch_size, followed by a device sync",
            "runtime": runtime,
        }

    def close(self) -> None:
        """Release the step's resources (idempotent)."""
        if not self._closed:
            self._closed = True
            self.harness_step.close()


def prepare_cell(
    name: str,
    backend: str = "torch",
    device: str = "cpu",
    variant: str = "fp32",
    mode: str = "inference",
    size: str = "tiny",
    batch_size: int | None = None,
    seed: int = 0,
    threads: int | None = None,
) -> HarnessCell:
    """Build one harness cell in this process, as the worker does. ``batch_size=None``
    takes the workload's default for ``size``; ``threads`` sets the backend's intra-op
    threads (process-wide; None keeps the framework default). Raises
    :class:`harness.api.SkipCell` when the cell cannot run here and ``ValueError`` for
    unknown names or bad values."""
    from harness.core import registry
    from harness.core.cells import Settings, TaskSpec
    from harness.core.suite import normalize_device
    from harness.launch.measure import resolve_cell

    try:  # a typo in a test is an error, not a skipped cell
        registry.check_name("backend", backend)
        registry.check_name("variant", variant)
        wcls = registry.load("workload", name)
    except registry.UnknownName as e:
        raise ValueError(str(e)) from None
    if size not in wcls.presets:
        raise ValueError(f"unknown size {size!r} for workload {name!r}; choose from: {', '.join(wcls.presets)}")
    if batch_size is None:
        batch_size = int(wcls.default_batch_size.get(size, 8))
    spec = TaskSpec.from_dict({
        "workload": name, "backend": backend, "device": normalize_device(device), "variant": variant,
        "mode": mode, "batch_size": batch_size, "size": size,
    })  # fmt: skip
    settings = Settings(size=size, threads=threads, seed=seed)
    workload, var, back = resolve_cell(spec, settings)
    step = back.prepare(workload, var, spec.device, spec.mode, spec.batch_size, seed=settings.seed)
    return HarnessCell(spec, workload, var, back, step)


@pytest.fixture
def harness_workload(request: pytest.FixtureRequest) -> Iterator[Callable[..., HarnessCell]]:
    """Factory fixture: ``harness_workload(name, backend="torch", device="cpu",
    variant="fp32", mode="inference", size="tiny", batch_size=None, seed=0,
    threads=None, record=True) -> HarnessCell``.

    With ``record=True`` and pytest-benchmark's ``benchmark`` fixture in the same test,
    the cell's record goes into ``benchmark.extra_info["dl_harness"]``; a test that
    prepares several cells must pass ``record=False`` for all but the benchmarked one
    (pytest-benchmark times one function per test)."""
    cells: list[HarnessCell] = []
    recorded: list[str] = []

    def factory(name: str, *, record: bool = True, **kwargs: Any) -> HarnessCell:
        from harness.api import SkipCell

        try:
            cell = prepare_cell(name, **kwargs)
        except SkipCell as e:
            pytest.skip(f"harness cell cannot run here: {e}")
        cells.append(cell)
        if record and "benchmark" in request.fixturenames:
            if recorded:
                raise ValueError(
                    f"harness_workload: this test already records {recorded[0]} in benchmark.extra_info; "
                    f"pass record=False when preparing {cell.spec.id} (pytest-benchmark times one function per test)"
                )
            bench = request.getfixturevalue("benchmark")
            extra = getattr(bench, "extra_info", None)
            if isinstance(extra, dict):
                extra[EXTRA_INFO_KEY] = cell.info()
                recorded.append(cell.spec.id)
        return cell

    yield factory
    for cell in reversed(cells):
        cell.close()
