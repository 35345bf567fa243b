"""The report's generation section (reports/sections/generation.py).

One real ``harness run`` of a tiny GPT-2 generate cell (a module fixture; ~10 s on a
quiet machine) gives the stored format; synthetic variants of that cell (other models,
batch sizes, prompt lengths, runs, missing values) give sweeps with known numbers.
Checked: the section is drawn for generate cells only; the embedded plotly figures
hold exactly the expected points (TTFT vs prompt length per model x batch, TPOT vs
batch per model x prompt, tokens/s vs TPOT labelled by batch; the most recent run per
cell); the tables' values are the cells' stored metrics; n/a carries its reason; the
Markdown block.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from harness.reports import formatting as F
from harness.reports.api import ReportContext
from harness.reports.html import render_html
from harness.reports.loader import load_sections
from harness.reports.markdown import render_markdown
from harness.reports.sections import generation as GS
from tests.conftest import run_cli
from tests.test_report import PAYLOAD, failed_cell, make_doc, standard_doc

pytest.importorskip("torch")
pytest.importorskip("transformers")

SLO = "ttft_ms=60000,tpot_ms=0.001"  # every TTFT meets it, no TPOT does: goodput 0 on any machine


@pytest.fixture(scope="module")
def real_doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("genrep")
    proc = run_cli(["run", "-w", "hf:gpt2@tiny", "--mode", "generate", "--prompt-len", "8", "--gen-len", "4",
                    "--batch-size", "1", "--min-time", "0.05", "--slo", SLO, "--out", str(d), "--no-progress"],
                   timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (f,) = d.glob("*.json")
    doc = json.loads(f.read_text())
    (cell,) = doc["cells"]
    assert cell["status"] == "ok", cell.get("error") or cell.get("reason")
    return doc


def _cell(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["cells"][0]


def variant(doc: dict[str, Any], workload: str = "hf:gpt2", batch: int = 1, prompt: int = 8, ttft: float = 10.0,
            tpot: float = 2.0, tps: float = 100.0) -> dict[str, Any]:
    """The real cell as another (workload, batch, prompt) with known times: TTFT p50/p90/p99 =
    ttft x 1 / 1.2 / 1.5, TPOT p50/p90 = tpot x 1 / 1.1, output tokens/s = tps."""
    c = copy.deepcopy(_cell(doc))
    c["spec"].update(workload=workload, batch_size=batch, prompt_len=prompt)
    c["id"] = f"{workload}/torch/cpu/fp32/generate/bs{batch}/tiny/p{prompt}g4"
    g = c["metrics"]["generation"]
    g.update(batch_size=batch, prompt_len=prompt, output_tokens_per_s=tps)
    g["ttft_ms"].update(p50=ttft, p90=ttft * 1.2, p99=ttft * 1.5)
    g["tpot_ms"].update(p50=tpot, p90=tpot * 1.1, p99=tpot * 1.3)
    return c


def sweep_doc(real: dict[str, Any], run_id: str = "20261123T110000Z-testhost-ab12cd",
              created: str = "2026-11-23T11:00:00Z", k: float = 1.0) -> dict[str, Any]:
    """2 models x batch 1, 2 x prompt 8, 16; ttft = k x (prompt x batch / 8 + model offset)."""
    cells = []
    for off, w in ((0.0, "hf:gpt2"), (100.0, "hf:llama-1b")):
        for b in (1, 2):
            for p in (8, 16):
                cells.append(variant(real, w, b, p, ttft=k * (p * b / 8 + off), tpot=k * (b + off / 10),
                                     tps=k * (50 * b + off + p)))
    return make_doc(cells, run_id=run_id, created=created)


def figures_of(html: str) -> dict[str, dict[str, Any]]:
    """div id -> the plotly figure embedded in the page, for the generation charts."""
    out = {}
    for payload, div in re.findall(r'var f=(\{.*?\});Plotly\.newPlot\("(chart-generation-[a-z]+)"', html):
        out[div] = json.loads(payload)
    return out


def section_html(html: str) -> str:
    m = re.search(r'<section id="generation">.*?</section>', html, re.S)
    assert m, "no generation section"
    return m.group(0)


def main_traces(fig: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in fig["data"] if t.get("showlegend", True)}


# ----------------------------------------------------------------------------- shown or not


def test_section_is_drawn_for_generate_cells_only(real_doc: dict[str, Any]) -> None:
    html = render_html([real_doc])
    body = section_html(html)
    assert "<h2>Generation</h2>" in body
    assert set(figures_of(html)) == {"chart-generation-ttft", "chart-generation-tpot", "chart-generation-curve"}
    assert "#### Generation" in render_markdown([real_doc])
    plain = standard_doc()  # inference/training cells only
    assert GS.GenerationSection().data(ReportContext([plain])) is None
    assert 'id="generation"' not in render_html([plain]) and "#### Generation" not in render_markdown([plain])
    # registered after the charts
    names = [s.name for s in load_sections()]
    assert names.index("generation") == names.index("charts") + 1


def test_generate_cells_that_did_not_run_are_named_without_charts(real_doc: dict[str, Any]) -> None:
    bad = failed_cell("hf:gpt2", message="CUDA out of memory")
    bad["spec"].update(mode="generate", prompt_len=8, gen_len=4)
    bad["id"] = "hf:gpt2/torch/cpu/fp32/generate/bs32/tiny/p8g4"
    html = render_html([make_doc([bad])])
    body = section_html(html)
    assert "1 generate cell did not run" in body and "CUDA out of memory" in body and "hf:gpt2/torch" in body
    assert figures_of(html) == {}
    assert "did not run" in render_markdown([make_doc([bad])])


# ----------------------------------------------------------------------------- the table: stored values


def test_table_values_are_the_cells_stored_metrics(real_doc: dict[str, Any]) -> None:
    cell = _cell(real_doc)
    g = cell["metrics"]["generation"]
    data = GS.generation_rows([real_doc])
    (row,) = data.rows
    expected = {k: GS._get(g, k) for k in GS.VALUE_KEYS}
    assert all(isinstance(v, (int, float)) for v in expected.values()), expected  # a real run fills every one
    assert row.values == pytest.approx(expected)
    assert (row.model, row.batch, row.prompt, row.gen) == ("hf:gpt2@tiny", 1, 8, 4)
    assert row.slo == {"ttft_ms": 60000.0, "tpot_ms": 0.001}
    assert row.values["goodput.requests_meeting_slo"] == 0.0  # the SLO above: no request meets it
    # the table cells: sort keys are the stored numbers, the text their formatting in the declared unit
    heads, rows, first = GS.latency_table(data)
    assert heads[first:] == ["TTFT p50 (ms)", "TTFT p90 (ms)", "TTFT p99 (ms)", "TPOT p50 (ms)", "TPOT p90 (ms)",
                             "ITL p99 (ms)", "e2e p50 (ms)"]  # fmt: skip
    assert [c[1] for c in rows[0][first:]] == [GS._get(g, k) for k in GS.LATENCY_COLS]
    heads, rows, first = GS.throughput_table(data)
    assert heads[first:first + 2] == ["prefill (tokens/s)", "output (tokens/s)"]
    vals = dict(zip(heads, rows[0]))
    assert vals["prefill (tokens/s)"][1] == g["prefill_tokens_per_s"]
    assert vals["output (tokens/s)"][1] == g["output_tokens_per_s"]
    kv = g["kv_cache"]
    assert str(vals["KV measured / config"][0]).startswith(
        f"{F.bytes_human(kv['bytes_measured'])} / {F.bytes_human(kv['bytes_from_config'])}")
    assert vals["prefill FLOP/s"][0] == F.metric_value("generation.prefill_achieved_flops_per_s",
                                                       g["prefill_achieved_flops_per_s"])
    assert vals["prefill FLOP/s"][0].endswith("FLOP/s") and vals["KV measured / config"][0].count("B") >= 2
    # and in the page
    body = section_html(render_html([real_doc]))
    for k in GS.LATENCY_COLS:
        assert f'data-sort="{GS._get(g, k)}"' in body and F.sig(GS._get(g, k)) in body
    assert f'data-sort="{g["output_tokens_per_s"]}"' in body
    assert "SLO (goodput column): ttft \u2264 60,000 ms, tpot \u2264 0.00100 ms" in body
    assert "0% \u00b7 0 tokens/s" in body


def test_missing_values_are_na_with_their_reason(real_doc: dict[str, Any]) -> None:
    no_slo = variant(real_doc, prompt=16)
    del no_slo["metrics"]["generation"]["goodput"], no_slo["metrics"]["generation"]["slo"]
    no_flops = variant(real_doc, batch=2)
    for k in ("prefill_achieved_flops_per_s", "decode_achieved_flops_per_s", "prefill_flops", "decode_flops"):
        no_flops["metrics"]["generation"].pop(k)
    no_flops["unavailable"]["generation.prefill_flops"] = "the FLOP counter failed: boom"
    bare = variant(real_doc, batch=4)
    del bare["metrics"]["generation"]
    doc = make_doc([no_slo, no_flops, bare])
    rows = {r.batch: r for r in GS.generation_rows([doc]).rows}
    assert rows[1].reasons["goodput.requests_meeting_slo"] == GS.NO_SLO
    assert rows[2].reasons["prefill_achieved_flops_per_s"] == "the FLOP counter failed: boom"
    assert rows[2].values["ttft_ms.p50"] == no_flops["metrics"]["generation"]["ttft_ms"]["p50"]
    assert set(rows[4].reasons) == set(GS.VALUE_KEYS)
    assert set(rows[4].reasons.values()) == {GS.NO_GENERATION}
    html = render_html([doc])
    body = section_html(html)
    assert 'title="the FLOP counter failed: boom"' in body
    assert f'title="{GS.NO_GENERATION}"' in body
    assert f'title="{GS.NO_SLO}"' in body
    # when no cell has goodput for one reason, the column leaves the table for one line with it
    assert "goodput</th>" in body  # the reasons differ: the column stays
    lone = make_doc([no_slo, copy.deepcopy(no_slo)])
    lone["cells"][1]["spec"]["batch_size"] = 8
    one = section_html(render_html([lone]))
    assert "goodput</th>" not in one and "n/a</span> in all 2 cells: goodput. Reason:" in one
    assert "harness run --slo ttft_ms=...,tpot_ms=... reports goodput" in one
    md = render_markdown([doc])
    assert "the FLOP counter failed: boom" in md and "no SLO was set for this run" in md


# ----------------------------------------------------------------------------- the figures: the right points


def test_figures_hold_the_expected_points(real_doc: dict[str, Any]) -> None:
    doc = sweep_doc(real_doc)
    figs = figures_of(render_html([doc]))
    ttft = main_traces(figs["chart-generation-ttft"])
    assert set(ttft) == {f"hf:{m}@tiny \u00b7 batch {b}" for m in ("gpt2", "llama-1b") for b in (1, 2)}
    for (m, off) in (("gpt2", 0.0), ("llama-1b", 100.0)):
        for b in (1, 2):
            t = ttft[f"hf:{m}@tiny \u00b7 batch {b}"]
            y = [p * b / 8 + off for p in (8, 16)]
            assert t["x"] == [8, 16] and t["y"] == pytest.approx(y)
            assert t["error_y"]["array"] == pytest.approx([v * 0.5 for v in y])  # whisker to p99 = 1.5 x p50
            (p90,) = [u for u in figs["chart-generation-ttft"]["data"]
                      if u.get("legendgroup") == t["legendgroup"] and u is not t and not u.get("showlegend", True)]
            assert p90["y"] == pytest.approx([v * 1.2 for v in y])
    tpot = main_traces(figs["chart-generation-tpot"])
    assert set(tpot) == {f"hf:{m}@tiny \u00b7 prompt {p}" for m in ("gpt2", "llama-1b") for p in (8, 16)}
    t = tpot["hf:llama-1b@tiny \u00b7 prompt 16"]
    assert t["x"] == [1, 2] and t["y"] == pytest.approx([11.0, 12.0])
    assert t["error_y"]["array"] == pytest.approx([1.1, 1.2])  # p90 = 1.1 x p50
    curve = main_traces(figs["chart-generation-curve"])
    c = curve["hf:gpt2@tiny \u00b7 prompt 16"]
    assert c["x"] == pytest.approx([66.0, 116.0]) and c["y"] == pytest.approx([1.0, 2.0])
    assert c["text"] == ["bs1", "bs2"]
    layouts = {k: (f["layout"]["xaxis"]["title"]["text"], f["layout"]["yaxis"]["title"]["text"]) for k, f in figs.items()}
    assert layouts == {"chart-generation-ttft": ("prompt length (tokens)", "TTFT (ms)"),
                       "chart-generation-tpot": ("batch size (sequences)", "TPOT (ms)"),
                       "chart-generation-curve": ("output throughput (tokens/s, whole batch)", "TPOT p50 (ms)")}


def test_charts_draw_the_latest_run_the_table_every_run(real_doc: dict[str, Any]) -> None:
    old = sweep_doc(real_doc, "20261123T110000Z-testhost-ab12cd", "2026-11-23T11:00:00Z", k=1.0)
    new = sweep_doc(real_doc, "20261124T110000Z-testhost-cd34ef", "2026-11-24T11:00:00Z", k=3.0)
    html = render_html([new, old])
    t = main_traces(figures_of(html)["chart-generation-ttft"])["hf:gpt2@tiny \u00b7 batch 1"]
    assert t["y"] == pytest.approx([3.0, 6.0])
    data = GS.generation_rows([new, old])
    assert len(data.rows) == 16 and data.multi_run and not data.multi_machine
    heads, rows, first = GS.latency_table(data)
    assert heads[:first] == ["model", "run", "batch", "prompt", "gen"]
    body = section_html(html)
    assert "20261123T110000Z-testhost-ab12cd" in body and "20261124T110000Z-testhost-cd34ef" in body
    assert "the most recent run is drawn" in body


def test_machines_are_told_apart(real_doc: dict[str, Any]) -> None:
    a = make_doc([variant(real_doc, ttft=5.0)], host="alpha")
    b = make_doc([variant(real_doc, ttft=7.0)], host="beta", run_id="20261123T120000Z-beta-000001")
    b["environment"]["fingerprint"] = "other"
    a["environment"]["fingerprint"] = "one"
    ttft = main_traces(figures_of(render_html([a, b]))["chart-generation-ttft"])
    assert {n: t["y"] for n, t in ttft.items()} == {"hf:gpt2@tiny \u00b7 batch 1 \u00b7 alpha": [5.0],
                                                    "hf:gpt2@tiny \u00b7 batch 1 \u00b7 beta": [7.0]}
    heads, _, _ = GS.latency_table(GS.generation_rows([a, b]))
    assert heads[:3] == ["model", "machine", "run"]


def test_strings_from_files_are_escaped(real_doc: dict[str, Any]) -> None:
    doc = make_doc([variant(real_doc, workload=PAYLOAD)], host=PAYLOAD)
    html = render_html([doc])
    body = section_html(html)
    assert "<script>alert" not in body.split("<script>(function")[0]
    for fig in figures_of(html).values():
        assert "<script" not in json.dumps(fig)  # plotly strings are HTML-escaped
    assert "<script>" not in render_markdown([doc]).split("#### Generation")[1].split("####")[0]


# ----------------------------------------------------------------------------- Markdown


def test_markdown_block(real_doc: dict[str, Any]) -> None:
    g = _cell(real_doc)["metrics"]["generation"]
    md = render_markdown([real_doc])
    block = md.split("#### Generation")[1].split("\n####")[0]
    lines = block.splitlines()
    head = next(ln for ln in lines if ln.startswith("| model"))
    assert head.split(" | ")[1:5] == ["batch", "prompt", "gen", "TTFT p50/p90/p99 (ms)"]
    (row,) = [ln for ln in lines if ln.startswith("| hf:gpt2@tiny")]
    cols = [c.strip() for c in row.strip("|").split("|")]
    assert cols[1:4] == ["1", "8", "4"]
    assert cols[4] == " / ".join(F.sig(g["ttft_ms"][p]) for p in ("p50", "p90", "p99"))
    assert cols[5] == f"{F.sig(g['tpot_ms']['p50'])} / {F.sig(g['tpot_ms']['p90'])}"
    assert cols[9] == F.throughput(g["output_tokens_per_s"])
    assert cols[10].startswith("0% (0 tokens/s) at ttft \u2264 60,000 ms")
    assert cols[11] == f"{F.bytes_human(g['kv_cache']['bytes_measured'])} / " \
                       f"{F.bytes_human(g['kv_cache']['bytes_from_config'])}"
    assert cols[12].endswith("FLOP/s")
    assert "Machine: " in block
