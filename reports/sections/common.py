"""Helpers shared by the built-in sections: sortable tables, percentages, chart layouts."""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

from markupsafe import Markup

from harness.reports import formatting as F
from harness.reports.api import Figure, ReportContext, ReportSection, Rendered
from harness.reports.templating import M, plotly_text, render_string

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
pe = plotly_text  # short name for the many plotly strings


class Td(NamedTuple):
    """One table cell for the big tables (summary, other metrics), rendered inline by
    their templates (no macro call per cell: 5,000-cell reports stay fast). ``k``: the
    kind ("text", "code", "na", "dash", "status", "p50", "suffix", "tip", "reason", "html"),
    ``v``: the value (text, escaped; Markup for "html"), ``s``: the sort key (None: no
    ``data-sort``), ``c``: CSS class, ``t``: tooltip, ``x``/``y``: kind-specific extras (``suffix``: x a
    muted suffix; ``tip``: x the tooltip, y an "estimate" badge; ``reason``: y the full
    text, shown on click in a ``<details>`` when the short ``v`` cut it)."""

    k: str
    v: Any = None
    s: Any = None
    c: str = ""
    t: Any = None
    x: Any = None
    y: Any = None


class Unavailable(Markup):
    """An "n/a" (the ``M.na`` markup, reason as tooltip) that remembers its reason, so a
    table whose values are all unavailable for one reason can say so in one line
    (:func:`single_reason`, :func:`all_unavailable_line`)."""

    reason: str = ""


def na(reason: Any = None, default: str = "not recorded by this run") -> Unavailable:
    """"n/a" with ``reason`` (or ``default``) as its tooltip, as :class:`Unavailable`."""
    text = str(reason) if reason else default
    out = Unavailable(M.na(text))
    out.reason = text
    return out


def _reason_of(value: Any) -> str | None:
    """The reason of an unavailable value (an :class:`Unavailable`, or a ``Td("na")``
    of the big tables), else None."""
    if isinstance(value, Td):
        return str(value.v or "not recorded by this run") if value.k == "na" else None
    if isinstance(value, tuple) and value:
        value = value[0]  # (content, sort key)
    return value.reason if isinstance(value, Unavailable) else None


def single_reason(values: Sequence[Any]) -> str | None:
    """The one reason when every value is unavailable for the same reason, else None
    (also for no values at all)."""
    reasons = {_reason_of(v) for v in values}
    if not values or None in reasons or len(reasons) != 1:
        return None
    return reasons.pop()


def all_unavailable_line(what: str, reason: str, n: int | None = None) -> Markup:
    """The one line that replaces a table (or column) whose every value is n/a for one
    reason: ``"n/a in all 6 cells: <what>. Reason: <reason>"``."""
    where = f"all {n} cells" if n and n > 1 else "every cell"
    return render_string('<p class="all-na">{{ m.na(reason) }} in {{ where }}: {{ what }}. '
                         'Reason: <span class="reason-text">{{ reason }}</span></p>', where=where, what=what,
                         reason=reason)  # fmt: skip


def collapsed_table(heads: Sequence[str], rows: Sequence[Sequence[Any]], label_cols: int = 1) -> Markup | None:
    """The one-line replacement of a table whose every value (the cells right of the
    first ``label_cols`` columns) is n/a for the same reason; None otherwise."""
    if not rows or len(heads) <= label_cols:
        return None
    reason = single_reason([c for r in rows for c in r[label_cols:]])
    if reason is None:
        return None
    return all_unavailable_line(", ".join(heads[label_cols:]), reason, len(rows))


def drop_unavailable_columns(heads: list[str], rows: list[dict[str, Any]], first: int
                             ) -> tuple[list[str], list[dict[str, Any]], list[tuple[str, str]]]:
    """For the big tables (rows of ``{"cols": [Td...]}``): the columns from ``first`` on
    whose every value is n/a for one reason are taken out; returns the remaining heads
    and rows and ``(head, reason)`` of each column taken out (said in one line each)."""
    if not rows:
        return heads, rows, []
    keep, dropped = [], []
    for i, h in enumerate(heads):
        reason = single_reason([r["cols"][i] for r in rows]) if i >= first else None
        if reason is None:
            keep.append(i)
        else:
            dropped.append((h, reason))
    if not dropped:
        return heads, rows, []
    return ([heads[i] for i in keep], [{**r, "cols": [r["cols"][i] for i in keep]} for r in rows], dropped)


def table(heads: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "grid sortable",
          label_cols: int | None = None) -> Markup:
    """A sortable table. Each cell is ``(content, sort key)`` or content; content is
    Markup (a macro's output) or plain text (escaped); heads are plain text. With
    ``label_cols``, a table whose every value right of those columns is n/a for one
    reason (:class:`Unavailable`) is one line instead (:func:`collapsed_table`)."""
    if label_cols is not None:
        line = collapsed_table(heads, rows, label_cols)
        if line is not None:
            return line
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


__all__ = ["COLORS", "M", "Markup", "Rendered", "ReportContext", "ReportSection", "Td", "Unavailable",
           "all_unavailable_line", "collapsed_table", "drop_unavailable_columns", "layout", "legacy", "na", "pct", "pe",
           "single_reason", "table"]  # fmt: skip
