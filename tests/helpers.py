"""Random operands and per-dtype tolerances shared by the test files."""

import math
import os

import jax.numpy as jnp
import numpy as np

from convjax._src.checks import as_array
from convjax._src.formulations import REGISTRY

# Relative tolerance per dtype, applied as |a - b| <= tol * (1 + |b|) * sqrt(fan_in).
TOLERANCE = {
    np.dtype(np.float64): 1e-12,
    np.dtype(np.float32): 2e-6,
    np.dtype(jnp.bfloat16): 1e-2,
    np.dtype(np.float16): 2e-3,
}

IMPLS = ("lax", "gather")

# The thorough profile (see the conftest) runs every case; the default one fewer.
THOROUGH = os.environ.get("CONVJAX_HYPOTHESIS_PROFILE") == "thorough"


# The formulations that compute (not the choosers, auto and autotune, which run one of them),
# and those with the default: what the property tests iterate.
COMPUTING = tuple(name for name, b in REGISTRY.items() if not hasattr(b, "choose"))
FORMULATIONS = ("auto", *COMPUTING)


def operands(case, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, case["x_shape"])
    kernel = rng.uniform(-1, 1, case["kernel_shape"])
    return as_array(x, dtype), as_array(kernel, dtype)


def assert_close(actual, expected, dtype, fan_in):
    """Compare in float64 with the dtype's tolerance scaled by the size of the sum."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    tol = TOLERANCE[np.dtype(dtype)] * math.sqrt(max(fan_in, 1))
    err = np.abs(actual - expected) / (1 + np.abs(expected))
    assert err.max(initial=0.0) <= tol, f"max scaled error {err.max()} > {tol} ({dtype})"


def fan_in(case):
    return math.prod(case["kernel_shape"][:-1])
