"""``prune-unstructured`` and ``prune-structured`` one-shot magnitude pruning.

* ``prune-unstructured``: global magnitude pruning (``torch.nn.utils.prune``'s
  ``global_unstructured`` with ``L1Unstructured``) over the weights of every Linear and
  Conv layer together, then made permanent (``prune.remove``). The dense shapes do not
  change, so dense kernels do the same work: expect no speed-up, only zeros
  (``nonzero_params``), which compress well but are not skipped.
* ``prune-structured``: removes whole units so the dense model is smaller (fewer
  params and FLOPs — the only pruning that can speed up dense kernels); the surgery
  belongs to the workload (:meth:`harness.api.Workload.prune_structured`; the built-ins'
  is in ``harness.workloads._torch_pruning``):
  MLP hidden units; the inner channels of every ResNet BasicBlock (conv1 outputs,
  bn1, conv2 inputs — the residual stream keeps its width); Transformer attention heads
  and FFN hidden units. Units are ranked by the L2 norm of their weights (for CNN
  channels scaled by ``|BN gamma|``) and the lowest ``amount`` fraction is removed.

Neither variant fine-tunes after pruning (``finetune_epochs`` is not offered): the
quality numbers are the one-shot cost, the worst case.

TensorFlow: ``prune-unstructured`` zeroes the same global fraction of Dense/Conv
kernel values with numpy (tensorflow-model-optimization is not used: it switches the
process to legacy Keras). ``prune-structured`` is torch-only (skipped with the reason).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from harness.api import SkipCell, Variant
from harness.variants.base import CompressionConfig, check_fraction


@dataclass(frozen=True)
class PruneConfig(CompressionConfig):
    """``amount``: fraction of weights (unstructured) or units (structured) removed."""

    amount: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction("amount", self.amount)


class PruneUnstructuredVariant(Variant):
    """Global magnitude pruning of Linear/Conv weights (zeros, same shapes)."""

    name: ClassVar[str] = "prune-unstructured"
    description: ClassVar[str] = "global magnitude pruning of Linear/Conv weights (default 50% zeros, same dense shapes)"
    Config = PruneConfig
    config: PruneConfig

    def apply_torch(self, model: Any, **ctx: Any) -> Any:
        from torch import nn
        from torch.nn.utils import prune

        targets = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
        if not targets:
            raise SkipCell(f"{self.name}: the model has no Linear or Conv layers to prune")
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=float(self.config.amount))
        for m, n in targets:
            prune.remove(m, n)
        return model

    def apply_tensorflow(self, model: Any, **ctx: Any) -> Any:
        """The same global magnitude pruning over the Keras model's Dense/Conv kernels
        (plain numpy on the weights; no tensorflow-model-optimization)."""
        from harness.variants._tf_utils import prune_keras_global

        prune_keras_global(model, float(self.config.amount))
        return model


class PruneStructuredVariant(Variant):
    """Removes the lowest-norm hidden units / channels / heads (smaller dense model)."""

    replaces_model = True  # harness.api.Variant.replaces_model

    name: ClassVar[str] = "prune-structured"
    description: ClassVar[str] = "removes whole hidden units, inner conv channels and attention heads (default 50%): a smaller dense model"
    Config = PruneConfig
    config: PruneConfig

    def apply_torch(self, model: Any, *, workload: Any = None, **ctx: Any) -> Any:
        """The smaller model from the workload's own surgery
        (:meth:`harness.api.Workload.prune_structured`): the workload owns its
        architecture, so it knows which units can go."""
        if workload is None:
            raise SkipCell(f"{self.name} needs the workload to prune its architecture")
        return workload.prune_structured("torch", model, 1.0 - float(self.config.amount))

    def model_analytic_flops(self, workload: Any, batch_size: int, mode: str) -> tuple[int | None, str]:
        """Analytic FLOPs of one step of the *pruned* model: the formula of
        :meth:`harness.api.Workload.structured_pruned` (the MLP's, with the kept hidden
        widths); (None, why) when the workload's formula cannot describe the pruned
        model (the CNN's inner channels, the Transformer's heads: their FLOPs are counted)."""
        keep = 1.0 - float(self.config.amount)
        pruned = workload.structured_pruned(keep) if callable(getattr(workload, "structured_pruned", None)) else None
        if pruned is not None:
            return int(pruned.analytic_flops_for(batch_size, mode)), f"the pruned {workload.name.upper()}'s analytic formula"
        return None, (f"prune-structured removes inner channels / attention heads of {getattr(workload, 'name', '?')!r}, "
                      "which the workload's analytic formula cannot describe (the unpruned count would overstate "
                      "the work)")

    def apply_tensorflow(self, model: Any, **ctx: Any) -> Any:
        raise SkipCell(
            "prune-structured is implemented for the torch backend only (the Keras twin would "
            "need a rebuild with the pruned widths; tensorflow-model-optimization is not used)"
        )
