"""``fp16`` and ``bf16`` mixed precision.

PyTorch: the weights stay float32 and each step runs under
``torch.autocast(device_type, dtype)``, which casts matmuls and convolutions to the
low-precision type and keeps precision-sensitive ops (softmax, norms, losses) in
float32. On CPU, fp16 autocast is supported by torch 2.13 but most CPUs have no fast
fp16 kernels, and bf16 is only fast with AVX512_BF16/AMX: measure, don't assume.
Training under fp16 autocast runs without a GradScaler (the step's speed is what is
measured; for real fp16 training on CUDA use a scaler).

TensorFlow: a Keras mixed-precision policy (``mixed_float16`` / ``mixed_bfloat16``).
Keras layers read the global policy when they are constructed, so ``apply_tensorflow``
rebuilds the workload's model under the policy (inside the backend's device scope),
copies the fp32 model's weights into it (variables stay float32) and restores the
global policy; the backend needs no extra hook.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

from harness.api import Variant
from harness.variants.base import CompressionConfig


class _MixedPrecision(Variant):
    torch_dtype: ClassVar[str]
    keras_policy: ClassVar[str]
    Config = CompressionConfig

    def apply_torch(self, model: Any, **ctx: Any) -> Any:
        return model

    def autocast(self, backend: str, device: str) -> contextlib.AbstractContextManager[None]:
        if backend != "torch":
            return contextlib.nullcontext()
        import torch

        device_type = str(device).split(":")[0]
        return torch.autocast(device_type=device_type, dtype=getattr(torch, self.torch_dtype))

    # -- TensorFlow ----------------------------------------------------------------
    def apply_tensorflow(self, model: Any, *, workload: Any = None, **ctx: Any) -> Any:
        """Rebuild the model under the Keras policy with the same weights (policies are
        read when layers are constructed, so the backend's fp32 build is replaced)."""
        from harness.variants._tf_utils import rebuild_with_policy

        return rebuild_with_policy(model, workload, self.keras_policy)


class FP16Variant(_MixedPrecision):
    """float16 mixed precision (autocast / Keras ``mixed_float16``)."""

    name: ClassVar[str] = "fp16"
    description: ClassVar[str] = "float16 mixed precision: torch.autocast(float16) / Keras mixed_float16"
    torch_dtype: ClassVar[str] = "float16"
    keras_policy: ClassVar[str] = "mixed_float16"


class BF16Variant(_MixedPrecision):
    """bfloat16 mixed precision (autocast / Keras ``mixed_bfloat16``)."""

    name: ClassVar[str] = "bf16"
    description: ClassVar[str] = "bfloat16 mixed precision: torch.autocast(bfloat16) / Keras mixed_bfloat16"
    torch_dtype: ClassVar[str] = "bfloat16"
    keras_policy: ClassVar[str] = "mixed_bfloat16"
