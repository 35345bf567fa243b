"""Every further metric the cells recorded (outside the summary's columns), unit by name."""

from __future__ import annotations

from typing import Any

from harness.reports import cells as C
from harness.reports import formatting as F
from harness.reports.sections.common import ReportContext, ReportSection, Td
from harness.reports.templating import render

# metric keys the summary table shows in its own columns; anything else a cell
# carries goes here (rendered generically, unit by name)
SUMMARY_METRICS = frozenset({"latency_ms", "noisy", "throughput_per_s", "peak_host_mem_bytes", "params"})


def value_td(cell: dict[str, Any], key: str) -> Td:
    """The table cell of a metric outside the summary columns."""
    content, sort = _value(cell, key)
    if not isinstance(content, Td):
        content = Td("text", content)
    return content._replace(s=sort, c="num" if F.is_number(sort) else "")


def _value(cell: dict[str, Any], key: str) -> tuple[Any, Any]:
    m = C.metrics(cell)
    if key not in m or m.get(key) is None:
        return Td("na", C.unavailable_reason(cell, key)), ""
    v = m[key]
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
            for k in list(C.metrics(c)) + list((c.get("unavailable") or {}).keys()):
                if k not in SUMMARY_METRICS and k not in keys:
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
        return render("other_metrics.html.j2", table=render("big_table.html.j2", heads=heads, rows=rows, table_id=None))
