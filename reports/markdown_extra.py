"""Markdown (CI comment) sections for many runs: regressions of each machine's latest
run, detected history changes, and the multi-machine ranking. Strings from result
files go through :func:`reports.tables.md_escape`."""

from __future__ import annotations

from typing import Any, Sequence

from reports import formatting as F
from reports.tables import md_escape


def _pct(x: float | None) -> str:
    return f"{x * 100:+.1f}%" if F.is_number(x) else "n/a"


def _scaling_markdown(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Data-parallel cells: workers, global throughput, speed-up and efficiency."""
    rows = []
    for run in runs:
        for c in run.get("cells") or []:
            spec = c.get("spec") or {}
            if c.get("status") != "ok" or not spec.get("world_size"):
                continue
            m = c.get("metrics") or {}
            d = m.get("distributed") if isinstance(m.get("distributed"), dict) else {}
            eff = d.get("scaling_efficiency")
            eff_txt = f"{eff * 100:.1f}%" if F.is_number(eff) else "n/a"
            warning = str(d.get("scaling_warning") or "")
            if warning:
                eff_txt += " (check: superlinear)" if warning.startswith("superlinear") else " (check: noisy timing)"
            spd = d.get("speedup_vs_1")
            rows.append(f"| {md_escape(c.get('id') or '')} | {spec['world_size']} | "
                        f"{md_escape(F.throughput(m.get('throughput_per_s')) or 'n/a')} | "
                        f"{f'{spd:.2f}x' if F.is_number(spd) else 'n/a'} | {eff_txt} |")
    if not rows:
        return []
    return ["", "#### Data-parallel scaling (global throughput; efficiency vs the same run's 1-worker cell)", "",
            "| cell | workers | samples/s | speed-up | efficiency |", "|---|--:|--:|--:|--:|", *rows]


def markdown_extra(runs: Sequence[dict[str, Any]], prices: Any = None, rank_by: str = "throughput") -> str:
    """Extra Markdown sections; empty when there is nothing to add (a single run
    without data-parallel cells)."""
    from harness.compare import compare_docs
    from harness.history import build_history
    from harness.procurement import machines_of, procurement_entries
    from reports.sections import _by_machine, regression_baseline

    out: list[str] = _scaling_markdown(runs)
    series = build_history(runs)
    for machine, mruns in _by_machine(runs).items():
        if len(mruns) < 2:
            continue
        base, since = regression_baseline(mruns, [s for s in series if s.machine == machine])
        res = compare_docs(base, mruns[-1:])
        flagged = [c for c in res.cells if c.verdict in ("regression", "improvement", "inconclusive")]
        since_txt = f" (since the change at {md_escape(since)})" if since else ""
        out += ["", f"#### Latest run vs {len(base)} earlier{since_txt} on {md_escape(machine)}: "
                f"{'**' + str(len(res.regressions)) + ' regression(s)**' if res.regressions else 'no regression'}"]  # fmt: skip
        if flagged:
            out += ["", "| cell | verdict | change | 95% CI | threshold |", "|---|---|--:|---|--:|"]
            for c in flagged:
                ci = f"[{_pct(c.ratio_ci[0] - 1)}, {_pct(c.ratio_ci[1] - 1)}]" if c.ratio_ci else "n/a"
                out.append(f"| {md_escape(c.key)} | {c.verdict} | {_pct((c.ratio or 1) - 1)} | {ci} | "
                           f"{_pct(c.threshold).lstrip('+')} |")  # fmt: skip
    changes = [(s, ch) for s in series for ch in s.changes]
    if series:
        out += ["", f"#### History: {len(series)} series, {len(changes)} change(s) detected"]
        if changes:
            out += ["", "| cell | machine | kind | began at run | commit | change |", "|---|---|---|---|---|--:|"]
            for s, ch in changes:
                out.append(f"| {md_escape(s.key)} | {md_escape(s.machine)} | {ch.kind} | {md_escape(ch.run_id)} | "
                           f"{md_escape((ch.commit or 'n/a')[:12])} | {_pct(ch.change)} |")  # fmt: skip
    if len(machines_of(runs)) >= 2:
        out += ["", f"#### Machines side by side (ranked by {md_escape(rank_by)})", "",
                "| workload config | rank | machine | backend/device | samples/s | p50 ms | samples/J (measured) | perf per dollar |",
                "|---|--:|---|---|--:|--:|--:|--:|"]  # fmt: skip
        for e in procurement_entries(runs, prices, rank_by):
            ppd = f"{F.sig(e.perf_per_dollar)} {e.perf_per_dollar_unit}" if e.perf_per_dollar is not None else "n/a"
            spj = F.sig(e.samples_per_j) if e.samples_per_j is not None else (
                f"{F.sig(e.samples_per_j_estimate)} (estimate)" if e.samples_per_j_estimate is not None else "n/a")
            out.append(f"| {md_escape(e.workload_key)} | {e.rank or '–'} | {md_escape(e.machine_label)} | "
                       f"{md_escape(e.backend + '/' + e.device)} | {md_escape(F.throughput(e.throughput_per_s) or 'n/a')} | "
                       f"{md_escape(F.ms(e.latency_p50_ms) or 'n/a')} | {md_escape(spj)} | {md_escape(ppd)} |")  # fmt: skip
    return ("\n".join(out) + "\n") if out else ""
