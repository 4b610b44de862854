"""One normalised, validated, hashable description of a convolution.

Every public function builds a :class:`ConvSpec` from its user-facing arguments (ints or tuples,
padding strings, pairs) and the static shapes of its operands, and every check happens here, at
trace time, before any array work.  Errors name the operation, the argument, the rule and the
value received.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from convjax._src import shapes
from convjax._src.backends import Backend, resolve_backend

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")

Padding = str | int | Sequence[int] | Sequence[tuple[int, int]]


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """A convolution with every option in normal form.

    Attributes:
      strides: one window stride per spatial dim.
      padding: one ``(lo, hi)`` pair per spatial dim, resolved against the input size.
      dilation: one kernel dilation (atrous rate) per spatial dim.
      groups: feature groups; output channel ``g * (C_out // groups) + j`` belongs to group ``g``.
      padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
      backend: the implementation (``LaxBackend()`` or ``GatherBackend(...)``).
    """

    strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    groups: int
    padding_mode: str
    backend: Backend

    @property
    def ndim(self) -> int:
        return len(self.strides)

    def output_spatial(
        self, input_spatial: Sequence[int], window: Sequence[int]
    ) -> tuple[int, ...]:
        return tuple(
            shapes.conv_output_size(i, k, s, p, d)
            for i, k, s, p, d in zip(
                input_spatial, window, self.strides, self.padding, self.dilation, strict=True
            )
        )


def check_int(op: str, name: str, value: Any) -> int:
    """``value`` as an int; bools, floats and other types are a TypeError."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(
            f"{op}: {name} must be an int, got {value!r} of type {type(value).__name__}."
        )
    return operator.index(value)


def per_dim(op: str, name: str, value: Any, ndim: int, *, minimum: int) -> tuple[int, ...]:
    """An int or a sequence of ``ndim`` ints, each at least ``minimum``, as a tuple."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != ndim:
            raise ValueError(
                f"{op}: {name} needs one entry per spatial dim ({ndim}), got {len(value)}: "
                f"{tuple(value)!r}."
            )
        values = tuple(check_int(op, name, v) for v in value)
    else:
        values = (check_int(op, name, value),) * ndim
    if any(v < minimum for v in values):
        raise ValueError(f"{op}: {name} must be >= {minimum} in every dim, got {values!r}.")
    return values


def normalize_padding(
    op: str,
    padding: Padding,
    input_spatial: Sequence[int],
    window: Sequence[int],
    strides: Sequence[int],
    dilation: Sequence[int],
) -> tuple[tuple[int, int], ...]:
    """Any accepted padding form as one non-negative ``(lo, hi)`` pair per spatial dim."""
    ndim = len(window)
    if isinstance(padding, str):
        name = padding.upper()
        if name not in shapes.PADDING_STRINGS:
            raise ValueError(
                f"{op}: padding must be one of {shapes.PADDING_STRINGS}, an int, one int per "
                f"dim or one (lo, hi) pair per dim, got {padding!r}."
            )
        return tuple(
            shapes.string_padding(name, *args)
            for args in zip(input_spatial, window, strides, dilation, strict=True)
        )
    if isinstance(padding, Sequence):
        if len(padding) != ndim:
            raise ValueError(
                f"{op}: padding needs one entry per spatial dim ({ndim}), got {len(padding)}: "
                f"{padding!r}."
            )
        pairs = []
        for entry in padding:
            if isinstance(entry, Sequence) and not isinstance(entry, str):
                if len(entry) != 2:
                    raise ValueError(
                        f"{op}: each padding pair must be (lo, hi), got {tuple(entry)!r}."
                    )
                pairs.append(
                    (check_int(op, "padding", entry[0]), check_int(op, "padding", entry[1]))
                )
            else:
                pad = check_int(op, "padding", entry)
                pairs.append((pad, pad))
        result = tuple(pairs)
    else:
        pad = check_int(op, "padding", padding)
        result = ((pad, pad),) * ndim
    if any(p < 0 for pair in result for p in pair):
        raise ValueError(f"{op}: padding must be non-negative, got {result!r}.")
    return result


def check_arrays(op: str, **arrays: Any) -> None:
    """Each named value must be an array (have a ``shape`` and a ``dtype``)."""
    for name, value in arrays.items():
        if not hasattr(value, "shape") or not hasattr(value, "dtype"):
            raise TypeError(f"{op}: {name} must be an array, got {type(value).__name__}.")


def check_dtypes(
    op: str, x_dtype: Any, kernel_dtype: Any, kernel_name: str = "kernel", x_name: str = "x"
) -> None:
    """Both operands floating and of one dtype; the error says which cast to make."""
    for name, dtype in ((x_name, x_dtype), (kernel_name, kernel_dtype)):
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{op}: {name} must have a floating dtype (float16, bfloat16, float32, float64), "
                f"got {np.dtype(dtype).name}."
            )
    if np.dtype(x_dtype) != np.dtype(kernel_dtype):
        raise TypeError(
            f"{op}: {x_name} and {kernel_name} must share a dtype, got {x_name} "
            f"{np.dtype(x_dtype).name} and {kernel_name} {np.dtype(kernel_dtype).name}; cast "
            f"one, e.g. {kernel_name}.astype({x_name}.dtype)."
        )


def split_shapes(
    op: str,
    x_shape: Sequence[int],
    kernel_shape: Sequence[int],
    *,
    x_name: str = "x",
    x_layout: str = "[*batch, *spatial, C_in]",
    kernel_layout: str = "[*window, C_in // groups, C_out]",
) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """Check the ranks and spatial sizes of ``x`` and ``kernel``; return ``(ndim, window,
    spatial)`` with ``ndim = len(kernel_shape) - 2``."""
    x_shape, kernel_shape = tuple(x_shape), tuple(kernel_shape)
    if len(kernel_shape) < 3:
        raise ValueError(
            f"{op}: kernel must have rank >= 3 ({kernel_layout}), got shape {kernel_shape}."
        )
    ndim = len(kernel_shape) - 2
    if len(x_shape) < ndim + 1:
        raise ValueError(
            f"{op}: {x_name} must have rank >= {ndim + 1} ({x_layout}) for a "
            f"{ndim}-d kernel of shape {kernel_shape}, got shape {x_shape}."
        )
    window, spatial = kernel_shape[:ndim], x_shape[-ndim - 1 : -1]
    if any(k < 1 for k in window) or any(i < 1 for i in spatial):
        raise ValueError(
            f"{op}: spatial sizes must be >= 1, got {x_name} spatial {spatial} and kernel window "
            f"{window}."
        )
    return ndim, window, spatial


def make_spec(
    op: str,
    x_shape: Sequence[int],
    kernel_shape: Sequence[int],
    *,
    strides: int | Sequence[int] = 1,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    impl: Any = "lax",
    dilation_name: str = "dilation",
) -> ConvSpec:
    """Validate a convolution of ``x_shape`` by ``kernel_shape`` and normalise its options.

    ``x_shape`` is ``[*batch, *spatial, C_in]`` and ``kernel_shape`` ``[*window, C_in // groups,
    C_out]``; the number of spatial dims is ``len(kernel_shape) - 2``.
    """
    x_shape, kernel_shape = tuple(x_shape), tuple(kernel_shape)
    ndim, window, input_spatial = split_shapes(op, x_shape, kernel_shape)
    groups = check_int(op, "groups", groups)
    if groups < 1:
        raise ValueError(f"{op}: groups must be >= 1, got {groups}.")
    c_in, c_per_group, c_out = x_shape[-1], kernel_shape[-2], kernel_shape[-1]
    if c_in % groups:
        raise ValueError(
            f"{op}: groups must divide the input channels, but {groups} does not divide {c_in}."
        )
    if c_out % groups:
        raise ValueError(
            f"{op}: groups must divide the output channels (kernel.shape[-1]), but {groups} does "
            f"not divide {c_out}."
        )
    if c_per_group * groups != c_in:
        raise ValueError(
            f"{op}: kernel.shape[-2] must be C_in // groups = {c_in} // {groups} = "
            f"{c_in // groups}, got {c_per_group} (kernel shape {kernel_shape}, x shape {x_shape})."
        )
    strides = per_dim(op, "strides", strides, ndim, minimum=1)
    dilation = per_dim(op, dilation_name, dilation, ndim, minimum=1)
    pads = normalize_padding(op, padding, input_spatial, window, strides, dilation)
    if padding_mode not in PADDING_MODES:
        raise ValueError(
            f"{op}: padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}."
        )
    if padding_mode == "reflect":
        for dim, (i, (lo, hi)) in enumerate(zip(input_spatial, pads, strict=True)):
            if max(lo, hi) >= i:
                raise ValueError(
                    f"{op}: reflect padding must be smaller than the input size, but spatial dim "
                    f"{dim} has size {i} and padding {(lo, hi)}."
                )
    spec = ConvSpec(strides, pads, dilation, groups, padding_mode, resolve_backend(op, impl))
    out = spec.output_spatial(input_spatial, window)
    if any(o < 1 for o in out):
        raise ValueError(
            f"{op}: the output would be empty: spatial output {out} from input {input_spatial}, "
            f"window {window}, {dilation_name} {dilation}, padding {pads}, strides {strides} "
            f"(the dilated window must fit the padded input)."
        )
    return spec
