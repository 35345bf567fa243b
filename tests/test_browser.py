"""The HTML report in a real browser: headless Debian chromium driven by playwright
(``executable_path="/usr/bin/chromium"``; playwright never downloads a browser here).

Checks: the report loads offline with no console errors or page errors, every chart
div holds a drawn plotly figure with data, hovering a point shows the cell and a value
with its unit, the summary table sorts and filters, and a malicious hostname, tag,
workload name and error message show as text (no injected markup runs).
`make test` installs chromium (apt) and playwright (pinned in requirements.txt); where
either is missing these tests skip and say why.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from harness.reports.html import render_html
from tests.test_report import PAYLOAD, failed_cell, make_doc, ok_cell, rich_runs, skipped_cell, standard_doc

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]  # fmt: skip

pytestmark = [pytest.mark.slow]


def _skip_reason() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} not installed (make test installs it with apt-get where it can)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright (pinned in requirements.txt) is not installed"
    return None


@pytest.fixture(scope="module")
def browser() -> Any:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def open_report(browser: Any, path: Path) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("dialog", lambda d: (problems.append(f"dialog opened: {d.message}"), d.dismiss()))
    page.on("request", lambda r: problems.append(f"network request: {r.url}") if not r.url.startswith(("file:", "data:", "blob:", "about:")) else None)
    page.goto(path.as_uri(), wait_until="load")
    page.wait_for_function(
        "Array.from(document.querySelectorAll('div.chart')).every(d => d.querySelector('.main-svg'))", timeout=30000
    )
    return page, problems


def chart_data_counts(page: Any) -> dict[str, int]:
    """div id -> number of data points plotly holds for it (after drawing)."""
    return page.evaluate(
        """() => Object.fromEntries(Array.from(document.querySelectorAll('div.chart')).map(d => [d.id,
             (d.data || []).reduce((n, t) => n + ((t.x || []).length || (t.y || []).length), 0)
             * (d.querySelector('.main-svg') ? 1 : 0)]))"""
    )


def test_hostile_report_loads_clean_and_escapes_everything(browser: Any, tmp_path: Path) -> None:
    doc = make_doc(
        [ok_cell(workload=PAYLOAD, seed=3), ok_cell("cnn", seed=4), skipped_cell(reason=PAYLOAD), failed_cell(message=PAYLOAD)],
        host=PAYLOAD, tag=PAYLOAD,
    )  # fmt: skip
    page_file = tmp_path / "hostile.html"
    page_file.write_text(render_html([doc, standard_doc(run_id="20261124T110000Z-b-000002")]))
    page, problems = open_report(browser, page_file)
    assert problems == []
    assert page.evaluate("document.querySelectorAll('img[src=x]').length") == 0
    assert page.evaluate("window.__pwned === undefined")
    # the hostname is shown as literal text, in the header table and the environment section
    header_text = page.inner_text("header")
    assert PAYLOAD in header_text
    assert PAYLOAD in page.inner_text("#environment")
    counts = chart_data_counts(page)
    assert set(counts) >= {"chart-latency", "chart-throughput", "chart-memory"}
    assert all(n > 0 for n in counts.values()), counts

    # sort by p50 (found by its header: spec columns with one value are said above the table) and filter
    col = page.evaluate("Array.from(document.querySelectorAll('#summary-table th')).findIndex(t => t.textContent.startsWith('p50'))")
    assert col > 0
    page.click(f"#summary-table th:nth-child({col + 1})")
    order = page.evaluate(
        f"Array.from(document.getElementById('summary-table').tBodies[0].rows).map(r => r.cells[{col}].getAttribute('data-sort'))"
    )
    numbers = [float(v) for v in order if v]
    assert len(numbers) == 4 and numbers == sorted(numbers)
    assert order[len(numbers):] == [""] * (len(order) - len(numbers))  # cells without a p50 last
    page.fill("#cell-filter", "cnn")
    assert page.inner_text("#cell-count") == "3 of 8 cells"
    assert problems == []


def test_full_report_every_chart_has_data_and_hover_shows_cell_value_unit(browser: Any, tmp_path: Path) -> None:
    runs = rich_runs(hostile_host=PAYLOAD)
    page_file = tmp_path / "full.html"
    page_file.write_text(render_html(runs))
    page, problems = open_report(browser, page_file)
    for sid in ("overview", "summary", "charts", "backends", "energy", "quality", "roofline", "regressions",
                "history", "procurement", "environment"):  # fmt: skip
        assert page.locator(f"#{sid}").count() == 1, sid
    counts = chart_data_counts(page)
    expected = {"chart-latency", "chart-throughput", "chart-memory", "chart-energy", "chart-quality", "chart-size",
                "chart-roofline-0", "chart-regressions-0", "chart-history-0", "chart-procurement"}  # fmt: skip
    assert expected <= set(counts), sorted(counts)
    assert all(n > 0 for n in counts.values()), counts
    assert PAYLOAD in page.inner_text("#procurement")  # hostile host of machine B, as text
    # hover the first point of the history chart: plotly shows the cell, run and value with unit
    page.evaluate("""() => { const d = document.getElementById('chart-history-0');
                              Plotly.Fx.hover(d, [{curveNumber: 0, pointNumber: 0}]); }""")
    page.wait_for_selector("#chart-history-0 .hoverlayer .hovertext", timeout=5000)
    hover = page.evaluate("document.querySelector('#chart-history-0 .hoverlayer').textContent")
    assert "/torch/" in hover or "/tensorflow/" in hover
    assert " ms" in hover and "run " in hover
    page.evaluate("""() => Plotly.Fx.hover(document.getElementById('chart-regressions-0'), [{curveNumber: 0, pointNumber: 0}])""")
    page.wait_for_selector("#chart-regressions-0 .hoverlayer .hovertext", timeout=5000)
    hover = page.evaluate("document.querySelector('#chart-regressions-0 .hoverlayer').textContent")
    assert "95% CI" in hover and "%" in hover
    assert problems == []


def test_issue17_summary_fits_1400px_reasons_expand_and_roofline_points_are_labelled(browser: Any, tmp_path: Path) -> None:
    """At 1400 px the summary (with achieved FLOP/s and MFU) needs no horizontal scrolling,
    a long failure reason opens on click, and the roofline's points carry their cell."""
    long = "the backend could not load its shared library because " * 8 + "THE END"
    runs = rich_runs()
    runs[-1]["cells"].append(failed_cell(message=long))
    runs[-1]["cells"].append(skipped_cell())
    page_file = tmp_path / "i17.html"
    page_file.write_text(render_html(runs))
    page, problems = open_report(browser, page_file)
    widths = page.evaluate("""() => { const d = document.querySelector('#summary .scroll');
                                      return [d.scrollWidth, d.clientWidth]; }""")
    assert widths[0] <= widths[1], widths  # nothing to scroll sideways
    heads = page.evaluate("Array.from(document.querySelectorAll('#summary-table th')).map(t => t.textContent)")
    assert "achieved FLOP/s" in heads and "MFU" in heads
    details = page.locator("#summary-table details.reason").first
    assert not page.locator("#summary-table details.reason .full").first.is_visible()
    details.locator("summary").click()
    assert page.locator("#summary-table details.reason .full").first.is_visible()
    assert "THE END" in page.locator("#summary-table details.reason .full").first.inner_text()
    labels = page.evaluate("Array.from(document.querySelectorAll('#chart-roofline-0 .textpoint')).map(t => t.textContent)")
    assert sorted(labels) == ["fp32", "int8_dynamic"], labels
    assert problems == []
