"""``harness compare``: statistics, verdicts and the CLI contract (exit 1 on regression).

Docs are schema-valid results built from seeded samples (tests/test_report.py helpers).
Run-to-run noise is modelled as it behaves on a shared machine: every *run* (process)
gets its own multiplicative offset, much larger than the sampling error inside a run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.compare import (
    CompareError,
    CompareSettings,
    compare_docs,
    holm,
    parse_threshold,
    settings_from_config,
)
from tests.conftest import run_cli
from tests.test_report import make_doc, ok_cell, skipped_cell


def run_doc(center: float, i: int, seed: int, workloads: tuple[str, ...] = ("mlp",), host: str = "h",
            fingerprint: str = "fp1", n: int = 200, spread: float = 0.02, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    cells = [ok_cell(w, seed=seed * 100 + k, center_ms=center * (1 + k), spread=spread, n=n,
                     extra_metrics=extra) for k, w in enumerate(workloads)]  # fmt: skip
    doc = make_doc(cells, host=host, run_id=f"2026112{i % 10}T000000Z-{host}-{seed:06x}")
    doc["environment"]["fingerprint"] = fingerprint
    return doc


def runs(n_runs: int, factor: float, seed: int, noise: float = 0.03, **kw: Any) -> list[dict[str, Any]]:
    """``n_runs`` separate runs; each run's level is factor * lognormal(run-to-run noise)."""
    rng = np.random.default_rng(seed)
    return [run_doc(factor * math.exp(noise * rng.standard_normal()), i, seed * 1000 + i, **kw) for i in range(n_runs)]


def test_parse_threshold() -> None:
    assert parse_threshold("5%") == pytest.approx(0.05)
    assert parse_threshold("7.5") == pytest.approx(0.075)
    assert parse_threshold(10) == pytest.approx(0.10)
    assert parse_threshold("auto") is None
    for bad in ("five", "-3", "nan%"):
        with pytest.raises(CompareError):
            parse_threshold(bad)


def test_holm_adjusts_and_keeps_order() -> None:
    adj = holm([0.01, 0.04, 0.03])
    assert adj == pytest.approx([0.03, 0.06, 0.06])
    assert holm([]) == []


def test_single_runs_within_noise_are_not_a_regression_though_raw_samples_differ() -> None:
    # a 4% process-to-process shift: Mann-Whitney on 400 samples calls it highly significant,
    # but with one run per side the run-to-run noise is unknown -> fallback threshold guards
    # (issue 11: by default one process per side is no evidence at all; the within-run test is opt-in)
    base = [run_doc(1.00, 0, 1, n=400)]
    cand = [run_doc(1.04, 1, 2, n=400)]
    res = compare_docs(base, cand, CompareSettings(stat="p50", within_run=True))
    cc = res.cells[0]
    assert cc.noise_model == "within-run only"
    assert cc.p_adjusted is not None and cc.p_adjusted < 1e-6  # "significant" on raw samples
    assert cc.verdict == "unchanged" and not res.regressions
    assert cc.threshold == pytest.approx(0.10) and "fallback" in cc.threshold_source
    assert any("run-to-run noise not measured" in n for n in cc.notes)
    # a big single-run slowdown is still caught
    res2 = compare_docs(base, [run_doc(1.30, 1, 3, n=400)], CompareSettings(stat="p50", within_run=True))
    assert res2.cells[0].verdict == "regression"


@pytest.mark.parametrize("stat", ["min", "p50"])
def test_repeated_runs_aa_is_quiet_and_slowdown_is_caught(stat: str) -> None:
    false_alarms = caught = 0
    noise = []
    for trial in range(10):
        base = runs(4, 1.0, seed=10 + trial)
        same = runs(4, 1.0, seed=50 + trial)
        slow = runs(4, 1.12, seed=90 + trial)
        aa = compare_docs(base, same, CompareSettings(stat=stat))
        ab = compare_docs(base, slow, CompareSettings(stat=stat))
        assert aa.cells[0].noise_model == "between-run"
        false_alarms += bool(aa.regressions)
        caught += bool(ab.regressions)
        c = ab.cells[0]
        assert c.ratio_ci[0] < c.ratio < c.ratio_ci[1]
        noise.append(c.run_noise)
    assert 0.015 < float(np.median(noise)) < 0.05  # estimates the 3% run-to-run noise, not the sampling error
    assert false_alarms <= 1
    assert caught >= 9


def test_history_baseline_against_single_candidate() -> None:
    base = runs(8, 1.0, seed=7)
    res = compare_docs(base, [run_doc(1.25, 9, 99)], CompareSettings())
    cc = res.cells[0]
    assert cc.noise_model == "between-run" and cc.n_baseline == 8 and cc.n_candidate == 1
    assert cc.verdict == "regression"
    assert compare_docs(base, [run_doc(1.0, 9, 98)]).cells[0].verdict == "unchanged"


def test_threshold_is_required_as_well_as_significance() -> None:
    base = runs(4, 1.0, seed=3, noise=0.002)
    cand = runs(4, 1.03, seed=4, noise=0.002)
    tight = compare_docs(base, cand, CompareSettings(threshold=0.01))
    loose = compare_docs(base, cand, CompareSettings(threshold=0.05))
    assert tight.cells[0].verdict == "regression"
    assert loose.cells[0].p_adjusted < 0.05 and loose.cells[0].verdict == "unchanged"
    auto = compare_docs(base, cand).cells[0]
    assert auto.threshold_source.startswith("auto (run-to-run")
    assert auto.threshold < 0.03 < auto.threshold * 10 and auto.mdc >= auto.threshold


def test_improvement_and_throughput_direction() -> None:
    base = runs(4, 1.0, seed=5)
    fast = runs(4, 0.8, seed=6)
    assert compare_docs(base, fast).cells[0].verdict == "improvement"
    thr = compare_docs(base, fast, CompareSettings(metric="throughput_per_s")).cells[0]
    assert thr.verdict == "improvement" and thr.ratio > 1.15  # throughput went up
    slow = compare_docs(base, runs(4, 1.3, seed=8), CompareSettings(metric="throughput_per_s")).cells[0]
    assert slow.verdict == "regression" and slow.ratio < 0.85 and slow.change > 0


def test_scalar_metrics_higher_is_better_and_untestable_single_values() -> None:
    mk = lambda acc, i, s: run_doc(1.0, i, s, extra={"quality": {"accuracy": acc}})  # noqa: E731
    one = compare_docs([mk(0.95, 0, 1)], [mk(0.80, 1, 2)], CompareSettings(metric="quality.accuracy")).cells[0]
    assert one.verdict == "inconclusive" and one.p_adjusted is None  # cannot be tested, never a regression
    base = [mk(0.95 + 0.002 * k, k, k) for k in range(4)]
    worse = [mk(0.80 + 0.002 * k, k, 10 + k) for k in range(4)]
    cc = compare_docs(base, worse, CompareSettings(metric="quality.accuracy")).cells[0]
    assert cc.verdict == "regression" and cc.change > 0.1  # accuracy dropped: worse


def test_cells_on_one_side_and_failed_cells_are_listed_not_fatal() -> None:
    base = [make_doc([ok_cell("mlp", seed=1), ok_cell("cnn", seed=2)])]
    cand = [make_doc([ok_cell("mlp", seed=3), ok_cell("transformer", seed=4), skipped_cell("cnn")])]
    cand[0]["cells"][2]["spec"]["device"] = "cpu"  # same cell id as the baseline's cnn, skipped now
    cand[0]["cells"][2]["id"] = None
    verdicts = {c.key.split("/")[0]: c.verdict for c in compare_docs(base, cand).cells}
    assert verdicts["transformer"] == "only_candidate"
    assert verdicts["cnn"] == "not_comparable"
    assert verdicts["mlp"] in ("unchanged", "inconclusive")


def test_fingerprint_and_thread_warnings() -> None:
    a = runs(2, 1.0, seed=1)
    b = runs(2, 1.0, seed=2, fingerprint="fp-other")
    b[0]["cells"][0]["runtime"]["threads"] = 1
    res = compare_docs(a, b)
    assert any("different environment fingerprints" in w for w in res.warnings)
    assert any("thread counts differ" in n for n in res.cells[0].notes)


def test_config_thresholds_per_workload_and_cell() -> None:
    s = settings_from_config({"threshold": "5%", "workloads": {"cnn": "20%", "mlp": "auto"},
                              "cells": {"x/y": 1}, "stat": "p10"}, CompareSettings())  # fmt: skip
    assert s.threshold == pytest.approx(0.05) and s.stat == "p10"
    assert s.threshold_for("a", "cnn") == (pytest.approx(0.20), "config (workload)")
    assert s.threshold_for("a", "mlp") == (None, "config (workload)")
    assert s.threshold_for("x/y", "cnn")[0] == pytest.approx(0.01)
    with pytest.raises(CompareError, match="unknown key"):
        settings_from_config({"treshold": 5}, CompareSettings())
    with pytest.raises(CompareError, match="unknown stat"):
        settings_from_config({"stat": "p99"}, CompareSettings())


def _write(dirpath: Path, docs: list[dict[str, Any]]) -> Path:
    dirpath.mkdir(parents=True, exist_ok=True)
    for d in docs:
        (dirpath / f"{d['run_id']}.json").write_text(json.dumps(d))
    return dirpath


def test_cli_exit_codes_and_formats(tmp_path: Path) -> None:
    base = _write(tmp_path / "base", runs(3, 1.0, seed=1, workloads=("mlp", "cnn")))
    same = _write(tmp_path / "same", runs(3, 1.0, seed=2, workloads=("mlp", "cnn")))
    slow = _write(tmp_path / "slow", runs(3, 1.4, seed=3, workloads=("mlp", "cnn")))
    ok = run_cli(["compare", str(base), str(same)])
    assert ok.returncode == 0, ok.stderr
    assert "no regression" in ok.stdout
    bad = run_cli(["compare", str(base), str(slow), "--format", "json"])
    assert bad.returncode == 1, bad.stderr
    doc = json.loads(bad.stdout)
    assert doc["regression"] is True and {c["verdict"] for c in doc["cells"]} == {"regression"}
    md = run_cli(["compare", str(base), str(slow), "--format", "markdown"])
    assert md.returncode == 1 and "**regression**" in md.stdout and md.stdout.count("\n|") >= 3
    cfg = tmp_path / "t.yaml"
    cfg.write_text("workloads:\n  mlp: 80%\n  cnn: 80%\n")
    assert run_cli(["compare", str(base), str(slow), "--config", str(cfg)]).returncode == 0
    single = next(iter(sorted(base.glob("*.json"))))
    assert run_cli(["compare", str(single), str(base)]).returncode == 0  # file vs directory


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    base = _write(tmp_path / "b", runs(1, 1.0, seed=1))
    for args, msg in (
        (["compare", str(base), str(tmp_path / "missing")], "no such result file"),
        (["compare", str(base), str(base), "--threshold", "lots"], "threshold must be"),
        (["compare", str(base), str(tmp_path / "empty")], "no such"),
    ):
        proc = run_cli(args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert msg in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "cfg.yaml").write_text("threshold: [1, 2\n")
    proc = run_cli(["compare", str(base), str(base), "--config", str(tmp_path / "cfg.yaml")])
    assert proc.returncode == 2 and "not valid YAML" in proc.stderr


def test_upper_trim_is_yuen_with_one_sided_trimming() -> None:
    from harness.compare import upper_trim

    y = np.array([3.0, 1.0, 2.0, 10.0])
    mean, ss, n, h = upper_trim(y, 0.25)
    assert (n, h) == (4, 3) and mean == pytest.approx(2.0)
    w = np.array([1.0, 2.0, 3.0, 3.0])  # the slowest value winsorized to the largest kept one
    assert ss == pytest.approx(float(((w - w.mean()) ** 2).sum()))
    assert upper_trim(np.array([1.0, 2.0, 3.0]), 0.25)[3] == 3  # fewer than 4 runs: nothing trimmed


def level_runs(levels: list[float], tag: str) -> list[dict[str, Any]]:
    return [run_doc(lv, i, i, spread=0.0, n=5) for i, lv in enumerate(levels)]


def test_one_contaminated_run_per_side_neither_alarms_nor_hides_a_slowdown() -> None:
    # interference only adds time: one run per side hit by a noisy neighbour (+45%)
    base = level_runs([1.00, 1.006, 0.995, 1.45], "b")
    same = level_runs([1.003, 0.997, 1.50, 1.002], "s")
    slow = level_runs([1.10, 1.106, 1.095, 1.55], "c")
    aa = compare_docs(base, same).cells[0]
    ab = compare_docs(base, slow).cells[0]
    assert aa.verdict == "unchanged", aa
    assert ab.verdict == "regression" and ab.change == pytest.approx(0.10, abs=0.01), ab
    assert ab.test.startswith("trimmed") and any("trimmed" in n for n in ab.notes)
    assert ab.run_noise < 0.02  # the winsorized noise, not inflated by the contaminated runs


def test_fail_on_missing_catches_cells_the_candidate_no_longer_measures(tmp_path: Path) -> None:
    base_docs = runs(2, 1.0, seed=11, workloads=("mlp", "cnn", "transformer"))
    cand_docs = runs(2, 1.0, seed=12, workloads=("mlp", "cnn", "transformer"))
    for d in cand_docs:  # cnn now skipped (e.g. the runner lost its GPU), transformer gone
        cnn = d["cells"][1]
        d["cells"][1] = {**cnn, "status": "skipped", "reason": "no CUDA device visible", "metrics": {},
                         "samples_ms": []}
        del d["cells"][2]
    res = compare_docs(base_docs, cand_docs)
    assert sorted(c.key.split("/")[0] for c in res.lost) == ["cnn", "transformer"]
    assert not res.regressions
    base, cand = _write(tmp_path / "b", base_docs), _write(tmp_path / "c", cand_docs)
    plain = run_cli(["compare", str(base), str(cand)])
    assert plain.returncode == 0 and "warning: 2 cell(s) measured in the baseline" in plain.stderr
    strict = run_cli(["compare", str(base), str(cand), "--fail-on-missing"])
    assert strict.returncode == 1 and "error: 2 cell(s)" in strict.stderr
    # a cell that only the candidate has is not "lost"
    assert run_cli(["compare", str(cand), str(base), "--fail-on-missing"]).returncode == 0


def test_a_cell_repeated_inside_one_run_counts_once() -> None:
    base = runs(1, 1.0, seed=21)
    cand = runs(1, 1.0, seed=22)
    cand[0]["cells"].append(dict(cand[0]["cells"][0]))  # the same cell twice in one run
    (c,) = compare_docs(base, cand).cells
    assert c.n_candidate == 1
