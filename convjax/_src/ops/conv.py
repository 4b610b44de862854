"""The forward convolutions: standard, dilated (atrous), grouped and depthwise.

Each is one call of :func:`apply` with a :class:`~convjax._src.spec.ConvSpec`; the variants differ
only in how they fill the spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

from convjax._src import formulations
from convjax._src.checks import (
    DTypeLike,
    PrecisionLike,
    check_arrays,
    check_dtypes,
    check_precision,
    check_preferred_element_type,
    check_shape,
    given_as_channels_first,
    input_named,
    op_name,
    public_function,
)
from convjax._src.formulations import Backend, Impl, gather
from convjax._src.ops.apply import apply
from convjax._src.ops.layout import accepts_data_format, kernel_ndim
from convjax._src.spec import ConvSpec, Padding, PaddingMode, channels_first_hint, likely
from convjax._src.spec import make_spec as geometry


@public_function("x", "kernel")
@accepts_data_format(kernel_ndim("kernel"))
def conv(
    x: jax.Array,
    kernel: jax.Array,
    *,
    strides: int | Sequence[int] = 1,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: PaddingMode = "zeros",
    impl: Impl = "auto",
    precision: PrecisionLike = None,
    preferred_element_type: DTypeLike | None = None,
) -> jax.Array:
    r"""N-d convolution (cross-correlation, as in every deep learning library), channels last.

    .. math::
        y[b, o, gJ + j] = \sum_{t} \sum_{c=0}^{C-1} \mathrm{pad}(x)[b,\ o s - lo + t d,\ gC + c]
                          \, k[t, c, gJ + j]

    with ``C = C_in / groups``, ``J = C_out / groups``, and each spatial output size
    ``⌊(i + lo + hi − k̂) / s⌋ + 1`` where ``k̂ = (k − 1) d + 1``.

    Args:
      x: ``[*batch, *spatial, C_in]``, zero or more leading batch dims.
      kernel: ``[*window, C_in // groups, C_out]``; ``kernel.ndim - 2`` spatial dims.  A layer
        has ``I · O · K / groups`` weights (``K = prod(window)``).
      strides: window step, an int or one per spatial dim.
      padding: ``"VALID"``, ``"SAME"`` (``ceil(i / s)`` outputs, odd totals put the extra pad
        high), ``"HALF"`` (``⌊k̂ / 2⌋`` each side), ``"FULL"`` (``k̂ − 1`` each side),
        ``"CAUSAL"`` (``k̂ − 1`` low, 0 high), an int, one int per dim, or one ``(lo, hi)`` pair
        per dim.
      dilation: kernel dilation (atrous rate), an int or one per spatial dim.
      groups: feature groups; output channel ``g · J + j`` sees only input group ``g``.
      padding_mode: ``"zeros"``, ``"reflect"`` (mirror, edge not repeated; pad < size),
        ``"replicate"`` (edge value) or ``"circular"`` (wrap around).
      impl: the formulation: ``"auto"`` (default: the fastest for the platform and spec, see
        :func:`convjax.auto_choice`), ``"lax"`` (``lax.conv_general_dilated``), ``"gather"``
        (explicit index arithmetic), ``"taps"`` (a strided slice per kernel tap), ``"fft"``
        (stride 1), ``"planes"`` (the first axis's taps folded into the channels),
        ``"autotune"`` (the fastest, timed on this machine), or a backend instance such as
        ``GatherBackend(memory_budget=2**28)``; :func:`convjax.formulations` lists them.
      precision: passed to the contraction (``lax.Precision.HIGHEST`` avoids TF32 on GPUs).
      preferred_element_type: accumulation / result dtype.

    Returns:
      ``[*batch, *out_spatial, C_out]``.

    >>> import jax.numpy as jnp, convjax
    >>> convjax.conv(jnp.ones((5, 5, 1)), jnp.ones((3, 3, 1, 1)), strides=2).shape
    (2, 2, 1)
    """
    spec, backend = checked(
        op_name("conv"),
        x,
        kernel,
        precision=precision,
        preferred_element_type=preferred_element_type,
        strides=strides,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
        impl=impl,
    )
    options = {"precision": precision, "preferred_element_type": preferred_element_type}
    return apply(x, kernel, spec, backend, **options)


@public_function("x", "kernel")
@accepts_data_format(kernel_ndim("kernel"))
def dilated_conv(
    x: jax.Array,
    kernel: jax.Array,
    *,
    rate: int | Sequence[int],
    strides: int | Sequence[int] = 1,
    padding: Padding = "VALID",
    groups: int = 1,
    padding_mode: PaddingMode = "zeros",
    impl: Impl = "auto",
    precision: PrecisionLike = None,
    preferred_element_type: DTypeLike | None = None,
) -> jax.Array:
    """Atrous convolution: :func:`conv` with kernel dilation ``rate``.

    A ``k``-tap kernel at rate ``r`` spans ``(k − 1) r + 1`` inputs with ``k`` weights: a 3×3
    kernel at rate 2 sees a 5×5 field, like a 5×5 kernel with every second row and column zero.

    >>> import jax.numpy as jnp, convjax
    >>> convjax.dilated_conv(jnp.ones((7, 7, 1)), jnp.ones((3, 3, 1, 1)), rate=2).shape
    (3, 3, 1)
    """
    spec, backend = checked(
        op_name("dilated_conv"),
        x,
        kernel,
        precision=precision,
        preferred_element_type=preferred_element_type,
        strides=strides,
        padding=padding,
        dilation=rate,
        groups=groups,
        padding_mode=padding_mode,
        impl=impl,
        dilation_name="rate",
    )
    options = {"precision": precision, "preferred_element_type": preferred_element_type}
    return apply(x, kernel, spec, backend, **options)


@public_function("x", "kernel")
@accepts_data_format(kernel_ndim("kernel"))
def depthwise_conv(
    x: jax.Array,
    kernel: jax.Array,
    *,
    strides: int | Sequence[int] = 1,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    padding_mode: PaddingMode = "zeros",
    impl: Impl = "auto",
    precision: PrecisionLike = None,
    preferred_element_type: DTypeLike | None = None,
) -> jax.Array:
    """Depthwise convolution: each input channel convolved with its own ``m`` filters.

    :func:`conv` with ``groups = C_in``; output channel ``c · m + j`` is filter ``j`` of input
    channel ``c`` (``m`` is the depth multiplier).

    Args:
      x: ``[*batch, *spatial, C_in]``.
      kernel: ``[*window, 1, C_in · m]``.

    >>> import jax.numpy as jnp, convjax
    >>> convjax.depthwise_conv(jnp.ones((8, 8, 3)), jnp.ones((3, 3, 1, 6))).shape
    (6, 6, 6)
    """
    op = op_name("depthwise_conv")
    check_arrays(op, x=x, kernel=kernel)
    kernel = depthwise_check(op, x.shape, kernel)
    spec, backend = checked(
        op,
        x,
        kernel,
        precision=precision,
        preferred_element_type=preferred_element_type,
        strides=strides,
        padding=padding,
        dilation=dilation,
        groups=max(x.shape[-1], 1) if x.ndim else 1,
        padding_mode=padding_mode,
        impl=impl,
    )
    options = {"precision": precision, "preferred_element_type": preferred_element_type}
    return apply(x, kernel, spec, backend, **options)


def depthwise_check(op: str, x_shape: Sequence[int], kernel):
    """``kernel`` must be ``[*window, 1, C_in · m]`` for ``x: [..., C_in]``; returns it as the
    grouped kernel with ``groups = C_in`` (for ``C_in = 0``: ``[*window, 0, 0]``, the empty
    convolution)."""
    if len(kernel.shape) < 3 or len(x_shape) < 1:
        return kernel  # the spec reports rank errors
    c_in = x_shape[-1]
    if kernel.shape[-2] != 1 or (kernel.shape[-1] % c_in if c_in else kernel.shape[-1]):
        raise ValueError(
            f"{op}: a depthwise kernel must be [*window, 1, C_in * depth_multiplier] with "
            f"C_in = {c_in}, got shape {tuple(kernel.shape)}."
            + _depthwise_layout_hint(x_shape, tuple(kernel.shape))
        )
    return kernel if c_in else kernel[..., :0, :]


def _depthwise_layout_hint(x_shape: Sequence[int], kernel_shape: tuple[int, ...]) -> str:
    """PyTorch's depthwise weight ``[C_in · m, 1, *window]``, or a channels-first ``x``, where
    the shapes fit them; an empty string where neither does."""
    ndim, hints = len(kernel_shape) - 2, []
    c_in = x_shape[-1]
    if kernel_shape[1] == 1 and c_in and kernel_shape[0] % c_in == 0 and ndim >= 1:
        hints.append(
            "the kernel looks like PyTorch's depthwise weight [C_in * depth_multiplier, 1, "
            "*window]: convert it with convjax.from_torch.conv_kernel(weight)"
        )
    first = len(x_shape) - ndim - 1
    fits = first >= 0 and kernel_shape[-2] == 1 and x_shape[first] not in (0, c_in)
    if fits and kernel_shape[-1] % x_shape[first] == 0 and not given_as_channels_first():
        hints.append(channels_first_hint("x", first, x_shape[first]))
    return likely(hints)


def output_shape(
    input_shape: Sequence[int],
    kernel_shape: Sequence[int],
    *,
    strides: int | Sequence[int] = 1,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: PaddingMode = "zeros",
) -> tuple[int, ...]:
    """The shape :func:`conv` returns for these shapes and options, with no array work.

    >>> import convjax
    >>> convjax.output_shape((8, 5, 5, 16), (3, 3, 16, 32), strides=2)
    (8, 2, 2, 32)
    """
    options = dict(strides=strides, padding=padding, dilation=dilation, groups=groups)
    input_shape, kernel_shape, spec = _of_shapes(
        "output_shape", input_shape, kernel_shape, padding_mode=padding_mode, **options
    )
    ndim = spec.ndim
    out = spec.output_spatial(input_shape[-ndim - 1 : -1], kernel_shape[:ndim])
    return (*input_shape[: -ndim - 1], *out, kernel_shape[-1])


def _of_shapes(op: str, input_shape: Any, kernel_shape: Any, **options: Any):
    """``(input_shape, kernel_shape, spec)`` of a convolution given by its shapes alone, checked
    under ``op`` (the input called ``input_shape`` in the errors)."""
    input_shape = check_shape(op, "input_shape", input_shape)
    kernel_shape = check_shape(op, "kernel_shape", kernel_shape)
    with input_named("input_shape"):
        return input_shape, kernel_shape, geometry(op, input_shape, kernel_shape, **options)


def index_map(
    input_shape: Sequence[int],
    kernel_shape: Sequence[int],
    *,
    strides: int | Sequence[int] = 1,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: PaddingMode = "zeros",
) -> gather.IndexMap:
    """The gather path's index map for these shapes: which input each output tap reads.

    >>> import convjax
    >>> m = convjax.index_map((5, 1), (3, 1, 1), strides=2, padding=1, padding_mode="reflect")
    >>> m.axes[0].position.tolist(), m.axes[0].index.tolist()
    ([[-1, 0, 1], [1, 2, 3], [3, 4, 5]], [[1, 0, 1], [1, 2, 3], [3, 4, 3]])
    """
    options = dict(strides=strides, padding=padding, dilation=dilation, groups=groups)
    input_shape, kernel_shape, spec = _of_shapes(
        op_name("index_map"), input_shape, kernel_shape, padding_mode=padding_mode, **options
    )
    ndim = spec.ndim
    return gather.build_index_map(spec, input_shape[-ndim - 1 : -1], kernel_shape[:ndim])


def make_spec(
    op: str,
    x_shape: Sequence[int],
    kernel_shape: Sequence[int],
    *,
    strides: int | Sequence[int] = 1,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: PaddingMode = "zeros",
    impl: Impl = "auto",
    dilation_name: str = "dilation",
) -> ConvSpec:
    """Validate a convolution of ``x_shape`` by ``kernel_shape`` and normalise its options; errors
    name ``op``.  With ``impl``, also that the formulation accepts it.

    ``x_shape`` is ``[*batch, *spatial, C_in]`` and ``kernel_shape`` ``[*window, C_in //
    groups, C_out]``; the number of spatial dims is ``len(kernel_shape) - 2``.

    >>> import convjax
    >>> convjax.make_spec("conv", (8, 5, 5, 3), (3, 3, 3, 4), strides=2, padding="SAME").padding
    ((1, 1), (1, 1))
    """
    backend = formulations.resolve(op, impl)
    spec = geometry(
        op,
        x_shape,
        kernel_shape,
        strides=strides,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
        dilation_name=dilation_name,
    )
    formulations.check_accepts(op, backend, spec, x_shape, kernel_shape)
    return spec


def checked(
    op: str, x, kernel, *, precision, preferred_element_type, impl, **options
) -> tuple[ConvSpec, Backend]:
    """The spec and formulation of ``conv(x, kernel, impl=impl, **options)`` after every check,
    operands included."""
    check_arrays(op, x=x, kernel=kernel)
    backend = formulations.resolve(op, impl)
    spec = geometry(op, x.shape, kernel.shape, **options)
    check_dtypes(op, x.dtype, kernel.dtype)
    check_precision(op, precision)
    check_preferred_element_type(op, preferred_element_type, x.dtype)
    formulations.check_accepts(op, backend, spec, x.shape, kernel.shape, x.dtype)
    return spec, backend
