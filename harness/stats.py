"""Summary statistics computed from raw samples (never stored instead of them).

All functions take per-iteration latencies in milliseconds and are deterministic
(the bootstrap uses a fixed seed), so the same samples always give the same summary.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

NOISE_IQR_RATIO = 0.10  # torch.utils.benchmark warns when IQR/median exceeds 10%
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20261123


def bootstrap_median_ci(
    samples: Sequence[float],
    confidence: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the median.

    With fewer than 2 samples the interval collapses to the single value.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no samples")
    if x.size < 2:
        return float(x[0]), float(x[0])
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


def summarize(samples_ms: Sequence[float]) -> dict[str, Any]:
    """Latency summary of per-iteration samples (ms).

    Keys: n, p50, p90, p99, mean, std (sample std, ddof=1), min, max, iqr, cv
    (std/mean), ci95_low/ci95_high (bootstrap CI of the median), iqr_over_median,
    and noisy (IQR/median > 10%).
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
    iqr = float(p75 - p25)
    ratio = iqr / float(p50) if p50 > 0 else 0.0
    return {
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
