"""Two interchangeable implementations of one convolution.

A backend is a hashable callable ``backend(x, kernel, spec, *, precision,
preferred_element_type)`` taking ``x: [B, *spatial, C_in]`` and ``kernel: [*window, C_in //
groups, C_out]`` and returning ``[B, *out_spatial, C_out]``.  Both compute

    y[b, o, g·J + j] = Σ_t Σ_c  pad(x)[b, o·s − lo + t·d, g·C + c] · kernel[t, c, g·J + j]

where ``pad`` is the spec's padding mode, ``C = C_in / groups`` and ``J = C_out / groups``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

if TYPE_CHECKING:
    from convjax._src.spec import ConvSpec

_JNP_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}

DEFAULT_MEMORY_BUDGET = 512 * 2**20


class Backend(Protocol):
    name: str

    def __call__(
        self,
        x: jax.Array,
        kernel: jax.Array,
        spec: ConvSpec,
        *,
        precision: Any = None,
        preferred_element_type: Any = None,
    ) -> jax.Array: ...


def _spatial_letters(ndim: int) -> str:
    return "DHW"[-ndim:] if ndim <= 3 else "".join(chr(ord("a") + i) for i in range(ndim))


@dataclasses.dataclass(frozen=True)
class LaxBackend:
    """``lax.conv_general_dilated`` with kernel dilation and feature groups.

    Non-zero padding modes pad the input with ``jnp.pad`` first, then convolve with no padding.

    Non-finite values follow XLA's convolution, which on the CPU departs from convjax's rule
    (zero padding acts as explicit zeros; nothing reaches an output that does not read it) in
    two ways: a grouped convolution mixes the groups, so a NaN or inf in one group makes the
    other groups' outputs at that position NaN, and the kernel gradient skips the taps that read
    zero padding.  Every other backend follows the rule exactly.
    """

    name: str = dataclasses.field(default="lax", init=False)

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
class GatherBackend:
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


BACKENDS = {"lax": LaxBackend(), "gather": GatherBackend()}


def resolve_backend(op: str, impl: Any) -> Backend:
    """``"lax"``, ``"gather"`` or a backend instance, as a backend instance."""
    if isinstance(impl, str):
        if impl not in BACKENDS:
            raise ValueError(
                f"{op}: impl must be one of {tuple(BACKENDS)} or a backend instance, got {impl!r}."
            )
        return BACKENDS[impl]
    if isinstance(impl, LaxBackend | GatherBackend):
        return impl
    raise TypeError(
        f"{op}: impl must be one of {tuple(BACKENDS)} or a backend instance, got "
        f"{type(impl).__name__}."
    )
