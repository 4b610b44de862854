"""An independent float64 NumPy convolution: np.pad, strided slices and einsum, one tap at a time.

No JAX here.  It shares no code with convjax: padding comes from ``np.pad``, windows from plain
slicing, and the output size from slicing itself rather than from convjax's arithmetic.
"""

import itertools

import numpy as np

NP_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def conv(x, kernel, strides, padding, dilation, groups=1, padding_mode="zeros"):
    """x: [*batch, *spatial, C_in]; kernel: [*window, C_in // groups, C_out]; padding: (lo, hi)
    pairs.  Returns float64 [*batch, *out_spatial, C_out]."""
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
        y += np.einsum("...gc,cgj->...gj", patch, k[tap])
    return y.reshape(*batch, *out, c_out)
