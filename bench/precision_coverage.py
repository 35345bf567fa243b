"""Coverage of the median's 95% CI when sampling stops at a precision target (issue 14).

    .venv/bin/python bench/precision_coverage.py --trials 1000 --precision 2
    .venv/bin/python bench/precision_coverage.py --trials 1000 --precision 1 --bootstrap-trials 200

Sequential stopping ("sample until the CI is narrow enough") can bias a confidence
interval: the rule stops more often right after the samples happen to bunch up, when
the CI is too narrow. This script measures that with the harness's own stopping code:
every trial feeds samples one at a time (a step timed alone, as on a GPU or for steps
of milliseconds) to :class:`harness.core.timing.SamplingStop` -- the same object the
timed loops use, imported, not copied -- with ``min_time_s`` x ``MAX_TIME_FACTOR`` as
the time cap (``--min-time``, samples are milliseconds on the clock), until it stops.
Per distribution it reports, over ``--trials`` trials:

* ``cover(stop CI)``: how often the order-statistic 95% CI the decision used
  (:func:`harness.core.stats.median_ci_precision`) contains the true median;
* ``cover(fixed n)``: the same CI from a *fixed* sample count (the sequential runs'
  mean count, rounded), no stopping rule: the coverage the CI has on this process at
  all (autocorrelated samples break every i.i.d. CI, sequential or not);
* ``today: cover, n``: today's loop (no target, ``min_time_s`` of samples; the same
  :class:`SamplingStop`) with the plain CI the summary reports, and its sample count;
* ``cover(plain)``: the plain order-statistic CI (no widening) at the sequential stop;
* ``cover(reported)``: the summary's CI (:func:`harness.core.stats.summarize`, the
  percentile bootstrap), on the first ``--bootstrap-trials`` trials (it costs 2,000 x n);
* mean / p10 / p90 samples, stop reasons, and the mean achieved precision.

The distributions are realistic latency shapes with a known (or numerically exact)
true median: lognormal (mild and wide), bimodal (a fast path and a slow path),
heavy-tailed with outliers (lognormal body, 3% of samples 2-10x slower), AR(1) on the
log scale (each sample correlated with the last, phi 0.9), and contention episodes (a
two-state Markov chain: quiet, and busy steps 1.4x slower, in runs of ~200 samples).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.core.stats import bootstrap_median_ci, median_ci_precision  # noqa: E402
from harness.core.timing import MAX_TIME_FACTOR, SamplingStop, TimingConfig, stop_ci_precision  # noqa: E402

Sampler = Callable[[np.random.Generator, int], np.ndarray]


def _lognormal(sigma: float) -> Sampler:
    return lambda rng, n: rng.lognormal(0.0, sigma, n)


def _bimodal(rng: np.random.Generator, n: int) -> np.ndarray:
    slow = rng.random(n) < 0.35
    return np.where(slow, rng.normal(1.4, 0.05, n), rng.normal(1.0, 0.03, n))


def _outliers(rng: np.random.Generator, n: int) -> np.ndarray:
    body = rng.lognormal(0.0, 0.08, n)
    out = rng.random(n) < 0.03
    return np.where(out, body * rng.uniform(2.0, 10.0, n), body)


def _ar1(phi: float, sigma: float) -> Sampler:
    """exp(AR(1)) with stationary sd ``sigma``, started in the stationary distribution."""

    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        from scipy.signal import lfilter

        eps = rng.normal(0.0, sigma * math.sqrt(1 - phi * phi), n)
        eps[0] = rng.normal(0.0, sigma)
        return np.exp(lfilter([1.0], [1.0, -phi], eps))

    return draw


def _episodes(rng: np.random.Generator, n: int, mean_run: float = 200.0, busy_share: float = 0.3,
              slow: float = 1.4) -> np.ndarray:
    """Quiet/busy runs (geometric lengths, stationary start) times lognormal(0, 0.05) noise."""
    state = np.empty(n, dtype=bool)
    s = rng.random() < busy_share
    i = 0
    while i < n:
        mean = mean_run * (busy_share / (1 - busy_share) if s else 1.0)
        run = int(rng.geometric(1.0 / mean))
        state[i: i + run] = s
        i += run
        s = not s
    return np.where(state, slow, 1.0) * rng.lognormal(0.0, 0.05, n)


DISTRIBUTIONS: dict[str, tuple[str, Sampler]] = {
    "lognormal s=0.1": ("lognormal(0, 0.1)", _lognormal(0.1)),
    "lognormal s=0.4": ("lognormal(0, 0.4): a noisy cell", _lognormal(0.4)),
    "bimodal": ("65% N(1, 0.03) + 35% N(1.4, 0.05)", _bimodal),
    "outliers": ("lognormal(0, 0.08), 3% x U(2, 10)", _outliers),
    "AR(1) phi=0.9": ("exp(AR(1)), phi 0.9, stationary sd 0.1", _ar1(0.9, 0.1)),
    "episodes": ("quiet / 1.4x busy runs of ~200 samples (30% busy), x lognormal(0, 0.05)", _episodes),
}


def true_median(name: str) -> float:
    """Exact where the distribution allows, else the median of 2e7 draws (deterministic)."""
    if name.startswith("lognormal") or name.startswith("AR(1)"):
        return 1.0
    from scipy import optimize, stats

    if name == "bimodal":
        cdf = lambda m: 0.65 * stats.norm.cdf(m, 1.0, 0.03) + 0.35 * stats.norm.cdf(m, 1.4, 0.05) - 0.5  # noqa: E731
        return float(optimize.brentq(cdf, 0.9, 1.5))
    rng = np.random.default_rng(12345)
    draw = DISTRIBUTIONS[name][1]
    if name == "episodes":  # stationary marginal: the chain's time shares
        n = 20_000_000
        return float(np.median(_episodes(rng, n)))
    return float(np.median(draw(rng, 20_000_000)))


def run_trial(draw: Sampler, rng: np.random.Generator, config: TimingConfig, scale_s: float) -> tuple[list[float], str, SamplingStop]:
    """Feed samples one at a time to the harness's SamplingStop until it stops.
    ``scale_s``: clock seconds per unit of the sample (1 ms)."""
    stop = SamplingStop(config)
    cap = int(max(config.max_time, config.min_time_s) / scale_s * 3) + config.min_samples + 10
    x = draw(rng, cap)
    samples: list[float] = []
    elapsed = 0.0
    for v in x:
        samples.append(float(v))
        elapsed += v * scale_s
        reason = stop.after_block(samples, elapsed)
        if reason:
            return samples, reason, stop
    raise RuntimeError("the stopping rule did not stop within the time cap")


def covers(samples: list[float] | np.ndarray, m: float, inflation: float = 1.0) -> bool:
    _, lo, hi, _ = median_ci_precision(samples, inflation=inflation)
    return lo <= m <= hi


def evaluate(name: str, trials: int, config: TimingConfig, scale_s: float, boot_trials: int, seed: int) -> dict:
    desc, draw = DISTRIBUTIONS[name]
    m = true_median(name)
    rng = np.random.default_rng(seed)
    counts, hits, plain_hits, reasons, achieved, boot_hits = [], 0, 0, {}, [], 0
    t0 = time.perf_counter()
    for t in range(trials):
        samples, reason, stop = run_trial(draw, rng, config, scale_s)
        counts.append(len(samples))
        rel, inflation = stop_ci_precision(samples)
        hits += covers(samples, m, inflation)
        plain_hits += covers(samples, m)
        reasons[reason] = reasons.get(reason, 0) + 1
        achieved.append(rel)
        if t < boot_trials:
            lo, hi = bootstrap_median_ci(samples)
            boot_hits += lo <= m <= hi
    # today's loop (no target: min_time_s), same stopping code, and the plain CI it reports
    today_cfg = TimingConfig(min_time_s=config.min_time_s, min_samples=config.min_samples)
    trng = np.random.default_rng(seed + 2)
    today_hits, today_n = 0, []
    for _ in range(trials):
        samples, _, _ = run_trial(draw, trng, today_cfg, scale_s)
        today_hits += covers(samples, m)
        today_n.append(len(samples))
    n_fixed = max(config.min_samples, round(float(np.mean(counts))))
    frng = np.random.default_rng(seed + 1)
    fixed_hits = sum(covers(draw(frng, n_fixed), m) for _ in range(trials))
    return {
        "distribution": name,
        "description": desc,
        "true_median": m,
        "trials": trials,
        "coverage_stop_ci": hits / trials,
        "coverage_plain_ci": plain_hits / trials,
        "coverage_fixed_n": fixed_hits / trials,
        "coverage_today": today_hits / trials,
        "mean_samples_today": float(np.mean(today_n)),
        "fixed_n": n_fixed,
        "coverage_reported_ci": boot_hits / boot_trials if boot_trials else None,
        "reported_trials": boot_trials,
        "mean_samples": float(np.mean(counts)),
        "p10_samples": float(np.percentile(counts, 10)),
        "p90_samples": float(np.percentile(counts, 90)),
        "stop_reasons": reasons,
        "mean_achieved_precision": float(np.mean(achieved)),
        "seconds": time.perf_counter() - t0,
    }


def wilson(p: float, n: int) -> tuple[float, float]:
    """95% Wilson interval of a coverage estimate ``p`` from ``n`` trials."""
    z = 1.96
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--precision", type=float, default=2.0, help="target, percent (default 2)")
    ap.add_argument("--min-time", type=float, default=1.0, help="min_time_s; the cap is MAX_TIME_FACTOR x it")
    ap.add_argument("--min-samples", type=int, default=10)
    ap.add_argument("--precision-min-samples", type=int, default=None, help="default: TimingConfig's")
    ap.add_argument("--check-growth", type=float, default=None, help="default: TimingConfig's")
    ap.add_argument("--min-time-fraction", type=float, default=None, help="default: TimingConfig's")
    ap.add_argument("--bootstrap-trials", type=int, default=100)
    ap.add_argument("--only", action="append", default=[], help="distribution name (repeatable)")
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--before", action="store_true",
                    help="the first version of the rule, for the before/after table: the plain order-statistic "
                         "CI (no autocorrelation widening) and no time floor (--min-time-fraction 0)")
    args = ap.parse_args()

    extra = {}
    if args.before:
        import harness.core.timing as timing_module

        def plain(samples):  # the CI without the batch-means widening
            return median_ci_precision(samples)[3], 1.0

        timing_module.stop_ci_precision = plain  # SamplingStop looks it up at each check
        globals()["stop_ci_precision"] = plain
        extra["precision_min_time_fraction"] = 0.0
    if args.precision_min_samples is not None:
        extra["precision_min_samples"] = args.precision_min_samples
    if args.min_time_fraction is not None:
        extra["precision_min_time_fraction"] = args.min_time_fraction
    if args.check_growth is not None:
        extra["precision_check_growth"] = args.check_growth
    config = TimingConfig(min_time_s=args.min_time, min_samples=args.min_samples, precision=args.precision / 100,
                          **extra)
    print(f"precision {args.precision:g}% (CI half-width / median), min_samples {config.min_samples}, "
          f"precision_min_samples {config.precision_min_samples}, min time {config.precision_min_time:g} s, check every +{config.precision_check_growth:.0%}, "
          f"max time {config.max_time:g} s ({MAX_TIME_FACTOR:g} x min_time {args.min_time:g} s), samples of ~1 ms; "
          f"{args.trials} trials per distribution")
    header = (f"{'distribution':<18} {'cover(stop CI)':>20} {'cover(plain)':>12} {'cover(fixed n)':>15} {'cover(reported)':>16} "
              f"{'mean n':>8} {'p10-p90 n':>12} {'achieved':>9} {'today: cover, n':>16}  stop reasons")
    print(header)
    rows = []
    for i, name in enumerate(args.only or DISTRIBUTIONS):
        r = evaluate(name, args.trials, config, 1e-3, args.bootstrap_trials, args.seed + 1000 * i)
        rows.append(r)
        lo, hi = wilson(r["coverage_stop_ci"], r["trials"])
        rep = (f"{r['coverage_reported_ci']:.3f} ({r['reported_trials']})" if r["coverage_reported_ci"] is not None
               else "-")
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(r["stop_reasons"].items()))
        print(f"{name:<18} {r['coverage_stop_ci']:>6.3f} [{lo:.3f},{hi:.3f}] {r['coverage_plain_ci']:>12.3f} "
              f"{r['coverage_fixed_n']:>7.3f} n={r['fixed_n']:<5}"
              f" {rep:>16} {r['mean_samples']:>8.0f} {r['p10_samples']:>5.0f}-{r['p90_samples']:<6.0f}"
              f" {r['mean_achieved_precision']:>8.2%} {r['coverage_today']:>9.3f} {r['mean_samples_today']:>6.0f}"
              f"  {reasons}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"config": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
