"""XLA:CPU options, set when convjax is imported (before JAX starts).

**The convolution library.** jaxlib 0.10 hands every CPU convolution to YNNPACK
(``__ynn_fusion`` in the compiled HLO).  On the x86 machines convjax is measured on, XLA's own
(Eigen) convolution runs a dense 3×3 layer's forward and gradients 1.8× faster than YNNPACK's
(``convjax bench``: 56², 64→64, batch 4, forward 4.1 → 2.2 ms, gradients of a loss 15.7 → 8.8
ms), and no slower elsewhere, while YNNPACK's matrix products and reductions stay the fastest
(without its reductions, the bias gradients and the kernel gradients' sums of a training step
run on XLA's loops: ResNeXt's step 13% slower, the 3-D UNet's 10%, MobileNetV2's and the TCN's
7-8%, measured in one process with per-computation compiler options).  So convjax keeps YNNPACK
for matrix products and reductions only:
``--xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce``.  (jaxlib 0.10's YNNPACK
reductions, on by default with or without convjax, crash the process on some float32 operands
of rank 7 and more, e.g. ``jnp.sum(a * b, axis=5)`` for a ``(2, 8, 8, 9, 1, 2, 2)`` array under
``jit``; ``deform_conv``, whose corner arrays had that rank, keeps them below it.)

**The vector width.**  XLA:CPU vectorises its loops 256 bits wide unless told otherwise.  AMD's
CPUs with AVX-512 (Zen 4 and later) run 512-bit vectors at full clock, and the elementwise
taps of depthwise convolutions are such loops: on a Zen 5 machine a 7×7 depthwise forward (56²,
96 channels, batch 8) takes 2.42 ms at 256 bits and 1.75 at 512, the ConvNeXt reference model's
training step 14.4 → 13.6 ms, and nothing measured is slower (dense, grouped and depthwise
gradients, the other reference models: within 1%).  So on an AMD CPU that reports ``avx512f``,
convjax adds ``--xla_cpu_prefer_vector_width=512``.  (Intel's earlier AVX-512 cores lower their
clock for 512-bit work, and no Intel machine was measured: left at XLA's default.)

Each option is appended to ``XLA_FLAGS`` when the process has not started a JAX backend yet and
the user has not chosen for themselves.  Nothing is changed when ``CONVJAX_XLA_FLAGS=0`` is set,
when a JAX backend already runs (flags are read when it starts), or for a jaxlib outside the
versions this was measured on (XLA refuses options it does not know); an option ``XLA_FLAGS``
already names is left as the user set it.
"""

from __future__ import annotations

import os

import jaxlib

try:  # JAX's own record of started backends (flags are read when one starts)
    from jax._src.xla_bridge import backends_are_initialized
except ImportError:  # pragma: no cover - a JAX without it: assume started, change nothing
    backends_are_initialized = None

CONVOLUTIONS = ("--xla_cpu_experimental_ynn_fusion_type", "individual_dot,reduce")
VECTOR_WIDTH = ("--xla_cpu_prefer_vector_width", "512")
MEASURED_ON = ("0.10.",)  # jaxlib versions these options exist in and were measured on


def cpu_flags(path: str = "/proc/cpuinfo") -> tuple[str, frozenset[str]]:
    """The first CPU's vendor and feature flags, as Linux reports them (``("", {})`` elsewhere)."""
    vendor, flags = "", frozenset()
    try:
        with open(path, encoding="ascii", errors="replace") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "vendor_id":
                    vendor = value.strip()
                elif key.strip() == "flags":
                    flags = frozenset(value.split())
                if not line.strip() and vendor:  # the end of the first CPU's block
                    break
    except OSError:
        pass
    return vendor, flags


def options(cpu: tuple[str, frozenset[str]] | None = None) -> list[tuple[str, str]]:
    """The options this machine gets (the module docstring says which, and why)."""
    vendor, flags = cpu_flags() if cpu is None else cpu
    chosen = [CONVOLUTIONS]
    if vendor == "AuthenticAMD" and "avx512f" in flags:
        chosen.append(VECTOR_WIDTH)
    return chosen


def tune_xla_cpu() -> list[str]:
    """Append the module docstring's options to ``XLA_FLAGS`` where it says so; those appended."""
    if os.environ.get("CONVJAX_XLA_FLAGS", "1") == "0":
        return []
    if not jaxlib.__version__.startswith(MEASURED_ON):
        return []
    if backends_are_initialized is None or backends_are_initialized():
        return []
    flags = os.environ.get("XLA_FLAGS", "")
    added = [f"{option}={value}" for option, value in options() if option not in flags]
    if added:
        os.environ["XLA_FLAGS"] = " ".join([flags, *added]).strip()
    return added


APPLIED = tune_xla_cpu()
