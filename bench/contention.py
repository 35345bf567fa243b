"""Contention mitigation, measured: torch CPU cells with and without a CPU hog, under
thread policies, interleaved.

    .venv/bin/python bench/contention.py --reps 3 --out /tmp/contention.json
    .venv/bin/python bench/contention.py --reps 3 --hogs 2     # every core busy

For each repetition, every (policy, hog) configuration runs once, in a shuffled order
(randomised interleaved trials, so a drift of the shared machine hits every
configuration alike). A configuration is one fresh worker process with the policy's
environment set *before* torch is imported (OpenMP reads ``OMP_WAIT_POLICY`` once, at
start-up); it builds and times every cell (``--workloads`` x ``--sizes``, torch CPU
inference, :func:`harness.core.timing.measure` with ``--min-time``), each with a
:class:`harness.core.contention.ContentionProbe`, so the table also shows whether the probe
flagged the hog runs and stayed quiet in the others. The hog is ``--hogs`` busy-loop
processes (unpinned: one core's worth of load each wherever the scheduler puts it;
``--hog-pin N`` pins them to CPU N), or with ``--hog-kind torch`` torch processes
multiplying 256x256 matrices with default threads (another user's torch job, whose
OpenMP team spins like the cell's); they exit by themselves if this script dies.

A shared machine: before each configuration the script waits (up to ``--quiet-wait``
seconds) for the CPUs to be idle and records the background it saw; a trial is
*clean* when that background was under 0.3 cores and the probe saw nobody else (no
hog: not detected; hog: other processes' CPU at most what the hogs can use + 0.3). A
configuration with a disturbed cell is rerun (``--retries``); the table uses the clean
trials.

Output: per policy and cell, the median over repetitions of the cell's p50 without
and with the hog, the ratio hog / no-hog, and the no-hog cost of the policy against
the default (its no-hog p50 / default's no-hog p50); the load average before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def policies(ncpu: int) -> dict[str, dict[str, Any]]:
    """name -> {"env": ..., "threads": int | None, "pin": bool} (threads None: torch's
    default, one per physical core)."""
    fewer = max(1, ncpu - 1)
    return {
        "default": {"env": {}, "threads": None},
        f"threads={fewer}": {"env": {}, "threads": fewer},
        "passive": {"env": {"OMP_WAIT_POLICY": "PASSIVE"}, "threads": None},
        "spin=10k": {"env": {"GOMP_SPINCOUNT": "10000"}, "threads": None},
        "pinned": {"env": {"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"}, "threads": None},
    }


# -- child: one configuration, every cell -----------------------------------------
def child(args: argparse.Namespace) -> int:
    import warnings

    warnings.filterwarnings("ignore")
    from harness.core.contention import ContentionProbe
    from harness.core.suite import Settings, TaskSpec
    from harness.core.timing import TimingConfig, measure
    from harness.launch.worker import resolve_cell

    out = []
    threads = args.threads if args.threads > 0 else None
    for wl_name in args.workloads.split(","):
        for size in args.sizes.split(","):
            settings = Settings(size=size, min_time_s=args.min_time, threads=threads)
            from harness.core import registry

            wl = registry.load("workload", wl_name)(size=size)
            spec = TaskSpec(workload=wl_name, backend="torch", device="cpu", variant="fp32",
                            mode="inference", batch_size=wl.batch_size_for(size), size=size)
            workload, variant, backend = resolve_cell(spec, settings)
            step = backend.prepare(workload, variant, "cpu", "inference", spec.batch_size, seed=0)
            import torch

            nthreads = torch.get_num_threads()
            probe = ContentionProbe(threads=nthreads, device="cpu")
            meas = measure(step, TimingConfig(min_time_s=args.min_time, min_samples=5, warmup_max_s=1.0),
                           probes=[probe])
            rec = probe.result()
            loop = rec["evidence"]["windows"].get("loop", {})
            out.append({
                "cell": f"{wl_name}/{size}",
                "p50_ms": statistics.median(meas.samples_ms),
                "samples": len(meas.samples_s),
                "threads": nthreads,
                "detected": rec["detected"],
                "other_cpu_cores_loop": loop.get("other_cpu_cores"),
                "reasons": rec["reasons"][:2],
            })
            step.close()
    print("RESULT " + json.dumps(out), flush=True)
    return 0


# -- parent ----------------------------------------------------------------------
def busy_other_cores(seconds: float = 1.0) -> float:
    """Busy cores of the affinity CPUs over ``seconds`` while this script sleeps."""
    from harness.core.contention import parse_proc_stat

    cpus = sorted(os.sched_getaffinity(0))
    a = parse_proc_stat(Path("/proc/stat").read_text(), cpus)[0]
    time.sleep(seconds)
    b = parse_proc_stat(Path("/proc/stat").read_text(), cpus)[0]
    return (b - a) / os.sysconf("SC_CLK_TCK") / seconds


def wait_quiet(limit_s: float, below: float = 0.3) -> float:
    t0 = time.monotonic()
    bg = busy_other_cores()
    while bg > below and time.monotonic() - t0 < limit_s:
        bg = busy_other_cores()
    return bg


HOG_WORK = {
    # one core's worth of pure CPU load
    "busy": "for _ in range(200000): pass",
    # another torch job with default threads (e.g. someone's test run): its OpenMP
    # team spins at every barrier, like the cell's
    "torch": "a @ a",
}


def start_hog(pin: int | None, kind: str = "busy") -> subprocess.Popen[bytes]:
    """One hog process; it exits by itself when this script dies."""
    code = ("import os\n" + (f"os.sched_setaffinity(0, {{{pin}}})\n" if pin is not None else "")
            + ("import torch\na = torch.randn(256, 256)\n" if kind == "torch" else "")
            + f"while os.getppid() == {os.getpid()}:\n    {HOG_WORK[kind]}\n")
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL)


def run_config(args: argparse.Namespace, name: str, pol: dict[str, Any], hog: bool) -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "KMP_", "MKL_NUM"))}
    env.update(pol["env"])
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, __file__, "--child", "--threads", str(pol["threads"] or 0),
           "--workloads", args.workloads, "--sizes", args.sizes, "--min-time", str(args.min_time)]
    hogs = [start_hog(args.hog_pin, args.hog_kind) for _ in range(args.hogs)] if hog else []
    try:
        time.sleep((2.0 if args.hog_kind == "torch" else 0.2) if hogs else 0)
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{name} hog={hog} failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--workloads", default="mlp,transformer")
    ap.add_argument("--sizes", default="tiny,small")
    ap.add_argument("--min-time", type=float, default=0.5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--policies", default=None, help="comma-separated subset of the policy names")
    ap.add_argument("--hogs", type=int, default=1, help="busy-loop processes in the hog configurations")
    ap.add_argument("--hog-kind", choices=sorted(HOG_WORK), default="busy",
                    help="busy: a pure busy loop; torch: a torch matmul loop with default threads")
    ap.add_argument("--hog-pin", type=int, default=None, help="pin the hog(s) to this CPU (default: unpinned)")
    ap.add_argument("--quiet-wait", type=float, default=120.0, help="seconds to wait for idle CPUs per config")
    ap.add_argument("--retries", type=int, default=2, help="reruns of a configuration that others disturbed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write every raw result here (JSON)")
    args = ap.parse_args()
    if args.child:
        return child(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks (stop the hog)

    ncpu = len(os.sched_getaffinity(0))
    pols = policies(ncpu)
    if args.policies:
        pols = {k: v for k, v in pols.items() if k in args.policies.split(",")}
    # the most CPU the hogs can use: a busy loop one core, a torch hog one per thread
    hog_cores = args.hogs * (ncpu if args.hog_kind == "torch" else 1)
    load_before = os.getloadavg()
    rng = random.Random(args.seed)
    rows: list[dict[str, Any]] = []
    t0 = time.time()
    for rep in range(args.reps):
        configs = [(n, hog) for n in pols for hog in (False, True)]
        rng.shuffle(configs)
        for name, hog in configs:
            for attempt in range(args.retries + 1):
                bg = wait_quiet(args.quiet_wait)
                cells = run_config(args, name, pols[name], hog)
                for c in cells:
                    # clean: nobody but the hog (if any) competed, judged by the probe
                    # itself (no hog: not detected; hog: others <= one core + margin)
                    c["clean"] = bool(bg <= 0.3 and (
                        (c["other_cpu_cores_loop"] or 0) <= hog_cores + 0.3 if hog else not c["detected"]))
                    rows.append({"rep": rep, "attempt": attempt, "policy": name, "hog": hog,
                                 "background_cores": round(bg, 2), **c})
                print(f"[{time.time() - t0:6.0f}s] rep {rep} {name:<22} hog={int(hog)} bg={bg:.2f} "
                      + "  ".join(f"{c['cell']}={c['p50_ms']:.3g}ms{'*' if c['detected'] else ''}"
                                  f"{'' if c['clean'] else '!'}" for c in cells), flush=True)
                if all(c["clean"] for c in cells):
                    break
    load_after = os.getloadavg()

    cells = list(dict.fromkeys(r["cell"] for r in rows))

    def pick(policy: str, cell: str, hog: bool) -> list[dict[str, Any]]:
        got = [r for r in rows if r["policy"] == policy and r["cell"] == cell and r["hog"] == hog]
        return [r for r in got if r["clean"]] or got

    def med(policy: str, cell: str, hog: bool) -> float:
        return statistics.median(r["p50_ms"] for r in pick(policy, cell, hog))

    print(f"\nload average (1/5/15 min) before {load_before}, after {load_after}; {ncpu} CPUs; "
          f"{args.hogs} {args.hog_kind} hog(s) "
          f"{'pinned to CPU ' + str(args.hog_pin) if args.hog_pin is not None else 'unpinned'}; "
          f"median of {args.reps} interleaved repetitions over the clean trials (all trials where none was clean); "
          f"in the log * = probe detected contention, ! = disturbed by others (rerun)\n")
    print("| policy | cell | p50 no hog (ms) | p50 hog (ms) | hog / no hog | no-hog cost vs default "
          "| clean trials (no hog, hog) | probe detected: no hog, hog |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name in pols:
        for cell in cells:
            a, b = med(name, cell, False), med(name, cell, True)
            base = med("default", cell, False) if "default" in pols else float("nan")
            n0 = sum(r["clean"] for r in pick(name, cell, False))
            n1 = sum(r["clean"] for r in pick(name, cell, True))
            all0 = [r for r in rows if r["policy"] == name and r["cell"] == cell and not r["hog"]]
            all1 = [r for r in rows if r["policy"] == name and r["cell"] == cell and r["hog"]]
            print(f"| {name} | {cell} | {a:.3g} | {b:.3g} | {b / a:.2f}x | {a / base:.2f}x | {n0}, {n1} "
                  f"| {sum(r['detected'] for r in all0)}/{len(all0)}, {sum(r['detected'] for r in all1)}/{len(all1)} |")
    bgs = [r["background_cores"] for r in rows]
    print(f"\nbackground before each config (busy cores while idle): median {statistics.median(bgs):.2f}, "
          f"max {max(bgs):.2f}")
    if args.out:
        args.out.write_text(json.dumps({"load_before": load_before, "load_after": load_after, "ncpu": ncpu,
                                        "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
