"""Report sections are plug-ins (entry-point group ``dl_harness.report_sections``).

A separate package (tests/fixtures/third_party/section_plugin, "installed" with its
own dist-info on sys.path / PYTHONPATH, no edit to this repository) adds a section that
appears in the HTML and the Markdown report in its declared order; a section that
raises, or cannot be loaded, is shown in the report in its place and every other
section is still drawn. The templates and static files are package files, rendered
with autoescaping on.
"""

from __future__ import annotations

import html
import os
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from harness.reports.html import render_html, render_report
from harness.reports.markdown import markdown_report, render_markdown
from tests.test_report import PAYLOAD, machine_runs, make_doc, ok_cell, standard_doc

SECTION_SITE = Path(__file__).resolve().parent / "fixtures" / "third_party" / "section_plugin"
BUILTIN_ORDER = ["overview", "contention-banner", "skipped-files", "pivot", "summary", "charts", "generation", "backends", "scaling",
                 "energy", "quality", "roofline", "regressions", "history", "procurement", "other-metrics",
                 "failed", "environment"]  # fmt: skip


@pytest.fixture
def section_site(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the third-party section package on the path of this process and its children."""
    monkeypatch.syspath_prepend(str(SECTION_SITE))
    old = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(SECTION_SITE), old) if p))
    return SECTION_SITE


def _ids(text: str) -> list[str]:
    import re

    return re.findall(r'<(?:section|header|div) id="([^"]+)"', text)


def test_builtin_sections_are_registered_in_their_declared_order() -> None:
    from harness.core import registry
    from harness.reports.loader import load_sections

    assert set(BUILTIN_ORDER) <= set(registry.names("report_section"))
    assert [s.name for s in load_sections()] == BUILTIN_ORDER
    assert all(registry.entry_point_value("report_section", n).startswith("harness.reports.sections.")
               for n in BUILTIN_ORDER)  # fmt: skip


def test_templates_and_static_files_are_package_files_rendered_with_autoescape() -> None:
    from harness.reports.templating import render_string

    pkg = resources.files("harness.reports")
    for name in ("templates/page.html.j2", "templates/macros.html.j2", "static/report.css", "static/report.js"):
        assert pkg.joinpath(name).is_file(), name
    assert str(render_string("{{ x }}", x=PAYLOAD)) == html.escape(PAYLOAD).replace("&quot;", "&#34;")
    assert str(render_string("{{ m.badge(x, 'warn', x) }}", x="<b>")) == (
        '<span class="badge warn" title="&lt;b&gt;">&lt;b&gt;</span>')


def test_a_third_party_section_appears_in_html_and_markdown_in_its_declared_order(section_site: Path) -> None:
    doc = make_doc([ok_cell(), ok_cell("cnn", seed=2)], host=PAYLOAD)
    text = render_html([doc])
    ids = _ids(text)
    assert "greeting" in ids
    assert ids.index("summary") < ids.index("greeting") < ids.index("charts")  # order 35: between 30 and 40
    greeting = text[text.index('<section id="greeting">'):text.index('<section id="charts">')]
    assert "<h2>Greeting from a plug-in</h2>" in greeting
    assert html.escape(PAYLOAD, quote=False) in greeting and PAYLOAD not in text  # the host, escaped by Jinja
    assert 'id="chart-greeting"' in greeting and "runs per host &lt;plug-in&gt;" in greeting  # its chart inside
    # a plain str is text: escaped, never markup
    assert "&lt;i&gt;not markup&lt;/i&gt;" in text and "<i>not markup" not in text

    md = render_markdown(machine_runs(5, 1.5, None))
    assert "#### Greeting from a plug-in" in md
    assert md.index("| cell | status") < md.index("#### Greeting") < md.index("#### Latest run vs")


def test_a_broken_section_is_shown_in_place_and_the_others_are_kept(section_site: Path) -> None:
    runs = [standard_doc(), standard_doc(run_id="20261124T110000Z-b-000002")]
    out = render_report(runs)
    ids = _ids(out.text)
    for sid in ("overview", "summary", "charts", "greeting", "failed", "environment"):
        assert sid in ids, sid
    assert ids.index("charts") < ids.index("explodes") < ids.index("environment")  # order 55, in its place
    box = out.text[out.text.index('<section id="explodes"'):]
    box = box[:box.index("</section>")]
    assert 'class="section-failed"' in box and "could not be drawn" in box
    assert "ZeroDivisionError: the plug-in divided by zero &lt;b&gt;" in box  # escaped, as everything else
    # a class missing a method, and an entry point whose module is missing: named, not fatal
    assert "report section &#39;no-html&#39;" in out.text and "is missing: html" in out.text
    assert "not-importable" in out.text and "toy_report_sections_missing" in out.text
    assert any("'explodes' could not be drawn (html): ZeroDivisionError" in f for f in out.failures)
    assert len(out.failures) == 3

    md = markdown_report(runs)
    assert "#### Exploding section" in md.text and "could not be drawn** (markdown): ZeroDivisionError" in md.text
    assert md.text.startswith("### dl-harness results") and "| cell | status" in md.text


def test_the_cli_uses_a_plugin_section_and_warns_about_a_broken_one(section_site: Path, cli: Any,
                                                                    tmp_path: Path) -> None:
    import json

    src = tmp_path / "r.json"
    src.write_text(json.dumps(standard_doc()))
    out = tmp_path / "r.html"
    proc = cli(["report", str(src), "-o", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert "warning: report section 'explodes' could not be drawn (html): ZeroDivisionError" in proc.stderr
    assert "Traceback" not in proc.stderr
    text = out.read_text()
    assert '<section id="greeting">' in text and '<section id="summary">' in text
    md = cli(["report", str(src), "--format", "markdown"])
    assert md.returncode == 0 and "#### Greeting from a plug-in" in md.stdout
    listed = cli(["list", "report_sections"])
    assert listed.returncode == 0, listed.stderr
    assert "greeting" in listed.stdout and "(order 35)" in listed.stdout and "summary" in listed.stdout
    assert "no-html" in listed.stdout and "broken plugin" in listed.stdout and "missing: html" in listed.stdout


def test_a_section_needs_only_known_data() -> None:
    from harness.reports.api import ReportContext, ReportSection, check_section_class

    class Needy(ReportSection):
        name, title, order, needs = "needy", "Needy", 1, ("history", "vibes")

        def data(self, ctx: ReportContext) -> Any:
            return None

        def html(self, data: Any, ctx: ReportContext) -> Any:
            return None

    with pytest.raises(TypeError, match="needs unknown data 'vibes'; choose from: history, procurement, regressions"):
        check_section_class(Needy, "needy")
    with pytest.raises(TypeError, match="not a subclass of harness.reports.api.ReportSection"):
        check_section_class(object, "x")
    ctx = ReportContext(machine_runs(4, 1.0, None))
    assert ctx.need("history") is ctx.need("history")  # computed once, shared by the sections
