"""The ONNX Runtime backend (``-b onnxruntime``, backends/ort_backend.py): the built-in
workloads' torch models exported to ONNX and run by an InferenceSession, through the
real CLI (one sweep shared by most tests, tiny presets)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import only_result, run_cli

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

FAST = ["--size", "tiny", "--min-time", "0.05", "--threads", "1", "--no-progress"]


def _cells(doc: dict[str, Any]) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    return {(c["spec"]["workload"], c["spec"]["backend"], c["spec"]["variant"], c["spec"]["mode"]): c
            for c in doc["cells"]}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """mlp/cnn/transformer inference on onnxruntime, then the mlp again (its export now
    cached) with training, int8-dynamic and bf16 cells. (Torch cells are not run here:
    their quality track trains reference models, minutes on a fresh cache; the torch
    cell's parameter count is computed in-process with the torch backend's own code.)"""
    out = tmp_path_factory.mktemp("ort")
    proc = run_cli(["run", "-w", "mlp", "-w", "cnn", "-w", "transformer", "-b", "onnxruntime",
                    "--mode", "inference", "--out", str(out / "first"), *FAST])
    again = run_cli(["run", "-w", "mlp", "-b", "onnxruntime", "--mode", "inference", "--mode", "training",
                     "-v", "fp32", "-v", "int8-dynamic", "-v", "bf16", "--out", str(out / "second"), *FAST])
    return {"proc": proc, "doc": only_result(out / "first"), "again": again,
            "again_doc": only_result(out / "second")}


@pytest.mark.parametrize("workload", ["mlp", "cnn", "transformer"])
def test_inference_ok_with_samples_and_torch_param_count(sweep: dict[str, Any], workload: str) -> None:
    from harness.backends.torch_backend import TorchBackend
    from harness.core import registry

    ort = _cells(sweep["doc"])[(workload, "onnxruntime", "fp32", "inference")]
    w = registry.load("workload", workload)("tiny")
    torch_params = TorchBackend().model_stats(w.build("torch"))["params"]  # what the torch cell records
    assert ort["status"] == "ok", ort.get("error") or ort.get("reason")
    assert len(ort["samples_ms"]) >= 3 and all(s > 0 for s in ort["samples_ms"])
    m = ort["metrics"]
    assert m["params"] == torch_params
    # the exported graph's own count, each weight once; model size is the .onnx file
    assert 0 < m["params_exported"] <= m["params"]
    assert m["model_size_bytes"] > 4 * m["params_exported"]
    assert m["model_size_format"] == "onnx"
    # FLOPs: counted on the torch model the graph came from (the built-ins' formula agrees)
    assert m["flops"] == m["flops_counted"] == w.analytic_flops(ort["spec"]["batch_size"])
    assert "exported from" in m["flops_source"]
    rt = ort["runtime"]
    assert rt["execution_providers"] == ["CPUExecutionProvider"]
    assert rt["onnx_opset"] == 17
    assert rt["intra_op_threads"] == 1 and rt["inter_op_threads"] == 1
    assert rt["graph_optimization_level"] == "ORT_ENABLE_ALL"
    assert rt["onnxruntime"]
    assert m["onnx_export_cache"] in ("miss", "hit")


def test_mlp_exported_graph_has_exactly_the_torch_parameters(sweep: dict[str, Any]) -> None:
    m = _cells(sweep["doc"])[("mlp", "onnxruntime", "fp32", "inference")]["metrics"]
    assert m["params_exported"] == m["params"] and m["params_exported_duplicates"] == 0


def test_training_is_skipped_with_the_reason(sweep: dict[str, Any]) -> None:
    cell = _cells(sweep["again_doc"])[("mlp", "onnxruntime", "fp32", "training")]
    assert cell["status"] == "skipped"
    assert "inference only" in cell["reason"]


def test_int8_dynamic_runs_the_quantized_graph_or_says_why(sweep: dict[str, Any]) -> None:
    cell = _cells(sweep["again_doc"])[("mlp", "onnxruntime", "int8-dynamic", "inference")]
    if cell["status"] == "skipped":
        assert "int8-dynamic" in cell["reason"]
        return
    assert cell["status"] == "ok", cell.get("error")
    m = cell["metrics"]
    assert m["model_size_format"] == "onnx (int8-dynamic)"
    assert m["model_size_bytes"] < m["onnx_fp32_size_bytes"] or m["params"] < 10_000  # tiny: scales dominate
    assert m["export_cache"] in ("miss", "hit")


def test_unsupported_variant_names_what_the_backend_runs(sweep: dict[str, Any]) -> None:
    cell = _cells(sweep["again_doc"])[("mlp", "onnxruntime", "bf16", "inference")]
    assert cell["status"] == "skipped"
    assert "bf16" in cell["reason"] and "onnxruntime" in cell["reason"]


def test_second_cell_hits_the_export_cache(sweep: dict[str, Any]) -> None:
    assert sweep["again"].returncode == 0, sweep["again"].stderr[-2000:]
    cell = _cells(sweep["again_doc"])[("mlp", "onnxruntime", "fp32", "inference")]
    assert cell["status"] == "ok"
    assert cell["metrics"]["onnx_export_cache"] == "hit"


def test_cuda_is_skipped_listing_the_providers(tmp_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA execution provider")
    proc = run_cli(["run", "-w", "mlp", "-b", "onnxruntime", "-d", "cuda", "--mode", "inference",
                    "--out", str(tmp_path), *FAST])
    cell = only_result(tmp_path)["cells"][0]
    assert cell["status"] == "skipped", proc.stderr[-2000:]
    assert "CUDAExecutionProvider" in cell["reason"]
    assert "CPUExecutionProvider" in cell["reason"]  # the providers that are available


def test_listed_as_a_backend() -> None:
    proc = run_cli(["list", "backends"])
    assert proc.returncode == 0
    assert "onnxruntime" in proc.stdout


def test_initializer_params_counts_a_tied_weight_once() -> None:
    """A tied weight stored twice (once transposed, as constant folding does for a tied
    lm_head) counts once; constant tensors (zero biases) are never merged."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from harness.backends.ort_backend import initializer_params

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((6, 4)).astype(np.float32)
    inits = [numpy_helper.from_array(emb, "wte"), numpy_helper.from_array(emb.T.copy(), "onnx::MatMul_1"),
             numpy_helper.from_array(np.zeros(4, np.float32), "b1"),
             numpy_helper.from_array(np.zeros(4, np.float32), "b2")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "onnx::MatMul_1"], ["y"])], "g", [x], [y], inits)
    counts = initializer_params(helper.make_model(graph).SerializeToString())
    assert counts == {"params": 24 + 4 + 4, "duplicates": 24, "total": 24 + 24 + 4 + 4}


def test_no_onnxruntime_import_at_module_level() -> None:
    """Importing the plugin (as the zygote does) must not import onnxruntime."""
    import subprocess
    import sys

    code = ("import sys, harness.backends.ort_backend as m; "
            "print(json.dumps(['onnxruntime' in sys.modules, m.OrtBackend.framework_packages]))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True,
                         timeout=120, check=True)
    loaded, pkgs = json.loads(out.stdout)
    assert loaded is False and "onnxruntime" not in pkgs
