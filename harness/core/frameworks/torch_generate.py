"""Timed greedy generation with a KV cache for a Hugging Face-style causal LM (torch).

:func:`timed_request` runs one request: a prefill forward over the prompt, then
``new_tokens - 1`` single-token decode forwards reusing the cache, greedy (argmax), no
early end, and returns the start time and one host timestamp per generated token, in
integer nanoseconds (``time.perf_counter_ns``, taken after ``sync()``, a device
synchronisation on GPUs; the token itself stays on the device: with no early end
nothing on the host needs it). The tokens equal
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


def cache_tensors(cache: Any) -> list[torch.Tensor] | None:
    """The key/value tensors of a transformers cache (``cache.layers[i].keys/.values``)
    or of a legacy tuple cache (``((k, v), ...)``); None when the form is unknown."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [t for layer in layers for t in (getattr(layer, "keys", None), getattr(layer, "values", None))
                if isinstance(t, torch.Tensor)]
    if isinstance(cache, (tuple, list)) and cache and all(isinstance(layer, (tuple, list)) for layer in cache):
        return [t for layer in cache for t in layer if isinstance(t, torch.Tensor)]
    return None


def cache_nbytes(cache: Any) -> int | None:
    """Bytes held by a cache's key/value tensors (None when unknown)."""
    tensors = cache_tensors(cache)
    if tensors is None:
        return None
    return sum(t.numel() * t.element_size() for t in tensors)


def cache_element_size(cache: Any) -> int | None:
    """Bytes per element of the cache's tensors (None when unknown)."""
    tensors = cache_tensors(cache)
    return int(tensors[0].element_size()) if tensors else None


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


def make_request(model: Any, input_ids: torch.Tensor, new_tokens: int, sync: Callable[[], None],
                 keep_tokens: bool = False) -> Callable[[], dict[str, Any]]:
    """A zero-argument function running one timed request (see the module doc); it
    returns ``{"t0_ns", "stamps_ns", "last_token", "cache"}`` and, with ``keep_tokens``,
    ``tokens``: the ``[batch, new_tokens]`` generated ids (kept outside the timing)."""
    if new_tokens < 1:
        raise ValueError(f"new_tokens must be >= 1, got {new_tokens}")
    kw, first = _cache_kwarg(model), _prefill_kwargs(model)
    clock = time.perf_counter_ns

    @torch.inference_mode()
    def request() -> dict[str, Any]:
        kept: list[torch.Tensor] = []
        t0 = clock()
        out = model(input_ids=input_ids, use_cache=True, **first)
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
        sync()
        stamps = [clock()]
        if keep_tokens:
            kept.append(tok)
        cache = _cache_of(out)
        if cache is None and new_tokens > 1:
            raise RuntimeError(f"{type(model).__name__} returned no KV cache (neither .cache nor .past_key_values) "
                               "with use_cache=True: generate needs the Hugging Face generation interface")
        for _ in range(new_tokens - 1):
            out = model(input_ids=tok, use_cache=True, **{kw: cache})
            cache = _cache_of(out)
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
            sync()
            stamps.append(clock())
            if keep_tokens:
                kept.append(tok)
        result = {"t0_ns": t0, "stamps_ns": stamps, "last_token": tok, "cache": cache}
        if keep_tokens:
            result["tokens"] = torch.cat(kept, dim=1)
        return result

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
