"""How fast is the result store at fleet scale? (a benchmark, not a test)

Generates N result files (default 1,000) of the shape the runner really writes: a real
result file (``--template``; default: the newest readable file under ``results/``, or a
fresh ``harness run --suite smoke`` when there is none) is cloned with varied run ids,
creation times (spread over 90 days), hosts (a fleet of 20), tags, git commits and
metrics; every cell keeps all of the template's fields (metrics, energy with its
``unavailable`` reason, timing, runtime, timeseries) and gets ``--samples`` raw samples
(default 300) whose statistics are recomputed from them. Each template cell is repeated
at ``--batches`` batch sizes (default 2, so 12 cells per file from the smoke suite).

Then times, in this process:

* ``load``: :func:`harness.store.results.load_results` over the directory (read, JSON parse,
  version check, schema validation of every file);
* ``query``: :func:`harness.store.results.query` with typical filters (one workload, one host,
  the last 30 days, a tag), each from scratch (load included);
* ``export``: ``harness export --format csv`` of the whole directory in a fresh process.

Target: load + filter of 1,000 files in under 5 s. Prints one line per figure and
``PASS``/``FAIL`` against the target (exit 1 on FAIL).

Usage: ``python bench/store_speed.py [--files 1000] [--samples 300] [--batches 2]
[--template FILE] [--keep DIR] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import copy
import math
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_S = 5.0


def find_template() -> Path:
    """A real result file: the newest valid one under results/, else a fresh smoke run."""
    from harness.store.results import ResultFileError, load_result

    for p in sorted((ROOT / "results").glob("*.json"), reverse=True):
        try:
            doc = load_result(p)
        except ResultFileError:
            continue
        if any(c.get("status") == "ok" for c in doc["cells"]):
            return p
    out = Path(tempfile.mkdtemp(prefix="store-speed-template-"))
    print(f"no result under results/: running the smoke suite into {out} ...", flush=True)
    subprocess.run([sys.executable, "-m", "harness", "run", "--suite", "smoke", "--out", str(out), "--no-progress"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    return sorted(out.glob("*.json"))[-1]


def _latency_stats(x: np.ndarray) -> dict[str, Any]:
    p25, p50, p75, p90, p99 = np.percentile(x, [25, 50, 75, 90, 99])
    half = 1.2533 * x.std() / math.sqrt(x.size) * 1.96  # normal-theory CI of the median (synthetic data)
    mean = float(x.mean())
    std = float(x.std(ddof=1))
    return {"n": int(x.size), "p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": mean, "std": std,
            "min": float(x.min()), "max": float(x.max()), "iqr": float(p75 - p25), "cv": std / mean,
            "ci95_low": float(p50 - half), "ci95_high": float(p50 + half),
            "iqr_over_median": float((p75 - p25) / p50)}  # fmt: skip


def make_run(template: dict[str, Any], i: int, n_files: int, n_samples: int, n_batches: int,
             rng: np.random.Generator, start: datetime) -> dict[str, Any]:  # fmt: skip
    """Run ``i`` of the synthetic fleet: the template with varied identity and metrics."""
    doc = copy.deepcopy(template)
    doc.pop("_source", None)
    host = f"node-{i % 20:02d}"
    created = start + timedelta(seconds=int(90 * 86400 * i / n_files))
    stamp = created.strftime("%Y%m%dT%H%M%SZ")
    doc["run_id"] = f"{stamp}-{host}-{i:06x}"
    doc["created"] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    doc["finished"] = (created + timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc["tag"] = "nightly" if i % 4 else f"pr-{1000 + i}"
    doc["harness"] = {**doc.get("harness", {}), "git_commit": f"{(i // 7) * 2654435761 % 16**40:040x}"}
    doc["environment"] = {**doc["environment"], "host": host, "fingerprint": f"fp-{i % 20:02d}"}
    run_level = math.exp(0.03 * rng.standard_normal())
    cells = []
    for b in range(n_batches):
        for tc in template["cells"]:
            cell = copy.deepcopy(tc)
            spec = dict(cell["spec"])
            spec["batch_size"] = int(spec["batch_size"]) * (2**b)
            cell["spec"] = spec
            cell["id"] = "/".join(str(spec[f]) for f in ("workload", "backend", "device", "variant", "mode")) + (
                f"/bs{spec['batch_size']}/{spec['size']}"
            )
            if cell.get("status") == "ok" and cell.get("samples_ms"):
                base = np.asarray(cell["samples_ms"], dtype=float)
                x = rng.choice(base, size=n_samples) * run_level * (2**b) * (1 + 0.02 * rng.standard_normal(n_samples))
                x = np.abs(x)
                cell["samples_ms"] = [round(float(v), 6) for v in x]
                m = cell["metrics"]
                m["latency_ms"] = _latency_stats(x)
                m["throughput_per_s"] = spec["batch_size"] / m["latency_ms"]["p50"] * 1000.0
                m["throughput_ci95_per_s"] = [spec["batch_size"] / m["latency_ms"]["ci95_high"] * 1000.0,
                                              spec["batch_size"] / m["latency_ms"]["ci95_low"] * 1000.0]  # fmt: skip
                if isinstance(m.get("peak_host_mem_bytes"), int):
                    m["peak_host_mem_bytes"] += int(rng.integers(0, 8 << 20))
                if cell.get("timing"):
                    cell["timing"] = {**cell["timing"], "samples": n_samples}
            cells.append(cell)
    doc["cells"] = cells
    return doc


def generate(out: Path, template_path: Path, n_files: int, n_samples: int, n_batches: int) -> int:
    """Write the synthetic fleet into ``out``; returns the total bytes written."""
    from harness.store.results import dumps, load_result

    template = load_result(template_path)
    rng = np.random.default_rng(0)
    start = datetime(2026, 8, 1, tzinfo=timezone.utc)
    total = 0
    for i in range(n_files):
        text = dumps(make_run(template, i, n_files, n_samples, n_batches, rng, start))
        (out / f"run-{i:05d}.json").write_text(text)
        total += len(text)
    return total


def best_of(repeat: int, fn: Any) -> tuple[float, Any]:
    best, value = float("inf"), None
    for _ in range(repeat):
        value = None  # free the previous result outside the timed region
        t0 = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t0)
    return best, value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=300, help="raw samples per ok cell")
    ap.add_argument("--batches", type=int, default=2, help="batch sizes per template cell")
    ap.add_argument("--template", default=None, help="a real result file to clone (default: newest in results/)")
    ap.add_argument("--keep", default=None, help="write the files here and keep them")
    ap.add_argument("--repeat", type=int, default=3, help="timings are the best of this many")
    args = ap.parse_args(argv)

    from harness.store.results import ResultFilter, load_results, query

    template = Path(args.template) if args.template else find_template()
    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="store-speed-"))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    nbytes = generate(out, template, args.files, args.samples, args.batches)
    print(f"generated {args.files} files ({nbytes / 1e6:.1f} MB) from {template.name} in "
          f"{time.perf_counter() - t0:.1f} s: {out}")  # fmt: skip

    t_load, loaded = best_of(args.repeat, lambda: load_results([out]))
    n_cells = sum(len(d["cells"]) for d in loaded.runs)
    print(f"load      {t_load:6.2f} s  {len(loaded.runs)} runs, {n_cells} cells, {len(loaded.errors)} errors")
    last = max(d["created"] for d in loaded.runs)
    del loaded
    since = (datetime.fromisoformat(last) - timedelta(days=30)).strftime("%Y-%m-%d")
    filters = {
        "workload=mlp": ResultFilter(workload=("mlp",)),
        "host=node-03": ResultFilter(host=("node-03",)),
        f"since={since}": ResultFilter(since=since),
        "tag=nightly": ResultFilter(tag=("nightly",)),
        "all four": ResultFilter(workload=("mlp",), host=("node-03",), since=since, tag=("nightly",)),
    }
    worst = t_load
    for label, flt in filters.items():
        t, res = best_of(args.repeat, lambda flt=flt: query([out], flt))
        worst = max(worst, t)
        cells = sum(len(d["cells"]) for d in res.runs)
        print(f"query     {t:6.2f} s  {label}: {len(res.runs)} runs, {cells} cells")
    t0 = time.perf_counter()
    csv_path = out.parent / f"{out.name}.csv"
    proc = subprocess.run([sys.executable, "-m", "harness", "export", "--format", "csv", "-o", str(csv_path), str(out)],
                          cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    t_export = time.perf_counter() - t0
    if proc.returncode == 0:
        rows = sum(1 for _ in csv_path.open()) - 1
        print(f"export    {t_export:6.2f} s  harness export --format csv (fresh process): {rows} rows")
        csv_path.unlink()
    else:
        print(f"export    failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
    ok = worst < TARGET_S
    print(f"{'PASS' if ok else 'FAIL'}: slowest load/query {worst:.2f} s for {args.files} files (target < {TARGET_S:.0f} s)")
    if not args.keep:
        import shutil

        shutil.rmtree(out, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
