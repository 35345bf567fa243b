"""The timing collector: warm up until stable, then time adaptively sized blocks.

How a cell is timed (the README's "How latency is measured" says the same):

1. **Warm-up until stable.** Single steps are timed one by one. Warm-up ends when
   the median of the last ``window`` steps differs by at most ``tolerance`` from the
   median of the ``window`` before it (and at least ``warmup_min_iters`` ran), or
   when ``warmup_max_s`` is spent (then ``warmup_stable`` is recorded as false).
   At least ``warmup_min_s`` is spent warming up (caches, allocator pools, CPU
   frequency ramp). The first step's time is kept as ``first_iter_ms`` (cold start).
2. **Block size.** Like ``torch.utils.benchmark``'s ``blocked_autorange``: the
   clock's own cost is measured, and steps are grouped ``iters_per_sample`` at a time
   so that the clock costs at most ``max_overhead_ratio`` (0.1%) of a sample. Steps
   longer than ~1000x the clock overhead (tens of microseconds here) are timed one by
   one, so ``samples_ms`` are true per-iteration latencies and their percentiles mean
   what they say.
3. **Timed loop.** Blocks run until ``min_time_s`` of timed work *and*
   ``min_samples`` samples are collected (or ``max_samples``). Each sample is the
   block's time divided by ``iters_per_sample``. The device is synchronized before
   the loop, and nothing but the step runs in the timed region.

**Device event clocks (CUDA events): every step timed on its own.** A
:class:`DeviceEventClock` records marks into the device's queue without blocking the
host. With one, steps 2 and 3 change: no blocks (``iters_per_sample = 1``); each step
of the timed loop gets its own pair of marks, recorded back to back around
``step.run(1)`` *without* a host-device synchronization, so the device never idles
waiting for the host to read a clock; the host waits once, on the last mark, after the
loop, then reads every pair. ``samples_s`` are then true per-step device times (their
p90/p99 are per-step percentiles, not block averages), even for steps of hundreds of
milliseconds. The loop runs until ``min_time_s`` of host wall time has passed *and*
``min_samples`` steps were queued; ``loop_window_s`` ends after the final wait, so
sustained throughput (steps / loop wall time) counts the device finishing its queue.
``clock_overhead_s`` is then the device time between two back-to-back marks (the
resolution of a per-step sample). The host-clock path (CPUs, synchronous devices) is
unchanged.
"""

from __future__ import annotations

import abc
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

from harness.api import Clock, Step


class HostClock(Clock):
    """Wall-clock timing with a monotonic high-resolution host timer (seconds)."""

    name = "perf_counter"

    def __init__(self, now: Callable[[], float] = time.perf_counter) -> None:
        self._now = now

    def start(self) -> float:
        return self._now()

    def elapsed(self, token: Any) -> float:
        return self._now() - token


class DeviceEventClock(Clock):
    """A device-side clock whose marks are recorded into the device's queue without
    blocking the host (e.g. CUDA events). :func:`measure` times every step with its own
    pair of marks and waits once, after the timed loop (see the module doc).

    Subclasses implement :meth:`mark`, :meth:`wait` and :meth:`seconds_between`; the
    plain :class:`~harness.api.Clock` API (``start``/``elapsed``, used for the warm-up)
    is built from them and waits on every ``elapsed``."""

    per_step_events: ClassVar[bool] = True

    @abc.abstractmethod
    def mark(self) -> Any:
        """Record a mark in the device's queue now; must not block the host."""

    @abc.abstractmethod
    def wait(self, mark: Any) -> None:
        """Block the host until the device has passed ``mark`` (and every mark before it)."""

    @abc.abstractmethod
    def seconds_between(self, first: Any, second: Any) -> float:
        """Device seconds from ``first`` to ``second``, both already passed."""

    def start(self) -> Any:
        return self.mark()

    def elapsed(self, token: Any) -> float:
        end = self.mark()
        self.wait(end)
        return self.seconds_between(token, end)

    def overhead(self) -> float:
        """Device seconds between two marks recorded back to back (median of 20): the
        resolution of one per-step sample."""
        pairs = [(self.mark(), self.mark()) for _ in range(20)]
        self.wait(pairs[-1][1])
        return statistics.median(self.seconds_between(a, b) for a, b in pairs)


def is_per_step_clock(clock: Any) -> bool:
    """Whether ``clock`` times each step with its own device marks (no host sync)."""
    return bool(getattr(clock, "per_step_events", False)) and all(
        callable(getattr(clock, m, None)) for m in ("mark", "wait", "seconds_between"))


@dataclass(frozen=True)
class TimingConfig:
    """Knobs of the timing loop (times in seconds)."""

    min_time_s: float = 1.0
    min_samples: int = 10
    max_samples: int = 200_000
    warmup_min_iters: int = 3
    warmup_min_s: float = 0.1
    warmup_max_s: float = 3.0
    warmup_window: int = 5
    warmup_tolerance: float = 0.05
    max_overhead_ratio: float = 1e-3

    def __post_init__(self) -> None:
        if not self.min_time_s > 0:
            raise ValueError(f"min_time_s must be > 0, got {self.min_time_s}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples}")
        if self.max_samples < self.min_samples:
            raise ValueError("max_samples must be >= min_samples")
        if self.warmup_min_iters < 1:
            raise ValueError(f"warmup_min_iters must be >= 1, got {self.warmup_min_iters}")
        if self.warmup_max_s < 0:
            raise ValueError(f"warmup_max_s must be >= 0, got {self.warmup_max_s}")
        if self.warmup_window < 1:
            raise ValueError(f"warmup_window must be >= 1, got {self.warmup_window}")
        if not 0 < self.warmup_tolerance < 1:
            raise ValueError(f"warmup_tolerance must be in (0, 1), got {self.warmup_tolerance}")
        if not 0 < self.max_overhead_ratio < 1:
            raise ValueError(f"max_overhead_ratio must be in (0, 1), got {self.max_overhead_ratio}")


@dataclass
class Measurement:
    """Raw timing of one cell. ``samples_s`` are per-iteration seconds (block time /
    ``iters_per_sample``); statistics are derived from them, never stored instead."""

    samples_s: list[float]
    iters_per_sample: int
    warmup_iters: int
    warmup_s: float
    warmup_stable: bool
    first_iter_s: float
    timed_s: float
    clock: str
    clock_overhead_s: float
    warmup_samples_s: list[float] = field(default_factory=list)
    # host perf_counter() at the start and end of the timed loop: collectors use it to
    # cut their series to the timed region
    loop_window_s: tuple[float, float] | None = None
    # how samples were taken: "blocks" (host or synchronizing clock, iters_per_sample
    # steps per sample) or "per-step device events" (one mark pair per step, one wait
    # after the loop)
    sampling: str = "blocks"

    @property
    def loop_wall_s(self) -> float | None:
        """Host wall time of the timed loop (diagnostic: minus ``timed_s`` = overhead)."""
        return None if self.loop_window_s is None else self.loop_window_s[1] - self.loop_window_s[0]

    @property
    def steps_timed(self) -> int:
        """Steps executed inside the timed loop (samples x iters_per_sample)."""
        return len(self.samples_s) * self.iters_per_sample

    @property
    def samples_ms(self) -> list[float]:
        return [s * 1e3 for s in self.samples_s]

    def timing_record(self) -> dict[str, Any]:
        """The ``timing`` block of a result cell."""
        return {
            "iters_per_sample": self.iters_per_sample,
            "samples": len(self.samples_s),
            "warmup_iters": self.warmup_iters,
            "warmup_s": self.warmup_s,
            "warmup_stable": self.warmup_stable,
            "timed_s": self.timed_s,
            "clock": self.clock,
            "clock_overhead_us": self.clock_overhead_s * 1e6,
            "loop_wall_s": self.loop_wall_s,
            "steps_timed": self.steps_timed,
            "sampling": self.sampling,
        }


def _stable(times: list[float], window: int, tol: float) -> bool:
    if len(times) < 2 * window:
        return False
    a = statistics.median(times[-window:])
    b = statistics.median(times[-2 * window : -window])
    return b > 0 and abs(a - b) / b <= tol


def measure(step: Step, config: TimingConfig, clock: Clock | None = None,
            probes: Sequence[Any] = ()) -> Measurement:
    """Warm up ``step`` and time it according to ``config`` (see module docstring).

    ``probes``: objects with ``mark(event: str)``, called outside the timed region at
    ``"warmup_start"``, ``"loop_start"`` (after the pre-loop sync) and ``"loop_end"``
    (e.g. :class:`harness.core.contention.ContentionProbe`, which reads the CPU time of
    other processes in the windows between the marks)."""
    clock = clock or step.device_clock() or HostClock()
    clock_name = getattr(clock, "name", type(clock).__name__)

    def mark(event: str) -> None:
        for p in probes:
            p.mark(event)

    # 1. warm-up, one step at a time
    step.sync()
    mark("warmup_start")
    warm: list[float] = []
    warm_total = 0.0
    stable = False
    while True:
        t = clock.start()
        step.run(1)
        dt = clock.elapsed(t)
        warm.append(dt)
        warm_total += dt
        if len(warm) >= config.warmup_min_iters and warm_total >= min(
            config.warmup_min_s, config.warmup_max_s
        ) and _stable(
            warm, config.warmup_window, config.warmup_tolerance
        ):
            stable = True
            break
        if warm_total >= config.warmup_max_s and len(warm) >= config.warmup_min_iters:
            break
    recent = warm[-config.warmup_window :]
    est = max(statistics.median(recent), 1e-12)

    if is_per_step_clock(clock):
        return _measure_per_step(step, config, clock, clock_name, warm, stable, mark)

    # 2. block size so the clock's cost is <= max_overhead_ratio of a sample
    overhead = max(clock.overhead(), 0.0)
    n = 1
    target = overhead / config.max_overhead_ratio
    while n * est < target and n < 1_000_000:
        n *= 2

    # 3. timed loop
    step.sync()
    mark("loop_start")
    samples: list[float] = []
    timed = 0.0
    loop_t0 = time.perf_counter()
    while (timed < config.min_time_s or len(samples) < config.min_samples) and len(
        samples
    ) < config.max_samples:
        t = clock.start()
        step.run(n)
        dt = clock.elapsed(t)
        samples.append(dt / n)
        timed += dt
    loop_t1 = time.perf_counter()
    mark("loop_end")
    return Measurement(
        samples_s=samples,
        iters_per_sample=n,
        warmup_iters=len(warm),
        warmup_s=warm_total,
        warmup_stable=stable,
        first_iter_s=warm[0],
        timed_s=timed,
        clock=clock_name,
        clock_overhead_s=overhead,
        warmup_samples_s=warm,
        loop_window_s=(loop_t0, loop_t1),
    )


def _measure_per_step(step: Step, config: TimingConfig, clock: Any, clock_name: str, warm: list[float],
                      stable: bool, mark: Callable[[str], None]) -> Measurement:
    """Steps 2-3 for a :class:`DeviceEventClock`: one mark pair per step, recorded back
    to back without a host sync; one wait after the loop; samples are per step."""
    overhead = max(clock.overhead(), 0.0)
    step.sync()
    mark("loop_start")
    pairs: list[tuple[Any, Any]] = []
    now = time.perf_counter
    loop_t0 = now()
    while (now() - loop_t0 < config.min_time_s or len(pairs) < config.min_samples) and len(
        pairs
    ) < config.max_samples:
        first = clock.mark()
        step.run(1)
        pairs.append((first, clock.mark()))
    clock.wait(pairs[-1][1])  # the loop's only host-device synchronization
    loop_t1 = now()
    mark("loop_end")
    samples = [clock.seconds_between(a, b) for a, b in pairs]
    return Measurement(
        samples_s=samples,
        iters_per_sample=1,
        warmup_iters=len(warm),
        warmup_s=sum(warm),
        warmup_stable=stable,
        first_iter_s=warm[0],
        timed_s=sum(samples),
        clock=clock_name,
        clock_overhead_s=overhead,
        warmup_samples_s=warm,
        loop_window_s=(loop_t0, loop_t1),
        sampling="per-step device events",
    )
