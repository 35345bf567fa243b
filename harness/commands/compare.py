"""``harness compare BASELINE CANDIDATE`` (or ``--baseline [NAME] CANDIDATE``): statistically tested per-cell deltas; exit 1
on a regression (the CI contract), 0 otherwise, 2 on usage errors.

``harness compare RUN [RUN ...] --across FIELD=BASELINE``: within the given runs, each cell
against the cell that differs only in FIELD (variant, backend or device) and has FIELD =
BASELINE, with the same statistics; verdicts "faster" / "slower" / "no detectable
difference"; exit 0 when it ran, 1 only with ``--fail-if-worse`` (a cell significantly
worse than its BASELINE counterpart) or ``--fail-on-missing`` (a cell not compared because
it or its counterpart was skipped or failed), 2 on usage errors.

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
        usage="harness compare BASELINE CANDIDATE [options]\n       harness compare --baseline [NAME] CANDIDATE [options]"
              "\n       harness compare RUN [RUN ...] --across FIELD=BASELINE [options]",
        description="Per-cell deltas with confidence intervals and significance. Each worker process (a result "
        "file, or each repeat of 'harness run --repeats N') is one observation. A cell regresses only when the "
        "change is significant (Holm-adjusted) AND exceeds its threshold; with one process per side, or a "
        "contended measurement, it is inconclusive (exit 0). With --across FIELD=BASELINE the given runs are one "
        "pool and each cell is compared with the cell differing only in FIELD. See docs/compare.md.",
    )
    p.add_argument("sides", nargs="*", metavar="BASELINE CANDIDATE",
                   help="baseline and candidate: each a result file or a directory of repeated runs "
                        "(with --baseline: only the CANDIDATE; with --across: one or more runs, pooled)")  # fmt: skip
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
                        "candidate (use it in CI: a runner that lost its GPU skips every GPU cell); with --across: "
                        "when a cell is not compared because it or its BASELINE counterpart was skipped or failed")
    p.add_argument("--config", default=None, help="thresholds YAML (per-workload / per-cell thresholds)")
    p.add_argument("--across", default=None, metavar="FIELD=BASELINE",
                   help="compare within the given runs (one or more files/directories, pooled): each cell against "
                        "the cell that differs only in FIELD (variant, backend or device) and has FIELD=BASELINE, "
                        "e.g. --across variant=fp32 ('what does bf16 buy over fp32?'), --across backend=torch, "
                        "--across device=cpu. Verdicts: faster / slower / no detectable difference. Exit 0 when it "
                        "ran (see --fail-if-worse, --fail-on-missing)")  # fmt: skip
    p.add_argument("--fail-if-worse", "--fail-if-slower", dest="fail_if_worse", action="store_true",
                   help="with --across: exit 1 when a cell is significantly worse than its BASELINE counterpart "
                        "(slower; larger for a memory metric) beyond the threshold")  # fmt: skip
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

    if args.across is not None:
        return _run_across(args, settings)
    if args.fail_if_worse:
        raise UsageError("--fail-if-worse goes with --across (without it, compare exits 1 on any regression)")
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
    _emit(text, args.output)
    lost = result.lost
    if lost:
        print(f"{'error' if args.fail_on_missing else 'warning'}: {len(lost)} cell(s) measured in the baseline are "
              f"not measured in the candidate: {', '.join(c.key for c in lost[:5])}"
              + (" ..." if len(lost) > 5 else ""), file=sys.stderr)
    return EXIT_FAILED if result.regressions or (args.fail_on_missing and lost) else EXIT_OK


def _emit(text: str, output: str | None) -> None:
    """``text`` to ``output`` (``-o``) or stdout."""
    if output:
        try:
            Path(output).write_text(text)
        except OSError as e:
            raise UsageError(f"cannot write {output!r}: {e.strerror or e}") from None
    else:
        sys.stdout.write(text)


# ----------------------------------------------------------------------------- --across


def _run_across(args: argparse.Namespace, settings: Any) -> int:
    """``compare RUN [RUN ...] --across FIELD=BASELINE``: the runs are one pool; exit 0
    when it ran, 1 with ``--fail-if-worse`` / ``--fail-on-missing`` as documented, 2 on
    usage errors."""
    from harness.analysis.compare import (
        across_warnings,
        cell_parts,
        check_metric_present,
        compare_across_observations,
        observations,
        parse_across,
    )

    fieldname, baseline = parse_across(args.across)  # CompareError: exit 2, one line
    if args.baseline_name is not None:
        raise UsageError("--across compares cells within the given runs: give the runs (files or directories), "
                         "not --baseline")  # fmt: skip
    if not args.sides:
        raise UsageError(f"--across {args.across} needs one or more result files or directories")
    docs: list[dict[str, Any]] = []
    obs: dict[str, list[Any]] = {}
    parts: dict[str, Any] = {}
    quality: dict[str, dict[str, Any]] = {}
    for path in args.sides:  # one path at a time: its samples are released before the next is parsed
        loaded = _load_side(path, "runs")
        for key, xs in observations(loaded, settings.metric, settings.stat).items():
            obs.setdefault(key, []).extend(xs)
        for key, value in cell_parts(loaded).items():
            parts.setdefault(key, value)
        quality.update(_qualities(loaded))
        _release_samples(loaded)
        docs += loaded
    if args.metric is not None:
        check_metric_present(docs, settings.metric)  # CompareError: exit 2
    res = compare_across_observations(obs, parts, fieldname, baseline, settings,
                                      warnings=across_warnings(docs, fieldname),
                                      runs=[str(d.get("run_id")) for d in docs])  # fmt: skip
    if not res.comparison.cells:
        print(f"warning: no cell could be compared with its {fieldname} {baseline} counterpart (see 'not compared')",
              file=sys.stderr)  # fmt: skip
    for w in res.comparison.warnings:
        print(f"warning: {w}", file=sys.stderr)
    res.quality = {k: quality[p.candidate] for k, p in res.pairs.items() if p.candidate in quality}
    if args.format == "json":
        d = res.to_dict()
        for cd in d.get("cells") or []:
            q = quality.get(str(cd.get("candidate_cell")))
            if q is not None:
                cd["quality"] = q
        text = json.dumps(d, indent=1, default=str) + "\n"
    elif args.format == "markdown":
        text = _across_markdown(res)
    else:
        text = _across_text(res)
    _emit(text, args.output)
    worse = res.worse
    if worse and args.fail_if_worse:
        print(f"error: {len(worse)} cell(s) {res.words[1]} than their {fieldname} {baseline} counterpart: "
              + ", ".join(res.pairs[c.key].candidate for c in worse[:5]) + (" ..." if len(worse) > 5 else ""),
              file=sys.stderr)  # fmt: skip
    if res.unmeasured and args.fail_on_missing:
        print(f"error: {len(res.unmeasured)} cell(s) not compared because they or their counterpart were skipped "
              f"or failed: {', '.join(res.unmeasured[:5])}" + (" ..." if len(res.unmeasured) > 5 else ""),
              file=sys.stderr)  # fmt: skip
    failing = (args.fail_if_worse and worse) or (args.fail_on_missing and res.unmeasured)
    return EXIT_FAILED if failing else EXIT_OK


def _qualities(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Cell key -> what its quality track says (``metrics.quality``: accuracy, its change
    against fp32, the gate) and the engine a variant ran on when it left the backend's own
    (``metrics.runtime_engine``: int8 on ONNX Runtime / LiteRT): a speed-up means little next to a failed quality
    gate, and part of an int8 speed-up may be the other engine's."""
    from harness.analysis.compare import cell_key

    out: dict[str, dict[str, Any]] = {}
    for doc in docs:
        for cell in doc.get("cells") or []:
            if not isinstance(cell, dict) or cell.get("status") != "ok":
                continue
            metrics = cell.get("metrics") if isinstance(cell.get("metrics"), dict) else {}
            q = metrics.get("quality") if isinstance(metrics.get("quality"), dict) else {}
            engine = metrics.get("runtime_engine")  # the timed step's engine (docs/variants.md)
            engine = engine if isinstance(engine, str) and engine else None
            if not q and engine is None:
                continue
            gate = q.get("gate") if isinstance(q.get("gate"), dict) else {}
            entry = {"accuracy": q.get("accuracy"), "accuracy_delta": q.get("accuracy_delta"),
                     "agreement": q.get("agreement"), "gate_passed": gate.get("passed"), "gate_rule": gate.get("rule"),
                     "engine": engine}  # fmt: skip
            try:
                out[cell_key(cell)] = entry
            except Exception:  # noqa: BLE001 - an odd cell has no key: no quality shown for it
                continue
    return out


def _quality_text(q: dict[str, Any] | None) -> str:
    """``"pass (-0.22 pp)"``, ``"FAIL (-82.44 pp)"``, ``"n/a"``; ``", on onnxruntime"``
    when the variant ran on another engine than the backend's own."""
    if not q:
        return "n/a"
    passed = q.get("gate_passed")
    words = {True: "pass", False: "FAIL"}[passed] if isinstance(passed, bool) else "no gate"
    delta = q.get("accuracy_delta")
    if isinstance(delta, (int, float)) and not isinstance(delta, bool):
        words += f" ({100 * delta:+.2f} pp)"
    if q.get("engine"):
        words += f", on {q['engine']}"
    return words


def _with_quality(res: Any) -> bool:
    return bool(getattr(res, "quality", None))


def _across_heads(res: Any) -> list[str]:
    return ["cell", f"{res.field}", "verdict", "estimate", "95% CI", "p (Holm)", "threshold",
            "detectable (80%)", f"processes {res.baseline}/other"] + (
            ["quality (vs fp32)"] if _with_quality(res) else []) + ["notes"]  # fmt: skip


def _across_rows(res: Any) -> list[list[str]]:
    """One row per pair, grouped by cell (the key without FIELD)."""
    from harness.reports import formatting as F

    def pct(x: Any) -> str:
        return f"{x * 100:.1f}%" if F.is_number(x) else "n/a"

    rows = []
    common = _common_notes(res)
    for cc in sorted(res.comparison.cells, key=lambda c: (res.pairs[c.key].group, res.pairs[c.key].value)):
        pair = res.pairs[cc.key]
        _g, ci = res.gain(cc)
        p = cc.p_adjusted
        rows.append([
            pair.group, f"{pair.value} vs {res.baseline}", res.verdict(cc), res.estimate_text(cc),
            _ci_words(ci, res.words),
            "n/a" if not F.is_number(p) else ("<0.0001" if p < 1e-4 else f"{p:.4f}"),
            pct(cc.threshold) + (" (auto)" if cc.threshold_source.startswith("auto") else ""),
            pct(cc.min_detectable_change), f"{cc.n_baseline}/{cc.n_candidate}",
        ] + ([_quality_text(res.quality.get(cc.key))] if _with_quality(res) else []) + [
            "; ".join(n for n in cc.notes if n not in common),
        ])  # fmt: skip
    return rows


def _ci_words(ci: tuple[float, float] | None, words: tuple[str, str, str]) -> str:
    """The 95% CI of the factor in the estimate's own words, so a row reads "3.69x slower,
    CI 3.39-4.17x slower" rather than a speed-up interval of [0.24x, 0.30x] next to it;
    an interval across 1 names both ends ("1.10x slower - 1.25x faster")."""
    if not ci or not all(x > 0 for x in ci):
        return "n/a"
    better, worse, _factor = words
    lo, hi = ci
    if lo >= 1.0:
        return f"{lo:.2f}–{hi:.2f}x {better}"
    if hi <= 1.0:
        return f"{1 / hi:.2f}–{1 / lo:.2f}x {worse}"
    return f"{1 / lo:.2f}x {worse} – {hi:.2f}x {better}"


def _common_notes(res: Any) -> list[str]:
    """Notes every pair has (with more than one pair): said once under the table, not per row."""
    cells = res.comparison.cells
    if len(cells) < 2:
        return []
    return [n for n in cells[0].notes if all(n in c.notes for c in cells[1:])]


def _across_header(res: Any) -> str:
    s = res.comparison.settings
    m = s.declared
    stat = f", stat {s.stat}" if s.from_samples else ""
    counts = ", ".join(f"{k}: {n}" for k, n in res.counts().items())
    return (f"across {res.field} (baseline {res.baseline}): each cell against the {res.baseline} cell that differs "
            f"from it only in {res.field} — metric "
            f"{s.metric} ({m.unit + ', ' if m.unit else ''}{m.direction} is better){stat}, alpha {s.alpha} (Holm "
            f"over {res.comparison.tested} tested pair(s)), {len(res.runs)} run(s); {counts or 'no cells'}")  # fmt: skip


def _across_advice(res: Any) -> list[str]:
    from harness.analysis.compare import CONTENDED, NOISE_UNKNOWN

    labels = [c.verdict_text for c in res.comparison.cells]
    out = [f"every pair: {n}" for n in _common_notes(res)
           if not (NOISE_UNKNOWN in labels and n.startswith("one process per cell"))]  # fmt: skip
    if NOISE_UNKNOWN in labels:
        out.append(f"{labels.count(NOISE_UNKNOWN)} pair(s) {NOISE_UNKNOWN}: each cell was measured in one process; "
                   "measure it in several (harness run --repeats 3, or several runs) so the run-to-run noise is "
                   "known" + (" (or --within-run)" if res.comparison.settings.from_samples else ""))  # fmt: skip
    if CONTENDED in labels:
        out.append(f"{labels.count(CONTENDED)} pair(s) {CONTENDED}: rerun on a quiet machine (or --allow-contended)")
    if res.unmeasured:
        out.append(f"{len(res.unmeasured)} cell(s) not compared because they or their counterpart were skipped or "
                   "failed (under 'not compared')")  # fmt: skip
    q = getattr(res, "quality", None) or {}
    failed = [res.pairs[k].candidate for k, v in q.items() if v.get("gate_passed") is False]
    if failed:
        rule = next((v.get("gate_rule") for v in q.values() if v.get("gate_rule")), None)
        out.append(f"{len(failed)} cell(s) FAIL the quality gate{' (' + rule + ')' if rule else ''}: their speed is "
                   f"no reason to use them ({', '.join(failed[:3])}{' ...' if len(failed) > 3 else ''})")  # fmt: skip
    engines = sorted({v["engine"] for v in q.values() if v.get("engine")})
    if engines:
        out.append(f"some variants ran on {', '.join(engines)} instead of the backend's own runtime (\"on ...\" "
                   "under quality): their speed-up includes the change of engine (docs/variants.md)")  # fmt: skip
    return out


def _across_text(res: Any) -> str:
    heads = _across_heads(res)
    table = [heads] + _across_rows(res)
    widths = [max(len(r[i]) for r in table) for i in range(len(heads) - 1)]
    lines = [_across_header(res), ""]
    for r in table:
        lines.append("  ".join(r[i].ljust(widths[i]) for i in range(len(heads) - 1)).rstrip()
                     + ("  " + r[-1] if r[-1] else ""))  # fmt: skip
    if res.not_compared:
        lines += ["", f"not compared ({len(res.not_compared)}):"]
        lines += [f"  {k}: {why}" for k, why in res.not_compared]
    for a in _across_advice(res):
        lines.append(f"note: {a}")
    for w in res.comparison.warnings:
        lines.append(f"warning: {w}")
    return "\n".join(lines) + "\n"


def _across_markdown(res: Any) -> str:
    from harness.reports.tables import md_escape

    heads = _across_heads(res)
    lines = [f"### harness compare --across: {md_escape(_across_header(res))}", ""]
    lines += [f"> warning: {md_escape(w)}" for w in res.comparison.warnings] + ([""] if res.comparison.warnings else [])
    lines.append("| " + " | ".join(md_escape(h) for h in heads) + " |")
    lines.append("|" + "---|" * len(heads))
    for r in _across_rows(res):
        lines.append("| " + " | ".join(md_escape(x) for x in r) + " |")
    lines.append("")
    if res.not_compared:
        lines.append(f"Not compared ({len(res.not_compared)}):")
        lines += [f"- {md_escape(k)}: {md_escape(why)}" for k, why in res.not_compared]
        lines.append("")
    advice = _across_advice(res)
    lines += [f"> {md_escape(a)}" for a in advice] + ([""] if advice else [])
    better, worse, factor = res.words
    lines.append(f"*95% CI*: of the {factor} ({res.field} {res.baseline} / the cell), in the estimate's words. "
                 f"A verdict of {better} "
                 f"or {worse} needs a significant difference (Holm-adjusted) AND one beyond the threshold; "
                 "*detectable (80%)* is the smallest difference this comparison flags with 80% probability.")  # fmt: skip
    return "\n".join(lines) + "\n"
