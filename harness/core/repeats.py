"""Repeated measurement of a cell in separate worker processes (``run --repeats N``).

Why: within one process the samples of a cell are tight, but separate processes of
the same unchanged code differ by -20% to +22% here (the step time is bimodal across
processes: allocator layout, thread placement, frequency). A gate that compares two
single processes mistakes that for a regression. So each cell can be measured in N
processes, and the runner interleaves them in a randomised order over the whole suite
(randomised multiple interleaved trials: round r runs every cell once, in its own
shuffled order), so slow drifts of the machine spread over all cells instead of
landing on one.

The cell record then carries one entry per process under ``repeats``; the cell's own
``samples_ms`` are the pooled samples of its ok processes and its headline metrics are
recomputed from them (see :func:`merge`).
"""

from __future__ import annotations

import copy
import random
from typing import Any, Sequence

from harness.core.stats import summarize

# per-process fields kept in each entry of cell["repeats"]
REPEAT_FIELDS = ("status", "reason", "started", "duration_s", "samples_ms", "timing", "metrics", "runtime")


def schedule(cells: Sequence[Any], repeats: int, seed: int = 0) -> list[tuple[int, int]]:
    """The order to run ``(cell index, repeat index)`` pairs: ``repeats`` rounds, each
    running every cell once in its own shuffled order (round 0 keeps the suite order
    when ``repeats`` is 1, so a plain run is unchanged). Seeded: the same suite and
    seed give the same order (recorded in the result)."""
    out: list[tuple[int, int]] = []
    idx = list(range(len(cells)))
    if repeats <= 1:
        return [(i, 0) for i in idx]
    rng = random.Random(f"dl-harness-rmit-{seed}")
    for r in range(repeats):
        order = idx[:]
        rng.shuffle(order)
        out.extend((i, r) for i in order)
    return out


def _entry(index: int, record: dict[str, Any]) -> dict[str, Any]:
    e: dict[str, Any] = {"index": index}
    for k in REPEAT_FIELDS:
        if k in record:
            e[k] = record[k]
    if record.get("error"):
        err = record["error"]
        e["error"] = {k: err.get(k) for k in ("type", "message", "returncode") if k in err}
    return e


def merge(records: Sequence[dict[str, Any]], planned: int, global_batch: int) -> dict[str, Any]:
    """One cell record from the records of its processes (in the order they ran).

    * ``repeats``: one entry per process (its own samples, timing incl. contention,
      metrics and runtime).
    * status: ``failed`` if any process failed (reason names which; the ok processes'
      samples stay in ``repeats``), ``skipped`` if the first was skipped, else ``ok``.
    * ``samples_ms``: the ok processes' samples pooled; ``latency_ms`` and the noise
      flag from the pooled samples; ``throughput_per_s`` = all samples processed in
      the timed loops / the sum of the loops' wall times (sustained, over processes);
      ``throughput_p50_per_s`` and ``achieved_flops_per_s`` from the pooled median.
      Every other metric (energy, memory, FLOPs, quality) is the first ok process's;
      each process's own values are in its ``repeats`` entry.
    * ``timing.contention.detected``: true if any process was contended.
    """
    if len(records) == 1 and planned <= 1:
        return records[0]
    ok = [r for r in records if r.get("status") == "ok"]
    failed = [(i, r) for i, r in enumerate(records) if r.get("status") == "failed"]
    base = copy.deepcopy(ok[0] if ok else records[0])
    base["repeats"] = [_entry(i, r) for i, r in enumerate(records)]
    base["repeats_planned"] = planned
    base["duration_s"] = sum(float(r.get("duration_s") or 0.0) for r in records)
    if failed:
        i, r = failed[0]
        base["status"] = "failed"
        base["reason"] = (f"process {i + 1} of {len(records)} failed: {r.get('reason')}" if len(records) > 1
                          else r.get("reason"))
        base["error"] = r.get("error")
        return base
    if not ok:
        return base
    pooled = [x for r in ok for x in (r.get("samples_ms") or [])]
    if not pooled:
        return base
    lat = summarize(pooled)
    noisy = lat.pop("noisy")
    m = base.setdefault("metrics", {})
    m["latency_ms"] = lat
    m["noisy"] = noisy
    steps = 0.0
    wall = 0.0
    for r in ok:
        t = r.get("timing") or {}
        n, ips, w = t.get("samples"), t.get("iters_per_sample"), t.get("loop_wall_s")
        if isinstance(n, (int, float)) and isinstance(ips, (int, float)) and isinstance(w, (int, float)) and w > 0:
            steps += n * ips
            wall += w
    if wall > 0:
        m["throughput_per_s"] = steps * global_batch / wall
    m["throughput_p50_per_s"] = global_batch * 1e3 / lat["p50"]
    m["throughput_ci95_per_s"] = [global_batch * 1e3 / lat["ci95_high"], global_batch * 1e3 / lat["ci95_low"]]
    for key, src in (("achieved_flops_per_s", "flops"), ("achieved_flops_per_s_analytic", "flops_analytic")):
        if isinstance(m.get(key), (int, float)) and isinstance(m.get(src), (int, float)):
            m[key] = m[src] / (lat["p50"] / 1e3)
    base["repeats_summary"] = {
        "processes": len(ok),
        "p50_ms_per_process": [float((r.get("metrics") or {}).get("latency_ms", {}).get("p50", float("nan")))
                               for r in ok],
        "scope": "latency_ms, throughput_* and achieved FLOP/s pool every process; other metrics are the "
                 "first process's (each process's own are under repeats[])",
    }
    base["samples_ms"] = pooled
    timing = base.setdefault("timing", {})
    # the cell's timing describes all its processes, so that throughput_per_s is
    # recomputable from it: steps_timed x global batch / loop_wall_s
    ips = {(r.get("timing") or {}).get("iters_per_sample") for r in ok}
    timing["samples"] = len(pooled)
    timing["iters_per_sample"] = ips.pop() if len(ips) == 1 else None
    timing["steps_timed"] = int(steps)
    timing["loop_wall_s"] = wall if wall > 0 else None
    timing["scope"] = f"all {len(ok)} ok processes (each process's own timing is under repeats[])"
    contended = [i for i, r in enumerate(records)
                 if ((r.get("timing") or {}).get("contention") or {}).get("detected")]
    first = (timing.get("contention") or {})
    timing["contention"] = {
        **{k: v for k, v in first.items() if k not in ("detected",)},
        "detected": bool(contended),
        "processes_contended": [i + 1 for i in contended],
        "scope": "any of the cell's processes (each one's evidence is under repeats[].timing.contention)",
    }
    if contended:
        timing["contention"]["reasons"] = [
            f"process {i + 1}: " + "; ".join(((records[i].get("timing") or {}).get("contention") or {}).get(
                "reasons") or ["contended"]) for i in contended]
    return base
