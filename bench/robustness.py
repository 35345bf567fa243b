"""Bounded cost on huge result files (issue 13): wall time, peak memory and output size
of ``harness report``, ``compare``, ``export`` and ``import`` on inputs of about 1 MB,
10 MB and 200 MB. A benchmark, not a test. Target: under 30 s and under 1 GiB each on
the 200 MB input.

How the inputs are made (real result format, synthetic size):

1. A template: one real ``harness run -w mlp --size tiny --min-time 0.05 --out DIR
   --no-progress`` (or ``--template FILE``, a result file you already have).
2. Each size is ``cells`` copies of the template's first cell (spec ``batch_size`` set
   to 1, 2, 3, ... so every cell id differs) whose ``samples_ms`` is replaced by
   ``n`` seeded synthetic latencies: the template's p50 x a log-normal (sd 5%) body
   with 2% of samples 1.5-4x slower (a realistic right tail), written at full float
   precision as the runner writes them (``harness.store.results.dumps``: JSON, indent 1, one
   sample a line, ~22 bytes per sample). ``n`` is chosen from the measured bytes per
   sample so the file is about the target size. ``metrics.latency_ms`` is recomputed
   from those samples with numpy (percentiles, mean, std; the median CI by order
   statistics, so the generator itself never runs a bootstrap), ``timing.samples`` is
   ``n`` and the contention record says "not contended" (so ``compare --within-run``
   draws a verdict and runs its statistics).
3. Baseline A (seed 1) and candidate B (seed 2, 3% slower) for ``compare``.
4. A pytest-benchmark JSON of about the same size (``stats.data`` in seconds, indent 4
   as pytest-benchmark writes it) for ``harness import pytest-benchmark``.

Sizes: ``1`` = 1 cell, ``10`` = 4 cells, ``200`` = 4 cells (about 2.3 M samples each)
by default; ``--many-cells`` adds a 200 MB case of 2,000 ordinary cells (4,000 samples
each), where no per-cell cap applies and only the report's total point budget does.

Each command runs as a child process; its peak memory is the ``ru_maxrss`` that
``os.wait4`` returns for that child alone (it includes descendants it waited for), its
wall time is measured around it, and a child over ``--timeout`` is killed and shown as
TIMEOUT. A ``load`` row times ``harness.store.results.load_results`` alone on the same file,
which is the JSON-parse share of every other row.

Usage: ``python bench/robustness.py [--sizes 1,10,200] [--many-cells] [--workdir DIR]
[--keep] [--timeout 300] [--template FILE]``
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HARNESS = [sys.executable, "-m", "harness"]
TARGET_S = 30.0
TARGET_RSS = 1 << 30
# size in MB -> cells (samples per cell follow from the bytes per sample)
PLAN = {1: 1, 10: 4, 200: 4}


def make_template(workdir: Path) -> Path:
    """One real result file from ``harness run`` (the format's source of truth)."""
    out = workdir / "template"
    cmd = HARNESS + ["run", "-w", "mlp", "--size", "tiny", "--min-time", "0.05", "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    files = sorted(out.glob("*.json"))
    if not files:
        raise SystemExit(f"template run failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return files[0]


def generate(d: Path, cells: int, n: int, n_pb: int, template: Path) -> None:
    """Write ``d``/a.json (seed 1), b.json (seed 2, 3% slower) and pytest_benchmark.json."""
    from harness.store.results import dumps

    tpl = json.loads(template.read_text())
    tpl["cells"] = [c for c in tpl["cells"] if c.get("status") == "ok"][:1]
    for name, seed, slow in (("a", 1, 1.0), ("b", 2, 1.03)):
        (d / f"{name}.json").write_text(dumps(result_doc(tpl, cells, n, seed, slow, name)))
    center = float(tpl["cells"][0]["metrics"]["latency_ms"]["p50"])
    (d / "pytest_benchmark.json").write_text(json.dumps(pytest_benchmark_doc(cells, n_pb, center, 3), indent=4))


def synth_samples(n: int, center: float, rng: np.random.Generator, slow: float = 1.0) -> list[float]:
    """``n`` latencies (ms): log-normal body (sd 5%) around ``center`` x ``slow`` and a
    2% tail 1.5-4x slower."""
    x = center * slow * np.exp(0.05 * rng.standard_normal(n))
    tail = rng.random(n) < 0.02
    x[tail] *= rng.uniform(1.5, 4.0, int(tail.sum()))
    return x.tolist()


def latency_summary(xs: list[float]) -> dict[str, Any]:
    """The ``metrics.latency_ms`` block recomputed from ``xs`` with numpy only (the
    median's 95% CI from order statistics: ranks n/2 -+ 1.96 sqrt(n)/2)."""
    x = np.asarray(xs)
    p25, p50, p75, p90, p99 = np.percentile(x, [25, 50, 75, 90, 99])
    n = x.size
    half = 1.96 * math.sqrt(n) / 2
    lo_r, hi_r = max(0, int(n / 2 - half)), min(n - 1, int(math.ceil(n / 2 + half)))
    part = np.partition(x, [lo_r, hi_r])
    mean, std = float(x.mean()), float(x.std(ddof=1)) if n > 1 else 0.0
    iqr = float(p75 - p25)
    return {"n": n, "p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": mean, "std": std,
            "min": float(x.min()), "max": float(x.max()), "iqr": iqr, "cv": std / mean,
            "ci95_low": float(part[lo_r]), "ci95_high": float(part[hi_r]), "iqr_over_median": iqr / float(p50)}  # fmt: skip


def synth_cell(tpl: dict[str, Any], k: int, n: int, seed: int, slow: float) -> dict[str, Any]:
    """Cell ``k`` (batch size k + 1) of the template with ``n`` synthetic samples."""
    cell = copy.deepcopy(tpl)
    cell.pop("repeats", None)
    spec = cell["spec"]
    spec["batch_size"] = k + 1
    cell["id"] = "/".join(str(spec.get(f)) for f in ("workload", "backend", "device", "variant", "mode")) \
        + f"/bs{spec['batch_size']}/{spec.get('size')}"
    center = float(tpl["metrics"]["latency_ms"]["p50"]) * (1 + 0.1 * k)
    xs = synth_samples(n, center, np.random.default_rng([seed, k]), slow)
    cell["samples_ms"] = xs
    lat = latency_summary(xs)
    m = cell["metrics"]
    m["latency_ms"] = lat
    m["noisy"] = bool(lat["iqr_over_median"] > 0.10)
    m["throughput_per_s"] = spec["batch_size"] / lat["mean"] * 1000
    m["throughput_p50_per_s"] = spec["batch_size"] / lat["p50"] * 1000
    t = cell.setdefault("timing", {})
    t["samples"] = n
    t["contention"] = {"detected": False, "reasons": [], "rule": "synthetic (bench/robustness.py)"}
    cell.pop("timeseries", None)  # its length follows the cell's duration, not the samples
    return cell


def result_doc(tpl_doc: dict[str, Any], cells: int, n: int, seed: int, slow: float, tag: str) -> dict[str, Any]:
    doc = {k: v for k, v in tpl_doc.items() if k != "cells"}
    doc = copy.deepcopy(doc)
    doc["run_id"] = f"{tpl_doc['run_id']}-{tag}"
    doc["tag"] = tag
    doc["not_run"] = []
    doc["cells"] = [synth_cell(tpl_doc["cells"][0], k, n, seed, slow) for k in range(cells)]
    return doc


def pytest_benchmark_doc(cells: int, n: int, center_ms: float, seed: int) -> dict[str, Any]:
    """A pytest-benchmark ``--benchmark-json`` document with ``cells`` benchmarks of ``n``
    rounds each (``stats.data`` in seconds)."""
    benches = []
    for k in range(cells):
        data = [x / 1000.0 for x in synth_samples(n, center_ms * (1 + 0.1 * k), np.random.default_rng([seed, k]))]
        a = np.asarray(data)
        q1, med, q3 = np.percentile(a, [25, 50, 75])
        benches.append({
            "group": None, "name": f"test_f{k}", "fullname": f"tests/test_x.py::test_f{k}", "params": None,
            "param": None, "extra_info": {}, "options": {"disable_gc": False, "timer": "perf_counter",
                                                        "min_rounds": 5, "max_time": 1.0, "min_time": 5e-06,
                                                        "warmup": False},
            "stats": {"min": float(a.min()), "max": float(a.max()), "mean": float(a.mean()),
                      "stddev": float(a.std(ddof=1)), "rounds": n, "median": float(med), "iqr": float(q3 - q1),
                      "q1": float(q1), "q3": float(q3), "iqr_outliers": 0, "stddev_outliers": 0, "outliers": "0;0",
                      "ld15iqr": float(a.min()), "hd15iqr": float(a.max()), "ops": float(1 / a.mean()),
                      "total": float(a.sum()), "data": data, "iterations": 1},
        })  # fmt: skip
    return {
        "machine_info": {"node": "bench", "processor": "x86_64", "machine": "x86_64", "python_implementation": "CPython",
                         "python_version": "3.11.7", "release": "6.1", "system": "Linux",
                         "cpu": {"brand_raw": "bench CPU", "count": 2, "flags": ["avx2"]}},
        "commit_info": {"id": "0" * 40, "time": "2026-01-01T00:00:00+00:00", "dirty": False, "branch": "main"},
        "benchmarks": benches, "datetime": "2026-01-01T00:00:00+00:00", "version": "5.1.0",
    }  # fmt: skip


def bytes_per_sample(tpl_doc: dict[str, Any]) -> tuple[float, float]:
    """(bytes per sample in a result file, bytes per round in a pytest-benchmark file)."""
    from harness.store.results import dumps

    small, big = (len(dumps(result_doc(tpl_doc, 1, n, 9, 1.0, "probe"))) for n in (1000, 21000))
    pb_small, pb_big = (len(json.dumps(pytest_benchmark_doc(1, n, 1.0, 9), indent=4)) for n in (1000, 21000))
    return (big - small) / 20000, (pb_big - pb_small) / 20000


# ----------------------------------------------------------------------------- measuring


def measure(cmd: list[str], out: Path | None, timeout: float, log: Path) -> dict[str, Any]:
    """Run ``cmd``; (wall s, peak RSS bytes of that child, exit code, output bytes)."""
    with open(log, "wb") as f:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f if out is None else subprocess.DEVNULL, stderr=f,
                                start_new_session=True)  # fmt: skip
        timed_out = False
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > timeout:
                os.killpg(proc.pid, signal.SIGKILL)
                pid, status, ru = os.wait4(proc.pid, 0)
                timed_out = True
                break
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    size = None
    target = out if out is not None else log
    if target.exists():
        size = sum(p.stat().st_size for p in target.rglob("*")) if target.is_dir() else target.stat().st_size
    return {"wall": wall, "rss": ru.ru_maxrss * 1024, "rc": "TIMEOUT" if timed_out else proc.returncode,
            "out": size}  # fmt: skip


def human(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1,10,200", help="target input sizes in MB (comma-separated)")
    ap.add_argument("--many-cells", action="store_true", help="add a 200 MB case of 2,000 cells x 4,000 samples")
    ap.add_argument("--workdir", default=None, help="where inputs and outputs go (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds before a command is killed")
    ap.add_argument("--template", default=None, help="a result file to use as the template (default: run one)")
    ap.add_argument("--generate", default=None, help=argparse.SUPPRESS)  # internal: write one case's inputs
    ap.add_argument("--cells", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--n-pb", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.generate:
        generate(Path(args.generate), args.cells, args.n, args.n_pb, Path(args.template))
        return 0

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="dlh-robust-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        tpl_path = Path(args.template) if args.template else make_template(workdir)
        tpl = json.loads(tpl_path.read_text())
        tpl["cells"] = [c for c in tpl["cells"] if c.get("status") == "ok"][:1]
        if not tpl["cells"]:
            raise SystemExit("the template has no ok cell")
        bps, pb_bps = bytes_per_sample(tpl)
        print(f"template {tpl['run_id']}: {bps:.1f} bytes per sample in a result file, {pb_bps:.1f} in a "
              f"pytest-benchmark file", flush=True)  # fmt: skip
        cases = [(f"{mb} MB", mb, PLAN.get(mb, 4)) for mb in (int(s) for s in args.sizes.split(",") if s.strip())]
        if args.many_cells:
            cases.append(("200 MB, 2000 cells", 200, 2000))
        rows = []
        for label, mb, cells in cases:
            n = max(1, int(mb * 1e6 / bps / cells))
            n_pb = max(1, int(mb * 1e6 / pb_bps / cells))
            d = workdir / label.replace(" ", "_").replace(",", "")
            d.mkdir(exist_ok=True)
            a, b, pb = d / "a.json", d / "b.json", d / "pytest_benchmark.json"
            t0 = time.perf_counter()
            # generated in a child process: a child's ru_maxrss starts at its parent's high-water mark
            # (Linux records the forked image's peak at exec), so this process must stay small
            subprocess.run([sys.executable, __file__, "--generate", str(d), "--cells", str(cells), "--n", str(n),
                            "--n-pb", str(n_pb), "--template", str(tpl_path)], check=True, cwd=ROOT)  # fmt: skip
            print(f"{label}: {cells} cell(s) x {n:,} samples; A {human(a.stat().st_size)}, B "
                  f"{human(b.stat().st_size)}, pytest-benchmark {human(pb.stat().st_size)} "
                  f"(written in {time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
            load = [sys.executable, "-c", "import sys; from harness.store.results import load_results; "
                    "r = load_results([sys.argv[1]]); assert r.runs, r.errors", str(a)]  # fmt: skip
            jobs = [
                ("load (parse+validate)", load, None),
                ("report (html)", HARNESS + ["report", str(a), "-o", str(d / "report.html")], d / "report.html"),
                ("compare A B", HARNESS + ["compare", str(a), str(b), "--format", "json", "-o", str(d / "cmp.json")],
                 d / "cmp.json"),
                ("compare --within-run", HARNESS + ["compare", str(a), str(b), "--within-run", "--format", "json",
                                                    "-o", str(d / "cmp_within.json")], d / "cmp_within.json"),
                ("export --format csv", HARNESS + ["export", str(a), "--format", "csv", "-o", str(d / "a.csv")],
                 d / "a.csv"),
                ("import pytest-benchmark", HARNESS + ["import", "pytest-benchmark", str(pb), "-o", str(d / "imp")],
                 d / "imp"),
            ]  # fmt: skip
            for name, cmd, out in jobs:
                r = measure(cmd, out, args.timeout, d / f"{name.split()[0]}.log")
                r.update(case=label, cmd=name, input=a.stat().st_size if "import" not in name else pb.stat().st_size)
                rows.append(r)
                ok = r["rc"] in (0, 1) and r["wall"] < TARGET_S and r["rss"] < TARGET_RSS
                print(f"  {name:<24} {r['wall']:7.1f} s  {r['rss'] / 2**20:7.0f} MiB  out {human(r['out']):>9}  "
                      f"exit {r['rc']}" + ("" if ok or mb < 200 else "  (misses the 30 s / 1 GiB target)"), flush=True)
            for p in (a, b, pb):  # the inputs are the bulk of the disk use
                if not args.keep:
                    p.unlink()
        print("\n| input | command | input size | wall (s) | peak RSS (MiB) | output | exit |")
        print("|---|---|--:|--:|--:|--:|--:|")
        for r in rows:
            print(f"| {r['case']} | {r['cmd']} | {human(r['input'])} | {r['wall']:.1f} | {r['rss'] / 2**20:.0f} | "
                  f"{human(r['out'])} | {r['rc']} |")
        return 0
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
