#!/usr/bin/env python3
"""One-shot validation of every CUDA path of dl-harness on a machine with NVIDIA GPUs.

    python bench/gpu_check.py [--out docs/gpu-validation.md] [--json PATH] [--work DIR]
                              [--budget 450] [--jobs N] [--plan]

It runs, each in its own subprocess with its own timeout, through the real CLI or the
harness's own code (tiny/small sizes, short timing), and never lets one failure stop
the rest:

  a. ``harness run -b torch -d cuda``: every variant (``harness list variants``) x
     mlp/cnn/transformer (small) x inference/training. Per cell: status, p50, sustained
     throughput (``metrics.throughput_per_s``) equal to samples processed / the timed
     loop's wall time within 1 %, ``throughput_p50_per_s`` = batch / p50 within 1 %,
     ``timing.iters_per_sample == 1`` on CUDA (per-step events), ``runtime.precision``
     recorded with TF32 off except in the ``tf32`` variant, ``mfu <= 1``.
  b. the same for ``-b tensorflow -d cuda`` (SKIP with the reason if TF sees no GPU).
  c. NVML energy: the harness's own meters (total-energy counter and integrated power
     polling) side by side on one GPU load (agreement within 10 %), and
     ``metrics.energy`` of the CUDA cells (source NVML, joules > 0).
  d. device peak memory: ``TorchStep.device_peak_memory`` around a step that allocates
     1 GiB reads >= 1 GiB and < 1 GiB + 64 MiB; ``peak_device_mem_bytes`` on CUDA cells.
  e. data-parallel training at the visible GPU count: torchrun DDP (comm backend NCCL)
     and TensorFlow MirroredStrategy.
  f. ``harness calibrate -d cuda`` (short budget): fp32/tf32/bf16/fp16 peaks; then no
     cell's MFU exceeds 1 and at least one CUDA cell has an MFU.
  g. contention evidence (``timing.contention``) on every CUDA cell, and a cell run
     alone on the machine not flagged as contended.

Order: environment probes; then, alone on the GPU, the calibration, the NVML meter
comparison and one isolated cell (so peaks and the "not contended" check are clean);
then the cell sweep in ``--jobs`` concurrent lanes of ``harness run`` (one per backend
x workload x mode chunk, compile chunks first). Lanes share the GPU, so their
latencies are sanity figures, not benchmarks (and their cells are expected to show
contention evidence). A global deadline (``--budget`` seconds, default 450 = 7.5 min)
stops lanes cleanly (SIGTERM: the harness saves finished cells) and reports what did
not run.

Writes ``--out`` (Markdown: check | status | figures | notes, then one row per cell,
then the environment) and ``--json`` (the same as raw JSON; default: ``--out`` with
``.json``). Exit 0 when every check passes or is skipped, 1 when one fails. Without a
GPU it exits 0 saying so and writes nothing unless ``--out`` was given. The script
itself needs only the Python standard library; the harness's dependencies (torch with
CUDA, optionally tensorflow and nvidia-ml-py) must be installed in ``--python``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "docs" / "gpu-validation.md"

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
THROUGHPUT_TOL = 0.01  # sustained throughput vs samples processed / loop wall time
ENERGY_TOL = 0.10  # NVML energy counter vs integrated power polling
MEM_TENSOR_BYTES = 1 << 30  # the known allocation of check d
MEM_SLACK_BYTES = 64 << 20  # allocator rounding + anything else in the step
JSON_MARK = "GPU_CHECK_JSON:"
RESULT_TAG_PREFIX = "gpu-check/"
MAX_RESULT_BYTES = 256 << 20
FALLBACK_VARIANTS = ("fp32", "tf32", "fp16", "bf16", "int8-dynamic", "int8-static", "prune-unstructured",
                     "prune-structured", "distill", "compile")
WORKLOADS = ("mlp", "cnn", "transformer")
MODES = ("inference", "training")

# per-cell aspects; the check rows a/b/e read all but "contention" (row g)
ASPECTS = ("status", "throughput", "iters_per_sample", "precision", "mfu", "contention")


# --------------------------------------------------------------------------- small helpers


def _get(d: Any, path: str, default: Any = None) -> Any:
    """``d["a"]["b"]`` for ``path="a.b"``; ``default`` where any level is missing."""
    cur = d
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return default
        cur = cur[part]
    return cur


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v == 0:
            return "0"
        a = abs(v)
        if a >= 1e5 or a < 1e-3:
            return f"{v:.{digits}g}"
        return f"{v:,.{digits}f}" if a < 100 else f"{v:,.1f}"
    return str(v)


def _md(text: Any, limit: int = 400) -> str:
    """One Markdown table cell: no newlines, pipes escaped, bounded length."""
    s = " ".join(str(text if text is not None else "").split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("|", "\\|")


def _tail(text: str, n: int = 1500) -> str:
    return text if len(text) <= n else "…" + text[-n:]


class Budget:
    """The script's global deadline (monotonic seconds)."""

    def __init__(self, total_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.total_s, self.clock = float(total_s), clock
        self.t0 = clock()

    def elapsed(self) -> float:
        return self.clock() - self.t0

    def remaining(self) -> float:
        return self.total_s - self.elapsed()


_PRINT_LOCK = threading.Lock()
_START = time.monotonic()


def log(msg: str) -> None:
    with _PRINT_LOCK:
        print(f"[{time.monotonic() - _START:6.1f}s] {msg}", flush=True)


# --------------------------------------------------------------------------- subprocesses


@dataclass
class Proc:
    """What one subprocess did."""

    cmd: list[str]
    rc: int | None
    timed_out: bool
    wall_s: float
    output: str  # stdout and stderr together (tail kept in the report)
    log: str | None = None
    error: str | None = None  # could not start

    def json_payload(self) -> Any:
        """The last ``GPU_CHECK_JSON:`` line the probe printed, parsed (None if absent)."""
        for line in reversed(self.output.splitlines()):
            if line.startswith(JSON_MARK):
                try:
                    return json.loads(line[len(JSON_MARK):])
                except ValueError:
                    return None
        return None

    def brief(self) -> str:
        if self.error:
            return f"could not start: {self.error}"
        if self.timed_out:
            return f"timed out after {self.wall_s:.0f} s"
        return f"exit {self.rc} after {self.wall_s:.1f} s"


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    pp = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + pp if pp else "")
    if extra:
        env.update(extra)
    return env


def run_proc(cmd: Sequence[str], timeout_s: float, log_path: Path | None = None, cwd: Path | None = None,
             env: Mapping[str, str] | None = None, stdin_text: str | None = None, term_grace_s: float = 15.0) -> Proc:
    """Run ``cmd`` in its own process group with a timeout: SIGTERM to the group at the
    timeout (the harness then saves its finished cells), SIGKILL ``term_grace_s`` later.
    Output goes to ``log_path`` (or a pipe-free temp file), never blocks on a pipe."""
    import tempfile

    t0 = time.monotonic()
    timeout_s = max(1.0, float(timeout_s))
    own_log = log_path is None
    if own_log:
        fd, name = tempfile.mkstemp(prefix="gpu_check_", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    assert log_path is not None
    log_path.parent.mkdir(parents=True, exist_ok=True)
    timed_out = False
    rc: int | None = None
    err: str | None = None
    try:
        with open(log_path, "w", encoding="utf-8", errors="replace") as out:
            try:
                p = subprocess.Popen(list(cmd), cwd=str(cwd or REPO), env=dict(env) if env else child_env(),
                                     stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
                                     start_new_session=True, text=True)
            except OSError as e:
                err = f"{type(e).__name__}: {e}"
                p = None
            if p is not None:
                try:
                    if stdin_text is not None:
                        assert p.stdin is not None
                        try:
                            p.stdin.write(stdin_text)
                            p.stdin.close()
                        except OSError:
                            pass
                    rc = p.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    _signal_group(p, signal.SIGTERM)
                    try:
                        rc = p.wait(timeout=term_grace_s)
                    except subprocess.TimeoutExpired:
                        _signal_group(p, signal.SIGKILL)
                        rc = p.wait()
        text = log_path.read_text(encoding="utf-8", errors="replace")
    finally:
        if own_log:
            try:
                log_path.unlink()
            except OSError:
                pass
    return Proc(list(cmd), rc, timed_out, time.monotonic() - t0, text, None if own_log else str(log_path), err)


def _signal_group(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)  # its own session: the group is p and its children only
    except (ProcessLookupError, PermissionError, OSError):
        try:
            p.send_signal(sig)
        except OSError:
            pass


# --------------------------------------------------------------------------- GPU detection


def parse_smi_query(text: str) -> list[dict[str, Any]]:
    """Rows of ``nvidia-smi --query-gpu=index,name,uuid,driver_version,memory.total,
    compute_cap --format=csv,noheader,nounits`` (compute_cap optional)."""
    rows = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5 or not parts[0].isdigit():
            continue
        row: dict[str, Any] = {"index": int(parts[0]), "name": parts[1], "uuid": parts[2], "driver": parts[3]}
        try:
            row["memory_mib"] = int(float(parts[4]))
        except ValueError:
            row["memory_mib"] = None
        row["compute_capability"] = parts[5] if len(parts) > 5 and parts[5] not in ("", "[N/A]") else None
        rows.append(row)
    return rows


def detect_gpus(smi: str | None = None, timeout_s: float = 30.0) -> tuple[list[dict[str, Any]], str, str]:
    """(GPUs, how they were found or why none, raw nvidia-smi output). nvidia-smi
    first; NVML (the harness's adapter) as a fallback where nvidia-smi is absent."""
    smi = smi if smi is not None else shutil.which("nvidia-smi")
    why = []
    if smi:
        base = [smi, "--format=csv,noheader,nounits"]
        for fields in ("index,name,uuid,driver_version,memory.total,compute_cap",
                       "index,name,uuid,driver_version,memory.total"):
            p = run_proc(base[:1] + [f"--query-gpu={fields}"] + base[1:], timeout_s)
            gpus = parse_smi_query(p.output) if p.rc == 0 else []
            if gpus:
                full = run_proc([smi], timeout_s)
                return gpus, f"nvidia-smi: {len(gpus)} GPU(s)", full.output
            why.append(f"nvidia-smi --query-gpu: {p.brief()}: {_tail(p.output.strip(), 300) or 'no GPUs listed'}")
    else:
        why.append("nvidia-smi not found on PATH")
    try:
        sys.path.insert(0, str(REPO))
        from harness.core.hw.nvml import open_nvml

        nv = open_nvml()
        if nv.available:
            gpus = [{"index": g.get("nvml_index"), "name": g.get("name"), "uuid": g.get("uuid"),
                     "driver": g.get("driver"), "memory_mib": (g.get("memory_bytes") or 0) // (1 << 20) or None,
                     "compute_capability": g.get("compute_capability")} for g in nv.gpus()]
            nv.close()
            if gpus:
                return gpus, f"NVML: {len(gpus)} GPU(s) (nvidia-smi: {'; '.join(why)})", ""
            why.append("NVML: no GPUs")
        else:
            why.append(f"NVML: {nv.reason}")
    except Exception as e:  # noqa: BLE001 - detection never crashes the script
        why.append(f"NVML: {type(e).__name__}: {e}")
    return [], "; ".join(why), ""


# --------------------------------------------------------------------------- probes (run in subprocesses)

TORCH_PROBE = r"""
import json
out = {}
try:
    import torch
    out["torch"] = torch.__version__
    out["cuda_build"] = torch.version.cuda
    out["cuda_available"] = bool(torch.cuda.is_available())
    out["device_count"] = torch.cuda.device_count() if out["cuda_available"] else 0
    try:
        out["cudnn"] = torch.backends.cudnn.version()
    except Exception as e:
        out["cudnn"] = f"{type(e).__name__}: {e}"
    try:
        out["nccl"] = ".".join(str(x) for x in torch.cuda.nccl.version()) if out["cuda_available"] else None
    except Exception as e:
        out["nccl"] = f"{type(e).__name__}: {e}"
    out["tf32_defaults"] = {
        "torch.backends.cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "torch.backends.cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    devs = []
    for i in range(out["device_count"]):
        p = torch.cuda.get_device_properties(i)
        devs.append({"index": i, "name": p.name, "capability": f"{p.major}.{p.minor}",
                     "total_memory_bytes": int(p.total_memory), "multiprocessors": p.multi_processor_count,
                     "uuid": str(getattr(p, "uuid", "") or "")})
    out["devices"] = devs
    if not out["cuda_available"]:
        out["reason"] = ("torch built without CUDA" if not torch.version.cuda else
                         "torch.cuda.is_available() is False (driver/runtime mismatch or no visible GPU)")
except Exception as e:
    out["error"] = f"{type(e).__name__}: {e}"
print("GPU_CHECK_JSON:" + json.dumps(out, default=str))
"""

TF_PROBE = r"""
import json
out = {}
try:
    import tensorflow as tf
    out["tensorflow"] = tf.__version__
    try:
        bi = dict(tf.sysconfig.get_build_info())
        out["build"] = {k: bi.get(k) for k in ("cuda_version", "cudnn_version", "is_cuda_build", "cuda_compute_capabilities")}
    except Exception as e:
        out["build"] = f"{type(e).__name__}: {e}"
    gpus = tf.config.list_physical_devices("GPU")
    out["gpus"] = []
    for g in gpus:
        try:
            det = tf.config.experimental.get_device_details(g)
        except Exception as e:
            det = {"error": str(e)}
        out["gpus"].append({"name": g.name, "details": {k: str(v) for k, v in dict(det).items()}})
    try:
        out["tf32_execution_default"] = bool(tf.config.experimental.tensor_float_32_execution_enabled())
    except Exception as e:
        out["tf32_execution_default"] = f"{type(e).__name__}: {e}"
    try:
        import keras
        out["keras"] = keras.__version__
    except Exception:
        pass
    if not gpus:
        out["reason"] = "TensorFlow sees no GPU (" + ("CPU-only build" if not (out.get("build") or {}).get("is_cuda_build") else "CUDA build, but no GPU visible: driver/CUDA libraries?") + ")"
except Exception as e:
    out["error"] = f"{type(e).__name__}: {e}"
print("GPU_CHECK_JSON:" + json.dumps(out, default=str))
"""

HARNESS_PROBE = r"""
import json
out = {}
try:
    from harness.core import registry
    out["variants"] = registry.names("variant")
    out["workloads"] = registry.names("workload")
    out["backends"] = registry.names("backend")
    import harness
    out["version"] = getattr(harness, "__version__", None)
except Exception as e:
    out["error"] = f"{type(e).__name__}: {e}"
print("GPU_CHECK_JSON:" + json.dumps(out))
"""

# check d: a step that allocates (and frees) a tensor of known size, measured through
# the torch backend's own peak-memory path
MEMORY_PROBE = r"""
import contextlib, json, sys
out = {"nbytes": NBYTES}
try:
    import torch
    dev = torch.device("cuda:0")
    torch.zeros(1, device=dev)  # context up before the baseline
    torch.cuda.synchronize(dev)
    def fn():
        t = torch.empty(NBYTES, dtype=torch.uint8, device=dev)
        t.fill_(1)
        del t
    try:
        from harness.backends.torch_backend import TorchStep
        step = TorchStep(torch, dev, fn, contextlib.nullcontext, 0)
        out["path"] = "harness.backends.torch_backend.TorchStep.device_peak_memory"
    except Exception as e:
        step = None
        out["path"] = "torch.cuda.max_memory_allocated (TorchStep could not be built: %s: %s)" % (type(e).__name__, e)
    base = int(torch.cuda.memory_allocated(dev))
    if step is not None:
        step.reset_device_peak_memory()
        step.run(1)
        step.sync()
        peak, source = step.device_peak_memory()
        out["source"] = source
    else:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        fn()
        torch.cuda.synchronize(dev)
        peak = int(torch.cuda.max_memory_allocated(dev))
        out["source"] = "torch.cuda.max_memory_allocated"
    out["baseline_bytes"] = base
    out["peak_bytes"] = peak
    out["reserved_peak_bytes"] = int(torch.cuda.max_memory_reserved(dev))
    out["after_bytes"] = int(torch.cuda.memory_allocated(dev))
except Exception as e:
    import traceback
    out["error"] = f"{type(e).__name__}: {e}"
    out["traceback"] = traceback.format_exc()[-2000:]
print("GPU_CHECK_JSON:" + json.dumps(out))
"""

# check c: the harness's two NVML meters side by side on the same GPU load
ENERGY_PROBE = r"""
import json, os, sys, time
out = {"idle_s": IDLE_S, "load_s": LOAD_S, "tail_s": TAIL_S}
try:
    import torch
    dev = torch.device("cuda:0")
    torch.zeros(1, device=dev)
    try:
        uuid = str(torch.cuda.get_device_properties(0).uuid) or None
    except Exception:
        uuid = None
    from harness.core.hw.nvml import open_cuda_device
    from harness.collectors.energy import NvmlCounterMeter, NvmlPowerMeter, Sampler
    o1 = open_cuda_device(0, os.environ, uuid)
    o2 = open_cuda_device(0, os.environ, uuid)
    if isinstance(o1, str) or isinstance(o2, str):
        raise RuntimeError(o1 if isinstance(o1, str) else o2)
    nv1, h1, detail = o1
    nv2, h2, _ = o2
    out["device"] = detail
    out["power_limit_w"] = nv1.power_limit_w(h1)
    clock = time.perf_counter
    counter = Sampler(NvmlCounterMeter(nv1, h1, detail), 0.05, clock)
    power = Sampler(NvmlPowerMeter(nv2, h2, detail), 0.05, clock)
    counter.start(); power.start()
    time.sleep(IDLE_S)
    a = torch.randn(8192, 8192, device=dev)
    b = torch.randn(8192, 8192, device=dev)
    torch.cuda.synchronize(dev)
    t_load0 = clock()
    n = 0
    while clock() - t_load0 < LOAD_S:
        for _ in range(8):
            torch.mm(a, b)
        torch.cuda.synchronize(dev)
        n += 8
    t_load1 = clock()
    time.sleep(TAIL_S)
    counter.stop(); power.stop()
    def span(s, x, y):
        ea, eb = s.energy_at(x), s.energy_at(y)
        return None if ea is None or eb is None else eb - ea
    t0 = max(counter.t[0], power.t[0]); t1 = min(counter.t[-1], power.t[-1])
    out["window_s"] = t1 - t0
    out["counter_j"] = span(counter, t0, t1)
    out["power_sampling_j"] = span(power, t0, t1)
    out["load_window_s"] = t_load1 - t_load0
    out["load_counter_j"] = span(counter, t_load0, t_load1)
    out["load_power_sampling_j"] = span(power, t_load0, t_load1)
    out["matmuls"] = n
    out["tflops_achieved"] = 2 * 8192**3 * n / (t_load1 - t_load0) / 1e12
    out["reads"] = {"counter": len(counter.t), "power": len(power.t)}
    out["read_errors"] = (counter.errors + power.errors)[:5]
except Exception as e:
    import traceback
    out["error"] = f"{type(e).__name__}: {e}"
    out["traceback"] = traceback.format_exc()[-2000:]
print("GPU_CHECK_JSON:" + json.dumps(out))
"""


def run_probe(name: str, code: str, py: str, timeout_s: float, work: Path) -> tuple[dict[str, Any], Proc]:
    """Run a probe snippet in ``py`` (cwd = repo root); its JSON payload, or an
    ``error`` entry saying why there is none."""
    p = run_proc([py, "-"], timeout_s, log_path=work / "logs" / f"probe-{name}.log", stdin_text=code)
    payload = p.json_payload()
    if not isinstance(payload, dict):
        payload = {"error": f"probe {name}: no result ({p.brief()}): {_tail(p.output.strip(), 800)}"}
    return payload, p


# --------------------------------------------------------------------------- per-cell checks (pure)

_TF32_ON = {"tf32", "tensorfloat32", "tensorfloat-32", "tensor_float_32", "tensor-float-32"}
_OFF = {"ieee", "fp32", "float32", "highest", "strict", "off", "disabled", "false", "none"}
_SKIP_KEY_WORDS = ("reason", "note", "why", "description", "doc", "help")


def tf32_state(precision: Any) -> tuple[bool | None, list[str]]:
    """Whether a cell's ``runtime.precision`` record says TF32 was allowed for fp32
    matmuls/convolutions: True (any setting allows it), False (settings recorded and
    none allows it), None (nothing about TF32 recorded). Reads torch-style flags
    (``...allow_tf32: bool``, ``float32_matmul_precision: highest|high|medium``),
    TensorFlow's ``tensor_float_32_execution``, and tokens such as ``fp32_math: ieee|tf32``."""
    evidence: list[str] = []
    state = {"on": False, "seen": False}

    def classify(key: str, v: Any) -> None:
        k = key.lower()
        tf32_key = any(w in k for w in ("tf32", "tensor_float_32", "tensorfloat", "tensor_float32"))
        precision_key = tf32_key or any(w in k for w in ("matmul", "conv", "math", "precision", "float32", "fp32"))
        if isinstance(v, bool):
            if tf32_key:
                state["seen"] = True
                state["on"] |= v
                evidence.append(f"{key}={v}")
            return
        if not isinstance(v, str):
            return
        s = v.strip().lower()
        if "matmul_precision" in k:
            state["seen"] = True
            state["on"] |= s in ("high", "medium")
            evidence.append(f"{key}={v}")
        elif s in _TF32_ON and precision_key:
            state["seen"] = True
            state["on"] = True
            evidence.append(f"{key}={v}")
        elif tf32_key and s in ("on", "true", "enabled", "allowed"):
            state["seen"] = True
            state["on"] = True
            evidence.append(f"{key}={v}")
        elif precision_key and s in _OFF:
            state["seen"] = True
            evidence.append(f"{key}={v}")

    def walk(obj: Any, path: list[str]) -> None:
        if isinstance(obj, Mapping):
            for k, v in obj.items():
                if any(w in str(k).lower() for w in _SKIP_KEY_WORDS):
                    continue
                walk(v, path + [str(k)])
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, path + [str(i)])
        else:
            classify(".".join(path), obj)

    walk(precision, [])
    return (state["on"] if state["seen"] else None), evidence


def global_batch(cell: Mapping[str, Any]) -> int | None:
    gbs = _num(_get(cell, "metrics.distributed.global_batch_size"))
    if gbs:
        return int(gbs)
    bs = _num(_get(cell, "spec.batch_size"))
    if not bs:
        return None
    return int(bs) * int(_get(cell, "spec.world_size") or 1)


def check_cell(cell: Mapping[str, Any], require_cuda_fields: bool = True) -> dict[str, Any]:
    """Verdict on one result cell: ``status`` PASS / FAIL / SKIP, ``problems``
    (list of ``{aspect, message}``, see :data:`ASPECTS`) and ``figures``.

    A field the harness should have written but did not is a problem named
    ``field missing: <path>`` (never a crash)."""
    spec = cell.get("spec") or {}
    device = str(spec.get("device", ""))
    variant = str(spec.get("variant", ""))
    cuda = device.startswith("cuda")
    out: dict[str, Any] = {
        "id": cell.get("id") or "/".join(str(spec.get(k)) for k in ("workload", "backend", "device", "variant", "mode")),
        "workload": spec.get("workload"), "backend": spec.get("backend"), "device": device, "variant": variant,
        "mode": spec.get("mode"), "batch_size": spec.get("batch_size"), "world_size": spec.get("world_size"),
        "cell_status": cell.get("status"), "status": PASS, "problems": [], "figures": {},
    }
    problems: list[dict[str, str]] = out["problems"]
    fig: dict[str, Any] = out["figures"]

    def problem(aspect: str, message: str) -> None:
        problems.append({"aspect": aspect, "message": message})

    status = cell.get("status")
    if status == "skipped":
        out["status"] = SKIP
        out["reason"] = cell.get("reason") or "skipped without a reason"
        return out
    if status != "ok":
        out["status"] = FAIL
        err = cell.get("error") or {}
        tail = err.get("stderr_tail") or err.get("traceback") or ""
        out["reason"] = str(cell.get("reason") or f"status {status!r}")
        if tail:
            out["error_tail"] = _tail(str(tail), 1500)
        problem("status", f"cell {status}: {out['reason']}")
        return out

    m = cell.get("metrics") or {}
    t = cell.get("timing") or {}
    rt = cell.get("runtime") or {}

    # -- latency and throughput
    p50 = _num(_get(m, "latency_ms.p50"))
    fig["p50_ms"] = p50
    if p50 is None:
        problem("throughput", "field missing: metrics.latency_ms.p50")
    thr = _num(m.get("throughput_per_s"))
    fig["throughput_per_s"] = thr
    gbs = global_batch(cell)
    samples, ips = _num(t.get("samples")), _num(t.get("iters_per_sample"))
    steps = _num(t.get("steps_timed")) or (samples * ips if samples is not None and ips is not None else None)
    wall = _num(t.get("loop_wall_s"))
    fig["steps_timed"] = steps
    fig["loop_wall_s"] = wall
    if thr is None:
        problem("throughput", "field missing: metrics.throughput_per_s")
    elif wall is None:
        problem("throughput", "field missing: timing.loop_wall_s")
    elif steps is None:
        problem("throughput", "field missing: timing.samples / timing.iters_per_sample")
    elif not gbs:
        problem("throughput", "field missing: spec.batch_size")
    elif wall <= 0:
        problem("throughput", f"timing.loop_wall_s is {wall}")
    else:
        expected = steps * gbs / wall
        ratio = thr / expected if expected > 0 else float("inf")
        fig["throughput_over_wall_ratio"] = ratio
        if abs(ratio - 1) > THROUGHPUT_TOL:
            problem("throughput", f"throughput_per_s {thr:.6g}/s is {ratio:.4f}x samples processed / loop wall time "
                                  f"({steps:g} steps x {gbs} / {wall:.4g} s = {expected:.6g}/s); tolerance "
                                  f"{THROUGHPUT_TOL:.0%}")
    thr50 = _num(m.get("throughput_p50_per_s"))
    fig["throughput_p50_per_s"] = thr50
    if thr50 is None:
        problem("throughput", "field missing: metrics.throughput_p50_per_s")
    elif p50 and gbs:
        r50 = thr50 / (gbs * 1e3 / p50)
        fig["throughput_p50_ratio"] = r50
        if abs(r50 - 1) > THROUGHPUT_TOL:
            problem("throughput", f"throughput_p50_per_s is {r50:.4f}x batch / p50")

    # -- per-step timing on CUDA
    fig["iters_per_sample"] = int(ips) if ips is not None and ips == int(ips) else ips
    fig["clock"] = t.get("clock")
    fig["sampling"] = t.get("sampling")
    if ips is None:
        problem("iters_per_sample", "field missing: timing.iters_per_sample")
    elif cuda and require_cuda_fields and ips != 1:
        problem("iters_per_sample", f"timing.iters_per_sample = {ips:g} on a CUDA cell (per-step events expected: 1)")

    # -- precision / TF32
    if "precision" not in rt or rt.get("precision") in (None, {}, ""):
        problem("precision", "field missing: runtime.precision")
        fig["tf32"] = None
    else:
        on, evidence = tf32_state(rt["precision"])
        fig["tf32"] = on
        fig["precision"] = rt["precision"]
        warning = rt["precision"].get("warning") if isinstance(rt["precision"], Mapping) else None
        if warning:
            problem("precision", f"runtime.precision warning: {warning}")
        if on is None:
            problem("precision", f"runtime.precision records no TF32 setting: {json.dumps(rt['precision'])[:200]}")
        elif variant == "tf32" and not on:
            problem("precision", f"tf32 variant but TF32 off ({', '.join(evidence)})")
        elif variant != "tf32" and on and cuda:
            problem("precision", f"TF32 on in a {variant!r} cell: fp32 must be strict IEEE ({', '.join(evidence)})")

    # -- MFU
    mfu = _num(m.get("mfu"))
    fig["mfu"] = mfu
    if mfu is not None and mfu > 1:
        problem("mfu", f"mfu {mfu:.3f} > 1 (peak dtype {m.get('mfu_peak_dtype')})")
    if mfu is None:
        fig["mfu_reason"] = (cell.get("unavailable") or {}).get("mfu")

    # -- contention evidence
    cont = t.get("contention")
    if not isinstance(cont, Mapping):
        problem("contention", "field missing: timing.contention")
        fig["contended"] = None
    elif "detected" not in cont:
        problem("contention", "field missing: timing.contention.detected")
        fig["contended"] = None
    else:
        fig["contended"] = bool(cont.get("detected"))
        reasons = cont.get("reasons")
        fig["contention_reasons"] = [str(r)[:300] for r in reasons][:6] if isinstance(reasons, list) else reasons

    # -- figures read by other checks
    e = m.get("energy") or {}
    fig["energy_source"] = e.get("source")
    fig["energy_j"] = _num(e.get("energy_j"))
    fig["avg_power_w"] = _num(e.get("avg_power_w"))
    fig["energy_reason"] = e.get("reason")
    fig["peak_device_mem_bytes"] = _num(m.get("peak_device_mem_bytes"))
    fig["peak_device_mem_reason"] = (cell.get("unavailable") or {}).get("peak_device_mem_bytes")
    fig["params"] = _num(m.get("params"))
    fig["comm_backend"] = _get(m, "distributed.comm_backend")
    fig["scaling_efficiency"] = _num(_get(m, "distributed.scaling_efficiency"))
    fig["precision_method"] = rt.get("precision_method")
    if problems:
        out["status"] = FAIL
    return out


def summarise_result(doc: Mapping[str, Any], device_prefix: str = "cuda") -> list[dict[str, Any]]:
    """:func:`check_cell` for every cell of a result document on ``device_prefix``
    (each summary also carries the run's tag and id)."""
    out = []
    for cell in doc.get("cells") or []:
        if not isinstance(cell, Mapping):
            continue
        if not str(_get(cell, "spec.device", "")).startswith(device_prefix):
            continue
        try:
            s = check_cell(cell, require_cuda_fields=device_prefix.startswith("cuda"))
        except Exception as e:  # noqa: BLE001 - an unexpected record is a finding, not a crash
            s = {"id": str(cell.get("id")), "backend": _get(cell, "spec.backend"), "variant": _get(cell, "spec.variant"),
                 "workload": _get(cell, "spec.workload"), "mode": _get(cell, "spec.mode"),
                 "world_size": _get(cell, "spec.world_size"), "device": _get(cell, "spec.device"),
                 "cell_status": cell.get("status"), "status": FAIL, "figures": {},
                 "problems": [{"aspect": "status", "message": f"could not check this cell: {type(e).__name__}: {e}"}]}
        s["run_tag"] = doc.get("tag")
        s["run_id"] = doc.get("run_id")
        out.append(s)
    return out


def _aspect_problems(s: Mapping[str, Any], aspects: Iterable[str]) -> list[str]:
    wanted = set(aspects)
    return [p["message"] for p in s.get("problems", []) if p.get("aspect") in wanted]


# --------------------------------------------------------------------------- check rows (pure)


def row(cid: str, name: str, status: str, figures: str = "", notes: str = "", **details: Any) -> dict[str, Any]:
    return {"id": cid, "check": name, "status": status, "figures": figures, "notes": notes, "details": details}


def cells_check(cid: str, name: str, summaries: list[dict[str, Any]], aspects: Iterable[str] = ASPECTS[:-1],
                skip_reason: str | None = None, incomplete: Sequence[str] = ()) -> dict[str, Any]:
    """One row for a group of cells: FAIL if any cell has a problem in ``aspects``,
    none ran, or a lane did not finish (``incomplete``: its cells are not validated);
    SKIP with ``skip_reason`` when the group was not run."""
    if skip_reason:
        return row(cid, name, SKIP, notes=skip_reason)
    aspects = tuple(aspects)
    ok = [s for s in summaries if s.get("cell_status") == "ok"]
    skipped = [s for s in summaries if s.get("status") == SKIP]
    failed_cells = [s for s in summaries if s.get("cell_status") not in ("ok", "skipped")]
    bad = [(s, _aspect_problems(s, aspects)) for s in summaries]
    bad = [(s, msgs) for s, msgs in bad if msgs]
    ratios = [s["figures"].get("throughput_over_wall_ratio") for s in ok]
    ratios = [r for r in ratios if r is not None]
    mfus = [s["figures"].get("mfu") for s in ok if s["figures"].get("mfu") is not None]
    figs = [f"{len(ok)} ok, {len(skipped)} skipped, {len(failed_cells)} failed"]
    if ratios:
        figs.append(f"throughput / (steps x batch / wall) {min(ratios):.4f}–{max(ratios):.4f}")
    if mfus:
        figs.append(f"MFU max {max(mfus):.3f}")
    tf32 = [s for s in ok if s["figures"].get("tf32") is not None]
    if tf32:
        figs.append(f"TF32 recorded on {len(tf32)}/{len(ok)}")
    notes = []
    for s, msgs in bad[:12]:
        notes.append(f"{s['id']}: {'; '.join(msgs)[:300]}")
    if len(bad) > 12:
        notes.append(f"... and {len(bad) - 12} more cells with problems (see the cell table)")
    reasons: dict[str, int] = {}
    for s in skipped:
        reasons[str(s.get("reason"))[:160]] = reasons.get(str(s.get("reason"))[:160], 0) + 1
    for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:6]:
        notes.append(f"skipped x{n}: {r}")
    notes.extend(incomplete)
    if not ok:
        notes.insert(0, "no cell ran")
    # a cell that did not run (time budget, lane crash) is not validated
    status = FAIL if bad or incomplete or not ok else PASS
    return row(cid, name, status, "; ".join(figs), " · ".join(notes),
               cells=len(summaries), ok=len(ok), skipped=len(skipped), failed=len(failed_cells))


def energy_probe_check(payload: Mapping[str, Any] | None, tol: float = ENERGY_TOL) -> dict[str, Any]:
    """Row c1: the NVML energy counter against integrated power polling on one load."""
    name = "c. NVML energy counter vs integrated power polling"
    if not payload:
        return row("c1", name, SKIP, notes="not run")
    if payload.get("error"):
        return row("c1", name, FAIL, notes=str(payload["error"])[:600], probe=dict(payload))
    c, p = _num(payload.get("counter_j")), _num(payload.get("power_sampling_j"))
    if c is None or p is None or c <= 0:
        return row("c1", name, FAIL, notes=f"no energy figures (counter {c}, power sampling {p})", probe=dict(payload))
    rel = abs(p - c) / c
    lc, lp = _num(payload.get("load_counter_j")), _num(payload.get("load_power_sampling_j"))
    ws = _num(payload.get("window_s")) or 0
    figs = (f"counter {c:.1f} J vs power polling {p:.1f} J over {ws:.1f} s (diff {rel:.1%}, tol {tol:.0%}); "
            f"avg {c / ws:.0f} W" if ws else f"counter {c:.1f} J vs power polling {p:.1f} J (diff {rel:.1%})")
    notes = []
    if lc and lp and payload.get("load_window_s"):
        notes.append(f"load window only: {lc:.1f} vs {lp:.1f} J ({abs(lp - lc) / lc:.1%}; power polling lags the "
                     f"driver's ~1 s average) at {_num(payload.get('tflops_achieved')) or 0:.0f} TFLOP/s fp32 matmul")
    if payload.get("device"):
        notes.append(str(payload["device"]))
    if payload.get("read_errors"):
        notes.append(f"read errors: {payload['read_errors']}")
    return row("c1", name, PASS if rel <= tol else FAIL, figs, " · ".join(notes), probe=dict(payload), rel_diff=rel)


def energy_cells_check(summaries: list[dict[str, Any]], isolated: dict[str, Any] | None) -> dict[str, Any]:
    """Row c2: every ok CUDA cell's ``metrics.energy`` comes from NVML with joules > 0."""
    name = "c. metrics.energy on CUDA cells (NVML)"
    ok = [s for s in summaries if s.get("cell_status") == "ok"]
    if not ok:
        return row("c2", name, SKIP, notes="no CUDA cell ran")
    sources: dict[str, int] = {}
    bad = []
    for s in ok:
        f = s["figures"]
        src = str(f.get("energy_source"))
        sources[src] = sources.get(src, 0) + 1
        if not src.startswith("nvml") or not (f.get("energy_j") or 0) > 0:
            bad.append(f"{s['id']}: source {src}, energy_j {f.get('energy_j')} ({f.get('energy_reason')})")
    figs = ", ".join(f"{k} x{v}" for k, v in sorted(sources.items()))
    notes = []
    if isolated and isolated.get("cell_status") == "ok":
        f = isolated["figures"]
        notes.append(f"isolated cell {isolated['id']}: {_fmt(f.get('energy_j'))} J, {_fmt(f.get('avg_power_w'))} W "
                     f"avg over {_fmt(f.get('loop_wall_s'))} s ({f.get('energy_source')})")
    notes.extend(bad[:8])
    return row("c2", name, FAIL if bad else PASS, figs, " · ".join(notes), sources=sources)


def memory_check(payload: Mapping[str, Any] | None, nbytes: int = MEM_TENSOR_BYTES,
                 slack: int = MEM_SLACK_BYTES) -> dict[str, Any]:
    """Row d1: peak over a step that allocates ``nbytes`` (minus the allocation
    before the reset) is in [nbytes, nbytes + slack)."""
    name = f"d. device peak memory of a step allocating {nbytes / 2**30:g} GiB"
    if not payload:
        return row("d1", name, SKIP, notes="not run")
    if payload.get("error"):
        return row("d1", name, FAIL, notes=str(payload["error"])[:600], probe=dict(payload))
    peak, base = _num(payload.get("peak_bytes")), _num(payload.get("baseline_bytes")) or 0
    if peak is None:
        return row("d1", name, FAIL, notes="no peak reading", probe=dict(payload))
    added = peak - base
    ok = nbytes <= added < nbytes + slack
    figs = (f"peak {peak / 2**20:,.1f} MiB (baseline {base / 2**20:,.1f} MiB): +{added / 2**20:,.1f} MiB for a "
            f"{nbytes / 2**20:,.0f} MiB tensor (pass: [{nbytes / 2**20:,.0f}, {(nbytes + slack) / 2**20:,.0f}) MiB)")
    notes = f"via {payload.get('path')} ({payload.get('source')}); reserved peak " \
            f"{(_num(payload.get('reserved_peak_bytes')) or 0) / 2**20:,.0f} MiB"
    if not str(payload.get("path", "")).startswith("harness.backends.torch_backend"):
        ok = False
        notes = "the harness's TorchStep path was not used: " + notes
    return row("d1", name, PASS if ok else FAIL, figs, notes, probe=dict(payload))


def memory_cells_check(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Row d2: ``peak_device_mem_bytes`` is measured on every ok CUDA cell, and for
    fp32 cells at least the fp32 weights."""
    name = "d. peak_device_mem_bytes on CUDA cells"
    ok = [s for s in summaries if s.get("cell_status") == "ok"]
    if not ok:
        return row("d2", name, SKIP, notes="no CUDA cell ran")
    bad = []
    for s in ok:
        f = s["figures"]
        peak = f.get("peak_device_mem_bytes")
        if peak is None:
            bad.append(f"{s['id']}: null ({f.get('peak_device_mem_reason')})")
        elif s.get("variant") == "fp32" and f.get("params") and s.get("backend") == "torch" and peak < 4 * f["params"]:
            bad.append(f"{s['id']}: {peak:.0f} B < fp32 weights {4 * f['params']:.0f} B")
    peaks = [s["figures"]["peak_device_mem_bytes"] for s in ok if s["figures"].get("peak_device_mem_bytes")]
    figs = f"{len(ok) - len(bad)}/{len(ok)} cells plausible" + (
        f"; {min(peaks) / 2**20:,.1f}–{max(peaks) / 2**20:,.1f} MiB" if peaks else "")
    return row("d2", name, FAIL if bad else PASS, figs, " · ".join(bad[:10]))


def ddp_check(cid: str, name: str, summaries: list[dict[str, Any]], world_size: int, want_comm: str | None,
              skip_reason: str | None = None, incomplete: Sequence[str] = ()) -> dict[str, Any]:
    """Rows e: the data-parallel cell at ``world_size`` ran (ok), passes the cell
    checks, and (torch) used ``want_comm``."""
    if skip_reason:
        return row(cid, name, SKIP, notes=skip_reason)
    base = cells_check(cid, name, summaries, incomplete=incomplete)
    at_n = [s for s in summaries if s.get("world_size") == world_size]
    notes = [base["notes"]] if base["notes"] else []
    status = base["status"]
    figs = [base["figures"]]
    if not at_n:
        status = FAIL
        notes.insert(0, f"no cell at world size {world_size}")
    for s in at_n:
        f = s["figures"]
        comm = f.get("comm_backend")
        figs.append(f"ws {world_size}: {s['cell_status']}, comm {comm}, {_fmt(f.get('throughput_per_s'))} samples/s"
                    + (f", scaling efficiency {f['scaling_efficiency']:.2f}" if f.get("scaling_efficiency") else ""))
        if s.get("cell_status") != "ok":
            status = FAIL
        elif want_comm and want_comm not in str(comm or "").lower():
            status = FAIL
            notes.insert(0, f"comm backend {comm!r}, expected {want_comm}")
    return row(cid, name, status, "; ".join(x for x in figs if x), " · ".join(notes))


CAL_DTYPES = ("fp32", "tf32", "bf16", "fp16")
CHECK_NAMES = (
    ("a", "a. torch CUDA cells: every variant x workload x mode"),
    ("b", "b. TensorFlow CUDA cells: every variant x workload x mode"),
    ("c1", "c. NVML energy counter vs integrated power polling"),
    ("c2", "c. metrics.energy on CUDA cells (NVML)"),
    ("d1", "d. device peak memory of a step allocating 1 GiB"),
    ("d2", "d. peak_device_mem_bytes on CUDA cells"),
    ("e1", "e. torchrun DDP at the GPU count (NCCL)"),
    ("e2", "e. TensorFlow MirroredStrategy at the GPU count"),
    ("f1", "f. harness calibrate -d cuda: peaks"),
    ("f2", "f. MFU <= 1 on CUDA cells (against the calibration)"),
    ("g1", "g. timing.contention recorded on CUDA cells"),
    ("g2", "g. a cell run alone is not flagged as contended"),
)


def calibration_check(doc: Mapping[str, Any] | None, device: str = "cuda:0", proc_note: str = "") -> dict[str, Any]:
    """Row f1: the stored calibration of ``device`` has a peak for every dtype in
    :data:`CAL_DTYPES`."""
    name = "f. harness calibrate -d cuda: peaks"
    if not doc:
        return row("f1", name, FAIL, notes=f"no calibration file written. {proc_note}")
    info = _get(doc, "devices", {}).get(device) if isinstance(_get(doc, "devices"), Mapping) else None
    if not isinstance(info, Mapping):
        return row("f1", name, FAIL, notes=f"calibration has no {device} entry (devices: "
                                              f"{list((doc.get('devices') or {}).keys())}). {proc_note}")
    peaks = info.get("peak_flops_per_s") or {}
    missing = [d for d in CAL_DTYPES if not _num(peaks.get(d))]
    figs = ", ".join(f"{d} {peaks[d] / 1e12:,.1f} TFLOP/s" for d in CAL_DTYPES if _num(peaks.get(d)))
    bw = _num(info.get("mem_bandwidth_bytes_per_s"))
    if bw:
        figs += f"; copy bandwidth {bw / 1e9:,.0f} GB/s"
    notes = []
    if missing:
        unav = info.get("unavailable") or {}
        notes.append("missing: " + ", ".join(f"{d} ({unav.get(d, 'field missing')})" for d in missing))
    if info.get("device_name"):
        notes.append(str(info["device_name"]))
    if proc_note:
        notes.append(proc_note)
    return row("f1", name, FAIL if missing else PASS, figs, " · ".join(notes), peaks=dict(peaks))


def mfu_check(summaries: list[dict[str, Any]], calibrated: bool) -> dict[str, Any]:
    """Row f2: no CUDA cell has MFU > 1, and with a calibration at least one has one."""
    name = "f. MFU <= 1 on CUDA cells (against the calibration)"
    ok = [s for s in summaries if s.get("cell_status") == "ok"]
    if not ok:
        return row("f2", name, SKIP, notes="no CUDA cell ran")
    with_mfu = [s for s in ok if s["figures"].get("mfu") is not None]
    over = [s for s in with_mfu if s["figures"]["mfu"] > 1]
    notes = [f"{s['id']}: MFU {s['figures']['mfu']:.3f}" for s in over[:8]]
    figs = f"{len(with_mfu)}/{len(ok)} cells have an MFU"
    if with_mfu:
        top = max(with_mfu, key=lambda s: s["figures"]["mfu"])
        figs += f"; max {top['figures']['mfu']:.3f} ({top['id']})"
    status = FAIL if over else PASS
    if not with_mfu:
        reasons = {str(s["figures"].get("mfu_reason"))[:150] for s in ok}
        notes.append("no cell has an MFU: " + "; ".join(sorted(reasons))[:500])
        status = FAIL if calibrated else SKIP
    return row("f2", name, status, figs, " · ".join(notes))


def contention_check(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Row g1: ``timing.contention`` present on every ok CUDA cell."""
    name = "g. timing.contention recorded on CUDA cells"
    ok = [s for s in summaries if s.get("cell_status") == "ok"]
    if not ok:
        return row("g1", name, SKIP, notes="no CUDA cell ran")
    missing = [s for s in ok if _aspect_problems(s, ("contention",))]
    flagged = [s for s in ok if s["figures"].get("contended")]
    figs = f"present on {len(ok) - len(missing)}/{len(ok)}; detected on {len(flagged)} (lanes share the GPU)"
    notes = [f"{s['id']}: {'; '.join(_aspect_problems(s, ('contention',)))}" for s in missing[:5]]
    ev = next((s["figures"].get("contention_reasons") for s in flagged if s["figures"].get("contention_reasons")), None)
    if ev:
        notes.append("example reasons: " + json.dumps(ev, default=str)[:500])
    return row("g1", name, FAIL if missing else PASS, figs, " · ".join(notes))


def isolated_contention_check(isolated: dict[str, Any] | None) -> dict[str, Any]:
    """Row g2: the cell run alone on the machine is not flagged as contended."""
    name = "g. a cell run alone is not flagged as contended"
    if not isolated:
        return row("g2", name, SKIP, notes="isolated cell did not run")
    if isolated.get("cell_status") != "ok":
        return row("g2", name, FAIL, notes=f"{isolated['id']}: {isolated.get('reason')}")
    f = isolated["figures"]
    if f.get("contended") is None:
        return row("g2", name, FAIL, notes="field missing: timing.contention")
    ev = json.dumps(f.get("contention_reasons"), default=str)[:600]
    return row("g2", name, FAIL if f["contended"] else PASS, f"{isolated['id']}: detected {f['contended']}",
               f"reasons: {ev}")


# --------------------------------------------------------------------------- planning


@dataclass
class Chunk:
    """One ``harness run`` invocation (a lane's unit of work)."""

    name: str
    group: str  # torch | tensorflow | ddp-torch | ddp-tensorflow | isolated
    suite: dict[str, Any]
    priority: int = 50  # lower starts first
    cells: int = 0
    outcome: dict[str, Any] = field(default_factory=dict)


def lane_settings(size: str, min_time_s: float, cell_timeout_s: float, threads: int | None,
                  idle_baseline_s: float = 0.0, warmup_max_s: float = 1.0) -> dict[str, Any]:
    s: dict[str, Any] = {"size": size, "min_time_s": min_time_s, "timeout_s": cell_timeout_s,
                         "warmup_max_s": warmup_max_s, "min_samples": 10, "idle_baseline_s": idle_baseline_s}
    if threads:
        s["threads"] = threads
    return s


def plan_chunks(variants: Sequence[str], workloads: Sequence[str], backends: Sequence[str], modes: Sequence[str],
                world_size: int, settings: Mapping[str, Any], compile_timeout_s: float,
                device: str = "cuda", ddp: bool = True) -> list[Chunk]:
    """The sweep as chunks: compile cells per (backend, workload) first (the long
    poles), then data-parallel cells, then every other variant per (backend,
    workload, mode). int8 training cells are excluded (inference-only variants)."""
    chunks: list[Chunk] = []
    plain = [v for v in variants if v != "compile"]
    int8 = [v for v in plain if v.startswith("int8")]
    for b in backends:
        for w in workloads:
            if "compile" in variants:
                st = dict(settings, timeout_s=max(float(settings.get("timeout_s", 0)), compile_timeout_s))
                chunks.append(Chunk(f"{b}-{w}-compile", b, _suite(f"{b}-{w}-compile", st, {
                    "workload": [w], "backend": [b], "device": [device], "variant": ["compile"], "mode": list(modes)}),
                    priority=10, cells=len(modes)))
            for mode in modes:
                vs = [v for v in plain if not (mode == "training" and v in int8)]
                if not vs:
                    continue
                chunks.append(Chunk(f"{b}-{w}-{mode}", b, _suite(f"{b}-{w}-{mode}", settings, {
                    "workload": [w], "backend": [b], "device": [device], "variant": vs, "mode": [mode]}),
                    priority=(30 if b == "torch" else 40) + (0 if w == "transformer" else 1), cells=len(vs)))
    if ddp and "training" in modes:
        sizes = sorted({1, max(1, world_size)})
        for b in backends:
            chunks.append(Chunk(f"ddp-{b}", f"ddp-{b}", _suite(f"ddp-{b}", settings, {
                "workload": ["mlp"], "backend": [b], "device": [device], "variant": ["fp32"], "mode": ["training"],
                "world_size": sizes}), priority=20, cells=len(sizes)))
    chunks.sort(key=lambda c: (c.priority, c.name))
    return chunks


def _suite(name: str, settings: Mapping[str, Any], matrix: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": f"gpu-check-{name}", "description": "bench/gpu_check.py lane", "settings": dict(settings),
            "matrix": dict(matrix)}


def write_suite(chunk: Chunk, directory: Path) -> Path:
    """The chunk's suite file (JSON is valid YAML; the harness reads it with its
    safe YAML loader and schema)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{chunk.name}.yaml"
    path.write_text(json.dumps(chunk.suite, indent=1))
    return path


def harness_cmd(py: str, *args: str) -> list[str]:
    return [py, "-m", "harness", *args]


def run_chunk(chunk: Chunk, py: str, work: Path, results_dir: Path, budget: Budget, reserve_s: float,
              min_start_s: float = 20.0) -> dict[str, Any]:
    """Run one chunk through ``harness run --suite`` under the remaining budget; never raises."""
    try:
        return _run_chunk(chunk, py, work, results_dir, budget, reserve_s, min_start_s)
    except Exception as e:  # noqa: BLE001 - one lane's trouble never stops the others
        chunk.outcome = {"started": False, "note": f"could not run: {type(e).__name__}: {e}"}
        log(f"chunk {chunk.name}: {chunk.outcome['note']}")
        return chunk.outcome


def _run_chunk(chunk: Chunk, py: str, work: Path, results_dir: Path, budget: Budget, reserve_s: float,
               min_start_s: float) -> dict[str, Any]:
    remaining = budget.remaining() - reserve_s
    if remaining < min_start_s:
        chunk.outcome = {"started": False, "note": f"not started: time budget exhausted ({budget.remaining():.0f} s left)"}
        log(f"chunk {chunk.name}: not started (budget)")
        return chunk.outcome
    suite_path = write_suite(chunk, work / "suites")
    cmd = harness_cmd(py, "run", "--suite", str(suite_path), "--out", str(results_dir),
                      "--tag", RESULT_TAG_PREFIX + chunk.name, "--no-progress")
    log(f"chunk {chunk.name}: start ({chunk.cells} cell(s), up to {remaining:.0f} s)")
    p = run_proc(cmd, remaining, log_path=work / "logs" / f"run-{chunk.name}.log")
    result = None
    for line in reversed(p.output.splitlines()):
        if line.startswith("result: "):
            result = line[len("result: "):].strip()
            break
    chunk.outcome = {"started": True, "rc": p.rc, "timed_out": p.timed_out, "wall_s": round(p.wall_s, 1),
                     "result": result, "log": p.log, "output_tail": _tail(p.output, 2500) if p.rc not in (0, 1) else
                     _tail(p.output, 600)}
    if p.timed_out:
        chunk.outcome["note"] = f"stopped at the time budget after {p.wall_s:.0f} s (finished cells kept)"
    elif p.rc not in (0, 1):
        chunk.outcome["note"] = f"harness run {p.brief()}"
    log(f"chunk {chunk.name}: {p.brief()}")
    return chunk.outcome


def load_results(results_dir: Path) -> list[dict[str, Any]]:
    """Every gpu-check result document in ``results_dir`` (bad files skipped)."""
    docs = []
    for f in sorted(results_dir.glob("*.json")):
        try:
            if f.stat().st_size > MAX_RESULT_BYTES:
                continue
            doc = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and str(doc.get("tag") or "").startswith(RESULT_TAG_PREFIX):
            doc["_path"] = str(f)
            docs.append(doc)
    return docs


# --------------------------------------------------------------------------- report


def render_markdown(report: Mapping[str, Any]) -> str:
    """The Markdown report: header, check table, per-cell table, environment."""
    L: list[str] = []
    L.append("# GPU validation of dl-harness (`bench/gpu_check.py`)")
    L.append("")
    meta = report.get("meta", {})
    if not report.get("gpu_found"):
        L.append("**The check did not run on GPU hardware**: " + _md(report.get("no_gpu_reason", "no GPU found"), 800))
        L.append("")
    L.append(f"- Run: {meta.get('started')} → {meta.get('finished')} ({meta.get('duration_s', 0):.0f} s, budget "
             f"{meta.get('budget_s', 0):.0f} s), host `{meta.get('host')}`, dl-harness commit `{meta.get('git_commit')}`"
             f"{' (dirty)' if meta.get('git_dirty') else ''}")
    L.append(f"- Command: `{_md(meta.get('command'), 600)}`")
    if meta.get("lanes"):
        L.append(f"- Cells ran in {meta['lanes']} concurrent lanes sharing the GPU (size {meta.get('size')}, "
                 f"--min-time {meta.get('min_time_s')} s): their latencies are sanity figures, not benchmarks. "
                 "Calibration, the NVML meter comparison and the isolated cell ran alone.")
    counts = report.get("counts") or {}
    if counts:
        L.append(f"- Checks: {counts.get(PASS, 0)} PASS, {counts.get(FAIL, 0)} FAIL, {counts.get(SKIP, 0)} SKIP")
    L.append("")
    L.append("## Checks")
    L.append("")
    L.append("| check | status | figures | notes |")
    L.append("|---|---|---|---|")
    for r in report.get("checks", []):
        L.append(f"| {_md(r['check'], 120)} | **{r['status']}** | {_md(r.get('figures'), 500)} | "
                 f"{_md(r.get('notes'), 1500)} |")
    cells = report.get("cells") or []
    if cells:
        L.append("")
        L.append("## Cells")
        L.append("")
        L.append("Throughput ratio: `throughput_per_s` / (steps timed x global batch / `timing.loop_wall_s`) "
                 f"(must be within {THROUGHPUT_TOL:.0%} of 1). TF32: from `runtime.precision`.")
        L.append("")
        L.append("| cell | lane | status | p50 ms | samples/s | ratio | iters/sample | TF32 | MFU | peak dev MiB | "
                 "energy J (source) | contended | problems / reason |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for s in cells:
            f = s.get("figures") or {}
            probs = "; ".join(p["message"] for p in s.get("problems", [])) or s.get("reason") or ""
            pk = f.get("peak_device_mem_bytes")
            ratio = f.get("throughput_over_wall_ratio")
            L.append("| " + " | ".join([
                _md(s["id"], 120), _md(str(s.get("run_tag") or "").replace(RESULT_TAG_PREFIX, ""), 40),
                s["status"] if s["status"] != PASS else "ok",
                _fmt(f.get("p50_ms")), _fmt(f.get("throughput_per_s")),
                f"{ratio:.4f}" if ratio is not None else "—", _fmt(f.get("iters_per_sample")),
                {True: "on", False: "off", None: "—"}[f.get("tf32")], _fmt(f.get("mfu")),
                f"{pk / 2**20:,.1f}" if pk else "—",
                f"{_fmt(f.get('energy_j'))} ({f.get('energy_source') or '—'})" if f.get("energy_source") else "—",
                _fmt(f.get("contended")), _md(probs, 400),
            ]) + " |")
    chunks = report.get("chunks") or []
    if chunks:
        L.append("")
        L.append("## Lanes")
        L.append("")
        L.append("| chunk | cells | outcome |")
        L.append("|---|---|---|")
        for c in chunks:
            o = c.get("outcome") or {}
            desc = o.get("note") or (f"exit {o.get('rc')} after {o.get('wall_s')} s" if o.get("started") else "—")
            L.append(f"| {_md(c['name'])} | {c.get('cells')} | {_md(desc, 300)} |")
    env = report.get("environment") or {}
    L.append("")
    L.append("## Environment")
    L.append("")
    for g in env.get("gpus") or []:
        L.append(f"- GPU {g.get('index')}: {g.get('name')}, compute capability {g.get('compute_capability')}, "
                 f"{g.get('memory_mib')} MiB, driver {g.get('driver')}")
    tp = env.get("torch") or {}
    if tp:
        L.append(f"- torch {tp.get('torch')} (CUDA {tp.get('cuda_build')}, cuDNN {tp.get('cudnn')}, NCCL "
                 f"{tp.get('nccl')}); cuda available: {tp.get('cuda_available')}, {tp.get('device_count')} device(s)"
                 + (f"; {tp.get('error') or tp.get('reason')}" if tp.get("error") or tp.get("reason") else ""))
        for d in tp.get("devices") or []:
            L.append(f"  - cuda:{d.get('index')}: {d.get('name')}, capability {d.get('capability')}, "
                     f"{(d.get('total_memory_bytes') or 0) / 2**30:.1f} GiB, {d.get('multiprocessors')} SMs")
        if tp.get("tf32_defaults"):
            L.append(f"  - torch TF32 defaults in a fresh process: `{json.dumps(tp['tf32_defaults'])}`")
    tfp = env.get("tensorflow") or {}
    if tfp:
        L.append(f"- tensorflow {tfp.get('tensorflow')} (build {json.dumps(tfp.get('build'), default=str)}), "
                 f"GPUs seen: {len(tfp.get('gpus') or [])}, TF32 execution default "
                 f"{tfp.get('tf32_execution_default')}"
                 + (f"; {tfp.get('error') or tfp.get('reason')}" if tfp.get("error") or tfp.get("reason") else ""))
    hp = env.get("harness") or {}
    if hp:
        L.append(f"- dl-harness {hp.get('version')}: variants {', '.join(hp.get('variants') or []) or '—'}"
                 + (f"; {hp['error']}" if hp.get("error") else ""))
    L.append(f"- Python {env.get('python')} on {env.get('platform')}, {env.get('cpu_count')} CPUs")
    if env.get("nvidia_smi"):
        L.append("")
        L.append("```text")
        L.append(str(env["nvidia_smi"]).rstrip()[:6000])
        L.append("```")
    L.append("")
    L.append("Raw figures: the JSON file written next to this one (`--json`).")
    L.append("")
    return "\n".join(L)


def write_outputs(report: dict[str, Any], md_path: Path | None, json_path: Path | None) -> None:
    """Write the Markdown and JSON reports atomically (temp file + rename)."""
    for path, text in ((md_path, render_markdown(report) if md_path else ""),
                       (json_path, json.dumps(report, indent=1, default=str) if json_path else "")):
        if path is None:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        log(f"wrote {path}")


def _git(*args: str) -> str | None:
    try:
        p = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
        return p.stdout.strip() if p.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def base_meta(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    return {
        "started": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": platform.node(), "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain")),
        "command": " ".join(["python", "bench/gpu_check.py", *argv]), "budget_s": args.budget,
        "size": args.size, "min_time_s": args.min_time, "python_executable": args.python,
    }


def count_statuses(checks: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts = {PASS: 0, FAIL: 0, SKIP: 0}
    for c in checks:
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    return counts


# --------------------------------------------------------------------------- main


def _csv(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help=f"Markdown report (default {DEFAULT_OUT.relative_to(REPO)}; "
                                                "without a GPU nothing is written unless --out is given)")
    ap.add_argument("--json", default=None, help="raw JSON results (default: --out with .json)")
    ap.add_argument("--work", default=None, help="work directory: suites, logs, result files, calibration "
                                                 "(default results/gpu-check/<UTC time>)")
    ap.add_argument("--budget", type=float, default=450.0, help="global deadline in seconds (default 450)")
    ap.add_argument("--jobs", type=int, default=None, help="concurrent harness-run lanes (default min(6, CPUs // 2))")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads per lane cell (default 2; 0 = framework)")
    ap.add_argument("--size", default="small", help="size preset of the sweep (default small)")
    ap.add_argument("--min-time", type=float, default=0.3, help="minimum timed seconds per cell (default 0.3)")
    ap.add_argument("--cell-timeout", type=float, default=150.0, help="per-cell timeout in seconds (default 150)")
    ap.add_argument("--compile-timeout", type=float, default=300.0, help="per-cell timeout of compile cells")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list (default mlp,cnn,transformer)")
    ap.add_argument("--variants", default="", help="comma list (default: every registered variant)")
    ap.add_argument("--backends", default="torch,tensorflow", help="comma list (default torch,tensorflow)")
    ap.add_argument("--modes", default=",".join(MODES), help="comma list (default inference,training)")
    ap.add_argument("--calibrate-budget", type=float, default=0.25, help="harness calibrate --budget (default 0.25)")
    ap.add_argument("--python", default=sys.executable, help="Python with dl-harness installed (default: this one)")
    ap.add_argument("--plan", action="store_true", help="print the lanes that would run and exit")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                    help="device of the cells, calibration and isolated cell (default cuda; cpu only exercises "
                         "this script's plumbing on a machine without a GPU, with --assume-gpu)")
    ap.add_argument("--assume-gpu", action="store_true",
                    help="run the checks even where no GPU is detected (they then fail or skip with the reasons; "
                         "for testing this script)")
    return ap.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    global _START
    _START = time.monotonic()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    os.environ["PYTHONUNBUFFERED"] = "1"
    out_given = args.out is not None
    md_path = Path(args.out) if out_given else DEFAULT_OUT
    json_path = Path(args.json) if args.json else md_path.with_suffix(".json")
    jobs = args.jobs or max(1, min(6, (os.cpu_count() or 2) // 2))

    if args.plan:
        variants = _csv(args.variants) or list(FALLBACK_VARIANTS)
        chunks = plan_chunks(variants, _csv(args.workloads), _csv(args.backends), _csv(args.modes), 1,
                             lane_settings(args.size, args.min_time, args.cell_timeout, args.threads or None),
                             args.compile_timeout)
        print(f"{len(chunks)} chunks in {jobs} lanes (plus probes, calibration, NVML/memory probes, isolated cell):")
        for c in chunks:
            print(f"  {c.name:32} {c.cells:3d} cell(s)  priority {c.priority}")
        return 0

    log("gpu_check: looking for NVIDIA GPUs")
    gpus, how, smi_text = detect_gpus()
    if not gpus and args.assume_gpu:
        how = f"--assume-gpu given, but no GPU was detected ({how})"
        log(how)
    elif gpus:
        log(f"found {how}: " + ", ".join(f"{g.get('name')} (cc {g.get('compute_capability')})" for g in gpus))
    else:
        msg = (f"gpu_check: no NVIDIA GPU found ({how}); nothing to validate. "
               + (f"Writing the no-GPU report to {md_path}." if out_given else
                  f"{DEFAULT_OUT.relative_to(REPO)} left unchanged."))
        print(msg, flush=True)
        if out_given:
            meta = base_meta(args, argv)
            meta["finished"], meta["duration_s"] = meta["started"], 0
            checks = [row(cid, name, SKIP, notes="no GPU on this machine") for cid, name in CHECK_NAMES]
            report = {"schema": "gpu_check/1", "gpu_found": False, "no_gpu_reason": how, "meta": meta,
                      "checks": checks, "counts": count_statuses(checks), "cells": [], "environment": _host_env()}
            write_outputs(report, md_path, json_path)
        return 0
    report: dict[str, Any] = {"schema": "gpu_check/1", "gpu_found": True, "meta": base_meta(args, argv),
                              "checks": [], "cells": [], "chunks": [], "environment": _host_env()}
    report["environment"].update(gpus=gpus, gpu_detection=how, nvidia_smi=smi_text)
    try:
        run_all(args, report, jobs)
    except BaseException as e:  # noqa: BLE001 - whatever happens, the report is written
        import traceback

        report["checks"].append(row("script", "gpu_check.py itself", FAIL,
                                    notes=f"{type(e).__name__}: {e} — {_tail(traceback.format_exc(), 1200)}"))
        if isinstance(e, KeyboardInterrupt):
            report["meta"]["interrupted"] = True
    report["meta"]["finished"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    report["meta"]["duration_s"] = round(time.monotonic() - _START, 1)
    report["counts"] = count_statuses(report["checks"])
    write_outputs(report, md_path, json_path)
    c = report["counts"]
    log(f"done: {c[PASS]} PASS, {c[FAIL]} FAIL, {c[SKIP]} SKIP in {report['meta']['duration_s']} s")
    for r in report["checks"]:
        print(f"  {r['status']:4}  {r['check']}: {r['figures'][:160]}", flush=True)
    return 1 if c[FAIL] else 0


def _host_env() -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "env_vars": {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER",
                                                        "NVIDIA_VISIBLE_DEVICES", "OMP_NUM_THREADS")}}


def run_all(args: argparse.Namespace, report: dict[str, Any], jobs: int) -> None:
    """Every check, in order (see module doc). Each step records its own outcome."""
    budget = Budget(args.budget)
    py = args.python
    work = Path(args.work) if args.work else REPO / "results" / "gpu-check" / _dt.datetime.now(
        _dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    work.mkdir(parents=True, exist_ok=True)
    results_dir = work / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    report["meta"]["work_dir"] = str(work)
    report["meta"]["lanes"] = jobs
    checks: list[dict[str, Any]] = report["checks"]
    env = report["environment"]

    # -- 0. environment probes, concurrently
    log("probing torch, tensorflow and dl-harness (subprocesses)")
    with ThreadPoolExecutor(max_workers=4) as ex:
        f_torch = ex.submit(run_probe, "torch", TORCH_PROBE, py, 120, work)
        f_tf = ex.submit(run_probe, "tensorflow", TF_PROBE, py, 150, work) if "tensorflow" in _csv(
            args.backends) else None
        f_h = ex.submit(run_probe, "harness", HARNESS_PROBE, py, 60, work)
        f_env = ex.submit(run_proc, harness_cmd(py, "env", "--json"), 60, work / "logs" / "harness-env.log")
        smi = shutil.which("nvidia-smi")
        f_topo = ex.submit(run_proc, [smi, "topo", "-m"], 20) if smi and len(env.get("gpus") or []) > 1 else None
        torch_info, _ = f_torch.result()
        tf_info = f_tf.result()[0] if f_tf else {"reason": "tensorflow not in --backends"}
        h_info, _ = f_h.result()
        penv = f_env.result()
        if f_topo:
            env["nvidia_smi_topo"] = f_topo.result().output[:4000]
    env.update(torch=torch_info, tensorflow=tf_info, harness=h_info)
    try:
        env["harness_env"] = json.loads(penv.output[penv.output.index("{"):])
    except ValueError:
        env["harness_env"] = {"error": f"harness env --json: {penv.brief()}: {_tail(penv.output, 500)}"}
    log(f"torch: {torch_info.get('torch')} cuda={torch_info.get('cuda_available')} "
        f"devices={torch_info.get('device_count')}; tensorflow: {tf_info.get('tensorflow')} "
        f"gpus={len(tf_info.get('gpus') or [])}; harness variants: {h_info.get('variants')}")

    dev = args.device
    cuda = dev == "cuda"
    backends_asked = _csv(args.backends)
    harness_ok = not h_info.get("error") and bool(h_info.get("variants"))
    torch_ok = bool(torch_info.get("cuda_available")) if cuda else "torch" in torch_info and not torch_info.get("error")
    tf_ok = (bool(tf_info.get("gpus")) if cuda else "tensorflow" in tf_info) and not tf_info.get("error")
    torch_why = None if torch_ok else (f"torch cannot use {dev}: {torch_info.get('error') or torch_info.get('reason')}")
    tf_why = None if tf_ok else (tf_info.get("error") or tf_info.get("reason") or "TensorFlow sees no GPU")
    checks.append(row("env", "environment: harness importable, torch and TensorFlow see the GPU",
                      PASS if harness_ok and torch_ok else FAIL,
                      f"torch {torch_info.get('torch')} CUDA {torch_info.get('cuda_build')} "
                      f"({torch_info.get('device_count')} dev); TF {tf_info.get('tensorflow')} "
                      f"({len(tf_info.get('gpus') or [])} GPU)",
                      " · ".join(x for x in (
                          None if harness_ok else f"dl-harness not usable in {py}: {h_info.get('error')}",
                          torch_why, f"tensorflow: {tf_why}" if tf_why else None) if x)))
    if not harness_ok:
        return
    registered = h_info.get("variants") or []
    variants = [v for v in (_csv(args.variants) or registered) if v in registered]
    missing_v = [v for v in _csv(args.variants) if v not in registered]
    if missing_v:
        checks.append(row("variants", "requested variants registered", FAIL, notes=f"unknown: {missing_v}"))
    workloads = [w for w in _csv(args.workloads) if w in (h_info.get("workloads") or [])]
    modes = [m for m in _csv(args.modes) if m in MODES]
    gpu_count = (int(torch_info.get("device_count") or 0) or len(env.get("gpus") or []) or 1) if cuda else 1
    threads = args.threads or None
    names = dict(CHECK_NAMES)

    def safe(cid: str, fn: Callable[[], dict[str, Any]]) -> None:
        try:
            checks.append(fn())
        except Exception as e:  # noqa: BLE001 - one check's bug never hides the others
            checks.append(row(cid, names.get(cid, cid), FAIL, notes=f"gpu_check.py could not decide: "
                                                                  f"{type(e).__name__}: {e}"))

    # -- 1. alone on the GPU: calibration, NVML meters, memory, one isolated cell
    cal_doc = None
    if torch_ok:
        log(f"calibrate -d {dev} (alone on the machine)")
        cal_dir = results_dir / "calibration"
        p = run_proc(harness_cmd(py, "calibrate", "-d", dev, "--budget", str(args.calibrate_budget),
                                 "--out", str(cal_dir)), min(150, max(30, budget.remaining() - 200)),
                     work / "logs" / "calibrate.log")
        for f in sorted(cal_dir.glob("*.json")):
            try:
                cal_doc = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
        note = "" if p.rc == 0 else f"harness calibrate {p.brief()}: {_tail(p.output, 600)}"
        safe("f1", lambda: calibration_check(cal_doc, "cuda:0" if cuda else "cpu", note))
        log(f"calibrate: {p.brief()}")
    else:
        checks.append(row("f1", names["f1"], FAIL, notes=torch_why or ""))
    if torch_ok and cuda:
        log("NVML energy counter vs power polling (alone on the GPU, ~8 s)")
        code = ENERGY_PROBE.replace("IDLE_S", "1.0").replace("LOAD_S", "5.0").replace("TAIL_S", "1.5")
        payload, p = run_probe("energy", code, py, 90, work)
        safe("c1", lambda: energy_probe_check(payload))
        log(f"energy probe: {p.brief()}")
        log("device peak memory of a 1 GiB allocation")
        payload, p = run_probe("memory", MEMORY_PROBE.replace("NBYTES", str(MEM_TENSOR_BYTES)), py, 90, work)
        safe("d1", lambda: memory_check(payload))
        log(f"memory probe: {p.brief()}")
    else:
        why = torch_why or f"CUDA only (--device {dev})"
        checks.append(row("c1", names["c1"], FAIL if cuda else SKIP, notes=why))
        checks.append(row("d1", names["d1"], FAIL if cuda else SKIP, notes=why))

    iso_chunks: list[Chunk] = []
    settings = lane_settings(args.size, args.min_time, args.cell_timeout, threads)
    if torch_ok and "torch" in backends_asked:
        iso = Chunk("isolated", "torch", _suite("isolated", lane_settings(
            args.size, 2.0, args.cell_timeout, None, idle_baseline_s=0.5, warmup_max_s=2.0), {
            "workload": ["mlp"], "backend": ["torch"], "device": [dev], "variant": ["fp32"],
            "mode": ["training"]}), cells=1)
        log(f"isolated cell (alone on the machine): mlp/torch/{dev}/fp32/training, 2 s timed")
        run_chunk(iso, py, work, results_dir, budget, reserve_s=15)
        iso_chunks.append(iso)

    # -- 2. the sweep, in lanes
    backends = [b for b in backends_asked if b in (h_info.get("backends") or [])]
    skip_backend: dict[str, str] = {}
    for b in backends_asked:
        if b not in backends:
            skip_backend[b] = f"backend {b!r} is not registered"
    if "torch" in backends and not torch_ok:
        skip_backend["torch"] = torch_why or "torch cannot use CUDA"
    if "tensorflow" in backends and not tf_ok:
        skip_backend["tensorflow"] = f"TensorFlow sees no GPU: {tf_why}" if cuda else f"TensorFlow: {tf_why}"
    run_backends = [b for b in backends if b not in skip_backend]
    chunks = plan_chunks(variants, workloads, run_backends, modes, gpu_count, settings, args.compile_timeout,
                         device=dev)
    log(f"sweep: {len(chunks)} chunks, {sum(c.cells for c in chunks)} cells, {jobs} lanes, "
        f"{budget.remaining():.0f} s left")
    with ThreadPoolExecutor(max_workers=jobs) as ex:
        list(ex.map(lambda c: run_chunk(c, py, work, results_dir, budget, reserve_s=15), chunks))
    chunks = iso_chunks + chunks
    report["chunks"] = [asdict(c) for c in chunks]

    # -- 3. read the results, decide
    summaries: list[dict[str, Any]] = []
    not_run: dict[str, list[str]] = {}
    for d in load_results(results_dir):
        summaries.extend(summarise_result(d, dev))
        if d.get("not_run"):
            not_run[str(d.get("tag"))] = [str(x) for x in d["not_run"]]
    summaries.sort(key=lambda s: (s.get("run_tag") != RESULT_TAG_PREFIX + "isolated", str(s.get("backend")),
                                  str(s.get("workload")), str(s.get("mode")), str(s.get("variant")),
                                  s.get("world_size") or 0))
    report["cells"] = summaries
    tag_group = {RESULT_TAG_PREFIX + c.name: c.group for c in chunks}

    def incomplete_for(group: str) -> list[str]:
        out = []
        for c in chunks:
            o = c.outcome or {}
            if c.group == group and (not o.get("started") or o.get("timed_out") or o.get("note")):
                nr = not_run.get(RESULT_TAG_PREFIX + c.name)
                out.append(f"lane {c.name}: {o.get('note', 'not run')}" + (f"; not run: {', '.join(nr)}" if nr else ""))
        return out

    def group(g: str) -> list[dict[str, Any]]:
        return [s for s in summaries if tag_group.get(str(s.get("run_tag"))) == g]

    def skip_for(backend: str) -> str | None:
        if backend not in backends_asked:
            return f"{backend} not in --backends"
        return skip_backend.get(backend)

    isolated_summary = next((s for s in summaries if s.get("run_tag") == RESULT_TAG_PREFIX + "isolated"), None)

    def row_a() -> dict[str, Any]:
        if "torch" in skip_backend:  # torch is the point of this script: not seeing the GPU is a failure
            return row("a", names["a"], FAIL, notes=skip_backend["torch"])
        return cells_check("a", names["a"], group("torch"), skip_reason=skip_for("torch"),
                           incomplete=incomplete_for("torch"))

    safe("a", row_a)
    safe("b", lambda: cells_check("b", names["b"], group("tensorflow"), skip_reason=skip_for("tensorflow"),
                                  incomplete=incomplete_for("tensorflow")))
    safe("c2", lambda: energy_cells_check(summaries, isolated_summary) if cuda else
         row("c2", names["c2"], SKIP, notes=f"CUDA only (--device {dev})"))
    safe("d2", lambda: memory_cells_check(summaries) if cuda else
         row("d2", names["d2"], SKIP, notes=f"CUDA only (--device {dev})"))
    safe("e1", lambda: ddp_check("e1", f"e. torchrun DDP at world size {gpu_count} ({'NCCL' if cuda else 'gloo'})",
                                 group("ddp-torch"), gpu_count, "nccl" if cuda else "gloo",
                                 skip_reason=skip_for("torch"), incomplete=incomplete_for("ddp-torch")))
    safe("e2", lambda: ddp_check("e2", f"e. TensorFlow MirroredStrategy at world size {gpu_count}",
                                 group("ddp-tensorflow"), gpu_count, None, skip_reason=skip_for("tensorflow"),
                                 incomplete=incomplete_for("ddp-tensorflow")))
    safe("f2", lambda: mfu_check(summaries, calibrated=cal_doc is not None))
    safe("g1", lambda: contention_check(summaries))
    safe("g2", lambda: isolated_contention_check(isolated_summary))
    elapsed = time.monotonic() - _START
    checks.append(row("time", "whole check under 8 minutes", PASS if elapsed < 480 else FAIL,
                      f"{elapsed:.0f} s (budget {args.budget:.0f} s)",
                      "; ".join(x for g in ("torch", "tensorflow", "ddp-torch", "ddp-tensorflow")
                                for x in incomplete_for(g))[:800]))
    order_ids = ["env", "variants", "a", "b", "c1", "c2", "d1", "d2", "e1", "e2", "f1", "f2", "g1", "g2", "time"]
    checks.sort(key=lambda r: order_ids.index(r["id"]) if r["id"] in order_ids else 99)


if __name__ == "__main__":
    raise SystemExit(main())
