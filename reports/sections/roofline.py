"""Roofline per calibrated device: bandwidth slope and peak FLOP/s ceilings from the
run's ``calibration``, cells placed by arithmetic intensity and achieved FLOP/s. Each
point names its cell on hover and, up to :data:`MAX_TEXT_LABELS` points, in a text label
(the spec fields that differ between the points). A calibration applied by ``harness
report --calibration`` is labelled as applied at report time."""

from __future__ import annotations

import math
from typing import Any, Mapping

from harness.reports import cells as C
from harness.reports import formatting as F
from harness.reports.sections.common import COLORS, ReportContext, ReportSection, Rendered, layout, legacy, pe
from harness.reports.templating import render

AI, ACHIEVED = "arithmetic_intensity_flop_per_byte", "achieved_flops_per_s"
MAX_TEXT_LABELS = 12  # up to this many points carry a text label beside them (more would overlap)


POSITIONS = ("top center", "bottom center", "middle right", "middle left", "top right", "bottom left")


def _text_positions(xs: list[float], ys: list[float], near: float = 0.12) -> list[str]:
    """Where each point's text label goes: points within ``near`` decades of an earlier
    point (log axes) take the next position round it, so close labels do not overprint."""
    out: list[str] = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        k = sum(1 for j in range(i) if abs(math.log10(xs[j] / x)) < near * 4 and abs(math.log10(ys[j] / y)) < near)
        out.append(POSITIONS[k % len(POSITIONS)])
    return out


def _plottable(c: dict[str, Any], device: Any) -> bool:
    return (C.status(c) == "ok" and (c.get("spec") or {}).get("device", "").split(":")[0] == str(device).split(":")[0]
            and F.is_number(C.metric(c, AI)) and F.is_number(C.metric(c, ACHIEVED))
            and C.metric(c, AI) > 0 and C.metric(c, ACHIEVED) > 0)  # fmt: skip


class RooflineSection(ReportSection):
    name = "roofline"
    title = "Roofline"
    order = 90
    description = "cells on the calibrated roofline of their device (arithmetic intensity vs achieved FLOP/s)"

    def data(self, ctx: ReportContext) -> Any:
        found = []
        for run in ctx.runs:
            cal = run.get("calibration")
            if not isinstance(cal, Mapping):
                continue
            for device, info in cal.items():
                if not isinstance(info, Mapping):
                    continue
                peaks = info.get("peak_flops_per_s") if isinstance(info.get("peak_flops_per_s"), Mapping) else {}
                peaks = {k: v for k, v in peaks.items() if F.is_number(v) and v > 0}
                bw = info.get("mem_bandwidth_bytes_per_s")
                pts = [c for c in run.get("cells") or [] if _plottable(c, device)]
                if not pts or (not peaks and not F.is_number(bw)):
                    continue
                found.append((run, device, peaks, bw, pts))
        return found or None

    def html(self, data: Any, ctx: ReportContext) -> Any:
        figs, blocks = [], []
        for n, (run, device, peaks, bw, pts) in enumerate(data):
            xs = [C.metric(c, AI) for c in pts]
            lo, hi = min(xs) / 10, max(xs) * 10
            grid = [lo * (hi / lo) ** (i / 60) for i in range(61)]
            traces = []
            for k, (prec, peak) in enumerate(sorted(peaks.items())):
                ys = [min(peak, x * bw) if F.is_number(bw) else peak for x in grid]
                traces.append({"type": "scatter", "mode": "lines", "name": pe(f"ceiling {prec}: {F.si(peak, 'FLOP/s')}"),
                               "x": grid, "y": ys, "line": {"color": COLORS[k % len(COLORS)], "width": 1.5},
                               "hoverinfo": "skip"})  # fmt: skip
            if F.is_number(bw) and not peaks:
                traces.append({"type": "scatter", "mode": "lines", "name": pe(f"memory bandwidth {F.si(bw, 'B/s')}"),
                               "x": grid, "y": [x * bw for x in grid], "hoverinfo": "skip"})  # fmt: skip
            labels = C.short_labels(pts)
            few = len(pts) <= MAX_TEXT_LABELS  # text beside each point; always the cell on hover
            traces.append({
                "type": "scatter", "mode": "markers+text" if few else "markers", "name": "cells", "x": xs,
                "y": [C.metric(c, ACHIEVED) for c in pts], "marker": {"size": 10, "color": "#d62728"},
                "text": [pe(lb) for lb in labels], "textposition": _text_positions(xs, [C.metric(c, ACHIEVED) for c in pts]),
                "textfont": {"size": 11},
                "hovertext": [pe(C.cell_id(c)) for c in pts],
                "customdata": [[pe(C.cell_id(c)), F.sig(C.metric(c, AI)), F.si(C.metric(c, ACHIEVED), "FLOP/s"),
                                F.percent(C.metric(c, "mfu"), 1) or "n/a"] for c in pts],
                "hovertemplate": "%{customdata[0]}<br>intensity %{customdata[1]} FLOP/byte<br>achieved %{customdata[2]}"
                                 " (MFU %{customdata[3]})<extra></extra>",
            })  # fmt: skip
            report_time = (run.get("report_calibration") or {}).get("label") if isinstance(
                run.get("report_calibration"), Mapping) else None  # fmt: skip
            title = f"Roofline: {pe(device)} ({pe(run.get('run_id'))})" + (f"<br><sub>{pe(report_time)}</sub>"
                                                                           if report_time else "")  # fmt: skip
            lay = layout(title, "arithmetic intensity (FLOP/byte, log)", "achieved FLOP/s (log)", height=480)
            lay["xaxis"]["type"] = "log"
            lay["yaxis"]["type"] = "log"
            figs.append((f"chart-roofline-{n}", {"data": traces, "layout": lay},
                         "Ceilings: memory bandwidth slope and the calibrated peak FLOP/s per precision; points: cells "
                         "placed by their arithmetic intensity and achieved FLOP/s."))  # fmt: skip
            peaks_txt = ", ".join(k + " " + str(F.si(v, "FLOP/s")) for k, v in sorted(peaks.items())) or "n/a"
            blocks.append((device, run.get("run_id"), F.si(bw, "B/s") or "n/a", peaks_txt, report_time))
        return Rendered(render("roofline.html.j2", blocks=blocks), figs)


def roofline_section(runs: list[dict[str, Any]]) -> tuple[str, list[Any]]:
    """``(html, figures)`` of the roofline section ("" without a calibration)."""
    return legacy(RooflineSection(), ReportContext(runs))
