"""Change-point detection over many runs: steps, slow drift, quiet noise, and the run/commit
where a change began. Series are seeded lognormal noise around known levels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.analysis.history import build_history, detect_changes
from tests.test_report import make_doc, ok_cell


def noisy(levels: list[float], sd: float = 0.02, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return [lv * math.exp(sd * rng.standard_normal()) for lv in levels]


@pytest.mark.parametrize("seed", range(8))
def test_pure_noise_has_no_change(seed: int) -> None:
    assert detect_changes(noisy([1.0] * 40, seed=seed)) == []


@pytest.mark.parametrize("seed", range(5))
def test_step_is_found_at_the_right_run(seed: int) -> None:
    vals = noisy([1.0] * 20 + [1.15] * 15, seed=seed)
    ch = detect_changes(vals)
    steps = [c for c in ch if c["kind"] == "step"]
    assert len(steps) == 1, ch
    assert abs(steps[0]["index"] - 20) <= 1
    assert steps[0]["change"] == pytest.approx(0.15, abs=0.04)


def test_two_steps_up_then_back() -> None:
    ch = detect_changes(noisy([1.0] * 12 + [1.3] * 12 + [1.0] * 12, seed=3))
    assert [c["kind"] for c in ch] == ["step", "step"]
    assert [c["index"] for c in ch] == [12, 24]
    assert ch[0]["change"] > 0.2 and ch[1]["change"] < -0.15


@pytest.mark.parametrize("seed", range(4))
def test_slow_drift_is_a_drift_with_its_onset(seed: int) -> None:
    levels = [1.0] * 15 + [1.0 + 0.02 * i for i in range(1, 21)]  # +2% per run from run 15
    ch = detect_changes(noisy(levels, sd=0.01, seed=seed))
    assert [c["kind"] for c in ch] == ["drift"], ch
    assert abs(ch[0]["index"] - 15) <= 3
    assert ch[0]["change"] > 0.25


def test_small_changes_below_min_change_are_ignored() -> None:
    vals = noisy([1.0] * 20 + [1.02] * 20, sd=0.001, seed=1)
    assert detect_changes(vals, min_change=0.03) == []
    assert detect_changes(vals, min_change=0.01)[0]["index"] == 20


def test_short_or_bad_series() -> None:
    assert detect_changes([1.0, 2.0, 3.0]) == []
    assert detect_changes([1.0] * 5 + [float("nan")] + [1.0] * 5) == []


def test_build_history_marks_run_and_commit_per_machine() -> None:
    rng = np.random.default_rng(0)
    docs = []
    for i in range(16):
        level = 1.0 if i < 9 else 1.25
        cell = ok_cell("mlp", seed=i, center_ms=level * math.exp(0.01 * rng.standard_normal()), n=60)
        d = make_doc([cell], run_id=f"r{i:02d}", created=f"2026-11-{i + 1:02d}T00:00:00Z")
        d["harness"]["git_commit"] = f"commit{i:02d}"
        docs.append(d)
    other = make_doc([ok_cell("mlp", seed=99, center_ms=5.0)], host="other", run_id="x", created="2026-11-05T00:00:00Z")
    other["environment"]["fingerprint"] = "other-machine"
    series = build_history(list(reversed(docs)) + [other])  # order of input does not matter
    assert len(series) == 1  # the single run on the other machine is not a trend
    s = series[0]
    assert [p.run_id for p in s.points] == [f"r{i:02d}" for i in range(16)]
    assert len(s.changes) == 1
    c = s.changes[0]
    assert (c.kind, c.run_id, c.commit, c.previous_commit) == ("step", "r09", "commit09", "commit08")
    assert c.change == pytest.approx(0.25, abs=0.05)


def _series_docs(levels: list[float], contended: set[int] = frozenset(), metric_scale: float = 1.0) -> list[dict]:
    """One run per level (ms per step); runs in ``contended`` were measured under contention."""
    docs = []
    for i, level in enumerate(levels):
        cell = ok_cell("mlp", seed=i, center_ms=level, n=60, contended_cores=1.7 if i in contended else None)
        d = make_doc([cell], run_id=f"r{i:02d}", created=f"2026-11-{i + 1:02d}T00:00:00Z")
        d["harness"]["git_commit"] = f"commit{i:02d}"
        docs.append(d)
    return docs


def test_history_direction_comes_from_the_metric_table() -> None:
    rng = np.random.default_rng(1)
    # the code got 20% faster at run 9: latency down, sustained throughput up
    levels = [(1.0 if i < 9 else 0.8) * math.exp(0.005 * rng.standard_normal()) for i in range(16)]
    docs = _series_docs(levels)
    lat = build_history(docs)[0]
    thr = build_history(docs, metric="throughput_per_s")[0]
    assert (lat.metric, lat.unit, lat.direction) == ("latency_ms", "ms", "lower")
    assert (thr.metric, thr.unit, thr.direction) == ("throughput_per_s", "samples/s", "higher")
    assert [c.run_id for c in lat.changes] == ["r09"] and [c.run_id for c in thr.changes] == ["r09"]
    assert lat.changes[0].change < 0 and lat.changes[0].worse is False  # latency down: better
    assert thr.changes[0].change > 0 and thr.changes[0].worse is False  # throughput up: better, not "slower"
    slower = build_history(_series_docs([1.0 if i < 9 else 1.25 for i in range(16)]), metric="throughput_per_s")[0]
    assert slower.changes[0].change < 0 and slower.changes[0].worse is True
    with pytest.raises(KeyError, match="undeclared metric"):
        build_history(docs, metric="vibes_per_s")  # an undeclared metric is refused, not guessed


def test_history_section_labels_a_higher_is_better_change_as_better() -> None:
    from harness.reports.sections import history_section

    docs = _series_docs([1.0 if i < 9 else 0.8 for i in range(16)])
    text, figs = history_section(docs, build_history(docs, metric="throughput_per_s"))
    assert "samples/s" in text and "change (+ is faster)" in text
    assert '<span class="badge st-ok">better</span>' in text and ">worse<" not in text
    assert "samples/s" in figs[0][1]["layout"]["yaxis"]["title"]["text"]


def test_contended_runs_are_marked_and_never_make_a_change() -> None:
    # three contended runs 60% slower in the middle of a flat series
    levels = [1.0 * (1.6 if 8 <= i < 11 else 1.0) for i in range(18)]
    docs = _series_docs(levels, contended={8, 9, 10})
    s = build_history(docs)[0]
    assert [p.run_id for p in s.points if p.contended] == ["r08", "r09", "r10"]
    assert "other processes used 1.7 of 2 cores" in s.points[8].contended
    assert s.changes == []
    # the same values without the contention flag are two steps
    assert len(build_history(_series_docs(levels))[0].changes) == 2


def test_a_contended_process_of_a_repeated_run_is_left_out_of_its_value() -> None:
    from harness.analysis.history import run_value
    from tests.test_report import repeated_cell

    cell = repeated_cell([1.0, 3.0, 1.02], contended={1: 1.7})
    value, contended, processes = run_value(cell)
    assert contended is None and processes == 2  # the two clean processes
    mins = [min(r["samples_ms"]) for k, r in enumerate(cell["repeats"]) if k != 1]
    assert value == pytest.approx(float(np.median(mins)))
    all_bad = repeated_cell([2.0, 3.0], contended={0: 1.5, 1: 1.7})
    value, contended, processes = run_value(all_bad)
    assert contended and contended.startswith("2 of 2 processes: process 1: other processes used 1.5") and processes == 2
