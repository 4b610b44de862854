"""Side-by-side timing helpers: median wall time of a jitted callable, after warm-up."""

from __future__ import annotations

import argparse
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


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the shared ``--quick`` flag (3 repeats instead of 10)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="3 repeats instead of 10")
    return p


def setup(args: argparse.Namespace):
    """``(repeats, torch or None)`` for a run, after printing what it runs on."""
    repeats = 3 if args.quick else 10
    torch = try_import_torch()
    print(
        f"jax {jax.__version__} on {jax.default_backend()}, float32, median of {repeats}"
        + (f", torch {torch.__version__}" if torch else ", torch not installed")
    )
    return repeats, torch


def try_import_torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return torch
