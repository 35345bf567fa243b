"""``distill``: a smaller student of the same architecture family, trained from the
fp32 teacher by knowledge distillation.

The student's config scales the workload's preset: every width (MLP hidden sizes, CNN
stem/stage channels, Transformer hidden/FFN width) by ``width`` and every depth (MLP
hidden layers, CNN blocks per stage, Transformer layers) by ``depth``, rounded, at
least 1 (Transformer width stays a multiple of the head count).

* Speed track: the student architecture at the requested preset (dense speed does not
  depend on the weights, so its weights are the seeded initialisation).
* Quality track: when ``apply`` gets ``train_data`` (the digits) it trains the student
  for ``epochs`` (default: the fp32 model's recipe, given in the context as
  ``train_epochs``/``train_lr``/``train_batch_size``) with the loss ``alpha * KL(student/T || teacher/T) * T^2 +
  (1 - alpha) * cross-entropy`` (Hinton et al.), AdamW, fixed seed.

TensorFlow: skipped with the reason (implemented for the torch backend only).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from harness.api import SkipCell, Variant
from harness.variants.base import CompressionConfig, check_fraction


@dataclass(frozen=True)
class DistillConfig(CompressionConfig):
    """``width``/``depth``: student size as fractions of the teacher's; ``epochs``
    and ``lr`` (None: the teacher's training recipe), ``temperature`` and ``alpha``
    (weight of the distillation term) of the training."""

    width: float = 0.5
    depth: float = 0.5
    epochs: int | None = None
    temperature: float = 2.0
    alpha: float = 0.7
    lr: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction("width", self.width, 0.0, 1.0 + 1e-9)
        check_fraction("depth", self.depth, 0.0, 1.0 + 1e-9)
        if self.epochs is not None and (isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1):
            raise ValueError(f"epochs must be None or an int >= 1, got {self.epochs!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        check_fraction("alpha", self.alpha, -1e-9, 1.0 + 1e-9)
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be None or > 0, got {self.lr!r}")


def _w(x: int, f: float, multiple: int = 1) -> int:
    return max(multiple, int(round(x * f / multiple)) * multiple)


def student_config(workload_name: str, config: Any, width: float, depth: float) -> Any:
    """The student's config for a built-in workload (ValueError for others)."""
    if workload_name == "mlp":
        hidden = tuple(_w(h, width) for h in config.hidden)
        n = max(1, int(round(len(hidden) * depth))) if hidden else 0
        return dataclasses.replace(config, hidden=hidden[:n])
    if workload_name == "cnn":
        return dataclasses.replace(
            config,
            stem_channels=_w(config.stem_channels, width),
            channels=tuple(_w(c, width) for c in config.channels),
            blocks=tuple(max(1, int(round(b * depth))) for b in config.blocks),
        )
    if workload_name == "transformer":
        return dataclasses.replace(
            config,
            hidden=_w(config.hidden, width, config.heads),
            ffn=_w(config.ffn, width),
            layers=max(1, int(round(config.layers * depth))),
        )
    raise ValueError(f"distill knows the built-in mlp, cnn and transformer only, not {workload_name!r}")


class DistillVariant(Variant):
    """A smaller student distilled from the fp32 teacher."""

    replaces_model = True  # harness.api.Variant.replaces_model

    name: ClassVar[str] = "distill"
    description: ClassVar[str] = "smaller student (default half width, half depth) distilled from the fp32 teacher"
    Config = DistillConfig
    config: DistillConfig

    def __init__(self, config: DistillConfig | None = None) -> None:
        super().__init__(config)
        self._metrics: dict[str, Any] = {}

    def metrics(self) -> dict[str, Any]:
        return dict(self._metrics)

    def model_analytic_flops(self, workload: Any, batch_size: int, mode: str) -> tuple[int | None, str]:
        """Analytic FLOPs of one step of the *student* (the model the cell runs), not
        the teacher's: (FLOPs, what they are) or (None, why unknown)."""
        try:
            cfg = student_config(workload.name, workload.config, self.config.width, self.config.depth)
        except ValueError as e:
            return None, str(e)
        student = type(workload)(size=workload.size, config=cfg)
        return int(student.analytic_flops_for(batch_size, mode)), "the distill student's analytic formula"

    def apply_torch(self, model: Any, *, workload: Any = None, device: Any = "cpu",
                    train_data: Any = None, train_epochs: int = 20, train_lr: float = 3e-3,
                    train_batch_size: int = 64, **ctx: Any) -> Any:
        import time

        if workload is None:
            raise SkipCell("distill needs the workload to build its student")
        try:
            cfg = student_config(workload.name, workload.config, self.config.width, self.config.depth)
        except ValueError as e:
            raise SkipCell(str(e)) from None
        student_wl = type(workload)(size=workload.size, config=cfg)
        student = student_wl.build("torch").to(device)
        self._metrics = {
            "student_config": dataclasses.asdict(cfg),
            "student_params_analytic": int(student_wl.analytic_params()),
            "student_flops_forward_per_sample": int(student_wl.analytic_flops(1)),
            "teacher_params": int(sum(p.numel() for p in model.parameters())),
        }
        if train_data is not None:
            t0 = time.perf_counter()
            epochs = self.config.epochs or int(train_epochs)
            lr = self.config.lr or float(train_lr)
            self._distill(model, student, train_data, epochs, lr, int(train_batch_size), student_wl)
            self._metrics["distill_time_s"] = time.perf_counter() - t0
            self._metrics["distill_epochs"] = epochs
        return student

    def _distill(self, teacher: Any, student: Any, train_data: Any, epochs: int, lr: float,
                 batch_size: int, student_wl: Any) -> None:
        """Train ``student`` on ``train_data = (inputs, labels)`` (numpy) from ``teacher``."""
        import numpy as np
        import torch
        import torch.nn.functional as F

        from harness.core.frameworks.torch_utils import training_threads

        inputs, labels = train_data
        c = self.config
        teacher.eval()
        n = len(labels)
        xs = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs]
        ys = torch.from_numpy(np.asarray(labels))
        with torch.no_grad():
            t_logits = torch.cat([teacher(*[x[i:i + 256] for x in xs]) for i in range(0, n, 256)]).float()
        with torch.random.fork_rng(devices=[]), training_threads(student_wl):
            torch.manual_seed(c.seed)
            g = torch.Generator().manual_seed(c.seed)
            opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=1e-4)
            steps = epochs * ((n + batch_size - 1) // batch_size)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
            student.train()
            T = float(c.temperature)
            for _ in range(epochs):
                perm = torch.randperm(n, generator=g)
                for i in range(0, n, batch_size):
                    idx = perm[i:i + batch_size]
                    out = student(*[x[idx] for x in xs])
                    kd = F.kl_div(F.log_softmax(out / T, -1), F.softmax(t_logits[idx] / T, -1),
                                  reduction="batchmean") * T * T
                    loss = c.alpha * kd + (1 - c.alpha) * F.cross_entropy(out, ys[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
        student.eval()

    def apply_tensorflow(self, model: Any, **ctx: Any) -> Any:
        raise SkipCell("distill is implemented for the torch backend only (student training in Keras is not written yet)")
