"""A banner at the top naming every cell measured under contention, with its evidence."""

from __future__ import annotations

from typing import Any

from harness.reports import cells as C
from harness.reports import formatting as F
from harness.reports.sections.common import ReportContext, ReportSection
from harness.reports.templating import render

LIMIT = 30  # cells named in the banner, at most


class ContentionBannerSection(ReportSection):
    name = "contention-banner"
    title = "Contended cells"
    order = 10
    wrap = False
    description = "a banner naming every cell measured while other processes competed for the machine"

    def data(self, ctx: ReportContext) -> Any:
        hits = C.contended_cells(ctx.runs)
        return hits or None

    def html(self, data: Any, ctx: ReportContext) -> Any:
        n_ok = sum(1 for _, c in C.iter_cells(ctx.runs) if C.status(c) == "ok")
        items = [(C.cell_id(cell), run.get("run_id"), F.shorten(note, 200)) for run, cell, note in data[:LIMIT]]
        return render("contention_banner.html.j2", n_hits=len(data), n_ok=n_ok, items=items, multi=ctx.multi,
                      more=max(0, len(data) - LIMIT))  # fmt: skip
