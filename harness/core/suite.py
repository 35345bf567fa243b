"""Suites (YAML or CLI flags) and their expansion into cells (``TaskSpec``).

A suite file::

    name: quick
    description: what it is for
    settings:            # all optional; CLI flags override
      size: small        # workload size preset
      min_time_s: 1.0    # minimum timed seconds per cell
      timeout_s: 300     # per-cell worker timeout
      threads: null      # intra-op threads (null: framework default, recorded)
      warmup_max_s: 3.0
      min_samples: 10
      seed: 0
      repeats: 1         # separate worker processes per cell, interleaved in random
                         # order across the suite (run-to-run noise in one file)
      precision: null    # e.g. 2% (or 2): sample until the median's 95% CI is within
                         # +-2% of it instead of for min_time_s (docs/timing.md)
      max_time_s: null   # with precision: give up after this many timed seconds
                         # (null: 10 x min_time_s)
      nnodes: 1          # data-parallel cells across machines (torchrun rendezvous)
      rdzv_endpoint: null  # HOST:PORT, needed when nnodes > 1
    matrix:              # the cartesian product of these axes is the cell list
      workload: [mlp, cnn, transformer]
      backend: [torch]
      device: [cpu]
      variant: [fp32]
      mode: [inference, training]
      batch_size: []     # empty or missing: each workload's default for the size;
                         # or per workload: {mlp: [512], cnn: [64]} (others: default)
      world_size: [1, 2] # optional: data-parallel training with 1 and 2 workers
                         # (training cells only; batch_size is then per worker)
    exclude:             # optional: drop cells matching all given keys
      - {workload: cnn, mode: training}
    targets:             # optional, used by `harness run --ray` only (docs/fleet.md):
      - {name: h100, resources: {GPU: 1, "accelerator_type:H100": 0.001}}
      - {name: cpu-c7i, node_labels: {instance-type: c7i.4xlarge}}
                         # every cell runs once on each target (a Ray node whose
                         # resources are at least these / whose labels equal these);
                         # a local run ignores them

Files are read with :mod:`harness.core.safeyaml` (bounded size and alias expansion, UTF-8
only, no duplicate keys) and checked against :func:`suite_schema`; an error names the
file, the line and the allowed values. Every number has the bounds of :data:`LIMITS`
(finite, and far beyond anything a real run needs), so a value that could only fail
hours into a run (``min_samples: 1000000000``, ``repeats: 1000000``, ``.inf``) is
refused when the file is loaded; the same table bounds the ``harness run`` flags
(:func:`setting_arg`) and :class:`Settings` built any other way.

:class:`TaskSpec`, :class:`Settings` and :data:`LIMITS` live in :mod:`harness.core.cells`
(the vocabulary the launchers and the worker share) and are re-exported here.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from harness.core import registry
from harness.api import MODES
from harness.core.cells import (  # noqa: F401 - the cell vocabulary (TaskSpec, Settings, LIMITS), re-exported
    DAY_S,
    LAUNCH_MODES,
    LIMITS,
    SETTING_LIMITS,
    Limit,
    Settings,
    TaskSpec,
    check_limit,
    parse_precision,
)
from harness.errors import UserError


class ConfigError(UserError, ValueError):
    """A usage or configuration error: one clear line for the user (exit code 2)."""


DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?|tpu(:\d+)?)$")
VALID_DEVICES = "cpu, cuda, cuda:N, tpu"


def normalize_device(device: str) -> str:
    """Canonical device string (``cuda`` -> ``cuda:0``); raise ConfigError otherwise."""
    d = device.strip().lower()
    if not DEVICE_RE.match(d):
        raise ConfigError(f"unknown device {device!r}; choose from: {VALID_DEVICES}")
    if d == "cuda":
        return "cuda:0"
    return d


# ----------------------------------------------------------------------------- limits

# cells of one suite (the product of its matrix axes, before 'exclude') and its exclude
# rules: the built-in nightly suite has 192 cells; 10,000 take hours even at 1 s each
MAX_CELLS = 10_000
MAX_EXCLUDE_RULES = 1000
# data-parallel workers started on one machine (world_size / nnodes): more would be a
# fork bomb, not a benchmark (a node has at most a few hundred cores or 16 GPUs)
MAX_WORKERS_PER_NODE = 1024


def setting_arg(name: str) -> Any:
    """argparse ``type=`` for the flag of the setting ``name``: the text as an int or
    float, refused with what :data:`LIMITS` allows (``argparse.ArgumentTypeError``)."""
    import argparse

    lim = LIMITS[name]

    def parse(text: str) -> int | float:
        try:
            value: Any = int(text) if lim.integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {lim.describe(with_null=False)}, got {text!r}") from None
        if check_limit(name, value):
            raise argparse.ArgumentTypeError(f"must be {lim.describe(with_null=False)}, got {text!r}")
        return value

    parse.__name__ = name
    return parse


def check_workers_per_node(world_size: int, nnodes: int) -> str | None:
    """None, or why ``world_size`` workers over ``nnodes`` machines is refused."""
    if world_size % nnodes:
        return (f"{world_size} is not a multiple of nnodes {nnodes} (every node runs world_size / nnodes "
                "workers)")
    if world_size // nnodes > MAX_WORKERS_PER_NODE:
        return (f"{world_size} on {nnodes} node(s) means {world_size // nnodes} workers per node; at most "
                f"{MAX_WORKERS_PER_NODE} per node (spread a bigger job over more nodes: nnodes)")
    return None


AXES = ("workload", "backend", "device", "variant", "mode", "batch_size", "world_size", "prompt_len", "gen_len")
#: generate cells: prompt and generated tokens per request when the matrix gives none
DEFAULT_PROMPT_LEN, DEFAULT_GEN_LEN = 32, 16
SUITE_KEYS = {"name", "description", "settings", "matrix", "exclude", "targets"}
TARGET_KEYS = ("name", "resources", "node_labels")
#: a target's name: it names a result file (``<run_id>`` includes it), so file-name safe
TARGET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_TARGETS = 256


@dataclass(frozen=True)
class Target:
    """A machine target of a fleet run (``harness run --ray``, docs/fleet.md): the Ray
    nodes whose resources are at least ``resources`` (Ray's names: ``CPU``, ``GPU``,
    ``accelerator_type:H100``, custom ones) and whose labels include ``node_labels``.
    Every cell of the suite runs once on each target."""

    name: str
    resources: Mapping[str, float] = field(default_factory=dict)
    node_labels: Mapping[str, str] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """The target as stored in a result file."""
        out: dict[str, Any] = {"name": self.name}
        if self.resources:
            out["resources"] = dict(self.resources)
        if self.node_labels:
            out["node_labels"] = dict(self.node_labels)
        return out


@dataclass
class Suite:
    name: str
    description: str = ""
    settings: Settings = field(default_factory=Settings)
    matrix: dict[str, list[Any]] = field(default_factory=dict)
    exclude: list[dict[str, Any]] = field(default_factory=list)
    source: str = "<cli>"
    targets: list[Target] = field(default_factory=list)  # machine targets of a fleet run (--ray)

    def to_record(self, cells: int) -> dict[str, Any]:
        """How the suite is stored in a result file (the suite as run; ``targets`` only
        when the suite names some, so other result files keep their shape)."""
        out = {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "settings": dataclasses.asdict(self.settings),
            "matrix": self.matrix,
            "exclude": self.exclude,
            "cells": cells,
        }
        if self.targets:
            out["targets"] = [t.to_record() for t in self.targets]
        return out


def builtin_suites() -> dict[str, str]:
    """Built-in suite name -> YAML text."""
    out: dict[str, str] = {}
    for entry in resources.files("harness").joinpath("suites").iterdir():
        if entry.name.endswith(".yaml"):
            out[entry.name[: -len(".yaml")]] = entry.read_text(encoding="utf-8")
    return out


def _as_list(v: Any) -> list[Any]:
    if v is None:
        return []
    return list(v) if isinstance(v, (list, tuple)) else [v]


SETTING_TYPES: dict[str, Any] = {
    "size": {"type": "string"},
    "energy_estimate": {"type": "boolean"},
    "tpu": {"type": ["string", "null"], "minLength": 1},
    "rdzv_endpoint": {"type": ["string", "null"], "minLength": 1},
    "rdzv_id": {"type": ["string", "null"], "minLength": 1},
    "rdzv_backend": {"type": "string", "minLength": 1},
    "slo": {"type": ["string", "null"], "minLength": 1},  # generate cells: "ttft_ms=500,tpot_ms=50"
    "launch": {"enum": list(LAUNCH_MODES)},  # how each cell's process starts (docs/launch.md)
    # numbers: their type, and the "limit" keyword (LIMITS: finite, within bounds)
    **{name: {"type": (["integer"] if LIMITS[name].integer else ["number"]) + (["null"] if LIMITS[name].nullable else []),
              "limit": name} for name in SETTING_LIMITS},
    # a percent: 2, 2.5 or "2%" (Settings parses the string; LIMITS bounds the number)
    "precision": {"type": ["number", "string", "null"], "limit": "precision",
                  "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*%?\s*$"},
}


def _limit_keyword(validator: Any, name: str, instance: Any, schema: Any) -> Any:
    """JSON-Schema keyword ``"limit": NAME``: a number of the right type must be within
    ``LIMITS[NAME]`` (other types are the ``type`` keyword's to report)."""
    import jsonschema

    lim = LIMITS[name]
    if name == "precision" and isinstance(instance, str):
        instance = parse_precision(instance)  # "2%": the number it stands for
    if isinstance(instance, bool) or not isinstance(instance, (int, float)) or (lim.integer and isinstance(instance, float)):
        return
    problem = check_limit(name, instance, symbols=True)
    if problem:
        yield jsonschema.ValidationError(problem)


def suite_schema() -> dict[str, Any]:
    """JSON Schema of a suite file; plugin names come from the registry (entry points,
    nothing imported), so an unknown name's error lists the installed ones."""

    def axis(item: dict[str, Any]) -> dict[str, Any]:
        return {"anyOf": [item, {"type": "array", "items": item}, {"type": "null"}]}

    batch_sizes = axis({"type": "integer", "limit": "batch_size"})
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "description": {"type": "string"},
            "settings": {"type": ["object", "null"], "additionalProperties": False, "properties": SETTING_TYPES},
            "matrix": {
                "type": ["object", "null"],
                "additionalProperties": False,
                "properties": {
                    # a registered name or a model (hf:gpt2, custom:f.py:make), checked in expand()
                    "workload": axis({"type": "string", "minLength": 1}),
                    "backend": axis({"enum": registry.names("backend")}),
                    "variant": axis({"enum": registry.names("variant")}),
                    "device": axis({"type": "string", "pattern": DEVICE_RE.pattern}),
                    "mode": axis({"enum": list(MODES)}),
                    # a list for every workload, or per workload {mlp: [512], cnn: [64]}
                    "batch_size": {"anyOf": [*batch_sizes["anyOf"], {
                        "type": "object", "propertyNames": {"type": "string", "minLength": 1},
                        "additionalProperties": batch_sizes}]},
                    "world_size": axis({"type": "integer", "limit": "world_size"}),
                    # generate cells (mode: generate): tokens per request
                    "prompt_len": axis({"type": "integer", "limit": "prompt_len"}),
                    "gen_len": axis({"type": "integer", "limit": "gen_len"}),
                },
            },
            "exclude": {
                "type": ["array", "null"], "maxItems": MAX_EXCLUDE_RULES,
                "items": {
                    "type": "object", "minProperties": 1, "additionalProperties": False,
                    "properties": {
                        "workload": {"type": "string", "minLength": 1},
                        "backend": {"enum": registry.names("backend")},
                        "variant": {"enum": registry.names("variant")},
                        "device": {"type": "string", "pattern": DEVICE_RE.pattern},
                        "mode": {"enum": list(MODES)},
                        "batch_size": {"type": "integer", "limit": "batch_size"},
                        "world_size": {"type": "integer", "limit": "world_size"},
                        "prompt_len": {"type": "integer", "limit": "prompt_len"},
                        "gen_len": {"type": "integer", "limit": "gen_len"},
                        "size": {"type": "string"},
                    },
                },
            },
            "targets": {
                "type": ["array", "null"], "maxItems": MAX_TARGETS,
                "items": {
                    "type": "object", "additionalProperties": False, "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "pattern": TARGET_NAME_RE.pattern},
                        # Ray resource name -> the least amount a node must have
                        "resources": {"type": "object", "minProperties": 1,
                                      "propertyNames": {"minLength": 1},
                                      "additionalProperties": {"type": "number", "exclusiveMinimum": 0,
                                                               "maximum": 1e12}},
                        # Ray node label -> the value it must have
                        "node_labels": {"type": "object", "minProperties": 1,
                                        "propertyNames": {"minLength": 1},
                                        "additionalProperties": {"type": "string"}},
                    },
                },
            },
        },
    }


def _node_at(root: Any, path: Iterable[Any]) -> Any:
    """The YAML node at a JSON-Schema error path (for its line number)."""
    node = root
    for key in path:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if str(k.value) == str(key):
                    node = v
                    break
            else:
                return node
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            return node
    return node


def _key_node(root: Any, path: list[Any], key: str) -> Any:
    parent = _node_at(root, path)
    if isinstance(parent, yaml.MappingNode):
        for k, _ in parent.value:
            if str(k.value) == key:
                return k
    return parent


def _schema_message(err: Any) -> tuple[str, list[Any]]:
    """(one-line message naming the allowed values, path of the offending node; a path
    ending in ``KEY_MARK, key`` points at a mapping key rather than a value)."""
    path = list(err.absolute_path)
    where = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in path).replace(".[", "[") or "suite"
    v = err.validator
    if v == "additionalProperties":
        allowed = sorted((err.schema.get("properties") or {}).keys())
        extra = sorted(set(err.instance) - set(allowed))
        keys = f"key {extra[0]!r}" if len(extra) == 1 else f"keys {', '.join(map(repr, extra))}"
        return (f"{where}: unknown {keys}; allowed: {', '.join(allowed)}", path + [KEY_MARK, extra[0]])
    if v == "enum":
        msg = f"{where}: {err.instance!r} is not valid; choose from: {', '.join(map(str, err.validator_value))}"
        if "propertyNames" in list(err.absolute_schema_path):  # a bad key: point at it
            return msg, path + [KEY_MARK, str(err.instance)]
        return msg, path
    if v == "anyOf":  # an axis: report the failing item, not the alternatives
        best = None
        for sub in err.context or []:
            if list(sub.absolute_path) != path:
                best = sub
                break
        if best is not None:
            return _schema_message(best)
        if isinstance(err.instance, dict):
            deeper = [e for e in (err.context or []) if e.validator != "type"]
            if deeper:
                return _schema_message(deeper[0])
            return f"{where}: must be a value or a list of values, not a mapping", path
        sub_errs = [s for s in (err.context or []) if s.validator in ("limit", "enum", "type", "pattern", "minimum")]
        if sub_errs:
            return _schema_message(sub_errs[0])
    if v == "pattern" and len(path) == 3 and path[0] == "targets" and path[2] == "name":
        return (f"{where}: {_short_repr(err.instance)} is not a valid target name (letters, digits, '.', '_', "
                "'-'; at most 64; it names the result file)"), path
    if v == "required":
        return f"{where}: {_short_message(err.message)}", path
    if v == "minProperties":
        return f"{where}: must not be empty", path
    if v == "pattern" and path and "device" in map(str, path):
        return f"{where}: unknown device {err.instance!r}; choose from: {VALID_DEVICES}", path
    if v == "propertyNames":
        allowed = (err.validator_value or {}).get("enum") or []
        bad = sorted(str(k) for k in err.instance if k not in allowed)
        key = bad[0] if bad else "?"
        return f"{where}: unknown key {key!r}; choose from: {', '.join(map(str, allowed))}", path + [KEY_MARK, key]
    if v == "type":
        want = err.validator_value if isinstance(err.validator_value, str) else " or ".join(err.validator_value)
        return f"{where}: {_short_repr(err.instance)} is not of type {want}{_number_hint(err.instance)}", path
    if v == "limit":
        return f"{where}: {err.message}", path
    if v == "maxItems":
        return f"{where}: {len(err.instance):,} items; at most {err.validator_value:,}", path
    if v in ("minimum", "exclusiveMinimum"):
        op = ">=" if v == "minimum" else ">"
        return f"{where}: must be {op} {err.validator_value}, got {err.instance!r}", path
    return f"{where}: {_short_message(err.message)}", path


def _short_message(text: str, n: int = 200) -> str:
    """A jsonschema message, which quotes the whole instance, cut to one readable line."""
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number_hint(value: Any) -> str:
    """For text that Python reads as a number but YAML does not (YAML 1.1: ``1e9``
    needs a dot and a signed exponent), how to write it."""
    if not isinstance(value, str):
        return ""
    try:
        number = float(value.replace("_", ""))
    except ValueError:
        return ""
    if not math.isfinite(number):
        return " (and numbers must be finite)"
    written = repr(number)
    if number.is_integer() and abs(number) < 1e16:
        written = str(int(number))
    elif "e" in written and "." not in written:  # YAML 1.1 wants 1.0e+20, not 1e+20
        written = written.replace("e", ".0e")
    return f" (YAML reads {value!r} as text: write {written})"


def validate_suite_yaml(text: str, source: str) -> Any:
    """Parse ``text`` with the safe loader and check it against :func:`suite_schema`;
    raise ConfigError ``FILE:LINE: what is wrong; allowed values``."""
    from harness.core import safeyaml

    try:  # one parse: the node tree (for line numbers) and the data, bounded (alias bombs)
        data, root = safeyaml.load(text)
    except yaml.YAMLError as e:
        raise ConfigError(safeyaml.describe(e, source)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: a suite must be a YAML mapping with keys {sorted(SUITE_KEYS)}")
    import jsonschema

    # YAML's 2.0 is not an integer here (jsonschema would accept it as one); "limit": LIMITS
    strict = jsonschema.validators.extend(
        jsonschema.Draft202012Validator,
        validators={"limit": _limit_keyword},
        type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
            "integer", lambda _, x: isinstance(x, int) and not isinstance(x, bool)),
    )
    found = []
    for err in strict(suite_schema()).iter_errors(data):
        msg, path = _schema_message(err)
        found.append((_line(root, path), msg))
    if not found:
        found = _workload_name_problems(root, data)
    if found:
        found.sort(key=lambda t: t[0])  # the first problem in the file
        line, msg = found[0]
        more = f" (and {len(found) - 1} more problem(s))" if len(found) > 1 else ""
        raise ConfigError(f"{source}:{line}: {msg}{more}")
    return root, data


def _workload_name_problems(root: Any, data: Mapping[str, Any]) -> list[tuple[int, str]]:
    """(line, message) for each workload name of the suite that is neither registered
    nor a model a provider knows (``hf:gpt2``, ``custom:f.py:make``): the schema takes
    any string there, so the names are checked here, where the lines are known."""
    plain = registry.names("workload")
    found: list[tuple[int, str]] = []

    def check(name: Any, where: str, path: list[Any]) -> None:
        if not isinstance(name, str):
            return
        try:
            registry.check_name("workload", name)
        except registry.UnknownName as e:
            text = str(e)
            if registry.provider_scheme(registry.split_size(name)[0]) is None:
                text = (f"{name!r} is not valid; choose from: {', '.join(plain)}, or a model SCHEME:NAME "
                        f"(harness list workloads){registry.close_matches(registry.split_size(name)[0], plain)}")
            found.append((_line(root, path), f"{where}: {text}"))

    matrix = data.get("matrix") if isinstance(data.get("matrix"), Mapping) else {}
    workloads = matrix.get("workload")
    if isinstance(workloads, list):
        for i, w in enumerate(workloads):
            check(w, f"matrix.workload[{i}]", ["matrix", "workload", i])
    else:
        check(workloads, "matrix.workload", ["matrix", "workload"])
    if isinstance(matrix.get("batch_size"), Mapping):
        for key in matrix["batch_size"]:
            check(key, f"matrix.batch_size: workload {key!r}", ["matrix", "batch_size", KEY_MARK, key])
    for i, rule in enumerate(data.get("exclude") or []):
        if isinstance(rule, Mapping) and "workload" in rule:
            check(rule["workload"], f"exclude[{i}].workload", ["exclude", i, "workload"])
    return found


KEY_MARK = object()  # in an error path: the next element is a mapping key to point at


def _line(root: Any, path: list[Any]) -> int:
    """1-based line of the node an error path points at."""
    if KEY_MARK in path:
        i = path.index(KEY_MARK)
        node = _key_node(root, path[:i], str(path[i + 1]))
    else:
        node = _node_at(root, path)
    return node.start_mark.line + 1 if node is not None else 1


def parse_suite(text: str, source: str) -> Suite:
    """Parse and validate suite YAML; raise ConfigError naming file, line and what is
    allowed."""
    root, data = validate_suite_yaml(text, source)
    settings_raw = data.get("settings") or {}
    try:
        settings = Settings(**settings_raw)
    except (TypeError, ValueError) as e:  # a rule across fields: point at the field it names
        field_name = next((k for k in settings_raw if str(e).startswith(str(k))), None)
        line = _line(root, ["settings", KEY_MARK, field_name] if field_name else ["settings"])
        raise ConfigError(f"{source}:{line}: settings: {e}") from None
    for i, ws in enumerate(_as_list((data.get("matrix") or {}).get("world_size"))):
        problem = check_workers_per_node(ws, settings.nnodes)
        if problem:
            line = _line(root, ["matrix", "world_size"] + ([i] if isinstance(data["matrix"]["world_size"], list) else []))
            raise ConfigError(f"{source}:{line}: matrix.world_size: {problem}")
    matrix = {k: (v if isinstance(v, dict) else _as_list(v)) for k, v in (data.get("matrix") or {}).items()}
    n_cells = count_cells(matrix)
    if n_cells > MAX_CELLS:
        raise ConfigError(f"{source}:{_line(root, ['matrix'])}: matrix: {_too_many_cells(n_cells)}")
    exclude = data.get("exclude") or []
    return Suite(
        name=str(data.get("name") or Path(source).stem),
        description=str(data.get("description") or ""),
        settings=settings,
        matrix=matrix,
        exclude=exclude,
        source=source,
        targets=_parse_targets(root, data.get("targets") or [], source),
    )


def _parse_targets(root: Any, raw: list[dict[str, Any]], source: str) -> list[Target]:
    """The suite's ``targets`` (already schema-checked): names unique, each with
    ``resources`` or ``node_labels`` (a target with neither would match every node)."""
    out: list[Target] = []
    seen: dict[str, int] = {}
    for i, t in enumerate(raw):
        name = str(t["name"])
        if name in seen:
            raise ConfigError(f"{source}:{_line(root, ['targets', i, 'name'])}: targets[{i}].name: {name!r} "
                              f"is already the name of targets[{seen[name]}]; target names must be unique")
        seen[name] = i
        if not t.get("resources") and not t.get("node_labels"):
            raise ConfigError(f"{source}:{_line(root, ['targets', i])}: targets[{i}] ({name!r}): give resources "
                              "and/or node_labels (what a Ray node must have to be this target)")
        out.append(Target(name=name, resources={str(k): float(v) for k, v in (t.get("resources") or {}).items()},
                          node_labels={str(k): str(v) for k, v in (t.get("node_labels") or {}).items()}))
    return out


def load_suite(name_or_file: str) -> Suite:
    """A built-in suite by name, or a YAML file by path."""
    builtins = builtin_suites()
    if name_or_file in builtins:
        return parse_suite(builtins[name_or_file], f"builtin:{name_or_file}")
    p = Path(name_or_file)
    if p.suffix in (".yaml", ".yml") or p.exists():
        from harness.core import safeyaml

        try:  # at most MAX_BYTES read; UTF-8 only
            text = safeyaml.read_text(p)
        except OSError as e:
            raise ConfigError(f"cannot read suite file {str(p)!r}: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(safeyaml.describe(e, str(p))) from None
        return parse_suite(text, str(p))
    raise ConfigError(
        f"unknown suite {name_or_file!r}; choose a built-in ({', '.join(sorted(builtins))}) "
        "or give a path to a .yaml file"
    )


def apply_overrides(suite: Suite, axes: Mapping[str, Iterable[Any]], settings: Mapping[str, Any]) -> Suite:
    """CLI flags replace the suite's axes / settings where given (non-empty)."""
    matrix = dict(suite.matrix)
    for k, v in axes.items():
        vals = list(v or [])
        if vals:
            matrix[k] = vals
    given = {k: v for k, v in settings.items() if v is not None}
    try:
        new_settings = dataclasses.replace(suite.settings, **given)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None
    return dataclasses.replace(suite, matrix=matrix, settings=new_settings)


def _default(kind: str) -> list[str]:
    return {"backend": ["torch"], "device": ["cpu"], "variant": ["fp32"], "mode": ["inference"]}[kind]


def expand(suite: Suite) -> list[TaskSpec]:
    """The cells of a suite, validated: unknown names raise ConfigError listing the
    valid ones; batch sizes default to each workload's default for the size."""
    m = suite.matrix
    workloads = [str(w) for w in _as_list(m.get("workload"))] or registry.names("workload")
    backends = [str(b) for b in _as_list(m.get("backend"))] or _default("backend")
    variants = [str(v) for v in _as_list(m.get("variant"))] or _default("variant")
    modes = [str(x) for x in _as_list(m.get("mode"))] or _default("mode")
    devices = [normalize_device(str(d)) for d in (_as_list(m.get("device")) or _default("device"))]
    try:
        for kind, values in (("workload", workloads), ("backend", backends), ("variant", variants)):
            for v in values:
                registry.check_name(kind, v)
    except registry.UnknownName as e:
        raise ConfigError(str(e)) from None
    for mode in modes:
        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r}; choose from: {', '.join(MODES)}")
    raw_bs = m.get("batch_size")
    per_workload_bs = raw_bs if isinstance(raw_bs, Mapping) else {}
    batch_sizes: list[int] = []
    for b in [x for v in per_workload_bs.values() for x in _as_list(v)] if per_workload_bs else _as_list(raw_bs):
        problem = check_limit("batch_size", b)
        if problem:
            raise ConfigError(f"batch size {problem}")
        if not per_workload_bs:
            batch_sizes.append(b)
    world_sizes: list[int | None] = []
    for ws in _as_list(m.get("world_size")):
        problem = check_limit("world_size", ws) or check_workers_per_node(ws, suite.settings.nnodes)
        if problem:
            raise ConfigError(f"world size {problem}")
        world_sizes.append(ws)
    if world_sizes and "training" not in modes:
        raise ConfigError("world_size applies to data-parallel training: add --mode training")
    token_lens: dict[str, list[int]] = {}
    for key, default in (("prompt_len", DEFAULT_PROMPT_LEN), ("gen_len", DEFAULT_GEN_LEN)):
        token_lens[key] = []
        for x in _as_list(m.get(key)):
            problem = check_limit(key, x)
            if problem:
                raise ConfigError(f"{key} {problem}")
            token_lens[key].append(int(x))
        if token_lens[key] and "generate" not in modes:
            raise ConfigError(f"{key} applies to generate cells: add --mode generate")
        token_lens[key] = _dedupe(token_lens[key]) or [default]
    generate_lens = list(itertools.product(token_lens["prompt_len"], token_lens["gen_len"]))
    n_cells = count_cells(m)  # before building any: long axes would take minutes and GB
    if n_cells > MAX_CELLS:
        raise ConfigError(f"suite {suite.name!r}: {_too_many_cells(n_cells)}")
    if len(suite.exclude) > MAX_EXCLUDE_RULES:
        raise ConfigError(f"suite {suite.name!r} has {len(suite.exclude):,} exclude rules; at most {MAX_EXCLUDE_RULES:,}")
    size = suite.settings.size
    cells: list[TaskSpec] = []
    seen: set[TaskSpec] = set()
    for w_named in _dedupe(workloads):
        try:
            wcls = registry.load("workload", w_named)
            # per-workload size: NAME@SIZE, else the run's size, else the workload's default
            wsize, _ = registry.effective_size(wcls, w_named, size)
        except (registry.PluginLoadError, registry.UnknownName) as e:
            raise ConfigError(str(e)) from None
        w = registry.split_size(w_named)[0]
        bss = ([int(b) for b in _as_list(per_workload_bs.get(w_named, per_workload_bs.get(w)))]
               if per_workload_bs else batch_sizes) or [int(wcls.default_batch_size.get(wsize, 8))]
        for b, d, v, mode, bs in itertools.product(
            _dedupe(backends), _dedupe(devices), _dedupe(variants), _dedupe(modes), _dedupe(bss)
        ):
            for ws, (plen, glen) in itertools.product(
                    _dedupe(world_sizes) if mode == "training" and world_sizes else [None],
                    generate_lens if mode == "generate" else [(None, None)]):
                if ws is not None and d.startswith("cuda:") and d != "cuda:0":
                    raise ConfigError(f"device {d} with world_size: data-parallel workers use GPUs 0..N-1 of each "
                                      "node (set CUDA_VISIBLE_DEVICES to choose them); give -d cuda")
                spec = TaskSpec(workload=w, backend=b, device=d, variant=v, mode=mode, batch_size=bs,
                                size=wsize, world_size=ws, prompt_len=plen, gen_len=glen)
                if spec in seen or _excluded(spec, suite.exclude):
                    continue
                seen.add(spec)
                cells.append(spec)
    if not cells:
        raise ConfigError(f"suite {suite.name!r} expands to no cells (check 'exclude')")
    return cells


def count_cells(matrix: Mapping[str, Any]) -> int:
    """How many cells ``matrix`` expands to before 'exclude' (an upper bound: duplicates
    after normalisation are counted apart), without expanding it."""

    def n(axis: str, default: int = 1) -> int:
        return len(_dedupe(str(x) for x in _as_list(matrix.get(axis)))) or default

    modes = _dedupe(str(x) for x in _as_list(matrix.get("mode"))) or _default("mode")
    world_sizes = n("world_size", 0)
    per_batch = n("backend") * n("device") * n("variant") * sum(
        world_sizes if mode == "training" and world_sizes else
        n("prompt_len") * n("gen_len") if mode == "generate" else 1 for mode in modes)
    workloads = _dedupe(str(w) for w in _as_list(matrix.get("workload"))) or registry.names("workload")
    raw_bs = matrix.get("batch_size")
    if isinstance(raw_bs, Mapping):
        return sum(per_batch * max(1, len(_dedupe(map(str, _as_list(raw_bs.get(w)))))) for w in workloads)
    return len(workloads) * per_batch * n("batch_size")


def _too_many_cells(n_cells: int) -> str:
    return (f"{n_cells:,} cells (the product of the matrix axes, before 'exclude'); at most {MAX_CELLS:,}: "
            "split it into several suites")


def _dedupe(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def _excluded(spec: TaskSpec, exclude: list[dict[str, Any]]) -> bool:
    d = spec.to_dict()
    return any(all(str(d.get(k)) == str(v) for k, v in rule.items()) for rule in exclude)
