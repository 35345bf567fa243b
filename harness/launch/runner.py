"""The runner: the suite's cells one by one through a launcher, saving after each.

Each cell is started by a launcher (:mod:`harness.launch.base`): by default
:class:`~harness.launch.zygote.ZygoteLauncher`, every cell in its own process -- forked
from a per-backend zygote that imported the framework once, or a fresh worker process
where forking is unsafe or ``--launch process`` asks for it (docs/launch.md) -- under a
timeout, so a segfault, an OOM kill or a hang costs one cell (recorded as ``failed``
with the exit status and the tail of the worker's output), not the run. A cell that
cannot run here is skipped before any process starts. Any other launcher (or a function
with the same signature) can be passed as ``cell_runner``; the runner never looks
inside it.

The result file is rewritten atomically after every cell, so Ctrl-C (or a kill) keeps
what finished; an interrupted run is marked ``complete: false, interrupted: true`` and
lists the cells it did not run.

Write errors (a full disk, a read-only or deleted output directory, a quota, a file-size
limit: any ``OSError`` while writing) never cost a measured cell; see
:func:`output_dir_problem` (checked before the first cell) and :class:`ResultWriter`
(after every cell).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.core import repeats
from harness.core.cells import Settings, TaskSpec
from harness.core.environment import collect_environment, harness_info
from harness.core.suite import Suite
from harness.errors import UserError
from harness.launch.base import Launcher, os_error_cause, worker_env
from harness.launch.distributed import attach_scaling, sweep_worker_threads
from harness.launch.process import ProcessLauncher, run_in_worker
from harness.launch.zygote import ZygoteLauncher
from harness.store import results

# re-exported: older code imports these from the runner
__all__ = ["run_suite", "RunOutcome", "ResultWriter", "OutputNotWritable", "output_dir_problem", "fallback_dirs",
           "new_document", "contended", "busy_summary", "cell_line", "os_error_cause", "worker_env", "run_in_worker",
           "CellRunner", "Launcher", "ProcessLauncher", "ZygoteLauncher"]


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ----------------------------------------------------------------------------- writing results

FALLBACK_DIRNAME = "dl-harness-unsaved"  # under $TMPDIR (then ~/.cache): copies of results --out could not take
PROBE_BYTES = 4096  # what the pre-flight check writes: a result file is never smaller than this


class OutputNotWritable(UserError):
    """``--out`` cannot hold results, found before any cell ran (``harness run`` exits 2:
    nothing was measured yet, so the user's best move is another ``--out``)."""


def output_dir_problem(out_dir: Path) -> tuple[str, str] | None:
    """Why ``out_dir`` cannot take result files, as (what failed, the cause): e.g.
    ``("write results to", "Read-only file system")`` or ``("create output directory",
    "Not a directory")``; None when it can.

    Creates the directory, then creates, writes (``PROBE_BYTES``), fsyncs and removes a
    probe file in it: the only reliable test. ``os.access`` is not one -- it says yes
    to root on a read-only mount's directory and knows nothing of a full disk, a quota
    or ``ulimit -f`` -- and checking costs milliseconds, while finding out after the
    first cell may have cost an hour of GPU time.
    """
    write = "write results to"
    if out_dir.exists() and not out_dir.is_dir():
        return write, "it is a file, not a directory"
    _ignore_file_size_signal()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return "create output directory", os_error_cause(e)
    try:
        fd, probe = tempfile.mkstemp(prefix=".dlh-write-check-", suffix=".tmp", dir=out_dir)
    except OSError as e:
        return write, os_error_cause(e)
    try:
        try:
            os.write(fd, b"\0" * PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        return write, os_error_cause(e)
    finally:
        try:
            os.unlink(probe)
        except OSError:  # pragma: no cover - we just created it there
            pass
    return None


def _ignore_file_size_signal() -> None:
    """Make a write past ``ulimit -f`` fail with EFBIG (handled like any write error)
    instead of killing the run with SIGXFSZ. CPython already ignores SIGXFSZ at start-up;
    this keeps it so when the harness is embedded in a process that changed it."""
    import threading

    if hasattr(signal, "SIGXFSZ") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _remove_temp_files(path: Path) -> None:
    """Remove the temp files an interrupted atomic write of ``path`` may have left
    (``.<name>.*.tmp`` beside it, as :func:`harness.core.fsutil.atomic_write_with` names
    them): ``write_atomic`` leaves its temp file behind when the rename fails, and a
    half-written temp file on a full disk is exactly what must not stay there."""
    try:
        leftovers = list(path.parent.glob(f".{path.name}.*.tmp"))
    except OSError:
        return
    for tmp in leftovers:
        try:
            tmp.unlink()
        except OSError:
            pass


def fallback_dirs(out_dir: Path) -> list[Path]:
    """Where a copy of the results goes when ``out_dir`` cannot take them: a
    ``dl-harness-unsaved`` folder in the temp directory (``$TMPDIR``), then in
    ``~/.cache``; never ``out_dir`` itself. The temp directory is usually another file
    system than a project's results folder, and it is where users look for leftovers;
    the home cache is the next best when ``/tmp`` is the full one."""
    candidates = []
    try:
        candidates.append(Path(tempfile.gettempdir()) / FALLBACK_DIRNAME)
    except OSError:  # "No usable temporary directory found": all of them are full or read-only
        pass
    try:
        candidates.append(Path.home() / ".cache" / FALLBACK_DIRNAME)
    except (RuntimeError, KeyError):  # pragma: no cover - no home directory
        pass
    try:
        here = out_dir.resolve()
    except OSError:  # pragma: no cover
        here = out_dir
    return [d for d in dict.fromkeys(candidates) if d != here]


class ResultWriter:
    """Keeps the run's result file current after every cell, surviving write errors.

    Policy (issue 13, item 6), and why:

    * The whole document stays in memory, so a failed write loses nothing; the file at
      ``path`` keeps its previous complete content (the write is atomic: temp file +
      rename), and any temp file the failed write left is removed.
    * A deleted output directory is recreated and the write retried at once (the run
      says so): the likely cause is a clean-up job or a user, and the directory is ours.
      A directory *replaced* by something else is not touched -- that is someone else's
      file.
    * Otherwise the sweep goes on and the write is retried once after every cell: a full
      disk or a quota may clear (a log rotated, a user freeing space), and stopping would
      throw away hours of measuring that the next write may well save. A read-only file
      system rarely heals, but one retry per cell costs microseconds.
    * While the file at ``path`` is behind, the complete document is also written to a
      fallback copy (:func:`fallback_dirs`), so measured cells survive even a later kill;
      once ``path`` is current again the copy is removed.
    * Each event is one line through ``say`` (first failure, a changed cause, the
      directory recreated, recovery); repeated failures with the same cause are not
      repeated, so a 200-cell sweep on a full disk does not print 200 warnings.
    """

    def __init__(self, path: Path, say: Callable[[str], None]) -> None:
        self.path = path
        self.say = say
        self.error: BaseException | None = None  # the last failed write of path; None while it is current
        self.saved_cells = 0  # cells in the file at path (as of its last successful write)
        self.fallback: Path | None = None  # the complete copy while path is behind
        self.fallback_error: str | None = None  # why no copy could be written (when none could)
        self._said: str | None = None  # the cause last reported (not repeated)

    @property
    def current(self) -> bool:
        """True when the file at ``path`` holds the last document saved."""
        return self.error is None

    def save(self, doc: dict[str, Any], final: bool = False) -> bool:
        """Write ``doc`` to ``path`` (and to the fallback while that fails). Returns True
        when ``path`` now holds ``doc``. Never raises ``OSError``."""
        n = len(doc.get("cells") or [])
        try:
            self._write(doc)
        except (OSError, results.ResultFileError) as e:
            _remove_temp_files(self.path)
            self.error = e
            self._save_copy(doc)
            cause = os_error_cause(e)
            if not final and cause != self._said:
                self._said = cause
                where = (f"; they are also in {self.fallback}" if self.fallback
                         else f"; no copy could be saved elsewhere either ({self.fallback_error})")
                self.say(f"warning: could not write results to {self.path}: {cause}; the {n} finished "
                         f"cell(s) are kept in memory{where}; retrying after each cell")
            return False
        if self.error is not None:
            copy = self.fallback
            self._drop_copy()
            self.say(f"results written to {self.path} again (all {n} finished cell(s))"
                     + (f"; removed the copy {copy}" if copy else ""))
        self.error, self._said, self.saved_cells = None, None, n
        return True

    def _write(self, doc: dict[str, Any]) -> None:
        directory = self.path.parent
        try:
            results.write_atomic(self.path, doc)
            return
        except OSError:
            if os.path.lexists(directory):
                raise
        _remove_temp_files(self.path)
        directory.mkdir(parents=True, exist_ok=True)  # an OSError here is the write's error
        self.saved_cells = 0  # what was there went with the directory
        self.say(f"warning: output directory {directory} was deleted during the run; recreated it")
        results.write_atomic(self.path, doc)

    def _save_copy(self, doc: dict[str, Any]) -> None:
        """Write the complete ``doc`` to the fallback copy (created on first need in the
        first of :func:`fallback_dirs` that takes it)."""
        if self.fallback is not None:
            try:
                results.write_atomic(self.fallback, doc)
                return
            except OSError as e:
                _remove_temp_files(self.fallback)
                self.fallback_error = f"{self.fallback}: {os_error_cause(e)}"
                self.fallback = None  # it holds an older document: look again
        errors = []
        for d in fallback_dirs(self.path.parent):
            try:
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
                # a copy of the document: claim_path sets run_id (a new one on a clash)
                self.fallback, _ = results.claim_path(d, str(doc.get("run_id") or results.new_run_id()), dict(doc))
                self.fallback_error = None
                return
            except (OSError, results.ResultFileError) as e:
                _remove_temp_files(d / f"{doc.get('run_id')}.json")
                errors.append(f"{d}: {os_error_cause(e)}")
        self.fallback_error = "; ".join(errors) or "no fallback location"

    def _drop_copy(self) -> None:
        if self.fallback is not None:
            try:
                self.fallback.unlink()
            except OSError:
                pass
        self.fallback = None

    def final_error(self, n_cells: int) -> str | None:
        """The one-line message for an unsaved run (None when ``path`` is current): the
        path and cause, how many cells the file there holds, and where the complete
        copy is (or why there is none)."""
        if self.error is None:
            return None
        on_disk = self.saved_cells if self.path.is_file() else 0
        kept = (f"{on_disk} of the {n_cells} finished cell(s) are saved there" if on_disk
                else f"none of the {n_cells} finished cell(s) are saved there")
        copy = (f"all {n_cells} are in {self.fallback}" if self.fallback
                else f"no copy could be saved elsewhere either ({self.fallback_error}): the unsaved cells are lost")
        return f"results could not be fully written to {self.path}: {os_error_cause(self.error)}; {kept}; {copy}"


@dataclass
class RunOutcome:
    """What ``run_suite`` did. ``path`` is the run's result file; when it could not be
    brought up to date, ``write_error`` is the one-line reason (path, cause, what is
    saved where) and ``fallback`` the complete copy, if one could be written."""

    path: Path
    doc: dict[str, Any]
    interrupted: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    write_error: str | None = None
    fallback: Path | None = None

    @property
    def saved_path(self) -> Path | None:
        """The file holding every finished cell: ``path``, else the fallback copy, else None."""
        if self.write_error is None:
            return self.path
        return self.fallback


CellRunner = Callable[[TaskSpec, Settings], dict[str, Any]]


def new_document(suite: Suite, cells: list[TaskSpec], tag: str | None) -> dict[str, Any]:
    return {
        "schema_version": results.SCHEMA_VERSION,
        "run_id": "",
        "created": _now_iso(),
        "finished": None,
        "complete": False,
        "interrupted": False,
        "tag": tag,
        "harness": harness_info(),
        "environment": collect_environment(),
        "suite": suite.to_record(len(cells)),
        "cells": [],
        "not_run": [c.id for c in cells],
    }


def run_suite(
    suite: Suite,
    cells: list[TaskSpec],
    out_dir: Path,
    tag: str | None = None,
    show_progress: bool = True,
    cell_runner: CellRunner | None = None,
    on_cell: Callable[[dict[str, Any]], None] | None = None,
) -> RunOutcome:
    """Run ``cells`` one by one, saving the result file after each.

    ``cell_runner`` starts each cell: a :class:`~harness.launch.base.Launcher` or any
    ``(spec, settings) -> cell record`` function (default: a
    :class:`~harness.launch.zygote.ZygoteLauncher`, as ``suite.settings.launch`` says;
    its zygotes are stopped when the run ends).

    Raises :class:`OutputNotWritable` when the result file cannot even be created (before
    any cell runs). Later write errors never raise: see :class:`ResultWriter` and
    ``RunOutcome.write_error``."""
    from harness.core.calibrate import default_dirs, find_calibration
    from harness.core.flops import apply_calibration


    wt = sweep_worker_threads(cells, suite.settings) if suite.settings.worker_threads is None else None
    if wt is not None:  # every world size of the sweep gets the same threads per CPU worker (recorded)
        suite = dataclasses.replace(suite, settings=dataclasses.replace(suite.settings, worker_threads=wt))
    doc = new_document(suite, cells, tag)
    calibration = find_calibration(doc["environment"]["fingerprint"], default_dirs(out_dir))
    if calibration:  # measured peaks of this machine: MFU and the report's roofline
        doc["calibration"] = calibration
    _ignore_file_size_signal()
    try:
        path, _ = results.claim_path(out_dir, results.new_run_id(), doc)
    except (OSError, results.ResultFileError) as e:  # nothing measured yet: the user picks another --out
        raise OutputNotWritable(f"cannot write results to {out_dir}: {os_error_cause(e)}; choose another --out") from None
    interrupted = False
    progress = _progress(show_progress)

    def say(line: str) -> None:
        progress.console.print(line, markup=False, highlight=False, soft_wrap=True)

    writer = ResultWriter(path, say=say)
    own = ZygoteLauncher(say=say) if cell_runner is None else None  # ours to stop at the end
    if own is not None:
        own.plan(cells, max(1, int(suite.settings.repeats)))
    launch: CellRunner = cell_runner if cell_runner is not None else own  # type: ignore[assignment]
    restore = terminate_as_interrupt()
    planned = max(1, int(suite.settings.repeats))
    order = repeats.schedule(cells, planned, seed=suite.settings.seed)
    records: dict[int, list[dict[str, Any]]] = {}  # cell index -> its processes' records, in run order
    merged: dict[int, dict[str, Any]] = {}  # cell index -> its cell record (processes merged)
    if planned > 1:
        doc["measurement_order"] = {
            "method": "randomised multiple interleaved trials: each round runs every cell once in a shuffled "
                      "order, one worker process per cell and round (forked from a zygote or fresh: "
                      "cells[].runtime.launch)",
            "rounds": planned, "seed": suite.settings.seed,
        }
    stopped: set[int] = set()  # cells not repeated further (skipped, or a process failed)
    try:
        with progress:
            task = progress.add_task("starting", total=len(order))
            for k, (i, r) in enumerate(order):
                spec = cells[i]
                if i in stopped:
                    progress.advance(task)
                    continue
                label = f" (process {r + 1}/{planned})" if planned > 1 else ""
                progress.update(task, description=f"[{k + 1}/{len(order)}] {spec.id}{label}",
                                counter=f"[{k + 1}/{len(order)}]", cell=spec.id, label=label)
                record = launch(spec, suite.settings)
                records.setdefault(i, []).append(record)
                if record.get("status") != "ok" and not record.get("recorded_elsewhere"):
                    stopped.add(i)  # a skip or a failure is not repeated
                cell = repeats.merge(records[i], planned, spec.global_batch_size)
                apply_calibration(cell, calibration)
                for entry in cell.get("repeats") or []:  # each process's own MFU, as compare reads them
                    apply_calibration({**entry, "spec": cell["spec"]}, calibration)
                merged[i] = cell
                doc["cells"] = [merged[j] for j in sorted(merged)]  # suite order, whatever ran first
                if spec.world_size is not None:
                    attach_scaling(doc["cells"])
                doc["not_run"] = [c.id for j, c in enumerate(cells) if j not in merged]
                if planned > 1:  # cells with fewer processes than planned so far
                    doc["incomplete"] = [cells[j].id for j in sorted(merged) if j not in stopped
                                         and len(records[j]) < planned]
                writer.save(doc)
                progress.advance(task)
                con = progress.console
                # a terminal gets a line that fits its width; a log gets the whole line, unwrapped
                con.print(cell_line(record, label, con.width if con.is_terminal else None), soft_wrap=True)
                if on_cell:
                    on_cell(cell)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if own is not None:
            own.close()
        restore()
    doc["finished"] = _now_iso()
    doc["complete"] = not interrupted
    doc["interrupted"] = interrupted
    writer.save(doc, final=True)
    counts = {s: sum(1 for c in doc["cells"] if c["status"] == s) for s in results.STATUSES}
    return RunOutcome(path=path, doc=doc, interrupted=interrupted, counts=counts,
                      write_error=writer.final_error(len(doc["cells"])), fallback=writer.fallback)


def terminate_as_interrupt() -> Callable[[], None]:
    """SIGTERM (a cancelled CI job, ``kill``) and SIGHUP (a closed terminal or SSH
    session) stop the run like Ctrl-C: the running worker's process group is killed and
    the finished cells are kept. Returns the function restoring the previous handlers
    (a no-op outside the main thread)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    sigs = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {sig: signal.signal(sig, handler) for sig in sigs}

    def restore() -> None:
        for sig, old in previous.items():
            with contextlib.suppress(Exception):  # e.g. a handler installed by a library (Ray) in between
                signal.signal(sig, old)

    return restore


def contended(cell: dict[str, Any]) -> bool:
    """Whether the cell (any of its processes) was measured under contention."""
    return bool(((cell.get("timing") or {}).get("contention") or {}).get("detected"))


# ----------------------------------------------------------------------------- the console line

STATUS_WIDTH = 8  # "skipped " / "failed  " / "ok      "
MIN_ID = 24  # the cell id is shortened no further than this (then the detail is)
MIN_DETAIL = 32  # ... while the detail gets at least this much
MIN_FIRST = 14  # cells the first detail ("p50 0.02537 ms") keeps in a narrow terminal
MIN_OUTER = 16  # the outer error is shown only with at least this many of its characters
LOG_LIMIT = 300  # characters of each part in a line for a log (no width to fit)


def _short(text: str, width: int) -> str:
    """``text`` cut to ``width`` terminal cells, an ellipsis marking the cut."""
    from rich.cells import cell_len, set_cell_size

    if cell_len(text) <= width:
        return text
    if width <= 1:
        return "\u2026"[:max(width, 0)]
    return set_cell_size(text, width - 1).rstrip() + "\u2026"


Part = tuple[str, str, str, int]  # (prefix, body, suffix, fewest body characters worth showing)


def _fit(head: str, label: str, parts: list[Part], width: int | None) -> tuple[str, list[str]]:
    """Fit ``status + head + "  " + parts`` into ``width`` cells. Parts go from the last:
    each is kept whole, or with its body shortened (prefix and suffix kept) when at least
    its fewest characters fit, or dropped with all after it; the first part is always
    shown. When even the first has less than :data:`MIN_DETAIL` cells left, the head (the
    cell id; its ``label`` is kept) gives way first, down to :data:`MIN_ID`. ``width`` None (a log): nothing is
    dropped, each body capped at :data:`LOG_LIMIT`."""
    from rich.cells import cell_len

    if width is None:
        return head + label, [f"{pre}{_short(body, LOG_LIMIT)}{post}" for pre, body, post, _ in parts]
    room = width - STATUS_WIDTH - 2
    need = sum(cell_len(pre + body + post) for pre, body, post, _ in parts)
    if cell_len(head + label) + need > room:
        floor = min(MIN_ID, room - MIN_FIRST)  # a narrow terminal: the detail keeps MIN_FIRST cells
        keep = max(floor, room - min(MIN_DETAIL, need)) - cell_len(label)
        head = _short(head, max(keep, 4)) if cell_len(head) > keep else head
    head += label
    room -= cell_len(head)
    kept: list[str] = []
    for pre, body, post, least in parts:
        whole = pre + body + post
        if cell_len(whole) <= room:
            kept.append(whole)
            room -= cell_len(whole)
            continue
        frame = cell_len(pre + post)
        if room - frame >= least or not kept:
            kept.append(f"{pre}{_short(body, max(room - frame, 1))}{post}")
        break
    return head, kept


def cell_line(cell: dict[str, Any], label: str = "", width: int | None = None) -> Any:
    """The console line of a finished cell (a :class:`rich.text.Text`): status, id, and
    the p50 (ok), the reason (skipped) or the root cause of a failure followed by the
    outer error (``failed  ID  ImportError: ... (outer: RuntimeError: ...)``; see
    :mod:`harness.core.rootcause`). With ``width`` (a terminal) the line fits it: the
    least important part goes first (the contention reasons, then the outer error),
    then the cell id is shortened. Without (a log), every part is there (each capped at
    :data:`LOG_LIMIT` characters)."""
    from rich.text import Text

    from harness.core.rootcause import root_cause

    status = str(cell.get("status"))
    head = str(cell.get("id"))
    line = Text()
    styles: list[str | None]
    if status == "ok":
        metrics = cell.get("metrics") or {}
        lat = (metrics.get("latency_ms") or {}).get("p50")
        parts: list[Part] = [("p50 ", f"{lat:.4g}" if isinstance(lat, (int, float)) else "n/a", " ms", 99)]
        styles = [None]
        if metrics.get("noisy"):
            parts.append((" ", "(noisy)", "", 99))
            styles.append("yellow")
        if contended(cell):
            parts.append((" ", "CONTENDED", "", 99))
            styles.append("bold red")
            why = "; ".join((((cell.get("timing") or {}).get("contention") or {}).get("reasons") or [])[:2])
            if why:
                parts.append((" (", why, ")", 20))
                styles.append("red")
        color = "green"
    elif status == "failed":
        rc = root_cause(cell)
        parts = [("", rc.root if rc else str(cell.get("reason") or ""), "", 1)]
        styles = [None]
        if rc is not None and rc.outer:
            parts.append((" (outer: ", rc.outer, ")", MIN_OUTER))
            styles.append("dim")
        color = "red"
    else:
        parts, styles, color = [("", str(cell.get("reason") or ""), "", 1)], [None], "yellow"
    head, kept = _fit(head, label, parts, width)
    line.append(status.ljust(STATUS_WIDTH - 1) + " ", style=color).append(head).append("  ")
    for part, style in zip(kept, styles):
        line.append(part, style=style)
    if width is not None and line.cell_len > width:  # narrower than any layout: cut the end
        line.truncate(width, overflow="ellipsis")
    return line


# ----------------------------------------------------------------------------- a busy machine


def busy_summary(doc: dict[str, Any]) -> str | None:
    """What to tell the user at the end of a run measured on a busy machine (a few lines
    of plain text), or None when nothing says it was busy.

    Busy means: some cell was contended (other processes took the cores it ran on,
    :mod:`harness.core.contention`: decisive), or the 1-minute load average rose above
    what the cells themselves explain (their threads + the cores they leave free + 1:
    ``evidence.loadavg_expected_max``; supporting only -- it lags a minute and counts
    every CPU). The text names how busy (others' cores, load against CPUs), who (the
    busiest other processes the probes saw), which cells, and what to do about it."""
    cells = [c for c in doc.get("cells") or [] if isinstance(c, dict)]
    measured = [c for c in cells if c.get("status") == "ok"]
    hit = [c for c in measured if contended(c)]
    others, load_peak, load_cap, ncpu, threads = 0.0, 0.0, None, None, set()
    procs: dict[tuple[Any, Any], float] = {}
    for c in measured:
        for ev in _evidences(c):
            ncpu = ev.get("ncpu") if isinstance(ev.get("ncpu"), int) else ncpu
            t = ev.get("threads") if isinstance(ev.get("threads"), int) else ev.get("ncpu")
            if isinstance(t, int):
                threads.add(t)
            loads = [v for v in (ev.get("loadavg_1m") or {}).values() if isinstance(v, (int, float))]
            cap = ev.get("loadavg_expected_max")
            if loads and isinstance(cap, (int, float)) and max(loads) > cap and max(loads) > load_peak:
                load_peak, load_cap = max(loads), cap
            if contended(c):
                for w in (ev.get("windows") or {}).values():
                    if isinstance(w, dict) and (w.get("cpu_contended") or w.get("pressure_contended")):
                        others = max(others, float(w.get("other_cpu_cores") or 0.0))
                for r in ev.get("top_other_processes") or []:
                    if isinstance(r, dict) and isinstance(r.get("cpu_cores"), (int, float)):
                        key = (r.get("name"), r.get("pid"))
                        procs[key] = max(procs.get(key, 0.0), float(r["cpu_cores"]))
    if not hit and load_cap is None:
        return None
    on = f" of {ncpu}" if ncpu else ""
    uses = f"{'/'.join(str(t) for t in sorted(threads))} thread(s)" if threads else "their threads"
    facts = []
    if others:
        facts.append(f"other processes used up to {others:.2f} cores{on} while the cells ran {uses}")
    if load_cap is not None:
        facts.append(f"the 1-min load average reached {load_peak:.2f}{' on ' + str(ncpu) + ' CPUs' if ncpu else ''} "
                     f"(the cells explain at most {load_cap:.2f})")
    top = sorted(procs.items(), key=lambda kv: -kv[1])[:3]
    if top:
        facts.append("busiest: " + ", ".join(f"{n} (pid {p}, {v:.2f} cores)" for (n, p), v in top))
    lines = []
    if hit:
        ids = ", ".join(c.get("id", "?") for c in hit[:3]) + (f" and {len(hit) - 3} more" if len(hit) > 3 else "")
        lines.append(f"contention: the machine was busy: {len(hit)} of {len(measured)} measured cell(s) were "
                     f"contended ({ids}); "
                     + "; ".join(facts) + ". Their numbers describe the busy machine, not the code, and compare "
                     "draws no verdict from them.")
        free = max(1, int((ncpu or 1) - math.ceil(others))) if others else None
        # --threads is advice only when it would lower what the cells used (a run with
        # --threads 1 already left every core it could)
        fewer = free and ncpu and free < ncpu and (not threads or free < min(threads))
        lines.append("what to do: stop or wait for " + ("those processes" if top else "the other work")
                     + ", then rerun the same command"
                     + (f"; or leave them cores with --threads {free}" if fewer else "")
                     + "; in CI add --fail-on-contention so a busy runner fails instead of recording these numbers.")
    else:
        lines.append("busy machine: " + "; ".join(facts) + ". No cell's own measurement windows showed other "
                     "processes taking its cores, so the numbers stand, but the machine was not quiet.")
        lines.append("what to do: if the numbers look slow, check what else runs (top) and rerun on a quiet machine.")
    return "\n".join(lines)


def _evidences(cell: dict[str, Any]) -> list[dict[str, Any]]:
    """The contention evidence of the cell and of each of its processes (``--repeats``)."""
    out = []
    for rec in [cell, *(cell.get("repeats") or [])]:
        ev = (((rec.get("timing") or {}) if isinstance(rec, dict) else {}).get("contention") or {}).get("evidence")
        if isinstance(ev, dict):
            out.append(ev)
    return out


# ----------------------------------------------------------------------------- the progress line

ETA_WIDTH = len("ETA 0:00:00")
ELAPSED_WIDTH = len("0:00:00")
SPINNER_WIDTH = 1
MIN_BAR, MAX_BAR = 10, 40
MIN_CELL = 16  # characters of the cell id kept before the other fields are dropped


def progress_layout(width: int, counter: str, cell: str, label: str, total: int) -> dict[str, int]:
    """Which fields of the progress line fit ``width`` terminal cells, and how wide each
    is (``{"spinner", "counter_cell", "bar", "mofn", "elapsed", "eta"}``; absent: dropped).

    Priority, highest first: the counter ``[k/N]`` and the first :data:`MIN_CELL`
    characters of the cell id, the ETA, the spinner, the elapsed time, the rest of the
    cell id (and the process label), the bar (10 to 40 wide), and ``k/N`` completed.
    A field is added only when it fits whole (the cell id may be cut), so the line never
    ends in a cut-off ``ETA 0:00:\u2026`` again. Fields are separated by one space."""
    from rich.cells import cell_len

    desc_full = cell_len(f"{counter} {cell}{label}".strip())
    desc_min = min(desc_full, cell_len(counter) + 1 + MIN_CELL)
    mofn = 2 * len(str(total)) + 1
    plan: dict[str, int] = {}
    used = min(desc_min, width)
    plan["counter_cell"] = used
    for name, w in (("eta", ETA_WIDTH), ("spinner", SPINNER_WIDTH), ("elapsed", ELAPSED_WIDTH),
                    ("rest", desc_full - desc_min), ("bar", MIN_BAR), ("mofn", mofn)):
        if name == "rest":
            extra = min(w, max(0, width - used))
            plan["counter_cell"] += extra
            used += extra
            if extra < w:
                break
            continue
        if used + 1 + w <= width:
            plan[name] = w
            used += 1 + w
    if "bar" in plan:
        plan["bar"] = min(MAX_BAR, MIN_BAR + width - used)
    return plan


def _describe(task: Any, width: int) -> str:
    """The counter, cell id and label of ``task`` in ``width`` cells (the id is cut)."""
    from rich.cells import cell_len

    f = task.fields
    if "cell" not in f:
        return _short(str(task.description), width)
    counter, label = str(f.get("counter") or ""), str(f.get("label") or "")
    room = width - cell_len(counter) - 1 - cell_len(label)
    if room < 12 and label.startswith(" (process "):  # " (process 2/3)" -> " (p2/3)"
        label = " (p" + label[len(" (process "):]
        room = width - cell_len(counter) - 1 - cell_len(label)
    if room < 4:  # too narrow for the label as well
        return _short(f"{counter} {f['cell']}", width)
    return f"{counter} {_short(str(f['cell']), room)}{label}"


def _progress(enabled: bool, console: Any = None) -> Any:
    """The live progress line on stderr, fitted to the terminal's width at every refresh
    (:func:`progress_layout`)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TimeElapsedColumn, \
        TimeRemainingColumn
    from rich.table import Table
    from rich.text import Text

    class FittingProgress(Progress):
        bar, spinner, mofn = BarColumn(), SpinnerColumn(), MofNCompleteColumn()
        elapsed, remaining = TimeElapsedColumn(), TimeRemainingColumn()

        def make_tasks_table(self, tasks: Any) -> Table:
            table = Table.grid(padding=(0, 1))
            rows = []
            for task in tasks:
                if not task.visible:
                    continue
                f = task.fields
                plan = progress_layout(self.console.width, str(f.get("counter") or ""),
                                       str(f.get("cell") or task.description), str(f.get("label") or ""),
                                       int(task.total or 0))
                row: list[Any] = []
                if "spinner" in plan:
                    row.append(self.spinner(task))
                row.append(Text(_describe(task, plan["counter_cell"]), no_wrap=True, overflow="ellipsis"))
                if "bar" in plan:
                    self.bar.bar_width = plan["bar"]
                    row.append(self.bar(task))
                if "mofn" in plan:
                    row.append(self.mofn(task))
                if "elapsed" in plan:
                    row.append(self.elapsed(task))
                if "eta" in plan:
                    row.append(Text.assemble("ETA ", self.remaining(task)))
                rows.append(row)
            for row in rows:
                table.add_row(*row)
            return table

    return FittingProgress(console=console or Console(stderr=True), disable=not enabled, transient=False)
