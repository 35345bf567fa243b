"""Named baselines for nightly gating: a copy of known-good result files plus a manifest.

Layout (one directory per name, easy to commit to git or to restore with a CI cache)::

    <store>/<name>/manifest.json      when, by whom, on which host, from which files,
                                      run ids, git commits, cell counts, sha256 of each copy
    <store>/<name>/runs/<run_id>.json byte-for-byte copies of the result files

The store is ``--store DIR``, else ``$HARNESS_BASELINE_DIR``, else ``./baselines``. It
deliberately lives outside ``results/`` (git-ignored and often cleaned), so a baseline
survives ``rm -rf results``. Several runs per baseline are the point: ``harness compare``
treats them as repetitions, which is what lets it tell a regression from run-to-run noise.

Setting a baseline is all-or-nothing: every input must load and validate and hold at
least one ``ok`` cell, and the new directory replaces the old one by rename, so a
reader never sees half a baseline.

Everything in a store is untrusted on the way back in (a CI cache or a git checkout
anyone can write to): the manifest is read with the result store's bounds (a regular
file, at most :data:`MAX_MANIFEST_BYTES`, strict JSON, bounded nesting) and its fields
are type-checked; each stored run is read once, as a regular file within
``DLH_MAX_RESULT_BYTES``, and the same bytes are checksummed and parsed, so a FIFO,
a device, a symlink loop or a file swapped between the check and the parse is refused
with one line, never a hang or a traceback. ``baseline set`` copies exactly the bytes
it validated.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from harness import __version__
from harness.errors import UserError
from harness.store.results import (
    ResultFileError,
    expand_paths,
    load_result_and_bytes,
    loads_strict,
    parse_result,
    read_result_bytes,
)

MANIFEST = "manifest.json"
RUNS = "runs"
MANIFEST_FORMAT = 1  # manifest.json layout version
MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # a manifest lists runs (~1 KB each): far below this
DEFAULT_NAME = "default"
DEFAULT_STORE = "baselines"
STORE_ENV = "HARNESS_BASELINE_DIR"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CI_ENV = ("GITHUB_RUN_ID", "GITHUB_SHA", "GITHUB_REF", "GITHUB_REPOSITORY", "CI_PIPELINE_ID", "CI_COMMIT_SHA")


class BaselineError(UserError):
    """A baseline that cannot be set, found or read (one line for the user)."""


def store_dir(store: str | Path | None = None, env: dict[str, str] | None = None) -> Path:
    """The baseline store: ``store`` if given, else ``$HARNESS_BASELINE_DIR``, else ``./baselines``."""
    if store:
        return Path(store)
    environ = os.environ if env is None else env
    return Path(environ.get(STORE_ENV) or DEFAULT_STORE)


def check_name(name: str) -> str:
    """Validate a baseline name (letters, digits, ``.``, ``_``, ``-``; at most 64)."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise BaselineError(
            f"invalid baseline name {name!r}: use letters, digits, '.', '_' or '-' (at most 64, not starting with '.')"
        )
    return name


@dataclass(frozen=True)
class Baseline:
    """A stored baseline: its directory and manifest."""

    name: str
    path: Path
    manifest: dict[str, Any]

    @property
    def runs_dir(self) -> Path:
        return self.path / RUNS

    def run_files(self) -> list[Path]:
        """The stored result files (sorted)."""
        return expand_paths([self.runs_dir]) if self.runs_dir.is_dir() else []


def _git_commit(doc: dict[str, Any]) -> str | None:
    h = doc.get("harness")
    c = h.get("git_commit") if isinstance(h, dict) else None
    return c if isinstance(c, str) and c else None


def _user() -> str | None:
    for var in ("GITHUB_ACTOR", "GITLAB_USER_LOGIN"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except Exception:  # no login name (containers without a passwd entry)
        return None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _realpath(p: Path) -> Path:
    """``p`` with symlinks resolved; never raises on a symlink loop (``Path.resolve``
    does in Python 3.11) or a NUL in the name (then the path as given, absolute)."""
    try:
        return Path(os.path.realpath(p))
    except (OSError, ValueError):
        return Path(os.path.abspath(p))


def set_baseline(sources: Iterable[str | Path], name: str = DEFAULT_NAME, store: str | Path | None = None,
                 note: str | None = None, now: float | None = None, allow_mixed: bool = False) -> Baseline:  # fmt: skip
    """Copy the result files under ``sources`` (files or directories) into the store as
    baseline ``name``, replacing any previous one atomically. Raises BaselineError when
    an input is missing, does not load, has no ``ok`` cell, the same run is given twice,
    or (unless ``allow_mixed``) the runs come from different suites or machines: the
    runs of a baseline are repetitions, and pooling unlike runs would inflate the noise
    estimate that the gate relies on."""
    check_name(name)
    srcs = [Path(s) for s in sources]
    if not srcs:
        raise BaselineError("no result file given")
    for s in srcs:
        if not s.exists():
            raise BaselineError(f"no such result file or directory: {s}")
    files = expand_paths(srcs)
    if not files:
        raise BaselineError(f"no result files (*.json) in {' '.join(map(str, srcs))}")
    runs: list[tuple[Path, dict[str, Any], bytes]] = []
    seen: dict[str, Path] = {}
    for f in files:
        try:
            doc, raw = load_result_and_bytes(f)  # the copy is of exactly these validated bytes
        except ResultFileError as e:
            raise BaselineError(f"refusing to set baseline {name!r}: {e}") from None
        ok = sum(1 for c in doc["cells"] if c.get("status") == "ok")
        if ok == 0:
            raise BaselineError(
                f"refusing to set baseline {name!r}: {f} has no ok cell ({len(doc['cells'])} cells, none measured)"
            )
        rid = str(doc["run_id"])
        if rid in seen:
            raise BaselineError(f"refusing to set baseline {name!r}: run {rid} is given twice ({seen[rid]} and {f})")
        seen[rid] = f
        runs.append((f, doc, raw))
    if not allow_mixed:
        for what, get in (("suites", lambda d: (d.get("suite") or {}).get("name")),
                          ("machines (fingerprints)", lambda d: (d.get("environment") or {}).get("fingerprint"))):
            kinds = sorted({str(get(d)) for _, d, _ in runs})
            if len(kinds) > 1:
                raise BaselineError(
                    f"refusing to set baseline {name!r}: the runs come from different {what} ({', '.join(kinds)}); "
                    "a baseline is repeated runs of one suite on one machine (--allow-mixed to override)")

    root = store_dir(store)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.new-", dir=root))
    except OSError as e:
        raise BaselineError(f"cannot write the baseline store {root}: {e.strerror or e}") from None
    try:
        (tmp / RUNS).mkdir()
        entries = []
        cell_ids: set[str] = set()
        ok_ids: set[str] = set()
        for f, doc, raw in runs:
            stem = _safe_file_name(str(doc["run_id"]))
            target = tmp / RUNS / f"{stem}.json"
            k = 2
            while target.exists():  # run ids that sanitise alike ("r/1", "r-1") never overwrite each other
                target = tmp / RUNS / f"{stem}-{k}.json"
                k += 1
            with open(target, "xb") as out:
                out.write(raw)
            for c in doc["cells"]:
                cid = c.get("id") or json.dumps(c.get("spec"), sort_keys=True)
                cell_ids.add(cid)
                if c.get("status") == "ok":
                    ok_ids.add(cid)
            entries.append({
                "file": f"{RUNS}/{target.name}",
                "source": str(_realpath(f)),
                "sha256": _sha256(raw),
                "run_id": doc["run_id"],
                "created": doc.get("created"),
                "tag": doc.get("tag"),
                "suite": (doc.get("suite") or {}).get("name"),
                "host": (doc.get("environment") or {}).get("host"),
                "fingerprint": (doc.get("environment") or {}).get("fingerprint"),
                "git_commit": _git_commit(doc),
                "git_dirty": (doc.get("harness") or {}).get("git_dirty"),
                "cells": len(doc["cells"]),
                "ok_cells": sum(1 for c in doc["cells"] if c.get("status") == "ok"),
            })  # fmt: skip
        manifest = {
            "manifest_format": MANIFEST_FORMAT,
            "name": name,
            "set_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now if now is not None else time.time())),
            "set_by": _user(),
            "set_on_host": socket.gethostname(),
            "harness_version": __version__,
            "note": note,
            "ci": {k: os.environ[k] for k in _CI_ENV if os.environ.get(k)},
            "sources": [str(s) for s in srcs],
            "runs": entries,
            "git_commits": sorted({e["git_commit"] for e in entries if e["git_commit"]}),
            "cell_count": len(cell_ids),
            "ok_cell_count": len(ok_ids),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        mode = 0o777 & ~_umask()  # mkdtemp makes 0700: a shared store must stay readable
        os.chmod(tmp, mode)
        os.chmod(tmp / RUNS, mode)
        final = root / name
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=root))
            os.replace(final, old / name)
        try:
            os.replace(tmp, final)
        except BaseException:
            if old is not None:  # put the previous baseline back: a failed set changes nothing
                os.replace(old / name, final)
                shutil.rmtree(old, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BaselineError(f"cannot write baseline {name!r} in {root}: {e.strerror or e}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Baseline(name=name, path=final, manifest=manifest)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _safe_file_name(run_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in run_id).lstrip(".") or "run"


_MANIFEST_TEXT = ("name", "set_at", "set_by", "set_on_host", "harness_version", "note")
_ENTRY_TEXT = ("run_id", "created", "tag", "suite", "host", "fingerprint", "git_commit", "source")


def _manifest_problem(m: Any) -> str | None:
    """What makes a parsed manifest unusable (the fields ``baseline show/list`` and
    ``compare --baseline`` read, by type), or None. ``file``/``sha256`` of each run are
    checked by :func:`load_baseline_runs` with their own messages."""
    if not isinstance(m, dict):
        return "not a baseline manifest (top level is not an object)"
    for k in _MANIFEST_TEXT:
        if m.get(k) is not None and not isinstance(m[k], str):
            return f"{k} is not a string"
    for k in ("cell_count", "ok_cell_count", "manifest_format"):
        if m.get(k) is not None and (not isinstance(m[k], int) or isinstance(m[k], bool)):
            return f"{k} is not a whole number"
    for k in ("git_commits", "sources"):
        v = m.get(k)
        if v is not None and (not isinstance(v, list) or not all(isinstance(x, str) for x in v)):
            return f"{k} is not a list of strings"
    if m.get("ci") is not None and not isinstance(m["ci"], dict):
        return "ci is not an object"
    runs = m.get("runs")
    if runs is not None and not isinstance(runs, list):
        return "runs is not a list"
    for i, r in enumerate(runs or []):
        if not isinstance(r, dict):
            return f"runs/{i} is not an object"
        for k in _ENTRY_TEXT:
            if r.get(k) is not None and not isinstance(r[k], str):
                return f"runs/{i}/{k} is not a string"
        for k in ("cells", "ok_cells"):
            if r.get(k) is not None and (not isinstance(r[k], int) or isinstance(r[k], bool)):
                return f"runs/{i}/{k} is not a whole number"
        if r.get("git_dirty") is not None and not isinstance(r["git_dirty"], bool):
            return f"runs/{i}/git_dirty is not true/false"
    return None


def _read_manifest(path: Path) -> dict[str, Any]:
    """The manifest at ``path``, read with the result store's bounds and type-checked.
    ResultFileError (one line naming the file) for anything unusable."""
    m = loads_strict(read_result_bytes(path, MAX_MANIFEST_BYTES), str(path))
    problem = _manifest_problem(m)
    if problem:
        raise ResultFileError(f"{path}: {problem}")
    return m


def get_baseline(name: str = DEFAULT_NAME, store: str | Path | None = None) -> Baseline:
    """The stored baseline ``name``; BaselineError naming how to set one when missing,
    or what is wrong with its manifest."""
    check_name(name)
    root = store_dir(store)
    path = root / name
    mpath = path / MANIFEST
    if not os.path.lexists(mpath):
        known = list_baselines(store)
        hint = f" (known: {', '.join(b.name for b in known)})" if known else ""
        flag = "" if name == DEFAULT_NAME else f" --name {name}"
        raise BaselineError(
            f"no baseline {name!r} in {root}{hint}; set one with: harness baseline set RESULT_FILE_OR_DIR{flag}"
        )
    try:
        manifest = _read_manifest(mpath)
    except ResultFileError as e:
        raise BaselineError(f"baseline {name!r}: unreadable manifest ({e}); set the baseline again") from None
    return Baseline(name=name, path=path, manifest=manifest)


def load_baseline_runs(baseline: Baseline) -> list[dict[str, Any]]:
    """The baseline's result documents. BaselineError when any stored run is missing,
    unreadable or differs from the checksum recorded when it was set: a gate must not
    quietly compare against part of its baseline. Each run is read once (a regular
    file within the size limit): the bytes checksummed are the bytes parsed."""
    entries = baseline.manifest.get("runs")
    if not isinstance(entries, list) or not entries:
        raise BaselineError(f"baseline {baseline.name!r}: its manifest lists no runs; set the baseline again")
    runs_dir = _realpath(baseline.runs_dir)
    stored: list[tuple[Path, bytes]] = []
    for entry in entries:
        entry = entry if isinstance(entry, dict) else {}
        f = _realpath(baseline.path / str(entry.get("file")))
        if f.parent != runs_dir:  # only files of the store's runs/ directory, no path tricks
            raise BaselineError(f"baseline {baseline.name!r}: manifest entry {entry.get('file')!r} is not a file "
                                f"of {runs_dir}; set the baseline again")
        want = entry.get("sha256")
        if not isinstance(want, str) or len(want) != 64:
            raise BaselineError(f"baseline {baseline.name!r}: manifest entry {entry.get('file')!r} has no sha256 "
                                "checksum, so it cannot be verified; set the baseline again")
        try:
            raw = read_result_bytes(f)
        except ResultFileError as e:
            raise BaselineError(f"baseline {baseline.name!r}: stored run is unreadable ({e}); "
                                "set the baseline again") from None
        if _sha256(raw) != want.lower():
            raise BaselineError(f"baseline {baseline.name!r}: stored run {f} changed since the baseline was set "
                                "(sha256 mismatch); set the baseline again")
        stored.append((f, raw))
    # only the manifest's runs are the baseline: anything else in runs/ was not set by
    # `baseline set` (a file dropped in would silently change the gate's verdicts)
    listed = {f for f, _ in stored}
    try:
        names = sorted(os.listdir(runs_dir))
    except OSError:
        names = []
    extra = [str(runs_dir / n) for n in names if _realpath(runs_dir / n) not in listed]
    if extra:
        raise BaselineError(f"baseline {baseline.name!r}: {extra[0]} is in the store but not in its manifest"
                            + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
                            + "; remove it or set the baseline again")
    runs = []
    for f, raw in stored:
        try:
            doc = parse_result(raw, str(f))
        except ResultFileError as e:
            raise BaselineError(f"baseline {baseline.name!r} in {baseline.path} has an unreadable result file: {e}"
                                ) from None  # fmt: skip
        doc["_source"] = str(f)
        runs.append(doc)
    runs.sort(key=lambda d: (str(d.get("created") or ""), str(d.get("run_id") or "")))
    return runs


def list_baselines(store: str | Path | None = None) -> list[Baseline]:
    """Every baseline in the store (sorted by name). A manifest that cannot be used
    (unreadable, not strict JSON, wrongly typed fields) is skipped here; ``baseline
    show --name NAME`` or ``compare --baseline NAME`` says what is wrong with it."""
    root = store_dir(store)
    try:
        names = sorted(os.listdir(root))
    except OSError:  # no store yet (or not a listable directory)
        return []
    out = []
    for n in names:
        d = root / n
        if n.startswith(".") or not os.path.lexists(d / MANIFEST):
            continue
        try:
            manifest = _read_manifest(d / MANIFEST)
        except ResultFileError:
            continue
        out.append(Baseline(name=n, path=d, manifest=manifest))
    return out


def clear_baseline(name: str = DEFAULT_NAME, store: str | Path | None = None) -> Path:
    """Delete baseline ``name`` (even one whose manifest is damaged: clearing is how a
    user recovers from it); returns the removed directory."""
    check_name(name)
    path = store_dir(store) / name
    if not os.path.lexists(path / MANIFEST):
        get_baseline(name, store)  # raises "no baseline ..." with the hint
    try:
        shutil.rmtree(path)
    except OSError as e:
        raise BaselineError(f"cannot remove baseline {name!r} ({path}): {e.strerror or e}") from None
    return path


def cell_table(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per cell over the baseline's runs: id, spec, status counts, median p50 (ms)
    of the ok runs, and the reason of a cell that never ran ok."""
    rows: dict[str, dict[str, Any]] = {}
    for doc in runs:
        for c in doc.get("cells") or []:
            if not isinstance(c, dict):
                continue
            spec = c.get("spec") if isinstance(c.get("spec"), dict) else {}
            cid = c.get("id") if isinstance(c.get("id"), str) and c.get("id") else "/".join(str(v) for v in spec.values())
            row = rows.setdefault(cid, {"id": cid, "spec": c.get("spec"), "statuses": {}, "p50_ms": [], "reason": None})
            st = str(c.get("status"))
            row["statuses"][st] = row["statuses"].get(st, 0) + 1
            m = c.get("metrics") if isinstance(c.get("metrics"), dict) else {}
            lat = m.get("latency_ms") if isinstance(m.get("latency_ms"), dict) else {}
            p50 = lat.get("p50")
            if st == "ok" and isinstance(p50, (int, float)) and not isinstance(p50, bool) and math.isfinite(p50):
                row["p50_ms"].append(float(p50))
            elif st != "ok" and row["reason"] is None:
                row["reason"] = c.get("reason")
    out = []
    for row in rows.values():
        p = sorted(row["p50_ms"])
        row["p50_ms"] = (p[len(p) // 2] if len(p) % 2 else (p[len(p) // 2 - 1] + p[len(p) // 2]) / 2) if p else None
        row["status"] = ", ".join(f"{n}/{len(runs)} {s}" for s, n in sorted(row.pop("statuses").items()))
        out.append(row)
    return out
