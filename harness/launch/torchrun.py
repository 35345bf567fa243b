"""The torchrun launcher: a data-parallel torch cell as one torchrun job, and the entry
point of each of its workers.

:class:`TorchrunLauncher` runs ``python -m torch.distributed.run ... -m
harness.launch.torchrun REQUEST.json OUT_DIR`` (:func:`torchrun_command`), enforces the
cell's timeout itself (so torchrun can stop its workers and the output is kept), and
records rank 0's cell, or the first failing worker's (:func:`pick_cell`). It normally
runs inside the cell's fresh worker process (:mod:`harness.launch.process`), whose
output tail and lifeline then cover torchrun too.

Each torchrun worker runs :func:`rank_main`: it joins the process group (gloo on CPU,
NCCL on CUDA) and measures the cell (:func:`harness.launch.measure.run_cell`) with a
:class:`~harness.launch.distributed.TorchDDPContext`, then writes its record to
``OUT_DIR/rank<r>.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.core.cells import Settings, TaskSpec, empty_cell, failed_cell, read_request, write_message, write_request
from harness.launch.base import Launcher, worker_env
from harness.launch.distributed import TorchDDPContext, nproc_per_node, threads_per_worker

TORCHRUN_GRACE_S = 15.0  # time torchrun gets to stop its workers before SIGKILL
RANK_MODULE = "harness.launch.torchrun"  # what each torchrun worker runs (rank_main)


def torchrun_command(spec: TaskSpec, settings: Settings, request: Path, out_dir: Path,
                     python: str = sys.executable) -> list[str]:
    """The torchrun command line of a data-parallel torch cell."""
    cmd = [python, "-m", "torch.distributed.run", f"--nproc-per-node={nproc_per_node(spec, settings)}",
           "--max-restarts=0"]
    if settings.nnodes == 1 and not settings.rdzv_endpoint:
        cmd += ["--standalone"]
    else:
        # one rendezvous per cell, even with a user-given id: a node that skipped a cell
        # must never join another cell's job
        digest = hashlib.sha1(spec.id.encode()).hexdigest()[:12]
        rdzv_id = f"{settings.rdzv_id or 'dlh'}-{digest}"
        cmd += [f"--nnodes={settings.nnodes}", f"--rdzv-backend={settings.rdzv_backend}",
                f"--rdzv-endpoint={settings.rdzv_endpoint}", f"--rdzv-id={rdzv_id}"]
    return cmd + ["-m", RANK_MODULE, str(request), str(out_dir)]


class TorchrunLauncher(Launcher):
    """A data-parallel torch cell (``world_size``) as one torchrun job."""

    name = "torchrun"

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python

    def launch(self, spec: TaskSpec, settings: Settings) -> dict[str, Any]:
        """Run the cell's torchrun job and return the cell record to keep."""
        t0 = time.perf_counter()
        # inside the runner's cell directory when there is one: the runner removes it even
        # when it has to kill this process (Ctrl-C, timeout)
        base = os.environ.get("DLH_CELL_DIR")
        with tempfile.TemporaryDirectory(prefix="dlh-ddp-", dir=base if base and os.path.isdir(base) else None) as td:
            req, out = Path(td, "request.json"), Path(td, "ranks")
            out.mkdir()
            write_request(req, spec, settings)
            rc, timed_out = self._run(spec, settings, torchrun_command(spec, settings, req, out, self.python))
            ranks = _read_ranks(out)
        tail = ""  # filled in by the process launcher from this worker's output
        cell = pick_cell(spec, settings, ranks, rc, tail, timed_out)
        cell["duration_s"] = time.perf_counter() - t0
        return cell

    @staticmethod
    def _run(spec: TaskSpec, settings: Settings, cmd: list[str]) -> tuple[int, bool]:
        """Run torchrun under the cell's timeout; returns (exit status, timed out)."""
        env = worker_env()
        env["OMP_NUM_THREADS"] = str(threads_per_worker(spec, settings))
        env.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        # the cell's timeout is enforced here (the process launcher waits longer for
        # data-parallel cells), so torchrun can stop its workers (they run in their own
        # sessions) and the cell keeps the output tail. torchrun's output (the workers'
        # tracebacks included) goes to this process's own output, whose tail the
        # process launcher keeps with a failed cell
        sys.stdout.flush()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env)
        try:
            return proc.wait(timeout=settings.timeout_s), False
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout=TORCHRUN_GRACE_S), True
            except subprocess.TimeoutExpired:
                proc.kill()
                return proc.wait(), True


def _read_ranks(out: Path) -> dict[int, dict[str, Any]]:
    """The records the workers wrote (``rank<r>.json``), by rank; unreadable ones are left out."""
    ranks = {}
    for f in sorted(out.glob("rank*.json")):
        try:
            ranks[int(f.stem[4:])] = json.loads(f.read_text())
        except (ValueError, json.JSONDecodeError):
            continue
    return ranks


def pick_cell(spec: TaskSpec, settings: Settings, ranks: dict[int, dict[str, Any]], rc: int, tail: str,
              timed_out: bool) -> dict[str, Any]:
    """The cell to record from the workers' records and torchrun's exit."""
    failed = [c for _, c in sorted(ranks.items()) if c.get("status") == "failed"]
    if timed_out:
        return failed_cell(spec, "Timeout", f"timed out after {settings.timeout_s:g} s (raise it with --timeout)",
                           stderr_tail=tail, torchrun_returncode=rc)
    if 0 in ranks and ranks[0].get("status") in ("ok", "skipped") and rc == 0:
        return ranks[0]
    if failed:
        cell = failed[0]
        if not isinstance(cell.get("error"), dict):
            cell["error"] = {"type": "WorkerFailed", "message": cell.get("reason")}
        cell["error"]["stderr_tail"] = tail
        cell["error"]["torchrun_returncode"] = rc
        return cell
    if rc == 0 and ranks and 0 not in ranks:  # a node without rank 0 (multi-node)
        cell = empty_cell(spec)
        cell["status"] = "skipped"
        cell["reason"] = (f"this node ran workers {sorted(ranks)} of {spec.world_size}; the cell is recorded "
                          "by the node that runs rank 0")
        cell["recorded_elsewhere"] = True  # the runner keeps taking part in its repeats
        return cell
    if 0 in ranks and ranks[0].get("status") == "skipped":
        return ranks[0]
    if 0 in ranks:
        reason = (f"rank 0 finished ({ranks[0].get('status')}) but torchrun exited with status {rc}: "
                  "another worker failed without a result (see the output tail)")
    else:
        reason = f"torchrun exited with status {rc} without a result from rank 0"
    return failed_cell(spec, "WorkerCrash", reason, stderr_tail=tail, returncode=rc)


# ----------------------------------------------------------------------------- inside each torchrun worker


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker if torchrun dies (it starts workers in their own
    session, so a kill of the runner's process group would not reach them)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def rank_main(argv: list[str] | None = None) -> int:
    """Entry point of one torchrun worker: ``python -m harness.launch.torchrun REQ OUTDIR``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(f"usage: torchrun ... -m {RANK_MODULE} REQUEST.json OUT_DIR", file=sys.stderr)
        return 2
    _die_with_parent()
    if os.getppid() == 1:  # torchrun died before PR_SET_PDEATHSIG took effect
        return 1
    spec, settings = read_request(args[0])
    import datetime

    import torch
    import torch.distributed as dist

    from harness.launch.measure import run_cell

    comm = "nccl" if spec.device.startswith("cuda") and torch.cuda.is_available() else "gloo"
    if comm == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=comm, timeout=datetime.timedelta(seconds=max(30.0, settings.timeout_s)))
    rank = dist.get_rank()
    cell = run_cell(spec, settings, dp=TorchDDPContext(dist, torch, comm))
    write_message(Path(args[1]) / f"rank{rank}.json", cell, versioned=False)
    if cell.get("status") == "failed":
        # exit non-zero: torchrun then stops the other workers instead of leaving them
        # blocked in a collective until the timeout
        os._exit(1)
    try:
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(rank_main())
