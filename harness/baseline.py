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
"""

from __future__ import annotations

import getpass
import hashlib
import json
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
from harness.results import ResultFileError, expand_paths, load_result, load_results

MANIFEST = "manifest.json"
RUNS = "runs"
MANIFEST_FORMAT = 1  # manifest.json layout version
DEFAULT_NAME = "default"
DEFAULT_STORE = "baselines"
STORE_ENV = "HARNESS_BASELINE_DIR"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CI_ENV = ("GITHUB_RUN_ID", "GITHUB_SHA", "GITHUB_REF", "GITHUB_REPOSITORY", "CI_PIPELINE_ID", "CI_COMMIT_SHA")


class BaselineError(Exception):
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
    return (doc.get("harness") or {}).get("git_commit")


def _user() -> str | None:
    for var in ("GITHUB_ACTOR", "GITLAB_USER_LOGIN"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except Exception:  # no login name (containers without a passwd entry)
        return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    runs: list[tuple[Path, dict[str, Any]]] = []
    seen: dict[str, Path] = {}
    for f in files:
        try:
            doc = load_result(f)
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
        runs.append((f, doc))
    if not allow_mixed:
        for what, get in (("suites", lambda d: (d.get("suite") or {}).get("name")),
                          ("machines (fingerprints)", lambda d: (d.get("environment") or {}).get("fingerprint"))):
            kinds = sorted({str(get(d)) for _, d in runs})
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
        for f, doc in runs:
            stem = _safe_file_name(str(doc["run_id"]))
            target = tmp / RUNS / f"{stem}.json"
            k = 2
            while target.exists():  # run ids that sanitise alike ("r/1", "r-1") never overwrite each other
                target = tmp / RUNS / f"{stem}-{k}.json"
                k += 1
            shutil.copyfile(f, target)
            for c in doc["cells"]:
                cid = c.get("id") or json.dumps(c.get("spec"), sort_keys=True)
                cell_ids.add(cid)
                if c.get("status") == "ok":
                    ok_ids.add(cid)
            entries.append({
                "file": f"{RUNS}/{target.name}",
                "source": str(f.resolve()),
                "sha256": _sha256(target),
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


def get_baseline(name: str = DEFAULT_NAME, store: str | Path | None = None) -> Baseline:
    """The stored baseline ``name``; BaselineError naming how to set one when missing."""
    check_name(name)
    root = store_dir(store)
    path = root / name
    mpath = path / MANIFEST
    if not mpath.is_file():
        known = list_baselines(store)
        hint = f" (known: {', '.join(b.name for b in known)})" if known else ""
        flag = "" if name == DEFAULT_NAME else f" --name {name}"
        raise BaselineError(
            f"no baseline {name!r} in {root}{hint}; set one with: harness baseline set RESULT_FILE_OR_DIR{flag}"
        )
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BaselineError(f"baseline {name!r}: unreadable manifest {mpath} ({e})") from None
    if not isinstance(manifest, dict):
        raise BaselineError(f"baseline {name!r}: {mpath} is not a baseline manifest")
    return Baseline(name=name, path=path, manifest=manifest)


def load_baseline_runs(baseline: Baseline) -> list[dict[str, Any]]:
    """The baseline's result documents. BaselineError when any stored run is missing,
    unreadable or differs from the checksum recorded when it was set: a gate must not
    quietly compare against part of its baseline."""
    entries = baseline.manifest.get("runs")
    if not isinstance(entries, list) or not entries:
        raise BaselineError(f"baseline {baseline.name!r}: its manifest lists no runs; set the baseline again")
    runs_dir = baseline.runs_dir.resolve()
    files: list[Path] = []
    for entry in entries:
        entry = entry if isinstance(entry, dict) else {}
        f = (baseline.path / str(entry.get("file"))).resolve()
        if f.parent != runs_dir:  # only files of the store's runs/ directory, no path tricks
            raise BaselineError(f"baseline {baseline.name!r}: manifest entry {entry.get('file')!r} is not a file "
                                f"of {runs_dir}; set the baseline again")
        want = entry.get("sha256")
        if not isinstance(want, str) or len(want) != 64:
            raise BaselineError(f"baseline {baseline.name!r}: manifest entry {entry.get('file')!r} has no sha256 "
                                "checksum, so it cannot be verified; set the baseline again")
        try:
            got = _sha256(f)
        except OSError as e:
            raise BaselineError(f"baseline {baseline.name!r}: stored run {f} is unreadable ({e.strerror or e}); "
                                "set the baseline again") from None
        if got != want:
            raise BaselineError(f"baseline {baseline.name!r}: stored run {f} changed since the baseline was set "
                                "(sha256 mismatch); set the baseline again")
        files.append(f)
    # only the manifest's runs are the baseline: anything else in runs/ was not set by
    # `baseline set` (a file dropped in would silently change the gate's verdicts)
    listed = set(files)
    extra = sorted(str(p) for p in (runs_dir.iterdir() if runs_dir.is_dir() else []) if p.resolve() not in listed)
    if extra:
        raise BaselineError(f"baseline {baseline.name!r}: {extra[0]} is in the store but not in its manifest"
                            + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
                            + "; remove it or set the baseline again")
    loaded = load_results(files)
    if loaded.errors or not loaded.runs:
        why = f": {loaded.errors[0]}" if loaded.errors else ""
        raise BaselineError(f"baseline {baseline.name!r} in {baseline.path} has an unreadable result file{why}")
    return loaded.runs


def list_baselines(store: str | Path | None = None) -> list[Baseline]:
    """Every baseline in the store (sorted by name); unreadable manifests are skipped."""
    root = store_dir(store)
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.iterdir()):
        if d.name.startswith(".") or not (d / MANIFEST).is_file():
            continue
        try:
            manifest = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(manifest, dict):
            out.append(Baseline(name=d.name, path=d, manifest=manifest))
    return out


def clear_baseline(name: str = DEFAULT_NAME, store: str | Path | None = None) -> Path:
    """Delete baseline ``name``; returns the removed directory."""
    b = get_baseline(name, store)
    shutil.rmtree(b.path)
    return b.path


def cell_table(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per cell over the baseline's runs: id, spec, status counts, median p50 (ms)
    of the ok runs, and the reason of a cell that never ran ok."""
    rows: dict[str, dict[str, Any]] = {}
    for doc in runs:
        for c in doc.get("cells", []):
            cid = c.get("id") or "/".join(str(v) for v in (c.get("spec") or {}).values())
            row = rows.setdefault(cid, {"id": cid, "spec": c.get("spec"), "statuses": {}, "p50_ms": [], "reason": None})
            st = c.get("status")
            row["statuses"][st] = row["statuses"].get(st, 0) + 1
            p50 = ((c.get("metrics") or {}).get("latency_ms") or {}).get("p50")
            if st == "ok" and isinstance(p50, (int, float)):
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
