"""The runner's console output fits the terminal: the line of each finished cell (root
cause of a failure first), the live progress line (never "ETA 0:00:…" again), and the
end-of-run summary of a busy machine (:func:`harness.launch.runner.busy_summary`)."""

from __future__ import annotations

import io
import re
import traceback
from typing import Any

import pytest
from rich.console import Console

from harness.launch.runner import _progress, busy_summary, cell_line, progress_layout

WIDTHS = (40, 60, 80, 120)
LONG_ID = "bert_base_uncased/torch/cpu/int8_dynamic/inference/bs32/base"


def _failed() -> dict[str, Any]:
    try:
        try:
            import dlh_no_such_module  # noqa: F401
        except ImportError as e:
            raise ModuleNotFoundError("Could not import module 'BertModel'. Are this object's requirements "
                                      "defined correctly?") from e
    except ImportError as e:
        return {"id": LONG_ID, "status": "failed", "reason": f"ModuleNotFoundError: {e}",
                "error": {"type": "ModuleNotFoundError", "message": str(e), "traceback": traceback.format_exc()}}
    raise AssertionError


def _contention(detected: bool, other: float = 1.6, load: float = 1.9, top: Any = None) -> dict[str, Any]:
    ev = {"ncpu": 4, "threads": 4, "free_cores": 0, "loadavg_1m": {"loop_start": load}, "loadavg_expected_max": 5.0,
          "windows": {"cell": {"other_cpu_cores": other, "cpu_contended": detected, "measurable": True}}}
    if top:
        ev["top_other_processes"] = top
    reasons = [f"cell: other processes used {other:.2f} cores of 4 while the cell ran 4 thread(s)"] if detected else []
    return {"detected": detected, "evidence": ev, "reasons": reasons}


def _ok(cid: str = LONG_ID, contended: bool = False, **kw: Any) -> dict[str, Any]:
    return {"id": cid, "status": "ok", "metrics": {"latency_ms": {"p50": 12.3456}, "noisy": True},
            "timing": {"contention": _contention(contended, **kw)}}


def _plain(cell: dict[str, Any], width: int | None, label: str = "") -> str:
    return cell_line(cell, label, width).plain


@pytest.mark.parametrize("width", WIDTHS)
def test_a_failed_cell_line_fits_and_leads_with_the_root_cause(width):
    line = _plain(_failed(), width)
    assert len(line) <= width
    assert line.startswith("failed  bert_base")
    detail = line.split("  ", 2)[2]
    assert detail.startswith("ModuleNotFoundError: No" if width >= 60 else "ModuleNotFoun")  # the root
    assert "outer:" not in line  # the outer error goes first
    if width >= 120:
        assert LONG_ID in line and "ModuleNotFoundError: No module named 'dlh_no" in line


def test_a_wide_terminal_gets_the_outer_error_shortened_inside_its_parentheses():
    line = _plain(_failed(), 160)
    assert len(line) == 160 and "'dlh_no_such_module' (outer: ModuleNotFoundError: C" in line
    assert line.endswith("\u2026)")
    assert _plain(_failed(), 250) == _plain(_failed(), None)  # room for all of it


def test_without_a_width_the_line_is_whole():
    line = _plain(_failed(), None)
    assert line == (f"failed  {LONG_ID}  ModuleNotFoundError: No module named 'dlh_no_such_module' (outer: "
                    "ModuleNotFoundError: Could not import module 'BertModel'. Are this object's requirements "
                    "defined correctly?)")


@pytest.mark.parametrize("width", WIDTHS)
def test_ok_and_skipped_lines_fit_and_drop_the_least_important_first(width):
    ok = _plain(_ok(contended=True), width, " (process 2/3)")
    assert len(ok) <= width and "p50 12.35 ms" in ok
    assert "(process 2/3)" in ok or width < 60
    if width >= 80:
        assert "CONTENDED" in ok
    skipped = _plain({"id": LONG_ID, "status": "skipped", "reason": "no CUDA device: " + "x" * 200}, width)
    assert len(skipped) <= width and skipped.startswith("skipped " + LONG_ID[:10])
    whole = _plain(_ok(contended=True), None)
    assert whole.endswith("(cell: other processes used 1.60 cores of 4 while the cell ran 4 thread(s))")


def _render_progress(width: int, cell: str = LONG_ID, label: str = " (process 2/3)") -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=True, color_system=None)
    progress = _progress(True, console=console)
    task = progress.add_task("starting", total=120)
    progress.update(task, description="ignored", counter="[7/120]", cell=cell, label=label)
    progress.advance(task, 6)
    console.print(progress.make_tasks_table(progress.tasks))
    return buf.getvalue().rstrip("\n")


@pytest.mark.parametrize("width", WIDTHS)
def test_the_progress_line_fits_the_terminal_and_never_cuts_the_eta(width):
    out = _render_progress(width)
    assert "\n" not in out and len(out) <= width, out
    assert out.lstrip("⠋ ").startswith("[7/120] bert_base")
    assert re.search(r"ETA (-:--:--|\d+:\d\d:\d\d)", out), out  # whole, never "ETA 0:00:…"
    plan = progress_layout(width, "[7/120]", LONG_ID, " (process 2/3)", 120)
    assert ("elapsed" in plan) == (width >= 60)
    assert ("bar" in plan) == (width >= 120)
    if width >= 120:
        assert LONG_ID + " (process 2/3)" in out and "━" in out or "╸" in out
    assert "6/120" in _render_progress(100, cell="mlp/torch/cpu/fp32/inference/bs8/tiny", label="")


def test_the_progress_line_follows_COLUMNS(monkeypatch):
    monkeypatch.setenv("COLUMNS", "50")
    progress = _progress(True, console=Console(file=io.StringIO(), force_terminal=True))
    assert progress.console.width == 50
    task = progress.add_task("x", total=3)
    progress.update(task, counter="[1/3]", cell="mlp/torch/cpu/fp32/inference/bs8/tiny", label="")
    buf = io.StringIO()
    Console(file=buf, width=50, force_terminal=True, color_system=None).print(progress.make_tasks_table(progress.tasks))
    assert len(buf.getvalue().rstrip("\n")) <= 50 and "ETA" in buf.getvalue()


def test_busy_summary_says_how_busy_who_and_what_to_do():
    top = [{"pid": 4242, "name": "pip", "cpu_cores": 1.4}, {"pid": 7, "name": "bash", "cpu_cores": 0.1}]
    doc = {"cells": [_ok("a", contended=True, other=1.6, top=top), _ok("b"), _failed()]}
    text = busy_summary(doc)
    assert text is not None and 2 <= len(text.splitlines()) <= 3
    assert text.startswith("contention: the machine was busy: 1 of 2 measured cell(s) were contended (a);")
    assert "other processes used up to 1.60 cores of 4 while the cells ran 4 thread(s)" in text
    assert "pip (pid 4242, 1.40 cores)" in text
    assert "--threads 2" in text and "--fail-on-contention" in text and "rerun" in text


def test_busy_summary_on_a_high_load_average_alone_and_on_a_quiet_machine():
    assert busy_summary({"cells": [_ok("a"), _failed()]}) is None
    assert busy_summary({"cells": []}) is None
    text = busy_summary({"cells": [_ok("a", load=7.5)]})
    assert text is not None and "load average reached 7.50 on 4 CPUs (the cells explain at most 5.00)" in text
    assert "numbers stand" in text


def test_busy_summary_reads_each_repeated_process():
    cell = _ok("a")
    cell["timing"]["contention"]["detected"] = True
    cell["repeats"] = [{"timing": {"contention": _contention(True, other=2.5, top=[
        {"pid": 1, "name": "stress", "cpu_cores": 2.5}])}}]
    text = busy_summary({"cells": [cell]})
    assert "2.50 cores" in text and "stress (pid 1" in text and "--threads 1" in text
