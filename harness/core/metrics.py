"""The declared metric table: every metric a cell can carry, with its unit, its
direction (is lower or higher better?), its scope and whether the regression gate may
use it.

Why a table: the direction of a metric used to be guessed from substrings of its name
(``"per_s"`` in ``energy_per_sample_j`` made a 20% energy *saving* a regression).
Now the worker, ``compare``, ``history``, ``export`` and the reports all read this one
table; nothing guesses a direction from a name. A metric that is not declared here is
refused by ``compare --metric`` with the list of gateable ones.

Names are the dotted paths inside a cell's ``metrics`` (``energy.energy_per_sample_j``,
``quality.accuracy``); :func:`lookup` also accepts the last path component when it is
unambiguous (``energy_per_sample_j``), as the old CLI did.

Units: ``ms``, ``s``, ``bytes``, ``J``, ``W``, ``FLOP``, ``FLOP/s``, ``samples/s``,
``samples/J``, ``FLOP/byte``, ``%``, ``MHz``, ``count``; ``""`` is a dimensionless
ratio (MFU, accuracy, efficiency) and is shown without a unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from harness.errors import UserError

LOWER = "lower"
HIGHER = "higher"


@dataclass(frozen=True)
class Metric:
    """One declared metric. ``direction`` is ``"lower"``/``"higher"`` (which is better)
    or None for descriptive values (parameter counts, FLOPs per step) that are neither
    better nor worse; only metrics with a direction can be ``gateable``."""

    name: str
    unit: str
    direction: str | None
    description: str
    scope: str = "cell"
    gateable: bool = False
    # computed from a cell's raw per-iteration samples (not read from metrics)
    from_samples: bool = False

    def __post_init__(self) -> None:
        if self.direction not in (LOWER, HIGHER, None):
            raise ValueError(f"direction must be 'lower', 'higher' or None, got {self.direction!r}")
        if self.gateable and self.direction is None:
            raise ValueError(f"metric {self.name!r}: a gateable metric needs a direction")

    @property
    def higher_is_better(self) -> bool:
        return self.direction == HIGHER


def _m(name: str, unit: str, direction: str | None, description: str, scope: str = "cell",
       gateable: bool = False, from_samples: bool = False) -> Metric:
    return Metric(name, unit, direction, description, scope, gateable, from_samples)


_LAT_STATS = ("p50", "p90", "p99", "mean", "min", "max")

METRICS: tuple[Metric, ...] = (
    # ---- time
    _m("latency_ms", "ms", LOWER, "per-step latency from the raw samples (compare uses the chosen location "
       "statistic of each worker process's samples)", "one step", True, True),
    *(_m(f"latency_ms.{s}", "ms", LOWER, f"{s} of the per-step latency samples", "one step", True)
      for s in _LAT_STATS),
    _m("latency_ms.std", "ms", None, "standard deviation of the per-step latency samples", "one step"),
    _m("latency_ms.iqr", "ms", None, "interquartile range of the per-step latency samples", "one step"),
    _m("latency_ms.ci95_low", "ms", None, "95% CI of the median latency, lower end (bootstrap; order statistics above 10,000 samples: ci95_method; widened for autocorrelation)", "one step"),
    _m("latency_ms.ci95_high", "ms", None, "95% CI of the median latency, upper end (bootstrap; order statistics above 10,000 samples: ci95_method; widened for autocorrelation)", "one step"),
    _m("latency_ms.ci95_correlation_inflation", "", None, "variance inflation of the samples' autocorrelation "
       "(batch means), present when ci95_low/high were widened by its square root", "one step"),
    _m("latency_ms.cv", "", None, "coefficient of variation of the latency samples", "one step"),
    _m("latency_ms.iqr_over_median", "", None, "IQR / median of the latency samples (noise flag > 0.10)",
       "one step"),
    _m("throughput_per_s", "samples/s", HIGHER, "sustained throughput: samples processed in the timed loop / "
       "the timed loop's wall time (MLPerf Offline's definition)", "timed loop, all workers", True),
    _m("throughput_p50_per_s", "samples/s", HIGHER, "batch / median step latency (a per-step rate; higher "
       "than the sustained throughput when steps vary)", "one step", True),
    _m("throughput_ci95_per_s", "samples/s", None, "batch / the 95% CI of the median latency (interval)",
       "one step"),
    _m("first_iter_ms", "ms", LOWER, "the first step's time (cold start: allocation, lazy init, compilation)",
       "first step", True),
    _m("compile_time_s", "s", LOWER, "time to compile the model (compile variant)", "set-up", True),
    _m("quantize_time_s", "s", None, "time to quantize the model (int8 variants)", "set-up"),
    _m("distill_time_s", "s", None, "time to distil the student (distill variant)", "set-up"),
    _m("distill_epochs", "count", None, "distillation epochs", "set-up"),
    # ---- memory
    _m("peak_host_mem_bytes", "bytes", LOWER, "peak resident set size of the worker process",
       "worker process (host)", True),
    _m("host_mem_baseline_bytes", "bytes", None, "resident set size before the model was built",
       "worker process (host)"),
    _m("host_mem_increase_bytes", "bytes", LOWER, "peak minus baseline resident set size (can be 0: not "
       "gateable, changes are ratios)", "worker process (host)"),
    _m("peak_device_mem_bytes", "bytes", LOWER, "peak device memory held by tensors during the timed steps",
       "device (GPU/TPU)", True),
    _m("peak_device_mem_reserved_bytes", "bytes", LOWER, "peak device memory reserved by the caching allocator",
       "device (GPU)", True),
    _m("model_size_bytes", "bytes", LOWER, "serialized model size", "model", True),
    # ---- model size and work
    _m("params", "count", None, "parameters of the model as run", "model"),
    _m("params_analytic", "count", None, "parameters from the workload's formula", "model"),
    _m("nonzero_params", "count", None, "parameters that are not zero (pruning)", "model"),
    _m("flops", "FLOP", None, "FLOPs per step (counted, else analytic; see flops_source)", "one step"),
    _m("flops_counted", "FLOP", None, "FLOPs per step counted by FlopCounterMode", "one step"),
    _m("flops_analytic", "FLOP", None, "FLOPs per step from the analytic formula of the model the cell runs "
       "(a distilled student or pruned model where the variant changes it)", "one step"),
    _m("flops_analytic_workload", "FLOP", None, "FLOPs per step of the workload's own (teacher) model, kept "
       "where the variant runs a different model", "one step"),
    _m("flops_analytic_ratio", "", None, "counted / analytic FLOPs (cross-check)", "one step"),
    _m("achieved_flops_per_s", "FLOP/s", HIGHER, "FLOPs per step / median step latency", "one step", True),
    _m("achieved_flops_per_s_analytic", "FLOP/s", HIGHER, "analytic FLOPs per step / median step latency",
       "one step", True),
    _m("mfu", "", HIGHER, "model FLOPs utilisation: achieved FLOP/s / the calibrated peak of the device "
       "at the cell's precision and thread count", "device", True),
    _m("mfu_peak_flops_per_s", "FLOP/s", None, "the calibrated peak MFU is relative to", "device"),
    _m("mfu_peak_threads", "count", None, "CPU threads of the calibration MFU is relative to", "device"),
    _m("roofline_attainable_flops_per_s", "FLOP/s", None, "min(peak, intensity x bandwidth)", "device"),
    _m("bytes_moved_estimate", "bytes", None, "estimated bytes moved per step (estimate; see method)",
       "one step"),
    _m("arithmetic_intensity_flop_per_byte", "FLOP/byte", None, "flops / bytes_moved_estimate", "one step"),
    # ---- energy and power
    _m("energy.energy_j", "J", LOWER, "energy over the timed loop", "see energy.scope", True),
    _m("energy.energy_net_j", "J", LOWER, "energy over the timed loop minus idle power x time",
       "see energy.scope", True),
    _m("energy.energy_per_sample_j", "J", LOWER, "energy per processed sample", "see energy.scope", True),
    _m("energy.energy_per_sample_net_j", "J", LOWER, "net (above idle) energy per processed sample",
       "see energy.scope", True),
    _m("energy.energy_per_step_j", "J", LOWER, "energy per step", "see energy.scope", True),
    # power is neither better nor worse by itself (a faster kernel may draw more power
    # and still use less energy): gate energy per sample instead
    _m("energy.avg_power_w", "W", None, "mean power over the timed loop", "see energy.scope"),
    _m("energy.peak_power_w", "W", None, "peak power over the timed loop", "see energy.scope"),
    _m("energy.idle_power_w", "W", None, "idle power measured before the cell", "see energy.scope"),
    _m("energy.samples_per_j", "samples/J", HIGHER, "samples per joule (energy efficiency)",
       "see energy.scope", True),
    # ---- utilisation
    _m("utilisation.cpu_percent_mean", "%", None, "system-wide CPU busy over the timed loop", "host"),
    _m("utilisation.process_cpu_percent_mean", "%", None, "the worker's CPU use over the timed loop",
       "worker process"),
    _m("utilisation.gpu_util_percent_mean", "%", None, "GPU busy (NVML) over the timed loop", "device (GPU)"),
    _m("utilisation.sm_clock_mhz_mean", "MHz", None, "mean SM clock over the timed loop", "device (GPU)"),
    # ---- quality
    _m("quality.accuracy", "", HIGHER, "accuracy on the held-out digits split", "model", True),
    _m("quality.fp32_accuracy", "", None, "the fp32 baseline's accuracy on the same split", "model"),
    # a difference (0 for fp32, negative for most compression): the gate compares ratios,
    # so gate quality.accuracy instead
    _m("quality.accuracy_delta", "", HIGHER, "accuracy minus the fp32 baseline's", "model"),
    _m("quality.agreement", "", HIGHER, "share of predictions equal to the fp32 baseline's", "model", True),
    _m("quality.n_eval", "count", None, "evaluation examples", "model"),
    _m("quality.n_train", "count", None, "training examples of the quality model", "model"),
    # ---- variant details
    _m("onnx_fp32_size_bytes", "bytes", None, "size of the fp32 ONNX export the int8 model came from", "model"),
    _m("student_params_analytic", "count", None, "parameters of the distilled student (formula)", "model"),
    _m("student_flops_forward_per_sample", "FLOP", None, "forward FLOPs per sample of the student", "model"),
    _m("teacher_params", "count", None, "parameters of the distillation teacher", "model"),
    _m("latency_ms.n", "count", None, "number of latency samples", "one step"),
    # ---- energy bookkeeping
    _m("energy.idle_s", "s", None, "idle-power baseline duration before the cell", "see energy.scope"),
    _m("energy.window_s", "s", None, "energy measurement window (the timed loop)", "see energy.scope"),
    _m("energy.sampler_reads_in_window", "count", None, "power/energy reads inside the window", "see energy.scope"),
    # ---- data parallel
    _m("distributed.world_size", "count", None, "data-parallel workers", "all workers"),
    _m("distributed.per_worker_batch_size", "count", None, "batch per worker", "all workers"),
    _m("distributed.global_batch_size", "count", None, "batch over all workers", "all workers"),
    _m("distributed.devices_for_peak", "count", None, "calibrated devices MFU adds up", "all workers"),
    _m("distributed.nnodes", "count", None, "machines", "all workers"),
    _m("distributed.workers_per_node", "count", None, "workers per machine", "all workers"),
    _m("distributed.threads_per_worker", "count", None, "CPU threads per worker", "all workers"),
    _m("distributed.steps_timed", "count", None, "lock-step steps timed", "all workers"),
    _m("distributed.wall_per_step_ms", "ms", None, "timed loop wall time / steps", "all workers"),
    _m("distributed.per_step_spread_p50_ms", "ms", None, "median per-step spread between workers", "all workers"),
    _m("distributed.speedup_vs_1", "", HIGHER, "throughput / the 1-worker cell's throughput",
       "all workers", True),
    _m("distributed.scaling_efficiency", "", HIGHER, "speedup / world size (1.0 = linear scaling)",
       "all workers", True),
)

_GEN_TIMES = {
    "ttft_ms": "time to first token (prefill) per request",
    "tpot_ms": "time per output token after the first, per request: (e2e - ttft) / (gen_len - 1)",
    "itl_ms": "inter-token latency: every gap between consecutive generated tokens",
    "e2e_ms": "end-to-end time of a request (gen_len tokens)",
}

GENERATION_METRICS: tuple[Metric, ...] = (
    # generate cells (docs/generation.md): raw per-token times in generation.requests
    *(_m(f"generation.{k}", "ms", LOWER, f"{d} (compare recomputes it from the raw per-token times)", "one request",
         True, True) for k, d in _GEN_TIMES.items()),
    *(_m(f"generation.{k}.{s}", "ms", LOWER, f"{s} of the {d}", "one request", True)
      for k, d in _GEN_TIMES.items() for s in _LAT_STATS),
    _m("generation.prefill_tokens_per_s", "tokens/s", HIGHER, "batch x prompt_len / median TTFT", "one request", True),
    _m("generation.output_tokens_per_s", "tokens/s", HIGHER, "batch x gen_len / median end-to-end time",
       "one request", True),
    _m("generation.goodput.requests_meeting_slo", "", HIGHER, "share of timed requests meeting every SLO",
       "all requests", True),
    _m("generation.goodput.output_tokens_per_s", "tokens/s", HIGHER,
       "output tokens of the requests meeting every SLO per second of all requests", "all requests", True),
    _m("generation.kv_cache.bytes_measured", "bytes", LOWER, "KV cache after a request (its key/value tensors)",
       "one request"),
    _m("generation.kv_cache.bytes_from_config", "bytes", None, "KV cache size from the model config", "one request"),
    _m("generation.kv_cache.cached_positions", "count", None, "positions in the KV cache (prompt + generated - 1)",
       "one request"),
    _m("generation.requests_timed", "count", None, "requests in the timed loop", "cell"),
    _m("generation.prefill_flops", "FLOP", None, "FLOPs of one request's prefill (counted)", "one request"),
    _m("generation.decode_flops", "FLOP", None, "FLOPs of one request's decode steps (counted)", "one request"),
    _m("generation.prefill_achieved_flops_per_s", "FLOP/s", HIGHER, "prefill FLOPs / median TTFT", "one request"),
    _m("generation.decode_achieved_flops_per_s", "FLOP/s", HIGHER, "decode FLOPs / median decode time",
       "one request"),
    _m("generation.prefill_mfu", "", HIGHER, "prefill achieved FLOP/s / the calibrated peak (as mfu)", "one request"),
    _m("generation.decode_mfu", "", HIGHER, "decode achieved FLOP/s / the calibrated peak (as mfu)", "one request"),
)
METRICS = METRICS + GENERATION_METRICS

TABLE: dict[str, Metric] = {m.name: m for m in METRICS}

# numbers inside a cell's metrics that describe a configuration, not a measurement
# (the quality model's architecture and training recipe): not metrics, never gated
# (quality.variant_metrics: the variant's own metrics from preparing the quality model)
CONFIG_PREFIXES = ("quality.quality_config.", "quality.trained.", "quality.gate.", "quality.variant_metrics.",
                   "generation.slo.", "generation.batch_size", "generation.prompt_len", "generation.gen_len",
                   "generation.requests")


def undeclared(cells: Iterable[Mapping[str, object]]) -> list[str]:
    """Numeric values in the metrics of ``cells`` that are neither declared metrics nor
    configuration (:data:`CONFIG_PREFIXES`): a new metric someone forgot to declare."""
    seen: set[str] = set()
    for cell in cells:
        if isinstance(cell, Mapping):
            _walk("", cell.get("metrics") or {}, seen)
    return sorted(n for n in seen if lookup(n) is None and not n.startswith(CONFIG_PREFIXES))


class UnknownMetric(UserError, KeyError):
    """A metric name that is not in the declared table."""


def lookup(name: str) -> Metric | None:
    """The declared metric ``name`` (a dotted path) or, when unambiguous, the metric
    whose last component is ``name`` (``energy_per_sample_j``); None if undeclared."""
    if name in TABLE:
        return TABLE[name]
    tails = [m for m in METRICS if m.name.rsplit(".", 1)[-1] == name]
    return tails[0] if len(tails) == 1 else None


def get(name: str) -> Metric:
    """Like :func:`lookup`, raising :class:`UnknownMetric` (listing the gateable ones)."""
    m = lookup(name)
    if m is None:
        raise UnknownMetric(f"undeclared metric {name!r}; gateable metrics: {', '.join(gateable_names())}")
    return m


def gateable_names() -> list[str]:
    return [m.name for m in METRICS if m.gateable]


def direction(name: str) -> str | None:
    """``"lower"``, ``"higher"`` or None (undeclared or descriptive)."""
    m = lookup(name)
    return m.direction if m else None


def higher_is_better(name: str) -> bool:
    """True only for declared higher-is-better metrics (never guessed from the name)."""
    m = lookup(name)
    return bool(m and m.direction == HIGHER)


def unit(name: str) -> str | None:
    """The declared unit of ``name`` (``""`` for a ratio), None if undeclared."""
    m = lookup(name)
    return m.unit if m else None


def _walk(prefix: str, value: object, out: set[str]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _walk(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out.add(prefix)


def present(cells: Iterable[Mapping[str, object]]) -> list[str]:
    """Declared metrics that at least one ok cell of ``cells`` has a number for
    (``latency_ms`` when a cell has samples), sorted."""
    seen: set[str] = set()
    for cell in cells:
        if not isinstance(cell, Mapping) or cell.get("status") != "ok":
            continue
        if cell.get("samples_ms"):
            seen.add("latency_ms")
        gen = (cell.get("metrics") or {}).get("generation") if isinstance(cell.get("metrics"), Mapping) else None
        if isinstance(gen, Mapping) and gen.get("requests"):  # raw per-token times: from_samples metrics
            seen.update(m.name for m in GENERATION_METRICS if m.from_samples)
        _walk("", cell.get("metrics") or {}, seen)
    return sorted(n for n in seen if n in TABLE)
