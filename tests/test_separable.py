"""Spatially separable and depthwise separable convs, and SVD factors, against float64 NumPy."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from cases import CASES, case_id, configs, make_case
from helpers import IMPLS, assert_close
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads

import convjax
from convjax._src.checks import as_array

SMOOTH = np.array([1.0, 2.0, 1.0])
DIFF = np.array([1.0, 0.0, -1.0])
SOBEL = np.outer(SMOOTH, DIFF)  # [[1, 0, -1], [2, 0, -2], [1, 0, -1]]

# One compilation per kernel shape and rank, rather than one per eager op.
factors = jax.jit(convjax.separable_factors, static_argnames=("rank", "tol"))


def composed_kernel(kernels, groups):
    """The full kernel ``[*window, C_0 // groups, C_N]`` of a chain of 1-D kernels, by NumPy
    einsum over the chained channels within each group (a sum of outer products)."""
    kernels = [np.asarray(k, np.float64) for k in kernels]
    k0 = kernels[0]
    full = k0.reshape(k0.shape[0], k0.shape[1], groups, -1)  # [k1, c, g, m]
    for k in kernels[1:]:
        k = k.reshape(k.shape[0], k.shape[1], groups, -1)  # [k_i, m, g, j]
        full = np.einsum("...cgm,tmgj->...tcgj", full, k)
    return full.reshape(*full.shape[:-2], -1)


def split(case, middle):
    """``case`` with its window split into 1-D kernels; ``middle`` gives the channels between
    them, as a multiple of the groups."""
    ndim = len(case["kernel_shape"]) - 2
    groups = case["options"]["groups"]
    chain = [case["x_shape"][-1], *(groups * middle() for _ in range(ndim - 1))]
    chain.append(case["kernel_shape"][-1])
    shapes = [
        (k, chain[i] // groups, chain[i + 1]) for i, k in enumerate(case["kernel_shape"][:ndim])
    ]
    return dict(case, kernel_shapes=shapes)


@st.composite
def separable_configs(draw, max_ndim=3):
    """A shared conv config, with its window split into 1-D kernels whose channels chain."""
    return split(draw(configs(max_ndim=max_ndim)), lambda: draw(st.integers(1, 3)))


SEPARABLE_CASES = [split(case, lambda: 2) for case in CASES]
# Four shared cases, run without jit (the random configs run jitted): the classic 5x5, groups
# with strides, dilated reflect, and 3-d circular.
EAGER = [0, 2, 3, 5]


def separable_operands(case, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = as_array(rng.uniform(-1, 1, case["x_shape"]), dtype)
    kernels = [as_array(rng.uniform(-1, 1, s), dtype) for s in case["kernel_shapes"]]
    return x, kernels


def separable_fan_in(case):
    return math.prod(case["kernel_shape"][:-2]) * max(s[1] for s in case["kernel_shapes"]) ** 2


def run_separable(case, x, kernels, impl, jit):
    f = functools.partial(convjax.spatial_separable_conv, impl=impl, **case["options"])
    return (jax.jit(f) if jit else f)(x, kernels)


# ---------------------------------------------------------------------------------------------
# spatial_separable_conv


def check_separable_against_reference(case, jit):
    x, kernels = separable_operands(case)
    full = composed_kernel(kernels, case["options"]["groups"])
    want = reference.conv(np.asarray(x), full, **case["ref"])
    for impl in IMPLS:
        y = run_separable(case, x, kernels, impl, jit)
        assert_close(y, want, np.float64, separable_fan_in(case))


@given(case=separable_configs())
def test_spatial_separable_equals_conv_with_composed_kernel_float64(case):
    """Every padding form and mode, strides, dilation, groups, 1-3 dims: the chain of 1-D convs
    equals the reference conv with the sum-of-outer-products kernel."""
    check_separable_against_reference(case, jit=True)


@pytest.mark.parametrize("case", [SEPARABLE_CASES[i] for i in EAGER], ids=case_id)
def test_spatial_separable_shared_cases_eager(case):
    check_separable_against_reference(case, jit=False)


@pytest.mark.parametrize("impl", IMPLS)
def test_sobel_as_two_1d_kernels_is_the_3x3_sobel_conv(impl):
    """The seed: [1, 2, 1]ᵀ · [1, 0, −1], 6 parameters instead of 9, the same output."""
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (2, 12, 10, 1))
    smooth, diff = SMOOTH.reshape(3, 1, 1), DIFF.reshape(3, 1, 1)
    y = convjax.spatial_separable_conv(as_array(image), [smooth, diff], padding=1, impl=impl)
    want = reference.conv(image, SOBEL.reshape(3, 3, 1, 1), (1, 1), [(1, 1), (1, 1)], (1, 1))
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        convjax.conv(as_array(image), as_array(SOBEL.reshape(3, 3, 1, 1)), padding=1),
        want,
        rtol=1e-12,
        atol=1e-12,
    )
    assert smooth.size + diff.size == 6 and SOBEL.size == 9


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_per_channel_factors_equal_depthwise_conv_with_outer_product(impl, mode):
    """groups = C with [k_i, 1, C] factors: conv with the per-channel outer-product kernel."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 9, 7, 3))
    a, b = rng.normal(size=(3, 1, 3)), rng.normal(size=(4, 1, 3))
    outer = np.einsum("tc,uc->tuc", a[:, 0], b[:, 0])[:, :, None, :]  # [3, 4, 1, 3]
    options = dict(strides=(2, 1), padding="SAME", dilation=(1, 2), padding_mode=mode)
    y = convjax.spatial_separable_conv(as_array(x), [a, b], groups=3, impl=impl, **options)
    pads = [(1, 1), (3, 3)]
    want = reference.conv(x, outer, (2, 1), pads, (1, 2), groups=3, padding_mode=mode)
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
    depthwise = convjax.depthwise_conv(as_array(x), as_array(outer), impl=impl, **options)
    np.testing.assert_allclose(y, depthwise, rtol=1e-12, atol=1e-12)


def test_channel_mixing_factors_equal_the_sum_of_outer_products():
    """K[t, u, c, o] = Σ_m a[t, c, m] b[u, m, o], written as an explicit sum of outer products."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 8, 8, 2))
    a, b = rng.normal(size=(3, 2, 5)), rng.normal(size=(2, 5, 4))
    full = sum(np.einsum("tc,uo->tuco", a[:, :, m], b[:, m, :]) for m in range(5))  # 5 rank-1 terms
    want = reference.conv(x, full, (1, 1), [(0, 0), (0, 0)], (1, 1))
    for impl in IMPLS:
        y = convjax.spatial_separable_conv(as_array(x), [a, b], impl=impl)
        np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "dtype", [np.float32, jnp.bfloat16, np.float16], ids=["float32", "bfloat16", "float16"]
)
@pytest.mark.parametrize("impl", IMPLS)
def test_spatial_separable_dtypes(impl, dtype):
    case = make_case((2, 9, 8, 4), (3, 2, 2, 6), strides=(2, 1), padding="SAME", groups=2)
    case["kernel_shapes"] = [(3, 2, 4), (2, 2, 6)]
    x, kernels = separable_operands(case, dtype)
    want = reference.conv(np.asarray(x, np.float64), composed_kernel(kernels, 2), **case["ref"])
    y = convjax.spatial_separable_conv(x, kernels, impl=impl, **case["options"])
    assert y.dtype == np.dtype(dtype)
    assert_close(y, want, dtype, 3 * 2 * 2 * 2)
    wide = convjax.spatial_separable_conv(
        x, kernels, impl=impl, preferred_element_type=jnp.float32, **case["options"]
    )
    assert wide.dtype == jnp.float32
    assert_close(wide, want, np.float32, 1e4 if dtype != np.float32 else 24)


@pytest.mark.parametrize("impl", IMPLS)
def test_spatial_separable_vmap_and_grad(impl):
    case = make_case((2, 7, 6, 2), (3, 2, 2, 3), padding="SAME", padding_mode="reflect")
    case["kernel_shapes"] = [(3, 2, 4), (2, 4, 3)]
    x, kernels = separable_operands(case)
    f = functools.partial(convjax.spatial_separable_conv, impl=impl, **case["options"])
    xs = jnp.stack([x, -2 * x])
    np.testing.assert_allclose(jax.vmap(f, (0, None))(xs, kernels), f(xs, kernels), rtol=1e-12)
    stacked = [jnp.stack([kernels[0], 2 * kernels[0]]), kernels[1]]
    per_kernel = jax.vmap(f, (None, [0, None]))(x, stacked)
    np.testing.assert_allclose(per_kernel[1], 2 * f(x, kernels), rtol=1e-12, atol=1e-12)
    check_grads(f, (x, kernels), order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


def test_spatial_separable_grads_equal_conv_grads_of_the_composed_kernel():
    """d/dx of the separable conv equals d/dx of conv with the composed kernel."""
    case = make_case((1, 8, 7, 2), (3, 3, 2, 2), strides=2, padding="FULL", dilation=(2, 1))
    a, b = as_array(np.random.default_rng(3).normal(size=(2, 3, 2, 2)))
    full = jnp.einsum("tcm,umo->tuco", a, b)
    x = as_array(np.random.default_rng(4).normal(size=case["x_shape"]))
    dense = jax.grad(lambda x: jnp.sum(jnp.sin(convjax.conv(x, full, **case["options"]))))(x)
    for impl in IMPLS:
        sep_conv = functools.partial(convjax.spatial_separable_conv, impl=impl, **case["options"])
        sep = jax.grad(lambda x, f=sep_conv: jnp.sum(jnp.sin(f(x, [a, b]))))(x)
        np.testing.assert_allclose(sep, dense, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# depthwise_separable_conv


@st.composite
def depthwise_separable_configs(draw):
    return depthwise_separable_case(
        draw(configs(max_ndim=2)), lambda lo, hi: draw(st.integers(lo, hi))
    )


def depthwise_separable_case(case, integers):
    """``case``'s window and options as a depthwise separable conv; ``integers(lo, hi)`` picks
    the depth multiplier and the output channels.  ``case`` itself is left unchanged (it may be
    one of the shared ``CASES``)."""
    case = dict(case)
    ndim = len(case["kernel_shape"]) - 2
    c_in = case["x_shape"][-1]
    m = int(integers(1, 2))
    c_out = int(integers(1, 4))
    options = dict(case["options"])
    del options["groups"]
    case["options"] = options
    case["ref"] = dict(case["ref"], groups=c_in)
    case["depthwise_shape"] = (*case["kernel_shape"][:ndim], 1, c_in * m)
    case["pointwise_shape"] = (c_in * m, c_out)
    return case


def depthwise_separable_operands(case, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(
        as_array(rng.uniform(-1, 1, case[name]), dtype)
        for name in ("x_shape", "depthwise_shape", "pointwise_shape")
    )


def depthwise_separable_reference(case, x, depthwise, pointwise):
    """Depthwise reference conv then an explicit per-position channel sum."""
    y = reference.conv(np.asarray(x), np.asarray(depthwise), **case["ref"])
    return np.einsum("...c,co->...o", y, np.asarray(pointwise, np.float64))


@given(case=depthwise_separable_configs())
def test_depthwise_separable_matches_reference(case):
    check_depthwise_separable_against_reference(case, jit=True)


@pytest.mark.parametrize("case", [CASES[i] for i in EAGER], ids=case_id)
def test_depthwise_separable_shared_cases_eager(case):
    rng = np.random.default_rng(0)
    check_depthwise_separable_against_reference(depthwise_separable_case(case, rng.integers), False)


def check_depthwise_separable_against_reference(case, jit):
    x, depthwise, pointwise = depthwise_separable_operands(case)
    want = depthwise_separable_reference(case, x, depthwise, pointwise)
    fan = math.prod(case["depthwise_shape"][:-2]) * case["pointwise_shape"][0]
    for impl in IMPLS:
        f = functools.partial(convjax.depthwise_separable_conv, impl=impl, **case["options"])
        y = (jax.jit(f) if jit else f)(x, depthwise, pointwise)
        assert_close(y, want, np.float64, fan)


@pytest.mark.parametrize("impl", IMPLS)
def test_depthwise_separable_is_depthwise_then_1x1_and_a_single_conv(impl):
    """Equals depthwise_conv then a 1x1 conv, and conv with K[t, c, o] = Σ_j d[t, cm+j] p[cm+j, o];
    the seed's 16 -> 32, 3x3, m = 1: 656 weights instead of 4608."""
    rng = np.random.default_rng(5)
    x = as_array(rng.normal(size=(2, 9, 9, 16)))
    depthwise = as_array(rng.normal(size=(3, 3, 1, 16)))
    pointwise = as_array(rng.normal(size=(16, 32)))
    options = dict(strides=2, padding="SAME", impl=impl)
    y = convjax.depthwise_separable_conv(x, depthwise, pointwise, **options)
    steps = convjax.conv(
        convjax.depthwise_conv(x, depthwise, **options), pointwise.reshape(1, 1, 16, 32), impl=impl
    )
    np.testing.assert_allclose(y, steps, rtol=1e-12, atol=1e-12)
    full = np.einsum("tuc,co->tuco", np.asarray(depthwise[:, :, 0]), np.asarray(pointwise))
    want = reference.conv(np.asarray(x), full, (2, 2), [(1, 1), (1, 1)], (1, 1))
    np.testing.assert_allclose(y, want, rtol=1e-11, atol=1e-11)
    assert depthwise.size + pointwise.size == 656 and full.size == 4608


@pytest.mark.parametrize("impl", IMPLS)
def test_depthwise_separable_multiplier_vmap_grad_dtypes(impl):
    case = {
        "x_shape": (2, 7, 7, 3),
        "depthwise_shape": (3, 3, 1, 6),
        "pointwise_shape": (6, 4),
        "options": dict(padding=1, dilation=2, padding_mode="circular"),
        "ref": dict(
            strides=(1, 1),
            padding=[(1, 1), (1, 1)],
            dilation=(2, 2),
            groups=3,
            padding_mode="circular",
        ),
    }
    x, depthwise, pointwise = depthwise_separable_operands(case)
    f = functools.partial(convjax.depthwise_separable_conv, impl=impl, **case["options"])
    want = depthwise_separable_reference(case, x, depthwise, pointwise)
    np.testing.assert_allclose(f(x, depthwise, pointwise), want, rtol=1e-12, atol=1e-12)
    xs = jnp.stack([x, 3 * x])
    np.testing.assert_allclose(
        jax.vmap(f, (0, None, None))(xs, depthwise, pointwise),
        f(xs, depthwise, pointwise),
        rtol=1e-12,
    )
    check_grads(f, (x, depthwise, pointwise), order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)
    low = [a.astype(jnp.bfloat16) for a in (x, depthwise, pointwise)]
    assert f(*low).dtype == jnp.bfloat16
    wide = f(*low, preferred_element_type=jnp.float32)
    assert wide.dtype == jnp.float32
    assert_close(wide, depthwise_separable_reference(case, *low), np.float32, 1e4)


# ---------------------------------------------------------------------------------------------
# separable_factors


def test_sobel_factors_are_exact_rank_1():
    f = convjax.separable_factors(as_array(SOBEL), rank=1)
    assert int(f.rank) == 1 and f.terms == 1
    assert float(f.error) < 1e-12
    np.testing.assert_allclose(f.singular_values, [np.sqrt(12), 0, 0], atol=1e-12)
    scale = f.columns[0, 0]
    np.testing.assert_allclose(f.columns[:, 0] / scale, SMOOTH, atol=1e-12)
    np.testing.assert_allclose(f.rows[0] * scale, DIFF, atol=1e-12)
    np.testing.assert_allclose(f.reconstruct(), SOBEL, atol=1e-12)
    assert f.columns.size + f.rows.size == 6  # instead of 9
    full = convjax.separable_factors(as_array(SOBEL))  # rank=None keeps all terms
    assert full.terms == 3 and int(full.rank) == 1


@pytest.mark.parametrize("impl", IMPLS)
def test_depthwise_kernels_give_the_depthwise_conv(impl):
    """A depthwise kernel [k1, k2, 1, C] of rank 1 per channel, factored and run as a spatially
    separable conv with groups = C, equals the depthwise conv."""
    rng = np.random.default_rng(6)
    kernel = np.einsum("tc,uc->tuc", rng.normal(size=(3, 4)), rng.normal(size=(5, 4)))[:, :, None]
    x = as_array(rng.normal(size=(2, 10, 11, 4)))
    f = convjax.separable_factors(as_array(kernel), rank=1)
    np.testing.assert_array_equal(f.rank, np.ones((1, 4)))
    kernels = f.depthwise_kernels()
    assert [k.shape for k in kernels] == [(3, 1, 4), (5, 1, 4)]
    y = convjax.spatial_separable_conv(x, kernels, groups=4, padding="SAME", impl=impl)
    want = convjax.depthwise_conv(x, as_array(kernel), padding="SAME", impl=impl)
    np.testing.assert_allclose(y, want, rtol=1e-10, atol=1e-10)


@given(
    k1=st.integers(1, 5),
    k2=st.integers(1, 5),
    trailing=st.lists(st.integers(1, 2), max_size=2),
    data=st.data(),
)
def test_eckart_young_error_is_the_tail_of_the_singular_values(k1, k2, trailing, data):
    """For a rank r: the singular values are NumPy's, the factors reconstruct NumPy's truncated
    SVD, and the residual's norm is √(σ²_{r+1} + …)."""
    kernel = np.random.default_rng(data.draw(st.integers(0, 2**16))).normal(
        size=(k1, k2, *trailing)
    )
    mats = np.moveaxis(kernel.reshape(k1, k2, -1), -1, 0)
    u, s, vt = np.linalg.svd(mats, full_matrices=False)
    for r in {1, data.draw(st.integers(1, min(k1, k2)))}:
        f = factors(as_array(kernel), rank=r)
        assert f.columns.shape == (k1, r, *trailing) and f.rows.shape == (r, k2, *trailing)
        got_s = np.moveaxis(np.asarray(f.singular_values).reshape(min(k1, k2), -1), 0, -1)
        np.testing.assert_allclose(got_s, s, rtol=1e-10, atol=1e-12)
        tail = np.sqrt(np.sum(s[:, r:] ** 2, axis=1)).reshape(trailing)
        np.testing.assert_allclose(f.error, tail, rtol=1e-8, atol=1e-12)
        truncated = np.einsum("tij,tj,tjk->ikt", u[:, :, :r], s[:, :r], vt[:, :r])
        np.testing.assert_allclose(
            f.reconstruct(), truncated.reshape(kernel.shape), rtol=1e-8, atol=1e-10
        )
        np.testing.assert_array_equal(
            f.rank, np.linalg.matrix_rank(mats).reshape(trailing).astype(np.int32)
        )


@given(
    k1=st.integers(2, 5),
    k2=st.integers(2, 5),
    data=st.data(),
)
def test_numerical_rank_of_sums_of_outer_products(k1, k2, data):
    r = data.draw(st.integers(1, min(k1, k2)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    kernel = sum(np.outer(rng.normal(size=k1), rng.normal(size=k2)) for _ in range(r))
    exact = factors(as_array(kernel), rank=r)
    assert int(exact.rank) == np.linalg.matrix_rank(kernel) == r
    assert float(exact.error) < 1e-10 * (1 + np.abs(kernel).max())
    if r > 1:
        assert float(factors(as_array(kernel), rank=r - 1).error) > 1e-6


def test_tol_is_an_absolute_threshold():
    kernel = as_array(np.diag([3.0, 1.0, 1e-3]))
    assert int(convjax.separable_factors(kernel).rank) == 3
    assert int(convjax.separable_factors(kernel, tol=1e-2).rank) == 2
    assert int(convjax.separable_factors(kernel, tol=2.0).rank) == 1
    assert int(convjax.separable_factors(kernel, tol=5.0).rank) == 0


@pytest.mark.parametrize(
    "dtype", [np.float32, jnp.bfloat16, np.float16], ids=["float32", "bfloat16", "float16"]
)
def test_factors_keep_the_kernel_dtype(dtype):
    f = convjax.separable_factors(as_array(SOBEL, dtype), rank=1)
    for field in (f.columns, f.rows, f.singular_values, f.error):
        assert field.dtype == np.dtype(dtype)
    assert f.rank.dtype == jnp.int32 and int(f.rank) == 1
    np.testing.assert_allclose(
        np.asarray(f.reconstruct(), np.float64), SOBEL, atol=50 * float(jnp.finfo(dtype).eps)
    )


def test_factors_under_jit_vmap_and_grad():
    rng = np.random.default_rng(7)
    kernels = as_array(rng.normal(size=(3, 4, 5, 2)))  # a batch of 3 kernels [4, 5, 2]
    f = jax.jit(functools.partial(convjax.separable_factors, rank=2))
    batched = jax.vmap(f)(kernels)
    for i in range(3):
        one = convjax.separable_factors(kernels[i], rank=2)
        for got, want in zip(batched, one):
            np.testing.assert_allclose(got[i], want, rtol=1e-10, atol=1e-12)

    def loss(kernel):  # smooth where the singular values are distinct, as here
        factors = convjax.separable_factors(kernel, rank=2)
        return jnp.sum(factors.reconstruct() ** 3) + jnp.sum(factors.error)

    check_grads(loss, (kernels[0],), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# errors

X = jnp.zeros((2, 8, 8, 4), jnp.float32)
A = jnp.zeros((3, 4, 6), jnp.float32)
B = jnp.zeros((3, 6, 5), jnp.float32)


@pytest.mark.parametrize(
    "x, kernels, options, error, match",
    [
        (
            X,
            [A, jnp.zeros((3, 5, 5), jnp.float32)],
            {},
            ValueError,
            r"spatial_separable_conv: the 1-D kernels must chain, kernels\[1\]\.shape\[1\] must "
            r"be C // groups = 6 // 1 = 6, where C = 6 is kernels\[0\]\.shape\[-1\], got 5",
        ),
        (
            X,
            [jnp.zeros((3, 3, 6), jnp.float32), B],
            {},
            ValueError,
            r"kernels\[0\]\.shape\[1\] must be C // groups = 4 // 1 = 4, where C = 4 is the "
            r"channels of x, got 3",
        ),
        (
            X,
            [jnp.zeros((3, 2, 6), jnp.float32), jnp.zeros((3, 3, 5), jnp.float32)],
            {"groups": 2},
            ValueError,
            r"groups must divide the output channels of every step, but 2 does not divide 5",
        ),
        (X, [], {}, ValueError, r"spatial_separable_conv: kernels must hold one 1-D kernel"),
        (
            X,
            [A, B, jnp.zeros((3, 5, 5), jnp.float32), jnp.zeros((3, 5, 5), jnp.float32)],
            {},
            ValueError,
            r"x must have rank >= 5 \(\[\*batch, \*spatial, C_in\]\) for 4 1-D kernels \(one "
            r"per spatial dim\), got shape \(2, 8, 8, 4\)",
        ),
        (
            X,
            [jnp.zeros((3, 3, 4, 6), jnp.float32)],
            {},
            ValueError,
            r"kernels\[0\] must be a 1-D kernel \[k, C_in // groups, C_out\] of rank 3",
        ),
        (
            X,
            [A, B],
            {"strides": (1, 2, 1)},
            ValueError,
            r"spatial_separable_conv: strides needs one entry per spatial dim \(2\), got 3",
        ),
        (
            X,
            jnp.zeros((3, 3, 4, 6), jnp.float32),
            {},
            TypeError,
            r"kernels must be a list or tuple of 1-D kernels, one per spatial dim, got ArrayImpl",
        ),
        (
            X,
            [A, B.astype(jnp.float16)],
            {},
            TypeError,
            r"x and kernels\[1\] must share a dtype, got x float32 and kernels\[1\] float16",
        ),
        (X, [A, B], {"groups": 0}, ValueError, r"spatial_separable_conv: groups must be >= 1"),
        (
            X,
            [A, B],
            {"padding": 9, "padding_mode": "reflect"},
            ValueError,
            r"spatial_separable_conv: reflect padding must be smaller than the input size",
        ),
        (
            X,
            [jnp.zeros((9, 4, 6), jnp.float32), B],
            {},
            ValueError,
            r"spatial_separable_conv: the output would be empty",
        ),
    ],
)
def test_spatial_separable_errors(x, kernels, options, error, match):
    with pytest.raises(error, match=match):
        convjax.spatial_separable_conv(x, kernels, **options)
    if isinstance(kernels, list):  # the same error, raised while tracing under jit
        with pytest.raises(error, match=match):
            jax.jit(lambda a, b: convjax.spatial_separable_conv(a, b, **options)).lower(x, kernels)


DW = jnp.zeros((3, 3, 1, 8), jnp.float32)  # depth multiplier 2 on 4 channels
PW = jnp.zeros((8, 5), jnp.float32)


@pytest.mark.parametrize(
    "x, depthwise, pointwise, options, error, match",
    [
        (
            X,
            DW,
            jnp.zeros((6, 5), jnp.float32),
            {},
            ValueError,
            r"depthwise_separable_conv: pointwise_kernel\.shape\[0\] must equal the depthwise "
            r"output channels C_in \* depth_multiplier = 4 \* 2 = 8, got 6",
        ),
        (
            X,
            DW,
            jnp.zeros((1, 1, 8, 5), jnp.float32),
            {},
            ValueError,
            r"depthwise_separable_conv: pointwise_kernel must be \[C_in \* depth_multiplier, "
            r"C_out\] of rank 2, got shape \(1, 1, 8, 5\)",
        ),
        (
            X,
            jnp.zeros((3, 3, 4, 8), jnp.float32),
            PW,
            {},
            ValueError,
            r"depthwise_separable_conv: a depthwise kernel must be \[\*window, 1, C_in \* "
            r"depth_multiplier\] with C_in = 4",
        ),
        (
            X,
            DW,
            PW.astype(jnp.float64),
            {},
            TypeError,
            r"depthwise_separable_conv: x and pointwise_kernel must share a dtype",
        ),
        (X, DW, PW, {"strides": 0}, ValueError, r"depthwise_separable_conv: strides must be >= 1"),
        (X, DW, [[1.0]], {}, TypeError, r"pointwise_kernel must be an array, got list"),
    ],
)
def test_depthwise_separable_errors(x, depthwise, pointwise, options, error, match):
    with pytest.raises(error, match=match):
        convjax.depthwise_separable_conv(x, depthwise, pointwise, **options)


@pytest.mark.parametrize(
    "kernel, options, error, match",
    [
        (
            SOBEL,
            {"rank": 4},
            ValueError,
            r"separable_factors: rank must be between 1 and min\(k1, k2\) = min\(3, 3\) = 3, "
            r"got 4",
        ),
        (
            np.zeros((2, 5, 3)),
            {"rank": 3},
            ValueError,
            r"rank must be between 1 and min\(k1, k2\) = min\(2, 5\) = 2, got 3",
        ),
        (SOBEL, {"rank": 0}, ValueError, r"rank must be between 1 and"),
        (SOBEL, {"rank": 1.0}, TypeError, r"separable_factors: rank must be an int, got 1\.0"),
        (
            SOBEL,
            {"tol": -1.0},
            ValueError,
            r"separable_factors: tol must be finite and >= 0, got -1\.0",
        ),
        (SOBEL, {"tol": "1"}, TypeError, r"separable_factors: tol must be a real number, got '1'"),
        (
            np.zeros(3),
            {},
            ValueError,
            r"kernel_2d must have rank >= 2 \(\[k1, k2, \*trailing\]\) and sizes >= 1, got shape "
            r"\(3,\)",
        ),
        (SOBEL.astype(int), {}, TypeError, r"kernel_2d must have a floating dtype"),
        ([[1.0]], {}, TypeError, r"separable_factors: kernel_2d must be an array, got list"),
    ],
)
def test_separable_factors_errors(kernel, options, error, match):
    with pytest.raises(error, match=match):
        convjax.separable_factors(kernel, **options)


def test_depthwise_kernels_needs_rank_1():
    with pytest.raises(
        ValueError,
        match=r"SeparableFactors\.depthwise_kernels: needs rank-1 factors, got 2 terms; call "
        r"separable_factors\(kernel, rank=1\)",
    ):
        convjax.separable_factors(as_array(SOBEL), rank=2).depthwise_kernels()
