"""data_format="channels_first": every function and module gives the channels-last result with
its channel axis moved, values and gradients, and bad values are named errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from ops import BY_NAME, OPS

import convjax
from convjax._src.checks import as_array

rng = np.random.default_rng(0)


def arr(*shape):
    return as_array(rng.normal(size=shape))


def _bound(op, shape, **options):
    operands = op.arrays(shape[-1], np.float64)
    return lambda x, **more: op(x, *operands, **options, **more), shape


FUNCTIONS = {op.name: _bound(op, (2, 9, 8, 3), padding=1) for op in OPS}
FUNCTIONS["conv_transpose"] = _bound(BY_NAME["conv_transpose"], (2, 4, 5, 3), output_padding=1)
FUNCTIONS["deconvolve"] = _bound(BY_NAME["deconvolve"], (1, 6, 6, 3))
FUNCTIONS["conv 1-d, two batch dims"] = (
    functools.partial(convjax.conv, kernel=arr(3, 3, 2), padding="SAME"),
    (2, 1, 7, 3),
)
FUNCTIONS["conv 3-d, no batch"] = (
    functools.partial(convjax.conv, kernel=arr(2, 2, 2, 3, 2)),
    (5, 4, 3, 3),
)


def first(a, ndim):
    return jnp.moveaxis(a, -1, -ndim - 1)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_functions_equal_the_channels_last_call_with_moved_axes(name):
    fn, shape = FUNCTIONS[name]
    x = arr(*shape)
    ndim = 3 if "3-d" in name else 1 if "1-d" in name else 2
    last = jax.jit(fn)(x)
    channels_first = jax.jit(functools.partial(fn, data_format="channels_first"))
    np.testing.assert_allclose(channels_first(first(x, ndim)), first(last, ndim), rtol=1e-12)
    grad_last = jax.grad(lambda x: jnp.sum(jnp.sin(fn(x))))(x)
    grad_first = jax.grad(lambda x: jnp.sum(jnp.sin(channels_first(x))))(first(x, ndim))
    np.testing.assert_allclose(grad_first, first(grad_last, ndim), rtol=1e-10, atol=1e-12)


NNX = {
    "Conv": lambda **kw: convjax.nnx.Conv(3, 4, (3, 3), strides=2, padding=1, **kw),
    "ConvTranspose": lambda **kw: convjax.nnx.ConvTranspose(3, 4, (3, 3), strides=2, **kw),
    "DepthwiseConv": lambda **kw: convjax.nnx.DepthwiseConv(3, (3, 3), depth_multiplier=2, **kw),
    "DepthwiseSeparableConv": lambda **kw: convjax.nnx.DepthwiseSeparableConv(3, 5, (3, 3), **kw),
    "SpatialSeparableConv": lambda **kw: convjax.nnx.SpatialSeparableConv(3, 4, (3, 3), **kw),
}


@pytest.mark.parametrize("name", NNX)
def test_nnx_modules_take_channels_first(name):
    last = NNX[name](rngs=nnx.Rngs(0))
    channels_first = NNX[name](data_format="channels_first", rngs=nnx.Rngs(0))
    x = arr(2, 8, 7, 3)
    np.testing.assert_allclose(channels_first(first(x, 2)), first(last(x), 2), rtol=1e-12)


def test_linen_modules_take_channels_first():
    x = arr(2, 8, 7, 3)
    for make in (
        lambda **kw: convjax.linen.Conv(4, (3, 3), padding="SAME", **kw),
        lambda **kw: convjax.linen.ConvTranspose(4, (2, 2), strides=2, **kw),
    ):
        params = make().init(jax.random.key(0), x)
        y_last = make().apply(params, x)
        y_first = make(data_format="channels_first").apply(params, first(x, 2))
        np.testing.assert_allclose(y_first, first(y_last, 2), rtol=1e-12)


def test_unfold_and_fold_take_channels_first():
    x = arr(2, 7, 6, 3)
    options = dict(strides=2, padding=1)
    patches = convjax.unfold(x, (3, 3), **options)
    patches_first = convjax.unfold(first(x, 2), (3, 3), data_format="channels_first", **options)
    np.testing.assert_array_equal(patches_first, first(patches, 2))
    back = convjax.fold(patches, x.shape, (3, 3), **options)
    back_first = convjax.fold(
        patches_first, first(x, 2).shape, (3, 3), data_format="channels_first", **options
    )
    np.testing.assert_allclose(back_first, first(back, 2), rtol=1e-12)


def test_a_channels_first_layer_streams():
    layer = convjax.nnx.Conv(
        2,
        3,
        (3,),
        kernel_dilation=2,
        padding="CAUSAL",
        data_format="channels_first",
        rngs=nnx.Rngs(0),
    )
    x = arr(1, 2, 12)  # [batch, C, time]
    state = layer.init_stream(x[..., :1])
    ys = []
    for start in range(0, 12, 5):
        y, state = layer.stream(state, x[..., start : start + 5])
        ys.append(y)
    np.testing.assert_allclose(jnp.concatenate(ys, -1), layer(x), rtol=1e-12, atol=1e-12)


def test_errors_name_the_function_or_module():
    with pytest.raises(ValueError, match=r"conv: data_format must be one of \('channels_last'"):
        convjax.conv(arr(1, 5, 2), arr(3, 2, 2), data_format="NCW")
    with pytest.raises(ValueError, match=r"conv: with data_format='channels_first' the input"):
        convjax.conv(arr(5), arr(3, 2, 2), data_format="channels_first")
    with pytest.raises(ValueError, match=r"Conv: data_format must be one of"):
        convjax.nnx.Conv(2, 2, (3,), data_format="NCW", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"Conv: data_format must be one of"):
        convjax.linen.Conv(2, (3,), data_format="NCW")
    with pytest.raises(ValueError, match=r"pass data_format='channels_first'"):
        convjax.conv(arr(2, 3, 8, 8), arr(3, 3, 3, 4))  # a PyTorch-layout x, no data_format


def test_empty_batches_keep_their_layout():
    x = jnp.zeros((0, 3, 8, 7))
    y = convjax.conv(x, arr(3, 3, 3, 4), padding=1, data_format="channels_first")
    assert y.shape == (0, 4, 8, 7)
    layer = convjax.nnx.Conv(3, 4, (3, 3), data_format="channels_first", rngs=nnx.Rngs(0))
    assert layer(jnp.zeros((0, 3, 8, 7))).shape == (0, 4, 6, 5)
