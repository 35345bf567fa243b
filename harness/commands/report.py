"""``harness report``: HTML or Markdown from stored results (never runs anything).

Given many runs (a directory), the report adds a history section (trends and change
points per cell and machine), a regressions section (each machine's latest run against
its earlier runs) and, when the runs come from several machines, a procurement view
(``--prices`` adds perf per dollar, ``--rank-by`` picks the ranking metric).
``--calibration DIR`` computes MFU and the roofline at report time from a calibration
taken after the run (:mod:`harness.reports.calibration`), labelled as such; the result
files are not changed.
Both formats are drawn by the registered report sections (:mod:`harness.reports.api`);
a section that raises is shown in the report in its place and warned about here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.commands.common import EXIT_OK, UsageError, refuse_overwriting_inputs

ORDER = 30


def add_parser(sub: Any) -> None:
    rep = sub.add_parser("report", help="build a report from result files or directories")
    rep.add_argument("results", nargs="+", help="result files and/or directories of them")
    rep.add_argument("-o", "--output", default=None, help="output file (default: beside the first result)")
    rep.add_argument("--format", choices=("html", "markdown"), default="html")
    rep.add_argument("--title", default=None)
    rep.add_argument("--prices", default=None, help="price file (YAML) for perf per dollar in the procurement view")
    rep.add_argument("--rank-by", default="throughput",
                     choices=("throughput", "latency", "perf_per_watt", "perf_per_dollar"),
                     help="ranking metric of the procurement view (default: throughput)")
    rep.add_argument("--calibration", default=None, metavar="DIR",
                     help="compute MFU and the roofline at report time from the calibrations in DIR "
                          "(`harness calibrate --out DIR`, taken after the run; matched by machine "
                          "fingerprint); such values are labelled as applied at report time")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from harness.store.results import expand_paths, load_results

    refuse_overwriting_inputs(args.output, args.results)
    # what the user named must exist; a broken link or loop *inside* a directory is
    # one bad file among many, reported and skipped by the loader
    missing = [r for r in args.results if not Path(r).exists() and not Path(r).is_symlink()]
    paths = expand_paths(args.results)
    if missing:
        raise UsageError(f"no such result file or directory: {missing[0]}")
    if not paths:
        raise UsageError(f"no result files (*.json) found in {' '.join(args.results)}")
    cal_dir = None
    if getattr(args, "calibration", None):
        from harness.reports.calibration import check_calibration_dir

        cal_dir = check_calibration_dir(args.calibration)  # a UserError: exit 2, one line
    prices = None
    if args.prices:
        from harness.analysis.procurement import load_prices

        prices = load_prices(args.prices)  # PriceError is a UserError: exit 2, one line
    loaded = load_results(paths)
    for err in loaded.errors:
        print(f"warning: skipped {err}", file=sys.stderr)
    if not loaded.runs:
        raise UsageError("no readable result files among the inputs (see the warnings above)")
    runs = loaded.runs
    if cal_dir is not None:
        from harness.reports.calibration import apply_report_calibration

        runs, notes = apply_report_calibration(runs, cal_dir)
        for note in notes:
            print(f"warning: --calibration: {note}", file=sys.stderr)
    if args.format == "markdown":
        from harness.reports.markdown import markdown_report

        rendered = markdown_report(runs, prices, args.rank_by)
        _warn_failures(rendered.failures)
        text = rendered.text
        if args.output:
            try:
                Path(args.output).write_text(text, encoding="utf-8")
            except OSError as e:
                raise UsageError(f"cannot write report {args.output!r}: {e.strerror or e}") from None
            print(f"report: {args.output}")
        else:
            sys.stdout.write(text)
        return EXIT_OK
    from harness.reports.html import write_html_report

    if args.output:
        target = Path(args.output)
    elif len(paths) == 1 and paths[0].is_file():
        target = paths[0].with_suffix(".html")
    else:
        target = paths[0].parent / "report.html"
    failures: list[str] = []
    try:
        write_html_report(runs, target, errors=loaded.errors, title=args.title, prices=prices,
                          rank_by=args.rank_by, failures=failures)  # fmt: skip
    except OSError as e:
        raise UsageError(f"cannot write report {str(target)!r}: {e.strerror or e}") from None
    _warn_failures(failures)
    print(f"report: {target}")
    return EXIT_OK


def _warn_failures(failures: list[str]) -> None:
    """A section that raised is shown in the report; say so on stderr as well."""
    for msg in failures:
        print(f"warning: {msg} (shown in the report in its place)", file=sys.stderr)
