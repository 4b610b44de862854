"""convjax.viz: the frames are the computation (their records reproduce convjax's results), and
the files, the command and the errors are what they say."""

import itertools
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from PIL import Image

import convjax
from convjax import viz
from convjax._src.checks import as_array

MODES = ["zeros", "reflect", "replicate", "circular"]


def configs(transposed: bool, count: int = 12, seed: int = 0):
    """Random small configs (1-d to 3-d) that convjax accepts."""
    rng = np.random.default_rng(seed)
    found = []
    while len(found) < count:
        ndim = int(rng.integers(1, 4))
        size = tuple(int(v) for v in rng.integers(2, 7 if ndim < 3 else 4, ndim))
        window = tuple(int(v) for v in rng.integers(1, 4, ndim))
        options = dict(
            strides=tuple(int(v) for v in rng.integers(1, 4, ndim)),
            dilation=tuple(int(v) for v in rng.integers(1, 3, ndim)),
            padding=[(int(a), int(b)) for a, b in rng.integers(0, 3, (ndim, 2))],
            padding_mode=MODES[int(rng.integers(4))],
        )
        if transposed:
            limit = [max(s, d) for s, d in zip(options["strides"], options["dilation"])]
            options["output_padding"] = tuple(int(rng.integers(0, m)) for m in limit)
        try:
            call = convjax.conv_transpose if transposed else convjax.conv
            shape = jax.eval_shape(
                lambda x, k, call=call, options=options: call(x, k, **options),
                jax.ShapeDtypeStruct((*size, 1), jnp.float32),
                jax.ShapeDtypeStruct((*window, 1, 1), jnp.float32),
            ).shape
        except ValueError:
            continue
        found.append((size, window, options, shape))
    return found


def arrays(size, window, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=size), rng.normal(size=window)


@pytest.mark.parametrize("size, window, options, shape", configs(transposed=False))
def test_forward_frames_read_what_index_map_reads_and_compute_conv(size, window, options, shape):
    anim = viz.animate((*size, 1), (*window, 1, 1), **options)
    plan = convjax.index_map((*size, 1), (*window, 1, 1), **options)
    assert [s.output for s in anim.steps] == list(np.ndindex(*plan.output_spatial))
    for step in anim.steps:
        assert step.reads == plan.reads(step.output)
        for (index, valid), at in zip(step.reads, step.positions):
            kind = anim.kinds[at]  # every tap lands inside the drawn frame
            assert kind == ("input" if valid and options["padding_mode"] == "zeros" else kind)
            if valid:
                assert anim.source[at] == index
    x, k = arrays(size, window)
    expected = convjax.conv(as_array(x)[..., None], as_array(k)[..., None, None], **options)
    np.testing.assert_allclose(anim.evaluate(x, k), expected[..., 0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size, window, options, shape", configs(transposed=True))
def test_transposed_frames_compute_conv_transpose_in_both_views(size, window, options, shape):
    x, k = arrays(size, window)
    expected = convjax.conv_transpose(
        as_array(x)[..., None], as_array(k)[..., None, None], **options
    )[..., 0]
    scatter = viz.animate((*size, 1), (*window, 1, 1), transpose=True, **options)
    assert scatter.size == expected.shape and scatter.grid == size
    np.testing.assert_allclose(scatter.evaluate(x, k), expected, rtol=1e-12, atol=1e-12)
    if options["padding_mode"] != "zeros":
        with pytest.raises(ValueError, match=r"viz.animate: view 'conv' .* zero padding only"):
            viz.animate((*size, 1), (*window, 1, 1), transpose=True, view="conv", **options)
        return
    conv_view = viz.animate((*size, 1), (*window, 1, 1), transpose=True, view="conv", **options)
    assert conv_view.grid == expected.shape
    np.testing.assert_allclose(conv_view.evaluate(x, k), expected, rtol=1e-12, atol=1e-12)
    # Real cells sit on the stride grid of the zero-inserted input; every other cell is a zero.
    strides = np.broadcast_to(options["strides"], len(size))
    for at, kind in conv_view.kinds.items():
        on_grid = all(0 <= c <= (n - 1) * s and c % s == 0 for c, n, s in zip(at, size, strides))
        assert kind == ("input" if on_grid else "zero")


def test_padding_cells_name_the_cell_they_copy():
    anim = viz.animate((4, 1), (3, 1, 1), padding=2, padding_mode="reflect")
    assert [anim.source.get((p,)) for p in range(-2, 6)] == [
        (2,),
        (1,),
        (0,),
        (1,),
        (2,),
        (3,),
        (2,),
        (1,),
    ]
    assert {anim.kinds[(p,)] for p in (-2, -1, 4, 5)} == {"copy"}
    zeros = viz.animate((4, 1), (3, 1, 1), padding=2)
    assert {zeros.kinds[(p,)] for p in (-2, -1, 4, 5)} == {"zero"}


def test_output_padding_cells_no_tap_writes_are_marked():
    anim = viz.animate((2, 1), (3, 1, 1), strides=3, transpose=True, output_padding=2)
    assert anim.size == (8,)
    assert anim.marked == {(6,), (7,)}


def test_connectivity_is_where_the_convolution_depends_on_its_input():
    # One-hot inputs through the float64 reference: output o depends on input i where the
    # response to input i is non-zero (random weights are never exactly zero).
    for c_in, c_out, groups in [(4, 6, 2), (4, 8, 4), (6, 6, 1), (3, 6, 3)]:
        kernel = np.random.default_rng(0).normal(size=(1, c_in // groups, c_out))
        one_hot = np.eye(c_in)[:, None, :]  # batch of c_in inputs, one spatial cell
        response = reference.conv(one_hot, kernel, (1,), [(0, 0)], (1,), groups)[:, 0, :]
        np.testing.assert_array_equal(viz.connectivity(c_in, c_out, groups), response.T != 0)


def test_files_have_one_frame_per_step(tmp_path):
    anim = viz.animate((3, 3, 1), (2, 2, 1, 1), values=True)
    gif = anim.save(tmp_path / "a.gif")
    assert Image.open(gif).n_frames == len(anim.steps) == 4
    html = anim.save(tmp_path / "a.html").read_text()
    assert html.count("iVBOR") == len(anim.steps) + 1  # the PNGs, and the first one shown again
    assert anim._repr_html_().startswith("<div")
    sheet = Image.open(anim.save(tmp_path / "a.png"))
    assert sheet.size[0] > 100 and sheet.size[1] > 50
    with pytest.raises(ValueError, match=r"save: path must end in .gif, .html or .png, got"):
        anim.save(tmp_path / "a.jpg")
    assert viz.channels(16, 16, 32, groups=(16, 1)).axes


def test_figure_draws_3d_and_1d():
    assert viz.figure((3, 3, 3, 1), (2, 2, 2, 1, 1), padding=1, frames=[0, 5]).axes
    assert viz.figure((6, 1), (3, 1, 1), dilation=2, values=True).axes


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: viz.animate((3, 3, 3, 3, 1), (1, 1, 1, 1, 1, 1)), r"draws 1-d, 2-d and 3-d"),
        (lambda: viz.animate((5, 1), (3, 1, 1), strides=0), r"viz.animate: strides must be >= 1"),
        (lambda: viz.animate((5, 2), (3, 2, 1), values=True), r"one input and one output channel"),
        (lambda: viz.animate((5, 1), (3, 1, 1), output_padding=1), r"needs transpose=True"),
        (lambda: viz.animate((5, 1), (3, 1, 1), view="scatter"), r"view must be 'forward'"),
        (lambda: viz.animate((5, 1), (3, 1, 1), values=(np.ones(4), np.ones(3))), r"values must"),
        (lambda: viz.connectivity(4, 6, 3), r"groups must divide"),
        (  # PyTorch's layouts: the shapes to write, not a data_format animate does not take
            lambda: viz.animate((1, 1, 5, 5), (1, 1, 3, 3)),
            r"Likely: input_shape and the kernel both look like PyTorch's layouts .*: convjax's "
            r"shapes are channels-last, write them \(1, 5, 5, 1\) and \(3, 3, 1, 1\)\.$",
        ),
    ],
)
def test_errors_name_the_function_and_the_rule(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_missing_drawing_libraries_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r'pip install "convjax\[viz\]"'):
        viz.animate((3, 1), (2, 1, 1)).frame(0)


def test_command_writes_the_file_or_exits_2_with_the_message(tmp_path):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "convjax.apps.cli", "animate", *args],
            capture_output=True,
            text=True,
        )

    out = tmp_path / "t.gif"
    transposed = "--input 3 3 --kernel 3 3 --stride 2 --transpose --output-padding 1"
    done = run(*transposed.split(), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert Image.open(out).n_frames == 9
    bad = tmp_path / "bad.gif"
    grouped = "--input 5 5 --kernel 3 3 --groups 2 --channels 3 4"
    failed = run(*grouped.split(), "--out", str(bad))
    assert failed.returncode == 2 and not bad.exists()
    assert failed.stderr.startswith(
        "convjax animate: --groups 2 must divide both channel counts, got --channels 3 4; e.g. "
        "--channels 2 2."
    )
    assert len(failed.stderr.strip().splitlines()) == 1


def test_reads_enumerate_taps_row_major():
    anim = viz.animate((4, 4, 1), (2, 3, 1, 1))
    taps = list(itertools.product(range(2), range(3)))
    assert [p for p in anim.steps[0].positions] == taps


# -- pictures a learner can read -------------------------------------------------------------


def _texts(fig):
    """Every visible text of a drawn figure: ``(text, height in pixels, extent in pixels)``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    return [
        (t.get_text(), t.get_fontsize() * fig.dpi / 72, t.get_window_extent(renderer))
        for t in fig.findobj(Text)
        if t.get_visible() and t.get_text().strip()
    ]


PICTURES = {
    "numbers, zero padding": lambda: viz.animate(
        (5, 5, 1), (3, 3, 1, 1), strides=2, padding=1, values=True
    ).frame(4),
    "numbers, reflect padding": lambda: viz.animate(
        (4, 4, 1), (3, 3, 1, 1), padding=1, padding_mode="reflect", values=True
    ).frame(5),
    "3-d, circular padding": lambda: viz.animate(
        (2, 3, 3, 1), (2, 2, 2, 1, 1), padding=1, padding_mode="circular"
    ).frame(3),
    "1-d, causal": lambda: viz.animate((8, 1), (2, 1, 1), dilation=2, padding="CAUSAL").frame(5),
    "scatter, output_padding": lambda: viz.animate(
        (2, 1), (3, 1, 1), strides=3, transpose=True, output_padding=2, values=True
    ).frame(1),
    "zero insertion": lambda: viz.animate(
        (2, 2, 1), (3, 3, 1, 1), strides=2, transpose=True, view="conv", values=True
    ).frame(7),
    "groups": lambda: viz.animate((5, 5, 4), (3, 3, 2, 4), groups=2).frame(0),
    "sheet": lambda: viz.figure((5, 5, 1), (3, 3, 1, 1), strides=2, values=True),
    "channels": lambda: viz.channels(8, 8, 12, groups=(8, 1), labels=("depthwise", "pointwise")),
}


@pytest.mark.parametrize("name", PICTURES)
def test_every_picture_is_legible_at_its_own_size(name):
    """Text at least 10 px high, inside the picture, and no two texts on top of each other."""
    fig = PICTURES[name]()
    texts = _texts(fig)
    width, height = fig.canvas.get_width_height()
    for text, px, box in texts:
        assert px >= 10, (text, px)
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, text
    for (a, _, box_a), (b, _, box_b) in itertools.combinations(texts, 2):
        assert not box_a.shrunk(0.9, 0.9).overlaps(box_b.shrunk(0.9, 0.9)), (a, b)


@pytest.mark.parametrize(
    "options, meanings",
    [
        (
            dict(padding=1, values=True),
            [
                "x: input",
                "y: output, written",
                "kernel's shadow",
                "zero padding",
                "shadow on a zero",  # the grey of the padding the kernel covers
                "×w",  # the weight mark, drawn in its swatch as on the cells
                "kernel weight",
            ],
        ),
        (dict(padding=1, padding_mode="reflect"), ["(i,j) is a copy of x[i,j]"]),
        (
            dict(transpose=True, strides=2, padding=1),
            ["y: output", "outside y", "where", "x: the input this step scatters"],
        ),
        (dict(transpose=True, strides=2, view="conv"), ["a zero, inserted or padding"]),
    ],
)
def test_every_picture_has_a_legend_for_the_colours_it_uses(options, meanings):
    texts = [
        text for text, _, _ in _texts(viz.animate((3, 3, 1), (2, 2, 1, 1), **options).frame(0))
    ]
    for meaning in meanings:
        assert any(meaning in text for text in texts), (meaning, texts)


def test_copied_cells_name_a_coordinate_and_only_padded_arrays_say_padded():
    texts = [
        t
        for t, _, _ in _texts(
            viz.animate((4, 4, 1), (3, 3, 1, 1), padding=1, padding_mode="reflect").frame(0)
        )
    ]
    assert "(2,1)" in texts and not [t for t in texts if re.fullmatch(r"\d+,\d+", t)]
    assert "x, reflect-padded" in texts
    plain = [t for t, _, _ in _texts(viz.animate((5, 5, 1), (3, 3, 1, 1)).frame(0))]
    assert "x" in plain and not [t for t in plain if "padded" in t]


def test_3d_slices_are_labelled():
    texts = [t for t, _, _ in _texts(viz.animate((2, 3, 3, 1), (2, 2, 2, 1, 1)).frame(0))]
    assert {"[0]", "[1]"} <= set(texts)
    assert any("slices [i, :, :]" in t for t in texts)


def test_channel_pictures_name_their_sides_and_keep_text_off_the_nodes():
    fig = viz.channels(8, 12, groups=4)
    texts = _texts(fig)
    names = [t for t, _, _ in texts]
    assert {"input", "output", "8 channels", "12 channels", "groups=4"} <= set(names)
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)
    nodes = [np.array([int(c[i : i + 2], 16) for i in (1, 3, 5)]) for c in ("#4a8fc9", "#4fd1e6")]
    for text, _, box in texts:  # no node colour under any text
        y0, y1 = image.shape[0] - int(box.y1), image.shape[0] - int(box.y0)
        patch = image[max(y0, 0) : y1, max(int(box.x0), 0) : int(box.x1)]
        for node in nodes:
            assert not (np.abs(patch - node).sum(-1) < 30).any(), text


def test_figures_show_themselves_in_jupyter():
    formatters = pytest.importorskip("IPython.core.formatters")
    anim = viz.animate((3, 3, 1), (2, 2, 1, 1))
    for picture in [anim.frame(0), anim.sheet(), viz.figure((3, 1), (2, 1, 1)), viz.channels(4, 4)]:
        data, _ = formatters.DisplayFormatter().format(picture)
        assert data["image/png"][:4] == b"\x89PNG"


def test_groups_and_channels_are_drawn():
    grouped = viz.animate((5, 5, 4), (3, 3, 2, 4), groups=2)
    assert grouped.channels == (4, 4, 2) and viz.animate((5, 5, 1), (3, 3, 1, 1)).channels is None
    frame = grouped.frame(0)
    lines = [c for c in frame.axes[0].collections if type(c).__name__ == "LineCollection"]
    assert sum(len(c.get_segments()) for c in lines) == viz.connectivity(4, 4, 2).sum()
    assert "groups=2" in [t for t, _, _ in _texts(frame)]
    plain = viz.animate((5, 5, 4), (3, 3, 4, 4)).frame(0)  # dense: every channel pair
    lines = [c for c in plain.axes[0].collections if type(c).__name__ == "LineCollection"]
    assert sum(len(c.get_segments()) for c in lines) == 16


# -- options as NumPy values -----------------------------------------------------------------


@pytest.mark.parametrize(
    "shapes, options",
    [
        (((5, 5, 1), (3, 3, 1, 1)), dict(strides=np.array([2, 2]))),
        (((5, 5, 1), (3, 3, 1, 1)), dict(strides=np.int64(2), dilation=np.array([1, 2]))),
        (((5, 5, 1), (3, 3, 1, 1)), dict(padding=np.array([[1, 0], [0, 1]]))),
        (((5, 5, 1), (3, 3, 1, 1)), dict(padding=np.int32(1), padding_mode=np.str_("reflect"))),
        (((5, 5, 4), (3, 3, 2, 4)), dict(groups=np.int64(2))),
        (((5, 5, 1), (3, 3, 1, 1)), dict(values=np.True_, view=np.str_("forward"))),
        (
            ((2, 2, 1), (3, 3, 1, 1)),
            dict(transpose=np.True_, strides=np.array([2, 2]), output_padding=np.array([1, 0])),
        ),
    ],
)
def test_numpy_options_draw_what_python_options_draw(shapes, options):
    plain = {k: np.asarray(v).tolist() for k, v in options.items()}
    anim, expected = viz.animate(*shapes, **options), viz.animate(*shapes, **plain)
    assert anim.steps == expected.steps and anim.kinds == expected.kinds
    assert anim.call == expected.call and "array" not in anim.call
    assert anim.frame(0).axes


def test_numpy_values_everywhere_else(tmp_path):
    assert viz.channels(np.int64(8), 8, groups=np.int64(4)).axes
    assert viz.channels(8, 8, 12, groups=np.array([8, 1])).axes
    assert viz.connectivity(np.int64(4), np.int32(2), groups=np.int64(2)).shape == (2, 4)
    anim = viz.animate((3, 1), (2, 1, 1))
    gif = anim.save(tmp_path / "a.gif", fps=np.float64(4), frames=np.array([0, 1]))
    assert Image.open(gif).n_frames == 2
    assert anim.sheet(np.array([1])).axes and anim.frame(np.int64(1)).axes


# -- bounds and checks before any work -------------------------------------------------------


def test_a_picture_too_large_to_read_is_refused_before_anything_is_built():
    with pytest.raises(
        ValueError,
        match=r"viz.animate: x, padded would be drawn with 10,000 cells \(100x100\), more than "
        r"max_cells=4,096.*max_cells=10000",
    ):
        viz.animate((100, 100, 1), (1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"y, padded would be drawn with .* cells"):
        viz.animate((40, 40, 1), (3, 3, 1, 1), strides=8, transpose=True)
    assert len(viz.animate((100, 1), (3, 1, 1), max_cells=100).steps) == 98


@pytest.mark.parametrize("size, window, options, shape", configs(transposed=True, count=6, seed=3))
def test_the_bound_counts_the_cells_that_are_drawn(size, window, options, shape):
    from convjax._src.tools import viz as drawing

    for view in ("scatter", "conv") if options["padding_mode"] == "zeros" else ("scatter",):
        anim = viz.animate((*size, 1), (*window, 1, 1), transpose=True, view=view, **options)
        op = drawing.transpose_operator("t", (*size, 1), (*window, 1, 1), **options)
        planned = dict(drawing._planned(view, op.spec, size, op.input_spatial, window))
        frame = planned["y, padded" if view == "scatter" else "x with zeros inserted, padded"]
        assert frame == tuple(hi - lo for lo, hi in anim.extent)


def test_saving_checks_everything_before_drawing(tmp_path, monkeypatch):
    anim = viz.animate((40, 1), (3, 1, 1))
    from convjax._src.tools import viz as drawing

    monkeypatch.setattr(drawing, "_Drawing", None)  # drawing would fail: nothing may draw
    for fps in (0, -1, float("nan")):
        with pytest.raises(
            ValueError, match=rf"viz.Animation.save: fps must be a finite number > 0, got {fps}"
        ):
            anim.save(tmp_path / "a.gif", fps=fps)
    with pytest.raises(ValueError, match=r"viz.Animation.save: fps must be >= 0.01 .*got 0.001"):
        anim.save(tmp_path / "a.gif", fps=0.001)  # a GIF frame lasts 655 s at most
    with pytest.raises(
        ValueError,
        match=r"save: 38 steps is more than max_frames=10 frames .* frames=range\(0, 38, 4\)",
    ):
        anim.save(tmp_path / "a.gif", max_frames=10)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"save: path must be in a folder, but .*file.* is a file"):
        anim.save(tmp_path / "file" / "a.gif")
    (tmp_path / "folder.gif").mkdir()
    with pytest.raises(ValueError, match=r"save: path must name a file, got the folder"):
        anim.save(tmp_path / "folder.gif")
    with pytest.raises(TypeError, match=r"save: the style options are cell .* and dpi, got colour"):
        anim.save(tmp_path / "a.gif", colour="red")
    with pytest.raises(ValueError, match=r"frame: index must be a step in \[0, 38\), got 38"):
        anim.frame(38)
    assert not (tmp_path / "a.gif").exists()


def test_saving_makes_missing_folders_and_draws_the_frames_asked_for(tmp_path):
    anim = viz.animate((12, 1), (3, 1, 1))
    seen = []
    path = anim.save(
        tmp_path / "new" / "deeper" / "a.gif", frames=[0, 5, 9], progress=lambda *a: seen.append(a)
    )
    assert Image.open(path).n_frames == 3 and seen == [(1, 3), (2, 3), (3, 3)]
    player = anim.to_html(frames=range(0, 10, 3))
    assert player.count("iVBOR") == 5 and "4 of 10 steps, evenly spaced" in player


def test_picture_options_are_checked_by_name(tmp_path):
    for cell in (0, -1, float("nan")):
        with pytest.raises(ValueError, match=r"^viz.local_kernels: cell must be"):
            viz.local_kernels((4, 4), (3, 3), cell=cell)
    with pytest.raises(ValueError, match=r"^viz.local_kernels: the output would be empty"):
        viz.local_kernels((2, 2), (3, 3))
    anim = viz.animate((5, 1), (3, 1, 1))
    with pytest.raises(TypeError, match=r"^viz.Animation.save: progress must be None or"):
        anim.save(tmp_path / "a.gif", progress=5)
    assert not (tmp_path / "a.gif").exists()


def test_values_and_figure_options_are_checked_and_full_shapes_taken():
    with pytest.raises(TypeError, match=r"^viz.figure: .*unknown option\(s\) \['foo'\]"):
        viz.figure((5, 5, 1), (3, 3, 1, 1), foo=1)
    for x in (np.full((3, 3), "a"), np.ones((3, 3)) * 1j):
        with pytest.raises(TypeError, match=r"^viz.animate: values must be real numbers"):
            viz.animate((3, 3, 1), (2, 2, 1, 1), values=(x, np.ones((2, 2))))
    x, kernel = np.arange(9.0).reshape(3, 3), np.arange(4.0).reshape(2, 2)
    full = viz.animate((3, 3, 1), (2, 2, 1, 1), values=(x[..., None], kernel[..., None, None]))
    spatial = viz.animate((3, 3, 1), (2, 2, 1, 1), values=(x, kernel))
    for a, b in zip(full.values, spatial.values, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_sampling_picture_refuses_non_finite_offsets_or_masks_by_name():
    offsets, mask = np.zeros((1, 3, 3, 18)), np.full((1, 3, 3, 9), np.nan)
    with pytest.raises(ValueError, match=r"^viz.deform_sampling: the mask of output \(1, 1\)"):
        viz.deform_sampling((1, 5, 5, 1), (3, 3, 1, 1), offsets, mask=mask, output_position=(1, 1))


def test_a_sheet_of_wide_frames_takes_fewer_columns_and_fits_a_screen():
    fig = viz.figure(
        (4, 4, 1), (3, 3, 1, 1), strides=2, transpose=True, output_padding=1, view="conv"
    )
    width, height = fig.canvas.get_width_height()
    assert width <= 1800 and height > width  # 2 columns of 16 frames, not 4


def test_an_animation_prints_in_one_line():
    text = repr(viz.animate((5, 5, 1), (3, 3, 1, 1), strides=2))
    assert text == (
        "Animation(convjax.conv(x, k, strides=2); x (5, 5, 1), k (3, 3, 1, 1) → y (2, 2, 1): "
        "4 steps, forward)"
    )


def test_every_figure_shows_itself_in_jupyter():
    """A Figure made without pyplot shows only its repr in Jupyter unless it has _repr_png_."""
    offsets = np.zeros((1, 3, 3, 18))
    for figure in (
        viz.local_kernels((5, 5), (3, 3), padding=1, strides=2),
        viz.deform_sampling((1, 5, 5, 1), (3, 3, 1, 1), offsets, output_position=(1, 1)),
        viz.channels(4, 8, groups=2),
        viz.figure((3, 3, 1), (2, 2, 1, 1)),
    ):
        assert figure._repr_png_()[:4] == b"\x89PNG", type(figure)
