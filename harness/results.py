"""Result store: versioned JSON files under ``results/``.

One file per run, ``<out>/<run_id>.json``. Writes are atomic (temp file in the same
directory, fsync, rename) so a reader never sees half a file, and a new run claims its
file name with ``os.link`` so two runs can never clobber each other. The runner
rewrites the file after every finished cell, so an interrupted or killed run keeps
what it finished (``complete: false``).

Schema history (bump ``SCHEMA_VERSION`` and add a migration for every change):
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
from pathlib import Path
from typing import Any, Callable, Iterable

SCHEMA_VERSION = 1  # see the schema history in the module docstring

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


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _migrate_v0}


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
        doc = json.loads(text)
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


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, directories expanded to their ``*.json`` files (sorted)."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(sorted(q for q in p.glob("*.json") if not q.name.startswith(".")))
        else:
            out.append(p)
    return out


def load_results(paths: Iterable[str | Path]) -> LoadedResults:
    """Load many result files; a bad file is reported in ``errors`` and skipped."""
    loaded = LoadedResults()
    for p in expand_paths(paths):
        try:
            loaded.runs.append(load_result(p))
        except ResultFileError as e:
            loaded.errors.append(str(e))
    loaded.runs.sort(key=lambda d: (d.get("created") or "", d.get("run_id") or ""))
    return loaded
