"""Compile every public path of many strided convolutions in this process, one case at a time.

``python sweep_aborts.py COUNT SEED [START]`` prints ``case I: …`` before compiling case ``I`` and
``ok I`` after it; a process that dies (XLA's check failures abort it) leaves the case it died
on as the last ``case`` line.  Cases: the axis XLA's operand swap mistakes for a group dimension
(window 2, stride 2, low padding 1, an even size) beside axes that make the swap worthwhile, in
1 to 3 dims, and random strided, padded, dilated and grouped convolutions.

Every case compiles one program holding: the gradients of ``conv`` on ``auto`` and ``lax`` for
both operands, forward-over-reverse and reverse-over-reverse second derivatives, the transposed
conv on ``lax`` and its gradients, and an ``nnx.Conv`` layer's parameter gradients.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import convjax


def targeted():
    """Window 2, stride 2, low padding 1 on an even axis, beside an axis whose window (5) is larger
    than its output (2), which makes XLA swap the operands (1 to 3 dims)."""
    cases = [
        ((2, 8, 6, 2), (4, 2, 2, 3), (3, 2), ((4, 0), (1, 1)), 1),  # the reported 2-d case
        ((2, 4, 2, 2, 3), (2, 3, 2, 3, 3), (2, 2, 1), 1, 1),  # the reported 3-d case
    ]
    for size in (4, 6, 8):
        for high in (1, 2):
            cases.append(((2, size, 6, 2), (2, 5, 2, 3), (2, 1), ((1, high), (0, 0)), 1))
            cases.append(((1, 6, size, 4), (5, 2, 4, 4), (1, 2), ((0, 0), (1, high)), 1))
    cases.append(((2, 6, 3), (2, 3, 3), 2, ((1, 1),), 1))  # 1-d: no other axis, no swap
    cases.append(((1, 6, 8, 5, 2), (2, 4, 3, 2, 2), (2, 1, 1), ((1, 1), (0, 0), (1, 1)), 1))
    return cases


def random_cases(count, seed):
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        ndim = int(rng.integers(1, 4))
        window = tuple(int(k) for k in rng.integers(1, 5 if ndim < 3 else 4, ndim))
        strides = tuple(int(s) for s in rng.integers(1, 4, ndim))
        dilation = tuple(int(d) for d in rng.integers(1, 3, ndim))
        pads = tuple((int(lo), int(hi)) for lo, hi in rng.integers(0, 4, (ndim, 2)))
        spans = [(k - 1) * d + 1 for k, d in zip(window, dilation, strict=True)]
        sizes = tuple(int(sp + rng.integers(0, 6)) for sp in spans)
        groups = int(rng.choice([1, 1, 2]))
        c_in, c_out = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
        cases.append(((2, *sizes, c_in), (*window, c_in // groups, c_out), strides, pads, groups))
    return cases


def everything(x_shape, k_shape, strides, padding, groups):
    """One function computing every path of the case (so one compilation), and its layer's
    parameters."""
    options = dict(strides=strides, padding=padding, groups=groups)
    ndim = len(k_shape) - 2
    layer = convjax.nnx.Conv(
        x_shape[-1],
        k_shape[-1],
        k_shape[:ndim],
        strides=strides,
        padding=padding,
        feature_group_count=groups,
        rngs=nnx.Rngs(0),
    )
    graph, params = nnx.split(layer)

    def loss(impl):
        return lambda x, k: jnp.sum(jnp.sin(convjax.conv(x, k, impl=impl, **options)))

    def transposed(y, k):
        result = x_shape[-ndim - 1 : -1]
        return convjax.conv_transpose(y, k, impl="lax", output_shape=result, **options)

    def run(x, k, params):
        out = [jax.grad(loss(impl), argnums=(0, 1))(x, k) for impl in ("auto", "lax")]

        def grad_x(x):
            return jax.grad(loss("lax"))(x, k)

        out.append(jax.jvp(grad_x, (x,), (jnp.cos(x),)))  # forward over reverse
        out.append(jax.grad(lambda x: jnp.vdot(grad_x(x), jnp.cos(x)))(x))  # reverse twice
        out.append(jax.grad(lambda k: jnp.vdot(jax.grad(loss("lax"))(x, k), x))(k))
        y = convjax.conv(x, k, impl="lax", **options)
        out.append(jax.grad(lambda y, k: jnp.sum(jnp.sin(transposed(y, k))), argnums=(0, 1))(y, k))
        model = nnx.merge(graph, params)
        out.append(nnx.grad(lambda m: jnp.sum(jnp.sin(m(x))))(model))
        return out

    return run, params


def main(count, seed, start=0):
    cases = targeted() + random_cases(count, seed)
    for index in range(start, len(cases)):
        x_shape, k_shape, strides, padding, groups = cases[index]
        described = f"x {x_shape}, kernel {k_shape}, strides {strides}, padding {padding}"
        print(f"case {index}: {described}, groups {groups}", flush=True)
        run, params = everything(x_shape, k_shape, strides, padding, groups)
        x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
        k = jax.ShapeDtypeStruct(k_shape, jnp.float32)
        jax.jit(run).lower(x, k, params).compile()
        print(f"ok {index}", flush=True)
    print(f"done {len(cases)}", flush=True)


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
