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
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import convjax
from convjax.apps import models
from convjax.apps.timing import Progress, Timing, block, measure, try_import_torch

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
    """``(run, sync, calls)``, with ``DEVICE_REPEATS`` calls per run on an accelerator."""
    if not on_device:
        return run, block, 1
    return (lambda: [run() for _ in range(DEVICE_REPEATS)][-1]), block, DEVICE_REPEATS


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
            mode: ((lambda f=f, r=repeats: [f() for _ in range(r)][-1]), sync, repeats)
            for mode, f in (("fwd", forward), ("grad", grad), ("vjp", vjp))
        }
    return result


# -- the run -----------------------------------------------------------------------------------


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
    return {"machine": machine(torch, dtype, rounds), "rows": rows}


def machine(torch: Any, dtype: str, rounds: int) -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "platform": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "cpu": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "torch": getattr(torch, "__version__", None),
        "dtype": dtype,
        "rounds": rounds,
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
        f"{'case':<40} {'mode':<8} {'torch ms':>8} "
        + " ".join(f"{n + ' ms':>15}" for n in names)
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


def main(args) -> int:
    """``convjax bench`` (``args`` from the command line parser, checked there)."""
    if args.models is not None and (args.shapes or args.vjp):
        raise ValueError(
            f"{'--shapes' if args.shapes else '--vjp'} chooses what to time in the layer suite; "
            "--models times whole training steps: leave one of them out."
        )
    torch = None if args.no_torch else try_import_torch()
    if args.png and torch is None:
        raise ValueError(
            "--png charts the ratios to PyTorch, which is not installed (or --no-torch was "
            "given); install it with `pip install torch` (the CPU build: `pip install torch "
            "--index-url https://download.pytorch.org/whl/cpu`), or leave out --png."
        )
    if torch is not None and jax.default_backend() == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    rounds = args.rounds or (3 if args.quick else 9)
    print(
        f"convjax bench: {jax.default_backend()} ({jax.devices()[0].device_kind}), {args.dtype}, "
        f"{rounds} rounds; jax {jax.__version__}, "
        + (f"torch {torch.__version__}" if torch else "PyTorch not installed (no torch column)"),
        flush=True,
    )
    if args.models is not None:
        rows = models.run(
            args.models or None,
            torch=torch,
            rounds=rounds,
            dtype=args.dtype,
            formulations=args.formulations or ("auto",),
            flax=not args.no_flax,
        )
        results = {"machine": machine(torch, args.dtype, rounds), "rows": rows}
        print(models.table(rows))
    else:
        modes = (*MODES, "vjp") if args.vjp else MODES
        results = run(
            select(SUITE, args.shapes),
            formulations=args.formulations or [f.name for f in convjax.formulations()],
            flax=not args.no_flax,
            torch=torch,
            dtype=args.dtype,
            rounds=rounds,
            modes=modes,
        )
        print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {args.json}")
    if args.png:
        chart(results, args.png)
        print(f"wrote {args.png}")
    return 0
