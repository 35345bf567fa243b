"""The page header: title and one row per run (id, tag, host, times, commit, cells)."""

from __future__ import annotations

from typing import Any

from harness.reports import cells as C
from harness.reports.sections.common import M, ReportContext, ReportSection
from harness.reports.templating import join, render


def _time(ts: Any) -> Any:
    return ts if ts else M.na("no timestamp recorded")


def _row(run: dict[str, Any]) -> dict[str, Any]:
    h = run.get("harness") or {}
    commit = h.get("git_commit")
    commit_html = M.code(str(commit)[:12], title=commit) if commit else M.na("not built from a git checkout")
    if h.get("git_dirty"):
        commit_html = join([commit_html, M.badge("dirty", "warn", "the working tree had uncommitted changes")])
    flags = []
    if run.get("complete") is False:
        flags.append(M.badge("incomplete", "warn", "the run stopped before finishing every cell"))
    if run.get("interrupted"):
        flags.append(M.badge("interrupted", "warn", "the run was interrupted (Ctrl-C or a signal)"))
    counts = C.status_counts(run)
    return {
        "run_id": run.get("run_id"), "flags": join(flags), "tag": run.get("tag") or "",
        "host": (run.get("environment") or {}).get("host"), "created": _time(run.get("created")),
        "finished": _time(run.get("finished")), "suite": (run.get("suite") or {}).get("name") or "",
        "version": h.get("version"), "commit": commit_html,
        "counts": ", ".join(f"{n} {s}" for s, n in counts.items() if n or s == "ok"),
    }  # fmt: skip


class OverviewSection(ReportSection):
    name = "overview"
    title = "Overview"
    order = 0
    wrap = False
    description = "the report's title and one line per run (id, tag, host, times, commit, cell counts)"

    def data(self, ctx: ReportContext) -> Any:
        return [_row(r) for r in ctx.runs]

    def html(self, data: Any, ctx: ReportContext) -> Any:
        now = ctx.now.strftime("%Y-%m-%dT%H:%M:%SZ")
        return render("overview.html.j2", title=ctx.title, runs=ctx.runs, rows=data, now=now)
