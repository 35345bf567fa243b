"""Read-only accessors over result documents, shared by every report.

They only look things up in what a run stored (see ``harness.store.schema``); nothing here
measures or estimates. Where a value is missing the accessor returns ``None`` and,
through :func:`unavailable_reason`, the reason the run recorded for it.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

from harness.reports.formatting import is_number

NOISE_IQR_RATIO = 0.10  # same threshold as harness.core.stats (torch.utils.benchmark's warning)
NOISE_EXPLANATION = (
    "noisy: the interquartile range of the samples is more than 10% of the median "
    "(IQR/median > 10%), so small differences in this cell are not meaningful"
)

SPEC_FIELDS = ("workload", "backend", "device", "variant", "mode", "batch_size", "size")


def cell_id(cell: dict[str, Any]) -> str:
    """The cell's stored id, or one built from its spec the way the runner builds it."""
    cid = cell.get("id")
    if isinstance(cid, str) and cid:
        return cid
    s = cell.get("spec") or {}
    return "/".join(
        [str(s.get(k, "?")) for k in ("workload", "backend", "device", "variant", "mode")]
        + [f"bs{s.get('batch_size', '?')}", str(s.get("size", "?"))]
        + ([f"ws{s['world_size']}"] if s.get("world_size") else [])
    )


def short_labels(cells: list[dict[str, Any]]) -> list[str]:
    """Labels for chart points: each cell's id without the spec fields that all
    ``cells`` share (``mlp/bf16`` when only workload and variant differ); the full id
    when every field is shared or a label would repeat."""
    specs = [c.get("spec") or {} for c in cells]
    keys = list(SPEC_FIELDS) + ["world_size"]
    varying = [k for k in keys if len({str(s.get(k)) for s in specs}) > 1]
    if not varying:
        return [cell_id(c) for c in cells]

    def part(s: dict[str, Any], k: str) -> str:
        v = s.get(k)
        return f"bs{v}" if k == "batch_size" else f"ws{v}" if k == "world_size" else str(v)

    labels = ["/".join(part(s, k) for k in varying) for s in specs]
    return labels if len(set(labels)) == len(labels) else [cell_id(c) for c in cells]


def iter_cells(runs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(run, cell) pairs in stored order."""
    for run in runs:
        for cell in run.get("cells") or []:
            yield run, cell


def metrics(cell: dict[str, Any]) -> dict[str, Any]:
    m = cell.get("metrics")
    return m if isinstance(m, dict) else {}


def latency(cell: dict[str, Any]) -> dict[str, Any]:
    """The ``latency_ms`` summary of a cell (empty dict when absent)."""
    lat = metrics(cell).get("latency_ms")
    return lat if isinstance(lat, dict) else {}


def lat(cell: dict[str, Any], key: str) -> float | None:
    """One latency statistic in ms (``p50``, ``ci95_low``...), or None."""
    v = latency(cell).get(key)
    return v if is_number(v) else None


def metric(cell: dict[str, Any], key: str) -> Any:
    """A top-level metric value as stored (None when missing or null)."""
    return metrics(cell).get(key)


def interval(value: Any) -> tuple[float, float] | None:
    """A stored confidence interval: ``[low, high]`` or ``{"low":..,"high":..}``."""
    if isinstance(value, dict):
        value = [value.get("low"), value.get("high")]
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(is_number(v) for v in value):
        return float(value[0]), float(value[1])
    return None


def throughput_ci(cell: dict[str, Any]) -> tuple[float, float] | None:
    """The 95% CI of throughput (samples/s) if the run stored one (never derived here)."""
    return interval(metrics(cell).get("throughput_ci95_per_s"))


def unavailable_reason(cell: dict[str, Any], key: str) -> str | None:
    """Why ``key`` has no value in this cell, as the run recorded it."""
    un = cell.get("unavailable")
    if isinstance(un, dict) and isinstance(un.get(key), str):
        return un[key]
    return None


def noise_ratio(cell: dict[str, Any]) -> float | None:
    """IQR/median of the latency samples, from the stored summary."""
    lt = latency(cell)
    r = lt.get("iqr_over_median")
    if is_number(r):
        return float(r)
    iqr, p50 = lt.get("iqr"), lt.get("p50")
    if is_number(iqr) and is_number(p50) and p50 > 0:
        return float(iqr) / float(p50)
    return None


def is_noisy(cell: dict[str, Any]) -> bool:
    """The stored noise flag (``metrics.noisy`` or ``latency_ms.noisy``); when a run
    stored no flag, the same IQR/median > 10% rule applied to its stored summary."""
    for holder in (metrics(cell), latency(cell)):
        flag = holder.get("noisy")
        if isinstance(flag, bool):
            return flag
    r = noise_ratio(cell)
    return r is not None and r > NOISE_IQR_RATIO


def warmup_unstable(cell: dict[str, Any]) -> bool:
    """True when the run recorded that warm-up never reached a steady state."""
    timing = cell.get("timing")
    return isinstance(timing, dict) and timing.get("warmup_stable") is False


def samples(cell: dict[str, Any]) -> list[float]:
    """The raw per-iteration latencies (ms) that are finite numbers."""
    raw = cell.get("samples_ms") or []
    if not isinstance(raw, list):
        return []
    kinds = set(map(type, raw))  # fast path (C-speed passes): plain numbers, all finite
    if kinds <= {float, int} and all(map(math.isfinite, raw)):
        return list(raw) if kinds <= {float} else list(map(float, raw))
    return [float(x) for x in raw if is_number(x)]


def status(cell: dict[str, Any]) -> str:
    s = cell.get("status")
    return s if isinstance(s, str) else "unknown"


def reason_text(cell: dict[str, Any]) -> str:
    """The reason of a skipped/failed cell; for a failure without one, the error. A
    failure whose error wraps another (``raise ... from e``) leads with its root cause,
    as the console line does: ``"ModuleNotFoundError: ... (outer: RuntimeError: ...)"``
    (:mod:`harness.core.rootcause`), so the summary, the terminal table and the pivot do
    not show only the wrapper."""
    if cell.get("status") == "failed":
        from harness.core.rootcause import root_cause

        rc = root_cause(cell)
        # a real wrapper: two or more chained exceptions, or a cause read from the worker's
        # output; a lone exception (or a traceback cut to its last line) wraps nothing
        if rc is not None and rc.outer and (len(rc.chain) >= 2 or rc.source == "stderr"):
            return rc.text()
    reason = cell.get("reason")
    if isinstance(reason, str) and reason.strip():
        return reason
    err = cell.get("error")
    if isinstance(err, dict):
        t, m = err.get("type"), err.get("message")
        return ": ".join(str(x) for x in (t, m) if x)
    return ""


def run_label(run: dict[str, Any]) -> str:
    """How charts and tables name a run: its id, plus its tag when it has one."""
    rid = str(run.get("run_id") or "?")
    tag = run.get("tag")
    return f"{rid} ({tag})" if isinstance(tag, str) and tag else rid


def status_counts(run: dict[str, Any]) -> dict[str, int]:
    out = {"ok": 0, "skipped": 0, "failed": 0}
    for cell in run.get("cells") or []:
        s = status(cell)
        out[s] = out.get(s, 0) + 1
    return out


# ----------------------------------------------------------------------------- contention, repeats, throughput


CONTENTION_EXPLANATION = (
    "contended: while this cell was timed, other processes competed for its CPU cores or GPU "
    "(evidence recorded by the worker), so its numbers describe a busy machine, not the code; "
    "no verdict or ranking is drawn from it"
)


def contention(cell: dict[str, Any]) -> str | None:
    """The short evidence (e.g. "other processes used 1.7 cores") when any measurement
    of the cell was flagged as contended, else None (also for files from before
    contention was recorded). Only ok cells are judged."""
    if status(cell) != "ok":
        return None
    from harness.analysis.history import contention_note  # lazy: keeps ``import reports`` light

    return contention_note(cell)


def contention_detail(cell: dict[str, Any]) -> str | None:
    """Every reason the worker recorded for a contended cell (for tooltips), else None."""
    if status(cell) != "ok":
        return None
    from harness.analysis.history import contention_note

    return contention_note(cell, short=False)


def contended_cells(runs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any], str]]:
    """(run, cell, evidence) for every contended ok cell, in stored order."""
    out = []
    for run, cell in iter_cells(runs):
        note = contention(cell)
        if note:
            out.append((run, cell, note))
    return out


def process_p50s(cell: dict[str, Any]) -> list[float]:
    """The median latency (ms) of each ok worker process of a cell measured with
    ``run --repeats N`` ([] without repeats)."""
    from harness.analysis.history import repeats

    out = []
    for r in repeats(cell):
        if r.get("status", "ok") != "ok":
            continue
        lat = (r.get("metrics") or {}).get("latency_ms") if isinstance(r.get("metrics"), dict) else None
        p50 = lat.get("p50") if isinstance(lat, dict) else None
        if not is_number(p50):
            xs = sorted(x for x in (r.get("samples_ms") or []) if is_number(x))
            p50 = (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2 if xs else None
        if is_number(p50):
            out.append(float(p50))
    return out


def repeat_spread(cell: dict[str, Any]) -> dict[str, Any] | None:
    """Run-to-run spread of a ``--repeats`` cell: ``{"processes", "ok", "low", "high",
    "cv"}`` over the per-process medians (ms; ``cv`` = their standard deviation / mean,
    None with one process). None for a cell measured in one process."""
    from harness.analysis.history import repeats

    reps = repeats(cell)
    if len(reps) < 2:
        return None
    p50s = process_p50s(cell)
    cv = None
    if len(p50s) >= 2:
        mean = sum(p50s) / len(p50s)
        sd = math.sqrt(sum((x - mean) ** 2 for x in p50s) / (len(p50s) - 1))
        cv = sd / mean if mean > 0 else None
    return {"processes": len(reps), "ok": len(p50s), "low": min(p50s) if p50s else None,
            "high": max(p50s) if p50s else None, "cv": cv}  # fmt: skip


def process_metric(cell: dict[str, Any], key: str) -> list[float]:
    """The top-level metric ``key`` of each ok worker process of a ``--repeats`` cell."""
    from harness.analysis.history import repeats

    out = []
    for r in repeats(cell):
        m = r.get("metrics") if isinstance(r.get("metrics"), dict) else {}
        if r.get("status", "ok") == "ok" and is_number(m.get(key)):
            out.append(float(m[key]))
    return out


def throughput_method(cell: dict[str, Any]) -> str:
    """How ``throughput_per_s`` was obtained: "sustained" (samples processed in the
    timed loop / its wall time; schema v3 cells, which also carry
    ``throughput_p50_per_s``) or "batch/p50": a result from before sustained throughput,
    whether migrated (``throughput_method`` says so) or handed over unmigrated (no
    ``throughput_p50_per_s`` beside it)."""
    method = metric(cell, "throughput_method")
    if isinstance(method, str) and method.strip().lower().startswith("batch/p50"):
        return "batch/p50"
    return "sustained" if "throughput_p50_per_s" in metrics(cell) else "batch/p50"
