r"""Deformable convolution (DCN v1 and v2): each tap reads the input at a fractional displacement
from its place in the window, learned per output position, by N-linear interpolation.

For output ``o``, kernel tap ``t`` and offset group ``q`` the sample is taken at

    p = o·s − lo + t·d + Δ[o, q, t]          (per spatial axis; ``o·s − lo + t·d`` is the gather
                                              path's index map, ``position[o, t]``)

and read as ``Σ_z w_z(p) · x[⌊p⌋ + z]`` over the ``2^N`` corners ``z ∈ {0, 1}^N`` of the cell
that holds ``p``, with weights ``w_z(p) = Π_a (z_a ? f_a : 1 − f_a)`` for ``f = p − ⌊p⌋``; a
corner outside the input reads zero (as torchvision's ``deform_conv2d`` does).  The samples,
times the modulation mask where there is one (DCN v2), are the patches of a convolution and are
contracted with the kernel as the gather formulation contracts its patches.

Computation: the corner indices and weights of one block of outputs are computed from the
offsets, the corner values gathered once (``[b, *o, K, G, 2^N, C / G]``), summed with their
weights, and the ``[b, *o, *window, C_in]`` patches contracted with the kernel in one
``einsum``.  Gradients are JAX's through that gather (a scatter-add for ``x``), the weights (for
the offsets and the mask) and the contraction (for the kernel); the weighted sum over the corners
has its own JVP only so that a corner of weight zero is read in the derivative in the offsets
(the one-sided derivative on a grid line) while staying linear in ``x`` (a ``where`` on the
weights alone, so that ``jax.linear_transpose`` in ``x`` applies).  The output is computed in
blocks over the batch and the output positions under a memory budget, each block in a
``lax.map`` and rematerialised for the backward pass, as the gather formulation does.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

from convjax._src import halo
from convjax._src.checks import (
    DTypeLike,
    PrecisionLike,
    check_arrays,
    check_bool,
    check_dtypes,
    check_int,
    check_precision,
    check_preferred_element_type,
    op_name,
    public_function,
    reported_as,
)
from convjax._src.formulations import Impl
from convjax._src.formulations.base import DEFAULT_MEMORY_BUDGET, accumulation_dtype
from convjax._src.formulations.gather import (
    block_shape,
    build_index_map,
    contract_patches,
    map_blocks,
)
from convjax._src.ops.conv import conv
from convjax._src.ops.layout import (
    DataFormat,
    check_data_format,
    from_channels_last,
    to_channels_last,
)
from convjax._src.spec import ConvSpec, Padding, PaddingMode, check_padding_mode, make_spec


@public_function("x", "kernel", "offsets", "mask")
def deform_conv(
    x: jax.Array,
    kernel: jax.Array,
    offsets: jax.Array,
    *,
    mask: jax.Array | None = None,
    strides: int | Sequence[int] = 1,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    offset_groups: int = 1,
    padding_mode: PaddingMode = "zeros",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    precision: PrecisionLike = None,
    preferred_element_type: DTypeLike | None = None,
    data_format: DataFormat = "channels_last",
) -> jax.Array:
    r"""N-d deformable convolution (DCN v1; DCN v2 with ``mask``), channels last.

    .. math::
        y[b, o, gJ + j] = \sum_t \sum_{c=0}^{C-1} m[b, o, q, t]\,
            \tilde x\big(b,\ o s - lo + t d + \Delta[b, o, q, t],\ gC + c\big)\, k[t, c, gJ + j]

    where ``q = (gC + c) // (C_in / offset_groups)`` is the input channel's offset group and
    ``x̃(b, p, c) = Σ_{z ∈ {0,1}^N} Π_a (z_a ? f_a : 1 − f_a) · x[b, ⌊p⌋ + z, c]`` with
    ``f = p − ⌊p⌋`` is N-linear (bilinear in 2-d) interpolation, each of the ``2^N`` corners
    outside the input reading zero.  ``C = C_in / groups``, ``J = C_out / groups``; the output
    size is :func:`convjax.conv`'s.  With zero offsets and no mask (or a mask of ones) this is
    :func:`convjax.conv` with zero padding.

    Layout.  ``offsets[..., q·K·N + t·N + a]`` is the displacement along spatial axis ``a`` of
    tap ``t`` (row-major over the window, ``K = prod(window)``) in offset group ``q``:
    torchvision's channel order (``Δy`` then ``Δx`` in 2-d), with the channels moved last.
    ``mask[..., q·K + t]`` likewise.  From ``torchvision.ops.deform_conv2d(input, offset, weight,
    mask=mask)``: ``x = moveaxis(input, 1, -1)``, ``offsets = moveaxis(offset, 1, -1)``,
    ``mask = moveaxis(mask, 1, -1)``, ``kernel = convjax.from_torch.conv_kernel(weight)``; or
    pass ``input``, ``offset`` and ``mask`` as they are with ``data_format="channels_first"``.

    Derivatives.  The interpolation is continuous in the offsets but its derivative jumps where a
    coordinate of ``p`` is an integer (a grid line; zero offsets sit on them).  There the
    gradient is the one-sided derivative from above, ``x[⌊p⌋ + 1] − x[⌊p⌋]`` along that axis,
    what JAX's derivative of the ``floor``-based interpolation gives, and torchvision's
    ``deform_conv2d`` gives the same (at the input's edges too: ``x[0]`` at ``p = −1``).
    Gradients with respect to ``x``, ``offsets``, ``mask`` and ``kernel`` are exact elsewhere,
    and every transformation (jit, vmap, grad, jvp, higher orders, and ``jax.linear_transpose``
    in ``x``, ``mask`` or ``kernel``, in each of which the convolution is linear) applies.

    Non-finite values.  A NaN or inf in ``x`` reaches exactly the outputs with a sample whose
    interpolation weight on that cell is nonzero (a corner of weight zero is not read, whatever
    its value: zero offsets read exactly the cells :func:`convjax.conv` reads).  An offset of
    ``±inf`` puts its sample infinitely far outside the input, where it reads zero, as a finite
    ``1e30`` does and as torchvision reads a sample outside the input: it adds nothing to its
    output, and the derivatives in that sample's offsets, its mask value and the cells it would
    read are zero.  A NaN offset makes NaN reach exactly the outputs that read its sample: at its
    output position, the output channels whose kernel reads its offset group's input channels
    (every one with ``groups=1``), beside an infinite offset on another axis too.  A non-finite
    mask value or weight reaches its output as in a product.

    Sharding.  How far a sample reaches is known only from the offsets' values, so no halo of a
    fixed width serves (convjax's halo exchange sizes its messages from the index map alone): an
    ``x`` sharded along spatial axes is gathered along them first, so that every device holds
    whole images, while batch sharding works as is, every device computing its own images from
    its own offsets and mask (split alike along their batch dims, in one ``jax.shard_map``).  The
    result is sharded as ``x`` along batch and spatial dims, like every convjax convolution's.

    Args:
      x: ``[*batch, *spatial, C_in]``, floating.
      kernel: ``[*window, C_in // groups, C_out]``; ``kernel.ndim - 2`` spatial dims (1, 2, 3…).
      offsets: ``[*batch, *out_spatial, offset_groups · K · N]``, x's dtype: ``Δ`` in input
        cells (one per tap, offset group and spatial axis, in the order above).
      mask: ``[*batch, *out_spatial, offset_groups · K]`` or ``None`` (DCN v1, a mask of ones):
        DCN v2's modulation, each sample multiplied by it.
      strides: window step, an int or one per spatial dim.
      padding: as :func:`convjax.conv`: ``"VALID"``, ``"SAME"``, ``"HALF"``, ``"FULL"``,
        ``"CAUSAL"``, ints or ``(lo, hi)`` pairs.  Padding only moves the regular grid: every
        sample outside the input reads zero.
      dilation: kernel dilation, an int or one per spatial dim.
      groups: feature groups, as :func:`convjax.conv`.
      offset_groups: the input channels split into this many contiguous blocks, each sampled
        with its own offsets (torchvision's ``offset_groups``, mmcv's ``deform_groups``).
      padding_mode: ``"zeros"`` only: a displaced sample has no mirrored or wrapped cell.
      memory_budget: bytes the gathered corner values of one block of outputs may take (with
        their cotangent under differentiation); default 512 MiB.
      precision: passed to the contraction.
      preferred_element_type: accumulation / result dtype of the contraction.
      data_format: ``"channels_last"`` (default) or ``"channels_first"``: ``x``, ``offsets``,
        ``mask`` and the result ``[*batch, C, *spatial]`` (torchvision's layouts); kernels keep
        convjax's layout.

    Returns:
      ``[*batch, *out_spatial, C_out]``.

    References: Dai et al., *Deformable Convolutional Networks*, ICCV 2017 (DCN v1); Zhu et al.,
    *Deformable ConvNets v2: More Deformable, Better Results*, CVPR 2019 (DCN v2).

    >>> import jax.numpy as jnp, convjax
    >>> x, kernel = jnp.arange(25.0).reshape(1, 5, 5, 1), jnp.ones((3, 3, 1, 1))
    >>> offsets = jnp.zeros((1, 3, 3, 18))  # 1 offset group · 9 taps · (Δy, Δx)
    >>> bool(jnp.all(convjax.deform_conv(x, kernel, offsets) == convjax.conv(x, kernel)))
    True
    >>> half_a_row_down = offsets.at[..., 0::2].set(0.5)  # every Δy = 0.5
    >>> # x rises by 5 a row: each window sums 9 · 2.5 more than conv's, but in the bottom row
    >>> # the lowest samples lie half outside the input, where x reads zero.
    >>> convjax.deform_conv(x, kernel, half_a_row_down)[0, :, :, 0].tolist()
    [[76.5, 85.5, 94.5], [121.5, 130.5, 139.5], [127.5, 135.0, 142.5]]
    """
    op = op_name("deform_conv")
    check_data_format(op, data_format)
    check_arrays(op, x=x, kernel=kernel, offsets=offsets)
    if mask is not None:
        check_arrays(op, mask=mask)
    ndim = len(kernel.shape) - 2
    first = data_format == "channels_first" and ndim >= 1
    if first:
        x = to_channels_last(op, x, ndim, data_format)
    spec = _checked(
        op,
        x,
        kernel,
        offsets,
        mask,
        strides=strides,
        padding=padding,
        dilation=dilation,
        groups=groups,
        offset_groups=offset_groups,
        padding_mode=padding_mode,
        memory_budget=memory_budget,
        precision=precision,
        preferred_element_type=preferred_element_type,
        channels_first=first,
    )
    if first:
        offsets = jnp.moveaxis(offsets, -ndim - 1, -1)
        mask = None if mask is None else jnp.moveaxis(mask, -ndim - 1, -1)
    y = _deform(
        x,
        kernel,
        offsets,
        mask,
        spec,
        offset_groups,
        memory_budget=memory_budget,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
    return from_channels_last(y, ndim, data_format)


@public_function("x", "kernel", "offset_kernel", "offset_bias")
def deformable_conv(
    x: jax.Array,
    kernel: jax.Array,
    offset_kernel: jax.Array,
    offset_bias: jax.Array,
    *,
    strides: int | Sequence[int] = 1,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    offset_groups: int = 1,
    modulated: bool = True,
    padding_mode: PaddingMode = "zeros",
    impl: Impl = "auto",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    precision: PrecisionLike = None,
    preferred_element_type: DTypeLike | None = None,
    data_format: DataFormat = "channels_last",
) -> jax.Array:
    """A deformable convolution layer's function (DCN v2; DCN v1 with ``modulated=False``): the
    offsets and the mask predicted from ``x`` by a convolution, then :func:`deform_conv`.

    The offset convolution has the layer's window, strides, padding and dilation and no groups
    (as in the DCN v2 paper, its reference code and mmcv's ``ModulatedDeformConv2dPack``), so
    it gives one prediction per output position::

        raw     = conv(x, offset_kernel, strides, padding, dilation) + offset_bias
        offsets = raw[..., :G·K·N]                 # G = offset_groups, K = prod(window)
        mask    = sigmoid(raw[..., G·K·N:])        # the last G·K channels (modulated only)
        y       = deform_conv(x, kernel, offsets, mask=mask, ...)

    A layer initialises ``offset_kernel`` and ``offset_bias`` to zero, so that it starts as the
    plain convolution by ``kernel`` (times 0.5, the sigmoid of zero, when modulated), as DCN v1
    and v2 do.

    Args:
      x: ``[*batch, *spatial, C_in]``.
      kernel: ``[*window, C_in // groups, C_out]``.
      offset_kernel: ``[*window, C_in, G·K·(N + 1)]`` (``G·K·N`` when not modulated): the first
        ``G·K·N`` output channels are the offsets in :func:`deform_conv`'s order, the last
        ``G·K`` the mask before its sigmoid.
      offset_bias: ``[G·K·(N + 1)]`` (``[G·K·N]`` when not modulated).
      strides, padding, dilation, groups, offset_groups: as :func:`deform_conv` takes them.
      modulated: predict a mask too (DCN v2, default) or not (DCN v1).
      padding_mode: ``"zeros"`` only, as :func:`deform_conv`.
      impl: the offset convolution's formulation, as :func:`convjax.conv` takes it.
      memory_budget, precision, preferred_element_type: as :func:`deform_conv` takes them.
      data_format: ``"channels_last"`` (default) or ``"channels_first"`` for ``x`` and the
        result.

    Returns:
      ``[*batch, *out_spatial, C_out]``.

    >>> import jax.numpy as jnp, convjax
    >>> x, kernel = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 6))
    >>> y = convjax.deformable_conv(x, kernel, jnp.zeros((3, 3, 4, 27)), jnp.zeros(27))
    >>> y.shape, bool(jnp.allclose(y, 0.5 * convjax.conv(x, kernel)))  # zero offsets, mask 0.5
    ((2, 6, 6, 6), True)
    """
    op = op_name("deformable_conv")
    check_data_format(op, data_format)
    check_arrays(op, x=x, kernel=kernel, offset_kernel=offset_kernel, offset_bias=offset_bias)
    ndim = len(kernel.shape) - 2
    first = data_format == "channels_first" and ndim >= 1
    if first:
        x = to_channels_last(op, x, ndim, data_format)
    options = {"strides": strides, "padding": padding, "dilation": dilation}
    if check_padding_mode(op, padding_mode) != "zeros":
        raise ValueError(_ZEROS_ONLY.format(op=op, padding_mode=padding_mode))
    make_spec(op, x.shape, kernel.shape, groups=groups, **options)  # the layer's own checks
    offset_groups = check_int(op, "offset_groups", offset_groups, minimum=1)
    modulated = check_bool(op, "modulated", modulated)
    window, c_in = tuple(kernel.shape[:ndim]), x.shape[-1]
    if c_in % offset_groups:
        raise ValueError(
            f"{op}: offset_groups must divide the input channels, but {offset_groups} does not "
            f"divide {c_in}."
        )
    per_tap = offset_groups * math.prod(window)
    channels = per_tap * (ndim + int(modulated))
    rule = f"offset_groups · prod(window) · {ndim + int(modulated)}"
    mask_note = ", with the mask" if modulated else ", no mask"
    expected = (*window, c_in, channels)
    if tuple(offset_kernel.shape) != expected:
        raise ValueError(
            f"{op}: offset_kernel must be [*window, C_in, {rule}] = {expected} (offset_groups "
            f"{offset_groups}, {math.prod(window)} taps, {ndim} axes{mask_note}), got shape "
            f"{tuple(offset_kernel.shape)}."
        )
    if tuple(offset_bias.shape) != (channels,):
        raise ValueError(
            f"{op}: offset_bias must be [{rule}] = {(channels,)}, got shape "
            f"{tuple(offset_bias.shape)}."
        )
    check_dtypes(op, x.dtype, kernel.dtype, kinds=("float",))
    check_dtypes(op, x.dtype, offset_kernel.dtype, "offset_kernel", kinds=("float",))
    check_dtypes(op, x.dtype, offset_bias.dtype, "offset_bias", kinds=("float",))
    check_precision(op, precision)
    check_preferred_element_type(op, preferred_element_type, x.dtype)
    check_memory_budget(op, memory_budget)
    with reported_as(op):
        raw = conv(x, offset_kernel, impl=impl, precision=precision, **options)
        raw = raw + offset_bias.reshape((1,) * (raw.ndim - 1) + (channels,))
        offsets = raw[..., : per_tap * ndim]
        mask = jax.nn.sigmoid(raw[..., per_tap * ndim :]) if modulated else None
        y = deform_conv(
            x,
            kernel,
            offsets,
            mask=mask,
            groups=groups,
            offset_groups=offset_groups,
            padding_mode=padding_mode,
            memory_budget=memory_budget,
            precision=precision,
            preferred_element_type=preferred_element_type,
            **options,
        )
    return from_channels_last(y, ndim, data_format) if first else y


_ZEROS_ONLY = (
    "{op}: padding_mode must be 'zeros' (every sample outside the input reads zero; a displaced "
    "sample has no mirrored, replicated or wrapped cell to read), got {padding_mode!r}."
)


def _checked(
    op: str,
    x,
    kernel,
    offsets,
    mask,
    *,
    strides,
    padding,
    dilation,
    groups,
    offset_groups,
    padding_mode,
    memory_budget,
    precision,
    preferred_element_type,
    channels_first: bool,
) -> ConvSpec:
    """Every check of :func:`deform_conv`'s operands and options (``x`` channels-last, the
    offsets and mask still in the caller's layout); the convolution's spec."""
    if check_padding_mode(op, padding_mode) != "zeros":
        raise ValueError(_ZEROS_ONLY.format(op=op, padding_mode=padding_mode))
    spec = make_spec(
        op,
        x.shape,
        kernel.shape,
        strides=strides,
        padding=padding,
        dilation=dilation,
        groups=groups,
    )
    check_dtypes(op, x.dtype, kernel.dtype, kinds=("float",))
    check_precision(op, precision)
    check_preferred_element_type(op, preferred_element_type, x.dtype)
    offset_groups = check_int(op, "offset_groups", offset_groups, minimum=1)
    check_memory_budget(op, memory_budget)
    ndim = spec.ndim
    c_in, window = x.shape[-1], tuple(kernel.shape[:ndim])
    if c_in % offset_groups:
        raise ValueError(
            f"{op}: offset_groups must divide the input channels, but {offset_groups} does not "
            f"divide {c_in}."
        )
    batch = tuple(x.shape[: x.ndim - ndim - 1])
    out = spec.output_spatial(x.shape[-ndim - 1 : -1], window)
    taps = math.prod(window)
    operands = [("offsets", offsets, ndim), ("mask", mask, None)]
    for name, array, axes in operands:
        if array is None:
            continue
        rule, values = "offset_groups · prod(window)", f"{offset_groups} · {taps}"
        if axes is not None:
            rule, values = f"{rule} · ndim", f"{values} · {axes}"
        channels = offset_groups * taps * (axes or 1)
        if channels_first:
            layout, expected = "[*batch, channels, *out_spatial]", (*batch, channels, *out)
        else:
            layout, expected = "[*batch, *out_spatial, channels]", (*batch, *out, channels)
        if tuple(array.shape) != expected:
            raise ValueError(
                f"{op}: {name} must be {layout} with channels = {rule} = {values} = "
                f"{channels}, i.e. shape {expected} for the output {out} of the kernel "
                f"{tuple(kernel.shape)}; got shape {tuple(array.shape)}."
            )
        if np.dtype(array.dtype) != np.dtype(x.dtype):
            raise TypeError(
                f"{op}: {name} must have x's dtype {np.dtype(x.dtype).name}, got "
                f"{np.dtype(array.dtype).name}; cast it, e.g. {name}.astype(x.dtype)."
            )
    return spec


def check_memory_budget(op: str, memory_budget: Any) -> int:
    if isinstance(memory_budget, bool | np.bool_) or not isinstance(
        memory_budget, int | np.integer
    ):
        raise TypeError(
            f"{op}: memory_budget must be an int number of bytes, got {memory_budget!r}."
        )
    if memory_budget < 1:
        raise ValueError(f"{op}: memory_budget must be >= 1 byte, got {memory_budget}.")
    return int(memory_budget)


@functools.partial(
    jax.jit,
    static_argnames=(
        "spec",
        "offset_groups",
        "memory_budget",
        "precision",
        "preferred_element_type",
    ),
)
def _deform(
    x,
    kernel,
    offsets,
    mask,
    spec,
    offset_groups,
    *,
    memory_budget,
    precision,
    preferred_element_type,
):
    """The checked, channels-last deformable convolution of ``x: [*batch, *spatial, C_in]``: empty
    results, batch dims and sharding handled here, :func:`_blocks` computes; one program (an
    eager call compiles once)."""
    ndim = spec.ndim
    batch = x.shape[: x.ndim - ndim - 1]
    window = kernel.shape[:ndim]
    out = spec.output_spatial(x.shape[-ndim - 1 : -1], window)
    dtype = np.dtype(x.dtype if preferred_element_type is None else preferred_element_type)
    if math.prod(batch) == 0 or x.shape[-1] == 0 or kernel.shape[-1] == 0:
        return jnp.zeros((*batch, *out, kernel.shape[-1]), dtype)

    def local(x, offsets, *rest):  # rest: the mask, if any, then the kernel
        *masks, kernel = rest
        mask = masks[0] if masks else None
        flat = (-1, *x.shape[-ndim - 1 :])
        y = _blocks(
            x.reshape(flat),
            kernel,
            offsets.reshape(-1, *offsets.shape[-ndim - 1 :]),
            None if mask is None else mask.reshape(-1, *mask.shape[-ndim - 1 :]),
            spec,
            int(offset_groups),
            memory_budget=int(memory_budget),
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
        return y.reshape(*x.shape[: x.ndim - ndim - 1], *y.shape[1:])

    # Every device takes whole images of its batch block, with their offsets and mask: how far
    # a sample reaches depends on the offsets' values, so no fixed halo serves.
    split = (offsets,) if mask is None else (offsets, mask)
    if halo.mesh_axes(x) is not None:
        return halo.per_batch(local, x, halo.replicated(kernel), ndim=ndim, split=split)
    return local(*(halo.replicated(a) for a in (x, *split, kernel)))


def _blocks(
    x,
    kernel,
    offsets,
    mask,
    spec,
    offset_groups,
    *,
    memory_budget,
    precision,
    preferred_element_type,
):
    """``x: [B, *spatial, C_in]``, ``offsets: [B, *out, G·K·N]``, ``mask: [B, *out, G·K]`` or
    ``None``: the deformable convolution, in blocks over the batch and the output axes (see the
    module docstring)."""
    ndim = spec.ndim
    batch, spatial, c_in = x.shape[0], tuple(x.shape[1:-1]), x.shape[-1]
    window = tuple(kernel.shape[:ndim])
    taps, corners, groups = math.prod(window), 2**ndim, offset_groups
    plan = build_index_map(spec, spatial, window)
    out = plan.output_spatial
    coords = accumulation_dtype(x.dtype)  # positions, weights, sums: float32 or wider
    # One output position's gathered corner values, and their indices and weights.
    unit = taps * corners * (c_in * coords.itemsize + groups * 16)
    block = block_shape((batch, *out), unit, max(memory_budget // 3, 1))
    counts = [-(-n // b) for n, b in zip((batch, *out), block, strict=True)]
    tap_axes = np.unravel_index(np.arange(taps), window)  # tap k's index along each axis
    tables = []  # per axis [blocks, block, K]: o·s − lo + t·d, the index map's positions
    for a, (axis, n, b) in enumerate(zip(plan.axes, counts[1:], block[1:], strict=True)):
        position = axis.position[:, tap_axes[a]]
        filler = np.full((n * b - position.shape[0], taps), -2)  # cropped afterwards
        tables.append(np.concatenate([position, filler]).reshape(n, b, taps))
    padded = [n * b - size for n, b, size in zip(counts, block, (batch, *out), strict=True)]
    x = jnp.pad(x, ((0, padded[0]), *((0, 0),) * (ndim + 1)))
    widths = (*((0, p) for p in padded), (0, 0))
    offsets = jnp.pad(offsets, widths)
    mask = None if mask is None else jnp.pad(mask, widths)

    def contract(xb, offb, maskb, positions):
        patches = _sample(xb, offb, maskb, positions, spatial, groups, coords)
        patches = patches.reshape(*patches.shape[: ndim + 1], *window, c_in)
        return contract_patches(patches, kernel, spec.groups, precision, preferred_element_type)

    if math.prod(counts) == 1:  # one block: the whole problem
        return contract(x, offsets, mask, [t[0] for t in tables])

    def one_block(where):
        starts = [w * b for w, b in zip(where, block, strict=True)]
        xb = lax.dynamic_slice_in_dim(x, starts[0], block[0], axis=0)
        offb = lax.dynamic_slice(offsets, (*starts, 0), (*block, offsets.shape[-1]))
        maskb = (
            None if mask is None else lax.dynamic_slice(mask, (*starts, 0), (*block, taps * groups))
        )
        positions = [jnp.asarray(t)[w] for t, w in zip(tables, where[1:], strict=True)]
        return contract(xb, offb, maskb, positions)

    y = map_blocks(one_block, counts, block)
    return y[(slice(0, batch), *(slice(0, o) for o in out))]


def _sample(x, offsets, mask, positions, spatial, groups, coords):
    """The modulated samples ``[b, *o, K, C_in]`` of one block: ``x: [b, *spatial, C_in]``,
    ``offsets: [b, *o, G·K·N]``, ``mask: [b, *o, G·K]`` or ``None``, ``positions``: per axis
    ``[o_a, K]``, the regular grid's coordinates.  Computed in ``coords`` (float32 or wider).

    Every output position of every image is one point ``P`` here, so that no array has a rank
    above 5 whatever ``N``: XLA:CPU's YNNPACK reductions (jax 0.10, float32) crash the process
    on operands of rank 7, which the corners of a 2-d block's ``[b, *o, K, G, 2, 2]`` were."""
    ndim = len(spatial)
    b, c_in = x.shape[0], x.shape[-1]
    out = offsets.shape[1:-1]
    taps = positions[0].shape[-1]
    points = b * math.prod(out)
    offsets = jnp.swapaxes(offsets.reshape(points, groups, taps, ndim), 1, 2)  # [P, K, G, N]
    index_type = np.int32 if b * math.prod(spatial) < 2**31 else np.int64
    flat = weight = None  # [P, K, G, corners], built axis by axis
    for a, size in enumerate(spatial):
        shape = [1] * (ndim + 2)  # [b, *o, K]
        shape[1 + a], shape[-1] = positions[a].shape
        grid = jnp.asarray(positions[a], coords).reshape(shape)
        grid = jnp.broadcast_to(grid, (b, *out, taps)).reshape(points, taps, 1)
        p = grid + offsets[..., a].astype(coords)  # [P, K, G]
        low = jnp.floor(p)
        frac = p - low
        # Far outside, every corner reads zero: clip before the integer conversion.
        first = jnp.clip(jnp.where(jnp.isnan(low), -2, low), -2, size).astype(index_type)
        index = jnp.stack([first, first + 1], axis=-1)  # [P, K, G, 2]: the two corners
        inside = (index >= 0) & (index < size)
        # An infinite offset samples far outside, where both corners read zero (``frac`` is
        # NaN there, but ``where`` selects the zero, in the value and in every derivative).
        factor = jnp.where(inside, jnp.stack([1 - frac, frac], axis=-1), 0)
        # A NaN offset samples nowhere: its weights, and so its output, are NaN.
        factor = jnp.where(jnp.isnan(p)[..., None], jnp.nan, factor)
        index = jnp.clip(index, 0, size - 1) * math.prod(spatial[a + 1 :])
        if a == 0:
            flat, weight = index, factor
        else:  # corners row-major over the axes: axis a's bit varies faster than earlier ones'
            flat = flat[..., :, None] + index[..., None, :]
            flat = flat.reshape(*flat.shape[:-2], -1)
            weight = weight[..., :, None] * factor[..., None, :]
            weight = weight.reshape(*weight.shape[:-2], -1)
    image = jnp.arange(b, dtype=index_type) * math.prod(spatial)
    flat = flat + jnp.broadcast_to(image[:, None], (b, math.prod(out))).reshape(points, 1, 1, 1)
    channels = jnp.arange(groups, dtype=index_type).reshape(1, 1, groups, 1)
    values = (
        x.reshape(-1, groups, c_in // groups).at[flat, channels].get(mode="promise_in_bounds")
    )  # [P, K, G, 2^N, C / G]
    read = weight != 0  # a corner of interpolation weight zero is not read (mask or not)
    if mask is not None:
        mask = jnp.swapaxes(mask.reshape(points, groups, taps), 1, 2).astype(coords)
        weight = weight * mask[..., None]
    samples = _interpolate(weight, read, values.astype(coords))  # [P, K, G, C / G]
    return samples.astype(x.dtype).reshape(b, *out, taps, c_in)


@jax.custom_jvp
def _interpolate(weight, read, values):
    """``Σ_z weight[..., z] · values[..., z, :]`` over the corners ``z`` (axis ``-2`` of
    ``values``), a corner with ``read`` false contributing zero whatever its value: a NaN or inf
    there must not reach the output (``0 · inf``).  Linear in ``values`` through ``where`` on
    ``read`` alone (which the offsets decide), so that ``jax.linear_transpose`` in ``x`` applies.

    Its derivative in ``weight`` reads the unread corners' finite values: on a grid line (weight
    zero on one side) the derivative in the offsets is the one-sided one, ``x[⌊p⌋ + 1] − x[⌊p⌋]``,
    a non-finite value there read as zero."""
    kept = jnp.where(read[..., None], values, jnp.zeros((), values.dtype))
    return _corner_sum(weight, kept)


def _corner_sum(weight, values):
    """``Σ_z weight[..., z] · values[..., z, :]``, written out as one product and sum per corner
    rather than a reduction: XLA:CPU fuses a reduction over the corners into the contraction
    that follows as one YNNPACK fusion, which made a 3×3 64→64 layer's forward over 56², batch
    4, take 690-750 ms; written out, 45-50 (one process per form, medians of 9)."""
    terms = [values[..., z, :] * weight[..., z, None] for z in range(values.shape[-2])]
    return functools.reduce(operator.add, terms)


@functools.partial(_interpolate.defjvp, symbolic_zeros=True)
def _interpolate_jvp(primals, tangents):
    """``Σ_z dweight_z · finite_z + Σ_z weight_z · read_z · dvalues_z``, where ``finite`` is
    ``values`` with the unread corners' non-finite values read as zero."""
    weight, read, values = primals
    d_weight, _, d_values = tangents
    samples = _interpolate(weight, read, values)
    terms = []
    if type(d_weight) is not SymbolicZero:
        finite = read[..., None] | jnp.isfinite(values)
        finite = jnp.where(finite, values, jnp.zeros((), values.dtype))
        # A contraction, not a corner sum: its transpose in the weights (the offsets' and the
        # mask's gradient) is then a dot, not a reduction over the channels per corner, which
        # YNNPACK ran slowly (the layer above: gradient of a loss 430-520 ms -> 250-275).
        terms.append(jnp.einsum("...zc,...z->...c", finite, d_weight))
    if type(d_values) is not SymbolicZero:
        terms.append(_interpolate(weight, read, d_values))
    if not terms:
        return samples, jnp.zeros_like(samples)
    return samples, terms[0] if len(terms) == 1 else terms[0] + terms[1]
