"""Streaming (cached) causal convolution over time, the first spatial axis: ``init`` a state from
a chunk's shape, then ``step`` chunk by chunk; the outputs concatenate to the offline causal
conv.  Chunks may be channels-first (``data_format="channels_first"``); the state is
channels-last either way.  ``convjax.nnx.Conv.init_stream`` / ``stream`` do the same for a
layer."""

from convjax._src.ops.streaming import State, init, step

__all__ = ["State", "init", "step"]
