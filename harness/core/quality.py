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


def evaluate_quality(workload: Any, variant: Any, backend: Any = "torch") -> dict[str, Any]:
    """``metrics.quality`` for ``variant`` on ``workload``'s architecture, on ``backend``
    (a :class:`harness.api.Backend` or the name of one, e.g. ``torch`` or
    ``tensorflow``; CPU). The fp32 model is trained with torch (cached); the backend
    evaluates it and the variant with :meth:`harness.api.Backend.quality_logits`.

    Raises :class:`SkipCell` with the reason when the variant, the workload or the
    backend has no quality evaluation here.
    """
    import numpy as np

    name = backend if isinstance(backend, str) else getattr(backend, "name", str(backend))
    impl = backend_for(name, backend)
    if impl is None or not provides(impl, "quality_logits"):
        raise SkipCell(_no_quality_reason(name))
    if getattr(variant, "fp32_math", "ieee") != "ieee":  # the tf32 variant
        raise SkipCell("the quality track runs on the CPU, which has no TF32 (it would evaluate the fp32 model); "
                       "TF32's accuracy cost is not measured")
    qwl = quality_workload(workload)
    data = quality_data(qwl)
    budget = budget_tflop()
    if budget == 0:
        raise SkipCell(f"the quality track is disabled ({BUDGET_ENV}=0)")
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
    out = {
        "accuracy": acc,
        "fp32_accuracy": fp32_acc,
        "accuracy_delta": acc - fp32_acc,
        "agreement": float((pred == fp32_pred).mean()),
        "gate": gate(acc, fp32_acc, threshold),
        "dataset": DATASET,
        "n_eval": int(len(y)),
        "n_train": int(len(data.train_labels)),
        "quality_config": dataclasses.asdict(qwl.config),
        "trained": info,
    }
    extra = fresh.metrics()
    if extra:
        out["variant_metrics"] = extra
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
        metrics["quality"] = evaluate_quality(workload, variant, impl)
    except SkipCell as e:
        missing["quality"] = str(e)
    except Exception as e:  # noqa: BLE001 - a quality failure must not lose the speed result
        missing["quality"] = f"quality evaluation failed: {type(e).__name__}: {e}"[:1000]
    return metrics, missing


__all__ = ["QualityData", "TrainRecipe", "RECIPES", "evaluate_quality", "quality_analysis", "quality_workload",
           "quality_data", "trained_model", "gate", "cache_path", "cache_key", "is_cached", "training_tflop", "budget_tflop"]
