"""Data-parallel scaling: global throughput, speed-up and scaling efficiency of the
cells with ``spec.world_size`` against the same run's 1-worker cell. The table is
built once (:func:`scaling_rows`) and rendered twice (HTML and Markdown)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from harness.reports import cells as C
from harness.reports import formatting as F
from harness.reports.sections.common import COLORS, M, ReportContext, ReportSection, Rendered, layout, pct, pe, table
from harness.reports.tables import md_escape
from harness.reports.templating import cat, join, render


@dataclass(frozen=True)
class ScalingRow:
    """One data-parallel cell as both renderings show it (values as stored)."""

    cell_id: str
    stored_id: str  # the cell's own id ("" when absent), as the Markdown table names it
    label: str  # run id (several runs) + group
    world_size: Any
    engine: Any
    comm_backend: Any
    global_batch: Any
    p50_ms: float | None
    throughput: Any
    speedup: Any
    efficiency: Any
    warning: str
    na_reason: str


def scaling_rows(runs: list[dict[str, Any]]) -> list[ScalingRow]:
    """The rows of the scaling table, in stored order."""
    multi = len(runs) > 1
    rows = []
    for r, c in C.iter_cells(runs):
        s = c.get("spec") or {}
        if C.status(c) != "ok" or not s.get("world_size"):
            continue
        d = C.metric(c, "distributed") or {}
        if not isinstance(d, Mapping):
            d = {}
        group = "/".join(str(s.get(k)) for k in ("workload", "backend", "device", "variant", "batch_size", "size"))
        rows.append(ScalingRow(
            cell_id=C.cell_id(c), stored_id=str(c.get("id") or ""),
            label=(f"{r.get('run_id')} · " if multi else "") + group, world_size=s.get("world_size"),
            engine=d.get("engine"), comm_backend=d.get("comm_backend"), global_batch=d.get("global_batch_size"),
            p50_ms=C.lat(c, "p50"), throughput=C.metric(c, "throughput_per_s"), speedup=d.get("speedup_vs_1"),
            efficiency=d.get("scaling_efficiency"), warning=str(d.get("scaling_warning") or ""),
            na_reason=(c.get("unavailable") or {}).get("distributed.scaling_efficiency") or "not measured",
        ))  # fmt: skip
    return rows


def _figure(rows: list[ScalingRow]) -> list[Any]:
    groups: dict[str, list[tuple[int, float, float | None]]] = {}
    for row in rows:
        if F.is_number(row.throughput):
            eff = row.efficiency if F.is_number(row.efficiency) else None
            groups.setdefault(row.label, []).append((int(row.world_size), float(row.throughput), eff))
    traces = []
    for i, (label, pts) in enumerate(groups.items()):
        pts.sort()
        color = COLORS[i % len(COLORS)]
        traces.append({
            "type": "scatter", "mode": "lines+markers", "name": pe(label), "x": [p[0] for p in pts],
            "y": [p[1] for p in pts], "line": {"color": color},
            "customdata": [[pe(label), p[0], F.sig(p[1]), pct(p[2], signed=False)] for p in pts],
            "hovertemplate": "%{customdata[0]}<br>%{customdata[1]} workers: %{customdata[2]} samples/s"
                             "<br>scaling efficiency %{customdata[3]}<extra></extra>",
        })  # fmt: skip
        one = next((p for p in pts if p[0] == 1), None)
        if one is not None and len(pts) > 1:
            xs = [p[0] for p in pts]
            traces.append({
                "type": "scatter", "mode": "lines", "name": pe(f"ideal: {label}"), "x": xs,
                "y": [one[1] * x for x in xs], "line": {"color": color, "dash": "dot"}, "hoverinfo": "skip",
            })  # fmt: skip
    if not traces:
        return []
    lay = layout("Global throughput vs data-parallel workers", "workers (world size)", "samples/s")
    lay["xaxis"]["dtick"] = 1
    return [("chart-scaling", {"data": traces, "layout": lay},
             "Solid: measured sustained global throughput (samples processed by all workers in the timed loop / "
             "its wall time). Dotted: ideal linear scaling from the same run's 1-worker cell.")]  # fmt: skip


class ScalingSection(ReportSection):
    name = "scaling"
    title = "Data-parallel scaling"
    order = 60
    description = "weak scaling of data-parallel cells: speed-up and efficiency vs the 1-worker cell"

    def data(self, ctx: ReportContext) -> Any:
        return scaling_rows(ctx.runs) or None

    def html(self, data: list[ScalingRow], ctx: ReportContext) -> Any:
        rows = []
        for row in data:
            na = M.na(row.na_reason)
            thr, spd, eff = row.throughput, row.speedup, row.efficiency
            engine = cat(row.engine, M.br(), M.muted(row.comm_backend)) if row.comm_backend else cat(row.engine)
            eff_html = na
            if F.is_number(eff):
                eff_html = join([pct(eff, signed=False), M.badge("check", "warn", row.warning) if row.warning else ""])
            rows.append([
                (M.code(row.label), row.label), (int(row.world_size), int(row.world_size)), (engine, str(row.engine)),
                (row.global_batch, row.global_batch or ""), (F.ms(row.p50_ms), row.p50_ms or ""),
                (F.throughput(thr) if F.is_number(thr) else na, thr if F.is_number(thr) else ""),
                (f"{spd:.2f}x" if F.is_number(spd) else na, spd if F.is_number(spd) else ""),
                (eff_html, eff if F.is_number(eff) else ""),
            ])  # fmt: skip
        heads = ["group (workload/backend/device/variant/per-worker batch/size)", "workers", "engine",
                 "global batch", "p50 step", "sustained samples/s", "speed-up vs 1", "scaling efficiency"]
        return Rendered(render("scaling.html.j2", table=table(heads, rows)), _figure(data))

    def markdown(self, data: list[ScalingRow], ctx: ReportContext) -> str:
        lines = ["#### Data-parallel scaling (global throughput; efficiency vs the same run's 1-worker cell)", "",
                 "| cell | workers | sustained samples/s | speed-up | efficiency |", "|---|--:|--:|--:|--:|"]
        for row in data:
            eff_txt = f"{row.efficiency * 100:.1f}%" if F.is_number(row.efficiency) else "n/a"
            if row.warning:
                eff_txt += (" (check: superlinear)" if row.warning.startswith("superlinear")
                            else " (check: noisy timing)")  # fmt: skip
            spd = row.speedup
            lines.append(f"| {md_escape(row.stored_id)} | {row.world_size} | "
                         f"{md_escape(F.throughput(row.throughput) or 'n/a')} | "
                         f"{f'{spd:.2f}x' if F.is_number(spd) else 'n/a'} | {eff_txt} |")  # fmt: skip
        return "\n".join(lines)
