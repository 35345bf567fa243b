"""The four extension points of dl-harness: Workload, Backend, Variant, Collector.

Every plugin is a class with a ``name: ClassVar[str]`` and a frozen dataclass
``Config`` whose ``__post_init__`` only validates (it raises ``ValueError`` naming
the allowed values and never touches the environment, the network or hardware).
Plugins are discovered through entry points (see :mod:`harness.core.registry`); the
built-ins are declared the same way in ``pyproject.toml``. docs/extending.md shows a
minimal plugin of each kind.

**Everything the harness asks of a plugin is declared here.** Abstract methods are
required; every other method is an optional capability with a default that either
does the neutral thing or says "not supported" (a :class:`SkipCell` with the reason,
or a metric recorded as unavailable with the reason). :func:`provides` tells whether a
plugin overrides an optional capability; the contract tests (tests/test_contract.py)
check every installed plugin against this module.

Nothing in this module imports a deep-learning framework: adapters import torch or
TensorFlow lazily inside their methods so ``harness --help`` stays fast.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

MODES: tuple[str, ...] = ("inference", "training", "generate")
#: the modes a workload supports unless it says otherwise; ``generate`` (autoregressive
#: decoding with a KV cache, every token timed) is for causal language models only
DEFAULT_WORKLOAD_MODES: tuple[str, ...] = ("inference", "training")
#: Default quality gate: a variant passes when its accuracy is at least this fraction of
#: the fp32 model's accuracy on the same data (MLPerf's 99% rule). A variant's Config
#: may carry its own ``quality_gate``.
DEFAULT_QUALITY_GATE: float = 0.99


class SkipCell(Exception):
    """Raised inside a worker when a cell cannot run here; the cell is recorded as
    ``skipped`` with this message as its reason (e.g. "no CUDA device")."""


def provides(plugin: Any, method: str) -> bool:
    """Whether ``plugin`` (an instance or class) implements the optional capability
    ``method`` itself, rather than inheriting this module's "not supported" default."""
    cls = plugin if isinstance(plugin, type) else type(plugin)
    impl = getattr(cls, method, None)
    if impl is None:
        return False
    for base in (Workload, Backend, Step, Variant, Collector):
        if issubclass(cls, base):
            return impl is not getattr(base, method, None)
    return True


@dataclass
class QualityData:
    """Real labelled data for the quality track, as a workload's model inputs (numpy
    arrays in ``input_specs()`` order) with int64 labels."""

    train_inputs: list[Any]
    train_labels: Any
    test_inputs: list[Any]
    test_labels: Any


# --------------------------------------------------------------------------- workload


@dataclass(frozen=True)
class WorkloadConfig:
    """Base for a workload's size configuration. Subclasses add architecture fields."""

    num_classes: int = 10

    def __post_init__(self) -> None:
        """Validate only: ``ValueError`` naming the field and the allowed values."""
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

    Required: ``name``, ``presets`` (size name -> Config; ``tiny`` is what the tests
    run), ``default_batch_size`` (size name -> int), :meth:`input_specs`,
    :meth:`analytic_params`, :meth:`analytic_flops`, and one ``build_<backend>()``
    method per backend it supports (e.g. ``build_torch`` returning a
    ``torch.nn.Module``; a backend calls :meth:`build`). ``Config`` (a frozen dataclass
    subclass of :class:`WorkloadConfig`) and ``modes`` are optional.

    Optional capabilities (defaults in brackets):

    * ``<backend>_inputs(arrays)`` / :meth:`backend_inputs`: the inputs in the layout
      that backend's model takes [unchanged];
    * :meth:`quality_workload` and :meth:`quality_data`: a quality task on real data
      [none: quality is unavailable with the reason];
    * :meth:`prune_structured` and :meth:`structured_pruned`: structured pruning surgery
      on a built model and the analytic counts of the pruned architecture [none].
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Config: ClassVar[type[WorkloadConfig]] = WorkloadConfig
    presets: ClassVar[Mapping[str, WorkloadConfig]]
    default_batch_size: ClassVar[Mapping[str, int]]
    modes: ClassVar[tuple[str, ...]] = DEFAULT_WORKLOAD_MODES
    #: the preset a run uses when its ``--size`` is not one of ``presets`` (None: such a
    #: run is a usage error). Zoo models set ``"full"``, so ``-w mlp -w hf:gpt2 --size
    #: small`` runs the small MLP beside the real GPT-2; ``-w hf:gpt2@tiny`` picks one.
    default_size: ClassVar[str | None] = None

    def __init__(self, size: str = "tiny", config: WorkloadConfig | None = None) -> None:
        """The ``size`` preset, or an explicit ``config`` (``ValueError`` for an unknown
        size or a config of the wrong class)."""
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
        """Number of output classes of the model (logits per sample)."""
        return self.config.num_classes

    def batch_size_for(self, size: str | None = None) -> int:
        """The default batch size of ``size`` (this instance's size when None; 8 if unset)."""
        return int(self.default_batch_size.get(size or self.size, 8))

    # -- analytic reference ----------------------------------------------------------
    @abc.abstractmethod
    def analytic_params(self) -> int:
        """Exact number of trainable parameters of the model."""

    def analytic_flops(self, batch_size: int) -> int | None:
        """Forward-pass FLOPs for one batch, counting 2 FLOPs per multiply-accumulate of
        every matmul, convolution and attention product (elementwise ops excluded).
        None (the default) means "no formula": the cell's FLOPs then come from the
        backend's FLOP counter only (zoo and custom models), and say so."""
        return None

    def analytic_flops_for(self, batch_size: int, mode: str) -> int | None:
        """FLOPs of one step: forward for inference, ~3x forward for training
        (backward costs about twice the forward); None without a formula."""
        fwd = self.analytic_flops(batch_size)
        if fwd is None:
            return None
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

    def backend_inputs(self, backend: str, arrays: Sequence[Any]) -> list[Any]:
        """The numpy ``arrays`` of :meth:`make_inputs` in the layout ``backend``'s model
        takes (e.g. NCHW images as NHWC for Keras), converted once, before timing.
        Calls ``<backend>_inputs(arrays)`` when the workload defines it; otherwise the
        arrays are returned unchanged (same objects)."""
        hook = getattr(self, f"{backend}_inputs", None)
        if callable(hook):
            return list(hook(arrays))
        return list(arrays)

    # -- quality track ---------------------------------------------------------------
    def quality_workload(self) -> "Workload":
        """The instance the quality track trains: this architecture with its
        input/output shapes adapted to the quality data (see :meth:`quality_data`).
        Raise :class:`SkipCell` with the reason when there is none (the default)."""
        raise SkipCell(f"workload {self.name!r} has no quality task (it does not implement "
                       "Workload.quality_workload / quality_data)")

    def quality_data(self) -> QualityData:
        """Real labelled data for the instance returned by :meth:`quality_workload`,
        as its model inputs. Raise :class:`SkipCell` when there is none (the default)."""
        raise SkipCell(f"workload {self.name!r} has no quality data (Workload.quality_data)")

    # -- structured pruning ----------------------------------------------------------
    def prune_structured(self, backend: str, model: Any, keep: float) -> Any:
        """Remove whole units (hidden units, channels, heads) from ``model``, a model of
        this workload built for ``backend``, keeping the ``keep`` fraction; return the
        smaller model (it may be ``model``, changed in place). Raise :class:`SkipCell`
        with the reason when the workload has no such surgery (the default)."""
        raise SkipCell(f"workload {self.name!r} has no structured pruning on backend {backend!r} "
                       "(Workload.prune_structured)")

    def structured_pruned(self, keep: float) -> "Workload | None":
        """The workload whose analytic counts describe :meth:`prune_structured`'s result
        (e.g. an MLP with narrower hidden layers), or None when the formula cannot
        describe it (the default): the pruned model's FLOPs are then counted, not derived."""
        return None

    # -- backends --------------------------------------------------------------------
    def supports_backend(self, backend: str) -> bool:
        """Whether the workload has a ``build_<backend>()`` method."""
        return callable(getattr(self, f"build_{backend}", None))

    def unsupported_reason(self, backend: str) -> str:
        """Why the workload has no implementation for ``backend`` (the skip reason);
        override to say more than the default (e.g. which library would provide one)."""
        return f"workload {self.name!r} has no implementation for backend {backend!r}"

    def build(self, backend: str) -> Any:
        """Build the model for ``backend`` by calling ``build_<backend>()``."""
        builder: Callable[[], Any] | None = getattr(self, f"build_{backend}", None)
        if builder is None:
            raise SkipCell(f"workload {self.name!r} has no implementation for backend {backend!r}")
        return builder()

    def describe(self) -> dict[str, Any]:
        """Name, size, config and analytic counts, as recorded with results."""
        return {
            "name": self.name,
            "size": self.size,
            "config": dataclasses.asdict(self.config),
            "params": self.analytic_params(),
            "flops_forward_per_sample": self.analytic_flops(1),
        }

    def model_info(self, backend: str) -> dict[str, Any]:
        """Where the model built for ``backend`` came from, recorded as the cell's
        ``model`` (e.g. the zoo entry and config, ``weights: "random initialisation"``,
        a custom factory and the SHA-256 of its file, how another backend's architecture
        differs); empty (the default, built-in workloads) records nothing."""
        return {}

    # -- training loss ---------------------------------------------------------------
    def loss(self, backend: str, outputs: Any, labels: Any, inputs: Sequence[Any]) -> Any:
        """The training loss of one batch on ``backend`` (a scalar of that framework),
        given the model's ``outputs``, the ``labels`` of :meth:`make_inputs` and the
        model ``inputs``; None (the default) means the backend's default, cross-entropy
        of ``outputs`` (logits) against ``labels``. Zoo language models return the
        next-token loss, custom models their own loss or the mean of the output."""
        return None


class WorkloadProvider(abc.ABC):
    """Resolves ``-w SCHEME:REF`` workload names (``hf:gpt2``, ``custom:model.py:make``)
    to a :class:`Workload` class, registered under the entry-point group
    ``dl_harness.workload_providers`` with the scheme as its name.

    Required: ``scheme``, :meth:`check` and :meth:`workload_class`. The class returned
    for ``REF`` must have ``name == f"{scheme}:{REF}"``. :meth:`check` runs in the
    parent when a suite is read, so it must be cheap and import no framework.
    """

    scheme: ClassVar[str]
    description: ClassVar[str] = ""
    #: how to name a model, shown by ``harness list workloads``
    usage: ClassVar[str] = ""

    def known(self) -> Mapping[str, str]:
        """Well-known references (name -> one-line description) for listings and close
        matches; empty when the provider takes any reference (a path)."""
        return {}

    def preload(self, ref: str) -> Sequence[str]:
        """Modules worth importing once in a backend's zygote before it forks cells of
        ``ref`` (e.g. ``transformers``); they must not start threads (the zygote checks,
        and starts fresh processes instead if one does). Default: none."""
        return ()

    @abc.abstractmethod
    def check(self, ref: str) -> None:
        """Raise ``ValueError`` (its message lists the valid choices or close matches)
        unless ``ref`` names a model this provider can describe."""

    @abc.abstractmethod
    def workload_class(self, ref: str) -> type[Workload]:
        """The :class:`Workload` subclass for ``ref`` (``ValueError`` when unknown)."""


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

    Required: :meth:`run`. Everything else has a neutral default: no barrier
    (:meth:`sync`), the host clock, no device memory counter, no extra metrics.
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

    def distributed_info(self) -> dict[str, Any]:
        """Facts of a data-parallel step for the cell's ``metrics.distributed`` (e.g.
        ``comm_backend``: how gradients are all-reduced). Default: none."""
        return {}

    def close(self) -> None:
        """Release resources."""


class Clock(abc.ABC):
    """Measures the elapsed time of a region, in seconds.

    ``start()`` returns an opaque token; ``elapsed(token)`` returns the seconds since
    it, after making sure the measured work has finished.
    """

    @abc.abstractmethod
    def start(self) -> Any:
        """Mark the start of a region; returns an opaque token."""

    @abc.abstractmethod
    def elapsed(self, token: Any) -> float:
        """Seconds since ``token``'s start, once the measured work has finished."""

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
        """Validate only: ``threads`` must be None or >= 1."""
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


class Backend(abc.ABC):
    """A deep-learning framework adapter: builds a workload on a device and returns a
    :class:`Step` to time.

    Required: ``name``, :meth:`list_devices` and :meth:`prepare`. ``framework_packages``
    (import names checked by :meth:`is_installed`) and ``Config`` are optional.

    Optional capabilities (defaults in brackets):

    * :meth:`setup` [nothing], :meth:`resolve_device` [the string unchanged],
      :meth:`runtime_info` [nothing];
    * :meth:`precheck`: decide, without importing the framework, that a cell cannot run
      here (an absent device) so the runner skips it without starting a worker [None:
      the worker decides];
    * ``data_parallel`` + :meth:`prepare_data_parallel`: data-parallel training cells
      [skipped with the reason];
    * :meth:`count_flops`: count the FLOPs and bytes of one step [the analytic count is
      used, with the reason];
    * :meth:`model_stats`: parameter counts and serialized size of a built model
      [not recorded];
    * :meth:`quality_logits`: the quality track on this backend [quality is
      unavailable with the reason].
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Config: ClassVar[type[BackendConfig]] = BackendConfig
    framework_packages: ClassVar[tuple[str, ...]] = ()  # distributions to record versions of
    #: Whose models this backend runs: None (the default) means the workload's own
    #: ``build_<name>()``; ``"torch"`` for a backend that takes ``build_torch()``'s model
    #: and converts it (the ONNX Runtime backend exports it to ONNX), so every workload
    #: with a torch implementation runs on it.
    builds_with: ClassVar[str | None] = None

    def __init__(self, config: BackendConfig | None = None) -> None:
        """Keep the config (the class's default Config when None); import nothing heavy."""
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

    @classmethod
    def precheck(cls, spec: Any) -> str | None:
        """Why the cell ``spec`` (a :class:`harness.core.cells.TaskSpec`: ``device``,
        ``world_size``, ...) cannot run on this machine, decided in the runner's process
        in milliseconds -- WITHOUT importing the framework (read files, ``/proc``,
        ``/dev``; never touch a device) -- or None when this cannot be decided cheaply
        (the default: the worker decides, as it always did).

        The reason must be exactly the text the worker's :class:`SkipCell` would give
        (e.g. from :meth:`resolve_device` or :meth:`prepare_data_parallel`), so a cell
        reads the same whether the runner or a worker skipped it. The runner calls it
        after the checks every backend shares (workload, variant, installed,
        data-parallel workers) and before starting a worker; a data-parallel cell's
        GPU check calls it with ``device`` ``cuda:<workers - 1>`` and ``world_size``
        None. Answer None when unsure: a wrong skip loses a cell, a None costs seconds."""
        return None

    def setup(self) -> None:
        """Import the framework and apply the config (e.g. thread counts). Called once
        in the worker before the host-memory baseline is taken, so the framework's own
        import is not counted as the cell's memory."""

    def resolve_device(self, device: str) -> Any:
        """Check that ``device`` (``"cpu"``, ``"cuda:1"``, ...) can run cells here and
        return this backend's handle for it (default: the string unchanged). Raise
        :class:`SkipCell` with the reason when it cannot (e.g. "cuda:3 requested but
        only 2 CUDA devices are visible"); the worker also calls it to check that a
        data-parallel cell has a device per worker."""
        return device

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

    def prepare_generate(
        self,
        workload: Workload,
        variant: "Variant",
        device: str,
        batch_size: int,
        prompt_len: int,
        gen_len: int,
        seed: int = 0,
    ) -> Step:
        """A *generate* step (``mode: generate``): each ``run(1)`` is one request, greedy
        decoding of ``gen_len`` tokens for ``batch_size`` prompts of ``prompt_len`` tokens
        with the KV cache, every token timed; the step keeps each request's raw times in
        ``requests`` (``{"t0_ns": int, "stamps_ns": [int, ...]}`` from
        ``time.perf_counter_ns``, or ``{"t0", "stamps"}`` in seconds; see
        :mod:`harness.core.generation`). Raise
        :class:`SkipCell` when it cannot run (the default: no generate mode)."""
        raise SkipCell(f"backend {self.name!r} has no generate mode (causal LM decoding is timed on -b torch)")

    def runtime_info(self) -> dict[str, Any]:
        """Framework facts for this cell (versions, threads, device name)."""
        return {}

    # -- post-measurement analyses (run after the timed loop, never inside it) ----------
    #: Name of the FLOP counter :meth:`count_flops` uses (e.g. "FlopCounterMode"), for
    #: the cell's ``flops_source`` and the reasons it gives.
    flop_counter: ClassVar[str | None] = None
    #: Why FLOPs are not counted on a backend without :meth:`count_flops`.
    NO_FLOP_COUNTER: ClassVar[str] = "backend {name!r} has no FLOP counter in the harness (FlopCounterMode is torch-only)"

    def count_flops(self, step: Step, variant: "Variant", device: str) -> dict[str, Any]:
        """Count one step of ``step``'s model (forward for inference; forward and
        backward for training, the optimizer excluded): ``{"flops": int, "bytes": int
        (tensor bytes read + written), "ops": int, "unseen_ops": [compute ops the
        counter has no formula for]}``. Default: ``NotImplementedError``, and the cell
        uses the analytic count with :attr:`NO_FLOP_COUNTER` as the reason."""
        raise NotImplementedError(self.NO_FLOP_COUNTER.format(name=self.name))

    def model_stats(self, model: Any) -> dict[str, Any]:
        """``params``, ``nonzero_params``, ``model_size_bytes`` and
        ``model_size_format`` of a model this backend built (after the variant).
        Default: ``{}`` (nothing recorded)."""
        return {}

    def quality_logits(
        self,
        workload: Workload,
        variant: "Variant",
        reference_state: Mapping[str, Any],
        inputs: Sequence[Any],
        context: Mapping[str, Any],
    ) -> tuple[Any, Any]:
        """The quality track on this backend (CPU): build ``workload``'s fp32 model,
        load ``reference_state`` (the trained reference weights: the workload's torch
        ``state_dict`` as numpy arrays, by module path), apply ``variant`` (a fresh
        instance) with ``context`` as ``Variant.apply``'s keyword arguments (it holds
        ``mode``, ``workload``, ``calibration``, ``train_data``, ...), and return
        ``(fp32 logits, variant logits)`` on ``inputs`` (numpy, ``input_specs()``
        order; float32 arrays of shape (samples, classes)), evaluated the way the speed
        step runs the model. Default: :class:`SkipCell` (no quality track)."""
        raise SkipCell(f"backend {self.name!r} has no quality track (Backend.quality_logits)")


# --------------------------------------------------------------------------- variant


@dataclass(frozen=True)
class VariantConfig:
    """Base for a variant's options."""


class Variant(abc.ABC):
    """A transformation of the model or its execution (precision, quantization,
    pruning, distillation, compilation). Backends call ``apply(backend_name, ...)``
    which dispatches to ``apply_<backend>``; a missing method means "not supported on
    this backend" and the cell is skipped with that reason.

    Required: ``name`` and one ``apply_<backend>(model, **ctx)`` per backend it
    supports. Optional capabilities (defaults in brackets): ``fp32_math`` ["ieee"],
    ``jit_compile`` [False], :meth:`autocast` [none], :meth:`cast_once_dtype` [None],
    :meth:`precision_method` [None], :meth:`model_analytic_flops` [None: the workload's
    model], :meth:`metrics` / :meth:`unavailable` [none]; ``Config.quality_gate``
    (fraction of the fp32 accuracy the variant must keep) [0.99].
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Config: ClassVar[type[VariantConfig]] = VariantConfig
    # How float32 matmuls/convolutions run where a backend could use a faster format:
    # "ieee" (strict IEEE fp32: TF32 off on Ampere+ GPUs, on every backend) or "tf32"
    # (TensorFloat-32 allowed; only the tf32 variant). Backends read it in prepare()
    # and record the settings they applied under the cell's ``runtime.precision``.
    fp32_math: ClassVar[str] = "ieee"
    #: Compile the whole step with the backend's graph compiler where it has one (the
    #: TensorFlow backend: ``tf.function(jit_compile=True)``, i.e. XLA, and the compile
    #: time is reported). Backends without one ignore it; variants that compile the
    #: model themselves (``torch.compile`` in ``apply_torch``) need not set it.
    #: ``tf_jit_compile`` is its older name and is still honoured.
    jit_compile: ClassVar[bool] = False
    tf_jit_compile: ClassVar[bool] = False
    #: ``apply`` returns a different object than the model it was given (an ONNX Runtime
    #: session, a compiled wrapper, a student): cells that need the model's own
    #: interface (``generate``'s KV-cache decoding) are skipped before it is applied.
    replaces_model: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Keep ``jit_compile`` and its older name ``tf_jit_compile`` in step."""
        super().__init_subclass__(**kwargs)
        if "tf_jit_compile" in cls.__dict__ and "jit_compile" not in cls.__dict__:
            cls.jit_compile = bool(cls.tf_jit_compile)
        elif "jit_compile" in cls.__dict__ and "tf_jit_compile" not in cls.__dict__:
            cls.tf_jit_compile = bool(cls.jit_compile)

    def __init__(self, config: VariantConfig | None = None) -> None:
        """Keep the config (the class's default Config when None)."""
        self.config = config or self.Config()

    def supports_backend(self, backend: str) -> bool:
        """Whether the variant has an ``apply_<backend>`` method."""
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

    def cast_once_dtype(self, backend: str, mode: str) -> str | None:
        """The dtype (e.g. ``"bfloat16"``) ``apply`` cast the weights to once for this
        backend and mode: the backend then casts the floating inputs once, before
        timing, and runs the step without :meth:`autocast`. None (default): no cast."""
        return None

    def precision_method(self, backend: str, mode: str) -> str | None:
        """How the cell runs in reduced precision, recorded as
        ``runtime.precision_method``; None (default) records nothing."""
        return None

    def model_analytic_flops(self, workload: Workload, batch_size: int, mode: str) -> tuple[int | None, str] | None:
        """Analytic FLOPs of one step of the model the cell runs when the variant runs a
        *different* model than the workload's (a distilled student, a structurally
        pruned model): ``(FLOPs, what they are)`` or ``(None, why there is no count)``.
        None (default): the workload's own formula applies."""
        return None

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

    Required: ``name``, :meth:`start`, :meth:`stop`, :meth:`metrics`. Optional:
    :meth:`bind`, :meth:`applies_to`, :meth:`unavailable`, :meth:`observe`,
    :meth:`cell_fields`. Every registered collector runs in every cell it applies to.

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
        """Keep the config (the class's default Config when None); touch no hardware."""
        self.config = config or self.Config()

    def bind(self, spec: Mapping[str, Any]) -> None:
        """Called once before ``start`` with the cell's spec (workload, backend,
        device, ...), so e.g. an energy collector can pick the GPU it should read."""

    def applies_to(self, spec: Mapping[str, Any]) -> bool:
        """Whether this collector has anything to say about the cell (default: yes)."""
        return True

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """``start()`` on entry and ``stop()`` on exit (also on an error)."""
        self.start()
        try:
            yield
        finally:
            self.stop()

    @abc.abstractmethod
    def start(self) -> None:
        """Begin recording (before the warm-up and the timed loop)."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop recording; must return promptly and never raise for a missing source."""

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
