"""Flax Linen layers, built from the shared layer descriptions (``layers.py``).

Linen infers the input channels from the first call, so where an NNX layer takes
``in_features, out_features`` a Linen layer takes ``features`` (the output channels), as in
Flax.  The parameters have the same names and shapes as the NNX layers', so ``{"params": ...}``
built for one runs the other.  Options are checked when a layer is constructed, naming it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
from flax import errors

from convjax._src.modules import common
from convjax._src.modules.layers import LAYERS, LayerDescription


class Layer(nn.Module):
    """A convjax layer (the classes below are built from their descriptions)."""

    def __post_init__(self) -> None:
        values = self._values()
        description = self._description
        common.check_options(
            description.name, values, transposed=description.transposed, resolve=description.resolve
        )
        if description.check is not None:
            description.check(description.name, values)
        super().__post_init__()

    def _values(self) -> dict[str, Any]:
        names = [o.name for o in self._description.options]
        return {name: getattr(self, name) for name in ("kernel_size", *names)} | (
            {"features": self.features} if self._description.out_features else {}
        )

    @nn.compact
    @common.reports_as_module
    def __call__(self, x: jax.Array) -> jax.Array:
        """``x: [*batch, *spatial, C_in]`` → ``[*batch, *out_spatial, features]``."""
        description, values = self._description, self._values()
        if description.locally_connected:  # the kernel's shape follows the input's
            spatial = tuple(x.shape[-len(self.kernel_size) - 1 : -1])
            if values["in_spatial"] is not None and tuple(values["in_spatial"]) != spatial:
                raise ValueError(
                    f"{description.name}: the input's spatial shape must be in_spatial "
                    f"{tuple(values['in_spatial'])}, got {spatial}."
                )
            values["in_spatial"] = spatial
        out = values.get("features")
        shapes = description.shapes(description.name, x.shape[-1], out, values)
        try:
            params = {
                name: self.param(
                    name, common.initializer(values, name), shape, values["param_dtype"]
                )
                for name, shape in shapes.items()
            }
        except errors.ScopeParamShapeError as error:  # parameters made for another input
            raise ValueError(
                f"{description.name}: x has {x.shape[-1]} channels (shape {tuple(x.shape)} as "
                f"[*batch, *spatial, C]), which does not fit the parameters this layer was "
                f"initialised with: {str(error).split(' (https')[0]}"
            ) from None
        return common.apply_layer(description, values, params, x)


class Streaming:
    """``init_stream`` / ``stream`` for the layers that stream (see :mod:`convjax.streaming`),
    called with ``layer.apply(variables, …, method="stream")``."""

    def init_stream(self, x_chunk: Any):
        """The state of a stream through this causal layer: zeros for the ``(k − 1)·d`` frames
        before the first chunk."""
        op = f"{type(self).__name__}.init_stream"
        kernel = self.variables["params"]["kernel"]
        return common.init_stream(op, self._values(), kernel, x_chunk)

    def stream(self, state, x_chunk: jax.Array):
        """``(y_chunk, next state)``: this layer on the next chunk of a stream, time first; the
        chunks' outputs concatenate to ``layer.apply(variables, x)`` on the whole signal."""
        params = dict(self.variables["params"])
        return common.stream(self._description, self._values(), params, state, x_chunk)


def _build(description: LayerDescription) -> type:
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {}
    if description.out_features:
        annotations["features"] = int
    annotations["kernel_size"] = Sequence[int]
    for option in description.options:
        annotations[option.name] = option.annotation
        namespace[option.name] = option.default
    namespace |= {
        "__annotations__": annotations,
        "__doc__": description.docstring("linen"),
        "__module__": "convjax.linen",
        "__qualname__": description.name,
        "_description": description,
    }
    bases = (Layer, Streaming) if description.streams else (Layer,)
    cls = type(description.name, bases, namespace)
    dataclass_init = cls.__init__  # Flax made the layer a dataclass: its fields are the options
    fields = inspect.signature(dataclass_init).parameters

    @functools.wraps(dataclass_init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if unknown := [n for n in kwargs if n not in fields]:
            hints = common.keyword_hints(unknown, fields)
            raise TypeError(
                f"{description.name}: got an unexpected keyword argument {unknown[0]!r}"
                + (f" ({'; '.join(hints)})." if hints else ".")
            )
        dataclass_init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


Conv = _build(LAYERS["Conv"])
ConvLocal = _build(LAYERS["ConvLocal"])
ConvTranspose = _build(LAYERS["ConvTranspose"])
DepthwiseConv = _build(LAYERS["DepthwiseConv"])
DeformableConv = _build(LAYERS["DeformableConv"])
DepthwiseSeparableConv = _build(LAYERS["DepthwiseSeparableConv"])
SpatialSeparableConv = _build(LAYERS["SpatialSeparableConv"])
