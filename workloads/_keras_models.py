"""Keras 3 (TensorFlow) twins of the PyTorch models in :mod:`harness.workloads._torch_models`.

Imported only from the workloads' ``build_tensorflow()`` / ``tensorflow_inputs()``
methods, so importing a workload never imports TensorFlow; nothing outside
``harness.workloads`` imports it (backends and analyses reach it through the
:class:`harness.api.Workload` methods).

Each builder returns a functional ``keras.Model`` with the *same layer structure* as
the torch module: one Keras layer per torch module that holds parameters, named after
the torch module's path with ``.`` replaced by ``_`` (``stages.1.0.conv1`` ->
``stages_1_0_conv1``). That naming is what makes
:func:`harness.core.frameworks.keras_utils.load_torch_state` generic: it
walks the torch ``state_dict`` and fills the Keras layer of the same path.

Equivalences (torch -> Keras), all checked by ``harness verify``:

* ``nn.Linear(i, o)`` -> ``Dense(o)``; kernel = ``weight.T``.
* ``nn.Conv2d`` -> ``Conv2D(use_bias=False)``; kernel = ``weight.transpose(2, 3, 1, 0)``.
  Torch pads ``k // 2`` on every side; Keras ``padding="same"`` pads asymmetrically
  when the stride is 2, so strided convolutions use an explicit ``ZeroPadding2D`` and
  ``padding="valid"`` (output size ``(H + 2p - k) // s + 1`` exactly as in torch).
* ``nn.BatchNorm2d`` (momentum 0.1, eps 1e-5) -> ``BatchNormalization(momentum=0.9,
  epsilon=1e-5)`` (Keras' momentum is the weight of the old running value).
* ``nn.MaxPool2d(3, 2, padding=1)`` -> ``ZeroPadding2D(1)`` + ``MaxPooling2D(3, 2)``:
  it follows a ReLU, so every value is >= 0 and zero padding equals torch's -inf
  padding.
* ``nn.LayerNorm(eps=1e-12)`` -> ``LayerNormalization(epsilon=1e-12)``; ``F.gelu``
  (exact, erf) -> ``gelu(approximate=False)``; ``F.scaled_dot_product_attention`` ->
  :class:`SelfAttentionCore` (softmax(q k^T / sqrt(d)) v, dropout on the probabilities
  in training, like SDPA's ``dropout_p``).

Layout: the CNN takes **NHWC** images (TensorFlow's native CPU layout; its CPU
``Conv2D`` does not run NCHW). The workload's inputs are NCHW numpy arrays;
``CNNWorkload.tensorflow_inputs`` transposes them once, before timing, outside the
timed region.
Same data, same semantics, each framework in its own native layout.

Parameter counts compare *trainable* weights: BatchNorm's moving mean/variance are
non-trainable Keras weights, exactly as they are buffers (not parameters) in torch.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import keras
import numpy as np
from keras import layers, ops

# ------------------------------------------------------------------------- initialisers
# Seeded, and distributed like torch's defaults, so a Keras build is reproducible and
# statistically like the torch one (exact weights only come from load_torch_state).


class _Seeds:
    """Hands out consecutive integer seeds from ``base`` (one per initializer)."""

    def __init__(self, base: int) -> None:
        self.next = base

    def __call__(self) -> int:
        self.next += 1
        return self.next


def _torch_linear_init(seeds: _Seeds, fan_in: int) -> dict[str, Any]:
    """torch ``nn.Linear`` default: kernel and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return {
        "kernel_initializer": keras.initializers.VarianceScaling(
            scale=1.0 / 3.0, mode="fan_in", distribution="uniform", seed=seeds()
        ),
        "bias_initializer": keras.initializers.RandomUniform(-bound, bound, seed=seeds()),
    }


def _bert_init(seeds: _Seeds) -> dict[str, Any]:
    """BERT's initialisation: kernel ~ N(0, 0.02), zero bias."""
    return {
        "kernel_initializer": keras.initializers.RandomNormal(stddev=0.02, seed=seeds()),
        "bias_initializer": "zeros",
    }


# ---------------------------------------------------------------------------------- MLP


def build_mlp(input_dim: int, hidden: Sequence[int], num_classes: int, seed: int = 0) -> keras.Model:
    """``Dense -> ReLU`` per hidden width, then ``Dense`` to the classes; input float32
    ``(batch, input_dim)``, output logits ``(batch, num_classes)``. Layer ``net_{2i}`` is
    torch's ``net.{2i}`` (ReLUs sit at the odd indices, as in the torch Sequential)."""
    seeds = _Seeds(seed * 1000)
    x_in = keras.Input(shape=(input_dim,), dtype="float32", name="features")
    x = x_in
    width = input_dim
    idx = 0
    for h in hidden:
        x = layers.Dense(h, name=f"net_{idx}", **_torch_linear_init(seeds, width))(x)
        x = layers.ReLU(name=f"net_{idx + 1}")(x)
        idx += 2
        width = h
    out = layers.Dense(num_classes, name=f"net_{idx}", **_torch_linear_init(seeds, width))(x)
    return keras.Model(x_in, out, name="mlp")


# ---------------------------------------------------------------------------------- CNN


def _conv(x: Any, filters: int, kernel: int, stride: int, name: str, seeds: _Seeds) -> Any:
    """A bias-free convolution padded like torch's ``padding=kernel // 2``."""
    init = keras.initializers.VarianceScaling(  # torchvision: kaiming_normal_(fan_out, relu)
        scale=2.0, mode="fan_out", distribution="untruncated_normal", seed=seeds()
    )
    pad = kernel // 2
    if stride == 1:
        return layers.Conv2D(filters, kernel, 1, padding="same", use_bias=False,
                             kernel_initializer=init, name=name)(x)
    if pad:
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    return layers.Conv2D(filters, kernel, stride, padding="valid", use_bias=False,
                         kernel_initializer=init, name=name)(x)


def _bn(x: Any, name: str) -> Any:
    """torch ``BatchNorm2d`` defaults (momentum 0.1 -> Keras 0.9, eps 1e-5), NHWC."""
    return layers.BatchNormalization(axis=-1, momentum=0.9, epsilon=1e-5, name=name)(x)


def _basic_block(x: Any, in_ch: int, out_ch: int, stride: int, name: str, seeds: _Seeds) -> Any:
    out = _conv(x, out_ch, 3, stride, f"{name}_conv1", seeds)
    out = layers.ReLU(name=f"{name}_relu1")(_bn(out, f"{name}_bn1"))
    out = _bn(_conv(out, out_ch, 3, 1, f"{name}_conv2", seeds), f"{name}_bn2")
    if stride != 1 or in_ch != out_ch:
        shortcut = _bn(_conv(x, out_ch, 1, stride, f"{name}_shortcut_0", seeds), f"{name}_shortcut_1")
    else:
        shortcut = x
    return layers.ReLU(name=f"{name}_relu2")(layers.Add(name=f"{name}_add")([out, shortcut]))


def build_resnet(
    image_size: int,
    in_channels: int,
    stem_channels: int,
    stem_kernel: int,
    stem_stride: int,
    stem_pool: bool,
    channels: Sequence[int],
    blocks: Sequence[int],
    num_classes: int,
    seed: int = 0,
) -> keras.Model:
    """ResNet-style classifier on NHWC float32 images ``(batch, H, W, C)``; the twin of
    ``harness.workloads._torch_models.ResNet`` (see the module docstring for the padding)."""
    seeds = _Seeds(seed * 1000)
    x_in = keras.Input(shape=(image_size, image_size, in_channels), dtype="float32", name="image")
    x = _conv(x_in, stem_channels, stem_kernel, stem_stride, "stem_0", seeds)
    x = layers.ReLU(name="stem_2")(_bn(x, "stem_1"))
    if stem_pool:
        x = layers.ZeroPadding2D(1, name="stem_3_pad")(x)  # >= 0 after ReLU: same as -inf
        x = layers.MaxPooling2D(3, 2, padding="valid", name="stem_3")(x)
    width = stem_channels
    for i, (ch, n) in enumerate(zip(channels, blocks)):
        for j in range(n):
            stride = 2 if (i > 0 and j == 0) else 1
            x = _basic_block(x, width, ch, stride, f"stages_{i}_{j}", seeds)
            width = ch
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    out = layers.Dense(num_classes, name="fc", **_torch_linear_init(seeds, width))(x)
    return keras.Model(x_in, out, name="resnet")


# -------------------------------------------------------------------------- transformer


@keras.saving.register_keras_serializable(package="dl_harness")
class SelfAttentionCore(layers.Layer):
    """Parameter-free multi-head attention core: ``(q, k, v)`` of shape ``(b, s, h)`` ->
    ``softmax(q_h k_h^T / sqrt(d)) v_h`` per head, merged back to ``(b, s, h)``. The same
    math as ``F.scaled_dot_product_attention`` without a mask; in training the
    attention probabilities go through dropout, as SDPA's ``dropout_p`` does."""

    def __init__(self, heads: int, dropout: float, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.heads = heads
        self.rate = dropout
        self.drop = layers.Dropout(dropout, seed=seed)

    def _split(self, t: Any) -> Any:
        b, s, h = ops.shape(t)[0], ops.shape(t)[1], t.shape[-1]
        t = ops.reshape(t, (b, s, self.heads, h // self.heads))
        return ops.transpose(t, (0, 2, 1, 3))

    def call(self, q: Any, k: Any, v: Any, training: bool | None = None) -> Any:
        h = q.shape[-1]
        scale = 1.0 / math.sqrt(h // self.heads)
        qh, kh, vh = self._split(q), self._split(k), self._split(v)
        scores = ops.matmul(qh, ops.transpose(kh, (0, 1, 3, 2))) * scale
        probs = self.drop(ops.softmax(scores, axis=-1), training=training)
        ctx = ops.transpose(ops.matmul(probs, vh), (0, 2, 1, 3))
        return ops.reshape(ctx, (ops.shape(q)[0], ops.shape(q)[1], h))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "heads": self.heads, "dropout": self.rate}


@keras.saving.register_keras_serializable(package="dl_harness")
class TableRows(layers.Layer):
    """A learned ``(rows, hidden)`` table used by position (``mode="prefix"``: adds rows
    ``0..s-1`` to the ``(b, s, h)`` input, torch's ``pos_emb(arange(s))``) and token-type
    embeddings (``mode="first"``: adds row 0, since every type id is 0)."""

    def __init__(self, rows: int, hidden: int, mode: str, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in ("prefix", "first"):
            raise ValueError(f"mode must be 'prefix' or 'first', got {mode!r}")
        self.rows, self.hidden, self.mode = rows, hidden, mode
        self.table = self.add_weight(
            shape=(rows, hidden), name="embeddings",
            initializer=keras.initializers.RandomNormal(stddev=0.02, seed=seed),
        )

    def call(self, x: Any) -> Any:
        if self.mode == "first":
            return x + self.table[0]
        return x + self.table[: ops.shape(x)[1]]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rows": self.rows, "hidden": self.hidden, "mode": self.mode}

    def weights_from_torch(self, params: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """This layer's weights from its torch twin (an ``nn.Embedding``: ``weight``)."""
        return [params["weight"]]


def build_bert(
    vocab_size: int,
    seq_len: int,
    max_positions: int,
    hidden: int,
    layers_: int,
    heads: int,
    ffn: int,
    dropout: float,
    num_classes: int,
    seed: int = 0,
) -> keras.Model:
    """BERT-style post-norm encoder classifier on int64 token ids ``(batch, seq)``; the
    twin of ``harness.workloads._torch_models.BertClassifier``."""
    seeds = _Seeds(seed * 1000)
    normal = lambda: keras.initializers.RandomNormal(stddev=0.02, seed=seeds())  # noqa: E731
    ids = keras.Input(shape=(seq_len,), dtype="int64", name="input_ids")
    x = layers.Embedding(vocab_size, hidden, embeddings_initializer=normal(), name="tok_emb")(ids)
    x = TableRows(max_positions, hidden, "prefix", seed=seeds(), name="pos_emb")(x)
    x = TableRows(2, hidden, "first", seed=seeds(), name="type_emb")(x)
    x = layers.LayerNormalization(epsilon=1e-12, name="emb_norm")(x)
    x = layers.Dropout(dropout, seed=seeds(), name="emb_drop")(x)
    for i in range(layers_):
        p = f"layers_{i}"
        q = layers.Dense(hidden, name=f"{p}_attn_q", **_bert_init(seeds))(x)
        k = layers.Dense(hidden, name=f"{p}_attn_k", **_bert_init(seeds))(x)
        v = layers.Dense(hidden, name=f"{p}_attn_v", **_bert_init(seeds))(x)
        ctx = SelfAttentionCore(heads, dropout, seed=seeds(), name=f"{p}_attn_core")(q, k, v)
        a = layers.Dense(hidden, name=f"{p}_attn_out", **_bert_init(seeds))(ctx)
        a = layers.Dropout(dropout, seed=seeds(), name=f"{p}_drop_attn")(a)
        x = layers.LayerNormalization(epsilon=1e-12, name=f"{p}_attn_norm")(layers.Add()([x, a]))
        y = layers.Dense(ffn, name=f"{p}_ffn_in", **_bert_init(seeds))(x)
        y = layers.Activation(lambda t: keras.activations.gelu(t, approximate=False),
                              name=f"{p}_gelu")(y)
        y = layers.Dense(hidden, name=f"{p}_ffn_out", **_bert_init(seeds))(y)
        y = layers.Dropout(dropout, seed=seeds(), name=f"{p}_drop_ffn")(y)
        x = layers.LayerNormalization(epsilon=1e-12, name=f"{p}_ffn_norm")(layers.Add()([x, y]))
    first = layers.Lambda(lambda t: t[:, 0], name="first_token")(x)
    pooled = layers.Dense(hidden, activation="tanh", name="pooler", **_bert_init(seeds))(first)
    out = layers.Dense(num_classes, name="classifier", **_bert_init(seeds))(pooled)
    return keras.Model(ids, out, name="bert_classifier")


# ---------------------------------------------------------------------------- inputs

# Parameter counts, the torch -> Keras weight transfer and graph FLOP counting are
# framework helpers shared with the backend, the quality track and ``harness verify``:
# they live in :mod:`harness.core.frameworks.keras_utils` (re-exported here).
from harness.core.frameworks.keras_utils import (  # noqa: E402,F401
    graph_matmul_flops,
    load_torch_state,
    trainable_params,
)


def keras_inputs(workload: Any, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The workload's numpy inputs in the layout its Keras model takes
    (:meth:`harness.api.Workload.backend_inputs` for ``"tensorflow"``)."""
    return list(workload.backend_inputs("tensorflow", arrays))
