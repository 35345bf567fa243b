"""Structured pruning surgery on the built-in torch models (imports torch).

The workloads own their architectures, so they own this surgery: the
``prune-structured`` variant reaches it through
:meth:`harness.api.Workload.prune_structured`. Each function replaces layers in place
with smaller ones holding the kept rows / columns / channels, so the result is a
genuinely smaller dense model.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.workloads import kept_units
from harness.workloads._torch_models import MLP, BasicBlock, BertClassifier, SelfAttention


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest scores, in ascending index order."""
    return torch.sort(torch.topk(scores, k).indices).values


def _linear(src: nn.Linear, rows: torch.Tensor | None, cols: torch.Tensor | None) -> nn.Linear:
    w = src.weight.detach()
    b = src.bias.detach() if src.bias is not None else None
    if rows is not None:
        w = w[rows]
        b = b[rows] if b is not None else None
    if cols is not None:
        w = w[:, cols]
    out = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        out.weight.copy_(w)
        if b is not None:
            out.bias.copy_(b)
    return out


def prune_mlp(model: MLP, keep: float) -> None:
    """Keep the ``keep`` fraction of each hidden layer's units (by L2 norm of weights)."""
    layers = list(model.net)
    lin_idx = [i for i, m in enumerate(layers) if isinstance(m, nn.Linear)]
    for a, b in zip(lin_idx[:-1], lin_idx[1:]):
        src, nxt = layers[a], layers[b]
        scores = src.weight.detach().norm(dim=1) + nxt.weight.detach().norm(dim=0)
        idx = _top(scores, kept_units(src.out_features, keep))
        layers[a] = _linear(src, idx, None)
        layers[b] = _linear(nxt, None, idx)
    model.net = nn.Sequential(*layers)


def prune_block(block: BasicBlock, keep: float) -> None:
    """Keep the ``keep`` fraction of a BasicBlock's inner channels (conv1 out / conv2 in)."""
    c1, bn, c2 = block.conv1, block.bn1, block.conv2
    scores = c1.weight.detach().flatten(1).norm(dim=1) * bn.weight.detach().abs()
    idx = _top(scores, kept_units(c1.out_channels, keep))
    k = len(idx)
    dev, dt = c1.weight.device, c1.weight.dtype
    n1 = nn.Conv2d(c1.in_channels, k, c1.kernel_size, c1.stride, c1.padding, bias=False, device=dev, dtype=dt)
    nb = nn.BatchNorm2d(k, eps=bn.eps, momentum=bn.momentum, device=dev, dtype=dt)
    n2 = nn.Conv2d(k, c2.out_channels, c2.kernel_size, c2.stride, c2.padding, bias=False, device=dev, dtype=dt)
    with torch.no_grad():
        n1.weight.copy_(c1.weight[idx])
        nb.weight.copy_(bn.weight[idx])
        nb.bias.copy_(bn.bias[idx])
        nb.running_mean.copy_(bn.running_mean[idx])
        nb.running_var.copy_(bn.running_var[idx])
        n2.weight.copy_(c2.weight[:, idx])
    block.conv1, block.bn1, block.conv2 = n1, nb, n2


class PrunedSelfAttention(nn.Module):
    """Self-attention with ``heads`` kept heads of ``head_dim`` each; the output
    projection maps ``heads * head_dim`` back to the model width."""

    def __init__(self, q: nn.Linear, k: nn.Linear, v: nn.Linear, out: nn.Linear,
                 heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        self.q, self.k, self.v, self.out = q, k, v, out
        self.heads, self.head_dim, self.dropout = heads, head_dim, dropout

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, s, _ = t.shape
        return t.view(b, s, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        ctx = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out(ctx.transpose(1, 2).reshape(b, s, self.heads * self.head_dim))


def prune_attention(attn: Any, keep: float) -> nn.Module:
    """Keep the ``keep`` fraction of heads (by the L2 norm of their q/k/v rows and
    output columns)."""
    h, d = attn.heads, attn.head_dim
    per_head = torch.stack([
        attn.q.weight.detach().view(h, d, -1).flatten(1).norm(dim=1),
        attn.k.weight.detach().view(h, d, -1).flatten(1).norm(dim=1),
        attn.v.weight.detach().view(h, d, -1).flatten(1).norm(dim=1),
        attn.out.weight.detach().view(-1, h, d).transpose(0, 1).flatten(1).norm(dim=1),
    ]).sum(0)
    heads = _top(per_head, kept_units(h, keep))
    rows = (heads[:, None] * d + torch.arange(d, device=heads.device)[None, :]).flatten()
    return PrunedSelfAttention(
        _linear(attn.q, rows, None), _linear(attn.k, rows, None), _linear(attn.v, rows, None),
        _linear(attn.out, None, rows), len(heads), d, attn.dropout,
    )


def prune_bert(model: BertClassifier, keep: float) -> None:
    """Prune heads and FFN hidden units of every encoder layer."""
    for layer in model.layers:
        layer.attn = prune_attention(layer.attn, keep)
        fi, fo = layer.ffn_in, layer.ffn_out
        scores = fi.weight.detach().norm(dim=1) + fo.weight.detach().norm(dim=0)
        idx = _top(scores, kept_units(fi.out_features, keep))
        layer.ffn_in, layer.ffn_out = _linear(fi, idx, None), _linear(fo, None, idx)


def prune_structured(model: nn.Module, keep: float) -> bool:
    """Prune ``model`` in place, keeping the ``keep`` fraction of units; False when the
    architecture is not one of the built-ins."""
    if isinstance(model, MLP):
        prune_mlp(model, keep)
        return True
    if isinstance(model, BertClassifier):
        prune_bert(model, keep)
        return True
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    for b in blocks:
        prune_block(b, keep)
    return bool(blocks)


__all__ = ["prune_structured", "PrunedSelfAttention", "SelfAttention", "kept_units"]
