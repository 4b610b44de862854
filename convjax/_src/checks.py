"""Validators shared by every public function and module: each checks one value and, on failure,
raises at trace time a ``TypeError`` or ``ValueError`` naming the operation, the argument, the
rule and the value received.

``reported_as`` lets a module or a composite function have the errors of the functions it calls
name it instead (``"Conv: …"``); ``op_name`` reads that name.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import functools
import inspect
import math
import operator
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

PrecisionLike = lax.PrecisionLike
DTypeLike = jax.typing.DTypeLike

FLOAT_DTYPES = "float16, bfloat16, float32, float64"
DTYPE_NAMES = {
    "float": f"floating ({FLOAT_DTYPES})",
    "complex": "complex (complex64, complex128)",
    "int": "integer of 8 bits or more (int8, int16, int32, int64, uint8, …)",
}
DTYPE_KINDS = tuple(DTYPE_NAMES)

_CALLER: contextvars.ContextVar[str | None] = contextvars.ContextVar("convjax_caller", default=None)


@contextlib.contextmanager
def _setting(variable: contextvars.ContextVar, value: Any) -> Iterator[None]:
    """``variable`` is ``value`` inside the block (and what it was again after it)."""
    token = variable.set(value)
    try:
        yield
    finally:
        variable.reset(token)


def reported_as(name: str) -> contextlib.AbstractContextManager[None]:
    """Errors raised by convjax functions called inside this block name ``name`` as the
    operation: a module (``"Conv"``) or a composite function calling the pure functions."""
    return _setting(_CALLER, name)


def op_name(default: str) -> str:
    """The operation errors should name: the innermost :func:`reported_as` name, else
    ``default`` (the function's own name)."""
    caller = _CALLER.get()
    return default if caller is None else caller


# The largest size, stride, dilation or padding convjax accepts on one axis (XLA indexes an
# axis with 32-bit ints in places), and the most elements an array it makes may have: far past
# any memory, and well inside XLA's 64-bit shape arithmetic, which aborts the process when a
# product of sizes overflows.
MAX_SIZE = 2**31 - 1
MAX_ELEMENTS = 2**48


def is_sequence(value: Any) -> bool:
    """Whether an option is a sequence of entries (a list, tuple or NumPy array of at least
    one dim), not one value (a number, a string, a 0-d NumPy array)."""
    if isinstance(value, np.ndarray):
        return value.ndim > 0
    return isinstance(value, Sequence) and not isinstance(value, str)


def unwrapped(value: Any) -> Any:
    """A 0-d NumPy array's element (a NumPy scalar); any other value as it is."""
    return value[()] if isinstance(value, np.ndarray) and value.ndim == 0 else value


def check_int(
    op: str, name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` as an int (Python or NumPy integer, or a 0-d NumPy array of one); bools,
    floats and other types are a TypeError, and a value below ``minimum`` or above ``maximum``
    a ValueError."""
    value = unwrapped(value)
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise TypeError(
            f"{op}: {name} must be an int, got {value!r} of type {type(value).__name__}."
        )
    value = operator.index(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"{op}: {name} must be at most {_bound(maximum)}, got {value}.")
    return value


def check_bool(op: str, name: str, value: Any) -> bool:
    """``value`` as a bool (Python or NumPy); anything else, ints included, is a TypeError."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{op}: {name} must be a bool, got {value!r}.")
    return bool(value)


def _bound(maximum: int) -> str:
    return "2**31 - 1" if maximum == MAX_SIZE else str(maximum)


def check_real(op: str, name: str, value: Any, *, minimum: float = 0.0) -> float:
    """``value`` as a finite float ``>= minimum``: a Python or NumPy int or float, or a concrete
    0-d real array; anything else is a TypeError."""
    real = isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )
    if not real and getattr(value, "shape", None) == () and hasattr(value, "dtype"):
        kind = np.dtype(value.dtype)
        real = np.issubdtype(kind, np.integer) or np.issubdtype(kind, np.floating)
    if not real:
        raise TypeError(f"{op}: {name} must be a real number, got {value!r}.")
    number = float(value)
    if not math.isfinite(number) or number < minimum:
        raise ValueError(f"{op}: {name} must be finite and >= {minimum:g}, got {value!r}.")
    return number


def check_shape(op: str, name: str, shape: Any, *, minimum: int = 0) -> tuple[int, ...]:
    """A shape: a sequence of ints from ``minimum`` (NumPy ints too)."""
    if hasattr(shape, "shape") and np.ndim(shape) != 1:  # an array where its shape belongs
        raise TypeError(
            f"{op}: {name} must be a sequence of ints, got an array of shape "
            f"{tuple(np.shape(shape))}; pass its .shape."
        )
    if isinstance(shape, str) or not isinstance(shape, Sequence | np.ndarray):
        raise TypeError(f"{op}: {name} must be a sequence of ints, got {shape!r}.")
    return tuple(check_int(op, name, n, minimum=minimum) for n in shape)


def per_dim(
    op: str, name: str, value: Any, ndim: int, *, minimum: int, maximum: int = MAX_SIZE
) -> tuple[int, ...]:
    """An int or a sequence of ``ndim`` ints, each from ``minimum`` to ``maximum``, as a
    tuple."""
    if is_sequence(value):
        if len(value) != ndim:
            raise ValueError(
                f"{op}: {name} needs one entry per spatial dim ({ndim}), got {len(value)}: "
                f"{tuple(value)!r}."
            )
        values = tuple(check_int(op, name, v) for v in value)
    else:
        values = (check_int(op, name, value),) * ndim
    if any(v < minimum for v in values):
        raise ValueError(f"{op}: {name} must be >= {minimum} in every dim, got {values!r}.")
    if any(v > maximum for v in values):
        raise ValueError(
            f"{op}: {name} must be at most {_bound(maximum)} in every dim, got {values!r}."
        )
    return values


@functools.lru_cache(maxsize=64)
def _lax_accepts_precision(precision: Any) -> bool:
    try:
        jax.eval_shape(
            functools.partial(lax.dot, precision=precision),
            *[jax.ShapeDtypeStruct((1, 1), jnp.float32)] * 2,
        )
    except (ValueError, TypeError):
        return False
    return True


def check_precision(op: str, precision: Any) -> Any:
    """``precision`` as lax takes it: ``None``, a ``jax.lax.Precision`` or its lower-case name
    (``"highest"``), a pair of those, or a ``jax.lax.DotAlgorithmPreset``."""
    try:
        accepted = precision is None or _lax_accepts_precision(precision)
    except TypeError:  # unhashable: not a precision
        accepted = False
    if not accepted:
        raise ValueError(
            f"{op}: precision must be None, a jax.lax.Precision or its lower-case name "
            f"('default', 'high', 'highest'), a pair of those, or a jax.lax.DotAlgorithmPreset, "
            f"got {precision!r}."
        )
    return precision


def dtype_kind(dtype: Any) -> str | None:
    """``"float"``, ``"complex"`` or ``"int"`` for the dtypes a convolution computes in, else
    ``None`` (booleans, strings, …)."""
    dtype = np.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating):
        return "float"
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return "complex"
    if jnp.issubdtype(dtype, jnp.integer):
        # Sub-byte integers (int4, int2, …): XLA:CPU's convolution and matrix products refuse
        # some of them outright, and every formulation would have to widen them first.
        return "int" if jnp.iinfo(dtype).bits >= 8 else None
    return None


def check_dtype(
    op: str, name: str, dtype: Any, *, optional: bool = True, kinds: Sequence[str] = ("float",)
) -> Any:
    """``dtype`` as a NumPy dtype of one of ``kinds`` (``None`` kept where ``optional``)."""
    if dtype is None and optional:
        return None
    try:
        kind = np.dtype(dtype)
    except TypeError:
        kind = None
    if kind is None or dtype_kind(kind) not in kinds:
        got = dtype if kind is None else kind.name
        raise TypeError(
            f"{op}: {name} must be {_kinds_named(kinds)}"
            + (" or None" if optional else "")
            + f", got {got!r}."
        )
    return kind


def check_float_dtype(op: str, name: str, dtype: Any, *, optional: bool = True) -> Any:
    """``dtype`` as a floating NumPy dtype (``None`` kept where ``optional``)."""
    return check_dtype(op, name, dtype, optional=optional, kinds=("float",))


def check_preferred_element_type(op: str, preferred_element_type: Any, x_dtype: Any = None):
    """A dtype of the operands' kind (floating, complex or integer) at least as wide as theirs
    (lax's rule), or ``None``."""
    if x_dtype is None:
        kinds: Sequence[str] = DTYPE_KINDS
    else:
        kinds = (dtype_kind(x_dtype),)
    kind = check_dtype(op, "preferred_element_type", preferred_element_type, kinds=kinds)
    if kind is not None and x_dtype is not None and kind.itemsize < np.dtype(x_dtype).itemsize:
        raise TypeError(
            f"{op}: preferred_element_type must not be narrower than the operands' dtype "
            f"{np.dtype(x_dtype).name}, got {kind.name}."
        )
    return kind


def check_arrays(op: str, **arrays: Any) -> None:
    """Each named value must be an array (have a ``shape`` and a ``dtype``)."""
    for name, value in arrays.items():
        if not hasattr(value, "shape") or not hasattr(value, "dtype"):
            raise TypeError(f"{op}: {name} must be an array, got {type(value).__name__}.")
        try:
            np.dtype(value.dtype)
        except TypeError:  # another framework's tensor: a shape, but a dtype NumPy can't read
            kind = f"{type(value).__module__.split('.')[0]}.{type(value).__name__}"
            raise TypeError(
                f"{op}: {name} must be a JAX or NumPy array, got a {kind} of dtype "
                f"{value.dtype}; convert it first, e.g. jnp.asarray({name}.numpy()) or "
                f"jax.dlpack.from_dlpack({name})."
            ) from None


def public_function(*names: str) -> Callable[[Callable], Callable]:
    """Decorate a public function's entry.  Its NumPy operands ``names`` (arrays, or lists of
    arrays) become JAX arrays before anything reads their dtypes, with JAX's dtypes as ``jnp``
    functions take them (float64 → float32 unless ``jax_enable_x64`` is on), and
    ``preferred_element_type`` is canonicalised likewise (with a warning where it narrows):
    otherwise the shapes and dtypes convjax derives would be the NumPy operands' while the
    arrays computed are JAX's.  A keyword it does not take is named with the one meant (another
    library's name for it, or a near spelling)."""

    def decorate(fn: Callable) -> Callable:
        parameters = list(inspect.signature(fn).parameters)
        positions = {parameters.index(name) for name in names}

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for name in kwargs:
                if name not in parameters:
                    raise TypeError(_unknown_keyword(fn.__name__, name, parameters))
            args = tuple(_as_jax(a) if i in positions else a for i, a in enumerate(args))
            kwargs = {k: _as_jax(v) if k in names else v for k, v in kwargs.items()}
            if kwargs.get("preferred_element_type") is not None:
                kwargs["preferred_element_type"] = _canonical(
                    fn.__name__, kwargs["preferred_element_type"]
                )
            return fn(*args, **kwargs)

        return wrapper

    return decorate


# Other libraries' names for convjax's options (lax, Flax, PyTorch), by what convjax calls them.
_OTHER_NAMES = {
    "stride": ("strides",),
    "window_strides": ("strides",),
    "dilation": ("rate",),  # dilated_conv's
    "kernel_dilation": ("dilation", "rate"),
    "rhs_dilation": ("dilation", "rate"),
    "feature_group_count": ("groups",),
    "groups": ("depth_multiplier",),  # depthwise_conv's
    "dimension_numbers": ("data_format",),
}


def meant_keyword(
    name: str, parameters: Collection[str], other_names: Mapping[str, Sequence[str]]
) -> tuple[str, bool] | None:
    """The parameter meant by the unknown keyword ``name``: ``(parameter, True)`` where
    ``other_names`` lists it as another library's name for one of ``parameters``, else
    ``(parameter, False)`` for a near spelling; ``None`` where there is neither."""
    if meant := [n for n in other_names.get(name, ()) if n in parameters]:
        return meant[0], True
    if close := difflib.get_close_matches(name, list(parameters), n=1):
        return close[0], False
    return None


def _unknown_keyword(op: str, name: str, parameters: Sequence[str]) -> str:
    hint = ""
    if found := meant_keyword(name, parameters, _OTHER_NAMES):
        meant, renamed = found
        hint = f" (convjax calls it {meant}=)" if renamed else f" (did you mean {meant}=?)"
    return f"{op}: got an unexpected keyword argument {name!r}{hint}."


def as_array(value: Any, dtype: Any = None) -> jax.Array:
    """``value`` as a JAX array (in ``dtype`` if given), as ``jnp.asarray`` gives it, but NumPy
    data is cast on the host and transferred with ``jax.device_put``: on jax 0.10
    ``jnp.asarray`` (and ``jnp.array``) of a NumPy array compiles a program per shape and dtype,
    ~35 ms in every eager call with a new shape; a transfer compiles nothing."""
    if isinstance(value, np.ndarray | np.generic):
        return jax.device_put(value if dtype is None else np.asarray(value, dtype))
    return jnp.asarray(value, dtype)


def _as_jax(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic) and value.dtype.kind in "biufc":
        return as_array(value)
    if isinstance(value, list | tuple) and any(isinstance(v, np.ndarray) for v in value):
        return type(value)(_as_jax(v) for v in value)
    return value


def _canonical(op: str, dtype: Any) -> Any:
    try:
        wanted = np.dtype(dtype)
    except TypeError:
        return dtype  # not a dtype: the function's own check says so
    canonical = jax.dtypes.canonicalize_dtype(wanted)
    if canonical != wanted:
        warnings.warn(
            f"{op}: preferred_element_type {wanted.name} is not available without "
            f"jax_enable_x64; computing in {canonical.name}.",
            stacklevel=3,
        )
    return canonical


def check_dtypes(
    op: str,
    x_dtype: Any,
    kernel_dtype: Any,
    kernel_name: str = "kernel",
    x_name: str = "x",
    kinds: Sequence[str] = DTYPE_KINDS,
) -> None:
    """Both operands of one of ``kinds`` (floating, complex, integer) and of one dtype; the error
    says which cast to make."""
    for name, dtype in ((x_name, x_dtype), (kernel_name, kernel_dtype)):
        if dtype_kind(dtype) not in kinds:
            raise TypeError(
                f"{op}: {name} must have {_kinds_named(kinds)}, got {np.dtype(dtype).name}."
            )
    if np.dtype(x_dtype) != np.dtype(kernel_dtype):
        raise TypeError(
            f"{op}: {x_name} and {kernel_name} must share a dtype, got {x_name} "
            f"{np.dtype(x_dtype).name} and {kernel_name} {np.dtype(kernel_dtype).name}; cast "
            f"one, e.g. {kernel_name}.astype({x_name}.dtype)."
        )


_CHANNELS_FIRST: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "convjax_channels_first", default=False
)


def given_channels_first() -> contextlib.AbstractContextManager[None]:
    """Inside this block the input arrived channels-first (``data_format="channels_first"``)
    and was moved: error messages show its shape as the user passed it."""
    return _setting(_CHANNELS_FIRST, True)


def given_as_channels_first() -> bool:
    """Whether the input arrived channels-first (see :func:`given_channels_first`)."""
    return _CHANNELS_FIRST.get()


_INPUT_NAME: contextvars.ContextVar[str] = contextvars.ContextVar("convjax_input_name", default="x")


def input_named(name: str) -> contextlib.AbstractContextManager[None]:
    """Inside this block the input is the argument ``name`` (``"input_shape"`` for the
    functions that take shapes), and error messages call it so instead of ``x``."""
    return _setting(_INPUT_NAME, name)


def input_name() -> str:
    """What error messages call the input: ``x``, or the name :func:`input_named` gave it."""
    return _INPUT_NAME.get()


def shown_input(x_shape: Sequence[int], ndim: int) -> str:
    """``"x shape (8, 5, 5, 3)"``, or ``"input_shape (8, 5, 5, 3)"`` for a shape argument."""
    name = input_name()
    return f"{name}{' shape' if name == 'x' else ''} {shown_shape(x_shape, ndim)}"


def shown_shape(x_shape: Sequence[int], ndim: int) -> tuple[int, ...]:
    """``x``'s shape as the user passed it: channels-first inside
    :func:`given_channels_first`."""
    shape = tuple(x_shape)
    if not _CHANNELS_FIRST.get() or len(shape) < ndim + 1:
        return shape
    return channels_first(shape, ndim)


def channels_first(shape: Sequence[int], ndim: int) -> tuple[int, ...]:
    """A channels-last ``[*batch, *spatial, C]`` shape with ``ndim`` spatial dims as
    channels-first, ``[*batch, C, *spatial]``."""
    shape = tuple(shape)
    return (*shape[: -ndim - 1], shape[-1], *shape[-ndim - 1 : -1])


def spatial_axes(x_shape: Sequence[int], ndim: int) -> str:
    """Which axes of ``x`` are read as spatial, for error messages: ``"axes 1, 2 of shape
    (8, 5, 5, 3), read as [*batch, *spatial, C]"`` (as the user passed ``x``)."""
    rank = len(x_shape)
    first = _CHANNELS_FIRST.get()
    start = rank - ndim if first else rank - ndim - 1
    axes = ", ".join(str(a) for a in range(start, start + ndim))
    layout = "[*batch, C, *spatial]" if first else "[*batch, *spatial, C]"
    return (
        f"ax{'es' if ndim > 1 else 'is'} {axes} of shape {shown_shape(x_shape, ndim)}, read as "
        f"{layout}"
    )


def _kinds_named(kinds: Sequence[str]) -> str:
    """``"a floating (…) or complex (…) dtype"``."""
    names = [DTYPE_NAMES[k] for k in kinds]
    joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return f"a {joined} dtype"
