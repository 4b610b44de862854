"""Counting: parameters, multiply-adds and receptive fields of a layer or a stack of layers.

A :class:`Layer` describes one convolution by its kernel shape and options, with no arrays; every
variant is one layer or a short stack of them, as the functions compose :func:`~convjax.conv`:

=========================  ======================================================================
conv, dilated, grouped     ``Layer(kernel_shape, strides=…, padding=…, dilation=…, groups=…)``
depthwise (multiplier m)   ``Layer((*window, 1, C · m), groups=C)``
depthwise separable        ``Layer.depthwise_separable(depthwise_shape, pointwise_shape)``: 2 layers
spatially separable        ``Layer.spatial_separable(kernel_shapes)``: one layer per axis
transposed                 ``Layer(kernel_shape, transpose=True, …)``: the adjoint of that conv
=========================  ======================================================================

:func:`param_count`, :func:`flop_count` and :func:`receptive_field` take one layer or a sequence
of them (nested sequences are flattened, so the tuples above can be listed as they are).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, NamedTuple

from convjax._src import shapes
from convjax._src.checks import check_bool, check_int, check_shape, per_dim
from convjax._src.ops.separable import chain_channels, check_one_d_kernels
from convjax._src.spec import Padding, make_spec, normalize_padding

UNITS = ("macs", "flops")


@dataclasses.dataclass(frozen=True)
class Layer:
    """One convolution layer as shapes and options: what the counting functions need.

    Frozen and hashable; options are normalised (ints → one per spatial dim, padding → the
    upper-case string or one ``(lo, hi)`` pair per dim) and checked on construction.

    Attributes:
      kernel_shape: ``[*window, C_in // groups, C_out]``, the kernel :func:`~convjax.conv`
        takes.  For ``transpose=True`` it is the kernel of the forward conv, ``[*window,
        C_out // groups, C_in]`` of the transposed layer, as :func:`~convjax.conv_transpose`
        takes it.
      strides, padding, dilation, groups: as in :func:`~convjax.conv` (for a transposed layer,
        those of its forward conv).  String padding is resolved against the input size when one
        is known (:func:`flop_count`); the receptive field does not depend on padding.
      bias: whether the layer adds a bias, one per output channel.
      transpose: a transposed convolution, the adjoint of the forward conv with these options.
      output_padding: for ``transpose=True``, the extra size ``a < max(stride, dilation)`` at
        the high end of each dim (``o′ = s(i′ − 1) + a + k̂ − lo − hi``; ``'SAME'`` gives
        ``o′ = s · i′``).

    >>> import convjax
    >>> layer = convjax.Layer((3, 3, 16, 32), padding="SAME", bias=True)
    >>> layer.strides, layer.padding, convjax.param_count(layer)
    ((1, 1), 'SAME', 4640)
    """

    kernel_shape: tuple[int, ...]
    _: dataclasses.KW_ONLY
    strides: int | tuple[int, ...] = 1
    padding: Padding = "VALID"
    dilation: int | tuple[int, ...] = 1
    groups: int = 1
    bias: bool = False
    transpose: bool = False
    output_padding: int | tuple[int, ...] = 0

    def __post_init__(self):
        op = "Layer"
        kernel_shape = self.kernel_shape
        if not isinstance(kernel_shape, Sequence) or isinstance(kernel_shape, str):
            raise TypeError(
                f"{op}: kernel_shape must be a sequence of ints, got {type(kernel_shape).__name__}."
            )
        kernel_shape = tuple(check_int(op, "kernel_shape", n) for n in kernel_shape)
        if len(kernel_shape) < 3 or any(n < 1 for n in kernel_shape):
            raise ValueError(
                f"{op}: kernel_shape must have rank >= 3 ([*window, C_in // groups, C_out]) and "
                f"sizes >= 1, got {kernel_shape}."
            )
        ndim = len(kernel_shape) - 2
        window = kernel_shape[:ndim]
        strides = per_dim(op, "strides", self.strides, ndim, minimum=1)
        dilation = per_dim(op, "dilation", self.dilation, ndim, minimum=1)
        if isinstance(self.padding, str):
            normalize_padding(op, self.padding, window, window, strides, dilation)  # the name
            padding: Padding = self.padding.upper()
        else:  # explicit padding does not depend on the input size
            padding = normalize_padding(op, self.padding, window, window, strides, dilation)
        groups = check_int(op, "groups", self.groups)
        if groups < 1:
            raise ValueError(f"{op}: groups must be >= 1, got {groups}.")
        if kernel_shape[-1] % groups:
            raise ValueError(
                f"{op}: groups must divide kernel_shape[-1], but {groups} does not divide "
                f"{kernel_shape[-1]}."
            )
        bias, transpose = (check_bool(op, n, getattr(self, n)) for n in ("bias", "transpose"))
        output_padding = per_dim(op, "output_padding", self.output_padding, ndim, minimum=0)
        if any(output_padding) and not transpose:
            raise ValueError(
                f"{op}: output_padding needs transpose=True, got output_padding {output_padding}."
            )
        if any(a >= max(s, d) for a, s, d in zip(output_padding, strides, dilation, strict=True)):
            raise ValueError(
                f"{op}: output_padding must be smaller than the stride or the dilation in every "
                f"dim, got output_padding {output_padding} with strides {strides} and dilation "
                f"{dilation}."
            )
        if any(output_padding) and padding == "SAME":
            raise ValueError(
                f"{op}: output_padding must be 0 with padding 'SAME' (the size is strides * "
                f"size), got {output_padding}."
            )
        for name, value in (
            ("kernel_shape", kernel_shape),
            ("strides", strides),
            ("padding", padding),
            ("dilation", dilation),
            ("groups", groups),
            ("bias", bias),
            ("transpose", transpose),
            ("output_padding", output_padding),
        ):
            object.__setattr__(self, name, value)

    @property
    def ndim(self) -> int:
        """The number of spatial dims."""
        return len(self.kernel_shape) - 2

    @property
    def window(self) -> tuple[int, ...]:
        return self.kernel_shape[: self.ndim]

    @property
    def in_channels(self) -> int:
        if self.transpose:
            return self.kernel_shape[-1]
        return self.kernel_shape[-2] * self.groups

    @property
    def out_channels(self) -> int:
        if self.transpose:
            return self.kernel_shape[-2] * self.groups
        return self.kernel_shape[-1]

    @classmethod
    def depthwise_separable(
        cls,
        depthwise_shape: Sequence[int],
        pointwise_shape: Sequence[int],
        *,
        depth_multiplier: int = 1,
        strides: int | Sequence[int] = 1,
        padding: Padding = "VALID",
        dilation: int | Sequence[int] = 1,
        bias: bool = False,
    ) -> tuple[Layer, Layer]:
        """The two layers :func:`~convjax.depthwise_separable_conv` composes.

        A depthwise layer ``[*window, 1, C_in · m]`` with ``groups = C_in``, then a 1×1 layer
        ``[1, …, 1, C_in · m, C_out]``.  ``bias`` adds one bias to the output (on the 1×1
        layer), as Keras' ``SeparableConv2D`` does.

        Args:
          depthwise_shape: ``[*window, 1, C_in · m]``.
          pointwise_shape: ``[C_in · m, C_out]``.
          depth_multiplier: ``m``.

        >>> import convjax
        >>> convjax.param_count(convjax.Layer.depthwise_separable((3, 3, 1, 16), (16, 32)))
        656
        """
        op = "Layer.depthwise_separable"
        depthwise_shape, pointwise_shape = tuple(depthwise_shape), tuple(pointwise_shape)
        m = check_int(op, "depth_multiplier", depth_multiplier)
        if m < 1:
            raise ValueError(f"{op}: depth_multiplier must be >= 1, got {m}.")
        if len(depthwise_shape) < 3 or depthwise_shape[-2] != 1 or depthwise_shape[-1] % m:
            raise ValueError(
                f"{op}: depthwise_shape must be [*window, 1, C_in * depth_multiplier] with "
                f"depth_multiplier = {m}, got {depthwise_shape}."
            )
        if len(pointwise_shape) != 2 or pointwise_shape[0] != depthwise_shape[-1]:
            raise ValueError(
                f"{op}: pointwise_shape must be [C_in * depth_multiplier, C_out] with "
                f"C_in * depth_multiplier = {depthwise_shape[-1]} (depthwise_shape[-1]), got "
                f"{pointwise_shape}."
            )
        ndim = len(depthwise_shape) - 2
        depthwise = cls(
            depthwise_shape,
            strides=strides,
            padding=padding,
            dilation=dilation,
            groups=depthwise_shape[-1] // m,
        )
        pointwise = cls((*(1,) * ndim, *pointwise_shape), bias=bias)
        return depthwise, pointwise

    @classmethod
    def spatial_separable(
        cls,
        kernel_shapes: Sequence[Sequence[int]],
        *,
        strides: int | Sequence[int] = 1,
        padding: Padding = "VALID",
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> tuple[Layer, ...]:
        """The layers :func:`~convjax.spatial_separable_conv` composes, one per spatial axis.

        Layer ``i`` has window ``k_i`` on axis ``i`` and 1 elsewhere, with the stride, dilation
        and padding of axis ``i`` only (a padding string stays a string: with window 1 it pads
        nothing on the other axes).  ``bias`` adds one bias to the output (on the last layer).

        Args:
          kernel_shapes: one 1-D kernel shape ``[k_i, C_i // groups, C_{i+1}]`` per axis.

        >>> import convjax
        >>> sobel = convjax.Layer.spatial_separable([(3, 1, 1), (3, 1, 1)])
        >>> convjax.param_count(sobel), convjax.receptive_field(sobel).size
        (6, (3, 3))
        """
        op = "Layer.spatial_separable"
        if not isinstance(kernel_shapes, Sequence) or isinstance(kernel_shapes, str):
            raise TypeError(
                f"{op}: kernel_shapes must be a sequence of 1-D kernel shapes, got "
                f"{type(kernel_shapes).__name__}."
            )
        kernel_shapes = [tuple(shape) for shape in kernel_shapes]
        check_one_d_kernels(op, kernel_shapes)
        ndim = len(kernel_shapes)
        groups = check_int(op, "groups", groups)
        if groups < 1:
            raise ValueError(f"{op}: groups must be >= 1, got {groups}.")
        chain_channels(op, kernel_shapes[0][1] * groups, kernel_shapes, groups, first="kernels[0]")
        window = tuple(shape[0] for shape in kernel_shapes)
        strides = per_dim(op, "strides", strides, ndim, minimum=1)
        dilation = per_dim(op, "dilation", dilation, ndim, minimum=1)
        if not isinstance(padding, str):
            padding = normalize_padding(op, padding, window, window, strides, dilation)
        layers = []
        for axis, (_, c, o) in enumerate(kernel_shapes):

            def keep(values, neutral, axis=axis):
                return tuple(v if a == axis else neutral for a, v in enumerate(values))

            layers.append(
                cls(
                    (*keep(window, 1), c, o),
                    strides=keep(strides, 1),
                    padding=padding if isinstance(padding, str) else keep(padding, (0, 0)),
                    dilation=keep(dilation, 1),
                    groups=groups,
                    bias=bias and axis == ndim - 1,
                )
            )
        return tuple(layers)


class ReceptiveField(NamedTuple):
    """The receptive field of a stack's output, per spatial dim, in units of its input.

    Attributes:
      size: how many consecutive input positions one output depends on (holes included, as
        for a dilated kernel): ``r_out = r_in + (k̂ − 1) · jump_in``.
      jump: the input distance between neighbouring outputs: ``jump_out = jump_in · s``.

    Both are ints for forward layers.  Through a transposed layer the jump divides by its
    stride and the values may be :class:`fractions.Fraction`; the size is then the span in
    upsampled coordinates, an upper bound on the number of inputs one output reads.
    """

    size: tuple[int | Fraction, ...]
    jump: tuple[int | Fraction, ...]


def _flatten(op: str, layers: Any) -> list[Layer]:
    if isinstance(layers, Layer):
        return [layers]
    if not isinstance(layers, Sequence) or isinstance(layers, str):
        hint = ""
        if hasattr(layers, "kernel") or hasattr(layers, "_description"):  # a layer module
            hint = (
                " (describe the layer's shapes with convjax.Layer(kernel_shape, ...); a module's "
                "own parameters count as sum(p.size for p in jax.tree.leaves(nnx.state(module, "
                "nnx.Param))))"
            )
        raise TypeError(
            f"{op}: layers must be a convjax.Layer or a sequence of them, got "
            f"{type(layers).__name__}{hint}."
        )
    flat = [layer for item in layers for layer in _flatten(op, item)]
    if not flat:
        raise ValueError(f"{op}: layers must hold at least one Layer, got none.")
    ndims = {layer.ndim for layer in flat}
    if len(ndims) > 1:
        raise ValueError(
            f"{op}: every layer must have the same number of spatial dims, got "
            f"{[layer.ndim for layer in flat]}."
        )
    return flat


def param_count(layers: Layer | Sequence[Any]) -> int:
    """The number of weights (and biases) of a layer or a stack: ``I · O · K / groups`` each.

    ``K = prod(window)``, so a 3×3 layer from 16 to 32 channels has 16 · 32 · 9 = 4608 weights,
    its depthwise separable version 16 · 9 + 16 · 32 = 656, and a transposed layer as many as
    its forward conv.  A bias adds ``C_out``.

    Args:
      layers: a :class:`Layer` or a (nested) sequence of them.

    >>> import convjax
    >>> convjax.param_count(convjax.Layer((3, 3, 16, 32)))
    4608
    """
    return sum(
        math.prod(layer.kernel_shape) + (layer.out_channels if layer.bias else 0)
        for layer in _flatten("param_count", layers)
    )


def _taps_in_bounds(
    size: int, out: int, window: int, stride: int, pad: tuple[int, int], dilation: int
) -> int:
    """How many (output, tap) pairs of the first ``out`` outputs of one axis read the input
    rather than zero padding."""
    lo = pad[0]
    return sum(
        sum(1 for t in range(window) if 0 <= o * stride - lo + t * dilation < size)
        for o in range(out)
    )


def flop_count(
    layers: Layer | Sequence[Any],
    input_shape: Sequence[int],
    *,
    unit: str = "macs",
    count_padding: bool = True,
) -> int:
    """Multiply-adds (default) or FLOPs of a layer or a stack applied to ``input_shape``.

    With ``unit="macs"``, the number of **multiply-adds** (MACs): for a forward layer,
    ``prod(output shape) · K · C_in / groups`` with ``K = prod(window)`` (each output element
    is a sum of that many products), i.e. ``prod(out positions) · prod(kernel_shape)`` per
    batch element.  A transposed layer counts the forward MACs of its conv, which is
    ``prod(its input positions) · prod(kernel_shape)``: the same work, run as the adjoint.
    With ``unit="flops"``, floating-point operations, ``2 · MACs`` (a multiply and an add
    each).  A bias adds one operation per output element to either count.

    ``count_padding=True`` counts the taps that read zero padding too (the usual dense count
    above).  ``count_padding=False`` counts only taps that read the input, which is how XLA
    counts a convolution: ``flop_count(..., unit="flops", count_padding=False)`` equals
    ``jax.jit(f).lower(...).compile().cost_analysis()["flops"]`` of the ``impl="lax"`` layers
    on CPU in float32 / float64 exactly, except where XLA rewrites a degenerate conv (e.g. one
    multiply-add per output, or a window spanning a whole input axis) as a multiply and a
    reduction: it then counts the ``K − 1`` adds a sum of ``K`` products needs, one flop less
    per output element (tested).  Reflect / replicate / circular padding is materialised, so
    XLA counts its taps: compare those with ``count_padding=True``.

    Args:
      layers: a :class:`Layer` or a (nested) sequence of them, applied in order.
      input_shape: ``[*batch, *spatial, C_in]`` of the first layer.
      unit: ``"macs"`` or ``"flops"``.
      count_padding: whether taps that read zero padding count.

    Returns:
      The count for the whole batch, an int.

    >>> import convjax
    >>> layer = convjax.Layer((3, 3, 16, 32), padding="SAME")
    >>> convjax.flop_count(layer, (1, 8, 8, 16))  # 8 * 8 outputs, 3 * 3 * 16 * 32 each
    294912
    >>> convjax.flop_count(layer, (1, 8, 8, 16), unit="flops")
    589824
    >>> convjax.flop_count(layer, (1, 8, 8, 16), count_padding=False)  # the border reads zeros
    247808
    """
    op = "flop_count"
    flat = _flatten(op, layers)
    if unit not in UNITS:
        raise ValueError(f"{op}: unit must be one of {UNITS}, got {unit!r}.")
    count_padding = check_bool(op, "count_padding", count_padding)
    shape = check_shape(op, "input_shape", input_shape)
    macs = adds = 0
    for index, layer in enumerate(flat):
        where = f"layers[{index}]"
        ndim = layer.ndim
        if len(shape) < ndim + 1:
            raise ValueError(
                f"{op}: the input of {where} must have rank >= {ndim + 1} ([*batch, *spatial, "
                f"C_in]), got shape {shape}."
            )
        if shape[-1] != layer.in_channels:
            raise ValueError(
                f"{op}: {where} takes {layer.in_channels} input channels (kernel_shape "
                f"{layer.kernel_shape}, groups {layer.groups}), got an input of shape {shape}."
            )
        batch, spatial = math.prod(shape[: -ndim - 1]), shape[-ndim - 1 : -1]
        if layer.transpose:
            out = _transpose_spatial(op, where, layer, spatial)
            forward_in, forward_out = out, spatial
        else:
            forward_in, forward_out = spatial, None
        spec = make_spec(
            f"{op}: {where}",
            (*shape[: -ndim - 1], *forward_in, layer.kernel_shape[-2] * layer.groups),
            layer.kernel_shape,
            strides=layer.strides,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=layer.groups,
        )
        if forward_out is None:
            out = forward_out = spec.output_spatial(forward_in, layer.window)
        if count_padding:
            taps = math.prod(forward_out) * math.prod(layer.window)
        else:
            taps = math.prod(
                _taps_in_bounds(i, o, k, s, p, d)
                for i, o, k, s, p, d in zip(
                    forward_in,
                    forward_out,
                    layer.window,
                    spec.strides,
                    spec.padding,
                    spec.dilation,
                    strict=True,
                )
            )
        macs += batch * taps * math.prod(layer.kernel_shape[-2:])
        shape = (*shape[: -ndim - 1], *out, layer.out_channels)
        if layer.bias:
            adds += math.prod(shape)
    return (macs if unit == "macs" else 2 * macs) + adds


def _transpose_spatial(op: str, where: str, layer: Layer, spatial: Sequence[int]):
    """The output sizes of a transposed layer on ``spatial``; ``'SAME'`` gives ``s · i``."""
    sizes = []
    for dim, (i, k, s, d, a) in enumerate(
        zip(spatial, layer.window, layer.strides, layer.dilation, layer.output_padding, strict=True)
    ):
        if layer.padding == "SAME":
            n = s * i
        else:
            pad = (
                shapes.string_padding(layer.padding, i, k, s, d)  # independent of the size
                if isinstance(layer.padding, str)
                else layer.padding[dim]
            )
            n = shapes.conv_transpose_output_size(i, k, s, pad, d, a)
        if n < 1:
            raise ValueError(
                f"{op}: {where} (transposed) would give an empty output: size {n} in spatial dim "
                f"{dim} from input size {i}."
            )
        sizes.append(n)
    return tuple(sizes)


def receptive_field(layers: Layer | Sequence[Any]) -> ReceptiveField:
    r"""The receptive field of a layer or a stack: size and jump per spatial dim.

    From the input (``r = 1``, ``jump = 1``) through each layer with effective window
    ``k̂ = (k − 1) d + 1`` and stride ``s``:

    .. math::
        r_{out} = r_{in} + (\hat k - 1)\, j_{in}, \qquad j_{out} = j_{in}\, s

    A transposed layer is a stride-1 conv on its input upsampled by ``s``: ``j_out = j_in / s``
    and ``r_out = r_in + (k̂ − 1) j_out``.  Padding does not change either.

    Args:
      layers: a :class:`Layer` or a (nested) sequence of them, applied in order.

    Returns:
      A :class:`ReceptiveField`.

    >>> import convjax
    >>> convjax.receptive_field(convjax.Layer((3, 3, 1, 1), dilation=2))  # 9 weights, 5x5 field
    ReceptiveField(size=(5, 5), jump=(1, 1))
    >>> convjax.receptive_field([convjax.Layer((3, 3, 1, 1), strides=2)] * 3).size
    (15, 15)
    """
    flat = _flatten("receptive_field", layers)
    ndim = flat[0].ndim
    size: list[int | Fraction] = [1] * ndim
    jump: list[int | Fraction] = [1] * ndim
    for layer in flat:
        for dim in range(ndim):
            span = shapes.effective_window(layer.window[dim], layer.dilation[dim])
            if layer.transpose:
                jump[dim] = _simplify(Fraction(jump[dim]) / layer.strides[dim])
                size[dim] = _simplify(size[dim] + (span - 1) * jump[dim])
            else:
                size[dim] = _simplify(size[dim] + (span - 1) * jump[dim])
                jump[dim] = _simplify(jump[dim] * layer.strides[dim])
    return ReceptiveField(tuple(size), tuple(jump))


def _simplify(value: int | Fraction) -> int | Fraction:
    """A whole Fraction as an int."""
    if isinstance(value, Fraction) and value.denominator == 1:
        return value.numerator
    return value
