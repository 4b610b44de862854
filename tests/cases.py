"""One shared list of convolution configurations, and a hypothesis strategy drawing more.

A config is a dict: ``x_shape``, ``kernel_shape`` and the keyword options of ``convjax.conv``,
plus ``pads`` (the explicit ``(lo, hi)`` pairs the reference needs), computed here without
convjax.
"""

import math
import types
from collections.abc import Mapping

from hypothesis import strategies as st

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _pairs(padding, sizes, window, strides, dilation):
    """Explicit pads for the reference, from first principles (not convjax's arithmetic)."""
    ndim = len(window)
    span = [(k - 1) * d + 1 for k, d in zip(window, dilation)]
    if padding == "VALID":
        return [(0, 0)] * ndim
    if padding == "FULL":
        return [(s - 1, s - 1) for s in span]
    if padding == "CAUSAL":
        return [(s - 1, 0) for s in span]
    if padding == "SAME":
        pairs = []
        for i, s, sp in zip(sizes, strides, span):
            total = max((math.ceil(i / s) - 1) * s + sp - i, 0)
            pairs.append((total // 2, total - total // 2))
        return pairs
    if isinstance(padding, int):
        return [(padding, padding)] * ndim
    return [tuple(p) if isinstance(p, tuple) else (p, p) for p in padding]


def make_case(
    x_shape, kernel_shape, strides=1, padding="VALID", dilation=1, groups=1, padding_mode="zeros"
):
    ndim = len(kernel_shape) - 2
    strides_t = (strides,) * ndim if isinstance(strides, int) else tuple(strides)
    dilation_t = (dilation,) * ndim if isinstance(dilation, int) else tuple(dilation)
    sizes = x_shape[-ndim - 1 : -1]
    return dict(
        x_shape=tuple(x_shape),
        kernel_shape=tuple(kernel_shape),
        options=dict(
            strides=strides,
            padding=padding,
            dilation=dilation,
            groups=groups,
            padding_mode=padding_mode,
        ),
        ref=dict(
            strides=strides_t,
            dilation=dilation_t,
            groups=groups,
            padding_mode=padding_mode,
            padding=_pairs(padding, sizes, kernel_shape[:ndim], strides_t, dilation_t),
        ),
    )


_CASES = [
    make_case((5, 5, 1), (3, 3, 1, 1), strides=2),  # the seed's 5x5 -> 2x2
    make_case((2, 7, 7, 3), (3, 3, 3, 4), padding="SAME"),
    make_case((2, 9, 8, 4), (3, 2, 2, 6), strides=(2, 1), padding="SAME", groups=2),
    make_case((2, 9, 9, 2), (3, 3, 2, 2), dilation=2, padding="FULL", padding_mode="reflect"),
    make_case((1, 11, 3), (4, 3, 5), padding="CAUSAL", dilation=3, padding_mode="replicate"),
    make_case(
        (2, 1, 6, 5, 4, 2), (2, 3, 2, 2, 4), strides=(1, 2, 1), padding=1, padding_mode="circular"
    ),
    make_case((3, 8, 8, 6), (3, 3, 1, 12), groups=6, padding=((1, 2), (0, 1))),  # depthwise m=2
    make_case((1, 6, 6, 4), (1, 1, 4, 3), strides=2, padding="SAME"),
]


# Read-only views: a test that wants a variant of a shared case copies it first.
CASES = [
    types.MappingProxyType(
        {k: types.MappingProxyType(v) if isinstance(v, dict) else v for k, v in case.items()}
    )
    for case in _CASES
]


def case_id(case):
    o = case["options"]
    return (
        f"x{case['x_shape']}-k{case['kernel_shape']}-s{o['strides']}-p{o['padding']}-"
        f"d{o['dilation']}-g{o['groups']}-{o['padding_mode']}"
    ).replace(" ", "")


def pair_id(value):
    """:func:`case_id` for the cases among parametrised pairs; pytest's own id for the rest."""
    return case_id(value) if isinstance(value, Mapping) else None


@st.composite
def configs(draw, max_ndim=3):
    ndim = draw(st.integers(1, max_ndim))
    window = tuple(draw(st.integers(1, 5 if ndim < 3 else 3)) for _ in range(ndim))
    strides = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    groups = draw(st.integers(1, 3))
    c_in = groups * draw(st.integers(1, 3))
    c_out = groups * draw(st.integers(1, 3))
    mode = draw(st.sampled_from(PADDING_MODES))
    form = draw(st.sampled_from(["VALID", "SAME", "FULL", "CAUSAL", "int", "per-dim", "pairs"]))
    pad_max = 3
    if form == "int":
        padding = draw(st.integers(0, pad_max))
    elif form == "per-dim":
        padding = tuple(draw(st.integers(0, pad_max)) for _ in range(ndim))
    elif form == "pairs":
        padding = tuple(
            (draw(st.integers(0, pad_max)), draw(st.integers(0, pad_max))) for _ in range(ndim)
        )
    else:
        padding = form
    extra = 4 if ndim < 3 else 2
    spans = [(k - 1) * d + 1 for k, d in zip(window, dilation)]
    sizes = tuple(max(sp, pad_max + 1) + draw(st.integers(0, extra)) for sp in spans)
    batch = tuple(draw(st.integers(1, 2)) for _ in range(draw(st.integers(0, 2))))
    return make_case(
        (*batch, *sizes, c_in),
        (*window, c_in // groups, c_out),
        strides=strides,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=mode,
    )
