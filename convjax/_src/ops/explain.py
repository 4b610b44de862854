"""``explain_padding``: the ``(lo, hi)`` pads each library's padding convention gives, side by side.

Porting bugs hide here: PyTorch's ``padding=k // 2`` and TensorFlow/Flax ``'SAME'`` give the same
output size at stride 2 on even inputs but pad differently (``(1, 1)`` vs ``(0, 1)``), so every
output is shifted by one pixel and nothing fails; PyTorch refuses ``padding='same'`` with
strides; ``padding=k // 2`` ignores dilation.  This module computes each convention from its
documented rule, one spatial dim at a time, with no array work.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from convjax._src import shapes
from convjax._src.checks import per_dim

Pads = tuple[tuple[int, int], ...]


@dataclasses.dataclass(frozen=True)
class Convention:
    """One library's padding for the explained convolution.

    Attributes:
      library: who uses it (``"convjax"``, ``"PyTorch"``, ``"TensorFlow / Keras"``, ``"Flax"``).
      spelling: how it is written there.
      pads: one ``(lo, hi)`` per spatial dim, or None where the library refuses the options
        (PyTorch's ``'same'`` with strides, Keras ``'causal'`` beyond 1-d, and every convention
        whose output would be empty: all of them raise there, as :func:`convjax.conv` does).
      output: the output size per spatial dim, each >= 1 (None where refused).
      note: why it is refused, or how it relates to convjax's names.
    """

    library: str
    spelling: str
    pads: Pads | None
    output: tuple[int, ...] | None
    note: str = ""


@dataclasses.dataclass(frozen=True)
class PaddingExplanation:
    """What :func:`explain_padding` returns; ``print`` it for a table."""

    input_size: tuple[int, ...]
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    dilation: tuple[int, ...]
    conventions: tuple[Convention, ...]

    def find(self, library: str, spelling: str) -> Convention:
        """The convention ``spelling`` of ``library``."""
        for c in self.conventions:
            if c.library == library and c.spelling == spelling:
                return c
        libraries = sorted({c.library for c in self.conventions})
        if library not in libraries:
            raise ValueError(
                f"PaddingExplanation.find: library must be one of {libraries}, got {library!r}."
            )
        spellings = [c.spelling for c in self.conventions if c.library == library]
        raise ValueError(
            f"PaddingExplanation.find: {library} has no convention {spelling!r}; its spellings "
            f"are {spellings}."
        )

    def __str__(self) -> str:
        same = self.find("convjax", 'padding="SAME"')
        header = (
            f"input {self.input_size}, kernel {self.kernel_size}, strides {self.strides}, "
            f"dilation {self.dilation}"
        )
        rows = [("library", "padding", "(lo, hi) per dim", "output", "")]
        for c in self.conventions:
            note = c.note
            if c.pads is not None and c.output == same.output and c.pads != same.pads:
                note = (note + "; " if note else "") + "same size as 'SAME', placed differently"
            rows.append(
                (
                    c.library,
                    c.spelling,
                    "refused" if c.pads is None else " ".join(map(str, c.pads)),
                    "-" if c.output is None else "x".join(map(str, c.output)),
                    note,
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [header]
        for r in rows:
            cells = [r[i].ljust(widths[i]) for i in range(4)]
            lines.append("  ".join([*cells, r[4]]).rstrip())
        return "\n".join(lines)


def explain_padding(
    input_size: int | Sequence[int],
    kernel_size: int | Sequence[int],
    *,
    strides: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
) -> PaddingExplanation:
    """The pads and output sizes of every common padding convention for one convolution.

    Covers convjax's ``"VALID"``, ``"SAME"``, ``"HALF"``, ``"FULL"`` and ``"CAUSAL"``; PyTorch's
    ``padding=k // 2`` (the usual idiom, which ignores dilation), ``padding=d·(k − 1) // 2``,
    ``'same'`` (stride 1 only: refused otherwise) and ``'valid'``; TensorFlow/Keras ``'same'``
    and ``'causal'``; Flax ``'SAME'``.  Sizes are per spatial dim; ints broadcast.  A
    convention whose output would be empty (the dilated window longer than the padded input in
    some dim) is refused, with pads and output None and a note saying which dim, since
    :func:`convjax.conv` and PyTorch raise there; every other row's output is what
    :func:`convjax.output_shape` gives for its pads.

    >>> import convjax
    >>> e = convjax.explain_padding(224, 3, strides=2)
    >>> e.find("PyTorch", "padding=k // 2").pads, e.find("Flax", 'padding="SAME"').pads
    (((1, 1),), ((0, 1),))
    >>> e.find("PyTorch", "padding='same'").note
    "refused: PyTorch allows padding='same' only with stride 1"
    >>> convjax.explain_padding(2, 5).find("convjax", 'padding="VALID"').note
    'refused: the output would be empty (dim 0: padded input 2 + 0 + 0 = 2 < dilated window 5)'
    """
    op = "explain_padding"
    several = isinstance(input_size, Sequence) and not isinstance(input_size, str)
    ndim = len(input_size) if several else 1
    if not ndim:
        raise ValueError(f"{op}: input_size needs at least one spatial dim, got {input_size!r}.")
    sizes = per_dim(op, "input_size", input_size, ndim, minimum=1)
    window = per_dim(op, "kernel_size", kernel_size, ndim, minimum=1)
    strides = per_dim(op, "strides", strides, ndim, minimum=1)
    dilation = per_dim(op, "dilation", dilation, ndim, minimum=1)
    dims = list(zip(sizes, window, strides, dilation, strict=True))

    def rule(fn) -> Pads:
        return tuple(fn(i, k, s, d) for i, k, s, d in dims)

    def named(name: str) -> Pads:
        return rule(lambda i, k, s, d: shapes.string_padding(name, i, k, s, d))

    def torch_same(i, k, s, d):
        total = d * (k - 1)
        return (total // 2, total - total // 2)

    stride_one = all(s == 1 for s in strides)
    entries = [
        ("convjax", 'padding="VALID"', named("VALID"), ""),
        ("convjax", 'padding="SAME"', named("SAME"), "ceil(i / s) outputs, extra pad high"),
        ("convjax", 'padding="HALF"', named("HALF"), "floor(k̂ / 2) each side"),
        ("convjax", 'padding="FULL"', named("FULL"), "k̂ − 1 each side"),
        ("convjax", 'padding="CAUSAL"', named("CAUSAL"), "k̂ − 1 low side"),
        (
            "PyTorch",
            "padding=k // 2",
            rule(lambda i, k, s, d: (k // 2, k // 2)),
            _ignores(dilation),
        ),
        (
            "PyTorch",
            "padding=d * (k - 1) // 2",
            rule(lambda i, k, s, d: (d * (k - 1) // 2,) * 2),
            "",
        ),
        (
            "PyTorch",
            "padding='same'",
            rule(torch_same) if stride_one else None,
            "" if stride_one else "refused: PyTorch allows padding='same' only with stride 1",
        ),
        ("PyTorch", "padding='valid'", named("VALID"), ""),
        ("TensorFlow / Keras", "padding='same'", named("SAME"), "as convjax 'SAME'"),
        (
            "TensorFlow / Keras",
            "padding='causal'",
            named("CAUSAL") if ndim == 1 else None,
            "as convjax 'CAUSAL'" if ndim == 1 else "refused: Conv1D only",
        ),
        ("Flax", 'padding="SAME"', named("SAME"), "as convjax 'SAME'"),
    ]
    conventions = []
    for library, spelling, pads, note in entries:
        output = None
        if pads is not None:
            output = tuple(
                shapes.conv_output_size(i, k, s, p, d)
                for (i, k, s, d), p in zip(dims, pads, strict=True)
            )
            if any(o < 1 for o in output):  # convjax.conv and PyTorch raise here
                note = "; ".join(filter(None, [_empty(dims, pads), note]))
                pads = output = None
        conventions.append(Convention(library, spelling, pads, output, note))
    return PaddingExplanation(sizes, window, strides, dilation, tuple(conventions))


def _empty(dims, pads: Pads) -> str:
    """The refusal note of a convention whose output would be empty, naming each such dim."""
    reasons = []
    for dim, ((i, k, _, d), (lo, hi)) in enumerate(zip(dims, pads, strict=True)):
        span = shapes.effective_window(k, d)
        if i + lo + hi < span:
            reasons.append(
                f"dim {dim}: padded input {i} + {lo} + {hi} = {i + lo + hi} < dilated window {span}"
            )
    return f"refused: the output would be empty ({'; '.join(reasons)})"


def _ignores(dilation: tuple[int, ...]) -> str:
    if any(d > 1 for d in dilation):
        return "ignores the dilation: the size shrinks"
    return ""
