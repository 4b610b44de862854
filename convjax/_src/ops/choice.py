"""``auto_choice``: which formulation ``impl="auto"`` runs for a convolution, and why."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from convjax._src.checks import DTYPE_KINDS, check_dtype, input_named
from convjax._src.formulations.auto import Rule, features, rule_for
from convjax._src.ops.conv import make_spec
from convjax._src.ops.transpose import transpose_operator

CONV_OPTIONS = frozenset({"strides", "padding", "dilation", "groups", "padding_mode"})
TRANSPOSE_OPTIONS = CONV_OPTIONS | {"output_padding", "output_shape"}


def auto_choice(
    input_shape: Sequence[int],
    kernel_shape: Sequence[int],
    *,
    transpose: bool = False,
    dtype: Any = "float32",
    **options: Any,
) -> Rule:
    """The row of the table ``impl="auto"`` follows for a convolution of these shapes on the
    default platform: its formulation and the measurement behind it.

    ``options`` are :func:`~convjax.conv`'s (or, with ``transpose=True``,
    :func:`~convjax.conv_transpose`'s), ``kernel_shape`` is the kernel that function takes, and
    ``dtype`` the operands' (integers never run on the FFT).

    >>> import convjax
    >>> convjax.auto_choice((8, 56, 56, 144), (3, 3, 1, 144), groups=144).formulation
    'taps'
    """
    op = "auto_choice"
    allowed = TRANSPOSE_OPTIONS if transpose else CONV_OPTIONS
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(
            f"{op}: unknown option {unknown[0]!r}; with transpose={transpose} it takes "
            f"{', '.join(sorted(allowed))}."
        )
    dtype = check_dtype(op, "dtype", dtype, optional=False, kinds=DTYPE_KINDS)
    with input_named("input_shape"):
        if transpose:
            operator = transpose_operator(op, input_shape, kernel_shape, impl="auto", **options)
            spec, x_shape = operator.spec, operator.input_shape
        else:
            spec, x_shape = make_spec(op, input_shape, kernel_shape, **options), input_shape
    found = features(spec, x_shape, kernel_shape, transposed=transpose, dtype=dtype)
    return rule_for(found)
