"""Generation metrics (``mode: generate``) from raw per-token times.

One *request* is one greedy generation of ``gen_len`` tokens for a batch of
``batch_size`` prompts of ``prompt_len`` tokens, with the KV cache on and no early end.
The step records, per request, the start time ``t0`` and one timestamp per generated
token, taken after the token is on the host (after a device synchronisation on GPUs):
``stamps[0]`` ends the prefill (the first forward over the prompt), each later stamp
ends one decode step. Everything below is computed from those raw times, which the cell
keeps (``metrics.generation.requests``), so compare and history can recompute them.

Per request (milliseconds):

* ``ttft_ms`` = ``stamps[0] - t0`` (time to first token);
* ``itl_ms`` = the gaps between consecutive stamps (``gen_len - 1`` per request);
* ``e2e_ms`` = ``stamps[-1] - t0``;
* ``tpot_ms`` = ``(e2e - ttft) / (gen_len - 1)`` (time per output token after the first),
  which equals the mean of that request's ``itl_ms`` exactly.

Over requests: p50/p90/p99 (and mean) of ``ttft_ms``, ``tpot_ms``, ``e2e_ms``; of
``itl_ms`` over every gap of every request. Throughput: ``prefill_tokens_per_s`` =
``batch x prompt_len / ttft`` and ``output_tokens_per_s`` = ``batch x gen_len / e2e``,
both at the median request. With SLOs, ``goodput`` is the share of requests meeting
every objective and the output tokens/s those requests delivered.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

PERCENTILES = (50, 90, 99)
METHOD = ("every generated token timed on the host after it is available (a device synchronisation per token "
          "on GPUs): ttft = first token - start, itl = gaps between tokens, tpot = (e2e - ttft) / (gen_len - 1)")


def request_times(t0: float, stamps: Sequence[float]) -> dict[str, Any]:
    """The per-request times (ms) of one request started at ``t0`` with token ``stamps``
    (seconds, same clock)."""
    if len(stamps) < 2:
        raise ValueError("a request needs at least 2 generated tokens (gen_len >= 2)")
    ttft = (stamps[0] - t0) * 1e3
    itl = [(b - a) * 1e3 for a, b in zip(stamps, stamps[1:])]
    e2e = (stamps[-1] - t0) * 1e3
    return {"ttft_ms": ttft, "itl_ms": itl, "e2e_ms": e2e, "tpot_ms": (e2e - ttft) / (len(stamps) - 1)}


def _dist(values: Sequence[float]) -> dict[str, float]:
    x = np.asarray(values, dtype=float)
    out = {f"p{p}": float(np.percentile(x, p)) for p in PERCENTILES}
    out["mean"] = float(x.mean())
    out["min"] = float(x.min())
    out["max"] = float(x.max())
    return out


def summarize(requests: Sequence[Mapping[str, Any]], batch_size: int, prompt_len: int, gen_len: int,
              slo: Mapping[str, float] | None = None) -> dict[str, Any]:
    """``metrics.generation`` from the raw ``requests`` (each ``{"t0": s, "stamps": [s, ...]}``)."""
    if not requests:
        raise ValueError("no timed requests")
    per = [request_times(r["t0"], r["stamps"]) for r in requests]
    ttft = [p["ttft_ms"] for p in per]
    tpot = [p["tpot_ms"] for p in per]
    e2e = [p["e2e_ms"] for p in per]
    itl = [g for p in per for g in p["itl_ms"]]
    out: dict[str, Any] = {
        "requests_timed": len(per),
        "batch_size": batch_size, "prompt_len": prompt_len, "gen_len": gen_len,
        "ttft_ms": _dist(ttft), "tpot_ms": _dist(tpot), "itl_ms": _dist(itl), "e2e_ms": _dist(e2e),
        "prefill_tokens_per_s": batch_size * prompt_len / (float(np.median(ttft)) / 1e3),
        "output_tokens_per_s": batch_size * gen_len / (float(np.median(e2e)) / 1e3),
        "method": METHOD,
        # the raw per-token times (ms from each request's start): everything above is
        # recomputed from these
        "requests": [{"ttft_ms": p["ttft_ms"], "itl_ms": p["itl_ms"]} for p in per],
    }
    if slo:
        ok = [all(p[k] <= limit for k, limit in slo.items()) for p in per]
        share = sum(ok) / len(ok)
        total_s = sum(e2e) / 1e3
        out["slo"] = dict(slo)
        out["goodput"] = {
            "requests_meeting_slo": share,
            # output tokens of the requests that met every objective, per second of all requests' time
            "output_tokens_per_s": batch_size * gen_len * sum(ok) / total_s if total_s > 0 else None,
            "method": "share of timed requests meeting every SLO; tokens/s = their output tokens / the time of all "
                      "timed requests run back to back",
        }
    return out


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
    decode_s = [sum(r["itl_ms"]) / 1e3 for r in gen["requests"]]
    med_decode_s = float(np.median(decode_s)) if decode_s else math.nan
    if prefill_flops:
        out["prefill_flops"] = int(prefill_flops)
        out["prefill_achieved_flops_per_s"] = prefill_flops / ttft_s if ttft_s > 0 else None
    if decode_flops:
        out["decode_flops"] = int(decode_flops)
        out["decode_achieved_flops_per_s"] = decode_flops / med_decode_s if med_decode_s > 0 else None
    return out


def raw_samples(record: Mapping[str, Any], metric: str) -> list[float]:
    """The raw per-request (per-gap for ``itl_ms``) values of ``generation.<ttft_ms|tpot_ms|
    itl_ms|e2e_ms>`` in a cell or repeat record, recomputed from its stored token times
    (empty when the record has none)."""
    key = metric.removeprefix("generation.")
    gen = (record.get("metrics") or {}).get("generation") if isinstance(record, Mapping) else None
    reqs = gen.get("requests") if isinstance(gen, Mapping) else None
    out: list[float] = []
    for r in reqs if isinstance(reqs, list) else []:
        if not isinstance(r, Mapping):
            continue
        ttft, itl = r.get("ttft_ms"), r.get("itl_ms")
        if not isinstance(ttft, (int, float)) or not isinstance(itl, list) or not itl:
            continue
        gaps = [float(g) for g in itl if isinstance(g, (int, float))]
        if key == "ttft_ms":
            out.append(float(ttft))
        elif key == "itl_ms":
            out.extend(gaps)
        elif key == "e2e_ms":
            out.append(float(ttft) + sum(gaps))
        elif key == "tpot_ms":
            out.append(sum(gaps) / len(gaps))
    return out
