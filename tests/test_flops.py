"""FLOP counting (real torch models), its cross-check, bytes moved and MFU."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from harness.backends.torch_backend import TorchBackend  # noqa: E402
from harness.core import registry  # noqa: E402
from harness.core.flops import apply_calibration, count_torch_step, flops_analysis, peak_dtype  # noqa: E402
from harness.core.suite import TaskSpec  # noqa: E402
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


def _cell(variant: str = "fp32", achieved: float = 5e9, ai: float = 2.0, threads: int | None = 2) -> dict:
    return {"status": "ok", "spec": {"device": "cpu", "variant": variant},
            "runtime": {"threads": threads},
            "metrics": {"achieved_flops_per_s": achieved, "arithmetic_intensity_flop_per_byte": ai},
            "unavailable": {"mfu": "pending"}}


def test_mfu_against_calibration_and_roofline_bound():
    cal = {"cpu": {"peak_flops_per_s": {"fp32": 100e9, "bf16": 200e9}, "mem_bandwidth_bytes_per_s": 10e9,
                   "threads": 2}}
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


# ------------------------------------------------------------------ MFU: threads, dtypes


def test_cpu_mfu_needs_a_calibration_with_the_cells_thread_count():
    """A 1-thread cell against a 2-thread calibration understated MFU by ~2x: now null."""
    cal = {"cpu": {"peak_flops_per_s": {"fp32": 100e9}, "mem_bandwidth_bytes_per_s": 10e9, "threads": 2}}
    c = _cell(threads=1)
    apply_calibration(c, cal)
    assert c["metrics"]["mfu"] is None
    assert c["unavailable"]["mfu"] == ("calibration measured with 2 thread(s), this cell ran with 1 threads; "
                                       "run `harness calibrate -d cpu --threads 1`")
    c = _cell(threads=None)  # e.g. a framework default pool, size not recorded
    apply_calibration(c, cal)
    assert c["metrics"]["mfu"] is None and "thread count" in c["unavailable"]["mfu"]
    # a calibration without a thread count cannot be trusted for a CPU cell either
    c = _cell(threads=2)
    apply_calibration(c, {"cpu": {"peak_flops_per_s": {"fp32": 100e9}}})
    assert c["metrics"]["mfu"] is None and "did not record its thread count" in c["unavailable"]["mfu"]


def test_cpu_mfu_uses_the_calibration_of_its_own_thread_count():
    cal = {"cpu": {"peak_flops_per_s": {"fp32": 100e9}, "threads": 2,
                   "by_threads": {"1": {"peak_flops_per_s": {"fp32": 50e9}, "threads": 1},
                                  "2": {"peak_flops_per_s": {"fp32": 100e9}, "threads": 2}}}}
    one, two = _cell(threads=1), _cell(threads=2)
    apply_calibration(one, cal)
    apply_calibration(two, cal)
    assert one["metrics"]["mfu"] == pytest.approx(0.1) and one["metrics"]["mfu_peak_threads"] == 1
    assert two["metrics"]["mfu"] == pytest.approx(0.05)


def test_data_parallel_cpu_cells_count_the_threads_of_every_worker_on_the_machine():
    cal = {"cpu": {"peak_flops_per_s": {"fp32": 100e9}, "threads": 2}}
    c = _cell(threads=1)
    c["metrics"]["distributed"] = {"world_size": 2, "nnodes": 1, "devices_for_peak": 1}
    apply_calibration(c, cal)  # 2 workers x 1 thread on one machine = the 2-thread peak
    assert c["metrics"]["mfu"] == pytest.approx(0.05)


def test_gpu_cells_ignore_threads_and_tf32_uses_the_tf32_peak():
    cal = {"cuda:0": {"peak_flops_per_s": {"fp32": 20e12, "tf32": 150e12}, "threads": None}}
    c = _cell("tf32", achieved=30e12, threads=1)
    c["spec"]["device"] = "cuda:0"
    apply_calibration(c, cal)
    assert c["metrics"]["mfu_peak_dtype"] == "tf32" and c["metrics"]["mfu"] == pytest.approx(0.2)
    assert peak_dtype("tf32") == "tf32" and peak_dtype("fp32") == "fp32"
    c = _cell("tf32", achieved=30e12)
    c["spec"]["device"] = "cuda:0"
    apply_calibration(c, {"cuda:0": {"peak_flops_per_s": {"fp32": 20e12, "tf32": None},
                                     "unavailable": {"tf32": "compute capability 7.5"}}})
    assert c["metrics"]["mfu"] is None and "no tf32 peak (compute capability 7.5)" in c["unavailable"]["mfu"]


# ------------------------------------------------------------------ the model actually run


def _student_flops(workload: str, batch: int, mode: str) -> dict:
    """Analytic FLOPs of the default distill student and of its teacher."""
    from harness.variants.distill import student_config

    wl = registry.load("workload", workload)(size="tiny")
    cfg = student_config(workload, wl.config, 0.5, 0.5)
    return {"distill": type(wl)(size="tiny", config=cfg).analytic_flops_for(batch, mode),
            "teacher": wl.analytic_flops_for(batch, mode)}


@pytest.mark.parametrize("mode", ["inference", "training"])
def test_distill_falls_back_to_the_students_analytic_count_not_the_teachers(monkeypatch, mode):
    """When the counter cannot run, the analytic fallback is the student's count (the
    teacher's inflated FLOP/s and MFU 3-7x on the tiny presets)."""
    import harness.core.flops as flops_mod
    from harness.variants.distill import DistillVariant

    wl = registry.load("workload", "transformer")(size="tiny")
    v = DistillVariant()
    step = TorchBackend().prepare(wl, v, "cpu", mode, 4)
    spec = TaskSpec("transformer", "torch", "cpu", "distill", mode, 4, "tiny")

    def no_counter(*a, **k):
        raise RuntimeError("no counter here")

    monkeypatch.setattr(flops_mod, "count_torch_step", no_counter)
    out, _ = flops_analysis(step=step, workload=wl, spec=spec, metrics={"latency_ms": {"p50": 1.0}}, variant=v)
    expected = _student_flops("transformer", 4, mode)
    assert expected["teacher"] > 4 * expected["distill"]
    assert out["flops_source"] == "analytic" and out["flops"] == expected["distill"]
    assert "distill student" in out["flops_source_reason"]
    assert out["achieved_flops_per_s"] == pytest.approx(expected["distill"] / 1e-3)


def test_counted_flops_of_a_student_cross_check_against_the_students_formula():
    from harness.variants.distill import DistillVariant

    wl = registry.load("workload", "mlp")(size="tiny")
    v = DistillVariant()
    step = TorchBackend().prepare(wl, v, "cpu", "inference", 8)
    spec = TaskSpec("mlp", "torch", "cpu", "distill", "inference", 8, "tiny")
    out, _ = flops_analysis(step=step, workload=wl, spec=spec, metrics={"latency_ms": {"p50": 1.0}}, variant=v)
    assert out["flops_source"] == "FlopCounterMode"
    assert out["flops_analytic_ratio"] == pytest.approx(1.0)  # against the student, not the teacher
    assert "flops_note" not in out


def test_analytic_flop_rate_is_the_run_models(monkeypatch):
    """analysis.achieved_flops: achieved_flops_per_s_analytic and flops_analytic of a
    distill / prune-structured cell are the student's / pruned model's, or null with the
    reason where the variant has no formula (never the teacher's)."""
    from harness.core.analyses import achieved_flops
    from harness.variants.distill import DistillVariant
    from harness.variants.prune import PruneStructuredVariant

    wl = registry.load("workload", "mlp")(size="tiny")
    spec = TaskSpec("mlp", "torch", "cpu", "distill", "inference", 8, "tiny")
    teacher = wl.analytic_flops_for(8, "inference")
    metrics = {"flops_analytic": teacher, "latency_ms": {"p50": 2.0}}
    out, missing = achieved_flops(workload=wl, spec=spec, metrics=metrics, variant=DistillVariant())
    student = _student_flops("mlp", 8, "inference")["distill"]
    assert out["flops_analytic"] == student < teacher and out["flops_analytic_workload"] == teacher
    assert out["achieved_flops_per_s_analytic"] == pytest.approx(student / 2e-3) and not missing

    # prune-structured MLP: the formula with the kept widths = what the counter sees
    v = PruneStructuredVariant()
    out, missing = achieved_flops(workload=wl, spec=spec, metrics=metrics, variant=v)
    step = TorchBackend().prepare(wl, v, "cpu", "inference", 8)
    assert out["flops_analytic"] == count_torch_step(step)["flops"] < teacher
    # prune-structured CNN: no formula for pruned inner channels: null with the reason
    cnn = registry.load("workload", "cnn")(size="tiny")
    out, missing = achieved_flops(workload=cnn, spec=spec, metrics={"flops_analytic": 1, "latency_ms": {"p50": 2.0}},
                                  variant=v)
    assert out["flops_analytic"] is None and "achieved_flops_per_s_analytic" not in out
    assert "cannot describe" in missing["achieved_flops_per_s_analytic"]
    # plain variants keep the workload's count
    out, _ = achieved_flops(workload=wl, spec=spec, metrics=metrics, variant=FP32Variant())
    assert out == {"achieved_flops_per_s_analytic": pytest.approx(teacher / 2e-3)}


def test_pruned_cnn_without_a_count_gives_null_flops_and_mfu_with_the_reason(monkeypatch):
    import harness.core.flops as flops_mod
    from harness.variants.prune import PruneStructuredVariant

    wl = registry.load("workload", "cnn")(size="tiny")
    v = PruneStructuredVariant()
    step = TorchBackend().prepare(wl, v, "cpu", "inference", 2)
    spec = TaskSpec("cnn", "torch", "cpu", "prune-structured", "inference", 2, "tiny")
    monkeypatch.setattr(flops_mod, "count_torch_step", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("x")))
    out, missing = flops_analysis(step=step, workload=wl, spec=spec, metrics={"latency_ms": {"p50": 1.0}}, variant=v)
    assert out["flops"] is None and out["achieved_flops_per_s"] is None and out["mfu"] is None
    assert "cannot describe" in missing["flops"] and "no FLOP count" in missing["mfu"]
    c = {"status": "ok", "spec": {"device": "cpu", "variant": "prune-structured"}, "runtime": {"threads": 2},
         "metrics": dict(out), "unavailable": dict(missing)}
    apply_calibration(c, {"cpu": {"peak_flops_per_s": {"fp32": 1e9}, "threads": 2}})
    assert c["metrics"]["mfu"] is None and "no FLOP count" in c["unavailable"]["mfu"]


def test_compile_flops_are_counted_on_the_eager_module(monkeypatch):
    """The harness's compile wrapper hid torch.compile's ``_orig_mod``: the counter ran
    the compiled module (compiling under the counter). Now it counts the eager module."""
    from harness.variants.compile import CompileVariant

    compiled_calls = []

    class Compiled(torch.nn.Module):  # stands in for OptimizedModule: records being run
        def __init__(self, m):
            super().__init__()
            self.inner = m

        def forward(self, *xs):
            compiled_calls.append(1)
            return self.inner(*xs)

    monkeypatch.setattr(torch, "compile", lambda m, **k: Compiled(m))
    wl = registry.load("workload", "mlp")(size="tiny")
    v = CompileVariant()
    step = TorchBackend().prepare(wl, v, "cpu", "inference", 4)
    counted = count_torch_step(step, v)
    assert compiled_calls == [] and step.model.first_call_s is None  # the compiled module never ran
    assert counted["flops"] == wl.analytic_flops_for(4, "inference")
    assert step.model.eager_module is not step.model
