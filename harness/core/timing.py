"""The timing collector: warm up until steady, then time adaptively sized blocks.

How a cell is timed (the README's "How latency is measured" says the same):

1. **Warm-up until steady** (:class:`SteadyWarmup`). Single steps are timed one by
   one. Warm-up ends when the median of the last ``w`` steps is within
   ``warmup_tolerance`` (5%) of the median of the ``w`` before them and (for windows
   of 8 steps or more) a one-sided rank-sum test finds no downward trend, where
   ``w = max(warmup_window, n/4)`` (at most ``(n-1)/2``) grows with the warm-up; at
   least ``warmup_min_iters`` steps and ``warmup_min_s`` seconds run first (caches,
   allocator pools, CPU frequency ramp). Otherwise it ends at ``warmup_max_s``
   (``warmup_stable`` false, ``warmup_ended_by: "cap"``). The rule and its last check's
   evidence (window medians, change, trend p-value) are recorded. The first step's time is
   kept as ``first_iter_ms`` (cold start).
2. **Block size.** Like ``torch.utils.benchmark``'s ``blocked_autorange``: the
   clock's own cost is measured, and steps are grouped ``iters_per_sample`` at a time
   so that the clock costs at most ``max_overhead_ratio`` (0.1%) of a sample. Steps
   longer than ~1000x the clock overhead (tens of microseconds here) are timed one by
   one, so ``samples_ms`` are true per-iteration latencies and their percentiles mean
   what they say.
3. **Timed loop** (:class:`SamplingStop` decides between blocks). Without a precision
   target, blocks run until ``min_time_s`` of timed work *and* ``min_samples`` samples
   are collected (or ``max_samples``). With ``precision`` (``--precision 2%``), blocks
   run until the median's 95% confidence interval has a half-width of at most that
   fraction of the median (checked on a geometric schedule, after at least
   ``max(min_samples, precision_min_samples)`` samples), or until ``max_time_s`` timed
   seconds. ``stop_reason`` records which. Each sample is the block's time divided by
   ``iters_per_sample``. The device is synchronized before the loop, and nothing but
   the step runs in the timed region. ``docs/timing.md`` has both rules and their
   checks (coverage simulation, cold-start leak test).

**Device event clocks (CUDA events): every step timed on its own.** A
:class:`DeviceEventClock` records marks into the device's queue without blocking the
host. With one, steps 2 and 3 change: no blocks (``iters_per_sample = 1``); each step
of the timed loop gets its own pair of marks, recorded back to back around
``step.run(1)`` *without* a host-device synchronization, so the device never idles
waiting for the host to read a clock; the host waits once, on the last mark, after the
loop, then reads every pair. ``samples_s`` are then true per-step device times (their
p90/p99 are per-step percentiles, not block averages), even for steps of hundreds of
milliseconds. The loop runs until ``min_time_s`` of host wall time has passed *and*
``min_samples`` steps were queued (or, with a precision target, until the target or
``max_time_s`` of host wall time; the host then waits at each precision check);
``loop_window_s`` ends after the final wait, so
sustained throughput (steps / loop wall time) counts the device finishing its queue.
``clock_overhead_s`` is then the device time between two back-to-back marks (the
resolution of a per-step sample). The host-clock path (CPUs, synchronous devices) is
unchanged.
"""

from __future__ import annotations

import abc
import math
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


# why the timed loop stopped (``timing.stop_reason``)
STOP_MIN_TIME = "min time"  # no precision target: min_time_s reached (min_samples already met)
STOP_MIN_SAMPLES = "min samples"  # no precision target: min_time_s was reached first, min_samples set the end
STOP_MAX_SAMPLES = "max samples"  # the max_samples cap
STOP_PRECISION = "precision reached"  # the median's 95% CI is within the target
STOP_MAX_TIME = "max time"  # precision target not reached within max_time_s
MAX_TIME_FACTOR = 10.0  # max_time_s when not given: 10 x min_time_s


@dataclass(frozen=True)
class TimingConfig:
    """Knobs of the timing loop (times in seconds).

    ``precision``: the target relative half-width of the median's 95% confidence
    interval, as a fraction (0.02 = the CI is within +-2% of the median); None samples
    for ``min_time_s`` as before. With a target, ``min_time_s`` is no floor: sampling
    stops once the target is met (after at least ``max(min_samples,
    precision_min_samples)`` samples) or after ``max_time_s`` timed seconds (default
    ``MAX_TIME_FACTOR x min_time_s``); ``min_samples`` is honoured in every case."""

    min_time_s: float = 1.0
    min_samples: int = 10
    max_samples: int = 200_000
    warmup_min_iters: int = 3
    warmup_min_s: float = 0.1
    warmup_max_s: float = 3.0
    warmup_window: int = 5
    warmup_tolerance: float = 0.05
    max_overhead_ratio: float = 1e-3
    precision: float | None = None
    max_time_s: float | None = None
    precision_min_samples: int = 20
    precision_check_growth: float = 0.1
    precision_min_time_fraction: float = 0.2

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
        if self.precision is not None and not 0 < self.precision < 1:
            raise ValueError(f"precision must be a fraction in (0, 1), got {self.precision}")
        if self.max_time_s is not None and not self.max_time_s > 0:
            raise ValueError(f"max_time_s must be > 0, got {self.max_time_s}")
        if self.precision_min_samples < 1:
            raise ValueError(f"precision_min_samples must be >= 1, got {self.precision_min_samples}")
        if not 0 <= self.precision_min_time_fraction <= 1:
            raise ValueError(f"precision_min_time_fraction must be in [0, 1], got {self.precision_min_time_fraction}")
        if not self.precision_check_growth > 0:
            raise ValueError(f"precision_check_growth must be > 0, got {self.precision_check_growth}")

    @property
    def max_time(self) -> float:
        """Timed seconds after which a precision target is given up (``max_time_s``, or
        ``MAX_TIME_FACTOR x min_time_s``)."""
        return self.max_time_s if self.max_time_s is not None else MAX_TIME_FACTOR * self.min_time_s

    @property
    def precision_min_time(self) -> float:
        """Timed seconds spent before a precision target may end the loop
        (``precision_min_time_fraction x min_time_s``, at most :attr:`max_time`)."""
        return min(self.precision_min_time_fraction * self.min_time_s, self.max_time)


def stop_ci_precision(samples: Sequence[float]) -> tuple[float, float]:
    """``(relative half-width, inflation)`` of the CI the stopping rule uses: the
    median's order-statistic 95% CI widened for autocorrelation
    (:func:`harness.core.stats.correlation_inflation`, batch means; 1 for independent
    samples). O(n)."""
    from harness.core.stats import correlation_inflation, median_ci_precision

    inflation = correlation_inflation(samples)
    return median_ci_precision(samples, inflation=inflation)[3], inflation


class SamplingStop:
    """When the timed loop stops: the one decision shared by :func:`measure` (both
    loops), the lock-step data-parallel loop and ``bench/precision_coverage.py``.

    Called between sample blocks, never inside the timed region. :meth:`limit` is O(1)
    (caps and times); :meth:`precise` computes the median's order-statistic 95% CI,
    widened for autocorrelation (:func:`stop_ci_precision`, O(n)), and runs only when
    :meth:`check_due`: at ``max(min_samples, precision_min_samples)`` samples, then each
    time the sample count has grown by ``precision_check_growth`` (10%). The checks are
    therefore O(log n) in number and O(n) in total cost, and the few looks keep the
    sequential-stopping bias small; a target is met only after
    :attr:`TimingConfig.precision_min_time` timed seconds (``docs/timing.md`` has the
    rule and the coverage simulation behind each of these choices)."""

    def __init__(self, config: TimingConfig) -> None:
        self.config = config
        self.precision = config.precision
        self.first_check = max(config.min_samples, config.precision_min_samples)
        self.next_check = self.first_check
        self.checks = 0
        self.achieved: float | None = None  # relative CI half-width at the last check
        self.inflation: float | None = None  # its autocorrelation widening (>= 1)
        self._time_met = False

    def limit(self, n: int, elapsed_s: float) -> str | None:
        """The reason to stop after ``n`` samples and ``elapsed_s`` timed seconds that
        needs no statistics (caps and times), or None."""
        c = self.config
        if n >= c.max_samples:
            return STOP_MAX_SAMPLES
        if self.precision is None:
            if elapsed_s >= c.min_time_s:
                if n >= c.min_samples:
                    return STOP_MIN_SAMPLES if self._time_met else STOP_MIN_TIME
                self._time_met = True
            return None
        if elapsed_s >= c.max_time and n >= c.min_samples:
            return STOP_MAX_TIME
        return None

    def check_due(self, n: int) -> bool:
        """Whether a precision check is due at ``n`` samples."""
        return self.precision is not None and n >= self.next_check

    def precise(self, samples: Sequence[float], elapsed_s: float) -> bool:
        """Run the precision check on ``samples`` (all of them so far, ``elapsed_s``
        timed seconds): whether the median's 95% CI (widened for autocorrelation,
        :func:`stop_ci_precision`) has a half-width of at most ``precision`` x the
        median, after at least :attr:`TimingConfig.precision_min_time` seconds."""
        n = len(samples)
        self.checks += 1
        self.next_check = max(n + 1, math.ceil(n * (1.0 + self.config.precision_check_growth)))
        self.achieved, self.inflation = stop_ci_precision(samples)
        return (self.precision is not None and self.achieved <= self.precision
                and elapsed_s >= self.config.precision_min_time)

    def after_block(self, samples: Sequence[float], elapsed_s: float) -> str | None:
        """The whole decision after a block: a due precision check first, then
        :meth:`limit`. Returns the stop reason or None (go on)."""
        if self.check_due(len(samples)) and self.precise(samples, elapsed_s):
            return STOP_PRECISION
        return self.limit(len(samples), elapsed_s)

    def record(self, reason: str, samples: Sequence[float]) -> dict[str, Any]:
        """The stopping fields of the timing block."""
        achieved, inflation = stop_ci_precision(samples) if len(samples) else (None, None)
        return {
            "stop_reason": reason,
            "precision_target": self.precision,
            "max_time_s": self.config.max_time if self.precision is not None else None,
            "precision_checks": self.checks,
            # the stopping CI on the final samples (every cell, with or without a target)
            "ci95_rel_halfwidth": achieved if achieved is not None and math.isfinite(achieved) else None,
            "ci95_correlation_inflation": inflation,
        }


RANK_TEST_MIN_WINDOW = 8  # below this a rank-sum test has too little power to mean anything
TREND_ALPHA = 0.2  # one-sided: sensitive on purpose (a false alarm only prolongs the warm-up)


class SteadyWarmup:
    """The warm-up rule: the steps are steady when they have stopped getting faster.

    After ``n`` warm-up steps (at least ``warmup_min_iters`` and ``warmup_min_s``),
    with windows of ``w = min((n-1)//2, max(warmup_window, n//4))`` steps (the first,
    cold step never counts; a window grows with the warm-up: hundreds of steps for fast
    steps, whose medians are then precise, and one step for steps of seconds), the
    warm-up is steady when both

    * the median of the last ``w`` steps is within ``warmup_tolerance`` (5%) of the
      median of the ``w`` before them, and
    * with ``w >= 8``, a one-sided rank-sum test finds no downward trend: the last
      window is not faster than the one before (p >= 0.2; sensitive on purpose, since a
      false alarm only costs a little more warm-up while a miss lets cold-start steps
      into the timed samples).

    Why not the old rule (medians of the last 5 vs the 5 before within 5%): it needs 10
    steps, never reached by steps longer than ``warmup_max_s / 10``, so those cells ran
    to the cap; and on a noisy shared machine two medians of 5 single steps differ by
    more than 5% most of the time even when nothing changes, so fast noisy cells often
    ran to the cap too. The check runs on a geometric schedule (each time ``n`` grew by
    5%), O(n) in total."""

    def __init__(self, config: TimingConfig) -> None:
        self.config = config
        self.next_check = 0
        self.checks = 0
        self.evidence: dict[str, Any] | None = None

    def describe(self) -> str:
        c = self.config
        return (f"steady when the median of the last w warm-up steps is within {c.warmup_tolerance:.0%} of the median "
                f"of the w before (w = max({c.warmup_window}, n/4), at most (n-1)/2) and, with w >= "
                f"{RANK_TEST_MIN_WINDOW}, a one-sided rank-sum test finds the last window no faster (p >= "
                f"{TREND_ALPHA}); after >= {c.warmup_min_iters} steps and >= {min(c.warmup_min_s, c.warmup_max_s):g} s; "
                f"else ends at the cap ({c.warmup_max_s:g} s)")

    def window(self, n: int) -> int:
        return min((n - 1) // 2, max(self.config.warmup_window, n // 4))

    def steady(self, warm: Sequence[float], total_s: float) -> bool:
        """Whether the warm-up steps ``warm`` (seconds, all so far) are steady."""
        c = self.config
        n = len(warm)
        if n < c.warmup_min_iters or total_s < min(c.warmup_min_s, c.warmup_max_s) or n < self.next_check:
            return False
        w = self.window(n)
        if w < 1:
            return False
        self.next_check = max(n + 1, math.ceil(n * 1.05))
        self.checks += 1
        import numpy as np

        from harness.core.stats import rank_sum_p

        last = np.asarray(warm[n - w:], dtype=np.float64)
        prev = np.asarray(warm[n - 2 * w: n - w], dtype=np.float64)
        m_last, m_prev = float(np.median(last)), float(np.median(prev))
        change = m_last / m_prev - 1.0 if m_prev > 0 else math.inf
        p = rank_sum_p(prev, last, alternative="greater") if w >= RANK_TEST_MIN_WINDOW else None
        within = abs(change) <= c.warmup_tolerance
        no_trend = p is None or p >= TREND_ALPHA
        self.evidence = {
            "steps": n,
            "window_steps": w,
            "prev_median_ms": m_prev * 1e3,
            "last_median_ms": m_last * 1e3,
            "change": change if math.isfinite(change) else None,
            "within_tolerance": within,
            "trend_p": p,  # one-sided rank-sum p that the last window is faster (null: w < 8)
            "checks": self.checks,
        }
        return within and no_trend


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
    # why the loop stopped and the precision target (SamplingStop.record)
    stopping: dict[str, Any] = field(default_factory=dict)
    # the warm-up rule, its last check's evidence and "rule" | "cap"
    warmup_rule: str | None = None
    warmup_evidence: dict[str, Any] | None = None

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

    @property
    def stop_reason(self) -> str | None:
        return self.stopping.get("stop_reason")

    def timing_record(self) -> dict[str, Any]:
        """The ``timing`` block of a result cell."""
        return {
            "iters_per_sample": self.iters_per_sample,
            "samples": len(self.samples_s),
            "warmup_iters": self.warmup_iters,
            "warmup_s": self.warmup_s,
            "warmup_stable": self.warmup_stable,
            "warmup_ended_by": "rule" if self.warmup_stable else "cap",
            "warmup_rule": self.warmup_rule,
            "warmup_evidence": self.warmup_evidence,
            "timed_s": self.timed_s,
            "clock": self.clock,
            "clock_overhead_us": self.clock_overhead_s * 1e6,
            "loop_wall_s": self.loop_wall_s,
            "steps_timed": self.steps_timed,
            "sampling": self.sampling,
            **self.stopping,
        }


def warm_up(config: TimingConfig, timed: Callable[[], float]) -> tuple[list[float], bool, SteadyWarmup]:
    """Run single warm-up steps (``timed()`` runs one and returns its seconds) until
    :class:`SteadyWarmup` says steady or ``warmup_max_s`` is spent (after at least
    ``warmup_min_iters`` steps). Returns (step times, ended by the rule, the rule)."""
    rule = SteadyWarmup(config)
    warm: list[float] = []
    total = 0.0
    while True:
        dt = timed()
        warm.append(dt)
        total += dt
        if rule.steady(warm, total):
            return warm, True, rule
        if total >= config.warmup_max_s and len(warm) >= config.warmup_min_iters:
            return warm, False, rule


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

    def one_step() -> float:
        t = clock.start()
        step.run(1)
        return clock.elapsed(t)

    # 1. warm-up, one step at a time
    step.sync()
    mark("warmup_start")
    warm, stable, rule = warm_up(config, one_step)
    recent = warm[-config.warmup_window :]
    est = max(statistics.median(recent), 1e-12)

    if is_per_step_clock(clock):
        meas = _measure_per_step(step, config, clock, clock_name, warm, stable, mark)
    else:
        meas = _measure_blocks(step, config, clock, clock_name, warm, stable, mark, est)
    meas.warmup_rule = rule.describe()
    meas.warmup_evidence = rule.evidence
    return meas


def _measure_blocks(step: Step, config: TimingConfig, clock: Clock, clock_name: str, warm: list[float],
                    stable: bool, mark: Callable[[str], None], est: float) -> Measurement:
    """Steps 2-3 with a host (or synchronizing) clock: blocks of ``iters_per_sample``
    steps, each block one sample; :class:`SamplingStop` decides between blocks."""
    # 2. block size so the clock's cost is <= max_overhead_ratio of a sample
    overhead = max(clock.overhead(), 0.0)
    n = 1
    target = overhead / config.max_overhead_ratio
    while n * est < target and n < 1_000_000:
        n *= 2

    # 3. timed loop
    stop = SamplingStop(config)
    step.sync()
    mark("loop_start")
    samples: list[float] = []
    timed = 0.0
    reason: str | None = None
    loop_t0 = time.perf_counter()
    while reason is None:
        t = clock.start()
        step.run(n)
        dt = clock.elapsed(t)
        samples.append(dt / n)
        timed += dt
        reason = stop.after_block(samples, timed)  # between blocks, outside the timed region
    loop_t1 = time.perf_counter()
    mark("loop_end")
    return Measurement(
        samples_s=samples,
        iters_per_sample=n,
        warmup_iters=len(warm),
        warmup_s=sum(warm),
        warmup_stable=stable,
        first_iter_s=warm[0],
        timed_s=timed,
        clock=clock_name,
        clock_overhead_s=overhead,
        warmup_samples_s=warm,
        loop_window_s=(loop_t0, loop_t1),
        stopping=stop.record(reason, samples),
    )


def _measure_per_step(step: Step, config: TimingConfig, clock: Any, clock_name: str, warm: list[float],
                      stable: bool, mark: Callable[[str], None]) -> Measurement:
    """Steps 2-3 for a :class:`DeviceEventClock`: one mark pair per step, recorded back
    to back without a host sync; one wait after the loop; samples are per step.

    With a precision target the host also waits for the device at each precision check
    (:meth:`SamplingStop.check_due`: O(log n) times, between two steps, never inside a
    pair) to read the pairs so far; without one the loop has its single wait."""
    overhead = max(clock.overhead(), 0.0)
    stop = SamplingStop(config)
    step.sync()
    mark("loop_start")
    pairs: list[tuple[Any, Any]] = []
    samples: list[float] = []  # pairs read so far
    now = time.perf_counter
    reason: str | None = None
    loop_t0 = now()
    while reason is None:
        first = clock.mark()
        step.run(1)
        pairs.append((first, clock.mark()))
        if stop.check_due(len(pairs)):
            clock.wait(pairs[-1][1])
            samples.extend(clock.seconds_between(a, b) for a, b in pairs[len(samples):])
            if stop.precise(samples, now() - loop_t0):
                reason = STOP_PRECISION
                break
        reason = stop.limit(len(pairs), now() - loop_t0)
    clock.wait(pairs[-1][1])  # without a precision target, the loop's only host-device synchronization
    loop_t1 = now()
    mark("loop_end")
    samples.extend(clock.seconds_between(a, b) for a, b in pairs[len(samples):])
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
        stopping=stop.record(reason, samples),
    )
