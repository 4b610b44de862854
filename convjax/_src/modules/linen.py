"""Flax Linen modules: the same layers, names and arguments as :mod:`convjax.nnx`.

Linen infers the input channels from the first call, so where an NNX module takes
``in_features, out_features`` a Linen module takes ``features`` (the output channels), as in
Flax.  The parameters have the same names and shapes as the NNX modules' (from
:mod:`convjax._src.modules_common`), so ``{"params": ...}`` built for one runs the other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from convjax._src.checks import DTypeLike, PrecisionLike
from convjax._src.formulations import Impl
from convjax._src.modules import common
from convjax._src.ops.conv import conv, depthwise_conv
from convjax._src.ops.layout import DataFormat
from convjax._src.ops.separable import depthwise_separable_conv, spatial_separable_conv
from convjax._src.ops.transpose import conv_transpose
from convjax._src.spec import Padding, PaddingMode

Initializer = Any
IntOrSeq = int | Sequence[int]


class _Module(nn.Module):
    def __post_init__(self) -> None:
        # Check the options when the module is constructed, naming it; the input channels are
        # known only at the first call, where the parameter shapes are checked.
        options = {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name not in ("parent", "name")
        }
        options.setdefault("kernel_dilation", 1)  # DepthwiseConv has no such field
        common.check_options(
            type(self).__name__, options, transposed=isinstance(self, ConvTranspose)
        )
        super().__post_init__()

    def _create_params(
        self, shapes: common.Shapes, kernel_init: Initializer, bias_init: Initializer
    ) -> dict[str, jax.Array | None]:
        params = {
            name: self.param(
                name, bias_init if name == "bias" else kernel_init, shape, self.param_dtype
            )
            for name, shape in shapes.items()
        }
        params.setdefault("bias", None)
        return params


class Conv(_Module):
    """N-d convolution layer, channels last: :func:`convjax.conv` plus a bias.

    Attributes:
      features: output channels ``C_out`` (``C_in`` is read from the input).
      kernel_size: the window, one int per spatial dim, e.g. ``(3, 3)``.
      strides: window step, an int or one per spatial dim.
      padding: ``"VALID"`` (default), ``"SAME"``, ``"HALF"``, ``"FULL"``, ``"CAUSAL"``, an int,
        one int per dim or one ``(lo, hi)`` pair per dim.
      kernel_dilation: kernel dilation (atrous rate); :func:`convjax.conv`'s ``dilation``.
      feature_group_count: feature groups; :func:`convjax.conv`'s ``groups``.
      padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
      use_bias: add a ``[C_out]`` bias.
      dtype: computation dtype; default: the promotion of the input's and parameters' dtypes.
      param_dtype: parameter dtype (default float32).
      precision: passed to the contraction.
      preferred_element_type: accumulation / result dtype.
      kernel_init: kernel initialiser (default LeCun normal).
      bias_init: bias initialiser (default zeros).
      data_format: ``"channels_last"`` (default) or ``"channels_first"`` (``[*batch, C,
        *spatial]`` in and out; the parameters keep convjax's layout).
      impl: the formulation, ``"auto"`` (default) or a name from :func:`convjax.formulations`,
        or a backend instance.

    Parameters: ``kernel: [*window, C_in // groups, C_out]`` and ``bias: [C_out]``.

    >>> import jax, jax.numpy as jnp, convjax
    >>> layer = convjax.linen.Conv(8, (3, 3), strides=2, padding="SAME")
    >>> x = jnp.ones((1, 8, 8, 3))
    >>> layer.apply(layer.init(jax.random.key(0), x), x).shape
    (1, 4, 4, 8)
    """

    features: int
    kernel_size: Sequence[int]
    strides: IntOrSeq = 1
    padding: Padding = "VALID"
    kernel_dilation: IntOrSeq = 1
    feature_group_count: int = 1
    padding_mode: PaddingMode = "zeros"
    use_bias: bool = True
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32
    precision: PrecisionLike = None
    preferred_element_type: DTypeLike | None = None
    kernel_init: Initializer = common.default_kernel_init
    bias_init: Initializer = common.default_bias_init
    impl: Impl = "auto"
    data_format: DataFormat = "channels_last"

    @nn.compact
    @common.reports_as_module
    def __call__(self, x: jax.Array) -> jax.Array:
        """``x: [*batch, *spatial, C_in]`` → ``[*batch, *out_spatial, features]``."""
        shapes = common.conv_shapes(
            "Conv",
            x.shape[-1],
            self.features,
            self.kernel_size,
            self.feature_group_count,
            self.use_bias,
        )
        p = self._create_params(shapes, self.kernel_init, self.bias_init)
        x, kernel, bias = common.promote("Conv", self.dtype, x, p["kernel"], p["bias"])
        y = conv(
            x,
            kernel,
            strides=self.strides,
            padding=self.padding,
            dilation=self.kernel_dilation,
            groups=self.feature_group_count,
            padding_mode=self.padding_mode,
            impl=self.impl,
            precision=self.precision,
            preferred_element_type=self.preferred_element_type,
        )
        return common.add_bias(y, bias)


class ConvTranspose(_Module):
    """Transposed convolution layer (PyTorch's ``ConvTranspose``): :func:`convjax.conv_transpose`
    plus a bias.  See :class:`convjax.nnx.ConvTranspose`.

    Attributes:
      features: output channels ``C_out``.
      kernel_size: the window, one int per spatial dim.
      strides: the forward conv's strides (the upsampling factor).
      padding: the forward conv's padding (removed from the output), default 0.
      output_padding: ``a``, extra size on the high side.
      output_shape: the output's spatial shape, instead of ``output_padding``.

      Other attributes as for :class:`Conv`; ``kernel_init`` defaults to LeCun normal over
      fan-in ``prod(window) · C_in``.

    Parameters: ``kernel: [*window, C_out // groups, C_in]`` and ``bias: [C_out]``.

    >>> import jax, jax.numpy as jnp, convjax
    >>> layer = convjax.linen.ConvTranspose(8, (3, 3), strides=2)
    >>> x = jnp.ones((1, 2, 2, 3))
    >>> layer.apply(layer.init(jax.random.key(0), x), x).shape
    (1, 5, 5, 8)
    """

    features: int
    kernel_size: Sequence[int]
    strides: IntOrSeq = 1
    padding: Padding = 0
    output_padding: IntOrSeq = 0
    output_shape: Sequence[int] | None = None
    kernel_dilation: IntOrSeq = 1
    feature_group_count: int = 1
    padding_mode: PaddingMode = "zeros"
    use_bias: bool = True
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32
    precision: PrecisionLike = None
    preferred_element_type: DTypeLike | None = None
    kernel_init: Initializer = common.default_transpose_kernel_init
    bias_init: Initializer = common.default_bias_init
    impl: Impl = "auto"
    data_format: DataFormat = "channels_last"

    @nn.compact
    @common.reports_as_module
    def __call__(self, x: jax.Array) -> jax.Array:
        """``x: [*batch, *spatial, C_in]`` → ``[*batch, *out_spatial, features]``."""
        shapes = common.conv_transpose_shapes(
            "ConvTranspose",
            x.shape[-1],
            self.features,
            self.kernel_size,
            self.feature_group_count,
            self.use_bias,
        )
        p = self._create_params(shapes, self.kernel_init, self.bias_init)
        x, kernel, bias = common.promote("ConvTranspose", self.dtype, x, p["kernel"], p["bias"])
        y = conv_transpose(
            x,
            kernel,
            strides=self.strides,
            padding=self.padding,
            output_padding=self.output_padding,
            output_shape=self.output_shape,
            dilation=self.kernel_dilation,
            groups=self.feature_group_count,
            padding_mode=self.padding_mode,
            impl=self.impl,
            precision=self.precision,
            preferred_element_type=self.preferred_element_type,
        )
        return common.add_bias(y, bias)


class DepthwiseConv(_Module):
    """Depthwise convolution layer: :func:`convjax.depthwise_conv` plus a bias.

    Attributes:
      kernel_size: the window, one int per spatial dim.
      depth_multiplier: filters per input channel, ``m``; the output has ``C_in · m`` channels.

      Other attributes as for :class:`Conv`.

    Parameters: ``kernel: [*window, 1, C_in · m]`` and ``bias: [C_in · m]``.

    >>> import jax, jax.numpy as jnp, convjax
    >>> layer = convjax.linen.DepthwiseConv((3, 3), depth_multiplier=2)
    >>> x = jnp.ones((1, 8, 8, 3))
    >>> layer.apply(layer.init(jax.random.key(0), x), x).shape
    (1, 6, 6, 6)
    """

    kernel_size: Sequence[int]
    strides: IntOrSeq = 1
    depth_multiplier: int = 1
    padding: Padding = "VALID"
    kernel_dilation: IntOrSeq = 1
    padding_mode: PaddingMode = "zeros"
    use_bias: bool = True
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32
    precision: PrecisionLike = None
    preferred_element_type: DTypeLike | None = None
    kernel_init: Initializer = common.default_kernel_init
    bias_init: Initializer = common.default_bias_init
    impl: Impl = "auto"
    data_format: DataFormat = "channels_last"

    @nn.compact
    @common.reports_as_module
    def __call__(self, x: jax.Array) -> jax.Array:
        """``x: [*batch, *spatial, C_in]`` → ``[*batch, *out_spatial, C_in · m]``."""
        shapes = common.depthwise_shapes(
            "DepthwiseConv", x.shape[-1], self.kernel_size, self.depth_multiplier, self.use_bias
        )
        p = self._create_params(shapes, self.kernel_init, self.bias_init)
        x, kernel, bias = common.promote("DepthwiseConv", self.dtype, x, p["kernel"], p["bias"])
        y = depthwise_conv(
            x,
            kernel,
            strides=self.strides,
            padding=self.padding,
            dilation=self.kernel_dilation,
            padding_mode=self.padding_mode,
            impl=self.impl,
            precision=self.precision,
            preferred_element_type=self.preferred_element_type,
        )
        return common.add_bias(y, bias)


class DepthwiseSeparableConv(_Module):
    """Depthwise then pointwise (Keras' ``SeparableConv``):
    :func:`convjax.depthwise_separable_conv` plus one bias.

    Attributes:
      features: output channels ``C_out``.
      kernel_size: the depthwise window, one int per spatial dim.
      depth_multiplier: depthwise filters per input channel, ``m``.

      Other attributes as for :class:`Conv`; strides, padding and dilation apply to the
      depthwise step and ``kernel_init`` to both kernels.

    Parameters: ``depthwise_kernel: [*window, 1, C_in · m]``, ``pointwise_kernel: [C_in · m,
    C_out]`` and ``bias: [C_out]``.

    >>> import jax, jax.numpy as jnp, convjax
    >>> layer = convjax.linen.DepthwiseSeparableConv(8, (3, 3))
    >>> x = jnp.ones((1, 8, 8, 3))
    >>> layer.apply(layer.init(jax.random.key(0), x), x).shape
    (1, 6, 6, 8)
    """

    features: int
    kernel_size: Sequence[int]
    strides: IntOrSeq = 1
    depth_multiplier: int = 1
    padding: Padding = "VALID"
    kernel_dilation: IntOrSeq = 1
    padding_mode: PaddingMode = "zeros"
    use_bias: bool = True
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32
    precision: PrecisionLike = None
    preferred_element_type: DTypeLike | None = None
    kernel_init: Initializer = common.default_kernel_init
    bias_init: Initializer = common.default_bias_init
    impl: Impl = "auto"
    data_format: DataFormat = "channels_last"

    @nn.compact
    @common.reports_as_module
    def __call__(self, x: jax.Array) -> jax.Array:
        """``x: [*batch, *spatial, C_in]`` → ``[*batch, *out_spatial, features]``."""
        shapes = common.depthwise_separable_shapes(
            "DepthwiseSeparableConv",
            x.shape[-1],
            self.features,
            self.kernel_size,
            self.depth_multiplier,
            self.use_bias,
        )
        p = self._create_params(shapes, self.kernel_init, self.bias_init)
        x, depthwise, pointwise, bias = common.promote(
            "DepthwiseSeparableConv",
            self.dtype,
            x,
            p["depthwise_kernel"],
            p["pointwise_kernel"],
            p["bias"],
        )
        y = depthwise_separable_conv(
            x,
            depthwise,
            pointwise,
            strides=self.strides,
            padding=self.padding,
            dilation=self.kernel_dilation,
            padding_mode=self.padding_mode,
            impl=self.impl,
            precision=self.precision,
            preferred_element_type=self.preferred_element_type,
        )
        return common.add_bias(y, bias)


class SpatialSeparableConv(_Module):
    """One 1-d convolution per spatial axis in turn: :func:`convjax.spatial_separable_conv`
    plus a bias.  See :class:`convjax.nnx.SpatialSeparableConv`.

    Attributes:
      features: output channels ``C_out``.
      kernel_size: one 1-d window per spatial axis.

      Other attributes as for :class:`Conv`.

    Parameters: ``kernel_i: [k_i, C // groups, C_out]`` per spatial axis ``i`` (``C = C_in`` for
    ``i = 0``, else ``C_out``) and ``bias: [C_out]``.

    >>> import jax, jax.numpy as jnp, convjax
    >>> layer = convjax.linen.SpatialSeparableConv(8, (3, 5))
    >>> x = jnp.ones((1, 8, 8, 3))
    >>> layer.apply(layer.init(jax.random.key(0), x), x).shape
    (1, 6, 4, 8)
    """

    features: int
    kernel_size: Sequence[int]
    strides: IntOrSeq = 1
    padding: Padding = "VALID"
    kernel_dilation: IntOrSeq = 1
    feature_group_count: int = 1
    padding_mode: PaddingMode = "zeros"
    use_bias: bool = True
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32
    precision: PrecisionLike = None
    preferred_element_type: DTypeLike | None = None
    kernel_init: Initializer = common.default_kernel_init
    bias_init: Initializer = common.default_bias_init
    impl: Impl = "auto"
    data_format: DataFormat = "channels_last"

    @nn.compact
    @common.reports_as_module
    def __call__(self, x: jax.Array) -> jax.Array:
        """``x: [*batch, *spatial, C_in]`` → ``[*batch, *out_spatial, features]``."""
        shapes = common.spatial_separable_shapes(
            "SpatialSeparableConv",
            x.shape[-1],
            self.features,
            self.kernel_size,
            self.feature_group_count,
            self.use_bias,
        )
        p = self._create_params(shapes, self.kernel_init, self.bias_init)
        kernels = [p[f"kernel_{axis}"] for axis in range(len(self.kernel_size))]
        x, bias, *kernels = common.promote(
            "SpatialSeparableConv", self.dtype, x, p["bias"], *kernels
        )
        y = spatial_separable_conv(
            x,
            kernels,
            strides=self.strides,
            padding=self.padding,
            dilation=self.kernel_dilation,
            groups=self.feature_group_count,
            padding_mode=self.padding_mode,
            impl=self.impl,
            precision=self.precision,
            preferred_element_type=self.preferred_element_type,
        )
        return common.add_bias(y, bias)
