"""Deconvolution: the inverse of a convolution, not its transpose.

A transposed convolution only restores the *shape* of the forward conv's input; a deconvolution
restores its *values*.  For the forward convolution ``A = conv(·, kernel, **options)`` the
problem is the Tikhonov-regularised least squares

    x̂ = argmin_x ‖A x − y‖² + λ ‖x‖²

- ``"lsq"``: conjugate gradients on the normal equations ``(AᴴA + λI) x = Aᴴ y``, using
  :func:`~convjax.conv` and :func:`~convjax.conv_transpose` (of the conjugate kernel, for
  ``Aᴴ``): this problem, for any convolution convjax expresses and any ``y``, to the tolerance
  asked for.
- ``"wiener"``: in closed form, one small linear solve per frequency, for stride-1 convolutions.
  With circular padding and a same-size output the convolution is circulant and this *is* the
  problem above, for any ``y``.  With zero padding Wiener solves the *periodic* problem on a
  zero-extended grid (see :func:`deconvolve`), which is the problem above only when its solution
  vanishes on the extension: noise-free ``y`` with ``padding="FULL"`` and ``λ = 0``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from convjax._src import halo, shapes
from convjax._src.checks import (
    PrecisionLike,
    check_arrays,
    check_dtypes,
    check_int,
    check_precision,
    check_real,
    dtype_kind,
    op_name,
    public_function,
)
from convjax._src.formulations import Impl
from convjax._src.ops.layout import accepts_data_format, kernel_ndim
from convjax._src.ops.transpose import ConvOperator, transpose_operator
from convjax._src.spec import Padding, PaddingMode

METHODS = ("wiener", "lsq")
FORWARD_KERNEL = "[*window, C_in // groups, C_out]"


class DeconvolveInfo(NamedTuple):
    """What :func:`deconvolve` did.

    Attributes:
      iterations: conjugate-gradient iterations run (0 for ``"wiener"``).
      residual: ``‖conv(x̂) − y‖ / ‖y‖`` of the returned ``x̂``, one per batch element (shape
        ``y.shape[:-ndim - 1]``); where ``y`` is all zeros, the absolute ``‖conv(x̂)‖``.
    """

    iterations: jax.Array
    residual: jax.Array


@public_function("y", "kernel")
@accepts_data_format(kernel_ndim("kernel"))
def deconvolve(
    y: jax.Array,
    kernel: jax.Array,
    *,
    method: str = "wiener",
    regularization: float | jax.Array = 0.0,
    strides: int | Sequence[int] = 1,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: PaddingMode = "zeros",
    output_padding: int | Sequence[int] = 0,
    input_shape: int | Sequence[int] | None = None,
    tol: float = 1e-6,
    max_iters: int = 500,
    impl: Impl = "auto",
    precision: PrecisionLike = None,
    return_info: bool = False,
) -> jax.Array | tuple[jax.Array, DeconvolveInfo]:
    r"""Recover ``x`` from ``y = conv(x, kernel, **options)``: the inverse, not the transpose.

    Returns the regularised least-squares solution

    .. math::
        \hat x = \arg\min_x \lVert \mathrm{conv}(x) - y \rVert^2 + \lambda \lVert x \rVert^2

    where ``conv`` is :func:`~convjax.conv` with ``strides``, ``padding``, ``dilation``,
    ``groups`` and ``padding_mode``, with conv's defaults, so ``deconvolve(conv(x, kernel,
    **options), kernel, **options)`` always inverts the convolution that made ``y``.  The size
    of ``x`` is found as :func:`~convjax.conv_transpose` finds its result's (``output_padding``
    or ``input_shape``), so ``x̂`` has the shape ``conv_transpose(y, kernel, **options)`` has.

    ``method="wiener"`` solves it in closed form per frequency: ``X = (Hᴴ H + λ I)⁺ Hᴴ Y``
    with ``H(f)`` the ``C_out × C_in`` transfer matrix (block diagonal over groups; a scalar for
    depthwise kernels; ``Hᴴ (H Hᴴ + λ I)⁺ Y`` when a group has fewer outputs than inputs).  For
    a constant noise-to-signal power ratio this is the Wiener filter with ``λ`` = that ratio.
    With ``λ = 0`` and a singular ``H(f)`` it is the pseudo-inverse at that frequency, for
    scalar and matrix transfer functions alike.  It needs ``strides == 1`` and:

    - ``padding_mode="circular"`` with a same-size output (``lo + hi = k̂ − 1``, e.g.
      ``"SAME"``): the conv is circulant, diagonal in the DFT of size ``i``, and Wiener is the
      exact minimiser above for any ``y`` and ``λ`` (as ``"lsq"`` is);
    - ``padding_mode="zeros"``: the conv is a window of the linear convolution, which is
      circulant on the grid of ``n = i + k̂ − 1`` samples.  Wiener places ``y`` on that grid
      (zero where the padding cut the linear convolution off), solves the *periodic* problem
      ``argmin_z ‖C z − y_n‖² + λ ‖z‖²`` over all ``z`` of size ``n``, and returns the first
      ``i`` samples of ``z``.  That is the minimiser above only when the periodic solution is
      zero on the last ``k̂ − 1`` samples, as it is for noise-free ``y = conv(x)`` with
      ``padding="FULL"``, ``λ = 0`` and an invertible ``H``: then Wiener returns ``x`` exactly.
      With noise or ``λ > 0`` the periodic answer is a different (and by the objective above
      worse) one; with a smaller padding the unseen border of the linear convolution is taken
      as zero.  Use ``"lsq"`` for the minimiser of any zero-padded conv.

    ``method="lsq"`` runs conjugate gradients on ``(AᴴA + λI) x = Aᴴ y`` with ``A = conv`` and
    ``Aᴴ`` its adjoint, ``conv_transpose`` of the conjugate kernel (``Aᵀ`` for real kernels), on
    backend ``impl``, from ``x = 0``, one independent solve per batch element, until
    ``‖Aᴴ y − (AᴴA + λI) x‖ <= tol · ‖Aᴴ y‖`` or ``max_iters``.  It handles every convolution
    convjax expresses (strided, dilated, grouped, any padding mode).  Started from zero with
    ``λ = 0`` the iterates stay in the range of ``Aᴴ``, so an underdetermined (e.g. strided)
    problem converges to the minimum-norm solution ``A⁺ y``.

    ``y`` and ``kernel`` share a floating, complex or integer dtype.  Complex ones are solved in
    complex arithmetic (the full DFT for Wiener, conjugated inner products for ``"lsq"``).
    Integers are computed and returned in floating point, as :func:`jax.numpy.linalg.solve`
    does: float32 for integers of up to 32 bits, float64 for 64-bit ones.  Both methods solve in
    the units of ``y``'s and the kernel's largest finite magnitudes (``λ`` in the kernel's units
    squared), so the answer does not depend on the units; a kernel with a non-finite weight has
    no inverse, and every output is NaN.

    Both methods jit.  Both are differentiable in ``y``, ``kernel`` and ``regularization``:
    ``"wiener"`` directly, ``"lsq"`` by implicit differentiation of the normal equations
    (``lax.custom_linear_solve``), exact where ``AᴴA + λI`` is invertible.  That derivative is
    the exact least-squares solution's, not the capped iteration's: it matches the returned
    ``x̂`` (and forward and reverse mode agree) only once the solver has converged, which
    ``return_info=True`` shows.

    Args:
      y: ``[*batch, *spatial, C_out]``, the convolved signal.
      kernel: ``[*window, C_in // groups, C_out]``, the forward conv's kernel (as for
        :func:`~convjax.conv`).
      method: ``"wiener"`` or ``"lsq"``.
      regularization: ``λ >= 0``, the Tikhonov weight (for Wiener: the noise-to-signal power
        ratio).  With ``λ = 0`` Wiener takes the pseudo-inverse where a transfer matrix is
        singular.  A traced value is not checked.
      strides, padding, dilation, groups, padding_mode: the forward conv's options.
      output_padding: picks the size of ``x`` among those giving ``y``, as in
        :func:`~convjax.conv_transpose`.
      input_shape: the spatial sizes of ``x``, instead of ``output_padding``.
      tol: ``"lsq"``: relative tolerance on the normal-equations residual.
      max_iters: ``"lsq"``: iteration cap.
      impl: ``"lsq"``: the backend of the convolutions (and of the ``info`` residual).
      precision: passed to the convolutions and contractions.
      return_info: also return a :class:`DeconvolveInfo`.

    Returns:
      ``x̂: [*batch, *input_spatial, C_in]`` of ``y``'s dtype (floating point for integers), or
      ``(x̂, info)`` with ``return_info=True``.

    >>> import jax.numpy as jnp, convjax
    >>> x = jnp.arange(8.0).reshape(8, 1)
    >>> kernel = jnp.array([0.2, 0.6, 0.2]).reshape(3, 1, 1)
    >>> options = dict(padding="SAME", padding_mode="circular")
    >>> y = convjax.conv(x, kernel, **options)
    >>> bool(jnp.allclose(convjax.deconvolve(y, kernel, **options), x, atol=1e-4))  # the inverse
    True
    >>> bool(jnp.allclose(convjax.conv_transpose(y, kernel, **options), x, atol=1e-4))
    False

    References:
      Wiener (1949); Hansen, "Deblurring Images: Matrices, Spectra, and Filtering" (2006);
      Paige & Saunders, "LSQR" (1982) for conjugate gradients on least squares.
    """
    op = op_name("deconvolve")
    check_arrays(op, y=y, kernel=kernel)
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"{op}: method must be one of {METHODS}, got {method!r}.")
    if not isinstance(regularization, jax.core.Tracer):  # a traced weight is the caller's
        check_real(op, "regularization", regularization)
    tol = check_real(op, "tol", tol)
    max_iters = check_int(op, "max_iters", max_iters, minimum=0)
    check_precision(op, precision)
    operator = transpose_operator(
        op,
        y.shape,
        kernel.shape,
        strides=strides,
        padding=padding,
        output_padding=output_padding,
        output_shape=input_shape,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
        impl=impl,
        x_name="y",
        shape_name="input_shape",
        kernel_layout=FORWARD_KERNEL,
    )
    check_dtypes(op, y.dtype, kernel.dtype, x_name="y")
    if dtype_kind(y.dtype) == "int":  # a least-squares solution is not an integer one
        y, kernel = y.astype(_inexact(y.dtype)), kernel.astype(_inexact(y.dtype))
    return _deconvolve(
        y,
        kernel,
        regularization,
        op=op,
        operator=operator,
        method=method,
        tol=tol,
        max_iters=max_iters,
        precision=precision,
        return_info=return_info,
    )


@functools.partial(
    jax.jit,
    static_argnames=("op", "operator", "method", "tol", "max_iters", "precision", "return_info"),
)
def _deconvolve(
    y, kernel, regularization, *, op, operator, method, tol, max_iters, precision, return_info
):
    """:func:`deconvolve` of checked operands, as one program (an eager call compiles once)."""
    # Solved in units of their largest magnitudes (powers of two), with λ in the kernel's units
    # squared: the same x, but sums of squares that neither underflow nor overflow in float32 (a
    # kernel of 1e-8 made ⟨p, Ap⟩ zero, and the solve stopped at x = 0).
    y_scale, kernel_scale = _magnitude(y), _magnitude(kernel)
    units = (y_scale / kernel_scale).astype(y.dtype)
    y, kernel = y / y_scale.astype(y.dtype), kernel / kernel_scale.astype(kernel.dtype)
    real = np.dtype(jnp.finfo(y.dtype).dtype)  # λ is real; at least float32, as _wiener's
    scale = kernel_scale.astype(real if real.itemsize >= 4 else np.float32)
    regularization = jnp.asarray(regularization, scale.dtype) / scale / scale  # no underflow
    if method == "wiener":
        wiener = functools.partial(
            _wiener,
            op,
            operator=operator,
            regularization=regularization,
            precision=precision,
        )
        x = halo.per_batch(wiener, y, kernel, ndim=operator.spec.ndim)
        iterations = jnp.zeros((), jnp.int32)
    else:
        x, iterations = _lsq(y, kernel, operator, regularization, tol, max_iters, precision)
    # A non-finite weight has no inverse: its NaN reaches every output, as no zero may hide it.
    x = jnp.where(jnp.all(jnp.isfinite(kernel)), x, jnp.full_like(x, jnp.nan))
    if not return_info:
        return x * units
    ndim = operator.spec.ndim
    axes = tuple(range(y.ndim - ndim - 1, y.ndim))
    misfit = operator.forward(x, kernel, precision=precision) - y  # in the solve's units
    misfit, scale = _squared_norm(misfit, axes), _squared_norm(y, axes)
    residual = jnp.sqrt(misfit / jnp.where(scale > 0, scale, jnp.ones_like(scale)))
    return x * units, DeconvolveInfo(iterations, residual)


def _magnitude(a) -> jax.Array:
    """The power of two nearest above the largest finite ``|a|`` (1 where there is none, or it
    is 0), a constant to differentiation.  Dividing by a power of two is exact, so the solve in
    these units computes the same numbers as in the caller's, bit for bit, wherever those
    neither underflow nor overflow."""
    size = jnp.abs(a)
    largest = jnp.max(jnp.where(jnp.isfinite(size), size, 0), initial=0)
    _, exponent = jnp.frexp(jnp.where(largest > 0, largest, jnp.ones_like(largest)))
    return lax.stop_gradient(jnp.ldexp(jnp.ones_like(largest), exponent))


def _inexact(dtype) -> np.dtype:
    """The floating dtype integers compute in, as in ``jnp.linalg`` (JAX's ``to_inexact_dtype``):
    float64 for 64-bit integers, float32 for narrower ones."""
    return np.dtype(np.float64 if np.dtype(dtype).itemsize == 8 else np.float32)


def _squared_norm(v, axes):
    """``‖v‖²`` over ``axes``, real for complex ``v``."""
    return jnp.sum(jnp.real(jnp.conj(v) * v), axis=axes)


def _wiener(op: str, y, kernel, *, operator: ConvOperator, regularization, precision):
    spec = operator.spec
    ndim = spec.ndim
    grid, lows, frame = _periodic_frame(op, y, kernel.shape[:ndim], operator)
    dtype = y.dtype if np.dtype(y.dtype).itemsize >= 4 else np.dtype(np.float32)
    frame, kernel = frame.astype(dtype), kernel.astype(dtype)
    transfer = _transfer(kernel, spec, lows, grid)  # [*freq, C, C_out]
    # A real signal's spectrum is Hermitian: the half the real-input DFT keeps is all of it.
    if dtype_kind(dtype) == "complex":
        dft, inverse_dft = jnp.fft.fftn, jnp.fft.ifftn
    else:
        dft, inverse_dft = jnp.fft.rfftn, jnp.fft.irfftn

    batch_shape = frame.shape[: frame.ndim - ndim - 1]
    flat = frame.reshape(math.prod(batch_shape), *frame.shape[-ndim - 1 :])  # [B, *grid, C_out]
    spectrum = dft(flat, axes=tuple(range(1, ndim + 1)))  # [B, *freq, C_out]
    groups, c = spec.groups, kernel.shape[-2]
    j = kernel.shape[-1] // groups
    freq = transfer.shape[:ndim]
    h = transfer.reshape(*freq, c, groups, j)
    h = jnp.moveaxis(h, ndim, -1)  # [*freq, groups, J, C]: H_g(f), outputs by inputs
    rhs = spectrum.reshape(spectrum.shape[0], *freq, groups, j)
    rhs = jnp.moveaxis(rhs, 0, -1)  # [*freq, groups, J, B]
    lam = jnp.asarray(regularization, jnp.finfo(dtype).dtype)  # real, for complex data too
    solution = _regularised_solve(h, rhs, lam, precision)
    solution = jnp.moveaxis(solution, -1, 0)  # [B, *freq, groups, C]
    solution = solution.reshape(*solution.shape[:-2], groups * c)
    x = inverse_dft(solution, s=grid, axes=tuple(range(1, ndim + 1)))
    x = x[(slice(None), *(slice(0, i) for i in operator.input_spatial), slice(None))]
    return x.reshape(*batch_shape, *x.shape[1:]).astype(y.dtype)


def _periodic_frame(op: str, y, window, operator: ConvOperator):
    """``(grid, lows, frame)``: the periodic grid on which the convolution is circular, the low
    padding it reads, and ``y`` placed on that grid; checks what Wiener can invert."""
    spec = operator.spec
    if any(s != 1 for s in spec.strides):
        raise ValueError(
            f"{op}: method='wiener' needs strides 1 (a strided convolution is not diagonal in "
            f"frequency; use method='lsq'), got {spec.strides}."
        )
    if spec.padding_mode not in ("circular", "zeros"):
        raise ValueError(
            f"{op}: method='wiener' inverts circular or zero padding only, got padding_mode "
            f"{spec.padding_mode!r}; use method='lsq'."
        )
    spans = [shapes.effective_window(k, d) for k, d in zip(window, spec.dilation, strict=True)]
    size = operator.input_spatial
    full_out = spec.output_spatial(size, window)
    if full_out != operator.output_spatial:
        raise ValueError(
            f"{op}: method='wiener' needs the convolution's whole output, but y keeps "
            f"{operator.output_spatial} of {full_out} outputs; use output_padding 0 or "
            f"method='lsq'."
        )
    if spec.padding_mode == "circular":
        if full_out != size:
            raise ValueError(
                f"{op}: method='wiener' with circular padding needs a same-size convolution "
                f"(lo + hi = k̂ − 1 in every dim, e.g. padding 'SAME'), got padding "
                f"{spec.padding} for effective window {tuple(spans)}."
            )
        return size, [lo for lo, _ in spec.padding], y
    # The linear convolution of x zero-extended to i + k̂ − 1 is circular on that grid, with y a
    # window of it: place y there, zero where the padding cut the border off.
    grid = tuple(i + k - 1 for i, k in zip(size, spans, strict=True))
    config = [(0, 0, 0)] * (y.ndim - spec.ndim - 1)
    config += [(k - 1 - lo, k - 1 - hi, 0) for k, (lo, hi) in zip(spans, spec.padding, strict=True)]
    frame = lax.pad(y, jnp.zeros((), y.dtype), [*config, (0, 0, 0)])
    return grid, [k - 1 for k in spans], frame


def _transfer(kernel, spec, lows, grid):
    """The kernel's transfer function on the periodic grid, ``[*freq, C, C_out]`` (the
    real-input DFT's half of the frequencies for a real kernel, all of them for a complex one):
    ``y[o] = Σ_t x[(o − lo + t·d) mod N] k[t] = (x ⊛ g)[o]`` with
    ``g[(lo − t·d) mod N] += k[t]``."""
    window = kernel.shape[: spec.ndim]
    positions = [
        (lo - np.arange(k) * d) % n
        for lo, k, d, n in zip(lows, window, spec.dilation, grid, strict=True)
    ]
    g = jnp.zeros((*grid, *kernel.shape[-2:]), kernel.dtype).at[np.ix_(*positions)].add(kernel)
    dft = jnp.fft.fftn if dtype_kind(kernel.dtype) == "complex" else jnp.fft.rfftn
    return dft(g, axes=tuple(range(spec.ndim)))


def _regularised_solve(h, rhs, lam, precision):
    """Per frequency and group, ``(HᴴH + λI)⁺ Hᴴ Y`` (or ``Hᴴ (HHᴴ + λI)⁺ Y`` when ``H`` has fewer
    rows than columns): ``h: [..., J, C]``, ``rhs: [..., J, B]`` → ``[..., C, B]``."""
    c, j = h.shape[-1], h.shape[-2]
    h_conj = jnp.conj(jnp.swapaxes(h, -1, -2))  # [..., C, J]
    if c == 1:  # HᴴH is 1×1: divide (the pseudo-inverse where it is 0)
        power = jnp.sum(jnp.abs(h) ** 2, axis=-2, keepdims=True)
        return _safe_divide(jnp.matmul(h_conj, rhs, precision=precision), power + lam)
    if j == 1:  # HHᴴ is 1×1
        power = jnp.sum(jnp.abs(h) ** 2, axis=-1, keepdims=True)
        return jnp.matmul(h_conj, _safe_divide(rhs, power + lam), precision=precision)
    if c <= j:  # (HᴴH + λI)⁺: the inverse for λ > 0, the pseudo-inverse where singular
        gram = jnp.matmul(h_conj, h, precision=precision)
        inverse = jnp.linalg.pinv(gram + _eye(lam, c, gram), hermitian=True)
        return jnp.matmul(inverse, jnp.matmul(h_conj, rhs, precision=precision))
    gram = jnp.matmul(h, h_conj, precision=precision)
    inverse = jnp.linalg.pinv(gram + _eye(lam, j, gram), hermitian=True)
    return jnp.matmul(h_conj, jnp.matmul(inverse, rhs), precision=precision)


def _eye(lam, size, like):
    """``λ I`` shaped to add to the stacked matrices ``like``."""
    eye = (lam * jnp.eye(size, dtype=lam.dtype)).astype(like.dtype)
    return eye.reshape((1,) * (like.ndim - 2) + eye.shape)


def _safe_divide(numerator, denominator):
    """``numerator / denominator``, 0 where the (real, non-negative) denominator is 0, with
    finite gradients."""
    nonzero = denominator > 0
    safe = jnp.where(nonzero, denominator, jnp.ones_like(denominator))
    quotient = numerator / safe.astype(numerator.dtype)
    return jnp.where(nonzero, quotient, jnp.zeros_like(quotient))


def _lsq(y, kernel, operator: ConvOperator, regularization, tol, max_iters, precision):
    ndim = operator.spec.ndim
    batch_ndim = y.ndim - ndim - 1
    forward = lambda z: operator.forward(z, kernel, precision=precision)  # noqa: E731
    # Aᴴ = conj(A)ᵀ, and conj(A) is the conv with the conjugate kernel: the padding modes only
    # copy and select, with real coefficients.
    adjoint = operator.transpose(jnp.conj(kernel), precision=precision)
    lam = jnp.asarray(regularization, y.dtype)

    def normal(z):
        return adjoint(forward(z)) + lam * z

    def solve(matvec, b):
        return _conjugate_gradients(matvec, b, tol, max_iters, batch_ndim)

    if dtype_kind(y.dtype) != "complex":  # AᵀA + λI is symmetric: reverse mode solves with it
        return lax.custom_linear_solve(normal, adjoint(y), solve, symmetric=True, has_aux=True)
    # AᴴA + λI is Hermitian, not symmetric: reverse mode solves with its transpose, its
    # conjugate, which is Hermitian positive (semi-)definite too, so CG solves that as well.
    return lax.custom_linear_solve(normal, adjoint(y), solve, solve, has_aux=True)


def _conjugate_gradients(matvec, b, tol, max_iters, batch_ndim):
    """CG for ``matvec(x) = b`` (Hermitian positive semi-definite: symmetric for real ``b``)
    from ``x = 0``; one solve per leading batch element.  Returns ``(x, iterations)``.  The
    inner products ``⟨u, v⟩ = Σ conj(u) v`` taken here, ``⟨r, r⟩`` and ``⟨p, Ap⟩``, are real,
    and so are the step sizes."""
    axes = tuple(range(batch_ndim, b.ndim))

    def dot(u, v):  # real: u = v, or v = Au with A Hermitian
        return jnp.sum(jnp.real(jnp.conj(u) * v), axis=axes, keepdims=True)

    gamma = dot(b, b)
    threshold = jnp.asarray(tol, gamma.dtype) ** 2 * gamma

    def cond(state):
        k, _, _, _, gamma = state
        return (k < max_iters) & jnp.any(gamma > threshold)

    def body(state):
        k, x, r, p, gamma = state
        active = gamma > threshold
        q = matvec(p)
        delta = dot(p, q)
        step = active & (delta > 0)
        alpha = jnp.where(step, gamma / jnp.where(step, delta, 1), 0).astype(b.dtype)
        x = x + alpha * p
        r = r - alpha * q
        gamma_next = dot(r, r)
        beta = (gamma_next / jnp.where(active, gamma, 1)).astype(b.dtype)
        p = jnp.where(step, r + beta * p, p)
        # A finished element (or one with no descent direction left) stays finished.
        gamma = jnp.where(step, gamma_next, jnp.zeros_like(gamma))
        return k + 1, x, r, p, gamma

    state = (jnp.zeros((), jnp.int32), jnp.zeros_like(b), b, b, gamma)
    k, x, _, _, _ = lax.while_loop(cond, body, state)
    # A non-finite b (from a non-finite y) stops CG at once, at x = 0; but every entry of the
    # solution depends on all of b: the element's solution is NaN, as the Wiener filter's is.
    return jnp.where(jnp.isfinite(gamma), x, jnp.full_like(x, jnp.nan)), k
