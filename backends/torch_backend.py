"""PyTorch backend: devices ``cpu`` and ``cuda[:N]``.

* Inference step: ``model(*inputs)`` under ``torch.inference_mode()`` in eval mode.
  A variant that casts the weights once (``fp16``/``bf16``: ``cast_once_dtype``) gets
  its floating inputs cast once too, before timing, and runs without autocast.
* Training step: ``zero_grad(set_to_none=True)``, forward (under the variant's
  autocast), cross-entropy loss, ``backward()``, ``AdamW.step()`` in train mode.
* Inputs are generated (seeded) and moved to the device *before* timing; the timed
  region holds only the step.
* float32 math: ``prepare`` makes float32 matmuls and convolutions strict IEEE fp32
  (``variant.fp32_math == "ieee"``: cuBLAS, cuDNN and oneDNN; PyTorch's default runs
  cuDNN convolutions in TF32) or allows TF32 (``"tf32"``), and the step records the
  flags in force under ``runtime.precision`` (see
  :mod:`harness.core.frameworks.torch_precision`).
* Post-measurement capabilities (:class:`harness.api.Backend`): ``count_flops``
  (``FlopCounterMode``, :func:`harness.core.flops.count_torch_step`), ``model_stats``
  and ``quality_logits`` (the quality track, :mod:`harness.core.quality`).
* CUDA: every timed step gets its own pair of CUDA events, recorded back to back
  without a host sync and read after the loop (:class:`CudaEventClock`, a
  :class:`harness.core.timing.DeviceEventClock`), so samples are per-step device times;
  device peak memory is ``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats`` (bytes held by tensors; the caching allocator's
  reserved-but-free blocks are not counted, ``max_memory_reserved`` is stored beside it).
"""

from __future__ import annotations

import contextlib
import copy
import platform
from typing import Any, Callable, ClassVar, Mapping, Sequence

from harness.api import Backend, Clock, DeviceInfo, SkipCell, Step, Variant, Workload
from harness.core.timing import DeviceEventClock


class CudaEventClock(DeviceEventClock):
    """Device-side timing with CUDA events on the current stream (seconds).

    ``mark`` records an event without blocking the host; ``wait`` blocks on one event
    (every earlier event of the stream has then completed too); ``seconds_between``
    is ``Event.elapsed_time`` (milliseconds, ~0.5 us resolution) / 1e3."""

    name = "cuda_event"

    def __init__(self, torch: Any, device: Any) -> None:
        self.torch = torch
        self.device = device

    def mark(self) -> Any:
        ev = self.torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev

    def wait(self, mark: Any) -> None:
        mark.synchronize()

    def seconds_between(self, first: Any, second: Any) -> float:
        return float(first.elapsed_time(second)) / 1e3


class TorchStep(Step):
    def __init__(
        self,
        torch: Any,
        device: Any,
        fn: Callable[[], Any],
        context: Callable[[], contextlib.AbstractContextManager[Any]],
        params: int,
        model: Any = None,
        inputs: Any = None,
        labels: Any = None,
        mode: str = "inference",
        forward_context: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
        runtime: dict[str, Any] | None = None,
    ) -> None:
        self.torch = torch
        self.device = device
        self.model = model
        self.inputs = inputs
        self.labels = labels
        self.mode = mode
        self._fn = fn
        self._context = context
        self.params = params
        self._is_cuda = device.type == "cuda"
        # what the step's forward pass runs under (the variant's autocast in training,
        # nothing for a cast-once or fp32 model): the FLOP counter re-runs it the same way
        self.forward_context = forward_context
        self._runtime = dict(runtime or {})
        # the training loss of the step's outputs (the FLOP counter re-runs it the same way)
        self.loss_fn: Callable[[Any], Any] | None = None

    def run(self, n: int) -> None:
        fn = self._fn
        with self._context():
            for _ in range(n):
                fn()

    def sync(self) -> None:
        if self._is_cuda:
            self.torch.cuda.synchronize(self.device)

    def device_clock(self) -> Clock | None:
        return CudaEventClock(self.torch, self.device) if self._is_cuda else None

    def reset_device_peak_memory(self) -> None:
        if self._is_cuda:
            self.torch.cuda.synchronize(self.device)
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def device_peak_memory(self) -> tuple[int | None, str]:
        if not self._is_cuda:
            return None, "cpu device: tensors live in host memory, see peak_host_mem_bytes"
        self.torch.cuda.synchronize(self.device)
        return int(self.torch.cuda.max_memory_allocated(self.device)), "torch.cuda.max_memory_allocated"

    def extra_metrics(self) -> dict[str, Any]:
        if not self._is_cuda:
            return {}
        return {"peak_device_mem_reserved_bytes": int(self.torch.cuda.max_memory_reserved(self.device))}

    def runtime_info(self) -> dict[str, Any]:
        """``precision_method`` (how a low-precision variant runs) and ``precision``
        (the float32 matmul/convolution flags this cell ran with), for ``runtime``."""
        return dict(self._runtime)


class TorchGenerateStep(TorchStep):
    """One ``run(1)`` = one generation request; every request's raw token times are kept
    in ``requests`` (see :mod:`harness.core.generation`)."""

    def __init__(self, torch: Any, device: Any, lm: Any, input_ids: Any, gen_len: int,
                 forward_ctx: Callable[[], contextlib.AbstractContextManager[Any]], params: int,
                 runtime: dict[str, Any]) -> None:
        from harness.core.frameworks.torch_generate import make_request

        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
        self._request = make_request(lm, input_ids, gen_len, sync)
        self.requests: list[dict[str, Any]] = []
        self.last_cache: Any = None
        self.gen_len = gen_len

        def fn() -> None:
            with forward_ctx():
                r = self._request()
            self.last_cache = r.pop("cache")
            r.pop("last_token")
            self.requests.append(r)

        super().__init__(torch, device, fn, contextlib.nullcontext, params, model=lm, inputs=[input_ids],
                         mode="generate", forward_context=forward_ctx, runtime=runtime)

    def count_request_flops(self) -> dict[str, int]:
        """FLOPs of one request, prefill and decode apart (for the FLOP analysis)."""
        from harness.core.frameworks.torch_generate import count_request_flops

        with self.forward_context():
            return count_request_flops(self.model, self.inputs[0], self.gen_len)

    def kv_cache_measured_bytes(self) -> int | None:
        from harness.core.frameworks.torch_generate import cache_nbytes

        return cache_nbytes(self.last_cache)


def _train_fn(torch: Any, model: Any, inputs: list[Any], labels: Any, variant: Variant,
              device: str, workload: Workload | None = None) -> Callable[[], Any]:
    """One training step: zero_grad, forward (under the variant's autocast), the
    workload's loss (:meth:`harness.api.Workload.loss`; cross-entropy by default),
    backward, AdamW step."""
    import torch.nn.functional as F

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train() -> Any:
        opt.zero_grad(set_to_none=True)
        with variant.autocast("torch", device):
            out = model(*inputs)
        loss = training_loss(F, workload, out, labels, inputs)
        loss.backward()
        opt.step()
        return loss

    return train


def _loss_fn(workload: Workload, labels: Any, inputs: Sequence[Any]) -> Callable[[Any], Any]:
    import torch.nn.functional as F

    return lambda out: training_loss(F, workload, out, labels, inputs)


def training_loss(F: Any, workload: Workload | None, out: Any, labels: Any, inputs: Sequence[Any]) -> Any:
    """The workload's loss (:meth:`harness.api.Workload.loss`), else cross-entropy of the
    logits ``out`` against ``labels``."""
    loss = workload.loss("torch", out, labels, inputs) if workload is not None else None
    return F.cross_entropy(out.float(), labels) if loss is None else loss


def cast_once_dtype(variant: Variant, mode: str) -> str | None:
    """The dtype ``variant`` cast the weights to once for this mode (``fp16``/``bf16``
    inference: :meth:`harness.api.Variant.cast_once_dtype`), or None (the step runs
    under ``variant.autocast``)."""
    return variant.cast_once_dtype("torch", mode)


def apply_fp32_math(torch: Any, variant: Variant, mode: str) -> dict[str, Any]:
    """Set float32 matmul/convolution precision for ``variant.fp32_math`` ("ieee":
    strict IEEE fp32 on cuBLAS, cuDNN and oneDNN; "tf32": TF32 allowed) and return the
    step's ``runtime`` record: ``precision_method`` when the variant states one and
    ``precision`` = the flags now in force."""
    from harness.core.frameworks.torch_precision import fp32_math_settings, set_fp32_math

    fp32_math = str(variant.fp32_math)
    set_fp32_math(torch, fp32_math)
    runtime: dict[str, Any] = {"precision": {"fp32_math": fp32_math, **fp32_math_settings(torch)}}
    method = variant.precision_method("torch", mode)
    if method is not None:
        runtime["precision_method"] = method
    return runtime


def _torch_build() -> tuple[str, str | None] | None:
    """(``torch.__version__``, ``torch.version.cuda``) read from the installed
    ``torch/version.py`` without importing torch (it is a generated file of plain
    assignments); None when it cannot be read."""
    import ast
    import importlib.util
    import os

    try:
        found = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if found is None or not found.origin:
        return None
    try:
        with open(os.path.join(os.path.dirname(found.origin), "version.py"), encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return None
    values: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, value = node.target.id, node.value
        else:
            continue
        try:
            values[name] = ast.literal_eval(value)
        except ValueError:
            continue
    version, cuda = values.get("__version__"), values.get("cuda", 0)
    if not isinstance(version, str) or not (cuda is None or isinstance(cuda, str)):
        return None
    return version, cuda


def _no_nvidia_driver() -> bool:
    """True on Linux when no NVIDIA kernel driver is loaded (no
    ``/proc/driver/nvidia/version`` and no ``/dev/nvidia*`` device node)."""
    import glob
    import os
    import sys

    if not sys.platform.startswith("linux"):
        return False
    return not os.path.exists("/proc/driver/nvidia/version") and not glob.glob("/dev/nvidia*")


class TorchBackend(Backend):
    """PyTorch eager execution on CPU or CUDA."""

    name: ClassVar[str] = "torch"
    description: ClassVar[str] = "PyTorch (eager); devices cpu, cuda[:N]"
    framework_packages: ClassVar[tuple[str, ...]] = ("torch",)
    flop_counter: ClassVar[str | None] = "FlopCounterMode"

    @classmethod
    def precheck(cls, spec: Any) -> str | None:
        """The worker's skip reason for a device this machine cannot have, decided without
        importing torch (:meth:`harness.api.Backend.precheck`): ``tpu``, an unknown
        device, ``cuda`` with a torch built without CUDA (``torch/version.py``'s ``cuda``
        is None) or, on Linux, with no NVIDIA driver at all (no
        ``/proc/driver/nvidia/version`` and no ``/dev/nvidia*``: ``device_count()`` is 0).
        Texts as :meth:`resolve_device` gives them; None when the worker must look."""
        device = str(spec.device)
        if device == "cpu":
            return None
        if device.startswith("tpu"):
            return "the torch backend does not drive TPUs; use -b tensorflow -d tpu"
        if not device.startswith("cuda"):
            return f"unknown device {device!r} for the torch backend"
        build = _torch_build()
        if build is None:
            return None
        version, cuda = build
        if cuda is None:
            return f"{device} requested but torch {version} was built without CUDA support"
        if _no_nvidia_driver():
            return (f"{device} requested but no CUDA device visible (torch.cuda.device_count() == 0; check the "
                    "driver and CUDA_VISIBLE_DEVICES)")
        return None

    def setup(self) -> None:
        import torch

        if self.config.threads is not None:
            torch.set_num_threads(self.config.threads)

    # ------------------------------------------------------------------ devices
    def list_devices(self) -> list[DeviceInfo]:
        import torch

        out = [
            DeviceInfo(
                "cpu",
                True,
                f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
                f"ISA level {torch.backends.cpu.get_cpu_capability()}",
            )
        ]
        reason = self._cuda_unavailable_reason(torch)
        if reason:
            out.append(DeviceInfo("cuda", False, reason))
        else:
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                out.append(DeviceInfo(f"cuda:{i}", True, f"{p.name}, {p.total_memory / 2**30:.1f} GiB, sm_{p.major}{p.minor}"))
        out.append(DeviceInfo("tpu", False, "the torch backend does not drive TPUs (TPUs run with -b tensorflow)"))
        return out

    @staticmethod
    def _cuda_unavailable_reason(torch: Any) -> str:
        if not torch.backends.cuda.is_built() or torch.version.cuda is None:
            return f"torch {torch.__version__} was built without CUDA support"
        if torch.cuda.device_count() == 0:
            return "no CUDA device visible (torch.cuda.device_count() == 0; check the driver and CUDA_VISIBLE_DEVICES)"
        return ""

    def resolve_device(self, device: str) -> Any:
        """A ``torch.device`` for ``device``, or :class:`SkipCell` with the reason."""
        import torch

        if device == "cpu":
            return torch.device("cpu")
        if device.startswith("cuda"):
            reason = self._cuda_unavailable_reason(torch)
            if reason:
                raise SkipCell(f"{device} requested but {reason}")
            idx = int(device.split(":")[1]) if ":" in device else 0
            count = torch.cuda.device_count()
            if idx >= count:
                raise SkipCell(f"{device} requested but only {count} CUDA device(s) are visible")
            return torch.device("cuda", idx)
        if device.startswith("tpu"):
            raise SkipCell("the torch backend does not drive TPUs; use -b tensorflow -d tpu")
        raise SkipCell(f"unknown device {device!r} for the torch backend")

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
        import torch

        dev = self.resolve_device(device)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        # inputs first: a custom model's factory makes the model and a batch of this size together
        arrays, labels_np = workload.make_inputs(batch_size, seed=seed)
        model = workload.build("torch").to(dev)
        model = variant.apply("torch", model, device=dev, mode=mode, workload=workload)
        runtime = apply_fp32_math(torch, variant, mode)  # after apply: a skipped cell changes nothing
        inputs = [torch.from_numpy(a).to(dev) for a in arrays]
        labels = torch.from_numpy(labels_np).to(dev)
        params = sum(p.numel() for p in model.parameters())

        if mode == "inference":
            model.eval()
            cast = cast_once_dtype(variant, mode)
            if cast is not None:  # weights were cast once by the variant: inputs once too, no autocast
                dtype = getattr(torch, cast)
                inputs = [x.to(dtype) if x.is_floating_point() else x for x in inputs]

                def forward_ctx() -> contextlib.AbstractContextManager[Any]:
                    return contextlib.nullcontext()
            else:
                def forward_ctx() -> contextlib.AbstractContextManager[Any]:
                    return variant.autocast("torch", device)

            def infer() -> Any:
                return model(*inputs)

            def ctx() -> contextlib.AbstractContextManager[Any]:
                stack = contextlib.ExitStack()
                stack.enter_context(torch.inference_mode())
                stack.enter_context(forward_ctx())
                return stack

            fn: Callable[[], Any] = infer
        else:
            model.train()
            fn = _train_fn(torch, model, inputs, labels, variant, device, workload)

            def forward_ctx() -> contextlib.AbstractContextManager[Any]:
                return variant.autocast("torch", device)

            def ctx() -> contextlib.AbstractContextManager[Any]:
                return contextlib.nullcontext()

        step = TorchStep(torch, dev, fn, ctx, params, model=model, inputs=inputs, labels=labels, mode=mode,
                         forward_context=forward_ctx, runtime=runtime)
        step.loss_fn = _loss_fn(workload, labels, inputs)
        return step

    def prepare_generate(
        self,
        workload: Workload,
        variant: Variant,
        device: str,
        batch_size: int,
        prompt_len: int,
        gen_len: int,
        seed: int = 0,
    ) -> Step:
        """Greedy generation with the KV cache (:mod:`harness.core.frameworks.torch_generate`):
        the workload's model with the variant applied as for inference, random prompt
        token ids from its vocabulary."""
        import numpy as np
        import torch

        if getattr(variant, "replaces_model", False):  # before building anything
            raise SkipCell(f"variant {variant.name!r} replaces the model (Variant.replaces_model); generate cells need "
                           "the causal LM itself (its KV-cache interface): run this variant in inference mode")
        dev = self.resolve_device(device)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        built = workload.build("torch").to(dev)
        model = variant.apply("torch", built, device=dev, mode="inference", workload=workload)
        if model is not built:
            raise SkipCell(f"variant {variant.name!r} replaces the model ({type(model).__name__}); generate cells need "
                           "the causal LM itself (its KV-cache interface): run this variant in inference mode")
        runtime = apply_fp32_math(torch, variant, "inference")
        lm = getattr(built, "model", built)  # the zoo / custom wrapper holds the language model
        config = getattr(lm, "config", None)
        vocab = getattr(config, "vocab_size", None)
        if not callable(getattr(lm, "forward", None)) or not vocab:
            raise SkipCell(f"workload {workload.name!r}: generate needs a causal LM with a config.vocab_size that "
                           "takes input_ids and returns logits and a KV cache (the Hugging Face interface)")
        lm.eval()
        rng = np.random.default_rng(seed)
        ids = torch.from_numpy(rng.integers(0, int(vocab), size=(batch_size, prompt_len), dtype=np.int64)).to(dev)
        cast = cast_once_dtype(variant, "inference")

        def forward_ctx() -> contextlib.AbstractContextManager[Any]:
            return contextlib.nullcontext() if cast is not None else variant.autocast("torch", device)

        params = sum(p.numel() for p in built.parameters())
        return TorchGenerateStep(torch, dev, lm, ids, gen_len, forward_ctx, params, runtime)

    data_parallel: ClassVar[str | None] = "torchrun"
    data_parallel_description: ClassVar[str] = "torchrun + DistributedDataParallel (gloo on cpu, NCCL on cuda)"

    def prepare_data_parallel(
        self,
        workload: Workload,
        variant: Variant,
        device: str,
        batch_size: int,
        world_size: int,
        seed: int = 0,
    ) -> Step:
        """One worker of a ``DistributedDataParallel`` training step. Runs inside a
        torchrun-launched process whose process group is already initialised (gloo on
        CPU, NCCL on CUDA); ``cuda`` means the GPU of this worker's ``LOCAL_RANK``.
        Every worker draws its own batch (seed + rank); DDP broadcasts rank 0's initial
        weights and all-reduces gradients in ``backward()``."""
        import os

        import torch
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("prepare_data_parallel needs an initialised process group (run it through torchrun)")
        if dist.get_world_size() != world_size:
            raise RuntimeError(f"process group has {dist.get_world_size()} workers, the cell asks for {world_size}")
        rank = dist.get_rank()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device.startswith("cuda"):
            dev = self.resolve_device(f"cuda:{local_rank}")
            torch.cuda.set_device(dev)
        else:
            dev = self.resolve_device(device)
        torch.manual_seed(seed)
        model = workload.build("torch").to(dev)
        model = variant.apply("torch", model, device=dev, mode="training", workload=workload)
        runtime = apply_fp32_math(torch, variant, "training")
        params = sum(p.numel() for p in model.parameters())
        model.train()
        ddp = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        arrays, labels_np = workload.make_inputs(batch_size, seed=seed + 1 + rank)
        inputs = [torch.from_numpy(a).to(dev) for a in arrays]
        labels = torch.from_numpy(labels_np).to(dev)
        fn = _train_fn(torch, ddp, inputs, labels, variant, device, workload)
        step = TorchStep(torch, dev, fn, contextlib.nullcontext, params, model=ddp, inputs=inputs, labels=labels,
                         mode="training", forward_context=lambda: variant.autocast("torch", device),
                         runtime=runtime)
        step.loss_fn = _loss_fn(workload, labels, inputs)
        return step

    # ------------------------------------------------------------------ analyses
    def count_flops(self, step: Step, variant: Variant, device: str) -> dict[str, Any]:
        """FLOPs and bytes of one step with ``FlopCounterMode``
        (:func:`harness.core.flops.count_torch_step`)."""
        from harness.core import flops

        return flops.count_torch_step(step, variant, device)

    def model_stats(self, model: Any) -> dict[str, Any]:
        """Parameter counts and ``torch.save(state_dict)`` size (or the model's own
        ``harness_model_stats``, e.g. an ONNX Runtime session)."""
        from harness.core.frameworks import torch_utils

        return torch_utils.model_stats(model)

    def quality_logits(self, workload: Workload, variant: Variant, reference_state: Mapping[str, Any],
                       inputs: Sequence[Any], context: Mapping[str, Any]) -> tuple[Any, Any]:
        """The quality track on the CPU: the reference fp32 model, and the variant
        applied to a copy of it, evaluated as the speed step runs it (weights cast once
        for fp16/bf16 inference: inputs cast the same way, no autocast)."""
        import torch

        from harness.core.frameworks import torch_utils

        teacher = torch_utils.load_numpy_state(workload.build("torch"), reference_state).eval()
        fp32_logits = torch_utils.predict(teacher, inputs)
        applied = variant.apply("torch", copy.deepcopy(teacher), device=torch.device("cpu"), **context)
        cast = variant.cast_once_dtype("torch", "inference")
        if cast is not None:
            logits = torch_utils.predict(applied, inputs, input_dtype=cast)
        else:
            logits = torch_utils.predict(applied, inputs, context=lambda: variant.autocast("torch", "cpu"))
        return fp32_logits, logits

    def runtime_info(self) -> dict[str, Any]:
        import torch

        info: dict[str, Any] = {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkldnn": torch.backends.mkldnn.is_available(),
            "cuda_build": torch.version.cuda,
        }
        if torch.cuda.is_available():
            i = torch.cuda.current_device()
            info["cuda_device"] = torch.cuda.get_device_name(i)
            info["cudnn"] = torch.backends.cudnn.version()
        return info
