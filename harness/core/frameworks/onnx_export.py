"""ONNX export of a workload's torch model, shared by the torch int8 variants and the
ONNX Runtime backend: example inputs, the exporter (opset :data:`OPSET`, dynamic batch
axis), the ``onnx`` cache key of an exported graph and the parameter count of a graph.
Imports torch; import it only where torch is already needed.
"""

from __future__ import annotations

import io
import warnings
from typing import Any, Sequence

import torch
from torch import nn


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
