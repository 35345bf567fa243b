"""Self-contained HTML report of stored results (works offline).

One file: plotly.js is embedded once (from the installed ``plotly`` package, never a
CDN), each figure is a JSON literal drawn with ``Plotly.newPlot``, and the summary
table is sorted and filtered by a few lines of inline vanilla JavaScript that only
uses ``textContent`` (never ``innerHTML``).

Everything that comes from a result file is untrusted text: a hostname, a tag, an
error message or an environment variable can contain markup. So

* HTML text and attributes go through :func:`html.escape`;
* JSON inside ``<script>`` has ``<``, ``>``, ``&``, U+2028 and U+2029 written as
  ``\\u`` escapes, so no string can close the script element;
* strings handed to plotly (trace names, category labels, hover data) are
  ``html.escape``'d as well, because plotly renders a subset of HTML in them; file
  strings are never put into a ``hovertemplate`` (whose ``%{...}`` would be
  interpreted), only into data fields the constant templates refer to.

The report reads results only; it never runs anything and never invents a number:
a metric the run could not measure shows "n/a" with the recorded reason as its
tooltip. A cell measured while other processes competed for the machine
(``timing.contention``) is named in a banner at the top and carries a "contended"
badge with its evidence; the regressions, history and procurement sections draw no
verdict or ranking from it. Units come from the declared metric table
(:mod:`harness.core.metrics`).
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

from harness.reports import cells as C
from harness.reports import formatting as F

DEFAULT_TITLE = "dl-harness report"
MAX_RUNS_IN_CHARTS = 10  # latency/throughput/memory charts draw the most recent runs only

# metric keys the summary table shows in its own columns; anything else a cell
# carries goes to the "Other metrics" table (rendered generically, unit by name)
_SUMMARY_METRICS = frozenset({"latency_ms", "noisy", "throughput_per_s", "peak_host_mem_bytes", "params"})

# DL-relevant CPU flags shown first, in this order, when a run recorded them
_FLAG_ORDER = (
    "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
)  # fmt: skip

_RUN_COLORS = (  # plotly's default qualitative palette, one colour per run
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip

# hover labels of box statistics carry no unit in plotly; relabel them via the
# locale dictionary so every number in a hover says "ms"
_BOX_LOCALE = {
    "en-US": {
        "dictionary": {
            k + ":": f"{k} (ms):"
            for k in ("median", "min", "max", "q1", "q3", "mean", "lower fence", "upper fence")
        }
    }
}


# ----------------------------------------------------------------------------- escaping


def _e(x: Any) -> str:
    """Escape for HTML text and (double- or single-quoted) attribute values."""
    return html.escape("" if x is None else str(x), quote=True)


def _pe(x: Any) -> str:
    """Escape a string for plotly, which renders a subset of HTML in text it draws."""
    return html.escape("" if x is None else str(x), quote=True)


def _finite(obj: Any) -> Any:
    """Copy of ``obj`` with non-finite floats as None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def script_json(obj: Any) -> str:
    """JSON that is safe to place inside a ``<script>`` element (and valid JS)."""
    text = json.dumps(_finite(obj), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (
        text.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


# ----------------------------------------------------------------------------- small pieces


def _na(reason: str | None, default: str = "not recorded by this run") -> str:
    """An "n/a" that says why in its tooltip."""
    why = reason or default
    return f'<span class="na" title="{_e(why)}">n/a</span>'


def _td(text_html: str, sort: Any = None, cls: str = "", title: str | None = None) -> str:
    attrs = ""
    if sort is not None:
        attrs += f' data-sort="{_e(sort)}"'
    if cls:
        attrs += f' class="{cls}"'
    if title:
        attrs += f' title="{_e(title)}"'
    return f"<td{attrs}>{text_html}</td>"


def _badge(text: str, cls: str, title: str | None = None) -> str:
    t = f' title="{_e(title)}"' if title else ""
    return f'<span class="badge {cls}"{t}>{_e(text)}</span>'


def _noise_badge(cell: dict[str, Any]) -> str:
    ratio = C.noise_ratio(cell)
    detail = f" (here IQR/median = {F.percent(ratio)})" if ratio is not None else ""
    return _badge("noisy", "noisy", C.NOISE_EXPLANATION + detail)


def _contention_badge(cell: dict[str, Any], note: str) -> str:
    """The "contended" badge (explanation + every recorded reason as tooltip) and the
    short evidence beside it."""
    detail = C.contention_detail(cell) or note
    return (_badge("contended", "contended", f"{C.CONTENTION_EXPLANATION}. Evidence: {detail}")
            + f' <span class="contention">{_e(F.shorten(note, 120))}</span>')  # fmt: skip


def _contention_banner(runs: Sequence[dict[str, Any]], limit: int = 30) -> str:
    """A banner naming every contended cell with its evidence ("" when none)."""
    hits = C.contended_cells(list(runs))
    if not hits:
        return ""
    n_ok = sum(1 for _, c in C.iter_cells(list(runs)) if C.status(c) == "ok")
    multi = len(runs) > 1
    items = "".join(
        f"<li><code>{_e(C.cell_id(cell))}</code>"
        + (f' <span class="muted">in {_e(run.get("run_id"))}</span>' if multi else "")
        + f": {_e(F.shorten(note, 200))}</li>"
        for run, cell, note in hits[:limit]
    )
    if len(hits) > limit:
        items += f"<li>&hellip; and {len(hits) - limit} more (badge <b>contended</b> in the summary)</li>"
    return (
        '<div id="contention-banner" class="banner" role="alert"><p><b>&#9888; '
        f"{len(hits)} of {n_ok} measured cell{'s' if n_ok != 1 else ''} "
        f"{'were' if len(hits) != 1 else 'was'} contended</b>: other processes competed for the CPU cores or "
        "GPU while they were timed, so their numbers describe a busy machine, not the code. No regression, "
        "improvement, trend or ranking in this report is drawn from them. Rerun them on a quiet machine "
        "(<code>harness run --fail-on-contention</code> lets CI retry).</p>"
        f"<ul>{items}</ul></div>"
    )


def _status_badge(status: str) -> str:
    return _badge(status, f"st-{status}" if status in ("ok", "skipped", "failed") else "st-unknown")


def _kv_table(rows: Iterable[tuple[str, str]], cls: str = "kv") -> str:
    """Two-column table; keys are escaped here, values are HTML already."""
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="{cls}">{body}</table>' if body else ""


def _text_or_na(value: Any, reason: str | None = None) -> str:
    if value is None or value == "":
        return _na(reason)
    return _e(value)


def _fmt_created(ts: Any) -> str:
    return _e(ts) if ts else _na("no timestamp recorded")


# ----------------------------------------------------------------------------- sections


def _header(runs: Sequence[dict[str, Any]], title: str) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    rows = []
    for run in runs:
        h = run.get("harness") or {}
        commit = h.get("git_commit")
        commit_html = (
            f'<code title="{_e(commit)}">{_e(str(commit)[:12])}</code>'
            if commit
            else _na("not built from a git checkout")
        )
        if h.get("git_dirty"):
            commit_html += " " + _badge("dirty", "warn", "the working tree had uncommitted changes")
        flags = []
        if run.get("complete") is False:
            flags.append(_badge("incomplete", "warn", "the run stopped before finishing every cell"))
        if run.get("interrupted"):
            flags.append(_badge("interrupted", "warn", "the run was interrupted (Ctrl-C or a signal)"))
        counts = C.status_counts(run)
        count_html = ", ".join(f"{n} {s}" for s, n in counts.items() if n or s == "ok")
        suite = run.get("suite") or {}
        env = run.get("environment") or {}
        rows.append(
            "<tr>"
            f"<td><code>{_e(run.get('run_id'))}</code> {' '.join(flags)}</td>"
            f"<td>{_e(run.get('tag') or '')}</td>"
            f"<td>{_e(env.get('host'))}</td>"
            f"<td>{_fmt_created(run.get('created'))}</td>"
            f"<td>{_fmt_created(run.get('finished'))}</td>"
            f"<td>{_e(suite.get('name') or '')}</td>"
            f"<td>{_e(h.get('version'))}</td>"
            f"<td>{commit_html}</td>"
            f"<td>{_e(count_html)}</td>"
            "</tr>"
        )
    table = (
        '<table class="grid"><thead><tr><th>run id</th><th>tag</th><th>host</th><th>created (UTC)</th>'
        "<th>finished (UTC)</th><th>suite</th><th>harness</th><th>git commit</th><th>cells</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    n = len(runs)
    return (
        f'<header id="overview"><h1>{_e(title)}</h1>'
        f'<p class="muted">{n} run{"s" if n != 1 else ""} &middot; report generated {now} '
        "from stored results (nothing was re-run)</p>"
        f"{table if runs else '<p>No result files could be loaded.</p>'}</header>"
    )


def _errors_section(errors: Sequence[str]) -> str:
    if not errors:
        return ""
    items = "".join(f"<li><code>{_e(err)}</code></li>" for err in errors)
    return (
        '<section id="skipped-files"><h2>Skipped result files</h2>'
        "<p>These files could not be used (corrupt, truncated, invalid or from a newer "
        f"harness) and are not part of this report:</p><ul>{items}</ul></section>"
    )


def _flags_html(flags: Any) -> str:
    if not isinstance(flags, dict) or not flags:
        return _na("CPU flags were not recorded")
    keys = [k for k in _FLAG_ORDER if k in flags] + sorted(k for k in flags if k not in _FLAG_ORDER)
    out = []
    for k in keys:
        v = flags[k]
        if v is True:
            out.append(_badge(f"{k}: yes", "yes", f"CPU supports {k}"))
        elif v is False:
            out.append(_badge(f"{k}: no", "no", f"CPU lacks {k}"))
        else:
            out.append(_badge(f"{k}: ?", "unknown", f"{k}: {v!r}"))
    return " ".join(out)


def _gpus_html(env: dict[str, Any]) -> str:
    gpus = env.get("gpus")
    if isinstance(gpus, list) and gpus:
        rows = []
        for g in gpus:
            if not isinstance(g, dict):
                continue
            mem = F.bytes_human(g.get("memory_bytes"))
            rows.append(
                "<tr>"
                f"<td>{_e(g.get('index'))}</td><td>{_e(g.get('name'))}</td>"
                f"<td>{_e(mem) if mem else _na(None)}</td>"
                f"<td>{_text_or_na(g.get('driver'))}</td><td>{_text_or_na(g.get('cuda'))}</td>"
                "</tr>"
            )
        return (
            '<table class="grid"><thead><tr><th>#</th><th>GPU</th><th>memory</th><th>driver</th>'
            f"<th>CUDA</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    reason = env.get("gpus_reason")
    return "none" + (f' &mdash; <span class="muted">{_e(reason)}</span>' if reason else "")


def _mapping_html(mapping: Any, missing: str) -> str:
    """A name -> value mapping as a compact table; a null value shows ``missing``."""
    if not isinstance(mapping, dict) or not mapping:
        return _na("not recorded by this run")
    rows = []
    for k in sorted(mapping, key=str):
        v = mapping[k]
        val = f'<span class="muted">{_e(missing)}</span>' if v is None else f"<code>{_e(v)}</code>"
        rows.append((str(k), val))
    return _kv_table(rows, "kv inner")


def _environment_section(runs: Sequence[dict[str, Any]]) -> str:
    blocks = []
    for i, run in enumerate(runs):
        env = run.get("environment") or {}
        if not isinstance(env, dict):
            continue
        osd = env.get("os") or {}
        os_text = (
            " ".join(str(osd.get(k)) for k in ("system", "release") if osd.get(k))
            if isinstance(osd, dict)
            else str(osd)
        )
        os_title = osd.get("platform") if isinstance(osd, dict) else None
        cpu = env.get("cpu") or {}
        if not isinstance(cpu, dict):
            cpu = {}
        cores = []
        if cpu.get("physical_cores") is not None:
            cores.append(f"{cpu['physical_cores']} physical")
        if cpu.get("logical_cores") is not None:
            cores.append(f"{cpu['logical_cores']} logical")
        mem = F.bytes_human(env.get("memory_bytes"))
        rows = [
            ("host", _e(env.get("host"))),
            ("OS", f'<span title="{_e(os_title or "")}">{_e(os_text)}</span>' if os_text else _na(None)),
            ("Python", _text_or_na(env.get("python"))),
            ("CPU", _text_or_na(cpu.get("model"))),
            ("CPU DL flags", _flags_html(cpu.get("flags_dl"))),
            ("cores", _e(", ".join(cores)) if cores else _na(None)),
            ("memory", _e(mem) if mem else _na(None)),
            ("GPUs", _gpus_html(env)),
            ("frameworks", _mapping_html(env.get("frameworks"), "not installed")),
            ("environment variables", _mapping_html(env.get("env_vars"), "unset")),
        ]
        if env.get("fingerprint"):
            rows.append(("fingerprint", f"<code>{_e(env.get('fingerprint'))}</code>"))
        settings = (run.get("suite") or {}).get("settings")
        if isinstance(settings, dict) and settings:
            rows.append(("suite settings", _mapping_html(settings, "null")))
        blocks.append(
            f"<details{' open' if i == 0 else ''}><summary><code>{_e(run.get('run_id'))}</code> on "
            f"<b>{_e(env.get('host'))}</b></summary>{_kv_table(rows)}</details>"
        )
    if not blocks:
        return ""
    return f'<section id="environment"><h2>Environment</h2>{"".join(blocks)}</section>'


def _summary_row(run: dict[str, Any], cell: dict[str, Any], multi: bool, with_repeats: bool = False) -> str:
    spec = cell.get("spec") or {}
    st = C.status(cell)
    ok = st == "ok"
    cid = C.cell_id(cell)
    dash = '<span class="muted" title="no measurement: the cell did not run">&mdash;</span>'

    def lat_td(key: str) -> str:
        if not ok:
            return _td(dash, "")
        v = C.lat(cell, key)
        if v is None:
            return _td(_na(C.unavailable_reason(cell, "latency_ms")), "")
        return _td(_e(F.ms(v)), v, "num")

    # p50 with its confidence interval, full summary in the tooltip
    if ok and C.lat(cell, "p50") is not None:
        p50 = C.lat(cell, "p50")
        ci = F.ci(C.lat(cell, "ci95_low"), C.lat(cell, "ci95_high"))
        lt = C.latency(cell)
        tip = ", ".join(
            f"{k} {F.sig(lt[k]) if F.is_number(lt.get(k)) and k != 'n' else lt.get(k)}"
            for k in ("n", "mean", "std", "min", "max", "iqr", "cv")
            if k in lt
        )
        ips = (cell.get("timing") or {}).get("iters_per_sample")
        if F.is_number(ips) and ips > 1:
            tip += f" (each sample: mean of {ips} iterations)"
        inner = f"{_e(F.ms(p50))}" + (f' <span class="ci">{_e(ci)}</span>' if ci else "")
        p50_td = _td(inner, p50, "num", f"latency summary (ms): {tip}" if tip else None)
    else:
        p50_td = lat_td("p50")

    def metric_td(key: str, fmt: Any, tip: str | None = None) -> str:
        if not ok:
            return _td(dash, "")
        v = C.metric(cell, key)
        if not F.is_number(v):
            return _td(_na(C.unavailable_reason(cell, key)), "")
        return _td(_e(fmt(v)), v, "num", tip)

    tci = C.throughput_ci(cell)
    sustained = C.throughput_method(cell) == "sustained"
    tci_tip = ("sustained: samples processed in the timed loop / the loop's wall time" if sustained else
               "batch / p50 latency (an older result: its timed loop's wall time was not recorded)")
    if tci:
        tci_tip += f"; batch / p50 95% CI [{F.throughput(tci[0])}, {F.throughput(tci[1])}] samples/s"

    def thr_fmt(v: float) -> str:
        return (F.throughput(v) or "") + ("" if sustained else " (p50)")

    notes = []
    note = C.contention(cell) if ok else None
    if note:
        notes.append(_contention_badge(cell, note))
    if ok and C.is_noisy(cell):
        notes.append(_noise_badge(cell))
    if ok and C.warmup_unstable(cell):
        notes.append(_badge("warm-up unstable", "warn", "warm-up did not reach a steady state before timing"))
    noise_sort = C.noise_ratio(cell) if ok else None

    reason = C.reason_text(cell) if not ok else ""
    long_reason = len(reason) > 120 or "\n" in reason
    reason_td = _td(_e(F.shorten(reason, 120)), reason, "reason", reason if long_reason else None)

    cols = [
        _td(f"<code>{_e(run.get('run_id'))}</code>", run.get("run_id"), "run") if multi else "",
        _td(_e(spec.get("workload")), spec.get("workload")),
        _td(_e(spec.get("backend")), spec.get("backend")),
        _td(_e(spec.get("device")), spec.get("device")),
        _td(_e(spec.get("variant")), spec.get("variant")),
        _td(_e(spec.get("mode")) + (f' <span class="muted">x{_e(spec["world_size"])} workers</span>'
                                    if spec.get("world_size") else ""), spec.get("mode")),
        _td(_e(spec.get("batch_size")) + (' <span class="muted">/worker</span>' if spec.get("world_size") else ""),
            spec.get("batch_size"), "num"),
        _td(_e(spec.get("size")), spec.get("size")),
        _td(_status_badge(st), st),
        p50_td,
        lat_td("p90"),
        lat_td("p99"),
        metric_td("throughput_per_s", thr_fmt, tci_tip),
        metric_td("peak_host_mem_bytes", F.mib_number),
        metric_td("params", F.count),
    ]
    if with_repeats:
        spread = C.repeat_spread(cell)
        if ok:
            text = F.process_spread(spread, short=True) if spread else "1"
            tip = ("the worker processes this cell was measured in (run --repeats) and the range of their median "
                   "latencies: the run-to-run noise" + (f"; {F.process_spread(spread)}" if spread else ""))
            cols.append(_td(_e(text), spread["cv"] if spread and spread.get("cv") is not None else "", "num", tip))
        else:
            cols.append(_td(dash, ""))
    cols += [
        _td(" ".join(notes), noise_sort if noise_sort is not None else ""),
        reason_td,
    ]
    row_cls = f"st-{_e(st)}" + (" contended" if note else "")
    return f'<tr class="{row_cls}" title="{_e(cid)}" data-cell="{_e(cid)}">{"".join(cols)}</tr>'


def _summary_section(runs: Sequence[dict[str, Any]]) -> str:
    pairs = list(C.iter_cells(list(runs)))
    if not pairs:
        return ""
    multi = len(runs) > 1
    with_repeats = any(C.repeat_spread(c) for _, c in pairs)
    heads = (["run"] if multi else []) + [
        "workload", "backend", "device", "variant", "mode", "batch", "size", "status",
        "p50 (ms) [95% CI]", "p90 (ms)", "p99 (ms)", "sustained throughput (samples/s)",
        "peak host mem (MiB)", "params",
    ] + (["processes: p50 range (ms)"] if with_repeats else []) + ["flags", "reason / error"]  # fmt: skip
    thead = "".join(f'<th scope="col" tabindex="0" title="click to sort">{_e(h)}</th>' for h in heads)
    rows = "".join(_summary_row(run, cell, multi, with_repeats) for run, cell in pairs)
    ok_cells = [c for _, c in pairs if C.status(c) == "ok"]
    legend = ""
    if any(C.contention(c) for c in ok_cells):
        legend += f'<p class="muted">{_badge("contended", "contended")} {_e(C.CONTENTION_EXPLANATION)}.</p>'
    if any(C.is_noisy(c) for c in ok_cells):
        legend += f'<p class="muted">{_badge("noisy", "noisy")} {_e(C.NOISE_EXPLANATION)}.</p>'
    if any(C.throughput_method(c) != "sustained" for c in ok_cells):
        legend += ('<p class="muted">(p50): a throughput from an older result file, batch / median latency '
                   "(its timed loop's wall time was not recorded), not sustained throughput.</p>")
    return (
        '<section id="summary"><h2>Summary</h2>'
        '<p class="muted">p50/p90/p99: per-iteration latency percentiles in milliseconds; the bracket '
        "is the 95% confidence interval of the median. Sustained throughput: samples processed in the timed "
        "loop / the loop's wall time."
        + (" processes: the worker processes a cell was measured in (<code>run --repeats</code>) and the range "
           "of their medians, the run-to-run noise." if with_repeats else "")
        + " Click a column header to sort; type to filter.</p>"
        '<p><input type="search" id="cell-filter" placeholder="filter cells (e.g. torch, failed, bs64)" '
        f'aria-label="filter cells"> <span id="cell-count" class="muted">{len(pairs)} cells</span></p>'
        f'<div class="scroll"><table class="grid sortable" id="summary-table"><thead><tr>{thead}</tr></thead>'
        f"<tbody>{rows}</tbody></table></div>{legend}</section>"
    )


def _other_value_html(cell: dict[str, Any], key: str) -> tuple[str, Any]:
    """(html, sort key) for a metric outside the summary columns."""
    m = C.metrics(cell)
    if key not in m or m.get(key) is None:
        return _na(C.unavailable_reason(cell, key)), ""
    v = m[key]
    if isinstance(v, dict):
        if "value" in v:
            val = v.get("value")
            unit = v.get("unit")
            src = v.get("source")
            why = v.get("reason") or C.unavailable_reason(cell, key)
            if not F.is_number(val):
                return _na(why or (f"source: {src}" if src else None)), ""
            text = F.sig(val) or ""
            if unit:
                text += f" {unit}"
            tip = "; ".join(str(x) for x in (f"source: {src}" if src else None, why) if x)
            badge = " " + _badge("estimate", "warn", tip) if src == "estimate" else ""
            return f'<span title="{_e(tip)}">{_e(text)}</span>{badge}', val
        parts = [f"{k}={F.sig(x) if F.is_number(x) else x}" for k, x in v.items() if not isinstance(x, (dict, list))]
        return _e(", ".join(parts)), ""
    if isinstance(v, list):
        iv = C.interval(v)
        if iv is not None:
            text = F.metric_interval(key, *iv)
            if text is not None:
                return _e(text), iv[0]
        if all(isinstance(x, str) for x in v):
            return _e(", ".join(v)), ", ".join(v)
        return _e(f"[{len(v)} values]"), len(v)
    text = F.metric_value(key, v)
    if text is None:
        return _e(v), str(v)
    return _e(text), v if F.is_number(v) else str(v)


def _other_metrics_section(runs: Sequence[dict[str, Any]]) -> str:
    ok = [(r, c) for r, c in C.iter_cells(list(runs)) if C.status(c) == "ok"]
    keys: list[str] = []
    for _, c in ok:
        for k in list(C.metrics(c)) + list((c.get("unavailable") or {}).keys()):
            if k not in _SUMMARY_METRICS and k not in keys:
                keys.append(k)
    if not keys:
        return ""
    multi = len(runs) > 1
    heads = (["run"] if multi else []) + ["cell"] + keys
    thead = "".join(f'<th scope="col" tabindex="0" title="click to sort">{_e(h)}</th>' for h in heads)
    rows = []
    for run, cell in ok:
        tds = [_td(f"<code>{_e(run.get('run_id'))}</code>", run.get("run_id"))] if multi else []
        tds.append(_td(f"<code>{_e(C.cell_id(cell))}</code>", C.cell_id(cell)))
        for k in keys:
            h, sort = _other_value_html(cell, k)
            tds.append(_td(h, sort, "num" if F.is_number(sort) else ""))
        rows.append(f"<tr>{''.join(tds)}</tr>")
    return (
        '<section id="other-metrics"><h2>Other metrics</h2>'
        '<p class="muted">Every further metric the cells recorded, unit by name '
        "(<code>_ms</code> milliseconds, <code>_bytes</code> shown as MiB/GiB, <code>_j</code> joules, "
        "<code>_w</code> watts). n/a: not measured; hover it for the reason.</p>"
        f'<div class="scroll"><table class="grid sortable"><thead><tr>{thead}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div></section>"
    )


def _failed_section(runs: Sequence[dict[str, Any]]) -> str:
    blocks = []
    multi = len(runs) > 1
    for run, cell in C.iter_cells(list(runs)):
        if C.status(cell) != "failed":
            continue
        err = cell.get("error") if isinstance(cell.get("error"), dict) else {}
        etype = err.get("type")
        msg = err.get("message")
        headline = ": ".join(str(x) for x in (etype, F.shorten(msg, 160) if msg else None) if x) or F.shorten(
            C.reason_text(cell), 160
        )
        parts = []
        reason = cell.get("reason")
        if reason:
            parts.append(f"<p><b>reason:</b> {_e(reason)}</p>")
        if msg:
            parts.append(f"<p><b>error message</b></p><pre>{_e(msg)}</pre>")
        if err.get("returncode") is not None:
            parts.append(f"<p><b>worker exit code:</b> <code>{_e(err.get('returncode'))}</code></p>")
        if err.get("traceback"):
            parts.append(f"<p><b>traceback</b></p><pre>{_e(err.get('traceback'))}</pre>")
        if err.get("stderr_tail"):
            parts.append(f"<p><b>stderr (tail)</b></p><pre>{_e(err.get('stderr_tail'))}</pre>")
        where = f" <span class=\"muted\">in {_e(run.get('run_id'))}</span>" if multi else ""
        blocks.append(
            f'<details class="failure"><summary><code>{_e(C.cell_id(cell))}</code>{where} &mdash; '
            f"{_e(headline)}</summary>{''.join(parts)}</details>"
        )
    if not blocks:
        return ""
    return (
        f'<section id="failed"><h2>Failed cells ({len(blocks)})</h2>'
        f'<p class="muted">Click a cell to see its error and captured stderr.</p>{"".join(blocks)}</section>'
    )


# ----------------------------------------------------------------------------- figures


def _ok_cells(runs: Sequence[dict[str, Any]]) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    return [
        (i, run, cell)
        for i, run in enumerate(runs)
        for cell in (run.get("cells") or [])
        if C.status(cell) == "ok"
    ]


def _height(n_categories: int, n_runs: int) -> int:
    per = 30 + 16 * max(0, n_runs - 1)
    return int(min(6000, max(260, 110 + 24 * n_runs + per * n_categories)))


def _category_axis(labels: list[str]) -> dict[str, Any]:
    return {
        "type": "category",
        "automargin": True,
        "categoryorder": "array",
        "categoryarray": labels,
        "autorange": "reversed",  # first cell on top, like the table
    }


def _base_layout(title: str, x_title: str, labels: list[str], n_runs: int, multi: bool) -> dict[str, Any]:
    return {
        "title": {"text": title, "x": 0, "xanchor": "left", "xref": "paper", "y": 1, "yanchor": "top",
                  "yref": "container", "pad": {"t": 12}},
        "xaxis": {"title": {"text": x_title}, "zeroline": False, "automargin": True},
        "yaxis": _category_axis(labels),
        "height": _height(len(labels), n_runs),
        "margin": {"l": 20, "r": 80, "t": 50 + (22 * n_runs if multi else 0), "b": 50},
        "showlegend": multi,
        # above the plot, so long run ids do not squeeze the plot area
        "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.0, "yanchor": "bottom"},
        "hovermode": "closest",
    }


def _labels(ok: list[tuple[int, dict[str, Any], dict[str, Any]]]) -> list[str]:
    seen: list[str] = []
    for _, _, cell in ok:
        lab = _pe(C.cell_id(cell))
        if lab not in seen:
            seen.append(lab)
    return seen


LATENCY_POINTS_PER_CELL = 5_000  # samples of one cell embedded in the latency chart, at most
LATENCY_POINTS_TOTAL = 1_000_000  # samples of all cells of the latency chart together, at most
LATENCY_POINTS_MIN = 200  # a cell's share of the total never goes below this
SKETCH_METHOD = ("a quantile sketch: the order statistics at evenly spaced ranks (minimum and maximum included), "
                 "so its quartiles are within one sketch step in rank of the exact ones; every number in the tables "
                 "is computed from all samples")  # fmt: skip


def latency_point_cap(counts: Sequence[int]) -> int:
    """How many samples of one cell the latency chart embeds, given every drawn cell's
    sample count: :data:`LATENCY_POINTS_PER_CELL`, lowered (to at least
    :data:`LATENCY_POINTS_MIN`) when all cells together would exceed
    :data:`LATENCY_POINTS_TOTAL`. Ordinary reports (tens of cells of hundreds to a few
    thousand samples, at most ``MAX_RUNS_IN_CHARTS`` runs) stay under both: every sample
    is drawn, as before the caps. The caps bound the HTML, not any statistic."""
    cap = LATENCY_POINTS_PER_CELL
    if sum(min(n, cap) for n in counts) > LATENCY_POINTS_TOTAL:
        cap = max(LATENCY_POINTS_MIN, LATENCY_POINTS_TOTAL // max(1, len(counts)))
    return cap


def quantile_sketch(xs: Sequence[float], k: int) -> list[float]:
    """``k`` order statistics of ``xs`` at evenly spaced ranks 0, ~(n-1)/(k-1), ..., n-1
    (minimum and maximum included; deterministic); ``xs`` itself when n <= k. O(n log n)."""
    n = len(xs)
    if n <= k:
        return list(xs)
    import numpy as np

    a = np.sort(np.asarray(xs, dtype=float))
    if k < 2:
        return [float(a[n // 2])]
    idx = (np.arange(k, dtype=np.int64) * (n - 1)) // (k - 1)
    return a[idx].tolist()


def latency_figure(runs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Box plot of the raw latency samples (ms) of every ok cell; None if no samples.

    The embedded points are bounded (issue 13, :func:`latency_point_cap`): a cell with
    more samples than the cap is drawn from a :func:`quantile_sketch` of cap points, and
    the figure's ``note`` (shown in the caption next to the chart) and the hover of that
    box say "showing K of N samples" and how they were chosen."""
    ok = []
    for i, run, cell in _ok_cells(runs):
        xs = C.samples(cell)  # once per cell: O(n) each time
        if xs:
            ok.append((i, run, cell, xs))
    if not ok:
        return None
    cap = latency_point_cap([len(xs) for *_, xs in ok])
    multi = len(runs) > 1
    shown: set[int] = set()
    traces = []
    sketched: list[str] = []
    for i, run, cell, xs in ok:
        n = len(xs)
        label = _pe(C.cell_id(cell))
        color = _RUN_COLORS[i % len(_RUN_COLORS)]
        pts = quantile_sketch(xs, cap) if n > cap else xs
        extra = ""
        if n > cap:
            what = f"showing {len(pts):,} of {n:,} samples (quantile sketch)"
            sketched.append(f"{C.cell_id(cell)}" + (f" ({C.run_label(run)})" if multi else "") + f": {what}")
            extra = "<br>" + what  # constant text of ours: no file string in a hovertemplate
        traces.append(
            {
                "type": "box",
                "orientation": "h",
                "x": pts,
                "y0": label,
                "name": _pe(C.run_label(run)),
                "legendgroup": f"run{i}",
                "offsetgroup": f"run{i}",
                "showlegend": multi and i not in shown,
                "marker": {"color": color, "size": 3, "opacity": 0.5},
                "line": {"width": 1.5},
                "boxmean": True,
                "boxpoints": "all" if len(pts) <= 2000 else "outliers",
                "jitter": 0.4,
                "pointpos": 0,
                "hoveron": "boxes+points",
                # constant template: the cell id comes in as the (escaped) category
                "hovertemplate": "%{y}<br>%{x:.4g} ms" + extra + "<extra>%{fullData.name}</extra>",
            }
        )
        shown.add(i)
    labels = _labels([(i, r, c) for i, r, c, _ in ok])
    layout = _base_layout(
        "Latency distribution per cell (ms per iteration)", "latency per iteration (ms)", labels, len(runs), multi
    )
    layout["boxmode"] = "group"
    # cells whose medians span more than 30x are unreadable on one linear axis
    meds = [m for _, _, c, _ in ok if (m := C.lat(c, "p50")) is not None and m > 0]
    if meds and max(meds) / min(meds) > 30 and min(min(xs) for *_, xs in ok) > 0:
        layout["xaxis"]["type"] = "log"
        layout["xaxis"]["title"]["text"] += ", log scale"
    else:
        layout["xaxis"]["rangemode"] = "tozero"
    fig: dict[str, Any] = {"data": traces, "layout": layout, "config": {"locale": "en-US", "locales": _BOX_LOCALE}}
    if sketched:
        listed = "; ".join(sketched[:10]) + (f"; and {len(sketched) - 10} more cell(s)" if len(sketched) > 10 else "")
        fig["note"] = (f"{len(sketched)} cell(s) have more than {cap:,} samples and are drawn from {SKETCH_METHOD}: "
                       f"{listed}.")  # fmt: skip
    return fig


def _throughput_bar_interval(cell: dict[str, Any]) -> tuple[tuple[float, float] | None, str]:
    """The interval drawn around a cell's throughput bar and how it is described: for
    sustained throughput measured in several processes, the range of the processes'
    own sustained values (the run-to-run spread); for an older batch / p50 value, the
    CI the run stored for it. Never the batch / p50 CI around a sustained bar: that is
    an interval of another quantity."""
    if C.throughput_method(cell) != "sustained":
        ci = C.throughput_ci(cell)
        return ci, (f"batch / p50 95% CI [{F.throughput(ci[0])}, {F.throughput(ci[1])}]" if ci else "no CI")
    vals = C.process_metric(cell, "throughput_per_s")
    if len(vals) >= 2:
        lo, hi = min(vals), max(vals)
        return (lo, hi), f"range over {len(vals)} processes [{F.throughput(lo)}, {F.throughput(hi)}]"
    return None, "one process: no run-to-run range"


def throughput_figure(runs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Horizontal bars of sustained throughput (samples/s) per ok cell, with the range
    over its worker processes (``--repeats``) as error bars; the hover adds the p50
    latency and its CI. Contended cells are marked at the end of their bar."""
    ok = [(i, r, c) for i, r, c in _ok_cells(runs) if F.is_number(C.metric(c, "throughput_per_s"))]
    if not ok:
        return None
    multi = len(runs) > 1
    traces = []
    for i, run in enumerate(runs):
        mine = [c for j, _, c in ok if j == i]
        if not mine:
            continue
        intervals = [_throughput_bar_interval(c) for c in mine]
        traces.append(
            {
                "type": "bar",
                "orientation": "h",
                "name": _pe(C.run_label(run)),
                "y": [_pe(C.cell_id(c)) for c in mine],
                "x": [C.metric(c, "throughput_per_s") for c in mine],
                # preformatted like the tables (3 significant digits); numbers only
                "customdata": [
                    [
                        F.throughput(C.metric(c, "throughput_per_s"))
                        + ("" if C.throughput_method(c) == "sustained" else " (batch / p50, older result)"),
                        F.ms(C.lat(c, "p50")) or "n/a",
                        F.ci(C.lat(c, "ci95_low"), C.lat(c, "ci95_high")) or "n/a",
                        desc,
                        "contended: " + _pe(F.shorten(note, 100)) if (note := C.contention(c)) else "",
                    ]
                    for c, (_, desc) in zip(mine, intervals)
                ],
                "marker": {"color": _RUN_COLORS[i % len(_RUN_COLORS)]},
                # the value at the end of each bar, so cells far slower than the
                # fastest one stay readable on the (honest) linear axis
                "text": [(F.throughput(C.metric(c, "throughput_per_s")) or "")
                         + (" \u26a0 contended" if C.contention(c) else "") for c in mine],
                "textposition": "outside",
                "cliponaxis": False,
                "hovertemplate": (
                    "%{y}<br>sustained throughput %{customdata[0]} samples/s, %{customdata[3]}<br>"
                    "p50 latency %{customdata[1]} ms, 95% CI %{customdata[2]} ms<br>%{customdata[4]}"
                    "<extra>%{fullData.name}</extra>"
                ),
            }
        )
        if any(iv for iv, _ in intervals):  # error bars only from values the run stored
            x = traces[-1]["x"]
            traces[-1]["error_x"] = {
                "type": "data",
                "symmetric": False,
                "array": [max(0.0, iv[1] - v) if iv else None for (iv, _), v in zip(intervals, x)],
                "arrayminus": [max(0.0, v - iv[0]) if iv else None for (iv, _), v in zip(intervals, x)],
                "thickness": 1.2,
                "width": 4,
                "color": "#444",
            }
    labels = _labels(ok)
    layout = _base_layout("Sustained throughput per cell (samples/s)", "sustained throughput (samples/s)", labels,
                          len(runs), multi)
    layout["barmode"] = "group"
    return {"data": traces, "layout": layout, "config": {}}


def memory_figure(runs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Horizontal bars of peak host memory (MiB) per ok cell, and peak device memory
    where any cell measured it; cells without a value are left out (see the table)."""
    series = [
        ("peak_host_mem_bytes", "peak host mem"),
        ("peak_device_mem_bytes", "peak device mem"),
    ]
    ok = _ok_cells(runs)
    present = [
        (key, name)
        for key, name in series
        if any(F.is_number(C.metric(c, key)) for _, _, c in ok)
    ]
    if not present:
        return None
    multi = len(runs) > 1
    traces = []
    used: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
    for k, (key, name) in enumerate(present):
        for i, run in enumerate(runs):
            mine = [c for j, _, c in ok if j == i and F.is_number(C.metric(c, key))]
            if not mine:
                continue
            used.extend((i, run, c) for c in mine)
            trace_name = f"{name} · {C.run_label(run)}" if multi else name
            traces.append(
                {
                    "type": "bar",
                    "orientation": "h",
                    "name": _pe(trace_name),
                    "y": [_pe(C.cell_id(c)) for c in mine],
                    "x": [C.metric(c, key) / F.MIB for c in mine],
                    "marker": {
                        "color": _RUN_COLORS[i % len(_RUN_COLORS)],
                        "pattern": {"shape": "" if k == 0 else "/"},
                    },
                    "text": [F.bytes_human(C.metric(c, key)) for c in mine],
                    "textposition": "outside",
                    "cliponaxis": False,
                    "hovertemplate": "%{y}<br>%{x:,.1f} MiB<extra>%{fullData.name}</extra>",
                }
            )
    used_ids = {id(c) for _, _, c in used}
    labels = _labels([x for x in ok if id(x[2]) in used_ids])
    n_series = len(traces)
    layout = _base_layout(
        "Peak memory per cell (MiB)", "peak memory (MiB, 1 MiB = 2^20 bytes)", labels, n_series, n_series > 1
    )
    layout["barmode"] = "group"
    return {"data": traces, "layout": layout, "config": {}}


def _figure_block(div_id: str, fig: dict[str, Any], caption: str) -> str:
    config = {"responsive": True, "displaylogo": False, "typesetMath": False}
    config.update(fig.get("config") or {})
    payload = script_json({"data": fig["data"], "layout": fig["layout"], "config": config})
    return (
        f'<figure><div id="{div_id}" class="chart"></div><figcaption class="muted">{caption}</figcaption></figure>'
        f"<script>(function(){{var f={payload};"
        f'Plotly.newPlot("{div_id}",f.data,f.layout,f.config);}})();</script>'
    )


# ----------------------------------------------------------------------------- page


_CSS = """
:root{--fg:#1b1f24;--muted:#5b6570;--bg:#fff;--line:#d8dee4;--ok:#1a7f37;--skip:#9a6700;--fail:#cf222e}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg);margin:0 auto;padding:16px 24px;max-width:1800px}
h1{font-size:22px;margin:.2em 0}h2{font-size:18px;margin:1.6em 0 .4em;border-bottom:1px solid var(--line);padding-bottom:.2em}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
pre{background:#f6f8fa;border:1px solid var(--line);padding:8px;overflow:auto;max-height:420px;white-space:pre-wrap;word-break:break-word}
.muted{color:var(--muted)}.scroll{overflow-x:auto}
table.grid{border-collapse:collapse;margin:.4em 0}
table.grid th,table.grid td{border:1px solid var(--line);padding:3px 6px;text-align:left;vertical-align:top}
#summary-table{font-size:13px}#summary-table th{white-space:normal;vertical-align:bottom}#summary-table .ci{display:block}
table.grid th{background:#f6f8fa;white-space:nowrap}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}table.sortable th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.reason{min-width:220px;max-width:420px;color:var(--muted)}
.ci{color:var(--muted);font-size:12px}
table.kv{border-collapse:collapse}table.kv>tbody>tr>th,table.kv>tr>th{text-align:left;padding:2px 12px 2px 0;vertical-align:top;white-space:nowrap;font-weight:600}
table.kv td{padding:2px 0}table.inner th{font-weight:normal}
.badge{display:inline-block;border-radius:10px;padding:0 7px;font-size:12px;border:1px solid transparent;margin:1px 2px 1px 0;white-space:nowrap}
.badge.yes{background:#dafbe1;border-color:#4ac26b}.badge.no{background:#f6f8fa;border-color:var(--line);color:var(--muted)}
.badge.unknown{background:#fff8c5}
.badge.noisy,.badge.warn{background:#fff1e5;border-color:#fb8f44;color:#953800}
.badge.contended{background:#ffebe9;border-color:#cf222e;color:#a40e26;font-weight:600}
.contention{color:#a40e26;font-size:12px}tr.contended>td{background:#fff5f5}
.banner{border:2px solid #cf222e;background:#ffebe9;color:#4c0b10;padding:8px 14px;margin:12px 0;border-radius:6px}
.banner ul{margin:.3em 0 0;padding-left:1.4em}
.badge.st-ok{background:#dafbe1;color:var(--ok)}.badge.st-skipped{background:#fff8c5;color:var(--skip)}
.badge.st-failed{background:#ffebe9;color:var(--fail)}.badge.st-unknown{background:#f6f8fa}
.na{color:var(--muted);border-bottom:1px dotted var(--muted);cursor:help}
details{margin:.3em 0}summary{cursor:pointer}details.failure summary{color:var(--fail)}
figure{margin:1em 0}.chart{width:100%}
input[type=search]{padding:4px 8px;width:340px;max-width:90%}
"""

# Sorting and filtering; reads textContent/data-sort only, never writes HTML.
_JS = """
(function(){
function key(td){
  var v=td.getAttribute('data-sort'); if(v===null){v=td.textContent.trim();}
  if(v===''){return {e:1};}
  var n=Number(v); return isFinite(n)?{n:n}:{s:v.toLowerCase()};
}
function cmp(a,b){
  if(a.e||b.e){return (a.e?1:0)-(b.e?1:0);}
  if(a.n!==undefined&&b.n!==undefined){return a.n-b.n;}
  if(a.n!==undefined){return -1;} if(b.n!==undefined){return 1;}
  return a.s<b.s?-1:(a.s>b.s?1:0);
}
Array.prototype.forEach.call(document.querySelectorAll('table.sortable'),function(table){
  var ths=table.tHead.rows[0].cells;
  Array.prototype.forEach.call(ths,function(th,col){
    function sort(){
      var asc=th.getAttribute('aria-sort')!=='ascending';
      Array.prototype.forEach.call(ths,function(h){h.removeAttribute('aria-sort');});
      th.setAttribute('aria-sort',asc?'ascending':'descending');
      var body=table.tBodies[0];
      var rows=Array.prototype.slice.call(body.rows).map(function(r,i){return {r:r,k:key(r.cells[col]),i:i};});
      rows.sort(function(x,y){
        var c;
        if(x.k.e||y.k.e){c=cmp(x.k,y.k);} else {c=asc?cmp(x.k,y.k):cmp(y.k,x.k);}
        return c||x.i-y.i;
      });
      rows.forEach(function(x){body.appendChild(x.r);});
    }
    th.addEventListener('click',sort);
    th.addEventListener('keydown',function(ev){if(ev.key==='Enter'||ev.key===' '){ev.preventDefault();sort();}});
  });
});
var box=document.getElementById('cell-filter'), table=document.getElementById('summary-table');
if(box&&table){
  var count=document.getElementById('cell-count');
  box.addEventListener('input',function(){
    var terms=box.value.toLowerCase().split(/\\s+/).filter(Boolean), shown=0, rows=table.tBodies[0].rows;
    Array.prototype.forEach.call(rows,function(r){
      var text=(r.textContent+' '+(r.getAttribute('data-cell')||'')).toLowerCase();
      var ok=terms.every(function(t){return text.indexOf(t)!==-1;});
      r.style.display=ok?'':'none'; if(ok){shown++;}
    });
    if(count){count.textContent=shown+' of '+rows.length+' cells';}
  });
}
})();
"""


_TOPOJSON_CDN_DEFAULT = 'topojsonURL:{valType:"string",noBlank:!0,dflt:"https://cdn.plot.ly/un/"}'


def _offline_plotlyjs() -> str:
    """The installed plotly.js bundle, with its one automatic network default removed.

    The bundle's only URL it would fetch by itself is ``topojsonURL`` (map data for
    geo traces, which this report never draws); pointing it at a relative folder
    keeps the file free of any CDN reference. Other URLs in the bundle are for
    buttons that are off by default (e.g. Chart Studio). If a plotly release changes
    that string the replacement is simply a no-op.
    """
    from plotly.offline import get_plotlyjs  # heavy: only when there is a chart

    js = get_plotlyjs()
    return js.replace(_TOPOJSON_CDN_DEFAULT, _TOPOJSON_CDN_DEFAULT.replace("https://cdn.plot.ly/un/", "topojson/"), 1)


def render_html(
    runs: Sequence[dict[str, Any]],
    errors: Sequence[str] = (),
    title: str | None = None,
    prices: Any = None,
    rank_by: str = "throughput",
) -> str:
    """The report as one HTML string (see :func:`write_html_report`). ``prices``
    (:class:`harness.analysis.procurement.Prices`) and ``rank_by`` feed the procurement section."""
    runs = [r for r in runs if isinstance(r, dict)]
    page_title = title or DEFAULT_TITLE
    # per-cell charts of a long history would be unreadable (and slow): draw the most
    # recent runs there; the tables, history and procurement sections use every run
    recent = sorted(runs, key=lambda d: (str(d.get("created") or ""), str(d.get("run_id") or "")))[-MAX_RUNS_IN_CHARTS:]
    recent_ids = {id(r) for r in recent}
    chart_runs = [r for r in runs if id(r) in recent_ids]
    note = (f" Only the {MAX_RUNS_IN_CHARTS} most recent of the {len(runs)} runs are drawn here."
            if len(runs) > MAX_RUNS_IN_CHARTS else "")
    lat_fig = latency_figure(chart_runs)
    figures = [
        ("chart-latency", lat_fig, "Each box: the raw per-iteration latencies of one cell "
         "(box = quartiles, line = median, dashed = mean, dots = samples). Hover for values in ms." + note
         + (" " + lat_fig["note"] if lat_fig and lat_fig.get("note") else "")),
        ("chart-throughput", throughput_figure(chart_runs), "Sustained throughput of each cell (samples processed "
         "in the timed loop / the loop's wall time), in samples per second; error bars: the range over the cell's "
         "worker processes (run --repeats); the hover shows the p50 latency and its CI. "
         "\u26a0 marks a contended cell." + note),
        ("chart-memory", memory_figure(chart_runs), "Peak resident host memory of the worker process while the cell "
         "ran (and peak device memory where measured), in MiB. Cells without a value are listed as n/a in the tables." + note),
    ]  # fmt: skip
    figures = [(d, f, cap) for d, f, cap in figures if f is not None]

    from harness.reports import sections as S

    parts = [
        _header(runs, page_title),
        _contention_banner(runs),
        _errors_section(errors),
        _summary_section(runs),
    ]
    if figures:
        chart_html = "".join(_figure_block(d, f, _e(cap)) for d, f, cap in figures)
        parts.append(f'<section id="charts"><h2>Charts</h2>{chart_html}</section>')
    parts.append(S.backends_section(runs))
    from harness.analysis.history import build_history

    series = build_history(runs)  # once: the history and regressions sections share it
    for section_html, section_figs in (
        S.scaling_section(runs),
        S.energy_section(runs),
        S.quality_section(runs),
        S.roofline_section(runs),
        S.regressions_section(runs, series),
        S.history_section(runs, series),
        S.procurement_section(runs, prices, rank_by),
    ):
        if section_html:
            figs_html = "".join(_figure_block(d, f, _e(cap)) for d, f, cap in section_figs)
            head, sep, tail = section_html.rpartition("</section>")
            parts.append(head + figs_html + sep + tail if figs_html else section_html)
            figures += section_figs
    parts += [_other_metrics_section(runs), _failed_section(runs), _environment_section(runs)]

    plotly_js = ""
    if figures:
        plotly_js = (
            "<script>window.PlotlyConfig={MathJaxConfig:'local'};</script>\n"
            f"<script>{_offline_plotlyjs()}</script>\n"
        )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(page_title)}</title><style>{_CSS}</style>\n"
        f"{plotly_js}</head><body>\n"
        + "\n".join(p for p in parts if p)
        + f"\n<script>{_JS}</script>\n</body></html>\n"
    )


def write_html_report(
    runs: list[dict[str, Any]],
    out_path: Path,
    errors: Sequence[str] = (),
    title: str | None = None,
    prices: Any = None,
    rank_by: str = "throughput",
) -> Path:
    """Write a self-contained, offline HTML report of ``runs`` to ``out_path``.

    ``errors`` are the one-line messages of result files the loader skipped
    (``LoadedResults.errors``); they are listed so nothing disappears silently.
    The file is written atomically (temp file + rename). Returns the path.
    """
    out = Path(out_path)
    text = render_html(runs, errors=errors, title=title, prices=prices, rank_by=rank_by)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a report is meant to be shared
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out
