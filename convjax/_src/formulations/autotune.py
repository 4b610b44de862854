"""``impl="autotune"``: choose a convolution's formulation by timing them on this machine.

The ``auto`` table was measured on a few machines; users run on others.  The first time a
convolution (device kind, spec, shapes, dtype, transposed or not) is traced, the autotuner times
every formulation that accepts it — one jitted program per formulation computing a loss of the
output and its gradients, as a training step does, on random data of those shapes — alternating
them in rounds, and keeps the fastest: in memory for this process and in a cache folder on disk
for later processes (``CONVJAX_CACHE_DIR``, default ``~/.cache/convjax``; one JSON file per
convolution, written atomically, so concurrent processes are safe; a choice is read back only
under the same jax, XLA flags and formulation code it was timed with).  The timing runs outside
the user's trace (in a thread of its own), so it works under ``jit``, ``vmap``, ``grad`` and
inside modules; results are the chosen formulation's exactly.  PyTorch's anchor is
``torch.backends.cudnn.benchmark``.

``enable()`` (or ``CONVJAX_AUTOTUNE=1`` in the environment) makes ``impl="auto"`` autotune too;
``summary()`` says what this process chose and why.  A choice is made when a function is
traced: functions jitted before ``enable()`` keep the table's choice until they are traced
again.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from convjax._src.checks import DTYPE_KINDS, check_bool, dtype_kind
from convjax._src.formulations import base
from convjax._src.formulations.auto import CHOICES, choose
from convjax._src.formulations.base import Backend, Chooses
from convjax._src.spec import ConvSpec

ROUNDS = 5
SETTLE_SECONDS = 0.015

_lock = threading.Lock()
_choices: dict[str, dict[str, Any]] = {}  # this process's, by key
_state = {"enabled": os.environ.get("CONVJAX_AUTOTUNE", "") not in ("", "0")}


def enabled() -> bool:
    """Whether ``impl="auto"`` autotunes: ``enable()`` was called, or ``CONVJAX_AUTOTUNE`` is
    set to something other than ``0`` in the environment.

    >>> import convjax
    >>> convjax.autotune.enabled()
    False
    """
    return _state["enabled"]


def enable(*, on: bool = True) -> contextlib.AbstractContextManager[None]:
    """Make ``impl="auto"`` autotune (``on=False``: follow the table) from now on; used in a
    ``with`` block, only until the block ends.

    >>> import convjax
    >>> with convjax.autotune.enable():
    ...     convjax.autotune.enabled()
    True
    >>> convjax.autotune.enabled()
    False
    """
    on = check_bool("autotune.enable", "on", on)
    previous = _state["enabled"]
    _state["enabled"] = on
    return _restoring(previous)


@contextlib.contextmanager
def _restoring(previous: bool) -> Iterator[None]:
    try:
        yield
    finally:
        _state["enabled"] = previous


def cache_dir() -> pathlib.Path:
    """The folder of the on-disk choices: ``autotune`` in ``CONVJAX_CACHE_DIR``, else in
    ``~/.cache/convjax``.

    >>> import convjax
    >>> convjax.autotune.cache_dir().parts[-2:]  # doctest: +ELLIPSIS
    (..., 'autotune')
    """
    folder = os.environ.get("CONVJAX_CACHE_DIR") or pathlib.Path.home() / ".cache" / "convjax"
    return pathlib.Path(folder) / "autotune"


def summary() -> str:
    """What this process's autotuner chose: one line per convolution, the winner's time and each
    other formulation's, relative to it, and where the choice came from (timed or the cache).

    >>> import jax.numpy as jnp, convjax
    >>> x, kernel = jnp.ones((1, 16, 2), jnp.float32), jnp.ones((3, 2, 2), jnp.float32)
    >>> y = convjax.conv(x, kernel, impl="autotune")
    >>> print(convjax.autotune.summary())  # doctest: +ELLIPSIS
    convjax autotune: ...
    ...x (1, 16, 2) kernel (3, 2, 2) float32 strides (1,) padding ((0, 0),) dilation (1,)...: ...
    """
    with _lock:
        records = list(_choices.values())
    if not records:
        return "convjax autotune: no convolution tuned in this process."
    lines = [f"convjax autotune: {len(records)} convolution(s)"]
    for r in records:
        best = r["timings_ms"][r["choice"]]
        others = ", ".join(
            f"{name} {ms / best:.2f}x"
            for name, ms in r["timings_ms"].items()
            if name != r["choice"]
        )
        table = r["table"] if r["table"] != r["choice"] else "same"
        lines.append(
            f"  {r['description']}: {r['choice']} {best:.3g} ms ({r['source']}; table: {table})"
            + (f"; {others}" if others else "")
        )
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class AutotuneBackend(Chooses):
    """The fastest formulation for each convolution on this machine, by timing (see the module
    docstring).

    Attributes:
      transposed: tune for a transposed convolution (the adjoint of this forward conv).
    """

    transposed: bool = False
    name: str = dataclasses.field(default="autotune", init=False)
    accepts: ClassVar[str] = "every convolution"
    description: ClassVar[str] = "the fastest of the others, timed on this machine and cached"

    def __post_init__(self):
        check_bool("AutotuneBackend", "transposed", self.transposed)

    def choose(self, spec, x_shape, kernel_shape, dtype="float32") -> Backend:
        """The formulation this convolution runs on."""
        return CHOICES[tuned(spec, tuple(x_shape), tuple(kernel_shape), dtype, self.transposed)]


def tuned(spec: ConvSpec, x_shape, kernel_shape, dtype, transposed: bool) -> str:
    """The fastest formulation's name for this convolution: from memory, the disk, or timing."""
    dtype = np.dtype(dtype)
    device = jax.devices()[0]
    described = {
        "platform": device.platform,
        "device": device.device_kind,
        "jax": jax.__version__,
        "code": code_fingerprint(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "spec": repr(spec),
        "x_shape": list(x_shape),
        "kernel_shape": list(kernel_shape),
        "dtype": dtype.name,
        "transposed": transposed,
    }
    key = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:32]
    with _lock:
        if key in _choices:
            return _choices[key]["choice"]
    record = _read(key, described, _candidates(spec, x_shape, kernel_shape, dtype))
    if record is None:
        with concurrent.futures.ThreadPoolExecutor(1) as thread:  # outside the user's trace
            timings = thread.submit(_time, spec, x_shape, kernel_shape, dtype, transposed).result()
        record = {
            "key": described,
            "choice": min(timings, key=timings.get),
            "timings_ms": timings,
            "source": "timed",
        }
        _write(key, record)
    record["table"] = choose(spec, x_shape, kernel_shape, transposed=transposed, dtype=dtype)
    record["description"] = (
        f"{'transposed ' if transposed else ''}x {tuple(x_shape)} kernel {tuple(kernel_shape)} "
        f"{dtype.name} strides {spec.strides} padding {spec.padding}"
        + (f" {spec.padding_mode}" if spec.padding_mode != "zeros" else "")
        + f" dilation {spec.dilation} groups {spec.groups}"
    )
    with _lock:
        _choices[key] = record
    return record["choice"]


@functools.cache
def code_fingerprint() -> str:
    """A digest of the formulations' source: a choice timed on other code (an earlier convjax,
    a formulation changed since) is timed again rather than read from the disk."""
    digest = hashlib.sha256()
    for path in sorted(pathlib.Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _candidates(spec: ConvSpec, x_shape, kernel_shape, dtype) -> list[str]:
    """The formulations that accept this convolution in this dtype."""
    return [
        name
        for name, backend in CHOICES.items()
        if dtype_kind(dtype) in getattr(backend, "kinds", DTYPE_KINDS)
        and not backend.refuses(spec, x_shape, kernel_shape)
    ]


def _read(key: str, described: dict[str, Any], candidates: list[str]) -> dict[str, Any] | None:
    """The cached record for ``key``, if it is one: an object for this convolution whose choice
    accepts it and whose timings are numbers (anything else is timed again)."""
    path = cache_dir() / f"{key}.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != described:
        return None
    timings = record.get("timings_ms")
    if record.get("choice") not in candidates or not isinstance(timings, dict):
        return None
    if record["choice"] not in timings or not all(
        isinstance(ms, int | float) and not isinstance(ms, bool) for ms in timings.values()
    ):
        return None
    return record | {"source": "cache"}


def _write(key: str, record: dict[str, Any]) -> None:
    """Write atomically (a temporary file renamed over the target); a folder that cannot be
    written only costs the next process a new timing."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as f:
            json.dump(record, f, indent=1)
        os.replace(f.name, folder / f"{key}.json")
    except OSError:
        pass


def _time(spec: ConvSpec, x_shape, kernel_shape, dtype, transposed: bool) -> dict[str, float]:
    """Median milliseconds of one layer's training step — its convolution and the two
    gradients of a loss of the output — per formulation that accepts it, alternating them in
    rounds."""
    keys = jax.random.split(jax.random.key(0), 2)
    out = spec.output_spatial(x_shape[1:-1], kernel_shape[: spec.ndim])
    data_shape = (x_shape[0], *out, kernel_shape[-1]) if transposed else x_shape
    data = jax.random.normal(keys[0], data_shape, jnp.float32).astype(dtype)
    kernel = jax.random.normal(keys[1], kernel_shape, jnp.float32).astype(dtype)
    programs = {
        name: _step(CHOICES[name], spec, x_shape, transposed)
        for name in _candidates(spec, x_shape, kernel_shape, dtype)
    }
    for program in programs.values():  # compile and warm up
        jax.block_until_ready(program(data, kernel))
    times: dict[str, list[float]] = {name: [] for name in programs}
    for _ in range(ROUNDS):
        for name, program in programs.items():
            start = time.perf_counter()
            while time.perf_counter() - start < SETTLE_SECONDS:  # wake the cores
                jax.block_until_ready(program(data, kernel))
            start = time.perf_counter()
            jax.block_until_ready(program(data, kernel))
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def _step(backend: Backend, spec: ConvSpec, x_shape, transposed: bool):
    """One layer's training step on ``backend``, jitted: the convolution (``A x``, or for a
    transposed conv ``Aᵀ x``), then, with the cotangent ``2 y`` of ``Σ y²``, the gradients the
    convolution primitive computes for its input and kernel.  Integer convolutions, which have
    no gradients, time the convolution alone."""
    kernel_gradient = functools.partial(base.kernel_gradient, backend, spec=spec)

    @jax.jit
    def step(data, kernel):
        if dtype_kind(data.dtype) == "int":
            if transposed:
                return base.input_gradient(backend, data, kernel, spec, x_shape, data.dtype)
            return backend(data, kernel, spec)
        if transposed:
            y = base.input_gradient(backend, data, kernel, spec, x_shape, data.dtype)
            g = 2 * y
            grads = (
                backend(g, kernel, spec),
                kernel_gradient(g, data, kernel_shape=kernel.shape, kernel_dtype=kernel.dtype),
            )
        else:
            y = backend(data, kernel, spec)
            g = 2 * y
            grads = (
                base.input_gradient(backend, g, kernel, spec, data.shape, data.dtype),
                kernel_gradient(data, g, kernel_shape=kernel.shape, kernel_dtype=kernel.dtype),
            )
        return y, grads

    return step
