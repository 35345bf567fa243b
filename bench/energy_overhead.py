"""Overhead of the energy and utilisation samplers on the step being measured.

Two measurements:

1. **Cost per read** of each meter (median of many reads): RAPL on a sysfs-shaped
   tree (this machine has no RAPL, so a temp tree with the same files stands in; real
   sysfs reads cost about the same syscalls), the psutil-based estimate, and one
   utilisation sample. The sampler's CPU share is cost / interval.
2. **Slowdown of a real step**: the torch MLP ``small`` forward (~1 ms here), timed in
   interleaved blocks with and without both samplers running at their default
   intervals; the median of the per-pair ratios is reported (interleaving cancels the
   machine's drift; the spread says how much is noise).

    python bench/energy_overhead.py [--pairs 20] [--block-s 0.25]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.collectors.energy import EnergyConfig, EstimateMeter, RaplMeter, Sampler  # noqa: E402
from harness.collectors.utilisation import UtilisationCollector, UtilisationConfig  # noqa: E402
from harness.core.hw.rapl import open_rapl  # noqa: E402


def fake_powercap(root: Path) -> Path:
    for name, label in (("intel-rapl:0", "package-0"), ("intel-rapl:0:0", "dram")):
        z = root / name
        z.mkdir(parents=True)
        (z / "name").write_text(label + "\n")
        (z / "energy_uj").write_text("123456789\n")
        (z / "max_energy_range_uj").write_text("262143328850\n")
    return root


def cost_per_call(fn, n: int = 2000) -> float:
    """Median seconds per call over batches of 50."""
    per = []
    for _ in range(n // 50):
        t0 = time.perf_counter()
        for _ in range(50):
            fn()
        per.append((time.perf_counter() - t0) / 50)
    return statistics.median(per)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--block-s", type=float, default=0.25)
    args = ap.parse_args()
    import psutil
    import torch

    from harness.core import registry

    interval = EnergyConfig().interval_s
    with tempfile.TemporaryDirectory() as td:
        rapl = RaplMeter(open_rapl(fake_powercap(Path(td) / "powercap")))
        psutil.cpu_percent(None)
        est = EstimateMeter(lambda: 20.0 * psutil.cpu_percent(None) / 100, "bench", "bench")
        util = UtilisationCollector()
        util.bind({"device": "cpu"})
        util.start()
        util.stop()
        costs = {
            "rapl read (2 zones)": cost_per_call(lambda: rapl.read(time.perf_counter())),
            "estimate read (psutil)": cost_per_call(lambda: est.read(time.perf_counter())),
            "utilisation sample": cost_per_call(util._sample, n=500),
        }
        print(f"energy sampler interval {interval * 1e3:.0f} ms, utilisation interval "
              f"{UtilisationConfig().interval_s * 1e3:.0f} ms")
        for k, v in costs.items():
            iv = interval if "utilisation" not in k else UtilisationConfig().interval_s
            print(f"  {k:<24} {v * 1e6:7.1f} us/read  -> {v / iv:.4%} of one core")

        wl = registry.load("workload", "mlp")(size="small")
        model = wl.build("torch").eval()
        arrays, _ = wl.make_inputs(64)
        x = torch.from_numpy(arrays[0])

        def block() -> float:
            """Median step time (s) over a block of ~block_s."""
            ts = []
            end = time.perf_counter() + args.block_s
            with torch.inference_mode():
                while time.perf_counter() < end:
                    t0 = time.perf_counter()
                    model(x)
                    ts.append(time.perf_counter() - t0)
            return statistics.median(ts)

        for _ in range(3):
            block()  # warm-up
        ratios = []
        for i in range(args.pairs):
            order = (False, True) if i % 2 == 0 else (True, False)
            res = {}
            for on in order:
                if on:
                    s = Sampler(rapl, interval, time.perf_counter)
                    u = UtilisationCollector()
                    u.bind({"device": "cpu"})
                    s.start()
                    u.start()
                    res[on] = block()
                    u.stop()
                    s.stop()
                else:
                    res[on] = block()
            ratios.append(res[True] / res[False])
        q = statistics.quantiles(ratios, n=4)
        print(f"MLP small forward, batch 64: {args.pairs} interleaved pairs of {args.block_s:g} s blocks")
        print(f"  step time with samplers / without: median {statistics.median(ratios):.4f} "
              f"(IQR {q[0]:.4f}..{q[2]:.4f}; 1.0 = no overhead)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
