"""``transformer``: a BERT-style encoder classifier on token ids; ``base`` ~ BERT-base.

=====  =====  ===  =======  ======  ======  =====  ====  =======  =====  ===========  ==========
size   vocab  seq  max_pos  hidden  layers  heads  ffn   classes  batch  params       fwd GFLOPs
                                                                                      / sample
=====  =====  ===  =======  ======  ======  =====  ====  =======  =====  ===========  ==========
tiny   128    16   16       32      2       2      64    10       4           23,210  0.000593
small  8192   128  128      256     4       4      1024  10       16       5,358,346  0.873
base   30522  128  512      768     12      12     3072  2        8      109,483,778  22.35
=====  =====  ===  =======  ======  ======  =====  ====  =======  =====  ===========  ==========

``base`` is BERT-base (109,482,240 parameters with the pooler) plus a 2-class head
(1,538). Attention products are 0.067 / 0.60 GFLOPs per sample of small / base.

(Computed from :meth:`TransformerWorkload.analytic_params` / ``analytic_flops(1)``; the
tests check them against the torch model.)

FLOP counting caveat: on CPU, ``torch.utils.flop_counter.FlopCounterMode`` counts
nothing for ``F.scaled_dot_product_attention`` unless the math backend is forced
(``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)``); the analytic count includes the
attention products either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from harness.api import InputSpec, WorkloadConfig
from harness.workloads import BUILD_SEED, BuiltinWorkload, _check_int

if TYPE_CHECKING:  # pragma: no cover
    import torch

TYPE_VOCAB: int = 2  # token-type (segment) vocabulary, as in BERT; type ids are all 0


@dataclass(frozen=True)
class TransformerConfig(WorkloadConfig):
    """Architecture of the BERT-style encoder. Defaults are the ``tiny`` preset."""

    vocab_size: int = 128  # token vocabulary (input ids are in [0, vocab_size))
    seq_len: int = 16  # tokens per sample
    max_positions: int = 16  # rows of the learned position table; >= seq_len
    hidden: int = 32  # model width h
    layers: int = 2  # encoder layers L
    heads: int = 2  # attention heads; must divide hidden
    ffn: int = 64  # feed-forward inner width f
    dropout: float = 0.1  # probability, embeddings / attention / residual branches
    num_classes: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("vocab_size", self.vocab_size, 1)
        _check_int("seq_len", self.seq_len, 1)
        _check_int("max_positions", self.max_positions, 1)
        if self.seq_len > self.max_positions:
            raise ValueError(
                f"seq_len must be <= max_positions ({self.max_positions}), got {self.seq_len}"
            )
        _check_int("hidden", self.hidden, 1)
        _check_int("layers", self.layers, 1)
        _check_int("heads", self.heads, 1)
        if self.hidden % self.heads != 0:
            raise ValueError(
                f"hidden must be a multiple of heads ({self.heads}), got hidden={self.hidden}"
            )
        _check_int("ffn", self.ffn, 1)
        if (
            isinstance(self.dropout, bool)
            or not isinstance(self.dropout, (int, float))
            or not 0.0 <= self.dropout < 1.0
        ):
            raise ValueError(f"dropout must be a float in [0, 1), got {self.dropout!r}")


class TransformerWorkload(BuiltinWorkload):
    """BERT-style post-norm encoder classifier.

    Notation: vocabulary ``V``, positions ``P``, width ``h``, layers ``L``, heads ``H``
    (head size ``d = h / H``), feed-forward width ``f``, classes ``C``, sequence ``s``.

    Parameters::

        embeddings = V*h + P*h + 2*h (token type) + 2*h (LayerNorm)
        per layer  = 4*(h*h + h) (q, k, v, out) + 2*h (LN)
                     + (h*f + f) + (f*h + h) (FFN) + 2*h (LN)
        params     = embeddings + L * per layer + (h*h + h) (pooler) + (h*C + C)

    Forward FLOPs for a batch of ``b`` (2 per multiply-accumulate)::

        per layer = 2*b*s*4*h*h          q, k, v, out projections
                  + 2*b*H*s*s*d          Q K^T        (= 2*b*s*s*h)
                  + 2*b*H*s*s*d          softmax(.) V (= 2*b*s*s*h)
                  + 2*b*s*2*h*f          FFN
        flops(b)  = L * per layer + 2*b*h*h (pooler, token 0 only) + 2*b*h*C

    i.e. ``L * (8bsh^2 + 4bs^2h + 4bshf) + 2bh(h + C)``. Embedding look-ups, LayerNorm,
    softmax, GELU, dropout, bias and residual adds are excluded.
    """

    name: ClassVar[str] = "transformer"
    description: ClassVar[str] = (
        "BERT-style post-norm encoder classifier on int64 token ids; base ~ BERT-base"
    )
    Config: ClassVar[type[WorkloadConfig]] = TransformerConfig
    presets: ClassVar[Mapping[str, WorkloadConfig]] = {
        "tiny": TransformerConfig(
            vocab_size=128, seq_len=16, max_positions=16, hidden=32, layers=2, heads=2,
            ffn=64, num_classes=10,
        ),
        "small": TransformerConfig(
            vocab_size=8192, seq_len=128, max_positions=128, hidden=256, layers=4, heads=4,
            ffn=1024, num_classes=10,
        ),
        "base": TransformerConfig(  # BERT-base encoder + pooler, 2-class head
            vocab_size=30522, seq_len=128, max_positions=512, hidden=768, layers=12,
            heads=12, ffn=3072, num_classes=2,
        ),
    }
    default_batch_size: ClassVar[Mapping[str, int]] = {"tiny": 4, "small": 16, "base": 8}

    config: TransformerConfig

    def input_specs(self) -> Sequence[InputSpec]:
        """One sequence of ``seq_len`` int64 token ids in ``[0, vocab_size)`` per sample."""
        c = self.config
        return [
            InputSpec(name="input_ids", shape=(c.seq_len,), dtype="int64", high=c.vocab_size)
        ]

    def analytic_params(self) -> int:
        """Trainable parameters (count); see the class docstring for the formula."""
        c = self.config
        h, f = c.hidden, c.ffn
        embeddings = c.vocab_size * h + c.max_positions * h + TYPE_VOCAB * h + 2 * h
        per_layer = 4 * (h * h + h) + 2 * h + (h * f + f) + (f * h + h) + 2 * h
        head = (h * h + h) + (h * c.num_classes + c.num_classes)
        return embeddings + c.layers * per_layer + head

    def attention_flops(self, batch_size: int) -> int:
        """FLOPs of the two attention products (Q K^T and softmax(.) V) over all layers:
        ``L * 4 * b * s^2 * h``. Part of :meth:`analytic_flops`; exposed because some
        counters (FlopCounterMode on CPU SDPA) miss exactly this part."""
        c = self.config
        head_dim = c.hidden // c.heads
        per_product = 2 * batch_size * c.heads * c.seq_len * c.seq_len * head_dim
        return c.layers * 2 * per_product

    def analytic_flops(self, batch_size: int) -> int:
        """Forward FLOPs for ``batch_size`` sequences; see the class docstring."""
        c = self.config
        b, s, h, f = batch_size, c.seq_len, c.hidden, c.ffn
        projections = 2 * b * s * 4 * h * h
        ffn = 2 * b * s * 2 * h * f
        head = 2 * b * h * h + 2 * b * h * c.num_classes
        return c.layers * (projections + ffn) + self.attention_flops(b) + head

    def build_torch(self) -> "torch.nn.Module":
        """The fp32 torch model, initialised with :data:`harness.workloads.BUILD_SEED`."""
        import torch

        from harness.workloads._torch_models import BertClassifier

        c = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(BUILD_SEED)
            model = BertClassifier(
                vocab_size=c.vocab_size,
                seq_len=c.seq_len,
                max_positions=c.max_positions,
                hidden=c.hidden,
                layers=c.layers,
                heads=c.heads,
                ffn=c.ffn,
                dropout=float(c.dropout),
                num_classes=c.num_classes,
            )
        return model.float()

    def build_tensorflow(self) -> "Any":
        """The fp32 Keras twin of :meth:`build_torch` (see ``harness.workloads._keras_models``)."""
        from harness.workloads._keras_models import build_bert

        c = self.config
        return build_bert(
            vocab_size=c.vocab_size,
            seq_len=c.seq_len,
            max_positions=c.max_positions,
            hidden=c.hidden,
            layers_=c.layers,
            heads=c.heads,
            ffn=c.ffn,
            dropout=float(c.dropout),
            num_classes=c.num_classes,
            seed=BUILD_SEED,
        )
