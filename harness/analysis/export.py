"""Flatten result documents into tables for pandas: CSV (stdlib) or Parquet (pyarrow).

Two shapes:

* **cells** (default): one row per cell per run. Run columns (``run_id``, ``created``,
  ``tag``, ``host``, ``fingerprint``, ``git_commit``, ...), every spec field (the seven
  standard ones and ``world_size`` are always present, empty where a run has none;
  any other spec field gets its own ``spec.<name>`` column), ``status``, ``reason``,
  the error, ``n_samples``, then every metric flattened with dots in the names
  (``latency_ms.p50``, ``energy.energy_j``, ``quality.accuracy`` -- the same paths
  ``harness compare --metric`` takes), the reason for each unavailable metric in
  ``unavailable.<metric>``, and the ``timing.*`` (including ``timing.contention.*``)
  and ``runtime.*`` fields (precision settings, thread policy). ``processes`` is the
  number of worker processes the cell was measured in (``run --repeats``; 1 without),
  ``process_p50_min_ms``/``process_p50_max_ms`` the spread of their medians (the
  run-to-run noise), ``contended`` is true when any of them was measured while other
  processes competed for the machine, with the evidence in ``contention``.
  ``throughput_per_s`` is sustained throughput (samples processed in the timed loop /
  its wall time); ``throughput_p50_per_s`` is batch / median latency.
  Short lists of numbers (e.g. ``throughput_ci95_per_s``) become ``name.0``, ``name.1``;
  other lists and objects are JSON text. A value that was not measured is empty
  (CSV) / null (Parquet), never 0.
* **samples** (``--samples``): one row per raw sample: the run and cell identity columns
  plus ``sample_index``, ``latency_ms`` (the stored ``samples_ms`` value: milliseconds
  per step, averaged over ``iters_per_sample`` steps when the steps were timed in blocks),
  ``iters_per_sample`` and ``process`` (the worker process of a ``--repeats`` cell, 0-based;
  empty without repeats).

Units come from the declared metric table (:mod:`harness.core.metrics`), not from names:
Parquet carries each column's unit, direction and description as field metadata
(``unit``, ``direction``, ``description``) and the whole map as the schema metadata
``dl_harness.units`` (JSON); a CSV written to a file gets a sidecar
``<name>.units.csv`` (column, unit, direction, description). ``""`` is a dimensionless
ratio; columns without an entry (identity, text, timing details) have no declared unit.

Columns are the union over all rows, in a stable order (identity first, then metric
columns in first-seen order).

CSV injection (OWASP): text read from a result file (a workload or host name, an error
message, a metric's name in the header) is untrusted, and a spreadsheet runs a cell
that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return as a formula. In
CSV (cells and the units sidecar, header included) such a *text* cell is written with a
leading ``'`` and always double-quoted (``"'=1+2"``), so it shows as text; text with a
CR anywhere is quoted too (``csv.writer`` leaves a bare CR unquoted, and a reader that
splits the row there would see a new line that may start with a formula). Numbers are
never changed (``-0.5`` stays a number), and neither is a cell that is exactly ``-``
(the variant/size placeholder of imported pytest-benchmark cells; it cannot form a
formula). Parquet is not opened by spreadsheets and keeps text as stored.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Mapping, Sequence

from harness.core import metrics as M
from harness.errors import UserError
from harness.analysis.history import contention_note, repeats

SPEC_FIELDS = ("workload", "backend", "device", "variant", "mode", "batch_size", "size", "world_size")
RUN_COLUMNS = ("run_id", "created", "tag", "host", "fingerprint", "git_commit", "git_dirty", "harness_version",
               "suite", "complete")  # fmt: skip
CELL_COLUMNS = ("cell_id", *SPEC_FIELDS)
STATUS_COLUMNS = ("status", "reason", "error_type", "error_message", "started", "duration_s", "n_samples",
                  "processes", "process_p50_min_ms", "process_p50_max_ms", "contended", "contention")
# always present so a script can rely on them even when no cell of an export ran ok
CORE_METRICS = tuple(f"latency_ms.{k}" for k in ("p50", "p90", "p99", "mean", "std", "min", "max")) + (
    "throughput_per_s", "peak_host_mem_bytes", "peak_device_mem_bytes", "energy.energy_j", "params", "flops",
)  # fmt: skip
SAMPLE_COLUMNS = ("sample_index", "latency_ms", "iters_per_sample", "process")
# units of the columns this module makes (the metric columns take theirs from harness.core.metrics)
_OWN_UNITS = {
    "duration_s": ("s", None, "wall time of the cell, all processes"),
    "n_samples": ("count", None, "raw latency samples stored"),
    "processes": ("count", None, "worker processes the cell was measured in (run --repeats)"),
    "process_p50_min_ms": ("ms", None, "smallest per-process median latency (run-to-run spread)"),
    "process_p50_max_ms": ("ms", None, "largest per-process median latency (run-to-run spread)"),
}
_SHORT_LIST = 8  # lists of at most this many numbers become indexed columns
FORMATS = ("csv", "parquet")


class ExportError(UserError):
    """An export that cannot be written (one line for the user)."""


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        if not value:
            return
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list):
        if len(value) <= _SHORT_LIST and all(v is None or isinstance(v, (int, float)) for v in value):
            for i, v in enumerate(value):
                out[f"{prefix}.{i}"] = v
        else:
            out[prefix] = json.dumps(value, separators=(",", ":"))
    else:
        out[prefix] = value


def run_columns(doc: dict[str, Any]) -> dict[str, Any]:
    """The run-level identity columns of one result document."""
    env = doc.get("environment") or {}
    h = doc.get("harness") or {}
    return {
        "run_id": doc.get("run_id"),
        "created": doc.get("created"),
        "tag": doc.get("tag"),
        "host": env.get("host"),
        "fingerprint": env.get("fingerprint"),
        "git_commit": h.get("git_commit"),
        "git_dirty": h.get("git_dirty"),
        "harness_version": h.get("version"),
        "suite": (doc.get("suite") or {}).get("name"),
        "complete": doc.get("complete"),
    }


def _cell_identity(cell: dict[str, Any]) -> dict[str, Any]:
    spec = cell.get("spec") or {}
    row: dict[str, Any] = {"cell_id": cell.get("id")}
    for f in SPEC_FIELDS:
        row[f] = spec.get(f)
    for k, v in spec.items():
        if k not in SPEC_FIELDS:
            row[f"spec.{k}"] = v if not isinstance(v, (dict, list)) else json.dumps(v, separators=(",", ":"))
    return row


def _process_p50s(cell: Mapping[str, Any]) -> list[float]:
    """The median latency (ms) of each ok worker process of a ``--repeats`` cell."""
    out = []
    for r in repeats(cell):
        if r.get("status", "ok") != "ok":
            continue
        lat = (r.get("metrics") or {}).get("latency_ms") if isinstance(r.get("metrics"), Mapping) else None
        p50 = lat.get("p50") if isinstance(lat, Mapping) else None
        if isinstance(p50, (int, float)) and not isinstance(p50, bool):
            out.append(float(p50))
    return out


def cell_rows(docs: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """One flat row per cell per run (see the module docstring for the columns)."""
    for doc in docs:
        head = run_columns(doc)
        for cell in doc.get("cells") or []:
            row = dict(head)
            row.update(_cell_identity(cell))
            err = cell.get("error") or {}
            row.update({
                "status": cell.get("status"),
                "reason": cell.get("reason"),
                "error_type": err.get("type") if isinstance(err, dict) else None,
                "error_message": err.get("message") if isinstance(err, dict) else None,
                "started": cell.get("started"),
                "duration_s": cell.get("duration_s"),
                "n_samples": len(cell.get("samples_ms") or []),
            })  # fmt: skip
            p50s = _process_p50s(cell)
            note = contention_note(cell) if cell.get("status") == "ok" else None
            row.update({
                "processes": len(repeats(cell)) or (1 if cell.get("status") == "ok" else None),
                "process_p50_min_ms": min(p50s) if p50s else None,
                "process_p50_max_ms": max(p50s) if p50s else None,
                "contended": note is not None if cell.get("status") == "ok" else None,
                "contention": note,
            })  # fmt: skip
            flat: dict[str, Any] = {}
            _flatten("", cell.get("metrics") or {}, flat)
            for k, v in flat.items():  # a metric named like an identity column keeps a prefix
                row[f"metrics.{k}" if k in row else k] = v
            for metric, why in (cell.get("unavailable") or {}).items():
                row[f"unavailable.{metric}"] = why
            _flatten("timing", cell.get("timing") or {}, row)
            _flatten("runtime", cell.get("runtime") or {}, row)
            yield row


def sample_rows(docs: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """One row per raw latency sample (long format), with run and cell identity."""
    for doc in docs:
        head = run_columns(doc)
        for cell in doc.get("cells") or []:
            samples = cell.get("samples_ms") or []
            if not samples:
                continue
            base = dict(head)
            base.update(_cell_identity(cell))
            base["status"] = cell.get("status")
            reps = [r for r in repeats(cell) if r.get("samples_ms") and r.get("status", "ok") == "ok"]
            # with repeats: each process's own samples, labelled, instead of the pooled list
            parts = ([(r.get("index", k), r) for k, r in enumerate(reps)] if reps else [(None, cell)])
            i = 0
            for process, rec in parts:
                ips = (rec.get("timing") or {}).get("iters_per_sample")
                for x in rec.get("samples_ms") or []:
                    row = dict(base)
                    row["sample_index"] = i
                    row["latency_ms"] = x
                    row["iters_per_sample"] = ips
                    row["process"] = process
                    yield row
                    i += 1


def columns_of(rows: Sequence[dict[str, Any]], samples: bool = False) -> list[str]:
    """Stable column order: identity, status, core metrics, then the rest as first seen."""
    fixed = [*RUN_COLUMNS, *CELL_COLUMNS]
    fixed += ["status", *SAMPLE_COLUMNS] if samples else [*STATUS_COLUMNS, *CORE_METRICS]
    seen = dict.fromkeys(fixed)
    spec_extra: dict[str, None] = {}
    rest: dict[str, None] = {}
    unavailable: dict[str, None] = {}
    for row in rows:
        for k in row:
            if k in seen:
                continue
            if k.startswith("spec."):
                spec_extra[k] = None
            elif k.startswith("unavailable."):
                unavailable[k] = None
            else:
                rest[k] = None
    cols = [*RUN_COLUMNS, *CELL_COLUMNS, *spec_extra]
    cols += ["status", *SAMPLE_COLUMNS] if samples else [*STATUS_COLUMNS, *CORE_METRICS]
    timing_runtime = [k for k in rest if k.startswith(("timing.", "runtime."))]
    metrics = [k for k in rest if not k.startswith(("timing.", "runtime."))]
    return cols + metrics + list(unavailable) + timing_runtime


def column_units(columns: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{column: {"unit", "direction", "description"}}`` for every column with a declared
    unit: metric columns from :mod:`harness.core.metrics` (``metrics.<path>`` and indexed
    ``<path>.0`` columns included), ``latency_ms`` of the samples table, and the columns
    this module computes. Other columns (identity, text, timing details) are left out."""
    out: dict[str, dict[str, Any]] = {}
    for col in columns:
        if col in _OWN_UNITS:
            unit, direction, desc = _OWN_UNITS[col]
            out[col] = {"unit": unit, "direction": direction, "description": desc}
            continue
        path = col[len("metrics."):] if col.startswith("metrics.") else col
        m = M.TABLE.get(path)
        if m is None and "." in path and path.rsplit(".", 1)[1].isdigit():  # name.0, name.1 of an interval
            m = M.TABLE.get(path.rsplit(".", 1)[0])
        if m is not None:
            out[col] = {"unit": m.unit, "direction": m.direction, "description": m.description}
    return out


def write_units_csv(units: Mapping[str, Mapping[str, Any]], out: IO[str]) -> None:
    """The units sidecar of a CSV export: column, unit, direction, description (text
    cells neutralised like :func:`write_csv`: column names come from result files)."""
    rows = [{"column": col, "unit": u.get("unit") or "", "direction": u.get("direction") or "",
             "description": u.get("description") or ""} for col, u in units.items()]  # fmt: skip
    write_csv(rows, ("column", "unit", "direction", "description"), out)


def units_path(output: Path) -> Path:
    """Where the units sidecar of the CSV ``output`` goes: ``cells.csv`` -> ``cells.units.csv``."""
    return output.with_name((output.stem if output.suffix else output.name) + ".units.csv")


FORMULA_STARTS = frozenset("=+-@\t\r")  # OWASP CSV injection: a spreadsheet runs such a cell


class _Quoted(str):
    """A text cell that must be written double-quoted (``csv.writer`` leaves a bare CR
    unquoted when the line terminator is LF, and a reader may split the row there)."""


class _Neutralised(_Quoted):
    """A text cell prefixed with ``'`` so that spreadsheets show it as text; always quoted."""


def neutralise(text: str) -> str:
    """``text`` as a spreadsheet-safe CSV cell: a leading ``'`` when it starts with
    ``= + - @``, tab or CR (the OWASP rule), except the lone placeholder ``-``; text
    holding a CR anywhere is quoted (a row split there could start with a formula)."""
    if text[:1] in FORMULA_STARTS and text != "-":
        return _Neutralised("'" + text)
    if "\r" in text:
        return _Quoted(text)
    return text


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)  # shortest round-trip text; a number, never neutralised
    if isinstance(v, str):
        return neutralise(v)
    return v


_QUOTE_IF = re.compile(r'[",\r\n]')


def _csv_field(v: Any) -> str:
    """One field as ``csv.QUOTE_MINIMAL`` writes it, but a :class:`_Quoted` cell (and any
    text with CR or LF) always quoted."""
    s = str(v)
    if isinstance(v, _Quoted) or _QUOTE_IF.search(s):
        return '"' + s.replace('"', '""') + '"'
    return s


def write_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str], out: IO[str]) -> None:
    """RFC 4180 CSV with a header; empty field = null; booleans as true/false; text that
    a spreadsheet would run as a formula neutralised (module docstring)."""
    w = csv.writer(out, lineterminator="\n")

    def put(values: list[Any]) -> None:
        if any(isinstance(x, _Quoted) for x in values):  # rare: hostile text; quote it ourselves
            out.write(",".join(map(_csv_field, values)) + "\n")
        else:
            w.writerow(values)

    put([_csv_value(c) for c in columns])
    for row in rows:
        put([_csv_value(row.get(c)) for c in columns])


_INT_COLUMNS = frozenset(("batch_size", "world_size", "n_samples", "params", "sample_index", "iters_per_sample",
                          "processes", "process"))  # fmt: skip
_BOOL_COLUMNS = frozenset(("git_dirty", "complete", "contended"))
_TEXT_COLUMNS = frozenset((*RUN_COLUMNS, "cell_id", *SPEC_FIELDS, *STATUS_COLUMNS)) - _INT_COLUMNS - _BOOL_COLUMNS - {
    "duration_s", "process_p50_min_ms", "process_p50_max_ms"}


def _column_type(name: str) -> Any:
    """The fixed Arrow type of a known column (None: decided by its values)."""
    import pyarrow as pa

    if name in _INT_COLUMNS:
        return pa.int64()
    if name in _BOOL_COLUMNS:
        return pa.bool_()
    if name in _TEXT_COLUMNS or name.startswith("unavailable.") or name.endswith(("_reason", ".reason", ".source")):
        return pa.string()
    if name in CORE_METRICS or name in ("duration_s", "process_p50_min_ms", "process_p50_max_ms"):
        return pa.float64()
    return None


def _arrow_column(name: str, values: list[Any]) -> Any:
    """A pyarrow array with one clean type per column (numbers never become text). Known
    columns have a fixed type; other numeric columns are float64 even when every value
    is whole, and a column with no value at all is float64, so exports from different
    days concatenate (a pyarrow dataset cannot merge int64 with double)."""
    import pyarrow as pa

    kinds = {type(v) for v in values if v is not None}
    fixed = _column_type(name)
    if fixed is not None and (not kinds or (fixed == pa.string() and kinds == {str})
                              or (fixed == pa.int64() and kinds == {int})
                              or (fixed == pa.bool_() and kinds == {bool})):
        return pa.array(values, type=fixed)
    if not kinds:  # never measured in this export: a number column unless known otherwise
        return pa.array(values, type=pa.float64())
    if kinds == {bool}:
        return pa.array(values, type=pa.bool_())
    if kinds <= {int, float}:  # float64 even when every value is whole: stable across exports
        return pa.array([None if v is None else float(v) for v in values], type=pa.float64())
    if kinds == {str}:
        return pa.array(values, type=pa.string())
    return pa.array([None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in values],
                    type=pa.string())  # fmt: skip


def write_parquet(rows: Sequence[dict[str, Any]], columns: Sequence[str], path: Path) -> None:
    """Parquet (zstd) through pyarrow; ExportError with the install line when it is missing."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ExportError(
            "parquet export needs pyarrow: pip install pyarrow==26.0.1 (or use --format csv)"
        ) from None
    units = column_units(columns)
    fields, arrays = [], []
    for c in columns:
        arr = _arrow_column(c, [r.get(c) for r in rows])
        u = units.get(c)
        meta = {k: str(v) for k, v in u.items() if v is not None} if u else None
        fields.append(pa.field(c, arr.type, metadata=meta))
        arrays.append(arr)
    schema = pa.schema(fields, metadata={"dl_harness.units": json.dumps(units, separators=(",", ":"))})
    table = pa.Table.from_arrays(arrays, schema=schema)
    try:
        pq.write_table(table, str(path), compression="zstd")
    except OSError as e:  # pyarrow's own errors (ArrowIOError) are OSErrors too
        raise ExportError(f"cannot write {str(path)!r}: {getattr(e, 'strerror', None) or e}") from None


def export(docs: Sequence[dict[str, Any]], fmt: str, output: str | Path | None, samples: bool = False) -> int:
    """Write ``docs`` as ``fmt`` (csv|parquet) to ``output`` (None: stdout, CSV only).
    A CSV file gets its units sidecar beside it (:func:`units_path`); Parquet carries
    the units in its schema. Returns the number of data rows written."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    rows = list(sample_rows(docs) if samples else cell_rows(docs))
    columns = columns_of(rows, samples=samples)
    if fmt == "parquet":
        if output is None or str(output) == "-":
            raise ExportError("parquet is binary: give an output file with -o FILE.parquet")
        write_parquet(rows, columns, Path(output))
        return len(rows)
    if output is None or str(output) == "-":
        write_csv(rows, columns, sys.stdout)
        return len(rows)
    path = Path(output)
    try:
        with path.open("w", encoding="utf-8", newline="") as f:
            write_csv(rows, columns, f)
        with units_path(path).open("w", encoding="utf-8", newline="") as f:
            write_units_csv(column_units(columns), f)
    except OSError as e:
        raise ExportError(f"cannot write {str(path)!r}: {e.strerror or e}") from None
    return len(rows)
