"""Calibration: real (tiny) measurements, the store, the run's lookup and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.core import calibrate
from harness.core.suite import Settings, Suite, TaskSpec

pytest.importorskip("torch")


def test_measure_cpu_positive_peaks_and_bandwidth():
    info = calibrate.measure_device("cpu", budget_s=0.05, sizes=[64, 128], copy_bytes=1 << 20, dtypes=["fp32", "bf16"])
    assert info["peak_flops_per_s"]["fp32"] > 1e6
    assert info["peak_flops_per_s"]["fp32"] == max(info["peak_flops_by_size"]["fp32"].values())
    assert info["mem_bandwidth_bytes_per_s"] > 1e6
    assert info["threads"] >= 1 and info["measured_at"]


def test_save_merges_devices_atomically_and_finds_by_fingerprint(tmp_path: Path):
    d = tmp_path / "cal"
    calibrate.save(d, "fp1", "cpu", {"peak_flops_per_s": {"fp32": 1e11}, "mem_bandwidth_bytes_per_s": 1e10,
                                     "measured_at": "t0"})
    calibrate.save(d, "fp1", "cuda:0", {"peak_flops_per_s": {"fp32": 2e13}, "mem_bandwidth_bytes_per_s": 1e12,
                                        "measured_at": "t1"})
    assert [p.name for p in d.iterdir()] == ["fp1.json"]  # no temp files left behind
    found = calibrate.find_calibration("fp1", [tmp_path / "missing", d])
    assert set(found) == {"cpu", "cuda:0"}
    assert found["cpu"]["peak_flops_per_s"]["fp32"] == 1e11 and found["cuda:0"]["fingerprint"] == "fp1"
    assert calibrate.find_calibration("other", [d]) is None
    (d / "bad.json").write_text("{not json")
    assert calibrate.find_calibration("bad", [d]) is None


def test_run_includes_calibration_and_sets_mfu(tmp_path: Path):
    from harness.core.environment import collect_environment
    from harness.launch.runner import run_suite

    fp = collect_environment()["fingerprint"]
    calibrate.save(tmp_path / "calibration", fp, "cpu",
                   {"peak_flops_per_s": {"fp32": 1e10}, "mem_bandwidth_bytes_per_s": 1e9, "measured_at": "t",
                    "threads": 2})
    spec = TaskSpec("mlp", "torch", "cpu", "fp32", "inference", 4, "tiny")

    def fake_cell(s: TaskSpec, settings: Settings) -> dict:
        return {"id": s.id, "spec": s.to_dict(), "status": "ok", "reason": None, "unavailable": {},
                "runtime": {"threads": 2},
                "metrics": {"achieved_flops_per_s": 2e9, "arithmetic_intensity_flop_per_byte": 4.0,
                            "latency_ms": {"p50": 1.0}},
                "samples_ms": [1.0]}

    out = run_suite(Suite(name="t"), [spec], tmp_path, show_progress=False, cell_runner=fake_cell)
    assert out.doc["calibration"]["cpu"]["peak_flops_per_s"]["fp32"] == 1e10
    assert out.doc["calibration"]["cpu"]["fingerprint"] == fp
    m = out.doc["cells"][0]["metrics"]
    assert m["mfu"] == pytest.approx(0.2) and m["roofline_bound"] == "memory"
    stored = json.loads(out.path.read_text())
    assert stored["calibration"]["cpu"]["mem_bandwidth_bytes_per_s"] == 1e9


def test_cli_calibrate_reports_positive_numbers(cli, tmp_path: Path):
    proc = cli(["calibrate", "-d", "cpu", "--dtype", "fp32", "--budget", "0.05", "--out", str(tmp_path)])
    assert proc.returncode == 0, proc.stderr
    assert "GFLOP/s" in proc.stdout and "GB/s" in proc.stdout
    (path,) = tmp_path.glob("*.json")
    doc = json.loads(path.read_text())
    cpu = doc["devices"]["cpu"]
    assert cpu["peak_flops_per_s"]["fp32"] > 0 and cpu["mem_bandwidth_bytes_per_s"] > 0
    assert doc["fingerprint"] == path.stem


def test_cli_calibrate_usage_errors(cli, tmp_path: Path):
    proc = cli(["calibrate", "-d", "gpu7", "--out", str(tmp_path)])
    assert proc.returncode == 2 and "unknown device" in proc.stderr and "Traceback" not in proc.stderr
    import torch

    if not torch.cuda.is_available():
        proc = cli(["calibrate", "-d", "cuda", "--out", str(tmp_path)])
        assert proc.returncode == 2 and "CUDA" in proc.stderr


def test_cpu_tf32_is_unavailable_with_the_reason_and_fp32_is_strict(monkeypatch):
    """fp32 is measured with TF32/bf16 reductions off whatever the process had set; the
    tf32 peak exists only on Ampere+ GPUs (here: unavailable, with the reason)."""
    import torch

    torch.set_float32_matmul_precision("medium")  # oneDNN bf16 / cuBLAS tf32 matmuls
    seen = []
    real_mm = torch.mm

    def mm(*a, **k):  # the flags in force when the peak's matmuls run
        seen.append((torch.backends.cuda.matmul.fp32_precision, torch.backends.mkldnn.matmul.fp32_precision))
        return real_mm(*a, **k)

    monkeypatch.setattr(torch, "mm", mm)
    try:
        info = calibrate.measure_device("cpu", budget_s=0.02, sizes=[32], copy_bytes=1 << 16, dtypes=["fp32", "tf32"])
    finally:
        torch.set_float32_matmul_precision("highest")
    assert seen and set(seen) == {("ieee", "ieee")}
    assert info["peak_flops_per_s"]["fp32"] > 0
    assert info["peak_flops_per_s"]["tf32"] is None
    assert info["unavailable"]["tf32"] == "TF32 is an NVIDIA Ampere+ GPU format; CPUs run fp32"
    assert "tf32" in calibrate.DTYPES


def test_every_thread_count_calibrated_is_kept(tmp_path: Path):
    d = tmp_path / "cal"
    calibrate.save(d, "fp", "cpu", {"peak_flops_per_s": {"fp32": 2e10}, "mem_bandwidth_bytes_per_s": 1e9,
                                    "measured_at": "t0", "threads": 2})
    calibrate.save(d, "fp", "cpu", {"peak_flops_per_s": {"fp32": 1e10}, "mem_bandwidth_bytes_per_s": 1e9,
                                    "measured_at": "t1", "threads": 1})
    found = calibrate.find_calibration("fp", [d])["cpu"]
    assert found["threads"] == 1 and found["peak_flops_per_s"]["fp32"] == 1e10  # the latest
    assert found["by_threads"]["2"]["peak_flops_per_s"]["fp32"] == 2e10
    assert found["by_threads"]["1"]["peak_flops_per_s"]["fp32"] == 1e10
    from harness.core.flops import apply_calibration

    cell = {"status": "ok", "spec": {"device": "cpu", "variant": "fp32"}, "runtime": {"threads": 2},
            "metrics": {"achieved_flops_per_s": 1e9}, "unavailable": {}}
    apply_calibration(cell, {"cpu": found})
    assert cell["metrics"]["mfu"] == pytest.approx(0.05)  # against the 2-thread peak


def test_cli_calibrate_threads_are_recorded(cli, tmp_path: Path):
    proc = cli(["calibrate", "-d", "cpu", "--threads", "1", "--dtype", "fp32", "--budget", "0.02", "--out",
                str(tmp_path)])
    assert proc.returncode == 0, proc.stderr
    assert ", 1 threads" in proc.stdout
    (path,) = tmp_path.glob("*.json")
    cpu = json.loads(path.read_text())["devices"]["cpu"]
    assert cpu["threads"] == 1 and set(cpu["by_threads"]) == {"1"}
