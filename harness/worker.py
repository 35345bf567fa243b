"""The worker: runs exactly one cell in its own process and writes one JSON message.

``python -m harness.worker REQUEST.json RESULT.json``

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

from harness import registry
from harness.api import BackendConfig, SkipCell
from harness.api import Collector
from harness.stats import summarize
from harness.suite import Settings, TaskSpec
from harness.timing import TimingConfig, measure

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
    from harness.analysis import ANALYSES

    return list(ANALYSES)


def run_cell(spec: TaskSpec, settings: Settings) -> dict[str, Any]:
    """Build, warm up and time one cell in this process; never raises."""
    cell = empty_cell(spec)
    t0 = time.perf_counter()
    step = None
    try:
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

        collectors = load_collectors(spec, settings)
        timing_cfg = TimingConfig(
            min_time_s=settings.min_time_s,
            min_samples=settings.min_samples,
            warmup_max_s=settings.warmup_max_s,
        )
        with contextlib.ExitStack() as stack:
            for col in collectors:
                stack.enter_context(col.track())
            step = backend.prepare(workload, variant, spec.device, spec.mode, spec.batch_size, seed=settings.seed)
            step.reset_device_peak_memory()
            load_before = _loadavg()
            meas = measure(step, timing_cfg)
            load_after = _loadavg()
        timed_window = meas.loop_window_s
        cell["runtime"] = backend.runtime_info()
        lat = summarize(meas.samples_ms)
        noisy = lat.pop("noisy")
        metrics: dict[str, Any] = {
            "latency_ms": lat,
            "noisy": noisy,
            "throughput_per_s": spec.batch_size * 1e3 / lat["p50"],
            "throughput_ci95_per_s": [spec.batch_size * 1e3 / lat["ci95_high"], spec.batch_size * 1e3 / lat["ci95_low"]],
            "first_iter_ms": meas.first_iter_s * 1e3,
            "params": int(step.params if step.params is not None else workload.analytic_params()),
            "params_analytic": int(workload.analytic_params()),
            "flops_analytic": int(workload.analytic_flops_for(spec.batch_size, spec.mode)),
        }
        metrics.update(variant.metrics())
        cell["unavailable"].update(variant.unavailable())
        for col in collectors:
            col.observe(meas, timed_window)
            metrics.update(col.metrics())
            cell["unavailable"].update(col.unavailable())
            for key, value in col.cell_fields().items():
                cell.setdefault(key, value)
        for analysis in analyses():
            extra, missing = analysis(step=step, workload=workload, variant=variant, spec=spec,
                                      backend=backend, metrics=metrics, measurement=meas)
            metrics.update(extra)
            cell["unavailable"].update(missing)
        peak, source = step.device_peak_memory()
        metrics["peak_device_mem_bytes"] = peak
        if peak is None:
            cell["unavailable"]["peak_device_mem_bytes"] = source
        else:
            metrics["peak_device_mem_source"] = source
        metrics.update(step.extra_metrics())
        cell["metrics"] = metrics
        cell["timing"] = meas.timing_record()
        # host load around the timed loop: a loadavg above the core count means other
        # processes competed for the CPU while this cell was timed
        cell["timing"]["loadavg_1m_before"] = load_before
        cell["timing"]["loadavg_1m_after"] = load_after
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
        print("usage: python -m harness.worker REQUEST.json RESULT.json", file=sys.stderr)
        return 2
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
