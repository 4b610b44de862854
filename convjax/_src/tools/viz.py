"""``convjax.viz``: pictures of any convolution, drawn from the index maps convjax computes with.

An :class:`Animation` is a list of :class:`Step` records made by the same index arithmetic as the
gather formulation (forward frames: ``convjax.index_map(...).reads(output)`` itself), and every
picture is drawn from those records alone, so a picture cannot disagree with the computation.
Three views:

- ``"forward"``: one frame per output position of ``convjax.conv``; the frame shades the cells
  the kernel reads (dilated taps spaced), in the padded input.
- ``"scatter"`` (transposed): one frame per input cell of ``convjax.conv_transpose``, shading the
  output cells it is added into: the adjoint of the forward map.
- ``"conv"`` (transposed, zero padding): the same transposed convolution as a stride-1
  convolution of the flipped kernel over the input with ``stride − 1`` zeros inserted between
  cells and ``k̂ − 1 − lo`` / ``k̂ − 1 − hi + output_padding`` zeros around it.

Colours follow Dumoulin & Visin's conv_arithmetic: blue input, cyan output, a dark shadow for
the kernel.  Zero padding is drawn dashed; reflect, replicate and circular padding cells name the
input cell they copy.  Drawing needs matplotlib and Pillow (``pip install "convjax[viz]"``).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import html
import io
import itertools
import json
import math
import pathlib
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from convjax._src.checks import check_shape
from convjax._src.formulations import gather
from convjax._src.ops.conv import index_map
from convjax._src.ops.transpose import transpose_operator
from convjax._src.spec import Padding, PaddingMode, make_spec

View = Literal["forward", "scatter", "conv"]
Cell = tuple[int, ...]

BLUE, PALE_BLUE, CYAN, PALE_CYAN = "#4a8fc9", "#c9def0", "#4fd1e6", "#e4f7fb"
SHADOW = (0.08, 0.08, 0.12, 0.5)
EDGE, DASHED = "#3a3a3a", "#8a8a8a"
MAX_SHEET_FRAMES = 16


@dataclasses.dataclass(frozen=True)
class Step:
    """One frame.

    Attributes:
      output: the output position written (``"scatter"``: the input cell being scattered).
      reads: ``(input index, valid)`` per kernel tap, in tap order (row-major over the window);
        ``valid`` is False where the tap reads zeros.  In the ``"forward"`` view exactly
        ``convjax.index_map(...).reads(output)``; in ``"scatter"`` the output cells the input
        cell is added into (the same records, read backwards); in ``"conv"`` the transposed
        conv's input cell each flipped-kernel tap reads (False on inserted and padding zeros).
      positions: each tap's cell in the drawn frame (padding, and inserted zeros, included).
      caption: the convjax call this frame belongs to, and the position.
    """

    output: Cell
    reads: list[tuple[Cell, bool]]
    positions: tuple[Cell, ...]
    caption: str


@dataclasses.dataclass(frozen=True, eq=False)
class Animation:
    """Frames of one convolution.  ``save(path)`` writes ``.gif``, ``.html`` or ``.png``; in
    Jupyter the animation shows itself as a player.

    Attributes:
      view: ``"forward"``, ``"scatter"`` or ``"conv"`` (see the module docs).
      steps: one :class:`Step` per frame.
      extent: per spatial axis, the ``[start, stop)`` coordinates of the padded grid the taps
        land on (``"forward"``: the input; ``"scatter"``: the output; ``"conv"``: the input
        with zeros inserted).
      kinds: each frame cell's kind: ``"input"``, ``"zero"`` (zero padding or an inserted zero)
        or ``"copy"`` (reflect, replicate or circular padding).
      source: the array cell an ``"input"`` or ``"copy"`` frame cell holds.
      size: the spatial sizes of the array the frame shows.
      grid: the spatial sizes of the other array (``"scatter"``: the input, else the output),
        one cell per step.
      marked: frame cells to hatch (those ``output_padding`` adds).
      call: the convjax call drawn.
      values: ``(x, kernel)``, single-channel spatial arrays whose numbers are written, or None.
    """

    view: View
    steps: tuple[Step, ...]
    extent: tuple[tuple[int, int], ...]
    kinds: dict[Cell, str]
    source: dict[Cell, Cell]
    size: tuple[int, ...]
    grid: tuple[int, ...]
    marked: frozenset[Cell]
    call: str
    values: tuple[np.ndarray, np.ndarray] | None = None

    def evaluate(self, x: Any, kernel: Any, upto: int | None = None) -> np.ndarray:
        """The convolution of single-channel spatial arrays computed from the frames' records
        alone (float64), after the first ``upto`` steps (default: all): equal to what convjax
        computes, which the tests check, so the pictures are the computation."""
        states = list(itertools.islice(self._running(x, kernel), upto))  # one array, updated
        return states[-1].copy() if states else np.zeros(self._output_shape)

    @property
    def _output_shape(self) -> tuple[int, ...]:
        return self.size if self.view == "scatter" else self.grid

    def _running(self, x: Any, kernel: Any):
        """The output after each step, one array updated in place: the scatter view adds the
        input cell into the cells it reaches; the others write one output cell whole."""
        x = np.asarray(x, np.float64)
        weights = np.asarray(kernel, np.float64).reshape(-1)
        y = np.zeros(self._output_shape)
        for step in self.steps:
            taps = [(index, weights[t]) for t, (index, valid) in enumerate(step.reads) if valid]
            if self.view == "scatter":
                for index, w in taps:
                    y[index] += x[step.output] * w
            else:
                y[step.output] = sum(x[index] * w for index, w in taps)
            yield y

    @functools.cached_property
    def _shown(self) -> list[np.ndarray] | None:
        """The numbers each frame writes (its output so far), computed once for all frames."""
        if self.values is None:
            return None
        return [y.copy() for y in self._running(*self.values)]

    def __len__(self) -> int:
        return len(self.steps)

    def frame(self, index: int, **style: Any):
        """Frame ``index`` as a matplotlib ``Figure``."""
        return _render(self, [index], **style)

    def sheet(self, frames: Sequence[int] | None = None, **style: Any):
        """Several frames as one matplotlib ``Figure`` (default: up to 16, evenly spaced)."""
        if frames is None:
            frames = _spread(len(self.steps), MAX_SHEET_FRAMES)
        return _render(self, list(frames), **style)

    def save(self, path: str | pathlib.Path, *, fps: float = 2.0, **style: Any) -> pathlib.Path:
        """Write ``path``: ``.gif`` (looping), ``.html`` (a self-contained player) or ``.png``
        (a sheet of frames)."""
        path = pathlib.Path(path)
        suffix = path.suffix.lower()
        if suffix == ".png":
            _figure_png(self.sheet(**style), path)
        elif suffix == ".gif":
            images = [_image(self.frame(i, **style)) for i in range(len(self.steps))]
            images[0].save(
                path,
                save_all=True,
                append_images=images[1:],
                duration=round(1000 / fps),
                loop=0,
                optimize=True,
            )
        elif suffix in (".html", ".htm"):
            path.write_text(self.to_html(fps=fps, **style))
        else:
            raise ValueError(
                f"viz.Animation.save: path must end in .gif, .html or .png, got {str(path)!r}."
            )
        return path

    def to_html(self, *, fps: float = 2.0, **style: Any) -> str:
        """A self-contained HTML player: the frames as inline PNGs, play/pause and a slider."""
        frames = []
        for i in range(len(self.steps)):
            buffer = io.BytesIO()
            _image(self.frame(i, **style)).save(buffer, format="PNG", optimize=True)
            frames.append(base64.b64encode(buffer.getvalue()).decode())
        return _player(frames, [s.caption for s in self.steps], fps)

    def _repr_html_(self) -> str:
        return self.to_html()


# -- building the steps ----------------------------------------------------------------------


def animate(
    input_shape: Sequence[int],
    kernel_shape: Sequence[int],
    *,
    strides: int | Sequence[int] = 1,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: PaddingMode = "zeros",
    transpose: bool = False,
    output_padding: int | Sequence[int] = 0,
    view: View | None = None,
    values: bool | tuple[Any, Any] = False,
) -> Animation:
    """Frames of ``convjax.conv`` (or, ``transpose=True``, ``convjax.conv_transpose``).

    Args:
      input_shape: ``[*batch, *spatial, C_in]`` as the function takes ``x`` (1-d, 2-d or 3-d).
      kernel_shape: ``[*window, C_in // groups, C_out]`` (transposed: ``[*window,
        C_out // groups, C_in]``), as the function takes it.
      strides, padding, dilation, groups, padding_mode, output_padding: as the function takes
        them.
      transpose: draw ``conv_transpose``.
      view: ``"forward"`` (the default for a conv), ``"scatter"`` (the default transposed) or
        ``"conv"`` (transposed, zero padding: the equivalent stride-1 conv).
      values: True to write small integer inputs, kernel weights and the outputs in the cells,
        or ``(x, kernel)`` arrays; single input and output channel only.

    >>> anim = animate((5, 5, 1), (3, 3, 1, 1), strides=2, padding=1)
    >>> len(anim.steps), anim.steps[0].output, anim.steps[0].reads[:2]
    (9, (0, 0), [((0, 0), False), ((0, 0), False)])
    """
    op = "viz.animate"
    input_shape = check_shape(op, "input_shape", input_shape)
    kernel_shape = check_shape(op, "kernel_shape", kernel_shape)
    ndim = len(kernel_shape) - 2
    if ndim not in (1, 2, 3):
        raise ValueError(
            f"{op}: draws 1-d, 2-d and 3-d convolutions, got kernel_shape {kernel_shape} "
            f"({ndim} spatial dims; kernel_shape is [*window, C_in // groups, C_out])."
        )
    options = dict(
        strides=strides,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
    )
    view = view or ("scatter" if transpose else "forward")
    if view not in ("forward", "scatter", "conv") or (view == "forward") == transpose:
        wanted = "'scatter' or 'conv'" if transpose else "'forward'"
        raise ValueError(f"{op}: view must be {wanted} with transpose={transpose}, got {view!r}.")
    if not transpose and np.any(np.asarray(output_padding)):
        raise ValueError(
            f"{op}: output_padding needs transpose=True, got output_padding {output_padding!r}."
        )
    if transpose:
        operator = transpose_operator(
            op, input_shape, kernel_shape, output_padding=output_padding, **options
        )
        spec = operator.spec
        out_spatial = operator.input_spatial
        in_spatial = tuple(input_shape[-ndim - 1 : -1])
        out_shape = (*input_shape[: -ndim - 1], *out_spatial, kernel_shape[-2] * spec.groups)
    else:
        spec = make_spec(op, input_shape, kernel_shape, **options)
        in_spatial = tuple(input_shape[-ndim - 1 : -1])
        out_spatial = spec.output_spatial(in_spatial, kernel_shape[:ndim])
        out_shape = (*input_shape[: -ndim - 1], *out_spatial, kernel_shape[-1])
    window = tuple(kernel_shape[:ndim])
    call = _call(input_shape, kernel_shape, out_shape, transpose, output_padding, options)
    if view == "forward":
        anim = _forward(input_shape, kernel_shape, options, in_spatial, call)
    elif view == "scatter":
        anim = _scatter(spec, out_spatial, in_spatial, window, call)
    else:
        if spec.padding_mode != "zeros":
            raise ValueError(
                f"{op}: view 'conv' (zero insertion) exists for zero padding only; the "
                f"'scatter' view draws padding_mode {spec.padding_mode!r}."
            )
        anim = _zero_inserted(spec, out_spatial, in_spatial, window, call)
    if values is not False:
        anim = dataclasses.replace(anim, values=_values(op, values, input_shape, kernel_shape))
    return anim


def figure(
    input_shape: Sequence[int],
    kernel_shape: Sequence[int],
    *,
    frames: Sequence[int] | None = None,
    **options: Any,
):
    """:func:`animate`'s frames as one static matplotlib ``Figure`` (default: up to 16 frames,
    evenly spaced); ``options`` are :func:`animate`'s.

    >>> from convjax import viz
    >>> sheet = viz.figure((5, 5, 1), (3, 3, 1, 1), strides=2, frames=[0, 3])
    >>> type(sheet).__name__
    'Figure'
    """
    return animate(input_shape, kernel_shape, **options).sheet(frames)


def _forward(input_shape, kernel_shape, options, in_spatial, call) -> Animation:
    plan = index_map(input_shape, kernel_shape, **options)
    steps = tuple(
        Step(out, plan.reads(out), _positions(plan, out), f"{call}:  y[{_fmt(out)}]")
        for out in np.ndindex(*plan.output_spatial)
    )
    frame = tuple(_span(axis.position, n) for axis, n in zip(plan.axes, in_spatial, strict=True))
    kinds, source = _padded_cells(frame, in_spatial, plan.padding_mode)
    return Animation(
        "forward", steps, frame, kinds, source, in_spatial, plan.output_spatial, frozenset(), call
    )


def _scatter(spec, out_spatial, in_spatial, window, call) -> Animation:
    """The transposed conv as the adjoint of the forward map: input cell ``o`` is added into
    the cells the forward conv's output ``o`` reads."""
    plan = gather.build_index_map(spec, out_spatial, window)
    steps = tuple(
        Step(cell, plan.reads(cell), _positions(plan, cell), f"{call}:  x[{_fmt(cell)}] added in")
        for cell in np.ndindex(*in_spatial)
    )
    kept = [axis.position[:n] for axis, n in zip(plan.axes, in_spatial, strict=True)]
    frame = tuple(_span(p, n) for p, n in zip(kept, out_spatial, strict=True))
    kinds, source = _padded_cells(frame, out_spatial, spec.padding_mode)
    # The output cells past the last one any tap writes are output_padding's.
    last = [int(p.max()) if p.size else -1 for p in kept]
    marked = frozenset(
        cell for cell in kinds if any(c > r for c, r in zip(cell, last, strict=True))
    )
    return Animation(
        "scatter", steps, frame, kinds, source, tuple(out_spatial), tuple(in_spatial), marked, call
    )


def _zero_inserted(spec, out_spatial, in_spatial, window, call) -> Animation:
    """The transposed conv as a stride-1 conv of the flipped kernel over the input with
    ``s − 1`` zeros inserted between cells, padded by ``k̂ − 1 − lo`` and
    ``k̂ − 1 − hi + output_padding``: frame cell ``p`` holds input ``p // s`` where
    ``p % s == 0``.  Reads are listed per tap of the original (unflipped) kernel."""
    positions, inserted = [], []
    for i, n, k, s, (lo, _), d in zip(
        in_spatial, out_spatial, window, spec.strides, spec.padding, spec.dilation, strict=True
    ):
        # Tap t of the kernel sits at flipped tap k - 1 - t: p = o - (k̂ - 1 - lo) + (k - 1 - t)d.
        positions.append(np.arange(n)[:, None] + lo - np.arange(k)[None, :] * d)
        inserted.append((i - 1) * s + 1)

    def held(cell: Cell) -> Cell | None:  # the input cell a frame cell holds, if any
        pairs = zip(cell, inserted, spec.strides, strict=True)
        if all(0 <= c < m and c % s == 0 for c, m, s in pairs):
            return tuple(c // s for c, s in zip(cell, spec.strides, strict=True))
        return None

    steps = []
    for out in np.ndindex(*out_spatial):
        cells = _positions_from(positions, out)
        reads = [(held(c) or (0,) * len(c), held(c) is not None) for c in cells]
        steps.append(Step(out, reads, cells, f"{call}:  y[{_fmt(out)}]"))
    frame = tuple(_span(p, m) for p, m in zip(positions, inserted, strict=True))
    kinds, source = {}, {}
    for cell in itertools.product(*(range(lo, hi) for lo, hi in frame)):
        kinds[cell] = "zero" if held(cell) is None else "input"
        if held(cell) is not None:
            source[cell] = held(cell)
    return Animation(
        "conv",
        tuple(steps),
        frame,
        kinds,
        source,
        tuple(in_spatial),
        tuple(out_spatial),
        frozenset(),
        call,
    )


def _positions(plan: gather.IndexMap, out: Cell) -> tuple[Cell, ...]:
    return _positions_from([axis.position for axis in plan.axes], out)


def _positions_from(per_axis: Sequence[np.ndarray], out: Cell) -> tuple[Cell, ...]:
    """Each tap's frame cell (row-major over the window) for one output position."""
    return tuple(
        tuple(int(p) for p in cell)
        for cell in itertools.product(*(p[o] for p, o in zip(per_axis, out, strict=True)))
    )


def _span(position: np.ndarray, size: int) -> tuple[int, int]:
    """The frame along one axis: the array, and every coordinate a tap lands on."""
    if not position.size:
        return (0, size)
    return (min(int(position.min()), 0), max(int(position.max()) + 1, size))


def _padded_cells(frame, size, padding_mode) -> tuple[dict[Cell, str], dict[Cell, Cell]]:
    """Each frame cell's kind, and the array cell it holds (padding modes remapped)."""
    coords = [np.arange(lo, hi) for lo, hi in frame]
    remapped = [gather.remap(c, n, padding_mode)[0] for c, n in zip(coords, size, strict=True)]
    kinds, source = {}, {}
    for cell in itertools.product(*(range(len(c)) for c in coords)):
        at = tuple(int(coords[a][j]) for a, j in enumerate(cell))
        if all(0 <= c < n for c, n in zip(at, size, strict=True)):
            kinds[at], source[at] = "input", at
        elif padding_mode == "zeros":
            kinds[at] = "zero"
        else:
            kinds[at] = "copy"
            source[at] = tuple(int(remapped[a][j]) for a, j in enumerate(cell))
    return kinds, source


def _values(op, values, input_shape, kernel_shape) -> tuple[np.ndarray, np.ndarray]:
    """``(x, kernel)`` over the spatial dims, for one input and one output channel."""
    ndim = len(kernel_shape) - 2
    if tuple(kernel_shape[-2:]) != (1, 1) or input_shape[-1] != 1:
        raise ValueError(
            f"{op}: values are written for one input and one output channel, got input_shape "
            f"{input_shape} and kernel_shape {kernel_shape}."
        )
    spatial, window = tuple(input_shape[-ndim - 1 : -1]), tuple(kernel_shape[:ndim])
    if values is True:  # small integers, so every sum can be checked by eye
        return (
            (np.arange(math.prod(spatial)).reshape(spatial) * 7 + 3) % 4,
            np.arange(math.prod(window)).reshape(window) % 3,
        )
    x, kernel = (np.asarray(v) for v in values)
    if x.shape != spatial or kernel.shape != window:
        raise ValueError(
            f"{op}: values must be (x, kernel) of the spatial shapes {spatial} and {window}, "
            f"got {x.shape} and {kernel.shape}."
        )
    return x, kernel


def _call(input_shape, kernel_shape, out_shape, transpose, output_padding, options) -> str:
    defaults = dict(strides=1, padding="VALID", dilation=1, groups=1, padding_mode="zeros")
    shown = {k: v for k, v in options.items() if v != defaults[k] and not _is_one(v, k)}
    if transpose and np.any(np.asarray(output_padding)):
        shown["output_padding"] = output_padding
    args = "".join(f", {k}={v!r}" for k, v in shown.items())
    name = "conv_transpose" if transpose else "conv"
    shapes = f"x {tuple(input_shape)}, k {tuple(kernel_shape)} → y {tuple(out_shape)}"
    return f"convjax.{name}(x, k{args})\n{shapes}"


def _is_one(value, key) -> bool:
    return key in ("strides", "dilation") and np.all(np.asarray(value) == 1)


def _fmt(cell: Cell) -> str:
    return ", ".join(map(str, cell))


def _spread(n: int, most: int) -> list[int]:
    if n <= most:
        return list(range(n))
    return sorted({round(i * (n - 1) / (most - 1)) for i in range(most)})


# -- channels --------------------------------------------------------------------------------


def connectivity(in_channels: int, out_channels: int, groups: int = 1) -> np.ndarray:
    """``[C_out, C_in]`` booleans: which input channels each output channel reads.

    >>> connectivity(4, 2, groups=2).astype(int).tolist()
    [[1, 1, 0, 0], [0, 0, 1, 1]]
    """
    make_spec(
        "viz.connectivity",
        (1, in_channels),
        (1, in_channels // max(groups, 1), out_channels),
        groups=groups,
    )
    per_in, per_out = in_channels // groups, out_channels // groups
    group_in = np.arange(in_channels) // max(per_in, 1)
    group_out = np.arange(out_channels) // max(per_out, 1)
    return group_out[:, None] == group_in[None, :]


def channels(*counts: int, groups: int | Sequence[int] = 1, labels: Sequence[str] = ()):
    """A matplotlib ``Figure`` of which input channels each output channel reads, stage by stage:
    ``channels(16, 32, groups=4)``; a depthwise-separable conv is
    ``channels(16, 16, 32, groups=(16, 1), labels=("depthwise", "pointwise"))``.

    >>> from convjax import viz
    >>> type(viz.channels(8, 8, 16, groups=(8, 1), labels=("depthwise", "pointwise"))).__name__
    'Figure'
    """
    if len(counts) < 2:
        raise ValueError(f"viz.channels: needs at least two channel counts, got {counts!r}.")
    stages = len(counts) - 1
    groups = (groups,) * stages if isinstance(groups, int) else tuple(groups)
    if len(groups) != stages:
        raise ValueError(
            f"viz.channels: groups needs one entry per stage ({stages}), got {groups!r}."
        )
    masks = [connectivity(a, b, g) for a, b, g in zip(counts[:-1], counts[1:], groups, strict=True)]
    Figure = _matplotlib()
    tallest = max(counts)
    fig = Figure(figsize=(1.2 + 2.2 * stages, 0.6 + 0.18 * tallest))
    ax = fig.add_axes((0.02, 0.08, 0.96, 0.86))
    ax.set_axis_off()
    ys = [
        np.linspace(0, tallest - 1, n) if n > 1 else np.full(1, (tallest - 1) / 2) for n in counts
    ]
    colors = [BLUE] + [CYAN] * stages
    for stage, mask in enumerate(masks):
        for o, i in zip(*np.nonzero(mask), strict=True):
            ax.plot([stage, stage + 1], [ys[stage][i], ys[stage + 1][o]], color="#5a5a5a", lw=0.6)
        name = labels[stage] if stage < len(labels) else f"groups={groups[stage]}"
        ax.text(stage + 0.5, -1.2, name, ha="center", va="top", fontsize=9)
    for column, (n, y) in enumerate(zip(counts, ys, strict=True)):
        ax.scatter([column] * n, y, s=60, color=colors[column], edgecolor=EDGE, zorder=3)
        ax.text(column, tallest, f"{n}", ha="center", va="bottom", fontsize=9)
    ax.set_ylim(tallest + 0.8, -2.2)
    ax.set_xlim(-0.3, stages + 0.3)
    return fig


# -- drawing ---------------------------------------------------------------------------------


def _matplotlib():
    try:
        from matplotlib.figure import Figure
        from PIL import Image  # noqa: F401
    except ImportError as error:
        raise ImportError(
            'convjax.viz draws with matplotlib and Pillow: pip install "convjax[viz]".'
        ) from error
    return Figure


def _layout(frame: Sequence[tuple[int, int]]):
    """Place an N-d cell on a 2-d canvas (1-d: a strip; 2-d: a grid; 3-d: the slices along the
    first axis side by side): ``(place, height, width)`` with ``place(cell) -> (row, col)``."""
    los = [lo for lo, _ in frame]
    sizes = [hi - lo for lo, hi in frame]
    if len(frame) == 1:
        return (lambda c: (0, c[0] - los[0])), 1, sizes[0]
    if len(frame) == 2:
        return (lambda c: (c[0] - los[0], c[1] - los[1])), sizes[0], sizes[1]
    stride = sizes[2] + 1
    return (
        (lambda c: (c[1] - los[1], (c[0] - los[0]) * stride + c[2] - los[2])),
        sizes[1],
        sizes[0] * stride - 1,
    )


@dataclasses.dataclass
class _Canvas:
    """One frame's axes, in cell units (row down, col right).  Cells are collected per layer
    and drawn as one collection each (adding thousands of patches one by one is slow)."""

    ax: Any
    font: float
    layers: dict[int, list] = dataclasses.field(default_factory=dict)

    def cell(self, row, col, face, *, edge=EDGE, style="-", hatch=None, z=1):
        from matplotlib.patches import Rectangle

        patch = Rectangle(
            (col, row), 1, 1, facecolor=face, edgecolor=edge, linestyle=style, lw=0.8, hatch=hatch
        )
        if hatch is not None:  # a collection draws one hatch for all its patches
            patch.set_zorder(z)
            self.ax.add_patch(patch)
        else:
            self.layers.setdefault(z, []).append(patch)

    def flush(self) -> None:
        from matplotlib.collections import PatchCollection

        for z, patches in sorted(self.layers.items()):
            self.ax.add_collection(PatchCollection(patches, match_original=True, zorder=z))
        self.layers.clear()

    def text(self, row, col, text, *, size=1.0, color="black", **kw):
        self.ax.text(col, row, text, fontsize=self.font * size, color=color, zorder=5, **kw)


def _render(anim: Animation, frames: list[int], *, cell: float = 0.32, dpi: int = 90):
    """Draw ``frames`` of ``anim`` into one Figure: the padded frame with the kernel's shadow,
    and the grid of the other array with the current cell shadowed."""
    Figure = _matplotlib()
    place_frame, frame_h, frame_w = _layout(anim.extent)
    place_grid, grid_h, grid_w = _layout(tuple((0, n) for n in anim.grid))
    # The array read from goes first: the frame for forward and conv, the grid for scatter.
    first, second = ("grid", "frame") if anim.view == "scatter" else ("frame", "grid")
    dims = {"frame": (frame_h, frame_w), "grid": (grid_h, grid_w)}
    stacked = len(anim.extent) == 3  # 3-d slices are wide: the second array goes underneath
    if stacked:
        origin = {first: (0, 0), second: (dims[first][0] + 2, 0)}
        height = dims[first][0] + 2 + dims[second][0]
        width = max(frame_w, grid_w)
    else:
        height = max(frame_h, grid_h)
        origin = {
            first: ((height - dims[first][0]) / 2, 0),
            second: ((height - dims[second][0]) / 2, dims[first][1] + 2),
        }
        width = dims[first][1] + 2 + dims[second][1]
    # Captions are two or three monospace lines: about 0.135 cells per character.
    longest = max(len(line) for s in anim.steps for line in s.caption.splitlines())
    panel_w, panel_h = max(width + 1, 0.8 * 0.135 * longest + 1), height + 3.6
    cols = min(len(frames), 4)
    rows = -(-len(frames) // cols)
    fig = Figure(figsize=(cell * panel_w * cols, cell * panel_h * rows), dpi=dpi)
    font = 6.5 * cell / 0.32
    names = {
        "forward": {"frame": "x (padded)", "grid": "y"},
        "scatter": {"grid": "x", "frame": "y (padded)"},
        "conv": {"frame": "x, zeros inserted, padded", "grid": "y"},
    }[anim.view]
    x_values, weights = (None, None) if anim.values is None else anim.values
    for slot, index in enumerate(frames):
        step = anim.steps[index]
        ax = fig.add_axes(((slot % cols) / cols, 1 - (slot // cols + 1) / rows, 1 / cols, 1 / rows))
        ax.set_axis_off()
        ax.set_xlim(-0.5, panel_w - 0.5)
        ax.set_ylim(panel_h - 0.5, -1.5)
        ax.set_aspect("equal")
        canvas = _Canvas(ax, font)
        partial = None if anim._shown is None else anim._shown[index]

        r0, c0 = origin["frame"]
        for at, kind in anim.kinds.items():
            r, c = place_frame(at)
            r, c = r0 + r, c0 + c
            if kind == "input":
                canvas.cell(r, c, BLUE if anim.view != "scatter" else CYAN)
            elif kind == "zero":
                canvas.cell(r, c, "white", edge=DASHED, style="--")
            else:
                canvas.cell(r, c, PALE_BLUE, edge=DASHED, style="--")
                canvas.text(
                    r + 0.5,
                    c + 0.5,
                    ",".join(map(str, anim.source[at])),
                    size=0.7,
                    color="#2b5d87",
                    ha="center",
                    va="center",
                )
            if at in anim.marked:
                canvas.cell(r, c, "none", edge=DASHED, hatch="///", z=2)
            if anim.values is None or kind == "copy":
                continue
            if anim.view == "scatter":
                shown = partial[anim.source[at]] if kind == "input" else None
            else:
                shown = x_values[anim.source[at]] if kind == "input" else 0
            if shown is not None:
                canvas.text(
                    r + 0.5,
                    c + 0.5,
                    _num(shown),
                    ha="center",
                    va="center",
                    color="white" if anim.view != "scatter" else "black",
                )
        for tap, at in enumerate(step.positions):
            r, c = place_frame(at)
            r, c = r0 + r, c0 + c
            canvas.cell(r, c, SHADOW, edge="none", z=3)
            if weights is not None:
                canvas.text(
                    r + 0.95,
                    c + 0.95,
                    _num(weights.reshape(-1)[tap]),
                    size=0.75,
                    color="#ffe066",
                    ha="right",
                    va="bottom",
                )

        r0, c0 = origin["grid"]
        done = {s.output for s in anim.steps[: index + 1]}
        for at in np.ndindex(*anim.grid):
            r, c = place_grid(at)
            r, c = r0 + r, c0 + c
            if anim.view == "scatter":
                canvas.cell(r, c, BLUE if at in done else PALE_BLUE)
                if x_values is not None:
                    canvas.text(
                        r + 0.5,
                        c + 0.5,
                        _num(x_values[at]),
                        ha="center",
                        va="center",
                        color="white",
                    )
            else:
                canvas.cell(r, c, CYAN if at in done else PALE_CYAN)
                if partial is not None and at in done:
                    canvas.text(r + 0.5, c + 0.5, _num(partial[at]), ha="center", va="center")
            if at == step.output:
                canvas.cell(r, c, SHADOW, edge="none", z=3)

        for part in ("frame", "grid"):
            canvas.text(origin[part][0] - 0.2, origin[part][1], names[part], va="bottom")
        canvas.text(height + 0.6, 0, step.caption, size=0.8, va="top", family="monospace")
        canvas.flush()
    return fig


def _num(value) -> str:
    value = float(value)
    return f"{value:.0f}" if value.is_integer() else f"{value:.2g}"


def _image(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")


def _figure_png(fig, path: pathlib.Path) -> None:
    _image(fig).save(path, format="PNG", optimize=True)


def _player(frames: list[str], captions: list[str], fps: float) -> str:
    uid = f"convjax-{abs(hash(tuple(frames))) % 10**8}"
    data = json.dumps(frames)
    texts = json.dumps(captions)
    return f"""<div id="{uid}" style="font-family:sans-serif">
<img style="max-width:100%" src="data:image/png;base64,{frames[0]}">
<div><button>⏸</button> <input type="range" min="0" max="{len(frames) - 1}" value="0"
style="width:60%"> <span></span></div>
<script>(function() {{
  const root = document.getElementById("{uid}"), frames = {data}, captions = {texts};
  const img = root.querySelector("img"), button = root.querySelector("button");
  const slider = root.querySelector("input"), label = root.querySelector("span");
  let i = 0, timer = null;
  function show(k) {{ i = k; img.src = "data:image/png;base64," + frames[i]; slider.value = i;
    label.textContent = (i + 1) + " / " + frames.length; img.title = captions[i]; }}
  function play() {{ timer = setInterval(() => show((i + 1) % frames.length), {1000 / fps});
    button.textContent = "⏸"; }}
  function pause() {{ clearInterval(timer); timer = null; button.textContent = "▶"; }}
  button.onclick = () => timer ? pause() : play();
  slider.oninput = () => {{ pause(); show(+slider.value); }};
  show(0); play();
}})();</script>
<noscript>{html.escape(captions[0])}</noscript></div>"""
