"""The self-contained HTML report of stored results (works offline).

One file: the page (``templates/page.html.j2``) holds the CSS and JavaScript from
``static/`` and, when there is a chart, plotly.js, embedded once from the installed
``plotly`` package (never a CDN). Each figure is a JSON literal drawn with
``Plotly.newPlot``; the summary table is sorted and filtered by a few lines of inline
vanilla JavaScript that only uses ``textContent`` (never ``innerHTML``).

The body is the report's sections (:mod:`harness.reports.api`), found through the
entry-point group ``dl_harness.report_sections`` and drawn in their declared order.
Everything that comes from a result file is untrusted text (a hostname, a tag, an
error message can contain markup); the templates are rendered by Jinja2 with
autoescaping on, figure JSON goes through
:func:`~harness.reports.templating.script_json`, and strings handed to plotly
through :func:`~harness.reports.templating.plotly_text` (see
:mod:`harness.reports.templating`). A section that raises is shown as a visible
"could not be drawn" box in its place; the other sections are drawn as usual.

The report reads results only; it never runs anything and never invents a number:
a metric the run could not measure shows "n/a" with the recorded reason as its
tooltip. A contended cell is named in a banner at the top and carries a "contended"
badge with its evidence; the regressions, history and procurement sections draw no
verdict or ranking from it. Units come from the declared metric table
(:mod:`harness.core.metrics`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from markupsafe import Markup

from harness.core.fsutil import atomic_write_text
from harness.reports.api import DEFAULT_TITLE, Figure, RenderedReport, ReportContext, ReportSection, Rendered, error_text
from harness.reports.templating import render, script_json, static_text

__all__ = ["DEFAULT_TITLE", "RenderedReport", "render_html", "render_report", "write_html_report"]


def _figure_payload(fig: dict[str, Any]) -> Markup:
    config = {"responsive": True, "displaylogo": False, "typesetMath": False}
    config.update(fig.get("config") or {})
    return Markup(script_json({"data": fig["data"], "layout": fig["layout"], "config": config}))


def _figures(figs: Sequence[Figure]) -> list[dict[str, Any]]:
    return [{"div_id": d, "payload": _figure_payload(f), "caption": cap} for d, f, cap in figs]


def _as_rendered(out: Any) -> Rendered | None:
    if out is None or isinstance(out, Rendered):
        return out
    return Rendered(out)


def render_section_html(section: ReportSection, data: Any, ctx: ReportContext) -> tuple[str, list[Figure]]:
    """One section's HTML (wrapped in its ``<section>`` unless ``wrap`` is False, with
    its figures) and its figures; ("", []) when it has nothing to show."""
    out = _as_rendered(section.html(data, ctx))
    if out is None or (not out.html and not out.figures):
        return "", []
    if not section.wrap:
        return str(out.html if isinstance(out.html, Markup) else Markup.escape(out.html)), list(out.figures)
    text = render("section.html.j2", id=section.name, title=out.title or section.title, cls=None,
                  body=out.html, figures=_figures(out.figures))  # fmt: skip
    return str(text), list(out.figures)


def _failure(section: ReportSection, where: str, e: BaseException) -> tuple[str, str]:
    error = error_text(e)
    msg = f"report section {section.name!r} could not be drawn ({where}): {error}"
    body = render("section_failed.html.j2", where=where, error=error)
    return str(render("section.html.j2", id=section.name, title=section.title, cls="section-failed", body=body,
                      figures=[])), msg  # fmt: skip


def _plotly_js() -> str:
    """The installed plotly.js bundle, with its one automatic network default removed.

    The bundle's only URL it would fetch by itself is ``topojsonURL`` (map data for
    geo traces, which this report never draws); pointing it at a relative folder
    keeps the file free of any CDN reference. Other URLs in the bundle are for
    buttons that are off by default (e.g. Chart Studio). If a plotly release changes
    that string the replacement is simply a no-op.
    """
    from plotly.offline import get_plotlyjs  # heavy: only when there is a chart

    default = 'topojsonURL:{valType:"string",noBlank:!0,dflt:"https://cdn.plot.ly/un/"}'
    return get_plotlyjs().replace(default, default.replace("https://cdn.plot.ly/un/", "topojson/"), 1)


def render_report(
    runs: Sequence[Any],
    errors: Sequence[str] = (),
    title: str | None = None,
    prices: Any = None,
    rank_by: str = "throughput",
    sections: Sequence[ReportSection] | None = None,
) -> RenderedReport:
    """The HTML report and the sections that failed (see :func:`render_html`).
    ``sections``: the sections to draw (default: every registered one)."""
    from harness.reports.loader import load_sections

    ctx = ReportContext(runs, errors=errors, title=title, prices=prices, rank_by=rank_by)
    parts: list[Markup] = []
    failures: list[str] = []
    any_figure = False
    for section in load_sections() if sections is None else sections:
        where = "data"
        try:
            data = section.data(ctx)
            if data is None:
                continue
            where = "html"
            text, figs = render_section_html(section, data, ctx)
        except Exception as e:  # noqa: BLE001 - one broken section must not lose the others
            text, msg = _failure(section, where, e)
            failures.append(msg)
            figs = []
        if text:
            parts.append(Markup(text))
            any_figure = any_figure or bool(figs)
    page = render("page.html.j2", title=ctx.title, css=Markup(static_text("report.css")),
                  js=Markup(static_text("report.js")), plotly_js=Markup(_plotly_js()) if any_figure else "",
                  parts=parts)  # fmt: skip
    return RenderedReport(str(page) + "\n", failures)


def render_html(
    runs: Sequence[Any],
    errors: Sequence[str] = (),
    title: str | None = None,
    prices: Any = None,
    rank_by: str = "throughput",
) -> str:
    """The report as one HTML string (see :func:`write_html_report`). ``prices``
    (:class:`harness.analysis.procurement.Prices`) and ``rank_by`` feed the procurement section."""
    return render_report(runs, errors=errors, title=title, prices=prices, rank_by=rank_by).text


def write_html_report(
    runs: list[dict[str, Any]],
    out_path: Path,
    errors: Sequence[str] = (),
    title: str | None = None,
    prices: Any = None,
    rank_by: str = "throughput",
    failures: list[str] | None = None,
) -> Path:
    """Write a self-contained, offline HTML report of ``runs`` to ``out_path``.

    ``errors`` are the one-line messages of result files the loader skipped
    (``LoadedResults.errors``); they are listed so nothing disappears silently.
    ``failures``, when given, receives the messages of sections that could not be
    drawn. The file is written atomically (temp file + rename), mode 0644. Returns
    the path.
    """
    out = Path(out_path)
    rendered = render_report(runs, errors=errors, title=title, prices=prices, rank_by=rank_by)
    if failures is not None:
        failures.extend(rendered.failures)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, rendered.text, mode=0o644)
    return out
