"""Energy collector: NVML counter / power sampling (autospec'd pynvml), RAPL (fake sysfs),
estimate and unavailable, and the worker integration (real, on this machine)."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pynvml
import pytest

from harness.collectors.energy import EnergyCollector, EnergyConfig, Sampler
from tests.test_nvml import A100, T4, fake_nvml
from tests.test_rapl import zone


class Rig:
    """A fake clock plus devices whose power is piecewise constant in fake time:
    ``idle_w`` until ``load()`` is called, ``busy_w`` after."""

    def __init__(self, idle_w: dict[int, float], busy_w: dict[int, float]) -> None:
        self.t = 100.0
        self.idle_w, self.busy_w = idle_w, busy_w
        self.segments: list[tuple[float, dict[int, float]]] = [(self.t, idle_w)]
        self.base_mj = 5_000_000

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s

    def load(self) -> None:
        self.segments.append((self.t, self.busy_w))

    def power(self, gpu: int) -> float:
        return self.segments[-1][1][gpu]

    def energy_mj(self, gpu: int) -> int:
        e = 0.0
        for i, (t0, p) in enumerate(self.segments):
            t1 = self.segments[i + 1][0] if i + 1 < len(self.segments) else self.t
            e += p[gpu] * (t1 - t0)
        return int(self.base_mj + e * 1e3)


def gpu_module(rig: Rig, counter: bool = True) -> mock.MagicMock:
    mod = fake_nvml([A100, T4])
    if counter:
        mod.nvmlDeviceGetTotalEnergyConsumption.side_effect = lambda h: rig.energy_mj(int(h[1:]))
    else:
        mod.nvmlDeviceGetTotalEnergyConsumption.side_effect = pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
    mod.nvmlDeviceGetPowerUsage.side_effect = lambda h: int(rig.power(int(h[1:])) * 1e3)
    return mod


def run_cell(col: EnergyCollector, rig: Rig, spec: dict, run_s: float = 2.0, steps: int = 40) -> dict:
    """start (idle baseline) -> load -> timed window -> stop -> observe; returns metrics.energy."""
    col.bind(spec)
    col.start()
    rig.load()
    rig.sleep(0.5)  # build + warm-up
    a = rig.clock()
    rig.sleep(run_s)  # the timed loop
    b = rig.clock()
    rig.sleep(0.1)
    col.stop()
    col.observe(SimpleNamespace(samples_s=[0.05] * (steps // 2), iters_per_sample=2), (a, b))
    return col.metrics()["energy"]


CUDA0 = {"device": "cuda:0", "backend": "fake", "batch_size": 8}
# interval far beyond the fake timeline: the background thread never reads; the
# sampler's reads at start, end of idle and stop are deterministic
CFG = EnergyConfig(interval_s=3600, idle_s=0.5)


def test_nvml_energy_counter_gross_net_and_per_sample():
    rig = Rig(idle_w={0: 50.0, 1: 20.0}, busy_w={0: 250.0, 1: 60.0})
    col = EnergyCollector(CFG, nvml_module=gpu_module(rig), clock=rig.clock, sleep=rig.sleep,
                          env={"CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    e = run_cell(col, rig, CUDA0)
    assert e["source"] == "nvml_energy_counter" and e["reason"] is None
    assert e["idle_power_w"] == pytest.approx(50.0, rel=1e-3)
    assert e["energy_j"] == pytest.approx(250.0 * 2.0, rel=1e-3)
    assert e["avg_power_w"] == pytest.approx(250.0, rel=1e-3)
    assert e["energy_net_j"] == pytest.approx((250.0 - 50.0) * 2.0, rel=1e-3)
    assert e["energy_per_step_j"] == pytest.approx(500.0 / 40, rel=1e-3)
    assert e["energy_per_sample_j"] == pytest.approx(500.0 / (40 * 8), rel=1e-3)
    assert e["samples_per_j"] == pytest.approx(40 * 8 / 500.0, rel=1e-3)
    assert e["window_scope"] == "timed loop"
    assert col.unavailable() == {}


def test_counter_missing_falls_back_to_power_sampling():
    rig = Rig(idle_w={0: 40.0, 1: 20.0}, busy_w={0: 150.0, 1: 60.0})
    col = EnergyCollector(CFG, nvml_module=gpu_module(rig, counter=False), clock=rig.clock, sleep=rig.sleep,
                          env={"CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    e = run_cell(col, rig, CUDA0)
    assert e["source"] == "nvml_power_sampling"
    assert "energy counter unsupported" in e["device"]
    # trapezoid between reads: idle end reads 40 W then the load starts, so the first
    # segment ramps; the window lies inside it, so the estimate is between idle and busy
    assert 40.0 * 2.0 < e["energy_j"] <= 150.0 * 2.0 + 1e-6
    assert e["peak_power_w"] == pytest.approx(150.0)
    assert e["idle_power_w"] == pytest.approx(40.0)


def test_power_sampling_integrates_constant_power_exactly():
    rig = Rig(idle_w={0: 100.0, 1: 100.0}, busy_w={0: 100.0, 1: 100.0})
    col = EnergyCollector(CFG, nvml_module=gpu_module(rig, counter=False), clock=rig.clock, sleep=rig.sleep,
                          env={"CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    e = run_cell(col, rig, CUDA0)
    assert e["energy_j"] == pytest.approx(200.0) and e["energy_net_j"] == pytest.approx(0.0, abs=1e-6)


def test_visible_devices_pick_the_right_gpu():
    rig = Rig(idle_w={0: 50.0, 1: 20.0}, busy_w={0: 250.0, 1: 60.0})
    col = EnergyCollector(CFG, nvml_module=gpu_module(rig), clock=rig.clock, sleep=rig.sleep,
                          env={"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "1"})
    e = run_cell(col, rig, CUDA0)  # cuda:0 is the second GPU in PCI order (the T4)
    assert e["avg_power_w"] == pytest.approx(60.0, rel=1e-3)
    assert "NVML device 1" in e["device"]


def test_device_order_mismatch_is_unavailable_not_wrong():
    rig = Rig(idle_w={0: 50.0, 1: 20.0}, busy_w={0: 250.0, 1: 60.0})
    col = EnergyCollector(CFG, nvml_module=gpu_module(rig), clock=rig.clock, sleep=rig.sleep, env={})
    e = run_cell(col, rig, CUDA0)  # A100 + T4 under FASTEST_FIRST, no framework UUID
    assert e["source"] == "unavailable" and e["energy_j"] is None
    assert "FASTEST_FIRST" in e["reason"] and "FASTEST_FIRST" in col.unavailable()["energy"]


def test_no_nvml_library_is_unavailable_with_reason():
    mod = fake_nvml([])
    mod.nvmlInit.side_effect = pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    col = EnergyCollector(CFG, nvml_module=mod)
    col.bind(CUDA0)
    col.start()
    col.stop()
    e = col.metrics()["energy"]
    assert e["source"] == "unavailable" and "NVML" in e["reason"]
    assert all(e[k] is None for k in ("energy_j", "avg_power_w", "energy_per_sample_j", "samples_per_j"))


def test_rapl_cpu_cell_with_wrap(tmp_path: Path):
    root = tmp_path / "powercap"
    rng = 100_000_000  # 100 J: the package wraps during the idle baseline
    pkg = zone(root, "intel-rapl:0", "package-0", rng - 1_000_000, rng=rng)
    dram = zone(root, "intel-rapl:0:1", "dram", 0, rng=rng)
    state = {"pkg": rng - 1_000_000, "dram": 0, "t": 0.0}
    watts = {"pkg": 10.0, "dram": 2.0}

    def clock() -> float:
        return state["t"]

    def sleep(s: float) -> None:  # time passes and the counters advance (the package wraps)
        state["t"] += s
        state["pkg"] = int(state["pkg"] + watts["pkg"] * s * 1e6) % rng
        state["dram"] = int(state["dram"] + watts["dram"] * s * 1e6) % rng
        (pkg / "energy_uj").write_text(str(state["pkg"]))
        (dram / "energy_uj").write_text(str(state["dram"]))

    col = EnergyCollector(EnergyConfig(interval_s=3600, idle_s=0.5, powercap_root=str(root)), clock=clock, sleep=sleep)
    col.bind({"device": "cpu", "batch_size": 4})
    col.start()
    watts.update(pkg=40.0, dram=5.0)
    a = clock()
    sleep(1.0)
    b = clock()
    col.stop()
    col.observe(SimpleNamespace(samples_s=[0.01] * 10, iters_per_sample=1), (a, b))
    e = col.metrics()["energy"]
    assert e["source"] == "rapl"
    assert e["idle_power_w"] == pytest.approx(12.0, rel=1e-3)
    assert e["energy_j"] == pytest.approx(45.0, rel=1e-3)  # 40 W package (across its wrap) + 5 W DRAM
    assert e["energy_net_j"] == pytest.approx(45.0 - 12.0, rel=1e-3)
    assert set(e["channels_j_tracked"]) == {"package-0", "dram-0"}


def test_no_rapl_cpu_cell_is_unavailable_and_estimate_only_when_asked(tmp_path: Path):
    t = {"now": 0.0}
    clock = lambda: t["now"]  # noqa: E731
    sleep = lambda s: t.__setitem__("now", t["now"] + s)  # noqa: E731
    cfg = EnergyConfig(interval_s=3600, idle_s=0.5, powercap_root=str(tmp_path / "none"), cpu_watts_per_core=10.0)
    col = EnergyCollector(cfg, clock=clock, sleep=sleep, cpu_percent=lambda: 50.0)
    col.bind({"device": "cpu", "batch_size": 4, "settings": {"energy_estimate": False}})
    col.start()
    col.stop()
    e = col.metrics()["energy"]
    assert e["source"] == "unavailable" and e["energy_j"] is None and "RAPL" in e["reason"]

    col = EnergyCollector(cfg, clock=clock, sleep=sleep, cpu_percent=lambda: 50.0)
    col.bind({"device": "cpu", "batch_size": 4, "settings": {"energy_estimate": True}})
    col.start()
    a = clock()
    sleep(2.0)
    b = clock()
    col.stop()
    col.observe(SimpleNamespace(samples_s=[0.1] * 20, iters_per_sample=1), (a, b))
    e = col.metrics()["energy"]
    import os

    watts = 10.0 * (os.cpu_count() or 1) * 0.5
    assert e["source"] == "estimate" and "W/logical core" in e["model"]
    assert "--energy-estimate" in e["reason"]
    assert e["avg_power_w"] == pytest.approx(watts) and e["energy_j"] == pytest.approx(2.0 * watts)


def test_sampler_sleeps_between_reads():
    reads = []
    meter = SimpleNamespace(read=lambda now: reads.append(now) or float(len(reads)), power_w=lambda: None)
    s = Sampler(meter, interval_s=0.05, clock=lambda: 0.0)
    s.start()
    threading.Event().wait(0.3)
    s.stop()
    # a busy-waiting sampler would read thousands of times; Event.wait gives ~6 + start/stop
    assert 2 <= len(reads) <= 0.3 / 0.05 + 4


def test_config_validates():
    with pytest.raises(ValueError, match="interval_s"):
        EnergyConfig(interval_s=0)
    with pytest.raises(ValueError, match="idle_s"):
        EnergyConfig(idle_s=-1)


def test_worker_cell_records_energy_flops_and_timeseries():
    """The real worker path on this machine: energy is measured (RAPL) or null with the
    reason (never 0), FLOPs are counted, and the utilisation series is stored."""
    from harness.core.suite import Settings, TaskSpec
    from harness.launch.worker import run_cell

    spec = TaskSpec("mlp", "torch", "cpu", "fp32", "inference", 4, "tiny")
    cell = run_cell(spec, Settings(size="tiny", min_time_s=0.05, warmup_max_s=0.05, min_samples=3,
                                   energy_estimate=True, idle_baseline_s=0.1))
    assert cell["status"] == "ok", cell.get("error")
    e = cell["metrics"]["energy"]
    if Path("/sys/class/powercap").exists():
        assert e["source"] in ("rapl", "estimate")
    else:
        assert e["source"] == "estimate" and e["model"] and e["energy_j"] is not None and e["energy_j"] >= 0
    assert cell["metrics"]["flops"] > 0 and cell["metrics"]["flops_source"] == "FlopCounterMode"
    ts = cell["timeseries"]
    assert len(ts["t_s"]) == len(ts["cpu_percent"]) >= 1 and ts["gpu_util_percent"] is None
    assert ts["timed_window_s"][1] > ts["timed_window_s"][0]


def test_data_parallel_gpu_cell_meters_worker_0s_gpu_with_its_per_worker_batch():
    rig = Rig(idle_w={0: 50.0, 1: 20.0}, busy_w={0: 250.0, 1: 60.0})
    col = EnergyCollector(CFG, nvml_module=gpu_module(rig), clock=rig.clock, sleep=rig.sleep,
                          env={"CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    e = run_cell(col, rig, {**CUDA0, "world_size": 2, "mode": "training"})
    assert e["energy_j"] == pytest.approx(500.0, rel=1e-3)  # GPU 0 only
    assert e["energy_per_sample_j"] == pytest.approx(500.0 / (40 * 8), rel=1e-3)  # its own batch of 8
    assert "GPU 0 only" in e["data_parallel_scope"]


def test_data_parallel_cpu_cell_counts_every_local_workers_samples(tmp_path: Path):
    root = tmp_path / "powercap"
    zone(root, "intel-rapl:0", "package-0", 0)
    state = {"t": 0.0, "uj": 0}

    def clock() -> float:
        return state["t"]

    def sleep(s: float) -> None:  # a constant 30 W package
        state["t"] += s
        state["uj"] += int(30.0 * s * 1e6)
        (root / "intel-rapl:0" / "energy_uj").write_text(str(state["uj"]))

    for nnodes, workers_here in ((1, 4), (2, 2)):
        col = EnergyCollector(EnergyConfig(interval_s=3600, idle_s=0.5, powercap_root=str(root)), clock=clock,
                              sleep=sleep)
        col.bind({"device": "cpu", "batch_size": 4, "world_size": 4, "settings": {"nnodes": nnodes}})
        col.start()
        a = clock()
        sleep(1.0)
        b = clock()
        col.stop()
        col.observe(SimpleNamespace(samples_s=[0.1] * 10, iters_per_sample=1), (a, b))
        e = col.metrics()["energy"]
        # the package is shared by this node's workers: 10 steps x 4 samples x workers on the node
        assert e["energy_per_sample_j"] == pytest.approx(30.0 / (10 * 4 * workers_here), rel=1e-3)
        assert f"its {workers_here} data-parallel worker" in e["data_parallel_scope"]
