"""``harness env``: this machine's fingerprint (CPU and its DL ISA flags, cores,
memory, GPUs, TPU presence, frameworks) — the same block every result stores."""

from __future__ import annotations

import argparse
from typing import Any

from harness.commands.common import EXIT_OK

ORDER = 40


def add_parser(sub: Any) -> None:
    env = sub.add_parser("env", help="print this machine's fingerprint (CPU, ISA flags, memory, GPUs, TPU)")
    env.add_argument("--json", action="store_true", help="the full environment block as JSON")


def _yes(v: Any) -> str:
    return "yes" if v else "no"


def format_environment(env: dict[str, Any]) -> list[str]:
    """The human-readable lines of ``harness env``."""
    cpu = env["cpu"]
    isa = cpu.get("isa") or {}
    lines = [
        f"host         {env['host']}",
        f"os           {env['os']['platform']}",
        f"python       {env['python']}",
        f"cpu          {cpu['model']} ({cpu['arch']})",
        f"cores        {cpu['physical_cores']} physical, {cpu['logical_cores']} logical (threads), "
        f"{cpu.get('affinity_cores')} usable by this process, {cpu.get('sockets') or '?'} socket(s)",
        "dl isa       " + ", ".join(f"{k.upper().replace('AVX512', 'AVX-512')} {_yes(v)}" for k, v in isa.items()),
        "isa flags    " + " ".join(k for k, v in cpu["flags_dl"].items() if v) + f"  (from {cpu.get('flags_source')})",
    ]
    mem = env.get("memory_bytes")
    lines.append(f"memory       {mem / 2**30:.1f} GiB" if mem else "memory       unavailable")
    if env["gpus"]:
        for g in env["gpus"]:
            mem_g = f"{g['memory_bytes'] / 2**30:.1f} GiB" if g.get("memory_bytes") else "memory ?"
            plim = f"{g['power_limit_w']:g} W limit" if g.get("power_limit_w") else "power limit ?"
            lines.append(
                f"gpu {g['nvml_index']}        {g['name']} ({mem_g}, driver {g['driver']}, CUDA {g['cuda_driver']}, "
                f"compute {g['compute_capability']}, {plim}, PCI {g.get('pci_bus_id')})"
            )
    else:
        lines.append(f"gpu          none ({env['gpus_reason']})")
    tpu = env.get("tpu") or {}
    if tpu.get("present"):
        lines.append(f"tpu          present: {'; '.join(tpu.get('evidence', []))}")
    else:
        lines.append(f"tpu          none found ({tpu.get('how', 'not checked')})")
    lines.append(f"frameworks   {', '.join(f'{k} {v}' for k, v in env['frameworks'].items())}")
    lines.append(f"fingerprint  {env['fingerprint']}")
    return lines


def run(args: argparse.Namespace) -> int:
    import json

    from harness.core.environment import collect_environment

    env = collect_environment()
    if args.json:
        print(json.dumps(env, indent=1))
        return EXIT_OK
    print("\n".join(format_environment(env)))
    return EXIT_OK
