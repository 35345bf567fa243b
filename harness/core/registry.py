"""Plugin discovery through entry points — the one discovery path.

Built-ins are declared in our ``pyproject.toml`` under the same groups a user's
package would use, so ``pip install my-workloads`` adds a workload without touching
dl-harness. Lookups of unknown names raise :class:`UnknownName`, whose message lists
the valid choices.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from harness.errors import UserError

GROUPS: dict[str, str] = {
    "workload": "dl_harness.workloads",
    "backend": "dl_harness.backends",
    "variant": "dl_harness.variants",
    "collector": "dl_harness.collectors",
    "report_section": "dl_harness.report_sections",  # harness.reports.api.ReportSection
}


class UnknownName(UserError, ValueError):
    """An unknown plugin name; the message lists the valid ones."""


class PluginLoadError(RuntimeError):
    """A plugin's entry point exists but its code could not be imported."""


def _path_state() -> tuple[tuple[str, int], ...]:
    """sys.path with each entry's modification time: installing or removing a package
    changes its directory's mtime, so a lookup never serves a stale plugin list."""
    state = []
    for p in sys.path:
        try:
            state.append((p, os.stat(p or ".").st_mtime_ns))
        except OSError:
            state.append((p, -1))
    return tuple(state)


_FOUND: dict[tuple[str, tuple[tuple[str, int], ...]], dict[str, EntryPoint]] = {}


def _entry_points(kind: str) -> dict[str, EntryPoint]:
    """The entry points of ``kind`` by name. Reading the installed distributions'
    metadata costs ~10 ms, and a suite checks every name of its matrix (a 10,000-entry
    axis took minutes), so the result is kept while sys.path and its directories are
    unchanged (the key), which a test or a user's ``pip install`` cannot go around."""
    group = GROUPS[kind]
    key = (group, _path_state())
    found = _FOUND.get(key)
    if found is None:
        found = {}
        for ep in entry_points(group=group):
            found.setdefault(ep.name, ep)  # first on sys.path wins, like imports
        if len(_FOUND) > 64:  # sys.path churn: keep the cache small
            _FOUND.clear()
        _FOUND[key] = found
    return dict(found)


def names(kind: str) -> list[str]:
    """Sorted names registered for ``kind`` (workload, backend, variant, collector,
    report_section)."""
    return sorted(_entry_points(kind))


def entry_point_value(kind: str, name: str) -> str:
    """``module:attr`` of a plugin, without importing it."""
    return _ep(kind, name).value


def _ep(kind: str, name: str) -> EntryPoint:
    eps = _entry_points(kind)
    if name not in eps:
        valid = ", ".join(sorted(eps)) or "(none installed)"
        raise UnknownName(f"unknown {kind} {name!r}; choose from: {valid}")
    return eps[name]


def load(kind: str, name: str) -> Any:
    """Import and return the plugin class registered as ``name``."""
    ep = _ep(kind, name)
    try:
        obj = ep.load()
    except Exception as e:  # noqa: BLE001 - report any import failure with context
        raise PluginLoadError(f"{kind} {name!r} ({ep.value}) failed to import: {type(e).__name__}: {e}") from e
    if getattr(obj, "name", None) != name:
        raise PluginLoadError(
            f"{kind} {name!r} ({ep.value}) declares name {getattr(obj, 'name', None)!r}; "
            "the entry-point name and the class's `name` must match"
        )
    return obj


def check_name(kind: str, name: str) -> None:
    """Raise :class:`UnknownName` unless ``name`` is registered (no import)."""
    _ep(kind, name)
