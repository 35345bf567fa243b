"""The torch side of the model zoo (:mod:`harness.workloads.zoo`): a thin module that
takes the harness's positional tensor inputs and returns one tensor, so every variant
(autocast, compile, ONNX export for int8, pruning) and the FLOP counter see a plain
``nn.Module``. Imported only inside a cell (it imports torch)."""

from __future__ import annotations

from typing import Any

import torch


class HFModule(torch.nn.Module):
    """``model(x)`` -> logits (vision, causal LM) or the last hidden state (encoders).

    Text models get an all-ones ``attention_mask`` built inside ``forward``: it is what
    a full batch without padding means, and it keeps the ONNX export off the packed-
    sequence path (``aten::diff``) that opset 17 cannot express. Causal LMs run without
    a KV cache here (one full forward per step)."""

    def __init__(self, model: Any, kind: str) -> None:
        super().__init__()
        self.model = model
        self.kind = kind
        # the transformers model is the unit users name: keep its config reachable
        self.config = getattr(model, "config", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "vision":
            return self.model(pixel_values=x).logits
        mask = torch.ones_like(x)
        if self.kind == "causal_lm":
            return self.model(input_ids=x, attention_mask=mask, use_cache=False).logits
        return self.model(input_ids=x, attention_mask=mask).last_hidden_state
