"""An independent float64 NumPy convolution: np.pad, strided slices and einsum, one tap at a time.

No JAX here.  It shares no code with convjax: padding comes from ``np.pad``, windows from plain
slicing, and the output size from slicing itself rather than from convjax's arithmetic.
"""

import itertools

import numpy as np

NP_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def conv(x, kernel, strides, padding, dilation, groups=1, padding_mode="zeros", skip_padding=False):
    """x: [*batch, *spatial, C_in]; kernel: [*window, C_in // groups, C_out]; padding: (lo, hi)
    pairs.  Returns float64 [*batch, *out_spatial, C_out].

    Zero padding is explicit zeros (``0 · inf = NaN``); with ``skip_padding`` the taps that read
    zero padding are skipped instead (XLA:CPU's convolution), which differs only where a
    non-finite weight meets padding."""
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    ndim = kernel.ndim - 2
    window = kernel.shape[:ndim]
    batch = x.shape[: x.ndim - ndim - 1]
    x = x.reshape(-1, *x.shape[-ndim - 1 :])
    xp = np.pad(x, [(0, 0), *padding, (0, 0)], mode=NP_PAD_MODES[padding_mode])
    span = [(k - 1) * d + 1 for k, d in zip(window, dilation)]
    out = [(xp.shape[1 + a] - span[a]) // strides[a] + 1 for a in range(ndim)]
    c_out = kernel.shape[-1]
    y = np.zeros((x.shape[0], *out, groups, c_out // groups))
    k = kernel.reshape(*window, kernel.shape[-2], groups, c_out // groups)
    for tap in itertools.product(*(range(w) for w in window)):
        slices = tuple(
            slice(t * d, t * d + (o - 1) * s + 1, s)
            for t, d, o, s in zip(tap, dilation, out, strides)
        )
        patch = xp[(slice(None), *slices)]
        patch = patch.reshape(*patch.shape[:-1], groups, -1)
        if skip_padding and padding_mode == "zeros":
            real = np.pad(np.ones(x.shape[:-1], bool), [(0, 0), *padding])[(slice(None), *slices)]
            products = patch[..., None] * k[tap].transpose(1, 0, 2)  # [..., g, c, j]
            y += np.where(real[..., None, None, None], products, 0.0).sum(axis=-2)
        else:
            y += np.einsum("...gc,cgj->...gj", patch, k[tap])
    return y.reshape(*batch, *out, c_out)


def _pad_sources(size, lo, hi, padding_mode):
    """For each position of the padded axis, the input index np.pad copies there (-1: a zero)."""
    if padding_mode == "zeros":
        return np.pad(np.arange(size), (lo, hi), constant_values=-1)
    return np.pad(np.arange(size), (lo, hi), mode=NP_PAD_MODES[padding_mode])


def conv_transpose(
    y, kernel, input_shape, strides, padding, dilation, groups=1, padding_mode="zeros"
):
    """The adjoint of ``conv`` written out: each output ``o`` scatters ``y[o] · kernel[t]`` onto
    padded position ``o·s + t·d``; what lands on padding goes back to the input cell np.pad copied
    there (nowhere for zeros).  ``input_shape``: ``[*spatial, C_in]`` of the forward input.
    Returns float64 ``[*batch, *input_shape]``."""
    y = np.asarray(y, np.float64)
    kernel = np.asarray(kernel, np.float64)
    ndim = kernel.ndim - 2
    window, spatial = kernel.shape[:ndim], tuple(input_shape[:-1])
    batch = y.shape[: y.ndim - ndim - 1]
    y = y.reshape(-1, *y.shape[-ndim - 1 :])
    c_out = kernel.shape[-1]
    k = kernel.reshape(*window, kernel.shape[-2], groups, c_out // groups)
    padded = [i + lo + hi for i, (lo, hi) in zip(spatial, padding)]
    z = np.zeros((y.shape[0], *padded, groups, kernel.shape[-2]))
    out = y.shape[1:-1]
    for tap in itertools.product(*(range(w) for w in window)):
        yg = y.reshape(*y.shape[:-1], groups, c_out // groups)
        contribution = np.einsum("...gj,cgj->...gc", yg, k[tap])
        slices = tuple(
            slice(t * d, t * d + (o - 1) * s + 1, s)
            for t, d, o, s in zip(tap, dilation, out, strides)
        )
        z[(slice(None), *slices)] += contribution
    z = z.reshape(*z.shape[:-2], -1)
    result = z
    for axis, (i, (lo, hi)) in enumerate(zip(spatial, padding)):
        sources = _pad_sources(i, lo, hi, padding_mode)
        folded = np.zeros((*result.shape[: axis + 1], i, *result.shape[axis + 2 :]))
        moved = np.moveaxis(result, axis + 1, 0)
        target = np.moveaxis(folded, axis + 1, 0)
        for p, source in enumerate(sources):
            if source >= 0:
                target[source] += moved[p]
        result = folded
    return result.reshape(*batch, *spatial, -1)


def kernel_gradient(x, y, kernel_shape, strides, padding, dilation, groups=1, padding_mode="zeros"):
    """``∂⟨conv(x, k), y⟩ / ∂k``: per tap, the padded input's strided window times ``y``, summed
    over batch and positions.  Returns float64 ``kernel_shape``."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    ndim = len(kernel_shape) - 2
    window = kernel_shape[:ndim]
    x = x.reshape(-1, *x.shape[-ndim - 1 :])
    y = y.reshape(-1, *y.shape[-ndim - 1 :])
    xp = np.pad(x, [(0, 0), *padding, (0, 0)], mode=NP_PAD_MODES[padding_mode])
    out = y.shape[1:-1]
    c_out = kernel_shape[-1]
    grad = np.zeros((*window, kernel_shape[-2], groups, c_out // groups))
    yg = y.reshape(*y.shape[:-1], groups, c_out // groups)
    for tap in itertools.product(*(range(w) for w in window)):
        slices = tuple(
            slice(t * d, t * d + (o - 1) * s + 1, s)
            for t, d, o, s in zip(tap, dilation, out, strides)
        )
        patch = xp[(slice(None), *slices)]
        patch = patch.reshape(-1, groups, patch.shape[-1] // groups)
        grad[tap] = np.einsum("ngc,ngj->cgj", patch, yg.reshape(-1, *yg.shape[-2:]))
    return grad.reshape(kernel_shape)
