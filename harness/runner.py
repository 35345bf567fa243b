"""The runner: every cell in its own worker process, under a timeout.

Isolation is what makes the numbers trustworthy and the sweep robust: torch and
TensorFlow never share a process, one cell's allocator state or thread pools cannot
leak into the next, and a segfault, an OOM kill or a hang costs one cell (recorded as
``failed`` with the exit status and the tail of the worker's output), not the run.

The result file is rewritten atomically after every cell, so Ctrl-C (or a kill) keeps
what finished; an interrupted run is marked ``complete: false, interrupted: true`` and
lists the cells it did not run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness import repeats, results
from harness.environment import collect_environment, harness_info
from harness.suite import Settings, Suite, TaskSpec
from harness.worker import empty_cell

STDERR_TAIL_CHARS = 4000
DP_GRACE_S = 60.0  # extra time the runner allows a data-parallel cell to stop torchrun
WORKER_DEADLINE_GRACE_S = 30.0  # a worker's own deadline: the runner's limit plus this
_ROOT = Path(__file__).resolve().parent.parent


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _tail(path: Path, chars: int = STDERR_TAIL_CHARS) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - chars))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not hang
        pass


def _describe_exit(rc: int) -> str:
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        hint = " (killed: out of memory?)" if -rc == signal.SIGKILL else ""
        return f"worker died with {name}{hint}"
    return f"worker exited with status {rc} without writing a result"


def worker_env() -> dict[str, str]:
    """The worker's environment: ours, with this harness's source root importable."""
    env = dict(os.environ)
    parts = [str(_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_in_worker(spec: TaskSpec, settings: Settings, python: str = sys.executable) -> dict[str, Any]:
    """Run one cell in a fresh worker process and return its cell record (never raises,
    except KeyboardInterrupt, after killing the worker)."""
    with tempfile.TemporaryDirectory(prefix="dlh-cell-") as td:
        req, res, log = Path(td, "request.json"), Path(td, "result.json"), Path(td, "worker.log")
        req.write_text(json.dumps({"spec": spec.to_dict(), "settings": dataclasses.asdict(settings)}))
        t0 = time.perf_counter()
        env = worker_env()
        # the thread policy (docs/contention.md): OpenMP's default on a quiet machine;
        # idle threads sleep (OMP_WAIT_POLICY=PASSIVE) when other processes already
        # compete for the cores as the cell starts (sampled for 0.25 s, runner idle)
        from harness.contention import process_cpus, sample_other_cpu, thread_policy

        policy_env, policy = thread_policy(settings.threads, len(process_cpus()),
                                           other_cores=sample_other_cpu(0.25))
        env.update(policy_env)
        env["DLH_CELL_DIR"] = td  # scratch space removed by us even if the worker is killed
        # the worker dies with us and keeps its own deadline (harness/lifeline.py): a
        # grace after our limit, so that we normally record the timeout first
        env["DLH_PARENT_PID"] = str(os.getpid())
        # a data-parallel cell enforces its timeout itself (so torchrun can stop its
        # workers and the output is kept); this is the backstop
        limit = settings.timeout_s + (DP_GRACE_S if spec.world_size is not None else 0.0)
        env["DLH_DEADLINE_S"] = f"{limit + WORKER_DEADLINE_GRACE_S:g}"
        with open(log, "wb") as logf:
            proc = subprocess.Popen(
                [python, "-m", "harness.worker", str(req), str(res)],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # terminal Ctrl-C reaches the parent only
            )
            try:
                rc = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                cell = empty_cell(spec)
                cell["reason"] = f"timed out after {settings.timeout_s:g} s (raise it with --timeout)"
                cell["error"] = {
                    "type": "Timeout",
                    "message": cell["reason"],
                    "stderr_tail": _tail(log),
                    "returncode": None,
                }
                cell["duration_s"] = time.perf_counter() - t0
                return cell
            except BaseException:
                _kill_group(proc)
                raise
        tail = _tail(log)
        if res.exists():
            try:
                message = json.loads(res.read_text())
                cell = message["cell"]
            except (json.JSONDecodeError, KeyError) as e:
                cell = empty_cell(spec)
                cell["reason"] = f"worker wrote an unreadable result ({e})"
                cell["error"] = {"type": "BadWorkerMessage", "message": str(e), "stderr_tail": tail, "returncode": rc}
            else:
                if cell.get("status") == "failed" and cell.get("error") is not None:
                    cell["error"]["stderr_tail"] = tail
                    cell["error"]["returncode"] = rc
                if cell.get("status") == "ok" and isinstance(cell.get("runtime"), dict):
                    cell["runtime"]["thread_policy"] = policy
            return cell
        cell = empty_cell(spec)
        cell["reason"] = _describe_exit(rc)
        cell["error"] = {"type": "WorkerCrash", "message": cell["reason"], "stderr_tail": tail, "returncode": rc}
        cell["duration_s"] = time.perf_counter() - t0
        return cell


@dataclass
class RunOutcome:
    path: Path
    doc: dict[str, Any]
    interrupted: bool = False
    counts: dict[str, int] = field(default_factory=dict)


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
    cell_runner: CellRunner = run_in_worker,
    on_cell: Callable[[dict[str, Any]], None] | None = None,
) -> RunOutcome:
    """Run ``cells`` one by one, saving the result file after each."""
    from harness.calibrate import default_dirs, find_calibration
    from harness.distributed import attach_scaling, sweep_worker_threads
    from harness.flops import apply_calibration

    wt = sweep_worker_threads(cells, suite.settings) if suite.settings.worker_threads is None else None
    if wt is not None:  # every world size of the sweep gets the same threads per CPU worker (recorded)
        suite = dataclasses.replace(suite, settings=dataclasses.replace(suite.settings, worker_threads=wt))
    doc = new_document(suite, cells, tag)
    calibration = find_calibration(doc["environment"]["fingerprint"], default_dirs(out_dir))
    if calibration:  # measured peaks of this machine: MFU and the report's roofline
        doc["calibration"] = calibration
    path, _ = results.claim_path(out_dir, results.new_run_id(), doc)
    interrupted = False
    progress = _progress(show_progress)
    restore = _terminate_as_interrupt()
    planned = max(1, int(suite.settings.repeats))
    order = repeats.schedule(cells, planned, seed=suite.settings.seed)
    records: dict[int, list[dict[str, Any]]] = {}  # cell index -> its processes' records, in run order
    merged: dict[int, dict[str, Any]] = {}  # cell index -> its cell record (processes merged)
    if planned > 1:
        doc["measurement_order"] = {
            "method": "randomised multiple interleaved trials: each round runs every cell once in a shuffled "
                      "order, one fresh worker process per cell and round",
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
                record = cell_runner(spec, suite.settings)
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
                results.write_atomic(path, doc)
                progress.advance(task)
                progress.console.print(_cell_line(record, label), highlight=False)
                if on_cell:
                    on_cell(cell)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        restore()
    doc["finished"] = _now_iso()
    doc["complete"] = not interrupted
    doc["interrupted"] = interrupted
    results.write_atomic(path, doc)
    counts = {s: sum(1 for c in doc["cells"] if c["status"] == s) for s in results.STATUSES}
    return RunOutcome(path=path, doc=doc, interrupted=interrupted, counts=counts)


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
