"""Importing convjax before JAX starts keeps YNNPACK for XLA:CPU's matrix products and
reductions only (XLA's own convolution is faster, see ``convjax/_src/xla_flags.py``), and
changes nothing when the user opts out, has chosen, or JAX already runs."""

import json
import os
import subprocess
import sys

import jaxlib
import pytest

from convjax._src import xla_flags

SCRIPT = """
import json, os, convjax, jax, jax.numpy as jnp
x, k = jnp.ones((4, 56, 56, 64)), jnp.ones((3, 3, 64, 64))
conv = jax.jit(lambda x, k: convjax.conv(x, k, impl="lax")).lower(x, k).compile().as_text()
dot = jax.jit(lambda a: a @ a).lower(jnp.ones((256, 256))).compile().as_text()
total = jax.jit(lambda a: a.sum((0, 1, 2))).lower(x).compile().as_text()
ynn = ["__ynn_fusion" in text for text in (conv, dot, total)]
print(json.dumps([os.environ.get("XLA_FLAGS", ""), *ynn]))
"""


def run(**env):
    environment = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | env
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=environment
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.mark.skipif(
    not jaxlib.__version__.startswith(xla_flags.MEASURED_ON), reason="jaxlib has no such option"
)
def test_convolutions_leave_ynnpack_and_products_stay_unless_the_user_opts_out():
    flags, *ynn = run()
    assert f"{xla_flags.OPTION}={xla_flags.VALUE}" in flags
    assert ynn == [False, True, True]  # convolution, matrix product, reduction
    flags, conv_ynn, _, _ = run(CONVJAX_XLA_FLAGS="0")
    assert xla_flags.OPTION not in flags and conv_ynn


def test_nothing_changes_when_the_user_chose_or_jax_already_runs(monkeypatch):
    monkeypatch.setattr(xla_flags, "backends_are_initialized", lambda: False)
    monkeypatch.setattr(xla_flags.jaxlib, "__version__", "0.10.2")
    monkeypatch.setenv("XLA_FLAGS", f"--foo {xla_flags.OPTION}=")
    assert not xla_flags.prefer_xla_convolutions()
    assert os.environ["XLA_FLAGS"] == f"--foo {xla_flags.OPTION}="
    monkeypatch.setenv("XLA_FLAGS", "--foo")
    monkeypatch.setenv("CONVJAX_XLA_FLAGS", "0")
    assert not xla_flags.prefer_xla_convolutions() and os.environ["XLA_FLAGS"] == "--foo"
    monkeypatch.delenv("CONVJAX_XLA_FLAGS")
    monkeypatch.setattr(xla_flags.jaxlib, "__version__", "9.0.0")  # an option XLA may not know
    assert not xla_flags.prefer_xla_convolutions()
    monkeypatch.setattr(xla_flags.jaxlib, "__version__", "0.10.2")
    monkeypatch.setattr(xla_flags, "backends_are_initialized", lambda: True)
    assert not xla_flags.prefer_xla_convolutions()
    monkeypatch.setattr(xla_flags, "backends_are_initialized", lambda: False)
    assert xla_flags.prefer_xla_convolutions()
    assert os.environ["XLA_FLAGS"] == f"--foo {xla_flags.OPTION}={xla_flags.VALUE}"
