"""``harness cache``: the on-disk cache of deterministic, expensive results (FLOP counts,
exported ONNX and converted LiteRT int8 models, trained quality models; see
docs/cache.md). ``info`` shows where it is, its bound and what it holds per kind;
``clear [--kind K]`` empties it (or one kind)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from harness.commands.common import EXIT_FAILED, EXIT_OK, UsageError

ORDER = 50


def add_parser(sub: Any) -> None:
    from harness.core.cache import KINDS  # the standard library only: cheap at parser build

    p = sub.add_parser("cache", help="show or clear the cache of FLOP counts, int8 models and quality models",
                       description="Show (info) or empty (clear) the on-disk cache; see docs/cache.md.")
    p.add_argument("action", nargs="?", default="info", choices=("info", "clear"),
                   help="info (default): location, bound, entries and bytes per kind; clear: delete entries")
    p.add_argument("--kind", default=None, metavar="K",
                   help=f"clear only this kind ({', '.join(KINDS)})")
    p.add_argument("--json", action="store_true", help="info as JSON")


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def run(args: argparse.Namespace) -> int:
    from harness.core import cache

    if args.kind is not None and args.kind not in cache.KINDS:
        raise UsageError(f"unknown cache kind {args.kind!r}; kinds: {', '.join(cache.KINDS)}")
    if args.action == "clear":
        removed, freed = cache.clear(args.kind)
        what = f"{args.kind} entries" if args.kind else "entries"
        print(f"removed {removed} {what} ({_mb(freed)}) from {cache.root()}")
        left = cache.info()["kinds"]
        kept = sum(v["entries"] for k, v in left.items() if args.kind in (None, k))
        if kept:
            print(f"harness cache: error: {kept} entries could not be removed (permissions?)", file=sys.stderr)
            return EXIT_FAILED
        return EXIT_OK
    if args.kind is not None:
        raise UsageError("--kind applies to 'harness cache clear' only")
    info = cache.info()
    if args.json:
        print(json.dumps(info, indent=1))
        return EXIT_OK
    state = "enabled" if info["enabled"] else f"disabled ({cache.ENABLE_ENV}=0)"
    print(f"location      {info['root']}  ({state}; set {cache.DIR_ENV} to move it)")
    print(f"bound         {_mb(info['max_bytes'])}  (set {cache.MAX_MB_ENV}; least recently used entries go first)")
    for kind, v in info["kinds"].items():
        print(f"{kind:<13} {v['entries']:>5} entries  {_mb(v['bytes']):>10}")
    print(f"{'total':<13} {info['entries']:>5} entries  {_mb(info['bytes']):>10}")
    return EXIT_OK
