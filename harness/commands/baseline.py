"""``harness baseline set|show|list|clear``: named baselines for ``harness compare --baseline``.

A baseline is a copy of known-good result files (one or several repeated runs) plus a
manifest, kept in a store outside ``results/`` (``--store DIR``, ``$HARNESS_BASELINE_DIR``
or ``./baselines``) so CI can commit or cache it. See harness/store/baseline.py and
docs/nightly-ci.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from harness.commands.common import EXIT_OK, UsageError

ORDER = 36


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "baseline",
        help="set/show/list/clear named baselines for 'compare --baseline'",
        description="Named baselines for nightly gating. The store is --store DIR, else $HARNESS_BASELINE_DIR, "
        "else ./baselines (outside results/, so it survives cleaning and can be committed or cached).",
    )
    verbs = p.add_subparsers(dest="baseline_cmd", metavar="ACTION")

    def common(q: argparse.ArgumentParser, name: bool = True) -> None:
        if name:
            q.add_argument("--name", default="default", help="baseline name (default: default)")
        q.add_argument("--store", default=None, help="baseline store directory (default: $HARNESS_BASELINE_DIR or ./baselines)")

    s = verbs.add_parser("set", help="copy result file(s) into the store as the baseline",
                         description="Copy RESULT files (or directories of repeated runs) into the baseline store. "
                         "Refused when a file does not load or holds no ok cell.")  # fmt: skip
    s.add_argument("results", nargs="+", metavar="RESULT", help="result file or directory of repeated runs")
    s.add_argument("--note", default=None, help="free text stored in the manifest (why this baseline)")
    s.add_argument("--allow-mixed", action="store_true",
                   help="accept runs of different suites or machines as one baseline (not recommended)")
    common(s)
    sh = verbs.add_parser("show", help="print a baseline's manifest and its cells")
    sh.add_argument("--json", action="store_true", help="print the manifest and cells as JSON")
    common(sh)
    ls = verbs.add_parser("list", help="list the baselines in the store")
    ls.add_argument("--json", action="store_true", help="print JSON")
    common(ls, name=False)
    cl = verbs.add_parser("clear", help="delete a baseline")
    common(cl)


def run(args: argparse.Namespace) -> int:

    if not getattr(args, "baseline_cmd", None):
        raise UsageError("give an action: set, show, list or clear (see 'harness baseline --help')")
    # BaselineError is a UserError: cli.main reports it as one line, exit 2
    return {"set": _set, "show": _show, "list": _list, "clear": _clear}[args.baseline_cmd](args)


def _set(args: argparse.Namespace) -> int:
    from harness.store.baseline import set_baseline

    b = set_baseline(args.results, name=args.name, store=args.store, note=args.note, allow_mixed=args.allow_mixed)
    m = b.manifest
    commits = ", ".join(c[:12] for c in m["git_commits"]) or "unknown"
    print(f"baseline {b.name!r} set: {len(m['runs'])} run(s), {m['ok_cell_count']} of {m['cell_count']} cells ok, "
          f"git {commits} -> {b.path}")  # fmt: skip
    if len(m["runs"]) < 3:
        print("note: compare separates regressions from run-to-run noise best with 3+ repeated runs per side "
              "(see docs/compare.md)", file=sys.stderr)  # fmt: skip
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    from harness.store.baseline import cell_table, get_baseline, load_baseline_runs

    b = get_baseline(args.name, args.store)
    runs = load_baseline_runs(b)
    rows = cell_table(runs)
    if args.json:
        sys.stdout.write(json.dumps({"path": str(b.path), "manifest": b.manifest, "cells": rows}, indent=1) + "\n")
        return EXIT_OK
    m = b.manifest
    out = [f"baseline {b.name!r}  ({b.path})"]
    out.append(f"  set at     {m.get('set_at')} by {m.get('set_by') or 'unknown'} on {m.get('set_on_host') or 'unknown'}")
    if m.get("note"):
        out.append(f"  note       {m['note']}")
    out.append(f"  git        {', '.join(m.get('git_commits') or []) or 'unknown'}")
    out.append(f"  cells      {m.get('ok_cell_count')} ok of {m.get('cell_count')}")
    out.append(f"  runs       {len(m.get('runs') or [])}")
    for r in m.get("runs") or []:
        out.append(f"    {r.get('run_id')}  created {r.get('created')}  host {r.get('host')}  "
                   f"suite {r.get('suite')}  tag {r.get('tag')}  ({r.get('ok_cells')}/{r.get('cells')} ok)  "
                   f"from {r.get('source')}")  # fmt: skip
    out.append("")
    width = max([len("cell")] + [len(r["id"]) for r in rows])
    out.append(f"  {'cell':<{width}}  {'p50 ms':>10}  status")
    for r in rows:
        p50 = f"{r['p50_ms']:.4g}" if r["p50_ms"] is not None else "-"
        reason = f"  ({r['reason']})" if r.get("reason") else ""
        out.append(f"  {r['id']:<{width}}  {p50:>10}  {r['status']}{reason}")
    out.append("  p50 ms: median over the baseline's ok runs of each run's median latency per step")
    sys.stdout.write("\n".join(out) + "\n")
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    from harness.store.baseline import list_baselines, store_dir

    found = list_baselines(args.store)
    if args.json:
        sys.stdout.write(json.dumps([{"name": b.name, "path": str(b.path), **b.manifest} for b in found], indent=1) + "\n")
        return EXIT_OK
    if not found:
        print(f"no baselines in {store_dir(args.store)} (set one with: harness baseline set RESULT_FILE_OR_DIR)")
        return EXIT_OK
    for b in found:
        m = b.manifest
        commits = ", ".join(c[:12] for c in m.get("git_commits") or []) or "unknown"
        print(f"{b.name:<20} set {m.get('set_at')}  {len(m.get('runs') or [])} run(s)  "
              f"{m.get('ok_cell_count')}/{m.get('cell_count')} cells ok  git {commits}")  # fmt: skip
    return EXIT_OK


def _clear(args: argparse.Namespace) -> int:
    from harness.store.baseline import clear_baseline

    path = clear_baseline(args.name, args.store)
    print(f"baseline {args.name!r} removed ({path})")
    return EXIT_OK
