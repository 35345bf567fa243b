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

from harness.analysis.compare import (
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
    from harness.analysis.compare import upper_trim

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


# ------------------------------------------------------------------ issue 11 §1 / issue 13: the gate


def metric_runs(values: list[float], path: str, seed: int) -> list[dict[str, Any]]:
    """One run per value, the cell carrying ``path`` (dotted, under metrics) = value."""
    docs = []
    for i, v in enumerate(values):
        head, _, tail = path.rpartition(".")
        extra: dict[str, Any] = {tail: v}
        if head:
            extra = {head: extra}
        docs.append(run_doc(1.0, i, seed * 100 + i, extra=extra))
    return docs


def test_energy_per_sample_drop_is_an_improvement_not_a_regression() -> None:
    # "per_s" in energy_per_sample_j made a 20% energy saving a regression (exit 1)
    base = metric_runs([1.00, 1.01, 0.99, 1.005], "energy.energy_per_sample_j", 1)
    cand = metric_runs([0.80, 0.81, 0.79, 0.805], "energy.energy_per_sample_j", 2)
    for name in ("energy.energy_per_sample_j", "energy_per_sample_j"):
        res = compare_docs(base, cand, CompareSettings(metric=name))
        (cc,) = res.cells
        assert res.settings.metric == "energy.energy_per_sample_j"
        assert cc.verdict == "improvement" and cc.change < 0 and cc.ratio == pytest.approx(0.8, abs=0.01), cc
        assert not res.regressions


@pytest.mark.parametrize("metric", ["distributed.scaling_efficiency", "distributed.speedup_vs_1"])
def test_data_parallel_scaling_higher_is_better(metric: str) -> None:
    base = metric_runs([0.90, 0.91, 0.89, 0.905], metric, 3)
    worse = metric_runs([0.70, 0.71, 0.69, 0.705], metric, 4)
    better = metric_runs([0.99, 1.0, 0.98, 0.995], metric, 5)
    assert compare_docs(base, worse, CompareSettings(metric=metric)).cells[0].verdict == "regression"
    assert compare_docs(base, better, CompareSettings(metric=metric)).cells[0].verdict == "improvement"


def test_undeclared_or_ungateable_metric_is_refused() -> None:
    from harness.core.metrics import gateable_names

    with pytest.raises(CompareError, match="unknown metric 'latency_msx'") as e:
        CompareSettings(metric="latency_msx")
    assert all(n in str(e.value) for n in gateable_names())  # lists what may be gated
    with pytest.raises(CompareError, match="cannot be gated"):
        CompareSettings(metric="params")  # declared, but neither better nor worse


def test_cli_misspelt_absent_or_ungateable_metric_exits_2(tmp_path: Path) -> None:
    base = _write(tmp_path / "b", runs(2, 1.0, seed=31))
    cand = _write(tmp_path / "c", runs(2, 1.0, seed=32))
    for metric, msg in (("latency_msx", "unknown metric 'latency_msx'"), ("params", "cannot be gated"),
                        ("energy.energy_per_sample_j", "no cell on either side has metric")):  # fmt: skip
        proc = run_cli(["compare", str(base), str(cand), "--metric", metric])
        assert proc.returncode == 2, (metric, proc.stdout, proc.stderr)
        assert msg in proc.stderr and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    absent = run_cli(["compare", str(base), str(cand), "--metric", "energy_per_sample_j"])
    assert "metrics present: " in absent.stderr and "latency_ms" in absent.stderr  # what the cells do have


def _level_doc(level: float, i: int, tag: str) -> dict[str, Any]:
    """A bare single-cell result (one process at ``level`` ms): cheap enough for simulations."""
    return {"run_id": f"{tag}{i}", "environment": {"fingerprint": "fp"},
            "cells": [{"spec": {"workload": "mlp", "backend": "torch", "device": "cpu", "variant": "fp32",
                                "mode": "inference", "batch_size": 1, "size": "tiny"}, "status": "ok",
                       "samples_ms": [level, level * 1.001, level * 1.002], "metrics": {}}]}  # fmt: skip


@pytest.mark.parametrize("nb,nc", [(8, 3), (20, 1)])
def test_unbalanced_sides_have_no_false_alarm_bias(nb: int, nc: int) -> None:
    # same distribution on both sides (normal run-to-run noise, 3%): at most alpha false alarms,
    # and no lean towards "slower" (trimming only the longer side made 8v3 10.8% and 20v1 12.0%)
    rng = np.random.default_rng(11 * nb + nc)
    reps, worse, better = 300, 0, 0
    for r in range(reps):
        lv = 1.0 + 0.03 * rng.standard_normal(nb + nc)
        base = [_level_doc(float(x), i, f"b{r}-") for i, x in enumerate(lv[:nb])]
        cand = [_level_doc(float(x), i, f"c{r}-") for i, x in enumerate(lv[nb:])]
        cc = compare_docs(base, cand).cells[0]
        worse += cc.verdict == "regression"
        better += cc.verdict == "improvement"
    assert worse / reps <= 0.075, (worse, better)  # nominal 5%; Monte-Carlo se 1.3%
    assert abs(worse - better) <= 12, (worse, better)


def test_min_detectable_change_accounts_for_holm() -> None:
    # the same cell, same noise (5 v 5 processes, 8 df), alone or among 49 quieter cells:
    # one regressed cell among 50 needs p < alpha/50, so it must be ~2x larger to be caught
    pattern_b = np.array([-1.3, -0.5, 0.1, 0.6, 1.1])
    pattern_c = np.array([-1.0, -0.7, 0.2, 0.4, 1.2])

    def side(pattern: np.ndarray, cells: int, tag: str) -> list[dict[str, Any]]:
        docs = []
        for i, z in enumerate(pattern):
            doc = run_doc(1.0, i, i, workloads=tuple(f"w{k}" for k in range(cells)), n=5)
            for k, cell in enumerate(doc["cells"]):
                sd = 0.03 if k == 0 else 0.015
                cell["metrics"]["peak_host_mem_bytes"] = int(4e8 * math.exp(sd * z * (1 + 0.01 * k)))
            doc["run_id"] = f"{tag}{i}"
            docs.append(doc)
        return docs

    st = CompareSettings(metric="peak_host_mem_bytes")
    one = compare_docs(side(pattern_b, 1, "b"), side(pattern_c, 1, "c"), st).cells[0]
    many = compare_docs(side(pattern_b, 50, "b"), side(pattern_c, 50, "c"), st)
    fifty = next(c for c in many.cells if c.workload == "w0")
    assert 1.8 < fifty.mdc / one.mdc < 2.3, (one.mdc, fifty.mdc)
    assert fifty.run_noise == pytest.approx(one.run_noise)  # the same noise estimate (not moderated down)
    assert many.tested == 50 and one.df == fifty.df == 8
    # and the exact t answer (noncentral t) at the cell's own noise, not (t_a + t_power) * se at alpha
    from scipy.special import nctdtrinc, stdtrit

    se = math.log(one.ratio_ci[1] / one.ratio_ci[0]) / (2 * float(stdtrit(8, 0.975)))
    assert math.log1p(one.min_detectable_change) >= nctdtrinc(8, 0.2, stdtrit(8, 0.95)) * se * 0.999
    assert math.log1p(fifty.min_detectable_change) >= nctdtrinc(8, 0.2, stdtrit(8, 1 - 0.05 / 50)) * se * 0.999
    assert "min_detectable_change" in many.to_dict()["cells"][0]


def test_yuen_standard_error_matches_the_documented_formula() -> None:
    # docs/compare.md: se^2 = (SSw_b + SSw_c)/(n_b + n_c - 2) * ((n_b-1)/(h_b(h_b-1)) + (n_c-1)/(h_c(h_c-1)))
    import harness.analysis.compare as HC
    from harness.analysis.compare import upper_trim

    lb, lc = [1.00, 1.02, 0.99, 1.30], [1.05, 1.04, 1.07, 1.50]
    base = [_level_doc(x, i, "b") for i, x in enumerate(lb)]
    cand = [_level_doc(x, i, "c") for i, x in enumerate(lc)]
    cc = compare_docs(base, cand).cells[0]
    _, ssb, nb, hb = upper_trim(np.log(lb), 0.25)  # 4 processes per side: the slowest one trimmed
    _, ssc, nc, hc = upper_trim(np.log(lc), 0.25)
    se_doc = math.sqrt((ssb + ssc) / (nb + nc - 2) * ((nb - 1) / (hb * (hb - 1)) + (nc - 1) / (hc * (hc - 1))))
    from scipy.special import stdtrit

    df = getattr(HC, "YUEN_DF_FACTOR", 1.0) * (hb + hc - 2)  # documented too (why: see the docs)
    se = math.log(cc.ratio_ci[1] / cc.ratio_ci[0]) / (2 * float(stdtrit(df, 0.975)))
    assert se == pytest.approx(se_doc, rel=1e-6)
    assert cc.df == pytest.approx(df)
    doc = (Path(__file__).resolve().parents[1] / "docs" / "compare.md").read_text()
    assert "(SS_w,b + SS_w,c) / (n_b + n_c − 2) · ((n_b − 1)/(h_b(h_b − 1)) + (n_c − 1)/(h_c(h_c − 1)))" in doc


def test_one_process_per_side_is_inconclusive_unless_within_run(tmp_path: Path) -> None:
    base = _write(tmp_path / "b", [run_doc(1.00, 0, 41, n=300)])
    cand = _write(tmp_path / "c", [run_doc(1.30, 1, 42, n=300)])  # +30%: "p < 0.0001" from within-run samples
    plain = run_cli(["compare", str(base), str(cand), "--format", "json"])
    assert plain.returncode == 0, plain.stderr
    (cell,) = json.loads(plain.stdout)["cells"]
    assert cell["verdict"] == "inconclusive" and cell["verdict_text"] == "inconclusive: run-to-run noise unknown"
    assert cell["p_adjusted"] is None and cell["min_detectable_change"] is None
    assert "inconclusive: run-to-run noise unknown" in run_cli(["compare", str(base), str(cand)]).stdout
    within = run_cli(["compare", str(base), str(cand), "--within-run", "--format", "json"])
    assert within.returncode == 1, within.stderr
    (cell,) = json.loads(within.stdout)["cells"]
    assert cell["verdict"] == "regression" and cell["noise_model"] == "within-run only"
    # a history of runs against one candidate run is valid: the history measures the noise
    hist = compare_docs(runs(6, 1.0, seed=43), [run_doc(1.30, 1, 42)]).cells[0]
    assert hist.verdict == "regression" and hist.noise_model == "between-run"


def _contend(cell: dict[str, Any], detected: bool = True) -> None:
    cell.setdefault("timing", {})["contention"] = {"detected": detected, "evidence": {"loadavg_1m": 6.0}}


def test_contended_cells_are_inconclusive_unless_allowed(tmp_path: Path) -> None:
    base_docs = runs(4, 1.0, seed=51)
    slow_docs = runs(4, 1.4, seed=52)
    for d in base_docs:
        _contend(d["cells"][0], False)
    _contend(slow_docs[2]["cells"][0])  # one candidate process was measured on a busy machine
    res = compare_docs(base_docs, slow_docs)
    (cc,) = res.cells
    assert cc.verdict == "inconclusive" and cc.verdict_text == "inconclusive: contended" and cc.contended
    assert not res.regressions and res.tested == 0
    assert compare_docs(base_docs, slow_docs, CompareSettings(allow_contended=True)).cells[0].verdict == "regression"
    base, slow = _write(tmp_path / "b", base_docs), _write(tmp_path / "c", slow_docs)
    proc = run_cli(["compare", str(base), str(slow)])
    assert proc.returncode == 0 and "inconclusive: contended" in proc.stdout, proc.stderr
    assert run_cli(["compare", str(base), str(slow), "--allow-contended"]).returncode == 1
    # a contended repeat (harness run --repeats) counts the same
    rep = repeats_doc([1.4, 1.41, 1.39, 1.42], "r", seed=53)
    _contend(rep["cells"][0]["repeats"][1])
    assert compare_docs(base_docs, [rep]).cells[0].verdict_text == "inconclusive: contended"


def repeats_doc(levels: list[float], tag: str, seed: int, failed: int = 0) -> dict[str, Any]:
    """One result file whose cell was measured in len(levels) worker processes (--repeats)."""
    rng = np.random.default_rng(seed)
    doc = run_doc(1.0, 0, seed)
    doc["run_id"] = f"20261130T000000Z-{tag}"
    cell = doc["cells"][0]
    reps = []
    for i, lv in enumerate(levels):
        xs = (lv * (1.0 + 0.02 * np.abs(rng.standard_normal(50)))).tolist()
        reps.append({"index": i, "status": "ok", "samples_ms": xs, "reason": None,
                     "timing": {"contention": {"detected": False, "evidence": {}}},
                     "metrics": {"latency_ms": {"min": min(xs)}, "throughput_per_s": 64 / (min(xs) / 1000)}})  # fmt: skip
    for i in range(failed):
        reps.append({"index": len(levels) + i, "status": "failed", "samples_ms": [], "metrics": {},
                     "reason": "RuntimeError: worker died"})  # fmt: skip
    cell["repeats"] = reps
    cell["samples_ms"] = [x for r in reps for x in r["samples_ms"]]  # pooled, as the runner stores them
    return doc


def test_repeats_are_observations() -> None:
    base = repeats_doc([1.00, 1.03, 0.98, 1.01], "base", seed=61, failed=1)
    same = repeats_doc([1.01, 0.99, 1.02, 1.00], "same", seed=62)
    slow = repeats_doc([1.25, 1.27, 1.22, 1.26], "slow", seed=63)
    aa = compare_docs([base], [same]).cells[0]
    assert (aa.n_baseline, aa.n_candidate) == (4, 4) and aa.noise_model == "between-run"
    assert aa.verdict == "unchanged"
    assert any("1 baseline process(es) without latency_ms: failed" in n for n in aa.notes)
    ab = compare_docs([base], [slow]).cells[0]
    assert ab.verdict == "regression" and ab.change == pytest.approx(0.25, abs=0.03)
    assert 0.005 < ab.run_noise < 0.05  # the processes' spread, not the pooled samples'
    # a scalar metric comes from each process's own metrics
    thr = compare_docs([base], [slow], CompareSettings(metric="throughput_per_s")).cells[0]
    assert thr.n_baseline == 4 and thr.verdict == "regression" and thr.ratio < 0.85


def test_one_contended_baseline_night_does_not_switch_the_gate_off() -> None:
    # a history of 6 nights, one measured on a busy machine (much slower): it is left out,
    # the clean nights still gate a real 40% slowdown
    history = runs(6, 1.0, seed=61)
    for d in history:
        _contend(d["cells"][0], False)
    history[3]["cells"][0]["samples_ms"] = [x * 3 for x in history[3]["cells"][0]["samples_ms"]]
    _contend(history[3]["cells"][0])
    cand = runs(3, 1.4, seed=62)
    for d in cand:
        _contend(d["cells"][0], False)
    (cc,) = compare_docs(history, cand).cells
    assert cc.verdict == "regression" and cc.n_baseline == 5
    assert any("contended baseline process" in n for n in cc.notes)
    # a baseline with only contended processes gives no verdict
    for d in history:
        _contend(d["cells"][0])
    assert compare_docs(history, cand).cells[0].verdict_text == "inconclusive: contended"


def test_a_candidate_cell_with_a_failed_process_is_lost() -> None:
    base = [repeats_doc([1.0, 1.01, 0.99], "b", seed=71)]
    cand = repeats_doc([1.0, 1.02, 0.98], "c", seed=72, failed=1)
    cand["cells"][0]["status"] = "failed"
    cand["cells"][0]["reason"] = "process 4 of 4 failed: RuntimeError: worker died"
    res = compare_docs(base, [cand])
    (cc,) = res.cells
    assert cc.candidate_failed and cc in res.lost  # --fail-on-missing: exit 1
    assert any("failed" in n for n in cc.notes)


def test_cell_level_metric_is_used_when_no_process_carries_it() -> None:
    # scaling efficiency is computed across cells by the runner: it exists on the cell only
    docs = []
    for tag, eff in (("b", 0.9), ("c", 0.6)):
        d = repeats_doc([1.0, 1.0, 1.0], tag, seed=81 if tag == "b" else 82)
        d["cells"][0]["metrics"]["distributed"] = {"scaling_efficiency": eff}
        docs.append(d)
    (cc,) = compare_docs([docs[0]], [docs[1]], CompareSettings(metric="distributed.scaling_efficiency")).cells
    assert cc.n_baseline == 1 and cc.n_candidate == 1 and cc.verdict != "not_comparable"
    assert cc.ratio == pytest.approx(0.6 / 0.9)


# ----------------------------------------------------------------------------- bounded cost (issue 13)

# what the code before the cost caps (commit 246e206) gave for run_doc(1.00, 0, 1, n=400) vs
# run_doc(1.04, 1, 2, n=400) with --within-run: ordinary cells must not change at all
_OLD_WITHIN = {
    "min": {"ratio": 1.0400299466738254, "ratio_ci": [1.0233372281421573, 1.0531092560725221],
            "p_worse": 2.4921868061766143e-88, "min_detectable_change": 0.1059843011159378},
    "p10": {"ratio": 1.0390860715819397, "ratio_ci": [1.0328824050043603, 1.0424427190677314],
            "p_worse": 2.4921868061766143e-88, "min_detectable_change": 0.10221590926788665},
    "p50": {"ratio": 1.036782698744521, "ratio_ci": [1.0332430016906877, 1.0413953223468715],
            "p_worse": 2.4921868061766143e-88, "min_detectable_change": 0.10187108121836179},
    "mean": {"ratio": 1.0383262138287963, "ratio_ci": [1.0356597815408939, 1.041110897155096],
             "p_worse": 2.4921868061766143e-88, "min_detectable_change": 0.101312117917972},
}  # fmt: skip


@pytest.mark.parametrize("stat", sorted(_OLD_WITHIN))
def test_ordinary_within_run_numbers_are_exactly_as_before_the_caps(stat: str) -> None:
    res = compare_docs([run_doc(1.00, 0, 1, n=400)], [run_doc(1.04, 1, 2, n=400)],
                       CompareSettings(stat=stat, within_run=True))  # fmt: skip
    cc = res.to_dict()["cells"][0]
    assert {k: cc[k] for k in _OLD_WITHIN[stat]} == _OLD_WITHIN[stat]  # exact
    assert cc.get("subsample") is None and not any("subsample" in n for n in cc["notes"])


def _two_million(monkeypatch: pytest.MonkeyPatch, stat: str) -> tuple[Any, list[int], np.ndarray, np.ndarray]:
    """A --within-run comparison of one cell with 2,000,000 samples per side; returns it and the
    sizes of every array the rank test and the bootstrap were given."""
    import scipy.stats

    import harness.analysis.compare as hc

    rng = np.random.default_rng(11)
    b = rng.lognormal(0.0, 0.05, 2_000_000)
    c = 1.02 * rng.lognormal(0.0, 0.05, 2_000_000)
    # each side's true minimum sits between the positions an evenly strided subsample keeps
    b[1], c[1] = 0.5, 0.65
    sizes: list[int] = []
    mwu = scipy.stats.mannwhitneyu
    monkeypatch.setattr(scipy.stats, "mannwhitneyu", lambda x, y, **k: (sizes.extend([x.size, y.size]), mwu(x, y, **k))[1])
    boot = getattr(hc, "_bootstrap_stats", None)
    monkeypatch.setattr(hc, "_bootstrap_stats", lambda x, y, *a: (sizes.extend([x.size, y.size]), boot(x, y, *a))[1],
                        raising=False)  # fmt: skip
    obs = lambda s, run: {"k": [hc.Observation(run_id=run, value=hc.location(s, stat), samples=s, status="ok",  # noqa: E731
                                               workload="mlp", contended=False)]}  # fmt: skip
    res = hc.compare_observations(obs(b, "base"), obs(c, "cand"), CompareSettings(stat=stat, within_run=True))
    return res, sizes, b, c


def test_within_run_on_two_million_samples_processes_a_bounded_subsample_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    res, sizes, b, c = _two_million(monkeypatch, "min")
    cc = res.cells[0]
    assert sizes and max(sizes) == 20_000  # never the 2,000,000 raw samples (WITHIN_RUN_MAX_SAMPLES)
    # the estimate is the statistic of ALL samples (a thinned minimum would miss 0.5 and 0.65)
    assert cc.ratio == pytest.approx(0.65 / 0.5, rel=1e-12) and cc.change == pytest.approx(0.3, rel=1e-9)
    assert cc.ratio_ci[0] <= cc.ratio <= cc.ratio_ci[1]
    doc = res.to_dict()["cells"][0]
    assert doc["subsample"]["baseline"] == [20_000, 2_000_000] and doc["subsample"]["candidate"] == [20_000, 2_000_000]
    assert "20,000 of 2,000,000" in doc["subsample"]["method"] and "evenly spaced" in doc["subsample"]["method"]
    assert any("20,000 of 2,000,000" in n for n in doc["notes"])  # the table and Markdown show the notes


def test_within_run_ci_of_a_thinned_median_has_the_width_of_all_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    res, sizes, b, c = _two_million(monkeypatch, "p50")
    cc = res.cells[0]
    assert max(sizes) == 20_000
    assert cc.ratio == pytest.approx(float(np.median(c)) / float(np.median(b)), rel=1e-12)
    lo, hi = cc.ratio_ci
    assert lo < cc.ratio < hi
    # se of a log median of 2,000,000 lognormal(0, 0.05) samples: 1.2533 * 0.05 / sqrt(2e6) = 4.4e-5 per
    # side, so the 95% CI of the ratio is ~2.5e-4 wide; the subsample's own spread would be 10x that
    assert 1.2e-4 < hi - lo < 5e-4
    assert "sqrt(m/n)" in cc.subsample["method"]


def test_cli_compare_gives_what_compare_docs_gives(tmp_path: Path) -> None:
    base, cand = run_doc(1.00, 0, 1, n=300), run_doc(1.05, 1, 2, n=300)
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(base))
    pb.write_text(json.dumps(cand))
    proc = run_cli(["compare", str(pa), str(pb), "--within-run", "--format", "json", "--metric", "latency_ms"])
    assert proc.returncode == 0, proc.stderr
    want = json.loads(json.dumps(compare_docs([base], [cand], CompareSettings(within_run=True)).to_dict(), default=str))
    assert json.loads(proc.stdout) == want
