"""The worker: runs exactly one cell in its own process and writes one JSON message.

``python -m harness.launch.worker REQUEST.json RESULT.json``

The request holds the cell's spec and the run settings. The result is one cell record
(``status`` ok | skipped | failed) written atomically to RESULT.json. Anything the
worker cannot report itself (a segfault, an OOM kill, a timeout) is recorded by the
parent from the exit status and the tail of the worker's output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from harness.core import registry
from harness.api import BackendConfig, SkipCell
from harness.api import Backend, Collector, Variant, Workload
from harness.core.stats import summarize
from harness.core.suite import Settings, TaskSpec
from harness.core.timing import TimingConfig, measure

MESSAGE_VERSION = 1  # version of the worker -> parent message


def empty_cell(spec: TaskSpec) -> dict[str, Any]:
    """A cell record with every field present, to be filled in."""
    return {
        "id": spec.id,
        "spec": spec.to_dict(),
        "status": "failed",
        "reason": None,
        "error": None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "duration_s": None,
        "metrics": {},
        "unavailable": {},
        "timing": {},
        "runtime": {},
        "samples_ms": [],
    }


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


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def sustained_throughput(meas: Any, global_batch: int) -> float | None:
    """Samples processed in the timed loop / the timed loop's host wall time (samples/s):
    what the machine sustained (MLPerf Offline's definition), not batch / p50, which
    overstates throughput when steps vary."""
    wall = meas.loop_wall_s
    if not wall or wall <= 0:
        return None
    return meas.steps_timed * global_batch / wall


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


Analysis = Callable[..., tuple[dict[str, Any], dict[str, str]]]


def analyses() -> list[Analysis]:
    """Post-measurement analyses run outside the timed region, in order. Each takes
    keyword arguments (step, workload, variant, spec, backend, metrics, measurement)
    and returns (metrics to add, {metric: reason unavailable})."""
    from harness.core.analyses import ANALYSES

    return list(ANALYSES)


def resolve_cell(spec: TaskSpec, settings: Settings) -> tuple[Workload, Variant, Backend]:
    """The cell's workload, variant and set-up backend (registry -> classes -> objects),
    before anything is built on the device. Raises :class:`SkipCell` with the reason
    when the cell cannot run here. Shared by the worker and the pytest plugin
    (:mod:`harness.pytest_plugin`), so both build a cell the same way."""
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
    if not workload.supports_backend(spec.backend):
        raise SkipCell(f"workload {spec.workload!r} has no implementation for backend {spec.backend!r}")
    variant = _load("variant", spec.variant)()
    if not variant.supports_backend(spec.backend):
        raise SkipCell(f"variant {spec.variant!r} is not supported on backend {spec.backend!r}")
    backend = bcls(backend_config(bcls, settings))
    backend.setup()
    return workload, variant, backend


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


def run_cell(spec: TaskSpec, settings: Settings, dp: Any = None) -> dict[str, Any]:
    """Build, warm up and time one cell in this process; never raises.

    Data-parallel cells (``spec.world_size``): with a torchrun backend this process
    only launches torchrun (see :mod:`harness.launch.distributed`), whose workers call back
    here with ``dp`` (their process-group context); an in-process backend builds the
    strategy step here."""
    cell = empty_cell(spec)
    t0 = time.perf_counter()
    step = None
    try:
        workload, variant, backend = resolve_cell(spec, settings)
        if spec.world_size is not None and dp is None:
            engine = type(backend).data_parallel
            if engine is None:
                raise SkipCell(f"backend {spec.backend!r} has no data-parallel training (world_size cells)")
            local_workers = spec.world_size // settings.nnodes
            cores = os.cpu_count() or 1
            if spec.device == "cpu" and local_workers > cores:
                raise SkipCell(f"{local_workers} CPU workers on {cores} cores would oversubscribe the CPU "
                               "(the scaling it measured would be contention, not data parallelism)")
            if spec.device.startswith("cuda") and hasattr(backend, "resolve_device"):
                try:  # one GPU per worker on each node: GPUs 0..local_workers-1 must exist
                    backend.resolve_device(f"cuda:{local_workers - 1}")
                except SkipCell as e:
                    raise SkipCell(f"{local_workers} data-parallel GPU worker(s) per node need as many GPUs: {e}") from None
            if engine == "torchrun":
                from harness.launch.distributed import launch_torchrun

                return launch_torchrun(spec, settings, empty_cell)
            if settings.nnodes > 1:
                raise SkipCell(f"backend {spec.backend!r} runs data-parallel cells in one process ({engine}); "
                               "nnodes > 1 needs torchrun (-b torch)")
            from harness.launch.distributed import InProcessContext

            dp = InProcessContext(spec.world_size)

        collectors = load_collectors(spec, settings)
        timing_cfg = TimingConfig(
            min_time_s=settings.min_time_s,
            min_samples=settings.min_samples,
            warmup_max_s=settings.warmup_max_s,
        )
        with contextlib.ExitStack() as stack:
            for col in collectors:
                stack.enter_context(col.track())
            if spec.world_size is not None:
                step = backend.prepare_data_parallel(workload, variant, spec.device, spec.batch_size,
                                                     spec.world_size, seed=settings.seed)
            else:
                step = backend.prepare(workload, variant, spec.device, spec.mode, spec.batch_size,
                                       seed=settings.seed)
            step.reset_device_peak_memory()
            probe = _contention_probe(spec, settings)
            load_before = _loadavg()
            meas = (dp.measure(step, timing_cfg, probes=[probe]) if dp is not None
                    else measure(step, timing_cfg, probes=[probe]))
            load_after = _loadavg()
            # the device peak of the timed steps alone: read before any post-measurement
            # analysis (the FLOP counter and the quality track run the model again)
            peak, peak_source = step.device_peak_memory()
            peak_extra = step.extra_metrics()
        timed_window = meas.loop_window_s
        cell["runtime"] = {**backend.runtime_info(), **step.runtime_info()}
        lat = summarize(meas.samples_ms)
        noisy = lat.pop("noisy")
        gbs = spec.global_batch_size  # samples per step over all workers
        metrics: dict[str, Any] = {
            "latency_ms": lat,
            "noisy": noisy,
            "throughput_per_s": sustained_throughput(meas, gbs),
            "throughput_p50_per_s": gbs * 1e3 / lat["p50"],
            "throughput_ci95_per_s": [gbs * 1e3 / lat["ci95_high"], gbs * 1e3 / lat["ci95_low"]],
            "first_iter_ms": meas.first_iter_s * 1e3,
            "params": int(step.params if step.params is not None else workload.analytic_params()),
            "params_analytic": int(workload.analytic_params()),
            "flops_analytic": int(workload.analytic_flops_for(gbs, spec.mode)),
        }
        if spec.world_size is not None:
            dp_info = dp.describe()
            metrics["distributed"] = {
                "world_size": spec.world_size,
                "per_worker_batch_size": spec.batch_size,
                "global_batch_size": gbs,
                # devices whose calibrated peak adds up for MFU: one GPU per worker; on
                # CPU the workers share each machine's cores
                "devices_for_peak": spec.world_size if spec.device.startswith("cuda") else max(
                    1, int(dp_info.get("nnodes", 1))),
                **dp_info,
            }
        metrics.update(variant.metrics())
        cell["unavailable"].update(variant.unavailable())
        for col in collectors:
            col.observe(meas, timed_window)
            metrics.update(col.metrics())
            cell["unavailable"].update(col.unavailable())
            for key, value in col.cell_fields().items():
                cell.setdefault(key, value)
        if spec.world_size is not None:
            extra, missing = data_parallel_analysis(metrics, workload, variant, spec)
            metrics.update(extra)
            cell["unavailable"].update(missing)
        else:
            for analysis in analyses():
                extra, missing = analysis(step=step, workload=workload, variant=variant, spec=spec,
                                          backend=backend, metrics=metrics, measurement=meas)
                metrics.update(extra)
                cell["unavailable"].update(missing)
        metrics["peak_device_mem_bytes"] = peak
        if peak is None:
            cell["unavailable"]["peak_device_mem_bytes"] = peak_source
        else:
            metrics["peak_device_mem_source"] = peak_source
            metrics["peak_device_mem_scope"] = "the timed steps (read right after the timed loop)"
        metrics.update(peak_extra)
        if "distributed" in metrics:
            if metrics.get("cross_device_ops"):
                metrics["distributed"]["comm_backend"] = f"{metrics['cross_device_ops']} (tf.distribute)"
            metrics["distributed"]["host_memory_scope"] = (
                "peak_host_mem_bytes is worker 0's process" if metrics["distributed"]["engine"].startswith("torchrun")
                else "peak_host_mem_bytes is the one process driving every replica")
        cell["metrics"] = metrics
        cell["timing"] = meas.timing_record()
        # host load around the timed loop: a loadavg above the core count means other
        # processes competed for the CPU while this cell was timed
        cell["timing"]["loadavg_1m_before"] = load_before
        cell["timing"]["loadavg_1m_after"] = load_after
        cell["timing"]["contention"] = probe.result()
        cell["samples_ms"] = meas.samples_ms
        cell["status"] = "ok"
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
            "traceback": traceback.format_exc()[-8000:],
        }
    finally:
        if step is not None:
            try:
                step.close()
            except Exception:  # noqa: BLE001
                pass
    cell["duration_s"] = time.perf_counter() - t0
    return cell


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m harness.launch.worker REQUEST.json RESULT.json", file=sys.stderr)
        return 2
    from harness.core.lifeline import bind_from_env

    bind_from_env()  # die with the runner, keep our own deadline, leave no scratch behind
    request = json.loads(Path(args[0]).read_text())
    spec = TaskSpec.from_dict(request["spec"])
    settings = Settings(**request["settings"])
    cell = run_cell(spec, settings)
    message = {"message_version": MESSAGE_VERSION, "cell": cell}
    out = Path(args[1])
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(message, allow_nan=False, default=_default))
    os.replace(tmp, out)
    return 0


def _default(o: Any) -> Any:
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)  # type: ignore[arg-type]
    if hasattr(o, "item"):
        return o.item()
    return str(o)


if __name__ == "__main__":
    sys.stdout.flush()
    raise SystemExit(main())
