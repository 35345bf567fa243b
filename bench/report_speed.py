"""How fast is ``harness report`` over many runs? (a benchmark, not a test)

Writes N runs x M cells of schema-valid synthetic results (seeded; 200 raw samples per
cell, two machines, one cell with a step half-way) to a temporary directory and times
``harness report DIR`` end to end in a fresh process (load + validate + history +
regressions + procurement + HTML), and the Markdown variant. Target: 100 runs x 50
cells in under 10 s.

Usage: ``python bench/report_speed.py [--runs 100] [--cells 50] [--samples 200] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_run(i: int, n_cells: int, n_samples: int, rng: np.random.Generator) -> dict[str, Any]:

    machine = "bench-b" if i % 10 == 9 else "bench-a"
    run_level = math.exp(0.02 * rng.standard_normal())
    cells = []
    for k in range(n_cells):
        center = (0.5 + 0.2 * k) * run_level * (1.2 if (k == 0 and i >= 50) else 1.0)
        x = center * (1 + 0.03 * np.abs(rng.standard_normal(n_samples)))
        spec = {"workload": f"w{k % 10}", "backend": "torch", "device": "cpu", "variant": "fp32",
                "mode": "inference", "batch_size": 2 ** (k // 10), "size": "small"}  # fmt: skip
        p25, p50, p75, p90, p99 = np.percentile(x, [25, 50, 75, 90, 99])
        half = 1.2533 * x.std() / math.sqrt(x.size) * 1.96  # synthetic data: normal-theory CI of the median
        lat = {"n": n_samples, "p50": p50, "p90": p90, "p99": p99, "mean": x.mean(), "std": x.std(ddof=1),
               "min": x.min(), "max": x.max(), "iqr": p75 - p25, "ci95_low": p50 - half, "ci95_high": p50 + half}
        lat = {k: (int(v) if k == "n" else float(v)) for k, v in lat.items()}
        cells.append({
            "id": "/".join(str(spec[f]) for f in ("workload", "backend", "device", "variant", "mode"))
                  + f"/bs{spec['batch_size']}/small",
            "spec": spec, "status": "ok", "reason": None, "error": None,
            "metrics": {"latency_ms": lat, "noisy": False, "throughput_per_s": spec["batch_size"] / lat["p50"] * 1000,
                        "peak_host_mem_bytes": 400_000_000 + k, "params": 1000 + k},
            "unavailable": {}, "runtime": {"threads": 2}, "samples_ms": [round(float(v), 5) for v in x],
        })  # fmt: skip
    return {
        "schema_version": 1, "run_id": f"2026{1 + i // 28:02d}{1 + i % 28:02d}T000000Z-{machine}-{i:06x}",
        "created": f"2026-{1 + i // 28:02d}-{1 + i % 28:02d}T00:00:00Z", "complete": True, "tag": "bench",
        "harness": {"version": "0.1.0", "git_commit": f"{i:040x}"},
        "environment": {"host": machine, "os": {"system": "Linux"}, "python": "3.11", "cpu": {"model": "bench"},
                        "fingerprint": machine},
        "suite": {"name": "bench"}, "cells": cells,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--cells", type=int, default=50)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--keep", default=None, help="write the results and report here (default: a temp dir)")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as td:
        d = Path(args.keep or td)
        d.mkdir(parents=True, exist_ok=True)
        for i in range(args.runs):
            (d / f"run{i:03d}.json").write_text(json.dumps(make_run(i, args.cells, args.samples, rng)))
        out = d / "report.html"
        times = {}
        for fmt, extra in (("html", ["-o", str(out)]), ("markdown", ["--format", "markdown", "-o", str(d / "report.md")])):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "harness", "report", str(d), *extra],
                                  capture_output=True, text=True, cwd=str(ROOT))  # fmt: skip
            times[fmt] = time.perf_counter() - t0
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return 1
        size = out.stat().st_size / 2**20
        print(f"harness report over {args.runs} runs x {args.cells} cells ({args.samples} samples each): "
              f"HTML {times['html']:.2f} s ({size:.1f} MiB), Markdown {times['markdown']:.2f} s "
              f"(end to end, fresh process; target < 10 s): {'met' if times['html'] < 10 else 'NOT met'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
