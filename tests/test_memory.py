"""Host memory collector against the real /proc and against a fake /proc tree."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from harness.collectors.host_memory import HostMemoryCollector, HostMemoryConfig

MiB = 2**20


def test_real_peak_captures_a_transient_allocation():
    col = HostMemoryCollector()
    with col.track():
        block = bytearray(96 * MiB)
        block[:: 4096] = b"x" * len(block[::4096])  # touch every page
        del block
    m = col.metrics()
    assert m["host_mem_increase_bytes"] >= 90 * MiB
    assert m["peak_host_mem_bytes"] >= m["host_mem_baseline_bytes"] + 90 * MiB
    assert col.unavailable() == {}


def _write_status(proc: Path, rss_kb: int, hwm_kb: int) -> None:
    """Replace the fake status file atomically, as the kernel presents it."""
    tmp = proc / "status.tmp"
    tmp.write_text(_status(rss_kb, hwm_kb))
    tmp.replace(proc / "status")


def _status(rss_kb: int, hwm_kb: int) -> str:
    return f"Name:\tpython\nVmHWM:\t{hwm_kb} kB\nVmRSS:\t{rss_kb} kB\n"


def test_sampling_fallback_when_clear_refs_is_not_writable(tmp_path):
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "status").write_text(_status(100_000, 500_000))
    (proc / "clear_refs").mkdir()  # writing to a directory fails like EACCES would
    col = HostMemoryCollector(HostMemoryConfig(interval_s=0.002, proc_dir=str(proc)))
    col.start()

    def spike() -> None:
        _write_status(proc, 300_000, 500_000)
        time.sleep(0.1)
        _write_status(proc, 120_000, 500_000)

    t = threading.Thread(target=spike)
    t.start()
    t.join()
    col.stop()
    m = col.metrics()
    assert m["host_mem_method"] == "sampled"
    assert m["peak_host_mem_bytes"] == 300_000 * 1024
    assert m["host_mem_increase_bytes"] == 200_000 * 1024


def test_hwm_method_reads_the_reset_high_water_mark(tmp_path):
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "status").write_text(_status(100_000, 100_000))
    (proc / "clear_refs").write_text("")
    col = HostMemoryCollector(HostMemoryConfig(proc_dir=str(proc)))
    col.start()
    assert (proc / "clear_refs").read_text() == "5"
    (proc / "status").write_text(_status(110_000, 250_000))
    col.stop()
    m = col.metrics()
    assert m["host_mem_method"] == "vmhwm"
    assert m["peak_host_mem_bytes"] == 250_000 * 1024


def test_config_validates():
    with pytest.raises(ValueError, match="interval_s"):
        HostMemoryConfig(interval_s=0)
