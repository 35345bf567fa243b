"""TensorFlow backend (TensorFlow 2.x with Keras 3): devices ``cpu``, ``cuda[:N]``
(TensorFlow's ``GPU:N``) and ``tpu`` (through ``TPUStrategy``).

What a step is (the same work as the torch backend's step):

* **Inference**: ``model(x, training=False)`` inside a ``tf.function`` (graph mode;
  ``jit_compile=True`` under an XLA variant) that returns the logits, so the graph
  computes them.
* **Training**: forward with ``training=True``, sparse categorical cross-entropy from
  logits (float32), ``GradientTape`` gradients, ``AdamW`` update (lr 1e-4,
  weight decay 0.01, eps 1e-8, betas 0.9/0.999: torch's ``AdamW`` defaults), all in one
  ``tf.function``; it returns the loss.
* Inputs are generated (seeded, same arrays as torch), converted to the Keras layout
  (``Workload.backend_inputs("tensorflow", ...)``: NCHW -> NHWC images for the CNN) and placed on the device
  with ``tf.identity`` under ``tf.device`` *before* timing; under a strategy each
  replica's share is created on that replica's device (:func:`place_per_replica`).
  Nothing but the function call runs in the timed region; no host<->device copies (the
  outputs stay on the device; on a TPU the barrier fetches one scalar per replica).

Synchronisation (``Step.sync``): TensorFlow executes CPU work synchronously (eager
execution is synchronous by default, and a ``tf.function`` call returns when its CPU
kernels are done), so on CPU the host clock around the calls is exact and ``sync`` is a
no-op. GPU kernels and TPU programs run asynchronously to the host:

* **GPU** (one device or a MirroredStrategy over GPUs): ``sync`` is
  ``tf.test.experimental.sync_devices()`` (TensorFlow's benchmark barrier: a
  ``SyncDevice`` op on every logical device, whose GPU kernel synchronises the compute
  stream, then ``async_wait``). No value is copied to the host.
* **TPU**: ``SyncDevice`` has an effect only on GPUs (its op documentation: "only GPU
  ops are asynchronous in TensorFlow, and so this only has an effect when run on
  GPUs"), so it is no proof that a TPU program finished. The TPU barrier is a host
  fetch of a value that depends on the step's output: the step keeps its last output,
  the barrier reduces each replica's part to a scalar on that replica's device and
  copies it to the host (``.numpy()``), which cannot return before the program that
  produced it finished. The clock is the host clock bracketed by the barrier; the
  timed region holds the steps and this one final fetch (its cost is part of the
  clock overhead that sizes the timing blocks).

fp32 math (``Variant.fp32_math``, recorded under ``runtime.precision``): TensorFlow
runs fp32 matmuls and convolutions in TensorFloat-32 by default on Ampere+ GPUs
(cuBLAS/cuDNN), and its XLA bridge (used by ``jit_compile`` and by every TPU program)
lowers them with ``PrecisionConfig`` DEFAULT while TF32 is enabled (a TPU runs DEFAULT
as one bfloat16 pass) and HIGHEST when it is disabled. So ``"ieee"`` (every variant but
``tf32``) calls ``tf.config.experimental.enable_tensor_float_32_execution(False)`` before
the model is built and the step traced; ``"tf32"`` enables it and is skipped with the
reason where the hardware has no TF32 (CPU, GPUs below compute capability 8.0, TPUs).

Compile time: the first call of the step function (tracing + graph optimisation, plus
XLA compilation under ``jit_compile``, plus one execution) is made in ``prepare`` and
reported as ``compile_time_s``; the timing loop's warm-up and samples never include it.

Device peak memory: ``tf.config.experimental.get_memory_info(device)["peak"]`` after
``reset_memory_stats`` (bytes held by TensorFlow's allocator for that device; on CPU
TensorFlow tracks its own CPU allocator too).

Heavy imports happen inside methods only; ``is_installed`` uses
``importlib.util.find_spec`` and never imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Protocol, Sequence

from harness.api import Backend, BackendConfig, Clock, DeviceInfo, SkipCell, Step, Variant, Workload
from harness.core.frameworks.keras_utils import LOG_LEVEL_ENV, import_tf

__all__ = ["LOG_LEVEL_ENV", "import_tf", "TensorFlowBackend", "TensorFlowConfig", "TensorFlowStep"]


@dataclass(frozen=True)
class TensorFlowConfig(BackendConfig):
    """TensorFlow backend options. ``tpu``: TPU name, ``grpc://`` address or ``local``
    for ``TPUClusterResolver``; ``None`` lets the resolver read ``TPU_NAME``."""

    tpu: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tpu is not None and (not isinstance(self.tpu, str) or not self.tpu.strip()):
            raise ValueError(f"tpu must be a non-empty TPU name or address, got {self.tpu!r}")


# ------------------------------------------------------------------------------- TPU


class TPURuntime(Protocol):
    """The lowest TPU boundary: resolve a TPU and connect to it. Tests fake this."""

    def resolve(self, tpu: str | None) -> Any:
        """A cluster resolver; raises (e.g. ``ValueError``) when no TPU can be found."""

    def connect(self, resolver: Any) -> Any:
        """Connect to the cluster, initialise the TPU system; return the strategy."""


class CloudTPURuntime:
    """The real boundary: ``TPUClusterResolver`` -> ``experimental_connect_to_cluster``
    -> ``initialize_tpu_system`` -> ``TPUStrategy``."""

    def __init__(self, tf: Any) -> None:
        self.tf = tf

    def resolve(self, tpu: str | None) -> Any:
        return self.tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)

    def connect(self, resolver: Any) -> Any:
        tf = self.tf
        if resolver.master() not in ("", "local"):
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)


# ------------------------------------------------------------------------------ step


#: ``Step.sync`` barriers: GPUs sync their streams, a TPU is waited for by fetching a
#: value computed from the step's output, CPU work is synchronous (no barrier).
BARRIER_SYNC_DEVICES = "tf_sync_devices"
BARRIER_HOST_FETCH = "host_fetch_of_step_output"


class SyncedHostClock(Clock):
    """Host clock bracketed by a device barrier (seconds): ``sync`` before the start and
    before reading the end, so asynchronously queued device work is counted."""

    name = "perf_counter+" + BARRIER_SYNC_DEVICES

    def __init__(self, sync: Callable[[], None], now: Callable[[], float] = time.perf_counter,
                 barrier: str = BARRIER_SYNC_DEVICES) -> None:
        self._sync = sync
        self._now = now
        self.name = f"perf_counter+{barrier}"

    def start(self) -> float:
        self._sync()
        return self._now()

    def elapsed(self, token: Any) -> float:
        self._sync()
        return self._now() - token


class TensorFlowStep(Step):
    """A prepared TensorFlow step: ``fn`` is the compiled ``tf.function`` (no arguments;
    inputs are captured device tensors).

    ``barrier`` is how :meth:`sync` waits for the device: ``None`` (CPU: synchronous),
    :data:`BARRIER_SYNC_DEVICES` (GPUs) or :data:`BARRIER_HOST_FETCH` (TPU: fetch a
    scalar computed from the last step's output on each replica's device; see the
    module docstring). ``run`` keeps the last output for that barrier; it does nothing
    else in the timed region."""

    def __init__(
        self,
        tf: Any,
        fn: Callable[[], Any],
        context: Callable[[], contextlib.AbstractContextManager[Any]],
        device: str,
        memory_device: str | None,
        asynchronous: bool,
        params: int,
        model: Any,
        inputs: Any,
        labels: Any,
        mode: str,
        extra: dict[str, Any] | None = None,
        barrier: str | None = None,
        strategy: Any = None,
    ) -> None:
        self.tf = tf
        self._fn = fn
        self._context = context
        self.device = device
        self._memory_device = memory_device
        self._async = asynchronous
        self.params = params
        self.model = model
        self.inputs = inputs
        self.labels = labels
        self.mode = mode
        self._extra = dict(extra or {})
        if barrier is None and asynchronous:
            barrier = BARRIER_SYNC_DEVICES
        if barrier not in (None, BARRIER_SYNC_DEVICES, BARRIER_HOST_FETCH):
            raise ValueError(f"barrier must be None, {BARRIER_SYNC_DEVICES!r} or {BARRIER_HOST_FETCH!r}, got {barrier!r}")
        self.barrier = barrier
        self._strategy = strategy
        self._last: Any = None  # the last step's output (the TPU barrier fetches from it)
        self.barrier_fetches = 0  # host fetches made by the TPU barrier (diagnostic)
        self.last_barrier_value: float | None = None  # the scalar the last fetch returned
        self.precision: dict[str, Any] = {}  # set by the backend: runtime.precision

    def runtime_info(self) -> dict[str, Any]:
        """This cell's runtime facts: ``precision`` (fp32 math, TF32 flag, Keras policy)
        and the device barrier the clock used."""
        out: dict[str, Any] = {"device_barrier": self.barrier}
        if self.precision:
            out["precision"] = precision_record(self.tf, self.precision)
        return out

    def run(self, n: int) -> None:
        fn = self._fn
        if n < 1:
            return
        with self._context():
            for _ in range(n):
                out = fn()
        self._last = out

    def sync(self) -> None:
        if self.barrier == BARRIER_SYNC_DEVICES:
            self.tf.test.experimental.sync_devices()
        elif self.barrier == BARRIER_HOST_FETCH:
            self._host_fetch()

    def _host_fetch(self) -> None:
        """Copy to the host one scalar per replica computed from the last step's output
        (the sum of its elements, reduced on the replica's own device): it exists only
        once the program that produced the output has finished. Steps on a device run
        in the order they were queued, so the last one finishing means all did."""
        last = self._last
        if last is None:
            return
        tf = self.tf
        parts = self._strategy.experimental_local_results(last) if self._strategy is not None else last
        total = 0.0
        for value in tf.nest.flatten(parts):
            device = getattr(value, "device", None)
            with tf.device(device) if device else contextlib.nullcontext():
                scalar = tf.reduce_sum(tf.cast(value, tf.float32))
            total += float(scalar.numpy())  # the host fetch: blocks until the value exists
        self.barrier_fetches += 1
        self.last_barrier_value = total

    def device_clock(self) -> Clock | None:
        return SyncedHostClock(self.sync, barrier=self.barrier) if self.barrier else None

    def reset_device_peak_memory(self) -> None:
        if self._memory_device is None:
            return
        self.sync()
        try:
            self.tf.config.experimental.reset_memory_stats(self._memory_device)
        except (ValueError, RuntimeError):
            pass  # reported by device_peak_memory

    def device_peak_memory(self) -> tuple[int | None, str]:
        if self._memory_device is None:
            return None, f"no memory counter for {self.device} (TPUStrategy spans several cores)"
        self.sync()
        try:
            info = self.tf.config.experimental.get_memory_info(self._memory_device)
        except (ValueError, RuntimeError) as e:
            return None, f"tf.config.experimental.get_memory_info({self._memory_device!r}) failed: {e}"
        peak = int(info["peak"])
        source = f"tf.config.experimental.get_memory_info('{self._memory_device}')['peak']"
        if self._memory_device.startswith("CPU"):
            if peak == 0:  # honest: 0 here means "not tracked", not "no memory used"
                return None, ("TensorFlow's CPU allocator counted 0 bytes: its statistics skip small "
                              "tensors (coarse, ~0.5 MiB granularity); see peak_host_mem_bytes")
            source += " (TensorFlow's CPU allocator: tensors only, coarse granularity)"
        return peak, source

    def extra_metrics(self) -> dict[str, Any]:
        """Values the backend measured while preparing the step (compile time, XLA,
        strategy facts), merged into the cell's metrics."""
        return dict(self._extra)

    def add_metrics(self, values: Mapping[str, Any]) -> None:
        """Record values the backend measured for :meth:`extra_metrics`."""
        self._extra.update(values)

    def distributed_info(self) -> dict[str, Any]:
        """``comm_backend`` of a MirroredStrategy step: its cross-device all-reduce."""
        ops = self._extra.get("cross_device_ops")
        return {"comm_backend": f"{ops} (tf.distribute)"} if ops else {}


# --------------------------------------------------------------------------- backend


_TF_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel", "tensorflow-macos",
                     "tensorflow-aarch64")


def _tf_build() -> tuple[str, bool] | None:
    """(``tf.__version__``, built with CUDA?) without importing TensorFlow: the
    installed distribution's release version (``X.Y.Z``, which is ``tf.__version__``)
    and ``is_cuda_build`` from the generated ``tensorflow/python/platform/build_info.py``
    (what ``tf.test.is_built_with_cuda`` reports); None when either cannot be read."""
    import ast
    import importlib.metadata
    import importlib.util
    import re

    try:
        found = importlib.util.find_spec("tensorflow")
    except (ImportError, ValueError):
        return None
    if found is None or not found.origin:
        return None
    version = None
    for dist in _TF_DISTRIBUTIONS:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        break
    if not isinstance(version, str) or not re.fullmatch(r"\d+\.\d+\.\d+", version):
        return None
    try:
        with open(os.path.join(os.path.dirname(found.origin), "python", "platform", "build_info.py"),
                  encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return None
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "build_info"):
            continue
        value = node.value  # {...} or collections.OrderedDict([(key, value), ...])
        if isinstance(value, ast.Call) and len(value.args) == 1:
            value = value.args[0]
        try:
            info = dict(ast.literal_eval(value))
        except (ValueError, TypeError):
            return None
        cuda = info.get("is_cuda_build")
        return (version, cuda) if isinstance(cuda, bool) else None
    return None


def _no_nvidia_driver() -> bool:
    """True on Linux when no NVIDIA kernel driver is loaded (no
    ``/proc/driver/nvidia/version`` and no ``/dev/nvidia*`` device node)."""
    import glob
    import sys

    if not sys.platform.startswith("linux"):
        return False
    return not os.path.exists("/proc/driver/nvidia/version") and not glob.glob("/dev/nvidia*")


class TensorFlowBackend(Backend):
    """TensorFlow 2 / Keras 3 in graph mode (``tf.function``), optionally XLA-compiled."""

    name: ClassVar[str] = "tensorflow"
    description: ClassVar[str] = "TensorFlow + Keras 3 (tf.function graph mode, XLA with -v compile); devices cpu, cuda[:N], tpu"
    Config: ClassVar[type[BackendConfig]] = TensorFlowConfig
    framework_packages: ClassVar[tuple[str, ...]] = ("tensorflow",)

    def __init__(
        self,
        config: BackendConfig | None = None,
        tpu_runtime: Callable[[Any], TPURuntime] | None = None,
    ) -> None:
        if config is not None and not isinstance(config, TensorFlowConfig):
            config = TensorFlowConfig(threads=config.threads, tpu=getattr(config, "tpu", None))
        super().__init__(config)
        self._tpu_runtime_factory = tpu_runtime or CloudTPURuntime
        self._strategy: Any = None
        self._tf: Any = None
        self._precision: dict[str, Any] = {}  # runtime.precision of the last prepared cell

    @property
    def tf(self) -> Any:
        if self._tf is None:
            self._tf = import_tf()
        return self._tf

    @classmethod
    def precheck(cls, spec: Any) -> str | None:
        """The worker's skip reason for a device this machine cannot have, decided without
        importing TensorFlow (:meth:`harness.api.Backend.precheck`): an unknown device,
        a data-parallel cell on a TPU, or ``cuda`` with a TensorFlow built
        without CUDA (``tensorflow/python/platform/build_info.py``: ``is_cuda_build``)
        or, on Linux, with no NVIDIA driver at all. Texts as :meth:`resolve_device` and
        :meth:`prepare_data_parallel` give them; None when the worker must look (a TPU
        is found by its resolver)."""
        device = str(spec.device)
        if device == "cpu":
            return None
        if device.startswith("cuda"):
            build = _tf_build()
            if build is None:
                return None
            version, is_cuda = build
            if not is_cuda:
                return f"{device} requested but tensorflow {version} was built without CUDA support (e.g. tensorflow-cpu)"
            if _no_nvidia_driver():
                return (f"{device} requested but no GPU visible to TensorFlow (check the driver, CUDA libraries and "
                        "CUDA_VISIBLE_DEVICES)")
            return None
        if getattr(spec, "world_size", None) is not None:
            return (f"{device}: data-parallel cells run on cpu or cuda; a TPU already runs as one "
                    "TPUStrategy over its cores (use -d tpu without --world-size)")
        if device.startswith("tpu"):  # a TPU's own checks (and tf32's) come first in the worker
            return None
        return f"unknown device {device!r} for the tensorflow backend (cpu, cuda[:N], tpu)"

    def setup(self) -> None:
        """Import TensorFlow (logs quieted), set intra-op threads when given, and let
        GPU memory grow on demand (so the peak is what the cell used, not a grab-all)."""
        tf = self.tf
        threads = self.config.threads
        if threads is not None:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        for gpu in tf.config.list_physical_devices("GPU"):
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:  # already initialised: keep going
                pass

    # ------------------------------------------------------------------ devices
    def _cuda_unavailable_reason(self) -> str:
        tf = self.tf
        if not tf.test.is_built_with_cuda():
            return f"tensorflow {tf.__version__} was built without CUDA support (e.g. tensorflow-cpu)"
        if not tf.config.list_physical_devices("GPU"):
            return "no GPU visible to TensorFlow (check the driver, CUDA libraries and CUDA_VISIBLE_DEVICES)"
        return ""

    def list_devices(self) -> list[DeviceInfo]:
        """CPU, each GPU (or why none) and the TPU (resolved by name, not connected)."""
        import platform

        tf = self.tf
        intra = tf.config.threading.get_intra_op_parallelism_threads()
        out = [DeviceInfo("cpu", True, f"{platform.processor() or platform.machine()}, TensorFlow {tf.__version__}, "
                                       f"intra-op threads {intra or 'default'}")]
        reason = self._cuda_unavailable_reason()
        if reason:
            out.append(DeviceInfo("cuda", False, reason))
        else:
            for i, gpu in enumerate(tf.config.list_physical_devices("GPU")):
                try:
                    d = tf.config.experimental.get_device_details(gpu)
                except Exception:  # noqa: BLE001
                    d = {}
                cc = d.get("compute_capability")
                out.append(DeviceInfo(f"cuda:{i}", True, f"GPU:{i} {d.get('device_name', gpu.name)}"
                                      + (f", sm_{cc[0]}{cc[1]}" if cc else "")))
        out.append(self._tpu_info())
        return out

    def _tpu_info(self) -> DeviceInfo:
        local = self.tf.config.list_physical_devices("TPU")
        if local:
            return DeviceInfo("tpu", True, f"{len(local)} local TPU core(s)")
        try:
            resolver = self._tpu_runtime_factory(self.tf).resolve(self.config.tpu)
        except Exception as e:  # noqa: BLE001 - the reason is the answer
            return DeviceInfo("tpu", False, f"no TPU: {e} (give --tpu NAME|ADDRESS or set TPU_NAME)")
        try:
            master = resolver.master()
        except Exception as e:  # noqa: BLE001
            return DeviceInfo("tpu", False, f"TPU resolver has no address: {e}")
        return DeviceInfo("tpu", True, f"TPU at {master} (resolved, connects when a cell runs)")

    def resolve_device(self, device: str) -> tuple[str, bool]:
        """(TensorFlow device string, asynchronous?) for ``device``; :class:`SkipCell`
        with the reason when it is not available. ``tpu`` connects and sets the strategy."""
        tf = self.tf
        if device == "cpu":
            return "/CPU:0", False
        if device.startswith("cuda"):
            reason = self._cuda_unavailable_reason()
            if reason:
                raise SkipCell(f"{device} requested but {reason}")
            idx = int(device.split(":")[1]) if ":" in device else 0
            count = len(tf.config.list_physical_devices("GPU"))
            if idx >= count:
                raise SkipCell(f"{device} requested but TensorFlow sees only {count} GPU(s)")
            return f"/GPU:{idx}", True
        if device.startswith("tpu"):
            if device != "tpu":
                raise SkipCell(f"{device}: the tensorflow backend runs a TPU as one TPUStrategy; use -d tpu")
            runtime = self._tpu_runtime_factory(tf)
            name = self.config.tpu
            if name is None and not os.environ.get("TPU_NAME") and tf.config.list_physical_devices("TPU"):
                name = "local"  # a TPU VM: its chips are attached to this host
            try:
                resolver = runtime.resolve(name)
            except Exception as e:  # noqa: BLE001 - no TPU here: the resolver says why
                raise SkipCell(f"tpu requested but TPUClusterResolver found none: {e}") from None
            self._strategy = runtime.connect(resolver)  # a failure here is a real error
            return "tpu", True
        raise SkipCell(f"unknown device {device!r} for the tensorflow backend (cpu, cuda[:N], tpu)")

    # ------------------------------------------------------------------ cells
    def prepare(
        self,
        workload: Workload,
        variant: Variant,
        device: str,
        mode: str,
        batch_size: int,
        seed: int = 0,
    ) -> Step:
        fp32_math = variant_fp32_math(variant)
        if fp32_math == "tf32" and device.startswith("tpu"):
            raise SkipCell(TF32_TPU_REASON)  # before connecting: no TPU gains TF32 by it
        dev, asynchronous = self.resolve_device(device)
        kind = "tpu" if dev == "tpu" else "gpu" if dev.startswith("/GPU") else "cpu"
        gpus = [int(dev.split(":")[1])] if kind == "gpu" else []
        self._precision = self.configure_fp32_math(fp32_math, kind, gpus)
        strategy = self._strategy if dev == "tpu" else None
        replicas = int(strategy.num_replicas_in_sync) if strategy is not None else 1
        if batch_size % replicas:
            raise SkipCell(f"batch size {batch_size} is not divisible by the {replicas} TPU replicas")
        return self._build(workload, variant, device, mode, batch_size, seed, dev, asynchronous, strategy)

    # ------------------------------------------------------------------ fp32 math
    def gpu_compute_capabilities(self, indices: list[int]) -> dict[int, tuple[str, tuple[int, int] | None]]:
        """{GPU index: (device name, compute capability or None)} from
        ``tf.config.experimental.get_device_details`` (the lowest boundary)."""
        tf = self.tf
        gpus = tf.config.list_physical_devices("GPU")
        out: dict[int, tuple[str, tuple[int, int] | None]] = {}
        for i in indices:
            try:
                d = tf.config.experimental.get_device_details(gpus[i])
            except Exception:  # noqa: BLE001 - unknown is recorded as unknown
                d = {}
            cc = d.get("compute_capability")
            out[i] = (str(d.get("device_name") or f"GPU:{i}"), tuple(int(x) for x in cc) if cc else None)  # type: ignore[misc]
        return out

    def configure_fp32_math(self, fp32_math: str, kind: str, gpus: list[int]) -> dict[str, Any]:
        """Apply ``fp32_math`` ("ieee" | "tf32") for a cell on ``kind`` ("cpu" | "gpu" |
        "tpu"; ``gpus``: the GPU indices it uses) and return the ``runtime.precision``
        record. Raises :class:`SkipCell` with the reason when "tf32" has no TF32
        hardware to run on. Called before the model is built and the step traced: the
        flag is process-wide, read by cuBLAS/cuDNN at run time and by the XLA bridge
        when it lowers a function."""
        tf = self.tf
        enable = fp32_math == "tf32"
        rec: dict[str, Any] = {"fp32_math": fp32_math, "device_kind": kind}
        if kind == "cpu":
            if enable:
                raise SkipCell(TF32_CPU_REASON)
            rec["tf32_hardware"] = False
            fpmath = os.environ.get(ONEDNN_FPMATH_ENV, "").strip()
            rec["onednn_default_fpmath_mode"] = fpmath or None
            strict = fpmath.upper() in ("", "STRICT")
            rec["fp32_matmul_conv"] = ("IEEE fp32 (CPUs have no TF32; the TF32 flag only makes XLA lower dots and "
                                       "convolutions with precision HIGHEST)" if strict else
                                       f"oneDNN may down-convert fp32 matmuls/convolutions: {ONEDNN_FPMATH_ENV}={fpmath}")
            rec["fp32_strict"] = strict
        elif kind == "gpu":
            caps = self.gpu_compute_capabilities(gpus)
            rec["gpus"] = [{"index": i, "name": name, "compute_capability": f"{cc[0]}.{cc[1]}" if cc else None}
                           for i, (name, cc) in caps.items()]
            lacking = [f"GPU:{i} ({name}, compute capability {f'{cc[0]}.{cc[1]}' if cc else 'unknown'})"
                       for i, (name, cc) in caps.items() if cc is None or tuple(cc) < (8, 0)]
            if enable and lacking:
                raise SkipCell(f"tf32: {', '.join(lacking)} has no TensorFloat-32 (it needs an NVIDIA GPU of "
                               "compute capability 8.0 or newer, Ampere+); the fp32 cell is what this GPU runs")
            rec["tf32_hardware"] = not lacking
            if enable:
                rec["fp32_matmul_conv"] = ("TF32 tensor cores: fp32 inputs rounded to 10 mantissa bits, fp32 "
                                           "accumulation (cuBLAS/cuDNN; XLA precision DEFAULT)")
            elif lacking:
                rec["fp32_matmul_conv"] = "IEEE fp32 (this GPU has no TF32; the flag is off all the same)"
            else:
                rec["fp32_matmul_conv"] = ("IEEE fp32: TF32 off (cuBLAS/cuDNN fp32 math; XLA dots/convolutions "
                                           "lowered with precision HIGHEST)")
            rec["fp32_strict"] = not enable
        elif kind == "tpu":
            rec["tf32_hardware"] = False
            rec["fp32_matmul_conv"] = ("fp32 accuracy: TF32 off makes TensorFlow's XLA bridge lower dots/convolutions "
                                       "with precision HIGHEST, which a TPU computes with several bfloat16 passes "
                                       "(TensorFlow's default, TF32 on, is DEFAULT: one bfloat16 pass)")
            rec["fp32_strict"] = True
        else:
            raise ValueError(f"kind must be cpu, gpu or tpu, got {kind!r}")
        tf.config.experimental.enable_tensor_float_32_execution(enable)
        rec["tensor_float_32_execution"] = bool(tf.config.experimental.tensor_float_32_execution_enabled())
        rec["set_by"] = (f"tf.config.experimental.enable_tensor_float_32_execution({enable}) before the model is built "
                         "and the step traced")
        return rec

    data_parallel: ClassVar[str | None] = "in-process"
    data_parallel_description: ClassVar[str] = "tf.distribute.MirroredStrategy (GPUs, or logical CPU devices)"

    def prepare_data_parallel(
        self,
        workload: Workload,
        variant: Variant,
        device: str,
        batch_size: int,
        world_size: int,
        seed: int = 0,
    ) -> Step:
        """Synchronous data-parallel training with ``tf.distribute.MirroredStrategy`` over
        ``world_size`` replicas in this process: GPUs 0..N-1 for ``cuda``, or N logical
        CPU devices for ``cpu`` (each replica then runs its share of the batch on the
        host's cores; this is how the strategy is exercised without GPUs). The global
        batch is ``world_size * batch_size``; gradients are all-reduced every step."""
        tf = self.tf
        fp32_math = variant_fp32_math(variant)
        if device == "cpu":
            if fp32_math == "tf32":
                raise SkipCell(TF32_CPU_REASON)
            cpus = tf.config.list_physical_devices("CPU")
            try:
                tf.config.set_logical_device_configuration(
                    cpus[0], [tf.config.LogicalDeviceConfiguration()] * world_size)
            except RuntimeError:  # runtime already initialised: use what exists
                pass
            logical = tf.config.list_logical_devices("CPU")
            if len(logical) < world_size:
                raise SkipCell(f"{world_size} replicas requested but TensorFlow has {len(logical)} logical "
                               "CPU device(s) (configured before the runtime started)")
            devices, asynchronous = [d.name for d in logical[:world_size]], False
            self._precision = self.configure_fp32_math(fp32_math, "cpu", [])
        elif device.startswith("cuda"):
            reason = self._cuda_unavailable_reason()
            if reason:
                raise SkipCell(f"{device} requested but {reason}")
            gpus = tf.config.list_logical_devices("GPU")
            if len(gpus) < world_size:
                raise SkipCell(f"{world_size} replicas requested but TensorFlow sees only {len(gpus)} GPU(s)")
            self._precision = self.configure_fp32_math(fp32_math, "gpu", list(range(world_size)))
            devices, asynchronous = [d.name for d in gpus[:world_size]], True
        else:
            raise SkipCell(f"{device}: data-parallel cells run on cpu or cuda; a TPU already runs as one "
                           "TPUStrategy over its cores (use -d tpu without --world-size)")
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        self._strategy = strategy
        step = self._build(workload, variant, device, "training", batch_size * world_size, seed, "mirrored",
                           asynchronous, strategy)
        step.add_metrics({
            "distribution_strategy": "MirroredStrategy",
            "replica_devices": devices,
            "cross_device_ops": cross_device_ops_name(strategy),
        })
        return step

    def _build(self, workload: Workload, variant: Variant, device: str, mode: str, batch_size: int, seed: int,
               dev: str, asynchronous: bool, strategy: Any) -> Step:
        """Build the model (under ``strategy`` when given; ``batch_size`` is then the
        global batch, split over the replicas), place the inputs and trace the step."""
        tf = self.tf
        from harness.core.frameworks.keras_utils import trainable_params

        jit = bool(variant.jit_compile)
        replicas = int(strategy.num_replicas_in_sync) if strategy is not None else 1

        scope = strategy.scope() if strategy is not None else tf.device(dev)
        with scope:
            model = workload.build("tensorflow")
            model = variant.apply("tensorflow", model, device=dev, mode=mode, workload=workload,
                                  strategy=strategy)
            arrays, labels_np = workload.make_inputs(batch_size, seed=seed)
            arrays = workload.backend_inputs("tensorflow", arrays)
            opt = None
            if mode == "training":
                import keras

                opt = keras.optimizers.AdamW(learning_rate=1e-4, weight_decay=0.01, beta_1=0.9,
                                             beta_2=0.999, epsilon=1e-8)
                opt.build(model.trainable_variables)
        params = trainable_params(model)

        if strategy is None:
            with tf.device(dev):
                inputs = [tf.identity(tf.constant(a)) for a in arrays]
                labels = tf.identity(tf.constant(labels_np))
            fn = self._single_device_fn(tf, model, opt, inputs, labels, mode, dev, jit, workload)
            memory_device: str | None = dev.lstrip("/")
        else:
            inputs, labels, fn = self._strategy_fn(tf, strategy, model, opt, arrays, labels_np, mode, jit)
            memory_device = None

        def ctx() -> contextlib.AbstractContextManager[Any]:
            return variant.autocast("tensorflow", device)

        barrier = None if not asynchronous else BARRIER_HOST_FETCH if dev == "tpu" else BARRIER_SYNC_DEVICES
        step = TensorFlowStep(tf, fn, ctx, dev, memory_device, asynchronous, params, model,
                              inputs, labels, mode, barrier=barrier, strategy=strategy)
        # first call: trace (+ XLA compile) + one execution, kept out of the timing
        t0 = time.perf_counter()
        step.run(1)
        step.sync()
        compile_s = time.perf_counter() - t0
        step.add_metrics({
            "compile_time_s": compile_s,
            "compile_method": "first tf.function call (trace + graph optimisation"
            + (" + XLA compile" if jit else "") + " + one step), outside the timed region",
            "xla_jit_compile": jit,
        })
        if strategy is not None and dev == "tpu":
            step.add_metrics({"tpu_replicas": replicas})
        precision = dict(getattr(self, "_precision", None) or {})
        precision.update(keras_precision(model))
        if jit and strategy is None:
            precision["xla_dot_precision"] = xla_dot_precision(fn)
        self._precision = step.precision = precision
        self._runtime_extra = {"device": dev, "xla_jit_compile": jit, "replicas": replicas,
                               "device_barrier": barrier}
        return step

    @staticmethod
    def _single_device_fn(tf: Any, model: Any, opt: Any, inputs: list[Any], labels: Any,
                          mode: str, dev: str, jit: bool, workload: Workload | None = None) -> Callable[[], Any]:
        x = inputs[0] if len(inputs) == 1 else inputs
        if mode == "inference":

            @tf.function(jit_compile=jit)
            def infer() -> Any:
                with tf.device(dev):
                    return model(x, training=False)

            return infer
        import keras

        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @tf.function(jit_compile=jit)
        def train() -> Any:
            with tf.device(dev):
                with tf.GradientTape() as tape:
                    logits = model(x, training=True)
                    # the workload's own loss (Workload.loss), else cross-entropy against the labels
                    own = workload.loss("tensorflow", logits, labels, inputs) if workload is not None else None
                    loss = own if own is not None else loss_fn(labels, tf.cast(logits, tf.float32))
                grads = tape.gradient(loss, model.trainable_variables)
                opt.apply_gradients(zip(grads, model.trainable_variables))
                return loss

        return train

    @staticmethod
    def _strategy_fn(tf: Any, strategy: Any, model: Any, opt: Any, arrays: list[Any], labels_np: Any,
                     mode: str, jit: bool) -> tuple[Any, Any, Callable[[], Any]]:
        """The step under a distribution strategy (TPUStrategy, MirroredStrategy): the
        global batch is split evenly over the replicas, each part placed on its
        replica's device before timing (:func:`place_per_replica`); the training loss is
        the mean over the global batch, gradients are all-reduced by the optimizer."""
        global_bs = int(labels_np.shape[0])
        inputs = [place_per_replica(tf, strategy, a) for a in arrays]
        labels = place_per_replica(tf, strategy, labels_np)
        if mode == "inference":

            def replica_infer(*xs: Any) -> Any:
                return model(xs[0] if len(xs) == 1 else list(xs), training=False)

            @tf.function(jit_compile=jit or None)
            def infer() -> Any:
                return strategy.run(replica_infer, args=tuple(inputs))

            return inputs, labels, infer
        import keras

        loss_fn = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="none")

        def replica_train(y: Any, *xs: Any) -> Any:
            with tf.GradientTape() as tape:
                logits = model(xs[0] if len(xs) == 1 else list(xs), training=True)
                per_example = loss_fn(y, tf.cast(logits, tf.float32))
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_bs)
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        @tf.function(jit_compile=jit or None)
        def train() -> Any:
            per_replica = strategy.run(replica_train, args=(labels, *inputs))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        return inputs, labels, train

    # ------------------------------------------------------------------ analyses
    def model_stats(self, model: Any) -> dict[str, Any]:
        """Trainable parameter counts and ``.weights.h5`` size of a Keras model (or the
        model's own ``harness_model_stats``, e.g. a LiteRT interpreter)."""
        from harness.core.frameworks.keras_utils import keras_model_stats

        return keras_model_stats(model)

    def quality_logits(self, workload: Workload, variant: Variant, reference_state: Mapping[str, Any],
                       inputs: Sequence[Any], context: Mapping[str, Any]) -> tuple[Any, Any]:
        """The quality track on the CPU: the Keras twin with the reference (torch)
        weights, and the variant applied to another copy, evaluated as the backend runs
        it (XLA for a ``jit_compile`` variant, under the variant's autocast)."""
        from harness.core.frameworks.keras_utils import keras_predict, load_torch_state

        tf = self.tf

        def keras_teacher() -> Any:
            km = workload.build("tensorflow")
            load_torch_state(km, reference_state)
            return km

        test_inputs = workload.backend_inputs("tensorflow", inputs)
        # the quality models' variables and ops are pinned to the host: on a GPU machine
        # TensorFlow would otherwise place them on GPU:0 and add them to the cell's device
        # peak memory (the speed cell's device is the only thing the GPU should hold)
        with tf.device("/CPU:0"):
            fp32_logits = keras_predict(keras_teacher(), test_inputs)
            applied = variant.apply("tensorflow", keras_teacher(), device="/CPU:0", strategy=None, **context)
            if variant.jit_compile:  # evaluate what the backend runs: XLA
                keras_model = applied
                jitted = tf.function(lambda x: keras_model(x, training=False), jit_compile=True)

                def applied_xla(x: Any, training: bool = False) -> Any:
                    return jitted(x)

                applied = applied_xla
            with variant.autocast("tensorflow", "cpu"):
                logits = keras_predict(applied, test_inputs)
        return fp32_logits, logits

    def runtime_info(self) -> dict[str, Any]:
        tf = self.tf
        info: dict[str, Any] = {
            "tensorflow": tf.__version__,
            "keras": _keras_version(),
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or None,
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads() or None,
            "threads_note": "None: TensorFlow's default (all cores)",
            "cuda_build": bool(tf.test.is_built_with_cuda()),
            "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
            "graph_mode": "tf.function",
        }
        info.update(getattr(self, "_runtime_extra", {}))
        if self._strategy is not None:
            info["strategy"] = type(self._strategy).__name__
        if self._precision:
            info["precision"] = precision_record(tf, self._precision)
        return info


FP32_MATH_VALUES = ("ieee", "tf32")
ONEDNN_FPMATH_ENV = "ONEDNN_DEFAULT_FPMATH_MODE"
TF32_CPU_REASON = ("tf32: TensorFloat-32 is a math mode of NVIDIA Ampere+ GPUs; a CPU runs fp32 matmuls and "
                   "convolutions in IEEE fp32, so this cell would repeat the fp32 cell")
TF32_TPU_REASON = ("tf32: TPUs have no TensorFloat-32. With TF32 enabled (TensorFlow's default) TensorFlow lowers fp32 "
                   "matmuls/convolutions with XLA precision DEFAULT, which a TPU runs as one bfloat16 pass (8-bit "
                   "mantissa, not TF32's 10): that is what the bf16 variant measures; the fp32 cell uses HIGHEST")


def precision_record(tf: Any, prepared: dict[str, Any]) -> dict[str, Any]:
    """``runtime.precision``: the settings applied when the cell was prepared, plus the
    TF32 flag read now (after the timed loop), with a warning if they differ."""
    rec = dict(prepared)
    live = bool(tf.config.experimental.tensor_float_32_execution_enabled())
    if live != rec.get("tensor_float_32_execution"):
        rec["warning"] = (f"TF32 execution was {rec.get('tensor_float_32_execution')} when the cell was prepared "
                          f"but is {live} after it: something changed it while the cell ran")
    rec["tensor_float_32_execution_after"] = live
    return rec


def cross_device_ops_name(strategy: Any) -> str | None:
    """Class name of a MirroredStrategy's cross-device all-reduce (e.g.
    ``ReductionToOneDevice``, ``NcclAllReduce``), or None. TensorFlow has no public
    accessor for the implementation it picked, so this one function reads the
    strategy extension's ``_cross_device_ops`` (guarded: a TensorFlow without it gives
    None, never an error)."""
    ops = getattr(getattr(strategy, "extended", None), "_cross_device_ops", None)
    return type(ops).__name__ if ops is not None else None


def variant_fp32_math(variant: Any) -> str:
    """The variant's ``fp32_math`` ("ieee" unless it says otherwise), validated."""
    value = getattr(variant, "fp32_math", "ieee")
    if value not in FP32_MATH_VALUES:
        raise ValueError(f"variant {getattr(variant, 'name', variant)!r}: fp32_math must be one of "
                         f"{', '.join(FP32_MATH_VALUES)}, got {value!r}")
    return value


def place_per_replica(tf: Any, strategy: Any, array: Any) -> Any:
    """Split ``array`` (numpy, the global batch) evenly over the strategy's replicas and
    create each part *on its replica's device* (``strategy.extended.worker_devices``),
    as TensorFlow documents for ``experimental_distribute_values_from_function``. That
    function itself places nothing: a bare ``tf.constant`` lands on the default device
    (GPU:0 or the host), and every step would then copy the other replicas' inputs
    inside the timed region."""
    n = int(strategy.num_replicas_in_sync)
    devices = list(strategy.extended.worker_devices)
    if len(devices) != n:
        raise ValueError(f"{n} replicas but {len(devices)} worker devices: {devices}")
    per = array.shape[0] // n
    parts = []
    for i, device in enumerate(devices):
        with tf.device(device):  # TensorFlow's documented pattern (also for TPUStrategy)
            parts.append(tf.constant(array[i * per:(i + 1) * per]))
    return strategy.experimental_distribute_values_from_function(lambda ctx: parts[ctx.replica_id_in_sync_group])


def keras_precision(model: Any) -> dict[str, Any]:
    """The Keras dtype policies of the built model (after the variant) and the global one."""
    out: dict[str, Any] = {}
    try:
        import keras

        out["keras_global_dtype_policy"] = keras.mixed_precision.global_policy().name
    except Exception:  # noqa: BLE001
        out["keras_global_dtype_policy"] = None
    policy = getattr(model, "dtype_policy", None)
    out["keras_dtype_policy"] = getattr(policy, "name", None)
    layers = getattr(model, "layers", None) or []
    out["keras_layer_dtype_policies"] = sorted({getattr(getattr(layer, "dtype_policy", None), "name", "?")
                                                for layer in layers}) or None
    if policy is None:
        out["keras_dtype_policy_note"] = f"{type(model).__name__} is not a Keras model (no dtype policy)"
    return out


def xla_dot_precision(fn: Any) -> dict[str, Any]:
    """Operand precision of the dot/convolution instructions in the HLO of an XLA
    (``jit_compile``) step: what the TF32 flag actually did to the compiled step."""
    try:
        hlo = fn.experimental_get_compiler_ir()(stage="hlo")
    except Exception as e:  # noqa: BLE001 - evidence is optional, the reason is kept
        return {"error": f"{type(e).__name__}: {e}"[:300]}
    ops = [line for line in hlo.splitlines() if " dot(" in line or " convolution(" in line]
    highest = sum(1 for line in ops if "operand_precision={highest,highest}" in line)
    return {"dot_and_convolution_ops": len(ops), "operand_precision_highest": highest,
            "operand_precision_default": len(ops) - highest, "source": "tf.function.experimental_get_compiler_ir (HLO)"}


def _keras_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("keras")
    except Exception:  # noqa: BLE001
        return None
