"""Tests of the reports (HTML, Markdown, rich) built from schema-valid result docs.

The docs are made here from seeded numpy samples; the latency summary is computed
with numpy directly (not harness.core.stats) so these tests pin the report, not the stats.
"""

from __future__ import annotations

import html
import json
import math
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.store.schema import validation_errors
from harness.reports import formatting as F
from harness.reports.figures import latency_figure, memory_figure, throughput_figure
from harness.reports.html import render_html, write_html_report
from harness.reports.templating import script_json
from harness.reports.tables import markdown_summary, md_escape, rich_summary_table

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = "<script>alert(1)</script><img src=x onerror=alert(2)>"
PAYLOAD_ESCAPED = html.escape(PAYLOAD)


# ----------------------------------------------------------------------------- fixtures


def latency_summary(samples: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """The latency_ms summary a run stores, computed with plain numpy."""
    p25, p50, p75, p90, p99 = np.percentile(samples, [25, 50, 75, 90, 99])
    rng = np.random.default_rng(seed)
    meds = np.median(samples[rng.integers(0, samples.size, (500, samples.size))], axis=1)
    lo, hi = np.quantile(meds, [0.025, 0.975])
    mean, std = float(samples.mean()), float(samples.std(ddof=1))
    return {
        "p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": mean, "std": std,
        "min": float(samples.min()), "max": float(samples.max()), "iqr": float(p75 - p25),
        "ci95_low": float(lo), "ci95_high": float(hi), "n": int(samples.size), "cv": std / mean,
    }  # fmt: skip


def spec(workload: str = "mlp", batch: int = 64, size: str = "small", device: str = "cpu") -> dict[str, Any]:
    return {"workload": workload, "backend": "torch", "device": device, "variant": "fp32",
            "mode": "inference", "batch_size": batch, "size": size}  # fmt: skip


def cell_id_of(s: dict[str, Any]) -> str:
    return f"{s['workload']}/{s['backend']}/{s['device']}/{s['variant']}/{s['mode']}/bs{s['batch_size']}/{s['size']}"


def ok_cell(
    workload: str = "mlp",
    batch: int = 64,
    seed: int = 0,
    center_ms: float = 1.0,
    spread: float = 0.02,
    n: int = 200,
    peak_host: int | None = 412_000_000,
    extra_metrics: dict[str, Any] | None = None,
    unavailable: dict[str, str] | None = None,
    contended_cores: float | None = None,
) -> dict[str, Any]:
    """An ok cell as the worker writes it (schema v3): sustained throughput (samples
    processed / the timed loop's wall time, here the sum of the samples), batch / p50
    as ``throughput_p50_per_s``, and a contention record (contended when
    ``contended_cores`` other-process cores are given)."""
    rng = np.random.default_rng(seed)
    samples = center_ms * (1.0 + spread * rng.standard_normal(n))
    samples = np.clip(samples, center_ms * 0.1, None)
    lat = latency_summary(samples, seed)
    s = spec(workload, batch)
    loop_wall_s = float(samples.sum()) / 1000.0
    metrics = {
        "latency_ms": lat,
        "noisy": bool(lat["iqr"] / lat["p50"] > 0.10),
        "throughput_per_s": n * batch / loop_wall_s,
        "throughput_p50_per_s": batch / (lat["p50"] / 1000.0),
        "throughput_ci95_per_s": [batch / (lat["ci95_high"] / 1000.0), batch / (lat["ci95_low"] / 1000.0)],
        "peak_host_mem_bytes": peak_host,
        "host_mem_increase_bytes": 12_000_000,
        "peak_device_mem_bytes": None,
        "params": 1_585_162,
        "flops_analytic": 203_000_000,
        "first_iter_ms": 12.3,
    }
    metrics.update(extra_metrics or {})
    unav = {"peak_device_mem_bytes": "cpu device: no separate device memory"}
    unav.update(unavailable or {})
    return {
        "id": cell_id_of(s), "spec": s, "status": "ok", "reason": None, "error": None,
        "duration_s": 4.2, "metrics": metrics, "unavailable": unav,
        "timing": {"iters_per_sample": 1, "warmup_iters": 20, "warmup_s": 0.3, "warmup_stable": True,
                   "timed_s": 1.0, "clock": "perf_counter", "samples": n, "loop_wall_s": loop_wall_s,
                   "contention": contention_record(contended_cores)},
        "runtime": {"torch": "2.13.0+cpu", "threads": 2},
        "samples_ms": [float(x) for x in samples],
    }  # fmt: skip


def contention_record(other_cores: float | None = None, ncpu: int = 2) -> dict[str, Any]:
    """``timing.contention`` in the form harness.core.contention.ContentionProbe.result() writes;
    contended when other processes used ``other_cores`` cores."""
    detected = other_cores is not None
    window = {"measurable": True, "other_cpu_cores": other_cores if detected else 0.05,
              "cpu_contended": detected, "threshold_cores": 0.35, "steal_share": 0.0, "steal_contended": False}
    reasons = ([f"loop: other processes used {other_cores:.2f} cores of {ncpu} while the cell ran 2 thread(s) "
                "(0 core(s) free; threshold 0.35)", "busiest other processes: stress (pid 4242, 1.70 cores)"]
               if detected else [])
    return {"detected": detected, "reasons": reasons, "rule": "contended if other processes used more than ...",
            "evidence": {"ncpu": ncpu, "threads": 2, "free_cores": 0, "windows": {"loop": window}}}  # fmt: skip


def skipped_cell(workload: str = "mlp", reason: str = "no CUDA device visible") -> dict[str, Any]:
    s = spec(workload, device="cuda")
    return {"id": cell_id_of(s), "spec": s, "status": "skipped", "reason": reason, "error": None,
            "duration_s": 0.1, "metrics": {}, "unavailable": {}, "samples_ms": []}  # fmt: skip


def failed_cell(workload: str = "cnn", message: str = "shape mismatch in conv1", stderr: str = "") -> dict[str, Any]:
    s = spec(workload, batch=32)
    return {
        "id": cell_id_of(s), "spec": s, "status": "failed", "reason": f"RuntimeError: {message}",
        "error": {"type": "RuntimeError", "message": message,
                  "traceback": 'Traceback (most recent call last):\n  File "worker.py", line 1\nRuntimeError',
                  "stderr_tail": stderr or "worker stderr line 1\nworker stderr line 2", "returncode": 1},
        "duration_s": 0.5, "metrics": {}, "unavailable": {}, "samples_ms": [],
    }  # fmt: skip


def make_doc(
    cells: list[dict[str, Any]],
    host: str = "testhost",
    tag: str | None = "nightly",
    run_id: str = "20261123T110000Z-testhost-ab12cd",
    created: str = "2026-11-23T11:00:00Z",
    env_vars: dict[str, str | None] | None = None,
) -> dict[str, Any]:
    doc = {
        "schema_version": 3, "run_id": run_id, "created": created, "finished": "2026-11-23T11:05:00Z",
        "complete": True, "interrupted": False, "tag": tag,
        "harness": {"version": "0.1.0", "git_commit": "abc123def4567890", "git_dirty": False},
        "environment": {
            "host": host,
            "os": {"system": "Linux", "release": "6.1.0", "platform": "Linux-6.1.0-x86_64"},
            "python": "3.11.7",
            "cpu": {"model": "Intel Xeon Test", "physical_cores": 1, "logical_cores": 2,
                    "flags_dl": {"avx2": True, "avx512f": True, "avx512_vnni": True,
                                 "avx512_bf16": False, "amx_tile": False}},
            "memory_bytes": 25_000_000_000, "gpus": [], "gpus_reason": "NVML unavailable: libnvidia-ml.so not found",
            "frameworks": {"torch": "2.13.0+cpu", "numpy": "2.4.6", "tensorflow": None},
            "env_vars": env_vars if env_vars is not None else {"OMP_NUM_THREADS": None, "MKL_NUM_THREADS": "2"},
            "fingerprint": "3f2a9c",
        },
        "suite": {"name": "quick", "settings": {"min_time_s": 1.0, "timeout_s": 300}},
        "cells": cells,
    }  # fmt: skip
    errors = validation_errors(doc)
    assert errors == [], errors  # the fixtures must match the real result format
    return doc


def standard_doc(**kw: Any) -> dict[str, Any]:
    return make_doc(
        [ok_cell("mlp", 64, seed=1), ok_cell("transformer", 8, seed=2, center_ms=5.0), skipped_cell(), failed_cell()],
        **kw,
    )


class TagCollector(HTMLParser):
    """Records every start tag and its attributes as a browser's parser would see them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_bodies: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.script_bodies.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_bodies[-1] += data


def parse(text: str) -> TagCollector:
    p = TagCollector()
    p.feed(text)
    p.close()
    return p


def plotly_marker() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()[:300]


# ----------------------------------------------------------------------------- HTML


def test_html_report_is_self_contained_with_one_chart_per_kind(tmp_path: Path) -> None:
    doc = standard_doc()
    out = write_html_report([doc], tmp_path / "sub" / "report.html", title="Nightly")
    assert out == tmp_path / "sub" / "report.html" and out.is_file()
    text = out.read_text(encoding="utf-8")

    assert text.count(plotly_marker()) == 1  # plotly.js embedded exactly once
    parsed = parse(text)
    scripts = [a for t, a in parsed.tags if t == "script"]
    assert scripts and all("src" not in a for a in scripts)  # nothing loaded from anywhere
    assert not re.search(r"<script[^>]*\ssrc\s*=", text, re.I)
    assert not re.search(r"<link[^>]*href\s*=\s*[\"']?https?:", text, re.I)
    assert "cdn.plot.ly" not in text  # not even plotly.js's (unused) topojson default
    assert text.count("Plotly.newPlot(") == 3  # latency, throughput, memory
    for div in ("chart-latency", "chart-throughput", "chart-memory"):
        assert f'id="{div}"' in text

    for cell in doc["cells"]:
        assert cell["id"] in text
    assert "<title>Nightly</title>" in text
    assert doc["run_id"] in text and "2026-11-23T11:00:00Z" in text and "abc123def456" in text
    # sections, units and the interactive table
    for needle in ("Summary", "Environment", "Failed cells", "p50 (ms) [95% CI]", "throughput (samples/s)",
                   "peak host mem (MiB)", 'id="cell-filter"', 'class="grid sortable"', "avx512_vnni: yes",
                   "avx512_bf16: no", "NVML unavailable", "MKL_NUM_THREADS", "2.13.0+cpu"):  # fmt: skip
        assert needle in text, needle
    assert "Skipped result files" not in text  # no errors given -> no section


def test_figures_carry_units_and_validate_as_plotly_figures() -> None:
    import plotly.graph_objects as go

    runs = [standard_doc(), standard_doc(run_id="20261124T110000Z-testhost-ffffff", tag=None)]
    for build in (latency_figure, throughput_figure, memory_figure):
        fig = build(runs)
        assert fig is not None
        go.Figure(data=fig["data"], layout=fig["layout"])  # raises on an invalid attribute
        assert "(ms)" in fig["layout"]["xaxis"]["title"]["text"] or "MiB" in fig["layout"]["xaxis"]["title"]["text"] \
            or "samples/s" in fig["layout"]["xaxis"]["title"]["text"]
    lat = latency_figure(runs)
    assert len(lat["data"]) == 4  # two ok cells in each of two runs
    assert all(" ms" in t["hovertemplate"] for t in lat["data"])
    assert lat["data"][0]["x"] == runs[0]["cells"][0]["samples_ms"]
    thr = throughput_figure(runs)
    assert all("samples/s" in t["hovertemplate"] and "CI" in t["hovertemplate"] for t in thr["data"])
    # a sustained throughput measured in one process has no interval of its own: the stored
    # CI is of batch / p50, another quantity, so no error bar is drawn around the bar
    assert "error_x" not in thr["data"][0]
    assert thr["data"][0]["x"][0] == runs[0]["cells"][0]["metrics"]["throughput_per_s"]
    # an older result's batch / p50 throughput keeps the CI the run stored for it
    old = standard_doc()
    old["cells"][0]["metrics"].pop("throughput_p50_per_s")
    ok0 = old["cells"][0]["metrics"]
    err = throughput_figure([old])["data"][0]["error_x"]
    assert err["array"][0] == pytest.approx(ok0["throughput_ci95_per_s"][1] - ok0["throughput_per_s"])
    assert err["arrayminus"][0] == pytest.approx(ok0["throughput_per_s"] - ok0["throughput_ci95_per_s"][0])
    mem = memory_figure(runs)
    assert all("MiB" in t["hovertemplate"] for t in mem["data"])
    assert mem["data"][0]["x"][0] == pytest.approx(412_000_000 / 2**20)


def test_malicious_strings_are_escaped_everywhere(tmp_path: Path) -> None:
    cells = [
        ok_cell(workload=PAYLOAD, seed=3, unavailable={"peak_device_mem_bytes": PAYLOAD}),
        skipped_cell(reason=PAYLOAD),
        failed_cell(message=PAYLOAD, stderr=PAYLOAD),
    ]
    doc = make_doc(cells, host=PAYLOAD, tag=PAYLOAD, env_vars={"EVIL": PAYLOAD, PAYLOAD: "x"})
    doc["environment"]["frameworks"][PAYLOAD] = PAYLOAD
    doc["environment"]["cpu"]["model"] = PAYLOAD
    errors = [f"/tmp/{PAYLOAD}.json: corrupt or truncated JSON"]
    text = write_html_report([doc], tmp_path / "r.html", errors=errors, title=PAYLOAD).read_text(encoding="utf-8")

    assert "<script>alert(1)" not in text
    assert "<img src=x" not in text
    assert PAYLOAD_ESCAPED in text  # shown as text
    parsed = parse(text)
    assert not any(tag == "img" for tag, _ in parsed.tags)
    assert not any(k.startswith("on") for _, attrs in parsed.tags for k in attrs)
    # every script element is one of ours: plotly config + plotly.js + 3 charts + table JS
    assert len(parsed.script_bodies) == 6
    # chart data: the payload reaches plotly html-escaped (plotly renders some HTML)
    chart_scripts = [b for b in parsed.script_bodies if "Plotly.newPlot(" in b]
    assert len(chart_scripts) == 3
    plotly_strings: list[str] = []
    for body in chart_scripts:
        assert "<" not in body and ">" not in body  # nothing can close the script element
        fig = json.loads(body[body.index("var f=") + len("var f=") : body.rindex(";Plotly.newPlot")])
        plotly_strings += list(walk_strings(fig))
    assert not [s for s in plotly_strings if "<script" in s or "<img" in s]
    assert any("&lt;script&gt;alert(1)&lt;/script&gt;&lt;img" in s for s in plotly_strings)


def walk_strings(obj: Any) -> Any:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from walk_strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk_strings(v)


def test_script_json_cannot_break_out_of_script() -> None:
    value = {"a": "</script><!-- & \u2028\u2029 <b>", "n": float("nan")}
    out = script_json(value)
    for bad in ("<", ">", "&", "\u2028", "\u2029"):
        assert bad not in out
    assert json.loads(out) == {"a": value["a"], "n": None}


def test_failed_cells_show_error_and_stderr_in_details(tmp_path: Path) -> None:
    doc = make_doc([ok_cell(), failed_cell(message="CUDA error: illegal memory access", stderr="segfault in kernel xyz")])
    text = render_html([doc])
    section = text[text.index('id="failed"'):]
    assert '<details class="failure">' in section
    assert "RuntimeError" in section and "CUDA error: illegal memory access" in section
    assert "<pre>segfault in kernel xyz</pre>" in section
    assert "worker exit code" in section
    assert "Traceback (most recent call last)" in section


def test_run_with_only_skipped_cells_still_renders(tmp_path: Path) -> None:
    doc = make_doc([skipped_cell("mlp", "no CUDA device visible"), skipped_cell("cnn", "tensorflow not installed")])
    out = write_html_report([doc], tmp_path / "skipped.html")
    text = out.read_text(encoding="utf-8")
    assert "no CUDA device visible" in text and "tensorflow not installed" in text
    assert "Plotly.newPlot(" not in text  # no data, no charts (and no 4.8 MB of unused JS)
    assert "Failed cells" not in text
    for cell in doc["cells"]:
        assert cell["id"] in text
    assert text.rstrip().endswith("</html>")


def test_no_runs_and_only_errors_still_renders(tmp_path: Path) -> None:
    text = write_html_report([], tmp_path / "empty.html", errors=["results/bad.json: corrupt"]).read_text()
    assert "Skipped result files" in text and "results/bad.json: corrupt" in text
    assert "No result files could be loaded" in text


def test_null_metric_renders_na_with_reason() -> None:
    cell = ok_cell(peak_host=None, unavailable={"peak_host_mem_bytes": "psutil is not installed"})
    doc = make_doc([cell])
    text = render_html([doc])
    assert '<span class="na" title="psutil is not installed">n/a</span>' in text
    # a null metric outside the summary columns too, with the reason recorded by the run
    assert '<span class="na" title="cpu device: no separate device memory">n/a</span>' in text
    # and the memory chart has nothing to draw rather than a made-up zero
    assert memory_figure([doc]) is None
    assert text.count("Plotly.newPlot(") == 2


def test_noisy_cell_gets_badge_with_explanation() -> None:
    doc = make_doc([ok_cell(seed=5, spread=0.4), ok_cell("cnn", seed=6, spread=0.01)])
    assert doc["cells"][0]["metrics"]["noisy"] is True and doc["cells"][1]["metrics"]["noisy"] is False
    text = render_html([doc])
    assert text.count('class="badge noisy" title=') == 1
    assert "IQR/median &gt; 10%" in text


def test_extra_metrics_are_rendered_with_units() -> None:
    extra = {"energy_j": {"value": 1.25, "unit": "J", "source": "rapl"}, "mfu": 0.031}
    doc = make_doc([ok_cell(extra_metrics=extra, unavailable={"power_w": "no RAPL under /sys/class/powercap"})])
    text = render_html([doc])
    section = text[text.index('id="other-metrics"'):]
    assert "energy_j" in section and "1.25 J" in section and "source: rapl" in section
    assert "203 MFLOP" in section and "12.3 ms" in section and "11.4 MiB" in section
    # MFU moved to the summary's own column (issue 17), as a percentage
    summary = text[text.index('id="summary"'):text.index('id="other-metrics"')]
    assert ">3.1%<" in summary and ">mfu<" not in section
    lo, hi = doc["cells"][0]["metrics"]["throughput_ci95_per_s"]
    # an interval, not "[2 values]", in the declared unit (samples/s; the name-suffix guess said "/s")
    assert f"[{F.throughput(lo)}, {F.throughput(hi)}] samples/s" in section
    assert '<span class="na" title="no RAPL under /sys/class/powercap">n/a</span>' in section


def test_several_runs_are_compared_side_by_side() -> None:
    a = standard_doc()
    b = standard_doc(run_id="20261124T110000Z-otherhost-000001", tag="candidate", created="2026-11-24T11:00:00Z")
    text = render_html([a, b])
    # latency, throughput, memory + the regressions chart (same machine: b against a)
    assert text.count("Plotly.newPlot(") == 4 and 'id="chart-regressions-0"' in text
    assert "<th scope=\"col\" tabindex=\"0\" title=\"click to sort\">run</th>" in text
    fig = latency_figure([a, b])
    assert sorted({t["offsetgroup"] for t in fig["data"]}) == ["run0", "run1"]
    assert fig["layout"]["showlegend"] is True


def test_latency_axis_goes_log_only_when_cells_span_orders_of_magnitude() -> None:
    close = make_doc([ok_cell("mlp", seed=1, center_ms=1.0), ok_cell("cnn", seed=2, center_ms=5.0)])
    assert latency_figure([close])["layout"]["xaxis"].get("type") is None
    wide = make_doc([ok_cell("mlp", seed=1, center_ms=0.05), ok_cell("cnn", seed=2, center_ms=80.0)])
    layout = latency_figure([wide])["layout"]
    assert layout["xaxis"]["type"] == "log" and "log scale" in layout["xaxis"]["title"]["text"]


def test_failed_cell_without_error_object_and_incomplete_run() -> None:
    cell = failed_cell()
    cell["error"] = None
    cell["reason"] = "worker timed out after 300 s"
    doc = make_doc([cell])
    doc["complete"] = False
    text = render_html([doc])
    assert "worker timed out after 300 s" in text[text.index('id="failed"'):]
    assert ">incomplete</span>" in text
    md = markdown_summary([doc])
    assert "worker timed out after 300 s" in md and "**incomplete**" in md
    assert rich_summary_table(make_doc([])).row_count == 0


def test_report_lists_files_the_loader_skipped(tmp_path: Path) -> None:
    from harness.store.results import load_results

    results = tmp_path / "results"
    results.mkdir()
    (results / "good.json").write_text(json.dumps(standard_doc()))
    (results / "broken.json").write_text('{"schema_version": 1, "run_id": ')
    loaded = load_results([results])
    assert len(loaded.runs) == 1 and len(loaded.errors) == 1
    text = write_html_report(loaded.runs, tmp_path / "r.html", errors=loaded.errors).read_text()
    section = text[text.index('id="skipped-files"'):]
    assert "broken.json" in section and "corrupt" in section


def test_importing_reports_is_cheap() -> None:
    code = "import sys, reports; assert 'plotly' not in sys.modules and 'rich' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})


# ----------------------------------------------------------------------------- Markdown / rich


def test_markdown_summary_has_header_and_one_row_per_cell() -> None:
    doc = standard_doc(tag="a|b")
    doc["cells"][2]["reason"] = "needs | pipes\nand newlines"
    md = markdown_summary([doc])
    lines = md.splitlines()
    table = [ln for ln in lines if ln.startswith("|")]
    assert table[0].startswith("| cell | status | p50 ms [95% CI] | p90 ms | p99 ms | sustained samples/s | peak host MiB")
    assert re.fullmatch(r"\|( -+:? \|| --:? \|)+", table[1].replace("--:", "---"))
    assert len(table) == 2 + len(doc["cells"])
    for row, cell in zip(table[2:], doc["cells"]):
        assert row.startswith(f"| {cell['id']} | {cell['status']} |")
        # a row has exactly the header's number of unescaped separators
        assert len(re.findall(r"(?<!\\)\|", row)) == len(re.findall(r"\|", table[0]))
    assert "a\\|b" in md and "needs \\| pipes…" in md
    ok = doc["cells"][0]
    p50 = F.ms(ok["metrics"]["latency_ms"]["p50"])
    assert f"| {p50} [" in table[2]
    assert "— |" in table[4]  # skipped: no number at all, not zero
    assert any(ln.startswith("- **") and doc["run_id"] in ln for ln in lines)  # one line per run


def test_markdown_escapes_html_and_shows_na() -> None:
    doc = make_doc([ok_cell(workload=PAYLOAD, peak_host=None, unavailable={"peak_host_mem_bytes": "no psutil"})],
                   host=PAYLOAD)  # fmt: skip
    md = markdown_summary([doc])
    assert "<script>" not in md and "&lt;script&gt;" in md
    row = [ln for ln in md.splitlines() if ln.startswith("| &lt;script")][0]
    assert "| n/a |" in row and "no psutil" in row
    two = markdown_summary([doc, standard_doc()])
    assert two.splitlines()[[i for i, ln in enumerate(two.splitlines()) if ln.startswith("|")][0]].startswith("| run |")
    assert markdown_summary([]).strip().endswith("No results.")
    assert md_escape("a|b\\") == "a\\|b\\\\"


def test_rich_summary_table_renders_literal_text() -> None:
    from rich.console import Console

    doc = make_doc([ok_cell(seed=5, spread=0.4), skipped_cell(reason="[bold red]no CUDA[/] " + "x" * 200), failed_cell()],
                   host="[blink]host[/blink]")  # fmt: skip
    table = rich_summary_table(doc)
    assert table.row_count == 3
    assert [c.header for c in table.columns][:5] == ["cell", "status", "p50 ms", "p90 ms", "p99 ms"]
    console = Console(record=True, width=250, color_system=None)
    console.print(table)
    out = console.export_text()
    assert "[blink]host[/blink]" in out  # markup from a result file is not interpreted
    assert "[bold red]no CUDA[/]" in out
    assert "x" * 200 not in out.replace("\n", "").replace(" ", "")  # long reasons are shortened
    assert "noisy" in out and "RuntimeError" in out
    for cell in doc["cells"]:
        assert cell["id"] in out.replace("│", " ") or cell["id"][:20] in out


# ----------------------------------------------------------------------------- formatting


def test_number_formatting_helpers() -> None:
    assert F.ms(1.23456) == "1.23" and F.ms(0.0012345) == "0.00123" and F.ms(12.345) == "12.3"
    assert F.ms(9.996) == "10.0" and F.ms(None) is None and F.ms(float("nan")) is None
    assert F.throughput(51234.0) == "51,234"
    assert F.mib_number(412_000_000) == "392.9"
    assert F.bytes_human(412_000_000) == "392.9 MiB" and F.bytes_human(25_000_000_000) == "23.28 GiB"
    assert F.ci(1.2, 1.26) == "[1.20, 1.26]"
    assert F.shorten("first line\nsecond", 80) == "first line…" and F.shorten("x" * 10, 5) == "xxxx…"
    assert F.si(203_000_000, "FLOP") == "203 MFLOP"


# ----------------------------------------------------------------------------- sections for many runs


def variant_cell(workload: str, variant: str, backend: str, seed: int, center_ms: float,
                 extra: dict[str, Any] | None = None, n: int = 60) -> dict[str, Any]:
    c = ok_cell(workload, seed=seed, center_ms=center_ms, n=n, extra_metrics=extra)
    c["spec"]["variant"], c["spec"]["backend"] = variant, backend
    c["id"] = cell_id_of(c["spec"])
    return c


def rich_runs(hostile_host: str = "machine-b") -> list[dict[str, Any]]:
    """Ten runs on two machines with every kind of data the report draws: a step in the
    history (run 6 of machine A is 30% slower), torch + tensorflow cells, measured and
    estimated energy, quality of two variants, a roofline calibration."""
    rng = np.random.default_rng(7)
    runs = []
    for i in range(10):
        on_b = i >= 8
        slow = 1.3 if (i >= 5 and not on_b) else 1.0
        level = math.exp(0.01 * rng.standard_normal())
        energy = ({"energy_j": 50.0, "energy_per_sample_j": 0.002 * level, "samples_per_j": 500.0 / level,
                   "avg_power_w": 95.0, "source": "rapl"} if not on_b else
                  {"energy_j": None, "energy_per_sample_j": 0.004, "samples_per_j": 250.0, "source": "estimate",
                   "model": "TDP x CPU utilisation"})  # fmt: skip
        quality = {"accuracy": 0.962, "accuracy_delta": 0.0, "agreement": 1.0, "dataset": "sklearn digits",
                   "gate": {"passed": True, "threshold": 0.01, "rule": "accuracy drop <= 1 pp"}}  # fmt: skip
        q8 = dict(quality, accuracy=0.95, accuracy_delta=-0.012, agreement=0.97,
                  gate={"passed": False, "threshold": 0.01, "rule": "accuracy drop <= 1 pp"})
        flops = {"flops": 2.0e8, "achieved_flops_per_s": 1.2e11 / slow, "mfu": 0.12,
                 "arithmetic_intensity_flop_per_byte": 12.0, "model_size_bytes": 6_340_000}  # fmt: skip
        cells = [
            variant_cell("mlp", "fp32", "torch", 10 * i, 1.0 * slow * level, dict(flops, energy=energy, quality=quality)),
            variant_cell("mlp", "int8_dynamic", "torch", 10 * i + 1, 0.4 * level,
                         dict(flops, energy=energy, quality=q8, model_size_bytes=1_700_000)),
            variant_cell("mlp", "fp32", "tensorflow", 10 * i + 2, 1.4 * level),
            variant_cell("cnn", "fp32", "torch", 10 * i + 3, 6.0 * level),
        ]
        doc = make_doc(cells, host=hostile_host if on_b else "machine-a", run_id=f"202611{10 + i}T000000Z-r{i}",
                       created=f"2026-11-{10 + i}T00:00:00Z", tag=f"night {i}")  # fmt: skip
        doc["environment"]["fingerprint"] = "fp-b" if on_b else "fp-a"
        doc["harness"]["git_commit"] = f"{i:02d}" + "c0ffee" * 6
        doc["calibration"] = {"cpu": {"peak_flops_per_s": {"fp32": 1.5e12, "bf16": 0.9e12},
                                      "mem_bandwidth_bytes_per_s": 2.0e10}}  # fmt: skip
        assert validation_errors(doc) == []
        runs.append(doc)
    return runs


SECTION_IDS = ("overview", "summary", "charts", "backends", "energy", "quality", "roofline", "regressions",
               "history", "procurement", "environment")  # fmt: skip


def test_many_runs_render_every_section_with_valid_figures() -> None:
    import plotly.graph_objects as go

    from harness.reports import sections as S

    runs = rich_runs()
    text = render_html(runs)
    for sid in SECTION_IDS:
        assert f'id="{sid}"' in text, sid
    figs = []
    for fn in (S.energy_section, S.quality_section, S.roofline_section, S.regressions_section, S.history_section):
        html_part, f = fn(runs)
        assert html_part and f, fn.__name__
        figs += f
    figs += S.procurement_section(runs)[1]
    for div, fig, _ in figs:
        go.Figure(data=fig["data"], layout=fig["layout"])  # plotly validates every property
        assert all(len(t.get("x") or []) for t in fig["data"]), div  # every trace has data
        for t in fig["data"]:
            ht = t.get("hovertemplate")
            if ht:  # hover names the cell and carries a unit
                assert "customdata[0]" in ht or "%{y}" in ht, div
                assert any(u in ht for u in ("ms", "samples/s", "J", "%", "FLOP")), (div, ht)
    # the history section marks the step at run 5 of machine A, with its commit range
    hist = text[text.index('id="history"') : text.index('id="procurement"')]
    assert hist.count("<td>step</td>") + hist.count('>step</td>') >= 1
    assert "20261115T000000Z-r5" in hist and "04c0ffeec0ff" in hist and "05c0ffeec0ff" in hist
    # regressions: machine A's latest run vs its earlier runs; machine B has only 2 runs
    reg = text[text.index('id="regressions"') : text.index('id="history"')]
    assert "fp-a" in reg and "fp-b" in reg
    # procurement: estimates labelled, never ranked as measured
    proc = text[text.index('id="procurement"') : text.index('id="other-metrics"')]
    assert "estimate" in proc and "rapl" in proc
    # quality: gate pass and fail, Pareto frontier trace
    assert "accuracy drop &lt;= 1 pp" in text and "Pareto frontier" in text


def test_single_run_leaves_multi_run_sections_out() -> None:
    text = render_html([standard_doc()])
    for sid in ("regressions", "history", "procurement", "energy", "quality", "roofline", "backends"):
        assert f'id="{sid}"' not in text, sid


def test_pareto_frontier() -> None:
    from harness.analysis.pareto import pareto_frontier as _pareto

    pts = [(1.0, 0.90, "a"), (2.0, 0.95, "b"), (1.5, 0.80, "c"), (3.0, 0.94, "d"), (0.5, 0.70, "e")]
    assert [p[2] for p in _pareto(pts)] == ["e", "a", "b"]


def test_report_cli_history_markdown_and_prices(tmp_path: Path) -> None:
    d = tmp_path / "results"
    d.mkdir()
    for r in rich_runs():
        (d / f"{r['run_id']}.json").write_text(json.dumps(r))
    (d / "broken.json").write_text('{"schema_version": 1, "run_id": ')
    prices = tmp_path / "prices.yaml"
    prices.write_text("machines:\n  machine-a: {hourly: 2.0}\n  fp-b: {hourly: 1.0}\n")
    from tests.conftest import run_cli

    md = run_cli(["report", str(d), "--format", "markdown", "--prices", str(prices), "--rank-by", "perf_per_dollar"])
    assert md.returncode == 0, md.stderr
    assert "skipped" in md.stderr and "broken.json" in md.stderr
    assert "#### History" in md.stdout and "step" in md.stdout and "20261115T000000Z-r5" in md.stdout
    assert "Machines side by side (ranked by perf_per_dollar)" in md.stdout and "samples per USD" in md.stdout
    out = tmp_path / "r.html"
    h = run_cli(["report", str(d), "-o", str(out), "--prices", str(prices)])
    assert h.returncode == 0 and 'id="procurement"' in out.read_text()
    prices.write_text("machines: {a: {hourly: -3}}\n")
    bad = run_cli(["report", str(d), "--prices", str(prices)])
    assert bad.returncode == 2 and "positive number" in bad.stderr and "Traceback" not in bad.stderr


# ----------------------------------------------------------------------------- declared units, contention, repeats


def repeated_cell(centers: list[float], contended: dict[int, float] | None = None, workload: str = "mlp",
                  seed: int = 0) -> dict[str, Any]:
    """A cell measured in one worker process per ``centers`` entry, merged the way
    ``harness run --repeats N`` merges them; ``contended``: process index -> other cores."""
    from harness.core.repeats import merge

    records = [ok_cell(workload, seed=seed + k, center_ms=c, n=80, contended_cores=(contended or {}).get(k))
               for k, c in enumerate(centers)]  # fmt: skip
    return merge(records, planned=len(centers), global_batch=64)


def test_metric_units_come_from_the_declared_table() -> None:
    # ratios have no unit, rates say per second, energy efficiency is samples per joule
    assert F.metric_value("flops_analytic_ratio", 1.0) == "1.00"  # was "1.00 FLOP"
    assert F.metric_value("mfu", 0.031) == "0.0310"
    assert F.metric_value("achieved_flops_per_s", 1.04e10) == "10.4 GFLOP/s"  # was "10.4 GFLOP"
    assert F.metric_value("samples_per_j", 500.0) == "500 samples/J"  # was "500 J"
    assert F.metric_value("energy.energy_per_sample_j", 0.002) == "0.00200 J"
    assert F.metric_value("avg_power_w", 95.0) == "95.0 W"
    assert F.metric_value("throughput_per_s", 1234.0) == "1,234 samples/s"
    assert F.metric_value("arithmetic_intensity_flop_per_byte", 12.0) == "12.0 FLOP/byte"
    assert F.metric_value("utilisation.cpu_percent_mean", 45.2) == "45.2%"
    assert F.metric_value("params", 1_585_162) == "1,585,162"
    # only an undeclared metric falls back to its name's suffix
    assert F.metric_value("imported_energy_j", 2.0) == "2.00 J"
    assert F.increase_means("latency_ms") == "+ is slower" and F.increase_means("throughput_per_s") == "+ is faster"
    assert F.increase_means("energy.energy_per_sample_j") == "+ is worse"
    assert F.increase_means("quality.accuracy") == "+ is better" and F.increase_means("flops") == "+ is higher"

    extra = {"flops_analytic_ratio": 1.0, "achieved_flops_per_s": 1.04e10, "mfu": 0.031,
             "energy": {"energy_j": 5.0, "energy_per_sample_j": 0.002, "samples_per_j": 500.0, "avg_power_w": 95.0,
                        "source": "rapl"}}  # fmt: skip
    text = render_html([make_doc([ok_cell(extra_metrics=extra)])])
    other = text[text.index('id="other-metrics"'):]
    summary = text[text.index('id="summary"'):text.index('id="charts"')]  # achieved FLOP/s: a summary column (issue 17)
    assert "10.4 GFLOP/s" in summary and "1.00 FLOP" not in other and "10.4 GFLOP<" not in text
    assert ">1.00<" in other  # flops_analytic_ratio, no unit
    energy = text[text.index('id="energy"'):text.index('id="other-metrics"')]
    assert "500 samples/J" in energy and "500 J" not in energy and "95.0 W" in energy


CONTENDED_EVIDENCE = "other processes used 1.7 of 2 cores"


def contended_doc() -> dict[str, Any]:
    return make_doc([ok_cell("mlp", seed=1), ok_cell("cnn", seed=2, contended_cores=1.7), skipped_cell()])


def test_html_names_contended_cells_in_a_banner_and_badges_them() -> None:
    doc = contended_doc()
    cid = doc["cells"][1]["id"]
    text = render_html([doc])
    banner = text[text.index('id="contention-banner"'):text.index('id="summary"')]
    assert "1 of 2 measured cells was contended" in banner
    assert cid in banner and CONTENDED_EVIDENCE in banner and doc["cells"][0]["id"] not in banner
    assert text.index('id="contention-banner"') < text.index('id="summary"')  # at the top, before the numbers
    summary = text[text.index('id="summary"'):]
    assert summary.count('class="badge contended"') == 2  # the row's badge + the legend's
    rows = summary[: summary.index("</table>")].split("<tr ")[1:]  # body rows (the header row is a bare <tr>)
    row = next(r for r in rows if f'data-cell="{cid}"' in r)
    assert 'class="st-ok contended"' in row and CONTENDED_EVIDENCE in row
    assert "busiest other processes: stress" in html.unescape(row)  # every reason in the tooltip
    assert "contended" not in next(r for r in rows if f'data-cell="{doc["cells"][0]["id"]}"' in r)
    # the throughput chart marks the contended bar
    assert any("contended" in t for t in throughput_figure([doc])["data"][0]["text"])
    # clean runs and runs written before contention was recorded: no banner, no badge
    old = standard_doc()
    for c in old["cells"]:
        (c.get("timing") or {}).pop("contention", None)
    for d in (standard_doc(), old):
        clean = render_html([d])
        assert 'id="contention-banner"' not in clean and 'class="badge contended"' not in clean


def test_markdown_says_contended_with_its_evidence() -> None:
    doc = contended_doc()
    md = markdown_summary([doc])
    assert "**\u26a0 1 of 2 measured cells were contended**" in md
    warning = [ln for ln in md.splitlines() if ln.startswith("> - ")]
    assert len(warning) == 1 and doc["cells"][1]["id"] in warning[0] and CONTENDED_EVIDENCE in warning[0]
    row = next(ln for ln in md.splitlines() if ln.startswith(f"| {doc['cells'][1]['id']} |"))
    assert "| ok, **contended** |" in row and f"CONTENDED: {CONTENDED_EVIDENCE}" in row
    clean_row = next(ln for ln in md.splitlines() if ln.startswith(f"| {doc['cells'][0]['id']} |"))
    assert "contended" not in clean_row.lower()
    assert "contended" not in markdown_summary([standard_doc()]).lower()


def test_terminal_table_says_contended_loudly() -> None:
    from rich.console import Console

    table = rich_summary_table(contended_doc())
    console = Console(record=True, width=250, color_system=None)
    console.print(table)
    out = console.export_text()
    assert f"CONTENDED: {CONTENDED_EVIDENCE}" in out
    assert "1 cell(s) CONTENDED" in out and "not trustworthy" in out  # the caption says what it means
    status_cells = table.columns[1]._cells
    assert [str(c) for c in status_cells] == ["ok", "ok\ncontended", "skipped"]
    assert any(span.style == "bold red" for span in table.caption.spans)
    clean = Console(record=True, width=250, color_system=None)
    clean.print(rich_summary_table(standard_doc()))
    assert "contended" not in clean.export_text().lower()


def test_repeats_show_processes_and_their_spread_everywhere() -> None:
    from rich.console import Console

    cell = repeated_cell([1.0, 1.3, 1.1])
    doc = make_doc([cell, ok_cell("cnn", seed=9)])
    p50s = sorted(r["metrics"]["latency_ms"]["p50"] for r in cell["repeats"])
    spread = f"3: {F.sig(p50s[0])}\u2013{F.sig(p50s[-1])} ms"
    text = render_html([doc])
    summary = text[text.index('id="summary"'):text.index('id="charts"')]
    assert "processes: p50 range (ms)" in summary and spread in summary
    md = markdown_summary([doc])
    head = next(ln for ln in md.splitlines() if ln.startswith("| cell |"))
    assert "processes: p50 range" in head
    row = next(ln for ln in md.splitlines() if ln.startswith(f"| {cell['id']} |"))
    assert spread in row and ", CV " in row
    one = next(ln for ln in md.splitlines() if ln.startswith(f"| {doc['cells'][1]['id']} |"))
    assert "| 1 |" in one  # a cell measured in one process says so
    console = Console(record=True, width=250, color_system=None)
    console.print(rich_summary_table(doc))
    assert spread in console.export_text()
    # the throughput bar's error bar is the range of the processes' own sustained throughputs
    thr = throughput_figure([doc])["data"][0]
    per_process = [r["metrics"]["throughput_per_s"] for r in cell["repeats"]]
    assert thr["error_x"]["array"][0] == pytest.approx(max(per_process) - cell["metrics"]["throughput_per_s"])
    assert thr["error_x"]["arrayminus"][0] == pytest.approx(cell["metrics"]["throughput_per_s"] - min(per_process))
    assert "range over 3 processes" in thr["customdata"][0][3]
    # without repeats, no processes column at all
    assert "processes" not in markdown_summary([standard_doc()])


def test_one_contended_process_of_a_repeated_cell_is_named() -> None:
    cell = repeated_cell([1.0, 1.6, 1.05], contended={1: 1.7})
    doc = make_doc([cell])
    md = markdown_summary([doc])
    assert f"process 2 of 3: {CONTENDED_EVIDENCE}" in md
    assert "1 of 1 measured cells were contended" in md


def test_throughput_columns_say_sustained_and_mark_older_p50_values() -> None:
    doc = standard_doc()
    text = render_html([doc])
    assert "sustained throughput (samples/s)" in text and "Sustained throughput per cell" in text
    assert "(p50)" not in text
    md = markdown_summary([doc])
    assert "sustained samples/s" in md and "(p50)" not in md
    old = standard_doc()
    old["cells"][0]["metrics"].pop("throughput_p50_per_s")  # a result written before sustained throughput
    md_old = markdown_summary([old])
    row = next(ln for ln in md_old.splitlines() if ln.startswith(f"| {old['cells'][0]['id']} |"))
    assert "(p50)" in row and "batch / median latency" in md_old
    assert "(p50)" in render_html([old])


def machine_runs(n: int, latest_ms: float, latest_contended: float | None) -> list[dict[str, Any]]:
    """``n`` runs of one machine at 1 ms per step, the latest at ``latest_ms``."""
    runs = []
    for i in range(n):
        last = i == n - 1
        c = ok_cell("mlp", seed=100 + i, center_ms=latest_ms if last else 1.0 + 0.005 * (i % 3), n=80,
                    contended_cores=latest_contended if last else None)  # fmt: skip
        runs.append(make_doc([c], run_id=f"2026111{i}T000000Z-m", created=f"2026-11-1{i}T00:00:00Z"))
    return runs


def test_no_regression_verdict_from_a_contended_cell() -> None:
    from harness.reports.markdown import render_markdown as markdown_extra
    from harness.reports.sections import regressions_section

    clean = regressions_section(machine_runs(5, 1.5, None))[0]
    assert "1 regression(s)" in clean  # the same numbers, uncontended, are a regression
    html_part, figs = regressions_section(machine_runs(5, 1.5, 1.7))
    # the one cell of the latest run was contended: nothing was tested, so no "no regression" claim
    assert "no verdict: no cell could be tested" in html_part and "regression(s)" not in html_part
    assert "no regression" not in html_part
    assert "1 contended" in html_part and 'class="badge contended"' in html_part
    assert "inconclusive" in html_part and CONTENDED_EVIDENCE in html.unescape(html_part)
    assert figs[0][1]["data"][0]["name"] == "inconclusive"
    assert "+ is slower" in figs[0][1]["layout"]["title"]["text"]  # from the table's direction of latency_ms
    md = markdown_extra(machine_runs(5, 1.5, 1.7))
    assert "no verdict: none of the 1 cell(s) could be tested; 1 contended cell(s) in the latest run: no verdict" in md
    assert f"**inconclusive: contended** ({CONTENDED_EVIDENCE})" in md


def test_a_contended_earlier_run_does_not_silence_the_regressions_check() -> None:
    from harness.reports.sections import regressions_section

    runs = machine_runs(6, 1.5, None)
    runs[2]["cells"][0]["timing"]["contention"] = contention_record(1.7)  # one busy night in the baseline
    html_part, _ = regressions_section(runs)
    assert "1 regression(s)" in html_part  # judged on the 4 clean earlier runs
    assert "1 contended earlier measurement(s) left out of the baseline" in html_part


# ----------------------------------------------------------------------------- bounded cost (issue 13)


def _chart_payload(text: str, div_id: str) -> dict[str, Any]:
    """The figure JSON the page hands to Plotly.newPlot for ``div_id``."""
    after = text.split(f'<div id="{div_id}"', 1)[1]
    payload = after.split("var f=", 1)[1].split(f';Plotly.newPlot("{div_id}"', 1)[0]
    return json.loads(payload)


def test_latency_chart_of_a_two_million_sample_cell_embeds_at_most_the_cap_and_says_how() -> None:
    import numpy as np

    doc = standard_doc()
    xs = np.random.default_rng(3).lognormal(0.0, 0.1, 2_000_000)
    doc["cells"][0]["samples_ms"] = xs.tolist()
    fig = latency_figure([doc])
    pts = fig["data"][0]["x"]
    assert len(pts) == 5_000  # harness.reports.html.LATENCY_POINTS_PER_CELL
    # a quantile sketch: sorted order statistics from the minimum to the maximum, evenly spaced in rank
    assert pts[0] == xs.min() and pts[-1] == xs.max() and pts == sorted(pts)
    assert abs(float(np.median(pts)) - float(np.median(xs))) < 0.002
    assert "showing 5,000 of 2,000,000 samples" in fig["note"] and "quantile sketch" in fig["note"]
    assert "showing 5,000 of 2,000,000 samples" in fig["data"][0]["hovertemplate"]
    assert fig["data"][1]["x"] == doc["cells"][1]["samples_ms"]  # an ordinary cell is drawn whole
    assert "showing" not in fig["data"][1]["hovertemplate"]
    text = render_html([doc])
    embedded = _chart_payload(text, "chart-latency")["data"]
    assert [len(t["x"]) for t in embedded] == [5_000, len(doc["cells"][1]["samples_ms"])]
    caption = text.split('<div id="chart-latency"', 1)[1].split("</figcaption>", 1)[0]
    assert "showing 5,000 of 2,000,000 samples" in caption and "order statistics at evenly spaced ranks" in caption
    assert len(text) < 12_000_000  # plotly.js (~4.8 MB) + the page; the 2,000,000 samples alone are ~40 MB


def test_latency_chart_points_have_a_total_budget_that_ordinary_reports_never_reach() -> None:
    from harness.reports.figures import LATENCY_POINTS_MIN, LATENCY_POINTS_PER_CELL, LATENCY_POINTS_TOTAL, latency_point_cap

    assert LATENCY_POINTS_TOTAL == 1_000_000
    assert latency_point_cap([2_000] * 500) == LATENCY_POINTS_PER_CELL  # 10 runs x 50 cells x 2,000 samples: all drawn
    assert latency_point_cap([3_000] * 500) == 2_000  # 1,500,000 points: each cell gets 1/500 of the budget
    assert latency_point_cap([4_000] * 2_000) == 500  # 2,000 such cells share the budget
    assert latency_point_cap([4_000] * 100_000) == LATENCY_POINTS_MIN
    many = make_doc([ok_cell(f"w{k}", seed=k, n=300) for k in range(4)])
    fig = latency_figure([many])
    assert [t["x"] for t in fig["data"]] == [c["samples_ms"] for c in many["cells"]] and "note" not in fig
