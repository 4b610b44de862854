"""Where the FFT formulation starts to win: the time of each formulation's convolution and the
gradients of a loss of its output (``Σ y²``, as training runs them) against the window.

Stride-1 'SAME' convolutions of a [4, 64, 64, 32] input, dense (32 -> 32) and depthwise, with
square windows from 5 to 31; the numbers behind the ``fft`` rows of the ``auto`` table.  Timing
is ``convjax bench``'s (alternating contenders, a settle before each timed call, medians).

Run ``python benchmarks/fft_crossover.py [--rounds N] [--windows 5 9 15 ...]``.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np

import convjax
from convjax.apps.timing import block, measure

FORMULATIONS = {"dense": ("lax", "taps", "fft"), "depthwise": ("taps", "fft")}


def contenders(kind: str, window: int):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(4, 64, 64, 32)), jnp.float32)
    groups = 32 if kind == "depthwise" else 1
    kernel_shape = (window, window, 32 // groups, 32)
    kernel = jnp.asarray(
        rng.normal(size=kernel_shape) / math.prod(kernel_shape[:-1]) ** 0.5, jnp.float32
    )
    result = {}
    for impl in FORMULATIONS[kind]:
        f = functools.partial(convjax.conv, padding="SAME", groups=groups, impl=impl)
        grad = jax.jit(jax.grad(lambda x, k, f=f: jnp.sum(f(x, k) ** 2), argnums=(0, 1)))
        result[impl] = (lambda grad=grad: grad(x, kernel), block)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--windows", type=int, nargs="+", default=[5, 9, 15, 21, 31])
    args = parser.parse_args()
    print(
        f"jax {jax.__version__} on {jax.default_backend()}: gradient of Σ y², median ms, "
        "[4, 64, 64, 32]"
    )
    for kind in FORMULATIONS:
        print(f"\n{kind}: window " + " ".join(f"{impl:>9}" for impl in FORMULATIONS[kind]))
        for window in args.windows:
            timings = measure(contenders(kind, window), args.rounds, lambda: None)
            cells = " ".join(f"{timings[impl].median_ms:9.1f}" for impl in FORMULATIONS[kind])
            best = min(timings, key=lambda n: timings[n].median_ms)
            print(f"{'':>11}{window:>6} {cells}   fastest: {best}", flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
