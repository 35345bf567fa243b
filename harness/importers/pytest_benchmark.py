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
  is recomputed from those samples with :func:`harness.stats.summarize`;
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
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from harness.importers import ImportFormatError

FORMAT = "pytest-benchmark"
EXTRA_INFO_KEY = "dl_harness"  # same key as harness.pytest_plugin.EXTRA_INFO_KEY (not imported: it imports pytest)
FOREIGN_BACKEND = "pytest-benchmark"
NOT_APPLICABLE = "-"  # variant and size of a foreign benchmark (no slash: ids join fields with "/")

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
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_file(path: str | Path) -> dict[str, Any]:
    """Load and shape-check a pytest-benchmark JSON file; raise ImportFormatError."""
    p = Path(path)
    if not p.exists():
        raise ImportFormatError(f"no such file: {p}")
    if p.is_dir():
        raise ImportFormatError(f"{p}: is a directory; give pytest-benchmark JSON files")
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ImportFormatError(f"{p}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise ImportFormatError(f"{p}: not a pytest-benchmark JSON file (not UTF-8 text)") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ImportFormatError(f"{p}: not JSON ({e.msg} at line {e.lineno})") from None
    check_shape(doc, str(p))
    return doc


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
    for i, b in enumerate(doc["benchmarks"]):
        if not isinstance(b, dict) or not isinstance(b.get("stats"), dict) or not (b.get("fullname") or b.get("name")):
            raise ImportFormatError(f"{source}: benchmarks[{i}] has no name or no 'stats' object; not pytest-benchmark output")


# ----------------------------------------------------------------------------- specs


def spec_from_record(d: Mapping[str, Any]) -> Any:
    """A :class:`harness.suite.TaskSpec` from a stored spec dict (optional fields such
    as ``world_size`` may be absent). Raises ValueError/KeyError/TypeError."""
    from harness.suite import TaskSpec

    if not isinstance(d, Mapping):
        raise TypeError(f"a spec must be an object, got {type(d).__name__}")
    return TaskSpec.from_dict(d)


# ----------------------------------------------------------------------------- conversion


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _iso(stamp: Any) -> tuple[str, float]:
    """pytest-benchmark's ``datetime`` -> (our ``YYYY-mm-ddTHH:MM:SSZ``, epoch seconds)."""
    if isinstance(stamp, str):
        try:
            dt = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=timezone.utc)
            t = dt.timestamp()
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)), t
        except ValueError:
            pass
    raise ImportFormatError("no valid 'datetime' (ISO 8601) at the top level")


def environment(machine: Mapping[str, Any], cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Our environment block from pytest-benchmark's machine_info (py-cpuinfo)."""
    from harness.environment import fingerprint
    from harness.hw.cpuinfo import DL_FLAGS, isa_summary

    cpu = machine.get("cpu") if isinstance(machine.get("cpu"), dict) else {}
    flags = {str(f) for f in cpu.get("flags") or []}
    flags_dl = {f: (f in flags) for f in DL_FLAGS} if flags else {}
    gpus = sorted({str(c["runtime"]["cuda_device"]) for c in cells
                   if str(c["spec"]["device"]).startswith("cuda") and (c.get("runtime") or {}).get("cuda_device")})  # fmt: skip
    frameworks: dict[str, str] = {}
    for c in cells:
        for key in ("torch", "tensorflow"):
            v = (c.get("runtime") or {}).get(key)
            if isinstance(v, str):
                frameworks.setdefault(key, v)
    env: dict[str, Any] = {
        "host": str(machine.get("node") or "unknown"),
        "os": {
            "system": machine.get("system"),
            "release": machine.get("release"),
            "platform": "-".join(str(x) for x in (machine.get("system"), machine.get("release"), machine.get("machine")) if x),
        },
        "python": str(machine.get("python_version") or "unknown"),
        "python_implementation": machine.get("python_implementation"),
        "cpu": {
            "model": cpu.get("brand_raw") or machine.get("processor") or machine.get("machine") or "unknown",
            "arch": machine.get("machine"),
            "flags_dl": flags_dl,
            "isa": isa_summary(flags_dl) if flags_dl else {},
            "flags_source": "pytest-benchmark machine_info (py-cpuinfo)" if flags else "unavailable",
            "physical_cores": None,
            "logical_cores": cpu.get("count") if isinstance(cpu.get("count"), int) else None,
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


def _stats_without_data(stats: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if k != "data"}


def convert_benchmark(bench: Mapping[str, Any], created: str, device: str, source: str) -> dict[str, Any]:
    """One pytest-benchmark benchmark -> one cell record."""
    from harness.stats import summarize

    name = str(bench.get("fullname") or bench.get("name"))
    stats = bench["stats"]
    iterations = stats.get("iterations", 1)
    if not (isinstance(iterations, int) and not isinstance(iterations, bool) and iterations >= 1):
        raise ImportFormatError(f"{source}: benchmark {name}: stats.iterations must be a positive integer, got {iterations!r}")
    extra = bench.get("extra_info") if isinstance(bench.get("extra_info"), dict) else {}
    record = extra.get(EXTRA_INFO_KEY) if isinstance(extra.get(EXTRA_INFO_KEY), dict) else None
    imported: dict[str, Any] = {
        "format": FORMAT,
        "name": bench.get("name"),
        "fullname": bench.get("fullname"),
        "group": bench.get("group"),
        "param": bench.get("param"),
        "test_params": bench.get("params"),
        "extra_info": {k: v for k, v in extra.items() if k != EXTRA_INFO_KEY},
        "options": bench.get("options"),
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
        except (KeyError, TypeError, ValueError) as e:
            raise ImportFormatError(
                f"{source}: benchmark {name}: extra_info.{EXTRA_INFO_KEY}.spec is not a valid cell spec ({type(e).__name__}: {e})"
            ) from None
        imported["spec_source"] = f"extra_info.{EXTRA_INFO_KEY} (harness_workload fixture)"
        imported[EXTRA_INFO_KEY] = dict(record)
        for key in ("params", "params_analytic", "flops_analytic"):
            if _is_num(record.get(key)):
                metrics[key] = int(record[key])
        if isinstance(record.get("runtime"), dict):
            runtime = dict(record["runtime"])
        if "params" not in metrics:
            metrics["params"] = None
            unavailable["params"] = "the harness_workload record holds no parameter count"
    else:
        from harness.suite import ConfigError, normalize_device

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
    if not isinstance(data, list) or not data:
        cell["status"] = "skipped"
        cell["reason"] = _WHY_NO_DATA
        return cell
    if not all(_is_num(x) and x >= 0 for x in data):
        raise ImportFormatError(f"{source}: benchmark {name}: stats.data must hold finite, non-negative seconds")
    rounds = stats.get("rounds")
    if _is_num(rounds) and int(rounds) != len(data):
        imported["note"] = f"stats.rounds is {rounds} but stats.data holds {len(data)} values; samples are the data"
    samples_ms = [float(x) * 1e3 for x in data]
    cell["samples_ms"] = samples_ms
    opts = bench.get("options") if isinstance(bench.get("options"), dict) else {}
    cell["timing"] = {
        "iters_per_sample": iterations,
        "samples": len(samples_ms),
        "clock": f"pytest-benchmark timer {opts.get('timer', 'unknown')} (host wall clock)",
        "source": "pytest-benchmark",
        "warmup": opts.get("warmup"),
        "min_rounds": opts.get("min_rounds"),
        "max_time_s": opts.get("max_time"),
        "min_time_s": opts.get("min_time"),
        "disable_gc": opts.get("disable_gc"),
    }
    lat = summarize(samples_ms)
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
    cell["metrics"] = metrics
    return cell


def convert(doc: Mapping[str, Any], source: str, *, tag: str | None = None, device: str = "cpu",
            sha256: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A pytest-benchmark document -> a dl-harness result document (run_id still empty;
    claim it with :func:`harness.results.claim_path`). Raises ImportFormatError."""
    from harness import __version__
    from harness.results import SCHEMA_VERSION, new_run_id
    from harness.schema import validation_errors

    check_shape(doc, source)
    try:
        created, epoch = _iso(doc.get("datetime"))
    except ImportFormatError as e:
        raise ImportFormatError(f"{source}: {e}") from None
    cells = [convert_benchmark(b, created, device, source) for b in doc["benchmarks"]]
    seen: dict[str, str] = {}
    for b, c in zip(doc["benchmarks"], cells):
        name = str(b.get("fullname") or b.get("name"))
        if c["id"] in seen and c["status"] == "ok":
            # one run holds each cell once (compare would take a repeat for another run):
            # the first benchmark of a cell is its measurement, a repeat is kept, skipped
            c["status"] = "skipped"
            c["reason"] = (f"benchmark {name!r} measures the same cell as {seen[c['id']]!r} earlier in this file "
                           "(equal harness_workload specs); a run holds each cell once, so only the first counts "
                           "(its samples are kept here)")
        seen.setdefault(c["id"], name)
    machine = doc["machine_info"]
    commit = doc.get("commit_info") if isinstance(doc.get("commit_info"), dict) else {}
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": new_run_id(now=epoch, host=str(machine.get("node") or "host")),
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
            "description": f"imported from {Path(source).name}",
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
            "format_version": doc.get("version"),
            "source": source,
            "sha256": sha256,
            "datetime": doc.get("datetime"),
            "commit_info": commit,
            "machine_info": dict(machine),
            "importer": f"harness import {FORMAT} (dl-harness {__version__})",
        },
    }
    errors = validation_errors(out)
    if errors:  # our own output must always be valid; say where it is not
        raise ImportFormatError(f"{source}: cannot be converted into a valid result: {errors[0]}")
    return out
