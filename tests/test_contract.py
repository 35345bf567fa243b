"""The plugin contract: everything the harness asks of a plugin is in harness/api.py.

* Every installed backend, workload, variant and collector (from the registry, i.e.
  the entry points) provides what the API requires: abstract methods implemented,
  names that match their entry point, valid presets, batch sizes, modes and input
  specs, and declared capabilities that agree with the methods behind them.
* Third-party packages under tests/fixtures/third_party/ (one backend, one workload,
  one variant, one collector; numpy only) are added with no edit to this repository:
  the CLI lists them and ``harness run`` with all four produces a real measured cell.
* A plugin that forgets something fails with a message that names what is missing.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest

from harness import api
from harness.core import registry
from tests.conftest import ROOT, only_result

THIRD_PARTY = Path(__file__).resolve().parent / "fixtures" / "third_party"
PACKAGES = ("backend_numpy", "workload_numpy", "variant_numpy", "collector_wall")
ALL_PACKAGES = (*PACKAGES, "backend_broken")


# ------------------------------------------------------------------ the contract checks


def _abstract(cls: type) -> list[str]:
    return sorted(getattr(cls, "__abstractmethods__", ()) or ())


def _common(kind: str, name: str, cls: Any, base: type, config_base: type) -> list[str]:
    problems = []
    if not (isinstance(cls, type) and issubclass(cls, base)):
        return [f"{kind} {name!r} is not a subclass of harness.api.{base.__name__}"]
    for method in _abstract(cls):
        problems.append(f"{kind} {name!r} does not implement {base.__name__}.{method}")
    if getattr(cls, "name", None) != name:
        problems.append(f"{kind} {name!r}: class name attribute {getattr(cls, 'name', None)!r} != entry point")
    if not isinstance(getattr(cls, "description", ""), str):
        problems.append(f"{kind} {name!r}: description must be a str")
    cfg = getattr(cls, "Config", None)
    if not (isinstance(cfg, type) and dataclasses.is_dataclass(cfg) and issubclass(cfg, config_base)):
        problems.append(f"{kind} {name!r}: Config must be a dataclass subclass of {config_base.__name__}")
    elif not cfg.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        problems.append(f"{kind} {name!r}: Config must be a frozen dataclass")
    return problems


def workload_problems(name: str, cls: Any) -> list[str]:
    """What ``cls`` (registered as workload ``name``) lacks of the Workload contract."""
    problems = _common("workload", name, cls, api.Workload, api.WorkloadConfig)
    if problems:
        return problems
    presets = getattr(cls, "presets", None) or {}
    if "tiny" not in presets:
        problems.append(f"workload {name!r}: presets must include 'tiny' (what tests and smoke runs use)")
    for size, cfg in presets.items():
        if not isinstance(cfg, cls.Config):
            problems.append(f"workload {name!r}: preset {size!r} is not a {cls.Config.__name__}")
        bs = getattr(cls, "default_batch_size", {}).get(size)
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
            problems.append(f"workload {name!r}: default_batch_size[{size!r}] must be an int >= 1, got {bs!r}")
    modes = tuple(getattr(cls, "modes", ()))
    if not modes or not set(modes) <= set(api.MODES):
        problems.append(f"workload {name!r}: modes {modes!r} must be a non-empty subset of {api.MODES}")
    builders = [m[len("build_"):] for m, _ in inspect.getmembers(cls, callable) if m.startswith("build_")]
    if not builders:
        problems.append(f"workload {name!r} has no build_<backend>() method, so no backend can run it")
    if problems or "tiny" not in presets:
        return problems
    w = cls(size="tiny")
    specs = list(w.input_specs())
    if not specs:
        problems.append(f"workload {name!r}: input_specs() is empty")
    for spec in specs:
        if spec.dtype not in ("float32", "int64"):
            problems.append(f"workload {name!r}: input {spec.name!r} dtype {spec.dtype!r} (float32 or int64)")
        if not all(isinstance(d, int) and d >= 1 for d in spec.shape):
            problems.append(f"workload {name!r}: input {spec.name!r} shape {spec.shape!r} (positive ints)")
        if spec.dtype == "int64" and not spec.high:
            problems.append(f"workload {name!r}: integer input {spec.name!r} needs `high` (exclusive bound)")
    arrays, labels = w.make_inputs(3)
    if [a.shape for a in arrays] != [(3, *s.shape) for s in specs] or labels.shape != (3,):
        problems.append(f"workload {name!r}: make_inputs shapes do not follow input_specs")
    params, f1, f2 = w.analytic_params(), w.analytic_flops(1), w.analytic_flops(2)
    if not (isinstance(params, int) and params > 0):
        problems.append(f"workload {name!r}: analytic_params() must be a positive int, got {params!r}")
    if not (isinstance(f1, int) and f1 > 0 and f2 == 2 * f1):
        problems.append(f"workload {name!r}: analytic_flops(b) must be a positive int linear in b ({f1!r}, {f2!r})")
    if w.analytic_flops_for(2, "training") < f2:
        problems.append(f"workload {name!r}: training FLOPs below the forward pass")
    if len(w.backend_inputs("anything", arrays)) != len(arrays):
        problems.append(f"workload {name!r}: backend_inputs changed the number of inputs")
    return problems


def backend_problems(name: str, cls: Any) -> list[str]:
    """What ``cls`` (registered as backend ``name``) lacks of the Backend contract."""
    problems = _common("backend", name, cls, api.Backend, api.BackendConfig)
    if problems:
        return problems
    ok, why = cls.is_installed()
    if not isinstance(ok, bool) or not isinstance(why, str) or (not ok and not why):
        problems.append(f"backend {name!r}: is_installed() must return (bool, reason when False)")
    engine = getattr(cls, "data_parallel", None)
    if engine not in (None, "torchrun", "in-process"):
        problems.append(f"backend {name!r}: data_parallel {engine!r} (None, 'torchrun' or 'in-process')")
    if engine is not None and not api.provides(cls, "prepare_data_parallel"):
        problems.append(f"backend {name!r} declares data_parallel={engine!r} but does not implement "
                        "Backend.prepare_data_parallel")
    if getattr(cls, "flop_counter", None) and not api.provides(cls, "count_flops"):
        problems.append(f"backend {name!r} names a flop_counter but does not implement Backend.count_flops")
    for pkg in getattr(cls, "framework_packages", ()):
        if not isinstance(pkg, str) or not pkg:
            problems.append(f"backend {name!r}: framework_packages must be package names, got {pkg!r}")
    return problems


def variant_problems(name: str, cls: Any, backends: list[str]) -> list[str]:
    """What ``cls`` (registered as variant ``name``) lacks of the Variant contract."""
    problems = _common("variant", name, cls, api.Variant, api.VariantConfig)
    if problems:
        return problems
    v = cls()
    if not any(v.supports_backend(b) for b in backends):
        problems.append(f"variant {name!r} has no apply_<backend> method for any installed backend ({backends})")
    if cls.fp32_math not in ("ieee", "tf32"):
        problems.append(f"variant {name!r}: fp32_math {cls.fp32_math!r} ('ieee' or 'tf32')")
    if bool(cls.jit_compile) != bool(cls.tf_jit_compile):
        problems.append(f"variant {name!r}: jit_compile and its older name tf_jit_compile disagree")
    gate = getattr(v.config, "quality_gate", api.DEFAULT_QUALITY_GATE)
    if not 0 < gate <= 1:
        problems.append(f"variant {name!r}: quality_gate {gate!r} must be in (0, 1]")
    for backend in backends:
        for mode in api.MODES:
            cast = v.cast_once_dtype(backend, mode)
            if cast is not None and cast not in ("float16", "bfloat16"):
                problems.append(f"variant {name!r}: cast_once_dtype {cast!r} is not a torch dtype name")
    return problems


def collector_problems(name: str, cls: Any) -> list[str]:
    """What ``cls`` (registered as collector ``name``) lacks of the Collector contract."""
    problems = _common("collector", name, cls, api.Collector, api.CollectorConfig)
    if problems:
        return problems
    col = cls()
    spec = {"workload": "mlp", "backend": "torch", "device": "cpu", "variant": "fp32", "mode": "inference",
            "batch_size": 8, "size": "tiny"}
    if not isinstance(col.applies_to(spec), bool):
        problems.append(f"collector {name!r}: applies_to must return a bool")
    return problems


# --------------------------------------------------------- every installed plugin


@pytest.mark.parametrize("name", registry.names("workload"))
def test_installed_workload_meets_the_contract(name: str) -> None:
    assert workload_problems(name, registry.load("workload", name)) == []


@pytest.mark.parametrize("name", registry.names("backend"))
def test_installed_backend_meets_the_contract(name: str) -> None:
    assert backend_problems(name, registry.load("backend", name)) == []


@pytest.mark.parametrize("name", registry.names("variant"))
def test_installed_variant_meets_the_contract(name: str) -> None:
    assert variant_problems(name, registry.load("variant", name), registry.names("backend")) == []


@pytest.mark.parametrize("name", registry.names("collector"))
def test_installed_collector_meets_the_contract(name: str) -> None:
    assert collector_problems(name, registry.load("collector", name)) == []


def test_every_builtin_workload_runs_on_a_builtin_backend_and_every_variant_on_one() -> None:
    backends = registry.names("backend")
    for name in registry.names("workload"):
        w = registry.load("workload", name)()
        assert any(w.supports_backend(b) for b in backends), name


# ------------------------------------------------------------ the API's defaults


def test_optional_capabilities_default_to_neutral_or_a_reason() -> None:
    class B(api.Backend):
        name = "b"

        def list_devices(self) -> list[api.DeviceInfo]:
            return []

        def prepare(self, *a: Any, **k: Any) -> api.Step:
            raise NotImplementedError

    class W(api.Workload):
        name = "w"
        presets = {"tiny": api.WorkloadConfig()}
        default_batch_size = {"tiny": 2}

        def input_specs(self) -> list[api.InputSpec]:
            return [api.InputSpec("x", (3,), "float32")]

        def analytic_params(self) -> int:
            return 1

        def analytic_flops(self, batch_size: int) -> int:
            return batch_size

    b, w = B(), W()
    assert b.resolve_device("cuda:3") == "cuda:3" and b.model_stats(object()) == {}
    assert not api.provides(b, "count_flops") and not api.provides(b, "quality_logits")
    with pytest.raises(NotImplementedError, match="no FLOP counter"):
        b.count_flops(None, None, "cpu")  # type: ignore[arg-type]
    with pytest.raises(api.SkipCell, match="Backend.quality_logits"):
        b.quality_logits(w, None, {}, [], {})  # type: ignore[arg-type]
    arrays, _ = w.make_inputs(2)
    assert w.backend_inputs("tensorflow", arrays)[0] is arrays[0]
    with pytest.raises(api.SkipCell, match="Workload.quality_workload"):
        w.quality_workload()
    with pytest.raises(api.SkipCell, match="Workload.prune_structured"):
        w.prune_structured("torch", object(), 0.5)
    assert w.structured_pruned(0.5) is None
    assert api.provides(registry.load("backend", "torch"), "count_flops")
    assert api.provides(registry.load("backend", "tensorflow"), "quality_logits")
    assert not api.provides(registry.load("backend", "tensorflow"), "count_flops")


def test_jit_compile_is_declared_and_its_older_name_still_works() -> None:
    class Old(api.Variant):
        name = "old"
        tf_jit_compile = True

    class New(api.Variant):
        name = "new"
        jit_compile = True

    assert Old.jit_compile and New.tf_jit_compile and not api.Variant.jit_compile
    assert registry.load("variant", "compile").jit_compile is True
    v = registry.load("variant", "fp32")()
    assert v.cast_once_dtype("torch", "inference") is None and v.precision_method("torch", "inference") is None
    assert v.model_analytic_flops(registry.load("workload", "mlp")(), 8, "inference") is None


# ------------------------------------------------------- third-party packages


def _install(monkeypatch: pytest.MonkeyPatch, packages: tuple[str, ...]) -> list[str]:
    """Put fixture packages on the path of this process and of its workers, exactly
    as ``pip install`` would put them (a module + its dist-info)."""
    paths = [str(THIRD_PARTY / p) for p in packages]
    for p in paths:
        monkeypatch.syspath_prepend(p)
    old = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([*paths, *([old] if old else [])]))
    return paths


@pytest.fixture
def third_party(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The four working fixture packages, installed."""
    return _install(monkeypatch, PACKAGES)


@pytest.fixture
def broken_backend(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The numpy workload and variant with a ``numpy`` backend that forgets ``prepare``."""
    return _install(monkeypatch, ("backend_broken", "workload_numpy", "variant_numpy"))


def test_third_party_plugins_meet_the_contract(third_party: list[str]) -> None:
    backends = registry.names("backend")
    assert "numpy" in backends
    assert backend_problems("numpy", registry.load("backend", "numpy")) == []
    assert workload_problems("numpy_mlp", registry.load("workload", "numpy_mlp")) == []
    assert variant_problems("numpy_float16", registry.load("variant", "numpy_float16"), backends) == []
    assert collector_problems("wall_clock", registry.load("collector", "wall_clock")) == []


def test_a_backend_without_prepare_is_named_as_such(broken_backend: list[str]) -> None:
    cls = registry.load("backend", "numpy")
    assert backend_problems("numpy", cls) == ["backend 'numpy' does not implement Backend.prepare"]
    with pytest.raises(TypeError, match="prepare"):
        cls()


def test_the_cli_lists_and_runs_every_third_party_kind(third_party: list[str], cli: Callable[..., Any],
                                                     tmp_path: Path) -> None:
    for kind, name in (("backends", "numpy"), ("workloads", "numpy_mlp"), ("variants", "numpy_float16"),
                       ("collectors", "wall_clock")):
        listing = cli(["list", kind])
        assert listing.returncode == 0 and name in listing.stdout, (kind, listing.stdout, listing.stderr)
    proc = cli(["run", "-w", "numpy_mlp", "-b", "numpy", "-v", "numpy_float16", "--mode", "inference",
                "--size", "tiny", "--min-time", "0.05", "--out", str(tmp_path), "--no-progress"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (cell,) = only_result(tmp_path)["cells"]
    assert cell["status"] == "ok", cell["reason"]
    m = cell["metrics"]
    assert m["params"] == 32 * 64 + 64 + 64 * 10 + 10  # the numpy model's own count
    assert m["flops"] == 2 * 8 * (32 * 64 + 64 * 10) and m["flops_source"] == "analytic"
    assert len(cell["samples_ms"]) >= 5 and m["latency_ms"]["p50"] > 0
    assert cell["runtime"]["precision_method"].startswith("numpy float16")  # the variant's capability
    assert 0 < m["timed_loop_wall_s"] <= m["tracked_wall_s"]  # the collector's metrics
    assert "no FLOP counter" in cell["unavailable"]["bytes_moved_estimate"]
    assert "not 'numpy'" in cell["unavailable"]["quality"]
    # no file of ours names the plugins: discovery went through their dist-info only
    ours = (ROOT / "pyproject.toml").read_text()
    assert not any(n in ours for n in ("numpy_mlp", "numpy_float16", "wall_clock", "dlh_numpy"))


def test_a_run_with_a_broken_backend_fails_the_cell_naming_the_missing_method(
        broken_backend: list[str], cli: Callable[..., Any], tmp_path: Path) -> None:
    proc = cli(["run", "-w", "numpy_mlp", "-b", "numpy", "--mode", "inference", "-v", "numpy_float16",
                "--size", "tiny", "--min-time", "0.05", "--out", str(tmp_path), "--no-progress"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    (cell,) = only_result(tmp_path)["cells"]
    assert cell["status"] == "failed" and "abstract method" in cell["reason"] and "prepare" in cell["reason"]
    assert json.dumps(cell)  # a plain result record


def test_fixture_packages_import_only_the_api(third_party: list[str]) -> None:
    """Each package is independent: it imports harness.api and nothing else of ours."""
    import ast

    for pkg in ALL_PACKAGES:
        for path in (THIRD_PARTY / pkg).glob("*.py"):
            mods = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module:
                    mods.add(node.module)
                elif isinstance(node, ast.Import):
                    mods.update(a.name for a in node.names)
            ours = {m for m in mods if m.split(".")[0] in ("harness", *[p.stem for p in THIRD_PARTY.glob("*/*.py")])}
            assert ours <= {"harness.api"}, (path.name, ours)

