"""JSON Schema of a result file (schema_version 3) and a validator.

The schema pins the contract other tools rely on (see README "Result format"); fields
not listed are allowed so later issues can add metrics without a version bump when the
change is purely additive.
"""

from __future__ import annotations

import json
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
        "world_size": {"type": "integer", "minimum": 1},
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
                            "params": {"type": ["integer", "null"], "minimum": 0},  # null (+ reason) when there is no model, e.g. an imported benchmark
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


def _samples_errors(doc: dict[str, Any]) -> list[str]:
    """Element types of every ``samples_ms`` (numbers, not booleans), in plain Python."""
    out: list[str] = []
    cells = doc.get("cells")
    for i, cell in enumerate(cells if isinstance(cells, list) else []):
        samples = cell.get("samples_ms") if isinstance(cell, dict) else None
        if not isinstance(samples, list):
            continue
        if set(map(type, samples)) <= _PLAIN_NUMBER_TYPES:  # C-speed fast path (json.loads output)
            continue
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in samples):
            out.append(f"cells/{i}/samples_ms: every sample must be a number (ms)")
    return out


_PLAIN_NUMBER_TYPES = frozenset((int, float))


def validation_errors(doc: dict[str, Any]) -> list[str]:
    """Human-readable schema violations of ``doc`` (empty when valid).

    Fast path: :func:`compile_schema` turns ``RESULT_SCHEMA`` into plain-Python checks
    (about 10x faster than jsonschema's generic walk, which dominated loading 1,000
    result files). Only a document the fast path rejects is walked by jsonschema, for
    its exact messages; without jsonschema the fast path's first message is returned.
    """
    out = _samples_errors(doc)
    check = _compiled(RESULT_SCHEMA)
    first = check(doc, "") if check is not None else "?"
    if first is None:
        return out
    try:
        import jsonschema
    except ImportError:
        if first != "?":
            return out + [first]
        missing = [k for k in RESULT_SCHEMA["required"] if k not in doc]  # minimal fallback
        return out + [f"missing top-level key {k!r}" for k in missing]
    validator = jsonschema.Draft202012Validator(RESULT_SCHEMA)
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
        where = "/".join(str(p) for p in err.absolute_path) or "<top>"
        out.append(f"{where}: {err.message}")
    return out


# --------------------------------------------------------------- compiled fast validator
# A check is ``f(instance, path) -> None | "path: message"``. Only the keywords below are
# compiled; a schema using any other keyword is not compiled (None) and jsonschema does
# all the work, so the fast path can never be more lenient than the schema.

_Check = Any  # Callable[[Any, str], str | None]
_ANNOTATIONS = frozenset(("$schema", "title", "description", "$comment"))
_COMPILE_CACHE: dict[str, _Check | None] = {}  # keyed by the schema's JSON text: an edited schema recompiles


class _Unsupported(Exception):
    pass


def _compiled(schema: dict[str, Any]) -> _Check | None:
    """The compiled check of ``schema`` (None when it uses a keyword the compiler lacks)."""
    key = json.dumps(schema, sort_keys=True, default=repr)
    if key not in _COMPILE_CACHE:
        try:
            _COMPILE_CACHE[key] = compile_schema(schema)
        except _Unsupported:
            _COMPILE_CACHE[key] = None
    return _COMPILE_CACHE[key]


def _is_type(x: Any, t: str) -> bool:
    if t == "object":
        return isinstance(x, dict)
    if t == "array":
        return isinstance(x, list)
    if t == "string":
        return isinstance(x, str)
    if t == "null":
        return x is None
    if t == "boolean":
        return isinstance(x, bool)
    if isinstance(x, bool):
        return False
    if t == "number":
        return isinstance(x, (int, float))
    if t == "integer":
        return isinstance(x, int) or (isinstance(x, float) and x.is_integer())
    raise _Unsupported(t)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b if type(a) is type(b) or (isinstance(a, (int, float)) and isinstance(b, (int, float))) else False


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def compile_schema(schema: dict[str, Any]) -> _Check:
    """Compile the subset of JSON Schema (2020-12) that RESULT_SCHEMA uses into one
    plain-Python check; raises _Unsupported for anything else."""
    if not isinstance(schema, dict):
        raise _Unsupported(schema)
    checks: list[_Check] = []
    for key, val in schema.items():
        if key in _ANNOTATIONS or key in ("then", "else"):
            continue
        if key == "type":
            types = tuple(val) if isinstance(val, list) else (val,)
            for t in types:
                _is_type(None, t)  # raises _Unsupported for an unknown type name

            def c(x: Any, p: str, types: tuple = types) -> str | None:
                for t in types:
                    if _is_type(x, t):
                        return None
                return f"{p or '<top>'}: {x!r:.60} is not of type {', '.join(types)}"

        elif key == "required":
            names = tuple(val)

            def c(x: Any, p: str, names: tuple = names) -> str | None:
                if isinstance(x, dict):
                    for n in names:
                        if n not in x:
                            return f"{p or '<top>'}: {n!r} is a required property"
                return None

        elif key == "properties":
            props = tuple((k, compile_schema(v)) for k, v in val.items())

            def c(x: Any, p: str, props: tuple = props) -> str | None:
                if isinstance(x, dict):
                    for k, sub in props:
                        if k in x:
                            e = sub(x[k], f"{p}/{k}" if p else k)
                            if e is not None:
                                return e
                return None

        elif key == "additionalProperties":
            sub_ap = compile_schema(val)
            known = frozenset(schema.get("properties", {}))
            if "patternProperties" in schema:
                raise _Unsupported(key)

            def c(x: Any, p: str, sub: _Check = sub_ap, known: frozenset = known) -> str | None:
                if isinstance(x, dict):
                    for k, v in x.items():
                        if k not in known:
                            e = sub(v, f"{p}/{k}" if p else str(k))
                            if e is not None:
                                return e
                return None

        elif key == "items":
            sub_it = compile_schema(val)

            def c(x: Any, p: str, sub: _Check = sub_it) -> str | None:
                if isinstance(x, list):
                    for i, v in enumerate(x):
                        e = sub(v, f"{p}/{i}" if p else str(i))
                        if e is not None:
                            return e
                return None

        elif key == "enum":
            options = tuple(val)

            def c(x: Any, p: str, options: tuple = options) -> str | None:
                if any(_equal(x, o) for o in options):
                    return None
                return f"{p or '<top>'}: {x!r:.60} is not one of {list(options)!r}"

        elif key == "const":

            def c(x: Any, p: str, const: Any = val) -> str | None:
                return None if _equal(x, const) else f"{p or '<top>'}: {const!r} was expected"

        elif key in ("minimum", "exclusiveMinimum"):
            strict = key == "exclusiveMinimum"

            def c(x: Any, p: str, bound: float = val, strict: bool = strict) -> str | None:
                if _is_number(x) and (x <= bound if strict else x < bound):
                    return f"{p or '<top>'}: {x!r} is less than {'or equal to ' if strict else ''}the minimum of {bound}"
                return None

        elif key == "minLength":

            def c(x: Any, p: str, n: int = val) -> str | None:
                return f"{p or '<top>'}: {x!r:.60} is too short" if isinstance(x, str) and len(x) < n else None

        elif key == "minItems":

            def c(x: Any, p: str, n: int = val) -> str | None:
                return f"{p or '<top>'}: should be non-empty" if isinstance(x, list) and len(x) < n else None

        elif key == "allOf":
            subs = tuple(compile_schema(v) for v in val)

            def c(x: Any, p: str, subs: tuple = subs) -> str | None:
                for sub in subs:
                    e = sub(x, p)
                    if e is not None:
                        return e
                return None

        elif key == "if":
            cond = compile_schema(val)
            then = compile_schema(schema["then"]) if "then" in schema else None
            other = compile_schema(schema["else"]) if "else" in schema else None

            def c(x: Any, p: str, cond: _Check = cond, then: Any = then, other: Any = other) -> str | None:
                branch = then if cond(x, p) is None else other
                return branch(x, p) if branch is not None else None

        else:
            raise _Unsupported(key)
        checks.append(c)
    checks_t = tuple(checks)
    if len(checks_t) == 1:
        return checks_t[0]

    def check(x: Any, p: str) -> str | None:
        for c in checks_t:
            e = c(x, p)
            if e is not None:
                return e
        return None

    return check
