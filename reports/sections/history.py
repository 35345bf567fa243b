"""History: trends per cell and machine over many runs, with detected steps and drifts
(:func:`harness.analysis.history.build_history`); each change labelled worse or better
by the metric's declared direction. Contended runs are drawn as open red circles and
take no part in the detection."""

from __future__ import annotations

from typing import Any, Sequence

from harness.reports import formatting as F
from harness.reports.sections.common import COLORS, M, ReportContext, ReportSection, Rendered, layout, legacy, pct, pe, table
from harness.reports.tables import md_escape
from harness.reports.templating import cat, render

MAX_HISTORY_CHARTS = 6


def series_label(s: Any) -> str:
    """How a history series' value is named: "min latency" or the metric's name."""
    return f"{s.stat} latency" if s.metric == "latency_ms" and s.stat else s.metric


def _unit_suffix(unit: str) -> str:
    return f" ({unit})" if unit else ""


def _worse_word(worse: bool | None) -> str:
    """The verdict word of a history change, from the metric's declared direction."""
    return "n/a" if worse is None else ("worse" if worse else "better")


def _figures(series: Sequence[Any], metric: str, unit: str, label: str) -> list[Any]:
    figs = []
    by_machine: dict[str, list[Any]] = {}
    for s in series:
        by_machine.setdefault(s.machine, []).append(s)
    for n, (machine, ss) in enumerate(by_machine.items()):
        if n >= MAX_HISTORY_CHARTS:
            break
        traces = []
        for k, s in enumerate(ss):
            color = COLORS[k % len(COLORS)]
            lab = series_label(s)
            traces.append({
                "type": "scatter", "mode": "lines+markers", "name": pe(s.key), "legendgroup": f"s{k}",
                "x": list(range(1, len(s.points) + 1)), "y": [p.value for p in s.points],
                "line": {"color": color, "width": 1.5}, "marker": {"size": 4},
                "customdata": [[pe(s.key), pe(p.run_id), pe((p.commit or "n/a")[:12]),
                                f"{pe(lab)} {F.value_in_unit(p.value, s.unit)}",
                                (f" (median of {p.processes} processes)" if p.processes > 1 else "")
                                + ("<br>contended: " + pe(F.shorten(p.contended, 100)) + " (not used for detection)"
                                   if p.contended else "")] for p in s.points],
                "hovertemplate": "%{customdata[0]}<br>run %{customdata[1]} (commit %{customdata[2]})<br>"
                                 "%{customdata[3]}%{customdata[4]}<extra></extra>",
            })  # fmt: skip
            bad = [(i, p) for i, p in enumerate(s.points) if p.contended]
            if bad:
                traces.append({
                    "type": "scatter", "mode": "markers", "name": pe(f"contended: {s.key}"), "legendgroup": f"s{k}",
                    "showlegend": False, "x": [i + 1 for i, _ in bad], "y": [p.value for _, p in bad],
                    "marker": {"symbol": "circle-open", "size": 12, "color": "#cf222e", "line": {"width": 2}},
                    "customdata": [[pe(s.key), pe(p.run_id), pe(F.shorten(p.contended, 100)),
                                    f"{pe(lab)} {F.value_in_unit(p.value, s.unit)}"] for _, p in bad],
                    "hovertemplate": "%{customdata[0]}<br>run %{customdata[1]}: %{customdata[3]}"
                                     "<br>contended: %{customdata[2]}<br>(not used for detection)<extra></extra>",
                })  # fmt: skip
            if s.changes:
                traces.append({
                    "type": "scatter", "mode": "markers", "name": pe(f"change: {s.key}"), "legendgroup": f"s{k}",
                    "showlegend": False, "x": [c.index + 1 for c in s.changes],
                    "y": [s.points[c.index].value for c in s.changes],
                    "marker": {"symbol": "x", "size": 14, "color": color, "line": {"width": 2}},
                    "customdata": [[pe(s.key), c.kind, pe(c.run_id), pe((c.commit or "n/a")[:12]),
                                    pct(c.change) + ("" if c.worse is None else (" (worse)" if c.worse else " (better)"))]
                                   for c in s.changes],
                    "hovertemplate": "%{customdata[0]}<br>%{customdata[1]} began at run %{customdata[2]} "
                                     "(commit %{customdata[3]}): %{customdata[4]}<extra></extra>",
                })  # fmt: skip
        lay = layout(f"History on machine {pe(machine)}: {pe(label)} per run{_unit_suffix(unit)}", "run (oldest = 1)",
                     f"{pe(label)}{' per iteration' if metric == 'latency_ms' else ''}{_unit_suffix(unit)}",
                     height=460)  # fmt: skip
        vals = [p.value for s in ss for p in s.points if p.value > 0]
        if vals and max(vals) / min(vals) > 30:
            lay["yaxis"]["type"] = "log"
        figs.append((f"chart-history-{n}", {"data": traces, "layout": lay},
                     "One line per cell; crosses mark where a detected step or drift began; open red circles are "
                     "contended runs (not used for detection). Hover for the run, commit and value."))  # fmt: skip
    return figs


class HistorySection(ReportSection):
    name = "history"
    title = "History"
    order = 110
    needs = ("history",)
    description = "trends per cell and machine with detected steps and drifts (worse/better by the metric's direction)"

    def data(self, ctx: ReportContext) -> Any:
        return ctx.need("history") or None

    def html(self, data: Any, ctx: ReportContext) -> Any:
        series = data
        first = series[0]
        metric, unit, label = first.metric, first.unit, series_label(first)
        rows = []
        for s in series:
            for ch in s.changes:
                commit = (ch.commit or "")[:12]
                prev = (ch.previous_commit or "")[:12]
                level = f"{F.value_in_unit(ch.before, s.unit)} → {F.value_in_unit(ch.after, s.unit)}"
                worse = (M.badge("worse", "st-failed") if ch.worse else
                         M.badge("better", "st-ok") if ch.worse is False else M.muted("n/a"))  # fmt: skip
                rows.append([
                    (M.code(s.key), s.key), (M.code(s.machine), s.machine), (ch.kind, ch.kind),
                    (M.code(ch.run_id), ch.created), (cat(M.code(prev), "..", M.code(commit)) if commit else "n/a", commit),
                    (level, ch.before), (pct(ch.change), ch.change), (worse, str(ch.worse)),
                ])  # fmt: skip
        heads = ["cell", "machine", "kind", "began at run", "commits (previous clean..first changed)",
                 f"level ({label})", f"change ({F.increase_means(metric)})", "verdict"]
        noise = [s.noise for s in series if s.noise is not None]
        noise_txt = f" Median run-to-run noise of the series: {pct(sorted(noise)[len(noise) // 2], False)}." if noise else ""
        n_cont = sum(1 for s in series for p in s.points if p.contended)
        cont_txt = (f" {n_cont} contended run(s) (other processes competed for the machine) are marked and left out "
                    "of the detection." if n_cont else "")
        body = render("history.html.j2", min_latency=metric == "latency_ms" and first.stat == "min", label=label,
                      noise_txt=noise_txt, cont_txt=cont_txt, table=table(heads, rows) if rows else None)
        return Rendered(body, _figures(series, metric, unit, label))

    def markdown(self, data: Any, ctx: ReportContext) -> str:
        series = data
        changes = [(s, ch) for s in series for ch in s.changes]
        n_cont = sum(1 for s in series for p in s.points if p.contended)
        out = [f"#### History: {len(series)} series, {len(changes)} change(s) detected"
               + (f" ({n_cont} contended run(s) marked and left out of the detection)" if n_cont else "")]
        if changes:
            out += ["", "| cell | machine | metric | kind | began at run | commit | change | worse? |",
                    "|---|---|---|---|---|---|--:|---|"]  # fmt: skip
            for s, ch in changes:
                out.append(f"| {md_escape(s.key)} | {md_escape(s.machine)} | {md_escape(s.metric)} | {ch.kind} | "
                           f"{md_escape(ch.run_id)} | {md_escape((ch.commit or 'n/a')[:12])} | {pct(ch.change)} | "
                           f"{_worse_word(ch.worse)} |")  # fmt: skip
        return "\n".join(out)


def history_section(runs: Sequence[dict[str, Any]], series: Sequence[Any] | None = None) -> tuple[str, list[Any]]:
    """``(html, figures)`` of the history section; ``series``: the runs' history if
    already computed."""
    ctx = ReportContext(runs)
    if series is not None:
        ctx.provide("history", series)
    return legacy(HistorySection(), ctx)
