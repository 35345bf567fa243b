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
    and noisy (IQR/median > 10%). Everything is computed from all samples; above
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
    return out
