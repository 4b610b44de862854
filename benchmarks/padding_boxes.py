"""Where skipping the taps on zero padding pays: ``impl="lax"`` with and without its boxes.

XLA:CPU's convolution multiplies the taps that read zero padding like any other; on the CPU the
``lax`` formulation splits a convolution whose taps are mostly on padding into boxes of outputs
that read the same taps (``convjax._src.formulations.lax.boxed_conv``).  This times the forward
and the gradients of a loss of the output (``Σ y²``) both ways (boxed wherever a tap reads
padding) on DeepLab's atrous rates over a small feature map and on a few small maps: the numbers
behind ``PADDING_SHARE`` and ``BOXES_PER_DIM``.  Timing is ``convjax bench``'s (alternating
contenders, a settle before each timed call, medians).

Run ``python benchmarks/padding_boxes.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

import convjax
from convjax._src import shapes
from convjax._src.formulations import lax as lax_formulation
from convjax.apps.timing import block, measure

# (input shape, kernel shape, padding, dilation)
CASES = (
    ((16, 24, 24, 64), (3, 3, 64, 32), 6, 6),
    ((16, 24, 24, 64), (3, 3, 64, 32), 12, 12),
    ((16, 24, 24, 64), (3, 3, 64, 32), 18, 18),
    ((16, 7, 7, 64), (7, 7, 64, 64), 3, 1),
    ((16, 4, 4, 128), (3, 3, 128, 128), 1, 1),
    ((4, 16, 16, 64), (5, 5, 64, 64), 2, 1),
)


def padding_share(x_shape, kernel_shape, padding, dilation) -> float:
    """The share of the multiply-adds whose taps read zero padding."""
    useful = 1.0
    for size, k in zip(x_shape[1:-1], kernel_shape[:-2], strict=True):
        bands = shapes.reading_bands(size, k, 1, (padding, padding), dilation)
        work = sum((stop - start) * (last - first) for start, stop, first, last in bands)
        useful *= work / (bands[-1][1] * k)
    return 1 - useful


def compiled(x, kernel, padding, dilation, *, boxes: bool, gradient: bool):
    """The jitted forward or gradient, traced with the boxes on or off."""
    conv = functools.partial(convjax.conv, padding=padding, dilation=dilation, impl="lax")
    loss = lambda x, k: jnp.sum(conv(x, k) ** 2)  # noqa: E731
    f = jax.grad(loss, argnums=(0, 1)) if gradient else conv
    names = ("PADDING_SHARE", "BOXES_PER_DIM", "MIN_BOXED_WORK")
    saved = [getattr(lax_formulation, name) for name in names]
    # Boxes wherever any tap reads padding, however many and however small; or none.
    chosen = (1e-9 if boxes else math.inf, 2**20, 0)
    for name, value in zip(names, chosen, strict=True):
        setattr(lax_formulation, name, value)
    try:
        program = jax.jit(f).lower(x, kernel).compile()
    finally:
        for name, value in zip(names, saved, strict=True):
            setattr(lax_formulation, name, value)
    return lambda: program(x, kernel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.default_backend()}: median ms, whole vs boxes")
    rng = np.random.default_rng(0)
    for x_shape, kernel_shape, padding, dilation in CASES:
        x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
        kernel = jnp.asarray(rng.normal(size=kernel_shape), jnp.float32)
        share = padding_share(x_shape, kernel_shape, padding, dilation)
        cells = []
        for gradient in (False, True):
            contenders = {
                name: (
                    compiled(x, kernel, padding, dilation, boxes=boxes, gradient=gradient),
                    block,
                )
                for name, boxes in (("whole", False), ("boxes", True))
            }
            timings = measure(contenders, args.rounds, lambda: None)
            whole, boxes = timings["whole"].median_ms, timings["boxes"].median_ms
            mode = "grad" if gradient else "fwd"
            cells.append(f"{mode} {whole:6.2f} / {boxes:6.2f} ({whole / boxes:4.2f}x)")
        window = "x".join(map(str, kernel_shape[:-2]))
        print(
            f"{window} pad {padding} rate {dilation} on {x_shape}: {share:4.0%} on padding  "
            + "   ".join(cells),
            flush=True,
        )


if __name__ == "__main__":
    main()
