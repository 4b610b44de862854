"""Separable convolutions: two different factorisations that the ecosystem gives the same name.

* **Spatially separable** (:func:`spatial_separable_conv`): the window factors into one 1-D kernel
  per spatial axis, applied one axis after the other, e.g. a 3×3 Sobel filter as a 3×1 then a 1×3
  pass (6 weights instead of 9).  Haiku's ``SeparableDepthwiseConv2D`` is this, per channel.
* **Depthwise separable** (:func:`depthwise_separable_conv`): the *channels* factor, a depthwise
  conv (space, per channel) then a 1×1 conv (channels, per position).  Keras'
  ``SeparableConv2D``, Xception and MobileNet mean this.

Both are compositions of :func:`~convjax.conv`: each step is one convolution spec run on the
chosen backend.  :func:`separable_factors` finds spatial factors of a 2-D kernel by SVD.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from convjax._src import formulations
from convjax._src.checks import (
    DTypeLike,
    PrecisionLike,
    check_arrays,
    check_dtypes,
    check_int,
    check_precision,
    check_preferred_element_type,
    check_real,
    op_name,
    public_function,
    reported_as,
)
from convjax._src.formulations import Backend, Impl
from convjax._src.ops.apply import apply
from convjax._src.ops.conv import checked, conv, depthwise_check
from convjax._src.ops.layout import accepts_data_format, kernel_ndim
from convjax._src.spec import ConvSpec, Padding, PaddingMode, make_spec


def chain_channels(
    op: str, c_in: int, kernel_shapes: Sequence[Sequence[int]], groups: int, first: str = "x"
) -> int:
    """Check that 1-D kernels ``[k_i, C_i // groups, C_{i+1}]`` chain from ``c_in`` channels;
    return the last ``C_out``."""
    c = c_in
    for i, shape in enumerate(kernel_shapes):
        source = f"the channels of {first}" if i == 0 else f"kernels[{i - 1}].shape[-1]"
        if c % groups:
            raise ValueError(
                f"{op}: groups must divide the input channels of every step, but {groups} does "
                f"not divide {c} ({source})."
            )
        if shape[1] * groups != c:
            raise ValueError(
                f"{op}: the 1-D kernels must chain, kernels[{i}].shape[1] must be C // groups = "
                f"{c} // {groups} = {c // groups}, where C = {c} is {source}, got {shape[1]} "
                f"(kernel shapes {[tuple(s) for s in kernel_shapes]})."
            )
        if shape[2] % groups:
            raise ValueError(
                f"{op}: groups must divide the output channels of every step, but {groups} does "
                f"not divide {shape[2]} (kernels[{i}].shape[-1])."
            )
        c = shape[2]
    return c


def check_one_d_kernels(op: str, kernel_shapes: Any) -> None:
    """``kernel_shapes`` must be a non-empty list or tuple of rank-3 shapes."""
    if len(kernel_shapes) == 0:
        raise ValueError(
            f"{op}: kernels must hold one 1-D kernel [k, C_in // groups, C_out] per spatial dim, "
            f"got none."
        )
    for i, shape in enumerate(kernel_shapes):
        if len(shape) != 3 or shape[0] < 1 or min(shape) < 0:
            raise ValueError(
                f"{op}: kernels[{i}] must be a 1-D kernel [k, C_in // groups, C_out] of rank 3 "
                f"with k >= 1 (one kernel per spatial dim), got shape {tuple(shape)}."
            )


def on_axis(kernel: jax.Array, axis: int, ndim: int) -> jax.Array:
    """A 1-D kernel ``[k, C, O]`` as an ``ndim``-d kernel with window 1 off ``axis``."""
    window = (1,) * axis + (kernel.shape[0],) + (1,) * (ndim - axis - 1)
    return kernel.reshape(*window, *kernel.shape[1:])


def axis_spec(spec: ConvSpec, axis: int) -> ConvSpec:
    """``spec`` restricted to ``axis``: stride, padding and dilation there, none elsewhere."""

    def keep(values, neutral):
        return tuple(v if a == axis else neutral for a, v in enumerate(values))

    return dataclasses.replace(
        spec,
        strides=keep(spec.strides, 1),
        padding=keep(spec.padding, (0, 0)),
        dilation=keep(spec.dilation, 1),
    )


@public_function("x", "kernels")
@accepts_data_format(lambda arguments: len(arguments["kernels"]))
def spatial_separable_conv(
    x: jax.Array,
    kernels: Sequence[jax.Array],
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
    r"""Spatially separable convolution: one 1-D kernel per spatial axis, applied in turn.

    Not the depthwise separable convolution (see :func:`depthwise_separable_conv`): here the
    *window* factors, ``K[t₁, …, t_N] = k₁[t₁] ⋯ k_N[t_N]``.  Haiku's ``SeparableDepthwiseConv2D``
    is this with per-channel factors (``groups = C``); Keras' ``SeparableConv2D`` is not.

    Step ``i`` is :func:`~convjax.conv` with ``kernels[i]`` reshaped to window 1 on every other
    axis, and with stride, dilation and padding only on axis ``i``.  String padding is resolved
    per axis against the full input with the full options first, so the result has the shape
    ``conv`` gives for the full window, and every padding mode composes exactly.  With
    per-channel factors (``groups = C``, ``[k_i, 1, C]``) this equals :func:`~convjax.conv` with
    the outer-product kernel; with channel mixing, the kernel

    .. math::
        K[t_1, t_2, c, o] = \sum_m k_1[t_1, c, m]\, k_2[t_2, m, o]

    (a sum of outer products, and likewise within each group).  ``N`` 1-D kernels hold
    ``Σ k_i · C_i · C_{i+1} / groups`` weights instead of ``Π k_i · C_in · C_out / groups``.

    Args:
      x: ``[*batch, *spatial, C_in]`` with ``N = len(kernels)`` spatial dims.
      kernels: one 1-D kernel per spatial axis, ``kernels[i]: [k_i, C_i // groups, C_{i+1}]``,
        with ``C_0 = C_in``: the channels chain from one kernel to the next.
      strides, padding, dilation, groups, padding_mode, impl, precision: as in
        :func:`~convjax.conv`, for the full ``k₁ × … × k_N`` window.
      preferred_element_type: accumulation / result dtype of every step; the intermediate
        results keep it and later kernels are cast to it.

    Returns:
      ``[*batch, *out_spatial, C_N]``, the shape :func:`~convjax.conv` gives for the full window.

    >>> import jax.numpy as jnp, convjax
    >>> x = jnp.arange(25.0).reshape(5, 5, 1)  # a ramp x[i, j] = 5 i + j
    >>> smooth = jnp.array([1.0, 2.0, 1.0]).reshape(3, 1, 1)
    >>> diff = jnp.array([1.0, 0.0, -1.0]).reshape(3, 1, 1)
    >>> y = convjax.spatial_separable_conv(x, [smooth, diff])  # the Sobel x-derivative
    >>> y[..., 0].tolist()
    [[-8.0, -8.0, -8.0], [-8.0, -8.0, -8.0], [-8.0, -8.0, -8.0]]
    >>> sobel = smooth[:, None] * diff[None]  # [3, 3, 1, 1], the outer product
    >>> bool(jnp.array_equal(y, convjax.conv(x, sobel)))
    True
    """
    op = op_name("spatial_separable_conv")
    spec, backend = _separable_spec(
        op,
        x,
        kernels,
        precision=precision,
        preferred_element_type=preferred_element_type,
        strides=strides,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
        impl=impl,
    )
    y = x
    for axis, kernel in enumerate(kernels):
        kernel = kernel if kernel.dtype == y.dtype else kernel.astype(y.dtype)
        y = apply(
            y,
            on_axis(kernel, axis, spec.ndim),
            axis_spec(spec, axis),
            backend,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
    return y


def _separable_spec(
    op: str, x, kernels, *, precision, preferred_element_type, impl, **options
) -> tuple[ConvSpec, Backend]:
    """The full-window spec of a spatially separable conv and its formulation, after every
    check."""
    check_arrays(op, x=x)
    backend = formulations.resolve(op, impl)
    if not isinstance(kernels, list | tuple):
        raise TypeError(
            f"{op}: kernels must be a list or tuple of 1-D kernels, one per spatial dim, got "
            f"{type(kernels).__name__}."
        )
    check_arrays(op, **{f"kernels[{i}]": kernel for i, kernel in enumerate(kernels)})
    shapes = [tuple(kernel.shape) for kernel in kernels]
    check_one_d_kernels(op, shapes)
    ndim = len(shapes)
    if x.ndim < ndim + 1:
        raise ValueError(
            f"{op}: x must have rank >= {ndim + 1} ([*batch, *spatial, C_in]) for {ndim} 1-D "
            f"kernels (one per spatial dim), got shape {tuple(x.shape)}."
        )
    groups = check_int(op, "groups", options["groups"], minimum=1)
    c_out = chain_channels(op, x.shape[-1], shapes, groups)
    for i, kernel in enumerate(kernels):
        check_dtypes(op, x.dtype, kernel.dtype, kernel_name=f"kernels[{i}]")
    check_precision(op, precision)
    check_preferred_element_type(op, preferred_element_type, x.dtype)
    window = tuple(shape[0] for shape in shapes)
    kernel_shape = (*window, x.shape[-1] // groups, c_out)
    spec = make_spec(op, x.shape, kernel_shape, **options)
    formulations.check_accepts(op, backend, spec, x.shape, kernel_shape, x.dtype)
    return spec, backend


@public_function("x", "depthwise_kernel", "pointwise_kernel")
@accepts_data_format(kernel_ndim("depthwise_kernel"))
def depthwise_separable_conv(
    x: jax.Array,
    depthwise_kernel: jax.Array,
    pointwise_kernel: jax.Array,
    *,
    strides: int | Sequence[int] = 1,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    padding_mode: PaddingMode = "zeros",
    impl: Impl = "auto",
    precision: PrecisionLike = None,
    preferred_element_type: DTypeLike | None = None,
) -> jax.Array:
    r"""Depthwise separable convolution: :func:`~convjax.depthwise_conv`, then a 1×1 conv.

    Not the spatially separable convolution (see :func:`spatial_separable_conv`): here the
    *channels* factor.  This is Keras' ``SeparableConv2D`` (Xception, MobileNet); Haiku's
    ``SeparableDepthwiseConv2D`` is something else.  Equivalent to :func:`~convjax.conv` with
    the kernel

    .. math::
        K[t, c, o] = \sum_{j=0}^{m-1} d[t, 0, c m + j]\, p[c m + j, o]

    using ``K · C_in · m + C_in · m · C_out`` weights instead of ``K · C_in · C_out``
    (``K = prod(window)``): 656 instead of 4608 for a 3×3 layer from 16 to 32 channels with
    ``m = 1``.

    Args:
      x: ``[*batch, *spatial, C_in]``.
      depthwise_kernel: ``[*window, 1, C_in · m]`` (depth multiplier ``m``); output channel
        ``c · m + j`` of the depthwise step is filter ``j`` of input channel ``c``.
      pointwise_kernel: ``[C_in · m, C_out]``, the 1×1 conv.
      strides, padding, dilation, padding_mode, impl, precision: as in
        :func:`~convjax.depthwise_conv`; they apply to the depthwise step (the 1×1 step has
        none).
      preferred_element_type: accumulation / result dtype of both steps; the pointwise kernel is
        cast to it.

    Returns:
      ``[*batch, *out_spatial, C_out]``.

    >>> import jax.numpy as jnp, convjax
    >>> x = jnp.ones((8, 8, 16))
    >>> convjax.depthwise_separable_conv(x, jnp.ones((3, 3, 1, 16)), jnp.ones((16, 32))).shape
    (6, 6, 32)
    """
    op = op_name("depthwise_separable_conv")
    check_arrays(op, x=x, depthwise_kernel=depthwise_kernel, pointwise_kernel=pointwise_kernel)
    grouped = depthwise_check(op, x.shape, depthwise_kernel)
    spec, backend = checked(
        op,
        x,
        grouped,
        precision=precision,
        preferred_element_type=preferred_element_type,
        strides=strides,
        padding=padding,
        dilation=dilation,
        groups=max(x.shape[-1], 1) if x.ndim else 1,
        padding_mode=padding_mode,
        impl=impl,
    )
    channels = depthwise_kernel.shape[-1]
    if pointwise_kernel.ndim != 2:
        raise ValueError(
            f"{op}: pointwise_kernel must be [C_in * depth_multiplier, C_out] of rank 2, got "
            f"shape {tuple(pointwise_kernel.shape)}."
        )
    if pointwise_kernel.shape[0] != channels:
        multiplier = channels // x.shape[-1] if x.shape[-1] else "m"
        raise ValueError(
            f"{op}: pointwise_kernel.shape[0] must equal the depthwise output channels C_in * "
            f"depth_multiplier = {x.shape[-1]} * {multiplier} = {channels}, got "
            f"{pointwise_kernel.shape[0]} (pointwise_kernel shape "
            f"{tuple(pointwise_kernel.shape)})."
        )
    check_dtypes(op, x.dtype, pointwise_kernel.dtype, kernel_name="pointwise_kernel")
    options = {"precision": precision, "preferred_element_type": preferred_element_type}
    y = apply(x, grouped, spec, backend, **options)
    pointwise = pointwise_kernel.reshape(*(1,) * spec.ndim, *pointwise_kernel.shape)
    with reported_as(op):
        return conv(
            y,
            pointwise if pointwise.dtype == y.dtype else pointwise.astype(y.dtype),
            impl=backend,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )


class SeparableFactors(NamedTuple):
    """Rank-``r`` spatial factors of 2-D kernels, from :func:`separable_factors`.

    ``kernel[:, :, *i] ≈ Σ_j columns[:, j, *i] ⊗ rows[j, :, *i]`` for every trailing index
    ``i``; each singular value is split evenly (``√σ``) between its column and its row, and the
    sign is fixed so that the largest entry of each column is positive.  A NamedTuple, so it
    passes through ``jax.jit`` and ``jax.vmap`` (which add their batch axis in front of each
    field).

    Attributes:
      columns: ``[k1, r, *trailing]``, the factors along the first spatial axis.
      rows: ``[r, k2, *trailing]``, the factors along the second spatial axis.
      singular_values: ``[min(k1, k2), *trailing]``, all of them, in decreasing order.
      rank: ``[*trailing]`` int32, the numerical rank: singular values above ``tol``.
      error: ``[*trailing]``, the Frobenius norm of ``kernel − reconstruct()``; by Eckart–Young
        the smallest any rank-``r`` factorisation reaches, ``√(σ²_{r+1} + …)``.
    """

    columns: jax.Array
    rows: jax.Array
    singular_values: jax.Array
    rank: jax.Array
    error: jax.Array

    @property
    def terms(self) -> int:
        """The number ``r`` of rank-1 terms kept."""
        return self.columns.shape[1]

    def reconstruct(self) -> jax.Array:
        """The rank-``r`` kernel ``[k1, k2, *trailing]`` the factors multiply out to."""
        return jnp.einsum("aj...,jb...->ab...", self.columns, self.rows)

    def depthwise_kernels(self) -> tuple[jax.Array, jax.Array]:
        """Rank-1 factors as :func:`spatial_separable_conv` kernels for the per-channel case.

        The trailing dims are flattened to ``C`` channels, giving ``([k1, 1, C], [k2, 1, C])``
        for ``spatial_separable_conv(x, kernels, groups=C)`` on ``x: [..., C]``.  For a depthwise
        kernel ``[k1, k2, 1, C]`` (depth multiplier 1) of rank 1 in every channel, that equals
        ``depthwise_conv(x, kernel)``.

        >>> import jax.numpy as jnp, convjax
        >>> sobel = jnp.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
        >>> column, row = convjax.separable_factors(sobel, rank=1).depthwise_kernels()
        >>> column.shape, row.shape
        ((3, 1, 1), (3, 1, 1))
        """
        if self.terms != 1:
            raise ValueError(
                f"SeparableFactors.depthwise_kernels: needs rank-1 factors, got {self.terms} "
                f"terms; call separable_factors(kernel, rank=1)."
            )
        channels = math.prod(self.columns.shape[2:])
        return (
            self.columns.reshape(self.columns.shape[0], 1, channels),
            self.rows.reshape(self.rows.shape[1], 1, channels),
        )


@public_function("kernel_2d")
def separable_factors(
    kernel_2d: jax.Array, *, rank: int | None = None, tol: float | None = None
) -> SeparableFactors:
    """Spatial factors of 2-D kernels by SVD: the best rank-``r`` sum of outer products.

    For every trailing index, ``kernel[:, :, *i] = U Σ Vᵀ`` and the first ``r`` terms give
    ``columns = U_r √Σ_r`` and ``rows = √Σ_r V_rᵀ``.  A rank-1 kernel factors exactly: the Sobel
    kernel is ``[1, 2, 1]ᵀ · [1, 0, −1]`` (up to a scale moved between the two), so a
    :func:`spatial_separable_conv` computes it with 6 weights instead of 9.  Otherwise the
    factors are the best rank-``r`` approximation in the Frobenius norm (Eckart–Young), and
    ``error`` is the norm of what is left, the tail singular values.

    Differentiable where the singular values are distinct (as the SVD is).

    Args:
      kernel_2d: ``[k1, k2, *trailing]``, floating; factored independently for every trailing
        index (e.g. ``[k1, k2, 1, C]``, a depthwise kernel, per channel).
      rank: the number of rank-1 terms ``r`` to keep, ``1 <= r <= min(k1, k2)``; ``None`` keeps
        all ``min(k1, k2)`` (an exact factorisation).  Must be static under ``jax.jit``.
      tol: singular values above ``tol`` count toward the numerical ``rank``; ``None`` uses
        ``σ_max · max(k1, k2) · eps`` of the kernel's dtype (NumPy's ``matrix_rank`` default).

    Returns:
      A :class:`SeparableFactors` in the kernel's dtype (the SVD runs in float32, or float64
      for float64 kernels).

    >>> import jax.numpy as jnp, convjax
    >>> sobel = jnp.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
    >>> f = convjax.separable_factors(sobel, rank=1)
    >>> int(f.rank), bool(f.error < 1e-6)
    (1, True)
    >>> scale = f.columns[0, 0]  # move the scale to the rows to read the factors
    >>> column, row = f.columns[:, 0] / scale, f.rows[0] * scale
    >>> column.round().astype(int).tolist(), row.round().astype(int).tolist()
    ([1, 2, 1], [1, 0, -1])
    """
    op = "separable_factors"
    check_arrays(op, kernel_2d=kernel_2d)
    shape = tuple(kernel_2d.shape)
    if len(shape) < 2 or any(n < 1 for n in shape):
        raise ValueError(
            f"{op}: kernel_2d must have rank >= 2 ([k1, k2, *trailing]) and sizes >= 1, got "
            f"shape {shape}."
        )
    dtype = np.dtype(kernel_2d.dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{op}: kernel_2d must have a floating dtype (float16, bfloat16, float32, float64), "
            f"got {dtype.name}."
        )
    k1, k2 = shape[0], shape[1]
    full = min(k1, k2)
    if rank is None:
        rank = full
    rank = check_int(op, "rank", rank)
    if not 1 <= rank <= full:
        raise ValueError(
            f"{op}: rank must be between 1 and min(k1, k2) = min({k1}, {k2}) = {full}, got {rank}."
        )
    if tol is not None:
        tol = check_real(op, "tol", tol)

    return _factors(kernel_2d, rank=rank, tol=tol)


@functools.partial(jax.jit, static_argnames=("rank", "tol"))
def _factors(kernel_2d, *, rank, tol):
    """:func:`separable_factors` of a checked kernel, as one program (an eager call compiles
    once)."""
    dtype = np.dtype(kernel_2d.dtype)
    (k1, k2), trailing = kernel_2d.shape[:2], tuple(kernel_2d.shape[2:])
    full = min(k1, k2)
    compute = np.float64 if dtype == np.float64 else np.float32
    matrices = jnp.moveaxis(kernel_2d.astype(compute).reshape(k1, k2, -1), -1, 0)  # [T, k1, k2]
    u, s, vt = jnp.linalg.svd(matrices, full_matrices=False)  # [T, k1, m], [T, m], [T, m, k2]
    # Fix the SVD's sign freedom: the largest-magnitude entry of each column is positive.
    pivot = jnp.take_along_axis(u, jnp.argmax(jnp.abs(u), axis=1, keepdims=True), axis=1)
    sign = jnp.where(pivot < 0, -1.0, 1.0).astype(compute)  # [T, 1, m]
    u, vt = u * sign, vt * jnp.moveaxis(sign, 1, 2)
    root = jnp.sqrt(s[:, :rank])
    columns = u[:, :, :rank] * root[:, None, :]  # [T, k1, r]
    rows = root[:, :, None] * vt[:, :rank, :]  # [T, r, k2]
    residual = matrices - columns @ rows
    error = jnp.sqrt(jnp.sum(residual * residual, axis=(1, 2)))
    threshold = s[:, 0] * (max(k1, k2) * float(jnp.finfo(dtype).eps)) if tol is None else tol
    numerical_rank = jnp.sum(s > jnp.reshape(threshold, (-1, 1)), axis=1).astype(jnp.int32)

    def back(a, *spatial):  # [T, *spatial] -> [*spatial, *trailing] in the kernel's dtype
        a = jnp.moveaxis(a, 0, -1).reshape(*spatial, *trailing)
        return a.astype(dtype)

    return SeparableFactors(
        columns=back(columns, k1, rank),
        rows=back(rows, rank, k2),
        singular_values=back(s, full),
        rank=jnp.moveaxis(numerical_rank, 0, -1).reshape(trailing),
        error=back(error),
    )
