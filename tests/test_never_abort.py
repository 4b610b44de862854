"""No valid convolution takes the process down: every public path of the strided convolutions
XLA:CPU used to abort on (and of random others) compiles, in a process of its own, so that an
abort fails this test instead of ending the run.  Nor does one get the wrong numbers XLA:CPU's
convolution gives for spans of 2**24 positions and more."""

import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import THOROUGH

import convjax
from convjax._src.checks import as_array

SCRIPT = pathlib.Path(__file__).parent / "subprocess" / "sweep_aborts.py"
RANDOM_CASES = 200 if THOROUGH else 6


@pytest.mark.slow
def test_every_public_path_compiles_without_aborting():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(RANDOM_CASES), "20261201"],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = result.stdout.splitlines()
    last = next((line for line in reversed(lines) if line.startswith("case ")), "no case started")
    assert result.returncode == 0, (
        f"the process ended with status {result.returncode} compiling {last}:\n"
        + result.stderr[-3000:]
    )
    assert lines and lines[-1].startswith("done "), result.stdout[-2000:]


HUGE = """
import sys
import jax.numpy as jnp
from flax import nnx
import convjax

x, k = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 6))
small, one = jnp.ones((1, 2, 2, 1)), jnp.ones((3, 3, 1, 1))
layer = convjax.nnx.Conv(4, 6, (3, 3), padding=10**9, rngs=nnx.Rngs(0))
calls = {
    "conv padding 1e9": lambda: convjax.conv(x, k, padding=10**9),
    "taps padding 1e9": lambda: convjax.conv(x, k, padding=10**9, impl="taps"),
    "gather padding 1e9": lambda: convjax.conv(x, k, padding=10**9, impl="gather"),
    "circular padding 1e9": lambda: convjax.conv(x, k, padding=10**9, padding_mode="circular"),
    "unfold padding 1e9": lambda: convjax.unfold(x, (3, 3), padding=10**9),
    "padding 2**62": lambda: convjax.conv(x, k, padding=2**62),
    "strides 1e30": lambda: convjax.conv(x, k, strides=10**30),
    "SAME dilation 2**62": lambda: convjax.conv(x, k, dilation=2**62, padding="SAME"),
    "transposed strides 1e9": lambda: convjax.conv_transpose(small, one, strides=10**9),
    "transposed dilation 1e9": lambda: convjax.conv_transpose(small, one, dilation=10**9),
    "module padding 1e9": lambda: layer(x),
}
for name, call in calls.items():
    print("case", name, flush=True)
    try:
        call()
    except ValueError as error:
        print("refused", name, str(error).split(":")[0], flush=True)
    else:
        sys.exit(f"{name}: accepted")
print("done", flush=True)
"""


def test_sizes_past_xla_shape_arithmetic_are_refused_without_aborting_or_hanging():
    """Paddings, strides and dilations whose sizes overflow XLA's shape arithmetic (an abort) or
    make a transposed conv's reachable sizes astronomically many (a hang) get a ValueError from
    the function called, in a process of its own, within a time limit."""
    result = subprocess.run(
        [sys.executable, "-c", HUGE], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    refused = [
        line.split()[-1] for line in result.stdout.splitlines() if line.startswith("refused")
    ]
    functions = ["conv"] * 4 + ["unfold"] + ["conv"] * 3 + ["conv_transpose"] * 2 + ["Conv"]
    assert refused == functions, result.stdout


DEFORMABLE = """
import jax, jax.numpy as jnp, numpy as np
import convjax

rng = np.random.default_rng(0)
for ndim, offset_groups in [(n, g) for n in (1, 2, 3) for g in (1, 2)]:
    shape = (2,) + (6,) * ndim
    x = jnp.array(rng.normal(size=(*shape, 4)), jnp.float32)
    kernel = jnp.array(rng.normal(size=(3,) * ndim + (2, 4)), jnp.float32)
    taps = offset_groups * 3**ndim
    offsets = jnp.array(rng.normal(size=(*shape, taps * ndim)), jnp.float32)
    mask = jnp.array(rng.uniform(size=(*shape, taps)), jnp.float32)
    options = dict(padding=1, groups=2, offset_groups=offset_groups)

    def loss(*operands):
        x, kernel, offsets, mask = operands
        return jnp.sum(convjax.deform_conv(x, kernel, offsets, mask=mask, **options) ** 2)

    print("case", ndim, offset_groups, flush=True)
    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(x, kernel, offsets, mask)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)
print("done", flush=True)
"""


@pytest.mark.slow
def test_deformable_gradients_in_float32_run():
    """The float32 gradients of deformable convolutions of a batch run to the end (XLA:CPU's
    YNNPACK reductions crashed the process on the rank-7 corner arrays a 2-d block made), in a
    process of its own."""
    result = subprocess.run(
        [sys.executable, "-c", DEFORMABLE], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, (
        f"status {result.returncode}:\n" + result.stdout[-2000:] + result.stderr[-2000:]
    )
    assert result.stdout.splitlines()[-1] == "done", result.stdout


def _indexed_conv(x, kernel, strides, dilation, low, out):
    """A 1-d convolution by its index map, reading no padding: an independent NumPy reference
    for spans too long to pad."""
    y = np.zeros((x.shape[0], out, kernel.shape[-1]))
    for o in range(out):
        for t in range(kernel.shape[0]):
            i = o * strides + t * dilation - low
            if 0 <= i < x.shape[1]:
                y[:, o] += x[:, i] @ kernel[t]
    return y


@pytest.mark.parametrize("impl", ["lax", "auto", "planes", "gather"])
def test_spans_xla_miscomputes_are_computed_right(impl):
    # XLA:CPU's own float32 convolution returns 0 for the last output here (not 11).
    d = 2**24 - 2
    x = np.arange(1.0, 7.0).reshape(1, 3, 2)
    kernel = np.ones((2, 2, 1))
    options = dict(dilation=d, padding=((d, d),), strides=2**23)
    x32, kernel32 = as_array(x, jnp.float32), as_array(kernel, jnp.float32)
    y = convjax.conv(x32, kernel32, impl=impl, **options)
    np.testing.assert_array_equal(y, _indexed_conv(x, kernel, 2**23, d, d, 3))
    grad = jax.grad(lambda x: convjax.conv(x, kernel32, impl=impl, **options).sum())
    # Outputs 0 and 2 read inputs 0 and 2 once each, through a kernel of ones.
    np.testing.assert_array_equal(grad(x32), [[[1.0, 1.0], [0.0, 0.0], [1.0, 1.0]]])


@pytest.mark.parametrize("impl", ["lax", "auto", "planes"])
def test_spans_xla_miscomputes_on_a_later_axis_are_computed_right(impl):
    d = 2**24 - 2
    x = np.arange(1.0, 13.0).reshape(1, 2, 3, 2)
    kernel = np.ones((1, 2, 2, 1))
    options = dict(dilation=(1, d), padding=((0, 0), (d, d)), strides=(1, 2**23))
    y = convjax.conv(as_array(x, jnp.float32), as_array(kernel, jnp.float32), impl=impl, **options)
    rows = [_indexed_conv(x[:, r], kernel[0], 2**23, d, d, 3) for r in range(2)]
    np.testing.assert_array_equal(y, np.stack(rows, axis=1))
