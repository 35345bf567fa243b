"""Utilisation time series of a cell, for the report: CPU % (psutil) and, on CUDA
cells, GPU utilisation, SM clock, memory used and temperature (NVML).

A daemon thread samples every ``interval_s`` (sleeping in ``Event.wait``) from the
start of the cell (model build) to its end. Stored as the cell's top-level
``timeseries``::

    {"t_s": [...],                 # seconds since the collector started
     "cpu_percent": [...],         # system-wide CPU busy % since the previous sample (psutil)
     "process_cpu_percent": [...], # this worker's CPU % (can exceed 100 with threads)
     "gpu_util_percent": [...] | null, "sm_clock_mhz": [...] | null,
     "gpu_mem_used_bytes": [...] | null, "gpu_temp_c": [...] | null,
     "gpu_reason": null | "why there is no GPU series",
     "timed_window_s": [start, end] | null,   # the timed loop, on the same axis
     "interval_s": 0.1}

``metrics.utilisation`` holds the means over the timed loop.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

from harness.api import Collector, CollectorConfig

GPU_KEYS = ("gpu_util_percent", "sm_clock_mhz", "gpu_mem_used_bytes", "gpu_temp_c")


@dataclass(frozen=True)
class UtilisationConfig(CollectorConfig):
    interval_s: float = 0.1  # sampling period, seconds
    max_points: int = 20_000  # cap on stored samples (a 30-min cell at 0.1 s)

    def __post_init__(self) -> None:
        if not self.interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {self.interval_s}")
        if self.max_points < 2:
            raise ValueError(f"max_points must be >= 2, got {self.max_points}")


class UtilisationCollector(Collector):
    """CPU and GPU utilisation time series (see module doc)."""

    name: ClassVar[str] = "utilisation"
    description: ClassVar[str] = "CPU % and GPU util/SM clock/memory/temperature time series"
    Config = UtilisationConfig

    def __init__(
        self,
        config: UtilisationConfig | None = None,
        *,
        nvml_module: Any = None,
        clock: Callable[[], float] = time.perf_counter,
        cpu_percent: Callable[[], float] | None = None,
        process_cpu_percent: Callable[[], float] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(config)
        self.config: UtilisationConfig
        self._nvml_module = nvml_module
        self._clock = clock
        self._cpu = cpu_percent
        self._proc = process_cpu_percent
        self._env = env
        self._spec: dict[str, Any] = {}
        self._series: dict[str, list[Any]] = {}
        self._t0 = 0.0
        self._gpu: tuple[Any, Any] | None = None
        self._gpu_reason: str | None = "cpu cell: no GPU series"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._window: tuple[float, float] | None = None

    def bind(self, spec: Mapping[str, Any]) -> None:
        self._spec = dict(spec)

    def _open_gpu(self) -> None:
        import os

        device = str(self._spec.get("device", "cpu"))
        if not device.startswith("cuda"):
            if device != "cpu":
                self._gpu_reason = f"{device}: no utilisation source for this device"
            return
        from harness.collectors.energy import _cuda_index, _framework_uuid
        from harness.core.hw.nvml import open_cuda_device

        idx = _cuda_index(device) or 0
        env = os.environ if self._env is None else self._env
        opened = open_cuda_device(idx, env, _framework_uuid(str(self._spec.get("backend")), idx), self._nvml_module)
        if isinstance(opened, str):
            self._gpu_reason = opened
            return
        nv, handle, _ = opened
        self._gpu = (nv, handle)
        self._gpu_reason = None

    def _sample(self) -> None:
        s = self._series
        if len(s["t_s"]) >= self.config.max_points:
            return
        s["t_s"].append(self._clock() - self._t0)
        s["cpu_percent"].append(self._cpu() if self._cpu else None)
        s["process_cpu_percent"].append(self._proc() if self._proc else None)
        if self._gpu is not None:
            nv, h = self._gpu
            row = nv.utilisation(h)
            for k in GPU_KEYS:
                s[k].append(row.get(k))

    def _loop(self) -> None:
        while not self._stop.wait(self.config.interval_s):
            try:
                self._sample()
            except Exception:  # noqa: BLE001 - a failed sample is skipped, never fatal
                continue

    def start(self) -> None:
        if self._cpu is None or self._proc is None:
            try:
                import psutil

                proc = psutil.Process()
                psutil.cpu_percent(None)
                proc.cpu_percent(None)
                self._cpu = self._cpu or (lambda: psutil.cpu_percent(None))
                self._proc = self._proc or proc.cpu_percent
            except Exception:  # noqa: BLE001
                pass
        self._open_gpu()
        self._series = {k: [] for k in ("t_s", "cpu_percent", "process_cpu_percent", *GPU_KEYS)}
        self._t0 = self._clock()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="utilisation-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            self._sample()
        except Exception:  # noqa: BLE001
            pass
        if self._gpu is not None:
            self._gpu[0].close()

    def observe(self, measurement: Any, timed_window: tuple[float, float] | None = None) -> None:
        if timed_window is not None:
            self._window = (timed_window[0] - self._t0, timed_window[1] - self._t0)

    def _mean_in_window(self, key: str) -> float | None:
        if self._window is None or key not in self._series:
            return None
        a, b = self._window
        vals = [v for t, v in zip(self._series["t_s"], self._series[key]) if a <= t <= b and v is not None]
        return sum(vals) / len(vals) if vals else None

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cpu_percent_mean": self._mean_in_window("cpu_percent"),
                               "process_cpu_percent_mean": self._mean_in_window("process_cpu_percent")}
        if self._gpu is not None:
            out["gpu_util_percent_mean"] = self._mean_in_window("gpu_util_percent")
            out["sm_clock_mhz_mean"] = self._mean_in_window("sm_clock_mhz")
        out["scope"] = "timed loop" if self._window else None
        ws = self._spec.get("world_size")
        if ws:  # worker 0's collector: its own process and (on CUDA) its own GPU
            out["data_parallel_scope"] = (
                f"{ws} data-parallel workers: process_cpu_percent is the measuring process (worker 0's under "
                "torchrun, every replica's under an in-process strategy)"
                + ("; gpu_util_percent and sm_clock_mhz are GPU 0 only" if self._gpu is not None else "")
                + "; cpu_percent is the whole node")
        return {"utilisation": out}

    def cell_fields(self) -> dict[str, Any]:
        ts: dict[str, Any] = dict(self._series)
        if self._gpu is None:
            for k in GPU_KEYS:
                ts[k] = None
        ts["gpu_reason"] = self._gpu_reason
        ts["timed_window_s"] = list(self._window) if self._window else None
        ts["interval_s"] = self.config.interval_s
        return {"timeseries": ts}
