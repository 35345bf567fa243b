"""PyTorch helpers of the variants: example/calibration inputs, ONNX export, an
``nn.Module`` wrapper around an ONNX Runtime session and the compile wrapper.

Imported only inside ``apply_torch`` methods (imports torch). Model statistics and
batched prediction, which the backend and the quality track share, live in
:mod:`harness.core.frameworks.torch_utils`.
"""

from __future__ import annotations

import io
import time
import warnings
from typing import Any, Sequence

import torch
from torch import nn

from harness.core.frameworks.torch_utils import model_stats


def example_batches(workload: Any, calibration: Sequence[Sequence[Any]] | None, n: int = 4,
                    batch_size: int = 8) -> list[list[Any]]:
    """Input batches (lists of numpy arrays in ``input_specs()`` order): the given
    calibration data, or ``n`` seeded synthetic batches from the workload."""
    if calibration:
        return [list(b) for b in calibration]
    return [workload.make_inputs(batch_size, seed=1000 + i)[0] for i in range(n)]


def input_names(workload: Any) -> list[str]:
    return [s.name for s in workload.input_specs()]


#: The ONNX opset the fp32 model is exported with (part of the export cache key).
OPSET: int = 17
#: Bump when the export/quantize code changes in a way :func:`export_cache_key` misses
#: (it already hashes this file, the variant's and the model's source files).
EXPORT_CACHE_VERSION: int = 1


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer of ``model`` (name, shape, dtype, bytes)."""
    import hashlib

    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}{list(t.shape)}{t.dtype};".encode())
        try:
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
        except (RuntimeError, TypeError):  # a dtype that cannot be viewed as bytes
            h.update(repr(t.tolist()).encode())
    return h.hexdigest()


def export_cache_key(model: nn.Module, workload: Any, batches: Sequence[Sequence[Any]], variant: Any) -> str:
    """The ``onnx`` cache key of an exported + quantized model (see docs/cache.md): the
    variant and its config, the workload and its config, the model's structure and a
    digest of its weights, the example/calibration batches' bytes, the opset, the
    versions of torch, onnx, onnxruntime and numpy, and the source files of the model's
    classes, of the variant and of this module (the exporter)."""
    import dataclasses

    from harness.core import cache

    modules = list(model.modules())
    cfg = getattr(workload, "config", None)
    vcfg = getattr(variant, "config", None)
    return cache.key(
        what="onnx-int8", v=EXPORT_CACHE_VERSION, opset=OPSET,
        variant=variant.name,
        variant_config=dataclasses.asdict(vcfg) if dataclasses.is_dataclass(vcfg) else repr(vcfg),
        workload=getattr(workload, "name", None),
        workload_config=dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else repr(cfg),
        input_names=input_names(workload),
        model_repr=repr(model),
        tensors=[[n, list(t.shape), str(t.dtype)] for n, t in model.state_dict().items()],
        weights=weights_digest(model),
        batches=cache.digest_arrays([a for b in batches for a in b]),
        batch_count=[len(b) for b in batches],
        versions=cache.package_versions("torch", "onnx", "onnxruntime", "numpy"),
        sources=cache.source_digests([*(type(m) for m in modules), type(variant), export_onnx],
                                     skip_prefixes=("torch",)),
    )


def export_onnx(model: nn.Module, workload: Any, example: Sequence[Any]) -> bytes:
    """The fp32 model as an ONNX graph (opset :data:`OPSET`) with a dynamic batch axis.

    Uses the TorchScript-based exporter (``dynamo=False``): it needs no extra
    packages, takes well under a second for the built-in workloads, and its graphs
    quantize cleanly with ``onnxruntime.quantization``.
    """
    names = input_names(workload)
    args = tuple(torch.from_numpy(a) for a in example)
    buf = io.BytesIO()
    was_training = model.training
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, args, buf, input_names=names, output_names=["logits"],
            dynamic_axes={n: {0: "batch"} for n in [*names, "logits"]},
            opset_version=OPSET, dynamo=False,
        )
    model.train(was_training)
    return buf.getvalue()


def onnx_stats(model_bytes: bytes) -> tuple[int, int]:
    """(parameters, nonzero parameters) of an ONNX model: elements of its float and
    integer weight initializers, excluding quantization scales and zero points."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    m = onnx.load_from_string(model_bytes)
    params = nonzero = 0
    for init in m.graph.initializer:
        name = init.name
        if name.endswith(("_scale", "_zero_point")) or len(init.dims) == 0:
            continue
        arr = numpy_helper.to_array(init)
        if arr.dtype.kind not in "fiu":
            continue
        params += int(arr.size)
        nonzero += int(np.count_nonzero(arr))
    return params, nonzero


class OrtModel(nn.Module):
    """An ONNX Runtime CPU session behind ``model(*inputs)``: torch tensors in, a torch
    tensor of logits out (zero-copy through numpy). It has no torch parameters; its
    size and parameter counts come from the ONNX graph (``harness_model_stats``)."""

    def __init__(self, model_bytes: bytes, names: Sequence[str], threads: int | None = None,
                 fmt: str = "onnx") -> None:
        super().__init__()
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads or torch.get_num_threads())
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self._session = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
        self._names = list(names)
        self._bytes = model_bytes
        self._fmt = fmt
        self._stats: tuple[int, int] | None = None

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        feed = {n: t.detach().cpu().numpy() for n, t in zip(self._names, inputs)}
        return torch.from_numpy(self._session.run(None, feed)[0])

    def harness_model_stats(self) -> dict[str, Any]:
        if self._stats is None:
            self._stats = onnx_stats(self._bytes)
        params, nonzero = self._stats
        return {
            "params": params,
            "nonzero_params": nonzero,
            "model_size_bytes": len(self._bytes),
            "model_size_format": self._fmt,
        }


class FirstCallTimer(nn.Module):
    """Wraps a compiled module and records how long its first call took (seconds):
    with ``torch.compile`` that call traces and compiles the graph, then runs it.

    ``eager_module`` is the uncompiled module with the same weights: post-measurement
    analyses (the FLOP counter) run it instead of triggering the compiler (the
    compiled module's ``_orig_mod`` is hidden behind this wrapper)."""

    def __init__(self, compiled: Any, original: nn.Module) -> None:
        super().__init__()
        self.compiled = compiled
        self.original = original  # registered so parameters()/state_dict() see the weights
        self.first_call_s: float | None = None
        self.error: str | None = None

    def forward(self, *inputs: Any) -> Any:
        if self.first_call_s is not None:
            return self.compiled(*inputs)
        t0 = time.perf_counter()
        try:
            out = self.compiled(*inputs)
        except Exception as e:  # record, then fail the cell honestly
            self.error = f"{type(e).__name__}: {e}"[:500]
            raise
        self.first_call_s = time.perf_counter() - t0
        return out

    @property
    def eager_module(self) -> nn.Module:
        """The uncompiled module (same parameters as the compiled one)."""
        return self.original

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:  # serialize the weights once
        return self.original.state_dict(*args, **kwargs)

    def harness_model_stats(self) -> dict[str, Any]:
        return model_stats(self.original)
