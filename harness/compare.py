"""Statistics and verdicts for ``harness compare``: pure functions on result documents.

The problem this solves: on a shared machine the run-to-run (between-process) noise is
far larger than the sampling error inside one run. Two separate runs of unchanged code
give medians that differ by 10-100% here, while each run's own confidence interval is
1-3% wide, so any test on the raw samples of two single runs (Mann-Whitney U on
thousands of samples) calls almost every difference "significant". The unit of
replication for a regression gate is therefore the *run* (process), not the sample.

How a cell is compared (see docs/compare.md for the full argument):

* Every occurrence of a cell in a side's documents is one *observation* (one worker
  process). A side given as several result files (a directory), or a run holding the
  same cell several times, has several observations.
* The location of one observation is a statistic of its raw samples, ``stat``:
  ``min``, ``p10``, ``p50`` (median) or ``mean``. Contention from other processes only
  ever adds time, so low quantiles are much more reproducible between processes
  (measured here: between-process sd of log min 3%, of log median 9-19%).
* **between-run test** (both sides together have at least one degree of freedom of
  run-to-run variation, e.g. 2+ runs on one side): a two-sample t-test on the log
  locations with the pooled run-to-run variance (moderated towards the median variance
  of the cells when 3+ cells are compared, like limma's empirical Bayes t), a
  t-interval for the ratio, and the minimum detectable change (80% power).
* **within-run test** (one run per side, nothing else known): Mann-Whitney U on the raw
  samples and a bootstrap CI of the ratio of the location statistic. This ignores
  run-to-run noise, so it is labelled, the verdict additionally needs the threshold,
  and ``auto`` falls back to ``FALLBACK_THRESHOLD``.
* Interference from other processes only ever adds time, so run-to-run noise of a
  timing metric is one-sided: with 4+ runs on a side the slowest quarter of its runs is
  trimmed and the variance winsorized (Yuen's trimmed t with upper trimming).
* p-values are one-sided per direction and Holm-adjusted over all compared cells.
* **regression** = adjusted p < alpha in the "worse" direction AND the estimated change
  exceeds the cell's threshold. ``auto`` thresholds are the noise band: the largest
  change two unchanged runs show with probability 1 - alpha (at least ``AUTO_FLOOR``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

STATS = ("min", "p10", "p50", "mean")
DEFAULT_STAT = "min"
DEFAULT_ALPHA = 0.05
AUTO_FLOOR = 0.01  # auto thresholds are at least 1%
FALLBACK_THRESHOLD = 0.10  # auto with no measured run-to-run noise
POWER = 0.80  # for the minimum detectable change
PRIOR_DF = 4.0  # weight (degrees of freedom) of the cells' median noise in a moderated variance
TRIM_SLOW_RUNS = 0.25  # timing metrics: trim the slowest quarter of runs per side (4 runs: 1)
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 20261123
_HIGHER_IS_BETTER = ("throughput", "per_s", "accuracy", "agreement", "samples_per_j", "mfu", "per_watt", "per_dollar")


class CompareError(ValueError):
    """A user mistake in comparison settings (bad threshold, unknown stat...)."""


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


@dataclass(frozen=True)
class CompareSettings:
    """How to compare. ``threshold`` is a fraction (0.05 = 5%) or None for auto;
    ``workload_thresholds``/``cell_thresholds`` override it per workload / cell id."""

    metric: str = "latency_ms"
    stat: str = DEFAULT_STAT
    threshold: float | None = None
    alpha: float = DEFAULT_ALPHA
    workload_thresholds: Mapping[str, float | None] = field(default_factory=dict)
    cell_thresholds: Mapping[str, float | None] = field(default_factory=dict)
    fallback_threshold: float = FALLBACK_THRESHOLD

    def __post_init__(self) -> None:
        if self.stat not in STATS:
            raise CompareError(f"unknown stat {self.stat!r}; choose from: {', '.join(STATS)}")
        if not 0 < self.alpha < 0.5:
            raise CompareError(f"alpha must be in (0, 0.5), got {self.alpha}")
        if self.threshold is not None and self.threshold < 0:
            raise CompareError("threshold must be >= 0")

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


def cell_key(cell: Mapping[str, Any]) -> str:
    """The identity of a cell across runs (its spec as ``a/b/c/...``)."""
    s = cell.get("spec") or {}
    return "/".join(
        [str(s.get(k, "?")) for k in ("workload", "backend", "device", "variant", "mode")]
        + [f"bs{s.get('batch_size', '?')}", str(s.get("size", "?"))]
        + ([f"ws{s['world_size']}"] if s.get("world_size") else [])
    )


def higher_is_better(metric: str) -> bool:
    m = metric.lower()
    return any(t in m for t in _HIGHER_IS_BETTER)


def _finite(xs: Iterable[Any]) -> np.ndarray:
    a = np.asarray([x for x in xs if isinstance(x, (int, float)) and not isinstance(x, bool)], dtype=float)
    return a[np.isfinite(a)]


def location(samples: np.ndarray, stat: str) -> float:
    """The location statistic of one observation's raw samples."""
    if stat == "min":
        return float(np.min(samples))
    if stat == "p10":
        return float(np.percentile(samples, 10))
    if stat == "p50":
        return float(np.median(samples))
    return float(np.mean(samples))


def _dotted(metrics: Mapping[str, Any], path: str) -> Any:
    cur: Any = metrics
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur


@dataclass
class Observation:
    """One worker process's measurement of a cell."""

    run_id: str
    value: float | None  # the location statistic (or scalar metric); None when not measured
    samples: np.ndarray | None  # raw samples in the metric's unit (latency only)
    status: str
    workload: str
    threads: Any = None
    reason: str = ""


def observations(docs: Sequence[Mapping[str, Any]], metric: str, stat: str) -> dict[str, list[Observation]]:
    """Cell key -> observations over ``docs`` (every occurrence of a cell is one)."""
    use_samples = metric in ("latency_ms", "throughput_per_s")
    out: dict[str, list[Observation]] = {}
    for doc in docs:
        seen: set[str] = set()
        for cell in doc.get("cells") or []:
            if not isinstance(cell, Mapping):
                continue
            key = cell_key(cell)
            if key in seen:  # a cell repeated inside one run is not another run: first one counts
                continue
            seen.add(key)
            status = str(cell.get("status"))
            spec = cell.get("spec") or {}
            runtime = cell.get("runtime") if isinstance(cell.get("runtime"), Mapping) else {}
            value: float | None = None
            samples = None
            if status == "ok":
                if use_samples:
                    s = _finite(cell.get("samples_ms") or [])
                    if s.size:
                        samples = s
                        value = location(s, stat)
                else:
                    v = _dotted(cell.get("metrics") or {}, metric)
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                        value = float(v)
            out.setdefault(key, []).append(
                Observation(
                    run_id=str(doc.get("run_id")), value=value, samples=samples, status=status,
                    workload=str(spec.get("workload")), threads=runtime.get("threads"),
                    reason=str(cell.get("reason") or ""),
                )
            )  # fmt: skip
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


def _bootstrap_log_ratio(b: np.ndarray, c: np.ndarray, stat: str, resamples: int, seed: int) -> np.ndarray:
    """Bootstrap distribution of log(stat(c) / stat(b)), resampling each side's samples."""
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

    lb, lc = boot(b), boot(c)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(lc) - np.log(lb)


@dataclass
class CellComparison:
    """The comparison of one cell; ``ratio`` is candidate/baseline of the metric as
    stored (latency: >1 is slower), ``change`` the relative change in the "worse"
    direction (positive = worse)."""

    key: str
    workload: str
    verdict: str  # regression | improvement | unchanged | inconclusive | only_baseline | only_candidate | not_comparable
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
    run_noise: float | None = None  # sd of log location between runs (~ relative sd)
    threshold: float | None = None
    threshold_source: str = ""
    mdc: float | None = None  # minimum detectable change (fraction), 80% power
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["ratio_ci"] = list(self.ratio_ci) if self.ratio_ci else None
        return d


@dataclass
class Comparison:
    settings: CompareSettings
    cells: list[CellComparison]
    warnings: list[str]
    baseline_runs: list[str]
    candidate_runs: list[str]

    @property
    def lost(self) -> list[CellComparison]:
        """Cells measured in the baseline that the candidate no longer measures (absent,
        skipped or failed): a gate that ignored them would pass a run that lost its GPU."""
        return [c for c in self.cells
                if c.verdict in ("only_baseline", "not_comparable") and c.n_baseline > 0 and c.n_candidate == 0]

    @property
    def regressions(self) -> list[CellComparison]:
        return [c for c in self.cells if c.verdict == "regression"]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.cells:
            out[c.verdict] = out.get(c.verdict, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        return {
            "metric": s.metric,
            "stat": s.stat if s.metric in ("latency_ms", "throughput_per_s") else None,
            "alpha": s.alpha,
            "threshold": s.threshold,
            "baseline_runs": self.baseline_runs,
            "candidate_runs": self.candidate_runs,
            "warnings": self.warnings,
            "counts": self.counts(),
            "regression": bool(self.regressions),
            "cells": [c.to_dict() for c in self.cells],
        }


def _moderated(var: float, df: float, prior_var: float | None, prior_df: float) -> tuple[float, float]:
    if prior_var is None or prior_df <= 0:
        return var, df
    return (df * var + prior_df * prior_var) / (df + prior_df), df + prior_df


def upper_trim(y: np.ndarray, trim: float) -> tuple[float, float, int, int]:
    """Upper-trimmed mean of ``y`` and the winsorized sum of squares (Yuen), trimming the
    ``floor(trim * n)`` largest values: (mean of kept, winsorized SS, n, kept h)."""
    n = y.size
    g = int(math.floor(trim * n + 1e-9))
    ys = np.sort(y)
    h = n - g
    w = ys.copy()
    w[h:] = ys[h - 1]
    return float(ys[:h].mean()), float(((w - w.mean()) ** 2).sum()), n, h


def _factor(n: int, h: int) -> float:
    """Variance factor of an upper-trimmed mean: (n-1)/(h(h-1)) (Yuen); 1/n untrimmed."""
    return 1.0 / n if h == n or h < 2 else (n - 1) / (h * (h - 1))


def _between(
    yb: np.ndarray, yc: np.ndarray, prior_var: float | None, prior_df: float, alpha: float, trim: float = 0.0
) -> dict[str, Any]:
    """Two-sample t on log locations with pooled (moderated) run-to-run variance; with
    ``trim`` > 0 the slowest ``trim`` fraction of runs per side is trimmed and the
    variance winsorized (Yuen's trimmed t, one-sided trimming)."""
    from scipy.special import stdtr, stdtrit  # Student t CDF and its inverse (scipy.stats is slow to import)

    mb, ssb, nb, hb = upper_trim(yb, trim)
    mc, ssc, nc, hc = upper_trim(yc, trim)
    df = float(hb + hc - 2)
    var = (ssb + ssc) / df if df > 0 else 0.0
    var, df = _moderated(var, df, prior_var, prior_df)
    var = max(var, 1e-12)
    se = math.sqrt(var * (_factor(nb, hb) + _factor(nc, hc)))
    diff = mc - mb
    t = diff / se
    p_up = float(stdtr(df, -t))
    p_down = float(stdtr(df, t))
    q = float(stdtrit(df, 1 - alpha / 2))
    crit = float(stdtrit(df, 1 - alpha))
    mdc = math.exp((crit + float(stdtrit(df, POWER))) * se) - 1.0
    return {
        "log_ratio": diff, "ci": (math.exp(diff - q * se), math.exp(diff + q * se)),
        "p_up": p_up, "p_down": p_down, "noise": math.sqrt(var), "df": df,
        "band": math.exp(crit * se) - 1.0, "mdc": mdc,
    }  # fmt: skip


def _within(b: np.ndarray, c: np.ndarray, stat: str, alpha: float, seed: int) -> dict[str, Any]:
    """Mann-Whitney U on raw samples + bootstrap CI of the ratio of ``stat``."""
    from scipy import stats as st

    p_up = float(st.mannwhitneyu(c, b, alternative="greater", method="asymptotic").pvalue)
    p_down = float(st.mannwhitneyu(c, b, alternative="less", method="asymptotic").pvalue)
    lr = _bootstrap_log_ratio(b, c, stat, BOOTSTRAP_RESAMPLES, seed)
    lr = lr[np.isfinite(lr)]
    diff = math.log(location(c, stat) / location(b, stat))
    lo, hi = np.quantile(lr, [alpha / 2, 1 - alpha / 2]) if lr.size else (diff, diff)
    se = float(lr.std(ddof=1)) if lr.size > 1 else 0.0
    z = st.norm.ppf(1 - alpha) + st.norm.ppf(POWER)
    return {
        "log_ratio": diff, "ci": (math.exp(float(lo)), math.exp(float(hi))), "p_up": p_up, "p_down": p_down,
        "band": math.exp(float(st.norm.ppf(1 - alpha)) * se) - 1.0, "mdc": math.exp(z * se) - 1.0,
    }  # fmt: skip


def compare_docs(
    baseline: Sequence[Mapping[str, Any]],
    candidate: Sequence[Mapping[str, Any]],
    settings: CompareSettings | None = None,
) -> Comparison:
    """Compare every cell of ``candidate`` against ``baseline`` (lists of result docs;
    several docs on one side are repeated runs of the same code)."""
    s = settings or CompareSettings()
    warnings = environment_warnings(baseline, candidate)
    ob = observations(baseline, s.metric, s.stat)
    oc = observations(candidate, s.metric, s.stat)
    hib = higher_is_better(s.metric)
    lat_based = s.metric in ("latency_ms", "throughput_per_s")
    flip = s.metric == "throughput_per_s"  # computed on latency samples, shown as throughput

    results: list[CellComparison] = []
    pending: list[tuple[CellComparison, np.ndarray, np.ndarray, list[Observation], list[Observation]]] = []
    for key in list(dict.fromkeys(list(ob) + list(oc))):
        b_all, c_all = ob.get(key, []), oc.get(key, [])
        workload = (b_all or c_all)[0].workload
        cc = CellComparison(key=key, workload=workload, verdict="unchanged")
        if not b_all or not c_all:
            cc.verdict = "only_candidate" if not b_all else "only_baseline"
            cc.n_baseline = sum(1 for o in b_all if o.value is not None and o.value > 0)
            cc.n_candidate = sum(1 for o in c_all if o.value is not None and o.value > 0)
            results.append(cc)
            continue
        b = [o for o in b_all if o.value is not None and o.value > 0]
        c = [o for o in c_all if o.value is not None and o.value > 0]
        cc.n_baseline, cc.n_candidate = len(b), len(c)
        if not b or not c:
            cc.verdict = "not_comparable"
            side = "baseline" if not b else "candidate"
            o = (b_all if not b else c_all)[0]
            cc.notes.append(f"no {s.metric} in {side}: {o.status}" + (f" ({o.reason})" if o.reason else ""))
            results.append(cc)
            continue
        tb = {o.threads for o in b if o.threads is not None}
        tc = {o.threads for o in c if o.threads is not None}
        if tb and tc and tb != tc:
            cc.notes.append(f"thread counts differ: baseline {sorted(tb, key=str)}, candidate {sorted(tc, key=str)}")
        yb = np.log([o.value for o in b])
        yc = np.log([o.value for o in c])
        pending.append((cc, yb, yc, b, c))
        results.append(cc)

    # run-to-run variance of the compared cells: its median is the prior of each cell's moderated variance
    cell_vars = []
    for cc, yb, yc, _, _ in pending:
        trim = TRIM_SLOW_RUNS if lat_based else 0.0
        _, ssb, _, hb = upper_trim(yb, trim)
        _, ssc, _, hc = upper_trim(yc, trim)
        df = hb + hc - 2
        if df > 0:
            cell_vars.append(((ssb + ssc) / df, df))

    for cc, yb, yc, b, c in pending:
        df = yb.size + yc.size - 2
        if df > 0 and len(cell_vars) >= 3:
            prior_var = float(np.median([v for v, _ in cell_vars]))
            prior_df = min(PRIOR_DF, float(sum(d for _, d in cell_vars)))
        else:
            prior_var, prior_df = None, 0.0
        if df > 0:
            trim = TRIM_SLOW_RUNS if lat_based else 0.0
            r = _between(yb, yc, prior_var, prior_df, s.alpha, trim)
            trimmed = int(math.floor(trim * yb.size + 1e-9)) + int(math.floor(trim * yc.size + 1e-9))
            cc.test = ("trimmed " if trimmed else "") + "t-test on log(" + (s.stat if lat_based else "value") + ") between runs"
            if trimmed:
                cc.notes.append(f"slowest {trimmed} run(s) trimmed (interference only adds time)")
            cc.noise_model = "between-run"
            cc.run_noise = r["noise"]
        elif lat_based and b[0].samples is not None and c[0].samples is not None:
            r = _within(b[0].samples, c[0].samples, s.stat, s.alpha, BOOTSTRAP_SEED)
            cc.test = "Mann-Whitney U on raw samples + bootstrap CI"
            cc.noise_model = "within-run only"
            cc.notes.append("run-to-run noise not measured (one run per side): give repeated runs or a history")
        else:
            r = None
            cc.test = "none (one value per side)"
            cc.noise_model = "unknown"
        if r is not None and "trimmed" in cc.test:
            log_ratio = r["log_ratio"]
            cc.baseline_value = float(math.exp(upper_trim(yb, TRIM_SLOW_RUNS)[0]))
            cc.candidate_value = float(math.exp(upper_trim(yc, TRIM_SLOW_RUNS)[0]))
        else:
            log_ratio = float(yc.mean() - yb.mean())
            cc.baseline_value = float(math.exp(yb.mean()))
            cc.candidate_value = float(math.exp(yc.mean()))
        ratio = math.exp(log_ratio)
        ci = r["ci"] if r else None
        p_up = r["p_up"] if r else None
        p_down = r["p_down"] if r else None
        if flip:  # throughput = batch / latency
            ratio = 1.0 / ratio
            ci = (1.0 / ci[1], 1.0 / ci[0]) if ci else None
            p_up, p_down = p_down, p_up
            cc.baseline_value, cc.candidate_value = None, None
        cc.ratio, cc.ratio_ci = ratio, ci
        # worse direction: latency up (ratio > 1) unless higher is better
        cc.change = (1.0 / ratio - 1.0) if hib else (ratio - 1.0)
        cc.p_worse, cc.p_better = (p_down, p_up) if hib else (p_up, p_down)
        thr, src = s.threshold_for(cc.key, cc.workload)
        if thr is None:
            if r is not None and cc.noise_model == "between-run":
                thr, src = max(AUTO_FLOOR, r["band"]), "auto (run-to-run noise band)"
            elif r is not None:
                thr, src = max(s.fallback_threshold, r["band"]), "auto (fallback: run-to-run noise unknown)"
            else:
                thr, src = s.fallback_threshold, "auto (fallback: run-to-run noise unknown)"
        cc.threshold, cc.threshold_source = thr, src
        cc.mdc = max(thr, r["mdc"]) if r else None

    # Holm over every tested cell, each direction separately
    tested = [cc for cc, *_ in pending if cc.p_worse is not None]
    adj_w = holm([cc.p_worse for cc in tested])  # type: ignore[misc]
    adj_b = holm([cc.p_better for cc in tested])  # type: ignore[misc]
    for cc, pw, pb in zip(tested, adj_w, adj_b):
        cc.p_adjusted = pw
        worse = cc.change is not None and cc.change > (cc.threshold or 0.0)
        better = cc.change is not None and cc.change < -(cc.threshold or 0.0) / (1 + (cc.threshold or 0.0))
        if pw < s.alpha and worse:
            cc.verdict = "regression"
        elif pb < s.alpha and better:
            cc.verdict = "improvement"
            cc.p_adjusted = pb
        elif worse or better:
            cc.verdict = "inconclusive"
            cc.notes.append("change exceeds the threshold but is not significant")
    for cc, *_ in pending:
        if cc.p_worse is None and cc.change is not None and abs(cc.change) > (cc.threshold or 0.0):
            cc.verdict = "inconclusive"
            cc.notes.append("change exceeds the threshold but cannot be tested (one value per side)")

    return Comparison(
        settings=s, cells=results, warnings=warnings,
        baseline_runs=[str(d.get("run_id")) for d in baseline],
        candidate_runs=[str(d.get("run_id")) for d in candidate],
    )  # fmt: skip


def fingerprint(doc: Mapping[str, Any]) -> str:
    """The machine identity of a run: its environment fingerprint, else host + CPU."""
    env = doc.get("environment") or {}
    fp = env.get("fingerprint") if isinstance(env, Mapping) else None
    if fp:
        return str(fp)
    cpu = env.get("cpu") if isinstance(env, Mapping) else None
    model = cpu.get("model") if isinstance(cpu, Mapping) else None
    return f"{env.get('host') if isinstance(env, Mapping) else '?'}|{model}"


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
        fw = {str((d.get("environment") or {}).get("frameworks")) for d in docs}
        if len(fw) > 1:
            out.append(f"the {name} runs used different framework versions")
    return out
