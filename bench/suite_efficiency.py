"""How much of a suite's wall time is measurement, and how much is the harness.

Runs a fixed mixed suite with the real CLI (``python -m harness run``, once with
``--size tiny`` and once with ``--size small``, each into a fresh result directory) --
torch and TensorFlow, tiny and small, inference and training, plus cells
that this machine must skip (a CUDA device, a variant the backend cannot do) -- and
prints, per backend:

* ``overhead median`` -- per ok cell, the cell's wall time as the parent saw it
  (``duration_s``) minus its warm-up (``timing.warmup_s``), its timed loop
  (``timing.loop_wall_s``) and any first-time quality-track training
  (``metrics.quality.trained.train_time_s``): process start, imports, model build, variant
  application, collectors, post-measurement analyses, message passing;
* ``excl. 1st step`` -- the same minus the cell's first step (``metrics.first_iter_ms``,
  or ``metrics.compile_time_s`` where the backend makes the first call while preparing:
  graph tracing, lazy initialisation, a compile), which is a measured, reported number
  of the framework rather than the harness's own time;
* ``skip median`` -- the wall time of a skipped cell;
* the suite's wall time (the CLI process, start to exit) and the share of it spent in
  timed loops.

Usage::

    python bench/suite_efficiency.py                  # the fixed mixed suite
    python bench/suite_efficiency.py --backends torch # one backend only
    python bench/suite_efficiency.py --suite nightly  # any suite name or YAML file
    python bench/suite_efficiency.py --json out.json  # also write the numbers

Run it alone on the machine (``uptime`` before and after): other processes on the cores
inflate every number here.
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

MIXED_SUITE = """\
name: efficiency
description: bench/suite_efficiency.py's fixed mixed suite
settings:
  min_time_s: 0.5
  warmup_max_s: 1.0
  timeout_s: 600
matrix:
  workload: [mlp, cnn]
  backend: {backends}
  device: [cpu, cuda]
  variant: [fp32, int8-dynamic]
  mode: [inference, training]
exclude:
  - {{variant: int8-dynamic, mode: training}}
"""


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def cell_overhead(cell: dict[str, Any]) -> float | None:
    """Wall time of an ok cell minus warm-up, timed loop and first-time quality training."""
    timing = cell.get("timing") or {}
    wall = cell.get("duration_s")
    warm, loop = timing.get("warmup_s"), timing.get("loop_wall_s")
    if not isinstance(wall, (int, float)) or not isinstance(warm, (int, float)) or not isinstance(loop, (int, float)):
        return None
    train = 0.0
    quality = (cell.get("metrics") or {}).get("quality") or {}
    trained = quality.get("trained") if isinstance(quality, dict) else None
    if isinstance(trained, dict) and isinstance(trained.get("train_time_s"), (int, float)):
        train = float(trained["train_time_s"])  # first-time quality-track training (a cache miss)
    return float(wall) - float(warm) - float(loop) - train


def first_step_s(cell: dict[str, Any]) -> float:
    """The cell's first step, which the harness measures and reports: graph tracing,
    lazy initialisation, a compile. ``metrics.first_iter_ms``, or ``compile_time_s``
    where the backend makes that first call while preparing the step (TensorFlow's
    trace + graph optimisation); the larger of the two, so nothing is counted twice
    (torch's compile variant times its first call inside the first step). 0 when absent."""
    m = cell.get("metrics") or {}

    def num(x: Any) -> float:
        return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else 0.0

    return max(num(m.get("first_iter_ms")) / 1e3, num(m.get("compile_time_s")))


def summarize(doc: dict[str, Any], wall_s: float) -> dict[str, Any]:
    """Per-backend overhead/skip medians and the share of wall time in timed loops."""
    out: dict[str, Any] = {"suite_wall_s": wall_s, "backends": {}}
    loops = 0.0
    by_backend: dict[str, dict[str, list[float]]] = {}
    for cell in doc.get("cells", []):
        b = (cell.get("spec") or {}).get("backend", "?")
        slot = by_backend.setdefault(b, {"overhead": [], "overhead_nf": [], "skip": [], "failed": [], "loop": [],
                                         "phases": {}})
        if cell.get("status") == "ok":
            ov = cell_overhead(cell)
            if ov is not None:
                slot["overhead"].append(ov)
                slot["overhead_nf"].append(ov - first_step_s(cell))
            for name, sec in ((cell.get("timing") or {}).get("phases_s") or {}).items():
                if isinstance(sec, (int, float)):
                    slot["phases"].setdefault(name, []).append(float(sec))
            loop = (cell.get("timing") or {}).get("loop_wall_s")
            if isinstance(loop, (int, float)):
                slot["loop"].append(float(loop))
                loops += float(loop)
        elif cell.get("status") == "skipped" and isinstance(cell.get("duration_s"), (int, float)):
            slot["skip"].append(float(cell["duration_s"]))
        else:
            slot["failed"].append(1.0)
    for b, slot in sorted(by_backend.items()):
        out["backends"][b] = {
            "ok_cells": len(slot["overhead"]),
            "skipped_cells": len(slot["skip"]),
            "failed_cells": len(slot["failed"]),
            "overhead_median_s": statistics.median(slot["overhead"]) if slot["overhead"] else None,
            "overhead_max_s": max(slot["overhead"]) if slot["overhead"] else None,
            # the same without the first step (a measured number: metrics.first_iter_ms)
            "overhead_excl_first_step_median_s": statistics.median(slot["overhead_nf"]) if slot["overhead_nf"] else None,
            "skip_median_s": statistics.median(slot["skip"]) if slot["skip"] else None,
            "timed_loops_s": sum(slot["loop"]),
            # median seconds per phase over the ok cells (timing.phases_s, docs/launch.md)
            "phases_median_s": {k: statistics.median(v) for k, v in sorted(slot["phases"].items())},
        }
    out["timed_loop_share"] = loops / wall_s if wall_s > 0 else None
    out["cells"] = [{"id": c.get("id"), "status": c.get("status"), "duration_s": c.get("duration_s"),
                     "overhead_s": cell_overhead(c) if c.get("status") == "ok" else None,
                     "first_step_s": first_step_s(c),
                     "phases_s": (c.get("timing") or {}).get("phases_s"),
                     "launch": (c.get("runtime") or {}).get("launch")}
                    for c in doc.get("cells", [])]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", default="torch,tensorflow", help="comma-separated (default: torch,tensorflow)")
    ap.add_argument("--suite", help="run this suite (name or YAML) instead of the fixed mixed suite")
    ap.add_argument("--json", help="also write the numbers to this file")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="further `harness run` flags")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dlh-eff-") as tmp:
        if args.suite:
            suite = args.suite
        else:
            backends = [b.strip() for b in args.backends.split(",") if b.strip()]
            suite = str(Path(tmp) / "efficiency.yaml")
            Path(suite).write_text(MIXED_SUITE.format(backends=json.dumps(backends)))
        sizes = [None] if args.suite else ["tiny", "small"]
        doc: dict[str, Any] = {"cells": []}
        wall = 0.0
        print(f"load before: {_loadavg()}", flush=True)
        for size in sizes:
            out_dir = Path(tmp) / f"results-{size}"
            cmd = [sys.executable, "-m", "harness", "run", "--suite", suite, "--out", str(out_dir),
                   *(["--size", size] if size else []), *args.extra]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            wall += time.perf_counter() - t0
            files = sorted(out_dir.glob("*.json"))
            if proc.returncode not in (0, 1) or not files:
                print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
                print(f"harness run exited {proc.returncode}", file=sys.stderr)
                return 1
            doc["cells"] += json.loads(files[0].read_text())["cells"]
        print(f"load after:  {_loadavg()}", flush=True)
    res = summarize(doc, wall)
    print(f"\nsuite wall time {wall:.1f} s; share in timed loops {100 * (res['timed_loop_share'] or 0):.1f}%")
    print(f"{'backend':<12}{'ok':>4}{'skip':>6}{'fail':>6}{'overhead p50 s':>16}{'overhead max s':>16}"
          f"{'excl. 1st step p50 s':>22}{'skip p50 s':>12}")
    for b, r in res["backends"].items():
        def f(x: Any, fmt: str = "{:.3f}") -> str:
            return "n/a" if x is None else fmt.format(x)
        print(f"{b:<12}{r['ok_cells']:>4}{r['skipped_cells']:>6}{r['failed_cells']:>6}"
              f"{f(r['overhead_median_s']):>16}{f(r['overhead_max_s']):>16}"
              f"{f(r['overhead_excl_first_step_median_s']):>22}{f(r['skip_median_s'], '{:.4f}'):>12}")
    for b, r in res["backends"].items():
        if r["phases_median_s"]:
            print(f"{b} phases, median s per ok cell: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in r["phases_median_s"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
