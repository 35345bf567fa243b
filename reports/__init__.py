"""Reports built from stored results only (never re-running anything).

* :func:`harness.reports.html.write_html_report` -- one self-contained, offline HTML file
  (plotly.js embedded once, sortable/filterable summary table, charts, environment,
  failures), rendered from Jinja2 templates (``templates/``, autoescaped) with the
  CSS/JS of ``static/``.
* :func:`harness.reports.markdown.render_markdown` -- GitHub-flavoured Markdown for a CI
  comment; :func:`harness.reports.tables.markdown_summary` is its summary table.
* :func:`harness.reports.tables.rich_summary_table` -- a ``rich`` table for the terminal.

Both reports are lists of sections (:mod:`harness.reports.api`): one module per
section in :mod:`harness.reports.sections`, registered in the entry-point group
``dl_harness.report_sections``, where a third-party package adds its own.

Importing this package is cheap: plotly and rich are imported inside the functions
that need them.
"""

from __future__ import annotations

from harness.reports.html import render_html, write_html_report
from harness.reports.markdown import render_markdown
from harness.reports.tables import markdown_summary, rich_summary_table

__all__ = ["markdown_summary", "render_html", "render_markdown", "rich_summary_table", "write_html_report"]
