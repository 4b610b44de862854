"""Reference CNNs, each written once and built in convjax, Flax and PyTorch, for ``convjax bench``.

An architecture is written once against a small, framework-neutral vocabulary and instantiated
in three frameworks: convjax's NNX layers, Flax's own NNX layers and PyTorch.  The vocabulary has
two halves:

- **Layers** are descriptions, not modules: :class:`Conv` (N-d, with strides, per-side padding,
  dilation and groups), :class:`ConvTranspose` (N-d, unpadded) and :class:`Linear`, each with a
  bias.  An architecture's :meth:`~Architecture.layers` names them, ``{"stage1/block0/conv1":
  Conv(...), ...}``, and a :class:`Framework` makes each one its own way: ``convjax.nnx.Conv``
  (``DepthwiseConv`` where every channel is its own group), ``convjax.nnx.ConvTranspose``,
  ``flax.nnx.Conv`` / ``ConvTranspose`` / ``Linear``, ``torch.nn.Conv{1,2,3}d`` /
  ``ConvTranspose{1,2,3}d`` / ``Linear``.
- **Functions between layers** are the framework's methods: ``relu``, ``gelu`` (exact, erf),
  ``concat`` (along channels), ``pool`` (global average over space), and the losses
  ``cross_entropy`` (logits and integer labels; per pixel too) and ``mse``.  Addition is ``+``.
  An architecture's :meth:`~Architecture.forward` ``(F, layers, x)`` calls nothing else, so the
  same code runs on JAX arrays and on PyTorch tensors.

Arrays are channels-last in the two JAX frameworks and channels-first (PyTorch's layout, NCHW)
in PyTorch, converted at the boundary (:meth:`Framework.batch`).  Parameters are kept in one
canonical layout, convjax's: a conv kernel ``[*window, C_in // groups, C_out]``, a transposed
conv's kernel that of the forward conv it transposes, ``[*window, C_out, C_in]``, a linear
kernel ``[C_in, C_out]`` and biases ``[C_out]``.  Flax's ``ConvTranspose`` (the default,
``transpose_kernel=False``) correlates the stride-dilated input with its kernel ``[*window, C_in,
C_out]``, so its kernel is the canonical one with the channel axes swapped and the window
flipped; PyTorch's kernels are the canonical ones with the window axes last, then the channel
axes swapped (:mod:`convjax.from_torch` converts the other way).

The checks ``tests/test_models.py`` makes, for every architecture: the three instantiations hold
exactly the same number of parameters; with the same weights (:func:`instantiate` builds the
convjax network and copies its weights into the others) the step-0 loss agrees across the three
(float32, to a small relative tolerance), and in float64 the gradients agree too; and one
training step (SGD with momentum: optax in JAX, ``torch.optim.SGD`` with the same
hyperparameters in PyTorch) runs and returns a finite loss.

:func:`run` times each architecture's training step, alternating the contenders in rounds
(:func:`~convjax.apps.timing.measure`), and reports, for the JAX steps, the
compiled step's peak memory (XLA's memory analysis: temporaries, arguments and outputs) and
FLOPs (its cost analysis).  Sizes are each architecture's fields: the defaults train in well
under a second per step on two CPU cores at batch 16; on an accelerator :func:`architecture`
gives the larger sizes in each class's ``accelerator``.

PyTorch is optional: this module never imports it; callers pass the ``torch`` module to
:func:`run` and :class:`TorchFramework` (``convjax bench`` imports it if it is installed).

    >>> arch = UNet(size=16, widths=(8, 16))
    >>> mine, flax = instantiate(arch, [CONVJAX, FLAX])  # the same weights in both
    >>> x, labels = arch.data()
    >>> losses = [F.loss_value(net, F.batch(arch, x, labels, "float32"))
    ...           for F, net in ((CONVJAX, mine), (FLAX, flax))]
    >>> abs(losses[0] - losses[1]) < 1e-5 * abs(losses[0])
    True

``print(table(run(["resnet18", "unet"], torch=torch, rounds=3)))`` prints the comparison.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, TextIO

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import convjax
from convjax._src.checks import as_array
from convjax.apps.timing import Progress, Timing, measure

# PyTorch is an optional dependency: this module never imports it; the callers that have it
# pass the ``torch`` module in (to :class:`TorchFramework` and :func:`run`).

LEARNING_RATE = 1e-3
MOMENTUM = 0.9
# The TCN's residual sums are scaled so that their variance stays about constant down the stack.
RESIDUAL_SCALE = 0.5**0.5
DEVICE_REPEATS = 20  # steps per timed call on an accelerator (host dispatch hidden)

Pads = tuple[tuple[int, int], ...]

# -- the layers -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Conv:
    """A convolution with a bias: ``[B, *spatial, c_in] → [B, *out, c_out]``.

    ``padding`` is an int (each side of each dim) or one ``(lo, hi)`` pair per dim.

    >>> Conv(32, 64, (3, 3), groups=32).parameters  # 3·3·1·64 + 64
    640
    """

    c_in: int
    c_out: int
    kernel: tuple[int, ...]
    stride: int = 1
    padding: int | Pads = 0
    dilation: int = 1
    groups: int = 1

    @property
    def ndim(self) -> int:
        return len(self.kernel)

    @property
    def pads(self) -> Pads:
        """The padding as one ``(lo, hi)`` pair per spatial dim."""
        if isinstance(self.padding, int):
            return ((self.padding, self.padding),) * self.ndim
        return tuple((lo, hi) for lo, hi in self.padding)

    @property
    def depthwise(self) -> bool:
        """Every channel its own group (convjax's ``DepthwiseConv``)."""
        return self.groups > 1 and self.groups == self.c_in == self.c_out

    @property
    def kernel_shape(self) -> tuple[int, ...]:
        return (*self.kernel, self.c_in // self.groups, self.c_out)

    @property
    def parameters(self) -> int:
        return math.prod(self.kernel_shape) + self.c_out


@dataclasses.dataclass(frozen=True)
class ConvTranspose:
    """An unpadded transposed convolution with a bias: each output size is ``s(i − 1) + k``.

    >>> ConvTranspose(64, 32, (2, 2), stride=2).kernel_shape  # the forward conv's kernel
    (2, 2, 32, 64)
    """

    c_in: int
    c_out: int
    kernel: tuple[int, ...]
    stride: int = 1

    @property
    def ndim(self) -> int:
        return len(self.kernel)

    @property
    def kernel_shape(self) -> tuple[int, ...]:
        return (*self.kernel, self.c_out, self.c_in)

    @property
    def parameters(self) -> int:
        return math.prod(self.kernel_shape) + self.c_out


@dataclasses.dataclass(frozen=True)
class Linear:
    """A dense layer with a bias on ``[B, c_in]``."""

    c_in: int
    c_out: int

    @property
    def kernel_shape(self) -> tuple[int, ...]:
        return (self.c_in, self.c_out)

    @property
    def parameters(self) -> int:
        return math.prod(self.kernel_shape) + self.c_out


Layer = Conv | ConvTranspose | Linear
Params = dict[str, dict[str, np.ndarray]]  # {layer name: {"kernel": ..., "bias": ...}}


# -- the architectures ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A network written once: its sizes are the fields, :meth:`layers` names its layers and
    :meth:`forward` runs them with a framework's functions.

    Attributes:
      batch: examples in the fixed synthetic batch.
    """

    name: ClassVar[str]
    objective: ClassVar[str] = "cross_entropy"  # or "mse": the framework's loss of that name
    accelerator: ClassVar[dict[str, Any]] = {}  # field values for a run on an accelerator

    batch: int = 16

    def layers(self) -> dict[str, Layer]:
        """The layers' descriptions by name (``"stage1/block0/conv1"``)."""
        raise NotImplementedError

    def forward(self, F: Framework, layers: Mapping[str, Callable], x: Any) -> Any:
        """The network on ``x`` (in ``F``'s layout): ``layers`` are ``F``'s modules made from
        :meth:`layers`, by the same names; between them only ``F``'s functions and ``+``."""
        raise NotImplementedError

    @property
    def ndim(self) -> int:
        """Spatial dims of the input."""
        return 2

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The input's shape, channels-last."""
        raise NotImplementedError

    @property
    def target_shape(self) -> tuple[int, ...]:
        """The integer labels' shape (per example, or per output pixel)."""
        return (self.batch,)

    @property
    def sizes(self) -> str:
        """The sizes, in a few words."""
        raise NotImplementedError

    @property
    def parameters(self) -> int:
        return sum(layer.parameters for layer in self.layers().values())

    @property
    def title(self) -> str:
        return f"{self.name}: {self.sizes}, b{self.batch}, {self.parameters / 1e6:.2f}M params"

    def data(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """A fixed synthetic batch, channels-last: standard normal inputs and labels drawn
        uniformly from ``[0, classes)`` (``classes`` is a field of every classifying
        architecture)."""
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(self.input_shape)
        return x, rng.integers(0, self.classes, self.target_shape)

    def loss(self, F: Framework, y: Any, target: Any) -> Any:
        return getattr(F, self.objective)(y, target)


def _image(size: int, channels: int, ndim: int = 2) -> str:
    return f"{'x'.join([str(size)] * ndim)}x{channels}"


@dataclasses.dataclass(frozen=True)
class Classifier(Architecture):
    """An image classifier: ``[B, image, image, channels]`` in, ``classes`` logits out.

    Attributes:
      image: the images' height and width.
      channels: the images' channels.
      classes: the number of classes.
    """

    image: int = 64
    channels: int = 3
    classes: int = 10

    @property
    def input_shape(self):
        return (self.batch, self.image, self.image, self.channels)


@dataclasses.dataclass(frozen=True)
class ResNet(Classifier):
    """ResNet-18's plan (He et al. 2016): a 7×7 stride-2 stem, four stages of ``blocks`` basic
    blocks (two 3×3 convs and a shortcut, projected by a strided 1×1 conv where the shape
    changes; each stage after the first halves the size), global average pool, linear head.

    >>> ResNet().layers()["stage1/block0/project"]
    Conv(c_in=16, c_out=32, kernel=(1, 1), stride=2, padding=0, dilation=1, groups=1)
    """

    name: ClassVar[str] = "resnet18"
    accelerator: ClassVar[dict[str, Any]] = dict(image=128, widths=(64, 128, 256, 512), batch=64)

    widths: tuple[int, ...] = (16, 32, 64, 128)
    blocks: int = 2

    @property
    def sizes(self):
        return f"{_image(self.image, self.channels)}, widths {self.widths}"

    def _blocks(self) -> Iterator[tuple[str, int, int, int]]:
        """``(name, c_in, c_out, stride)`` of each basic block."""
        c_in = self.widths[0]
        for s, width in enumerate(self.widths):
            for b in range(self.blocks):
                yield f"stage{s}/block{b}", c_in, width, 2 if s > 0 and b == 0 else 1
                c_in = width

    def layers(self):
        layers = {"stem": Conv(self.channels, self.widths[0], (7, 7), stride=2, padding=3)}
        for name, c_in, c_out, stride in self._blocks():
            layers[f"{name}/conv1"] = Conv(c_in, c_out, (3, 3), stride=stride, padding=1)
            layers[f"{name}/conv2"] = Conv(c_out, c_out, (3, 3), padding=1)
            if stride != 1 or c_in != c_out:
                layers[f"{name}/project"] = Conv(c_in, c_out, (1, 1), stride=stride)
        layers["head"] = Linear(self.widths[-1], self.classes)
        return layers

    def forward(self, F, layers, x):
        x = F.relu(layers["stem"](x))
        for name, *_ in self._blocks():
            y = layers[f"{name}/conv2"](F.relu(layers[f"{name}/conv1"](x)))
            shortcut = layers[f"{name}/project"](x) if f"{name}/project" in layers else x
            x = F.relu(y + shortcut)
        return layers["head"](F.pool(x))


@dataclasses.dataclass(frozen=True)
class MobileNetV2(Classifier):
    """MobileNetV2's inverted residual blocks (Sandler et al. 2018): a 3×3 stride-2 stem, then
    per block a 1×1 expansion (by ``t``; none where ``t = 1``), a 3×3 depthwise conv (strided in
    the first block of a group) and a linear 1×1 projection, with a residual where the shapes
    allow; a 1×1 conv to ``last`` channels, global average pool, linear head.

    >>> MobileNetV2().layers()["group1/block0/depthwise"].depthwise
    True
    """

    name: ClassVar[str] = "mobilenet_v2"
    accelerator: ClassVar[dict[str, Any]] = dict(
        image=128,
        stem=32,
        settings=(
            (1, 16, 1, 1),
            (6, 24, 2, 2),
            (6, 32, 3, 2),
            (6, 64, 4, 2),
            (6, 96, 3, 1),
            (6, 160, 3, 2),
            (6, 320, 1, 1),
        ),
        last=1280,
        batch=64,
    )

    stem: int = 16
    # Per group of blocks (the paper's Table 2): expansion t, output channels c, blocks n and
    # the first block's stride s.
    settings: tuple[tuple[int, int, int, int], ...] = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 2, 2),
        (6, 64, 2, 2),
        (6, 96, 1, 1),
    )
    last: int = 256

    @property
    def sizes(self):
        return f"{_image(self.image, self.channels)}, {len(self.settings)} groups, last {self.last}"

    def _blocks(self) -> Iterator[tuple[str, int, int, int, int]]:
        """``(name, c_in, expanded, c_out, stride)`` of each inverted residual block."""
        c_in = self.stem
        for g, (t, c, n, s) in enumerate(self.settings):
            for b in range(n):
                yield f"group{g}/block{b}", c_in, c_in * t, c, s if b == 0 else 1
                c_in = c

    def layers(self):
        layers = {"stem": Conv(self.channels, self.stem, (3, 3), stride=2, padding=1)}
        for name, c_in, expanded, c_out, stride in self._blocks():
            if expanded != c_in:
                layers[f"{name}/expand"] = Conv(c_in, expanded, (1, 1))
            layers[f"{name}/depthwise"] = Conv(
                expanded, expanded, (3, 3), stride=stride, padding=1, groups=expanded
            )
            layers[f"{name}/project"] = Conv(expanded, c_out, (1, 1))
        layers["last"] = Conv(self.settings[-1][1], self.last, (1, 1))
        layers["head"] = Linear(self.last, self.classes)
        return layers

    def forward(self, F, layers, x):
        x = F.relu(layers["stem"](x))
        for name, c_in, _, c_out, stride in self._blocks():
            y = F.relu(layers[f"{name}/expand"](x)) if f"{name}/expand" in layers else x
            y = layers[f"{name}/project"](F.relu(layers[f"{name}/depthwise"](y)))
            x = x + y if stride == 1 and c_in == c_out else y
        return layers["head"](F.pool(F.relu(layers["last"](x))))


@dataclasses.dataclass(frozen=True)
class ConvNeXt(Classifier):
    """ConvNeXt's stages (Liu et al. 2022) without their layer norms: a 4×4 stride-4 patchify
    stem, then per stage (after a 2×2 stride-2 downsampling conv from the second on) blocks of a
    7×7 depthwise conv, a 1×1 expansion by 4, GELU and a 1×1 projection, added to the block's
    input; global average pool, linear head."""

    name: ClassVar[str] = "convnext"
    accelerator: ClassVar[dict[str, Any]] = dict(
        image=128, widths=(96, 192, 384), depths=(3, 3, 9), batch=64
    )

    widths: tuple[int, ...] = (48, 96)
    depths: tuple[int, ...] = (2, 2)

    @property
    def sizes(self):
        return f"{_image(self.image, self.channels)}, widths {self.widths}, depths {self.depths}"

    def _blocks(self) -> Iterator[tuple[int, int, int]]:
        """``(stage, block, width)`` of each block."""
        for s, (width, depth) in enumerate(zip(self.widths, self.depths, strict=True)):
            for b in range(depth):
                yield s, b, width

    def layers(self):
        layers = {"stem": Conv(self.channels, self.widths[0], (4, 4), stride=4)}
        for s, b, w in self._blocks():
            if s > 0 and b == 0:
                layers[f"stage{s}/downsample"] = Conv(self.widths[s - 1], w, (2, 2), stride=2)
            name = f"stage{s}/block{b}"
            layers[f"{name}/depthwise"] = Conv(w, w, (7, 7), padding=3, groups=w)
            layers[f"{name}/expand"] = Conv(w, 4 * w, (1, 1))
            layers[f"{name}/project"] = Conv(4 * w, w, (1, 1))
        layers["head"] = Linear(self.widths[-1], self.classes)
        return layers

    def forward(self, F, layers, x):
        x = layers["stem"](x)
        for s, b, _ in self._blocks():
            if f"stage{s}/downsample" in layers and b == 0:
                x = layers[f"stage{s}/downsample"](x)
            name = f"stage{s}/block{b}"
            y = F.gelu(layers[f"{name}/expand"](layers[f"{name}/depthwise"](x)))
            x = x + layers[f"{name}/project"](y)
        return layers["head"](F.pool(x))


@dataclasses.dataclass(frozen=True)
class ResNeXt(Classifier):
    """ResNeXt's bottleneck blocks (Xie et al. 2017): a 3×3 stride-2 stem, then per block a 1×1
    reduction to ``width`` channels, a 3×3 conv in ``cardinality`` groups (strided in a stage's
    first block), a 1×1 expansion, and a shortcut (a strided 1×1 projection where the shape
    changes); global average pool, linear head."""

    name: ClassVar[str] = "resnext"
    accelerator: ClassVar[dict[str, Any]] = dict(
        image=128,
        stem=64,
        stages=((256, 128, 3, 1), (512, 256, 4, 2), (1024, 512, 6, 2)),
        batch=64,
    )

    image: int = 32
    stem: int = 64
    # Per stage: output channels, bottleneck width, blocks, the first block's stride.
    stages: tuple[tuple[int, int, int, int], ...] = ((128, 64, 2, 1), (256, 128, 2, 2))
    cardinality: int = 32

    @property
    def sizes(self):
        widths = tuple(s[0] for s in self.stages)
        return f"{_image(self.image, self.channels)}, {self.cardinality} groups, widths {widths}"

    def _blocks(self) -> Iterator[tuple[str, int, int, int, int]]:
        """``(name, c_in, width, c_out, stride)`` of each block."""
        c_in = self.stem
        for s, (c_out, width, blocks, stride) in enumerate(self.stages):
            for b in range(blocks):
                yield f"stage{s}/block{b}", c_in, width, c_out, stride if b == 0 else 1
                c_in = c_out

    def layers(self):
        layers = {"stem": Conv(self.channels, self.stem, (3, 3), stride=2, padding=1)}
        for name, c_in, width, c_out, stride in self._blocks():
            layers[f"{name}/reduce"] = Conv(c_in, width, (1, 1))
            layers[f"{name}/grouped"] = Conv(
                width, width, (3, 3), stride=stride, padding=1, groups=self.cardinality
            )
            layers[f"{name}/expand"] = Conv(width, c_out, (1, 1))
            if stride != 1 or c_in != c_out:
                layers[f"{name}/project"] = Conv(c_in, c_out, (1, 1), stride=stride)
        layers["head"] = Linear(self.stages[-1][0], self.classes)
        return layers

    def forward(self, F, layers, x):
        x = F.relu(layers["stem"](x))
        for name, *_ in self._blocks():
            y = F.relu(layers[f"{name}/grouped"](F.relu(layers[f"{name}/reduce"](x))))
            shortcut = layers[f"{name}/project"](x) if f"{name}/project" in layers else x
            x = F.relu(layers[f"{name}/expand"](y) + shortcut)
        return layers["head"](F.pool(x))


@dataclasses.dataclass(frozen=True)
class UNet(Architecture):
    """A small UNet (Ronneberger et al. 2015), N-d: per level two 3×3 convs (the first strided
    by 2 from the second level on); back up, per level a 2×2 stride-2 transposed conv,
    concatenation with the skip from the way down, and two 3×3 convs; a 1×1 head gives each
    pixel's class logits.

    >>> UNet().layers()["up1/upsample"]
    ConvTranspose(c_in=32, c_out=16, kernel=(2, 2), stride=2)
    """

    name: ClassVar[str] = "unet"
    accelerator: ClassVar[dict[str, Any]] = dict(size=128, widths=(64, 128, 256, 512), batch=32)

    spatial: int = 2
    size: int = 32
    channels: int = 3
    widths: tuple[int, ...] = (16, 32, 64)
    classes: int = 4

    @property
    def ndim(self):
        return self.spatial

    @property
    def input_shape(self):
        return (*self.target_shape, self.channels)

    @property
    def target_shape(self):
        return (self.batch, *[self.size] * self.spatial)

    @property
    def sizes(self):
        return f"{_image(self.size, self.channels, self.spatial)}, widths {self.widths}"

    def layers(self):
        k3, k2, k1 = ((k,) * self.spatial for k in (3, 2, 1))
        layers = {}
        for i, w in enumerate(self.widths):
            c_in = self.widths[i - 1] if i else self.channels
            layers[f"down{i}/conv1"] = Conv(c_in, w, k3, stride=2 if i else 1, padding=1)
            layers[f"down{i}/conv2"] = Conv(w, w, k3, padding=1)
        for i in reversed(range(1, len(self.widths))):
            w = self.widths[i - 1]
            layers[f"up{i}/upsample"] = ConvTranspose(self.widths[i], w, k2, stride=2)
            layers[f"up{i}/conv1"] = Conv(2 * w, w, k3, padding=1)
            layers[f"up{i}/conv2"] = Conv(w, w, k3, padding=1)
        layers["head"] = Conv(self.widths[0], self.classes, k1)
        return layers

    def forward(self, F, layers, x):
        skips = []
        for i in range(len(self.widths)):
            x = F.relu(layers[f"down{i}/conv2"](F.relu(layers[f"down{i}/conv1"](x))))
            skips.append(x)
        for i in reversed(range(1, len(self.widths))):
            x = F.concat([layers[f"up{i}/upsample"](x), skips[i - 1]])
            x = F.relu(layers[f"up{i}/conv2"](F.relu(layers[f"up{i}/conv1"](x))))
        return layers["head"](x)


@dataclasses.dataclass(frozen=True)
class UNet3D(UNet):
    """The :class:`UNet` in 3-d: 3×3×3 convs and 2×2×2 transposed convs, per-voxel classes."""

    name: ClassVar[str] = "unet3d"
    accelerator: ClassVar[dict[str, Any]] = dict(size=64, widths=(32, 64, 128, 256), batch=8)

    spatial: int = 3
    size: int = 12
    channels: int = 1
    widths: tuple[int, ...] = (8, 16, 32)
    classes: int = 3


@dataclasses.dataclass(frozen=True)
class DeepLabASPP(Architecture):
    """DeepLab's atrous spatial pyramid pooling head (Chen et al. 2017) on a small strided
    backbone: 3×3 convs, each but the last of stride 2; then in parallel a 1×1 conv and one 3×3
    conv per atrous rate, concatenated, fused by a 1×1 conv; a 1×1 head gives the class logits
    of each pixel of the backbone's output (labels at that resolution)."""

    name: ClassVar[str] = "deeplab_aspp"
    accelerator: ClassVar[dict[str, Any]] = dict(
        image=256, backbone=(64, 128, 256, 512), width=256, batch=32
    )

    image: int = 96
    channels: int = 3
    backbone: tuple[int, ...] = (16, 32, 64)
    rates: tuple[int, ...] = (6, 12, 18)
    width: int = 32
    classes: int = 4

    @property
    def input_shape(self):
        return (self.batch, self.image, self.image, self.channels)

    @property
    def target_shape(self):
        out = self.image // 2 ** (len(self.backbone) - 1)
        return (self.batch, out, out)

    @property
    def sizes(self):
        return (
            f"{_image(self.image, self.channels)}, backbone {self.backbone}, rates {self.rates}, "
            f"width {self.width}"
        )

    def layers(self):
        layers = {}
        c_in = self.channels
        for i, w in enumerate(self.backbone):
            stride = 2 if i < len(self.backbone) - 1 else 1
            layers[f"backbone/conv{i}"] = Conv(c_in, w, (3, 3), stride=stride, padding=1)
            c_in = w
        layers["aspp/pointwise"] = Conv(c_in, self.width, (1, 1))
        for rate in self.rates:
            layers[f"aspp/rate{rate}"] = Conv(c_in, self.width, (3, 3), padding=rate, dilation=rate)
        layers["aspp/fuse"] = Conv((1 + len(self.rates)) * self.width, self.width, (1, 1))
        layers["head"] = Conv(self.width, self.classes, (1, 1))
        return layers

    def forward(self, F, layers, x):
        for i in range(len(self.backbone)):
            x = F.relu(layers[f"backbone/conv{i}"](x))
        branches = [layers["aspp/pointwise"](x)]
        branches += [layers[f"aspp/rate{rate}"](x) for rate in self.rates]
        x = F.relu(layers["aspp/fuse"](F.concat([F.relu(b) for b in branches])))
        return layers["head"](x)


@dataclasses.dataclass(frozen=True)
class TCN(Architecture):
    """A WaveNet-style temporal convolutional network (van den Oord et al. 2016; Bai et al.
    2018): a 1×1 input conv, then per dilation a causal 1-d conv (padded ``(k − 1)·d`` frames on
    the left only), ReLU and a 1×1 conv added to the block's input, the sum scaled by
    :data:`RESIDUAL_SCALE` (without normalisation, a stack of unscaled residual blocks grows its
    activations by about half at each block); a 1×1 head predicts the next frame of every frame
    (mean squared error on a batch of sums of sinusoids).

    >>> TCN().layers()["stack0/dilation4/causal"].pads
    ((8, 0),)
    """

    name: ClassVar[str] = "tcn"
    objective: ClassVar[str] = "mse"
    accelerator: ClassVar[dict[str, Any]] = dict(length=4096, width=128, stacks=3, batch=32)

    length: int = 256
    channels: int = 2
    width: int = 32
    kernel: int = 3
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    stacks: int = 2

    @property
    def ndim(self):
        return 1

    @property
    def input_shape(self):
        return (self.batch, self.length, self.channels)

    @property
    def sizes(self):
        return (
            f"{self.length}x{self.channels}, width {self.width}, kernel {self.kernel}, "
            f"{self.stacks} x dilations {self.dilations}"
        )

    def _blocks(self) -> Iterator[tuple[str, int]]:
        for s in range(self.stacks):
            for d in self.dilations:
                yield f"stack{s}/dilation{d}", d

    def layers(self):
        layers = {"input": Conv(self.channels, self.width, (1,))}
        for name, d in self._blocks():
            causal = (((self.kernel - 1) * d, 0),)
            layers[f"{name}/causal"] = Conv(
                self.width, self.width, (self.kernel,), padding=causal, dilation=d
            )
            layers[f"{name}/mix"] = Conv(self.width, self.width, (1,))
        layers["head"] = Conv(self.width, self.channels, (1,))
        return layers

    def forward(self, F, layers, x):
        x = layers["input"](x)
        for name, _ in self._blocks():
            x = (x + layers[f"{name}/mix"](F.relu(layers[f"{name}/causal"](x)))) * RESIDUAL_SCALE
        return layers["head"](F.relu(x))

    def data(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Sums of three sinusoids of random frequency, phase and amplitude per channel, plus a
        little noise: frames ``0 … T − 1`` in, frames ``1 … T`` as the targets."""
        rng = np.random.default_rng(seed)
        shape = (self.batch, 1, self.channels, 3)
        frequency = rng.uniform(0.005, 0.1, shape)
        phase, amplitude = rng.uniform(0, 2 * np.pi, shape), rng.uniform(0.2, 1, shape)
        t = np.arange(self.length + 1).reshape(1, -1, 1, 1)
        signal = np.sum(amplitude * np.sin(2 * np.pi * frequency * t + phase), axis=-1)
        signal += 0.05 * rng.standard_normal(signal.shape)
        return signal[:, :-1], signal[:, 1:]


ARCHITECTURES: dict[str, type[Architecture]] = {
    cls.name: cls
    for cls in (ResNet, MobileNetV2, ConvNeXt, ResNeXt, UNet, DeepLabASPP, TCN, UNet3D)
}


def architecture(name: str, *, accelerator: bool = False) -> Architecture:
    """The architecture called ``name`` at its default sizes, or at its accelerator sizes.

    >>> architecture("resnet18").parameters
    702186
    """
    if name not in ARCHITECTURES:
        raise ValueError(
            f"models: no architecture is called {name!r}; the architectures are "
            f"{', '.join(ARCHITECTURES)}."
        )
    cls = ARCHITECTURES[name]
    return cls(**cls.accelerator) if accelerator else cls()


# -- the frameworks -------------------------------------------------------------------------------


@dataclasses.dataclass
class Step:
    """One framework's training step on its fixed batch, ready to call.

    Attributes:
      run: takes one step (forward, loss, gradients, SGD-with-momentum update) and returns the
        loss before the update.
      sync: waits for a value ``run`` returned.
      memory_bytes: the compiled step's temporaries, arguments and outputs (JAX only).
      flops: the compiled step's FLOPs, from XLA's cost analysis (JAX only).
    """

    run: Callable[[], Any]
    sync: Callable[[Any], Any]
    memory_bytes: int | None = None
    flops: float | None = None


class Framework:
    """One framework's side of the vocabulary: a module for each layer description, the
    functions an architecture's ``forward`` calls between layers, and networks: made, loaded and
    read back in the canonical layout, evaluated and trained.

    Attributes:
      name: the framework's name in benchmark rows.
    """

    name: str

    # -- layers: the framework's module for each description

    def conv(self, layer: Conv, **options) -> Any:
        raise NotImplementedError

    def conv_transpose(self, layer: ConvTranspose, **options) -> Any:
        raise NotImplementedError

    def linear(self, layer: Linear, **options) -> Any:
        raise NotImplementedError

    def make(self, layer: Layer, **options) -> Any:
        """The framework's module for any layer description."""
        make = {Conv: self.conv, ConvTranspose: self.conv_transpose, Linear: self.linear}
        return make[type(layer)](layer, **options)

    # -- between layers: all ``forward`` calls besides the layers and ``+``

    def relu(self, x: Any) -> Any:
        raise NotImplementedError

    def gelu(self, x: Any) -> Any:
        """GELU, exact (with erf, not the tanh approximation)."""
        raise NotImplementedError

    def concat(self, xs: Sequence[Any]) -> Any:
        """Concatenation along the channels."""
        raise NotImplementedError

    def pool(self, x: Any) -> Any:
        """Global average pooling over the spatial dims: ``[B, C]``."""
        raise NotImplementedError

    def cross_entropy(self, logits: Any, labels: Any) -> Any:
        """The mean softmax cross-entropy of integer labels, per example or per pixel."""
        raise NotImplementedError

    def mse(self, y: Any, target: Any) -> Any:
        """The mean squared error."""
        raise NotImplementedError

    # -- networks

    def network(self, architecture: Architecture, *, seed: int = 0, dtype: str = "float32"):
        """The architecture's layers in one of the framework's modules, freshly initialised."""
        raise NotImplementedError

    def load(self, network: Any, params: Params) -> None:
        """Set ``network``'s parameters from canonical ones (see the module's docstring)."""
        raise NotImplementedError

    def export(self, network: Any) -> Params:
        """``network``'s parameters in the canonical layout, as NumPy arrays."""
        raise NotImplementedError

    def count(self, network: Any) -> int:
        """The number of parameters ``network`` holds."""
        raise NotImplementedError

    def batch(self, architecture: Architecture, x: np.ndarray, target: np.ndarray, dtype: str):
        """A channels-last NumPy batch in the framework's layout, ``x`` (and a regression
        target) in ``dtype``."""
        raise NotImplementedError

    def loss(self, network: Any, batch: tuple[Any, Any]) -> Any:
        """The architecture's loss of ``network`` on ``batch`` (differentiable)."""
        x, target = batch
        return network.architecture.loss(self, network(x), target)

    def loss_value(self, network: Any, batch: tuple[Any, Any]) -> float:
        """The loss of ``network`` on ``batch``, computed as fast as the framework allows."""
        raise NotImplementedError

    def loss_and_gradients(self, network: Any, batch: tuple[Any, Any]) -> tuple[float, Params]:
        """The loss on ``batch`` and its gradients, in the canonical layout."""
        raise NotImplementedError

    def step(self, network: Any, batch: tuple[Any, Any], **hyperparameters) -> Step:
        """A training step of ``network`` on ``batch`` (see :class:`Step`): the network is
        updated in place (PyTorch) or the step keeps its own copy of the parameters (JAX)."""
        raise NotImplementedError


class Network(nnx.Module):
    """An architecture's layers in one NNX module; calling it runs the architecture's forward
    with its framework's functions."""

    def __init__(self, architecture: Architecture, framework: Framework, layers: dict[str, Any]):
        self.architecture = architecture
        self.framework = framework
        self.layers = nnx.Dict(layers)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.architecture.forward(self.framework, self.layers, x)


class JaxFramework(Framework):
    """What convjax and Flax share: channels-last arrays, NNX modules, Flax's ``Linear``, a
    jitted optax step.  Subclasses make the convolutions and say their kernels' layouts."""

    def linear(self, layer: Linear, *, rngs: nnx.Rngs, dtype: Any) -> nnx.Module:
        return nnx.Linear(layer.c_in, layer.c_out, param_dtype=dtype, rngs=rngs)

    def kernel(self, layer: Layer, kernel: np.ndarray) -> np.ndarray:
        """A canonical kernel in this framework's layout, and back (each map here is its own
        inverse)."""
        return kernel

    relu = staticmethod(jax.nn.relu)

    @staticmethod
    def gelu(x: jax.Array) -> jax.Array:
        # PyTorch's formula, x·(1 + erf(x/√2))/2.  jax.nn.gelu(approximate=False) evaluates
        # erfc instead (accurate far into the negative tail), which XLA:CPU runs 3× slower
        # forward: ConvNeXt's step 10% slower, for a difference of 5e-7 where it matters here.
        return x * (1 + jax.lax.erf(x * np.asarray(math.sqrt(0.5), x.dtype))) / 2

    @staticmethod
    def concat(xs: Sequence[jax.Array]) -> jax.Array:
        return jnp.concatenate(xs, axis=-1)

    @staticmethod
    def pool(x: jax.Array) -> jax.Array:
        return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))

    @staticmethod
    def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @staticmethod
    def mse(y: jax.Array, target: jax.Array) -> jax.Array:
        return jnp.mean((y - target) ** 2)

    def network(self, architecture, *, seed=0, dtype="float32"):
        rngs, dtype = nnx.Rngs(seed), jnp.dtype(dtype)
        layers = {
            name: self.make(layer, rngs=rngs, dtype=dtype)
            for name, layer in architecture.layers().items()
        }
        return Network(architecture, self, layers)

    def load(self, network, params):
        for name, layer in network.architecture.layers().items():
            module = network.layers[name]
            for key, value in params[name].items():
                value = self.kernel(layer, value) if key == "kernel" else value
                variable = getattr(module, key)
                if variable.shape != value.shape:
                    raise ValueError(
                        f"models: {self.name} layer {name!r} has a {key} of shape "
                        f"{variable.shape}, got {value.shape}."
                    )
                variable[...] = as_array(value, variable.dtype)

    def export(self, network):
        return {
            name: {
                "kernel": self.kernel(layer, np.asarray(network.layers[name].kernel[...])),
                "bias": np.asarray(network.layers[name].bias[...]),
            }
            for name, layer in network.architecture.layers().items()
        }

    def count(self, network):
        return sum(a.size for a in jax.tree.leaves(nnx.state(network, nnx.Param)))

    def batch(self, architecture, x, target, dtype):
        x = as_array(x, dtype)
        target = as_array(target, dtype) if architecture.objective == "mse" else target
        return x, as_array(target)

    def _loss_of_params(self, network: Network) -> tuple[Callable, Any]:
        """``(loss(params, x, target), params)``: the loss as a pure function."""
        graphdef, params = nnx.split(network)

        def loss(params, x, target):
            return self.loss(nnx.merge(graphdef, params), (x, target))

        return loss, params

    def loss_value(self, network, batch):
        loss, params = self._loss_of_params(network)
        return float(jax.jit(loss)(params, *batch))

    def loss_and_gradients(self, network, batch):
        loss, params = self._loss_of_params(network)
        value, grads = jax.jit(jax.value_and_grad(loss))(params, *batch)
        graphdef = nnx.graphdef(network)
        return float(value), self.export(nnx.merge(graphdef, grads))

    def step(self, network, batch, *, learning_rate=LEARNING_RATE, momentum=MOMENTUM):
        loss, params = self._loss_of_params(network)
        optimizer = optax.sgd(learning_rate, momentum)

        def step(params, opt_state, x, target):
            value, grads = jax.value_and_grad(loss)(params, x, target)
            with jax.numpy_dtype_promotion("standard"):  # optax's scalars, under strict tests
                updates, opt_state = optimizer.update(grads, opt_state, params)
                params = optax.apply_updates(params, updates)
            return params, opt_state, value

        state = [params, optimizer.init(params)]
        compiled = jax.jit(step).lower(*state, *batch).compile()

        def run():
            state[0], state[1], value = compiled(*state, *batch)
            return value

        memory = compiled.memory_analysis()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost  # one per device, in older jax
        return Step(
            run,
            jax.block_until_ready,
            memory_bytes=_peak_bytes(memory) if memory is not None else None,
            flops=(cost or {}).get("flops"),
        )


def _peak_bytes(memory: Any) -> int:
    """A compiled program's peak memory: its temporaries, arguments and outputs."""
    return memory.temp_size_in_bytes + memory.argument_size_in_bytes + memory.output_size_in_bytes


class ConvjaxFramework(JaxFramework):
    """convjax's NNX layers, every convolution on the formulation ``impl``."""

    def __init__(self, impl: str = "auto"):
        self.impl = self.name = impl

    def conv(self, layer, *, rngs, dtype):
        options = dict(
            strides=layer.stride,
            padding=layer.pads,
            kernel_dilation=layer.dilation,
            impl=self.impl,
            param_dtype=dtype,
            rngs=rngs,
        )
        if layer.depthwise:
            return convjax.nnx.DepthwiseConv(layer.c_in, layer.kernel, **options)
        return convjax.nnx.Conv(
            layer.c_in, layer.c_out, layer.kernel, feature_group_count=layer.groups, **options
        )

    def conv_transpose(self, layer, *, rngs, dtype):
        return convjax.nnx.ConvTranspose(
            layer.c_in,
            layer.c_out,
            layer.kernel,
            strides=layer.stride,
            impl=self.impl,
            param_dtype=dtype,
            rngs=rngs,
        )


class FlaxFramework(JaxFramework):
    """Flax's own NNX layers."""

    name = "flax"

    def conv(self, layer, *, rngs, dtype):
        return nnx.Conv(
            layer.c_in,
            layer.c_out,
            layer.kernel,
            strides=layer.stride,
            padding=layer.pads,
            kernel_dilation=layer.dilation,
            feature_group_count=layer.groups,
            param_dtype=dtype,
            rngs=rngs,
        )

    def conv_transpose(self, layer, *, rngs, dtype):
        return nnx.ConvTranspose(
            layer.c_in,
            layer.c_out,
            layer.kernel,
            strides=layer.stride,
            padding="VALID",  # s(i − 1) + k for k >= s, as the unpadded PyTorch layer
            param_dtype=dtype,
            rngs=rngs,
        )

    def kernel(self, layer, kernel):
        # Flax's ConvTranspose correlates the stride-dilated input with ``[*window, C_in,
        # C_out]``: the canonical ``[*window, C_out, C_in]`` with the channels swapped and the
        # window flipped.
        if isinstance(layer, ConvTranspose):
            return np.flip(np.swapaxes(kernel, -1, -2), axis=tuple(range(layer.ndim)))
        return kernel


CONVJAX = ConvjaxFramework()
FLAX = FlaxFramework()


class TorchFramework(Framework):
    """PyTorch: channels-first tensors (``channels_last`` memory in 2-d if asked), eager steps.

    Args:
      torch: the ``torch`` module (PyTorch is optional: the caller imports it).
      channels_last: keep 4-d activations and weights in PyTorch's ``channels_last`` memory
        format (the logical layout stays NCHW).
      device: ``"cpu"`` or ``"cuda"``.
    """

    def __init__(self, torch: Any, *, channels_last: bool = False, device: str = "cpu"):
        self.torch, self.channels_last, self.device = torch, channels_last, device
        self.name = f"torch {'channels_last' if channels_last else 'NCHW'}"
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def conv(self, layer: Conv):
        nn, n = self.torch.nn, layer.ndim
        symmetric = all(lo == hi for lo, hi in layer.pads)
        conv = getattr(nn, f"Conv{n}d")(
            layer.c_in,
            layer.c_out,
            layer.kernel,
            stride=layer.stride,
            padding=tuple(lo for lo, _ in layer.pads) if symmetric else 0,
            dilation=layer.dilation,
            groups=layer.groups,
        )
        if symmetric:
            return conv
        # PyTorch's convs pad both sides alike: a one-sided (causal) padding is a layer before.
        sides = tuple(side for pair in reversed(layer.pads) for side in pair)  # last dim first
        return nn.Sequential(getattr(nn, f"ConstantPad{n}d")(sides, 0.0), conv)

    def conv_transpose(self, layer: ConvTranspose):
        return getattr(self.torch.nn, f"ConvTranspose{layer.ndim}d")(
            layer.c_in, layer.c_out, layer.kernel, stride=layer.stride
        )

    def linear(self, layer: Linear):
        return self.torch.nn.Linear(layer.c_in, layer.c_out)

    def _weights(self, module):
        """The module holding a layer's ``weight`` and ``bias`` (past a padding layer)."""
        return module[-1] if isinstance(module, self.torch.nn.Sequential) else module

    @staticmethod
    def kernel(layer: Layer, kernel: np.ndarray) -> np.ndarray:
        """A canonical kernel as PyTorch's weight: the window axes last, then the channel axes
        swapped (``[C_out, C_in // groups, *window]``, a transposed conv's ``[C_in, C_out,
        *window]``, a linear ``[C_out, C_in]``)."""
        n = kernel.ndim - 2
        return np.transpose(kernel, (n + 1, n, *range(n)))

    @staticmethod
    def canonical_kernel(layer: Layer, weight: np.ndarray) -> np.ndarray:
        """PyTorch's weight as the canonical kernel (:mod:`convjax.from_torch`'s conversions)."""
        if isinstance(layer, Linear):
            return weight.T
        if isinstance(layer, ConvTranspose):
            return convjax.from_torch.conv_transpose_kernel(weight)
        return convjax.from_torch.conv_kernel(weight)

    def relu(self, x):
        return self.torch.nn.functional.relu(x)

    def gelu(self, x):
        return self.torch.nn.functional.gelu(x)  # exact (erf), as JaxFramework's

    def concat(self, xs):
        return self.torch.cat(xs, dim=1)

    @staticmethod
    def pool(x):
        return x.mean(dim=tuple(range(2, x.ndim)))

    def cross_entropy(self, logits, labels):
        return self.torch.nn.functional.cross_entropy(logits, labels)

    @staticmethod
    def mse(y, target):
        return ((y - target) ** 2).mean()

    def network(self, architecture, *, seed=0, dtype="float32"):
        torch = self.torch
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layers = {name: self.make(layer) for name, layer in architecture.layers().items()}
        network = _torch_network(torch)(architecture, self, layers)
        return network.to(device=self.device, dtype=getattr(torch, dtype)).to(
            memory_format=self.memory_format
        )

    def load(self, network, params):
        with self.torch.no_grad():
            for name, layer in network.architecture.layers().items():
                module = self._weights(network.layers[name])
                weight = self.kernel(layer, params[name]["kernel"])
                module.weight.copy_(self.torch.from_numpy(np.array(weight)))
                module.bias.copy_(self.torch.from_numpy(np.array(params[name]["bias"])))

    def export(self, network, *, grad: bool = False):
        """``network``'s parameters (or, ``grad``, their gradients) in the canonical layout."""

        def numpy(tensor):
            tensor = (tensor.grad if grad else tensor).detach().cpu()
            if tensor.dtype in (self.torch.bfloat16, self.torch.float16):  # NumPy has no bfloat16
                tensor = tensor.float()
            return tensor.numpy()

        result = {}
        for name, layer in network.architecture.layers().items():
            module = self._weights(network.layers[name])
            result[name] = {
                "kernel": self.canonical_kernel(layer, numpy(module.weight)),
                "bias": numpy(module.bias),
            }
        return result

    def count(self, network):
        return sum(p.numel() for p in network.parameters())

    def _tensor(self, array: np.ndarray, dtype: str, channels: bool):
        tensor = self.torch.from_numpy(np.ascontiguousarray(array)).to(self.device)
        if not channels:
            return tensor
        tensor = tensor.permute(0, -1, *range(1, array.ndim - 1)).to(getattr(self.torch, dtype))
        memory_format = self.memory_format if tensor.ndim == 4 else self.torch.contiguous_format
        return tensor.contiguous(memory_format=memory_format)

    def batch(self, architecture, x, target, dtype):
        return (
            self._tensor(x, dtype, channels=True),
            self._tensor(target, dtype, channels=architecture.objective == "mse"),
        )

    def loss_value(self, network, batch):
        with self.torch.no_grad():
            return float(self.loss(network, batch))

    def loss_and_gradients(self, network, batch):
        network.zero_grad(set_to_none=True)
        value = self.loss(network, batch)
        value.backward()
        return float(value.detach()), self.export(network, grad=True)

    def step(self, network, batch, *, learning_rate=LEARNING_RATE, momentum=MOMENTUM):
        torch = self.torch
        optimizer = torch.optim.SGD(network.parameters(), lr=learning_rate, momentum=momentum)

        def run():
            optimizer.zero_grad(set_to_none=True)
            value = self.loss(network, batch)
            value.backward()
            optimizer.step()
            return value.detach()

        cuda = self.device == "cuda"
        return Step(run, (lambda _: torch.cuda.synchronize()) if cuda else (lambda _: None))


@functools.cache
def _torch_network(torch: Any) -> type:
    """The PyTorch twin of :class:`Network` (defined once torch is imported)."""

    class TorchNetwork(torch.nn.Module):
        def __init__(self, architecture, framework, layers):
            super().__init__()
            self.architecture, self.framework = architecture, framework
            self.layers = torch.nn.ModuleDict(layers)

        def forward(self, x):
            return self.architecture.forward(self.framework, self.layers, x)

    return TorchNetwork


def instantiate(
    architecture: Architecture,
    frameworks: Sequence[Framework],
    *,
    seed: int = 0,
    dtype: str = "float32",
) -> list[Any]:
    """One network per framework, all with the weights of a convjax network initialised from
    ``seed`` (convjax's initialisers: LeCun normal kernels, zero biases)."""
    params = CONVJAX.export(CONVJAX.network(architecture, seed=seed, dtype=dtype))
    networks = []
    for F in frameworks:
        network = F.network(architecture, seed=seed, dtype=dtype)
        F.load(network, params)
        networks.append(network)
    return networks


# -- the benchmark --------------------------------------------------------------------------------


def frameworks(
    torch: Any,
    architecture: Architecture,
    *,
    on_device: bool,
    formulations: Sequence[str] = ("auto",),
    flax: bool = True,
) -> list[Framework]:
    """The contenders for ``architecture``: convjax on each of ``formulations``, Flax (unless
    ``flax`` is false), and PyTorch NCHW and, in 2-d, channels_last (on an accelerator, only if
    PyTorch has CUDA)."""
    result: list[Framework] = [ConvjaxFramework(impl) for impl in formulations]
    result += [FLAX] if flax else []
    if torch is not None and (torch.cuda.is_available() or not on_device):
        device = "cuda" if on_device else "cpu"
        layouts = (False, True) if architecture.ndim == 2 else (False,)
        result += [TorchFramework(torch, channels_last=c, device=device) for c in layouts]
    return result


def _contender(step: Step, repeats: int, first: list) -> tuple[Callable, Callable]:
    """``(run, sync)`` for :func:`~convjax.apps.timing.measure`: ``repeats`` steps per call, the
    first step's loss kept in ``first``."""

    def run():
        value = [step.run() for _ in range(repeats)][-1]
        if not first:
            first.append(value)
        return value

    return run, step.sync


def run(
    names: Sequence[str | Architecture] | None = None,
    *,
    torch: Any = None,
    rounds: int = 9,
    out: TextIO | None = None,
    dtype: str = "float32",
    formulations: Sequence[str] = ("auto",),
    flax: bool = True,
) -> list[dict[str, Any]]:
    """Time one training step of each architecture in each framework, from the same weights.

    Args:
      names: architecture names (default: all of :data:`ARCHITECTURES`, at the accelerator
        sizes on an accelerator), or :class:`Architecture` instances, run at their own sizes.
      torch: the ``torch`` module, or ``None`` for no PyTorch contenders.
      rounds: timed rounds; the contenders alternate within each.
      out: where the progress bar goes (default ``sys.stderr``).
      dtype: the parameters' and inputs' dtype.
      formulations: the convjax contenders, one per formulation (``impl`` of every layer).
      flax: whether Flax's layers are a contender.

    Returns:
      One row per architecture, shaped as ``convjax bench``'s: ``case``, ``mode`` (``"step"``),
      ``auto_runs``, ``contenders`` (``{name: {median_ms, min_ms, max_ms}}``, per step),
      ``torch_ms`` (the faster PyTorch layout), ``ratio_to_torch``, ``speedup_over_flax``, and
      also ``parameters``, ``loss0`` (each contender's step-0 loss), ``memory_bytes`` and
      ``flops`` (the compiled JAX steps').
    """
    out = sys.stderr if out is None else out
    on_device = jax.default_backend() != "cpu"
    repeats = DEVICE_REPEATS if on_device else 1
    chosen = [
        n if isinstance(n, Architecture) else architecture(n, accelerator=on_device)
        for n in (names or ARCHITECTURES)
    ]
    progress = Progress(len(chosen) * rounds, out)
    rows = []
    for arch in chosen:
        progress.label = arch.title
        progress.draw()
        contenders = frameworks(
            torch, arch, on_device=on_device, formulations=formulations, flax=flax
        )
        networks = instantiate(arch, contenders, dtype=dtype)
        x, target = arch.data()
        steps, runs, first = {}, {}, {}
        for F, network in zip(contenders, networks, strict=True):
            steps[F.name] = F.step(network, F.batch(arch, x, target, dtype))
            first[F.name] = []
            runs[F.name] = _contender(steps[F.name], repeats, first[F.name])
        timings = measure(runs, rounds, progress.step)
        timings = {n: Timing([s / repeats for s in t.seconds]) for n, t in timings.items()}
        rows.append(_row(arch, timings, steps, {n: float(v[0]) for n, v in first.items()}))
    progress.close()
    return rows


def _row(arch, timings: dict[str, Timing], steps: dict[str, Step], loss0: dict[str, float]):
    torch_ms = min((t.median_ms for n, t in timings.items() if n.startswith("torch")), default=None)
    flax = timings.get("flax")
    jax_names = [n for n in timings if not n.startswith("torch")]
    return {
        "case": f"model {arch.title}",
        "model": arch.name,
        "mode": "step",
        "auto_runs": "per layer",
        "contenders": {n: t.as_dict() for n, t in timings.items()},
        "torch_ms": torch_ms,
        "ratio_to_torch": {n: timings[n].median_ms / torch_ms for n in jax_names if torch_ms},
        "speedup_over_flax": {
            n: flax.median_ms / timings[n].median_ms for n in jax_names if flax and n != "flax"
        },
        "parameters": arch.parameters,
        "loss0": loss0,
        "memory_bytes": {n: steps[n].memory_bytes for n in jax_names},
        "flops": {n: steps[n].flops for n in jax_names},
    }


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a text table: per architecture, each contender's median step time (and its
    ratio to PyTorch's), convjax's speedup over Flax, and the JAX steps' memory and GFLOPs."""
    names = [n for n in dict.fromkeys(n for r in rows for n in r["contenders"]) if "torch" not in n]
    versus = "flax" in names and len(names) > 1  # a "vs flax" column
    header = (
        f"{'model':<16} {'params':>7} {'torch ms':>9} "
        + " ".join(f"{n + ' ms':>16}" for n in names)
        + (f" {'vs flax':>8}" if versus else "")
        + f" {'MiB ' + '/'.join(names):>16} {'GFLOP ' + '/'.join(names):>18}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = []
        for n in names:
            c, ratio = row["contenders"].get(n), row["ratio_to_torch"].get(n)
            text = (
                "—"
                if c is None
                else f"{c['median_ms']:.1f}" + (f" ({ratio:.2f}x)" if ratio else "")
            )
            cells.append(f"{text:>16}")
        speedup = [f"{v:.2f}x" for v in row["speedup_over_flax"].values()]
        memory = "/".join(_number(row["memory_bytes"].get(n), 2**20) for n in names)
        flops = "/".join(_number(row["flops"].get(n), 1e9) for n in names)
        torch_ms = f"{row['torch_ms']:.1f}" if row["torch_ms"] else "—"
        lines.append(
            f"{row['model']:<16} {row['parameters'] / 1e6:>6.2f}M "
            f"{torch_ms:>9} "
            + " ".join(cells)
            + (f" {'/'.join(speedup) or '—':>8}" if versus else "")
            + f" {memory:>16} {flops:>18}"
        )
    sizes = [f"  {row['case'].removeprefix('model ')}" for row in rows]
    return "\n".join([*lines, "", "sizes:", *sizes])


def _number(value: float | None, unit: float) -> str:
    return "—" if value is None else f"{value / unit:.1f}"
