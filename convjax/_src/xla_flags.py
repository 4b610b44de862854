"""XLA:CPU's convolution library choice, set when convjax is imported (before JAX starts).

jaxlib 0.10 hands every CPU convolution to YNNPACK (``__ynn_fusion`` in the compiled HLO).  On
the x86 machines convjax is measured on, XLA's own (Eigen) convolution runs a dense 3×3 layer's
forward and gradients 1.8× faster than YNNPACK's (``convjax bench``: 56², 64→64, batch 4,
forward 4.1 → 2.2 ms, gradients of a loss 15.7 → 8.8 ms), and no slower elsewhere, while
YNNPACK's matrix products and reductions stay the fastest (without its reductions, the bias
gradients and the kernel gradients' sums of a training step run on XLA's loops: ResNeXt's step
13% slower, the 3-D UNet's 10%, MobileNetV2's and the TCN's 7-8%, measured in one process with
per-computation compiler options).  So, when the process has not started a JAX backend yet and
the user has not chosen for themselves, convjax keeps YNNPACK for matrix products and
reductions only: ``--xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce`` is appended
to ``XLA_FLAGS``.

Nothing is changed when ``CONVJAX_XLA_FLAGS=0`` is set, when ``XLA_FLAGS`` already names the
option, when a JAX backend already runs (flags are read when it starts), or for a jaxlib outside
the versions this was measured on (XLA refuses options it does not know).
"""

from __future__ import annotations

import os

import jaxlib

try:  # JAX's own record of started backends (flags are read when one starts)
    from jax._src.xla_bridge import backends_are_initialized
except ImportError:  # pragma: no cover - a JAX without it: assume started, change nothing
    backends_are_initialized = None

OPTION = "--xla_cpu_experimental_ynn_fusion_type"
VALUE = "individual_dot,reduce"
MEASURED_ON = ("0.10.",)  # jaxlib versions this option exists in and was measured on


def prefer_xla_convolutions() -> bool:
    """Append the option to ``XLA_FLAGS`` where the module docstring says so; whether it did."""
    if os.environ.get("CONVJAX_XLA_FLAGS", "1") == "0":
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if OPTION in flags or not jaxlib.__version__.startswith(MEASURED_ON):
        return False
    if backends_are_initialized is None or backends_are_initialized():
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {OPTION}={VALUE}".strip()
    return True


APPLIED = prefer_xla_convolutions()
