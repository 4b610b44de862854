"""Deformable convolution against an independent float64 NumPy reference: a plain loop over
outputs, taps, offset groups and interpolation corners, sharing no code with convjax.  Values and
the adjoints in ``x`` and the kernel against the reference, the offsets' and mask's derivatives
against finite differences, ``jax.linear_transpose`` in ``x`` as the adjoint, zero offsets against
``convjax.conv``, blocks, empty batches, non-finite values and offsets, errors, ``data_format``,
the layer's function, and the picture."""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import TOLERANCE

import convjax
from convjax._src.checks import as_array
from convjax._src.ops.deform import deform_conv, deformable_conv

# -- the reference --------------------------------------------------------------------------------


def reads(x_shape, kernel_shape, offsets, strides, padding, dilation, offset_groups):
    """Every nonzero interpolation weight: ``{(b, o, t, q): [(cell, weight), ...]}`` for batch
    index ``b`` (flat), output ``o``, tap ``t`` (a tuple per axis), offset group ``q``; corners
    outside the input and corners of weight zero are left out.  Also the output's spatial shape.

    ``x_shape``: ``[*batch, *spatial, C]``; ``offsets``: float64 ``[*batch, *out, G·K·N]``."""
    ndim = len(kernel_shape) - 2
    window, spatial = kernel_shape[:ndim], x_shape[-ndim - 1 : -1]
    out = tuple(
        (i + lo + hi - (k - 1) * d - 1) // s + 1
        for i, k, s, (lo, hi), d in zip(spatial, window, strides, padding, dilation)
    )
    offsets = np.asarray(offsets, np.float64).reshape(
        -1, *out, offset_groups, len(list(itertools.product(*map(range, window)))), ndim
    )
    table = {}
    for b in range(offsets.shape[0]):
        for o in itertools.product(*map(range, out)):
            for k, t in enumerate(itertools.product(*map(range, window))):
                for q in range(offset_groups):
                    p = [
                        o[a] * strides[a]
                        - padding[a][0]
                        + t[a] * dilation[a]
                        + offsets[(b, *o, q, k, a)]
                        for a in range(ndim)
                    ]
                    entries = []
                    for corner in itertools.product((0, 1), repeat=ndim):
                        cell = tuple(math.floor(p[a]) + corner[a] for a in range(ndim))
                        weight = 1.0
                        for a in range(ndim):
                            f = p[a] - math.floor(p[a])
                            weight *= f if corner[a] else 1.0 - f
                        inside = all(0 <= cell[a] < spatial[a] for a in range(ndim))
                        if inside and weight != 0.0:
                            entries.append((cell, weight))
                    table[(b, o, t, q)] = entries
    return table, out


def patches(x, kernel_shape, table, mask, offset_groups):
    """``[B, *out, *window, C]``: the modulated samples."""
    ndim = len(kernel_shape) - 2
    window = kernel_shape[:ndim]
    x = np.asarray(x, np.float64)
    x = x.reshape(-1, *x.shape[-ndim - 1 :])
    per_group = x.shape[-1] // offset_groups
    keys = list(table)
    out = tuple(max(o[a] for _, o, _, _ in keys) + 1 for a in range(ndim))
    result = np.zeros((x.shape[0], *out, *window, x.shape[-1]))
    taps = list(itertools.product(*map(range, window)))
    mask = (
        None
        if mask is None
        else np.asarray(mask, np.float64).reshape(x.shape[0], *out, offset_groups, len(taps))
    )
    for (b, o, t, q), entries in table.items():
        channels = slice(q * per_group, (q + 1) * per_group)
        m = 1.0 if mask is None else mask[(b, *o, q, taps.index(t))]
        for cell, weight in entries:
            result[(b, *o, *t, channels)] += m * weight * x[(b, *cell, channels)]
    return result


def reference(x, kernel, offsets, mask, *, strides, padding, dilation, groups, offset_groups):
    """float64 ``[*batch, *out, C_out]``."""
    kernel = np.asarray(kernel, np.float64)
    ndim = kernel.ndim - 2
    table, out = reads(x.shape, kernel.shape, offsets, strides, padding, dilation, offset_groups)
    p = patches(x, kernel.shape, table, mask, offset_groups)
    c_out = kernel.shape[-1]
    p = p.reshape(*p.shape[:-1], groups, -1)  # [B, *out, *window, g, C]
    k = kernel.reshape(*kernel.shape[:-2], kernel.shape[-2], groups, c_out // groups)
    letters = "uvw"[:ndim]  # window axes; their upper case the output axes
    y = np.einsum(f"n{letters.upper()}{letters}gc,{letters}cgj->n{letters.upper()}gj", p, k)
    return y.reshape(*x.shape[: x.ndim - ndim - 1], *out, c_out)


def reference_x_adjoint(
    g, x_shape, kernel, offsets, mask, *, strides, padding, dilation, groups, offset_groups
):
    """``Aᵀ g`` for the linear map ``x ↦ deform_conv(x, kernel, offsets, mask)``: each output's
    cotangent times the kernel, scattered back onto the corners with their weights."""
    kernel = np.asarray(kernel, np.float64)
    ndim = kernel.ndim - 2
    window = kernel.shape[:ndim]
    table, out = reads(x_shape, kernel.shape, offsets, strides, padding, dilation, offset_groups)
    g = np.asarray(g, np.float64).reshape(-1, *out, kernel.shape[-1])
    c_in, c_out = x_shape[-1], kernel.shape[-1]
    per_group, per_offset_group = c_in // groups, c_in // offset_groups
    taps = list(itertools.product(*map(range, window)))
    mask = (
        None
        if mask is None
        else np.asarray(mask, np.float64).reshape(g.shape[0], *out, offset_groups, len(taps))
    )
    # The cotangent of each patch entry: [B, *out, *window, C_in].
    gp = np.zeros((g.shape[0], *out, *window, c_in))
    for c in range(c_in):
        gg = c // per_group
        outs = slice(gg * (c_out // groups), (gg + 1) * (c_out // groups))
        for t in taps:
            gp[(Ellipsis, *t, c)] = g[..., outs] @ kernel[(*t, c % per_group, outs)]
    result = np.zeros((g.shape[0], *x_shape[-ndim - 1 :]))
    for (b, o, t, q), entries in table.items():
        channels = slice(q * per_offset_group, (q + 1) * per_offset_group)
        m = 1.0 if mask is None else mask[(b, *o, q, taps.index(t))]
        for cell, weight in entries:
            result[(b, *cell, channels)] += m * weight * gp[(b, *o, *t, channels)]
    return result.reshape(x_shape)


def reference_kernel_gradient(
    x, g, kernel_shape, offsets, mask, *, strides, padding, dilation, groups, offset_groups
):
    """``∂⟨deform_conv(x, k, …), g⟩ / ∂k``: the patches times the cotangent, summed."""
    ndim = len(kernel_shape) - 2
    table, _out = reads(x.shape, kernel_shape, offsets, strides, padding, dilation, offset_groups)
    p = patches(x, kernel_shape, table, mask, offset_groups)
    c_out = kernel_shape[-1]
    p = p.reshape(-1, *kernel_shape[:ndim], groups, kernel_shape[-2])
    g = np.asarray(g, np.float64).reshape(-1, groups, c_out // groups)
    grad = np.einsum("n...gc,ngj->...cgj", p, g)
    return grad.reshape(kernel_shape)


# -- configurations -------------------------------------------------------------------------------


def random_case(seed, ndim, batch=(2,)):
    """A random valid configuration: window, strides, dilation, (lo, hi) padding, groups,
    offset groups and sizes."""
    rng = np.random.default_rng(seed)
    window = tuple(int(k) for k in rng.integers(1, 4, ndim))
    dilation = tuple(int(d) for d in rng.integers(1, 3, ndim))
    strides = tuple(int(s) for s in rng.integers(1, 3, ndim))
    padding = tuple((int(lo), int(hi)) for lo, hi in rng.integers(0, 3, (ndim, 2)))
    groups, offset_groups = (int(g) for g in rng.choice([1, 2], 2))
    c_in = 2 * int(rng.integers(1, 3))
    c_out = groups * int(rng.integers(1, 3))
    spatial = tuple(
        int(max((k - 1) * d + 1 - lo - hi, 1) + rng.integers(0, 7 - ndim))
        for k, d, (lo, hi) in zip(window, dilation, padding)
    )
    return dict(
        x_shape=(*batch, *spatial, c_in),
        kernel_shape=(*window, c_in // groups, c_out),
        options=dict(
            strides=strides,
            padding=padding,
            dilation=dilation,
            groups=groups,
            offset_groups=offset_groups,
        ),
    )


CASES = {
    "1-d, two batch dims": random_case(2, 1, batch=(2, 1)),
    "2-d": random_case(3, 2),
    "2-d, groups and offset groups": dict(
        x_shape=(2, 6, 7, 4),
        kernel_shape=(3, 2, 2, 6),
        options=dict(
            strides=(2, 1), padding=((1, 1), (0, 2)), dilation=(1, 2), groups=2, offset_groups=2
        ),
    ),
    "3-d": dict(
        x_shape=(1, 4, 3, 5, 2),
        kernel_shape=(2, 2, 2, 2, 2),
        options=dict(
            strides=(1, 2, 2),
            padding=((1, 0), (1, 1), (0, 1)),
            dilation=1,
            groups=1,
            offset_groups=2,
        ),
    ),
}


def per_dim(value, ndim):
    return tuple(value) if isinstance(value, tuple) else (value,) * ndim


def ref_options(case):
    ndim = len(case["kernel_shape"]) - 2
    options = case["options"]
    return dict(
        strides=per_dim(options["strides"], ndim),
        padding=options["padding"],
        dilation=per_dim(options["dilation"], ndim),
        groups=options["groups"],
        offset_groups=options["offset_groups"],
    )


def arrays(case, seed=0, *, integer=False):
    """x, kernel, offsets (fractional parts in [0.15, 0.85], or integers), mask and a
    cotangent, float64 NumPy arrays."""
    rng = np.random.default_rng(seed)
    ndim = len(case["kernel_shape"]) - 2
    k = math.prod(case["kernel_shape"][:ndim])
    g = case["options"]["offset_groups"]
    shape = convjax.output_shape(
        case["x_shape"],
        case["kernel_shape"],
        **{n: case["options"][n] for n in ("strides", "padding", "dilation", "groups")},
    )
    x = rng.uniform(-1, 1, case["x_shape"])
    kernel = rng.uniform(-1, 1, case["kernel_shape"])
    whole = rng.integers(-2, 2, (*shape[:-1], g * k * ndim)).astype(np.float64)
    offsets = whole if integer else whole + rng.uniform(0.15, 0.85, whole.shape)
    mask = rng.uniform(-0.5, 1.5, (*shape[:-1], g * k))
    cotangent = rng.uniform(-1, 1, shape)
    return x, kernel, offsets, mask, cotangent


def close(actual, expected, dtype, case):
    """Within the dtype's tolerance, scaled by the size of the sum; the worst scaled error."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    err = np.abs(actual - expected) / (1 + np.abs(expected))
    tol = TOLERANCE[np.dtype(dtype)] * math.sqrt(math.prod(case["kernel_shape"][:-1]))
    assert err.max(initial=0.0) <= tol, f"max scaled error {err.max()} > {tol} ({dtype})"
    return err.max(initial=0.0)


@functools.cache
def program(name):
    """One jitted program per case: the value, the vjp in every operand, and the jvp of
    ⟨y, g⟩ in the offsets and mask (the same program serves the finite differences)."""
    f = functools.partial(deform_conv, **CASES[name]["options"])

    @jax.jit
    def everything(x, kernel, offsets, mask, g, tangents):
        y, vjp = jax.vjp(lambda x, k, o, m: f(x, k, o, mask=m), x, kernel, offsets, mask)
        _, jvp = jax.jvp(
            lambda o, m: jnp.sum(f(x, kernel, o, mask=m) * g), (offsets, mask), tangents
        )
        return y, vjp(g), jvp

    return everything


# -- values and gradients -------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_values_and_gradients_match_the_reference(name):
    """float64: the value and the x and kernel adjoints against the reference; the offsets' and
    mask's derivatives against central differences in random directions (away from grid
    lines), and the vjp against the jvp.  float32: the value."""
    case = CASES[name]
    x, kernel, offsets, mask, g = arrays(case)
    options = ref_options(case)
    rng = np.random.default_rng(1)
    tangents = (rng.uniform(-1, 1, offsets.shape), rng.uniform(-1, 1, mask.shape))
    run = program(name)
    y, (gx, gk, go, gm), jvp = run(x, kernel, offsets, mask, g, tangents)
    close(y, reference(x, kernel, offsets, mask, **options), np.float64, case)
    close(gx, reference_x_adjoint(g, x.shape, kernel, offsets, mask, **options), np.float64, case)
    close(
        gk,
        reference_kernel_gradient(x, g, kernel.shape, offsets, mask, **options),
        np.float64,
        case,
    )
    h = 1e-6
    loss = lambda o, m: float(jnp.sum(run(x, kernel, o, m, g, tangents)[0] * g))  # noqa: E731
    difference = (
        loss(offsets + h * tangents[0], mask + h * tangents[1])
        - loss(offsets - h * tangents[0], mask - h * tangents[1])
    ) / (2 * h)
    assert abs(float(jvp) - difference) <= 1e-6 * (1 + abs(difference))
    transposed = np.sum(go * tangents[0]) + np.sum(gm * tangents[1])
    assert abs(transposed - float(jvp)) <= 1e-11 * (1 + abs(difference))
    # float32 against the same float64 reference.
    f32 = [as_array(a, jnp.float32) for a in (x, kernel, offsets, mask)]
    y32 = jax.jit(functools.partial(deform_conv, **case["options"]))(*f32[:3], mask=f32[3])
    close(y32, reference(x, kernel, offsets, mask, **options), np.float32, case)


def test_without_a_mask_in_blocks_and_as_the_convolution():
    """DCN v1 (no mask) against the reference, in one block and in many (a memory budget of one
    output position per block, gradients too); zero offsets are ``convjax.conv``."""
    case = CASES["2-d, groups and offset groups"]
    x, kernel, offsets, _, g = arrays(case)
    options = case["options"]

    @functools.partial(jax.jit, static_argnums=0)
    def both(budget, x, kernel, offsets):
        f = lambda x, o: deform_conv(x, kernel, o, memory_budget=budget, **options)  # noqa: E731
        y, vjp = jax.vjp(f, x, offsets)
        return y, vjp(as_array(g)), f(x, jnp.zeros_like(offsets))

    whole, blocked = both(2**30, x, kernel, offsets), both(1, x, kernel, offsets)
    close(whole[0], reference(x, kernel, offsets, None, **ref_options(case)), np.float64, case)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(blocked)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    conv = {k: v for k, v in options.items() if k != "offset_groups"}
    np.testing.assert_allclose(whole[2], convjax.conv(x, kernel, **conv), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["3-d", "1-d, two batch dims"])
def test_zero_offsets_and_a_unit_mask_are_the_convolution(name):
    case = CASES[name]
    x, kernel, offsets, mask, g = arrays(case)
    conv = {k: v for k, v in case["options"].items() if k != "offset_groups"}
    zeros, ones = np.zeros_like(offsets), np.ones_like(mask)
    y = program(name)(x, kernel, zeros, ones, g, (zeros, ones))[0]
    np.testing.assert_allclose(y, convjax.conv(x, kernel, **conv), rtol=1e-12, atol=1e-12)


def test_integer_offsets_read_whole_cells_and_the_gradient_on_a_grid_line_is_from_above():
    """1-d, one tap, padding 1: output o samples x[o − 1 + Δ].  Δ = 1 reads x[o] exactly; at
    Δ = 0 the derivative is x[o] − x[o − 1], the cell above minus this one (zero outside),
    also at position −1."""
    x = as_array([2.0, 3.0, 7.0, 5.0]).reshape(4, 1)
    f = jax.jit(
        jax.value_and_grad(
            lambda d: jnp.sum(
                deform_conv(x, jnp.ones((1, 1, 1)), d, padding=1) * jnp.arange(1, 7.0)[:, None]
            )
        )
    )
    value, grad = f(jnp.ones((6, 1)))
    assert value == 2 + 2 * 3 + 3 * 7 + 4 * 5
    _, grad = f(jnp.zeros((6, 1)))
    np.testing.assert_array_equal(
        np.asarray(grad)[:, 0] / np.arange(1, 7), [2.0, 1.0, 4.0, -2.0, -5.0, 0.0]
    )


def test_vmap_and_second_order():
    case = CASES["2-d"]
    x, kernel, offsets, mask, _ = map(as_array, arrays(case))
    f = functools.partial(deform_conv, **case["options"])

    @jax.jit
    def transformed(x, offsets, mask):
        mapped = jax.vmap(lambda a, o, m: f(a, kernel, o, mask=m))(x, offsets, mask)
        loss = jax.grad(lambda o: jnp.sum(f(x, kernel, o, mask=mask) ** 2))
        return (
            mapped,
            f(x, kernel, offsets, mask=mask),
            jax.jvp(loss, (offsets,), (mask[..., :1] * 0 + offsets,))[1],
        )

    mapped, y, hvp = transformed(x, offsets, mask)
    np.testing.assert_allclose(mapped, y, rtol=1e-13, atol=1e-13)
    assert np.isfinite(hvp).all() and np.abs(hvp).sum() > 0


@pytest.mark.parametrize(
    "name, budget",
    [
        ("2-d, groups and offset groups", 2**29),
        ("2-d, groups and offset groups", 1),
        ("3-d", 2**29),
    ],
    ids=["one block", "a block per output", "3-d"],
)
def test_the_linear_transpose_in_x_is_the_adjoint(name, budget):
    """For fixed offsets, mask and kernel, ``A: x ↦ deform_conv(x, …)`` is linear, and
    ``jax.linear_transpose`` of it is its adjoint: ``⟨A x, y⟩ = ⟨x, Aᵀ y⟩`` for random ``x`` and
    ``y`` (float64, fractional offsets, a mask, groups and offset groups), the same ``Aᵀ y`` as
    ``jax.vjp``'s x-cotangent and the reference's, with and without jit."""
    case = CASES[name]
    x, kernel, offsets, mask, y = arrays(case, seed=3)
    f = functools.partial(
        deform_conv, kernel=kernel, offsets=offsets, mask=mask, memory_budget=budget
    )
    forward = lambda x: f(x, **case["options"])  # noqa: E731
    (adjoint,) = jax.linear_transpose(forward, x)(y)
    (jitted,) = jax.jit(lambda y: jax.linear_transpose(forward, x)(y))(y)
    _, vjp = jax.vjp(forward, x)
    lhs, rhs = np.sum(np.asarray(forward(x)) * y), np.sum(x * np.asarray(adjoint))
    assert abs(lhs - rhs) <= 1e-12 * (1 + abs(lhs)), (lhs, rhs)
    np.testing.assert_allclose(adjoint, vjp(y)[0], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(jitted, adjoint, rtol=1e-12, atol=1e-13)
    expected = reference_x_adjoint(y, x.shape, kernel, offsets, mask, **ref_options(case))
    close(adjoint, expected, np.float64, case)


# -- empty arrays, non-finite values --------------------------------------------------------------


def test_an_empty_batch():
    x, kernel = jnp.ones((0, 7, 6, 4)), jnp.ones((3, 3, 2, 6))
    offsets, mask = jnp.ones((0, 3, 2, 36)), jnp.ones((0, 3, 2, 18))
    f = functools.partial(deform_conv, strides=2, groups=2, offset_groups=2)
    y = jax.jit(f)(x, kernel, offsets, mask=mask)
    assert y.shape == (0, 3, 2, 6) and y.dtype == x.dtype
    grads = jax.grad(lambda *a: jnp.sum(f(*a[:3], mask=a[3])), argnums=(0, 1, 2, 3))(
        x, kernel, offsets, mask
    )
    assert [g.shape for g in grads] == [a.shape for a in (x, kernel, offsets, mask)]
    np.testing.assert_array_equal(grads[1], 0)
    # No input channels: a sum of nothing.
    y = deform_conv(jnp.ones((2, 5, 5, 0)), jnp.ones((3, 3, 0, 3)), jnp.ones((2, 3, 3, 18)))
    np.testing.assert_array_equal(y, np.zeros((2, 3, 3, 3)))


def test_a_non_finite_input_reaches_exactly_the_outputs_that_read_it():
    """NaN or inf planted at random cells: the outputs with a sample of nonzero weight there are
    non-finite, no other (fractional and integer offsets); with zero offsets, exactly those of
    ``convjax.conv``."""
    name = "2-d, groups and offset groups"
    case = CASES[name]
    run = program(name)
    rng = np.random.default_rng(0)
    for integer in (False, True):
        x, kernel, offsets, mask, g = arrays(case, seed=2, integer=integer)
        for _ in range(3):
            planted = x.copy()
            planted[tuple(int(rng.integers(0, n)) for n in x.shape)] = rng.choice([np.nan, np.inf])
            with np.errstate(invalid="ignore"):
                expected = np.isnan(
                    reference(
                        np.where(np.isinf(planted), np.nan, planted),
                        kernel,
                        offsets,
                        mask,
                        **ref_options(case),
                    )
                )
            y = run(planted, kernel, offsets, mask, g, (offsets, mask))[0]
            np.testing.assert_array_equal(~np.isfinite(y), expected)
    planted = x.copy()
    planted[0, 2, 3, 1] = np.nan
    conv = {k: v for k, v in case["options"].items() if k != "offset_groups"}
    expected = np.isnan(convjax.conv(planted, kernel, impl="gather", **conv))
    zeros, ones = np.zeros_like(offsets), np.ones_like(mask)
    y = run(planted, kernel, zeros, ones, g, (zeros, ones))[0]
    np.testing.assert_array_equal(np.isnan(y), expected)
    assert expected.any() and not expected.all()


def test_non_finite_offsets_and_zero_weight_reads():
    """A NaN offset makes its output NaN and no other; an infinite one puts its sample outside
    the input, where it reads zero, with zero gradients (here: the 9-tap sum of ones loses one
    tap).  Outputs 1 and 2 of the last call sample position 1 exactly: weight 1 on x[1], 0 on
    x[2] = NaN, which reaches neither the value nor the gradients."""

    @jax.jit
    def f(x, kernel, offsets):
        y = lambda x, o: deform_conv(x, kernel, o)  # noqa: E731
        return y(x, offsets), jax.grad(lambda x, o: jnp.sum(y(x, o)), argnums=(0, 1))(x, offsets)

    x, kernel = jnp.ones((5, 5, 2)), jnp.ones((3, 3, 2, 2))
    for value in (np.nan, np.inf, -np.inf):
        offsets = jnp.zeros((3, 3, 18)).at[1, 2, 5].set(value)
        y, (gx, go) = f(x, kernel, offsets)
        expected = np.full((3, 3, 2), 18.0)
        if np.isnan(value):
            expected[1, 2] = np.nan
            np.testing.assert_array_equal(y, expected)
            continue
        expected[1, 2] = 16.0  # tap 2 of output (1, 2) reads zero
        np.testing.assert_array_equal(y, expected)
        np.testing.assert_array_equal(go[1, 2, 4:6], [0.0, 0.0])  # both axes of that tap
        assert np.isfinite(go).all() and np.isfinite(gx).all()
        np.testing.assert_array_equal(gx, f(x, kernel, offsets.at[1, 2, 5].set(1e30))[1][0])
    x = as_array([1.0, 2.0, np.nan]).reshape(3, 1)
    y, (gx, go) = f(x, jnp.ones((1, 1, 1)), as_array([0.0, 0.0, -1.0]).reshape(3, 1))
    np.testing.assert_array_equal(y[:, 0], [1.0, 2.0, 2.0])
    np.testing.assert_array_equal(gx[:, 0], [1.0, 2.0, 0.0])
    np.testing.assert_array_equal(go[:, 0], [1.0, -2.0, -2.0])  # x[2] read as zero


def test_infinite_offsets_sample_outside_the_input_and_nan_ones_reach_their_outputs():
    """±inf offsets (on one axis of a tap, on both, on two taps of one output) are samples far
    outside the input, as torchvision reads them: the value and every derivative (vjp in every
    operand, jvp in the offsets and mask) are those with ±1e30 in their place, all finite, the
    value the reference's, and the infinite offsets' and their taps' mask gradients zero.  A NaN
    offset, alone or beside an infinite one, makes NaN reach exactly its output."""
    name = "2-d, groups and offset groups"
    case = CASES[name]
    run = program(name)
    x, kernel, offsets, mask, g = arrays(case, seed=4)
    tangents = tuple(np.random.default_rng(5).uniform(-1, 1, a.shape) for a in (offsets, mask))
    # offsets [2, 3, 7, 2 groups · 6 taps · 2 axes]: channel q·12 + t·2 + a; mask q·6 + t.
    planted = offsets.copy()
    planted[0, 1, 2, 0] = np.inf  # group 0, tap 0, Δy
    planted[1, 2, 5, 7] = -np.inf  # group 0, tap 3, Δx
    planted[0, 0, 0, 12:14] = [np.inf, -np.inf]  # group 1, tap 0, both axes
    planted[1, 0, 3, [17, 19]] = [np.inf, -np.inf]  # group 1, taps 2 and 3 of one output
    infinite = np.isinf(planted)
    far = np.where(infinite, np.copysign(1e30, planted), planted)
    y, (gx, gk, go, gm), jvp = run(x, kernel, planted, mask, g, tangents)
    expected = run(x, kernel, far, mask, g, tangents)
    for actual, wanted in zip(jax.tree.leaves((y, gx, gk, go, gm, jvp)), jax.tree.leaves(expected)):
        assert np.isfinite(actual).all()
        np.testing.assert_allclose(actual, wanted, rtol=1e-13, atol=1e-13)
    close(y, reference(x, kernel, far, mask, **ref_options(case)), np.float64, case)
    assert np.all(go[infinite] == 0) and np.all(go[0, 0, 0, 12:14] == 0)
    for b, i, j, t in [(0, 1, 2, 0), (1, 2, 5, 3), (0, 0, 0, 6), (1, 0, 3, 8), (1, 0, 3, 9)]:
        assert gm[b, i, j, t] == 0 and np.all(go[b, i, j, 2 * t : 2 * t + 2] == 0)
    # NaN: alone, and beside an infinite offset on the other axis of its tap.  Offset group q
    # samples input channels 2q, 2q + 1, which weight group q alone reads: outputs 3q to 3q + 2.
    for where_ in [(0, 2, 4, 3), (1, 1, 1, 20), (1, 0, 3, 18)]:
        nan = planted.copy()
        nan[where_] = np.nan
        y = run(x, kernel, nan, mask, g, tangents)[0]
        expected = np.zeros(y.shape, bool)
        q = where_[3] // 12
        expected[(*where_[:3], slice(3 * q, 3 * q + 3))] = True
        np.testing.assert_array_equal(np.isnan(y), expected)


# -- layouts, errors ------------------------------------------------------------------------------


def test_channels_first_is_the_channels_last_result_moved():
    case = CASES["2-d, groups and offset groups"]
    x, kernel, offsets, mask, _ = map(as_array, arrays(case))
    first = lambda a: jnp.moveaxis(a, -1, 1)  # noqa: E731
    f = functools.partial(deform_conv, **case["options"])

    @jax.jit
    def both(x, offsets, mask):
        last = jax.value_and_grad(lambda o: jnp.sum(jnp.sin(f(x, kernel, o, mask=mask))))
        moved = jax.value_and_grad(
            lambda o: jnp.sum(
                jnp.sin(f(first(x), kernel, o, mask=first(mask), data_format="channels_first"))
            )
        )
        return (
            f(x, kernel, offsets, mask=mask),
            f(first(x), kernel, first(offsets), mask=first(mask), data_format="channels_first"),
            last(offsets)[1],
            moved(first(offsets))[1],
        )

    y_last, y_first, g_last, g_first = both(x, offsets, mask)
    np.testing.assert_allclose(y_first, first(y_last), rtol=1e-13)
    np.testing.assert_allclose(g_first, first(g_last), rtol=1e-12, atol=1e-13)


X, K, OFF, MASK = jnp.zeros((2, 6, 6, 4)), jnp.zeros((3, 3, 4, 8)), jnp.zeros((2, 4, 4, 18)), None
ERRORS = [
    (dict(padding_mode="reflect"), ValueError, r"padding_mode must be 'zeros' .*got 'reflect'"),
    (dict(padding_mode="bogus"), ValueError, r"padding_mode must be one of"),
    (dict(offset_groups=3), ValueError, r"offset_groups must divide the input channels, but 3"),
    (dict(offset_groups=0), ValueError, r"offset_groups must be >= 1, got 0"),
    (dict(offset_groups=1.0), TypeError, r"offset_groups must be an int, got 1.0"),
    (
        dict(offset_groups=2),
        ValueError,
        r"offsets must be \[\*batch, \*out_spatial, channels\] "
        r"with channels = offset_groups · prod\(window\) · ndim = 2 · 9 · 2 = 36, i.e. shape "
        r"\(2, 4, 4, 36\).*got shape \(2, 4, 4, 18\)",
    ),
    (dict(offsets=jnp.zeros((2, 5, 4, 18))), ValueError, r"offsets must be .*\(2, 4, 4, 18\)"),
    (dict(offsets=jnp.zeros((1, 4, 4, 18))), ValueError, r"offsets must be .*got shape \(1, 4"),
    (
        dict(mask=jnp.zeros((2, 4, 4, 18))),
        ValueError,
        r"mask must be .*= offset_groups · prod\(window\) = 1 · 9 = 9, i.e. shape \(2, 4, 4, 9\)",
    ),
    (
        dict(offsets=jnp.zeros((2, 4, 4, 18), jnp.float32)),
        TypeError,
        r"offsets must have x's dtype float64, got float32; cast it",
    ),
    (dict(mask=[0.5]), TypeError, r"mask must be an array, got list"),
    (dict(kernel=jnp.zeros((3, 3, 4, 8), jnp.float32)), TypeError, r"x and kernel must share"),
    (
        dict(x=jnp.zeros((2, 6, 6, 4), jnp.int32), kernel=jnp.zeros((3, 3, 4, 8), jnp.int32)),
        TypeError,
        r"x must have a floating",
    ),
    (dict(strides=0), ValueError, r"strides must be >= 1"),
    (dict(groups=3), ValueError, r"groups must divide the input channels"),
    (dict(x=jnp.zeros((6, 6))), ValueError, r"x must have rank >= 3"),
    (dict(memory_budget=0), ValueError, r"memory_budget must be >= 1 byte, got 0"),
    (dict(memory_budget=1.5), TypeError, r"memory_budget must be an int number of bytes"),
    (dict(precision="HIGHEST"), ValueError, r"precision must be None"),
    (
        dict(preferred_element_type=jnp.float32),
        TypeError,
        r"preferred_element_type must not be narrower",
    ),
    (dict(data_format="NHWC"), ValueError, r"data_format must be one of"),
    (
        dict(data_format="channels_first", x=jnp.zeros((2, 4, 6, 6))),
        ValueError,
        r"offsets must be \[\*batch, channels, \*out_spatial\] .*shape \(2, 18, 4, 4\)",
    ),
]


@pytest.mark.parametrize("options, error, match", ERRORS, ids=[m for *_, m in ERRORS])
def test_errors_name_the_function_the_rule_and_the_value(options, error, match):
    options = dict(options)
    arrays_ = {n: options.pop(n, v) for n, v in (("x", X), ("kernel", K), ("offsets", OFF))}
    call = lambda: deform_conv(  # noqa: E731
        arrays_["x"], arrays_["kernel"], arrays_["offsets"], **options
    )
    with pytest.raises(error, match=rf"^deform_conv: {match}"):
        call()
    with pytest.raises(error, match=rf"^deform_conv: {match}"):  # and while tracing
        jax.jit(call).lower()


LAYER_ERRORS = [
    (
        dict(offset_kernel=jnp.zeros((3, 3, 4, 18))),
        ValueError,
        r"offset_kernel must be \[\*window, C_in, offset_groups · prod\(window\) · 3\] = "
        r"\(3, 3, 4, 27\) .*got shape \(3, 3, 4, 18\)",
    ),
    (dict(offset_bias=jnp.zeros(18)), ValueError, r"offset_bias must be .*\(27,\), got .*\(18,\)"),
    (dict(modulated=1), TypeError, r"modulated must be a bool, got 1"),
    (dict(padding_mode="circular"), ValueError, r"padding_mode must be 'zeros' .*'circular'"),
    (
        dict(offset_kernel=jnp.zeros((3, 3, 4, 27), jnp.float32)),
        TypeError,
        r"x and offset_kernel must share a dtype",
    ),
    (dict(impl="bogus"), ValueError, r"impl must be"),
    (dict(strides=(1, 2, 3)), ValueError, r"strides needs one entry per spatial dim"),
]


@pytest.mark.parametrize("options, error, match", LAYER_ERRORS, ids=[m for *_, m in LAYER_ERRORS])
def test_layer_function_errors_name_it(options, error, match):
    options = dict(options)
    operands = [
        options.pop(n, v)
        for n, v in (("offset_kernel", jnp.zeros((3, 3, 4, 27))), ("offset_bias", jnp.zeros(27)))
    ]
    with pytest.raises(error, match=rf"^deformable_conv: {match}"):
        deformable_conv(X, K, *operands, **options)
    # An error of the deform_conv it calls names it too.
    with pytest.raises(ValueError, match=r"^deformable_conv: offset_groups must divide"):
        deformable_conv(X, K, jnp.zeros((3, 3, 4, 81)), jnp.zeros(81), offset_groups=3)


# -- the layer's function -------------------------------------------------------------------------


def test_the_layer_function_starts_as_the_plain_conv_times_one_half():
    """Zero offset kernels (as a layer initialises them): the plain conv, times sigmoid(0) = 0.5
    when modulated.  Non-zero ones: the offset conv, then deform_conv; channels-first too;
    gradients reach every parameter."""
    rng = np.random.default_rng(0)
    x = as_array(rng.normal(size=(2, 7, 8, 4)))
    kernel = as_array(rng.normal(size=(3, 3, 2, 6)))
    options = dict(strides=2, padding="SAME", dilation=(1, 2), groups=2, offset_groups=2)
    conv = {k: v for k, v in options.items() if k != "offset_groups"}

    @jax.jit
    def layers(x, kernel, offset_kernel, offset_bias):
        f = functools.partial(deformable_conv, **options)
        raw = convjax.conv(x, offset_kernel, **{k: v for k, v in conv.items() if k != "groups"})
        raw = raw + offset_bias.reshape(1, 1, 1, -1)
        mask = jax.nn.sigmoid(raw[..., 36:])
        return (
            f(x, kernel, jnp.zeros((3, 3, 4, 54)), jnp.zeros(54)),
            f(x, kernel, jnp.zeros((3, 3, 4, 36)), jnp.zeros(36), modulated=False),
            convjax.conv(x, kernel, **conv),
            f(x, kernel, offset_kernel, offset_bias),
            deform_conv(x, kernel, raw[..., :36], mask=mask, **options),
            f(
                jnp.moveaxis(x, -1, 1),
                kernel,
                offset_kernel,
                offset_bias,
                data_format="channels_first",
            ),
            jax.grad(lambda *p: jnp.sum(f(x, *p) ** 2), argnums=(0, 1, 2))(
                kernel, offset_kernel, offset_bias
            ),
        )

    offset_kernel = as_array(rng.normal(size=(3, 3, 4, 54)) * 0.3)
    offset_bias = as_array(rng.normal(size=54))
    modulated, plain, expected, y, composed, y_first, grads = layers(
        x, kernel, offset_kernel, offset_bias
    )
    np.testing.assert_allclose(modulated, 0.5 * expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(plain, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, composed, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y_first, jnp.moveaxis(y, -1, 1), rtol=1e-13, atol=1e-13)
    assert all(np.abs(g).sum() > 0 for g in grads)


# -- the picture ----------------------------------------------------------------------------------


def test_the_sampling_picture_draws_the_regular_grid_and_the_deformed_points(tmp_path):
    pytest.importorskip("matplotlib")
    from convjax._src.tools.viz_deform import deform_sampling

    offsets = np.zeros((4, 4, 18))
    offsets[1, 2, 0::2] = 0.5  # Δy = 0.5 at output (1, 2)
    offsets[1, 2, 1] = -1.25  # and tap (0, 0)'s Δx
    image = np.linspace(0, 1, 36).reshape(6, 6)
    fig = deform_sampling(
        (6, 6, 1), (3, 3, 1, 1), offsets, output_position=(1, 2), image=image, padding=0
    )
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("regular" in label for label in labels)
    assert any("deformed" in label for label in labels)
    points = {
        c.get_label(): np.asarray(c.get_offsets())
        for c in fig.axes[0].collections
        if c.get_label() and not c.get_label().startswith("_")
    }
    regular = next(v for k, v in points.items() if "regular" in k)
    deformed = next(v for k, v in points.items() if "deformed" in k)
    np.testing.assert_allclose(regular[0], [2.0, 1.0])  # (x, y) = (column, row) of tap (0, 0)
    np.testing.assert_allclose(deformed[0], [0.75, 1.5])
    np.testing.assert_allclose(deformed[4], [3.0, 2.5])
    fig.savefig(tmp_path / "sampling.png")
