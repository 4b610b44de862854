"""What every formulation shares: the ``Backend`` protocol and the padding helpers.

A formulation (a *backend*) is a hashable callable ``backend(x, kernel, spec, *, precision,
preferred_element_type)`` taking ``x: [B, *spatial, C_in]`` and ``kernel: [*window, C_in //
groups, C_out]`` and returning ``[B, *out_spatial, C_out]``.  All compute

    y[b, o, g·J + j] = Σ_t Σ_c  pad(x)[b, o·s − lo + t·d, g·C + c] · kernel[t, c, g·J + j]

where ``pad`` is the spec's padding mode, ``C = C_in / groups`` and ``J = C_out / groups``.
``refuses(spec, x_shape, kernel_shape)`` says why a backend cannot run a convolution (``None``
when it can), and ``kinds`` which dtypes it computes (floating, complex, integer; all where it
has no such attribute); both are asked before any array work.

A backend may also give the two transposes of its convolution, ``input_gradient`` (``Aᵀ g``)
and ``kernel_gradient`` (``Σ_o x[o·s + t·d] ⊗ g[o]``), returning ``None`` where it has no rule of
its own; the primitive transposes ``__call__`` otherwise.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from convjax._src.checks import DTYPE_KINDS, DTypeLike, PrecisionLike, dtype_kind, op_name
from convjax._src.spec import ConvSpec

# jnp.pad's name for each padding mode.
PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}

DEFAULT_MEMORY_BUDGET = 512 * 2**20


@runtime_checkable
class Backend(Protocol):
    """A formulation of the convolution: see the module docstring."""

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

    def refuses(self, spec: ConvSpec, x_shape: Any, kernel_shape: Any) -> str | None: ...


class AcceptsAll:
    """Mixin for backends that run every convolution, in every dtype."""

    kinds: ClassVar[tuple[str, ...]] = DTYPE_KINDS

    def refuses(self, spec, x_shape, kernel_shape) -> str | None:
        return None


class Chooses(AcceptsAll):
    """Mixin for backends that run another formulation, the one ``choose(spec, x_shape,
    kernel_shape, dtype)`` names for each convolution (``auto``, ``autotune``)."""

    def __call__(self, x, kernel, spec, *, precision=None, preferred_element_type=None):
        backend = self.choose(spec, x.shape, kernel.shape, x.dtype)
        return backend(
            x, kernel, spec, precision=precision, preferred_element_type=preferred_element_type
        )


def pad(x: jax.Array, spec: ConvSpec) -> jax.Array:
    """``x: [B, *spatial, C]`` padded on its spatial axes as ``spec`` says."""
    if not any(lo or hi for lo, hi in spec.padding):
        return x
    return pad_spatial(x, spec.padding, spec.padding_mode)


def pad_spatial(x: jax.Array, widths, padding_mode: str) -> jax.Array:
    """``x: [B, *spatial, C]`` padded by ``widths`` (one ``(lo, hi)`` per spatial axis) in
    ``padding_mode``.  Circular padding is one tiling and a slice per axis: ``jnp.pad``'s
    ``"wrap"`` adds one copy of the axis per step, which never ends for a padding many times
    the input's size."""
    if padding_mode != "circular":
        return jnp.pad(x, ((0, 0), *widths, (0, 0)), mode=PAD_MODES[padding_mode])
    for axis, (lo, hi) in enumerate(widths, start=1):
        n = x.shape[axis]
        if not (lo or hi) or n == 0:
            continue
        before, after = -(-lo // n), -(-hi // n)
        reps = [1] * x.ndim
        reps[axis] = before + 1 + after
        start = before * n - lo  # position -lo is x[-lo mod n]
        x = jax.lax.slice_in_dim(jnp.tile(x, reps), start, start + lo + n + hi, axis=axis)
    return x


def unpadded(spec: ConvSpec) -> ConvSpec:
    """``spec`` with no padding: for an input already padded by :func:`pad`."""
    return ConvSpec(spec.strides, ((0, 0),) * spec.ndim, spec.dilation, spec.groups, "zeros")


def accumulation_dtype(dtype: Any, preferred_element_type: Any = None) -> np.dtype:
    """Half-precision floats sum in float32, as XLA's convolutions do; otherwise the dtype
    given (integers sum in their result dtype and wrap around, as NumPy's do)."""
    if preferred_element_type is not None:
        return np.dtype(preferred_element_type)
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype_kind(dtype) == "float" and dtype.itemsize < 4 else dtype


def transposed_kernel(kernel, groups):
    """``[*window, C // G, G·J]`` → ``[*window, J, G·(C // G)]``: each tap's weights from
    ``C_out`` channels back to ``C_in``."""
    ndim = kernel.ndim - 2
    c, c_out = kernel.shape[-2:]
    k = kernel.reshape(*kernel.shape[:-1], groups, c_out // groups)
    k = jnp.moveaxis(k, ndim, -1)  # [*window, G, J, C]
    k = jnp.swapaxes(k, ndim, ndim + 1)  # [*window, J, G, C]
    return k.reshape(*kernel.shape[:ndim], c_out // groups, groups * c)


def flipped_transposed_kernel(kernel, groups):
    """:func:`transposed_kernel` with the window flipped: the kernel that makes the transpose
    of a stride-1 convolution (its input gradient) a stride-1 convolution of the cotangent."""
    return jnp.flip(transposed_kernel(kernel, groups), axis=tuple(range(kernel.ndim - 2)))


def contract(subscripts: str, a, b, *, precision=None, preferred_element_type=None):
    """``jnp.einsum(subscripts, a, b)`` for the formulations' contractions, with every
    ``precision`` lax's convolution takes, on every dtype:

    - a ``jax.lax.DotAlgorithmPreset`` with complex operands runs as real contractions of the
      real and imaginary parts (JAX's complex dot with a preset drops the imaginary parts);
    - a preset this platform's ``dot_general`` does not run (``F16_F16_F32`` on a CPU) is
      emulated as it specifies: the operands rounded to its input type, the products summed in
      its accumulation type; a preset without an input type (the FP8 ones) is refused.

    Only contractions see the preset: XLA:CPU's convolution ignores presets, and the
    multiply-add forms have no product to pass one to (see the README's ``precision``)."""
    options = dict(precision=precision, preferred_element_type=preferred_element_type)
    if not isinstance(precision, jax.lax.DotAlgorithmPreset):
        return jnp.einsum(subscripts, a, b, **options)
    if jnp.iscomplexobj(a) or jnp.iscomplexobj(b):
        parts = [(jnp.real(v), jnp.imag(v) if jnp.iscomplexobj(v) else None) for v in (a, b)]
        (ar, ai), (br, bi) = parts
        wide = None if preferred_element_type is None else jnp.zeros((), preferred_element_type)
        real_type = None if wide is None else jnp.real(wide).dtype
        part = functools.partial(
            contract, subscripts, precision=precision, preferred_element_type=real_type
        )
        real = part(ar, br) - (part(ai, bi) if ai is not None and bi is not None else 0)
        imag = sum(part(u, v) for u, v in ((ar, bi), (ai, br)) if u is not None and v is not None)
        result = jnp.result_type(a, b) if preferred_element_type is None else preferred_element_type
        return jax.lax.complex(real, imag).astype(result)
    if _dot_runs(precision, jax.default_backend()):
        return jnp.einsum(subscripts, a, b, **options)
    inputs = precision.supported_lhs_types
    if not inputs:
        raise ValueError(
            f"{op_name('conv')}: precision={precision} is not supported by dot_general on "
            f"{jax.default_backend()}, and it names no input type to round to; impl='lax' "
            "passes it to XLA's convolution."
        )
    result = jnp.result_type(a, b) if preferred_element_type is None else preferred_element_type
    narrow = [v.astype(inputs[0]) for v in (a, b)]
    y = jnp.einsum(subscripts, *narrow, preferred_element_type=precision.accumulation_type)
    return y.astype(result)


@functools.lru_cache(maxsize=32)
def _dot_runs(precision, platform: str) -> bool:
    """Whether ``platform``'s ``dot_general`` compiles ``precision`` (a preset); ``platform``, the
    default backend's, keys the cache."""
    operand = jax.ShapeDtypeStruct((1, 1), jnp.float32)
    dot = functools.partial(jax.lax.dot, precision=precision)
    try:
        jax.jit(dot).lower(operand, operand).compile()  # on the default backend, platform
    except (ValueError, TypeError, jax.errors.JaxRuntimeError):
        return False
    return True


def spatial_letters(ndim: int) -> str:
    """Dimension letters for ``lax.conv_general_dilated``'s dimension numbers."""
    return "DHW"[-ndim:] if ndim <= 3 else "".join(chr(ord("a") + i) for i in range(ndim))


def input_gradient(
    backend, g, kernel, spec, x_shape, x_dtype, *, precision=None, preferred_element_type=None
):
    """``Aᵀ g``, the cotangent of ``x`` for the cotangent ``g`` of ``backend``'s convolution: the
    backend's own rule where it has one, else JAX's transpose of its forward.
    ``preferred_element_type`` is the forward's."""
    rule = getattr(backend, "input_gradient", None)
    out = None if rule is None else rule(g, kernel, spec, x_shape, precision=precision)
    if out is None and dtype_kind(g.dtype) == "int":  # JAX transposes no integer function
        options = dict(precision=precision, preferred_element_type=preferred_element_type)
        out = transposed_as_forward(backend, g, kernel, spec, x_shape, **options)
    elif out is None:
        x = _example(g, x_shape, x_dtype)
        forward = lambda x: backend(  # noqa: E731
            x, kernel, spec, precision=precision, preferred_element_type=preferred_element_type
        )
        (out,) = jax.linear_transpose(forward, x)(g)
    return out


def transposed_as_forward(
    backend, g, kernel, spec, x_shape, *, precision=None, preferred_element_type=None
):
    """``Aᵀ g`` by ``backend``'s forward convolution, exact in any dtype: ``g`` spread onto the
    padded input's positions (:func:`spread`), convolved at stride one with the flipped kernel,
    its input and output channels exchanged; then the padding's rows folded back onto the ones
    they copy (:func:`unpad`)."""
    ndim = spec.ndim
    padded = [n + lo + hi for n, (lo, hi) in zip(x_shape[1:-1], spec.padding, strict=True)]
    spread_g = spread(g, kernel.shape[:ndim], spec.strides, spec.dilation, padded)
    stride_one = ConvSpec((1,) * ndim, ((0, 0),) * ndim, spec.dilation, spec.groups, "zeros")
    flipped = flipped_transposed_kernel(kernel, spec.groups)
    options = dict(precision=precision, preferred_element_type=preferred_element_type)
    return unpad(backend(spread_g, flipped, stride_one, **options), spec, tuple(x_shape))


def spread(g, window, strides, dilation, padded_spatial):
    """``g: [B, *out, C]``, a convolution's output cotangent, spread by the strides (zeros
    between) and padded by the dilated window less one on each side (and, after, by the padded
    input's trailing positions no window reaches): its stride-1 convolution with the flipped,
    channel-exchanged kernel lands on the ``padded_spatial`` positions of the padded input."""
    config = [(0, 0, 0)]
    for k, d, o, s, n in zip(window, dilation, g.shape[1:-1], strides, padded_spatial, strict=True):
        span = (k - 1) * d + 1
        unread = n - ((o - 1) * s + span)  # trailing positions no window reaches
        config.append((span - 1, span - 1 + unread, s - 1))
    return jax.lax.pad(g, jnp.zeros((), g.dtype), [*config, (0, 0, 0)])


def transposed_padding(spec: ConvSpec, window) -> tuple[tuple[int, int], ...]:
    """The padding ``(k̂ − 1 − lo, k̂ − 1 − hi)`` under which a stride-1 zero-padded
    convolution's transpose is the stride-1 convolution of the cotangent with the flipped,
    channel-exchanged kernel: ``dx[i] = Σ_t g[i + lo − t·d] k[t]`` (negative where the padding
    passes the window: those positions are dropped)."""
    spans = [(k - 1) * d + 1 for k, d in zip(window, spec.dilation, strict=True)]
    return tuple(
        (span - 1 - lo, span - 1 - hi) for span, (lo, hi) in zip(spans, spec.padding, strict=True)
    )


def unpad(grad, spec: ConvSpec, x_shape: tuple[int, ...]):
    """The cotangent of ``x`` from that of ``pad(x, spec)``: border rows folded back by the
    padding mode (cropped, for zero padding), JAX's transpose of :func:`pad`, which is linear
    in every dtype."""
    x = jnp.zeros_like(grad, shape=x_shape)  # an example, varying like the cotangent
    (unpadded,) = jax.linear_transpose(lambda x: pad(x, spec), x)(grad)
    return unpadded


def kernel_gradient(
    backend, x, g, spec, kernel_shape, kernel_dtype, *, precision=None, preferred_element_type=None
):
    """``Σ_o x[o·s + t·d] ⊗ g[o]``, the cotangent of the kernel: the backend's own rule where it
    has one, else JAX's transpose of its forward.  ``preferred_element_type`` is the forward's."""
    rule = getattr(backend, "kernel_gradient", None)
    out = None if rule is None else rule(x, g, spec, kernel_shape, precision=precision)
    if out is None:
        kernel = _example(g, kernel_shape, kernel_dtype)
        forward = lambda kernel: backend(  # noqa: E731
            x, kernel, spec, precision=precision, preferred_element_type=preferred_element_type
        )
        (out,) = jax.linear_transpose(forward, kernel)(g)
    return out


def materialized(v: jax.Array) -> jax.Array:
    """``v``, computed into a buffer of its own before its consumers read it: XLA:CPU fuses no
    producer of ``v`` into them.

    Why: XLA:CPU fuses elementwise producers into every consumer, and recomputes them there.
    Its convolution reads the kernel gradient's operands in a transposed layout, and the copy
    that transposes an operand absorbs the elementwise ops that made it; across a residual
    stack (``x = (x + f(x)) · s``, layer after layer) each copy then recomputed the whole
    residual stream from the layers' raw outputs (a TCN's training step spent 37 of its 49 ms
    there).  A conditional is the one boundary XLA:CPU does not fuse across
    (``lax.optimization_barrier`` is gone before fusion there).  Its other branch, taken only
    where ``v``'s first element is NaN, returns ``v + (−0)``: ``v`` again, exactly.  Not
    transposable: for evaluated forms only (a role's program), never inside one that JAX
    transposes.
    """
    if v.size == 0:
        return v
    first = v.reshape(-1)[0]
    negative_zero = _negative_zero(v.dtype)
    return jax.lax.cond(first == first, lambda v: v, lambda v: v + negative_zero, v)


def tied(v: jax.Array, w: jax.Array) -> jax.Array:
    """``v`` again, computed only once ``w`` exists: ``v + (−0)``, the ``−0`` read from ``w``'s
    first element in a way XLA does not fold (``x + (−0) = x`` for every ``x``, ``−0`` and
    non-finite values included).  XLA schedules what reads the result after ``w``'s producer,
    rather than wherever ``v`` is ready."""
    if w.size == 0:
        return v
    first = w.reshape(-1)[0]
    return v + _negative_zero(v.dtype, jnp.where(jnp.isfinite(first), -jnp.abs(first * 0), -0.0))


def _negative_zero(dtype, value: Any = -0.0) -> jax.Array:
    """``value`` (a real −0) as ``dtype``: ``−0 − 0i`` for a complex one, whose sum with any
    ``x`` is ``x``; ``0`` for an integer one."""
    value = jnp.asarray(value)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        value = jax.lax.complex(value, value)
    return value.astype(dtype)


def _example(like, shape, dtype):
    """An example value of ``shape`` and ``dtype`` for ``jax.linear_transpose`` (which reads only
    its type), varying over the manual mesh axes ``like`` varies over inside a ``shard_map``: a
    transpose taken against an invariant input would sum the cotangent over those axes."""
    return jnp.zeros_like(like, dtype, shape=shape)
