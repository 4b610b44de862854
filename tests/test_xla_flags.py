"""Importing convjax before JAX starts keeps YNNPACK for XLA:CPU's matrix products and
reductions only (XLA's own convolution is faster) and, on AMD CPUs with AVX-512, vectorises
XLA's loops 512 bits wide (see ``convjax/_src/xla_flags.py``); it changes nothing when the user
opts out, has chosen, or JAX already runs."""

import json
import os
import subprocess
import sys

import jaxlib
import pytest

from convjax._src import xla_flags

SCRIPT = """
import glob, json, os, convjax, jax, jax.numpy as jnp
x, k = jnp.ones((4, 56, 56, 64)), jnp.ones((3, 3, 64, 64))
conv = jax.jit(lambda x, k: convjax.conv(x, k, impl="lax")).lower(x, k).compile().as_text()
dot = jax.jit(lambda a: a @ a).lower(jnp.ones((256, 256))).compile().as_text()
total = jax.jit(lambda a: a.sum((0, 1, 2))).lower(x).compile().as_text()
ynn = ["__ynn_fusion" in text for text in (conv, dot, total)]
# A depthwise conv's taps are XLA loops: how wide did LLVM vectorise them?
x, k = jnp.ones((8, 16, 16, 96)), jnp.ones((3, 3, 1, 96))
jax.jit(lambda x, k: convjax.conv(x, k, padding=1, groups=96)).lower(x, k).compile()
ir = "".join(open(f).read() for f in glob.glob(os.environ["DUMP"] + "/*ir-with-opt.ll"))
print(json.dumps([os.environ.get("XLA_FLAGS", ""), *ynn, "<16 x float>" in ir]))
"""


def run(tmp_path, **env):
    dump = tmp_path / f"dump{len(list(tmp_path.iterdir()))}"
    flags = f"--xla_dump_to={dump}"
    environment = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | env
    environment |= {"XLA_FLAGS": flags, "DUMP": str(dump)}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=environment
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.mark.skipif(
    not jaxlib.__version__.startswith(xla_flags.MEASURED_ON), reason="jaxlib has no such option"
)
def test_the_options_take_effect_unless_the_user_opts_out(tmp_path):
    wide = xla_flags.VECTOR_WIDTH in xla_flags.options()
    flags, *ynn, wide_loops = run(tmp_path)
    assert "=".join(xla_flags.CONVOLUTIONS) in flags
    assert ynn == [False, True, True]  # convolution, matrix product, reduction
    assert wide_loops == wide and ("=".join(xla_flags.VECTOR_WIDTH) in flags) == wide
    flags, conv_ynn, _, _, wide_loops = run(tmp_path, CONVJAX_XLA_FLAGS="0")
    assert flags == f"--xla_dump_to={tmp_path / 'dump1'}" and conv_ynn and not wide_loops


def test_only_amd_cpus_with_avx512_get_wide_vectors(tmp_path):
    assert xla_flags.options(("AuthenticAMD", frozenset({"avx2", "avx512f"}))) == [
        xla_flags.CONVOLUTIONS,
        xla_flags.VECTOR_WIDTH,
    ]
    for cpu in (("AuthenticAMD", frozenset({"avx2"})), ("GenuineIntel", frozenset({"avx512f"}))):
        assert xla_flags.options(cpu) == [xla_flags.CONVOLUTIONS], cpu
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 avx512f\n\n"
        "processor\t: 1\nvendor_id\t: GenuineIntel\nflags\t\t: fpu\n"
    )
    assert xla_flags.cpu_flags(str(info)) == ("AuthenticAMD", frozenset({"fpu", "avx2", "avx512f"}))
    assert xla_flags.cpu_flags(str(tmp_path / "missing")) == ("", frozenset())


def test_nothing_changes_when_the_user_chose_or_jax_already_runs(monkeypatch):
    amd = ("AuthenticAMD", frozenset({"avx512f"}))
    monkeypatch.setattr(xla_flags, "cpu_flags", lambda: amd)
    monkeypatch.setattr(xla_flags, "backends_are_initialized", lambda: False)
    monkeypatch.setattr(xla_flags.jaxlib, "__version__", "0.10.2")
    ynn, width = ("=".join(option) for option in (xla_flags.CONVOLUTIONS, xla_flags.VECTOR_WIDTH))
    monkeypatch.setenv("XLA_FLAGS", f"--foo {xla_flags.CONVOLUTIONS[0]}=")  # the user's choice
    assert xla_flags.tune_xla_cpu() == [width]
    assert os.environ["XLA_FLAGS"] == f"--foo {xla_flags.CONVOLUTIONS[0]}= {width}"
    monkeypatch.setenv("XLA_FLAGS", "--foo")
    monkeypatch.setenv("CONVJAX_XLA_FLAGS", "0")
    assert not xla_flags.tune_xla_cpu() and os.environ["XLA_FLAGS"] == "--foo"
    monkeypatch.delenv("CONVJAX_XLA_FLAGS")
    monkeypatch.setattr(xla_flags.jaxlib, "__version__", "9.0.0")  # options XLA may not know
    assert not xla_flags.tune_xla_cpu()
    monkeypatch.setattr(xla_flags.jaxlib, "__version__", "0.10.2")
    monkeypatch.setattr(xla_flags, "backends_are_initialized", lambda: True)
    assert not xla_flags.tune_xla_cpu()
    monkeypatch.setattr(xla_flags, "backends_are_initialized", lambda: False)
    assert xla_flags.tune_xla_cpu() == [ynn, width]
    assert os.environ["XLA_FLAGS"] == f"--foo {ynn} {width}"
    assert not xla_flags.tune_xla_cpu()  # both named now
