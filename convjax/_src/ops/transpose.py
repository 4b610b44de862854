"""The transposed convolution: by definition, the exact adjoint of the forward convolution.

``conv_transpose(x, kernel, **options)`` is the linear transpose of ``z ↦ conv(z, kernel,
**options)`` where ``z`` has the result's shape, so ``⟨conv(z), x⟩ = ⟨z, conv_transpose(x)⟩`` for
every ``z`` and ``x``.  It is computed as exactly that: ``jax.linear_transpose`` of the forward
convolution traced on the chosen backend.  On ``lax`` the transpose rule of
``conv_general_dilated`` emits the reversed kernel and input dilation that XLA recognises as a
backward-data convolution; on ``gather`` the transpose of the gather is a scatter-add through the
same index maps, and the transpose of reflect / replicate / circular padding folds the border
contributions back onto the input.

A forward convolution of stride ``s`` maps the ``s`` input sizes ``i … i + s − 1`` (more with
dilation) to the same output size, so the result size needs one more number: the output padding
``a = (i + lo + hi − k̂) mod s`` (Relationship 14 of Dumoulin & Visin), or the size itself.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from convjax._src import formulations, halo, shapes
from convjax._src.checks import (
    DTypeLike,
    PrecisionLike,
    check_arrays,
    check_dtypes,
    check_precision,
    check_preferred_element_type,
    dtype_kind,
    given_as_channels_first,
    input_name,
    op_name,
    per_dim,
    public_function,
)
from convjax._src.formulations import AutoBackend, AutotuneBackend, Backend, Impl
from convjax._src.ops.apply import apply, apply_transpose
from convjax._src.ops.layout import accepts_data_format, kernel_ndim
from convjax._src.spec import (
    ConvOptions,
    ConvSpec,
    Padding,
    PaddingMode,
    channels_first_hint,
    conv_options,
    likely,
    make_spec,
    split_shapes,
)

TRANSPOSE_KERNEL = "[*window, C_out // groups, C_in]"


@dataclasses.dataclass(frozen=True)
class ConvOperator:
    """A forward convolution as a linear map, and its adjoint.

    ``forward`` maps ``[*batch, *input_spatial, C]`` to ``[*batch, *output_spatial, C_out]``:
    ``spec``'s convolution, keeping the first ``output_spatial`` outputs of each spatial dim (all
    of them unless the output padding reaches the stride).

    Attributes:
      spec: the forward convolution.
      backend: the formulation that computes it (and so its adjoint).
      input_shape: the forward input's full shape, batch dims and channels included.
      output_spatial: the spatial sizes of the forward output that are kept.
    """

    spec: ConvSpec
    backend: Backend
    input_shape: tuple[int, ...]
    output_spatial: tuple[int, ...]

    @property
    def input_spatial(self) -> tuple[int, ...]:
        return self.input_shape[-self.spec.ndim - 1 : -1]

    def forward(
        self, z: jax.Array, kernel: jax.Array, *, precision: PrecisionLike = None
    ) -> jax.Array:
        y = apply(z, kernel, self.spec, self.backend, precision=precision)
        if y.shape[-self.spec.ndim - 1 : -1] == self.output_spatial:
            return y
        return y[(..., *(slice(0, o) for o in self.output_spatial), slice(None))]

    def transpose(self, kernel: jax.Array, *, precision: PrecisionLike = None):
        """The adjoint of :meth:`forward` for this kernel, as a function of one array."""
        return lambda x: _adjoint(self, kernel, x, precision=precision)


@functools.partial(jax.jit, static_argnames=("operator", "precision"))
def _adjoint(operator: ConvOperator, kernel, x, precision):
    """``Aᵀ x`` as the vjp of the linear forward conv ``A``: the convolution primitive's
    ``input`` role, on the formulation's own transpose.  Jitted so that the forward pass at zeros
    that ``jax.vjp`` traces is compiled away (and each operator compiles once when called
    eagerly)."""
    if dtype_kind(x.dtype) == "int":  # jax.vjp of an integer function is float0
        ndim = operator.spec.ndim
        window = kernel.shape[:ndim]
        whole = operator.spec.output_spatial(operator.input_spatial, window)
        cut = [(0, 0)] * (x.ndim - ndim - 1)
        cut += [(0, n - o) for n, o in zip(whole, operator.output_spatial, strict=True)]
        g = jnp.pad(x, [*cut, (0, 0)])  # the outputs forward drops read as zeros
        spec, backend = operator.spec, operator.backend
        return apply_transpose(g, kernel, spec, backend, operator.input_shape, precision=precision)
    forward = functools.partial(operator.forward, kernel=kernel, precision=precision)
    y, vjp = jax.vjp(forward, halo.zeros(operator.input_shape, x.dtype, like=x))
    return vjp(halo.like(x, y))[0]


def _reach(
    size: int, window: int, stride: int, dilation: int, padding: str | tuple[int, int]
) -> tuple[int, int, Callable[[int], int]]:
    """The result sizes ``first … last`` a transposed conv of a ``size`` input reaches, and the
    output padding ``a(n) = n + lo + hi − k̂ − s(size − 1)`` of each: the ``n >= 1`` whose
    forward conv output covers ``size`` with ``0 <= a(n) < max(stride, dilation)``.  ``n + lo +
    hi`` never decreases with ``n`` (the padding is fixed, or ``'SAME'``'s, which pads up to the
    next stride), so the sizes are one range, found by bisection (no loop over the stride)."""
    span = shapes.effective_window(window, dilation)
    base = stride * (size - 1) + span
    limit = max(stride, dilation)

    def output_padding(n: int) -> int:
        pads = (
            shapes.string_padding(padding, n, window, stride, dilation)
            if isinstance(padding, str)
            else padding
        )
        return n + sum(pads) - base

    def first_at_least(a: int) -> int:
        """The smallest ``n >= 1`` with ``output_padding(n) >= a``."""
        low, high = 1, max(base + limit, 1)  # output_padding(high) >= limit > a
        while low < high:
            middle = (low + high) // 2
            if output_padding(middle) >= a:
                high = middle
            else:
                low = middle + 1
        return low

    return first_at_least(0), first_at_least(limit) - 1, output_padding


def _result_size(dim, i, k, s, d, p, a, *, op, x_name, shape_name, output_shape) -> int:
    """The result size along spatial dim ``dim`` of a transposed conv of an ``i``-long input:
    ``output_shape[dim]`` if given (and reachable), ``s · i`` for ``'SAME'``, else the size whose
    output padding is ``a``."""
    first, last, output_padding = _reach(i, k, s, d, p)
    described = (
        f"{x_name} spatial size {i} with window {k}, stride {s}, dilation {d} and padding {p!r}"
    )
    if first > last:
        raise ValueError(
            f"{op}: the result would be empty in spatial dim {dim}: {described} reaches no size "
            f">= 1."
        )
    if output_shape is not None:
        n = output_shape[dim]
        if not first <= n <= last:
            raise ValueError(
                f"{op}: {shape_name} {output_shape} is out of reach in spatial dim {dim}: "
                f"{described} reaches sizes {first} to {last}, got {n}."
            )
        return n
    if p == "SAME":
        return s * i
    n = first + a - output_padding(first)  # a fixed padding: a(n) grows by one per n
    if not first <= n <= last or output_padding(n) != a:
        raise ValueError(
            f"{op}: the result would be empty in spatial dim {dim}: {described} and "
            f"output_padding {a} give a size < 1."
        )
    return n


def transpose_options(
    op: str,
    ndim: int,
    *,
    strides: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    output_shape: Any = None,
    dilation: Any = 1,
    groups: Any = 1,
    padding_mode: Any = "zeros",
    impl: Impl = "auto",
    shape_name: str = "output_shape",
    dilation_name: str = "dilation",
) -> tuple[ConvOptions, tuple[int, ...], tuple[int, ...] | None]:
    """Check a transposed conv's options without shapes: the forward conv's options, then
    ``output_padding`` (each ``< max(stride, dilation)``, 0 with ``'SAME'``) and
    ``output_shape`` (not both)."""
    options = conv_options(
        op,
        ndim,
        strides=strides,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
        dilation_name=dilation_name,
    )
    formulations.resolve(op, impl)
    strides, dilation = options.strides, options.dilation
    output_padding = per_dim(op, "output_padding", output_padding, ndim, minimum=0)
    if any(a >= max(s, d) for a, s, d in zip(output_padding, strides, dilation, strict=True)):
        raise ValueError(
            f"{op}: output_padding must be smaller than the stride or the dilation in every dim, "
            f"got output_padding {output_padding} with strides {strides} and {dilation_name} "
            f"{dilation}."
        )
    if output_shape is not None:
        if any(output_padding):
            raise ValueError(
                f"{op}: pass output_padding or {shape_name}, not both, got output_padding "
                f"{output_padding} and {shape_name} {output_shape!r}."
            )
        output_shape = per_dim(op, shape_name, output_shape, ndim, minimum=1)
    elif options.padding == "SAME" and any(output_padding):
        raise ValueError(
            f"{op}: output_padding must be 0 with padding 'SAME', where the result size is "
            f"strides * size; pass {shape_name} for another size, got output_padding "
            f"{output_padding}."
        )
    return options, output_padding, output_shape


def transpose_operator(
    op: str,
    x_shape: Sequence[int],
    kernel_shape: Sequence[int],
    *,
    strides: int | Sequence[int] = 1,
    padding: Padding = 0,
    output_padding: int | Sequence[int] = 0,
    output_shape: int | Sequence[int] | None = None,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: PaddingMode = "zeros",
    impl: Impl = "auto",
    x_name: str | None = None,
    shape_name: str = "output_shape",
    kernel_layout: str = TRANSPOSE_KERNEL,
) -> ConvOperator:
    """The forward convolution whose adjoint takes ``x_shape`` back to the result's shape.

    Determines the forward input's spatial sizes (from ``output_shape``, or from the padding and
    ``output_padding``), then builds the forward :class:`ConvSpec` with :func:`make_spec`, so the
    core checks report under ``op``.
    """
    x_name = x_name or input_name()
    ndim, window, spatial = split_shapes(
        op,
        x_shape,
        kernel_shape,
        x_name=x_name,
        x_layout="[*batch, *spatial, C]",
        kernel_layout=kernel_layout,
    )
    x_shape, kernel_shape = tuple(x_shape), tuple(kernel_shape)
    if kernel_shape[-1] != x_shape[-1]:
        raise ValueError(
            f"{op}: kernel.shape[-1] must equal the channels of {x_name} ({x_shape[-1]}), got "
            f"{kernel_shape[-1]} (kernel shape {kernel_shape} is {kernel_layout})."
            + _transposed_layout_hint(x_shape, kernel_shape, ndim, x_name)
        )
    options, output_padding, output_shape = transpose_options(
        op,
        ndim,
        strides=strides,
        padding=padding,
        output_padding=output_padding,
        output_shape=output_shape,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
        impl=impl,
        shape_name=shape_name,
    )
    strides, dilation, groups = options.strides, options.dilation, options.groups
    # Explicit padding does not depend on the size; strings are resolved per candidate size.
    pads = (options.padding,) * ndim if isinstance(options.padding, str) else options.padding
    where = {"op": op, "x_name": x_name, "shape_name": shape_name, "output_shape": output_shape}
    result = [
        _result_size(
            dim,
            spatial[dim],
            window[dim],
            strides[dim],
            dilation[dim],
            pads[dim],
            output_padding[dim],
            **where,
        )
        for dim in range(ndim)
    ]

    c_out = kernel_shape[-2] * groups
    input_shape = (*x_shape[: -ndim - 1], *result, c_out)
    spec = make_spec(
        op,
        input_shape,
        kernel_shape,
        strides=strides,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
    )
    backend = formulations.resolve(op, impl)
    formulations.check_accepts(op, backend, spec, input_shape, kernel_shape)
    if isinstance(backend, AutoBackend | AutotuneBackend):  # choose for the transposed conv
        backend = dataclasses.replace(backend, transposed=True)
    covered = spec.output_spatial(result, window)
    if any(o < i for o, i in zip(covered, spatial, strict=True)):  # unreachable by construction
        raise AssertionError(f"{op}: forward output {covered} does not cover {spatial}.")
    return ConvOperator(spec, backend, input_shape, tuple(spatial))


@public_function("x", "kernel")
@accepts_data_format(kernel_ndim("kernel"))
def conv_transpose(
    x: jax.Array,
    kernel: jax.Array,
    *,
    strides: int | Sequence[int] = 1,
    padding: Padding = 0,
    output_padding: int | Sequence[int] = 0,
    output_shape: int | Sequence[int] | None = None,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: PaddingMode = "zeros",
    impl: Impl = "auto",
    precision: PrecisionLike = None,
    preferred_element_type: DTypeLike | None = None,
) -> jax.Array:
    r"""Transposed convolution: the adjoint of :func:`~convjax.conv` with the same options.

    For the forward convolution ``A = conv(·, kernel, strides=…, padding=…, dilation=…,
    groups=…, padding_mode=…)`` taking the result's shape to ``x``'s, this returns ``Aᵀ x``:

    .. math::
        \langle \mathrm{conv}(z), x \rangle = \langle z, \mathrm{conv\_transpose}(x) \rangle
        \quad \text{for all } z.

    Written out for zero padding, ``r[b, n, gC + c] = Σ_{o, t : o s − lo + t d = n} Σ_j
    x[b, o, gJ + j] · kernel[t, c, gJ + j]``: each input scatters a weighted copy of the kernel,
    with ``C = C_out / groups`` and ``J = C_in / groups``.  The transpose of reflect, replicate
    and circular padding folds the contributions that land in the border back onto the pixels
    that padding copied.

    Result size per spatial dim, with ``k̂ = (k − 1) d + 1``:

    - explicit padding ``(lo, hi)`` (or ``"VALID"``, ``"FULL"``, ``"CAUSAL"``):
      ``s (i′ − 1) + a + k̂ − lo − hi`` (Relationship 14), where ``a`` is ``output_padding``;
      ``a = (i + lo + hi − k̂) mod s`` restores a forward input of size ``i``;
    - ``"SAME"``: ``s · i′`` (``output_padding`` must be 0);
    - ``output_shape`` given: that size, which must be reachable (string padding is resolved
      against it, as the forward conv resolves it against its input).

    As in PyTorch, ``output_padding`` must be smaller than the stride or the dilation.  When it
    is at least the stride, the forward conv of the larger result has more than ``i′`` outputs;
    the result is then the adjoint of that conv keeping only its first ``i′`` outputs (which is
    what PyTorch computes).

    Args:
      x: ``[*batch, *spatial, C_in]``, zero or more leading batch dims.
      kernel: ``[*window, C_out // groups, C_in]``: the forward conv's kernel (from
        ``C_out`` result channels to ``C_in``).  A PyTorch ``ConvTranspose{1,2,3}d`` weight
        ``[C_in, C_out // groups, *window]`` is this tensor with its axes permuted to
        ``(*window, 1, 0)``.
      strides: the forward conv's stride (the upsampling factor), an int or one per dim.
      padding: the forward conv's padding: an int, one int per dim, one ``(lo, hi)`` pair per
        dim, ``"SAME"``, ``"VALID"``, ``"FULL"`` or ``"CAUSAL"``.  Default 0, as in PyTorch.
      output_padding: ``a`` above, an int or one per dim; each ``< max(stride, dilation)``.
      output_shape: the result's spatial sizes, instead of ``output_padding``.
      dilation: the forward conv's kernel dilation, an int or one per dim.
      groups: feature groups; result channel ``g C + c`` sees only input group ``g``.
      padding_mode: the forward conv's ``"zeros"``, ``"reflect"``, ``"replicate"`` or
        ``"circular"`` padding.
      impl: the formulation whose forward conv is transposed: ``"auto"`` (default: the
        fastest for a transposed conv of this spec), ``"lax"`` (the transpose of
        ``lax.conv_general_dilated``: a backward-data conv), ``"gather"`` (scatter-add through
        the gather path's index maps, no lax convolution), ``"taps"``, ``"fft"``, ``"planes"``,
        ``"autotune"``, or a backend instance (:func:`convjax.formulations` lists them).
      precision: passed to the contraction (``lax.Precision.HIGHEST`` avoids TF32 on GPUs).
      preferred_element_type: the result dtype; both operands are cast to it and the transpose
        runs in it.

    Returns:
      ``[*batch, *result_spatial, C_out]``.

    >>> import jax.numpy as jnp, convjax
    >>> y = convjax.conv(jnp.ones((5, 5, 1)), jnp.ones((3, 3, 1, 1)), strides=2)  # 5x5 -> 2x2
    >>> convjax.conv_transpose(y, jnp.ones((3, 3, 1, 1)), strides=2).shape  # and back to 5x5
    (5, 5, 1)

    References:
      Dumoulin & Visin, "A guide to convolution arithmetic for deep learning" (2016), §4.
    """
    op = op_name("conv_transpose")
    check_arrays(op, x=x, kernel=kernel)
    operator = transpose_operator(
        op,
        x.shape,
        kernel.shape,
        strides=strides,
        padding=padding,
        output_padding=output_padding,
        output_shape=output_shape,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
        impl=impl,
    )
    check_dtypes(op, x.dtype, kernel.dtype)
    check_precision(op, precision)
    check_preferred_element_type(op, preferred_element_type, x.dtype)
    formulations.check_accepts(
        op, operator.backend, operator.spec, operator.input_shape, kernel.shape, x.dtype
    )
    if preferred_element_type is not None:
        x, kernel = x.astype(preferred_element_type), kernel.astype(preferred_element_type)
    return operator.transpose(kernel, precision=precision)(x)


def _transposed_layout_hint(x_shape, kernel_shape, ndim: int, x_name: str) -> str:
    """The porting mistakes a transposed convolution's channel mismatch most likely is: PyTorch's
    ``ConvTranspose`` weight ``[C_in, C_out // groups, *window]``, a kernel with its last two axes
    swapped (Flax's ``ConvTranspose`` kernel, ``[*window, C_in, C_out]``), or a channels-first
    input; an empty string when none fits."""
    c_in, hints = x_shape[-1], []
    square = len(set(kernel_shape[2:])) == 1
    if ndim >= 2 and kernel_shape[0] == c_in and square:
        hints.append(
            "the kernel looks like PyTorch's ConvTranspose weight [C_in, C_out // groups, "
            "*window]: convert it with convjax.from_torch.conv_transpose_kernel(weight)"
        )
    if kernel_shape[-2] == c_in:
        hints.append(
            "the kernel's last two axes look swapped ([*window, C_in, C_out], Flax's "
            "ConvTranspose layout): swap them with jnp.swapaxes(kernel, -1, -2)"
        )
    first = len(x_shape) - ndim - 1
    if first >= 0 and x_shape[first] == kernel_shape[-1] and not given_as_channels_first():
        hints.append(channels_first_hint(x_name, first, kernel_shape[-1], x_shape))
    return likely(hints)
