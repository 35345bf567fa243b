"""Per-step GPU timing: every timed step gets its own pair of CUDA events, recorded
back to back without a host sync, read after the loop.

The GPU is faked at the lowest boundary only: a fake ``torch.cuda`` (``Event`` and
``synchronize``) over a fake device timeline. The real :class:`TorchStep`, the real
:class:`CudaEventClock` and the real :func:`harness.core.timing.measure` run on it.

The fake device: work and event records are appended to one stream in host order.
Every command the host issues reaches the device ``LAUNCH_GAP_S`` after the previous
one (the device idles while the host launches), so an event records the stream's
device time when it is reached. An event is *complete* only once the host has
synchronized past it; ``elapsed_time`` of an incomplete event raises, as CUDA does.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from harness.backends.torch_backend import CudaEventClock, TorchStep  # noqa: E402
from harness.core.timing import DeviceEventClock, TimingConfig, measure  # noqa: E402

LAUNCH_GAP_S = 50e-6  # device idle between two host commands (launch latency)


class FakeCuda:
    """The fake ``torch.cuda``: one stream, a device clock, a log of what the host did."""

    def __init__(self) -> None:
        self.tail_s = 0.0  # device time at the end of everything queued
        self.reached_s = 0.0  # device time the host knows has passed (after a sync)
        self.log: list[tuple] = []
        cuda = self

        class Event:
            def __init__(self, enable_timing: bool = False) -> None:
                assert enable_timing, "timing events must be created with enable_timing=True"
                self.t: float | None = None

            def record(self, stream=None) -> None:
                cuda.tail_s += LAUNCH_GAP_S
                self.t = cuda.tail_s
                cuda.log.append(("record", self))

            def synchronize(self) -> None:
                assert self.t is not None, "synchronize on an unrecorded event"
                cuda.reached_s = max(cuda.reached_s, self.t)
                cuda.log.append(("sync",))

            def query(self) -> bool:
                return self.t is not None and cuda.reached_s >= self.t

            def elapsed_time(self, end: "Event") -> float:
                if not (self.query() and end.query()):
                    raise RuntimeError("Both events must be completed before calculating elapsed time.")
                return (end.t - self.t) * 1e3  # milliseconds, like CUDA

        self.Event = Event

    def synchronize(self, device=None) -> None:
        self.reached_s = self.tail_s
        self.log.append(("sync",))

    def enqueue(self, seconds: float) -> None:
        self.tail_s += LAUNCH_GAP_S + seconds
        self.log.append(("work", seconds))


class Marks:
    """A timing probe: where the loop's marks fall in the host's command log."""

    def __init__(self, cuda: FakeCuda) -> None:
        self.cuda = cuda

    def mark(self, event: str) -> None:
        self.cuda.log.append(("mark", event))


def cuda_step(durations):
    """A real TorchStep on a fake ``cuda:0`` whose i-th call queues ``durations(i)``
    seconds of device work (and returns at once, like an asynchronous launch)."""
    cuda = FakeCuda()
    fake_torch = SimpleNamespace(cuda=cuda)
    calls = iter(range(10**9))

    def fn() -> None:
        cuda.enqueue(durations(next(calls)))

    step = TorchStep(fake_torch, torch.device("cuda", 0), fn, contextlib.nullcontext, params=0)
    return step, cuda


def slow_tail(i: int) -> float:
    """Steps of 2 ms with a 150 ms step every 10th: the tail p90/p99 must show."""
    return 0.150 if i % 10 == 9 else 0.002


def test_every_gpu_step_has_its_own_event_pair_and_no_sync_in_the_loop():
    step, cuda = cuda_step(slow_tail)
    clock = step.device_clock()
    assert isinstance(clock, CudaEventClock) and isinstance(clock, DeviceEventClock)
    cfg = TimingConfig(min_time_s=1e-6, min_samples=40, max_samples=40, warmup_min_s=0.0, warmup_max_s=0.05)
    m = measure(step, cfg, probes=[Marks(cuda)])

    assert m.iters_per_sample == 1 and m.sampling == "per-step device events"
    assert len(m.samples_s) == m.steps_timed == 40
    # the samples are each step's own device time: its work plus the two launch gaps
    # inside its pair (launching the work, then recording the end event)
    first = m.warmup_iters
    assert m.samples_s == pytest.approx([slow_tail(first + k) + 2 * LAUNCH_GAP_S for k in range(40)])
    assert max(m.samples_s) == pytest.approx(0.150 + 2 * LAUNCH_GAP_S)  # the slow steps, not block averages
    assert m.timed_s == pytest.approx(sum(m.samples_s))

    loop = cuda.log[cuda.log.index(("mark", "loop_start")) + 1: cuda.log.index(("mark", "loop_end"))]
    kinds = [e[0] for e in loop]
    # record, work, record per step, back to back; one sync, after the last record
    assert kinds == ["record", "work", "record"] * 40 + ["sync"]
    starts = [e[1] for e in loop[0::3][:40]]
    ends = [e[1] for e in loop[2::3][:40]]
    assert len({id(e) for e in starts + ends}) == 80  # its own pair for every step
    assert m.clock_overhead_s == pytest.approx(LAUNCH_GAP_S)  # two marks back to back


def test_per_step_loop_runs_for_min_time_of_host_wall_time_and_reads_after_one_wait():
    step, cuda = cuda_step(lambda i: 0.001)
    cfg = TimingConfig(min_time_s=0.02, min_samples=5, warmup_min_s=0.0, warmup_max_s=0.01)
    m = measure(step, cfg, probes=[Marks(cuda)])
    t0, t1 = m.loop_window_s
    assert t1 - t0 >= 0.02 and len(m.samples_s) >= 5
    loop = cuda.log[cuda.log.index(("mark", "loop_start")): cuda.log.index(("mark", "loop_end"))]
    assert sum(1 for e in loop if e[0] == "sync") == 1
    assert m.timing_record()["sampling"] == "per-step device events"


def test_cpu_steps_keep_the_host_clock_and_blocks():
    from harness.backends.torch_backend import TorchBackend
    from harness.workloads.mlp import MLPWorkload

    step = TorchBackend().prepare(MLPWorkload("tiny"), _fp32(), "cpu", "inference", 4)
    assert step.device_clock() is None
    m = measure(step, TimingConfig(min_time_s=0.01, min_samples=3, warmup_max_s=0.01))
    assert m.clock == "perf_counter" and m.sampling == "blocks"
    assert m.steps_timed == len(m.samples_s) * m.iters_per_sample


def _fp32():
    from harness.variants import FP32Variant

    return FP32Variant()


def test_per_step_loop_with_a_precision_target_reads_the_pairs_only_at_its_checks():
    rng = __import__("numpy").random.default_rng(0)
    step, cuda = cuda_step(lambda i: 0.002 * float(rng.lognormal(0.0, 0.2)))
    # min_time_s sets the floor (20% of it, host wall time), max_time_s the cap
    cfg = TimingConfig(min_time_s=1e-3, precision=0.03, max_time_s=60, warmup_min_s=0.0, warmup_max_s=0.01)
    m = measure(step, cfg, probes=[Marks(cuda)])
    rec = m.timing_record()
    assert rec["stop_reason"] == "precision reached" and rec["ci95_rel_halfwidth"] <= 0.03
    loop = cuda.log[cuda.log.index(("mark", "loop_start")): cuda.log.index(("mark", "loop_end"))]
    # one wait per precision check (between two steps, never inside a pair) and the final one
    assert sum(1 for e in loop if e[0] == "sync") == rec["precision_checks"] + 1
    kinds = [e[0] for e in loop[1:] if e[0] != "sync"]
    assert kinds == ["record", "work", "record"] * len(m.samples_s)
    assert len(m.samples_s) >= 20 and m.timed_s == pytest.approx(sum(m.samples_s))
