"""The per-cell charts of the report (plotly figure dicts; drawn by the charts section).

Strings from result files reach plotly through :func:`~harness.reports.templating.plotly_text`
(HTML-escaped: plotly renders a subset of HTML) and never go into a ``hovertemplate``.
The latency chart embeds a bounded number of points (:func:`latency_point_cap`).
"""

from __future__ import annotations

from typing import Any, Sequence

from harness.reports import cells as C
from harness.reports import formatting as F
from harness.reports.templating import plotly_text as _pe

_RUN_COLORS = (  # plotly's default qualitative palette, one colour per run
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip

# hover labels of box statistics carry no unit in plotly; relabel them via the
# locale dictionary so every number in a hover says "ms"
_BOX_LOCALE = {
    "en-US": {
        "dictionary": {
            k + ":": f"{k} (ms):"
            for k in ("median", "min", "max", "q1", "q3", "mean", "lower fence", "upper fence")
        }
    }
}



def _ok_cells(runs: Sequence[dict[str, Any]]) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    return [
        (i, run, cell)
        for i, run in enumerate(runs)
        for cell in (run.get("cells") or [])
        if C.status(cell) == "ok"
    ]


def _height(n_categories: int, n_runs: int) -> int:
    per = 30 + 16 * max(0, n_runs - 1)
    return int(min(6000, max(260, 110 + 24 * n_runs + per * n_categories)))


def _category_axis(labels: list[str]) -> dict[str, Any]:
    return {
        "type": "category",
        "automargin": True,
        "categoryorder": "array",
        "categoryarray": labels,
        "autorange": "reversed",  # first cell on top, like the table
    }


def _base_layout(title: str, x_title: str, labels: list[str], n_runs: int, multi: bool) -> dict[str, Any]:
    return {
        "title": {"text": title, "x": 0, "xanchor": "left", "xref": "paper", "y": 1, "yanchor": "top",
                  "yref": "container", "pad": {"t": 12}},
        "xaxis": {"title": {"text": x_title}, "zeroline": False, "automargin": True},
        "yaxis": _category_axis(labels),
        "height": _height(len(labels), n_runs),
        "margin": {"l": 20, "r": 80, "t": 50 + (22 * n_runs if multi else 0), "b": 50},
        "showlegend": multi,
        # above the plot, so long run ids do not squeeze the plot area
        "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.0, "yanchor": "bottom"},
        "hovermode": "closest",
    }


def _labels(ok: list[tuple[int, dict[str, Any], dict[str, Any]]]) -> list[str]:
    seen: list[str] = []
    for _, _, cell in ok:
        lab = _pe(C.cell_id(cell))
        if lab not in seen:
            seen.append(lab)
    return seen


LATENCY_POINTS_PER_CELL = 5_000  # samples of one cell embedded in the latency chart, at most
LATENCY_POINTS_TOTAL = 1_000_000  # samples of all cells of the latency chart together, at most
LATENCY_POINTS_MIN = 200  # a cell's share of the total never goes below this
SKETCH_METHOD = ("a quantile sketch: the order statistics at evenly spaced ranks (minimum and maximum included), "
                 "so its quartiles are within one sketch step in rank of the exact ones; every number in the tables "
                 "is computed from all samples")  # fmt: skip


def latency_point_cap(counts: Sequence[int]) -> int:
    """How many samples of one cell the latency chart embeds, given every drawn cell's
    sample count: :data:`LATENCY_POINTS_PER_CELL`, lowered (to at least
    :data:`LATENCY_POINTS_MIN`) when all cells together would exceed
    :data:`LATENCY_POINTS_TOTAL`. Ordinary reports (tens of cells of hundreds to a few
    thousand samples, at most ``MAX_RUNS_IN_CHARTS`` runs) stay under both: every sample
    is drawn, as before the caps. The caps bound the HTML, not any statistic."""
    cap = LATENCY_POINTS_PER_CELL
    if sum(min(n, cap) for n in counts) > LATENCY_POINTS_TOTAL:
        cap = max(LATENCY_POINTS_MIN, LATENCY_POINTS_TOTAL // max(1, len(counts)))
    return cap


def quantile_sketch(xs: Sequence[float], k: int) -> list[float]:
    """``k`` order statistics of ``xs`` at evenly spaced ranks 0, ~(n-1)/(k-1), ..., n-1
    (minimum and maximum included; deterministic); ``xs`` itself when n <= k. O(n log n)."""
    n = len(xs)
    if n <= k:
        return list(xs)
    import numpy as np

    a = np.sort(np.asarray(xs, dtype=float))
    if k < 2:
        return [float(a[n // 2])]
    idx = (np.arange(k, dtype=np.int64) * (n - 1)) // (k - 1)
    return a[idx].tolist()


def latency_figure(runs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Box plot of the raw latency samples (ms) of every ok cell; None if no samples.

    The embedded points are bounded (issue 13, :func:`latency_point_cap`): a cell with
    more samples than the cap is drawn from a :func:`quantile_sketch` of cap points, and
    the figure's ``note`` (shown in the caption next to the chart) and the hover of that
    box say "showing K of N samples" and how they were chosen."""
    ok = []
    for i, run, cell in _ok_cells(runs):
        xs = C.samples(cell)  # once per cell: O(n) each time
        if xs:
            ok.append((i, run, cell, xs))
    if not ok:
        return None
    cap = latency_point_cap([len(xs) for *_, xs in ok])
    multi = len(runs) > 1
    shown: set[int] = set()
    traces = []
    sketched: list[str] = []
    for i, run, cell, xs in ok:
        n = len(xs)
        label = _pe(C.cell_id(cell))
        color = _RUN_COLORS[i % len(_RUN_COLORS)]
        pts = quantile_sketch(xs, cap) if n > cap else xs
        extra = ""
        if n > cap:
            what = f"showing {len(pts):,} of {n:,} samples (quantile sketch)"
            sketched.append(f"{C.cell_id(cell)}" + (f" ({C.run_label(run)})" if multi else "") + f": {what}")
            extra = "<br>" + what  # constant text of ours: no file string in a hovertemplate
        traces.append(
            {
                "type": "box",
                "orientation": "h",
                "x": pts,
                "y0": label,
                "name": _pe(C.run_label(run)),
                "legendgroup": f"run{i}",
                "offsetgroup": f"run{i}",
                "showlegend": multi and i not in shown,
                "marker": {"color": color, "size": 3, "opacity": 0.5},
                "line": {"width": 1.5},
                "boxmean": True,
                "boxpoints": "all" if len(pts) <= 2000 else "outliers",
                "jitter": 0.4,
                "pointpos": 0,
                "hoveron": "boxes+points",
                # constant template: the cell id comes in as the (escaped) category
                "hovertemplate": "%{y}<br>%{x:.4g} ms" + extra + "<extra>%{fullData.name}</extra>",
            }
        )
        shown.add(i)
    labels = _labels([(i, r, c) for i, r, c, _ in ok])
    layout = _base_layout(
        "Latency distribution per cell (ms per iteration)", "latency per iteration (ms)", labels, len(runs), multi
    )
    layout["boxmode"] = "group"
    # cells whose medians span more than 30x are unreadable on one linear axis
    meds = [m for _, _, c, _ in ok if (m := C.lat(c, "p50")) is not None and m > 0]
    if meds and max(meds) / min(meds) > 30 and min(min(xs) for *_, xs in ok) > 0:
        layout["xaxis"]["type"] = "log"
        layout["xaxis"]["title"]["text"] += ", log scale"
    else:
        layout["xaxis"]["rangemode"] = "tozero"
    fig: dict[str, Any] = {"data": traces, "layout": layout, "config": {"locale": "en-US", "locales": _BOX_LOCALE}}
    if sketched:
        listed = "; ".join(sketched[:10]) + (f"; and {len(sketched) - 10} more cell(s)" if len(sketched) > 10 else "")
        fig["note"] = (f"{len(sketched)} cell(s) have more than {cap:,} samples and are drawn from {SKETCH_METHOD}: "
                       f"{listed}.")  # fmt: skip
    return fig


def _throughput_bar_interval(cell: dict[str, Any]) -> tuple[tuple[float, float] | None, str]:
    """The interval drawn around a cell's throughput bar and how it is described: for
    sustained throughput measured in several processes, the range of the processes'
    own sustained values (the run-to-run spread); for an older batch / p50 value, the
    CI the run stored for it. Never the batch / p50 CI around a sustained bar: that is
    an interval of another quantity."""
    if C.throughput_method(cell) != "sustained":
        ci = C.throughput_ci(cell)
        return ci, (f"batch / p50 95% CI [{F.throughput(ci[0])}, {F.throughput(ci[1])}]" if ci else "no CI")
    vals = C.process_metric(cell, "throughput_per_s")
    if len(vals) >= 2:
        lo, hi = min(vals), max(vals)
        return (lo, hi), f"range over {len(vals)} processes [{F.throughput(lo)}, {F.throughput(hi)}]"
    return None, "one process: no run-to-run range"


def throughput_figure(runs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Horizontal bars of sustained throughput (samples/s) per ok cell, with the range
    over its worker processes (``--repeats``) as error bars; the hover adds the p50
    latency and its CI. Contended cells are marked at the end of their bar."""
    ok = [(i, r, c) for i, r, c in _ok_cells(runs) if F.is_number(C.metric(c, "throughput_per_s"))]
    if not ok:
        return None
    multi = len(runs) > 1
    traces = []
    for i, run in enumerate(runs):
        mine = [c for j, _, c in ok if j == i]
        if not mine:
            continue
        intervals = [_throughput_bar_interval(c) for c in mine]
        traces.append(
            {
                "type": "bar",
                "orientation": "h",
                "name": _pe(C.run_label(run)),
                "y": [_pe(C.cell_id(c)) for c in mine],
                "x": [C.metric(c, "throughput_per_s") for c in mine],
                # preformatted like the tables (3 significant digits); numbers only
                "customdata": [
                    [
                        F.throughput(C.metric(c, "throughput_per_s"))
                        + ("" if C.throughput_method(c) == "sustained" else " (batch / p50, older result)"),
                        F.ms(C.lat(c, "p50")) or "n/a",
                        F.ci(C.lat(c, "ci95_low"), C.lat(c, "ci95_high")) or "n/a",
                        desc,
                        "contended: " + _pe(F.shorten(note, 100)) if (note := C.contention(c)) else "",
                    ]
                    for c, (_, desc) in zip(mine, intervals)
                ],
                "marker": {"color": _RUN_COLORS[i % len(_RUN_COLORS)]},
                # the value at the end of each bar, so cells far slower than the
                # fastest one stay readable on the (honest) linear axis
                "text": [(F.throughput(C.metric(c, "throughput_per_s")) or "")
                         + (" \u26a0 contended" if C.contention(c) else "") for c in mine],
                "textposition": "outside",
                "cliponaxis": False,
                "hovertemplate": (
                    "%{y}<br>sustained throughput %{customdata[0]} samples/s, %{customdata[3]}<br>"
                    "p50 latency %{customdata[1]} ms, 95% CI %{customdata[2]} ms<br>%{customdata[4]}"
                    "<extra>%{fullData.name}</extra>"
                ),
            }
        )
        if any(iv for iv, _ in intervals):  # error bars only from values the run stored
            x = traces[-1]["x"]
            traces[-1]["error_x"] = {
                "type": "data",
                "symmetric": False,
                "array": [max(0.0, iv[1] - v) if iv else None for (iv, _), v in zip(intervals, x)],
                "arrayminus": [max(0.0, v - iv[0]) if iv else None for (iv, _), v in zip(intervals, x)],
                "thickness": 1.2,
                "width": 4,
                "color": "#444",
            }
    labels = _labels(ok)
    layout = _base_layout("Sustained throughput per cell (samples/s)", "sustained throughput (samples/s)", labels,
                          len(runs), multi)
    layout["barmode"] = "group"
    return {"data": traces, "layout": layout, "config": {}}


def memory_figure(runs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Horizontal bars of peak host memory (MiB) per ok cell, and peak device memory
    where any cell measured it; cells without a value are left out (see the table)."""
    series = [
        ("peak_host_mem_bytes", "peak host mem"),
        ("peak_device_mem_bytes", "peak device mem"),
    ]
    ok = _ok_cells(runs)
    present = [
        (key, name)
        for key, name in series
        if any(F.is_number(C.metric(c, key)) for _, _, c in ok)
    ]
    if not present:
        return None
    multi = len(runs) > 1
    traces = []
    used: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
    for k, (key, name) in enumerate(present):
        for i, run in enumerate(runs):
            mine = [c for j, _, c in ok if j == i and F.is_number(C.metric(c, key))]
            if not mine:
                continue
            used.extend((i, run, c) for c in mine)
            trace_name = f"{name} · {C.run_label(run)}" if multi else name
            traces.append(
                {
                    "type": "bar",
                    "orientation": "h",
                    "name": _pe(trace_name),
                    "y": [_pe(C.cell_id(c)) for c in mine],
                    "x": [C.metric(c, key) / F.MIB for c in mine],
                    "marker": {
                        "color": _RUN_COLORS[i % len(_RUN_COLORS)],
                        "pattern": {"shape": "" if k == 0 else "/"},
                    },
                    "text": [F.bytes_human(C.metric(c, key)) for c in mine],
                    "textposition": "outside",
                    "cliponaxis": False,
                    "hovertemplate": "%{y}<br>%{x:,.1f} MiB<extra>%{fullData.name}</extra>",
                }
            )
    used_ids = {id(c) for _, _, c in used}
    labels = _labels([x for x in ok if id(x[2]) in used_ids])
    n_series = len(traces)
    layout = _base_layout(
        "Peak memory per cell (MiB)", "peak memory (MiB, 1 MiB = 2^20 bytes)", labels, n_series, n_series > 1
    )
    layout["barmode"] = "group"
    return {"data": traces, "layout": layout, "config": {}}
