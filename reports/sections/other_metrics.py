"""Every further metric the cells recorded (outside the summary's columns and the energy
and quality sections), in its declared unit (:func:`harness.reports.formatting.unit_of`).
Nested groups (``utilisation``, ``distributed``) are shown as dotted names; a column
that is n/a in every cell for one reason is one line under the table instead."""

from __future__ import annotations

from typing import Any

from harness.reports import cells as C
from harness.reports import formatting as F
from harness.reports.sections.common import ReportContext, ReportSection, Td, all_unavailable_line, drop_unavailable_columns
from harness.reports.templating import render

# metric keys the summary table shows in its own columns, and groups with a section of
# their own; anything else a cell carries goes here (in its declared unit)
SUMMARY_METRICS = frozenset({"latency_ms", "noisy", "throughput_per_s", "peak_host_mem_bytes", "params",
                             "achieved_flops_per_s", "mfu", "energy", "quality"})
LONG_TEXT = 40  # longer strings (method descriptions) are shortened, the full text on hover


def _lookup(cell: dict[str, Any], key: str) -> tuple[bool, Any]:
    """(present, value) of a dotted metric key (``utilisation.cpu_percent_mean``)."""
    node: Any = C.metrics(cell)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def metric_keys(cell: dict[str, Any]) -> list[str]:
    """The cell's metric keys outside :data:`SUMMARY_METRICS`, nested groups (other
    than a ``{"value", "unit", "source"}`` value) flattened to dotted names."""
    out: list[str] = []

    def walk(prefix: str, node: dict[str, Any]) -> None:
        for k, v in node.items():
            name = f"{prefix}{k}"
            if not prefix and k in SUMMARY_METRICS:
                continue
            if isinstance(v, dict) and "value" not in v and v:
                walk(name + ".", v)
            else:
                out.append(name)

    walk("", C.metrics(cell))
    for k in (cell.get("unavailable") or {}):
        if isinstance(k, str) and k.split(".")[0] not in SUMMARY_METRICS and k not in out:
            out.append(k)
    return out


def value_td(cell: dict[str, Any], key: str) -> Td:
    """The table cell of a metric outside the summary columns."""
    content, sort = _value(cell, key)
    if not isinstance(content, Td):
        content = Td("text", content)
    return content._replace(s=sort, c="num" if F.is_number(sort) else "")


def _value(cell: dict[str, Any], key: str) -> tuple[Any, Any]:
    present, v = _lookup(cell, key)
    if not present or v is None:
        return Td("na", C.unavailable_reason(cell, key)), ""
    if isinstance(v, dict):
        if "value" in v:
            val = v.get("value")
            unit = v.get("unit")
            src = v.get("source")
            why = v.get("reason") or C.unavailable_reason(cell, key)
            if not F.is_number(val):
                return Td("na", why or (f"source: {src}" if src else None)), ""
            text = F.sig(val) or ""
            if unit:
                text += f" {unit}"
            tip = "; ".join(str(x) for x in (f"source: {src}" if src else None, why) if x)
            return Td("tip", text, x=tip, y=src == "estimate"), val
        parts = [f"{k}={F.sig(x) if F.is_number(x) else x}" for k, x in v.items() if not isinstance(x, (dict, list))]
        return ", ".join(parts), ""
    if isinstance(v, list):
        iv = C.interval(v)
        if iv is not None:
            text = F.metric_interval(key, *iv)
            if text is not None:
                return text, iv[0]
        if all(isinstance(x, str) for x in v):
            return ", ".join(v), ", ".join(v)
        return f"[{len(v)} values]", len(v)
    text = F.metric_value(key, v)
    if text is None:
        if isinstance(v, str) and len(v) > LONG_TEXT:
            return Td("tip", F.shorten(v, LONG_TEXT), x=v), v
        return str(v), str(v)
    return text, v if F.is_number(v) else str(v)


class OtherMetricsSection(ReportSection):
    name = "other-metrics"
    title = "Other metrics"
    order = 130
    description = "every further metric the cells recorded, unit by name"

    def data(self, ctx: ReportContext) -> Any:
        ok = [(r, c) for r, c in C.iter_cells(ctx.runs) if C.status(c) == "ok"]
        keys: list[str] = []
        for _, c in ok:
            for k in metric_keys(c):
                if k not in keys:
                    keys.append(k)
        return (ok, keys) if keys else None

    def html(self, data: Any, ctx: ReportContext) -> Any:
        ok, keys = data
        heads = (["run"] if ctx.multi else []) + ["cell"] + keys
        rows = []
        for run, cell in ok:
            tds = [Td("code", run.get("run_id"), run.get("run_id"))] if ctx.multi else []
            tds.append(Td("code", C.cell_id(cell), C.cell_id(cell)))
            tds += [value_td(cell, k) for k in keys]
            rows.append({"cls": None, "cols": tds})
        first = 2 if ctx.multi else 1
        heads, rows, dropped = drop_unavailable_columns(heads, rows, first)
        lines = [all_unavailable_line(h, why, len(rows)) for h, why in dropped]
        table = render("big_table.html.j2", heads=heads, rows=rows, table_id=None) if len(heads) > first else ""
        return render("other_metrics.html.j2", table=table, lines=lines,
                      report_time=[r for r in ctx.runs if isinstance(r.get("report_calibration"), dict)])
