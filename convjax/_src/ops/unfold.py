"""``unfold`` (im2col) and ``fold``, its exact adjoint, for N-d inputs and every padding mode.

``unfold(x, window)`` is ``[*batch, *out_spatial, prod(window) · C]``: for each output position,
the window's input cells (padding read as the padding mode says), tap-major and channel-minor
(entry ``t · C + c`` is channel ``c`` at tap ``t``, taps row-major over the window).  So
``conv(x, k) == unfold(x, window) @ k.reshape(-1, C_out)`` for ``groups=1``, with
``k: [*window, C, C_out]``.  PyTorch's ``F.unfold`` is ``[N, C · prod(window), L]``, channel-major:
``p.reshape(*lead, K, C).swapaxes(-1, -2).reshape(*lead, C · K)`` and moving the spatial axes to
the end gives its layout.

With ``data_format="channels_first"`` the input is ``[*batch, C, *spatial]`` and the patches
``[*batch, prod(window) · C, *out]`` (the same feature order).

``fold`` is the linear transpose of ``unfold`` (``⟨unfold x, p⟩ = ⟨x, fold p⟩``): overlapping
patch entries add up, and padding folds back onto the cells it copied (zero padding drops).
``fold(unfold(x)) / fold(unfold(ones))`` is ``x`` wherever some window covers the cell.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from convjax._src import halo
from convjax._src.checks import (
    check_arrays,
    check_dtype,
    check_shape,
    input_name,
    input_named,
    op_name,
    public_function,
    reported_as,
)
from convjax._src.formulations import gather, taps
from convjax._src.formulations.base import pad
from convjax._src.ops.layout import DataFormat, accepts_data_format
from convjax._src.spec import Padding, PaddingMode, make_spec

UNFOLD_IMPLS = ("auto", "taps", "gather")


@public_function("x")
@accepts_data_format(lambda arguments: len(arguments["window"]))
def unfold(
    x: jax.Array,
    window: Sequence[int],
    *,
    strides: int | Sequence[int] = 1,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    padding_mode: PaddingMode = "zeros",
    impl: str = "auto",
) -> jax.Array:
    """The patches a convolution with this window reads: ``[*batch, *out, prod(window) · C]``.

    Args:
      x: ``[*batch, *spatial, C]``; ``len(window)`` spatial dims.
      window: the window size per spatial dim.
      strides, padding, dilation, padding_mode: as :func:`convjax.conv` takes them.
      impl: ``"taps"`` (one strided slice per tap; the default, ``"auto"``) or ``"gather"`` (the
        gather formulation's index maps).  Both copy values, so a NaN or inf reaches exactly
        the patch entries that read its cell (``lax.conv_general_dilated_patches``, a
        convolution with an identity kernel, would spread it over whole patches).

    >>> import jax, jax.numpy as jnp, convjax
    >>> x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
    >>> k = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
    >>> patches = convjax.unfold(x, (3, 3), strides=2, padding=1)
    >>> patches.shape
    (2, 3, 3, 27)
    >>> bool(jnp.allclose(patches @ k.reshape(-1, 4), convjax.conv(x, k, strides=2, padding=1),
    ...                   atol=1e-5))
    True
    """
    op = op_name("unfold")
    spec, _, _, window = _plan(op, x, window, strides, padding, dilation, padding_mode, impl)
    sharded = halo.mesh_axes(x)
    if sharded is not None:  # each device unfolds its block and halo
        local = functools.partial(_unfold, window=window, impl=impl)
        return halo.apply(x, spec, window, local, axes=sharded)
    return _unfold(x, spec, window=window, impl=impl)


@functools.partial(jax.jit, static_argnames=("spec", "window", "impl"))
def _unfold(x, spec, *, window, impl):
    """The patches of ``x``, as one program (an eager call compiles once)."""
    ndim = spec.ndim
    lead = x.shape[: -ndim - 1]
    channels = x.shape[-1]
    x3 = x.reshape(math.prod(lead), *x.shape[-ndim - 1 :])
    out = spec.output_spatial(x3.shape[1:-1], window)
    name = "taps" if impl == "auto" else impl
    if math.prod(x3.shape) == 0 or math.prod(out) == 0:
        patches = jnp.zeros((x3.shape[0], *out, math.prod(window) * channels), x.dtype)
    else:
        patches = {"taps": _by_slices, "gather": _by_gather}[name](x3, spec, window, out)
    return patches.reshape(*lead, *out, math.prod(window) * channels)


@public_function("patches")
def fold(
    patches: jax.Array,
    input_shape: Sequence[int],
    window: Sequence[int],
    *,
    strides: int | Sequence[int] = 1,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    padding_mode: PaddingMode = "zeros",
    impl: str = "auto",
    data_format: DataFormat = "channels_last",
) -> jax.Array:
    """The adjoint of :func:`unfold`: ``patches: [*batch, *out, prod(window) · C]`` summed back
    into an array of ``input_shape`` (``[*batch, *spatial, C]``), overlaps added.  With
    ``data_format="channels_first"``, ``input_shape`` is ``[*batch, C, *spatial]`` and the
    patches ``[*batch, prod(window) · C, *out]``, as :func:`unfold` gives them.

    >>> import jax.numpy as jnp, convjax
    >>> x = jnp.arange(16.0).reshape(4, 4, 1)
    >>> options = dict(strides=1, padding=1)
    >>> covered = convjax.fold(convjax.unfold(jnp.ones_like(x), (3, 3), **options), x.shape,
    ...                        (3, 3), **options)
    >>> back = convjax.fold(convjax.unfold(x, (3, 3), **options), x.shape, (3, 3), **options)
    >>> bool(jnp.allclose(back / covered, x))
    True
    """
    op = "fold"
    check_arrays(op, patches=patches)
    # fold is JAX's transpose of unfold, and JAX transposes floating and complex functions only.
    check_dtype(op, "patches", patches.dtype, optional=False, kinds=("float", "complex"))
    input_shape = check_shape(op, "input_shape", input_shape)
    x = jax.ShapeDtypeStruct(
        input_shape, patches.dtype, sharding=halo.sharding_like(patches, input_shape)
    )
    forward = functools.partial(
        unfold,
        window=window,
        strides=strides,
        padding=padding,
        dilation=dilation,
        padding_mode=padding_mode,
        impl=impl,
        data_format=data_format,
    )
    with reported_as(op), input_named("input_shape"):  # unfold's checks, under fold's names
        expected = jax.eval_shape(forward, x)
    if patches.shape != expected.shape:
        raise ValueError(
            f"fold: patches must have the shape unfold gives for input_shape {input_shape}, "
            f"{expected.shape}, got {patches.shape}."
        )
    (result,) = jax.linear_transpose(forward, x)(halo.like(patches, expected))
    return result


def _plan(op, x, window, strides, padding, dilation, padding_mode, impl):
    check_arrays(op, x=x)
    if impl not in UNFOLD_IMPLS:
        raise ValueError(f"{op}: impl must be one of {UNFOLD_IMPLS}, got {impl!r}.")
    window = check_shape(op, "window", window, minimum=1)
    ndim = len(window)
    if not ndim:
        raise ValueError(f"{op}: window needs one size >= 1 per spatial dim, got {window}.")
    if x.ndim < ndim + 1:
        raise ValueError(
            f"{op}: {input_name()} must be [*batch, *spatial, C] with {ndim} spatial dims (one "
            f"per window entry), got shape {tuple(x.shape)}."
        )
    spec = make_spec(
        op,
        x.shape,
        (*window, x.shape[-1], 1),
        strides=strides,
        padding=padding,
        dilation=dilation,
        padding_mode=padding_mode,
    )
    return spec, tuple(x.shape[: -ndim - 1]), ndim, tuple(window)


def _by_slices(x, spec, window, out):
    padded = pad(x, spec)
    geometry = taps.Geometry(spec.strides, spec.dilation, 1, window, tuple(out))
    slices = [taps.window_slice(padded, tap, geometry) for tap in np.ndindex(*window)]
    return jnp.stack(slices, axis=-2).reshape(*slices[0].shape[:-1], -1)


def _by_gather(x, spec, window, out):
    ndim = len(window)
    plan = gather.build_index_map(spec, x.shape[1:-1], window)
    x = jnp.pad(x, ((0, 0), *((0, 1),) * ndim, (0, 0)))  # the zero cell zero padding reads
    indexers = []
    for a, axis in enumerate(plan.axes):
        shape = [1] * (2 * ndim)
        shape[a], shape[ndim + a] = axis.reads.shape
        indexers.append(axis.reads.reshape(shape))
    patches = x[(slice(None), *indexers, slice(None))]  # [B, *out, *window, C]
    return patches.reshape(x.shape[0], *out, -1)
