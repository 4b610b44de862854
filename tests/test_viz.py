"""convjax.viz: the frames are the computation (their records reproduce convjax's results), and
the files, the command and the errors are what they say."""

import itertools
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
    expected = convjax.conv(jnp.asarray(x)[..., None], jnp.asarray(k)[..., None, None], **options)
    np.testing.assert_allclose(anim.evaluate(x, k), expected[..., 0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size, window, options, shape", configs(transposed=True))
def test_transposed_frames_compute_conv_transpose_in_both_views(size, window, options, shape):
    x, k = arrays(size, window)
    expected = convjax.conv_transpose(
        jnp.asarray(x)[..., None], jnp.asarray(k)[..., None, None], **options
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
    assert failed.stderr.startswith("convjax animate: viz.animate: groups must divide")
    assert len(failed.stderr.strip().splitlines()) == 1


def test_reads_enumerate_taps_row_major():
    anim = viz.animate((4, 4, 1), (2, 3, 1, 1))
    taps = list(itertools.product(range(2), range(3)))
    assert [p for p in anim.steps[0].positions] == taps
