"""How trustworthy is ``harness compare`` on this machine? (a benchmark, not a test)

Measures, with real worker processes (``harness.launch.runner.run_in_worker``, the same path
``harness run`` uses):

* the **A/A false-alarm rate**: unchanged code, separate processes, compared;
* the **detection rate of an injected 10% slowdown**: the benchmark's own workload
  ``regpower`` (bench/_regpower_workload.py) is a chain of 10 identical Linear blocks and
  gets an 11th block (+10% compute per step, like a real regression) when the worker's
  environment has ``REGPOWER_SLOWDOWN=1``.

Design: G "runs" of unchanged code (A) and G runs of the slowed code (B), each run made
of R worker processes of the cell (R repetitions, i.e. ``harness run`` R times or a
directory of R result files). The processes of A and B are interleaved in time
(A B A B ...) so slow drifts of the machine's load hit both alike. Comparisons:

* A/B: run A_i vs run B_i (G comparisons, disjoint data);
* A/A: run A_i vs run A_(i+1 mod G) (G comparisons over G independent runs; each run
  takes part in two comparisons, so the A/A outcomes are not fully independent).

Each comparison is judged by:
* ``harness compare`` as shipped (default stat ``min``, ``--threshold auto``),
* the same gate on medians (``stat=p50``),
* the within-run test alone (first process of each run: Mann-Whitney + bootstrap,
  threshold 5%), i.e. what a raw-sample test of two single runs says,
* pytest-benchmark's ``--benchmark-compare-fail=mean:5%`` rule on the first process of
  each run (fail when the candidate's mean is > 5% above the baseline's).

Usage: ``python bench/regression_power.py [--quick] [--comparisons G] [--reps R] [--json FILE]``
(full: G=20, R=4, about 160 worker processes, ~8 min on 2 cores; ``--quick``: G=6, R=3).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.analysis.compare import CompareSettings, compare_docs  # noqa: E402

# the benchmark's own workload, discovered through a throw-away dist-info like any plugin
_DIST = "regpower_bench-0.1.dist-info"


def _plugin_site() -> Path:
    site = Path(tempfile.mkdtemp(prefix="regpower-site-"))
    di = site / _DIST
    di.mkdir()
    (di / "METADATA").write_text("Metadata-Version: 2.1\nName: regpower-bench\nVersion: 0.1\n")
    (di / "entry_points.txt").write_text("[dl_harness.workloads]\nregpower = _regpower_workload:RegPowerWorkload\n")
    (di / "RECORD").write_text("")
    return site


def _doc(env_doc: dict[str, Any], cells: list[dict[str, Any]], run_id: str) -> dict[str, Any]:
    d = copy.deepcopy(env_doc)
    d["run_id"] = run_id
    d["cells"] = cells
    return d


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="6 comparisons of 3 processes per run (~1.5 min)")
    ap.add_argument("--comparisons", type=int, default=None, help="comparisons of each kind (default 20)")
    ap.add_argument("--reps", type=int, default=None, help="worker processes per run (default 4)")
    ap.add_argument("--min-time", type=float, default=0.3, help="timed seconds per process")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write all outcomes and every process's samples here")
    ap.add_argument("--replay", default=None, help="re-judge the processes saved by an earlier --json (no measuring)")
    args = ap.parse_args(argv)
    g = args.comparisons or (6 if args.quick else 20)
    r = args.reps or (3 if args.quick else 4)

    site = _plugin_site()
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(site), str(ROOT / "bench"), str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    from harness.launch.runner import new_document, run_in_worker
    from harness.core.suite import Settings, Suite, TaskSpec

    spec = TaskSpec("regpower", "torch", "cpu", "fp32", "inference", 64, "small")
    settings = Settings(size="small", min_time_s=args.min_time, threads=args.threads, warmup_max_s=0.5, min_samples=10)
    env_doc = new_document(Suite(name="regression_power", settings=settings), [spec], tag="regression_power")

    runs: dict[str, list[list[dict[str, Any]]]] = {"A": [[] for _ in range(g)], "B": [[] for _ in range(g)]}
    t0 = time.time()
    total = 2 * g * r
    done = 0
    if args.replay:
        saved = json.loads(Path(args.replay).read_text())
        g, r = saved["comparisons"], saved["reps"]
        total = 2 * g * r
        runs = {side: [[{"status": "ok", "spec": spec.to_dict(), "metrics": {}, "samples_ms": xs, "reason": None,
                         "runtime": {"threads": args.threads}} for xs in group] for group in saved["samples_ms"][side]]
                for side in ("A", "B")}  # fmt: skip
    for i in range(g if not args.replay else 0):
        for _ in range(r):
            for side in ("A", "B"):  # interleaved: drift hits both sides alike
                os.environ["REGPOWER_SLOWDOWN"] = "1" if side == "B" else "0"
                cell = run_in_worker(spec, settings)
                if cell.get("status") != "ok":
                    print(f"worker {side}{i} failed: {cell.get('reason')}", file=sys.stderr)
                    return 2
                runs[side][i].append(cell)
                done += 1
        el = time.time() - t0
        print(f"\r{done}/{total} processes, {el:.0f} s elapsed, ~{el / done * (total - done):.0f} s left", end="", file=sys.stderr)
    os.environ.pop("REGPOWER_SLOWDOWN", None)
    print(file=sys.stderr)
    wall = time.time() - t0

    def run_docs(side: str, i: int, first_only: bool = False) -> list[dict[str, Any]]:
        cells = runs[side][i][:1] if first_only else runs[side][i]
        return [_doc(env_doc, [c], f"{side}{i}-rep{k}") for k, c in enumerate(cells)]

    gates = {
        "harness compare (stat=min, threshold auto)": CompareSettings(stat="min", threshold=None),
        "same gate on medians (stat=p50, threshold auto)": CompareSettings(stat="p50", threshold=None),
    }
    within = CompareSettings(stat="p50", threshold=0.05, within_run=True)  # 1 process each: opt in
    outcomes: dict[str, dict[str, list[bool]]] = {}

    def record(name: str, kind: str, flagged: bool) -> None:
        outcomes.setdefault(name, {"AA": [], "AB": []})[kind].append(flagged)

    detail = []
    for kind, pairs in (("AA", [("A", i, "A", (i + 1) % g) for i in range(g)]), ("AB", [("A", i, "B", i) for i in range(g)])):
        for sb, ib, sc, ic in pairs:
            row: dict[str, Any] = {"kind": kind, "baseline": f"{sb}{ib}", "candidate": f"{sc}{ic}"}
            for name, st in gates.items():
                res = compare_docs(run_docs(sb, ib), run_docs(sc, ic), st)
                cc = res.cells[0]
                record(name, kind, bool(res.regressions))
                row[name] = {"verdict": cc.verdict, "change": cc.change, "p_adj": cc.p_adjusted,
                             "threshold": cc.threshold, "mdc": cc.mdc, "noise": cc.run_noise}  # fmt: skip
            res = compare_docs(run_docs(sb, ib, True), run_docs(sc, ic, True), within)
            record("within-run test only (1 process each, Mann-Whitney, 5%)", kind, bool(res.regressions))
            b0, c0 = runs[sb][ib][0]["samples_ms"], runs[sc][ic][0]["samples_ms"]
            mb, mc = sum(b0) / len(b0), sum(c0) / len(c0)
            record("pytest-benchmark mean:5% (1 process each)", kind, mc > 1.05 * mb)
            detail.append(row)

    print(f"\nregression power on this machine: {g} A/A and {g} A/B (+10% work) comparisons, "
          f"{r} worker processes per run, {args.threads} thread(s), min_time {args.min_time} s; "
          f"{total} processes in {wall:.0f} s")  # fmt: skip
    print(f"{'rule':58s} {'A/A false alarms':>17s} {'10% slowdowns caught':>21s}")
    for name, o in outcomes.items():
        print(f"{name:58s} {sum(o['AA']):>8d} / {len(o['AA']):<8d} {sum(o['AB']):>10d} / {len(o['AB']):<10d}")
    main_gate = next(iter(gates))
    mdcs = [row[main_gate]["mdc"] for row in detail if row[main_gate]["mdc"] is not None]
    noises = [row[main_gate]["noise"] for row in detail if row[main_gate]["noise"] is not None]
    if mdcs:
        mdcs.sort()
        noises.sort()
        print(f"\n{main_gate}: median minimum detectable change {100 * mdcs[len(mdcs) // 2]:.1f}% "
              f"(80% power), median run-to-run noise (sd of log min) {100 * noises[len(noises) // 2]:.1f}%")  # fmt: skip
    targets_ok = sum(outcomes[main_gate]["AA"]) <= g // 20 and sum(outcomes[main_gate]["AB"]) >= g - g // 20
    print(f"targets (<= 1 false alarm per 20 A/A, >= 19 of 20 caught): {'met' if targets_ok else 'NOT met'}")
    if args.json:
        mins = {side: [[min(c["samples_ms"]) for c in group] for group in runs[side]] for side in runs}
        samples = {side: [[c["samples_ms"] for c in group] for group in runs[side]] for side in runs}
        Path(args.json).write_text(json.dumps({"comparisons": g, "reps": r, "wall_s": wall, "outcomes": outcomes,
                                               "process_min_ms": mins, "detail": detail, "samples_ms": samples},
                                              default=str))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
