"""The cell vocabulary every layer shares: what a cell is, what it is run with, what it
records and how it travels between processes.

* :class:`TaskSpec` -- the identity of one cell (the grouping key across runs);
* :class:`Settings` -- run-wide settings (not part of a cell's identity), with the
  bounds of every numeric setting (:data:`LIMITS`);
* the cell record -- :func:`empty_cell` (every field present) and :func:`failed_cell`
  (a record the launcher writes for a cell that produced none of its own: a timeout, a
  crash, an unreadable message);
* the one JSON encoding of records and messages (:func:`json_default`, :func:`dumps_message`);
* the worker -> parent message (:data:`MESSAGE_VERSION`, :func:`write_message`,
  :func:`read_message`) and the parent -> worker request (:func:`write_request`,
  :func:`read_request`), written atomically with :mod:`harness.core.fsutil`.

Data flows one way: suite -> cells -> launcher -> worker -> result store. This module
imports nothing of the harness but :mod:`harness.api` (the modes) and
:mod:`harness.core.fsutil`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from harness.api import MODES
from harness.core.fsutil import atomic_write_text

MESSAGE_VERSION = 1  # version of the worker -> parent message

__all__ = [
    "TaskSpec", "Settings", "Limit", "LIMITS", "SETTING_LIMITS", "DAY_S", "check_limit",
    "MESSAGE_VERSION", "SLO_METRICS", "parse_slo", "format_slo", "empty_cell", "failed_cell", "json_default", "dumps_message",
    "write_message", "read_message", "write_request", "read_request",
]


# ----------------------------------------------------------------------------- identity

@dataclass(frozen=True, order=True)
class TaskSpec:
    """The identity of one benchmark cell: the grouping key across runs."""

    workload: str
    backend: str
    device: str
    variant: str
    mode: str
    batch_size: int
    size: str
    # data-parallel training with this many workers (torchrun processes / strategy
    # replicas); None: an ordinary single-process cell. ``batch_size`` is then the
    # per-worker batch, the global batch is ``world_size * batch_size``.
    world_size: int | None = None
    # generate cells only: prompt tokens and generated tokens per request
    prompt_len: int | None = None
    gen_len: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose from: {', '.join(MODES)}")
        if self.mode == "generate":
            for name, low in (("prompt_len", 1), ("gen_len", 2)):
                v = getattr(self, name)
                if isinstance(v, bool) or not isinstance(v, int) or v < low:
                    raise ValueError(f"a generate cell needs {name} >= {low}, got {v!r}")
        elif self.prompt_len is not None or self.gen_len is not None:
            raise ValueError("prompt_len and gen_len apply to generate cells only")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.world_size is not None:
            if isinstance(self.world_size, bool) or not isinstance(self.world_size, int) or self.world_size < 1:
                raise ValueError(f"world_size must be a positive integer, got {self.world_size!r}")
            if self.mode != "training":
                raise ValueError("world_size applies to training cells only (data-parallel training)")

    @property
    def id(self) -> str:
        base = (
            f"{self.workload}/{self.backend}/{self.device}/{self.variant}/"
            f"{self.mode}/bs{self.batch_size}/{self.size}"
        )
        if self.mode == "generate":
            base = f"{base}/p{self.prompt_len}g{self.gen_len}"
        return base if self.world_size is None else f"{base}/ws{self.world_size}"

    @property
    def global_batch_size(self) -> int:
        """Samples per step over all workers."""
        return self.batch_size * (self.world_size or 1)

    def to_dict(self) -> dict[str, Any]:
        """The spec as stored in results; ``world_size`` only for data-parallel cells
        (so single-process cells keep the shape every earlier result file has)."""
        d = dataclasses.asdict(self)
        for key in ("world_size", "prompt_len", "gen_len"):
            if d[key] is None:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TaskSpec":
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in d:
                kw[f.name] = d[f.name]
            elif f.default is dataclasses.MISSING:
                raise KeyError(f.name)
        return cls(**kw)


# ----------------------------------------------------------------------------- settings and their limits


@dataclass(frozen=True)
class Limit:
    """The allowed values of one numeric setting: an integer or a finite number in
    [``low``, ``high``] (``(low, high]`` with ``low_open``). The upper bounds are far
    beyond any real run; they exist so that a typo or a hostile file is refused when it
    is loaded instead of failing (or running for years) hours later."""

    low: float
    high: float
    integer: bool = False
    low_open: bool = False
    unit: str = ""  # shown after the bounds, e.g. "s"
    note: str = ""  # the upper bound in words, e.g. "24 h"
    nullable: bool = False  # null (None) allowed: the framework's default

    def describe(self, symbols: bool = False, with_null: bool = True) -> str:
        """What is allowed, in words (``a positive integer <= 1,000``, ``a positive
        number <= 86400 s (24 h)``) or with ``symbols`` (``>= 1 and <= 1,000``; the
        schema's messages, where the type is already checked)."""
        unit = f" {self.unit}" if self.unit else ""
        note = f" ({self.note})" if self.note else ""
        num = (lambda x: f"{x:,}") if self.integer else (lambda x: f"{x:g}")
        if symbols:
            text = f"{'>' if self.low_open else '>='} {num(self.low)} and <= {num(self.high)}{unit}{note}"
        elif self.low == (0 if self.low_open else 1) and (self.integer or self.low_open):
            text = f"a positive {'integer' if self.integer else 'number'} <= {num(self.high)}{unit}{note}"
        else:
            text = f"{'an integer' if self.integer else 'a number'} from {num(self.low)} to {num(self.high)}{unit}{note}"
        return text + (" or null" if self.nullable and with_null else "")


DAY_S = 24 * 3600
LAUNCH_MODES = ("auto", "fork", "process")  # Settings.launch (docs/launch.md)
# One table for every numeric setting of a suite file, the matching `harness run` flags
# and Settings built in code; documented in the README ("Suites").
LIMITS: dict[str, Limit] = {
    "min_time_s": Limit(0, DAY_S, low_open=True, unit="s", note="24 h"),
    "timeout_s": Limit(0, 7 * DAY_S, low_open=True, unit="s", note="7 days"),
    "warmup_max_s": Limit(0, DAY_S, unit="s", note="24 h"),
    "idle_baseline_s": Limit(0, 3600, unit="s", note="1 h"),
    # --precision: target half-width of the median's 95% CI, percent of the median
    "precision": Limit(0, 50, low_open=True, unit="%", nullable=True),
    # with a precision target: timed seconds after which it is given up (null: 10 x min_time_s)
    "max_time_s": Limit(0, DAY_S, low_open=True, unit="s", note="24 h", nullable=True),
    "min_samples": Limit(1, 10_000_000, integer=True),
    "seed": Limit(0, 2**32 - 1, integer=True),  # numpy's seeds are unsigned 32-bit
    "repeats": Limit(1, 1000, integer=True),
    "threads": Limit(1, 4096, integer=True, nullable=True),
    "worker_threads": Limit(1, 4096, integer=True, nullable=True),
    "nnodes": Limit(1, 4096, integer=True),
    # matrix / exclude axes (checked in suite_schema and expand, not in Settings)
    "batch_size": Limit(1, 2**20, integer=True),
    "world_size": Limit(1, 65536, integer=True),
    "prompt_len": Limit(1, 1_048_576, integer=True),
    "gen_len": Limit(2, 1_048_576, integer=True),
}
SETTING_LIMITS = ("min_time_s", "timeout_s", "warmup_max_s", "idle_baseline_s", "min_samples", "seed", "repeats",
                  "threads", "worker_threads", "nnodes", "precision", "max_time_s")


def parse_precision(value: Any) -> Any:
    """A precision setting as given (``2``, ``2.5``, ``"2%"``, ``"2 %"``) -> percent as a
    number; anything else is returned unchanged for :func:`check_limit` to refuse."""
    if isinstance(value, str):
        text = value.strip()
        text = text[:-1].strip() if text.endswith("%") else text
        try:
            return float(text)
        except ValueError:
            return value
    return value


def check_limit(name: str, value: Any, symbols: bool = False) -> str | None:
    """None when ``value`` is allowed for the setting ``name`` (:data:`LIMITS`: a
    finite number within its bounds), else ``must be <what is allowed>, got <value>``
    (:meth:`Limit.describe`)."""
    lim = LIMITS[name]
    if value is None and lim.nullable:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and lim.integer:
        ok = isinstance(value, int)
    if ok and isinstance(value, float):
        ok = math.isfinite(value)
    if ok:  # ints compare exactly, however big (no float conversion)
        ok = (value > lim.low if lim.low_open else value >= lim.low) and value <= lim.high
    return None if ok else f"must be {lim.describe(symbols)}, got {_show(value)}"


def _show(value: Any) -> str:
    """A value for an error message; a huge integer as its digit count, not 400 digits."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**15:
        return f"a {len(str(abs(value)))}-digit integer"
    return repr(value)


@dataclass(frozen=True)
class Settings:
    """Run-wide settings (not part of a cell's identity)."""

    size: str = "small"
    min_time_s: float = 1.0
    timeout_s: float = 600.0
    threads: int | None = None
    warmup_max_s: float = 3.0
    min_samples: int = 10
    seed: int = 0
    energy_estimate: bool = False  # allow a labelled energy estimate where nothing is measurable
    idle_baseline_s: float = 0.5  # idle power baseline before each cell (where energy is measurable)
    tpu: str | None = None  # TPU name / grpc:// address / 'local' for -d tpu (None: TPU_NAME)
    # data-parallel (world_size) cells with torchrun: passed through to its rendezvous
    nnodes: int = 1  # machines taking part; world_size must be a multiple of it
    rdzv_endpoint: str | None = None  # HOST:PORT of the rendezvous (None with nnodes 1: --standalone)
    rdzv_id: str | None = None  # job id shared by all nodes (None: derived from the cell)
    rdzv_backend: str = "c10d"
    # intra-op threads per CPU data-parallel worker (None: set by the runner to the
    # cores / the largest number of workers per node in the run; recorded)
    worker_threads: int | None = None
    # each cell is measured in this many separate worker processes, interleaved in a
    # randomised order across the suite (randomised multiple interleaved trials), so
    # one result file carries its own run-to-run noise (cell["repeats"])
    repeats: int = 1
    # how each cell's process starts (docs/launch.md): "auto" forks it from a per-backend
    # zygote where that is safe, "fork" also where the framework's import left threads
    # running, "process" always starts a fresh worker process
    launch: str = "auto"
    # stop sampling when the median's 95% CI half-width is within this percent of the
    # median (None: sample for min_time_s, as always); "2%" or 2 in a suite file
    precision: float | None = None
    # with a precision target: give up after this many timed seconds (None: 10 x min_time_s)
    max_time_s: float | None = None
    # generate cells: service-level objectives per request, "ttft_ms=500,tpot_ms=50"
    # (parse_slo); the cell reports goodput, the share of requests meeting every one
    slo: str | None = None

    def __post_init__(self) -> None:
        if self.slo is not None:
            object.__setattr__(self, "slo", format_slo(parse_slo(self.slo)))
        if isinstance(self.precision, str):
            object.__setattr__(self, "precision", parse_precision(self.precision))
        for name in SETTING_LIMITS:  # finite and within LIMITS, whoever built the settings
            value = getattr(self, name)
            if value is not None or not LIMITS[name].nullable:
                problem = check_limit(name, value)
                if problem:
                    raise ValueError(f"{name} {problem}")
        if self.tpu is not None and (not isinstance(self.tpu, str) or not self.tpu.strip()):
            raise ValueError(f"tpu must be a non-empty TPU name or address, got {self.tpu!r}")
        if not isinstance(self.energy_estimate, bool):
            raise ValueError(f"energy_estimate must be true or false, got {self.energy_estimate!r}")
        if not isinstance(self.rdzv_backend, str) or not self.rdzv_backend.strip():
            raise ValueError(f"rdzv_backend must be a non-empty name, got {self.rdzv_backend!r}")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError("nnodes > 1 needs rdzv_endpoint (HOST:PORT of the rendezvous, the same on every node)")
        if self.launch not in LAUNCH_MODES:
            raise ValueError(f"launch must be one of {', '.join(LAUNCH_MODES)}, got {self.launch!r}")


SLO_METRICS = ("ttft_ms", "tpot_ms", "e2e_ms")


def parse_slo(text: Any) -> dict[str, float]:
    """``"ttft_ms=500,tpot_ms=50"`` -> ``{"ttft_ms": 500.0, "tpot_ms": 50.0}``; ``ValueError``
    naming the valid metrics for anything else."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"slo must be METRIC=MS[,METRIC=MS...] with METRIC in {', '.join(SLO_METRICS)}, got {text!r}")
    out: dict[str, float] = {}
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        key = key.strip()
        if not sep or key not in SLO_METRICS:
            raise ValueError(f"slo: bad term {part.strip()!r}; give METRIC=MS with METRIC in {', '.join(SLO_METRICS)}")
        try:
            ms = float(value)
        except ValueError:
            raise ValueError(f"slo: {key} needs a number of milliseconds, got {value.strip()!r}") from None
        if not math.isfinite(ms) or ms <= 0:
            raise ValueError(f"slo: {key} must be a positive number of milliseconds, got {value.strip()!r}")
        out[key] = ms
    return out


def format_slo(slo: Mapping[str, float]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in slo.items())


# ----------------------------------------------------------------------------- the cell record


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def empty_cell(spec: TaskSpec) -> dict[str, Any]:
    """A cell record with every field present, to be filled in."""
    return {
        "id": spec.id,
        "spec": spec.to_dict(),
        "status": "failed",
        "reason": None,
        "error": None,
        "started": _now_iso(),
        "duration_s": None,
        "metrics": {},
        "unavailable": {},
        "timing": {},
        "runtime": {},
        "samples_ms": [],
    }


def failed_cell(spec: TaskSpec, error_type: str, reason: str, duration_s: float | None = None,
                **error: Any) -> dict[str, Any]:
    """The record of a cell that failed before it could write its own (a timeout, a
    crash, an unreadable message): ``status: failed``, ``reason`` and ``error`` with
    ``type``, ``message`` (= ``reason``) and the launcher's ``error`` fields
    (``stderr_tail``, ``returncode``, ...), in that order."""
    cell = empty_cell(spec)
    cell["reason"] = reason
    cell["error"] = {"type": error_type, "message": reason, **error}
    if duration_s is not None:
        cell["duration_s"] = duration_s
    return cell


# ----------------------------------------------------------------------------- JSON


def json_default(o: Any, lenient: bool = False) -> Any:
    """The one JSON encoding of what cells and result documents hold beyond JSON's
    types: numpy scalars and arrays (``.item()``/``.tolist()``), dataclasses (as dicts)
    and paths (as strings). Anything else raises ``TypeError`` -- unless ``lenient``
    (worker messages: a collector's odd value must not cost a measured cell), where it
    becomes its ``item()`` (a framework scalar such as a 0-d tensor) or its ``str``."""
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    if not lenient:
        raise TypeError(f"not JSON serializable: {type(o).__name__}")
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def _lenient(o: Any) -> Any:
    return json_default(o, lenient=True)


def dumps_message(obj: Any) -> str:
    """A worker's message (or a cell record) as strict JSON (no NaN/Infinity)."""
    return json.dumps(obj, allow_nan=False, default=_lenient)


# ----------------------------------------------------------------------------- messages between processes


def write_request(path: str | Path, spec: TaskSpec, settings: Settings) -> None:
    """The parent -> worker request: the cell's spec and the run settings."""
    atomic_write_text(path, json.dumps({"spec": spec.to_dict(), "settings": dataclasses.asdict(settings)}),
                      fsync=False)


def read_request(path: str | Path) -> tuple[TaskSpec, Settings]:
    """The (spec, settings) of a request written by :func:`write_request`."""
    request = json.loads(Path(path).read_text())
    return TaskSpec.from_dict(request["spec"]), Settings(**request["settings"])


def write_message(path: str | Path, cell: dict[str, Any], versioned: bool = True) -> None:
    """Write a worker's cell record atomically: ``{"message_version", "cell"}`` (the
    worker -> parent message) or, with ``versioned=False``, the bare record (a torchrun
    rank's file, read by the launcher in the same worker)."""
    obj = {"message_version": MESSAGE_VERSION, "cell": cell} if versioned else cell
    atomic_write_text(path, dumps_message(obj), fsync=False)


def read_message(path: str | Path) -> dict[str, Any]:
    """The cell record of a worker's message. Raises ``json.JSONDecodeError`` or
    ``KeyError`` for an unreadable one (the launcher records that as a failed cell)."""
    return json.loads(Path(path).read_text())["cell"]
