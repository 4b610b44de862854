"""explain_padding: each convention's pads are what that library really does (Flax and, where
installed, PyTorch run on the same input), and the table flags the silent porting traps."""

import functools
import itertools
import signal
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

import convjax
from convjax._src.checks import as_array

CASES = [
    (size, k, s, d)
    for size, k, s, d in itertools.product((7, 8, 224), (1, 2, 3, 4, 5), (1, 2, 3), (1, 2))
    if (k - 1) * d + 1 <= size
]
# Inputs shorter than the dilated window: 'valid' (and k // 2 under dilation) would be empty.
SHORT_CASES = [(2, 5, 1, 1), (3, 3, 2, 3), (4, 3, 1, 3), (1, 2, 1, 1), (5, 4, 3, 2)]


def run_convjax(x, kernel, pads, s, d):
    return convjax.conv(x, kernel, strides=s, padding=list(pads), dilation=d)


@pytest.mark.parametrize("size, k, s, d", CASES[::7])
def test_flax_same_is_what_flax_runs(size, k, s, d):
    x = as_array(np.random.default_rng(0).normal(size=(1, size, 2)), jnp.float32)
    layer = nnx.Conv(
        2, 3, (k,), strides=s, kernel_dilation=d, padding="SAME", use_bias=False, rngs=nnx.Rngs(0)
    )
    pads = (
        convjax.explain_padding(size, k, strides=s, dilation=d).find("Flax", 'padding="SAME"').pads
    )
    np.testing.assert_allclose(
        layer(x), run_convjax(x, layer.kernel[...], pads, s, d), rtol=1e-5, atol=1e-5
    )


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("size, k, s, d", CASES[::7] + SHORT_CASES)
def test_pytorch_conventions_are_what_pytorch_runs(size, k, s, d):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, size, 2)).astype(np.float32)
    w = rng.normal(size=(3, 2, k)).astype(np.float32)  # [C_out, C_in, k]
    explained = convjax.explain_padding(size, k, strides=s, dilation=d)
    for spelling, torch_padding in [
        ("padding=k // 2", k // 2),
        ("padding=d * (k - 1) // 2", d * (k - 1) // 2),
        ("padding='same'", "same"),
        ("padding='valid'", "valid"),
    ]:
        convention = explained.find("PyTorch", spelling)
        call = lambda p=torch_padding: torch.nn.functional.conv1d(  # noqa: E731
            torch.from_numpy(x.transpose(0, 2, 1)),
            torch.from_numpy(w),
            stride=s,
            padding=p,
            dilation=d,
        )
        if convention.pads is None:  # refused: PyTorch raises too
            assert convention.output is None and convention.note.startswith("refused: ")
            with pytest.raises(RuntimeError, match=r"strided|Kernel size can't be greater"):
                call()
            continue
        expected = call().numpy().transpose(0, 2, 1)
        got = run_convjax(as_array(x), as_array(w.transpose(2, 1, 0)), convention.pads, s, d)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=spelling)


def test_the_classic_stride_2_trap_is_flagged():
    explained = convjax.explain_padding(224, 3, strides=2)
    torch_row = explained.find("PyTorch", "padding=k // 2")
    assert torch_row.pads == ((1, 1),) and torch_row.output == (112,)
    assert explained.find("Flax", 'padding="SAME"').pads == ((0, 1),)
    line = next(line for line in str(explained).splitlines() if "k // 2" in line)
    assert "same size as 'SAME', placed differently" in line


def test_dilation_ignored_by_k_over_2_is_said():
    explained = convjax.explain_padding(16, 3, dilation=2)
    assert explained.find("PyTorch", "padding=k // 2").output == (14,)
    assert "ignores the dilation" in explained.find("PyTorch", "padding=k // 2").note
    assert explained.find("convjax", 'padding="HALF"').output == (16,)


def test_n_d_and_errors():
    explained = convjax.explain_padding((7, 8, 9), 3, strides=(1, 2, 3))
    assert explained.find("convjax", 'padding="SAME"').output == (7, 4, 3)
    assert explained.find("TensorFlow / Keras", "padding='causal'").pads is None
    with pytest.raises(ValueError, match=r"explain_padding: kernel_size needs one entry per"):
        convjax.explain_padding((7, 8), (3, 3, 3))
    with pytest.raises(ValueError, match=r"explain_padding: strides must be >= 1"):
        convjax.explain_padding(7, 3, strides=0)
    with pytest.raises(TypeError, match=r"explain_padding: input_size"):
        convjax.explain_padding(7.5, 3)


def test_an_empty_output_is_refused_with_a_note():
    explained = convjax.explain_padding(2, 5)
    for library, spelling in [("convjax", 'padding="VALID"'), ("PyTorch", "padding='valid'")]:
        row = explained.find(library, spelling)
        assert row.pads is None and row.output is None
        assert row.note == (
            "refused: the output would be empty (dim 0: padded input 2 + 0 + 0 = 2 < dilated "
            "window 5)"
        )
    row = convjax.explain_padding((16, 3), 3, dilation=(1, 3)).find("PyTorch", "padding=k // 2")
    assert row.pads is None and "dim 1: padded input 3 + 1 + 1 = 5 < dilated window 7" in row.note
    assert "ignores the dilation" in row.note
    line = next(line for line in str(explained).splitlines() if "'valid'" in line)
    assert line.split()[2:4] == ["refused", "-"]


CONVJAX_PADDINGS = {
    f'padding="{name}"': name for name in ("VALID", "SAME", "HALF", "FULL", "CAUSAL")
}


@st.composite
def geometries(draw):
    ndim = draw(st.integers(1, 2))
    return dict(
        input_size=tuple(draw(st.integers(1, 12)) for _ in range(ndim)),
        kernel_size=tuple(draw(st.integers(1, 6)) for _ in range(ndim)),
        strides=tuple(draw(st.integers(1, 4)) for _ in range(ndim)),
        dilation=tuple(draw(st.integers(1, 3)) for _ in range(ndim)),
    )


@given(geometry=geometries())
def test_no_row_is_empty_and_convjax_rows_are_what_conv_computes(geometry):
    explained = convjax.explain_padding(**geometry)
    options = dict(strides=geometry["strides"], dilation=geometry["dilation"])
    x = jax.ShapeDtypeStruct((2, *geometry["input_size"], 3), jnp.float32)
    kernel = jax.ShapeDtypeStruct((*geometry["kernel_size"], 3, 4), jnp.float32)
    for row in explained.conventions:
        assert (row.pads is None) == (row.output is None), row
        if row.output is not None:
            assert all(o >= 1 for o in row.output), row
            # The row's pads, given to convjax, give the row's output size.
            pads = list(row.pads)
            got = convjax.output_shape(x.shape, kernel.shape, padding=pads, **options)
            assert got == (2, *row.output, 4), row
        if row.library != "convjax":
            continue
        name = CONVJAX_PADDINGS[row.spelling]
        if row.pads is None:  # refused here, so conv must refuse it as well
            with pytest.raises(ValueError, match=r"the output would be empty"):
                convjax.output_shape(x.shape, kernel.shape, padding=name, **options)
            continue
        run = functools.partial(convjax.conv, padding=name, **options)
        got = jax.eval_shape(run, x, kernel)
        assert got.shape == (2, *row.output, 4), row
        assert convjax.make_spec("t", x.shape, kernel.shape, padding=name, **options).padding == (
            row.pads
        )


def test_an_xdist_worker_ignores_sigint_once_its_tests_are_done():
    """The property above installs hypothesis' gc callback.  A worker still collecting garbage
    when execnet interrupts it (5 s after the controller says exit) printed a KeyboardInterrupt
    traceback from that callback at the end of a passing run; conftest's sessionfinish hook
    makes a finished worker ignore SIGINT, and leaves the controller (and plain runs) alone."""
    import conftest

    before = signal.getsignal(signal.SIGINT)
    try:
        conftest.pytest_sessionfinish(SimpleNamespace(config=SimpleNamespace()))
        assert signal.getsignal(signal.SIGINT) is before
        conftest.pytest_sessionfinish(SimpleNamespace(config=SimpleNamespace(workerinput={})))
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_find_names_what_it_has_when_asked_for_what_it_lacks():
    table = convjax.explain_padding(5, 3)
    with pytest.raises(ValueError, match=r"^PaddingExplanation.find: library must be one of"):
        table.find("Foo", "bar")
    with pytest.raises(ValueError, match=r"PyTorch has no convention 'bar'; its spellings are"):
        table.find("PyTorch", "bar")
