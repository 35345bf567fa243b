"""Per-cell overhead of ``harness run --ray`` against a local run (a benchmark, not a test).

Runs the same suite twice, interleaved ``--rounds`` times: locally (``harness run``) and
through a local single-node Ray (``harness run --ray local``), and compares each cell's
wall time as the runner saw it (``duration_s``) and the whole command's wall time.
The fleet driver starts each cell in a fresh worker process on its node (the local
run forks cells from a zygote when it has enough of them), so the difference is mostly
fresh process vs zygote plus Ray's task dispatch; ``runtime.fleet`` holds the driver's
own wall time per cell.

    python bench/fleet_overhead.py [--suite smoke] [--rounds 2]

Run it on a quiet machine (check ``uptime`` before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(args: list[str], out: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "harness", "run", *args, "--out", str(out), "--no-progress"],
                   check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    files = sorted(out.glob("*.json"))
    if not files:
        raise SystemExit(f"no result in {out} for {args}")
    return wall, json.loads(files[-1].read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="smoke")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    print(f"load before: {os.getloadavg()[0]:.2f}")
    per: dict[str, dict[str, list[float]]] = {"local": {}, "ray": {}}
    walls: dict[str, list[float]] = {"local": [], "ray": []}
    with tempfile.TemporaryDirectory() as td:
        for r in range(args.rounds):
            order = ("local", "ray") if r % 2 == 0 else ("ray", "local")
            for kind in order:
                extra = ["--ray", "local"] if kind == "ray" else []
                wall, doc = _run(["--suite", args.suite, *extra], Path(td, f"{kind}{r}"))
                walls[kind].append(wall)
                for cell in doc["cells"]:
                    if cell.get("status") == "ok":
                        per[kind].setdefault(cell["id"], []).append(float(cell["duration_s"]))
    print(f"{'cell':<45} {'local s':>9} {'--ray s':>9} {'diff s':>8}")
    diffs = []
    for cid in sorted(per["local"]):
        if cid not in per["ray"]:
            continue
        lo, ra = statistics.median(per["local"][cid]), statistics.median(per["ray"][cid])
        diffs.append(ra - lo)
        print(f"{cid:<45} {lo:>9.2f} {ra:>9.2f} {ra - lo:>8.2f}")
    if diffs:
        print(f"median per-cell overhead of --ray: {statistics.median(diffs):.2f} s "
              f"(cells' duration_s as the runner saw it; {len(diffs)} cells, {args.rounds} rounds)")
    print(f"command wall: local {statistics.median(walls['local']):.1f} s, --ray local "
          f"{statistics.median(walls['ray']):.1f} s (medians; --ray includes starting Ray)")
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
