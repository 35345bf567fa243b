"""``harness <verb>``: the command-line interface.

Exit codes (documented in the README):
  0    success: every cell ok or skipped with a reason
  1    some cells failed (the rest are saved), or a regression was found
  2    usage or configuration error (one clear line, no traceback)
  130  interrupted with Ctrl-C (finished cells are saved)
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Any, Sequence

from harness import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
LIST_KINDS = ("workloads", "backends", "variants", "devices", "suites", "collectors")


class UsageError(Exception):
    """A user mistake: printed as one line, exit code 2."""


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return v


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line + hint, exit 2
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n(see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="harness", description="dl-harness: deep-learning benchmarks with honest numbers.")
    p.add_argument("--version", action="version", version=f"dl-harness {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)

    ls = sub.add_parser("list", help="list workloads, backends, variants, devices, suites or collectors")
    ls.add_argument("kind", nargs="?", default="workloads", choices=LIST_KINDS)

    run = sub.add_parser("run", help="run a suite and write results/<run_id>.json")
    run.add_argument("--suite", default=None, help="built-in suite name (quick, smoke) or a YAML file")
    run.add_argument("-w", "--workload", action="append", default=[], help="workload (repeatable)")
    run.add_argument("-b", "--backend", action="append", default=[], help="backend (repeatable)")
    run.add_argument("-d", "--device", action="append", default=[], help="cpu, cuda, cuda:N, tpu (repeatable)")
    run.add_argument("-v", "--variant", action="append", default=[], help="variant (repeatable)")
    run.add_argument("--mode", action="append", default=[], choices=("inference", "training"), help="repeatable")
    run.add_argument("--batch-size", action="append", default=[], type=_positive_int, help="repeatable")
    run.add_argument("--size", default=None, help="size preset: tiny, small, base")
    run.add_argument("--min-time", type=_positive_float, default=None, help="minimum timed seconds per cell")
    run.add_argument("--timeout", type=_positive_float, default=None, help="per-cell timeout in seconds")
    run.add_argument("--threads", type=_positive_int, default=None, help="intra-op threads (default: framework's)")
    run.add_argument("--out", default="results", help="output directory (default: results)")
    run.add_argument("--tag", default=None, help="free text stored with the run (e.g. nightly, a PR number)")
    run.add_argument("--report", nargs="?", const="", default=None, metavar="FILE.html",
                     help="also write the HTML report (default path: beside the result)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    rep = sub.add_parser("report", help="build a report from result files or directories")
    rep.add_argument("results", nargs="+", help="result files and/or directories of them")
    rep.add_argument("-o", "--output", default=None, help="output file (default: beside the first result)")
    rep.add_argument("--format", choices=("html", "markdown"), default="html")
    rep.add_argument("--title", default=None)

    env = sub.add_parser("env", help="print this machine's fingerprint (CPU, ISA flags, memory, GPUs)")
    env.add_argument("--json", action="store_true")
    return p


# ----------------------------------------------------------------------------- verbs


def cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from harness import registry

    out = Console()
    kind = args.kind
    if kind == "suites":
        from harness.suite import builtin_suites, parse_suite

        for name, text in sorted(builtin_suites().items()):
            s = parse_suite(text, name)
            out.print(f"[bold]{name}[/]  {escape(s.description)}", highlight=False)
        return EXIT_OK
    if kind == "devices":
        return _list_devices(out)
    singular = kind[:-1]
    for name in registry.names(singular):
        try:
            cls = registry.load(singular, name)
        except registry.PluginLoadError as e:
            out.print(f"[bold]{name}[/]  [red]broken plugin[/]: {escape(str(e))}", highlight=False)
            continue
        desc = getattr(cls, "description", "")
        extra = ""
        if singular == "workload":
            extra = f"  sizes: {', '.join(cls.presets)}; modes: {', '.join(cls.modes)}"
        if singular == "backend":
            ok, why = cls.is_installed()
            extra = "" if ok else f"  [yellow](not installed: {escape(why)})[/]"
        out.print(f"[bold]{name}[/]  {escape(desc)}{extra}", highlight=False)
    return EXIT_OK


def _list_devices(out: Any) -> int:
    from rich.markup import escape
    from rich.table import Table

    from harness import registry

    table = Table(title="devices")
    for col in ("backend", "device", "available", "detail / reason"):
        table.add_column(col)
    for name in registry.names("backend"):
        try:
            cls = registry.load("backend", name)
        except registry.PluginLoadError as e:
            table.add_row(name, "-", "no", escape(str(e)))
            continue
        ok, why = cls.is_installed()
        if not ok:
            table.add_row(name, "(all)", "no", escape(f"backend not installed: {why}"))
            continue
        try:
            devices = cls().list_devices()
        except Exception as e:  # noqa: BLE001 - show why instead of crashing
            table.add_row(name, "(all)", "no", escape(f"{type(e).__name__}: {e}"))
            continue
        for d in devices:
            table.add_row(name, d.name, "[green]yes[/]" if d.available else "[red]no[/]", escape(d.detail))
    out.print(table)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from harness.runner import run_suite
    from harness.suite import ConfigError, Suite, apply_overrides, expand, load_suite

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
            },
            settings={
                "size": args.size,
                "min_time_s": args.min_time,
                "timeout_s": args.timeout,
                "threads": args.threads,
            },
        )
        cells = expand(suite)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create output directory {str(out_dir)!r}: {e.strerror or e}") from None

    outcome = run_suite(suite, cells, out_dir, tag=args.tag, show_progress=not args.no_progress)
    from rich.console import Console

    from reports.tables import rich_summary_table

    console = Console()
    console.print(rich_summary_table(outcome.doc))
    c = outcome.counts
    console.print(
        f"{c.get('ok', 0)} ok, {c.get('skipped', 0)} skipped, {c.get('failed', 0)} failed"
        + (f", {len(outcome.doc.get('not_run', []))} not run (interrupted)" if outcome.interrupted else ""),
        highlight=False,
    )
    print(f"result: {outcome.path}")
    if args.report is not None:
        from reports.html import write_html_report

        target = Path(args.report) if args.report else outcome.path.with_suffix(".html")
        write_html_report([outcome.doc], target)
        print(f"report: {target}")
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if c.get("failed", 0) else EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
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


def cmd_env(args: argparse.Namespace) -> int:
    import json

    from harness.environment import collect_environment

    env = collect_environment()
    if args.json:
        print(json.dumps(env, indent=1))
        return EXIT_OK
    cpu = env["cpu"]
    flags = ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in cpu["flags_dl"].items())
    print(f"host         {env['host']}")
    print(f"os           {env['os']['platform']}")
    print(f"python       {env['python']}")
    print(f"cpu          {cpu['model']} ({cpu['logical_cores']} logical / {cpu['physical_cores']} physical cores)")
    print(f"isa flags    {flags}")
    mem = env.get("memory_bytes")
    print(f"memory       {mem / 2**30:.1f} GiB" if mem else "memory       unavailable")
    if env["gpus"]:
        for g in env["gpus"]:
            print(f"gpu          {g['name']} ({(g['memory_bytes'] or 0) / 2**30:.1f} GiB, driver {g['driver']})")
    else:
        print(f"gpu          none ({env['gpus_reason']})")
    print(f"frameworks   {', '.join(f'{k} {v}' for k, v in env['frameworks'].items())}")
    print(f"fingerprint  {env['fingerprint']}")
    return EXIT_OK


COMMANDS = {"list": cmd_list, "run": cmd_run, "report": cmd_report, "env": cmd_env}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verb:
        parser.print_help()
        return EXIT_USAGE
    try:
        return COMMANDS[args.verb](args)
    except UsageError as e:
        if args.debug:
            traceback.print_exc()
        print(f"harness {args.verb}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
