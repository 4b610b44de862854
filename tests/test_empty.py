"""Empty arrays: zero-size batch dims, zero input or output channels.  Every function, module and
backend returns a result of the right shape (zeros where a sum has no terms), with and without
jit and under grad and vmap; a 0-d input gets the usual clear error."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import ops
import pytest
from helpers import IMPLS
from ops import OPS

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
@pytest.mark.parametrize("op", OPS, ids=str)
def test_every_operation_with_an_empty_batch(op, impl):
    """The shape one image gives, with a batch of none; zero gradients of the operands' shapes."""
    operands = op.arrays(3)
    f = functools.partial(op, impl=impl)
    one = jax.eval_shape(f, jnp.ones((1, 8, 8, 3), jnp.float32), *operands).shape
    y = f(jnp.ones((0, 8, 8, 3), jnp.float32), *operands)
    assert y.shape == (0, *one[1:])
    grads = jax.grad(lambda *a: jnp.sum(f(*a)), argnums=tuple(range(len(operands) + 1)))(
        jnp.ones((0, 8, 8, 3), jnp.float32), *operands
    )
    assert [g.shape for g in grads[1:]] == [k.shape for k in operands]
    for g in grads[1:]:
        np.testing.assert_array_equal(g, 0)


@pytest.mark.parametrize("impl", IMPLS)
def test_vmap_over_an_empty_batch(impl):
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


@pytest.mark.parametrize("framework", ["nnx", "linen"])
@pytest.mark.parametrize("op", [op for op in OPS if op.layer], ids=str)
def test_layers_with_an_empty_batch(op, framework):
    x = jnp.ones((0, 8, 8, 3))
    layer = ops.layer(op, framework, 3)
    if framework == "nnx":
        y, one = layer(x), jax.eval_shape(layer, jnp.ones((1, 8, 8, 3)))
    else:
        variables = layer.init(jax.random.key(0), x)
        y, one = layer.apply(variables, x), jax.eval_shape(layer.apply, variables, x[:1] + 0)
    assert y.shape == (0, *one.shape[1:])


@pytest.mark.parametrize("op", OPS, ids=str)
def test_a_0d_input_gets_the_rank_error(op):
    with pytest.raises(ValueError, match=rf"^{op.name}: .*must have rank >= 3 .*got shape \(\)"):
        op(jnp.ones((), jnp.float32), *op.arrays(1))
