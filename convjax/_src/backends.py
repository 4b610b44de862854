"""Interchangeable formulations of one convolution, and ``auto``, which picks one.

A backend is a hashable callable ``backend(x, kernel, spec, *, precision,
preferred_element_type)`` taking ``x: [B, *spatial, C_in]`` and ``kernel: [*window, C_in //
groups, C_out]`` and returning ``[B, *out_spatial, C_out]``.  All compute

    y[b, o, g·J + j] = Σ_t Σ_c  pad(x)[b, o·s − lo + t·d, g·C + c] · kernel[t, c, g·J + j]

where ``pad`` is the spec's padding mode, ``C = C_in / groups`` and ``J = C_out / groups``.
``refuses(spec, x_shape, kernel_shape)`` says why a backend cannot run a convolution (``None``
when it can); the spec asks before any array work.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

if TYPE_CHECKING:
    from convjax._src.spec import ConvSpec, DTypeLike, PrecisionLike

_JNP_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}

DEFAULT_MEMORY_BUDGET = 512 * 2**20


class Backend(Protocol):
    name: str
    accepts: ClassVar[str]
    description: ClassVar[str]

    def __call__(
        self,
        x: jax.Array,
        kernel: jax.Array,
        spec: ConvSpec,
        *,
        precision: PrecisionLike = None,
        preferred_element_type: DTypeLike | None = None,
    ) -> jax.Array: ...

    def refuses(self, spec: ConvSpec, x_shape, kernel_shape) -> str | None: ...


class _Accepts:
    """Mixin for backends that run every convolution."""

    def refuses(self, spec, x_shape, kernel_shape) -> str | None:
        return None


def _spatial_letters(ndim: int) -> str:
    return "DHW"[-ndim:] if ndim <= 3 else "".join(chr(ord("a") + i) for i in range(ndim))


@dataclasses.dataclass(frozen=True)
class LaxBackend(_Accepts):
    """``lax.conv_general_dilated`` with kernel dilation and feature groups.

    Non-zero padding modes pad the input with ``jnp.pad`` first, then convolve with no padding.

    Non-finite values follow XLA's convolution, which on the CPU departs from convjax's rule
    (zero padding acts as explicit zeros; nothing reaches an output that does not read it) in
    two ways: it skips the taps that read zero padding, in the forward conv and the kernel
    gradient (so a non-finite weight meeting padding gives no ``0 · inf = NaN`` there), and a
    grouped convolution mixes the groups, so a NaN or inf in one group makes the other groups'
    outputs at that position NaN.  The other direct backends follow the rule exactly.
    """

    name: str = dataclasses.field(default="lax", init=False)
    accepts: ClassVar[str] = "every convolution"
    description: ClassVar[str] = "lax.conv_general_dilated, XLA's own convolution"

    def __call__(self, x, kernel, spec, *, precision=None, preferred_element_type=None):
        padding = spec.padding
        if spec.padding_mode != "zeros":
            x = jnp.pad(x, ((0, 0), *padding, (0, 0)), mode=_JNP_PAD_MODES[spec.padding_mode])
            padding = ((0, 0),) * spec.ndim
        letters = _spatial_letters(spec.ndim)
        return lax.conv_general_dilated(
            x,
            kernel,
            window_strides=spec.strides,
            padding=padding,
            rhs_dilation=spec.dilation,
            dimension_numbers=(f"N{letters}C", f"{letters}IO", f"N{letters}C"),
            feature_group_count=spec.groups,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )


@dataclasses.dataclass(frozen=True)
class GatherBackend(_Accepts):
    """Explicit index arithmetic: gather every (output position, tap) pair, then contract.

    Never calls a lax convolution.  The output is computed in blocks over the batch and the
    output axes so that one block's gathered patches, with their cotangent and a relayout under
    differentiation, take at most ``memory_budget`` bytes (one output position's patch at
    least); blocks are rematerialised under differentiation so the backward pass stays within
    the same bound.  Beyond it the scratch holds a few input- and output-sized buffers (the
    zero-padded input, the output in blocks, their cotangents): at most ``memory_budget + 2 ·
    (input bytes + output bytes)`` in all, as XLA's ``memory_analysis`` measures it.

    Attributes:
      memory_budget: bytes one block's patches (and their cotangent) may take (default 512 MiB).
    """

    memory_budget: int = DEFAULT_MEMORY_BUDGET
    name: str = dataclasses.field(default="gather", init=False)
    accepts: ClassVar[str] = "every convolution"
    description: ClassVar[str] = "explicit index maps, one gather and one contraction; no lax conv"

    def __post_init__(self):
        budget = self.memory_budget
        if isinstance(budget, bool | np.bool_) or not isinstance(budget, int | np.integer):
            raise TypeError(
                f"GatherBackend: memory_budget must be an int number of bytes, got {budget!r}."
            )
        if budget < 1:
            raise ValueError(f"GatherBackend: memory_budget must be >= 1 byte, got {budget}.")
        object.__setattr__(self, "memory_budget", int(budget))  # NumPy ints hash as Python's

    def __call__(self, x, kernel, spec, *, precision=None, preferred_element_type=None):
        from convjax._src.gather import gather_conv

        return gather_conv(
            x,
            kernel,
            spec,
            memory_budget=self.memory_budget,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )


@dataclasses.dataclass(frozen=True)
class TapsBackend(_Accepts):
    """The sum over kernel taps of strided slices of the padded input (see ``taps.py``): one
    matrix product per tap for dense kernels (a single matmul for 1×1), fused multiply-adds for
    depthwise and narrow groups, with reverse-mode rules of their own for the latter.

    Forward-mode differentiation (``jax.jvp``, ``jacfwd``, ``hessian``) of a depthwise or
    narrow-grouped convolution is not available on this backend; use ``impl="lax"`` there.
    """

    name: str = dataclasses.field(default="taps", init=False)
    accepts: ClassVar[str] = "every convolution (depthwise and narrow groups: reverse mode only)"
    description: ClassVar[str] = "a strided slice per kernel tap: matmuls, or fused multiply-adds"

    def __call__(self, x, kernel, spec, *, precision=None, preferred_element_type=None):
        from convjax._src.taps import taps_conv

        return taps_conv(
            x, kernel, spec, precision=precision, preferred_element_type=preferred_element_type
        )


@dataclasses.dataclass(frozen=True)
class FFTBackend:
    """Convolution by FFT (see ``fft.py``): stride 1, any window, dilation, groups and padding
    mode; cost independent of the window.  One NaN or inf reaches every output of its batch
    element, and rounding errors scale with the largest terms rather than each output."""

    name: str = dataclasses.field(default="fft", init=False)
    accepts: ClassVar[str] = "strides 1"
    description: ClassVar[str] = "FFT of the padded input; cost independent of the window"

    def refuses(self, spec, x_shape, kernel_shape) -> str | None:
        if any(s != 1 for s in spec.strides):
            return f"it needs strides 1, got {spec.strides}"
        return None

    def __call__(self, x, kernel, spec, *, precision=None, preferred_element_type=None):
        from convjax._src.fft import fft_conv

        return fft_conv(
            x, kernel, spec, precision=precision, preferred_element_type=preferred_element_type
        )


@dataclasses.dataclass(frozen=True)
class AutoBackend(_Accepts):
    """The fastest formulation for each convolution: :func:`convjax._src.dispatch.choose` reads
    the platform (the default backend) and the spec's features from one table, at trace time.

    Attributes:
      transposed: choose for a transposed convolution (the adjoint of this forward conv).
    """

    transposed: bool = False
    name: str = dataclasses.field(default="auto", init=False)
    accepts: ClassVar[str] = "every convolution"
    description: ClassVar[str] = "the fastest of the others for the platform and spec (one table)"

    def choose(self, spec, x_shape, kernel_shape) -> Backend:
        from convjax._src.dispatch import choose

        return BACKENDS[choose(spec, x_shape, kernel_shape, transposed=self.transposed)]

    def __call__(self, x, kernel, spec, *, precision=None, preferred_element_type=None):
        backend = self.choose(spec, x.shape, kernel.shape)
        return backend(
            x, kernel, spec, precision=precision, preferred_element_type=preferred_element_type
        )


BACKENDS: dict[str, Backend] = {
    "auto": AutoBackend(),
    "lax": LaxBackend(),
    "gather": GatherBackend(),
    "taps": TapsBackend(),
    "fft": FFTBackend(),
}


class Formulation(NamedTuple):
    """One way convjax can compute a convolution (see :func:`formulations`)."""

    name: str
    accepts: str
    description: str


def formulations() -> tuple[Formulation, ...]:
    """Every formulation ``impl`` can name, with what it accepts.

    >>> import convjax
    >>> [f.name for f in convjax.formulations()]
    ['auto', 'lax', 'gather', 'taps', 'fft']
    """
    return tuple(Formulation(n, b.accepts, b.description) for n, b in BACKENDS.items())


def resolve_backend(op: str, impl: Any) -> Backend:
    """A name from :func:`formulations` or a backend instance, as a backend instance."""
    if isinstance(impl, str):
        if impl not in BACKENDS:
            raise ValueError(
                f"{op}: impl must be one of {tuple(BACKENDS)} or a backend instance, got {impl!r}."
            )
        return BACKENDS[impl]
    if isinstance(impl, tuple(type(backend) for backend in BACKENDS.values())):
        return impl
    raise TypeError(
        f"{op}: impl must be one of {tuple(BACKENDS)} or a backend instance, got "
        f"{type(impl).__name__}."
    )
