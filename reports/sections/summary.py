"""The summary table: one row per cell (status, latency percentiles with the median's
CI, sustained throughput, memory, parameters, achieved FLOP/s, MFU, flags, reason),
sortable and filterable; in Markdown, :func:`harness.reports.tables.markdown_summary`.
A long skip/fail reason is cut to :data:`REASON_SHORT` characters with the full text a
click away (``<details>``), so the table fits a 1400 px window."""

from __future__ import annotations

from typing import Any

from harness.reports import cells as C
from harness.reports import formatting as F
from harness.reports.sections.common import M, ReportContext, ReportSection, Td
from harness.reports.tables import markdown_summary
from harness.reports.templating import join, render


def noise_badge(cell: dict[str, Any]) -> Any:
    """The "noisy" badge with IQR/median in its tooltip."""
    ratio = C.noise_ratio(cell)
    detail = f" (here IQR/median = {F.percent(ratio)})" if ratio is not None else ""
    return M.badge("noisy", "noisy", C.NOISE_EXPLANATION + detail)


def contention_badge(cell: dict[str, Any], note: str) -> Any:
    """The "contended" badge (explanation + every recorded reason as tooltip) and the
    short evidence beside it."""
    detail = C.contention_detail(cell) or note
    return join([M.badge("contended", "contended", f"{C.CONTENTION_EXPLANATION}. Evidence: {detail}"),
                 M.span(F.shorten(note, 120), cls="contention")])  # fmt: skip


REASON_SHORT = 90  # characters of a skip/fail reason shown; the rest on click (<details>) and hover


def mfu_text(v: float) -> str:
    """MFU as a percentage with 2 significant digits (``0.0123 -> "1.2%"``)."""
    return f"{F.sig(v * 100, 2)}%"


def report_time_label(run: dict[str, Any]) -> str | None:
    """"calibration of <date>, applied at report time" when ``harness report
    --calibration`` recomputed this run's MFU and roofline, else None."""
    rc = run.get("report_calibration")
    return str(rc.get("label")) if isinstance(rc, dict) and rc.get("label") else None


def mfu_td(run: dict[str, Any], cell: dict[str, Any]) -> Td:
    """The MFU cell of an ok cell: a percentage (peak and dtype in the tooltip), marked
    "report-time" when computed by ``harness report --calibration``; n/a with the reason."""
    v = C.metric(cell, "mfu")
    if not F.is_number(v):
        return Td("na", C.unavailable_reason(cell, "mfu"), "")
    peak = C.metric(cell, "mfu_peak_flops_per_s")
    tip = "achieved FLOP/s / the calibrated peak of the device at the cell's precision"
    if F.is_number(peak):
        tip += f" ({F.metric_value('mfu_peak_flops_per_s', peak)}, {C.metric(cell, 'mfu_peak_dtype') or '?'})"
    label = report_time_label(run)
    if label and cell.get("mfu_at_report_time"):
        return Td("suffix", mfu_text(v), v, "num", f"{tip}; MFU from the {label}", "*")
    return Td("text", mfu_text(v), v, "num", tip)


def _row(run: dict[str, Any], cell: dict[str, Any], multi: bool, with_repeats: bool) -> dict[str, Any]:
    spec = cell.get("spec") or {}
    st = C.status(cell)
    ok = st == "ok"
    dash = Td("dash", s="")

    def lat_td(key: str) -> Td:
        if not ok:
            return dash
        v = C.lat(cell, key)
        if v is None:
            return Td("na", C.unavailable_reason(cell, "latency_ms"), "")
        return Td("text", F.ms(v), v, "num")

    # p50 with its confidence interval, full summary in the tooltip
    if ok and C.lat(cell, "p50") is not None:
        p50 = C.lat(cell, "p50")
        ci = F.ci(C.lat(cell, "ci95_low"), C.lat(cell, "ci95_high"))
        lt = C.latency(cell)
        tip = ", ".join(
            f"{k} {F.sig(lt[k]) if F.is_number(lt.get(k)) and k != 'n' else lt.get(k)}"
            for k in ("n", "mean", "std", "min", "max", "iqr", "cv")
            if k in lt
        )
        ips = (cell.get("timing") or {}).get("iters_per_sample")
        if F.is_number(ips) and ips > 1:
            tip += f" (each sample: mean of {ips} iterations)"
        p50_td = Td("p50", F.ms(p50), p50, "num", f"latency summary (ms): {tip}" if tip else None, ci)
    else:
        p50_td = lat_td("p50")

    def metric_td(key: str, fmt: Any, tip: str | None = None) -> Td:
        if not ok:
            return dash
        v = C.metric(cell, key)
        if not F.is_number(v):
            return Td("na", C.unavailable_reason(cell, key), "")
        return Td("text", fmt(v), v, "num", tip)

    tci = C.throughput_ci(cell)
    sustained = C.throughput_method(cell) == "sustained"
    tci_tip = ("sustained: samples processed in the timed loop / the loop's wall time" if sustained else
               "batch / p50 latency (an older result: its timed loop's wall time was not recorded)")
    if tci:
        tci_tip += f"; batch / p50 95% CI [{F.throughput(tci[0])}, {F.throughput(tci[1])}] samples/s"

    def thr_fmt(v: float) -> str:
        return (F.throughput(v) or "") + ("" if sustained else " (p50)")

    notes = []
    note = C.contention(cell) if ok else None
    if note:
        notes.append(contention_badge(cell, note))
    if ok and C.is_noisy(cell):
        notes.append(noise_badge(cell))
    if ok and C.warmup_unstable(cell):
        notes.append(M.badge("warm-up unstable", "warn", "warm-up did not reach a steady state before timing"))
    noise_sort = C.noise_ratio(cell) if ok else None

    reason = C.reason_text(cell) if not ok else ""
    short_reason = F.shorten(reason, REASON_SHORT)
    cut = short_reason != reason
    reason_td = Td("reason", short_reason, reason, "reason", reason if cut else None, y=reason if cut else None)
    ws = spec.get("world_size")
    cols = [Td("code", run.get("run_id"), run.get("run_id"), "run")] if multi else []
    cols += [
        Td("text", spec.get("workload"), spec.get("workload")),
        Td("text", spec.get("backend"), spec.get("backend")),
        Td("text", spec.get("device"), spec.get("device")),
        Td("text", spec.get("variant"), spec.get("variant")),
        Td("suffix", spec.get("mode"), spec.get("mode"), x=f"x{ws} workers" if ws else None),
        Td("suffix", spec.get("batch_size"), spec.get("batch_size"), "num", x="/worker" if ws else None),
        Td("text", spec.get("size"), spec.get("size")),
        Td("status", st, st),
        p50_td,
        lat_td("p90"),
        lat_td("p99"),
        metric_td("throughput_per_s", thr_fmt, tci_tip),
        metric_td("peak_host_mem_bytes", F.mib_number),
        metric_td("params", F.count),
        metric_td("achieved_flops_per_s", lambda v: F.metric_value("achieved_flops_per_s", v),
                  "FLOPs per step / median step latency"),
        mfu_td(run, cell) if ok else dash,
    ]
    if with_repeats:
        spread = C.repeat_spread(cell)
        if ok:
            text = F.process_spread(spread, short=True) if spread else "1"
            tip = ("the worker processes this cell was measured in (run --repeats) and the range of their median "
                   "latencies: the run-to-run noise" + (f"; {F.process_spread(spread)}" if spread else ""))
            cols.append(Td("text", text, spread["cv"] if spread and spread.get("cv") is not None else "", "num", tip))
        else:
            cols.append(dash)
    cols += [
        Td("html", join(notes), noise_sort if noise_sort is not None else ""),
        reason_td,
    ]
    return {"cls": f"st-{st}" + (" contended" if note else ""), "cid": C.cell_id(cell), "cols": cols}


SPEC_HEADS = ("backend", "device", "variant", "mode", "batch", "size")  # the workload column always stays


def _without_constant_spec_columns(heads: list[str], rows: list[dict[str, Any]]
                                   ) -> tuple[list[str], list[dict[str, Any]], list[tuple[str, Any]]]:
    """Spec columns with one value in every row (backend torch, size tiny) are said once
    above the table instead (the table must fit a 1400 px window; the filter still
    matches them: each row carries its cell id). Returns heads, rows, ``(head, value)``."""
    if len(rows) < 2:
        return heads, rows, []
    drop = [i for i, h in enumerate(heads)
            if h in SPEC_HEADS and len({(r["cols"][i].v, r["cols"][i].x) for r in rows}) == 1
            and rows[0]["cols"][i].v not in (None, "")]  # fmt: skip
    if not drop:
        return heads, rows, []
    same = [(heads[i], rows[0]["cols"][i].v) for i in drop]
    keep = [i for i in range(len(heads)) if i not in drop]
    return [heads[i] for i in keep], [{**r, "cols": [r["cols"][i] for i in keep]} for r in rows], same


class SummarySection(ReportSection):
    name = "summary"
    title = "Summary"
    order = 30
    description = ("one row per cell: status, p50/p90/p99 with the median's CI, sustained throughput, memory, "
                   "achieved FLOP/s, MFU, flags")

    def data(self, ctx: ReportContext) -> Any:
        return list(C.iter_cells(ctx.runs))

    def html(self, data: Any, ctx: ReportContext) -> Any:
        if not data:
            return None
        multi = ctx.multi
        with_repeats = any(C.repeat_spread(c) for _, c in data)
        heads = (["run"] if multi else []) + [
            "workload", "backend", "device", "variant", "mode", "batch", "size", "status",
            "p50 (ms) [95% CI]", "p90 (ms)", "p99 (ms)", "sustained throughput (samples/s)",
            "peak host mem (MiB)", "params", "achieved FLOP/s", "MFU",
        ] + (["processes: p50 range (ms)"] if with_repeats else []) + ["flags", "reason / error"]  # fmt: skip
        ok_cells = [c for _, c in data if C.status(c) == "ok"]
        legend = {
            "contended": any(C.contention(c) for c in ok_cells),
            "noisy": any(C.is_noisy(c) for c in ok_cells),
            "p50": any(C.throughput_method(c) != "sustained" for c in ok_cells),
        }
        rows = [_row(run, cell, multi, with_repeats) for run, cell in data]
        heads, rows, same = _without_constant_spec_columns(heads, rows)
        return render("summary.html.j2", table=render("big_table.html.j2", heads=heads, rows=rows,
                      table_id="summary-table"), n_cells=len(rows), with_repeats=with_repeats, legend=legend,
                      same=same,
                      report_time=sorted({lb for lb in map(report_time_label, ctx.runs) if lb}),
                      contention_explanation=C.CONTENTION_EXPLANATION, noise_explanation=C.NOISE_EXPLANATION)

    def markdown(self, data: Any, ctx: ReportContext) -> str:
        return markdown_summary(ctx.runs)
