"""Non-finite values: every formulation propagates NaN and ±inf as the independent NumPy reference
does (which outputs are NaN, +inf, -inf), forward, transposed and in both gradients, with NaN/inf
planted at random positions and always on the borders.

The rule: zero padding behaves as explicit zeros (``0 · inf = NaN`` where a padding tap meets a
non-finite weight), nothing else reaches an output it does not read, and the gradients are those
of that function.  XLA:CPU's own convolution departs from it in three ways the lax path inherits
(documented on ``LaxBackend``): it skips the taps that read zero padding (forward: checked here
against the reference with ``skip_padding``; kernel gradient), and a grouped conv mixes the
groups, so a NaN in one group reaches the other groups' outputs at that position."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from cases import configs
from hypothesis import given, settings
from hypothesis import strategies as st

import convjax
from convjax._src.checks import as_array

SPECIALS = np.array([np.nan, np.inf, -np.inf])
# fft is left out: it mixes a whole channel into every frequency (documented on FFTBackend).
IMPLS = ("lax", "gather", "taps", "planes")
ROLES = ("forward", "transposed", "x-gradient", "kernel-gradient")


def plant(shape, ndim, rng, count):
    """Uniform(-1, 1) values with ``count`` NaN/±inf at random positions plus one on the first
    and last index of each spatial axis (the cells padding and remapping touch)."""
    a = rng.uniform(-1, 1, shape)
    if a.size == 0:
        return a
    flat = a.reshape(-1)
    flat[rng.integers(0, a.size, count)] = rng.choice(SPECIALS, count)
    for axis in range(a.ndim - ndim - 1, a.ndim - 1):
        for edge in (0, a.shape[axis] - 1):
            index = [int(rng.integers(0, n)) for n in a.shape]
            index[axis] = edge
            a[tuple(index)] = rng.choice(SPECIALS)
    return a


def pattern(a):
    """Where ``a`` is NaN, +inf and -inf."""
    a = np.asarray(a, np.float64)
    return np.stack([np.isnan(a), np.isposinf(a), np.isneginf(a)])


def run(case, impl, x, kernel, y):
    """Forward, transposed, and the vjp in (x, kernel), in ROLES order, jitted."""
    options = dict(case["options"], impl=impl)
    size = case["x_shape"][len(case["x_shape"]) - len(case["kernel_shape"]) + 1 : -1]

    @jax.jit
    def everything(x, kernel, y):
        forward = convjax.conv(x, kernel, **options)
        transposed = convjax.conv_transpose(y, kernel, output_shape=size, **options)
        _, vjp = jax.vjp(functools.partial(convjax.conv, **options), x, kernel)
        return forward, transposed, *vjp(y)

    return everything(x, kernel, y)


def expected(case, x, kernel, y):
    ndim = len(case["kernel_shape"]) - 2
    with np.errstate(invalid="ignore", over="ignore"):
        transposed = reference.conv_transpose(
            y, kernel, case["x_shape"][-ndim - 1 :], **case["ref"]
        )
        return (
            reference.conv(x, kernel, **case["ref"]),
            transposed,
            transposed,
            reference.kernel_gradient(x, y, case["kernel_shape"], **case["ref"]),
        )


def lax_departs(case, role):
    """Where XLA:CPU's conv is known to depart from the rule (see the module docstring)."""
    return case["options"]["groups"] > 1 or role == "kernel-gradient"


def departs(impl, case, role):
    """Where a formulation's NaN/inf pattern may differ from the rule's: lax as above; planes,
    whose slabs are lax convolutions, pads its first axis itself (the rule) and leaves the rest
    to XLA (skipped taps), so its forward matches neither reference."""
    if impl == "lax":
        return lax_departs(case, role)
    if impl == "planes":
        return role == "forward" or lax_departs(case, role)
    return False


@settings(max_examples=max(6, settings.default.max_examples // 2))
@given(case=configs(), seed=st.integers(0, 2**16), kernel_specials=st.booleans())
def test_random_configs_propagate_non_finite_values_as_the_reference(case, seed, kernel_specials):
    rng = np.random.default_rng(seed)
    ndim = len(case["kernel_shape"]) - 2
    x = plant(case["x_shape"], ndim, rng, count=2)
    kernel = rng.uniform(-1, 1, case["kernel_shape"])
    if kernel_specials:  # one non-finite weight too
        kernel.reshape(-1)[rng.integers(0, kernel.size)] = rng.choice(SPECIALS)
    y = plant(convjax.output_shape(x.shape, kernel.shape, **case["options"]), ndim, rng, 2)
    want = expected(case, x, kernel, y)
    with np.errstate(invalid="ignore", over="ignore"):  # XLA:CPU skips the taps on padding
        lax_forward = reference.conv(x, kernel, **case["ref"], skip_padding=True)
    for impl in IMPLS:
        got = run(case, impl, as_array(x), as_array(kernel), as_array(y))
        wanted = (lax_forward, *want[1:]) if impl == "lax" else want
        for role, a, b in zip(ROLES, got, wanted, strict=True):
            a = np.asarray(a)
            if not departs(impl, case, role):
                mismatch = np.argwhere(np.any(pattern(a) != pattern(b), axis=0))
                assert not mismatch.size, f"{impl} {role}: NaN/inf differ at {mismatch[:4]}"
            finite = np.isfinite(a) & np.isfinite(b)
            np.testing.assert_allclose(a[finite], b[finite], atol=1e-9, err_msg=f"{impl} {role}")


@pytest.mark.parametrize("impl", IMPLS)
def test_a_value_no_window_reads_does_not_reach_the_output(impl):
    """x[0] is read by no window (stride 2, padding 1): NaN or inf there changes nothing."""
    for special in SPECIALS:
        x = jnp.arange(6.0).reshape(6, 1).at[0, 0].set(special)
        y = convjax.conv(x, jnp.ones((1, 1, 1)), strides=2, padding=1, impl=impl)
        np.testing.assert_array_equal(y[:, 0], [0.0, 1.0, 3.0, 5.0])
        # ... nor the kernel gradient.
        grad = jax.grad(
            lambda k, x=x: jnp.sum(convjax.conv(x, k, strides=2, padding=1, impl=impl))
        )(jnp.ones((1, 1, 1)))
        np.testing.assert_array_equal(grad, [[[9.0]]])


@pytest.mark.parametrize("impl", IMPLS)
def test_covered_infinity_stays_infinite(impl):
    """+inf read by positive weights is +inf, never NaN; the zero padding next to it adds 0."""
    x = jnp.zeros((5, 1)).at[0, 0].set(jnp.inf)
    y = convjax.conv(x, jnp.ones((3, 1, 1)), padding=1, impl=impl)
    np.testing.assert_array_equal(y[:, 0], [np.inf, np.inf, 0.0, 0.0, 0.0])
    back = convjax.conv_transpose(
        jnp.zeros((5, 1)).at[4, 0].set(jnp.nan), jnp.ones((3, 1, 1)), padding=1, impl=impl
    )
    np.testing.assert_array_equal(np.isnan(back[:, 0]), [False, False, False, True, True])


def test_lax_on_cpu_mixes_groups_and_gather_does_not():
    """The documented XLA:CPU departure, pinned: inf in group 1 reaches group 0's output on lax,
    not on the gather path.  If XLA changes, this fails and the docs need updating."""
    x = jnp.zeros((3, 2)).at[1, 1].set(jnp.inf)
    kernel = jnp.ones((1, 1, 2))
    lax_y = convjax.conv(x, kernel, groups=2, impl="lax")
    gather_y = convjax.conv(x, kernel, groups=2, impl="gather")
    np.testing.assert_array_equal(gather_y, [[0.0, 0.0], [0.0, np.inf], [0.0, 0.0]])
    if jax.default_backend() == "cpu":
        assert np.isnan(lax_y[1, 0])


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("impl", ["taps", "gather"])
def test_a_non_finite_weight_reaches_only_the_inputs_its_tap_reads(impl, strides, padding_mode):
    """The input gradient of a depthwise conv whose first tap is inf: the inputs that tap never
    reads (the last, and at stride 2 every other one) get finite cotangents."""
    kernel = jnp.ones((3, 1, 2)).at[0, 0, 0].set(jnp.inf)
    size = convjax.output_shape((1, 7, 2), kernel.shape, strides=strides, padding=1, groups=2)
    options = dict(strides=strides, padding=1, groups=2, padding_mode=padding_mode)
    dx = convjax.conv_transpose(jnp.ones(size), kernel, output_shape=(7,), impl=impl, **options)
    with np.errstate(invalid="ignore"):
        want = reference.conv_transpose(
            np.ones(size), np.asarray(kernel), (7, 2), (strides,), [(1, 1)], (1,), 2, padding_mode
        )
    np.testing.assert_array_equal(pattern(dx), pattern(want))
    assert np.isfinite(np.asarray(dx)[0, -1, 0]) and np.all(np.isfinite(np.asarray(dx)[..., 1]))
