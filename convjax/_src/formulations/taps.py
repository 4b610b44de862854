"""The tap-sum convolution: one strided slice of the padded input per kernel tap.

    y[o] = Σ_t  pad(x)[o·s + t·d]  ⊗  kernel[t]

Each tap's slice is contracted with that tap's weights according to the groups:

- dense (one group) or wide groups: a matrix product per tap (``[…, C_in] @ [C_in, C_out]``,
  batched over groups), so a 1×1 kernel is a single matmul, and windows that tile the input
  (strides equal to the window) one matmul over the input's patches, which a reshape gives;
- depthwise (one input channel per group) and narrow groups (at most ``NARROW_GROUP`` input
  channels each): broadcast multiply-adds, which XLA fuses into one loop over the output.

The padding is explicit (``jnp.pad`` in the spec's mode), so zero padding contributes exact zeros
and every value reaches exactly the outputs whose windows cover it.  Half-precision operands are
accumulated in float32.

Transposes.  JAX transposes the matrix-product forms well (pads and products).  For the
multiply-add forms this backend gives the primitive its own two transposes, because JAX's are one
reduction per tap:

- ``input_gradient``, the transposed tap sum ``Tᵀ(g, w)``: a stride-1 tap sum of ``g`` with the
  flipped kernel (input and output channels exchanged); for strided convolutions one per phase
  (every ``s``-th input position), with the taps that land there, interleaved; then the
  transpose of the padding;
- ``kernel_gradient``, the tap correlation ``R(x, g)[t] = Σ_o pad(x)[o·s + t·d] ⊗ g[o]``: fused
  reductions in a loop, over the images (depthwise) or over the kernel rows (narrow groups).
  The loop reads ``g`` from memory, so XLA cannot fuse the forward tap sum that produced ``g``
  (from a loss of the output) into every reduction and recompute it there.

The primitive makes these, and the forward, each other's transposes (``convjax._src.primitive``),
so every order of forward and reverse differentiation stays on them.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import operator
from collections.abc import Sequence
from typing import ClassVar, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

from convjax._src.checks import dtype_kind
from convjax._src.formulations.base import (
    AcceptsAll,
    accumulation_dtype,
    contract,
    flipped_transposed_kernel,
    pad,
    transposed_kernel,
    transposed_padding,
    unpad,
)
from convjax._src.spec import ConvSpec

# Up to this many input channels per group, a grouped tap is a sum of broadcast multiply-adds
# (one fused loop); wider groups use a batched matrix product.
NARROW_GROUP = 8
# Products reduced in one fused multi-output reduction of the kernel gradient.
CHUNK = 9


class Geometry(NamedTuple):
    """The static shape of a tap sum over an already padded input (hashable)."""

    strides: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    window: tuple[int, ...]
    out: tuple[int, ...]


def geometry_of(spec: ConvSpec, input_spatial: Sequence[int], window: Sequence[int]) -> Geometry:
    """The tap sum of ``spec`` on an input of ``input_spatial`` (before padding)."""
    window = tuple(window)
    out = spec.output_spatial(input_spatial, window)
    return Geometry(spec.strides, spec.dilation, spec.groups, window, out)


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
        return contract("...c,cj->...j", window, weights, precision=precision)
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
        total = contract("...gc,cgj->...gj", window, weights, precision=precision)
    return total.reshape(*total.shape[:-2], c_out)


def tiles(geometry: Geometry) -> bool:
    """Whether the windows tile the input: strides equal to the window, no dilation (a
    patchifying stem, a 2×2 stride-2 downsampling or upsampling layer)."""
    return geometry.window == geometry.strides and all(d == 1 for d in geometry.dilation)


def patch_product(padded, kernel, geometry: Geometry, precision=None):
    """The tap sum of windows that tile the input (:func:`tiles`): the input, cropped to the
    tiles, is its patches after a reshape, so the convolution is one matrix product (per group)
    and its transposes are one product and a reshape, with no slice per tap.

    The patches are moved into rows (``[B · *out, *window · C]``, a copy) before the product:
    left to order a product over interleaved axes itself, XLA:CPU transposed the operands of
    the transposes the other way and copied their results back, a 2×2 stride-2 transposed
    convolution's gradients (64² → 128², 128 → 64, batch 4) 16.2 ms where this takes 11.0."""
    ndim = len(geometry.window)
    crop = tuple(slice(0, o * k) for o, k in zip(geometry.out, geometry.window, strict=True))
    x = padded[(slice(None), *crop, slice(None))]
    c, groups = kernel.shape[-2], geometry.groups
    tiled = [n for o, k in zip(geometry.out, geometry.window, strict=True) for n in (o, k)]
    patches = x.reshape(x.shape[0], *tiled, groups, c)  # [B, o₀, k₀, o₁, k₁, …, G, C/G]
    order = [0, *range(1, 2 * ndim, 2), *range(2, 2 * ndim + 1, 2), 2 * ndim + 1, 2 * ndim + 2]
    rows = x.shape[0] * math.prod(geometry.out)
    taps = math.prod(geometry.window)
    patches = patches.transpose(order).reshape(rows, taps, groups, c)
    weights = kernel.reshape(taps, c, groups, kernel.shape[-1] // groups)
    if groups == 1:
        flat = patches.reshape(rows, taps * c), weights.reshape(taps * c, -1)
        y = contract("pk,kj->pj", *flat, precision=precision)
    else:
        y = contract("ptgc,tcgj->pgj", patches, weights, precision=precision)
    return y.reshape(x.shape[0], *geometry.out, kernel.shape[-1])


def tap_sum(padded, kernel, geometry: Geometry, precision=None):
    """``T(padded, kernel)``: the convolution of an already padded input (no more padding)."""
    if tiles(geometry) and not is_elementwise(kernel.shape[-2], geometry.groups):
        return patch_product(padded, kernel, geometry, precision)
    total = None
    for tap in np.ndindex(*geometry.window):
        term = contract_tap(
            window_slice(padded, tap, geometry), kernel[tap], geometry.groups, precision
        )
        total = term if total is None else total + term
    return total


def zero_padded_tap_sum(x, kernel, geometry: Geometry, low: Sequence[int], precision=None):
    """``T(pad(x), kernel)`` for zero padding with ``low`` entries before each spatial axis (any
    sign: a negative one skips inputs), without padding ``x``: the outputs whose windows read
    only ``x`` are one tap sum over ``x`` itself, and the bands along the borders, whose windows
    read padding, tap sums over small zero-padded slabs, concatenated around it.

    A padded copy of ``x`` is a full extra write and read of the input (and, on the CPU, a large
    temporary buffer per call); the bands are a few rows.  Each output sums its taps in the
    same order either way."""
    ndim = len(geometry.window)
    sizes = x.shape[1 : ndim + 1]
    inner = []
    for size, k, s, d, lo, o in zip(
        sizes, geometry.window, geometry.strides, geometry.dilation, low, geometry.out, strict=True
    ):
        first = -(-lo // s)  # the first output whose window starts inside x
        last = (size - 1 + lo - (k - 1) * d) // s  # the last whose window ends inside x
        inner.append((min(max(first, 0), o), min(max(last + 1, first, 0), o)))

    def box(ranges):
        """The outputs ``ranges`` (one ``(start, stop)`` per axis) from the slab they read."""
        slab, config = [slice(None)], [(0, 0, 0)]
        for (start, stop), size, k, s, d, lo in zip(
            ranges, sizes, geometry.window, geometry.strides, geometry.dilation, low, strict=True
        ):
            first, last = start * s - lo, (stop - 1) * s - lo + (k - 1) * d  # inputs read
            begin, end = min(max(first, 0), size), max(min(last + 1, size), 0)
            slab.append(slice(begin, max(end, begin)))
            config.append((begin - first, last + 1 - max(end, begin), 0))
        part = x[tuple(slab)]
        if any(before or after for before, after, _ in config):
            part = lax.pad(part, jnp.zeros((), x.dtype), [*config, (0, 0, 0)])
        out = tuple(stop - start for start, stop in ranges)
        return tap_sum(part, kernel, geometry._replace(out=out), precision)

    def split(ranges, axis):
        if axis == ndim:
            return box(ranges)
        start, stop = ranges[axis]
        begin, end = inner[axis]
        parts = []
        for a, b, reads_padding in ((start, begin, True), (begin, end, False), (end, stop, True)):
            if b > a:
                sub = [*ranges[:axis], (a, b), *ranges[axis + 1 :]]
                parts.append(box(sub) if reads_padding else split(sub, axis + 1))
        return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=axis + 1)

    return split([(0, o) for o in geometry.out], 0)


def transposed_tap_sum(g, kernel, geometry: Geometry, padded_spatial: Sequence[int]):
    """``Tᵀ(g, kernel)``: the cotangent of the padded input of ``T`` for output cotangent
    ``g``, on the ``padded_spatial`` positions, by phases.

    Tap ``t`` of output ``o`` lands on ``p = o·s + t·d``, whose phase ``p mod s`` along each
    axis is ``t·d mod s``: each phase (every ``s``-th position from ``r``) is a stride-1 tap sum
    of ``g`` with the taps of that phase, ``Σ_t g[q − (t·d − r)/s] ⊗ w[t]``, and the phases
    interleave into the result.  Spreading ``g`` by the strides (zeros between) instead would
    multiply ``s^ndim`` times as many values, most of them inserted zeros.  The zeros padded
    around ``g`` still meet the weights of taps that land past its border: for finite kernels
    only (see :func:`scattered_tap_sum`)."""
    ndim = len(geometry.window)
    weights = transposed_kernel(kernel, geometry.groups)
    steps = tuple(zip(geometry.window, geometry.strides, geometry.dilation, strict=True))
    length = [-(-n // s) for n, s in zip(padded_spatial, geometry.strides, strict=True)]
    low = [(k - 1) * d // s for k, s, d in steps]
    config = [(lo, max(n - o, 0), 0) for lo, n, o in zip(low, length, geometry.out, strict=True)]
    padded = lax.pad(g, jnp.zeros((), g.dtype), [(0, 0, 0), *config, (0, 0, 0)])
    phases = []
    for phase in itertools.product(*(range(s) for s in geometry.strides)):
        terms = []
        for tap in np.ndindex(*geometry.window):
            offsets = [t * d - r for t, (_, s, d), r in zip(tap, steps, phase, strict=True)]
            if any(m % s for m, (_, s, _) in zip(offsets, steps, strict=True)):
                continue  # the tap lands on another phase
            start = [lo - m // s for lo, m, (_, s, _) in zip(low, offsets, steps, strict=True)]
            stop = [b + n for b, n in zip(start, length, strict=True)]
            window = lax.slice(padded, (0, *start, 0), (g.shape[0], *stop, g.shape[-1]))
            terms.append(contract_tap(window, weights[tap], geometry.groups, None))
        if not terms:  # no tap lands on this phase
            terms = [jnp.zeros((g.shape[0], *length, weights.shape[-1]), g.dtype)]
        phases.append(functools.reduce(operator.add, terms))
    # [*strides, B, *length, C] → [B, length_0, s_0, length_1, s_1, …, C], then interleaved.
    y = jnp.stack(phases).reshape(*geometry.strides, *phases[0].shape)
    order = [ndim, *(a for i in range(ndim) for a in (ndim + 1 + i, i)), 2 * ndim + 1]
    sizes = [n * s for n, s in zip(length, geometry.strides, strict=True)]
    y = y.transpose(order).reshape(g.shape[0], *sizes, y.shape[-1])
    return y[(slice(None), *(slice(0, n) for n in padded_spatial), slice(None))]


def scattered_tap_sum(
    g, kernel, geometry: Geometry, low: Sequence[int], size: Sequence[int], precision=None
):
    """``Tᵀ(g, kernel)`` onto ``size`` positions, tap ``t`` of output ``o`` landing on position
    ``o·s + t·d − low`` (positions outside ``size`` dropped): for each tap, ``g`` times the
    tap's weights, spread by the strides and shifted into place.

    The zeros between and around the products are placed after the multiplication, so a
    non-finite weight reaches exactly the positions its tap reads (no ``0 · inf``), as the
    function's own derivative says.  XLA:CPU runs the many pads slower than the slices of
    :func:`transposed_tap_sum` (a 7×7 depthwise input gradient 4×), so the input gradient takes
    this form only for kernels with a non-finite weight."""
    ndim = len(geometry.window)
    weights = transposed_kernel(kernel, geometry.groups)
    total = jnp.zeros((g.shape[0], *size, weights.shape[-1]), g.dtype)
    if any(o == 0 for o in geometry.out):
        return total
    for tap in np.ndindex(*geometry.window):
        config = [(0, 0, 0)]
        for t, d, s, o, lo, n in zip(
            tap, geometry.dilation, geometry.strides, geometry.out, low, size, strict=True
        ):
            first = t * d - lo
            last = first + (o - 1) * s
            if last < 0 or first >= n:
                break  # this tap lands outside every position
            config.append((first, n - 1 - last, s - 1))
        if len(config) <= ndim:
            continue
        config.append((0, 0, 0))
        term = contract_tap(g, weights[tap], geometry.groups, precision)
        total = total + lax.pad(term, jnp.zeros((), term.dtype), config)
    return total


def _row_products(rows, g, geometry: Geometry, c_per_group: int):
    """For every tap of a one-row ``geometry`` and input channel of a group, the ``[B, *out,
    C_out]`` product that sums to that kernel entry, in the kernel's order."""
    groups = geometry.groups
    grads = g.reshape(*g.shape[:-1], groups, g.shape[-1] // groups)
    for tap in np.ndindex(*geometry.window):
        window = window_slice(rows, tap, geometry)
        window = window.reshape(*window.shape[:-1], groups, c_per_group)
        for c in range(c_per_group):
            yield (window[..., c, None] * grads).reshape(g.shape)


def _sum_products(products, batch_first: bool):
    """Each product summed over every axis but the last, the batch (and, for small batches, the
    first spatial axis) first in one fused multi-output reduction (measured, XLA:CPU)."""
    products = tuple(products)
    ndim = products[0].ndim
    axes = (0,) if batch_first else (0, 1)
    zero = jnp.zeros((), products[0].dtype)
    partials = lax.reduce(
        products, (zero,) * len(products), lambda a, b: tuple(map(jnp.add, a, b)), axes
    )
    rest = tuple(range(ndim - 1 - len(axes)))
    return jnp.stack([jnp.sum(p, axis=rest) for p in partials])


def tap_correlation(x, g, geometry: Geometry, kernel_shape: Sequence[int], pad_images):
    """``R(pad(x), g)``: the kernel gradient ``Σ_o pad(x)[o·s + t·d] ⊗ g[o]`` of the
    multiply-add forms, ``[*window, C_in // groups, C_out]``, as fused reductions in a loop
    (``lax.map``); ``pad_images`` pads images as the spec says.

    Undilated depthwise kernels loop over the batch: one image, padded in the loop (XLA fuses
    that pad into the reductions' reads, where a padded copy of the whole batch is an extra
    write and read of it: ConvNeXt's 7×7 layer's gradient 23.6 ms → 20.2), its products for
    every tap at once, summed while the image is in cache, then the images' sums added.  Narrow
    groups (more products per tap) and dilated kernels (taps far apart) loop over the kernel
    rows, along the axis with the largest window: each iteration takes that row of the padded
    input with a dynamic slice and reduces the row's taps.  Measured on XLA:CPU, the gradient of
    a loss of a layer on 56², batch 8: depthwise 3×3 C144, 7.9 ms over the images against 25
    over the rows; 7×7 C96, 25 against 29; 3×3 at rate 4, 23 against 11.  Either way ``g`` is
    read from memory, so XLA cannot fuse the forward tap sum that produced ``g`` (from a loss of
    the output) into every reduction and recompute it there.  A single image and a single row
    run without a loop."""
    kernel_shape = tuple(kernel_shape)
    c_per_group = kernel_shape[-2]
    if c_per_group == 1 and g.shape[0] > 1 and all(d == 1 for d in geometry.dilation):

        def one_image(b):
            image = pad_images(lax.dynamic_index_in_dim(x, b, 0, keepdims=True))
            grads = lax.dynamic_index_in_dim(g, b, 0, keepdims=True)
            products = list(_row_products(image, grads, geometry, c_per_group))
            chunks = range(0, len(products), CHUNK)
            sums = [_sum_products(products[i : i + CHUNK], False) for i in chunks]
            return jnp.concatenate(sums).reshape(kernel_shape)

        return jnp.sum(lax.map(one_image, jnp.arange(g.shape[0])), axis=0)
    padded = pad_images(x)
    batch_first = g.shape[0] >= 8
    axis = int(np.argmax(geometry.window))
    count = geometry.window[axis]
    row_window = tuple(1 if a == axis else k for a, k in enumerate(geometry.window))
    row = Geometry(geometry.strides, geometry.dilation, geometry.groups, row_window, geometry.out)
    length = (geometry.out[axis] - 1) * geometry.strides[axis] + 1
    row_shape = (*row_window, c_per_group, kernel_shape[-1])

    def one_row(i):
        rows = lax.dynamic_slice_in_dim(padded, i * geometry.dilation[axis], length, axis + 1)
        sums = _sum_products(_row_products(rows, g, row, c_per_group), batch_first)
        return sums.reshape(row_shape)

    if count == 1:
        return one_row(0)
    rows = lax.map(one_row, jnp.arange(count))  # [count, *row_shape]
    return jnp.moveaxis(rows, 0, axis).reshape(kernel_shape)


@dataclasses.dataclass(frozen=True)
class TapsBackend(AcceptsAll):
    """The sum over kernel taps of strided slices of the padded input: one matrix product per
    tap for dense kernels (a single matmul for 1×1), fused multiply-adds for depthwise and narrow
    groups, whose two transposes (the input and kernel gradients) are rules of their own."""

    name: str = dataclasses.field(default="taps", init=False)
    accepts: ClassVar[str] = "every convolution"
    description: ClassVar[str] = "a strided slice per kernel tap: matmuls, or fused multiply-adds"

    def __call__(self, x, kernel, spec, *, precision=None, preferred_element_type=None):
        geometry = geometry_of(spec, x.shape[1:-1], kernel.shape[: spec.ndim])
        result = x.dtype if preferred_element_type is None else preferred_element_type
        dtype = accumulation_dtype(x.dtype, preferred_element_type)
        x, kernel = x.astype(dtype), kernel.astype(dtype)
        if spec.padding_mode == "zeros" and is_elementwise(kernel.shape[-2], spec.groups):
            low = [lo for lo, _ in spec.padding]
            y = zero_padded_tap_sum(x, kernel, geometry, low, precision)
        else:
            y = tap_sum(pad(x, spec), kernel, geometry, precision)
        return y.astype(result)

    def input_gradient(self, g, kernel, spec, x_shape, *, precision=None):
        if not is_elementwise(kernel.shape[-2], spec.groups):
            return None
        ndim = spec.ndim
        geometry = geometry_of(spec, x_shape[1:-1], kernel.shape[:ndim])
        dtype = accumulation_dtype(g.dtype)
        g, kernel = g.astype(dtype), kernel.astype(dtype)
        padded = [i + lo + hi for i, (lo, hi) in zip(x_shape[1:-1], spec.padding, strict=True)]
        fold = functools.partial(unpad, spec=spec, x_shape=tuple(x_shape))

        def fast():
            if spec.padding_mode == "zeros" and all(s == 1 for s in spec.strides):
                # dx[i] = Σ_t g[i + lo − t·d] k[t]: a stride-1 tap sum of g with the flipped
                # kernel, padded (k̂ − 1 − lo) before each axis, over x's positions only.
                flipped = flipped_transposed_kernel(kernel, spec.groups)
                low = [lo for lo, _ in transposed_padding(spec, geometry.window)]
                onto_x = geometry._replace(out=tuple(x_shape[1:-1]))
                return zero_padded_tap_sum(g, flipped, onto_x, low, precision)
            return fold(transposed_tap_sum(g, kernel, geometry, padded))

        def exact():
            if spec.padding_mode == "zeros":  # straight onto x's positions
                low = [lo for lo, _ in spec.padding]
                return scattered_tap_sum(g, kernel, geometry, low, x_shape[1:-1], precision)
            return fold(scattered_tap_sum(g, kernel, geometry, (0,) * ndim, padded, precision))

        if dtype_kind(kernel.dtype) == "int":
            return fast()
        # The fast forms multiply inserted zeros by every weight: 0 · inf would be NaN where the
        # derivative has no term.  A non-finite weight takes the exact form.
        return lax.cond(jnp.all(jnp.isfinite(kernel)), fast, exact)

    def kernel_gradient(self, x, g, spec, kernel_shape, *, precision=None):
        if not is_elementwise(kernel_shape[-2], spec.groups):
            return None
        geometry = geometry_of(spec, x.shape[1:-1], kernel_shape[: spec.ndim])
        dtype = accumulation_dtype(np.promote_types(x.dtype, g.dtype))
        pad_images = functools.partial(pad, spec=spec)
        return tap_correlation(x.astype(dtype), g.astype(dtype), geometry, kernel_shape, pad_images)
