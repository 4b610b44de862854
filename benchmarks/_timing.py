"""Side-by-side timing helpers: median wall time of a jitted callable, after warm-up."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import jax


def median_ms(fn: Callable[[], object], repeats: int = 10, warmup: int = 2) -> float:
    """Median milliseconds of ``fn()``, blocking on JAX results; compile time excluded."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def try_import_torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return torch
