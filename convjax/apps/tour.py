"""``convjax tour``: the classic convolution types on real arrays, two formulations side by side.

With ``out``, it also writes ``index.html``: an animation (or a channel picture) for each type, in
the order the tour tells them, drawn by :mod:`convjax.viz`.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import html
import io
import math
import pathlib
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import convjax
from convjax import viz
from convjax._src.checks import as_array

SECTIONS: list[tuple[str, Callable[[], None], tuple[tuple[str, dict[str, Any]], ...]]] = []


def section(title: str, *pictures: tuple[str, dict[str, Any]]):
    """Register a tour section; ``pictures`` are ``(caption, viz.animate options)`` pairs, or
    ``(caption, {"channels": (counts...), "groups": ..., "labels": ...})`` for a channel view."""

    def register(fn):
        SECTIONS.append((title, fn, pictures))
        return fn

    return register


def _random(shape, seed=0):
    return as_array(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def both_paths(fn: Callable[..., jax.Array], *args, **kwargs) -> tuple[jax.Array, float]:
    """Run ``fn`` with ``impl="lax"`` and ``impl="gather"``; return the lax result and the
    largest difference between the two."""
    lax_y, gather_y = (
        jax.jit(functools.partial(fn, impl=impl, **kwargs))(*args) for impl in ("lax", "gather")
    )
    return lax_y, float(jnp.max(jnp.abs(lax_y - gather_y)))


def agree(diff: float, pair: str = "lax vs gather") -> str:
    return f"{pair} max |diff| = {diff:.1e} " + ("(agree)" if diff < 1e-4 else "(DIFFER)")


@section(
    "Convolution: kernel size, stride, padding, channels",
    (
        "the classic example: 5x5, 3x3 kernel, stride 2, no padding",
        dict(input_shape=(5, 5, 1), kernel_shape=(3, 3, 1, 1), strides=2),
    ),
    (
        "half padding keeps the size",
        dict(input_shape=(5, 5, 1), kernel_shape=(3, 3, 1, 1), padding="HALF"),
    ),
    (
        "circular padding wraps around",
        dict(input_shape=(4, 4, 1), kernel_shape=(3, 3, 1, 1), padding=1, padding_mode="circular"),
    ),
)
def _standard():
    x, k = _random((1, 5, 5, 1)), _random((3, 3, 1, 1), 1)
    y, diff = both_paths(convjax.conv, x, k, strides=2)
    print(
        f"  5x5 input, 3x3 kernel, stride 2, no padding -> {y.shape[1]}x{y.shape[2]}   "
        f"{agree(diff)}"
    )
    x = _random((1, 7, 7, 16))
    y, diff = both_paths(convjax.conv, x, _random((3, 3, 16, 32), 1), padding="HALF")
    print(f"  'HALF' padding, stride 1: 7x7 stays {y.shape[1]}x{y.shape[2]}   {agree(diff)}")
    i, o, kk = 16, 32, 9
    print(f"  parameters I*O*K = {i}*{o}*{kk} = {math.prod((3, 3, 16, 32))}")
    for mode in ("zeros", "reflect", "replicate", "circular"):
        y, diff = both_paths(
            convjax.conv, x, _random((3, 3, 16, 8), 2), padding=1, padding_mode=mode
        )
        print(f"  padding_mode={mode:<9} -> {tuple(y.shape)}   {agree(diff)}")


@section(
    "Dilated (atrous) convolution",
    (
        "a 3x3 kernel at rate 2 sees 5x5",
        dict(input_shape=(7, 7, 1), kernel_shape=(3, 3, 1, 1), dilation=2),
    ),
)
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


@section(
    "Grouped and depthwise convolution",
    (
        "groups=4: each output channel reads one group's input channels",
        {"channels": (16, 32), "groups": 4},
    ),
    (
        "depthwise, multiplier 2: each input channel feeds two output channels",
        {"channels": (16, 32), "groups": 16},
    ),
)
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


@section(
    "Transposed convolution vs deconvolution",
    (
        "transposed, 2x2 back to 5x5: each input cell added into the output",
        dict(input_shape=(2, 2, 1), kernel_shape=(3, 3, 1, 1), strides=2, transpose=True),
    ),
    (
        "the same transposed conv as a stride-1 conv over inserted zeros",
        dict(
            input_shape=(2, 2, 1), kernel_shape=(3, 3, 1, 1), strides=2, transpose=True, view="conv"
        ),
    ),
)
def _transpose_vs_deconvolution():
    x, k = _random((1, 5, 5, 1)), _random((3, 3, 1, 1), 1)
    y = convjax.conv(x, k, strides=2)
    back, diff = both_paths(convjax.conv_transpose, y, k, strides=2)
    print(
        f"  conv 5x5 -> {y.shape[1]}x{y.shape[2]}, conv_transpose -> {back.shape[1]}x"
        f"{back.shape[2]}   {agree(diff)}"
    )
    print(
        f"  the shape comes back, the values do not: max |conv_transpose(conv(x)) - x| = "
        f"{float(jnp.max(jnp.abs(back - x))):.2f}"
    )
    probe = _random(y.shape, 2)
    lhs, rhs = jnp.vdot(y, probe), jnp.vdot(x, convjax.conv_transpose(probe, k, strides=2))
    scale = jnp.linalg.norm(y) * jnp.linalg.norm(probe)
    print(
        f"  it is the adjoint: |<conv(x), y> - <x, conv_transpose(y)>| / (|conv(x)| |y|) = "
        f"{float(jnp.abs(lhs - rhs) / scale):.1e} (float32)"
    )
    n = 32
    rows, cols = np.mgrid[:n, :n]
    image = (rows // 8 + cols // 8) % 2 + np.sin(cols / 3.0)  # checkerboard and stripes
    image = as_array(image[..., None], jnp.float32)
    blur = np.array([0.2, 0.6, 0.2], np.float32)  # spectrum >= 0.2: invertible
    kernel = as_array(np.multiply.outer(blur, blur)[..., None, None])
    options = dict(padding="SAME", padding_mode="circular")
    blurred = convjax.conv(image, kernel, **options)

    def error(estimate):
        return float(jnp.linalg.norm(estimate - image) / jnp.linalg.norm(image))

    wiener = convjax.deconvolve(blurred, kernel, **options)
    lsq = convjax.deconvolve(blurred, kernel, method="lsq", **options)
    transposed = convjax.conv_transpose(blurred, kernel, **options)
    print(f"  {n}x{n} pattern blurred by a 3x3 kernel: rel error {error(blurred):.2f}")
    print(
        f"  recovered by deconvolve: rel error {error(wiener):.1e} (Wiener), {error(lsq):.1e} "
        f"(lsq);  by conv_transpose: {error(transposed):.2f}"
    )


@section(
    "Separable convolutions and counting",
    (
        "spatially separable, first the 3x1 kernel ...",
        dict(input_shape=(5, 5, 1), kernel_shape=(3, 1, 1, 1)),
    ),
    ("... then the 1x3 kernel", dict(input_shape=(3, 5, 1), kernel_shape=(1, 3, 1, 1))),
    (
        "depthwise separable: depthwise 3x3, then 1x1 across channels",
        {"channels": (8, 8, 12), "groups": (8, 1), "labels": ("depthwise", "pointwise")},
    ),
)
def _separable():
    sobel = jnp.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], jnp.float32)
    f = convjax.separable_factors(sobel, rank=1)
    scale = f.columns[0, 0]  # move the factors' common scale onto the row to read them

    def show(v):
        return "[" + ", ".join(f"{float(a):g}" for a in np.round(np.asarray(v), 4) + 0.0) + "]"

    print(
        f"  Sobel: separable_factors finds rank {int(f.rank)}, {show(f.columns[:, 0] / scale)}ᵀ · "
        f"{show(f.rows[0] * scale)}, residual {float(f.error):.1e}"
    )
    dense = convjax.Layer((3, 3, 1, 1))
    split = convjax.Layer.spatial_separable([(3, 1, 1), (3, 1, 1)])
    image = _random((1, 16, 16, 1))
    y, diff = both_paths(
        convjax.spatial_separable_conv, image, list(f.depthwise_kernels()), padding="SAME"
    )
    dense_y = convjax.conv(image, sobel.reshape(3, 3, 1, 1), padding="SAME")
    same = float(jnp.max(jnp.abs(y - dense_y)))
    print(
        f"  two 1-D kernels: {convjax.param_count(split)} parameters instead of "
        f"{convjax.param_count(dense)}; spatial_separable_conv vs conv on a 16x16 image: max "
        f"|diff| = {same:.1e}   {agree(diff)}"
    )
    x = _random((1, 8, 8, 16))
    y, diff = both_paths(
        convjax.depthwise_separable_conv, x, _random((3, 3, 1, 16), 1), _random((16, 32), 2)
    )
    full = convjax.param_count(convjax.Layer((3, 3, 16, 32)))
    separable = convjax.param_count(convjax.Layer.depthwise_separable((3, 3, 1, 16), (16, 32)))
    print(
        f"  3x3, 16 -> 32 channels: {full} parameters; depthwise separable (multiplier 1): "
        f"{separable} -> {tuple(y.shape)}   {agree(diff)}"
    )
    atrous = convjax.Layer((3, 3, 1, 1), dilation=2)
    field = convjax.receptive_field(atrous).size
    print(
        f"  3x3 at rate 2: receptive field {field[0]}x{field[1]} with "
        f"{convjax.param_count(atrous)} parameters"
    )


def _offsets(seed: int = 3) -> np.ndarray:
    """Offsets for one 3x3 deformable output on a 7x7 input: each tap displaced by up to a
    cell and a half, fractions included (bilinear samples)."""
    return np.random.default_rng(seed).uniform(-1.5, 1.5, (1, 5, 5, 18))


@section(
    "Beyond the classic types: locally connected, deformable and masked",
    (
        "deformable: where output (2, 2) of a 3x3 kernel samples, each tap moved by its offset",
        {
            "figure": lambda: viz.deform_sampling(
                (1, 7, 7, 1), (3, 3, 1, 1), _offsets(), output_position=(2, 2)
            )
        },
    ),
)
def _beyond():
    x = _random((1, 16, 16, 8))
    shared = _random((3, 3, 8, 8), 1)
    count = convjax.local_layer_count(x.shape, (3, 3), 8, padding="SAME")
    everywhere = jnp.broadcast_to(shared, count.kernel_shape)
    local = {
        impl: convjax.local_conv(x, everywhere, padding="SAME", impl=impl)
        for impl in ("taps", "gather")
    }
    same = float(jnp.max(jnp.abs(local["taps"] - convjax.conv(x, shared, padding="SAME"))))
    diff = float(jnp.max(jnp.abs(local["taps"] - local["gather"])))
    print(
        f"  locally connected 3x3, 8 -> 8 channels on 16x16: a kernel per output position, "
        f"{count.params} parameters (shared: {shared.size}); the same kernel everywhere is the "
        f"conv: max |diff| = {same:.1e}   {agree(diff, 'taps vs gather')}"
    )
    image, kernel = _random((1, 7, 7, 1)), _random((3, 3, 1, 1), 2)
    zero = jnp.zeros((1, 5, 5, 18), jnp.float32)
    still = convjax.deform_conv(image, kernel, zero)
    moved = convjax.deform_conv(image, kernel, as_array(_offsets(), jnp.float32))
    half = convjax.deform_conv(image, kernel, zero, mask=jnp.full((1, 5, 5, 9), 0.5, jnp.float32))
    print(
        f"  deformable 3x3: zero offsets are the conv, max |diff| = "
        f"{float(jnp.max(jnp.abs(still - convjax.conv(image, kernel)))):.1e}; learned offsets "
        f"move each tap (output (2, 2): {float(still[0, 2, 2, 0]):+.3f} -> "
        f"{float(moved[0, 2, 2, 0]):+.3f}); a mask of 0.5 (DCN v2) halves it: "
        f"{float(half[0, 2, 2, 0]):+.3f}"
    )
    mask = convjax.pixelcnn_mask((5, 5), 1, 1, mask_type="A")
    causal = _random((5, 5, 1, 1), 3) * as_array(mask, jnp.float32)
    picture = _random((1, 8, 8, 1), 4)
    later = picture.at[0, 4, 5, 0].add(1.0)  # a pixel after (4, 4) in raster order
    y0, y1 = (convjax.conv(p, causal, padding="SAME")[0, 4, 4, 0] for p in (picture, later))
    print(
        f"  masked (PixelCNN type A): {int(mask.sum())} of 25 taps live; output (4, 4) ignores "
        f"the pixel after it: change {abs(float(y1 - y0)):.1e}"
    )


@section(
    "Flax modules on either backend",
    (
        "a layer's convolution, 3 -> 4 channels, stride 2, 'SAME': every output channel reads "
        "every input channel",
        dict(input_shape=(5, 5, 3), kernel_shape=(3, 3, 3, 4), strides=2, padding="SAME"),
    ),
)
def _modules():
    layer = convjax.nnx.Conv(16, 32, (3, 3), strides=2, padding="SAME", rngs=nnx.Rngs(0))
    params = sum(p.size for p in jax.tree.leaves(nnx.state(layer, nnx.Param)))
    counted = convjax.param_count(convjax.Layer((3, 3, 16, 32), strides=2, bias=True))
    x = _random((2, 16, 16, 16))
    twin = convjax.nnx.Conv(
        16, 32, (3, 3), strides=2, padding="SAME", impl="gather", rngs=nnx.Rngs(1)
    )
    nnx.update(twin, nnx.state(layer, nnx.Param))
    y = layer(x)
    diff = float(jnp.max(jnp.abs(y - twin(x))))
    print(
        f"  convjax.nnx.Conv(16, 32, (3, 3), strides=2): {params} parameters "
        f"(param_count: {counted}) -> {tuple(y.shape)}   {agree(diff)}"
    )
    print("  `convjax train [--impl NAME]` trains an encoder-decoder of these layers")


class _Tee(io.TextIOBase):
    """Writes go to ``stream`` and are kept, so a section's numbers can go on the page too."""

    def __init__(self, stream):
        self.stream, self.kept = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.kept.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def run(out: str | pathlib.Path | None = None) -> None:
    """Print the tour; with ``out``, also write ``out/index.html``: the same numbers and the
    pictures of each section."""
    header = f"convjax {convjax.__version__} tour (jax {jax.__version__}, {jax.default_backend()})"
    print(header)
    printed = []
    for number, (title, fn, _) in enumerate(SECTIONS, 1):
        print(f"\n{number}. {title}")
        tee = _Tee(sys.stdout)
        with contextlib.redirect_stdout(tee):
            fn()
        printed.append(tee.kept.getvalue())
    if out is not None:
        path = write_page(pathlib.Path(out), printed, header=header)
        print(f"\nwrote {path}")


def write_page(
    out: pathlib.Path, printed: list[str] | None = None, *, header: str = ""
) -> pathlib.Path:
    """``out/index.html``: the tour's sections in order, each with the numbers the tour prints
    (``printed``, one text per section; run here, quietly, when not given) and its animations
    (inline players) and channel pictures, self-contained."""
    if printed is None:
        printed = []
        for _, fn, _ in SECTIONS:
            with contextlib.redirect_stdout(io.StringIO()) as kept:
                fn()
            printed.append(kept.getvalue())
    parts = [
        "<!doctype html><meta charset='utf-8'><title>convjax tour</title>",
        "<style>body{font-family:sans-serif;max-width:64em;margin:auto;padding:0 1em}"
        "pre{background:#f4f6f8;padding:.8em 1em;white-space:pre-wrap;font-size:14px;"
        "line-height:1.45}h3{font-size:1.05em;margin:1.4em 0 .4em}</style>",
        "<h1>convjax tour</h1>",
        f"<p>{html.escape(header)}</p>" if header else "",
        "<p>The numbers <code>convjax tour</code> prints, section by section, and pictures of "
        "each type, drawn from the index maps convjax computes with.</p>",
    ]
    for number, ((title, _, pictures), text) in enumerate(zip(SECTIONS, printed, strict=True), 1):
        parts.append(f"<h2>{number}. {html.escape(title)}</h2>")
        parts.append(f"<pre>{html.escape(text.strip(chr(10)))}</pre>")
        for caption, options in pictures:
            parts.append(f"<h3>{html.escape(caption)}</h3>")
            if "figure" in options:
                fig = options["figure"]()
            elif "channels" in options:
                fig = viz.channels(
                    *options["channels"],
                    groups=options["groups"],
                    labels=options.get("labels", ()),
                )
            else:
                parts.append(viz.animate(**options).to_html(fps=1.5))
                continue
            data = base64.b64encode(fig._repr_png_()).decode()
            parts.append(f"<img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    path.write_text("\n".join(part for part in parts if part) + "\n")
    return path
