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
from typing import ClassVar

import jax.numpy as jnp
from jax import lax

from convjax._src import shapes
from convjax._src.formulations.base import PAD_MODES, AcceptsAll, spatial_letters


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


@dataclasses.dataclass(frozen=True)
class LaxBackend(AcceptsAll):
    """``lax.conv_general_dilated`` with kernel dilation and feature groups.

    Non-zero padding modes pad the input with ``jnp.pad`` first, then convolve with no padding.

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
    # XLA:CPU's kernel gradient transposes its operands; see primitive.materialized.
    materializes_kernel_gradient_operands: ClassVar[bool] = True
    accepts: ClassVar[str] = "every convolution"
    description: ClassVar[str] = "lax.conv_general_dilated, XLA's own convolution"

    def __call__(self, x, kernel, spec, *, precision=None, preferred_element_type=None):
        ndim = spec.ndim
        padding = list(spec.padding)
        if spec.padding_mode != "zeros":
            x = jnp.pad(x, ((0, 0), *padding, (0, 0)), mode=PAD_MODES[spec.padding_mode])
            padding = [(0, 0)] * ndim
        else:
            risky = xla_abort_axes(spec, x.shape[1:-1], kernel.shape[:ndim])
            if risky:
                config = [(0, 0, 0)] * (ndim + 2)
                for dim in risky:
                    config[dim + 1] = (*padding[dim], 0)
                    padding[dim] = (0, 0)
                x = lax.pad(x, jnp.zeros((), x.dtype), config)
        letters = spatial_letters(ndim)
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
