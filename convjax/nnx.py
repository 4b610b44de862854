"""Flax NNX layers for every convolution in convjax: parameters plus one pure-function call.

Same names and arguments as :mod:`convjax.linen`, with Flax's argument names
(``kernel_dilation``, ``feature_group_count``) and an ``impl`` choosing the backend.
"""

from convjax._src.modules.nnx import (
    Conv,
    ConvLocal,
    ConvTranspose,
    DeformableConv,
    DepthwiseConv,
    DepthwiseSeparableConv,
    SpatialSeparableConv,
)

__all__ = [
    "Conv",
    "ConvLocal",
    "ConvTranspose",
    "DeformableConv",
    "DepthwiseConv",
    "DepthwiseSeparableConv",
    "SpatialSeparableConv",
]
