"""Which runs the report's regressions check compares: like with like.

:func:`harness.analysis.regressions.machine_checks` puts a machine's latest run against
all its earlier runs, so a smoke run followed by a quick run listed every smoke cell as
"only in the baseline". Here the runs of a machine (environment fingerprint) are
further split by suite (its name; for a command-line run, ``suite.name == "cli"``, by its
matrix as well), and each (machine, suite) group with two or more runs gets its own
check: the group's latest run against its earlier runs
(:func:`harness.analysis.regressions.latest_vs_earlier`). What was left out of a check,
and why, is one line (``check["excluded"]``).

(Selection only; the check itself is the analysis package's. This belongs beside
``machine_checks`` in :mod:`harness.analysis.regressions` and can move there as is.)
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence


def suite_identity(run: Mapping[str, Any]) -> tuple[str, str]:
    """(grouping key, label) of a run's suite: its name; for an unnamed or command-line
    suite, the name and its matrix (two ``harness run -w ...`` runs are alike only with
    the same workloads, variants, ...)."""
    suite = run.get("suite") if isinstance(run.get("suite"), Mapping) else {}
    name = suite.get("name") if isinstance(suite.get("name"), str) and suite.get("name") else None
    source = str(suite.get("source") or "")
    if name and name != "cli" and not source.startswith("<"):
        return f"suite:{name}", f"suite {name}"
    matrix = suite.get("matrix") if isinstance(suite.get("matrix"), Mapping) else {}
    key = json.dumps(matrix, sort_keys=True, default=str)
    shown = "; ".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in matrix.items())
    label = f"{name or 'unnamed suite'} ({shown})" if shown else (name or "unnamed suite")
    return f"matrix:{name}:{key}", label


def _excluded_line(group_label: str, others: Sequence[Mapping[str, Any]]) -> str | None:
    if not others:
        return None
    counts: dict[str, int] = {}
    for r in others:
        lb = suite_identity(r)[1]
        counts[lb] = counts.get(lb, 0) + 1
    parts = ", ".join(f"{lb}: {n}" for lb, n in sorted(counts.items()))
    n = len(others)
    return (f"only runs of {group_label} on this machine are compared; {n} run{'s' if n != 1 else ''} of other "
            f"suites ({parts}) left out, since their cells would only show as missing on one side")  # fmt: skip


def like_with_like_checks(
    runs: Sequence[dict[str, Any]], series: Sequence[Any] | None = None
) -> list[tuple[int, str, list[dict[str, Any]], dict[str, Any]]]:
    """``(index of the machine, machine, the group's runs in time order, check)`` for every
    (machine, suite) group with 2+ runs, like :func:`machine_checks`; each check also has
    ``"suite"`` (the group's label) and ``"excluded"`` (the one line saying which runs of
    the machine were left out and why, or None)."""
    from harness.analysis.history import build_history
    from harness.analysis.regressions import by_machine, latest_vs_earlier

    if series is None:
        series = build_history(runs)
    out = []
    for n, (machine, mruns) in enumerate(by_machine(runs).items()):
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in mruns:  # time order is kept within each group
            groups.setdefault(suite_identity(r)[0], []).append(r)
        mseries = [s for s in series if getattr(s, "machine", None) == machine]
        for key, gruns in groups.items():
            if len(gruns) < 2:
                continue
            label = suite_identity(gruns[-1])[1]
            check = latest_vs_earlier(gruns, mseries)
            check["suite"] = label
            check["excluded"] = _excluded_line(label, [r for r in mruns if suite_identity(r)[0] != key])
            out.append((n, machine, gruns, check))
    return out
