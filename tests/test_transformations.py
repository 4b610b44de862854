"""Every JAX transformation on every formulation, to second order, against the float64 NumPy
reference: jvp, vjp, forward over reverse, reverse over reverse, reverse over forward,
``jax.linear_transpose``, vmap over inputs and over kernels (per-example kernels and per-example
gradients), and ``jax.hessian`` on the default formulation.  The convolution is bilinear, so
each derivative is a convolution, a transposed convolution or a kernel gradient of the
reference.

With ``L(x, k) = ½ Σ w ⊙ A(x, k)²`` and a direction ``(u, v)``:
``∇ₓL = Aₖᵀ(w ⊙ y)``, ``∇ₖL = R(x, w ⊙ y)``, and the Hessian applied to ``(u, v)`` is
``(Aₖᵀ(w ⊙ y′) + Aᵥᵀ(w ⊙ y), R(u, w ⊙ y) + R(x, w ⊙ y′))`` with ``y′ = A(u, k) + A(x, v)``.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from helpers import FORMULATIONS

import convjax

KINDS = {
    "dense": dict(
        x=(2, 7, 6, 3),
        k=(3, 2, 3, 4),
        strides=(2, 1),
        padding=((1, 0), (1, 1)),
        dilation=(1, 2),
        groups=1,
        padding_mode="reflect",
    ),
    "depthwise": dict(
        x=(2, 7, 6, 4),
        k=(3, 3, 1, 8),
        strides=(2, 2),
        padding=((1, 1), (1, 1)),
        dilation=(1, 1),
        groups=4,
        padding_mode="zeros",
    ),
    "narrow groups": dict(
        x=(2, 6, 7, 4),
        k=(2, 3, 2, 6),
        strides=(1, 2),
        padding=((1, 1), (1, 1)),
        dilation=(2, 1),
        groups=2,
        padding_mode="circular",
    ),
}


def case(kind, formulation):
    c = dict(KINDS[kind])
    if formulation == "fft":
        c["strides"] = (1, 1)
    return c


def ref(c):
    options = {name: c[name] for name in ("strides", "padding", "dilation", "groups")}
    a = functools.partial(reference.conv, padding_mode=c["padding_mode"], **options)
    at = functools.partial(reference.conv_transpose, padding_mode=c["padding_mode"], **options)
    r = functools.partial(reference.kernel_gradient, padding_mode=c["padding_mode"], **options)
    return (
        a,
        lambda g, k: at(g, k, c["x"][1:]),
        lambda x, g: r(x, g, c["k"]),
    )


def arrays(c, seed=0):
    rng = np.random.default_rng(seed)
    x, k, u, v = (rng.uniform(-1, 1, s) for s in (c["x"], c["k"], c["x"], c["k"]))
    return x, k, u, v


@functools.cache
def everything(kind, formulation):
    """One jitted program computing every transformation of the case (one compilation)."""
    c = case(kind, formulation)
    options = {n: c[n] for n in ("strides", "padding", "dilation", "groups", "padding_mode")}
    conv = functools.partial(convjax.conv, impl=formulation, **options)

    @jax.jit
    def run(x, k, u, v, w, g):
        def loss(x, k):
            return 0.5 * jnp.sum(w * conv(x, k) ** 2)

        grad = jax.grad(loss, argnums=(0, 1))
        out = {}
        out["jvp"] = jax.jvp(conv, (x, k), (u, v))[1]
        out["forward over reverse"] = jax.jvp(grad, (x, k), (u, v))[1]
        out["reverse over reverse"] = jax.grad(
            lambda x, k: sum(jnp.vdot(a, b) for a, b in zip(grad(x, k), (u, v), strict=True)),
            argnums=(0, 1),
        )(x, k)
        out["reverse over forward"] = jax.grad(
            lambda x, k: jnp.vdot(jax.jvp(conv, (x, k), (u, v))[1], g), argnums=(0, 1)
        )(x, k)
        (out["linear transpose"],) = jax.linear_transpose(lambda z: conv(z, k), x)(g)
        kernels = jnp.stack([k, v, k - v])
        out["vmap over kernels"] = jax.vmap(conv, in_axes=(None, 0))(x, kernels)

        def example_loss(k, x, w):  # one image
            return 0.5 * jnp.sum(w * conv(x, k) ** 2)

        out["per-example gradients"] = jax.vmap(jax.grad(example_loss), (None, 0, 0))(k, x, w)
        if formulation == "auto":  # the default path, as users call jax.hessian
            out["hessian"] = jax.hessian(lambda k: 0.5 * jnp.sum(conv(x[:1], k) ** 2))(k)
        return out

    return run


@pytest.mark.every_case(formulation="auto")
@pytest.mark.parametrize(("formulation", "kind"), list(itertools.product(FORMULATIONS, KINDS)))
def test_every_transformation_to_second_order(formulation, kind):
    c = case(kind, formulation)
    a, at, r = ref(c)
    x, k, u, v = arrays(c)
    y = a(x, k)
    w = np.random.default_rng(1).uniform(0.5, 1.5, y.shape)
    g = np.random.default_rng(2).uniform(-1, 1, y.shape)
    got = jax.tree.map(np.asarray, everything(kind, formulation)(x, k, u, v, w, g))
    y_dot = a(u, k) + a(x, v)
    hvp = (at(w * y_dot, k) + at(w * y, v), r(u, w * y) + r(x, w * y_dot))
    want = {
        "jvp": y_dot,
        "forward over reverse": hvp,
        "reverse over reverse": hvp,
        "reverse over forward": (at(g, v), r(u, g)),
        "linear transpose": at(g, k),
        "vmap over kernels": np.stack([a(x, kk) for kk in (k, v, k - v)]),
        "per-example gradients": np.stack([r(x[i], w[i] * a(x[i], k)) for i in range(len(x))]),
    }
    for name, expected in want.items():
        for actual, value in zip(
            jax.tree.leaves(got[name]), jax.tree.leaves(expected), strict=True
        ):
            np.testing.assert_allclose(actual, value, rtol=1e-9, atol=1e-9, err_msg=name)
    if formulation != "auto":
        return
    # The Hessian of ½‖A(x₀, k)‖² in the kernel: entry (e, f) is ⟨A(x₀, e), A(x₀, f)⟩.
    flat = got["hessian"].reshape(k.size, k.size)
    np.testing.assert_allclose(flat, flat.T, rtol=1e-9, atol=1e-9)
    for index in (0, k.size // 2, k.size - 1):
        e = np.eye(k.size)[index].reshape(k.shape)
        expected = r(x[:1], a(x[:1], e)).reshape(-1)
        np.testing.assert_allclose(flat[index], expected, rtol=1e-9, atol=1e-9)
