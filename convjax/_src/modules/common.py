"""What the Flax NNX and Linen modules share: parameter shapes, initialisers, dtypes and bias.

Both module families create their parameters from the shapes computed here and call the same
pure function, so an NNX module and a Linen module with the same parameters compute the same
thing.  Nothing here convolves.

Parameter names follow Flax (``kernel``, ``bias``) where one kernel suffices, and name each
kernel where there are several (``depthwise_kernel`` / ``pointwise_kernel``, ``kernel_0`` …).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.nnx import initializers

from convjax._src import formulations, shapes
from convjax._src.checks import (
    as_array,
    channels_first,
    check_bool,
    check_dtype,
    check_precision,
    check_preferred_element_type,
    check_shape,
    dtype_kind,
    meant_keyword,
    per_dim,
    reported_as,
)
from convjax._src.ops import streaming
from convjax._src.ops.layout import check_data_format, from_channels_last, to_channels_last
from convjax._src.ops.transpose import transpose_options
from convjax._src.spec import ConvSpec, conv_options, make_spec, padding_option

# Flax's defaults: LeCun normal kernels (fan-in = prod(window) * C_in // groups) and zero biases.
default_kernel_init = initializers.lecun_normal()
default_bias_init = initializers.zeros_init()
# A transposed kernel is ``[*window, C_out // groups, C_in]``: its fan-in is on the last axis
# (``prod(window) * C_in``, as for Flax's ``ConvTranspose``, whose kernel is ``[*window, C_in,
# C_out]``).
default_transpose_kernel_init = initializers.lecun_normal(in_axis=-1, out_axis=-2)

Shapes = dict[str, tuple[int, ...]]


def positive(op: str, name: str, value: Any) -> int:
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise TypeError(
            f"{op}: {name} must be an int, got {value!r} of type {type(value).__name__}."
        )
    if value < 1:
        raise ValueError(f"{op}: {name} must be >= 1, got {value}.")
    return int(value)


def window(op: str, kernel_size: Any) -> tuple[int, ...]:
    """``kernel_size`` as a tuple: one int per spatial dim (an int alone has no rank)."""
    if isinstance(kernel_size, str) or not isinstance(kernel_size, Sequence) or not kernel_size:
        raise TypeError(
            f"{op}: kernel_size must be a non-empty sequence of ints, one per spatial dim "
            f"(e.g. (3, 3) for 2-d), got {kernel_size!r}."
        )
    return tuple(positive(op, "kernel_size", k) for k in kernel_size)


def check_options(
    op: str,
    options: dict[str, Any],
    *,
    transposed: bool = False,
    resolve: Callable[[str, Any], Any] = formulations.resolve,
) -> None:
    """Every check a module's options allow before it sees an input, under the module's name:
    the convolution's options (``strides``, ``padding``, ``kernel_dilation``, ``padding_mode``,
    ``impl`` and, for a transposed conv, ``output_padding`` / ``output_shape``), ``use_bias``,
    the dtypes, ``precision``, ``preferred_element_type`` and the initialisers.  ``options``
    are the module's arguments by name; how the channel counts and ``feature_group_count``
    fit together is checked with the parameter shapes."""
    ndim = len(window(op, options["kernel_size"]))
    for name in ("features", "feature_group_count", "depth_multiplier"):
        if name in options:
            positive(op, name, options[name])
    if "features" in options and options["features"] % options.get("feature_group_count", 1):
        raise ValueError(  # a Linen layer's output channels (its input's come with the input)
            f"{op}: feature_group_count must divide features, but "
            f"{options['feature_group_count']} does not divide {options['features']}."
        )
    conv = {name: options[name] for name in ("strides", "padding", "padding_mode")}
    conv["dilation"] = options["kernel_dilation"]
    if transposed:
        conv |= {name: options[name] for name in ("output_padding", "output_shape", "impl")}
        checked, *_ = transpose_options(op, ndim, dilation_name="kernel_dilation", **conv)
    else:
        checked = conv_options(op, ndim, dilation_name="kernel_dilation", **conv)
    # The formulation's refusals that the options decide (the FFT's strides): one window's
    # worth of input, one channel.  (Locally connected and deformable layers resolve their own.)
    backend = resolve(op, options["impl"])
    if isinstance(backend, formulations.Backend):
        geometry = ConvSpec(checked.strides, ((0, 0),) * ndim, checked.dilation, 1, "zeros")
        sizes = map(shapes.effective_window, options["kernel_size"], checked.dilation)
        kernel_shape = (*options["kernel_size"], 1, 1)
        formulations.check_accepts(op, backend, geometry, (1, *sizes, 1), kernel_shape)
    if options.get("in_spatial") is not None:
        shape = check_shape(op, "in_spatial", options["in_spatial"])
        if len(shape) != ndim or min(shape) < 1:
            raise ValueError(
                f"{op}: in_spatial needs one size >= 1 per spatial dim ({ndim}), got {shape}."
            )
    check_bool(op, "use_bias", options["use_bias"])
    check_data_format(op, options.get("data_format", "channels_last"))
    check_mask(op, options.get("mask"))
    check_dtype(op, "dtype", options["dtype"], kinds=("float", "complex"))
    check_dtype(
        op, "param_dtype", options["param_dtype"], optional=False, kinds=("float", "complex")
    )
    check_precision(op, options["precision"])
    computes_in = options["dtype"] if options["dtype"] is not None else options["param_dtype"]
    check_preferred_element_type(op, options["preferred_element_type"], computes_in)
    for name in (n for n in options if n.endswith("_init")):
        if not callable(options[name]):
            raise TypeError(
                f"{op}: {name} must be an initialiser, init(key, shape, dtype), got "
                f"{options[name]!r}."
            )


def reports_as_module(call: Callable) -> Callable:
    """Decorate a module's ``__call__(x)``: errors from the functions it calls name the module's
    class (``"Conv: x must have rank >= 3 …"``), and a ``channels_first`` module's input and
    output are moved to and from the channels-last layout the body computes in."""

    @functools.wraps(call)
    def wrapper(self, x, *args, **kwargs):
        name, ndim = type(self).__name__, len(self.kernel_size)
        with reported_as(name):
            x = to_channels_last(name, x, ndim, self.data_format)
            return from_channels_last(call(self, x, *args, **kwargs), ndim, self.data_format)

    return wrapper


def check_channels(op: str, x: Any, in_features: int, ndim: int, data_format: str) -> None:
    """``x`` (already channels-last) has the ``in_features`` channels the layer was built for;
    the error shows ``x`` as the user passed it, with a hint where its other layout fits."""
    shape = tuple(jnp.shape(x))
    if len(shape) < ndim + 1 or shape[-1] == in_features:
        return  # a wrong rank is the function's to report
    first = data_format == "channels_first"
    given = channels_first(shape, ndim) if first else shape
    layout = "[*batch, C, *spatial]" if first else "[*batch, *spatial, C]"
    hint = ""
    if not first and given[-ndim - 1] == in_features:
        hint = (
            " If x is channels-first, build the layer with data_format='channels_first' (or "
            f"pass jnp.moveaxis(x, {len(shape) - ndim - 1}, -1))."
        )
    elif first and given[-1] == in_features:
        hint = " If x is channels-last, build the layer without data_format."
    raise ValueError(
        f"{op}: x has {shape[-1]} channels, but the layer was built with in_features="
        f"{in_features} (x shape {given}, read as {layout}).{hint}"
    )


# PyTorch's names for the layers' arguments, and the ones these layers use (as Flax's do).
TORCH_NAMES = {
    "in_channels": ("in_features",),
    "out_channels": ("out_features",),
    "stride": ("strides",),
    "dilation": ("kernel_dilation",),
    "groups": ("feature_group_count",),
    "bias": ("use_bias",),
}


def keyword_hints(names: Iterable[str], parameters: Collection[str]) -> list[str]:
    """For each of ``names`` a layer does not take, the one meant: PyTorch's name for it, or a
    near spelling."""
    hints = []
    for name in (n for n in names if n not in parameters):
        if found := meant_keyword(name, parameters, TORCH_NAMES):
            meant, renamed = found
            hints.append(f"{name}= is {meant}= here" if renamed else f"did you mean {meant}=?")
    return hints


def freeze(value: Any) -> Any:
    """Lists (nested too) as tuples: module options must be hashable to be static.

    >>> freeze([(1, 1), [0, 2]])
    ((1, 1), (0, 2))
    """
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def grouped_channels(
    op: str, in_features: Any, out_features: Any, feature_group_count: Any
) -> tuple[int, int, int]:
    """``(C_in, C_out, groups)``, each >= 1, with ``groups`` dividing both channel counts."""
    c_in = positive(op, "in_features", in_features)
    c_out = positive(op, "out_features", out_features)
    groups = positive(op, "feature_group_count", feature_group_count)
    for name, features in (("in_features", c_in), ("out_features", c_out)):
        if features % groups:
            raise ValueError(
                f"{op}: feature_group_count must divide {name}, but {groups} does not divide "
                f"{features}."
            )
    return c_in, c_out, groups


def conv_shapes(
    op: str,
    in_features: int,
    out_features: int,
    kernel_size: Any,
    feature_group_count: int = 1,
    use_bias: bool = True,
) -> Shapes:
    """``kernel: [*window, C_in // groups, C_out]`` and ``bias: [C_out]``.

    >>> conv_shapes("Conv", 4, 6, (3, 3), feature_group_count=2)
    {'kernel': (3, 3, 2, 6), 'bias': (6,)}
    """
    k = window(op, kernel_size)
    c_in, c_out, groups = grouped_channels(op, in_features, out_features, feature_group_count)
    return _with_bias({"kernel": (*k, c_in // groups, c_out)}, c_out, use_bias)


def conv_transpose_shapes(
    op: str,
    in_features: int,
    out_features: int,
    kernel_size: Any,
    feature_group_count: int = 1,
    use_bias: bool = True,
) -> Shapes:
    """The forward conv's kernel ``[*window, C_out // groups, C_in]`` and ``bias: [C_out]``.

    ``C_in`` is the transposed conv's input channels, ``C_out`` its result's.

    >>> conv_transpose_shapes("ConvTranspose", 4, 6, (3,), feature_group_count=2)
    {'kernel': (3, 3, 4), 'bias': (6,)}
    """
    shapes = conv_shapes(op, in_features, out_features, kernel_size, feature_group_count, use_bias)
    *window_shape, c_in_per_group, c_out = shapes["kernel"]  # checked by conv_shapes
    groups = feature_group_count
    return {**shapes, "kernel": (*window_shape, c_out // groups, c_in_per_group * groups)}


def depthwise_shapes(
    op: str, in_features: int, kernel_size: Any, depth_multiplier: int = 1, use_bias: bool = True
) -> Shapes:
    """``kernel: [*window, 1, C_in · m]`` and ``bias: [C_in · m]``.

    >>> depthwise_shapes("DepthwiseConv", 3, (3, 3), depth_multiplier=2)
    {'kernel': (3, 3, 1, 6), 'bias': (6,)}
    """
    k = window(op, kernel_size)
    c = positive(op, "in_features", in_features) * positive(
        op, "depth_multiplier", depth_multiplier
    )
    return _with_bias({"kernel": (*k, 1, c)}, c, use_bias)


def depthwise_separable_shapes(
    op: str,
    in_features: int,
    out_features: int,
    kernel_size: Any,
    depth_multiplier: int = 1,
    use_bias: bool = True,
) -> Shapes:
    """``depthwise_kernel: [*window, 1, C_in · m]``, ``pointwise_kernel: [C_in · m, C_out]``,
    ``bias: [C_out]`` (one bias, after the pointwise step, as in Keras' ``SeparableConv``).

    >>> depthwise_separable_shapes("DepthwiseSeparableConv", 3, 8, (3, 3))
    {'depthwise_kernel': (3, 3, 1, 3), 'pointwise_kernel': (3, 8), 'bias': (8,)}
    """
    depthwise = depthwise_shapes(op, in_features, kernel_size, depth_multiplier, use_bias=False)
    middle = depthwise["kernel"][-1]
    c_out = positive(op, "out_features", out_features)
    shapes = {"depthwise_kernel": depthwise["kernel"], "pointwise_kernel": (middle, c_out)}
    return _with_bias(shapes, c_out, use_bias)


def spatial_separable_shapes(
    op: str,
    in_features: int,
    out_features: int,
    kernel_size: Any,
    feature_group_count: int = 1,
    use_bias: bool = True,
) -> Shapes:
    """One 1-d kernel per spatial axis, ``kernel_i: [k_i, C // groups, C_out]`` with ``C =
    C_in`` for axis 0 and ``C_out`` after it (the first kernel changes the channels), and
    ``bias: [C_out]``.

    >>> spatial_separable_shapes("SpatialSeparableConv", 4, 8, (3, 5))
    {'kernel_0': (3, 4, 8), 'kernel_1': (5, 8, 8), 'bias': (8,)}
    """
    k = window(op, kernel_size)
    c_in, c_out, groups = grouped_channels(op, in_features, out_features, feature_group_count)
    shapes = {
        f"kernel_{axis}": (size, (c_in if axis == 0 else c_out) // groups, c_out)
        for axis, size in enumerate(k)
    }
    return _with_bias(shapes, c_out, use_bias)


def _with_bias(shapes: Shapes, features: int, use_bias: bool) -> Shapes:
    return {**shapes, "bias": (features,)} if use_bias else shapes


def count(shapes: Shapes) -> int:
    """The number of parameters these shapes hold.

    >>> count(conv_shapes("Conv", 16, 32, (3, 3)))
    4640
    """
    return sum(math.prod(shape) for shape in shapes.values())


def promote(op: str, dtype: Any, x: Any, *params: Any) -> tuple[Any, ...]:
    """Cast ``x`` and the parameters (``None`` stays ``None``) to one floating or complex dtype.

    ``dtype`` if given, else the standard JAX promotion of ``x`` and the parameters' dtypes
    (Flax's rule), computed explicitly so that it also holds under strict dtype promotion: a
    complex input and real parameters compute in complex, an integer input in the parameters'
    dtype.

    >>> import jax.numpy as jnp
    >>> x, kernel = jnp.ones(2, jnp.bfloat16), jnp.ones(2, jnp.float32)
    >>> [a.dtype.name for a in promote("Conv", None, x, kernel)]
    ['float32', 'float32']
    >>> [a.dtype.name for a in promote("Conv", None, jnp.ones(2, jnp.complex64), kernel)]
    ['complex64', 'complex64']
    """
    if dtype is None:
        # JAX's dtypes of the operands, read without moving an array to the device for them.
        operands = [a for a in (x, *params) if a is not None]
        dtypes = [
            jax.dtypes.canonicalize_dtype(a.dtype) if hasattr(a, "dtype") else as_array(a).dtype
            for a in operands
        ]
        with jax.numpy_dtype_promotion("standard"):
            dtype = jnp.result_type(*dtypes)
        if dtype_kind(dtype) not in ("float", "complex"):
            dtype = jnp.float32
    check_dtype(op, "dtype", dtype, kinds=("float", "complex"))
    return tuple(None if a is None else as_array(a, dtype) for a in (x, *params))


def add_bias(y: jax.Array, bias: jax.Array | None) -> jax.Array:
    """``y + bias`` over the trailing axes (the channels, or a locally connected layer's
    positions and channels), in ``y``'s dtype; ``y`` if there is none."""
    if bias is None:
        return y
    return y + bias.astype(y.dtype).reshape((1,) * (y.ndim - bias.ndim) + bias.shape)


def local_kernel_init(key, shape, dtype=jnp.float32):
    """LeCun normal for a locally connected kernel ``[*out, *window, C_in // groups, C_out]``:
    each position's kernel on its own, fan-in ``prod(window) · C_in / groups``."""
    positions = tuple(range((len(shape) - 2) // 2))
    return initializers.lecun_normal(batch_axis=positions)(key, shape, dtype)


def masked(op: str, params: dict[str, Any], mask: Any) -> dict[str, Any]:
    """``params`` with the kernel multiplied by ``mask`` (Flax's masked convolution), checked to
    have the kernel's shape."""
    if mask is None:
        return params
    kernel = params["kernel"]
    if tuple(jnp.shape(mask)) != tuple(kernel.shape):
        raise ValueError(
            f"{op}: mask must have the kernel's shape {tuple(kernel.shape)}, got "
            f"{tuple(jnp.shape(mask))}."
        )
    return {**params, "kernel": kernel * as_array(mask, kernel.dtype)}


def check_mask(op: str, mask: Any) -> Any:
    """``mask`` as an array (``None`` kept): numbers, booleans included, in any array form."""
    if mask is None:
        return None
    try:
        array = np.asarray(mask) if not hasattr(mask, "dtype") else mask
    except ValueError:  # NumPy's "inhomogeneous shape" of nested lists of unequal lengths
        raise TypeError(
            f"{op}: mask must be an array of numbers in the kernel's shape, got nested "
            f"{type(mask).__name__}s of unequal lengths."
        ) from None
    if dtype_kind(array.dtype) is None and array.dtype != np.bool_:
        raise TypeError(f"{op}: mask must be an array of numbers, got dtype {array.dtype}.")
    return as_array(array)


def apply_layer(
    description, values: dict[str, Any], params: dict[str, Any], x: jax.Array
) -> jax.Array:
    """A layer's forward pass: ``x`` and the parameters cast to one dtype (the kernel masked
    where the layer has a mask), the layer's function, then the bias."""
    params = masked(description.name, params, values.get("mask"))
    names = [name for name in params if name != "bias"]
    x, bias, *kernels = promote(
        description.name, values["dtype"], x, params.get("bias"), *(params[n] for n in names)
    )
    operands = description.operands(dict(zip(names, kernels, strict=True)))
    y = description.function(x, *operands, **description.function_options(values))
    return add_bias(y, bias)


def check_streamable(op: str, values: dict[str, Any], kernel_shape: Sequence[int]) -> None:
    """A layer streams (its chunks' outputs concatenate to ``layer(x)``) only when it is causal in
    time, the first spatial axis: stride 1, zero padding, and time padded ``(k̂ − 1, 0)`` —
    ``padding="CAUSAL"``, or pairs whose first is that."""
    ndim = len(kernel_shape) - 2
    strides = per_dim(op, "strides", values["strides"], ndim, minimum=1)
    dilation = per_dim(op, "kernel_dilation", values["kernel_dilation"], ndim, minimum=1)
    window = kernel_shape[:ndim]
    windows = [shapes.effective_window(k, d) for k, d in zip(window, dilation, strict=True)]
    causal = (windows[0] - 1, 0)
    padding = values["padding"]
    if isinstance(padding, str):  # at stride 1 a padding name's pairs need only the window
        example = (1, *windows, kernel_shape[-2])
        time = make_spec(op, example, kernel_shape, padding=padding, dilation=dilation).padding[0]
    else:
        time = padding_option(op, padding, ndim)[0]
    if any(s != 1 for s in strides) or values["padding_mode"] != "zeros":
        raise ValueError(
            f"{op}: streams run stride-1, zero-padded causal layers, got strides "
            f"{values['strides']} and padding_mode {values['padding_mode']!r}."
        )
    if time != causal:
        raise ValueError(
            f"{op}: a stream equals the layer's own output only for a layer causal in time (the "
            f"first spatial axis): padding='CAUSAL', or pairs whose first is (k̂ - 1, 0) = "
            f"{causal}; this layer has padding {padding!r}, time padded {time}, whose outputs "
            f"read future frames."
        )


def init_stream(op: str, values: dict[str, Any], kernel: jax.Array, x_chunk: Any):
    """The state before a stream's first chunk (see :mod:`convjax.streaming`)."""
    check_streamable(op, values, kernel.shape)
    ndim = kernel.ndim - 2
    with reported_as(op):
        x = to_channels_last(op, x_chunk, ndim, values["data_format"])
        x, kernel = promote(op, values["dtype"], x, kernel)  # as stream computes
        return streaming.init(
            x,
            kernel,
            dilation=values["kernel_dilation"],
            groups=_stream_groups(x.shape[-1], kernel.shape),
            padding=values["padding"],
        )


def stream(description, values, params, state, x_chunk):
    """``(y_chunk, next state)``: the layer on the next chunk of a stream, time first."""
    op = f"{description.name}.stream"
    kernel = masked(description.name, params, values.get("mask"))["kernel"]
    check_streamable(op, values, kernel.shape)
    ndim = kernel.ndim - 2
    with reported_as(op):
        x = to_channels_last(op, x_chunk, ndim, values["data_format"])
        x, kernel, bias = promote(description.name, values["dtype"], x, kernel, params.get("bias"))
        y, state = streaming.step(
            state,
            x,
            kernel,
            dilation=values["kernel_dilation"],
            groups=_stream_groups(x.shape[-1], kernel.shape),
            padding=values["padding"],
            impl=values["impl"],
        )
    return from_channels_last(add_bias(y, bias), ndim, values["data_format"]), state


def _stream_groups(c_in: int, kernel_shape: Sequence[int]) -> int:
    """The groups a kernel ``[*window, C_in // groups, C_out]`` has for ``C_in`` channels."""
    return max(c_in // max(kernel_shape[-2], 1), 1)


def initializer(options: dict[str, Any], name: str) -> Any:
    """The initialiser of parameter ``name``: the option ``{name}_init`` where the layer has one
    (``offset_kernel_init``), else ``bias_init`` for the bias and ``kernel_init`` for kernels."""
    own = options.get(f"{name}_init")
    if own is not None:
        return own
    return options["bias_init" if name == "bias" else "kernel_init"]
