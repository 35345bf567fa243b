"""Result store: versioned JSON files under ``results/``.

One file per run, ``<out>/<run_id>.json``. Writes are atomic (temp file in the same
directory, fsync, rename) so a reader never sees half a file, and a new run claims its
file name with ``os.link`` so two runs can never clobber each other. The runner
rewrites the file after every finished cell, so an interrupted or killed run keeps
what it finished (``complete: false``).

Schema history (bump ``SCHEMA_VERSION`` and add a migration for every change):
  v3 (issue 11): ``metrics.throughput_per_s`` is *sustained* throughput (samples
              processed in the timed loop / the loop's wall time); the v2 value
              (batch / p50) moves to ``metrics.throughput_p50_per_s``. New optional
              fields: ``timing.contention`` {detected, evidence, reasons, rule},
              ``repeats`` (one entry per worker process, ``run --repeats N``),
              ``repeats_planned``, ``repeats_summary``, ``runtime.precision``,
              ``runtime.precision_method``, ``runtime.thread_policy``, top-level
              ``measurement_order``. Migration v2 -> v3: the old value becomes
              ``throughput_p50_per_s``; the sustained value is computed from
              ``timing.samples x iters_per_sample x global batch / timing.loop_wall_s``
              where those were recorded, else it stays the old value with
              ``metrics.throughput_method = "batch/p50 (migrated from schema v2)"``.
  v2 (issue 7): optional ``spec.world_size`` and ``metrics.distributed`` (data-parallel
              cells); ``metrics.params`` may be null in an ok cell (with the reason in
              ``unavailable``: imported benchmarks without a model). v1 files are
              valid v2 files; the migration only bumps the number. A v1-only reader
              refuses v2 files with "upgrade dl-harness" instead of misreading them.
  v1 (0.1.0): schema_version, run_id, created, finished, complete, interrupted, tag,
              harness{version, git_commit, git_dirty}, environment, suite, cells[]
              with spec, status, reason, error, metrics, unavailable, timing,
              runtime, samples_ms.
  v0 (pre-release drafts): cells kept ``samples`` instead of ``samples_ms`` and had
              no ``unavailable`` map; migrated on load.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import socket
import stat
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from harness.errors import UserError
from harness.core.cells import json_default
from harness.core.fsutil import atomic_write_text, write_temp_beside

SCHEMA_VERSION = 3  # see the schema history in the module docstring

STATUSES = ("ok", "skipped", "failed")


class ResultFileError(UserError):
    """A result file that cannot be used (unreadable, corrupt, wrong version)."""


def new_run_id(now: float | None = None, host: str | None = None) -> str:
    """A sortable, unique run id: ``YYYYmmddTHHMMSSZ-<host>-<6 hex>``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))
    h = "".join(c if c.isalnum() or c in "-_" else "-" for c in (host or socket.gethostname()))[:32]
    return f"{stamp}-{h or 'host'}-{secrets.token_hex(3)}"


def dumps(doc: dict[str, Any]) -> str:
    """A result document as JSON, with the cells' one encoding of numpy values, paths and
    dataclasses (:func:`harness.core.cells.json_default`, strict: anything else is a
    ``TypeError``)."""
    return json.dumps(doc, indent=1, sort_keys=False, allow_nan=False, default=json_default) + "\n"


def claim_path(out_dir: Path, run_id: str, doc: dict[str, Any]) -> tuple[Path, str]:
    """Create ``out_dir/<run_id>.json`` holding ``doc`` without ever replacing an
    existing file; on a name collision a fresh run id is drawn. Returns (path, run_id)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(20):
        path = out_dir / f"{run_id}.json"
        doc["run_id"] = run_id
        tmp = write_temp_beside(path, dumps(doc))
        try:
            os.link(tmp, path)  # fails if path exists: never clobbers
            return path, run_id
        except FileExistsError:
            run_id = new_run_id()
        finally:
            os.unlink(tmp)
    raise ResultFileError(f"could not claim a unique result file in {out_dir}")


def write_atomic(path: Path, doc: dict[str, Any]) -> None:
    """Replace ``path`` atomically with ``doc`` (used for updates of our own run)."""
    atomic_write_text(path, dumps(doc))  # no stray temp file when the rename fails (EROFS)


# ----------------------------------------------------------------------------- loading
#
# Result files are untrusted input (a colleague's upload, a CI artifact, a directory
# anyone can write to). Loading one costs at most one bounded read and one bounded
# parse, and whatever is wrong with it is one ResultFileError line naming the file:
#
# * only regular files are read (``os.stat`` first, then an ``O_NONBLOCK`` open and an
#   ``fstat``): a FIFO, ``/dev/zero`` or another device behind a ``*.json`` name or
#   symlink, a socket or a directory is refused before a byte is read, so nothing hangs;
# * at most ``DLH_MAX_RESULT_BYTES`` bytes (default 256 MiB, far above a nightly run
#   with raw samples, which is tens of MB) -- checked from ``fstat`` and again while
#   reading (at most limit + 1 bytes are ever read);
# * strict JSON: UTF-8, no ``NaN``/``Infinity`` and no number a double cannot hold
#   (``1e400``, a 5,000-digit integer: the harness itself never writes one -- ``dumps``
#   uses ``allow_nan=False``), no lone UTF-16 surrogates (they could not be written back
#   to a UTF-8 report), at most ``MAX_DEPTH`` levels of nesting (the parser's
#   ``RecursionError`` on deeper input is caught too);
# * then the version check, the migrations and the schema (harness/store/schema.py), which
#   types every field a consumer (report, compare, export, baseline, history,
#   procurement) reads, so consumers never see a wrongly typed value.


def _cells(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The cells of ``doc`` that are objects (the schema refuses anything else later)."""
    cells = doc.get("cells")
    return [c for c in cells if isinstance(c, dict)] if isinstance(cells, list) else []


def _migrate_v0(doc: dict[str, Any]) -> dict[str, Any]:
    for cell in _cells(doc):
        if "samples_ms" not in cell:
            cell["samples_ms"] = cell.pop("samples", [])
        cell.setdefault("unavailable", {})
    doc["schema_version"] = 1
    return doc


def _migrate_v1(doc: dict[str, Any]) -> dict[str, Any]:
    doc["schema_version"] = 2  # v2 only added optional fields and relaxed params
    return doc


def _migrate_v2(doc: dict[str, Any]) -> dict[str, Any]:
    for cell in _cells(doc):
        m = cell.get("metrics")
        if not isinstance(m, dict) or not isinstance(m.get("throughput_per_s"), (int, float)):
            continue
        if "throughput_p50_per_s" in m:
            continue
        m["throughput_p50_per_s"] = m["throughput_per_s"]
        t = cell.get("timing") if isinstance(cell.get("timing"), dict) else {}
        spec = cell.get("spec") if isinstance(cell.get("spec"), dict) else {}
        n, ips, wall = t.get("samples"), t.get("iters_per_sample"), t.get("loop_wall_s")
        bs = spec.get("batch_size")
        ws = spec.get("world_size") or 1
        nums = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (n, ips, wall, bs, ws))
        try:
            sustained = float(n * ips * bs * ws / wall) if nums and wall > 0 and n > 0 else math.nan
        except (OverflowError, ZeroDivisionError):
            sustained = math.nan
        if math.isfinite(sustained) and sustained > 0:
            m["throughput_per_s"] = sustained
            m["throughput_method"] = "sustained: timed steps x batch / loop wall time (migrated from schema v2)"
        else:
            m["throughput_method"] = "batch/p50 (migrated from schema v2: the timed loop's wall time was not recorded)"
    doc["schema_version"] = 3
    return doc


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _migrate_v0, 1: _migrate_v1, 2: _migrate_v2}


def migrate(doc: dict[str, Any], source: str = "<doc>") -> dict[str, Any]:
    """Bring ``doc`` to ``SCHEMA_VERSION``; refuse files from a newer harness."""
    version = doc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ResultFileError(f"{source}: not a dl-harness result (no integer schema_version)")
    if version > SCHEMA_VERSION:
        raise ResultFileError(
            f"{source}: schema_version {version} is newer than this harness supports "
            f"({SCHEMA_VERSION}); upgrade dl-harness to read it"
        )
    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise ResultFileError(f"{source}: no migration from schema_version {version}")
        doc = step(doc)
        version = doc["schema_version"]
    return doc


MAX_BYTES_ENV = "DLH_MAX_RESULT_BYTES"
DEFAULT_MAX_BYTES = 256 * 1024 * 1024  # 256 MiB: a big nightly run with raw samples is tens of MB
MAX_DEPTH = 64  # containers inside containers; a result file is ~10 deep (as safeyaml's limit for YAML)
# No measured quantity comes near these (FLOP/s ~1e18, byte counts ~1e13, latencies
# ~1e-6..1e7 ms); numbers beyond them are corruption or an attack, and arithmetic on
# them (squares in a standard deviation, exp of a log-ratio, division by a subnormal)
# overflows in the consumers. 0 is always allowed.
MAX_MAGNITUDE = 1e100
MIN_MAGNITUDE = 1e-100
_CHUNK = 1 << 20
_NUMBER_TYPES = frozenset((int, float))
_INT_MIN, _INT_MAX = -(2**63), 2**63  # signed 64-bit (pyarrow, numpy, SQL): beyond it a number is a float
_ORJSON_INT_MAX = 2**64  # orjson reads integers in [-2**63, 2**64) as int, others as float
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _show(text: Any, limit: int = 300) -> str:
    """``text`` fit for a one-line message: control characters escaped, at most ``limit``."""
    s = str(text)
    if not s.isprintable():
        s = ascii(s)[1:-1]
    return s if len(s) <= limit else s[: limit - 3] + "..."


def max_result_bytes(environ: Mapping[str, str] | None = None) -> int:
    """The size limit for one result file: ``$DLH_MAX_RESULT_BYTES`` (a positive whole
    number of bytes) or 256 MiB. ResultFileError for a value that is not one."""
    env = os.environ if environ is None else environ
    raw = env.get(MAX_BYTES_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_BYTES
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise ResultFileError(f"{MAX_BYTES_ENV}={_show(raw, 40)!r} is not a positive whole number of bytes")
    return value


_KINDS = (
    (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
)  # fmt: skip


def _not_regular(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _os_reason(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "a symlink loop"
    if e.errno == errno.ENOENT:
        return "no such file (a dangling symlink?)"
    return str(e.strerror or e)


def read_result_bytes(path: str | Path, limit: int | None = None) -> bytes:
    """The bytes of the result file ``path``: a regular file of at most ``limit`` bytes
    (default :func:`max_result_bytes`). Never blocks on a FIFO or reads a device.
    Raises ResultFileError (one line naming the file)."""
    p = Path(path)
    where = _show(p)
    if limit is None:
        try:
            limit = max_result_bytes()
        except ResultFileError as e:
            raise ResultFileError(f"{where}: not read ({e})") from None
    try:
        st = os.stat(p)  # before open: opening a device can have side effects
    except OSError as e:
        raise ResultFileError(f"{where}: cannot read ({_os_reason(e)})") from None
    except ValueError:  # a NUL byte in the name
        raise ResultFileError(f"{where}: cannot read (not a valid file name)") from None
    if stat.S_ISDIR(st.st_mode):
        try:
            os.listdir(p)
        except OSError as e:
            raise ResultFileError(f"{where}: cannot list directory ({_os_reason(e)})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ResultFileError(f"{where}: is {_not_regular(st.st_mode)}, not a result file")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(p, flags)
    except OSError as e:
        raise ResultFileError(f"{where}: cannot read ({_os_reason(e)})") from None
    try:
        st = os.fstat(fd)  # the file opened may not be the one stat-ed (a swap in between)
        if not stat.S_ISREG(st.st_mode):
            raise ResultFileError(f"{where}: is {_not_regular(st.st_mode)}, not a result file")
        if st.st_size > limit:
            raise ResultFileError(f"{where}: too large ({st.st_size:,} bytes; the limit is {limit:,} bytes, "
                                  f"set {MAX_BYTES_ENV} to raise it)")  # fmt: skip
        chunks: list[bytes] = []
        got = 0
        while got <= limit:
            try:
                b = os.read(fd, min(max(st.st_size + 1 - got, _CHUNK), limit + 1 - got))
            except OSError as e:
                raise ResultFileError(f"{where}: cannot read ({_os_reason(e)})") from None
            if not b:
                break
            chunks.append(b)
            got += len(b)
        if got > limit:
            raise ResultFileError(f"{where}: too large (more than {limit:,} bytes, the limit; "
                                  f"set {MAX_BYTES_ENV} to raise it)")  # fmt: skip
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    finally:
        os.close(fd)


def _parse_int(text: str) -> int | float:
    """An integer literal read as orjson reads it: an int in [-2**63, 2**64), else a
    float (``inf`` past 1e308, refused later) -- never Python's 4,300-digit ValueError.
    :func:`_tree_problem` then makes floats of what is beyond the signed 64-bit range."""
    if len(text) < 19:
        return int(text)
    if len(text) > 25:  # far outside 64 bits: no need for an exact (and costly) int
        return float(text)
    v = int(text)
    return v if _INT_MIN <= v < _ORJSON_INT_MAX else float(text)


def _keep_constant(name: str) -> float:
    return float(name)  # NaN / Infinity / -Infinity: refused by _tree_problem, with its path


_NOT_PARSED = object()


def _orjson_bytes(data: bytes) -> Any:
    """The document orjson parses straight from the bytes (no decoded copy of a large
    file: a 200 MB result would otherwise hold 200 MB more at its peak), or
    ``_NOT_PARSED`` when orjson is missing or refuses the bytes (the slower path then
    gives the error message)."""
    try:
        import orjson
    except ImportError:
        return _NOT_PARSED
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return _NOT_PARSED


def _loads(text: str) -> tuple[Any, bool]:
    """``(document, strict)``: parsed by orjson when it is installed and accepts the
    text (``strict``: it refuses NaN, infinities, ``1e400`` and lone surrogates itself),
    else by the standard library (see :func:`_fast_loads`)."""
    try:
        import orjson
    except ImportError:
        orjson = None  # type: ignore[assignment]
    if orjson is not None:
        try:
            return orjson.loads(text), True
        except orjson.JSONDecodeError:
            pass
    return json.loads(text, parse_int=_parse_int, parse_constant=_keep_constant), False


def _fast_loads(text: str) -> Any:
    """Parse JSON with orjson as an optional fast path (~2.5x faster on result files,
    which matters for 1,000-file loads); whatever orjson refuses (a syntax error, NaN
    literals, ``1e400``, lone surrogates, nesting over 1,024) is parsed again by the
    standard library, whose error messages are the ones shown. Both give the same
    values: integers at or beyond 2**64 are floats (orjson's rule, applied to the
    standard library by ``_parse_int``); :func:`loads_strict` then makes floats of the
    integers beyond the signed 64-bit range and refuses the NaN, infinities and
    surrogates the standard library lets through, so a file reads the same with or
    without orjson. Raises ValueError (JSON syntax,
    ``json.JSONDecodeError``) or RecursionError (nesting beyond the parser's limit)."""
    return _loads(text)[0]


def _path_of(entry: tuple[Any, ...] | None, keep: int = 12) -> str:
    """``a/b/c`` of a walk entry (beyond ``keep`` parts: the first ones, then ``...``)."""
    parts: list[str] = []
    while entry is not None:
        parts.append(_show(entry[0], 40))
        entry = entry[1]
    parts.reverse()
    if len(parts) > keep:
        parts = parts[: keep - 1] + ["..."]
    return "/".join(parts) or "<top>"


def _tree_problem(doc: Any, max_depth: int = MAX_DEPTH, strings: bool = False) -> str | None:
    """What makes a parsed document unusable, as ``"path: what"``, or None: nesting
    deeper than ``max_depth``; a number that is not finite or is beyond
    :data:`MAX_MAGNITUDE` (or, unless 0, below :data:`MIN_MAGNITUDE`) in magnitude;
    with ``strings``, a lone surrogate in a string or key. Integers beyond the signed
    64-bit range are made floats in place (a Parquet int64 column, numpy or SQL never
    meets one). Iterative (no recursion on hostile depth); lists of plain numbers (the
    raw samples) are checked at C speed."""
    if type(doc) is not dict and type(doc) is not list:  # a scalar document (`0`, `"s"`): nothing nested
        if type(doc) is float or (type(doc) is int and not _INT_MIN <= doc < _INT_MAX):
            return _number_problem(doc)
        if strings and type(doc) is str and not _encodable(doc):
            return "holds a lone UTF-16 surrogate (not valid UTF-8 text)"
        return None
    stack: list[tuple[Any, int, tuple[Any, ...] | None]] = [(doc, 1, None)]
    while stack:
        obj, depth, where = stack.pop()
        if depth > max_depth:
            return f"{_path_of(where)}: nested more than {max_depth} levels deep"
        if type(obj) is list:
            types = set(map(type, obj))
            if types <= _NUMBER_TYPES:
                if obj and not _numbers_ok(obj):
                    for i, x in enumerate(obj):
                        why = _number_problem(x)
                        if why:
                            return f"{_path_of((i, where))}: {why}"
                    if int in types:  # only 64-bit overflow: floats, as for a single value
                        obj[:] = [_as_int64_or_float(x) for x in obj]
                continue
            pairs: Iterable[tuple[Any, Any]] = enumerate(obj)
        else:
            pairs = obj.items()
            if strings:
                for k in obj:
                    if not _encodable(k):
                        return f"{_path_of((_show(k, 40), where))}: the key holds a lone UTF-16 surrogate"
        for k, v in pairs:
            t = type(v)
            if t is dict or t is list:
                stack.append((v, depth + 1, (k, where)))
            elif t is float or t is int:
                if t is int and _INT_MIN <= v < _INT_MAX:
                    continue
                why = _number_problem(v)
                if why:
                    return f"{_path_of((k, where))}: {why}"
                if t is int:
                    obj[k] = float(v)
            elif strings and t is str and not _encodable(v):
                return f"{_path_of((k, where))}: holds a lone UTF-16 surrogate (not valid UTF-8 text)"
    return None


def _numbers_ok(xs: list[Any]) -> bool:
    """A list of ints and floats holds no NaN or infinity, nothing beyond the magnitude
    bounds and no integer beyond 64 bits (C-speed passes; False means: look closer)."""
    if not math.isfinite(sum(xs)):  # a NaN or an infinity makes the sum non-finite (or a huge overflow)
        return False
    hi, lo = max(xs), min(xs)  # no NaN here: max/min are exact
    if hi > MAX_MAGNITUDE or lo < -MAX_MAGNITUDE or hi >= _INT_MAX or lo < _INT_MIN:
        return False  # the int64 bounds: an integer there becomes a float (rare: the slow path decides)
    return min(map(abs, xs)) >= MIN_MAGNITUDE or all(x == 0 or abs(x) >= MIN_MAGNITUDE for x in xs)


def _as_int64_or_float(x: Any) -> Any:
    return float(x) if type(x) is int and not _INT_MIN <= x < _INT_MAX else x


def _number_problem(x: float | int) -> str | None:
    """Why a number cannot stand in a result file, or None."""
    if type(x) is float and not math.isfinite(x):
        return _non_finite(x)
    if x != 0 and not MIN_MAGNITUDE <= abs(x) <= MAX_MAGNITUDE:
        return (f"{float(x):.3g} is out of range (numbers in a result file are at most {MAX_MAGNITUDE:.0e} and, "
                f"unless 0, at least {MIN_MAGNITUDE:.0e} in magnitude)")
    return None


def _non_finite(x: float) -> str:
    if x != x:
        return "NaN is not a number (not valid JSON; dl-harness never writes it)"
    return (f"{'-' if x < 0 else ''}Infinity or a number beyond the range of a double (1e400, a huge integer) "
            "is not a usable number")


def _encodable(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def loads_strict(data: bytes | str, source: str = "<doc>", max_depth: int = MAX_DEPTH) -> Any:
    """Strictly parse untrusted JSON (UTF-8; no NaN, infinities, out-of-range numbers or
    lone surrogates; at most ``max_depth`` levels): the first half of
    :func:`parse_result`, shared with other JSON files the tool reads (baseline
    manifests). ResultFileError naming ``source``."""
    where = _show(source)
    if isinstance(data, bytes):
        doc = _orjson_bytes(data)
        if doc is not _NOT_PARSED:  # strict already (orjson refuses what the check below looks for)
            problem = _tree_problem(doc, max_depth)
            if problem:
                raise ResultFileError(f"{where}: {problem}")
            return doc
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ResultFileError(f"{where}: corrupt (not UTF-8 text: invalid byte at offset {e.start:,})") from None
    else:
        text = data
    try:
        doc, strict = _loads(text)
    except json.JSONDecodeError as e:
        raise ResultFileError(f"{where}: corrupt or truncated JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise ResultFileError(f"{where}: nested more than {max_depth} levels deep (refused)") from None
    except ValueError as e:  # a parse hook's refusal; kept for any other limit of the parser
        raise ResultFileError(f"{where}: not usable JSON ({_show(e, 120)})") from None
    # orjson refuses lone surrogates itself; the standard library lets them through
    problem = _tree_problem(doc, max_depth, strings=not strict and _SURROGATE_ESCAPE.search(text) is not None)
    if problem:
        raise ResultFileError(f"{where}: {problem}")
    return doc


def parse_result(data: bytes | str, source: str = "<doc>") -> dict[str, Any]:
    """Strictly parse, version-check, migrate and validate the text of one result file
    (see the comment above :data:`MAX_BYTES_ENV`). ResultFileError naming ``source``."""
    where = _show(source)
    doc = loads_strict(data, source)
    if not isinstance(doc, dict):
        raise ResultFileError(f"{where}: not a dl-harness result (top level is not an object)")
    try:
        doc = migrate(doc, where)
        from harness.store.schema import validation_errors

        errors = validation_errors(doc)
    except ResultFileError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError, RecursionError) as e:
        # defence in depth: a shape the migrations or checks did not foresee is the
        # file's fault, reported like any other invalid file, never a crash of the tool
        raise ResultFileError(f"{where}: invalid result ({type(e).__name__}: {_show(e, 120)})") from None
    if errors:
        raise ResultFileError(f"{where}: invalid result: {_show(errors[0], 200)}")
    return doc


def load_result_and_bytes(path: str | Path, limit: int | None = None) -> tuple[dict[str, Any], bytes]:
    """:func:`load_result` plus the exact bytes it parsed (so a copy -- ``baseline set``
    -- or a checksum is of what was validated, without reading the file twice)."""
    p = Path(path)
    raw = read_result_bytes(p, limit)
    doc = parse_result(raw, str(p))
    doc["_source"] = str(p)  # where it was read from (a key of that name in the file is not believed)
    return doc, raw


def load_result(path: str | Path) -> dict[str, Any]:
    """Load, version-check, migrate and validate one result file (ResultFileError,
    one line naming the file, for anything that makes it unusable)."""
    return load_result_and_bytes(path)[0]


@dataclass
class LoadedResults:
    runs: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # one line per skipped file


def _is_dir(p: Path) -> bool:
    try:
        return stat.S_ISDIR(os.stat(p).st_mode)
    except (OSError, ValueError):  # missing, a symlink loop, no permission, a NUL in the name
        return False


def _identity(p: Path) -> str:
    try:
        return os.path.realpath(p)  # never raises on a symlink loop (Path.resolve does in 3.11)
    except (OSError, ValueError):
        return os.path.abspath(p)


def expand_paths(paths: Iterable[str | Path] | str | Path) -> list[Path]:
    """Files as given, directories expanded to their ``*.json`` entries (sorted; hidden
    names skipped), each file once. One path (a ``str`` or ``Path``) is accepted as well
    as an iterable of them. Entries are not opened here: a symlink loop, a dangling
    link, a FIFO or a sub-directory named ``*.json`` is returned like any file and
    :func:`load_result` says what is wrong with it; a directory that cannot be listed
    is returned itself, for the same reason."""
    out: list[Path] = []
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    for raw in paths:
        p = Path(raw)
        if _is_dir(p):
            try:
                with os.scandir(p) as it:
                    names = sorted(e.name for e in it if e.name.endswith(".json") and not e.name.startswith("."))
            except OSError:
                out.append(p)
                continue
            out.extend(p / n for n in names)
        else:
            out.append(p)
    seen: set[str] = set()
    unique = []
    for p in out:  # a file named twice (or via its directory too) is one run, not two
        key = _identity(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def load_results(paths: Iterable[str | Path] | str | Path) -> LoadedResults:
    """Load many result files; a bad file is reported in ``errors`` (one line naming it
    and what is wrong) and skipped, never fatal to the others.

    The cyclic garbage collector is paused while loading: parsed result documents are
    trees (no cycles to collect), and its repeated full passes over the millions of
    new objects cost ~20% of the load time of 1,000 files (bench/store_speed.py).
    """
    import gc

    loaded = LoadedResults()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for p in expand_paths(paths):
            try:
                loaded.runs.append(load_result(p))
            except ResultFileError as e:
                loaded.errors.append(str(e))
    finally:
        if was_enabled:
            gc.enable()
    loaded.runs.sort(key=lambda d: (str(d.get("created") or ""), str(d.get("run_id") or "")))
    return loaded


# ----------------------------------------------------------------------------- querying


def parse_when(text: str, *, end: bool = False) -> datetime:
    """An ISO-8601 date or date-time as an aware UTC datetime (naive = UTC).

    A bare date means the start of that day, or with ``end=True`` the start of the next
    day (so ``until=2026-11-23`` includes the whole of the 23rd). Raises ValueError.
    """
    s = str(text).strip()
    try:
        when = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"not an ISO-8601 date or date-time: {text!r} (e.g. 2026-11-23 or 2026-11-23T08:00:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    if end and len(s) == 10:  # a bare date: include the whole day
        when += timedelta(days=1)
    return when


_CELL_FIELDS = ("workload", "backend", "device", "variant", "mode", "size")


@dataclass(frozen=True)
class ResultFilter:
    """Which runs and cells :func:`query` keeps. Empty = no constraint; several values
    of one field are alternatives (OR); different fields must all hold (AND).

    Run level: ``host`` (environment.host), ``tag``, ``since`` (created >= since) and
    ``until`` (created < until; a bare date includes that whole day), both ISO-8601
    UTC. Cell level: the spec fields, ``batch_size``, ``world_size`` (0: single-process
    cells) and ``status``. A run with no
    cell left after the cell filters is dropped.
    """

    workload: tuple[str, ...] = ()
    backend: tuple[str, ...] = ()
    device: tuple[str, ...] = ()
    variant: tuple[str, ...] = ()
    mode: tuple[str, ...] = ()
    size: tuple[str, ...] = ()
    batch_size: tuple[int, ...] = ()
    # data-parallel workers; 0 selects single-process cells (no world_size in the spec)
    world_size: tuple[int, ...] = ()
    status: tuple[str, ...] = ()
    host: tuple[str, ...] = ()
    tag: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None

    def __post_init__(self) -> None:
        for name in (*_CELL_FIELDS, "status", "host", "tag"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{name} must be a tuple of strings, got {value!r}")
        if not isinstance(self.batch_size, tuple) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in self.batch_size
        ):
            raise ValueError(f"batch_size must be a tuple of integers >= 1, got {self.batch_size!r}")
        if not isinstance(self.world_size, tuple) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in self.world_size
        ):
            raise ValueError(f"world_size must be a tuple of integers >= 0, got {self.world_size!r}")
        bad = [s for s in self.status if s not in STATUSES]
        if bad:
            raise ValueError(f"status {bad[0]!r} is not one of {', '.join(STATUSES)}")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                parse_when(value)

    @property
    def cell_level(self) -> bool:
        """True when some constraint applies to cells (not only to whole runs)."""
        return bool(self.status or self.batch_size or self.world_size or any(getattr(self, f) for f in _CELL_FIELDS))

    def match_run(self, doc: dict[str, Any]) -> bool:
        """Whether the run's header (host, tag, created) passes the run-level filters."""
        if self.host and (doc.get("environment") or {}).get("host") not in self.host:
            return False
        if self.tag and doc.get("tag") not in self.tag:
            return False
        if self.since is not None or self.until is not None:
            created = doc.get("created")
            if not isinstance(created, str):
                return False
            try:
                when = parse_when(created)
            except ValueError:
                return False
            if self.since is not None and when < parse_when(self.since):
                return False
            if self.until is not None and when >= parse_when(self.until, end=True):
                return False
        return True

    def match_cell(self, cell: dict[str, Any]) -> bool:
        """Whether one cell passes the cell-level filters."""
        spec = cell.get("spec") or {}
        for f in _CELL_FIELDS:
            allowed = getattr(self, f)
            if allowed and spec.get(f) not in allowed:
                return False
        if self.batch_size and spec.get("batch_size") not in self.batch_size:
            return False
        if self.world_size and (spec.get("world_size") or 0) not in self.world_size:
            return False
        if self.status and cell.get("status") not in self.status:
            return False
        return True


def query(paths: Iterable[str | Path] | str | Path, flt: ResultFilter | None = None) -> LoadedResults:
    """Load the result files under ``paths`` and keep the runs/cells ``flt`` selects.

    Kept runs are the loaded documents with ``cells`` narrowed to the matching ones
    (the documents are not copied when no cell-level filter applies). Unreadable or
    invalid files are reported in ``errors`` and skipped, as in :func:`load_results`.
    """
    loaded = load_results(paths)
    if flt is None:
        return loaded
    runs = []
    for doc in loaded.runs:
        if not flt.match_run(doc):
            continue
        if flt.cell_level:
            cells = [c for c in doc.get("cells", []) if flt.match_cell(c)]
            if not cells:
                continue
            doc = {**doc, "cells": cells}
        runs.append(doc)
    return LoadedResults(runs=runs, errors=loaded.errors)
