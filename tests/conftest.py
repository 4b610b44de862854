"""Strict numerics for every test: float64 available, no silent dtype or rank promotion.

Two profiles, chosen by ``CONVJAX_HYPOTHESIS_PROFILE``:

- ``default``: hypothesis draws 15 configs per property (a fixed, derandomised set, so a run is
  repeatable), and XLA compiles with backend optimisation level 0 (same results, compiles about
  a third faster; most of the suite's time is compilation);
- ``thorough``: 400 fresh configs per property, compiled as users compile them.
"""

import os
import pathlib

PROFILE = os.environ.get("CONVJAX_HYPOTHESIS_PROFILE", "default")
if PROFILE != "thorough":  # before JAX starts a backend; notebook kernels inherit it
    os.environ["XLA_FLAGS"] = " ".join(
        filter(None, [os.environ.get("XLA_FLAGS"), "--xla_backend_optimization_level=0"])
    )

import hypothesis  # noqa: E402
import jax  # noqa: E402

# One persistent compilation cache for the run's workers (and later runs): identical programs,
# eager primitives above all, are compiled once.  Keyed by the program, flags and versions.
jax.config.update(
    "jax_compilation_cache_dir",
    os.environ.get(
        "CONVJAX_TEST_JAX_CACHE", str(pathlib.Path(__file__).parents[1] / ".pytest_cache" / "jax")
    ),
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

hypothesis.settings.register_profile(
    "default",
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.data_too_large],
)
hypothesis.settings.register_profile(
    "thorough",
    parent=hypothesis.settings.get_profile("default"),
    max_examples=400,
    derandomize=False,
)
hypothesis.settings.load_profile(PROFILE)
