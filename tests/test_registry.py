"""Plugin discovery: the entry points are read once per sys.path state, not per name."""

from __future__ import annotations

import sys

import pytest

from harness.core import registry


def _count_scans(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Record each metadata scan (``entry_points`` call) the registry makes."""
    calls: list[dict] = []
    real = registry.entry_points

    def counting(**kw):
        calls.append(kw)
        return real(**kw)

    monkeypatch.setattr(registry, "entry_points", counting)
    return calls


def test_many_name_checks_read_the_entry_points_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # a suite's matrix checks every name it lists; each metadata scan costs ~10 ms, so
    # a 10,000-entry axis took minutes (found by the fuzzer) before the scan was kept
    calls = _count_scans(monkeypatch)
    monkeypatch.setattr(sys, "path", list(sys.path) + ["/nonexistent-dlh-registry-test"])  # a fresh key
    for _ in range(1000):
        registry.check_name("backend", "torch")
    assert len(calls) == 1
    with pytest.raises(registry.UnknownName, match="choose from: .*torch"):
        registry.check_name("backend", "nosuch")
    assert len(calls) == 1


def test_a_changed_sys_path_is_scanned_again(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    calls = _count_scans(monkeypatch)
    monkeypatch.setattr(sys, "path", list(sys.path) + [str(tmp_path)])
    registry.names("workload")
    (tmp_path / "newpkg.dist-info").mkdir()  # like `pip install`: the directory changes
    registry.names("workload")
    assert len(calls) == 2
    monkeypatch.setattr(sys, "path", list(sys.path) + [str(tmp_path / "other")])
    registry.names("workload")
    assert len(calls) == 3
