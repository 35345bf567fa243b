"""Benchmark-only workload for ``bench/regression_power.py`` (not a test, not shipped).

``regpower``: a chain of identical 256x256 Linear+ReLU blocks. The number of blocks is
10, plus one more when the environment variable ``REGPOWER_SLOWDOWN=1`` is set in the
worker: exactly 10% more compute per step, which is what a real code regression (an
extra layer, a slower kernel path) looks like -- not a sleep. The variable is read
when the model is built (never in the config), and only by this workload.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar

from harness.api import InputSpec, Workload, WorkloadConfig

BLOCKS = 10
WIDTH = 256


@dataclass(frozen=True)
class RegPowerConfig(WorkloadConfig):
    width: int = WIDTH


class RegPowerWorkload(Workload):
    name: ClassVar[str] = "regpower"
    description: ClassVar[str] = "10 identical Linear blocks; +1 block (+10% work) with REGPOWER_SLOWDOWN=1"
    Config = RegPowerConfig
    presets = {"tiny": RegPowerConfig(), "small": RegPowerConfig()}
    default_batch_size = {"tiny": 64, "small": 64}
    modes = ("inference",)

    def _blocks(self) -> int:
        return BLOCKS + (1 if os.environ.get("REGPOWER_SLOWDOWN") == "1" else 0)

    def input_specs(self) -> list[InputSpec]:
        return [InputSpec("x", (self.config.width,), "float32")]

    def analytic_params(self) -> int:
        w = self.config.width
        return self._blocks() * (w * w + w)

    def analytic_flops(self, batch_size: int) -> int:
        w = self.config.width
        return 2 * batch_size * self._blocks() * w * w


    def build_torch(self) -> Any:
        import torch

        w = self.config.width
        layers: list[Any] = []
        for _ in range(self._blocks()):
            layers += [torch.nn.Linear(w, w), torch.nn.ReLU()]
        return torch.nn.Sequential(*layers)
