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

Files are read with ``yaml.safe_load`` and checked against :func:`suite_schema`; an
error names the file, the line and the allowed values.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from harness import registry
from harness.api import MODES


class ConfigError(ValueError):
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


@dataclass(frozen=True, order=True)
class TaskSpec:
    """The identity of one benchmark cell: the grouping key across runs."""

    workload: str
    backend: str
    device: str
    variant: str
    mode: str
    batch_size: int
    size: str
    # data-parallel training with this many workers (torchrun processes / strategy
    # replicas); None: an ordinary single-process cell. ``batch_size`` is then the
    # per-worker batch, the global batch is ``world_size * batch_size``.
    world_size: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose from: {', '.join(MODES)}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.world_size is not None:
            if isinstance(self.world_size, bool) or not isinstance(self.world_size, int) or self.world_size < 1:
                raise ValueError(f"world_size must be a positive integer, got {self.world_size!r}")
            if self.mode != "training":
                raise ValueError("world_size applies to training cells only (data-parallel training)")

    @property
    def id(self) -> str:
        base = (
            f"{self.workload}/{self.backend}/{self.device}/{self.variant}/"
            f"{self.mode}/bs{self.batch_size}/{self.size}"
        )
        return base if self.world_size is None else f"{base}/ws{self.world_size}"

    @property
    def global_batch_size(self) -> int:
        """Samples per step over all workers."""
        return self.batch_size * (self.world_size or 1)

    def to_dict(self) -> dict[str, Any]:
        """The spec as stored in results; ``world_size`` only for data-parallel cells
        (so single-process cells keep the shape every earlier result file has)."""
        d = dataclasses.asdict(self)
        if d["world_size"] is None:
            del d["world_size"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TaskSpec":
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in d:
                kw[f.name] = d[f.name]
            elif f.default is dataclasses.MISSING:
                raise KeyError(f.name)
        return cls(**kw)


@dataclass(frozen=True)
class Settings:
    """Run-wide settings (not part of a cell's identity)."""

    size: str = "small"
    min_time_s: float = 1.0
    timeout_s: float = 600.0
    threads: int | None = None
    warmup_max_s: float = 3.0
    min_samples: int = 10
    seed: int = 0
    energy_estimate: bool = False  # allow a labelled energy estimate where nothing is measurable
    idle_baseline_s: float = 0.5  # idle power baseline before each cell (where energy is measurable)
    tpu: str | None = None  # TPU name / grpc:// address / 'local' for -d tpu (None: TPU_NAME)
    # data-parallel (world_size) cells with torchrun: passed through to its rendezvous
    nnodes: int = 1  # machines taking part; world_size must be a multiple of it
    rdzv_endpoint: str | None = None  # HOST:PORT of the rendezvous (None with nnodes 1: --standalone)
    rdzv_id: str | None = None  # job id shared by all nodes (None: derived from the cell)
    rdzv_backend: str = "c10d"
    # intra-op threads per CPU data-parallel worker (None: set by the runner to the
    # cores / the largest number of workers per node in the run; recorded)
    worker_threads: int | None = None
    # each cell is measured in this many separate worker processes, interleaved in a
    # randomised order across the suite (randomised multiple interleaved trials), so
    # one result file carries its own run-to-run noise (cell["repeats"])
    repeats: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 1:
            raise ValueError(f"repeats must be a positive integer, got {self.repeats!r}")
        if self.tpu is not None and (not isinstance(self.tpu, str) or not self.tpu.strip()):
            raise ValueError(f"tpu must be a non-empty TPU name or address, got {self.tpu!r}")
        if not isinstance(self.energy_estimate, bool):
            raise ValueError(f"energy_estimate must be true or false, got {self.energy_estimate!r}")
        if not self.idle_baseline_s >= 0:
            raise ValueError(f"idle_baseline_s must be >= 0, got {self.idle_baseline_s}")
        if not self.min_time_s > 0:
            raise ValueError(f"min_time_s must be > 0, got {self.min_time_s}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.warmup_max_s < 0:
            raise ValueError(f"warmup_max_s must be >= 0, got {self.warmup_max_s}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples}")
        if isinstance(self.nnodes, bool) or not isinstance(self.nnodes, int) or self.nnodes < 1:
            raise ValueError(f"nnodes must be a positive integer, got {self.nnodes!r}")
        if not isinstance(self.rdzv_backend, str) or not self.rdzv_backend.strip():
            raise ValueError(f"rdzv_backend must be a non-empty name, got {self.rdzv_backend!r}")
        if self.worker_threads is not None and (isinstance(self.worker_threads, bool) or self.worker_threads < 1):
            raise ValueError(f"worker_threads must be >= 1, got {self.worker_threads!r}")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError("nnodes > 1 needs rdzv_endpoint (HOST:PORT of the rendezvous, the same on every node)")


AXES = ("workload", "backend", "device", "variant", "mode", "batch_size", "world_size")
SUITE_KEYS = {"name", "description", "settings", "matrix", "exclude"}


@dataclass
class Suite:
    name: str
    description: str = ""
    settings: Settings = field(default_factory=Settings)
    matrix: dict[str, list[Any]] = field(default_factory=dict)
    exclude: list[dict[str, Any]] = field(default_factory=list)
    source: str = "<cli>"

    def to_record(self, cells: int) -> dict[str, Any]:
        """How the suite is stored in a result file (the suite as run)."""
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "settings": dataclasses.asdict(self.settings),
            "matrix": self.matrix,
            "exclude": self.exclude,
            "cells": cells,
        }


def builtin_suites() -> dict[str, str]:
    """Built-in suite name -> YAML text."""
    out: dict[str, str] = {}
    for entry in resources.files("harness").joinpath("suites").iterdir():
        if entry.name.endswith(".yaml"):
            out[entry.name[: -len(".yaml")]] = entry.read_text()
    return out


def _as_list(v: Any) -> list[Any]:
    if v is None:
        return []
    return list(v) if isinstance(v, (list, tuple)) else [v]


SETTING_TYPES: dict[str, Any] = {
    "size": {"type": "string"},
    "min_time_s": {"type": "number", "exclusiveMinimum": 0},
    "timeout_s": {"type": "number", "exclusiveMinimum": 0},
    "threads": {"type": ["integer", "null"], "minimum": 1},
    "warmup_max_s": {"type": "number", "minimum": 0},
    "min_samples": {"type": "integer", "minimum": 1},
    "seed": {"type": "integer"},
    "energy_estimate": {"type": "boolean"},
    "idle_baseline_s": {"type": "number", "minimum": 0},
    "tpu": {"type": ["string", "null"], "minLength": 1},
    "nnodes": {"type": "integer", "minimum": 1},
    "rdzv_endpoint": {"type": ["string", "null"], "minLength": 1},
    "rdzv_id": {"type": ["string", "null"], "minLength": 1},
    "rdzv_backend": {"type": "string", "minLength": 1},
    "worker_threads": {"type": ["integer", "null"], "minimum": 1},
    "repeats": {"type": "integer", "minimum": 1},
}


def suite_schema() -> dict[str, Any]:
    """JSON Schema of a suite file; plugin names come from the registry (entry points,
    nothing imported), so an unknown name's error lists the installed ones."""

    def axis(item: dict[str, Any]) -> dict[str, Any]:
        return {"anyOf": [item, {"type": "array", "items": item}, {"type": "null"}]}

    positive = axis({"type": "integer", "minimum": 1})
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
                    "workload": axis({"enum": registry.names("workload")}),
                    "backend": axis({"enum": registry.names("backend")}),
                    "variant": axis({"enum": registry.names("variant")}),
                    "device": axis({"type": "string", "pattern": DEVICE_RE.pattern}),
                    "mode": axis({"enum": list(MODES)}),
                    # a list for every workload, or per workload {mlp: [512], cnn: [64]}
                    "batch_size": {"anyOf": [*positive["anyOf"], {
                        "type": "object", "propertyNames": {"enum": registry.names("workload")},
                        "additionalProperties": positive}]},
                    "world_size": positive,
                },
            },
            "exclude": {
                "type": ["array", "null"],
                "items": {
                    "type": "object", "minProperties": 1, "additionalProperties": False,
                    "properties": {
                        "workload": {"enum": registry.names("workload")},
                        "backend": {"enum": registry.names("backend")},
                        "variant": {"enum": registry.names("variant")},
                        "device": {"type": "string", "pattern": DEVICE_RE.pattern},
                        "mode": {"enum": list(MODES)},
                        "batch_size": {"type": "integer", "minimum": 1},
                        "world_size": {"type": "integer", "minimum": 1},
                        "size": {"type": "string"},
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
        return (f"{where}: unknown key {extra[0]!r}; allowed: {', '.join(allowed)}", path + [KEY_MARK, extra[0]])
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
        sub_errs = [s for s in (err.context or []) if s.validator in ("enum", "type", "pattern", "minimum")]
        if sub_errs:
            return _schema_message(sub_errs[0])
    if v == "pattern" and path and "device" in map(str, path):
        return f"{where}: unknown device {err.instance!r}; choose from: {VALID_DEVICES}", path
    if v == "propertyNames":
        allowed = (err.validator_value or {}).get("enum") or []
        bad = sorted(str(k) for k in err.instance if k not in allowed)
        key = bad[0] if bad else "?"
        return f"{where}: unknown key {key!r}; choose from: {', '.join(map(str, allowed))}", path + [KEY_MARK, key]
    if v == "type":
        want = err.validator_value if isinstance(err.validator_value, str) else " or ".join(err.validator_value)
        return f"{where}: {err.instance!r} is not of type {want}", path
    if v in ("minimum", "exclusiveMinimum"):
        op = ">=" if v == "minimum" else ">"
        return f"{where}: must be {op} {err.validator_value}, got {err.instance!r}", path
    return f"{where}: {err.message}", path


def validate_suite_yaml(text: str, source: str) -> Any:
    """Parse ``text`` with the safe loader and check it against :func:`suite_schema`;
    raise ConfigError ``FILE:LINE: what is wrong; allowed values``."""
    from harness import safeyaml

    try:  # one parse: the node tree (for line numbers) and the data, bounded (alias bombs)
        data, root = safeyaml.load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{source}{line}: invalid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: a suite must be a YAML mapping with keys {sorted(SUITE_KEYS)}")
    import jsonschema

    # YAML's 2.0 is not an integer here (jsonschema would accept it as one)
    strict = jsonschema.validators.extend(
        jsonschema.Draft202012Validator,
        type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
            "integer", lambda _, x: isinstance(x, int) and not isinstance(x, bool)),
    )
    found = []
    for err in strict(suite_schema()).iter_errors(data):
        msg, path = _schema_message(err)
        found.append((_line(root, path), msg))
    if found:
        found.sort(key=lambda t: t[0])  # the first problem in the file
        line, msg = found[0]
        more = f" (and {len(found) - 1} more problem(s))" if len(found) > 1 else ""
        raise ConfigError(f"{source}:{line}: {msg}{more}")
    return root, data


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
        if ws % settings.nnodes:
            line = _line(root, ["matrix", "world_size"] + ([i] if isinstance(data["matrix"]["world_size"], list) else []))
            raise ConfigError(f"{source}:{line}: matrix.world_size: {ws} is not a multiple of nnodes "
                              f"{settings.nnodes} (every node runs world_size / nnodes workers)")
    matrix = {k: (v if isinstance(v, dict) else _as_list(v)) for k, v in (data.get("matrix") or {}).items()}
    exclude = data.get("exclude") or []
    return Suite(
        name=str(data.get("name") or Path(source).stem),
        description=str(data.get("description") or ""),
        settings=settings,
        matrix=matrix,
        exclude=exclude,
        source=source,
    )


def load_suite(name_or_file: str) -> Suite:
    """A built-in suite by name, or a YAML file by path."""
    builtins = builtin_suites()
    if name_or_file in builtins:
        return parse_suite(builtins[name_or_file], f"builtin:{name_or_file}")
    p = Path(name_or_file)
    if p.suffix in (".yaml", ".yml") or p.exists():
        try:
            text = p.read_text()
        except OSError as e:
            raise ConfigError(f"cannot read suite file {str(p)!r}: {e.strerror or e}") from None
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
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ConfigError(f"batch size must be a positive integer, got {b!r}")
        if not per_workload_bs:
            batch_sizes.append(b)
    world_sizes: list[int | None] = []
    for ws in _as_list(m.get("world_size")):
        if isinstance(ws, bool) or not isinstance(ws, int) or ws < 1:
            raise ConfigError(f"world size must be a positive integer, got {ws!r}")
        if ws % suite.settings.nnodes:
            raise ConfigError(f"world size {ws} is not a multiple of nnodes {suite.settings.nnodes} "
                              "(every node runs world_size / nnodes workers)")
        world_sizes.append(ws)
    if world_sizes and "training" not in modes:
        raise ConfigError("world_size applies to data-parallel training: add --mode training")
    size = suite.settings.size
    cells: list[TaskSpec] = []
    seen: set[TaskSpec] = set()
    for w in _dedupe(workloads):
        try:
            wcls = registry.load("workload", w)
        except registry.PluginLoadError as e:
            raise ConfigError(str(e)) from None
        if size not in wcls.presets:
            raise ConfigError(
                f"unknown size {size!r} for workload {w!r}; choose from: {', '.join(wcls.presets)}"
            )
        bss = ([int(b) for b in _as_list(per_workload_bs.get(w))] if per_workload_bs else batch_sizes) or [
            int(wcls.default_batch_size.get(size, 8))]
        for b, d, v, mode, bs in itertools.product(
            _dedupe(backends), _dedupe(devices), _dedupe(variants), _dedupe(modes), _dedupe(bss)
        ):
            for ws in (_dedupe(world_sizes) if mode == "training" and world_sizes else [None]):
                if ws is not None and d.startswith("cuda:") and d != "cuda:0":
                    raise ConfigError(f"device {d} with world_size: data-parallel workers use GPUs 0..N-1 of each "
                                      "node (set CUDA_VISIBLE_DEVICES to choose them); give -d cuda")
                spec = TaskSpec(workload=w, backend=b, device=d, variant=v, mode=mode, batch_size=bs,
                                size=size, world_size=ws)
                if spec in seen or _excluded(spec, suite.exclude):
                    continue
                seen.add(spec)
                cells.append(spec)
    if not cells:
        raise ConfigError(f"suite {suite.name!r} expands to no cells (check 'exclude')")
    return cells


def _dedupe(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def _excluded(spec: TaskSpec, exclude: list[dict[str, Any]]) -> bool:
    d = spec.to_dict()
    return any(all(str(d.get(k)) == str(v) for k, v in rule.items()) for rule in exclude)
