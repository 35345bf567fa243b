"""Quality vs speed: accuracy, its change against fp32, agreement, the quality gate,
the speed-up against the same run's fp32 cell, the Pareto frontier and model size."""

from __future__ import annotations

from typing import Any, Mapping

from harness.analysis.pareto import pareto_frontier
from harness.reports import cells as C
from harness.reports import formatting as F
from harness.reports.sections.common import COLORS, M, ReportContext, ReportSection, Rendered, layout, legacy, pe, table
from harness.reports.templating import join, render

LOWP_FLAGS = {
    "avx512_vnni": "int8 dot products (VNNI)",
    "avx_vnni": "int8 dot products (AVX-VNNI)",
    "avx512_bf16": "bf16 dot products",
    "avx512_fp16": "fp16 arithmetic",
    "amx_tile": "AMX tiles",
    "amx_bf16": "AMX bf16",
    "amx_int8": "AMX int8",
}


def _flags(runs: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """Per host: (host, CPU model, the low-precision features it has, those it lacks)."""
    seen: dict[str, tuple[str, str, str, str]] = {}
    for r in runs:
        env = r.get("environment") or {}
        flags = (env.get("cpu") or {}).get("flags_dl") or {}
        if not isinstance(flags, Mapping) or not flags:
            continue
        has = [f"{k} ({v})" for k, v in LOWP_FLAGS.items() if flags.get(k) is True]
        lacks = [k for k in LOWP_FLAGS if flags.get(k) is False]
        host = str(env.get("host") or "?")
        seen[host] = (host, (env.get("cpu") or {}).get("model") or "", ", ".join(has) or "none of them",
                      ", ".join(lacks) or "none")  # fmt: skip
    return list(seen.values())


def _gate_of(q: Any) -> Mapping[str, Any]:
    return q.get("gate") if isinstance(q, Mapping) and isinstance(q.get("gate"), Mapping) else {}


def _num(v: Any) -> Any:
    return v if F.is_number(v) else ""


def _fp32_key(r: dict[str, Any], sp: Mapping[str, Any]) -> tuple[Any, ...]:
    return (r.get("run_id"), sp.get("workload"), sp.get("backend"), sp.get("device"), sp.get("mode"),
            sp.get("batch_size"), sp.get("size"))  # fmt: skip


class QualitySection(ReportSection):
    name = "quality"
    title = "Quality vs speed"
    order = 80
    description = "accuracy, agreement and quality gate of each variant next to its speed-up vs fp32"

    def data(self, ctx: ReportContext) -> Any:
        pairs = [(r, c) for r, c in C.iter_cells(ctx.runs)
                 if C.status(c) == "ok" and isinstance(C.metric(c, "quality"), Mapping)]  # fmt: skip
        return pairs or None

    def html(self, data: Any, ctx: ReportContext) -> Any:
        rows: list[list[Any]] = []
        rules = {str(_gate_of(C.metric(c, "quality")).get("rule") or "") for _, c in data}
        # the same rule in every row: said once under the table (and on hover in the badges)
        one_rule = next(iter(rules)) if len(rules) == 1 and "" not in rules else None
        groups: dict[tuple[str, str], list[tuple[float, float, Any]]] = {}
        # fp32 p50 of the same workload/backend/device/mode/batch/size in the same run
        fp32_p50: dict[tuple[Any, ...], float] = {}
        fp32_contended: set[tuple[Any, ...]] = set()
        for r, c in C.iter_cells(ctx.runs):
            sp = c.get("spec") or {}
            if C.status(c) == "ok" and sp.get("variant") == "fp32" and C.lat(c, "p50") and not sp.get("world_size"):
                fp32_p50[_fp32_key(r, sp)] = C.lat(c, "p50")
                if C.contention(c):
                    fp32_contended.add(_fp32_key(r, sp))
        for r, c in data:
            q = C.metric(c, "quality")
            spec = c.get("spec") or {}
            fkey = _fp32_key(r, spec)
            base = fp32_p50.get(fkey)
            p50 = C.lat(c, "p50")
            speedup = base / p50 if base and p50 else None
            # a speed-up from a contended cell (or a contended fp32 reference) is no verdict on the variant
            contended = C.contention(c) or ("the fp32 reference cell was contended" if fkey in fp32_contended else None)
            gate = q.get("gate") if isinstance(q.get("gate"), Mapping) else {}
            passed = gate.get("passed")
            rule = str(gate.get("rule") or "")
            gate_html = (M.badge("pass", "st-ok", rule or None) if passed is True else
                         M.badge("fail", "st-failed", rule or None) if passed is False else M.muted("n/a"))  # fmt: skip
            if rule and not one_rule:
                gate_html = join([gate_html, M.span(rule, None, "muted rule")])
            if speedup:
                mark = (M.badge("contended", "contended", contended) if contended else
                        M.badge("slower", "st-failed") if speedup < 1 else "")  # fmt: skip
                speed_html = join([f"{speedup:.2f}x", mark])
            else:
                speed_html = M.muted("no fp32 cell")
            size, nz, ct = (C.metric(c, k) for k in ("model_size_bytes", "nonzero_params", "compile_time_s"))
            acc_d = q.get("accuracy_delta")
            dataset = str(q.get("dataset") or "")
            rows.append(([(M.code(r.get("run_id")), str(r.get("run_id")))] if ctx.multi else []) + [
                (M.code(C.cell_id(c)), C.cell_id(c)), (spec.get("variant"), spec.get("variant")),
                (spec.get("backend"), spec.get("backend")),
                (F.percent(q.get("accuracy"), 2) or "n/a", _num(q.get("accuracy"))),
                (f"{100 * acc_d:+.2f} pp" if F.is_number(acc_d) else "n/a", _num(acc_d)),
                (F.percent(q.get("agreement"), 2) or "n/a", _num(q.get("agreement"))),
                (gate_html, str(passed)), (F.ms(p50) or "n/a", p50 or ""), (speed_html, speedup or ""),
                (F.bytes_human(size) or "n/a", _num(size)), (F.count(nz) or "n/a", _num(nz)),
                (F.metric_value("compile_time_s", ct) or "n/a", _num(ct)),
                (M.span(F.shorten(dataset, 40), dataset if len(dataset) > 40 else None), dataset),
            ])  # fmt: skip
            acc = q.get("accuracy")
            if p50 is not None and F.is_number(acc):
                groups.setdefault((str(spec.get("workload")), str(spec.get("device"))), []).append((p50, float(acc), (r, c)))
        figs = []
        traces = []
        for k, ((w, dev), pts) in enumerate(groups.items()):
            color = COLORS[k % len(COLORS)]
            name = f"{w} on {dev}"
            traces.append({
                "type": "scatter", "mode": "markers", "name": pe(name), "x": [p[0] for p in pts],
                "y": [100 * p[1] for p in pts], "marker": {"color": color, "size": 10},
                "customdata": [[pe(C.cell_id(p[2][1])), F.ms(p[0]), f"{100 * p[1]:.2f}",
                                F.ci(C.lat(p[2][1], "ci95_low"), C.lat(p[2][1], "ci95_high")) or "n/a"] for p in pts],
                "hovertemplate": "%{customdata[0]}<br>p50 latency %{customdata[1]} ms, 95% CI %{customdata[3]} ms"
                                 "<br>accuracy %{customdata[2]}%<extra></extra>",
            })  # fmt: skip
            front = pareto_frontier(pts)
            traces.append({"type": "scatter", "mode": "lines", "name": pe(f"Pareto frontier: {name}"),
                           "x": [p[0] for p in front], "y": [100 * p[1] for p in front],
                           "line": {"color": color, "dash": "dash", "shape": "hv"}, "hoverinfo": "skip"})  # fmt: skip
        if traces:
            figs.append(("chart-quality", {"data": traces, "layout": layout("Quality vs speed", "p50 latency (ms)", "accuracy (%)")},
                         "Each point a variant; dashed: the Pareto frontier (nothing both faster and more accurate) "
                         "per workload and device."))  # fmt: skip
        sized = _sizes(data)
        if sized:
            figs.append(("chart-size", {"data": [{
                "type": "bar", "orientation": "h", "y": [pe(s[0]) for s in sized], "x": [s[1] / F.MIB for s in sized],
                "customdata": [[pe(s[0]), F.bytes_human(s[1])] for s in sized],
                "hovertemplate": "%{customdata[0]}<br>model size %{customdata[1]}<extra></extra>", "name": "model size"}],
                "layout": layout("Model size (MiB)", "model size (MiB)", height=max(240, 120 + 26 * len(sized)))},
                "Serialized model size per variant."))  # fmt: skip
        heads = (["run"] if ctx.multi else []) + ["cell", "variant", "backend", "accuracy", "Δ accuracy vs fp32", "agreement with fp32", "quality gate",
                 "p50 (ms)", "speed-up vs fp32 (p50)", "model size", "nonzero params", "compile time", "dataset"]
        return Rendered(render("quality.html.j2", flags=_flags(ctx.runs), table=table(heads, rows, cls="grid sortable wide"),
                               one_rule=one_rule), figs)  # fmt: skip


def _sizes(data: Any) -> list[tuple[str, float]]:
    """(label, model size in bytes), one bar per cell: the same cell in several runs is
    one bar (one trace with a repeated category stacks its bars: two runs drew twice the
    size); a cell whose size differs between runs gets one bar per run, labelled with it."""
    by_cell: dict[str, list[tuple[str, float]]] = {}
    for r, c in data:
        size = C.metric(c, "model_size_bytes")
        if F.is_number(size):
            by_cell.setdefault(C.cell_id(c), []).append((str(r.get("run_id")), float(size)))
    out = []
    for cid, vals in by_cell.items():
        if len({v for _, v in vals}) == 1:
            out.append((cid, vals[-1][1]))
        else:
            out += [(f"{cid} ({rid})", v) for rid, v in vals]
    return out


def quality_section(runs: list[dict[str, Any]]) -> tuple[str, list[Any]]:
    """``(html, figures)`` of the quality section ("" when no cell has quality data)."""
    return legacy(QualitySection(), ReportContext(runs))
