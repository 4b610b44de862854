"""The convolution by FFT: stride 1, any window, any dilation, groups and padding mode.

The input is padded explicitly in the spec's mode, to ``P`` samples per axis, and every output
is a window of the circular cross-correlation of that padded input with the dilated kernel on a
grid of ``n ≥ P`` samples (the next size with only small prime factors):

    y[o] = Σ_u pad(x)[o + u] k̂[u] = IFFT( FFT(pad(x)) · conj(FFT(k̂)) )[o],   o ≤ P − span,

where the dilated kernel ``k̂`` is zero between the taps.  The outputs kept never wrap around, so
this is exact in exact arithmetic.  The channel contraction is one small matrix product per
frequency (a product per channel for depthwise kernels).  Work is ``O(n log n)`` per channel
pair, independent of the window, which is what makes large kernels cheap.

Non-finite values: an FFT mixes every sample of an input channel into every frequency, so one
NaN or inf in ``x`` makes every output of that batch element NaN (and one in the kernel every
output), unlike the direct formulations.  Rounding errors are spread the same way: about
``eps · log(n)`` times the size of the largest terms, not of each output.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp
from jax import lax

from convjax._src.checks import dtype_kind
from convjax._src.formulations.base import accumulation_dtype, contract, pad
from convjax._src.spec import ConvSpec


def fast_size(n: int) -> int:
    """The smallest ``m >= n`` whose prime factors are 2, 3, 5 and 7 (fast FFT lengths).

    >>> fast_size(61), fast_size(64), fast_size(97)
    (63, 64, 98)
    """
    m = n
    while True:
        rest = m
        for p in (2, 3, 5, 7):
            while rest % p == 0:
                rest //= p
        if rest == 1:
            return m
        m += 1


def fft_conv(x, kernel, spec: ConvSpec, *, precision=None, preferred_element_type=None):
    """``x: [B, *spatial, C_in]`` convolved by FFT (``spec.strides`` must be all 1)."""
    ndim = spec.ndim
    window = kernel.shape[:ndim]
    out = spec.output_spatial(x.shape[1:-1], window)
    dtype = accumulation_dtype(x.dtype, preferred_element_type)
    padded = pad(x, spec).astype(dtype)
    grid = tuple(fast_size(n) for n in padded.shape[1:-1])
    axes = tuple(range(1, ndim + 1))
    # The dilated kernel, zero between taps: [*span, C_in // groups, C_out].
    dilated = lax.pad(
        kernel.astype(dtype),
        jnp.zeros((), dtype),
        [*((0, 0, d - 1) for d in spec.dilation), (0, 0, 0), (0, 0, 0)],
    )
    # A real signal's spectrum is Hermitian: half of it suffices (rfftn); a complex one needs all.
    complex_valued = dtype_kind(dtype) == "complex"
    forward = jnp.fft.fftn if complex_valued else jnp.fft.rfftn
    spectrum = forward(padded, s=grid, axes=axes)  # [B, *F, C_in]
    # Correlation with k is convolution with k reversed: the spectrum of the reversed kernel is
    # conj(FFT(conj(k))), which for a real k is conj(FFT(k)).
    response = jnp.conj(forward(jnp.conj(dilated), s=grid, axes=tuple(range(ndim))))
    groups, c, c_out = spec.groups, kernel.shape[-2], kernel.shape[-1]
    j = c_out // groups
    spectrum = spectrum.reshape(*spectrum.shape[:-1], groups, c)
    response = response.reshape(*response.shape[:-1], groups, j)
    if c == 1:  # depthwise: one product per channel and filter
        product = spectrum * response[None, ..., 0, :, :]
    else:
        product = contract("b...gc,...cgj->b...gj", spectrum, response, precision=precision)
    product = product.reshape(*product.shape[:-2], c_out)
    y = (jnp.fft.ifftn if complex_valued else jnp.fft.irfftn)(product, s=grid, axes=axes)
    y = y[(slice(None), *(slice(0, o) for o in out), slice(None))]
    return y.astype(x.dtype if preferred_element_type is None else preferred_element_type)


@dataclasses.dataclass(frozen=True)
class FFTBackend:
    """Convolution by FFT (see the module docstring): stride 1, any window, dilation, groups
    and padding mode; cost independent of the window.  One NaN or inf reaches every output of
    its batch element, and rounding errors scale with the largest terms rather than each
    output."""

    name: str = dataclasses.field(default="fft", init=False)
    accepts: ClassVar[str] = (
        "strides 1; floating and complex dtypes (an FFT of integers is inexact)"
    )
    kinds: ClassVar[tuple[str, ...]] = ("float", "complex")
    description: ClassVar[str] = "FFT of the padded input; cost independent of the window"

    def refuses(self, spec, x_shape, kernel_shape) -> str | None:
        if any(s != 1 for s in spec.strides):
            return f"it needs strides 1, got {spec.strides}"
        return None

    def __call__(self, x, kernel, spec, *, precision=None, preferred_element_type=None):
        return fft_conv(
            x, kernel, spec, precision=precision, preferred_element_type=preferred_element_type
        )
