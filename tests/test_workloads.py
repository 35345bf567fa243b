"""Tests of the built-in workloads (mlp, cnn, transformer) and their torch models.

The analytic parameter and FLOP formulas are the reference every backend is tested
against, so here they are checked against what torch itself counts
(``sum(p.numel())`` and ``torch.utils.flop_counter.FlopCounterMode``), on the presets
and on odd custom configs that exercise rounding and shortcut rules.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from harness.api import Workload, WorkloadConfig  # noqa: E402
from harness.workloads.cnn import CNNConfig, CNNWorkload  # noqa: E402
from harness.workloads.mlp import MLPConfig, MLPWorkload  # noqa: E402
from harness.workloads.transformer import TransformerConfig, TransformerWorkload  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORKLOADS: list[type[Workload]] = [MLPWorkload, CNNWorkload, TransformerWorkload]
ALL_PRESETS = [(w, size) for w in WORKLOADS for size in w.presets]
SMALL_PRESETS = [(w, size) for w in WORKLOADS for size in ("tiny", "small")]


def _ids(param: Any) -> str:
    return param.name if isinstance(param, type) else str(param)


def _torch_inputs(workload: Workload, batch_size: int, seed: int = 0) -> tuple[list[Any], Any]:
    arrays, labels = workload.make_inputs(batch_size, seed=seed)
    return [torch.from_numpy(a) for a in arrays], torch.from_numpy(labels)


def _count_flops(model: Any, inputs: list[Any], math_sdpa: bool) -> int:
    """Forward FLOPs of one eval-mode call as FlopCounterMode counts them."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        if math_sdpa:
            with sdpa_kernel(SDPBackend.MATH), counter:
                model(*inputs)
        else:
            with counter:
                model(*inputs)
    return int(counter.get_total_flops())


def _n_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ------------------------------------------------------------------- presets and specs


@pytest.mark.parametrize("wl", WORKLOADS, ids=_ids)
def test_class_declares_presets_batch_sizes_and_description(wl: type[Workload]) -> None:
    assert wl.description
    assert set(wl.presets) == {"tiny", "small", "base"}
    assert set(wl.default_batch_size) == set(wl.presets)
    assert issubclass(wl.Config, WorkloadConfig) and wl.Config is not WorkloadConfig
    for cfg in wl.presets.values():
        assert type(cfg) is wl.Config
        hash(cfg)  # frozen and hashable: usable inside a TaskSpec
        with pytest.raises(dataclasses.FrozenInstanceError):
            cfg.num_classes = 3  # type: ignore[misc]
    # the Config defaults are the tiny preset
    assert wl.Config() == wl.presets["tiny"]


@pytest.mark.parametrize("wl", WORKLOADS, ids=_ids)
def test_unknown_size_lists_the_presets(wl: type[Workload]) -> None:
    with pytest.raises(ValueError) as err:
        wl("huge")
    for size in wl.presets:
        assert size in str(err.value)


def test_input_specs() -> None:
    (mlp,) = MLPWorkload("small").input_specs()
    assert (mlp.shape, mlp.dtype) == ((512,), "float32")
    (img,) = CNNWorkload("base").input_specs()
    assert (img.shape, img.dtype) == ((3, 224, 224), "float32")  # channels first
    (ids,) = TransformerWorkload("base").input_specs()
    assert (ids.shape, ids.dtype, ids.high) == ((128,), "int64", 30522)


# ------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(("wl", "size"), ALL_PRESETS, ids=_ids)
def test_analytic_params_equal_torch_count(wl: type[Workload], size: str) -> None:
    workload = wl(size)
    model = workload.build_torch()
    assert _n_params(model) == workload.analytic_params()
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_cnn_base_is_resnet18() -> None:
    workload = CNNWorkload("base")
    assert workload.analytic_params() == 11_689_512
    # ResNet-18 at 224x224 is ~1.82 GMACs, i.e. ~3.6 GFLOPs at 2 FLOPs per MAC
    assert 3.5e9 < workload.analytic_flops(1) < 3.7e9


def test_transformer_base_is_bert_base() -> None:
    workload = TransformerWorkload("base")
    c = workload.config
    classifier = c.hidden * c.num_classes + c.num_classes
    assert 109e6 <= workload.analytic_params() - classifier <= 110e6


CUSTOM_CONFIGS = [
    MLPConfig(input_dim=7, hidden=(), num_classes=3),
    MLPConfig(input_dim=5, hidden=(11, 3, 9), num_classes=4),
    # odd image size, stride-2 stem with pool, stem != first stage (projection at
    # stride 1), a repeated width (identity shortcut) and several blocks per stage
    CNNConfig(
        image_size=17, in_channels=2, stem_channels=6, stem_kernel=5, stem_stride=2,
        stem_pool=True, channels=(8, 8, 12), blocks=(2, 1, 2), num_classes=5,
    ),
    CNNConfig(
        image_size=9, in_channels=1, stem_channels=4, stem_kernel=1, stem_stride=1,
        stem_pool=False, channels=(4,), blocks=(3,), num_classes=2,
    ),
    TransformerConfig(
        vocab_size=50, seq_len=7, max_positions=11, hidden=24, layers=3, heads=3,
        ffn=40, dropout=0.0, num_classes=6,
    ),
]


def _workload_for(cfg: WorkloadConfig) -> Workload:
    cls = {MLPConfig: MLPWorkload, CNNConfig: CNNWorkload, TransformerConfig: TransformerWorkload}
    return cls[type(cfg)](config=cfg)


@pytest.mark.parametrize("cfg", CUSTOM_CONFIGS, ids=lambda c: type(c).__name__)
def test_custom_config_params_and_flops(cfg: WorkloadConfig) -> None:
    workload = _workload_for(cfg)
    model = workload.build_torch()
    assert _n_params(model) == workload.analytic_params()
    inputs, _ = _torch_inputs(workload, 3)
    assert _count_flops(model, inputs, math_sdpa=True) == workload.analytic_flops(3)


# ------------------------------------------------------------------------------ FLOPs


@pytest.mark.parametrize(("wl", "size"), SMALL_PRESETS, ids=_ids)
def test_analytic_flops_equal_flop_counter(wl: type[Workload], size: str) -> None:
    workload = wl(size)
    model = workload.build_torch()
    inputs, _ = _torch_inputs(workload, 2)
    # forcing the math SDPA path makes the attention products visible as bmm
    assert _count_flops(model, inputs, math_sdpa=True) == workload.analytic_flops(2)


def test_flop_counter_on_default_sdpa_path_misses_only_attention() -> None:
    """On CPU FlopCounterMode sees nothing of the fused SDPA kernel (see DESIGN.md);
    everything else must still match. If a later torch counts it, both are fine."""
    workload = TransformerWorkload("tiny")
    model = workload.build_torch()
    inputs, _ = _torch_inputs(workload, 2)
    counted = _count_flops(model, inputs, math_sdpa=False)
    attention = workload.attention_flops(2)
    assert 0 < attention < workload.analytic_flops(2)
    assert counted in (workload.analytic_flops(2), workload.analytic_flops(2) - attention)


@pytest.mark.parametrize(("wl", "size"), ALL_PRESETS, ids=_ids)
def test_flops_scale_linearly_with_batch(wl: type[Workload], size: str) -> None:
    workload = wl(size)
    one = workload.analytic_flops(1)
    assert one > 0
    assert workload.analytic_flops(5) == 5 * one
    assert workload.describe()["flops_forward_per_sample"] == one


# -------------------------------------------------------------------- forward / train


@pytest.mark.parametrize("wl", WORKLOADS, ids=_ids)
def test_forward_output_shape_on_tiny(wl: type[Workload]) -> None:
    workload = wl("tiny")
    batch = workload.batch_size_for()
    model = workload.build_torch().eval()
    inputs, _ = _torch_inputs(workload, batch)
    with torch.no_grad():
        out = model(*inputs)
    assert out.shape == (batch, workload.num_classes)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("wl", WORKLOADS, ids=_ids)
def test_build_is_deterministic_and_leaves_global_rng_alone(wl: type[Workload]) -> None:
    workload = wl("tiny")
    state = torch.get_rng_state()
    first, second = workload.build_torch(), workload.build_torch()
    assert torch.equal(torch.get_rng_state(), state)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("wl", WORKLOADS, ids=_ids)
def test_training_step_updates_every_parameter(wl: type[Workload]) -> None:
    workload = wl("tiny")
    model = workload.build_torch().train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    inputs, labels = _torch_inputs(workload, workload.batch_size_for(), seed=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(*inputs), labels)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    optimizer.step()
    assert torch.isfinite(loss)
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged, f"parameters not updated: {unchanged}"


def test_transformer_avoids_fused_torch_attention_modules() -> None:
    model = TransformerWorkload("tiny").build_torch()
    fused = (torch.nn.MultiheadAttention, torch.nn.TransformerEncoderLayer)
    assert not [m for m in model.modules() if isinstance(m, fused)]


def test_transformer_dropout_only_in_training() -> None:
    workload = TransformerWorkload("tiny")
    model = workload.build_torch()
    inputs, _ = _torch_inputs(workload, 2)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(*inputs), model(*inputs))
        model.train()
        assert not torch.equal(model(*inputs), model(*inputs))


# ------------------------------------------------------------------------- validation


INVALID = [
    (MLPConfig, {"input_dim": 0}, "input_dim"),
    (MLPConfig, {"hidden": (32, 0)}, "hidden"),
    (MLPConfig, {"hidden": [32, 32]}, "hidden"),
    (MLPConfig, {"num_classes": 1}, "num_classes"),
    (CNNConfig, {"image_size": 0}, "image_size"),
    (CNNConfig, {"stem_kernel": 4}, "stem_kernel"),
    (CNNConfig, {"stem_stride": 0}, "stem_stride"),
    (CNNConfig, {"stem_pool": "yes"}, "stem_pool"),
    (CNNConfig, {"channels": ()}, "channels"),
    (CNNConfig, {"blocks": (1,)}, "blocks"),
    (CNNConfig, {"blocks": (1, 0)}, "blocks"),
    (TransformerConfig, {"hidden": 30, "heads": 4}, "hidden"),
    (TransformerConfig, {"heads": 0}, "heads"),
    (TransformerConfig, {"seq_len": 32}, "seq_len"),
    (TransformerConfig, {"layers": 0}, "layers"),
    (TransformerConfig, {"vocab_size": 2.5}, "vocab_size"),
    (TransformerConfig, {"dropout": 1.0}, "dropout"),
    (TransformerConfig, {"num_classes": 0}, "num_classes"),
]


@pytest.mark.parametrize(
    ("config_cls", "kwargs", "field"), INVALID, ids=[f"{c.__name__}-{f}" for c, _, f in INVALID]
)
def test_invalid_config_names_the_field(
    config_cls: type[WorkloadConfig], kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        config_cls(**kwargs)


# ---------------------------------------------------------------------- lazy imports


def test_importing_workloads_does_not_import_torch() -> None:
    code = (
        "import sys, harness.workloads, harness.workloads.mlp, harness.workloads.cnn, harness.workloads.transformer\n"
        "from harness.workloads import MLPWorkload, CNNWorkload, TransformerWorkload\n"
        "for w in (MLPWorkload, CNNWorkload, TransformerWorkload):\n"
        "    for s in w.presets: w(s).describe()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
