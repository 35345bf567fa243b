"""Shared configuration of the compression variants (no framework imports)."""

from __future__ import annotations

from dataclasses import dataclass

from harness.api import DEFAULT_QUALITY_GATE, VariantConfig

__all__ = ["DEFAULT_QUALITY_GATE", "CompressionConfig", "check_fraction"]


@dataclass(frozen=True)
class CompressionConfig(VariantConfig):
    """Options every built-in variant shares.

    ``quality_gate``: minimum accuracy as a fraction of fp32 accuracy, in (0, 1].
    """

    quality_gate: float = DEFAULT_QUALITY_GATE

    def __post_init__(self) -> None:
        g = self.quality_gate
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0.0 < g <= 1.0:
            raise ValueError(f"quality_gate must be a fraction in (0, 1], got {g!r}")


def check_fraction(field: str, value: object, low_open: float = 0.0, high: float = 1.0) -> None:
    """Require ``low_open < value < high`` (a float); raise ValueError naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low_open < value < high:
        raise ValueError(f"{field} must be a number in ({low_open}, {high}), got {value!r}")
