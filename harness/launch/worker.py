"""The worker process: runs exactly one cell and writes one JSON message.

``python -m harness.launch.worker REQUEST.json RESULT.json``

Started by :class:`harness.launch.process.ProcessLauncher`. The request holds the cell's
spec and the run settings; the cell runs here through the in-process launcher
(:func:`harness.launch.inprocess.run_cell`: a data-parallel torch cell starts torchrun
from here). The result is one versioned message with the cell record (``status`` ok |
skipped | failed), written atomically to RESULT.json (:func:`harness.core.cells.write_message`).
Anything the worker cannot report itself (a segfault, an OOM kill, a timeout) is
recorded by the launcher from the exit status and the tail of the worker's output.
"""

from __future__ import annotations

import sys

from harness.core.cells import MESSAGE_VERSION, empty_cell, read_request, write_message
from harness.launch.inprocess import run_cell
from harness.launch.measure import resolve_cell, sustained_throughput

# names older code imports from here (the measurement lives in harness.launch.measure)
__all__ = ["main", "run_cell", "resolve_cell", "empty_cell", "sustained_throughput", "MESSAGE_VERSION"]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m harness.launch.worker REQUEST.json RESULT.json", file=sys.stderr)
        return 2
    from harness.core.lifeline import bind_from_env

    bind_from_env()  # die with the runner, keep our own deadline, leave no scratch behind
    spec, settings = read_request(args[0])
    write_message(args[1], run_cell(spec, settings))
    return 0


if __name__ == "__main__":
    sys.stdout.flush()
    raise SystemExit(main())
