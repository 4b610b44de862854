"""One description of every layer, shared by the NNX and Linen modules.

A :class:`LayerDescription` says what a layer is: the function it calls, its parameters' shapes,
its options (name, default, documentation, and the function's keyword each passes to), and what
it can do beyond ``__call__`` (stream).  ``nnx.py`` and ``linen.py`` build their classes from
these descriptions, so an option is added in one place and both frameworks have it, with the
same name, default and documentation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp

from convjax._src import formulations
from convjax._src.checks import DTypeLike, PrecisionLike, check_bool
from convjax._src.formulations import Impl
from convjax._src.modules import common
from convjax._src.ops import deform, local
from convjax._src.ops.conv import conv, depthwise_conv
from convjax._src.ops.layout import DataFormat
from convjax._src.ops.separable import depthwise_separable_conv, spatial_separable_conv
from convjax._src.ops.transpose import conv_transpose
from convjax._src.spec import Padding, PaddingMode

Initializer = Any
IntOrSeq = int | Sequence[int]


@dataclasses.dataclass(frozen=True)
class Option:
    """One constructor argument of a layer.

    Attributes:
      name: the argument's name (Flax's where Flax has one).
      default: its default.
      annotation: its type, for the generated signatures.
      doc: one line of documentation (more lines indented by two spaces).
      to: the keyword of the layer's function it passes to, ``None`` for the module's own
        (``use_bias``, ``dtype``, the initialisers, …).
    """

    name: str
    default: Any
    annotation: Any
    doc: str
    to: str | None = None


@dataclasses.dataclass(frozen=True)
class Example:
    """A docstring example: the layer built with ``options`` on an input of ``x_shape``.

    Attributes:
      channels: the NNX layer's channel arguments (``in_features[, out_features]``); the Linen
        layer takes the last one as ``features`` when the layer has output channels.
      options: the rest of the constructor's arguments, as written.
      x_shape: the input's shape.
      result: the output's shape.
      note: a comment for the result line.
    """

    channels: tuple[int, ...]
    options: str
    x_shape: tuple[int, ...]
    result: tuple[int, ...]
    note: str = ""

    def nnx(self, name: str) -> str:
        args = ", ".join([*map(str, self.channels), self.options])
        comment = f"  # {self.note}" if self.note else ""
        return (
            "    >>> import jax.numpy as jnp, convjax\n"
            "    >>> from flax import nnx\n"
            f"    >>> layer = convjax.nnx.{name}({args}, rngs=nnx.Rngs(0))\n"
            f"    >>> layer(jnp.ones({self.x_shape})).shape{comment}\n"
            f"    {self.result}\n"
        )

    def linen(self, name: str, out_features: bool) -> str:
        channels = list(map(str, self.channels[1:])) if out_features else []
        args = ", ".join([*channels, self.options])
        comment = f"  # {self.note}" if self.note else ""
        return (
            "    >>> import jax, jax.numpy as jnp, convjax\n"
            f"    >>> layer = convjax.linen.{name}({args})\n"
            f"    >>> x = jnp.ones({self.x_shape})\n"
            f"    >>> layer.apply(layer.init(jax.random.key(0), x), x).shape{comment}\n"
            f"    {self.result}\n"
        )


@dataclasses.dataclass(frozen=True)
class LayerDescription:
    """What a layer is, for both module families.

    Attributes:
      name: the class name.
      summary: the docstring's first paragraph.
      parameters: the docstring's paragraph on the parameters' shapes.
      function: the pure function it calls: ``function(x, *operands, **options)``.
      operands: the parameters, by name, as the function's operands after ``x``.
      shapes: ``shapes(op, in_features, out_features, options)``, the parameters' shapes.
      options: the constructor's options after the channels and ``kernel_size``.
      out_features: whether the layer takes its output channels (DepthwiseConv does not).
      streams: whether the layer streams (``init_stream`` / ``stream``).
      transposed: a transposed convolution (its options are checked as such).
      example: the docstrings' runnable example, for both frameworks.
    """

    name: str
    summary: str
    parameters: str
    function: Callable[..., Any]
    operands: Callable[[dict[str, Any]], tuple[Any, ...]]
    shapes: Callable[..., common.Shapes]
    options: tuple[Option, ...]
    out_features: bool = True
    streams: bool = False
    transposed: bool = False
    example: Example | None = None
    resolve: Callable[[str, Any], Any] = formulations.resolve
    locally_connected: bool = False
    check: Callable[[str, dict[str, Any]], None] | None = None

    def function_options(self, values: dict[str, Any]) -> dict[str, Any]:
        """The keywords of :attr:`function` from the layer's option values."""
        return {o.to: values[o.name] for o in self.options if o.to is not None}

    def docstring(self, framework: str) -> str:
        """The class docstring for ``framework`` (``"nnx"`` or ``"linen"``)."""
        if framework == "nnx":
            heading, example = "Args", self.example.nnx(self.name)
            channels = "in_features: input channels ``C_in``.\n"
            if self.out_features:
                channels += "      out_features: output channels ``C_out``.\n"
            last = "      rngs: random streams; ``rngs.params()`` draws the initial parameters.\n"
        else:
            heading, example = "Attributes", self.example.linen(self.name, self.out_features)
            channels = "features: output channels ``C_out`` (``C_in`` is read from the input).\n"
            channels = channels if self.out_features else ""
            last = ""
        lines = "".join(f"      {o.name}: {o.doc}\n" for o in self.options)
        return (
            f"{self.summary}\n\n    {heading}:\n"
            + (f"      {channels}" if channels else "")
            + "      kernel_size: the window, one int per spatial dim, e.g. ``(3, 3)``.\n"
            + f"{lines}{last}\n    Parameters: {self.parameters}\n\n{example}    "
        )


# -- the options ----------------------------------------------------------------------------------

STRIDES = Option("strides", 1, IntOrSeq, "window step, an int or one per spatial dim.", "strides")
PADDING = Option(
    "padding",
    "VALID",
    Padding,
    '``"VALID"`` (default, as PyTorch; Flax defaults to ``"SAME"``), ``"SAME"``, ``"HALF"``,\n'
    '        ``"FULL"``, ``"CAUSAL"``, an int, one int per dim or one ``(lo, hi)`` pair per dim.',
    "padding",
)
DILATION = Option(
    "kernel_dilation",
    1,
    IntOrSeq,
    "kernel dilation (atrous rate); the function's ``dilation``.",
    "dilation",
)
GROUPS = Option(
    "feature_group_count", 1, int, "feature groups; the function's ``groups``.", "groups"
)
MULTIPLIER = Option(
    "depth_multiplier", 1, int, "filters per input channel, ``m``: ``C_in · m`` outputs."
)
PADDING_MODE = Option(
    "padding_mode",
    "zeros",
    PaddingMode,
    '``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.',
    "padding_mode",
)
MASK = Option(
    "mask",
    None,
    Any,
    "an array of the kernel's shape multiplied into it before every call (Flax's ``mask``:\n"
    "        PixelCNN's causal masks, see :func:`convjax.pixelcnn_mask`); masked taps get zero\n"
    "        gradient.",
)
TAIL = (
    Option("use_bias", True, bool, "add a bias, one per output channel."),
    Option(
        "dtype",
        None,
        DTypeLike | None,
        "computation dtype; default: the promotion of the input's and parameters' dtypes.",
    ),
    Option("param_dtype", jnp.float32, DTypeLike, "parameter dtype (default float32)."),
    Option("precision", None, PrecisionLike, "passed to the contraction.", "precision"),
    Option(
        "preferred_element_type",
        None,
        DTypeLike | None,
        "accumulation / result dtype.",
        "preferred_element_type",
    ),
    Option(
        "kernel_init",
        common.default_kernel_init,
        Initializer,
        "kernel initialiser (default LeCun normal over each kernel's fan-in).",
    ),
    Option("bias_init", common.default_bias_init, Initializer, "bias initialiser (zeros)."),
    Option(
        "impl",
        "auto",
        Impl,
        '``"auto"`` (default) or a name from :func:`convjax.formulations`, or a backend.',
        "impl",
    ),
    Option(
        "data_format",
        "channels_last",
        DataFormat,
        '``"channels_last"`` (default) or ``"channels_first"`` (``[*batch, C, *spatial]``\n'
        "        in and out; the parameters keep convjax's layout).",
    ),
)
TRANSPOSE_TAIL = tuple(
    dataclasses.replace(
        o,
        default=common.default_transpose_kernel_init,
        doc="kernel initialiser (default LeCun normal over fan-in ``prod(window) · C_in``).",
    )
    if o.name == "kernel_init"
    else o
    for o in TAIL
)


def _kernel(params):
    return (params["kernel"],)


LAYERS: dict[str, LayerDescription] = {
    d.name: d
    for d in (
        LayerDescription(
            name="Conv",
            summary="N-d convolution layer, channels last: :func:`convjax.conv` plus a bias.",
            parameters="``kernel: [*window, C_in // groups, C_out]`` and ``bias: [C_out]``.",
            function=conv,
            operands=_kernel,
            shapes=lambda op, c_in, c_out, o: common.conv_shapes(
                op, c_in, c_out, o["kernel_size"], o["feature_group_count"], o["use_bias"]
            ),
            options=(STRIDES, PADDING, DILATION, GROUPS, PADDING_MODE, MASK, *TAIL),
            streams=True,
            example=Example(
                (3, 8), '(3, 3), strides=2, padding="SAME"', (1, 8, 8, 3), (1, 4, 4, 8)
            ),
        ),
        LayerDescription(
            name="ConvTranspose",
            summary=(
                "Transposed convolution layer (PyTorch's ``ConvTranspose``):\n"
                "    :func:`convjax.conv_transpose` plus a bias: the adjoint of the :class:`Conv`"
                " with the same\n    kernel, strides, padding, dilation and groups that maps"
                " ``C_out`` channels to ``C_in``;\n    each output size is ``s(i − 1) + a + k̂ −"
                " lo − hi``."
            ),
            parameters=(
                "``kernel: [*window, C_out // groups, C_in]`` (the forward conv's kernel) and\n"
                "    ``bias: [C_out]``."
            ),
            function=conv_transpose,
            operands=_kernel,
            shapes=lambda op, c_in, c_out, o: common.conv_transpose_shapes(
                op, c_in, c_out, o["kernel_size"], o["feature_group_count"], o["use_bias"]
            ),
            options=(
                dataclasses.replace(
                    STRIDES, doc="the forward conv's strides (the upsampling factor)."
                ),
                dataclasses.replace(
                    PADDING, default=0, doc="the forward conv's padding (default 0, as PyTorch)."
                ),
                Option(
                    "output_padding",
                    0,
                    IntOrSeq,
                    "``a``, extra size on the high side, ``0 <= a < max(stride, dilation)``.",
                    "output_padding",
                ),
                Option(
                    "output_shape",
                    None,
                    Sequence[int] | None,
                    "the output's spatial shape, instead of ``output_padding``.",
                    "output_shape",
                ),
                DILATION,
                GROUPS,
                PADDING_MODE,
                MASK,
                *TRANSPOSE_TAIL,
            ),
            transposed=True,
            example=Example(
                (3, 8),
                "(3, 3), strides=2",
                (1, 2, 2, 3),
                (1, 5, 5, 8),
                "the classic 2x2 back to 5x5",
            ),
        ),
        LayerDescription(
            name="DepthwiseConv",
            summary=(
                "Depthwise convolution layer: :func:`convjax.depthwise_conv` plus a bias.  Each"
                " input\n    channel is convolved with its own ``depth_multiplier`` filters;"
                " output channel ``c · m + j``\n    is filter ``j`` of input channel ``c``."
            ),
            parameters="``kernel: [*window, 1, C_in · m]`` and ``bias: [C_in · m]``.",
            function=depthwise_conv,
            operands=_kernel,
            shapes=lambda op, c_in, c_out, o: common.depthwise_shapes(
                op, c_in, o["kernel_size"], o["depth_multiplier"], o["use_bias"]
            ),
            options=(STRIDES, MULTIPLIER, PADDING, DILATION, PADDING_MODE, MASK, *TAIL),
            out_features=False,
            streams=True,
            example=Example((3,), "(3, 3), depth_multiplier=2", (1, 8, 8, 3), (1, 6, 6, 6)),
        ),
        LayerDescription(
            name="DepthwiseSeparableConv",
            summary=(
                "Depthwise then pointwise (Keras' ``SeparableConv``, MobileNet's block without"
                " the\n    activation): :func:`convjax.depthwise_separable_conv` plus one bias."
                "  Strides, padding and\n    dilation apply to the depthwise step."
            ),
            parameters=(
                "``depthwise_kernel: [*window, 1, C_in · m]``, ``pointwise_kernel: [C_in · m,"
                " C_out]``\n    and ``bias: [C_out]``."
            ),
            function=depthwise_separable_conv,
            operands=lambda p: (p["depthwise_kernel"], p["pointwise_kernel"]),
            shapes=lambda op, c_in, c_out, o: common.depthwise_separable_shapes(
                op, c_in, c_out, o["kernel_size"], o["depth_multiplier"], o["use_bias"]
            ),
            options=(STRIDES, MULTIPLIER, PADDING, DILATION, PADDING_MODE, *TAIL),
            example=Example((3, 8), "(3, 3)", (1, 8, 8, 3), (1, 6, 6, 8)),
        ),
        LayerDescription(
            name="SpatialSeparableConv",
            summary=(
                "One 1-d convolution per spatial axis in turn (``k×1`` then ``1×k``):\n"
                "    :func:`convjax.spatial_separable_conv` plus a bias.  The first kernel maps"
                " ``C_in`` to\n    ``C_out`` channels, the rest ``C_out`` to ``C_out``; the"
                " options describe the full\n    ``k_1 × … × k_N`` window (with"
                " ``feature_group_count = C_in = C_out`` it is Haiku's\n"
                "    ``SeparableDepthwiseConv2D``)."
            ),
            parameters=(
                "``kernel_i: [k_i, C // groups, C_out]`` for each spatial axis ``i`` (``C ="
                " C_in``\n    for ``i = 0``, else ``C_out``) and ``bias: [C_out]``."
            ),
            function=spatial_separable_conv,
            operands=lambda p: ([p[f"kernel_{i}"] for i in range(len(p) - ("bias" in p))],),
            shapes=lambda op, c_in, c_out, o: common.spatial_separable_shapes(
                op, c_in, c_out, o["kernel_size"], o["feature_group_count"], o["use_bias"]
            ),
            options=(STRIDES, PADDING, DILATION, GROUPS, PADDING_MODE, *TAIL),
            example=Example((3, 8), "(3, 5)", (1, 8, 8, 3), (1, 6, 4, 8)),
        ),
        LayerDescription(
            name="ConvLocal",
            summary=(
                "Locally connected layer (Flax's ``ConvLocal``): :func:`convjax.local_conv`, a"
                " different\n    kernel at every output position, plus a bias per position and"
                " channel."
            ),
            parameters=(
                "``kernel: [*out_spatial, *window, C_in // groups, C_out]`` and ``bias:\n"
                "    [*out_spatial, C_out]``."
            ),
            function=local.local_conv,
            operands=_kernel,
            shapes=lambda op, c_in, c_out, o: _local_shapes(op, c_in, c_out, o),
            options=(
                STRIDES,
                Option(
                    "in_spatial",
                    None,
                    Sequence[int] | None,
                    "the input's spatial shape (the kernel has one entry per output\n"
                    "        position): required by the NNX layer, read from the first\n"
                    "        input by the Linen one.",
                ),
                PADDING,
                DILATION,
                GROUPS,
                PADDING_MODE,
                *(
                    dataclasses.replace(
                        o,
                        doc='``"auto"`` (default), ``"gather"``, ``"taps"`` or a ``GatherBackend``'
                        " (see :func:`convjax.local_conv`).",
                    )
                    if o.name == "impl"
                    else dataclasses.replace(o, default=common.local_kernel_init)
                    if o.name == "kernel_init"
                    else o
                    for o in TAIL
                ),
            ),
            resolve=local.resolve_impl,
            locally_connected=True,
            example=Example((3, 8), "(3, 3), in_spatial=(6, 6)", (1, 6, 6, 3), (1, 4, 4, 8)),
        ),
        LayerDescription(
            name="DeformableConv",
            summary=(
                "Deformable convolution layer (DCN v2; DCN v1 with ``modulated=False``):"
                " :func:`convjax.deformable_conv`\n    plus a bias.  A convolution with the"
                " layer's window, strides, padding and dilation predicts\n    each output's"
                " sampling offsets (and, modulated, a sigmoid mask) from the input; its"
                " parameters\n    start at zero, so the layer starts as a :class:`Conv` (times"
                " 0.5 when modulated), as in DCN v2.\n    DCN v2 trains the offset convolution at"
                " a tenth of the learning rate: ``optax.multi_transform``\n    on the ``offset_``"
                " parameters does that."
            ),
            parameters=(
                "``kernel: [*window, C_in // groups, C_out]``, ``offset_kernel: [*window, C_in,"
                " G·K·(N+1)]``\n    (``G·K·N`` unmodulated; ``G`` offset groups, ``K ="
                " prod(window)``, ``N`` spatial dims), ``offset_bias``\n    and ``bias: [C_out]``."
            ),
            function=deform.deformable_conv,
            operands=lambda p: (p["kernel"], p["offset_kernel"], p["offset_bias"]),
            shapes=lambda op, c_in, c_out, o: _deformable_shapes(op, c_in, c_out, o),
            options=(
                STRIDES,
                PADDING,
                DILATION,
                GROUPS,
                Option(
                    "offset_groups",
                    1,
                    int,
                    "input channel blocks sampled with their own offsets (must divide C_in).",
                    "offset_groups",
                ),
                Option(
                    "modulated",
                    True,
                    bool,
                    "predict a modulation mask too (DCN v2); ``False`` is DCN v1.",
                    "modulated",
                ),
                dataclasses.replace(
                    PADDING_MODE, doc='``"zeros"`` only: samples outside the input read zero.'
                ),
                Option(
                    "offset_kernel_init",
                    common.default_bias_init,
                    Initializer,
                    "the offset convolution's kernel initialiser (zeros).",
                ),
                Option(
                    "offset_bias_init",
                    common.default_bias_init,
                    Initializer,
                    "the offset convolution's bias initialiser (zeros).",
                ),
                *(
                    dataclasses.replace(o, doc="the offset convolution's formulation.")
                    if o.name == "impl"
                    else o
                    for o in TAIL
                ),
            ),
            check=lambda op, o: _deformable_check(op, o),
            example=Example((3, 8), "(3, 3), padding=1", (1, 6, 6, 3), (1, 6, 6, 8)),
        ),
    )
}


def _deformable_check(op: str, o: dict[str, Any]) -> None:
    if o["padding_mode"] != "zeros":
        raise ValueError(
            f"{op}: padding_mode must be 'zeros' (a deformable convolution samples zeros outside "
            f"the input), got {o['padding_mode']!r}."
        )
    # Offsets move sampling points along real axes: a deformable convolution is real.
    common.check_dtype(op, "dtype", o["dtype"])
    common.check_dtype(op, "param_dtype", o["param_dtype"], optional=False)
    groups = common.positive(op, "offset_groups", o["offset_groups"])
    check_bool(op, "modulated", o["modulated"])
    if o.get("in_features") is not None and o["in_features"] % groups:
        raise ValueError(
            f"{op}: offset_groups must divide in_features, but {groups} does not divide "
            f"{o['in_features']}."
        )


def _deformable_shapes(op: str, c_in: int, c_out: int | None, o: dict[str, Any]) -> common.Shapes:
    """The layer's kernel and bias, and its offset convolution's kernel and bias."""
    shapes = common.conv_shapes(
        op, c_in, c_out, o["kernel_size"], o["feature_group_count"], o["use_bias"]
    )
    _deformable_check(op, {**o, "in_features": c_in})
    window = tuple(o["kernel_size"])
    channels = o["offset_groups"] * math.prod(window) * (len(window) + o["modulated"])
    return {
        "kernel": shapes["kernel"],
        "offset_kernel": (*window, c_in, channels),
        "offset_bias": (channels,),
    } | ({"bias": shapes["bias"]} if o["use_bias"] else {})


def _local_shapes(op: str, c_in: int, c_out: int | None, o: dict[str, Any]) -> common.Shapes:
    """A locally connected layer's kernel and per-position bias."""
    if o.get("in_spatial") is None:
        raise TypeError(
            f"{op}: in_spatial (the input's spatial shape) is required: the kernel has one entry "
            f"per output position."
        )
    c_in, c_out, _ = common.grouped_channels(op, c_in, c_out, o["feature_group_count"])
    with common.reported_as(op):
        count = local.local_layer_count(
            (*o["in_spatial"], c_in),
            o["kernel_size"],
            c_out,
            strides=o["strides"],
            padding=o["padding"],
            dilation=o["kernel_dilation"],
            groups=o["feature_group_count"],
            padding_mode=o["padding_mode"],
        )
    kernel = tuple(count.kernel_shape)
    shapes = {"kernel": kernel}
    return shapes | {"bias": (*kernel[: len(o["kernel_size"])], c_out)} if o["use_bias"] else shapes
