"""JSON Schema of a result file (schema_version 1) and a validator.

The schema pins the contract other tools rely on (see README "Result format"); fields
not listed are allowed so later issues can add metrics without a version bump when the
change is purely additive.
"""

from __future__ import annotations

from typing import Any

_NUM_OR_NULL = {"type": ["number", "null"]}

LATENCY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["p50", "p90", "p99", "mean", "std", "min", "max", "ci95_low", "ci95_high"],
    "properties": {
        k: {"type": "number"}
        for k in ("p50", "p90", "p99", "mean", "std", "min", "max", "ci95_low", "ci95_high", "iqr")
    },
}

SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["workload", "backend", "device", "variant", "mode", "batch_size", "size"],
    "properties": {
        "workload": {"type": "string"},
        "backend": {"type": "string"},
        "device": {"type": "string"},
        "variant": {"type": "string"},
        "mode": {"enum": ["inference", "training"]},
        "batch_size": {"type": "integer", "minimum": 1},
        "size": {"type": "string"},
    },
}

CELL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["spec", "status", "reason", "metrics", "samples_ms"],
    "properties": {
        "spec": SPEC_SCHEMA,
        "status": {"enum": ["ok", "skipped", "failed"]},
        "reason": {"type": ["string", "null"]},
        "error": {"type": ["object", "null"]},
        "metrics": {"type": "object"},
        "unavailable": {"type": "object", "additionalProperties": {"type": "string"}},
        # element types are checked in plain Python in validation_errors (jsonschema
        # per-item validation of 10^6 samples dominated report build time)
        "samples_ms": {"type": "array"},
    },
    "allOf": [
        {
            "if": {"properties": {"status": {"const": "ok"}}},
            "then": {
                "properties": {
                    "metrics": {
                        "type": "object",
                        "required": ["latency_ms", "throughput_per_s", "peak_host_mem_bytes", "params"],
                        "properties": {
                            "latency_ms": LATENCY_SCHEMA,
                            "throughput_per_s": {"type": "number", "exclusiveMinimum": 0},
                            "peak_host_mem_bytes": {"type": ["integer", "null"]},
                            "params": {"type": "integer", "minimum": 0},
                        },
                    },
                    "samples_ms": {"minItems": 1},
                }
            },
        },
        {
            "if": {"properties": {"status": {"enum": ["skipped", "failed"]}}},
            "then": {"properties": {"reason": {"type": "string", "minLength": 1}}},
        },
    ],
}

RESULT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "dl-harness result",
    "type": "object",
    "required": ["schema_version", "run_id", "environment", "cells", "suite", "harness"],
    "properties": {
        "schema_version": {"type": "integer"},
        "run_id": {"type": "string", "minLength": 1},
        "created": {"type": "string"},
        "complete": {"type": "boolean"},
        "tag": {"type": ["string", "null"]},
        "environment": {"type": "object", "required": ["host", "os", "python", "cpu"]},
        "suite": {"type": "object"},
        "harness": {"type": "object", "required": ["version"]},
        "cells": {"type": "array", "items": CELL_SCHEMA},
    },
}


def validation_errors(doc: dict[str, Any]) -> list[str]:
    """Human-readable schema violations of ``doc`` (empty when valid)."""
    try:
        import jsonschema
    except ImportError:  # minimal fallback: the top-level contract only
        missing = [k for k in RESULT_SCHEMA["required"] if k not in doc]
        return [f"missing top-level key {k!r}" for k in missing]
    validator = jsonschema.Draft202012Validator(RESULT_SCHEMA)
    out = []
    for i, cell in enumerate(doc.get("cells") or []):
        samples = cell.get("samples_ms") if isinstance(cell, dict) else None
        if isinstance(samples, list) and not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in samples
        ):
            out.append(f"cells/{i}/samples_ms: every sample must be a number (ms)")
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
        where = "/".join(str(p) for p in err.absolute_path) or "<top>"
        out.append(f"{where}: {err.message}")
    return out
