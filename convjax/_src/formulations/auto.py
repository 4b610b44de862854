"""``impl="auto"``: one table from (platform, features of the convolution) to a formulation.

Each row names the formulation, the features it applies to (``None`` matches anything), and the
measurement that justifies it: ``convjax bench`` on a quiet 2-core CPU (float32, the forward and
the gradients of a loss of the output, the faster of PyTorch's layouts as the yardstick), or,
for GPU rows, the H100 numbers the project measured.  The first matching row wins; the last row
matches everything.  A formulation is chosen for its training (forward plus backward) time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import jax

from convjax._src.checks import dtype_kind
from convjax._src.formulations.base import Backend, Chooses
from convjax._src.formulations.fft import FFTBackend
from convjax._src.formulations.gather import GatherBackend
from convjax._src.formulations.lax import LaxBackend
from convjax._src.formulations.planes import PlanesBackend
from convjax._src.formulations.taps import NARROW_GROUP, TapsBackend
from convjax._src.spec import ConvSpec


class Features(NamedTuple):
    """What the table looks at."""

    platform: str  # "cpu", "gpu" or "tpu"
    kind: str  # "pointwise" (1×…×1, one group), "dense", "depthwise", "grouped"
    transposed: bool  # a transposed convolution (the adjoint of this spec's conv)
    strided: bool
    dilated: bool
    window: int  # the largest window size
    narrow: bool  # at most NARROW_GROUP input channels per group
    spectrum_bytes: int  # the kernel's spectrum on the FFT grid (C_in / groups · C_out · F)
    integer: bool = False  # integer operands (exact sums: no FFT)
    ndim: int = 2  # spatial dimensions
    tiles: bool = False  # windows of more than one position tile the input (strides = window)


@dataclasses.dataclass(frozen=True)
class Rule:
    """Use ``formulation`` where every given feature matches."""

    formulation: str
    evidence: str
    platform: str | None = None
    kind: str | None = None
    transposed: bool | None = None
    strided: bool | None = None
    dilated: bool | None = None
    narrow: bool | None = None
    min_window: int | None = None
    max_spectrum_bytes: int | None = None
    integer: bool | None = None
    min_ndim: int | None = None
    tiles: bool | None = None

    def matches(self, f: Features) -> bool:
        wanted = {
            "platform": self.platform,
            "kind": self.kind,
            "transposed": self.transposed,
            "strided": self.strided,
            "dilated": self.dilated,
            "narrow": self.narrow,
            "integer": self.integer,
            "tiles": self.tiles,
        }
        if any(v is not None and getattr(f, k) != v for k, v in wanted.items()):
            return False
        if self.max_spectrum_bytes is not None and f.spectrum_bytes > self.max_spectrum_bytes:
            return False
        if self.min_ndim is not None and f.ndim < self.min_ndim:
            return False
        return self.min_window is None or f.window >= self.min_window


# The kernel's spectrum holds C_in / groups · C_out complex numbers per frequency: past this
# many bytes FFT memory, not time, decides (512 -> 256 channels on a 70x70 grid is 2.6 GB).
FFT_SPECTRUM_LIMIT = 256 * 2**20

TABLE: tuple[Rule, ...] = (
    Rule(
        "fft",
        "benchmarks/fft_crossover.py, depthwise SAME on [4, 64, 64, 32], gradient of a loss: 9x9 "
        "taps 16.9 ms vs fft 6.0; 15x15 124 vs 7.5 (7x7: taps 7.7 vs fft 8.5)",
        platform="cpu",
        kind="depthwise",
        strided=False,
        min_window=9,
        max_spectrum_bytes=FFT_SPECTRUM_LIMIT,
        integer=False,
    ),
    Rule(
        "fft",
        "benchmarks/fft_crossover.py, dense SAME 32->32 on [4, 64, 64, 32], gradient of a loss: "
        "15x15 lax 88.5 ms vs fft 87.0; 21x21 181 vs 94; 11x11 50 vs 79",
        platform="cpu",
        kind="dense",
        strided=False,
        min_window=15,
        max_spectrum_bytes=FFT_SPECTRUM_LIMIT,
        integer=False,
    ),
    Rule(
        "taps",
        "convjax bench, depthwise 3x3 56² C144 b8, forward / gradient of a loss: taps 1.07/7.9 ms "
        "vs lax 74/186 (torch 0.80/7.85)",
        platform="cpu",
        kind="depthwise",
    ),
    Rule(
        "taps",
        "convjax bench, ResNeXt 3x3 g32 56² 128 b4, forward / gradient of a loss: taps 2.25/15.9 "
        "ms vs lax 21/2730 (torch 1.24/8.15)",
        platform="cpu",
        kind="grouped",
        narrow=True,
    ),
    Rule(
        "taps",
        "transposed k2 s2 64²->128² 128->64 b4, gradient of a loss: taps 12.6 ms vs lax 15.8 "
        "(PyTorch 19.1 in that run); 6³->12³ 32->16 b16: taps 0.84 vs planes 1.49, lax 38.9",
        platform="cpu",
        transposed=True,
        tiles=True,
    ),
    Rule(
        "taps",
        "conv k2 s2 12³ 16->32 b16, gradient of a loss: taps 0.77 ms vs planes 1.13, lax 39.8 "
        "(2-d forward tilings stay on lax: 2x2 s2 32² 48->96 b16 lax 2.4 vs taps 3.3)",
        platform="cpu",
        tiles=True,
        min_ndim=3,
    ),
    Rule(
        "taps",
        "patchifying stems, gradient of a loss: 16x16 s16 224² 3->192 b4 taps 2.7 ms vs lax 46 "
        "(PyTorch 7.3; 8 channels: 7.3 vs 135); 4x4 s4 64² 3->32 b16 0.38 vs 0.53; 2x2 s2 64² "
        "8->32 b16 0.55 vs 0.90 (wider inputs stay on lax: 4x4 s4 32² 64->64 b8 1.56 vs 0.87)",
        platform="cpu",
        kind="dense",
        tiles=True,
        narrow=True,
    ),
    Rule(
        "planes",
        "3x3x3 16³ 32->32 b4, gradient of a loss: planes 8.5 ms vs lax 61 (PyTorch 6.0); 12³ "
        "b16: 16->8 3.4 (PyTorch 2.7), 8->16 3.0 (3.3), 1->8 1.75 vs taps 1.97 (0.93); stride "
        "2: 0.66 vs lax 59; dilation 2: 8.4 vs 182",
        platform="cpu",
        kind="dense",
        min_ndim=3,
    ),
    Rule(
        "planes",
        "convjax bench, 1x1x1 16³ 32->64 b4, gradient of a loss: planes 0.88 ms vs lax 2.2",
        platform="cpu",
        kind="pointwise",
        min_ndim=3,
    ),
    Rule(
        "taps",
        "convjax bench, 3x3x3 16³ 64->64 in 2 groups b4, gradient of a loss: taps 172 ms vs "
        "planes 429, lax 537",
        platform="cpu",
        kind="grouped",
        min_ndim=3,
    ),
    Rule(
        "taps",
        "H100 bf16 (the project's measurements), depthwise 3x3 rate 4 56² C256 b32: shift-and-add "
        "151 µs vs cuDNN 1309 µs and lax 1327 µs forward",
        platform="gpu",
        kind="depthwise",
        dilated=True,
    ),
    Rule(
        "lax",
        "default: XLA's convolution (convjax bench on CPU, gradient of a loss: 3x3 56² 64→64 b4 "
        "9.9 ms, torch 7.4; 1x1 3.9 vs taps 3.7; atrous rate 2 94 vs taps 147; transposed k3 s2 "
        "31 vs taps 42 (k2 s2 tilings: the taps row above). On an H100: at parity with cuDNN)",
    ),
)


def features(
    spec: ConvSpec,
    x_shape: Sequence[int],
    kernel_shape: Sequence[int],
    *,
    transposed: bool,
    dtype: Any = "float32",
) -> Features:
    """The table's view of one convolution on the default platform."""
    window = tuple(kernel_shape[: spec.ndim])
    c_per_group = kernel_shape[-2]
    grid = math.prod(
        i + lo + hi for i, (lo, hi) in zip(x_shape[-spec.ndim - 1 : -1], spec.padding, strict=True)
    )
    if spec.groups == 1:
        kind = "pointwise" if math.prod(window) == 1 else "dense"
    else:
        kind = "depthwise" if c_per_group == 1 else "grouped"
    return Features(
        platform=jax.default_backend(),
        kind=kind,
        transposed=transposed,
        strided=any(s > 1 for s in spec.strides),
        dilated=any(d > 1 for d in spec.dilation),
        window=max(window),
        narrow=c_per_group <= NARROW_GROUP,
        spectrum_bytes=8 * (grid // 2 + 1) * c_per_group * kernel_shape[-1],
        integer=dtype_kind(dtype) == "int",
        ndim=spec.ndim,
        tiles=window == tuple(spec.strides)
        and all(d == 1 for d in spec.dilation)
        and math.prod(window) > 1,
    )


def rule_for(f: Features) -> Rule:
    """The first row of :data:`TABLE` that matches."""
    return next(rule for rule in TABLE if rule.matches(f))


def choose(
    spec: ConvSpec, x_shape, kernel_shape, *, transposed: bool = False, dtype: Any = "float32"
) -> str:
    """The formulation ``impl="auto"`` runs for this convolution."""
    found = features(spec, x_shape, kernel_shape, transposed=transposed, dtype=dtype)
    return rule_for(found).formulation


# The formulations the table chooses among, by the names its rows use.
CHOICES: dict[str, Backend] = {
    "lax": LaxBackend(),
    "gather": GatherBackend(),
    "taps": TapsBackend(),
    "fft": FFTBackend(),
    "planes": PlanesBackend(),
}


@dataclasses.dataclass(frozen=True)
class AutoBackend(Chooses):
    """The fastest formulation for each convolution: :func:`choose` reads the platform (the
    default backend) and the spec's features from one table, at trace time.

    Attributes:
      transposed: choose for a transposed convolution (the adjoint of this forward conv).
    """

    transposed: bool = False
    name: str = dataclasses.field(default="auto", init=False)
    accepts: ClassVar[str] = "every convolution"
    description: ClassVar[str] = "the fastest of the others for the platform and spec (one table)"

    def choose(self, spec, x_shape, kernel_shape, dtype="float32") -> Backend:
        """The formulation this convolution runs on."""
        options = {"transposed": self.transposed, "dtype": dtype}
        return CHOICES[choose(spec, x_shape, kernel_shape, **options)]
