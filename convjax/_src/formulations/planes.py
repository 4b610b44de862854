"""The convolution as one convolution of one dimension fewer, the first axis's taps folded into
the channels.

    y[o₀, o'] = conv_{N−1}( [pad(x)[o₀·s₀ + t₀·d₀, ·]  for t₀ = 0 … k₀ − 1],  kernel )[o']

The strided slab of the padded input that each tap ``t₀`` of the first spatial axis reads is
stacked along the channels (tap-major within each group), the first axis folded into the batch
(``[B · O₀, *rest, k₀ · C]``), and convolved over the remaining axes by XLA's own convolution
(the ``lax`` formulation, with its guard) with the kernel reshaped to match
(``[*rest_window, k₀ · C / G, C_out]``); a 1-d convolution's is a product over channels per
position.  XLA:CPU runs 2-d convolutions far better than 3-d ones, and better still with more
channels: a 3×3×3 layer's gradients (12³, 8 → 8 channels, batch 16) take 2.4 ms this way, 4.0
as a sum of one 2-d convolution per tap and 18.5 as one 3-d convolution.  JAX differentiates the
stacking: the input gradient is ``lax``'s, its taps' slabs added back into place.

Non-finite values follow convjax's rule along the first axis (its padding is explicit zeros) and
XLA:CPU's convolution along the others, as ``lax`` does (see :class:`LaxBackend`).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp
from jax import lax

from convjax._src.formulations.base import AcceptsAll, accumulation_dtype, pad
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
        ndim = spec.ndim
        (lo, hi), rest = spec.padding[0], spec.padding[1:]
        if spec.padding_mode == "zeros":
            config = [(0, 0)] * (ndim + 2)
            config[1] = (lo, hi)
            padded = jnp.pad(x, config) if lo or hi else x
        else:  # every axis padded here, the slabs' convolutions pad nothing
            padded = pad(x, spec)
            rest = ((0, 0),) * (ndim - 1)
        inner = ConvSpec(spec.strides[1:], rest, spec.dilation[1:], spec.groups, "zeros")
        out = (padded.shape[1] - (kernel.shape[0] - 1) * spec.dilation[0] - 1) // spec.strides[0]
        out += 1
        batch, taps, groups = x.shape[0], kernel.shape[0], spec.groups
        dtype = x.dtype if preferred_element_type is None else preferred_element_type
        slabs = [
            lax.slice_in_dim(
                padded,
                t * spec.dilation[0],
                t * spec.dilation[0] + (out - 1) * spec.strides[0] + 1,
                spec.strides[0],
                axis=1,
            )
            for t in range(taps)
        ]
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
            y = LaxBackend()(
                stacked,
                folded,
                inner,
                precision=precision,
                preferred_element_type=preferred_element_type,
            )
        return y.reshape(batch, out, *y.shape[1:]).astype(dtype)
