"""Data-parallel training cells (``world_size``): launching, lock-step timing, scaling.

Two engines, both the frameworks' own (no launcher of ours beyond wiring):

* **torch: torchrun.** The cell's worker process runs ``python -m torch.distributed.run``
  with ``--nproc-per-node = world_size / nnodes`` (``--standalone`` on one machine,
  the ``--rdzv-*`` settings across machines). Each torchrun worker runs
  :func:`rank_main`: it joins the process group (gloo on CPU, NCCL on CUDA), builds a
  ``DistributedDataParallel`` step (``TorchBackend.prepare_data_parallel``) and times it
  with :func:`lockstep_measure`. Every worker writes its own cell record; the cell
  reported is rank 0's, or the first failing worker's (with torchrun's output tail).
* **tensorflow: MirroredStrategy**, in the ordinary worker process (one process drives
  every replica; logical CPU devices stand in for GPUs on a CPU-only machine).

Metrics of a data-parallel cell: ``latency_ms`` is the global step time (per step, the
mean over workers: each waits for the others at the all-reduce), ``throughput_per_s`` is ``world_size * batch_size`` samples per
p50 step, and ``metrics.distributed`` holds the world size, per-worker and global batch,
engine and communication backend, per-worker medians and, once the run has the
matching ``world_size: 1`` cell, ``speedup_vs_1`` and ``scaling_efficiency``
(throughput(N) / (N x throughput(1))).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from harness.api import Step
from harness.core.suite import Settings, TaskSpec
from harness.core.timing import HostClock, Measurement, TimingConfig, _stable

TORCHRUN_GRACE_S = 15.0  # time torchrun gets to stop its workers before SIGKILL


# ----------------------------------------------------------------------------- timing


def lockstep_measure(
    step: Step,
    config: TimingConfig,
    all_max: Callable[[float], float],
    gather: Callable[[list[float]], list[list[float]]],
    barrier: Callable[[], None],
    now: Callable[[], float] = time.perf_counter,
    probes: Sequence[Any] = (),
) -> tuple[Measurement, dict[str, Any]]:
    """Time a data-parallel step identically on every worker.

    Every worker must run the same number of steps (each step all-reduces gradients),
    so decisions are made from values all workers share: warm-up step times are
    all-reduced (max) before the stability test, and the timed step count is derived
    from them. In the timed loop each step is timed alone (``sync`` + host clock; a
    data-parallel step is milliseconds, far above the clock's cost) with no extra
    collective; afterwards the per-step times are gathered and each sample is the mean
    over workers of that step's time. In a synchronous step every worker waits for the
    slowest one at the gradient all-reduce, so each worker's time already includes a
    straggler; taking the max instead would count the workers' drift twice (the
    samples would add up to more than the loop's wall time; bench/ddp_timing.py
    measures it). ``probes`` are marked as in :func:`harness.core.timing.measure`.
    Returns (measurement, details)."""
    step.sync()
    for p in probes:
        p.mark("warmup_start")
    warm: list[float] = []
    stable = False
    while True:
        t0 = now()
        step.run(1)
        step.sync()
        warm.append(all_max(now() - t0))
        total = sum(warm)
        if len(warm) >= config.warmup_min_iters and total >= min(config.warmup_min_s, config.warmup_max_s) \
                and _stable(warm, config.warmup_window, config.warmup_tolerance):
            stable = True
            break
        if total >= config.warmup_max_s and len(warm) >= config.warmup_min_iters:
            break
    est = max(statistics.median(warm[-config.warmup_window:]), 1e-9)
    n = min(config.max_samples, max(config.min_samples, math.ceil(config.min_time_s / est)))
    local: list[float] = []
    barrier()
    for p in probes:
        p.mark("loop_start")
    loop_t0 = now()  # the samples' clock, so the two add up
    for _ in range(n):
        t0 = now()
        step.run(1)
        step.sync()
        local.append(now() - t0)
    barrier()
    loop_t1 = now()
    for p in probes:
        p.mark("loop_end")
    # the job's loop wall is the slowest worker's barrier-to-barrier time: workers leave
    # a barrier at slightly different moments, so one worker's first step can include
    # waiting for a later one, and the mean-over-workers samples only add up to at most
    # the mean (hence the max) of the workers' own loop walls, never to one worker's
    wall = max(all_max(loop_t1 - loop_t0), loop_t1 - loop_t0)
    per_rank = gather(local)
    samples = [sum(col) / len(col) for col in zip(*per_rank)]
    meas = Measurement(
        samples_s=samples,
        iters_per_sample=1,
        warmup_iters=len(warm),
        warmup_s=sum(warm),
        warmup_stable=stable,
        first_iter_s=warm[0],
        timed_s=sum(samples),
        clock="perf_counter after sync, mean over workers per step",
        clock_overhead_s=HostClock(now).overhead(),
        warmup_samples_s=warm,
        loop_window_s=(loop_t1 - wall, loop_t1),
    )
    details = {
        "per_worker_p50_ms": [statistics.median(r) * 1e3 for r in per_rank],
        "per_step_spread_p50_ms": statistics.median(max(col) - min(col) for col in zip(*per_rank)) * 1e3,
        "wall_per_step_ms": wall / n * 1e3,
        "steps_timed": n,
    }
    return meas, details


# ----------------------------------------------------------------------------- torchrun


def nproc_per_node(spec: TaskSpec, settings: Settings) -> int:
    ws = int(spec.world_size or 1)
    if ws % settings.nnodes:
        raise ValueError(f"world_size {ws} is not a multiple of nnodes {settings.nnodes}")
    return ws // settings.nnodes


def threads_per_worker(spec: TaskSpec, settings: Settings, cpu_count: int | None = None) -> int:
    """Intra-op threads of each worker: ``threads`` when set, else ``worker_threads``
    (the runner sets it so every world size of a sweep gets the same threads per
    worker), else this machine's cores shared evenly by the cell's workers."""
    if settings.threads is not None:
        return settings.threads
    if settings.worker_threads is not None:
        return settings.worker_threads
    cores = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    return max(1, cores // nproc_per_node(spec, settings))


def sweep_worker_threads(cells: list[TaskSpec], settings: Settings, cpu_count: int | None = None) -> int | None:
    """Threads per CPU worker for a run: the cores divided by the largest number of
    workers any CPU data-parallel cell puts on a node, so a world-size sweep adds
    workers with equal resources (as each GPU worker gets one GPU) instead of comparing
    N single-thread workers with one worker using every core. None when the run has
    no CPU data-parallel cell or ``threads`` is set."""
    local = [int(c.world_size) // settings.nnodes for c in cells if c.world_size and c.device == "cpu"]
    if not local or settings.threads is not None:
        return None
    cores = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    return max(1, cores // max(local))


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
    return cmd + ["-m", "harness.launch.distributed", str(request), str(out_dir)]


def launch_torchrun(spec: TaskSpec, settings: Settings, base_cell: Callable[[TaskSpec], dict[str, Any]]) -> dict[str, Any]:
    """Run a data-parallel torch cell through torchrun and return its cell record."""
    from harness.launch.runner import worker_env

    t0 = time.perf_counter()
    # inside the runner's cell directory when there is one: the runner removes it even
    # when it has to kill this process (Ctrl-C, timeout)
    base = os.environ.get("DLH_CELL_DIR")
    with tempfile.TemporaryDirectory(prefix="dlh-ddp-", dir=base if base and os.path.isdir(base) else None) as td:
        req, out = Path(td, "request.json"), Path(td, "ranks")
        out.mkdir()
        req.write_text(json.dumps({"spec": spec.to_dict(), "settings": dataclasses.asdict(settings)}))
        env = worker_env()
        env["OMP_NUM_THREADS"] = str(threads_per_worker(spec, settings))
        env.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        cmd = torchrun_command(spec, settings, req, out)
        # the cell's timeout is enforced here (the runner waits TORCHRUN_GRACE_S longer
        # for data-parallel cells), so torchrun can stop its workers (they run in their
        # own sessions) and the cell keeps the output tail
        deadline = settings.timeout_s
        # torchrun's output (the workers' tracebacks included) goes to this worker's own
        # output, whose tail the runner keeps with a failed cell
        sys.stdout.flush()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env)
        timed_out = False
        try:
            rc = proc.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=TORCHRUN_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
        tail = ""  # filled in by the runner from this worker's output
        ranks = {}
        for f in sorted(out.glob("rank*.json")):
            try:
                ranks[int(f.stem[4:])] = json.loads(f.read_text())
            except (ValueError, json.JSONDecodeError):
                continue
    cell = _pick_cell(spec, settings, ranks, rc, tail, timed_out, base_cell)
    cell["duration_s"] = time.perf_counter() - t0
    return cell


def _pick_cell(spec: TaskSpec, settings: Settings, ranks: dict[int, dict[str, Any]], rc: int, tail: str,
               timed_out: bool, base_cell: Callable[[TaskSpec], dict[str, Any]]) -> dict[str, Any]:
    """The cell to record from the workers' records and torchrun's exit."""
    failed = [c for _, c in sorted(ranks.items()) if c.get("status") == "failed"]
    if timed_out:
        cell = base_cell(spec)
        cell["reason"] = f"timed out after {settings.timeout_s:g} s (raise it with --timeout)"
        cell["error"] = {"type": "Timeout", "message": cell["reason"], "stderr_tail": tail, "torchrun_returncode": rc}
        return cell
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
        cell = base_cell(spec)
        cell["status"] = "skipped"
        cell["reason"] = (f"this node ran workers {sorted(ranks)} of {spec.world_size}; the cell is recorded "
                          "by the node that runs rank 0")
        cell["recorded_elsewhere"] = True  # the runner keeps taking part in its repeats
        return cell
    if 0 in ranks and ranks[0].get("status") == "skipped":
        return ranks[0]
    cell = base_cell(spec)
    if 0 in ranks:
        cell["reason"] = (f"rank 0 finished ({ranks[0].get('status')}) but torchrun exited with status {rc}: "
                          "another worker failed without a result (see the output tail)")
    else:
        cell["reason"] = f"torchrun exited with status {rc} without a result from rank 0"
    cell["error"] = {"type": "WorkerCrash", "message": cell["reason"], "stderr_tail": tail, "returncode": rc}
    return cell


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker if torchrun dies (it starts workers in their own
    session, so a kill of the runner's process group would not reach them)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class TorchDDPContext:
    """What the worker needs inside a torchrun worker (rank r of N)."""

    engine = "torchrun + DistributedDataParallel"

    def __init__(self, dist: Any, torch: Any, comm_backend: str) -> None:
        self.dist, self.torch, self.comm_backend = dist, torch, comm_backend
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.details: dict[str, Any] = {}

    def _device(self) -> Any:
        if self.comm_backend == "nccl":
            return self.torch.device("cuda", self.torch.cuda.current_device())
        return self.torch.device("cpu")

    def all_max(self, x: float) -> float:
        t = self.torch.tensor([x], dtype=self.torch.float64, device=self._device())
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        return float(t.item())

    def gather(self, xs: list[float]) -> list[list[float]]:
        out: list[Any] = [None] * self.world_size
        self.dist.all_gather_object(out, list(xs))
        return [list(map(float, o)) for o in out]

    def barrier(self) -> None:
        if self.comm_backend == "nccl":
            self.dist.barrier(device_ids=[self.torch.cuda.current_device()])
        else:
            self.dist.barrier()

    def measure(self, step: Step, config: TimingConfig, probes: Sequence[Any] = ()) -> Measurement:
        meas, self.details = lockstep_measure(step, config, self.all_max, self.gather, self.barrier,
                                              probes=probes)
        return meas

    def describe(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "comm_backend": self.comm_backend,
            "workers_per_node": int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size)),
            "nnodes": self.world_size // int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size) or 1),
            "threads_per_worker": int(self.torch.get_num_threads()),
            **self.details,
        }


class InProcessContext:
    """A data-parallel cell driven from one process (tf.distribute.MirroredStrategy)."""

    engine = "tf.distribute.MirroredStrategy"
    rank = 0

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size

    def measure(self, step: Step, config: TimingConfig, probes: Sequence[Any] = ()) -> Measurement:
        from harness.core.timing import measure

        return measure(step, config, probes=probes)

    def describe(self) -> dict[str, Any]:
        return {"engine": self.engine, "comm_backend": "in-graph all-reduce (cross-device ops)", "nnodes": 1,
                "workers_per_node": self.world_size}


def rank_main(argv: list[str] | None = None) -> int:
    """Entry point of one torchrun worker: ``python -m harness.launch.distributed REQ OUTDIR``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: torchrun ... -m harness.launch.distributed REQUEST.json OUT_DIR", file=sys.stderr)
        return 2
    _die_with_parent()
    if os.getppid() == 1:  # torchrun died before PR_SET_PDEATHSIG took effect
        return 1
    request = json.loads(Path(args[0]).read_text())
    spec = TaskSpec.from_dict(request["spec"])
    settings = Settings(**request["settings"])
    import datetime

    import torch
    import torch.distributed as dist

    from harness.launch.worker import _default, run_cell

    comm = "nccl" if spec.device.startswith("cuda") and torch.cuda.is_available() else "gloo"
    if comm == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=comm, timeout=datetime.timedelta(seconds=max(30.0, settings.timeout_s)))
    rank = dist.get_rank()
    cell = run_cell(spec, settings, dp=TorchDDPContext(dist, torch, comm))
    out = Path(args[1]) / f"rank{rank}.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(cell, allow_nan=False, default=_default))
    os.replace(tmp, out)
    if cell.get("status") == "failed":
        # exit non-zero: torchrun then stops the other workers instead of leaving them
        # blocked in a collective until the timeout
        os._exit(1)
    try:
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001
        pass
    return 0


# ----------------------------------------------------------------------------- scaling


SUPERLINEAR = 1.05  # efficiency above this is flagged (cache effects rarely explain more)


def scaling_key(spec: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(spec.get(k)) for k in ("workload", "backend", "device", "variant", "mode", "batch_size", "size"))


def attach_scaling(cells: list[dict[str, Any]]) -> None:
    """Speed-up and scaling efficiency of every ok data-parallel cell against the
    ``world_size: 1`` cell of the same spec in ``cells`` (in place). Without that cell
    both are null, with the reason."""
    base: dict[tuple[str, ...], dict[str, Any]] = {}
    for c in cells:
        s = c.get("spec") or {}
        if c.get("status") == "ok" and s.get("world_size") == 1:
            base[scaling_key(s)] = c
    for c in cells:
        s = c.get("spec") or {}
        ws = s.get("world_size")
        if c.get("status") != "ok" or not ws:
            continue
        d = c.setdefault("metrics", {}).setdefault("distributed", {})
        unavailable = c.setdefault("unavailable", {})
        b = base.get(scaling_key(s))
        thr = c["metrics"].get("throughput_per_s")
        thr1 = (b or {}).get("metrics", {}).get("throughput_per_s")
        if b is None or not thr or not thr1:
            d["speedup_vs_1"] = d["scaling_efficiency"] = None
            why = ("no ok world_size 1 cell with the same workload, backend, device, variant, batch size and size "
                   "in this run; sweep --world-size 1,N to measure scaling")
            unavailable["distributed.scaling_efficiency"] = why
            unavailable["distributed.speedup_vs_1"] = why
            continue
        d["speedup_vs_1"] = thr / thr1
        d["scaling_efficiency"] = thr / (ws * thr1)
        d["scaling_baseline_cell"] = b.get("id")
        noisy = list(dict.fromkeys(x.get("id") for x in (b, c) if (x.get("metrics") or {}).get("noisy")))
        d.pop("scaling_warning", None)
        if d["scaling_efficiency"] > SUPERLINEAR:
            d["scaling_warning"] = (
                f"superlinear ({d['scaling_efficiency']:.0%}): more than N times one worker's throughput usually "
                "means the 1-worker cell was slowed (CPU contention: compare timing.loadavg_1m_* with the core "
                "count; noise), not that workers help each other")
        elif noisy:
            d["scaling_warning"] = f"noisy timing in {', '.join(map(str, noisy))}: the efficiency is uncertain"
        d["scaling_method"] = "throughput_per_s(N) / (N x throughput_per_s(1)), sustained throughput, same run"
        unavailable.pop("distributed.scaling_efficiency", None)
        unavailable.pop("distributed.speedup_vs_1", None)


if __name__ == "__main__":
    raise SystemExit(rank_main())
