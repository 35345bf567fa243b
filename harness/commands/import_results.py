"""``harness import pytest-benchmark FILE.json...``: other tools' results as dl-harness
result files, so ``harness report`` and ``harness compare`` work on them.

Each input file (one pytest-benchmark session) becomes one result file in ``--out``
(one run). The conversion rules (samples, specs, what is unavailable and why) are in
:mod:`harness.store.importers.pytest_benchmark` and docs/pytest-benchmark.md. A file already
imported into ``--out`` (same SHA-256) is not imported again unless ``--force``: a
duplicate would count as an extra repetition in ``compare``.

Every input is untrusted: read once (regular files only, bounded size; the SHA-256 is of
the bytes parsed), and any problem is one line and exit code 2 before anything is
written (:mod:`harness.store.importers.safe_read`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.commands.common import EXIT_OK, UsageError

ORDER = 32


def add_parser(sub: Any) -> None:
    from harness.store.importers import FORMATS

    p = sub.add_parser(
        "import",
        help="convert pytest-benchmark JSON into dl-harness result files",
        description="Convert another tool's benchmark results into dl-harness result files (one per input "
        "file) for 'harness report' and 'harness compare'. pytest-benchmark: use --benchmark-json=FILE, or "
        "--benchmark-save with --benchmark-save-data (without raw timings a benchmark imports as skipped).",
    )
    p.add_argument("format", choices=FORMATS, help="input format")
    p.add_argument("files", nargs="+", metavar="FILE.json", help="input files")
    p.add_argument("-o", "--out", default="results", help="output directory (default: results)")
    p.add_argument("--tag", default=None, help="tag stored in each result (e.g. nightly)")
    p.add_argument("--device", default="cpu",
                   help="device recorded for benchmarks that are not harness_workload cells (default: cpu)")  # fmt: skip
    p.add_argument("--force", action="store_true", help="import a file again even if --out already holds it")


def _already_imported(out_dir: Path) -> dict[str, str]:
    """SHA-256 of each imported source -> result file, for the results in ``out_dir``.
    Files that cannot be read safely (not regular, too big, not JSON) are passed over:
    a FIFO named ``*.json`` there must not hang the import."""
    from harness.store.importers.safe_read import InputFileError, read_json

    seen: dict[str, str] = {}
    if not out_dir.is_dir():
        return seen
    for p in sorted(out_dir.glob("*.json")):
        try:
            doc, _ = read_json(p)
        except InputFileError:
            continue
        imp = doc.get("imported") if isinstance(doc, dict) else None
        if isinstance(imp, dict) and isinstance(imp.get("sha256"), str):
            seen.setdefault(imp["sha256"], f"as {p}")
    return seen


def run(args: argparse.Namespace) -> int:
    from harness.store.importers import pytest_benchmark as pb
    from harness.store.importers.safe_read import max_bytes, show
    from harness.store.results import ResultFileError, claim_path

    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {args.out!r} is a file; give a directory")
    # convert everything first: a bad input writes nothing
    converted: list[tuple[str, dict[str, Any]]] = []
    max_bytes()  # a bad DLH_MAX_RESULT_BYTES is one line (InputFileError, exit 2) before anything is read
    seen = {} if args.force else _already_imported(out_dir)
    skipped_dupes: list[str] = []
    for f in args.files:
        src, sha = pb.read_source(f)  # one read: the hash is of the bytes converted
        if sha in seen:
            skipped_dupes.append(f"{show(f)}: already imported ({seen[sha]}; use --force to import it again)")
            continue
        # a malformed file raises ImportFormatError (a UserError: exit 2, one line, nothing written)
        doc = pb.convert(src, show(f, 4096), tag=args.tag, device=args.device, sha256=sha)
        seen[sha] = f"same content as {f}"
        converted.append((f, doc))
    for line in skipped_dupes:
        print(f"skipped {line}")
    for f, doc in converted:
        try:
            path, _ = claim_path(out_dir, doc["run_id"], doc)
        except (OSError, ResultFileError) as e:
            raise UsageError(f"cannot write into {str(out_dir)!r}: {getattr(e, 'strerror', None) or e}") from None
        counts: dict[str, int] = {}
        for c in doc["cells"]:
            counts[c["status"]] = counts.get(c["status"], 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        n = len(doc["cells"])
        print(f"{show(f)}: {n} benchmark{'s' if n != 1 else ''} ({summary})")
        for c in doc["cells"]:
            if c["status"] != "ok":
                print(f"  {c['status']}: {show(c['id'])}: {c['reason']}")
        print(f"result: {path}")
    return EXIT_OK
