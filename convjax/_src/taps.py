"""The tap-sum convolution: one strided slice of the padded input per kernel tap.

    y[o] = Σ_t  pad(x)[o·s + t·d]  ⊗  kernel[t]

Each tap's slice is contracted with that tap's weights according to the groups:

- dense (one group) or wide groups: a matrix product per tap (``[…, C_in] @ [C_in, C_out]``,
  batched over groups), so a 1×1 kernel is a single matmul;
- depthwise (one input channel per group) and narrow groups (at most ``NARROW_GROUP`` input
  channels each): broadcast multiply-adds, which XLA fuses into one loop over the output.

The padding is explicit (``jnp.pad`` in the spec's mode), so zero padding contributes exact zeros
and every value reaches exactly the outputs whose windows cover it.  Half-precision operands are
accumulated in float32.

Derivatives.  The matrix-product forms are differentiated by JAX: the transposes of slices and
products are pads and products.  The multiply-add forms have rules of their own, because JAX's
transposes of them are one reduction per tap, which XLA runs poorly.  Three bilinear pieces,
each written with the others, so that every order of reverse-mode differentiation stays on them:

- the tap sum ``T(x, w)`` above, whose cotangents are
- the transposed tap sum ``Tᵀ(g, w)``, a stride-1 tap sum of the zero-upsampled ``g`` with the
  flipped kernel (input and output channels exchanged), and
- the tap correlation ``R(x, g)[t] = Σ_o x[o·s + t·d] ⊗ g[o]``, the kernel gradient: one fused
  reduction over the batch for several taps at once.

Those rules are reverse-mode (``jax.custom_vjp``): forward-mode differentiation (``jax.jvp``,
``jax.jacfwd``, ``jax.hessian``) of a depthwise or narrow-grouped convolution needs another
formulation (``impl="lax"`` or ``"gather"``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from convjax._src import shapes
from convjax._src.spec import ConvSpec

JNP_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}

# Up to this many input channels per group, a grouped tap is a sum of broadcast multiply-adds
# (one fused loop); wider groups use a batched matrix product.
NARROW_GROUP = 8


class Geometry(NamedTuple):
    """The static shape of a tap sum over an already padded input (hashable)."""

    strides: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    window: tuple[int, ...]
    out: tuple[int, ...]


def pad(x, spec: ConvSpec):
    """``x: [B, *spatial, C]`` padded on its spatial axes as ``spec`` says."""
    if not any(lo or hi for lo, hi in spec.padding):
        return x
    widths = ((0, 0), *spec.padding, (0, 0))
    return jnp.pad(x, widths, mode=JNP_PAD_MODES[spec.padding_mode])


def accumulation_dtype(dtype, preferred_element_type):
    """Half precision sums in float32, as XLA's convolutions do; otherwise the dtype given."""
    if preferred_element_type is not None:
        return np.dtype(preferred_element_type)
    return np.dtype(np.float32) if np.dtype(dtype).itemsize < 4 else np.dtype(dtype)


def is_elementwise(c_per_group: int, groups: int) -> bool:
    """Whether a tap is a sum of broadcast multiply-adds (depthwise or narrow groups)."""
    return groups > 1 and c_per_group <= NARROW_GROUP


def window_slice(padded, tap: Sequence[int], geometry: Geometry):
    """The strided slice of ``padded`` that kernel tap ``tap`` reads for every output."""
    start = [t * d for t, d in zip(tap, geometry.dilation, strict=True)]
    stop = [
        b + (o - 1) * s + 1 for b, o, s in zip(start, geometry.out, geometry.strides, strict=True)
    ]
    return lax.slice(
        padded,
        (0, *start, 0),
        (padded.shape[0], *stop, padded.shape[-1]),
        (1, *geometry.strides, 1),
    )


def _lead(a, ndim: int):
    """``a`` with leading unit axes up to ``ndim`` (explicit broadcasting, so that this also
    runs with ``jax_numpy_rank_promotion="raise"``)."""
    return a.reshape((1,) * (ndim - a.ndim) + a.shape)


def contract_tap(window, weights, groups, precision):
    """One tap: ``window: [..., C_in]`` by ``weights: [C_in // groups, C_out]``."""
    c, c_out = weights.shape
    if groups == 1:
        return jnp.einsum("...c,cj->...j", window, weights, precision=precision)
    j = c_out // groups
    if c == 1:  # depthwise: each input channel times its own j filters
        if j == 1:
            return window * _lead(weights[0], window.ndim)
        product = window[..., None] * _lead(weights.reshape(groups, j), window.ndim + 1)
        return product.reshape(*window.shape[:-1], c_out)
    window = window.reshape(*window.shape[:-1], groups, c)
    weights = weights.reshape(c, groups, j)
    if c <= NARROW_GROUP:
        total = sum(window[..., i, None] * _lead(weights[i], window.ndim) for i in range(c))
    else:
        total = jnp.einsum("...gc,cgj->...gj", window, weights, precision=precision)
    return total.reshape(*total.shape[:-2], c_out)


def _tap_sum(padded, kernel, geometry: Geometry, precision=None):
    total = None
    for tap in np.ndindex(*geometry.window):
        term = contract_tap(
            window_slice(padded, tap, geometry), kernel[tap], geometry.groups, precision
        )
        total = term if total is None else total + term
    return total


def tap_sum(padded, kernel, geometry: Geometry, precision=None):
    """``T(padded, kernel)``: the convolution of an already padded input (no more padding)."""
    if is_elementwise(kernel.shape[-2], geometry.groups):
        return _elementwise_tap_sum(padded, kernel, geometry)
    return _tap_sum(padded, kernel, geometry, precision)


# -- the multiply-add forms' derivatives ---------------------------------------------------------


def _flipped_transposed_kernel(kernel, groups):
    """``[*window, C // G, G·J]`` → ``[*window (flipped), J, G·(C // G)]``: the kernel of the
    transposed tap sum, from ``C_out`` channels back to ``C_in``."""
    ndim = kernel.ndim - 2
    c, c_out = kernel.shape[-2:]
    k = kernel.reshape(*kernel.shape[:-1], groups, c_out // groups)
    k = jnp.flip(k, axis=tuple(range(ndim)))
    k = jnp.moveaxis(k, ndim, -1)  # [*window, G, J, C]
    k = jnp.swapaxes(k, ndim, ndim + 1)  # [*window, J, G, C]
    return k.reshape(*kernel.shape[:ndim], c_out // groups, groups * c)


def transposed_tap_sum(g, kernel, geometry: Geometry, padded_shape):
    """``Tᵀ(g, kernel)``: the cotangent of the padded input of ``T`` for output cotangent
    ``g``, as a stride-1 tap sum over ``g`` upsampled by the strides (zeros between) and padded
    by the dilated window, with the flipped, channel-exchanged kernel."""
    ndim = len(geometry.window)
    spans = map(shapes.effective_window, geometry.window, geometry.dilation)
    config = [(0, 0, 0)]
    for span, o, s, n in zip(
        spans, geometry.out, geometry.strides, padded_shape[1:-1], strict=True
    ):
        unread = n - ((o - 1) * s + span)  # trailing inputs no window reaches
        config.append((span - 1, span - 1 + unread, s - 1))
    config.append((0, 0, 0))
    upsampled = lax.pad(g, jnp.zeros((), g.dtype), config)
    flipped = _flipped_transposed_kernel(kernel, geometry.groups)
    stride_one = Geometry(
        (1,) * ndim, geometry.dilation, geometry.groups, geometry.window, tuple(padded_shape[1:-1])
    )
    return tap_sum(upsampled, flipped, stride_one)


def _products(padded, g, geometry: Geometry, c_per_group):
    """The elementwise products the kernel gradient sums, in the kernel's order: for each tap
    and input channel of a group, ``[B, *out, C_out]`` summing to ``kernel[tap][c]``."""
    groups = geometry.groups
    grads = g.reshape(*g.shape[:-1], groups, g.shape[-1] // groups)
    for tap in np.ndindex(*geometry.window):
        window = window_slice(padded, tap, geometry)
        window = window.reshape(*window.shape[:-1], groups, c_per_group)
        for c in range(c_per_group):
            yield (window[..., c, None] * grads).reshape(g.shape)


def tap_correlation(padded, g, geometry: Geometry, kernel_shape):
    """``R(padded, g)``: the kernel gradient ``Σ_o padded[o·s + t·d] ⊗ g[o]`` of the multiply-add
    forms, as fused reductions over the batch (and the first spatial axis for small batches)."""
    return _tap_correlation(padded, g, geometry, tuple(kernel_shape))


def _sum_products(padded, g, geometry: Geometry, kernel_shape):
    # Sum over the batch first (fused, for a chunk of products at once), or over the batch and
    # the first spatial axis for small batches, then over the rest (measured, XLA:CPU).
    axes = (0,) if g.shape[0] >= 8 else (0, 1)
    chunk_size = 9 if axes == (0,) else 16
    rest = tuple(range(g.ndim - 1 - len(axes)))
    products = list(_products(padded, g, geometry, kernel_shape[-2]))
    zero = jnp.zeros((), g.dtype)
    totals = []
    for start in range(0, len(products), chunk_size):
        chunk = products[start : start + chunk_size]
        partials = lax.reduce(
            tuple(chunk), (zero,) * len(chunk), lambda a, b: tuple(map(jnp.add, a, b)), axes
        )
        totals += [jnp.sum(partial, axis=rest) for partial in partials]
    return jnp.stack(totals).reshape(kernel_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _elementwise_tap_sum(padded, kernel, geometry):
    return _tap_sum(padded, kernel, geometry)


def _elementwise_tap_sum_fwd(padded, kernel, geometry):
    return _tap_sum(padded, kernel, geometry), (padded, kernel)


def _elementwise_tap_sum_bwd(geometry, residuals, g):
    padded, kernel = residuals
    return (
        transposed_tap_sum(g, kernel, geometry, padded.shape),
        tap_correlation(padded, g, geometry, kernel.shape),
    )


_elementwise_tap_sum.defvjp(_elementwise_tap_sum_fwd, _elementwise_tap_sum_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _tap_correlation(padded, g, geometry, kernel_shape):
    return _sum_products(padded, g, geometry, kernel_shape)


def _tap_correlation_fwd(padded, g, geometry, kernel_shape):
    return _sum_products(padded, g, geometry, kernel_shape), (padded, g)


def _tap_correlation_bwd(geometry, kernel_shape, residuals, ct):
    padded, g = residuals  # R is bilinear: its cotangents are a T and a Tᵀ with kernel ct
    return transposed_tap_sum(g, ct, geometry, padded.shape), tap_sum(padded, ct, geometry)


_tap_correlation.defvjp(_tap_correlation_fwd, _tap_correlation_bwd)


def taps_conv(x, kernel, spec: ConvSpec, *, precision=None, preferred_element_type=None):
    """``x: [B, *spatial, C_in]`` convolved as a sum over taps; see the module docstring."""
    ndim = spec.ndim
    window = tuple(kernel.shape[:ndim])
    geometry = Geometry(
        spec.strides, spec.dilation, spec.groups, window, spec.output_spatial(x.shape[1:-1], window)
    )
    dtype = accumulation_dtype(x.dtype, preferred_element_type)
    y = tap_sum(pad(x, spec).astype(dtype), kernel.astype(dtype), geometry, precision)
    return y.astype(x.dtype if preferred_element_type is None else preferred_element_type)
