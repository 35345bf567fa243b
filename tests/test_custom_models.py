"""Your own model: ``-w custom:path/file.py:factory`` / ``-w custom:package.module:factory``
(docs/custom-models.md).

* The documented example (docs/examples/custom_rnn.py, a GRU classifier with dict
  inputs and a loss_fn) runs in inference and training, with FLOPs from the counter.
* The training loss is, in this order: the factory's third element ``loss_fn(outputs)``,
  the model's own ``.loss`` / ``["loss"]`` (Hugging Face style), the mean of the first
  tensor of the output -- each shown by a marker the loss writes during backward.
* Broken factories (import error, wrong return type, not a model, a shape error on the
  first step) are failed cells carrying the user's traceback, and the other cells of the
  same run are ok; a file that does not exist is exit 2 before anything runs.
* The cell records the factory and the SHA-256 of its file; editing the file changes it.

The fixture factories live in tests/fixtures/custom_models/ and are copied to a temporary
directory (their losses write marker files next to themselves). Two harness runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from harness import cli
from harness.core import registry
from tests.conftest import ROOT, run_cli

torch = pytest.importorskip("torch")

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "custom_models"
EXAMPLE = ROOT / "docs" / "examples" / "custom_rnn.py"
EXAMPLE_NAME = "custom:docs/examples/custom_rnn.py:make_model"  # as docs/custom-models.md writes it
PKG_NAME = "custom:custom_models_pkg.nets:make"
MODES = ("inference", "training")
FAST = ["--min-time", "0.05", "--no-progress"]
GOOD = ("lstm", "with_loss_fn", "own_loss_attr", "own_loss_dict")
BROKEN = ("wrong_return", "not_a_model", "shape_error")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("custom") / "custom_models"
    shutil.copytree(FIXTURES, d, ignore=shutil.ignore_patterns("__pycache__", "*.called"))
    return d


def _name(models_dir: Path, factory: str, file: str = "models.py") -> str:
    return f"custom:{models_dir / file}:{factory}"


def _env(models_dir: Path) -> dict[str, str]:
    """The package form needs its package importable (the workers inherit PYTHONPATH)."""
    old = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(models_dir), old) if p)}


def _only_result(out: Path) -> dict[str, Any]:
    files = sorted(out.glob("*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def _cells(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["spec"]["workload"], c["spec"]["mode"]): c for c in doc["cells"]}


@pytest.fixture(scope="module")
def good_run(models_dir: Path) -> dict[str, Any]:
    """The documented example, the fixture factories that work, the package form and one
    shape error, in inference and training; relative file path from the repository root,
    as the docs write it."""
    out = models_dir.parent / "good-out"
    ws = [EXAMPLE_NAME, *(_name(models_dir, f) for f in GOOD), _name(models_dir, "shape_error"), PKG_NAME]
    args = ["run", *(a for w in ws for a in ("-w", w)), *(a for m in MODES for a in ("--mode", m)),
            "--batch-size", "4", "--out", str(out), *FAST]
    proc = run_cli(args, env=_env(models_dir), timeout=600)
    return {"proc": proc, "doc": _only_result(out), "markers": {p.name for p in models_dir.glob("*.called")}}


@pytest.fixture(scope="module")
def broken_run(models_dir: Path) -> dict[str, Any]:
    """Factories that cannot make a model, beside a built-in workload that can."""
    out = models_dir.parent / "broken-out"
    ws = [*(_name(models_dir, f) for f in ("wrong_return", "not_a_model")), _name(models_dir, "make", "broken_import.py"),
          "mlp"]
    args = ["run", *(a for w in ws for a in ("-w", w)), "--size", "tiny", "--mode", "inference", "--out", str(out),
            *FAST]
    proc = run_cli(args, env=_env(models_dir), timeout=600)
    return {"proc": proc, "doc": _only_result(out)}


# --------------------------------------------------------------------------- the example


@pytest.mark.parametrize("mode", MODES)
def test_documented_example_runs(good_run: dict[str, Any], mode: str) -> None:
    cell = _cells(good_run["doc"])[(EXAMPLE_NAME, mode)]
    assert cell["status"] == "ok", cell.get("error")
    assert cell["spec"]["size"] == "default" and cell["spec"]["batch_size"] == 4
    m = cell["metrics"]
    from harness.workloads.custom import load_factory

    model, _, _ = load_factory(str(EXAMPLE), "make_model", True)(4)
    assert m["params"] == m["params_analytic"] == sum(p.numel() for p in model.parameters()) == 76_036
    # the GRU is counted (3 gates x (input + hidden) x hidden per step and layer) + the head
    fwd = 2 * 4 * (24 * 3 * ((32 + 64) * 64 + (64 + 64) * 64) + 64 * 4)
    assert m["flops_analytic"] is None and m["flops_source"] == "FlopCounterMode"
    if mode == "inference":
        assert m["flops"] == fwd == 8_259_584
    else:  # forward + backward of the loss_fn's cross-entropy
        assert 2 * fwd < m["flops"] < 3.2 * fwd
    assert "no analytic FLOP formula" in cell["unavailable"]["flops_analytic"]


def test_documented_example_is_the_one_in_the_docs() -> None:
    doc = (ROOT / "docs" / "custom-models.md").read_text()
    assert EXAMPLE_NAME in doc
    assert EXAMPLE.read_text().strip() in doc  # the page shows the file the test runs, whole


# --------------------------------------------------------------------------- losses and inputs


@pytest.mark.parametrize("factory", GOOD)
@pytest.mark.parametrize("mode", MODES)
def test_fixture_factories_run(good_run: dict[str, Any], models_dir: Path, factory: str, mode: str) -> None:
    cell = _cells(good_run["doc"])[(_name(models_dir, factory), mode)]
    assert cell["status"] == "ok", cell.get("error")
    assert cell["metrics"]["params"] == cell["metrics"]["params_analytic"] > 0


def test_the_factorys_loss_fn_is_the_training_loss(good_run: dict[str, Any]) -> None:
    assert "with_loss_fn.called" in good_run["markers"]


@pytest.mark.parametrize("style", ["attr", "dict"])
def test_a_model_that_returns_its_own_loss_is_trained_on_it(good_run: dict[str, Any], style: str) -> None:
    """``outputs.loss`` (a transformers ModelOutput given labels) / ``outputs["loss"]``: the
    backward pass goes through that tensor (its hook wrote the marker)."""
    assert f"own_loss_{style}.called" in good_run["markers"]


def test_tuple_outputs_train_on_the_mean_of_the_first_tensor(good_run: dict[str, Any], models_dir: Path) -> None:
    """A bare nn.LSTM returns ``(out, (h, c))``; LSTM FLOPs: counted where torch can."""
    cell = _cells(good_run["doc"])[(_name(models_dir, "lstm"), "training")]
    assert cell["status"] == "ok"
    # the LSTM is counted with oneDNN off while counting (its fused op is invisible to the counter)
    assert cell["metrics"]["flops"] is not None and cell["metrics"]["flops"] > 0, cell["unavailable"].get("flops")
    assert cell["metrics"]["flops_source"] == "FlopCounterMode"


def test_package_form_runs_and_records_the_module_file(good_run: dict[str, Any], models_dir: Path) -> None:
    for mode in MODES:
        cell = _cells(good_run["doc"])[(PKG_NAME, mode)]
        assert cell["status"] == "ok", cell.get("error")
        model = cell["model"]
        assert model["factory"] == "custom_models_pkg.nets:make"
        nets = models_dir / "custom_models_pkg" / "nets.py"
        assert model["source"] == str(nets)
        assert model["source_sha256"] == hashlib.sha256(nets.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- what is recorded


def test_record_names_the_factory_and_hashes_its_file(good_run: dict[str, Any], models_dir: Path) -> None:
    cells = _cells(good_run["doc"])
    ex = cells[(EXAMPLE_NAME, "training")]["model"]
    assert ex["provider"] == "custom"
    assert ex["factory"] == f"{EXAMPLE}:make_model" and ex["source"] == str(EXAMPLE)
    assert ex["source_sha256"] == hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
    sha = hashlib.sha256((models_dir / "models.py").read_bytes()).hexdigest()
    for f in GOOD:
        assert cells[(_name(models_dir, f), "inference")]["model"]["source_sha256"] == sha


def test_editing_the_file_changes_the_recorded_hash(tmp_path: Path) -> None:
    """What a cell records as ``model`` (Workload.model_info) follows the file's bytes."""
    f = tmp_path / "net.py"
    f.write_text("import torch\n\ndef make(b):\n    return torch.nn.Linear(3, 2), torch.randn(b, 3)\n")
    name = f"custom:{f}:make"
    before = registry.load("workload", name)().model_info("torch")
    assert before["factory"] == f"{f}:make"
    assert before["source_sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
    f.write_text(f.read_text().replace("Linear(3, 2)", "Linear(3, 4)"))
    after = registry.load("workload", name)().model_info("torch")
    assert after["source_sha256"] == hashlib.sha256(f.read_bytes()).hexdigest() != before["source_sha256"]


# --------------------------------------------------------------------------- failures


def _assert_user_traceback(cell: dict[str, Any], file: Path, text: str) -> None:
    assert cell["status"] == "failed"
    tb = cell["error"]["traceback"]
    assert f'File "{file}"' in tb, tb[-2000:]
    assert text in tb


@pytest.mark.parametrize("mode", MODES)
def test_a_shape_error_on_the_first_step_is_a_failed_cell_with_the_users_traceback(
        good_run: dict[str, Any], models_dir: Path, mode: str) -> None:
    cell = _cells(good_run["doc"])[(_name(models_dir, "shape_error"), mode)]
    assert cell["error"]["type"] == "RuntimeError" and "cannot be multiplied" in cell["error"]["message"]
    _assert_user_traceback(cell, models_dir / "models.py", "SHAPE-ERROR-LINE")


def test_the_sweep_goes_on_past_a_failed_cell(good_run: dict[str, Any]) -> None:
    proc, doc = good_run["proc"], good_run["doc"]
    assert proc.returncode == 1  # cells failed (README: exit codes)
    statuses = [c["status"] for c in doc["cells"]]
    assert statuses.count("failed") == 2 and statuses.count("ok") == len(statuses) - 2
    assert "Traceback" not in proc.stderr  # the parent did not crash
    assert "cannot be multiplied" in proc.stdout + proc.stderr  # the failure is on the console


def test_broken_factories_are_failed_cells_and_the_rest_runs(broken_run: dict[str, Any], models_dir: Path) -> None:
    cells = _cells(broken_run["doc"])
    assert broken_run["proc"].returncode == 1
    assert cells[("mlp", "inference")]["status"] == "ok"

    imp = cells[(_name(models_dir, "make", "broken_import.py"), "inference")]
    assert imp["error"]["type"] == "ModuleNotFoundError"
    _assert_user_traceback(imp, models_dir / "broken_import.py", "import dl_harness_no_such_module_for_tests")

    wrong = cells[(_name(models_dir, "wrong_return"), "inference")]
    assert wrong["status"] == "failed" and wrong["error"]["type"] == "TypeError"
    assert "must return (model, inputs) or (model, inputs, loss_fn), got Linear" in wrong["error"]["message"]

    notm = cells[(_name(models_dir, "not_a_model"), "inference")]
    assert notm["status"] == "failed" and notm["error"]["type"] == "TypeError"
    assert "must be a torch.nn.Module or a keras.Model" in notm["error"]["message"]
    out = broken_run["proc"].stdout + broken_run["proc"].stderr
    assert "dl_harness_no_such_module_for_tests" in out and "got Linear" in out


def _usage_error(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    code = cli.main(args)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_file_that_does_not_exist_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = _usage_error(capsys, ["run", "-w", f"custom:{tmp_path}/nope.py:make", "--out", str(tmp_path)])
    assert "custom model file not found" in line and "nope.py" in line


@pytest.mark.parametrize("ref", ["custom:model.py", "custom:model.py:not-an-identifier", "custom:bad module!:make"])
def test_a_malformed_reference_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                ref: str) -> None:
    line = _usage_error(capsys, ["run", "-w", ref, "--out", str(tmp_path)])
    assert "custom:path/to/file.py:factory" in line


def test_other_batch_sizes_never_replace_the_cells_model_or_loss(tmp_path: Path) -> None:
    """The ONNX export of the int8 variants asks for batches of 8 in a cell of another
    batch size: the user's module is imported once, the factory is called for those
    inputs, and the cell keeps the model it built and the loss_fn of its own batch."""
    f = tmp_path / "counting.py"
    f.write_text(
        "from pathlib import Path\nimport torch\n"
        "LOG = Path(__file__).with_suffix('.log')\n"
        "with LOG.open('a') as fh:\n    fh.write('import\\n')\n\n"
        "def make(b):\n"
        "    with LOG.open('a') as fh:\n        fh.write(f'call {b}\\n')\n"
        "    labels = torch.zeros(b, dtype=torch.long)\n"
        "    return torch.nn.Linear(3, 2), torch.randn(b, 3), lambda out: torch.nn.functional.cross_entropy(out, labels)\n")
    w = registry.load("workload", f"custom:{f}:make")()
    arrays, _ = w.make_inputs(4)  # the cell's batch (the torch backend asks for it first)
    module = w.build("torch")
    others = [w.make_inputs(8, seed=1000 + i)[0] for i in range(2)]  # as onnx_export.example_batches
    assert [a[0].shape for a in others] == [(8, 3), (8, 3)]
    assert [s.shape for s in w.input_specs()] == [(3,)]
    out = module(torch.from_numpy(arrays[0]))
    loss = w.loss("torch", out, None, [torch.from_numpy(arrays[0])])  # the batch-4 loss_fn
    assert loss.shape == () and loss.requires_grad
    assert w.build("torch").model is module.model  # the same model object, not the batch-8 call's
    assert f.with_suffix(".log").read_text().split("\n")[:-1] == ["import", "call 4", "call 8"]
