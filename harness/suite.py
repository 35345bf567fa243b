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
    matrix:              # the cartesian product of these axes is the cell list
      workload: [mlp, cnn, transformer]
      backend: [torch]
      device: [cpu]
      variant: [fp32]
      mode: [inference, training]
      batch_size: []     # empty or missing: each workload's default for the size
    exclude:             # optional: drop cells matching all given keys
      - {workload: cnn, mode: training}
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

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose from: {', '.join(MODES)}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")

    @property
    def id(self) -> str:
        return (
            f"{self.workload}/{self.backend}/{self.device}/{self.variant}/"
            f"{self.mode}/bs{self.batch_size}/{self.size}"
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TaskSpec":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})


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

    def __post_init__(self) -> None:
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


AXES = ("workload", "backend", "device", "variant", "mode", "batch_size")
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


def parse_suite(text: str, source: str) -> Suite:
    """Parse suite YAML; raise ConfigError naming what is wrong."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a suite must be a YAML mapping with keys {sorted(SUITE_KEYS)}")
    unknown = set(data) - SUITE_KEYS
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {sorted(unknown)}; allowed: {sorted(SUITE_KEYS)}")
    settings_raw = data.get("settings") or {}
    if not isinstance(settings_raw, dict):
        raise ConfigError(f"{source}: 'settings' must be a mapping")
    allowed = {f.name for f in dataclasses.fields(Settings)}
    bad = set(settings_raw) - allowed
    if bad:
        raise ConfigError(f"{source}: unknown setting(s) {sorted(bad)}; allowed: {sorted(allowed)}")
    try:
        settings = Settings(**settings_raw)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: {e}") from None
    matrix_raw = data.get("matrix") or {}
    if not isinstance(matrix_raw, dict):
        raise ConfigError(f"{source}: 'matrix' must be a mapping of axis -> list")
    bad = set(matrix_raw) - set(AXES)
    if bad:
        raise ConfigError(f"{source}: unknown matrix axis {sorted(bad)}; allowed: {list(AXES)}")
    matrix = {k: _as_list(v) for k, v in matrix_raw.items()}
    exclude = data.get("exclude") or []
    if not isinstance(exclude, list) or not all(isinstance(e, dict) for e in exclude):
        raise ConfigError(f"{source}: 'exclude' must be a list of mappings")
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
    batch_sizes: list[int] = []
    for b in _as_list(m.get("batch_size")):
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ConfigError(f"batch size must be a positive integer, got {b!r}")
        batch_sizes.append(b)
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
        bss = batch_sizes or [int(wcls.default_batch_size.get(size, 8))]
        for b, d, v, mode, bs in itertools.product(
            _dedupe(backends), _dedupe(devices), _dedupe(variants), _dedupe(modes), _dedupe(bss)
        ):
            spec = TaskSpec(workload=w, backend=b, device=d, variant=v, mode=mode, batch_size=bs, size=size)
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
