"""The on-disk cache (harness/core/cache.py, docs/cache.md): bounded LRU eviction, the
off switch, an unusable cache never failing a cell, keys that change with everything
that affects the cached value, a warm cache giving the same numbers as a cold one, and
the ``harness cache`` verb."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from harness.core import cache  # noqa: E402
from harness.core.suite import Settings, TaskSpec  # noqa: E402

HAS_ORT = all(importlib.util.find_spec(p) is not None for p in ("onnx", "onnxruntime"))
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="onnx / onnxruntime not installed")
SETTINGS = Settings(size="tiny", min_time_s=0.02, min_samples=3, warmup_max_s=0.05, threads=1)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv(cache.DIR_ENV, str(d))
    monkeypatch.delenv(cache.ENABLE_ENV, raising=False)
    monkeypatch.delenv(cache.MAX_MB_ENV, raising=False)
    return d


def _run(variant: str, mode: str) -> dict:
    from harness.launch.worker import run_cell

    cell = run_cell(TaskSpec("mlp", "torch", "cpu", variant, mode, 8, "tiny"), SETTINGS)
    assert cell["status"] == "ok", cell.get("reason") or cell.get("error")
    return cell


# ------------------------------------------------------------------ the store itself


def test_location_defaults_and_overrides(monkeypatch, tmp_path):
    monkeypatch.delenv(cache.DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.root() == tmp_path / "xdg" / "dl-harness"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.root() == tmp_path / "home" / ".cache" / "dl-harness"
    monkeypatch.setenv(cache.DIR_ENV, str(tmp_path / "mine"))
    assert cache.root() == tmp_path / "mine"
    assert cache.max_bytes() == 2048 * 2**20


def test_least_recently_used_entries_are_evicted_down_to_90_percent(monkeypatch, cache_dir):
    monkeypatch.setenv(cache.MAX_MB_ENV, str(10_000 / 2**20))  # a 10,000-byte bound
    for i in range(3):
        assert cache.put_bytes("flops", f"e{i}", b"x" * 3000) is None
        os.utime(cache.path_for("flops", f"e{i}", ".bin"), (1000 + i, 1000 + i))  # e0 oldest
    assert cache.get_bytes("flops", "e0").hit  # a hit makes e0 the most recently used
    assert cache.put_bytes("onnx", "e3", b"y" * 3000) is None  # 12,000 > 10,000: evict
    left = {p.name for p in cache_dir.rglob("*") if p.is_file()}
    # e1 (now the least recently used) went: 9,000 bytes left, 90% of the bound
    assert left == {"e0.bin", "e2.bin", "e3.bin"}
    assert cache.info()["bytes"] <= 9000
    assert cache.put_bytes("flops", "big", b"z" * 20_000) is None  # larger than the bound: not kept
    assert cache.info()["bytes"] <= 9000
    assert cache.get_bytes("flops", "e1").status == cache.MISS


def test_disabled_cache_is_always_off_and_writes_nothing(monkeypatch, cache_dir):
    monkeypatch.setenv(cache.ENABLE_ENV, "0")
    assert "DL_HARNESS_CACHE=0" in (cache.put_json("flops", "k", {"a": 1}) or "")
    got = cache.get_json("flops", "k")
    assert got.status == cache.OFF and "disabled" in got.reason
    assert not cache_dir.exists()


def test_corrupt_entry_is_a_miss_with_the_reason_and_is_removed(cache_dir):
    cache.put_json("flops", "k", {"a": 1})
    path = cache.path_for("flops", "k", ".json")
    path.write_text("{not json")
    got = cache.get_json("flops", "k")
    assert got.status == cache.MISS and "could not read" in got.reason
    assert not path.exists()


def test_clear_removes_only_entries_of_the_kind(cache_dir):
    cache.put_bytes("flops", "a", b"1")
    cache.put_bytes("onnx", "b", b"2")
    (cache_dir / "notes.txt").write_text("not ours")
    assert cache.clear("flops") == (1, 1)
    assert cache.info()["kinds"]["onnx"]["entries"] == 1
    assert cache.clear() == (1, 1)
    assert (cache_dir / "notes.txt").exists()
    with pytest.raises(ValueError, match="kinds: quality, flops, onnx, tflite, quality_eval"):
        cache.clear("bogus")


# ------------------------------------------------------------------ keys


def _step(model, batch=4, mode="inference", width=16):
    x = torch.randn(batch, width)
    return SimpleNamespace(model=model, inputs=[x], labels=torch.zeros(batch, dtype=torch.long), mode=mode,
                           forward_context=None)


def _spec(variant="fp32", mode="inference", batch=4):
    return TaskSpec("mlp", "torch", "cpu", variant, mode, batch, "tiny")


def _flops_key(model, variant_name="fp32", mode="inference", batch=4, width=16):
    from harness.core.flops import flops_cache_key
    from harness.core.registry import load

    variant = load("variant", variant_name)()
    return flops_cache_key(_step(model, batch, mode, width), variant, _spec(variant_name, mode, batch))


def _user_module(tmp_path, monkeypatch, body: str):
    path = tmp_path / "dlh_user_model.py"
    path.write_text(
        "import torch\n"
        "class UserNet(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(16, 4)\n"
        "    def forward(self, x):\n"
        f"        return {body}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("dlh_user_model", None)
    return importlib.import_module("dlh_user_model"), path


def test_flops_key_changes_with_shape_variant_mode_structure_and_source(tmp_path, monkeypatch):
    mod, path = _user_module(tmp_path, monkeypatch, "self.fc(x)")
    torch.manual_seed(0)
    model = mod.UserNet()
    base = _flops_key(model)
    assert base == _flops_key(model)  # deterministic (no time, no run id)
    with torch.no_grad():
        model.fc.weight.add_(1.0)
    assert _flops_key(model) == base  # FLOPs do not depend on weight values
    assert _flops_key(model, batch=8) != base  # input shape
    assert _flops_key(model, variant_name="bf16") != base  # variant (and its autocast)
    assert _flops_key(model, mode="training") != base  # mode
    model.fc.weight.requires_grad_(False)
    assert _flops_key(model) != base  # requires_grad of a parameter
    model.fc.weight.requires_grad_(True)
    model.fc.register_buffer("scale", torch.ones(1))
    assert _flops_key(model) != base  # a buffer added
    del model.fc.scale
    assert _flops_key(model) == base
    # editing the user's forward() (its source file) invalidates, without re-importing
    path.write_text(path.read_text().replace("self.fc(x)", "self.fc(x) * 2"))
    assert _flops_key(model) != base


def test_export_key_changes_with_weights_batches_variant_shape_and_source(tmp_path, monkeypatch):
    from harness.core.registry import load
    from harness.variants._torch_utils import export_cache_key
    from harness.workloads.mlp import MLPWorkload

    mod, path = _user_module(tmp_path, monkeypatch, "self.fc(x)")
    wl = MLPWorkload("tiny")
    dyn, static = load("variant", "int8-dynamic")(), load("variant", "int8-static")()
    torch.manual_seed(0)
    model = mod.UserNet()
    batches = [[np.ones((8, 16), np.float32)]]
    base = export_cache_key(model, wl, batches, dyn)
    assert base == export_cache_key(model, wl, batches, dyn)
    assert export_cache_key(model, wl, batches, static) != base  # variant
    assert export_cache_key(model, wl, [[np.zeros((8, 16), np.float32)]], dyn) != base  # calibration bytes
    assert export_cache_key(model, wl, [[np.ones((4, 16), np.float32)]], dyn) != base  # batch shape
    assert export_cache_key(model, MLPWorkload("small"), batches, dyn) != base  # workload config
    with torch.no_grad():
        model.fc.bias[0] += 1e-3
    changed = export_cache_key(model, wl, batches, dyn)
    assert changed != base  # fp32 weights
    path.write_text(path.read_text().replace("self.fc(x)", "torch.relu(self.fc(x))"))
    assert export_cache_key(model, wl, batches, dyn) != changed  # the model's source


# ------------------------------------------------------------------ through the worker


@needs_ort
def test_warm_cache_gives_the_same_numbers_as_a_cold_one(cache_dir):
    keys = ("flops", "flops_counted", "flops_analytic_ratio", "bytes_moved_estimate",
            "arithmetic_intensity_flop_per_byte", "params", "nonzero_params", "model_size_bytes",
            "onnx_fp32_size_bytes")
    for variant, mode in (("int8-dynamic", "inference"), ("fp32", "training")):
        cold = _run(variant, mode)["metrics"]
        warm = _run(variant, mode)["metrics"]
        assert (cold["flops_count_cache"], warm["flops_count_cache"]) == ("miss", "hit")
        if variant == "int8-dynamic":
            assert (cold["export_cache"], warm["export_cache"]) == ("miss", "hit")
            assert warm["quantize_time_s"] > 0  # the time actually spent, small on a hit
            q_cold, q_warm = cold["quality"], warm["quality"]
            assert (q_cold["eval_cache"], q_warm["eval_cache"]) == ("miss", "hit")
            assert q_warm["trained"]["cache"] == "unused"  # the evaluation was reused: nothing loaded
            for k in ("accuracy", "fp32_accuracy", "agreement"):
                assert q_cold[k] == q_warm[k]
        assert {k: cold.get(k) for k in keys} == {k: warm.get(k) for k in keys}
    kinds = cache.info()["kinds"]
    assert kinds["flops"]["entries"] == 2 and kinds["onnx"]["entries"] >= 2 and kinds["quality"]["entries"] == 1
    assert kinds["quality_eval"]["entries"] == 1


@needs_ort
def test_an_unwritable_cache_degrades_to_a_miss_without_failing_the_cell(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")  # unwritable even for root
    monkeypatch.setenv(cache.DIR_ENV, str(blocker / "cache"))
    monkeypatch.setenv("DL_HARNESS_QUALITY_BUDGET_TFLOP", "0")
    for _ in range(2):
        m = _run("int8-dynamic", "inference")["metrics"]
        assert m["flops_count_cache"] == "miss" and "could not write the cache" in m["flops_count_cache_reason"]
        assert m["export_cache"] == "miss" and "could not write the cache" in m["export_cache_reason"]
        assert m["model_size_bytes"] > 0


@needs_ort
def test_disabled_cache_is_recorded_as_off_in_the_cell(monkeypatch, cache_dir):
    monkeypatch.setenv(cache.ENABLE_ENV, "0")
    monkeypatch.setenv("DL_HARNESS_QUALITY_BUDGET_TFLOP", "0")
    m = _run("int8-dynamic", "inference")["metrics"]
    assert m["flops_count_cache"] == "off" and m["export_cache"] == "off"
    assert "DL_HARNESS_CACHE=0" in m["export_cache_reason"]
    assert not cache_dir.exists()


def test_a_warm_record_passes_schema_validation_with_no_undeclared_number(monkeypatch):
    import json

    from harness.core import metrics as M
    from harness.store.schema import CELL_SCHEMA, compile_schema

    monkeypatch.setenv("DL_HARNESS_QUALITY_BUDGET_TFLOP", "0")
    _run("fp32", "inference")
    cell = json.loads(json.dumps(_run("fp32", "inference")))
    assert cell["metrics"]["flops_count_cache"] == "hit"
    assert compile_schema(CELL_SCHEMA)(cell, "") is None
    assert M.undeclared([cell]) == []


# ------------------------------------------------------------------ the CLI


def test_cli_info_clear_and_unknown_kind(capsys, cache_dir):
    from harness.cli import main

    cache.put_bytes("onnx", "a", b"12345")
    cache.put_bytes("flops", "b", b"1")
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert str(cache_dir) in out and "onnx" in out and "2048.0 MB" in out
    assert main(["cache", "clear", "--kind", "onnx"]) == 0
    assert "removed 1 onnx entries" in capsys.readouterr().out
    assert cache.info()["entries"] == 1
    assert main(["cache", "clear", "--kind", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "quality, flops, onnx, tflite, quality_eval" in err[0]
    assert main(["cache", "clear"]) == 0 and cache.info()["entries"] == 0


# ------------------------------------------------------------------ quality evaluations

_NOT_EVAL = ("eval_cache", "eval_cache_reason", "trained")  # how this cell got the numbers, not the numbers


def _quality(metrics: dict) -> dict:
    return {k: v for k, v in metrics["quality"].items() if k not in _NOT_EVAL}


def _other_cpu(monkeypatch, flags: str) -> None:
    text = f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse4_2 {flags}\n"
    monkeypatch.setattr(cache, "_read_cpuinfo", lambda: text)


@needs_ort
def test_quality_evaluation_is_reused_and_keyed_by_the_machine(monkeypatch, cache_dir):
    from harness.core import quality

    calls = []
    real = quality.trained_model
    monkeypatch.setattr(quality, "trained_model", lambda *a, **k: calls.append(1) or real(*a, **k))
    _other_cpu(monkeypatch, "avx2 fma")
    from harness.core import metrics as M
    from harness.store.schema import CELL_SCHEMA, compile_schema

    for variant in ("fp32", "int8-dynamic"):
        cold_cell, warm_cell = _run(variant, "inference"), _run(variant, "inference")
        cold, warm = cold_cell["metrics"], warm_cell["metrics"]
        assert compile_schema(CELL_SCHEMA)(warm_cell, "") is None
        assert M.undeclared([warm_cell]) == M.undeclared([cold_cell])  # a hit adds no undeclared number
        assert (cold["quality"]["eval_cache"], warm["quality"]["eval_cache"]) == ("miss", "hit")
        assert _quality(warm) == _quality(cold)  # accuracy, delta, agreement, gate, fp32 accuracy, ...
        assert cold["quality"]["trained"]["cache"] in ("miss", "hit") and warm["quality"]["trained"]["cache"] == "unused"
        # the measured model's own stats are computed live on every cell, never taken from the cache
        for k in ("params", "nonzero_params", "model_size_bytes"):
            assert warm[k] == cold[k] and k not in warm["quality"]
    assert len(calls) == 2  # the warm cells neither trained nor loaded the fp32 model
    # the model's torch module classes are checked on a hit: a changed source file is a miss
    import json

    entry = next((cache_dir / "quality_eval").glob("*.json"))
    stored = json.loads(entry.read_text())
    assert any("_torch_models" in p for p, _ in stored["model_sources"].values())
    for v in stored["model_sources"].values():
        v[1] = "0" * 64
    entry.write_text(json.dumps(stored))
    q = _run(stored["quality"].get("variant_metrics") and "int8-dynamic" or "fp32", "inference")["metrics"]["quality"]
    assert q["eval_cache"] == "miss" and "stale" in q["eval_cache_reason"] and len(calls) == 3
    # another CPU (an int8 kernel ISA more) sharing this cache directory does not get these numbers
    _other_cpu(monkeypatch, "avx2 fma avx512_vnni")
    moved = _run("int8-dynamic", "inference")["metrics"]["quality"]
    assert moved["eval_cache"] == "miss" and len(calls) == 4
    assert cache.info()["kinds"]["quality_eval"]["entries"] == 3


def _user_plugins(tmp_path, monkeypatch, extra: str = ""):
    path = tmp_path / "dlh_user_plugins.py"
    path.write_text(
        "from harness.variants import FP32Variant\n"
        "from harness.backends.torch_backend import TorchBackend\n"
        "class UserVariant(FP32Variant):\n"
        "    name = 'user-fp32'\n"
        "class UserBackend(TorchBackend):\n"
        "    name = 'user-torch'\n"
        f"{extra}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("dlh_user_plugins", None)
    return importlib.import_module("dlh_user_plugins"), path


def test_quality_eval_key_changes_with_variant_backend_sources_data_and_machine(tmp_path, monkeypatch):
    from harness.core import quality
    from harness.core.registry import load
    from harness.variants.prune import PruneConfig, PruneStructuredVariant
    from harness.workloads.mlp import MLPWorkload

    mod, path = _user_plugins(tmp_path, monkeypatch)
    qwl = quality.quality_workload(MLPWorkload("tiny"))
    torch_be, variant, backend = load("backend", "torch")(), mod.UserVariant(), mod.UserBackend()
    _other_cpu(monkeypatch, "avx2")

    def k(variant=variant, backend=backend, device="cpu"):
        return quality.eval_cache_key(qwl, variant, backend, device)

    base = k()
    assert base == k()  # deterministic: no time, no run id
    assert k(variant=load("variant", "int8-dynamic")()) != base  # the variant
    pruned = k(variant=PruneStructuredVariant(PruneConfig(amount=0.5)))
    assert k(variant=PruneStructuredVariant(PruneConfig(amount=0.75))) != pruned  # its config
    assert k(variant=PruneStructuredVariant(PruneConfig(amount=0.5, quality_gate=0.5))) != pruned  # its gate
    assert k(backend=torch_be) != base  # the backend
    with monkeypatch.context() as m:  # the trained model (every part of its key but the model's classes' files)
        m.setitem(quality.RECIPES, "mlp", quality.TrainRecipe(epochs=31, lr=3e-3))
        assert k() != base
    with monkeypatch.context() as m:
        m.setattr(quality, "DATASET", quality.DATASET.replace("75/25", "80/20"))
        assert k() != base  # the evaluation data (its description; its code is in the sources)
    assert k(device="cuda") != base  # the device type
    _other_cpu(monkeypatch, "avx2 avx512_bf16")
    assert k() != base  # the CPU's numerics-relevant ISA flags
    _other_cpu(monkeypatch, "avx2 hypervisor")
    assert k() == base  # flags that cannot change numerics do not split the cache
    _other_cpu(monkeypatch, "avx2")
    with monkeypatch.context() as m:
        m.setattr("platform.machine", lambda: "aarch64")
        assert k() != base  # the architecture
    assert k() == base
    # editing the variant's or the backend's source file invalidates, without re-importing
    path.write_text(path.read_text() + "# an edit of the user's plugins\n")
    assert k() != base


def test_quality_eval_cache_off_and_unwritable_never_fail_the_cell(monkeypatch, tmp_path):
    from harness.core import quality

    # an untrained model (the numbers do not matter here, only the cache's bookkeeping)
    monkeypatch.setattr(quality, "train_fp32", lambda qwl, data, recipe: qwl.build("torch").eval())
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(cache.DIR_ENV, str(blocker / "cache"))
    for _ in range(2):
        cell = _run("fp32", "inference")
        q = cell["metrics"]["quality"]
        assert q["eval_cache"] == "miss" and "could not write the cache" in q["eval_cache_reason"]
        assert cell["metrics"]["model_size_bytes"] > 0
    monkeypatch.setenv(cache.DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(cache.ENABLE_ENV, "0")
    q = _run("fp32", "inference")["metrics"]["quality"]
    assert q["eval_cache"] == "off" and "DL_HARNESS_CACHE=0" in q["eval_cache_reason"]
    assert not (tmp_path / "cache").exists()
