"""Built-in variants: the ``fp32`` baseline and the compression / acceleration variants.

=====================  =====================================================  ==========
name                   what it does                                           module
=====================  =====================================================  ==========
fp32                   the model as built, strict IEEE float32 (TF32 off)     here
tf32                   float32 with TensorFloat-32 matmuls/convs (Ampere+)    precision
fp16, bf16             inference: weights cast once; training: autocast       precision
                       (torch); Keras mixed-precision policies
int8-dynamic           int8 weights, activations quantized per batch          quantize
int8-static            int8 weights and activations, calibrated scales        quantize
prune-unstructured     global magnitude pruning of Linear/Conv weights        prune
prune-structured       removes whole hidden units / channels / heads          prune
distill                a smaller student trained from the fp32 teacher        distill
compile                torch.compile (PyTorch) / XLA jit_compile (TensorFlow)  compile
=====================  =====================================================  ==========

Every variant works on *any* model of a workload's architecture: the speed track
applies it to the freshly built preset model, the quality track
(:mod:`harness.core.quality`) to the fp32 model trained on the digits, passing the data a
variant may need in ``apply``'s context (see :class:`harness.api.Variant`).
Importing this package imports no framework.
"""

from __future__ import annotations

from typing import Any, ClassVar

from harness.api import Variant
from harness.variants.base import CompressionConfig


class FP32Variant(Variant):
    """The unmodified float32 model: the baseline every other variant is compared to."""

    name: ClassVar[str] = "fp32"
    description: ClassVar[str] = "baseline: the model as built, float32 weights and activations"
    Config = CompressionConfig

    def apply_torch(self, model: Any, **ctx: Any) -> Any:
        return model

    def apply_tensorflow(self, model: Any, **ctx: Any) -> Any:
        return model

    def apply_onnxruntime(self, model: Any, **ctx: Any) -> Any:
        return model  # the fp32 ONNX graph (bytes), unchanged


__all__ = ["FP32Variant"]
