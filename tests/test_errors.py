"""Bad input raises ValueError / TypeError at trace time, naming op, argument, rule and value."""

import jax
import jax.numpy as jnp
import pytest

import convjax

X = jnp.zeros((2, 8, 8, 4), jnp.float32)
K = jnp.zeros((3, 3, 4, 6), jnp.float32)


@pytest.mark.parametrize(
    "x, kernel, options, error, match",
    [
        (X, jnp.zeros((3, 4), jnp.float32), {}, ValueError, r"conv: kernel must have rank >= 3"),
        (jnp.zeros((8, 4), jnp.float32), K, {}, ValueError, r"conv: x must have rank >= 3"),
        (
            X,
            jnp.zeros((3, 3, 5, 6), jnp.float32),
            {},
            ValueError,
            r"kernel.shape\[-2\] must be C_in // groups = 4 // 1 = 4, got 5",
        ),
        (
            X,
            jnp.zeros((3, 3, 1, 6), jnp.float32),
            {"groups": 3},
            ValueError,
            r"groups must divide the input channels, but 3 does not divide 4",
        ),
        (
            X,
            jnp.zeros((3, 3, 2, 5), jnp.float32),
            {"groups": 2},
            ValueError,
            r"groups must divide the output channels .* 2 does not divide 5",
        ),
        (X, K, {"groups": 0}, ValueError, r"groups must be >= 1, got 0"),
        (X, K, {"groups": 1.0}, TypeError, r"groups must be an int, got 1.0"),
        (X, K, {"strides": 0}, ValueError, r"strides must be >= 1 in every dim, got \(0, 0\)"),
        (
            X,
            K,
            {"strides": (1, 2, 1)},
            ValueError,
            r"strides needs one entry per spatial dim \(2\), got 3",
        ),
        (X, K, {"dilation": (1, -1)}, ValueError, r"dilation must be >= 1 in every dim"),
        (X, K, {"strides": True}, TypeError, r"strides must be an int, got True"),
        (X, K, {"padding": "HALVES"}, ValueError, r"padding must be one of .*got 'HALVES'"),
        (
            X,
            K,
            {"padding": (1, 1, 1)},
            ValueError,
            r"padding needs one entry per spatial dim \(2\), got 3",
        ),
        (X, K, {"padding": ((1, 2, 3), (0, 0))}, ValueError, r"padding pair must be \(lo, hi\)"),
        (X, K, {"padding": -1}, ValueError, r"padding must be non-negative"),
        (X, K, {"padding": ((0, -2), (0, 0))}, ValueError, r"padding must be non-negative"),
        (
            X,
            K,
            {"padding_mode": "mirror"},
            ValueError,
            r"padding_mode must be one of .*got 'mirror'",
        ),
        (
            X,
            K,
            {"padding": 8, "padding_mode": "reflect"},
            ValueError,
            r"reflect padding must be smaller than the input size.*size 8 and padding \(8, 8\)",
        ),
        (
            X,
            jnp.zeros((9, 3, 4, 6), jnp.float32),
            {},
            ValueError,
            r"conv: the output would be empty: spatial output \(0, 6\)",
        ),
        (X, K, {"dilation": 4}, ValueError, r"output would be empty"),
        (
            X,
            K,
            {"impl": "cudnn"},
            ValueError,
            r"impl must be one of \('auto', 'lax', 'gather', 'taps', 'fft'\)",
        ),
        (X, K, {"impl": 3}, TypeError, r"impl must be one of"),
        (
            X.astype(jnp.int32),
            K.astype(jnp.int32),
            {},
            TypeError,
            r"x must have a floating dtype .* got int32",
        ),
        (
            X,
            K.astype(jnp.float16),
            {},
            TypeError,
            r"x and kernel must share a dtype, got x float32 and kernel float16; cast one, e\.g\. "
            r"kernel\.astype\(x\.dtype\)",
        ),
        ([[1.0]], K, {}, TypeError, r"conv: x must be an array, got list"),
    ],
)
def test_conv_errors(x, kernel, options, error, match):
    with pytest.raises(error, match=match):
        convjax.conv(x, kernel, **options)
    if isinstance(x, jax.Array):  # the same error, raised while tracing under jit
        with pytest.raises(error, match=match):
            jax.jit(lambda a, b: convjax.conv(a, b, **options)).lower(x, kernel)


def test_errors_name_the_calling_function():
    with pytest.raises(ValueError, match=r"dilated_conv: rate must be >= 1 in every dim"):
        convjax.dilated_conv(X, K, rate=0)
    with pytest.raises(
        ValueError,
        match=r"depthwise_conv: a depthwise kernel must be "
        r"\[\*window, 1, C_in \* depth_multiplier\].*C_in = 4",
    ):
        convjax.depthwise_conv(X, jnp.zeros((3, 3, 1, 6), jnp.float32))
    with pytest.raises(ValueError, match=r"output_shape: strides must be >= 1"):
        convjax.output_shape((8, 8, 4), (3, 3, 4, 4), strides=0)
    with pytest.raises(ValueError, match=r"GatherBackend: memory_budget must be >= 1"):
        convjax.GatherBackend(memory_budget=0)
