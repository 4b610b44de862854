"""Channels-first inputs: ``data_format="channels_first"`` on every function and module.

convjax computes channels-last (``[*batch, *spatial, C]``); a channels-first array
(``[*batch, C, *spatial]``, PyTorch's layout) is moved to channels-last on the way in and the
result moved back on the way out.  Kernels keep convjax's layout either way (see
:mod:`convjax.from_torch` for PyTorch's weights).  Under ``jit`` the two moves are transposes
XLA may fold into neighbouring ops; ``convjax bench``-style timing of both layouts is in
``benchmarks/channels_first.py``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Literal, get_args

import jax
import jax.numpy as jnp

from convjax._src.checks import check_arrays, given_channels_first, op_name

DataFormat = Literal["channels_last", "channels_first"]
DATA_FORMATS: tuple[str, ...] = get_args(DataFormat)

DOC = """
    ``data_format``: ``"channels_last"`` (default, ``[*batch, *spatial, C]``) or
    ``"channels_first"`` (``[*batch, C, *spatial]`` in and out; kernels keep convjax's layout).
"""


def check_data_format(op: str, data_format: Any) -> str:
    if not isinstance(data_format, str) or data_format not in DATA_FORMATS:
        raise ValueError(f"{op}: data_format must be one of {DATA_FORMATS}, got {data_format!r}.")
    return data_format


def to_channels_last(op: str, x: Any, ndim: int, data_format: str) -> Any:
    """``x`` in ``data_format`` as channels-last (``x`` itself when it already is)."""
    if check_data_format(op, data_format) == "channels_last":
        return x
    if jnp.ndim(x) < ndim + 1:
        raise ValueError(
            f"{op}: with data_format='channels_first' the input must be [*batch, C, *spatial] "
            f"with {ndim} spatial dims, got shape {tuple(jnp.shape(x))}."
        )
    return jnp.moveaxis(x, -ndim - 1, -1)


def from_channels_last(y: jax.Array, ndim: int, data_format: str) -> jax.Array:
    return y if data_format == "channels_last" else jnp.moveaxis(y, -1, -ndim - 1)


def accepts_data_format(spatial_ndim: Callable[[dict[str, Any]], int]):
    """Give a function whose first argument is the input a ``data_format`` keyword;
    ``spatial_ndim(arguments)`` reads the number of spatial dims from its bound arguments."""

    def decorate(fn):
        signature = inspect.signature(fn)
        first = next(iter(signature.parameters))

        @functools.wraps(fn)
        def wrapper(*args, data_format: DataFormat = "channels_last", **kwargs):
            op = op_name(fn.__name__)
            if check_data_format(op, data_format) == "channels_last":
                return fn(*args, **kwargs)
            bound = signature.bind(*args, **kwargs)
            try:
                ndim = spatial_ndim(bound.arguments)
            except (AttributeError, TypeError):  # a malformed kernel: the function says why
                return fn(*args, **kwargs)
            check_arrays(op, **{first: bound.arguments[first]})  # as the function would
            x = to_channels_last(op, bound.arguments[first], ndim, data_format)
            bound.arguments[first] = x
            with given_channels_first():  # errors show x as passed
                result = fn(*bound.args, **bound.kwargs)
            if isinstance(result, tuple):  # (array, info)
                return (from_channels_last(result[0], ndim, data_format), *result[1:])
            return from_channels_last(result, ndim, data_format)

        parameter = inspect.Parameter(
            "data_format",
            inspect.Parameter.KEYWORD_ONLY,
            default="channels_last",
            annotation="DataFormat",
        )
        wrapper.__signature__ = signature.replace(
            parameters=[*signature.parameters.values(), parameter]
        )
        doc = fn.__doc__ or ""
        examples = doc.find("\n    >>>")  # the paragraph goes before the examples
        at = len(doc.rstrip()) if examples < 0 else examples
        wrapper.__doc__ = doc[:at].rstrip() + "\n" + DOC + doc[at:]
        return wrapper

    return decorate


def kernel_ndim(name: str) -> Callable[[dict[str, Any]], int]:
    """Spatial dims of a kernel argument ``[*window, C_in, C_out]``."""
    return lambda arguments: jnp.ndim(arguments[name]) - 2
