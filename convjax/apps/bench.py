"""``convjax bench``: convjax's formulations side by side with Flax and PyTorch, in one process.

Every contender computes the same convolution on the same arrays.  Contenders alternate in
rounds; right before each timed call a contender runs untimed for ``SETTLE_SECONDS`` (on a
small machine an idle core takes ~10 ms to wake, and PyTorch's OpenMP workers spin for a while
after each call).  Reported: the median and the min/max over the rounds, and ratios to PyTorch
(the faster of its NCHW and channels_last layouts) and to Flax.  ``grad`` is what training
runs: the gradients (input and kernel) of a loss of the output, ``Σ conv(x, k)²``, so the
cotangent is the layer's own output, as every real loss makes it.  ``vjp`` (a diagnostic, on
request) uses a fixed random cotangent instead; it can hide what a real loss costs (XLA may
fuse the forward into each consumer of a cotangent computed from it).  On an accelerator each
timed call runs ``DEVICE_REPEATS`` jitted calls back to back and reports the mean, so that host
dispatch is hidden behind device time.  ``convjax bench --models`` times whole training steps
of reference architectures instead (``models.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import convjax
from convjax.apps.train import Denoiser, denoise, make_batch

SETTLE_SECONDS = 0.015
DEVICE_REPEATS = 20
MODES = ("fwd", "grad")  # and "vjp", a diagnostic


@dataclasses.dataclass(frozen=True)
class Case:
    """One row of the suite: ``x`` NHWC, ``kernel`` as :func:`convjax.conv` (or, transposed,
    :func:`convjax.conv_transpose`) takes it, and the options."""

    name: str
    x_shape: tuple[int, ...]
    kernel_shape: tuple[int, ...]
    options: dict[str, Any]
    transposed: bool = False

    @property
    def function(self) -> Callable:
        return convjax.conv_transpose if self.transposed else convjax.conv


SUITE = (
    Case("3x3, 56², 64→64, b4", (4, 56, 56, 64), (3, 3, 64, 64), dict(padding=1)),
    Case(
        "3x3 s2, 56², 128→128, b4", (4, 56, 56, 128), (3, 3, 128, 128), dict(strides=2, padding=1)
    ),
    Case("1x1, 56², 144→24, b8", (8, 56, 56, 144), (1, 1, 144, 24), dict()),
    Case(
        "ResNeXt 3x3 g32, 56², 128, b4",
        (4, 56, 56, 128),
        (3, 3, 4, 128),
        dict(groups=32, padding=1),
    ),
    Case(
        "depthwise 3x3, 56², C144, b8",
        (8, 56, 56, 144),
        (3, 3, 1, 144),
        dict(groups=144, padding=1),
    ),
    Case("depthwise 7x7, 56², C96, b8", (8, 56, 56, 96), (7, 7, 1, 96), dict(groups=96, padding=3)),
    Case(
        "depthwise 3x3 rate 4, C144, b8",
        (8, 56, 56, 144),
        (3, 3, 1, 144),
        dict(groups=144, padding=4, dilation=4),
    ),
    Case(
        "atrous 3x3 rate 2, 64², 512→256",
        (1, 64, 64, 512),
        (3, 3, 512, 256),
        dict(padding=2, dilation=2),
    ),
    Case(
        "atrous 3x3 rate 6, 64², 512→256",
        (1, 64, 64, 512),
        (3, 3, 512, 256),
        dict(padding=6, dilation=6),
    ),
    Case(
        "transposed k3 s2, 32²→64², 256→128, b4",
        (4, 32, 32, 256),
        (3, 3, 128, 256),
        dict(strides=2, padding=1, output_padding=1),
        transposed=True,
    ),
    Case(
        "transposed k2 s2, 64²→128², 128→64, b4",
        (4, 64, 64, 128),
        (2, 2, 64, 128),
        dict(strides=2),
        transposed=True,
    ),
    Case(
        "stem 7x7 s2, 224², 3→64, b4", (4, 224, 224, 3), (7, 7, 3, 64), dict(strides=2, padding=3)
    ),
)


# -- timing ------------------------------------------------------------------------------------


def _block(value):
    return jax.block_until_ready(value)


def timed_call(run: Callable[[], Any], sync: Callable[[Any], Any], settle: bool = True) -> float:
    """Seconds of one ``run()`` after running it untimed for ``SETTLE_SECONDS``."""
    start = time.perf_counter()
    while settle and time.perf_counter() - start < SETTLE_SECONDS:
        sync(run())
    start = time.perf_counter()
    sync(run())
    return time.perf_counter() - start


@dataclasses.dataclass
class Timing:
    seconds: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1e3

    def as_dict(self) -> dict[str, float]:
        return {
            "median_ms": self.median_ms,
            "min_ms": min(self.seconds) * 1e3,
            "max_ms": max(self.seconds) * 1e3,
        }


def measure(
    contenders: dict[str, tuple[Callable, Callable]], rounds: int, progress: Callable[[], None]
) -> dict[str, Timing]:
    """Alternate the contenders ``{name: (run, sync)}`` in ``rounds`` rounds."""
    settle = {}
    for name, (run, sync) in contenders.items():  # compile and warm up
        sync(run())
        # A call much longer than the settle needs none (a wake-up is noise there).
        settle[name] = timed_call(run, sync, settle=False) < 50 * SETTLE_SECONDS
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, (run, sync) in contenders.items():
            times[name].append(timed_call(run, sync, settle[name]))
        progress()
    return {name: Timing(t) for name, t in times.items()}


# -- contenders --------------------------------------------------------------------------------


def _jax_contenders(case: Case, names: Sequence[str], dtype, on_device: bool):
    """``{name: {mode: (run, sync)}}`` for each convjax formulation that accepts the case."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=case.x_shape), dtype)
    kernel = jnp.asarray(
        rng.normal(size=case.kernel_shape) / math.sqrt(np.prod(case.kernel_shape[:-1])), dtype
    )
    out_shape = jax.eval_shape(functools.partial(case.function, **case.options), x, kernel).shape
    cotangent = jnp.asarray(rng.normal(size=out_shape), dtype)
    result = {}
    for name in names:
        f = functools.partial(case.function, impl=name, **case.options)
        try:
            jax.eval_shape(f, x, kernel)
        except ValueError:  # this formulation refuses the case (e.g. fft and strides)
            continue
        forward = jax.jit(f)
        grad = jax.jit(jax.grad(lambda x, k, f=f: jnp.sum(f(x, k) ** 2), argnums=(0, 1)))
        vjp = jax.jit(lambda x, k, ct, f=f: jax.vjp(f, x, k)[1](ct))
        result[name] = {
            "fwd": _repeat(lambda forward=forward: forward(x, kernel), on_device),
            "grad": _repeat(lambda grad=grad: grad(x, kernel), on_device),
            "vjp": _repeat(lambda vjp=vjp: vjp(x, kernel, cotangent), on_device),
        }
    return result


def _repeat(run: Callable, on_device: bool):
    """``(run, sync)``, with ``DEVICE_REPEATS`` calls per run on an accelerator."""
    if not on_device:
        return run, _block
    return (lambda: [run() for _ in range(DEVICE_REPEATS)][-1]), _block


def _flax_contender(case: Case, dtype, on_device: bool):
    """Flax's own ``nnx.Conv`` / ``nnx.ConvTranspose`` for the case (no bias), or None."""
    o = case.options
    window = case.kernel_shape[:-2]
    if case.transposed:
        c_in, c_out = case.x_shape[-1], case.kernel_shape[-2]
        if o.get("padding", 0) not in (0, 1) or o.get("groups", 1) != 1:
            return None
        layer = nnx.ConvTranspose(
            c_in,
            c_out,
            window,
            strides=o.get("strides", 1),
            padding="SAME" if o.get("padding") else "VALID",
            use_bias=False,
            param_dtype=dtype,
            rngs=nnx.Rngs(0),
        )
    else:
        c_in, c_out = case.x_shape[-1], case.kernel_shape[-1]
        pad = o.get("padding", 0)
        layer = nnx.Conv(
            c_in,
            c_out,
            window,
            strides=o.get("strides", 1),
            padding=[(pad, pad)] * len(window),
            kernel_dilation=o.get("dilation", 1),
            feature_group_count=o.get("groups", 1),
            use_bias=False,
            param_dtype=dtype,
            rngs=nnx.Rngs(0),
        )
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=case.x_shape), dtype)
    graphdef, params = nnx.split(layer)
    apply = lambda p, x: nnx.merge(graphdef, p)(x)  # noqa: E731
    cotangent = jnp.asarray(rng.normal(size=jax.eval_shape(apply, params, x).shape), dtype)
    forward = jax.jit(apply)
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(apply(p, x) ** 2), argnums=(0, 1)))
    vjp = jax.jit(lambda p, x, ct: jax.vjp(apply, p, x)[1](ct))
    return {
        "fwd": _repeat(lambda: forward(params, x), on_device),
        "grad": _repeat(lambda: grad(params, x), on_device),
        "vjp": _repeat(lambda: vjp(params, x, cotangent), on_device),
    }


def _torch_contenders(torch, case: Case, dtype_name: str, device: str):
    """PyTorch's conv in NCHW and channels_last: ``{layout: {mode: (run, sync)}}``."""
    o = case.options
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
        dtype_name
    ]
    generator = torch.Generator().manual_seed(0)
    window = case.kernel_shape[:-2]
    n = len(window)
    if case.transposed:
        weight_shape = (case.kernel_shape[-1], case.kernel_shape[-2], *window)  # [C_in, C_out, k]
        fn = getattr(torch.nn.functional, f"conv_transpose{n}d")
        kwargs = dict(
            stride=o.get("strides", 1),
            padding=o.get("padding", 0),
            output_padding=o.get("output_padding", 0),
        )
    else:
        weight_shape = (case.kernel_shape[-1], case.kernel_shape[-2], *window)  # [C_out, C_in/g, k]
        fn = getattr(torch.nn.functional, f"conv{n}d")
        kwargs = dict(
            stride=o.get("strides", 1),
            padding=o.get("padding", 0),
            dilation=o.get("dilation", 1),
            groups=o.get("groups", 1),
        )
    x_shape = (case.x_shape[0], case.x_shape[-1], *case.x_shape[1:-1])
    sync = (lambda _: torch.cuda.synchronize()) if device == "cuda" else (lambda _: None)
    result = {}
    for layout in ("NCHW", "channels_last"):
        memory_format = (
            torch.channels_last if layout == "channels_last" and n == 2 else torch.contiguous_format
        )
        if layout == "channels_last" and n != 2:
            continue
        x = (
            torch.randn(x_shape, generator=generator)
            .to(device=device, dtype=dtype)
            .contiguous(memory_format=memory_format)
        )
        w = (
            torch.randn(weight_shape, generator=generator)
            .to(device=device, dtype=dtype)
            .contiguous(memory_format=memory_format)
        )
        with torch.no_grad():
            cotangent = torch.randn_like(fn(x, w, **kwargs))
        xg, wg = x.clone().requires_grad_(True), w.clone().requires_grad_(True)

        def forward(x=x, w=w):
            with torch.no_grad():
                return fn(x, w, **kwargs)

        def grad(xg=xg, wg=wg):
            xg.grad = wg.grad = None
            (fn(xg, wg, **kwargs) ** 2).sum().backward()
            return wg.grad

        def vjp(xg=xg, wg=wg, cotangent=cotangent):
            xg.grad = wg.grad = None
            fn(xg, wg, **kwargs).backward(cotangent)
            return wg.grad

        repeats = DEVICE_REPEATS if device == "cuda" else 1
        result[layout] = {
            mode: ((lambda f=f, r=repeats: [f() for _ in range(r)][-1]), sync)
            for mode, f in (("fwd", forward), ("grad", grad), ("vjp", vjp))
        }
    return result


def try_import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


# -- the run -----------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on ``out`` (redrawn in place on a terminal)."""

    def __init__(self, total: int, out: TextIO, width: int = 30):
        self.total, self.done, self.out, self.width = total, 0, out, width
        self.live = out.isatty()
        self.label = ""

    def step(self) -> None:
        self.done += 1
        self.draw()

    def draw(self) -> None:
        filled = self.width * self.done // max(self.total, 1)
        line = (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total}  {self.label}"
        )
        if self.live:
            print("\r" + line[:120].ljust(120), end="", file=self.out, flush=True)
        elif self.done == self.total or self.done % max(self.total // 10, 1) == 0:
            print(line, file=self.out, flush=True)

    def close(self) -> None:
        if self.live:
            print(file=self.out)


def run(
    cases: Sequence[Case] = SUITE,
    *,
    formulations: Sequence[str] = ("auto", "lax", "gather", "taps", "fft"),
    flax: bool = True,
    torch: Any = None,
    dtype: str = "float32",
    rounds: int = 9,
    modes: Sequence[str] = MODES,
    out: TextIO | None = None,
) -> dict[str, Any]:
    """Measure ``cases`` and return the results (the JSON ``convjax bench`` writes)."""
    out = sys.stderr if out is None else out
    on_device = jax.default_backend() != "cpu"
    device = "cuda" if on_device else "cpu"
    jax_dtype = jnp.dtype(dtype)
    progress = Progress(len(cases) * len(modes) * rounds, out)
    rows = []
    for case in cases:
        progress.label = case.name
        progress.draw()
        contenders: dict[str, dict[str, tuple]] = _jax_contenders(
            case, formulations, jax_dtype, on_device
        )
        if flax:
            flax_runs = _flax_contender(case, jax_dtype, on_device)
            if flax_runs is not None:
                contenders["flax"] = flax_runs
        if torch is not None:
            for layout, runs in _torch_contenders(torch, case, dtype, device).items():
                contenders[f"torch {layout}"] = runs
        spec_choice = _auto_choice(case)
        for mode in modes:
            timings = measure({n: r[mode] for n, r in contenders.items()}, rounds, progress.step)
            rows.append(_row(case, mode, timings, spec_choice))
    progress.close()
    return {
        "machine": {
            "platform": jax.default_backend(),
            "device": str(jax.devices()[0].device_kind),
            "cpu": platform.processor() or platform.machine(),
            "jax": jax.__version__,
            "torch": getattr(torch, "__version__", None),
            "dtype": dtype,
            "rounds": rounds,
        },
        "rows": rows,
    }


def _auto_choice(case: Case) -> str:
    return convjax.auto_choice(
        case.x_shape, case.kernel_shape, transpose=case.transposed, **case.options
    ).formulation


def _row(case: Case, mode: str, timings: dict[str, Timing], auto_choice: str) -> dict[str, Any]:
    result = {name: t.as_dict() for name, t in timings.items()}
    torch_names = [n for n in timings if n.startswith("torch")]
    reference = min((timings[n].median_ms for n in torch_names), default=None)
    flax = timings.get("flax")
    return {
        "case": case.name,
        "mode": mode,
        "auto_runs": auto_choice,
        "contenders": result,
        "torch_ms": reference,
        "ratio_to_torch": {
            n: t.median_ms / reference
            for n, t in timings.items()
            if reference and not n.startswith("torch")
        },
        "speedup_over_flax": {
            n: flax.median_ms / t.median_ms
            for n, t in timings.items()
            if flax and n != "flax" and not n.startswith("torch")
        },
    }


def table(results: dict[str, Any]) -> str:
    """The results as a text table: median ms (ratio to PyTorch) per contender."""
    rows = results["rows"]
    names = []
    for row in rows:
        for n in row["contenders"]:
            if n not in names and not n.startswith("torch"):
                names.append(n)
    header = (
        f"{'case':<40} {'mode':<8} {'torch':>8} "
        + " ".join(f"{n:>15}" for n in names)
        + "  auto runs"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = []
        for n in names:
            c = row["contenders"].get(n)
            if c is None:
                cells.append(f"{'—':>15}")
                continue
            ratio = row["ratio_to_torch"].get(n)
            text = f"{c['median_ms']:.2f}" + (f" ({ratio:.2f}x)" if ratio else "")
            cells.append(f"{text:>15}")
        torch_ms = f"{row['torch_ms']:.2f}" if row["torch_ms"] else "—"
        lines.append(
            f"{row['case']:<40} {row['mode']:<8} {torch_ms:>8} "
            + " ".join(cells)
            + f"  {row['auto_runs']}"
        )
    return "\n".join(lines)


def chart(results: dict[str, Any], path: str) -> None:
    """A PNG of each contender's median time relative to PyTorch, per case and mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if r["ratio_to_torch"]]
    if not rows:
        raise ValueError("convjax bench: no PyTorch timings to chart ratios against.")
    order = ["auto", "lax", "gather", "taps", "fft", "flax"]
    names = sorted(
        {n for r in rows for n in r["ratio_to_torch"]},
        key=lambda n: (order.index(n) if n in order else len(order), n),
    )
    fig, ax = plt.subplots(figsize=(12, 0.45 * len(rows) + 1.5))
    height = 0.8 / len(names)
    for i, name in enumerate(names):
        ys = [j + i * height for j in range(len(rows))]
        ax.barh(ys, [r["ratio_to_torch"].get(name, np.nan) for r in rows], height, label=name)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", lw=1)
    ax.axvline(1.5, color="gray", lw=1, ls="--")
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(rows))])
    ax.set_yticklabels([f"{r['case']}  [{r['mode']}]" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("median time / PyTorch's (log scale; dashed: 1.5x)")
    m = results["machine"]
    title = f"convjax bench: {m['device']} ({m['platform']}), {m['dtype']}"
    ax.set_title(f"{title}, jax {m['jax']}, torch {m['torch']}", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def select(cases: Sequence[Case], patterns: Sequence[str] | None) -> list[Case]:
    """The cases whose name contains (case-insensitively) any of ``patterns``."""
    if not patterns:
        return list(cases)
    chosen = [c for c in cases if any(re.search(re.escape(p), c.name, re.I) for p in patterns)]
    if not chosen:
        names = "; ".join(c.name for c in cases)
        raise ValueError(
            f"convjax bench: no case matches {list(patterns)}; the cases are: {names}."
        )
    return chosen


# -- a whole training step ---------------------------------------------------------------------

TRAIN_CONFIGS = (
    ("train step: `convjax train` model, 32², width 16, b16", 32, 16),
    ("train step: wider model, 64², width 32, b16", 64, 32),
)


def _adam_step_jax(model_fn, params, noisy, clean, on_device):
    """A jitted adam step of a JAX model ``model_fn(params, x)``: ``(run, sync)``."""
    optimizer = optax.adam(1e-3)
    state = {"params": params, "opt": optimizer.init(params)}

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((model_fn(p, noisy) - clean) ** 2))(
            params
        )
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
        return params, opt_state, loss

    def run():
        state["params"], state["opt"], loss = step(state["params"], state["opt"])
        return loss

    return _repeat(run, on_device)


def _flax_denoiser(width: int, rngs):
    """The ``convjax train`` model written with Flax's own layers (same shapes and FLOPs)."""
    w = width
    same = dict(padding="SAME", rngs=rngs)

    class FlaxDenoiser(nnx.Module):
        def __init__(self):
            self.stem = nnx.Conv(1, w, (3, 3), **same)
            self.down1 = nnx.Conv(w, 2 * w, (3, 3), strides=2, **same)
            self.down2 = nnx.Conv(2 * w, 4 * w, (3, 3), strides=2, **same)
            self.context = nnx.Conv(4 * w, 4 * w, (3, 3), kernel_dilation=2, **same)
            self.blocks = nnx.List(
                [
                    nnx.Sequential(
                        nnx.Conv(
                            4 * w, 4 * w, (3, 3), feature_group_count=4 * w, use_bias=False, **same
                        ),
                        nnx.Conv(4 * w, 4 * w, (1, 1), **same),
                    )
                    for _ in range(2)
                ]
            )
            self.up1 = nnx.ConvTranspose(4 * w, 2 * w, (4, 4), strides=2, **same)
            self.up2 = nnx.ConvTranspose(2 * w, w, (4, 4), strides=2, **same)
            self.head = nnx.Conv(w, 1, (3, 3), **same)

        def __call__(self, noisy):
            return denoise(self, noisy, jax.nn.gelu)

    return FlaxDenoiser()


def _torch_denoiser(torch, width: int):
    nn = torch.nn
    w = width

    class TorchDenoiser(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, w, 3, padding=1)
            self.down1 = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1)
            self.down2 = nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1)
            self.context = nn.Conv2d(4 * w, 4 * w, 3, padding=2, dilation=2)
            self.blocks = nn.ModuleList(
                [
                    nn.Sequential(
                        nn.Conv2d(4 * w, 4 * w, 3, padding=1, groups=4 * w, bias=False),
                        nn.Conv2d(4 * w, 4 * w, 1),
                    )
                    for _ in range(2)
                ]
            )
            self.up1 = nn.ConvTranspose2d(4 * w, 2 * w, 4, stride=2, padding=1)
            self.up2 = nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1)
            self.head = nn.Conv2d(w, 1, 3, padding=1)

        def forward(self, noisy):
            return denoise(self, noisy, nn.functional.gelu)

    return TorchDenoiser()


def train_contenders(
    size: int, width: int, torch: Any, on_device: bool, formulations=("auto", "lax")
):
    """``{name: (run, sync)}``: one adam step of the denoiser in convjax (per formulation),
    Flax and PyTorch, on one fixed batch of 16 images."""
    noisy, clean = make_batch(jax.random.key(0), 16, size)
    contenders = {}
    for impl in formulations:
        model = Denoiser(1, width, impl=impl, rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(model)
        contenders[impl] = _adam_step_jax(
            lambda p, x, g=graphdef: nnx.merge(g, p)(x), params, noisy, clean, on_device
        )
    graphdef, params = nnx.split(_flax_denoiser(width, nnx.Rngs(0)))
    contenders["flax"] = _adam_step_jax(
        lambda p, x: nnx.merge(graphdef, p)(x), params, noisy, clean, on_device
    )
    if torch is not None:
        device = "cuda" if on_device else "cpu"
        for layout in ("NCHW", "channels_last"):
            memory_format = (
                torch.channels_last if layout == "channels_last" else torch.contiguous_format
            )
            model = _torch_denoiser(torch, width).to(device=device, memory_format=memory_format)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            tn = (
                torch.from_numpy(np.asarray(noisy).transpose(0, 3, 1, 2).copy())
                .to(device)
                .contiguous(memory_format=memory_format)
            )
            tc = (
                torch.from_numpy(np.asarray(clean).transpose(0, 3, 1, 2).copy())
                .to(device)
                .contiguous(memory_format=memory_format)
            )

            def step(model=model, optimizer=optimizer, tn=tn, tc=tc):
                optimizer.zero_grad(set_to_none=True)
                loss = torch.mean((model(tn) - tc) ** 2)
                loss.backward()
                optimizer.step()
                return loss

            sync = (lambda _: torch.cuda.synchronize()) if on_device else (lambda _: None)
            contenders[f"torch {layout}"] = (step, sync)
    return contenders


def run_train(torch: Any, rounds: int, out: TextIO | None = None) -> list[dict[str, Any]]:
    """Rows for the training-step comparison (the same shape as :func:`run`'s)."""
    out = sys.stderr if out is None else out
    on_device = jax.default_backend() != "cpu"
    rows = []
    progress = Progress(len(TRAIN_CONFIGS) * rounds, out)
    for name, size, width in TRAIN_CONFIGS:
        progress.label = name
        progress.draw()
        timings = measure(train_contenders(size, width, torch, on_device), rounds, progress.step)
        torch_names = [n for n in timings if n.startswith("torch")]
        reference = min((timings[n].median_ms for n in torch_names), default=None)
        flax = timings["flax"]
        rows.append(
            {
                "case": name,
                "mode": "step",
                "auto_runs": "per layer",
                "contenders": {n: t.as_dict() for n, t in timings.items()},
                "torch_ms": reference,
                "ratio_to_torch": {
                    n: t.median_ms / reference
                    for n, t in timings.items()
                    if reference and not n.startswith("torch")
                },
                "speedup_over_flax": {
                    n: flax.median_ms / t.median_ms
                    for n, t in timings.items()
                    if n != "flax" and not n.startswith("torch")
                },
            }
        )
    progress.close()
    return rows


def main(args) -> int:
    """``convjax bench`` (``args`` from the command line parser)."""
    torch = None if args.no_torch else try_import_torch()
    if torch is not None and jax.default_backend() == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    rounds = args.rounds or (3 if args.quick else 9)
    cases = select(SUITE, args.shapes)
    print(
        f"convjax bench: {jax.default_backend()} ({jax.devices()[0].device_kind}), {args.dtype}, "
        f"{rounds} rounds; jax {jax.__version__}, "
        + (f"torch {torch.__version__}" if torch else "PyTorch not installed (no torch column)"),
        flush=True,
    )
    results = run(
        cases,
        formulations=args.formulations,
        flax=not args.no_flax,
        torch=torch,
        dtype=args.dtype,
        rounds=rounds,
    )
    if args.train:
        results["rows"] += run_train(torch, rounds)
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {args.json}")
    if args.png:
        chart(results, args.png)
        print(f"wrote {args.png}")
    return 0
