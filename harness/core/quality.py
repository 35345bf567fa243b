"""The quality track: what a variant costs in accuracy, measured on real data.

Two tracks per cell:

* **speed** — the timed loop, on the requested size preset (synthetic inputs);
* **quality** — this module, run after the timed loop as a post-measurement analysis:
  the same architecture (the preset with its input/output shapes adapted to the data,
  see :func:`harness.workloads.quality_data.quality_config`) is trained in-process on
  scikit-learn's bundled digits (fixed seeds, a few epochs, cached under
  ``results/cache/quality/`` keyed by the architecture, the recipe and the library
  versions), the variant is applied to a copy of that trained fp32 model, and both are
  evaluated on the held-out split.

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

import contextlib
import copy
import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from harness.api import SkipCell
from harness.variants.base import DEFAULT_QUALITY_GATE

#: Environment variable that overrides the cache directory (default ``results/cache``).
CACHE_ENV: str = "DL_HARNESS_CACHE_DIR"
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
SINGLE_THREAD_PARAMS: int = 200_000


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


def cache_dir() -> Path:
    """Where trained quality models are cached: ``$DL_HARNESS_CACHE_DIR`` or
    ``results/cache`` relative to the working directory."""
    return Path(os.environ.get(CACHE_ENV) or Path("results") / "cache")


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


def cache_key(workload_name: str, qconfig: Any, recipe: TrainRecipe) -> str:
    """Hex digest identifying a trained model: architecture, recipe, data, versions."""
    blob = json.dumps(
        {
            "v": CACHE_VERSION,
            "workload": workload_name,
            "config": dataclasses.asdict(qconfig),
            "recipe": dataclasses.asdict(recipe),
            "dataset": DATASET,
            "versions": library_versions(),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass
class QualityData:
    """The digits as the workload's inputs (numpy, in ``input_specs()`` order)."""

    train_inputs: list[Any]
    train_labels: Any
    test_inputs: list[Any]
    test_labels: Any


def quality_workload(workload: Any) -> Any:
    """The workload instance trained for the quality track (SkipCell when none)."""
    from harness.workloads import quality_data as qd

    if workload.name not in qd.SUPPORTED:
        raise SkipCell(f"workload {workload.name!r} has no quality task (digits adapters exist for: {', '.join(qd.SUPPORTED)})")
    if workload.size not in qd.QUALITY_SIZES:
        raise SkipCell(
            f"the quality track trains sizes {', '.join(qd.QUALITY_SIZES)} only; "
            f"training size {workload.size!r} on this machine would take too long"
        )
    try:
        qcfg = qd.quality_config(workload.name, workload.config)
    except ValueError as e:
        raise SkipCell(str(e)) from None
    return type(workload)(size=workload.size, config=qcfg)


def quality_data(qworkload: Any) -> QualityData:
    from harness.workloads import quality_data as qd

    split = qd.load_digits_split()
    return QualityData(
        train_inputs=qd.to_inputs(qworkload.name, qworkload.config, split.train_images),
        train_labels=split.train_labels,
        test_inputs=qd.to_inputs(qworkload.name, qworkload.config, split.test_images),
        test_labels=split.test_labels,
    )


def train_fp32(qworkload: Any, data: QualityData, recipe: TrainRecipe) -> Any:
    """Train the fp32 quality model on the digits (CPU, fixed seed); returns it in eval mode."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    model = qworkload.build("torch")
    xs = [torch.from_numpy(np.ascontiguousarray(a)) for a in data.train_inputs]
    ys = torch.from_numpy(np.asarray(data.train_labels))
    n = len(ys)
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


@contextlib.contextmanager
def training_threads(qworkload: Any) -> Iterator[None]:
    """Train models under :data:`SINGLE_THREAD_PARAMS` parameters on one thread: their
    kernels are too small to gain from more, and on a shared machine extra threads
    spin and wait (20x slower training was seen here). The previous count is restored."""
    import torch

    old = torch.get_num_threads()
    if qworkload.analytic_params() < SINGLE_THREAD_PARAMS:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


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


def cache_path(qworkload: Any) -> Path:
    """Where the trained fp32 quality model of ``qworkload`` is (or would be) cached."""
    key = cache_key(qworkload.name, qworkload.config, RECIPES[qworkload.name])
    return cache_dir() / "quality" / f"{qworkload.name}-{qworkload.size}-{key}.pt"


def trained_model(qworkload: Any, data: QualityData) -> tuple[Any, dict[str, Any]]:
    """The trained fp32 quality model, from the cache when present (atomic writes).

    Returns (model, info) where info says whether it came from the cache, where, and
    how long training took (seconds) when it did not.
    """
    import torch

    recipe = RECIPES[qworkload.name]
    path = cache_path(qworkload)
    model = qworkload.build("torch")
    if path.exists():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval(), {"cache": "hit", "cache_path": str(path)}
        except Exception:  # noqa: BLE001 - a corrupt cache entry is retrained
            pass
    t0 = time.perf_counter()
    model = train_fp32(qworkload, data, recipe)
    seconds = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return model, {"cache": "miss", "cache_path": str(path), "train_time_s": seconds,
                   "recipe": dataclasses.asdict(recipe)}


def gate(accuracy: float, fp32_accuracy: float, threshold: float = DEFAULT_QUALITY_GATE) -> dict[str, Any]:
    """Pass when ``accuracy >= threshold * fp32_accuracy`` (MLPerf-style relative gate)."""
    return {
        "passed": bool(accuracy >= threshold * fp32_accuracy - 1e-12),
        "threshold": threshold,
        "rule": f"accuracy >= {threshold:g} x fp32 accuracy",
    }


def evaluate_quality(workload: Any, variant: Any, backend: str = "torch") -> dict[str, Any]:
    """``metrics.quality`` for ``variant`` on ``workload``'s architecture, on ``backend``
    (``torch`` or ``tensorflow``; CPU). The fp32 model is trained with torch (cached);
    the TensorFlow track loads those weights into the Keras twin.

    Raises :class:`SkipCell` with the reason when the variant or workload has no
    quality evaluation here.
    """
    import numpy as np

    if getattr(variant, "fp32_math", "ieee") != "ieee":  # the tf32 variant
        raise SkipCell("the quality track runs on the CPU, which has no TF32 (it would evaluate the fp32 model); "
                       "TF32's accuracy cost is not measured")
    qwl = quality_workload(workload)
    data = quality_data(qwl)
    budget = budget_tflop()
    if budget == 0:
        raise SkipCell(f"the quality track is disabled ({BUDGET_ENV}=0)")
    cost = training_tflop(qwl, len(data.train_labels), RECIPES[qwl.name])
    if cost > budget and not cache_path(qwl).exists():
        raise SkipCell(
            f"training the {qwl.name} {qwl.size} quality model would cost ~{cost:.1f} TFLOP, over the "
            f"budget of {budget:g} TFLOP; set {BUDGET_ENV} to raise it (the trained model is cached)"
        )
    teacher, info = trained_model(qwl, data)
    recipe = RECIPES[qwl.name]
    calib = [
        [a[i:i + 32] for a in data.train_inputs] for i in range(0, CALIBRATION_SAMPLES, 32)
    ]
    ctx = dict(mode="inference", workload=qwl, calibration=calib,
               train_data=(data.train_inputs, data.train_labels),
               train_epochs=recipe.epochs, train_lr=recipe.lr, train_batch_size=recipe.batch_size)
    fresh = type(variant)(variant.config)
    if backend == "torch":
        from harness.variants._torch_utils import predict

        fp32_logits = predict(teacher, data.test_inputs)
        applied = fresh.apply("torch", copy.deepcopy(teacher), device=_cpu(), **ctx)
        # evaluate what the speed track timed: a model whose weights the variant cast once
        # (fp16/bf16 inference) gets its inputs cast the same way and no autocast
        cast = getattr(fresh, "cast_once_dtype", None)
        cast = cast("torch", "inference") if callable(cast) else None
        if cast is not None:
            logits = predict(applied, data.test_inputs, input_dtype=cast)
        else:
            logits = predict(applied, data.test_inputs, context=lambda: fresh.autocast("torch", "cpu"))
    elif backend == "tensorflow":
        from harness.variants._tf_utils import keras_predict
        from harness.workloads._keras_models import keras_inputs, load_torch_state

        state = {k: v.detach().cpu().numpy() for k, v in teacher.state_dict().items()}

        def keras_teacher() -> Any:
            km = qwl.build("tensorflow")
            load_torch_state(km, state)
            return km

        import tensorflow as tf

        test_inputs = keras_inputs(qwl, data.test_inputs)
        # the quality models' variables and ops are pinned to the host: on a GPU machine
        # TensorFlow would otherwise place them on GPU:0 and add them to the cell's device
        # peak memory (the speed cell's device is the only thing the GPU should hold)
        with tf.device("/CPU:0"):
            fp32_logits = keras_predict(keras_teacher(), test_inputs)
            applied = fresh.apply("tensorflow", keras_teacher(), device="/CPU:0", strategy=None, **ctx)
            if getattr(fresh, "tf_jit_compile", False):  # evaluate what the backend runs: XLA
                keras_model = applied
                jitted = tf.function(lambda x: keras_model(x, training=False), jit_compile=True)

                def applied_xla(x: Any, training: bool = False) -> Any:
                    return jitted(x)

                applied = applied_xla
            with fresh.autocast("tensorflow", "cpu"):
                logits = keras_predict(applied, test_inputs)
    else:
        raise SkipCell(f"the quality track supports the torch and tensorflow backends, not {backend!r}")
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


def _cpu() -> Any:
    import torch

    return torch.device("cpu")


def quality_analysis(*, step: Any, workload: Any, variant: Any, spec: Any, **_: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Post-measurement analysis: model size/params of the speed model on every cell,
    and ``metrics.quality`` on inference cells (torch and tensorflow backends)."""
    metrics: dict[str, Any] = {}
    missing: dict[str, str] = {}
    model = getattr(step, "model", None)
    if model is not None:
        try:
            if spec.backend == "torch":
                from harness.variants._torch_utils import model_stats

                metrics.update(model_stats(model))
            elif spec.backend == "tensorflow":
                from harness.variants._tf_utils import keras_model_stats

                metrics.update(keras_model_stats(model))
        except Exception as e:  # noqa: BLE001 - sizes are optional, never lose the cell
            missing["model_size_bytes"] = f"could not serialize the model: {type(e).__name__}: {e}"[:500]
    if spec.mode != "inference":
        missing["quality"] = "quality is evaluated on inference cells only (it does not depend on the mode)"
        return metrics, missing
    if spec.backend not in ("torch", "tensorflow"):
        missing["quality"] = f"the quality track supports the torch and tensorflow backends, not {spec.backend!r}"
        return metrics, missing
    try:
        metrics["quality"] = evaluate_quality(workload, variant, spec.backend)
    except SkipCell as e:
        missing["quality"] = str(e)
    except Exception as e:  # noqa: BLE001 - a quality failure must not lose the speed result
        missing["quality"] = f"quality evaluation failed: {type(e).__name__}: {e}"[:1000]
    return metrics, missing
