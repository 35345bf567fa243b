"""What the worker records for one cell, run in-process on a real tiny torch cell: the
device peak is read for the timed steps alone (before any post-measurement analysis
re-runs the model), sustained throughput, contention and the step's runtime."""

from __future__ import annotations

from typing import Any

import pytest

from harness.core.suite import Settings, TaskSpec


def test_device_peak_is_read_before_the_post_measurement_analyses(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.backends.torch_backend import TorchStep
    from harness.launch import measure, worker

    order: list[str] = []

    def fake_peak(self: Any) -> tuple[int | None, str]:
        # the lowest boundary we have without a GPU: the step's peak counter; an analysis
        # that ran the model again (FLOP counter, quality) would have raised it to 10x
        order.append("peak")
        return (1000 if "analysis" not in order else 10_000), "fake counter"

    def analysis(**kw: Any) -> tuple[dict[str, Any], dict[str, str]]:
        order.append("analysis")
        return {}, {}

    monkeypatch.setattr(TorchStep, "device_peak_memory", fake_peak)
    monkeypatch.setattr(measure, "analyses", lambda: [analysis])
    spec = TaskSpec(workload="mlp", backend="torch", device="cpu", variant="fp32", mode="inference",
                    batch_size=8, size="tiny")
    cell = worker.run_cell(spec, Settings(size="tiny", min_time_s=0.05, warmup_max_s=0.2, threads=1))
    assert cell["status"] == "ok", cell.get("reason")
    assert order.index("peak") < order.index("analysis")
    assert cell["metrics"]["peak_device_mem_bytes"] == 1000
    # sustained throughput is what the timed loop processed
    t = cell["timing"]
    assert cell["metrics"]["throughput_per_s"] == pytest.approx(
        t["samples"] * t["iters_per_sample"] * 8 / t["loop_wall_s"], rel=1e-9)
    assert cell["metrics"]["throughput_p50_per_s"] == pytest.approx(8e3 / cell["metrics"]["latency_ms"]["p50"])
    assert isinstance(t["contention"]["detected"], bool) and t["contention"]["evidence"]
    assert cell["runtime"]["precision"]["fp32_math"] == "ieee"
