"""The model zoo (``-w hf:NAME``, ``hf:PATH``, ``torchvision:``/``timm:``; docs/models.md).

* The full-size architectures have the published parameter counts, counted on the meta
  device (no memory, no weights), and ResNet-50's forward FLOPs at 224x224 are the
  published 4.09 G multiply-adds, counted by the harness's own counting path
  (:func:`harness.core.flops.count_torch_step`) on the meta device.
* Every zoo model runs at its ``tiny`` preset in inference and training through the real
  CLI, beside a built-in workload in the same run (``--size tiny``), and so does a local
  directory holding a ``config.json``: parameters counted = the workload's own count,
  FLOPs from the counter (``unavailable.flops_analytic`` says there is no formula), and
  the cell records where the model came from (``model``: random weights, the config,
  the file's SHA-256 for a local one).
* Variants apply where they can; what needs a built-in model is skipped with the reason.
* Naming mistakes are usage errors (exit 2, one line, close matches).

Two harness runs in all (module-scoped fixtures); the rest needs no run.
"""

from __future__ import annotations

import hashlib
import json
import types
from pathlib import Path
from typing import Any

import pytest

from harness import cli
from harness.api import SkipCell
from harness.core import registry
from harness.core.cells import Settings
from harness.core.suite import Suite, expand
from tests.conftest import run_cli

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from harness.workloads import zoo  # noqa: E402

#: published parameter counts (torchvision resnet50 / vit_b_16, bert-base-uncased's
#: BertModel, gpt2 with the tied embedding counted once, TinyLlama-1.1B)
PUBLISHED = {
    "resnet-50": 25_557_032,
    "vit-base": 86_567_656,
    "bert-base": 109_482_240,
    "gpt2": 124_439_808,
    "llama-1b": 1_100_048_384,
}
#: ResNet-50, 224x224, batch 1: 4,089,184,256 multiply-adds, 2 FLOPs each
RESNET50_FLOPS = 8_178_368_512

MODES = ("inference", "training")
FAST = ["--min-time", "0.05", "--no-progress"]


def _cells(doc: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """cells by (workload, variant, mode)."""
    return {(c["spec"]["workload"], c["spec"]["variant"], c["spec"]["mode"]): c for c in doc["cells"]}


def _only_result(out: Path) -> dict[str, Any]:
    files = sorted(out.glob("*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


# --------------------------------------------------------------------------- no run


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_full_size_parameter_counts_are_the_published_ones(name: str) -> None:
    wcls = registry.load("workload", f"hf:{name}")
    assert wcls.default_size == "full"
    assert set(wcls.presets) == {"full", "tiny"}
    assert wcls(size="full").analytic_params() == PUBLISHED[name]
    assert zoo.ZOO[name].full.published_params == PUBLISHED[name]  # what the cell records


def test_gpt2_counts_its_tied_embedding_once() -> None:
    w = registry.load("workload", "hf:gpt2")(size="full")
    with torch.device("meta"):
        model = w.build_torch()
    lm = model.model
    assert lm.lm_head.weight is lm.transformer.wte.weight
    untied = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    assert untied - w.analytic_params() == 50257 * 768


def test_resnet50_forward_flops_are_counted_on_the_meta_device() -> None:
    """4.09 G multiply-adds per 224x224 image, as the harness counts FLOPs for a cell
    (count_torch_step, the zoo's torch module), on meta tensors: no memory, no compute."""
    from harness.core.flops import count_torch_step

    w = registry.load("workload", "hf:resnet-50")(size="full")
    assert w.analytic_flops(1) is None  # no formula: the counter is the source
    (spec,) = w.input_specs()
    with torch.device("meta"):
        model = w.build_torch()
        x = torch.empty(1, *spec.shape)
    step = types.SimpleNamespace(model=model, inputs=[x], mode="inference", labels=None, forward_context=None)
    counted = count_torch_step(step)
    assert counted["unseen_ops"] == []
    assert counted["flops"] == RESNET50_FLOPS
    assert round(counted["flops"] / 2 / 1e9, 2) == 4.09


def test_mixed_run_sizes_fall_back_to_the_zoo_default() -> None:
    """``--size small``: the MLP runs small, zoo models at their default ``full``;
    ``NAME@SIZE`` wins over the run's size; one run, per-workload default batch sizes."""
    suite = Suite(name="cli", settings=Settings(size="small"),
                  matrix={"workload": ["mlp", "hf:gpt2", "hf:bert-base@tiny"], "mode": ["inference"]})
    sizes = {(c.workload, c.size, c.batch_size) for c in expand(suite)}
    assert sizes == {("mlp", "small", registry.load("workload", "mlp").default_batch_size["small"]),
                     ("hf:gpt2", "full", 4), ("hf:bert-base", "tiny", 2)}
    tiny = Suite(name="cli", settings=Settings(size="tiny"), matrix={"workload": ["mlp", "hf:gpt2@full"]})
    assert {(c.workload, c.size) for c in expand(tiny)} == {("mlp", "tiny"), ("hf:gpt2", "full")}


def test_a_suite_file_can_name_zoo_models() -> None:
    """Built-in and zoo workloads share one suite file (per-workload batch sizes and
    exclude rules name zoo models as well)."""
    from harness.core.suite import parse_suite

    suite = parse_suite("name: z\nsettings: {size: tiny}\nmatrix:\n  workload: [mlp, 'hf:gpt2@tiny']\n"
                        "  mode: [inference, training]\n  batch_size: {'hf:gpt2@tiny': [3]}\n"
                        "exclude:\n  - {workload: 'hf:gpt2', mode: training}\n", "z.yaml")
    mlp_bs = registry.load("workload", "mlp").default_batch_size["tiny"]
    assert {(c.workload, c.mode, c.batch_size, c.size) for c in expand(suite)} == {
        ("mlp", "inference", mlp_bs, "tiny"), ("mlp", "training", mlp_bs, "tiny"), ("hf:gpt2", "inference", 3, "tiny")}


def _usage_error(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    code = cli.main(args)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_unknown_zoo_name_is_a_usage_error_with_close_matches(capsys: pytest.CaptureFixture[str]) -> None:
    line = _usage_error(capsys, ["run", "-w", "hf:gtp2", "--out", "/nonexistent-dlh-out"])
    assert "unknown model 'hf:gtp2'" in line and "did you mean: gpt2?" in line
    assert all(n in line for n in PUBLISHED)  # the zoo is listed
    line = _usage_error(capsys, ["run", "-w", "hf:resnet50@tiny", "--out", "/nonexistent-dlh-out"])
    assert "did you mean: resnet-50?" in line


def test_missing_local_config_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = _usage_error(capsys, ["run", "-w", f"hf:{tmp_path}/nothing-here", "--out", str(tmp_path)])
    assert "no config.json" in line


def test_unknown_size_is_a_usage_error_listing_the_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    line = _usage_error(capsys, ["run", "-w", "hf:gpt2@huge", "--out", "/nonexistent-dlh-out"])
    assert "unknown size 'huge'" in line and "full, tiny" in line


def test_unknown_size_suggests_a_close_one(capsys: pytest.CaptureFixture[str]) -> None:
    line = _usage_error(capsys, ["run", "-w", "hf:gpt2@tinny", "--out", "/nonexistent-dlh-out"])
    assert "did you mean: tiny?" in line


def test_unknown_provider_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    line = _usage_error(capsys, ["run", "-w", "hff:gpt2", "--out", "/nonexistent-dlh-out"])
    assert "unknown model provider 'hff:'" in line and "hf:" in line and "custom:" in line


def test_unknown_provider_suggests_a_close_one(capsys: pytest.CaptureFixture[str]) -> None:
    line = _usage_error(capsys, ["run", "-w", "hff:gpt2", "--out", "/nonexistent-dlh-out"])
    assert "did you mean: hf" in line


def test_list_workloads_shows_the_zoo_and_how_to_name_a_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["list", "workloads"]) == 0
    out = capsys.readouterr().out
    for name in PUBLISHED:
        assert f"hf:{name}" in out
    for scheme in ("custom:", "torchvision:", "timm:"):
        assert scheme in out
    assert "@SIZE" in out and "config.json" in out


@pytest.mark.parametrize("scheme", ["torchvision", "timm"])
def test_torchvision_and_timm_skip_with_the_import_error_where_they_cannot_load(scheme: str) -> None:
    import importlib

    w = registry.load("workload", f"{scheme}:resnet18")(size="full")
    assert w.name == f"{scheme}:resnet18"
    try:
        importlib.import_module(scheme)
    except Exception as e:  # noqa: BLE001 - this machine's torchvision wheel raises RuntimeError
        with pytest.raises(SkipCell, match=f"{scheme} cannot be imported here: {type(e).__name__}"):
            w.build_torch()
    else:
        assert w.analytic_params() > 10_000_000  # it loads here: a real resnet18
    with pytest.raises(registry.UnknownName):
        registry.check_name("workload", f"{scheme}:bad name!")


# --------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def local_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a tiny GPT-2 ``config.json`` (as a model cache snapshot has)."""
    d = tmp_path_factory.mktemp("hf-local") / "tiny-gpt2"
    d.mkdir()
    _tiny_gpt2_config(d, n_positions=128)
    return d


def _tiny_gpt2_config(d: Path, n_positions: int) -> None:
    cfg = transformers.GPT2Config(vocab_size=500, n_embd=32, n_layer=1, n_head=2, n_positions=n_positions,
                                  bos_token_id=0, eos_token_id=0, architectures=["GPT2LMHeadModel"])
    cfg.to_json_file(str(d / "config.json"))


def test_local_config_sequence_fits_the_models_positions(tmp_path: Path) -> None:
    _tiny_gpt2_config(tmp_path, n_positions=64)
    w = registry.load("workload", f"hf:{tmp_path}")(size="full")
    (spec,) = w.input_specs()
    assert spec.shape == (64,) and spec.high == 500


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory: pytest.TempPathFactory, local_config: Path) -> dict[str, Any]:
    """Every zoo model at ``@tiny``, a local config.json and the built-in MLP in one run
    (``--size tiny``: the local model has only ``full``, so it falls back to it)."""
    out = tmp_path_factory.mktemp("zoo-run")
    args = ["run", "-w", "mlp", *(a for n in PUBLISHED for a in ("-w", f"hf:{n}@tiny")), "-w", f"hf:{local_config}",
            "--size", "tiny", *(a for m in MODES for a in ("--mode", m)), "--out", str(out), *FAST]
    proc = run_cli(args, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"proc": proc, "doc": _only_result(out)}


@pytest.mark.parametrize("name", list(PUBLISHED))
@pytest.mark.parametrize("mode", MODES)
def test_each_zoo_model_runs_tiny(zoo_run: dict[str, Any], name: str, mode: str) -> None:
    cell = _cells(zoo_run["doc"])[(f"hf:{name}", "fp32", mode)]
    assert cell["status"] == "ok", cell.get("error") or cell.get("reason")
    assert cell["spec"]["size"] == "tiny" and cell["spec"]["batch_size"] == 2
    m = cell["metrics"]
    assert m["params"] == m["params_analytic"] > 0
    assert m["flops_analytic"] is None
    assert m["flops_source"] == "FlopCounterMode" and m["flops"] == m["flops_counted"] > 0
    assert "no analytic FLOP formula" in cell["unavailable"]["flops_analytic"]
    assert "flops" not in cell["unavailable"]
    model = cell["model"]
    assert model["provider"] == "hf" and model["source"] == "dl-harness zoo" and model["source_sha256"] is None
    assert model["weights"].startswith("random initialisation")
    assert model["architecture"] == zoo.ZOO[name].tiny.model_class
    assert model["config"] == zoo.ZOO[name].tiny.hf_kwargs()
    assert model["transformers_version"] == transformers.__version__


def test_training_counts_more_flops_than_inference(zoo_run: dict[str, Any]) -> None:
    """The counter runs the workload's own training loss (forward + backward)."""
    cells = _cells(zoo_run["doc"])
    for name in PUBLISHED:
        inf = cells[(f"hf:{name}", "fp32", "inference")]["metrics"]["flops"]
        train = cells[(f"hf:{name}", "fp32", "training")]["metrics"]["flops"]
        assert 1.5 * inf < train < 3.5 * inf, (name, inf, train)


def test_builtin_workload_shares_the_run(zoo_run: dict[str, Any]) -> None:
    cells = _cells(zoo_run["doc"])
    for mode in MODES:
        mlp = cells[("mlp", "fp32", mode)]
        assert mlp["status"] == "ok" and mlp["spec"]["size"] == "tiny"
        assert "model" not in mlp  # built-ins record nothing there
        assert isinstance(mlp["metrics"]["flops_analytic"], int)


def test_local_config_json_runs_and_records_its_hash(zoo_run: dict[str, Any], local_config: Path) -> None:
    cells = _cells(zoo_run["doc"])
    sha = hashlib.sha256((local_config / "config.json").read_bytes()).hexdigest()
    for mode in MODES:
        cell = cells[(f"hf:{local_config}", "fp32", mode)]
        assert cell["status"] == "ok", cell.get("error") or cell.get("reason")
        assert cell["spec"]["size"] == "full"  # its only preset: the run's tiny falls back to it
        model = cell["model"]
        assert model["source"] == str((local_config / "config.json").resolve())
        assert model["source_sha256"] == sha
        assert model["architecture"] == "GPT2LMHeadModel" and model["kind"] == "causal_lm"
        m = cell["metrics"]
        with torch.device("meta"):
            expected = transformers.GPT2LMHeadModel(transformers.GPT2Config.from_json_file(
                str(local_config / "config.json")))
        assert m["params"] == m["params_analytic"] == sum(p.numel() for p in expected.parameters())


@pytest.fixture(scope="module")
def variant_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("zoo-variants")
    args = ["run", "-w", "hf:gpt2@tiny", "-v", "int8-dynamic", "-v", "bf16", "-v", "prune-structured",
            "-v", "distill", "--mode", "inference", "--out", str(out), *FAST]
    proc = run_cli(args, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"proc": proc, "doc": _only_result(out)}


@pytest.mark.parametrize("variant", ["int8-dynamic", "bf16"])
def test_variants_run_on_a_zoo_model(variant_run: dict[str, Any], variant: str) -> None:
    cell = _cells(variant_run["doc"])[("hf:gpt2", variant, "inference")]
    assert cell["status"] == "ok", cell.get("error") or cell.get("reason")
    assert cell["model"]["architecture"] == "GPT2LMHeadModel"


@pytest.mark.parametrize(("variant", "why"), [("prune-structured", "no structured pruning"),
                                              ("distill", "built-in mlp, cnn and transformer only")])
def test_variants_needing_a_builtin_model_skip_with_the_reason(variant_run: dict[str, Any], variant: str,
                                                                why: str) -> None:
    cell = _cells(variant_run["doc"])[("hf:gpt2", variant, "inference")]
    assert cell["status"] == "skipped"
    assert why in cell["reason"] and "hf:gpt2" in cell["reason"]
