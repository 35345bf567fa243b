"""PyTorch helpers shared by the torch backend, the variants and the quality track:
model statistics, batched prediction and the training thread policy (imports torch;
import this module only where torch is already needed).
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Iterator, Sequence

import torch
from torch import nn

#: Models under this many parameters train on one thread (see :func:`training_threads`).
SINGLE_THREAD_PARAMS: int = 200_000


def state_dict_bytes(model: nn.Module) -> int:
    """Size (bytes) of ``torch.save(model.state_dict())`` written to memory."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return len(buf.getvalue())


def model_stats(model: Any) -> dict[str, Any]:
    """``params`` (count), ``nonzero_params`` (count) and ``model_size_bytes`` (the
    serialized model) plus ``model_size_format``. Models that are not plain torch
    modules (e.g. an ONNX Runtime wrapper) provide ``harness_model_stats()``."""
    own = getattr(model, "harness_model_stats", None)
    if callable(own):
        return dict(own())
    params = 0
    nonzero = 0
    for p in model.parameters():
        params += p.numel()
        nonzero += int(torch.count_nonzero(p.detach()).item())
    return {
        "params": params,
        "nonzero_params": nonzero,
        "model_size_bytes": state_dict_bytes(model),
        "model_size_format": "torch.save(state_dict)",
    }


def predict(model: Any, inputs: Sequence[Any], batch_size: int = 256,
            context: Any = None, input_dtype: str | None = None) -> Any:
    """Logits (numpy float32) of ``model`` on numpy ``inputs`` in eval/inference mode.
    ``input_dtype`` (e.g. ``"bfloat16"``): floating inputs are cast to it, as the speed
    track feeds a model whose weights were cast once."""
    import numpy as np

    if hasattr(model, "eval"):
        model.eval()
    n = len(inputs[0])
    outs = []
    with torch.inference_mode():
        for i in range(0, n, batch_size):
            xs = [torch.from_numpy(np.ascontiguousarray(a[i:i + batch_size])) for a in inputs]
            if input_dtype is not None:
                xs = [x.to(getattr(torch, input_dtype)) if x.is_floating_point() else x for x in xs]
            with (context() if context is not None else contextlib.nullcontext()):
                out = model(*xs)
            outs.append(out.float().cpu().numpy())
    return np.concatenate(outs)


@contextlib.contextmanager
def training_threads(workload: Any) -> Iterator[None]:
    """Train models under :data:`SINGLE_THREAD_PARAMS` parameters on one thread: their
    kernels are too small to gain from more, and on a shared machine extra threads
    spin and wait (20x slower training was seen here). The previous count is restored."""
    old = torch.get_num_threads()
    if workload.analytic_params() < SINGLE_THREAD_PARAMS:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def load_numpy_state(model: nn.Module, state: Any) -> nn.Module:
    """Load a ``{name: numpy array}`` state (a ``state_dict`` converted to numpy) into
    ``model`` (strict: every key must match); returns the model."""
    import numpy as np

    model.load_state_dict({k: torch.from_numpy(np.array(v, copy=True)) for k, v in state.items()})
    return model


__all__ = ["SINGLE_THREAD_PARAMS", "state_dict_bytes", "model_stats", "predict", "training_threads",
           "load_numpy_state"]
