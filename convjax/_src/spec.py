"""One normalised, validated, hashable description of a convolution's geometry.

Every public function builds a :class:`ConvSpec` from its user-facing arguments (ints or tuples,
padding strings, pairs) and the static shapes of its operands, and every check happens here, at
trace time, before any array work.  Errors name the operation, the argument, the rule and the
value received.  The formulation that computes a spec is not part of it (see
``formulations``): it is an argument where it is used.

The option checks that need no shapes (:func:`conv_options`) are separate so that the Flax
modules run the very same checks when they are constructed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal, get_args

import numpy as np

from convjax._src import shapes
from convjax._src.checks import (
    MAX_ELEMENTS,
    MAX_SIZE,
    check_int,
    check_shape,
    given_as_channels_first,
    input_name,
    is_sequence,
    per_dim,
    shown_input,
    spatial_axes,
)

PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]
PADDING_MODES: tuple[str, ...] = get_args(PaddingMode)

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
    """

    strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    groups: int
    padding_mode: str

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


def padding_option(op: str, padding: Padding, ndim: int) -> str | tuple[tuple[int, int], ...]:
    """Any accepted padding form, checked: an upper-case string (resolved later against the
    input size) or one non-negative ``(lo, hi)`` pair per spatial dim."""
    if isinstance(padding, str):
        name = padding.upper()
        if name not in shapes.PADDING_STRINGS:
            raise ValueError(
                f"{op}: padding must be one of {shapes.PADDING_STRINGS}, an int, one int per "
                f"dim or one (lo, hi) pair per dim, got {padding!r}."
            )
        return name
    if is_sequence(padding):
        if len(padding) != ndim:
            flat = all(isinstance(p, int | np.integer) for p in padding)
            hint = ""
            if flat and len(padding) == 2 * ndim:  # a (lo, hi) pair, or PyTorch's F.pad order
                pairs = tuple(tuple(padding[2 * i : 2 * i + 2]) for i in range(ndim))
                hint = f"; for (lo, hi) pairs write {pairs!r}"
                if ndim > 1:
                    torch = tuple(tuple(padding[2 * i : 2 * i + 2]) for i in reversed(range(ndim)))
                    hint += f" (or, from F.pad's last-dim-first order, {torch!r})"
            raise ValueError(
                f"{op}: padding needs one entry per spatial dim ({ndim}), got {len(padding)}: "
                f"{padding!r}{hint}."
            )
        pairs = []
        for entry in padding:
            if is_sequence(entry):
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
    if any(p > MAX_SIZE for pair in result for p in pair):
        raise ValueError(f"{op}: padding must be at most 2**31 - 1, got {result!r}.")
    return result


def normalize_padding(
    op: str,
    padding: Padding,
    input_spatial: Sequence[int],
    window: Sequence[int],
    strides: Sequence[int],
    dilation: Sequence[int],
) -> tuple[tuple[int, int], ...]:
    """Any accepted padding form as one non-negative ``(lo, hi)`` pair per spatial dim."""
    checked = padding_option(op, padding, len(window))
    if not isinstance(checked, str):
        return checked
    return tuple(
        shapes.string_padding(checked, *args)
        for args in zip(input_spatial, window, strides, dilation, strict=True)
    )


def check_padding_mode(op: str, padding_mode: Any) -> str:
    if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
        raise ValueError(
            f"{op}: padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}."
        )
    return padding_mode


@dataclasses.dataclass(frozen=True)
class ConvOptions:
    """A convolution's options, checked without any shapes: what a module can verify when it
    is constructed.  ``padding`` is still a string where the user gave one."""

    strides: tuple[int, ...]
    padding: str | tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    groups: int
    padding_mode: str


def conv_options(
    op: str,
    ndim: int,
    *,
    strides: Any = 1,
    padding: Any = "VALID",
    dilation: Any = 1,
    groups: Any = 1,
    padding_mode: Any = "zeros",
    dilation_name: str = "dilation",
) -> ConvOptions:
    """Check every option that does not depend on the operands' shapes."""
    return ConvOptions(
        strides=per_dim(op, "strides", strides, ndim, minimum=1),
        padding=padding_option(op, padding, ndim),
        dilation=per_dim(op, dilation_name, dilation, ndim, minimum=1),
        groups=check_int(op, "groups", groups, minimum=1),
        padding_mode=check_padding_mode(op, padding_mode),
    )


def split_shapes(
    op: str,
    x_shape: Sequence[int],
    kernel_shape: Sequence[int],
    *,
    x_name: str | None = None,
    x_layout: str = "[*batch, *spatial, C_in]",
    kernel_layout: str = "[*window, C_in // groups, C_out]",
) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """Check the ranks and spatial sizes of ``x`` and ``kernel``; return ``(ndim, window,
    spatial)`` with ``ndim = len(kernel_shape) - 2``.  ``x_name`` defaults to
    :func:`~convjax._src.checks.input_name`."""
    x_name = x_name or input_name()
    x_shape = check_shape(op, x_name if x_name.endswith("shape") else f"{x_name}.shape", x_shape)
    kernel_shape = check_shape(op, "kernel.shape", kernel_shape)
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
            f"{op}: spatial sizes must be >= 1, got {x_name} spatial {spatial} "
            f"({spatial_axes(x_shape, ndim)}) and kernel window {window}."
        )
    return ndim, window, spatial


def _channels_first_hint(
    x_shape: Sequence[int],
    kernel_shape: Sequence[int],
    ndim: int,
    groups: int,
    *,
    kernel_only: bool = False,
) -> str:
    """What a channel mismatch most likely is, in the porting mistakes that cause it: ``x`` in
    PyTorch's ``[N, C, *spatial]`` layout, the kernel's last two axes swapped (``[*window, C_out,
    C_in // groups]``), a PyTorch-layout kernel ``[C_out, C_in // groups, *window]``, or both
    ``x`` and the kernel in PyTorch's layouts.  Each is named when the shapes fit it
    (``kernel_only`` leaves out ``x``'s layout, for an error about the kernel alone); an empty
    string when none does.

    A swapped kernel and a channels-first ``x`` can both fit (a spatial size equal to a channel
    count): both are named, first the one under which ``x``'s spatial sizes are all equal (square
    images) when only one reading gives that, else ``x``'s layout first."""
    c_in, per_group, last = x_shape[-1], kernel_shape[-2], kernel_shape[-1]
    expected = per_group * groups
    first = len(x_shape) - ndim - 1  # x's channel axis, were it channels-first
    x_first = not kernel_only and first >= 0 and x_shape[first] != c_in
    x_first = x_first and not given_as_channels_first()  # already passed channels-first
    # [C_out, C_in/g, *window]: PyTorch's windows are square, which convjax's channel axes
    # (read as the window here) seldom are: a 3×3 kernel on RGB is no sign of PyTorch's layout.
    torch_kernel = (
        ndim >= 2 and kernel_shape[1] * groups != expected and len(set(kernel_shape[2:])) == 1
    )
    layout = "convjax kernels are [*window, C_in // groups, C_out]"
    hints = []
    if torch_kernel and kernel_shape[1] * groups == c_in:
        perm = (*range(2, len(kernel_shape)), 1, 0)
        hints.append(
            f"the kernel looks like PyTorch's [C_out, C_in // groups, *window] layout "
            f"(kernel.shape[1] = {kernel_shape[1]} = C_in // groups): {layout}; convert it with "
            f"convjax.from_torch.conv_kernel(weight), i.e. jnp.transpose(kernel, {perm})"
        )
    layouts = []  # (x's spatial sizes under this reading, hint)
    if x_first and x_shape[first] == expected:
        hint = channels_first_hint(input_name(), first, expected, x_shape)
        layouts.append((x_shape[first + 1 :], hint))
    if last * groups == c_in and last != per_group:
        layouts.append(
            (
                x_shape[first:-1],
                f"the kernel's last two axes look swapped, [*window, C_out, C_in // groups] "
                f"(kernel.shape[-1] = {last} = C_in // groups): {layout}; swap them with "
                f"jnp.swapaxes(kernel, -1, -2)",
            )
        )
    square = [ndim > 1 and len(set(spatial)) == 1 for spatial, _ in layouts]
    if square == [False, True]:
        layouts.reverse()
    hints += [hint for _, hint in layouts]
    if x_first and torch_kernel and x_shape[first] == kernel_shape[1] * groups:
        name = input_name()
        both = (
            f"{name} and the kernel both look like PyTorch's layouts ({name} axis {first} has "
            f"{x_shape[first]} = kernel.shape[1] * groups channels, kernel [C_out, C_in // "
            f"groups, *window])"
        )
        if name == "x":
            hints.append(
                f"{both}: pass data_format='channels_first' and convert the kernel with "
                f"convjax.from_torch.conv_kernel(weight)"
            )
        else:  # shapes: write them in convjax's layouts
            perm = (*range(2, len(kernel_shape)), 1, 0)
            hints.append(
                f"{both}: convjax's shapes are channels-last, write them "
                f"{_moved_last(x_shape, first)} and {tuple(kernel_shape[a] for a in perm)}"
            )
    moved_last = len(x_shape) - 2  # under channels-first, the axis the user passed last
    if given_as_channels_first() and not kernel_only and x_shape[moved_last] == expected:
        hints.append(
            f"x looks channels-last (its last axis has {expected} = C_in) while "
            f"data_format='channels_first' reads C_in from axis {first}: drop data_format"
        )
    return likely(hints)


def channels_first_hint(
    name: str, axis: int, channels: int, shape: Sequence[int] | None = None
) -> str:
    """The hint that ``name`` looks channels-first: its ``axis`` has the ``channels`` expected.
    For an array, pass ``data_format`` or move the axis; for a shape argument (``name`` not
    ``x``, and its ``shape`` given), write the shape channels-last."""
    said = f"{name} looks channels-first (axis {axis} has {channels} = C_in): convjax is "
    if name != "x" and shape is not None:
        return f"{said}channels-last, [*batch, *spatial, C]; write it {_moved_last(shape, axis)}"
    return (
        f"{said}channels-last, [*batch, *spatial, C]; pass data_format='channels_first' or move "
        f"the axis, e.g. jnp.moveaxis({name}, {axis}, -1)"
    )


def _moved_last(shape: Sequence[int], axis: int) -> tuple[int, ...]:
    shape = tuple(shape)
    return (*shape[:axis], *shape[axis + 1 :], shape[axis])


def likely(hints: Sequence[str]) -> str:
    """``hints`` as the sentence an error message ends with (nothing where there is none)."""
    return " Likely: " + "; or ".join(hints) + "." if hints else ""


def make_spec(
    op: str,
    x_shape: Sequence[int],
    kernel_shape: Sequence[int],
    *,
    strides: int | Sequence[int] = 1,
    padding: Padding = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: PaddingMode = "zeros",
    dilation_name: str = "dilation",
    kernel_shown: Sequence[int] | None = None,
) -> ConvSpec:
    """Validate a convolution of ``x_shape`` by ``kernel_shape`` and normalise its options.

    ``x_shape`` is ``[*batch, *spatial, C_in]`` and ``kernel_shape`` ``[*window, C_in // groups,
    C_out]``; the number of spatial dims is ``len(kernel_shape) - 2``.  Zero-size batch dims
    and channels are allowed (the convolution is then empty or a sum of nothing).
    ``kernel_shown`` is the kernel's shape as the caller passed it, where that is more than the
    shared ``kernel_shape`` (a locally connected kernel), for the error messages.
    """
    ndim, window, input_spatial = split_shapes(op, x_shape, kernel_shape)
    x_shape, kernel_shape = tuple(x_shape), tuple(kernel_shape)
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
    groups = options.groups
    c_in, c_per_group, c_out = x_shape[-1], kernel_shape[-2], kernel_shape[-1]
    expected = c_per_group * groups
    if c_in % groups:
        raise ValueError(
            f"{op}: groups must divide the input channels, but {groups} does not divide {c_in}."
            + _channels_first_hint(x_shape, kernel_shape, ndim, groups)
        )
    if c_out % groups:
        raise ValueError(
            f"{op}: groups must divide the output channels (kernel.shape[-1]), but {groups} does "
            f"not divide {c_out}."
            + _channels_first_hint(x_shape, kernel_shape, ndim, groups, kernel_only=True)
        )
    if expected != c_in:
        shown = tuple(kernel_shown or kernel_shape)
        raise ValueError(
            f"{op}: kernel.shape[-2] must be C_in // groups = {c_in} // {groups} = "
            f"{c_in // groups}, got {c_per_group} (kernel shape {shown}, "
            f"{shown_input(x_shape, ndim)})."
            + _channels_first_hint(x_shape, kernel_shape, ndim, groups)
        )
    strides, dilation = options.strides, options.dilation
    pads = normalize_padding(op, options.padding, input_spatial, window, strides, dilation)
    if options.padding_mode == "reflect":
        for dim, (i, (lo, hi)) in enumerate(zip(input_spatial, pads, strict=True)):
            if max(lo, hi) >= i:
                raise ValueError(
                    f"{op}: reflect padding must be smaller than the input size, but spatial dim "
                    f"{dim} has size {i} and padding {(lo, hi)}."
                )
    padded = [i + lo + hi for i, (lo, hi) in zip(input_spatial, pads, strict=True)]
    spans = [shapes.effective_window(k, d) for k, d in zip(window, dilation, strict=True)]
    for dim, (n, span) in enumerate(zip(padded, spans, strict=True)):
        if max(n, span) > MAX_SIZE:
            raise ValueError(
                f"{op}: spatial dim {dim} would be {n} long padded ({input_spatial[dim]} and "
                f"padding {pads[dim]}) with a dilated window of {span}: each must be at most "
                "2**31 - 1."
            )
    spec = ConvSpec(strides, pads, dilation, groups, options.padding_mode)
    out = spec.output_spatial(input_spatial, window)
    batch = math.prod(x_shape[: -ndim - 1])
    for name, sizes, channels in (("padded input", padded, c_in), ("output", out, c_out)):
        elements = batch * math.prod(sizes) * channels
        if elements > MAX_ELEMENTS:
            raise ValueError(
                f"{op}: the {name} would have {elements} elements (batch {batch}, spatial "
                f"{tuple(sizes)}, {channels} channels), more than 2**48: check the padding, "
                f"strides and {dilation_name}."
            )
    if any(o < 1 for o in out):
        raise ValueError(
            f"{op}: the output would be empty: spatial output {out} from input {input_spatial} "
            f"({spatial_axes(x_shape, ndim)}), window {window}, "
            f"{dilation_name} {dilation}, padding {pads}, strides {strides} (the dilated window "
            f"must fit the padded input)."
        )
    return spec
