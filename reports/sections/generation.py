"""Generation (``mode: generate``): what LLM users and buyers read.

From each ok generate cell's ``metrics.generation`` (see :mod:`harness.core.generation`):
time to first token against prompt length, time per output token against batch size,
and the latency-throughput curve (output tokens/s against TPOT, one point per batch
size), per model and machine; and one table row per cell with the percentiles,
throughputs, SLO goodput, the KV cache (measured against the config's size) and the
prefill/decode FLOP/s. The rows are built once (:func:`generation_rows`) and drawn as
HTML and Markdown; the charts' series come from :func:`chart_series`, which draws the
most recent run of each (machine, model, batch, prompt length, generated length).
Nothing is recomputed here: every number is the cell's stored value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from harness.reports import cells as C
from harness.reports import formatting as F
from harness.reports.sections.common import (COLORS, M, Markup, ReportContext, ReportSection, Rendered, layout, na, pe,
                                             single_reason, table, all_unavailable_line)
from harness.reports.tables import md_escape
from harness.reports.templating import cat, render

G = "generation."
# the values a row holds, by their declared metric name (harness.core.metrics)
TIME_KEYS = ("ttft_ms.p50", "ttft_ms.p90", "ttft_ms.p99", "tpot_ms.p50", "tpot_ms.p90", "itl_ms.p99", "e2e_ms.p50")
VALUE_KEYS = TIME_KEYS + (
    "prefill_tokens_per_s", "output_tokens_per_s", "goodput.requests_meeting_slo", "goodput.output_tokens_per_s",
    "kv_cache.bytes_measured", "kv_cache.bytes_from_config", "prefill_achieved_flops_per_s",
    "decode_achieved_flops_per_s",
)  # fmt: skip
NO_SLO = "no SLO was set for this run (harness run --slo ttft_ms=...,tpot_ms=... reports goodput)"
NO_GENERATION = "the cell stored no metrics.generation"
REASONS = {
    "goodput.requests_meeting_slo": NO_SLO,
    "goodput.output_tokens_per_s": NO_SLO,
    "kv_cache.bytes_measured": "the key/value tensors of the cache could not be read after the request",
    "kv_cache.bytes_from_config": "the model config lacks layers / attention heads / hidden size (or the cache's "
                                  "element size is unknown)",
    "prefill_achieved_flops_per_s": "the FLOP counter did not split this cell's request into prefill and decode",
    "decode_achieved_flops_per_s": "the FLOP counter did not split this cell's request into prefill and decode",
}  # fmt: skip


@dataclass(frozen=True)
class GenRow:
    """One ok generate cell as both renderings show it (values as stored)."""

    run_id: str
    when: tuple[str, str]  # (created, run_id): the most recent wins in the charts
    cell_id: str
    machine: str  # environment fingerprint
    machine_label: str  # host (plus the fingerprint's start when a host has several)
    machine_detail: str  # host · CPU or GPU model
    model: str  # workload@size (+ backend/device/variant where they differ between the cells)
    batch: int
    prompt: int
    gen: int
    values: dict[str, float | None]  # VALUE_KEYS -> the stored number, None when missing
    reasons: dict[str, str]  # VALUE_KEYS -> why there is no number
    slo: dict[str, float] = field(default_factory=dict)
    contended: str | None = None
    requests_timed: Any = None

    def v(self, key: str) -> float | None:
        return self.values.get(key)


@dataclass
class GenData:
    rows: list[GenRow]
    not_ok: list[tuple[str, str, str]]  # (cell id, status, reason) of generate cells that did not run
    multi_run: bool
    multi_machine: bool


def _get(d: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(d, Mapping):
            return None
        d = d.get(part)
    return d


def _int(x: Any) -> int:
    return int(x) if F.is_number(x) else 0


def generation_rows(runs: list[dict[str, Any]]) -> GenData | None:
    """The generate cells of ``runs``: ok ones as :class:`GenRow` (sorted by model,
    machine, batch, prompt, generated length, run), the others as (id, status, reason);
    None when no cell is a generate cell."""
    from harness.analysis.compare import fingerprint
    from harness.analysis.procurement import machines_of

    picked: list[tuple[dict[str, Any], dict[str, Any]]] = []
    not_ok: list[tuple[str, str, str]] = []
    for run, cell in C.iter_cells(runs):
        spec = cell.get("spec") if isinstance(cell.get("spec"), Mapping) else {}
        if spec.get("mode") != "generate":
            continue
        if C.status(cell) == "ok":
            picked.append((run, cell))
        else:
            not_ok.append((C.cell_id(cell), C.status(cell), C.reason_text(cell)))
    if not picked and not not_ok:
        return None
    details = machines_of([r for r, _ in picked]) if picked else {}
    hosts: dict[str, set[str]] = {}
    for run, _ in picked:
        env = run.get("environment") if isinstance(run.get("environment"), Mapping) else {}
        hosts.setdefault(str(env.get("host") or "?"), set()).add(fingerprint(run))
    specs = [c.get("spec") or {} for _, c in picked]
    extra = [k for k in ("backend", "device", "variant") if len({str(s.get(k)) for s in specs}) > 1]
    rows = []
    for (run, cell), spec in zip(picked, specs):
        fp = fingerprint(run)
        host = next(h for h, fps in hosts.items() if fp in fps)
        gen = C.metric(cell, "generation")
        gen = gen if isinstance(gen, Mapping) else {}
        values: dict[str, float | None] = {}
        reasons: dict[str, str] = {}
        stored_reasons = cell.get("unavailable") if isinstance(cell.get("unavailable"), Mapping) else {}
        for key in VALUE_KEYS:
            v = _get(gen, key)
            values[key] = float(v) if F.is_number(v) else None
            if values[key] is None:
                why = stored_reasons.get(G + key)
                if not isinstance(why, str) and key.endswith("flops_per_s"):
                    why = stored_reasons.get(G + "prefill_flops")
                reasons[key] = (why if isinstance(why, str) and why else
                                NO_GENERATION if not gen else REASONS.get(key, "not recorded by this run"))
        slo = gen.get("slo") if isinstance(gen.get("slo"), Mapping) else {}
        model = f"{spec.get('workload')}@{spec.get('size')}" + "".join(f"/{spec.get(k)}" for k in extra)
        rows.append(GenRow(
            run_id=str(run.get("run_id") or "?"), when=(str(run.get("created") or ""), str(run.get("run_id") or "")),
            cell_id=C.cell_id(cell), machine=fp,
            machine_label=host if len(hosts[host]) == 1 else f"{host} ({fp[:8]})",
            machine_detail=details.get(fp, host), model=model, batch=_int(spec.get("batch_size")),
            prompt=_int(spec.get("prompt_len", gen.get("prompt_len"))), gen=_int(spec.get("gen_len", gen.get("gen_len"))),
            values=values, reasons=reasons, slo={str(k): v for k, v in slo.items() if F.is_number(v)},
            contended=C.contention(cell), requests_timed=gen.get("requests_timed"),
        ))  # fmt: skip
    rows.sort(key=lambda r: (r.model, r.machine_label, r.batch, r.prompt, r.gen, r.when))
    return GenData(rows=rows, not_ok=not_ok, multi_run=len({r.run_id for r in rows}) > 1,
                   multi_machine=len({r.machine for r in rows}) > 1)


# ----------------------------------------------------------------------------- charts


@dataclass
class Series:
    """One line of a chart: its name and points (x, y, the row drawn there)."""

    name: str
    points: list[tuple[float, float, GenRow]]


def latest_rows(rows: list[GenRow]) -> list[GenRow]:
    """One row per (machine, model, batch, prompt, generated): the most recent run's."""
    best: dict[tuple[Any, ...], GenRow] = {}
    for r in rows:
        k = (r.machine, r.model, r.batch, r.prompt, r.gen)
        if k not in best or r.when >= best[k].when:
            best[k] = r
    return list(best.values())


def chart_series(data: GenData) -> dict[str, list[Series]]:
    """The series of the three charts: ``ttft`` (x prompt length, y TTFT p50; one line
    per model x batch x machine), ``tpot`` (x batch, y TPOT p50; per model x prompt
    length x machine) and ``curve`` (x output tokens/s, y TPOT p50, one point per
    batch size; per model x prompt length x machine). The generated length is part of
    a line's name where the cells differ in it."""
    rows = latest_rows(data.rows)
    gens = len({r.gen for r in rows}) > 1

    def name(r: GenRow, *parts: str) -> str:
        out = [r.model, *parts]
        if gens:
            out.append(f"gen {r.gen}")
        if data.multi_machine:
            out.append(r.machine_label)
        return " · ".join(out)

    def build(key: Any, x: Any, y: str, sort: Any) -> list[Series]:
        groups: dict[str, list[tuple[float, float, GenRow]]] = {}
        for r in sorted(rows, key=lambda r: (r.model, r.machine_label, r.gen, r.prompt, r.batch)):
            xv, yv = x(r), r.v(y)
            if xv is None or yv is None:
                continue
            groups.setdefault(key(r), []).append((float(xv), yv, r))
        return [Series(n, sorted(p, key=sort)) for n, p in groups.items()]

    return {
        "ttft": build(lambda r: name(r, f"batch {r.batch}"), lambda r: r.prompt, "ttft_ms.p50", lambda p: p[0]),
        "tpot": build(lambda r: name(r, f"prompt {r.prompt}"), lambda r: r.batch, "tpot_ms.p50", lambda p: p[0]),
        "curve": build(lambda r: name(r, f"prompt {r.prompt}"), lambda r: r.v("output_tokens_per_s"), "tpot_ms.p50",
                       lambda p: p[2].batch),
    }


def _hover_row(r: GenRow) -> list[str]:
    s = lambda k: F.sig(r.v(k)) or "n/a"  # noqa: E731
    return [pe(r.model), pe(r.machine_detail), str(r.batch), str(r.prompt), str(r.gen), s("ttft_ms.p50"),
            s("ttft_ms.p90"), s("ttft_ms.p99"), s("tpot_ms.p50"), s("tpot_ms.p90"), s("output_tokens_per_s"),
            "<br>\u26a0 contended: " + pe(r.contended) if r.contended else ""]  # fmt: skip


HOVER_HEAD = ("%{customdata[0]} on %{customdata[1]}<br>batch %{customdata[2]}, prompt %{customdata[3]} tokens, "
              "%{customdata[4]} generated<br>")
HOVER = {
    "ttft": HOVER_HEAD + "TTFT p50 %{customdata[5]} ms, p90 %{customdata[6]} ms, p99 %{customdata[7]} ms"
                         "%{customdata[11]}<extra></extra>",
    "tpot": HOVER_HEAD + "TPOT p50 %{customdata[8]} ms, p90 %{customdata[9]} ms%{customdata[11]}<extra></extra>",
    "curve": HOVER_HEAD + "%{customdata[10]} output tokens/s at TPOT p50 %{customdata[8]} ms"
                          "%{customdata[11]}<extra></extra>",
}  # fmt: skip


def _traces(kind: str, series: list[Series]) -> list[dict[str, Any]]:
    traces = []
    upper = {"ttft": "ttft_ms.p99", "tpot": "tpot_ms.p90"}.get(kind)
    for i, s in enumerate(series):
        color = COLORS[i % len(COLORS)]
        xs, ys = [p[0] for p in s.points], [p[1] for p in s.points]
        tr: dict[str, Any] = {
            "type": "scatter", "mode": "lines+markers", "name": pe(s.name), "x": xs, "y": ys, "legendgroup": f"g{i}",
            "line": {"color": color}, "marker": {"color": color, "size": 8},
            "customdata": [_hover_row(p[2]) for p in s.points], "hovertemplate": HOVER[kind],
        }  # fmt: skip
        if upper:
            hi = [p[2].v(upper) for p in s.points]
            tr["error_y"] = {"type": "data", "symmetric": False, "color": color, "thickness": 1.2, "width": 5,
                             "array": [max(0.0, h - y) if h is not None else 0.0 for h, y in zip(hi, ys)],
                             "arrayminus": [0.0] * len(ys)}  # fmt: skip
        if kind == "curve":
            tr["mode"] = "lines+markers+text"
            tr["text"] = [f"bs{p[2].batch}" for p in s.points]
            tr["textposition"] = "top center" if i % 2 == 0 else "bottom center"  # neighbours' labels apart
            tr["textfont"] = {"color": color, "size": 11}
        traces.append(tr)
        if kind == "ttft":  # p90 as an open marker on the p99 whisker
            p90 = [(x, p[2].v("ttft_ms.p90")) for x, p in zip(xs, s.points) if p[2].v("ttft_ms.p90") is not None]
            if p90:
                traces.append({
                    "type": "scatter", "mode": "markers", "name": pe(f"{s.name} p90"), "legendgroup": f"g{i}",
                    "showlegend": False, "x": [a for a, _ in p90], "y": [b for _, b in p90], "hoverinfo": "skip",
                    "marker": {"symbol": "line-ew-open", "size": 12, "color": color, "line": {"width": 2, "color": color}},
                })  # fmt: skip
    return traces


def _axis_values(values: list[float]) -> dict[str, Any]:
    """An x axis over a few integer settings (prompt lengths, batch sizes): log2 when
    they span a factor of 8 or more, ticks at the measured values."""
    vals = sorted(set(values))
    ax: dict[str, Any] = {"tickmode": "array", "tickvals": vals, "ticktext": [f"{v:g}" for v in vals]}
    if vals and vals[0] > 0 and vals[-1] / vals[0] >= 8:
        ax["type"] = "log"
    return ax


def figures(data: GenData) -> list[tuple[str, dict[str, Any], str]]:
    """The plotly figures (div id, figure, caption) of the section."""
    series = chart_series(data)
    one_machine = "" if data.multi_machine else f" Machine: {data.rows[0].machine_detail}." if data.rows else ""
    latest = (" Where several runs measured the same cell on one machine, the most recent run is drawn "
              "(the table lists every run)." if data.multi_run else "")  # fmt: skip
    tpot_unit = F.unit_of(G + "tpot_ms.p50")
    tok_unit = F.unit_of(G + "output_tokens_per_s")
    out = []
    if series["ttft"]:
        lay = layout("Time to first token vs prompt length", "prompt length (tokens)",
                     f"TTFT ({F.unit_of(G + 'ttft_ms.p50')})")
        lay["xaxis"].update(_axis_values([p[0] for s in series["ttft"] for p in s.points]))
        lay["yaxis"]["rangemode"] = "tozero"
        out.append(("chart-generation-ttft", {"data": _traces("ttft", series["ttft"]), "layout": lay},
                    "Time to first token (the prefill: one forward over the prompt) of each request, one line per model "
                    "x batch size: marker = p50, open tick = p90, whisker top = p99 over the timed requests. Hover for "
                    "values in ms." + one_machine + latest))  # fmt: skip
    if series["tpot"]:
        lay = layout("Time per output token vs batch size", "batch size (sequences)", f"TPOT ({tpot_unit})")
        lay["xaxis"].update(_axis_values([p[0] for s in series["tpot"] for p in s.points]))
        lay["yaxis"]["rangemode"] = "tozero"
        out.append(("chart-generation-tpot", {"data": _traces("tpot", series["tpot"]), "layout": lay},
                    "Time per output token after the first ((end-to-end - TTFT) / (generated - 1)) of each request, "
                    "one line per model x prompt length: marker = p50, whisker top = p90." + one_machine + latest))
    if series["curve"]:
        lay = layout("Latency-throughput: output tokens/s vs time per output token",
                     f"output throughput ({tok_unit}, whole batch)", f"TPOT p50 ({tpot_unit})")
        lay["xaxis"]["rangemode"] = "tozero"
        lay["yaxis"]["rangemode"] = "tozero"
        out.append(("chart-generation-curve", {"data": _traces("curve", series["curve"]), "layout": lay},
                    "Each point is one batch size (label bsN): x = output tokens/s of the batch (batch x generated / "
                    "median end-to-end time), y = median time per output token. Down and to the right is better; "
                    "moving along a line shows what a larger batch buys in throughput and costs in per-token latency."
                    + one_machine + latest))  # fmt: skip
    return out


# ----------------------------------------------------------------------------- table


def _num(r: GenRow, key: str, fmt: Any = None) -> tuple[Any, Any]:
    v = r.v(key)
    if v is None:
        return na(r.reasons.get(key)), ""
    return (fmt(v) if fmt else F.sig(v)), v


def _slo_text(slo: Mapping[str, float]) -> str:
    return ", ".join(f"{k.removesuffix('_ms')} \u2264 {F.metric_value(G + k, v) or F.sig(v)}" for k, v in slo.items())


def common_slo(rows: list[GenRow]) -> dict[str, float] | None:
    """The one SLO of every row that has goodput (None: none has, or they differ)."""
    slos = [r.slo for r in rows if r.v("goodput.requests_meeting_slo") is not None]
    return slos[0] if slos and all(x == slos[0] for x in slos) else None


def _goodput(r: GenRow, shared: bool) -> tuple[Any, Any]:
    share = r.v("goodput.requests_meeting_slo")
    if share is None:
        return na(r.reasons.get("goodput.requests_meeting_slo")), ""
    tps = F.metric_value(G + "goodput.output_tokens_per_s", r.v("goodput.output_tokens_per_s"))
    text = f"{F.percent(share)}" + (f" \u00b7 {tps}" if tps else "")
    if shared:  # the SLO is said once, above the tables
        return text, share
    return cat(text, M.br(), M.muted(_slo_text(r.slo), "the SLO: every objective must hold")), share


def _kv(r: GenRow) -> tuple[Any, Any]:
    """"measured / from config" (bytes), with a mark when they differ by more than 1%."""
    meas, conf = r.v("kv_cache.bytes_measured"), r.v("kv_cache.bytes_from_config")
    if meas is None and conf is None:
        why = [r.reasons.get("kv_cache.bytes_measured"), r.reasons.get("kv_cache.bytes_from_config")]
        return na(why[0] if why[0] == why[1] else f"measured: {why[0]}; from config: {why[1]}"), ""
    parts = [_num(r, "kv_cache.bytes_measured", F.bytes_human)[0], " / ",
             _num(r, "kv_cache.bytes_from_config", F.bytes_human)[0]]
    if meas is not None and conf is not None and conf > 0 and abs(meas / conf - 1) > 0.01:
        parts += [" ", M.badge(f"measured {meas / conf:.2f}x config", "warn",
                               "the measured cache differs from 2 x layers x KV heads x head dim x positions x batch "
                               "x bytes per element")]  # fmt: skip
    return cat(*parts), meas if meas is not None else ""


LATENCY_COLS = ("ttft_ms.p50", "ttft_ms.p90", "ttft_ms.p99", "tpot_ms.p50", "tpot_ms.p90", "itl_ms.p99", "e2e_ms.p50")


def _label_cells(r: GenRow, data: GenData) -> list[Any]:
    model = (cat(M.code(r.model), " ", M.badge("\u26a0", "contended", "contended: " + r.contended)) if r.contended
             else M.code(r.model))  # fmt: skip
    cells: list[Any] = [(model, r.model)]
    if data.multi_machine:
        cells.append((M.span(r.machine_label, r.machine_detail), r.machine_label))
    if data.multi_run:
        cells.append((M.code(r.run_id), r.run_id))
    return cells + [(r.batch, r.batch), (r.prompt, r.prompt), (r.gen, r.gen)]


def _label_heads(data: GenData) -> list[str]:
    """The label columns: machine and run only where the rows differ in them (one
    machine is named above the tables)."""
    return (["model"] + (["machine"] if data.multi_machine else []) + (["run"] if data.multi_run else [])
            + ["batch", "prompt", "gen"])  # fmt: skip


def _head(key: str) -> str:
    """A latency column's heading: the metric (TTFT p50) and its declared unit."""
    metric, stat = key.split(".")
    name = {"ttft_ms": "TTFT", "tpot_ms": "TPOT", "itl_ms": "ITL", "e2e_ms": "e2e"}[metric]
    return f"{name} {stat} ({F.unit_of(G + key)})"


def latency_table(data: GenData) -> tuple[list[str], list[list[Any]], int]:
    """Heads, rows (``(content, sort key)`` cells) and the number of label columns of
    the per-request latency table."""
    heads = _label_heads(data)
    first = len(heads)
    heads += [_head(k) for k in LATENCY_COLS]
    rows = [_label_cells(r, data) + [_num(r, k) for k in LATENCY_COLS] for r in data.rows]
    return heads, rows, first


def throughput_table(data: GenData) -> tuple[list[str], list[list[Any]], int]:
    """The same for throughput, goodput, KV cache and FLOP/s."""
    u = lambda k: F.unit_of(G + k)  # noqa: E731
    slo = common_slo(data.rows)
    heads = _label_heads(data)
    first = len(heads)
    heads += [f"prefill ({u('prefill_tokens_per_s')})", f"output ({u('output_tokens_per_s')})", "goodput",
              "KV measured / config", "prefill FLOP/s", "decode FLOP/s"]  # fmt: skip
    rows = []
    for r in data.rows:
        cells = _label_cells(r, data)
        cells += [_num(r, "prefill_tokens_per_s", F.throughput), _num(r, "output_tokens_per_s", F.throughput)]
        cells.append(_goodput(r, slo is not None))
        cells.append(_kv(r))
        cells += [_num(r, k, lambda v, k=k: F.metric_value(G + k, v))
                  for k in ("prefill_achieved_flops_per_s", "decode_achieved_flops_per_s")]
        rows.append(cells)
    return heads, rows, first


def _drop_na(heads: list[str], rows: list[list[Any]], first: int) -> tuple[list[str], list[list[Any]], list[Markup]]:
    """Columns (from ``first``) whose every value is n/a for one reason leave the table
    for one line each."""
    keep, lines = [], []
    for i, h in enumerate(heads):
        reason = single_reason([r[i] for r in rows]) if i >= first and rows else None
        if reason is None:
            keep.append(i)
        else:
            lines.append((h, reason))
    merged: dict[str, list[str]] = {}
    for h, reason in lines:
        merged.setdefault(reason, []).append(h)
    notes = [all_unavailable_line(", ".join(hs), reason, len(rows)) for reason, hs in merged.items()]
    return [heads[i] for i in keep], [[r[i] for i in keep] for r in rows], notes


class GenerationSection(ReportSection):
    name = "generation"
    title = "Generation"
    order = 45
    description = "generate cells: TTFT, TPOT, ITL, tokens/s, goodput, KV cache; the latency-throughput curve"

    def data(self, ctx: ReportContext) -> Any:
        return generation_rows(ctx.runs)

    def html(self, data: GenData, ctx: ReportContext) -> Any:
        tables, notes = [], []
        for build in (latency_table, throughput_table):
            heads, rows, first = build(data)
            heads, rows, lines = _drop_na(heads, rows, first)
            notes += lines
            if rows and len(heads) > first:
                tables.append(table(heads, rows))
        machine = data.rows[0].machine_detail if data.rows and not data.multi_machine else None
        slo = common_slo(data.rows)
        body = render("generation.html.j2", tables=tables, notes=notes, not_ok=data.not_ok, machine=machine,
                      slo=_slo_text(slo) if slo else None,
                      contended=any(r.contended for r in data.rows))
        return Rendered(body, figures(data) if data.rows else [])

    def markdown(self, data: GenData, ctx: ReportContext) -> str:
        lines = ["#### Generation (per request: TTFT = time to first token, TPOT = time per output token after the "
                 "first, ITL = inter-token latency; tokens/s for the whole batch)", ""]  # fmt: skip
        if data.rows:
            u = lambda k: F.unit_of(G + k)  # noqa: E731
            heads = _label_heads(data)[:-3] + [
                "batch", "prompt", "gen", f"TTFT p50/p90/p99 ({u('ttft_ms.p50')})", f"TPOT p50/p90 ({u('tpot_ms.p50')})",
                f"ITL p99 ({u('itl_ms.p99')})", f"e2e p50 ({u('e2e_ms.p50')})",
                f"prefill ({u('prefill_tokens_per_s')})", f"output ({u('output_tokens_per_s')})", "goodput",
                "KV cache measured / config", "prefill / decode FLOP/s"]  # fmt: skip
            if not data.multi_machine:
                lines += [f"Machine: {md_escape(data.rows[0].machine_detail)}", ""]
            lines += ["| " + " | ".join(heads) + " |",
                      "|" + "|".join("---" if i < len(_label_heads(data)) - 3 else "--:" for i in range(len(heads)))
                      + "|"]
            missing: dict[str, set[str]] = {}

            def val(r: GenRow, key: str, fmt: Any = F.sig) -> str:
                v = r.v(key)
                if v is None:
                    missing.setdefault(r.reasons.get(key, "not recorded"), set()).add(key)
                    return "n/a"
                return fmt(v) or "n/a"

            for r in data.rows:
                flops = lambda k: val(r, k, lambda v: F.metric_value(G + k, v))  # noqa: E731
                share = r.v("goodput.requests_meeting_slo")
                if share is None:
                    missing.setdefault(r.reasons.get("goodput.requests_meeting_slo", NO_SLO), set()).add("goodput")
                    good = "n/a"
                else:
                    tps = F.metric_value(G + "goodput.output_tokens_per_s", r.v("goodput.output_tokens_per_s"))
                    good = f"{F.percent(share)}" + (f" ({tps})" if tps else "") + f" at {_slo_text(r.slo)}"
                cols = [md_escape(r.model) + (" \u26a0" if r.contended else "")]
                cols += [md_escape(r.machine_label)] if data.multi_machine else []
                cols += [md_escape(r.run_id)] if data.multi_run else []
                cols += [str(r.batch), str(r.prompt), str(r.gen),
                         " / ".join(val(r, k) for k in ("ttft_ms.p50", "ttft_ms.p90", "ttft_ms.p99")),
                         " / ".join(val(r, k) for k in ("tpot_ms.p50", "tpot_ms.p90")), val(r, "itl_ms.p99"),
                         val(r, "e2e_ms.p50"), val(r, "prefill_tokens_per_s", F.throughput),
                         val(r, "output_tokens_per_s", F.throughput), md_escape(good),
                         " / ".join(val(r, k, F.bytes_human) for k in ("kv_cache.bytes_measured",
                                                                       "kv_cache.bytes_from_config")),
                         " / ".join(flops(k) for k in ("prefill_achieved_flops_per_s", "decode_achieved_flops_per_s"))]
                lines.append("| " + " | ".join(cols) + " |")
            if any(r.contended for r in data.rows):
                lines += ["", "\u26a0 contended: other processes competed for the machine while the cell ran; no "
                              "verdict is drawn from it."]  # fmt: skip
            for reason, keys in missing.items():
                lines += ["", f"n/a ({md_escape(', '.join(sorted(keys)))}): {md_escape(reason)}"]
        if data.not_ok:
            lines += ["", f"{len(data.not_ok)} generate cell{'s' if len(data.not_ok) != 1 else ''} did not run:"]
            lines += [f"- {md_escape(cid)}: {md_escape(status)}" + (f" ({md_escape(F.shorten(why, 160))})" if why else "")
                      for cid, status, why in data.not_ok]  # fmt: skip
        return "\n".join(lines)
