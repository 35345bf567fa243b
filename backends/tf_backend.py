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
  (NCHW -> NHWC images, see :mod:`workloads._keras_models`) and placed on the device
  with ``tf.identity`` under ``tf.device`` *before* timing. Nothing but the function
  call runs in the timed region; no host<->device copies (the outputs stay on the device).

Synchronisation (``Step.sync``): TensorFlow executes CPU work synchronously (eager
execution is synchronous by default, and a ``tf.function`` call returns when its CPU
kernels are done), so on CPU the host clock around the calls is exact and ``sync`` is a
no-op. GPU kernels and TPU programs run asynchronously to the host: there ``sync`` is
``tf.test.experimental.sync_devices()`` (TensorFlow's documented benchmark barrier: it
blocks until every pending op on every device finished) and the clock is the host
clock bracketed by that barrier, so queued device work is fully counted. No values are
copied to the host to force completion.

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
from typing import Any, Callable, ClassVar, Protocol

from harness.api import Backend, BackendConfig, Clock, DeviceInfo, SkipCell, Step, Variant, Workload

LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"


def import_tf() -> Any:
    """Import TensorFlow with its C++ INFO/WARNING logs quieted (``TF_CPP_MIN_LOG_LEVEL=2``
    unless the user set it). Called only in processes that use TensorFlow."""
    os.environ.setdefault(LOG_LEVEL_ENV, "2")
    import tensorflow as tf

    return tf


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


class SyncedHostClock(Clock):
    """Host clock bracketed by a device barrier (seconds): ``sync`` before the start and
    before reading the end, so asynchronously queued device work is counted."""

    name = "perf_counter+tf_sync_devices"

    def __init__(self, sync: Callable[[], None], now: Callable[[], float] = time.perf_counter) -> None:
        self._sync = sync
        self._now = now

    def start(self) -> float:
        self._sync()
        return self._now()

    def elapsed(self, token: Any) -> float:
        self._sync()
        return self._now() - token


class TensorFlowStep(Step):
    """A prepared TensorFlow step: ``fn`` is the compiled ``tf.function`` (no arguments;
    inputs are captured device tensors)."""

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

    def run(self, n: int) -> None:
        fn = self._fn
        with self._context():
            for _ in range(n):
                fn()

    def sync(self) -> None:
        if self._async:
            self.tf.test.experimental.sync_devices()

    def device_clock(self) -> Clock | None:
        return SyncedHostClock(self.sync) if self._async else None

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
        return dict(self._extra)


# --------------------------------------------------------------------------- backend


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

    @property
    def tf(self) -> Any:
        if self._tf is None:
            self._tf = import_tf()
        return self._tf

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
        dev, asynchronous = self.resolve_device(device)
        strategy = self._strategy if dev == "tpu" else None
        replicas = int(strategy.num_replicas_in_sync) if strategy is not None else 1
        if batch_size % replicas:
            raise SkipCell(f"batch size {batch_size} is not divisible by the {replicas} TPU replicas")
        return self._build(workload, variant, device, mode, batch_size, seed, dev, asynchronous, strategy)

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
        if device == "cpu":
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
        elif device.startswith("cuda"):
            reason = self._cuda_unavailable_reason()
            if reason:
                raise SkipCell(f"{device} requested but {reason}")
            gpus = tf.config.list_logical_devices("GPU")
            if len(gpus) < world_size:
                raise SkipCell(f"{world_size} replicas requested but TensorFlow sees only {len(gpus)} GPU(s)")
            devices, asynchronous = [d.name for d in gpus[:world_size]], True
        else:
            raise SkipCell(f"{device}: data-parallel cells run on cpu or cuda; a TPU already runs as one "
                           "TPUStrategy over its cores (use -d tpu without --world-size)")
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        self._strategy = strategy
        step = self._build(workload, variant, device, "training", batch_size * world_size, seed, "mirrored",
                           asynchronous, strategy)
        step._extra.update({
            "distribution_strategy": "MirroredStrategy",
            "replica_devices": devices,
            "cross_device_ops": type(strategy.extended._cross_device_ops).__name__
            if getattr(strategy.extended, "_cross_device_ops", None) is not None else None,
        })
        return step

    def _build(self, workload: Workload, variant: Variant, device: str, mode: str, batch_size: int, seed: int,
               dev: str, asynchronous: bool, strategy: Any) -> Step:
        """Build the model (under ``strategy`` when given; ``batch_size`` is then the
        global batch, split over the replicas), place the inputs and trace the step."""
        tf = self.tf
        from workloads._keras_models import keras_inputs, trainable_params

        jit = bool(getattr(variant, "tf_jit_compile", False))
        replicas = int(strategy.num_replicas_in_sync) if strategy is not None else 1

        scope = strategy.scope() if strategy is not None else tf.device(dev)
        with scope:
            model = workload.build("tensorflow")
            model = variant.apply("tensorflow", model, device=dev, mode=mode, workload=workload,
                                  strategy=strategy)
            arrays, labels_np = workload.make_inputs(batch_size, seed=seed)
            arrays = keras_inputs(workload, arrays)
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
            fn = self._single_device_fn(tf, model, opt, inputs, labels, mode, dev, jit)
            memory_device: str | None = dev.lstrip("/")
        else:
            inputs, labels, fn = self._strategy_fn(tf, strategy, model, opt, arrays, labels_np, mode, jit)
            memory_device = None

        def ctx() -> contextlib.AbstractContextManager[Any]:
            return variant.autocast("tensorflow", device)

        # first call: trace (+ XLA compile) + one execution, kept out of the timing
        t0 = time.perf_counter()
        with ctx():
            fn()
        if asynchronous:
            tf.test.experimental.sync_devices()
        compile_s = time.perf_counter() - t0
        extra = {
            "compile_time_s": compile_s,
            "compile_method": "first tf.function call (trace + graph optimisation"
            + (" + XLA compile" if jit else "") + " + one step), outside the timed region",
            "xla_jit_compile": jit,
        }
        if strategy is not None and dev == "tpu":
            extra["tpu_replicas"] = replicas
        self._runtime_extra = {"device": dev, "xla_jit_compile": jit, "replicas": replicas}
        return TensorFlowStep(tf, fn, ctx, dev, memory_device, asynchronous, params, model,
                              inputs, labels, mode, extra)

    @staticmethod
    def _single_device_fn(tf: Any, model: Any, opt: Any, inputs: list[Any], labels: Any,
                          mode: str, dev: str, jit: bool) -> Callable[[], Any]:
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
                    loss = loss_fn(labels, tf.cast(logits, tf.float32))
                grads = tape.gradient(loss, model.trainable_variables)
                opt.apply_gradients(zip(grads, model.trainable_variables))
                return loss

        return train

    @staticmethod
    def _strategy_fn(tf: Any, strategy: Any, model: Any, opt: Any, arrays: list[Any], labels_np: Any,
                     mode: str, jit: bool) -> tuple[Any, Any, Callable[[], Any]]:
        """The step under a distribution strategy (TPUStrategy): the global batch is split
        evenly over the replicas (placed on them before timing); the training loss is the
        mean over the global batch, gradients are all-reduced by the optimizer."""
        n = int(strategy.num_replicas_in_sync)
        global_bs = int(labels_np.shape[0])

        def shard(a: Any) -> Any:
            per = a.shape[0] // n
            return strategy.experimental_distribute_values_from_function(
                lambda ctx: tf.constant(a[ctx.replica_id_in_sync_group * per:(ctx.replica_id_in_sync_group + 1) * per])
            )

        inputs = [shard(a) for a in arrays]
        labels = shard(labels_np)
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
        return info


def _keras_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("keras")
    except Exception:  # noqa: BLE001
        return None
