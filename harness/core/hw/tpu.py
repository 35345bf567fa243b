"""TPU presence, detected without importing TensorFlow or JAX and without the network.

Evidence, strongest first (the lowest boundary is the file system and the environment;
tests pass fake roots):

1. PCI devices with Google's vendor id ``0x1ae0`` under ``/sys/bus/pci/devices``
   (TPU chips on a TPU VM are PCI functions; v4+ and v5e/v6e alike).
2. Accelerator device nodes ``/dev/accel*`` (TPU v4 VMs) or ``/dev/vfio/<n>``
   groups (v5e/v6e use VFIO) — on their own these only *suggest* a TPU.
3. ``TPU_NAME`` / ``TPU_ACCELERATOR_TYPE`` in the environment (a remote TPU node or a
   TPU VM's runtime configuration).

The GCE metadata server (``accelerator-type``) would say the type too, but querying
it needs the network, so it is not used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

GOOGLE_PCI_VENDOR = "0x1ae0"


def detect_tpu(
    env: Mapping[str, str] | None = None,
    sys_root: str | Path = "/sys",
    dev_root: str | Path = "/dev",
) -> dict[str, Any]:
    """``{"present": bool, "chips": int | None, "evidence": [...], "how": str}``."""
    env = os.environ if env is None else env
    evidence: list[str] = []
    chips = 0
    pci = Path(sys_root) / "bus" / "pci" / "devices"
    try:
        for dev in sorted(pci.iterdir()):
            try:
                if (dev / "vendor").read_text().strip().lower() == GOOGLE_PCI_VENDOR:
                    chips += 1
            except OSError:
                continue
    except OSError:
        pass
    if chips:
        evidence.append(f"{chips} PCI device(s) with Google vendor id {GOOGLE_PCI_VENDOR}")
    dev = Path(dev_root)
    accel = sorted(p.name for p in dev.glob("accel*"))
    if accel:
        evidence.append(f"device nodes /dev/{', /dev/'.join(accel)}")
    vfio = sorted(p.name for p in (dev / "vfio").glob("[0-9]*")) if (dev / "vfio").is_dir() else []
    if vfio:
        evidence.append(f"{len(vfio)} VFIO group(s) under /dev/vfio")
    for var in ("TPU_NAME", "TPU_ACCELERATOR_TYPE"):
        if env.get(var):
            evidence.append(f"{var}={env[var]}")
    present = bool(chips) or bool(env.get("TPU_NAME")) or bool(env.get("TPU_ACCELERATOR_TYPE")) or bool(accel)
    how = (
        "checked PCI vendor ids (Google 0x1ae0) under /sys/bus/pci/devices, /dev/accel*, /dev/vfio, "
        "and TPU_NAME/TPU_ACCELERATOR_TYPE; TensorFlow not imported, metadata server not queried"
    )
    return {
        "present": present,
        "chips": chips or (len(accel) or None),
        "accelerator_type": env.get("TPU_ACCELERATOR_TYPE") or None,
        "evidence": evidence,
        "how": how,
    }
