"""Generation metrics (``mode: generate``) from raw per-token times.

One *request* is one greedy generation of ``gen_len`` tokens for a batch of
``batch_size`` prompts of ``prompt_len`` tokens, with the KV cache on and no early end.
The step records, per request, the start time and one timestamp per generated token,
taken on the host after the token's forward has finished (after a device
synchronisation on GPUs): the first stamp ends the prefill (the first forward over the
prompt), each later stamp ends one decode step. The step gives them either as integer
nanoseconds (``{"t0_ns": int, "stamps_ns": [int, ...]}``, ``time.perf_counter_ns``) or
as seconds (``{"t0": s, "stamps": [s, ...]}``, rounded to whole nanoseconds here).

The cell keeps the raw times, in integer nanoseconds, as ``metrics.generation.requests``
(``[{"ttft_ns": int, "itl_ns": [int, ...]}, ...]``), and everything below is computed
from them, so compare and history can recompute it. Integers make the relations exact,
not merely close: per request,

* ``ttft`` = first stamp - start (time to first token);
* ``itl`` = the ``gen_len - 1`` gaps between consecutive stamps (inter-token latency);
* ``e2e`` = ``ttft + sum(itl)`` = last stamp - start;
* ``tpot`` = ``(e2e - ttft) / (gen_len - 1)`` = ``sum(itl) / (gen_len - 1)`` = the mean of
  the request's ``itl`` (time per output token after the first).

Each value in ms is the integer nanoseconds divided by 10**6 in one correctly rounded
division (``tpot_ms`` = ``(e2e_ns - ttft_ns) / ((gen_len - 1) * 10**6)``), so equal
rationals give equal floats. Over requests: p50/p90/p99 (numpy's linear interpolation),
mean, min and max of ``ttft_ms``, ``tpot_ms``, ``e2e_ms``; of ``itl_ms`` over every gap
of every request. Throughput: ``prefill_tokens_per_s`` = ``batch x prompt_len /
median ttft`` and ``output_tokens_per_s`` = ``batch x gen_len / median e2e``. With SLOs,
``goodput`` is the share of requests meeting every objective and the output tokens/s
those requests delivered (docs/generation.md).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

PERCENTILES = (50, 90, 99)
NS_PER_MS = 1_000_000
#: the per-request times an SLO may bound (harness.core.cells.SLO_METRICS)
TIMES = ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms")
METHOD = ("every generated token timed on the host (perf_counter_ns) after its forward finished (a device "
          "synchronisation per token on GPUs); greedy, gen_len tokens, no early end, KV cache on, after warm-up "
          "requests: ttft = first token - start, itl = gaps between tokens, e2e = ttft + sum(itl), "
          "tpot = (e2e - ttft) / (gen_len - 1) = mean(itl), exact on the integer nanoseconds kept in requests")


def _ns_times(request: Mapping[str, Any]) -> tuple[int, list[int]]:
    """(start, token stamps) of one step request in integer nanoseconds."""
    if "stamps_ns" in request:
        t0, stamps = request["t0_ns"], list(request["stamps_ns"])
        if isinstance(t0, bool) or not isinstance(t0, int) or not all(
                isinstance(s, int) and not isinstance(s, bool) for s in stamps):
            raise ValueError("t0_ns and stamps_ns must be integer nanoseconds")
        return t0, stamps
    # seconds (a float clock): whole nanoseconds, so the relations below stay exact
    return round(float(request["t0"]) * 1e9), [round(float(s) * 1e9) for s in request["stamps"]]


def raw_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """The stored raw times of one request: ``{"ttft_ns": int, "itl_ns": [int, ...]}``."""
    t0, stamps = _ns_times(request)
    if len(stamps) < 2:
        raise ValueError("a request needs at least 2 generated tokens (gen_len >= 2)")
    if stamps[0] < t0 or any(b < a for a, b in zip(stamps, stamps[1:])):
        raise ValueError("token stamps must not go back in time (use a monotonic clock)")
    return {"ttft_ns": stamps[0] - t0, "itl_ns": [b - a for a, b in zip(stamps, stamps[1:])]}


def request_times(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The per-request times in ms of one stored raw request (``ttft_ns``, ``itl_ns``)."""
    ttft, itl = int(raw["ttft_ns"]), [int(g) for g in raw["itl_ns"]]
    if not itl:
        raise ValueError("a request needs at least 2 generated tokens (gen_len >= 2)")
    e2e = ttft + sum(itl)
    return {
        "ttft_ms": ttft / NS_PER_MS,
        "itl_ms": [g / NS_PER_MS for g in itl],
        "e2e_ms": e2e / NS_PER_MS,
        "tpot_ms": (e2e - ttft) / (len(itl) * NS_PER_MS),
    }


def _dist(values: Sequence[float]) -> dict[str, float]:
    x = np.asarray(values, dtype=float)
    out = {f"p{p}": float(np.percentile(x, p)) for p in PERCENTILES}
    out["mean"] = float(x.mean())
    out["min"] = float(x.min())
    out["max"] = float(x.max())
    return out


def summarize(requests: Sequence[Mapping[str, Any]], batch_size: int, prompt_len: int, gen_len: int,
              slo: Mapping[str, float] | None = None) -> dict[str, Any]:
    """``metrics.generation`` from the step's raw ``requests`` (see the module doc); each
    must have ``gen_len`` token stamps. ``slo``: ``{"ttft_ms": 500, ...}`` upper bounds."""
    if not requests:
        raise ValueError("no timed requests")
    raws = [raw_request(r) for r in requests]
    for r in raws:
        if len(r["itl_ns"]) != gen_len - 1:
            raise ValueError(f"a request has {len(r['itl_ns']) + 1} token stamps, expected gen_len = {gen_len}")
    return summarize_raw(raws, batch_size, prompt_len, gen_len, slo)


def summarize_raw(raws: Sequence[Mapping[str, Any]], batch_size: int, prompt_len: int, gen_len: int,
                  slo: Mapping[str, float] | None = None) -> dict[str, Any]:
    """``metrics.generation`` from stored raw requests (``{"ttft_ns", "itl_ns"}``)."""
    per = [request_times(r) for r in raws]
    ttft = [p["ttft_ms"] for p in per]
    e2e = [p["e2e_ms"] for p in per]
    out: dict[str, Any] = {
        "requests_timed": len(per),
        "batch_size": batch_size, "prompt_len": prompt_len, "gen_len": gen_len,
        "ttft_ms": _dist(ttft), "tpot_ms": _dist([p["tpot_ms"] for p in per]),
        "itl_ms": _dist([g for p in per for g in p["itl_ms"]]), "e2e_ms": _dist(e2e),
        "prefill_tokens_per_s": _per_s(batch_size * prompt_len, float(np.median(ttft))),
        "output_tokens_per_s": _per_s(batch_size * gen_len, float(np.median(e2e))),
        "method": METHOD,
        # the raw per-token times, integer nanoseconds: everything above is recomputed from these
        "requests": [{"ttft_ns": int(r["ttft_ns"]), "itl_ns": [int(g) for g in r["itl_ns"]]} for r in raws],
    }
    if slo:
        out["slo"] = dict(slo)
        out["goodput"] = goodput(per, slo, batch_size * gen_len)
    return out


def _per_s(count: int, ms: float) -> float | None:
    return count / (ms / 1e3) if ms > 0 else None


def meets(times: Mapping[str, Any], slo: Mapping[str, float]) -> bool:
    """Whether one request's times (:func:`request_times`) meet every objective; an
    ``itl_ms`` objective bounds every gap of the request."""
    for key, limit in slo.items():
        if key not in TIMES:
            raise ValueError(f"unknown SLO metric {key!r}; choose from: {', '.join(TIMES)}")
        value = max(times[key]) if key == "itl_ms" else times[key]
        if not value <= limit:
            return False
    return True


def goodput(per: Sequence[Mapping[str, Any]], slo: Mapping[str, float], tokens_per_request: int) -> dict[str, Any]:
    """The share of requests meeting every SLO and their output tokens per second of all
    requests' time (the requests run back to back, as the timed loop runs them)."""
    ok = [meets(p, slo) for p in per]
    total_s = sum(p["e2e_ms"] for p in per) / 1e3
    return {
        "requests_meeting_slo": sum(ok) / len(ok),
        "output_tokens_per_s": tokens_per_request * sum(ok) / total_s if total_s > 0 else None,
        "method": "share of timed requests meeting every SLO (each objective an upper bound, <=); tokens/s = the "
                  "output tokens (batch x gen_len) of those requests / the end-to-end time of all timed requests",
    }


def kv_cache_bytes(config: Any, batch_size: int, seq_len: int, dtype_bytes: int) -> int | None:
    """The KV cache of ``seq_len`` cached positions from a transformers config: 2 (K, V) x
    layers x KV heads x head dim x positions x batch x bytes per element; None when
    the config lacks the fields."""
    layers = getattr(config, "num_hidden_layers", None)
    heads = getattr(config, "num_attention_heads", None)
    hidden = getattr(config, "hidden_size", None)
    if not layers or not heads or not hidden:
        return None
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    return int(2 * layers * kv_heads * head_dim * seq_len * batch_size * dtype_bytes)


def phase_rates(gen: Mapping[str, Any], prefill_flops: float | None, decode_flops: float | None) -> dict[str, Any]:
    """Achieved FLOP/s of the prefill (prefill FLOPs / median TTFT) and of the decode
    (decode FLOPs / median (e2e - ttft)), from one request's counted FLOPs."""
    out: dict[str, Any] = {}
    ttft_s = gen["ttft_ms"]["p50"] / 1e3
    decode_s = [sum(_ints(r.get("itl_ns"))) / 1e9 for r in gen.get("requests") or [] if isinstance(r, Mapping)]
    med_decode_s = float(np.median(decode_s)) if decode_s else math.nan
    if prefill_flops:
        out["prefill_flops"] = int(prefill_flops)
        out["prefill_achieved_flops_per_s"] = prefill_flops / ttft_s if ttft_s > 0 else None
    if decode_flops:
        out["decode_flops"] = int(decode_flops)
        out["decode_achieved_flops_per_s"] = decode_flops / med_decode_s if med_decode_s > 0 else None
    return out


def _ints(values: Any) -> list[int]:
    return [int(v) for v in values if isinstance(v, int) and not isinstance(v, bool)] if isinstance(values, list) else []


def raw_samples(record: Mapping[str, Any], metric: str) -> list[float]:
    """The raw per-request (per-gap for ``itl_ms``) values in ms of ``generation.<ttft_ms|
    tpot_ms|itl_ms|e2e_ms>`` in a cell or repeat record, recomputed from its stored token
    times exactly as :func:`summarize_raw` computes them (empty when it has none; a
    malformed request is left out)."""
    key = metric.removeprefix("generation.")
    gen = (record.get("metrics") or {}).get("generation") if isinstance(record, Mapping) else None
    reqs = gen.get("requests") if isinstance(gen, Mapping) else None
    out: list[float] = []
    for r in reqs if isinstance(reqs, list) else []:
        if not isinstance(r, Mapping):
            continue
        ttft, itl = r.get("ttft_ns"), r.get("itl_ns")
        if isinstance(ttft, bool) or not isinstance(ttft, int) or not isinstance(itl, list) or not itl:
            continue
        gaps = _ints(itl)
        if len(gaps) != len(itl) or ttft < 0 or min(gaps) < 0:
            continue
        times = request_times({"ttft_ns": ttft, "itl_ns": gaps})
        if key == "itl_ms":
            out.extend(times["itl_ms"])
        elif key in times:
            out.append(times[key])
    return out
