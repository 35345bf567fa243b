"""``harness show RESULT [CELL]``: one cell of a stored result, everything about it.

The spec, status, reason, the root cause of a failure (the innermost exception of its
chain, :mod:`harness.core.rootcause`), the full error with its traceback, the worker's
output tail, the run's settings, the runtime record and every metric -- readable in a
terminal, or ``--json`` (the stored cell records). Without CELL: one line per cell
(the console line of ``harness run``) and the command that shows a failed one.

* RESULT is a result file, or a directory: its most recently modified readable result
  file (the run just made; which one is said on stderr). A missing, unreadable or
  invalid result exits 2 with one line.
* CELL is matched against the run's cells, first rule that matches wins: the exact
  cell id; ``FIELD=VALUE[,FIELD=VALUE...]`` over the spec (values may be globs:
  ``variant=int8*,mode=training``); a glob over the id when it has ``*?[``
  (``'mlp/*/int8*'``); else a case-insensitive substring of the id (``bert``). Every
  match is shown. No match exits 2, naming the closest cell ids.
* Exit codes: 0 shown, 2 usage error (no such file, an invalid result, no matching
  cell). A failed cell is not an error of ``show``.
See docs/show.md.
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterable

from harness.commands.common import EXIT_OK, UsageError

ORDER = 31

GLOB_CHARS = frozenset("*?[")
SPEC_ORDER = ("workload", "backend", "device", "variant", "mode", "batch_size", "size", "world_size")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "show", help="show a cell of a result: spec, status, root cause, traceback, stderr, settings, metrics",
        description="Show one cell of a stored result (or list its cells). RESULT: a result file, or a directory "
                    "(its most recently modified result file). CELL: the cell id, FIELD=VALUE[,...] over the spec, "
                    "a glob over the id ('mlp/*/int8*'), or a substring of the id. Exit 2: no such result or cell.")
    p.add_argument("result", help="a result file, or a directory of them (its newest result file is shown)")
    p.add_argument("cell", nargs="?", default=None,
                   help="cell id, FIELD=VALUE[,FIELD=VALUE], glob or substring (default: list every cell)")
    p.add_argument("--json", action="store_true", help="print the matching cell records as JSON")


# ----------------------------------------------------------------------------- finding the result


def resolve_result(path: str) -> tuple[dict[str, Any], Path, str | None]:
    """The result document named by ``path`` (a file, or a directory's most recently
    modified readable result file), its path, and a note for stderr (which file was
    picked, files skipped) or None. Raises UsageError / ResultFileError (exit 2)."""
    from harness.store.results import ResultFileError, expand_paths, load_result

    p = Path(path)
    if not p.exists():
        raise UsageError(f"no such result file or directory: {path}")
    if not p.is_dir():
        return load_result(p), p, None
    files = []
    for f in expand_paths(p):
        try:
            files.append((f.stat().st_mtime, f))
        except OSError:
            continue
    if not files:
        raise UsageError(f"no result files (*.json) in {path}")
    skipped = []
    for _, f in sorted(files, key=lambda t: (-t[0], str(t[1]))):
        try:
            doc = load_result(f)
        except ResultFileError as e:
            skipped.append(str(e))
            continue
        note = f"showing {f} (the most recently modified of {len(files)} result file(s) in {path})"
        if skipped:
            note += f"; skipped {len(skipped)} newer unreadable file(s): {skipped[0]}"
        return doc, f, note
    raise UsageError(f"no readable result file in {path} ({len(skipped)} skipped; first: {skipped[0]})")


# ----------------------------------------------------------------------------- matching cells


def _spec_filters(pattern: str) -> dict[str, str] | None:
    """``FIELD=VALUE[,FIELD=VALUE]`` as a dict, or None when ``pattern`` is not of that form."""
    if "=" not in pattern:
        return None
    out = {}
    for part in pattern.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            return None
        out[key] = value.strip()
    return out


def match_cells(cells: list[dict[str, Any]], pattern: str) -> list[dict[str, Any]]:
    """The cells ``pattern`` selects (see the module doc for the rules), in run order."""
    exact = [c for c in cells if c.get("id") == pattern]
    if exact:
        return exact
    filters = _spec_filters(pattern)
    if filters is not None:
        unknown = [k for k in filters if k not in SPEC_ORDER]
        if unknown:
            raise UsageError(f"unknown spec field {unknown[0]!r} in {pattern!r}; fields: {', '.join(SPEC_ORDER)}")

        def fits(cell: dict[str, Any]) -> bool:
            spec = cell.get("spec") or {}
            return all(fnmatch.fnmatchcase(str(spec.get(k)), v) for k, v in filters.items())

        return [c for c in cells if fits(c)]
    if GLOB_CHARS & set(pattern):
        hits = [c for c in cells if fnmatch.fnmatchcase(str(c.get("id")), pattern)]
        return hits or [c for c in cells if fnmatch.fnmatch(str(c.get("id")).lower(), pattern.lower())]
    low = pattern.lower()
    return [c for c in cells if low in str(c.get("id")).lower()]


def close_matches(ids: list[str], pattern: str, n: int = 3) -> list[str]:
    """Cell ids close to ``pattern``: by the whole id, else by one of its parts (a
    misspelt workload or variant names the cells that have the right one)."""
    import difflib

    hits = difflib.get_close_matches(pattern, ids, n=n, cutoff=0.5)
    if hits:
        return hits
    bare = pattern.strip("*?[]").split("=")[-1]
    parts = sorted({p for i in ids for p in i.split("/")})
    near = difflib.get_close_matches(bare, parts, n=n, cutoff=0.6)
    return [next(i for i in ids if p in i.split("/")) for p in near]


# ----------------------------------------------------------------------------- text output


def _fmt_value(name: str, v: Any) -> str:
    from harness.core import metrics as M

    if isinstance(v, bool) or v is None:
        return str(v).lower() if v is not None else "null"
    if isinstance(v, (int, float)):
        text = f"{v:,}" if isinstance(v, int) else f"{v:.4g}"
        unit = M.unit(name)
        if unit in (None, "", "count"):
            return text
        if unit == "bytes" and abs(v) >= 2**20:
            return f"{text} bytes ({v / 2**20:.1f} MiB)"
        if unit != "bytes" and 1e4 <= abs(v) < 1e18:  # 4.744e+07 FLOP/s -> 47.44 M FLOP/s
            exp = min(int(math.log10(abs(v)) // 3), 5)
            return f"{v / 10 ** (3 * exp):.4g} {' kMGTP'[exp]} {unit}".replace("  ", " ")
        return f"{text} {unit}"
    if isinstance(v, list):
        if len(v) <= 6 and all(not isinstance(x, (dict, list)) for x in v):
            return "[" + ", ".join(_fmt_value(name, x) for x in v) + "]"
        return f"[{len(v)} values]"
    text = str(v)
    return text if len(text) <= 400 else text[:399] + "\u2026"


def flatten(d: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """``(dotted.name, value)`` of every leaf of a nested dict (lists are leaves)."""
    if isinstance(d, dict):
        for k, v in d.items():
            yield from flatten(v, f"{prefix}{k}." if not isinstance(v, dict) or v else f"{prefix}{k}")
        return
    yield prefix.rstrip("."), d


def _kv(console: Any, rows: Iterable[tuple[str, Any]], indent: str = "") -> None:
    """Print ``key  value`` lines, the values aligned (no padding after them)."""
    from rich.text import Text

    rows = list(rows)
    w = max((len(k) for k, _ in rows), default=0) + 2
    for k, v in rows:
        value = v if isinstance(v, Text) else Text(str(v))
        console.print(Text(indent) + Text(k.ljust(w), style="bold") + value, soft_wrap=True)


def _columns(console: Any, rows: list[tuple[str, str]], width: int) -> None:
    """Print short ``key value`` pairs in as many aligned columns as ``width`` holds."""
    from rich.text import Text

    if not rows:
        return
    kw = max(len(k) for k, _ in rows) + 1
    cw = kw + max(len(v) for _, v in rows) + 3
    ncol = max(1, min(4, (width - 2) // cw))
    nrow = -(-len(rows) // ncol)
    for r in range(nrow):
        line = Text("  ")
        cells = [rows[c * nrow + r] for c in range(ncol) if c * nrow + r < len(rows)]
        for i, (k, v) in enumerate(cells):
            line += Text(k.ljust(kw), style="bold") + Text(v if i == len(cells) - 1 else v.ljust(cw - kw))
        console.print(line, soft_wrap=True)


def _verbatim(console: Any, text: str, highlight: Iterable[tuple[str, str]] = ()) -> None:
    """Print ``text`` as it is (no markup, no wrapping inserted); lines starting with one
    of ``highlight``'s prefixes get its style."""
    from rich.text import Text

    marks = [(p, s) for p, s in highlight if p]
    for line in text.rstrip("\n").split("\n"):
        style = next((s for p, s in marks if line.startswith(p)), None)
        console.print(Text("  " + line, style=style or ""), soft_wrap=True)


def render_cell(console: Any, cell: dict[str, Any], doc: dict[str, Any], path: Path) -> None:
    """Print everything about one cell."""
    from rich.rule import Rule
    from rich.text import Text

    from harness.core.rootcause import root_cause

    status = str(cell.get("status"))
    color = {"ok": "green", "skipped": "yellow", "failed": "red"}.get(status, "")
    spec = cell.get("spec") or {}
    error = cell.get("error") if isinstance(cell.get("error"), dict) else {}
    rc = root_cause(cell)
    rows: list[tuple[str, Any]] = [("cell", Text(str(cell.get("id")), style="bold"))]
    when = [f"{cell['duration_s']:.1f} s" if isinstance(cell.get("duration_s"), (int, float)) else None,
            f"started {cell['started']}" if cell.get("started") else None]
    rows.append(("status", Text(status, style=color) + Text(f"  ({', '.join(w for w in when if w)})"
                                                          if any(when) else "")))
    if rc is not None:
        rows.append(("root cause", Text(rc.root, style="bold red")))
        how = {"traceback": f"innermost of {len(rc.chain)} chained exception(s) in the traceback"
                            if len(rc.chain) > 1 else "the only exception in the traceback",
               "stderr": "from the traceback the worker printed (its output tail, below)",
               "reason": "the launcher's reason: the worker left no traceback"}[rc.source]
        if rc.truncated:
            how += "; the stored traceback is cut at its start: an earlier cause may be lost"
        rows.append(("", Text(how, style="dim")))
        if rc.outer:
            rows.append(("outer error", Text(rc.outer)))
    if cell.get("reason") and (rc is None or cell["reason"] not in (rc.root, rc.outer)):
        rows.append(("reason", Text(str(cell["reason"]))))
    exits = [f"{k} {error[k]}" for k in ("returncode", "torchrun_returncode") if error.get(k)]
    if exits:
        rows.append(("exit", Text(", ".join(exits))))
    keys = dict.fromkeys([*(k for k in SPEC_ORDER if k in spec), *spec])  # the usual order, then any other
    rows.append(("spec", Text("  ".join(f"{k} {spec[k]}" for k in keys))))
    env = doc.get("environment") or {}
    rows.append(("run", Text(f"{doc.get('run_id')}  created {doc.get('created')}  host {env.get('host')}"
                             + (f"  tag {doc['tag']}" if doc.get("tag") else "") + f"  ({path})")))
    _kv(console, rows)

    tb = error.get("traceback")
    if isinstance(tb, str) and tb.strip():
        console.print(Rule("error with traceback (Python prints a chain root cause first)", align="left"))
        marks = []
        if rc is not None and rc.chain:
            first = rc.chain[0].line().split(" | ")[0]
            marks = [(first, "bold red")] + [(x.line().split(" | ")[0], "bold") for x in rc.chain[1:]]
        _verbatim(console, tb, marks)
    elif error:
        console.print(Rule("error", align="left"))
        _verbatim(console, f"{error.get('type')}: {error.get('message')}")
    tail = error.get("stderr_tail")
    if isinstance(tail, str):
        console.print(Rule("worker output (tail, stdout and stderr)", align="left"))
        marks = []
        if rc is not None and rc.source == "stderr" and rc.chain:
            marks = [(rc.chain[0].line().split(" | ")[0], "bold red")]
        _verbatim(console, tail if tail.strip() else "(empty)", marks)
    contention = (cell.get("timing") or {}).get("contention") or {}
    if contention.get("detected") or contention.get("reasons"):
        console.print(Rule("contention" + (": CONTENDED" if contention.get("detected") else ""), align="left"))
        _verbatim(console, "\n".join(str(r) for r in contention.get("reasons") or []) or "(no reasons recorded)")
    repeats = cell.get("repeats") or []
    if repeats:
        console.print(Rule(f"processes ({len(repeats)})", align="left"))
        for i, r in enumerate(repeats):
            p50 = ((r.get("metrics") or {}).get("latency_ms") or {}).get("p50")
            what = f"p50 {p50:.4g} ms" if isinstance(p50, (int, float)) else (r.get("reason") or "")
            console.print(Text(f"  {i + 1}  {r.get('status')}  {what}"), soft_wrap=True)
    settings = (doc.get("suite") or {}).get("settings") or {}
    if settings:
        console.print(Rule(f"settings (suite {(doc.get('suite') or {}).get('name')})", align="left"))
        _columns(console, [(k, _fmt_value(k, v)) for k, v in settings.items()], console.width)
    runtime = cell.get("runtime") or {}
    if runtime:
        console.print(Rule("runtime", align="left"))
        _kv(console, [(k, _fmt_value(k, v)) for k, v in flatten(runtime)], "  ")
    metrics = cell.get("metrics") or {}
    console.print(Rule("metrics", align="left"))
    if metrics:
        _kv(console, [(k, _fmt_value(k, v)) for k, v in flatten(metrics)], "  ")
    else:
        console.print(Text("  none (the cell was not measured)", style="dim"))
    unavailable = cell.get("unavailable") or {}
    if unavailable:
        console.print(Rule("not measured", align="left"))
        _kv(console, [(k, str(v)) for k, v in unavailable.items()], "  ")


def render_list(console: Any, doc: dict[str, Any], path: Path, width: int | None) -> None:
    """One line per cell and the command that shows a failed one."""
    import shlex

    from rich.text import Text

    from harness.launch.runner import cell_line

    cells = [c for c in doc.get("cells") or [] if isinstance(c, dict)]
    counts: dict[str, int] = {}
    for c in cells:
        counts[str(c.get("status"))] = counts.get(str(c.get("status")), 0) + 1
    env = doc.get("environment") or {}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no cells"
    not_run = doc.get("not_run") or []
    console.print(Text(f"run {doc.get('run_id')}  created {doc.get('created')}  host {env.get('host')}  "
                       f"{len(cells)} cell(s): {summary}" + (f", {len(not_run)} not run" if not_run else "")
                       + f"  ({path})"), soft_wrap=True)
    for c in cells:
        console.print(cell_line(c, "", width), soft_wrap=True)
    for cid in not_run:
        console.print(Text(f"{'not run':<8}{cid}", style="dim"), soft_wrap=True)
    failed = [c for c in cells if c.get("status") == "failed"]
    if failed:
        cmd = f"harness show {shlex.quote(str(path))} {shlex.quote(str(failed[0].get('id')))}"
        more = (f" (several at once: a pattern, e.g. {shlex.quote('workload=' + str(failed[0]['spec']['workload']))})"
                if len(failed) > 1 and isinstance(failed[0].get("spec"), dict) and failed[0]["spec"].get("workload")
                else "")
        console.print(Text(f"{len(failed)} failed; root cause and traceback: {cmd}{more}", style="bold"),
                      soft_wrap=True)


# ----------------------------------------------------------------------------- the verb


def _console() -> Any:
    from rich.console import Console

    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=160)  # a pipe or a log: don't wrap at 80 columns
    return console


def run(args: argparse.Namespace) -> int:
    import json

    doc, path, note = resolve_result(args.result)
    if note:
        print(note, file=sys.stderr)
    cells = [c for c in doc.get("cells") or [] if isinstance(c, dict)]
    not_run = [i for i in doc.get("not_run") or [] if isinstance(i, str)]
    if args.cell is None:
        chosen = cells
    else:
        chosen = match_cells(cells, args.cell)
        if not chosen:
            late = match_cells([{"id": i, "spec": {}} for i in not_run], args.cell) if _spec_filters(args.cell) \
                is None else []
            if late:
                print(f"{', '.join(c['id'] for c in late)}: not run (the run was interrupted before it)")
                return EXIT_OK
            ids = [str(c.get("id")) for c in cells]
            near = close_matches(ids, args.cell)
            hint = f"; closest: {', '.join(near)}" if near else ""
            raise UsageError(f"no cell of {path} matches {args.cell!r}{hint} (list all {len(ids)}: harness show "
                             f"{path})")
    if args.json:
        from harness.core.rootcause import root_cause

        out = []
        for c in chosen:
            rc = root_cause(c)
            out.append({**c, "root_cause": rc.to_dict() if rc is not None else None})
        print(json.dumps({"result": str(path), "run_id": doc.get("run_id"), "cells": out}, indent=1,
                         allow_nan=False, default=str))
        return EXIT_OK
    console = _console()
    if args.cell is None:
        render_list(console, doc, path, console.width if console.is_terminal else None)
        return EXIT_OK
    if len(chosen) > 1:
        console.print(f"{len(chosen)} cells match {args.cell!r}", style="bold", highlight=False, markup=False)
    for i, c in enumerate(chosen):
        if i:
            console.print()
        render_cell(console, c, doc, path)
    return EXIT_OK
