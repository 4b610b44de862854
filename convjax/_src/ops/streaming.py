"""Streaming (cached) causal convolution: chunks in, chunks out, equal to the offline conv.

The first spatial axis is time.  A causal conv's output at time ``t`` reads inputs ``t − (k̂ − 1)
… t``, so a stream only has to remember the last ``k̂ − 1`` input frames (``k̂ = (k − 1)·d + 1``
on the time axis): the :class:`State`.  Each :func:`step` prepends them to the new chunk, runs
an unpadded (in time) convolution, and keeps the last ``k̂ − 1`` frames for the next chunk.
Concatenating the outputs of any chunking (chunks of length 1 and empty chunks included) equals
the offline ``conv(x, kernel, padding=padding)`` with time padded causally, ``(k̂ − 1, 0)``: with
the default ``padding="CAUSAL"``, ``conv(x, kernel, padding="CAUSAL")``.  Steps are pure
functions of pytrees, so they run under ``jit`` and ``lax.scan``.

Chunks may be channels-first (``data_format="channels_first"``: ``[*batch, C, time,
*spatial]``, outputs likewise); the state is channels-last either way, ``[*batch, k̂ − 1,
*spatial, C_in]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from convjax._src import halo, shapes
from convjax._src.checks import check_int, op_name, per_dim, public_function, reported_as
from convjax._src.formulations import Impl
from convjax._src.ops.conv import conv
from convjax._src.ops.layout import (
    DataFormat,
    check_data_format,
    from_channels_last,
    to_channels_last,
)
from convjax._src.spec import Padding, make_spec

_CHUNK = {
    "channels_last": "[*batch, time, *spatial, C_in]",
    "channels_first": "[*batch, C_in, time, *spatial]",
}


class State(NamedTuple):
    """A stream's memory: ``buffer``, the last ``k̂ − 1`` input frames, ``[*batch, k̂ − 1,
    *other spatial, C_in]`` (zeros before the first chunk, as causal padding reads).  It is
    channels-last whatever the chunks' ``data_format``."""

    buffer: jax.Array


def _check_operands(op: str, x_chunk: Any, kernel: Any, data_format: Any) -> int:
    """Types and ranks, before any array work: ``x_chunk`` and ``kernel`` arrays (or
    ``jax.ShapeDtypeStruct``), a known ``data_format``; returns the number of spatial dims."""
    data_format = check_data_format(op, data_format)
    for name, value, layout in (
        ("x_chunk", x_chunk, _CHUNK[data_format]),
        ("kernel", kernel, "[*window, C_in // groups, C_out]"),
    ):
        if not hasattr(value, "shape") or not hasattr(value, "dtype"):
            raise TypeError(f"{op}: {name} must be an array {layout}, got {type(value).__name__}.")
    ndim = len(kernel.shape) - 2
    if ndim < 1 or len(x_chunk.shape) < ndim + 1:
        raise ValueError(
            f"{op}: x_chunk must be {_CHUNK[data_format]} and kernel [*window, C_in // groups, "
            f"C_out], got shapes {tuple(x_chunk.shape)} and {tuple(kernel.shape)}."
        )
    return ndim


def _check_channels(op: str, chunk_shape, kernel_shape, groups, data_format: str) -> None:
    """The chunk's channels against the kernel's, in the chunk's own shape and layout (the
    convolution's checks see the state's frames joined to it, channels-last)."""
    ndim = len(kernel_shape) - 2
    groups = check_int(op, "groups", groups, minimum=1)
    expected = kernel_shape[-2] * groups
    first = data_format == "channels_first"
    axis = len(chunk_shape) - ndim - 1 if first else len(chunk_shape) - 1
    if chunk_shape[axis] == expected or chunk_shape[axis] % groups:
        return  # right, or groups that do not divide it: the convolution's checks say so
    other = len(chunk_shape) - 1 if first else len(chunk_shape) - ndim - 1
    hint = ""
    if chunk_shape[other] == expected:
        hint = (
            " Likely: x_chunk is channels-last; drop data_format='channels_first'."
            if first
            else f" Likely: x_chunk is channels-first (axis {other} has {expected} = C_in); "
            f"pass data_format='channels_first'."
        )
    raise ValueError(
        f"{op}: x_chunk must have C_in = kernel.shape[-2] * groups = {kernel_shape[-2]} * "
        f"{groups} = {expected} channels (axis {axis}, {_CHUNK[data_format]}), got shape "
        f"{tuple(chunk_shape)}.{hint}"
    )


def _plan(op: str, x_shape, kernel_shape, dilation, groups, padding):
    """``(span, pads)``: the time span ``k̂`` and one step's ``(lo, hi)`` per spatial axis (none
    in time, whose causal padding the state supplies), checked, naming ``op``.  The checks read
    a chunk of at least one frame: an empty chunk is as valid as any other."""
    ndim = len(kernel_shape) - 2
    dilation = per_dim(op, "dilation", dilation, ndim, minimum=1)
    span = shapes.effective_window(kernel_shape[0], dilation[0])
    # One step convolves the buffer and the chunk: span − 1 + t frames (t >= 1 here).
    full = list(x_shape)
    full[-ndim - 1] = max(full[-ndim - 1], 1) + span - 1
    spec = make_spec(op, full, kernel_shape, padding=padding, dilation=dilation, groups=groups)
    if not isinstance(padding, str) and spec.padding[0] != (span - 1, 0):
        raise ValueError(
            f"{op}: a stream is causal in time (the first spatial axis): its padding entry must "
            f"be (k̂ - 1, 0) = {(span - 1, 0)}, got {spec.padding[0]}; or pass a string for the "
            f"other axes."
        )
    return span, ((0, 0), *spec.padding[1:])


def _channels_last(op: str, x_chunk: Any, ndim: int, data_format: str) -> Any:
    """A chunk (an array or a ``jax.ShapeDtypeStruct``) as channels-last."""
    if isinstance(x_chunk, jax.ShapeDtypeStruct):
        return jax.eval_shape(lambda x: to_channels_last(op, x, ndim, data_format), x_chunk)
    return to_channels_last(op, x_chunk, ndim, data_format)


@public_function("x_chunk", "kernel")
def init(
    x_chunk: Any,
    kernel: Any,
    *,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding: Padding = "CAUSAL",
    data_format: DataFormat = "channels_last",
) -> State:
    """The state before the first chunk, from the shapes and dtype of a chunk (an array or a
    ``jax.ShapeDtypeStruct``, of any length, 0 included) and of the kernel: zeros, as causal
    padding reads.

    Args:
      x_chunk: a chunk as :func:`step` takes it.
      kernel: ``[*window, C_in // groups, C_out]``.
      dilation, groups, padding: as :func:`step` takes them.
      data_format: the chunks' layout, ``"channels_last"`` (``[*batch, time, *spatial, C]``)
        or ``"channels_first"`` (``[*batch, C, time, *spatial]``); the state is channels-last
        either way.

    >>> import jax.numpy as jnp, convjax
    >>> state = convjax.streaming.init(jnp.zeros((2, 1, 4)), jnp.zeros((3, 4, 8)), dilation=2)
    >>> state.buffer.shape  # (k - 1) * d = 4 frames of history
    (2, 4, 4)
    """
    op = op_name("streaming.init")
    ndim = _check_operands(op, x_chunk, kernel, data_format)
    _check_channels(op, x_chunk.shape, kernel.shape, groups, data_format)
    x = _channels_last(op, x_chunk, ndim, data_format)
    span, _ = _plan(op, x.shape, kernel.shape, dilation, groups, padding)
    shape = list(x.shape)
    shape[-ndim - 1] = span - 1
    return State(halo.zeros(shape, x.dtype, like=x))


@public_function("x_chunk", "kernel")
def step(
    state: State,
    x_chunk: jax.Array,
    kernel: jax.Array,
    *,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding: Padding = "CAUSAL",
    impl: Impl = "auto",
    data_format: DataFormat = "channels_last",
) -> tuple[jax.Array, State]:
    """``(y_chunk, next state)``: the causal conv's outputs for the frames of ``x_chunk``.

    Args:
      state: a :class:`State`, from :func:`init` or the previous step.
      x_chunk: ``[*batch, t, *spatial, C_in]``, any ``t`` (1 included; an empty chunk gives an
        empty output and the same state).
      kernel: ``[*window, C_in // groups, C_out]``; the first window entry spans time.
      dilation, groups, impl: as :func:`convjax.conv` takes them (stride 1).
      padding: the offline conv's padding: a string (``"CAUSAL"``, the default, or e.g.
        ``"SAME"``) applies to the axes after time, which is causal whatever it says; pairs
        (one per spatial dim) must pad time ``(k̂ − 1, 0)``.
      data_format: ``"channels_last"`` (default) or ``"channels_first"``: ``x_chunk`` is then
        ``[*batch, C_in, t, *spatial]`` and ``y_chunk`` ``[*batch, C_out, t, *out_spatial]``;
        the state stays channels-last.

    Returns:
      ``y_chunk``: ``[*batch, t, *out_spatial, C_out]``, and the next state.

    >>> import jax, jax.numpy as jnp, convjax
    >>> x = jax.random.normal(jax.random.key(0), (1, 10, 2))
    >>> k = jax.random.normal(jax.random.key(1), (3, 2, 2))
    >>> state = convjax.streaming.init(x[:, :1], k, dilation=2)
    >>> chunks = []
    >>> for t in range(10):  # one frame at a time
    ...     y, state = convjax.streaming.step(state, x[:, t : t + 1], k, dilation=2)
    ...     chunks.append(y)
    >>> offline = convjax.conv(x, k, padding="CAUSAL", dilation=2)
    >>> bool(jnp.allclose(jnp.concatenate(chunks, axis=1), offline, atol=1e-5))
    True
    """
    op = op_name("streaming.step")
    if not isinstance(state, State):
        raise TypeError(
            f"{op}: state must be a streaming.State (from streaming.init, a layer's "
            f"init_stream, or the previous step), got {type(state).__name__}."
        )
    if not hasattr(state.buffer, "shape") or not hasattr(state.buffer, "dtype"):
        raise TypeError(
            f"{op}: state.buffer must be an array (make the state with streaming.init), got "
            f"{type(state.buffer).__name__}."
        )
    ndim = _check_operands(op, x_chunk, kernel, data_format)
    _check_channels(op, x_chunk.shape, kernel.shape, groups, data_format)
    x = to_channels_last(op, x_chunk, ndim, data_format)
    span, pads = _plan(op, x.shape, kernel.shape, dilation, groups, padding)
    time_axis = x.ndim - ndim - 1
    expected = list(x.shape)
    expected[time_axis] = span - 1
    if tuple(state.buffer.shape) != tuple(expected) or state.buffer.dtype != x.dtype:
        raise ValueError(
            f"{op}: state.buffer must be {tuple(expected)} {x.dtype} (channels-last) for this "
            f"chunk and kernel (the last (k - 1) * dilation frames), got "
            f"{tuple(state.buffer.shape)} {state.buffer.dtype}; make it with streaming.init."
        )

    def run(full):
        with reported_as(op):
            return conv(full, kernel, padding=pads, dilation=dilation, groups=groups, impl=impl)

    if x.shape[time_axis] == 0:  # nothing new: an empty output, the same state
        one_frame = list(x.shape)
        one_frame[time_axis] = span
        out = jax.eval_shape(run, jax.ShapeDtypeStruct(one_frame, x.dtype))
        shape = list(out.shape)
        shape[time_axis] = 0
        return from_channels_last(jnp.zeros(shape, out.dtype), ndim, data_format), state
    full = jnp.concatenate([state.buffer, x], axis=time_axis)
    y = run(full)
    keep = full.shape[time_axis] - (span - 1)
    buffer = jax.lax.slice_in_dim(full, keep, full.shape[time_axis], axis=time_axis)
    return from_channels_last(y, ndim, data_format), State(buffer)
