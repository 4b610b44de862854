"""Strict numerics for every test: float64 available, no silent dtype or rank promotion."""

import os

import hypothesis
import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

hypothesis.settings.register_profile(
    "default",
    max_examples=40,
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
hypothesis.settings.load_profile(os.environ.get("CONVJAX_HYPOTHESIS_PROFILE", "default"))
