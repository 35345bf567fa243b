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

Which metric: ``latency_ms`` (default, from the raw samples) or any metric of the
declared table (:mod:`harness.core.metrics`, e.g. ``throughput_per_s``,
``energy.energy_per_sample_j``). Its unit and direction come from that table, never
from its name, so a change is also labelled worse or better (``Change.worse``): a
higher throughput is an improvement, a higher latency a slow-down.

Contention: a measurement taken while other processes competed for the machine
(``timing.contention.detected``) is kept in the series, marked, but never used to
detect a change. With ``run --repeats`` the value of a run is the median over the
cell's uncontended worker processes (each process's own statistic), so one contended
process does not make the run unusable; only when every process was contended is the
point marked contended.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from harness.core import metrics as M
from harness.analysis.compare import cell_key, fingerprint, location

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
    contended: str | None = None  # the contention evidence when this value was measured under contention
    processes: int = 1  # worker processes the value is the median of (run --repeats)


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
    worse: bool | None = None  # in the metric's worse direction (declared table); None: no direction

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
    metric: str = "latency_ms"  # the declared metric (harness.core.metrics) the values are of
    unit: str = "ms"
    direction: str | None = "lower"  # which is better, from the declared table
    stat: str | None = "min"  # latency_ms: the location statistic of each run's samples

    @property
    def clean(self) -> list[Point]:
        """The points measured without contention (the ones changes are detected on)."""
        return [p for p in self.points if p.contended is None]


def _exp(x: float) -> float:
    """``math.exp`` that saturates at inf instead of raising: the log-scale differences
    of a series can exceed a double's range (a stored 1e-300 ms next to 1e300 ms is a
    valid, if absurd, result file) and must not stop the report."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


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
        if abs(_exp(m2 - m1) - 1) <= min_change:
            return
        step_sse = _sse(seg[:best_k]) + _sse(seg[best_k:])
        if _hinge(seg)[2] < step_sse:  # a ramp explains it better: drift, not a step
            return
        splits.append(s + best_k)
        out.append({"kind": "step", "index": s + best_k, "before": _exp(m1), "after": _exp(m2),
                    "change": _exp(m2 - m1) - 1, "score": best_z})  # fmt: skip
        segment(s, s + best_k)
        segment(s + best_k, e)

    segment(0, y.size)
    bounds = [0] + sorted(splits) + [y.size]
    for c in out:  # levels of the adjacent segments, not of the segment that was split
        j = bounds.index(c["index"])
        m1, m2 = float(y[bounds[j - 1] : c["index"]].mean()), float(y[c["index"] : bounds[j + 1]].mean())
        c.update(before=_exp(m1), after=_exp(m2), change=_exp(m2 - m1) - 1)
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
        if abs(_exp(total) - 1) <= min_change:
            continue
        k, _, _ = _hinge(seg)
        onset = s + min(k + 1, seg.size - 1)
        before = _exp(float(np.median(y[s : onset]))) if onset > s else _exp(float(seg[0]))
        after = _exp(float(np.median(y[max(onset, e - min_segment) : e])))
        out.append({"kind": "drift", "index": onset, "before": before, "after": after,
                    "change": after / before - 1, "score": p})  # fmt: skip
    return sorted(out, key=lambda c: c["index"])


def _commit(doc: Mapping[str, Any]) -> str | None:
    h = doc.get("harness") or {}
    c = h.get("git_commit") if isinstance(h, Mapping) else None
    return str(c) if c else None


# ----------------------------------------------------------------------------- contention and repeats


def _contended(timing: Any) -> Mapping[str, Any] | None:
    """The ``contention`` record of a ``timing`` dict when it says detected, else None
    (also for files written before contention was recorded)."""
    if not isinstance(timing, Mapping):
        return None
    c = timing.get("contention")
    return c if isinstance(c, Mapping) and c.get("detected") is True else None


def _decisive(reasons: Any) -> list[str]:
    """The reasons that decided (not "supporting: ..." or the list of busiest processes)."""
    if not isinstance(reasons, list):
        return []
    return [str(r).strip() for r in reasons if isinstance(r, str) and r.strip()
            and not r.startswith(("supporting:", "busiest other processes"))]  # fmt: skip


def contention_text(record: Mapping[str, Any], short: bool = True) -> str:
    """The evidence of one contention record (``timing.contention``, see
    :mod:`harness.core.contention`) as text. ``short``: one clause from the numbers (e.g.
    "other processes used 1.7 of 2 cores", "CPU steal 12%", "1 other process on
    cuda:0"), else the first deciding reason; otherwise every reason the worker wrote."""
    reasons = record.get("reasons")
    if not short:
        texts = [str(r).strip() for r in reasons if isinstance(r, str) and r.strip()] if isinstance(reasons, list) else []
        return "; ".join(texts) or contention_text(record, short=True)
    ev = record.get("evidence") if isinstance(record.get("evidence"), Mapping) else {}
    bits = []
    windows = ev.get("windows") if isinstance(ev.get("windows"), Mapping) else {}
    cpu = [w for w in windows.values() if isinstance(w, Mapping) and (w.get("cpu_contended") or w.get("pressure_contended"))
           and _finite(w.get("other_cpu_cores"))]  # fmt: skip
    if cpu:
        ncpu = ev.get("ncpu")
        of = f" of {ncpu}" if isinstance(ncpu, int) and not isinstance(ncpu, bool) else ""
        bits.append(f"other processes used {max(float(w['other_cpu_cores']) for w in cpu):.1f}{of} cores")
    steal = [w for w in windows.values() if isinstance(w, Mapping) and w.get("steal_contended") and _finite(w.get("steal_share"))]
    if steal:
        bits.append(f"CPU steal {max(float(w['steal_share']) for w in steal):.0%}")
    gpu = ev.get("gpu") if isinstance(ev.get("gpu"), Mapping) else {}
    n_gpu = gpu.get("other_process_count")
    if isinstance(n_gpu, int) and not isinstance(n_gpu, bool) and n_gpu > 0:
        bits.append(f"{n_gpu} other process{'es' if n_gpu > 1 else ''} on {gpu.get('device') or 'the GPU'}")
    if bits:
        return ", ".join(bits)
    decisive = _decisive(reasons)
    if decisive:
        return decisive[0].split(" (", 1)[0]
    if isinstance(ev, Mapping):
        nums = [f"{k} {v:.3g}" for k, v in ev.items() if _finite(v)]
        if nums:
            return ", ".join(nums[:4])
    return "no evidence recorded"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def repeats(cell: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The per-process entries of a cell measured with ``run --repeats N`` ([] without)."""
    reps = cell.get("repeats")
    return [r for r in reps if isinstance(r, Mapping)] if isinstance(reps, list) else []


def contention_note(cell: Mapping[str, Any], short: bool = True) -> str | None:
    """None when no measurement of ``cell`` was flagged as contended (or the file predates
    contention detection); otherwise its evidence (:func:`contention_text`), naming the
    contended worker processes when the cell was measured in several."""
    top = _contended(cell.get("timing"))
    reps = repeats(cell)
    hit = [(int(r.get("index", i)) if _finite(r.get("index")) else i, c)
           for i, r in enumerate(reps) if (c := _contended(r.get("timing"))) is not None]  # fmt: skip
    if top is None and not hit:
        return None
    if not hit:
        return contention_text(top, short)  # type: ignore[arg-type]
    if len(reps) <= 1:
        return contention_text(hit[0][1], short)
    if len(hit) == 1:
        return f"process {hit[0][0] + 1} of {len(reps)}: {contention_text(hit[0][1], short)}"
    text = "; ".join(f"process {i + 1}: {contention_text(c, short)}" for i, c in hit)
    return f"{len(hit)} of {len(reps)} processes: {text}"


def _value(record: Mapping[str, Any], metric: str, stat: str) -> float | None:
    """One worker process's (or one cell's) value of ``metric``: the location statistic
    of its raw samples for ``latency_ms``, else the stored metric at that dotted path."""
    if metric == "latency_ms":
        xs = [x for x in (record.get("samples_ms") or [])
              if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)]  # fmt: skip
        return location(np.asarray(xs, dtype=float), stat) if xs else None
    cur: Any = record.get("metrics") or {}
    for part in metric.split("."):
        cur = cur.get(part) if isinstance(cur, Mapping) else None
    if isinstance(cur, (int, float)) and not isinstance(cur, bool) and math.isfinite(cur):
        return float(cur)
    return None


def run_value(cell: Mapping[str, Any], metric: str = "latency_ms", stat: str = "min") -> tuple[float | None, str | None, int]:
    """``(value, contention, processes)`` of one cell of one run.

    With repeats: the median over the ok worker processes that were not contended of
    each process's own value (pooling samples would let the number of processes move
    a minimum); when every process was contended, the median over all of them and the
    contention evidence. Without repeats: the cell's own value and its contention
    evidence (None when clean)."""
    vals = []
    for r in repeats(cell):
        if r.get("status", "ok") != "ok":
            continue
        v = _value(r, metric, stat)
        if v is not None:
            vals.append((v, _contended(r.get("timing")) is not None))
    if vals:
        clean = [v for v, bad in vals if not bad]
        if clean:
            return float(np.median(clean)), None, len(clean)
        return float(np.median([v for v, _ in vals])), contention_note(cell), len(vals)
    v = _value(cell, metric, stat)
    return v, (contention_note(cell) if v is not None else None), 1


def _is_worse(change: float, direction: str | None) -> bool | None:
    if direction == M.LOWER:
        return change > 0
    if direction == M.HIGHER:
        return change < 0
    return None


def build_history(
    runs: Sequence[Mapping[str, Any]], stat: str = "min", min_runs: int = 2 * MIN_SEGMENT,
    metric: str = "latency_ms", **detect_kw: Any,
) -> list[Series]:
    """One :class:`Series` per (machine, cell) with at least ``min_runs`` ok runs, in
    time order, with its detected changes.

    ``metric``: ``latency_ms`` (the ``stat`` of each run's raw samples, ms) or any
    declared metric (:mod:`harness.core.metrics`; a last path component such as
    ``energy_per_sample_j`` is accepted when unambiguous). An undeclared metric raises
    :class:`harness.core.metrics.UnknownMetric`: its direction would have to be guessed.
    Contended points are kept (marked) but changes are detected on the others only."""
    decl = M.get(metric)
    name = decl.name
    ordered = sorted(runs, key=lambda d: (str(d.get("created") or ""), str(d.get("run_id") or "")))
    groups: dict[tuple[str, str], Series] = {}
    for doc in ordered:
        machine = fingerprint(doc)
        host = str((doc.get("environment") or {}).get("host"))
        for cell in doc.get("cells") or []:
            if not isinstance(cell, Mapping) or cell.get("status") != "ok":
                continue
            value, contended, nproc = run_value(cell, name, stat)
            if value is None:
                continue
            key = cell_key(cell)
            ser = groups.setdefault((machine, key), Series(
                key=key, machine=machine, host=host, points=[], metric=name, unit=decl.unit,
                direction=decl.direction, stat=stat if name == "latency_ms" else None))  # fmt: skip
            ser.points.append(Point(str(doc.get("run_id")), str(doc.get("created") or ""), _commit(doc),
                                    value, contended, nproc))  # fmt: skip
    out = []
    for ser in groups.values():
        if len(ser.points) < min_runs:
            continue
        where = [i for i, p in enumerate(ser.points) if p.contended is None]  # clean points' indices
        vals = [ser.points[i].value for i in where]
        if vals and all(v > 0 for v in vals):
            ser.noise = _noise(np.log(np.asarray(vals)))
        for c in detect_changes(vals, **detect_kw):
            j = c["index"]
            i = where[j]
            pt = ser.points[i]
            prev = ser.points[where[j - 1]].commit if j > 0 else None  # the last clean run before it
            ser.changes.append(Change(kind=c["kind"], index=i, run_id=pt.run_id, created=pt.created, commit=pt.commit,
                                      previous_commit=prev, before=c["before"], after=c["after"], change=c["change"],
                                      score=c["score"], worse=_is_worse(c["change"], decl.direction)))  # fmt: skip
        out.append(ser)
    return sorted(out, key=lambda s: (s.machine, s.key))
