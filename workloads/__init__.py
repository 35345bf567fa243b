"""Built-in workloads: ``mlp``, ``cnn`` (ResNet-style) and ``transformer`` (BERT-style).

Each workload module defines its architecture once (a frozen ``Config``, size presets,
exact analytic parameter and FLOP counts) and builds it per backend in
``build_<backend>()``. Framework code lives in private modules (e.g.
``harness.workloads._torch_models``) that are imported only inside those builders, so importing
this package or any workload module never imports torch.

The three classes are re-exported lazily (``from harness.workloads import MLPWorkload`` works)
without importing anything heavy. Discovery goes through the ``dl_harness.workloads``
entry points declared in ``pyproject.toml``, not through this package.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

from harness.api import QualityData, SkipCell, Workload

__all__ = ["MLPWorkload", "CNNWorkload", "TransformerWorkload", "BuiltinWorkload", "kept_units"]

_LAZY = {
    "MLPWorkload": "harness.workloads.mlp",
    "CNNWorkload": "harness.workloads.cnn",
    "TransformerWorkload": "harness.workloads.transformer",
}


def __getattr__(name: str) -> Any:
    """Import a workload class on first access (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'workloads' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


#: Seed every ``build_<backend>()`` uses for weight initialisation (inside a forked RNG,
#: so the caller's global RNG state is untouched): two builds give identical weights.
BUILD_SEED: int = 0

# ------------------------------------------------------------------ config validation
# Small helpers shared by the workload Configs' ``__post_init__``. They only validate:
# each raises ValueError naming the field and the allowed values.


def _check_int(field: str, value: Any, minimum: int) -> None:
    """Require ``value`` to be an int (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{field} must be an int >= {minimum}, got {value!r}")


def _check_int_tuple(field: str, value: Any, minimum: int, allow_empty: bool = False) -> None:
    """Require ``value`` to be a tuple of ints, each >= ``minimum``."""
    if not isinstance(value, tuple):
        raise ValueError(
            f"{field} must be a tuple of ints >= {minimum} (a tuple keeps the config "
            f"hashable), got {value!r}"
        )
    if not value and not allow_empty:
        raise ValueError(f"{field} must be a non-empty tuple of ints >= {minimum}, got ()")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or item < minimum:
            raise ValueError(f"{field} must contain only ints >= {minimum}, got {value!r}")


def kept_units(total: int, keep: float) -> int:
    """How many of ``total`` units survive structured pruning when the ``keep``
    fraction is kept (at least 1)."""
    return max(1, min(total, int(math.ceil(total * keep - 1e-9))))


class BuiltinWorkload(Workload):
    """What the three built-in workloads share beyond :class:`harness.api.Workload`:
    the digits quality task (:mod:`harness.workloads.quality_data`) and structured
    pruning of their torch models (:mod:`harness.workloads._torch_pruning`)."""

    def quality_workload(self) -> Workload:
        """This architecture with its input/output shapes adapted to the digits."""
        from harness.workloads import quality_data

        return quality_data.quality_workload(self)

    def quality_data(self) -> QualityData:
        """The digits split as this (quality) workload's inputs."""
        from harness.workloads import quality_data

        return quality_data.digits_data(self)

    def prune_structured(self, backend: str, model: Any, keep: float) -> Any:
        """Remove hidden units / inner channels / heads of the torch model in place."""
        if backend != "torch":
            return super().prune_structured(backend, model, keep)
        from harness.workloads import _torch_pruning

        if not _torch_pruning.prune_structured(model, keep):
            raise SkipCell(
                "prune-structured knows the built-in mlp, cnn and transformer architectures only; "
                f"nothing to prune in {type(model).__name__}"
            )
        return model
