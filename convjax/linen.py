"""Flax Linen layers for every convolution in convjax: parameters plus one pure-function call.

Same names and arguments as :mod:`convjax.nnx` (``features`` in place of ``in_features,
out_features``, as in Flax); the parameters have the same names and shapes.
"""

from convjax._src.modules.linen import (
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
