"""``harness env``: this machine's fingerprint."""

from __future__ import annotations

import argparse
from typing import Any

from harness.cli import EXIT_OK

ORDER = 40


def add_parser(sub: Any) -> None:
    env = sub.add_parser("env", help="print this machine's fingerprint (CPU, ISA flags, memory, GPUs)")
    env.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    import json

    from harness.environment import collect_environment

    env = collect_environment()
    if args.json:
        print(json.dumps(env, indent=1))
        return EXIT_OK
    cpu = env["cpu"]
    flags = ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in cpu["flags_dl"].items())
    print(f"host         {env['host']}")
    print(f"os           {env['os']['platform']}")
    print(f"python       {env['python']}")
    print(f"cpu          {cpu['model']} ({cpu['logical_cores']} logical / {cpu['physical_cores']} physical cores)")
    print(f"isa flags    {flags}")
    mem = env.get("memory_bytes")
    print(f"memory       {mem / 2**30:.1f} GiB" if mem else "memory       unavailable")
    if env["gpus"]:
        for g in env["gpus"]:
            print(f"gpu          {g['name']} ({(g['memory_bytes'] or 0) / 2**30:.1f} GiB, driver {g['driver']})")
    else:
        print(f"gpu          none ({env['gpus_reason']})")
    print(f"frameworks   {', '.join(f'{k} {v}' for k, v in env['frameworks'].items())}")
    print(f"fingerprint  {env['fingerprint']}")
    return EXIT_OK



