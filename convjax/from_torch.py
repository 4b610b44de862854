"""PyTorch ``Conv{1,2,3}d`` / ``ConvTranspose{1,2,3}d`` layers and weights as convjax's (no torch
import: NumPy arrays or tensors in; ``module`` converts a whole layer, ``modules`` every conv
layer of a model).

>>> import numpy as np, convjax
>>> convjax.from_torch.conv_kernel(np.zeros((8, 3, 5, 5))).shape
(5, 5, 3, 8)
"""

from convjax._src.tools.from_torch import (
    conv_kernel,
    conv_params,
    conv_transpose_kernel,
    conv_transpose_params,
    load,
    module,
    modules,
    padding,
    padding_mode,
    pointwise_kernel,
)

__all__ = [
    "conv_kernel",
    "conv_params",
    "conv_transpose_kernel",
    "conv_transpose_params",
    "load",
    "module",
    "modules",
    "padding",
    "padding_mode",
    "pointwise_kernel",
]
