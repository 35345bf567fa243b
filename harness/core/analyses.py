"""Post-measurement analyses of a cell, run in the worker after the timed loop (so they
never disturb timing): each returns (metrics to add, {metric: reason unavailable}).

Add an analysis by appending a function with the signature below to ``ANALYSES``.
"""

from __future__ import annotations

from typing import Any, Callable

Analysis = Callable[..., tuple[dict[str, Any], dict[str, str]]]


def achieved_flops(*, workload: Any, spec: Any, metrics: dict[str, Any], variant: Any = None,
                   **_: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Analytic FLOP/s at the median latency (``flops_analytic`` / p50), of the model
    the cell actually runs: a variant that runs a different model (distill's student,
    structured pruning) replaces the workload's ``flops_analytic`` with its own count
    (the workload's stays under ``flops_analytic_workload``), or nulls it with the
    reason when it has none, so no FLOP/s or MFU is ever the teacher's."""
    from harness.core.flops import variant_model_flops

    out: dict[str, Any] = {}
    missing: dict[str, str] = {}
    flops = metrics.get("flops_analytic")
    own = variant_model_flops(workload, variant, spec.batch_size, spec.mode)
    if own is not None:
        flops, what = own
        out["flops_analytic_workload"] = metrics.get("flops_analytic")
        out["flops_analytic"] = flops
        out["flops_analytic_source"] = what
        if flops is None:
            missing["flops_analytic"] = missing["achieved_flops_per_s_analytic"] = what
    p50_ms = (metrics.get("latency_ms") or {}).get("p50")
    if flops and p50_ms:
        out["achieved_flops_per_s_analytic"] = flops / (p50_ms / 1e3)
    return out, missing


def _flops(**kw: Any) -> tuple[dict[str, Any], dict[str, str]]:
    from harness.core.flops import flops_analysis  # counted FLOPs, bytes moved, achieved FLOP/s

    return flops_analysis(**kw)


def _quality(**kw: Any) -> tuple[dict[str, Any], dict[str, str]]:
    from harness.core.quality import quality_analysis  # model size/params + metrics.quality (digits)

    return quality_analysis(**kw)


ANALYSES: list[Analysis] = [achieved_flops, _flops, _quality]
