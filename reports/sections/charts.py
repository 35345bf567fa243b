"""Latency distribution, sustained throughput and peak memory per cell (the most
recent runs only; see :data:`harness.reports.api.MAX_RUNS_IN_CHARTS`)."""

from __future__ import annotations

from typing import Any

from harness.reports.api import MAX_RUNS_IN_CHARTS
from harness.reports.figures import latency_figure, memory_figure, throughput_figure
from harness.reports.sections.common import ReportContext, ReportSection, Rendered


class ChartsSection(ReportSection):
    name = "charts"
    title = "Charts"
    order = 40
    description = "latency box plots, sustained throughput and peak memory per cell"

    def data(self, ctx: ReportContext) -> Any:
        runs = ctx.runs
        chart_runs = ctx.chart_runs
        note = (f" Only the {MAX_RUNS_IN_CHARTS} most recent of the {len(runs)} runs are drawn here."
                if len(runs) > MAX_RUNS_IN_CHARTS else "")
        lat_fig = latency_figure(chart_runs)
        figures = [
            ("chart-latency", lat_fig, "Each box: the raw per-iteration latencies of one cell "
             "(box = quartiles, line = median, dashed = mean, dots = samples). Hover for values in ms." + note
             + (" " + lat_fig["note"] if lat_fig and lat_fig.get("note") else "")),
            ("chart-throughput", throughput_figure(chart_runs), "Sustained throughput of each cell (samples processed "
             "in the timed loop / the loop's wall time), in samples per second; error bars: the range over the cell's "
             "worker processes (run --repeats); the hover shows the p50 latency and its CI. "
             "\u26a0 marks a contended cell." + note),
            ("chart-memory", memory_figure(chart_runs), "Peak resident host memory of the worker process while the "
             "cell ran (and peak device memory where measured), in MiB. Cells without a value are listed as n/a in "
             "the tables." + note),
        ]  # fmt: skip
        return [(d, f, cap) for d, f, cap in figures if f is not None] or None

    def html(self, data: Any, ctx: ReportContext) -> Any:
        return Rendered("", data)
