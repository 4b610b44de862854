"""Timing what users run, fairly on a small machine: contenders alternate in rounds, and each
runs untimed for ``SETTLE_SECONDS`` right before its timed call (an idle core takes ~10 ms to
wake, and PyTorch's OpenMP workers spin for a while after each call)."""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any, TextIO

import jax

SETTLE_SECONDS = 0.015


def block(value):
    return jax.block_until_ready(value)


def timed_call(run: Callable[[], Any], sync: Callable[[Any], Any], settle: bool = True) -> float:
    """Seconds of one ``run()`` after running it untimed for ``SETTLE_SECONDS``."""
    start = time.perf_counter()
    while settle and time.perf_counter() - start < SETTLE_SECONDS:
        sync(run())
    start = time.perf_counter()
    sync(run())
    return time.perf_counter() - start


@dataclasses.dataclass
class Timing:
    seconds: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1e3

    def as_dict(self) -> dict[str, float]:
        return {
            "median_ms": self.median_ms,
            "min_ms": min(self.seconds) * 1e3,
            "max_ms": max(self.seconds) * 1e3,
        }


def measure(
    contenders: dict[str, tuple], rounds: int, progress: Callable[[], None]
) -> dict[str, Timing]:
    """Alternate the contenders ``{name: (run, sync)}`` or ``{name: (run, sync, calls)}`` (a
    ``run()`` that makes ``calls`` calls, timed per call) in ``rounds`` rounds."""
    settle = {}
    for name, (run, sync, *_) in contenders.items():  # compile and warm up
        sync(run())
        # A call much longer than the settle needs none (a wake-up is noise there).
        settle[name] = timed_call(run, sync, settle=False) < 50 * SETTLE_SECONDS
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, (run, sync, *calls) in contenders.items():
            times[name].append(timed_call(run, sync, settle[name]) / (calls[0] if calls else 1))
        progress()
    return {name: Timing(t) for name, t in times.items()}


def try_import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


class Progress:
    """A one-line progress bar on ``out`` (redrawn in place on a terminal)."""

    def __init__(self, total: int, out: TextIO, width: int = 30):
        self.total, self.done, self.out, self.width = total, 0, out, width
        self.live = out.isatty()
        self.label = ""

    def step(self) -> None:
        self.done += 1
        self.draw()

    def draw(self) -> None:
        filled = self.width * self.done // max(self.total, 1)
        line = (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total}  {self.label}"
        )
        if self.live:
            print("\r" + line[:120].ljust(120), end="", file=self.out, flush=True)
        elif self.done == self.total or self.done % max(self.total // 10, 1) == 0:
            print(line, file=self.out, flush=True)

    def close(self) -> None:
        if self.live:
            print(file=self.out)
