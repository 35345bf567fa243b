"""Data-parallel training cells (``world_size``): whether one can run, lock-step timing,
the workers' contexts, and scaling.

Two engines, both the frameworks' own (no launcher of ours beyond wiring):

* **torch: torchrun.** :mod:`harness.launch.torchrun` runs ``python -m torch.distributed.run``
  with ``--nproc-per-node = world_size / nnodes`` (``--standalone`` on one machine,
  the ``--rdzv-*`` settings across machines). Each torchrun worker joins the process
  group (gloo on CPU, NCCL on CUDA), builds a ``DistributedDataParallel`` step
  (``TorchBackend.prepare_data_parallel``) and times it with :func:`lockstep_measure`
  through :class:`TorchDDPContext`. Every worker writes its own cell record; the cell
  reported is rank 0's, or the first failing worker's (with torchrun's output tail).
* **tensorflow: MirroredStrategy**, in the ordinary worker process (one process drives
  every replica through :class:`InProcessContext`; logical CPU devices stand in for GPUs
  on a CPU-only machine).

:func:`data_parallel_engine` is the one place that decides whether a data-parallel cell
can run here (and with which engine); measurement never does.

Metrics of a data-parallel cell: ``latency_ms`` is the global step time (per step, the
mean over workers: each waits for the others at the all-reduce), ``throughput_per_s`` is ``world_size * batch_size`` samples per
p50 step, and ``metrics.distributed`` holds the world size, per-worker and global batch,
engine and communication backend, per-worker medians and, once the run has the
matching ``world_size: 1`` cell, ``speedup_vs_1`` and ``scaling_efficiency``
(throughput(N) / (N x throughput(1))).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from typing import Any, Callable, Sequence

from harness.api import Backend, SkipCell, Step
from harness.core.cells import Settings, TaskSpec
from harness.core.timing import (
    STOP_MAX_SAMPLES,
    STOP_MAX_TIME,
    STOP_MIN_SAMPLES,
    STOP_MIN_TIME,
    STOP_PRECISION,
    HostClock,
    Measurement,
    SamplingStop,
    TimingConfig,
    warm_up,
)


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
    all-reduced (max) before the warm-up rule (:class:`harness.core.timing.SteadyWarmup`)
    sees them, and the timed step count is derived from them. Without a precision
    target the count is ``min_time_s`` / the shared warm-up median (at least
    ``min_samples``), fixed before the loop. With one (``config.precision``) the same
    :class:`harness.core.timing.SamplingStop` as the single-process loop decides: its
    check schedule depends on the step count only, so every worker checks at the same
    step; each checks its own samples and one all-reduce (max of "not precise yet")
    makes the decision common, so all stop at the same step; the time cap is a step
    count from the shared warm-up median (``max_time_s`` / median), so it needs no
    collective. In the timed loop each step is timed alone (``sync`` + host clock; a
    data-parallel step is milliseconds, far above the clock's cost); afterwards the
    per-step times are gathered and each sample is the mean over workers of that step's
    time. In a synchronous step every worker waits for the slowest one at the gradient
    all-reduce, so each worker's time already includes a straggler; taking the max
    instead would count the workers' drift twice (the samples would add up to more than
    the loop's wall time; bench/ddp_timing.py measures it). ``probes`` are marked as in
    :func:`harness.core.timing.measure`. Returns (measurement, details)."""
    step.sync()
    for p in probes:
        p.mark("warmup_start")

    def one_step() -> float:
        t0 = now()
        step.run(1)
        step.sync()
        return all_max(now() - t0)

    warm, stable, rule = warm_up(config, one_step)
    est = max(statistics.median(warm[-config.warmup_window:]), 1e-9)
    stop = SamplingStop(config)
    if config.precision is None:
        by_time = math.ceil(config.min_time_s / est)
        n = min(config.max_samples, max(config.min_samples, by_time))
        reason = (STOP_MAX_SAMPLES if n == config.max_samples and n < max(config.min_samples, by_time)
                  else STOP_MIN_SAMPLES if config.min_samples > by_time else STOP_MIN_TIME)
    else:  # the most steps max_time_s allows, by the shared estimate (a cap, not a plan)
        n = min(config.max_samples, max(config.min_samples, math.ceil(config.max_time / est)))
        reason = STOP_MAX_SAMPLES if n == config.max_samples else STOP_MAX_TIME
    local: list[float] = []
    elapsed = 0.0
    barrier()
    for p in probes:
        p.mark("loop_start")
    loop_t0 = now()  # the samples' clock, so the two add up
    while len(local) < n:
        t0 = now()
        step.run(1)
        step.sync()
        dt = now() - t0
        local.append(dt)
        elapsed += dt
        if stop.check_due(len(local)):  # the same step on every worker; outside the timed step
            not_yet = 0.0 if stop.precise(local, elapsed) else 1.0
            if all_max(not_yet) == 0.0:
                reason = STOP_PRECISION
                break
    barrier()
    loop_t1 = now()
    for p in probes:
        p.mark("loop_end")
    n = len(local)
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
        stopping=stop.record(reason, samples),
        warmup_rule=rule.describe(),
        warmup_evidence=rule.evidence,
    )
    details = {
        "per_worker_p50_ms": [statistics.median(r) * 1e3 for r in per_rank],
        "per_step_spread_p50_ms": statistics.median(max(col) - min(col) for col in zip(*per_rank)) * 1e3,
        "wall_per_step_ms": wall / n * 1e3,
        "steps_timed": n,
    }
    return meas, details


# ----------------------------------------------------------------------------- can it run here, and how


def data_parallel_engine(spec: TaskSpec, settings: Settings, backend: Backend) -> str:
    """The engine that runs the data-parallel cell ``spec`` on this machine
    (``backend.data_parallel``: ``"torchrun"`` or ``"in-process"``), or
    :class:`SkipCell` with the reason it cannot run here: the backend has no
    data-parallel training; more CPU workers per node than cores (the scaling measured
    would be contention); fewer GPUs than workers per node; ``nnodes > 1`` with an
    in-process engine (only torchrun spans machines)."""
    engine = type(backend).data_parallel
    if engine is None:
        raise SkipCell(f"backend {spec.backend!r} has no data-parallel training (world_size cells)")
    local_workers = int(spec.world_size or 1) // settings.nnodes
    cores = os.cpu_count() or 1
    if spec.device == "cpu" and local_workers > cores:
        raise SkipCell(f"{local_workers} CPU workers on {cores} cores would oversubscribe the CPU "
                       "(the scaling it measured would be contention, not data parallelism)")
    if spec.device.startswith("cuda"):
        try:  # one GPU per worker on each node: GPUs 0..local_workers-1 must exist
            backend.resolve_device(f"cuda:{local_workers - 1}")
        except SkipCell as e:
            raise SkipCell(f"{local_workers} data-parallel GPU worker(s) per node need as many GPUs: {e}") from None
    if engine != "torchrun" and settings.nnodes > 1:
        raise SkipCell(f"backend {spec.backend!r} runs data-parallel cells in one process ({engine}); "
                       "nnodes > 1 needs torchrun (-b torch)")
    return engine


# ----------------------------------------------------------------------------- workers and threads


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

