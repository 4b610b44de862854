"""unfold / fold: the patches are the window's cells (float64 NumPy reference, every padding mode,
1-d to 3-d, both implementations), fold is the exact adjoint, conv is unfold times the kernel,
and the layout maps onto PyTorch's F.unfold / F.fold."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import NP_PAD_MODES

import convjax
from convjax._src.checks import as_array

IMPLS = ("taps", "gather")
MODES = ("zeros", "reflect", "replicate", "circular")


def reference_unfold(x, window, strides, pads, dilation, mode):
    """[*batch, *out, K·C] by explicit loops over output positions and taps (float64)."""
    ndim = len(window)
    x = np.asarray(x, np.float64)
    lead = x.shape[: -ndim - 1]
    x = x.reshape(-1, *x.shape[-ndim - 1 :])
    xp = np.pad(x, [(0, 0), *pads, (0, 0)], mode=NP_PAD_MODES[mode])
    spans = [(k - 1) * d + 1 for k, d in zip(window, dilation)]
    out = [(xp.shape[1 + a] - spans[a]) // strides[a] + 1 for a in range(ndim)]
    patches = np.zeros((x.shape[0], *out, int(np.prod(window)), x.shape[-1]))
    for o in np.ndindex(*out):
        for t, tap in enumerate(np.ndindex(*window)):
            cell = tuple(o[a] * strides[a] + tap[a] * dilation[a] for a in range(ndim))
            patches[(slice(None), *o, t)] = xp[(slice(None), *cell)]
    return patches.reshape(*lead, *out, -1)


def configs(count=6, seed=0):
    rng = np.random.default_rng(seed)
    found = []
    while len(found) < count:
        ndim = int(rng.integers(1, 4))
        window = tuple(int(v) for v in rng.integers(1, 4, ndim))
        dilation = tuple(int(v) for v in rng.integers(1, 3, ndim))
        strides = tuple(int(v) for v in rng.integers(1, 4, ndim))
        pads = [tuple(int(v) for v in rng.integers(0, 3, 2)) for _ in range(ndim)]
        mode = MODES[len(found) % 4]
        sizes = tuple(int(v) for v in rng.integers(3, 7 if ndim < 3 else 5, ndim))
        spans = [(k - 1) * d + 1 for k, d in zip(window, dilation)]
        if any(s + lo + hi < span for s, (lo, hi), span in zip(sizes, pads, spans)):
            continue
        if mode == "reflect" and any(max(p) >= s for p, s in zip(pads, sizes)):
            continue
        batch = (2,) if len(found) % 3 else (2, 1)
        found.append((batch, sizes, int(rng.integers(1, 4)), window, strides, pads, dilation, mode))
    return found


@pytest.mark.parametrize("batch, sizes, c, window, strides, pads, dilation, mode", configs())
def test_patches_adjoint_and_conv_on_random_configs(
    batch, sizes, c, window, strides, pads, dilation, mode
):
    rng = np.random.default_rng(1)
    x = as_array(rng.normal(size=(*batch, *sizes, c)))
    options = dict(strides=strides, padding=pads, dilation=dilation, padding_mode=mode)
    expected = reference_unfold(x, window, strides, pads, dilation, mode)
    probe = as_array(rng.normal(size=expected.shape))
    kernel = as_array(rng.normal(size=(*window, c, 3)))
    conv = convjax.conv(x, kernel, **options)
    for impl in IMPLS:
        unfold = jax.jit(functools.partial(convjax.unfold, window=window, impl=impl, **options))
        fold = jax.jit(
            functools.partial(
                convjax.fold, input_shape=x.shape, window=window, impl=impl, **options
            )
        )
        patches = unfold(x)
        np.testing.assert_array_equal(patches, expected, err_msg=impl)  # copies: exact
        np.testing.assert_allclose(jnp.vdot(patches, probe), jnp.vdot(x, fold(probe)), rtol=1e-10)
    np.testing.assert_allclose(patches @ kernel.reshape(-1, 3), conv, rtol=1e-10, atol=1e-10)


def test_fold_of_unfold_over_coverage_recovers_x():
    x = as_array(np.random.default_rng(2).normal(size=(2, 7, 8, 3)))
    options = dict(strides=2, padding=1, padding_mode="reflect")
    ones = jnp.ones_like(x)
    back = convjax.fold(convjax.unfold(x, (3, 3), **options), x.shape, (3, 3), **options)
    coverage = convjax.fold(convjax.unfold(ones, (3, 3), **options), x.shape, (3, 3), **options)
    covered = coverage > 0
    assert covered.all()
    np.testing.assert_allclose(
        jnp.where(covered, back / jnp.where(covered, coverage, 1), 0),
        jnp.where(covered, x, 0),
        rtol=1e-12,
    )


def test_non_finite_values_reach_only_the_patches_that_copy_them():
    x = jnp.zeros((6, 6, 1)).at[0, 0, 0].set(jnp.nan).at[5, 3, 0].set(jnp.inf)
    expected = reference_unfold(x, (3, 3), (2, 2), [(1, 1), (1, 1)], (1, 1), "zeros")
    for impl in IMPLS:
        patches = convjax.unfold(x, (3, 3), strides=2, padding=1, impl=impl)
        np.testing.assert_array_equal(np.isnan(patches), np.isnan(expected), err_msg=impl)
        np.testing.assert_array_equal(np.isinf(patches), np.isinf(expected), err_msg=impl)


def test_jit_and_vmap():
    x = as_array(np.random.default_rng(3).normal(size=(3, 6, 5, 2)))
    f = lambda x: convjax.unfold(x, (2, 3), strides=(1, 2), padding="SAME")  # noqa: E731
    np.testing.assert_array_equal(jax.jit(f)(x), f(x))
    np.testing.assert_array_equal(jax.vmap(f)(x), f(x))


@pytest.mark.parametrize(
    "size, window, stride, padding, dilation",
    [((6, 7), (3, 3), (1, 1), (1, 1), (1, 1)), ((8, 9), (2, 3), (2, 3), (0, 2), (2, 1))],
)
def test_pytorch_layout(size, window, stride, padding, dilation):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 3, *size))  # NCHW
    options = dict(kernel_size=window, dilation=dilation, padding=padding, stride=stride)
    expected = torch.nn.functional.unfold(torch.tensor(x), **options).numpy()  # [N, C·K, L]
    ours = convjax.unfold(
        as_array(np.moveaxis(x, 1, -1)),
        window,
        strides=stride,
        padding=padding,
        dilation=dilation,
    )  # [N, *out, K·C]
    k, c = int(np.prod(window)), 3
    as_torch = np.asarray(ours).reshape(2, -1, k, c).transpose(0, 3, 2, 1).reshape(2, c * k, -1)
    np.testing.assert_array_equal(as_torch, expected)
    # F.fold is the adjoint too: the same patches fold to the same image.
    patches = rng.normal(size=expected.shape)
    folded = torch.nn.functional.fold(torch.tensor(patches), output_size=size, **options).numpy()
    ours_in = patches.reshape(2, c, k, -1).transpose(0, 3, 2, 1)
    ours_in = ours_in.reshape(2, *np.asarray(ours).shape[1:-1], k * c)
    back = convjax.fold(
        as_array(ours_in),
        (2, *size, 3),
        window,
        strides=stride,
        padding=padding,
        dilation=dilation,
    )
    np.testing.assert_allclose(np.moveaxis(np.asarray(back), -1, 1), folded, rtol=1e-12)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: convjax.unfold(jnp.zeros((5, 2)), (3, 3)), ValueError, r"unfold: x must be"),
        (
            lambda: convjax.unfold(jnp.zeros((5, 2)), (0,)),
            ValueError,
            r"window must be >= 1, got 0",
        ),
        (
            lambda: convjax.unfold(jnp.zeros((5, 2)), (-1,)),
            ValueError,
            r"window must be >= 1, got -1",
        ),
        (
            lambda: convjax.unfold(jnp.zeros((5, 2)), ()),
            ValueError,
            r"unfold: window needs one size",
        ),
        (lambda: convjax.unfold(jnp.zeros((5, 2)), (3,), impl="fft"), ValueError, r"impl must"),
        (lambda: convjax.unfold(jnp.zeros((5, 2)), (3,), strides=0), ValueError, r"strides must"),
        (lambda: convjax.fold(jnp.zeros((3, 7)), (5, 2), (3,)), ValueError, r"fold: patches must"),
        (
            lambda: convjax.fold(jnp.zeros((3, 6)), (5, 2), (3,), padding="NOPE"),
            ValueError,
            r"fold: padding must be one of",
        ),
    ],
)
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_empty_batches_and_channels():
    assert convjax.unfold(jnp.zeros((0, 5, 2)), (3,)).shape == (0, 3, 6)
    assert convjax.unfold(jnp.zeros((2, 5, 0)), (3,)).shape == (2, 3, 0)
    assert convjax.fold(jnp.zeros((0, 3, 6)), (0, 5, 2), (3,)).shape == (0, 5, 2)


def test_every_tap_order_is_row_major():
    x = jnp.arange(12.0).reshape(3, 4, 1)
    patches = convjax.unfold(x, (2, 2))
    assert patches[0, 0].tolist() == [x[r, c, 0] for r, c in itertools.product(range(2), range(2))]
