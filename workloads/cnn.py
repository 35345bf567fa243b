"""``cnn``: a ResNet-style image classifier (BasicBlocks); ``base`` is exactly ResNet-18.

=====  =========  ================  ===================  ============  =====  ==========  ==========
size   input      stem              channels             blocks        batch  params      fwd GFLOPs
                                                                                          / sample
=====  =========  ================  ===================  ============  =====  ==========  ==========
tiny   3x16x16    3x3/1, 8ch        (8, 16)              (1, 1)        4           5,266  0.00116
small  3x64x64    3x3/1, 32ch       (32, 64, 128, 256)   (1, 1, 1, 1)  32      1,228,970  0.510
base   3x224x224  7x7/2 64ch, pool  (64, 128, 256, 512)  (2, 2, 2, 2)  32     11,689,512  3.628
=====  =========  ================  ===================  ============  =====  ==========  ==========

(Computed from :meth:`CNNWorkload.analytic_params` / ``analytic_flops(1)``; the tests
check them against the torch model. ResNet-18's 1.8 "GFLOPs" in the literature are
multiply-accumulates; this harness counts 2 FLOPs per MAC.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from harness.api import InputSpec, WorkloadConfig
from harness.workloads import BUILD_SEED, BuiltinWorkload, _check_int, _check_int_tuple

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class CNNConfig(WorkloadConfig):
    """Architecture of the ResNet-style CNN. Defaults are the ``tiny`` preset.

    The first stage has stride 1, every later stage halves the resolution (stride 2).
    Convolutions are padded with ``kernel // 2`` ("same" for stride 1).
    """

    image_size: int = 16  # height = width, pixels
    in_channels: int = 3
    stem_channels: int = 8
    stem_kernel: int = 3  # odd
    stem_stride: int = 1
    stem_pool: bool = False  # 3x3 stride-2 max pool after the stem
    channels: tuple[int, ...] = (8, 16)  # output channels of each stage
    blocks: tuple[int, ...] = (1, 1)  # BasicBlocks in each stage
    num_classes: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("image_size", self.image_size, 1)
        _check_int("in_channels", self.in_channels, 1)
        _check_int("stem_channels", self.stem_channels, 1)
        _check_int("stem_kernel", self.stem_kernel, 1)
        if self.stem_kernel % 2 == 0:
            raise ValueError(f"stem_kernel must be odd (1, 3, 5, 7, ...), got {self.stem_kernel}")
        _check_int("stem_stride", self.stem_stride, 1)
        if not isinstance(self.stem_pool, bool):
            raise ValueError(f"stem_pool must be True or False, got {self.stem_pool!r}")
        _check_int_tuple("channels", self.channels, 1)
        _check_int_tuple("blocks", self.blocks, 1)
        if len(self.blocks) != len(self.channels):
            raise ValueError(
                f"blocks must have one entry per stage (len(channels) = {len(self.channels)}),"
                f" got {self.blocks!r}"
            )


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output height/width (pixels) of a convolution or pooling window."""
    return (size + 2 * padding - kernel) // stride + 1


class CNNWorkload(BuiltinWorkload):
    """ResNet-style CNN (stem, stages of BasicBlocks, global average pool, Linear head).

    Notation: ``conv(k, ci, co)`` has ``k*k*ci*co`` weights (no bias, BN follows); each
    BatchNorm over ``c`` channels has ``2c`` trainable parameters (running statistics are
    buffers). A BasicBlock ``ci -> co`` is ``conv(3, ci, co)+BN, conv(3, co, co)+BN``
    plus ``conv(1, ci, co)+BN`` when the stride or channel count changes. The head is
    ``Linear(C_last, num_classes)`` with bias.

    Parameters::

        params = stem conv + stem BN + sum over blocks + C_last * classes + classes

    Forward FLOPs for a batch of ``b`` (2 per multiply-accumulate), summing over every
    convolution with output resolution ``H_o x W_o``::

        flops(b) = 2 * b * ( sum_convs H_o * W_o * k*k * ci * co  +  C_last * classes )

    with ``H_o = floor((H + 2*(k//2) - k) / stride) + 1``. BN, ReLU, residual adds,
    pooling and the head bias are excluded.
    """

    name: ClassVar[str] = "cnn"
    description: ClassVar[str] = (
        "ResNet-style CNN (BasicBlocks, BN, global average pool); base = ResNet-18 at 224x224"
    )
    Config: ClassVar[type[WorkloadConfig]] = CNNConfig
    presets: ClassVar[Mapping[str, WorkloadConfig]] = {
        "tiny": CNNConfig(
            image_size=16, in_channels=3, stem_channels=8, stem_kernel=3, stem_stride=1,
            stem_pool=False, channels=(8, 16), blocks=(1, 1), num_classes=10,
        ),
        "small": CNNConfig(
            image_size=64, in_channels=3, stem_channels=32, stem_kernel=3, stem_stride=1,
            stem_pool=False, channels=(32, 64, 128, 256), blocks=(1, 1, 1, 1), num_classes=10,
        ),
        "base": CNNConfig(  # ResNet-18
            image_size=224, in_channels=3, stem_channels=64, stem_kernel=7, stem_stride=2,
            stem_pool=True, channels=(64, 128, 256, 512), blocks=(2, 2, 2, 2),
            num_classes=1000,
        ),
    }
    default_batch_size: ClassVar[Mapping[str, int]] = {"tiny": 4, "small": 32, "base": 32}

    config: CNNConfig

    def input_specs(self) -> Sequence[InputSpec]:
        """One float32 image per sample, channels first: ``(C, H, W)``."""
        c = self.config
        return [
            InputSpec(
                name="image", shape=(c.in_channels, c.image_size, c.image_size), dtype="float32"
            )
        ]

    def _convs(self) -> list[tuple[int, int, int, int]]:
        """Every convolution as ``(kernel, in_ch, out_ch, output_pixels)``, in order."""
        c = self.config
        convs: list[tuple[int, int, int, int]] = []
        size = _conv_out(c.image_size, c.stem_kernel, c.stem_stride, c.stem_kernel // 2)
        convs.append((c.stem_kernel, c.in_channels, c.stem_channels, size * size))
        if c.stem_pool:
            size = _conv_out(size, 3, 2, 1)
        width = c.stem_channels
        for stage, (ch, n) in enumerate(zip(c.channels, c.blocks)):
            for block in range(n):
                stride = 2 if (stage > 0 and block == 0) else 1
                out = _conv_out(size, 3, stride, 1)
                convs.append((3, width, ch, out * out))
                convs.append((3, ch, ch, out * out))
                if stride != 1 or width != ch:
                    convs.append((1, width, ch, _conv_out(size, 1, stride, 0) ** 2))
                size, width = out, ch
        return convs

    def analytic_params(self) -> int:
        """Trainable parameters (count): conv weights, BN scale+shift, head weight+bias."""
        c = self.config
        # every conv is followed by a BN over its output channels (2 params per channel)
        convs = sum(k * k * ci * co + 2 * co for k, ci, co, _ in self._convs())
        head = c.channels[-1] * c.num_classes + c.num_classes
        return convs + head

    def analytic_flops(self, batch_size: int) -> int:
        """Forward FLOPs for ``batch_size`` images (2 per MAC of every conv and the head)."""
        c = self.config
        macs = sum(k * k * ci * co * pixels for k, ci, co, pixels in self._convs())
        macs += c.channels[-1] * c.num_classes
        return 2 * batch_size * macs

    def build_torch(self) -> "torch.nn.Module":
        """The fp32 torch model, initialised with :data:`harness.workloads.BUILD_SEED`."""
        import torch

        from harness.workloads._torch_models import ResNet

        c = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(BUILD_SEED)
            model = ResNet(
                in_channels=c.in_channels,
                stem_channels=c.stem_channels,
                stem_kernel=c.stem_kernel,
                stem_stride=c.stem_stride,
                stem_pool=c.stem_pool,
                channels=c.channels,
                blocks=c.blocks,
                num_classes=c.num_classes,
            )
        return model.float()

    def tensorflow_inputs(self, arrays: Sequence[Any]) -> list[Any]:
        """The inputs of the Keras twin: NCHW images (4-d) transposed to NHWC,
        TensorFlow's native CPU layout (one contiguous copy, made before timing)."""
        import numpy as np

        names = [spec.name for spec in self.input_specs()]
        return [np.ascontiguousarray(np.transpose(a, (0, 2, 3, 1))) if name == "image" and a.ndim == 4 else a
                for name, a in zip(names, arrays)]

    def build_tensorflow(self) -> "Any":
        """The fp32 Keras twin of :meth:`build_torch`; takes NHWC images (the backend
        converts the NCHW inputs once, before timing, with :meth:`tensorflow_inputs`)."""
        from harness.workloads._keras_models import build_resnet

        c = self.config
        return build_resnet(
            image_size=c.image_size,
            in_channels=c.in_channels,
            stem_channels=c.stem_channels,
            stem_kernel=c.stem_kernel,
            stem_stride=c.stem_stride,
            stem_pool=c.stem_pool,
            channels=c.channels,
            blocks=c.blocks,
            num_classes=c.num_classes,
            seed=BUILD_SEED,
        )
