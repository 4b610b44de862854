"""The locally connected convolution: convjax's ``local_conv`` against Flax's ``ConvLocal``.

Times, on one realistic layer, the forward pass and the gradient of a real loss (``Σ y²``, in the
input and the kernel) of ``convjax.local_conv`` (``impl="auto"``, and each formulation by name)
and of ``flax.linen.ConvLocal`` (``lax.conv_general_dilated_local``) with the same kernel,
converted to Flax's layout.  Contenders alternate in rounds, with a settle before each timed
call (``convjax.apps.timing.measure``); medians and min/max in ms.  The results are checked
equal first.

Run ``python benchmarks/local_conv.py [--rounds N] [--layers all]``.
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import convjax  # before any JAX backend starts: it chooses XLA:CPU's flags
from convjax._src.ops.local import local_conv
from convjax.apps.timing import block, measure

# name: (x shape, window, C_out, options); the first is the default.
LAYERS = {
    "b32, 24², 16→32, 3×3": ((32, 24, 24, 16), (3, 3), 32, {}),
    "b16, 32², 3→16, 5×5": ((16, 32, 32, 3), (5, 5), 16, {}),
    "b32, 16², 64→64, 3×3": ((32, 16, 16, 64), (3, 3), 64, {}),
    "b64, 16², 32→32, 3×3": ((64, 16, 16, 32), (3, 3), 32, {}),
    "b8, 24², 8→8, 3×3, stride 2": ((8, 24, 24, 8), (3, 3), 8, {"strides": 2}),
}


def to_flax(kernel):
    """``[*out, *window, C_in, C_out]`` → Flax's ``[*out, C_in · K, C_out]`` (channel-major)."""
    ndim = (kernel.ndim - 2) // 2
    out, (c, j) = kernel.shape[:ndim], kernel.shape[-2:]
    return jnp.swapaxes(kernel.reshape(*out, -1, c, j), -2, -3).reshape(*out, -1, j)


def contenders(x_shape, window, features, options):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
    out = convjax.output_shape(x_shape, (*window, x_shape[-1], features), **options)[1:-1]
    fan_in = np.prod(window) * x_shape[-1]
    kernel = jnp.asarray(
        rng.normal(size=(*out, *window, x_shape[-1], features)) / np.sqrt(fan_in), jnp.float32
    )
    layer = nn.ConvLocal(features, window, padding="VALID", use_bias=False, **options)
    calls = {
        f"convjax {impl}": lambda x, k, impl=impl: local_conv(x, k, impl=impl, **options)
        for impl in ("auto", "gather", "taps")
    }
    calls["flax ConvLocal"] = lambda x, k: layer.apply({"params": {"kernel": to_flax(k)}}, x)
    expected = jax.jit(calls["flax ConvLocal"])(x, kernel)
    runs = {}
    for name, call in calls.items():
        y = jax.jit(call)(x, kernel)
        np.testing.assert_allclose(y, expected, rtol=1e-3, atol=1e-3 * float(jnp.abs(y).max()))
        forward = jax.jit(call)
        grad = jax.jit(jax.grad(lambda x, k, call=call: jnp.sum(call(x, k) ** 2), argnums=(0, 1)))
        runs[f"{name} | forward"] = (lambda f=forward: f(x, kernel), block)
        runs[f"{name} | grad"] = (lambda g=grad: g(x, kernel), block)
    return runs, np.prod(kernel.shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--layers", choices=("default", "all"), default="default")
    args = parser.parse_args()
    print(
        f"jax {jax.__version__} on {jax.default_backend()} ({jax.device_count()} device, "
        f"float32, jit): median ms [min-max]"
    )
    chosen = list(LAYERS.items())[: 1 if args.layers == "default" else None]
    for layer, (x_shape, window, features, options) in chosen:
        runs, weights = contenders(x_shape, window, features, options)
        timings = measure(runs, args.rounds, lambda: None)
        print(f"\n{layer}: x {x_shape}, {weights / 1e6:.2f} M weights")
        names = dict.fromkeys(name.split(" | ")[0] for name in runs)
        for name in names:
            cells = []
            for part in ("forward", "grad"):
                d = timings[f"{name} | {part}"].as_dict()
                cells.append(f"{part} {d['median_ms']:8.2f} [{d['min_ms']:.2f}-{d['max_ms']:.2f}]")
            print(f"  {name:<16} " + "  ".join(cells))


if __name__ == "__main__":
    main()
