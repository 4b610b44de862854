"""Importing convjax keeps XLA:CPU's scratch memory mapped between executions on glibc (see
``convjax/_src/host_memory.py``): a program with more than 32 MiB of temporaries stops faulting
its pages in on every call, and nothing changes when the user opts out or chose an allocator."""

import json
import os
import subprocess
import sys

import pytest

from convjax._src import host_memory

SCRIPT = """
import json, resource, convjax, jax, jax.numpy as jnp
from jax import lax
from convjax._src import host_memory

def f(x):
    a, b = lax.optimization_barrier((x * 2, x + 1))  # a temporary of 32 MiB and a bit
    return jnp.sum(a * b[::-1])

x = jnp.ones(((1 << 23) + 1024,), jnp.float32)
call = jax.jit(f).lower(x).compile()
temporaries = call.memory_analysis().temp_size_in_bytes
windows = []  # each thread that runs it warms its own heap once: the quietest of 8 windows
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(8):
        call(x).block_until_ready()
    windows.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 8)
faults = min(windows)
print(json.dumps([host_memory.APPLIED, temporaries, faults]))
"""


def run(**env):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=environment
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.mark.skipif(not host_memory.glibc(), reason="the setting is glibc's malloc")
def test_scratch_memory_is_not_faulted_in_again_on_every_call_unless_the_user_opts_out():
    applied, temporaries, faults = run()
    pages = temporaries / 4096
    assert applied and temporaries > 32 << 20  # above glibc's largest mmap threshold
    assert faults < 0.01 * pages, (faults, pages)
    applied, _, faults = run(CONVJAX_MALLOC="0")
    assert not applied and faults > 0.5 * pages, (faults, pages)  # glibc's default: every page


def test_nothing_changes_when_the_user_chose(monkeypatch):
    assert not host_memory.user_chose({"PATH": "/bin", "GLIBC_TUNABLES": "glibc.rtld.nns=2"})
    for chosen in (
        {"MALLOC_ARENA_MAX": "2"},
        {"MALLOC_MMAP_THRESHOLD_": "65536"},
        {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
        {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"},
        {"LD_PRELOAD": "libtcmalloc_minimal.so.4"},
    ):
        assert host_memory.user_chose(chosen), chosen
    calls = []
    monkeypatch.setattr(host_memory, "glibc", lambda: calls.append(1) or True)
    monkeypatch.setenv("CONVJAX_MALLOC", "0")
    assert not host_memory.keep_scratch_mapped() and not calls
    monkeypatch.delenv("CONVJAX_MALLOC")
    monkeypatch.setenv("MALLOC_TOP_PAD_", "0")
    assert not host_memory.keep_scratch_mapped() and not calls
    monkeypatch.delenv("MALLOC_TOP_PAD_")
    monkeypatch.setattr(host_memory, "glibc", lambda: False)
    assert not host_memory.keep_scratch_mapped()
