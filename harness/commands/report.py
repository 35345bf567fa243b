"""``harness report``: HTML or Markdown from stored results (never runs anything)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.cli import EXIT_OK, UsageError

ORDER = 30


def add_parser(sub: Any) -> None:
    rep = sub.add_parser("report", help="build a report from result files or directories")
    rep.add_argument("results", nargs="+", help="result files and/or directories of them")
    rep.add_argument("-o", "--output", default=None, help="output file (default: beside the first result)")
    rep.add_argument("--format", choices=("html", "markdown"), default="html")
    rep.add_argument("--title", default=None)


def run(args: argparse.Namespace) -> int:
    from harness.results import expand_paths, load_results

    paths = expand_paths(args.results)
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such result file or directory: {missing[0]}")
    if not paths:
        raise UsageError(f"no result files (*.json) found in {' '.join(args.results)}")
    loaded = load_results(paths)
    for err in loaded.errors:
        print(f"warning: skipped {err}", file=sys.stderr)
    if not loaded.runs:
        raise UsageError("no readable result files among the inputs (see the warnings above)")
    if args.format == "markdown":
        from reports.tables import markdown_summary

        text = markdown_summary(loaded.runs)
        if args.output:
            Path(args.output).write_text(text)
            print(f"report: {args.output}")
        else:
            sys.stdout.write(text)
        return EXIT_OK
    from reports.html import write_html_report

    if args.output:
        target = Path(args.output)
    elif len(paths) == 1 and paths[0].is_file():
        target = paths[0].with_suffix(".html")
    else:
        target = paths[0].parent / "report.html"
    try:
        write_html_report(loaded.runs, target, errors=loaded.errors, title=args.title)
    except OSError as e:
        raise UsageError(f"cannot write report {str(target)!r}: {e.strerror or e}") from None
    print(f"report: {target}")
    return EXIT_OK



