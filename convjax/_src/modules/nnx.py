"""Flax NNX modules: parameters plus one call of the pure function.

Each module's ``__init__`` creates its parameters (shapes from
:mod:`convjax._src.modules_common`) and stores its options; ``__call__`` casts, calls the
functional convolution, and adds the bias.  Arguments use Flax's names where Flax has one:
``kernel_dilation`` is the functions' ``dilation`` and ``feature_group_count`` their ``groups``.
Padding defaults to ``"VALID"``, as in the functions and PyTorch (Flax defaults to ``"SAME"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from convjax._src.checks import DTypeLike, PrecisionLike, reported_as
from convjax._src.formulations import Impl
from convjax._src.modules import common
from convjax._src.ops import streaming
from convjax._src.ops.conv import conv, depthwise_conv
from convjax._src.ops.layout import DataFormat, from_channels_last, to_channels_last
from convjax._src.ops.separable import depthwise_separable_conv, spatial_separable_conv
from convjax._src.ops.transpose import conv_transpose
from convjax._src.spec import Padding, PaddingMode

Initializer = Any
IntOrSeq = int | Sequence[int]


class _Module(nnx.Module):
    def _configure(self, shapes: common.Shapes, rngs: nnx.Rngs, **options: Any) -> None:
        """Check the options (naming the module), create the parameters of ``shapes`` and keep
        the options as static attributes, lists made tuples so the graph is hashable."""
        common.check_options(
            type(self).__name__, options, transposed=isinstance(self, ConvTranspose)
        )
        kernel_init, bias_init = options.pop("kernel_init"), options.pop("bias_init")
        for name, shape in shapes.items():
            init = bias_init if name == "bias" else kernel_init
            param = init(rngs.params(), shape, options["param_dtype"])
            setattr(self, name, nnx.Param(param))
        if "bias" not in shapes:
            self.bias = nnx.data(None)
        for name, value in options.items():
            setattr(self, name, common.freeze(value))

    def _bias(self) -> jax.Array | None:
        return None if self.bias is None else self.bias[...]


class Conv(_Module):
    """N-d convolution layer, channels last: :func:`convjax.conv` plus a bias.

    Args:
      in_features: input channels ``C_in``.
      out_features: output channels ``C_out``.
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
      kernel_init: kernel initialiser (default LeCun normal, fan-in ``prod(window) · C_in /
        groups``).
      bias_init: bias initialiser (default zeros).
      data_format: ``"channels_last"`` (default) or ``"channels_first"`` (``[*batch, C,
        *spatial]`` in and out; the parameters keep convjax's layout).
      impl: the formulation, ``"auto"`` (default) or a name from :func:`convjax.formulations`,
        or a backend instance.
      rngs: random streams; ``rngs.params()`` draws the initial parameters.

    Parameters: ``kernel: [*window, C_in // groups, C_out]`` and ``bias: [C_out]``.

    >>> import jax.numpy as jnp, convjax
    >>> from flax import nnx
    >>> layer = convjax.nnx.Conv(3, 8, (3, 3), strides=2, padding="SAME", rngs=nnx.Rngs(0))
    >>> layer(jnp.ones((1, 8, 8, 3))).shape
    (1, 4, 4, 8)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: Sequence[int],
        strides: IntOrSeq = 1,
        *,
        padding: Padding = "VALID",
        kernel_dilation: IntOrSeq = 1,
        feature_group_count: int = 1,
        padding_mode: PaddingMode = "zeros",
        use_bias: bool = True,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        precision: PrecisionLike = None,
        preferred_element_type: DTypeLike | None = None,
        kernel_init: Initializer = common.default_kernel_init,
        bias_init: Initializer = common.default_bias_init,
        impl: Impl = "auto",
        data_format: DataFormat = "channels_last",
        rngs: nnx.Rngs,
    ):
        shapes = common.conv_shapes(
            "Conv", in_features, out_features, kernel_size, feature_group_count, use_bias
        )
        self._configure(
            shapes,
            rngs,
            kernel_init=kernel_init,
            bias_init=bias_init,
            in_features=in_features,
            out_features=out_features,
            kernel_size=common.window("Conv", kernel_size),
            strides=strides,
            padding=padding,
            kernel_dilation=kernel_dilation,
            feature_group_count=feature_group_count,
            padding_mode=padding_mode,
            use_bias=use_bias,
            dtype=dtype,
            param_dtype=param_dtype,
            precision=precision,
            preferred_element_type=preferred_element_type,
            impl=impl,
            data_format=data_format,
        )

    @common.reports_as_module
    def __call__(self, x: jax.Array) -> jax.Array:
        """``x: [*batch, *spatial, C_in]`` → ``[*batch, *out_spatial, C_out]``."""
        x, kernel, bias = common.promote("Conv", self.dtype, x, self.kernel[...], self._bias())
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

    def init_stream(self, x_chunk: jax.Array) -> streaming.State:
        """The state of a stream through this causal layer (see :mod:`convjax.streaming`):
        zeros for the ``(k − 1)·d`` frames before the first chunk."""
        self._check_streamable()
        return streaming.init(
            to_channels_last("Conv.init_stream", x_chunk, len(self.kernel_size), self.data_format),
            self.kernel[...],
            dilation=self.kernel_dilation,
            groups=self.feature_group_count,
            padding=self.padding,
        )

    def stream(
        self, state: streaming.State, x_chunk: jax.Array
    ) -> tuple[jax.Array, streaming.State]:
        """``(y_chunk, next state)``: this layer on the next chunk of a stream, time first;
        the chunks' outputs concatenate to ``self(x)`` on the whole signal (the state is
        channels-last whatever ``data_format`` says)."""
        self._check_streamable()
        ndim = len(self.kernel_size)
        with reported_as("Conv.stream"):
            x = to_channels_last("Conv.stream", x_chunk, ndim, self.data_format)
            x, kernel, bias = common.promote("Conv", self.dtype, x, self.kernel[...], self._bias())
            y, state = streaming.step(
                state,
                x,
                kernel,
                dilation=self.kernel_dilation,
                groups=self.feature_group_count,
                padding=self.padding,
                impl=self.impl,
            )
        y = from_channels_last(common.add_bias(y, bias), ndim, self.data_format)
        return y, state

    def _check_streamable(self) -> None:
        strides = (self.strides,) if isinstance(self.strides, int) else self.strides
        if any(s != 1 for s in strides) or self.padding_mode != "zeros":
            raise ValueError(
                f"{type(self).__name__}.stream: streams run stride-1, zero-padded causal "
                f"layers, got strides {self.strides} and padding_mode {self.padding_mode!r}."
            )


class ConvTranspose(_Module):
    """Transposed convolution layer (PyTorch's ``ConvTranspose``): :func:`convjax.conv_transpose`
    plus a bias.

    The adjoint of the :class:`Conv` with the same kernel, strides, padding, dilation and groups
    that maps ``C_out`` channels to ``C_in``; each output size is ``s(i − 1) + a + k̂ − lo − hi``.

    Args:
      in_features: input channels ``C_in``.
      out_features: output channels ``C_out``.
      kernel_size: the window, one int per spatial dim.
      strides: the forward conv's strides (the upsampling factor).
      padding: the forward conv's padding (removed from the output), default 0.
      output_padding: ``a``, extra size on the high side, ``0 <= a < stride`` (or dilation).
      output_shape: the output's spatial shape, instead of ``output_padding``.
      kernel_init: kernel initialiser (default LeCun normal over fan-in ``prod(window) · C_in``).

      Other arguments as for :class:`Conv`.

    Parameters: ``kernel: [*window, C_out // groups, C_in]`` (the forward conv's kernel) and
    ``bias: [C_out]``.

    >>> import jax.numpy as jnp, convjax
    >>> from flax import nnx
    >>> layer = convjax.nnx.ConvTranspose(3, 8, (3, 3), strides=2, rngs=nnx.Rngs(0))
    >>> layer(jnp.ones((1, 2, 2, 3))).shape  # the classic 2x2 back to 5x5
    (1, 5, 5, 8)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: Sequence[int],
        strides: IntOrSeq = 1,
        *,
        padding: Padding = 0,
        output_padding: IntOrSeq = 0,
        output_shape: Sequence[int] | None = None,
        kernel_dilation: IntOrSeq = 1,
        feature_group_count: int = 1,
        padding_mode: PaddingMode = "zeros",
        use_bias: bool = True,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        precision: PrecisionLike = None,
        preferred_element_type: DTypeLike | None = None,
        kernel_init: Initializer = common.default_transpose_kernel_init,
        bias_init: Initializer = common.default_bias_init,
        impl: Impl = "auto",
        data_format: DataFormat = "channels_last",
        rngs: nnx.Rngs,
    ):
        shapes = common.conv_transpose_shapes(
            "ConvTranspose", in_features, out_features, kernel_size, feature_group_count, use_bias
        )
        self._configure(
            shapes,
            rngs,
            kernel_init=kernel_init,
            bias_init=bias_init,
            in_features=in_features,
            out_features=out_features,
            kernel_size=common.window("ConvTranspose", kernel_size),
            strides=strides,
            padding=padding,
            output_padding=output_padding,
            output_shape=output_shape,
            kernel_dilation=kernel_dilation,
            feature_group_count=feature_group_count,
            padding_mode=padding_mode,
            use_bias=use_bias,
            dtype=dtype,
            param_dtype=param_dtype,
            precision=precision,
            preferred_element_type=preferred_element_type,
            impl=impl,
            data_format=data_format,
        )

    @common.reports_as_module
    def __call__(self, x: jax.Array) -> jax.Array:
        """``x: [*batch, *spatial, C_in]`` → ``[*batch, *out_spatial, C_out]``."""
        x, kernel, bias = common.promote(
            "ConvTranspose", self.dtype, x, self.kernel[...], self._bias()
        )
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

    Each input channel is convolved with its own ``depth_multiplier`` filters; output channel
    ``c · m + j`` is filter ``j`` of input channel ``c``.

    Args:
      in_features: input channels ``C_in``; the output has ``C_in · depth_multiplier``.
      kernel_size: the window, one int per spatial dim.
      depth_multiplier: filters per input channel, ``m``.

      Other arguments as for :class:`Conv`.

    Parameters: ``kernel: [*window, 1, C_in · m]`` and ``bias: [C_in · m]``.

    >>> import jax.numpy as jnp, convjax
    >>> from flax import nnx
    >>> layer = convjax.nnx.DepthwiseConv(3, (3, 3), depth_multiplier=2, rngs=nnx.Rngs(0))
    >>> layer(jnp.ones((1, 8, 8, 3))).shape
    (1, 6, 6, 6)
    """

    def __init__(
        self,
        in_features: int,
        kernel_size: Sequence[int],
        strides: IntOrSeq = 1,
        *,
        depth_multiplier: int = 1,
        padding: Padding = "VALID",
        kernel_dilation: IntOrSeq = 1,
        padding_mode: PaddingMode = "zeros",
        use_bias: bool = True,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        precision: PrecisionLike = None,
        preferred_element_type: DTypeLike | None = None,
        kernel_init: Initializer = common.default_kernel_init,
        bias_init: Initializer = common.default_bias_init,
        impl: Impl = "auto",
        data_format: DataFormat = "channels_last",
        rngs: nnx.Rngs,
    ):
        shapes = common.depthwise_shapes(
            "DepthwiseConv", in_features, kernel_size, depth_multiplier, use_bias
        )
        self._configure(
            shapes,
            rngs,
            kernel_init=kernel_init,
            bias_init=bias_init,
            in_features=in_features,
            kernel_size=common.window("DepthwiseConv", kernel_size),
            strides=strides,
            depth_multiplier=depth_multiplier,
            padding=padding,
            kernel_dilation=kernel_dilation,
            padding_mode=padding_mode,
            use_bias=use_bias,
            dtype=dtype,
            param_dtype=param_dtype,
            precision=precision,
            preferred_element_type=preferred_element_type,
            impl=impl,
            data_format=data_format,
        )

    @common.reports_as_module
    def __call__(self, x: jax.Array) -> jax.Array:
        """``x: [*batch, *spatial, C_in]`` → ``[*batch, *out_spatial, C_in · m]``."""
        x, kernel, bias = common.promote(
            "DepthwiseConv", self.dtype, x, self.kernel[...], self._bias()
        )
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
    """Depthwise then pointwise (Keras' ``SeparableConv``, MobileNet's block without the
    activation): :func:`convjax.depthwise_separable_conv` plus one bias.

    Args:
      in_features: input channels ``C_in``.
      out_features: output channels ``C_out``.
      kernel_size: the depthwise window, one int per spatial dim.
      depth_multiplier: depthwise filters per input channel, ``m``.
      kernel_init: initialiser of both kernels (default LeCun normal: fan-in ``prod(window)``
        for the depthwise kernel, ``C_in · m`` for the pointwise one).

      Other arguments as for :class:`Conv`; strides, padding and dilation apply to the
      depthwise step.

    Parameters: ``depthwise_kernel: [*window, 1, C_in · m]``, ``pointwise_kernel: [C_in · m,
    C_out]`` and ``bias: [C_out]``.

    >>> import jax.numpy as jnp, convjax
    >>> from flax import nnx
    >>> layer = convjax.nnx.DepthwiseSeparableConv(3, 8, (3, 3), rngs=nnx.Rngs(0))
    >>> layer(jnp.ones((1, 8, 8, 3))).shape
    (1, 6, 6, 8)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: Sequence[int],
        strides: IntOrSeq = 1,
        *,
        depth_multiplier: int = 1,
        padding: Padding = "VALID",
        kernel_dilation: IntOrSeq = 1,
        padding_mode: PaddingMode = "zeros",
        use_bias: bool = True,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        precision: PrecisionLike = None,
        preferred_element_type: DTypeLike | None = None,
        kernel_init: Initializer = common.default_kernel_init,
        bias_init: Initializer = common.default_bias_init,
        impl: Impl = "auto",
        data_format: DataFormat = "channels_last",
        rngs: nnx.Rngs,
    ):
        shapes = common.depthwise_separable_shapes(
            "DepthwiseSeparableConv",
            in_features,
            out_features,
            kernel_size,
            depth_multiplier,
            use_bias,
        )
        self._configure(
            shapes,
            rngs,
            kernel_init=kernel_init,
            bias_init=bias_init,
            in_features=in_features,
            out_features=out_features,
            kernel_size=common.window("DepthwiseSeparableConv", kernel_size),
            strides=strides,
            depth_multiplier=depth_multiplier,
            padding=padding,
            kernel_dilation=kernel_dilation,
            padding_mode=padding_mode,
            use_bias=use_bias,
            dtype=dtype,
            param_dtype=param_dtype,
            precision=precision,
            preferred_element_type=preferred_element_type,
            impl=impl,
            data_format=data_format,
        )

    @common.reports_as_module
    def __call__(self, x: jax.Array) -> jax.Array:
        """``x: [*batch, *spatial, C_in]`` → ``[*batch, *out_spatial, C_out]``."""
        x, depthwise, pointwise, bias = common.promote(
            "DepthwiseSeparableConv",
            self.dtype,
            x,
            self.depthwise_kernel[...],
            self.pointwise_kernel[...],
            self._bias(),
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
    """One 1-d convolution per spatial axis in turn (``k×1`` then ``1×k``):
    :func:`convjax.spatial_separable_conv` plus a bias.

    The first kernel maps ``C_in`` to ``C_out`` channels, the rest ``C_out`` to ``C_out``; with
    ``feature_group_count = C_in = C_out`` it is Haiku's ``SeparableDepthwiseConv2D``.

    Args:
      in_features: input channels ``C_in``.
      out_features: output channels ``C_out``.
      kernel_size: one 1-d window per spatial axis, e.g. ``(7, 7)``.

      Other arguments as for :class:`Conv`, describing the full ``k_1 × … × k_N`` window (so
      the output has the shape a :class:`Conv` gives); axis ``i``'s 1-d conv uses axis ``i``'s
      stride, padding and dilation.

    Parameters: ``kernel_i: [k_i, C // groups, C_out]`` for each spatial axis ``i`` (``C = C_in``
    for ``i = 0``, else ``C_out``) and ``bias: [C_out]``.

    >>> import jax.numpy as jnp, convjax
    >>> from flax import nnx
    >>> layer = convjax.nnx.SpatialSeparableConv(3, 8, (3, 5), rngs=nnx.Rngs(0))
    >>> layer(jnp.ones((1, 8, 8, 3))).shape
    (1, 6, 4, 8)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: Sequence[int],
        strides: IntOrSeq = 1,
        *,
        padding: Padding = "VALID",
        kernel_dilation: IntOrSeq = 1,
        feature_group_count: int = 1,
        padding_mode: PaddingMode = "zeros",
        use_bias: bool = True,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        precision: PrecisionLike = None,
        preferred_element_type: DTypeLike | None = None,
        kernel_init: Initializer = common.default_kernel_init,
        bias_init: Initializer = common.default_bias_init,
        impl: Impl = "auto",
        data_format: DataFormat = "channels_last",
        rngs: nnx.Rngs,
    ):
        shapes = common.spatial_separable_shapes(
            "SpatialSeparableConv",
            in_features,
            out_features,
            kernel_size,
            feature_group_count,
            use_bias,
        )
        self._configure(
            shapes,
            rngs,
            kernel_init=kernel_init,
            bias_init=bias_init,
            in_features=in_features,
            out_features=out_features,
            kernel_size=common.window("SpatialSeparableConv", kernel_size),
            strides=strides,
            padding=padding,
            kernel_dilation=kernel_dilation,
            feature_group_count=feature_group_count,
            padding_mode=padding_mode,
            use_bias=use_bias,
            dtype=dtype,
            param_dtype=param_dtype,
            precision=precision,
            preferred_element_type=preferred_element_type,
            impl=impl,
            data_format=data_format,
        )

    @common.reports_as_module
    def __call__(self, x: jax.Array) -> jax.Array:
        """``x: [*batch, *spatial, C_in]`` → ``[*batch, *out_spatial, C_out]``."""
        kernels = [getattr(self, f"kernel_{axis}")[...] for axis in range(len(self.kernel_size))]
        x, bias, *kernels = common.promote(
            "SpatialSeparableConv", self.dtype, x, self._bias(), *kernels
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
