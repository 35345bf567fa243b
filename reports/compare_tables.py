"""Text renderings of a :class:`harness.analysis.compare.Comparison`: a plain terminal table and
GitHub-flavoured Markdown for a CI comment. Cell ids and notes come from result files
and are escaped for Markdown (see :func:`harness.reports.tables.md_escape`)."""

from __future__ import annotations

from typing import Any

from harness.reports import formatting as F
from harness.reports.tables import md_escape

_ORDER = {"regression": 0, "inconclusive": 1, "not_comparable": 2, "improvement": 3, "unchanged": 4,
          "only_baseline": 5, "only_candidate": 6}  # fmt: skip
_LABEL = {"only_baseline": "only in baseline", "only_candidate": "only in candidate", "not_comparable": "not comparable"}


def _pct(x: float | None, signed: bool = True) -> str:
    if not F.is_number(x):
        return "n/a"
    return f"{x * 100:+.1f}%" if signed else f"{x * 100:.1f}%"


def _ci(cc: Any) -> str:
    if not cc.ratio_ci:
        return "n/a"
    lo, hi = cc.ratio_ci
    return f"[{(lo - 1) * 100:+.1f}%, {(hi - 1) * 100:+.1f}%]"


def _p(x: float | None) -> str:
    if not F.is_number(x):
        return "n/a"
    return "<0.0001" if x < 1e-4 else f"{x:.4f}"


def _label(cc: Any) -> str:
    text = getattr(cc, "verdict_text", "") or cc.verdict
    return _LABEL.get(text, text)


def _order(label: str) -> int:
    return _ORDER.get(label.split(":")[0], 9)


def rows(result: Any) -> list[list[str]]:
    """One row per cell: cell, verdict, ratio change, CI, p (adj.), threshold, smallest
    detectable change, noise, processes per side, noise model, notes."""
    out = []
    for cc in sorted(result.cells, key=lambda c: (_ORDER.get(c.verdict, 9), c.key)):
        delta = _pct(cc.ratio - 1) if F.is_number(cc.ratio) else "n/a"
        out.append([
            cc.key, _label(cc), delta, _ci(cc), _p(cc.p_adjusted),
            _pct(cc.threshold, False) + (" (auto)" if cc.threshold_source.startswith("auto") else ""),
            _pct(cc.min_detectable_change, False), _pct(cc.run_noise, False) if cc.run_noise is not None else "n/a",
            f"{cc.n_baseline}/{cc.n_candidate}", cc.noise_model or "", "; ".join(cc.notes),
        ])  # fmt: skip
    return out


HEADS = ["cell", "verdict", "change (cand/base)", "95% CI", "p (Holm)", "threshold", "detectable (80%)",
         "run noise", "processes b/c", "noise model", "notes"]  # fmt: skip


def _header(result: Any) -> str:
    s = result.settings
    c = result.counts()
    stat = f", stat {s.stat}" if s.from_samples else ""
    unit = s.declared.unit
    what = f"{s.metric} ({unit + ', ' if unit else ''}{s.declared.direction} is better){stat}"
    counts = ", ".join(f"{_LABEL.get(k, k)}: {n}" for k, n in sorted(c.items(), key=lambda kv: _order(kv[0])))
    if result.regressions:
        verdict = f"REGRESSION in {len(result.regressions)} cell(s)"
    elif result.cells and not result.tested:
        # "no regression" would read as a pass although nothing was tested (every cell
        # contended, or measured in one process per side): say that no verdict was drawn
        verdict = f"no verdict: none of the {len(result.cells)} cell(s) could be tested (see the notes)"
    else:
        verdict = "no regression"
    return f"{verdict} — metric {what}, alpha {s.alpha} (Holm over {result.tested} tested cell(s)); {counts}"


def _advice(result: Any) -> list[str]:
    """What to do about inconclusive cells (one line each kind)."""
    from harness.analysis.compare import CONTENDED, NOISE_UNKNOWN

    labels = [c.verdict_text for c in result.cells]
    out = []
    if NOISE_UNKNOWN in labels:
        out.append(f"{labels.count(NOISE_UNKNOWN)} cell(s) {NOISE_UNKNOWN}: one process per side says nothing about "
                   "run-to-run variation; measure each side in several processes (harness run --repeats 3) or use "
                   "a history of runs as the baseline" + (" (or --within-run)" if result.settings.from_samples else ""))
    if CONTENDED in labels:
        out.append(f"{labels.count(CONTENDED)} cell(s) {CONTENDED}: the machine was busy during a measurement; "
                   "rerun on a quiet machine (or --allow-contended)")
    return out


def comparison_text(result: Any) -> str:
    """A plain fixed-width table for the terminal."""
    table = [HEADS] + rows(result)
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADS) - 1)]
    lines = [_header(result), ""]
    for r in table:
        lines.append("  ".join(r[i].ljust(widths[i]) for i in range(len(HEADS) - 1)) + ("  " + r[-1] if r[-1] else ""))
    for a in _advice(result):
        lines.append(f"note: {a}")
    for w in result.warnings:
        lines.append(f"warning: {w}")
    return "\n".join(lines) + "\n"


def comparison_markdown(result: Any) -> str:
    """GitHub-flavoured Markdown (CI comment)."""
    lines = [f"### harness compare: {md_escape(_header(result))}", ""]
    for w in result.warnings:
        lines.append(f"> warning: {md_escape(w)}")
    if result.warnings:
        lines.append("")
    lines.append("| " + " | ".join(HEADS) + " |")
    lines.append("|" + "---|" * len(HEADS))
    for r in rows(result):
        r = list(r)
        if r[1] == "regression":
            r[1] = "**regression**"
        lines.append("| " + " | ".join(md_escape(x) if i != 1 else x for i, x in enumerate(r)) + " |")
    lines.append("")
    advice = _advice(result)
    lines += [f"> {md_escape(a)}" for a in advice] + ([""] if advice else [])
    lines.append("change: candidate/baseline of the metric (latency: + is slower). A regression needs a "
                 "significant change (Holm-adjusted) AND a change beyond the threshold; *detectable (80%)* is the "
                 "smallest change of one cell that this gate, as configured (Holm over the tested cells, the "
                 "threshold), flags with 80% probability.")  # fmt: skip
    return "\n".join(lines) + "\n"
