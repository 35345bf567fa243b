"""Measured peaks of this machine, for MFU and the roofline (``harness calibrate``).

Per device (``cpu``, ``cuda:N``), with PyTorch in this process:

* **Peak matmul FLOP/s per dtype** (fp32, tf32, bf16, fp16 where the device runs them):
  square ``torch.mm(a, b, out=c)`` at a few sizes, repeated in blocks of >= ~20 ms
  for a time budget; FLOP/s = 2 n^3 x repetitions / block time; the peak is the best
  block over sizes (a peak is an upper bound, so the max, not the median, is the
  estimand). The device is synchronized around each block on CUDA. ``fp32`` is strict
  IEEE fp32 (TF32 off on cuBLAS, oneDNN in fp32), the same float32 math every cell but
  ``tf32`` runs with; ``tf32`` is float32 operands with TF32 allowed
  (``torch.set_float32_matmul_precision("high")``), on NVIDIA GPUs of compute
  capability >= 8.0 only (elsewhere unavailable, with the reason). See
  :mod:`harness.variants.precision`.
* **Memory bandwidth**: ``dst.copy_(src)`` of a buffer far larger than the last-level
  cache (128 MiB on CPU, 1 GiB on CUDA); bytes = 2 x size (read + write) per copy;
  best block.

Stored as ``<dir>/<fingerprint>.json`` (atomic write; devices merge into the same
file), where the fingerprint is :func:`harness.core.environment.fingerprint` of this
machine. A run looks its calibration up by fingerprint (:func:`find_calibration`) and
stores it in the result's top-level ``calibration``. The CPU peaks depend on the
thread count, which is recorded (``threads``); each thread count calibrated is kept
under ``by_threads`` (``harness calibrate -d cpu --threads N``), and a CPU cell's MFU
uses the calibration of its own thread count, or is null with the reason
(:func:`harness.core.flops.apply_calibration`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable

DEFAULT_DIR = Path("results") / "calibration"
DTYPES = ("fp32", "tf32", "bf16", "fp16")


def _sync(torch: Any, dev: Any) -> Callable[[], None]:
    return (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)


def _best_rate(work: Callable[[], None], sync: Callable[[], None], units_per_call: float, budget_s: float,
               min_block_s: float = 0.02) -> float:
    """Best units/s over blocks of repeated ``work()`` calls within ``budget_s``."""
    work()
    sync()
    reps = 1
    while True:  # size a block to >= min_block_s
        t0 = time.perf_counter()
        for _ in range(reps):
            work()
        sync()
        dt = time.perf_counter() - t0
        if dt >= min_block_s or reps >= 1 << 16:
            break
        reps *= 2
    best = units_per_call * reps / dt
    deadline = time.perf_counter() + budget_s
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(reps):
            work()
        sync()
        dt = time.perf_counter() - t0
        best = max(best, units_per_call * reps / dt)
    return best


def measure_device(device: str = "cpu", budget_s: float = 1.0, sizes: Iterable[int] | None = None,
                   copy_bytes: int | None = None, dtypes: Iterable[str] = DTYPES) -> dict[str, Any]:
    """Peaks of one device (see module doc). ``budget_s`` is per (dtype, size) and for
    the copy; small values give quick, lower-bound calibrations."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{device} requested but torch {torch.__version__} sees no CUDA device")
    sync = _sync(torch, dev)
    if sizes is None:
        sizes = (1024, 2048, 4096, 8192) if dev.type == "cuda" else (512, 1024, 2048)
    sizes = list(sizes)
    from harness.core.frameworks.torch_precision import set_fp32_math, tf32_unsupported_reason

    tdt = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    peaks: dict[str, float | None] = {}
    unavailable: dict[str, str] = {}
    per_size: dict[str, dict[str, float]] = {}
    for name in dtypes:
        rates: dict[str, float] = {}
        if name == "tf32":
            reason = tf32_unsupported_reason(torch, dev)
            if reason:
                peaks[name], unavailable[name] = None, reason
                continue
        # fp32 is strict IEEE (TF32 off), like every cell but tf32's; tf32 allows TF32
        set_fp32_math(torch, "tf32" if name == "tf32" else "ieee")
        try:
            for n in sorted(sizes):
                if rates and 2.0 * n**3 / max(rates.values()) > budget_s / 4:
                    break  # one call would eat the budget (a slow dtype here): bigger sizes add nothing
                a = torch.randn(n, n, device=dev).to(tdt[name])
                b = torch.randn(n, n, device=dev).to(tdt[name])
                c = torch.empty(n, n, device=dev, dtype=tdt[name])
                rates[str(n)] = _best_rate(lambda a=a, b=b, c=c: torch.mm(a, b, out=c), sync, 2.0 * n**3, budget_s)
                del a, b, c
        except (RuntimeError, TypeError) as e:
            peaks[name] = None
            unavailable[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            continue
        per_size[name] = rates
        peaks[name] = max(rates.values())
    set_fp32_math(torch, "ieee")  # leave the process in the harness's default: strict fp32
    nbytes = copy_bytes or (1 << 30 if dev.type == "cuda" else 128 << 20)
    src = torch.ones(nbytes // 4, device=dev, dtype=torch.float32)
    dst = torch.empty_like(src)
    bw = _best_rate(lambda dst=dst, src=src: dst.copy_(src), sync, 2.0 * src.numel() * 4, budget_s)
    del src, dst
    info: dict[str, Any] = {
        "peak_flops_per_s": peaks,
        "peak_flops_by_size": per_size,
        "mem_bandwidth_bytes_per_s": bw,
        "unavailable": unavailable,
        "method": {
            "matmul": f"torch.mm square n in {sizes}, best block of >= 20 ms over {budget_s:g} s per size",
            "fp32_math": "fp32: strict IEEE (TF32 off: set_float32_matmul_precision('highest')); "
                         "tf32: float32 operands with TF32 on (set_float32_matmul_precision('high'))",
            "bandwidth": f"tensor.copy_ of {nbytes / 2**20:.0f} MiB fp32, 2 x size bytes per copy, best block",
        },
        "torch": torch.__version__,
        "threads": torch.get_num_threads() if dev.type == "cpu" else None,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return info


def calibration_path(directory: str | Path, fingerprint: str) -> Path:
    return Path(directory) / f"{fingerprint}.json"


def save(directory: str | Path, fingerprint: str, device: str, info: dict[str, Any],
         environment: dict[str, Any] | None = None) -> Path:
    """Merge ``info`` for ``device`` into ``<directory>/<fingerprint>.json`` atomically."""
    path = calibration_path(directory, fingerprint)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = load(path) or {"calibration_version": 1, "fingerprint": fingerprint, "devices": {}}
    entry = dict(info)
    if info.get("threads") is not None:  # CPU: keep every thread count calibrated
        prev = doc["devices"].get(device) or {}
        by = dict(prev.get("by_threads") or {}) if isinstance(prev.get("by_threads"), dict) else {}
        if prev.get("threads") is not None:  # files written before by_threads existed
            by.setdefault(str(prev["threads"]), _essentials(prev))
        by[str(info["threads"])] = _essentials(info)
        entry["by_threads"] = by
    doc["devices"][device] = entry
    if environment is not None:
        doc["environment"] = environment
    from harness.core.fsutil import atomic_write_text

    atomic_write_text(path, json.dumps(doc, indent=1))
    return path


def _essentials(info: dict[str, Any]) -> dict[str, Any]:
    """What MFU and the roofline need of one calibration (no per-size detail)."""
    return {
        "peak_flops_per_s": info.get("peak_flops_per_s", {}),
        "mem_bandwidth_bytes_per_s": info.get("mem_bandwidth_bytes_per_s"),
        "measured_at": info.get("measured_at"),
        "threads": info.get("threads"),
        "unavailable": info.get("unavailable", {}),
    }


def load(path: str | Path) -> dict[str, Any] | None:
    """A calibration file, or None when missing or unreadable."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("devices"), dict):
        return None
    return doc


def find_calibration(fingerprint: str, directories: Iterable[str | Path]) -> dict[str, Any] | None:
    """The result-file ``calibration`` block for ``fingerprint`` from the first
    directory that has one: ``{device: {peak_flops_per_s, mem_bandwidth_bytes_per_s,
    measured_at, fingerprint, source}}``; None when this machine was never calibrated."""
    for d in directories:
        path = calibration_path(d, fingerprint)
        doc = load(path)
        if not doc or doc.get("fingerprint") != fingerprint:
            continue
        out = {}
        for device, info in doc["devices"].items():
            out[device] = {**_essentials(info), "fingerprint": fingerprint, "source": str(path)}
            if isinstance(info.get("by_threads"), dict):
                out[device]["by_threads"] = {str(k): _essentials(v) for k, v in info["by_threads"].items()
                                             if isinstance(v, dict)}
        return out or None
    return None


def default_dirs(out_dir: str | Path | None) -> list[Path]:
    """Where a run looks for calibrations: ``<out>/calibration`` then ``results/calibration``."""
    dirs = [Path(out_dir) / "calibration"] if out_dir is not None else []
    if DEFAULT_DIR not in dirs:
        dirs.append(DEFAULT_DIR)
    return dirs
