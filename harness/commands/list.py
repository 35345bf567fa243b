"""``harness list``: installed plugins (workloads, backends, variants, collectors,
report sections), suites and devices."""

from __future__ import annotations

import argparse
from typing import Any

from harness.commands.common import EXIT_OK

ORDER = 10
LIST_KINDS = ("workloads", "backends", "variants", "devices", "suites", "collectors", "report_sections")


def add_parser(sub: Any) -> None:
    ls = sub.add_parser("list", help="list workloads, backends, variants, devices, suites, collectors or report_sections")
    ls.add_argument("kind", nargs="?", default="workloads", choices=LIST_KINDS)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from harness.core import registry

    out = Console()
    kind = args.kind
    if kind == "suites":
        from harness.core.suite import builtin_suites, parse_suite

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
        if singular == "report_section":
            from harness.reports.api import check_section_class

            try:
                check_section_class(cls, name)
            except TypeError as e:
                out.print(f"[bold]{name}[/]  [red]broken plugin[/]: {escape(str(e))}", highlight=False)
                continue
            extra = f"  (order {cls.order})"
        if singular == "workload":
            extra = f"  sizes: {', '.join(cls.presets)}; modes: {', '.join(cls.modes)}"
        if singular == "backend":
            ok, why = cls.is_installed()
            dp = getattr(cls, "data_parallel", None)
            engine = getattr(cls, "data_parallel_description", "") or dp
            extra = f"; data-parallel (--world-size): {engine if dp else 'no'}"
            extra += "" if ok else f"  [yellow](not installed: {escape(why)})[/]"
        out.print(f"[bold]{name}[/]  {escape(desc)}{extra}", highlight=False)
    if singular == "workload":
        _list_providers(out)
    return EXIT_OK


def _list_providers(out: Any) -> None:
    """The model providers (``-w SCHEME:REF``) and their well-known models."""
    from rich.markup import escape

    from harness.core import registry

    schemes = registry.names("workload_provider")
    if not schemes:
        return
    out.print("\n[bold]models by name[/] (-w SCHEME:REF; add @SIZE to pick a preset, e.g. hf:gpt2@tiny):",
              highlight=False)
    for scheme in schemes:
        try:
            provider = registry.load_provider(scheme)
        except registry.PluginLoadError as e:
            out.print(f"[bold]{scheme}:[/]  [red]broken plugin[/]: {escape(str(e))}", highlight=False)
            continue
        out.print(f"[bold]{scheme}:[/]  {escape(provider.description)}  [dim]{escape(provider.usage)}[/]",
                  highlight=False)
        for ref, desc in provider.known().items():
            out.print(f"  [bold]{scheme}:{ref}[/]  {escape(desc)}", highlight=False)



def _list_devices(out: Any) -> int:
    from rich.markup import escape
    from rich.table import Table

    from harness.core import registry

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



