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
import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import FORMULATIONS

import convjax
from convjax._src.formulations import taps
from convjax._src.formulations.lax import LaxBackend

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


@pytest.mark.every_case(formulation="auto")
@pytest.mark.parametrize(
    ("formulation", "variant"), list(itertools.product(FORMULATIONS, VARIANTS))
)
def test_the_gradient_does_not_recompute_the_forward(formulation, variant):
    found = ratio(formulation, *VARIANTS[variant])
    # planes folds the first axis's taps into each group's channels: no longer depthwise for XLA.
    if formulation == "lax" and variant == "depthwise 7x7" and jax.default_backend() == "cpu":
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


def residual_stack_gradient_hlo(materialize: bool) -> str:
    """The compiled gradient of a 6-block residual stack of causal dilated lax convolutions
    (``x = (x + conv(relu(conv(x) + b)) + b) · s``), with or without materialised operands."""

    def loss(kernels, x):
        for i, (k1, b1, k2, b2) in enumerate(kernels):
            h = jax.nn.relu(convjax.conv(x, k1, padding="CAUSAL", dilation=2**i, impl="lax") + b1)
            x = (x + convjax.conv(h, k2, impl="lax") + b2) * jnp.float32(0.7)
        return jnp.sum(x**2)

    kernels = [
        tuple(
            jnp.ones(shape, jnp.float32) for shape in ((3, 8, 8), (1, 1, 8), (1, 8, 8), (1, 1, 8))
        )
        for _ in range(6)
    ]
    x = jnp.ones((4, 64, 8), jnp.float32)
    saved = LaxBackend.materializes_kernel_gradient_operands
    try:
        LaxBackend.materializes_kernel_gradient_operands = materialize
        # a fresh function, so that nothing is reused from another setting's compilation
        grad = jax.jit(jax.grad(lambda k, x: loss(k, x)))
        return grad.lower(kernels, x).compile().as_text()
    finally:
        LaxBackend.materializes_kernel_gradient_operands = saved


def widest_kernel_gradient_operand(hlo: str) -> int:
    """The most operands any producer of a kernel-gradient convolution's input takes: 1 when it
    only relayouts a stored array, many when it recomputes a residual stream."""
    definitions = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\s*(%\S+) = [^\n]*? fusion\(([^)]*)\)", hlo, re.M)
    }
    widest = 0
    for m in re.finditer(r"= f32\[8,3,8\]\{[^}]*\} convolution\((%[^,]+),", hlo):
        widest = max(widest, len(definitions.get(m.group(1), "").split(",")))
    return widest


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="a fact of XLA:CPU's fusion")
def test_the_kernel_gradient_reads_a_stored_residual_stream():
    """XLA:CPU transposes a convolution's input for its kernel gradient and fuses the
    elementwise ops that made it into that copy: across a residual stack each copy recomputes
    the stream from every earlier layer's output (a TCN's step spent 37 of 49 ms there).  lax's
    kernel gradient reads a materialised input instead."""
    assert widest_kernel_gradient_operand(residual_stack_gradient_hlo(False)) > 6
    assert widest_kernel_gradient_operand(residual_stack_gradient_hlo(True)) <= 2


@pytest.mark.parametrize("first", [np.nan, -0.0, 1.5])
def test_the_stored_input_is_the_input(first):
    """Materialising the kernel gradient's input changes no value: the conditional's other
    branch (taken when the input's first element is NaN) included."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 9, 7, 3))
    x[0, 0, 0, 0] = first
    kernel = rng.standard_normal((3, 3, 3, 4))

    def kernel_gradient(materialize):
        saved = LaxBackend.materializes_kernel_gradient_operands
        try:
            LaxBackend.materializes_kernel_gradient_operands = materialize
            loss = lambda k, x: jnp.sum(convjax.conv(x, k, padding=1, impl="lax") ** 2)  # noqa: E731
            compiled = jax.jit(jax.grad(loss)).lower(kernel, x).compile()
            assert ("conditional(" in compiled.as_text()) == materialize
            return np.asarray(compiled(kernel, x))
        finally:
            LaxBackend.materializes_kernel_gradient_operands = saved

    stored, fused = kernel_gradient(True), kernel_gradient(False)
    np.testing.assert_array_equal(stored, fused)
    assert np.isnan(stored).any() == np.isnan(first)


def test_a_pointwise_kernel_gradient_is_one_matrix_product():
    """lax's kernel gradient of a 1×1 convolution: a dot over every position, not XLA's
    convolution (which transposes both operands for it); the forward stays a convolution."""
    x, kernel = jnp.ones((2, 6, 6, 8), jnp.float32), jnp.ones((1, 1, 8, 4), jnp.float32)
    grad = jax.grad(lambda k: jnp.sum(convjax.conv(x, k, impl="lax") ** 2))
    program = jax.jit(grad).lower(kernel).as_text()
    assert program.count("stablehlo.convolution") == 1
    assert program.count("stablehlo.dot_general") == 1
