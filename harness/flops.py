"""FLOPs, bytes moved, achieved FLOP/s and MFU of a cell (post-measurement analysis).

Runs in the worker after the timed loop (never inside it), on the step's own model
and inputs (``Step.model``/``inputs``/``labels``/``mode``):

* **Counted** with ``torch.utils.flop_counter.FlopCounterMode`` for one step:
  the forward pass for inference; forward + backward (loss included) for training —
  the optimizer step is *excluded* (it is elementwise, ~10 FLOPs/parameter, and
  matmul-free). Two things the counter would miss are forced visible:
  ``scaled_dot_product_attention``'s fused CPU kernel (counted under
  ``sdpa_kernel(SDPBackend.MATH)``, which decomposes it into bmm) and
  ``nn.MultiheadAttention``/``nn.TransformerEncoderLayer``'s eval fast path (a
  fused op the counter ignores; the fast path is switched off and grad mode left on
  while counting).
* **Cross-checked** against ``workload.analytic_flops_for(batch, mode)``:
  ``flops_analytic_ratio`` = counted / analytic. The analytic training count is the
  3x-forward rule; the counted one is exact (it skips the input-gradient of the first
  layer, so small MLPs show ~0.8-0.9). When the counter fails, sees nothing (a model
  running outside torch, e.g. ONNX Runtime) or meets a matmul/conv/attention op it has
  no formula for (e.g. ``quantized::linear_dynamic``), ``flops`` is the analytic count
  and ``flops_source_reason`` says why. A variant that shrinks the model (pruning,
  distillation) is counted as it is; ``flops_note`` says so when the ratio is low.
* **Bytes moved** (``bytes_moved_estimate``): every aten op of the counted step reads
  each of its tensor inputs once and writes its outputs once, at their real dtypes
  (eager execution, no cache reuse, views free). Parameters are thus read by every op
  that uses them; in training, saved activations are read again by the backward ops
  and gradients are written. The optimizer step is excluded, like its FLOPs.
  ``arithmetic_intensity_flop_per_byte`` = flops / bytes — the roofline's x axis.
* ``achieved_flops_per_s`` = flops / p50 latency. ``mfu`` = achieved / the device's
  measured peak for the variant's dtype, from the run's calibration
  (:func:`apply_calibration`, called by the runner); null with the reason when this
  machine has no calibration.
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

    model, inputs, mode = step.model, list(step.inputs or []), step.mode
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper: same FLOPs, count eagerly
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
            stack.enter_context(counter)
            stack.enter_context(nbytes)
            if mode == "training":
                model.train()
                model.zero_grad(set_to_none=True)  # as the step does: grads are written, not accumulated
                with variant.autocast("torch", device) if variant is not None else contextlib.nullcontext():
                    out = model(*inputs)
                loss = F.cross_entropy(out.float(), step.labels)
                loss.backward()
            else:
                model.eval()
                with variant.autocast("torch", device) if variant is not None else contextlib.nullcontext():
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


# op names that do matmul/conv/attention work; one of these outside FlopCounterMode's
# registry (e.g. quantized::linear_dynamic, a fused attention kernel) means FLOPs it missed
_COMPUTE_OP = re.compile(r"(mm|matmul|linear|conv|attention|einsum|gemm|transformer|lstm|gru|rnn)", re.I)


BYTES_METHOD = (
    "sum over the step's aten ops (forward, + backward in training; optimizer excluded) of input + output "
    "tensor bytes at their dtypes: eager execution, each op reads its inputs and writes its outputs once, views free"
)


def flops_analysis(
    *, step: Any, workload: Any, spec: Any, metrics: dict[str, Any], variant: Any = None, **_: Any
) -> tuple[dict[str, Any], dict[str, str]]:
    """Post-measurement analysis: ``flops`` (per step), its source and cross-check,
    ``achieved_flops_per_s``, bytes moved and arithmetic intensity."""
    out: dict[str, Any] = {}
    missing: dict[str, str] = {}
    analytic = int(workload.analytic_flops_for(spec.batch_size, spec.mode))
    counted: dict[str, Any] | None = None
    why = ""
    if spec.backend != "torch" or step is None or getattr(step, "model", None) is None:
        why = f"backend {spec.backend!r} has no FLOP counter in the harness (FlopCounterMode is torch-only)"
    else:
        try:
            counted = count_torch_step(step, variant, spec.device)
        except Exception as e:  # noqa: BLE001 - a failed count falls back, with the reason
            why = f"FlopCounterMode failed: {type(e).__name__}: {str(e)[:300]}"
    scope = "forward" if spec.mode == "inference" else "forward + backward (optimizer step excluded)"
    if counted is not None:
        ratio = counted["flops"] / analytic if analytic else None
        out["flops_counted"] = counted["flops"]
        out["flops_analytic_ratio"] = ratio
        if counted["unseen_ops"]:
            why = (f"FlopCounterMode cannot count {', '.join(counted['unseen_ops'][:5])} "
                   f"(it saw {ratio:.0%} of the analytic count)")
        elif counted["flops"] <= 0:
            why = ("FlopCounterMode saw no FLOPs (the model runs outside torch's dispatcher, e.g. ONNX Runtime, "
                   "or only in kernels the counter cannot see)")
        else:
            out["flops"] = counted["flops"]
            out["flops_source"] = "FlopCounterMode"
            if ratio is not None and ratio < MIN_RATIO:
                out["flops_note"] = (f"counted {ratio:.0%} of the workload's analytic count with no uncountable op: "
                                     "the variant made the model smaller (pruning, distillation)")
        if counted["bytes"] > 0 and "flops" in out:
            out["bytes_moved_estimate"] = counted["bytes"]
            out["bytes_moved_method"] = BYTES_METHOD
    if "flops" not in out:
        out["flops"] = analytic
        out["flops_source"] = "analytic"
        out["flops_source_reason"] = why
    out["flops_scope"] = scope
    if "bytes_moved_estimate" not in out:
        out["bytes_moved_estimate"] = None
        missing["bytes_moved_estimate"] = why or "no byte count"
        missing["arithmetic_intensity_flop_per_byte"] = missing["bytes_moved_estimate"]
        out["arithmetic_intensity_flop_per_byte"] = None
    else:
        out["arithmetic_intensity_flop_per_byte"] = out["flops"] / out["bytes_moved_estimate"]
    p50_ms = (metrics.get("latency_ms") or {}).get("p50")
    out["achieved_flops_per_s"] = out["flops"] / (p50_ms / 1e3) if p50_ms else None
    out["mfu"] = None
    missing["mfu"] = "needs the run's calibration; set by the runner (run `harness calibrate` first)"
    return out, missing


# --------------------------------------------------------------------------- MFU


def peak_dtype(variant: str) -> str:
    """The calibration dtype a variant's matmuls run in (fp32 unless it names bf16/fp16)."""
    v = variant.lower()
    if "bf16" in v or "bfloat16" in v:
        return "bf16"
    if "fp16" in v or "half" in v or "float16" in v:
        return "fp16"
    return "fp32"


def apply_calibration(cell: dict[str, Any], calibration: dict[str, Any] | None) -> None:
    """Set ``metrics.mfu`` (achieved / measured peak) and the roofline's attainable
    FLOP/s (min(peak, intensity x bandwidth)) of an ok cell, in place; null with the
    reason in ``unavailable`` when there is no calibration for its device."""
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
    peak = (dev.get("peak_flops_per_s") or {}).get(dtype)
    if not peak:
        m["mfu"] = None
        unavailable["mfu"] = f"calibration of {device} has no {dtype} peak"
        return
    # data-parallel cells: one calibrated device per GPU worker (or per machine on CPU)
    peak *= int((m.get("distributed") or {}).get("devices_for_peak") or 1)
    m["mfu"] = achieved / peak
    m["mfu_peak_flops_per_s"] = peak
    m["mfu_peak_dtype"] = dtype
    unavailable.pop("mfu", None)
    bw = dev.get("mem_bandwidth_bytes_per_s")
    ai = m.get("arithmetic_intensity_flop_per_byte")
    if bw and ai:
        m["roofline_attainable_flops_per_s"] = min(peak, ai * bw)
        m["roofline_bound"] = "compute" if ai * bw >= peak else "memory"
