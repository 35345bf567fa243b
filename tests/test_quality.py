"""The quality track: real digits data, brief seeded training, cached weights, the gate.

The fp32 MLP is trained for real on scikit-learn's bundled digits (a couple of
seconds); the tests check that the accuracy comes from the data (far above chance,
and far above the same architecture untrained), that the cache is keyed and atomic,
and that the gate follows its configured threshold.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from harness.core import quality  # noqa: E402
from harness.api import SkipCell  # noqa: E402
from harness.core.suite import TaskSpec  # noqa: E402
from harness.variants import FP32Variant  # noqa: E402
from harness.variants.prune import PruneConfig, PruneStructuredVariant  # noqa: E402
from harness.workloads import quality_data as qd  # noqa: E402
from harness.workloads.cnn import CNNWorkload  # noqa: E402
from harness.workloads.mlp import MLPWorkload  # noqa: E402
from harness.workloads.transformer import TransformerWorkload  # noqa: E402


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(quality.CACHE_ENV, str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("qcache")


def test_digits_split_is_stratified_deterministic_and_offline():
    a, b = qd.load_digits_split(), qd.load_digits_split()
    assert a.train_images.shape[1:] == (8, 8) and len(a.train_labels) + len(a.test_labels) == 1797
    np.testing.assert_array_equal(a.test_labels, b.test_labels)
    counts = np.bincount(a.test_labels, minlength=10)
    assert counts.min() >= 40  # every class present in the held-out split
    with pytest.raises(ValueError):
        qd.load_digits_split(test_fraction=1.5)


@pytest.mark.parametrize("W", [MLPWorkload, CNNWorkload, TransformerWorkload])
@pytest.mark.parametrize("size", ["tiny", "small"])
def test_adapters_match_the_quality_architecture(W, size):
    wl = W(size)
    qwl = quality.quality_workload(wl)
    assert qwl.num_classes == 10
    images = qd.load_digits_split().test_images[:5]
    arrays = qd.to_inputs(wl.name, qwl.config, images)
    specs = list(qwl.input_specs())
    assert len(arrays) == len(specs)
    for a, spec in zip(arrays, specs):
        assert a.shape == (5, *spec.shape)
        assert str(a.dtype) == spec.dtype
        if spec.high is not None:
            assert 0 <= a.min() and a.max() < spec.high
    # only the input/output shapes differ from the speed preset
    changed = {f.name for f in dataclasses.fields(wl.config)
               if getattr(wl.config, f.name) != getattr(qwl.config, f.name)}
    assert changed <= {"input_dim", "image_size", "in_channels", "seq_len", "max_positions",
                       "dropout", "num_classes"}


def test_transformer_tokens_carry_the_image():
    """Different digits give different token sequences; token 0 is the class token."""
    split = qd.load_digits_split()
    qwl = quality.quality_workload(TransformerWorkload("tiny"))
    (ids,) = qd.to_inputs("transformer", qwl.config, split.test_images[:50])
    assert (ids[:, 0] == 0).all() and (ids[:, 1:] >= 1).all()
    assert len({tuple(r) for r in ids}) > 45


def test_quality_refuses_what_it_cannot_train_with_a_reason():
    with pytest.raises(SkipCell, match="sizes tiny, small only"):
        quality.quality_workload(MLPWorkload("base"))

    class Other:
        name = "other"
        size = "tiny"

    with pytest.raises(SkipCell, match="no quality task"):
        quality.quality_workload(Other())


def test_trained_mlp_learns_the_digits_and_is_cached(cache):
    from harness.core.frameworks.torch_utils import predict

    qwl = quality.quality_workload(MLPWorkload("tiny"))
    data = quality.quality_data(qwl)
    model, info = quality.trained_model(qwl, data)
    assert info["cache"] == "miss" and info["train_time_s"] > 0
    y = np.asarray(data.test_labels)
    acc = (predict(model, data.test_inputs).argmax(1) == y).mean()
    untrained = (predict(qwl.build("torch"), data.test_inputs).argmax(1) == y).mean()
    assert acc > 0.8  # chance is 0.1
    assert untrained < 0.35
    files = list((cache / "quality").iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt"  # no temp file left behind
    again, info2 = quality.trained_model(qwl, data)
    assert info2["cache"] == "hit"
    np.testing.assert_array_equal(predict(again, data.test_inputs), predict(model, data.test_inputs))
    # a corrupt cache entry is retrained, not fatal
    files[0].write_bytes(b"not a checkpoint")
    _, info3 = quality.trained_model(qwl, data)
    assert info3["cache"] == "miss"


def test_cache_key_changes_with_architecture_and_recipe():
    cfg = quality.quality_workload(MLPWorkload("tiny")).config
    r = quality.RECIPES["mlp"]
    k = quality.cache_key("mlp", cfg, r)
    assert k == quality.cache_key("mlp", cfg, r)
    assert k != quality.cache_key("mlp", dataclasses.replace(cfg, hidden=(16, 16)), r)
    assert k != quality.cache_key("mlp", cfg, dataclasses.replace(r, epochs=r.epochs + 1))


@pytest.mark.parametrize("acc,fp32,thr,passed", [
    (0.95, 0.96, 0.99, False),  # 0.95 < 0.99 * 0.96 = 0.9504
    (0.951, 0.96, 0.99, True),
    (0.90, 0.96, 0.99, False),
    (0.90, 0.96, 0.90, True),
    (0.96, 0.96, 0.99, True),
])
def test_gate_rule(acc, fp32, thr, passed):
    g = quality.gate(acc, fp32, thr)
    assert g["passed"] is passed
    assert g["threshold"] == thr and str(thr) in g["rule"]


def test_evaluate_quality_baseline_and_a_configurable_gate(shared_cache, monkeypatch):
    monkeypatch.setenv(quality.CACHE_ENV, str(shared_cache))
    wl = MLPWorkload("tiny")
    base = quality.evaluate_quality(wl, FP32Variant())
    assert base["accuracy"] == base["fp32_accuracy"] > 0.8
    assert base["accuracy_delta"] == 0.0 and base["agreement"] == 1.0 and base["gate"]["passed"]
    assert base["n_eval"] == 450 and "load_digits" in base["dataset"]
    strict = quality.evaluate_quality(wl, PruneStructuredVariant(PruneConfig(amount=0.75)))
    assert strict["accuracy"] < base["accuracy"] and strict["agreement"] < 1.0
    assert strict["accuracy_delta"] == pytest.approx(strict["accuracy"] - base["accuracy"])
    assert strict["trained"]["cache"] == "hit"  # the fp32 model is shared between variants
    lenient = quality.evaluate_quality(wl, PruneStructuredVariant(PruneConfig(amount=0.75, quality_gate=0.1)))
    assert lenient["accuracy"] == strict["accuracy"]
    assert lenient["gate"]["threshold"] == 0.1 and lenient["gate"]["passed"]
    assert strict["gate"]["passed"] is (strict["accuracy"] >= 0.99 * base["accuracy"])


@pytest.mark.parametrize("name,dtype", [("bf16", "bfloat16"), ("fp16", "float16")])
def test_quality_of_mixed_precision_is_the_cast_once_model_that_was_timed(shared_cache, monkeypatch, name, dtype):
    """The speed track times a model whose weights were cast once (no autocast); the
    quality track must evaluate that same model, not fp32 weights under autocast."""
    import torch

    from harness.core import registry
    from harness.core.frameworks import torch_utils as _torch_utils

    monkeypatch.setenv(quality.CACHE_ENV, str(shared_cache))
    real_predict = _torch_utils.predict
    seen = []

    def predict(model, inputs, batch_size=256, context=None, input_dtype=None):
        seen.append(({p.dtype for p in model.parameters()}, input_dtype, context))
        return real_predict(model, inputs, batch_size, context, **({"input_dtype": input_dtype} if input_dtype else {}))

    monkeypatch.setattr(_torch_utils, "predict", predict)
    q = quality.evaluate_quality(MLPWorkload("tiny"), registry.load("variant", name)())
    teacher, variant = seen
    assert teacher[0] == {torch.float32}
    assert variant[0] == {getattr(torch, dtype)} and variant[1] == dtype and variant[2] is None
    assert q["accuracy"] > 0.8 and q["agreement"] > 0.95


def test_tf32_quality_is_not_claimed_from_a_cpu(shared_cache, monkeypatch):
    from harness.variants.precision import TF32Variant

    monkeypatch.setenv(quality.CACHE_ENV, str(shared_cache))
    spec = TaskSpec("mlp", "torch", "cuda", "tf32", "inference", 8, "tiny")

    class FakeStep:
        model = MLPWorkload("tiny").build_torch()

    _, missing = quality.quality_analysis(step=FakeStep(), workload=MLPWorkload("tiny"), variant=TF32Variant(),
                                          spec=spec)
    assert "no TF32" in missing["quality"]


def test_analysis_reports_reasons_instead_of_numbers_it_cannot_make(shared_cache, monkeypatch):
    monkeypatch.setenv(quality.CACHE_ENV, str(shared_cache))

    class FakeStep:  # a finished step: only .model is read
        model = MLPWorkload("tiny").build_torch()

    train = TaskSpec("mlp", "torch", "cpu", "fp32", "training", 8, "tiny")
    metrics, missing = quality.quality_analysis(step=FakeStep(), workload=MLPWorkload("tiny"),
                                                variant=FP32Variant(), spec=train)
    assert "quality" not in metrics and "inference cells only" in missing["quality"]
    assert metrics["params"] == 3466 and metrics["nonzero_params"] == 3466
    assert metrics["model_size_bytes"] > 3466 * 4  # float32 weights plus container
    base = TaskSpec("mlp", "torch", "cpu", "fp32", "inference", 8, "base")
    metrics, missing = quality.quality_analysis(step=FakeStep(), workload=MLPWorkload("base"),
                                                variant=FP32Variant(), spec=base)
    assert "quality" not in metrics and "tiny, small" in missing["quality"]


def test_training_budget_refuses_expensive_uncached_models(cache, monkeypatch):
    wl = MLPWorkload("tiny")
    monkeypatch.setenv(quality.BUDGET_ENV, "1e-9")
    with pytest.raises(SkipCell, match="over the budget"):
        quality.evaluate_quality(wl, FP32Variant())
    assert not (cache / "quality").exists()  # nothing was trained
    monkeypatch.setenv(quality.BUDGET_ENV, "0")
    with pytest.raises(SkipCell, match="disabled"):
        quality.evaluate_quality(wl, FP32Variant())
    monkeypatch.setenv(quality.BUDGET_ENV, "lots")
    with pytest.raises(SkipCell, match="not a number"):
        quality.evaluate_quality(wl, FP32Variant())
    # the small transformer is over the default budget
    qwl = quality.quality_workload(TransformerWorkload("small"))
    assert quality.training_tflop(qwl, 1347, quality.RECIPES["transformer"]) > quality.DEFAULT_BUDGET_TFLOP
