"""``lax.conv_general_dilated``, XLA's own convolution, with a guard against an XLA abort.

XLA's algebraic simplifier may swap a convolution's operands when that shrinks the window
(``ConvOperandSwapper``).  It keeps a spatial dim as it is when the dim looks like a "group"
dimension — no padding, no window dilation, base (input) dilation equal to the window size and
stride one less — and the rebuilt convolution then fails XLA's shape check, which aborts the
process (``Check failed: computation->Accept(this)``).  JAX's input gradient of a forward conv
is ``conv(g, rev(kernel), lhs_dilation=strides)``, padded ``(k̂ − 1 − lo, …)``: such a dim arises
exactly where the forward conv has window 2, stride 2, no dilation, low padding 1 and a size
whose input gradient needs no high padding (an even size with high padding 1 or 2).  On those
axes this backend pads explicitly (``lax.pad``) and runs the conv with no padding there: the
same numbers, and a gradient XLA compiles.  The other convolutions JAX derives from this one
(the kernel gradient, a dilated window over the output) have base dilation 1 and cannot take
that form; convjax's primitive differentiates every higher order through these three forms.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
from jax import lax

from convjax._src import shapes
from convjax._src.checks import dtype_kind
from convjax._src.formulations import base
from convjax._src.formulations.base import AcceptsAll
from convjax._src.formulations.gather import GatherBackend


def xla_abort_axes(spec, input_spatial, window) -> tuple[int, ...]:
    """The spatial dims where JAX's input gradient of ``spec``'s conv would give XLA a dim it
    mistakes for a group dimension (see the module docstring)."""
    risky = []
    for dim, (i, k, s, d, (lo, hi)) in enumerate(
        zip(input_spatial, window, spec.strides, spec.dilation, spec.padding, strict=True)
    ):
        if (k, s, d) != (2, 2, 1):
            continue
        out = shapes.conv_output_size(i, k, s, (lo, hi), d)
        # The input gradient's padding, as jax computes it (``_conv_general_vjp_lhs_padding``).
        before = k - 1 - lo
        after = i + k - 1 - ((out - 1) * s + 1) - before
        if before == after == 0:
            risky.append(dim)
    return tuple(risky)


# XLA:CPU multiplies the taps that read zero padding like any other.  Where they are at least
# this share of a convolution's multiply-adds, in at most this many boxes per spatial dim,
# the backend splits the outputs into boxes that read the same taps (see ``boxed_conv``).
# Measured (benchmarks/padding_boxes.py, quiet 2-core CPU), 3×3 64→32 on [16, 24, 24, 64],
# DeepLab's atrous rates, forward / gradient of a loss: rate 12 (56% of the taps on padding)
# 1.00 / 3.00 ms → 0.54 / 2.21, rate 18 (75%) 0.99 / 2.92 → 0.43 / 1.85, rate 6 (31%) even;
# a 7×7 on 7² (43%, 49 boxes) 0.77 / 2.4 → 1.40 / 14.1, a 3×3 on 4² (31%) 0.61 → 0.70.
PADDING_SHARE = 0.5
BOXES_PER_DIM = 3
# Below this many multiply-adds a convolution takes tens of microseconds, and its boxes' extra
# operations (and their compilation) cost as much as the skipped taps save.
MIN_BOXED_WORK = 2**24


def padding_boxes(spec, x_shape, kernel_shape):
    """Per spatial axis, the bands of outputs that read the same taps inside the input
    (:func:`shapes.reading_bands`), where splitting the convolution of an ``x_shape`` input by a
    ``kernel_shape`` kernel by them is worth it on this platform; ``None`` where it is not."""
    input_spatial, window = x_shape[1:-1], kernel_shape[: spec.ndim]
    if spec.padding_mode != "zeros" or jax.default_backend() != "cpu":
        return None
    out = spec.output_spatial(input_spatial, window)
    work = x_shape[0] * math.prod(out) * math.prod(kernel_shape)
    if work < MIN_BOXED_WORK:
        return None
    bands = [
        shapes.reading_bands(i, k, s, p, d)
        for i, k, s, p, d in zip(
            input_spatial, window, spec.strides, spec.padding, spec.dilation, strict=True
        )
    ]
    if not all(bands) or math.prod(map(len, bands)) > BOXES_PER_DIM ** len(bands):
        return None
    useful = math.prod(
        sum((stop - start) * (last - first) for start, stop, first, last in axis)
        / (axis[-1][1] * k)
        for axis, k in zip(bands, window, strict=True)
    )
    return bands if 1 - useful >= PADDING_SHARE else None


def boxed_conv(x, kernel, spec, bands, conv):
    """``spec``'s zero-padded convolution of ``x`` as a concatenation of boxes: the outputs of
    one band per axis (``bands``, from :func:`padding_boxes`) are ``conv(x_box, kernel_box)``, an
    unpadded convolution of the slice of ``x`` those outputs read by the taps that read inside
    it.  The taps on padding are skipped rather than multiplied by zeros (as XLA:CPU's own
    convolution treats non-finite weights there); outputs that read only padding are zeros."""
    ndim = spec.ndim

    def split(x, kernel, axis, sizes):
        if axis == ndim:
            return conv(x, kernel)
        lo = spec.padding[axis][0]
        s, d = spec.strides[axis], spec.dilation[axis]
        parts = []
        for start, stop, first, last in bands[axis]:
            box = [*sizes[:axis], stop - start, *sizes[axis + 1 :]]
            if first == last:
                dtype = jax.eval_shape(conv, x, kernel).dtype
                parts.append(jnp.zeros((x.shape[0], *box, kernel.shape[-1]), dtype))
                continue
            begin = start * s - lo + first * d
            end = (stop - 1) * s - lo + (last - 1) * d + 1
            part = lax.slice_in_dim(x, begin, end, axis=axis + 1)
            taps = lax.slice_in_dim(kernel, first, last, axis=axis)
            parts.append(split(part, taps, axis + 1, box))
        return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=axis + 1)

    return split(x, kernel, 0, [axis[-1][1] for axis in bands])


@dataclasses.dataclass(frozen=True)
class LaxBackend(AcceptsAll):
    """``lax.conv_general_dilated`` with kernel dilation and feature groups.

    Non-zero padding modes pad the input with ``jnp.pad`` first, then convolve with no padding.
    On the CPU, a zero-padded convolution whose taps mostly read padding (an atrous rate near
    the feature map's size) runs as boxes of outputs that read the same taps
    (:func:`boxed_conv`), skipping the taps on padding that XLA:CPU would multiply by zeros.

    Non-finite values follow XLA's convolution, which on the CPU departs from convjax's rule
    (zero padding acts as explicit zeros; nothing reaches an output that does not read it) in
    two ways: it skips the taps that read zero padding, in the forward conv and the kernel
    gradient (so a non-finite weight meeting padding gives no ``0 · inf = NaN`` there), and a
    grouped convolution mixes the groups, so a NaN or inf in one group makes the other groups'
    outputs at that position NaN.  The other direct backends follow the rule exactly.

    Cost: XLA:CPU computes a depthwise convolution's kernel gradient as a dense ``C × C``
    convolution whose diagonal it keeps (``C`` times the work); ``auto`` runs taps there.
    """

    name: str = dataclasses.field(default="lax", init=False)
    # XLA:CPU's kernel gradient transposes its operands; see base.materialized.
    materializes_kernel_gradient_operands: ClassVar[bool] = True
    accepts: ClassVar[str] = "every convolution"
    description: ClassVar[str] = "lax.conv_general_dilated, XLA's own convolution"

    def __call__(self, x, kernel, spec, *, precision=None, preferred_element_type=None):
        options = dict(precision=precision, preferred_element_type=preferred_element_type)
        bands = padding_boxes(spec, x.shape, kernel.shape)
        if bands is None:
            return _conv(x, kernel, spec, **options)
        unpadded = base.unpadded(spec)
        return boxed_conv(x, kernel, spec, bands, lambda x, k: _conv(x, k, unpadded, **options))

    # The transposes of a boxed forward.  JAX's would be one small convolution per box for
    # each, and XLA:CPU's kernel gradients of small boxes are slow; the input gradient at
    # stride 1 is a convolution of the cotangent with the same bands, boxed in turn, and the
    # rest transpose the unboxed convolution.  Elsewhere JAX transposes the forward.

    def input_gradient(self, g, kernel, spec, x_shape, *, precision=None):
        ndim = spec.ndim
        if padding_boxes(spec, x_shape, kernel.shape) is None:
            return None
        if all(s == 1 for s in spec.strides):
            # The flipped kernel over g, boxed in turn.
            padding = base.transposed_padding(spec, kernel.shape[:ndim])
            transposed = dataclasses.replace(spec, padding=padding)
            flipped = base.flipped_transposed_kernel(kernel, spec.groups)
            return self(g, flipped, transposed, precision=precision)
        if dtype_kind(g.dtype) == "int":
            return None  # base.transposed_as_forward
        forward = lambda x: _conv(x, kernel, spec, precision=precision)  # noqa: E731
        (out,) = jax.linear_transpose(forward, jnp.zeros_like(g, shape=x_shape))(g)
        return out

    def kernel_gradient(self, x, g, spec, kernel_shape, *, precision=None):
        # A pointwise kernel's gradient is one matrix product, xᵀ g over every position: XLA's
        # convolution transposes both operands for it (a 1×1 144→24 layer's gradients on 56²,
        # batch 8: 2.9 ms → 2.0; PyTorch 2.8).
        ndim = spec.ndim
        pointwise = (
            all(k == 1 for k in kernel_shape[:ndim])
            and not any(lo or hi for lo, hi in spec.padding)
            and spec.groups == 1
        )
        if pointwise:  # strided: the positions the outputs read, then the product
            out = g.shape[1:-1]
            limits = [(o - 1) * s + 1 for o, s in zip(out, spec.strides, strict=True)]
            x = lax.slice(
                x, (0,) * x.ndim, (x.shape[0], *limits, x.shape[-1]), (1, *spec.strides, 1)
            )
            flat = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
            dk = base.contract("ni,no->io", *flat, precision=precision)
            return dk.reshape(kernel_shape)
        if padding_boxes(spec, x.shape, kernel_shape) is None:
            return None
        forward = lambda k: _conv(x, k, spec, precision=precision)  # noqa: E731
        (out,) = jax.linear_transpose(forward, jnp.zeros_like(g, shape=kernel_shape))(g)
        return out


# XLA:CPU's float32 convolution miscomputes outputs (silently) when an axis's padding or dilated
# window spans 2**24 positions or so, with more than one channel: a window of 2 dilated by
# 2**24 − 2 over 3 inputs padded by as much, strides 2**23, reads 0 where the sum is 11 (the
# same with 2**23 − 2 is right).  No useful convolution comes near; such specs run on the
# explicit gather, which indexes rather than pads.
MISCOMPUTED_SPAN = 2**24


def miscomputed(spec, window) -> bool:
    """Whether XLA:CPU's convolution may miscompute ``spec`` (see ``MISCOMPUTED_SPAN``)."""
    return any(
        lo + hi >= MISCOMPUTED_SPAN or (k - 1) * d >= MISCOMPUTED_SPAN
        for k, d, (lo, hi) in zip(window, spec.dilation, spec.padding, strict=True)
    )


def _conv(x, kernel, spec, *, precision=None, preferred_element_type=None):
    """``lax.conv_general_dilated`` for ``spec``, with the guards against XLA's abort and its
    miscomputed spans."""
    ndim = spec.ndim
    if miscomputed(spec, kernel.shape[:ndim]):
        options = dict(precision=precision, preferred_element_type=preferred_element_type)
        return GatherBackend()(x, kernel, spec, **options)
    padding = list(spec.padding)
    if spec.padding_mode != "zeros":
        x = base.pad(x, spec)
        padding = [(0, 0)] * ndim
    else:
        risky = xla_abort_axes(spec, x.shape[1:-1], kernel.shape[:ndim])
        if risky:
            config = [(0, 0, 0)] * (ndim + 2)
            for dim in risky:
                config[dim + 1] = (*padding[dim], 0)
                padding[dim] = (0, 0)
            x = lax.pad(x, jnp.zeros((), x.dtype), config)
    letters = base.spatial_letters(ndim)
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=spec.strides,
        padding=tuple(padding),
        rhs_dilation=spec.dilation,
        dimension_numbers=(f"N{letters}C", f"{letters}IO", f"N{letters}C"),
        feature_group_count=spec.groups,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
