"""conv_transpose is the exact adjoint of conv: against a dense float64 NumPy matrix, the adjoint
identity with the NumPy reference, jax.vjp, lax == gather, and PyTorch's ConvTranspose."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from cases import CASES, case_id, configs
from helpers import IMPLS, assert_close, fan_in, operands
from hypothesis import given
from jax.test_util import check_grads

import convjax
from convjax._src.checks import as_array


def forward_sizes(case):
    """The forward conv's input (the transpose's result) and output spatial sizes."""
    ndim = len(case["kernel_shape"]) - 2
    sizes = case["x_shape"][-ndim - 1 : -1]
    ref = case["ref"]
    out = []
    for i, k, s, d, (lo, hi) in zip(
        sizes, case["kernel_shape"], ref["strides"], ref["dilation"], ref["padding"]
    ):
        out.append((i + lo + hi - (k - 1) * d - 1) // s + 1)
    return tuple(sizes), tuple(out)


def output_padding(case):
    """a = (i + lo + hi − k̂) mod s, from first principles."""
    ndim = len(case["kernel_shape"]) - 2
    ref = case["ref"]
    return tuple(
        (i + lo + hi - (k - 1) * d - 1) % s
        for i, k, s, d, (lo, hi) in zip(
            case["x_shape"][-ndim - 1 : -1],
            case["kernel_shape"],
            ref["strides"],
            ref["dilation"],
            ref["padding"],
        )
    )


def cotangent(case, dtype=np.float64, seed=1):
    """A random array of the forward conv's output shape: the transpose's input."""
    ndim = len(case["kernel_shape"]) - 2
    _, out = forward_sizes(case)
    shape = (*case["x_shape"][: -ndim - 1], *out, case["kernel_shape"][-1])
    return as_array(np.random.default_rng(seed).uniform(-1, 1, shape), dtype)


def transpose(case, y, kernel, impl="lax", jit=False, **options):
    if "output_padding" not in options:
        options["output_shape"] = forward_sizes(case)[0]
    f = functools.partial(convjax.conv_transpose, impl=impl, **case["options"], **options)
    return (jax.jit(f) if jit else f)(y, kernel)


def dense_transpose(case, kernel):
    """Aᵀ as a [prod(input), prod(output)] float64 matrix: the reference conv of every unit
    input, one batch element's worth."""
    ndim = len(case["kernel_shape"]) - 2
    unit_shape = case["x_shape"][-ndim - 1 :]
    m = math.prod(unit_shape)
    columns = reference.conv(np.eye(m).reshape(m, *unit_shape), kernel, **case["ref"])
    return columns.reshape(m, -1), unit_shape


def relative_adjoint_error(ax, y, x, aty):
    """|⟨Ax, y⟩ − ⟨x, Aᵀy⟩| relative to the sizes of both sides."""
    lhs = float(np.vdot(np.asarray(ax, np.float64), np.asarray(y, np.float64)))
    rhs = float(np.vdot(np.asarray(x, np.float64), np.asarray(aty, np.float64)))
    scale = np.linalg.norm(np.asarray(ax)) * np.linalg.norm(np.asarray(y))
    scale = max(scale, np.linalg.norm(np.asarray(x)) * np.linalg.norm(np.asarray(aty)), 1.0)
    return abs(lhs - rhs) / scale


# -- the seed's example ---------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_seed_5x5_to_2x2_and_back_to_5x5(impl):
    x = as_array(np.random.default_rng(0).normal(size=(5, 5, 1)))
    kernel = as_array(np.random.default_rng(1).normal(size=(3, 3, 1, 1)))
    y = convjax.conv(x, kernel, strides=2, impl=impl)
    assert y.shape == (2, 2, 1)
    back = convjax.conv_transpose(y, kernel, strides=2, impl=impl)
    assert back.shape == (5, 5, 1)
    # Same shape, not the same values: a transposed conv is not an inverse.
    assert float(jnp.max(jnp.abs(back - x))) > 0.1
    # Each of the 4 inputs scatters a 3x3 copy of the kernel; the copies overlap on the
    # middle row and column (the seed's "9 values from each pixel").
    ones = convjax.conv_transpose(jnp.ones((2, 2, 1)), jnp.ones((3, 3, 1, 1)), strides=2, impl=impl)
    counts = np.array([1, 1, 2, 1, 1])
    np.testing.assert_array_equal(ones[..., 0], np.outer(counts, counts))


# -- exactness: dense reference, adjoint identity, vjp, lax == gather -----------------------------


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_cases_equal_dense_reference_transpose(case, impl, jit):
    _, kernel = operands(case, np.float64)
    y = cotangent(case)
    got = transpose(case, y, kernel, impl=impl, jit=jit)
    matrix, unit_shape = dense_transpose(case, np.asarray(kernel))
    ndim = len(case["kernel_shape"]) - 2
    batch = y.shape[: y.ndim - ndim - 1]
    flat = np.asarray(y).reshape(math.prod(batch), -1)
    want = (flat @ matrix.T).reshape(*batch, *unit_shape)
    assert_close(got, want, np.float64, fan_in(case))


@given(case=configs())
def test_random_configs_adjoint_identity_and_vjp_float64(case):
    x, kernel = operands(case, np.float64)
    y = cotangent(case)
    ax = reference.conv(np.asarray(x), np.asarray(kernel), **case["ref"])
    if case["options"]["padding"] == "SAME":  # SAME alone gives strides * size: name the size
        size = {"output_shape": forward_sizes(case)[0]}
    else:  # Relationship 14: a = (i + lo + hi − k̂) mod s restores the input size i
        size = {"output_padding": output_padding(case)}
    results = {impl: transpose(case, y, kernel, impl=impl, jit=True, **size) for impl in IMPLS}
    for impl, aty in results.items():
        assert aty.shape == x.shape, (impl, aty.shape, x.shape)
        assert relative_adjoint_error(ax, y, x, aty) <= 1e-13, impl
    # Equal to the vjp of the forward conv, and the two paths equal each other.
    forward = functools.partial(convjax.conv, kernel=kernel, **case["options"])
    vjp = jax.jit(lambda x, y: jax.vjp(forward, x)[1](y)[0])
    assert_close(results["lax"], vjp(x, y), np.float64, fan_in(case))
    assert_close(results["gather"], results["lax"], np.float64, fan_in(case))


def test_output_padding_restores_every_forward_size():
    """s input sizes share one forward output size; output_padding a picks each back."""
    rng = np.random.default_rng(0)
    kernel = as_array(rng.normal(size=(3, 2, 3)))
    for size in (7, 8, 9):
        x = as_array(rng.normal(size=(size, 2)))
        for impl in IMPLS:
            y = convjax.conv(x, kernel, strides=3, padding=1, impl=impl)
            assert y.shape[0] == 3
            a = convjax.output_padding_for(size, 3, stride=3, padding=(1, 1))
            back = convjax.conv_transpose(y, kernel, strides=3, padding=1, output_padding=a)
            assert back.shape == x.shape
            solved = convjax.conv_transpose(y, kernel, strides=3, padding=1, output_shape=size)
            np.testing.assert_array_equal(back, solved)


@pytest.mark.parametrize("impl", IMPLS)
def test_string_padding_resolves_against_the_result_size(impl):
    rng = np.random.default_rng(0)
    kernel = as_array(rng.normal(size=(3, 3, 2, 4)))
    y = as_array(rng.normal(size=(1, 3, 3, 4)))
    # SAME without output_shape: strides * size.
    assert convjax.conv_transpose(y, kernel, strides=2, padding="SAME", impl=impl).shape == (
        1,
        6,
        6,
        2,
    )
    # Every result size whose forward SAME conv gives 3 outputs is reachable: 5 and 6.
    for n in (5, 6):
        got = convjax.conv_transpose(
            y, kernel, strides=2, padding="SAME", output_shape=(n, n), impl=impl
        )
        forward = functools.partial(convjax.conv, kernel=kernel, strides=2, padding="SAME")
        _, vjp = jax.vjp(forward, jnp.zeros((1, n, n, 2)))
        np.testing.assert_allclose(got, vjp(y)[0], rtol=1e-12, atol=1e-12)
    for padding, size in (("VALID", 7), ("FULL", 3), ("CAUSAL", 5)):
        got = convjax.conv_transpose(y, kernel, strides=2, padding=padding, impl=impl)
        assert got.shape == (1, size, size, 2), padding


@pytest.mark.parametrize("impl", IMPLS)
def test_output_padding_at_least_stride_is_the_adjoint_of_the_cropped_conv(impl):
    """a >= s is allowed when a < dilation: the forward conv of the larger result has more than
    i′ outputs, and the transpose keeps the first i′."""
    rng = np.random.default_rng(0)
    kernel = as_array(rng.normal(size=(3, 2, 2)))
    y = as_array(rng.normal(size=(2, 4, 2)))
    got = convjax.conv_transpose(
        y, kernel, strides=1, dilation=3, output_padding=2, padding=1, impl=impl
    )
    assert got.shape == (2, 4 - 1 + 2 + 7 - 2, 2)

    def forward(z):
        return convjax.conv(z, kernel, dilation=3, padding=1)[:, :4]

    _, vjp = jax.vjp(forward, jnp.zeros(got.shape))
    np.testing.assert_allclose(got, vjp(y)[0], rtol=1e-12, atol=1e-12)


def test_lax_path_is_the_backward_data_conv_and_gather_has_no_conv():
    """In the compiled program: lax runs one input-dilated conv over the flipped kernel (XLA's
    backward-data conv), gather a scatter-add and no convolution."""
    y, kernel = jnp.ones((2, 4, 4, 3)), jnp.ones((3, 3, 2, 3))

    def compiled(impl):
        f = functools.partial(
            convjax.conv_transpose, strides=2, padding=1, output_padding=1, impl=impl
        )
        return jax.jit(f).lower(y, kernel).compile().as_text()

    lax_hlo = compiled("lax")
    convs = [line for line in lax_hlo.splitlines() if " convolution(" in line]
    assert len(convs) == 1 and "lhs_dilate=2x2" in convs[0], convs
    assert " reverse(" in lax_hlo  # the flipped kernel
    gather_hlo = compiled("gather")
    # A scatter-add (which XLA:CPU may expand into a loop; its ops keep the name).
    assert " convolution(" not in gather_hlo and "scatter-add" in gather_hlo


@pytest.mark.parametrize("budget", [1, 2_000])
def test_chunked_gather_transposes(budget):
    case = CASES[2]
    _, kernel = operands(case, np.float64)
    y = cotangent(case)
    chunked = transpose(case, y, kernel, impl=convjax.GatherBackend(memory_budget=budget))
    assert_close(chunked, transpose(case, y, kernel), np.float64, fan_in(case))


def test_reflect_padding_folds_the_border_back():
    """1-d, window 3, reflect pad 1: the output at 0 reads x[1], x[0], x[1]; its transpose
    puts the first and last taps' weight back on x[1]."""
    kernel = as_array([1.0, 10.0, 100.0]).reshape(3, 1, 1)
    y = jnp.zeros((4, 1)).at[0, 0].set(1.0)
    for impl in IMPLS:
        got = convjax.conv_transpose(y, kernel, padding=1, padding_mode="reflect", impl=impl)
        np.testing.assert_allclose(got[:, 0], [10.0, 101.0, 0.0, 0.0])


# -- dtypes, jit, vmap, grad ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("impl", IMPLS)
def test_dtypes_and_preferred_element_type(impl, dtype):
    case = CASES[2]
    _, kernel = operands(case, dtype)
    y = cotangent(case, dtype)
    got = transpose(case, y, kernel, impl=impl, jit=True)
    assert got.dtype == np.dtype(dtype)
    want = transpose(case, y.astype(jnp.float64), kernel.astype(jnp.float64))
    assert_close(got, want, dtype, fan_in(case) * 9)
    wide = transpose(case, y, kernel, impl=impl, preferred_element_type=jnp.float32)
    assert wide.dtype == jnp.float32
    assert_close(wide, want, np.float32, fan_in(case) * 9)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES[1:3], ids=case_id)
def test_vmap_over_inputs_and_kernels(case, impl):
    _, kernel = operands(case, np.float64)
    y = cotangent(case)
    f = functools.partial(
        convjax.conv_transpose, impl=impl, output_shape=forward_sizes(case)[0], **case["options"]
    )
    ys = jnp.stack([y, 2 * y, -y])
    batched = jax.jit(jax.vmap(f, (0, None)))(ys, kernel)
    np.testing.assert_allclose(batched, f(ys, kernel), atol=1e-12)
    kernels = jnp.stack([kernel, -kernel])
    per_kernel = jax.jit(jax.vmap(f, (None, 0)))(y, kernels)
    np.testing.assert_allclose(per_kernel[1], -f(y, kernel), atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", [CASES[i] for i in (0, 2, 3, 5)], ids=case_id)
def test_gradients(case, impl):
    """Numerical gradients on four shared cases (the classic 5x5, groups and strides, dilated
    reflect, 3-d circular); every formulation's vjp is checked on random configs elsewhere."""
    _, kernel = operands(case, np.float64)
    y = cotangent(case)
    f = functools.partial(
        convjax.conv_transpose, impl=impl, output_shape=forward_sizes(case)[0], **case["options"]
    )
    # Bilinear in (y, kernel): second order adds one check, done on the seed's case only.
    order = 2 if case is CASES[0] else 1
    check_grads(f, (y, kernel), order=order, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


# -- PyTorch parity -------------------------------------------------------------------------------

TORCH_CASES = [
    # ndim, C_in, C_out, window, size, stride, padding, output_padding, dilation, groups
    (1, 3, 4, 3, 7, 2, 1, 1, 1, 1),
    (1, 4, 6, 3, 5, 2, 1, 2, 3, 2),  # output_padding >= stride (allowed: < dilation)
    (2, 3, 4, 3, 5, 2, 1, 1, 1, 1),
    (2, 4, 6, 2, 6, 2, 0, 0, 1, 2),  # a k2 s2 upsampler, grouped
    (2, 2, 2, 3, 4, 1, 0, 1, 2, 1),  # stride 1, output_padding 1 < dilation 2
    (2, 6, 3, (3, 2), 5, (2, 3), (1, 0), (1, 2), (2, 1), 3),
    (3, 2, 4, 2, 3, 2, 1, 1, 2, 2),
    (3, 2, 2, 3, 3, (1, 2, 2), (0, 1, 2), (0, 1, 0), 1, 1),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "ndim, c_in, c_out, window, size, stride, padding, out_pad, dilation, groups", TORCH_CASES
)
def test_matches_torch_conv_transpose(
    impl, ndim, c_in, c_out, window, size, stride, padding, out_pad, dilation, groups
):
    torch = pytest.importorskip("torch")
    window = (window,) * ndim if isinstance(window, int) else window
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, c_in, *(size,) * ndim))
    weight = rng.normal(size=(c_in, c_out // groups, *window))
    options = dict(stride=stride, padding=padding, output_padding=out_pad, dilation=dilation)
    fn = getattr(torch.nn.functional, f"conv_transpose{ndim}d")
    want = fn(torch.from_numpy(x), torch.from_numpy(weight), groups=groups, **options).numpy()
    kernel = np.transpose(weight, (*range(2, 2 + ndim), 1, 0))  # PyTorch weight -> convjax
    got = convjax.conv_transpose(
        as_array(np.moveaxis(x, 1, -1)),
        as_array(kernel),
        strides=stride,
        padding=padding,
        output_padding=out_pad,
        dilation=dilation,
        groups=groups,
        impl=impl,
    )
    got = np.moveaxis(np.asarray(got), -1, 1)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * math.prod(window) * c_in)


def test_matches_torch_output_size_argument():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 2, 4, 4))
    weight = rng.normal(size=(2, 3, 3, 3))
    for n in (7, 8):
        layer = torch.nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, bias=False)
        layer.weight.data = torch.from_numpy(weight)
        want = layer(torch.from_numpy(x), output_size=(n, n)).detach().numpy()
        got = convjax.conv_transpose(
            as_array(np.moveaxis(x, 1, -1)),
            as_array(np.transpose(weight, (2, 3, 1, 0))),
            strides=2,
            padding=1,
            output_shape=(n, n),
        )
        np.testing.assert_allclose(np.moveaxis(np.asarray(got), -1, 1), want, atol=1e-12)


# -- errors ---------------------------------------------------------------------------------------

Y = jnp.zeros((2, 2, 2, 4), jnp.float32)
K = jnp.zeros((3, 3, 3, 4), jnp.float32)


@pytest.mark.parametrize(
    "y, kernel, options, error, match",
    [
        (
            Y,
            K,
            {"strides": 2, "output_padding": 2},
            ValueError,
            r"conv_transpose: output_padding must be smaller than the stride or the dilation in "
            r"every dim, got output_padding \(2, 2\) with strides \(2, 2\) and dilation \(1, 1\)",
        ),
        (
            Y,
            K,
            {"strides": 2, "output_shape": (7, 5)},
            ValueError,
            r"conv_transpose: output_shape \(7, 5\) is out of reach in spatial dim 0: x spatial "
            r"size 2 with window 3, stride 2, dilation 1 and padding \(0, 0\) reaches sizes 5 to "
            r"6, got 7",
        ),
        (
            Y,
            K,
            {"strides": 2, "padding": "SAME", "output_shape": (4, 2)},
            ValueError,
            r"output_shape \(4, 2\) is out of reach .* reaches sizes 3 to 4, got 2",
        ),
        (
            Y,
            K,
            {"output_shape": (5, 5, 5)},
            ValueError,
            r"conv_transpose: output_shape needs one entry per spatial dim \(2\), got 3",
        ),
        (
            Y,
            K,
            {"strides": 2, "output_shape": (5, 5), "output_padding": 1},
            ValueError,
            r"conv_transpose: pass output_padding or output_shape, not both",
        ),
        (
            Y,
            K,
            {"strides": 2, "padding": "SAME", "output_padding": 1},
            ValueError,
            r"output_padding must be 0 with padding 'SAME'.*pass output_shape",
        ),
        (
            jnp.zeros((1, 3), jnp.float32),
            jnp.zeros((3, 3, 3), jnp.float32),
            {"padding": "FULL"},
            ValueError,
            r"conv_transpose: the result would be empty in spatial dim 0",
        ),
        (
            Y,
            jnp.zeros((3, 3, 3, 5), jnp.float32),
            {},
            ValueError,
            r"conv_transpose: kernel.shape\[-1\] must equal the channels of x \(4\), got 5 "
            r"\(kernel shape \(3, 3, 3, 5\) is \[\*window, C_out // groups, C_in\]\)",
        ),
        (Y, jnp.zeros((3, 4), jnp.float32), {}, ValueError, r"conv_transpose: kernel must have"),
        (
            jnp.zeros((2, 4), jnp.float32),
            K,
            {},
            ValueError,
            r"conv_transpose: x must have rank >= 3",
        ),
        # Core errors, raised by make_spec under this op's name.
        (
            Y,
            jnp.zeros((3, 3, 1, 4), jnp.float32),
            {"groups": 3},
            ValueError,
            r"conv_transpose: groups must divide the output channels \(kernel.shape\[-1\]\), but "
            r"3 does not divide 4",
        ),
        (Y, K, {"strides": 0}, ValueError, r"conv_transpose: strides must be >= 1 in every dim"),
        (Y, K, {"padding": "HALVES"}, ValueError, r"conv_transpose: padding must be one of"),
        (
            Y,
            K,
            {"padding_mode": "mirror"},
            ValueError,
            r"conv_transpose: padding_mode must be one of .*got 'mirror'",
        ),
        (
            jnp.zeros((2, 3, 3, 4), jnp.float32),
            K,
            {"padding": 2, "padding_mode": "reflect"},
            ValueError,
            r"conv_transpose: reflect padding must be smaller than the input size",
        ),
        (Y, K, {"impl": "cudnn"}, ValueError, r"conv_transpose: impl must be one of"),
        (
            Y,
            K.astype(jnp.float16),
            {},
            TypeError,
            r"conv_transpose: x and kernel must share a dtype, got x float32 and kernel float16",
        ),
        ([[1.0]], K, {}, TypeError, r"conv_transpose: x must be an array, got list"),
    ],
)
def test_errors(y, kernel, options, error, match):
    with pytest.raises(error, match=match):
        convjax.conv_transpose(y, kernel, **options)
    if isinstance(y, jax.Array):  # the same error, raised while tracing under jit
        with pytest.raises(error, match=match):
            jax.jit(lambda a, b: convjax.conv_transpose(a, b, **options)).lower(y, kernel)
