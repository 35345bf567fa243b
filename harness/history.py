"""Trends and change points over many runs: steps and slow drift, and where they began.

Input: result documents (any order; sorted by ``created``). A *series* is one cell
(spec) on one machine (environment fingerprint): runs on different machines are never
mixed into one trend. The value of a run is the same location statistic
``harness compare`` uses (default: the minimum of the raw samples, the most
reproducible between processes on a shared machine), analysed on a log scale so a
change is relative.

Detection (deterministic, no tuning per series):

* noise: sigma = 1.4826 * MAD(first differences) / sqrt(2) -- robust to the steps
  and drifts being looked for (a step changes one difference; a slow drift barely
  moves the median difference);
* **steps**: binary segmentation. In a segment, the split k maximising the two-sample
  z = |mean(after) - mean(before)| / (sigma * sqrt(1/n1 + 1/n2)) is accepted when
  z > ``z_step`` (default 5: scanning up to ~100 positions at a family-wise level well
  below 1%), the relative change exceeds ``min_change`` and both sides have at least
  ``min_segment`` runs, and a step fits better than a ramp (otherwise it is drift);
* **drift**: in each step-free segment of at least 2 * ``min_segment`` runs, a
  Mann-Kendall trend test (p < ``drift_p``) with a Theil-Sen slope whose total change
  over the segment exceeds ``min_change``; the onset is the knee of the best
  "flat, then linear" (hinge) fit.

A change is reported at the first run of the new behaviour, with that run's id,
creation time and git commit (and the previous run's commit, so the suspect range of
commits is known).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from harness.compare import cell_key, fingerprint, location

Z_STEP = 5.0
MIN_CHANGE = 0.03
MIN_SEGMENT = 3
DRIFT_P = 0.01


@dataclass
class Point:
    run_id: str
    created: str
    commit: str | None
    value: float  # in the metric's unit (ms for latency)


@dataclass
class Change:
    kind: str  # "step" | "drift"
    index: int  # first run of the new behaviour
    run_id: str
    created: str
    commit: str | None
    previous_commit: str | None
    before: float  # level before (metric unit)
    after: float  # level after (step) / at the end of the drift
    change: float  # relative, (after - before) / before
    score: float  # z (step) or Mann-Kendall p-value (drift)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class Series:
    key: str
    machine: str
    host: str
    points: list[Point]
    noise: float | None = None  # robust sd of log values (relative run-to-run noise)
    changes: list[Change] = field(default_factory=list)


def _noise(y: np.ndarray) -> float:
    if y.size < 3:
        return 0.0
    d = np.diff(y)
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / math.sqrt(2.0))


def _sse(y: np.ndarray) -> float:
    return float(((y - y.mean()) ** 2).sum()) if y.size else 0.0


def _hinge(y: np.ndarray) -> tuple[int, float, float]:
    """Best "flat until k, then linear" fit: (k, slope, sse)."""
    n = y.size
    t = np.arange(n, dtype=float)
    best = (0, 0.0, _sse(y))
    for k in range(0, n - 2):
        x = np.maximum(0.0, t - k)
        A = np.column_stack([np.ones(n), x])
        coef, *_ = np.linalg.lstsq(A, y, rcond=None)
        sse = float(((A @ coef - y) ** 2).sum())
        if sse < best[2] - 1e-15:
            best = (k, float(coef[1]), sse)
    return best


def _mann_kendall(y: np.ndarray) -> float:
    """Two-sided p-value of the Mann-Kendall trend test (no tie correction)."""
    n = y.size
    s = float(np.sign(y[None, :] - y[:, None])[np.triu_indices(n, 1)].sum())
    var = n * (n - 1) * (2 * n + 5) / 18.0
    if var <= 0:
        return 1.0
    z = (s - math.copysign(1, s)) / math.sqrt(var) if s != 0 else 0.0
    return float(math.erfc(abs(z) / math.sqrt(2.0)))  # two-sided normal tail


def detect_changes(
    values: Sequence[float],
    z_step: float = Z_STEP,
    min_change: float = MIN_CHANGE,
    min_segment: int = MIN_SEGMENT,
    drift_p: float = DRIFT_P,
) -> list[dict[str, Any]]:
    """Change points in a series of positive values (in time order).

    Returns dicts ``{kind, index, before, after, change, score}`` sorted by index;
    ``index`` is the first value of the new behaviour.
    """
    v = np.asarray(values, dtype=float)
    if v.size < 2 * min_segment or np.any(~np.isfinite(v)) or np.any(v <= 0):
        return []
    y = np.log(v)
    sigma = max(_noise(y), 1e-6)
    out: list[dict[str, Any]] = []
    splits: list[int] = []

    def segment(s: int, e: int) -> None:
        n = e - s
        if n < 2 * min_segment:
            return
        seg = y[s:e]
        cs = np.cumsum(seg)
        total = cs[-1]
        best_k, best_z = -1, 0.0
        for k in range(min_segment, n - min_segment + 1):
            n1, n2 = k, n - k
            m1 = cs[k - 1] / n1
            m2 = (total - cs[k - 1]) / n2
            z = abs(m2 - m1) / (sigma * math.sqrt(1 / n1 + 1 / n2))
            if z > best_z:
                best_k, best_z = k, z
        if best_k < 0 or best_z <= z_step:
            return
        m1, m2 = float(seg[:best_k].mean()), float(seg[best_k:].mean())
        if abs(math.exp(m2 - m1) - 1) <= min_change:
            return
        step_sse = _sse(seg[:best_k]) + _sse(seg[best_k:])
        if _hinge(seg)[2] < step_sse:  # a ramp explains it better: drift, not a step
            return
        splits.append(s + best_k)
        out.append({"kind": "step", "index": s + best_k, "before": math.exp(m1), "after": math.exp(m2),
                    "change": math.exp(m2 - m1) - 1, "score": best_z})  # fmt: skip
        segment(s, s + best_k)
        segment(s + best_k, e)

    segment(0, y.size)
    bounds = [0] + sorted(splits) + [y.size]
    for c in out:  # levels of the adjacent segments, not of the segment that was split
        j = bounds.index(c["index"])
        m1, m2 = float(y[bounds[j - 1] : c["index"]].mean()), float(y[c["index"] : bounds[j + 1]].mean())
        c.update(before=math.exp(m1), after=math.exp(m2), change=math.exp(m2 - m1) - 1)
    for s, e in zip(bounds[:-1], bounds[1:]):
        seg = y[s:e]
        if seg.size < 2 * min_segment:
            continue
        p = _mann_kendall(seg)
        if p >= drift_p:
            continue
        i, j = np.triu_indices(seg.size, 1)
        slope = float(np.median((seg[j] - seg[i]) / (j - i)))  # Theil-Sen
        total = slope * (seg.size - 1)
        if abs(math.exp(total) - 1) <= min_change:
            continue
        k, _, _ = _hinge(seg)
        onset = s + min(k + 1, seg.size - 1)
        before = math.exp(float(np.median(y[s : onset]))) if onset > s else math.exp(float(seg[0]))
        after = math.exp(float(np.median(y[max(onset, e - min_segment) : e])))
        out.append({"kind": "drift", "index": onset, "before": before, "after": after,
                    "change": after / before - 1, "score": p})  # fmt: skip
    return sorted(out, key=lambda c: c["index"])


def _commit(doc: Mapping[str, Any]) -> str | None:
    h = doc.get("harness") or {}
    c = h.get("git_commit") if isinstance(h, Mapping) else None
    return str(c) if c else None


def build_history(
    runs: Sequence[Mapping[str, Any]], stat: str = "min", min_runs: int = 2 * MIN_SEGMENT, **detect_kw: Any
) -> list[Series]:
    """One :class:`Series` per (machine, cell) with at least ``min_runs`` ok runs, in
    time order, with its detected changes."""
    ordered = sorted(runs, key=lambda d: (str(d.get("created") or ""), str(d.get("run_id") or "")))
    groups: dict[tuple[str, str], Series] = {}
    for doc in ordered:
        machine = fingerprint(doc)
        host = str((doc.get("environment") or {}).get("host"))
        for cell in doc.get("cells") or []:
            if not isinstance(cell, Mapping) or cell.get("status") != "ok":
                continue
            xs = [x for x in (cell.get("samples_ms") or []) if isinstance(x, (int, float)) and math.isfinite(x)]
            if not xs:
                continue
            key = cell_key(cell)
            ser = groups.setdefault((machine, key), Series(key=key, machine=machine, host=host, points=[]))
            ser.points.append(Point(str(doc.get("run_id")), str(doc.get("created") or ""), _commit(doc),
                                    location(np.asarray(xs, dtype=float), stat)))  # fmt: skip
    out = []
    for ser in groups.values():
        if len(ser.points) < min_runs:
            continue
        vals = [p.value for p in ser.points]
        if all(v > 0 for v in vals):
            ser.noise = _noise(np.log(np.asarray(vals)))
        for c in detect_changes(vals, **detect_kw):
            i = c["index"]
            pt = ser.points[i]
            ser.changes.append(Change(kind=c["kind"], index=i, run_id=pt.run_id, created=pt.created, commit=pt.commit,
                                      previous_commit=ser.points[i - 1].commit if i > 0 else None,
                                      before=c["before"], after=c["after"], change=c["change"], score=c["score"]))  # fmt: skip
        out.append(ser)
    return sorted(out, key=lambda s: (s.machine, s.key))
