"""``harness verify``: PyTorch and TensorFlow compute the same model (see harness/analysis/parity.py).

Exit codes: 0 every checked preset agrees; 1 at least one disagrees (or could not be
checked); 2 usage error (unknown workload or size, a framework not installed).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from harness.commands.common import EXIT_FAILED, EXIT_OK, UsageError, bounded_setting, positive_float

ORDER = 25


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "verify",
        help="check that the PyTorch and TensorFlow models agree (same weights and inputs -> same outputs)",
        description=(
            "Copy each torch model's weights into its Keras twin, run both on the same seeded inputs "
            "(fp32, inference) and compare: relative error = max|y_tf - y_torch| / max|y_torch|. "
            "A preset agrees when the error is <= the tolerance and the parameter counts are equal."
        ),
    )
    p.add_argument("-w", "--workload", action="append", default=[],
                   help="workload (repeatable; default: every workload built for both frameworks)")
    p.add_argument("--size", action="append", default=[],
                   help="size preset (repeatable; default: tiny and small)")
    p.add_argument("--batch-size", type=bounded_setting("batch_size"), default=None,
                   help="batch size (default: each workload's default for the size)")
    p.add_argument("--tolerance", type=positive_float, default=None,
                   help="largest relative error that agrees (default: 1e-4)")
    p.add_argument("--xla", action="store_true", help="also check the XLA-compiled (jit_compile) forward pass")
    p.add_argument("--threads", type=bounded_setting("threads"), default=None, help="intra-op threads for both frameworks")
    p.add_argument("--json", action="store_true", help="print the results as JSON")



def run(args: argparse.Namespace) -> int:
    from harness.core import registry
    from harness.analysis.parity import DEFAULT_SIZES, DEFAULT_TOLERANCE, verify

    for backend in ("torch", "tensorflow"):
        try:
            ok, why = registry.load("backend", backend).is_installed()
        except (registry.UnknownName, registry.PluginLoadError) as e:
            raise UsageError(f"verify needs the {backend} backend: {e}") from None
        if not ok:
            raise UsageError(f"verify needs {backend}: {why} (pip install -r requirements.txt)")

    names = args.workload or registry.names("workload")
    items: list[tuple[str, str, int]] = []
    for name in dict.fromkeys(names):
        try:
            wcls = registry.load("workload", name)
        except (registry.UnknownName, registry.PluginLoadError) as e:
            raise UsageError(str(e)) from None
        both = all(callable(getattr(wcls, f"build_{b}", None)) for b in ("torch", "tensorflow"))
        if not both:
            if args.workload:
                raise UsageError(f"workload {name!r} is not built for both torch and tensorflow")
            continue
        sizes = args.size or [s for s in DEFAULT_SIZES if s in wcls.presets]
        for size in dict.fromkeys(sizes):
            if size not in wcls.presets:
                raise UsageError(f"unknown size {size!r} for workload {name!r}; choose from: {', '.join(wcls.presets)}")
            bs = args.batch_size or int(wcls.default_batch_size.get(size, 8))
            items.append((name, size, bs))
    if not items:
        raise UsageError("nothing to verify: no workload is built for both torch and tensorflow")

    results = verify(items, tolerance=args.tolerance or DEFAULT_TOLERANCE, xla=args.xla, threads=args.threads)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        _print_table(results, args.xla)
    bad = [r for r in results if not r.agrees]
    if not args.json:
        print(f"{len(results) - len(bad)} of {len(results)} agree "
              f"(relative error = max|y_tf - y_torch| / max|y_torch|, tolerance {results[0].tolerance:g})")
    return EXIT_FAILED if bad else EXIT_OK


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2e}"
    return f"{v:,}"


def _print_table(results: list[Any], xla: bool) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    table = Table(title="PyTorch vs TensorFlow (fp32, inference, same weights and inputs)")
    cols = ["workload", "size", "batch", "params torch", "params tf", "max |diff|", "max |torch|", "rel error"]
    if xla:
        cols.append("rel error XLA")
    for c in cols + ["agrees"]:
        table.add_column(c, justify="right" if c not in ("workload", "size", "agrees") else "left")
    for r in results:
        row = [r.workload, r.size, str(r.batch_size), _fmt(r.params_torch), _fmt(r.params_tensorflow),
               _fmt(r.max_abs_diff), _fmt(r.max_abs_ref), _fmt(r.rel_error)]
        if xla:
            row.append(_fmt(r.rel_error_xla))
        verdict = "[green]yes[/]" if r.agrees else "[red]NO[/]" + (f" ({escape(r.error)})" if r.error else "")
        table.add_row(*row, verdict)
    console.print(table)
