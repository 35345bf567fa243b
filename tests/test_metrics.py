"""The declared metric table: directions never guessed from names, units, lookups."""

from __future__ import annotations

import pytest

from harness.core import metrics as M


def test_directions_that_name_guessing_got_wrong() -> None:
    # "per_s" in the name made these higher-is-better, and "scaling" lower-is-better
    for name in ("energy.energy_per_sample_j", "energy.energy_per_sample_net_j", "energy.energy_per_step_j"):
        assert M.direction(name) == "lower" and not M.higher_is_better(name)
    for name in ("distributed.speedup_vs_1", "distributed.scaling_efficiency", "throughput_per_s", "mfu"):
        assert M.direction(name) == "higher"
    assert M.direction("params") is None and M.direction("energy.avg_power_w") is None


def test_lookup_by_unambiguous_last_component_and_refusal() -> None:
    assert M.lookup("energy_per_sample_j").name == "energy.energy_per_sample_j"
    assert M.lookup("latency_msx") is None
    with pytest.raises(M.UnknownMetric, match="gateable metrics: latency_ms"):
        M.get("latency_msx")


def test_every_gateable_metric_has_a_direction_and_ratios_have_no_unit() -> None:
    assert all(M.TABLE[n].direction for n in M.gateable_names())
    assert M.unit("mfu") == "" and M.unit("flops_analytic_ratio") == ""
    assert M.unit("achieved_flops_per_s") == "FLOP/s" and M.unit("energy.energy_j") == "J"
    with pytest.raises(ValueError):
        M.Metric("x", "", None, "no direction", gateable=True)


def test_undeclared_numbers_are_found() -> None:
    cells = [{"status": "ok", "metrics": {"latency_ms": {"p50": 1.0}, "brand_new_ms": 3.0,
                                          "quality": {"quality_config": {"hidden": 32}}}}]
    assert M.undeclared(cells) == ["brand_new_ms"]
