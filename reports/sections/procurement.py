"""Procurement: several machines side by side (shown when the runs come from 2+
machines, or from one when ``--prices`` is given): medians per machine option, perf per watt (measured only) and per dollar,
ranked by ``--rank-by`` (:func:`harness.analysis.procurement.procurement_entries`)."""

from __future__ import annotations

from typing import Any, Sequence

from harness.reports import formatting as F
from harness.reports.sections.common import COLORS, M, ReportContext, ReportSection, Rendered, layout, legacy, pe, table
from harness.reports.tables import md_escape
from harness.reports.templating import cat, join, render


def _rows(entries: list[Any], prices: Any) -> list[list[Any]]:
    rows = []
    for e in entries:
        if e.samples_per_j is not None:
            ppw = (join([f"{F.sig(e.samples_per_j)} samples/J", M.muted(f"({e.energy_source})")]), e.samples_per_j)
        elif e.samples_per_j_estimate is not None:
            ppw = (cat(f"{F.sig(e.samples_per_j_estimate)} samples/J ",
                       M.badge("estimate", "warn", "estimated, not measured; never ranked")), "")  # fmt: skip
        else:
            ppw = (M.na(e.energy_reason or "no energy measurement"), "")
        ppd = ((f"{F.sig(e.perf_per_dollar)} {e.perf_per_dollar_unit}", e.perf_per_dollar) if e.perf_per_dollar is not None
               else (M.na("no price for this machine (--prices)" if prices else "no --prices file given"), ""))  # fmt: skip
        if e.contended:
            rank_html = join(["–", M.badge("contended", "contended", "every run of this option was measured under "
                                           f"contention: not ranked. Evidence: {e.contended}")])  # fmt: skip
        else:
            rank_html = cat(e.rank if e.rank else "–")
            if e.n_contended:
                rank_html = join([rank_html, M.muted(f"({e.n_contended} contended run(s) left out)")])
        rows.append([
            (M.code(e.workload_key), e.workload_key), (rank_html, e.rank or ""),
            (cat(e.machine_label, M.br(), M.code(e.machine, cls="muted")), e.machine_label),
            (f"{e.backend} / {e.device}", f"{e.backend}/{e.device}"),
            (F.throughput(e.throughput_per_s) or "n/a", e.throughput_per_s or ""),
            (F.ms(e.latency_p50_ms) or "n/a", e.latency_p50_ms or ""), ppw, ppd,
            (F.percent(e.scaling_efficiency) or "n/a", e.scaling_efficiency or ""), (e.n_runs, e.n_runs),
        ])  # fmt: skip
    return rows


def _figures(entries: list[Any]) -> list[Any]:
    traces = []
    options = list(dict.fromkeys((e.machine, e.backend, e.device) for e in entries))
    for k, opt in enumerate(options):
        mine = [e for e in entries if (e.machine, e.backend, e.device) == opt and e.throughput_per_s]
        if not mine:
            continue
        label = f"{mine[0].machine_label} · {opt[1]}/{opt[2]}"
        traces.append({
            "type": "bar", "orientation": "h", "name": pe(label), "y": [pe(e.workload_key) for e in mine],
            "x": [e.throughput_per_s for e in mine], "marker": {"color": COLORS[k % len(COLORS)]},
            "customdata": [[pe(label), F.throughput(e.throughput_per_s), F.ms(e.latency_p50_ms) or "n/a", e.n_runs,
                            "<br>contended runs only: not ranked" if e.contended else ""] for e in mine],
            "hovertemplate": "%{y} on %{customdata[0]}<br>sustained throughput %{customdata[1]} samples/s (median of "
                             "%{customdata[3]} runs)<br>p50 latency %{customdata[2]} ms%{customdata[4]}<extra></extra>",
        })  # fmt: skip
    if not traces:
        return []
    n_w = len({e.workload_key for e in entries})
    lay = layout("Sustained throughput per workload and machine (samples/s)", "sustained throughput (samples/s)",
                 height=max(300, 140 + 22 * n_w * len(traces)), barmode="group")  # fmt: skip
    lay["yaxis"]["autorange"] = "reversed"
    return [("chart-procurement", {"data": traces, "layout": lay},
             "One bar per machine option (machine, backend, device); hover for throughput and latency.")]


class ProcurementSection(ReportSection):
    name = "procurement"
    title = "Procurement: machines side by side"
    order = 120
    needs = ("procurement",)
    description = ("machines side by side: medians, perf per watt and per dollar, ranked (2+ machines, or one with "
                   "--prices)")

    def data(self, ctx: ReportContext) -> Any:
        machines, entries = ctx.need("procurement")
        # one machine: shown only when a price file was given (a buyer measuring one
        # candidate at a time wants its perf per dollar now; --prices must not be ignored
        # without a word)
        return (machines, entries) if len(machines) >= 2 or (ctx.prices is not None and machines) else None

    def html(self, data: Any, ctx: ReportContext) -> Any:
        from harness.analysis.procurement import RANK_METRICS

        machines, entries = data
        heads = ["workload config", f"rank ({ctx.rank_by})", "machine", "backend / device",
                 "sustained throughput (samples/s)", "p50 latency (ms)", "perf per watt", "perf per dollar",
                 "scaling efficiency", "runs"]  # fmt: skip
        mrows = [[(M.code(fp), fp), (label, label)] for fp, label in machines.items()]
        body = render("procurement.html.j2", n_machines=len(machines), rank_by=ctx.rank_by,
                      choices=", ".join(RANK_METRICS), machines=table(["fingerprint", "machine"], mrows),
                      table=table(heads, _rows(entries, ctx.prices), cls="grid sortable wide"))  # fmt: skip
        return Rendered(body, _figures(entries))

    def markdown(self, data: Any, ctx: ReportContext) -> str:
        _, entries = data
        out = [f"#### Machines side by side (ranked by {md_escape(ctx.rank_by)})", "",
               "| workload config | rank | machine | backend/device | sustained samples/s | p50 ms | samples/J (measured) | perf per dollar |",
               "|---|--:|---|---|--:|--:|--:|--:|"]  # fmt: skip
        for e in entries:
            ppd = f"{F.sig(e.perf_per_dollar)} {e.perf_per_dollar_unit}" if e.perf_per_dollar is not None else "n/a"
            spj = F.sig(e.samples_per_j) if e.samples_per_j is not None else (
                f"{F.sig(e.samples_per_j_estimate)} (estimate)" if e.samples_per_j_estimate is not None else "n/a")
            rank = str(e.rank or "–")
            if e.contended:
                rank = f"– (**contended**: {md_escape(F.shorten(e.contended, 80))})"
            elif e.n_contended:
                rank += f" ({e.n_contended} contended run(s) left out)"
            out.append(f"| {md_escape(e.workload_key)} | {rank} | {md_escape(e.machine_label)} | "
                       f"{md_escape(e.backend + '/' + e.device)} | {md_escape(F.throughput(e.throughput_per_s) or 'n/a')} | "
                       f"{md_escape(F.ms(e.latency_p50_ms) or 'n/a')} | {md_escape(spj)} | {md_escape(ppd)} |")  # fmt: skip
        return "\n".join(out)


def procurement_section(
    runs: Sequence[dict[str, Any]], prices: Any = None, rank_by: str = "throughput"
) -> tuple[str, list[Any]]:
    """``(html, figures)`` of the procurement section ("" with fewer than 2 machines)."""
    return legacy(ProcurementSection(), ReportContext(runs, prices=prices, rank_by=rank_by))
