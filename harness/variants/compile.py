"""``compile``: graph compilation.

PyTorch: ``torch.compile(model)`` (inductor, default mode; on CPU it generates C++
and needs a C++ compiler). Compilation happens lazily on the first call, so the
returned module (:class:`~harness.variants._torch_utils.FirstCallTimer`, whose
``eager_module`` is the uncompiled model the FLOP counter runs) times that call and
reports it as ``metrics.compile_time_s``
(compilation + one execution, seconds); the harness's warm-up absorbs it and the timed
loop measures the steady state. In training cells the backward graph is compiled on
the first backward pass, which is inside ``first_iter_ms`` but not ``compile_time_s``.
If inductor fails, the cell fails with the compiler's error (recorded, never hidden).

TensorFlow: the same variant name drives XLA: the variant declares
``jit_compile = True`` (:attr:`harness.api.Variant.jit_compile`), so the TensorFlow
backend compiles its step with ``jit_compile=True`` and records the compile time
itself; the model is returned unchanged.
"""

from __future__ import annotations

from typing import Any, ClassVar

from harness.api import Variant
from harness.variants.base import CompressionConfig


class CompileVariant(Variant):
    """torch.compile (PyTorch) / XLA jit_compile (TensorFlow)."""

    replaces_model = True  # harness.api.Variant.replaces_model

    name: ClassVar[str] = "compile"
    description: ClassVar[str] = "torch.compile (inductor) / TensorFlow XLA jit_compile; compile time reported separately"
    Config = CompressionConfig
    jit_compile: ClassVar[bool] = True  # the backend's graph compiler (XLA on TensorFlow)
    tf_jit_compile: ClassVar[bool] = True  # the older name, kept for code that reads it

    def __init__(self, config: CompressionConfig | None = None) -> None:
        super().__init__(config)
        self._wrapper: Any = None

    def apply_torch(self, model: Any, **ctx: Any) -> Any:
        import torch

        from harness.variants._torch_utils import FirstCallTimer

        self._wrapper = FirstCallTimer(torch.compile(model), model)
        return self._wrapper

    def apply_tensorflow(self, model: Any, **ctx: Any) -> Any:
        return model

    def metrics(self) -> dict[str, Any]:
        w = self._wrapper
        if w is None or w.first_call_s is None:
            return {}
        return {"compile_time_s": w.first_call_s, "compile_method": "torch.compile (inductor), first call"}

    def unavailable(self) -> dict[str, str]:
        w = self._wrapper
        if w is None:
            return {}
        if w.error:
            return {"compile_time_s": f"torch.compile failed: {w.error}"}
        if w.first_call_s is None:
            return {"compile_time_s": "the compiled model was never called"}
        return {}
