"""Summary statistics computed from raw samples (never stored instead of them).

All functions take per-iteration latencies in milliseconds and are deterministic
(the bootstrap uses a fixed seed), so the same samples always give the same summary.

Cost is bounded by design (issue 13): every statistic is computed from all samples in
O(n) or O(n log n); the percentile bootstrap of the median (O(resamples x n)) runs only
up to :data:`BOOTSTRAP_MAX_SAMPLES` samples. Above that the median's CI comes from order
statistics (distribution-free, O(n) with ``np.partition``), which the bootstrap converges
to anyway, and the summary says so in ``ci95_method``. Ordinary cells (hundreds to a few
thousand samples) never reach the cap, so their summaries are exactly as before.
"""

from __future__ import annotations

import math

from statistics import NormalDist
from typing import Any, Sequence

import numpy as np

NOISE_IQR_RATIO = 0.10  # torch.utils.benchmark warns when IQR/median exceeds 10%
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20261123
# samples up to which the median CI is bootstrapped (2,000 x 10,000 draws: ~1.5 s on the
# 2-core machine); longer series get the O(n) order-statistic CI. The worker's cells hold
# hundreds to a few thousand samples; the pytest-benchmark importer uses the same cap.
BOOTSTRAP_MAX_SAMPLES = 10_000
ORDER_STATISTIC_METHOD = ("order statistics of ranks n/2 -+ z sqrt(n)/2 (distribution-free; the percentile "
                          "bootstrap converges to it), not the bootstrap: more than {cap:,} samples")  # fmt: skip


def order_statistic_median_ci(samples: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free CI of the median: the order statistics of (1-based) ranks
    ``floor(n/2 - z sqrt(n)/2)`` and ``ceil(n/2 + z sqrt(n)/2 + 1)``, clipped to 1..n
    (normal approximation of the binomial count below the median; z the two-sided
    normal quantile of ``confidence``). O(n) with ``np.partition``; the same formula as
    the pytest-benchmark importer's."""
    x = np.asarray(samples, dtype=np.float64)
    n = int(x.size)
    if n == 0:
        raise ValueError("no samples")
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    lo = max(1, int(math.floor(n / 2 - z * math.sqrt(n) / 2)))
    hi = min(n, int(math.ceil(n / 2 + z * math.sqrt(n) / 2 + 1)))
    part = np.partition(x, [lo - 1, hi - 1])
    return float(part[lo - 1]), float(part[hi - 1])


def _percentile_bootstrap(x: np.ndarray, confidence: float, resamples: int, seed: int) -> tuple[float, float]:
    """The percentile bootstrap of the median of ``x`` (O(resamples x n); callers bound n)."""
    rng = np.random.default_rng(seed)
    # resample in chunks to bound memory for very long sample series
    meds = np.empty(resamples)
    chunk = max(1, min(resamples, 4_000_000 // x.size))
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))
        meds[start:stop] = np.median(x[idx], axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(meds, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bootstrap_median_ci(
    samples: Sequence[float],
    confidence: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    max_samples: int = BOOTSTRAP_MAX_SAMPLES,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the median.

    With fewer than 2 samples the interval collapses to the single value. With more
    than ``max_samples`` samples the bootstrap (O(resamples x n)) is not run: the
    interval is :func:`order_statistic_median_ci` (O(n)), see :func:`median_ci_method`.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no samples")
    if x.size < 2:
        return float(x[0]), float(x[0])
    if x.size > max_samples:
        return order_statistic_median_ci(x, confidence)
    return _percentile_bootstrap(x, confidence, resamples, seed)


def median_ci_method(n: int, max_samples: int = BOOTSTRAP_MAX_SAMPLES) -> str | None:
    """How :func:`bootstrap_median_ci` computes the CI of ``n`` samples: None for the
    percentile bootstrap (the documented default), else the order-statistic method."""
    return ORDER_STATISTIC_METHOD.format(cap=max_samples) if n > max_samples else None


def summarize(samples_ms: Sequence[float]) -> dict[str, Any]:
    """Latency summary of per-iteration samples (ms).

    Keys: n, p50, p90, p99, mean, std (sample std, ddof=1), min, max, iqr, cv
    (std/mean), ci95_low/ci95_high (bootstrap CI of the median), iqr_over_median,
    and noisy (IQR/median > 10%). Samples that are autocorrelated in time order
    (:func:`correlation_inflation` above :func:`inflation_noise_bound`) get their CI
    widened around the median by the square root of that inflation, recorded as
    ci95_correlation_inflation (absent when the CI was not widened). Everything is computed from all samples; above
    :data:`BOOTSTRAP_MAX_SAMPLES` samples the median CI is by order statistics and the
    key ``ci95_method`` says so (it is absent for the bootstrap, as in every summary
    written before the cap existed).
    """
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no samples to summarize")
    if not np.all(np.isfinite(x)):
        raise ValueError("samples contain NaN or infinity")
    p25, p50, p75, p90, p99 = np.percentile(x, [25, 50, 75, 90, 99])
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    lo, hi = bootstrap_median_ci(x)
    method = median_ci_method(int(x.size))
    # samples in time order are not independent when the machine drifts or switches
    # between quiet and contended episodes: the bootstrap CI (which assumes they are)
    # is then too narrow. Widen it around the median by the square root of the variance
    # inflation of the batch means (1 for independent samples), as the stopping rule does
    # (docs/timing.md: coverage 0.43 -> 0.88 on AR(1) samples)
    # (only when the estimate is clearly above its noise for independent samples, so that
    # an ordinary summary of independent samples stays what it was)
    inflation = correlation_inflation(x, median=float(p50))
    widened = inflation > inflation_noise_bound(int(x.size))
    if widened:
        w = math.sqrt(inflation)
        lo, hi = float(p50) - (float(p50) - lo) * w, float(p50) + (hi - float(p50)) * w
    iqr = float(p75 - p25)
    ratio = iqr / float(p50) if p50 > 0 else 0.0
    out: dict[str, Any] = {
        "n": int(x.size),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "mean": mean,
        "std": std,
        "min": float(x.min()),
        "max": float(x.max()),
        "iqr": iqr,
        "cv": std / mean if mean > 0 else 0.0,
        "ci95_low": lo,
        "ci95_high": hi,
        "iqr_over_median": ratio,
        "noisy": bool(ratio > NOISE_IQR_RATIO),
    }
    if method:
        out["ci95_method"] = method
    if widened:
        out["ci95_correlation_inflation"] = inflation
    return out


def inflation_noise_bound(n: int, min_batches: int = 5) -> float:
    """The largest :func:`correlation_inflation` that independent samples plausibly
    give by chance: 1 + 2 standard errors of a variance estimated from ``b`` batch means
    (``sqrt(2 / (b - 1))``), about 1.39 for 3,000 samples and 1.62 for 500. Above it the
    summary widens its CI."""
    b = max(min_batches, int(math.isqrt(max(0, n))))
    return 1.0 + 2.0 * math.sqrt(2.0 / max(1, b - 1))


# ----------------------------------------------------------------------------- sequential decisions (timing)
# Used between sample blocks by harness.core.timing (never inside the timed region), so
# they are O(n) in numpy: no bootstrap, no scipy import in the worker.


def correlation_inflation(samples: Sequence[float] | np.ndarray, median: float | None = None,
                          min_batches: int = 5) -> float:
    """How much autocorrelation widens the median's CI: the variance inflation factor
    of the indicator series ``1[x_t <= median]`` estimated by non-overlapping batch
    means (``b = max(min_batches, floor(sqrt(n)))`` batches of ``n // b`` samples):
    ``k var(batch means) / (p (1 - p))``, at least 1. 1 for independent samples (up to
    the estimate's noise, which the floor of 1 keeps from narrowing a CI); about
    ``(1 + phi) / (1 - phi)`` for AR(1) samples; large when the machine switches between
    quiet and contended episodes that each span several batches. O(n)."""
    x = np.asarray(samples, dtype=np.float64)
    n = int(x.size)
    b = max(min_batches, int(math.isqrt(n)))
    k = n // b
    if k < 2:
        return 1.0
    med = float(np.median(x)) if median is None else median
    ind = (x[: b * k] <= med).astype(np.float64)
    p = float(ind.mean())
    if not 0 < p < 1:
        return 1.0
    bm = ind.reshape(b, k).mean(axis=1)
    return max(1.0, k * float(bm.var(ddof=1)) / (p * (1 - p)))


def median_ci_precision(samples: Sequence[float] | np.ndarray, confidence: float = 0.95,
                        inflation: float = 1.0) -> tuple[float, float, float, float]:
    """``(median, ci_low, ci_high, rel_halfwidth)`` of ``samples``: the median, its
    :func:`order_statistic_median_ci` and the CI's relative half-width
    ``(ci_high - ci_low) / 2 / median`` (infinity for a median <= 0). One ``np.partition``:
    O(n). ``inflation`` (>= 1, e.g. :func:`correlation_inflation`) widens the ranks'
    distance from n/2 by its square root: the CI of ``n / inflation`` independent
    samples' worth of information. With ``inflation=1`` this is exactly
    :func:`order_statistic_median_ci`, to which the summary's bootstrap CI converges."""
    x = np.asarray(samples, dtype=np.float64)
    n = int(x.size)
    if n == 0:
        raise ValueError("no samples")
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0) * math.sqrt(max(1.0, inflation))
    lo = max(1, int(math.floor(n / 2 - z * math.sqrt(n) / 2)))
    hi = min(n, int(math.ceil(n / 2 + z * math.sqrt(n) / 2 + 1)))
    mid = sorted({(n - 1) // 2, n // 2})
    part = np.partition(x, sorted({lo - 1, hi - 1, *mid}))
    med = float(part[mid].mean())
    ci_lo, ci_hi = float(part[lo - 1]), float(part[hi - 1])
    rel = (ci_hi - ci_lo) / 2.0 / med if med > 0 else math.inf
    return med, ci_lo, ci_hi, rel


def rank_sum_p(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, alternative: str = "two-sided") -> float:
    """p-value of the Wilcoxon rank-sum (Mann-Whitney U) test that ``a`` and ``b`` come
    from one distribution, against ``alternative`` "two-sided" or "greater" (``a``
    tends to be larger than ``b``): the normal approximation with tie correction and
    continuity correction (scipy's ``mannwhitneyu(method="asymptotic")``), in numpy
    (O(n log n)). 1.0 when either side is empty or every value is tied."""
    if alternative not in ("two-sided", "greater"):
        raise ValueError(f"alternative must be two-sided or greater, got {alternative!r}")
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    n1, n2 = int(x.size), int(y.size)
    if n1 == 0 or n2 == 0:
        return 1.0
    both = np.concatenate([x, y])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(both.size)
    sorted_vals = both[order]
    # average ranks of ties
    _, first, counts = np.unique(sorted_vals, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u1 = float(ranks[:n1].sum()) - n1 * (n1 + 1) / 2.0
    n = n1 + n2
    tie = float((counts**3 - counts).sum())
    var = n1 * n2 / 12.0 * ((n + 1) - tie / (n * (n - 1))) if n > 1 else 0.0
    if var <= 0:
        return 1.0
    if alternative == "greater":
        return float(1.0 - NormalDist().cdf((u1 - n1 * n2 / 2.0 - 0.5) / math.sqrt(var)))
    z = (abs(u1 - n1 * n2 / 2.0) - 0.5) / math.sqrt(var)
    return float(min(1.0, 2.0 * (1.0 - NormalDist().cdf(max(z, 0.0)))))
