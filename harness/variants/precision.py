"""``fp16`` and ``bf16`` mixed precision, ``tf32``, and what "fp32" means.

PyTorch, ``fp16`` / ``bf16``:

* **Inference is measured as it is deployed: weights cast once.** ``apply_torch``
  returns ``model.to(dtype)`` for inference; the backend casts the floating inputs once
  before timing (:meth:`_MixedPrecision.cast_once_dtype`) and runs the step *without*
  autocast. Autocast is the wrong tool here: under ``torch.inference_mode()`` its cast
  cache does not work, so every step re-cast every weight (4 steps of the tiny MLP made
  28 ``_to_copy`` calls). The cell records ``runtime.precision_method = "weights and
  inputs cast once to bfloat16 (model.to(dtype)); no autocast"``. Norms and softmax
  then run in the low-precision type too, as in a deployed half-precision model; the
  quality track evaluates exactly this model.
* **Training keeps autocast**: fp32 master weights, each step under
  ``torch.autocast(device_type, dtype)`` (matmuls/convolutions in the low-precision
  type, precision-sensitive ops in float32); ``precision_method = "torch.autocast(
  bfloat16) per step, fp32 master weights"``. Training under fp16 autocast runs without
  a GradScaler (the step's speed is what is measured; for real fp16 training on CUDA
  use a scaler).
* On CPU, fp16 is supported by torch 2.13 but most CPUs have no fast fp16 kernels, and
  bf16 is only fast with AVX512_BF16/AMX: measure, don't assume.

**Strict fp32 and ``tf32``.** Every variant declares ``fp32_math`` (see
:class:`harness.api.Variant`): ``"ieee"`` (the default, every variant but ``tf32``)
means float32 matmuls and convolutions run in IEEE fp32 on every device; ``"tf32"``
allows TensorFloat-32 (10-bit mantissa inputs, fp32 accumulation) on NVIDIA Ampere and
newer GPUs. PyTorch's own defaults are *not* strict: cuDNN convolutions run in TF32 by
default (``torch.backends.cudnn.conv.fp32_precision == "tf32"``), so an "fp32" CNN on an
A100 was really TF32. :func:`set_fp32_math` (in :mod:`harness.core.frameworks.torch_precision`) sets every precision flag the harness knows
(torch 2.13's ``fp32_precision`` API only: mixing it with the legacy ``allow_tf32``
flags raises) and :func:`fp32_math_settings` reads them back for the cell's
``runtime.precision``. The ``tf32`` variant is skipped with the reason where there is
no TF32: CPUs, GPUs below compute capability 8.0, TPUs.

TensorFlow: ``fp16``/``bf16`` use a Keras mixed-precision policy (``mixed_float16`` /
``mixed_bfloat16``). Keras layers read the global policy when they are constructed,
so ``apply_tensorflow`` rebuilds the workload's model under the policy (inside the
backend's device scope), copies the fp32 model's weights into it (variables stay
float32) and restores the global policy. ``tf32``: the TensorFlow backend reads
``fp32_math``, sets ``tf.config.experimental.enable_tensor_float_32_execution`` and
skips the cell where there is no TF32 (see ``backends/tf_backend.py``).
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

from harness.api import SkipCell, Variant
from harness.core.frameworks.torch_precision import (  # noqa: F401 - re-exported: the variants' vocabulary
    FP32_MATH,
    TF32_CPU_REASON,
    TF32_TPU_REASON,
    fp32_math_settings,
    set_fp32_math,
    tf32_unsupported_reason,
)
from harness.variants.base import CompressionConfig


class _MixedPrecision(Variant):
    torch_dtype: ClassVar[str]
    keras_policy: ClassVar[str]
    Config = CompressionConfig

    def cast_once_dtype(self, backend: str, mode: str) -> str | None:
        """The dtype the weights are cast to once by ``apply`` (torch inference): the
        backend then casts floating inputs once before timing and runs the step without
        autocast. None: the step runs under :meth:`autocast` (training)."""
        return self.torch_dtype if backend == "torch" and mode == "inference" else None

    def precision_method(self, backend: str, mode: str) -> str:
        """How the cell runs in low precision (``runtime.precision_method``)."""
        if backend == "torch":
            if self.cast_once_dtype(backend, mode):
                return f"weights and inputs cast once to {self.torch_dtype} (model.to(dtype)); no autocast"
            return f"torch.autocast({self.torch_dtype}) per step, fp32 master weights"
        return f"Keras {self.keras_policy} policy (float32 variables, {self.torch_dtype} compute)"

    def apply_torch(self, model: Any, *, mode: str = "inference", **ctx: Any) -> Any:
        """Inference: the model cast once to the low-precision dtype. Training: unchanged
        (fp32 master weights; the step runs under :meth:`autocast`)."""
        if self.cast_once_dtype("torch", mode):
            import torch

            return model.to(getattr(torch, self.torch_dtype))
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
    """float16: weights cast once for inference, autocast for training / Keras ``mixed_float16``."""

    name: ClassVar[str] = "fp16"
    description: ClassVar[str] = ("float16: inference with weights cast once, training under torch.autocast(float16) "
                                  "/ Keras mixed_float16")
    torch_dtype: ClassVar[str] = "float16"
    keras_policy: ClassVar[str] = "mixed_float16"


class BF16Variant(_MixedPrecision):
    """bfloat16: weights cast once for inference, autocast for training / Keras ``mixed_bfloat16``."""

    name: ClassVar[str] = "bf16"
    description: ClassVar[str] = ("bfloat16: inference with weights cast once, training under "
                                  "torch.autocast(bfloat16) / Keras mixed_bfloat16")
    torch_dtype: ClassVar[str] = "bfloat16"
    keras_policy: ClassVar[str] = "mixed_bfloat16"


class TF32Variant(Variant):
    """float32 weights and activations with TensorFloat-32 matmuls and convolutions
    (NVIDIA Ampere+ GPUs). The model is unchanged: the backend reads ``fp32_math``."""

    name: ClassVar[str] = "tf32"
    description: ClassVar[str] = ("float32 with TensorFloat-32 matmuls/convolutions (NVIDIA Ampere+ GPUs only; "
                                  "every other variant runs strict IEEE fp32)")
    Config = CompressionConfig
    fp32_math: ClassVar[str] = "tf32"

    def precision_method(self, backend: str, mode: str) -> str:
        return "float32 weights and activations; float32 matmuls/convolutions in TF32"

    def supports_backend(self, backend: str) -> bool:
        return backend in ("torch", "tensorflow")

    def apply_torch(self, model: Any, *, device: Any = "cpu", **ctx: Any) -> Any:
        import torch

        reason = tf32_unsupported_reason(torch, device)
        if reason:
            raise SkipCell(reason)
        return model

    def apply_tensorflow(self, model: Any, **ctx: Any) -> Any:
        """The model unchanged: the TensorFlow backend reads ``fp32_math``, enables TF32
        execution and skips the cell with its reason where the device has no TF32."""
        return model
