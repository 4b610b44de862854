"""XLA:CPU's scratch memory kept mapped between executions (glibc's ``malloc``, set on import).

XLA:CPU allocates one buffer for all of a compiled program's temporaries on every execution and
frees it afterwards.  glibc serves an allocation of more than 32 MiB (its largest ``mmap``
threshold) with a fresh ``mmap`` and returns it with ``munmap`` when freed, and frees whole
per-thread heaps the same way, so every page of that buffer is faulted in again on every call:
a training step of a small CNN writes tens of MiB of activations and their gradients, ~10,000
page faults of about a microsecond each.  Measured on a 2-core x86 VM (batch 16, the reference
models of ``convjax bench --models``): MobileNetV2's step 21.3 → 10.6 ms, ConvNeXt's 21.8 →
13.7, ResNeXt's 22.7 → 16.9, from ~9,000-12,000 minor faults per step to none, and no model
slower.  PyTorch's CPU caching is the same idea: memory a step freed is reused by the next.

So, on Linux with glibc, convjax asks ``malloc`` (``mallopt``) to serve large blocks from its
heaps rather than ``mmap`` (``M_MMAP_MAX = 0``), to keep up to ``TRIM_THRESHOLD`` of free memory
at a heap's top rather than returning it (``M_TRIM_THRESHOLD``), and to grow and keep heaps by
``TOP_PAD`` (``M_TOP_PAD``, which also keeps an emptied per-thread heap).  The cost: memory the
process freed stays with the process (up to ``TRIM_THRESHOLD`` at a heap's top, and any free
block between live ones) for the next allocation to reuse, where ``mmap`` would have returned
it to the system.

Nothing is changed when ``CONVJAX_MALLOC=0`` is set, when the user chose for themselves
(``MALLOC_*`` variables, a ``glibc.malloc`` tunable in ``GLIBC_TUNABLES``, or another allocator
in ``LD_PRELOAD``), or where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4  # glibc's malloc.h
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 64 << 20
SETTINGS = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))


def user_chose(environ=os.environ) -> bool:
    """Whether the environment already tunes or replaces ``malloc``."""
    return (
        any(name.startswith("MALLOC_") for name in environ)
        or "glibc.malloc" in environ.get("GLIBC_TUNABLES", "")
        or "alloc" in environ.get("LD_PRELOAD", "")  # jemalloc, tcmalloc, mimalloc
    )


def glibc() -> bool:
    """Whether the C library is glibc (it names itself ``glibc 2.x``)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # not a POSIX system, or not glibc
        return False


def keep_scratch_mapped() -> bool:
    """Set the module docstring's ``mallopt`` values where it says so; whether it did."""
    if os.environ.get("CONVJAX_MALLOC", "1") == "0" or user_chose():
        return False
    if not glibc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - a glibc without mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(option, value) == 1 for option, value in SETTINGS)


APPLIED = keep_scratch_mapped()
