"""Host memory collector: peak resident set size (RSS) of the worker during a cell.

Method, best first:

* ``vmhwm``: Linux keeps the process's RSS high-water mark (``VmHWM`` in
  ``/proc/self/status``). Writing ``5`` to ``/proc/self/clear_refs`` resets it to the
  current RSS, so resetting at ``start()`` and reading at ``stop()`` gives the exact
  peak of the cell, including short spikes, at zero cost during the timed loop.
* ``sampled``: elsewhere (or when clear_refs is not writable) a background thread
  samples RSS with psutil every ``interval_s`` (it sleeps between samples, never
  busy-waits); spikes shorter than the interval can be missed, which the result's
  ``host_mem_method`` field states.

Metrics: ``peak_host_mem_bytes`` (peak RSS during the cell), ``host_mem_baseline_bytes``
(RSS at start) and ``host_mem_increase_bytes`` (peak minus baseline).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from harness.api import Collector, CollectorConfig

_KB = 1024


@dataclass(frozen=True)
class HostMemoryConfig(CollectorConfig):
    interval_s: float = 0.005  # sampling period of the fallback sampler
    proc_dir: str = "/proc/self"  # the lowest boundary; tests point it at a fake tree

    def __post_init__(self) -> None:
        if not self.interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {self.interval_s}")


def _read_status_kb(proc: Path, key: str) -> int | None:
    try:
        text = (proc / "status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{key}:\s+(\d+)\s+kB", text, re.M)
    return int(m.group(1)) * _KB if m else None


class HostMemoryCollector(Collector):
    """Peak RSS of this process while tracking (bytes)."""

    name: ClassVar[str] = "host_memory"
    description: ClassVar[str] = "peak resident set size of the worker during the cell"
    Config = HostMemoryConfig

    def __init__(self, config: HostMemoryConfig | None = None) -> None:
        super().__init__(config)
        self.config: HostMemoryConfig
        self._proc = Path(self.config.proc_dir)
        self._baseline: int | None = None
        self._peak: int | None = None
        self._method = ""
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._reason = ""

    def _rss(self) -> int | None:
        rss = _read_status_kb(self._proc, "VmRSS")
        if rss is not None or (self._proc / "status").exists():
            return rss  # never mix sources: a /proc reading or nothing
        try:
            import psutil

            return int(psutil.Process().memory_info().rss)
        except Exception:  # noqa: BLE001 - any failure means "cannot read"
            return None

    def _reset_hwm(self) -> bool:
        try:
            (self._proc / "clear_refs").write_text("5")
        except OSError:
            return False
        hwm = _read_status_kb(self._proc, "VmHWM")
        rss = _read_status_kb(self._proc, "VmRSS")
        # the reset worked if the high-water mark now sits at the current RSS
        return hwm is not None and rss is not None and hwm <= rss + 64 * _KB

    def start(self) -> None:
        self._baseline = self._rss()
        self._peak = self._baseline
        if self._baseline is None:
            self._reason = "cannot read this process's RSS (no /proc status and no psutil)"
            return
        if self._reset_hwm():
            self._method = "vmhwm"
            return
        self._method = "sampled"
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="host-mem-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.config.interval_s):
            rss = self._rss()
            if rss is not None and (self._peak is None or rss > self._peak):
                self._peak = rss

    def stop(self) -> None:
        if self._baseline is None:
            return
        if self._method == "vmhwm":
            hwm = _read_status_kb(self._proc, "VmHWM")
            if hwm is not None:
                self._peak = max(hwm, self._baseline)
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            rss = self._rss()
            if rss is not None and self._peak is not None:
                self._peak = max(self._peak, rss)

    def metrics(self) -> dict[str, Any]:
        if self._baseline is None or self._peak is None:
            return {"peak_host_mem_bytes": None, "host_mem_increase_bytes": None}
        return {
            "peak_host_mem_bytes": int(self._peak),
            "host_mem_baseline_bytes": int(self._baseline),
            "host_mem_increase_bytes": int(self._peak - self._baseline),
            "host_mem_method": self._method,
        }

    def unavailable(self) -> dict[str, str]:
        if self._baseline is None:
            return {"peak_host_mem_bytes": self._reason, "host_mem_increase_bytes": self._reason}
        return {}
