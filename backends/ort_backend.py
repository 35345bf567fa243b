"""ONNX Runtime backend (``-b onnxruntime``): any workload with a torch implementation,
exported to ONNX, or a user's own graph (``-w onnx:model.onnx``), run by an
``onnxruntime.InferenceSession``. Devices ``cpu``
(``CPUExecutionProvider``) and ``cuda[:N]`` (``CUDAExecutionProvider``, only where
``onnxruntime.get_available_providers()`` lists it). Inference only.

* Build: ``workload.build("torch")`` on the CPU (eval mode), exported with the harness's
  ONNX exporter (:func:`harness.core.frameworks.onnx_export.export_onnx`: TorchScript
  exporter, opset :data:`~harness.core.frameworks.onnx_export.OPSET`, dynamic batch axis)
  and cached under the cache kind ``onnx`` (key: the model's structure and weights,
  the example batch, the opset, the library versions and the exporter's source;
  ``metrics.onnx_export_cache`` is ``hit``/``miss``/``off``; an int8 variant adds its own ``export_cache`` for the quantized graph).
* Variants: the variant gets the fp32 ONNX graph (``bytes``) through
  ``Variant.apply("onnxruntime", graph, ...)`` and returns the graph to run (``fp32``:
  unchanged; ``int8-dynamic``/``int8-static``: ONNX Runtime's quantizer, the same code
  the torch int8 variants use). Variants without ``apply_onnxruntime`` are skipped.
* Step: inputs (seeded, from ``workload.make_inputs``) are placed once, before timing,
  as ``OrtValue``\\ s on the device and bound with IO binding, and the output is bound to
  a pre-allocated ``OrtValue``; the timed step is ``session.run_with_iobinding``
  only (no host allocation per step beyond what ORT does inside).
* Threads: ``--threads N`` sets ``intra_op_num_threads`` (and torch's, for the export
  and the FLOP counter); ``inter_op_num_threads`` is 1 with sequential execution (the
  inter-op pool is only used by the parallel executor). Without ``--threads`` ORT's
  default pool (one thread per physical core) is used and recorded as ``None``.
* FLOPs: ``FlopCounterMode`` on the torch model the graph was exported from
  (:func:`harness.core.flops.count_torch_step`); the step's model exposes it as
  ``eager_module``, so the ``flops`` cache keys it as for a torch cell.
* Model stats: ``params`` is the torch model's parameter count (tied weights once), the
  number every backend reports for the architecture; ``params_exported`` counts the
  initializers of the graph that runs (:func:`initializer_params`), which differ where
  the exporter folds constants (BatchNorm into convolutions, constant embeddings) or
  the variant quantized; ``model_size_bytes`` is the size of the ``.onnx`` file.

A workload that carries its own graph (``-w onnx:model.onnx``, workloads/onnx_model.py;
any workload with an ``onnx_graph() -> bytes`` method) runs that graph as is: no torch
model, no export; its ``make_inputs`` gives the batch (and skips a batch the graph cannot
take); the int8 variants quantize the user's graph (calibrated, for ``int8-static``, on
batches of the cell's batch size); ``params`` are the graph's initializers
(:func:`initializer_params`) and FLOPs are unavailable with the reason (no torch model
for the counter, no ONNX FLOP counter).

``onnxruntime`` starts a thread when imported, so it is imported inside the cell
(:meth:`OrtBackend.setup` and later), never at module level and never by the zygote
(``framework_packages`` names torch and onnx only; docs/launch.md).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from harness.api import Backend, DeviceInfo, SkipCell, Step, Variant, Workload

#: the variant every backend runs as the unmodified model (the suite's default)
BASELINE: str = "fp32"
CPU_PROVIDER: str = "CPUExecutionProvider"
CUDA_PROVIDER: str = "CUDAExecutionProvider"
#: why a workload's own ONNX graph (``-w onnx:``) has no FLOP count
OWN_GRAPH_NO_FLOPS: str = ("a user's ONNX graph has no torch model for FlopCounterMode, and the harness has no "
                           "ONNX FLOP counter or formula for it")


def _ort() -> Any:
    import onnxruntime as ort

    return ort


def supported_variants(backend: str = "onnxruntime") -> list[str]:
    """Registered variants with an ``apply_<backend>`` method (their classes are loaded,
    no framework is imported)."""
    from harness.core import registry

    out = []
    for name in registry.names("variant"):
        try:
            cls = registry.load("variant", name)
        except Exception:  # noqa: BLE001 - a broken plugin is not ours to report here
            continue
        if callable(getattr(cls, f"apply_{backend}", None)):
            out.append(name)
    return out


def initializer_params(model_bytes: bytes) -> dict[str, int]:
    """Parameters of an ONNX graph: elements of its float and integer initializers
    (quantization scales and zero points and scalars excluded), each weight once.

    ``params``: deduplicated by name and by content: two initializers whose values are
    the same multiset (the same bytes, or a transposed/reshaped copy such as the
    constant-folded ``MatMul`` copy of a tied embedding) count once. A tensor whose
    elements are all equal (zero biases, LayerNorm ones at initialisation) is never
    merged with another: equal values there are a coincidence of initialisation, not
    a shared weight. ``duplicates``: the elements left out; ``total``: all of them."""
    import hashlib

    import numpy as np
    import onnx
    from onnx import numpy_helper

    m = onnx.load_from_string(model_bytes)
    seen_names: set[str] = set()
    by_size: dict[tuple[str, int], list[Any]] = {}
    total = 0
    for init in m.graph.initializer:
        if init.name in seen_names or init.name.endswith(("_scale", "_zero_point")) or len(init.dims) == 0:
            continue
        seen_names.add(init.name)
        arr = numpy_helper.to_array(init)
        if arr.dtype.kind not in "fiu":
            continue
        total += int(arr.size)
        by_size.setdefault((arr.dtype.str, int(arr.size)), []).append(arr)
    duplicates = 0
    for (_, size), arrays in by_size.items():
        if len(arrays) < 2:
            continue
        digests: set[str] = set()
        for arr in arrays:
            flat = arr.reshape(-1)
            if flat.size and bool(np.all(flat == flat[0])):
                continue  # constant-valued: never a shared weight
            d = hashlib.sha256(np.sort(flat).tobytes()).hexdigest()
            if d in digests:
                duplicates += size
            digests.add(d)
    return {"params": total - duplicates, "duplicates": duplicates, "total": total}


def graph_opset(model_bytes: bytes) -> int | None:
    """The default-domain opset the ONNX graph declares."""
    import onnx

    m = onnx.load_from_string(model_bytes)
    for op in m.opset_import:
        if op.domain in ("", "ai.onnx"):
            return int(op.version)
    return None


class _ExportTag:
    """What the export cache key records as the 'variant' of a plain fp32 export by this
    backend (the variant is applied to the graph afterwards, so it is not part of it)."""

    name = "onnxruntime-backend-fp32-export"
    config = None


class ExportedModel:
    """The model an ONNX Runtime cell runs: the graph (``onnx_bytes``), the session, and
    the torch model it was exported from (``eager_module``, for the FLOP counter; None
    for a workload's own graph, whose unmodified graph is ``own_graph``)."""

    def __init__(self, onnx_bytes: bytes, session: Any, source: Any, fmt: str,
                 own_graph: bytes | None = None) -> None:
        self.onnx_bytes = onnx_bytes
        self.session = session
        self.source = source
        self.fmt = fmt
        self.own_graph = own_graph

    @property
    def eager_module(self) -> Any:
        """The torch module the graph was exported from (same weights and FLOPs)."""
        return self.source


class OrtStep(Step):
    """``session.run_with_iobinding`` on pre-bound inputs and a pre-allocated output."""

    def __init__(self, session: Any, binding: Any, model: ExportedModel, params: int, torch_inputs: list[Any],
                 device: str, runtime: dict[str, Any], extra: dict[str, Any]) -> None:
        self._session = session
        self._binding = binding
        self._is_cuda = device.startswith("cuda")
        self.model = model
        self.params = params
        self.inputs = torch_inputs  # torch views of the host inputs, for the FLOP counter
        self.mode = "inference"
        self.device = device
        self._runtime = runtime
        self._extra = extra
        self.buffers: Any = None

    def forward_context(self) -> Any:
        """The FLOP counter runs the source torch model as is (no autocast)."""
        import contextlib

        return contextlib.nullcontext()

    def run(self, n: int) -> None:
        run, binding = self._session.run_with_iobinding, self._binding
        for _ in range(n):
            run(binding)

    def sync(self) -> None:
        if self._is_cuda:
            self._binding.synchronize_outputs()

    def runtime_info(self) -> dict[str, Any]:
        return dict(self._runtime)

    def extra_metrics(self) -> dict[str, Any]:
        return dict(self._extra)

    def close(self) -> None:
        self._binding = None
        self._session = None
        self.buffers = None


class OrtBackend(Backend):
    """ONNX Runtime inference of the workloads' torch models, exported to ONNX."""

    name: ClassVar[str] = "onnxruntime"
    description: ClassVar[str] = ("ONNX Runtime (models exported from torch, or your own file: -w onnx:model.onnx); "
                                  "devices cpu, cuda[:N] where the CUDA execution provider is installed; "
                                  "inference only")
    # onnxruntime is deliberately absent: the zygote imports these, and importing
    # onnxruntime starts a thread (docs/launch.md); is_installed checks it without import
    framework_packages: ClassVar[tuple[str, ...]] = ("torch", "onnx")
    #: the workloads' ``build_<builds_with>()`` model is what this backend exports
    builds_with: ClassVar[str | None] = "torch"
    flop_counter: ClassVar[str | None] = "FlopCounterMode (on the torch model the ONNX graph was exported from)"
    #: the graph's parameter count (used by ``-w onnx:`` workloads through the registry:
    #: built-in plugins do not import each other)
    graph_params = staticmethod(initializer_params)

    @classmethod
    def is_installed(cls) -> tuple[bool, str]:
        import importlib.util

        ok, why = super().is_installed()
        if ok and importlib.util.find_spec("onnxruntime") is None:
            return False, "python package 'onnxruntime' is not installed"
        return ok, why

    @classmethod
    def precheck(cls, spec: Any) -> str | None:
        """Training and TPU cells are skipped without starting a worker; CUDA needs the
        worker (whether the provider loads is only known after importing ORT)."""
        if getattr(spec, "mode", "inference") != "inference":
            return cls._training_reason()
        device = str(spec.device)
        if device == "cpu" or device.startswith("cuda"):
            return None
        return f"unknown device {device!r} for the onnxruntime backend (cpu, cuda[:N])"

    @staticmethod
    def _training_reason() -> str:
        return ("the onnxruntime backend runs inference only (an InferenceSession has no backward pass); "
                "use -b torch for training")

    def setup(self) -> None:
        import torch

        if self.config.threads is not None:
            torch.set_num_threads(self.config.threads)
        _ort()

    # ------------------------------------------------------------------ devices
    def list_devices(self) -> list[DeviceInfo]:
        ort = _ort()
        avail = ort.get_available_providers()
        out = [DeviceInfo("cpu", CPU_PROVIDER in avail, f"{CPU_PROVIDER}, onnxruntime {ort.__version__}")]
        if CUDA_PROVIDER in avail:
            out.append(DeviceInfo("cuda", True, f"{CUDA_PROVIDER}, onnxruntime {ort.__version__}"))
        else:
            out.append(DeviceInfo("cuda", False, self._no_cuda_reason(ort, "cuda")))
        out.append(DeviceInfo("tpu", False, "ONNX Runtime has no TPU execution provider"))
        return out

    @staticmethod
    def _no_cuda_reason(ort: Any, device: str) -> str:
        return (f"{device} requested but onnxruntime {ort.__version__} has no {CUDA_PROVIDER} "
                f"(available providers: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu")

    def resolve_device(self, device: str) -> Any:
        """``(providers, ORT device type, device id)`` for ``device``, or :class:`SkipCell`."""
        ort = _ort()
        if device == "cpu":
            return [CPU_PROVIDER], "cpu", 0
        if device.startswith("cuda"):
            if CUDA_PROVIDER not in ort.get_available_providers():
                raise SkipCell(self._no_cuda_reason(ort, device))
            idx = int(device.split(":")[1]) if ":" in device else 0
            return [(CUDA_PROVIDER, {"device_id": idx}), CPU_PROVIDER], "cuda", idx
        raise SkipCell(f"unknown device {device!r} for the onnxruntime backend (cpu, cuda[:N])")

    # ------------------------------------------------------------------ cells
    def _check_variant(self, variant: Variant) -> None:
        if variant.supports_backend(self.name):
            return
        ok = ", ".join(supported_variants(self.name)) or "none installed"
        raise SkipCell(f"variant {variant.name!r} is not supported on the onnxruntime backend "
                       f"(it runs variants with apply_onnxruntime: {ok})")

    def prepare(self, workload: Workload, variant: Variant, device: str, mode: str, batch_size: int,
                seed: int = 0) -> Step:
        if mode != "inference":
            raise SkipCell(self._training_reason())
        self._check_variant(variant)
        providers, dev_type, dev_id = self.resolve_device(device)
        import numpy as np

        own_graph = getattr(workload, "onnx_graph", None)
        extra: dict[str, Any] = {}
        ctx: dict[str, Any] = {}
        if callable(own_graph):  # a user's ONNX file: run it as is
            # inputs first: they skip a batch size the graph cannot take before any work
            arrays, _ = workload.make_inputs(batch_size, seed=seed)
            fp32 = bytes(own_graph())
            source = None
            if variant.name != BASELINE:  # calibration (int8-static) on batches the graph takes: the cell's size
                ctx["calibration"] = [workload.make_inputs(batch_size, seed=1000 + i)[0] for i in range(4)]
            exported_from = "none: the workload's own ONNX graph runs as is (no export)"
            flops_of = None
            self.flop_counter = "FLOP counting"  # the flops reason: there is no counter here, not a failed one
        else:
            import torch

            from harness.core.frameworks import onnx_export

            t0 = time.perf_counter()
            source = workload.build("torch").eval()
            fp32, cache_status, cache_reason = self._export(source, workload)
            extra.update({"onnx_export_cache": cache_status, "onnx_export_time_s": time.perf_counter() - t0})
            if cache_reason:
                extra["onnx_export_cache_reason"] = cache_reason
            arrays, _ = workload.make_inputs(batch_size, seed=seed)
            exported_from = (f"torch {torch.__version__} (torch.onnx TorchScript exporter, opset "
                             f"{onnx_export.OPSET}, dynamic batch axis)")
            flops_of = "the torch graph the ONNX model was exported from"
        graph = variant.apply(self.name, fp32, device=device, mode=mode, workload=workload, **ctx)
        if not isinstance(graph, (bytes, bytearray)):
            raise TypeError(f"variant {variant.name!r}: apply_onnxruntime must return the ONNX graph as bytes, "
                            f"got {type(graph).__name__}")
        graph = bytes(graph)

        ort = _ort()
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(self.config.threads or 0)  # 0: ORT's default pool
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        t1 = time.perf_counter()
        session = ort.InferenceSession(graph, so, providers=providers)
        session_s = time.perf_counter() - t1
        used = list(session.get_providers())
        if dev_type == "cuda" and CUDA_PROVIDER not in used:
            raise SkipCell(f"{device} requested but the {CUDA_PROVIDER} did not load (session providers: "
                           f"{', '.join(used)}; check the CUDA/cuDNN libraries onnxruntime-gpu needs)")

        arrays = [np.ascontiguousarray(a) for a in arrays]
        names = [i.name for i in session.get_inputs()]
        if len(names) != len(arrays):
            raise RuntimeError(f"the ONNX graph takes {len(names)} inputs, the workload makes {len(arrays)}")
        if source is None:  # the workload's arrays follow its own input names
            wanted = [s.name for s in workload.input_specs()]
            if sorted(wanted) == sorted(names):
                names = wanted
        values = [ort.OrtValue.ortvalue_from_numpy(a, dev_type, dev_id) for a in arrays]
        binding = session.io_binding()
        for n, v in zip(names, values):
            binding.bind_ortvalue_input(n, v)
        out_names = [o.name for o in session.get_outputs()]
        # one run to learn the output shapes, then bind pre-allocated outputs
        first = session.run(None, dict(zip(names, arrays)))
        outputs = [ort.OrtValue.ortvalue_from_shape_and_type(list(o.shape), o.dtype, dev_type, dev_id)
                   for o in first]
        for n, v in zip(out_names, outputs):
            binding.bind_ortvalue_output(n, v)

        opts = so.graph_optimization_level
        runtime = {
            "onnxruntime": ort.__version__,
            "execution_providers": used,
            "onnx_opset": graph_opset(graph),
            "graph_optimization_level": str(opts).rsplit(".", 1)[-1],
            "execution_mode": str(so.execution_mode).rsplit(".", 1)[-1],
            "intra_op_threads": self.config.threads,
            "inter_op_threads": 1,
            "threads": self.config.threads,
            "io_binding": f"inputs and outputs pre-bound as OrtValues on {dev_type}",
            "exported_from": exported_from,
            "flops_of": flops_of,
        }
        if self.config.threads is None:
            runtime["threads_note"] = "None: ONNX Runtime's default intra-op pool (one thread per physical core)"
        extra["session_init_s"] = session_s
        if source is not None:
            import torch

            params = sum(p.numel() for p in source.parameters())
            torch_inputs = [torch.from_numpy(a) for a in arrays]
        else:
            params = initializer_params(fp32)["params"]
            torch_inputs = []
        fmt = "onnx" if graph == fp32 else f"onnx ({variant.name})"
        model = ExportedModel(graph, session, source, fmt, own_graph=fp32 if source is None else None)
        step = OrtStep(session, binding, model, params, torch_inputs, device, runtime, extra)
        step.buffers = (values, outputs)  # the bound OrtValues live as long as the step
        return step

    def _export(self, model: Any, workload: Workload) -> tuple[bytes, str, str | None]:
        """The fp32 ONNX graph of ``model`` through the ``onnx`` cache:
        ``(bytes, hit|miss|off, reason the cache was not used or None)``."""
        from harness.core import cache
        from harness.core.frameworks import onnx_export

        batches = onnx_export.example_batches(workload, None, n=1)
        status, reason, key = cache.OFF, cache.disabled_reason(), None
        if cache.enabled():
            try:
                key = onnx_export.export_cache_key(model, workload, batches, _ExportTag())
            except Exception as e:  # noqa: BLE001 - no key, no cache: export as before
                reason = f"no cache key: {type(e).__name__}: {str(e)[:200]}"
        if key is not None:
            got = cache.get_bytes("onnx", key, ".onnx")
            if got.hit and isinstance(got.value, bytes):
                return got.value, cache.HIT, None
            status, reason = cache.MISS, got.reason
        data = onnx_export.export_onnx(model, workload, batches[0])
        if key is not None:
            reason = cache.put_bytes("onnx", key, data, ".onnx") or reason
        return data, status, reason

    # ------------------------------------------------------------------ analyses
    def count_flops(self, step: Step, variant: Variant, device: str) -> dict[str, Any]:
        """FLOPs of one forward of the torch model the graph was exported from;
        ``NotImplementedError`` with the reason for a workload's own graph."""
        from harness.core import flops

        model = getattr(step, "model", None)
        if isinstance(model, ExportedModel) and model.source is None:
            raise NotImplementedError(OWN_GRAPH_NO_FLOPS)

        return flops.count_torch_step(step, None, "cpu")

    def model_stats(self, model: Any) -> dict[str, Any]:
        """``params``: the exported torch model's parameters (tied once);
        ``nonzero_params`` of those; ``params_exported``: the graph's initializers
        (:func:`initializer_params`); ``model_size_bytes``: the ``.onnx`` file."""
        import torch

        if not isinstance(model, ExportedModel):
            return {}
        counts = initializer_params(model.onnx_bytes)
        if model.source is None:  # a workload's own graph: no torch model behind it
            own = initializer_params(model.own_graph) if model.own_graph is not None else counts
            return {
                "params": own["params"],
                "params_source": "the ONNX file's initializers, each weight once (no torch model)",
                "params_exported": counts["params"],
                "params_exported_duplicates": counts["duplicates"],
                "params_exported_note": "initializers of the graph that runs (the int8 graph for the int8 variants)",
                "model_size_bytes": len(model.onnx_bytes),
                "model_size_format": model.fmt,
            }
        source = list(model.source.parameters())
        return {
            "params": int(sum(p.numel() for p in source)),
            "params_exported": counts["params"],
            "params_exported_duplicates": counts["duplicates"],
            "params_exported_note": ("initializers of the graph that runs, each weight once; they differ from "
                                     "params where the exporter folds constants (BatchNorm into convolutions, "
                                     "constant embeddings) or a variant quantized the graph"),
            "nonzero_params": int(sum(int(torch.count_nonzero(p.detach())) for p in source)),
            "model_size_bytes": len(model.onnx_bytes),
            "model_size_format": model.fmt,
        }

    def runtime_info(self) -> dict[str, Any]:
        return {}
