"""Complex and integer convolutions, as lax and PyTorch compute them.

Complex: every formulation (the FFT included) against the float64 reference applied to real and
imaginary parts, forward, transposed and both gradients; gradients follow JAX's convention for
complex autodiff (``jax.vjp`` of a linear map is its plain transpose, no conjugate), which is
what ``impl="lax"`` gives.  Integers: exact against an integer reference, wrapping around in the
result dtype like NumPy's integers, with ``preferred_element_type`` for the wide sums.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from flax import nnx
from helpers import FORMULATIONS
from ops import OPS

import convjax
from convjax._src.checks import as_array

OPTIONS = dict(strides=1, padding=((1, 0), (2, 1)), dilation=(1, 2), groups=2)
REF = dict(strides=(1, 1), padding=[(1, 0), (2, 1)], dilation=(1, 2), groups=2)


def complex_reference(fn, a, b, *args, **options):
    """A bilinear reference on complex operands, from its real form: four real products."""
    ar, ai, br, bi = a.real, a.imag, b.real, b.imag
    f = functools.partial(fn, **options)
    return (f(ar, br, *args) - f(ai, bi, *args)) + 1j * (f(ar, bi, *args) + f(ai, br, *args))


def complex_array(rng, shape):
    return rng.uniform(-1, 1, shape) + 1j * rng.uniform(-1, 1, shape)


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_complex_forward_transpose_and_gradients(formulation):
    rng = np.random.default_rng(0)
    x, k = complex_array(rng, (2, 7, 9, 4)), complex_array(rng, (3, 2, 2, 6))
    conv = functools.partial(convjax.conv, impl=formulation, **OPTIONS)
    y = complex_reference(reference.conv, x, k, **REF)
    g = complex_array(rng, y.shape)

    @jax.jit
    def run(x, k, g):
        out, vjp = jax.vjp(conv, x, k)
        back = convjax.conv_transpose(g, k, impl=formulation, output_shape=(7, 9), **OPTIONS)
        return out, *vjp(g), back

    out, dx, dk, back = run(as_array(x), as_array(k), as_array(g))
    assert out.dtype == dx.dtype == dk.dtype == back.dtype == jnp.complex128
    want_dx = complex_reference(reference.conv_transpose, g, k, x.shape[1:], **REF)
    want_dk = complex_reference(
        lambda g, x, shape, **o: reference.kernel_gradient(x, g, shape, **o), g, x, k.shape, **REF
    )
    for actual, want in ((out, y), (dx, want_dx), (dk, want_dk), (back, want_dx)):
        np.testing.assert_allclose(actual, want, rtol=1e-10, atol=1e-10)
    # JAX's own convention, as lax gives it.
    lax_grads = jax.vjp(functools.partial(convjax.conv, impl="lax", **OPTIONS), x, k)[1](g)
    np.testing.assert_allclose(dx, lax_grads[0], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dk, lax_grads[1], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("formulation", [f for f in FORMULATIONS if f != "fft"])
@pytest.mark.parametrize("dtype, result", [("int8", "int32"), ("int8", None), ("int16", "int64")])
def test_integers_are_exact(formulation, dtype, result):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max, (2, 6, 7, 4), endpoint=True).astype(dtype)
    k = rng.integers(info.min, info.max, (3, 2, 2, 6), endpoint=True).astype(dtype)
    y = convjax.conv(
        as_array(x), as_array(k), impl=formulation, preferred_element_type=result, **OPTIONS
    )
    exact = reference.conv(x, k, **REF)  # float64 holds these sums exactly (< 2⁵³)
    want = exact.astype(np.int64).astype(result or dtype)  # wraps around, as NumPy's integers
    assert y.dtype == np.dtype(result or dtype)
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("formulation", [f for f in FORMULATIONS if f != "fft"])
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "circular"])
@pytest.mark.parametrize("strides", [1, 2])
def test_integer_transposed_convolutions_are_exact(formulation, padding_mode, strides):
    """conv_transpose of integers: integers back (not JAX's float0 cotangents), equal to the
    integer reference, padding folded back by its mode."""
    rng = np.random.default_rng(3)
    k = rng.integers(-9, 9, (3, 2, 2, 6)).astype(np.int32)
    options = dict(OPTIONS, strides=strides, padding_mode=padding_mode)
    shape = convjax.output_shape((2, 7, 9, 4), k.shape, **options)
    g = rng.integers(-9, 9, shape).astype(np.int32)
    back = convjax.conv_transpose(
        as_array(g), as_array(k), output_shape=(7, 9), impl=formulation, **options
    )
    ref = dict(REF, strides=(strides, strides), padding_mode=padding_mode)
    want = reference.conv_transpose(g, k, (7, 9, 4), **ref)  # exact in float64
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, want.astype(np.int64))


def test_the_fft_refuses_integers_and_auto_never_picks_it_for_them():
    x, k = jnp.ones((1, 64, 64, 32), jnp.int8), jnp.ones((15, 15, 32, 32), jnp.int8)
    with pytest.raises(
        ValueError,
        match=r"conv: impl='fft' cannot run this convolution: it "
        r"computes floating and complex dtypes, got int8",
    ):
        convjax.conv(x, k, impl="fft")
    options = dict(padding="SAME")
    assert convjax.auto_choice(x.shape, k.shape, **options).formulation == "fft"
    assert convjax.auto_choice(x.shape, k.shape, dtype="int8", **options).formulation != "fft"
    y = convjax.conv(x[:, :20, :20], k, preferred_element_type=jnp.int32, **options)
    assert int(y[0, 10, 10, 0]) == 15 * 15 * 32


@pytest.mark.parametrize("framework", ["nnx", "linen"])
def test_layers_take_complex_parameters_and_complex_inputs(framework):
    rng = np.random.default_rng(2)
    x = as_array(complex_array(rng, (2, 6, 6, 3)), jnp.complex64)
    if framework == "nnx":
        layer = convjax.nnx.Conv(3, 4, (3, 3), param_dtype=jnp.complex64, rngs=nnx.Rngs(0))
        kernel, bias, y = layer.kernel[...], layer.bias[...], layer(x)
        real = convjax.nnx.Conv(3, 4, (3, 3), rngs=nnx.Rngs(0))
        y_real_params, real_kernel = real(x), real.kernel[...]
    else:
        layer = convjax.linen.Conv(4, (3, 3), param_dtype=jnp.complex64)
        params = layer.init(jax.random.key(0), x)
        kernel, bias = params["params"]["kernel"], params["params"]["bias"]
        y = layer.apply(params, x)
        real = convjax.linen.Conv(4, (3, 3))
        real_params = real.init(jax.random.key(0), x)
        y_real_params, real_kernel = real.apply(real_params, x), real_params["params"]["kernel"]
    assert kernel.dtype == bias.dtype == y.dtype == jnp.complex64
    assert np.abs(np.asarray(kernel).imag).max() > 0  # complex initialisation
    want = complex_reference(
        reference.conv,
        np.asarray(x),
        np.asarray(kernel),
        **dict(REF, padding=[(0, 0), (0, 0)], dilation=(1, 1), groups=1),
    )
    np.testing.assert_allclose(y, want + np.asarray(bias), rtol=1e-5, atol=1e-5)
    # A complex input through real parameters is the complex convolution, not its real part.
    assert y_real_params.dtype == jnp.complex64
    want = complex_reference(
        reference.conv,
        np.asarray(x),
        np.asarray(real_kernel) + 0j,
        **dict(REF, padding=[(0, 0), (0, 0)], dilation=(1, 1), groups=1),
    )
    np.testing.assert_allclose(y_real_params, want, rtol=1e-5, atol=1e-5)


PRESETS = jax.lax.DotAlgorithmPreset


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize(
    "preset, tolerance", [(PRESETS.F32_F32_F32, 1e-5), (PRESETS.BF16_BF16_F32, 2e-2)]
)
def test_complex_convolutions_with_a_dot_algorithm_preset(formulation, preset, tolerance):
    """A preset on complex operands keeps the imaginary parts (JAX's complex dot with a preset
    drops them): within the preset's rounding of the default precision's result."""
    rng = np.random.default_rng(5)
    x = as_array(complex_array(rng, (1, 12, 12, 4)), jnp.complex64)
    k = as_array(complex_array(rng, (5, 5, 2, 4)), jnp.complex64)
    conv = functools.partial(convjax.conv, impl=formulation, groups=2)
    want = conv(x, k)
    got = conv(x, k, precision=preset)
    assert got.dtype == jnp.complex64
    np.testing.assert_allclose(got, want, atol=tolerance * float(jnp.max(jnp.abs(want))))


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_presets_this_platform_lacks_are_emulated_or_refused_clearly(formulation):
    """``F16_F16_F32`` (which XLA:CPU's dot_general does not run) rounds the contractions'
    operands to float16 and sums in float32 (lax's convolution takes it as it is); an FP8
    preset, which names no input type, is refused by name where a contraction would need it."""
    rng = np.random.default_rng(6)
    x = as_array(rng.uniform(-1, 1, (1, 12, 12, 4)), jnp.float32)
    k = as_array(rng.uniform(-1, 1, (3, 3, 4, 8)), jnp.float32)
    conv = functools.partial(convjax.conv, impl=formulation)
    got = conv(x, k, precision=PRESETS.F16_F16_F32)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, conv(x, k), atol=2e-2)
    if formulation in ("gather", "taps"):  # one contraction of x's and k's values
        half = [a.astype(jnp.float16).astype(jnp.float32) for a in (x, k)]
        np.testing.assert_allclose(got, conv(*half), atol=1e-5)
    fp8 = functools.partial(conv, x, k, precision=PRESETS.ANY_F8_ANY_F8_F32)
    if formulation in ("gather", "taps", "fft"):
        with pytest.raises(
            ValueError, match=r"^conv: precision=ANY_F8_ANY_F8_F32 is not supp.*impl='lax'"
        ):
            fp8()
    else:
        assert fp8().dtype == jnp.float32


# -- JAX's default dtypes (x64 off): NumPy operands are converted as jnp functions convert them --


@pytest.mark.parametrize("op", OPS, ids=repr)
def test_numpy_float64_operands_without_x64_compute_in_float32(op):
    """With ``jax_enable_x64`` off (JAX's default; this suite turns it on), float64 NumPy
    operands are float32 to JAX: each operation gives what it gives on float32 JAX arrays, eager,
    under ``grad`` with a NumPy operand closed over, and with a float64 accumulation asked for
    (narrowed, with a warning).  convjax read the NumPy dtypes and XLA refused the lowering."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 6, 6, 2))
    operands = [rng.uniform(-1, 1, shape) for shape in op.operands(2)]
    with jax.enable_x64(False):
        y = op(x, *operands)
        expected = op(as_array(x), *map(as_array, operands))
        assert y.dtype == expected.dtype == jnp.float32
        np.testing.assert_array_equal(y, expected)
        grad = jax.grad(lambda x: jnp.sum(op(x, *operands)))(as_array(x))
        assert grad.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(grad)))
        if op.preferred_element_type:
            with pytest.warns(UserWarning, match=r"preferred_element_type float64 is not "):
                wide = op(x, *operands, preferred_element_type=np.float64)
            assert wide.dtype == jnp.float32
