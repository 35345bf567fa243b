"""``int8-dynamic`` and ``int8-static`` post-training quantization.

PyTorch: the fp32 model is exported to ONNX and quantized with ONNX Runtime
(``onnxruntime.quantization``), then run by ONNX Runtime's CPU kernels (MLAS int8
GEMMs, VNNI where the CPU has it) behind ``model(*inputs)``:

* ``int8-dynamic``: ``quantize_dynamic`` of the linear layers (ONNX ``MatMul``/``Gemm``):
  int8 weights (per-channel), activations quantized per batch at run time. No
  calibration data.
* ``int8-static``: ``quantize_static`` (QDQ format, per-channel int8 weights, uint8
  activations) with activation ranges calibrated (MinMax) on a representative
  dataset: the digits training data in the quality track, seeded synthetic inputs in
  the speed track (speed does not depend on the calibrated ranges).

Why ONNX Runtime (see docs/variants.md for the numbers): ``torch.ao.quantization`` is
deprecated in torch 2.13; torchao's ``Int8DynamicActivationInt8WeightConfig`` runs in
eager mode 10-20x *slower* than fp32 on the tiny models here and only speeds up with
``torch.compile`` (15-25 s of compilation per model on this CPU); the PT2E static flow
(``prepare_pt2e``/``convert_pt2e`` + X86InductorQuantizer) likewise only produces real
int8 kernels after inductor compilation, and its converted module is *larger* on disk.
ONNX Runtime quantizes in well under a second, runs real int8 kernels eagerly and
writes a model that is smaller on disk. Both variants are inference-only.

TensorFlow: LiteRT (TFLite) conversion — dynamic-range quantization for
``int8-dynamic``, full-integer quantization with a representative dataset for
``int8-static`` — run with ``ai_edge_litert``'s interpreter.

Both are cached (:mod:`harness.core.cache`, kinds ``onnx`` and ``tflite``): the exported
and quantized model is keyed by the weights, the batches, the variant, the model's
source and the library versions; ``export_cache`` records ``hit``/``miss``/``off`` and
``quantize_time_s`` the time actually spent (small on a hit).
"""

from __future__ import annotations

import abc

from typing import Any, ClassVar, Sequence

from harness.api import SkipCell, Variant
from harness.variants.base import CompressionConfig


def _check_torch_ctx(name: str, device: Any, mode: str) -> None:
    if mode == "training":
        raise SkipCell(f"{name} is inference-only (int8 kernels have no backward pass)")
    if getattr(device, "type", str(device)) != "cpu":
        raise SkipCell(f"{name} runs on ONNX Runtime's CPU kernels; device {device} is not supported")


def _strip(path: str) -> bytes:
    """The quantized model without what running it does not need: shape annotations
    (``value_info``, added by the quantizer's shape inference) and doc strings. At the
    tiny presets these otherwise outweigh the int8 savings."""
    import onnx

    m = onnx.load(path)
    del m.graph.value_info[:]
    m.doc_string = ""
    for node in m.graph.node:
        node.doc_string = ""
    return m.SerializeToString()


class _OrtQuantVariant(Variant):
    replaces_model = True  # an ONNX Runtime session (harness.api.Variant.replaces_model)
    Config = CompressionConfig

    def __init__(self, config: CompressionConfig | None = None) -> None:
        super().__init__(config)
        self._metrics: dict[str, Any] = {}

    def metrics(self) -> dict[str, Any]:
        return dict(self._metrics)

    @abc.abstractmethod
    def _quantize(self, fp32_path: str, out_path: str, workload: Any, batches: Sequence[Sequence[Any]]) -> None:
        """Write the int8 ONNX model for ``fp32_path`` to ``out_path`` (dynamic or static)."""

    def apply_torch(self, model: Any, *, device: Any = "cpu", mode: str = "inference",
                    workload: Any = None, calibration: Sequence[Sequence[Any]] | None = None,
                    **ctx: Any) -> Any:
        _check_torch_ctx(self.name, device, mode)
        self._check_packages()
        from harness.variants._torch_utils import (OrtModel, example_batches, export_cache_key, export_onnx,
                                                   input_names)

        batches = example_batches(workload, calibration)
        q = self._quantized(lambda: export_cache_key(model, workload, batches, self),
                            lambda: export_onnx(model, workload, batches[0]), workload, batches)
        return OrtModel(q, input_names(workload), fmt="onnx (int8)")

    def apply_onnxruntime(self, model: bytes, *, device: Any = "cpu", mode: str = "inference",
                          workload: Any = None, calibration: Sequence[Sequence[Any]] | None = None,
                          **ctx: Any) -> bytes:
        """The int8 graph of ``model``, an fp32 ONNX graph (bytes), for the ONNX Runtime
        backend: the same quantizer and cache as :meth:`apply_torch`."""
        _check_torch_ctx(self.name, device, mode)
        self._check_packages()
        import hashlib

        from harness.core import cache
        from harness.variants._torch_utils import EXPORT_CACHE_VERSION, example_batches, export_onnx

        batches = example_batches(workload, calibration)

        def key() -> str:
            return cache.key(
                what="onnx-int8-of-graph", v=EXPORT_CACHE_VERSION, variant=self.name,
                graph=hashlib.sha256(model).hexdigest(),
                batches=cache.digest_arrays([a for b in batches for a in b]),
                versions=cache.package_versions("onnx", "onnxruntime", "numpy"),
                sources=cache.source_digests([type(self), export_onnx]))

        return self._quantized(key, lambda: bytes(model), workload, batches)

    def _check_packages(self) -> None:
        import importlib.util

        for pkg in ("onnx", "onnxruntime"):
            if importlib.util.find_spec(pkg) is None:
                raise SkipCell(f"{self.name} needs the python package {pkg!r} (pip install -r requirements.txt)")

    def _quantized(self, make_key: Any, export: Any, workload: Any, batches: Sequence[Sequence[Any]]) -> bytes:
        """The int8 graph through the ``onnx`` cache: ``export()`` gives the fp32 graph
        on a miss; records ``quantize_time_s``, ``onnx_fp32_size_bytes`` and
        ``export_cache`` in :meth:`metrics`."""
        import os
        import tempfile
        import time

        from harness.core import cache

        t0 = time.perf_counter()
        # exported + quantized models are cached (kind "onnx"): the same weights,
        # batches, variant and versions give the same bytes (see docs/cache.md)
        status, reason, key = cache.OFF, cache.disabled_reason(), None
        q: bytes | None = None
        fp32_size: int | None = None
        if cache.enabled():
            try:
                key = make_key()
            except Exception as e:  # noqa: BLE001 - no key, no cache: export as before
                reason = f"no cache key: {type(e).__name__}: {str(e)[:200]}"
        if key is not None:
            meta, blob = cache.get_json("onnx", key), cache.get_bytes("onnx", key, ".onnx")
            size = meta.value.get("onnx_fp32_size_bytes") if meta.hit and isinstance(meta.value, dict) else None
            if blob.hit and isinstance(size, int):
                status, reason, q, fp32_size = cache.HIT, None, blob.value, size
            else:
                status, reason = cache.MISS, meta.reason or blob.reason
        if q is None:
            fp32 = export()
            fp32_size = len(fp32)
            with tempfile.TemporaryDirectory(prefix="dlh-int8-") as d:
                src, out = os.path.join(d, "fp32.onnx"), os.path.join(d, "int8.onnx")
                with open(src, "wb") as f:
                    f.write(fp32)
                self._quantize(src, out, workload, batches)
                q = _strip(out)
            if key is not None:
                reason = (cache.put_bytes("onnx", key, q, ".onnx")
                          or cache.put_json("onnx", key, {"onnx_fp32_size_bytes": fp32_size}) or reason)
        self._metrics = {
            "quantize_time_s": time.perf_counter() - t0,  # the time spent here: small on a cache hit
            "onnx_fp32_size_bytes": fp32_size,
            "runtime_engine": "onnxruntime",
            "export_cache": status,
        }
        if reason:
            self._metrics["export_cache_reason"] = reason
        return q


class Int8DynamicVariant(_OrtQuantVariant):
    """Dynamic int8 quantization of the linear layers."""

    name: ClassVar[str] = "int8-dynamic"
    description: ClassVar[str] = (
        "int8 weights of the linear layers, activations quantized per batch "
        "(ONNX Runtime quantize_dynamic / LiteRT dynamic range); inference only"
    )

    def _quantize(self, fp32_path: str, out_path: str, workload: Any, batches: Sequence[Sequence[Any]]) -> None:
        import logging

        from onnxruntime.quantization import QuantType, quantize_dynamic

        logging.getLogger().setLevel(logging.ERROR)
        quantize_dynamic(fp32_path, out_path, weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gemm"])

    def apply_tensorflow(self, model: Any, **ctx: Any) -> Any:
        from harness.variants import _tf_utils

        return _tf_utils.litert_quantize(self, model, static=False, **ctx)


class Int8StaticVariant(_OrtQuantVariant):
    """Calibrated static int8 quantization (weights and activations)."""

    name: ClassVar[str] = "int8-static"
    description: ClassVar[str] = (
        "int8 weights and activations with ranges calibrated on a representative dataset "
        "(ONNX Runtime quantize_static QDQ / LiteRT full-integer); inference only"
    )

    def _quantize(self, fp32_path: str, out_path: str, workload: Any, batches: Sequence[Sequence[Any]]) -> None:
        import logging

        from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                              quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process

        from harness.variants._torch_utils import input_names

        logging.getLogger().setLevel(logging.ERROR)
        names = input_names(workload)

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._it = iter([dict(zip(names, b)) for b in batches])

            def get_next(self) -> dict[str, Any] | None:
                return next(self._it, None)

        pre = fp32_path + ".pre.onnx"
        quant_pre_process(fp32_path, pre)
        quantize_static(pre, out_path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)

    def apply_tensorflow(self, model: Any, **ctx: Any) -> Any:
        from harness.variants import _tf_utils

        return _tf_utils.litert_quantize(self, model, static=True, **ctx)
