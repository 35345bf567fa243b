"""A bounded on-disk cache of deterministic, expensive results, shared by the cells of
every run on this machine (see docs/cache.md).

What is cached, one subfolder per kind (:data:`KINDS`):

* ``quality/`` the quality track's trained fp32 models (:mod:`harness.core.quality`);
* ``flops/``   FLOP and byte counts of one torch step (:mod:`harness.core.flops`);
* ``onnx/``    the exported + int8-quantized ONNX models of the torch int8 variants;
* ``tflite/``  the converted LiteRT flatbuffers of the TensorFlow int8 variants;
* ``quality_eval/`` the quality track's evaluation of a variant on a backend (the
  ``metrics.quality`` numbers; :func:`harness.core.quality.evaluate_quality`).

Each entry is one file named by its key: a hex digest of everything that affects the
value (:func:`key`: canonical JSON of the parts, ``sort_keys``). Callers build the parts;
nothing time- or run-dependent belongs in them.

Location: ``$DL_HARNESS_CACHE_DIR``, else ``$XDG_CACHE_HOME/dl-harness``, else
``~/.cache/dl-harness``. Bound: ``$DL_HARNESS_CACHE_MAX_MB`` (default 2048); after every
write, when the entries add up to more, the least recently used ones (file mtime; a hit
touches its entry) are deleted down to 90% of the bound. ``DL_HARNESS_CACHE=0``
disables every cache: each lookup is ``off`` and nothing is written.

A cache that cannot be used (read-only or full disk, a corrupt entry, an entry deleted
by another process's eviction) never fails a cell: lookups degrade to a miss and writes
to a no-op, and the reason is returned to the caller, which records it. Writes are
atomic (:mod:`harness.core.fsutil`), so concurrent cells writing the same key are safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness.core.fsutil import atomic_write_with

DIR_ENV: str = "DL_HARNESS_CACHE_DIR"
MAX_MB_ENV: str = "DL_HARNESS_CACHE_MAX_MB"
ENABLE_ENV: str = "DL_HARNESS_CACHE"
DEFAULT_MAX_MB: float = 2048.0
EVICT_TO: float = 0.9  # after an eviction the cache holds at most this fraction of the bound
KINDS: tuple[str, ...] = ("quality", "flops", "onnx", "tflite", "quality_eval")
HIT, MISS, OFF = "hit", "miss", "off"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


@dataclass
class Lookup:
    """The outcome of a lookup: ``status`` is ``hit``, ``miss`` or ``off`` (disabled);
    ``value`` the entry on a hit; ``reason`` why the cache was not used (off, an
    unreadable or corrupt entry), else None; ``path`` the entry's file."""

    status: str
    value: Any = None
    reason: str | None = None
    path: Path | None = None

    @property
    def hit(self) -> bool:
        return self.status == HIT


def enabled() -> bool:
    """False when ``$DL_HARNESS_CACHE`` is ``0`` (or ``off``/``false``/``no``)."""
    return os.environ.get(ENABLE_ENV, "").strip().lower() not in ("0", "off", "false", "no")


def disabled_reason() -> str:
    return f"the cache is disabled ({ENABLE_ENV}={os.environ.get(ENABLE_ENV, '')})"


def root() -> Path:
    """The cache directory (see the module doc for the order of precedence)."""
    d = os.environ.get(DIR_ENV, "").strip()
    if d:
        return Path(d).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    if xdg:
        return Path(xdg).expanduser() / "dl-harness"
    return Path.home() / ".cache" / "dl-harness"


def max_bytes() -> int:
    """The size bound in bytes from ``$DL_HARNESS_CACHE_MAX_MB`` (default 2048 MB; an
    unreadable value falls back to the default)."""
    raw = os.environ.get(MAX_MB_ENV, "").strip()
    mb = DEFAULT_MAX_MB
    if raw:
        try:
            mb = float(raw)
        except ValueError:
            mb = DEFAULT_MAX_MB
        if not mb >= 0 or mb == float("inf"):
            mb = DEFAULT_MAX_MB
    return int(mb * 2**20)


def key(**parts: Any) -> str:
    """SHA-256 hex digest of the canonical JSON of ``parts`` (sorted keys; values JSON
    cannot hold are written with ``str``)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown cache kind {kind!r}; kinds: {', '.join(KINDS)}")


def path_for(kind: str, name: str, suffix: str = "") -> Path:
    """The file of entry ``name`` (a key, optionally with a readable prefix) of ``kind``."""
    _check_kind(kind)
    if not _NAME.match(name + suffix) or "/" in suffix:
        raise ValueError(f"bad cache entry name {name + suffix!r}")
    return root() / kind / f"{name}{suffix}"


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass  # a read-only cache still serves hits; LRU order is then only approximate


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:300]


def get_with(kind: str, name: str, suffix: str, load: Callable[[Path], Any]) -> Lookup:
    """Look ``name`` up and read it with ``load(path)``: a hit touches the entry; a
    missing entry is a miss; one ``load`` cannot read is a miss with the reason (and
    is removed, so the recomputed value replaces it)."""
    if not enabled():
        return Lookup(OFF, reason=disabled_reason())
    try:
        path = path_for(kind, name, suffix)
    except (ValueError, RuntimeError) as e:  # RuntimeError: no home directory
        return Lookup(MISS, reason=_describe(e))
    try:
        if not path.is_file():
            return Lookup(MISS, path=path)
        value = load(path)
    except FileNotFoundError:  # evicted by another process between the check and the read
        return Lookup(MISS, path=path)
    except Exception as e:  # noqa: BLE001 - a corrupt or unreadable entry is recomputed
        try:
            path.unlink()
        except OSError:
            pass
        return Lookup(MISS, reason=f"could not read the cache entry {path}: {_describe(e)}", path=path)
    _touch(path)
    return Lookup(HIT, value=value, path=path)


def put_with(kind: str, name: str, suffix: str, write: Callable[[str], None]) -> str | None:
    """Store an entry written by ``write(temp_path)`` (atomically), then evict down to
    the bound. Returns None when stored, else why not (disabled, unwritable, ...)."""
    if not enabled():
        return disabled_reason()
    try:
        path = path_for(kind, name, suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_with(path, write, fsync=False)  # a lost entry after a crash is only a miss
    except Exception as e:  # noqa: BLE001 - an unwritable cache never fails a cell
        return f"could not write the cache at {root()}: {_describe(e)}"
    try:
        evict()
    except Exception:  # noqa: BLE001 - eviction is best effort (another process may be evicting)
        pass
    return None


def get_bytes(kind: str, name: str, suffix: str = ".bin") -> Lookup:
    return get_with(kind, name, suffix, lambda p: p.read_bytes())


def put_bytes(kind: str, name: str, data: bytes, suffix: str = ".bin") -> str | None:
    return put_with(kind, name, suffix, lambda tmp: Path(tmp).write_bytes(data))


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def get_json(kind: str, name: str, suffix: str = ".json") -> Lookup:
    return get_with(kind, name, suffix, _load_json)


def put_json(kind: str, name: str, value: Any, suffix: str = ".json") -> str | None:
    try:
        data = json.dumps(value, sort_keys=True).encode("utf-8")
    except (TypeError, ValueError) as e:
        return f"the value cannot be cached as JSON: {_describe(e)}"
    return put_with(kind, name, suffix, lambda tmp: Path(tmp).write_bytes(data))


def exists(kind: str, name: str, suffix: str = "") -> bool:
    """Whether the entry is stored (and the cache is enabled)."""
    if not enabled():
        return False
    try:
        return path_for(kind, name, suffix).is_file()
    except (OSError, ValueError, RuntimeError):
        return False


def _entries(kinds: tuple[str, ...] = KINDS) -> list[tuple[float, int, Path]]:
    """(mtime, size, path) of every entry of ``kinds`` (hidden temp files excluded)."""
    out = []
    base = root()
    for kind in kinds:
        try:
            it = os.scandir(base / kind)
        except OSError:
            continue
        with it:
            for e in it:
                if e.name.startswith("."):
                    continue
                try:
                    if e.is_file(follow_symlinks=False):
                        st = e.stat(follow_symlinks=False)
                        out.append((st.st_mtime, st.st_size, Path(e.path)))
                except OSError:
                    continue
    return out


def evict(bound: int | None = None) -> tuple[int, int]:
    """When the entries add up to more than ``bound`` bytes (default :func:`max_bytes`),
    delete the least recently used ones down to :data:`EVICT_TO` of it. Returns
    (entries removed, bytes freed)."""
    bound = max_bytes() if bound is None else bound
    entries = _entries()
    total = sum(size for _, size, _ in entries)
    if total <= bound:
        return 0, 0
    target = int(bound * EVICT_TO)
    removed = freed = 0
    for _, size, path in sorted(entries, key=lambda e: (e[0], str(e[2]))):
        if total <= target:
            break
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            continue
        total -= size
        removed += 1
        freed += size
    return removed, freed


def info() -> dict[str, Any]:
    """Location, bound, whether enabled, and entries and bytes per kind."""
    per = {k: {"entries": 0, "bytes": 0} for k in KINDS}
    base = root()
    for kind in KINDS:
        for _, size, _ in _entries((kind,)):
            per[kind]["entries"] += 1
            per[kind]["bytes"] += size
    return {
        "root": str(base),
        "enabled": enabled(),
        "max_bytes": max_bytes(),
        "kinds": per,
        "entries": sum(v["entries"] for v in per.values()),
        "bytes": sum(v["bytes"] for v in per.values()),
    }


def clear(kind: str | None = None) -> tuple[int, int]:
    """Delete every entry of ``kind`` (all kinds when None): only files inside the kind
    subfolders, nothing else under the cache directory. Returns (entries, bytes)."""
    if kind is not None:
        _check_kind(kind)
    removed = freed = 0
    for _, size, path in _entries(KINDS if kind is None else (kind,)):
        try:
            path.unlink()
        except OSError:  # gone already, or not ours to delete: `harness cache info` shows what is left
            continue
        removed += 1
        freed += size
    return removed, freed


# --------------------------------------------------------------------------- key parts


_SOURCE_HASHES: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (memoized per path, size and mtime); ``"unreadable"``
    when it cannot be read."""
    p = str(path)
    try:
        st = os.stat(p)
    except OSError:
        return "unreadable"
    memo = (p, st.st_size, st.st_mtime_ns)
    got = _SOURCE_HASHES.get(memo)
    if got is None:
        try:
            with open(p, "rb") as f:
                got = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            got = "unreadable"
        _SOURCE_HASHES[memo] = got
    return got


def source_digests(objs: Any, skip_prefixes: tuple[str, ...] = (),
                   paths: dict[str, str] | None = None) -> dict[str, str]:
    """``{module.qualname: digest of its source file}`` of the classes (or functions)
    in ``objs`` and, for classes, of their bases, except those whose module starts with
    one of ``skip_prefixes`` (the framework itself, whose version is keyed instead) or
    is built in. Editing a user's ``forward()`` thus changes the key. ``paths``, when
    given, receives ``{module.qualname: source file}`` (to re-check the digests later)."""
    import inspect
    import sys

    out: dict[str, str] = {}
    seen: set[int] = set()
    for obj in objs:
        chain = inspect.getmro(obj) if inspect.isclass(obj) else (obj,)
        for c in chain:
            if id(c) in seen:
                continue
            seen.add(id(c))
            mod = getattr(c, "__module__", None) or ""
            if mod in ("builtins", "abc", "typing") or mod.startswith(skip_prefixes):
                continue
            name = f"{mod}.{getattr(c, '__qualname__', getattr(c, '__name__', repr(c)))}"
            path = getattr(sys.modules.get(mod), "__file__", None)
            if path is None:
                try:
                    path = inspect.getsourcefile(c)
                except (TypeError, OSError):
                    path = None
            out[name] = file_digest(path) if path else "no source file"
            if paths is not None and path:
                paths[name] = str(path)
    return out


def package_versions(*names: str) -> dict[str, str]:
    """Installed versions of ``names`` (``"none"`` when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            out[n] = "none"
    return out


def digest_arrays(arrays: Any) -> str:
    """SHA-256 of numpy-like arrays: dtype, shape and bytes of each, in order."""
    import numpy as np

    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        try:
            h.update(memoryview(a).cast("B"))
        except (TypeError, ValueError):  # dtypes the buffer protocol cannot cast
            h.update(a.tobytes())
    return h.hexdigest()


#: ISA flags (``/proc/cpuinfo`` ``flags`` on x86, ``Features`` on Arm) that select the
#: int8 / bf16 / fp16 / fp32 kernels of oneDNN, FBGEMM, XNNPACK and ONNX Runtime, so
#: they can change an evaluated model's numerics (and hence its accuracy).
NUMERIC_ISA_FLAGS: frozenset[str] = frozenset({
    "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl",
    "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "avx_vnni_int8", "amx_tile", "amx_int8",
    "amx_bf16", "amx_fp16",  # x86
    "asimd", "asimdhp", "asimddp", "fphp", "i8mm", "bf16", "sve", "sve2", "svei8mm", "svebf16", "sme",  # Arm
})


def _read_cpuinfo() -> str:
    """The text of ``/proc/cpuinfo`` ("" where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _gpu_names() -> list[str]:
    """Names of the NVIDIA GPUs of this machine from the driver's ``/proc`` files (no
    framework, no device context); empty when there are none or they cannot be read."""
    import glob

    names = []
    for path in sorted(glob.glob("/proc/driver/nvidia/gpus/*/information")):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.startswith("Model:"):
                        names.append(line.split(":", 1)[1].strip())
        except OSError:
            continue
    return names


def machine_fingerprint(device_type: str = "cpu") -> dict[str, Any]:
    """What of this machine can change numerics computed on it (a key part for values
    that are not bit-identical across machines, e.g. an int8 model's accuracy): the
    architecture (``platform.machine()``), the CPU model, the sorted ISA flags of
    :data:`NUMERIC_ISA_FLAGS` it has, the device type and, for ``cuda``, the GPU names.
    A cache shared between machines thus never hands one machine's value to another."""
    import platform

    text = _read_cpuinfo()
    model, flags = "unknown", set()
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        if not sep:
            continue
        k = k.strip().lower()
        if k in ("model name", "cpu model", "hardware", "cpu part", "cpu implementer") and model == "unknown":
            model = v.strip() or "unknown"
        elif k in ("flags", "features"):
            flags |= set(v.split()) & NUMERIC_ISA_FLAGS
    if model == "unknown":
        model = platform.processor() or "unknown"
    out: dict[str, Any] = {"machine": platform.machine(), "cpu": model, "isa": sorted(flags),
                           "device_type": device_type}
    if device_type == "cuda":
        out["gpus"] = _gpu_names() or ["unknown"]
    return out


__all__ = ["Lookup", "KINDS", "HIT", "MISS", "OFF", "enabled", "root", "max_bytes", "key", "path_for",
           "get_with", "put_with", "get_bytes", "put_bytes", "get_json", "put_json", "exists", "evict", "info",
           "clear", "file_digest", "source_digests", "package_versions", "digest_arrays", "machine_fingerprint"]
