"""NVML adapter (``nvidia-ml-py``, imported as ``pynvml``).

``open_nvml()`` returns an :class:`Nvml` session or :class:`NullNvml` carrying the
reason NVML is unavailable. Tests pass an autospec'd fake module as ``module``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


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

    # -- live readings (the energy and utilisation collectors) ------------------------
    def count(self) -> int:
        return int(self.nv.nvmlDeviceGetCount())

    def handle(self, nvml_index: int) -> Any:
        return self.nv.nvmlDeviceGetHandleByIndex(nvml_index)

    def energy_counter_mj(self, handle: Any) -> int:
        """Total energy since the driver loaded, millijoules (Volta and newer); raises
        the NVML error where the GPU does not support the counter."""
        return int(self.nv.nvmlDeviceGetTotalEnergyConsumption(handle))

    def power_mw(self, handle: Any) -> int:
        """Current board power draw, milliwatts (averaged by the driver over ~1 s on
        most GPUs, instantaneous on some)."""
        return int(self.nv.nvmlDeviceGetPowerUsage(handle))

    def power_limit_w(self, handle: Any) -> float | None:
        v = self._safe(lambda: self.nv.nvmlDeviceGetPowerManagementLimit(handle))
        return v / 1000.0 if isinstance(v, (int, float)) else None

    def utilisation(self, handle: Any) -> dict[str, Any]:
        """One utilisation sample: GPU busy %, SM clock (MHz), memory used (bytes),
        temperature (C); a field NVML cannot read is None."""
        nv = self.nv
        util = self._safe(lambda: nv.nvmlDeviceGetUtilizationRates(handle))
        mem = self._safe(lambda: nv.nvmlDeviceGetMemoryInfo(handle))
        return {
            "gpu_util_percent": _num(getattr(util, "gpu", None)),
            "sm_clock_mhz": _num(self._safe(lambda: nv.nvmlDeviceGetClockInfo(handle, NVML_CLOCK_SM))),
            "gpu_mem_used_bytes": _num(getattr(mem, "used", None)),
            "gpu_temp_c": _num(self._safe(lambda: nv.nvmlDeviceGetTemperature(handle, NVML_TEMPERATURE_GPU))),
        }

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


# NVML ABI constants (stable across versions; spelled out so an autospec'd fake module,
# whose constants are mocks, still gets the real values).
NVML_CLOCK_SM = 1
NVML_TEMPERATURE_GPU = 0


def _num(v: Any) -> float | int | None:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def parse_visible_devices(value: str | None) -> list[str] | None:
    """``CUDA_VISIBLE_DEVICES`` as CUDA reads it: None (unset: every GPU), or the list of
    entries up to the first invalid one (CUDA ignores the rest; "-1" hides all)."""
    if value is None:
        return None
    out: list[str] = []
    for raw in value.split(","):
        e = raw.strip()
        if not e:
            break
        if e.lstrip("-").isdigit():
            if int(e) < 0:
                break
            out.append(str(int(e)))
        elif e.startswith(("GPU-", "MIG-")):
            out.append(e)
        else:
            break
    return out


def resolve_cuda_device(
    cuda_index: int,
    gpus: list[dict[str, Any]],
    env: Mapping[str, str],
    cuda_uuid: str | None = None,
) -> tuple[int | None, str]:
    """NVML index of CUDA device ``cuda_index`` as this process sees it, and how it was
    mapped (or None and the reason).

    ``gpus`` is :meth:`Nvml.gpus` (NVML enumerates in PCI bus order). CUDA numbers the
    devices in ``CUDA_VISIBLE_DEVICES`` order (integer entries index CUDA's own
    enumeration, ``GPU-<uuid>`` prefixes name a device); CUDA's enumeration is PCI bus
    order under ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` and "fastest first" by default,
    which equals PCI order only when all GPUs are the same model. ``cuda_uuid`` (from the
    framework, e.g. ``torch.cuda.get_device_properties(i).uuid``) settles it directly.
    """
    if cuda_uuid:
        want = cuda_uuid if cuda_uuid.startswith("GPU-") else f"GPU-{cuda_uuid}"
        for g in gpus:
            if (g.get("uuid") or "").lower() == want.lower():
                return int(g["nvml_index"]), "by UUID reported by the framework"
        return None, f"no NVML device has the framework's UUID {want}"
    order = (env.get("CUDA_DEVICE_ORDER") or "FASTEST_FIRST").upper()
    pci_sorted = sorted(gpus, key=lambda g: ((g.get("pci_bus_id") or "").lower(), g["nvml_index"]))
    same_model = len({g.get("name") for g in gpus}) <= 1
    visible = parse_visible_devices(env.get("CUDA_VISIBLE_DEVICES"))
    entries = [str(i) for i in range(len(gpus))] if visible is None else visible
    if cuda_index >= len(entries):
        return None, f"cuda:{cuda_index} is not visible (CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')!r})"
    entry = entries[cuda_index]
    if entry.startswith("MIG-"):
        return None, f"MIG instance {entry}: NVML energy/utilisation are per physical GPU, not per MIG slice"
    if entry.startswith("GPU-"):
        hits = [g for g in gpus if (g.get("uuid") or "").lower().startswith(entry.lower())]
        if len(hits) != 1:
            return None, f"CUDA_VISIBLE_DEVICES entry {entry!r} matches {len(hits)} NVML devices"
        return int(hits[0]["nvml_index"]), "by UUID in CUDA_VISIBLE_DEVICES"
    k = int(entry)
    if k >= len(pci_sorted):
        return None, f"CUDA_VISIBLE_DEVICES entry {k} but NVML sees {len(pci_sorted)} GPU(s)"
    if order == "PCI_BUS_ID" or same_model:
        why = "CUDA_DEVICE_ORDER=PCI_BUS_ID" if order == "PCI_BUS_ID" else "all GPUs are the same model"
        return int(pci_sorted[k]["nvml_index"]), f"by PCI bus order ({why})"
    return None, (
        "CUDA_DEVICE_ORDER is FASTEST_FIRST and the GPUs differ, so CUDA's numbering is not NVML's; "
        "set CUDA_DEVICE_ORDER=PCI_BUS_ID or let the framework report the device UUID"
    )


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


def open_cuda_device(
    cuda_index: int, env: Mapping[str, str], cuda_uuid: str | None = None, module: Any = None
) -> tuple[Nvml, Any, str] | str:
    """NVML opened on CUDA device ``cuda_index`` as ``(nvml, handle, how)`` (``how``
    says which NVML device and how it was mapped), or the reason it cannot be."""
    nv = open_nvml(module)
    if not nv.available:
        return nv.reason
    nvml_index, how = resolve_cuda_device(cuda_index, nv.gpus(), env, cuda_uuid)
    if nvml_index is None:
        nv.close()
        return f"cannot map cuda:{cuda_index} to an NVML device: {how}"
    return nv, nv.handle(nvml_index), f"cuda:{cuda_index} = NVML device {nvml_index} ({how})"


def cuda_index(device: str) -> int | None:
    """The CUDA ordinal of a device string (``cuda`` -> 0, ``cuda:2`` -> 2), None otherwise."""
    if not device.startswith("cuda"):
        return None
    return int(device.split(":")[1]) if ":" in device else 0


def framework_cuda_uuid(index: int) -> str | None:
    """The UUID of CUDA device ``index`` as an *already imported* PyTorch reports it
    (``torch.cuda.get_device_properties(index).uuid``), or None when torch is not
    loaded in this process or cannot say. Never imports a framework: the UUID only
    pins NVML to the same physical GPU when CUDA_VISIBLE_DEVICES reorders them."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        u = torch.cuda.get_device_properties(index).uuid
        return str(u) if u else None
    except Exception:  # noqa: BLE001
        return None
