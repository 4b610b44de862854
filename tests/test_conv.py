"""conv / dilated_conv / depthwise_conv on the lax and gather paths: the float64 NumPy reference
with and without jit, dtypes, vmap, gradients to second order, the gather path's memory bound."""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from cases import CASES, case_id, pair_id
from helpers import IMPLS, assert_close, fan_in, operands
from jax.test_util import check_grads

import convjax
from convjax._src.checks import as_array


def run(case, x, kernel, impl, jit):
    f = functools.partial(convjax.conv, impl=impl, **case["options"])
    return (jax.jit(f) if jit else f)(x, kernel)


def expected(case, x, kernel):
    return reference.conv(np.asarray(x, np.float64), np.asarray(kernel, np.float64), **case["ref"])


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_cases_match_reference_with_and_without_jit(case, impl, jit):
    """The shared cases, called plainly and jitted (random configs of every formulation, with
    gradients, are in test_formulations.py)."""
    x, kernel = operands(case, np.float64)
    assert_close(
        run(case, x, kernel, impl, jit), expected(case, x, kernel), np.float64, fan_in(case)
    )


@pytest.mark.parametrize(
    "dtype",
    [np.float32, jnp.bfloat16, np.float16, np.float64],
    ids=["float32", "bfloat16", "float16", "float64"],
)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_dtypes_match_reference(case, impl, dtype):
    x, kernel = operands(case, dtype)
    y = run(case, x, kernel, impl, jit=True)
    assert y.dtype == np.dtype(dtype)
    assert_close(y, expected(case, x, kernel), dtype, fan_in(case))


@pytest.mark.parametrize("impl", IMPLS)
def test_preferred_element_type_accumulates_wider(impl):
    case = CASES[1]
    x, kernel = operands(case, jnp.bfloat16)
    y = convjax.conv(x, kernel, impl=impl, preferred_element_type=jnp.float32, **case["options"])
    assert y.dtype == jnp.float32
    assert_close(y, expected(case, x, kernel), np.float32, fan_in(case) * 1e4)


@pytest.mark.parametrize(("case", "impl"), list(itertools.product(CASES, IMPLS)), ids=pair_id)
def test_vmap_equals_batched_call(case, impl):
    x, kernel = operands(case, np.float64)
    xs = jnp.stack([x, 2 * x, -x])
    f = jax.jit(functools.partial(convjax.conv, impl=impl, **case["options"]))
    np.testing.assert_allclose(
        jax.jit(jax.vmap(f, (0, None)))(xs, kernel), f(xs, kernel), rtol=1e-12, atol=1e-12
    )
    kernels = jnp.stack([kernel, -kernel])
    per_kernel = jax.jit(jax.vmap(f, (None, 0)))(x, kernels)
    np.testing.assert_allclose(per_kernel[1], -f(x, kernel), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("case", "impl"), list(itertools.product(CASES, IMPLS)), ids=pair_id)
def test_gradients(case, impl):
    x, kernel = operands(case, np.float64)
    f = jax.jit(functools.partial(convjax.conv, impl=impl, **case["options"]))
    # conv is bilinear, so its second derivatives are convs too: order 2 on a few cases.
    order = 2 if case in (CASES[0], CASES[3], CASES[5]) else 1
    check_grads(f, (x, kernel), order=order, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


def test_dilated_conv_is_conv_with_kernel_dilation():
    case = CASES[3]
    x, kernel = operands(case, np.float64)
    for impl in IMPLS:
        y = convjax.dilated_conv(x, kernel, rate=(2, 3), padding="SAME", impl=impl)
        want = reference.conv(x, kernel, (1, 1), [(2, 2), (3, 3)], (2, 3))
        assert_close(y, want, np.float64, fan_in(case))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("multiplier", [1, 3])
def test_depthwise_conv_filters_each_channel_alone(impl, multiplier):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 9, 9, 4))
    kernel = rng.normal(size=(3, 3, 1, 4 * multiplier))
    y = convjax.depthwise_conv(as_array(x), as_array(kernel), strides=2, padding="SAME", impl=impl)
    # channel c * m + j is input channel c convolved with filter j, on its own.
    for c in range(4):
        for j in range(multiplier):
            out = c * multiplier + j
            want = reference.conv(
                x[..., c : c + 1], kernel[..., out : out + 1], (2, 2), [(1, 1), (1, 1)], (1, 1)
            )
            np.testing.assert_allclose(y[..., out : out + 1], want, rtol=1e-12, atol=1e-12)


def test_grouped_output_channel_order():
    """Output channel g * (C_out / groups) + j depends only on input group g."""
    rng = np.random.default_rng(2)
    x = as_array(rng.normal(size=(1, 6, 6, 6)))
    kernel = as_array(rng.normal(size=(3, 3, 2, 9)))
    for impl in IMPLS:
        y = convjax.conv(x, kernel, groups=3, impl=impl)
        for g in range(3):
            want = reference.conv(
                x[..., 2 * g : 2 * g + 2],
                kernel[..., 3 * g : 3 * g + 3],
                (1, 1),
                [(0, 0), (0, 0)],
                (1, 1),
            )
            np.testing.assert_allclose(y[..., 3 * g : 3 * g + 3], want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("budget", [1, 3_000, 40_000])
def test_gather_chunking_matches_unchunked_with_grads(budget):
    case = CASES[2]
    x, kernel = operands(case, np.float64)
    chunked = convjax.GatherBackend(memory_budget=budget)

    def loss(impl):
        return lambda x, k: jnp.sum(jnp.cos(convjax.conv(x, k, impl=impl, **case["options"])))

    np.testing.assert_allclose(
        jax.jit(loss(chunked))(x, kernel), loss("lax")(x, kernel), rtol=1e-12
    )
    for a, b in zip(
        jax.grad(loss(chunked), (0, 1))(x, kernel), jax.grad(loss("lax"), (0, 1))(x, kernel)
    ):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def gather_scratch_bytes(x_shape, kernel_shape, budget, grad):
    """XLA's own buffer plan for the gather path's compiled conv (SAME padding, float32): its
    scratch memory in bytes, and the bound the backend documents for it."""
    x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
    kernel = jax.ShapeDtypeStruct(kernel_shape, jnp.float32)
    conv = functools.partial(
        convjax.conv, padding="SAME", impl=convjax.GatherBackend(memory_budget=budget)
    )
    f = jax.grad(lambda x, k: jnp.sum(conv(x, k)), argnums=(0, 1)) if grad else conv
    scratch = jax.jit(f).lower(x, kernel).compile().memory_analysis().temp_size_in_bytes
    output_bytes = 4 * math.prod(x_shape[:-1]) * kernel_shape[-1]
    return scratch, budget + 2 * (4 * math.prod(x_shape) + output_bytes)


@pytest.mark.parametrize("grad", [False, True], ids=["forward", "grad"])
@pytest.mark.parametrize("budget_mib", [512, 128, 16])
def test_gather_large_input_stays_within_memory_budget(budget_mib, grad):
    """32x56x56x64 by 3x3x64x64: the patches alone would take 231 MiB (693 MiB under grad)."""
    scratch, bound = gather_scratch_bytes(
        (32, 56, 56, 64), (3, 3, 64, 64), budget_mib * 2**20, grad
    )
    assert scratch <= bound, (scratch, bound)


@pytest.mark.parametrize("grad", [False, True], ids=["forward", "grad"])
def test_gather_budget_holds_when_one_output_row_is_larger_than_it(grad):
    """One first-axis output row of a (1, 4, 8192, 32) input by 5x5x32x32 has 26 MiB of
    patches: the blocks split the row, so an 8 MiB budget still holds."""
    scratch, bound = gather_scratch_bytes((1, 4, 8192, 32), (5, 5, 32, 32), 8 * 2**20, grad)
    assert scratch <= bound, (scratch, bound)


def test_gather_budget_changes_the_plan():
    """The budget is honoured, not vacuous: the unchunked plan for the same conv is larger."""
    x = jax.ShapeDtypeStruct((32, 56, 56, 64), jnp.float32)
    kernel = jax.ShapeDtypeStruct((3, 3, 64, 64), jnp.float32)

    def temp(budget):
        impl = convjax.GatherBackend(memory_budget=budget)
        f = jax.jit(functools.partial(convjax.conv, padding="SAME", impl=impl))
        return f.lower(x, kernel).compile().memory_analysis().temp_size_in_bytes

    patches = 32 * 56 * 56 * 9 * 64 * 4
    assert temp(2**40) >= patches > 4 * temp(16 * 2**20)


@pytest.mark.slow
def test_gather_large_input_runs_and_matches_lax():
    rng = np.random.default_rng(3)
    x = as_array(rng.normal(size=(32, 56, 56, 64)), jnp.float32)
    kernel = as_array(rng.normal(size=(3, 3, 64, 64)) / 24, jnp.float32)
    f = jax.jit(convjax.conv, static_argnames=("padding", "impl"))
    a = f(x, kernel, padding="SAME", impl="gather")
    b = f(x, kernel, padding="SAME", impl="lax")
    assert a.shape == (32, 56, 56, 64)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_index_map_reads_reflect_border():
    m = convjax.index_map((5, 5, 1), (3, 3, 1, 1), padding=1, padding_mode="reflect")
    assert m.input_spatial == (5, 5) and m.output_spatial == (5, 5) and m.window == (3, 3)
    reads = m.reads((0, 4))
    assert reads[0] == ((1, 3), True)  # tap (0, 0) at position (-1, 3) reflects to row 1
    assert reads[2] == ((1, 3), True)  # tap (0, 2) at position (-1, 5) reflects to (1, 3)
    zeros = convjax.index_map((5, 5, 1), (3, 3, 1, 1), padding=1)
    assert zeros.reads((0, 0))[0] == ((0, 0), False)
    assert zeros.reads((0, 0))[4] == ((0, 0), True)
