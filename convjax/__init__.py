"""convjax: every convolution, twice — on ``lax.conv_general_dilated`` and on an explicit gather."""

from convjax._src.backends import GatherBackend, LaxBackend
from convjax._src.conv import conv, depthwise_conv, dilated_conv, index_map, output_shape
from convjax._src.gather import AxisIndexMap, IndexMap
from convjax._src.shapes import (
    conv_output_size,
    conv_transpose_output_size,
    effective_window,
    output_padding_for,
)
from convjax._src.spec import ConvSpec, make_spec

__version__ = "0.1.0"

__all__ = [
    "AxisIndexMap",
    "ConvSpec",
    "GatherBackend",
    "IndexMap",
    "LaxBackend",
    "conv",
    "conv_output_size",
    "conv_transpose_output_size",
    "depthwise_conv",
    "dilated_conv",
    "effective_window",
    "index_map",
    "make_spec",
    "output_padding_for",
    "output_shape",
]
