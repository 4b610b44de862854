"""explain_padding: each convention's pads are what that library really does (Flax and, where
installed, PyTorch run on the same input), and the table flags the silent porting traps."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import convjax

CASES = [
    (size, k, s, d)
    for size, k, s, d in itertools.product((7, 8, 224), (1, 2, 3, 4, 5), (1, 2, 3), (1, 2))
    if (k - 1) * d + 1 <= size
]


def run_convjax(x, kernel, pads, s, d):
    return convjax.conv(x, kernel, strides=s, padding=list(pads), dilation=d)


@pytest.mark.parametrize("size, k, s, d", CASES[::7])
def test_flax_same_is_what_flax_runs(size, k, s, d):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, size, 2)), jnp.float32)
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
@pytest.mark.parametrize("size, k, s, d", CASES[::7])
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
        if convention.pads is None:
            with pytest.raises(RuntimeError, match="strided"):
                call()
            continue
        if convention.output[0] < 1:
            continue
        expected = call().numpy().transpose(0, 2, 1)
        got = run_convjax(jnp.asarray(x), jnp.asarray(w.transpose(2, 1, 0)), convention.pads, s, d)
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
