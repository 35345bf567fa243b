"""Post-measurement analyses of a cell, run in the worker after the timed loop (so they
never disturb timing): each returns (metrics to add, {metric: reason unavailable}).

Add an analysis by appending a function with the signature below to ``ANALYSES``.
"""

from __future__ import annotations

from typing import Any, Callable

Analysis = Callable[..., tuple[dict[str, Any], dict[str, str]]]


def achieved_flops(*, workload: Any, spec: Any, metrics: dict[str, Any], **_: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Analytic FLOP/s at the median latency (``flops_analytic`` / p50)."""
    flops = metrics.get("flops_analytic")
    p50_ms = metrics.get("latency_ms", {}).get("p50")
    if not flops or not p50_ms:
        return {}, {}
    return {"achieved_flops_per_s_analytic": flops / (p50_ms / 1e3)}, {}


def _flops(**kw: Any) -> tuple[dict[str, Any], dict[str, str]]:
    from harness.flops import flops_analysis  # counted FLOPs, bytes moved, achieved FLOP/s

    return flops_analysis(**kw)


def _quality(**kw: Any) -> tuple[dict[str, Any], dict[str, str]]:
    from harness.quality import quality_analysis  # model size/params + metrics.quality (digits)

    return quality_analysis(**kw)


ANALYSES: list[Analysis] = [achieved_flops, _flops, _quality]
