"""Report sections beyond the summary: regressions, history, procurement, energy,
quality vs speed, roofline, backends side by side. Each section function returns
``(html, figures)`` where ``figures`` is a list of ``(div_id, figure, caption)``; an
empty html string means the data for that section is absent (the section is left out).

Same rules as :mod:`harness.reports.html`: every string from a result file is escaped
(``_e`` for HTML, ``_pe`` for plotly data), hover templates are constants that only
refer to ``customdata``, and nothing is invented: a value a run did not measure is
not drawn, an estimate is labelled "estimate".

Contention: no verdict, trend or ranking is drawn from a cell measured while other
processes competed for the machine. The regressions section leaves contended earlier
measurements out of the baseline and shows a contended latest cell as "inconclusive"
with the evidence; the history marks contended runs and detects changes on the
others; the procurement view ranks uncontended runs only. Directions and units come
from the declared metric table (:mod:`harness.core.metrics`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from harness.reports import cells as C
from harness.reports import formatting as F

Fig = tuple[str, dict[str, Any], str]
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
_VERDICT_COLOR = {"regression": "#cf222e", "improvement": "#1a7f37", "inconclusive": "#9a6700", "unchanged": "#57606a"}
MAX_HISTORY_CHARTS = 6


def _e(x: Any) -> str:
    from harness.reports.html import _e as esc

    return esc(x)


def _pe(x: Any) -> str:
    from harness.reports.html import _pe as esc

    return esc(x)


def _table(heads: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "grid sortable") -> str:
    """Rows are (html, sort) pairs or html strings; heads are plain text."""
    th = "".join(f'<th scope="col" tabindex="0" title="click to sort">{_e(h)}</th>' for h in heads)
    body = []
    for r in rows:
        tds = []
        for c in r:
            if isinstance(c, tuple):
                h, sort = c
                num = F.is_number(sort)
                tds.append(f'<td data-sort="{_e(sort)}"{" class=num" if num else ""}>{h}</td>')
            else:
                tds.append(f"<td>{c}</td>")
        body.append(f"<tr>{''.join(tds)}</tr>")
    return f'<div class="scroll"><table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _pct(x: float | None, signed: bool = True) -> str:
    if not F.is_number(x):
        return "n/a"
    return f"{x * 100:+.1f}%" if signed else f"{x * 100:.1f}%"


def _layout(title: str, x_title: str, y_title: str = "", height: int = 420, **kw: Any) -> dict[str, Any]:
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


def _by_machine(runs: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    from harness.analysis.compare import fingerprint

    out: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(runs, key=lambda d: (str(d.get("created") or ""), str(d.get("run_id") or ""))):
        out.setdefault(fingerprint(r), []).append(r)
    return out


# ----------------------------------------------------------------------------- regressions


def regression_baseline(
    mruns: Sequence[dict[str, Any]], series: Sequence[Any] | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """The baseline for a machine's latest run: its earlier runs, from the most recent
    change point detected among them on (a known step must not inflate the noise).
    ``series``: :func:`harness.analysis.history.build_history` of these or more runs (computed
    here when not given)."""
    from harness.analysis.history import build_history

    earlier = list(mruns[:-1])
    ids = [str(r.get("run_id")) for r in earlier]
    pos = {rid: i for i, rid in enumerate(ids)}
    if series is None:
        series = build_history(mruns)
    # detected on all runs (a change needs 3 runs on each side); keep the earlier runs after it
    starts = [pos[ch.run_id] for s in series for ch in s.changes if ch.run_id in pos]
    if not starts:
        return earlier, None
    k = max(starts)
    return earlier[k:], str(earlier[k].get("run_id"))


CONTENDED_VERDICT = "inconclusive"
CONTENDED_LABEL = "inconclusive: contended"  # harness.analysis.compare's wording
CONTENDED_NOTE = "contended: no verdict from a cell measured under contention"


def _without_contended(doc: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """A shallow copy of ``doc`` without its contended cells, and how many were dropped."""
    from harness.analysis.history import contention_note

    cells = [c for c in doc.get("cells") or [] if not (isinstance(c, Mapping) and c.get("status") == "ok"
                                                       and contention_note(c))]  # fmt: skip
    return {**doc, "cells": cells}, len(doc.get("cells") or []) - len(cells)


def latest_vs_earlier(mruns: Sequence[dict[str, Any]], series: Sequence[Any] | None = None) -> dict[str, Any]:
    """The regressions check of one machine's runs (time order): its latest run against
    :func:`regression_baseline`, as ``harness compare`` judges it by default, with
    contention kept out of every verdict: contended cells of the earlier runs are left
    out of the baseline, and a contended cell of the latest run gets the verdict
    "inconclusive" whatever the test said (its note gives the evidence).

    Returns ``{"result": Comparison, "baseline": [runs], "since": run id or None,
    "contended": {cell key: evidence} of the latest run, "dropped": contended baseline
    measurements left out}``."""
    from harness.analysis.compare import cell_key, compare_docs
    from harness.analysis.history import contention_note

    base, since = regression_baseline(mruns, series)
    cleaned = [_without_contended(d) for d in base]
    cand = mruns[-1]
    contended = {cell_key(c): note for c in cand.get("cells") or []
                 if isinstance(c, Mapping) and c.get("status") == "ok" and (note := contention_note(c))}  # fmt: skip
    res = compare_docs([d for d, _ in cleaned], [cand])
    for c in res.cells:
        if c.key in contended:
            if c.verdict in ("regression", "improvement", "unchanged"):
                c.verdict = CONTENDED_VERDICT
                if hasattr(c, "verdict_text"):
                    c.verdict_text = CONTENDED_LABEL
            c.notes.insert(0, f"{CONTENDED_NOTE} ({contended[c.key]})")
    return {"result": res, "baseline": base, "since": since, "contended": contended,
            "dropped": sum(n for _, n in cleaned)}  # fmt: skip


def verdict_label(c: Any) -> str:
    """A cell comparison's verdict as compare words it ("inconclusive: contended")."""
    label = getattr(c, "label", None)
    return label if isinstance(label, str) and label else str(c.verdict)


def regressions_section(runs: Sequence[dict[str, Any]], series: Sequence[Any] | None = None) -> tuple[str, list[Fig]]:
    """Latest run of each machine against that machine's earlier runs (harness compare
    with default settings: stat min, threshold auto, Holm over cells); contended cells
    give no verdict (see :func:`latest_vs_earlier`)."""
    from harness.analysis.history import build_history

    if series is None:
        series = build_history(runs)
    blocks, figs = [], []
    for n, (machine, mruns) in enumerate(_by_machine(runs).items()):
        if len(mruns) < 2:
            continue
        check = latest_vs_earlier(mruns, [s for s in series if s.machine == machine])
        res, base, since = check["result"], check["baseline"], check["since"]
        cand = mruns[-1:]
        cells = [c for c in res.cells if c.ratio is not None]
        if not res.cells:
            continue
        contended_txt = ""
        if check["contended"]:
            contended_txt += (f' <span class="badge contended">{len(check["contended"])} contended</span> '
                              "(shown as inconclusive: no verdict under contention)")  # fmt: skip
        if check["dropped"]:
            contended_txt += (f' <span class="muted">{check["dropped"]} contended earlier measurement(s) left out '
                              "of the baseline</span>")  # fmt: skip
        head = (
            f"<p><b>{_e(cand[0].get('run_id'))}</b> vs {len(base)} earlier run{'s' if len(base) > 1 else ''} on "
            f"machine <code>{_e(machine)}</code>"
            + (f" (the runs since the last detected change, at <code>{_e(since)}</code>)" if since else "")
            + ": "
            + (f'<span class="badge st-failed">{len(res.regressions)} regression(s)</span>' if res.regressions
               else '<span class="badge st-ok">no regression</span>')
            + contended_txt + "</p>"
        )  # fmt: skip
        rows = []
        for c in sorted(res.cells, key=lambda c: (c.verdict != "regression", c.key)):
            ci = f"[{_pct(c.ratio_ci[0] - 1)}, {_pct(c.ratio_ci[1] - 1)}]" if c.ratio_ci else "n/a"
            verdict_html = _e(verdict_label(c)) + (' <span class="badge contended">contended</span>'
                                                   if c.key in check["contended"] else "")
            rows.append([
                (f"<code>{_e(c.key)}</code>", c.key), (verdict_html, c.verdict),
                (_e(_pct(c.ratio - 1) if c.ratio else "n/a"), (c.ratio or 0) - 1), (_e(ci), ""),
                (_e("n/a" if c.p_adjusted is None else f"{c.p_adjusted:.3g}"), c.p_adjusted if c.p_adjusted is not None else ""),
                (_e(_pct(c.threshold, False)), c.threshold or ""), (_e(_pct(c.mdc, False)), c.mdc or ""),
                (_e(c.noise_model), c.noise_model), (_e("; ".join(c.notes)), ""),
            ])  # fmt: skip
        blocks.append(head + _table(["cell", "verdict", "change", "95% CI", "p (Holm)", "threshold",
                                     "min. detectable", "noise model", "notes"], rows))  # fmt: skip
        if cells:
            traces = []
            for verdict in ("regression", "inconclusive", "unchanged", "improvement"):
                mine = [c for c in cells if c.verdict == verdict or (
                    verdict == "inconclusive" and c.verdict.startswith("inconclusive"))]
                if not mine:
                    continue
                xs = [100 * (c.ratio - 1) for c in mine]
                tr: dict[str, Any] = {
                    "type": "scatter", "mode": "markers", "name": verdict, "x": xs,
                    "y": [_pe(c.key) for c in mine],
                    "marker": {"color": _VERDICT_COLOR[verdict], "size": 9},
                    "customdata": [[_pe(verdict_label(c)), f"{x:+.1f}", (f"[{100 * (c.ratio_ci[0] - 1):+.1f}, {100 * (c.ratio_ci[1] - 1):+.1f}]" if c.ratio_ci else "n/a"),
                                    _pct(c.threshold, False)] for c, x in zip(mine, xs)],
                    "hovertemplate": "%{y}<br>change %{customdata[1]}% (candidate vs baseline), "
                                     "95% CI %{customdata[2]}%<br>threshold %{customdata[3]}<extra>%{customdata[0]}</extra>",
                }  # fmt: skip
                if any(c.ratio_ci for c in mine):
                    tr["error_x"] = {"type": "data", "symmetric": False,
                                     "array": [100 * (c.ratio_ci[1] - c.ratio) if c.ratio_ci else 0 for c in mine],
                                     "arrayminus": [100 * (c.ratio - c.ratio_ci[0]) if c.ratio_ci else 0 for c in mine]}  # fmt: skip
                traces.append(tr)
            labels = sorted({_pe(c.key) for c in cells})
            metric = res.settings.metric
            lay = _layout(f"Change per cell vs earlier runs (%, {_pe(metric)}; {F.increase_means(metric)})",
                          "change (%)", height=max(260, 120 + 26 * len(labels)))  # fmt: skip
            lay["yaxis"].update({"type": "category", "categoryorder": "array", "categoryarray": labels})
            lay["shapes"] = [{"type": "line", "x0": 0, "x1": 0, "xref": "x", "y0": 0, "y1": 1, "yref": "paper",
                              "line": {"color": "#888", "dash": "dot"}}]  # fmt: skip
            figs.append((f"chart-regressions-{n}", {"data": traces, "layout": lay},
                         f"Each point: the cell's change in {metric} ({F.increase_means(metric)}) with its 95% CI "
                         "(error bar). Hover for the verdict and threshold."))  # fmt: skip
    if not blocks:
        return "", []
    return (
        '<section id="regressions"><h2>Regressions</h2><p class="muted">The latest run of each machine against its '
        "earlier runs, as <code>harness compare</code> judges it (location: minimum of the raw samples; threshold: "
        "auto, the run-to-run noise band; Holm-adjusted p-values). A regression needs a significant change AND a "
        "change beyond the threshold. A contended cell (other processes competed for the machine) gets no "
        "verdict, and contended earlier measurements are not part of the baseline.</p>" + "".join(blocks) + "</section>",
        figs,
    )


# ----------------------------------------------------------------------------- history


def _series_label(s: Any) -> str:
    """How a history series' value is named: "min latency" or the metric's name."""
    return f"{s.stat} latency" if s.metric == "latency_ms" and s.stat else s.metric


def _unit_suffix(unit: str) -> str:
    return f" ({unit})" if unit else ""


def history_section(runs: Sequence[dict[str, Any]], series: Sequence[Any] | None = None) -> tuple[str, list[Fig]]:
    """Trends per cell and machine over many runs, with detected steps and drifts; each
    change labelled worse or better by the metric's declared direction. Contended runs
    are drawn as open red circles and take no part in the detection."""
    from harness.analysis.history import build_history

    if series is None:
        series = build_history(runs)
    if not series:
        return "", []
    first = series[0]
    metric, unit, label = first.metric, first.unit, _series_label(first)
    rows = []
    for s in series:
        for ch in s.changes:
            commit = (ch.commit or "")[:12]
            prev = (ch.previous_commit or "")[:12]
            level = f"{F.value_in_unit(ch.before, s.unit)} → {F.value_in_unit(ch.after, s.unit)}"
            worse = ('<span class="badge st-failed">worse</span>' if ch.worse else
                     '<span class="badge st-ok">better</span>' if ch.worse is False else '<span class="muted">n/a</span>')
            rows.append([
                (f"<code>{_e(s.key)}</code>", s.key), (f"<code>{_e(s.machine)}</code>", s.machine),
                (_e(ch.kind), ch.kind), (f"<code>{_e(ch.run_id)}</code>", ch.created),
                (f"<code>{_e(prev)}</code>..<code>{_e(commit)}</code>" if commit else _e("n/a"), commit),
                (_e(level), ch.before), (_e(_pct(ch.change)), ch.change), (worse, str(ch.worse)),
            ])  # fmt: skip
    changes_html = (
        _table(["cell", "machine", "kind", "began at run", "commits (previous clean..first changed)",
                f"level ({label})", f"change ({F.increase_means(metric)})", "verdict"], rows)
        if rows else "<p>No step or drift detected.</p>"
    )  # fmt: skip
    figs: list[Fig] = []
    by_machine: dict[str, list[Any]] = {}
    for s in series:
        by_machine.setdefault(s.machine, []).append(s)
    for n, (machine, ss) in enumerate(by_machine.items()):
        if n >= MAX_HISTORY_CHARTS:
            break
        traces = []
        for k, s in enumerate(ss):
            color = _COLORS[k % len(_COLORS)]
            lab = _series_label(s)
            traces.append({
                "type": "scatter", "mode": "lines+markers", "name": _pe(s.key), "legendgroup": f"s{k}",
                "x": list(range(1, len(s.points) + 1)), "y": [p.value for p in s.points],
                "line": {"color": color, "width": 1.5}, "marker": {"size": 4},
                "customdata": [[_pe(s.key), _pe(p.run_id), _pe((p.commit or "n/a")[:12]),
                                f"{_pe(lab)} {F.value_in_unit(p.value, s.unit)}",
                                (f" (median of {p.processes} processes)" if p.processes > 1 else "")
                                + ("<br>contended: " + _pe(F.shorten(p.contended, 100)) + " (not used for detection)"
                                   if p.contended else "")] for p in s.points],
                "hovertemplate": "%{customdata[0]}<br>run %{customdata[1]} (commit %{customdata[2]})<br>"
                                 "%{customdata[3]}%{customdata[4]}<extra></extra>",
            })  # fmt: skip
            bad = [(i, p) for i, p in enumerate(s.points) if p.contended]
            if bad:
                traces.append({
                    "type": "scatter", "mode": "markers", "name": _pe(f"contended: {s.key}"), "legendgroup": f"s{k}",
                    "showlegend": False, "x": [i + 1 for i, _ in bad], "y": [p.value for _, p in bad],
                    "marker": {"symbol": "circle-open", "size": 12, "color": "#cf222e", "line": {"width": 2}},
                    "customdata": [[_pe(s.key), _pe(p.run_id), _pe(F.shorten(p.contended, 100)),
                                    f"{_pe(lab)} {F.value_in_unit(p.value, s.unit)}"] for _, p in bad],
                    "hovertemplate": "%{customdata[0]}<br>run %{customdata[1]}: %{customdata[3]}"
                                     "<br>contended: %{customdata[2]}<br>(not used for detection)<extra></extra>",
                })  # fmt: skip
            if s.changes:
                traces.append({
                    "type": "scatter", "mode": "markers", "name": _pe(f"change: {s.key}"), "legendgroup": f"s{k}",
                    "showlegend": False, "x": [c.index + 1 for c in s.changes], "y": [s.points[c.index].value for c in s.changes],
                    "marker": {"symbol": "x", "size": 14, "color": color, "line": {"width": 2}},
                    "customdata": [[_pe(s.key), c.kind, _pe(c.run_id), _pe((c.commit or "n/a")[:12]),
                                    _pct(c.change) + ("" if c.worse is None else (" (worse)" if c.worse else " (better)"))]
                                   for c in s.changes],
                    "hovertemplate": "%{customdata[0]}<br>%{customdata[1]} began at run %{customdata[2]} "
                                     "(commit %{customdata[3]}): %{customdata[4]}<extra></extra>",
                })  # fmt: skip
        lay = _layout(f"History on machine {_pe(machine)}: {_pe(label)} per run{_unit_suffix(unit)}", "run (oldest = 1)",
                      f"{_pe(label)}{' per iteration' if metric == 'latency_ms' else ''}{_unit_suffix(unit)}",
                      height=460)  # fmt: skip
        vals = [p.value for s in ss for p in s.points if p.value > 0]
        if vals and max(vals) / min(vals) > 30:
            lay["yaxis"]["type"] = "log"
        figs.append((f"chart-history-{n}", {"data": traces, "layout": lay},
                     "One line per cell; crosses mark where a detected step or drift began; open red circles are "
                     "contended runs (not used for detection). Hover for the run, commit and value."))  # fmt: skip
    noise = [s.noise for s in series if s.noise is not None]
    noise_txt = f" Median run-to-run noise of the series: {_pct(sorted(noise)[len(noise) // 2], False)}." if noise else ""
    n_cont = sum(1 for s in series for p in s.points if p.contended)
    cont_txt = (f" {n_cont} contended run(s) (other processes competed for the machine) are marked and left out of "
                "the detection." if n_cont else "")
    what = ("the minimum of each run's samples (with <code>run --repeats</code>: the median over the run's "
            "uncontended processes of each one's minimum)" if metric == "latency_ms" and first.stat == "min"
            else f"the run's {_e(label)}")
    return (
        '<section id="history"><h2>History</h2><p class="muted">Each series: one cell on one machine over its runs '
        f"(time order), {what}. Steps: binary segmentation with a robust noise estimate "
        "(z &gt; 5, change &gt; 3%); slow drift: Mann-Kendall trend test (p &lt; 0.01) with the onset at the knee of a "
        f"flat-then-linear fit. Whether a change is worse or better comes from the metric's declared direction."
        f"{_e(noise_txt)}{_e(cont_txt)}</p>" + changes_html + "</section>",
        figs,
    )


# ----------------------------------------------------------------------------- procurement


def procurement_section(
    runs: Sequence[dict[str, Any]], prices: Any = None, rank_by: str = "throughput"
) -> tuple[str, list[Fig]]:
    """Several machines side by side (shown when the runs come from 2+ machines)."""
    from harness.analysis.procurement import RANK_METRICS, machines_of, procurement_entries

    machines = machines_of(runs)
    if len(machines) < 2:
        return "", []
    entries = procurement_entries(runs, prices, rank_by)
    rows = []
    for e in entries:
        if e.samples_per_j is not None:
            ppw = (_e(f"{F.sig(e.samples_per_j)} samples/J") + f' <span class="muted">({_e(e.energy_source)})</span>', e.samples_per_j)
        elif e.samples_per_j_estimate is not None:
            ppw = (_e(f"{F.sig(e.samples_per_j_estimate)} samples/J ") + '<span class="badge warn" title="estimated, not measured; never ranked">estimate</span>', "")
        else:
            ppw = (f'<span class="na" title="{_e(e.energy_reason or "no energy measurement")}">n/a</span>', "")
        ppd = ((_e(f"{F.sig(e.perf_per_dollar)} {e.perf_per_dollar_unit}"), e.perf_per_dollar) if e.perf_per_dollar is not None
               else (f'<span class="na" title="{_e("no price for this machine (--prices)" if prices else "no --prices file given")}">n/a</span>', ""))
        if e.contended:
            rank_html = ('– <span class="badge contended" title="every run of this option was measured under '
                         f'contention: not ranked. Evidence: {_e(e.contended)}">contended</span>')
        else:
            rank_html = _e(e.rank if e.rank else "–")
            if e.n_contended:
                rank_html += f' <span class="muted">({e.n_contended} contended run(s) left out)</span>'
        rows.append([
            (f"<code>{_e(e.workload_key)}</code>", e.workload_key), (rank_html, e.rank or ""),
            (f"{_e(e.machine_label)}<br><code class=muted>{_e(e.machine)}</code>", e.machine_label),
            (_e(f"{e.backend} / {e.device}"), f"{e.backend}/{e.device}"),
            (_e(F.throughput(e.throughput_per_s) or "n/a"), e.throughput_per_s or ""),
            (_e(F.ms(e.latency_p50_ms) or "n/a"), e.latency_p50_ms or ""), ppw, ppd,
            (_e(F.percent(e.scaling_efficiency) or "n/a"), e.scaling_efficiency or ""), (_e(e.n_runs), e.n_runs),
        ])  # fmt: skip
    table = _table(["workload config", f"rank ({rank_by})", "machine", "backend / device", "sustained throughput (samples/s)",
                    "p50 latency (ms)", "perf per watt", "perf per dollar", "scaling efficiency", "runs"], rows)  # fmt: skip
    traces = []
    options = list(dict.fromkeys((e.machine, e.backend, e.device) for e in entries))
    for k, opt in enumerate(options):
        mine = [e for e in entries if (e.machine, e.backend, e.device) == opt and e.throughput_per_s]
        if not mine:
            continue
        label = f"{mine[0].machine_label} · {opt[1]}/{opt[2]}"
        traces.append({
            "type": "bar", "orientation": "h", "name": _pe(label), "y": [_pe(e.workload_key) for e in mine],
            "x": [e.throughput_per_s for e in mine], "marker": {"color": _COLORS[k % len(_COLORS)]},
            "customdata": [[_pe(label), F.throughput(e.throughput_per_s), F.ms(e.latency_p50_ms) or "n/a", e.n_runs,
                            "<br>contended runs only: not ranked" if e.contended else ""] for e in mine],
            "hovertemplate": "%{y} on %{customdata[0]}<br>sustained throughput %{customdata[1]} samples/s (median of "
                             "%{customdata[3]} runs)<br>p50 latency %{customdata[2]} ms%{customdata[4]}<extra></extra>",
        })  # fmt: skip
    figs: list[Fig] = []
    if traces:
        n_w = len({e.workload_key for e in entries})
        lay = _layout("Sustained throughput per workload and machine (samples/s)", "sustained throughput (samples/s)",
                      height=max(300, 140 + 22 * n_w * len(traces)), barmode="group")  # fmt: skip
        lay["yaxis"]["autorange"] = "reversed"
        figs.append(("chart-procurement", {"data": traces, "layout": lay},
                     "One bar per machine option (machine, backend, device); hover for throughput and latency."))  # fmt: skip
    mrows = [[(f"<code>{_e(fp)}</code>", fp), (_e(label), label)] for fp, label in machines.items()]
    return (
        '<section id="procurement"><h2>Procurement: machines side by side</h2><p class="muted">'
        f"{len(machines)} machines (environment fingerprints). Values are medians over each machine's runs. "
        "Perf per watt uses measured energy only (samples per joule); estimates are labelled and never ranked. "
        "Runs measured under contention are left out of the medians; an option with contended runs only is shown, "
        "marked, and never ranked. "
        f"Ranked within each workload configuration by <b>{_e(rank_by)}</b> "
        f"(choices: {_e(', '.join(RANK_METRICS))}).</p>"
        + _table(["fingerprint", "machine"], mrows) + table + "</section>",
        figs,
    )


# ----------------------------------------------------------------------------- energy


def energy_section(runs: Sequence[dict[str, Any]]) -> tuple[str, list[Fig]]:
    pairs = [(r, c) for r, c in C.iter_cells(list(runs)) if C.status(c) == "ok" and isinstance(C.metric(c, "energy"), Mapping)]
    if not pairs:
        return "", []
    multi = len(runs) > 1
    rows, measured, estimated = [], [], []
    for r, c in pairs:
        en = C.metric(c, "energy")
        src = str(en.get("source"))
        label = (f"{r.get('run_id')} · " if multi else "") + C.cell_id(c)
        vals = []
        for key in ("energy_per_sample_j", "samples_per_j", "avg_power_w", "peak_power_w", "idle_power_w", "energy_j"):
            txt = F.metric_value(key, en.get(key))
            vals.append((_e(txt) if txt else f'<span class="na" title="{_e(en.get("reason") or "not measured")}">n/a</span>', en.get(key) if F.is_number(en.get(key)) else ""))
        badge = ' <span class="badge warn">estimate</span>' if src == "estimate" else ""
        why = en.get("model") if src == "estimate" else en.get("reason")
        rows.append([(f"<code>{_e(label)}</code>", label), (_e(src) + badge + (f'<br><span class="muted">{_e(why)}</span>' if why else ""), src)] + vals)
        if F.is_number(en.get("energy_per_sample_j")):
            (estimated if src == "estimate" else measured if src != "unavailable" else []).append((label, en, src))
    traces = []
    for name, items, pattern in (("measured", measured, ""), ("estimate", estimated, "/")):
        if items:
            traces.append({
                "type": "bar", "orientation": "h", "name": name, "y": [_pe(l) for l, _, _ in items],
                "x": [en["energy_per_sample_j"] for _, en, _ in items],
                "marker": {"pattern": {"shape": pattern}, "color": "#2ca02c" if name == "measured" else "#bbbbbb"},
                "customdata": [[_pe(l), F.sig(en["energy_per_sample_j"]), _pe(s), F.sig(en.get("avg_power_w")) or "n/a"] for l, en, s in items],
                "hovertemplate": "%{customdata[0]}<br>%{customdata[1]} J per sample (source %{customdata[2]})<br>"
                                 "average power %{customdata[3]} W<extra></extra>",
            })  # fmt: skip
    figs: list[Fig] = []
    if traces:
        n = len(measured) + len(estimated)
        lay = _layout("Energy per sample (J)", "energy per sample (J)", height=max(260, 120 + 26 * n))
        lay["yaxis"]["autorange"] = "reversed"
        figs.append(("chart-energy", {"data": traces, "layout": lay},
                     "Measured energy (NVML counter or power sampling, RAPL) in solid bars; estimates hatched and labelled."))  # fmt: skip
    table = _table(["cell", "source", "J/sample", "samples/J", "avg power", "peak power", "idle power", "energy"], rows)
    return ('<section id="energy"><h2>Energy</h2><p class="muted">From <code>metrics.energy</code>; "n/a" where the '
            "run could not measure it (hover for the reason). Estimates are labelled.</p>" + table + "</section>", figs)  # fmt: skip


# ----------------------------------------------------------------------------- quality vs speed


def _pareto(points: list[tuple[float, float, Any]]) -> list[tuple[float, float, Any]]:
    """Points not dominated (lower latency AND higher accuracy is better), by latency."""
    out, best = [], -math.inf
    for p in sorted(points, key=lambda p: (p[0], -p[1])):
        if p[1] > best:
            out.append(p)
            best = p[1]
    return out


def quality_section(runs: Sequence[dict[str, Any]]) -> tuple[str, list[Fig]]:
    pairs = [(r, c) for r, c in C.iter_cells(list(runs)) if C.status(c) == "ok" and isinstance(C.metric(c, "quality"), Mapping)]
    if not pairs:
        return "", []
    rows = []
    groups: dict[tuple[str, str], list[tuple[float, float, Any]]] = {}
    # fp32 p50 of the same workload/backend/device/mode/batch/size in the same run
    fp32_p50: dict[tuple[Any, ...], float] = {}
    fp32_contended: set[tuple[Any, ...]] = set()
    for r, c in C.iter_cells(list(runs)):
        sp = c.get("spec") or {}
        if C.status(c) == "ok" and sp.get("variant") == "fp32" and C.lat(c, "p50") and not sp.get("world_size"):
            fp32_p50[(r.get("run_id"), sp.get("workload"), sp.get("backend"), sp.get("device"), sp.get("mode"),
                      sp.get("batch_size"), sp.get("size"))] = C.lat(c, "p50")  # fmt: skip
            if C.contention(c):
                fp32_contended.add((r.get("run_id"), sp.get("workload"), sp.get("backend"), sp.get("device"),
                                    sp.get("mode"), sp.get("batch_size"), sp.get("size")))  # fmt: skip
    for r, c in pairs:
        q = C.metric(c, "quality")
        sp0 = c.get("spec") or {}
        fkey = (r.get("run_id"), sp0.get("workload"), sp0.get("backend"), sp0.get("device"),
                sp0.get("mode"), sp0.get("batch_size"), sp0.get("size"))
        base = fp32_p50.get(fkey)
        speedup = base / C.lat(c, "p50") if base and C.lat(c, "p50") else None
        # a speed-up from a contended cell (or a contended fp32 reference) is no verdict on the variant
        contended = C.contention(c) or ("the fp32 reference cell was contended" if fkey in fp32_contended else None)
        spec = c.get("spec") or {}
        gate = q.get("gate") if isinstance(q.get("gate"), Mapping) else {}
        passed = gate.get("passed")
        gate_html = ('<span class="badge st-ok">pass</span>' if passed is True else
                     '<span class="badge st-failed">fail</span>' if passed is False else '<span class="muted">n/a</span>')
        if gate.get("rule"):
            gate_html += f' <span class="muted">{_e(gate.get("rule"))}</span>'
        rows.append([
            (f"<code>{_e(C.cell_id(c))}</code>", C.cell_id(c)), (_e(spec.get("variant")), spec.get("variant")),
            (_e(spec.get("backend")), spec.get("backend")),
            (_e(F.percent(q.get("accuracy"), 2) or "n/a"), q.get("accuracy") if F.is_number(q.get("accuracy")) else ""),
            (_e(f"{100 * q['accuracy_delta']:+.2f} pp" if F.is_number(q.get("accuracy_delta")) else "n/a"), q.get("accuracy_delta") if F.is_number(q.get("accuracy_delta")) else ""),
            (_e(F.percent(q.get("agreement"), 2) or "n/a"), q.get("agreement") if F.is_number(q.get("agreement")) else ""),
            (gate_html, str(passed)), (_e(F.ms(C.lat(c, "p50")) or "n/a"), C.lat(c, "p50") or ""),
            ((_e(f"{speedup:.2f}x") + (f' <span class="badge contended" title="{_e(contended)}">contended</span>'
                                       if contended else ' <span class="badge st-failed">slower</span>' if speedup < 1 else ""))
             if speedup else '<span class="muted">no fp32 cell</span>', speedup or ""),
            (_e(F.bytes_human(C.metric(c, "model_size_bytes")) or "n/a"), C.metric(c, "model_size_bytes") if F.is_number(C.metric(c, "model_size_bytes")) else ""),
            (_e(F.count(C.metric(c, "nonzero_params")) or "n/a"), C.metric(c, "nonzero_params") if F.is_number(C.metric(c, "nonzero_params")) else ""),
            (_e(F.metric_value("compile_time_s", C.metric(c, "compile_time_s")) or "n/a"), C.metric(c, "compile_time_s") if F.is_number(C.metric(c, "compile_time_s")) else ""),
            (_e(q.get("dataset") or ""), str(q.get("dataset") or "")),
        ])  # fmt: skip
        p50, acc = C.lat(c, "p50"), q.get("accuracy")
        if p50 is not None and F.is_number(acc):
            groups.setdefault((str(spec.get("workload")), str(spec.get("device"))), []).append((p50, float(acc), (r, c)))
    figs: list[Fig] = []
    traces = []
    for k, ((w, dev), pts) in enumerate(groups.items()):
        color = _COLORS[k % len(_COLORS)]
        name = f"{w} on {dev}"
        traces.append({
            "type": "scatter", "mode": "markers", "name": _pe(name), "x": [p[0] for p in pts], "y": [100 * p[1] for p in pts],
            "marker": {"color": color, "size": 10},
            "customdata": [[_pe(C.cell_id(p[2][1])), F.ms(p[0]), f"{100 * p[1]:.2f}",
                            F.ci(C.lat(p[2][1], "ci95_low"), C.lat(p[2][1], "ci95_high")) or "n/a"] for p in pts],
            "hovertemplate": "%{customdata[0]}<br>p50 latency %{customdata[1]} ms, 95% CI %{customdata[3]} ms"
                             "<br>accuracy %{customdata[2]}%<extra></extra>",
        })  # fmt: skip
        front = _pareto(pts)
        traces.append({"type": "scatter", "mode": "lines", "name": _pe(f"Pareto frontier: {name}"), "x": [p[0] for p in front],
                       "y": [100 * p[1] for p in front], "line": {"color": color, "dash": "dash", "shape": "hv"},
                       "hoverinfo": "skip"})  # fmt: skip
    if traces:
        figs.append(("chart-quality", {"data": traces, "layout": _layout("Quality vs speed", "p50 latency (ms)", "accuracy (%)")},
                     "Each point a variant; dashed: the Pareto frontier (nothing both faster and more accurate) per workload and device."))  # fmt: skip
    sized = [(C.cell_id(c), C.metric(c, "model_size_bytes")) for _, c in pairs if F.is_number(C.metric(c, "model_size_bytes"))]
    if sized:
        figs.append(("chart-size", {"data": [{
            "type": "bar", "orientation": "h", "y": [_pe(s[0]) for s in sized], "x": [s[1] / F.MIB for s in sized],
            "customdata": [[_pe(s[0]), F.bytes_human(s[1])] for s in sized],
            "hovertemplate": "%{customdata[0]}<br>model size %{customdata[1]}<extra></extra>", "name": "model size"}],
            "layout": _layout("Model size (MiB)", "model size (MiB)", height=max(240, 120 + 26 * len(sized)))},
            "Serialized model size per variant."))  # fmt: skip
    table = _table(["cell", "variant", "backend", "accuracy", "Δ accuracy vs fp32", "agreement with fp32", "quality gate",
                    "p50 (ms)", "speed-up vs fp32 (p50)", "model size", "nonzero params", "compile time", "dataset"], rows)  # fmt: skip
    return ('<section id="quality"><h2>Quality vs speed</h2><p class="muted">Compression is only meaningful next to '
            "what it costs in quality: accuracy, its change against the fp32 baseline, agreement with the fp32 "
            "predictions, and the quality gate. A speed-up below 1x is a slow-down: compression is not "
            "automatically faster; the CPU flags below say which low-precision kernels this hardware has.</p>"
            + _flags_note(runs) + table + "</section>", figs)  # fmt: skip


_LOWP_FLAGS = {
    "avx512_vnni": "int8 dot products (VNNI)",
    "avx_vnni": "int8 dot products (AVX-VNNI)",
    "avx512_bf16": "bf16 dot products",
    "avx512_fp16": "fp16 arithmetic",
    "amx_tile": "AMX tiles",
    "amx_bf16": "AMX bf16",
    "amx_int8": "AMX int8",
}


def _flags_note(runs: Sequence[dict[str, Any]]) -> str:
    """Per host: which low-precision CPU features it has (they explain int8/bf16/fp16 speed)."""
    seen: dict[str, str] = {}
    for r in runs:
        env = r.get("environment") or {}
        flags = (env.get("cpu") or {}).get("flags_dl") or {}
        if not isinstance(flags, Mapping) or not flags:
            continue
        has = [f"{k} ({v})" for k, v in _LOWP_FLAGS.items() if flags.get(k) is True]
        lacks = [k for k in _LOWP_FLAGS if flags.get(k) is False]
        host = str(env.get("host") or "?")
        seen[host] = (f"<b>{_e(host)}</b> ({_e((env.get('cpu') or {}).get('model') or '')}): has "
                      f"{_e(', '.join(has) or 'none of them')}; lacks {_e(', '.join(lacks) or 'none')}")
    if not seen:
        return ""
    return '<p class="muted">CPU low-precision features: ' + "<br>".join(seen.values()) + "</p>"


# ----------------------------------------------------------------------------- roofline


def roofline_section(runs: Sequence[dict[str, Any]]) -> tuple[str, list[Fig]]:
    figs: list[Fig] = []
    blocks = []
    n = 0
    for run in runs:
        cal = run.get("calibration")
        if not isinstance(cal, Mapping):
            continue
        for device, info in cal.items():
            if not isinstance(info, Mapping):
                continue
            peaks = info.get("peak_flops_per_s") if isinstance(info.get("peak_flops_per_s"), Mapping) else {}
            peaks = {k: v for k, v in peaks.items() if F.is_number(v) and v > 0}
            bw = info.get("mem_bandwidth_bytes_per_s")
            pts = [c for c in run.get("cells") or [] if C.status(c) == "ok" and (c.get("spec") or {}).get("device", "").split(":")[0] == str(device).split(":")[0]
                   and F.is_number(C.metric(c, "arithmetic_intensity_flop_per_byte")) and F.is_number(C.metric(c, "achieved_flops_per_s"))
                   and C.metric(c, "arithmetic_intensity_flop_per_byte") > 0 and C.metric(c, "achieved_flops_per_s") > 0]  # fmt: skip
            if not pts or (not peaks and not F.is_number(bw)):
                continue
            xs = [C.metric(c, "arithmetic_intensity_flop_per_byte") for c in pts]
            lo, hi = min(xs) / 10, max(xs) * 10
            grid = [lo * (hi / lo) ** (i / 60) for i in range(61)]
            traces = []
            for k, (prec, peak) in enumerate(sorted(peaks.items())):
                ys = [min(peak, x * bw) if F.is_number(bw) else peak for x in grid]
                traces.append({"type": "scatter", "mode": "lines", "name": _pe(f"ceiling {prec}: {F.si(peak, 'FLOP/s')}"),
                               "x": grid, "y": ys, "line": {"color": _COLORS[k % len(_COLORS)], "width": 1.5},
                               "hoverinfo": "skip"})  # fmt: skip
            if F.is_number(bw) and not peaks:
                traces.append({"type": "scatter", "mode": "lines", "name": _pe(f"memory bandwidth {F.si(bw, 'B/s')}"),
                               "x": grid, "y": [x * bw for x in grid], "hoverinfo": "skip"})  # fmt: skip
            traces.append({
                "type": "scatter", "mode": "markers", "name": "cells", "x": xs,
                "y": [C.metric(c, "achieved_flops_per_s") for c in pts], "marker": {"size": 10, "color": "#d62728"},
                "customdata": [[_pe(C.cell_id(c)), F.sig(C.metric(c, "arithmetic_intensity_flop_per_byte")),
                                F.si(C.metric(c, "achieved_flops_per_s"), "FLOP/s"), F.percent(C.metric(c, "mfu"), 1) or "n/a"] for c in pts],
                "hovertemplate": "%{customdata[0]}<br>intensity %{customdata[1]} FLOP/byte<br>achieved %{customdata[2]}"
                                 " (MFU %{customdata[3]})<extra></extra>",
            })  # fmt: skip
            lay = _layout(f"Roofline: {_pe(device)} ({_pe(run.get('run_id'))})", "arithmetic intensity (FLOP/byte, log)",
                          "achieved FLOP/s (log)", height=480)  # fmt: skip
            lay["xaxis"]["type"] = "log"
            lay["yaxis"]["type"] = "log"
            figs.append((f"chart-roofline-{n}", {"data": traces, "layout": lay},
                         "Ceilings: memory bandwidth slope and the calibrated peak FLOP/s per precision; points: cells placed by "
                         "their arithmetic intensity and achieved FLOP/s."))  # fmt: skip
            blocks.append(f"<p>{_e(device)} in <code>{_e(run.get('run_id'))}</code>: bandwidth "
                          f"{_e(F.si(bw, 'B/s') or 'n/a')}, peaks {_e(', '.join(k + ' ' + str(F.si(v, 'FLOP/s')) for k, v in sorted(peaks.items())) or 'n/a')}</p>")  # fmt: skip
            n += 1
    if not figs:
        return "", []
    return ('<section id="roofline"><h2>Roofline</h2><p class="muted">From the run\'s <code>calibration</code> '
            "(measured peaks) and each cell's counted FLOPs and arithmetic intensity.</p>" + "".join(blocks) + "</section>", figs)  # fmt: skip


# ----------------------------------------------------------------------------- backends


def backends_section(runs: Sequence[dict[str, Any]]) -> str:
    """torch and tensorflow (or any backends) side by side per workload/device/mode."""
    groups: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
    backends: list[str] = []
    for _, c in C.iter_cells(list(runs)):
        if C.status(c) != "ok":
            continue
        s = c.get("spec") or {}
        b = str(s.get("backend"))
        if b not in backends:
            backends.append(b)
        key = tuple(str(s.get(k)) for k in ("workload", "device", "mode", "variant", "batch_size", "size")) + (
            (f"ws{s['world_size']}",) if s.get("world_size") else ())
        groups.setdefault(key, {})[b] = c
    if len(backends) < 2:
        return ""
    rows = []
    for key, byb in groups.items():
        if len(byb) < 2:
            continue
        row = [(_e("/".join(key)), "/".join(key))]
        for b in backends:
            c = byb.get(b)
            p50 = C.lat(c, "p50") if c else None
            ci = F.ci(C.lat(c, "ci95_low"), C.lat(c, "ci95_high")) if c else None
            row.append((_e(f"{F.ms(p50)} {ci or ''}") if p50 is not None else '<span class="muted">—</span>', p50 or ""))
            thr = C.metric(c, "throughput_per_s") if c else None
            row.append((_e(F.throughput(thr)) if F.is_number(thr) else '<span class="muted">—</span>', thr or ""))
        rows.append(row)
    if not rows:
        return ""
    heads = ["workload/device/mode/variant/batch/size"]
    for b in backends:
        heads += [f"{b} p50 ms [95% CI]", f"{b} sustained samples/s"]
    return ('<section id="backends"><h2>Backends side by side</h2><p class="muted">The same workload (same '
            "architecture, parameters and FLOPs) on each backend.</p>" + _table(heads, rows) + "</section>")  # fmt: skip


# ----------------------------------------------------------------------------- scaling


def scaling_section(runs: Sequence[dict[str, Any]]) -> tuple[str, list[Fig]]:
    """Data-parallel cells (``spec.world_size``): global throughput, speed-up and
    scaling efficiency against the same run's 1-worker cell, and a throughput vs
    workers chart with the ideal linear line of each group."""
    pairs = [(r, c) for r, c in C.iter_cells(list(runs))
             if C.status(c) == "ok" and (c.get("spec") or {}).get("world_size")]
    if not pairs:
        return "", []
    multi = len(runs) > 1
    rows = []
    groups: dict[str, list[tuple[int, float, float | None]]] = {}
    for r, c in pairs:
        s = c.get("spec") or {}
        d = C.metric(c, "distributed") or {}
        if not isinstance(d, Mapping):
            d = {}
        ws = int(s.get("world_size"))
        group = "/".join(str(s.get(k)) for k in ("workload", "backend", "device", "variant", "batch_size", "size"))
        label = (f"{r.get('run_id')} · " if multi else "") + group
        thr = C.metric(c, "throughput_per_s")
        eff, spd = d.get("scaling_efficiency"), d.get("speedup_vs_1")
        why = (c.get("unavailable") or {}).get("distributed.scaling_efficiency") or "not measured"
        na = f'<span class="na" title="{_e(why)}">n/a</span>'
        rows.append([
            (f"<code>{_e(label)}</code>", label),
            (_e(ws), ws),
            (_e(d.get("engine")) + (f'<br><span class="muted">{_e(d.get("comm_backend"))}</span>'
                                    if d.get("comm_backend") else ""), str(d.get("engine"))),
            (_e(d.get("global_batch_size")), d.get("global_batch_size") or ""),
            (_e(F.ms(C.lat(c, "p50"))), C.lat(c, "p50") or ""),
            (_e(F.throughput(thr)) if F.is_number(thr) else na, thr if F.is_number(thr) else ""),
            (_e(f"{spd:.2f}x") if F.is_number(spd) else na, spd if F.is_number(spd) else ""),
            ((_e(_pct(eff, signed=False)) + (f' <span class="badge warn" title="{_e(d.get("scaling_warning"))}">'
                                              "check</span>" if d.get("scaling_warning") else ""))
             if F.is_number(eff) else na, eff if F.is_number(eff) else ""),
        ])
        if F.is_number(thr):
            groups.setdefault(label, []).append((ws, float(thr), eff if F.is_number(eff) else None))
    traces = []
    for i, (label, pts) in enumerate(groups.items()):
        pts.sort()
        color = _COLORS[i % len(_COLORS)]
        traces.append({
            "type": "scatter", "mode": "lines+markers", "name": _pe(label), "x": [p[0] for p in pts],
            "y": [p[1] for p in pts], "line": {"color": color},
            "customdata": [[_pe(label), p[0], F.sig(p[1]), _pct(p[2], signed=False)] for p in pts],
            "hovertemplate": "%{customdata[0]}<br>%{customdata[1]} workers: %{customdata[2]} samples/s"
                             "<br>scaling efficiency %{customdata[3]}<extra></extra>",
        })
        one = next((p for p in pts if p[0] == 1), None)
        if one is not None and len(pts) > 1:
            xs = [p[0] for p in pts]
            traces.append({
                "type": "scatter", "mode": "lines", "name": _pe(f"ideal: {label}"), "x": xs,
                "y": [one[1] * x for x in xs], "line": {"color": color, "dash": "dot"}, "hoverinfo": "skip",
            })
    figs: list[Fig] = []
    if traces:
        lay = _layout("Global throughput vs data-parallel workers", "workers (world size)", "samples/s")
        lay["xaxis"]["dtick"] = 1
        figs.append(("chart-scaling", {"data": traces, "layout": lay},
                     "Solid: measured sustained global throughput (samples processed by all workers in the timed loop / "
                     "its wall time). Dotted: "
                     "ideal linear scaling from the same run's 1-worker cell."))  # fmt: skip
    table = _table(["group (workload/backend/device/variant/per-worker batch/size)", "workers", "engine",
                    "global batch", "p50 step", "sustained samples/s", "speed-up vs 1", "scaling efficiency"], rows)
    return ('<section id="scaling"><h2>Data-parallel scaling</h2><p class="muted">Weak scaling: every worker '
            "keeps its batch, so the global batch grows with the workers. Scaling efficiency = throughput(N) / "
            "(N x throughput(1)), against the 1-worker cell of the same run; n/a where the run has none (hover for "
            "the reason).</p>" + table + "</section>", figs)
