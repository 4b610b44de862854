"""No formulation recomputes the forward convolution in its gradient: XLA's ``cost_analysis``
FLOPs of the gradient of a real loss (``Σ conv(x, k)²``, whose cotangent is the layer's own
output) stay within a small constant of the forward's, for every formulation, variant and the
transposed conv.

A gradient is two convolutions (the input's and the kernel's), about 3× the forward in all.
Where XLA fuses the forward into each consumer of the cotangent it recomputes it, and the ratio
grows with the number of fused reductions (9× for a 7×7 depthwise layer, as the control here
shows).  XLA counts a while loop's body once, so work inside loops can only lower the ratio;
the control shows the measure catches recomputation outside them, which is where XLA's fusion
puts it.
"""

import functools

import jax
import jax.numpy as jnp
import pytest
from helpers import FORMULATIONS

import convjax
from convjax._src.formulations import taps

LIMIT = 4.0  # gradient FLOPs / forward FLOPs

VARIANTS = {
    "dense": ((4, 20, 20, 16), (3, 3, 16, 16), dict(padding=1)),
    "strided": ((4, 20, 20, 16), (3, 3, 16, 32), dict(padding=1, strides=2)),
    "dilated": ((4, 20, 20, 16), (3, 3, 16, 16), dict(padding=2, dilation=2)),
    "depthwise 7x7": ((4, 20, 20, 32), (7, 7, 1, 32), dict(padding=3, groups=32)),
    "narrow groups": ((4, 20, 20, 32), (3, 3, 4, 32), dict(padding=1, groups=8)),
    "pointwise": ((4, 20, 20, 32), (1, 1, 32, 16), dict()),
    "transposed": ((4, 10, 10, 32), (3, 3, 16, 32), dict(strides=2, padding=1, transpose=True)),
}


def flops(fn, *args):
    return jax.jit(fn).lower(*args).compile().cost_analysis()["flops"]


def ratio(backend, x_shape, kernel_shape, options):
    """Gradient FLOPs over forward FLOPs of ``Σ conv(x, k)²``, both as XLA compiles them."""
    options = dict(options)
    transpose = options.pop("transpose", False)
    if isinstance(backend, str) and backend == "fft":
        options["strides"] = 1
    fn = convjax.conv_transpose if transpose else convjax.conv
    conv = functools.partial(fn, impl=backend, **options)
    x, kernel = jnp.ones(x_shape, jnp.float32), jnp.ones(kernel_shape, jnp.float32)
    grad = jax.grad(lambda x, k: jnp.sum(conv(x, k) ** 2), argnums=(0, 1))
    return flops(grad, x, kernel) / flops(conv, x, kernel)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_the_gradient_does_not_recompute_the_forward(formulation, variant):
    found = ratio(formulation, *VARIANTS[variant])
    on_xla_conv = formulation in ("lax", "planes")  # planes' slabs are lax convolutions
    if on_xla_conv and variant == "depthwise 7x7" and jax.default_backend() == "cpu":
        # XLA:CPU computes a depthwise kernel gradient as a dense C × C convolution whose
        # diagonal it keeps: C times the work, not a recomputation ("auto" runs taps there, and
        # the lax formulation's docstring says so).  Should XLA change, this says to update both.
        assert found > 4 * LIMIT, f"XLA's depthwise kernel gradient changed: {found:.1f}"
        return
    assert found <= LIMIT


class StaticCorrelation(taps.TapsBackend):
    """The taps formulation as it once was: the forward a tap sum over a padded copy, the kernel
    gradient fused reductions outside any loop.  XLA fuses the forward that made the cotangent
    into every one of them."""

    def __call__(self, x, kernel, spec, *, precision=None, preferred_element_type=None):
        geometry = taps.geometry_of(spec, x.shape[1:-1], kernel.shape[: spec.ndim])
        return taps.tap_sum(taps.pad(x, spec), kernel, geometry, precision)

    def kernel_gradient(self, x, g, spec, kernel_shape, *, precision=None):
        geometry = taps.geometry_of(spec, x.shape[1:-1], kernel_shape[: spec.ndim])
        padded = taps.pad(x, spec)
        products = list(taps._row_products(padded, g, geometry, kernel_shape[-2]))
        sums = [taps._sum_products(products[i : i + 9], True) for i in range(0, len(products), 9)]
        return jnp.concatenate(sums).reshape(kernel_shape)


def test_the_measure_catches_recomputation():
    x_shape, kernel_shape, options = VARIANTS["depthwise 7x7"]
    assert ratio(StaticCorrelation(), (8, *x_shape[1:]), kernel_shape, options) > 2 * LIMIT
