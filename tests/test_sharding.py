"""Sharded convolutions: ``tests/sharded`` on 8 simulated CPU devices, in processes of their own
(a JAX process fixes its device count when it starts, and the rest of the suite keeps one).

One test runs all of ``tests/sharded`` in one process (started once: its start is a third of
its time; the suite runs it first, beside the other worker's short tests).  On one device: what
a sharded plan says without a mesh to run it on.
"""

import os
import pathlib
import subprocess
import sys

import jax
import pytest

import convjax

HERE = pathlib.Path(__file__).parent


@pytest.mark.slow
def test_on_eight_devices():
    flags = os.environ.get("XLA_FLAGS", "")
    env = {**os.environ, "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count=8"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(HERE / "sharded"),
            "-o",
            "python_files=check_*.py",
            "-p",
            "no:xdist",
            "-q",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]


def test_halo_plan_refuses_an_unsharded_input():
    x = jax.ShapeDtypeStruct((2, 8, 8, 3), "float32")
    with pytest.raises(ValueError, match=r"halo_plan: x must be sharded over a mesh"):
        convjax.halo_plan(x, (3, 3, 3, 4))


def test_halo_plan_checks_the_convolution():
    mesh = jax.make_mesh((1,), ("rows",))
    x = jax.ShapeDtypeStruct(
        (2, 8, 8, 3), "float32", sharding=jax.NamedSharding(mesh, jax.P(None, "rows"))
    )
    with pytest.raises(ValueError, match=r"halo_plan: groups must divide the input channels"):
        convjax.halo_plan(x, (3, 3, 1, 4), groups=2)


def test_a_plan_prints_in_one_line():
    mesh = jax.make_mesh((1,), ("rows",))
    x = jax.ShapeDtypeStruct(
        (2, 8, 8, 3), "float32", sharding=jax.NamedSharding(mesh, jax.P(None, "rows"))
    )
    text = repr(convjax.halo_plan(x, (3, 3, 3, 4), padding="SAME"))
    assert (
        text.startswith("HaloPlan(0 sharded spatial axes, spec P(None") and "halo_bytes 0" in text
    )
    assert "\n" not in text and len(text) < 200
