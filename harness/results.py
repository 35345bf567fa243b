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

import json
import os
import secrets
import socket
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

SCHEMA_VERSION = 3  # see the schema history in the module docstring

STATUSES = ("ok", "skipped", "failed")


class ResultFileError(Exception):
    """A result file that cannot be used (unreadable, corrupt, wrong version)."""


def new_run_id(now: float | None = None, host: str | None = None) -> str:
    """A sortable, unique run id: ``YYYYmmddTHHMMSSZ-<host>-<6 hex>``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))
    h = "".join(c if c.isalnum() or c in "-_" else "-" for c in (host or socket.gethostname()))[:32]
    return f"{stamp}-{h or 'host'}-{secrets.token_hex(3)}"


def _atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to a temp file beside ``path`` and return the temp path (synced)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, sort_keys=False, allow_nan=False, default=_json_default) + "\n"


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def claim_path(out_dir: Path, run_id: str, doc: dict[str, Any]) -> tuple[Path, str]:
    """Create ``out_dir/<run_id>.json`` holding ``doc`` without ever replacing an
    existing file; on a name collision a fresh run id is drawn. Returns (path, run_id)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(20):
        path = out_dir / f"{run_id}.json"
        doc["run_id"] = run_id
        tmp = _atomic_write_text(path, dumps(doc))
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
    tmp = _atomic_write_text(path, dumps(doc))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- loading


def _migrate_v0(doc: dict[str, Any]) -> dict[str, Any]:
    for cell in doc.get("cells", []):
        if "samples_ms" not in cell:
            cell["samples_ms"] = cell.pop("samples", [])
        cell.setdefault("unavailable", {})
    doc["schema_version"] = 1
    return doc


def _migrate_v1(doc: dict[str, Any]) -> dict[str, Any]:
    doc["schema_version"] = 2  # v2 only added optional fields and relaxed params
    return doc


def _migrate_v2(doc: dict[str, Any]) -> dict[str, Any]:
    for cell in doc.get("cells", []):
        if not isinstance(cell, dict):
            continue
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
        if nums and wall > 0 and n > 0:
            m["throughput_per_s"] = n * ips * bs * ws / wall
            m["throughput_method"] = "sustained: timed steps x batch / loop wall time (migrated from schema v2)"
        else:
            m["throughput_method"] = "batch/p50 (migrated from schema v2: the timed loop's wall time was not recorded)"
    doc["schema_version"] = 3
    return doc


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _migrate_v0, 1: _migrate_v1, 2: _migrate_v2}


def migrate(doc: dict[str, Any], source: str = "<doc>") -> dict[str, Any]:
    """Bring ``doc`` to ``SCHEMA_VERSION``; refuse files from a newer harness."""
    version = doc.get("schema_version")
    if not isinstance(version, int):
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


def _fast_loads(text: str) -> Any:
    """``json.loads`` with orjson as an optional fast path (~2.5x faster on result files,
    which matters for 1,000-file loads). Any orjson failure (a syntax error, NaN
    literals) falls back to ``json.loads``, so what is accepted and the error messages
    are the standard library's, and so are the values -- except integers below -2^63
    or at/above 2^64, which orjson reads as floats.
    Result files hold none (byte, parameter and FLOP counts are far below 2^63), and a
    per-file scan for long digit runs to rule them out cost more than the parse saves."""
    try:
        import orjson
    except ImportError:
        return json.loads(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def load_result(path: str | Path) -> dict[str, Any]:
    """Load, version-check, migrate and validate one result file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ResultFileError(f"{p}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise ResultFileError(f"{p}: corrupt (not UTF-8 text)") from None
    try:
        doc = _fast_loads(text)
    except json.JSONDecodeError as e:
        raise ResultFileError(f"{p}: corrupt or truncated JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(doc, dict):
        raise ResultFileError(f"{p}: not a dl-harness result (top level is not an object)")
    doc = migrate(doc, str(p))
    from harness.schema import validation_errors

    errors = validation_errors(doc)
    if errors:
        raise ResultFileError(f"{p}: invalid result: {errors[0]}")
    doc.setdefault("_source", str(p))
    return doc


@dataclass
class LoadedResults:
    runs: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # one line per skipped file


def expand_paths(paths: Iterable[str | Path] | str | Path) -> list[Path]:
    """Files as given, directories expanded to their ``*.json`` files (sorted), each file
    once. One path (a ``str`` or ``Path``) is accepted as well as an iterable of them."""
    out: list[Path] = []
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(sorted(q for q in p.glob("*.json") if not q.name.startswith(".")))
        else:
            out.append(p)
    seen: set[Path] = set()
    unique = []
    for p in out:  # a file named twice (or via its directory too) is one run, not two
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def load_results(paths: Iterable[str | Path] | str | Path) -> LoadedResults:
    """Load many result files; a bad file is reported in ``errors`` and skipped.

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
    loaded.runs.sort(key=lambda d: (d.get("created") or "", d.get("run_id") or ""))
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
