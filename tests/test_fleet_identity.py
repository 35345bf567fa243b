"""A fleet run's machine target is part of the run's machine identity (no Ray needed)."""

from __future__ import annotations

from harness.analysis.compare import fingerprint, fleet_target
from harness.analysis.procurement import _machine_label


def _doc(target: str | None) -> dict:
    doc = {"environment": {"fingerprint": "abc123", "host": "node1", "cpu": {"model": "EPYC"}, "gpus": []}}
    if target is not None:
        doc["fleet"] = {"target": {"name": target}, "node": {"node_id": "n1"}}
    return doc


def test_targets_on_identical_hardware_stay_apart() -> None:
    a, b, local = _doc("a"), _doc("b"), _doc(None)
    assert fleet_target(a) == "a" and fleet_target(local) is None
    assert len({fingerprint(a), fingerprint(b), fingerprint(local)}) == 3
    assert fingerprint(local) == "abc123"  # a local run keeps its plain fingerprint
    assert _machine_label(a).startswith("target a") and "target" not in _machine_label(local)


def test_sharded_fleet_runs_without_target_are_the_machine_itself() -> None:
    doc = _doc(None)
    doc["fleet"] = {"target": None, "node": {"node_id": "n1"}}
    assert fingerprint(doc) == "abc123"
