"""``harness export``: CSV and Parquet tables read back and checked against the result
files they came from (a real smoke run for the shape, small documents for edge cases)."""

from __future__ import annotations

import csv
import io
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from harness.analysis.export import ExportError, cell_rows, export
from tests.conftest import run_cli
from tests.test_store import make_cell, make_doc, write


def _read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _num(text: str) -> float | None:
    return None if text == "" else float(text)


def test_csv_of_a_real_run_matches_the_result_file(smoke_run: dict[str, Any], tmp_path: Path) -> None:
    assert smoke_run["files"], smoke_run["proc"].stderr
    doc = smoke_run["doc"]
    out = tmp_path / "cells.csv"
    proc = run_cli(["export", "--format", "csv", "-o", str(out), str(smoke_run["out"])])
    assert proc.returncode == 0, proc.stderr
    assert f"exported {len(doc['cells'])} rows" in proc.stderr
    rows = _read_csv(out.read_text())
    assert [r["cell_id"] for r in rows] == [c["id"] for c in doc["cells"]]
    for row, cell in zip(rows, doc["cells"]):
        assert row["run_id"] == doc["run_id"] and row["created"] == doc["created"] and row["tag"] == "e2e"
        assert row["host"] == doc["environment"]["host"]
        assert row["git_commit"] == (doc["harness"].get("git_commit") or "")
        for f in ("workload", "backend", "device", "variant", "mode", "size"):
            assert row[f] == cell["spec"][f]
        assert int(row["batch_size"]) == cell["spec"]["batch_size"] and row["world_size"] == ""
        assert row["status"] == cell["status"] and int(row["n_samples"]) == len(cell["samples_ms"])
        m = cell["metrics"]
        if cell["status"] != "ok":
            continue
        for k in ("p50", "p90", "p99", "mean", "std", "min", "max", "ci95_low", "ci95_high"):
            assert _num(row[f"latency_ms.{k}"]) == m["latency_ms"][k], k  # exact: shortest round-trip text
        assert _num(row["throughput_per_s"]) == m["throughput_per_s"]
        assert int(row["peak_host_mem_bytes"]) == m["peak_host_mem_bytes"] and int(row["params"]) == m["params"]
        assert _num(row["throughput_ci95_per_s.0"]) == m["throughput_ci95_per_s"][0]
        # not measured here: empty, never 0, and the reason in its own column
        assert m["peak_device_mem_bytes"] is None and row["peak_device_mem_bytes"] == ""
        assert row["unavailable.peak_device_mem_bytes"] == cell["unavailable"]["peak_device_mem_bytes"]
        assert row["energy.source"] == m["energy"]["source"]
        if m["energy"]["energy_j"] is None:
            assert row["energy.energy_j"] == "" and row["energy.reason"] == m["energy"]["reason"]
        else:
            assert _num(row["energy.energy_j"]) == m["energy"]["energy_j"]
        assert int(row["timing.iters_per_sample"]) == cell["timing"]["iters_per_sample"]


def test_samples_long_format_is_every_raw_sample_in_order(smoke_run: dict[str, Any]) -> None:
    doc = smoke_run["doc"]
    proc = run_cli(["export", "--samples", "--mode", "training", str(smoke_run["files"][0])])
    assert proc.returncode == 0, proc.stderr
    rows = _read_csv(proc.stdout)
    cells = [c for c in doc["cells"] if c["spec"]["mode"] == "training"]
    assert len(rows) == sum(len(c["samples_ms"]) for c in cells)
    for cell in cells:
        mine = [r for r in rows if r["cell_id"] == cell["id"]]
        assert [float(r["latency_ms"]) for r in mine] == cell["samples_ms"]
        assert [int(r["sample_index"]) for r in mine] == list(range(len(cell["samples_ms"])))
        assert {r["mode"] for r in mine} == {"training"} and {r["run_id"] for r in mine} == {doc["run_id"]}


def _edge_docs() -> list[dict[str, Any]]:
    ddp = make_cell("mlp", "training", 8, world_size=2, precision="tf32")
    odd = make_cell("cnn")
    odd["metrics"]["status"] = "metric named like a column"
    return [
        make_doc("20261101T000000Z-a-000001", "2026-11-01T00:00:00Z", "a", "nightly",
                 cells=[make_cell(), ddp, make_cell("cnn", status="skipped"), make_cell("transformer", status="failed")]),
        make_doc("20261120T000000Z-b-000002", "2026-11-20T00:00:00Z", "b", "pr-7", cells=[odd]),
    ]  # fmt: skip


def test_edge_cases_extra_spec_fields_failures_and_name_clashes() -> None:
    buf = io.StringIO()
    rows = list(cell_rows(_edge_docs()))
    from harness.analysis.export import columns_of, write_csv

    cols = columns_of(rows)
    write_csv(rows, cols, buf)
    back = {(r["run_id"][-1], r["cell_id"]): r for r in _read_csv(buf.getvalue())}
    ddp = back[("1", "mlp/torch/cpu/fp32/training/bs8/tiny")]
    assert ddp["world_size"] == "2" and ddp["spec.precision"] == "tf32"
    assert back[("1", "mlp/torch/cpu/fp32/inference/bs8/tiny")]["world_size"] == ""
    skipped = back[("1", "cnn/torch/cpu/fp32/inference/bs8/tiny")]
    assert skipped["status"] == "skipped" and skipped["reason"] == "skipped because of a test"
    assert skipped["latency_ms.p50"] == "" and skipped["n_samples"] == "0"
    failed = back[("1", "transformer/torch/cpu/fp32/inference/bs8/tiny")]
    assert (failed["error_type"], failed["error_message"]) == ("RuntimeError", "boom")
    odd = back[("2", "cnn/torch/cpu/fp32/inference/bs8/tiny")]
    assert odd["status"] == "ok" and odd["metrics.status"] == "metric named like a column"
    assert cols.index("run_id") == 0 and cols.index("latency_ms.p50") < cols.index("unavailable.energy")


def test_parquet_reads_back_with_types(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    docs = _edge_docs()
    out = tmp_path / "cells.parquet"
    assert export(docs, "parquet", out) == 5
    table = pq.read_table(out)
    types = {f.name: str(f.type) for f in table.schema}
    assert types["latency_ms.p50"] == "double" and types["batch_size"] == "int64"
    assert types["world_size"] == "int64" and types["noisy"] == "bool" and types["reason"] == "string"
    rows = table.to_pylist()
    first = docs[0]["cells"][0]
    assert rows[0]["latency_ms.p50"] == first["metrics"]["latency_ms"]["p50"]
    assert rows[0]["peak_device_mem_bytes"] is None and rows[1]["world_size"] == 2 and rows[0]["world_size"] is None
    assert rows[2]["reason"] == "skipped because of a test"
    samples = tmp_path / "samples.parquet"
    n = export(docs, "parquet", samples, samples=True)
    assert n == sum(len(c["samples_ms"]) for d in docs for c in d["cells"])
    assert pq.read_table(samples).column("latency_ms").to_pylist()[:5] == first["samples_ms"]


def test_missing_pyarrow_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ExportError, match=r"parquet export needs pyarrow: pip install pyarrow==\S+ \(or use --format csv\)"):
        export(_edge_docs(), "parquet", tmp_path / "x.parquet")


def test_cli_filters_and_usage_errors(tmp_path: Path) -> None:
    d = write(tmp_path / "r", _edge_docs())
    proc = run_cli(["export", str(d), "--host", "a", "--status", "ok", "--since", "2026-10-01", "--until", "2026-11-01"])
    assert proc.returncode == 0, proc.stderr
    rows = _read_csv(proc.stdout)
    assert sorted(r["cell_id"] for r in rows) == ["mlp/torch/cpu/fp32/inference/bs8/tiny", "mlp/torch/cpu/fp32/training/bs8/tiny"]
    for args, msg in (
        ([str(d), "--format", "parquet"], "give an output file with -o"),
        ([str(d), "-w", "nope"], "no run/cell matches the filters"),
        ([str(tmp_path / "missing")], "no such result file or directory"),
        ([str(d), "--since", "last week"], "--since: not an ISO-8601 date"),
    ):
        p = run_cli(["export", *args])
        assert p.returncode == 2, (args, p.stderr)
        assert msg in p.stderr and "Traceback" not in p.stderr and p.stderr.count("\n") == 1


def test_relative_since() -> None:
    from harness.commands.export import when

    now = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
    assert when("36h", now) == "2026-11-22T00:00:00Z" and when("2w", now) == "2026-11-09T12:00:00Z"
    assert when("2026-11-01", now) == "2026-11-01" and when(None, now) is None


def test_parquet_column_types_do_not_depend_on_what_an_export_happened_to_hold(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    full = make_doc(run_id="20261101T000000Z-a-000001", tag="nightly")
    sparse = make_doc(run_id="20261102T000000Z-a-000002", tag=None)
    for c in sparse["cells"]:  # nothing measured for these in this run
        c["metrics"].pop("flops", None)
        c["metrics"]["peak_host_mem_bytes"] = None
    schemas = []
    for i, doc in enumerate((full, sparse)):
        out = tmp_path / f"{i}.parquet"
        export([doc], "parquet", out)
        schemas.append(pq.read_schema(out))
    for col in ("flops", "peak_host_mem_bytes", "tag", "params", "batch_size", "latency_ms.p50"):
        assert schemas[0].field(col).type == schemas[1].field(col).type, col
    assert str(schemas[0].field("flops").type) == "double" and str(schemas[1].field("tag").type) == "string"
    assert str(schemas[0].field("params").type) == "int64"


def _contended_and_repeated_docs() -> list[dict[str, Any]]:
    from tests.test_report import make_doc as report_doc
    from tests.test_report import ok_cell, repeated_cell

    cells = [repeated_cell([1.0, 1.3, 1.1], contended={1: 1.7}), ok_cell("cnn", seed=3, n=40)]
    return [report_doc(cells, run_id="20261101T000000Z-a-000001", created="2026-11-01T00:00:00Z")]


def test_units_travel_with_the_export(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    import json

    from harness.analysis.export import column_units

    docs = _contended_and_repeated_docs()
    out = tmp_path / "cells.parquet"
    export(docs, "parquet", out)
    schema = pq.read_schema(out)
    meta = {f.name: f.metadata or {} for f in schema}
    assert meta["latency_ms.p50"][b"unit"] == b"ms" and meta["latency_ms.p50"][b"direction"] == b"lower"
    assert meta["throughput_per_s"][b"unit"] == b"samples/s" and meta["throughput_per_s"][b"direction"] == b"higher"
    assert b"sustained" in meta["throughput_per_s"][b"description"]
    assert meta["flops_analytic"][b"unit"] == b"FLOP" and b"direction" not in meta["flops_analytic"]
    assert meta["throughput_ci95_per_s.0"][b"unit"] == b"samples/s"
    assert meta["cell_id"] == {}  # identity columns have no unit
    units = json.loads(schema.metadata[b"dl_harness.units"])
    assert units["peak_host_mem_bytes"]["unit"] == "bytes" and units["processes"]["unit"] == "count"
    # a CSV file gets a sidecar with the same units
    csv_out = tmp_path / "cells.csv"
    export(docs, "csv", csv_out)
    side = {r["column"]: r for r in _read_csv((tmp_path / "cells.units.csv").read_text())}
    assert side["latency_ms.p50"]["unit"] == "ms" and side["energy.energy_j"]["unit"] == "J"  # a core column
    assert side["throughput_per_s"]["direction"] == "higher" and side["process_p50_max_ms"]["unit"] == "ms"
    assert set(side) == set(column_units(list(_read_csv(csv_out.read_text())[0])))
    # a ratio's unit is "" (no unit), declared metrics only: text and timing columns have none
    units = column_units(["mfu", "quality.accuracy", "metrics.status", "timing.samples", "flops_analytic_ratio"])
    assert set(units) == {"mfu", "quality.accuracy", "flops_analytic_ratio"}
    assert (units["mfu"]["unit"], units["mfu"]["direction"]) == ("", "higher")
    assert (units["flops_analytic_ratio"]["unit"], units["flops_analytic_ratio"]["direction"]) == ("", None)


def test_export_carries_contention_and_repeats(tmp_path: Path) -> None:
    docs = _contended_and_repeated_docs()
    rows = {r["cell_id"]: r for r in cell_rows(docs)}
    rep, one = rows["mlp/torch/cpu/fp32/inference/bs64/small"], rows["cnn/torch/cpu/fp32/inference/bs64/small"]
    assert rep["processes"] == 3 and one["processes"] == 1
    p50s = [r["metrics"]["latency_ms"]["p50"] for r in docs[0]["cells"][0]["repeats"]]
    assert (rep["process_p50_min_ms"], rep["process_p50_max_ms"]) == (min(p50s), max(p50s))
    assert rep["contended"] is True and "process 2 of 3: other processes used 1.7 of 2 cores" in rep["contention"]
    assert one["contended"] is False and one["contention"] is None and one["timing.contention.detected"] is False
    assert rep["throughput_p50_per_s"] == docs[0]["cells"][0]["metrics"]["throughput_p50_per_s"]
    samples = list(export_samples(docs))
    mine = [s for s in samples if s["cell_id"] == rep["cell_id"]]
    assert [s["process"] for s in mine] == [k for k, r in enumerate(docs[0]["cells"][0]["repeats"])
                                            for _ in r["samples_ms"]]
    assert [s["latency_ms"] for s in mine] == docs[0]["cells"][0]["samples_ms"]  # the pooled order
    assert {s["process"] for s in samples if s["cell_id"] == one["cell_id"]} == {None}


def export_samples(docs: list[dict[str, Any]]) -> Any:
    from harness.analysis.export import sample_rows

    return sample_rows(docs)


# ----------------------------------------------------------------------------- CSV injection (OWASP)

_HOSTILE_TEXT = {"=": "=HYPERLINK(\"http://x\",\"y\")", "+": "+cmd|' /C calc'!A0", "-": "-2+3+cmd|' /C calc'!A0",
                 "@": "@SUM(1+1)*cmd|' /C calc'!A0", "\t": "\t=1+2", "\r": "\r=1+2"}  # fmt: skip


def _hostile_docs() -> list[dict[str, Any]]:
    ok = make_cell(samples=[1.0, 1.2, 1.4])
    ok["spec"]["workload"] = _HOSTILE_TEXT["-"]
    ok["spec"]["variant"] = "-"  # the placeholder of imported cells: not a formula, left as is
    ok["metrics"]["delta_ms"] = -0.5  # a negative number stays a number
    ok["metrics"]["=evil"] = 1.0  # a metric name becomes a header cell
    ok["runtime"]["note"] = "boom\r=1+2"  # a CR inside text: a reader splitting the row there sees a formula
    failed = make_cell("cnn", status="failed")
    failed["error"] = {"type": _HOSTILE_TEXT["\t"], "message": _HOSTILE_TEXT["@"]}
    failed["reason"] = _HOSTILE_TEXT["\r"]
    return [make_doc(host=_HOSTILE_TEXT["="], tag=_HOSTILE_TEXT["+"], cells=[ok, failed])]


def test_csv_cells_that_spreadsheets_would_run_are_neutralised(tmp_path: Path) -> None:
    d = write(tmp_path / "r", _hostile_docs())
    out = tmp_path / "cells.csv"
    proc = run_cli(["export", "--format", "csv", "-o", str(out), str(d)])
    assert proc.returncode == 0, proc.stderr
    with out.open(encoding="utf-8", newline="") as f:  # keep CRs as written
        text = f.read()
    rows = _read_csv(text)
    assert len(rows) == 2  # the CR inside a cell did not split a row
    ok, failed = rows
    assert ok["host"] == "'" + _HOSTILE_TEXT["="] and ok["tag"] == "'" + _HOSTILE_TEXT["+"]
    assert ok["workload"] == "'" + _HOSTILE_TEXT["-"] and ok["variant"] == "-"
    assert failed["error_type"] == "'" + _HOSTILE_TEXT["\t"] and failed["error_message"] == "'" + _HOSTILE_TEXT["@"]
    assert failed["reason"] == "'" + _HOSTILE_TEXT["\r"] and ok["runtime.note"] == "boom\r=1+2"
    assert "'=evil" in ok and ok["'=evil"] == "1.0"  # the header cell too
    # every neutralised cell is double-quoted in the file, and no cell starts a formula
    for value in ("'" + v for v in _HOSTILE_TEXT.values()):
        assert '"' + value.replace('"', '""') + '"' in text, value
    assert '"boom\r=1+2"' in text
    for row in rows:
        for v in row.values():
            assert v == "-" or not v or v[0] not in "=+-@\t\r" or _is_number(v), v
    # numbers stay numbers: unquoted, and they parse
    assert _num(ok["delta_ms"]) == -0.5 and ",-0.5," in text.replace("\n", ",")
    assert _num(ok["latency_ms.p50"]) == 1.2 and int(ok["batch_size"]) == 8 and int(ok["n_samples"]) == 3


def _is_number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def test_units_sidecar_and_samples_csv_are_neutralised_too() -> None:
    from harness.analysis.export import write_units_csv

    buf = io.StringIO()
    write_units_csv({"=evil": {"unit": "+u", "direction": "lower", "description": "@d"},
                     "latency_ms.p50": {"unit": "ms", "direction": "lower", "description": "median"}}, buf)  # fmt: skip
    side = _read_csv(buf.getvalue())
    assert (side[0]["column"], side[0]["unit"], side[0]["description"]) == ("'=evil", "'+u", "'@d")
    assert side[1] == {"column": "latency_ms.p50", "unit": "ms", "direction": "lower", "description": "median"}
    buf = io.StringIO()
    export_rows = list(export_samples(_hostile_docs()))
    from harness.analysis.export import columns_of, write_csv

    write_csv(export_rows, columns_of(export_rows, samples=True), buf)
    rows = _read_csv(buf.getvalue())
    assert len(rows) == 3 and {r["host"] for r in rows} == {"'" + _HOSTILE_TEXT["="]}
    assert [float(r["latency_ms"]) for r in rows] == [1.0, 1.2, 1.4]
