"""Helpers shared by the built-in sections: sortable tables, percentages, chart layouts."""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

from markupsafe import Markup

from harness.reports import formatting as F
from harness.reports.api import Figure, ReportContext, ReportSection, Rendered
from harness.reports.templating import M, plotly_text

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
pe = plotly_text  # short name for the many plotly strings


class Td(NamedTuple):
    """One table cell for the big tables (summary, other metrics), rendered inline by
    their templates (no macro call per cell: 5,000-cell reports stay fast). ``k``: the
    kind ("text", "code", "na", "dash", "status", "p50", "suffix", "tip", "html"),
    ``v``: the value (text, escaped; Markup for "html"), ``s``: the sort key (None: no
    ``data-sort``), ``c``: CSS class, ``t``: tooltip, ``x``/``y``: kind-specific extras."""

    k: str
    v: Any = None
    s: Any = None
    c: str = ""
    t: Any = None
    x: Any = None
    y: Any = None


def table(heads: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "grid sortable") -> Markup:
    """A sortable table. Each cell is ``(content, sort key)`` or content; content is
    Markup (a macro's output) or plain text (escaped); heads are plain text."""
    norm = []
    for r in rows:
        cells = []
        for c in r:
            if isinstance(c, tuple):
                content, sort = c
                cells.append({"html": content, "sort": sort, "sorted": True, "num": F.is_number(sort)})
            else:
                cells.append({"html": c, "sort": None, "sorted": False, "num": False})
        norm.append(cells)
    return M.table(list(heads), norm, cls)


def pct(x: float | None, signed: bool = True) -> str:
    """A ratio as a percentage ("+3.0%"), "n/a" when not a number."""
    if not F.is_number(x):
        return "n/a"
    return f"{x * 100:+.1f}%" if signed else f"{x * 100:.1f}%"


def layout(title: str, x_title: str, y_title: str = "", height: int = 420, **kw: Any) -> dict[str, Any]:
    """The plotly layout of the sections' charts."""
    lay = {
        "title": {"text": title, "x": 0, "xanchor": "left"},
        "xaxis": {"title": {"text": x_title}, "automargin": True},
        "yaxis": {"title": {"text": y_title}, "automargin": True},
        "height": height,
        "margin": {"l": 20, "r": 30, "t": 60, "b": 50},
        "hovermode": "closest",
        "legend": {"orientation": "h", "x": 0, "y": -0.2, "yanchor": "top"},
    }
    lay.update(kw)
    return lay


def legacy(section: ReportSection, ctx: ReportContext) -> tuple[str, list[Figure]]:
    """``(html, figures)`` of one section, the shape the old per-section functions
    returned (html "" when the section has nothing to show)."""
    from harness.reports.html import render_section_html

    data = section.data(ctx)
    if data is None:
        return "", []
    return render_section_html(section, data, ctx)


__all__ = ["COLORS", "M", "Markup", "Rendered", "ReportContext", "ReportSection", "Td", "layout", "legacy", "pct",
           "pe", "table"]  # fmt: skip
