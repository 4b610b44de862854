"""Conv arithmetic and the classic example's facts."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
import reference
from helpers import IMPLS
from hypothesis import given
from hypothesis import strategies as st

import convjax
from convjax._src.checks import as_array


def test_classic_5x5_kernel_3_stride_2_no_padding_gives_2x2():
    assert convjax.conv_output_size(5, 3, stride=2) == 2
    assert convjax.output_shape((5, 5, 1), (3, 3, 1, 1), strides=2) == (2, 2, 1)
    for impl in IMPLS:
        y = convjax.conv(jnp.ones((5, 5, 1)), jnp.ones((3, 3, 1, 1)), strides=2, impl=impl)
        np.testing.assert_array_equal(y, np.full((2, 2, 1), 9.0))


@pytest.mark.parametrize("size", [1, 4, 7, 10])
@pytest.mark.parametrize("window", [1, 3, 5])
def test_classic_half_padding_with_stride_1_keeps_the_size(size, window):
    assert convjax.output_shape((size, size, 2), (window, window, 2, 3), padding="SAME") == (
        size,
        size,
        3,
    )
    assert convjax.output_shape((size, 2), (window, 2, 3), padding=(window - 1) // 2) == (size, 3)
    assert convjax.output_shape((size, 2), (window, 2, 3), padding="half") == (size, 3)


@pytest.mark.parametrize("window, dilation", [(1, 1), (2, 1), (3, 1), (4, 1), (3, 2), (2, 3)])
@pytest.mark.parametrize("stride", [1, 2])
def test_half_padding_is_floor_of_half_the_span_on_each_side(window, dilation, stride):
    span = (window - 1) * dilation + 1
    x = as_array(np.random.default_rng(0).normal(size=(2, 7, 2)))
    k = as_array(np.random.default_rng(1).normal(size=(window, 2, 3)))
    options = dict(strides=stride, dilation=dilation)
    half = convjax.conv(x, k, padding="HALF", **options)
    expected = reference.conv(x, k, (stride,), [(span // 2, span // 2)], (dilation,))
    np.testing.assert_allclose(half, expected, rtol=1e-6, atol=1e-6)
    assert half.shape[1] == (7 + 2 * (span // 2) - span) // stride + 1
    y = jnp.ones_like(half)
    np.testing.assert_allclose(
        convjax.conv_transpose(y, k, padding="HALF", **options),
        convjax.conv_transpose(y, k, padding=span // 2, **options),
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_classic_3x3_at_rate_2_is_a_5x5_with_every_second_row_and_column_zero(impl):
    assert convjax.effective_window(3, 2) == 5
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 9, 9, 2))
    k3 = rng.normal(size=(3, 3, 2, 4))
    k5 = np.zeros((5, 5, 2, 4))
    k5[::2, ::2] = k3
    dilated = convjax.dilated_conv(as_array(x), as_array(k3), rate=2, impl=impl)
    dense = convjax.conv(as_array(x), as_array(k5), impl=impl)
    assert dilated.shape == (1, 5, 5, 4)
    np.testing.assert_allclose(dilated, dense, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        dense, reference.conv(x, k5, (1, 1), [(0, 0)] * 2, (1, 1)), rtol=1e-12, atol=1e-12
    )


def test_classic_parameter_count_is_I_times_O_times_K():
    kernel_shape = (3, 3, 16, 32)  # I = 16, O = 32, K = 9
    assert math.prod(kernel_shape) == 16 * 32 * 9 == 4608


@given(
    size=st.integers(1, 40),
    window=st.integers(1, 7),
    stride=st.integers(1, 4),
    dilation=st.integers(1, 4),
    lo=st.integers(0, 6),
    hi=st.integers(0, 6),
)
def test_transpose_arithmetic_inverts_forward(size, window, stride, dilation, lo, hi):
    out = convjax.conv_output_size(size, window, stride, (lo, hi), dilation)
    if out < 1:
        return
    a = convjax.output_padding_for(size, window, stride, (lo, hi), dilation)
    assert 0 <= a < stride
    assert convjax.conv_transpose_output_size(out, window, stride, (lo, hi), dilation, a) == size
    # the s sizes size - a ... size - a + s - 1 (those that are sizes) give the same output
    for other in range(max(size - a, 0), size - a + stride):
        assert convjax.conv_output_size(other, window, stride, (lo, hi), dilation) == out


@given(
    size=st.integers(1, 40),
    window=st.integers(1, 7),
    stride=st.integers(1, 4),
    dilation=st.integers(1, 4),
)
def test_same_padding_gives_ceil_size_over_stride(size, window, stride, dilation):
    shape = convjax.output_shape(
        (size, 1), (window, 1, 1), strides=stride, padding="SAME", dilation=dilation
    )
    assert shape == (-(-size // stride), 1)


@pytest.mark.parametrize(
    "padding, expected",
    [("VALID", (6, 1)), ("FULL", (10, 1)), ("CAUSAL", (8, 1)), (2, (10, 1)), (((3, 0),), (9, 1))],
)
def test_padding_forms(padding, expected):
    assert convjax.output_shape((8, 1), (3, 1, 1), padding=padding) == expected


# -- the public arithmetic checks its arguments -----------------------------------------------

BAD_ARITHMETIC = [
    # (function, arguments, error, message): the message names the function, the argument, the
    # rule and the value received
    ("conv_output_size", (8, 3, 0), ValueError, r"^conv_output_size: stride must be >= 1, got 0"),
    ("conv_output_size", (8, 3, -2, (1, 1)), ValueError, r"stride must be >= 1, got -2"),
    ("conv_output_size", (8.0, 3), TypeError, r"^conv_output_size: size must be an int, got 8.0"),
    ("conv_output_size", (True, 3), TypeError, r"size must be an int, got True"),
    ("conv_output_size", (-1, 3), ValueError, r"size must be >= 0, got -1"),
    ("conv_output_size", (8, 0), ValueError, r"window must be >= 1, got 0"),
    ("conv_output_size", (8, 3, 1, (1, 1), 0), ValueError, r"dilation must be >= 1, got 0"),
    ("conv_output_size", (8, 3, 1.5), TypeError, r"stride must be an int, got 1.5"),
    ("conv_output_size", (8, 3, 1, (-1, 1)), ValueError, r"padding must be >= 0, got \(-1, 1\)"),
    ("conv_output_size", (8, 3, 1, -1), ValueError, r"padding must be >= 0, got -1"),
    ("conv_output_size", (8, 3, 1, (1, 1, 1)), ValueError, r"padding must be .*\(lo, hi\)"),
    ("conv_output_size", (8, 3, 1, (1.0, 1)), TypeError, r"padding must be an int, got 1.0"),
    ("conv_output_size", (8, 3, 1, "SAME"), TypeError, r"padding must be .*got 'SAME'"),
    (
        "conv_transpose_output_size",
        (4, 3, 2, (1, 1), 1, 5),
        ValueError,
        r"^conv_transpose_output_size: output_padding must be smaller than the stride or the "
        r"dilation, got output_padding 5 with stride 2 and dilation 1",
    ),
    ("conv_transpose_output_size", (4, 3, 2, (1, 1), 1, 2), ValueError, r"smaller than the"),
    ("conv_transpose_output_size", (4, 3, 2, 0, 1, -1), ValueError, r"output_padding must be >= 0"),
    ("conv_transpose_output_size", (4, 3, 0), ValueError, r"^conv_transpose_output_size: stride"),
    ("conv_transpose_output_size", (4.0, 3), TypeError, r"size must be an int, got 4.0"),
    ("output_padding_for", (8, 3, 0, (1, 1)), ValueError, r"^output_padding_for: stride must be"),
    ("output_padding_for", (8, 3, 1, 1.0), TypeError, r"^output_padding_for: padding must be"),
    ("effective_window", (3, 0), ValueError, r"^effective_window: dilation must be >= 1, got 0"),
    ("effective_window", (-3, 1), ValueError, r"^effective_window: window must be >= 1, got -3"),
    ("effective_window", (3.0, 1), TypeError, r"^effective_window: window must be an int"),
]


@pytest.mark.parametrize(
    "name, args, error, match",
    BAD_ARITHMETIC,
    ids=[f"{name}{args!r}" for name, args, *_ in BAD_ARITHMETIC],
)
def test_public_arithmetic_refuses_bad_arguments(name, args, error, match):
    with pytest.raises(error, match=match):
        getattr(convjax, name)(*args)


def test_public_arithmetic_takes_an_int_padding_as_symmetric_and_numpy_ints():
    assert convjax.conv_output_size(8, 3, 1, 1) == convjax.conv_output_size(8, 3, 1, (1, 1)) == 8
    assert convjax.conv_transpose_output_size(4, 3, 2, 1, 1, 1) == 8
    assert convjax.output_padding_for(8, 3, 2, 1) == 1
    result = convjax.conv_output_size(np.int64(8), np.int32(3), stride=np.int64(2))
    assert result == 3 and type(result) is int
    # empty inputs and windows that do not fit are sizes, not errors (the docstring's promise)
    assert convjax.conv_output_size(0, 3) < 1
    assert convjax.conv_output_size(2, 5, dilation=1) < 1


def test_output_padding_may_reach_the_dilation_as_in_pytorch():
    # PyTorch: output padding must be smaller than either stride or dilation
    assert convjax.conv_transpose_output_size(4, 3, 1, (0, 0), 3, 2) == 4 - 1 + 2 + 7
    with pytest.raises(ValueError, match=r"output_padding .* got output_padding 3"):
        convjax.conv_transpose_output_size(4, 3, 1, (0, 0), 3, 3)
