"""Reading an untrusted JSON file with bounded cost: never a hang, never a traceback.

Every check happens before (or while) the bytes are parsed, so a hostile file costs at
most one bounded read and one bounded parse:

* **Regular files only.** The file is opened with ``O_NONBLOCK`` (so opening a FIFO
  does not wait for a writer) and ``fstat``-ed: anything but a regular file -- a FIFO,
  ``/dev/zero`` or another device behind a ``*.json`` name or symlink, a socket, a
  directory -- is refused before a byte is read.
* **Bounded size.** At most :func:`max_bytes` bytes (256 MiB by default; the
  environment variable ``DLH_MAX_RESULT_BYTES`` overrides it with a positive whole
  number of bytes -- the same variable bounds result files elsewhere in dl-harness).
  The size is checked from ``fstat`` and again while reading (at most limit + 1 bytes
  are ever read, so a file that grows, or a ``/proc`` file that reports size 0, cannot
  blow it).
* **Strict JSON.** UTF-8 only; the non-standard constants ``NaN``, ``Infinity`` and
  ``-Infinity`` are refused, and so are numbers a double cannot hold (``1e400``) and
  integers beyond 64 bits (20+ digits: Python's own limit of 4,300 digits would
  otherwise still turn a 4,000-digit integer into an ``OverflowError`` later).
  Nesting is limited to :data:`MAX_DEPTH` levels (``RecursionError`` from the parser
  is caught too). orjson, when installed, is the fast path; anything it refuses is
  parsed again by the standard library, whose error messages are the ones shown.

Everything raises :class:`InputFileError` with one line naming the file. The module has
no dl-harness dependencies, so ``harness/store/results.py`` could share it for result files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from pathlib import Path
from typing import Any, Mapping

from harness.errors import UserError
from harness.store.results import (  # one size limit, one file-kind test for every untrusted JSON file
    MAX_BYTES_ENV,
    ResultFileError,
    _not_regular,
    _show,
    max_result_bytes,
)

MAX_DEPTH = 64  # containers inside containers; pytest-benchmark's own output is ~6 deep
MAX_INT_DIGITS = 20  # 2**64 has 20 digits: larger integers are refused
_CHUNK = 1 << 20
_SCALARS = frozenset((str, int, float, bool, type(None)))


class InputFileError(UserError, ValueError):
    """An input file that cannot be read safely: one line naming the file (exit code 2)."""


def show(text: object, limit: int = 200) -> str:
    """``text`` for a one-line message: control characters escaped, at most ``limit`` chars."""
    return _show(text, limit)


def max_bytes(environ: Mapping[str, str] | None = None) -> int:
    """The size limit for an input file: ``DLH_MAX_RESULT_BYTES`` or 256 MiB (the same
    limit and variable as result files: :func:`harness.store.results.max_result_bytes`)."""
    try:
        return max_result_bytes(environ)
    except ResultFileError as e:
        raise InputFileError(str(e)) from None


def read_regular_file(path: str | Path, limit: int | None = None) -> bytes:
    """The bytes of ``path``, which must be a regular file of at most ``limit`` bytes
    (default :func:`max_bytes`). Never blocks on a FIFO or device."""
    p = Path(path)
    limit = max_bytes() if limit is None else limit
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InputFileError(f"no such file: {show(p)}") from None
    except OSError as e:
        raise InputFileError(f"{show(p)}: cannot read ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = _not_regular(st.st_mode)
            raise InputFileError(f"{show(p)}: is {kind}, not a regular file; give a JSON file")
        if st.st_size > limit:
            raise InputFileError(f"{show(p)}: {st.st_size:,} bytes is over the {limit:,}-byte limit for an input file "
                                 f"(set {MAX_BYTES_ENV} to raise it)")  # fmt: skip
        chunks: list[bytes] = []
        got = 0
        while got <= limit:
            try:
                b = os.read(fd, min(_CHUNK, limit + 1 - got))
            except OSError as e:
                raise InputFileError(f"{show(p)}: cannot read ({e.strerror or e})") from None
            if not b:
                break
            chunks.append(b)
            got += len(b)
        if got > limit:
            raise InputFileError(f"{show(p)}: more than {limit:,} bytes, the limit for an input file "
                                 f"(set {MAX_BYTES_ENV} to raise it)")  # fmt: skip
        return b"".join(chunks)
    finally:
        os.close(fd)


class _Refused(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _Refused(f"holds {name}, which is not valid JSON (no NaN or infinite values are accepted)")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) >= MAX_INT_DIGITS + 1:
        raise _Refused(f"holds an integer of {len(text.lstrip('-')):,} digits (at most {MAX_INT_DIGITS} are accepted)")
    return int(text)


def _check_tree(doc: Any, max_depth: int, check_floats: bool) -> str | None:
    """What is wrong with a parsed document (nesting, non-finite numbers), or None.
    Iterative; lists of scalars (e.g. millions of samples) are checked at C speed."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        obj, depth = stack.pop()
        if depth > max_depth:
            return f"nested more than {max_depth} levels deep"
        if isinstance(obj, dict):
            items = obj.values()
        elif isinstance(obj, list):
            items = obj
        else:  # a scalar document (e.g. the whole file is `7`): nothing nested
            if check_floats and type(obj) is float and not math.isfinite(obj):
                return "holds a number too large for a double (e.g. 1e400)"
            continue
        if isinstance(obj, list) and set(map(type, obj)) <= _SCALARS:
            if check_floats and not all(map(math.isfinite, (x for x in obj if type(x) is float))):
                return "holds a number too large for a double (e.g. 1e400)"
            continue
        for v in items:
            if isinstance(v, (dict, list)):
                stack.append((v, depth + 1))
            elif check_floats and type(v) is float and not math.isfinite(v):
                return "holds a number too large for a double (e.g. 1e400)"
    return None


def loads_strict(data: bytes | str, source: str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse strict JSON (see the module docstring); InputFileError naming ``source``."""
    where = show(source)
    doc: Any = None
    parsed = False
    try:
        import orjson  # optional fast path: refuses NaN/Infinity, 1e400, bad UTF-8 and nesting > 1024 itself
    except ImportError:
        orjson = None  # type: ignore[assignment]
    if orjson is not None:
        try:
            doc = orjson.loads(data)  # bytes as they are: no decoded copy of a big file
            parsed = True
        except orjson.JSONDecodeError:
            pass  # the standard library says why (and accepts nothing orjson refused)
    if not parsed:
        if isinstance(data, bytes):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputFileError(f"{where}: not UTF-8 text (invalid byte at offset {e.start:,})") from None
        else:
            text = data
        try:
            doc = json.loads(text, parse_constant=_no_constant, parse_int=_bounded_int)
        except _Refused as e:
            raise InputFileError(f"{where}: {e}") from None
        except json.JSONDecodeError as e:
            raise InputFileError(f"{where}: not JSON ({e.msg} at line {e.lineno})") from None
        except RecursionError:
            raise InputFileError(f"{where}: nested more than {max_depth} levels deep") from None
        except ValueError as e:  # e.g. Python's 4,300-digit limit for integers
            raise InputFileError(f"{where}: not usable JSON ({show(e, 120)})") from None
    # orjson refuses non-finite numbers itself; the standard library turns 1e400 into inf
    why = _check_tree(doc, max_depth, check_floats=not parsed)
    if why:
        raise InputFileError(f"{where}: {why}")
    return doc


def read_json(path: str | Path, limit: int | None = None, max_depth: int = MAX_DEPTH) -> tuple[Any, str]:
    """Read and strictly parse a JSON file: ``(document, sha256 of the bytes read)``."""
    raw = read_regular_file(path, limit)
    sha = hashlib.sha256(raw).hexdigest()
    return loads_strict(raw, str(path), max_depth), sha
