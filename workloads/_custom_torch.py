"""The torch side of custom models (:mod:`harness.workloads.custom`): the harness passes
inputs positionally; a factory that gave a dict of inputs gets them back as keywords.
Imported only inside a cell (it imports torch)."""

from __future__ import annotations

from typing import Any

import torch


class CustomModule(torch.nn.Module):
    """``model(*inputs)``, or ``model(**dict(zip(keys, inputs)))`` for dict inputs; the
    model's output is returned unchanged (the workload's loss reads it)."""

    def __init__(self, model: torch.nn.Module, keys: list[str] | None) -> None:
        super().__init__()
        self.model = model
        self.keys = keys

    def forward(self, *inputs: Any) -> Any:
        if self.keys is not None:
            return self.model(**dict(zip(self.keys, inputs)))
        return self.model(*inputs)
