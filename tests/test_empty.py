"""Empty arrays: zero-size batch dims, zero input or output channels.  Every function, module and
backend returns a result of the right shape (zeros where a sum has no terms), with and without
jit and under grad and vmap; a 0-d input gets the usual clear error."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import IMPLS

import convjax

# name, x shape, the other operands' shapes, options, the result's shape
EMPTY = [
    ("batch 0", (0, 7, 6, 4), ((3, 3, 2, 6),), dict(groups=2, strides=2), (0, 3, 2, 6)),
    ("batch (2, 0)", (2, 0, 7, 4), ((3, 4, 5),), dict(padding="SAME"), (2, 0, 7, 5)),
    ("C_in 0", (2, 5, 5, 0), ((3, 3, 0, 3),), dict(padding=1), (2, 5, 5, 3)),
    ("C_out 0", (2, 5, 5, 3), ((2, 2, 3, 0),), dict(), (2, 4, 4, 0)),
]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "name, x_shape, kernels, options, result", EMPTY, ids=[c[0] for c in EMPTY]
)
def test_conv_of_empty_arrays(name, x_shape, kernels, options, result, impl, jit):
    f = functools.partial(convjax.conv, impl=impl, **options)
    f = jax.jit(f) if jit else f
    x, kernel = jnp.ones(x_shape), jnp.ones(kernels[0])
    y = f(x, kernel)
    assert y.shape == result and y.dtype == x.dtype
    np.testing.assert_array_equal(y, 0)
    assert convjax.output_shape(x_shape, kernels[0], **options) == result
    # Gradients have the operands' shapes and are zero (nothing depends on an empty sum).
    grads = jax.grad(lambda x, k: jnp.sum(f(x, k)), argnums=(0, 1))(x, kernel)
    assert [g.shape for g in grads] == [x.shape, kernel.shape]
    np.testing.assert_array_equal(grads[1], 0)
    # ... and the transposed conv maps back to x's shape.
    ndim = kernel.ndim - 2
    back = convjax.conv_transpose(
        y, kernel, output_shape=x_shape[-ndim - 1 : -1], impl=impl, **options
    )
    assert back.shape == x_shape


@pytest.mark.parametrize("impl", IMPLS)
def test_every_variant_and_vmap_with_an_empty_batch(impl):
    x = jnp.ones((0, 8, 8, 3))
    dilated = convjax.dilated_conv(jnp.ones((0, 9, 9, 3)), jnp.ones((3, 3, 3, 2)), rate=2)
    assert dilated.shape == (0, 5, 5, 2)
    assert convjax.depthwise_conv(x, jnp.ones((3, 3, 1, 6)), impl=impl).shape == (0, 6, 6, 6)
    separable = convjax.spatial_separable_conv(
        x, [jnp.ones((3, 3, 4)), jnp.ones((3, 4, 5))], impl=impl
    )
    assert separable.shape == (0, 6, 6, 5)
    both = convjax.depthwise_separable_conv(x, jnp.ones((3, 3, 1, 3)), jnp.ones((3, 5)), impl=impl)
    assert both.shape == (0, 6, 6, 5)
    f = functools.partial(convjax.conv, kernel=jnp.ones((3, 3, 3, 4)), impl=impl)
    assert jax.vmap(f)(jnp.ones((5, 0, 8, 8, 3))).shape == (5, 0, 6, 6, 4)
    assert jax.vmap(f)(jnp.ones((0, 2, 8, 8, 3))).shape == (0, 2, 6, 6, 4)


@pytest.mark.parametrize("impl", IMPLS)
def test_zero_channels_everywhere(impl):
    x = jnp.ones((2, 8, 8, 0))
    # Depthwise of no channels is the empty conv: no outputs, whatever the multiplier.
    assert convjax.depthwise_conv(x, jnp.ones((3, 3, 1, 0)), impl=impl).shape == (2, 6, 6, 0)
    y = convjax.depthwise_separable_conv(x, jnp.ones((3, 3, 1, 0)), jnp.ones((0, 5)), impl=impl)
    assert y.shape == (2, 6, 6, 5)
    np.testing.assert_array_equal(y, 0)
    y = convjax.spatial_separable_conv(x, [jnp.ones((3, 0, 4)), jnp.ones((3, 4, 5))], impl=impl)
    assert y.shape == (2, 6, 6, 5)
    np.testing.assert_array_equal(y, 0)
    with pytest.raises(ValueError, match=r"depthwise_conv: a depthwise kernel must be"):
        convjax.depthwise_conv(x, jnp.ones((3, 3, 1, 2)), impl=impl)


@pytest.mark.parametrize("method", ["wiener", "lsq"])
def test_deconvolve_empty_batch_and_channels(method):
    options = dict(method=method, padding="SAME", padding_mode="circular", return_info=True)
    x_hat, info = convjax.deconvolve(jnp.ones((0, 8, 8, 3)), jnp.ones((3, 3, 3, 3)), **options)
    assert x_hat.shape == (0, 8, 8, 3) and info.residual.shape == (0,)
    x_hat, info = convjax.deconvolve(jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 0, 3)), **options)
    assert x_hat.shape == (2, 8, 8, 0) and info.residual.shape == (2,)


@pytest.mark.parametrize("impl", IMPLS)
def test_modules_with_an_empty_batch(impl):
    x = jnp.ones((0, 8, 8, 3))
    rngs = nnx.Rngs(0)
    layers = [
        convjax.nnx.Conv(3, 4, (3, 3), impl=impl, rngs=rngs),
        convjax.nnx.ConvTranspose(3, 4, (3, 3), strides=2, impl=impl, rngs=rngs),
        convjax.nnx.DepthwiseConv(3, (3, 3), depth_multiplier=2, impl=impl, rngs=rngs),
        convjax.nnx.DepthwiseSeparableConv(3, 5, (3, 3), impl=impl, rngs=rngs),
        convjax.nnx.SpatialSeparableConv(3, 5, (3, 3), impl=impl, rngs=rngs),
    ]
    shapes = [(0, 6, 6, 4), (0, 17, 17, 4), (0, 6, 6, 6), (0, 6, 6, 5), (0, 6, 6, 5)]
    for layer, shape in zip(layers, shapes, strict=True):
        assert layer(x).shape == shape, type(layer).__name__
    linen = convjax.linen.Conv(4, (3, 3), impl=impl)
    assert linen.apply(linen.init(jax.random.key(0), x), x).shape == (0, 6, 6, 4)


@pytest.mark.parametrize(
    "f",
    [
        lambda x: convjax.conv(x, jnp.ones((3, 3, 1, 1))),
        lambda x: convjax.depthwise_conv(x, jnp.ones((3, 3, 1, 1))),
        lambda x: convjax.conv_transpose(x, jnp.ones((3, 3, 1, 1))),
        lambda x: convjax.depthwise_separable_conv(x, jnp.ones((3, 3, 1, 1)), jnp.ones((1, 1))),
        lambda x: convjax.spatial_separable_conv(x, [jnp.ones((3, 1, 1))] * 2),
        lambda x: convjax.deconvolve(x, jnp.ones((3, 3, 1, 1))),
    ],
)
def test_a_0d_input_gets_the_rank_error(f):
    with pytest.raises(ValueError, match=r"must have rank >= 3 .*got shape \(\)"):
        f(jnp.ones(()))
