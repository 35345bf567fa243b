"""How faithful is the lock-step timing of data-parallel cells?

Runs real data-parallel cells (torchrun + gloo DDP, and TensorFlow MirroredStrategy
when installed) with 1 and 2 workers and prints, per cell:

* p50 and mean of ``samples_ms`` (per step, the slowest worker's time);
* ``wall_per_step_ms``: the barrier-to-barrier wall time of the whole timed loop
  divided by its steps. This is the ground truth the samples must add up to.
  ``mean / wall`` close to 1 means that no time between steps escapes the samples;
  below 1 means that time was lost outside the samples;
* the global throughput, and the scaling efficiency against the 1-worker cell.

    python bench/ddp_timing.py [--workload mlp] [--size small] [--min-time 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(backend: str, args: argparse.Namespace) -> list[dict]:
    with tempfile.TemporaryDirectory() as td:
        cmd = [sys.executable, "-m", "harness", "run", "-w", args.workload, "-b", backend, "--size", args.size,
               "--mode", "training", "--world-size", "1,2", "--min-time", str(args.min_time), "--out", td,
               "--no-progress"]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        files = list(Path(td).glob("*.json"))
        if not files:
            print(proc.stdout[-2000:], proc.stderr[-2000:])
            return []
        return json.loads(files[0].read_text())["cells"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default="mlp")
    ap.add_argument("--size", default="small")
    ap.add_argument("--min-time", type=float, default=2.0)
    ap.add_argument("--backends", default="torch,tensorflow")
    args = ap.parse_args()
    print(f"{'cell':58} {'p50 ms':>8} {'mean ms':>8} {'wall/step':>9} {'mean/wall':>9} {'samples/s':>10} {'eff':>6}")
    for backend in args.backends.split(","):
        for c in run(backend, args):
            if c["status"] != "ok":
                print(f"{c['id']:58} {c['status']}: {c.get('reason')}")
                continue
            d = c["metrics"]["distributed"]
            mean = statistics.fmean(c["samples_ms"])
            wall = d.get("wall_per_step_ms")
            if wall is None:  # MirroredStrategy: one process, the ordinary timed loop
                t = c["timing"]
                wall = t["loop_wall_s"] * 1e3 / (t["samples"] * t["iters_per_sample"])
            eff = d.get("scaling_efficiency")
            print(f"{c['id']:58} {c['metrics']['latency_ms']['p50']:8.3f} {mean:8.3f} {wall:9.3f} "
                  f"{mean / wall:9.3f} {c['metrics']['throughput_per_s']:10.0f} "
                  f"{'' if eff is None else f'{eff:6.2f}'}")


if __name__ == "__main__":
    main()
