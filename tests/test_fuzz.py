"""Mutation fuzzing of every file dl-harness reads (driver: tests/fuzz_driver.py).

Result files, suite YAML, price lists, compare thresholds configs, pytest-benchmark JSON
and baseline store manifests, mutated from real seeds with a fixed seed, each run
through the commands that read it. The contract for a bad file (README "Exit codes",
DESIGN "Untrusted input"): exit 0, 1 or 2 -- never 3 (internal error) --, no traceback,
no hang, bounded memory.

The cases run in-process in two driver subprocesses (shards) under ``RLIMIT_AS``; the
test only launches them and reads their JSON summaries, so a hang or a memory blow-up
fails the test cleanly instead of taking pytest down.

Environment:
  DLH_FUZZ_CASES   cases per file kind (default 400; e.g. 20000 for a long session)
  DLH_FUZZ_SEED    the seed (default below; printed by the test)
A failure lists, per class (exception type + innermost frame), the command, the
mutation, the stderr tail and a copy of the smallest failing input; reproduce one case
with ``python tests/fuzz_driver.py --seed S --only KIND:I --workdir /tmp/x --summary s.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

DRIVER = Path(__file__).resolve().parent / "fuzz_driver.py"
KINDS = ("result", "suite", "prices", "compare_config", "pytest_benchmark", "baseline_store")
SEED = int(os.environ.get("DLH_FUZZ_SEED", "20261201"))
CASES = int(os.environ.get("DLH_FUZZ_CASES", "400"))
LONG = "DLH_FUZZ_CASES" in os.environ
SHARDS = 2
# the default session stops starting new cases after this long (a loaded machine tries
# fewer cases, the test stays within its time); an explicit DLH_FUZZ_CASES runs them all
BUDGET_S = 0.0 if LONG else 60.0
CASE_CPU_S, CASE_WALL_S = 30.0, 120.0  # per command: CPU time (a hang) and wall time (blocked)


def _merge(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"seed": SEED, "tried": {}, "exit_codes": {}, "classes": {}, "aborted": [],
                           "seed_checks": summaries[0]["seed_checks"] if summaries else [], "slowest": []}
    for s in summaries:
        for k, n in s["tried"].items():
            out["tried"][k] = out["tried"].get(k, 0) + n
        for k, codes in s["exit_codes"].items():
            mine = out["exit_codes"].setdefault(k, {})
            for code, n in codes.items():
                mine[code] = mine.get(code, 0) + n
        for cls, entry in s["classes"].items():
            have = out["classes"].get(cls)
            if have is None:
                out["classes"][cls] = dict(entry)
            else:
                have["count"] += entry["count"]
                if entry.get("input_bytes", 1 << 62) < have.get("input_bytes", 1 << 62):
                    have.update({k: v for k, v in entry.items() if k != "count"})
        if s.get("aborted"):
            out["aborted"].append(s["aborted"])
        out["slowest"] = sorted(out["slowest"] + s["slowest"], key=lambda x: -x["cpu_s"])[:5]
        out.setdefault("slow", []).extend(s.get("slow", []))
    out["cases"] = sum(out["tried"].values())
    return out


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("fuzz")
    repro = base / "repro"
    procs = []
    t0 = time.monotonic()
    for i in range(SHARDS):
        summary = base / f"summary-{i}.json"
        cmd = [sys.executable, str(DRIVER), "--seed", str(SEED), "--cases", str(CASES), "--shard", f"{i}/{SHARDS}",
               "--workdir", str(base / f"work-{i}"), "--summary", str(summary),
               "--repro-dir", str(repro / f"shard-{i}"),
               "--case-cpu-s", str(CASE_CPU_S), "--case-wall-s", str(CASE_WALL_S), "--budget-s", str(BUDGET_S)]
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
        log = open(base / f"driver-{i}.log", "w")
        proc = subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append((proc, summary, log))
    # the budget, one case over its limit, the watchdog's grace, the seed checks and start-up
    limit = (BUDGET_S or 24 * 3600) + CASE_WALL_S + 30 + 90
    summaries, problems = [], []
    for proc, summary, log in procs:
        try:
            rc = proc.wait(timeout=max(1.0, limit - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = "killed after timeout"
        log.close()
        text = Path(log.name).read_text(errors="replace")
        if summary.exists():
            summaries.append(json.loads(summary.read_text()))
        if rc != 0 or not summary.exists():
            problems.append(f"driver {summary.name}: exit {rc}; log tail:\n{text[-3000:]}")
    merged = _merge(summaries)
    merged["problems"] = problems
    merged["wall_s"] = round(time.monotonic() - t0, 1)
    merged["repro_dir"] = str(repro)
    print(f"\nfuzz: seed {SEED}, {merged['cases']} cases {merged['tried']} in {merged['wall_s']} s; "
          f"exit codes {merged['exit_codes']}; {len(merged['classes'])} failure class(es); "
          f"{len(merged.get('slow', []))} slow case(s) (> 5 s CPU)")
    return merged


def _describe(classes: dict[str, Any]) -> str:
    lines = []
    for cls, e in sorted(classes.items(), key=lambda kv: -kv[1]["count"]):
        lines.append(f"- {cls}: {e['count']} case(s), e.g. {e['kind']}#{e.get('case')} (seed {SEED})")
        lines.append(f"    command: harness {' '.join(e.get('argv', []))}")
        lines.append(f"    mutation: {'; '.join(e.get('mutation', []))}")
        if e.get("repro"):
            lines.append(f"    input: {e['repro']} ({e.get('input_bytes')} bytes)")
        for ln in e.get("stderr_tail", [])[-6:]:
            lines.append(f"    | {ln[:300]}")
    return "\n".join(lines)


def test_driver_ran_to_the_end_without_a_hang(fuzz: dict[str, Any]) -> None:
    assert not fuzz["problems"], "\n".join(fuzz["problems"])
    hangs = {c: e for c, e in fuzz["classes"].items() if ": hang " in c or e["kind"] == "driver"}
    assert not hangs, _describe(hangs)
    assert set(fuzz["tried"]) == set(KINDS), fuzz["tried"]
    assert all(n >= 20 for n in fuzz["tried"].values()), f"too few cases ran: {fuzz['tried']} ({fuzz['aborted']})"


def test_unmutated_seeds_are_accepted(fuzz: dict[str, Any]) -> None:
    """Otherwise every mutation would only exercise the first error path."""
    bad = [c for c in fuzz["seed_checks"] if not c["ok"]]
    assert fuzz["seed_checks"] and not bad, json.dumps(bad, indent=1)


@pytest.mark.parametrize("kind", KINDS)
def test_mutated_files_give_a_clean_exit(fuzz: dict[str, Any], kind: str) -> None:
    """Exit 0/1/2, no traceback, no timeout, for every mutated file of this kind."""
    mine = {c: e for c, e in fuzz["classes"].items() if e["kind"] == kind and ": hang " not in c}
    assert not mine, f"{sum(e['count'] for e in mine.values())} failing case(s) of {fuzz['tried'].get(kind)} " \
                     f"({kind}), {len(mine)} class(es):\n" + _describe(mine)
