"""Measurement, in one place: build one cell on its device, warm up, time it, and
assemble its cell record (metrics, collectors, post-measurement analyses).

Everything here runs in the process that measures: a fresh worker process
(:mod:`harness.launch.worker`), a torchrun rank (:mod:`harness.launch.torchrun`) or the
caller's own process (:mod:`harness.launch.inprocess`). Whether and how a cell runs
(which launcher, whether a data-parallel cell can run here) is decided before this
module is reached; a data-parallel cell arrives with its context ``dp`` (the lock-step
timer of a torchrun rank, or the one process driving a tf.distribute strategy).

:func:`run_cell` never raises: a :class:`~harness.api.SkipCell` becomes ``skipped``
with the reason, any other error ``failed`` with the error and traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from harness.api import Backend, BackendConfig, Collector, SkipCell, Step, Variant, Workload
from harness.core import registry
from harness.core.cells import Settings, TaskSpec, empty_cell
from harness.core.stats import summarize
from harness.core.timing import TimingConfig, measure

Analysis = Callable[..., tuple[dict[str, Any], dict[str, str]]]


# ----------------------------------------------------------------------------- resolving a cell


def _load(kind: str, name: str) -> Any:
    try:
        return registry.load(kind, name)
    except registry.UnknownName as e:
        raise SkipCell(str(e)) from None


def backend_config(bcls: Any, settings: Settings) -> BackendConfig:
    """The backend's Config, filled from the run settings with matching field names
    (threads, tpu, ...)."""
    fields = {f.name for f in dataclasses.fields(bcls.Config)}
    given = {k: v for k, v in dataclasses.asdict(settings).items() if k in fields}
    return bcls.Config(**given)


def resolve_cell(spec: TaskSpec, settings: Settings) -> tuple[Workload, Variant, Backend]:
    """The cell's workload, variant and set-up backend (registry -> classes -> objects),
    before anything is built on the device. Raises :class:`SkipCell` with the reason
    when the cell cannot run here. Shared by the launchers and the pytest plugin
    (:mod:`harness.pytest_plugin`), so every path builds a cell the same way."""
    wcls = _load("workload", spec.workload)
    if spec.mode not in wcls.modes:
        raise SkipCell(
            f"workload {spec.workload!r} does not support mode {spec.mode!r} "
            f"(supports: {', '.join(wcls.modes)})"
        )
    workload = wcls(size=spec.size)
    bcls = _load("backend", spec.backend)
    installed, why = bcls.is_installed()
    if not installed:
        raise SkipCell(f"backend {spec.backend!r} unavailable: {why}")
    if not workload.supports_backend(getattr(bcls, "builds_with", None) or spec.backend):
        raise SkipCell(workload.unsupported_reason(spec.backend))
    variant = _load("variant", spec.variant)()
    if not variant.supports_backend(spec.backend):
        raise SkipCell(registry.variant_not_supported(spec.variant, spec.backend))
    backend = bcls(backend_config(bcls, settings))
    backend.setup()
    return workload, variant, backend


def load_collectors(spec: TaskSpec, settings: Settings | None = None) -> list[Collector]:
    """Every registered collector that applies to this cell, bound to its spec (plus
    the run settings under ``"settings"``).
    A collector that fails to import raises, which fails the cell with that error."""
    out: list[Collector] = []
    bound = {**spec.to_dict(), "settings": dataclasses.asdict(settings) if settings else {}}
    for name in registry.names("collector"):
        col = registry.load("collector", name)()
        if col.applies_to(spec.to_dict()):
            col.bind(bound)
            out.append(col)
    return out


def analyses() -> list[Analysis]:
    """Post-measurement analyses run outside the timed region, in order. Each takes
    keyword arguments (step, workload, variant, spec, backend, metrics, measurement)
    and returns (metrics to add, {metric: reason unavailable})."""
    from harness.core.analyses import ANALYSES

    return list(ANALYSES)


# ----------------------------------------------------------------------------- phases


class Phases:
    """Wall time of each phase of a cell in the measuring process (seconds), for
    ``timing.phases_s``: where a cell's time goes besides its warm-up and timed loop
    (resolving the plugins, building the step, the collectors, each post-measurement
    analysis). The launcher adds what it spent outside the worker (docs/launch.md)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


# ----------------------------------------------------------------------------- the record's outcome


@contextlib.contextmanager
def recording(cell: dict[str, Any]) -> Iterator[None]:
    """Turn whatever the block raises into the cell's outcome: :class:`SkipCell` ->
    ``skipped`` with the reason; any other error -> ``failed`` with the error and its
    traceback (``KeyboardInterrupt`` propagates). Sets ``duration_s`` either way."""
    t0 = time.perf_counter()
    try:
        yield
    except SkipCell as e:
        cell["status"] = "skipped"
        cell["reason"] = str(e)
    except BaseException as e:  # noqa: BLE001 - every failure becomes a result
        if isinstance(e, KeyboardInterrupt):
            raise
        cell["status"] = "failed"
        cell["reason"] = f"{type(e).__name__}: {e}".strip()[:2000] or type(e).__name__
        cell["error"] = {
            "type": type(e).__name__,
            "message": str(e)[:4000],
            "traceback": _bounded(traceback.format_exc()),
        }
    cell["duration_s"] = time.perf_counter() - t0


def _bounded(text: str, head: int = 3000, tail: int = 6000) -> str:
    """A traceback bounded to ``head + tail`` characters, keeping both ends: a chained
    exception prints its root cause first and the outermost error last."""
    if len(text) <= head + tail:
        return text
    return f"{text[:head]}\n[... {len(text) - head - tail:,} characters of the traceback left out ...]\n{text[-tail:]}"


def run_cell(spec: TaskSpec, settings: Settings, dp: Any = None) -> dict[str, Any]:
    """Build, warm up and time one cell in this process; never raises. ``dp`` is the
    data-parallel context of a ``world_size`` cell (given by its launcher)."""
    cell = empty_cell(spec)
    phases = Phases()
    with recording(cell):
        with phases("resolve"):
            workload, variant, backend = resolve_cell(spec, settings)
        measure_into(cell, spec, settings, workload, variant, backend, dp, phases)
    return cell


def measure_into(cell: dict[str, Any], spec: TaskSpec, settings: Settings, workload: Workload, variant: Variant,
                 backend: Backend, dp: Any = None, phases: Phases | None = None) -> None:
    """Measure the resolved cell and fill ``cell`` (status ``ok``); raises on failure
    (see :func:`recording`). The step is closed afterwards, whatever happened."""
    phases = phases if phases is not None else Phases()
    with phases("collectors_load"):
        collectors = load_collectors(spec, settings)
    with contextlib.ExitStack() as cleanup:
        timed = _time_step(spec, settings, workload, variant, backend, dp, collectors, cleanup, phases)
        _assemble(cell, spec, workload, variant, backend, dp, collectors, timed, phases, settings)
        t_close = time.perf_counter()
    # the step's close is outside its ExitStack's timing otherwise
    phases.seconds["close"] = time.perf_counter() - t_close
    cell["timing"]["phases_s"] = {k: round(v, 6) for k, v in phases.seconds.items()}


# ----------------------------------------------------------------------------- timing


@dataclass
class _Timed:
    """What the timed region leaves for the record."""

    step: Step
    meas: Any  # harness.core.timing.Measurement
    probe: Any  # harness.core.contention.ContentionProbe
    load_before: float | None
    load_after: float | None
    peak: int | None
    peak_source: str
    peak_extra: dict[str, Any]


def _close_quietly(step: Step) -> None:
    try:
        step.close()
    except Exception:  # noqa: BLE001
        pass


def _time_step(spec: TaskSpec, settings: Settings, workload: Workload, variant: Variant, backend: Backend,
               dp: Any, collectors: list[Collector], cleanup: contextlib.ExitStack, phases: Phases) -> _Timed:
    """Build the step (registered with ``cleanup`` for closing) and time it, with every
    collector tracking from before the build to after the timed loop."""
    timing_cfg = TimingConfig(
        min_time_s=settings.min_time_s,
        min_samples=settings.min_samples,
        warmup_max_s=settings.warmup_max_s,
        # Settings.precision is a percent of the median; TimingConfig's a fraction
        precision=None if settings.precision is None else settings.precision / 100.0,
        max_time_s=settings.max_time_s,
    )
    with contextlib.ExitStack() as stack:
        for col in collectors:
            stack.enter_context(col.track())
        with phases("prepare"):  # build the model and apply the variant (export, convert, compile set-up)
            if spec.world_size is not None:
                step = backend.prepare_data_parallel(workload, variant, spec.device, spec.batch_size,
                                                     spec.world_size, seed=settings.seed)
            elif spec.mode == "generate":
                step = backend.prepare_generate(workload, variant, spec.device, spec.batch_size,
                                                int(spec.prompt_len or 0), int(spec.gen_len or 0), seed=settings.seed)
            else:
                step = backend.prepare(workload, variant, spec.device, spec.mode, spec.batch_size,
                                       seed=settings.seed)
            cleanup.callback(_close_quietly, step)
            step.reset_device_peak_memory()
        probe = _contention_probe(spec, settings)
        load_before = _loadavg()
        with phases("measure"):  # first step, warm-up and the timed loop (timing.warmup_s, loop_wall_s)
            meas = (dp.measure(step, timing_cfg, probes=[probe]) if dp is not None
                    else measure(step, timing_cfg, probes=[probe]))
        load_after = _loadavg()
        # the device peak of the timed steps alone: read before any post-measurement
        # analysis (the FLOP counter and the quality track run the model again)
        peak, peak_source = step.device_peak_memory()
        peak_extra = step.extra_metrics()
    return _Timed(step, meas, probe, load_before, load_after, peak, peak_source, peak_extra)


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def _contention_probe(spec: TaskSpec, settings: Settings) -> Any:
    """A :class:`harness.core.contention.ContentionProbe` for this cell: the CPU threads the
    cell uses (its thread setting, else every core it may run on; a GPU cell's host
    side is one thread) and, on CUDA, the GPU to watch for other processes."""
    from harness.core.contention import ContentionProbe, process_cpus

    # every CPU any of our threads may use (OpenMP binding can pin the main thread to one)
    ncpu = len(process_cpus()) or os.cpu_count() or 1
    if spec.device.startswith("cuda"):
        threads = 1
    elif spec.world_size is not None:
        threads = min(ncpu, (settings.worker_threads or 1) * max(1, spec.world_size // settings.nnodes))
    else:
        threads = min(ncpu, settings.threads or ncpu)
    # torchrun workers: the other local ranks (our siblings) are the cell's own work
    torchrun = spec.world_size is not None and "LOCAL_RANK" in os.environ
    return ContentionProbe(threads=threads, device=spec.device, siblings=torchrun)


# ----------------------------------------------------------------------------- the record


def sustained_throughput(meas: Any, global_batch: int) -> float | None:
    """Samples processed in the timed loop / the timed loop's host wall time (samples/s):
    what the machine sustained (MLPerf Offline's definition), not batch / p50, which
    overstates throughput when steps vary."""
    wall = meas.loop_wall_s
    if not wall or wall <= 0:
        return None
    return meas.steps_timed * global_batch / wall


def _assemble(cell: dict[str, Any], spec: TaskSpec, workload: Workload, variant: Variant, backend: Backend,
              dp: Any, collectors: list[Collector], timed: _Timed, phases: Phases,
              settings: Settings | None = None) -> None:
    """Fill ``cell`` from the timed region: metrics, what the variant, collectors and
    analyses add, the timing record and the raw samples; status ``ok``."""
    step, meas = timed.step, timed.meas
    cell["runtime"] = {**backend.runtime_info(), **step.runtime_info()}
    model_info = workload.model_info(spec.backend)
    if model_info:
        cell["model"] = model_info
    metrics = _core_metrics(spec, workload, step, meas)
    if metrics["flops_analytic"] is None:
        cell["unavailable"]["flops_analytic"] = (f"workload {spec.workload!r} has no analytic FLOP formula: "
                                                 "metrics.flops comes from the backend's FLOP counter where it "
                                                 "has one (flops_source)")
    if spec.world_size is not None:
        metrics["distributed"] = _distributed_metrics(spec, dp)
    metrics.update(variant.metrics())
    cell["unavailable"].update(variant.unavailable())
    with phases("collectors"):
        for col in collectors:
            col.observe(meas, meas.loop_window_s)
            metrics.update(col.metrics())
            cell["unavailable"].update(col.unavailable())
            for key, value in col.cell_fields().items():
                cell.setdefault(key, value)
    if spec.mode == "generate":
        metrics["generation"] = _generation_metrics(spec, settings, step, meas)
    _run_analyses(cell, metrics, spec, workload, variant, backend, step, meas, phases)
    if spec.mode == "generate":
        _generation_flops(cell, metrics)
    _peak_memory(cell, metrics, timed)
    if "distributed" in metrics:
        _finish_distributed(metrics, step)
    cell["metrics"] = metrics
    cell["timing"] = meas.timing_record()
    # host load around the timed loop: a loadavg above the core count means other
    # processes competed for the CPU while this cell was timed
    cell["timing"]["loadavg_1m_before"] = timed.load_before
    cell["timing"]["loadavg_1m_after"] = timed.load_after
    cell["timing"]["contention"] = timed.probe.result()
    cell["samples_ms"] = meas.samples_ms
    cell["status"] = "ok"


def _core_metrics(spec: TaskSpec, workload: Workload, step: Step, meas: Any) -> dict[str, Any]:
    """Latency statistics, throughput, first iteration, parameters and analytic FLOPs."""
    lat = summarize(meas.samples_ms)
    noisy = lat.pop("noisy")
    gbs = spec.global_batch_size  # samples per step over all workers
    return {
        "latency_ms": lat,
        "noisy": noisy,
        "throughput_per_s": sustained_throughput(meas, gbs),
        "throughput_p50_per_s": gbs * 1e3 / lat["p50"],
        "throughput_ci95_per_s": [gbs * 1e3 / lat["ci95_high"], gbs * 1e3 / lat["ci95_low"]],
        "first_iter_ms": meas.first_iter_s * 1e3,
        "params": int(step.params if step.params is not None else workload.analytic_params()),
        "params_analytic": int(workload.analytic_params()),
        "flops_analytic": _int_or_none(workload.analytic_flops_for(gbs, spec.mode)),
    }


def _int_or_none(x: Any) -> int | None:
    return None if x is None else int(x)


def _distributed_metrics(spec: TaskSpec, dp: Any) -> dict[str, Any]:
    """``metrics.distributed`` of a data-parallel cell (scaling is added by the runner)."""
    dp_info = dp.describe()
    return {
        "world_size": spec.world_size,
        "per_worker_batch_size": spec.batch_size,
        "global_batch_size": spec.global_batch_size,
        # devices whose calibrated peak adds up for MFU: one GPU per worker; on
        # CPU the workers share each machine's cores
        "devices_for_peak": spec.world_size if spec.device.startswith("cuda") else max(
            1, int(dp_info.get("nnodes", 1))),
        **dp_info,
    }


def _generation_metrics(spec: TaskSpec, settings: Settings | None, step: Any, meas: Any) -> dict[str, Any]:
    """``metrics.generation`` from the timed requests' raw token times, the KV cache
    measured at the end of the last request against the config's size."""
    from harness.core import generation
    from harness.core.cells import parse_slo

    n_timed = len(meas.samples_ms) * int(meas.iters_per_sample)
    requests = list(step.requests)[-n_timed:]
    slo = parse_slo(settings.slo) if settings is not None and settings.slo else None
    gen = generation.summarize(requests, spec.batch_size, int(spec.prompt_len or 0), int(spec.gen_len or 0), slo)
    measured = step.kv_cache_measured_bytes() if hasattr(step, "kv_cache_measured_bytes") else None
    cached_positions = int(spec.prompt_len or 0) + int(spec.gen_len or 0) - 1  # the last token is not cached
    dtype_bytes = _cache_dtype_bytes(step)
    expected = generation.kv_cache_bytes(getattr(step.model, "config", None), spec.batch_size, cached_positions,
                                         dtype_bytes) if dtype_bytes else None
    gen["kv_cache"] = {
        "bytes_measured": measured, "bytes_from_config": expected, "cached_positions": cached_positions,
        "method": "measured: the key/value tensors of the cache after the last request; from config: 2 x layers x "
                  "KV heads x head dim x positions x batch x bytes per element",
    }
    return gen


def _cache_dtype_bytes(step: Any) -> int | None:
    cache = getattr(step, "last_cache", None)
    if cache is None:
        return None
    from harness.core.frameworks.torch_generate import cache_element_size

    return cache_element_size(cache)


def _generation_flops(cell: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Prefill and decode achieved FLOP/s from the counted split (the FLOP analysis)."""
    from harness.core import generation

    gen = metrics["generation"]
    pre, dec = metrics.pop("prefill_flops", None), metrics.pop("decode_flops", None)
    gen.update(generation.phase_rates(gen, pre, dec))
    if pre is None or dec is None:
        cell["unavailable"]["generation.prefill_flops"] = cell["unavailable"].get(
            "flops", "the FLOP counter did not split this cell's request into prefill and decode")


def _finish_distributed(metrics: dict[str, Any], step: Step) -> None:
    d = metrics["distributed"]
    d.update(step.distributed_info())  # e.g. the in-graph all-reduce a strategy step uses
    d["host_memory_scope"] = (
        "peak_host_mem_bytes is worker 0's process" if d["engine"].startswith("torchrun")
        else "peak_host_mem_bytes is the one process driving every replica")


def _run_analyses(cell: dict[str, Any], metrics: dict[str, Any], spec: TaskSpec, workload: Workload,
                  variant: Variant, backend: Backend, step: Step, meas: Any, phases: Phases | None = None) -> None:
    """The post-measurement analyses (FLOP counter, quality, ...), outside the timed
    region; a data-parallel cell gets only its analytic FLOPs."""
    phases = phases if phases is not None else Phases()
    if spec.world_size is not None:
        with phases("analysis:flops"):
            extra, missing = data_parallel_analysis(metrics, workload, variant, spec)
        metrics.update(extra)
        cell["unavailable"].update(missing)
        return
    for analysis in analyses():
        name = getattr(analysis, "__name__", "analysis").lstrip("_")
        with phases(f"analysis:{name}"):
            extra, missing = analysis(step=step, workload=workload, variant=variant, spec=spec,
                                      backend=backend, metrics=metrics, measurement=meas)
        metrics.update(extra)
        cell["unavailable"].update(missing)


def _peak_memory(cell: dict[str, Any], metrics: dict[str, Any], timed: _Timed) -> None:
    metrics["peak_device_mem_bytes"] = timed.peak
    if timed.peak is None:
        cell["unavailable"]["peak_device_mem_bytes"] = timed.peak_source
    else:
        metrics["peak_device_mem_source"] = timed.peak_source
        metrics["peak_device_mem_scope"] = "the timed steps (read right after the timed loop)"
    metrics.update(timed.peak_extra)


def data_parallel_analysis(metrics: dict[str, Any], workload: Any = None, variant: Any = None,
                           spec: TaskSpec | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """FLOPs of a data-parallel cell: the analytic count of the global batch of the model
    the cell runs (a distilled student or structurally pruned model, not the workload's
    teacher: :func:`harness.core.flops.run_model_analytic_flops`). The FLOP counter and the
    quality model are not run: they would execute the DDP model outside the workers'
    lock-step loop. The single-process cell of the same spec has them."""
    why = ("not computed for data-parallel cells (it would run the model outside the workers' lock-step "
           "loop); see the single-process cell of the same workload")
    p50_ms = metrics["latency_ms"]["p50"]
    flops: int | None = metrics["flops_analytic"]
    what = "the workload's analytic formula"
    if workload is not None and spec is not None:
        from harness.core.flops import run_model_analytic_flops

        flops, what = run_model_analytic_flops(workload, variant, spec.global_batch_size, "training")
    out: dict[str, Any] = {
        "flops": flops,
        "flops_source": "analytic" if flops is not None else None,
        "flops_source_reason": "FlopCounterMode " + why + f"; analytic count: {what}",
        "flops_scope": "forward + backward (optimizer step excluded), all workers",
        "achieved_flops_per_s": flops / (p50_ms / 1e3) if flops is not None else None,
        "achieved_flops_per_s_analytic": flops / (p50_ms / 1e3) if flops is not None else None,
        "bytes_moved_estimate": None,
        "arithmetic_intensity_flop_per_byte": None,
        "mfu": None,
    }
    missing = {
        "bytes_moved_estimate": "byte count " + why,
        "arithmetic_intensity_flop_per_byte": "byte count " + why,
        "quality": "quality is evaluated on inference cells only",
        "mfu": "needs the run's calibration; set by the runner (run `harness calibrate` first)",
    }
    if flops is None:
        if metrics.get("flops_analytic") is not None:
            out["flops_analytic_workload"] = metrics["flops_analytic"]
        out["flops_analytic"] = None
        for k in ("flops", "flops_analytic", "achieved_flops_per_s", "achieved_flops_per_s_analytic", "mfu"):
            missing[k] = f"no analytic FLOP count of the model this cell runs: {what}"
    elif flops != metrics.get("flops_analytic"):
        out["flops_analytic_workload"] = metrics.get("flops_analytic")
        out["flops_analytic"] = flops
        out["flops_analytic_source"] = what
    return out, missing
