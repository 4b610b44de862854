"""Convolution arithmetic: output sizes and padding, one spatial dimension at a time.

Every relationship here is from Dumoulin & Visin, "A guide to convolution arithmetic for deep
learning" (2016), written for per-side padding ``(lo, hi)`` and kernel dilation ``d``.  Nothing in
this module touches an array.
"""

from __future__ import annotations

import itertools

PADDING_STRINGS = ("VALID", "SAME", "HALF", "FULL", "CAUSAL")


def effective_window(window: int, dilation: int) -> int:
    """The span of a dilated kernel: ``k̂ = k + (k - 1)(d - 1)``.

    >>> effective_window(3, 2)  # a 3-tap kernel at rate 2 sees 5 positions
    5
    """
    return (window - 1) * dilation + 1


def string_padding(
    padding: str, size: int, window: int, stride: int, dilation: int
) -> tuple[int, int]:
    """Resolve ``"VALID"``, ``"SAME"``, ``"HALF"``, ``"FULL"`` or ``"CAUSAL"`` to ``(lo, hi)``.

    ``"SAME"`` gives ``ceil(size / stride)`` outputs; an odd total puts the extra pad on the high
    side (as lax and TensorFlow do).  ``"HALF"`` pads ``⌊k̂ / 2⌋`` on both sides (Dumoulin &
    Visin's half padding, PyTorch's ``padding=k // 2``): the same as ``"SAME"`` for an odd
    window at stride 1, one output more for an even one.  ``"FULL"`` pads ``k̂ - 1`` on both
    sides, ``"CAUSAL"`` on the low side only.

    >>> string_padding("SAME", 5, 3, 1, 1), string_padding("CAUSAL", 5, 3, 1, 2)
    ((1, 1), (4, 0))
    >>> string_padding("HALF", 5, 4, 1, 1), string_padding("SAME", 5, 4, 1, 1)
    ((2, 2), (1, 2))
    """
    span = effective_window(window, dilation)
    if padding == "VALID":
        return (0, 0)
    if padding == "FULL":
        return (span - 1, span - 1)
    if padding == "CAUSAL":
        return (span - 1, 0)
    if padding == "HALF":
        return (span // 2, span // 2)
    if padding == "SAME":
        out = -(-size // stride)
        total = max((out - 1) * stride + span - size, 0)
        return (total // 2, total - total // 2)
    raise ValueError(f"padding must be one of {PADDING_STRINGS}, got {padding!r}.")


def conv_output_size(
    size: int, window: int, stride: int = 1, padding: tuple[int, int] = (0, 0), dilation: int = 1
) -> int:
    """Forward size ``o = ⌊(i + lo + hi − k̂) / s⌋ + 1`` (Relationship 6/15 of Dumoulin & Visin).

    Returns a number below 1 when the window does not fit the padded input.

    >>> conv_output_size(5, 3, stride=2)  # the classic example: 5x5, k=3, s=2, no padding
    2
    """
    lo, hi = padding
    return (size + lo + hi - effective_window(window, dilation)) // stride + 1


def conv_transpose_output_size(
    size: int,
    window: int,
    stride: int = 1,
    padding: tuple[int, int] = (0, 0),
    dilation: int = 1,
    output_padding: int = 0,
) -> int:
    """Transposed size ``o′ = s(i′ − 1) + a + k̂ − lo − hi`` (Relationship 14).

    >>> conv_transpose_output_size(2, 3, stride=2)  # 2x2 back to the classic 5x5
    5
    """
    lo, hi = padding
    return stride * (size - 1) + output_padding + effective_window(window, dilation) - lo - hi


def output_padding_for(
    size: int, window: int, stride: int = 1, padding: tuple[int, int] = (0, 0), dilation: int = 1
) -> int:
    """The ``a = (i + lo + hi − k̂) mod s`` that makes a transposed conv restore size ``i``.

    >>> output_padding_for(6, 3, stride=2)  # 6 and 5 both give 2 outputs; 6 needs a = 1
    1
    """
    lo, hi = padding
    return (size + lo + hi - effective_window(window, dilation)) % stride


def reading_bands(
    size: int, window: int, stride: int = 1, padding: tuple[int, int] = (0, 0), dilation: int = 1
) -> tuple[tuple[int, int, int, int], ...]:
    """The outputs of one axis in bands whose windows read the same taps inside the input: one
    ``(out_start, out_stop, tap_start, tap_stop)`` per band, in order, covering every output.

    Tap ``t`` of output ``o`` reads position ``o·s − lo + t·d``; the taps that land inside
    ``[0, size)`` are a contiguous range, and it changes only where some tap enters or leaves
    the input, so a window of ``k`` taps makes at most ``2k + 1`` bands.  A band of outputs that
    read only padding has the empty tap range ``(0, 0)``.

    >>> reading_bands(24, 3, padding=(18, 18), dilation=18)  # DeepLab's rate 18 on 24 rows
    ((0, 6, 1, 3), (6, 18, 1, 2), (18, 24, 0, 2))
    """
    lo = padding[0]
    out = conv_output_size(size, window, stride, padding, dilation)
    if out < 1:
        return ()

    def taps(o: int) -> tuple[int, int]:
        first = max(0, -(-(lo - o * stride) // dilation))
        stop = min(window, (size - 1 + lo - o * stride) // dilation + 1)
        return (first, stop) if stop > first else (0, 0)

    cuts = {0, out}
    for t in range(window):
        for edge in (lo - t * dilation, size + lo - t * dilation):  # o·s crosses these
            cut = -(-edge // stride)
            if 0 < cut < out:
                cuts.add(cut)
    bands: list[tuple[int, int, int, int]] = []
    ordered = sorted(cuts)
    for start, stop in itertools.pairwise(ordered):
        first, last = taps(start)
        if bands and bands[-1][2:] == (first, last):
            bands[-1] = (bands[-1][0], stop, first, last)
        else:
            bands.append((start, stop, first, last))
    return tuple(bands)
