"""Markdown (CI comment) sections for many runs: regressions of each machine's latest
run, detected history changes, and the multi-machine ranking. Strings from result
files go through :func:`harness.reports.tables.md_escape`. As in the HTML report, contended
cells give no verdict, no trend and no rank (see :mod:`harness.reports.sections`)."""

from __future__ import annotations

from typing import Any, Sequence

from harness.reports import formatting as F
from harness.reports.tables import md_escape


def _pct(x: float | None) -> str:
    return f"{x * 100:+.1f}%" if F.is_number(x) else "n/a"


def _worse_word(worse: bool | None) -> str:
    """The verdict word of a history change, from the metric's declared direction."""
    return "n/a" if worse is None else ("worse" if worse else "better")


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
            "| cell | workers | sustained samples/s | speed-up | efficiency |", "|---|--:|--:|--:|--:|", *rows]


def markdown_extra(runs: Sequence[dict[str, Any]], prices: Any = None, rank_by: str = "throughput") -> str:
    """Extra Markdown sections; empty when there is nothing to add (a single run
    without data-parallel cells)."""
    from harness.analysis.history import build_history
    from harness.analysis.procurement import machines_of, procurement_entries
    from harness.reports.sections import _by_machine, latest_vs_earlier, verdict_label

    out: list[str] = _scaling_markdown(runs)
    series = build_history(runs)
    for machine, mruns in _by_machine(runs).items():
        if len(mruns) < 2:
            continue
        check = latest_vs_earlier(mruns, [s for s in series if s.machine == machine])
        res, base, since, contended = check["result"], check["baseline"], check["since"], check["contended"]
        flagged = [c for c in res.cells
                   if c.verdict in ("regression", "improvement") or c.verdict.startswith("inconclusive")]
        since_txt = f" (since the change at {md_escape(since)})" if since else ""
        cont_txt = (f"; {len(contended)} contended cell(s) in the latest run: no verdict" if contended else "") + (
            f"; {check['dropped']} contended earlier measurement(s) left out of the baseline" if check["dropped"] else "")
        out += ["", f"#### Latest run vs {len(base)} earlier{since_txt} on {md_escape(machine)}: "
                f"{'**' + str(len(res.regressions)) + ' regression(s)**' if res.regressions else 'no regression'}"
                f"{cont_txt}"]  # fmt: skip
        if flagged:
            out += ["", f"| cell | verdict | change ({F.increase_means(res.settings.metric)}) | 95% CI | threshold |",
                    "|---|---|--:|---|--:|"]  # fmt: skip
            for c in flagged:
                ci = f"[{_pct(c.ratio_ci[0] - 1)}, {_pct(c.ratio_ci[1] - 1)}]" if c.ratio_ci else "n/a"
                verdict = md_escape(verdict_label(c))
                if c.key in contended:
                    verdict = f"**{verdict}** ({md_escape(F.shorten(contended[c.key], 80))})"
                out.append(f"| {md_escape(c.key)} | {verdict} | {_pct((c.ratio or 1) - 1)} | {ci} | "
                           f"{_pct(c.threshold).lstrip('+')} |")  # fmt: skip
    changes = [(s, ch) for s in series for ch in s.changes]
    if series:
        n_cont = sum(1 for s in series for p in s.points if p.contended)
        out += ["", f"#### History: {len(series)} series, {len(changes)} change(s) detected"
                + (f" ({n_cont} contended run(s) marked and left out of the detection)" if n_cont else "")]
        if changes:
            out += ["", "| cell | machine | metric | kind | began at run | commit | change | worse? |",
                    "|---|---|---|---|---|---|--:|---|"]  # fmt: skip
            for s, ch in changes:
                out.append(f"| {md_escape(s.key)} | {md_escape(s.machine)} | {md_escape(s.metric)} | {ch.kind} | "
                           f"{md_escape(ch.run_id)} | {md_escape((ch.commit or 'n/a')[:12])} | {_pct(ch.change)} | "
                           f"{_worse_word(ch.worse)} |")  # fmt: skip
    if len(machines_of(runs)) >= 2:
        out += ["", f"#### Machines side by side (ranked by {md_escape(rank_by)})", "",
                "| workload config | rank | machine | backend/device | sustained samples/s | p50 ms | samples/J (measured) | perf per dollar |",
                "|---|--:|---|---|--:|--:|--:|--:|"]  # fmt: skip
        for e in procurement_entries(runs, prices, rank_by):
            ppd = f"{F.sig(e.perf_per_dollar)} {e.perf_per_dollar_unit}" if e.perf_per_dollar is not None else "n/a"
            spj = F.sig(e.samples_per_j) if e.samples_per_j is not None else (
                f"{F.sig(e.samples_per_j_estimate)} (estimate)" if e.samples_per_j_estimate is not None else "n/a")
            rank = str(e.rank or "–")
            if e.contended:
                rank = f"– (**contended**: {md_escape(F.shorten(e.contended, 80))})"
            elif e.n_contended:
                rank += f" ({e.n_contended} contended run(s) left out)"
            out.append(f"| {md_escape(e.workload_key)} | {rank} | {md_escape(e.machine_label)} | "
                       f"{md_escape(e.backend + '/' + e.device)} | {md_escape(F.throughput(e.throughput_per_s) or 'n/a')} | "
                       f"{md_escape(F.ms(e.latency_p50_ms) or 'n/a')} | {md_escape(spj)} | {md_escape(ppd)} |")  # fmt: skip
    return ("\n".join(out) + "\n") if out else ""
