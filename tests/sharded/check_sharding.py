"""Sharded convolutions on 8 simulated CPU devices, against the single-device float64 result.

Runs in a process of its own (``tests/test_sharding.py`` starts it with
``--xla_force_host_platform_device_count=8``), so the rest of the suite keeps one device:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        pytest tests/sharded -o python_files='check_*.py'

Meshes 8 (one spatial axis), 2×4 (batch × spatial) and 2×2×2 (batch × two spatial axes); every
variant, formulation and padding mode, strides 1–3, dilation, outputs the mesh does not divide;
forward values, gradients, result shardings, and the compiled programs' communication.
"""

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from ops import OPS

import convjax
from convjax._src.checks import as_array

if jax.device_count() < 8:
    raise RuntimeError(
        "tests/sharded needs 8 devices: run it with "
        "XLA_FLAGS=--xla_force_host_platform_device_count=8 (tests/test_sharding.py does)."
    )

MESHES = {
    "8": ((8,), ("x",)),
    "2x4": ((2, 4), ("b", "x")),
    "2x2x2": ((2, 2, 2), ("b", "x", "y")),
}
# How each mesh shards [batch, *spatial, C].
LAYOUTS = {"8": P(None, "x"), "2x4": P("b", "x"), "2x2x2": P("b", "x", "y")}


@functools.cache
def mesh(name, axis_type=AxisType.Explicit):
    shape, names = MESHES[name]
    return jax.make_mesh(shape, names, axis_types=(axis_type,) * len(shape))


def shard(array, mesh_name, spec=None):
    return jax.device_put(array, NamedSharding(mesh(mesh_name), spec or LAYOUTS[mesh_name]))


def expected_spec(layout, shape, mesh_name):
    """The promised sharding: the input's along every batch and spatial dim the mesh divides."""
    sizes = dict(zip(*reversed(MESHES[mesh_name]), strict=True))
    entries = list(layout) + [None] * (len(shape) - len(layout))
    entries = [e if e is None or shape[i] % sizes[e] == 0 else None for i, e in enumerate(entries)]
    entries[-1] = None
    return P(*entries)


def same_spec(a, b):
    strip = lambda s: tuple(s) + (None,) * 8  # noqa: E731
    return strip(a)[:8] == strip(b)[:8]


def check(fn, x, kernel, mesh_name, layout=None, tol=1e-10):
    """``fn(x, kernel)`` and its gradients, sharded as ``layout`` on ``mesh_name`` and on one
    device in float64: equal, and the result sharded as promised."""
    layout = layout or LAYOUTS[mesh_name]

    @jax.jit
    def value_and_grads(a, k, cotangent):  # k: one operand or a tuple of them
        y, vjp = jax.vjp(fn, a, k)
        return y, *jax.tree.leaves(vjp(cotangent))

    shape = jax.eval_shape(fn, x, kernel).shape
    cotangent = np.random.default_rng(1).standard_normal(shape)
    expected = value_and_grads(x, kernel, cotangent)
    cotangent = shard(cotangent, mesh_name, expected_spec(layout, shape, mesh_name))
    y, gx, *gk = value_and_grads(shard(x, mesh_name, layout), kernel, cotangent)
    for actual, want in zip((y, gx, *gk), expected, strict=True):
        np.testing.assert_allclose(np.asarray(actual), np.asarray(want), atol=tol, rtol=tol)
    assert same_spec(y.sharding.spec, expected_spec(layout, y.shape, mesh_name)), y.sharding
    assert same_spec(gx.sharding.spec, expected_spec(layout, x.shape, mesh_name)), gx.sharding


def operands(x_shape, kernel_shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(x_shape), as_array(rng.standard_normal(kernel_shape))


# -- every formulation and padding mode ----------------------------------------------------------

FORMULATIONS = ("auto", "lax", "gather", "taps", "fft", "planes")
MODES = ("zeros", "reflect", "replicate", "circular")


@pytest.mark.parametrize("impl", FORMULATIONS)
@pytest.mark.parametrize("mode", MODES)
def test_formulations_and_padding_modes(impl, mode):
    """2×4 mesh, 3×3 'SAME' (stride 2 where the formulation takes strides)."""
    x, k = operands((4, 16, 12, 3), (3, 3, 3, 4))
    strides = 1 if impl == "fft" else 2
    fn = functools.partial(
        convjax.conv, padding="SAME", strides=strides, padding_mode=mode, impl=impl
    )
    check(fn, x, k, "2x4")


@pytest.mark.parametrize(
    "strides, dilation, padding",
    [
        (3, 1, "SAME"),
        (3, 2, ((2, 5), (1, 0))),
        (1, 3, "HALF"),
        (2, 2, "FULL"),
        (1, 1, "CAUSAL"),
    ],
)
def test_strides_and_dilation(strides, dilation, padding):
    x, k = operands((2, 24, 24, 2), (3, 2, 2, 3))
    fn = functools.partial(
        convjax.conv, strides=strides, dilation=dilation, padding=padding, impl="taps"
    )
    check(fn, x, k, "2x4")


@pytest.mark.parametrize("impl", ["gather", "lax"])
def test_uneven_output(impl):
    """'VALID' 3×3 on 32 rows: 30 rows, which 4 devices do not divide: computed in blocks of 8,
    cropped, and replicated along that axis (explicit sharding has no uneven blocks)."""
    x, k = operands((2, 32, 8, 3), (3, 3, 3, 2))
    check(functools.partial(convjax.conv, impl=impl), x, k, "2x4")


def test_halo_wider_than_a_block():
    """A 9-row window over 8 devices of 2 rows each: halos come from devices two and more away,
    circular padding wraps from the last devices to the first."""
    x, k = operands((1, 16, 3), (9, 3, 2))
    fn = functools.partial(convjax.conv, padding="SAME", padding_mode="circular", impl="gather")
    check(fn, x, k, "8")


def test_three_dims_on_eight_devices():
    x, k = operands((1, 16, 6, 5, 2), (3, 3, 3, 2, 2))
    check(functools.partial(convjax.conv, padding=1, strides=(2, 1, 1)), x, k, "8")


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_two_spatial_axes(mode):
    """2×2×2: batch and both spatial axes sharded; corners come in two hops."""
    x, k = operands((2, 12, 8, 3), (3, 3, 3, 4))
    fn = functools.partial(convjax.conv, padding="SAME", padding_mode=mode, dilation=(1, 2))
    check(fn, x, k, "2x2x2")


def test_empty_batch():
    """A zero-size batch split over devices gives the empty result, sharded like the input (JAX
    needs the mesh as context here: nothing is computed from the input, so jit cannot see its
    devices)."""
    x, k = operands((0, 16, 8, 3), (3, 3, 3, 4))
    with jax.set_mesh(mesh("2x4")):
        y = jax.jit(functools.partial(convjax.conv, padding="SAME"))(shard(x, "2x4"), k)
    assert y.shape == (0, 16, 8, 4)
    assert same_spec(y.sharding.spec, P("b", "x"))


@pytest.mark.parametrize("impl", ["gather", "taps"])
@pytest.mark.parametrize("mode", ["zeros", "circular"])
def test_non_finite_values_at_block_borders(impl, mode):
    """A NaN and an inf on the rows where blocks meet (and the wrapped edge) reach exactly the
    outputs whose windows read them, as on one device: the halo copies values."""
    x, k = operands((2, 16, 6, 2), (3, 3, 2, 3))
    x[0, 3, 2, 0], x[1, 4, 0, 1], x[0, 15, 5, 1] = np.nan, np.inf, -np.inf
    fn = jax.jit(functools.partial(convjax.conv, padding="SAME", padding_mode=mode, impl=impl))
    expected = np.asarray(fn(x, k))
    assert np.isnan(expected).any() and np.isinf(expected).any()
    np.testing.assert_array_equal(np.asarray(fn(shard(x, "2x4"), k)), expected)


def test_batch_only():
    x, k = operands((8, 10, 10, 2), (3, 3, 2, 2))
    check(functools.partial(convjax.conv, padding="SAME", impl="gather"), x, k, "8", P("x"))


# -- every variant ------------------------------------------------------------------------------


@pytest.mark.parametrize("op", [op for op in OPS if op.name != "deconvolve"], ids=str)
def test_every_operation(op):
    """Every variant from the shared registry, 'SAME' with reflect padding where it pads."""
    options = {} if op.transposed else {"padding": "SAME", "padding_mode": "reflect"}
    if op.zero_padding_only:
        options = {"padding": "SAME"}
    x = np.random.default_rng(0).standard_normal((2, 16, 8, 4))
    operands = op.arrays(4, np.float64)
    check(lambda x, k: op(x, *k, **options), x, operands, "2x4")


@pytest.mark.parametrize(
    "name, fn, x_shape, k_shape",
    [
        (
            "grouped",
            lambda x, k: convjax.conv(x, k, groups=2, strides=2, padding=1),
            (2, 16, 8, 4),
            (3, 3, 2, 6),
        ),
        (
            "transposed-uneven",
            lambda x, k: convjax.conv_transpose(x, k, strides=2, padding=1, impl="gather"),
            (2, 8, 4, 4),
            (3, 3, 3, 4),
        ),
    ],
)
def test_variants(name, fn, x_shape, k_shape):
    x, k = operands(x_shape, k_shape)
    check(fn, x, k, "2x4")


def test_unfold_and_fold():
    def fn(x, k):
        options = {"strides": 2, "padding": "SAME", "padding_mode": "reflect"}
        patches = convjax.unfold(x, (3, 3), **options)
        return convjax.fold(patches * k.reshape(1, 1, 1, -1), x.shape, (3, 3), **options)

    x, k = operands((2, 16, 8, 2), (3, 3, 2))
    check(fn, x, k, "2x4")


def test_channels_first():
    fn = functools.partial(convjax.conv, padding="SAME", data_format="channels_first")
    x, k = operands((2, 3, 16, 8), (3, 3, 3, 4))
    check(fn, x, k, "2x4", P("b", None, "x"))


@pytest.mark.parametrize("impl", FORMULATIONS)
@pytest.mark.parametrize(
    "x_spec, k_spec",
    [
        (P(None, None, None, "x"), P()),  # channels split: gathered first
        (P("b", None, None, "x"), P()),  # batch and channels
        (P("b", "x"), P(None, None, None, "b")),  # a kernel split over its output channels
    ],
    ids=["channels", "batch-and-channels", "kernel-outputs"],
)
def test_channels_and_kernels_sharded(impl, x_spec, k_spec):
    """Inputs split along their channels and kernels split at all run gathered along those axes
    (a convolution contracts over channels): the values and gradients of one device, every
    gradient sharded like its operand, the result along batch and spatial dims like x's."""
    x, k = operands((4, 8, 8, 4), (3, 3, 4, 4))
    fn = jax.jit(functools.partial(convjax.conv, padding="SAME", impl=impl))
    cotangent = np.random.default_rng(1).standard_normal((4, 8, 8, 4))

    def value_and_grads(a, kernel, g):
        y, vjp = jax.vjp(fn, a, kernel)
        return y, *vjp(g)

    expected = value_and_grads(x, k, cotangent)
    xs = jax.device_put(x, NamedSharding(mesh("2x4"), x_spec))
    ks = jax.device_put(np.asarray(k), NamedSharding(mesh("2x4"), k_spec))
    y, gx, gk = jax.jit(value_and_grads)(xs, ks, cotangent)
    for actual, want in zip((y, gx, gk), expected, strict=True):
        np.testing.assert_allclose(np.asarray(actual), np.asarray(want), atol=1e-10, rtol=1e-10)
    assert same_spec(gx.sharding.spec, x_spec) and same_spec(gk.sharding.spec, k_spec)
    assert same_spec(y.sharding.spec, P(*[e for e in x_spec][:3]))


def test_deconvolve_wiener():
    """The Wiener filter's FFTs span whole spatial axes: each device gets whole images of its
    batch block (gathered along the spatial axes), and the result is split like ``y`` again."""
    x, k = operands((2, 16, 8, 2), (3, 3, 2, 2))
    fn = functools.partial(
        convjax.deconvolve,
        method="wiener",
        padding="SAME",
        padding_mode="circular",
        regularization=1e-2,
    )
    check(fn, x, k, "2x4", tol=1e-8)


def test_streaming_a_batch_split_over_devices():
    x, k = operands((8, 12, 3), (3, 3, 2))
    xs = shard(x, "8", P("x"))
    step = jax.jit(functools.partial(convjax.streaming.step, dilation=2))
    state = convjax.streaming.init(xs[:, :1], k, dilation=2)
    chunks = []
    for t in range(0, 12, 4):
        y, state = step(state, xs[:, t : t + 4], k)
        chunks.append(y)
    assert same_spec(y.sharding.spec, P("x"))
    offline = convjax.conv(as_array(x), k, padding="CAUSAL", dilation=2)
    np.testing.assert_allclose(np.asarray(jnp.concatenate(chunks, axis=1)), offline, atol=1e-10)


def test_deconvolve_lsq():
    x, k = operands((2, 16, 8, 2), (3, 3, 2, 2))
    y = convjax.conv(as_array(x), k, padding="SAME")
    fn = functools.partial(
        convjax.deconvolve, method="lsq", padding="SAME", regularization=1e-3, max_iters=30
    )
    check(fn, np.asarray(y), k, "2x4", tol=1e-8)


# -- communication ------------------------------------------------------------------------------


HLO_BYTES = {"f64": 8, "f32": 4, "bf16": 2, "f16": 2}


def permuted_bytes(hlo: str) -> int:
    """Bytes each device receives over the program's collective-permutes."""
    total = 0
    for shape in re.findall(r"= (\w+\[[\d,]*\])\{[^}]*\} collective-permute\(", hlo):
        dtype, dims = re.match(r"(\w+)\[([\d,]*)\]", shape).groups()
        total += math.prod(int(d) for d in dims.split(",") if d) * HLO_BYTES[dtype]
    return total


HLO_CASES = {
    "2x4 3×3 SAME": ("2x4", (4, 32, 12, 3), (3, 3, 3, 8), {"padding": "SAME"}),
    "2x4 5×5 s2 circular": (
        "2x4",
        (4, 32, 12, 3),
        (5, 5, 3, 8),
        {"padding": "SAME", "strides": 2, "padding_mode": "circular"},
    ),
    "2x2x2 3×3 d2": ("2x2x2", (2, 16, 16, 3), (3, 3, 3, 8), {"padding": "SAME", "dilation": 2}),
}


@pytest.mark.parametrize("case", HLO_CASES)
@pytest.mark.parametrize("impl", ["gather", "taps", "lax"])
def test_communication_is_the_halo(case, impl):
    """No all-gather in the forward or backward program; the forward's collective-permutes
    move exactly the halo the plan predicts from the index map, the backward's twice that (the
    exchange, and its transpose sending the halo's cotangent back)."""
    mesh_name, x_shape, k_shape, options = HLO_CASES[case]
    x, k = operands(x_shape, k_shape)
    xs = shard(x, mesh_name)
    fn = functools.partial(convjax.conv, impl=impl, **options)
    forward = jax.jit(fn).lower(xs, k).compile().as_text()
    backward = jax.jit(jax.grad(lambda a, b: jnp.sum(fn(a, b) ** 2), argnums=(0, 1)))
    backward = backward.lower(xs, k).compile().as_text()
    assert "all-gather" not in forward and "all-gather" not in backward
    predicted = convjax.halo_plan(xs, k.shape, **options).halo_bytes
    assert predicted > 0
    assert permuted_bytes(forward) == predicted
    assert permuted_bytes(backward) == 2 * predicted


# -- modules and other meshes -------------------------------------------------------------------


def test_nnx_modules():
    from flax import nnx

    options = {"padding": "SAME", "param_dtype": jnp.float64}
    layer = convjax.nnx.Conv(3, 4, kernel_size=(3, 3), rngs=nnx.Rngs(0), **options)
    up = convjax.nnx.ConvTranspose(4, 3, kernel_size=(3, 3), strides=2, rngs=nnx.Rngs(1), **options)
    x, _ = operands((4, 16, 8, 3), (1, 1, 1))
    y_ref = up(layer(as_array(x)))
    y = nnx.jit(lambda a: up(layer(a)))(shard(x, "2x4"))
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), atol=1e-10)
    assert same_spec(y.sharding.spec, P("b", "x"))


def test_linen_module():
    layer = convjax.linen.DepthwiseConv(
        kernel_size=(3, 3), depth_multiplier=2, padding="SAME", param_dtype=jnp.float64
    )
    x, _ = operands((4, 16, 8, 3), (1, 1, 1))
    params = layer.init(jax.random.key(0), as_array(x))
    y_ref = layer.apply(params, as_array(x))
    y = jax.jit(layer.apply)(params, shard(x, "2x4"))
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), atol=1e-10)
    assert same_spec(y.sharding.spec, P("b", "x"))


@pytest.mark.parametrize("impl", ["lax", "taps", "gather"])
def test_auto_axes_are_left_to_xla(impl):
    """With Auto mesh axes the types carry no sharding: XLA's partitioner places the
    computation; the numbers still equal one device's (stride 2 included)."""
    x, k = operands((4, 16, 12, 3), (3, 3, 3, 4))
    xs = jax.device_put(x, NamedSharding(mesh("2x4", AxisType.Auto), P("b", "x")))
    fn = jax.jit(functools.partial(convjax.conv, strides=2, padding="SAME", impl=impl))
    np.testing.assert_allclose(np.asarray(fn(xs, k)), np.asarray(fn(x, k)), atol=1e-10)
