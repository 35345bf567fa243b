"""Issue 17, "The report": units at the root, FLOP/s and MFU in the summary, a short
reason with the full text on demand, all-n/a tables in one line, labelled roofline
points, like-with-like regressions, the model x variant pivot, and MFU computed at
report time from a later calibration (``harness report --calibration DIR``)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from harness.core.metrics import METRICS
from harness.reports import formatting as F
from harness.reports.html import render_html, render_report
from harness.reports.markdown import markdown_report
from harness.reports.sections.pivot import PivotSection
from harness.reports.sections.summary import SummarySection
from tests.test_report import failed_cell, make_doc, ok_cell, rich_runs, skipped_cell

RATIO_WORDS = ("_ratio", "_efficiency", "_fraction", "_over_", "speedup", "inflation", "accuracy", "agreement")


def _section(text: str, sid: str) -> str:
    start = text.index(f'<section id="{sid}"')
    return text[start:text.index("</section>", start)]


# ----------------------------------------------------------------------------- units


def test_every_metric_the_formatter_knows_has_a_unit_that_fits_ratios_and_rates() -> None:
    """Walk every declared metric: a ratio prints as a bare number, a rate ends in /s,
    a FLOP count says FLOP and not /s; names that read as ratios or rates are declared so."""
    ratio_like = re.compile(r"^-?[\d,]+(\.\d+)?(e[-+]\d+)?%?$")
    for m in METRICS:
        key = m.name
        text = F.metric_value(key, 0.5 if m.unit in ("", "%") else 12345.0)
        assert text is not None, key
        tail = key.rsplit(".", 1)[-1]
        if m.unit == "":
            assert ratio_like.match(text), (key, text)  # "1.00", never "1.00 FLOP"
        if m.unit in F.RATE_UNITS or tail.endswith("_per_s"):
            assert m.unit in F.RATE_UNITS, (key, m.unit)  # a *_per_s name is declared as a rate
            assert text.endswith("/s"), (key, text)  # "10.4 GFLOP/s", never "10.4 GFLOP"
        if m.unit == "FLOP":
            assert text.endswith("FLOP") and "/s" not in text, (key, text)
        if (tail in ("mfu", "cv") or any(w in tail for w in RATIO_WORDS)) and not tail.endswith(("_s", "_ms")):
            assert m.unit == "", (key, m.unit)  # a ratio by name is declared without a unit
        assert F.unit_of(key) == m.unit, key  # one place chooses the unit
    assert F.metric_value("flops_analytic_ratio", 1.0) == "1.00"
    assert F.metric_value("achieved_flops_per_s", 1.04e10) == "10.4 GFLOP/s"


@pytest.mark.parametrize("key, value, expected", [
    ("imported_flops_ratio", 1.0, "1.00"),          # was "1.00 FLOP" (suffix rule saw "flops")
    ("imported_flops_per_s", 1.04e10, "10.4 GFLOP/s"),  # was "10.4 GFLOP"
    ("tokens_per_s", 12.5, "12.5 /s"),
    ("dp_scaling_efficiency", 0.93, "0.930"),
    ("hit_over_total", 0.5, "0.500"),
    ("imported_flops", 2.03e8, "203 MFLOP"),
    ("imported_energy_j", 2.0, "2.00 J"),
    ("wall_s", 2.0, "2.00 s"),
])  # fmt: skip
def test_undeclared_metrics_guess_ratios_before_units(key: str, value: float, expected: str) -> None:
    assert F.metric_value(key, value) == expected


# ----------------------------------------------------------------------------- summary


LONG = "ImportError: " + "the backend could not load its shared library libfoo.so because " * 8 + "THE END"


def test_summary_has_achieved_flops_and_mfu_and_a_short_reason_with_the_full_text_on_demand() -> None:
    measured = ok_cell("mlp", extra_metrics={"achieved_flops_per_s": 1.04e10, "mfu": 0.031})
    uncalibrated = ok_cell("transformer", seed=2, extra_metrics={"achieved_flops_per_s": 2.0e9, "mfu": None},
                           unavailable={"mfu": "no calibration for cpu; run `harness calibrate -d cpu`"})  # fmt: skip
    doc = make_doc([measured, uncalibrated, failed_cell(message=LONG), skipped_cell()])
    summary = _section(render_html([doc]), "summary")
    heads = re.findall(r'<th scope="col"[^>]*>([^<]*)</th>', summary)
    assert "achieved FLOP/s" in heads and "MFU" in heads
    assert "10.4 GFLOP/s" in summary and "2.00 GFLOP/s" in summary and ">3.1%<" in summary
    assert 'title="no calibration for cpu; run `harness calibrate -d cpu`">n/a' in summary
    # the long reason: a short text, the full one in <details> (click) and in the tooltip
    m = re.search(r'<details class="reason"><summary>([^<]*)</summary><div class="full">([^<]*)</div></details>', summary)
    assert m, summary[-2000:]
    assert len(m.group(1)) <= 91 and m.group(1).endswith("\u2026") and m.group(2).endswith("THE END")
    assert "no CUDA device visible" in summary  # a short reason is shown as it is, no <details>
    assert summary.count("<details") == 1


def test_spec_columns_with_one_value_are_said_once_above_the_summary() -> None:
    doc = make_doc([ok_cell("mlp"), ok_cell("transformer", seed=2)])
    summary = _section(render_html([doc]), "summary")
    heads = re.findall(r'<th scope="col"[^>]*>([^<]*)</th>', summary)
    assert "backend" not in heads and "workload" in heads
    assert "Same in every cell: backend <b>torch</b>" in summary


# ----------------------------------------------------------------------------- all n/a in one line


def _energy_doc(reasons: list[str]) -> dict[str, Any]:
    cells = []
    for i, why in enumerate(reasons):
        energy = {k: None for k in ("energy_j", "energy_per_sample_j", "samples_per_j", "avg_power_w", "peak_power_w",
                                    "idle_power_w")}  # fmt: skip
        cells.append(ok_cell("mlp", batch=8 * (i + 1), seed=i,
                             extra_metrics={"energy": dict(energy, source="unavailable", reason=why)}))
    return make_doc(cells)


def test_a_table_whose_every_value_is_na_for_one_reason_is_one_line() -> None:
    why = "no RAPL: /sys/class/powercap does not exist"
    energy = _section(render_html([_energy_doc([why, why, why])]), "energy")
    assert "<table" not in energy and energy.count('class="all-na"') == 1
    assert "in all 3 cells: J/sample, samples/J" in energy and why in energy
    # two different reasons: the table stays, each n/a with its own reason
    mixed = _section(render_html([_energy_doc([why, "NVML: no energy counter"])]), "energy")
    assert "<table" in mixed and 'class="all-na"' not in mixed
    # generic: any table of the sections, and single columns of the big tables
    from harness.reports.sections.common import collapsed_table, na, single_reason

    assert single_reason([na("a"), (na("a"), "")]) == "a" and single_reason([na("a"), na("b")]) is None
    assert single_reason([na("a"), "1.0"]) is None and single_reason([]) is None
    assert collapsed_table(["cell", "x"], [["c1", "1.0"]]) is None
    other = _section(render_html([make_doc([ok_cell("mlp"), ok_cell("cnn", seed=3)])]), "other-metrics")
    assert ">peak_device_mem_bytes<" not in other  # its column: n/a everywhere, for one reason
    assert "in all 2 cells: peak_device_mem_bytes. Reason:" in other


# ----------------------------------------------------------------------------- roofline


def test_roofline_points_are_labelled_with_their_cell() -> None:
    from harness.reports.sections import roofline_section

    _, figs = roofline_section(rich_runs()[:1])
    pts = [t for t in figs[0][1]["data"] if t.get("name") == "cells"][0]
    assert pts["mode"] == "markers+text" and len(pts["text"]) == len(pts["x"]) == 2
    assert pts["text"] == ["fp32", "int8_dynamic"]  # only what differs between the points
    assert all("/torch/cpu/" in h for h in pts["hovertext"])
    assert "%{customdata[0]}" in pts["hovertemplate"]  # the full cell id on hover
    assert len(pts["textposition"]) == 2


# ----------------------------------------------------------------------------- regressions


def _suite_run(i: int, suite: str, workload: str) -> dict[str, Any]:
    doc = make_doc([ok_cell(workload, seed=50 + i, n=80)], run_id=f"2026111{i}T000000Z-m",
                   created=f"2026-11-1{i}T00:00:00Z")  # fmt: skip
    doc["suite"]["name"] = suite
    return doc


def test_regressions_compare_like_with_like_and_say_what_was_left_out() -> None:
    runs = [_suite_run(0, "quick", "cnn"), _suite_run(1, "quick", "cnn"), _suite_run(2, "smoke", "mlp"),
            _suite_run(3, "smoke", "mlp"), _suite_run(4, "smoke", "mlp")]  # fmt: skip
    reg = _section(render_html(runs), "regressions")
    # one check per suite, each only with its own cells (no cnn "only in the baseline" beside mlp)
    assert len(re.findall(r"</b> vs \d+ earlier runs? of suite", reg)) == 2
    assert "of suite smoke" in reg and "of suite quick" in reg
    from harness.reports.api import ReportContext

    checks = {check["suite"]: check for _, _, _, check in ReportContext(runs).need("regressions")}
    assert {c.key.split("/")[0] for c in checks["suite smoke"]["result"].cells} == {"mlp"}
    assert {c.key.split("/")[0] for c in checks["suite quick"]["result"].cells} == {"cnn"}
    assert all(c.verdict in ("unchanged", "improvement", "regression") or c.verdict.startswith("inconclusive")
               for ch in checks.values() for c in ch["result"].cells)  # nothing "only in the baseline"
    assert "Like with like: only runs of suite smoke on this machine are compared; 2 runs of other suites " \
           "(suite quick: 2) left out" in reg
    md = markdown_report(runs).text
    assert "_Like with like: only runs of suite smoke" in md


# ----------------------------------------------------------------------------- pivot


def _variant(workload: str, variant: str, p50: float, gate: bool | None, seed: int, **spec: Any) -> dict[str, Any]:
    q = {"accuracy": 0.9, "gate": {"passed": gate, "rule": "accuracy >= 0.99 x fp32 accuracy"}} if gate is not None \
        else None
    c = ok_cell(workload, seed=seed, center_ms=p50, extra_metrics={"quality": q} if q else None)
    c["spec"]["variant"] = variant
    c["spec"].update(spec)
    c["id"] = f"{workload}/{c['spec']['backend']}/{c['spec']['device']}/{variant}/inference/bs64/tiny"
    return c


def test_the_pivot_shows_speedup_vs_fp32_and_the_gate_first_in_html_and_markdown() -> None:
    cells = [_variant("mlp", "fp32", 1.0, True, 1), _variant("mlp", "int8", 0.4, False, 2),
             _variant("mlp", "bf16", 1.0, True, 3), _variant("cnn", "fp32", 2.0, True, 4),
             skipped_cell("cnn")]  # fmt: skip
    doc = make_doc(cells)
    sections = [PivotSection(), SummarySection()]
    text = render_report([doc], sections=sections).text
    assert text.index('<section id="pivot">') < text.index('<section id="summary">')
    pivot = _section(text, "pivot")
    heads = re.findall(r'<th scope="col"[^>]*>([^<]*)</th>', pivot)
    assert heads[:2] == ["model", "fp32"] and set(heads[2:]) == {"bf16", "int8"}
    assert "2.50× faster" in pivot and "gate fail" in pivot and "gate pass" in pivot
    assert "≈ 1.00×" in pivot  # same speed: the medians' CIs overlap
    assert "baseline" in pivot and "no such cell in these runs" in pivot  # cnn has no int8/bf16
    md = markdown_report([doc], sections=sections).text
    assert md.index("### At a glance") < md.index("### dl-harness results")
    assert "**2.50x** faster · gate **fail**" in md
    # one variant, one device measured: the summary already is the table, no pivot
    assert PivotSection().data(__import__("harness.reports.api", fromlist=["x"]).ReportContext(
        [make_doc([ok_cell(), skipped_cell()])])) is None


def test_the_pivot_adds_machine_and_backend_when_the_runs_have_several() -> None:
    a = make_doc([_variant("mlp", "fp32", 1.0, None, 1), _variant("mlp", "fp32", 1.5, None, 2, backend="tensorflow")],
                 host="alpha")  # fmt: skip
    b = make_doc([_variant("mlp", "fp32", 0.5, None, 3)], host="beta", run_id="20261124T000000Z-b",
                 created="2026-11-24T00:00:00Z")  # fmt: skip
    b["environment"]["fingerprint"] = "other-machine"
    pivot = _section(render_report([a, b], sections=[PivotSection()]).text, "pivot")
    heads = re.findall(r'<th scope="col"[^>]*>([^<]*)</th>', pivot)
    assert heads == ["machine", "backend", "model", "fp32"]
    assert ">alpha<" in pivot and ">beta<" in pivot and ">tensorflow<" in pivot


# ----------------------------------------------------------------------------- --calibration


def _uncalibrated_doc() -> dict[str, Any]:
    c = ok_cell("mlp", extra_metrics={"achieved_flops_per_s": 2.0e10, "mfu": None,
                                      "arithmetic_intensity_flop_per_byte": 8.0},
                unavailable={"mfu": "no calibration for cpu with this machine's fingerprint"})  # fmt: skip
    c["runtime"]["threads"] = 1
    return make_doc([c])


def test_report_calibration_computes_mfu_and_roofline_at_report_time(cli: Any, tmp_path: Path) -> None:
    from harness.core.calibrate import save

    doc = _uncalibrated_doc()
    src = tmp_path / "run.json"
    src.write_text(json.dumps(doc))
    before = src.read_bytes()
    cal = tmp_path / "cal"
    save(cal, "3f2a9c", "cpu", {"peak_flops_per_s": {"fp32": 1.0e11}, "mem_bandwidth_bytes_per_s": 2.0e10,
                                "threads": 1, "measured_at": "2026-11-30T09:00:00Z"})  # fmt: skip
    out = tmp_path / "r.html"
    proc = cli(["report", str(src), "-o", str(out), "--calibration", str(cal)])
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    summary = _section(text, "summary")
    assert ">20%" in summary  # 2e10 / 1e11
    assert "MFU (calibration of 2026-11-30T09:00:00Z, applied at report time)" in summary
    roof = _section(text, "roofline")
    assert "applied at report time" in roof and 'id="chart-roofline-0"' in roof
    assert src.read_bytes() == before  # the result file is not changed
    # without --calibration: n/a with the stored reason, no roofline
    plain = tmp_path / "plain.html"
    assert cli(["report", str(src), "-o", str(plain)]).returncode == 0
    assert "applied at report time" not in plain.read_text() and 'id="roofline"' not in plain.read_text()


def test_report_calibration_mistakes_are_one_line_and_a_foreign_machine_a_warning(cli: Any, tmp_path: Path) -> None:
    from harness.reports.calibration import apply_report_calibration

    src = tmp_path / "run.json"
    src.write_text(json.dumps(_uncalibrated_doc()))
    for bad in (tmp_path / "missing", tmp_path):  # no such directory; a directory without calibrations
        proc = cli(["report", str(src), "-o", str(tmp_path / "x.html"), "--calibration", str(bad)])
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert "--calibration" in proc.stderr and "harness calibrate --out" in proc.stderr
    other = tmp_path / "other"
    other.mkdir()
    (other / "abcdef.json").write_text(json.dumps({"calibration_version": 1, "fingerprint": "abcdef", "devices": {}}))
    proc = cli(["report", str(src), "-o", str(tmp_path / "y.html"), "--calibration", str(other)])
    assert proc.returncode == 0 and "no calibration of its machine (fingerprint 3f2a9c)" in proc.stderr
    runs = [_uncalibrated_doc()]
    kept = copy.deepcopy(runs)
    new, notes = apply_report_calibration(runs, other)
    assert runs == kept and new[0] is runs[0] and len(notes) == 1
