"""Cost of ``harness import pytest-benchmark`` on big files: wall time and peak RSS.

Generates pytest-benchmark JSON files in a temporary directory -- one of about 1 MB and
one of about 10 MB (one benchmark each, rounds sized to fit) and one with 3,000,000
rounds (~68 MB) -- imports each in a fresh ``python -m harness`` process, and prints the
wall time and that process's peak resident memory (``os.wait4``'s rusage of that child
alone), with what was stored (samples kept / rounds, the CI method). A bare
``python -m harness --version`` is timed first: that much is interpreter start-up.

    python bench/import_cost.py [--rounds 3000000] [--mb 1 10] [--repeat 1]

The machine may be shared: run ``uptime`` before and after and quote the load with the
figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BYTES_PER_ROUND = 22.8  # "0.0010xxxxxxxxxxxxx, " in json.dumps output, measured


def write_pb_json(path: Path, rounds: int, seed: int = 0) -> int:
    """A pytest-benchmark --benchmark-json file with one benchmark of ``rounds`` rounds."""
    rng = random.Random(seed)
    data = [0.001 + rng.random() * 1e-4 for _ in range(rounds)]
    doc: dict[str, Any] = {
        "machine_info": {"node": "bench", "system": "Linux", "release": "6", "machine": "x86_64",
                         "python_version": "3.11", "cpu": {"brand_raw": "X", "count": 2, "flags": ["avx2"]}},
        "commit_info": {"id": "0" * 40, "dirty": False},
        "datetime": "2026-11-23T12:00:00+00:00",
        "version": "5.1.0",
        "benchmarks": [{
            "group": None, "name": "test_f", "fullname": "t.py::test_f", "params": None, "param": None,
            "extra_info": {}, "options": {"timer": "perf_counter", "min_rounds": 5, "max_time": 1.0},
            "stats": {"data": data, "iterations": 1, "rounds": rounds, "min": min(data), "max": max(data),
                      "mean": sum(data) / rounds},
        }],
    }  # fmt: skip
    text = json.dumps(doc)
    path.write_text(text)
    return len(text)


def timed(cmd: list[str]) -> tuple[float, float, int, str]:
    """(wall s, peak RSS MiB of that process alone, exit code, stdout+stderr)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = p.stdout.read() if p.stdout else ""
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024.0, p.returncode, out  # ru_maxrss: KiB on Linux


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, nargs="*", default=[3_000_000], help="files with this many rounds")
    ap.add_argument("--mb", type=float, nargs="*", default=[1.0, 10.0], help="files of about this many MB")
    ap.add_argument("--repeat", type=int, default=1, help="imports per file (the best is printed)")
    args = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="dlh-import-cost-") as tmp:
        d = Path(tmp)
        wall, rss, _, _ = timed([py, "-m", "harness", "--version"])
        print(f"python -m harness --version (start-up): {wall:.2f} s, peak RSS {rss:.0f} MiB")
        files = [(f"{mb:g} MB", max(1, int(mb * 1e6 / BYTES_PER_ROUND))) for mb in args.mb]
        files += [(f"{r:,} rounds", r) for r in args.rounds]
        print(f"{'file':>18} {'rounds':>10} {'size MB':>8} {'wall s':>7} {'peak RSS MiB':>13}  stored")
        for label, rounds in files:
            src = d / f"pb-{rounds}.json"
            size = write_pb_json(src, rounds)
            best: tuple[float, float] | None = None
            stored = ""
            for i in range(args.repeat):
                out_dir = d / f"out-{rounds}-{i}"
                wall, rss, code, out = timed([py, "-m", "harness", "import", "pytest-benchmark", str(src),
                                              "-o", str(out_dir), "--force"])  # fmt: skip
                if code != 0:
                    print(f"{label}: import failed (exit {code}):\n{out[-2000:]}")
                    return 1
                best = (wall, rss) if best is None or wall < best[0] else best
                res = json.loads(next(out_dir.glob("*.json")).read_text())
                cell = res["cells"][0]
                sub = cell["timing"].get("samples_subsampled")
                ci = cell["imported"]["statistics"]["ci95_method"].split(" (")[0].split(",")[0]
                stored = (f"{len(cell['samples_ms']):,} of {cell['timing']['samples']:,} samples"
                          + (" (strided subsample)" if sub else "") + f"; CI: {ci}")  # fmt: skip
            assert best is not None
            print(f"{label:>18} {rounds:>10,} {size / 1e6:>8.1f} {best[0]:>7.2f} {best[1]:>13.0f}  {stored}")
            src.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
