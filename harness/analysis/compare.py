"""Statistics and verdicts for ``harness compare``: pure functions on result documents.

The problem this solves: on a shared machine the run-to-run (between-process) noise is
far larger than the sampling error inside one run. Two separate runs of unchanged code
give medians that differ by 10-100% here, while each run's own confidence interval is
1-3% wide, so any test on the raw samples of two single runs (Mann-Whitney U on
thousands of samples) calls almost every difference "significant". The unit of
replication for a regression gate is therefore the *process*, not the sample.

How a cell is compared (docs/compare.md has the full argument and the calibration):

* **Metric**: direction (lower/higher is better) and unit come from the declared table
  :mod:`harness.core.metrics`; an undeclared or non-gateable metric is refused. Nothing is
  guessed from a metric's name.
* **Observations**: each worker process that measured the cell is one observation: each
  ``ok`` entry of ``cell["repeats"]`` (``harness run --repeats N``), else the cell
  itself; a side given as several result files has one or more per file. The value of
  an observation is a statistic of that process's own raw samples (``latency_ms``:
  ``min``, ``p10``, ``p50`` or ``mean``) or that process's metric (a dotted path).
* Everything is done on z = log(value), oriented so that larger z is worse
  (z = -log(value) for higher-is-better metrics).
* **between-run test** (the cell has at least one degree of freedom of run-to-run
  variation: 2+ processes on at least one side): Student/Yuen t on z with the pooled
  run-to-run variance; a cell whose variance is below the other cells' typical noise is
  moderated up towards it (limma's empirical Bayes prior, weight estimated from the
  data and at most ``PRIOR_DF_MAX``); a noisier cell keeps its own variance and df.
* **One-sided trimming**: interference only ever makes a timing metric worse, so when
  both sides have the same number n >= 4 of processes the worst ``floor(n/4)`` of each
  side are trimmed (Yuen's trimmed t with upper trimming, df x ``YUEN_DF_FACTOR``). Only *equal* sides are
  trimmed: the same estimator on both sides keeps the test exactly unbiased under the
  null for any noise distribution (trimming one side only biased 8-vs-3 and 20-vs-1
  comparisons towards "slower": 10.8% and 12.0% false alarms at a nominal 5%).
* **No run-to-run noise, no verdict**: with one process per side the verdict is
  ``inconclusive: run-to-run noise unknown`` unless ``within_run`` is set (then
  Mann-Whitney U on the raw samples + a bootstrap CI, labelled ``within-run only``; a
  side over ``WITHIN_RUN_MAX_SAMPLES`` is tested on a deterministic subsample, the change
  still from all samples, and the cell's ``subsample`` says so: bounded cost, issue 13).
* **Contention**: a cell with any contended candidate observation
  (``timing.contention.detected`` on the cell or a repeat), or whose baseline has only
  contended observations, is ``inconclusive: contended`` unless ``allow_contended``;
  contended baseline processes are left out while clean ones remain (one busy night in
  a baseline history does not switch the gate off).
* p-values are one-sided per direction and Holm-adjusted over the tested cells.
* **regression** = adjusted p < alpha in the worse direction AND the estimated change
  exceeds the cell's threshold (``auto``: the noise band, at least ``AUTO_FLOOR``).
* **min_detectable_change**: the change of one cell (all others unchanged) that the gate
  as configured flags with probability ``POWER``: Holm (p < alpha/m), the threshold and
  the t distribution with the cell's degrees of freedom all included.

**Across one field** (:func:`compare_across`, ``compare RUNS --across FIELD=BASELINE``): the
pairs "a cell / the cell differing from it only in FIELD, with FIELD = BASELINE" of one
pool of runs go through the same gate (:func:`compare_observations`), worded as
faster / slower / no detectable difference.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.core import metrics as M
from harness.errors import UserError

STATS = ("min", "p10", "p50", "mean")
DEFAULT_STAT = "min"
DEFAULT_ALPHA = 0.05
AUTO_FLOOR = 0.01  # auto thresholds are at least 1%
FALLBACK_THRESHOLD = 0.10  # auto with no measured run-to-run noise (within-run test)
POWER = 0.80  # for the minimum detectable change
PRIOR_DF_MAX = 4.0  # most weight (degrees of freedom) the other cells' noise gets in a moderated variance
PRIOR_MIN_CELLS = 3  # fewer tested cells: no moderation
TRIM_SLOW_RUNS = 0.25  # timing metrics, equal sides of n >= 4: trim the worst floor(n/4) processes per side
# Yuen's df (h_b + h_c - 2) overstates what one-sided winsorized variances know: their
# effective (Satterthwaite) df is 0.89-0.94 of it (normal noise, 4-20 processes per side,
# 400k simulations each); 0.88 keeps tail probabilities down to alpha/180 at or below nominal
YUEN_DF_FACTOR = 0.88
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 20261123
# within-run test (--within-run): a side with more samples is tested on a deterministic subsample
# of this many (cost bound: Mann-Whitney O(m log m), bootstrap O(resamples x m)); the estimate
# stays the statistic of all samples and the CI is rescaled (see _within). Cells measured by
# `harness run` hold hundreds to a few thousand samples and are never thinned.
WITHIN_RUN_MAX_SAMPLES = 20_000
VAR_FLOOR = 1e-12  # variance of log values (sd 1e-6): a deterministic metric
# units of metrics that interference from other processes only ever makes worse (time,
# rates): their run-to-run noise is one-sided and the worst processes may be trimmed
ONE_SIDED_UNITS = frozenset({"ms", "s", "samples/s", "FLOP/s"})
ONE_SIDED_METRICS = frozenset({"mfu"})

NOISE_UNKNOWN = "inconclusive: run-to-run noise unknown"
CONTENDED = "inconclusive: contended"


class CompareError(UserError, ValueError):
    """A user mistake in comparison settings (bad threshold, unknown stat or metric...)."""


# ----------------------------------------------------------------------------- settings


def parse_threshold(text: Any) -> float | None:
    """``"5%"``, ``"5"``, ``5`` or ``0.05``-as-``"0.05"`` -> 0.05; ``"auto"`` -> None.

    Bare numbers are percentages (``5`` means 5%), as on the command line.
    """
    if isinstance(text, str) and text.strip().lower() == "auto":
        return None
    s = str(text).strip().rstrip("%").strip()
    try:
        v = float(s)
    except ValueError:
        raise CompareError(f"threshold must be a percentage like 5 or 5% or 'auto', got {text!r}") from None
    if not (0 <= v < 1000) or math.isnan(v):
        raise CompareError(f"threshold must be between 0% and 1000%, got {text!r}")
    return v / 100.0


def resolve_metric(name: str) -> M.Metric:
    """The declared, gateable metric ``name`` (dotted path or unambiguous last component);
    :class:`CompareError` listing the gateable metrics otherwise."""
    m = M.lookup(str(name))
    gateable = ", ".join(M.gateable_names())
    if m is None:
        raise CompareError(f"unknown metric {name!r} (not in the declared metric table); gateable metrics: {gateable}")
    if not m.gateable:
        why = "it has no better direction" if m.direction is None else "it is not declared gateable"
        raise CompareError(f"metric {m.name!r} cannot be gated ({why}); gateable metrics: {gateable}")
    return m


def check_metric_present(docs: Iterable[Mapping[str, Any]], metric: str) -> None:
    """:class:`CompareError` when no ok cell of ``docs`` has ``metric`` (a misspelt or
    unmeasured metric would otherwise pass the gate silently), listing the gateable
    metrics the cells do have."""
    cells: list[Mapping[str, Any]] = []
    for d in docs:
        cs = d.get("cells") if isinstance(d, Mapping) else None
        for c in cs if isinstance(cs, list) else []:
            if not isinstance(c, Mapping):
                continue
            cells.append(c)
            reps = c.get("repeats")
            cells.extend(r for r in (reps if isinstance(reps, list) else []) if isinstance(r, Mapping))
    have = M.present(cells)
    if metric in have:
        return
    gate = [n for n in have if M.TABLE[n].gateable]
    raise CompareError(f"no cell on either side has metric {metric!r}; metrics present: "
                       + (", ".join(gate) if gate else "none (no ok cells)"))  # fmt: skip


@dataclass(frozen=True)
class CompareSettings:
    """How to compare. ``metric`` is resolved against :mod:`harness.core.metrics` (stored as
    its declared dotted name); ``threshold`` is a fraction (0.05 = 5%) or None for auto;
    ``workload_thresholds``/``cell_thresholds`` override it per workload / cell id.
    ``within_run``: with one process per side, test the raw samples (ignores run-to-run
    noise). ``allow_contended``: draw verdicts from contended measurements too."""

    metric: str = "latency_ms"
    stat: str = DEFAULT_STAT
    threshold: float | None = None
    alpha: float = DEFAULT_ALPHA
    workload_thresholds: Mapping[str, float | None] = field(default_factory=dict)
    cell_thresholds: Mapping[str, float | None] = field(default_factory=dict)
    fallback_threshold: float = FALLBACK_THRESHOLD
    within_run: bool = False
    allow_contended: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "metric", resolve_metric(self.metric).name)
        if self.stat not in STATS:
            raise CompareError(f"unknown stat {self.stat!r}; choose from: {', '.join(STATS)}")
        if not 0 < self.alpha < 0.5:
            raise CompareError(f"alpha must be in (0, 0.5), got {self.alpha}")
        if self.threshold is not None and self.threshold < 0:
            raise CompareError("threshold must be >= 0")

    @property
    def declared(self) -> M.Metric:
        return M.TABLE[self.metric]

    @property
    def from_samples(self) -> bool:
        """True when each observation's value is ``stat`` of its raw samples."""
        return self.declared.from_samples

    def threshold_for(self, key: str, workload: str) -> tuple[float | None, str]:
        """(threshold fraction or None for auto, where it came from)."""
        if key in self.cell_thresholds:
            return self.cell_thresholds[key], "config (cell)"
        if workload in self.workload_thresholds:
            return self.workload_thresholds[workload], "config (workload)"
        return self.threshold, "default"


def settings_from_config(cfg: Mapping[str, Any], base: CompareSettings) -> CompareSettings:
    """Merge a thresholds config (parsed YAML) into ``base``.

    Keys: ``threshold`` (default, e.g. ``5%`` or ``auto``), ``alpha``, ``stat``,
    ``fallback_threshold``, ``workloads: {name: threshold}``, ``cells: {id: threshold}``.
    """
    if not isinstance(cfg, Mapping):
        raise CompareError("thresholds config must be a mapping (see docs/compare.md)")
    known = {"threshold", "alpha", "stat", "fallback_threshold", "workloads", "cells"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise CompareError(f"unknown key {unknown[0]!r} in thresholds config; allowed: {', '.join(sorted(known))}")
    kw: dict[str, Any] = {}
    if "threshold" in cfg:
        kw["threshold"] = parse_threshold(cfg["threshold"])
    if "alpha" in cfg:
        try:
            kw["alpha"] = float(cfg["alpha"])
        except (TypeError, ValueError):
            raise CompareError(f"alpha must be a number, got {cfg['alpha']!r}") from None
    if "stat" in cfg:
        kw["stat"] = str(cfg["stat"])
    if "fallback_threshold" in cfg:
        fb = parse_threshold(cfg["fallback_threshold"])
        if fb is None:
            raise CompareError("fallback_threshold cannot be 'auto'")
        kw["fallback_threshold"] = fb
    for name, target in (("workloads", "workload_thresholds"), ("cells", "cell_thresholds")):
        sub = cfg.get(name) or {}
        if not isinstance(sub, Mapping):
            raise CompareError(f"'{name}' must map names to thresholds")
        kw[target] = {str(k): parse_threshold(v) for k, v in sub.items()}
    merged = {f: getattr(base, f) for f in base.__dataclass_fields__}
    merged.update(kw)
    return CompareSettings(**merged)


# ----------------------------------------------------------------------------- observations


def _key_parts(cell: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(spec field, its segment of :func:`cell_key`) in key order."""
    s = cell.get("spec") or {}
    if not _is_map(s):
        s = {}
    return (
        [(k, str(s.get(k, "?"))) for k in ("workload", "backend", "device", "variant", "mode")]
        + [("batch_size", f"bs{s.get('batch_size', '?')}"), ("size", str(s.get("size", "?")))]
        + ([("tokens", f"p{s.get('prompt_len', '?')}g{s.get('gen_len', '?')}")] if s.get("mode") == "generate" else [])
        + ([("world_size", f"ws{s['world_size']}")] if s.get("world_size") else [])
        + _model_version(cell)
    )


def _model_version(cell: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A user's model file (custom:, hf:PATH, onnx:) is part of the cell's identity: two
    versions of it are two cells, never compared as one (``model.source_sha256``)."""
    model = cell.get("model")
    digest = model.get("source_sha256") if _is_map(model) else None
    return [("model", f"sha256:{digest[:12]}")] if isinstance(digest, str) and digest else []


def cell_key(cell: Mapping[str, Any]) -> str:
    """The identity of a cell across runs (its spec as ``a/b/c/...``)."""
    return "/".join(seg for _, seg in _key_parts(cell))


def higher_is_better(metric: str) -> bool:
    """True for declared higher-is-better metrics (delegates to :mod:`harness.core.metrics`)."""
    return M.higher_is_better(metric)


def one_sided(metric: M.Metric) -> bool:
    """Is interference from other processes only ever making ``metric`` worse (time and
    rates), so that the worst processes of a side may be trimmed?"""
    return metric.unit in ONE_SIDED_UNITS or metric.name in ONE_SIDED_METRICS


def _finite(xs: Sequence[Any]) -> np.ndarray:
    """The finite numbers of ``xs`` (booleans and non-numbers dropped) as floats."""
    if set(map(type, xs)) <= {int, float}:  # fast path: what json.loads gives
        a = np.asarray(xs, dtype=float)
    else:
        a = np.asarray([x for x in xs if isinstance(x, (int, float)) and not isinstance(x, bool)], dtype=float)
    return a[np.isfinite(a)]


def location(samples: np.ndarray, stat: str) -> float:
    """The location statistic of one observation's raw samples."""
    if stat == "min":
        return float(samples.min())
    if stat == "p10":
        return float(np.percentile(samples, 10))
    if stat == "p50":
        return float(np.median(samples))
    return float(samples.mean())


def _is_map(x: Any) -> bool:
    """A mapping (dicts, as JSON gives them, checked first: ``Mapping`` checks are slow)."""
    return type(x) is dict or isinstance(x, Mapping)


def _dotted(metrics: Any, path: str) -> Any:
    cur: Any = metrics
    for part in path.split("."):
        if not _is_map(cur):
            return None
        cur = cur.get(part)
    return cur


def contention_of(record: Mapping[str, Any]) -> bool | None:
    """``timing.contention.detected`` of a cell or repeat: True/False, None when unknown
    (older files have no contention record)."""
    t = record.get("timing")
    c = t.get("contention") if _is_map(t) else None
    d = c.get("detected") if _is_map(c) else None
    return d if isinstance(d, bool) else None


@dataclass
class Observation:
    """One worker process's measurement of a cell."""

    run_id: str
    value: float | None  # the location statistic (or scalar metric); None when not measured
    samples: np.ndarray | None  # raw samples in ms (latency only)
    status: str
    workload: str
    threads: Any = None
    reason: str = ""
    contended: bool | None = None  # None: not recorded (older files)


def _observation(rec: Mapping[str, Any], run_id: str, workload: str, threads: Any, metric: str, stat: str,
                 from_samples: bool, contended: bool | None) -> Observation:
    status = str(rec.get("status"))
    value: float | None = None
    samples = None
    if status == "ok":
        if from_samples:
            if metric.startswith("generation."):  # the per-token times a generate cell keeps
                from harness.core.generation import raw_samples

                raw: Any = raw_samples(rec, metric)
            else:
                raw = rec.get("samples_ms")
            s = _finite(raw if isinstance(raw, list) else [])
            if s.size:
                samples = s
                value = location(s, stat)
        else:
            v = _dotted(rec.get("metrics"), metric)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                value = float(v)
    reason = rec.get("reason")
    return Observation(run_id=run_id, value=value, samples=samples, status=status, workload=workload,
                       threads=threads, reason=str(reason) if reason else "", contended=contended)  # fmt: skip


def _value_of(rec: Mapping[str, Any], metric: str, stat: str, from_samples: bool) -> float | None:
    """The value of ``metric`` in one cell or repeat record (None if not measured)."""
    return _observation(rec, "", "", None, metric, stat, from_samples, None).value


def observations(docs: Sequence[Mapping[str, Any]], metric: str, stat: str) -> dict[str, list[Observation]]:
    """Cell key -> observations over ``docs``: one per ``ok`` repeat of a cell measured
    with ``--repeats`` (failed/skipped repeats are kept as unmeasured observations), else
    one per cell. ``metric`` is a declared name (dotted path)."""
    m = M.lookup(metric)
    from_samples = bool(m and m.from_samples)
    path = m.name if m else metric
    out: dict[str, list[Observation]] = {}
    for doc in docs:
        seen: set[str] = set()
        cells = doc.get("cells")
        for cell in cells if isinstance(cells, list) else []:
            if not _is_map(cell):
                continue
            key = cell_key(cell)
            if key in seen:  # a cell repeated inside one run is not another run: first one counts
                continue
            seen.add(key)
            spec = cell.get("spec") if _is_map(cell.get("spec")) else {}
            runtime = cell.get("runtime") if _is_map(cell.get("runtime")) else {}
            run_id = str(doc.get("run_id"))
            workload = str(spec.get("workload"))
            cell_cont = contention_of(cell)
            reps = cell.get("repeats")
            reps = [r for r in reps if _is_map(r)] if isinstance(reps, list) else []
            if not reps:
                out.setdefault(key, []).append(_observation(cell, run_id, workload, runtime.get("threads"), path,
                                                            stat, from_samples, cell_cont))  # fmt: skip
                continue
            per_process = [_value_of(r, path, stat, from_samples) for r in reps if r.get("status") == "ok"]
            if not from_samples and not any(v is not None for v in per_process) \
                    and _value_of(cell, path, stat, from_samples) is not None:
                # a metric derived over the whole cell (e.g. scaling efficiency across
                # cells): the cell's own value is its one observation
                out.setdefault(key, []).append(_observation(cell, run_id, workload, runtime.get("threads"), path,
                                                            stat, from_samples, cell_cont))  # fmt: skip
                continue
            for i, r in enumerate(reps):
                rt = r.get("runtime") if _is_map(r.get("runtime")) else runtime
                rc = contention_of(r)
                cont = rc if rc is not None else cell_cont  # the process's own evidence first
                idx = r.get("index", i)
                out.setdefault(key, []).append(_observation(r, f"{run_id}#{idx}", workload, rt.get("threads"), path,
                                                            stat, from_samples, cont))  # fmt: skip
    return out


# ----------------------------------------------------------------------------- tests


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adj = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adj[i] = running
    return adj


def _thin(x: np.ndarray, cap: int) -> np.ndarray:
    """At most ``cap`` samples, evenly strided (keeps the time order's coverage)."""
    if x.size <= cap:
        return x
    return x[np.linspace(0, x.size - 1, cap).astype(int)]


def _bootstrap_stats(b: np.ndarray, c: np.ndarray, stat: str, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap distributions of ``stat`` of each side (same draws as
    :func:`_bootstrap_log_ratio`). O(resamples x (b.size + c.size)): callers thin first."""
    rng = np.random.default_rng(seed)

    def boot(x: np.ndarray) -> np.ndarray:
        out = np.empty(resamples)
        chunk = max(1, min(resamples, 2_000_000 // max(1, x.size)))
        for start in range(0, resamples, chunk):
            stop = min(resamples, start + chunk)
            xs = x[rng.integers(0, x.size, size=(stop - start, x.size))]
            if stat == "min":
                out[start:stop] = xs.min(axis=1)
            elif stat == "p10":
                out[start:stop] = np.percentile(xs, 10, axis=1)
            elif stat == "p50":
                out[start:stop] = np.median(xs, axis=1)
            else:
                out[start:stop] = xs.mean(axis=1)
        return out

    return boot(b), boot(c)


def _bootstrap_log_ratio(b: np.ndarray, c: np.ndarray, stat: str, resamples: int, seed: int) -> np.ndarray:
    """Bootstrap distribution of log(stat(c) / stat(b)), resampling each side's samples."""
    lb, lc = _bootstrap_stats(b, c, stat, resamples, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(lc) - np.log(lb)


@dataclass
class CellComparison:
    """The comparison of one cell; ``ratio`` is candidate/baseline of the metric as
    stored (latency: >1 is slower), ``change`` the relative change in the "worse"
    direction (positive = worse). ``min_detectable_change`` (fraction, worse direction)
    is the change of this cell alone that the gate as configured flags as a regression
    with probability ``POWER`` (Holm over ``Comparison.tested`` cells, the threshold and
    the t distribution included); None when the cell cannot be tested."""

    key: str
    workload: str
    verdict: str  # regression | improvement | unchanged | inconclusive | only_baseline | only_candidate | not_comparable
    verdict_text: str = ""  # e.g. "inconclusive: contended"; empty = the verdict itself
    n_baseline: int = 0
    n_candidate: int = 0
    baseline_value: float | None = None
    candidate_value: float | None = None
    ratio: float | None = None
    ratio_ci: tuple[float, float] | None = None
    change: float | None = None
    p_worse: float | None = None
    p_better: float | None = None
    p_adjusted: float | None = None
    test: str = ""
    noise_model: str = ""
    run_noise: float | None = None  # sd of log value between processes (~ relative sd), moderated
    df: float | None = None  # degrees of freedom of the test
    threshold: float | None = None
    threshold_source: str = ""
    min_detectable_change: float | None = None
    contended: bool | None = None  # any observation contended (None: not recorded)
    candidate_failed: bool = False  # a candidate process of this cell failed (the cell is failed)
    notes: list[str] = field(default_factory=list)
    # within-run test on a deterministic subsample (a side over WITHIN_RUN_MAX_SAMPLES):
    # {"baseline": [used, total], "candidate": [used, total], "cap", "method"}; None otherwise
    subsample: dict[str, Any] | None = None

    @property
    def mdc(self) -> float | None:
        """Alias of :attr:`min_detectable_change`."""
        return self.min_detectable_change

    @property
    def label(self) -> str:
        return self.verdict_text or self.verdict

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["ratio_ci"] = list(self.ratio_ci) if self.ratio_ci else None
        d["verdict_text"] = self.label
        return d


MDC_BASIS = (f"{POWER:.0%} power for one changed cell among the tested cells (Holm: p < alpha/tested), the "
             "estimate beyond the threshold too, t distribution with the cell's degrees of freedom")  # fmt: skip


@dataclass
class Comparison:
    settings: CompareSettings
    cells: list[CellComparison]
    warnings: list[str]
    baseline_runs: list[str]
    candidate_runs: list[str]
    tested: int = 0  # cells in the Holm family (the m of alpha/m)
    prior_df: float = 0.0  # weight of the other cells' noise in each moderated variance
    prior_noise: float | None = None  # sd of log value the cells are moderated towards

    @property
    def lost(self) -> list[CellComparison]:
        """Cells measured in the baseline that the candidate no longer measures (absent,
        skipped or failed): a gate that ignored them would pass a run that lost its GPU."""
        return [c for c in self.cells
                if (c.verdict in ("only_baseline", "not_comparable") and c.n_baseline > 0 and c.n_candidate == 0)
                or (c.candidate_failed and c.n_baseline > 0)]

    @property
    def regressions(self) -> list[CellComparison]:
        return [c for c in self.cells if c.verdict == "regression"]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.cells:
            out[c.label] = out.get(c.label, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        m = s.declared
        return {
            "metric": s.metric,
            "unit": m.unit,
            "direction": m.direction,
            "stat": s.stat if s.from_samples else None,
            "alpha": s.alpha,
            "threshold": s.threshold,
            "within_run": s.within_run,
            "allow_contended": s.allow_contended,
            "tested_cells": self.tested,
            "prior_df": self.prior_df,
            "prior_noise": self.prior_noise,
            "min_detectable_change_basis": MDC_BASIS,
            "baseline_runs": self.baseline_runs,
            "candidate_runs": self.candidate_runs,
            "warnings": self.warnings,
            "counts": self.counts(),
            "regression": bool(self.regressions),
            "cells": [c.to_dict() for c in self.cells],
        }


# ----------------------------------------------------------------------------- the between-run test


def trim_count(n_b: int, n_c: int, trim: float) -> int:
    """Worst processes trimmed per side: ``floor(trim * n)`` when both sides have the same
    n, else 0. Equal sides get the same estimator, so under the null the estimated change
    is symmetric about 0 for any noise distribution; trimming one side only (or unequal
    sides by "the same" fraction) shifts the estimate towards "worse"."""
    if n_b != n_c or trim <= 0:
        return 0
    return int(math.floor(trim * n_b + 1e-9))


def upper_trim(y: Any, trim: float = 0.0, g: int | None = None) -> tuple[float, float, int, int]:
    """Upper-trimmed mean of ``y`` and its winsorized sum of squares (Yuen, one-sided),
    trimming the ``g`` (default ``floor(trim * n)``) largest values:
    (mean of kept, winsorized SS, n, kept h)."""
    ys = sorted(float(v) for v in y)
    n = len(ys)
    if g is None:
        g = int(math.floor(trim * n + 1e-9))
    g = max(0, min(g, n - 2)) if n >= 2 else 0
    h = n - g
    kept_mean = math.fsum(ys[:h]) / h
    w = ys[:h] + [ys[h - 1]] * g
    wm = math.fsum(w) / n
    return kept_mean, math.fsum((v - wm) ** 2 for v in w), n, h


def _factor(n: int, h: int) -> float:
    """se^2 of a side's (trimmed) mean per unit of (winsorized) variance: (n-1)/(h(h-1))
    (Yuen); 1/n untrimmed."""
    return 1.0 / n if h == n else (n - 1) / (h * (h - 1))


@dataclass
class _Cell:
    """A cell with a value on both sides, prepared for testing (z: worse = larger)."""

    cc: CellComparison
    zb: np.ndarray
    zc: np.ndarray
    b: list[Observation]
    c: list[Observation]
    contended: bool
    g: int = 0  # processes trimmed per side
    diff: float = 0.0  # trimmed mean(zc) - trimmed mean(zb): log of the change (worse direction)
    var: float = 0.0  # pooled (winsorized) variance of z, per observation
    df: float = 0.0  # h_b + h_c - 2 (x YUEN_DF_FACTOR when trimmed)
    factor: float = 0.0  # se^2 = var * factor
    r: dict[str, Any] | None = None


def _prepare(p: _Cell, trim: float) -> None:
    nb, nc = p.zb.size, p.zc.size
    p.g = trim_count(nb, nc, trim)
    mb, ssb, _, hb = upper_trim(p.zb, g=p.g)
    mc, ssc, _, hc = upper_trim(p.zc, g=p.g)
    p.diff = mc - mb
    p.df = (hb + hc - 2) * (YUEN_DF_FACTOR if p.g else 1.0)
    p.var = (ssb + ssc) / (nb + nc - 2) if nb + nc > 2 else 0.0
    p.factor = _factor(nb, hb) + _factor(nc, hc)


def _trigamma_inverse(x: float) -> float:
    """y with trigamma(y) = x (Newton, as limma's trigammaInverse)."""
    from scipy.special import polygamma

    if x > 1e7:
        return 1.0 / math.sqrt(x)
    if x < 1e-6:
        return 1.0 / x
    y = 0.5 + 1.0 / x
    for _ in range(50):
        tri = float(polygamma(1, y))
        dif = tri * (1.0 - tri / x) / float(polygamma(2, y))
        y += dif
        if -dif / y < 1e-8:
            break
    return y


def noise_prior(variances: Sequence[float], dfs: Sequence[float]) -> tuple[float | None, float]:
    """(prior variance s0^2, prior weight d0) of the cells' run-to-run variances, by
    limma's method of moments on log variances (Smyth 2004, ``fitFDist``): each log
    variance is corrected by E[log(chi2_d/d)] = digamma(d/2) - log(d/2), so the prior is
    not biased low the way a plain median of variances is (median chi2_d/d < 1: 0.69 at
    2 df); the spread of the log variances beyond what chi2 scatter explains measures
    how different the cells' noise really is, and sets d0 (little moderation when cells
    differ). d0 is capped at ``PRIOR_DF_MAX``; fewer than ``PRIOR_MIN_CELLS`` cells: none."""
    from scipy.special import digamma, polygamma

    k = len(variances)
    if k < PRIOR_MIN_CELLS:
        return None, 0.0
    v = np.maximum(np.asarray(variances, dtype=float), VAR_FLOOR)
    d = np.asarray(dfs, dtype=float)
    e = np.log(v) - digamma(d / 2) + np.log(d / 2)
    emean = float(e.mean())
    evar = float(((e - emean) ** 2).sum() / (k - 1) - np.mean(polygamma(1, d / 2)))
    if evar > 0:
        d0 = 2.0 * _trigamma_inverse(evar)
        s0 = math.exp(emean + float(digamma(d0 / 2)) - math.log(d0 / 2))
    else:
        d0, s0 = math.inf, math.exp(emean)
    return s0, min(d0, PRIOR_DF_MAX)


_QUAD = 64  # quadrature points over the se's scatter


@functools.lru_cache(maxsize=256)
def _chi2_quantiles(df: float) -> np.ndarray:
    """Midpoint quantiles of chi2_df/df (the scatter of a variance estimate with df)."""
    from scipy.special import chdtri

    return chdtri(df, (np.arange(_QUAD) + 0.5) / _QUAD) / df


def detectable_shift(se: Any, df: Any, alpha_cell: float, power: float, floor: Any = 0.0,
                     band_alpha: Any = None) -> Any:
    """Smallest true log-shift delta that the gate flags with probability ``power``:
    P(d > c*se_hat and d > max(floor, c_band*se_hat)) with d ~ N(delta, se^2),
    se_hat = se*sqrt(W), W ~ chi2_df/df, c = t_{1-alpha_cell, df} (the Holm level of the
    first rejection) and c_band = t_{1-band_alpha, df} (an ``auto`` threshold is the noise
    band exp(c_band*se_hat)-1, at least ``floor``; a fixed threshold: floor = log(1+thr),
    band_alpha None). Exact for the t-test up to quadrature (without a threshold it equals
    scipy's ``nctdtrinc`` noncentrality times se); ``df = inf`` is the normal case.

    That answers "if the true noise is the measured one". The figure is printed from the
    measured se, though, and a change equal to the printed figure (k * se_hat) is caught
    with probability P(Z > (c - k) sqrt(W)) = F_t,df(k - c), so k = c + t_{power,df}
    (on top of the threshold) answers "a change as large as printed". The larger of the
    two is returned: the printed figure is honest under either reading (they differ by
    at most a few % of the figure: 2.73 vs 2.75 se at 8 df and one cell, 6.77 vs 6.42 se
    at 8 df and 180 cells). Vectorised: array arguments give an array (one per cell)."""
    from scipy.special import ndtr, ndtri, stdtrit

    scalar = np.ndim(se) == 0
    se_a = np.atleast_1d(np.asarray(se, dtype=float))
    n = se_a.size
    df_a = np.broadcast_to(np.asarray(df, dtype=float), (n,))
    fl = np.broadcast_to(np.asarray(floor, dtype=float), (n,))
    ba = np.broadcast_to(np.asarray(np.nan if band_alpha is None else band_alpha, dtype=float), (n,))
    fin = np.isfinite(df_a)
    dfx = np.where(fin, df_a, 1.0)
    c = np.where(fin, stdtrit(dfx, 1 - alpha_cell), ndtri(1 - alpha_cell))
    bq = np.where(np.isnan(ba), 0.5, 1 - np.nan_to_num(ba, nan=0.5))
    cb = np.where(np.isnan(ba), 0.0, np.where(fin, stdtrit(dfx, bq), ndtri(bq)))
    w = np.ones((n, _QUAD))
    for d in np.unique(dfx[fin]):
        w[fin & (dfx == d)] = _chi2_quantiles(float(d))
    sev = np.maximum(se_a, 1e-300)[:, None]
    bar = np.maximum(fl[:, None], np.maximum(c, cb)[:, None] * sev * np.sqrt(w))
    zp = float(ndtri(power))  # the root lies where all / no quadrature points reach power
    lo = bar.min(axis=1) + zp * sev[:, 0]
    hi = bar.max(axis=1) + zp * sev[:, 0]
    x = 0.5 * (lo + hi)
    for _ in range(12):  # Newton's method kept inside the bracket (bisection when it leaves it)
        u = (x[:, None] - bar) / sev
        f = ndtr(u).mean(axis=1) - power
        fp = (np.exp(-0.5 * u * u) / sev).mean(axis=1) / math.sqrt(2 * math.pi)
        hi = np.where(f >= 0, x, hi)
        lo = np.where(f < 0, x, lo)
        with np.errstate(divide="ignore", invalid="ignore"):
            nx = x - f / fp
        x = np.where((nx > lo) & (nx < hi) & np.isfinite(nx), nx, 0.5 * (lo + hi))
    hi = x
    # the figure is printed from the *measured* se; a change equal to it is caught with
    # probability F_t(k - c) over the se's own scatter, so k = bar/se + t_{power,df} is the
    # plug-in answer; take the larger of the two (each exact for its reading of "detectable")
    tp = np.where(fin, stdtrit(dfx, power), ndtri(power))
    plug = np.maximum(fl, np.maximum(c, cb) * se_a) + tp * se_a
    out = np.where(se_a > 0, np.maximum(hi, plug), fl)
    return float(out[0]) if scalar else out


def _between(p: _Cell, prior_var: float | None, prior_df: float, alpha: float) -> dict[str, Any]:
    """Two-sample (Yuen) t on z with the pooled run-to-run variance, moderated upwards.

    Moderation (limma's posterior variance (d*v + d0*s0^2)/(d + d0) with d + d0 df) is
    applied only to a cell whose own variance is below the prior: it then borrows the
    other cells' evidence that the noise is not that small. A cell noisier than the prior
    keeps its own variance and df: the cells' noise really differs (here 2-4.3% between
    processes for the same statistic), and shrinking the noisiest cells towards the
    typical one made them over-confident exactly where Holm looks (alpha/50, alpha/180):
    6-7% family-wise false alarms with cell noise spread over 1-15% in
    bench/gate_calibration.py, against at most 5% with upward-only moderation."""
    from scipy.special import stdtr, stdtrit  # Student t CDF and its inverse (scipy.stats is slow to import)

    var, df = p.var, float(p.df)
    moderated = prior_var is not None and prior_df > 0 and var < prior_var  # moderation only ever raises a variance
    if moderated:
        var, df = (df * var + prior_df * prior_var) / (df + prior_df), df + prior_df  # type: ignore[operator]
    var = max(var, VAR_FLOOR)
    se = math.sqrt(var * p.factor)
    t = p.diff / se
    q = float(stdtrit(df, 1 - alpha / 2))
    return {
        "diff": p.diff, "ci": (p.diff - q * se, p.diff + q * se), "p_worse": float(stdtr(df, -t)),
        "p_better": float(stdtr(df, t)), "noise": math.sqrt(var), "df": df, "se": se,
        "band": math.exp(float(stdtrit(df, 1 - alpha)) * se) - 1.0, "moderated": moderated,
    }  # fmt: skip


def _within(b: np.ndarray, c: np.ndarray, stat: str, alpha: float, seed: int, sign: float) -> dict[str, Any]:
    """Mann-Whitney U on raw samples + bootstrap CI of the ratio of ``stat`` (``sign`` -1:
    higher is better).

    Cost is bounded (issue 13): a side longer than ``WITHIN_RUN_MAX_SAMPLES`` is tested on
    a deterministic subsample (:func:`_thin`: that many samples at evenly spaced positions
    of the time order), so Mann-Whitney costs O(m log m) and the bootstrap O(resamples x m)
    with m <= the cap, whatever the sample count. The estimate itself (``diff``) is always
    ``stat`` of all samples. The bootstrap distribution is centred on it, and for a
    thinned side its spread is rescaled by sqrt(m/n) (the m-out-of-n bootstrap, valid for
    the sqrt(n)-consistent p10, p50 and mean); the minimum is not sqrt(n)-consistent, so
    its spread is left as the subsample's (wider: conservative). ``subsample`` in the
    result says what was done (None when no side was thinned: then everything is exactly
    the plain test on all samples, as before the cap)."""
    from scipy import stats as st

    nb, nc = b.size, c.size
    diff = sign * math.log(location(c, stat) / location(b, stat))
    tb, tc = _thin(b, WITHIN_RUN_MAX_SAMPLES), _thin(c, WITHIN_RUN_MAX_SAMPLES)
    p_up = float(st.mannwhitneyu(tc, tb, alternative="greater", method="asymptotic").pvalue)
    p_down = float(st.mannwhitneyu(tc, tb, alternative="less", method="asymptotic").pvalue)
    subsample = None
    if tb.size == nb and tc.size == nc:  # no side thinned: the plain bootstrap, exactly as before the cap
        lr = _bootstrap_log_ratio(tb, tc, stat, BOOTSTRAP_RESAMPLES, seed)
        lr = sign * lr[np.isfinite(lr)]
    else:
        lb, lc = _bootstrap_stats(tb, tc, stat, BOOTSTRAP_RESAMPLES, seed)
        scale = (lambda m, n: 1.0) if stat == "min" else (lambda m, n: math.sqrt(m / n))  # noqa: E731
        with np.errstate(divide="ignore", invalid="ignore"):
            db = (np.log(lb) - math.log(location(tb, stat))) * scale(tb.size, nb)
            dc = (np.log(lc) - math.log(location(tc, stat))) * scale(tc.size, nc)
            lr = diff + sign * (dc - db)
        lr = lr[np.isfinite(lr)]
        subsample = {
            "baseline": [int(tb.size), int(nb)], "candidate": [int(tc.size), int(nc)], "cap": WITHIN_RUN_MAX_SAMPLES,
            "method": within_run_subsample_text(int(tb.size), int(nb), int(tc.size), int(nc), stat),
        }  # fmt: skip
    lo, hi = np.quantile(lr, [alpha / 2, 1 - alpha / 2]) if lr.size else (diff, diff)
    se = float(lr.std(ddof=1)) if lr.size > 1 else 0.0
    return {
        "diff": diff, "ci": (float(lo), float(hi)), "p_worse": p_up if sign > 0 else p_down,
        "p_better": p_down if sign > 0 else p_up, "noise": None, "df": math.inf, "se": se,
        "band": math.exp(float(st.norm.ppf(1 - alpha)) * se) - 1.0, "subsample": subsample,
    }  # fmt: skip


def within_run_subsample_text(mb: int, nb: int, mc: int, nc: int, stat: str) -> str:
    """One line saying how a thinned within-run test was done (for notes and JSON)."""
    def side(m: int, n: int) -> str:
        return f"{m:,} of {n:,}" + (f" (one in ~{n / m:.0f}, evenly spaced in time order)" if m < n else "")

    spread = ("the subsample's spread (the minimum is not sqrt(n)-consistent: conservative)" if stat == "min"
              else "the subsample's spread x sqrt(m/n) (m-out-of-n bootstrap)")  # fmt: skip
    return (f"within-run test on a deterministic subsample (cap {WITHIN_RUN_MAX_SAMPLES:,} samples per side): "
            f"baseline {side(mb, nb)}, candidate {side(mc, nc)} samples; Mann-Whitney U on the subsample; "
            f"the change is {stat} of all samples, its CI {spread}")


# ----------------------------------------------------------------------------- the gate


def compare_docs(
    baseline: Sequence[Mapping[str, Any]],
    candidate: Sequence[Mapping[str, Any]],
    settings: CompareSettings | None = None,
) -> Comparison:
    """Compare every cell of ``candidate`` against ``baseline`` (lists of result docs;
    several docs on one side, or ``repeats`` inside a cell, are separate processes)."""
    s = settings or CompareSettings()
    return compare_observations(
        observations(baseline, s.metric, s.stat), observations(candidate, s.metric, s.stat), s,
        warnings=environment_warnings(baseline, candidate), baseline_runs=[str(d.get("run_id")) for d in baseline],
        candidate_runs=[str(d.get("run_id")) for d in candidate],
    )  # fmt: skip


def compare_observations(
    ob: Mapping[str, Sequence[Observation]],
    oc: Mapping[str, Sequence[Observation]],
    settings: CompareSettings | None = None,
    warnings: Sequence[str] = (),
    baseline_runs: Sequence[str] = (),
    candidate_runs: Sequence[str] = (),
) -> Comparison:
    """The gate on parsed observations (cell key -> one :class:`Observation` per worker
    process, as :func:`observations` returns them): everything statistical that
    :func:`compare_docs` does happens here."""
    s = settings or CompareSettings()
    metric = s.declared
    sign = -1.0 if metric.higher_is_better else 1.0  # z = sign * log(value): larger is worse
    trim = TRIM_SLOW_RUNS if one_sided(metric) else 0.0

    results: list[CellComparison] = []
    pending: list[_Cell] = []
    for key in list(dict.fromkeys(list(ob) + list(oc))):
        b_all, c_all = ob.get(key, []), oc.get(key, [])
        workload = (b_all or c_all)[0].workload
        cc = CellComparison(key=key, workload=workload, verdict="unchanged")
        results.append(cc)
        valid = lambda obs: [o for o in obs if o.value is not None and o.value > 0]  # noqa: E731
        b, c = valid(b_all), valid(c_all)
        cc.n_baseline, cc.n_candidate = len(b), len(c)
        if not b_all or not c_all:
            cc.verdict = "only_candidate" if not b_all else "only_baseline"
            continue
        for side, obs in (("baseline", b_all), ("candidate", c_all)):
            nonpos = sum(1 for o in obs if o.value is not None and o.value <= 0)
            if nonpos:
                cc.notes.append(f"{nonpos} {side} value(s) <= 0 left out (changes are ratios)")
            bad = [o for o in obs if o.value is None]
            if bad and len(bad) < len(obs):
                cc.notes.append(f"{len(bad)} {side} process(es) without {s.metric}: {bad[0].status}"
                                + (f" ({bad[0].reason})" if bad[0].reason else ""))  # fmt: skip
        if not b or not c:
            cc.verdict = "not_comparable"
            side = "baseline" if not b else "candidate"
            o = (b_all if not b else c_all)[0]
            cc.notes.append(f"no {s.metric} in {side}: {o.status}" + (f" ({o.reason})" if o.reason else ""))
            continue
        tb = {str(o.threads) for o in b if o.threads is not None}
        tc = {str(o.threads) for o in c if o.threads is not None}
        if tb and tc and tb != tc:
            cc.notes.append(f"thread counts differ: baseline {sorted(tb)}, candidate {sorted(tc)}")
        failed_c = [o for o in c_all if o.status == "failed"]
        if failed_c:
            cc.candidate_failed = True
            cc.notes.append(f"{len(failed_c)} candidate process(es) failed: {failed_c[0].reason or 'failed'} "
                            "(the cell is failed; --fail-on-missing makes that exit 1)")
        if not s.allow_contended:
            # a contended night in a baseline history must not switch the gate off: its
            # contended processes are left out while clean ones remain. The candidate is
            # what is judged: any contended candidate process makes the cell inconclusive.
            clean_b = [o for o in b if o.contended is not True]
            if clean_b and len(clean_b) < len(b):
                cc.notes.append(f"{len(b) - len(clean_b)} contended baseline process(es) left out "
                                "(timing.contention)")
                b = clean_b
                cc.n_baseline = len(b)
        flags = [o.contended for o in b + c]
        cc.contended = True if any(f is True for f in flags) else (False if all(f is False for f in flags) else None)
        zb = sign * np.log([o.value for o in b])
        zc = sign * np.log([o.value for o in c])
        p = _Cell(cc, zb, zc, b, c, contended=cc.contended is True)
        _prepare(p, trim)
        pending.append(p)

    use = lambda p: not p.contended or s.allow_contended  # noqa: E731
    between = [p for p in pending if p.df > 0]
    prior_cells = [p for p in between if use(p)]
    prior_var, prior_df = noise_prior([p.var for p in prior_cells], [p.df for p in prior_cells])

    for p in pending:
        cc = p.cc
        mb, mc = math.fsum(p.zb) / p.zb.size, math.fsum(p.zc) / p.zc.size
        if p.df > 0:
            p.r = _between(p, prior_var, prior_df, s.alpha)
            cc.test = ("trimmed (Yuen) " if p.g else "") + "t-test on log(" + (s.stat if s.from_samples else "value") \
                + ") between processes" + (f", variance moderated towards {len(prior_cells)} cells'" if p.r["moderated"]
                                            else "")
            if p.g:
                cc.notes.append(f"worst {p.g} process(es) per side trimmed (interference only makes "
                                f"{metric.name} worse)")  # fmt: skip
                mb = upper_trim(p.zb, g=p.g)[0]
                mc = upper_trim(p.zc, g=p.g)[0]
            cc.noise_model = "between-run"
            cc.run_noise, cc.df = p.r["noise"], p.r["df"]
        elif s.within_run and p.b[0].samples is not None and p.c[0].samples is not None:
            p.r = _within(p.b[0].samples, p.c[0].samples, s.stat, s.alpha, BOOTSTRAP_SEED, sign)
            cc.test = "Mann-Whitney U on raw samples + bootstrap CI (--within-run)"
            cc.noise_model = "within-run only"
            cc.notes.append("within-run test (--within-run): run-to-run noise not measured, one process per side")
            if p.r["subsample"]:
                cc.subsample = p.r["subsample"]
                cc.notes.append(cc.subsample["method"])
        else:
            cc.test = "none (one process per side)"
            cc.noise_model = "unknown"
        diff = p.r["diff"] if p.r else (mc - mb)
        cc.baseline_value = math.exp(sign * mb)
        cc.candidate_value = math.exp(sign * mc)
        cc.ratio = math.exp(sign * diff)  # candidate / baseline of the metric as stored
        cc.change = math.exp(diff) - 1.0  # worse direction
        if p.r:
            lo, hi = p.r["ci"]
            cc.ratio_ci = tuple(sorted((math.exp(sign * lo), math.exp(sign * hi))))  # type: ignore[assignment]
            cc.p_worse, cc.p_better = p.r["p_worse"], p.r["p_better"]
        thr, src = s.threshold_for(cc.key, cc.workload)
        if thr is None:
            if p.r is not None and cc.noise_model == "between-run":
                thr, src = max(AUTO_FLOOR, p.r["band"]), "auto (run-to-run noise band)"
            elif p.r is not None:
                thr, src = max(s.fallback_threshold, p.r["band"]), "auto (fallback: run-to-run noise unknown)"
            else:
                thr, src = s.fallback_threshold, "auto (fallback: run-to-run noise unknown)"
        cc.threshold, cc.threshold_source = thr, src

    # Holm over every tested cell that may get a verdict, each direction separately
    family = [p for p in pending if p.r is not None and use(p)]
    adj_w = holm([p.cc.p_worse for p in family])  # type: ignore[misc]
    adj_b = holm([p.cc.p_better for p in family])  # type: ignore[misc]
    m = len(family)
    if family:  # smallest detectable change of each tested cell, all cells at once
        auto = np.array([p.cc.threshold_source.startswith("auto") and p.cc.noise_model == "between-run"
                         for p in family])  # fmt: skip
        floors = np.where(auto, math.log1p(AUTO_FLOOR), np.log1p([p.cc.threshold for p in family]))
        deltas = detectable_shift(np.array([p.r["se"] for p in family]), np.array([p.r["df"] for p in family]),
                                  s.alpha / m, POWER, floor=floors, band_alpha=np.where(auto, s.alpha, np.nan))  # fmt: skip
        for p, delta in zip(family, deltas):
            p.cc.min_detectable_change = math.expm1(float(delta))
    for p, pw, pb in zip(family, adj_w, adj_b):
        cc, r = p.cc, p.r
        assert r is not None and cc.change is not None and cc.threshold is not None
        cc.p_adjusted = pw
        thr = cc.threshold
        worse = cc.change > thr
        better = cc.change < -thr / (1 + thr)
        if pw < s.alpha and worse:
            cc.verdict = "regression"
        elif pb < s.alpha and better:
            cc.verdict = "improvement"
            cc.p_adjusted = pb
        elif worse or better:
            cc.verdict = "inconclusive"
            cc.notes.append("change exceeds the threshold but is not significant")
    for p in pending:
        cc = p.cc
        if p.contended and not s.allow_contended:
            cc.verdict, cc.verdict_text = "inconclusive", CONTENDED
            cc.notes.append("measured while the machine was contended (timing.contention): no verdict; "
                            "rerun on a quiet machine, or --allow-contended")  # fmt: skip
        elif p.r is None:
            cc.verdict, cc.verdict_text = "inconclusive", NOISE_UNKNOWN
            cc.notes.append("one process per side: give repeated runs (harness run --repeats 3) or a history "
                            "as the baseline" + (", or --within-run" if s.from_samples else ""))  # fmt: skip
        elif p.contended:
            cc.notes.append("contended measurements used (--allow-contended)")

    return Comparison(
        settings=s, cells=results, warnings=list(warnings), baseline_runs=list(baseline_runs),
        candidate_runs=list(candidate_runs), tested=m, prior_df=prior_df,
        prior_noise=math.sqrt(prior_var) if prior_var is not None and prior_df > 0 else None,
    )  # fmt: skip


def fingerprint(doc: Mapping[str, Any]) -> str:
    """The machine identity of a run: its environment fingerprint, else host + CPU; a
    fleet run's machine target (``harness run --ray``, docs/fleet.md) is part of it, so
    the targets a user named stay apart even on identical hardware."""
    env = doc.get("environment") or {}
    if not isinstance(env, Mapping):
        env = {}
    fp = env.get("fingerprint")
    if not fp:
        cpu = env.get("cpu")
        model = cpu.get("model") if isinstance(cpu, Mapping) else None
        fp = f"{env.get('host', '?')}|{model}"
    target = fleet_target(doc)
    return f"{fp}@{target}" if target else str(fp)


def fleet_target(doc: Mapping[str, Any]) -> str | None:
    """The machine target a fleet run ran on (``fleet.target.name``), else None."""
    fleet = doc.get("fleet")
    target = fleet.get("target") if isinstance(fleet, Mapping) else None
    name = target.get("name") if isinstance(target, Mapping) else None
    return str(name) if name else None


def environment_warnings(baseline: Sequence[Mapping[str, Any]], candidate: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per difference that makes a comparison less meaningful."""
    out = []
    fb = sorted({fingerprint(d) for d in baseline})
    fc = sorted({fingerprint(d) for d in candidate})
    if fb != fc:
        out.append(
            f"the runs have different environment fingerprints (baseline {', '.join(fb)}; candidate "
            f"{', '.join(fc)}): differences may come from the machine, not the code"
        )
    for name, docs in (("baseline", baseline), ("candidate", candidate)):
        env = [d.get("environment") for d in docs]
        fw = {str(e.get("frameworks")) if isinstance(e, Mapping) else "None" for e in env}
        if len(fw) > 1:
            out.append(f"the {name} runs used different framework versions")
    return out


# ----------------------------------------------------------------------------- across one field
#
# ``harness compare RUNS --across FIELD=BASELINE``: "what does bf16 buy me over fp32?",
# "PyTorch or TensorFlow?", "CPU or GPU?". Within the given runs, every cell is paired
# with the cell that differs from it only in FIELD and has FIELD = BASELINE; the pairs
# then go through exactly the gate above (compare_observations: the same observations,
# tests, Holm family, thresholds and smallest detectable change), the BASELINE cell on
# the baseline side. Only the words change: "faster" / "slower" / "no detectable
# difference" instead of improvement / regression / unchanged.

ACROSS_FIELDS = ("variant", "backend", "device")
NO_DIFFERENCE = "no detectable difference"
ACROSS_ONE_PROCESS = "one process per cell: measure each cell in several (harness run --repeats 3, or several runs)"


def parse_across(text: str) -> tuple[str, str]:
    """``"variant=fp32"`` -> ("variant", "fp32"); :class:`CompareError` naming the valid
    fields otherwise."""
    fieldname, sep, value = str(text).partition("=")
    fieldname, value = fieldname.strip(), value.strip()
    if fieldname not in ACROSS_FIELDS:
        shown = fieldname if len(fieldname) <= 40 else fieldname[:37] + "..."
        raise CompareError(f"--across: unknown field {shown!r}; choose from: {', '.join(ACROSS_FIELDS)} "
                           "(e.g. --across variant=fp32)")  # fmt: skip
    if not sep or not value:
        raise CompareError(f"--across needs FIELD=BASELINE, e.g. --across {fieldname}="
                           + {"variant": "fp32", "backend": "torch", "device": "cpu"}[fieldname])  # fmt: skip
    return fieldname, value


def across_words(metric: M.Metric) -> tuple[str, str, str]:
    """(better, worse, name of the better-direction factor) for ``metric``: timing and
    rates are "faster"/"slower" (a "speed-up"), memory "smaller"/"larger", energy "less
    energy"/"more energy", anything else "better"/"worse"."""
    if one_sided(metric):
        return "faster", "slower", "speed-up"
    if metric.unit == "bytes":
        return "smaller", "larger", "size reduction"
    if metric.unit in ("J", "samples/J"):
        return "less energy", "more energy", "energy saving"
    return "better", "worse", "gain"


@dataclass
class AcrossPair:
    """A cell (``candidate``, FIELD = ``value``) and its counterpart (``baseline``, FIELD =
    the BASELINE value); ``group`` is their common key without FIELD."""

    candidate: str
    baseline: str
    group: str
    value: str


def cell_parts(docs: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[str, str]]]:
    """Cell key -> its (field, segment) parts, over every cell of ``docs``."""
    out: dict[str, list[tuple[str, str]]] = {}
    for doc in docs:
        cells = doc.get("cells") if _is_map(doc) else None
        for cell in cells if isinstance(cells, list) else []:
            if _is_map(cell):
                parts = _key_parts(cell)
                out.setdefault("/".join(seg for _, seg in parts), parts)
    return out


def _unmeasured(obs: Sequence[Observation], metric: str) -> str:
    """Why a cell has no value of ``metric`` (all its processes skipped, failed, ...)."""
    o = next((o for o in obs if o.status != "ok"), obs[0]) if obs else None
    if o is None:
        return "not measured"
    if o.status == "ok":
        return f"no {metric} measured"
    return o.status + (f" ({o.reason})" if o.reason else "")


@dataclass
class AcrossComparison:
    """The result of :func:`compare_across`: ``comparison`` is the ordinary gate's result
    on the pairs (each :class:`CellComparison` keyed by its candidate cell, with the
    BASELINE cell as its baseline side); ``pairs`` maps that key to the pair;
    ``not_compared`` lists every other cell once with the reason; ``unmeasured`` are
    those whose reason is a skipped/failed (or metric-less) cell."""

    field: str
    baseline: str
    comparison: Comparison
    pairs: dict[str, AcrossPair]
    not_compared: list[tuple[str, str]]
    unmeasured: list[str]
    runs: list[str]

    @property
    def words(self) -> tuple[str, str, str]:
        return across_words(self.comparison.settings.declared)

    @property
    def worse(self) -> list[CellComparison]:
        """Pairs whose cell is significantly worse (slower) than its BASELINE counterpart."""
        return self.comparison.regressions

    def gain(self, cc: CellComparison) -> tuple[float | None, tuple[float, float] | None]:
        """(factor in the better direction: > 1 means the cell is better (faster) than its
        BASELINE counterpart, and its 95% CI) of one pair."""
        if cc.change is None:
            return None, None
        g = 1.0 / (1.0 + cc.change)
        ci = None
        if cc.ratio_ci:
            lo, hi = cc.ratio_ci
            if self.comparison.settings.declared.higher_is_better:
                ci = (lo, hi)
            elif lo > 0:
                ci = (1.0 / hi, 1.0 / lo)
        return g, ci

    def estimate_text(self, cc: CellComparison) -> str:
        """The point estimate in words: ``"1.80x faster"``, ``"1.05x slower"``."""
        better, worse, _ = self.words
        g, _ci = self.gain(cc)
        if g is None:
            return "n/a"
        return f"{g:.2f}x {better}" if g >= 1 else f"{1 / g:.2f}x {worse}"

    def verdict(self, cc: CellComparison) -> str:
        """The verdict in the question's words: ``"1.80x faster"`` / ``"1.25x slower"``
        (significant beyond the threshold), ``"no detectable difference"`` (unchanged, or
        beyond the threshold but not significant), else the gate's own label
        (``inconclusive: run-to-run noise unknown``, ``inconclusive: contended``)."""
        if cc.verdict in ("improvement", "regression"):
            return self.estimate_text(cc)
        if cc.verdict_text:
            return cc.verdict_text
        if cc.verdict in ("unchanged", "inconclusive"):
            return NO_DIFFERENCE
        return cc.label

    def category(self, cc: CellComparison) -> str:
        """``faster`` / ``slower`` (the metric's words), ``no detectable difference`` or the
        inconclusive label: what :meth:`counts` counts."""
        better, worse, _ = self.words
        return {"improvement": better, "regression": worse}.get(cc.verdict) or self.verdict(cc)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for cc in self.comparison.cells:
            k = self.category(cc)
            out[k] = out.get(k, 0) + 1
        if self.not_compared:
            out["not compared"] = len(self.not_compared)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``compare --across``: the ordinary comparison's fields (runs in
        ``runs``; ``regression`` replaced by ``worse``), each cell with its pair and verdict
        words, and ``not_compared``."""
        d = self.comparison.to_dict()
        for k in ("baseline_runs", "candidate_runs", "regression"):
            d.pop(k, None)
        better, worse, factor = self.words
        d["across"] = {"field": self.field, "baseline": self.baseline, "better": better, "worse": worse,
                       "factor": factor}  # fmt: skip
        d["runs"] = self.runs
        d["counts"] = self.counts()
        d["worse"] = bool(self.worse)
        cells = []
        for cc, cd in zip(self.comparison.cells, d["cells"]):
            pair = self.pairs[cc.key]
            g, ci = self.gain(cc)
            cd.update({"cell": pair.group, self.field: pair.value, "baseline_cell": pair.baseline,
                       "candidate_cell": pair.candidate, "across_verdict": self.verdict(cc),
                       "estimate": self.estimate_text(cc), "gain": g, "gain_ci": list(ci) if ci else None})  # fmt: skip
            cells.append(cd)
        d["cells"] = cells
        d["not_compared"] = [{"cell": k, "reason": r, "unmeasured": k in self.unmeasured} for k, r in self.not_compared]
        return d


def across_warnings(docs: Sequence[Mapping[str, Any]], fieldname: str) -> list[str]:
    """What makes an across comparison less meaningful: runs from several machines (their
    processes are pooled per cell), mixed framework versions."""
    out = []
    fps = sorted({fingerprint(d) for d in docs})
    if len(fps) > 1:
        out.append(f"the runs come from {len(fps)} machines (fingerprints {', '.join(fps)}): each cell pools the "
                   f"processes of all of them, so a pair may differ by machine as well as by {fieldname}")  # fmt: skip
    fw = {str(d.get("environment", {}).get("frameworks")) if _is_map(d.get("environment")) else "None" for d in docs}
    if len(fw) > 1:
        out.append("the runs used different framework versions")
    return out


def compare_across_observations(
    obs: Mapping[str, Sequence[Observation]],
    parts: Mapping[str, Sequence[tuple[str, str]]],
    fieldname: str,
    baseline: str,
    settings: CompareSettings | None = None,
    warnings: Sequence[str] = (),
    runs: Sequence[str] = (),
) -> AcrossComparison:
    """Pair every cell of ``obs`` (cell key -> observations, as :func:`observations` gives
    them; ``parts``: as :func:`cell_parts` gives them) with the cell that differs only in
    ``fieldname`` and has ``fieldname == baseline``, and compare the pairs with
    :func:`compare_observations`. :class:`CompareError` when ``fieldname`` is not one of
    :data:`ACROSS_FIELDS`, when no cell has ``baseline``, or when every cell has it
    (nothing to compare against)."""
    s = settings or CompareSettings()
    if fieldname not in ACROSS_FIELDS:
        raise CompareError(f"--across: unknown field {fieldname!r}; choose from: {', '.join(ACROSS_FIELDS)}")
    keys = [k for k in obs if k in parts]
    value_of = {k: dict(parts[k])[fieldname] for k in keys}
    group_of = {k: "/".join(seg for f, seg in parts[k] if f != fieldname) for k in keys}
    present = list(dict.fromkeys(value_of.values()))
    if baseline not in present:
        raise CompareError(f"--across {fieldname}={baseline}: no cell has {fieldname} {baseline!r}; "
                           f"{fieldname} values present: {', '.join(sorted(present)) or 'none (no cells)'}")  # fmt: skip
    if len(present) == 1:
        raise CompareError(f"--across {fieldname}={baseline}: every cell has {fieldname} {baseline!r}, so there is "
                           f"nothing to compare it with; measure another {fieldname} too "
                           f"(e.g. harness run --{fieldname} {baseline} --{fieldname} OTHER)")  # fmt: skip
    base_of: dict[str, str] = {group_of[k]: k for k in keys if value_of[k] == baseline}
    measured = {k: any(o.value is not None for o in obs[k]) for k in keys}
    ob: dict[str, list[Observation]] = {}
    oc: dict[str, list[Observation]] = {}
    pairs: dict[str, AcrossPair] = {}
    not_compared: list[tuple[str, str]] = []
    unmeasured: list[str] = []
    partnered: dict[str, bool] = {}  # baseline cell -> has a measured counterpart
    for k in keys:
        if value_of[k] == baseline:
            continue
        g = group_of[k]
        bk = base_of.get(g)
        if bk is not None:
            partnered[bk] = partnered.get(bk, False) or measured[k]
        if not measured[k]:
            not_compared.append((k, _unmeasured(obs[k], s.metric)))
            unmeasured.append(k)
        elif bk is None:
            not_compared.append((k, f"no {baseline} cell for {g}"))
        elif not measured[bk]:
            not_compared.append((k, f"its {baseline} cell is not measured: {_unmeasured(obs[bk], s.metric)}"))
            unmeasured.append(k)
        else:
            ob[k], oc[k] = list(obs[bk]), list(obs[k])
            pairs[k] = AcrossPair(candidate=k, baseline=bk, group=g, value=value_of[k])
    for bk in base_of.values():
        if not measured[bk]:
            not_compared.append((bk, _unmeasured(obs[bk], s.metric)))
            unmeasured.append(bk)
        elif bk not in partnered:
            not_compared.append((bk, f"no other {fieldname} than {baseline} for {group_of[bk]}"))
        elif not partnered[bk]:
            not_compared.append((bk, f"no other {fieldname} measured for {group_of[bk]} (see its cells' reasons)"))
    comparison = compare_observations(ob, oc, s, warnings=warnings, baseline_runs=list(runs),
                                      candidate_runs=list(runs))  # fmt: skip
    for cc in comparison.cells:  # the gate's advice speaks of sides and baselines: say it for cells
        cc.notes = [ACROSS_ONE_PROCESS + (", or --within-run" if s.from_samples else "")
                    if n.startswith("one process per side:") else n for n in cc.notes]  # fmt: skip
    return AcrossComparison(field=fieldname, baseline=baseline, comparison=comparison, pairs=pairs,
                            not_compared=not_compared, unmeasured=unmeasured, runs=list(runs))  # fmt: skip


def compare_across(
    docs: Sequence[Mapping[str, Any]], fieldname: str, baseline: str, settings: CompareSettings | None = None
) -> AcrossComparison:
    """``harness compare RUNS --across FIELD=BASELINE`` on result documents (several docs,
    or ``repeats`` inside a cell, are separate processes of each cell)."""
    s = settings or CompareSettings()
    return compare_across_observations(
        observations(docs, s.metric, s.stat), cell_parts(docs), fieldname, baseline, s,
        warnings=across_warnings(docs, fieldname), runs=[str(d.get("run_id")) for d in docs],
    )  # fmt: skip
