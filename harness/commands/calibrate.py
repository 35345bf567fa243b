"""``harness calibrate``: measure this machine's peak matmul FLOP/s and memory
bandwidth (the roofline's roof and the denominator of MFU) and store them under
``results/calibration/<fingerprint>.json``."""

from __future__ import annotations

import argparse
from typing import Any

from harness.commands.common import EXIT_OK, UsageError, bounded_setting, positive_float

ORDER = 45
MAX_BUDGET_S = 3600.0  # per measurement: an hour of timing per (dtype, size) is far past any use


def add_parser(sub: Any) -> None:
    cal = sub.add_parser("calibrate", help="measure peak FLOP/s per dtype and memory bandwidth (for MFU and the roofline)")
    cal.add_argument("-d", "--device", action="append", default=[],
                     help="cpu, cuda, cuda:N (repeatable; default: cpu and every visible CUDA device)")
    cal.add_argument("--out", default="results/calibration", help="directory for <fingerprint>.json (default: results/calibration)")
    cal.add_argument("--budget", type=_budget, default=1.0,
                     help=f"seconds of timing per (dtype, size) and for the copy (default 1.0, at most {MAX_BUDGET_S:g})")
    cal.add_argument("--dtype", action="append", default=[], choices=("fp32", "tf32", "bf16", "fp16"),
                     help="dtypes to measure (repeatable; default all four; fp32 is strict IEEE, tf32 needs an "
                          "Ampere+ GPU)")
    cal.add_argument("--threads", type=bounded_setting("threads"), default=None,
                     help="torch intra-op threads for the CPU (default: torch's); CPU peaks depend on it, and a "
                          "CPU cell's MFU needs a calibration with its own thread count (each count is kept)")
    cal.add_argument("--json", action="store_true", help="print the stored calibration as JSON")


def _budget(text: str) -> float:
    """argparse type of ``--budget``: a positive number of seconds, at most MAX_BUDGET_S."""
    v = positive_float(text)  # finite and > 0
    if v > MAX_BUDGET_S:
        raise argparse.ArgumentTypeError(f"must be a positive number <= {MAX_BUDGET_S:g} (seconds), got {text!r}")
    return v



def _devices(requested: list[str]) -> list[str]:
    from harness.core.suite import normalize_device

    devices = [normalize_device(d) for d in requested]  # ConfigError is a UserError: exit 2, one line
    if any(d.startswith("tpu") for d in devices):
        raise UsageError("calibrate measures cpu and cuda devices with PyTorch; tpu is not supported")
    import torch

    if not devices:
        devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    for d in devices:
        if d.startswith("cuda"):
            if not torch.cuda.is_available():
                raise UsageError(f"{d} requested but torch {torch.__version__} sees no CUDA device")
            if int(d.split(":")[1]) >= torch.cuda.device_count():
                raise UsageError(f"{d} requested but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return list(dict.fromkeys(devices))


def run(args: argparse.Namespace) -> int:
    import json

    from harness.core import calibrate
    from harness.core.environment import collect_environment

    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    devices = _devices(args.device)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    env = collect_environment()
    fp = env["fingerprint"]
    dtypes = args.dtype or list(calibrate.DTYPES)
    path = None
    for d in devices:
        info = calibrate.measure_device(d, budget_s=args.budget, dtypes=dtypes)
        path = calibrate.save(args.out, fp, d, info, environment=env)
        if not args.json:
            peaks = ", ".join(
                f"{k} {v / 1e9:.1f} GFLOP/s" if v else f"{k} unavailable ({info['unavailable'].get(k, '')})"
                for k, v in info["peak_flops_per_s"].items()
            )
            threads = f", {info['threads']} threads" if info.get("threads") else ""
            print(f"{d:<8} peak {peaks}; copy bandwidth {info['mem_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s{threads}")
    if args.json and path is not None:
        print(json.dumps(calibrate.load(path), indent=1))
    print(f"calibration: {path} (fingerprint {fp})")
    return EXIT_OK
