"""On the CPU, ``impl="lax"`` splits a convolution whose taps mostly read zero padding into boxes
of outputs that read the same taps (DeepLab's atrous rates over a small feature map): the same
numbers as the reference, in every role and transformation, and XLA's own count of the work
shows the taps on padding gone."""

import contextlib
import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cases import configs, make_case
from hypothesis import given
from test_formulations import check_against_reference

import convjax
from convjax._src import shapes
from convjax._src.checks import as_array
from convjax._src.formulations import lax as lax_formulation
from convjax._src.spec import make_spec

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="boxes are CPU-only")


@contextlib.contextmanager
def boxes(share: float, per_dim: int = lax_formulation.BOXES_PER_DIM):
    """Trace with these thresholds (``share=0``: boxed wherever a tap reads zero padding)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lax_formulation, "PADDING_SHARE", share)
        patch.setattr(lax_formulation, "BOXES_PER_DIM", per_dim)
        patch.setattr(
            lax_formulation, "MIN_BOXED_WORK", 0 if share < 1 else lax_formulation.MIN_BOXED_WORK
        )
        yield


def test_bands_cover_every_output_with_the_taps_that_read_inside():
    """Against a brute-force count of which taps of each output land inside the input."""
    rng = np.random.default_rng(0)
    for _ in range(500):
        size, k, s, d = (int(v) for v in rng.integers(1, [12, 6, 4, 4]))
        lo, hi = (int(v) for v in rng.integers(0, 9, 2))
        bands = shapes.reading_bands(size, k, s, (lo, hi), d)
        out = shapes.conv_output_size(size, k, s, (lo, hi), d)
        covered = []
        for start, stop, first, last in bands:
            for o in range(start, stop):
                inside = [t for t in range(k) if 0 <= o * s - lo + t * d < size]
                assert (first, last) == ((inside[0], inside[-1] + 1) if inside else (0, 0))
                covered.append(o)
        assert covered == list(range(max(out, 0)))


# Random configs with every zero-padded spec boxed (the other padding modes never are).
@given(case=configs())
def test_random_configs_boxed_match_the_reference(case):
    with boxes(1e-9, 2**20):
        check_against_reference(case, "lax")


ATROUS = make_case((2, 10, 9, 2), (2, 3, 1, 2), padding=7, dilation=7, groups=2)
STRIDED = make_case((2, 9, 3), (3, 3, 4), strides=2, padding=((6, 5),), dilation=3)


@pytest.mark.parametrize("case", [ATROUS, STRIDED], ids=["atrous", "strided"])
def test_every_transformation_through_the_boxes(case):
    """jvp of the gradient, second order, vmap and the transposed conv equal the unboxed
    program's (both traced here)."""
    rng = np.random.default_rng(1)
    x = as_array(rng.normal(size=case["x_shape"]))
    kernel = as_array(rng.normal(size=case["kernel_shape"]))
    conv = functools.partial(convjax.conv, impl="lax", **case["options"])

    def results():
        loss = lambda x, k: jnp.sum(jnp.sin(conv(x, k)))  # noqa: E731
        grad = jax.grad(loss, argnums=(0, 1))
        y = conv(x, kernel)
        return (
            y,
            *grad(x, kernel),
            jax.jvp(lambda x: grad(x, kernel)[1], (x,), (jnp.cos(x),))[1],
            jax.hessian(lambda k: loss(x[:1], k))(kernel),
            jax.vmap(conv, in_axes=(None, 0))(x, jnp.stack([kernel, -kernel])),
            convjax.conv_transpose(
                y, kernel, output_shape=x.shape[1:-1], impl="lax", **case["options"]
            ),
        )

    with boxes(1e-9, 2**20):
        spec = make_spec("conv", x.shape, kernel.shape, **case["options"])
        assert lax_formulation.padding_boxes(spec, x.shape, kernel.shape)
        boxed = results()
    with boxes(np.inf):
        whole = results()
    for a, b in zip(boxed, whole, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_the_taps_on_padding_are_not_computed():
    """DeepLab's rate 18 over 24² reads inside the input with three tap ranges per axis: the
    program is nine convolutions with no padding, each over the taps its outputs read, a
    quarter of the whole convolution's multiply-adds.  (XLA's ``cost_analysis`` cannot tell:
    it leaves the padding taps out of the whole convolution's count too.)"""
    x = jnp.ones((2, 24, 24, 64), jnp.float32)
    kernel = jnp.ones((3, 3, 64, 32), jnp.float32)
    conv = functools.partial(convjax.conv, padding=18, dilation=18, impl="lax")
    program = jax.jit(conv).lower(x, kernel).as_text()
    convolutions = [line for line in program.splitlines() if "stablehlo.convolution" in line]
    assert len(convolutions) == 9
    assert all("pad = [[0, 0], [0, 0]]" in line for line in convolutions)
    work = 0
    for line in convolutions:
        kernel_type, out_type = re.search(r"tensor<(\w+)>\) -> tensor<(\w+)>", line).groups()
        window = kernel_type.split("x")[:2]  # [*window, C_in, C_out, dtype]; out: [B, *out, C]
        work += math.prod(map(int, out_type.split("x")[:-2])) * math.prod(map(int, window))
    assert work == 2 * 24 * 24 * 9 // 4
