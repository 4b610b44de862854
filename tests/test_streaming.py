"""Streaming causal convolution: any chunking of the signal gives the offline causal conv's
output (float64), under jit and lax.scan, for dilation, groups, depthwise and N-d with time
first; the NNX layer streams too, a dilated stack included."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import convjax
from convjax import streaming
from convjax._src.checks import as_array


def chunked(x, sizes):
    starts = np.cumsum([0, *sizes])
    return [x[:, a:b] for a, b in itertools.pairwise(starts)]


CASES = [
    # (x shape [B, T, *spatial, C], kernel shape, dilation, groups, padding)
    ((2, 17, 3), (3, 3, 4), 1, 1, "CAUSAL"),
    ((1, 23, 4), (2, 4, 4), 5, 1, "CAUSAL"),
    ((2, 19, 6), (4, 2, 6), 2, 3, "CAUSAL"),
    ((2, 15, 4), (3, 1, 8), 3, 4, "CAUSAL"),  # depthwise, multiplier 2
    ((2, 9, 3), (1, 3, 4), 1, 1, "CAUSAL"),  # one tap: no memory at all
    ((1, 14, 5, 2), (3, 2, 2, 3), (2, 1), 1, "CAUSAL"),  # time first, then space
    ((1, 12, 6, 2), (2, 3, 2, 3), (3, 2), 1, "SAME"),  # space padded SAME, time causal
    ((1, 10, 6, 2), (2, 3, 2, 3), (2, 1), 1, "VALID"),  # space unpadded
    ((1, 8, 5, 2), (1, 3, 2, 2), 1, 1, "VALID"),  # one tap in time, space unpadded
    ((1, 11, 5, 4), (3, 2, 2, 4), (1, 2), 2, [(2, 0), (1, 2)]),  # explicit pairs, groups
]


def offline_padding(x_shape, k_shape, dilation, padding):
    """The offline conv the stream must equal: time padded (k̂ − 1, 0), the other axes as
    ``padding`` says."""
    if not isinstance(padding, str) or padding == "CAUSAL":
        return padding
    rest = convjax.make_spec("test", x_shape, k_shape, padding=padding, dilation=dilation)
    span = (k_shape[0] - 1) * np.broadcast_to(dilation, len(k_shape) - 2)[0] + 1
    return [(span - 1, 0), *rest.padding[1:]]


# Channels-first chunks on the cases that move the most axes: N-d with a one-tap kernel, and
# N-d with explicit pairs and groups (each case compiles one step per chunk length).
LAYOUT_CASES = [(*case, "channels_last") for case in CASES] + [
    (*CASES[i], "channels_first") for i in (8, 9)
]


@pytest.mark.parametrize("x_shape, k_shape, dilation, groups, padding, data_format", LAYOUT_CASES)
def test_any_chunking_equals_the_offline_causal_conv(
    x_shape, k_shape, dilation, groups, padding, data_format
):
    rng = np.random.default_rng(0)
    x = as_array(rng.normal(size=x_shape))
    kernel = as_array(rng.normal(size=k_shape))
    options = dict(dilation=dilation, groups=groups, padding=padding)
    if data_format == "channels_first":  # the default otherwise
        options["data_format"] = data_format
    span = (k_shape[0] - 1) * np.broadcast_to(dilation, len(k_shape) - 2)[0] + 1
    offline = convjax.conv(
        x,
        kernel,
        dilation=dilation,
        groups=groups,
        padding=offline_padding(x_shape, k_shape, dilation, padding),
    )
    first = data_format == "channels_first"
    # Channels-first chunks are [B, C, T, *spatial]: time is axis 2, and so in the outputs.
    layout = (lambda a: jnp.moveaxis(a, -1, 1)) if first else (lambda a: a)
    time = 2 if first else 1
    xs = layout(x)
    step = jax.jit(functools.partial(streaming.step, kernel=kernel, **options))
    length = x_shape[1]
    for sizes in ([1] * length, [0, 5, 0, 3, length - 8, 0], [length]):
        starts = np.cumsum([0, *sizes])
        chunks = [jax.lax.slice_in_dim(xs, a, b, axis=time) for a, b in itertools.pairwise(starts)]
        state = streaming.init(chunks[0], kernel, **options)  # the empty chunk too
        outputs = []
        for chunk in chunks:
            y, state = step(state, chunk)
            assert y.shape[time] == chunk.shape[time]
            outputs.append(y)
        np.testing.assert_allclose(
            jnp.concatenate(outputs, time), layout(offline), rtol=1e-12, atol=1e-12
        )
        # The state is channels-last whatever the chunks' layout: the last k̂ − 1 frames.
        np.testing.assert_array_equal(state.buffer, x[:, length - (span - 1) :])


def test_an_empty_chunk_gives_an_empty_output_and_the_same_state():
    kernel = jnp.ones((1, 3, 2, 4))  # one tap in time: the state holds no frames
    x = jnp.ones((2, 0, 6, 2))
    # Width 6 with a 3-wide window: padded (2, 0) keeps 6 columns, unpadded leaves 4.
    for padding, width in [("CAUSAL", 6), ("VALID", 4), ([(0, 0), (2, 0)], 6)]:
        state = streaming.init(x, kernel, padding=padding)
        assert state.buffer.shape == (2, 0, 6, 2)
        y, after = streaming.step(state, x, kernel, padding=padding)
        assert y.shape == (2, 0, width, 4) and y.dtype == x.dtype and after is state
    kernel = jnp.ones((3, 2, 2, 4))
    state = streaming.init(x, kernel, dilation=(2, 1), padding="VALID")
    y, after = streaming.step(
        state,
        jnp.ones((2, 2, 0, 6)),
        kernel,
        dilation=(2, 1),
        padding="VALID",
        data_format="channels_first",
    )
    assert y.shape == (2, 4, 0, 5) and after is state and state.buffer.shape == (2, 4, 6, 2)
    # init reads shapes only: a channels-first ShapeDtypeStruct gives the channels-last state.
    abstract = jax.ShapeDtypeStruct((2, 2, 1, 6), jnp.float32)
    options = dict(dilation=(2, 1), padding="VALID", data_format="channels_first")
    state = streaming.init(abstract, kernel.astype(jnp.float32), **options)
    assert state.buffer.shape == (2, 4, 6, 2)


def test_frame_by_frame_under_scan():
    rng = np.random.default_rng(1)
    x = as_array(rng.normal(size=(3, 25, 4)))
    kernel = as_array(rng.normal(size=(3, 1, 4)))
    options = dict(dilation=4, groups=4)

    def body(state, frame):
        y, state = streaming.step(state, frame[:, None], kernel, **options)
        return state, y[:, 0]

    state = streaming.init(x[:, :1], kernel, **options)
    _, ys = jax.lax.scan(body, state, jnp.swapaxes(x, 0, 1))
    offline = convjax.conv(x, kernel, padding="CAUSAL", **options)
    np.testing.assert_allclose(jnp.swapaxes(ys, 0, 1), offline, rtol=1e-12, atol=1e-12)


def test_a_dilated_causal_stack_streams_like_the_offline_run():
    # A WaveNet-style stack: causal convs at rates 1, 2, 4, 8 with gated residuals.
    layers = [
        convjax.nnx.Conv(4, 8, (2,), kernel_dilation=d, padding="CAUSAL", rngs=nnx.Rngs(d))
        for d in (1, 2, 4, 8)
    ]
    x = jax.random.normal(jax.random.key(0), (2, 40, 4))

    def offline(x):
        for layer in layers:
            a, b = jnp.split(layer(x), 2, axis=-1)
            x = x + jnp.tanh(a) * jax.nn.sigmoid(b)
        return x

    @nnx.jit
    def stream(layers, states, chunk):
        new_states = []
        for layer, state in zip(layers, states):
            y, state = layer.stream(state, chunk)
            a, b = jnp.split(y, 2, axis=-1)
            chunk = chunk + jnp.tanh(a) * jax.nn.sigmoid(b)
            new_states.append(state)
        return chunk, new_states

    states = [layer.init_stream(x[:, :1]) for layer in layers]
    outputs = []
    for chunk in chunked(x, [7, 1, 12, 20]):
        y, states = stream(layers, states, chunk)
        outputs.append(y)
    np.testing.assert_allclose(jnp.concatenate(outputs, 1), offline(x), rtol=1e-5, atol=1e-5)


def test_errors_name_the_function_and_the_rule():
    x, kernel = jnp.zeros((1, 4, 2)), jnp.zeros((3, 2, 2))
    state = streaming.init(x, kernel)
    with pytest.raises(ValueError, match=r"streaming.step: state.buffer must be \(1, 4, 2\)"):
        streaming.step(state, x, kernel, dilation=2)
    with pytest.raises(ValueError, match=r"streaming.init: a stream is causal in time"):
        streaming.init(x, kernel, padding=[(1, 1)])
    with pytest.raises(ValueError, match=r"streaming.step: groups must divide"):
        streaming.step(state, x, kernel, groups=3)
    # The chunk's own shape, not the state's frames joined to it, and which layout it looks.
    chunk = r"x_chunk must have C_in = kernel.shape\[-2\] \* groups = 2 \* 1 = 2 channels"
    with pytest.raises(ValueError, match=rf"^streaming.step: {chunk} .*got shape \(1, 4, 3\)\.$"):
        streaming.step(state, jnp.zeros((1, 4, 3)), kernel)
    with pytest.raises(ValueError, match=r"got shape \(1, 2, 4\)\. Likely: x_chunk is channels-"):
        streaming.step(state, jnp.zeros((1, 2, 4)), kernel)
    must_be_state = r"streaming.step: state must be a streaming.State \(from streaming.init"
    for bad_state, kind in [
        (state.buffer, "ArrayImpl"),
        ([state.buffer], "list"),
        (None, "NoneType"),
    ]:
        with pytest.raises(TypeError, match=must_be_state + rf".*got {kind}\."):
            streaming.step(bad_state, x, kernel)
    with pytest.raises(TypeError, match=r"streaming.step: state.buffer must be an array .* list"):
        streaming.step(streaming.State([[0.0]]), x, kernel)
    with pytest.raises(
        TypeError, match=r"streaming.step: x_chunk must be an array \[\*batch, time, .* got list"
    ):
        streaming.step(state, x.tolist(), kernel)
    with pytest.raises(TypeError, match=r"streaming.init: kernel must be an array .* got tuple"):
        streaming.init(x, (3, 2, 2))
    with pytest.raises(ValueError, match=r"streaming.init: data_format must be one of .* 'NCW'"):
        streaming.init(x, kernel, data_format="NCW")
    with pytest.raises(
        ValueError, match=r"streaming.step: x_chunk must be \[\*batch, C_in, time, \*spatial\]"
    ):
        streaming.step(state, x[0, :, 0], kernel, data_format="channels_first")
    layer = convjax.nnx.Conv(2, 2, (3,), strides=2, padding="CAUSAL", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"Conv.init_stream: streams run stride-1"):
        layer.init_stream(x)


@pytest.mark.parametrize("padding", ["VALID", "SAME", 1, [(1, 1)]])
def test_a_layer_that_reads_future_frames_refuses_to_stream(padding):
    """A stream promises the layer's own output; a layer not causal in time cannot keep it."""
    layer = convjax.nnx.Conv(2, 2, (3,), padding=padding, rngs=nnx.Rngs(0))
    x = jnp.ones((1, 10, 2))
    with pytest.raises(ValueError, match=r"Conv.init_stream: a stream equals the layer's own"):
        layer.init_stream(x[:, :1])
    with pytest.raises(ValueError, match=r"Conv.stream: a stream equals the layer's own"):
        layer.stream(streaming.init(x[:, :1], layer.kernel[...]), x[:, :4])


@pytest.mark.parametrize("framework", ["nnx", "linen"])
@pytest.mark.parametrize(
    "name, dtypes",
    [
        ("Conv", {}),
        ("DepthwiseConv", {}),
        ("Conv", {"dtype": jnp.bfloat16}),  # the layer computes in a dtype of its own
        ("Conv", {"x": jnp.bfloat16}),  # the input's dtype differs from the parameters'
    ],
    ids=str,
)
def test_causal_layers_of_both_frameworks_stream_their_own_output(framework, name, dtypes):
    x = jax.random.normal(jax.random.key(0), (2, 9, 4), dtypes.get("x", jnp.float32))
    options = dict(kernel_dilation=2, padding="CAUSAL")
    options |= {"dtype": dtypes["dtype"]} if "dtype" in dtypes else {}
    if framework == "nnx":
        channels = (4, 6) if name == "Conv" else (4,)
        layer = getattr(convjax.nnx, name)(*channels, (3,), **options, rngs=nnx.Rngs(0))
        offline, init, step = layer(x), layer.init_stream, layer.stream
    else:
        channels = (6,) if name == "Conv" else ()
        module = getattr(convjax.linen, name)(*channels, (3,), **options)
        variables = module.init(jax.random.key(0), x)
        offline = module.apply(variables, x)
        init = functools.partial(module.apply, variables, method="init_stream")
        step = functools.partial(module.apply, variables, method="stream")
    state, chunks = init(x[:, :1]), []
    for start, stop in [(0, 1), (1, 4), (4, 4), (4, 8), (8, 9)]:  # 1, 3, 0, 4 and 1 frames
        y, state = step(state, x[:, start:stop])
        chunks.append(y)
    streamed = jnp.concatenate(chunks, axis=1)
    assert streamed.dtype == offline.dtype
    np.testing.assert_allclose(streamed.astype(float), offline.astype(float), atol=1e-5)


def test_empty_batches_and_non_finite_frames():
    kernel = jnp.ones((3, 2, 2))
    state = streaming.init(jnp.zeros((0, 1, 2)), kernel, dilation=2)
    y, state = streaming.step(state, jnp.zeros((0, 4, 2)), kernel, dilation=2)
    assert y.shape == (0, 4, 2) and state.buffer.shape == (0, 4, 2)
    # A NaN at frame 3 reaches exactly the outputs whose window covers it: frames 3, 5 and 7.
    x = jnp.zeros((1, 10, 2)).at[0, 3, 0].set(jnp.nan)
    state = streaming.init(x[:, :1], kernel, dilation=2)
    outputs = []
    for chunk in chunked(x, [2, 1, 4, 3]):
        y, state = streaming.step(state, chunk, kernel, dilation=2)
        outputs.append(y)
    nan_frames = np.flatnonzero(np.isnan(jnp.concatenate(outputs, 1)[0, :, 0]))
    assert nan_frames.tolist() == [3, 5, 7]
    offline = convjax.conv(x, kernel, padding="CAUSAL", dilation=2)
    assert np.flatnonzero(np.isnan(offline[0, :, 0])).tolist() == [3, 5, 7]


@pytest.mark.parametrize("padding", ["VALID", "SAME", [(0, 0), (1, 1)]])
def test_a_layer_with_one_tap_in_time_streams_under_any_padding_that_keeps_it_causal(padding):
    x = jax.random.normal(jax.random.key(0), (1, 7, 5, 4))
    layer = convjax.nnx.Conv(4, 6, (1, 3), padding=padding, rngs=nnx.Rngs(0))
    state, chunks = layer.init_stream(x[:, :1]), []
    for start in range(0, 7, 3):
        y, state = layer.stream(state, x[:, start : start + 3])
        chunks.append(y)
    np.testing.assert_allclose(jnp.concatenate(chunks, axis=1), layer(x), atol=1e-6)
