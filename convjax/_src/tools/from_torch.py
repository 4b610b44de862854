"""PyTorch weights as convjax parameters: NumPy arrays in, NumPy arrays out, no torch import.

PyTorch stores a ``Conv{1,2,3}d`` weight as ``[C_out, C_in // groups, *window]`` and a
``ConvTranspose{1,2,3}d`` weight as ``[C_in, C_out // groups, *window]``; convjax's kernels are
``[*window, C_in // groups, C_out]`` and, for the transposed conv, the forward conv's kernel
``[*window, C_out // groups, C_in]``.  Both are the same permutation: window axes first, then
axis 1, then axis 0.  Biases are unchanged.  Layouts of activations differ too (PyTorch
``NC*spatial``, convjax ``N*spatialC``); that is the caller's to convert.

PyTorch's ``padding_mode`` names (``"zeros"``, ``"reflect"``, ``"replicate"``, ``"circular"``)
are convjax's, and its ``padding`` (an int, one int per dim, ``"same"`` or ``"valid"``) means
what convjax's does.  Weights may be NumPy arrays or PyTorch tensors (detached and copied to
the host here, whether or not they require grad); bfloat16 and float16 tensors keep their dtype
(bfloat16 as ``jnp.bfloat16``, which NumPy lacks).

Layers are recognised by class hierarchy, not by name: a subclass of ``Conv2d`` (a user's, or
the ``ParametrizedConv2d`` that ``torch.nn.utils.parametrizations.weight_norm`` makes, whose
``weight`` is the effective weight) converts as ``Conv2d``; a lazy conv converts once one forward
pass has set its shapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from convjax._src.checks import check_int, is_sequence
from convjax._src.modules import nnx as nnx_modules
from convjax._src.ops.layout import check_data_format
from convjax._src.spec import check_padding_mode


def _numpy(op: str, name: str, value: Any) -> np.ndarray:
    """An array-like (a NumPy array, a PyTorch tensor, nested lists of numbers) as a real NumPy
    array, without importing torch.  A bfloat16 tensor becomes a ``jnp.bfloat16`` array (NumPy
    has no bfloat16 of its own, so torch cannot export one): through float32, which holds every
    bfloat16 value exactly."""
    given = type(value).__name__
    if hasattr(value, "detach"):  # a torch tensor, maybe requiring grad or on an accelerator
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = np.asarray(value.float().numpy(), jnp.bfloat16)
        else:
            value = value.numpy()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{op}: {name} must be an array, got {given}.") from error
    if not (jnp.issubdtype(array.dtype, jnp.floating) or jnp.issubdtype(array.dtype, np.integer)):
        raise TypeError(
            f"{op}: {name} must be an array of real numbers, got {given} of dtype {array.dtype}."
        )
    return array


def _weight(op: str, weight: Any) -> np.ndarray:
    weight = _numpy(op, "weight", weight)
    if weight.ndim < 3:
        raise ValueError(
            f"{op}: a PyTorch conv weight has rank >= 3 ([C, C', *window]), got shape "
            f"{weight.shape}."
        )
    return weight


def _window_first(weight: np.ndarray) -> np.ndarray:
    return np.transpose(weight, (*range(2, weight.ndim), 1, 0))


def conv_kernel(weight: Any) -> np.ndarray:
    """A ``Conv{1,2,3}d`` weight ``[C_out, C_in // groups, *window]`` as a convjax kernel
    ``[*window, C_in // groups, C_out]`` (also a depthwise conv's ``[C·m, 1, *window]``).

    >>> import numpy as np
    >>> conv_kernel(np.zeros((8, 3, 5, 7))).shape
    (5, 7, 3, 8)
    """
    return _window_first(_weight("from_torch.conv_kernel", weight))


def conv_transpose_kernel(weight: Any) -> np.ndarray:
    """A ``ConvTranspose{1,2,3}d`` weight ``[C_in, C_out // groups, *window]`` as the forward
    conv's kernel ``[*window, C_out // groups, C_in]``, the kernel of
    :func:`convjax.conv_transpose`.

    >>> import numpy as np
    >>> conv_transpose_kernel(np.zeros((8, 3, 5, 7))).shape
    (5, 7, 3, 8)
    """
    return _window_first(_weight("from_torch.conv_transpose_kernel", weight))


def pointwise_kernel(weight: Any) -> np.ndarray:
    """A 1×1 ``Conv{1,2,3}d`` weight ``[C_out, C_in, 1, …]`` as a pointwise kernel ``[C_in,
    C_out]`` (the second half of a depthwise-separable conv).

    >>> import numpy as np
    >>> pointwise_kernel(np.zeros((8, 3, 1, 1))).shape
    (3, 8)
    """
    weight = _weight("from_torch.pointwise_kernel", weight)
    if any(k != 1 for k in weight.shape[2:]):
        raise ValueError(
            f"from_torch.pointwise_kernel: a pointwise weight has a 1x…x1 window, got shape "
            f"{weight.shape}."
        )
    return weight.reshape(weight.shape[:2]).T


def padding(value: int | Sequence[int] | str) -> int | tuple[int, ...] | str:
    """PyTorch's ``padding`` as convjax's: ``"same"``/``"valid"`` upper-cased, ints unchanged.

    >>> padding("same"), padding((1, 2))
    ('SAME', (1, 2))
    """
    return _padding("from_torch.padding", value)


def _padding(op: str, value: Any) -> int | tuple[int, ...] | str:
    if isinstance(value, str):
        if value.lower() not in ("same", "valid"):
            raise ValueError(
                f"{op}: PyTorch's string paddings are 'same' and 'valid', got {value!r}."
            )
        return value.upper()
    if is_sequence(value):
        return tuple(check_int(op, "padding", v, minimum=0) for v in value)
    return check_int(op, "padding", value, minimum=0)


def padding_mode(value: str) -> str:
    """PyTorch's ``padding_mode``: the same four names as convjax's.

    >>> padding_mode("circular")
    'circular'
    """
    return check_padding_mode("from_torch.padding_mode", value)


def _layer_params(
    op: str, state_dict: Mapping[str, Any], prefix: str, kernel_fn
) -> dict[str, np.ndarray]:
    key = f"{prefix}weight"
    if key not in state_dict:
        nested = sorted(k.removesuffix("weight") for k in state_dict if k.endswith(".weight"))
        hint = (
            f" The weights are under prefixes ({', '.join(repr(p) for p in nested[:4])}): pass "
            f"prefix={nested[0]!r} for one layer, or convert a whole model's layers with "
            f"from_torch.modules(model)."
            if nested and not prefix
            else ""
        )
        raise KeyError(
            f"{op}: state_dict has no {key!r}; its keys are {sorted(state_dict)!r}.{hint}"
        )
    params = {"kernel": kernel_fn(state_dict[key])}
    bias = state_dict.get(f"{prefix}bias")
    if bias is not None:
        params["bias"] = _numpy(op, f"state_dict[{prefix + 'bias'!r}]", bias)
    return params


def conv_params(state_dict: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """The ``kernel`` (and ``bias``, if present) of a :class:`convjax.nnx.Conv`,
    :class:`convjax.nnx.DepthwiseConv` or their Linen twins, from a ``Conv{1,2,3}d``'s
    ``state_dict`` of NumPy arrays (``{k: v.numpy() for k, v in layer.state_dict().items()}``).

    Args:
      state_dict: a mapping with ``prefix + "weight"`` and optionally ``prefix + "bias"``.
      prefix: the layer's key prefix in a larger model's state dict, e.g. ``"encoder.0."``.

    Returns:
      ``{"kernel": ..., "bias": ...}``: pass to :func:`load` for an NNX module, or as
      ``{"params": ...}`` to a Linen module's ``apply``.

    >>> import numpy as np
    >>> p = conv_params({"weight": np.zeros((8, 3, 3, 3)), "bias": np.zeros(8)})
    >>> {k: v.shape for k, v in p.items()}
    {'kernel': (3, 3, 3, 8), 'bias': (8,)}
    """
    return _layer_params("from_torch.conv_params", state_dict, prefix, conv_kernel)


def conv_transpose_params(state_dict: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """The ``kernel`` (and ``bias``) of a :class:`convjax.nnx.ConvTranspose` from a
    ``ConvTranspose{1,2,3}d``'s ``state_dict`` of NumPy arrays.  See :func:`conv_params`.

    >>> import numpy as np
    >>> p = conv_transpose_params({"weight": np.zeros((8, 3, 4, 4))})
    >>> {k: v.shape for k, v in p.items()}
    {'kernel': (4, 4, 3, 8)}
    """
    return _layer_params(
        "from_torch.conv_transpose_params", state_dict, prefix, conv_transpose_kernel
    )


def load(module: Any, params: Mapping[str, Any]) -> None:
    """Set an NNX module's parameters in place from ``params`` (e.g. :func:`conv_params`),
    checking that every name exists and every shape matches, and casting to each parameter's
    dtype.

    >>> import numpy as np, convjax
    >>> from flax import nnx
    >>> layer = convjax.nnx.Conv(3, 8, (3, 3), rngs=nnx.Rngs(0))
    >>> load(layer, {"kernel": np.ones((3, 3, 3, 8)), "bias": np.ones(8)})
    >>> float(layer.bias[...].sum()), layer.bias[...].dtype.name
    (8.0, 'float32')
    """
    updates = {}
    for name, value in params.items():
        current = getattr(module, name, None)
        if current is None or not hasattr(current, "shape"):
            names = [n for n in ("kernel", "bias") if hasattr(getattr(module, n, None), "shape")]
            hint = (
                " PyTorch's names: convert the state_dict with from_torch.conv_params(state) "
                "(or conv_transpose_params) first."
                if name == "weight"
                else ""
            )
            raise ValueError(
                f"from_torch.load: {type(module).__name__} has no parameter {name!r} (it has "
                f"{', '.join(names) or 'none'}).{hint}"
            )
        value = _numpy("from_torch.load", f"params[{name!r}]", value)
        if value.shape != current.shape:
            raise ValueError(
                f"from_torch.load: {type(module).__name__}.{name} has shape {current.shape}, "
                f"got {value.shape}."
            )
        updates[name] = jnp.asarray(value, current[...].dtype)
    nnx.update(module, updates)


_CONVS = {f"Conv{n}d": n for n in (1, 2, 3)}
_TRANSPOSED = {f"ConvTranspose{n}d": n for n in (1, 2, 3)}
_TORCH_CONV_MODULE = "torch.nn.modules.conv"  # where PyTorch defines the six classes


def _conv_base(torch_module: Any) -> str | None:
    """The PyTorch conv class ``torch_module`` is an instance of (``"Conv2d"``, …), read from its
    class hierarchy, so subclasses count (a user's, weight-norm's ``ParametrizedConv2d``, the lazy
    convs); None for anything else.  Class names, not ``isinstance``: torch is optional."""
    for cls in type(torch_module).__mro__:
        if cls.__module__ == _TORCH_CONV_MODULE and (
            cls.__name__ in _CONVS or cls.__name__ in _TRANSPOSED
        ):
            return cls.__name__
    return None


def module(
    torch_module: Any, *, impl: Any = "auto", dtype: Any = None, data_format: Any = "channels_last"
) -> nnx.Module:
    """The convjax NNX layer equal to a PyTorch ``Conv{1,2,3}d`` or ``ConvTranspose{1,2,3}d``
    (or a subclass of one: a parametrised conv converts with its effective weight): the same
    options (stride, padding including ``'same'``/``'valid'``, dilation, groups, padding_mode,
    output_padding, bias) and the same weights, in the weight's dtype (bfloat16 and float16
    included).  Inputs are channels-last, ``layer(x.permute(0, 2, 3, 1))`` for an NCHW ``x``,
    or, with ``data_format="channels_first"``, in PyTorch's own layout.

    Args:
      torch_module: the PyTorch layer (read by attribute: torch is not imported here).  A lazy
        conv must have run one forward pass (which sets its input channels) first.
      impl: the convjax layer's formulation.
      dtype: the parameters' dtype (default: the weight's).
      data_format: the layer's inputs and outputs, ``"channels_last"`` (default) or
        ``"channels_first"`` (``[N, C, *spatial]``, as PyTorch's).

    >>> import jax.numpy as jnp, torch, convjax
    >>> conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1, padding_mode="reflect")
    >>> layer = convjax.from_torch.module(conv)
    >>> layer(jnp.ones((1, 9, 9, 3))).shape  # channels-last
    (1, 5, 5, 8)
    """
    return _convert(
        "from_torch.module", torch_module, None, impl=impl, dtype=dtype, data_format=data_format
    )


def _convert(
    op: str, m: Any, name: str | None, *, impl: Any, dtype: Any, data_format: Any
) -> nnx.Module:
    """:func:`module` for ``m``, the layer called ``name`` in a model (None for a lone layer);
    errors name ``op`` and the layer."""
    check_data_format(op, data_format)
    kind = _conv_base(m)
    layer_name = type(m).__name__
    where = layer_name if name is None else f"layer {name!r} ({layer_name})"
    if kind is None:
        raise TypeError(
            f"{op}: converts Conv1d/2d/3d and ConvTranspose1d/2d/3d (and their subclasses), got "
            f"{where}; from_torch.modules(model) converts every conv layer inside a model."
        )
    uninitialised = getattr(m, "has_uninitialized_params", None)
    if callable(uninitialised) and uninitialised():
        raise ValueError(
            f"{op}: {where} is a lazy conv whose parameters are not initialised yet "
            f"(in_channels = {m.in_channels}, set on its first call): run one forward pass "
            f"first, e.g. model(example_input), then convert."
        )
    label = f"{op}: {where}"
    of_layer = "" if name is None else f" of layer {name!r}"
    weight = _numpy(op, f"{layer_name}.weight{of_layer}", m.weight)
    rank = _CONVS.get(kind, _TRANSPOSED.get(kind)) + 2
    if weight.ndim != rank:
        raise ValueError(
            f"{label}: a {kind} weight has rank {rank} ([C, C', *window]), got shape "
            f"{weight.shape}."
        )
    options = dict(
        strides=tuple(m.stride),
        kernel_dilation=tuple(m.dilation),
        feature_group_count=m.groups,
        padding_mode=check_padding_mode(label, m.padding_mode),
        use_bias=m.bias is not None,
        param_dtype=dtype or weight.dtype,
        impl=impl,
        data_format=data_format,
        rngs=nnx.Rngs(0),
    )
    padding_value = _padding(label, m.padding)
    if kind in _CONVS:
        layer = nnx_modules.Conv(
            m.in_channels, m.out_channels, tuple(m.kernel_size), padding=padding_value, **options
        )
    else:
        layer = nnx_modules.ConvTranspose(
            m.in_channels,
            m.out_channels,
            tuple(m.kernel_size),
            padding=padding_value,
            output_padding=tuple(m.output_padding),
            **options,
        )
    # conv_kernel and conv_transpose_kernel are the same permutation (see the module docstring).
    params = {"kernel": _window_first(weight)}
    if m.bias is not None:
        params["bias"] = _numpy(op, f"{layer_name}.bias{of_layer}", m.bias)
    load(layer, params)
    return layer


def modules(
    torch_model: Any, *, impl: Any = "auto", dtype: Any = None, data_format: Any = "channels_last"
) -> dict[str, nnx.Module]:
    """Every conv layer of a PyTorch model (subclasses of the conv classes included), by its name
    in ``named_modules()``, as the convjax layer :func:`module` makes of it.  Other layers
    (norms, activations, linear) are skipped: they are not convolutions.  A lazy conv that has
    not run yet is an error naming it.

    >>> import torch, convjax
    >>> nn = torch.nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1))
    >>> {name: type(layer).__name__ for name, layer in convjax.from_torch.modules(model).items()}
    {'0': 'Conv', '2': 'Conv'}
    """
    op = "from_torch.modules"
    if not callable(getattr(torch_model, "named_modules", None)):
        raise TypeError(
            f"{op}: torch_model must be a torch.nn.Module (with named_modules()), got "
            f"{type(torch_model).__name__}."
        )
    return {
        name: _convert(op, child, name, impl=impl, dtype=dtype, data_format=data_format)
        for name, child in torch_model.named_modules()
        if _conv_base(child) is not None
    }
