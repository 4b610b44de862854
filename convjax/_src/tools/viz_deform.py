"""A picture of a 2-d deformable convolution at one output position: the input grid (or an image),
the kernel's regular sampling grid, and where the offsets move each sample.

The regular grid is the gather path's index map (``position[o, t] = o·s − lo + t·d``, the same
:func:`~convjax._src.formulations.gather.build_index_map` :func:`convjax.deform_conv` computes
with), the samples are those positions plus the offsets in :func:`convjax.deform_conv`'s layout,
and the shaded cells are the interpolation corners each sample reads with nonzero weight, so the
picture cannot disagree with the computation.

Drawing needs matplotlib and Pillow (``pip install "convjax[viz]"``), imported where drawing
starts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from convjax._src.checks import check_int, check_shape
from convjax._src.formulations.gather import build_index_map
from convjax._src.spec import Padding, make_spec
from convjax._src.tools.viz import BLUE, DASHED, PALE_BLUE, _matplotlib

ORANGE, DARK_ORANGE, GRID = "#f28e2b", "#b34d00", "#9a9a9a"


def deform_sampling(
    x_shape: Sequence[int],
    kernel_shape: Sequence[int],
    offsets: Any,
    *,
    output_position: Sequence[int],
    mask: Any = None,
    image: Any = None,
    strides: int | Sequence[int] = 1,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    offset_groups: int = 1,
    offset_group: int = 0,
    batch_index: Sequence[int] = (),
):
    """Where one output of a 2-d :func:`convjax.deform_conv` samples its input: a matplotlib
    ``Figure`` (it shows itself in Jupyter).

    Drawn in input coordinates (cell ``(row, column)`` centred on the integers): the input's
    cells, or ``image`` under them; the zero padding around it, dashed; the kernel's regular
    sampling grid ``o·s − lo + t·d`` (hollow circles); each tap's deformed sample ``o·s − lo +
    t·d + Δ`` (filled, with an arrow from its grid point; area ∝ ``|mask|`` where a mask is
    given); and the cells the samples read, shaded by their total bilinear weight (the cells a
    NaN would reach this output from).

    Args:
      x_shape: the input's shape, ``[*batch, H, W, C_in]``.
      kernel_shape: ``[kh, kw, C_in // groups, C_out]``.
      offsets: ``[*batch, H_out, W_out, offset_groups · kh · kw · 2]`` (NumPy or JAX), as
        :func:`convjax.deform_conv` takes them.
      output_position: ``(i, j)``, the output drawn.
      mask: ``[*batch, H_out, W_out, offset_groups · kh · kw]`` or ``None``.
      image: an ``[H, W]`` or ``[H, W, 3]`` array drawn under the grid (e.g. the input itself
        or the photograph it was computed from).
      strides, padding, dilation, groups, offset_groups: as :func:`convjax.deform_conv`.
      offset_group: which offset group's samples to draw.
      batch_index: which image of the batch, one int per batch dim (default: the first).

    >>> import numpy as np
    >>> from convjax import viz
    >>> offsets = np.random.default_rng(0).normal(0, 0.6, (6, 6, 18))
    >>> fig = viz.deform_sampling((8, 8, 1), (3, 3, 1, 4), offsets, output_position=(2, 3))
    >>> type(fig).__name__, fig._repr_png_()[:4]
    ('Figure', b'\\x89PNG')
    """
    op = "viz.deform_sampling"
    x_shape = check_shape(op, "x_shape", x_shape)
    kernel_shape = check_shape(op, "kernel_shape", kernel_shape)
    if len(kernel_shape) != 4:
        raise ValueError(
            f"{op}: draws 2-d deformable convolutions, kernel_shape must be [kh, kw, C_in // "
            f"groups, C_out], got {kernel_shape}."
        )
    spec = make_spec(
        op,
        x_shape,
        kernel_shape,
        strides=strides,
        padding=padding,
        dilation=dilation,
        groups=groups,
    )
    offset_groups = check_int(op, "offset_groups", offset_groups, minimum=1)
    offset_group = check_int(op, "offset_group", offset_group, minimum=0)
    if offset_group >= offset_groups:
        raise ValueError(
            f"{op}: offset_group must be < offset_groups = {offset_groups}, got {offset_group}."
        )
    spatial, window = x_shape[-3:-1], kernel_shape[:2]
    plan = build_index_map(spec, spatial, window)
    out, taps = plan.output_spatial, math.prod(window)
    batch = x_shape[:-3]
    index = _batch_index(op, batch_index, batch)
    delta = _image_of(op, "offsets", offsets, (*batch, *out, offset_groups * taps * 2), index)
    weights = None
    if mask is not None:
        weights = _image_of(op, "mask", mask, (*batch, *out, offset_groups * taps), index)
    position = tuple(check_int(op, "output_position", p) for p in _pair(op, output_position))
    if not all(0 <= p < o for p, o in zip(position, out, strict=True)):
        raise ValueError(f"{op}: output_position must lie in the output {out}, got {position}.")
    delta = delta[position].reshape(offset_groups, taps, 2)[offset_group]  # [K, (Δy, Δx)]
    if weights is not None:
        weights = weights[position].reshape(offset_groups, taps)[offset_group]
    for name, values in (("offsets", delta), ("mask", weights)):
        if values is not None and not np.all(np.isfinite(values)):
            raise ValueError(
                f"{op}: the {name} of output {position} (offset group {offset_group}) must be "
                f"finite to be drawn, got {values.ravel().tolist()}."
            )
    rows = plan.axes[0].position[position[0]]
    columns = plan.axes[1].position[position[1]]
    tap = np.unravel_index(np.arange(taps), window)
    regular = np.stack([rows[tap[0]], columns[tap[1]]], axis=-1).astype(np.float64)  # [K, 2]
    samples = regular + delta
    drawn = _image_array(op, image, spatial)
    return _draw(
        spec,
        spatial,
        window,
        position,
        regular,
        samples,
        weights,
        drawn,
        offset_group,
        offset_groups,
    )


def _pair(op: str, value: Any) -> tuple:
    if isinstance(value, str) or not isinstance(value, Sequence | np.ndarray) or len(value) != 2:
        raise ValueError(f"{op}: output_position must be a pair (i, j), got {value!r}.")
    return tuple(value)


def _batch_index(op: str, batch_index: Any, batch: Sequence[int]) -> tuple[int, ...]:
    if isinstance(batch_index, int | np.integer) and not isinstance(batch_index, bool):
        batch_index = (batch_index,)
    if not isinstance(batch_index, Sequence) or (batch_index and len(batch_index) != len(batch)):
        raise ValueError(
            f"{op}: batch_index must give one int per batch dim of x_shape ({len(batch)}), got "
            f"{batch_index!r}."
        )
    index = tuple(check_int(op, "batch_index", i, minimum=0) for i in batch_index) or (0,) * len(
        batch
    )
    if any(i >= n for i, n in zip(index, batch, strict=True)):
        raise ValueError(f"{op}: batch_index {index} is outside the batch {tuple(batch)}.")
    return index


def _image_of(op: str, name: str, array: Any, expected: tuple[int, ...], index) -> np.ndarray:
    """``array`` as float64 NumPy of the ``expected`` shape, at batch ``index``."""
    values = np.asarray(array, np.float64)
    if values.shape != expected:
        raise ValueError(f"{op}: {name} must have shape {expected}, got {values.shape}.")
    return values[index]


def _image_array(op: str, image: Any, spatial: Sequence[int]) -> np.ndarray | None:
    """``image`` as ``[H, W]`` or ``[H, W, 3]`` floats in ``[0, 1]`` (scaled where they are
    not), or ``None``."""
    if image is None:
        return None
    values = np.asarray(image)
    if (
        values.shape[:2] != tuple(spatial)
        or values.ndim not in (2, 3)
        or (values.ndim == 3 and values.shape[2] not in (3, 4))
    ):
        raise ValueError(
            f"{op}: image must be [H, W] or [H, W, 3] with (H, W) = {tuple(spatial)}, the "
            f"input's spatial size, got shape {values.shape}."
        )
    values = values.astype(np.float64)
    if np.issubdtype(np.asarray(image).dtype, np.integer) and values.max(initial=0) > 1:
        values = values / 255.0
    low, high = np.nanmin(values), np.nanmax(values)
    if low < 0 or high > 1:
        values = (values - low) / max(high - low, 1e-12)
    return values


def _reads(spatial, samples, weights) -> dict[tuple[int, int], float]:
    """Each input cell read with nonzero weight, and the samples' total ``|mask| ·`` bilinear
    weight on it."""
    total: dict[tuple[int, int], float] = {}
    for k, (r, c) in enumerate(samples):
        if not (math.isfinite(r) and math.isfinite(c)):
            continue
        m = 1.0 if weights is None else abs(float(weights[k]))
        r0, c0 = math.floor(r), math.floor(c)
        for dr in (0, 1):
            for dc in (0, 1):
                w = (r - r0 if dr else 1 - (r - r0)) * (c - c0 if dc else 1 - (c - c0))
                cell = (r0 + dr, c0 + dc)
                if w > 0 and 0 <= cell[0] < spatial[0] and 0 <= cell[1] < spatial[1]:
                    total[cell] = total.get(cell, 0.0) + m * w
    return total


def _draw(spec, spatial, window, position, regular, samples, weights, image, group, groups):
    """The figure; see :func:`deform_sampling`."""
    from matplotlib import patheffects  # optional dependency: drawing
    from matplotlib.collections import PatchCollection  # optional dependency: drawing
    from matplotlib.lines import Line2D  # optional dependency: drawing
    from matplotlib.patches import Patch, Rectangle  # optional dependency: drawing

    height, width = spatial
    (lo_r, hi_r), (lo_c, hi_c) = spec.padding
    fig = _matplotlib()(figsize=(6.6, 7.6), dpi=100)
    ax = fig.add_axes((0.11, 0.27, 0.85, 0.66))
    handles = []

    # The view: the whole padded input when it is small, else the samples and their
    # surroundings.
    finite = samples[np.isfinite(samples).all(axis=1)]
    points = np.concatenate([regular, finite])
    if max(height + lo_r + hi_r, width + lo_c + hi_c) <= 24:
        top, bottom, left, right = -lo_r, height - 1 + hi_r, -lo_c, width - 1 + hi_c
        top, left = min(top, points[:, 0].min()), min(left, points[:, 1].min())
        bottom, right = max(bottom, points[:, 0].max()), max(right, points[:, 1].max())
    else:
        top, left = points.min(axis=0) - 2.5
        bottom, right = points.max(axis=0) + 2.5
        span = max(bottom - top, right - left, 8.0)
        middle = ((top + bottom) / 2, (left + right) / 2)
        top, bottom = middle[0] - span / 2, middle[0] + span / 2
        left, right = middle[1] - span / 2, middle[1] + span / 2
    ax.set_xlim(left - 0.9, right + 0.9)
    ax.set_ylim(bottom + 0.9, top - 0.9)  # rows grow downwards
    ax.set_aspect("equal")

    # The input: an image or plain cells, then the cell grid.
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    if image is not None:
        ax.imshow(
            image, extent=extent, cmap="gray", vmin=0, vmax=1, interpolation="nearest", zorder=0
        )
        handles.append(Patch(facecolor="0.55", edgecolor=GRID, label="input (the image)"))
    else:
        ax.add_patch(Rectangle((-0.5, -0.5), width, height, facecolor=PALE_BLUE, zorder=0))
        handles.append(Patch(facecolor=PALE_BLUE, edgecolor=GRID, label="input cells"))
    visible_rows = range(max(0, math.floor(top - 1)), min(height, math.ceil(bottom + 2)) + 1)
    visible_columns = range(max(0, math.floor(left - 1)), min(width, math.ceil(right + 2)) + 1)
    grid = dict(color=GRID, lw=0.6, zorder=1)
    for r in visible_rows:
        ax.plot([-0.5, width - 0.5], [r - 0.5, r - 0.5], **grid)
    for c in visible_columns:
        ax.plot([c - 0.5, c - 0.5], [-0.5, height - 0.5], **grid)
    edges = (
        (-0.5 - lo_r, top - 0.9, bottom + 0.9),
        (height - 0.5 + hi_r, top - 0.9, bottom + 0.9),
        (-0.5 - lo_c, left - 0.9, right + 0.9),
        (width - 0.5 + hi_c, left - 0.9, right + 0.9),
    )
    if (lo_r or hi_r or lo_c or hi_c) and any(a < e < b for e, a, b in edges):
        ax.add_patch(
            Rectangle(
                (-0.5 - lo_c, -0.5 - lo_r),
                width + lo_c + hi_c,
                height + lo_r + hi_r,
                fill=False,
                edgecolor=DASHED,
                linestyle="--",
                lw=1.4,
                zorder=1,
            )
        )
        handles.append(
            Patch(fill=False, edgecolor=DASHED, linestyle="--", label="zero padding (reads 0)")
        )

    # The cells read, shaded by their total weight.
    reads = _reads(spatial, samples, weights)
    if reads:
        most = max(reads.values()) or 1.0
        cells = [Rectangle((c - 0.5, r - 0.5), 1, 1) for r, c in reads]
        shade = PatchCollection(
            cells, facecolor=ORANGE, edgecolor=DARK_ORANGE, lw=1.0, zorder=2, label="_cells read"
        )
        shade.set_alpha(None)
        shade.set_facecolor([(0.95, 0.56, 0.17, 0.15 + 0.45 * w / most) for w in reads.values()])
        ax.add_collection(shade)
        handles.append(
            Patch(
                facecolor=(0.95, 0.56, 0.17, 0.45),
                edgecolor=DARK_ORANGE,
                label="cells read (shade ∝ total bilinear weight)",
            )
        )

    # The regular grid, the arrows and the samples.
    grid_points = ax.scatter(
        regular[:, 1],
        regular[:, 0],
        s=70,
        facecolors="white",
        edgecolors=BLUE,
        linewidths=2.0,
        zorder=4,
        label="regular sampling grid o·s − lo + t·d (tap t numbered)",
    )
    handles.append(grid_points)
    for (r0, c0), (r1, c1) in zip(regular, samples, strict=True):
        if np.isfinite([r1, c1]).all() and (r0, c0) != (r1, c1):
            ax.annotate(
                "",
                xy=(c1, r1),
                xytext=(c0, r0),
                zorder=3,
                arrowprops=dict(
                    arrowstyle="-|>",
                    color=DARK_ORANGE,
                    lw=1.5,
                    shrinkA=4,
                    shrinkB=4,
                    mutation_scale=12,
                ),
            )
    handles.append(
        Line2D(
            [], [], color=DARK_ORANGE, lw=1.5, marker=">", markersize=7, label="offset Δ (arrow)"
        )
    )
    sizes = 70 if weights is None else 20 + 110 * np.clip(np.abs(weights), 0, 1)
    label = "deformed samples o·s − lo + t·d + Δ"
    label += "" if weights is None else " (area ∝ |mask|)"
    deformed = ax.scatter(
        samples[:, 1],
        samples[:, 0],
        s=sizes,
        c=ORANGE,
        edgecolors=DARK_ORANGE,
        linewidths=1.0,
        zorder=5,
        label=label,
    )
    handles.append(deformed)
    if len(regular) <= 25:  # tap numbers, row-major: the offsets' channel order
        outline = [patheffects.withStroke(linewidth=2.5, foreground="white")]
        for k, (r, c) in enumerate(regular):
            ax.annotate(
                str(k),
                (c, r),
                xytext=(5, 4),
                textcoords="offset points",
                fontsize=9,
                fontweight="bold",
                color=BLUE,
                zorder=6,
                path_effects=outline,
            )

    ax.set_xlabel("column")
    ax.set_ylabel("row")
    ax.tick_params(labelsize=9)
    ax.xaxis.set_major_locator(_integer_locator())
    ax.yaxis.set_major_locator(_integer_locator())
    group_note = f", offset group {group} of {groups}" if groups > 1 else ""
    ax.set_title(
        f"deform_conv: where output ({position[0]}, {position[1]}) samples "
        f"({window[0]}×{window[1]} window, stride {_dims(spec.strides)}, dilation "
        f"{_dims(spec.dilation)}{group_note})",
        fontsize=10,
    )
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.08),
        ncol=1,
        fontsize=9,
        frameon=False,
    )
    return fig


def _integer_locator():
    from matplotlib.ticker import MaxNLocator  # optional dependency: drawing

    return MaxNLocator(integer=True, nbins=12)


def _dims(values: Sequence[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else "×".join(map(str, values))
