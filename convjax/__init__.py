"""convjax: every convolution, twice — on ``lax.conv_general_dilated`` and on an explicit gather."""

# First: sets XLA:CPU options before any JAX backend starts (xla_flags.py).
from convjax._src import xla_flags  # noqa: F401, I001

# And keeps XLA:CPU's scratch memory mapped between executions (host_memory.py).
from convjax._src import host_memory  # noqa: F401
from convjax import autotune, from_torch, linen, nnx, streaming, viz
from convjax._src.formulations import (
    AutoBackend,
    AutotuneBackend,
    FFTBackend,
    Formulation,
    GatherBackend,
    LaxBackend,
    PlanesBackend,
    TapsBackend,
    formulations,
)
from convjax._src.formulations.gather import AxisIndexMap, IndexMap
from convjax._src.halo import AxisHalo, HaloMessage, HaloPlan, halo_plan
from convjax._src.ops.arithmetic import (
    conv_output_size,
    conv_transpose_output_size,
    effective_window,
    output_padding_for,
)
from convjax._src.ops.choice import auto_choice
from convjax._src.ops.conv import (
    conv,
    depthwise_conv,
    dilated_conv,
    index_map,
    make_spec,
    output_shape,
)
from convjax._src.ops.counting import (
    Layer,
    ReceptiveField,
    flop_count,
    param_count,
    receptive_field,
)
from convjax._src.ops.deform import deform_conv, deformable_conv
from convjax._src.ops.deconv import DeconvolveInfo, deconvolve
from convjax._src.ops.explain import Convention, PaddingExplanation, explain_padding
from convjax._src.ops.local import LocalCount, local_conv, local_conv_transpose, local_layer_count
from convjax._src.ops.masks import pixelcnn_mask
from convjax._src.ops.separable import (
    SeparableFactors,
    depthwise_separable_conv,
    separable_factors,
    spatial_separable_conv,
)
from convjax._src.ops.transpose import conv_transpose
from convjax._src.ops.unfold import fold, unfold
from convjax._src.spec import ConvSpec

__version__ = "0.1.0"

__all__ = [
    "AutoBackend",
    "AutotuneBackend",
    "AxisHalo",
    "AxisIndexMap",
    "ConvSpec",
    "Convention",
    "DeconvolveInfo",
    "FFTBackend",
    "Formulation",
    "GatherBackend",
    "HaloMessage",
    "HaloPlan",
    "IndexMap",
    "LaxBackend",
    "Layer",
    "LocalCount",
    "PaddingExplanation",
    "PlanesBackend",
    "ReceptiveField",
    "SeparableFactors",
    "TapsBackend",
    "auto_choice",
    "autotune",
    "conv",
    "conv_output_size",
    "conv_transpose",
    "conv_transpose_output_size",
    "deconvolve",
    "deform_conv",
    "deformable_conv",
    "depthwise_conv",
    "depthwise_separable_conv",
    "dilated_conv",
    "effective_window",
    "explain_padding",
    "flop_count",
    "fold",
    "formulations",
    "from_torch",
    "halo_plan",
    "index_map",
    "linen",
    "local_conv",
    "local_conv_transpose",
    "local_layer_count",
    "make_spec",
    "nnx",
    "output_padding_for",
    "output_shape",
    "param_count",
    "pixelcnn_mask",
    "receptive_field",
    "separable_factors",
    "spatial_separable_conv",
    "streaming",
    "unfold",
    "viz",
]
