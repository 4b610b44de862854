"""Forward convolutions: convjax's two paths against lax (and PyTorch, when installed).

Prints median milliseconds and ratios measured in the same process, float32, jitted:
``gather/lax`` is convjax's explicit path over ``lax.conv_general_dilated``, ``lax/torch`` is
XLA over oneDNN/cuDNN.  Run ``python benchmarks/bench_conv.py [--quick]``.
"""

from __future__ import annotations

import functools

import _timing as timing
import jax
import jax.numpy as jnp
import numpy as np
from _timing import median_ms

import convjax

# name, x shape (NHWC), kernel shape (HWIO), options
SHAPES = [
    ("3x3, 56², 64→64, b4", (4, 56, 56, 64), (3, 3, 64, 64), dict(padding="SAME")),
    ("3x3 s2, 56², 128→128, b4", (4, 56, 56, 128), (3, 3, 128, 128), dict(strides=2, padding=1)),
    (
        "atrous 3x3 d2, 64², 128→128, b2",
        (2, 64, 64, 128),
        (3, 3, 128, 128),
        dict(dilation=2, padding="SAME"),
    ),
    (
        "depthwise 3x3, 56², C=144, b8",
        (8, 56, 56, 144),
        (3, 3, 1, 144),
        dict(groups=144, padding="SAME"),
    ),
    (
        "depthwise 7x7, 56², C=96, b8",
        (8, 56, 56, 96),
        (7, 7, 1, 96),
        dict(groups=96, padding="SAME"),
    ),
]


def torch_conv(torch, x, kernel, options):
    tx = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).contiguous()
    tw = torch.from_numpy(np.array(kernel)).permute(3, 2, 0, 1).contiguous()
    padding = options.get("padding", 0)
    padding = "same" if padding == "SAME" else padding
    kwargs = dict(
        stride=options.get("strides", 1),
        padding=padding,
        dilation=options.get("dilation", 1),
        groups=options.get("groups", 1),
    )

    def run():
        with torch.no_grad():
            return torch.nn.functional.conv2d(tx, tw, **kwargs)

    return run


def main() -> None:
    parser = timing.parser(__doc__)
    args = parser.parse_args()
    repeats, torch = timing.setup(args)
    rng = np.random.default_rng(0)
    print(
        f"{'shape':<34}{'lax ms':>9}{'gather ms':>11}{'torch ms':>10}"
        f"{'gather/lax':>12}{'lax/torch':>11}"
    )
    for name, x_shape, k_shape, options in SHAPES:
        x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
        kernel = jnp.asarray(rng.normal(size=k_shape), jnp.float32)
        times = {}
        for impl in ("lax", "gather"):
            f = jax.jit(functools.partial(convjax.conv, impl=impl, **options))
            times[impl] = median_ms(functools.partial(f, x, kernel), repeats)
        line = f"{name:<34}{times['lax']:9.2f}{times['gather']:11.2f}"
        if torch:
            t = median_ms(torch_conv(torch, x, kernel, options), repeats)
            line += f"{t:10.2f}{times['gather'] / times['lax']:12.2f}{times['lax'] / t:11.2f}"
        else:
            line += f"{'—':>10}{times['gather'] / times['lax']:12.2f}{'—':>11}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
