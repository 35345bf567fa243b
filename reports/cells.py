"""Read-only accessors over result documents, shared by every report.

They only look things up in what a run stored (see ``harness.schema``); nothing here
measures or estimates. Where a value is missing the accessor returns ``None`` and,
through :func:`unavailable_reason`, the reason the run recorded for it.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

from reports.formatting import is_number

NOISE_IQR_RATIO = 0.10  # same threshold as harness.stats (torch.utils.benchmark's warning)
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
    if all(type(x) is float or type(x) is int for x in raw):  # fast path: plain numbers
        if all(math.isfinite(x) for x in raw):
            return [float(x) for x in raw]
    return [float(x) for x in raw if is_number(x)]


def status(cell: dict[str, Any]) -> str:
    s = cell.get("status")
    return s if isinstance(s, str) else "unknown"


def reason_text(cell: dict[str, Any]) -> str:
    """The reason of a skipped/failed cell; for a failure without one, the error."""
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
