"""PyTorch's float32 math: strict IEEE fp32 or TensorFloat-32, and where TF32 exists.

Shared by the torch backend (it sets the flags for each cell and records them under
``runtime.precision``), the ``tf32`` variant (skips where there is no TF32) and
``harness calibrate`` (measures fp32 peaks in strict IEEE and tf32 peaks with TF32).
Every function takes the imported ``torch`` module, so importing this module imports
nothing heavy. See :mod:`harness.variants.precision` for what the modes mean.
"""

from __future__ import annotations

from typing import Any

#: Why a CPU has no tf32 cell (shared by both backends and ``harness calibrate``).
TF32_CPU_REASON = "TF32 is an NVIDIA Ampere+ GPU format; CPUs run fp32"
TF32_TPU_REASON = "TF32 is an NVIDIA Ampere+ GPU format; the torch backend does not drive TPUs"
FP32_MATH = ("ieee", "tf32")

# (module path under torch.backends, what it governs); read/written with the
# torch >= 2.9 ``fp32_precision`` API only
_PRECISION_FLAGS: tuple[tuple[str, str], ...] = (
    ("cuda.matmul", "cuda_matmul"),  # cuBLAS float32 matmuls
    ("cudnn.conv", "cudnn_conv"),    # cuDNN float32 convolutions (TF32 by default!)
    ("cudnn.rnn", "cudnn_rnn"),
    ("mkldnn.matmul", "mkldnn_matmul"),  # oneDNN on the CPU: "bf16"/"tf32" would reduce fp32
    ("mkldnn.conv", "mkldnn_conv"),
    ("mkldnn.rnn", "mkldnn_rnn"),
)


def _flag(torch: Any, path: str) -> Any:
    obj = torch.backends
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def set_fp32_math(torch: Any, fp32_math: str) -> None:
    """Make float32 matmuls/convolutions strict IEEE fp32 (``"ieee"``) or allow TF32
    (``"tf32"``) for the whole process, on every backend torch has (cuBLAS, cuDNN, oneDNN).

    ``torch.set_float32_matmul_precision`` ("highest" / "high") sets cuBLAS and oneDNN
    matmuls together, so ``torch.get_float32_matmul_precision()`` stays readable (it
    raises when the two disagree); convolutions and RNNs are set per backend. oneDNN
    convolutions and RNNs stay IEEE in both modes (no CPU has TF32).
    """
    if fp32_math not in FP32_MATH:
        raise ValueError(f"fp32_math must be one of {', '.join(FP32_MATH)}, got {fp32_math!r}")
    tf32 = fp32_math == "tf32"
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    _flag(torch, "cudnn.conv").fp32_precision = "tf32" if tf32 else "ieee"
    _flag(torch, "cudnn.rnn").fp32_precision = "tf32" if tf32 else "ieee"
    _flag(torch, "mkldnn.conv").fp32_precision = "ieee"
    _flag(torch, "mkldnn.rnn").fp32_precision = "ieee"


def fp32_math_settings(torch: Any) -> dict[str, Any]:
    """The float32 precision flags in force, for the cell's ``runtime.precision``:
    ``cuda_matmul``, ``cudnn_conv``, ... (``"ieee"``, ``"tf32"``, ``"bf16"`` or
    ``"none"`` = inherit torch's default) and ``float32_matmul_precision``
    (``torch.get_float32_matmul_precision()``). A flag that cannot be read says why."""
    out: dict[str, Any] = {}
    for path, key in _PRECISION_FLAGS:
        try:
            out[key] = str(_flag(torch, path).fp32_precision)
        except Exception as e:  # noqa: BLE001 - an older/odd torch: say so, never fail the cell
            out[key] = f"unreadable: {type(e).__name__}: {str(e)[:120]}"
    try:
        out["float32_matmul_precision"] = str(torch.get_float32_matmul_precision())
    except Exception as e:  # noqa: BLE001 - raises when cuBLAS and oneDNN flags disagree
        out["float32_matmul_precision"] = f"unreadable: {type(e).__name__}: {str(e)[:120]}"
    return out


def tf32_unsupported_reason(torch: Any, device: Any) -> str | None:
    """Why ``device`` (a ``torch.device`` or a device string) has no TF32, or None when
    it has (an NVIDIA GPU of compute capability >= 8.0, read with
    ``torch.cuda.get_device_capability``)."""
    kind = getattr(device, "type", None) or str(device).split(":")[0].lower()
    if kind != "cuda":
        return TF32_TPU_REASON if kind == "tpu" else TF32_CPU_REASON
    if not torch.cuda.is_available():
        return "TF32 needs an NVIDIA Ampere+ GPU and torch sees no CUDA device"
    index = getattr(device, "index", None)
    major, minor = torch.cuda.get_device_capability(index)
    if (int(major), int(minor)) < (8, 0):
        return (f"TF32 needs an NVIDIA Ampere+ GPU (compute capability >= 8.0); this GPU is "
                f"{int(major)}.{int(minor)} and runs fp32")
    return None
