"""TensorFlow helpers for the variants: LiteRT (TFLite) conversion and a callable that
runs the flatbuffer with ``ai_edge_litert``'s interpreter, Keras mixed-precision
rebuilds, and model statistics. Imported only inside ``apply_tensorflow`` methods and
the quality analysis (imports TensorFlow).
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any, Sequence

import numpy as np

from harness.api import SkipCell


def keras_params(model: Any) -> tuple[int, int]:
    """(parameters, nonzero parameters) of a Keras model's trainable weights."""
    params = nonzero = 0
    for w in model.trainable_weights:
        a = np.asarray(w.numpy() if hasattr(w, "numpy") else w)
        params += int(a.size)
        nonzero += int(np.count_nonzero(a))
    return params, nonzero


def keras_model_stats(model: Any) -> dict[str, Any]:
    """params / nonzero_params / model_size_bytes (weights saved as ``.weights.h5``)."""
    own = getattr(model, "harness_model_stats", None)
    if callable(own):
        return dict(own())
    params, nonzero = keras_params(model)
    with tempfile.TemporaryDirectory(prefix="dlh-keras-") as d:
        path = os.path.join(d, "model.weights.h5")
        model.save_weights(path)
        size = os.path.getsize(path)
    return {"params": params, "nonzero_params": nonzero, "model_size_bytes": size,
            "model_size_format": "keras .weights.h5"}


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
    from harness.workloads._keras_models import keras_inputs

    if calibration:
        return [keras_inputs(workload, list(b)) for b in calibration]
    return [keras_inputs(workload, workload.make_inputs(8, seed=1000 + i)[0]) for i in range(4)]


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

    t0 = time.perf_counter()
    batches = _representative(workload, calibration)
    specs = [tf.TensorSpec([None, *i.shape[1:]], i.dtype) for i in model.inputs]
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
        flat = conv.convert()
    threads = tf.config.threading.get_intra_op_parallelism_threads() or None
    variant._metrics = {
        "quantize_time_s": time.perf_counter() - t0,
        "runtime_engine": "ai_edge_litert interpreter",
    }
    return LiteRTModel(flat, keras_params(model), int(workload.num_classes), threads=threads,
                       fmt="tflite (int8 full-integer)" if static else "tflite (int8 dynamic range)")


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


def keras_predict(model: Any, inputs: Sequence[Any], batch_size: int = 256) -> Any:
    """Logits (numpy float32) of a Keras model or :class:`LiteRTModel`, eager, batched."""
    n = len(inputs[0])
    outs = []
    for i in range(0, n, batch_size):
        xs = [np.ascontiguousarray(a[i:i + batch_size]) for a in inputs]
        if isinstance(model, LiteRTModel):
            out = model.run_numpy(*xs)
        else:
            out = model(xs[0] if len(xs) == 1 else xs, training=False)
            out = np.asarray(out.numpy() if hasattr(out, "numpy") else out)
        outs.append(np.asarray(out, dtype=np.float32))
    return np.concatenate(outs)


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


__all__ = ["LiteRTModel", "litert_quantize", "rebuild_with_policy", "keras_model_stats",
           "keras_predict", "prune_keras_global"]
