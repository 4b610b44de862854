"""convjax.deform_conv against torchvision.ops.deform_conv2d: the worst errors on random
2-d configurations (values and the gradients in the input, offsets, mask and weight, float64
and float32), then the time of the forward and of the gradient of a real loss (Σ y²) for one
layer, side by side.

torchvision's wheels pin their own PyTorch, so this runs in an environment of its own (e.g.
``pip install torch==2.14.1 torchvision==0.29.1 jax flax`` and ``pip install -e . --no-deps``),
not the tests' one:

    python benchmarks/deform_vs_torchvision.py [--configs 24] [--rounds 5]

Layouts: torchvision is channels-first, ``input [N, C, H, W]``, ``offset [N, 2·G·kh·kw, H', W']``
(per offset group, per tap row-major, ``Δy`` then ``Δx``), ``mask [N, G·kh·kw, H', W']`` and
``weight [C_out, C_in / groups, kh, kw]``; convjax's offsets and mask have the same channel
order, moved last, and its kernel is ``[kh, kw, C_in / groups, C_out]``.  Random offsets put
samples at fractional positions (some outside the input); every other configuration rounds them
to integers, where samples sit on grid lines and the offsets' gradient is a one-sided derivative
(both libraries take the derivative from above).
"""

from __future__ import annotations

import argparse
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

import convjax
from convjax._src.ops.deform import deform_conv
from convjax.apps.timing import block, measure

jax.config.update("jax_enable_x64", True)


def random_config(rng):
    kh, kw = (int(k) for k in rng.integers(1, 4, 2))
    groups, offset_groups = (int(g) for g in rng.choice([1, 2], 2))
    c_in = 2 * int(rng.integers(1, 4))
    c_out = groups * int(rng.integers(1, 4))
    stride = tuple(int(s) for s in rng.integers(1, 3, 2))
    padding = tuple(int(p) for p in rng.integers(0, 3, 2))
    dilation = tuple(int(d) for d in rng.integers(1, 3, 2))
    size = tuple(
        int((k - 1) * d + 1 + rng.integers(0, 6)) for k, d in zip((kh, kw), dilation, strict=True)
    )
    return dict(
        batch=int(rng.integers(1, 3)),
        size=size,
        c_in=c_in,
        c_out=c_out,
        window=(kh, kw),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        offset_groups=offset_groups,
        modulated=bool(rng.integers(0, 2)),
    )


def operands(config, rng):
    """x, kernel, offsets, mask (or None) and a cotangent in convjax's layouts, float64 NumPy."""
    kh, kw = config["window"]
    out = tuple(
        (i + 2 * p - (k - 1) * d - 1) // s + 1
        for i, k, s, p, d in zip(
            config["size"],
            config["window"],
            config["stride"],
            config["padding"],
            config["dilation"],
            strict=True,
        )
    )
    taps = config["offset_groups"] * kh * kw
    x = rng.normal(size=(config["batch"], *config["size"], config["c_in"]))
    kernel = rng.normal(size=(kh, kw, config["c_in"] // config["groups"], config["c_out"]))
    offsets = rng.normal(0, 1.5, size=(config["batch"], *out, 2 * taps))
    mask = rng.uniform(0, 1, size=(config["batch"], *out, taps)) if config["modulated"] else None
    cotangent = rng.normal(size=(config["batch"], *out, config["c_out"]))
    return x, kernel, offsets, mask, cotangent


def convjax_vjp(config, x, kernel, offsets, mask, g):
    """The value and the vjp in every operand, one compiled program per configuration."""
    key = tuple(sorted(config.items()))
    args = [jnp.asarray(a) for a in (x, kernel, offsets, mask, g) if a is not None]
    return _vjp(key, mask is not None, *args)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _vjp(key, modulated, x, kernel, offsets, *rest):
    config = dict(key)
    f = functools.partial(
        deform_conv,
        strides=config["stride"],
        padding=[(p, p) for p in config["padding"]],
        dilation=config["dilation"],
        groups=config["groups"],
        offset_groups=config["offset_groups"],
        precision="highest",
    )
    if not modulated:
        (g,) = rest
        y, vjp = jax.vjp(lambda x, k, o: f(x, k, o), x, kernel, offsets)
        return [y, *vjp(g)]
    mask, g = rest
    y, vjp = jax.vjp(lambda x, k, o, m: f(x, k, o, mask=m), x, kernel, offsets, mask)
    return [y, *vjp(g)]


def torchvision_vjp(torch, ops, config, x, kernel, offsets, mask, g):
    """The same in torchvision, results moved back to convjax's layouts."""
    first = lambda a: torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, 1)))  # noqa: E731
    tensors = [
        first(x),
        torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))),
        first(offsets),
    ]
    if mask is not None:
        tensors.append(first(mask))
    for t in tensors:
        t.requires_grad_(True)
    x_t, w_t, o_t, *m_t = tensors
    y = ops.deform_conv2d(
        x_t,
        o_t,
        w_t,
        stride=config["stride"],
        padding=config["padding"],
        dilation=config["dilation"],
        mask=m_t[0] if m_t else None,
    )
    y.backward(first(g))
    last = lambda t: np.moveaxis(t.detach().numpy(), 1, -1)  # noqa: E731
    results = [last(y), last(x_t.grad), w_t.grad.numpy().transpose(2, 3, 1, 0), last(o_t.grad)]
    if m_t:
        results.append(last(m_t[0].grad))
    return results


def parity(torch, ops, count: int) -> None:
    names = ("y", "∂x", "∂kernel", "∂offsets", "∂mask")
    worst = {(dtype, n): 0.0 for dtype in ("float64", "float32") for n in names}
    rng = np.random.default_rng(0)
    for i in range(count):
        config = random_config(rng)
        arrays = operands(config, rng)
        if i % 2:  # samples on grid lines
            arrays = (*arrays[:2], np.round(arrays[2]), *arrays[3:])
        for dtype in ("float64", "float32"):
            cast = [None if a is None else a.astype(dtype) for a in arrays]
            ours = convjax_vjp(config, *cast)
            theirs = torchvision_vjp(torch, ops, config, *cast)
            # Theirs in float64 is the yardstick for both dtypes.
            exact = torchvision_vjp(torch, ops, config, *arrays) if dtype == "float32" else theirs
            for name, a, b in zip(names, ours, exact, strict=False):
                a = np.asarray(a, np.float64)
                err = np.abs(a - b) / (1 + np.abs(b))
                worst[dtype, name] = max(worst[dtype, name], float(err.max(initial=0.0)))
            if dtype == "float32":
                for name, a, b in zip(names, theirs, exact, strict=False):
                    err = np.abs(np.asarray(a, np.float64) - b) / (1 + np.abs(b))
                    key = ("torchvision float32", name)
                    worst[key] = max(worst.get(key, 0.0), float(err.max(initial=0.0)))
    print(f"parity on {count} random 2-d configurations (groups, offset groups, strides, padding,")
    print("dilation, with and without a mask, fractional and integer offsets), worst")
    print("|a − b| / (1 + |b|) against torchvision in float64 (the last row: torchvision's own")
    print("float32 against its float64):")
    print(f"  {'':<22}" + "".join(f"{n:>11}" for n in names))
    for row in ("float64", "float32", "torchvision float32"):
        label = {"float64": "convjax float64", "float32": "convjax float32"}.get(row, row)
        print(f"  {label:<22}" + "".join(f"{worst[row, n]:11.1e}" for n in names))


def timing(torch, ops, rounds: int) -> None:
    n, size, c, k = 4, 56, 64, 3
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, size, size, c)).astype(np.float32)
    kernel = (rng.normal(size=(k, k, c, c)) / math.sqrt(k * k * c)).astype(np.float32)
    offsets = rng.normal(0, 1.0, size=(n, size, size, 2 * k * k)).astype(np.float32)
    mask = rng.uniform(0, 1, size=(n, size, size, k * k)).astype(np.float32)
    ours = [jnp.asarray(a) for a in (x, kernel, offsets, mask)]
    f = functools.partial(deform_conv, padding=1)

    def loss(x, kernel, offsets, mask):
        return jnp.sum(f(x, kernel, offsets, mask=mask) ** 2)

    forward = jax.jit(lambda x, k, o, m: f(x, k, o, mask=m))
    gradient = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))
    conv_forward = jax.jit(functools.partial(convjax.conv, padding=1))
    conv_gradient = jax.jit(
        jax.grad(lambda x, k: jnp.sum(convjax.conv(x, k, padding=1) ** 2), argnums=(0, 1))
    )

    first = lambda a: torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, 1)))  # noqa: E731
    theirs = [first(x), torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()), first(offsets)]
    theirs.append(first(mask))

    def torch_forward():
        with torch.no_grad():
            return ops.deform_conv2d(theirs[0], theirs[2], theirs[1], padding=1, mask=theirs[3])

    leaves = [t.clone().requires_grad_(True) for t in theirs]

    def torch_gradient():
        for t in leaves:
            t.grad = None
        y = ops.deform_conv2d(leaves[0], leaves[2], leaves[1], padding=1, mask=leaves[3])
        (y**2).sum().backward()
        return [t.grad for t in leaves]

    def torch_conv_forward():
        with torch.no_grad():
            return torch.nn.functional.conv2d(theirs[0], theirs[1], padding=1)

    conv_leaves = [t.clone().requires_grad_(True) for t in theirs[:2]]

    def torch_conv_gradient():
        for t in conv_leaves:
            t.grad = None
        y = torch.nn.functional.conv2d(conv_leaves[0], conv_leaves[1], padding=1)
        (y**2).sum().backward()
        return [t.grad for t in conv_leaves]

    contenders = {
        "convjax deform_conv forward": (lambda: forward(*ours), block),
        "torchvision deform_conv2d forward": (torch_forward, lambda v: v),
        "convjax deform_conv grad Σy²": (lambda: gradient(*ours), block),
        "torchvision deform_conv2d grad Σy²": (torch_gradient, lambda v: v),
        "convjax conv forward": (lambda: conv_forward(*ours[:2]), block),
        "torch conv2d forward": (torch_conv_forward, lambda v: v),
        "convjax conv grad Σy²": (lambda: conv_gradient(*ours[:2]), block),
        "torch conv2d grad Σy²": (torch_conv_gradient, lambda v: v),
    }
    timings = measure(contenders, rounds, lambda: None)
    print(
        f"\ntiming: 3x3, {c}→{c}, {size}², batch {n}, padding 1, float32, DCN v2 (mask); "
        f"jax {jax.__version__} on {jax.default_backend()}, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads; median ms [min-max] of {rounds} rounds"
    )
    for name, t in timings.items():
        d = t.as_dict()
        print(f"  {name:<38} {d['median_ms']:8.1f} [{d['min_ms']:.1f}-{d['max_ms']:.1f}]")


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configs", type=positive, default=24, help="random configurations")
    parser.add_argument("--rounds", type=positive, default=5, help="timing rounds")
    args = parser.parse_args()
    try:
        import torch
        from torchvision import ops
    except ImportError as error:
        raise SystemExit(
            "this benchmark needs torch and torchvision (pip install torch torchvision; their "
            f"versions must match each other): {error}"
        ) from error
    torch.manual_seed(0)
    parity(torch, ops, args.configs)
    timing(torch, ops, args.rounds)


if __name__ == "__main__":
    main()
