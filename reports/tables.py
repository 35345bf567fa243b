"""Text tables of stored results: GitHub-flavoured Markdown (CI comments) and a
``rich`` table for the terminal after ``harness run``.

Both read result documents only. A cell measured while other processes competed for
the machine (``timing.contention``) is said loudly: a warning above the table naming
the contended cells, and "contended" with the evidence in the cell's row. A cell
measured in several worker processes (``run --repeats``) shows their number and the
spread of their medians. Throughput is sustained throughput (samples processed in the
timed loop / its wall time); a value from an older result that was batch / p50 is
marked "(p50)".

Strings from result files are treated as untrusted:
Markdown escapes ``|``, HTML-significant characters and newlines; the rich table
passes them as :class:`rich.text.Text`, so ``[bold]``-style markup in a hostname or
an error message is printed literally instead of being interpreted.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, Sequence

from harness.reports import cells as C
from harness.reports import formatting as F

if TYPE_CHECKING:  # rich is imported lazily at call time
    from rich.table import Table

_DASH = "\u2014"  # shown where a cell did not run, so there is no number at all
NA = "n/a"  # shown where a cell ran but the metric could not be measured


def md_escape(text: Any) -> str:
    """Make ``text`` safe inside a GFM table cell: one line, ``|`` escaped, and
    ``&``/``<``/``>`` as entities so no raw HTML reaches the comment."""
    s = "" if text is None else str(text)
    s = " ".join(s.split())  # newlines and runs of whitespace -> one space
    s = html.escape(s, quote=False)
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`")


def _num(cell: dict[str, Any], value: str | None) -> str:
    """A formatted metric, or why there is none."""
    if C.status(cell) != "ok":
        return _DASH
    return value if value is not None else NA


def _p50_ci(cell: dict[str, Any]) -> str:
    p50 = F.ms(C.lat(cell, "p50"))
    if p50 is None:
        return _num(cell, None)
    ci = F.ci(C.lat(cell, "ci95_low"), C.lat(cell, "ci95_high"))
    return f"{p50} {ci}" if ci else p50


def _throughput(cell: dict[str, Any]) -> str:
    """Sustained throughput (samples/s); "(p50)" marks an older result's batch / p50."""
    text = _num(cell, F.throughput(C.metric(cell, "throughput_per_s")))
    if C.status(cell) == "ok" and text != NA and C.throughput_method(cell) != "sustained":
        text += " (p50)"
    return text


def _processes(cell: dict[str, Any]) -> str:
    """Worker processes and the range of their medians ("3: 1.00–1.30 ms, CV 13%"), "1"."""
    return _num(cell, F.process_spread(C.repeat_spread(cell), short=True) or "1")


def _any_p50_throughput(cells: Any) -> bool:
    return any(C.status(c) == "ok" and C.throughput_method(c) != "sustained" for c in cells)


_P50_FOOTNOTE = ("throughput is sustained (samples processed in the timed loop / its wall time); "
                 "(p50): an older result's batch / median latency")


def _note(cell: dict[str, Any], limit: int) -> str:
    """A failed quality gate, contention evidence and noise flag for ok cells, the
    (shortened) reason for skipped/failed ones."""
    if C.status(cell) != "ok":
        return F.shorten(C.reason_text(cell), limit)
    notes = []
    q = C.metric(cell, "quality")
    gate = q.get("gate") if isinstance(q, dict) and isinstance(q.get("gate"), dict) else {}
    if gate.get("passed") is False:  # a fast variant that fails its quality gate is no answer
        delta = q.get("accuracy_delta")
        notes.append("quality gate FAIL" + (f" (accuracy {100 * delta:+.1f} pp vs fp32)"
                                            if F.is_number(delta) else ""))  # fmt: skip
    contended = C.contention(cell)
    if contended:
        notes.append("CONTENDED: " + F.shorten(contended, limit))
    if C.is_noisy(cell):
        ratio = F.percent(C.noise_ratio(cell))
        notes.append(f"noisy (IQR/median {ratio} > 10%)" if ratio else "noisy (IQR/median > 10%)")
    if C.warmup_unstable(cell):
        notes.append("warm-up unstable")
    for key in ("peak_host_mem_bytes",):
        if C.metric(cell, key) is None and C.unavailable_reason(cell, key):
            notes.append(f"{key}: {F.shorten(C.unavailable_reason(cell, key), 60)}")
    return "; ".join(notes)


def _run_line(run: dict[str, Any]) -> str:
    env = run.get("environment") or {}
    h = run.get("harness") or {}
    counts = C.status_counts(run)
    bits = [f"**{md_escape(run.get('run_id'))}**"]
    if run.get("tag"):
        bits.append(f"tag {md_escape(run.get('tag'))}")
    bits.append(f"host {md_escape(env.get('host'))}")
    if run.get("created"):
        bits.append(md_escape(run.get("created")))
    version = f"harness {md_escape(h.get('version'))}"
    if h.get("git_commit"):
        version += f" ({md_escape(str(h['git_commit'])[:12])}{', dirty' if h.get('git_dirty') else ''})"
    bits.append(version)
    bits.append(", ".join(f"{n} {s}" for s, n in counts.items() if n or s == "ok"))
    if run.get("complete") is False:
        bits.append("**incomplete**")
    return "- " + " · ".join(bits)


def contention_warning_lines(runs: Sequence[dict[str, Any]], limit: int = 20) -> list[str]:
    """A Markdown warning (blockquote) naming every contended cell with its evidence;
    [] when no cell was contended."""
    hits = C.contended_cells(list(runs))
    if not hits:
        return []
    n_ok = sum(1 for _, c in C.iter_cells(list(runs)) if C.status(c) == "ok")
    multi = len(runs) > 1
    out = [f"> **\u26a0 {len(hits)} of {n_ok} measured cells were contended**: other processes competed for "
           "the machine while they were timed, so their numbers describe a busy machine, not the code, and no "
           "verdict or ranking is drawn from them. Rerun them on a quiet machine (`harness run "
           "--fail-on-contention` makes CI retry).", ">"]  # fmt: skip
    for run, cell, note in hits[:limit]:
        where = f" in {md_escape(run.get('run_id'))}" if multi else ""
        out.append(f"> - `{md_escape(C.cell_id(cell))}`{where}: {md_escape(F.shorten(note, 160))}")
    if len(hits) > limit:
        out.append(f"> - \u2026 and {len(hits) - limit} more")
    return out + [""]


def markdown_summary(runs: Sequence[dict[str, Any]]) -> str:
    """A GitHub-flavoured Markdown summary: one line per run, a warning naming the
    contended cells (if any), then one table row per cell (status, p50 ms with its 95%
    CI, p90, p99, sustained throughput, peak host MiB, the worker processes and the
    spread of their medians when run with ``--repeats``, note). Latencies are per
    iteration in milliseconds; "n/a" means the run could not measure the value, an em
    dash that the cell did not run."""
    runs = [r for r in runs if isinstance(r, dict)]
    lines = ["### dl-harness results", ""]
    if not runs:
        return "\n".join(lines + ["No results.", ""])
    lines += [_run_line(r) for r in runs]
    lines.append("")
    lines += contention_warning_lines(runs)
    multi = len(runs) > 1
    cells = [c for _, c in C.iter_cells(runs)]
    with_repeats = any(C.repeat_spread(c) for c in cells)
    head = (["run"] if multi else []) + [
        "cell", "status", "p50 ms [95% CI]", "p90 ms", "p99 ms", "sustained samples/s", "peak host MiB",
    ] + (["processes: p50 range"] if with_repeats else []) + ["note"]  # fmt: skip
    align = (["---"] if multi else []) + ["---", "---"] + ["--:"] * (6 if with_repeats else 5) + ["---"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("| " + " | ".join(align) + " |")
    for run, cell in C.iter_cells(runs):
        st = C.status(cell)
        row = ([md_escape(run.get("run_id"))] if multi else []) + [
            md_escape(C.cell_id(cell)),
            md_escape(st) + (", **contended**" if C.contention(cell) else ""),
            md_escape(_p50_ci(cell)),
            md_escape(_num(cell, F.ms(C.lat(cell, "p90")))),
            md_escape(_num(cell, F.ms(C.lat(cell, "p99")))),
            md_escape(_throughput(cell)),
            md_escape(_num(cell, F.mib_number(C.metric(cell, "peak_host_mem_bytes")))),
        ] + ([md_escape(_processes(cell))] if with_repeats else []) + [
            md_escape(_note(cell, 100)),
        ]  # fmt: skip
        lines.append("| " + " | ".join(row) + " |")
    if not cells:
        lines.append("")
        lines.append("_No cells._")
    elif _any_p50_throughput(cells):
        lines += ["", f"_{md_escape(_P50_FOOTNOTE)}._"]
    lines.append("")
    return "\n".join(lines)


_STATUS_STYLE = {"ok": "green", "skipped": "yellow", "failed": "bold red"}


def rich_summary_table(run: dict[str, Any]) -> "Table":
    """A :class:`rich.table.Table` of one run's cells for the terminal: cell, status,
    p50/p90/p99 (ms per iteration), sustained throughput (samples/s), peak host MiB,
    the worker processes and the range of their medians (``--repeats`` runs only), and
    a note (contention evidence, noise flag, or the shortened reason of a
    skipped/failed cell). Contended cells say so in red in the status and the note, and
    the caption counts them and says what to do.

    Laid out for an 80-column terminal: light borders, numbers never wrap, only the
    cell id and the note wrap. The p50 confidence interval is left to the Markdown
    and HTML reports, where there is room for it."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    env = run.get("environment") or {}
    title = Text(f"{run.get('run_id', '?')} on {env.get('host', '?')}")
    counts = C.status_counts(run)
    cells = [c for c in run.get("cells") or [] if isinstance(c, dict)]
    caption = Text(
        ", ".join(f"{n} {s}" for s, n in counts.items() if n or s == "ok")
        + " · latency per iteration in ms · — = did not run, n/a = not measured"
    )
    if _any_p50_throughput(cells):
        caption.append(" · " + _P50_FOOTNOTE)
    busy = [c for c in cells if C.contention(c)]
    if busy:
        caption.append(
            f"\n\u26a0 {len(busy)} cell(s) CONTENDED: other processes competed for the machine while they "
            "were timed; their numbers are not trustworthy and compare draws no verdict from them. Rerun on a "
            "quiet machine (or with --threads below the core count).",
            style="bold red",
        )
    with_repeats = any(C.repeat_spread(c) for c in cells)
    table = Table(
        title=title, caption=caption, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False,
        collapse_padding=True, header_style="bold",
    )
    table.add_column("cell", overflow="fold")
    table.add_column("status", no_wrap=True)
    for header in ("p50 ms", "p90 ms", "p99 ms", "sustained\nsamples/s", "peak host\nMiB"):
        table.add_column(header, justify="right", no_wrap=True)
    if with_repeats:
        table.add_column("processes:\np50 range", justify="right")
    table.add_column("note", overflow="fold")
    for cell in cells:
        st = C.status(cell)
        note = _note(cell, 70)
        contended = C.contention(cell)
        note_style = "bold red" if contended else ("yellow" if st == "ok" and note else ("dim" if st != "ok" else ""))
        status = Text(st, style=_STATUS_STYLE.get(st, ""))
        if contended:
            status.append("\ncontended", style="bold red")
        row = [
            Text(C.cell_id(cell)),
            status,
            Text(_num(cell, F.ms(C.lat(cell, "p50")))),
            Text(_num(cell, F.ms(C.lat(cell, "p90")))),
            Text(_num(cell, F.ms(C.lat(cell, "p99")))),
            Text(_throughput(cell)),
            Text(_num(cell, F.mib_number(C.metric(cell, "peak_host_mem_bytes")))),
        ]
        if with_repeats:
            row.append(Text(_processes(cell)))
        row.append(Text(note, style=note_style))
        table.add_row(*row)
    return table
