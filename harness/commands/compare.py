"""``harness compare BASELINE CANDIDATE`` (or ``--baseline [NAME] CANDIDATE``): statistically tested per-cell deltas; exit 1
on a regression (the CI contract), 0 otherwise, 2 on usage errors.

BASELINE and CANDIDATE are each a result file or a directory of result files; several
files on one side, or cells measured with ``harness run --repeats N``, are separate
processes of the same code, which is what lets the verdict account for run-to-run noise
(see harness/compare.py and docs/compare.md). With one process per side a cell is
"inconclusive: run-to-run noise unknown" (exit 0) unless ``--within-run``; a contended
cell is "inconclusive: contended" unless ``--allow-contended``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from harness.cli import EXIT_FAILED, EXIT_OK, UsageError, refuse_overwriting_inputs

ORDER = 35


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="compare a candidate run against a baseline (exit 1 on a regression)",
        usage="harness compare BASELINE CANDIDATE [options]\n       harness compare --baseline [NAME] CANDIDATE [options]",
        description="Per-cell deltas with confidence intervals and significance. Each worker process (a result "
        "file, or each repeat of 'harness run --repeats N') is one observation. A cell regresses only when the "
        "change is significant (Holm-adjusted) AND exceeds its threshold; with one process per side, or a "
        "contended measurement, it is inconclusive (exit 0). See docs/compare.md.",
    )
    p.add_argument("sides", nargs="*", metavar="BASELINE CANDIDATE",
                   help="baseline and candidate: each a result file or a directory of repeated runs "
                        "(with --baseline: only the CANDIDATE)")  # fmt: skip
    p.add_argument("--baseline", dest="baseline_name", nargs="?", const="default", default=None, metavar="NAME",
                   help="use the stored baseline NAME (default: default; see 'harness baseline') as BASELINE; "
                        "write NAME right after --baseline or as --baseline=NAME")  # fmt: skip
    p.add_argument("--store", default=None, help="baseline store for --baseline (default: $HARNESS_BASELINE_DIR or ./baselines)")
    p.add_argument("--threshold", default=None, help="PCT (e.g. 5 or 5%%) or 'auto' (noise-derived; the default)")
    p.add_argument("--metric", default=None,
                   help="a gateable metric of the declared table (harness/metrics.py): latency_ms (default, "
                        "from each process's raw samples), throughput_per_s (sustained), peak_host_mem_bytes, "
                        "energy.energy_per_sample_j (or energy_per_sample_j), quality.accuracy, ...")  # fmt: skip
    p.add_argument("--stat", default=None, choices=("min", "p10", "p50", "mean"),
                   help="location statistic of each process's samples (default: min, the most reproducible "
                        "between processes on a shared machine)")  # fmt: skip
    p.add_argument("--alpha", type=float, default=None, help="significance level (default 0.05)")
    p.add_argument("--within-run", action="store_true",
                   help="with one process per side, test the raw samples of the two runs (Mann-Whitney U + "
                        "bootstrap); this ignores run-to-run noise. Without it such cells are 'inconclusive: "
                        "run-to-run noise unknown'")  # fmt: skip
    p.add_argument("--allow-contended", action="store_true",
                   help="draw verdicts from cells measured while the machine was contended "
                        "(timing.contention.detected); by default they are 'inconclusive: contended'")  # fmt: skip
    p.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    p.add_argument("--fail-on-missing", action="store_true",
                   help="also exit 1 when a cell measured in the baseline is absent, skipped or failed in the "
                        "candidate (use it in CI: a runner that lost its GPU skips every GPU cell)")
    p.add_argument("--config", default=None, help="thresholds YAML (per-workload / per-cell thresholds)")
    p.add_argument("-o", "--output", default=None, help="write the output here instead of stdout")


def _load_side(path: str, what: str) -> list[dict[str, Any]]:
    from harness.results import expand_paths, load_results

    p = Path(path)
    if not p.exists():
        raise UsageError(f"{what}: no such result file or directory: {path}")
    files = expand_paths([p])
    if not files:
        raise UsageError(f"{what}: no result files (*.json) in {path}")
    loaded = load_results(files)
    for err in loaded.errors:
        print(f"warning: skipped {err}", file=sys.stderr)
    if not loaded.runs:
        raise UsageError(f"{what}: no readable result files in {path} (see the warnings above)")
    return loaded.runs


def _sides(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    """(baseline documents, candidate path) from BASELINE CANDIDATE or --baseline [NAME] CANDIDATE."""
    sides = list(args.sides)
    name = args.baseline_name
    if name is None:
        if len(sides) != 2:
            raise UsageError("give BASELINE and CANDIDATE (result files or directories), or --baseline [NAME] CANDIDATE")
        return _load_side(sides[0], "baseline"), sides[1]
    if not sides and Path(name).exists():  # `--baseline CANDIDATE`: argparse took the candidate as NAME
        sides, name = [name], "default"
    if len(sides) != 1:
        raise UsageError("with --baseline give only the CANDIDATE (the baseline comes from the store)"
                         if sides else "--baseline needs a CANDIDATE result file or directory")  # fmt: skip
    from harness.baseline import BaselineError, get_baseline, load_baseline_runs

    try:
        stored = get_baseline(name, args.store)
        runs = load_baseline_runs(stored)
    except BaselineError as e:
        raise UsageError(str(e)) from None
    m = stored.manifest
    commits = ", ".join(c[:12] for c in m.get("git_commits") or []) or "unknown"
    print(f"baseline {name!r}: {len(runs)} run(s) set {m.get('set_at')}, git {commits} ({stored.path})", file=sys.stderr)
    return runs, sides[0]


def run(args: argparse.Namespace) -> int:
    from harness.compare import (
        CompareError,
        CompareSettings,
        check_metric_present,
        compare_docs,
        parse_threshold,
        settings_from_config,
    )

    refuse_overwriting_inputs(args.output, [x for x in args.sides if x])
    try:
        settings = CompareSettings()
        if args.config:
            import yaml

            try:
                from harness.safeyaml import safe_load

                cfg = safe_load(Path(args.config).read_text()) or {}
            except OSError as e:
                raise UsageError(f"cannot read thresholds config {args.config!r}: {e.strerror or e}") from None
            except yaml.YAMLError as e:
                raise UsageError(f"thresholds config {args.config!r} is not valid YAML ({str(e).splitlines()[0]})") from None
            settings = settings_from_config(cfg, settings)
        kw: dict[str, Any] = {"within_run": bool(args.within_run), "allow_contended": bool(args.allow_contended)}
        if args.metric is not None:
            kw["metric"] = args.metric
        if args.threshold is not None:
            kw["threshold"] = parse_threshold(args.threshold)
        if args.stat is not None:
            kw["stat"] = args.stat
        if args.alpha is not None:
            kw["alpha"] = args.alpha
        merged = {f: getattr(settings, f) for f in settings.__dataclass_fields__}
        merged.update(kw)
        settings = CompareSettings(**merged)
    except CompareError as e:
        raise UsageError(str(e)) from None

    base, candidate = _sides(args)
    cand = _load_side(candidate, "candidate")
    if args.metric is not None:  # a metric nobody measured would pass the gate silently
        try:
            check_metric_present([*base, *cand], settings.metric)
        except CompareError as e:
            raise UsageError(str(e)) from None
    result = compare_docs(base, cand, settings)
    if not any(c.verdict not in ("only_baseline", "only_candidate") for c in result.cells):
        print("warning: the two sides have no cell in common", file=sys.stderr)
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)

    from reports.compare_tables import comparison_markdown, comparison_text

    if args.format == "json":
        text = json.dumps(result.to_dict(), indent=1, default=str) + "\n"
    elif args.format == "markdown":
        text = comparison_markdown(result)
    else:
        text = comparison_text(result)
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as e:
            raise UsageError(f"cannot write {args.output!r}: {e.strerror or e}") from None
    else:
        sys.stdout.write(text)
    lost = result.lost
    if lost:
        print(f"{'error' if args.fail_on_missing else 'warning'}: {len(lost)} cell(s) measured in the baseline are "
              f"not measured in the candidate: {', '.join(c.key for c in lost[:5])}"
              + (" ..." if len(lost) > 5 else ""), file=sys.stderr)
    return EXIT_FAILED if result.regressions or (args.fail_on_missing and lost) else EXIT_OK
