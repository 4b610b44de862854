"""local_conv, the locally connected (unshared) convolution, and its transpose: against an
independent float64 NumPy reference (loops over output positions and taps, written here) forward
and in both gradients, the adjoint identity, Flax's ConvLocal, conv for a kernel shared by every
position, empty batches, non-finite values, errors, channels-first and the blocked path."""

import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import convjax
from convjax._src.checks import as_array
from convjax._src.ops import local as local_ops
from convjax._src.ops.local import local_conv, local_conv_transpose, local_layer_count

IMPLS = ("gather", "taps")
MODES = ("zeros", "reflect", "replicate", "circular")
NP_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


# -- the reference: NumPy, float64, one output position and one tap at a time ----------------------


def _sources(size, lo, hi, mode):
    """For each cell of the padded axis, the input cell np.pad copies there (-1: a zero)."""
    if mode == "zeros":
        return np.pad(np.arange(size), (lo, hi), constant_values=-1)
    return np.pad(np.arange(size), (lo, hi), mode=NP_MODES[mode])


def reference(x, kernel, strides, padding, dilation, groups, mode):
    """``y[b, o, gJ + j] = Σ_t Σ_c pad(x)[b, o·s + t·d, gC + c] · kernel[o, t, c, gJ + j]`` with
    ``pad`` from np.pad; ``x: [B, *spatial, C_in]``."""
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    ndim = (kernel.ndim - 2) // 2
    out, window = kernel.shape[:ndim], kernel.shape[ndim : 2 * ndim]
    c, c_out = kernel.shape[-2:]
    j = c_out // groups
    xp = np.pad(x, [(0, 0), *padding, (0, 0)], mode=NP_MODES[mode])
    y = np.zeros((x.shape[0], *out, c_out))
    for o in itertools.product(*map(range, out)):
        for t in itertools.product(*map(range, window)):
            cell = tuple(oi * s + ti * d for oi, ti, s, d in zip(o, t, strides, dilation))
            value = xp[(slice(None), *cell)]  # [B, C_in]
            for g in range(groups):
                y[(slice(None), *o, slice(g * j, (g + 1) * j))] += (
                    value[:, g * c : (g + 1) * c] @ kernel[(*o, *t)][:, g * j : (g + 1) * j]
                )
    return y


def reference_transpose(y, kernel, spatial, strides, padding, dilation, groups, mode):
    """The adjoint of :func:`reference` written out: output ``o`` scatters ``y[o] · kernel[o,
    t]ᵀ`` onto padded cell ``o·s + t·d``, which goes to the input cell np.pad copied there."""
    y, kernel = np.asarray(y, np.float64), np.asarray(kernel, np.float64)
    ndim = (kernel.ndim - 2) // 2
    out, window = kernel.shape[:ndim], kernel.shape[ndim : 2 * ndim]
    c, c_out = kernel.shape[-2:]
    j = c_out // groups
    sources = [_sources(i, lo, hi, mode) for i, (lo, hi) in zip(spatial, padding)]
    r = np.zeros((y.shape[0], *spatial, c * groups))
    for o in itertools.product(*map(range, out)):
        for t in itertools.product(*map(range, window)):
            cell = [
                src[oi * s + ti * d] for src, oi, ti, s, d in zip(sources, o, t, strides, dilation)
            ]
            if min(cell) < 0:
                continue
            for g in range(groups):
                r[(slice(None), *cell, slice(g * c, (g + 1) * c))] += (
                    y[(slice(None), *o, slice(g * j, (g + 1) * j))]
                    @ kernel[(*o, *t)][:, g * j : (g + 1) * j].T
                )
    return r


def reference_kernel_gradient(x, y, kernel_shape, strides, padding, dilation, groups, mode):
    """``∂⟨reference(x, k), y⟩ / ∂k``: per position and tap, the read input times ``y``."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ndim = (len(kernel_shape) - 2) // 2
    out, window = kernel_shape[:ndim], kernel_shape[ndim : 2 * ndim]
    c, c_out = kernel_shape[-2:]
    j = c_out // groups
    xp = np.pad(x, [(0, 0), *padding, (0, 0)], mode=NP_MODES[mode])
    grad = np.zeros(kernel_shape)
    for o in itertools.product(*map(range, out)):
        for t in itertools.product(*map(range, window)):
            cell = tuple(oi * s + ti * d for oi, ti, s, d in zip(o, t, strides, dilation))
            value = xp[(slice(None), *cell)]
            for g in range(groups):
                grad[(*o, *t, slice(None), slice(g * j, (g + 1) * j))] = (
                    value[:, g * c : (g + 1) * c].T
                    @ y[(slice(None), *o, slice(g * j, (g + 1) * j))]
                )
    return grad


# -- random configurations -------------------------------------------------------------------------


def config(ndim, seed):
    """A random valid configuration: explicit ``(lo, hi)`` padding, every option varied."""
    rng = np.random.default_rng(seed)
    while True:
        groups = (1, 2, 1, 3)[seed % 4]
        window = tuple(int(v) for v in rng.integers(1, 4 if ndim < 3 else 3, ndim))
        strides = tuple(int(v) for v in rng.integers(1, 3, ndim))
        dilation = tuple(int(v) for v in rng.integers(1, 3, ndim))
        spatial = tuple(int(v) for v in rng.integers(3, 9 if ndim < 3 else 5, ndim))
        padding = tuple((int(a), int(b)) for a, b in rng.integers(0, 3, (ndim, 2)))
        mode = MODES[seed % 4]
        if mode == "reflect" and any(max(p) >= i for p, i in zip(padding, spatial)):
            continue
        spans = [(k - 1) * d + 1 for k, d in zip(window, dilation)]
        out = tuple(
            (i + lo + hi - span) // s + 1
            for i, (lo, hi), span, s in zip(spatial, padding, spans, strides)
        )
        if min(out) < 1:
            continue
        c_in, c_out = groups * int(rng.integers(1, 4)), groups * int(rng.integers(1, 3))
        return dict(
            x_shape=(2, *spatial, c_in),
            kernel_shape=(*out, *window, c_in // groups, c_out),
            options=dict(
                strides=strides,
                padding=padding,
                dilation=dilation,
                groups=groups,
                padding_mode=mode,
            ),
            ref=(strides, padding, dilation, groups, mode),
        )


CONFIGS = [config(1, s) for s in range(4)] + [config(2, s) for s in range(4, 8)] + [config(3, 9)]


def arrays(case, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, case["x_shape"])
    kernel = rng.uniform(-1, 1, case["kernel_shape"])
    ndim = (len(case["kernel_shape"]) - 2) // 2
    y = rng.uniform(-1, 1, (2, *case["kernel_shape"][:ndim], case["kernel_shape"][-1]))
    return (as_array(a, dtype) for a in (x, kernel, y))


def case_id(case):
    o = case["options"]
    return (
        f"x{case['x_shape']}-k{case['kernel_shape']}-s{o['strides']}-d{o['dilation']}"
        f"-g{o['groups']}-{o['padding_mode']}".replace(" ", "")
    )


# -- against the reference -------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CONFIGS, ids=case_id)
def test_forward_gradients_and_transpose_equal_the_reference(case, impl):
    x, kernel, y = arrays(case)
    f = functools.partial(local_conv, impl=impl, **case["options"])
    spatial = case["x_shape"][1:-1]

    @jax.jit
    def everything(x, kernel, y):
        out, vjp = jax.vjp(f, x, kernel)
        back = local_conv_transpose(y, kernel, output_shape=spatial, impl=impl, **case["options"])
        return out, *vjp(y), back

    out, dx, dk, back = everything(x, kernel, y)
    np.testing.assert_allclose(out, reference(x, kernel, *case["ref"]), rtol=1e-12, atol=1e-12)
    expected_dx = reference_transpose(y, kernel, spatial, *case["ref"])
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(back, expected_dx, rtol=1e-12, atol=1e-12)
    expected_dk = reference_kernel_gradient(x, y, case["kernel_shape"], *case["ref"])
    np.testing.assert_allclose(dk, expected_dk, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_float32_against_the_reference(impl):
    case = CONFIGS[5]
    x, kernel, _ = arrays(case, np.float32)
    out = local_conv(x, kernel, impl=impl, **case["options"])
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, reference(x, kernel, *case["ref"]), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_blocks_give_the_same_result(impl):
    """A small memory budget splits the batch, or the output positions, into blocks (the last
    overlapping the one before where they do not tile an axis); values and gradients are
    unchanged."""
    options = dict(padding=1, groups=2, padding_mode="reflect")
    rng = np.random.default_rng(4)
    x, kernel, y = (rng.normal(size=s) for s in [(3, 7, 9, 4), (7, 9, 3, 3, 2, 4), (3, 7, 9, 4)])
    spec = convjax.make_spec("t", x.shape, kernel.shape[2:], **options)
    unit = 3 * 9 * 4 * 8  # bytes of one output position's patch, three times

    @functools.partial(jax.jit, static_argnums=0)
    def run(budget, x, kernel, y):
        def f(x, kernel):
            return local_ops._local(x, kernel, spec, impl, budget, None, np.dtype(np.float64))

        result, vjp = jax.vjp(f, x, kernel)
        return result, *vjp(y)

    ref = ((1, 1), ((1, 1), (1, 1)), (1, 1), 2, "reflect")
    expected = (
        reference(x, kernel, *ref),
        reference_transpose(y, kernel, x.shape[1:-1], *ref),
        reference_kernel_gradient(x, y, kernel.shape, *ref),
    )
    # batch blocks of 2 (of 3); then one image in blocks of 5 positions of a row (of 9)
    for budget in (unit * 2 * 7 * 9, unit * 5):
        for a, b in zip(run(budget, x, kernel, y), expected):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_the_adjoint_identity_with_output_padding(impl):
    """⟨A z, y⟩ = ⟨z, Aᵀ y⟩ for each output padding; with (0, 3), past the stride 3 (allowed by
    the dilation 4), A keeps the first outputs of the larger result's conv, one per kernel."""
    rng = np.random.default_rng(3)
    strides, padding, dilation, groups = (2, 3), ((1, 0), (0, 2)), (1, 4), 1
    kernel = as_array(rng.normal(size=(4, 3, 3, 2, 2, 3)))
    y = as_array(rng.normal(size=(2, 4, 3, 3)))
    options = dict(strides=strides, padding=padding, dilation=dilation, padding_mode="circular")
    for output_padding in [(1, 2), (0, 3)]:
        back = local_conv_transpose(y, kernel, output_padding=output_padding, impl=impl, **options)
        assert back.shape == (2, 8 + output_padding[0], 9 + output_padding[1], 2)
        z = rng.normal(size=back.shape)
        forward = reference(z, kernel, strides, padding, dilation, groups, "circular")
        np.testing.assert_allclose(np.vdot(forward, y), jnp.vdot(z, back), rtol=1e-12)
        if output_padding[1] < 3:
            forward = local_conv(as_array(z), kernel, impl=impl, **options)
            np.testing.assert_allclose(jnp.vdot(forward, y), jnp.vdot(z, back), rtol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_a_kernel_shared_by_every_position_is_conv(impl):
    rng = np.random.default_rng(1)
    x = as_array(rng.normal(size=(2, 9, 7, 4)))
    w = as_array(rng.normal(size=(3, 2, 2, 6)))
    options = dict(
        strides=(2, 1), padding="SAME", dilation=(1, 2), groups=2, padding_mode="reflect"
    )
    out = convjax.output_shape(x.shape, w.shape, **options)[1:3]
    shared = jnp.broadcast_to(w, (*out, *w.shape))
    np.testing.assert_allclose(
        local_conv(x, shared, impl=impl, **options), convjax.conv(x, w, **options), rtol=1e-12
    )


# -- Flax's ConvLocal ------------------------------------------------------------------------------


def to_flax(kernel):
    """``[*out, *window, C_in, C_out]`` → Flax's ``[*out, C_in · K, C_out]``, channel-major."""
    ndim = (kernel.ndim - 2) // 2
    out, (c, j) = kernel.shape[:ndim], kernel.shape[-2:]
    k = kernel.reshape(*out, -1, c, j)
    return jnp.swapaxes(k, -2, -3).reshape(*out, -1, j)


def flax_padding(padding, window, dilation):
    """convjax's options for Flax's padding names (Flax pads 'CIRCULAR' / 'REFLECT' itself)."""
    if padding in ("CIRCULAR", "REFLECT"):
        spans = [(k - 1) * d + 1 for k, d in zip(window, dilation)]
        return dict(padding=[((s - 1) // 2, s // 2) for s in spans], padding_mode=padding.lower())
    return dict(padding=padding)


FLAX = [  # x shape, window, C_out, strides, padding, dilation
    ((2, 9, 3), (3,), 4, 1, "CAUSAL", 2),
    ((2, 10, 3), (4,), 2, 3, "SAME", 1),
    ((2, 8, 7, 2), (3, 2), 3, (2, 1), "VALID", (1, 2)),
    ((2, 6, 7, 3), (3, 2), 2, 1, "CIRCULAR", (2, 1)),
    ((2, 6, 7, 3), (3, 3), 2, (1, 2), "REFLECT", 1),
    ((2, 7, 6, 2), (2, 3), 3, 1, ((1, 2), (0, 1)), 1),
    ((1, 5, 4, 4, 2), (2, 3, 2), 3, (2, 1, 1), "SAME", 1),
]


@pytest.mark.parametrize("x_shape, window, features, strides, padding, dilation", FLAX)
def test_equals_flax_conv_local(x_shape, window, features, strides, padding, dilation):
    rng = np.random.default_rng(0)
    layer = nn.ConvLocal(
        features,
        window,
        strides=strides,
        padding=padding,
        kernel_dilation=dilation,
        use_bias=False,
        param_dtype=np.float64,
    )
    ndim = len(window)
    dilation_t = (dilation,) * ndim if isinstance(dilation, int) else dilation
    options = dict(strides=strides, dilation=dilation) | flax_padding(padding, window, dilation_t)
    x = as_array(rng.normal(size=x_shape))
    params = jax.eval_shape(layer.init, jax.random.key(0), x)["params"]
    out = params["kernel"].shape[:-2]
    kernel = as_array(rng.normal(size=(*out, *window, x_shape[-1], features)))

    @jax.jit
    def both(x, kernel):
        flax = layer.apply({"params": {"kernel": to_flax(kernel)}}, x)
        return flax, *(local_conv(x, kernel, impl=impl, **options) for impl in IMPLS)

    for dtype, tol in ((np.float64, 1e-12), (np.float32, 2e-5)):
        expected, *ours = both(x.astype(dtype), kernel.astype(dtype))
        for y in ours:
            assert y.dtype == dtype
            np.testing.assert_allclose(y, expected, rtol=tol, atol=tol)


# -- transformations, empty arrays, non-finite values ----------------------------------------------


def test_jvp_vmap_jit_and_batch_dims():
    case = CONFIGS[4]
    x, kernel, _ = arrays(case)
    f = functools.partial(local_conv, **case["options"])
    y, tangent = jax.jvp(f, (x, kernel), (x, kernel))
    np.testing.assert_allclose(tangent, 2 * y, rtol=1e-12)  # bilinear: f(x, k) + f(x, k)
    stacked = jax.vmap(f, in_axes=(None, 0))(x, jnp.stack([kernel, -kernel]))
    np.testing.assert_allclose(stacked[1], -y, rtol=1e-12)
    np.testing.assert_allclose(jax.jit(f)(x, kernel), y, rtol=1e-12)
    two = f(x.reshape(1, *x.shape), kernel)  # two leading batch dims, and none
    np.testing.assert_allclose(two[0], y, rtol=1e-12)
    np.testing.assert_allclose(f(x[1], kernel), y[1], rtol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "x_shape, kernel_shape",
    [
        ((0, 6, 5, 4), (4, 3, 3, 3, 2, 6)),
        ((2, 6, 5, 0), (4, 3, 3, 3, 0, 6)),
        ((2, 6, 5, 4), (4, 3, 3, 3, 2, 0)),
    ],
    ids=["batch 0", "C_in 0", "C_out 0"],
)
def test_empty_arrays(x_shape, kernel_shape, impl):
    x, kernel = jnp.ones(x_shape), jnp.ones(kernel_shape)
    f = functools.partial(local_conv, impl=impl, groups=2 if x_shape[-1] else 1)
    if not x_shape[-1]:
        kernel = jnp.ones((*kernel_shape[:-2], 0, kernel_shape[-1]))
    y = jax.jit(f)(x, kernel)
    assert y.shape == (x_shape[0], 4, 3, kernel_shape[-1])
    np.testing.assert_array_equal(y, 0)
    grads = jax.grad(lambda x, k: jnp.sum(f(x, k)), argnums=(0, 1))(x, kernel)
    assert [g.shape for g in grads] == [x.shape, kernel.shape]
    np.testing.assert_array_equal(grads[1], 0)
    back = local_conv_transpose(y, kernel, groups=f.keywords["groups"], impl=impl)
    assert back.shape == x.shape


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", MODES)
def test_non_finite_values_reach_exactly_the_outputs_that_read_them(mode, impl):
    rng = np.random.default_rng(2)
    strides, padding, dilation, groups = (2, 1), ((1, 2), (2, 1)), (1, 2), 2
    x = rng.uniform(-1, 1, (2, 7, 6, 4))
    x[0, 0, 1, 0], x[1, 3, 5, 3] = np.nan, np.inf
    kernel = rng.uniform(-1, 1, (4, 7, 3, 2, 2, 4))
    kernel[2, 1, 0, 1, 1, 3] = -np.inf  # output (2, 1), channel 3 only
    y = np.asarray(
        local_conv(
            as_array(x),
            as_array(kernel),
            strides=strides,
            padding=padding,
            dilation=dilation,
            groups=groups,
            padding_mode=mode,
            impl=impl,
        )
    )
    ref = (strides, padding, dilation, groups, mode)
    with np.errstate(invalid="ignore"):
        expected = reference(x, kernel, *ref)
    for test in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(test(y), test(expected))
    reads = reference(~np.isfinite(x) * 1.0, np.ones_like(kernel), *ref) > 0  # which outputs
    reads[:, 2, 1, 3] = True  # read the non-finite cells, and the kernel's -inf
    np.testing.assert_array_equal(~np.isfinite(y), reads)


# -- options, errors, layout -----------------------------------------------------------------------


def test_preferred_element_type_and_precision():
    case = CONFIGS[5]
    x, kernel, _ = arrays(case, np.float32)
    y = local_conv(
        x, kernel, preferred_element_type=jnp.float64, precision="highest", **case["options"]
    )
    assert y.dtype == jnp.float64
    back = local_conv_transpose(
        y.astype(jnp.float32),
        kernel,
        preferred_element_type=jnp.float64,
        output_shape=case["x_shape"][1:-1],
        **case["options"],
    )
    assert back.dtype == jnp.float64 and back.shape == x.shape
    half = local_conv(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16), **case["options"])
    assert half.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        half.astype(np.float32), reference(x, kernel, *case["ref"]), atol=0.1
    )


X, K = jnp.zeros((2, 8, 8, 4)), jnp.zeros((6, 6, 3, 3, 4, 6))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: local_conv(X, K[0]),
            ValueError,
            r"local_conv: kernel must be \[\*out_spatial, \*window, C_in // groups, C_out\], "
            r"of even rank.*got shape \(6, 3, 3, 4, 6\)",
        ),
        (  # the kernel's shape as passed, not its shared part
            lambda: local_conv(X, K[..., :3, :]),
            ValueError,
            r"local_conv: kernel.shape\[-2\] must be C_in // groups = 4 // 1 = 4, got 3 "
            r"\(kernel shape \(6, 6, 3, 3, 3, 6\), x shape \(2, 8, 8, 4\)\)",
        ),
        (
            lambda: local_conv(X, K[:5]),
            ValueError,
            r"local_conv: kernel must be .* output's spatial shape \(6, 6\).*expected kernel "
            r"shape \(6, 6, 3, 3, 4, 6\), got \(5, 6, 3, 3, 4, 6\)",
        ),
        (
            lambda: local_conv(X, K, padding=1),
            ValueError,
            r"output's spatial shape \(8, 8\).*expected kernel shape \(8, 8, 3, 3, 4, 6\)",
        ),
        (
            lambda: local_conv(X[0, 0, 0], K),
            ValueError,
            r"local_conv: x must have rank >= 3 .*got shape \(4,\)",
        ),
        (
            lambda: local_conv(X, K, groups=3),
            ValueError,
            r"local_conv: groups must divide the input channels",
        ),
        (
            lambda: local_conv(X, K, impl="lax"),
            ValueError,
            r"local_conv: impl must be one of \('auto', 'gather', 'taps'\) or a GatherBackend, "
            r"got 'lax' \('lax' computes shared kernels only\)",
        ),
        (
            lambda: local_conv(X, K, impl=3),
            TypeError,
            r"local_conv: impl must be one of .* got int",
        ),
        (
            lambda: local_conv(X, K, padding_mode="wrap"),
            ValueError,
            r"local_conv: padding_mode must be one of",
        ),
        (lambda: local_conv(X, K, strides=0), ValueError, r"local_conv: strides must be >= 1"),
        (
            lambda: local_conv(X, K.astype(jnp.float32)),
            TypeError,
            r"local_conv: x and kernel must share a dtype",
        ),
        (
            lambda: local_conv(X, K, precision="best"),
            ValueError,
            r"local_conv: precision must be None",
        ),
        (
            lambda: local_conv(X, K, preferred_element_type=jnp.int32),
            TypeError,
            r"local_conv: preferred_element_type must be a floating",
        ),
        (
            lambda: local_conv(X, K[:1, :1, :], padding=8, padding_mode="reflect"),
            ValueError,
            r"local_conv: reflect padding must be smaller than the input size",
        ),
        (
            lambda: local_conv(X, K, data_format="NCHW"),
            ValueError,
            r"local_conv: data_format must be one of",
        ),
        (
            lambda: local_conv(np.zeros((2, 8, 8, 4)).tolist(), K),
            TypeError,
            r"local_conv: x must be an array",
        ),
        (
            lambda: local_conv_transpose(jnp.zeros((2, 6, 6, 6)), K[:5, :5]),
            ValueError,
            r"local_conv_transpose: kernel must be \[\*spatial, \*window, C_out // groups, "
            r"C_in\] with x's spatial shape \(6, 6\) and channels 6.*expected kernel shape "
            r"\(6, 6, 3, 3, 4, 6\), got \(5, 5, 3, 3, 4, 6\)",
        ),
        (
            lambda: local_conv_transpose(X[:, :6, :6], K),
            ValueError,
            r"local_conv_transpose: kernel must be .* channels 4",
        ),
        (
            lambda: local_conv_transpose(jnp.zeros((2, 6, 6, 6)), K, strides=2, output_padding=2),
            ValueError,
            r"local_conv_transpose: output_padding must be smaller than the stride",
        ),
        (
            lambda: local_conv_transpose(jnp.zeros((2, 6, 6, 6)), K, output_shape=(12, 8)),
            ValueError,
            r"local_conv_transpose: output_shape \(12, 8\) is out of reach",
        ),
        (
            lambda: local_conv_transpose(jnp.zeros((2, 6, 6, 6)), K, impl="fft"),
            ValueError,
            r"local_conv_transpose: impl must be one of",
        ),
    ],
)
def test_errors_name_the_function_the_argument_and_the_value(call, error, match):
    with pytest.raises(error, match=match):
        call()
    with pytest.raises(error, match=match):  # at trace time
        jax.jit(call).lower()


def test_channels_first():
    case = CONFIGS[7]
    x, kernel, y = arrays(case)
    last = local_conv(x, kernel, **case["options"])
    first = local_conv(
        jnp.moveaxis(x, -1, 1), kernel, data_format="channels_first", **case["options"]
    )
    np.testing.assert_allclose(first, jnp.moveaxis(last, -1, 1), rtol=1e-12)
    back = local_conv_transpose(
        jnp.moveaxis(y, -1, 1),
        kernel,
        output_shape=case["x_shape"][1:-1],
        data_format="channels_first",
        **case["options"],
    )
    expected = local_conv_transpose(
        y, kernel, output_shape=case["x_shape"][1:-1], **case["options"]
    )
    np.testing.assert_allclose(back, jnp.moveaxis(expected, -1, 1), rtol=1e-12)


def test_counts():
    count = local_layer_count((8, 9, 7, 4), (3, 2), 6, strides=2, padding=1, groups=2, bias="local")
    assert count.kernel_shape == (5, 4, 3, 2, 2, 6)
    assert count.params == 5 * 4 * 3 * 2 * 2 * 6 + 5 * 4 * 6
    layer = convjax.Layer((3, 2, 2, 6), strides=2, padding=1, groups=2)
    assert count.macs == convjax.flop_count(layer, (8, 9, 7, 4))  # a conv's multiply-adds
    assert count.flops == 2 * count.macs + 8 * 5 * 4 * 6
    with pytest.raises(ValueError, match=r"local_layer_count: bias must be one of"):
        local_layer_count((1, 5, 5, 1), (3, 3), 1, bias=True)


def test_the_picture():
    pytest.importorskip("matplotlib")
    from convjax._src.tools.viz_local import local_kernels

    fig = local_kernels((5, 5), (3, 3), strides=2, padding=1, padding_mode="circular")
    assert len(fig.axes) == 3 and fig.legends
    with pytest.raises(ValueError, match=r"local_kernels: 16x16 output positions are too many"):
        local_kernels((18, 18), (3, 3))
