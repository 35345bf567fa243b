"""Is the regression gate calibrated? A Monte-Carlo of ``harness compare``'s real code.

The gate's own code decides every verdict: :func:`harness.analysis.compare.compare_observations`,
which :func:`harness.analysis.compare.compare_docs` (what the CLI calls after loading the files)
hands the parsed observations to: the same trimming, moderation, Holm, thresholds,
verdicts and printed smallest detectable change. Parsing documents costs more than the
statistics, so the replicates give the observations directly; the first replicate of
every case also builds the result documents (a side of 1-4 processes is one file whose
cell holds ``repeats``, as ``harness run --repeats N`` writes it; a longer side is a
history of single-process files), runs :func:`compare_docs` on them and checks that
every verdict and figure is identical (``--via-docs`` does that for every replicate).
Each cell's worker process gets a level drawn from a run-to-run noise model; its raw
samples are that level and a few values up to 0.3% above it (stat ``min`` = the level).

Per case (noise model x processes per side x number of cells) and replicate:

* **false alarm**: both sides drawn from the same distribution; the comparison exits 1
  (any cell a regression). Target: at most alpha (family-wise, as Holm promises), within
  Monte-Carlo error.
* **detection**: the same data with cell 0 of the candidate made worse by exactly the
  smallest detectable change that the null comparison *printed* for that cell
  (``min_detectable_change``; the change does not alter the noise estimate, Holm's m or
  the auto threshold, so it is the figure the user saw). Target: at least 80%.

1 v 1 has no run-to-run degree of freedom: the gate answers "inconclusive".

Usage: ``python bench/gate_calibration.py [--reps-scale X] [--seed S] [--markdown]``
(``--quick`` for a smoke run). Prints one row per case with the Monte-Carlo standard
errors. The table in docs/compare.md was made with the defaults.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.analysis.compare import (  # noqa: E402
    POWER,
    Comparison,
    CompareSettings,
    Observation,
    compare_docs,
    compare_observations,
)

SPLITS = ((1, 1), (1, 3), (3, 1), (3, 3), (4, 4), (8, 3), (20, 1))
CELLS = (1, 50, 180)
REPS = {1: 2000, 50: 200, 180: 120}  # replicates per case (x --reps-scale)
SIGMA = 0.05  # run-to-run sd (relative) of the normal and log-normal models
OFFSETS = (0.0, 0.001, 0.003, 0.002)  # a process's raw samples: its level and these fractions above it


def _normal(rng: np.random.Generator, shape: tuple[int, int], sd: np.ndarray) -> np.ndarray:
    return np.maximum(1.0 + sd * rng.standard_normal(shape), 0.05)


def _lognormal(rng: np.random.Generator, shape: tuple[int, int], sd: np.ndarray) -> np.ndarray:
    return np.exp(sd * rng.standard_normal(shape))


def _contaminated(rng: np.random.Generator, shape: tuple[int, int], sd: np.ndarray) -> np.ndarray:
    """Log-normal 3% noise; 10% of processes slowed by a further 10-50% (a noisy neighbour)."""
    base = np.exp(0.03 * rng.standard_normal(shape))
    hit = rng.random(shape) < 0.10
    return base * np.where(hit, 1.0 + rng.uniform(0.10, 0.50, shape), 1.0)


# name -> (run-to-run multiplier of each process, sd of each cell for this replicate)
NOISE: dict[str, tuple[Callable[..., np.ndarray], Callable[[np.random.Generator, int], np.ndarray]]] = {
    "normal 5%": (_normal, lambda rng, m: np.full(m, SIGMA)),
    "log-normal 5%": (_lognormal, lambda rng, m: np.full(m, SIGMA)),
    "contaminated": (_contaminated, lambda rng, m: np.full(m, 0.03)),
    # cells differ: each cell's sd log-uniform in 1-15% (tests the moderation towards other cells)
    "mixed 1-15%": (_lognormal, lambda rng, m: np.exp(rng.uniform(math.log(0.01), math.log(0.15), m))),
}


def _spec(k: int) -> dict[str, Any]:
    return {"workload": f"w{k:03d}", "backend": "torch", "device": "cpu", "variant": "fp32", "mode": "inference",
            "batch_size": 8, "size": "tiny"}  # fmt: skip


def _samples(level: float) -> list[float]:
    return [float(level * (1.0 + o)) for o in OFFSETS]


def side_obs(levels: np.ndarray, tag: str) -> dict[str, list[Observation]]:
    """Observations for one side (what harness.analysis.compare.observations gives for side_docs)."""
    n, m = levels.shape
    keys = [f"w{k:03d}/torch/cpu/fp32/inference/bs8/tiny" for k in range(m)]
    return {keys[k]: [Observation(run_id=f"{tag}-{i}", value=float(levels[i, k]), samples=None, status="ok",
                                  workload=f"w{k:03d}", threads=1, contended=False) for i in range(n)]
            for k in range(m)}  # fmt: skip


def side_docs(levels: np.ndarray, tag: str) -> list[dict[str, Any]]:
    """Result documents for one side: ``levels`` is (processes, cells) in ms."""
    n, m = levels.shape
    env = {"fingerprint": "calibration", "frameworks": {"torch": "x"}}
    if n <= 4:  # one file, each cell measured in n processes (harness run --repeats n)
        cells = []
        for k in range(m):
            reps = [{"index": i, "status": "ok", "samples_ms": _samples(levels[i, k]), "metrics": {},
                     "timing": {"contention": {"detected": False, "evidence": {}}}, "reason": None}
                    for i in range(n)]  # fmt: skip
            cell = {"spec": _spec(k), "status": "ok", "reason": None, "metrics": {}, "runtime": {"threads": 1},
                    "samples_ms": [x for r in reps for x in r["samples_ms"]],
                    "timing": {"contention": {"detected": False, "evidence": {}}}}  # fmt: skip
            if n > 1:
                cell["repeats"] = reps
            cells.append(cell)
        return [{"run_id": f"{tag}-0", "environment": env, "cells": cells}]
    return [{"run_id": f"{tag}-{i}", "environment": env,
             "cells": [{"spec": _spec(k), "status": "ok", "reason": None, "metrics": {}, "runtime": {"threads": 1},
                        "samples_ms": _samples(levels[i, k]),
                        "timing": {"contention": {"detected": False, "evidence": {}}}} for k in range(m)]}
            for i in range(n)]  # fmt: skip


def _same(a: Comparison, b: Comparison) -> None:
    """The documents' path and the observations' path gave the same answer."""
    fa = {c.key: (c.verdict, c.verdict_text, c.p_adjusted, c.min_detectable_change, c.threshold) for c in a.cells}
    fb = {c.key: (c.verdict, c.verdict_text, c.p_adjusted, c.min_detectable_change, c.threshold) for c in b.cells}
    if fa != fb:
        raise SystemExit("compare_docs and compare_observations disagree: the calibration would not be of the gate")


def run_case(noise: str, nb: int, nc: int, m: int, reps: int, seed: int, settings: CompareSettings,
             via_docs: bool = False) -> dict[str, Any]:
    rng = np.random.default_rng([seed, zlib.crc32(f"{noise}|{nb}|{nc}|{m}".encode())])
    draw, cell_sd = NOISE[noise]
    fa = det = inconclusive = tried = 0
    mdcs: list[float] = []

    def gate(lb: np.ndarray, lc: np.ndarray, docs: bool) -> Comparison:
        res = compare_observations(side_obs(lb, "b"), side_obs(lc, "c"), settings)
        if docs:
            _same(compare_docs(side_docs(lb, "b"), side_docs(lc, "c"), settings), res)
        return res

    for rep in range(reps):
        docs = via_docs or rep == 0
        mu = np.exp(rng.uniform(0.0, 3.0, m))  # cell levels 1-20 ms
        sd = cell_sd(rng, m)
        lb = mu * draw(rng, (nb, m), sd)
        lc = mu * draw(rng, (nc, m), sd)
        null = gate(lb, lc, docs)
        fa += bool(null.regressions)
        c0 = null.cells[0]
        if c0.verdict_text.startswith("inconclusive: run-to-run"):
            inconclusive += 1
            continue
        mdc = c0.min_detectable_change
        if mdc is None:
            continue
        mdcs.append(mdc)
        lc2 = lc.copy()
        lc2[:, 0] *= 1.0 + mdc
        tried += 1
        det += gate(lb, lc2, docs).cells[0].verdict == "regression"
    return {"noise": noise, "split": f"{nb}v{nc}", "cells": m, "reps": reps, "fa": fa / reps,
            "fa_se": math.sqrt(max(fa / reps * (1 - fa / reps), 1e-12) / reps), "inconclusive": inconclusive / reps,
            "det": det / tried if tried else None,
            "det_se": math.sqrt(det / tried * (1 - det / tried) / tried) if tried else None,
            "mdc": float(np.median(mdcs)) if mdcs else None}  # fmt: skip


def verdict(row: dict[str, Any], alpha: float) -> str:
    if row["inconclusive"] >= 0.999:
        return "inconclusive (by design)"
    ok_fa = row["fa"] <= alpha + 2 * row["fa_se"]
    ok_det = row["det"] is not None and row["det"] >= POWER - 2 * (row["det_se"] or 0)
    return "ok" if ok_fa and ok_det else ", ".join(
        (["FALSE ALARMS > alpha"] if not ok_fa else []) + (["DETECTION < 80%"] if not ok_det else []))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps-scale", type=float, default=1.0, help="multiply the replicate counts")
    ap.add_argument("--quick", action="store_true", help="smoke run (5%% of the replicates)")
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--noise", choices=list(NOISE), action="append", help="only these noise models")
    ap.add_argument("--cells", type=int, action="append", help="only these cell counts")
    ap.add_argument("--markdown", action="store_true", help="also print the table in Markdown (as in docs/compare.md)")
    ap.add_argument("--via-docs", action="store_true",
                    help="every replicate also through compare_docs on result documents (slow)")
    args = ap.parse_args(argv)
    scale = 0.05 if args.quick else args.reps_scale
    settings = CompareSettings()  # the defaults: latency_ms, stat min, threshold auto, alpha 0.05
    alpha = settings.alpha
    t0 = time.time()
    rows = []
    for noise in args.noise or list(NOISE):
        for m in args.cells or CELLS:
            for nb, nc in SPLITS:
                reps = 20 if (nb, nc) == (1, 1) else max(10, int(REPS.get(m, 150) * scale))
                row = run_case(noise, nb, nc, m, reps, args.seed, settings, args.via_docs)
                row["status"] = verdict(row, alpha)
                rows.append(row)
                print(f"{noise:14s} {row['split']:>5s} {m:4d} cells: false alarms {100 * row['fa']:5.1f}% "
                      f"± {100 * row['fa_se']:.1f}, detection "
                      + (f"{100 * row['det']:5.1f}% ± {100 * row['det_se']:.1f}" if row["det"] is not None else "  n/a")
                      + (f", median mdc {100 * row['mdc']:.1f}%" if row["mdc"] is not None else "")
                      + f"  [{row['status']}]  ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)  # fmt: skip
    print(f"\ngate calibration: alpha {alpha}, power target {POWER:.0%}, seed {args.seed}, "
          f"replicates x{scale:g}; {time.time() - t0:.0f} s")
    head = ["noise", "runs b v c", "cells", "reps", "false alarms (± MC se)", "detected at printed mdc (± MC se)",
            "median printed mdc", "result"]  # fmt: skip

    def cells_of(r: dict[str, Any]) -> list[str]:
        if r["inconclusive"] >= 0.999:
            return [r["noise"], r["split"], str(r["cells"]), str(r["reps"]), f"{100 * r['fa']:.1f}%",
                    "n/a: every cell inconclusive", "n/a", r["status"]]  # fmt: skip
        return [r["noise"], r["split"], str(r["cells"]), str(r["reps"]), f"{100 * r['fa']:.1f}% ± {100 * r['fa_se']:.1f}",
                f"{100 * r['det']:.1f}% ± {100 * r['det_se']:.1f}" if r["det"] is not None else "n/a",
                f"{100 * r['mdc']:.1f}%" if r["mdc"] is not None else "n/a", r["status"]]  # fmt: skip

    table = [cells_of(r) for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *table)]
    for t in [head, *table]:
        print("  ".join(x.ljust(w) for x, w in zip(t, widths)))
    if args.markdown:  # one row per noise model and split, one column per cell count
        counts = list(dict.fromkeys(r["cells"] for r in rows))
        print("\n| noise | processes b v c | " + " | ".join(f"{m} cell{'s' if m > 1 else ''}: false alarms / "
              f"detected / median mdc" for m in counts) + " |")  # fmt: skip
        print("|---|---|" + "---|" * len(counts))
        for (noise, split) in dict.fromkeys((r["noise"], r["split"]) for r in rows):
            out = []
            for m in counts:
                r = next((x for x in rows if (x["noise"], x["split"], x["cells"]) == (noise, split, m)), None)
                if r is None:
                    out.append("")
                elif r["inconclusive"] >= 0.999:
                    out.append(f"inconclusive ({r['reps']}/{r['reps']}), 0 false alarms")
                else:
                    flag = "" if r["status"] == "ok" else " **(not met)**"
                    fa = f"0 of {r['reps']}" if r["fa"] == 0 else f"{100 * r['fa']:.1f}% ± {100 * r['fa_se']:.1f}"
                    out.append(f"{fa} / "
                               + (f"{100 * r['det']:.0f}% ± {100 * r['det_se']:.0f}" if r["det"] is not None else "n/a")
                               + (f" / {100 * r['mdc']:.0f}%" if r["mdc"] is not None else "") + flag)  # fmt: skip
            print(f"| {noise} | {split} | " + " | ".join(out) + " |")
    bad = [r for r in rows if r["status"] not in ("ok", "inconclusive (by design)")]
    print(f"{len(rows) - len(bad)} of {len(rows)} cases meet the targets" + (":" if bad else ""))
    for r in bad:
        print(f"  not met: {r['noise']} {r['split']} {r['cells']} cells: {r['status']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
