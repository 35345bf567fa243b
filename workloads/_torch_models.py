"""PyTorch ``nn.Module`` definitions of the built-in workloads.

Imported only from the workloads' ``build_torch()`` methods, so importing a workload
module never imports torch. Every module takes its inputs in the order of the
workload's ``input_specs()`` and returns logits of shape ``(batch, num_classes)``.

The transformer is written out by hand (separate q/k/v/out ``nn.Linear`` layers and
``F.scaled_dot_product_attention``) rather than with ``nn.TransformerEncoderLayer`` /
``nn.MultiheadAttention``: their CPU inference fast path is invisible to
``FlopCounterMode``, breaks dynamic quantization, and would be hard to twin exactly in
another framework.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------- MLP


class MLP(nn.Module):
    """``Linear -> ReLU`` for each hidden width, then ``Linear`` to the classes."""

    def __init__(self, input_dim: int, hidden: Sequence[int], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: float32 ``(batch, input_dim)`` -> logits ``(batch, num_classes)``."""
        return self.net(x)


# ---------------------------------------------------------------------------------- CNN


class BasicBlock(nn.Module):
    """ResNet basic block: conv3x3-BN-ReLU-conv3x3-BN plus shortcut, ReLU after the add.

    The shortcut is a 1x1 conv + BN projection when the stride or the channel count
    changes, the identity otherwise.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet-style classifier: stem, stages of :class:`BasicBlock`, global average
    pool, linear head. With the ResNet-18 settings it matches torchvision's
    ``resnet18`` layer for layer (11,689,512 parameters)."""

    def __init__(
        self,
        in_channels: int,
        stem_channels: int,
        stem_kernel: int,
        stem_stride: int,
        stem_pool: bool,
        channels: Sequence[int],
        blocks: Sequence[int],
        num_classes: int,
    ) -> None:
        super().__init__()
        stem: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                stem_channels,
                stem_kernel,
                stride=stem_stride,
                padding=stem_kernel // 2,
                bias=False,
            ),
            nn.BatchNorm2d(stem_channels),
            nn.ReLU(),
        ]
        if stem_pool:
            stem.append(nn.MaxPool2d(3, stride=2, padding=1))
        self.stem = nn.Sequential(*stem)
        stages: list[nn.Module] = []
        width = stem_channels
        for i, (ch, n) in enumerate(zip(channels, blocks)):
            stride = 1 if i == 0 else 2
            layer = [BasicBlock(width, ch, stride)]
            layer += [BasicBlock(ch, ch, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layer))
            width = ch
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # torchvision's ResNet initialisation
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: float32 ``(batch, C, H, W)`` -> logits ``(batch, num_classes)``."""
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


# -------------------------------------------------------------------------- transformer


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections (with bias),
    computed with ``F.scaled_dot_product_attention`` (no mask: all tokens valid)."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = hidden // heads
        self.dropout = dropout
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, s, _ = t.shape
        return t.view(b, s, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        ctx = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(ctx.transpose(1, 2).reshape(b, s, h))


class EncoderLayer(nn.Module):
    """Post-norm BERT encoder layer: ``LN(x + drop(attn(x)))`` then
    ``LN(x + drop(W2 gelu(W1 x)))`` with exact (erf) GELU."""

    def __init__(self, hidden: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.attn = SelfAttention(hidden, heads, dropout)
        self.attn_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.ffn_in = nn.Linear(hidden, ffn)
        self.ffn_out = nn.Linear(ffn, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn_norm(x + self.drop(self.attn(x)))
        y = self.ffn_out(F.gelu(self.ffn_in(x)))
        return self.ffn_norm(x + self.drop(y))


class BertClassifier(nn.Module):
    """BERT-style encoder classifier.

    Token + learned position + token-type embeddings (type ids are all zero, so row 0
    of the 2-row type table is added) -> LayerNorm(eps 1e-12) -> dropout -> encoder
    layers -> pooler ``tanh(Linear(h, h))`` on token 0 -> ``Linear(h, num_classes)``.
    Weights use BERT's initialisation (normal, std 0.02; zero biases).
    """

    TYPE_VOCAB = 2

    def __init__(
        self,
        vocab_size: int,
        seq_len: int,
        max_positions: int,
        hidden: int,
        layers: int,
        heads: int,
        ffn: int,
        dropout: float,
        num_classes: int,
    ) -> None:
        super().__init__()
        self.seq_len = seq_len
        self.tok_emb = nn.Embedding(vocab_size, hidden)
        self.pos_emb = nn.Embedding(max_positions, hidden)
        self.type_emb = nn.Embedding(self.TYPE_VOCAB, hidden)
        self.emb_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.emb_drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(hidden, heads, ffn, dropout) for _ in range(layers)
        )
        self.pooler = nn.Linear(hidden, hidden)
        self.classifier = nn.Linear(hidden, num_classes)
        self.register_buffer("position_ids", torch.arange(max_positions), persistent=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``input_ids``: int64 ``(batch, seq)`` -> logits ``(batch, num_classes)``."""
        s = input_ids.shape[1]
        x = (
            self.tok_emb(input_ids)
            + self.pos_emb(self.position_ids[:s])
            + self.type_emb.weight[0]
        )
        x = self.emb_drop(self.emb_norm(x))
        for layer in self.layers:
            x = layer(x)
        pooled = torch.tanh(self.pooler(x[:, 0]))
        return self.classifier(pooled)

