"""Multi-machine view: per-machine throughput/latency, perf per watt from measured energy
only (estimates labelled, never ranked), perf per dollar from a price file, ranking."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.analysis.procurement import PriceError, load_prices, parse_prices, procurement_entries
from tests.test_report import make_doc, ok_cell


def machine_doc(host: str, fp: str, center_ms: float, energy: dict[str, Any] | None, run: int = 0,
                gpu: str | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    metrics = dict(extra or {})
    if energy is not None:
        metrics["energy"] = energy
    doc = make_doc([ok_cell("mlp", seed=run, center_ms=center_ms, extra_metrics=metrics)], host=host,
                   run_id=f"r-{host}-{run}", created=f"2026-11-2{run}T00:00:00Z")  # fmt: skip
    doc["environment"]["fingerprint"] = fp
    if gpu:
        doc["environment"]["gpus"] = [{"index": 0, "name": gpu, "memory_bytes": 80 * 2**30}]
    return doc


def measured(spj: float) -> dict[str, Any]:
    return {"energy_j": 10.0, "samples_per_j": spj, "avg_power_w": 300.0, "source": "nvml_energy_counter"}


def fleet() -> list[dict[str, Any]]:
    return [
        machine_doc("fast", "fp-fast", 0.5, measured(100.0), 0, gpu="H100"),
        machine_doc("fast", "fp-fast", 0.52, measured(110.0), 1, gpu="H100"),
        machine_doc("fast", "fp-fast", 0.51, measured(90.0), 2, gpu="H100"),
        machine_doc("slow", "fp-slow", 2.0, {"samples_per_j": 900.0, "source": "estimate", "model": "TDP x util"}),
        machine_doc("mid", "fp-mid", 1.0, {"energy_j": None, "source": "unavailable", "reason": "no RAPL"}),
    ]


def test_entries_per_machine_with_medians_and_ranking() -> None:
    es = procurement_entries(fleet())
    assert [e.host for e in es] == ["fast", "mid", "slow"]  # ranked by throughput
    assert [e.rank for e in es] == [1, 2, 3]
    fast = es[0]
    assert fast.n_runs == 3 and "H100" in fast.machine_label
    assert fast.samples_per_j == pytest.approx(100.0)  # median of the measured runs
    assert fast.energy_source == "nvml_energy_counter"
    assert fast.throughput_per_s == pytest.approx(64 / 0.51e-3, rel=0.05)


def test_estimates_are_labelled_and_never_ranked_as_measured() -> None:
    es = {e.host: e for e in procurement_entries(fleet(), rank_by="perf_per_watt")}
    assert es["slow"].samples_per_j is None and es["slow"].samples_per_j_estimate == pytest.approx(900.0)
    assert es["slow"].rank is None  # its estimate (higher!) does not win
    assert es["mid"].samples_per_j is None and es["mid"].energy_reason == "no RAPL"
    assert es["fast"].rank == 1


def test_perf_per_dollar_hourly_and_purchase(tmp_path: Path) -> None:
    f = tmp_path / "prices.yaml"
    f.write_text("currency: EUR\nmachines:\n  fast: {hourly: 4.0}\n  fp-mid: {hourly: 0.5}\n  slow: {purchase: 2000}\n")
    prices = load_prices(f)
    es = {e.host: e for e in procurement_entries(fleet(), prices, rank_by="perf_per_dollar")}
    assert es["fast"].perf_per_dollar == pytest.approx(es["fast"].throughput_per_s * 3600 / 4.0)
    assert es["mid"].perf_per_dollar == pytest.approx(es["mid"].throughput_per_s * 3600 / 0.5)
    assert es["mid"].perf_per_dollar_unit == "samples per EUR"
    assert es["slow"].perf_per_dollar == pytest.approx(es["slow"].throughput_per_s / 2.0)
    # the cheap mid machine beats the fast one per euro; purchase prices rank apart
    assert (es["mid"].rank, es["fast"].rank, es["slow"].rank) == (1, 2, 1)


@pytest.mark.parametrize(
    "data,msg",
    [
        ({"machines": {"a": {}}}, "needs 'hourly' or 'purchase'"),
        ({"machines": {"a": {"hourly": -1}}}, "positive number"),
        ({"machines": {"a": {"hourly": 1, "monthly": 3}}}, "unknown key"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_bad_price_files(data: Any, msg: str) -> None:
    with pytest.raises(PriceError, match=msg):
        parse_prices(data)


def test_scaling_efficiency_when_present_and_unknown_rank_metric() -> None:
    docs = [machine_doc("a", "fa", 1.0, None, extra={"distributed": {"world_size": 2, "scaling_efficiency": 0.87}})]
    assert procurement_entries(docs)[0].scaling_efficiency == pytest.approx(0.87)
    assert procurement_entries(fleet()[3:])[0].scaling_efficiency is None
    with pytest.raises(ValueError, match="choose from"):
        procurement_entries(docs, rank_by="vibes")


def test_contended_runs_are_left_out_and_a_contended_only_option_is_never_ranked() -> None:
    from tests.test_report import contention_record

    docs = fleet()
    # the "mid" machine measured 10x faster than it is, but under contention: no rank from that
    busy = machine_doc("busy", "fp-busy", 0.05, None)
    busy["cells"][0]["timing"]["contention"] = contention_record(1.7)
    # one of fast's runs was contended and 3x slower: left out of its median
    slow_run = machine_doc("fast", "fp-fast", 1.5, measured(10.0), 3, gpu="H100")
    slow_run["cells"][0]["timing"]["contention"] = contention_record(1.2)
    es = {e.host: e for e in procurement_entries(docs + [busy, slow_run])}
    assert es["busy"].rank is None and "other processes used 1.7 of 2 cores" in es["busy"].contended
    assert es["busy"].throughput_per_s is not None  # shown, marked, not ranked
    assert es["fast"].rank == 1 and es["fast"].n_runs == 3 and es["fast"].n_contended == 1
    assert es["fast"].samples_per_j == pytest.approx(100.0)  # the contended run's 10 samples/J left out
    assert es["fast"].throughput_per_s == pytest.approx(64 / 0.51e-3, rel=0.05)


def test_ranking_direction_comes_from_the_metric_table() -> None:
    from harness.core import metrics as M
    from harness.analysis.procurement import RANK_METRICS

    assert RANK_METRICS["throughput"][1] is M.get("throughput_per_s").higher_is_better is True
    assert RANK_METRICS["latency"][1] is M.get("latency_ms.p50").higher_is_better is False
    assert RANK_METRICS["perf_per_watt"][1] is M.get("energy.samples_per_j").higher_is_better is True
    es = procurement_entries(fleet(), rank_by="latency")
    assert [e.host for e in es] == ["fast", "mid", "slow"]  # lowest latency first


def test_procurement_section_marks_a_contended_option() -> None:
    from harness.reports.sections import procurement_section
    from tests.test_report import contention_record

    busy = machine_doc("busy", "fp-busy", 0.05, None)
    busy["cells"][0]["timing"]["contention"] = contention_record(1.7)
    text, _ = procurement_section(fleet() + [busy])
    row = next(r for r in text.split("<tr>") if "fp-busy</code>" in r and "mlp/" in r)
    assert 'class="badge contended"' in row and "never ranked" not in row
    assert "contention" in text  # the section says how contended runs are treated
