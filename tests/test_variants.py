"""The compression / acceleration variants on the built-in workloads (tiny presets, CPU).

Everything runs for real (torch, ONNX Runtime, LiteRT); nothing is faked. The checks
are behavioural: pruning leaves the requested fraction of zeros, structured pruning
shrinks the dense model, int8 models are smaller on disk and still close to fp32,
inference-only variants refuse training with a reason.
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from harness.core import registry  # noqa: E402
from harness.api import SkipCell  # noqa: E402
from harness.variants import FP32Variant  # noqa: E402
from harness.variants.base import CompressionConfig  # noqa: E402
from harness.variants.distill import DistillConfig, DistillVariant, student_config  # noqa: E402
from harness.variants.precision import BF16Variant, FP16Variant  # noqa: E402
from harness.variants.prune import PruneConfig, PruneStructuredVariant, PruneUnstructuredVariant  # noqa: E402
from harness.variants.quantize import Int8DynamicVariant, Int8StaticVariant  # noqa: E402
from harness.workloads.cnn import CNNWorkload  # noqa: E402
from harness.workloads.mlp import MLPWorkload  # noqa: E402
from harness.workloads.transformer import TransformerWorkload  # noqa: E402

WORKLOADS = [MLPWorkload, CNNWorkload, TransformerWorkload]
ALL_VARIANTS = ["fp32", "fp16", "bf16", "tf32", "int8-dynamic", "int8-static", "prune-unstructured",
                "prune-structured", "distill", "compile"]
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="onnx / onnxruntime not installed")


def _apply(variant, workload, mode="inference"):
    model = workload.build("torch")
    return variant.apply("torch", model, device=torch.device("cpu"), mode=mode, workload=workload)


def _forward(model, workload, batch=8, seed=3):
    arrays, _ = workload.make_inputs(batch, seed=seed)
    model.eval()
    with torch.inference_mode():
        return model(*[torch.from_numpy(a) for a in arrays]).float().numpy()


def _prunable(model):
    return [m.weight for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]


def test_every_variant_is_registered_under_its_name():
    names = set(registry.names("variant"))
    assert set(ALL_VARIANTS) <= names
    for name in ALL_VARIANTS:
        assert registry.load("variant", name).name == name
    # the fp32 baseline stays importable from the package
    assert registry.entry_point_value("variant", "fp32") == "harness.variants:FP32Variant"
    assert FP32Variant.name == "fp32"


@pytest.mark.parametrize("make", [
    lambda: CompressionConfig(quality_gate=0.0),
    lambda: CompressionConfig(quality_gate=1.5),
    lambda: PruneConfig(amount=1.0),
    lambda: PruneConfig(amount=-0.1),
    lambda: DistillConfig(width=0.0),
    lambda: DistillConfig(epochs=0),
])
def test_configs_validate(make):
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("W", WORKLOADS)
@pytest.mark.parametrize("amount", [0.5, 0.8])
def test_prune_unstructured_zeroes_the_requested_global_fraction(W, amount):
    wl = W("tiny")
    model = _apply(PruneUnstructuredVariant(PruneConfig(amount=amount)), wl)
    weights = _prunable(model)
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros / total == pytest.approx(amount, abs=0.01)
    # permanent: no pruning masks/hooks left, plain parameters
    assert not any(name.endswith("_orig") for name, _ in model.named_parameters())
    assert _forward(model, wl).shape == (8, wl.num_classes)


@pytest.mark.parametrize("W", WORKLOADS)
def test_prune_structured_makes_a_smaller_dense_model(W):
    wl = W("tiny")
    base = wl.build("torch")
    n0 = sum(p.numel() for p in base.parameters())
    half = _apply(PruneStructuredVariant(), wl)
    more = _apply(PruneStructuredVariant(PruneConfig(amount=0.75)), wl)
    n_half = sum(p.numel() for p in half.parameters())
    n_more = sum(p.numel() for p in more.parameters())
    assert n_more < n_half < n0
    assert _forward(half, wl).shape == (8, wl.num_classes)
    assert _forward(more, wl).shape == (8, wl.num_classes)


def test_prune_structured_keeps_the_strongest_units_exactly():
    """Pruning an MLP unit whose outgoing weights are already zero must not change the
    output: the surviving units are copied, not re-initialised."""
    from harness.workloads.mlp import MLPConfig

    wl = MLPWorkload("tiny", config=MLPConfig(input_dim=64, hidden=(32,), num_classes=10))
    model = wl.build("torch")
    with torch.no_grad():  # make the second half of hidden layer 1 dead and tiny
        model.net[0].weight[16:] *= 1e-3
        model.net[2].weight[:, 16:] = 0.0
    ref = _forward(model, wl)
    pruned = PruneStructuredVariant(PruneConfig(amount=0.5)).apply(
        "torch", model, device=torch.device("cpu"), mode="inference", workload=wl)
    assert pruned.net[0].out_features == 16
    np.testing.assert_allclose(_forward(pruned, wl), ref, rtol=1e-4, atol=1e-5)


@needs_ort
@pytest.mark.parametrize("W", WORKLOADS)
@pytest.mark.parametrize("V", [Int8DynamicVariant, Int8StaticVariant])
def test_int8_is_smaller_on_disk_and_close_to_fp32(W, V):
    from harness.core.frameworks.torch_utils import model_stats

    wl = W("tiny")
    fp32 = wl.build("torch").eval()
    variant = V()
    q = _apply(variant, wl)
    fp32_stats, q_stats = model_stats(fp32), model_stats(q)
    assert q_stats["model_size_bytes"] < fp32_stats["model_size_bytes"]
    assert q_stats["model_size_format"].startswith("onnx")
    ref, out = _forward(fp32, wl), _forward(q, wl)
    assert out.shape == ref.shape
    # int8 error is small next to the spread of the logits
    assert np.abs(out - ref).max() < 0.1 * (np.abs(ref).max() + 1e-6) + 0.02
    assert variant.metrics()["quantize_time_s"] > 0


@needs_ort
@pytest.mark.parametrize("V", [Int8DynamicVariant, Int8StaticVariant])
def test_int8_is_inference_only(V):
    with pytest.raises(SkipCell, match="inference-only"):
        _apply(V(), MLPWorkload("tiny"), mode="training")


@pytest.mark.parametrize("V,dtype", [(FP16Variant, torch.float16), (BF16Variant, torch.bfloat16)])
def test_mixed_precision_autocasts_training_and_casts_inference_weights_once(V, dtype):
    wl = MLPWorkload("tiny")
    v = V()
    x = torch.from_numpy(wl.make_inputs(4)[0][0])
    model = _apply(v, wl, mode="training")  # fp32 master weights, autocast per step
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    with v.autocast("torch", "cpu"):
        assert model(x).dtype == dtype
    assert v.cast_once_dtype("torch", "training") is None
    deployed = _apply(v, wl, mode="inference")  # weights cast once, as deployed
    assert {p.dtype for p in deployed.parameters()} == {dtype}
    assert v.cast_once_dtype("torch", "inference") == V.torch_dtype
    with torch.inference_mode():
        assert deployed(x.to(dtype)).dtype == dtype


def test_distill_student_is_smaller_and_learns_from_the_teacher():
    from harness.core.quality import quality_data, quality_workload

    wl = quality_workload(MLPWorkload("tiny"))
    cfg = student_config("mlp", wl.config, 0.5, 0.5)
    assert cfg.hidden == (16,)
    assert student_config("transformer", TransformerWorkload("tiny").config, 0.5, 0.5).hidden % 2 == 0
    data = quality_data(wl)
    teacher = wl.build("torch")

    def run(epochs):
        v = DistillVariant(DistillConfig(epochs=epochs, lr=1e-2))
        s = v.apply("torch", teacher, device=torch.device("cpu"), mode="inference", workload=wl,
                    train_data=(data.train_inputs, data.train_labels))
        return v, s

    v, student = run(3)
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())
    assert v.metrics()["distill_epochs"] == 3
    _, student2 = run(3)  # fixed seeds: the same student twice
    for a, b in zip(student.parameters(), student2.parameters()):
        assert torch.equal(a, b)
    # speed track (no data): the untrained student architecture only
    v3 = DistillVariant()
    s3 = v3.apply("torch", teacher, device=torch.device("cpu"), mode="inference", workload=wl)
    assert "distill_time_s" not in v3.metrics()
    assert sum(p.numel() for p in s3.parameters()) == v3.metrics()["student_params_analytic"]


@pytest.mark.slow
def test_compile_records_compile_time_and_matches_eager():
    from harness.variants.compile import CompileVariant

    wl = MLPWorkload("tiny")
    v = CompileVariant()
    eager = wl.build("torch").eval()
    ref = _forward(eager, wl)
    compiled = _apply(v, wl)
    assert v.metrics() == {}  # nothing compiled before the first call
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = _forward(compiled, wl)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    m = v.metrics()
    assert m["compile_time_s"] > 0
    assert v.unavailable() == {}
    assert CompileVariant.tf_jit_compile is True


def test_variants_skip_unknown_architectures_with_a_reason():
    class Tiny(torch.nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(SkipCell, match="built-in"):
        PruneStructuredVariant().apply("torch", Tiny(), device=torch.device("cpu"), mode="inference",
                                       workload=MLPWorkload("tiny"))
    with pytest.raises(SkipCell, match="no Linear or Conv"):
        PruneUnstructuredVariant().apply("torch", Tiny(), device=torch.device("cpu"), mode="inference")


# ------------------------------------------------------------------ through the worker


@pytest.fixture(scope="module")
def quality_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("quality-cache")


@needs_ort
def test_worker_cells_record_size_params_and_quality(quality_cache, monkeypatch):
    from harness.core.suite import Settings, TaskSpec
    from harness.launch.worker import run_cell

    monkeypatch.setenv("DL_HARNESS_CACHE_DIR", str(quality_cache))
    settings = Settings(size="tiny", min_time_s=0.02, min_samples=3, warmup_max_s=0.05, threads=1)
    cells = {}
    for variant in ("fp32", "int8-dynamic", "prune-unstructured"):
        for mode in ("inference", "training"):
            spec = TaskSpec("mlp", "torch", "cpu", variant, mode, 8, "tiny")
            cells[variant, mode] = run_cell(spec, settings)
    fp32 = cells["fp32", "inference"]
    assert fp32["status"] == "ok", fp32["reason"]
    q = fp32["metrics"]["quality"]
    assert q["accuracy"] == q["fp32_accuracy"] > 0.8 and q["agreement"] == 1.0 and q["gate"]["passed"]
    int8 = cells["int8-dynamic", "inference"]
    assert int8["status"] == "ok", int8["reason"]
    assert int8["metrics"]["model_size_bytes"] < fp32["metrics"]["model_size_bytes"]
    assert int8["metrics"]["params"] > 0  # counted from the ONNX graph, not 0 torch parameters
    assert int8["metrics"]["quality"]["fp32_accuracy"] == q["fp32_accuracy"]
    assert cells["int8-dynamic", "training"]["status"] == "skipped"
    assert "inference-only" in cells["int8-dynamic", "training"]["reason"]
    pruned = cells["prune-unstructured", "inference"]["metrics"]
    assert pruned["nonzero_params"] < 0.6 * pruned["params"]
    assert pruned["quality"]["gate"]["threshold"] == 0.99
    train = cells["fp32", "training"]
    assert train["status"] == "ok" and "quality" in train["unavailable"]


# ------------------------------------------------------------------ TensorFlow


HAS_TF = importlib.util.find_spec("tensorflow") is not None
HAS_LITERT = importlib.util.find_spec("ai_edge_litert") is not None


@pytest.mark.skipif(not (HAS_TF and HAS_LITERT), reason="tensorflow / ai-edge-litert not installed")
def test_tensorflow_litert_int8_and_pruning():
    from harness.core.frameworks.keras_utils import keras_model_stats, keras_predict
    from harness.variants._tf_utils import LiteRTModel
    from harness.workloads._keras_models import keras_inputs

    wl = MLPWorkload("tiny")
    base = wl.build("tensorflow")
    arrays = keras_inputs(wl, wl.make_inputs(8, seed=3)[0])
    ref = keras_predict(base, arrays)
    for V in (Int8DynamicVariant, Int8StaticVariant):
        q = V().apply("tensorflow", wl.build("tensorflow"), device="/CPU:0", mode="inference", workload=wl)
        assert isinstance(q, LiteRTModel)
        assert keras_model_stats(q)["model_size_bytes"] < keras_model_stats(base)["model_size_bytes"]
        out = keras_predict(q, arrays)
        assert np.abs(out - ref).max() < 0.1 * np.abs(ref).max() + 0.02
        with pytest.raises(SkipCell, match="inference-only"):
            V().apply("tensorflow", base, device="/CPU:0", mode="training", workload=wl)
    pruned = PruneUnstructuredVariant().apply("tensorflow", wl.build("tensorflow"), workload=wl)
    kernels = [w.numpy() for w in pruned.weights if w.path.endswith("kernel")]
    frac = sum(int((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels)
    assert frac == pytest.approx(0.5, abs=0.01)
    with pytest.raises(SkipCell, match="torch backend only"):
        PruneStructuredVariant().apply("tensorflow", base, workload=wl)
