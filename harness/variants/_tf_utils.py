"""TensorFlow helpers of the variants: LiteRT (TFLite) conversion and a callable that
runs the flatbuffer with ``ai_edge_litert``'s interpreter, Keras mixed-precision
rebuilds and global magnitude pruning. Imported only inside ``apply_tensorflow``
methods. Keras model statistics and batched prediction, which the backend and the
quality track share, live in :mod:`harness.core.frameworks.keras_utils`.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any, Sequence

import numpy as np

from harness.api import SkipCell
from harness.core.frameworks.keras_utils import keras_params


class LiteRTModel:
    """A LiteRT flatbuffer behind the Keras call convention ``model(x, training=False)``.

    Inside the backend's ``tf.function`` the interpreter runs through
    ``tf.numpy_function`` (a host call into the LiteRT runtime; XLA cannot compile it).
    Called eagerly with numpy arrays it runs the interpreter directly. It has no
    trainable weights: it is inference-only.
    """

    trainable_weights: list[Any] = []
    trainable_variables: list[Any] = []

    def __init__(self, flatbuffer: bytes, source_params: tuple[int, int], num_classes: int,
                 threads: int | None = None, fmt: str = "tflite") -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._bytes = flatbuffer
        self._interp = Interpreter(model_content=flatbuffer, num_threads=threads or None)
        self._inputs = sorted(self._interp.get_input_details(), key=lambda d: d["name"])
        self._out = self._interp.get_output_details()[0]["index"]
        self._shapes: list[tuple[int, ...]] = []
        self._params = source_params
        self._num_classes = num_classes
        self._fmt = fmt

    def run_numpy(self, *arrays: Any) -> Any:
        shapes = [tuple(a.shape) for a in arrays]
        if shapes != self._shapes:
            for d, s in zip(self._inputs, shapes):
                self._interp.resize_tensor_input(d["index"], s)
            self._interp.allocate_tensors()
            self._shapes = shapes
        for d, a in zip(self._inputs, arrays):
            self._interp.set_tensor(d["index"], np.asarray(a).astype(d["dtype"], copy=False))
        self._interp.invoke()
        return self._interp.get_tensor(self._out).astype(np.float32, copy=False)

    def __call__(self, x: Any, training: bool = False) -> Any:
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        if all(isinstance(a, np.ndarray) for a in xs):
            return self.run_numpy(*xs)
        import tensorflow as tf

        out = tf.numpy_function(self.run_numpy, xs, Tout=tf.float32, stateful=True)
        out.set_shape([xs[0].shape[0], self._num_classes])
        return out

    def harness_model_stats(self) -> dict[str, Any]:
        params, nonzero = self._params
        return {"params": params, "nonzero_params": nonzero, "model_size_bytes": len(self._bytes),
                "model_size_format": self._fmt}


def _representative(workload: Any, calibration: Sequence[Sequence[Any]] | None) -> list[list[Any]]:
    """Calibration batches in the Keras model's input layout (``Workload.backend_inputs``)."""
    if calibration:
        return [workload.backend_inputs("tensorflow", list(b)) for b in calibration]
    return [workload.backend_inputs("tensorflow", workload.make_inputs(8, seed=1000 + i)[0]) for i in range(4)]


def litert_quantize(variant: Any, model: Any, *, mode: str = "inference", device: str = "/CPU:0",
                    workload: Any = None, calibration: Sequence[Sequence[Any]] | None = None,
                    strategy: Any = None, **ctx: Any) -> LiteRTModel:
    """Convert a Keras model to LiteRT with dynamic-range (``static=False``) or
    full-integer (``static=True``, calibrated) quantization and wrap the interpreter."""
    static = variant.name == "int8-static"
    if mode == "training":
        raise SkipCell(f"{variant.name} is inference-only (LiteRT int8 models have no backward pass)")
    if strategy is not None or "CPU" not in str(device).upper():
        raise SkipCell(f"{variant.name} runs with the LiteRT CPU interpreter; device {device} is not supported")
    import importlib.util

    if importlib.util.find_spec("ai_edge_litert") is None:
        raise SkipCell(f"{variant.name} needs the python package 'ai-edge-litert' (pip install -r requirements.txt)")
    import tensorflow as tf

    from harness.core import cache

    t0 = time.perf_counter()
    batches = _representative(workload, calibration)
    specs = [tf.TensorSpec([None, *i.shape[1:]], i.dtype) for i in model.inputs]
    # converted flatbuffers are cached (kind "tflite"; see docs/cache.md)
    status, reason, key = cache.OFF, cache.disabled_reason(), None
    flat: bytes | None = None
    if cache.enabled():
        try:
            key = litert_cache_key(variant, model, specs, batches, static)
        except Exception as e:  # noqa: BLE001 - no key, no cache: convert as before
            reason = f"no cache key: {type(e).__name__}: {str(e)[:200]}"
    if key is not None:
        got = cache.get_bytes("tflite", key, ".tflite")
        status, reason = got.status, got.reason
        flat = got.value if got.hit else None
    if flat is None:
        flat = _convert(tf, model, specs, batches, static)
        if key is not None:
            reason = cache.put_bytes("tflite", key, flat, ".tflite") or reason
    threads = tf.config.threading.get_intra_op_parallelism_threads() or None
    variant._metrics = {
        "quantize_time_s": time.perf_counter() - t0,  # the time spent here: small on a cache hit
        "runtime_engine": "ai_edge_litert interpreter",
        "export_cache": status,
    }
    if reason:
        variant._metrics["export_cache_reason"] = reason
    return LiteRTModel(flat, keras_params(model), int(workload.num_classes), threads=threads,
                       fmt="tflite (int8 full-integer)" if static else "tflite (int8 dynamic range)")


def _convert(tf: Any, model: Any, specs: list[Any], batches: list[list[Any]], static: bool) -> bytes:
    """The LiteRT flatbuffer of ``model``: dynamic-range, or full-integer calibrated on
    ``batches`` (``static``)."""
    with tempfile.TemporaryDirectory(prefix="dlh-litert-") as d:
        # Keras 3 export freezes the variables into a SavedModel, which the converter needs
        model.export(d, format="tf_saved_model", verbose=False, input_signature=specs)
        conv = tf.lite.TFLiteConverter.from_saved_model(d)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        if static:
            def rep() -> Any:
                for b in batches:
                    yield [np.asarray(a).astype(s.dtype.as_numpy_dtype) for a, s in zip(b, specs)]

            conv.representative_dataset = rep
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return bytes(conv.convert())


#: Bump when the conversion code changes in a way :func:`litert_cache_key` misses (it
#: already hashes this file, the variant's and the model's layer classes' source files).
LITERT_CACHE_VERSION: int = 1


def _keras_layer_types(model: Any) -> list[type]:
    out: list[type] = []
    stack, seen = [model], set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        out.append(type(layer))
        stack.extend(getattr(layer, "layers", None) or [])
    return out


def litert_cache_key(variant: Any, model: Any, specs: list[Any], batches: list[list[Any]], static: bool) -> str:
    """The ``tflite`` cache key of a converted model (see docs/cache.md): the variant and
    its config, the Keras model's architecture JSON and a digest of its weights, the input
    signature, the representative batches' bytes, the versions of tensorflow, keras,
    ai-edge-litert and numpy, and the source files of the model's non-Keras layer
    classes, of the variant and of this module (the converter)."""
    import dataclasses

    from harness.core import cache

    vcfg = getattr(variant, "config", None)
    return cache.key(
        what="tflite-int8", v=LITERT_CACHE_VERSION, static=static,
        variant=variant.name,
        variant_config=dataclasses.asdict(vcfg) if dataclasses.is_dataclass(vcfg) else repr(vcfg),
        architecture=model.to_json(),
        weights=cache.digest_arrays(model.get_weights()),
        signature=[[list(s.shape), s.dtype.name] for s in specs],
        batches=cache.digest_arrays([a for b in batches for a in b]),
        batch_count=[len(b) for b in batches],
        versions=cache.package_versions("tensorflow", "tensorflow-cpu", "keras", "ai-edge-litert", "numpy"),
        sources=cache.source_digests([*_keras_layer_types(model), type(variant), litert_quantize],
                                     skip_prefixes=("keras", "tensorflow", "tf_keras")),
    )


def rebuild_with_policy(model: Any, workload: Any, policy: str) -> Any:
    """The workload's Keras model rebuilt under the mixed-precision ``policy`` with
    ``model``'s weights (Keras layers read the global policy when constructed; the
    variables stay float32). The global policy is restored afterwards."""
    import keras

    old = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        new = workload.build("tensorflow")
    finally:
        keras.mixed_precision.set_global_policy(old)
    new.set_weights(model.get_weights())
    return new


def prune_keras_global(model: Any, amount: float) -> int:
    """Zero the ``amount`` fraction of smallest-magnitude values over all Dense/Conv
    kernels together (global magnitude pruning); returns how many were zeroed."""
    kernels = [w for w in model.weights if w.path.endswith("kernel")]
    if not kernels:
        raise SkipCell("the model has no Dense or Conv kernels to prune")
    values = [np.asarray(w.numpy()) for w in kernels]
    flat = np.concatenate([np.abs(v).ravel() for v in values])
    k = int(round(amount * flat.size))
    if k == 0:
        return 0
    order = np.argsort(flat, kind="stable")
    mask = np.ones(flat.size, dtype=bool)
    mask[order[:k]] = False
    start = 0
    for w, v in zip(kernels, values):
        m = mask[start:start + v.size].reshape(v.shape)
        start += v.size
        w.assign(np.where(m, v, 0).astype(v.dtype))
    return k


__all__ = ["LiteRTModel", "litert_quantize", "litert_cache_key", "rebuild_with_policy", "prune_keras_global"]
