"""Kernel masks for masked convolutions: PixelCNN's causal masks, for the layers' ``mask``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from convjax._src.checks import check_int, check_shape

MASK_TYPES = ("A", "B")


def pixelcnn_mask(
    kernel_size: Sequence[int],
    in_features: int,
    out_features: int,
    *,
    mask_type: str = "B",
    colors: int = 1,
) -> np.ndarray:
    """PixelCNN's causal mask (van den Oord et al., 2016), ``[*kernel_size, in_features,
    out_features]`` of 0s and 1s, for a layer's ``mask``.

    An output may read the taps before the window's centre in raster order (row-major: the rows
    above, then the taps to the left) with every channel.  At the centre tap, channels are split
    into ``colors`` contiguous groups (3 for R, G, B predicted in that order); output group ``i``
    reads input groups ``j < i`` with ``mask_type="A"`` (the first layer: a pixel's own value
    is never seen) and ``j <= i`` with ``"B"`` (later layers).  With the layer's padding
    ``"SAME"`` (centred windows, odd sizes), output position ``p`` then depends only on the
    inputs before ``p`` in raster order (and on ``p`` itself, under the colour rule).

    >>> import convjax
    >>> convjax.pixelcnn_mask((3, 3), 1, 1, mask_type="A")[..., 0, 0]
    array([[1., 1., 1.],
           [1., 0., 0.],
           [0., 0., 0.]])
    """
    op = "pixelcnn_mask"
    window = check_shape(op, "kernel_size", kernel_size)
    if not window or any(k < 1 for k in window):
        raise ValueError(f"{op}: kernel_size needs one size >= 1 per spatial dim, got {window}.")
    if any(k % 2 == 0 for k in window):
        raise ValueError(
            f"{op}: kernel_size must be odd in every dim (a window centred on its output), got "
            f"{window}."
        )
    c_in = check_int(op, "in_features", in_features, minimum=1)
    c_out = check_int(op, "out_features", out_features, minimum=1)
    colors = check_int(op, "colors", colors, minimum=1)
    if mask_type not in MASK_TYPES:
        raise ValueError(f"{op}: mask_type must be one of {MASK_TYPES}, got {mask_type!r}.")
    for name, count in (("in_features", c_in), ("out_features", c_out)):
        if count % colors:
            raise ValueError(
                f"{op}: colors must divide {name}, but {colors} does not divide {count}."
            )
    taps = math.prod(window)
    centre = np.ravel_multi_index(tuple(k // 2 for k in window), window)
    mask = np.zeros((taps, c_in, c_out))
    mask[:centre] = 1.0
    group_in = np.arange(c_in) // (c_in // colors)
    group_out = np.arange(c_out) // (c_out // colors)
    allowed = group_in[:, None] < group_out[None, :]
    if mask_type == "B":
        allowed |= group_in[:, None] == group_out[None, :]
    mask[centre] = allowed
    return mask.reshape(*window, c_in, c_out)
