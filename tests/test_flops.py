"""FLOP counting (real torch models), its cross-check, bytes moved and MFU."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from backends.torch_backend import TorchBackend  # noqa: E402
from harness import registry  # noqa: E402
from harness.flops import apply_calibration, count_torch_step, flops_analysis, peak_dtype  # noqa: E402
from harness.suite import TaskSpec  # noqa: E402
from harness.variants import FP32Variant  # noqa: E402


def prepared(workload: str, mode: str, size: str = "tiny"):
    wl = registry.load("workload", workload)(size=size)
    bs = wl.batch_size_for()
    step = TorchBackend().prepare(wl, FP32Variant(), "cpu", mode, bs)
    spec = TaskSpec(workload, "torch", "cpu", "fp32", mode, bs, size)
    return wl, step, spec


def analyse(workload: str, mode: str, p50_ms: float = 2.0):
    wl, step, spec = prepared(workload, mode)
    out, missing = flops_analysis(step=step, workload=wl, spec=spec, metrics={"latency_ms": {"p50": p50_ms}},
                                  variant=FP32Variant())
    return wl, step, spec, out, missing


@pytest.mark.parametrize("mode", ["inference", "training"])
def test_transformer_flops_include_attention(mode):
    wl, step, spec, out, _ = analyse("transformer", mode)
    analytic = wl.analytic_flops_for(spec.batch_size, mode)
    assert out["flops_source"] == "FlopCounterMode"
    assert out["flops"] == pytest.approx(analytic, rel=0.05)
    # the plain counter on CPU misses the fused SDPA kernel: ours must see more than that
    from torch.utils.flop_counter import FlopCounterMode

    step.model.eval()
    with FlopCounterMode(display=False) as plain, torch.no_grad():
        step.model(*step.inputs)
    fwd = wl.analytic_flops(spec.batch_size)
    cfg = wl.config
    attention = 2 * 2 * spec.batch_size * cfg.seq_len * cfg.seq_len * cfg.hidden * cfg.layers
    assert plain.get_total_flops() <= fwd - attention + 1  # attention invisible to the plain count
    factor = 1 if mode == "inference" else 3
    assert out["flops"] >= plain.get_total_flops() * factor + attention * factor * 0.95


def test_encoder_layer_fast_path_is_counted():
    """nn.TransformerEncoderLayer in eval runs a fused op the counter ignores."""
    from torch.utils.flop_counter import FlopCounterMode

    B, S, d, f, heads = 2, 8, 32, 64, 4
    layer = torch.nn.TransformerEncoderLayer(d, heads, f, dropout=0.0, batch_first=True)
    model = torch.nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False).eval()
    x = torch.randn(B, S, d)
    with FlopCounterMode(display=False) as plain, torch.inference_mode():
        model(x)
    expected = 4 * 2 * B * S * d * d + 2 * 2 * B * S * S * d + 2 * 2 * B * S * d * f
    assert plain.get_total_flops() < expected / 2  # the fast path hides almost everything
    step = SimpleNamespace(model=model, inputs=[x], labels=None, mode="inference")
    counted = count_torch_step(step)
    assert counted["flops"] == pytest.approx(expected, rel=0.01)
    assert not model.training  # left as found


@pytest.mark.parametrize("workload", ["mlp", "cnn"])
def test_every_workload_counts_positive_flops_and_bytes(workload):
    wl, step, spec, out, missing = analyse(workload, "inference")
    assert out["flops"] > 0 and out["flops_analytic_ratio"] == pytest.approx(1.0, rel=0.05)
    params_bytes = sum(p.numel() * p.element_size() for p in step.model.parameters())
    assert out["bytes_moved_estimate"] >= params_bytes  # every parameter is read at least once
    assert out["arithmetic_intensity_flop_per_byte"] == pytest.approx(out["flops"] / out["bytes_moved_estimate"])
    assert out["achieved_flops_per_s"] == pytest.approx(out["flops"] / 2e-3)
    assert out["mfu"] is None and "calibration" in missing["mfu"]


def test_training_counts_forward_and_backward_not_optimizer():
    wl, step, spec, out, _ = analyse("mlp", "training")
    _, _, _, inf, _ = analyse("mlp", "inference")
    fwd = inf["flops"]
    # backward costs ~2x forward, minus the first layer's unneeded input gradient
    assert 2 * fwd < out["flops"] <= 3 * fwd
    assert "optimizer step excluded" in out["flops_scope"]
    assert out["bytes_moved_estimate"] > inf["bytes_moved_estimate"]
    assert all(p.grad is None for p in step.model.parameters())  # grads cleared after counting


def test_non_torch_backend_falls_back_to_analytic():
    wl = registry.load("workload", "mlp")(size="tiny")
    spec = TaskSpec("mlp", "tensorflow", "cpu", "fp32", "inference", 4, "tiny")
    out, missing = flops_analysis(step=SimpleNamespace(model=object()), workload=wl, spec=spec,
                                  metrics={"latency_ms": {"p50": 1.0}})
    assert out["flops_source"] == "analytic" and out["flops"] == wl.analytic_flops(4)
    assert "torch-only" in out["flops_source_reason"]
    assert out["bytes_moved_estimate"] is None and missing["bytes_moved_estimate"]


def test_uncountable_quantized_op_falls_back_to_analytic():
    import warnings

    wl, step, spec = prepared("mlp", "inference")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantize_dynamic is deprecated but is what int8 users run
        step.model = torch.ao.quantization.quantize_dynamic(step.model.eval(), {torch.nn.Linear}, dtype=torch.qint8)
    out, missing = flops_analysis(step=step, workload=wl, spec=spec, metrics={"latency_ms": {"p50": 1.0}})
    assert out["flops_source"] == "analytic" and out["flops"] == wl.analytic_flops_for(spec.batch_size, "inference")
    assert "quantized.linear_dynamic" in out["flops_source_reason"]
    assert out["bytes_moved_estimate"] is None and missing["arithmetic_intensity_flop_per_byte"]


def test_model_running_outside_torch_falls_back_to_analytic():
    wl, step, spec = prepared("mlp", "inference")

    class Opaque(torch.nn.Module):  # like an ONNX Runtime session behind a torch facade
        def forward(self, x):
            return torch.from_numpy(x.detach().numpy()[:, :10].copy())

    step.model = Opaque()
    out, _ = flops_analysis(step=step, workload=wl, spec=spec, metrics={"latency_ms": {"p50": 1.0}})
    assert out["flops_source"] == "analytic" and "saw no FLOPs" in out["flops_source_reason"]


def test_a_smaller_model_is_counted_as_it_is():
    wl, step, spec = prepared("mlp", "inference")

    class Inflated:  # the workload's reference is 10x what this (e.g. pruned) model does
        def analytic_flops_for(self, batch: int, mode: str) -> int:
            return 10 * wl.analytic_flops_for(batch, mode)

    out, _ = flops_analysis(step=step, workload=Inflated(), spec=spec, metrics={"latency_ms": {"p50": 1.0}})
    assert out["flops_source"] == "FlopCounterMode"
    assert out["flops"] == wl.analytic_flops_for(spec.batch_size, "inference")
    assert out["flops_analytic_ratio"] == pytest.approx(0.1) and "smaller" in out["flops_note"]


def _cell(variant: str = "fp32", achieved: float = 5e9, ai: float = 2.0) -> dict:
    return {"status": "ok", "spec": {"device": "cpu", "variant": variant},
            "metrics": {"achieved_flops_per_s": achieved, "arithmetic_intensity_flop_per_byte": ai},
            "unavailable": {"mfu": "pending"}}


def test_mfu_against_calibration_and_roofline_bound():
    cal = {"cpu": {"peak_flops_per_s": {"fp32": 100e9, "bf16": 200e9}, "mem_bandwidth_bytes_per_s": 10e9}}
    c = _cell()
    apply_calibration(c, cal)
    assert c["metrics"]["mfu"] == pytest.approx(0.05) and "mfu" not in c["unavailable"]
    assert c["metrics"]["roofline_attainable_flops_per_s"] == pytest.approx(20e9)  # 2 FLOP/B x 10 GB/s
    assert c["metrics"]["roofline_bound"] == "memory"
    c = _cell("bf16_autocast", ai=1000.0)
    apply_calibration(c, cal)
    assert c["metrics"]["mfu_peak_dtype"] == "bf16" and c["metrics"]["mfu"] == pytest.approx(0.025)
    assert c["metrics"]["roofline_bound"] == "compute"


def test_mfu_without_calibration_is_null_with_reason():
    c = _cell()
    apply_calibration(c, None)
    assert c["metrics"]["mfu"] is None and "harness calibrate" in c["unavailable"]["mfu"]
    assert peak_dtype("int8_dynamic") == "fp32" and peak_dtype("fp16") == "fp16"
