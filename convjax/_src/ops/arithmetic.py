"""The public conv arithmetic: :mod:`convjax._src.shapes`' relationships, with their arguments
checked.

``shapes`` is the library's own arithmetic, called in hot paths with values a spec has already
checked, so it checks nothing.  These are the names ``convjax`` exports: each checks its
arguments (sizes non-negative ints, windows, strides and dilations positive ints, padding an int
or a ``(lo, hi)`` pair of non-negative ints, as :func:`convjax.conv` reads an int per dim) and
raises a ``TypeError`` or ``ValueError`` naming the function, the argument, the rule and the
value, then calls ``shapes``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convjax._src import shapes
from convjax._src.checks import check_int, is_sequence, unwrapped


def _pair(op: str, padding: Any) -> tuple[int, int]:
    """``padding`` as a non-negative ``(lo, hi)``: a pair, or an int for both sides."""
    if is_sequence(padding):
        if len(padding) != 2:
            raise ValueError(
                f"{op}: padding must be an int or a (lo, hi) pair, got {tuple(padding)!r}."
            )
        pair = (check_int(op, "padding", padding[0]), check_int(op, "padding", padding[1]))
        if min(pair) < 0:
            raise ValueError(f"{op}: padding must be >= 0, got {pair!r}.")
        return pair
    padding = unwrapped(padding)
    if isinstance(padding, bool | np.bool_) or not isinstance(padding, int | np.integer):
        raise TypeError(
            f"{op}: padding must be an int or a (lo, hi) pair of ints, got {padding!r}"
            + (
                " (convjax.explain_padding resolves padding strings)"
                if isinstance(padding, str)
                else ""
            )
            + "."
        )
    pad = check_int(op, "padding", padding, minimum=0)
    return (pad, pad)


def _terms(
    op: str, size: Any, window: Any, stride: Any, padding: Any, dilation: Any
) -> tuple[int, int, int, tuple[int, int], int]:
    return (
        check_int(op, "size", size, minimum=0),
        check_int(op, "window", window, minimum=1),
        check_int(op, "stride", stride, minimum=1),
        _pair(op, padding),
        check_int(op, "dilation", dilation, minimum=1),
    )


def effective_window(window: int, dilation: int) -> int:
    """The span of a dilated kernel: ``k̂ = k + (k - 1)(d - 1)``.

    Args:
      window: ``k``, the kernel's taps along the dim, an int >= 1.
      dilation: ``d``, the kernel dilation (atrous rate), an int >= 1.

    Returns:
      ``k̂``, the positions of the input one output reads.

    Raises:
      TypeError: an argument is not an int.
      ValueError: ``window`` or ``dilation`` is below 1.

    >>> effective_window(3, 2)  # a 3-tap kernel at rate 2 sees 5 positions
    5
    """
    op = "effective_window"
    return shapes.effective_window(
        check_int(op, "window", window, minimum=1), check_int(op, "dilation", dilation, minimum=1)
    )


def conv_output_size(
    size: int,
    window: int,
    stride: int = 1,
    padding: int | tuple[int, int] = (0, 0),
    dilation: int = 1,
) -> int:
    """Forward size ``o = ⌊(i + lo + hi − k̂) / s⌋ + 1`` (Relationship 6/15 of Dumoulin & Visin).

    Returns a number below 1 when the window does not fit the padded input.

    Args:
      size: ``i``, the input size, an int >= 0.
      window: ``k``, the kernel's taps, an int >= 1.
      stride: ``s``, an int >= 1.
      padding: ``(lo, hi)``, non-negative ints; an int pads both sides alike.
      dilation: ``d``, an int >= 1; ``k̂`` is :func:`effective_window` ``(k, d)``.

    Raises:
      TypeError: an argument is not an int (bools and floats included), or padding is neither
        an int nor a pair.
      ValueError: an argument is out of its range above.

    >>> conv_output_size(5, 3, stride=2)  # the classic example: 5x5, k=3, s=2, no padding
    2
    """
    return shapes.conv_output_size(
        *_terms("conv_output_size", size, window, stride, padding, dilation)
    )


def conv_transpose_output_size(
    size: int,
    window: int,
    stride: int = 1,
    padding: int | tuple[int, int] = (0, 0),
    dilation: int = 1,
    output_padding: int = 0,
) -> int:
    """Transposed size ``o′ = s(i′ − 1) + a + k̂ − lo − hi`` (Relationship 14).

    Args:
      size: ``i′``, the transposed conv's input size, an int >= 0.
      window: ``k``, the kernel's taps, an int >= 1.
      stride: ``s``, an int >= 1.
      padding: ``(lo, hi)`` of the forward conv, non-negative ints; an int pads both sides.
      dilation: ``d``, an int >= 1.
      output_padding: ``a``, an int with ``0 <= a < max(s, d)`` (PyTorch's rule, as in
        :func:`convjax.conv_transpose`); :func:`output_padding_for` gives the one that restores
        a forward input size.

    Raises:
      TypeError: an argument is not an int, or padding is neither an int nor a pair.
      ValueError: an argument is out of its range above.

    >>> conv_transpose_output_size(2, 3, stride=2)  # 2x2 back to the classic 5x5
    5
    """
    op = "conv_transpose_output_size"
    size, window, stride, padding, dilation = _terms(op, size, window, stride, padding, dilation)
    output_padding = check_int(op, "output_padding", output_padding, minimum=0)
    if output_padding >= max(stride, dilation):
        raise ValueError(
            f"{op}: output_padding must be smaller than the stride or the dilation, got "
            f"output_padding {output_padding} with stride {stride} and dilation {dilation}."
        )
    return shapes.conv_transpose_output_size(
        size, window, stride, padding, dilation, output_padding
    )


def output_padding_for(
    size: int,
    window: int,
    stride: int = 1,
    padding: int | tuple[int, int] = (0, 0),
    dilation: int = 1,
) -> int:
    """The ``a = (i + lo + hi − k̂) mod s`` that makes a transposed conv restore size ``i``.

    Takes the forward conv's terms, checked as :func:`conv_output_size` checks them.

    >>> output_padding_for(6, 3, stride=2)  # 6 and 5 both give 2 outputs; 6 needs a = 1
    1
    """
    return shapes.output_padding_for(
        *_terms("output_padding_for", size, window, stride, padding, dilation)
    )
