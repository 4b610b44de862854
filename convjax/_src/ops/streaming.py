"""Streaming (cached) causal convolution: chunks in, chunks out, equal to the offline conv.

The first spatial axis is time.  A causal conv's output at time ``t`` reads inputs ``t − (k̂ − 1)
… t``, so a stream only has to remember the last ``k̂ − 1`` input frames (``k̂ = (k − 1)·d + 1``
on the time axis): the :class:`State`.  Each :func:`step` prepends them to the new chunk, runs
an unpadded (in time) convolution, and keeps the last ``k̂ − 1`` frames for the next chunk.
Concatenating the outputs of any chunking (chunks of length 1 included) equals the offline
``conv(x, kernel, padding=padding)`` with time padded causally, ``(k̂ − 1, 0)``: with the default
``padding="CAUSAL"``, ``conv(x, kernel, padding="CAUSAL")``.  Steps are pure functions of
pytrees, so they run under ``jit`` and ``lax.scan``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from convjax._src import halo, shapes
from convjax._src.checks import per_dim, reported_as
from convjax._src.formulations import Impl
from convjax._src.ops.conv import conv
from convjax._src.spec import Padding, make_spec


class State(NamedTuple):
    """A stream's memory: ``buffer``, the last ``k̂ − 1`` input frames, ``[*batch, k̂ − 1,
    *other spatial, C_in]`` (zeros before the first chunk, as causal padding reads)."""

    buffer: jax.Array


def _plan(op: str, x_shape, kernel_shape, dilation, groups, padding):
    """``(span, pads)``: the time span ``k̂`` and one step's ``(lo, hi)`` per spatial axis (none
    in time, whose causal padding the state supplies), checked, naming ``op``."""
    ndim = len(kernel_shape) - 2
    if ndim < 1 or len(x_shape) < ndim + 1:
        raise ValueError(
            f"{op}: x_chunk must be [*batch, time, *spatial, C_in] and kernel [*window, "
            f"C_in // groups, C_out], got shapes {tuple(x_shape)} and {tuple(kernel_shape)}."
        )
    dilation = per_dim(op, "dilation", dilation, ndim, minimum=1)
    span = shapes.effective_window(kernel_shape[0], dilation[0])
    # One step convolves the buffer and the chunk: span − 1 + t frames.
    full = list(x_shape)
    full[-ndim - 1] += span - 1
    spec = make_spec(op, full, kernel_shape, padding=padding, dilation=dilation, groups=groups)
    if not isinstance(padding, str) and spec.padding[0] != (span - 1, 0):
        raise ValueError(
            f"{op}: a stream is causal in time (the first spatial axis): its padding entry must "
            f"be (k̂ - 1, 0) = {(span - 1, 0)}, got {spec.padding[0]}; or pass a string for the "
            f"other axes."
        )
    return span, ((0, 0), *spec.padding[1:])


def init(
    x_chunk: Any,
    kernel: Any,
    *,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding: Padding = "CAUSAL",
) -> State:
    """The state before the first chunk, from the shapes and dtype of a chunk (an array or a
    ``jax.ShapeDtypeStruct``) and of the kernel: zeros, as causal padding reads.

    >>> import jax.numpy as jnp, convjax
    >>> state = convjax.streaming.init(jnp.zeros((2, 1, 4)), jnp.zeros((3, 4, 8)), dilation=2)
    >>> state.buffer.shape  # (k - 1) * d = 4 frames of history
    (2, 4, 4)
    """
    op = "streaming.init"
    span, _ = _plan(op, x_chunk.shape, kernel.shape, dilation, groups, padding)
    ndim = len(kernel.shape) - 2
    shape = list(x_chunk.shape)
    shape[-ndim - 1] = span - 1
    return State(halo.zeros(shape, x_chunk.dtype, like=x_chunk))


def step(
    state: State,
    x_chunk: jax.Array,
    kernel: jax.Array,
    *,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding: Padding = "CAUSAL",
    impl: Impl = "auto",
) -> tuple[jax.Array, State]:
    """``(y_chunk, next state)``: the causal conv's outputs for the frames of ``x_chunk``.

    Args:
      state: from :func:`init` or the previous step.
      x_chunk: ``[*batch, t, *spatial, C_in]``, any ``t`` (1 included).
      kernel: ``[*window, C_in // groups, C_out]``; the first window entry spans time.
      dilation, groups, impl: as :func:`convjax.conv` takes them (stride 1).
      padding: the offline conv's padding: a string (``"CAUSAL"``, the default, or e.g.
        ``"SAME"``) applies to the axes after time, which is causal whatever it says; pairs
        (one per spatial dim) must pad time ``(k̂ − 1, 0)``.

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
    op = "streaming.step"
    span, pads = _plan(op, x_chunk.shape, kernel.shape, dilation, groups, padding)
    ndim = len(kernel.shape) - 2
    time_axis = x_chunk.ndim - ndim - 1
    expected = list(x_chunk.shape)
    expected[time_axis] = span - 1
    if tuple(state.buffer.shape) != tuple(expected) or state.buffer.dtype != x_chunk.dtype:
        raise ValueError(
            f"{op}: state.buffer must be {tuple(expected)} {x_chunk.dtype} for this chunk and "
            f"kernel (the last (k - 1) * dilation frames), got {tuple(state.buffer.shape)} "
            f"{state.buffer.dtype}; make it with streaming.init."
        )
    full = jnp.concatenate([state.buffer, x_chunk], axis=time_axis)

    def run(full):
        with reported_as(op):
            return conv(full, kernel, padding=pads, dilation=dilation, groups=groups, impl=impl)

    if x_chunk.shape[time_axis] == 0:  # nothing new: an empty output, the same state
        one_frame = list(full.shape)
        one_frame[time_axis] += 1
        shape = list(jax.eval_shape(run, jax.ShapeDtypeStruct(one_frame, full.dtype)).shape)
        shape[time_axis] = 0
        return jnp.zeros(shape, jnp.result_type(x_chunk, kernel)), state
    y = run(full)
    keep = full.shape[time_axis] - (span - 1)
    buffer = jax.lax.slice_in_dim(full, keep, full.shape[time_axis], axis=time_axis)
    return y, State(buffer)
