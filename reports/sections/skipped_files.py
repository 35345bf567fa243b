"""The result files the loader could not use (so nothing disappears silently)."""

from __future__ import annotations

from typing import Any

from harness.reports.sections.common import ReportContext, ReportSection
from harness.reports.templating import render


class SkippedFilesSection(ReportSection):
    name = "skipped-files"
    title = "Skipped result files"
    order = 20
    description = "result files that were corrupt, truncated, invalid or from a newer harness"

    def data(self, ctx: ReportContext) -> Any:
        return ctx.errors or None

    def html(self, data: Any, ctx: ReportContext) -> Any:
        return render("skipped_files.html.j2", errors=data)
