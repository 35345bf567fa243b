"""``harness export``: result files -> CSV or Parquet tables for pandas.

One row per cell per run (default) or per raw sample (``--samples``); filters select
runs (host, tag, date range) and cells (spec fields, status). See harness/analysis/export.py
for the columns and harness/store/results.py:ResultFilter for the filter semantics.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from harness.commands.common import EXIT_OK, UsageError, positive_int, refuse_overwriting_inputs

ORDER = 32
_RELATIVE = re.compile(r"^(\d+)([hdw])$")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="export results as CSV or Parquet (one row per cell per run, or per sample)",
        description="Flatten result files into a table for pandas: one row per cell per run with every "
        "metric as a column (units in the names; unavailable metrics empty, with the reason in "
        "unavailable.<metric>), or one row per raw sample with --samples.",
    )
    p.add_argument("results", nargs="+", help="result files and/or directories of them")
    p.add_argument("--format", choices=("csv", "parquet"), default="csv")
    p.add_argument("-o", "--output", default=None, help="output file (default: stdout; required for parquet)")
    p.add_argument("--samples", action="store_true", help="long format: one row per raw latency sample")
    f = p.add_argument_group("filters (repeat a flag for alternatives; different flags must all match)")
    f.add_argument("-w", "--workload", action="append", default=[])
    f.add_argument("-b", "--backend", action="append", default=[])
    f.add_argument("-d", "--device", action="append", default=[])
    f.add_argument("-v", "--variant", action="append", default=[])
    f.add_argument("--mode", action="append", default=[], choices=("inference", "training"))
    f.add_argument("--size", action="append", default=[])
    f.add_argument("--batch-size", action="append", default=[], type=positive_int)
    f.add_argument("--world-size", action="append", default=[], type=int, metavar="N",
                   help="data-parallel workers (0: single-process cells)")
    f.add_argument("--status", action="append", default=[], choices=("ok", "skipped", "failed"))
    f.add_argument("--host", action="append", default=[], help="environment host name")
    f.add_argument("--tag", action="append", default=[], help="run tag (harness run --tag)")
    f.add_argument("--since", default=None, help="runs created at/after: ISO date/time (UTC) or relative: 36h, 7d, 2w")
    f.add_argument("--until", default=None, help="runs created before (a bare date includes that day)")


def when(text: str | None, now: datetime | None = None) -> str | None:
    """``--since``/``--until`` value as ISO-8601 UTC: relative ``N[hdw]`` counts back from now."""
    if text is None:
        return None
    m = _RELATIVE.match(text.strip())
    if m:
        n, unit = int(m.group(1)), m.group(2)
        try:
            delta = {"h": timedelta(hours=n), "d": timedelta(days=n), "w": timedelta(weeks=n)}[unit]
            return ((now or datetime.now(timezone.utc)) - delta).strftime("%Y-%m-%dT%H:%M:%SZ")
        except (OverflowError, ValueError):  # before the year 1 (or past what a timedelta holds)
            raise ValueError(f"{text.strip()!r} reaches back before the year 1") from None
    return text


def run(args: argparse.Namespace) -> int:
    from harness.analysis.export import export
    from harness.store.results import ResultFilter, expand_paths, parse_when, query

    missing = [r for r in args.results if not Path(r).exists()]
    if missing:
        raise UsageError(f"no such result file or directory: {missing[0]}")
    if not expand_paths(args.results):
        raise UsageError(f"no result files (*.json) found in {' '.join(args.results)}")
    for flag, value in (("--since", args.since), ("--until", args.until)):
        try:
            if value is not None:
                parse_when(when(value) or "")
        except ValueError as e:
            raise UsageError(f"{flag}: {e}; or relative: 36h, 7d, 2w") from None
    try:
        flt = ResultFilter(
            workload=tuple(args.workload), backend=tuple(args.backend), device=tuple(args.device),
            variant=tuple(args.variant), mode=tuple(args.mode), size=tuple(args.size),
            batch_size=tuple(args.batch_size), world_size=tuple(args.world_size), status=tuple(args.status),
            host=tuple(args.host),
            tag=tuple(args.tag), since=when(args.since), until=when(args.until),
        )  # fmt: skip
    except ValueError as e:
        raise UsageError(f"bad filter: {e}") from None
    refuse_overwriting_inputs(args.output, args.results)
    loaded = query(args.results, flt)
    for err in loaded.errors:
        print(f"warning: skipped {err}", file=sys.stderr)
    if not loaded.runs:
        raise UsageError("no run/cell matches the filters" if flt != ResultFilter() else
                         "no readable result files among the inputs (see the warnings above)")  # fmt: skip
    n = export(loaded.runs, args.format, args.output, samples=args.samples)  # ExportError: exit 2
    where = args.output if args.output and args.output != "-" else "stdout"
    what = "samples" if args.samples else "cells"
    print(f"exported {n} rows ({what}) from {len(loaded.runs)} runs to {where}", file=sys.stderr)
    return EXIT_OK
