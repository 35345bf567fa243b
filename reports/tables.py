"""Text tables of stored results: GitHub-flavoured Markdown (CI comments) and a
``rich`` table for the terminal after ``harness run``.

Both read result documents only. Strings from result files are treated as untrusted:
Markdown escapes ``|``, HTML-significant characters and newlines; the rich table
passes them as :class:`rich.text.Text`, so ``[bold]``-style markup in a hostname or
an error message is printed literally instead of being interpreted.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, Sequence

from reports import cells as C
from reports import formatting as F

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


def _note(cell: dict[str, Any], limit: int) -> str:
    """Noise flag for ok cells, the (shortened) reason for skipped/failed ones."""
    if C.status(cell) != "ok":
        return F.shorten(C.reason_text(cell), limit)
    notes = []
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


def markdown_summary(runs: Sequence[dict[str, Any]]) -> str:
    """A GitHub-flavoured Markdown summary: one line per run, then one table row per
    cell (status, p50 ms with its 95% CI, p90, p99, throughput, peak host MiB, note).
    Latencies are per iteration in milliseconds; "n/a" means the run could not
    measure the value, an em dash that the cell did not run."""
    runs = [r for r in runs if isinstance(r, dict)]
    lines = ["### dl-harness results", ""]
    if not runs:
        return "\n".join(lines + ["No results.", ""])
    lines += [_run_line(r) for r in runs]
    lines.append("")
    multi = len(runs) > 1
    head = (["run"] if multi else []) + [
        "cell", "status", "p50 ms [95% CI]", "p90 ms", "p99 ms", "throughput /s", "peak host MiB", "note",
    ]  # fmt: skip
    align = (["---"] if multi else []) + ["---", "---"] + ["--:"] * 5 + ["---"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("| " + " | ".join(align) + " |")
    for run, cell in C.iter_cells(runs):
        row = ([md_escape(run.get("run_id"))] if multi else []) + [
            md_escape(C.cell_id(cell)),
            md_escape(C.status(cell)),
            md_escape(_p50_ci(cell)),
            md_escape(_num(cell, F.ms(C.lat(cell, "p90")))),
            md_escape(_num(cell, F.ms(C.lat(cell, "p99")))),
            md_escape(_num(cell, F.throughput(C.metric(cell, "throughput_per_s")))),
            md_escape(_num(cell, F.mib_number(C.metric(cell, "peak_host_mem_bytes")))),
            md_escape(_note(cell, 100)),
        ]
        lines.append("| " + " | ".join(row) + " |")
    if not any(True for _ in C.iter_cells(runs)):
        lines.append("")
        lines.append("_No cells._")
    lines.append("")
    return "\n".join(lines)


_STATUS_STYLE = {"ok": "green", "skipped": "yellow", "failed": "bold red"}


def rich_summary_table(run: dict[str, Any]) -> "Table":
    """A :class:`rich.table.Table` of one run's cells for the terminal: cell, status,
    p50/p90/p99 (ms per iteration), throughput (samples/s), peak host MiB, and a note
    (noise flag, or the shortened reason of a skipped/failed cell).

    Laid out for an 80-column terminal: light borders, numbers never wrap, only the
    cell id and the note wrap. The p50 confidence interval is left to the Markdown
    and HTML reports, where there is room for it."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    env = run.get("environment") or {}
    title = Text(f"{run.get('run_id', '?')} on {env.get('host', '?')}")
    counts = C.status_counts(run)
    caption = Text(
        ", ".join(f"{n} {s}" for s, n in counts.items() if n or s == "ok")
        + " · latency per iteration in ms · — = did not run, n/a = not measured"
    )
    table = Table(
        title=title, caption=caption, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False,
        collapse_padding=True, header_style="bold",
    )
    table.add_column("cell", overflow="fold")
    table.add_column("status", no_wrap=True)
    for header in ("p50 ms", "p90 ms", "p99 ms", "throughput\n/s", "peak host\nMiB"):
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("note", overflow="fold")
    for cell in run.get("cells") or []:
        st = C.status(cell)
        note = _note(cell, 70)
        note_style = "yellow" if st == "ok" and note else ("dim" if st != "ok" else "")
        table.add_row(
            Text(C.cell_id(cell)),
            Text(st, style=_STATUS_STYLE.get(st, "")),
            Text(_num(cell, F.ms(C.lat(cell, "p50")))),
            Text(_num(cell, F.ms(C.lat(cell, "p90")))),
            Text(_num(cell, F.ms(C.lat(cell, "p99")))),
            Text(_num(cell, F.throughput(C.metric(cell, "throughput_per_s")))),
            Text(_num(cell, F.mib_number(C.metric(cell, "peak_host_mem_bytes")))),
            Text(note, style=note_style),
        )
    return table
