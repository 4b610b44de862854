"""The convolution as one convolution of one dimension fewer, the first axis's taps folded into
the channels, of the input or of the output.

    into the inputs:   y[o₀] = conv_{N−1}( [pad(x)[o₀·s₀ + t₀·d₀]  for t₀ < k₀],  kernel )
    into the outputs:  y[o₀] = Σ_{t₀} z[o₀ + t₀·d₀ − lo₀, t₀],
                       z[i] = conv_{N−1}( x[i],  [kernel[t₀]  for t₀ < k₀] )

Into the inputs (:func:`into_inputs`, any spec): the strided slab of the padded input that each
tap ``t₀`` of the first spatial axis reads is stacked along the channels (tap-major within each
group), the first axis folded into the batch (``[B · O₀, *rest, k₀ · C]``), and convolved over
the remaining axes by XLA's own convolution (the ``lax`` formulation, with its guard) with the
kernel reshaped to match (``[*rest_window, k₀ · C / G, C_out]``); a 1-d convolution's is a
product over channels per position.  Into the outputs (:func:`into_outputs`: one group, stride
one along the first axis, zero padding): every plane of ``x`` convolved into ``k₀ · C_out``
channels, one block per tap, and each output plane the sum of the blocks its taps read.

XLA:CPU runs 2-d convolutions far better than 3-d ones, and better still with more channels,
the output's most of all: a 3×3×3 layer's gradients (12³, 16 → 8 channels, batch 16) take 3.5
ms folded into the outputs and 6.2 into the inputs; 8 → 8, 2.4 and 2.9, against 18.5 as one 3-d
convolution.  Where ``C_out`` passes ``k₀ · C_in`` the input fold is the faster
(:func:`folds_outputs`).  The input
gradient is the input fold's transpose either way (a convolution into ``k₀ · C_in`` channels,
each tap's slab added back into place), the kernel gradient the forward's fold's.

Non-finite values follow convjax's rule along the first axis (its padding is explicit zeros) and
XLA:CPU's convolution along the others, as ``lax`` does (see :class:`LaxBackend`).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from convjax._src import shapes
from convjax._src.checks import dtype_kind
from convjax._src.formulations.base import (
    AcceptsAll,
    accumulation_dtype,
    materialized,
    pad,
    tied,
)
from convjax._src.formulations.lax import LaxBackend
from convjax._src.formulations.taps import contract_tap
from convjax._src.spec import ConvSpec


@dataclasses.dataclass(frozen=True)
class PlanesBackend(AcceptsAll):
    """The first axis's kernel taps folded into the channels: one XLA convolution of one
    dimension fewer (see the module docstring), for 3-d and higher convolutions on a CPU."""

    name: str = dataclasses.field(default="planes", init=False)
    accepts: ClassVar[str] = "every convolution"
    description: ClassVar[str] = "first-axis taps folded into channels: lax, one dimension fewer"

    def __call__(self, x, kernel, spec, *, precision=None, preferred_element_type=None):
        options = dict(precision=precision, preferred_element_type=preferred_element_type)
        if folds_outputs(spec, kernel.shape):
            # The sum of shifted planes is elementwise, and XLA:CPU fuses it into whatever
            # reads y, in the backward pass too, which then keeps z (T₀ times y's channels)
            # alive to recompute y from: the 3-D UNet's step took 26.0 MiB and 16.2 ms that way,
            # 17.6 MiB and 14.6 ms with y computed once.
            return materialized(into_outputs(x, kernel, spec, **options))
        return into_inputs(x, kernel, spec, **options)

    # The rules below are JAX's transposes of the folds.  Each role's result dtype is the one
    # its cotangent has: the forward's preferred_element_type where it differs from x's.

    def input_gradient(self, g, kernel, spec, x_shape, *, precision=None):
        # The input fold's transpose, whichever fold the forward runs: a convolution of g into
        # T₀ · C_in channels, each tap's slab added back into place.  The output fold's
        # transpose convolves T₀ · C_out channels into C_in, the narrow way round (a 12³ 16 → 8
        # layer's input gradient 1.04 ms against 0.82).
        if dtype_kind(g.dtype) == "int":
            return None  # JAX transposes no integer function: base.transposed_as_forward
        options = dict(precision=precision, preferred_element_type=_wide(g, kernel))
        forward = lambda x: into_inputs(x, kernel, spec, **options)  # noqa: E731
        (out,) = jax.linear_transpose(forward, jnp.zeros_like(g, kernel.dtype, shape=x_shape))(g)
        return out

    def kernel_gradient(self, x, g, spec, kernel_shape, *, precision=None):
        # The forward's fold transposed, its operand x tied to the cotangent.  Untied, XLA:CPU's
        # scheduler builds what the kernel gradient reads (the input fold's stacked slabs, and
        # its convolution's transposed copy of them) as soon as x exists, in the forward pass,
        # and keeps it until the backward pass: six times each layer's input.  Tied, it is made
        # where the layer's gradient is, and freed after it (the 3-D UNet's training step 26.6
        # MiB → 17.6, as fast).
        if dtype_kind(x.dtype) == "int":
            return None
        fold = into_outputs if folds_outputs(spec, kernel_shape) else into_inputs
        options = dict(precision=precision, preferred_element_type=_wide(g, x))
        x = tied(x, g)
        forward = lambda kernel: fold(x, kernel, spec, **options)  # noqa: E731
        (out,) = jax.linear_transpose(forward, jnp.zeros_like(g, x.dtype, shape=kernel_shape))(g)
        return out


def _wide(g, operand):
    """The forward's ``preferred_element_type``, read from a role's cotangent ``g``: its dtype,
    where that differs from the operand's."""
    return None if g.dtype == operand.dtype else g.dtype


def folds_outputs(spec: ConvSpec, kernel_shape) -> bool:
    """Whether the forward (and the kernel gradient) fold the first axis's taps into the output
    channels (:func:`into_outputs`) rather than the input's (:func:`into_inputs`).

    XLA:CPU's convolution runs far better into many output channels than into few.  Measured,
    gradient of a loss, batch 16 (PyTorch's 3-d convolution in brackets): 12³ 16 → 8 3.5 ms
    folded into the outputs against 6.2 into the inputs [3.2]; 12³ 8 → 8 2.4 vs 2.9 [3.2]; 6³
    32 → 16 1.3 vs 1.6; but 12³ 8 → 64 46 vs 8.3, where C_out passes T₀ · C_in.  The output fold
    convolves every plane of x, so a stride along the first axis would waste planes."""
    ndim, taps = spec.ndim, kernel_shape[0]
    return (
        ndim >= 2
        and taps > 1
        and spec.groups == 1
        and spec.strides[0] == 1
        and spec.padding_mode == "zeros"
        and kernel_shape[-1] < taps * kernel_shape[-2]
    )


def into_inputs(x, kernel, spec, *, precision=None, preferred_element_type=None):
    """The first axis's taps folded into the input channels: each tap's strided slab of the
    padded input stacked along the channels, one convolution of one dimension fewer over them
    (any spec)."""
    ndim = spec.ndim
    if spec.padding_mode == "zeros":  # each slab cut from x, its zeros added as it is cut
        source, first, rest = x, spec.padding[0], spec.padding[1:]
    else:  # every axis padded here, the slabs' convolutions pad nothing
        source, first, rest = pad(x, spec), (0, 0), ((0, 0),) * (ndim - 1)
    inner = ConvSpec(spec.strides[1:], rest, spec.dilation[1:], spec.groups, "zeros")
    batch, taps, groups = x.shape[0], kernel.shape[0], spec.groups
    stride, dilation = spec.strides[0], spec.dilation[0]
    out = shapes.conv_output_size(source.shape[1], taps, stride, first, dilation)
    dtype = x.dtype if preferred_element_type is None else preferred_element_type
    slabs = [_slab(source, t * dilation - first[0], out, stride) for t in range(taps)]
    # [B, O₀, *rest, C] per tap → [B·O₀, *rest, G·T₀·C/G]: each group's channels tap-major,
    # as the kernel's [*window, T₀·C/G, C_out] below reads them.
    stacked = jnp.stack(slabs, axis=-2)  # [B, O₀, *rest, T₀, C]
    rest_shape = stacked.shape[2:-2]
    c = x.shape[-1] // groups
    stacked = stacked.reshape(batch * out, *rest_shape, taps, groups, c)
    stacked = jnp.swapaxes(stacked, -3, -2)
    stacked = stacked.reshape(batch * out, *rest_shape, groups * taps * c)
    folded = jnp.moveaxis(kernel, 0, -3)  # [*window, T₀, C/G, C_out]
    folded = folded.reshape(*folded.shape[:-3], taps * c, kernel.shape[-1])
    if ndim == 1:  # no axes left: a product over channels per position
        acc = accumulation_dtype(stacked.dtype, preferred_element_type)
        y = contract_tap(stacked.astype(acc), folded.astype(acc), groups, precision)
    else:
        options = dict(precision=precision, preferred_element_type=preferred_element_type)
        y = LaxBackend()(stacked, folded, inner, **options)
    return y.reshape(batch, out, *y.shape[1:]).astype(dtype)


def into_outputs(x, kernel, spec, *, precision=None, preferred_element_type=None):
    """The first axis's taps folded into the output channels (one group, stride one along the
    first axis, zero padding, two or more axes): every plane of ``x`` convolved over the other
    axes into ``T₀ · C_out`` channels, ``z[i, t] = conv_{N−1}(x[i], kernel[t])``, and each output
    plane the sum of the planes its taps read, ``y[o] = Σ_t z[o + t·d₀ − lo, t]``.

    A tap that reads a padding plane adds what the convolution of a plane of zeros gives, as
    the input fold's stacked zeros do (``0 · w``: NaN where a weight is not finite)."""
    batch, n = x.shape[:2]
    taps, c_out = kernel.shape[0], kernel.shape[-1]
    (lo, hi), dilation = spec.padding[0], spec.dilation[0]
    inner = ConvSpec(spec.strides[1:], spec.padding[1:], spec.dilation[1:], 1, "zeros")
    wide = jnp.moveaxis(kernel, 0, -2).reshape(*kernel.shape[1:-1], taps * c_out)
    options = dict(precision=precision, preferred_element_type=preferred_element_type)
    planes = x.reshape(batch * n, *x.shape[2:])
    z = LaxBackend()(planes, wide, inner, **options)
    z = z.reshape(batch, n, *z.shape[1:-1], taps, c_out)
    if lo or hi:  # without padding, every tap of every output reads a plane of x
        zeros = jnp.zeros_like(planes, shape=(1, *planes.shape[1:]))
        padding_plane = LaxBackend()(zeros, wide, inner, **options)  # [1, *rest_out, T₀ · C_out]
        padding_plane = padding_plane.reshape(1, 1, *z.shape[2:])
    out = shapes.conv_output_size(n, taps, 1, (lo, hi), dilation)
    y = None
    for t in range(taps):
        start = t * dilation - lo  # the plane of x the first output's tap t reads
        term = _slab(z[..., t, :], start, out, 1)
        reads = start + np.arange(out)
        outside = (reads < 0) | (reads >= n)
        if outside.any():
            mask = outside.reshape(1, out, *[1] * (term.ndim - 2))
            term = jnp.where(mask, padding_plane[..., t, :], term)
        y = term if y is None else y + term
    dtype = x.dtype if preferred_element_type is None else preferred_element_type
    return y.astype(dtype)


def _slab(x, start, count, stride):
    """``x[start + o·stride]`` along the first spatial axis for ``o < count``, zero where that
    is outside ``x``: one tap's slab of the zero-padded input, cut from ``x`` itself, so that no
    padded copy of ``x`` is kept for the slabs to share."""
    span = (count - 1) * stride + 1
    config = [(0, 0, 0)] * x.ndim
    config[1] = (-start, start + span - x.shape[1], 0)  # negative: cropped
    return lax.slice_in_dim(lax.pad(x, jnp.zeros((), x.dtype), config), 0, span, stride, axis=1)
