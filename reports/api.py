"""The report-section plug-in interface (``harness.reports.api``).

A report is a list of sections, ordered by :attr:`ReportSection.order`. Every
section, built-in or third-party, is a :class:`ReportSection` subclass registered in
the entry-point group ``dl_harness.report_sections`` under its :attr:`~ReportSection.name`
(which is also the HTML ``id`` of the section)::

    [project.entry-points."dl_harness.report_sections"]
    greeting = "my_package.report:GreetingSection"

For each report the page calls, once per section::

    data = section.data(ctx)            # None: the section has nothing to show, left out
    section.html(data, ctx)             # the HTML body (Markup) or Rendered(body, figures)
    section.markdown(data, ctx)         # a Markdown block ("" = not in the Markdown report)

so both renderings draw from the same ``data``, computed once. Analyses that several
sections share (the history series, each machine's regressions check, the
procurement entries) are named in :attr:`~ReportSection.needs` and read with
:meth:`ReportContext.need`, which computes each at most once per report.

HTML is rendered with Jinja2 with autoescaping on: a section returns
:class:`markupsafe.Markup` (e.g. from :func:`render_string`); a plain ``str`` is
treated as text and escaped. Unless :attr:`~ReportSection.wrap` is False the page
wraps the body in ``<section id="NAME"><h2>TITLE</h2> ... figures ... </section>``.
A section that raises is shown in the report as a visible "could not be drawn" box
(and warned about on stderr by ``harness report``); the other sections are unaffected.
docs/report-sections.md has a complete third-party example.
"""

from __future__ import annotations

import datetime as _dt
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

from markupsafe import Markup

from harness.reports.tables import md_escape
from harness.reports.templating import render_string

__all__ = [
    "DATA", "Figure", "Markup", "Rendered", "ReportContext", "ReportSection", "md_escape", "render_string",
]  # fmt: skip

DEFAULT_TITLE = "dl-harness report"
MAX_RUNS_IN_CHARTS = 10  # per-cell charts draw the most recent runs only

Figure = tuple[str, dict[str, Any], str]
"""A chart: (div id, plotly figure ``{"data", "layout"[, "config"]}``, caption text)."""


@dataclass
class Rendered:
    """What :meth:`ReportSection.html` returns when it has charts or a dynamic heading:
    the body (Markup; a plain str is escaped), its plotly figures (drawn after the
    body, inside the section) and an optional heading replacing the class's title."""

    html: Any
    figures: list[Figure] = field(default_factory=list)
    title: str | None = None


def _history(ctx: ReportContext) -> Any:
    from harness.analysis.history import build_history

    return build_history(ctx.runs)


def _regressions(ctx: ReportContext) -> Any:
    from harness.reports.like_with_like import like_with_like_checks

    return like_with_like_checks(ctx.runs, ctx.need("history"))


def _procurement(ctx: ReportContext) -> Any:
    from harness.analysis.procurement import machines_of, procurement_entries

    machines = machines_of(ctx.runs)
    wanted = len(machines) >= 2 or (ctx.prices is not None and machines)
    entries = procurement_entries(ctx.runs, ctx.prices, ctx.rank_by) if wanted else []
    return machines, entries


DATA: dict[str, tuple[Callable[["ReportContext"], Any], str]] = {
    "history": (_history, "harness.analysis.history.build_history(runs): trend series with detected changes"),
    "regressions": (_regressions, "harness.reports.like_with_like.like_with_like_checks: per machine and suite, "
                                  "the latest run vs the earlier runs of the same suite on the same machine "
                                  "(harness.analysis.regressions.latest_vs_earlier), contention kept out of every "
                                  "verdict; check['excluded'] says what was left out"),
    "procurement": (_procurement, "(machines_of(runs), procurement_entries(runs, prices, rank_by)); "
                                  "entries only with 2+ machines, or one with --prices"),
}  # fmt: skip
"""The shared analyses a section can name in :attr:`ReportSection.needs`."""


class ReportContext:
    """Everything a section may read: the runs (result documents, untrusted), the
    loader's messages about skipped files, the report options, and the shared analyses
    (:meth:`need`). Sections never re-run anything."""

    def __init__(
        self,
        runs: Sequence[Any],
        errors: Sequence[str] = (),
        title: str | None = None,
        prices: Any = None,
        rank_by: str = "throughput",
        now: _dt.datetime | None = None,
    ) -> None:
        self.runs: list[dict[str, Any]] = [r for r in runs if isinstance(r, dict)]
        self.errors: list[str] = list(errors)
        self.title: str = title or DEFAULT_TITLE
        self.prices = prices
        self.rank_by = rank_by
        self.now = now or _dt.datetime.now(_dt.timezone.utc)
        self._data: dict[str, Any] = {}

    @property
    def multi(self) -> bool:
        """True when the report holds more than one run."""
        return len(self.runs) > 1

    @property
    def chart_runs(self) -> list[dict[str, Any]]:
        """The runs drawn in per-cell charts: the :data:`MAX_RUNS_IN_CHARTS` most recent
        (a long history would be unreadable there); tables use every run."""
        key = lambda d: (str(d.get("created") or ""), str(d.get("run_id") or ""))  # noqa: E731
        recent = {id(r) for r in sorted(self.runs, key=key)[-MAX_RUNS_IN_CHARTS:]}
        return [r for r in self.runs if id(r) in recent]

    def need(self, name: str) -> Any:
        """A shared analysis by name (see :data:`DATA`), computed at most once."""
        if name not in self._data:
            if name not in DATA:
                raise KeyError(f"unknown report data {name!r}; a section can need: {', '.join(sorted(DATA))}")
            self._data[name] = DATA[name][0](self)
        return self._data[name]

    def provide(self, name: str, value: Any) -> None:
        """Give a shared analysis computed elsewhere (e.g. a caller's history series)."""
        self._data[name] = value


class ReportSection(ABC):
    """One section of the HTML and Markdown reports (see the module docstring).

    Class attributes: :attr:`name` (entry-point name and HTML id), :attr:`title`
    (the heading), :attr:`order` (position; lower first), :attr:`needs` (shared
    analyses read through :meth:`ReportContext.need`), :attr:`description` (shown
    by ``harness list report_sections``), :attr:`wrap`.
    Built-in orders: overview 0, contention-banner 10, skipped-files 20, pivot 25,
    summary 30, charts 40, generation 45, backends 50, scaling 60, energy 70, quality 80, roofline 90,
    regressions 100, history 110, procurement 120, other-metrics 130, failed 140,
    environment 150.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    order: ClassVar[int]
    needs: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    wrap: ClassVar[bool] = True  # False: html() returns the complete element itself

    @abstractmethod
    def data(self, ctx: ReportContext) -> Any:
        """What the section shows, computed once per report; None leaves it out."""

    @abstractmethod
    def html(self, data: Any, ctx: ReportContext) -> Any:
        """The HTML body: Markup, or :class:`Rendered` with figures."""

    def markdown(self, data: Any, ctx: ReportContext) -> str:
        """A Markdown block (escape file strings with :func:`md_escape`); "" for none."""
        return ""

    @staticmethod
    def render_string(source: str, **context: Any) -> Markup:
        """Render an (autoescaped) Jinja2 template string; the macros are ``m``."""
        return render_string(source, **context)


@dataclass
class RenderedReport:
    """A rendered report (HTML or Markdown) and the one-line messages of the sections
    that could not be drawn (each is also shown in the report itself)."""

    text: str
    failures: list[str] = field(default_factory=list)


class SectionLoadError(RuntimeError):
    """A registered section whose code could not be loaded or is incomplete."""


def error_text(e: BaseException) -> str:
    """How a section's exception is shown: the message of a load error, else "Type: message"."""
    return str(e) if isinstance(e, SectionLoadError) else f"{type(e).__name__}: {e}"


REQUIRED = ("name", "title", "order")


def check_section_class(obj: Any, name: str) -> None:
    """Raise TypeError naming what a registered section lacks."""
    if not (isinstance(obj, type) and issubclass(obj, ReportSection)):
        raise TypeError(f"report section {name!r} is {obj!r}, not a subclass of harness.reports.api.ReportSection")
    missing = [a for a in REQUIRED if not hasattr(obj, a)]
    missing += sorted(getattr(obj, "__abstractmethods__", ()))
    if missing:
        raise TypeError(f"report section {name!r} ({obj.__module__}.{obj.__qualname__}) is missing: "
                        f"{', '.join(missing)}")  # fmt: skip
    if not isinstance(obj.order, (int, float)) or isinstance(obj.order, bool):
        raise TypeError(f"report section {name!r}: order must be a number, not {obj.order!r}")
    unknown = [n for n in obj.needs if n not in DATA]
    if unknown:
        raise TypeError(f"report section {name!r} needs unknown data {', '.join(map(repr, unknown))}; "
                        f"choose from: {', '.join(sorted(DATA))}")  # fmt: skip
