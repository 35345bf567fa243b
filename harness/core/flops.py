"""FLOPs, bytes moved, achieved FLOP/s and MFU of a cell (post-measurement analysis).

Runs in the worker after the timed loop (never inside it), on the step's own model
and inputs (``Step.model``/``inputs``/``labels``/``mode``). The count comes from the
cell's backend (:meth:`harness.api.Backend.count_flops`; the torch backend's is
:func:`count_torch_step` below); a backend without a counter gets the analytic count
with the reason. This module imports no plugin.

* **Counted** with ``torch.utils.flop_counter.FlopCounterMode`` for one step:
  the forward pass for inference; forward + backward (loss included) for training —
  the optimizer step is *excluded* (it is elementwise, ~10 FLOPs/parameter, and
  matmul-free). Two things the counter would miss are forced visible:
  ``scaled_dot_product_attention``'s fused CPU kernel (counted under
  ``sdpa_kernel(SDPBackend.MATH)``, which decomposes it into bmm) and
  ``nn.MultiheadAttention``/``nn.TransformerEncoderLayer``'s eval fast path (a
  fused op the counter ignores; the fast path is switched off and grad mode left on
  while counting).
* **The model actually run.** A compile wrapper is counted through its eager module
  (``eager_module``, or ``torch.compile``'s ``_orig_mod``), never by running the
  compiler under the counter. The forward pass runs under the step's own
  ``forward_context`` (autocast in mixed-precision training; nothing for a model whose
  weights were cast once), so dtypes and bytes are those of the timed step.
* **Cross-checked** against the analytic count of the model run
  (:func:`run_model_analytic_flops`: the workload's ``analytic_flops_for(batch, mode)``,
  or the variant's ``model_analytic_flops`` when it runs a different model: the
  distill student, the structurally pruned MLP): ``flops_analytic_ratio`` = counted /
  analytic. The analytic training count is the 3x-forward rule; the counted one is
  exact (it skips the input-gradient of the first layer, so small MLPs show ~0.8-0.9).
  When the counter fails, sees nothing (a model running outside torch, e.g. ONNX
  Runtime) or meets a matmul/conv/attention op it has no formula for (e.g.
  ``quantized::linear_dynamic``), ``flops`` is that analytic count and
  ``flops_source_reason`` says why; when the variant's model has no analytic count
  either (structured pruning of the CNN/Transformer), ``flops``, achieved FLOP/s and
  MFU are null with the reason: never the unpruned teacher's count, which inflated MFU
  4-8x. A model smaller than the workload's formula with no variant formula is counted
  as it is; ``flops_note`` says so when the ratio is low.
* **Bytes moved** (``bytes_moved_estimate``): every aten op of the counted step reads
  each of its tensor inputs once and writes its outputs once, at their real dtypes
  (eager execution, no cache reuse, views free). Parameters are thus read by every op
  that uses them; in training, saved activations are read again by the backward ops
  and gradients are written. The optimizer step is excluded, like its FLOPs.
  ``arithmetic_intensity_flop_per_byte`` = flops / bytes — the roofline's x axis.
* ``achieved_flops_per_s`` = flops / p50 latency. ``mfu`` = achieved / the device's
  measured peak for the variant's dtype (``tf32`` for the tf32 variant; fp32 is strict
  IEEE, see :mod:`harness.variants.precision`), from the run's calibration
  (:func:`apply_calibration`, called by the runner); null with the reason when this
  machine has no calibration, or, on a CPU, when the calibration was measured with a
  different thread count than the cell ran with (CPU peaks scale with threads).
* **Cached** (:mod:`harness.core.cache`, kind ``flops``): the counter's result for a
  torch step is stored under a key of everything it depends on
  (:func:`flops_cache_key`), so the same model, inputs and context are counted once per
  machine. ``flops_count_cache`` records ``hit``, ``miss`` or ``off`` (and
  ``flops_count_cache_reason`` when the cache could not be used); a hit gives the same
  numbers as a miss.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

MIN_RATIO = 0.5  # counted/analytic below this with all ops countable: a smaller model (noted)


def _tensor_bytes(torch: Any, objs: list[Any]) -> int:
    seen: set[int] = set()
    total = 0
    for t in objs:
        if isinstance(t, torch.Tensor) and id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def _byte_counter(torch: Any) -> Any:
    """A dispatch mode summing input + output bytes of every non-view aten op."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class ByteCounter(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.bytes = 0
            self.ops = 0
            self.packets: set[Any] = set()

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            self.packets.add(getattr(func, "overloadpacket", func))
            returns = getattr(getattr(func, "_schema", None), "returns", ())
            is_view = any(r.alias_info is not None and not r.alias_info.is_write for r in returns)
            if not is_view:
                self.ops += 1
                self.bytes += _tensor_bytes(torch, tree_leaves((args, kwargs or {})))
                self.bytes += _tensor_bytes(torch, tree_leaves(out))
            return out

    return ByteCounter()


def count_torch_step(step: Any, variant: Any = None, device: str = "cpu") -> dict[str, Any]:
    """FLOPs and bytes of one step of ``step.model`` (see module doc): ``{"flops",
    "bytes", "ops"}``. Leaves the model's mode as it found it and clears the grads."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    own = getattr(step, "count_request_flops", None)
    if callable(own):  # a generate step: one request's prefill and decode, counted apart
        split = own()
        return {"flops": split["prefill_flops"] + split["decode_flops"], "bytes": 0, "ops": 0, "unseen_ops": [],
                **split}
    model, inputs, mode = step.model, list(step.inputs or []), step.mode
    model = eager_module(model)  # a compile wrapper: same weights and FLOPs, counted eagerly
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"the step's model is a {type(model).__name__}, not a torch.nn.Module")
    was_training = bool(getattr(model, "training", False))
    mha = getattr(torch.backends, "mha", None)
    fastpath = mha.get_fastpath_enabled() if mha is not None else None
    counter = FlopCounterMode(display=False)
    nbytes = _byte_counter(torch)
    try:
        if mha is not None:
            mha.set_fastpath_enabled(False)
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.enable_grad())  # no inference fast paths while counting
            stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
            # oneDNN's fused RNN op (aten.mkldnn_rnn_layer: nn.LSTM on CPU) is invisible to the
            # counter; without oneDNN the same layer runs as countable matmuls (same FLOPs).
            # Only for models with RNN layers: everything else keeps its fast kernels.
            if any(isinstance(m, torch.nn.RNNBase) for m in model.modules()):
                stack.enter_context(torch.backends.mkldnn.flags(enabled=False))
            stack.enter_context(counter)
            stack.enter_context(nbytes)
            if mode == "training":
                model.train()
                model.zero_grad(set_to_none=True)  # as the step does: grads are written, not accumulated
                with _forward_context(step, variant, device):
                    out = model(*inputs)
                loss_fn = getattr(step, "loss_fn", None)  # the workload's loss, as the step runs it
                loss = loss_fn(out) if callable(loss_fn) else F.cross_entropy(out.float(), step.labels)
                loss.backward()
            else:
                model.eval()
                with _forward_context(step, variant, device):
                    model(*inputs)
    finally:
        if mha is not None and fastpath is not None:
            mha.set_fastpath_enabled(fastpath)
        model.train(was_training)
        if mode == "training":
            model.zero_grad(set_to_none=True)
    from torch.utils.flop_counter import flop_registry

    unseen = sorted(str(p) for p in nbytes.packets if _COMPUTE_OP.search(str(p)) and p not in flop_registry)
    return {"flops": int(counter.get_total_flops()), "bytes": int(nbytes.bytes), "ops": int(nbytes.ops),
            "unseen_ops": unseen}


def eager_module(model: Any) -> Any:
    """The eager module behind compile wrappers: the harness's own wrapper exposes
    ``eager_module``; ``torch.compile``'s ``OptimizedModule`` has ``_orig_mod``."""
    for _ in range(8):  # wrappers may nest; never loop forever on an odd object
        inner = getattr(model, "eager_module", None)
        if inner is None:
            inner = getattr(model, "_orig_mod", None)
        if inner is None or inner is model:
            return model
        model = inner
    return model


def _forward_context(step: Any, variant: Any, device: str) -> Any:
    """What the step's forward pass runs under: the step's own ``forward_context``
    (torch backend), else the variant's autocast (older steps, hand-made ones)."""
    ctx = getattr(step, "forward_context", None)
    if callable(ctx):
        return ctx()
    return variant.autocast("torch", device) if variant is not None else contextlib.nullcontext()


def variant_model_flops(workload: Any, variant: Any, batch_size: int, mode: str) -> tuple[int | None, str] | None:
    """The variant's own analytic count (:meth:`harness.api.Variant.model_analytic_flops`)
    when it runs a different model than the workload's (distill's student, structured
    pruning): (FLOPs or None, what they are / why none); None when the workload's
    formula applies."""
    own = getattr(variant, "model_analytic_flops", None)
    res = own(workload, batch_size, mode) if callable(own) else None
    if res is None:
        return None
    flops, what = res
    return (None if flops is None else int(flops)), str(what)


def run_model_analytic_flops(workload: Any, variant: Any, batch_size: int, mode: str) -> tuple[int | None, str]:
    """Analytic FLOPs of one step of the model the cell actually runs: the variant's
    ``model_analytic_flops(workload, batch_size, mode)`` when it runs a different model
    (distill's student, structured pruning), else the workload's formula. Returns
    (FLOPs, what they are) or (None, why there is no analytic count)."""
    own = variant_model_flops(workload, variant, batch_size, mode)
    if own is not None:
        return own
    flops = workload.analytic_flops_for(batch_size, mode)
    if flops is None:
        return None, (f"workload {workload.name!r} has no analytic FLOP formula (only a FLOP counter can give its "
                      "FLOPs)")
    return int(flops), "the workload's analytic formula"


# op names that do matmul/conv/attention work; one of these outside FlopCounterMode's
# registry (e.g. quantized::linear_dynamic, a fused attention kernel) means FLOPs it missed
_COMPUTE_OP = re.compile(r"(mm|matmul|linear|conv|attention|einsum|gemm|transformer|lstm|gru|rnn)", re.I)


BYTES_METHOD = (
    "sum over the step's aten ops (forward, + backward in training; optimizer excluded) of input + output "
    "tensor bytes at their dtypes: eager execution, each op reads its inputs and writes its outputs once, views free"
)


def flops_analysis(
    *, step: Any, workload: Any, spec: Any, metrics: dict[str, Any], variant: Any = None, backend: Any = None,
    **_: Any
) -> tuple[dict[str, Any], dict[str, str]]:
    """Post-measurement analysis: ``flops`` (per step), its source and cross-check,
    ``achieved_flops_per_s``, bytes moved and arithmetic intensity. ``backend`` (the
    cell's :class:`harness.api.Backend`; the registered one of ``spec.backend`` when
    not given) counts with :meth:`~harness.api.Backend.count_flops`."""
    from harness.api import Backend, provides
    from harness.core.quality import backend_for

    out: dict[str, Any] = {}
    missing: dict[str, str] = {}
    analytic, analytic_what = run_model_analytic_flops(workload, variant, spec.batch_size, spec.mode)
    counted: dict[str, Any] | None = None
    why = ""
    impl = backend_for(spec.backend, backend)
    counter = str(getattr(impl, "flop_counter", None) or "the FLOP counter")
    if impl is None or not provides(impl, "count_flops") or step is None or getattr(step, "model", None) is None:
        why = Backend.NO_FLOP_COUNTER.format(name=spec.backend)
    else:
        try:
            counted = _count_cached(impl, step, variant, spec, out)
        except NotImplementedError as e:  # the counter has nothing for this model (a user's ONNX graph): no failure
            why = str(e) or Backend.NO_FLOP_COUNTER.format(name=spec.backend)
        except Exception as e:  # noqa: BLE001 - a failed count falls back, with the reason
            why = f"{counter} failed: {type(e).__name__}: {str(e)[:300]}"
    scope = {"inference": "forward", "generate": "one request: prefill + every decode step (KV cache on)"}.get(
        spec.mode, "forward + backward (optimizer step excluded)")
    if counted is not None:
        ratio = counted["flops"] / analytic if analytic else None
        out["flops_counted"] = counted["flops"]
        out["flops_analytic_ratio"] = ratio
        for k in ("prefill_flops", "decode_flops"):  # generate cells
            if k in counted:
                out[k] = counted[k]
        seen = f" (it saw {ratio:.0%} of the analytic count)" if ratio is not None else ""
        if counted.get("unseen_ops"):
            why = f"{counter} cannot count {', '.join(counted['unseen_ops'][:5])}{seen}"
        elif counted["flops"] <= 0:
            why = (f"{counter} saw no FLOPs (the model runs outside torch's dispatcher, e.g. ONNX Runtime, "
                   "or only in kernels the counter cannot see)")
        else:
            out["flops"] = counted["flops"]
            out["flops_source"] = counter
            if ratio is not None and ratio < MIN_RATIO:
                out["flops_note"] = (f"counted {ratio:.0%} of the analytic count ({analytic_what}) with no "
                                     "uncountable op: the variant made the model smaller (pruning, distillation)")
        if (counted.get("bytes") or 0) > 0 and "flops" in out:
            out["bytes_moved_estimate"] = counted["bytes"]
            out["bytes_moved_method"] = BYTES_METHOD
    if "flops" not in out:
        if analytic is not None:
            out["flops"] = analytic
            out["flops_source"] = "analytic"
            out["flops_source_reason"] = f"{why}; using {analytic_what}" if why else analytic_what
        else:
            out["flops"] = None
            missing["flops"] = f"{why}; no analytic fallback: {analytic_what}"
    out["flops_scope"] = scope
    if "bytes_moved_estimate" not in out:
        out["bytes_moved_estimate"] = None
        missing["bytes_moved_estimate"] = why or "no byte count"
        missing["arithmetic_intensity_flop_per_byte"] = missing["bytes_moved_estimate"]
        out["arithmetic_intensity_flop_per_byte"] = None
    else:
        out["arithmetic_intensity_flop_per_byte"] = out["flops"] / out["bytes_moved_estimate"]
    p50_ms = (metrics.get("latency_ms") or {}).get("p50")
    out["achieved_flops_per_s"] = out["flops"] / (p50_ms / 1e3) if p50_ms and out["flops"] else None
    out["mfu"] = None
    if out["flops"] is None:
        missing["achieved_flops_per_s"] = missing["mfu"] = f"no FLOP count for the model run: {missing['flops']}"
    else:
        missing["mfu"] = "needs the run's calibration; set by the runner (run `harness calibrate` first)"
    return out, missing


# --------------------------------------------------------------------------- cache

#: Bump when the counting code changes in a way :func:`flops_cache_key` does not see
#: (it already hashes this file, the backend's and the model's source files).
FLOPS_CACHE_VERSION: int = 1


def _config_of(obj: Any) -> Any:
    import dataclasses

    cfg = getattr(obj, "config", None)
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return dataclasses.asdict(cfg)
    return repr(cfg)


def _value_desc(torch: Any, x: Any) -> Any:
    """Shape, dtype and device type of a tensor (recursively for lists); the type and
    repr of anything else."""
    if isinstance(x, torch.Tensor):
        return ["tensor", list(x.shape), str(x.dtype), x.device.type, bool(x.requires_grad)]
    if isinstance(x, (list, tuple)):
        return [_value_desc(torch, v) for v in x]
    return [type(x).__name__, repr(x)[:200]]


def _context_desc(torch: Any, step: Any, variant: Any, device: str, device_type: str) -> dict[str, Any]:
    """What the forward pass runs under (autocast on/off and its dtype, the default
    dtype), read by entering the step's forward context."""
    desc: dict[str, Any] = {"default_dtype": str(torch.get_default_dtype())}
    ctx = _forward_context(step, variant, device)
    desc["type"] = f"{type(ctx).__module__}.{type(ctx).__qualname__}"
    with ctx:
        for dt in sorted({device_type, "cpu"}):
            try:
                desc[f"autocast_{dt}"] = [bool(torch.is_autocast_enabled(dt)), str(torch.get_autocast_dtype(dt))]
            except Exception as e:  # noqa: BLE001 - an old torch or an unknown device type
                desc[f"autocast_{dt}"] = type(e).__name__
    return desc


def flops_cache_key(step: Any, variant: Any, spec: Any, backend: Any = None) -> str:
    """The cache key of the FLOP/byte count of ``step`` (see docs/cache.md): torch's
    version, the mode and device type, the cell's variant and its config, the model's
    structure (module tree repr, every parameter/buffer name, shape, dtype and
    requires_grad), the input and label shapes/dtypes, the forward context, and the
    source files of every non-torch class involved (the model's modules, the variant,
    the backend, the counting function). TypeError when the model is not a torch module."""
    import torch

    from harness.core import cache

    model = eager_module(step.model)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"the step's model is a {type(model).__name__}, not a torch.nn.Module")
    device_type = torch.device(spec.device).type
    modules = list(model.modules())
    counter_fn = globals()["count_torch_step"]  # as currently bound (a test may replace it)
    tensors = [["param", n, list(p.shape), str(p.dtype), bool(p.requires_grad)] for n, p in model.named_parameters()]
    tensors += [["buffer", n, list(b.shape), str(b.dtype), bool(b.requires_grad)] for n, b in model.named_buffers()]
    parts = {
        "what": "flops", "v": FLOPS_CACHE_VERSION, "torch": torch.__version__,
        "mode": spec.mode, "device_type": device_type,
        "workload": spec.workload, "size": spec.size, "batch_size": spec.batch_size,
        "tokens": [getattr(spec, "prompt_len", None), getattr(spec, "gen_len", None)],
        "variant": spec.variant, "variant_config": _config_of(variant),
        "model_repr": repr(model), "tensors": tensors,
        "classes": sorted({f"{type(m).__module__}.{type(m).__qualname__}" for m in modules}),
        "sources": cache.source_digests([*(type(m) for m in modules), type(variant), type(backend), counter_fn],
                                        skip_prefixes=("torch",)),
        "inputs": _value_desc(torch, list(step.inputs or [])),
        "labels": _value_desc(torch, getattr(step, "labels", None)) if spec.mode == "training" else None,
        "context": _context_desc(torch, step, variant, spec.device, device_type),
    }
    return cache.key(**parts)


def _count_cached(impl: Any, step: Any, variant: Any, spec: Any, out: dict[str, Any]) -> dict[str, Any]:
    """``impl.count_flops(...)`` through the ``flops`` cache; records
    ``flops_count_cache`` (and ``flops_count_cache_reason``) in ``out``. A count that
    raises is not cached (the exception propagates)."""
    from harness.core import cache

    reason: str | None = None
    k: str | None = None
    if not cache.enabled():
        status, reason = cache.OFF, cache.disabled_reason()
    else:
        try:
            k = flops_cache_key(step, variant, spec, impl)
        except Exception as e:  # noqa: BLE001 - no key, no cache: count as before
            status, reason = cache.OFF, f"no cache key: {type(e).__name__}: {str(e)[:200]}"
    if k is not None:
        got = cache.get_json("flops", k)
        value = got.value
        if got.hit and isinstance(value, dict) and isinstance(value.get("flops"), int):
            out["flops_count_cache"] = cache.HIT
            return value
        status, reason = cache.MISS, got.reason
    counted = impl.count_flops(step, variant, spec.device)
    if k is not None:
        reason = cache.put_json("flops", k, counted) or reason
    out["flops_count_cache"] = status
    if reason:
        out["flops_count_cache_reason"] = reason
    return counted


# --------------------------------------------------------------------------- MFU


def peak_dtype(variant: str) -> str:
    """The calibration dtype a variant's matmuls run in: bf16 / fp16 when it names one,
    tf32 for the tf32 variant, else fp32 (strict IEEE: see
    :mod:`harness.variants.precision`)."""
    v = variant.lower()
    if "bf16" in v or "bfloat16" in v:
        return "bf16"
    if "fp16" in v or "half" in v or "float16" in v:
        return "fp16"
    if "tf32" in v or "tensorfloat" in v:
        return "tf32"
    return "fp32"


def cell_cpu_threads(cell: dict[str, Any]) -> tuple[int | None, str]:
    """CPU threads a cell computed with, per machine, from its ``runtime``: torch's
    ``threads`` (TensorFlow's ``intra_op_threads``), times the data-parallel workers
    sharing one machine. (None, why) when the cell did not record a number."""
    runtime = cell.get("runtime") or {}
    threads = runtime.get("threads")
    if threads is None:
        threads = runtime.get("intra_op_threads")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        return None, ("the cell did not record its CPU thread count (e.g. a framework default thread pool); "
                      "run it with --threads N")
    dist = (cell.get("metrics") or {}).get("distributed") or {}
    world, nnodes = dist.get("world_size"), dist.get("nnodes") or 1
    if isinstance(world, int) and world > 1:
        per_node = max(1, world // max(1, int(nnodes)))
        return threads * per_node, f"{threads} threads x {per_node} workers per machine"
    return threads, f"{threads} threads"


def _calibration_for_threads(dev: dict[str, Any], threads: int) -> dict[str, Any] | None:
    """The CPU calibration measured with ``threads`` threads: the device's latest
    entry, or one kept under ``by_threads``; None when there is none."""
    if dev.get("threads") == threads:
        return dev
    by = dev.get("by_threads") or {}
    found = by.get(str(threads)) or by.get(threads)
    return found if isinstance(found, dict) else None


def apply_calibration(cell: dict[str, Any], calibration: dict[str, Any] | None) -> None:
    """Set ``metrics.mfu`` (achieved / measured peak) and the roofline's attainable
    FLOP/s (min(peak, intensity x bandwidth)) of an ok cell, in place; null with the
    reason in ``unavailable`` when there is no calibration for its device, or (CPU) none
    measured with the cell's thread count: a CPU's peak scales with its threads, so an
    all-thread peak against a 1-thread cell understates MFU by about the core count."""
    if cell.get("status") != "ok":
        return
    m = cell.setdefault("metrics", {})
    unavailable = cell.setdefault("unavailable", {})
    achieved = m.get("achieved_flops_per_s")
    if achieved is None:
        return
    spec = cell.get("spec", {})
    device, dtype = str(spec.get("device")), peak_dtype(str(spec.get("variant", "")))
    dev = (calibration or {}).get(device)
    if not dev:
        m["mfu"] = None
        unavailable["mfu"] = (
            f"no calibration for {device} with this machine's fingerprint; run `harness calibrate -d {device}`"
        )
        return
    if device == "cpu":
        threads, what = cell_cpu_threads(cell)
        if threads is None:
            m["mfu"] = None
            unavailable["mfu"] = f"CPU peaks depend on the thread count and {what}"
            return
        matched = _calibration_for_threads(dev, threads)
        if matched is None:
            have = sorted({int(t) for t in [dev.get("threads"), *(dev.get("by_threads") or {})]
                           if t is not None and str(t).isdigit()})
            measured = (f"calibration measured with {', '.join(map(str, have))} thread(s)" if have
                        else "the calibration did not record its thread count")
            m["mfu"] = None
            unavailable["mfu"] = (f"{measured}, this cell ran with {what}; run "
                                  f"`harness calibrate -d cpu --threads {threads}`")
            return
        dev = matched
        m["mfu_peak_threads"] = threads
    peak = (dev.get("peak_flops_per_s") or {}).get(dtype)
    if not peak:
        m["mfu"] = None
        why = ((dev.get("unavailable") or {}).get(dtype) if isinstance(dev.get("unavailable"), dict) else None)
        unavailable["mfu"] = f"calibration of {device} has no {dtype} peak" + (f" ({why})" if why else "")
        return
    # data-parallel cells: one calibrated device per GPU worker (or per machine on CPU)
    peak *= int((m.get("distributed") or {}).get("devices_for_peak") or 1)
    m["mfu"] = achieved / peak
    m["mfu_peak_flops_per_s"] = peak
    m["mfu_peak_dtype"] = dtype
    unavailable.pop("mfu", None)
    gen = m.get("generation")
    if isinstance(gen, dict):  # generate cells: the prefill and the decode against the same peak
        for phase in ("prefill", "decode"):
            rate = gen.get(f"{phase}_achieved_flops_per_s")
            if isinstance(rate, (int, float)):
                gen[f"{phase}_mfu"] = rate / peak
    bw = dev.get("mem_bandwidth_bytes_per_s")
    ai = m.get("arithmetic_intensity_flop_per_byte")
    if bw and ai:
        m["roofline_attainable_flops_per_s"] = min(peak, ai * bw)
        m["roofline_bound"] = "compute" if ai * bw >= peak else "memory"
