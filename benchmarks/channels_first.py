"""Does data_format="channels_first" cost anything?  fwd+bwd time of channels-first and
channels-last calls side by side, and the transposes left in the compiled HLO.

Run ``python benchmarks/channels_first.py [--rounds N]``; timing as ``convjax bench`` times
(alternating contenders, a settle before each timed call, medians and min/max).
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np

import convjax
from convjax.apps.timing import block, measure

CASES = {
    "3x3, 56², 64→64, b4": ((4, 56, 56, 64), (3, 3, 64, 64), dict(padding=1)),
    "depthwise 3x3, 56², C144, b8": ((8, 56, 56, 144), (3, 3, 1, 144), dict(padding=1, groups=144)),
    "1x1, 56², 144→24, b8": ((8, 56, 56, 144), (1, 1, 144, 24), dict()),
}


def contenders(x_shape, kernel_shape, options):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
    kernel = jnp.asarray(
        rng.normal(size=kernel_shape) / np.sqrt(np.prod(kernel_shape[:-1])), jnp.float32
    )
    result, transposes = {}, {}
    for layout in ("channels_last", "channels_first"):
        xin = x if layout == "channels_last" else jnp.moveaxis(x, -1, 1)
        f = functools.partial(convjax.conv, data_format=layout, **options)
        both = jax.jit(lambda x, k, f=f: jax.vjp(f, x, k)[1](jnp.ones_like(f(x, k))))
        hlo = both.lower(xin, kernel).compile().as_text()
        transposes[layout] = hlo.count(" transpose(")
        result[layout] = (lambda both=both, xin=xin: both(xin, kernel), block)
    return result, transposes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.default_backend()}: fwd+bwd median ms [min-max]")
    for name, (x_shape, kernel_shape, options) in CASES.items():
        runs, transposes = contenders(x_shape, kernel_shape, options)
        timings = measure(runs, args.rounds, lambda: None)
        cells = []
        for layout, t in timings.items():
            d = t.as_dict()
            cells.append(
                f"{layout} {d['median_ms']:7.2f} [{d['min_ms']:.1f}-{d['max_ms']:.1f}], "
                f"{transposes[layout]} transposes"
            )
        ratio = timings["channels_first"].median_ms / timings["channels_last"].median_ms
        print(f"{name:<30} " + " | ".join(cells) + f" | first/last {ratio:.2f}")


if __name__ == "__main__":
    main()
