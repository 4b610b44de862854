"""Sharded convolutions: each device computes its block of the output from its block of the
input and a halo received from the devices beside it.

An input whose type says its batch or spatial axes are sharded over a mesh (explicit axes, the
default of ``jax.make_mesh``) runs every formulation in a ``jax.shard_map``.  For each sharded
spatial axis, split into ``P`` blocks of ``I / P`` rows, the output is split into ``P`` blocks of
``⌈O / P⌉`` rows; device ``p`` needs the rows its output block reads, which the index map says
exactly (``build_index_map``: stride, dilation, padding and its mode, the wrap-around of circular
padding, the mirrored rows of reflect padding).  Rows of its own block it takes locally, rows of
another device's block arrive by ``lax.ppermute``, one message per distance between devices, and
zero padding it fills locally.  It then runs the formulation on the assembled window with no
padding along that axis.  The axes are exchanged one after the other, so corners travel in two
hops.  Nothing is all-gathered: each device receives only the rows its taps read.

An output whose size a mesh axis does not divide (``VALID`` convs, some strides) is computed in
``⌈O / P⌉``-row blocks and cropped; explicit sharding cannot express uneven blocks, so that axis of
the result is then replicated over those devices (an all-gather of the result alone).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from convjax._src import shapes
from convjax._src.checks import check_arrays, check_shape
from convjax._src.formulations.gather import build_index_map
from convjax._src.spec import ConvSpec, Padding, PaddingMode, make_spec

ZERO, FREE = -1, -2  # a window row that must be zero (padding), one no tap reads


@dataclasses.dataclass(frozen=True, eq=False)
class HaloMessage:
    """One ``lax.ppermute`` along a sharded axis: device ``(p + shift) mod P`` sends ``rows`` of
    its block to device ``p``, for every ``p`` in ``pairs``.

    Attributes:
      shift: how many devices ahead (cyclically) the sender is.
      pairs: ``(sender, receiver)`` device pairs, a permutation.
      rows: ``[P, length]`` the block rows each device sends (rows of non-senders unused).
      start: ``[P]`` where the rows of every sender are one run, its first row (then a slice is
        sent), else ``None`` (then the rows are gathered).
    """

    shift: int
    pairs: tuple[tuple[int, int], ...]
    rows: np.ndarray
    start: np.ndarray | None

    @property
    def length(self) -> int:
        return self.rows.shape[1]

    @property
    def receivers(self) -> frozenset[int]:
        return frozenset(r for _, r in self.pairs)


@dataclasses.dataclass(frozen=True, eq=False)
class AxisHalo:
    """How one spatial axis, sharded over mesh axes, is exchanged.

    Attributes:
      dim: the spatial dim (0 for the first spatial axis).
      mesh_axes: the mesh axes that shard it (their device order is the block order).
      shards: ``P``, the number of blocks.
      input_size, input_block: ``I`` and ``I / P``.
      output_size, output_block: ``O`` and ``⌈O / P⌉``.
      window: the rows each device assembles, ``(⌈O / P⌉ − 1)·s + (k − 1)·d + 1``.
      messages: the ppermutes, nearest first.
      layout: the parts (``0``: the own block, else a message's ``shift``) in the order they are
        concatenated, those read earlier in the window first; one zero row follows them.
      assemble: ``[P, window]``: each window row as a row of the layout; zero padding and unread
        rows point at the zero row.
      start: ``[P]`` where every device's window is one run of the layout (zero padding falling
        on buffers that device receives nothing in), its first row; else ``None``.
    """

    dim: int
    mesh_axes: tuple[str, ...]
    shards: int
    input_size: int
    input_block: int
    output_size: int
    output_block: int
    window: int
    messages: tuple[HaloMessage, ...]
    layout: tuple[int, ...]
    assemble: np.ndarray
    start: np.ndarray | None

    @property
    def halo_rows(self) -> int:
        """Rows of input each device receives along this axis (the most any device receives)."""
        return sum(m.length for m in self.messages)

    @property
    def sources(self) -> np.ndarray:
        """``[P, window]``: the device each window row comes from (the device itself for its own
        rows), ``-1`` for zero padding and rows no tap reads."""
        lengths = _part_lengths(self.input_block, self.messages)
        part = np.concatenate([np.full(lengths[s], s) for s in self.layout] + [[-1]])
        shift = part[self.assemble]
        device = (np.arange(self.shards)[:, None] + shift) % self.shards
        return np.where(shift < 0, -1, device)

    @property
    def uneven(self) -> bool:
        return self.output_block * self.shards != self.output_size


@dataclasses.dataclass(frozen=True, eq=False)
class HaloPlan:
    """How a sharded convolution's devices exchange their borders: every sharded spatial axis,
    in the order they are exchanged.

    Attributes:
      axes: one :class:`AxisHalo` per sharded spatial axis (none when only the batch is sharded:
        then nothing moves).
      spec: the input's ``PartitionSpec`` over ``[*batch, *spatial, C_in]`` as the devices hold
        it (channels whole: a channel-sharded input is gathered along its channels first).
      mesh: the mesh.
      local_shape: one device's block of the input.
      itemsize: bytes per element.
      batch_ndim: the number of leading batch dims.
    """

    axes: tuple[AxisHalo, ...]
    spec: PartitionSpec
    mesh: object
    local_shape: tuple[int, ...]
    itemsize: int
    batch_ndim: int

    def __repr__(self) -> str:  # the index arrays of every message would run to pages
        return (
            f"HaloPlan({len(self.axes)} sharded spatial axes, spec {self.spec}, local_shape "
            f"{self.local_shape}, halo_bytes {self.halo_bytes})"
        )

    @property
    def halo_bytes(self) -> int:
        """Bytes of input each device receives in the forward conv (the most any device does):
        each axis's halo rows times the bytes of a row, the axes exchanged before it already
        extended to their windows.  The backward pass sends as much back."""
        shape, total = list(self.local_shape), 0
        for axis in self.axes:
            dim = self.batch_ndim + axis.dim
            total += axis.halo_rows * math.prod(shape[:dim] + shape[dim + 1 :]) * self.itemsize
            shape[dim] = axis.window
        return total


def _typed_sharding(x):
    """The sharding ``x``'s type carries, or ``None`` where it names no mesh."""
    sharding = getattr(jax.typeof(x), "sharding", None)
    mesh = getattr(sharding, "mesh", None)
    return sharding if mesh is not None and mesh.shape else None


def mesh_axes(x) -> tuple[tuple[str, ...], ...] | None:
    """The explicit mesh axes sharding each dim of ``x: [*batch, *spatial, C]`` (``()`` for an
    unsharded dim), or ``None`` when no batch or spatial dim is sharded over a mesh axis of more
    than one device."""
    sharding = _typed_sharding(x)
    if sharding is None:
        return None
    mesh = sharding.mesh
    types = dict(zip(mesh.axis_names, mesh.axis_types, strict=True))
    entries = tuple(sharding.spec) + (None,) * (len(x.shape) - len(sharding.spec))
    axes = []
    for entry in entries:
        names = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
        axes.append(tuple(n for n in names if types[n] == AxisType.Explicit))
    if not any(mesh.shape[n] > 1 for names in axes[:-1] for n in names):
        return None
    return tuple(axes)


def _mesh(x):
    """``x``'s mesh: a concrete array's own (eager calls need its devices), else its type's."""
    sharding = getattr(x, "sharding", None)
    if not isinstance(x, jax.core.Tracer) and isinstance(sharding, NamedSharding):
        return sharding.mesh
    return jax.typeof(x).sharding.mesh


@functools.lru_cache(maxsize=256)
def plan(
    spec: ConvSpec, input_shape: tuple[int, ...], dtype, window: tuple[int, ...], axes, mesh
) -> HaloPlan:
    """The exchange for ``spec`` on an input of global ``input_shape`` whose dims are sharded
    over ``axes`` (as :func:`mesh_axes` returns them) of ``mesh``; cached, as every trace of a
    convolution (forward, gradient, each jit) asks again."""
    ndim = spec.ndim
    batch_ndim = len(input_shape) - ndim - 1
    spatial = tuple(input_shape[batch_ndim:-1])
    index = build_index_map(spec, spatial, window)
    shards = [math.prod(mesh.shape[n] for n in names) for names in axes[:-1]] + [1]
    halos = tuple(
        _axis_halo(
            dim,
            axes[batch_ndim + dim],
            shards[batch_ndim + dim],
            index.axes[dim],
            spec.strides[dim],
            spec.dilation[dim],
        )
        for dim in range(ndim)
        if shards[batch_ndim + dim] > 1
    )
    return HaloPlan(
        axes=halos,
        spec=PartitionSpec(*[_entry(names) for names in axes[:-1]], None),
        mesh=mesh,
        local_shape=tuple(n // p for n, p in zip(input_shape, shards, strict=True)),
        itemsize=np.dtype(dtype).itemsize,
        batch_ndim=batch_ndim,
    )


def _entry(names: tuple[str, ...]):
    """A ``PartitionSpec`` entry: ``None``, one axis name, or a tuple of them."""
    return None if not names else names[0] if len(names) == 1 else names


def _axis_halo(dim: int, names, shards: int, index, stride: int, dilation: int) -> AxisHalo:
    """Plan one axis from its :class:`~convjax._src.gather.AxisIndexMap`.  JAX arrays split
    into equal blocks, so ``shards`` divides the input size."""
    reads, size = index.reads, index.size  # reads: [O, k] input rows, `size` for zero padding
    out, k = reads.shape
    block, out_block = size // shards, -(-out // shards)
    window = (out_block - 1) * stride + shapes.effective_window(k, dilation)
    # need[p, e]: the input row device p's window row e holds, or ZERO, or FREE (read by no tap).
    need = np.full((shards, window), FREE, np.int64)
    taps = np.arange(out_block)[:, None] * stride + np.arange(k)[None, :] * dilation
    for p in range(shards):
        first = p * out_block
        count = max(0, min(out_block, out - first))
        need[p, taps[count:].ravel()] = ZERO  # outputs past the end, cropped afterwards
        rows = reads[first : first + count]
        need[p, taps[:count].ravel()] = np.where(rows == size, ZERO, rows).ravel()
    messages = []
    for shift in range(1, shards):
        wanted = {}
        for p in range(shards):
            sender = (p + shift) % shards
            rows = need[p][(need[p] >= 0) & (need[p] // block == sender)] % block
            if rows.size:
                wanted[p] = np.unique(rows)
        if wanted:
            messages.append(_message(shift, shards, block, wanted))
    lengths = _part_lengths(block, messages)
    sources = {0: [(p, p) for p in range(shards)]} | {m.shift: m.pairs for m in messages}

    def mean_row(shift):  # where in the window a part's rows are read, on average
        used = [
            e
            for sender, receiver in sources[shift]
            for e in np.flatnonzero((need[receiver] >= 0) & (need[receiver] // block == sender))
        ]
        return (float(np.mean(used)) if used else 0.0, shift)

    layout = tuple(sorted(lengths, key=mean_row))  # the parts read earlier come first
    offsets = dict(
        zip(layout, np.cumsum([0, *(lengths[s] for s in layout)]).tolist(), strict=False)
    )
    zero_row = sum(lengths.values())
    assemble = np.full((shards, window), zero_row, np.int64)
    for p in range(shards):
        read = need[p] >= 0
        shift = np.where(read, (need[p] // block - p) % shards, -1)
        own = shift == 0
        assemble[p, own] = offsets[0] + need[p, own] % block
        for m in messages:
            mask = shift == m.shift
            if mask.any():  # a message's rows are sorted: the first place each row is sent
                sent = m.rows[(p + m.shift) % shards]
                assemble[p, mask] = offsets[m.shift] + np.searchsorted(sent, need[p, mask] % block)
    return AxisHalo(
        dim=dim,
        mesh_axes=tuple(names),
        shards=shards,
        input_size=size,
        input_block=block,
        output_size=out,
        output_block=out_block,
        window=window,
        messages=tuple(messages),
        layout=layout,
        assemble=assemble,
        start=_window_start(need, assemble, messages, offsets, lengths),
    )


def _part_lengths(block: int, messages) -> dict[int, int]:
    """The rows of each part of the layout: the own block (``0``) and each message's buffer."""
    return {0: block} | {m.shift: m.length for m in messages}


def _message(shift: int, shards: int, block: int, wanted: dict[int, np.ndarray]) -> HaloMessage:
    """The message of one shift: each receiver's rows, sent as one run where they are one."""
    length = max(r.size for r in wanted.values())
    rows = np.zeros((shards, length), np.int64)
    runs = True
    for p, needed in wanted.items():
        sender = (p + shift) % shards
        if needed[-1] - needed[0] + 1 == needed.size:  # one run: send `length` rows around it
            first = min(int(needed[0]), block - length)
            rows[sender] = np.arange(first, first + length)
        else:
            runs = False
            rows[sender] = np.concatenate([needed, np.full(length - needed.size, needed[-1])])
    pairs = tuple(((p + shift) % shards, p) for p in sorted(wanted))
    return HaloMessage(shift, pairs, rows, rows[:, 0].copy() if runs else None)


def _window_start(need, assemble, messages, offsets, lengths) -> np.ndarray | None:
    """Each device's window as one run of the layout, if it is one: the rows it reads
    consecutive, and its zero padding on rows that are zero for it (the zero row, or the buffer
    of a message it receives nothing in, which ``ppermute`` fills with zeros).  ``None``
    otherwise."""
    shards, window = need.shape
    zero_row = sum(lengths.values())
    everyone = frozenset(range(shards))
    zero_for = [everyone] * (zero_row + 1)  # the devices each layout row is zero for
    for row in range(offsets[0], offsets[0] + lengths[0]):
        zero_for[row] = frozenset()
    for m in messages:
        for row in range(offsets[m.shift], offsets[m.shift] + m.length):
            zero_for[row] = everyone - m.receivers
    starts = np.zeros(shards, np.int64)
    for p in range(shards):
        read = need[p] >= 0
        candidates = {
            int(a) - int(e) for e, a in zip(np.flatnonzero(read), assemble[p][read], strict=True)
        }
        if len(candidates) > 1:
            return None
        if not candidates:  # reads nothing: any run of rows that are zero for it
            candidates = set(range(zero_row + 2 - window))
        for start in sorted(candidates):
            rows = start + np.arange(window)
            if (
                rows[0] >= 0
                and rows[-1] <= zero_row
                and all(p in zero_for[r] for r in rows[need[p] == ZERO])
            ):
                starts[p] = start
                break
        else:
            return None
    return starts


def sharding_like(x, shape: Sequence[int]) -> NamedSharding | None:
    """A sharding for an array of ``shape`` (of ``x``'s rank) split like ``x`` along the dims
    whose sizes the mesh axes divide; ``None`` when ``x`` is not sharded.  The primal of a
    transposed conv (or of ``fold``) is built with it."""
    axes = mesh_axes(x)
    if axes is None:
        return None
    mesh = _mesh(x)
    entries = [
        _entry(names) if size % math.prod(mesh.shape[n] for n in names) == 0 else None
        for names, size in zip(axes, shape, strict=True)
    ]
    return NamedSharding(mesh, PartitionSpec(*entries))


def zeros(shape: Sequence[int], dtype, like) -> jax.Array:
    """Zeros of ``shape`` sharded as :func:`sharding_like` says for ``like`` (a tracer's by type,
    a concrete array's on its devices)."""
    sharding = sharding_like(like, shape)
    if sharding is None:
        return jnp.zeros(shape, dtype)
    if isinstance(like, jax.core.Tracer):
        return jnp.zeros(shape, dtype, out_sharding=sharding)
    return jnp.zeros(shape, dtype, device=sharding)


def replicated(x):
    """``x`` whole on every device where its type splits it over mesh axes that no halo plan
    covers (channels, a kernel's axes): a convolution contracts over the channels."""
    sharding = _typed_sharding(x)
    if sharding is None or all(entry is None for entry in sharding.spec):
        return x
    return jax.sharding.reshard(x, NamedSharding(sharding.mesh, PartitionSpec()))


def like(x, y):
    """``x`` resharded to ``y``'s type where both are sharded and differ (a transposed conv's
    input against its forward conv's output, replicated along an axis no mesh axis divides)."""
    target = _typed_sharding(y)
    if mesh_axes(x) is None or target is None:
        return x
    return _respec(x, target.mesh, target.spec)


def apply(
    x: jax.Array,
    spec: ConvSpec,
    window: Sequence[int],
    local: Callable[..., jax.Array],
    *replicated: jax.Array,
    axes,
) -> jax.Array:
    """``local(block, local_spec, *replicated)`` on every device's block of ``x`` extended by its
    halo, in one ``jax.shard_map``; ``local_spec`` is ``spec`` without the padding of the sharded
    axes (the halo holds it).  The result, ``[*batch, *out_spatial, features]``, is sharded as
    ``x`` along batch and spatial dims; ``replicated`` operands (a kernel) are whole on every
    device, and their gradients are summed over the devices."""
    mesh = _mesh(x)
    batch_ndim = x.ndim - spec.ndim - 1
    halo = plan(spec, tuple(x.shape), np.dtype(x.dtype), tuple(window), axes, mesh)
    sharded = {axis.dim for axis in halo.axes}
    local_spec = dataclasses.replace(
        spec,
        padding=tuple((0, 0) if d in sharded else p for d, p in enumerate(spec.padding)),
    )

    def block(xb, *rb):
        for axis in halo.axes:
            xb = _exchange(xb, axis, batch_ndim + axis.dim)
        return local(xb, local_spec, *rb)

    y = _on_devices(block, mesh, halo.spec, (x,), replicated)
    uneven = [axis for axis in halo.axes if axis.uneven]
    if uneven:
        dims = {batch_ndim + axis.dim for axis in uneven}
        entries = [None if i in dims else e for i, e in enumerate(halo.spec)]
        y = jax.sharding.reshard(y, NamedSharding(mesh, PartitionSpec(*entries)))
        crop = [slice(None)] * y.ndim
        for axis in uneven:
            crop[batch_ndim + axis.dim] = slice(0, axis.output_size)
        y = y[tuple(crop)]
    return y


def per_batch(
    fn: Callable[..., jax.Array], x: jax.Array, *replicated, ndim: int, split: Sequence = ()
):
    """``fn(block, *split_blocks, *replicated)`` on every device's batch block of ``x: [*batch,
    *spatial, C]`` with whole spatial axes (gathered first where they are sharded), for
    computations global over the spatial axes (the Wiener filter's FFTs, deformable sampling);
    the ``split`` operands, with ``x``'s batch dims first, are split along them alike.  The
    result, of ``x``'s rank, is sharded like ``x`` where its sizes allow.  ``x`` itself where it
    is not sharded."""
    axes = mesh_axes(x)
    if axes is None:
        return fn(x, *split, *replicated)
    mesh = _mesh(x)
    batch_ndim = len(x.shape) - ndim - 1
    spec = PartitionSpec(*[_entry(names) for names in axes[:batch_ndim]])
    y = _on_devices(fn, mesh, spec, (x, *split), replicated)
    return jax.sharding.reshard(y, sharding_like(x, y.shape))


def _on_devices(fn: Callable[..., jax.Array], mesh, spec: PartitionSpec, split, replicated):
    """``fn(*split_blocks, *replicated)`` in a ``jax.shard_map`` with the ``split`` operands
    split as ``spec`` (and the result split the same way) and the ``replicated`` operands whole
    on every device."""
    varying = tuple(
        name for entry in spec if entry for name in ((entry,) if isinstance(entry, str) else entry)
    )

    def block(*operands):
        blocks, rb = operands[: len(split)], operands[len(split) :]
        # The replicated operands meet every device's block: cast them varying over the same
        # mesh axes (the transpose of the cast psums their gradients over those axes).
        return fn(*blocks, *[lax.pcast(r, varying, to="varying") for r in rb])

    replicated = tuple(_respec(r, mesh, PartitionSpec()) for r in replicated)
    return jax.shard_map(
        block,
        mesh=mesh,
        in_specs=(*(spec for _ in split), *(PartitionSpec() for _ in replicated)),
        out_specs=spec,
    )(*(_respec(a, mesh, spec) for a in split), *replicated)


def _respec(x, mesh, spec: PartitionSpec):
    """``x`` resharded to ``spec`` where its type says otherwise (a kernel sharded over the
    mesh, channels sharded)."""
    current = tuple(jax.typeof(x).sharding.spec)
    wanted = tuple(spec)
    if current + (None,) * (len(wanted) - len(current)) == wanted + (None,) * (
        len(current) - len(wanted)
    ):
        return x
    return jax.sharding.reshard(x, NamedSharding(mesh, spec))


def _exchange(x: jax.Array, axis: AxisHalo, dim: int) -> jax.Array:
    """Device ``p``'s block of ``x`` extended along ``dim`` to its window: own rows, rows from
    other devices by ``ppermute``, zero padding."""
    me = lax.axis_index(axis.mesh_axes)
    name = axis.mesh_axes if len(axis.mesh_axes) > 1 else axis.mesh_axes[0]
    parts = {0: x}
    for message in axis.messages:
        if message.start is not None:
            sent = lax.dynamic_slice_in_dim(
                x, jnp.asarray(message.start, jnp.int32)[me], message.length, axis=dim
            )
        else:
            sent = jnp.take(x, jnp.asarray(message.rows, jnp.int32)[me], axis=dim)
        parts[message.shift] = lax.ppermute(sent, name, message.pairs)
    zero = jnp.zeros((*x.shape[:dim], 1, *x.shape[dim + 1 :]), x.dtype)
    layout = jnp.concatenate([parts[shift] for shift in axis.layout] + [zero], axis=dim)
    if axis.start is not None:
        return lax.dynamic_slice_in_dim(
            layout, jnp.asarray(axis.start, jnp.int32)[me], axis.window, axis=dim
        )
    return jnp.take(layout, jnp.asarray(axis.assemble, jnp.int32)[me], axis=dim)


def halo_plan(
    x,
    kernel_shape: Sequence[int],
    *,
    strides: int | Sequence[int] = 1,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: PaddingMode = "zeros",
) -> HaloPlan:
    """What the devices exchange when ``conv(x, kernel, **options)`` runs on a sharded ``x``.

    Every convjax convolution (and its gradient, the transposed conv, the modules) runs on an
    ``x`` sharded over explicit mesh axes along its batch and spatial dims as one
    ``jax.shard_map``: each device receives the rows of its neighbours that its output block
    reads — this plan — and computes that block.

    Args:
      x: a sharded array, or ``jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh,
        spec))`` for one not made yet; ``[*batch, *spatial, C_in]``.
      kernel_shape: ``[*window, C_in // groups, C_out]``.
      strides, padding, dilation, groups, padding_mode: as :func:`convjax.conv` takes them.

    Returns:
      a :class:`HaloPlan`: per sharded axis the messages (rows, from which device), the window
      each device assembles and its output block; ``halo_bytes``, what each device receives.

    >>> import jax, convjax
    >>> mesh = jax.make_mesh((1,), ("rows",))  # one device here (4 would receive 2 rows each)
    >>> x = jax.ShapeDtypeStruct((8, 64, 64, 16), "float32",
    ...                          sharding=jax.NamedSharding(mesh, jax.P(None, "rows")))
    >>> convjax.halo_plan(x, (3, 3, 16, 16), padding="SAME").halo_bytes  # 1 device: no halo
    0
    """
    op = "halo_plan"
    check_arrays(op, x=x)
    kernel_shape = check_shape(op, "kernel_shape", kernel_shape)
    spec = make_spec(
        op,
        x.shape,
        kernel_shape,
        strides=strides,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
    )
    sharding = _typed_sharding(x)
    if sharding is None:
        raise ValueError(
            f"{op}: x must be sharded over a mesh (an array or jax.ShapeDtypeStruct with a "
            f"NamedSharding), got one with sharding {getattr(jax.typeof(x), 'sharding', None)}."
        )
    axes = mesh_axes(x) or ((),) * len(x.shape)
    window = kernel_shape[: spec.ndim]
    return plan(spec, tuple(x.shape), np.dtype(x.dtype), window, axes, sharding.mesh)
