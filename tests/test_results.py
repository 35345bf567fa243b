"""Result store: atomic writes, no clobbering, version checks, migrations, corrupt files."""

from __future__ import annotations

import json

import pytest

from harness.store import results
from harness.store.results import ResultFileError, claim_path, load_result, load_results, new_run_id, write_atomic


def _doc(n_cells: int = 0) -> dict:
    return {
        "schema_version": results.SCHEMA_VERSION,
        "run_id": "T1",
        "created": "2026-11-23T00:00:00Z",
        "harness": {"version": "0.1.0"},
        "environment": {"host": "h", "os": {}, "python": "3.11", "cpu": {}},
        "suite": {"name": "t"},
        "cells": [
            {
                "spec": {"workload": "mlp", "backend": "torch", "device": "cpu", "variant": "fp32",
                         "mode": "inference", "batch_size": 1, "size": "tiny"},
                "status": "skipped", "reason": "because", "metrics": {}, "samples_ms": [],
            }
            for _ in range(n_cells)
        ],
    }


def test_run_ids_are_unique_and_sortable():
    ids = {new_run_id(now=0, host="h") for _ in range(200)}
    assert len(ids) == 200
    assert new_run_id(now=0) < new_run_id(now=86400)


def test_claim_never_clobbers_an_existing_run(tmp_path, monkeypatch):
    existing = tmp_path / "R1.json"
    existing.write_text("precious")
    path, run_id = claim_path(tmp_path, "R1", _doc())
    assert existing.read_text() == "precious"
    assert path != existing and run_id != "R1"
    assert json.loads(path.read_text())["run_id"] == run_id
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_write_atomic_replaces_whole_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "r.json"
    write_atomic(p, _doc(1))
    write_atomic(p, _doc(3))
    assert len(json.loads(p.read_text())["cells"]) == 3
    assert [q.name for q in tmp_path.iterdir()] == ["r.json"]


def test_nan_is_refused_rather_than_written(tmp_path):
    d = _doc()
    d["cells"] = [{"metrics": {"x": float("nan")}}]
    with pytest.raises(ValueError):
        write_atomic(tmp_path / "r.json", d)


def test_load_checks_version_and_schema(tmp_path):
    p = tmp_path / "ok.json"
    write_atomic(p, _doc(2))
    assert len(load_result(p)["cells"]) == 2

    newer = _doc()
    newer["schema_version"] = results.SCHEMA_VERSION + 1
    write_atomic(tmp_path / "new.json", newer)
    with pytest.raises(ResultFileError, match="newer than this harness"):
        load_result(tmp_path / "new.json")

    (tmp_path / "notours.json").write_text('{"hello": 1}')
    with pytest.raises(ResultFileError, match="no integer schema_version"):
        load_result(tmp_path / "notours.json")

    bad = _doc(1)
    bad["cells"][0]["status"] = "okay"
    write_atomic(tmp_path / "bad.json", bad)
    with pytest.raises(ResultFileError, match="invalid result"):
        load_result(tmp_path / "bad.json")


def test_ok_cell_needs_metrics_and_samples(tmp_path):
    d = _doc(1)
    d["cells"][0]["status"] = "ok"
    d["cells"][0]["reason"] = None
    write_atomic(tmp_path / "x.json", d)
    with pytest.raises(ResultFileError, match="latency_ms"):
        load_result(tmp_path / "x.json")


def test_v0_files_are_migrated(tmp_path):
    d = _doc(1)
    d["schema_version"] = 0
    cell = d["cells"][0]
    cell["samples"] = cell.pop("samples_ms")
    (tmp_path / "old.json").write_text(json.dumps(d))
    loaded = load_result(tmp_path / "old.json")
    assert loaded["schema_version"] == results.SCHEMA_VERSION
    assert loaded["cells"][0]["samples_ms"] == [] and loaded["cells"][0]["unavailable"] == {}


def test_corrupt_and_truncated_files_are_reported_and_skipped(tmp_path):
    write_atomic(tmp_path / "a.json", _doc(1))
    full = results.dumps(_doc(1))
    (tmp_path / "b.json").write_text(full[: len(full) // 2])  # truncated
    (tmp_path / "c.json").write_bytes(b"\xff\xfe garbage")
    loaded = load_results([tmp_path])
    assert len(loaded.runs) == 1
    assert len(loaded.errors) == 2
    assert any("b.json" in e and "corrupt or truncated" in e for e in loaded.errors)
