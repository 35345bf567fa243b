"""At a glance: model x variant (x machine, backend, device where the runs have more than
one), each variant's speed-up against fp32 and its quality gate: the table a reader
wants first, so it comes right after the overview (order 25).

Each entry is the latest run's cell of that (machine, spec). The speed-up is the fp32
cell's median step latency / the variant's, both from the same run when it has both
(else the latest fp32 cell of the same machine and spec, said in the tooltip); it is
marked "≈" when the two medians' 95% CIs overlap (no clear difference), and carries no
verdict when either cell was contended. Rows whose cells all did not run for one reason
(e.g. every cuda cell on a machine without a GPU) are one line under the table.
"""

from __future__ import annotations

from typing import Any, Mapping

from harness.reports import cells as C
from harness.reports import formatting as F
from harness.reports.sections.common import M, ReportContext, ReportSection, table
from harness.reports.tables import md_escape
from harness.reports.templating import join, render_string

BASELINE = "fp32"
CLEAR = 0.05  # a speed-up within 1 +/- CLEAR whose CIs overlap reads as "about the same"
DIMS = (("machine", "machine"), ("backend", "backend"), ("device", "device"), ("workload", "model"),
        ("mode", "mode"), ("batch_size", "batch"), ("size", "size"), ("world_size", "workers"))  # fmt: skip


def _machine(run: Mapping[str, Any]) -> tuple[str, str]:
    from harness.analysis.compare import fingerprint, fleet_target

    env = run.get("environment") if isinstance(run.get("environment"), Mapping) else {}
    target = fleet_target(run)
    return fingerprint(run), (f"{target} ({env.get('host') or '?'})" if target else str(env.get("host") or "?"))


def _when(run: Mapping[str, Any]) -> tuple[str, str]:
    return str(run.get("created") or ""), str(run.get("run_id") or "")


def _p50_ci(cell: dict[str, Any]) -> tuple[float, float] | None:
    lo, hi = C.lat(cell, "ci95_low"), C.lat(cell, "ci95_high")
    return (lo, hi) if lo is not None and hi is not None else None


def _gate(cell: dict[str, Any]) -> bool | None:
    q = C.metric(cell, "quality")
    gate = q.get("gate") if isinstance(q, Mapping) and isinstance(q.get("gate"), Mapping) else {}
    passed = gate.get("passed")
    return passed if isinstance(passed, bool) else None


def _gate_rule(cell: dict[str, Any]) -> str:
    q = C.metric(cell, "quality")
    gate = q.get("gate") if isinstance(q, Mapping) and isinstance(q.get("gate"), Mapping) else {}
    return str(gate.get("rule") or "")


def _factor_words(speedup: float) -> str:
    """A speed-up in the words ``harness compare --across`` uses: ``"6.80× faster"``,
    ``"1.92× slower"`` (fp32's time is 0.52 of the variant's; never "0.52× slower")."""
    return f"{speedup:.2f}× faster" if speedup >= 1 else f"{1 / speedup:.2f}× slower"


class PivotSection(ReportSection):
    name = "pivot"
    title = "At a glance: model × variant"
    order = 25
    description = ("model x variant (x machine / backend / device when several): speed-up vs fp32 and the quality "
                   "gate, the table to read first")  # fmt: skip

    def data(self, ctx: ReportContext) -> Any:
        latest: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any]]] = {}
        hosts: dict[str, set[str]] = {}
        for run, cell in C.iter_cells(ctx.runs):
            spec = cell.get("spec") if isinstance(cell.get("spec"), Mapping) else None
            if not spec or spec.get("variant") is None:
                continue
            fp, host = _machine(run)
            hosts.setdefault(host, set()).add(fp)
            key = (fp, *(str(spec.get(k)) for k, _ in DIMS[1:]), str(spec.get("variant")))
            if key not in latest or _when(run) >= _when(latest[key][0]):
                latest[key] = (run, cell)
        if not latest or not any(C.status(c) == "ok" for _, c in latest.values()):
            return None
        specs = [(k, r, c) for k, (r, c) in latest.items()]
        variants = sorted({k[-1] for k, _, _ in specs}, key=lambda v: (v != BASELINE, v))
        machines = {k[0] for k, _, _ in specs}
        # only the dimensions that vary are columns (the model always is one)
        varying = [i for i, (field, _) in enumerate(DIMS)
                   if field == "workload" or len({k[i] for k, _, _ in specs}) > 1]  # fmt: skip
        # is there a comparison to show? judged on what was measured (a skipped cuda cell
        # beside cpu cells is no second device to compare)
        measured = [k for k, _, c in specs if C.status(c) == "ok"]
        compared = [i for i in range(len(DIMS)) if DIMS[i][0] in ("machine", "backend", "device")
                    and len({k[i] for k in measured}) > 1]  # fmt: skip
        if len({k[-1] for k in measured}) < 2 and not compared:
            return None  # one variant on one machine/backend/device: the summary already is this table

        def machine_label(fp: str) -> str:
            host = next((h for h, fps in hosts.items() if fp in fps), "?")
            return host if len(hosts.get(host, ())) == 1 else f"{host} ({fp[:8]})"

        rows: dict[tuple[Any, ...], dict[str, tuple[dict[str, Any], dict[str, Any]]]] = {}
        for k, r, c in specs:
            rows.setdefault(k[:-1], {})[k[-1]] = (r, c)
        out_rows = []
        not_run: dict[str, list[str]] = {}  # reason -> labels of rows in which no cell ran, for that one reason
        for rkey in sorted(rows, key=lambda t: tuple(str(x) for x in t)):
            entries = rows[rkey]
            labels = [machine_label(rkey[0]) if i == 0 else ("" if rkey[i] == "None" else rkey[i]) for i in varying]
            base = entries.get(BASELINE)
            cells = [self._entry(v, entries.get(v), base) for v in variants]
            reasons = {e.get("reason") for e in cells if e["kind"] == "not-run"}
            if {e["kind"] for e in cells} - {"missing"} == {"not-run"} and len(reasons) == 1:
                not_run.setdefault(str(reasons.pop()), []).append(" / ".join(x for x in labels if x))
                continue
            out_rows.append({"labels": labels, "cells": cells})
        if not out_rows:
            return None
        # a label column that is the same in every row shown (cpu, once the skipped cuda
        # rows are a line of their own) says nothing: drop it (the model stays)
        keep = [j for j, i in enumerate(varying)
                if DIMS[i][0] == "workload" or len({r["labels"][j] for r in out_rows}) > 1]  # fmt: skip
        for r in out_rows:
            r["labels"] = [r["labels"][j] for j in keep]
        varying = [varying[j] for j in keep]
        return {"heads": [DIMS[i][1] for i in varying], "variants": variants, "rows": out_rows,
                "not_run": not_run, "machines": len(machines)}  # fmt: skip

    @staticmethod
    def _entry(variant: str, found: tuple[dict[str, Any], dict[str, Any]] | None,
               base: tuple[dict[str, Any], dict[str, Any]] | None) -> dict[str, Any]:
        """What one pivot cell shows, for both renderings."""
        if found is None:
            return {"kind": "missing"}
        run, cell = found
        st = C.status(cell)
        if st != "ok":
            return {"kind": "not-run", "status": st, "reason": C.reason_text(cell) or st, "id": C.cell_id(cell)}
        p50 = C.lat(cell, "p50")
        engine = C.metric(cell, "runtime_engine")
        out: dict[str, Any] = {"kind": "ok", "id": C.cell_id(cell), "p50": p50, "gate": _gate(cell),
                               "rule": _gate_rule(cell), "contended": C.contention(cell), "run": run.get("run_id"),
                               "engine": engine if isinstance(engine, str) and engine else None}  # fmt: skip
        if variant == BASELINE or base is None:
            out["baseline"] = variant == BASELINE
            return out
        brun, bcell = base
        bp50 = C.lat(bcell, "p50") if C.status(bcell) == "ok" else None
        if not p50 or not bp50:
            return out
        out["speedup"] = bp50 / p50
        out["base_p50"] = bp50
        out["same_run"] = brun is run
        out["contended"] = out["contended"] or (C.contention(bcell) and "the fp32 cell was contended")
        ci, bci = _p50_ci(cell), _p50_ci(bcell)
        out["overlap"] = bool(ci and bci and ci[0] <= bci[1] and bci[0] <= ci[1])
        return out

    # ------------------------------------------------------------------ rendering

    @staticmethod
    def _tip(e: dict[str, Any]) -> str:
        bits = [e["id"], f"p50 {F.ms_with_unit(e.get('p50')) or 'n/a'}"]
        if e.get("speedup"):
            bits.append(f"fp32 p50 {F.ms_with_unit(e['base_p50'])}"
                        + ("" if e.get("same_run") else " (fp32 cell from another run of this machine)"))
            if e.get("overlap"):
                bits.append("the 95% CIs of the two medians overlap: no clear difference")
        if e.get("engine"):
            bits.append(f"ran on {e['engine']} (metrics.runtime_engine): the speed-up includes the change of engine")
        if e.get("contended"):
            bits.append(f"contended: {e['contended']}")
        if e.get("rule"):
            bits.append(f"quality gate: {e['rule']}")
        return "; ".join(bits)

    def _html_entry(self, e: dict[str, Any]) -> Any:
        if e["kind"] == "missing":
            return M.dash("no such cell in these runs")
        if e["kind"] == "not-run":
            return M.badge(e["status"], f"st-{e['status']}" if e["status"] in ("skipped", "failed") else "st-unknown",
                           f"{e['id']}: {e['reason']}")  # fmt: skip
        parts: list[Any] = []
        if e.get("speedup"):
            s = e["speedup"]
            text = f"{s:.2f}×"
            if e.get("contended"):
                parts.append(M.span(text, None, "speed muted"))
                parts.append(M.badge("contended", "contended"))
            elif e.get("overlap") and abs(s - 1) < CLEAR:
                parts.append(M.span(f"≈ {text}", None, "speed same"))
            else:
                parts.append(M.span(_factor_words(s), None, "speed faster" if s > 1 else "speed slower"))
        elif e.get("baseline"):
            parts.append(M.span("baseline", None, "speed muted"))
        gate = e.get("gate")
        if gate is True:
            parts.append(M.badge("gate pass", "st-ok"))
        elif gate is False:
            parts.append(M.badge("gate fail", "st-failed"))
        parts.append(M.span(f"p50 {F.ms_with_unit(e.get('p50')) or 'n/a'}"
                            + (f" · on {e['engine']}" if e.get("engine") else ""), None, "muted small"))
        return M.span(join(parts), self._tip(e), "pivot-cell")

    def html(self, data: Any, ctx: ReportContext) -> Any:
        heads = list(data["heads"]) + list(data["variants"])
        rows = [[(lb, lb) for lb in r["labels"]] + [
            (self._html_entry(e), e.get("speedup") or (1.0 if e.get("baseline") else "")) for e in r["cells"]]
            for r in data["rows"]]  # fmt: skip
        lines = [render_string('<p class="all-na">{{ m.na(why) }} every variant of {{ labels }}: not run. '
                               'Reason: <span class="reason-text">{{ why }}</span></p>', why=why,
                               labels=", ".join(labels))
                 for why, labels in data["not_run"].items()]  # fmt: skip
        body = render_string(
            '<p class="muted">Speed-up: the fp32 cell\'s median step latency / the variant\'s, same run and spec '
            '(shown as "2.00× faster" or "2.00× slower", the words of <code>harness compare --across variant=fp32</code>; ≈: the two medians\' 95% CIs overlap). Gate: the quality gate against fp32 '
            '(accuracy on held-out data). Hover a cell for its id and numbers; the summary below has every cell.</p>'
            '{{ table }}{% for line in lines %}{{ line }}{% endfor %}',
            table=table(heads, rows, cls="grid sortable pivot"), lines=lines,
        )  # fmt: skip
        return body

    def markdown(self, data: Any, ctx: ReportContext) -> str:
        heads = list(data["heads"]) + list(data["variants"])
        out = [f"### {self.title}", "", "speed-up vs fp32 (p50; ≈ = 95% CIs overlap) · quality gate · p50", "",
               "| " + " | ".join(md_escape(h) for h in heads) + " |",
               "|" + "---|" * len(data["heads"]) + "--:|" * len(data["variants"])]  # fmt: skip
        for r in data["rows"]:
            vals = []
            for e in r["cells"]:
                if e["kind"] == "missing":
                    vals.append("\u2014")
                elif e["kind"] == "not-run":
                    vals.append(f"{md_escape(e['status'])}: {md_escape(F.shorten(e['reason'], 50))}")
                else:
                    bits = []
                    if e.get("speedup"):
                        s = f"{e['speedup']:.2f}x"
                        same = e.get("overlap") and abs(e["speedup"] - 1) < CLEAR
                        sp = e["speedup"]
                        bits.append(f"≈ {s}" if same else f"**{max(sp, 1 / sp):.2f}x** {'faster' if sp >= 1 else 'slower'}")
                        if e.get("contended"):
                            bits.append("(contended)")
                    elif e.get("baseline"):
                        bits.append("baseline")
                    if e.get("gate") is not None:
                        bits.append("gate pass" if e["gate"] else "gate **fail**")
                    bits.append(F.ms_with_unit(e.get("p50")) or "n/a")
                    if e.get("engine"):
                        bits.append(f"on {e['engine']}")
                    vals.append(" · ".join(bits))
            out.append("| " + " | ".join(md_escape(x) for x in r["labels"]) + " | " + " | ".join(vals) + " |")
        for why, labels in data["not_run"].items():
            out += ["", f"Nothing ran in {md_escape(', '.join(labels))}: {md_escape(why)}"]
        return "\n".join(out)
