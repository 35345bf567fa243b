"""Regressions: per machine and suite, the latest run against the earlier runs of the
same suite on the same machine (like with like: :mod:`harness.reports.like_with_like`;
what was left out is said in one line), as ``harness compare`` judges it by default
(:func:`harness.analysis.regressions.latest_vs_earlier`); contended cells give no verdict."""

from __future__ import annotations

from typing import Any, Sequence

from harness.analysis.regressions import verdict_label
from harness.reports import formatting as F
from harness.reports.sections.common import M, ReportContext, ReportSection, Rendered, layout, legacy, pct, pe, table
from harness.reports.tables import md_escape
from harness.reports.templating import join, render

VERDICT_COLOR = {"regression": "#cf222e", "improvement": "#1a7f37", "inconclusive": "#9a6700", "unchanged": "#57606a"}
HEADS = ["cell", "verdict", "change", "95% CI", "p (Holm)", "threshold", "min. detectable", "noise model", "notes"]


def _figure(n: int, res: Any) -> list[Any]:
    cells = [c for c in res.cells if c.ratio is not None]
    if not cells:
        return []
    traces = []
    for verdict in ("regression", "inconclusive", "unchanged", "improvement"):
        mine = [c for c in cells if c.verdict == verdict or (
            verdict == "inconclusive" and c.verdict.startswith("inconclusive"))]
        if not mine:
            continue
        xs = [100 * (c.ratio - 1) for c in mine]
        tr: dict[str, Any] = {
            "type": "scatter", "mode": "markers", "name": verdict, "x": xs,
            "y": [pe(c.key) for c in mine],
            "marker": {"color": VERDICT_COLOR[verdict], "size": 9},
            "customdata": [[pe(verdict_label(c)), f"{x:+.1f}",
                            (f"[{100 * (c.ratio_ci[0] - 1):+.1f}, {100 * (c.ratio_ci[1] - 1):+.1f}]" if c.ratio_ci else "n/a"),
                            pct(c.threshold, False)] for c, x in zip(mine, xs)],
            "hovertemplate": "%{y}<br>change %{customdata[1]}% (candidate vs baseline), "
                             "95% CI %{customdata[2]}%<br>threshold %{customdata[3]}<extra>%{customdata[0]}</extra>",
        }  # fmt: skip
        if any(c.ratio_ci for c in mine):
            tr["error_x"] = {"type": "data", "symmetric": False,
                             "array": [100 * (c.ratio_ci[1] - c.ratio) if c.ratio_ci else 0 for c in mine],
                             "arrayminus": [100 * (c.ratio - c.ratio_ci[0]) if c.ratio_ci else 0 for c in mine]}  # fmt: skip
        traces.append(tr)
    labels = sorted({pe(c.key) for c in cells})
    metric = res.settings.metric
    lay = layout(f"Change per cell vs earlier runs (%, {pe(metric)}; {F.increase_means(metric)})",
                 "change (%)", height=max(260, 120 + 26 * len(labels)))  # fmt: skip
    lay["yaxis"].update({"type": "category", "categoryorder": "array", "categoryarray": labels})
    lay["shapes"] = [{"type": "line", "x0": 0, "x1": 0, "xref": "x", "y0": 0, "y1": 1, "yref": "paper",
                      "line": {"color": "#888", "dash": "dot"}}]  # fmt: skip
    return [(f"chart-regressions-{n}", {"data": traces, "layout": lay},
             f"Each point: the cell's change in {metric} ({F.increase_means(metric)}) with its 95% CI "
             "(error bar). Hover for the verdict and threshold.")]  # fmt: skip


NO_CLEAN_BASELINE = "no baseline: every earlier measurement was contended (left out)"


def _label(c: Any, check: dict[str, Any]) -> str:
    """compare's verdict words, except for a cell that the earlier runs did measure but
    only under contention: ``only_candidate`` would read as a new cell."""
    if c.verdict == "only_candidate" and c.key in _measured_keys(check):
        return NO_CLEAN_BASELINE
    return verdict_label(c)


def _measured_keys(check: dict[str, Any]) -> set[str]:
    from harness.analysis.compare import cell_key

    return {cell_key(c) for d in check.get("baseline") or [] for c in d.get("cells") or []
            if isinstance(c, dict) and c.get("status") == "ok"}  # fmt: skip


def _rows(res: Any, check: dict[str, Any]) -> list[list[Any]]:
    contended = check["contended"]
    rows = []
    for c in sorted(res.cells, key=lambda c: (c.verdict != "regression", c.key)):
        ci = f"[{pct(c.ratio_ci[0] - 1)}, {pct(c.ratio_ci[1] - 1)}]" if c.ratio_ci else "n/a"
        verdict_html = join([_label(c, check), M.badge("contended", "contended") if c.key in contended else ""])
        rows.append([
            (M.code(c.key), c.key), (verdict_html, c.verdict),
            (pct(c.ratio - 1) if c.ratio else "n/a", (c.ratio or 0) - 1), (ci, ""),
            ("n/a" if c.p_adjusted is None else f"{c.p_adjusted:.3g}", c.p_adjusted if c.p_adjusted is not None else ""),
            (pct(c.threshold, False), c.threshold or ""), (pct(c.mdc, False), c.mdc or ""),
            (c.noise_model, c.noise_model), ("; ".join(c.notes), ""),
        ])  # fmt: skip
    return rows


class RegressionsSection(ReportSection):
    name = "regressions"
    title = "Regressions"
    order = 100
    needs = ("history", "regressions")
    description = "each machine's latest run against its earlier runs (compare's defaults; no verdict under contention)"

    def data(self, ctx: ReportContext) -> Any:
        return ctx.need("regressions") or None

    def html(self, data: Any, ctx: ReportContext) -> Any:
        blocks, figs = [], []
        for n, machine, mruns, check in data:
            res = check["result"]
            if not res.cells:
                continue
            blocks.append({
                "run_id": mruns[-1].get("run_id"), "n_base": len(check["baseline"]), "machine": machine,
                "suite": check.get("suite"), "excluded": check.get("excluded"),
                "since": check["since"], "n_regressions": len(res.regressions), "n_contended": len(check["contended"]),
                "untested": _untested(res),
                "dropped": check["dropped"], "table": table(HEADS, _rows(res, check)),
            })  # fmt: skip
            figs += _figure(n, res)
        if not blocks:
            return None
        return Rendered(render("regressions.html.j2", blocks=blocks), figs)

    def markdown(self, data: Any, ctx: ReportContext) -> str:
        out: list[str] = []
        for _, machine, _mruns, check in data:
            res, base, since, contended = check["result"], check["baseline"], check["since"], check["contended"]
            flagged = [c for c in res.cells
                       if c.verdict in ("regression", "improvement") or c.verdict.startswith("inconclusive")]
            since_txt = f" (since the change at {md_escape(since)})" if since else ""
            cont_txt = (f"; {len(contended)} contended cell(s) in the latest run: no verdict" if contended else "") + (
                f"; {check['dropped']} contended earlier measurement(s) left out of the baseline" if check["dropped"] else "")
            suite_txt = f" of {md_escape(check['suite'])}" if check.get("suite") else ""
            out += ["", f"#### Latest run vs {len(base)} earlier{suite_txt}{since_txt} on {md_escape(machine)}: "
                    f"{'**' + str(len(res.regressions)) + ' regression(s)**' if res.regressions else _headline(res)}"
                    f"{cont_txt}"]  # fmt: skip
            if check.get("excluded"):
                out += ["", f"_Like with like: {md_escape(check['excluded'])}._"]
            if flagged:
                out += ["", f"| cell | verdict | change ({F.increase_means(res.settings.metric)}) | 95% CI | threshold |",
                        "|---|---|--:|---|--:|"]  # fmt: skip
                for c in flagged:
                    ci = f"[{pct(c.ratio_ci[0] - 1)}, {pct(c.ratio_ci[1] - 1)}]" if c.ratio_ci else "n/a"
                    verdict = md_escape(_label(c, check))
                    if c.key in contended:
                        verdict = f"**{verdict}** ({md_escape(F.shorten(contended[c.key], 80))})"
                    out.append(f"| {md_escape(c.key)} | {verdict} | {pct((c.ratio or 1) - 1)} | {ci} | "
                               f"{pct(c.threshold).lstrip('+')} |")  # fmt: skip
        return "\n".join(out[1:])


def regressions_section(runs: Sequence[dict[str, Any]], series: Sequence[Any] | None = None) -> tuple[str, list[Any]]:
    """``(html, figures)`` of the regressions section; ``series``: the runs' history if
    already computed."""
    ctx = ReportContext(runs)
    if series is not None:
        ctx.provide("history", series)
    return legacy(RegressionsSection(), ctx)


def _untested(res: Any) -> bool:
    """Whether no cell of the check could be tested (every one inconclusive, e.g.
    contended, or on one side only): then "no regression" would claim what nobody checked."""
    return bool(res.cells) and all(c.verdict.startswith("inconclusive") or c.verdict in (
        "only_baseline", "only_candidate", "not_comparable") for c in res.cells)


def _headline(res: Any) -> str:
    return f"no verdict: none of the {len(res.cells)} cell(s) could be tested" if _untested(res) else "no regression"
