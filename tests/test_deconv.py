"""deconvolve is the inverse (the regularised least-squares solution), not the transpose: exact
recovery, agreement of the two methods, dense float64 NumPy pseudo-inverses, noise."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from cases import make_case
from jax.test_util import check_grads

import convjax
from convjax._src.checks import as_array

BLUR = np.array([0.2, 0.6, 0.2])  # spectrum 0.6 + 0.4 cos ω >= 0.2: no zeros


def blur_kernel(ndim, c_in_per_group, c_out, seed=0):
    """``[3]*ndim`` separable blur times a well-conditioned channel mixing: invertible at every
    frequency when each group has at least as many outputs as inputs."""
    rng = np.random.default_rng(seed)
    spatial = functools.reduce(np.multiply.outer, [BLUR] * ndim)
    mixing = np.arange(c_out)[None, :] % c_in_per_group == np.arange(c_in_per_group)[:, None]
    mixing = mixing + 0.2 * rng.normal(size=(c_in_per_group, c_out))
    return spatial[..., None, None] * mixing


TWIST = np.array([0.1j, 0.0, -0.1j])  # adds −0.2 sin ω: BLUR + TWIST's spectrum is >= 0.15


def complex_kernel(ndim, c_in_per_group, c_out, seed=0):
    """``blur_kernel`` with a complex blur and a complex channel mixing: a transfer function
    without the symmetry ``H(−ω) = conj H(ω)`` of real kernels, still invertible everywhere."""
    rng = np.random.default_rng(seed)
    spatial = functools.reduce(np.multiply.outer, [BLUR + TWIST] * ndim)
    mixing = np.arange(c_out)[None, :] % c_in_per_group == np.arange(c_in_per_group)[:, None]
    size = (c_in_per_group, c_out)
    mixing = mixing + 0.2 * rng.normal(size=size) + 0.2j * rng.normal(size=size)
    return spatial[..., None, None] * mixing


def signal(shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape)


def rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    dtype = np.complex128 if np.iscomplexobj(a) or np.iscomplexobj(b) else np.float64
    a, b = a.astype(dtype), b.astype(dtype)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def complex_signal(shape, seed=1):
    return signal(shape, seed) + 1j * signal(shape, seed + 100)


def dense(x_shape, kernel, **ref):
    """The forward conv of one batch element as a float64 (complex128 for a complex kernel)
    [outputs, inputs] matrix: the conv is linear in the kernel, so a complex kernel's is that
    of its real part plus i times that of its imaginary part."""
    if np.iscomplexobj(kernel):
        return dense(x_shape, kernel.real, **ref) + 1j * dense(x_shape, kernel.imag, **ref)
    m = math.prod(x_shape)
    columns = reference.conv(np.eye(m).reshape(m, *x_shape), kernel, **ref)
    return columns.reshape(m, -1).T


# ndim, x shape, C_in // groups, C_out, groups
CHANNELS = [
    (1, (2, 24, 1), 1, 1, 1),
    (2, (2, 12, 10, 3), 3, 3, 1),  # full channel mixing: a 3x3 solve per frequency
    (2, (12, 10, 4), 1, 4, 4),  # depthwise: a scalar per channel and frequency
    (2, (1, 12, 10, 2), 1, 4, 2),  # depthwise, multiplier 2
    (2, (2, 9, 8, 4), 2, 6, 2),  # grouped, 3 outputs per 2 inputs per group
    (3, (6, 5, 4, 2), 2, 2, 1),
]
MODELS = [
    {"padding": "SAME", "padding_mode": "circular"},
    {"padding": "SAME", "padding_mode": "circular", "dilation": 2},
    {"padding": "FULL", "padding_mode": "zeros"},
]


def wiener_cases(channels, wide, narrow):
    """Channel layouts under every model in the ``wide`` dtype, and under the first model in
    the ``narrow`` one too."""
    settings = [(model, wide) for model in MODELS] + [(MODELS[0], narrow)]
    return [
        pytest.param(*c, model, dtype, id=f"{i}-{'-'.join(map(str, model.values()))}-{dtype}")
        for i, c in enumerate(channels)
        for model, dtype in settings
    ]


WIENER_CASES = wiener_cases(CHANNELS, "float64", "float32")


@pytest.mark.parametrize("ndim, x_shape, c, c_out, groups, model, dtype", WIENER_CASES)
def test_wiener_inverts_what_the_transpose_does_not(ndim, x_shape, c, c_out, groups, model, dtype):
    x = as_array(signal(x_shape), dtype)
    kernel = as_array(blur_kernel(ndim, c, c_out), dtype)

    @jax.jit  # one program per case: the conv, its inverse and its transpose
    def run(x, kernel):
        y = convjax.conv(x, kernel, groups=groups, **model)
        inverse = convjax.deconvolve(y, kernel, groups=groups, **model)
        return inverse, convjax.conv_transpose(y, kernel, groups=groups, **model)

    x_hat, back = run(x, kernel)
    assert x_hat.shape == x.shape and x_hat.dtype == x.dtype
    assert rel_err(x_hat, x) < (1e-4 if dtype == np.float64 else 1e-3)
    # Same shape from the transposed conv, but not the same values.
    assert back.shape == x.shape
    assert rel_err(back, x) > 0.2


@pytest.mark.parametrize(
    "impl, dtype",
    [("lax", np.float64), ("gather", np.float64), ("lax", np.float32)],
    ids=["lax-float64", "gather-float64", "lax-float32"],
)
@pytest.mark.parametrize(
    "model",
    [
        {"padding": "SAME", "padding_mode": "zeros"},
        {"padding": "SAME", "padding_mode": "reflect"},
        {"padding": 1, "padding_mode": "replicate", "groups": 3},
        {"padding": ((2, 0), (1, 1)), "padding_mode": "circular"},
        {"padding": ((1, 1), (2, 2)), "padding_mode": "zeros", "dilation": (1, 2)},
    ],
    ids=lambda m: "-".join(map(str, m.values())).replace(" ", ""),
)
def test_lsq_inverts_every_padding_mode(model, impl, dtype):
    groups = model.get("groups", 1)
    x = as_array(signal((2, 10, 9, 3)), dtype)
    kernel = as_array(blur_kernel(2, 3 // groups, 3), dtype)
    y = convjax.conv(x, kernel, **model)
    tol = 1e-10 if dtype == np.float64 else 1e-6
    solve = functools.partial(convjax.deconvolve, method="lsq", impl=impl, tol=tol, **model)
    x_hat = jax.jit(solve)(y, kernel)
    assert x_hat.shape == x.shape and x_hat.dtype == x.dtype
    assert rel_err(x_hat, x) < (1e-4 if dtype == np.float64 else 1e-3)


def tikhonov(matrix, y, lam):
    """argmin_x ‖M x − y‖² + λ ‖x‖², dense float64 or complex128 (minimum-norm for λ = 0)."""
    if lam == 0:
        return np.linalg.pinv(matrix) @ y
    adjoint = matrix.conj().T
    return np.linalg.solve(adjoint @ matrix + lam * np.eye(matrix.shape[1]), adjoint @ y)


def objective(matrix, x, y, lam):
    misfit = matrix @ np.ravel(x) - np.ravel(y)
    return float(np.vdot(misfit, misfit).real + lam * np.vdot(x, x).real)


NOISY = dict(x_shape=(7, 6, 2), kernel=blur_kernel(2, 2, 2), noise=0.05)


@pytest.mark.parametrize("regularization", [0.0, 0.05])
def test_circular_wiener_and_lsq_are_both_the_tikhonov_minimiser_for_noisy_data(regularization):
    x_shape, kernel = NOISY["x_shape"], NOISY["kernel"]
    ref = dict(strides=(1, 1), padding=[(1, 1), (1, 1)], dilation=(1, 1))
    matrix = dense(x_shape, kernel, padding_mode="circular", **ref)
    rng = np.random.default_rng(3)
    y = matrix @ signal(x_shape).ravel() + NOISY["noise"] * rng.normal(size=matrix.shape[0])
    options = dict(padding="SAME", padding_mode="circular", regularization=regularization)
    y = as_array(y.reshape(*x_shape[:-1], 2))
    want = tikhonov(matrix, np.ravel(y), regularization)
    wiener = convjax.deconvolve(y, as_array(kernel), **options)
    lsq = convjax.deconvolve(
        y, as_array(kernel), method="lsq", tol=1e-13, max_iters=2000, **options
    )
    np.testing.assert_allclose(np.ravel(wiener), want, atol=1e-9)
    np.testing.assert_allclose(np.ravel(lsq), want, atol=1e-8)


def periodic_matrix(x_shape, kernel):
    """The zero-padded conv's periodic extension: the circular conv on the grid of ``n = i +
    k̂ − 1`` samples per axis (CAUSAL circular padding), as a dense matrix."""
    spans = [k for k in kernel.shape[:-2]]
    grid = (*(i + k - 1 for i, k in zip(x_shape[:-1], spans)), x_shape[-1])
    pads = [(k - 1, 0) for k in spans]
    ones = (1,) * len(spans)
    return dense(grid, kernel, strides=ones, padding=pads, dilation=ones, padding_mode="circular")


@pytest.mark.parametrize("regularization", [0.0, 0.05])
@pytest.mark.parametrize("padding", ["FULL", "SAME"])
def test_zero_padded_wiener_solves_the_periodic_problem_and_lsq_the_stated_one(
    padding, regularization
):
    """What the docs say, exactly: Wiener places y on the grid of i + k̂ − 1 samples (zero where
    the padding cut it off), minimises the periodic objective there and keeps the first i
    samples; lsq minimises the objective of the zero-padded conv itself."""
    x_shape, kernel = NOISY["x_shape"], NOISY["kernel"]
    pads = [(2, 2), (2, 2)] if padding == "FULL" else [(1, 1), (1, 1)]
    matrix = dense(x_shape, kernel, strides=(1, 1), padding=pads, dilation=(1, 1))
    rng = np.random.default_rng(4)
    clean = matrix @ signal(x_shape).ravel()
    out = [i + lo + hi - 2 for i, (lo, hi) in zip(x_shape[:-1], pads)]
    y = (clean + NOISY["noise"] * rng.normal(size=clean.shape)).reshape(*out, 2)
    options = dict(padding=padding, padding_mode="zeros", regularization=regularization)
    wiener = convjax.deconvolve(as_array(y), as_array(kernel), **options)
    lsq = convjax.deconvolve(
        as_array(y), as_array(kernel), method="lsq", tol=1e-13, max_iters=3000, **options
    )
    np.testing.assert_allclose(
        np.ravel(lsq), tikhonov(matrix, np.ravel(y), regularization), atol=1e-7
    )
    # The periodic problem: y placed at offset k̂ − 1 − lo on the extended grid.
    grid = tuple(i + 2 for i in x_shape[:-1])
    placed = np.zeros((*grid, 2))
    offsets = [2 - lo for lo, _ in pads]
    placed[offsets[0] : offsets[0] + y.shape[0], offsets[1] : offsets[1] + y.shape[1]] = y
    periodic = tikhonov(periodic_matrix(x_shape, kernel), placed.ravel(), regularization)
    want = periodic.reshape(*grid, 2)[: x_shape[0], : x_shape[1]]
    np.testing.assert_allclose(wiener, want, atol=1e-9)
    # lsq minimises the stated objective; the periodic answer is a worse one for noisy data.
    assert objective(matrix, lsq, y, regularization) <= objective(
        matrix, wiener, y, regularization
    ) * (1 + 1e-9)
    assert rel_err(wiener, lsq) > 1e-3


def test_zero_padded_wiener_is_exact_for_noise_free_full_output():
    x = signal((2, 9, 8, 2))
    kernel = blur_kernel(2, 2, 2)
    y = convjax.conv(as_array(x), as_array(kernel), padding="FULL")
    x_hat = convjax.deconvolve(y, as_array(kernel), padding="FULL")
    np.testing.assert_allclose(x_hat, x, atol=1e-9)


@pytest.mark.parametrize("c_in, c_out", [(1, 1), (2, 2), (2, 3), (3, 2)])
def test_wiener_with_singular_transfer_matrices_is_the_pseudo_inverse(c_in, c_out):
    """λ = 0 and a transfer matrix singular at every frequency (a rank-1 channel mixing, or for
    one channel a kernel with spectral zeros): the pseudo-inverse, never NaN, for scalar and
    matrix transfer functions alike."""
    rng = np.random.default_rng(5)
    spatial = np.array([0.25, 0.5, 0.25])  # its spectrum is 0 at the Nyquist frequency
    mixing = np.outer(rng.normal(size=c_in), rng.normal(size=c_out))  # rank 1
    kernel = spatial[:, None, None] * mixing
    x_shape = (8, c_in)
    matrix = dense(
        x_shape, kernel, strides=(1,), padding=[(1, 1)], dilation=(1,), padding_mode="circular"
    )
    y = rng.normal(size=(8, c_out))
    x_hat = convjax.deconvolve(
        as_array(y), as_array(kernel), padding="SAME", padding_mode="circular"
    )
    assert np.all(np.isfinite(x_hat))
    np.testing.assert_allclose(np.ravel(x_hat), np.linalg.pinv(matrix) @ y.ravel(), atol=1e-8)


@pytest.mark.parametrize("method", ["wiener", "lsq"])
def test_residual_of_an_all_zero_signal_is_zero(method):
    _, info = convjax.deconvolve(
        jnp.zeros((2, 8, 8, 1)),
        as_array(blur_kernel(2, 1, 1)),
        method=method,
        padding="SAME",
        padding_mode="circular",
        return_info=True,
    )
    np.testing.assert_array_equal(info.residual, 0)


def test_wiener_with_fewer_outputs_than_inputs_is_the_minimum_norm_solution():
    """2 output channels from 3 inputs: underdetermined at every frequency; λ = 0 gives A⁺ y."""
    x = signal((7, 6, 3))
    kernel = blur_kernel(2, 3, 2)
    ref = dict(strides=(1, 1), padding=[(1, 1), (1, 1)], dilation=(1, 1))
    matrix = dense(x.shape, kernel, padding_mode="circular", **ref)
    y = (matrix @ x.ravel()).reshape(7, 6, 2)
    options = dict(padding="SAME", padding_mode="circular")
    x_hat = convjax.deconvolve(as_array(y), as_array(kernel), **options)
    np.testing.assert_allclose(x_hat.ravel(), np.linalg.pinv(matrix) @ y.ravel(), atol=1e-10)
    lsq = convjax.deconvolve(
        as_array(y), as_array(kernel), method="lsq", tol=1e-13, max_iters=1000, **options
    )
    np.testing.assert_allclose(lsq, x_hat, atol=1e-9)


def psnr(estimate, truth):
    mse = np.mean((np.asarray(estimate) - np.asarray(truth)) ** 2)
    return 10 * np.log10(np.ptp(np.asarray(truth)) ** 2 / mse)


def test_regularisation_beats_the_plain_inverse_on_noisy_data():
    n = 32
    grid = np.arange(n) / n
    image = np.sin(6 * np.pi * grid)[:, None] * np.cos(4 * np.pi * grid)[None, :]
    image = (image + (np.add.outer(grid, grid) > 1.0))[..., None]
    taps = np.exp(-0.5 * (np.arange(-3, 4) / 1.2) ** 2)
    kernel = np.multiply.outer(taps, taps)[..., None, None]
    kernel = as_array(kernel / kernel.sum())
    options = dict(padding="SAME", padding_mode="circular")
    y = convjax.conv(as_array(image), kernel, **options)
    noisy = y + 0.01 * as_array(np.random.default_rng(0).normal(size=y.shape))
    plain = convjax.deconvolve(noisy, kernel, **options)
    regularised = convjax.deconvolve(noisy, kernel, regularization=1e-3, **options)
    assert psnr(regularised, image) > psnr(noisy, image) > psnr(plain, image)
    assert psnr(regularised, image) > psnr(plain, image) + 20
    # Without noise, the plain inverse is exact and regularisation costs a little.
    assert rel_err(convjax.deconvolve(y, kernel, **options), image) < 1e-6


@pytest.mark.parametrize("impl", ["lax", "gather"])
@pytest.mark.parametrize(
    "x_shape, kernel_shape, options",
    [
        ((7, 7, 2), (3, 3, 2, 3), dict(strides=2, padding=1)),
        (
            (11, 4),
            (3, 2, 2),
            dict(strides=3, padding=2, dilation=2, groups=2, padding_mode="reflect"),
        ),
        ((6, 5, 2), (2, 3, 2, 2), dict(strides=(2, 1), padding="SAME", padding_mode="circular")),
    ],
)
def test_lsq_on_a_strided_conv_is_the_minimum_norm_solution(x_shape, kernel_shape, options, impl):
    rng = np.random.default_rng(0)
    x, kernel = rng.normal(size=x_shape), rng.normal(size=kernel_shape)
    y = convjax.conv(as_array(x), as_array(kernel), **options)
    assert y.size < x.size  # underdetermined
    # The dense matrix from the independent NumPy reference, and its pseudo-inverse.
    matrix = dense(x_shape, kernel, **make_case(x_shape, kernel_shape, **options)["ref"])
    np.testing.assert_allclose(matrix @ x.ravel(), np.ravel(y), atol=1e-12)
    x_hat, info = convjax.deconvolve(
        y,
        as_array(kernel),
        method="lsq",
        input_shape=x_shape[:-1],
        tol=1e-13,
        max_iters=1000,
        impl=impl,
        return_info=True,
        **options,
    )
    assert x_hat.shape == x.shape
    # Its forward image is y ...
    assert float(info.residual) < 1e-9
    np.testing.assert_allclose(matrix @ np.ravel(x_hat), np.ravel(y), atol=1e-9)
    # ... it is not x (the problem is underdetermined) but A⁺ y, orthogonal to the null space.
    assert rel_err(x_hat, x) > 0.1
    np.testing.assert_allclose(np.ravel(x_hat), np.linalg.pinv(matrix) @ np.ravel(y), atol=1e-9)
    _, singular, vt = np.linalg.svd(matrix)
    null = vt[np.sum(singular > 1e-10) :]
    assert np.abs(null @ np.ravel(x_hat)).max() < 1e-9
    # With damping: (AᵀA + λI)⁻¹ Aᵀ y.
    lam = 0.3
    damped = convjax.deconvolve(
        y,
        as_array(kernel),
        method="lsq",
        regularization=lam,
        input_shape=x_shape[:-1],
        tol=1e-13,
        impl=impl,
        **options,
    )
    gram = matrix.T @ matrix + lam * np.eye(matrix.shape[1])
    want = np.linalg.solve(gram, matrix.T @ np.ravel(y))
    np.testing.assert_allclose(np.ravel(damped), want, atol=1e-9)


# -- complex and integer dtypes -------------------------------------------------------------------

COMPLEX = wiener_cases(CHANNELS[:3], "complex128", "complex64")


@pytest.mark.parametrize("ndim, x_shape, c, c_out, groups, model, dtype", COMPLEX)
def test_wiener_inverts_complex_convolutions(ndim, x_shape, c, c_out, groups, model, dtype):
    x = as_array(complex_signal(x_shape), dtype)
    kernel = as_array(complex_kernel(ndim, c, c_out), dtype)

    @jax.jit
    def run(x, kernel):
        y = convjax.conv(x, kernel, groups=groups, **model)
        return convjax.deconvolve(y, kernel, groups=groups, return_info=True, **model)

    x_hat, info = run(x, kernel)
    assert x_hat.shape == x.shape and x_hat.dtype == x.dtype
    assert rel_err(x_hat, x) < (1e-4 if dtype == np.complex128 else 1e-3)
    assert info.residual.dtype == np.finfo(dtype).dtype  # a real norm
    assert float(info.residual.max()) < (1e-8 if dtype == np.complex128 else 1e-4)


@pytest.mark.parametrize("kernel_kind", ["complex", "real"])
@pytest.mark.parametrize(
    "impl, dtype",
    [("lax", np.complex128), ("gather", np.complex128), ("lax", np.complex64)],
    ids=["lax-complex128", "gather-complex128", "lax-complex64"],
)
def test_lsq_inverts_complex_convolutions(impl, dtype, kernel_kind):
    """Conjugate gradients on ``(AᴴA + λI) x = Aᴴ y``: the conjugate transpose, conjugated inner
    products, for complex kernels and for real kernels cast to complex alike."""
    x = as_array(complex_signal((2, 9, 8, 2)), dtype)
    kernel = complex_kernel(2, 2, 2) if kernel_kind == "complex" else blur_kernel(2, 2, 2)
    kernel = as_array(kernel, dtype)
    y = convjax.conv(x, kernel, padding="FULL")
    tol = 1e-10 if dtype == np.complex128 else 1e-6
    solve = functools.partial(
        convjax.deconvolve, padding="FULL", method="lsq", tol=tol, impl=impl, return_info=True
    )
    x_hat, info = jax.jit(solve)(y, kernel)
    assert x_hat.shape == x.shape and x_hat.dtype == x.dtype
    assert rel_err(x_hat, x) < (1e-4 if dtype == np.complex128 else 1e-3)
    assert info.residual.dtype == np.finfo(dtype).dtype and info.residual.shape == (2,)
    assert float(info.residual.max()) < (1e-8 if dtype == np.complex128 else 1e-4)
    assert 1 < int(info.iterations) < 500


@pytest.mark.parametrize("regularization", [0.0, 0.05])
@pytest.mark.parametrize("padding_mode", ["circular", "zeros"])
def test_complex_lsq_is_the_tikhonov_minimiser_for_noisy_data(padding_mode, regularization):
    """Against the dense complex128 ``(AᴴA + λI)⁻¹ Aᴴ y``; with circular padding Wiener is the
    same minimiser."""
    x_shape, kernel = NOISY["x_shape"], complex_kernel(2, 2, 2)
    ref = dict(strides=(1, 1), padding=[(1, 1), (1, 1)], dilation=(1, 1))
    matrix = dense(x_shape, kernel, padding_mode=padding_mode, **ref)
    rng = np.random.default_rng(3)
    noise = rng.normal(size=matrix.shape[0]) + 1j * rng.normal(size=matrix.shape[0])
    y = matrix @ complex_signal(x_shape).ravel() + NOISY["noise"] * noise
    y = as_array(y.reshape(*x_shape[:-1], 2))
    want = tikhonov(matrix, np.ravel(y), regularization)
    options = dict(padding="SAME", padding_mode=padding_mode, regularization=regularization)
    lsq = convjax.deconvolve(
        y, as_array(kernel), method="lsq", tol=1e-13, max_iters=2000, **options
    )
    np.testing.assert_allclose(np.ravel(lsq), want, atol=1e-8)
    if padding_mode == "circular":
        wiener = convjax.deconvolve(y, as_array(kernel), **options)
        np.testing.assert_allclose(np.ravel(wiener), want, atol=1e-9)


@pytest.mark.parametrize("method", ["wiener", "lsq"])
@pytest.mark.parametrize(
    "dtype, result", [("int16", "float32"), ("int32", "float32"), ("int64", "float64")]
)
def test_integers_are_deconvolved_in_floating_point(dtype, result, method):
    """As ``jnp.linalg.solve`` does: integers of up to 32 bits in float32, int64 in float64."""
    x = np.random.default_rng(6).integers(-9, 10, (2, 8, 7, 2))
    spatial = np.multiply.outer([1, 3, 1], [1, 3, 1])  # spectrum (3 + 2 cos ω)² >= 1
    kernel = spatial[..., None, None] * np.array([[2, 1], [0, 1]])  # invertible mixing
    options = dict(padding="SAME", padding_mode="circular", method=method)
    ref = dict(strides=(1, 1), padding=[(1, 1), (1, 1)], dilation=(1, 1))
    y = np.rint(reference.conv(x, kernel, padding_mode="circular", **ref)).astype(dtype)
    x_hat, info = convjax.deconvolve(
        as_array(y), as_array(kernel, dtype), return_info=True, **options
    )
    assert x_hat.dtype == info.residual.dtype == np.dtype(result)
    np.testing.assert_allclose(x_hat, x, atol=1e-3)
    assert float(info.residual.max()) < 1e-5
    as_float = convjax.deconvolve(as_array(y, result), as_array(kernel, result), **options)
    np.testing.assert_array_equal(x_hat, as_float)


# -- jit, vmap, grad, info ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["wiener", "lsq"])
def test_jit_and_vmap(method):
    x = as_array(signal((3, 8, 7, 2)))
    kernel = as_array(blur_kernel(2, 2, 2))
    options = dict(padding="SAME", padding_mode="circular")
    y = convjax.conv(x, kernel, **options)
    f = functools.partial(
        convjax.deconvolve, method=method, regularization=0.01, tol=1e-12, **options
    )
    eager = f(y, kernel)
    np.testing.assert_allclose(jax.jit(f)(y, kernel), eager, atol=1e-10)
    np.testing.assert_allclose(jax.vmap(f, (0, None))(y, kernel), eager, atol=1e-10)
    # A traced regularisation weight is fine too.
    g = jax.jit(
        lambda y, lam: convjax.deconvolve(y, kernel, method=method, regularization=lam, **options)
    )
    np.testing.assert_allclose(g(y, 0.01), f(y, kernel, tol=1e-6), atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128], ids=["float64", "complex128"])
@pytest.mark.parametrize("method", ["wiener", "lsq"])
def test_gradients(method, dtype):
    if dtype == np.complex128:  # reverse mode solves with (AᴴA + λI)ᵀ, which is not AᴴA + λI
        x, kernel = as_array(complex_signal((6, 5, 2))), as_array(complex_kernel(2, 2, 2))
    else:
        x, kernel = as_array(signal((6, 5, 2))), as_array(blur_kernel(2, 2, 2))
    options = dict(padding="SAME", padding_mode="circular")
    y = convjax.conv(x, kernel, **options)

    @jax.jit
    def f(y, kernel, lam):
        return convjax.deconvolve(
            y, kernel, method=method, regularization=lam, tol=1e-14, max_iters=1000, **options
        )

    check_grads(f, (y, kernel, 0.1), order=1, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5)


def test_lsq_derivatives_are_those_of_the_exact_solution():
    """Implicit differentiation of the normal equations: forward and reverse mode agree with
    each other once the solver has converged.  Capped short of convergence they are two
    different approximations of that derivative; ``info`` says when that happened."""
    x = as_array(signal((9, 8, 1)))
    kernel = as_array(blur_kernel(2, 1, 1))
    options = dict(padding="SAME", padding_mode="reflect", method="lsq")
    y = convjax.conv(x, kernel, padding="SAME", padding_mode="reflect")

    def jacobians(**solver):
        f = lambda kernel: convjax.deconvolve(y, kernel, **options, **solver)  # noqa: E731
        _, info = convjax.deconvolve(y, kernel, return_info=True, **options, **solver)
        return jax.jacfwd(f)(kernel), jax.jacrev(f)(kernel), info

    forward, reverse, info = jacobians(tol=1e-13, max_iters=1000)
    assert int(info.iterations) < 1000 and float(info.residual) < 1e-10
    np.testing.assert_allclose(forward, reverse, atol=1e-8)
    _, _, capped = jacobians(max_iters=2)
    assert int(capped.iterations) == 2 and float(capped.residual) > 1e-3


def test_info_reports_iterations_and_residual():
    x = as_array(signal((2, 10, 10, 1)))
    kernel = as_array(blur_kernel(2, 1, 1))
    options = dict(padding="SAME", padding_mode="reflect", method="lsq")
    y = convjax.conv(x, kernel, padding="SAME", padding_mode="reflect")
    capped, capped_info = convjax.deconvolve(y, kernel, max_iters=3, return_info=True, **options)
    assert int(capped_info.iterations) == 3 and capped_info.residual.shape == (2,)
    solved, info = convjax.deconvolve(y, kernel, tol=1e-10, return_info=True, **options)
    assert 3 < int(info.iterations) < 500
    assert float(info.residual.max()) < 1e-9 < float(capped_info.residual.min())
    misfit = convjax.conv(capped, kernel, padding="SAME", padding_mode="reflect") - y
    np.testing.assert_allclose(
        capped_info.residual,
        jnp.linalg.norm(misfit.reshape(2, -1), axis=1) / jnp.linalg.norm(y.reshape(2, -1), axis=1),
    )
    assert rel_err(solved, x) < 1e-6
    _, info = convjax.deconvolve(
        y[0], kernel, padding="SAME", padding_mode="circular", return_info=True
    )
    assert int(info.iterations) == 0 and info.residual.shape == ()


# -- errors ---------------------------------------------------------------------------------------

Y = jnp.zeros((2, 8, 8, 3), jnp.float32)
K = jnp.zeros((3, 3, 3, 3), jnp.float32)


@pytest.mark.parametrize(
    "y, kernel, options, error, match",
    [
        (
            Y,
            K,
            {"strides": 2},
            ValueError,
            r"deconvolve: method='wiener' needs strides 1 .*use method='lsq'\), got \(2, 2\)",
        ),
        (Y, K, {"method": "inverse"}, ValueError, r"deconvolve: method must be one of"),
        (
            Y,
            K,
            {"regularization": -0.1},
            ValueError,
            r"deconvolve: regularization must be finite and >= 0, got -0.1",
        ),
        (Y, K, {"regularization": "a lot"}, TypeError, r"regularization must be a real number"),
        (Y, K, {"method": "lsq", "tol": -1.0}, ValueError, r"deconvolve: tol must be finite"),
        (Y, K, {"method": "lsq", "max_iters": 2.5}, TypeError, r"max_iters must be an int"),
        (
            Y,
            K,
            {"padding_mode": "reflect"},
            ValueError,
            r"method='wiener' inverts circular or zero padding only, got padding_mode 'reflect'",
        ),
        (
            Y,
            K,
            {"padding_mode": "circular"},
            ValueError,
            r"wiener' with circular padding needs a same-size convolution",
        ),
        (
            Y,
            jnp.zeros((3, 3, 3, 4), jnp.float32),
            {},
            ValueError,
            r"deconvolve: kernel.shape\[-1\] must equal the channels of y \(3\), got 4",
        ),
        (
            Y,
            K,
            {"method": "lsq", "strides": 2, "input_shape": (20, 16)},
            ValueError,
            r"deconvolve: input_shape \(20, 16\) is out of reach in spatial dim 0: y spatial "
            r"size 8 .* reaches sizes 17 to 18, got 20",
        ),
        (
            Y,
            K.astype(jnp.float64),
            {},
            TypeError,
            r"deconvolve: y and kernel must share a dtype, got y float32 and kernel float64",
        ),
        (Y, K, {"groups": 2}, ValueError, r"deconvolve: groups must divide"),
    ],
)
def test_errors(y, kernel, options, error, match):
    with pytest.raises(error, match=match):
        convjax.deconvolve(y, kernel, **options)


@pytest.mark.parametrize("method", ["lsq", "wiener"])
@pytest.mark.parametrize("scale", [1e-10, 1e20])
def test_the_solution_does_not_depend_on_units(method, scale):
    """float32 sums of squares underflowed (a kernel of 1e-8: the solve stopped at x = 0)."""
    x = jax.random.normal(jax.random.key(0), (8, 1), jnp.float32)
    kernel = as_array([0.2, 0.6, 0.2], jnp.float32).reshape(3, 1, 1)
    options = dict(padding="SAME", padding_mode="circular", method=method)
    y = convjax.conv(x, kernel, padding="SAME", padding_mode="circular")
    small, info = convjax.deconvolve(y * scale, kernel * scale, return_info=True, **options)
    np.testing.assert_allclose(small, x, atol=2e-6)
    assert float(info.residual) < 1e-5
    if abs(math.log10(scale)) <= 10:  # λ·scale² still a normal float32
        lam = 0.05  # λ is in the kernel's units squared
        reference = convjax.deconvolve(y, kernel, regularization=lam, **options)
        scaled = convjax.deconvolve(y, kernel * scale, regularization=lam * scale**2, **options)
        np.testing.assert_allclose(scaled * scale, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["lsq", "wiener"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_kernel_gives_nan_never_a_confident_zero(method, bad):
    y = jnp.ones((8, 1), jnp.float32)
    kernel = as_array([bad, 0.6, 0.2], jnp.float32).reshape(3, 1, 1)
    x = convjax.deconvolve(y, kernel, padding="SAME", padding_mode="circular", method=method)
    assert bool(jnp.all(jnp.isnan(x)))


@pytest.mark.parametrize("method", ["lsq", "wiener"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("padding", ["FULL", "circular"])
def test_a_non_finite_y_makes_its_batch_element_nan_and_leaves_the_others(method, bad, padding):
    """Every entry of an inverse depends on all of y: one non-finite value in an image makes
    that image's solution NaN (CG stopped at once, at a confident 0, for the lsq method)."""
    rng = np.random.default_rng(0)
    x = as_array(rng.normal(size=(2, 6, 6, 2)), jnp.float32)
    kernel = as_array(rng.normal(size=(3, 3, 2, 2)), jnp.float32)
    options = (
        dict(padding="FULL") if padding == "FULL" else dict(padding="SAME", padding_mode="circular")
    )
    y = convjax.conv(x, kernel, **options).at[0, 3, 3, 0].set(bad)
    solved = convjax.deconvolve(y, kernel, method=method, **options)
    assert bool(jnp.all(jnp.isnan(solved[0])))
    np.testing.assert_allclose(solved[1], x[1], atol=2e-3)
