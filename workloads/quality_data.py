"""Real, offline quality data for the built-in workloads: scikit-learn's bundled
``load_digits`` (1,797 8x8 grey-scale digits, pixel values 0..16, 10 classes).

The quality track trains each workload's architecture briefly on these digits and
measures every variant's accuracy on a fixed held-out split. One adapter per workload
turns the 8x8 images into that workload's inputs:

* ``mlp``: the 64 pixels as a feature vector (scaled to [0, 1]); ``input_dim = 64``.
* ``cnn``: the image upsampled (nearest neighbour) to ``quality_image_size`` pixels
  and replicated to 3 channels, scaled to [0, 1].
* ``transformer``: a classification token (id 0) followed by 16 patch tokens, one per
  2x2 patch in row-major order. Each pixel is quantized to 3 levels (0-4, 5-10,
  11-16) and a patch's token id is ``1 + sum(level_i * 3**i)`` (1..81), so
  ``vocab_size >= 82`` and ``seq_len = 17`` (the pooler reads token 0, the
  classification token, as in BERT).

:func:`quality_config` gives the architecture trained for the quality track: the
workload's preset with only its input/output shapes adapted to the data (and 10
classes). Nothing here imports torch; numpy and scikit-learn are imported lazily.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from harness.api import QualityData, SkipCell

#: Workloads that have a digits adapter.
SUPPORTED: tuple[str, ...] = ("mlp", "cnn", "transformer")
#: Size presets the quality track trains (``base`` would take many minutes on a CPU).
QUALITY_SIZES: tuple[str, ...] = ("tiny", "small")
NUM_CLASSES: int = 10
TEST_FRACTION: float = 0.25
SPLIT_SEED: int = 0
#: Transformer tokenization: [CLS] + 2x2 patches of 3-level pixels -> 17 tokens, ids 0..81.
PATCH: int = 2
LEVEL_EDGES: tuple[float, ...] = (4.5, 10.5)  # pixel value thresholds (0..16 scale)
TOKENS: int = (8 // PATCH) ** 2 + 1
TOKEN_VOCAB: int = 3 ** (PATCH * PATCH) + 1
#: Largest image side the CNN quality model uses (the 8x8 digits are upsampled).
MAX_QUALITY_IMAGE: int = 16


@dataclass(frozen=True)
class DigitsSplit:
    """The digits as 8x8 float32 images (values 0..16) with int64 labels."""

    train_images: Any
    train_labels: Any
    test_images: Any
    test_labels: Any


def load_digits_split(test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED) -> DigitsSplit:
    """Stratified train/test split of scikit-learn's bundled digits (no download)."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    d = load_digits()
    images = d.images.astype(np.float32)
    labels = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    return DigitsSplit(xtr, ytr, xte, yte)


def quality_image_size(preset_image_size: int) -> int:
    """CNN quality input side (pixels): the preset's, capped at :data:`MAX_QUALITY_IMAGE`."""
    return max(8, min(int(preset_image_size), MAX_QUALITY_IMAGE))


def quality_config(workload_name: str, config: Any) -> Any:
    """The architecture trained for the quality track: ``config`` (the speed preset) with
    only the input/output shapes adapted to the digits. Raises ``ValueError`` when the
    workload has no digits adapter or the architecture cannot take the data."""
    if workload_name == "mlp":
        return dataclasses.replace(config, input_dim=64, num_classes=NUM_CLASSES)
    if workload_name == "cnn":
        return dataclasses.replace(
            config,
            image_size=quality_image_size(config.image_size),
            in_channels=3,
            num_classes=NUM_CLASSES,
        )
    if workload_name == "transformer":
        if config.vocab_size < TOKEN_VOCAB:
            raise ValueError(
                f"the digits tokenization needs vocab_size >= {TOKEN_VOCAB}, got {config.vocab_size}"
            )
        # dropout only regularizes training (the inference graph is the same); with
        # 1,347 training digits the tiny encoder learns much faster without it
        return dataclasses.replace(
            config,
            seq_len=TOKENS,
            max_positions=max(TOKENS, config.max_positions),
            dropout=0.0,
            num_classes=NUM_CLASSES,
        )
    raise ValueError(
        f"workload {workload_name!r} has no digits adapter (supported: {', '.join(SUPPORTED)})"
    )


def to_inputs(workload_name: str, config: Any, images: Any) -> list[Any]:
    """The workload's model inputs (numpy, in ``input_specs()`` order) for a batch of
    8x8 digit images with values 0..16. ``config`` is the quality config."""
    import numpy as np

    images = np.asarray(images, dtype=np.float32)
    n = images.shape[0]
    if workload_name == "mlp":
        return [(images.reshape(n, 64) / 16.0).astype(np.float32)]
    if workload_name == "cnn":
        size = int(config.image_size)
        # nearest-neighbour upsampling: source pixel for each output pixel
        idx = (np.arange(size) * 8) // size
        up = images[:, idx][:, :, idx] / 16.0
        return [np.repeat(up[:, None, :, :], config.in_channels, axis=1).astype(np.float32)]
    if workload_name == "transformer":
        g = 8 // PATCH
        levels = np.digitize(images, LEVEL_EDGES)  # 0, 1, 2 per pixel
        patches = levels.reshape(n, g, PATCH, g, PATCH).transpose(0, 1, 3, 2, 4)
        patches = patches.reshape(n, g * g, PATCH * PATCH)
        weights = 3 ** np.arange(PATCH * PATCH)
        ids = (patches * weights).sum(-1) + 1
        cls = np.zeros((n, 1), dtype=np.int64)
        return [np.concatenate([cls, ids.astype(np.int64)], axis=1)]
    raise ValueError(
        f"workload {workload_name!r} has no digits adapter (supported: {', '.join(SUPPORTED)})"
    )


def quality_workload(workload: Any) -> Any:
    """The instance trained for the quality track (``Workload.quality_workload`` of the
    built-ins): the same class with :func:`quality_config`; :class:`SkipCell` with the
    reason for a size the quality track does not train or an architecture that cannot
    take the digits."""
    if workload.name not in SUPPORTED:
        raise SkipCell(f"workload {workload.name!r} has no quality task (digits adapters exist for: {', '.join(SUPPORTED)})")
    if workload.size not in QUALITY_SIZES:
        raise SkipCell(
            f"the quality track trains sizes {', '.join(QUALITY_SIZES)} only; "
            f"training size {workload.size!r} on this machine would take too long"
        )
    try:
        qcfg = quality_config(workload.name, workload.config)
    except ValueError as e:
        raise SkipCell(str(e)) from None
    return type(workload)(size=workload.size, config=qcfg)


def digits_data(qworkload: Any) -> QualityData:
    """The digits split as ``qworkload``'s inputs (``Workload.quality_data`` of the built-ins)."""
    split = load_digits_split()
    return QualityData(
        train_inputs=to_inputs(qworkload.name, qworkload.config, split.train_images),
        train_labels=split.train_labels,
        test_inputs=to_inputs(qworkload.name, qworkload.config, split.test_images),
        test_labels=split.test_labels,
    )
