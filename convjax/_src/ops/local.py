r"""The locally connected (unshared) convolution: a different kernel at every output position.

.. math::
    y[b, o, gJ + j] = \sum_t \sum_{c=0}^{C-1} \mathrm{pad}(x)[b,\ o s − lo + t d,\ gC + c]
                      \, k[o, t, c, gJ + j]

with ``C = C_in / groups`` and ``J = C_out / groups``: :func:`~convjax.conv` with the kernel
indexed by the output position as well (Flax's ``ConvLocal``, Keras' ``LocallyConnected2D``,
DeepFace's unshared layers).  The window an output reads is the convolution's, so the patches
are gathered exactly as the gather formulation gathers them, and the contraction is an
``einsum`` over taps and channels with the output position as a batch index.

Two formulations build the patches and contract them with one ``einsum`` (a matrix product per
output position, over ``prod(window) · C_in / groups``):

- ``"gather"``: the gather formulation's index maps (``convjax.index_map``), one gather from the
  input with a zero cell appended to each spatial axis for zero padding, patches ``[b, *out,
  *window, C_in]``; its transpose (the input gradient) is a scatter-add;
- ``"taps"``: one strided slice of the padded input per kernel tap, taken from the input laid
  out ``[*spatial, B, C_in]`` and stacked into ``[*out, b, K, C_in]`` patches, so that the
  output position, the contraction's batch index, leads and only the output is moved back; its
  transpose is a sum of pads.

``impl="auto"`` runs ``"taps"``, the faster (forward + gradient) in every layer measured
(``benchmarks/local_conv.py``: XLA:CPU, 2 cores, float32, ``jax.jit``, medians of 7 alternating
rounds; ms for the forward pass + the gradient of ``Σ y²`` in both operands; Flax's
``ConvLocal``, ``lax.conv_general_dilated_local``, for scale):

=======================================  ===============  ===============  ===============
layer (VALID)                            gather           taps             Flax ConvLocal
=======================================  ===============  ===============  ===============
b32, 24², 16→32, 3×3                     3.9 + 11.1       3.2 + 8.8        14.2 + 60.7
b16, 32², 3→16, 5×5                      1.3 + 5.5        1.0 + 3.0        3.5 + 24.2
b32, 16², 64→64, 3×3                     9.9 + 34.3       5.9 + 36.9       44.7 + 125.0
b64, 16², 32→32, 3×3                     7.7 + 29.2       5.1 + 11.7       33.6 + 91.2
b8, 24², 8→8, 3×3, stride 2              0.15 + 0.46      0.10 + 0.25      0.36 + 3.20
b32, 16², 32→32, 3×3, groups 8           2.5 + 5.1        1.5 + 5.5        (no groups)
b32, 16², 32→32, 3×3, groups 32          8.0 + 2.6        1.7 + 3.6        (no groups)
=======================================  ===============  ===============  ===============

Contracting each tap's slice on its own instead (one batched matrix product per tap, no
stacked patches) measured 1.3–2× slower forward and 2.5–4× slower for the gradient; as fused
multiply-adds per tap and channel, 10–50× slower for the gradient.

The patches of one block of outputs take at most a third of a memory budget (512 MiB; with
``impl=GatherBackend(memory_budget=…)``, ``"gather"`` runs under that budget): past it the output
is computed in blocks over the batch and the output positions, each block in a ``lax.map`` and
rematerialised for the backward pass, as the gather formulation does.  Each kernel entry, and
each input cell through the patches, reaches exactly the outputs that read it, so a NaN or inf
does too (zero padding is an exact zero: ``0 · inf = NaN`` where a padding tap meets an infinite
weight).  Gradients, JVPs, ``vmap`` and ``jit`` are JAX's own through the gather (or the
slices) and the ``einsum``.

:func:`local_conv_transpose` is the exact adjoint of :func:`local_conv` with the same kernel,
computed as ``jax.linear_transpose`` of it, with the result size chosen as
:func:`~convjax.conv_transpose` chooses it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, get_args

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from convjax._src import halo
from convjax._src.checks import (
    DTypeLike,
    PrecisionLike,
    check_arrays,
    check_dtypes,
    check_int,
    check_precision,
    check_preferred_element_type,
    check_shape,
    input_named,
    op_name,
    public_function,
)
from convjax._src.formulations import REGISTRY, GatherBackend
from convjax._src.formulations.base import (
    DEFAULT_MEMORY_BUDGET,
    accumulation_dtype,
    contract,
    pad,
)
from convjax._src.formulations.gather import block_shape, build_index_map, map_blocks
from convjax._src.ops.layout import accepts_data_format
from convjax._src.ops.transpose import transpose_operator
from convjax._src.spec import ConvSpec, Padding, PaddingMode, make_spec

LOCAL_KERNEL = "[*out_spatial, *window, C_in // groups, C_out]"
LOCAL_TRANSPOSE_KERNEL = "[*spatial, *window, C_out // groups, C_in]"
LocalImpl = Literal["auto", "gather", "taps"] | GatherBackend
LOCAL_IMPLS: tuple[str, ...] = get_args(get_args(LocalImpl)[0])
AUTO = "taps"  # the faster on XLA:CPU, forward + gradient: see the module docstring's table


def _spatial_ndim(arguments: dict[str, Any]) -> int:
    """Spatial dims of a local kernel argument, for ``data_format``; a malformed kernel is left
    to the function to report."""
    rank = jnp.ndim(arguments["kernel"])
    if rank < 4 or rank % 2:
        raise TypeError("not a local kernel")
    return (rank - 2) // 2


@public_function("x", "kernel")
@accepts_data_format(_spatial_ndim)
def local_conv(
    x: jax.Array,
    kernel: jax.Array,
    *,
    strides: int | Sequence[int] = 1,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: PaddingMode = "zeros",
    impl: LocalImpl = "auto",
    precision: PrecisionLike = None,
    preferred_element_type: DTypeLike | None = None,
) -> jax.Array:
    r"""Locally connected (unshared) convolution: a different kernel at every output position.

    .. math::
        y[b, o, gJ + j] = \sum_{t} \sum_{c=0}^{C-1} \mathrm{pad}(x)[b,\ o s − lo + t d,\ gC + c]
                          \, k[o, t, c, gJ + j]

    with ``C = C_in / groups`` and ``J = C_out / groups``: the windows of :func:`convjax.conv`
    with the same options, each contracted with its own kernel ``k[o]``.  A kernel equal at
    every position (``k[o] = w``) gives ``convjax.conv(x, w, …)``.

    Flax's ``ConvLocal`` (no groups) stores its kernel as ``[*out_spatial, C_in · K, C_out]``
    (``K = prod(window)``), channel-major: entry ``c · K + t`` is channel ``c`` at tap ``t``.  Its
    kernel is ``k.reshape(*out, K, C_in, C_out).swapaxes(-2, -3).reshape(*out, C_in * K,
    C_out)``; its padding ``"CIRCULAR"`` / ``"REFLECT"`` is ``padding=[((k̂ − 1) // 2, k̂ // 2)]
    * ndim`` with ``padding_mode="circular"`` / ``"reflect"`` and its ``"CAUSAL"`` (1-d)
    ``padding="CAUSAL"``.

    Args:
      x: ``[*batch, *spatial, C_in]``, zero or more leading batch dims.
      kernel: ``[*out_spatial, *window, C_in // groups, C_out]``: one ``[*window, C_in //
        groups, C_out]`` kernel per output position, ``out_spatial`` the output's spatial shape
        (:func:`convjax.output_shape` of ``x`` and the window says what it is).  A layer has
        ``prod(out_spatial) · prod(window) · C_in / groups · C_out`` weights.
      strides: window step, an int or one per spatial dim.
      padding: as :func:`convjax.conv`: ``"VALID"``, ``"SAME"``, ``"HALF"``, ``"FULL"``,
        ``"CAUSAL"``, an int, one int per dim, or one ``(lo, hi)`` pair per dim.
      dilation: kernel dilation (atrous rate), an int or one per spatial dim.
      groups: feature groups; output channel ``g · J + j`` sees only input group ``g``.
      padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
      impl: ``"auto"`` (default, ``"taps"`` on every platform, measured on the CPU), ``"gather"``
        (the gather formulation's index maps) or ``"taps"`` (one strided slice per tap); a
        :class:`convjax.GatherBackend` runs ``"gather"`` with its ``memory_budget``.
      precision: passed to the contraction (``lax.Precision.HIGHEST`` avoids TF32 on GPUs).
      preferred_element_type: accumulation / result dtype.

    Returns:
      ``[*batch, *out_spatial, C_out]``.

    >>> import jax, jax.numpy as jnp, convjax
    >>> x = jnp.ones((2, 6, 6, 3))
    >>> kernel = jax.random.normal(jax.random.key(0), (4, 4, 3, 3, 3, 8))  # 4x4 outputs
    >>> convjax.local_conv(x, kernel).shape
    (2, 4, 4, 8)
    >>> shared = jnp.broadcast_to(kernel[0, 0], kernel.shape)  # the same kernel everywhere
    >>> bool(jnp.allclose(convjax.local_conv(x, shared), convjax.conv(x, kernel[0, 0]),
    ...                   atol=1e-5))
    True
    """
    op = op_name("local_conv")
    check_arrays(op, x=x, kernel=kernel)
    ndim = _kernel_ndim(op, kernel.shape, LOCAL_KERNEL)
    _check_rank(op, x.shape, kernel.shape, ndim, LOCAL_KERNEL)
    formulation, budget = resolve_impl(op, impl)
    shared = kernel.shape[ndim:]
    spec = make_spec(
        op,
        x.shape,
        shared,
        strides=strides,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
        kernel_shown=kernel.shape,
    )
    out = spec.output_spatial(x.shape[-ndim - 1 : -1], shared[:ndim])
    if tuple(kernel.shape[:ndim]) != out:
        raise ValueError(
            f"{op}: kernel must be {LOCAL_KERNEL} with out_spatial the output's spatial shape "
            f"{out} (x spatial {tuple(x.shape[-ndim - 1 : -1])}, window {shared[:ndim]}, "
            f"strides {spec.strides}, padding {spec.padding}, dilation {spec.dilation}): "
            f"expected kernel shape {(*out, *shared)}, got {tuple(kernel.shape)}."
        )
    check_dtypes(op, x.dtype, kernel.dtype)
    check_precision(op, precision)
    check_preferred_element_type(op, preferred_element_type, x.dtype)
    dtype = np.dtype(x.dtype if preferred_element_type is None else preferred_element_type)

    def local(x, kernel):
        return _local(x, kernel, spec, formulation, budget, precision, dtype)

    return _on_devices(local, x, kernel, ndim)


@public_function("x", "kernel")
@accepts_data_format(_spatial_ndim)
def local_conv_transpose(
    x: jax.Array,
    kernel: jax.Array,
    *,
    strides: int | Sequence[int] = 1,
    padding: Padding = 0,
    output_padding: int | Sequence[int] = 0,
    output_shape: int | Sequence[int] | None = None,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: PaddingMode = "zeros",
    impl: LocalImpl = "auto",
    precision: PrecisionLike = None,
    preferred_element_type: DTypeLike | None = None,
) -> jax.Array:
    r"""The transposed locally connected convolution: the adjoint of :func:`local_conv` with the
    same kernel and options.

    For ``A = local_conv(·, kernel, strides=…, padding=…, dilation=…, groups=…,
    padding_mode=…)`` taking the result's shape to ``x``'s, this returns ``Aᵀ x``:

    .. math::
        \langle \mathrm{local\_conv}(z), x \rangle = \langle z,
        \mathrm{local\_conv\_transpose}(x) \rangle \quad \text{for all } z.

    Written out for zero padding, ``r[b, n, gC + c] = Σ_{o, t : o s − lo + t d = n} Σ_j
    x[b, o, gJ + j] · kernel[o, t, c, gJ + j]``: each input position ``o`` scatters its own
    kernel, weighted.  Reflect, replicate and circular padding fold what lands on the border
    back onto the cells padding copied.  The result size is :func:`convjax.conv_transpose`'s:
    ``s (i − 1) + a + k̂ − lo − hi`` per dim for explicit padding (``a`` is
    ``output_padding``), ``s · i`` for ``"SAME"``, or ``output_shape``.

    Args:
      x: ``[*batch, *spatial, C_in]``.
      kernel: ``[*spatial, *window, C_out // groups, C_in]``: the forward local conv's kernel,
        one per position of ``x`` (from ``C_out`` result channels to ``C_in``).
      strides, padding, dilation, groups, padding_mode: the forward conv's.  Default padding
        0, as :func:`convjax.conv_transpose`.
      output_padding: extra size at the high end, an int or one per dim, each ``< max(stride,
        dilation)``.
      output_shape: the result's spatial sizes, instead of ``output_padding``.
      impl: the formulation transposed: ``"auto"``, ``"gather"`` (a scatter-add) or ``"taps"``
        (pads), as :func:`local_conv` takes it.
      precision: passed to the contraction.
      preferred_element_type: the result dtype; both operands are cast to it.

    Returns:
      ``[*batch, *result_spatial, C_out]``.

    >>> import jax, jax.numpy as jnp, convjax
    >>> kernel = jax.random.normal(jax.random.key(0), (2, 2, 3, 3, 1, 4))  # 5x5 -> 2x2
    >>> y = convjax.local_conv(jnp.ones((5, 5, 1)), kernel, strides=2)
    >>> convjax.local_conv_transpose(y, kernel, strides=2).shape  # and back to 5x5
    (5, 5, 1)
    """
    op = op_name("local_conv_transpose")
    check_arrays(op, x=x, kernel=kernel)
    ndim = _kernel_ndim(op, kernel.shape, LOCAL_TRANSPOSE_KERNEL)
    _check_rank(op, x.shape, kernel.shape, ndim, LOCAL_TRANSPOSE_KERNEL)
    spatial = tuple(x.shape[-ndim - 1 : -1])
    if tuple(kernel.shape[:ndim]) != spatial or kernel.shape[-1] != x.shape[-1]:
        raise ValueError(
            f"{op}: kernel must be {LOCAL_TRANSPOSE_KERNEL} with x's spatial shape {spatial} "
            f"and channels {x.shape[-1]} (x shape {tuple(x.shape)}): expected kernel shape "
            f"{(*spatial, *kernel.shape[ndim:-1], x.shape[-1])}, got {tuple(kernel.shape)}."
        )
    formulation, budget = resolve_impl(op, impl)
    operator = transpose_operator(
        op,
        x.shape,
        kernel.shape[ndim:],
        strides=strides,
        padding=padding,
        output_padding=output_padding,
        output_shape=output_shape,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
        impl="gather",  # only its checks: the local formulation is ours
        kernel_layout=LOCAL_TRANSPOSE_KERNEL,
    )
    # JAX transposes no integer function, and this transpose is JAX's.
    check_dtypes(op, x.dtype, kernel.dtype, kinds=("float", "complex"))
    check_precision(op, precision)
    check_preferred_element_type(op, preferred_element_type, x.dtype)
    if preferred_element_type is not None:
        x, kernel = x.astype(preferred_element_type), kernel.astype(preferred_element_type)
    result = operator.input_shape[x.ndim - ndim - 1 :]  # the result's spatial shape and C

    def adjoint(x, kernel):
        shape = (*x.shape[: x.ndim - ndim - 1], *result)
        return _adjoint(x, kernel, operator.spec, shape, formulation, budget, precision)

    return _on_devices(adjoint, x, kernel, ndim)


def resolve_impl(op: str, impl: Any) -> tuple[str, int]:
    """``impl`` as ``(formulation name, memory budget in bytes)``."""
    if isinstance(impl, str):
        if impl not in LOCAL_IMPLS:
            why = f" ({impl!r} computes shared kernels only)" if impl in REGISTRY else ""
            raise ValueError(
                f"{op}: impl must be one of {LOCAL_IMPLS} or a GatherBackend, got {impl!r}{why}."
            )
        return (AUTO if impl == "auto" else impl), DEFAULT_MEMORY_BUDGET
    if isinstance(impl, GatherBackend):
        return "gather", impl.memory_budget
    raise TypeError(
        f"{op}: impl must be one of {LOCAL_IMPLS} or a GatherBackend, got {type(impl).__name__}."
    )


def _kernel_ndim(op: str, kernel_shape: Sequence[int], layout: str) -> int:
    rank = len(kernel_shape)
    if rank < 4 or rank % 2:
        raise ValueError(
            f"{op}: kernel must be {layout}, of even rank 2 · ndim + 2 >= 4, got shape "
            f"{tuple(kernel_shape)} (rank {rank})."
        )
    return (rank - 2) // 2


def _check_rank(op, x_shape, kernel_shape, ndim: int, layout: str) -> None:
    if len(x_shape) < ndim + 1:
        raise ValueError(
            f"{op}: x must have rank >= {ndim + 1} ([*batch, *spatial, C]) for a kernel "
            f"{layout} with {ndim} spatial dims (shape {tuple(kernel_shape)}), got shape "
            f"{tuple(x_shape)}."
        )


# -- computation ----------------------------------------------------------------------------------


def _on_devices(fn, x, kernel, ndim: int):
    """``fn(x, kernel)``; for an ``x`` sharded over a mesh along batch or spatial dims, on every
    device's batch block with whole spatial axes (gathered first: each output position has its
    own kernel, so a block of positions would need its slice of the kernel too), the result
    sharded like ``x`` where its sizes allow.  Sharded channels and kernels are gathered."""
    if halo.mesh_axes(x) is not None:
        return halo.per_batch(fn, x, halo.replicated(kernel), ndim=ndim)
    return fn(halo.replicated(x), halo.replicated(kernel))


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6))
def _local(x, kernel, spec: ConvSpec, formulation: str, budget: int, precision, dtype):
    """``spec``'s local convolution of ``x: [*batch, *spatial, C_in]``, the output positions
    being the first ``kernel.shape[:ndim]`` of the conv's (all of them, but in a transpose whose
    output padding reaches the stride)."""
    ndim = spec.ndim
    out, c_out = tuple(kernel.shape[:ndim]), kernel.shape[-1]
    batch = x.shape[: x.ndim - ndim - 1]
    if math.prod(batch) == 0 or x.shape[-1] == 0 or c_out == 0:
        return jnp.zeros((*batch, *out, c_out), dtype)
    flat = x.reshape(math.prod(batch), *x.shape[-ndim - 1 :])
    acc = accumulation_dtype(x.dtype, None if dtype == x.dtype else dtype)
    y = blocked(flat, kernel, spec, formulation, budget, precision=precision, acc=acc)
    return y.astype(dtype).reshape(*batch, *out, c_out)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6))
def _adjoint(x, kernel, spec, input_shape, formulation, budget, precision):
    """``Aᵀ x`` for the local conv ``A`` of ``spec`` from ``input_shape`` (jitted, so that an
    eager call compiles once)."""

    def forward(z):
        return _local(z, kernel, spec, formulation, budget, precision, np.dtype(x.dtype))

    # An example primal varying over the manual mesh axes x varies over inside a shard_map: a
    # transpose taken against an invariant one would sum the cotangent over those axes.
    example = jnp.zeros_like(x, shape=input_shape)
    (result,) = jax.linear_transpose(forward, example)(x)
    return result


def blocked(x, kernel, spec: ConvSpec, formulation: str, budget: int, *, precision, acc):
    """``x: [B, *spatial, C_in]`` by ``kernel: [*out, *window, C_in // groups, C_out]``, in
    blocks of the batch and the output positions whose patches take at most ``budget / 3``
    bytes (one output position's at least): under differentiation a block's patches, their
    cotangent and one relayout are live together.

    Blocks are equal; where they do not tile an axis, the last starts earlier and overlaps the
    one before it (its repeated outputs are dropped), so no operand is padded to the tiling.
    With the output positions split, the batch blocks are single elements (``block_shape``
    splits one axis and keeps the axes after it whole)."""
    ndim = spec.ndim
    out, window = tuple(kernel.shape[:ndim]), tuple(kernel.shape[ndim : 2 * ndim])
    sizes = (x.shape[0], *out)
    unit = math.prod(window) * x.shape[-1] * np.dtype(x.dtype).itemsize
    block = block_shape(sizes, unit, max(budget // 3, 1))
    counts = tuple(-(-n // b) for n, b in zip(sizes, block, strict=True))
    plan = _FORMULATIONS[formulation](x, spec, window, precision=precision, acc=acc)
    if math.prod(counts) == 1:
        return plan.contract(plan.source, None, out, kernel)
    starts = [
        np.minimum(np.arange(n) * b, size - b)
        for n, b, size in zip(counts, block, sizes, strict=True)
    ]
    whole = block[1:] == out

    def one_block(coords):
        first = [jnp.asarray(s, np.int32)[c] for s, c in zip(starts, coords, strict=True)]
        source = lax.dynamic_slice_in_dim(plan.source, first[0], block[0], plan.batch_axis)
        if whole:
            return plan.contract(source, None, out, kernel)
        zeros = (jnp.zeros((), np.int32),) * (kernel.ndim - ndim)
        kernel_block = lax.dynamic_slice(
            kernel, (*first[1:], *zeros), (*block[1:], *kernel.shape[ndim:])
        )
        return plan.contract(source, first[1:], block[1:], kernel_block)

    y = map_blocks(one_block, counts, block)
    for axis, (n, b, size) in enumerate(zip(counts, block, sizes, strict=True)):
        if n * b != size:  # the last block overlaps the one before by n·b − size
            kept = (slice(None),) * axis
            head = y[(*kept, slice(0, (n - 1) * b))]
            tail = y[(*kept, slice((n - 1) * b + n * b - size, n * b))]
            y = jnp.concatenate([head, tail], axis=axis)
    return y


class _Plan(NamedTuple):
    """A formulation, ready to run on blocks.

    Attributes:
      source: the array blocks are cut from (the input, prepared).
      batch_axis: its batch axis.
      contract: ``contract(source_block, first, sizes, kernel_block)``: ``[b, *sizes, C_out]``,
        the outputs ``first + [0, sizes)`` of the batch block (``first=None``: from 0) with
        their kernels ``kernel_block: [*sizes, *window, C_in // groups, C_out]``.
    """

    source: jax.Array
    batch_axis: int
    contract: Any


def _gather_plan(x, spec: ConvSpec, window, *, precision, acc) -> _Plan:
    """The gather formulation's index maps: the input with a zero cell at the end of each
    spatial axis (what zero padding reads), ``[b, *o, *window, C_in]`` patches gathered from it,
    contracted batch-first."""
    ndim = spec.ndim
    plan = build_index_map(spec, x.shape[1:-1], window)
    tables = [axis.reads for axis in plan.axes]  # [out, window] each

    def contract(source, first, sizes, kernel):
        indexers = []
        for a, (table, size) in enumerate(zip(tables, sizes, strict=True)):
            if first is None:
                reads = jnp.asarray(table[:size])
            else:
                reads = lax.dynamic_slice_in_dim(jnp.asarray(table), first[a], size)
            shape = [1] * (2 * ndim)
            shape[a], shape[ndim + a] = reads.shape
            indexers.append(reads.reshape(shape))
        patches = source[(slice(None), *indexers, slice(None))]  # [b, *o, *window, C_in]
        b, positions = patches.shape[0], math.prod(sizes)
        patches = patches.reshape(b, positions, -1, spec.groups, x.shape[-1] // spec.groups)
        y = _einsum("bp", patches, kernel, spec.groups, precision, acc)
        return y.reshape(b, *sizes, -1)

    return _Plan(jnp.pad(x, ((0, 0), *((0, 1),) * ndim, (0, 0))), 0, contract)


def _taps_plan(x, spec: ConvSpec, window, *, precision, acc) -> _Plan:
    """One strided slice per tap of the padded input, laid out ``[*spatial, B, C_in]`` so that
    the stacked slices are ``[*o, b, K, C_in]``, output positions first: the contraction's batch
    axis leads, and only the output is moved back."""
    ndim = spec.ndim
    spans = [(k - 1) * d + 1 for k, d in zip(window, spec.dilation, strict=True)]

    def contract(source, first, sizes, kernel):
        if first is not None:  # the rows these outputs read
            lengths = [
                (n - 1) * s + span for n, s, span in zip(sizes, spec.strides, spans, strict=True)
            ]
            begin = [f * s for f, s in zip(first, spec.strides, strict=True)]
            zero = jnp.zeros((), np.int32)
            source = lax.dynamic_slice(source, (*begin, zero, zero), (*lengths, *source.shape[-2:]))
        slices = []
        for tap in np.ndindex(*window):
            start = [t * d for t, d in zip(tap, spec.dilation, strict=True)]
            stop = [b + (n - 1) * s + 1 for b, n, s in zip(start, sizes, spec.strides, strict=True)]
            slices.append(
                lax.slice(
                    source, (*start, 0, 0), (*stop, *source.shape[-2:]), (*spec.strides, 1, 1)
                )
            )
        patches = jnp.stack(slices, axis=-2)  # [*o, b, K, C_in]
        b, positions = source.shape[-2], math.prod(sizes)
        patches = patches.reshape(positions, b, -1, spec.groups, x.shape[-1] // spec.groups)
        y = _einsum("pb", patches, kernel, spec.groups, precision, acc)
        return jnp.moveaxis(y.reshape(*sizes, b, -1), -2, 0)

    return _Plan(jnp.moveaxis(pad(x, spec), 0, -2), ndim, contract)


_FORMULATIONS = {"gather": _gather_plan, "taps": _taps_plan}


def _einsum(lead: str, patches, kernel, groups: int, precision, acc):
    """The contraction over taps and channels, batched over the output positions ``p``:
    ``patches`` ``[b, p, K, groups, C_in // groups]`` (``lead="bp"``) or ``[p, b, …]``
    (``lead="pb"``) by ``kernel`` ``[*o, *window, C_in // groups, C_out]``, giving ``[b, p,
    C_out]`` or ``[p, b, C_out]``.  With one group, taps and channels are one contracted axis."""
    positions = patches.shape[lead.index("p")]
    c, c_out = kernel.shape[-2:]
    options = {"precision": precision, "preferred_element_type": acc}
    if groups == 1:  # one matrix product per position, [K · C_in] contracted
        flat = patches.reshape(*patches.shape[:2], -1)
        return contract(
            f"{lead}k,pkj->{lead}j", flat, kernel.reshape(positions, -1, c_out), **options
        )
    kernel = kernel.reshape(positions, -1, c, groups, c_out // groups)
    y = contract(f"{lead}kgc,pkcgj->{lead}gj", patches, kernel, **options)
    return y.reshape(*y.shape[:2], c_out)


# -- counting -------------------------------------------------------------------------------------


class LocalCount(NamedTuple):
    """The size and cost of one locally connected layer.

    Attributes:
      kernel_shape: ``[*out_spatial, *window, C_in // groups, C_out]``.
      params: weights ``prod(out) · prod(window) · C_in / groups · C_out``, plus the bias.
      macs: multiply-adds ``batch · prod(out) · prod(window) · C_in / groups · C_out`` (as many
        as the shared convolution's: only the weights differ per position).
      flops: ``2 · macs``, plus one add per output element with a bias.
    """

    kernel_shape: tuple[int, ...]
    params: int
    macs: int
    flops: int


BIASES = (None, "shared", "local")


def local_layer_count(
    input_shape: Sequence[int],
    window: Sequence[int],
    out_channels: int,
    *,
    strides: int | Sequence[int] = 1,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: PaddingMode = "zeros",
    bias: str | None = None,
) -> LocalCount:
    """Parameters and multiply-adds of :func:`local_conv` on ``input_shape``.

    Args:
      input_shape: ``[*batch, *spatial, C_in]``.
      window: the window size per spatial dim.
      out_channels: ``C_out``.
      strides, padding, dilation, groups, padding_mode: as :func:`local_conv` takes them.
      bias: ``None``, ``"shared"`` (``[C_out]``) or ``"local"`` (``[*out_spatial, C_out]``, as
        Flax's ``ConvLocal``).

    >>> import convjax
    >>> count = convjax.local_layer_count((1, 8, 8, 3), (3, 3), 16, bias="local")
    >>> count.kernel_shape, count.params  # 36 * 27 * 16 weights, 36 * 16 biases
    ((6, 6, 3, 3, 3, 16), 16128)
    >>> count.macs, count.flops
    (15552, 31680)
    """
    op = op_name("local_layer_count")
    input_shape = check_shape(op, "input_shape", input_shape)
    window = check_shape(op, "window", window)
    out_channels = check_int(op, "out_channels", out_channels, minimum=0)
    if bias not in BIASES:
        raise ValueError(f"{op}: bias must be one of {BIASES}, got {bias!r}.")
    groups = check_int(op, "groups", groups, minimum=1)
    ndim = len(window)
    if not ndim or len(input_shape) < ndim + 1:
        raise ValueError(
            f"{op}: input_shape must be [*batch, *spatial, C_in] with one spatial dim per window "
            f"entry ({ndim}), got input_shape {input_shape} and window {window}."
        )
    c_in = input_shape[-1]
    if c_in % groups:
        raise ValueError(
            f"{op}: groups must divide the input channels, but {groups} does not divide {c_in}."
        )
    shared = (*window, c_in // groups, out_channels)
    options = dict(strides=strides, padding=padding, dilation=dilation, padding_mode=padding_mode)
    with input_named("input_shape"):
        spec = make_spec(op, input_shape, shared, groups=groups, **options)
    out = spec.output_spatial(input_shape[-ndim - 1 : -1], window)
    kernel_shape = (*out, *shared)
    biases = {None: 0, "shared": out_channels, "local": math.prod(out) * out_channels}[bias]
    outputs = math.prod(input_shape[: -ndim - 1]) * math.prod(out) * out_channels
    macs = outputs * math.prod(window) * (c_in // groups)
    return LocalCount(
        kernel_shape,
        math.prod(kernel_shape) + biases,
        macs,
        2 * macs + (outputs if bias else 0),
    )
