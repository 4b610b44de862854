"""The explicit convolution: static index maps, one gather, one contraction.

For every spatial axis and every (output position ``o``, kernel tap ``t``) the index map stores

    position[o, t] = o·s − lo + t·d          (a coordinate of the unpadded input, maybe outside)
    index[o, t]    = the input element that padding mode reads there
    valid[o, t]    = False where zero padding is read (a mask, not an index)

The N axes' maps are broadcast against each other to gather ``[B, o₁, k₁, …, o_N, k_N, C_in]``
patches, which one ``einsum`` contracts with the kernel.  No lax convolution is involved.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import string
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from convjax._src.spec import ConvSpec


@dataclasses.dataclass(frozen=True, eq=False)
class AxisIndexMap:
    """Where each (output position, kernel tap) of one spatial axis reads its input.

    Attributes:
      position: ``[out, window]`` int array, ``o·s − lo + t·d``; outside ``[0, size)`` in padding.
      index: ``[out, window]`` int array, the input element read after the padding-mode remap
        (0 where ``valid`` is False).
      valid: ``[out, window]`` bool array, False where the tap reads zero padding.
      size: the input size along this axis.
    """

    position: np.ndarray
    index: np.ndarray
    valid: np.ndarray
    size: int


@dataclasses.dataclass(frozen=True, eq=False)
class IndexMap:
    """The gather path's complete plan: one :class:`AxisIndexMap` per spatial axis."""

    axes: tuple[AxisIndexMap, ...]
    padding_mode: str

    @property
    def input_spatial(self) -> tuple[int, ...]:
        return tuple(axis.size for axis in self.axes)

    @property
    def output_spatial(self) -> tuple[int, ...]:
        return tuple(axis.index.shape[0] for axis in self.axes)

    @property
    def window(self) -> tuple[int, ...]:
        return tuple(axis.index.shape[1] for axis in self.axes)

    def reads(self, output_position: Sequence[int]) -> list[tuple[tuple[int, ...], bool]]:
        """The ``(input index, valid)`` each kernel tap reads for one output position, in tap
        order (row-major over the window).  Invalid taps read zero padding."""
        per_axis = [
            list(zip(axis.index[o], axis.valid[o], strict=True))
            for axis, o in zip(self.axes, output_position, strict=True)
        ]
        reads = []
        for taps in np.ndindex(*self.window):
            entries = [per_axis[a][t] for a, t in enumerate(taps)]
            reads.append((tuple(int(i) for i, _ in entries), all(bool(v) for _, v in entries)))
        return reads


def remap(position: np.ndarray, size: int, padding_mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Map padded coordinates to input indices and a validity mask for one padding mode."""
    inside = (position >= 0) & (position < size)
    if padding_mode == "zeros":
        return np.where(inside, position, 0), inside
    if padding_mode == "replicate":
        index = np.clip(position, 0, size - 1)
    elif padding_mode == "circular":
        index = np.mod(position, size)
    elif padding_mode == "reflect":
        period = max(2 * (size - 1), 1)
        folded = np.mod(position, period)
        index = np.where(folded < size, folded, period - folded)
    else:
        raise ValueError(f"unknown padding_mode {padding_mode!r}")
    return index, np.ones_like(inside)


def build_index_map(
    spec: ConvSpec, input_spatial: Sequence[int], window: Sequence[int]
) -> IndexMap:
    """The index map of ``spec`` applied to an input of ``input_spatial`` by ``window``."""
    axes = []
    out = spec.output_spatial(input_spatial, window)
    for size, k, o, s, (lo, _), d in zip(
        input_spatial, window, out, spec.strides, spec.padding, spec.dilation, strict=True
    ):
        position = np.arange(o)[:, None] * s - lo + np.arange(k)[None, :] * d
        index, valid = remap(position, size, spec.padding_mode)
        axes.append(AxisIndexMap(position, index.astype(np.int32), valid, size))
    return IndexMap(tuple(axes), spec.padding_mode)


def _broadcast_axis(array, axis: int, ndim: int):
    """Place an ``[out, window]`` array at dims ``(2·axis, 2·axis + 1)`` of a ``2·ndim`` grid."""
    shape = [1] * (2 * ndim)
    shape[2 * axis : 2 * axis + 2] = array.shape
    return array.reshape(shape)


def _contract(x, kernel, first_index, first_valid, rest, spec, masked, precision, pet):
    """Gather the patches of one chunk and contract them with the kernel."""
    ndim = spec.ndim
    indices = [first_index, *(jnp.asarray(axis.index) for axis in rest)]
    indexers = [_broadcast_axis(ix, a, ndim) for a, ix in enumerate(indices)]
    patches = x[(slice(None), *indexers, slice(None))]  # [b, o1, k1, ..., oN, kN, C_in]
    if masked:
        valid = [first_valid, *(jnp.asarray(axis.valid) for axis in rest)]
        mask = functools.reduce(
            jnp.logical_and, [_broadcast_axis(v, a, ndim) for a, v in enumerate(valid)]
        )
        patches = patches * mask[None, ..., None].astype(patches.dtype)
    groups = spec.groups
    patches = patches.reshape(*patches.shape[:-1], groups, -1)
    kernel = kernel.reshape(*kernel.shape[:-1], groups, -1)
    letters = iter(string.ascii_letters)
    b, g, c, j = (next(letters) for _ in range(4))
    outs, taps = [], []
    for _ in range(ndim):
        outs.append(next(letters))
        taps.append(next(letters))
    grid = "".join(o + t for o, t in zip(outs, taps, strict=True))
    formula = f"{b}{grid}{g}{c},{''.join(taps)}{c}{g}{j}->{b}{''.join(outs)}{g}{j}"
    y = jnp.einsum(formula, patches, kernel, precision=precision, preferred_element_type=pet)
    return y.reshape(*y.shape[:-2], -1)


def gather_conv(
    x, kernel, spec: ConvSpec, *, memory_budget, precision=None, preferred_element_type=None
):
    """``x: [B, *spatial, C_in]`` convolved by gather; see the module docstring."""
    ndim = spec.ndim
    batch, c_in = x.shape[0], x.shape[-1]
    window = kernel.shape[:ndim]
    plan = build_index_map(spec, x.shape[1:-1], window)
    masked = spec.padding_mode == "zeros" and not all(axis.valid.all() for axis in plan.axes)
    first, rest = plan.axes[0], plan.axes[1:]
    rows = first.index.shape[0]

    # A chunk's patches are live with their cotangent and the mask under differentiation:
    # give each a third of the budget.
    chunk_budget = max(memory_budget // 3, 1)
    itemsize = np.dtype(x.dtype).itemsize
    row_bytes = math.prod(plan.output_spatial[1:]) * math.prod(window) * c_in * itemsize
    if batch * rows * row_bytes <= chunk_budget:
        chunk_batch, chunk_rows = batch, rows
    elif batch * row_bytes <= chunk_budget:
        chunk_batch, chunk_rows = batch, chunk_budget // (batch * row_bytes)
    else:
        chunk_batch, chunk_rows = max(1, chunk_budget // row_bytes), 1

    def contract(xc, first_index, first_valid):
        return _contract(
            xc,
            kernel,
            first_index,
            first_valid,
            rest,
            spec,
            masked,
            precision,
            preferred_element_type,
        )

    if chunk_batch == batch and chunk_rows == rows:
        return contract(x, jnp.asarray(first.index), jnp.asarray(first.valid))

    contract = jax.checkpoint(contract)  # keep only the inputs of each chunk for the backward
    n_rows = -(-rows // chunk_rows)
    extra = n_rows * chunk_rows - rows
    first_index = np.pad(first.index, ((0, extra), (0, 0))).reshape(n_rows, chunk_rows, -1)
    first_valid = np.pad(first.valid, ((0, extra), (0, 0))).reshape(n_rows, chunk_rows, -1)

    def over_rows(xc):
        if n_rows == 1:
            return contract(xc, jnp.asarray(first_index[0]), jnp.asarray(first_valid[0]))
        y = lax.map(lambda iv: contract(xc, *iv), (first_index, first_valid))
        y = jnp.moveaxis(y, 0, 1)  # [b, n_rows, chunk_rows, ...]
        return y.reshape(y.shape[0], n_rows * chunk_rows, *y.shape[3:])[:, :rows]

    n_batch = -(-batch // chunk_batch)
    if n_batch == 1:
        return over_rows(x)
    x = jnp.pad(x, ((0, n_batch * chunk_batch - batch),) + ((0, 0),) * (x.ndim - 1))
    y = lax.map(over_rows, x.reshape(n_batch, chunk_batch, *x.shape[1:]))
    return y.reshape(n_batch * chunk_batch, *y.shape[2:])[:batch]
