"""Plugin discovery through entry points — the one discovery path.

Built-ins are declared in our ``pyproject.toml`` under the same groups a user's
package would use, so ``pip install my-workloads`` adds a workload without touching
dl-harness. Lookups of unknown names raise :class:`UnknownName`, whose message lists
the valid choices.
"""

from __future__ import annotations

import difflib
import os
import re
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
    # model providers: ``-w SCHEME:REF`` (hf:gpt2, custom:file.py:factory, ...) is resolved
    # by the provider registered as SCHEME (harness.api.WorkloadProvider)
    "workload_provider": "dl_harness.workload_providers",
}

#: ``NAME@SIZE`` picks one workload's size preset (``-w hf:gpt2@tiny``), whatever the run's
#: ``--size``; the suffix is a plain preset name.
_SIZE_SUFFIX = re.compile(r"^(?P<base>.+)@(?P<size>[A-Za-z0-9_.-]+)$")


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
        hint = close_matches(name, sorted(eps))
        if kind == "workload":
            schemes = sorted(_entry_points("workload_provider"))
            if schemes:
                valid += f", or a model {' '.join(s + ':NAME' for s in schemes)} (harness list workloads)"
        raise UnknownName(f"unknown {kind} {name!r}; choose from: {valid}{hint}")
    return eps[name]


def split_size(name: str) -> tuple[str, str | None]:
    """``("hf:gpt2", "tiny")`` for ``"hf:gpt2@tiny"``; ``(name, None)`` without a suffix."""
    m = _SIZE_SUFFIX.match(name)
    return (m["base"], m["size"]) if m else (name, None)


def provider_scheme(name: str) -> str | None:
    """The provider scheme of a workload name (``"hf"`` for ``"hf:gpt2"``), or None for a
    plain registered name. A Windows-style drive letter is not a scheme."""
    scheme, sep, rest = name.partition(":")
    if not sep or not rest or not re.fullmatch(r"[a-z][a-z0-9_-]+", scheme):
        return None
    return scheme


def _provider(name: str) -> tuple[Any, str] | None:
    """(provider instance, reference) for a ``SCHEME:REF`` workload name, None for a plain
    name; :class:`UnknownName` for an unknown scheme (listing the installed ones)."""
    scheme = provider_scheme(name)
    if scheme is None:
        return None
    eps = _entry_points("workload_provider")
    if scheme not in eps:
        if name in _entry_points("workload"):  # a registered plain name that contains ':'
            return None
        valid = ", ".join(f"{s}:" for s in sorted(eps)) or "(none installed)"
        raise UnknownName(f"unknown model provider {scheme + ':'!r} in workload {name!r}; choose from: {valid} "
                          f"or a workload name ({', '.join(names('workload'))}){close_matches(scheme, sorted(eps))}")
    return load_provider(scheme), name[len(scheme) + 1:]


def load_provider(scheme: str) -> Any:
    """The workload provider registered as ``scheme`` (an instance)."""
    eps = _entry_points("workload_provider")
    if scheme not in eps:
        raise UnknownName(f"unknown model provider {scheme!r}; choose from: {', '.join(sorted(eps))}")
    ep = eps[scheme]
    try:
        cls = ep.load()
    except Exception as e:  # noqa: BLE001 - report any import failure with context
        raise PluginLoadError(f"workload provider {scheme!r} ({ep.value}) failed to import: "
                              f"{type(e).__name__}: {e}") from e
    return cls()


def close_matches(name: str, choices: list[str], n: int = 3) -> str:
    """``"; did you mean: a, b?"`` for the close matches of ``name`` among ``choices``
    (empty when none is close)."""
    hits = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    return f"; did you mean: {', '.join(hits)}?" if hits else ""


def _workload_class(name: str) -> Any:
    """The workload class of a ``SCHEME:REF`` name from its provider, or None."""
    found = _provider(name)
    if found is None:
        return None
    provider, ref = found
    try:
        cls = provider.workload_class(ref)
    except ValueError as e:  # the provider's "unknown model" (with its close matches)
        raise UnknownName(str(e)) from None
    if getattr(cls, "name", None) != name:
        raise PluginLoadError(f"workload provider {provider.scheme!r} returned a class named "
                              f"{getattr(cls, 'name', None)!r} for {name!r}; the names must match")
    return cls


def load(kind: str, name: str) -> Any:
    """Import and return the plugin class registered as ``name``. A workload name may be
    ``SCHEME:REF`` (resolved by the provider registered as SCHEME) and may end in
    ``@SIZE`` (ignored here: see :func:`split_size`)."""
    if kind == "workload":
        name = split_size(name)[0]
        cls = _workload_class(name)
        if cls is not None:
            return cls
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
    """Raise :class:`UnknownName` unless ``name`` is registered (no import of a plugin;
    a ``SCHEME:REF`` workload is checked by its provider, which imports no framework)."""
    if kind == "workload":
        name = split_size(name)[0]
        found = _provider(name)
        if found is not None:
            provider, ref = found
            try:
                provider.check(ref)
            except ValueError as e:
                raise UnknownName(str(e)) from None
            return
    _ep(kind, name)


def effective_size(wcls: Any, name: str, run_size: str) -> tuple[str, str | None]:
    """The size preset a workload named ``name`` (maybe ``NAME@SIZE``) runs at in a run
    of ``run_size``, and a note when it is not ``run_size``: the ``@SIZE`` suffix wins;
    a run size the workload has no preset of falls back to the workload's own
    ``default_size`` (zoo models: ``full``), so built-in and zoo workloads share a run.
    :class:`UnknownName` (a usage error) when neither applies."""
    base, at = split_size(name)
    presets = list(getattr(wcls, "presets", {}))
    if at is not None:
        if at not in presets:
            raise UnknownName(f"unknown size {at!r} for workload {base!r}; choose from: {', '.join(presets)}"
                              f"{close_matches(at, presets)}")
        return at, (None if at == run_size else f"{base!r} runs at size {at!r} (from {name!r})")
    if run_size in presets:
        return run_size, None
    default = getattr(wcls, "default_size", None)
    if default in presets:
        return default, (f"{base!r} has no {run_size!r} size (sizes: {', '.join(presets)}); it runs at its "
                         f"default size {default!r} (choose one with {base}@SIZE)")
    raise UnknownName(f"unknown size {run_size!r} for workload {base!r}; choose from: {', '.join(presets)}"
                      f"{close_matches(run_size, presets)}")


def variant_not_supported(variant: str, backend: str) -> str:
    """The skip reason for a variant a backend cannot run, naming the ones it can
    (each registered variant's ``supports_backend``; a variant that fails to load is left out)."""
    ok = []
    for name in names("variant"):
        try:
            if load("variant", name)().supports_backend(backend):
                ok.append(name)
        except Exception:  # noqa: BLE001 - a broken plugin is reported where it is used
            continue
    return (f"variant {variant!r} is not supported on backend {backend!r}"
            + (f" (it runs: {', '.join(ok)})" if ok else ""))
