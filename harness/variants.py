"""Built-in variants. ``fp32`` is the baseline: the model as built, in float32."""

from __future__ import annotations

from typing import Any, ClassVar

from harness.api import Variant


class FP32Variant(Variant):
    """The unmodified float32 model: the baseline every other variant is compared to."""

    name: ClassVar[str] = "fp32"
    description: ClassVar[str] = "baseline: the model as built, float32 weights and activations"

    def apply_torch(self, model: Any, **ctx: Any) -> Any:
        return model

    def apply_tensorflow(self, model: Any, **ctx: Any) -> Any:
        return model
