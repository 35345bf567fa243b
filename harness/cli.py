"""``harness <verb>``: the command-line interface.

Each verb lives in its own module under :mod:`harness.commands` (``add_parser`` +
``run``); this module discovers them, parses arguments and maps errors to exit codes.

Exit codes (documented in the README):
  0    success: every cell ok or skipped with a reason; no regression
  1    some cells failed (the rest are saved), or a regression was found
  2    usage or configuration error (one clear line, no traceback)
  3    internal error: a bug in the harness or a plugin (traceback printed; report it)
  4    output could not be (fully) written (a full disk, a read-only, deleted or replaced
       output directory, a quota, a file-size limit, an unwritable --report path): one
       line naming the path and the cause; the cells saved before the error stay saved,
       and ``run`` says where the complete copy is (``$TMPDIR/dl-harness-unsaved/``).
       ``run`` checks --out before the first cell and exits 2 if it cannot write there.
       Precedence in ``run``: 130 over 4 over 1.
  130  interrupted with Ctrl-C (finished cells are saved)
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import traceback
from types import ModuleType
from typing import Sequence

from harness import __version__
from harness.errors import HarnessError

from harness.commands.common import (  # noqa: F401 - re-exported: harness.cli.UsageError etc.
    _WRITE_ERRNOS, EXIT_FAILED, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, EXIT_WRITE, UsageError,
    bounded_setting, positive_float, positive_int, refuse_overwriting_inputs,
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line + hint, exit 2
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n(see '{self.prog} --help')\n")


def command_modules() -> list[ModuleType]:
    """The verb modules in harness/commands, in ``ORDER``."""
    import harness.commands as pkg

    mods = [importlib.import_module(f"harness.commands.{m.name}") for m in pkgutil.iter_modules(pkg.__path__)]
    mods = [m for m in mods if hasattr(m, "add_parser") and hasattr(m, "run")]
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    p = _Parser(prog="harness", description="dl-harness: deep-learning benchmarks with honest numbers.")
    p.add_argument("--version", action="version", version=f"dl-harness {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    verbs: dict[str, ModuleType] = {}
    for mod in command_modules():
        before = set(sub.choices)
        mod.add_parser(sub)
        for name in set(sub.choices) - before:
            verbs[name] = mod
    return p, verbs


def main(argv: Sequence[str] | None = None) -> int:
    parser, verbs = build_parser()
    args = parser.parse_args(argv)
    if not args.verb:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(verbs[args.verb].run(args))
    except HarnessError as e:  # caught once: every user error, whichever module raised it
        if args.debug:
            traceback.print_exc()
        print(f"harness {args.verb}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except OSError as e:
        if e.errno not in _WRITE_ERRNOS:
            return _internal_error(args.verb, e)
        if args.debug:
            traceback.print_exc()
        where = f"{e.filename}: " if e.filename else ""
        print(f"harness {args.verb}: error: could not write {where}{e.strerror or e}", file=sys.stderr)
        return EXIT_WRITE
    except Exception as e:  # noqa: BLE001 - a bug: its own exit code, never read as "regression"
        return _internal_error(args.verb, e)


def _internal_error(verb: str, e: BaseException) -> int:
    traceback.print_exception(type(e), e, e.__traceback__)
    print(f"harness {verb}: internal error: {type(e).__name__}: {e} (please report it with the "
          "traceback above)", file=sys.stderr)
    return EXIT_INTERNAL
