"""Timed greedy generation with a KV cache for a Hugging Face-style causal LM (torch).

:func:`timed_request` runs one request: a prefill forward over the prompt, then
``new_tokens - 1`` single-token decode forwards reusing the cache, greedy (argmax), no
early end, and returns the start time and one host timestamp per generated token
(taken after ``sync()``, a device synchronisation on GPUs). The tokens equal
``model.generate(..., do_sample=False, min_new_tokens=N, max_new_tokens=N)`` (checked in
the tests). A model "follows the generation interface" when ``model(input_ids=...,
use_cache=True)`` returns an object with ``logits`` and a cache (``cache`` or
``past_key_values``) that the next call accepts back.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch


def _cache_of(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    if cache is None:
        cache = getattr(out, "past_key_values", None)
    return cache


def cache_nbytes(cache: Any) -> int | None:
    """Bytes held by a transformers cache's key/value tensors (None when unknown)."""
    layers = getattr(cache, "layers", None)
    if layers is None:
        return None
    total = 0
    for layer in layers:
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total


def _params(model: Any) -> Any:
    import inspect

    try:
        return inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}


def _cache_kwarg(model: Any) -> str:
    """``cache`` (transformers >= 5.2x) or ``past_key_values`` (older), by the forward's signature."""
    return "cache" if "cache" in _params(model) else "past_key_values"


def _prefill_kwargs(model: Any) -> dict[str, Any]:
    """Logits of the last position only in the prefill, as ``generate()`` asks for them."""
    return {"logits_to_keep": 1} if "logits_to_keep" in _params(model) else {}


def make_request(model: Any, input_ids: torch.Tensor, new_tokens: int,
                 sync: Callable[[], None]) -> Callable[[], dict[str, Any]]:
    """A zero-argument function running one timed request (see the module doc)."""
    kw, first = _cache_kwarg(model), _prefill_kwargs(model)

    @torch.inference_mode()
    def request() -> dict[str, Any]:
        t0 = time.perf_counter()
        out = model(input_ids=input_ids, use_cache=True, **first)
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
        sync()
        stamps = [time.perf_counter()]
        cache = _cache_of(out)
        for _ in range(new_tokens - 1):
            out = model(input_ids=tok, use_cache=True, **{kw: cache})
            cache = _cache_of(out)
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
            sync()
            stamps.append(time.perf_counter())
        return {"t0": t0, "stamps": stamps, "last_token": tok, "cache": cache}

    return request


def count_request_flops(model: Any, input_ids: torch.Tensor, new_tokens: int) -> dict[str, int]:
    """FLOPs (2 per multiply-add, ``FlopCounterMode``) of one request's prefill and of its
    decode steps, counted apart."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    kw, first = _cache_kwarg(model), _prefill_kwargs(model)
    prefill, decode = FlopCounterMode(display=False), FlopCounterMode(display=False)
    with torch.inference_mode(), sdpa_kernel([SDPBackend.MATH]):
        with prefill:
            out = model(input_ids=input_ids, use_cache=True, **first)
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
        cache = _cache_of(out)
        with decode:
            for _ in range(new_tokens - 1):
                out = model(input_ids=tok, use_cache=True, **{kw: cache})
                cache = _cache_of(out)
                tok = out.logits[:, -1].argmax(-1, keepdim=True)
    return {"prefill_flops": int(prefill.get_total_flops()), "decode_flops": int(decode.get_total_flops())}
