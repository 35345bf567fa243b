"""PyTorch helpers of the variants: example/calibration inputs, ONNX export, an
``nn.Module`` wrapper around an ONNX Runtime session and the compile wrapper.

Imported only inside ``apply_torch`` methods (imports torch). Model statistics and
batched prediction, which the backend and the quality track share, live in
:mod:`harness.core.frameworks.torch_utils`.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import torch
from torch import nn

from harness.core.frameworks.torch_utils import model_stats


from harness.core.frameworks.onnx_export import (EXPORT_CACHE_VERSION, OPSET, example_batches,  # noqa: F401
                                                 export_cache_key, export_onnx, input_names, onnx_stats,
                                                 weights_digest)


class OrtModel(nn.Module):
    """An ONNX Runtime CPU session behind ``model(*inputs)``: torch tensors in, a torch
    tensor of logits out (zero-copy through numpy). It has no torch parameters; its
    size and parameter counts come from the ONNX graph (``harness_model_stats``)."""

    def __init__(self, model_bytes: bytes, names: Sequence[str], threads: int | None = None,
                 fmt: str = "onnx") -> None:
        super().__init__()
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads or torch.get_num_threads())
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self._session = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
        self._names = list(names)
        self._bytes = model_bytes
        self._fmt = fmt
        self._stats: tuple[int, int] | None = None

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        feed = {n: t.detach().cpu().numpy() for n, t in zip(self._names, inputs)}
        return torch.from_numpy(self._session.run(None, feed)[0])

    def harness_model_stats(self) -> dict[str, Any]:
        if self._stats is None:
            self._stats = onnx_stats(self._bytes)
        params, nonzero = self._stats
        return {
            "params": params,
            "nonzero_params": nonzero,
            "model_size_bytes": len(self._bytes),
            "model_size_format": self._fmt,
        }


class FirstCallTimer(nn.Module):
    """Wraps a compiled module and records how long its first call took (seconds):
    with ``torch.compile`` that call traces and compiles the graph, then runs it.

    ``eager_module`` is the uncompiled module with the same weights: post-measurement
    analyses (the FLOP counter) run it instead of triggering the compiler (the
    compiled module's ``_orig_mod`` is hidden behind this wrapper)."""

    def __init__(self, compiled: Any, original: nn.Module) -> None:
        super().__init__()
        self.compiled = compiled
        self.original = original  # registered so parameters()/state_dict() see the weights
        self.first_call_s: float | None = None
        self.error: str | None = None

    def forward(self, *inputs: Any) -> Any:
        if self.first_call_s is not None:
            return self.compiled(*inputs)
        t0 = time.perf_counter()
        try:
            out = self.compiled(*inputs)
        except Exception as e:  # record, then fail the cell honestly
            self.error = f"{type(e).__name__}: {e}"[:500]
            raise
        self.first_call_s = time.perf_counter() - t0
        return out

    @property
    def eager_module(self) -> nn.Module:
        """The uncompiled module (same parameters as the compiled one)."""
        return self.original

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:  # serialize the weights once
        return self.original.state_dict(*args, **kwargs)

    def harness_model_stats(self) -> dict[str, Any]:
        return model_stats(self.original)
