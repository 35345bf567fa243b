"""Interleaved speed comparison of the torch variants in one process (CPU inference).

    .venv/bin/python bench/variants_speed.py --workload mlp --size small --threads 2

Each round times every variant back to back (``--iters`` forward passes each, after a
warm-up), so slow drifts of a shared machine hit all variants alike; the report is the
median over rounds of the per-pass time (ms) and its ratio to fp32. Optional: torchao's
eager int8 (``Int8DynamicActivationInt8WeightConfig``) when torchao is installed, for
the int8 engine comparison in docs/variants.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Any, Callable


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="mlp", choices=["mlp", "cnn", "transformer"])
    ap.add_argument("--size", default="small")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--variants", default="fp32,fp16,bf16,int8-dynamic,int8-static,prune-unstructured,prune-structured,distill")
    args = ap.parse_args()

    import torch

    from harness.core import registry

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    wl = registry.load("workload", args.workload)(size=args.size)
    bs = args.batch_size or wl.batch_size_for()
    x = [torch.from_numpy(a) for a in wl.make_inputs(bs)[0]]
    fns: dict[str, Callable[[], Any]] = {}
    for name in args.variants.split(","):
        v = registry.load("variant", name)()
        m = v.apply("torch", wl.build("torch").eval(), device=torch.device("cpu"), mode="inference", workload=wl)
        m.eval()

        def fn(m: Any = m, v: Any = v) -> Any:
            with v.autocast("torch", "cpu"):
                return m(*x)

        fns[name] = fn
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        m = wl.build("torch").eval()
        quantize_(m, Int8DynamicActivationInt8WeightConfig())
        fns["torchao-int8-eager"] = lambda m=m: m(*x)
    except Exception:  # noqa: BLE001 - optional comparison
        pass
    samples: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for fn in fns.values():
            for _ in range(5):
                fn()
        for _ in range(args.rounds):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                for _ in range(args.iters):
                    fn()
                samples[k].append((time.perf_counter() - t0) / args.iters * 1e3)
    base = statistics.median(samples["fp32"]) if "fp32" in samples else None
    print(f"{args.workload} {args.size} batch {bs}, {args.threads} threads, torch {torch.__version__}, "
          f"{args.rounds} interleaved rounds x {args.iters} passes")
    print(f"{'variant':22} {'median ms':>10} {'min ms':>8} {'vs fp32':>8}")
    for k, s in samples.items():
        med = statistics.median(s)
        ratio = f"{med / base:.2f}x" if base else "-"
        print(f"{k:22} {med:10.3f} {min(s):8.3f} {ratio:>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
