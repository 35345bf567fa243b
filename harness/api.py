"""The four extension points of dl-harness: Workload, Backend, Variant, Collector.

Every plugin is a class with a ``name: ClassVar[str]`` and a frozen dataclass
``Config`` whose ``__post_init__`` only validates (it raises ``ValueError`` naming
the allowed values and never touches the environment, the network or hardware).
Plugins are discovered through entry points (see :mod:`harness.core.registry`); the
built-ins are declared the same way in ``pyproject.toml``.

Nothing in this module imports a deep-learning framework: adapters import torch or
TensorFlow lazily inside their methods so ``harness --help`` stays fast.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

MODES: tuple[str, ...] = ("inference", "training")


class SkipCell(Exception):
    """Raised inside a worker when a cell cannot run here; the cell is recorded as
    ``skipped`` with this message as its reason (e.g. "no CUDA device")."""


# --------------------------------------------------------------------------- workload


@dataclass(frozen=True)
class WorkloadConfig:
    """Base for a workload's size configuration. Subclasses add architecture fields."""

    num_classes: int = 10

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")


@dataclass(frozen=True)
class InputSpec:
    """Shape (without the batch dimension) and dtype of one model input."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # "float32" or "int64"
    high: int | None = None  # exclusive upper bound for integer inputs (token ids)


class Workload(abc.ABC):
    """A model plus its inputs, defined once and built per backend.

    A workload *means the same thing* on every backend: same architecture, same
    parameter count, same FLOPs, same input shapes. ``analytic_params`` and
    ``analytic_flops`` are the reference the backends are tested against.

    Subclasses set ``name``, ``Config`` (a frozen dataclass subclass of
    :class:`WorkloadConfig`), ``presets`` (size name -> Config), ``default_batch_size``
    (size name -> int) and implement one ``build_<backend>()`` method per backend they
    support (e.g. ``build_torch`` returning a ``torch.nn.Module``).
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Config: ClassVar[type[WorkloadConfig]] = WorkloadConfig
    presets: ClassVar[Mapping[str, WorkloadConfig]]
    default_batch_size: ClassVar[Mapping[str, int]]
    modes: ClassVar[tuple[str, ...]] = MODES

    def __init__(self, size: str = "tiny", config: WorkloadConfig | None = None) -> None:
        if config is None:
            if size not in self.presets:
                raise ValueError(
                    f"unknown size {size!r} for workload {self.name!r}; "
                    f"choose from: {', '.join(self.presets)}"
                )
            config = self.presets[size]
        elif not isinstance(config, self.Config):
            raise ValueError(
                f"workload {self.name!r} needs a {self.Config.__name__}, got {type(config).__name__}"
            )
        self.size = size
        self.config = config

    # -- identity and shapes ---------------------------------------------------------
    @abc.abstractmethod
    def input_specs(self) -> Sequence[InputSpec]:
        """Inputs of one sample (no batch dimension)."""

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def batch_size_for(self, size: str | None = None) -> int:
        return int(self.default_batch_size.get(size or self.size, 8))

    # -- analytic reference ----------------------------------------------------------
    @abc.abstractmethod
    def analytic_params(self) -> int:
        """Exact number of trainable parameters of the model."""

    @abc.abstractmethod
    def analytic_flops(self, batch_size: int) -> int:
        """Forward-pass FLOPs for one batch, counting 2 FLOPs per multiply-accumulate of
        every matmul, convolution and attention product (elementwise ops excluded)."""

    def analytic_flops_for(self, batch_size: int, mode: str) -> int:
        """FLOPs of one step: forward for inference, ~3x forward for training
        (backward costs about twice the forward)."""
        fwd = self.analytic_flops(batch_size)
        return fwd if mode == "inference" else 3 * fwd

    # -- data ------------------------------------------------------------------------
    def make_inputs(self, batch_size: int, seed: int = 0) -> tuple[list[Any], Any]:
        """Synthetic numpy inputs and int64 labels for one batch (seeded)."""
        import numpy as np

        rng = np.random.default_rng(seed)
        arrays: list[Any] = []
        for spec in self.input_specs():
            shape = (batch_size, *spec.shape)
            if spec.dtype.startswith("int"):
                arrays.append(rng.integers(0, spec.high or 2, size=shape, dtype=np.int64))
            else:
                arrays.append(rng.standard_normal(size=shape, dtype=np.float32))
        labels = rng.integers(0, self.num_classes, size=(batch_size,), dtype=np.int64)
        return arrays, labels

    # -- backends --------------------------------------------------------------------
    def supports_backend(self, backend: str) -> bool:
        return callable(getattr(self, f"build_{backend}", None))

    def build(self, backend: str) -> Any:
        """Build the model for ``backend`` by calling ``build_<backend>()``."""
        builder: Callable[[], Any] | None = getattr(self, f"build_{backend}", None)
        if builder is None:
            raise SkipCell(f"workload {self.name!r} has no implementation for backend {backend!r}")
        return builder()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "config": dataclasses.asdict(self.config),
            "params": self.analytic_params(),
            "flops_forward_per_sample": self.analytic_flops(1),
        }


# --------------------------------------------------------------------------- device


@dataclass(frozen=True)
class DeviceInfo:
    """One device as a backend sees it: available, or unavailable with the reason."""

    name: str  # canonical device string, e.g. "cpu", "cuda:0", "tpu"
    available: bool
    detail: str = ""  # model name, memory, ... or the reason it is unavailable


class Step(abc.ABC):
    """One prepared, runnable benchmark step on a device.

    The timing loop calls ``run(n)`` inside the timed region; nothing else (no data
    generation, no host-device copy, no logging) may happen there. ``params`` is the
    parameter count of the model actually built (after the variant).
    """

    params: int | None = None
    # Framework handles for post-measurement analysis (FLOP counting, quality,
    # model size). Backends fill them in; analysis code must treat them as read-only.
    model: Any = None
    inputs: Any = None
    labels: Any = None
    mode: str = "inference"
    device: Any = None

    @abc.abstractmethod
    def run(self, n: int) -> None:
        """Execute the step ``n`` times back to back."""

    def sync(self) -> None:
        """Block until all queued device work is finished (no-op on CPU)."""

    def device_clock(self) -> "Clock | None":
        """A device-side clock (e.g. CUDA events); ``None`` means use the host clock."""
        return None

    def reset_device_peak_memory(self) -> None:
        """Reset the device's peak-memory counter before the timed region."""

    def device_peak_memory(self) -> tuple[int | None, str]:
        """(peak bytes, source or reason-when-None)."""
        return None, "this device has no separate device memory counter"

    def extra_metrics(self) -> dict[str, Any]:
        """Backend-specific measured values to merge into the cell's metrics."""
        return {}

    def runtime_info(self) -> dict[str, Any]:
        """How this step runs (e.g. ``precision_method``), merged into the cell's
        ``runtime`` after the backend's :meth:`Backend.runtime_info`."""
        return {}

    def close(self) -> None:
        """Release resources."""


class Clock(abc.ABC):
    """Measures the elapsed time of a region, in seconds.

    ``start()`` returns an opaque token; ``elapsed(token)`` returns the seconds since
    it, after making sure the measured work has finished.
    """

    @abc.abstractmethod
    def start(self) -> Any: ...

    @abc.abstractmethod
    def elapsed(self, token: Any) -> float: ...

    def overhead(self) -> float:
        """Seconds one start/elapsed pair costs, measured (median of a few)."""
        import statistics

        vals = []
        for _ in range(20):
            t = self.start()
            vals.append(self.elapsed(t))
        return statistics.median(vals)


@dataclass(frozen=True)
class BackendConfig:
    """Options shared by all backends."""

    threads: int | None = None  # intra-op threads; None keeps the framework default

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


class Backend(abc.ABC):
    """A deep-learning framework adapter: builds a workload on a device and returns a
    :class:`Step` to time."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Config: ClassVar[type[BackendConfig]] = BackendConfig
    framework_packages: ClassVar[tuple[str, ...]] = ()  # distributions to record versions of

    def __init__(self, config: BackendConfig | None = None) -> None:
        self.config = config or self.Config()

    @classmethod
    def is_installed(cls) -> tuple[bool, str]:
        """(installed?, reason if not) — must not import the framework."""
        import importlib.util

        for pkg in cls.framework_packages:
            mod = pkg.replace("-", "_")
            if importlib.util.find_spec(mod) is None:
                return False, f"python package {pkg!r} is not installed"
        return True, ""

    def setup(self) -> None:
        """Import the framework and apply the config (e.g. thread counts). Called once
        in the worker before the host-memory baseline is taken, so the framework's own
        import is not counted as the cell's memory."""

    @abc.abstractmethod
    def list_devices(self) -> list[DeviceInfo]:
        """Every device kind this backend knows, available or not (with the reason)."""

    @abc.abstractmethod
    def prepare(
        self,
        workload: Workload,
        variant: "Variant",
        device: str,
        mode: str,
        batch_size: int,
        seed: int = 0,
    ) -> Step:
        """Build ``workload`` on ``device``, apply ``variant``, move inputs to the
        device, and return the step. Raise :class:`SkipCell` when it cannot run here."""

    # How data-parallel training cells (``world_size``) run on this backend:
    #   "torchrun":   one process per worker, launched by torch.distributed.run; each
    #                 process calls prepare_data_parallel after the process group is up
    #   "in-process": one process drives every replica (a tf.distribute strategy)
    #   None:         not supported (such cells are skipped with the reason)
    data_parallel: ClassVar[str | None] = None
    data_parallel_description: ClassVar[str] = ""  # shown by `harness list backends`

    def prepare_data_parallel(
        self,
        workload: Workload,
        variant: "Variant",
        device: str,
        batch_size: int,
        world_size: int,
        seed: int = 0,
    ) -> Step:
        """A data-parallel *training* step: ``batch_size`` samples per worker, gradients
        averaged over ``world_size`` workers. Raise :class:`SkipCell` when it cannot run."""
        raise SkipCell(f"backend {self.name!r} has no data-parallel training")

    def runtime_info(self) -> dict[str, Any]:
        """Framework facts for this cell (versions, threads, device name)."""
        return {}


# --------------------------------------------------------------------------- variant


@dataclass(frozen=True)
class VariantConfig:
    """Base for a variant's options."""


class Variant(abc.ABC):
    """A transformation of the model or its execution (precision, quantization,
    pruning, distillation, compilation). Backends call ``apply(backend_name, ...)``
    which dispatches to ``apply_<backend>``; a missing method means "not supported on
    this backend" and the cell is skipped with that reason."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Config: ClassVar[type[VariantConfig]] = VariantConfig
    # How float32 matmuls/convolutions run where a backend could use a faster format:
    # "ieee" (strict IEEE fp32: TF32 off on Ampere+ GPUs, on every backend) or "tf32"
    # (TensorFloat-32 allowed; only the tf32 variant). Backends read it in prepare()
    # and record the settings they applied under the cell's ``runtime.precision``.
    fp32_math: ClassVar[str] = "ieee"

    def __init__(self, config: VariantConfig | None = None) -> None:
        self.config = config or self.Config()

    def supports_backend(self, backend: str) -> bool:
        return callable(getattr(self, f"apply_{backend}", None))

    def apply(self, backend: str, model: Any, **ctx: Any) -> Any:
        """Return the transformed model (possibly a new object; it must stay callable as
        the backend calls the model). Works on *any* model of the workload's
        architecture: the backends pass ``device``, ``mode`` and ``workload`` (speed
        track); the quality track (:mod:`harness.core.quality`) also passes
        ``calibration`` (list of input batches, numpy, ``input_specs()`` order),
        ``train_data`` (``(inputs, labels)``) and ``train_epochs``/``train_lr``/
        ``train_batch_size`` (the fp32 recipe). Variants ignore keys they do not need
        and raise :class:`SkipCell` for what they cannot do (e.g. training an int8 model)."""
        fn = getattr(self, f"apply_{backend}", None)
        if fn is None:
            raise SkipCell(f"variant {self.name!r} is not supported on backend {backend!r}")
        return fn(model, **ctx)

    def autocast(self, backend: str, device: str) -> contextlib.AbstractContextManager[None]:
        """A context manager wrapped around each step (e.g. mixed-precision autocast)."""
        return contextlib.nullcontext()

    def metrics(self) -> dict[str, Any]:
        """Values measured while applying the variant (e.g. ``compile_time_s``), merged
        into the cell's metrics after the timed loop."""
        return {}

    def unavailable(self) -> dict[str, str]:
        """Metric name -> reason for what this variant could not measure."""
        return {}


# --------------------------------------------------------------------------- collector


@dataclass(frozen=True)
class CollectorConfig:
    """Base for a collector's options."""


class Collector(abc.ABC):
    """Records something about a cell while it runs (memory, power, utilisation).

    Usage in the worker::

        with collector.track():
            ...  # warm-up and timed loop
        metrics.update(collector.metrics())
        unavailable.update(collector.unavailable())
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Config: ClassVar[type[CollectorConfig]] = CollectorConfig

    def __init__(self, config: CollectorConfig | None = None) -> None:
        self.config = config or self.Config()

    def bind(self, spec: Mapping[str, Any]) -> None:
        """Called once before ``start`` with the cell's spec (workload, backend,
        device, ...), so e.g. an energy collector can pick the GPU it should read."""

    def applies_to(self, spec: Mapping[str, Any]) -> bool:
        """Whether this collector has anything to say about the cell (default: yes)."""
        return True

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        self.start()
        try:
            yield
        finally:
            self.stop()

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    @abc.abstractmethod
    def metrics(self) -> dict[str, Any]:
        """Measured values, each with its unit in the key (``*_bytes``, ``*_j``, ...)."""

    def unavailable(self) -> dict[str, str]:
        """Metric name -> reason, for what could not be measured here."""
        return {}

    def observe(self, measurement: Any, timed_window: tuple[float, float] | None = None) -> None:
        """Called after ``stop()`` with the cell's timing ``Measurement`` and the timed
        loop's window in ``time.perf_counter`` seconds (None if unknown), so a collector
        can report the timed loop only and normalise per step/sample."""

    def cell_fields(self) -> dict[str, Any]:
        """Extra top-level cell fields (e.g. ``timeseries``); never replaces a core field."""
        return {}
