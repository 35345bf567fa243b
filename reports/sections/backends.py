"""torch and tensorflow (or any backends) side by side per workload/device/mode."""

from __future__ import annotations

from typing import Any

from harness.reports import cells as C
from harness.reports import formatting as F
from harness.reports.sections.common import M, ReportContext, ReportSection, table
from harness.reports.templating import render


class BackendsSection(ReportSection):
    name = "backends"
    title = "Backends side by side"
    order = 50
    description = "the same workload on each backend: p50 latency and sustained throughput"

    def data(self, ctx: ReportContext) -> Any:
        groups: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
        backends: list[str] = []
        for _, c in C.iter_cells(ctx.runs):
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
            return None
        groups = {k: v for k, v in groups.items() if len(v) >= 2}
        return (backends, groups) if groups else None

    def html(self, data: Any, ctx: ReportContext) -> Any:
        backends, groups = data
        rows = []
        for key, byb in groups.items():
            row = [("/".join(key), "/".join(key))]
            for b in backends:
                c = byb.get(b)
                p50 = C.lat(c, "p50") if c else None
                ci = F.ci(C.lat(c, "ci95_low"), C.lat(c, "ci95_high")) if c else None
                row.append((f"{F.ms(p50)} {ci or ''}" if p50 is not None else M.muted("—"), p50 or ""))
                thr = C.metric(c, "throughput_per_s") if c else None
                row.append((F.throughput(thr) if F.is_number(thr) else M.muted("—"), thr or ""))
            rows.append(row)
        heads = ["workload/device/mode/variant/batch/size"]
        for b in backends:
            heads += [f"{b} p50 ms [95% CI]", f"{b} sustained samples/s"]
        return render("backends.html.j2", table=table(heads, rows))
