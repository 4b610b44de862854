"""``convjax tour``: the seed's convolution types on real arrays, both paths side by side."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import convjax

SECTIONS: list[tuple[str, Callable[[], None]]] = []


def section(title: str):
    def register(fn):
        SECTIONS.append((title, fn))
        return fn

    return register


def _random(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def both_paths(fn: Callable[..., jax.Array], *args, **kwargs) -> tuple[jax.Array, float]:
    """Run ``fn`` with ``impl="lax"`` and ``impl="gather"``; return the lax result and the
    largest difference between the two."""
    lax_y = fn(*args, impl="lax", **kwargs)
    gather_y = fn(*args, impl="gather", **kwargs)
    return lax_y, float(jnp.max(jnp.abs(lax_y - gather_y)))


def agree(diff: float) -> str:
    return f"lax vs gather max |diff| = {diff:.1e} " + ("(agree)" if diff < 1e-4 else "(DIFFER)")


@section("Convolution: kernel size, stride, padding, channels")
def _standard():
    x, k = _random((1, 5, 5, 1)), _random((3, 3, 1, 1), 1)
    y, diff = both_paths(convjax.conv, x, k, strides=2)
    print(
        f"  5x5 input, 3x3 kernel, stride 2, no padding -> {y.shape[1]}x{y.shape[2]}   "
        f"{agree(diff)}"
    )
    x = _random((1, 7, 7, 16))
    y, diff = both_paths(convjax.conv, x, _random((3, 3, 16, 32), 1), padding="SAME")
    print(f"  'half' (SAME) padding, stride 1: 7x7 stays {y.shape[1]}x{y.shape[2]}   {agree(diff)}")
    i, o, kk = 16, 32, 9
    print(f"  parameters I*O*K = {i}*{o}*{kk} = {math.prod((3, 3, 16, 32))}")
    for mode in ("zeros", "reflect", "replicate", "circular"):
        y, diff = both_paths(
            convjax.conv, x, _random((3, 3, 16, 8), 2), padding=1, padding_mode=mode
        )
        print(f"  padding_mode={mode:<9} -> {tuple(y.shape)}   {agree(diff)}")


@section("Dilated (atrous) convolution")
def _dilated():
    x, k3 = _random((1, 9, 9, 1)), _random((3, 3, 1, 1), 1)
    y, diff = both_paths(convjax.dilated_conv, x, k3, rate=2)
    k5 = jnp.zeros((5, 5, 1, 1), jnp.float32).at[::2, ::2].set(k3)
    dense = convjax.conv(x, k5)
    print(
        f"  3x3 kernel at rate 2 sees a {convjax.effective_window(3, 2)}x"
        f"{convjax.effective_window(3, 2)} field with {k3.size} parameters: 9x9 -> "
        f"{y.shape[1]}x{y.shape[2]}   {agree(diff)}"
    )
    print(
        f"  equals a 5x5 kernel with every second row and column zero: max |diff| = "
        f"{float(jnp.max(jnp.abs(y - dense))):.1e}"
    )


@section("Grouped and depthwise convolution")
def _grouped():
    x = _random((2, 8, 8, 16))
    y, diff = both_paths(convjax.conv, x, _random((3, 3, 4, 32), 1), groups=4)
    print(
        f"  groups=4, 16 -> 32 channels: kernel 3x3x4x32 = {3 * 3 * 4 * 32} parameters "
        f"(dense: {3 * 3 * 16 * 32}) -> {tuple(y.shape)}   {agree(diff)}"
    )
    y, diff = both_paths(convjax.depthwise_conv, x, _random((3, 3, 1, 32), 2), padding="SAME")
    print(
        f"  depthwise, multiplier 2: kernel 3x3x1x32 = {3 * 3 * 32} parameters -> "
        f"{tuple(y.shape)}   {agree(diff)}"
    )


def run() -> None:
    print(f"convjax {convjax.__version__} tour (jax {jax.__version__}, {jax.default_backend()})")
    for number, (title, fn) in enumerate(SECTIONS, 1):
        print(f"\n{number}. {title}")
        fn()
