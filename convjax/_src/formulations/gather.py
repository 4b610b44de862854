"""The explicit convolution: static index maps, one gather, one contraction.

For every spatial axis and every (output position ``o``, kernel tap ``t``) the index map stores

    position[o, t] = o·s − lo + t·d          (a coordinate of the unpadded input, maybe outside)
    index[o, t]    = the input element that padding mode reads there
    valid[o, t]    = False where zero padding is read

Zero padding is a zero cell appended to each spatial axis of the input: an invalid tap reads it,
so padding contributes an exact zero and a NaN or inf anywhere in ``x`` reaches only the outputs
whose windows cover it (as on the lax path).  The N axes' maps are broadcast against each other
to gather ``[B, o₁, …, o_N, k₁, …, k_N, C_in]`` patches, which one ``einsum`` contracts with the
kernel.  No lax convolution is involved.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from convjax._src.formulations.base import DEFAULT_MEMORY_BUDGET, AcceptsAll, contract
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

    @property
    def reads(self) -> np.ndarray:
        """``[out, window]``: ``index`` where valid, else ``size``, the zero cell the gather path
        appends to the axis."""
        return np.where(self.valid, self.index, self.size).astype(np.int32)


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


def block_shape(sizes: Sequence[int], unit_bytes: int, budget: int) -> tuple[int, ...]:
    """Block sizes over ``sizes`` (batch, then the output axes) such that a block of
    ``unit_bytes`` per element takes at most ``budget`` bytes, or one element if that is
    larger: trailing dims whole while they fit, then the next split into as few equal blocks as
    fit, 1 before (so the blocks, in order, tile the array row-major).

    >>> block_shape((4, 10, 10), unit_bytes=8, budget=800)  # everything is 3200 bytes
    (1, 10, 10)
    >>> block_shape((4, 10, 10), unit_bytes=8, budget=320)  # 40 elements: 4 rows, in 3 blocks
    (1, 4, 10)
    """
    fit = max(budget // max(unit_bytes, 1), 1)
    block = [1] * len(sizes)
    for dim in reversed(range(len(sizes))):
        if sizes[dim] <= fit:
            block[dim] = sizes[dim]
            fit //= max(sizes[dim], 1)
        else:
            pieces = -(-sizes[dim] // fit)
            block[dim] = -(-sizes[dim] // pieces)
            break
    return tuple(block)


def map_blocks(one_block, counts: Sequence[int], block: Sequence[int]) -> jax.Array:
    """``one_block(coords) -> [*block, C]`` for every block of a row-major grid of ``counts``
    blocks (``coords``: the block's index along each axis, traced), in a ``lax.map``, each block
    rematerialised for the backward pass (only its inputs are kept); the blocks assembled into
    ``[*(n · b for each axis), C]``, to be cropped by the caller."""

    @jax.checkpoint  # keep only each block's inputs for the backward pass
    def run(index):
        coords, rest = [], index
        for n in reversed(counts):
            coords.append(rest % n)
            rest = rest // n
        return one_block(coords[::-1])

    ndim = len(counts)
    y = lax.map(run, jnp.arange(math.prod(counts)))  # [blocks, *block, C]
    y = y.reshape(*counts, *block, y.shape[-1])
    order = [i for d in range(ndim) for i in (d, ndim + d)]
    y = y.transpose(*order, 2 * ndim)
    return y.reshape(*(n * b for n, b in zip(counts, block, strict=True)), y.shape[-1])


def contract_patches(patches, kernel, groups, precision, preferred_element_type):
    """``[b, *o, *t, C_in]`` patches by a ``[*t, C_in // groups, C_out]`` kernel: ``[b, *o,
    C_out]``."""
    ndim = kernel.ndim - 2
    k = math.prod(kernel.shape[:ndim])
    lead = patches.shape[: patches.ndim - ndim - 1]
    if groups == 1:  # one matrix product, [*lead, K·C_in] @ [K·C_in, C_out]
        y = contract(
            "...k,kj->...j",
            patches.reshape(*lead, -1),
            kernel.reshape(-1, kernel.shape[-1]),
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
        return y
    patches = patches.reshape(*lead, k, groups, patches.shape[-1] // groups)
    kernel = kernel.reshape(k, kernel.shape[-2], groups, kernel.shape[-1] // groups)
    y = contract(
        "...kgc,kcgj->...gj",
        patches,
        kernel,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
    return y.reshape(*lead, -1)


def gather_conv(
    x, kernel, spec: ConvSpec, *, memory_budget, precision=None, preferred_element_type=None
):
    """``x: [B, *spatial, C_in]`` convolved by gather; see the module docstring.

    The output is computed in blocks over the batch and the output axes so that the patches of
    one block take at most ``memory_budget / 3`` bytes, or one output position's patch if that
    is larger: under differentiation a block's patches, their cotangent and one relayout of
    them are live together.  Blocks run in a ``lax.map`` and are rematerialised for the backward
    pass.
    """
    ndim = spec.ndim
    batch, c_in = x.shape[0], x.shape[-1]
    window = kernel.shape[:ndim]
    plan = build_index_map(spec, x.shape[1:-1], window)
    out = plan.output_spatial
    itemsize = np.dtype(x.dtype).itemsize
    unit = math.prod(window) * c_in * itemsize  # one output position's patch
    block = block_shape((batch, *out), unit, max(memory_budget // 3, 1))
    counts = [-(-n // b) for n, b in zip((batch, *out), block, strict=True)]
    # Every axis gets its zero cell; a block past the end of an axis reads it too.
    x = jnp.pad(x, ((0, counts[0] * block[0] - batch), *((0, 1),) * ndim, (0, 0)))
    tables = []
    for axis, n, b in zip(plan.axes, counts[1:], block[1:], strict=True):
        reads = axis.reads
        filler = np.full((n * b - reads.shape[0], reads.shape[1]), axis.size, np.int32)
        tables.append(np.concatenate([reads, filler]).reshape(n, b, -1))

    def contract(xb, reads):
        indexers = []
        for a, r in enumerate(reads):
            shape = [1] * (2 * ndim)
            shape[a], shape[ndim + a] = r.shape
            indexers.append(r.reshape(shape))
        patches = xb[(slice(None), *indexers, slice(None))]  # [b, *o, *t, C_in]
        return contract_patches(patches, kernel, spec.groups, precision, preferred_element_type)

    if math.prod(counts) == 1:
        return contract(x[:batch], [table[0] for table in tables])

    def one_block(coords):
        xb = lax.dynamic_slice_in_dim(x, coords[0] * block[0], block[0], axis=0)
        reads = [jnp.asarray(table)[c] for table, c in zip(tables, coords[1:], strict=True)]
        return contract(xb, reads)

    y = map_blocks(one_block, counts, block)
    return y[(slice(0, batch), *(slice(0, o) for o in out))]


@dataclasses.dataclass(frozen=True)
class GatherBackend(AcceptsAll):
    """Explicit index arithmetic: gather every (output position, tap) pair, then contract.

    Never calls a lax convolution.  The output is computed in blocks over the batch and the
    output axes so that one block's gathered patches, with their cotangent and a relayout under
    differentiation, take at most ``memory_budget`` bytes (one output position's patch at
    least); blocks are rematerialised under differentiation so the backward pass stays within
    the same bound.  Beyond it the scratch holds a few input- and output-sized buffers (the
    zero-padded input, the output in blocks, their cotangents): at most ``memory_budget + 2 ·
    (input bytes + output bytes)`` in all, as XLA's ``memory_analysis`` measures it.

    Attributes:
      memory_budget: bytes one block's patches (and their cotangent) may take (default 512 MiB).
    """

    memory_budget: int = DEFAULT_MEMORY_BUDGET
    name: str = dataclasses.field(default="gather", init=False)
    accepts: ClassVar[str] = "every convolution"
    description: ClassVar[str] = "explicit index maps, one gather and one contraction; no lax conv"

    def __post_init__(self):
        budget = self.memory_budget
        if isinstance(budget, bool | np.bool_) or not isinstance(budget, int | np.integer):
            raise TypeError(
                f"GatherBackend: memory_budget must be an int number of bytes, got {budget!r}."
            )
        if budget < 1:
            raise ValueError(f"GatherBackend: memory_budget must be >= 1 byte, got {budget}.")
        object.__setattr__(self, "memory_budget", int(budget))  # NumPy ints hash as Python's

    def __call__(self, x, kernel, spec, *, precision=None, preferred_element_type=None):
        return gather_conv(
            x,
            kernel,
            spec,
            memory_budget=self.memory_budget,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
