"""``harness compare BASELINE CANDIDATE`` (or ``--baseline [NAME] CANDIDATE``): statistically tested per-cell deltas; exit 1
on a regression (the CI contract), 0 otherwise, 2 on usage errors.

BASELINE and CANDIDATE are each a result file or a directory of result files; several
files on one side, or cells measured with ``harness run --repeats N``, are separate
processes of the same code, which is what lets the verdict account for run-to-run noise
(see harness/analysis/compare.py and docs/compare.md). With one process per side a cell is
"inconclusive: run-to-run noise unknown" (exit 0) unless ``--within-run``; a contended
cell is "inconclusive: contended" unless ``--allow-contended``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from harness.commands.common import EXIT_FAILED, EXIT_OK, UsageError, refuse_overwriting_inputs

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
                   help="a gateable metric of the declared table (harness/core/metrics.py): latency_ms (default, "
                        "from each process's raw samples), throughput_per_s (sustained), peak_host_mem_bytes, "
                        "energy.energy_per_sample_j (or energy_per_sample_j), quality.accuracy, ...")  # fmt: skip
    p.add_argument("--stat", default=None, choices=("min", "p10", "p50", "mean"),
                   help="location statistic of each process's samples (default: min, the most reproducible "
                        "between processes on a shared machine)")  # fmt: skip
    p.add_argument("--alpha", type=_alpha, default=None, help="significance level, between 0 and 0.5 (default 0.05)")
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


ALPHA_RANGE = "a number between 0 and 0.5 (exclusive)"
CONFIG_KEYS = ("threshold", "alpha", "stat", "fallback_threshold", "workloads", "cells")


def _alpha_problem(value: Any) -> str | None:
    """None for a usable significance level (finite, 0 < alpha < 0.5), else why not."""
    try:
        a = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError, OverflowError):
        a = None
    if a is None or not 0 < a < 0.5:  # nan fails the comparison too
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        return f"alpha must be {ALPHA_RANGE}, got {shown}"
    return None


def _alpha(text: str) -> float:
    """argparse type of ``--alpha``."""
    problem = _alpha_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem[len("alpha "):])
    return float(text)


def _load_config(path: str, base: Any) -> Any:
    """``--config``: the thresholds YAML (untrusted: read through harness.core.safeyaml, so
    bounded, UTF-8 and without duplicate keys), each value checked where it is written;
    UsageError ``FILE:LINE: what is wrong; what is allowed`` otherwise. Returns ``base``
    with the file's settings merged in (harness.analysis.compare.settings_from_config)."""
    import yaml

    from harness.core import safeyaml
    from harness.analysis.compare import STATS, CompareError, parse_threshold, settings_from_config

    try:
        cfg, root = safeyaml.load_file(path)
    except OSError as e:
        raise UsageError(f"cannot read thresholds config {path!r}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise UsageError(safeyaml.describe(e, path, "not valid YAML")) from None
    if cfg is None:
        return base
    if not isinstance(cfg, dict):
        raise UsageError(f"{path}:1: a thresholds config is a mapping with the keys {', '.join(CONFIG_KEYS)} "
                         "(see docs/compare.md)")

    def at(*where: Any, key: bool = False) -> str:
        return f"{path}:{safeyaml.line_of(root, list(where), key=key)}"

    def threshold(value: Any, *where: Any) -> float | None:
        name = ".".join(map(str, where))
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise UsageError(f"{at(*where)}: {name}: a threshold is a percentage like 5 or 5% or 'auto', got "
                             f"{type(value).__name__}")
        try:
            return parse_threshold(value)
        except CompareError as e:
            raise UsageError(f"{at(*where)}: {name + ': ' if name != 'threshold' else ''}{e}") from None

    for key, value in cfg.items():
        if key not in CONFIG_KEYS:
            raise UsageError(f"{at(key, key=True)}: unknown key {str(key)[:40]!r}; allowed: {', '.join(CONFIG_KEYS)}")
        if key in ("threshold", "fallback_threshold"):
            if threshold(value, key) is None and key == "fallback_threshold":
                raise UsageError(f"{at(key)}: fallback_threshold: cannot be 'auto' (it is what auto means for "
                                 "--within-run): give a percentage")
        elif key == "alpha":
            problem = _alpha_problem(value)
            if problem:
                raise UsageError(f"{at(key)}: {problem}")
        elif key == "stat":
            if not isinstance(value, str) or value not in STATS:
                raise UsageError(f"{at(key)}: stat: {str(value)[:40]!r} is not valid; choose from: {', '.join(STATS)}")
        elif value is not None:  # workloads / cells: name -> threshold
            if not isinstance(value, dict):
                raise UsageError(f"{at(key)}: {key}: must map names to thresholds (e.g. mlp: 5%)")
            for name, t in value.items():
                threshold(t, key, name)
    try:
        return settings_from_config(cfg, base)
    except CompareError as e:
        raise UsageError(f"{path}: {e}") from None


def _load_side(path: str, what: str) -> list[dict[str, Any]]:
    from harness.store.results import expand_paths, load_results

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


def _release_samples(docs: list[dict[str, Any]]) -> None:
    """Drop the raw sample lists of ``docs`` (cells and repeats) once their observations
    are taken; the first sample stays, so :func:`harness.analysis.compare.check_metric_present`
    still sees which cells have samples."""
    for doc in docs:
        cells = doc.get("cells")
        for cell in cells if isinstance(cells, list) else []:
            if not isinstance(cell, dict):
                continue
            reps = cell.get("repeats")
            for rec in [cell, *(r for r in (reps if isinstance(reps, list) else []) if isinstance(r, dict))]:
                xs = rec.get("samples_ms")
                if isinstance(xs, list) and len(xs) > 1:
                    rec["samples_ms"] = xs[:1]


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
    from harness.store.baseline import get_baseline, load_baseline_runs

    stored = get_baseline(name, args.store)  # BaselineError is a UserError: exit 2, one line
    runs = load_baseline_runs(stored)
    m = stored.manifest
    commits = ", ".join(c[:12] for c in m.get("git_commits") or []) or "unknown"
    print(f"baseline {name!r}: {len(runs)} run(s) set {m.get('set_at')}, git {commits} ({stored.path})", file=sys.stderr)
    return runs, sides[0]


def run(args: argparse.Namespace) -> int:
    from harness.analysis.compare import (
        CompareSettings,
        check_metric_present,
        compare_observations,
        environment_warnings,
        observations,
        parse_threshold,
    )

    refuse_overwriting_inputs(args.output, [x for x in args.sides if x])
    # a CompareError (bad config, threshold, metric) is a UserError: cli.main reports it, exit 2
    settings = CompareSettings()
    if args.config:
        settings = _load_config(args.config, settings)
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

    base, candidate = _sides(args)
    # one side at a time (bounded memory, issue 13): each side's observations (float64
    # arrays, 8 bytes a sample) are taken right after it is loaded and its samples_ms lists
    # (~32 bytes a sample as Python floats) released before the other side is parsed
    ob = observations(base, settings.metric, settings.stat)
    _release_samples(base)
    cand = _load_side(candidate, "candidate")
    oc = observations(cand, settings.metric, settings.stat)
    _release_samples(cand)
    if args.metric is not None:  # a metric nobody measured would pass the gate silently
        check_metric_present([*base, *cand], settings.metric)  # CompareError: exit 2
    # what compare_docs(base, cand, settings) does, on the observations taken above
    result = compare_observations(ob, oc, settings, warnings=environment_warnings(base, cand),
                                  baseline_runs=[str(d.get("run_id")) for d in base],
                                  candidate_runs=[str(d.get("run_id")) for d in cand])  # fmt: skip
    if not any(c.verdict not in ("only_baseline", "only_candidate") for c in result.cells):
        print("warning: the two sides have no cell in common", file=sys.stderr)
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)

    from harness.reports.compare_tables import comparison_markdown, comparison_text

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
