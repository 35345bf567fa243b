"""What every ``harness`` verb shares: exit codes, the usage error, argparse types for
bounded flags, and the guard against overwriting an input. ``harness.cli`` re-exports
these names; verb modules import them from here (commands sit below the CLI layer)."""

from __future__ import annotations

import argparse
import errno
from pathlib import Path
from typing import Any

from harness import errors as _errors
from harness.errors import UserError

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INTERNAL = 0, 1, 130, 3
EXIT_USAGE = _errors.EXIT_USAGE  # harness.errors.UserError
EXIT_WRITE = _errors.EXIT_WRITE  # output could not be (fully) written; harness.errors.OutputError

# causes that only a write can have: an uncaught OSError with one of these is exit 4 (one
# line), not a bug (exit 3). EACCES/ENOENT are left out: a read can fail with them too.
_WRITE_ERRNOS = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS") if hasattr(errno, name)
)


class UsageError(UserError):
    """A user mistake: printed as one line, exit code 2."""


def refuse_overwriting_inputs(output: str | None, inputs: Any) -> None:
    """UsageError when ``output`` is one of the files the command reads (directly or as
    a ``*.json`` inside a given directory): ``report R.json -o R.json`` would destroy
    the result it reads."""
    if not output or output == "-":
        return
    import os as _os

    from harness.store.results import expand_paths

    out = Path(output)
    try:
        files = expand_paths(inputs)
    except Exception:  # noqa: BLE001 - the command reports unreadable inputs itself
        return
    for f in files:
        same = False
        try:
            same = out.exists() and f.exists() and _os.path.samefile(out, f)
        except OSError:
            same = False
        if same or _os.path.realpath(out) == _os.path.realpath(f):  # realpath: no error on a link loop
            raise UsageError(f"refusing to write {output!r}: it is one of the inputs ({f}); choose another -o path")


def bounded_setting(setting: str) -> Any:
    """argparse ``type=`` of a numeric flag within ``harness.core.suite.LIMITS[setting]``
    (the bounds of the same setting in a suite file); harness.core.suite is imported only
    when the flag is given, so ``harness --help`` stays fast."""

    def parse(text: str) -> Any:
        from harness.core.suite import setting_arg

        return setting_arg(setting)(text)

    parse.__name__ = setting
    return parse


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return v


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (seconds, percentages, ...)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return v
