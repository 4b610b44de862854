"""Flax NNX layers, built from the shared layer descriptions (``layers.py``).

Each class's ``__init__`` checks its options (naming the class), creates the parameters from the
description's shapes, and keeps the options as static attributes; ``__call__`` is one call of the
pure function plus the bias.  Arguments use Flax's names where Flax has one: ``kernel_dilation``
is the functions' ``dilation`` and ``feature_group_count`` their ``groups``.
"""

from __future__ import annotations

import inspect
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from convjax._src.modules import common
from convjax._src.modules.layers import LAYERS, LayerDescription


class Layer(nnx.Module):
    """A convjax layer (the classes below are built from their descriptions)."""

    _description: LayerDescription

    def _configure(self, args: tuple[Any, ...], kwargs: dict[str, Any], rngs: nnx.Rngs) -> None:
        description = self._description
        op = description.name
        values = _bind(type(self), args, kwargs)
        values["kernel_size"] = common.window(op, values["kernel_size"])
        common.check_options(
            op, values, transposed=description.transposed, resolve=description.resolve
        )
        if description.check is not None:
            description.check(op, values)
        shapes = description.shapes(op, values["in_features"], values.get("out_features"), values)
        if values.get("mask") is not None:
            values["mask"] = common.check_mask(op, values["mask"])
            common.masked(op, {"kernel": jnp.zeros(shapes["kernel"])}, values["mask"])
        for name, shape in shapes.items():
            init = common.initializer(values, name)
            setattr(self, name, nnx.Param(init(rngs.params(), shape, values["param_dtype"])))
        for name in [n for n in values if n.endswith("_init")]:  # not kept: not static data
            del values[name]
        if "bias" not in shapes:
            self.bias = nnx.data(None)
        self._parameter_names = tuple(shapes)
        for name, value in values.items():
            setattr(self, name, common.freeze(value))

    def _values(self) -> dict[str, Any]:
        return {o.name: getattr(self, o.name, None) for o in self._description.options}

    def _params(self) -> dict[str, Any]:
        names = (n for n in self._parameter_names if n != "bias" or self.bias is not None)
        return {name: getattr(self, name)[...] for name in names}

    @common.reports_as_module
    def __call__(self, x: jax.Array) -> jax.Array:
        """``x: [*batch, *spatial, C_in]`` → ``[*batch, *out_spatial, C_out]``."""
        values = self._values()
        ndim, name = len(self.kernel_size), type(self).__name__
        common.check_channels(name, x, self.in_features, ndim, values["data_format"])
        spatial = tuple(jnp.shape(x)[-ndim - 1 : -1])
        if self._description.locally_connected and spatial != tuple(values["in_spatial"]):
            raise ValueError(
                f"{name}: the input's spatial shape must be in_spatial "
                f"{tuple(values['in_spatial'])} (the kernel has one entry per output position), "
                f"got {spatial}."
            )
        return common.apply_layer(self._description, values, self._params(), x)


class Streaming:
    """``init_stream`` / ``stream`` for the layers that stream (see :mod:`convjax.streaming`)."""

    def init_stream(self, x_chunk: Any):
        """The state of a stream through this causal layer: zeros for the ``(k − 1)·d`` frames
        before the first chunk."""
        op = f"{type(self).__name__}.init_stream"
        return common.init_stream(op, self._values(), self.kernel[...], x_chunk)

    def stream(self, state, x_chunk: jax.Array):
        """``(y_chunk, next state)``: this layer on the next chunk of a stream, time first; the
        chunks' outputs concatenate to ``self(x)`` on the whole signal (the state is
        channels-last whatever ``data_format`` says)."""
        return common.stream(self._description, self._values(), self._params(), state, x_chunk)


def _signature(description: LayerDescription) -> inspect.Signature:
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    keyword = inspect.Parameter.KEYWORD_ONLY
    channels = ["in_features", *(["out_features"] if description.out_features else [])]
    parameters = [inspect.Parameter(n, positional, annotation=int) for n in channels]
    parameters.append(inspect.Parameter("kernel_size", positional, annotation="Sequence[int]"))
    for option in description.options:
        kind = positional if option.name == "strides" else keyword
        parameters.append(
            inspect.Parameter(
                option.name, kind, default=option.default, annotation=option.annotation
            )
        )
    parameters.append(inspect.Parameter("rngs", keyword, annotation=nnx.Rngs))
    return inspect.Signature(parameters)


def _bind(cls, args, kwargs) -> dict[str, Any]:
    """The constructor's arguments by name, defaults filled in, ``self`` and ``rngs`` left out."""
    try:
        bound = cls.__signature__.bind(*args, rngs=None, **kwargs)
    except TypeError as error:
        parameters = cls.__signature__.parameters
        hints = common.keyword_hints(kwargs, parameters)
        positional = [n for n, p in parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
        if len(args) > len(positional):
            hints.append(f"only {', '.join(positional)} go by position; name the rest")
        hint = f" ({'; '.join(hints)})" if hints else ""
        raise TypeError(f"{cls.__name__}: {error}{hint}.") from None
    bound.apply_defaults()
    return {k: v for k, v in bound.arguments.items() if k != "rngs"}


def _build(description: LayerDescription) -> type:
    def __init__(self, *args: Any, rngs: nnx.Rngs | None = None, **kwargs: Any) -> None:
        if not isinstance(rngs, nnx.Rngs):  # as Flax's layers: rngs is keyword-only, required
            raise TypeError(
                f"{description.name}: rngs must be an nnx.Rngs (the parameters' random keys), "
                f"e.g. rngs=nnx.Rngs(0); got {rngs!r}."
            )
        self._configure(args, kwargs, rngs)

    signature = _signature(description)  # the class's; __init__'s has self in front
    self_parameter = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    __init__.__signature__ = signature.replace(
        parameters=[self_parameter, *signature.parameters.values()]
    )
    bases = (Layer, Streaming) if description.streams else (Layer,)
    namespace = {
        "__init__": __init__,
        "__doc__": description.docstring("nnx"),
        "__module__": "convjax.nnx",
        "__qualname__": description.name,
        "__signature__": signature,
        "_description": description,
    }
    return type(description.name, bases, namespace)


Conv = _build(LAYERS["Conv"])
ConvLocal = _build(LAYERS["ConvLocal"])
ConvTranspose = _build(LAYERS["ConvTranspose"])
DepthwiseConv = _build(LAYERS["DepthwiseConv"])
DeformableConv = _build(LAYERS["DeformableConv"])
DepthwiseSeparableConv = _build(LAYERS["DepthwiseSeparableConv"])
SpatialSeparableConv = _build(LAYERS["SpatialSeparableConv"])
