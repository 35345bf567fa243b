"""JSON Schema of a result file (schema_version 3) and a validator.

The schema pins the contract other tools rely on (see README "Result format"); fields
not listed are allowed so later issues can add metrics without a version bump when the
change is purely additive.

Result files are untrusted (harness/store/results.py), so the schema also *types* every field
that a consumer reads -- ``report`` (tables, charts, history, regressions, procurement,
energy, quality, roofline, scaling), ``compare``, ``export`` and ``baseline`` -- with
null allowed wherever the harness itself writes null. A file whose ``timing`` is a
string, whose ``environment.cpu`` is a number or whose ``runtime.threads`` is a list
is refused at load time with the path of the field, so no consumer ever sees it.
Every metric of the declared table (:mod:`harness.core.metrics`) is a number or null at its
dotted path inside ``metrics`` (and inside each ``repeats[]`` entry's ``metrics``).
"""

from __future__ import annotations

import json
import marshal
from typing import Any

_NUM_OR_NULL = {"type": ["number", "null"]}
_STR = {"type": "string"}
_STR_OR_NULL = {"type": ["string", "null"]}
_INT_OR_NULL = {"type": ["integer", "null"]}
_BOOL_OR_NULL = {"type": ["boolean", "null"]}
_OBJ_OR_NULL = {"type": ["object", "null"]}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_STR_OR_NULL_MAP = {"type": "object", "additionalProperties": _STR_OR_NULL}
_NUM_OR_NULL_MAP = {"type": "object", "additionalProperties": _NUM_OR_NULL}
_BOOL_OR_NULL_MAP = {"type": "object", "additionalProperties": _BOOL_OR_NULL}
_STR_LIST = {"type": "array", "items": _STR}
_NUM_OR_NULL_LIST = {"type": ["array", "null"], "items": _NUM_OR_NULL}


def _obj(props: dict[str, Any], nullable: bool = False, **extra: Any) -> dict[str, Any]:
    """An object (or null) whose listed properties, where present, have these schemas."""
    return {"type": ["object", "null"] if nullable else "object", "properties": props, **extra}


def _declared_metrics_schema() -> dict[str, Any]:
    """``metrics``: every declared metric (harness/core/metrics.py) is a number or null at its
    dotted path; the groups (``energy``, ``quality``, ...) are objects or null. The
    interval ``throughput_ci95_per_s`` is ``[low, high]`` (or an object) or null."""
    from harness.core.metrics import TABLE

    root: dict[str, Any] = {}
    groups = {n.rsplit(".", 1)[0] for n in TABLE if "." in n}
    for name in TABLE:
        parts = name.split(".")
        if name in groups:  # latency_ms, generation.ttft_ms: an object of statistics (numbers)
            continue
        node = root
        for group in parts[:-1]:
            node = node.setdefault(group, {})
        node.setdefault(parts[-1], None)

    def build(tree: dict[str, Any], nullable: bool) -> dict[str, Any]:
        props = {k: (build(v, True) if isinstance(v, dict) else _NUM_OR_NULL) for k, v in tree.items()}
        return _obj(props, nullable=nullable)

    schema = build(root, nullable=False)
    props = schema["properties"]
    props["latency_ms"] = _obj({k: _NUM_OR_NULL for k in root.get("latency_ms", {})}, nullable=True)
    props["throughput_ci95_per_s"] = {"type": ["array", "object", "null"], "items": _NUM_OR_NULL,
                                      "properties": {"low": _NUM_OR_NULL, "high": _NUM_OR_NULL}}  # fmt: skip
    props["noisy"] = _BOOL_OR_NULL
    for text in ("throughput_method", "flops_source", "flops_scope", "host_mem_method", "model_size_format",
                 "bytes_moved_method"):  # fmt: skip
        props[text] = _STR_OR_NULL
    energy = props["energy"]["properties"]
    energy.update(source=_STR_OR_NULL, reason=_STR_OR_NULL, model=_STR_OR_NULL, scope=_STR_OR_NULL)
    quality = props["quality"]["properties"]
    quality.update(
        dataset=_STR_OR_NULL,
        gate=_obj({"passed": _BOOL_OR_NULL, "threshold": _NUM_OR_NULL, "rule": _STR_OR_NULL}, nullable=True),
        quality_config=_OBJ_OR_NULL,
        trained=_OBJ_OR_NULL,
    )
    gen = props["generation"]["properties"]  # generate cells (harness.core.generation)
    gen.update(method=_STR_OR_NULL, requests={"type": ["array", "null"]}, slo=_OBJ_OR_NULL)
    for sub in ("goodput", "kv_cache"):
        gen[sub]["properties"]["method"] = _STR_OR_NULL
    dist = props["distributed"]["properties"]
    dist.update(engine=_STR_OR_NULL, comm_backend=_STR_OR_NULL, scaling_warning=_STR_OR_NULL)
    props["utilisation"]["properties"]["scope"] = _STR_OR_NULL
    return schema


METRICS_SCHEMA: dict[str, Any] = _declared_metrics_schema()

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
        "mode": {"enum": ["inference", "training", "generate"]},
        "batch_size": {"type": "integer", "minimum": 1},
        "size": {"type": "string"},
        "world_size": {"type": "integer", "minimum": 1},
        "prompt_len": {"type": "integer", "minimum": 1},
        "gen_len": {"type": "integer", "minimum": 2},
    },
}

CONTENTION_SCHEMA: dict[str, Any] = _obj({
    "detected": _BOOL_OR_NULL,
    "reasons": {"type": ["array", "null"]},  # readers use the strings and skip anything else
    "rule": _STR_OR_NULL,
    "evidence": _obj({
        "ncpu": _INT_OR_NULL,
        "windows": {"type": ["object", "null"], "additionalProperties": _OBJ_OR_NULL},
        "gpu": _OBJ_OR_NULL,
    }, nullable=True),
}, nullable=True)  # fmt: skip

TIMING_SCHEMA: dict[str, Any] = _obj({
    "samples": _INT_OR_NULL,
    "iters_per_sample": _NUM_OR_NULL,
    "loop_wall_s": _NUM_OR_NULL,
    "timed_s": _NUM_OR_NULL,
    "warmup_stable": _BOOL_OR_NULL,
    "clock": _STR_OR_NULL,
    "sampling": _STR_OR_NULL,
    "contention": CONTENTION_SCHEMA,
    # issue 14 (additive): why sampling stopped, the precision target, the warm-up rule
    "stop_reason": _STR_OR_NULL,
    "precision_target": _NUM_OR_NULL,  # fraction of the median (0.02 = +-2%), null: none
    "max_time_s": _NUM_OR_NULL,
    "precision_checks": _INT_OR_NULL,
    "ci95_rel_halfwidth": _NUM_OR_NULL,
    "ci95_correlation_inflation": _NUM_OR_NULL,
    "warmup_ended_by": {"enum": ["rule", "cap", None]},
    "warmup_rule": _STR_OR_NULL,
    "warmup_evidence": _OBJ_OR_NULL,
    # where the cell's wall time went, seconds by phase (docs/launch.md): resolve, prepare,
    # measure, collectors, analysis:NAME, close (in the worker) and outside_worker
    "phases_s": {"type": ["object", "null"], "additionalProperties": _NUM_OR_NULL},
}, nullable=True)  # fmt: skip

RUNTIME_SCHEMA: dict[str, Any] = _obj({
    "threads": _INT_OR_NULL,
    "interop_threads": _INT_OR_NULL,
    "precision": _OBJ_OR_NULL,
    "precision_method": _STR_OR_NULL,
    "thread_policy": _OBJ_OR_NULL,
    # how the cell's process was started (docs/launch.md): method "zygote-fork" |
    # "fresh-process" | "torchrun" | "precheck" (skipped without a worker), and why
    # another method was not used
    "launch": _obj({"method": _STR, "reason": _STR_OR_NULL}, nullable=True),
}, nullable=True)  # fmt: skip

ERROR_SCHEMA: dict[str, Any] = _obj({
    "type": _STR_OR_NULL,
    "message": _STR_OR_NULL,
    "stderr_tail": _STR_OR_NULL,
    "traceback": _STR_OR_NULL,
    "returncode": _INT_OR_NULL,
}, nullable=True)  # fmt: skip

REPEAT_SCHEMA: dict[str, Any] = _obj({
    "index": {"type": "integer", "minimum": 0},
    "status": {"enum": ["ok", "skipped", "failed"]},
    "reason": _STR_OR_NULL,
    "started": _STR_OR_NULL,
    "duration_s": _NUM_OR_NULL,
    "samples_ms": {"type": ["array", "null"]},  # element types: _samples_errors
    "timing": TIMING_SCHEMA,
    "metrics": {**METRICS_SCHEMA, "type": ["object", "null"]},
    "runtime": RUNTIME_SCHEMA,
})  # fmt: skip

CELL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["spec", "status", "reason", "metrics", "samples_ms"],
    "properties": {
        "id": _STR,
        "spec": SPEC_SCHEMA,
        "status": {"enum": ["ok", "skipped", "failed"]},
        "reason": {"type": ["string", "null"]},
        "error": ERROR_SCHEMA,
        "started": _STR_OR_NULL,
        "duration_s": _NUM_OR_NULL,
        "metrics": METRICS_SCHEMA,
        "unavailable": {"type": "object", "additionalProperties": {"type": "string"}},
        # element types are checked in plain Python in validation_errors (jsonschema
        # per-item validation of 10^6 samples dominated report build time)
        "samples_ms": {"type": "array"},
        "timing": TIMING_SCHEMA,
        "runtime": RUNTIME_SCHEMA,
        # where the model came from (zoo config, custom factory + file hash, weights)
        "model": _OBJ_OR_NULL,
        "timeseries": _OBJ_OR_NULL,
        "repeats": {"type": ["array", "null"], "items": REPEAT_SCHEMA},
        "repeats_planned": _INT_OR_NULL,
        "repeats_summary": _OBJ_OR_NULL,
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

GPU_SCHEMA: dict[str, Any] = _obj({
    "nvml_index": _INT_OR_NULL,
    "index": _INT_OR_NULL,
    "name": _STR_OR_NULL,
    "uuid": _STR_OR_NULL,
    "pci_bus_id": _STR_OR_NULL,
    "memory_bytes": _INT_OR_NULL,
    "driver": _STR_OR_NULL,
    "cuda_driver": _STR_OR_NULL,
    "cuda": _STR_OR_NULL,
    "compute_capability": _STR_OR_NULL,
    "power_limit_w": _NUM_OR_NULL,
    "source": _STR_OR_NULL,
})  # fmt: skip

ENVIRONMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["host", "os", "python", "cpu"],
    "properties": {
        "host": _STR,
        "os": {"type": ["object", "string", "null"],
               "properties": {"system": _STR_OR_NULL, "release": _STR_OR_NULL, "platform": _STR_OR_NULL}},
        "python": _STR_OR_NULL,
        "python_implementation": _STR_OR_NULL,
        "cpu": _obj({
            "model": _STR_OR_NULL,
            "arch": _STR_OR_NULL,
            "flags_dl": {"type": ["object", "null"], "additionalProperties": _BOOL_OR_NULL},
            "isa": {"type": ["object", "null"], "additionalProperties": _BOOL_OR_NULL},
            "flags_source": _STR_OR_NULL,
            "physical_cores": _INT_OR_NULL,
            "logical_cores": _INT_OR_NULL,
            "sockets": _INT_OR_NULL,
            "affinity_cores": _INT_OR_NULL,
        }),
        "memory_bytes": _INT_OR_NULL,
        "gpus": {"type": ["array", "null"], "items": GPU_SCHEMA},
        "gpus_reason": _STR_OR_NULL,
        "tpu": _OBJ_OR_NULL,
        "frameworks": {"type": ["object", "null"], "additionalProperties": _STR_OR_NULL},
        "env_vars": {"type": ["object", "null"], "additionalProperties": _STR_OR_NULL},
        "fingerprint": _STR_OR_NULL,
    },
}  # fmt: skip

CALIBRATION_SCHEMA: dict[str, Any] = {
    "type": ["object", "null"],
    "additionalProperties": _obj({
        "peak_flops_per_s": {"type": ["object", "null"], "additionalProperties": _NUM_OR_NULL},
        "mem_bandwidth_bytes_per_s": _NUM_OR_NULL,
        "measured_at": _STR_OR_NULL,
        "threads": _INT_OR_NULL,
        "by_threads": _OBJ_OR_NULL,
        "unavailable": _OBJ_OR_NULL,
    }, nullable=True),
}  # fmt: skip

RESULT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "dl-harness result",
    "type": "object",
    "required": ["schema_version", "run_id", "environment", "cells", "suite", "harness"],
    "properties": {
        "schema_version": {"type": "integer"},
        "run_id": {"type": "string", "minLength": 1},
        "created": {"type": "string"},
        "finished": _STR_OR_NULL,
        "complete": {"type": "boolean"},
        "interrupted": _BOOL_OR_NULL,
        "tag": {"type": ["string", "null"]},
        "environment": ENVIRONMENT_SCHEMA,
        "suite": _obj({"name": _STR_OR_NULL, "description": _STR_OR_NULL, "source": _STR_OR_NULL,
                       "settings": _OBJ_OR_NULL}),  # fmt: skip
        "harness": _obj({"version": _STR, "git_commit": _STR_OR_NULL, "git_dirty": _BOOL_OR_NULL},
                        required=["version"]),  # fmt: skip
        "cells": {"type": "array", "items": CELL_SCHEMA},
        "not_run": {"type": ["array", "null"], "items": _STR},
        "measurement_order": _OBJ_OR_NULL,
        "calibration": CALIBRATION_SCHEMA,
    },
}


def _samples_errors(doc: dict[str, Any]) -> list[str]:
    """Element types of every ``samples_ms`` (numbers, not booleans) of the cells and of
    their ``repeats[]`` entries, in plain Python."""
    out: list[str] = []
    cells = doc.get("cells")
    for i, cell in enumerate(cells if isinstance(cells, list) else []):
        if not isinstance(cell, dict):
            continue
        records = [(f"cells/{i}", cell)]
        reps = cell.get("repeats")
        if isinstance(reps, list):
            records += [(f"cells/{i}/repeats/{j}", r) for j, r in enumerate(reps) if isinstance(r, dict)]
        for where, rec in records:
            samples = rec.get("samples_ms")
            if not isinstance(samples, list):
                continue
            if set(map(type, samples)) <= _PLAIN_NUMBER_TYPES:  # C-speed fast path (json.loads output)
                continue
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in samples):
                out.append(f"{where}/samples_ms: every sample must be a number (ms)")
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
    key = _schema_key(RESULT_SCHEMA)
    validator = _VALIDATORS.get(key)
    if validator is None:
        validator = _VALIDATORS[key] = jsonschema.Draft202012Validator(RESULT_SCHEMA)
    for err in sorted(validator.iter_errors(doc), key=lambda e: [(isinstance(p, str), p) for p in e.path]):
        where = "/".join(str(p) for p in err.absolute_path) or "<top>"
        out.append(f"{where}: {err.message}")
    return out


# --------------------------------------------------------------- compiled fast validator
# A check is ``f(instance, path) -> None | "path: message"``. Only the keywords below are
# compiled; a schema using any other keyword is not compiled (None) and jsonschema does
# all the work, so the fast path can never be more lenient than the schema. ``path`` is
# a string ("" for the top) or, inside the compiled checks, a ``(parent, key)`` pair that
# is only turned into "a/b/c" when a message is written (most documents are valid, and
# formatting a path for every visited field cost more than the checks themselves).

_Check = Any  # Callable[[Any, Any], str | None]
_ANNOTATIONS = frozenset(("$schema", "title", "description", "$comment"))
_COMPILE_CACHE: dict[bytes | str, _Check | None] = {}  # keyed by the schema's content: an edited schema recompiles
_VALIDATORS: dict[bytes | str, Any] = {}  # jsonschema validators, keyed the same way


class _Unsupported(Exception):
    pass


def _schema_key(schema: Any) -> bytes | str:
    """The content of ``schema`` as a cache key (marshal: ~15x cheaper than JSON text,
    which mattered when computed once per loaded file)."""
    try:
        return marshal.dumps(schema)
    except ValueError:  # a value marshal cannot write: fall back to its JSON text
        return json.dumps(schema, sort_keys=True, default=repr)


def _compiled(schema: dict[str, Any]) -> _Check | None:
    """The compiled check of ``schema`` (None when it uses a keyword the compiler lacks)."""
    key = _schema_key(schema)
    if key not in _COMPILE_CACHE:
        try:
            _COMPILE_CACHE[key] = compile_schema(schema)
        except _Unsupported:
            _COMPILE_CACHE[key] = None
    return _COMPILE_CACHE[key]


def _where(p: Any) -> str:
    """A check's path as ``a/b/c`` (``<top>`` for the document itself)."""
    parts: list[str] = []
    while isinstance(p, tuple):
        p, key = p
        parts.append(str(key))
    if p:
        parts.append(str(p))
    return "/".join(reversed(parts)) or "<top>"


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


# the Python types json.loads gives for each JSON type: an exact type match accepts
# at once; anything else (subclasses, 2.0 as an integer, booleans) takes _is_type
_EXACT = {"object": (dict,), "array": (list,), "string": (str,), "null": (type(None),), "boolean": (bool,),
          "number": (int, float), "integer": (int,)}  # fmt: skip


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
            exact = frozenset(pt for t in types for pt in _EXACT[t])

            def c(x: Any, p: Any, types: tuple = types, exact: frozenset = exact) -> str | None:
                if type(x) in exact:
                    return None
                for t in types:
                    if _is_type(x, t):
                        return None
                return f"{_where(p)}: {x!r:.60} is not of type {', '.join(types)}"

        elif key == "required":
            names = tuple(val)

            def c(x: Any, p: Any, names: tuple = names) -> str | None:
                if isinstance(x, dict):
                    for n in names:
                        if n not in x:
                            return f"{_where(p)}: {n!r} is a required property"
                return None

        elif key == "properties":
            props = {k: compile_schema(v) for k, v in val.items()}
            n_props = len(props)

            def c(x: Any, p: Any, props: dict = props, n_props: int = n_props) -> str | None:
                if not isinstance(x, dict):
                    return None
                if len(x) < n_props:  # walk the smaller side: most declared fields are absent
                    for k, v in x.items():
                        sub = props.get(k)
                        if sub is not None:
                            e = sub(v, (p, k))
                            if e is not None:
                                return e
                else:
                    for k, sub in props.items():
                        if k in x:
                            e = sub(x[k], (p, k))
                            if e is not None:
                                return e
                return None

        elif key == "additionalProperties":
            sub_ap = compile_schema(val)
            known = frozenset(schema.get("properties", {}))
            if "patternProperties" in schema:
                raise _Unsupported(key)

            def c(x: Any, p: Any, sub: _Check = sub_ap, known: frozenset = known) -> str | None:
                if isinstance(x, dict):
                    for k, v in x.items():
                        if k not in known:
                            e = sub(v, (p, k))
                            if e is not None:
                                return e
                return None

        elif key == "items":
            sub_it = compile_schema(val)

            def c(x: Any, p: Any, sub: _Check = sub_it) -> str | None:
                if isinstance(x, list):
                    for i, v in enumerate(x):
                        e = sub(v, (p, i))
                        if e is not None:
                            return e
                return None

        elif key == "enum":
            options = tuple(val)

            def c(x: Any, p: Any, options: tuple = options) -> str | None:
                if any(_equal(x, o) for o in options):
                    return None
                return f"{_where(p)}: {x!r:.60} is not one of {list(options)!r}"

        elif key == "const":

            def c(x: Any, p: Any, const: Any = val) -> str | None:
                return None if _equal(x, const) else f"{_where(p)}: {const!r} was expected"

        elif key in ("minimum", "exclusiveMinimum"):
            strict = key == "exclusiveMinimum"

            def c(x: Any, p: Any, bound: float = val, strict: bool = strict) -> str | None:
                if _is_number(x) and (x <= bound if strict else x < bound):
                    return f"{_where(p)}: {x!r} is less than {'or equal to ' if strict else ''}the minimum of {bound}"
                return None

        elif key == "minLength":

            def c(x: Any, p: Any, n: int = val) -> str | None:
                return f"{_where(p)}: {x!r:.60} is too short" if isinstance(x, str) and len(x) < n else None

        elif key == "minItems":

            def c(x: Any, p: Any, n: int = val) -> str | None:
                return f"{_where(p)}: should be non-empty" if isinstance(x, list) and len(x) < n else None

        elif key == "allOf":
            subs = tuple(compile_schema(v) for v in val)

            def c(x: Any, p: Any, subs: tuple = subs) -> str | None:
                for sub in subs:
                    e = sub(x, p)
                    if e is not None:
                        return e
                return None

        elif key == "if":
            cond = compile_schema(val)
            then = compile_schema(schema["then"]) if "then" in schema else None
            other = compile_schema(schema["else"]) if "else" in schema else None

            def c(x: Any, p: Any, cond: _Check = cond, then: Any = then, other: Any = other) -> str | None:
                branch = then if cond(x, p) is None else other
                return branch(x, p) if branch is not None else None

        else:
            raise _Unsupported(key)
        checks.append(c)
    checks_t = tuple(checks)
    if len(checks_t) == 1:
        return checks_t[0]

    def check(x: Any, p: Any) -> str | None:
        for c in checks_t:
            e = c(x, p)
            if e is not None:
                return e
        return None

    return check
