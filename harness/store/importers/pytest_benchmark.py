"""pytest-benchmark JSON -> a dl-harness result document.

Input: the JSON pytest-benchmark writes with ``--benchmark-json=FILE`` (always with the
raw timings) or ``--benchmark-save=NAME`` (``.benchmarks/<machine>/NNNN_NAME.json``;
raw timings only with ``--benchmark-save-data``). One input file is one session, and
becomes one result file (one run).

What pytest-benchmark measures: ``rounds`` rounds of ``iterations`` calls each; every
value of ``stats.data`` is one round's elapsed time divided by ``iterations``, in
seconds, i.e. the mean seconds per call over one round. That is exactly the meaning of
our samples when ``timing.iters_per_sample`` > 1, so:

* ``samples_ms`` = ``stats.data`` x 1000, one sample per round, in stored order, and
  ``timing.iters_per_sample`` = ``iterations``. Every statistic in ``metrics.latency_ms``
  is recomputed from those samples with :func:`harness.core.stats.summarize`;
  pytest-benchmark's own summary is kept verbatim (seconds) in ``imported.stats_s``.
* Without raw timings (``--benchmark-save`` without ``--benchmark-save-data``) samples
  cannot be reconstructed from a summary, so the cell is ``skipped`` with that reason,
  ``samples_ms`` is empty and the summary is kept in ``imported.stats_s``; nothing
  reads it as a measurement (``compare`` and the report's latency columns need samples).

Cell identity:

* A benchmark whose ``extra_info["dl_harness"]`` was written by the ``harness_workload``
  fixture (:mod:`harness.pytest_plugin`) maps back to its real cell spec, with the
  model's ``params``/``params_analytic``/``flops_analytic`` and the backend's runtime
  facts, so it lines up with ``harness run`` cells of the same spec.
* Any other benchmark is a *foreign* cell: workload = the test's ``fullname``, backend
  ``pytest-benchmark``, device from ``--device`` (default ``cpu``: pytest-benchmark's
  machine_info describes only the CPU), variant and size ``-``, batch size 1 (one call
  is one item, so throughput is calls per second) and mode ``inference`` because the
  schema needs one of its two modes (recorded under ``imported.assumed``). Its
  ``params`` is ``null`` with the reason (there is no model to count).

Memory, energy and first-call latency are not in pytest-benchmark's data: they are
``null`` with the reason in ``unavailable``.

Untrusted input, bounded cost (:mod:`harness.store.importers.safe_read`): a regular file of at
most 256 MiB (``DLH_MAX_RESULT_BYTES``), strict JSON (no NaN/Infinity, no integers beyond
64 bits, at most 64 levels deep), at most :data:`MAX_BENCHMARKS` benchmarks, and every
field that is read type-checked; anything else is one :class:`ImportFormatError` line
(exit code 2) and nothing is written. Samples are validated and summarised with numpy
(no per-sample Python work), so 3 million rounds import in seconds:

* ``metrics.latency_ms`` is always computed from **all** rounds. Its CI of the median
  is the harness's percentile bootstrap (:func:`harness.core.stats.summarize`, identical to
  ``harness run``) for a benchmark of at most :data:`BOOTSTRAP_MAX_SAMPLES` rounds while
  the file's :data:`BOOTSTRAP_BUDGET` lasts (the bootstrap costs ~0.15 ms per round
  here); otherwise the distribution-free order-statistic interval (ranks
  n/2 -+ 1.96 sqrt(n)/2), which the bootstrap converges to. The method used is in the
  cell's ``imported.statistics``.
* ``samples_ms`` keeps every round up to :data:`MAX_STORED_SAMPLES`; above that it keeps
  an evenly strided, deterministic subsample (round ``floor(j*(total-1)/(kept-1))`` for
  ``j = 0..kept-1``) and ``timing.samples_subsampled = {kept, total, method}`` says so.
  The full data stays in the source file, whose SHA-256 is ``imported.sha256``.
"""

from __future__ import annotations

import hashlib
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from harness.store.importers import ImportFormatError
from harness.store.importers.safe_read import InputFileError, read_json, read_regular_file, show

FORMAT = "pytest-benchmark"
EXTRA_INFO_KEY = "dl_harness"  # same key as harness.pytest_plugin.EXTRA_INFO_KEY (not imported: it imports pytest)
FOREIGN_BACKEND = "pytest-benchmark"
NOT_APPLICABLE = "-"  # variant and size of a foreign benchmark (no slash: ids join fields with "/")
MAX_BENCHMARKS = 10_000  # per file; a pytest session with more is not plausible
MAX_STORED_SAMPLES = 100_000  # samples_ms kept per cell; more -> strided subsample (statistics use all)
BOOTSTRAP_MAX_SAMPLES = 10_000  # rounds up to which the median CI is bootstrapped (~1.5 s here)
BOOTSTRAP_BUDGET = 50_000  # rounds bootstrapped per file in total; the rest get the order-statistic CI
MAX_CALL_S = 365 * 86400.0  # a time per call above one year is not a measurement
_MAX_COUNT = 2**63 - 1  # params / flops / iterations above this are not counts
SUBSAMPLE_METHOD = (
    "evenly strided over the rounds in stored order: kept sample j (0-based) is round "
    "floor(j*(total-1)/(kept-1)), first and last rounds included; statistics use all rounds"
)

_WHY_NO_MEMORY = "not measured: imported from pytest-benchmark, which records timings only"
_WHY_NO_FIRST = "not recorded: pytest-benchmark does not time the first call separately"
_WHY_NO_PARAMS = "not a dl-harness workload: pytest-benchmark records no model, so there is no parameter count"
_WHY_NO_DATA = (
    "pytest-benchmark saved only summary statistics for this benchmark (no raw timings), and samples "
    "cannot be reconstructed from a summary; rerun with --benchmark-json=FILE or "
    "--benchmark-save-data to import it (summary kept in imported.stats_s)"
)


# ----------------------------------------------------------------------------- reading


def file_sha256(path: Path) -> str:
    """SHA-256 of a regular file of bounded size (ImportFormatError otherwise)."""
    try:
        return hashlib.sha256(read_regular_file(path)).hexdigest()
    except InputFileError as e:
        raise ImportFormatError(str(e)) from None


def read_source(path: str | Path) -> tuple[dict[str, Any], str]:
    """Read, strictly parse and shape-check a pytest-benchmark JSON file: (document,
    SHA-256 of the bytes read). Regular files only, bounded size and depth (see
    :mod:`harness.store.importers.safe_read`); raises ImportFormatError (one line)."""
    p = Path(path)
    try:
        doc, sha = read_json(p)
    except InputFileError as e:
        msg = str(e)
        if ": not UTF-8 text" in msg:
            msg = msg.replace(": not UTF-8 text", ": not a pytest-benchmark JSON file: not UTF-8 text", 1)
        raise ImportFormatError(msg) from None
    check_shape(doc, show(p))
    return doc, sha


def read_file(path: str | Path) -> dict[str, Any]:
    """Load and shape-check a pytest-benchmark JSON file; raise ImportFormatError."""
    return read_source(path)[0]


def _name_of(b: Mapping[str, Any]) -> Any:
    return b.get("fullname") or b.get("name")


def check_shape(doc: Any, source: str) -> None:
    """Raise ImportFormatError unless ``doc`` looks like pytest-benchmark output."""
    hint = "write one with pytest --benchmark-json=FILE or --benchmark-save=NAME"
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list) or not isinstance(doc.get("machine_info"), dict):
        if isinstance(doc, dict) and "schema_version" in doc and "cells" in doc:
            raise ImportFormatError(f"{source}: is already a dl-harness result, not a pytest-benchmark JSON file")
        raise ImportFormatError(
            f"{source}: not a pytest-benchmark JSON file (expected top-level 'machine_info' and 'benchmarks'; {hint})"
        )
    if not doc["benchmarks"]:
        raise ImportFormatError(f"{source}: holds no benchmarks (pytest-benchmark writes none for failed or skipped tests)")
    if len(doc["benchmarks"]) > MAX_BENCHMARKS:
        raise ImportFormatError(f"{source}: holds {len(doc['benchmarks']):,} benchmarks; at most {MAX_BENCHMARKS:,} "
                                "per file are imported (split the session)")  # fmt: skip
    for i, b in enumerate(doc["benchmarks"]):
        if not isinstance(b, dict) or not isinstance(b.get("stats"), dict) or not _name_of(b):
            raise ImportFormatError(f"{source}: benchmarks[{i}] has no name or no 'stats' object; not pytest-benchmark output")
        if not isinstance(_name_of(b), str):
            raise ImportFormatError(f"{source}: benchmarks[{i}]: 'fullname'/'name' must be text, "
                                    f"got {type(_name_of(b)).__name__}")  # fmt: skip


# ----------------------------------------------------------------------------- specs


def spec_from_record(d: Mapping[str, Any]) -> Any:
    """A :class:`harness.core.suite.TaskSpec` from a stored spec dict (optional fields such
    as ``world_size`` may be absent). Raises ValueError/KeyError/TypeError."""
    from harness.core.suite import TaskSpec

    if not isinstance(d, Mapping):
        raise TypeError(f"a spec must be an object, got {type(d).__name__}")
    return TaskSpec.from_dict(d)


# ----------------------------------------------------------------------------- conversion


def _is_num(x: Any) -> bool:
    """A finite int or float (not a bool); never raises, even for a huge integer."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    if isinstance(x, int):
        return -_MAX_COUNT <= x <= _MAX_COUNT
    return math.isfinite(x)


def _count(x: Any) -> int | None:
    """A non-negative whole number below 2**63 (a parameter or FLOP count), else None."""
    if not _is_num(x) or x < 0 or x > _MAX_COUNT or (isinstance(x, float) and not x.is_integer()):
        return None
    return int(x)


def _text(x: Any) -> str | None:
    return x if isinstance(x, str) else None


_LAST_EPOCH = 253402300799.0  # 9999-12-31T23:59:59Z


def _iso(stamp: Any) -> tuple[str, float]:
    """pytest-benchmark's ``datetime`` -> (our ``YYYY-mm-ddTHH:MM:SSZ``, epoch seconds)."""
    t = None
    if isinstance(stamp, str) and len(stamp) <= 64:
        try:
            dt = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=timezone.utc)
            t = dt.timestamp()
        except (ValueError, OverflowError, OSError):
            t = None
    if t is None:
        raise ImportFormatError("no valid 'datetime' (ISO 8601) at the top level")
    if not 0 <= t <= _LAST_EPOCH:
        raise ImportFormatError(f"'datetime' {show(stamp, 64)!r} is before 1970 or after 9999")
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)), t


def _order_statistic_ci(x: np.ndarray, z: float = 1.959963984540054) -> tuple[float, float]:
    """Distribution-free 95% CI of the median: the order statistics of ranks
    n/2 -+ z sqrt(n)/2 (normal approximation of the binomial; 1-based, clipped to
    1..n). O(n) with ``np.partition``; the percentile bootstrap of the median converges
    to it (widths within ~2% at 2,000-50,000 samples here)."""
    n = int(x.size)
    lo = max(1, int(math.floor(n / 2 - z * math.sqrt(n) / 2)))
    hi = min(n, int(math.ceil(n / 2 + z * math.sqrt(n) / 2 + 1)))
    part = np.partition(x, [lo - 1, hi - 1])
    return float(part[lo - 1]), float(part[hi - 1])


def _latency_summary(x: np.ndarray, bootstrap: bool) -> tuple[dict[str, Any], str]:
    """The keys of :func:`harness.core.stats.summarize` from all samples ``x`` (ms), and the
    CI method used. ``bootstrap``: exactly ``summarize`` (as ``harness run``); else the
    same statistics with the order-statistic CI of the median (O(n), for long series)."""
    from harness.core.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, NOISE_IQR_RATIO, summarize

    if bootstrap:
        return summarize(x), (f"percentile bootstrap of the median ({BOOTSTRAP_RESAMPLES} resamples, seed "
                              f"{BOOTSTRAP_SEED}; harness.core.stats.summarize, as harness run)")  # fmt: skip
    # the same formulas as harness.core.stats.summarize, without its O(resamples x n) bootstrap
    p25, p50, p75, p90, p99 = np.percentile(x, [25, 50, 75, 90, 99])
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    lo, hi = _order_statistic_ci(x)
    iqr = float(p75 - p25)
    ratio = iqr / float(p50) if p50 > 0 else 0.0
    lat = {
        "n": int(x.size), "p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": mean, "std": std,
        "min": float(x.min()), "max": float(x.max()), "iqr": iqr, "cv": std / mean if mean > 0 else 0.0,
        "ci95_low": lo, "ci95_high": hi, "iqr_over_median": ratio, "noisy": bool(ratio > NOISE_IQR_RATIO),
    }  # fmt: skip
    if x.size > BOOTSTRAP_MAX_SAMPLES:
        why = f"more than {BOOTSTRAP_MAX_SAMPLES:,} rounds"
    else:
        why = f"this file's bootstrap budget of {BOOTSTRAP_BUDGET:,} rounds was spent on earlier benchmarks"
    method = (f"order statistics of ranks n/2 -+ 1.96 sqrt(n)/2 (distribution-free; the bootstrap "
              f"converges to it), not the bootstrap: {why}")  # fmt: skip
    lat["ci95_method"] = method  # present only when not the bootstrap (harness.core.stats' convention)
    return lat, method


def _samples_seconds(data: list[Any], where: str) -> np.ndarray:
    """``stats.data`` as float64 seconds, validated at C speed: numbers only (no bools,
    strings or nested lists), finite, 0 <= t <= one year."""
    if not set(map(type, data)) <= {int, float}:
        raise ImportFormatError(f"{where}: stats.data must hold finite, non-negative seconds (numbers only)")
    try:
        x = np.asarray(data, dtype=np.float64)
    except (OverflowError, ValueError, TypeError):
        raise ImportFormatError(f"{where}: stats.data must hold finite, non-negative seconds") from None
    if x.ndim != 1 or not bool(np.isfinite(x).all()) or bool((x < 0).any()):
        raise ImportFormatError(f"{where}: stats.data must hold finite, non-negative seconds")
    if bool((x > MAX_CALL_S).any()):
        raise ImportFormatError(f"{where}: stats.data holds {float(x.max()):.3g} s per call; more than a year "
                                "is not a measurement")  # fmt: skip
    return x


def _all_finite(obj: Any) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_all_finite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_all_finite(v) for v in obj)
    return True


def environment(machine: Mapping[str, Any], cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Our environment block from pytest-benchmark's machine_info (py-cpuinfo)."""
    from harness.core.environment import fingerprint
    from harness.core.hw.cpuinfo import DL_FLAGS, isa_summary

    cpu = machine.get("cpu") if isinstance(machine.get("cpu"), dict) else {}
    raw_flags = cpu.get("flags") if isinstance(cpu.get("flags"), list) else []
    flags = {f for f in raw_flags if isinstance(f, str)}
    flags_dl = {f: (f in flags) for f in DL_FLAGS} if flags else {}
    gpus = sorted({show(c["runtime"]["cuda_device"]) for c in cells
                   if str(c["spec"]["device"]).startswith("cuda") and (c.get("runtime") or {}).get("cuda_device")})  # fmt: skip
    frameworks: dict[str, str] = {}
    for c in cells:
        for key in ("torch", "tensorflow"):
            v = (c.get("runtime") or {}).get(key)
            if isinstance(v, str):
                frameworks.setdefault(key, v)
    system, release, arch = _text(machine.get("system")), _text(machine.get("release")), _text(machine.get("machine"))
    env: dict[str, Any] = {
        "host": _text(machine.get("node")) or "unknown",
        "os": {
            "system": system,
            "release": release,
            "platform": "-".join(x for x in (system, release, arch) if x),
        },
        "python": _text(machine.get("python_version")) or "unknown",
        "python_implementation": _text(machine.get("python_implementation")),
        "cpu": {
            "model": _text(cpu.get("brand_raw")) or _text(machine.get("processor")) or arch or "unknown",
            "arch": arch,
            "flags_dl": flags_dl,
            "isa": isa_summary(flags_dl) if flags_dl else {},
            "flags_source": "pytest-benchmark machine_info (py-cpuinfo)" if flags else "unavailable",
            "physical_cores": None,
            "logical_cores": cpu.get("count") if _count(cpu.get("count")) else None,
        },
        "memory_bytes": None,
        "gpus": [{"name": g, "source": "dl-harness runtime record in extra_info"} for g in gpus],
        "gpus_reason": None if gpus else "not recorded: pytest-benchmark's machine_info describes the CPU only",
        "frameworks": frameworks,
        "env_vars": {},
        "source": "imported from pytest-benchmark machine_info; memory and GPUs are not recorded there",
    }
    env["fingerprint"] = fingerprint(env)
    return env


MAX_COPIED_VALUES = 10_000  # values in one metadata object copied verbatim (extra_info, options, ...)
COPIED_VALUES_BUDGET = 1_000_000  # values copied verbatim per file in total (bounds the output's size)


class _CopyBudget:
    """Bounds what is copied verbatim from the foreign file into the result (metadata such
    as extra_info, options, machine_info): at most :data:`MAX_COPIED_VALUES` values per
    object and :data:`COPIED_VALUES_BUDGET` per file; an object over either is replaced
    by a note saying how many values it held, so the output stays proportional to what
    we measure, not to what a file happens to carry."""

    def __init__(self, total: int = COPIED_VALUES_BUDGET) -> None:
        self.left = total

    def copy(self, obj: Any) -> Any:
        if not isinstance(obj, (dict, list)):
            return obj
        cap = min(MAX_COPIED_VALUES, self.left)
        n = _count_values(obj, cap + 1)
        if n > cap:
            limit = (f"{MAX_COPIED_VALUES:,} values per object" if cap == MAX_COPIED_VALUES
                     else f"the file's budget of {COPIED_VALUES_BUDGET:,} copied values")  # fmt: skip
            return {"omitted": f"more than {cap:,} values (over {limit}); see the source file"}
        self.left -= n
        return obj


def _count_values(obj: Any, stop: int) -> int:
    """Number of values (containers and scalars) in ``obj``, counting stops past ``stop``."""
    n, stack = 0, [obj]
    while stack and n <= stop:
        o = stack.pop()
        n += 1
        if isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, list):
            if len(o) > stop:
                return n + len(o)
            stack.extend(o)
    return n


def _stats_without_data(stats: Mapping[str, Any]) -> dict[str, Any]:
    """pytest-benchmark's summary (scalars such as min, mean, rounds, outliers), without data."""
    return {k: v for k, v in stats.items() if k != "data" and not isinstance(v, (dict, list))}


def convert_benchmark(bench: Mapping[str, Any], created: str, device: str, source: str, *,
                      bootstrap: bool | None = None, budget: _CopyBudget | None = None) -> dict[str, Any]:  # fmt: skip
    """One pytest-benchmark benchmark -> one cell record. ``bootstrap``: whether the CI of
    the median is bootstrapped (None: when the benchmark has at most
    :data:`BOOTSTRAP_MAX_SAMPLES` rounds); ``budget`` bounds verbatim-copied metadata."""
    budget = budget or _CopyBudget()
    name = str(_name_of(bench))
    where = f"{source}: benchmark {show(name)}"
    stats = bench["stats"]
    iterations = stats.get("iterations", 1)
    if not (isinstance(iterations, int) and not isinstance(iterations, bool) and 1 <= iterations <= _MAX_COUNT):
        raise ImportFormatError(
            f"{where}: stats.iterations must be a positive integer, got {show(repr(iterations), 40)}"
        )
    extra = bench.get("extra_info") if isinstance(bench.get("extra_info"), dict) else {}
    record = extra.get(EXTRA_INFO_KEY) if isinstance(extra.get(EXTRA_INFO_KEY), dict) else None
    imported: dict[str, Any] = {
        "format": FORMAT,
        "name": _text(bench.get("name")),
        "fullname": _text(bench.get("fullname")),
        "group": budget.copy(bench.get("group")),
        "param": budget.copy(bench.get("param")),
        "test_params": budget.copy(bench.get("params")),
        "extra_info": budget.copy({k: v for k, v in extra.items() if k != EXTRA_INFO_KEY}),
        "options": budget.copy(bench.get("options")),
        "stats_s": _stats_without_data(stats),
        "sample_meaning": f"one sample = one round: the mean ms per call over {iterations} call(s)",
    }
    metrics: dict[str, Any] = {}
    unavailable: dict[str, str] = {
        "peak_host_mem_bytes": _WHY_NO_MEMORY,
        "peak_device_mem_bytes": _WHY_NO_MEMORY,
        "first_iter_ms": _WHY_NO_FIRST,
    }
    runtime: dict[str, Any] = {}
    if record is not None:
        try:
            spec = spec_from_record(record.get("spec") or {})
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise ImportFormatError(
                f"{where}: extra_info.{EXTRA_INFO_KEY}.spec is not a valid cell spec ({type(e).__name__}: {show(e)})"
            ) from None
        imported["spec_source"] = f"extra_info.{EXTRA_INFO_KEY} (harness_workload fixture)"
        imported[EXTRA_INFO_KEY] = budget.copy(dict(record))
        for key in ("params", "params_analytic", "flops_analytic"):
            if _count(record.get(key)) is not None:
                metrics[key] = _count(record[key])
        if isinstance(record.get("runtime"), dict):
            runtime = budget.copy(dict(record["runtime"]))
        if "params" not in metrics:
            metrics["params"] = None
            unavailable["params"] = "the harness_workload record holds no parameter count (a whole number >= 0)"
    else:
        from harness.core.suite import ConfigError, normalize_device

        try:
            dev = normalize_device(device)
        except ConfigError as e:
            raise ImportFormatError(str(e)) from None
        spec = spec_from_record({
            "workload": name, "backend": FOREIGN_BACKEND, "device": dev, "variant": NOT_APPLICABLE,
            "mode": "inference", "batch_size": 1, "size": NOT_APPLICABLE,
        })  # fmt: skip
        imported["spec_source"] = "assumed (not a harness_workload benchmark)"
        imported["assumed"] = {
            "device": f"{dev}: from --device; pytest-benchmark does not record which device the code used",
            "mode": "inference: the result schema needs inference|training; pytest-benchmark does not say",
            "batch_size": "1: one call is one item, so throughput_per_s is calls per second",
        }
        metrics["params"] = None
        unavailable["params"] = _WHY_NO_PARAMS
    cell: dict[str, Any] = {
        "id": spec.id,
        "spec": spec.to_dict(),
        "status": "ok",
        "reason": None,
        "error": None,
        "started": created,
        "duration_s": None,
        "metrics": {},
        "unavailable": unavailable,
        "timing": {},
        "runtime": runtime,
        "samples_ms": [],
        "imported": imported,
    }
    data = stats.get("data")
    if data is not None and not isinstance(data, list):
        raise ImportFormatError(f"{where}: stats.data must be a list of seconds, got {type(data).__name__}")
    if not data:
        cell["status"] = "skipped"
        cell["reason"] = _WHY_NO_DATA
        return cell
    samples_ms = _samples_seconds(data, where) * 1e3  # vectorised: no per-sample Python work
    n = int(samples_ms.size)
    rounds = stats.get("rounds")
    if _is_num(rounds) and rounds != n:
        imported["note"] = f"stats.rounds is {rounds!r} but stats.data holds {n} values; samples are the data"
    opts = bench.get("options") if isinstance(bench.get("options"), dict) else {}

    def opt(key: str) -> Any:
        v = opts.get(key)
        return v if v is None or isinstance(v, (str, bool)) or _is_num(v) else show(repr(v), 80)

    cell["timing"] = {
        "iters_per_sample": iterations,
        "samples": n,
        "clock": f"pytest-benchmark timer {show(opts.get('timer', 'unknown'), 80)} (host wall clock)",
        "source": "pytest-benchmark",
        "warmup": opt("warmup"),
        "min_rounds": opt("min_rounds"),
        "max_time_s": opt("max_time"),
        "min_time_s": opt("min_time"),
        "disable_gc": opt("disable_gc"),
    }
    if n > MAX_STORED_SAMPLES:  # a deterministic, documented subsample; statistics below use all rounds
        kept = MAX_STORED_SAMPLES
        idx = (np.arange(kept, dtype=np.int64) * (n - 1)) // (kept - 1)
        cell["samples_ms"] = samples_ms[idx].tolist()
        cell["timing"]["samples_subsampled"] = {"kept": kept, "total": n, "method": SUBSAMPLE_METHOD}
    else:
        cell["samples_ms"] = samples_ms.tolist()
    lat, ci_method = _latency_summary(samples_ms, n <= BOOTSTRAP_MAX_SAMPLES if bootstrap is None else bootstrap)
    imported["statistics"] = {
        "computed_from": f"all {n} rounds of stats.data (seconds x 1000)",
        "ci95_method": ci_method,
    }
    noisy = lat.pop("noisy")
    if not lat["p50"] > 0:
        cell["status"] = "skipped"
        cell["reason"] = "median time per call is 0 ms in pytest-benchmark's data (timer resolution too coarse)"
        return cell
    bs = spec.batch_size
    metrics.update({
        "latency_ms": lat,
        "noisy": noisy,
        # sustained: calls / the summed time of the timed rounds (pytest-benchmark keeps
        # no loop wall time, so its own per-round overhead is not included)
        "throughput_per_s": bs * 1e3 / lat["mean"],
        "throughput_method": "sustained: items / summed round time (pytest-benchmark has no loop wall time)",
        "throughput_p50_per_s": bs * 1e3 / lat["p50"],
        "throughput_ci95_per_s": [bs * 1e3 / lat["ci95_high"], bs * 1e3 / lat["ci95_low"]] if lat["ci95_low"] > 0 else None,
        "peak_host_mem_bytes": None,
        "peak_device_mem_bytes": None,
    })  # fmt: skip
    if not _all_finite(metrics):  # e.g. times of 1e-320 s: their reciprocals overflow
        cell["status"] = "skipped"
        cell["reason"] = ("statistics of pytest-benchmark's data are not finite numbers (times per call too close "
                          f"to 0 s: median {lat['p50'] / 1e3:.3g} s); nothing can be measured from them")  # fmt: skip
        return cell
    cell["metrics"] = metrics
    return cell


def convert(doc: Mapping[str, Any], source: str, *, tag: str | None = None, device: str = "cpu",
            sha256: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A pytest-benchmark document -> a dl-harness result document (run_id still empty;
    claim it with :func:`harness.store.results.claim_path`). Raises ImportFormatError."""
    from harness import __version__
    from harness.store.results import SCHEMA_VERSION, new_run_id
    from harness.store.schema import validation_errors

    check_shape(doc, source)
    try:
        created, epoch = _iso(doc.get("datetime"))
    except ImportFormatError as e:
        raise ImportFormatError(f"{source}: {e}") from None
    budget = _CopyBudget()
    boot_left = BOOTSTRAP_BUDGET
    cells = []
    for b in doc["benchmarks"]:
        data = b["stats"].get("data")
        n = len(data) if isinstance(data, list) else 0
        boot = n <= min(BOOTSTRAP_MAX_SAMPLES, boot_left)
        if boot:
            boot_left -= n
        cells.append(convert_benchmark(b, created, device, source, bootstrap=boot, budget=budget))
    seen: dict[str, str] = {}
    for b, c in zip(doc["benchmarks"], cells):
        name = str(_name_of(b))
        if c["id"] in seen and c["status"] == "ok":
            # one run holds each cell once (compare would take a repeat for another run):
            # the first benchmark of a cell is its measurement, a repeat is kept, skipped
            c["status"] = "skipped"
            c["reason"] = (f"benchmark {show(name)!r} measures the same cell as {seen[c['id']]!r} earlier in this file "
                           "(equal harness_workload specs); a run holds each cell once, so only the first counts "
                           "(its samples are kept here)")
        seen.setdefault(c["id"], show(name))
    machine = doc["machine_info"]
    commit = budget.copy(doc.get("commit_info")) if isinstance(doc.get("commit_info"), dict) else {}
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": new_run_id(now=epoch, host=_text(machine.get("node")) or "host"),
        "created": created,
        "finished": created,
        "complete": True,
        "interrupted": False,
        "tag": tag,
        "harness": {
            "version": __version__,
            "git_commit": None,
            "git_dirty": None,
            "note": "imported: dl-harness did not run these benchmarks; the benchmarked project's "
            "commit is imported.commit_info",
        },
        "environment": environment(machine, cells),
        "suite": {
            "name": "pytest-benchmark import",
            "description": f"imported from {show(Path(source).name)}",
            "source": source,
            "settings": {},
            "matrix": {},
            "exclude": [],
            "cells": len(cells),
        },
        "not_run": [],
        "cells": cells,
        "imported": {
            "format": FORMAT,
            "format_version": budget.copy(doc.get("version")),
            "source": source,
            "sha256": sha256,
            "datetime": doc.get("datetime"),
            "commit_info": commit,
            "machine_info": budget.copy(dict(machine)),
            "importer": f"harness import {FORMAT} (dl-harness {__version__})",
        },
    }
    errors = validation_errors(out)
    if errors:  # our own output must always be valid; say where it is not
        raise ImportFormatError(f"{source}: cannot be converted into a valid result: {show(errors[0])}")
    return out
