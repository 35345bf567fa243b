"""The environment block stored in every result: what machine and software ran it.

Collected in the parent process without importing any deep-learning framework
(versions come from package metadata); per-cell framework facts (threads, device
name) are recorded by the worker in each cell's ``runtime``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from harness import __version__
from harness.core.hw.cpuinfo import read_cpu
from harness.core.hw.nvml import open_nvml
from harness.core.hw.tpu import detect_tpu

FRAMEWORK_DISTS = (
    "torch", "tensorflow", "tensorflow-cpu", "keras", "numpy", "scipy", "torchao",
    "ai-edge-litert", "onnxruntime", "nvidia-ml-py", "psutil", "plotly",
)
ENV_VARS = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
    "OPENBLAS_CORETYPE", "KMP_AFFINITY", "TPU_NAME",
)


def git_info(path: Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the harness's own checkout (null outside git)."""
    root = path or Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return {"git_commit": None, "git_dirty": None}
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        )
        return {"git_commit": commit.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}


def harness_info() -> dict[str, Any]:
    return {"version": __version__, **git_info()}


def framework_versions() -> dict[str, str]:
    out = {}
    for dist in FRAMEWORK_DISTS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def memory_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # noqa: BLE001
        return None


def fingerprint(env: dict[str, Any]) -> str:
    """A short hash of the hardware identity (CPU model/flags/cores, memory, GPUs):
    equal fingerprints mean results are comparable machine-wise."""
    cpu = env.get("cpu", {})
    key = {
        "cpu": [cpu.get("model"), cpu.get("flags_dl"), cpu.get("logical_cores")],
        "mem_gib": round((env.get("memory_bytes") or 0) / 2**30),
        "gpus": [(g.get("name"), g.get("memory_bytes")) for g in env.get("gpus", [])],
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def collect_environment(cpuinfo: str | Path = "/proc/cpuinfo", nvml_module: Any = None) -> dict[str, Any]:
    """The environment block of a result file."""
    nv = open_nvml(nvml_module)
    try:
        gpus = nv.gpus()
    finally:
        nv.close()
    env: dict[str, Any] = {
        "host": socket.gethostname(),
        "os": {
            "system": platform.system(),
            "release": platform.release(),
            "platform": platform.platform(),
        },
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "cpu": read_cpu(cpuinfo),
        "memory_bytes": memory_bytes(),
        "gpus": gpus,
        "gpus_reason": None if gpus else (nv.reason or "NVML reports no GPUs"),
        "tpu": detect_tpu(),
        "frameworks": framework_versions(),
        "env_vars": {k: os.environ.get(k) for k in ENV_VARS},
    }
    env["fingerprint"] = fingerprint(env)
    return env
