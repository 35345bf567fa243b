"""NVML adapter (``nvidia-ml-py``, imported as ``pynvml``).

``open_nvml()`` returns an :class:`Nvml` session or :class:`NullNvml` carrying the
reason NVML is unavailable. Tests pass an autospec'd fake module as ``module``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class NullNvml:
    """NVML is not usable here; ``reason`` says why."""

    reason: str
    available: bool = False

    def gpus(self) -> list[dict[str, Any]]:
        return []

    def close(self) -> None:
        pass


class Nvml:
    """An initialised NVML session."""

    available = True
    reason = ""

    def __init__(self, module: Any) -> None:
        self.nv = module

    def _str(self, v: Any) -> str:
        return v.decode() if isinstance(v, bytes) else str(v)

    def gpus(self) -> list[dict[str, Any]]:
        """Static facts per GPU in NVML (PCI bus) order."""
        nv = self.nv
        out = []
        driver = self._safe(lambda: self._str(nv.nvmlSystemGetDriverVersion()))
        cuda = self._safe(lambda: nv.nvmlSystemGetCudaDriverVersion_v2())
        cuda_str = f"{cuda // 1000}.{(cuda % 1000) // 10}" if isinstance(cuda, int) else None
        for i in range(nv.nvmlDeviceGetCount()):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            mem = self._safe(lambda: nv.nvmlDeviceGetMemoryInfo(h))
            cc = self._safe(lambda: nv.nvmlDeviceGetCudaComputeCapability(h))
            plim = self._safe(lambda: nv.nvmlDeviceGetPowerManagementLimit(h))
            out.append(
                {
                    "nvml_index": i,
                    "name": self._safe(lambda: self._str(nv.nvmlDeviceGetName(h))),
                    "uuid": self._safe(lambda: self._str(nv.nvmlDeviceGetUUID(h))),
                    "pci_bus_id": self._safe(lambda: self._str(nv.nvmlDeviceGetPciInfo(h).busId)),
                    "memory_bytes": getattr(mem, "total", None),
                    "driver": driver,
                    "cuda_driver": cuda_str,
                    "compute_capability": f"{cc[0]}.{cc[1]}" if cc else None,
                    "power_limit_w": plim / 1000.0 if isinstance(plim, (int, float)) else None,
                }
            )
        return out

    @staticmethod
    def _safe(fn: Any) -> Any:
        try:
            return fn()
        except Exception:  # noqa: BLE001 - a missing NVML field is recorded as null
            return None

    def close(self) -> None:
        try:
            self.nv.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def open_nvml(module: Any = None) -> Nvml | NullNvml:
    """Initialise NVML, or explain why it is unavailable."""
    if module is None:
        try:
            import pynvml as module  # provided by nvidia-ml-py
        except ImportError:
            return NullNvml("NVML python bindings not installed (pip install nvidia-ml-py)")
    try:
        module.nvmlInit()
    except Exception as e:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return NullNvml(f"NVML unavailable: {e or type(e).__name__} (no NVIDIA driver on this machine?)")
    return Nvml(module)
