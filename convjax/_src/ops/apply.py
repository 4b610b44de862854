"""``apply``: the one way from the operations down to the formulations, the primitive and sharding.

Every operation — each variant, the transposed conv, separable convs, deconvolution, streaming,
the modules — checks its operands, builds a spec, resolves its ``impl`` and calls :func:`apply`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from convjax._src import halo, primitive
from convjax._src.checks import DTypeLike, PrecisionLike
from convjax._src.formulations import Backend, concrete
from convjax._src.spec import ConvSpec


def apply(
    x: jax.Array,
    kernel: jax.Array,
    spec: ConvSpec,
    backend: Backend,
    *,
    precision: PrecisionLike = None,
    preferred_element_type: DTypeLike | None = None,
) -> jax.Array:
    """``spec``'s convolution of ``x: [*batch, *spatial, C_in]`` (any number of batch dims) on
    ``backend``, as the convolution primitive.

    An empty result (a zero-size batch or output channels) and a sum over no input channels are
    zeros of the result's shape, whatever the backend.  An ``x`` sharded over a mesh along batch
    or spatial axes runs the backend on every device's block and halo (see ``halo.py``); one
    sharded along its channels, and a sharded kernel, are gathered first.
    """
    ndim = spec.ndim
    sharded = halo.mesh_axes(x)
    if sharded is not None:

        def local(block, local_spec, k):
            options = {"precision": precision, "preferred_element_type": preferred_element_type}
            return apply(block, k, local_spec, backend, **options)

        return halo.apply(x, spec, kernel.shape[:ndim], local, kernel, axes=sharded)
    x, kernel = halo.replicated(x), halo.replicated(kernel)
    batch = x.shape[: x.ndim - ndim - 1]
    out = spec.output_spatial(x.shape[-ndim - 1 : -1], kernel.shape[:ndim])
    dtype = np.dtype(x.dtype if preferred_element_type is None else preferred_element_type)
    if math.prod(batch) == 0 or x.shape[-1] == 0 or kernel.shape[-1] == 0:
        return jnp.zeros((*batch, *out, kernel.shape[-1]), dtype)
    flat = x.reshape(math.prod(batch), *x.shape[-ndim - 1 :])
    problem = _problem(spec, backend, flat.shape, kernel, x.dtype, dtype, precision)
    y = primitive.bind(*primitive.align_varying(flat, kernel), problem, "forward")
    return y.reshape(*batch, *y.shape[1:])


def apply_transpose(
    g: jax.Array,
    kernel: jax.Array,
    spec: ConvSpec,
    backend: Backend,
    input_shape: tuple[int, ...],
    *,
    precision: PrecisionLike = None,
) -> jax.Array:
    """``Aᵀ g`` for :func:`apply`'s convolution ``A`` of an ``input_shape`` input, by the
    primitive's input role directly, for integer operands (``jax.vjp`` gives an integer function
    ``float0`` cotangents); ``g`` is ``A``'s whole output."""
    ndim = spec.ndim
    g, kernel = halo.replicated(g), halo.replicated(kernel)
    batch = input_shape[: len(input_shape) - ndim - 1]
    if math.prod(batch) == 0 or input_shape[-1] == 0 or kernel.shape[-1] == 0:
        return jnp.zeros(input_shape, g.dtype)
    flat_shape = (math.prod(batch), *input_shape[-ndim - 1 :])
    problem = _problem(spec, backend, flat_shape, kernel, g.dtype, np.dtype(g.dtype), precision)
    flat = g.reshape(math.prod(batch), *g.shape[-ndim - 1 :])
    return primitive.bind(flat, kernel, problem, "input").reshape(input_shape)


def _problem(spec, backend, flat_shape, kernel, x_dtype, y_dtype, precision) -> primitive.Problem:
    return primitive.Problem(
        spec=spec,
        backend=concrete(backend, spec, flat_shape, kernel.shape, x_dtype),
        x_shape=tuple(flat_shape),
        kernel_shape=tuple(kernel.shape),
        x_dtype=np.dtype(x_dtype),
        kernel_dtype=np.dtype(kernel.dtype),
        y_dtype=np.dtype(y_dtype),
        precision=precision,
    )
