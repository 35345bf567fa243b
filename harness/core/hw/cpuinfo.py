"""CPU facts from ``/proc/cpuinfo`` (the lowest boundary; tests pass a fake file)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

# ISA flags that change deep-learning kernel speed, as /proc/cpuinfo spells them.
DL_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
    "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
)


def isa_summary(flags_dl: dict[str, bool]) -> dict[str, bool]:
    """The five questions that decide DL kernel choice: AVX2, AVX-512, VNNI (int8 dot
    products, AVX-512 or AVX forms), BF16 (AVX512_BF16 or AMX-BF16) and AMX."""
    f = flags_dl
    return {
        "avx2": bool(f.get("avx2")),
        "avx512": bool(f.get("avx512f")),
        "vnni": bool(f.get("avx512_vnni") or f.get("avx_vnni")),
        "bf16": bool(f.get("avx512_bf16") or f.get("amx_bf16")),
        "amx": bool(f.get("amx_tile")),
    }


def read_cpu(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """Model name, DL-relevant ISA flags (true/false each) and core counts."""
    model = None
    flags: set[str] = set()
    sockets: set[str] = set()
    cores: set[tuple[str, str]] = set()
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        text = ""
    phys = "0"
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key, val = key.strip(), val.strip()
        if key == "model name" and model is None:
            model = val
        elif key in ("flags", "Features") and not flags:
            flags = set(val.split())
        elif key == "physical id":
            phys = val
            sockets.add(val)
        elif key == "core id":
            cores.add((phys, val))
    logical = os.cpu_count()
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except Exception:  # noqa: BLE001
        physical = len(cores) or None
    return {
        "model": model or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "flags_dl": {f: (f in flags) for f in DL_FLAGS},
        "isa": isa_summary({f: (f in flags) for f in DL_FLAGS}),
        "flags_source": str(cpuinfo) if text else "unavailable",
        "physical_cores": physical,
        "logical_cores": logical,
        "sockets": len(sockets) or None,
        "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical,
    }
