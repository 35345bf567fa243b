"""bench/gpu_check.py: the one-shot GPU validation script.

On this machine (no GPU) the script must exit 0 saying so and leave
docs/gpu-validation.md alone; its pure parts (the verdict on a result cell, the check
rows, the plan of lanes, the Markdown) are tested on synthetic result documents with
CUDA cells; one real ``harness run`` lane on the CPU checks that the suite files it
writes and the field names it reads match the harness.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_check.py"


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod
    spec.loader.exec_module(mod)
    return mod


gc = _load()

no_gpu_here = pytest.mark.skipif(shutil.which("nvidia-smi") is not None,
                                 reason="a GPU (nvidia-smi) is present: the script would run the full check")


# --------------------------------------------------------------------------- synthetic cells


def cuda_cell(**over: Any) -> dict[str, Any]:
    """An ok torch CUDA cell whose numbers are consistent (every check passes)."""
    bs, steps, wall = 64, 500, 0.5  # 500 steps of 1 ms: 64,000 samples/s sustained
    cell = {
        "id": "mlp/torch/cuda:0/fp32/inference/bs64/small",
        "spec": {"workload": "mlp", "backend": "torch", "device": "cuda:0", "variant": "fp32",
                 "mode": "inference", "batch_size": bs, "size": "small"},
        "status": "ok", "reason": None, "error": None,
        "metrics": {
            "latency_ms": {"p50": 0.98, "p90": 1.1},
            "throughput_per_s": steps * bs / wall,
            "throughput_p50_per_s": bs * 1e3 / 0.98,
            "mfu": 0.12, "mfu_peak_dtype": "fp32",
            "params": 1_000_000,
            "peak_device_mem_bytes": 50_000_000,
            "energy": {"source": "nvml_energy_counter", "energy_j": 150.0, "avg_power_w": 300.0, "reason": None},
        },
        "unavailable": {},
        "timing": {"iters_per_sample": 1, "samples": steps, "loop_wall_s": wall, "timed_s": 0.49,
                   "clock": "cuda_event", "sampling": "per-step device events",
                   "contention": {"detected": False, "evidence": {}, "reasons": []}},
        "runtime": {"torch": "2.13.0+cu128", "precision": {
            "fp32_math": "ieee", "cuda_matmul": "ieee", "cudnn_conv": "ieee", "float32_matmul_precision": "highest"}},
        "samples_ms": [1.0] * 5,
    }
    for path, value in over.items():
        node = cell
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[k]
        if value is _DELETE:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    return cell


_DELETE = object()


def problems(summary: dict[str, Any], aspect: str | None = None) -> list[str]:
    return [p["message"] for p in summary["problems"] if aspect is None or p["aspect"] == aspect]


# --------------------------------------------------------------------------- the no-GPU path


@no_gpu_here
def test_no_gpu_exits_0_says_so_and_leaves_the_doc_alone():
    doc = ROOT / "docs" / "gpu-validation.md"
    before = doc.read_bytes() if doc.exists() else None
    proc = subprocess.run([sys.executable, str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no NVIDIA GPU found" in proc.stdout
    assert "left unchanged" in proc.stdout
    assert (doc.read_bytes() if doc.exists() else None) == before


@no_gpu_here
def test_no_gpu_with_out_writes_a_report_saying_it_did_not_run(tmp_path, capsys):
    out = tmp_path / "v.md"
    assert gc.main(["--out", str(out)]) == 0
    assert "no NVIDIA GPU found" in capsys.readouterr().out
    text = out.read_text()
    assert "did not run on GPU hardware" in text
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["gpu_found"] is False
    assert data["checks"] and {c["status"] for c in data["checks"]} == {"SKIP"}


def test_plan_lists_the_lanes_without_a_gpu(capsys):
    assert gc.main(["--plan", "--variants", "fp32,compile,int8-dynamic"]) == 0
    out = capsys.readouterr().out
    assert "torch-mlp-compile" in out and "tensorflow-transformer-inference" in out and "ddp-torch" in out


# --------------------------------------------------------------------------- one cell


def test_consistent_cuda_cell_passes():
    s = gc.check_cell(cuda_cell())
    assert s["status"] == "PASS", s["problems"]
    f = s["figures"]
    assert f["throughput_over_wall_ratio"] == pytest.approx(1.0)
    assert f["tf32"] is False and f["contended"] is False and f["mfu"] == 0.12


def test_throughput_off_by_more_than_1_percent_fails():
    c = cuda_cell()
    c["metrics"]["throughput_per_s"] *= 1.02
    s = gc.check_cell(c)
    assert s["status"] == "FAIL"
    assert any("1.0200x samples processed / loop wall time" in m for m in problems(s, "throughput"))
    c = cuda_cell()
    c["metrics"]["throughput_per_s"] *= 1.005  # within tolerance
    assert gc.check_cell(c)["status"] == "PASS"


def test_batch_over_p50_throughput_is_not_sustained_throughput():
    # the old definition (batch / p50) with steps that vary: sustained is much lower
    c = cuda_cell()
    c["metrics"]["throughput_per_s"] = 64 * 1e3 / 0.98
    c["timing"]["loop_wall_s"] = 2.0
    s = gc.check_cell(c)
    assert s["status"] == "FAIL" and problems(s, "throughput")


def test_data_parallel_cell_counts_the_global_batch():
    c = cuda_cell(spec__world_size=2)
    c["metrics"]["distributed"] = {"global_batch_size": 128, "comm_backend": "nccl"}
    c["metrics"]["throughput_per_s"] = 500 * 128 / 0.5
    c["metrics"]["throughput_p50_per_s"] = 128 * 1e3 / 0.98
    s = gc.check_cell(c)
    assert s["status"] == "PASS", s["problems"]
    assert s["figures"]["comm_backend"] == "nccl"


def test_mfu_above_1_fails():
    s = gc.check_cell(cuda_cell(metrics__mfu=1.2))
    assert s["status"] == "FAIL" and any("mfu 1.200 > 1" in m for m in problems(s, "mfu"))


def test_fp32_cell_with_tf32_on_fails_torch_and_tensorflow_records():
    for precision in (
        {"fp32_math": "ieee", "cuda_matmul": "tf32", "cudnn_conv": "ieee"},
        {"torch.backends.cuda.matmul.allow_tf32": False, "torch.backends.cudnn.allow_tf32": True},
        {"float32_matmul_precision": "high"},
        {"tensor_float_32_execution": True, "tensor_float_32_execution_after": True},
    ):
        s = gc.check_cell(cuda_cell(runtime__precision=precision))
        assert s["status"] == "FAIL", precision
        assert any("TF32 on in a 'fp32' cell" in m for m in problems(s, "precision")), precision


def test_tf32_variant_must_have_tf32_on():
    off = cuda_cell(spec__variant="tf32")
    s = gc.check_cell(off)
    assert s["status"] == "FAIL" and any("tf32 variant but TF32 off" in m for m in problems(s, "precision"))
    on = cuda_cell(spec__variant="tf32", runtime__precision={"fp32_math": "tf32", "cuda_matmul": "tf32",
                                                            "float32_matmul_precision": "high"})
    assert gc.check_cell(on)["status"] == "PASS"


def test_precision_warning_is_a_problem():
    s = gc.check_cell(cuda_cell(runtime__precision={"tensor_float_32_execution": False,
                                                   "warning": "TF32 execution was False ... but is True after it"}))
    assert any("runtime.precision warning" in m for m in problems(s, "precision"))


@pytest.mark.parametrize("path, missing", [
    ("runtime__precision", "field missing: runtime.precision"),
    ("timing__contention", "field missing: timing.contention"),
    ("metrics__throughput_p50_per_s", "field missing: metrics.throughput_p50_per_s"),
    ("metrics__throughput_per_s", "field missing: metrics.throughput_per_s"),
    ("timing__loop_wall_s", "field missing: timing.loop_wall_s"),
    ("timing__iters_per_sample", "field missing: timing.iters_per_sample"),
])
def test_missing_fields_fail_with_field_missing_not_a_crash(path, missing):
    s = gc.check_cell(cuda_cell(**{path: _DELETE}))
    assert s["status"] == "FAIL"
    assert missing in problems(s)


def test_no_tf32_setting_recorded_fails():
    s = gc.check_cell(cuda_cell(runtime__precision={"threads": 4}))
    assert any("records no TF32 setting" in m for m in problems(s, "precision"))


def test_block_averaged_samples_on_cuda_fail():
    s = gc.check_cell(cuda_cell(timing__iters_per_sample=4, timing__samples=125))
    assert any("iters_per_sample = 4 on a CUDA cell" in m for m in problems(s, "iters_per_sample"))


def test_skipped_and_failed_cells():
    s = gc.check_cell(cuda_cell(status="skipped", reason="variant 'int8-static' is not supported on cuda"))
    assert s["status"] == "SKIP" and "int8-static" in s["reason"]
    s = gc.check_cell(cuda_cell(status="failed", reason="RuntimeError: CUDA error",
                                error={"type": "RuntimeError", "stderr_tail": "boom"}))
    assert s["status"] == "FAIL" and s["error_tail"] == "boom" and problems(s, "status")


def test_tf32_state_reads_the_shapes_backends_write():
    torch_rec = {"fp32_math": "ieee", "cuda_matmul": "ieee", "cudnn_conv": "ieee", "cudnn_rnn": "ieee",
                 "mkldnn_matmul": "ieee", "float32_matmul_precision": "highest"}
    assert gc.tf32_state(torch_rec)[0] is False
    assert gc.tf32_state(dict(torch_rec, cudnn_conv="tf32"))[0] is True
    assert gc.tf32_state({"tensor_float_32_execution": False})[0] is False
    assert gc.tf32_state({"threads": 2, "note": "TF32 is on elsewhere"})[0] is None
    assert gc.tf32_state(None)[0] is None


def test_summarise_result_keeps_cuda_cells_and_the_run_tag():
    cpu = cuda_cell(spec__device="cpu")
    doc = {"run_id": "r1", "tag": "gpu-check/torch-mlp-inference", "cells": [cuda_cell(), cpu, "garbage"]}
    out = gc.summarise_result(doc)
    assert [s["device"] for s in out] == ["cuda:0"]
    assert out[0]["run_tag"] == "gpu-check/torch-mlp-inference" and out[0]["status"] == "PASS"


# --------------------------------------------------------------------------- check rows


def test_cells_check_fails_on_any_problem_and_when_nothing_ran():
    good = gc.check_cell(cuda_cell())
    bad = gc.check_cell(cuda_cell(metrics__mfu=1.5))
    skipped = gc.check_cell(cuda_cell(status="skipped", reason="no"))
    assert gc.cells_check("a", "a", [good, skipped])["status"] == "PASS"
    r = gc.cells_check("a", "a", [good, bad])
    assert r["status"] == "FAIL" and "mfu 1.500" in r["notes"]
    assert gc.cells_check("a", "a", [skipped])["status"] == "FAIL"
    assert gc.cells_check("b", "b", [], skip_reason="TensorFlow sees no GPU")["status"] == "SKIP"
    r = gc.cells_check("a", "a", [good], incomplete=["lane torch-cnn-training: stopped at the time budget"])
    assert r["status"] == "FAIL" and "time budget" in r["notes"]
    # contention is row g's business, not row a's
    nocont = gc.check_cell(cuda_cell(timing__contention=_DELETE))
    assert gc.cells_check("a", "a", [nocont])["status"] == "PASS"
    assert gc.contention_check([nocont])["status"] == "FAIL"
    assert gc.contention_check([good])["status"] == "PASS"


def test_energy_probe_agreement():
    ok = {"counter_j": 1000.0, "power_sampling_j": 1080.0, "window_s": 7.5}
    assert gc.energy_probe_check(ok)["status"] == "PASS"
    assert gc.energy_probe_check(dict(ok, power_sampling_j=1150.0))["status"] == "FAIL"
    assert gc.energy_probe_check({"error": "NVMLError_NotSupported"})["status"] == "FAIL"
    assert gc.energy_probe_check({"counter_j": None, "power_sampling_j": 3.0})["status"] == "FAIL"


def test_energy_cells_need_nvml_and_joules():
    good = gc.check_cell(cuda_cell())
    assert gc.energy_cells_check([good], good)["status"] == "PASS"
    bad = gc.check_cell(cuda_cell(metrics__energy={"source": "unavailable", "energy_j": None, "reason": "no NVML"}))
    assert gc.energy_cells_check([good, bad], None)["status"] == "FAIL"


def test_memory_check_against_a_known_tensor():
    gib = 1 << 30
    base = {"path": "harness.backends.torch_backend.TorchStep.device_peak_memory", "baseline_bytes": 512}
    assert gc.memory_check(dict(base, peak_bytes=gib + 512))["status"] == "PASS"
    assert gc.memory_check(dict(base, peak_bytes=gib // 2))["status"] == "FAIL"  # missed the allocation
    assert gc.memory_check(dict(base, peak_bytes=gib + (100 << 20)))["status"] == "FAIL"  # counted too much
    fallback = dict(base, path="torch.cuda.max_memory_allocated (TorchStep could not be built: ...)", peak_bytes=gib)
    assert gc.memory_check(fallback)["status"] == "FAIL"
    assert gc.memory_check({"error": "no CUDA"})["status"] == "FAIL"
    assert gc.memory_cells_check([gc.check_cell(cuda_cell(metrics__peak_device_mem_bytes=None))])["status"] == "FAIL"
    assert gc.memory_cells_check([gc.check_cell(cuda_cell())])["status"] == "PASS"


def _ddp(comm: str) -> dict[str, Any]:
    c = cuda_cell(spec__world_size=1, spec__mode="training")
    c["metrics"]["distributed"] = {"global_batch_size": 64, "comm_backend": comm}
    return gc.check_cell(c)


def test_ddp_needs_nccl_at_the_gpu_count():
    assert gc.ddp_check("e1", "e", [_ddp("nccl")], 1, "nccl")["status"] == "PASS"
    r = gc.ddp_check("e1", "e", [_ddp("gloo")], 1, "nccl")
    assert r["status"] == "FAIL" and "expected nccl" in r["notes"]
    assert gc.ddp_check("e1", "e", [_ddp("nccl")], 2, "nccl")["status"] == "FAIL"  # no cell at world size 2


def test_calibration_needs_all_four_peaks_and_mfu_rows():
    peaks = {"fp32": 6e13, "tf32": 4e14, "bf16": 8e14, "fp16": 8e14}
    doc = {"devices": {"cuda:0": {"peak_flops_per_s": peaks, "mem_bandwidth_bytes_per_s": 4e12}}}
    assert gc.calibration_check(doc)["status"] == "PASS"
    no_tf32 = copy.deepcopy(doc)
    del no_tf32["devices"]["cuda:0"]["peak_flops_per_s"]["tf32"]
    r = gc.calibration_check(no_tf32)
    assert r["status"] == "FAIL" and "tf32" in r["notes"]
    assert gc.calibration_check(None)["status"] == "FAIL"
    good, over = gc.check_cell(cuda_cell()), gc.check_cell(cuda_cell(metrics__mfu=1.3))
    assert gc.mfu_check([good], calibrated=True)["status"] == "PASS"
    assert gc.mfu_check([good, over], calibrated=True)["status"] == "FAIL"
    none = gc.check_cell(cuda_cell(metrics__mfu=None))
    assert gc.mfu_check([none], calibrated=True)["status"] == "FAIL"
    assert gc.mfu_check([none], calibrated=False)["status"] == "SKIP"


def test_isolated_cell_must_not_be_contended():
    quiet = gc.check_cell(cuda_cell())
    assert gc.isolated_contention_check(quiet)["status"] == "PASS"
    busy = gc.check_cell(cuda_cell(timing__contention={"detected": True, "reasons": ["another process on the GPU"]}))
    r = gc.isolated_contention_check(busy)
    assert r["status"] == "FAIL" and "another process" in r["notes"]


def test_markdown_has_the_check_table_and_escapes_cells():
    cells = [gc.check_cell(cuda_cell()), gc.check_cell(cuda_cell(metrics__mfu=2.0))]
    report = {"gpu_found": True, "meta": {"started": "t0", "finished": "t1", "duration_s": 12.0, "budget_s": 450,
                                          "command": "python bench/gpu_check.py", "lanes": 6},
              "checks": [gc.row("a", "a. torch", "FAIL", "1 ok", "x | y")], "cells": cells,
              "environment": {"gpus": [{"index": 0, "name": "NVIDIA H200", "compute_capability": "9.0"}]}}
    md = gc.render_markdown(report)
    assert "| check | status | figures | notes |" in md
    assert "| a. torch | **FAIL** | 1 ok | x \\| y |" in md
    assert "mfu 2.000 > 1" in md and "NVIDIA H200" in md


# --------------------------------------------------------------------------- plan and plumbing


def test_plan_chunks_and_their_suites_are_valid_harness_suites(tmp_path):
    from harness.core.suite import expand, load_suite

    variants = ["fp32", "tf32", "int8-dynamic", "int8-static", "compile"]
    chunks = gc.plan_chunks(variants, ["mlp", "cnn"], ["torch", "tensorflow"], ["inference", "training"], 2,
                            gc.lane_settings("small", 0.3, 150, 2), 300)
    assert chunks[0].name.endswith("-compile")  # the long poles start first
    names = {c.name for c in chunks}
    assert {"ddp-torch", "ddp-tensorflow", "torch-mlp-training", "tensorflow-cnn-inference"} <= names
    for c in chunks:
        cells = expand(load_suite(str(gc.write_suite(c, tmp_path))))
        assert len(cells) == c.cells, c.name
        assert all(cell.device == "cuda:0" for cell in cells)
        if c.name.endswith("-training"):
            assert not any(cell.variant.startswith("int8") for cell in cells)
        if c.name.startswith("ddp-"):
            assert sorted(cell.world_size for cell in cells) == [1, 2]


def test_run_proc_times_out_and_kills_the_group(tmp_path):
    p = gc.run_proc([sys.executable, "-c", "import time; print('hi', flush=True); time.sleep(60)"], 1.0,
                    log_path=tmp_path / "x.log", term_grace_s=2)
    assert p.timed_out and p.wall_s < 20 and "hi" in p.output


def test_parse_smi_query():
    rows = gc.parse_smi_query("0, NVIDIA H200, GPU-abc, 570.86.15, 143771, 9.0\nNo devices were found\n")
    assert rows == [{"index": 0, "name": "NVIDIA H200", "uuid": "GPU-abc", "driver": "570.86.15",
                     "memory_mib": 143771, "compute_capability": "9.0"}]


@pytest.mark.slow
def test_one_real_lane_on_the_cpu_reads_back_as_checked_cells(tmp_path):
    """The suite file, the CLI call and the field names against the real harness (CPU, tiny)."""
    chunk = gc.plan_chunks(["fp32"], ["mlp"], ["torch"], ["inference"], 1,
                           gc.lane_settings("tiny", 0.05, 120, 1, warmup_max_s=0.2), 120, device="cpu", ddp=False)[0]
    outcome = gc.run_chunk(chunk, sys.executable, tmp_path, tmp_path / "results", gc.Budget(300), reserve_s=0)
    assert outcome["started"] and outcome["rc"] in (0, 1), outcome
    docs = gc.load_results(tmp_path / "results")
    assert len(docs) == 1 and docs[0]["tag"] == "gpu-check/torch-mlp-inference"
    (s,) = gc.summarise_result(docs[0], "cpu")
    assert s["cell_status"] == "ok", s
    # the fields this script reads exist with these names (problems would say "field missing")
    assert not [m for m in problems(s) if "field missing" in m], s["problems"]
    assert s["figures"]["throughput_over_wall_ratio"] == pytest.approx(1.0, abs=0.01)
    assert s["figures"]["tf32"] is False


@no_gpu_here
def test_assume_gpu_without_one_reports_failures_instead_of_crashing(tmp_path):
    """The whole script path (probes, decisions, report) on a machine whose torch has no
    CUDA: every check is decided and written, torch's missing CUDA is a FAIL with the reason."""
    out = tmp_path / "v.md"
    rc = gc.main(["--assume-gpu", "--backends", "torch", "--workloads", "mlp", "--modes", "inference",
                  "--variants", "fp32", "--budget", "120", "--out", str(out), "--work", str(tmp_path / "work")])
    assert rc == 1
    data = json.loads(out.with_suffix(".json").read_text())
    by_id = {c["id"]: c for c in data["checks"]}
    assert {"env", "a", "b", "c1", "c2", "d1", "d2", "e1", "e2", "f1", "f2", "g1", "g2", "time"} <= set(by_id)
    assert by_id["a"]["status"] == "FAIL" and "cuda" in by_id["a"]["notes"].lower()
    assert by_id["b"]["status"] == "SKIP"
    assert "script" not in by_id  # the script itself did not crash
    assert "| a. torch CUDA cells" in out.read_text()


def test_detect_gpus_reads_nvidia_smi_and_falls_back_without_compute_cap(tmp_path):
    """A fake ``nvidia-smi`` at the lowest boundary: an old driver that rejects the
    compute_cap field still gives the GPUs (second query)."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\n"
                   'case "$1" in\n'
                   '  *compute_cap*) echo "Field compute_cap is not a valid field"; exit 2;;\n'
                   '  --query-gpu=*) echo "0, NVIDIA H200, GPU-aaa, 570.86.15, 143771";'
                   ' echo "1, NVIDIA H200, GPU-bbb, 570.86.15, 143771";;\n'
                   '  *) echo "NVIDIA-SMI 570.86.15  Driver Version: 570.86.15  CUDA Version: 12.8";;\n'
                   "esac\n")
    smi.chmod(0o755)
    gpus, how, text = gc.detect_gpus(smi=str(smi), timeout_s=10)
    assert [g["uuid"] for g in gpus] == ["GPU-aaa", "GPU-bbb"] and gpus[0]["compute_capability"] is None
    assert how == "nvidia-smi: 2 GPU(s)" and "CUDA Version: 12.8" in text
