"""Energy and power of a cell, with the provenance of every number.

Source, chosen per cell from its device (``metrics.energy.source``):

* ``nvml_energy_counter`` — CUDA cells on GPUs with NVML's total-energy counter
  (``nvmlDeviceGetTotalEnergyConsumption``, millijoules, Volta and newer).
* ``nvml_power_sampling`` — CUDA cells on older GPUs: board power
  (``nvmlDeviceGetPowerUsage``, milliwatts) sampled and integrated over time
  (trapezoid rule). The driver averages power over ~1 s on many boards, so short
  cells are smeared.
* ``rapl`` — CPU cells where ``/sys/class/powercap`` RAPL is readable: CPU package(s)
  plus DRAM, counter wrap-around handled (:mod:`harness.core.hw.rapl`). This is the whole
  socket, not just this process.
* ``estimate`` — only when asked (``harness run --energy-estimate``) and nothing is
  measurable: power = P_max x utilisation, with the model stated in ``model``.
* ``unavailable`` — otherwise: every value ``null`` and ``reason`` says why. Never 0.

The CUDA device is mapped to its NVML index under ``CUDA_VISIBLE_DEVICES`` and
``CUDA_DEVICE_ORDER`` (:func:`harness.core.hw.nvml.resolve_cuda_device`).

How: ``start()`` starts a sampler thread that reads the cumulative energy every
``interval_s`` (it sleeps in ``Event.wait`` between reads, never busy-waits), then
waits ``idle_s`` with the device idle (before the model is built) -> ``idle_power_w``.
The worker passes the timed loop's window to :meth:`observe`; energy is the
cumulative-energy series interpolated at the window's ends, so it covers the timed
loop only (not model build or warm-up). ``energy_net_j`` subtracts idle power x window.
"""

from __future__ import annotations

import abc

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

from harness.api import Collector, CollectorConfig

SOURCES = ("nvml_energy_counter", "nvml_power_sampling", "rapl", "estimate", "unavailable")
ENERGY_KEYS = (
    "energy_j", "energy_net_j", "energy_per_sample_j", "energy_per_sample_net_j", "energy_per_step_j",
    "avg_power_w", "peak_power_w", "idle_power_w", "samples_per_j",
)


@dataclass(frozen=True)
class EnergyConfig(CollectorConfig):
    interval_s: float = 0.05  # sampler period
    idle_s: float = 0.5  # idle baseline before each cell (0 disables it)
    powercap_root: str = "/sys/class/powercap"  # RAPL sysfs root (tests: a fake tree)
    estimate: bool = False  # allow a labelled estimate when nothing is measurable
    cpu_watts_per_core: float = 10.0  # estimate model: assumed CPU power per busy logical core

    def __post_init__(self) -> None:
        if not self.interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {self.interval_s}")
        if self.idle_s < 0:
            raise ValueError(f"idle_s must be >= 0, got {self.idle_s}")
        if not self.cpu_watts_per_core > 0:
            raise ValueError(f"cpu_watts_per_core must be > 0, got {self.cpu_watts_per_core}")


# --------------------------------------------------------------------------- meters


class Meter(abc.ABC):
    """One energy source (abstract): ``read(now)`` returns cumulative joules since it
    opened. Subclasses: NVML counter, NVML power integration, RAPL, estimate."""

    source: str = "unavailable"
    model: str | None = None
    detail: str = ""

    @abc.abstractmethod
    def read(self, now: float) -> float:
        """Cumulative joules since the meter opened."""

    def power_w(self) -> float | None:
        """Last instantaneous power reading (sources that have one), watts."""
        return None

    def channels(self) -> dict[str, float]:
        """Cumulative joules per channel (e.g. RAPL package-0, dram-0), when several."""
        return {}

    def close(self) -> None:
        pass


class NvmlCounterMeter(Meter):
    source = "nvml_energy_counter"

    def __init__(self, nvml: Any, handle: Any, detail: str) -> None:
        self.nvml, self.handle, self.detail = nvml, handle, detail
        self._base = nvml.energy_counter_mj(handle)

    def read(self, now: float) -> float:
        return (self.nvml.energy_counter_mj(self.handle) - self._base) / 1e3

    def close(self) -> None:
        self.nvml.close()


class IntegratingMeter(Meter):
    """Integrates a power reading (W) over time with the trapezoid rule."""

    def __init__(self, power: Callable[[], float]) -> None:
        self._power = power
        self._t: float | None = None
        self._p = 0.0
        self._e = 0.0

    def read(self, now: float) -> float:
        p = float(self._power())
        if self._t is not None:
            self._e += 0.5 * (p + self._p) * max(0.0, now - self._t)
        self._t, self._p = now, p
        return self._e

    def power_w(self) -> float | None:
        return self._p if self._t is not None else None


class NvmlPowerMeter(IntegratingMeter):
    source = "nvml_power_sampling"

    def __init__(self, nvml: Any, handle: Any, detail: str) -> None:
        super().__init__(lambda: nvml.power_mw(handle) / 1e3)
        self.nvml, self.detail = nvml, detail

    def close(self) -> None:
        self.nvml.close()


class RaplMeter(Meter):
    source = "rapl"

    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self._last: dict[str, float] = {}
        self.detail = "RAPL zones " + ", ".join(d.label for d in reader.domains)

    def read(self, now: float) -> float:
        self._last = self.reader.read()
        return sum(self._last.values())

    def channels(self) -> dict[str, float]:
        return dict(self._last)


class EstimateMeter(IntegratingMeter):
    source = "estimate"

    def __init__(self, power: Callable[[], float], model: str, detail: str) -> None:
        super().__init__(power)
        self.model, self.detail = model, detail


# --------------------------------------------------------------------------- sampler


class Sampler:
    """Reads a meter every ``interval_s`` on a daemon thread (sleeping in
    ``Event.wait``); keeps the time and cumulative-energy series."""

    def __init__(self, meter: Meter, interval_s: float, clock: Callable[[], float]) -> None:
        self.meter, self.interval_s, self.clock = meter, interval_s, clock
        self.t: list[float] = []
        self.e: list[float] = []
        self.p: list[float | None] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    def sample(self) -> None:
        with self._lock:
            now = self.clock()
            try:
                e = self.meter.read(now)
            except Exception as ex:  # noqa: BLE001 - a failed read is recorded, not fatal
                self.errors.append(f"{type(ex).__name__}: {ex}")
                return
            self.t.append(now)
            self.e.append(e)
            self.p.append(self.meter.power_w())

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def start(self) -> None:
        self.sample()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="energy-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.sample()

    def energy_at(self, t: float) -> float | None:
        """Cumulative joules at ``t``, linearly interpolated between samples."""
        ts, es = self.t, self.e
        if not ts or t < ts[0] or t > ts[-1]:
            return None
        import bisect

        i = bisect.bisect_left(ts, t)
        if ts[i] == t or i == 0:
            return es[i]
        t0, t1, e0, e1 = ts[i - 1], ts[i], es[i - 1], es[i]
        return e0 + (e1 - e0) * (t - t0) / (t1 - t0) if t1 > t0 else e1

    def peak_power(self, a: float, b: float) -> float | None:
        """Highest power over the read intervals (t[i-1], t[i]] that overlap [a, b]:
        the instantaneous reading at t[i] where the source has one, else the interval's
        mean power (energy slope)."""
        inst: list[float] = []
        slopes: list[float] = []
        for i in range(1, len(self.t)):
            if not (self.t[i] >= a and self.t[i - 1] <= b and self.t[i] > self.t[i - 1]):
                continue
            if self.p[i] is not None:
                inst.append(float(self.p[i]))  # type: ignore[arg-type]
            slopes.append((self.e[i] - self.e[i - 1]) / (self.t[i] - self.t[i - 1]))
        if inst:
            return max(inst)
        return max(slopes) if slopes else None


# --------------------------------------------------------------------------- collector


def _cuda_index(device: str) -> int | None:
    """The CUDA ordinal of ``device`` (:func:`harness.core.hw.nvml.cuda_index`)."""
    from harness.core.hw.nvml import cuda_index

    return cuda_index(device)


def _framework_uuid(backend: str, index: int) -> str | None:
    """The CUDA device's UUID as the (already imported) framework of ``backend``
    reports it (:func:`harness.core.hw.nvml.framework_cuda_uuid`; PyTorch only)."""
    from harness.core.hw.nvml import framework_cuda_uuid

    return framework_cuda_uuid(index) if backend == "torch" else None


class EnergyCollector(Collector):
    """Energy and power of the timed loop for the cell's device (see module doc)."""

    name: ClassVar[str] = "energy"
    description: ClassVar[str] = "energy/power (NVML, RAPL; null with the reason elsewhere)"
    Config = EnergyConfig

    def __init__(
        self,
        config: EnergyConfig | None = None,
        *,
        nvml_module: Any = None,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], Any] | None = None,
        cpu_percent: Callable[[], float] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(config)
        self.config: EnergyConfig
        self._nvml_module = nvml_module
        self._clock = clock
        self._sleep = sleep or (lambda s: threading.Event().wait(s))
        self._cpu_percent = cpu_percent
        self._env = env
        self._spec: dict[str, Any] = {}
        self._meter: Meter | None = None
        self._sampler: Sampler | None = None
        self._reason = ""
        self._idle: tuple[float, float] | None = None
        self._window: tuple[float, float] | None = None
        self._steps: int | None = None
        self._tracked: tuple[float, float] | None = None

    # -- wiring ---------------------------------------------------------------------
    def bind(self, spec: Mapping[str, Any]) -> None:
        self._spec = dict(spec)
        settings = spec.get("settings") or {}
        changes: dict[str, Any] = {}
        if settings.get("energy_estimate"):
            changes["estimate"] = True
        if settings.get("idle_baseline_s") is not None:
            changes["idle_s"] = float(settings["idle_baseline_s"])
        if changes:
            import dataclasses

            self.config = dataclasses.replace(self.config, **changes)

    def open_meter(self) -> Meter | str:
        """The best meter for the bound device, or the reason there is none."""
        import os

        device = str(self._spec.get("device", "cpu"))
        env = os.environ if self._env is None else self._env
        idx = _cuda_index(device)
        if idx is not None:
            reason = self._open_gpu(idx, env)
            if isinstance(reason, Meter):
                return reason
        elif device == "cpu":
            from harness.core.hw.rapl import open_rapl

            rapl = open_rapl(self.config.powercap_root)
            if rapl.available:
                return RaplMeter(rapl)
            reason = rapl.reason
        else:
            reason = f"no energy source for device {device!r} (TPU power is not exposed to the host)"
        if self.config.estimate:
            return self._estimate(idx, env, reason)
        return reason

    def _open_gpu(self, idx: int, env: Mapping[str, str]) -> Meter | str:
        from harness.core.hw.nvml import open_cuda_device

        opened = open_cuda_device(idx, env, _framework_uuid(str(self._spec.get("backend")), idx), self._nvml_module)
        if isinstance(opened, str):
            return opened
        nv, handle, detail = opened
        try:
            return NvmlCounterMeter(nv, handle, detail)
        except Exception as e:  # noqa: BLE001 - NVMLError_NotSupported on pre-Volta GPUs
            counter_why = f"{type(e).__name__}: {e}"
        try:
            nv.power_mw(handle)
        except Exception as e:  # noqa: BLE001
            nv.close()
            return f"NVML on {detail}: no energy counter ({counter_why}) and no power reading ({type(e).__name__}: {e})"
        meter = NvmlPowerMeter(nv, handle, detail + f"; energy counter unsupported ({counter_why})")
        return meter

    def _estimate(self, idx: int | None, env: Mapping[str, str], why: str) -> Meter | str:
        if idx is not None:
            from harness.core.hw.nvml import open_cuda_device

            opened = open_cuda_device(idx, env, module=self._nvml_module)
            if not isinstance(opened, str):
                nv, h, _ = opened
                limit = nv.power_limit_w(h)
                if limit:
                    model = f"P = {limit:g} W (NVML power limit) x GPU utilisation (NVML, 0-1)"
                    return EstimateMeter(
                        lambda: limit * (nv.utilisation(h)["gpu_util_percent"] or 0) / 100.0, model, why
                    )
            return f"{why}; no estimate possible (no NVML power limit for cuda:{idx})"
        cpu_percent = self._cpu_percent
        if cpu_percent is None:
            import psutil

            psutil.cpu_percent(None)
            cpu_percent = lambda: psutil.cpu_percent(None)  # noqa: E731 - system-wide %, since last call
        import os

        cores = os.cpu_count() or 1
        pmax = self.config.cpu_watts_per_core * cores
        model = (
            f"P = {self.config.cpu_watts_per_core:g} W/logical core x {cores} cores x system CPU utilisation "
            f"(psutil, 0-1); assumed TDP share, not measured; no idle floor, no DRAM"
        )
        return EstimateMeter(lambda: pmax * cpu_percent() / 100.0, model, why)

    # -- tracking -------------------------------------------------------------------
    def start(self) -> None:
        found = self.open_meter()
        if isinstance(found, str):
            self._reason = found
            return
        self._meter = found
        self._sampler = Sampler(found, self.config.interval_s, self._clock)
        self._sampler.start()
        if self.config.idle_s > 0:
            t0 = self._clock()
            self._sleep(self.config.idle_s)
            self._sampler.sample()
            self._idle = (t0, self._clock())
        self._tracked = (self._clock(), self._clock())

    def stop(self) -> None:
        if self._sampler is None:
            return
        self._sampler.stop()
        if self._tracked is not None:
            self._tracked = (self._tracked[0], self._clock())
        if self._meter is not None:
            self._meter.close()

    def observe(self, measurement: Any, timed_window: tuple[float, float] | None = None) -> None:
        if timed_window is not None:
            self._window = timed_window
        if measurement is not None:
            self._steps = len(measurement.samples_s) * int(measurement.iters_per_sample)

    # -- results --------------------------------------------------------------------
    def _energy(self, a: float, b: float) -> float | None:
        s = self._sampler
        assert s is not None
        ea, eb = s.energy_at(a), s.energy_at(b)
        return None if ea is None or eb is None else eb - ea

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: None for k in ENERGY_KEYS}
        if self._sampler is None or self._meter is None:
            out.update(source="unavailable", reason=self._reason or "collector did not run")
            return {"energy": out}
        s, m = self._sampler, self._meter
        window = self._window or self._tracked
        out.update(source=m.source, reason=None, device=m.detail, sampler_interval_s=self.config.interval_s)
        if m.model:  # an estimate: say what could not be measured, and the model used
            out["model"] = m.model
            out["device"] = str(self._spec.get("device"))
            out["reason"] = f"not measured ({m.detail}); estimated because --energy-estimate was given"
        if self._idle is not None:
            e_idle = self._energy(*self._idle)
            dt = self._idle[1] - self._idle[0]
            out["idle_power_w"] = e_idle / dt if e_idle is not None and dt > 0 else None
            out["idle_s"] = dt
        if window is None:
            out["reason"] = "no timed window was observed"
            return {"energy": out}
        a, b = window
        dur = b - a
        e = self._energy(a, b)
        out["window_s"] = dur
        out["window_scope"] = "timed loop" if self._window else "whole tracked span (build + warm-up + timed loop)"
        out["sampler_reads_in_window"] = sum(1 for t in s.t if a <= t <= b)
        if s.errors:
            out["read_errors"] = s.errors[:5]
        if e is None or dur <= 0:
            out["reason"] = "the timed window lies outside the sampled span"
            return {"energy": out}
        out["energy_j"] = e
        out["avg_power_w"] = e / dur
        out["peak_power_w"] = s.peak_power(a, b)
        if out["idle_power_w"] is not None:
            out["energy_net_j"] = e - out["idle_power_w"] * dur
        if m.channels():  # per-zone joules over the whole tracked span (idle included)
            out["channels_j_tracked"] = m.channels()
        batch, scope = self._samples_per_step()
        if scope:
            out["data_parallel_scope"] = scope
        if self._steps:
            out["energy_per_step_j"] = e / self._steps
            if batch:
                n = self._steps * batch
                out["energy_per_sample_j"] = e / n
                out["samples_per_j"] = n / e if e > 0 else None
                if out["energy_net_j"] is not None:
                    out["energy_per_sample_net_j"] = out["energy_net_j"] / n
        return {"energy": out}

    def unavailable(self) -> dict[str, str]:
        if self._meter is None:
            return {"energy": self._reason or "collector did not run"}
        return {}

    def _samples_per_step(self) -> tuple[int, str | None]:
        """Samples one metered step processes, and for data-parallel cells what the
        meter covers: a GPU meter sees worker 0's device only (its per-worker batch); a
        CPU meter (RAPL, or the estimate) sees the node's package(s), i.e. every worker
        on this node."""
        batch = int(self._spec.get("batch_size") or 0)
        ws = self._spec.get("world_size")
        if not ws:
            return batch, None
        if _cuda_index(str(self._spec.get("device", "cpu"))) is not None:
            return batch, (f"GPU 0 only (worker 0's device) of {ws} data-parallel workers: energy and power are "
                           "that GPU's; per-sample figures use its per-worker batch")
        nnodes = int((self._spec.get("settings") or {}).get("nnodes") or 1)
        local = max(1, int(ws) // nnodes)
        return batch * local, (f"this node's CPU package(s), shared by its {local} data-parallel worker(s): "
                               "per-sample figures use their combined batch")
