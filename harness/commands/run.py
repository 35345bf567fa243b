"""``harness run``: run a suite and write results/<run_id>.json.

Output problems are found before time is spent: ``--out`` (and an explicit ``--report``
path's folder) must take a real test write, else exit 2 with one line. Write errors
during the run never lose a measured cell (``harness.launch.runner.ResultWriter``): the run
goes on, says what happened, and ends with exit 4 (``EXIT_WRITE``) and one line naming
the path, the cause and where the complete copy is when the file could not be brought up
to date; a failed HTML report is exit 4 as well, with the JSON saved.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.commands.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_WRITE,
    UsageError,
    bounded_setting,
)

ORDER = 20


def add_parser(sub: Any) -> None:
    run = sub.add_parser("run", help="run a suite and write results/<run_id>.json")
    run.add_argument("--suite", default=None, help="built-in suite (smoke, quick, nightly, procurement: harness list suites) or a YAML file")
    run.add_argument("-w", "--workload", action="append", default=[], help="workload (repeatable)")
    run.add_argument("-b", "--backend", action="append", default=[], help="backend (repeatable)")
    run.add_argument("-d", "--device", action="append", default=[], help="cpu, cuda, cuda:N, tpu (repeatable)")
    run.add_argument("-v", "--variant", action="append", default=[], help="variant (repeatable)")
    run.add_argument("--mode", action="append", default=[], choices=("inference", "training", "generate"),
                     help="repeatable; generate: autoregressive decoding of a causal LM, every token timed "
                          "(TTFT, TPOT, inter-token latency; docs/generation.md)")
    run.add_argument("--prompt-len", action="append", default=[], type=_int_list("prompt_len"), metavar="N[,N...]",
                     help="generate cells: prompt tokens per request (repeatable or a list; default 32)")
    run.add_argument("--gen-len", action="append", default=[], type=_int_list("gen_len"), metavar="N[,N...]",
                     help="generate cells: generated tokens per request, a fixed number, no early end (default 16)")
    run.add_argument("--slo", default=None, metavar="METRIC=MS[,...]",
                     help="generate cells: service-level objectives, e.g. ttft_ms=500,tpot_ms=50; the cell reports "
                          "goodput, the share of requests (and their tokens/s) meeting every one")
    run.add_argument("--batch-size", action="append", default=[], type=bounded_setting("batch_size"), help="repeatable")
    run.add_argument("--world-size", action="append", default=[], type=_world_sizes, metavar="N[,N...]",
                     help="data-parallel training with N workers (torchrun for -b torch, MirroredStrategy for "
                          "-b tensorflow); a list such as 1,2,4 sweeps it and adds scaling efficiency vs 1")
    run.add_argument("--nnodes", type=bounded_setting("nnodes"), default=None,
                     help="machines in a multi-node torchrun job (run the same command on each; needs --rdzv-endpoint)")
    run.add_argument("--rdzv-endpoint", default=None, metavar="HOST:PORT", help="torchrun rendezvous endpoint")
    run.add_argument("--rdzv-id", default=None, help="torchrun rendezvous job id (the same on every node)")
    run.add_argument("--rdzv-backend", default=None, help="torchrun rendezvous backend (default c10d)")
    run.add_argument("--size", default=None, help="size preset: tiny, small, base")
    run.add_argument("--min-time", type=bounded_setting("min_time_s"), default=None,
                     help="minimum timed seconds per cell (at most 24 h)")
    run.add_argument("--precision", type=_precision, default=None, metavar="PCT",
                     help="sample each cell until the 95%% CI of its median is within +-PCT%% of the median "
                          "(e.g. 1%% or 1; more than 0, at most 50), between min_samples and --max-time, "
                          "instead of for --min-time (noisy cells get more samples, stable ones fewer; "
                          "timing.stop_reason says why each stopped)")
    run.add_argument("--max-time", type=bounded_setting("max_time_s"), default=None, metavar="S",
                     help="with --precision: timed seconds after which the target is given up "
                          "(default 10 x --min-time; at most 24 h)")
    run.add_argument("--timeout", type=bounded_setting("timeout_s"), default=None,
                     help="per-cell timeout in seconds (at most 7 days)")
    run.add_argument("--repeats", type=bounded_setting("repeats"), default=None, metavar="N",
                     help="measure each cell in N separate worker processes, interleaved in random order "
                          "across the suite (default 1; nightly/procurement suites: 3). compare needs >= 2 "
                          "processes on a side to know the run-to-run noise")
    run.add_argument("--fail-on-contention", action="store_true",
                     help="exit 1 when any cell was measured while other processes competed for its CPU/GPU "
                          "(for CI jobs that prefer a retry)")
    run.add_argument("--threads", type=bounded_setting("threads"), default=None, help="intra-op threads (default: framework's)")
    run.add_argument("--out", default="results", help="output directory (default: results)")
    run.add_argument("--tag", default=None, help="free text stored with the run (e.g. nightly, a PR number)")
    run.add_argument("--report", nargs="?", const="", default=None, metavar="FILE.html",
                     help="also write the HTML report (default path: beside the result)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--tpu", default=None, metavar="NAME|ADDRESS",
                     help="TPU for -d tpu (-b tensorflow): name, grpc:// address or 'local' (default: $TPU_NAME)")
    run.add_argument("--energy-estimate", action="store_true", default=None,
                     help="where energy cannot be measured, record a labelled estimate (TDP x utilisation)")
    run.add_argument("--launch", choices=("auto", "fork", "process"), default=None,
                     help="how each cell's process starts: auto (default) forks it from a per-backend zygote that "
                          "imported the framework once, where that is safe; fork also forks backends whose import "
                          "leaves threads running (TensorFlow); process starts a fresh worker process per cell "
                          "(docs/launch.md)")
    run.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                     help="run the cells as Ray tasks on a cluster (docs/fleet.md): every cell once per suite "
                          "target, or sharded over the nodes; one cell per node at a time; one result file per "
                          "machine. ADDRESS: HOST:PORT of the head node, ray://HOST:PORT, auto (the cluster this "
                          "machine is in) or local; none: $RAY_ADDRESS, else the last cluster started here, else "
                          "a new local Ray")



def _precision(text: str) -> float:
    """argparse type: ``PCT``, ``PCT%`` (percent of the median, within ``LIMITS["precision"]``)."""
    return bounded_setting("precision")(text.strip().removesuffix("%").strip())


def _int_list(limit: str) -> Any:
    """argparse type: ``N`` or ``N,M,...`` (integers within ``LIMITS[limit]``)."""
    one = bounded_setting(limit)

    def parse(text: str) -> list[int]:
        return [one(part.strip()) for part in text.split(",") if part.strip()] or [one(text)]

    parse.__name__ = limit
    return parse


def _world_sizes(text: str) -> list[int]:
    """argparse type: ``N`` or ``N,M,...`` (integers within ``LIMITS["world_size"]``)."""
    one = bounded_setting("world_size")
    return [one(part.strip()) for part in text.split(",") if part.strip()] or [one(text)]


def run(args: argparse.Namespace) -> int:
    from harness.launch.runner import OutputNotWritable, os_error_cause, output_dir_problem, run_suite
    from harness.core.suite import ConfigError, Suite, apply_overrides, expand, load_suite

    try:
        suite = load_suite(args.suite) if args.suite else Suite(name="cli")
        if not args.suite and not args.workload:
            raise ConfigError("nothing to run: give --suite NAME|FILE or at least one -w WORKLOAD")
        suite = apply_overrides(
            suite,
            axes={
                "workload": args.workload,
                "backend": args.backend,
                "device": args.device,
                "variant": args.variant,
                "mode": args.mode,
                "batch_size": args.batch_size,
                "world_size": [n for group in args.world_size for n in group],
                "prompt_len": [n for group in args.prompt_len for n in group],
                "gen_len": [n for group in args.gen_len for n in group],
            },
            settings={
                "size": args.size,
                "min_time_s": args.min_time,
                "precision": args.precision,
                "max_time_s": args.max_time,
                "timeout_s": args.timeout,
                "threads": args.threads,
                "repeats": args.repeats,
                "energy_estimate": args.energy_estimate,
                "tpu": args.tpu,
                "nnodes": args.nnodes,
                "rdzv_endpoint": args.rdzv_endpoint,
                "rdzv_id": args.rdzv_id,
                "rdzv_backend": args.rdzv_backend,
                "launch": args.launch,
                "slo": args.slo,
            },
        )
        if suite.settings.max_time_s is not None and suite.settings.precision is None:
            raise ConfigError("--max-time / max_time_s applies only with a precision target: add --precision PCT "
                              "(or use --min-time for a fixed sampling time)")
        cells = expand(suite)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    out_dir = Path(args.out)
    problem = output_dir_problem(out_dir)
    if problem:
        raise UsageError(f"cannot {problem[0]} {out_dir}: {problem[1]}; choose another --out")
    if args.report:  # an explicit report path: its folder must take a file too
        report_dir = Path(args.report).parent
        problem = output_dir_problem(report_dir)
        if problem:
            raise UsageError(f"cannot write the HTML report to {report_dir}: {problem[1]}; "
                             "choose another --report path")

    if args.ray is not None:  # Ray is imported only here (harness.launch.fleet)
        return _run_fleet(args, suite, cells, out_dir)
    try:
        outcome = run_suite(suite, cells, out_dir, tag=args.tag, show_progress=not args.no_progress)
    except OutputNotWritable as e:
        raise UsageError(str(e)) from None
    from rich.console import Console

    from harness.reports.tables import rich_summary_table

    console = Console()
    if not console.is_terminal:  # CI logs: don't wrap the table at 80 columns
        console = Console(width=200)
    console.print(rich_summary_table(outcome.doc))
    c = outcome.counts
    console.print(
        f"{c.get('ok', 0)} ok, {c.get('skipped', 0)} skipped, {c.get('failed', 0)} failed"
        + (f", {len(outcome.doc.get('not_run', []))} not run (interrupted)" if outcome.interrupted else "")
        + (f", {len(outcome.doc['incomplete'])} with fewer processes than --repeats (interrupted)"
           if outcome.interrupted and outcome.doc.get("incomplete") else ""),
        highlight=False,
    )
    saved = outcome.saved_path  # the file with every finished cell (the fallback copy if --out failed)
    if saved is not None:
        print(f"result: {saved}")
    write_failed = False
    if outcome.write_error:
        print(f"harness run: error: {outcome.write_error}", file=sys.stderr)
        write_failed = True
    if args.report is not None:
        from harness.reports.html import write_html_report

        target = Path(args.report) if args.report else (saved or outcome.path).with_suffix(".html")
        try:
            write_html_report([outcome.doc], target)
        except OSError as e:
            json_at = f"the results are saved in {saved} (make the report later: harness report {saved} -o " \
                      "REPORT.html)" if saved else "the results were not fully saved either (see above)"
            print(f"harness run: error: could not write the HTML report to {target}: {os_error_cause(e)}; "
                  f"{json_at}", file=sys.stderr)
            write_failed = True
        else:
            print(f"report: {target}")
    from harness.launch.runner import busy_summary, contended

    busy = [cell["id"] for cell in outcome.doc["cells"] if contended(cell)]
    summary = busy_summary(outcome.doc)
    if summary:
        console.print(summary, style="bold red" if busy else "yellow", markup=False, highlight=False)
    if saved is not None and c.get("failed", 0):
        print(f"why cells failed: harness show {saved}")
    return exit_code(outcome.interrupted, write_failed, bool(c.get("failed", 0)), bool(busy) and args.fail_on_contention)


def exit_code(interrupted: bool, write_failed: bool, failed: bool, fail_on_contention: bool) -> int:
    """``run``'s exit code: 130 over 4 over 1 (README "Exit codes")."""
    if interrupted:
        return EXIT_INTERRUPTED
    if write_failed:  # before 1: CI must not read "cells failed" when the results are not where asked
        return EXIT_WRITE
    if failed:
        return EXIT_FAILED
    if fail_on_contention:
        print("error: --fail-on-contention: contended cells (see above); rerun on a quiet machine", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _run_fleet(args: argparse.Namespace, suite: Any, cells: list[Any], out_dir: Path) -> int:
    """``harness run --ray``: the suite on a Ray cluster (harness.launch.fleet); one result
    file per machine, their summaries, an HTML report over all of them with ``--report``.
    Exit codes as for a local run."""
    from rich.console import Console

    from harness.launch.fleet import FleetError, run_fleet
    from harness.launch.runner import contended, os_error_cause
    from harness.reports.tables import rich_summary_table

    try:
        fleet = run_fleet(suite, cells, out_dir, args.ray or None, tag=args.tag, show_progress=not args.no_progress)
    except FleetError as e:
        raise UsageError(str(e)) from None
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    write_failed = False
    for outcome in fleet.outcomes:
        console.print(rich_summary_table(outcome.doc))
        if outcome.saved_path is not None:
            target = (outcome.doc.get("fleet") or {}).get("target") or {}
            node = (outcome.doc.get("fleet") or {}).get("node") or {}
            where = " ".join(x for x in (f"target {target['name']}" if target.get("name") else "",
                                         f"node {node.get('hostname')}/{str(node.get('node_id'))[:8]}" if node
                                         else "no node") if x)
            print(f"result: {outcome.saved_path}  ({where})")
        if outcome.write_error:
            print(f"harness run: error: {outcome.write_error}", file=sys.stderr)
            write_failed = True
    c = fleet.counts
    not_run = sum(len(o.doc.get("not_run") or []) for o in fleet.outcomes)
    console.print(f"{len(fleet.outcomes)} result file(s): {c.get('ok', 0)} ok, {c.get('skipped', 0)} skipped, "
                  f"{c.get('failed', 0)} failed" + (f", {not_run} not run (interrupted)" if fleet.interrupted else ""),
                  highlight=False)
    if args.report is not None and fleet.outcomes:
        from harness.reports.html import write_html_report

        first = fleet.outcomes[0]
        target_path = Path(args.report) if args.report else \
            (first.saved_path or first.path).with_name(f"fleet-{first.doc['run_id']}.html")
        try:
            write_html_report([o.doc for o in fleet.outcomes], target_path)
        except OSError as e:
            print(f"harness run: error: could not write the HTML report to {target_path}: {os_error_cause(e)}; "
                  f"make it later: harness report {out_dir} -o REPORT.html", file=sys.stderr)
            write_failed = True
        else:
            print(f"report: {target_path}")
    busy = [cell["id"] for o in fleet.outcomes for cell in o.doc["cells"] if contended(cell)]
    if busy:
        console.print(f"[bold red]contention:[/] {len(busy)} cell(s) were measured while other processes competed "
                      "for their CPU/GPU: " + ", ".join(busy[:5]) + (" ..." if len(busy) > 5 else ""),
                      highlight=False)
    return exit_code(fleet.interrupted, write_failed, bool(c.get("failed", 0)), bool(busy) and args.fail_on_contention)
