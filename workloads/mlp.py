"""``mlp``: a multi-layer perceptron classifier on a flat float32 feature vector.

``Linear -> ReLU`` for each hidden width, then ``Linear`` to the classes.

=====  =========================  =======  =====  ==========  ==========  ===============
size   widths                     classes  batch  params      fwd FLOPs   fwd GFLOPs
                                                              / sample    / sample
=====  =========================  =======  =====  ==========  ==========  ===============
tiny   64 -> 32 -> 32             10       8           3,466       6,784  0.0000068
small  512 -> 1024 -> 1024        10       64      1,585,162   3,166,208  0.0032
base   1024 -> 4096 -> 4096       1000     64     41,858,024  83,689,472  0.084
       -> 4096
=====  =========================  =======  =====  ==========  ==========  ===============

(Computed from :meth:`MLPWorkload.analytic_params` / ``analytic_flops(1)``; the tests
check them against the torch model.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from harness.api import InputSpec, WorkloadConfig
from harness.workloads import BUILD_SEED, BuiltinWorkload, _check_int, _check_int_tuple

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class MLPConfig(WorkloadConfig):
    """Architecture of the MLP. Defaults are the ``tiny`` preset."""

    input_dim: int = 64  # features per sample
    hidden: tuple[int, ...] = (32, 32)  # width of each hidden layer; () = linear model
    num_classes: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("input_dim", self.input_dim, 1)
        _check_int_tuple("hidden", self.hidden, 1, allow_empty=True)


class MLPWorkload(BuiltinWorkload):
    """Multi-layer perceptron: widths ``d_0 = input_dim, d_1..d_L = hidden,
    d_{L+1} = num_classes``.

    Parameters (weights + biases of every Linear)::

        params = sum_{i=0..L} (d_i * d_{i+1} + d_{i+1})

    Forward FLOPs for a batch of ``b`` (2 per multiply-accumulate; bias adds and ReLU
    excluded)::

        flops(b) = 2 * b * sum_{i=0..L} d_i * d_{i+1}
    """

    name: ClassVar[str] = "mlp"
    description: ClassVar[str] = (
        "Multi-layer perceptron (Linear+ReLU stack, Linear head) on float32 feature vectors"
    )
    Config: ClassVar[type[WorkloadConfig]] = MLPConfig
    presets: ClassVar[Mapping[str, WorkloadConfig]] = {
        "tiny": MLPConfig(input_dim=64, hidden=(32, 32), num_classes=10),
        "small": MLPConfig(input_dim=512, hidden=(1024, 1024), num_classes=10),
        "base": MLPConfig(input_dim=1024, hidden=(4096, 4096, 4096), num_classes=1000),
    }
    default_batch_size: ClassVar[Mapping[str, int]] = {"tiny": 8, "small": 64, "base": 64}

    config: MLPConfig

    def _widths(self) -> list[int]:
        c = self.config
        return [c.input_dim, *c.hidden, c.num_classes]

    def input_specs(self) -> Sequence[InputSpec]:
        """One float32 feature vector of ``input_dim`` values per sample."""
        return [InputSpec(name="features", shape=(self.config.input_dim,), dtype="float32")]

    def analytic_params(self) -> int:
        """Trainable parameters (count): weights and biases of every Linear."""
        w = self._widths()
        return sum(a * b + b for a, b in zip(w[:-1], w[1:]))

    def analytic_flops(self, batch_size: int) -> int:
        """Forward FLOPs for ``batch_size`` samples: ``2 * b * sum(d_i * d_{i+1})``."""
        w = self._widths()
        return 2 * batch_size * sum(a * b for a, b in zip(w[:-1], w[1:]))

    def structured_pruned(self, keep: float) -> "MLPWorkload":
        """The MLP with the hidden widths structured pruning keeps (its analytic
        counts are the pruned model's)."""
        import dataclasses

        from harness.workloads import kept_units

        cfg = dataclasses.replace(self.config, hidden=tuple(kept_units(h, keep) for h in self.config.hidden))
        return type(self)(size=self.size, config=cfg)

    def build_torch(self) -> "torch.nn.Module":
        """The fp32 torch model, initialised with :data:`harness.workloads.BUILD_SEED`."""
        import torch

        from harness.workloads._torch_models import MLP

        c = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(BUILD_SEED)
            model = MLP(c.input_dim, c.hidden, c.num_classes)
        return model.float()

    def build_tensorflow(self) -> "Any":
        """The fp32 Keras twin of :meth:`build_torch` (see ``harness.workloads._keras_models``)."""
        from harness.workloads._keras_models import build_mlp

        c = self.config
        return build_mlp(c.input_dim, c.hidden, c.num_classes, seed=BUILD_SEED)
