"""A custom model for dl-harness: a GRU sequence classifier (docs/custom-models.md).

Run it with::

    harness run -w custom:docs/examples/custom_rnn.py:make_model --mode inference --mode training

The harness imports this file inside each cell's worker process and calls
``make_model(batch_size)``. It returns the model and one batch of inputs (here a
dict, passed to ``forward`` as keyword arguments) and, optionally, the training loss
as a function of the model's outputs.
"""

from __future__ import annotations

import torch
from torch import nn

VOCAB, EMBED, HIDDEN, CLASSES, SEQ_LEN = 1000, 32, 64, 4, 24


class GRUClassifier(nn.Module):
    """Token ids -> embedding -> 2-layer GRU -> the last hidden state -> class logits."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, EMBED)
        self.gru = nn.GRU(EMBED, HIDDEN, num_layers=2, batch_first=True)
        self.head = nn.Linear(HIDDEN, CLASSES)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.embed(tokens))  # (batch, seq, hidden)
        last = out[torch.arange(out.shape[0]), lengths - 1]  # each sequence's last real step
        return self.head(last)


def make_model(batch_size: int):
    """The factory: ``(model, inputs, loss_fn)`` for one batch of ``batch_size``."""
    torch.manual_seed(0)
    model = GRUClassifier()
    inputs = {
        "tokens": torch.randint(0, VOCAB, (batch_size, SEQ_LEN)),  # int64 token ids
        "lengths": torch.randint(SEQ_LEN // 2, SEQ_LEN + 1, (batch_size,)),
    }
    labels = torch.randint(0, CLASSES, (batch_size,))

    def loss_fn(logits: torch.Tensor) -> torch.Tensor:  # optional: without it, the mean of the output
        return nn.functional.cross_entropy(logits, labels)

    return model, inputs, loss_fn
