"""Every formulation equals the float64 NumPy reference, forward and in both gradients, on random
configs of every convolution it accepts; what it refuses is refused clearly; the ``auto`` table
picks what it says; and ``auto`` equals ``lax`` on every variant under jit, vmap and grad."""

import functools
import math
import typing
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from cases import CASES, case_id, configs, make_case
from helpers import COMPUTING, TOLERANCE, assert_close, fan_in, operands
from hypothesis import given

import convjax
from convjax._src import formulations
from convjax._src.checks import as_array
from convjax._src.formulations import auto as dispatch

FORMULATIONS = COMPUTING


def accepted(formulation, case):
    """``case`` as the formulation accepts it: FFT convolutions have stride 1."""
    if formulation != "fft":
        return case
    o = dict(case["options"], strides=1)
    return make_case(case["x_shape"], case["kernel_shape"], **o)


def everything(case, formulation):
    """One jitted program: the forward conv and its vjp for a cotangent."""
    f = functools.partial(convjax.conv, impl=formulation, **case["options"])

    @jax.jit
    def run(x, kernel, cotangent):
        y, vjp = jax.vjp(f, x, kernel)
        return (y, *vjp(cotangent))

    return run


def check_against_reference(case, formulation, dtype=np.float64, seed=0):
    x, kernel = operands(case, dtype, seed)
    ndim = len(case["kernel_shape"]) - 2
    out_shape = convjax.output_shape(x.shape, kernel.shape, **case["options"])
    g = as_array(np.random.default_rng(seed + 1).uniform(-1, 1, out_shape), dtype)
    y, dx, dk = everything(case, formulation)(x, kernel, g)
    x64, k64, g64 = (np.asarray(a, np.float64) for a in (x, kernel, g))
    assert y.dtype == dx.dtype == dk.dtype == np.dtype(dtype)
    assert_close(y, reference.conv(x64, k64, **case["ref"]), dtype, fan_in(case))
    want_dx = reference.conv_transpose(g64, k64, case["x_shape"][-ndim - 1 :], **case["ref"])
    assert_close(dx, want_dx, dtype, fan_in(case))
    terms = math.prod(out_shape[:-1])  # a weight's gradient sums over every output position
    want_dk = reference.kernel_gradient(x64, g64, case["kernel_shape"], **case["ref"])
    assert_close(dk, want_dk, dtype, terms)


@pytest.mark.parametrize("formulation", FORMULATIONS)
@given(case=configs())
def test_random_configs_forward_and_gradients_match_the_reference(formulation, case):
    check_against_reference(accepted(formulation, case), formulation)


@pytest.mark.parametrize("formulation", ["auto", *FORMULATIONS])
@pytest.mark.parametrize("case", [CASES[i] for i in (2, 3, 5)], ids=case_id)
def test_shared_cases_in_float32(formulation, case):
    """Groups with strides, dilated reflect, 3-d circular: float32 in, float32 out."""
    check_against_reference(accepted(formulation, case), formulation, np.float32)


TILING = [  # windows that tile the input (strides equal to the window): taps' patch product
    make_case((2, 8, 8, 6), (2, 2, 6, 4), strides=2),
    make_case((2, 9, 7, 6), (2, 2, 3, 4), strides=2, padding=((1, 0), (0, 1)), groups=2),
    make_case((1, 12, 5), (4, 5, 3), strides=4, padding="SAME", padding_mode="circular"),
    make_case(
        (2, 4, 6, 4, 2),
        (2, 3, 1, 2, 4),
        strides=(2, 3, 1),
        padding=((1, 1), (0, 0), (0, 0)),
        padding_mode="reflect",
    ),
    make_case((1, 6, 6, 8), (3, 3, 2, 8), strides=3, padding=1, groups=4),
]


@pytest.mark.parametrize("formulation", ["auto", "taps", "planes"])
@pytest.mark.parametrize("case", TILING, ids=case_id)
def test_windows_that_tile_the_input(formulation, case):
    check_against_reference(case, formulation)


PLANES_FOLDS = [  # (case, whether planes folds the first axis's taps into the outputs)
    (make_case((2, 5, 4, 6, 6), (3, 2, 3, 6, 4), padding=1, dilation=(2, 1, 1)), True),
    (make_case((2, 6, 5, 4), (3, 3, 4, 5), padding=((2, 0), (1, 1)), strides=(1, 2)), True),
    (make_case((2, 5, 4, 6, 2), (3, 2, 3, 2, 8), padding=1), False),  # C_out ≥ k₀ · C_in
    (make_case((2, 7, 4, 6, 6), (3, 2, 3, 6, 4), padding=1, strides=(2, 1, 1)), False),
    (make_case((2, 5, 4, 6, 6), (3, 2, 3, 3, 4), padding=1, groups=2), False),
    (make_case((2, 5, 6, 6), (3, 3, 6, 4), padding=1, padding_mode="reflect"), False),
]


@pytest.mark.parametrize(
    ("case", "into_outputs"), [pytest.param(*c, id=case_id(c[0])) for c in PLANES_FOLDS]
)
def test_planes_folds_into_the_outputs_or_the_inputs(case, into_outputs):
    """Both of planes' folds, each where it runs, equal the reference.  A non-finite weight of a
    first-axis tap that reads zero padding makes NaN the output planes that read it, as explicit
    zeros do: the output fold adds a padding plane's convolution where the input fold stacks
    zeros (along the other axes both are XLA's convolution, which skips the padding's taps)."""
    planes = formulations.planes
    shapes = case["x_shape"], case["kernel_shape"]
    spec = convjax.make_spec("test", *shapes, **case["options"])
    assert planes.folds_outputs(spec, case["kernel_shape"]) == into_outputs
    check_against_reference(case, "planes")
    if into_outputs:
        x, kernel = operands(case, np.float64)
        kernel = kernel.at[(0,) * (kernel.ndim - 1) + (0,)].set(np.nan)
        got, want = (
            np.isnan(fold(x, kernel, spec)) for fold in (planes.into_outputs, planes.into_inputs)
        )
        assert got[:, 0, ..., 0].any()  # the first output plane's tap 0 reads padding only
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("formulation", ["auto", *FORMULATIONS])
def test_half_precision_accumulates_wide(formulation):
    """bfloat16 in, bfloat16 out, within bfloat16's tolerance of the float64 reference (the
    sums run in float32); preferred_element_type=float32 returns the wider sums."""
    case = accepted(formulation, CASES[2])
    x, kernel = operands(case, jnp.bfloat16)
    want = reference.conv(np.asarray(x, np.float64), np.asarray(kernel, np.float64), **case["ref"])
    f = functools.partial(convjax.conv, impl=formulation, **case["options"])
    y = jax.jit(f)(x, kernel)
    assert y.dtype == jnp.bfloat16
    assert_close(y, want, jnp.bfloat16, fan_in(case))
    wide = jax.jit(functools.partial(f, preferred_element_type=jnp.float32))(x, kernel)
    assert wide.dtype == jnp.float32
    scale = TOLERANCE[np.dtype(jnp.bfloat16)] / TOLERANCE[np.dtype(np.float32)]
    assert_close(wide, want, np.float32, fan_in(case) * scale)


HALF_CASES = [CASES[2], TILING[0]]  # narrow groups with strides; dense windows that tile
HALF = [(f, jnp.bfloat16) for f in ("auto", *FORMULATIONS)] + [("taps", jnp.float16)]


@pytest.mark.every_case(formulation="auto")
@pytest.mark.parametrize(
    "case, formulation, dtype",
    [(case, *half) for half in HALF for case in HALF_CASES],
    ids=lambda v: case_id(v) if isinstance(v, Mapping) else getattr(v, "__name__", v),
)
def test_half_precision_gradients_keep_their_dtype(formulation, dtype, case):
    """Both gradients of a float32 loss of a half-precision conv, and of its transposed conv,
    come back in the operands' dtype, within that dtype's tolerance of the float64 reference."""
    case = accepted(formulation, case)
    x, kernel = operands(case, dtype)
    ndim = len(case["kernel_shape"]) - 2
    options = dict(case["options"], impl=formulation)
    y = convjax.conv(x, kernel, **options)
    size = case["x_shape"][-ndim - 1 : -1]

    def loss(x, kernel, y):
        forward = convjax.conv(x, kernel, **options).astype(jnp.float32)
        back = convjax.conv_transpose(y, kernel, output_shape=size, **options)
        return jnp.sum(forward**2) + jnp.sum(back.astype(jnp.float32) ** 2)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(x, kernel, y)
    assert [g.dtype for g in grads] == [np.dtype(dtype)] * 3
    wide = [np.asarray(a, np.float64) for a in (x, kernel, y)]
    want = jax.grad(loss, argnums=(0, 1, 2))(*(as_array(a, jnp.float32) for a in wide))
    for got, expected in zip(grads, want, strict=True):
        assert_close(got, expected, dtype, fan_in(case) * 16)


def test_fft_refuses_strides_clearly():
    x, kernel = jnp.ones((1, 8, 8, 2)), jnp.ones((3, 3, 2, 2))
    with pytest.raises(
        ValueError,
        match=r"^conv: impl='fft' cannot run this convolution: it needs strides 1, got \(2, 2\); "
        r"use impl='auto' or another of convjax.formulations\(\)\.$",
    ):
        convjax.conv(x, kernel, strides=2, impl="fft")
    with pytest.raises(ValueError, match=r"^conv_transpose: impl='fft' cannot run"):
        convjax.conv_transpose(x, kernel, strides=2, impl="fft")


def test_formulations_lists_every_name_impl_accepts():
    names = [f.name for f in convjax.formulations()]
    assert names == ["auto", "lax", "gather", "taps", "fft", "planes", "autotune"]
    x, kernel = jnp.ones((1, 6, 6, 2)), jnp.ones((3, 3, 2, 2))
    for name in names:
        assert convjax.conv(x, kernel, impl=name).shape == (1, 4, 4, 2)
    assert all(f.accepts and f.description for f in convjax.formulations())
    # The annotation names the same formulations.
    literal, _backend = typing.get_args(formulations.Impl)
    assert list(typing.get_args(literal)) == names


# -- forward mode ---------------------------------------------------------------------------------


@pytest.mark.parametrize("formulation", ["lax", "gather", "fft", "taps"])
@pytest.mark.parametrize("groups", [1, 4])
def test_forward_mode(formulation, groups):
    """jvp works on every formulation, taps' depthwise and narrow-group rules included."""
    x = as_array(np.random.default_rng(0).normal(size=(2, 7, 7, 4)), jnp.float64)
    kernel = as_array(np.random.default_rng(1).normal(size=(3, 3, 4 // groups, 4)), jnp.float64)
    f = functools.partial(convjax.conv, groups=groups, padding=1, impl=formulation)
    want = jax.jvp(
        functools.partial(convjax.conv, groups=groups, padding=1, impl="lax"),
        (x, kernel),
        (x, kernel),
    )
    got = jax.jvp(f, (x, kernel), (x, kernel))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


# -- the auto table ---------------------------------------------------------------------------


def features(**overrides):
    base = dict(
        platform="cpu",
        kind="dense",
        transposed=False,
        strided=False,
        dilated=False,
        window=3,
        narrow=False,
        spectrum_bytes=0,
    )
    return dispatch.Features(**(base | overrides))


@pytest.mark.parametrize(
    "overrides, formulation",
    [
        (dict(kind="pointwise", window=1), "lax"),
        (dict(transposed=True), "lax"),
        (dict(kind="depthwise", narrow=True), "taps"),
        (dict(kind="depthwise", narrow=True, window=9), "fft"),
        (dict(kind="depthwise", narrow=True, strided=True, window=9), "taps"),
        (dict(kind="dense", window=15), "fft"),
        (dict(kind="dense", window=15, spectrum_bytes=2**30), "lax"),
        (dict(kind="dense", window=15, strided=True), "lax"),
        (dict(kind="dense", window=15, transposed=True), "fft"),
        (dict(kind="depthwise", narrow=True, transposed=True), "taps"),
        (dict(kind="grouped", narrow=True), "taps"),
        (dict(kind="grouped", narrow=False), "lax"),
        (dict(dilated=True), "lax"),
        (dict(kind="dense", window=9, integer=True), "lax"),
        (dict(kind="depthwise", narrow=True, window=9, integer=True), "taps"),
        (dict(), "lax"),
        (dict(strided=True, window=7), "lax"),
        (dict(platform="gpu", kind="depthwise", narrow=True, dilated=True), "taps"),
        (dict(platform="gpu", kind="depthwise", narrow=True), "lax"),
        (dict(platform="gpu", transposed=True), "lax"),
        (dict(platform="gpu", kind="pointwise", window=1), "lax"),
        (dict(platform="tpu", kind="depthwise", narrow=True, dilated=True), "lax"),
        (dict(kind="dense", ndim=3), "planes"),
        (dict(kind="dense", ndim=3, transposed=True, strided=True), "planes"),
        (dict(kind="pointwise", window=1, ndim=3), "planes"),
        (dict(kind="depthwise", narrow=True, ndim=3), "taps"),
        (dict(kind="grouped", ndim=3), "taps"),
        (dict(kind="dense", ndim=3, window=15), "fft"),
        (dict(platform="gpu", kind="dense", ndim=3), "lax"),
        (dict(kind="grouped"), "lax"),
        (dict(transposed=True, strided=True, tiles=True), "taps"),
        (dict(strided=True, tiles=True), "lax"),
        (dict(strided=True, tiles=True, narrow=True, window=16), "taps"),
        (dict(platform="gpu", strided=True, tiles=True, narrow=True), "lax"),
        (dict(strided=True, tiles=True, ndim=3), "taps"),
        (dict(platform="gpu", transposed=True, strided=True, tiles=True), "lax"),
    ],
)
def test_the_table_picks(overrides, formulation):
    rule = dispatch.rule_for(features(**overrides))
    assert rule.formulation == formulation
    assert rule.evidence  # every row says what justifies it


def test_every_row_is_reachable_and_the_last_catches_all():
    """A row's own features select it (no earlier row shadows it); the last has none."""
    conditions = (
        "platform",
        "kind",
        "transposed",
        "strided",
        "dilated",
        "narrow",
        "integer",
        "tiles",
    )
    for index, rule in enumerate(dispatch.TABLE):
        given = {
            name: getattr(rule, name) for name in conditions if getattr(rule, name) is not None
        }
        if rule.min_window is not None:
            given["window"] = rule.min_window
        if rule.min_ndim is not None:
            given["ndim"] = rule.min_ndim
        assert dispatch.rule_for(features(**given)) is rule, (index, rule)
    last = dispatch.TABLE[-1]
    assert not any(getattr(last, name) is not None for name in conditions)
    assert last.min_window is None and last.min_ndim is None


def test_auto_choice_reads_the_table_for_real_shapes():
    assert convjax.auto_choice((8, 56, 56, 144), (3, 3, 1, 144), groups=144).formulation == "taps"
    assert convjax.auto_choice((4, 56, 56, 64), (3, 3, 64, 64), padding=1).formulation == "lax"
    volume = convjax.auto_choice((4, 16, 16, 16, 32), (3, 3, 3, 32, 32), padding=1)
    assert volume.formulation == "planes"
    transposed = convjax.auto_choice((4, 32, 32, 256), (3, 3, 128, 256), strides=2, transpose=True)
    assert transposed.formulation == "lax" and "transposed" in transposed.evidence
    depthwise_up = convjax.auto_choice(
        (8, 28, 28, 32), (3, 3, 1, 32), strides=2, groups=32, transpose=True
    )
    assert depthwise_up.formulation == "taps"


# -- auto equals lax --------------------------------------------------------------------------


def ones(x, shape):
    """A constant kernel in x's dtype."""
    return jnp.ones(shape, x.dtype)


VARIANTS = {
    "conv": lambda impl, x: convjax.conv(x, ones(x, (3, 3, 4, 6)) / 7, padding="SAME", impl=impl),
    "strided reflect": lambda impl, x: convjax.conv(
        x, ones(x, (3, 3, 4, 6)) / 7, strides=2, padding=1, padding_mode="reflect", impl=impl
    ),
    "dilated": lambda impl, x: convjax.dilated_conv(
        x, ones(x, (3, 3, 4, 6)) / 7, rate=2, impl=impl
    ),
    "grouped circular": lambda impl, x: convjax.conv(
        x, ones(x, (3, 3, 2, 6)) / 7, groups=2, padding=1, padding_mode="circular", impl=impl
    ),
    "depthwise replicate": lambda impl, x: convjax.depthwise_conv(
        x, ones(x, (3, 3, 1, 8)) / 7, padding=2, dilation=2, padding_mode="replicate", impl=impl
    ),
    "pointwise": lambda impl, x: convjax.conv(x, ones(x, (1, 1, 4, 6)) / 7, impl=impl),
    "transposed": lambda impl, x: convjax.conv_transpose(
        x, ones(x, (3, 3, 5, 4)) / 7, strides=2, padding=1, output_padding=1, impl=impl
    ),
    "transposed depthwise": lambda impl, x: convjax.conv_transpose(
        x, ones(x, (3, 3, 1, 4)) / 7, strides=2, groups=4, impl=impl
    ),
    "spatial separable": lambda impl, x: convjax.spatial_separable_conv(
        x, [ones(x, (3, 4, 4)) / 3, ones(x, (3, 4, 6)) / 3], padding="SAME", impl=impl
    ),
    "depthwise separable": lambda impl, x: convjax.depthwise_separable_conv(
        x, ones(x, (3, 3, 1, 8)) / 7, ones(x, (8, 6)) / 7, padding="SAME", impl=impl
    ),
}


@pytest.mark.parametrize(
    "name, dtype",
    [(name, np.float64) for name in VARIANTS]
    + [
        (name, dtype)
        for name in ("conv", "depthwise replicate")
        for dtype in (np.float32, jnp.bfloat16)
    ],
    ids=lambda v: v if isinstance(v, str) else np.dtype(v).name,
)
def test_auto_equals_lax_under_jit_vmap_and_grad(name, dtype):
    variant = VARIANTS[name]
    xs = as_array(np.random.default_rng(0).uniform(-1, 1, (3, 2, 9, 8, 4)), dtype)
    tol = {np.float64: 1e-12, np.float32: 2e-5}.get(dtype, 5e-2)

    def loss(impl, x):
        return jnp.sum(jnp.sin(variant(impl, x.astype(dtype))))

    @jax.jit
    def everything(xs):
        return {
            impl: (
                jax.vmap(functools.partial(variant, impl))(xs),
                jax.vmap(jax.grad(functools.partial(loss, impl)))(xs),
            )
            for impl in ("auto", "lax")
        }

    out = everything(xs)
    for a, b in zip(out["auto"], out["lax"], strict=True):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    # Eagerly too, on one element.
    np.testing.assert_allclose(variant("auto", xs[0]), out["lax"][0][0], rtol=tol, atol=tol)
