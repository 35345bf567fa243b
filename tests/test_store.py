"""Result store at fleet scale: the compiled schema fast path agrees with jsonschema,
and harness.store.results.query filters runs and cells (the speed target itself lives in
bench/store_speed.py, not here)."""

from __future__ import annotations

import copy
import json
import random
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from harness.store.results import ResultFileError, ResultFilter, load_result, load_results, parse_when, query
from harness.store.schema import RESULT_SCHEMA, _compiled, _Unsupported, compile_schema, validation_errors


def make_cell(workload: str = "mlp", mode: str = "inference", batch_size: int = 8, status: str = "ok",
              samples: list[float] | None = None, **spec_extra: Any) -> dict[str, Any]:  # fmt: skip
    """A schema-valid cell; latency statistics are computed from ``samples``."""
    spec = {"workload": workload, "backend": "torch", "device": "cpu", "variant": "fp32", "mode": mode,
            "batch_size": batch_size, "size": "tiny", **spec_extra}  # fmt: skip
    cid = f"{workload}/torch/cpu/fp32/{mode}/bs{batch_size}/tiny"
    if status != "ok":
        return {"id": cid, "spec": spec, "status": status, "reason": f"{status} because of a test",
                "error": {"type": "RuntimeError", "message": "boom"} if status == "failed" else None,
                "metrics": {}, "unavailable": {}, "samples_ms": []}  # fmt: skip
    xs = sorted(samples or [1.0, 1.1, 1.2, 1.3, 1.4])
    n = len(xs)
    mean = sum(xs) / n
    std = (sum((x - mean) ** 2 for x in xs) / max(n - 1, 1)) ** 0.5
    p50 = xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
    lat = {"n": n, "p50": p50, "p90": xs[int(0.9 * (n - 1))], "p99": xs[-1], "mean": mean, "std": std,
           "min": xs[0], "max": xs[-1], "iqr": 0.1, "ci95_low": xs[0], "ci95_high": xs[-1]}  # fmt: skip
    return {
        "id": cid, "spec": spec, "status": "ok", "reason": None, "error": None,
        "metrics": {"latency_ms": lat, "noisy": False, "throughput_per_s": batch_size / p50 * 1000.0,
                    "throughput_ci95_per_s": [batch_size / xs[-1] * 1000.0, batch_size / xs[0] * 1000.0],
                    "peak_host_mem_bytes": 250_000_000, "peak_device_mem_bytes": None, "params": 3466,
                    "flops": 54272,
                    "energy": {"energy_j": None, "source": "unavailable", "reason": "no RAPL here"}},
        "unavailable": {"peak_device_mem_bytes": "cpu device: host memory", "energy": "no RAPL here"},
        "timing": {"iters_per_sample": 1, "samples": n, "warmup_stable": True},
        "runtime": {"torch": "2.13.0+cpu", "threads": 1},
        "samples_ms": xs,
    }  # fmt: skip


def make_doc(run_id: str = "20261101T000000Z-a-000001", created: str = "2026-11-01T00:00:00Z", host: str = "a",
             tag: str | None = "nightly", cells: list[dict[str, Any]] | None = None,
             commit: str = "c0ffee") -> dict[str, Any]:  # fmt: skip
    """A schema-valid result document."""
    return {
        "schema_version": 1, "run_id": run_id, "created": created, "complete": True, "tag": tag,
        "harness": {"version": "0.1.0", "git_commit": commit, "git_dirty": False},
        "environment": {"host": host, "os": {"system": "Linux"}, "python": "3.11", "cpu": {"model": "test"},
                        "fingerprint": f"fp-{host}"},
        "suite": {"name": "smoke"},
        "cells": cells if cells is not None else [make_cell(), make_cell("cnn", "training", 4)],
    }  # fmt: skip


def write(dirpath: Path, docs: list[dict[str, Any]]) -> Path:
    dirpath.mkdir(parents=True, exist_ok=True)
    for d in docs:
        (dirpath / f"{d['run_id']}.json").write_text(json.dumps(d))
    return dirpath


# ------------------------------------------------------------------ schema fast path


def _jsonschema_valid(doc: Any) -> bool:
    return jsonschema.Draft202012Validator(RESULT_SCHEMA).is_valid(doc)


_JUNK: list[Any] = [None, "", "x", -1, 0, 0.0, 1.5, 2, True, False, [], [1], {}, {"a": 1}, "ok", "training"]


def _paths(x: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(x, dict):
        for k, v in x.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(x, list):
        for i, v in enumerate(x[:3]):
            out += _paths(v, (*prefix, i))
    return out


def test_compiled_schema_accepts_exactly_what_jsonschema_accepts() -> None:
    """Random single mutations (replace a value, delete a key) of a valid document with
    ok, skipped and failed cells: the fast path and jsonschema agree on every one."""
    base = make_doc(cells=[make_cell(world_size=2), make_cell(status="skipped"), make_cell(status="failed")])
    assert validation_errors(base) == [] and _jsonschema_valid(base)
    check = compile_schema(RESULT_SCHEMA)
    rng = random.Random(7)
    paths = [p for p in _paths(base) if p and p[-1] != "samples_ms" and "samples_ms" not in p]
    verdicts = set()
    for _ in range(1500):
        doc = copy.deepcopy(base)
        path = rng.choice(paths)
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        if isinstance(parent, dict) and rng.random() < 0.3:
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(_JUNK))
        expected = _jsonschema_valid(doc)
        assert (check(doc, "") is None) == expected, (path, doc if len(str(doc)) < 2000 else "...")
        assert (validation_errors(doc) == []) == expected, path
        verdicts.add(expected)
    assert verdicts == {True, False}  # the mutations exercised both outcomes


def test_invalid_documents_keep_jsonschema_messages_and_sample_checks() -> None:
    doc = make_doc()
    del doc["cells"][0]["metrics"]["latency_ms"]
    doc["cells"][1]["samples_ms"] = [1.0, True, "fast"]
    errs = validation_errors(doc)
    assert "cells/1/samples_ms: every sample must be a number (ms)" in errs
    assert any(e.startswith("cells/0/metrics") and "'latency_ms' is a required property" in e for e in errs)
    import numpy as np

    ok = make_doc()
    ok["cells"][0]["samples_ms"] = [np.float64(1.0), 2]  # float subclasses are numbers too
    assert validation_errors(ok) == []


def test_unsupported_schema_keyword_falls_back_to_jsonschema() -> None:
    with pytest.raises(_Unsupported):
        compile_schema({"type": "string", "pattern": "^a"})
    assert _compiled({"type": "object", "patternProperties": {"^x": {}}}) is None
    assert compile_schema({"type": ["integer"]})(2.0, "") is None  # JSON Schema: 2.0 is an integer
    assert compile_schema({"type": "integer"})(True, "") is not None  # ... but a boolean is not
    assert compile_schema({"enum": [1]})(True, "") is not None


# ------------------------------------------------------------------ loading and query


@pytest.fixture
def store(tmp_path: Path) -> Path:
    docs = [
        make_doc("20261101T000000Z-a-000001", "2026-11-01T00:00:00Z", "a", "nightly"),
        make_doc("20261115T120000Z-b-000002", "2026-11-15T12:00:00Z", "b", "nightly",
                 cells=[make_cell("transformer"), make_cell("mlp", batch_size=64), make_cell("cnn", status="skipped")]),
        make_doc("20261123T235959Z-a-000003", "2026-11-23T23:59:59Z", "a", "pr-12"),
    ]  # fmt: skip
    d = write(tmp_path / "results", docs)
    (d / "corrupt.json").write_text('{"schema_version": 1, "run_id": ')
    return d


def test_query_filters_runs_and_cells(store: Path) -> None:
    def ids(flt: ResultFilter) -> list[tuple[str, list[str]]]:
        res = query([store], flt)
        assert len(res.errors) == 1 and "corrupt.json" in res.errors[0]  # reported, skipped
        return [(d["run_id"][-1], [c["spec"]["workload"] for c in d["cells"]]) for d in res.runs]

    assert ids(ResultFilter()) == [("1", ["mlp", "cnn"]), ("2", ["transformer", "mlp", "cnn"]), ("3", ["mlp", "cnn"])]
    assert ids(ResultFilter(workload=("mlp",))) == [("1", ["mlp"]), ("2", ["mlp"]), ("3", ["mlp"])]
    assert ids(ResultFilter(workload=("transformer",))) == [("2", ["transformer"])]  # runs without a match dropped
    assert ids(ResultFilter(host=("a",))) == [("1", ["mlp", "cnn"]), ("3", ["mlp", "cnn"])]
    assert [r for r, _ in ids(ResultFilter(tag=("pr-12", "other")))] == ["3"]
    assert [r for r, _ in ids(ResultFilter(since="2026-11-15T12:00:00Z"))] == ["2", "3"]  # inclusive
    assert [r for r, _ in ids(ResultFilter(until="2026-11-15"))] == ["1", "2"]  # a bare date: the whole day
    assert [r for r, _ in ids(ResultFilter(until="2026-11-15T12:00:00Z"))] == ["1"]  # exclusive
    assert ids(ResultFilter(status=("skipped",))) == [("2", ["cnn"])]
    assert ids(ResultFilter(batch_size=(64,), host=("b",))) == [("2", ["mlp"])]
    assert ids(ResultFilter(workload=("mlp",), mode=("training",))) == []


def test_query_does_not_mutate_loaded_documents(store: Path) -> None:
    res = query([store], ResultFilter(workload=("mlp",)))
    assert all(len(d["cells"]) == 1 for d in res.runs)
    again = load_results([store])
    assert [len(d["cells"]) for d in again.runs] == [2, 3, 2]


def test_filter_validates_its_fields() -> None:
    for bad in ({"workload": "mlp"}, {"status": ("done",)}, {"since": "last tuesday"}, {"batch_size": (0,)},
                {"host": (1,)}):  # fmt: skip
        with pytest.raises(ValueError):
            ResultFilter(**bad)
    assert parse_when("2026-11-23").isoformat() == "2026-11-23T00:00:00+00:00"
    assert parse_when("2026-11-23", end=True).isoformat() == "2026-11-24T00:00:00+00:00"
    assert parse_when("2026-11-23T10:00:00+02:00") == parse_when("2026-11-23T08:00:00Z")


def test_load_still_reports_schema_errors(tmp_path: Path) -> None:
    doc = make_doc()
    doc["cells"][0]["status"] = "done"
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(ResultFileError, match=r"bad.json: invalid result: cells/0/status"):
        load_result(p)
    import gc

    assert gc.isenabled()
    res = load_results([p])
    assert res.runs == [] and len(res.errors) == 1 and gc.isenabled()  # the collector is back on


@pytest.mark.parametrize("orjson_installed", [True, False])
def test_fast_json_parse_matches_the_standard_library(orjson_installed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.store.results import _fast_loads

    if not orjson_installed:
        monkeypatch.setitem(sys.modules, "orjson", None)  # as if not installed
    texts = ['{"a": 1, "a": 2}', "[NaN, Infinity]", f"[{2**63 - 1}, {2**64 - 1}, {-(2**63)}]", "[0.1, 1e-310, 2.5e300]",
             '{"s": "\\u00e9\\ud83d\\ude00"}', "[1.0, -0.0, 17]"]  # fmt: skip
    for text in texts:
        got, want = _fast_loads(text), json.loads(text)
        assert json.dumps(got) == json.dumps(want) and [type(x) for x in got] == [type(x) for x in want], text
    with pytest.raises(json.JSONDecodeError) as err:
        _fast_loads('{"a": [1, 2')
    with pytest.raises(json.JSONDecodeError) as ref:
        json.loads('{"a": [1, 2')
    assert (err.value.msg, err.value.lineno) == (ref.value.msg, ref.value.lineno)


def test_an_edited_schema_is_recompiled(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.store.schema import SPEC_SCHEMA

    doc = make_doc()
    assert validation_errors(doc) == []
    monkeypatch.setitem(SPEC_SCHEMA["properties"], "size", {"enum": ["small", "base"]})
    assert any("cells/0/spec/size" in e for e in validation_errors(doc))


def test_world_size_filter_selects_data_parallel_or_single_process_cells(tmp_path: Path) -> None:
    single = make_cell("mlp", "training", 8)
    dp = make_cell("mlp", "training", 8)
    dp["spec"] = {**dp["spec"], "world_size": 2}
    d = write(tmp_path / "r", [make_doc(cells=[single, dp])])
    ws = lambda *n: [c["spec"].get("world_size") for r in query([d], ResultFilter(world_size=n)).runs  # noqa: E731
                     for c in r["cells"]]
    assert ws(2) == [2]
    assert ws(0) == [None]  # 0: cells without world_size
    assert ws(0, 2) == [None, 2]
    with pytest.raises(ValueError):
        ResultFilter(world_size=(-1,))


def test_query_and_load_accept_one_path(tmp_path: Path) -> None:
    d = write(tmp_path / "r", [make_doc()])
    for one in (str(d), d):
        res = query(one, ResultFilter(workload=("mlp",)))
        assert [len(r["cells"]) for r in res.runs] == [1] and res.errors == []
        assert len(load_results(one).runs) == 1


def test_a_file_given_twice_is_loaded_once(tmp_path: Path) -> None:
    d = write(tmp_path / "r", [make_doc()])
    f = next(d.glob("*.json"))
    assert len(load_results([d, f, str(f)]).runs) == 1
