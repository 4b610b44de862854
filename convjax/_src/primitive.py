"""The convolution primitive: one bilinear operation in three roles, closed under transposition.

lax defines its convolution as a primitive whose JVP is the bilinear rule and whose transposes
are convolutions again; convjax does the same for every formulation.  One primitive,
``convjax_conv``, takes two operands and a static :class:`Problem` (the spec, the formulation,
the shapes and dtypes of the convolution ``y = A(x, kernel)``) and a *role*:

=========  =====================  =================  ===========================================
role       operands               result             transposes (for the first, the second)
=========  =====================  =================  ===========================================
forward    ``x``, ``kernel``      ``y``              ``input``, ``kernel``
input      ``g``, ``kernel``      ``x``-shaped       ``forward``, ``kernel``
kernel     ``x``, ``g``           ``kernel``-shaped  ``input``, ``forward``
=========  =====================  =================  ===========================================

``input`` is ``Aᵀ g`` (the input gradient, and the transposed convolution); ``kernel`` is the
kernel gradient ``Σ_o x[o·s + t·d] ⊗ g[o]``.  Each role is bilinear, so its JVP is two binds of
the same role and its transposes are binds of the others: forward- and reverse-mode
differentiation of any order, ``jax.linear_transpose`` and ``jax.vmap`` (a batched kernel is
folded into groups, as lax folds it) all stay on the formulation's own forms.  A role runs the
formulation's ``input_gradient`` / ``kernel_gradient`` where it has one, else the transpose JAX
derives from its forward (``jax.linear_transpose``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir
from jax.sharding import PartitionSpec

from convjax._src.checks import op_name
from convjax._src.formulations.base import Backend, input_gradient, kernel_gradient, materialized
from convjax._src.spec import ConvSpec

ROLES = ("forward", "input", "kernel")


@dataclasses.dataclass(frozen=True)
class Problem:
    """The static description of one convolution ``y = A(x, kernel)`` (hashable).

    Attributes:
      spec: the geometry.
      backend: the formulation that computes every role (a concrete one, not ``auto``).
      x_shape: ``[B, *spatial, C_in]``, one batch dim.
      kernel_shape: ``[*window, C_in // groups, C_out]``.
      x_dtype, kernel_dtype: the operands' dtypes (equal, for every formulation here).
      y_dtype: the result's dtype (``preferred_element_type``, else ``x_dtype``).
      precision: passed to the formulation's contractions.
    """

    spec: ConvSpec
    backend: Backend
    x_shape: tuple[int, ...]
    kernel_shape: tuple[int, ...]
    x_dtype: np.dtype
    kernel_dtype: np.dtype
    y_dtype: np.dtype
    precision: Any = None

    @property
    def y_shape(self) -> tuple[int, ...]:
        ndim = self.spec.ndim
        out = self.spec.output_spatial(self.x_shape[1:-1], self.kernel_shape[:ndim])
        return (self.x_shape[0], *out, self.kernel_shape[-1])

    def result(self, role: str) -> tuple[tuple[int, ...], np.dtype]:
        """The shape and dtype ``role`` returns."""
        if role == "forward":
            return self.y_shape, self.y_dtype
        if role == "input":
            return self.x_shape, self.x_dtype
        return self.kernel_shape, self.kernel_dtype

    @property
    def pet(self) -> np.dtype | None:
        """The forward's ``preferred_element_type``."""
        return None if self.y_dtype == self.x_dtype else self.y_dtype


conv_p = Primitive("convjax_conv")


def bind(a: jax.Array, b: jax.Array, problem: Problem, role: str) -> jax.Array:
    """``role`` of ``problem`` on operands ``a`` and ``b`` (see the module docstring)."""
    return conv_p.bind(a, b, problem=problem, role=role)


def _evaluate(a, b, *, problem: Problem, role: str, cpu: bool = False):
    """What ``role`` computes, on the formulation, as JAX operations (lowered for the CPU when
    ``cpu``)."""
    shape, dtype = problem.result(role)
    if 0 in shape or 0 in a.shape or 0 in b.shape:  # an empty result, or a sum of nothing
        return jnp.zeros_like(a, dtype, shape=shape)  # varying like a inside a shard_map
    options = {"precision": problem.precision, "preferred_element_type": problem.pet}
    if role == "forward":
        out = problem.backend(a, b, problem.spec, **options)
    elif role == "input":
        x = (problem.x_shape, problem.x_dtype)
        out = input_gradient(problem.backend, a, b, problem.spec, *x, **options)
    else:
        kernel = (problem.kernel_shape, problem.kernel_dtype)
        if cpu and getattr(problem.backend, "materializes_kernel_gradient_operands", False):
            a = materialized(a)
        out = kernel_gradient(problem.backend, a, b, problem.spec, *kernel, **options)
    if tuple(out.shape) != tuple(shape):  # a user's formulation, say
        what = {"forward": "convolution", "input": "input gradient", "kernel": "kernel gradient"}
        raise ValueError(
            f"{op_name('conv')}: impl={problem.backend.name!r} returned shape {tuple(out.shape)} "
            f"for the {what[role]}, expected {tuple(shape)}."
        )
    return out.astype(dtype)


def _varying(aval) -> frozenset:
    """The manual mesh axes ``aval`` varies over inside a ``shard_map`` (none outside one)."""
    vma = getattr(aval, "vma", None)
    if vma is None:
        vma = getattr(getattr(aval, "manual_axis_type", None), "varying", frozenset())
    return frozenset(vma)


def align_varying(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``a`` and ``b`` cast to vary over the same manual mesh axes inside a ``shard_map`` (a
    kernel replicated over the devices meets each device's block), as JAX's own binary
    operations cast them."""
    va, vb = _varying(jax.typeof(a)), _varying(jax.typeof(b))
    if vb - va:
        a = jax.lax.pcast(a, tuple(vb - va), to="varying")
    if va - vb:
        b = jax.lax.pcast(b, tuple(va - vb), to="varying")
    return a, b


def _abstract_eval(a, b, *, problem: Problem, role: str):
    shape, dtype = problem.result(role)
    template = a if _varying(a) >= _varying(b) else b
    sharding = template.sharding
    if getattr(sharding, "mesh", None) is not None:
        sharding = sharding.update(spec=PartitionSpec(*[None] * len(shape)))
    return template.update(shape=shape, dtype=dtype, weak_type=False, sharding=sharding)


@functools.partial(jax.jit, static_argnames=("problem", "role"))
def _eager(a, b, problem, role):
    return bind(a, b, problem, role)


conv_p.def_impl(lambda a, b, *, problem, role: _eager(a, b, problem, role))
conv_p.def_abstract_eval(_abstract_eval)
mlir.register_lowering(conv_p, mlir.lower_fun(_evaluate, multiple_results=False))
mlir.register_lowering(
    conv_p,
    mlir.lower_fun(functools.partial(_evaluate, cpu=True), multiple_results=False),
    platform="cpu",
)


# -- transposes: each role's two transposes are the other roles -----------------------------------


def _transpose_first(ct, a, b, *, problem: Problem, role: str):
    if role == "forward":  # the x of y = A(x, w): Aᵀ ct
        return bind(ct, b, problem, "input")
    if role == "input":  # the g of Aᵀ(g, w): A(ct, w)
        return bind(ct, b, problem, "forward")
    return bind(b, ct, problem, "input")  # the x of R(x, g): Aᵀ(g, ct)


def _transpose_second(ct, a, b, *, problem: Problem, role: str):
    if role == "forward":  # the w of y = A(x, w): R(x, ct)
        return bind(a, ct, problem, "kernel")
    if role == "input":  # the w of Aᵀ(g, w): R(ct, g)
        return bind(ct, a, problem, "kernel")
    return bind(a, ct, problem, "forward")  # the g of R(x, g): A(x, ct)


ad.defbilinear(conv_p, _transpose_first, _transpose_second)


# -- vmap -----------------------------------------------------------------------------------------


def _batch(args, dims, *, problem: Problem, role: str):
    a, b = args
    da, db = dims
    size = a.shape[da] if da is not None else b.shape[db]
    if role != "kernel" and db is None:  # only x (or g) is batched: more batch elements
        a = jnp.moveaxis(a, da, 0)
        merged = a.reshape(size * a.shape[1], *a.shape[2:])
        x_shape = (size * problem.x_shape[0], *problem.x_shape[1:])
        out = bind(merged, b, dataclasses.replace(problem, x_shape=x_shape), role)
        return out.reshape(size, problem.x_shape[0], *out.shape[1:]), 0
    # A batched kernel, or a kernel gradient of batched operands: the batch becomes groups.
    # Every operand and result has its channels last, so one fold serves every role.
    out = bind(_fold(a, da, size), _fold(b, db, size), _folded(problem, size), role)
    out = out.reshape(*out.shape[:-1], size, out.shape[-1] // size if size else 0)
    return jnp.moveaxis(out, -2, 0), 0


def _folded(problem: Problem, size: int) -> Problem:
    """``problem`` for ``size`` convolutions side by side as groups (batch-major channels)."""
    spec = dataclasses.replace(problem.spec, groups=problem.spec.groups * size)
    x_shape = (*problem.x_shape[:-1], size * problem.x_shape[-1])
    kernel_shape = (*problem.kernel_shape[:-1], size * problem.kernel_shape[-1])
    return dataclasses.replace(problem, spec=spec, x_shape=x_shape, kernel_shape=kernel_shape)


def _fold(v, dim, size: int):
    """``v`` batched at ``dim`` (or broadcast, where it is not) with the batch folded into its
    last axis, batch-major: ``[..., C]`` → ``[..., size · C]``."""
    v = jnp.broadcast_to(v, (size, *v.shape)) if dim is None else jnp.moveaxis(v, dim, 0)
    v = jnp.moveaxis(v, 0, -2)
    return v.reshape(*v.shape[:-2], math.prod(v.shape[-2:]))


batching.primitive_batchers[conv_p] = _batch
