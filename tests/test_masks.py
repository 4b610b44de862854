"""Masked convolutions: a layer's ``mask`` multiplies its kernel as Flax's does (equal to
``flax.nnx.Conv(mask=...)``), masked taps receive zero gradient, and PixelCNN's masks make a
layer causal in raster order."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import convjax
from convjax._src.checks import as_array

rng = np.random.default_rng(0)


@pytest.mark.parametrize(
    "kernel_size, c_in, c_out, options",
    [
        ((3, 3), 4, 6, dict(padding="SAME")),
        ((5,), 3, 2, dict(strides=2, padding="VALID")),
        ((3, 2), 4, 4, dict(feature_group_count=2, kernel_dilation=2, padding="SAME")),
    ],
)
def test_equal_to_flax_masked_conv_and_masked_taps_get_no_gradient(
    kernel_size, c_in, c_out, options
):
    groups = options.get("feature_group_count", 1)
    mask = as_array(rng.integers(0, 2, (*kernel_size, c_in // groups, c_out)), jnp.float32)
    x = as_array(rng.normal(size=(2, *(9,) * len(kernel_size), c_in)), jnp.float32)
    ours = convjax.nnx.Conv(c_in, c_out, kernel_size, mask=mask, **options, rngs=nnx.Rngs(0))
    theirs = nnx.Conv(c_in, c_out, kernel_size, mask=mask, **options, rngs=nnx.Rngs(0))
    theirs.kernel[...] = ours.kernel[...]
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    grads = nnx.grad(lambda m: jnp.sum(jnp.sin(m(x))))(ours)
    assert np.all(np.asarray(grads.kernel[...])[np.asarray(mask) == 0] == 0)
    assert np.any(np.asarray(grads.kernel[...])[np.asarray(mask) == 1] != 0)
    linen = convjax.linen.Conv(c_out, kernel_size, mask=mask, **options)
    params = {"params": {"kernel": ours.kernel[...], "bias": ours.bias[...]}}
    np.testing.assert_allclose(linen.apply(params, x), ours(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_pixelcnn_masks_make_a_stack_causal_in_raster_order(mask_type):
    """The Jacobian of a masked output with respect to the input: output pixel p reads only
    pixels before p in raster order, and at p itself only the earlier colours (A) or those up to
    its own (B)."""
    h = w = 5
    first = convjax.nnx.Conv(
        3,
        6,
        (3, 3),
        padding="SAME",
        rngs=nnx.Rngs(0),
        mask=convjax.pixelcnn_mask((3, 3), 3, 6, mask_type=mask_type, colors=3),
    )
    second = convjax.nnx.Conv(
        6,
        3,
        (3, 3),
        padding="SAME",
        rngs=nnx.Rngs(1),
        mask=convjax.pixelcnn_mask((3, 3), 6, 3, mask_type="B", colors=3),
    )
    x = as_array(rng.normal(size=(1, h, w, 3)), jnp.float32)
    jac = jax.jacfwd(lambda x: second(jax.nn.relu(first(x))))(x)[0, ..., 0, :, :, :]
    reads = np.abs(np.asarray(jac)) > 0  # [h, w, color_out, h, w, color_in]
    for i in range(h):
        for j in range(w):
            later = np.zeros(h * w, bool)
            later[i * w + j + 1 :] = True  # the pixels after p in raster order
            assert not reads[i, j][:, later.reshape(h, w)].any()
            own = reads[i, j, :, i, j, :]  # [color_out, color_in] at the pixel itself
            allowed = np.tril(np.ones((3, 3), bool), k=-1 if mask_type == "A" else 0)
            assert not own[~allowed].any()
    assert reads.any()


def test_a_mask_of_the_wrong_shape_is_refused_naming_the_layer():
    with pytest.raises(ValueError, match=r"Conv: mask must have the kernel's shape \(3, 3, 2, 4\)"):
        convjax.nnx.Conv(2, 4, (3, 3), mask=jnp.ones((3, 3, 2, 5)), rngs=nnx.Rngs(0))
    layer = convjax.linen.Conv(4, (3, 3), mask=jnp.ones((3, 3, 3, 4)))
    x = jnp.ones((1, 5, 5, 2))
    with pytest.raises(ValueError, match=r"Conv: mask must have the kernel's shape"):
        layer.init(jax.random.key(0), x)
    with pytest.raises(TypeError, match=r"Conv: mask must be an array of numbers"):
        convjax.nnx.Conv(2, 4, (3, 3), mask=np.array(["a"]), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"pixelcnn_mask: kernel_size must be odd"):
        convjax.pixelcnn_mask((2, 3), 1, 1)
    with pytest.raises(ValueError, match=r"pixelcnn_mask: colors must divide in_features"):
        convjax.pixelcnn_mask((3, 3), 4, 3, colors=3)


def test_masked_depthwise_and_transposed_layers_and_streaming():
    mask = as_array(rng.integers(0, 2, (3, 3, 1, 4)), jnp.float32)
    x = as_array(rng.normal(size=(2, 6, 6, 4)), jnp.float32)
    layer = convjax.nnx.DepthwiseConv(4, (3, 3), mask=mask, rngs=nnx.Rngs(0))
    want = convjax.depthwise_conv(x, layer.kernel[...] * mask) + layer.bias[...][None, None, None]
    np.testing.assert_allclose(layer(x), want, rtol=1e-6, atol=1e-6)
    up = convjax.nnx.ConvTranspose(
        4, 2, (2, 2), strides=2, mask=jnp.ones((2, 2, 2, 4)).at[0].set(0), rngs=nnx.Rngs(0)
    )
    kernel = up.kernel[...].at[0].set(0)
    want = convjax.conv_transpose(x, kernel, strides=2) + up.bias[...][None, None, None]
    np.testing.assert_allclose(up(x), want, rtol=1e-6, atol=1e-6)
    causal = convjax.nnx.Conv(
        2, 2, (3,), padding="CAUSAL", mask=jnp.ones((3, 2, 2)).at[1].set(0), rngs=nnx.Rngs(0)
    )
    signal = as_array(rng.normal(size=(1, 8, 2)), jnp.float32)
    state, chunks = causal.init_stream(signal[:, :1]), []
    for t in range(8):
        y, state = causal.stream(state, signal[:, t : t + 1])
        chunks.append(y)
    np.testing.assert_allclose(jnp.concatenate(chunks, 1), causal(signal), rtol=1e-5, atol=1e-5)
