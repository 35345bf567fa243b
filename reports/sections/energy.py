"""Energy per sample, samples per joule and power, from ``metrics.energy``; estimates
are labelled, and "n/a" says why a run could not measure it."""

from __future__ import annotations

from typing import Any, Mapping

from harness.reports import cells as C
from harness.reports import formatting as F
from harness.reports.sections.common import (M, ReportContext, ReportSection, Rendered, collapsed_table, layout, legacy,
                                             na, pe, table)
from harness.reports.templating import cat, join, render

KEYS = ("energy_per_sample_j", "samples_per_j", "avg_power_w", "peak_power_w", "idle_power_w", "energy_j")


class EnergySection(ReportSection):
    name = "energy"
    title = "Energy"
    order = 70
    description = "energy per sample and power per cell (measured or labelled estimates)"

    def data(self, ctx: ReportContext) -> Any:
        pairs = [(r, c) for r, c in C.iter_cells(ctx.runs)
                 if C.status(c) == "ok" and isinstance(C.metric(c, "energy"), Mapping)]  # fmt: skip
        return pairs or None

    def html(self, data: Any, ctx: ReportContext) -> Any:
        rows, measured, estimated = [], [], []
        for r, c in data:
            en = C.metric(c, "energy")
            src = str(en.get("source"))
            label = (f"{r.get('run_id')} · " if ctx.multi else "") + C.cell_id(c)
            vals = []
            for key in KEYS:
                txt = F.metric_value(key, en.get(key))
                vals.append((txt if txt else na(en.get("reason") or "not measured"),
                             en.get(key) if F.is_number(en.get(key)) else ""))  # fmt: skip
            why = en.get("model") if src == "estimate" else en.get("reason")
            source = join([src, M.badge("estimate", "warn") if src == "estimate" else ""])
            rows.append([(M.code(label), label), (cat(source, M.br(), M.muted(why)) if why else source, src)] + vals)
            if F.is_number(en.get("energy_per_sample_j")):
                (estimated if src == "estimate" else measured if src != "unavailable" else []).append((label, en, src))
        traces = []
        for name, items, pattern in (("measured", measured, ""), ("estimate", estimated, "/")):
            if items:
                traces.append({
                    "type": "bar", "orientation": "h", "name": name, "y": [pe(lb) for lb, _, _ in items],
                    "x": [en["energy_per_sample_j"] for _, en, _ in items],
                    "marker": {"pattern": {"shape": pattern}, "color": "#2ca02c" if name == "measured" else "#bbbbbb"},
                    "customdata": [[pe(lb), F.sig(en["energy_per_sample_j"]), pe(s), F.sig(en.get("avg_power_w")) or "n/a"]
                                   for lb, en, s in items],
                    "hovertemplate": "%{customdata[0]}<br>%{customdata[1]} J per sample (source %{customdata[2]})<br>"
                                     "average power %{customdata[3]} W<extra></extra>",
                })  # fmt: skip
        figs = []
        if traces:
            n = len(measured) + len(estimated)
            lay = layout("Energy per sample (J)", "energy per sample (J)", height=max(260, 120 + 26 * n))
            lay["yaxis"]["autorange"] = "reversed"
            figs.append(("chart-energy", {"data": traces, "layout": lay},
                         "Measured energy (NVML counter or power sampling, RAPL) in solid bars; estimates hatched and "
                         "labelled."))  # fmt: skip
        heads = ["cell", "source", "J/sample", "samples/J", "avg power", "peak power", "idle power", "energy"]
        # a machine without meters: every value n/a for one reason -> one line, no table
        line = collapsed_table(heads, rows, label_cols=2)
        if line is not None and not figs:
            return line
        return Rendered(render("energy.html.j2", table=table(heads, rows)), figs)


def energy_section(runs: list[dict[str, Any]]) -> tuple[str, list[Any]]:
    """``(html, figures)`` of the energy section ("" when no cell has energy data)."""
    return legacy(EnergySection(), ReportContext(runs))
