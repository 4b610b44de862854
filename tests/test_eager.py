"""An eager call (outside any jit, as in a notebook) compiles few programs: the operation runs as
one jitted program after its checks, not op by op (deform_conv and deconvolve compiled 65-70
programs, ~1.2 s, on a first call), and NumPy operands come in without a program of their own
(``jnp.asarray`` and ``jnp.array`` of a NumPy array compile one per shape on jax 0.10; a
``jax.device_put`` none).

Each case uses shapes no other test uses, so that its programs are compiled here, not found in
the process's caches."""

import logging
import re

import jax
import numpy as np
import pytest
from ops import OPS

import convjax

# deformable_conv, the most: its offset conv, the slices and sigmoid between, deform_conv.
MOST_PROGRAMS = 10


def compiled(fn, caplog):
    """The names of the programs JAX compiles while running ``fn()``."""
    caplog.clear()
    with caplog.at_level(logging.WARNING), jax.log_compiles():
        jax.block_until_ready(fn())
    return re.findall(r"Compiling (\S+)", caplog.text)


@pytest.mark.parametrize("op", OPS, ids=str)
def test_an_eager_call_compiles_a_few_programs_and_none_for_numpy_operands(op, caplog):
    channels = 5
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (1, 13, 11, channels)).astype(np.float32)
    operands = [np.asarray(a) for a in op.arrays(channels, np.float32)]
    names = compiled(lambda: op(x, *operands), caplog)
    assert names, "nothing compiled: the shapes were already cached, the test proves nothing"
    assert len(names) <= MOST_PROGRAMS, names
    assert not {"jit(stage)", "jit(convert_element_type)"} & set(names), names


@pytest.mark.parametrize(
    "call",
    [
        lambda: convjax.unfold(np.ones((1, 13, 11, 5), np.float32), (3, 3)),
        lambda: convjax.separable_factors(np.ones((3, 5, 13), np.float32), rank=1),
    ],
    ids=["unfold", "separable_factors"],
)
def test_shape_functions_compile_one_program(call, caplog):
    names = compiled(call, caplog)
    assert len(names) == 1, names
