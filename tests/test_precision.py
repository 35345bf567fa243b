"""Precision: fp16/bf16 inference measured as deployed (weights cast once), strict IEEE
fp32 on every device, and the ``tf32`` variant.

Everything runs for real on the CPU. The GPU is faked only at the lowest boundary:
``torch.cuda.is_available`` / ``get_device_capability`` (what a GPU would answer) and
torch's own process-wide precision flags, which are real, settable and readable on a
CPU-only build (they are exactly what a CUDA build consults before each cuBLAS/cuDNN
call).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from harness.backends.torch_backend import TorchBackend  # noqa: E402
from harness.core import registry  # noqa: E402
from harness.api import SkipCell  # noqa: E402
from harness.variants import FP32Variant  # noqa: E402
from harness.variants.precision import (  # noqa: E402
    TF32_CPU_REASON,
    BF16Variant,
    FP16Variant,
    TF32Variant,
    fp32_math_settings,
    set_fp32_math,
)
from harness.workloads.mlp import MLPWorkload  # noqa: E402


@pytest.fixture(autouse=True)
def strict_fp32_afterwards():
    """Every test leaves the process in the harness's default: strict IEEE fp32."""
    yield
    set_fp32_math(torch, "ieee")


class CastCounter(TorchDispatchMode):
    """Counts dtype-conversion ops (``aten._to_copy`` / ``aten.to``) dispatched."""

    def __init__(self) -> None:
        super().__init__()
        self.casts = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten._to_copy, torch.ops.aten.to):
            self.casts += 1
        return func(*args, **(kwargs or {}))


# ------------------------------------------------------------------ fp16 / bf16


@pytest.mark.parametrize("V,dtype", [(BF16Variant, torch.bfloat16), (FP16Variant, torch.float16)])
def test_inference_casts_weights_once_not_every_step(V, dtype):
    """Autocast inside inference_mode has no cast cache: every step re-cast every
    weight (28 casts in 4 steps of the tiny MLP on the old code). Now the weights and
    inputs are cast once in prepare and the timed step casts nothing."""
    wl = MLPWorkload("tiny")
    step = TorchBackend().prepare(wl, V(), "cpu", "inference", 4)
    step.run(1)  # warm
    with CastCounter() as counter:
        step.run(4)
    assert counter.casts == 0
    assert {p.dtype for p in step.model.parameters()} == {dtype}
    assert all(x.dtype == dtype for x in step.inputs if x.is_floating_point())
    with torch.inference_mode():
        assert step.model(*step.inputs).dtype == dtype
    assert step.runtime_info()["precision_method"] == (
        f"weights and inputs cast once to {V.torch_dtype} (model.to(dtype)); no autocast")


def test_integer_inputs_are_not_cast():
    wl = registry.load("workload", "transformer")("tiny")
    step = TorchBackend().prepare(wl, BF16Variant(), "cpu", "inference", 2)
    assert all(x.dtype == torch.int64 for x in step.inputs)  # token ids stay ids
    assert {p.dtype for p in step.model.parameters()} == {torch.bfloat16}
    with CastCounter() as counter:
        step.run(2)
    assert counter.casts == 0


def test_training_keeps_autocast_and_fp32_master_weights():
    wl = MLPWorkload("tiny")
    step = TorchBackend().prepare(wl, BF16Variant(), "cpu", "training", 4)
    assert {p.dtype for p in step.model.parameters()} == {torch.float32}
    with CastCounter() as counter:
        step.run(1)
    assert counter.casts > 0  # autocast casts the fp32 master weights for the bf16 matmuls
    assert step.runtime_info()["precision_method"] == "torch.autocast(bfloat16) per step, fp32 master weights"


def test_flop_counter_runs_the_forward_as_the_step_does():
    """The FLOP/byte counter re-runs the cast-once model without autocast, so its bytes
    are bf16 bytes (half the fp32 model's parameter bytes)."""
    from harness.core.flops import count_torch_step

    wl = MLPWorkload("tiny")
    bf = count_torch_step(TorchBackend().prepare(wl, BF16Variant(), "cpu", "inference", 4), BF16Variant())
    fp = count_torch_step(TorchBackend().prepare(wl, FP32Variant(), "cpu", "inference", 4), FP32Variant())
    assert bf["flops"] == fp["flops"]
    assert bf["bytes"] == pytest.approx(fp["bytes"] / 2, rel=0.01)


# ------------------------------------------------------------------ strict fp32


def _reduce_everything() -> None:
    """What a user's script or torch's defaults may have left: TF32 matmuls and
    convolutions on CUDA, bf16 matmuls in oneDNN on the CPU."""
    torch.set_float32_matmul_precision("medium")  # cuBLAS tf32, oneDNN matmul bf16
    torch.backends.cudnn.conv.fp32_precision = "tf32"  # torch's own default
    torch.backends.mkldnn.conv.fp32_precision = "bf16"


@pytest.mark.parametrize("mode", ["inference", "training"])
def test_prepare_makes_fp32_strict_and_records_the_flags(mode):
    _reduce_everything()
    assert fp32_math_settings(torch)["cudnn_conv"] == "tf32"
    step = TorchBackend().prepare(MLPWorkload("tiny"), FP32Variant(), "cpu", mode, 4)
    b = torch.backends
    assert b.cuda.matmul.fp32_precision == "ieee"
    assert b.cudnn.conv.fp32_precision == "ieee" and b.cudnn.rnn.fp32_precision == "ieee"
    assert b.mkldnn.matmul.fp32_precision == "ieee" and b.mkldnn.conv.fp32_precision == "ieee"
    assert torch.get_float32_matmul_precision() == "highest"
    precision = step.runtime_info()["precision"]
    assert precision == {
        "fp32_math": "ieee", "cuda_matmul": "ieee", "cudnn_conv": "ieee", "cudnn_rnn": "ieee",
        "mkldnn_matmul": "ieee", "mkldnn_conv": "ieee", "mkldnn_rnn": "ieee",
        "float32_matmul_precision": "highest",
    }


def test_every_variant_but_tf32_is_strict_fp32():
    for name in registry.names("variant"):
        v = registry.load("variant", name)
        assert v.fp32_math == ("tf32" if name == "tf32" else "ieee"), name


def test_tf32_math_enables_tf32_for_cuda_matmul_and_cudnn_conv():
    from harness.backends.torch_backend import apply_fp32_math

    runtime = apply_fp32_math(torch, TF32Variant(), "inference")
    p = runtime["precision"]
    assert p["fp32_math"] == "tf32"
    assert p["cuda_matmul"] == "tf32" and p["cudnn_conv"] == "tf32" and p["cudnn_rnn"] == "tf32"
    assert p["float32_matmul_precision"] == "high"
    assert p["mkldnn_conv"] == "ieee"
    assert runtime["precision_method"].endswith("in TF32")
    runtime = apply_fp32_math(torch, FP32Variant(), "inference")
    assert runtime["precision"]["cuda_matmul"] == "ieee" and runtime["precision"]["cudnn_conv"] == "ieee"


def test_set_fp32_math_refuses_unknown_modes():
    with pytest.raises(ValueError, match="ieee, tf32"):
        set_fp32_math(torch, "bf16")


# ------------------------------------------------------------------ tf32 variant


def test_tf32_is_registered_for_both_backends():
    v = registry.load("variant", "tf32")()
    assert v.fp32_math == "tf32"
    assert v.supports_backend("torch") and v.supports_backend("tensorflow")


def test_tf32_cell_on_cpu_is_skipped_with_the_reason():
    _reduce_everything()
    with pytest.raises(SkipCell) as e:
        TorchBackend().prepare(MLPWorkload("tiny"), TF32Variant(), "cpu", "inference", 4)
    assert str(e.value) == TF32_CPU_REASON == "TF32 is an NVIDIA Ampere+ GPU format; CPUs run fp32"
    assert torch.backends.mkldnn.conv.fp32_precision == "bf16"  # a skipped cell changed nothing


@pytest.mark.parametrize("capability,runs", [((7, 5), False), ((7, 0), False), ((8, 0), True), ((9, 0), True)])
def test_tf32_needs_compute_capability_8(monkeypatch, capability, runs):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    asked = []

    def get_device_capability(device=None):
        asked.append(device)
        return capability

    monkeypatch.setattr(torch.cuda, "get_device_capability", get_device_capability)
    model = MLPWorkload("tiny").build("torch")
    v = TF32Variant()
    if runs:
        assert v.apply("torch", model, device=torch.device("cuda", 1), mode="inference") is model
    else:
        with pytest.raises(SkipCell, match=rf"compute capability >= 8.0\); this GPU is {capability[0]}\.{capability[1]}"):
            v.apply("torch", model, device=torch.device("cuda", 1), mode="inference")
    assert asked == [1]  # the cell's own GPU


def test_tf32_tensorflow_side_returns_the_model_unchanged():
    """The TensorFlow backend owns TF32 there (it reads ``fp32_math``, enables TF32 and
    skips devices without it); the variant only hands the model through."""
    model = object()
    assert TF32Variant().apply("tensorflow", model, device="/GPU:0", mode="inference") is model
