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

import dataclasses
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
           "new_document", "contended", "os_error_cause", "worker_env", "run_in_worker", "CellRunner", "Launcher",
           "ProcessLauncher", "ZygoteLauncher"]


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
    restore = _terminate_as_interrupt()
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
                progress.update(task, description=f"[{k + 1}/{len(order)}] {spec.id}{label}")
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
                progress.console.print(_cell_line(record, label), highlight=False)
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


def _terminate_as_interrupt() -> Callable[[], None]:
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
            signal.signal(sig, old)

    return restore


def contended(cell: dict[str, Any]) -> bool:
    """Whether the cell (any of its processes) was measured under contention."""
    return bool(((cell.get("timing") or {}).get("contention") or {}).get("detected"))


def _cell_line(cell: dict[str, Any], label: str = "") -> str:
    from rich.markup import escape

    status = cell["status"]
    if status == "ok":
        lat = cell["metrics"]["latency_ms"]
        noisy = " [yellow](noisy)[/]" if cell["metrics"].get("noisy") else ""
        busy = ""
        if contended(cell):
            why = "; ".join((cell["timing"]["contention"].get("reasons") or [])[:2])
            busy = f" [bold red]CONTENDED[/] [red]({escape(why)[:160]})[/]" if why else " [bold red]CONTENDED[/]"
        return f"[green]ok[/]      {escape(cell['id'])}{escape(label)}  p50 {lat['p50']:.4g} ms{noisy}{busy}"
    color = "yellow" if status == "skipped" else "red"
    return (f"[{color}]{status:<7}[/] {escape(cell['id'])}{escape(label)}  "
            f"{escape(str(cell.get('reason') or ''))[:200]}")


def _progress(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )
