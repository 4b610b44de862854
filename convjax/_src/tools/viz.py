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
input cell they copy, as a coordinate ``(i,j)``.  Every picture carries its legend, and its text
is sized in pixels so that it reads at the picture's own size.  When the convolution has several
channels or groups, each frame also shows which input channels each output channel reads.

Drawing needs matplotlib and Pillow (``pip install "convjax[viz]"``); they are imported inside
the functions that draw.  The figures returned are matplotlib Figures that show themselves in
Jupyter (as PNGs) without pyplot.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import html
import inspect
import io
import itertools
import json
import math
import pathlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import numpy as np

from convjax._src.checks import check_int, check_shape, input_named
from convjax._src.formulations import gather
from convjax._src.ops.conv import index_map
from convjax._src.ops.transpose import transpose_operator
from convjax._src.spec import Padding, PaddingMode, make_spec

View = Literal["forward", "scatter", "conv"]
Cell = tuple[int, ...]

BLUE, PALE_BLUE, CYAN, PALE_CYAN = "#4a8fc9", "#c9def0", "#4fd1e6", "#e4f7fb"
MIDDLE = "#8ccbe3"  # channels between two stages: an output, then an input
SHADOW = (0.08, 0.08, 0.12, 0.58)
EDGE, DASHED = "#3a3a3a", "#8a8a8a"
WEIGHT = "#ffe066"  # kernel weights, on the kernel's shadow
GROUP_COLOURS = ("#d9622b", "#3a8f3a", "#8e5ea2", "#c23b6b", "#2f6db5", "#9a7a12")
MAX_SHEET_FRAMES = 16
SHEET_WIDTH_PX = 1800  # the widest a sheet of frames gets (at 90 dpi) unless a frame is wider
MAX_FRAMES = 200  # frames drawn into one .gif or .html unless asked for more
MAX_CELLS = 4096  # cells in one drawn array (64x64): more is not a legible picture
SUFFIXES = (".gif", ".html", ".htm", ".png")


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
      padding_mode: the padding mode, named in the pictures.
      channels: ``(C of x, C of y, groups)``, drawn as a channel panel, or None for one channel
        in and out.
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
    padding_mode: str = "zeros"
    channels: tuple[int, int, int] | None = None

    def __repr__(self) -> str:  # every step's cells would run to pages
        return (
            f"Animation({'; '.join(self.call.splitlines())}: {len(self.steps)} steps, {self.view})"
        )

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

    def _outputs_at(self, frames: Iterable[int]) -> dict[int, np.ndarray]:
        """The numbers frame ``i`` writes (the output after step ``i``), for ``frames`` only:
        one pass over the steps, keeping copies where asked."""
        wanted = set(frames)
        if self.values is None or not wanted:
            return {}
        last = max(wanted)
        return {
            i: y.copy()
            for i, y in enumerate(itertools.islice(self._running(*self.values), last + 1))
            if i in wanted
        }

    def __len__(self) -> int:
        return len(self.steps)

    def frame(self, index: int, **style: Any):
        """Frame ``index`` as a matplotlib ``Figure`` (it shows itself in Jupyter).  ``style``:
        ``cell`` (inches per cell, default 0.4) and ``dpi`` (default 90)."""
        op = "viz.Animation.frame"
        index = self._index(op, "index", index)
        metrics = _metrics(op, **style)
        return _Drawing(self, metrics, [index]).figure([index])

    def sheet(self, frames: Sequence[int] | None = None, **style: Any):
        """Several frames as one matplotlib ``Figure`` (default: up to 16, evenly spaced)."""
        return self._sheet("viz.Animation.sheet", frames, style)

    def _sheet(self, op: str, frames: Sequence[int] | None, style: dict[str, Any]):
        frames = self._sheet_frames(op, frames)
        metrics = _metrics(op, **style)
        return _Drawing(self, metrics, frames).figure(frames)

    def save(
        self,
        path: str | pathlib.Path,
        *,
        fps: float = 2.0,
        frames: Sequence[int] | None = None,
        max_frames: int = MAX_FRAMES,
        progress: Callable[[int, int], None] | None = None,
        **style: Any,
    ) -> pathlib.Path:
        """Write ``path``: ``.gif`` (looping), ``.html`` (a self-contained player) or ``.png``
        (a sheet of frames); missing folders are made.

        Args:
          path: the file; its suffix picks the format.
          fps: frames per second (``.gif``, ``.html``), > 0.
          frames: the steps to draw (default: every step; ``.png``: up to 16, evenly spaced).
          max_frames: with ``frames=None``, refuse to draw more frames than this (each frame is
            drawn, which takes time): pass ``frames`` (a selection) or a larger ``max_frames``.
          progress: called as ``progress(done, total)`` after each frame is drawn.
          style: ``cell`` (inches per cell, default 0.4) and ``dpi`` (default 90).

        Everything is checked before anything is drawn.
        """
        op = "viz.Animation.save"
        path = check_path(op, path)
        fps = _check_fps(op, fps)
        _check_progress(op, progress)
        if path.suffix.lower() == ".png":
            frames = self._sheet_frames(op, frames)
        else:
            frames = self._frames(op, frames, max_frames)
        metrics = _metrics(op, **style)
        _matplotlib()  # fail before a folder is made when the drawing libraries are missing
        path.parent.mkdir(parents=True, exist_ok=True)
        drawing = _Drawing(self, metrics, frames)
        suffix = path.suffix.lower()
        if suffix == ".png":
            path.write_bytes(_png(drawing.figure(frames)))
            if progress is not None:
                progress(len(frames), len(frames))
        elif suffix == ".gif":
            images = list(drawing.images(frames, progress))
            images[0].save(
                path,
                save_all=True,
                append_images=images[1:],
                duration=max(round(1000 / fps), 20),
                loop=0,
                optimize=True,
            )
        else:
            path.write_text(self._player(drawing, frames, fps, progress))
        return path

    def to_html(
        self,
        *,
        fps: float = 2.0,
        frames: Sequence[int] | None = None,
        max_frames: int = MAX_FRAMES,
        progress: Callable[[int, int], None] | None = None,
        **style: Any,
    ) -> str:
        """A self-contained HTML player: the frames as inline PNGs, play/pause and a slider.
        Options as for :meth:`save`."""
        op = "viz.Animation.to_html"
        fps = _check_fps(op, fps)
        _check_progress(op, progress)
        frames = self._frames(op, frames, max_frames)
        drawing = _Drawing(self, _metrics(op, **style), frames)
        return self._player(drawing, frames, fps, progress)

    def _player(self, drawing, frames, fps, progress) -> str:
        encoded = []
        for image in drawing.images(frames, progress):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            encoded.append(base64.b64encode(buffer.getvalue()).decode())
        captions = [self.steps[i].caption for i in frames]
        return _player(encoded, captions, [i + 1 for i in frames], len(self.steps), fps)

    def _repr_html_(self) -> str:
        # In Jupyter a long animation shows evenly spaced frames, and says so.
        return self.to_html(frames=_spread(len(self.steps), MAX_FRAMES))

    def _index(self, op: str, name: str, index: Any) -> int:
        index = check_int(op, name, index)
        if not 0 <= index < len(self.steps):
            raise ValueError(f"{op}: {name} must be a step in [0, {len(self.steps)}), got {index}.")
        return index

    def _sheet_frames(self, op: str, frames: Sequence[int] | None) -> list[int]:
        self._some_steps(op)
        if frames is None:
            return _spread(len(self.steps), MAX_SHEET_FRAMES)
        return self._selection(op, frames)

    def _frames(self, op: str, frames: Sequence[int] | None, max_frames: int) -> list[int]:
        """The steps a .gif or .html shows: ``frames``, or every step within ``max_frames``."""
        max_frames = check_int(op, "max_frames", max_frames, minimum=1)
        self._some_steps(op)
        if frames is not None:
            return self._selection(op, frames)
        n = len(self.steps)
        if n > max_frames:
            raise ValueError(
                f"{op}: {n:,} steps is more than max_frames={max_frames:,} frames (each frame is "
                f"drawn, which takes time); pass frames=... to draw a selection (e.g. frames="
                f"range(0, {n}, {-(-n // max_frames)})) or max_frames={n} to draw every step."
            )
        return list(range(n))

    def _some_steps(self, op: str) -> None:
        if not self.steps:
            raise ValueError(f"{op}: there is nothing to draw: the animation has no steps.")

    def _selection(self, op: str, frames: Any) -> list[int]:
        if isinstance(frames, str) or not isinstance(frames, Iterable):
            raise TypeError(f"{op}: frames must be a sequence of step numbers, got {frames!r}.")
        chosen = [self._index(op, "frames", _plain(i)) for i in frames]
        if not chosen:
            raise ValueError(f"{op}: frames must name at least one step, got {frames!r}.")
        return chosen


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
    max_cells: int = MAX_CELLS,
) -> Animation:
    """Frames of ``convjax.conv`` (or, ``transpose=True``, ``convjax.conv_transpose``).

    Args:
      input_shape: ``[*batch, *spatial, C_in]`` as the function takes ``x`` (1-d, 2-d or 3-d).
      kernel_shape: ``[*window, C_in // groups, C_out]`` (transposed: ``[*window,
        C_out // groups, C_in]``), as the function takes it.
      strides, padding, dilation, groups, padding_mode, output_padding: as the function takes
        them (Python or NumPy values).
      transpose: draw ``conv_transpose``.
      view: ``"forward"`` (the default for a conv), ``"scatter"`` (the default transposed) or
        ``"conv"`` (transposed, zero padding: the equivalent stride-1 conv).
      values: True to write small integer inputs, kernel weights and the outputs in the cells,
        or ``(x, kernel)`` arrays; single input and output channel only.
      max_cells: the most cells one drawn array (padded input, output, ...) may have; more is
        refused before anything is built (a picture that large is not legible; the same rule
        shows on a few cells).

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
    transpose = _flag(op, "transpose", transpose)
    max_cells = check_int(op, "max_cells", max_cells, minimum=1)
    options = {
        "strides": _plain(strides),
        "padding": _plain(padding),
        "dilation": _plain(dilation),
        "groups": _plain(groups),
        "padding_mode": _plain(padding_mode),
    }
    output_padding = _plain(output_padding)
    view = _plain(view) or ("scatter" if transpose else "forward")
    if view not in ("forward", "scatter", "conv") or (view == "forward") == transpose:
        wanted = "'scatter' or 'conv'" if transpose else "'forward'"
        raise ValueError(f"{op}: view must be {wanted} with transpose={transpose}, got {view!r}.")
    if not transpose and np.any(np.asarray(output_padding)):
        raise ValueError(
            f"{op}: output_padding needs transpose=True, got output_padding {output_padding!r}."
        )
    values = _plain_values(op, values)
    spec, out_shape = _geometry(op, input_shape, kernel_shape, transpose, output_padding, options)
    in_spatial = tuple(input_shape[-ndim - 1 : -1])
    out_spatial = tuple(out_shape[-ndim - 1 : -1])
    window = tuple(kernel_shape[:ndim])
    if view == "conv" and spec.padding_mode != "zeros":
        raise ValueError(
            f"{op}: view 'conv' (zero insertion) exists for zero padding only; the "
            f"'scatter' view draws padding_mode {spec.padding_mode!r}."
        )
    _check_cells(op, view, spec, in_spatial, out_spatial, window, max_cells)
    if values is not None:
        values = _values(op, values, input_shape, kernel_shape)
    call = _call(input_shape, kernel_shape, out_shape, transpose, output_padding, options)
    if view == "forward":
        anim = _forward(input_shape, kernel_shape, options, in_spatial, call)
    elif view == "scatter":
        anim = _scatter(spec, out_spatial, in_spatial, window, call)
    else:
        anim = _zero_inserted(spec, out_spatial, in_spatial, window, call)
    channels = (input_shape[-1], out_shape[-1], spec.groups)
    return dataclasses.replace(
        anim,
        values=values,
        padding_mode=spec.padding_mode,
        channels=None if channels == (1, 1, 1) else channels,
    )


def _geometry(op, input_shape, kernel_shape, transpose, output_padding, options):
    """The spec the frames are built from (transposed: the forward conv's, whose adjoint is
    drawn) and the shape of ``y``, from the shapes alone."""
    ndim = len(kernel_shape) - 2
    batch = input_shape[: -ndim - 1]
    if transpose:
        with input_named("input_shape"):
            operator = transpose_operator(
                op, input_shape, kernel_shape, output_padding=output_padding, **options
            )
        spec = operator.spec
        return spec, (*batch, *operator.input_spatial, kernel_shape[-2] * spec.groups)
    with input_named("input_shape"):
        spec = make_spec(op, input_shape, kernel_shape, **options)
    out_spatial = spec.output_spatial(input_shape[-ndim - 1 : -1], kernel_shape[:ndim])
    return spec, (*batch, *out_spatial, kernel_shape[-1])


def figure(
    input_shape: Sequence[int],
    kernel_shape: Sequence[int],
    *,
    frames: Sequence[int] | None = None,
    **options: Any,
):
    """:func:`animate`'s frames as one static matplotlib ``Figure`` (default: up to 16 frames,
    evenly spaced); ``options`` are :func:`animate`'s.  In Jupyter the figure shows itself.

    >>> from convjax import viz
    >>> sheet = viz.figure((5, 5, 1), (3, 3, 1, 1), strides=2, frames=[0, 3])
    >>> type(sheet).__name__, sheet._repr_png_()[:4]
    ('Figure', b'\\x89PNG')
    """
    unknown = sorted(set(options) - set(inspect.signature(animate).parameters))
    if unknown:
        raise TypeError(
            f"viz.figure: takes animate's options and frames; unknown option(s) {unknown}."
        )
    return animate(input_shape, kernel_shape, **options)._sheet("viz.figure", frames, {})


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


def _reach(first: int, count: int, step: int, window: int, dilation: int, size: int) -> int:
    """The length of :func:`_span` from arithmetic alone: taps at ``first + o·step + t·dilation``
    for ``o < count``, ``t < window``, over an array of ``size``."""
    if count == 0 or window == 0:
        return size
    last = first + (count - 1) * step + (window - 1) * dilation
    return max(last + 1, size) - min(first, 0)


def _planned(view, spec, in_spatial, out_spatial, window) -> list[tuple[str, tuple[int, ...]]]:
    """The arrays a picture draws, named, with their sizes in cells (the frame padded), from
    the shapes alone: before any index map or step is built."""
    per_axis = zip(
        in_spatial, out_spatial, window, spec.strides, spec.padding, spec.dilation, strict=True
    )
    frame = []
    for i, o, k, s, (lo, _), d in per_axis:
        if view == "forward":  # i is x, o is y
            frame.append(_reach(-lo, o, s, k, d, i))
        elif view == "scatter":  # transposed: i is x, o is y, the forward conv's input
            frame.append(_reach(-lo, i, s, k, d, o))
        else:
            frame.append(_reach(lo - (k - 1) * d, o, 1, k, d, (i - 1) * s + 1))
    return {
        "forward": [("x, padded", tuple(frame)), ("y", tuple(out_spatial))],
        "scatter": [("y, padded", tuple(frame)), ("x", tuple(in_spatial))],
        "conv": [("x with zeros inserted, padded", tuple(frame)), ("y", tuple(out_spatial))],
    }[view]


def _check_cells(op, view, spec, in_spatial, out_spatial, window, max_cells) -> None:
    """Refuse a picture with more than ``max_cells`` cells in one array, from the shapes."""
    for name, sizes in _planned(view, spec, in_spatial, out_spatial, window):
        cells = math.prod(sizes)
        if cells > max_cells:
            raise ValueError(
                f"{op}: {name} would be drawn with {cells:,} cells ({_by(sizes)}), more than "
                f"max_cells={max_cells:,}: a picture that large is not legible (the same rule "
                f"shows on a few cells); draw a smaller case, or pass max_cells={cells} to draw "
                f"it anyway."
            )


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
    for name, array in (("x", x), ("kernel", kernel)):
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            raise TypeError(
                f"{op}: values must be real numbers (one channel's x and kernel, written in "
                f"the cells), got {name} of dtype {array.dtype}."
            )
    # One channel's numbers: the full shapes, their channel axes of size 1, are taken too.
    x = x.reshape(spatial) if x.shape == (*spatial, 1) else x
    kernel = kernel.reshape(window) if kernel.shape == (*window, 1, 1) else kernel
    if x.shape != spatial or kernel.shape != window:
        raise ValueError(
            f"{op}: values must be (x, kernel) of the spatial shapes {spatial} and {window} "
            f"(or {(*spatial, 1)} and {(*window, 1, 1)}), got {x.shape} and {kernel.shape}."
        )
    return x, kernel


# -- options as the user wrote them ----------------------------------------------------------


def _plain(value: Any) -> Any:
    """NumPy (and other) arrays and scalars as Python values: tuples, ints, floats, bools and
    strings, so that an option compares with ``==`` and prints as it was meant."""
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "__array__") and not isinstance(value, str | bytes):
        value = np.asarray(value).tolist()
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    return value


def _flag(op: str, name: str, value: Any) -> bool:
    value = _plain(value)
    if not isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be True or False, got {value!r}.")
    return value


def _plain_values(op: str, values: Any) -> bool | tuple[Any, Any] | None:
    """``values``: True (small integers), False (none: None here) or an ``(x, kernel)`` pair."""
    if isinstance(values, bool | np.bool_):
        return True if values else None
    if isinstance(values, str) or not isinstance(values, Sequence) or len(values) != 2:
        raise TypeError(
            f"{op}: values must be True, False or a pair (x, kernel) of arrays, got "
            f"{type(values).__name__} {values!r}."
        )
    return tuple(values)


def _call(input_shape, kernel_shape, out_shape, transpose, output_padding, options) -> str:
    defaults = dict(strides=1, padding="VALID", dilation=1, groups=1, padding_mode="zeros")
    shown = {k: v for k, v in options.items() if v != defaults[k] and not _is_one(v, k)}
    if transpose and np.any(np.asarray(output_padding)):
        shown["output_padding"] = output_padding
    args = "".join(f", {k}={v!r}" for k, v in shown.items())
    name = "conv_transpose" if transpose else "conv"
    shapes_ = f"x {tuple(input_shape)}, k {tuple(kernel_shape)} → y {tuple(out_shape)}"
    return f"convjax.{name}(x, k{args})\n{shapes_}"


def _is_one(value, key) -> bool:
    return key in ("strides", "dilation") and bool(np.all(np.asarray(value) == 1))


def _fmt(cell: Cell) -> str:
    return ", ".join(map(str, cell))


def _by(sizes: Sequence[int]) -> str:
    return "x".join(map(str, sizes))


def _spread(n: int, most: int) -> list[int]:
    if n <= most:
        return list(range(n))
    return sorted({round(i * (n - 1) / (most - 1)) for i in range(most)}) if most > 1 else [0]


# -- channels --------------------------------------------------------------------------------


def connectivity(in_channels: int, out_channels: int, groups: int = 1) -> np.ndarray:
    """``[C_out, C_in]`` booleans: which input channels each output channel reads.

    >>> connectivity(4, 2, groups=2).astype(int).tolist()
    [[1, 1, 0, 0], [0, 0, 1, 1]]
    """
    return _connectivity("viz.connectivity", in_channels, out_channels, groups)


def _connectivity(op: str, in_channels: Any, out_channels: Any, groups: Any) -> np.ndarray:
    in_channels = check_int(op, "in_channels", _plain(in_channels), minimum=1)
    out_channels = check_int(op, "out_channels", _plain(out_channels), minimum=1)
    groups = check_int(op, "groups", _plain(groups), minimum=1)
    make_spec(op, (1, in_channels), (1, in_channels // groups, out_channels), groups=groups)
    group_in = np.arange(in_channels) // (in_channels // groups)
    group_out = np.arange(out_channels) // (out_channels // groups)
    return group_out[:, None] == group_in[None, :]


def channels(*counts: int, groups: int | Sequence[int] = 1, labels: Sequence[str] = ()):
    """A matplotlib ``Figure`` of which input channels each output channel reads, stage by stage:
    ``channels(16, 32, groups=4)``; a depthwise-separable conv is
    ``channels(16, 16, 32, groups=(16, 1), labels=("depthwise", "pointwise"))``.  Input
    channels are blue (left), output channels cyan (right); a line joins an output channel to
    each input channel it reads, one colour per group.  In Jupyter the figure shows itself.

    >>> from convjax import viz
    >>> fig = viz.channels(8, 8, 16, groups=(8, 1), labels=("depthwise", "pointwise"))
    >>> type(fig).__name__, fig._repr_png_()[:4]
    ('Figure', b'\\x89PNG')
    """
    op = "viz.channels"
    counts = tuple(check_int(op, "counts", _plain(c), minimum=1) for c in counts)
    if len(counts) < 2:
        raise ValueError(f"{op}: needs at least two channel counts, got {counts!r}.")
    stages = len(counts) - 1
    groups = _plain(groups)
    groups = groups if isinstance(groups, tuple) else (groups,) * stages
    if len(groups) != stages:
        raise ValueError(f"{op}: groups needs one entry per stage ({stages}), got {groups!r}.")
    labels = _plain(labels)
    if isinstance(labels, str) or not isinstance(labels, tuple):
        raise TypeError(
            f"{op}: labels must be a sequence of strings, one per stage, got {labels!r}."
        )
    if len(labels) > stages or not all(isinstance(label, str) for label in labels):
        raise ValueError(
            f"{op}: labels must be at most one string per stage ({stages}), got {labels!r}."
        )
    masks = [
        _connectivity(op, a, b, g) for a, b, g in zip(counts[:-1], counts[1:], groups, strict=True)
    ]
    m = _metrics(op)
    diagram = _channel_block(m, counts, masks, _column_names(counts, labels), groups, labels)
    entries = [(dict(dot=BLUE), "input channel")]
    if stages > 1:
        entries.append((dict(dot=MIDDLE), "channel between stages"))
    entries.append((dict(dot=CYAN), "output channel"))
    grouped = any(g > 1 for g in groups)
    line = "a line: that output channel reads that input channel"
    entries.append(
        (
            dict(line=GROUP_COLOURS[0] if grouped else "#5a5a5a"),
            line + (_group_colours(max(groups)) if grouped else ""),
        )
    )
    gap = m.px(GAP_PX)
    legend = _legend(m, entries, max(diagram.width, m.px(MIN_WIDTH_PX)))
    return _paint(_column([diagram, legend], 2 * gap), m)


def _column_names(counts, labels) -> list[tuple[str, str]]:
    names = []
    for column, n in enumerate(counts):
        if column == 0:
            name = "input"
        elif column == len(counts) - 1:
            name = "output"
        else:
            before = labels[column - 1] if column - 1 < len(labels) else f"stage {column}"
            name = f"after {before}"
        names.append((name, f"{n} channel{'s' if n != 1 else ''}"))
    return names


# -- drawing: sizes, text and the figure ----------------------------------------------------
# Pictures are laid out in pixels.  Text has a fixed size in pixels (larger above 90 dpi, never
# smaller), so it reads at the picture's own size, and cells grow to hold their labels.

TEXT_PX, SMALL_PX, CODE_PX, VALUE_PX = 13.0, 11.5, 12.5, 14.0
GAP_PX, MARGIN_PX, MIN_WIDTH_PX = 10.0, 14.0, 420.0
MAX_ROW_PX = 900.0  # wider than this, the two arrays of a frame go one above the other


@dataclasses.dataclass(frozen=True)
class _Metrics:
    """One picture's sizes: ``cell`` pixels per array cell at ``dpi``; ``px`` scales the text
    sizes (given for 90 dpi) to the picture."""

    dpi: float
    cell: float

    def px(self, size: float) -> float:
        return size * max(self.dpi, 90.0) / 90.0

    def pt(self, px: float) -> float:
        return px * 72.0 / self.dpi

    @property
    def text(self) -> float:
        return self.px(TEXT_PX)

    @property
    def small(self) -> float:
        return self.px(SMALL_PX)

    @property
    def code(self) -> float:
        return self.px(CODE_PX)

    @property
    def value(self) -> float:
        return self.px(VALUE_PX)


def _metrics(op: str, cell: Any = 0.4, dpi: Any = 90, **unknown: Any) -> _Metrics:
    """The style options: ``cell`` (inches per cell, at least; cells grow to hold their
    labels) and ``dpi``."""
    if unknown:
        raise TypeError(
            f"{op}: the style options are cell (inches per cell) and dpi, got "
            f"{', '.join(sorted(unknown))}."
        )
    cell = _positive(op, "cell", cell)
    dpi = _positive(op, "dpi", dpi)
    if dpi < 30:
        raise ValueError(f"{op}: dpi must be >= 30 for legible text, got {dpi!r}.")
    return _Metrics(dpi, cell * dpi)


def _positive(op: str, name: str, value: Any) -> float:
    value = _plain(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{op}: {name} must be a number, got {value!r}.")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{op}: {name} must be a finite number > 0, got {value!r}.")
    return float(value)


def _check_progress(op: str, progress: Any) -> None:
    if progress is not None and not callable(progress):
        raise TypeError(f"{op}: progress must be None or progress(done, total), got {progress!r}.")


# The slowest frame rate drawn: a GIF frame lasts at most 655.35 s (a 16-bit count of 1/100 s).
MIN_FPS = 0.01


def _check_fps(op: str, fps: Any) -> float:
    fps = _positive(op, "fps", fps)
    if fps < MIN_FPS:
        raise ValueError(f"{op}: fps must be >= {MIN_FPS} (100 s per frame at most), got {fps:g}.")
    return fps


def check_path(op: str, path: Any, name: str = "path") -> pathlib.Path:
    """The file to write: a known suffix, not a folder, in a folder that is (or can be made);
    errors name ``op`` and the argument ``name`` (the CLI's ``--out``)."""
    if not isinstance(path, str | pathlib.PurePath):
        raise TypeError(f"{op}: {name} must be a str or a pathlib.Path, got {path!r}.")
    path = pathlib.Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise ValueError(f"{op}: {name} must end in .gif, .html or .png, got {str(path)!r}.")
    if path.is_dir():
        raise ValueError(f"{op}: {name} must name a file, got the folder {str(path)!r}.")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(
            f"{op}: {name} must be in a folder, but {str(folder)!r} (in {str(path)!r}) is a file."
        )
    return path


def _matplotlib():
    """The Figure class pictures are drawn on.  matplotlib and Pillow are optional
    dependencies: imported here, where drawing starts."""
    try:
        from matplotlib.figure import Figure  # optional dependency: drawing
        from PIL import Image  # noqa: F401  (optional dependency: drawing)
    except ImportError as error:
        raise ImportError(
            'convjax.viz draws with matplotlib and Pillow: pip install "convjax[viz]".'
        ) from error
    return _jupyter_figure(Figure)


@functools.cache
def _jupyter_figure(base: type) -> type:
    class Figure(base):
        """A matplotlib Figure that shows itself in Jupyter as a PNG.  (A Figure made without
        pyplot has no manager, and Jupyter would print its repr instead of the picture.)"""

        def _repr_png_(self) -> bytes:
            return _png(self)

    return Figure


@functools.cache
def _renderer():
    from matplotlib.backends.backend_agg import RendererAgg  # optional dependency: drawing

    return RendererAgg(1, 1, 72)  # at 72 dpi a point is a pixel


@functools.lru_cache(maxsize=8192)
def _width(text: str, px: float, mono: bool = False, bold: bool = False) -> float:
    """The width in pixels of one line of ``text`` drawn ``px`` pixels high."""
    width, _, _ = _renderer().get_text_width_height_descent(text, _font(px, mono, bold), False)
    return width


def _font(px: float, mono: bool, bold: bool):
    from matplotlib.font_manager import FontProperties  # optional dependency: drawing

    family = "DejaVu Sans Mono" if mono else "DejaVu Sans"
    return FontProperties(family=family, size=px, weight="bold" if bold else "normal")


def _line(px: float) -> float:
    """The height of a line of text ``px`` pixels high."""
    return 1.3 * px


class _Painter:
    """One figure, ``width`` × ``height`` pixels, drawn in pixel coordinates (y down).  Cells
    and lines are collected and added as a few collections of plain vertices (making thousands
    of patches one by one is slow)."""

    def __init__(self, width: float, height: float, m: _Metrics):
        Figure = _matplotlib()
        self.m = m
        self.fig = Figure(figsize=(width / m.dpi, height / m.dpi), dpi=m.dpi)
        self.ax = self.fig.add_axes((0, 0, 1, 1))
        self.ax.set_axis_off()
        self.ax.set_xlim(0, width)
        self.ax.set_ylim(height, 0)
        self.cells: dict[tuple[int, str], tuple[list, list, list]] = {}
        self.dots: list = []
        self.lines: dict[str, list] = {}

    def rect(self, x, y, w, h, face, *, edge=EDGE, style="-", hatch=None, z=1) -> None:
        if hatch is not None:  # a collection draws one hatch for all its members
            from matplotlib.patches import Rectangle  # optional dependency: drawing

            lw = self.m.pt(self.m.px(1.0))
            patch = Rectangle((x, y), w, h, facecolor=face, edgecolor=edge, lw=lw, hatch=hatch)
            patch.set_zorder(z)
            self.ax.add_patch(patch)
            return
        corners, faces, edges = self.cells.setdefault((z, style), ([], [], []))
        corners.append(((x, y), (x + w, y), (x + w, y + h), (x, y + h)))
        faces.append(face)
        edges.append(edge)

    def dot(self, x, y, r, face) -> None:
        from matplotlib.patches import Circle  # optional dependency: drawing

        lw = self.m.pt(self.m.px(1.0))
        self.dots.append(Circle((x, y), r, facecolor=face, edgecolor=EDGE, lw=lw))

    def line(self, x0, y0, x1, y1, colour) -> None:
        self.lines.setdefault(colour, []).append([(x0, y0), (x1, y1)])

    def text(
        self,
        x,
        y,
        text,
        px,
        *,
        ha="left",
        va="top",
        colour="black",
        mono=False,
        bold=False,
        outline=None,
    ) -> None:
        effects = None
        if outline is not None:
            from matplotlib import patheffects  # optional dependency: drawing

            effects = [patheffects.withStroke(linewidth=self.m.pt(2.5), foreground=outline)]
        self.ax.text(
            x,
            y,
            text,
            fontproperties=_font(self.m.pt(px), mono, bold),
            ha=ha,
            va=va,
            color=colour,
            zorder=6,
            parse_math=False,
            path_effects=effects,
        )

    def done(self):
        from matplotlib.collections import (  # optional dependency: drawing
            LineCollection,
            PatchCollection,
            PolyCollection,
        )

        lw = self.m.pt(self.m.px(1.0))
        for (z, style), (corners, faces, edges) in sorted(self.cells.items()):
            self.ax.add_collection(
                PolyCollection(
                    corners, facecolors=faces, edgecolors=edges, linestyles=style, lw=lw, zorder=z
                )
            )
        if self.dots:
            self.ax.add_collection(PatchCollection(self.dots, match_original=True, zorder=4))
        lw = self.m.pt(self.m.px(1.1))
        for colour, segments in self.lines.items():
            self.ax.add_collection(LineCollection(segments, colors=colour, lw=lw, zorder=2))
        return self.fig


@dataclasses.dataclass(frozen=True)
class _Block:
    """A rectangle of a picture, ``width`` × ``height`` pixels, drawn by ``draw(painter, x, y)``
    with its top-left corner at ``(x, y)``."""

    width: float
    height: float
    draw: Callable[[_Painter, float, float], None]


def _row(blocks: Sequence[_Block], gap: float, *, middle: bool = True) -> _Block:
    width = sum(b.width for b in blocks) + gap * (len(blocks) - 1)
    height = max(b.height for b in blocks)

    def draw(p, x, y):
        for b in blocks:
            b.draw(p, x, y + ((height - b.height) / 2 if middle else 0))
            x += b.width + gap

    return _Block(width, height, draw)


def _column(blocks: Sequence[_Block], gap: float) -> _Block:
    width = max(b.width for b in blocks)
    height = sum(b.height for b in blocks) + gap * (len(blocks) - 1)

    def draw(p, x, y):
        for b in blocks:
            b.draw(p, x, y)
            y += b.height + gap

    return _Block(width, height, draw)


def _table(blocks: Sequence[_Block], columns: int, gap: float) -> _Block:
    """``blocks`` in rows of ``columns``, each in a slot the size of the largest."""
    w, h = max(b.width for b in blocks), max(b.height for b in blocks)
    rows = -(-len(blocks) // columns)

    def draw(p, x, y):
        for k, b in enumerate(blocks):
            b.draw(p, x + (k % columns) * (w + gap), y + (k // columns) * (h + gap))

    return _Block(columns * w + (columns - 1) * gap, rows * h + (rows - 1) * gap, draw)


def _lines(lines: Sequence[str], px: float, *, mono=False, bold=False, width=0.0) -> _Block:
    widest = max([_width(line, px, mono, bold) for line in lines] + [width])

    def draw(p, x, y):
        for k, line in enumerate(lines):
            p.text(x, y + k * _line(px), line, px, mono=mono, bold=bold)

    return _Block(widest, len(lines) * _line(px), draw)


def _paint(block: _Block, m: _Metrics):
    """``block`` on a figure of its own size, with a margin."""
    margin = m.px(MARGIN_PX)
    painter = _Painter(block.width + 2 * margin, block.height + 2 * margin, m)
    block.draw(painter, margin, margin)
    return painter.done()


def _legend(m: _Metrics, entries: Sequence[tuple[dict, str]], width: float) -> _Block:
    """Swatches and what they mean, in rows that fit ``width``."""
    size, pad, row_h = m.px(18), m.px(7), max(m.px(18), _line(m.text)) + m.px(5)
    items = [
        (size + pad + _width(label, m.text) + m.px(20), swatch, label) for swatch, label in entries
    ]
    rows: list[list] = [[]]
    used = 0.0
    for item in items:
        if rows[-1] and used + item[0] > width:
            rows.append([])
            used = 0.0
        rows[-1].append(item)
        used += item[0]

    def draw(p, x, y):
        for r, row in enumerate(rows):
            cx, cy = x, y + r * row_h
            for w, swatch, label in row:
                _swatch(p, m, cx, cy + (row_h - size) / 2, size, swatch)
                p.text(cx + size + pad, cy + row_h / 2, label, m.text, va="center")
                cx += w

    widest = max(sum(item[0] for item in row) for row in rows)
    return _Block(max(widest, width), len(rows) * row_h, draw)


def _swatch(p: _Painter, m: _Metrics, x, y, size, swatch: dict) -> None:
    if "line" in swatch:  # a thin bar: the picture's lines are all channel links
        p.rect(x, y + size / 2 - m.px(1), size, m.px(2), swatch["line"], edge="none")
    elif "dot" in swatch:
        p.dot(x + size / 2, y + size / 2, m.px(5.5), swatch["dot"])
    else:
        p.rect(
            x,
            y,
            size,
            size,
            swatch["face"],
            edge=swatch.get("edge", EDGE),
            style=swatch.get("style", "-"),
            hatch=swatch.get("hatch"),
        )
        if swatch.get("shadow"):
            p.rect(x, y, size, size, SHADOW, edge="none", z=3)
        if swatch.get("mark"):  # the mark drawn on the cells, as they show it
            _weight_mark(p, m, x + size / 2, y + size / 2, swatch["mark"], "center", "center")


def _weight_mark(p: _Painter, m: _Metrics, x, y, text: str, ha: str, va: str) -> None:
    """A kernel weight written on the kernel's shadow: yellow, outlined."""
    p.text(x, y, text, m.small, ha=ha, va=va, colour=WEIGHT, bold=True, outline="black")


def _num(value) -> str:
    value = float(value) + 0.0  # no "-0"
    if value.is_integer() and abs(value) < 1e4:
        return f"{value:.0f}"
    return f"{value:.2g}".replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")


def _image(fig):
    """``fig`` drawn, as a Pillow image of at most 128 colours (plenty for flat cells and
    text, and quick to compress)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # optional dependency: drawing
    from PIL import Image  # optional dependency: drawing

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    image = Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")
    return image.quantize(128, method=Image.Quantize.FASTOCTREE)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    _image(fig).save(buffer, format="PNG")
    return buffer.getvalue()


# -- drawing: frames -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Grid:
    """An N-d array's cells on a 2-d canvas, in cell units: 1-d a strip, 2-d a grid, 3-d the
    slices along the first axis side by side, one cell apart."""

    extent: tuple[tuple[int, int], ...]

    @property
    def _sizes(self) -> list[int]:
        return [hi - lo for lo, hi in self.extent]

    @property
    def rows(self) -> int:
        return 1 if len(self.extent) == 1 else self._sizes[-2]

    @property
    def columns(self) -> int:
        sizes = self._sizes
        return sizes[0] * (sizes[2] + 1) - 1 if len(sizes) == 3 else sizes[-1]

    def place(self, cell: Cell) -> tuple[int, int]:
        at = [c - lo for c, (lo, _) in zip(cell, self.extent, strict=True)]
        if len(at) == 1:
            return 0, at[0]
        if len(at) == 2:
            return at[0], at[1]
        return at[1], at[0] * (self._sizes[2] + 1) + at[2]

    def slices(self) -> list[tuple[int, int]]:
        """3-d: each slice's first index and first column."""
        if len(self.extent) != 3:
            return []
        lo, hi = self.extent[0]
        return [(i, (i - lo) * (self._sizes[2] + 1)) for i in range(lo, hi)]


def _array_block(m: _Metrics, title: str, grid: _Grid, paint) -> _Block:
    """An array: its name, 3-d slice labels ``[i]``, and the cells ``paint(painter, at)``
    draws, with ``at(cell)`` a cell's top-left pixel."""
    c = m.cell
    label_h = _line(m.text)
    slices = grid.slices()
    slice_h = _line(m.small) if slices else 0.0
    width = max(grid.columns * c, _width(title, m.text))

    def draw(p, x, y):
        p.text(x, y, title, m.text)
        for i, column in slices:
            span = (grid.columns + 1) / len(slices) - 1
            p.text(x + (column + span / 2) * c, y + label_h, f"[{i}]", m.small, ha="center")
        top = y + label_h + slice_h

        def at(cell):
            row, column = grid.place(cell)
            return x + column * c, top + row * c

        paint(p, at)

    return _Block(width, label_h + slice_h + grid.rows * c, draw)


class _Drawing:
    """What every frame of one file or figure shares: the sizes (cells wide enough for the
    widest label drawn, titles as wide as the widest), names, legend, and the numbers each
    drawn frame writes."""

    def __init__(self, anim: Animation, m: _Metrics, frames: Sequence[int]):
        self.anim = anim
        self.outputs = anim._outputs_at(frames)
        self.m = dataclasses.replace(m, cell=_cell_px(m, anim, self.outputs))
        self.frame_grid = _Grid(anim.extent)
        self.other_grid = _Grid(tuple((0, n) for n in anim.grid))
        self.names = _array_names(anim)
        self.title_width = max(_width(_step_title(anim, i), self.m.text, bold=True) for i in frames)

    def figure(self, frames: Sequence[int]):
        m = self.m
        gap = m.px(GAP_PX)
        panels = [self._panel(i) for i in frames]
        # Up to 4 frames a row, as many as fit a screen's width (wide frames fewer: a sheet
        # scaled down to a screen makes its text too small to read).
        panel = max(p.width for p in panels) + 3 * gap
        fit = int((m.px(SHEET_WIDTH_PX) + 3 * gap) // panel)
        body = _table(panels, max(1, min(len(panels), 4, fit)), 3 * gap)
        header = _lines(self.anim.call.splitlines(), m.code, mono=True)
        width = max(body.width, header.width, m.px(MIN_WIDTH_PX))
        legend = _legend(m, _legend_entries(self.anim), width)
        return _paint(_column([header, body, legend], 1.5 * gap), m)

    def images(self, frames: Sequence[int], progress=None):
        for done, index in enumerate(frames, 1):
            yield _image(self.figure([index]))
            if progress is not None:
                progress(done, len(frames))

    def _panel(self, index: int) -> _Block:
        anim, m = self.anim, self.m
        outputs = self.outputs.get(index)
        frame = _array_block(
            m,
            self.names[0],
            self.frame_grid,
            lambda p, at: _paint_frame(p, m, anim, index, outputs, at),
        )
        other = _array_block(
            m,
            self.names[1],
            self.other_grid,
            lambda p, at: _paint_grid(p, m, anim, index, outputs, at),
        )
        first, second = (other, frame) if anim.view == "scatter" else (frame, other)
        arrays = _row([first, second], 1.5 * m.cell)
        if len(anim.extent) == 3 or arrays.width > m.px(MAX_ROW_PX):
            arrays = _column([first, second], m.px(GAP_PX))
        if anim.channels is not None:
            c_x, c_y, groups = anim.channels
            mask = _connectivity("viz.animate", c_x, c_y, groups)
            panel = _channel_block(
                m,
                (c_x, c_y),
                [mask],
                [("x", f"{c_x} channels"), ("y", f"{c_y} channels")],
                (groups,),
                (),
                title="channels",
            )
            arrays = _row([arrays, panel], 1.5 * m.cell, middle=False)
        title = _lines([_step_title(anim, index)], m.text, bold=True, width=self.title_width)
        return _column([title, arrays], m.px(GAP_PX))


def _cell_px(m: _Metrics, anim: Animation, outputs: dict[int, np.ndarray]) -> float:
    """A cell wide and tall enough for the widest label it holds, and at least ``m.cell``."""
    pad = m.px(8)
    needs = [m.cell]
    copies = {_coordinate(anim.source[at]) for at, kind in anim.kinds.items() if kind == "copy"}
    needs += [_width(text, m.small) + pad for text in copies]
    if anim.values is not None:
        x_values, weights = anim.values
        numbers = {_num(v) for v in np.unique(x_values)} | {"0"}
        for y in outputs.values():
            numbers |= {_num(v) for v in np.unique(y)}
        needs += [_width(text, m.value, bold=True) + pad for text in numbers]
        needs += [_width("×" + _num(w), m.small) + pad for w in np.unique(weights)]
        needs.append(_line(m.value) + _line(m.small) + m.px(2))
    return max(needs)


def _coordinate(cell: Cell) -> str:
    return "(" + ",".join(map(str, cell)) + ")"


def _step_title(anim: Animation, index: int) -> str:
    where = _fmt(anim.steps[index].output)
    what = {
        "forward": f"y[{where}] = Σ kernel × shaded x",
        "conv": f"y[{where}] = Σ flipped kernel × shaded cells",
        "scatter": f"x[{where}] × kernel is added into the shaded y",
    }[anim.view]
    return f"step {index + 1} of {len(anim.steps)}:  {what}"


def _array_names(anim: Animation) -> tuple[str, str]:
    """The frame's and the grid's names: padded only where the picture has padding."""
    padded = any(kind != "input" for kind in anim.kinds.values())
    mode = "zero" if anim.padding_mode == "zeros" else anim.padding_mode
    if anim.view == "forward":
        frame, other = "x" + (f", {mode}-padded" if padded else ""), "y"
    elif anim.view == "scatter":
        kinds = set(anim.kinds.values())
        frame = "y, with the padding it crops" if "zero" in kinds else "y"
        frame = f"y, with its {mode} padding" if "copy" in kinds else frame
        other = "x"
    else:
        inputs = [at for at, kind in anim.kinds.items() if kind == "input"]
        top = [max(at[a] for at in inputs) for a in range(len(anim.extent))]
        inside = [
            all(0 <= c <= t for c, t in zip(at, top, strict=True))
            for at, kind in anim.kinds.items()
            if kind == "zero"
        ]
        frame = "x" + (", zeros inserted" if any(inside) else "")
        frame += ", zero-padded" if not all(inside) else ""
        other = "y"
    if len(anim.extent) == 3:
        return f"{frame}: slices [i, :, :]", f"{other}: slices [i, :, :]"
    return frame, other


def _legend_entries(anim: Animation) -> list[tuple[dict, str]]:
    """What each colour, line and mark of ``anim``'s pictures means (only those it uses)."""
    kinds = set(anim.kinds.values())
    scatter = anim.view == "scatter"
    coordinate = _coordinate(tuple("ijk"[: len(anim.extent)]))
    entries = []
    if scatter:
        entries += [
            (dict(face=BLUE, shadow=True), "x: the input this step scatters"),
            (dict(face=BLUE), "x: input, added in"),
            (dict(face=PALE_BLUE), "x: input, still to come"),
            (dict(face=CYAN), "y: output"),
        ]
    else:
        entries.append((dict(face=BLUE), "x: input"))
    if "zero" in kinds:
        zero = {
            "forward": "zero padding",
            "conv": "a zero, inserted or padding",
            "scatter": "outside y: padding, cropped",
        }[anim.view]
        entries.append((dict(face="white", edge=DASHED, style="--"), zero))
    if "copy" in kinds:
        mode = anim.padding_mode
        copy = (
            f"outside y: {mode} padding, {coordinate} is added into y[{coordinate[1:-1]}]"
            if scatter
            else f"{mode} padding: {coordinate} is a copy of x[{coordinate[1:-1]}]"
        )
        entries.append((dict(face=PALE_BLUE, edge=DASHED, style="--"), copy))
    if anim.marked:
        entries.append((dict(face="white", edge=DASHED, hatch="///"), "output_padding: no tap"))
    shadow = {
        "forward": "kernel's shadow: what this step reads",
        "conv": "flipped kernel's shadow: what this step reads",
        "scatter": "kernel's shadow: where this step adds",
    }[anim.view]
    entries.append((dict(face=CYAN if scatter else BLUE, shadow=True), shadow))
    if "zero" in kinds and not scatter:  # the shadow greys the white padding it covers
        entries.append(
            (dict(face="white", edge=DASHED, style="--", shadow=True), "shadow on a zero")
        )
    if not scatter:
        entries += [
            (dict(face=CYAN), "y: output, written"),
            (dict(face=PALE_CYAN), "y: output, still to come"),
        ]
    if anim.values is not None:
        entries.append(
            (dict(face=BLUE, shadow=True, mark="×w"), "×w: the kernel weight on that cell")
        )
    if anim.channels is not None:
        grouped = anim.channels[2] > 1
        entries.append(
            (
                dict(line=GROUP_COLOURS[0] if grouped else "#5a5a5a"),
                "channels: a line joins an output channel to each input channel it reads"
                + (_group_colours(anim.channels[2]) if grouped else ""),
            )
        )
    return entries


def _group_colours(groups: int) -> str:
    """What the lines' colours say: one per group, in turn when there are more groups."""
    if groups <= len(GROUP_COLOURS):
        return " (a colour per group)"
    return f" (a colour per group, in turn: {len(GROUP_COLOURS)} colours)"


def _cell_text(p, m, x, y, text, colour, *, lifted: bool, small: bool = False) -> None:
    """A label in a cell: centred, or raised above a kernel weight."""
    px = m.small if small else m.value
    c = m.cell
    centre = y + (c - _line(m.small)) / 2 + m.px(1) if lifted else y + c / 2
    p.text(x + c / 2, centre, text, px, ha="center", va="center", colour=colour, bold=not small)


def _paint_frame(p, m, anim, index, outputs, at) -> None:
    """The padded array the taps land on, the kernel's shadow, and the numbers."""
    c = m.cell
    step = anim.steps[index]
    shaded = set(step.positions)
    x_values, weights = anim.values if anim.values is not None else (None, None)
    for cell, kind in anim.kinds.items():
        x, y = at(cell)
        if kind == "input":
            p.rect(x, y, c, c, CYAN if anim.view == "scatter" else BLUE)
        else:
            p.rect(x, y, c, c, "white" if kind == "zero" else PALE_BLUE, edge=DASHED, style="--")
        if cell in anim.marked:
            p.rect(x, y, c, c, "none", edge=DASHED, hatch="///", z=2)
        text, colour = _frame_label(anim, kind, cell, x_values, outputs)
        if text is not None:
            colour = "white" if cell in shaded else colour
            lifted = cell in shaded and weights is not None
            _cell_text(p, m, x, y, text, colour, lifted=lifted, small=kind == "copy")
    for tap, cell in enumerate(step.positions):
        x, y = at(cell)
        p.rect(x, y, c, c, SHADOW, edge="none", z=3)
        if weights is not None:
            weight = "×" + _num(weights.reshape(-1)[tap])
            _weight_mark(p, m, x + c - m.px(3), y + c - m.px(2), weight, "right", "bottom")


def _frame_label(anim, kind, cell, x_values, outputs) -> tuple[str | None, str]:
    if kind == "copy":
        return _coordinate(anim.source[cell]), "#1f4e79"
    if x_values is None:
        return None, "black"
    if anim.view == "scatter":
        return (_num(outputs[anim.source[cell]]), "black") if kind == "input" else (None, "black")
    if kind == "input":
        return _num(x_values[anim.source[cell]]), "white"
    return "0", "#707070"


def _paint_grid(p, m, anim, index, outputs, at) -> None:
    """The other array, one cell per step: done, to come, and this step's cell shaded."""
    c = m.cell
    step = anim.steps[index]
    done = {s.output for s in anim.steps[: index + 1]}
    x_values = anim.values[0] if anim.values is not None else None
    for cell in np.ndindex(*anim.grid):
        x, y = at(cell)
        text, colour = None, "black"
        if anim.view == "scatter":
            p.rect(x, y, c, c, BLUE if cell in done else PALE_BLUE)
            if x_values is not None:
                text, colour = _num(x_values[cell]), "white" if cell in done else "#1f4e79"
        else:
            p.rect(x, y, c, c, CYAN if cell in done else PALE_CYAN)
            if outputs is not None and cell in done:
                text = _num(outputs[cell])
        if cell == step.output:
            p.rect(x, y, c, c, SHADOW, edge="none", z=3)
            colour = "white"
        if text is not None:
            _cell_text(p, m, x, y, text, colour, lifted=False)


def _channel_block(m, counts, masks, names, groups, labels, *, title=None) -> _Block:
    """Columns of channels (input blue, output cyan), a line from each output channel to each
    input channel it reads, coloured by group; names above, groups below each stage."""
    r, pitch = m.px(5.5), m.px(17)
    title_h = _line(m.text) if title else 0.0
    head_h = _line(m.text) + _line(m.small) + m.px(4)
    head_w = [max(_width(a, m.text, bold=True), _width(b, m.small)) for a, b in names]
    stage_lines = []
    for stage, g in enumerate(groups):
        label = labels[stage] if stage < len(labels) else ""
        stage_lines.append(
            [label, f"groups={g}"] if label and "groups" not in label else [label or f"groups={g}"]
        )
    stage_w = [max(_width(t, m.small) for t in lines) for lines in stage_lines]
    spacing = max(
        [m.px(150), max(stage_w) + m.px(16)]
        + [(a + b) / 2 + m.px(16) for a, b in itertools.pairwise(head_w)]
    )
    left, right = max(head_w[0] / 2, r), max(head_w[-1] / 2, r)
    tallest = max(counts)
    body_h = (tallest - 1) * pitch + 2 * r
    stage_h = max(len(lines) for lines in stage_lines) * _line(m.small)
    width = max(left + spacing * len(groups) + right, _width(title or "", m.text))
    height = title_h + head_h + body_h + m.px(8) + stage_h

    def draw(p, x, y):
        if title:
            p.text(x, y, title, m.text)
        top = y + title_h
        xs = [x + left + k * spacing for k in range(len(counts))]
        middle = top + head_h + r + (tallest - 1) * pitch / 2
        ys = [middle + (np.arange(n) - (n - 1) / 2) * pitch for n in counts]
        for (name, count), cx in zip(names, xs, strict=True):
            p.text(cx, top, name, m.text, ha="center", bold=True)
            p.text(cx, top + _line(m.text), count, m.small, ha="center", colour="#444444")
        for stage, (mask, g) in enumerate(zip(masks, groups, strict=True)):
            per_group = mask.shape[0] // g
            for o, i in zip(*np.nonzero(mask), strict=True):
                colour = (
                    GROUP_COLOURS[(o // per_group) % len(GROUP_COLOURS)] if g > 1 else "#5a5a5a"
                )
                p.line(xs[stage], ys[stage][i], xs[stage + 1], ys[stage + 1][o], colour)
            for k, text in enumerate(stage_lines[stage]):
                p.text(
                    (xs[stage] + xs[stage + 1]) / 2,
                    top + head_h + body_h + m.px(8) + k * _line(m.small),
                    text,
                    m.small,
                    ha="center",
                )
        for k, (cx, column) in enumerate(zip(xs, ys, strict=True)):
            face = BLUE if k == 0 else CYAN if k == len(counts) - 1 else MIDDLE
            for cy in column:
                p.dot(cx, cy, r, face)

    return _Block(width, height, draw)


def _player(
    frames: list[str], captions: list[str], steps: list[int], total: int, fps: float
) -> str:
    uid = f"convjax-{abs(hash(tuple(frames))) % 10**8}"
    data, texts, numbers = json.dumps(frames), json.dumps(captions), json.dumps(steps)
    note = (
        ""
        if len(frames) == total
        else f" <small>({len(frames)} of {total} steps, evenly spaced)</small>"
    )
    return f"""<div id="{uid}" style="font-family:sans-serif">
<img style="max-width:100%" alt="{html.escape(captions[0])}"
src="data:image/png;base64,{frames[0]}">
<div><button style="min-width:4em">pause</button>
<input type="range" min="0" max="{len(frames) - 1}" value="0" style="width:60%">
<span></span>{note}</div>
<script>(function() {{
  const root = document.getElementById("{uid}"), frames = {data}, captions = {texts};
  const steps = {numbers};
  const img = root.querySelector("img"), button = root.querySelector("button");
  const slider = root.querySelector("input"), label = root.querySelector("span");
  let i = 0, timer = null;
  function show(k) {{ i = k; img.src = "data:image/png;base64," + frames[i]; slider.value = i;
    label.textContent = "step " + steps[i] + " of {total}"; img.title = captions[i];
    img.alt = captions[i]; }}
  function play() {{ timer = setInterval(() => show((i + 1) % frames.length), {1000 / fps});
    button.textContent = "pause"; }}
  function pause() {{ clearInterval(timer); timer = null; button.textContent = "play"; }}
  button.onclick = () => timer ? pause() : play();
  slider.oninput = () => {{ pause(); show(+slider.value); }};
  show(0); play();
}})();</script>
<noscript>{html.escape(captions[0])}</noscript></div>"""
