"""A user's own ONNX file: ``-w onnx:path/model.onnx`` run as is by ``-b onnxruntime``
(workloads/onnx_model.py, backends/ort_backend.py; docs/onnxruntime.md).

Tiny torch models are exported to .onnx in a temporary directory (TorchScript exporter,
opset 17): an MLP and a token model (int64 ids, Embedding) with a dynamic batch axis, the
MLP with a static batch of 3, one with a dynamic sequence axis, and a corrupt file. One
harness run through the real CLI (a suite of 9 cells, :func:`_suite`):

* the dynamic-batch graphs are ok at batch 2 with the torch model's parameter count and
  the file's SHA-256 recorded; FLOPs are unavailable with the reason; int8-dynamic
  quantizes the user's graph (or says why not);
* the static-batch graph runs at its own batch (3, also the default batch size) and is
  skipped at batch 2 naming its batch; the dynamic sequence axis is skipped naming the
  input and dimension; the corrupt file is a failed cell with the reason while the rest
  runs; torch and training cells are skipped with the reason.

A file that does not exist is exit 2 with one line, and the parent reads the batch
dimension without importing onnx.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import cli
from tests.conftest import ROOT, only_result, run_cli

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

class MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(16, 32)
        self.b = torch.nn.Linear(32, 4)

    def forward(self, x: Any) -> Any:
        return self.b(torch.relu(self.a(x)))


class TokenModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(50, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, ids: Any) -> Any:
        return self.head(self.emb(ids).mean(1))


def _export(model: Any, example: Any, path: Path, name: str, dynamic: dict[int, str] | None) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), str(path), input_names=[name], output_names=["out"],
                          dynamic_axes={name: dynamic} if dynamic else None, opset_version=17, dynamo=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("onnx_files")
    torch.manual_seed(0)
    mlp, tok = MLP(), TokenModel()
    ids = torch.zeros(2, 6, dtype=torch.long)
    _export(mlp, torch.randn(2, 16), d / "mlp.onnx", "x", {0: "batch"})
    _export(tok, ids, d / "tok.onnx", "ids", {0: "batch"})
    _export(mlp, torch.randn(3, 16), d / "static3.onnx", "x", None)
    _export(tok, ids, d / "dynseq.onnx", "ids", {0: "batch", 1: "seq"})
    (d / "corrupt.onnx").write_bytes(b"this is not an onnx model\x00\xff\x12")
    return {"dir": d, "params": {"mlp": sum(p.numel() for p in mlp.parameters()),
                                 "tok": sum(p.numel() for p in tok.parameters())}}


def _cells(doc: dict[str, Any]) -> dict[tuple[str, ...], dict[str, Any]]:
    """(file stem, backend, variant) -> the inference cell at batch 2; the other cells
    under (stem, backend, variant, mode, batch size)."""
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    for c in doc["cells"]:
        s = c["spec"]
        key = (Path(s["workload"].split(":", 1)[1]).stem, s["backend"], s["variant"])
        if s["mode"] == "inference" and s["batch_size"] == 2:
            out[key] = c
        out[(*key, s["mode"], str(s["batch_size"]))] = c
    return out


def _suite(d: Path) -> Path:
    """One run, the cells the tests need: every file on onnxruntime fp32 at batch 2 (the
    static graph at 2 and at its own 3), the MLP also as int8-dynamic, on torch and in
    training. (JSON is YAML.)"""
    w = {n: f"onnx:{d / n}.onnx" for n in ("mlp", "tok", "static3", "dynseq", "corrupt")}
    keep = {(w["mlp"], "onnxruntime", "int8-dynamic", "inference"), (w["mlp"], "torch", "fp32", "inference"),
            (w["mlp"], "onnxruntime", "fp32", "training")}
    exclude = [{"workload": wl, "backend": b, "variant": v, "mode": m}
               for wl in w.values() for b in ("onnxruntime", "torch") for v in ("fp32", "int8-dynamic")
               for m in ("inference", "training")
               if (wl, b, v, m) not in keep and not (b, v, m) == ("onnxruntime", "fp32", "inference")]
    suite = {"name": "onnx-files", "settings": {"min_time_s": 0.05, "threads": 1},
             "matrix": {"workload": list(w.values()), "backend": ["onnxruntime", "torch"],
                        "variant": ["fp32", "int8-dynamic"], "mode": ["inference", "training"],
                        "batch_size": {wl: [2, 3] if n == "static3" else [2] for n, wl in w.items()}},
             "exclude": exclude}
    path = d / "suite.yaml"
    path.write_text(json.dumps(suite))
    return path


@pytest.fixture(scope="module")
def runs(files: dict[str, Any]) -> dict[str, Any]:
    d = files["dir"]
    proc = run_cli(["run", "--suite", str(_suite(d)), "--out", str(d / "out"), "--no-progress"])
    return {"proc": proc, "doc": only_result(d / "out")}


def test_one_run_has_exactly_the_planned_cells(runs: dict[str, Any]) -> None:
    assert len(runs["doc"]["cells"]) == 9, runs["proc"].stderr[-2000:]


@pytest.mark.parametrize("name", ["mlp", "tok"])
def test_dynamic_batch_graph_runs_with_the_torch_parameter_count(runs: dict[str, Any], files: dict[str, Any],
                                                                 name: str) -> None:
    cell = _cells(runs["doc"])[(name, "onnxruntime", "fp32")]
    assert cell["status"] == "ok", cell.get("error") or cell.get("reason")
    assert cell["spec"]["batch_size"] == 2
    assert len(cell["samples_ms"]) >= 3 and all(s > 0 for s in cell["samples_ms"])
    m = cell["metrics"]
    assert m["params"] == m["params_analytic"] == files["params"][name]
    assert m["model_size_format"] == "onnx"
    path = files["dir"] / f"{name}.onnx"
    assert m["model_size_bytes"] == path.stat().st_size  # the file runs as is, no export
    model = cell["model"]
    assert model["provider"] == "onnx" and model["source"] == str(path.resolve())
    assert model["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model["opset"] == 17 and model["producer"].startswith("pytorch")
    assert cell["runtime"]["onnx_opset"] == 17
    assert cell["runtime"]["exported_from"].startswith("none")
    assert "onnx_export_cache" not in m


def test_integer_inputs_are_small_and_say_why(runs: dict[str, Any]) -> None:
    inputs = _cells(runs["doc"])[("tok", "onnxruntime", "fp32")]["model"]["inputs"]
    assert [(i["name"], i["dtype"], i["shape"]) for i in inputs] == [("ids", "int64", ["batch", 6])]
    assert "[0, 2)" in inputs[0]["values"] and "valid" in inputs[0]["values"]


def test_flops_are_unavailable_with_the_reason(runs: dict[str, Any]) -> None:
    cell = _cells(runs["doc"])[("mlp", "onnxruntime", "fp32")]
    assert cell["metrics"]["flops"] is None
    assert "no ONNX FLOP counter" in cell["unavailable"]["flops"]


def test_int8_dynamic_quantizes_the_users_graph_or_says_why(runs: dict[str, Any], files: dict[str, Any]) -> None:
    cell = _cells(runs["doc"])[("mlp", "onnxruntime", "int8-dynamic")]
    if cell["status"] == "skipped":
        assert "int8-dynamic" in cell["reason"]
        return
    assert cell["status"] == "ok", cell.get("error")
    m = cell["metrics"]
    assert m["model_size_format"] == "onnx (int8-dynamic)"
    assert m["params"] == files["params"]["mlp"]  # the file's count; the int8 graph's is params_exported
    assert m["onnx_fp32_size_bytes"] == (files["dir"] / "mlp.onnx").stat().st_size


def test_static_batch_other_than_the_files_is_skipped_naming_it(runs: dict[str, Any]) -> None:
    cell = _cells(runs["doc"])[("static3", "onnxruntime", "fp32")]
    assert cell["status"] == "skipped", cell
    assert "static batch dimension of 3" in cell["reason"] and "--batch-size 3" in cell["reason"]


def test_static_batch_graph_runs_at_its_own_batch_which_is_the_default(runs: dict[str, Any]) -> None:
    cell = _cells(runs["doc"])[("static3", "onnxruntime", "fp32", "inference", "3")]
    assert cell["status"] == "ok", cell.get("error") or cell.get("reason")
    assert cell["model"]["batch_default"] == 3  # what a run without --batch-size uses


def test_another_dynamic_dimension_is_skipped_naming_input_and_dimension(runs: dict[str, Any]) -> None:
    cell = _cells(runs["doc"])[("dynseq", "onnxruntime", "fp32")]
    assert cell["status"] == "skipped"
    assert "input 'ids'" in cell["reason"] and "'seq' dimension 1" in cell["reason"]


def test_corrupt_file_is_a_failed_cell_and_the_sweep_goes_on(runs: dict[str, Any]) -> None:
    cell = _cells(runs["doc"])[("corrupt", "onnxruntime", "fp32")]
    assert cell["status"] == "failed"
    assert "is not a valid ONNX model" in cell["error"]["message"]
    assert runs["proc"].returncode == 1  # failed cells
    others = _cells(runs["doc"])
    assert others[("mlp", "onnxruntime", "fp32")]["status"] == others[("tok", "onnxruntime", "fp32")]["status"] == "ok"


def test_torch_backend_is_skipped_with_the_reason(runs: dict[str, Any]) -> None:
    cell = _cells(runs["doc"])[("mlp", "torch", "fp32")]
    assert cell["status"] == "skipped"
    assert "an ONNX file runs on -b onnxruntime" in cell["reason"]


def test_training_is_not_a_mode_of_an_onnx_file(runs: dict[str, Any]) -> None:
    cell = _cells(runs["doc"])[("mlp", "onnxruntime", "fp32", "training", "2")]
    assert cell["status"] == "skipped" and "supports: inference" in cell["reason"]


def test_missing_file_is_exit_2_with_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = cli.main(["run", "-w", f"onnx:{tmp_path}/nope.onnx", "-b", "onnxruntime", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "ONNX model file not found" in lines[0] and "nope.onnx" in lines[0]


def test_the_parent_reads_the_batch_without_importing_onnx(files: dict[str, Any]) -> None:
    code = ("import json, sys\n"
            "from harness.core import registry\n"
            f"w = registry.load('workload', 'onnx:{files['dir'] / 'static3.onnx'}')\n"
            f"v = registry.load('workload', 'onnx:{files['dir'] / 'tok.onnx'}')\n"
            "print(json.dumps([w.default_batch_size, v.default_batch_size,"
            " [m for m in ('onnx', 'onnxruntime', 'torch') if m in sys.modules]]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=60)
    assert out.returncode == 0, out.stderr
    static, dynamic, imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert static == {"default": 3} and dynamic == {"default": 1}
    assert imported == []


def test_scan_agrees_with_onnx_on_the_inputs(files: dict[str, Any]) -> None:
    """The parent's protobuf scan reads the same inputs as ``onnx`` does, also when the
    weights are listed as graph inputs (``keep_initializers_as_inputs``)."""
    from harness.workloads.onnx_model import OnnxProvider, scan_input_dims

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(MLP().eval(), (torch.randn(2, 16),), str(files["dir"] / "kept.onnx"), input_names=["x"],
                          dynamic_axes={"x": {0: "n"}}, opset_version=17, dynamo=False,
                          keep_initializers_as_inputs=True)
    assert scan_input_dims(str(files["dir"] / "kept.onnx")) == [("x", ["n", 16])]
    for name in ("mlp", "tok", "static3", "dynseq", "kept"):
        path = str(files["dir"] / f"{name}.onnx")
        w = OnnxProvider().workload_class(path)()
        header = w.header()
        assert scan_input_dims(path) == [(g.name, list(g.dims)) for g in header["inputs"]]
    assert scan_input_dims(str(files["dir"] / "corrupt.onnx")) in (None, [])


def test_int8_static_calibrates_a_static_batch_graph_at_its_batch(files: dict[str, Any]) -> None:
    """In-process: the backend quantizes the user's graph with calibration batches of the
    cell's batch size (the quantizer's own default of 8 would not fit a batch-3 graph)."""
    from harness.backends.ort_backend import OrtBackend
    from harness.variants.quantize import Int8StaticVariant
    from harness.workloads.onnx_model import OnnxProvider

    w = OnnxProvider().workload_class(str(files["dir"] / "static3.onnx"))()
    backend = OrtBackend(OrtBackend.Config(threads=1))
    backend.setup()
    step = backend.prepare(w, Int8StaticVariant(), "cpu", "inference", 3)
    try:
        step.run(2)
        stats = backend.model_stats(step.model)
        assert stats["model_size_format"] == "onnx (int8-static)"
        assert stats["params"] == step.params == w.analytic_params() == files["params"]["mlp"]
        with pytest.raises(NotImplementedError, match="no ONNX FLOP counter"):
            backend.count_flops(step, Int8StaticVariant(), "cpu")
    finally:
        step.close()


def test_an_input_type_numpy_cannot_make_is_skipped_naming_it(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from harness.api import SkipCell
    from harness.workloads.onnx_model import OnnxProvider

    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    path = tmp_path / "bf16.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    w = OnnxProvider().workload_class(str(path))()
    with pytest.raises(SkipCell, match="input 'x' has element type BFLOAT16"):
        w.make_inputs(2)
