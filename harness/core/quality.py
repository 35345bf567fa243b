"""The quality track: what a variant costs in accuracy, measured on real data.

Two tracks per cell:

* **speed** — the timed loop, on the requested size preset (synthetic inputs);
* **quality** — this module, run after the timed loop as a post-measurement analysis:
  the same architecture (the preset with its input/output shapes adapted to the data:
  :meth:`harness.api.Workload.quality_workload`, the data from
  :meth:`~harness.api.Workload.quality_data`) is trained in-process with torch on
  scikit-learn's bundled digits for the built-ins (fixed seeds, a few epochs, cached in
  the ``quality`` kind of :mod:`harness.core.cache`, keyed by the architecture, the
  recipe, the model's source files and the library versions), the variant is applied to a copy of that trained fp32 model, and both are
  evaluated on the held-out split.

The trained weights then go to the cell's backend
(:meth:`harness.api.Backend.quality_logits`: the torch backend loads them into its
model, the TensorFlow backend into the Keras twin), which applies the variant and
returns the logits of both models; a backend without that capability records the
quality as unavailable with the reason. This module imports no plugin.

The variant sees the same ``apply`` call as in the speed track, plus data in its
context: ``calibration`` (a list of input batches from the training split, for
calibrated quantization) and ``train_data`` (``(inputs, labels)`` of the training
split, for distillation). See :class:`harness.api.Variant`.

Recorded per inference cell (``metrics.quality``)::

    accuracy        top-1 accuracy of the variant on the held-out digits (fraction)
    fp32_accuracy   the same for the trained fp32 model
    accuracy_delta  accuracy - fp32_accuracy
    agreement       fraction of held-out samples where the variant's top-1 class
                    equals the fp32 model's
    gate            {passed, threshold, rule}: passed = accuracy >= threshold * fp32
    dataset, n_eval, n_train, quality_config, trained (cache hit or seconds spent)
    eval_cache      hit | miss | off: whether these numbers were reused from the
                    ``quality_eval`` cache (+ eval_cache_reason when it could not be used)

The evaluation is deterministic given its key (:func:`eval_cache_key`: the trained
model's key, the backend, the variant and its config, their source files, the data,
the library versions and the machine's numerics fingerprint), so it is cached in the
``quality_eval`` kind: a hit returns the stored numbers of the miss that computed them,
without training, loading or applying anything (``trained`` then says so).

plus ``metrics.model_size_bytes`` / ``params`` / ``nonzero_params`` of the *speed*
model (after the variant) on every cell.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.api import DEFAULT_QUALITY_GATE, QualityData, SkipCell, provides
from harness.core import cache

#: Environment variable that overrides the cache directory (see :mod:`harness.core.cache`).
CACHE_ENV: str = cache.DIR_ENV
CACHE_VERSION: int = 1  # bump when the training code changes in a way the key misses
EVAL_CACHE_VERSION: int = 1  # bump when the evaluation changes in a way eval_cache_key misses
#: Libraries whose version can change an evaluation (any backend, any variant: a superset
#: of what one cell uses, so the key never misses one).
EVAL_PACKAGES: tuple[str, ...] = ("torch", "numpy", "scikit-learn", "onnx", "onnxruntime", "tensorflow",
                                  "tensorflow-cpu", "keras", "tf-keras", "ai-edge-litert", "dl-harness")
#: Helper modules the built-in evaluation runs through besides the variant's, backend's
#: and workload's own classes (hashed as files; an absent one is keyed as absent).
EVAL_HELPER_MODULES: tuple[str, ...] = ("harness.core.frameworks.torch_utils", "harness.core.frameworks.keras_utils",
                                        "harness.core.frameworks.torch_precision", "harness.workloads.quality_data")
DATASET: str = "sklearn.datasets.load_digits (1797 8x8 images, 10 classes), stratified 75/25 split, seed 0"
CALIBRATION_SAMPLES: int = 256
#: Environment variable: the largest estimated training cost (TFLOP) the quality track
#: spends on an uncached fp32 model; ``0`` disables the quality track entirely.
BUDGET_ENV: str = "DL_HARNESS_QUALITY_BUDGET_TFLOP"
#: Default budget: about half a minute of training on a 2-core CPU. The tiny presets
#: and the small MLP fit; the small CNN and Transformer need a raised budget (or a
#: cached model).
DEFAULT_BUDGET_TFLOP: float = 0.5
SINGLE_THREAD_PARAMS: int = 200_000  # see harness.core.frameworks.torch_utils.training_threads


@dataclass(frozen=True)
class TrainRecipe:
    """How the fp32 quality model is trained (AdamW, cross-entropy, fixed seed)."""

    epochs: int
    lr: float
    batch_size: int = 64
    weight_decay: float = 1e-4
    seed: int = 0


RECIPES: dict[str, TrainRecipe] = {
    "mlp": TrainRecipe(epochs=30, lr=3e-3),
    "cnn": TrainRecipe(epochs=10, lr=3e-3),
    "transformer": TrainRecipe(epochs=40, lr=5e-3, batch_size=32),
}
#: The recipe of a workload that has a quality task but no entry in :data:`RECIPES`.
DEFAULT_RECIPE: TrainRecipe = TrainRecipe(epochs=10, lr=3e-3)


def recipe_for(workload_name: str) -> TrainRecipe:
    """The training recipe of ``workload_name``'s quality model."""
    return RECIPES.get(workload_name, DEFAULT_RECIPE)


def cache_dir() -> Path:
    """The cache directory (:func:`harness.core.cache.root`); trained quality models
    are in its ``quality/`` folder."""
    return cache.root()


def library_versions() -> dict[str, str]:
    """Versions that change the trained weights (part of the cache key)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "numpy", "scikit-learn", "dl-harness"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "none"
    return out


def cache_key(workload_name: str, qconfig: Any, recipe: TrainRecipe, sources: dict[str, str] | None = None) -> str:
    """Hex digest identifying a trained model: architecture, recipe, data, versions and
    (``sources``) the digests of the source files that define the model."""
    return cache.key(
        what="quality",
        v=CACHE_VERSION,
        workload=workload_name,
        config=dataclasses.asdict(qconfig),
        recipe=dataclasses.asdict(recipe),
        dataset=DATASET,
        versions=library_versions(),
        sources=sources or {},
    )[:32]


def model_sources(qworkload: Any, model: Any = None) -> dict[str, str]:
    """Digests of the source files of the workload class and of every module class of
    its torch model (built when not given) outside torch: editing them retrains."""
    if model is None:
        model = qworkload.build("torch")
    classes = [type(qworkload), *(type(m) for m in model.modules())]
    return cache.source_digests(classes, skip_prefixes=("torch",))


def quality_workload(workload: Any) -> Any:
    """The workload instance trained for the quality track
    (:meth:`harness.api.Workload.quality_workload`; SkipCell when none)."""
    fn = getattr(workload, "quality_workload", None)
    if not callable(fn):
        raise SkipCell(f"workload {getattr(workload, 'name', workload)!r} has no quality task "
                       "(it does not implement Workload.quality_workload)")
    return fn()


def quality_data(qworkload: Any) -> QualityData:
    """The quality data as ``qworkload``'s inputs (:meth:`harness.api.Workload.quality_data`)."""
    return qworkload.quality_data()


def train_fp32(qworkload: Any, data: QualityData, recipe: TrainRecipe) -> Any:
    """Train the fp32 quality model on the digits (CPU, fixed seed); returns it in eval mode."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    model = qworkload.build("torch")
    xs = [torch.from_numpy(np.ascontiguousarray(a)) for a in data.train_inputs]
    ys = torch.from_numpy(np.asarray(data.train_labels))
    n = len(ys)
    from harness.core.frameworks.torch_utils import training_threads

    with torch.random.fork_rng(devices=[]), training_threads(qworkload):
        torch.manual_seed(recipe.seed)
        g = torch.Generator().manual_seed(recipe.seed)
        opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        steps = recipe.epochs * ((n + recipe.batch_size - 1) // recipe.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps)
        model.train()
        for _ in range(recipe.epochs):
            perm = torch.randperm(n, generator=g)
            for i in range(0, n, recipe.batch_size):
                idx = perm[i:i + recipe.batch_size]
                loss = F.cross_entropy(model(*[x[idx] for x in xs]), ys[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    return model.eval()


def training_tflop(qworkload: Any, n_train: int, recipe: TrainRecipe) -> float:
    """Estimated training cost (TFLOP): 3x the analytic forward FLOPs per sample, times
    samples, times epochs."""
    return 3.0 * qworkload.analytic_flops(1) * n_train * recipe.epochs / 1e12


def budget_tflop() -> float:
    """The training budget from ``$DL_HARNESS_QUALITY_BUDGET_TFLOP`` (default 0.5)."""
    raw = os.environ.get(BUDGET_ENV, "").strip()
    if not raw:
        return DEFAULT_BUDGET_TFLOP
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise SkipCell(f"{BUDGET_ENV}={raw!r} is not a number (TFLOP)") from None


def cache_name(qworkload: Any, model: Any = None) -> str:
    """The cache entry name of ``qworkload``'s trained fp32 model: workload, size, key."""
    key = cache_key(qworkload.name, qworkload.config, recipe_for(qworkload.name), model_sources(qworkload, model))
    return f"{qworkload.name}-{qworkload.size}-{key}"


def cache_path(qworkload: Any) -> Path:
    """Where the trained fp32 quality model of ``qworkload`` is (or would be) cached."""
    return cache.path_for("quality", cache_name(qworkload), ".pt")


def is_cached(qworkload: Any) -> bool:
    """Whether a trained model of ``qworkload`` is in the cache (False when disabled)."""
    try:
        return cache.exists("quality", cache_name(qworkload), ".pt")
    except Exception:  # noqa: BLE001 - no cache, no shortcut
        return False


def trained_model(qworkload: Any, data: QualityData) -> tuple[Any, dict[str, Any]]:
    """The trained fp32 quality model, from the cache when present (atomic writes).

    Returns (model, info): ``cache`` is ``hit``, ``miss`` or ``off`` (disabled),
    ``cache_path`` where it is (or would be) stored, ``cache_reason`` why the cache could
    not be used (unreadable entry, unwritable directory, disabled), and when it was
    trained here ``train_time_s`` (seconds) and the recipe. A cache that cannot be read
    or written never fails the cell: the model is trained.
    """
    import torch

    recipe = recipe_for(qworkload.name)
    model = qworkload.build("torch")
    name = cache_name(qworkload, model)

    def load(path: Path) -> Any:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model

    got = cache.get_with("quality", name, ".pt", load)
    info: dict[str, Any] = {"cache": got.status}
    if got.path is not None:
        info["cache_path"] = str(got.path)
    if got.hit:
        return got.value.eval(), info
    t0 = time.perf_counter()
    model = train_fp32(qworkload, data, recipe)
    seconds = time.perf_counter() - t0
    reason = got.reason
    if got.status != cache.OFF:
        reason = cache.put_with("quality", name, ".pt", lambda f: torch.save(model.state_dict(), f)) or reason
    if reason:
        info["cache_reason"] = reason
    info.update(train_time_s=seconds, recipe=dataclasses.asdict(recipe))
    return model, info


_EVAL_VERSIONS: dict[str, str] = {}


def _module_file(name: str) -> str | None:
    import importlib.util
    import sys

    mod = sys.modules.get(name)
    path = getattr(mod, "__file__", None)
    if path:
        return path
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None and spec.has_location else None


def _private_siblings(objs: Any) -> dict[str, str]:
    """Digests of the private helper modules (``_*.py``, ``__init__.py``) next to the
    modules defining ``objs``' classes, when those are in a package: e.g. the
    exporters ``harness/variants/_torch_utils.py`` that a variant imports lazily."""
    import sys

    out: dict[str, str] = {}
    for obj in objs:
        mod_name = getattr(obj, "__module__", "") or ""
        mod = sys.modules.get(mod_name)
        path = getattr(mod, "__file__", None)
        if not path or "." not in mod_name:  # a top-level module: its directory is not its own
            continue
        for f in sorted(Path(path).parent.glob("_*.py")):
            out[f"{mod_name.rsplit('.', 1)[0]}/{f.name}"] = cache.file_digest(f)
    return out


def _config_dict(config: Any) -> Any:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return repr(config)


def eval_cache_key(qwl: Any, variant: Any, impl: Any, device_type: str = "cpu") -> str:
    """Hex digest identifying one quality evaluation (:func:`evaluate_quality`): every
    part that can change its numbers (see docs/cache.md, "Quality evaluations"),
    computed without importing a framework or loading the data, so a hit costs
    milliseconds even in a TensorFlow worker. It holds every part of the trained
    model's key (:func:`cache_key`) except the source files of the model's torch module
    classes, which only a built torch model can name: the entry stores those files and
    their digests, and :func:`evaluate_quality` re-checks them on a hit. The data is
    keyed by its description (:data:`DATASET`), the code that makes it (the workload's
    classes, ``harness.workloads.quality_data``) and the scikit-learn version."""
    import sys

    if not _EVAL_VERSIONS:
        _EVAL_VERSIONS.update(cache.package_versions(*EVAL_PACKAGES))
    versions = dict(_EVAL_VERSIONS)
    versions.update(cache.package_versions(*[p for p in getattr(impl, "framework_packages", ())
                                             if p not in versions]))
    classes = [type(variant), type(impl), type(qwl), evaluate_quality]
    sources = cache.source_digests(classes, skip_prefixes=("torch", "tensorflow", "keras"))
    sources.update(_private_siblings(classes))
    sources.update({m: cache.file_digest(f) if (f := _module_file(m)) else "absent" for m in EVAL_HELPER_MODULES})
    return cache.key(
        what="quality_eval",
        v=EVAL_CACHE_VERSION,
        trained=dict(v=CACHE_VERSION, workload=qwl.name, size=getattr(qwl, "size", None),
                     config=_config_dict(qwl.config), recipe=dataclasses.asdict(recipe_for(qwl.name)),
                     versions=library_versions()),
        backend=getattr(impl, "name", type(impl).__name__),
        backend_config=_config_dict(getattr(impl, "config", None)),
        variant=getattr(variant, "name", type(variant).__name__),
        variant_config=_config_dict(getattr(variant, "config", None)),
        sources=sources,
        dataset=DATASET,
        calibration_samples=CALIBRATION_SAMPLES,
        default_gate=DEFAULT_QUALITY_GATE,
        versions=versions,
        # kernels split reductions by thread: torch's count where torch evaluates (another
        # backend's thread settings are in its config), and the CPUs this process may use
        threads=(sys.modules["torch"].get_num_threads()
                 if "torch" in sys.modules and "torch" in getattr(impl, "framework_packages", ()) else None),
        cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        machine=cache.machine_fingerprint(device_type),
    )[:32]


def _stale_entry(value: Any) -> str | None:
    """Why a stored evaluation cannot be used (None when it can): malformed, or a source
    file of the trained model's classes changed since it was stored."""
    try:
        quality, sources = value["quality"], value["model_sources"]
        if not (isinstance(quality, dict) and "accuracy" in quality and isinstance(value["trained_model"], str)):
            raise ValueError("no quality record")
        for name, (path, digest) in sources.items():
            if path is None:
                return f"not reused: {name} has no source file to check"
            if cache.file_digest(path) != digest:
                return f"the stored evaluation is stale: the source of {name} changed"
    except Exception as e:  # noqa: BLE001 - a malformed entry is recomputed (and overwritten)
        return f"the stored evaluation is malformed: {type(e).__name__}: {e}"[:300]
    return None


def gate(accuracy: float, fp32_accuracy: float, threshold: float = DEFAULT_QUALITY_GATE) -> dict[str, Any]:
    """Pass when ``accuracy >= threshold * fp32_accuracy`` (MLPerf-style relative gate)."""
    return {
        "passed": bool(accuracy >= threshold * fp32_accuracy - 1e-12),
        "threshold": threshold,
        "rule": f"accuracy >= {threshold:g} x fp32 accuracy",
    }


def backend_for(name: str, backend: Any = None) -> Any:
    """The backend object for the cell: ``backend`` when the worker handed it over,
    else a fresh instance of the registered ``name`` (no setup: nothing is imported
    until a capability needs its framework); None when ``name`` cannot be loaded."""
    if backend is not None and not isinstance(backend, str):
        return backend
    from harness.core import registry

    try:
        return registry.load("backend", name)()
    except Exception:  # noqa: BLE001 - an unknown or broken backend simply has no capability
        return None


def quality_backends() -> list[str]:
    """Names of the installed backends with a quality track (``Backend.quality_logits``)."""
    from harness.core import registry

    out = []
    for name in registry.names("backend"):
        try:
            if provides(registry.load("backend", name), "quality_logits"):
                out.append(name)
        except Exception:  # noqa: BLE001 - a broken plugin is reported where it is used
            continue
    return out


def _no_quality_reason(name: str) -> str:
    return f"the quality track supports the {' and '.join(quality_backends()) or 'no'} backends, not {name!r}"


def evaluate_quality(workload: Any, variant: Any, backend: Any = "torch", device: str = "cpu") -> dict[str, Any]:
    """``metrics.quality`` for ``variant`` on ``workload``'s architecture, on ``backend``
    (a :class:`harness.api.Backend` or the name of one, e.g. ``torch`` or
    ``tensorflow``; CPU). The fp32 model is trained with torch (cached); the backend
    evaluates it and the variant with :meth:`harness.api.Backend.quality_logits`.
    ``device`` is the cell's device (its type, and the GPU for ``cuda``, are part of
    the evaluation cache key).

    The result is cached (``quality_eval``, :func:`eval_cache_key`): ``eval_cache`` is
    ``hit`` (the stored numbers, nothing evaluated), ``miss`` or ``off``.

    Raises :class:`SkipCell` with the reason when the variant, the workload or the
    backend has no quality evaluation here.
    """
    import json

    import numpy as np

    name = backend if isinstance(backend, str) else getattr(backend, "name", str(backend))
    impl = backend_for(name, backend)
    if impl is None or not provides(impl, "quality_logits"):
        raise SkipCell(_no_quality_reason(name))
    if getattr(variant, "fp32_math", "ieee") != "ieee":  # the tf32 variant
        raise SkipCell("the quality track runs on the CPU, which has no TF32 (it would evaluate the fp32 model); "
                       "TF32's accuracy cost is not measured")
    qwl = quality_workload(workload)
    budget = budget_tflop()
    if budget == 0:
        raise SkipCell(f"the quality track is disabled ({BUDGET_ENV}=0)")
    ekey: str | None = None
    eval_reason: str | None = None
    if not cache.enabled():
        got = cache.Lookup(cache.OFF, reason=cache.disabled_reason())
    else:
        try:
            ekey = f"{qwl.name}-{qwl.size}-{eval_cache_key(qwl, variant, impl, str(device).split(':')[0])}"
            got = cache.get_json("quality_eval", ekey)
        except Exception as e:  # noqa: BLE001 - no key, no cache: evaluate
            got = cache.Lookup(cache.MISS, reason=f"no evaluation cache key: {type(e).__name__}: {e}"[:300])
    if got.hit:
        stale = _stale_entry(got.value)
        if stale is None:
            out = dict(got.value["quality"])
            out["trained"] = {"cache": "unused", "model": got.value["trained_model"],
                              "cache_reason": "the evaluation was reused (eval_cache hit): nothing was trained or loaded"}
            out["eval_cache"] = cache.HIT
            return out
        got = cache.Lookup(cache.MISS, reason=stale, path=got.path)
    data = quality_data(qwl)
    recipe = recipe_for(qwl.name)
    cost = training_tflop(qwl, len(data.train_labels), recipe)
    if cost > budget and not is_cached(qwl):
        raise SkipCell(
            f"training the {qwl.name} {qwl.size} quality model would cost ~{cost:.1f} TFLOP, over the "
            f"budget of {budget:g} TFLOP; set {BUDGET_ENV} to raise it (the trained model is cached)"
        )
    teacher, info = trained_model(qwl, data)
    calib = [
        [a[i:i + 32] for a in data.train_inputs] for i in range(0, CALIBRATION_SAMPLES, 32)
    ]
    ctx = dict(mode="inference", workload=qwl, calibration=calib,
               train_data=(data.train_inputs, data.train_labels),
               train_epochs=recipe.epochs, train_lr=recipe.lr, train_batch_size=recipe.batch_size)
    fresh = type(variant)(variant.config)
    state = {k: v.detach().cpu().numpy() for k, v in teacher.state_dict().items()}
    fp32_logits, logits = impl.quality_logits(qwl, fresh, state, data.test_inputs, ctx)
    y = np.asarray(data.test_labels)
    fp32_pred = np.asarray(fp32_logits).argmax(1)
    pred = np.asarray(logits).argmax(1)
    fp32_acc = float((fp32_pred == y).mean())
    acc = float((pred == y).mean())
    threshold = float(getattr(variant.config, "quality_gate", DEFAULT_QUALITY_GATE))
    out: dict[str, Any] = {
        "accuracy": acc,
        "fp32_accuracy": fp32_acc,
        "accuracy_delta": acc - fp32_acc,
        "agreement": float((pred == fp32_pred).mean()),
        "gate": gate(acc, fp32_acc, threshold),
        "dataset": DATASET,
        "n_eval": int(len(y)),
        "n_train": int(len(data.train_labels)),
        "quality_config": dataclasses.asdict(qwl.config),
    }
    extra = fresh.metrics()
    if extra:
        out["variant_metrics"] = extra
    try:  # the record a hit returns, exactly (tuples become lists, as in the stored JSON)
        out = json.loads(json.dumps(out, sort_keys=True))
        storable = True
    except (TypeError, ValueError) as e:
        storable = False
        eval_reason = f"the evaluation cannot be cached as JSON: {type(e).__name__}: {e}"[:300]
    eval_reason = got.reason or eval_reason
    if got.status == cache.OFF:
        pass
    elif info.get("cache") not in (cache.HIT, cache.MISS):
        eval_reason = f"not cached: the trained model's cache status is {info.get('cache')!r}"
    elif storable and ekey is not None:
        files: dict[str, str] = {}
        digests = cache.source_digests([type(qwl), *(type(m) for m in teacher.modules())],
                                       skip_prefixes=("torch",), paths=files)
        entry = {"quality": out, "trained_model": Path(info.get("cache_path") or "").stem,
                 "model_sources": {k: [files.get(k), d] for k, d in sorted(digests.items())}}
        eval_reason = cache.put_json("quality_eval", ekey, entry) or eval_reason
    out["trained"] = info
    out["eval_cache"] = got.status
    if eval_reason:
        out["eval_cache_reason"] = eval_reason
    return out


def quality_analysis(*, step: Any, workload: Any, variant: Any, spec: Any, backend: Any = None,
                     **_: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Post-measurement analysis: model size/params of the speed model on every cell
    (:meth:`harness.api.Backend.model_stats`), and ``metrics.quality`` on inference
    cells of backends with a quality track (:meth:`harness.api.Backend.quality_logits`)."""
    metrics: dict[str, Any] = {}
    missing: dict[str, str] = {}
    impl = backend_for(spec.backend, backend)
    model = getattr(step, "model", None)
    if model is not None and impl is not None:
        try:
            metrics.update(impl.model_stats(model))
        except Exception as e:  # noqa: BLE001 - sizes are optional, never lose the cell
            missing["model_size_bytes"] = f"could not serialize the model: {type(e).__name__}: {e}"[:500]
    if spec.mode != "inference":
        missing["quality"] = "quality is evaluated on inference cells only (it does not depend on the mode)"
        return metrics, missing
    if impl is None or not provides(impl, "quality_logits"):
        missing["quality"] = _no_quality_reason(spec.backend)
        return metrics, missing
    try:
        metrics["quality"] = evaluate_quality(workload, variant, impl, getattr(spec, "device", "cpu") or "cpu")
    except SkipCell as e:
        missing["quality"] = str(e)
    except Exception as e:  # noqa: BLE001 - a quality failure must not lose the speed result
        missing["quality"] = f"quality evaluation failed: {type(e).__name__}: {e}"[:1000]
    return metrics, missing


__all__ = ["QualityData", "TrainRecipe", "RECIPES", "evaluate_quality", "quality_analysis", "quality_workload",
           "quality_data", "trained_model", "gate", "cache_path", "cache_key", "eval_cache_key", "is_cached", "training_tflop", "budget_tflop"]
