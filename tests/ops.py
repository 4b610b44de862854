"""One registry of convjax's public convolution operations, for every cross-cutting test.

Each :class:`Op` says how to call the operation on a 2-d input of ``C`` channels, the shapes of
its other operands, and what it supports (``impl``, ``data_format``, sharding, a layer).  The
option, layout, empty-array, non-finite, sharding and public-API tests iterate ``OPS``; a new
variant is added here once.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

import convjax
from convjax._src.checks import as_array, reported_as


@dataclasses.dataclass(frozen=True)
class Op:
    """A public operation as the tests call it.

    Attributes:
      name: the public function's name.
      call: ``call(x, *operands, **options)``.
      operands: ``operands(C)``, the shapes of the operands after ``x`` for ``C`` channels.
      options: options every call passes (``rate`` for ``dilated_conv``).
      layer: the name of its NNX / Linen layer, if it has one.
      transposed: whether it is a transposed convolution (its kernel maps back).
      linear: whether it is linear in ``x`` (so its adjoint can be tested).
      preferred_element_type: whether it takes ``preferred_element_type``.
      zero_padding_only: whether it pads with zeros only (deformable convolutions).
    """

    name: str
    call: Callable[..., Any]
    operands: Callable[[int], tuple[tuple[int, ...], ...]]
    options: dict = dataclasses.field(default_factory=dict)
    layer: str | None = None
    transposed: bool = False
    linear: bool = True
    preferred_element_type: bool = True
    zero_padding_only: bool = False

    def __call__(self, x, *operands, **options):
        return self.call(x, *operands, **(self.options | options))

    def arrays(self, channels: int, dtype=np.float32, seed: int = 0):
        """Random operands for an input of ``channels`` channels."""
        rng = np.random.default_rng(seed)
        return tuple(
            as_array(rng.uniform(-1, 1, shape), dtype) for shape in self.operands(channels)
        )

    def __repr__(self) -> str:
        return self.name


def _spatial_separable(x, *kernels, **options):
    return convjax.spatial_separable_conv(x, list(kernels), **options)


GEOMETRY = ("strides", "padding", "dilation", "groups", "padding_mode")


def _spatial(x, ndim, options):
    """x's spatial shape in its data_format (ones for a malformed x: the function reports it)."""
    shape = jnp.shape(x)
    if len(shape) < ndim + 1:
        return (1,) * ndim
    first = options.get("data_format") == "channels_first"
    return tuple(shape[-ndim:] if first else shape[-ndim - 1 : -1])


def _deform_conv(x, kernel, offset_kernel, *, impl="auto", **options):
    """deform_conv with offsets of the right shape for any input and options: predicted from x
    by a conv of the same geometry (as a layer does), no mask."""
    geometry = {k: v for k, v in options.items() if k in ("strides", "padding", "dilation")}
    geometry["data_format"] = options.get("data_format", "channels_last")
    with reported_as("deform_conv"):
        offsets = convjax.conv(x, offset_kernel, impl=impl, **geometry)
    return convjax.deform_conv(x, kernel, offsets, **options)


def _local_impl(options):
    """local_conv has no lax formulation: the cross-cutting tests' impl="lax" runs "taps"."""
    return options | {"impl": "taps"} if options.get("impl") == "lax" else options


def _local_conv(x, kernel, **options):
    """local_conv with a shared kernel broadcast to every output position."""
    options = _local_impl(options)
    ndim = kernel.ndim - 2
    geometry = {k: v for k, v in options.items() if k in GEOMETRY}
    c_in = kernel.shape[-2] * options.get("groups", 1)
    try:
        out = convjax.output_shape((*_spatial(x, ndim, options), c_in), kernel.shape, **geometry)
    except (ValueError, TypeError):  # local_conv says what is wrong
        out = (1,) * (ndim + 1)
    everywhere = jnp.broadcast_to(as_array(kernel), (*out[:-1], *kernel.shape))
    return convjax.local_conv(x, everywhere, **options)


def _local_conv_transpose(x, kernel, **options):
    """local_conv_transpose with a shared kernel broadcast to every input position."""
    options = _local_impl(options)
    positions = _spatial(x, kernel.ndim - 2, options)
    everywhere = jnp.broadcast_to(as_array(kernel), (*positions, *kernel.shape))
    return convjax.local_conv_transpose(x, everywhere, **options)


OPS = (
    Op("conv", convjax.conv, lambda c: ((3, 3, c, 6),), layer="Conv"),
    Op("dilated_conv", convjax.dilated_conv, lambda c: ((3, 3, c, 6),), {"rate": 2}),
    Op(
        "depthwise_conv",
        convjax.depthwise_conv,
        lambda c: ((3, 3, 1, 2 * c),),
        layer="DepthwiseConv",
    ),
    Op(
        "conv_transpose",
        convjax.conv_transpose,
        lambda c: ((3, 3, 6, c),),
        {"strides": 2},
        layer="ConvTranspose",
        transposed=True,
    ),
    Op(
        "spatial_separable_conv",
        _spatial_separable,
        lambda c: ((3, c, 4), (3, 4, 4)),
        layer="SpatialSeparableConv",
    ),
    Op(
        "depthwise_separable_conv",
        convjax.depthwise_separable_conv,
        lambda c: ((3, 3, 1, c), (c, 6)),
        layer="DepthwiseSeparableConv",
    ),
    Op("local_conv", _local_conv, lambda c: ((3, 3, c, 6),), layer="ConvLocal"),
    Op(
        "local_conv_transpose",
        _local_conv_transpose,
        lambda c: ((3, 3, 6, c),),
        {"strides": 2},
        transposed=True,
    ),
    Op(
        "deform_conv",
        _deform_conv,
        lambda c: ((3, 3, c, 6), (3, 3, c, 18)),
        linear=False,
        zero_padding_only=True,
    ),
    Op(
        "deformable_conv",
        convjax.deformable_conv,
        lambda c: ((3, 3, c, 6), (3, 3, c, 27), (27,)),
        layer="DeformableConv",
        linear=False,
        zero_padding_only=True,
    ),
    Op(
        "deconvolve",
        convjax.deconvolve,
        lambda c: ((3, 3, c, c),),
        {"padding": "SAME", "padding_mode": "circular", "regularization": 1e-3},
        linear=False,
        preferred_element_type=False,
    ),
)

BY_NAME = {op.name: op for op in OPS}

# Public functions that are not operations on an input and a kernel (shapes, pictures, tools);
# the public-API walk checks that every other public function is in OPS.
NOT_OPERATIONS = {
    "auto_choice",
    "conv_output_size",
    "conv_transpose_output_size",
    "effective_window",
    "explain_padding",
    "flop_count",
    "fold",
    "formulations",
    "halo_plan",
    "index_map",
    "local_layer_count",
    "make_spec",
    "output_padding_for",
    "output_shape",
    "param_count",
    "pixelcnn_mask",
    "receptive_field",
    "separable_factors",
    "unfold",
}


def layer(op: Op, framework: str, channels: int, **options):
    """``op``'s layer in ``framework`` (``"nnx"`` or ``"linen"``) for ``channels`` input channels,
    with the operands ``Op.arrays`` gives as its parameters' shapes."""
    cls = getattr(getattr(convjax, framework), op.layer)
    out = op.operands(channels)[-1][-1]
    window = {"SpatialSeparableConv": (3, 3)}.get(op.layer, op.operands(channels)[0][:2])
    options = op.options | options
    if op.layer == "DepthwiseConv":
        options.setdefault("depth_multiplier", 2)
    if op.layer == "ConvLocal" and framework == "nnx":
        options.setdefault("in_spatial", (8, 8))
    if framework == "nnx":
        sizes = (channels,) if op.layer == "DepthwiseConv" else (channels, out)
        return cls(*sizes, window, **options, rngs=nnx.Rngs(0))
    sizes = () if op.layer == "DepthwiseConv" else (out,)
    return cls(*sizes, window, **options)
