"""Failed cells: each one's error message, worker exit code, traceback and stderr."""

from __future__ import annotations

from typing import Any

from harness.core.rootcause import root_cause
from harness.reports import cells as C
from harness.reports import formatting as F
from harness.reports.sections.common import ReportContext, ReportSection, Rendered
from harness.reports.templating import render


class FailedSection(ReportSection):
    name = "failed"
    title = "Failed cells"
    order = 140
    description = "each failed cell's error, worker exit code, traceback and captured stderr"

    def data(self, ctx: ReportContext) -> Any:
        items = []
        for run, cell in C.iter_cells(ctx.runs):
            if C.status(cell) != "failed":
                continue
            err = cell.get("error") if isinstance(cell.get("error"), dict) else {}
            msg = err.get("message")
            headline = ": ".join(str(x) for x in (err.get("type"), F.shorten(msg, 160) if msg else None) if x) or (
                F.shorten(C.reason_text(cell), 160))
            rc = root_cause(cell)
            items.append({
                "cell": C.cell_id(cell), "run_id": run.get("run_id"), "headline": headline,
                "root_cause": rc.root if rc is not None and rc.outer and (len(rc.chain) >= 2 or rc.source == "stderr")
                else None,
                "reason": cell.get("reason"), "message": msg, "returncode": err.get("returncode"),
                "traceback": err.get("traceback"), "stderr": err.get("stderr_tail"),
            })  # fmt: skip
        return items or None

    def html(self, data: Any, ctx: ReportContext) -> Any:
        return Rendered(render("failed.html.j2", items=data, multi=ctx.multi), title=f"Failed cells ({len(data)})")
