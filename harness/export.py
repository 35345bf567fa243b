"""Flatten result documents into tables for pandas: CSV (stdlib) or Parquet (pyarrow).

Two shapes:

* **cells** (default): one row per cell per run. Run columns (``run_id``, ``created``,
  ``tag``, ``host``, ``fingerprint``, ``git_commit``, ...), every spec field (the seven
  standard ones and ``world_size`` are always present, empty where a run has none;
  any other spec field gets its own ``spec.<name>`` column), ``status``, ``reason``,
  the error, ``n_samples``, then every metric flattened with dots in the names
  (``latency_ms.p50``, ``energy.energy_j``, ``quality.accuracy`` -- the same paths
  ``harness compare --metric`` takes), the reason for each unavailable metric in
  ``unavailable.<metric>``, and the ``timing.*`` and ``runtime.*`` fields. Units are
  in the names, as in the result files (``_ms``, ``_bytes``, ``_j``, ``_w``, ``_per_s``).
  Short lists of numbers (e.g. ``throughput_ci95_per_s``) become ``name.0``, ``name.1``;
  other lists and objects are JSON text. A value that was not measured is empty
  (CSV) / null (Parquet), never 0.
* **samples** (``--samples``): one row per raw sample: the run and cell identity columns
  plus ``sample_index``, ``latency_ms`` (the stored ``samples_ms`` value: milliseconds
  per step, averaged over ``iters_per_sample`` steps when the steps were timed in blocks)
  and ``iters_per_sample``.

Columns are the union over all rows, in a stable order (identity first, then metric
columns in first-seen order).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Sequence

SPEC_FIELDS = ("workload", "backend", "device", "variant", "mode", "batch_size", "size", "world_size")
RUN_COLUMNS = ("run_id", "created", "tag", "host", "fingerprint", "git_commit", "git_dirty", "harness_version",
               "suite", "complete")  # fmt: skip
CELL_COLUMNS = ("cell_id", *SPEC_FIELDS)
STATUS_COLUMNS = ("status", "reason", "error_type", "error_message", "started", "duration_s", "n_samples")
# always present so a script can rely on them even when no cell of an export ran ok
CORE_METRICS = tuple(f"latency_ms.{k}" for k in ("p50", "p90", "p99", "mean", "std", "min", "max")) + (
    "throughput_per_s", "peak_host_mem_bytes", "peak_device_mem_bytes", "energy.energy_j", "params", "flops",
)  # fmt: skip
SAMPLE_COLUMNS = ("sample_index", "latency_ms", "iters_per_sample")
_SHORT_LIST = 8  # lists of at most this many numbers become indexed columns
FORMATS = ("csv", "parquet")


class ExportError(Exception):
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
            ips = (cell.get("timing") or {}).get("iters_per_sample")
            for i, x in enumerate(samples):
                row = dict(base)
                row["sample_index"] = i
                row["latency_ms"] = x
                row["iters_per_sample"] = ips
                yield row


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


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)  # shortest round-trip text
    return v


def write_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str], out: IO[str]) -> None:
    """RFC 4180 CSV with a header; empty field = null; booleans as true/false."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([_csv_value(row.get(c)) for c in columns])


_INT_COLUMNS = frozenset(("batch_size", "world_size", "n_samples", "params", "sample_index", "iters_per_sample"))
_BOOL_COLUMNS = frozenset(("git_dirty", "complete"))
_TEXT_COLUMNS = frozenset((*RUN_COLUMNS, "cell_id", *SPEC_FIELDS, *STATUS_COLUMNS)) - _INT_COLUMNS - _BOOL_COLUMNS - {
    "duration_s"}


def _column_type(name: str) -> Any:
    """The fixed Arrow type of a known column (None: decided by its values)."""
    import pyarrow as pa

    if name in _INT_COLUMNS:
        return pa.int64()
    if name in _BOOL_COLUMNS:
        return pa.bool_()
    if name in _TEXT_COLUMNS or name.startswith("unavailable.") or name.endswith(("_reason", ".reason", ".source")):
        return pa.string()
    if name in CORE_METRICS or name == "duration_s":
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
    table = pa.table({c: _arrow_column(c, [r.get(c) for r in rows]) for c in columns})
    try:
        pq.write_table(table, str(path), compression="zstd")
    except OSError as e:  # pyarrow's own errors (ArrowIOError) are OSErrors too
        raise ExportError(f"cannot write {str(path)!r}: {getattr(e, 'strerror', None) or e}") from None


def export(docs: Sequence[dict[str, Any]], fmt: str, output: str | Path | None, samples: bool = False) -> int:
    """Write ``docs`` as ``fmt`` (csv|parquet) to ``output`` (None: stdout, CSV only).
    Returns the number of data rows written."""
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
    except OSError as e:
        raise ExportError(f"cannot write {str(path)!r}: {e.strerror or e}") from None
    return len(rows)
