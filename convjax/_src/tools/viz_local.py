"""A picture of the locally connected convolution: which kernel each output position uses.

:func:`local_kernels` draws a small 2-d :func:`convjax.local_conv` in three panels, each output
position ``(i, j)`` in its own colour throughout:

- the input (padded), with the windows of a few output positions outlined in their colours,
  each read cell marked where that output's kernel taps it (from ``convjax.index_map``, the
  same index map the gather formulation computes with);
- the kernel ``[*out_spatial, *window, C_in // groups, C_out]`` as one small ``window`` tile per
  output position: ``k[i, j]``, a different kernel at every position;
- the output, each cell in the colour of the kernel that computed it.

Drawing needs matplotlib (``pip install "convjax[viz]"``), imported inside the function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from convjax._src.checks import check_int, check_real, check_shape, reported_as
from convjax._src.ops.conv import index_map
from convjax._src.spec import Padding, PaddingMode
from convjax._src.tools.viz import _matplotlib

MAX_OUTPUTS = 64  # output positions drawn (8x8): more is not a legible picture
INPUT, PADDING, EDGE = "#c9def0", "#f2f2f2", "#3a3a3a"


def local_kernels(
    input_shape: Sequence[int],
    window: Sequence[int],
    *,
    strides: int | Sequence[int] = 1,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    padding_mode: PaddingMode = "zeros",
    outlined: Sequence[Sequence[int]] | None = None,
    cell: float = 0.42,
) -> Any:
    """A matplotlib ``Figure`` (it shows itself in Jupyter): which kernel each output position
    of a 2-d :func:`convjax.local_conv` uses, and which input cells it reads.

    Args:
      input_shape: the input's spatial shape ``(H, W)``.
      window: the window ``(k_h, k_w)``.
      strides, padding, dilation, padding_mode: as :func:`convjax.local_conv` takes them.
      outlined: the output positions whose windows are outlined on the input (default: the
        four corners).
      cell: the side of one cell, in inches.

    Returns:
      A ``matplotlib.figure.Figure`` (save it with ``fig.savefig(path)``).

    >>> from convjax import viz
    >>> fig = viz.local_kernels((5, 5), (3, 3), padding=1, strides=2)
    >>> [ax.get_title().splitlines()[0] for ax in fig.axes]
    ['input x, padded: 7x7', 'kernel: one 3x3 kernel per output', 'output y: 3x3']
    """
    op = "viz.local_kernels"
    input_shape = check_shape(op, "input_shape", input_shape)
    window = check_shape(op, "window", window)
    if check_real(op, "cell", cell) == 0:
        raise ValueError(f"{op}: cell must be > 0 (inches), got {cell!r}.")
    if len(input_shape) != 2 or len(window) != 2:
        raise ValueError(
            f"{op}: draws 2-d convolutions: input_shape and window need 2 entries each, got "
            f"input_shape {input_shape} and window {window}."
        )
    with reported_as(op):
        plan = index_map(
            (*input_shape, 1),
            (*window, 1, 1),
            strides=strides,
            padding=padding,
            dilation=dilation,
            padding_mode=padding_mode,
        )
    out = plan.output_spatial
    if np.prod(out) > MAX_OUTPUTS:
        raise ValueError(
            f"{op}: {out[0]}x{out[1]} output positions are too many to tell apart; draw at most "
            f"{MAX_OUTPUTS} (a smaller input_shape, or larger strides)."
        )
    if outlined is None:
        outlined = sorted({(0, 0), (0, out[1] - 1), (out[0] - 1, 0), (out[0] - 1, out[1] - 1)})
    outlined = [tuple(check_int(op, "outlined", v) for v in o) for o in outlined]
    for o in outlined:
        if len(o) != 2 or not all(0 <= v < n for v, n in zip(o, out, strict=False)):
            raise ValueError(
                f"{op}: outlined positions must be (i, j) with 0 <= i < {out[0]} and "
                f"0 <= j < {out[1]}, got {o}."
            )
    Figure = _matplotlib()  # shows itself in Jupyter, as every viz picture does
    from matplotlib.patches import Patch, Rectangle  # optional dependency: drawing

    colours = _colours(int(np.prod(out)))

    def colour(o):
        return colours[o[0] * out[1] + o[1]]

    # Padded-grid coordinates: the lowest position any tap reads is row/column 0.
    low = [int(min(axis.position.min(), 0)) for axis in plan.axes]
    high = [int(max(axis.position.max() + 1, axis.size)) for axis in plan.axes]
    grid = [h - lo for h, lo in zip(high, low, strict=True)]
    kh, kw = window
    tiles = (out[0] * (kh + 1) - 1, out[1] * (kw + 1) - 1)  # kernel tiles, a cell apart
    widths = [max(grid[1], 7), max(tiles[1] * 0.5, 8), max(out[1], 7)]  # room for the titles
    height = max(grid[0], tiles[0] * 0.5, out[0])
    fig = Figure(
        figsize=(cell * (sum(widths) + 6), cell * (height + 4.5)), dpi=100, layout="constrained"
    )
    spec = fig.add_gridspec(1, 3, width_ratios=widths)
    axes = [fig.add_subplot(spec[0, i]) for i in range(3)]
    font = max(8.0, 24 * cell)

    # The input, padded: input cells blue, padding grey (dashed edge where it reads zeros).
    ax = axes[0]
    for r in range(grid[0]):
        for c in range(grid[1]):
            inside = 0 <= r + low[0] < input_shape[0] and 0 <= c + low[1] < input_shape[1]
            ax.add_patch(
                Rectangle(
                    (c, r),
                    1,
                    1,
                    facecolor=INPUT if inside else PADDING,
                    edgecolor=EDGE if inside else "#9a9a9a",
                    linestyle="-" if inside or padding_mode != "zeros" else "--",
                    linewidth=0.6,
                )
            )
    for index, o in enumerate(outlined):
        rows = plan.axes[0].position[o[0]] - low[0]
        cols = plan.axes[1].position[o[1]] - low[1]
        inset = 0.08 + 0.06 * index  # overlapping windows stay apart
        ax.add_patch(
            Rectangle(
                (cols[0] + inset, rows[0] + inset),
                cols[-1] - cols[0] + 1 - 2 * inset,
                rows[-1] - rows[0] + 1 - 2 * inset,
                fill=False,
                edgecolor=colour(o),
                linewidth=2.4,
            )
        )
        for r in rows:
            for c in cols:
                ax.add_patch(
                    Rectangle(
                        (c + 0.5 - 0.16, r + 0.5 - 0.16),
                        0.32,
                        0.32,
                        facecolor=colour(o),
                        edgecolor="none",
                        alpha=0.85,
                    )
                )
    padded = "" if grid == list(input_shape) else ", padded"
    _frame(ax, grid, f"input x{padded}: {grid[0]}x{grid[1]}\nwindows of the outlined outputs", font)

    # The kernel: one window-sized tile per output position, in that position's colour.
    ax = axes[1]
    for o in np.ndindex(*out):
        top, left = o[0] * (kh + 1), o[1] * (kw + 1)
        for r in range(kh):
            for c in range(kw):
                ax.add_patch(
                    Rectangle(
                        (left + c, top + r),
                        1,
                        1,
                        facecolor=colour(o),
                        edgecolor="white",
                        linewidth=0.5,
                    )
                )
        if min(window) >= 2:
            ax.text(
                left + kw / 2,
                top + kh / 2,
                f"k[{o[0]},{o[1]}]",
                ha="center",
                va="center",
                fontsize=font * 0.8,
                color=_ink(colour(o)),
                fontweight="bold",
            )
    _frame(
        ax,
        tiles,
        f"kernel: one {kh}x{kw} kernel per output\n[*out, *window, C_in // groups, C_out]",
        font,
    )

    # The output: each cell in the colour of its kernel.
    ax = axes[2]
    for o in np.ndindex(*out):
        ax.add_patch(
            Rectangle((o[1], o[0]), 1, 1, facecolor=colour(o), edgecolor="white", linewidth=1.0)
        )
        ax.text(
            o[1] + 0.5,
            o[0] + 0.5,
            f"({o[0]},{o[1]})",
            ha="center",
            va="center",
            fontsize=font * 0.8,
            color=_ink(colour(o)),
            fontweight="bold",
        )
    _frame(ax, out, f"output y: {out[0]}x{out[1]}\ncell (i,j) computed by k[i,j]", font)

    handles = [
        Patch(facecolor=INPUT, edgecolor=EDGE, label="input cell"),
        Patch(
            facecolor=PADDING,
            edgecolor="#9a9a9a",
            linestyle="--" if padding_mode == "zeros" else "-",
            label=f"padding ({padding_mode})",
        ),
        *(
            Patch(
                facecolor="none", edgecolor=colour(o), linewidth=2.4, label=f"window of ({i},{j})"
            )
            for o, (i, j) in zip(outlined, outlined, strict=True)
        ),
        Patch(facecolor=colours[0], label="k[i,j]: output (i,j)'s own kernel (one colour each)"),
    ]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=min(len(handles), 3),
        fontsize=font * 0.9,
        frameon=False,
    )
    fig.suptitle("local_conv: a different kernel at every output position", fontsize=font * 1.2)
    return fig


def _ink(background) -> str:
    """Black or white, whichever reads on ``background``."""
    r, g, b = background[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.6 else "white"


def _frame(ax, size, title: str, font: float) -> None:
    """Square cells, row 0 at the top, no ticks."""
    ax.set_xlim(-0.2, size[1] + 0.2)
    ax.set_ylim(size[0] + 0.2, -0.2)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=font)


def _colours(count: int) -> list:
    """``count`` colours that tell neighbours apart: matplotlib's ``tab20`` order for up to 20,
    else evenly spaced hues at two lightnesses."""
    import matplotlib  # optional dependency: drawing

    if count <= 20:
        table = matplotlib.colormaps["tab20"].colors
        order = [*range(0, 20, 2), *range(1, 20, 2)]  # the dark ten, then the light ten
        return [table[i] for i in order[:count]]
    hues = matplotlib.colormaps["hsv"]
    return [tuple(0.75 * v if i % 2 else v for v in hues(i / count)[:3]) for i in range(count)]
