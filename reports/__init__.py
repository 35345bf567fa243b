"""Reports built from stored results only (never re-running anything).

* :func:`harness.reports.html.write_html_report` -- one self-contained, offline HTML file
  (plotly.js embedded once, sortable/filterable summary table, charts, environment,
  failures).
* :func:`harness.reports.tables.markdown_summary` -- a GitHub-flavoured Markdown table for a
  CI comment.
* :func:`harness.reports.tables.rich_summary_table` -- a ``rich`` table for the terminal.

Importing this package is cheap: plotly and rich are imported inside the functions
that need them.
"""

from __future__ import annotations

from harness.reports.html import render_html, write_html_report
from harness.reports.tables import markdown_summary, rich_summary_table

__all__ = ["markdown_summary", "render_html", "rich_summary_table", "write_html_report"]
