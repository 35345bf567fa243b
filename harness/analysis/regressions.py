"""Each machine's latest run against its earlier runs: the regressions check of the
report (HTML and Markdown), as ``harness compare`` judges it by default.

Contention: no verdict is drawn from a cell measured while other processes competed
for the machine. Contended earlier measurements are left out of the baseline, and a
contended cell of the latest run gets the verdict "inconclusive" with the evidence.
(Moved here from the report package, which now only renders the result.)
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

CONTENDED_VERDICT = "inconclusive"
CONTENDED_LABEL = "inconclusive: contended"  # harness.analysis.compare's wording
CONTENDED_NOTE = "contended: no verdict from a cell measured under contention"


def by_machine(runs: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Runs grouped by machine (environment fingerprint), each group in time order."""
    from harness.analysis.compare import fingerprint

    out: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(runs, key=lambda d: (str(d.get("created") or ""), str(d.get("run_id") or ""))):
        out.setdefault(fingerprint(r), []).append(r)
    return out


def regression_baseline(
    mruns: Sequence[dict[str, Any]], series: Sequence[Any] | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """The baseline for a machine's latest run: its earlier runs, from the most recent
    change point detected among them on (a known step must not inflate the noise).
    ``series``: :func:`harness.analysis.history.build_history` of these or more runs (computed
    here when not given)."""
    from harness.analysis.history import build_history

    earlier = list(mruns[:-1])
    ids = [str(r.get("run_id")) for r in earlier]
    pos = {rid: i for i, rid in enumerate(ids)}
    if series is None:
        series = build_history(mruns)
    # detected on all runs (a change needs 3 runs on each side); keep the earlier runs after it
    starts = [pos[ch.run_id] for s in series for ch in s.changes if ch.run_id in pos]
    if not starts:
        return earlier, None
    k = max(starts)
    return earlier[k:], str(earlier[k].get("run_id"))


def _without_contended(doc: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """A shallow copy of ``doc`` without its contended cells, and how many were dropped."""
    from harness.analysis.history import contention_note

    cells = [c for c in doc.get("cells") or [] if not (isinstance(c, Mapping) and c.get("status") == "ok"
                                                       and contention_note(c))]  # fmt: skip
    return {**doc, "cells": cells}, len(doc.get("cells") or []) - len(cells)


def latest_vs_earlier(mruns: Sequence[dict[str, Any]], series: Sequence[Any] | None = None) -> dict[str, Any]:
    """The regressions check of one machine's runs (time order): its latest run against
    :func:`regression_baseline`, as ``harness compare`` judges it by default, with
    contention kept out of every verdict: contended cells of the earlier runs are left
    out of the baseline, and a contended cell of the latest run gets the verdict
    "inconclusive" whatever the test said (its note gives the evidence).

    Returns ``{"result": Comparison, "baseline": [runs], "since": run id or None,
    "contended": {cell key: evidence} of the latest run, "dropped": contended baseline
    measurements left out}``."""
    from harness.analysis.compare import cell_key, compare_docs
    from harness.analysis.history import contention_note

    base, since = regression_baseline(mruns, series)
    cleaned = [_without_contended(d) for d in base]
    cand = mruns[-1]
    contended = {cell_key(c): note for c in cand.get("cells") or []
                 if isinstance(c, Mapping) and c.get("status") == "ok" and (note := contention_note(c))}  # fmt: skip
    res = compare_docs([d for d, _ in cleaned], [cand])
    for c in res.cells:
        if c.key in contended:
            if c.verdict in ("regression", "improvement", "unchanged"):
                c.verdict = CONTENDED_VERDICT
                if hasattr(c, "verdict_text"):
                    c.verdict_text = CONTENDED_LABEL
            c.notes.insert(0, f"{CONTENDED_NOTE} ({contended[c.key]})")
    return {"result": res, "baseline": base, "since": since, "contended": contended,
            "dropped": sum(n for _, n in cleaned)}  # fmt: skip


def verdict_label(c: Any) -> str:
    """A cell comparison's verdict as compare words it ("inconclusive: contended")."""
    label = getattr(c, "label", None)
    return label if isinstance(label, str) and label else str(c.verdict)


def machine_checks(
    runs: Sequence[dict[str, Any]], series: Sequence[Any] | None = None
) -> list[tuple[int, str, list[dict[str, Any]], dict[str, Any]]]:
    """``(index of the machine among all machines, machine, its runs in time order,
    latest_vs_earlier check)`` for every machine with 2+ runs, in machine order.
    ``series``: the history of ``runs`` (computed here when not given); each
    machine's check sees its own series only."""
    from harness.analysis.history import build_history

    if series is None:
        series = build_history(runs)
    out = []
    for n, (machine, mruns) in enumerate(by_machine(runs).items()):
        if len(mruns) < 2:
            continue
        out.append((n, machine, mruns, latest_vs_earlier(mruns, [s for s in series if s.machine == machine])))
    return out
