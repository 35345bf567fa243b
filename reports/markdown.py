"""The Markdown report (a CI comment): each registered section's Markdown block, in
the sections' declared order, separated by a blank line. Strings from result files go
through :func:`harness.reports.tables.md_escape`. A section that raises is reported in
its place; the other sections are unaffected."""

from __future__ import annotations

from typing import Any, Sequence

from harness.reports.api import RenderedReport, ReportContext, ReportSection, error_text
from harness.reports.tables import md_escape


def render_markdown(runs: Sequence[Any], prices: Any = None, rank_by: str = "throughput") -> str:
    """The Markdown report of ``runs`` as one string (see :func:`markdown_report`)."""
    return markdown_report(runs, prices=prices, rank_by=rank_by).text


def markdown_report(
    runs: Sequence[Any],
    prices: Any = None,
    rank_by: str = "throughput",
    sections: Sequence[ReportSection] | None = None,
) -> RenderedReport:
    """GitHub-flavoured Markdown of ``runs`` and the sections that failed.
    ``sections``: the sections to render (default: every registered one)."""
    from harness.reports.loader import load_sections

    ctx = ReportContext(runs, prices=prices, rank_by=rank_by)
    blocks: list[str] = []
    failures: list[str] = []
    for section in load_sections() if sections is None else sections:
        where = "data"
        try:
            data = section.data(ctx)
            if data is None:
                continue
            where = "markdown"
            text = section.markdown(data, ctx)
        except Exception as e:  # noqa: BLE001 - one broken section must not lose the others
            error = error_text(e)
            failures.append(f"report section {section.name!r} could not be drawn ({where}): {error}")
            text = f"#### {md_escape(section.title)}\n\n> **\u26a0 this section could not be drawn** ({where}): {md_escape(error)}"
        text = (text or "").strip("\n")
        if text:
            blocks.append(text)
    return RenderedReport("\n\n".join(blocks) + "\n" if blocks else "", failures)
