"""Interchangeable formulations of one convolution: the registry, and how ``impl`` resolves.

``REGISTRY`` maps each name ``impl`` accepts to a backend instance; the ``Impl`` type, the docs'
lists, :func:`formulations` and the tests' parametrisation are all read from it.  The registry is
open: ``impl`` may also be any object satisfying :class:`~convjax._src.formulations.base.Backend`
(``name``, ``accepts``, ``description``, ``refuses`` and ``__call__``), hashable because it is a
static argument of the traced convolution.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import numpy as np

from convjax._src.checks import DTYPE_KINDS, dtype_kind
from convjax._src.formulations import autotune
from convjax._src.formulations.auto import AutoBackend
from convjax._src.formulations.autotune import AutotuneBackend
from convjax._src.formulations.base import Backend
from convjax._src.formulations.fft import FFTBackend
from convjax._src.formulations.gather import GatherBackend
from convjax._src.formulations.lax import LaxBackend
from convjax._src.formulations.planes import PlanesBackend
from convjax._src.formulations.taps import TapsBackend

KIND_WORDS = {"float": "floating", "complex": "complex", "int": "integer"}

REGISTRY: dict[str, Backend] = {
    backend.name: backend
    for backend in (
        AutoBackend(),
        LaxBackend(),
        GatherBackend(),
        TapsBackend(),
        FFTBackend(),
        PlanesBackend(),
        AutotuneBackend(),
    )
}

# A formulation's name (see convjax.formulations()) or a backend instance.
Impl = Literal[tuple(REGISTRY)] | Backend  # type: ignore[valid-type]


class Formulation(NamedTuple):
    """One way convjax can compute a convolution (see :func:`formulations`)."""

    name: str
    accepts: str
    description: str


def formulations() -> tuple[Formulation, ...]:
    """Every formulation ``impl`` can name, with what it accepts.

    >>> import convjax
    >>> [f.name for f in convjax.formulations()]
    ['auto', 'lax', 'gather', 'taps', 'fft', 'planes', 'autotune']
    """
    return tuple(Formulation(n, b.accepts, b.description) for n, b in REGISTRY.items())


def resolve(op: str, impl: Any) -> Backend:
    """A name from :func:`formulations` or an object satisfying the protocol, as a backend."""
    if isinstance(impl, str):
        if impl not in REGISTRY:
            raise ValueError(
                f"{op}: impl must be one of {tuple(REGISTRY)} or a backend instance, got {impl!r}."
            )
        return REGISTRY[impl]
    if isinstance(impl, type):
        raise TypeError(
            f"{op}: impl must be one of {tuple(REGISTRY)} or a backend instance, got the class "
            f"{impl.__name__}; pass an instance, {impl.__name__}()."
        )
    if not isinstance(impl, Backend) or not isinstance(getattr(impl, "name", None), str):
        raise TypeError(
            f"{op}: impl must be one of {tuple(REGISTRY)} or a backend instance (an object with "
            f"name, accepts, description, refuses(spec, x_shape, kernel_shape) and "
            f"__call__(x, kernel, spec, *, precision, preferred_element_type)), got "
            f"{type(impl).__name__}."
        )
    try:
        hash(impl)
    except TypeError:
        raise TypeError(
            f"{op}: impl must be hashable (a frozen dataclass, say): it is a static argument of "
            f"the traced convolution, got an unhashable {type(impl).__name__}."
        ) from None
    return impl


def check_accepts(op: str, backend: Backend, spec, x_shape, kernel_shape, dtype=None) -> None:
    """Raise, naming ``op``, where ``backend`` refuses this convolution (or its dtype)."""
    kinds = getattr(backend, "kinds", DTYPE_KINDS)
    if dtype is not None and dtype_kind(dtype) not in kinds:
        raise ValueError(
            f"{op}: impl={backend.name!r} cannot run this convolution: it computes "
            f"{' and '.join(KIND_WORDS[k] for k in kinds)} dtypes, got {np.dtype(dtype).name}; "
            f"use impl='auto' or another of convjax.formulations()."
        )
    refusal = backend.refuses(spec, tuple(x_shape), tuple(kernel_shape))
    if refusal is not None:
        raise ValueError(
            f"{op}: impl={backend.name!r} cannot run this convolution: {refusal}; use "
            f"impl='auto' or another of convjax.formulations()."
        )


def concrete(backend: Backend, spec, x_shape, kernel_shape, dtype) -> Backend:
    """The backend that computes: a choosing backend's (``auto``, ``autotune``) choice, else
    ``backend``; ``auto`` autotunes where ``autotune.enable()`` says so."""
    if isinstance(backend, AutoBackend) and autotune.enabled():
        backend = AutotuneBackend(transposed=backend.transposed)
    choose = getattr(backend, "choose", None)
    if choose is None:
        return backend
    return choose(spec, tuple(x_shape), tuple(kernel_shape), np.dtype(dtype))


__all__ = [
    "REGISTRY",
    "AutoBackend",
    "AutotuneBackend",
    "Backend",
    "FFTBackend",
    "Formulation",
    "GatherBackend",
    "Impl",
    "LaxBackend",
    "PlanesBackend",
    "TapsBackend",
    "check_accepts",
    "concrete",
    "formulations",
    "resolve",
]
