"""Keras 3 / TensorFlow helpers shared by the TensorFlow backend, the variants, the
quality track and ``harness verify`` (imports numpy; Keras and TensorFlow only inside the
functions that need them).

* :func:`import_tf`: TensorFlow with its C++ logs quieted;
* :func:`trainable_params`, :func:`keras_params`, :func:`keras_model_stats`: counts and
  serialized size of a Keras model;
* :func:`keras_predict`: batched eager logits;
* :func:`load_torch_state`: copy a torch ``state_dict`` (numpy) into a Keras twin whose
  layers are named after the torch module paths (``stages.1.0.conv1`` ->
  ``stages_1_0_conv1``); a custom layer converts its own weights with
  ``weights_from_torch(params)``;
* :func:`graph_matmul_flops`: FLOPs of the matmuls/convolutions of a traced graph.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Mapping, Sequence

import numpy as np

LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"


def import_tf() -> Any:
    """Import TensorFlow with its C++ INFO/WARNING logs quieted (``TF_CPP_MIN_LOG_LEVEL=2``
    unless the user set it). Called only in processes that use TensorFlow."""
    os.environ.setdefault(LOG_LEVEL_ENV, "2")
    import tensorflow as tf

    return tf


def trainable_params(model: Any) -> int:
    """Number of trainable parameters (torch's ``sum(p.numel() for p in parameters())``)."""
    return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))


def keras_params(model: Any) -> tuple[int, int]:
    """(parameters, nonzero parameters) of a Keras model's trainable weights."""
    params = nonzero = 0
    for w in model.trainable_weights:
        a = np.asarray(w.numpy() if hasattr(w, "numpy") else w)
        params += int(a.size)
        nonzero += int(np.count_nonzero(a))
    return params, nonzero


def keras_model_stats(model: Any) -> dict[str, Any]:
    """params / nonzero_params / model_size_bytes (weights saved as ``.weights.h5``).
    A model that is not a Keras model provides ``harness_model_stats()``."""
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


def keras_predict(model: Any, inputs: Sequence[Any], batch_size: int = 256) -> Any:
    """Logits (numpy float32) of a Keras model, eager, batched. A model with
    ``run_numpy(*arrays)`` (e.g. the LiteRT interpreter wrapper) is run through it."""
    n = len(inputs[0])
    outs = []
    for i in range(0, n, batch_size):
        xs = [np.ascontiguousarray(a[i:i + batch_size]) for a in inputs]
        if callable(getattr(model, "run_numpy", None)):  # an interpreter-backed model (LiteRT)
            out = model.run_numpy(*xs)
        else:
            out = model(xs[0] if len(xs) == 1 else xs, training=False)
            out = np.asarray(out.numpy() if hasattr(out, "numpy") else out)
        outs.append(np.asarray(out, dtype=np.float32))
    return np.concatenate(outs)


def _convert(layer: Any, params: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The Keras weight list of ``layer`` from a torch module's ``{name: array}``."""
    from keras import layers

    if isinstance(layer, layers.Dense):
        return [params["weight"].T, params["bias"]]
    if isinstance(layer, layers.Conv2D):
        return [params["weight"].transpose(2, 3, 1, 0)]
    if isinstance(layer, layers.BatchNormalization):
        return [params["weight"], params["bias"], params["running_mean"], params["running_var"]]
    if isinstance(layer, layers.LayerNormalization):
        return [params["weight"], params["bias"]]
    if isinstance(layer, layers.Embedding):
        return [params["weight"]]
    own = getattr(layer, "weights_from_torch", None)  # a custom layer converts its own weights
    if callable(own):
        return list(own(params))
    raise TypeError(f"no torch -> Keras weight conversion for layer {layer.name!r} ({type(layer).__name__})")


def load_torch_state(model: Any, state: Mapping[str, np.ndarray]) -> int:
    """Copy a torch ``state_dict`` (as numpy arrays, e.g. loaded from ``.npz``) into the
    Keras twin, layer by layer by name. Every Keras weight must be covered and every
    torch tensor used (``num_batches_tracked`` aside); otherwise ``ValueError`` names
    what is missing. Returns the number of values copied."""
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if leaf == "num_batches_tracked":
            continue
        groups.setdefault(module.replace(".", "_"), {})[leaf] = np.asarray(value)
    by_name = {layer.name: layer for layer in model.layers if layer.weights}
    missing_keras = sorted(set(by_name) - set(groups))
    missing_torch = sorted(set(groups) - set(by_name))
    if missing_keras or missing_torch:
        raise ValueError(
            f"torch and Keras models differ: Keras layers without torch weights {missing_keras}, "
            f"torch modules without a Keras layer {missing_torch}"
        )
    copied = 0
    for name, layer in by_name.items():
        values = _convert(layer, groups[name])
        expected = [tuple(w.shape) for w in layer.weights]
        got = [tuple(v.shape) for v in values]
        if expected != got:
            raise ValueError(f"layer {name!r}: Keras weight shapes {expected} != converted torch shapes {got}")
        layer.set_weights([v.astype(np.float32) for v in values])
        copied += sum(int(v.size) for v in values)
    return copied


def graph_matmul_flops(graph: Any) -> int:
    """FLOPs (2 per multiply-accumulate) of every ``MatMul``, ``BatchMatMul*`` and
    ``Conv2D`` in a TensorFlow graph with static shapes (e.g.
    ``tf.function(f).get_concrete_function().graph``): the same counting rule as the
    workloads' ``analytic_flops``. Raises ``ValueError`` on an unknown dimension or an
    ``Einsum`` (not counted here)."""
    total = 0
    for op in graph.get_operations():
        t = op.type
        if t == "Einsum":
            raise ValueError(f"cannot count Einsum op {op.name!r}")
        if t not in ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Conv2D"):
            continue
        shapes = [i.shape.as_list() for i in op.inputs[:2]] + [op.outputs[0].shape.as_list()]
        if any(d is None for s in shapes for d in s):
            raise ValueError(f"op {op.name!r} has a dynamic shape {shapes}")
        a, b, out = shapes
        if t == "Conv2D":
            kh, kw, cin, _ = b  # HWIO filter; output NHWC (or NCHW): every output element
            total += 2 * int(np.prod(out)) * kh * kw * cin
            continue
        if t == "MatMul":
            k = a[0] if op.get_attr("transpose_a") else a[1]
        else:
            k = a[-2] if op.get_attr("adj_x") else a[-1]
        total += 2 * int(np.prod(out)) * k
    return total

