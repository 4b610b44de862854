"""Transposed convolutions: convjax's linear-transpose form against ``lax.conv_transpose``.

convjax builds ``conv_transpose`` as ``jax.linear_transpose`` of the forward conv, so the traced
graph holds the reversed kernel and the input dilation XLA recognises as a backward-data conv
(cuDNN dgrad on GPUs, where ANCHORS.md measured ``lax.conv_transpose``'s form 2.9–3.4× slower).
This prints median milliseconds and ratios measured in the same process, float32, jitted, for
the ANCHORS shapes (batch scaled down for CPU unless ``--full``); all three compute the same
function (PyTorch's ``conv_transpose2d`` with padding and output_padding, channels_last),
checked first.

Run ``python benchmarks/bench_transpose.py [--quick] [--full] [--no-gather]``.
"""

from __future__ import annotations

import functools

import _timing as timing
import jax
import jax.numpy as jnp
import numpy as np
from _timing import median_ms
from jax import lax

import convjax

# name, batch (CPU, full), input size, C_in, C_out, window, stride, padding, output_padding
SHAPES = [
    ("k3 s2, 32²→64², 256→128", (4, 16), 32, 256, 128, 3, 2, 1, 1),
    ("k2 s2, 64²→128², 128→64", (4, 16), 64, 128, 64, 2, 2, 0, 0),
]


def lax_conv_transpose(k, p, a, s):
    """``lax.conv_transpose`` with the padding that makes it the adjoint of the forward conv
    with pads ``(p, p)`` and output padding ``a``: ``(k̂ − 1 − p, k̂ − 1 − p + a)``."""
    pads = ((k - 1 - p, k - 1 - p + a),) * 2
    return functools.partial(
        lax.conv_transpose,
        strides=(s, s),
        padding=pads,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        transpose_kernel=True,
    )


def torch_conv_transpose(torch, x, kernel, s, p, a):
    channels_last = torch.channels_last  # oneDNN / cuDNN's fast layout, as convjax's NHWC
    tx = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).contiguous(memory_format=channels_last)
    tw = torch.from_numpy(np.array(kernel)).permute(3, 2, 0, 1)  # [C_in, C_out, k, k]
    tw = tw.contiguous(memory_format=channels_last)

    def run():
        with torch.no_grad():
            return torch.nn.functional.conv_transpose2d(
                tx, tw, stride=s, padding=p, output_padding=a
            )

    return run


def main() -> None:
    parser = timing.parser(__doc__)
    parser.add_argument("--full", action="store_true", help="the ANCHORS batch of 16")
    parser.add_argument("--no-gather", action="store_true", help="skip convjax's gather path")
    args = parser.parse_args()
    repeats, torch = timing.setup(args)
    rng = np.random.default_rng(0)
    print(
        f"{'shape':<32}{'convjax ms':>11}{'lax.ct ms':>11}{'gather ms':>11}{'torch ms':>10}"
        f"{'lax.ct/convjax':>16}{'convjax/torch':>15}"
    )
    for name, batches, size, c_in, c_out, k, s, p, a in SHAPES:
        batch = batches[1] if args.full else batches[0]
        x = jnp.asarray(rng.normal(size=(batch, size, size, c_in)), jnp.float32)
        # The forward conv's kernel: from the C_out result channels to the C_in of x.
        kernel = jnp.asarray(rng.normal(size=(k, k, c_out, c_in)) / (k * c_in**0.5), jnp.float32)
        options = dict(strides=s, padding=p, output_padding=a)
        fns = {
            "convjax": jax.jit(functools.partial(convjax.conv_transpose, **options)),
            "lax.ct": jax.jit(lax_conv_transpose(k, p, a, s)),
        }
        if not args.no_gather:
            fns["gather"] = jax.jit(
                functools.partial(convjax.conv_transpose, impl="gather", **options)
            )
        want = fns["convjax"](x, kernel)
        for key, f in fns.items():  # all compute the same function
            diff = float(jnp.max(jnp.abs(f(x, kernel) - want)))
            assert diff < 1e-3, (key, diff)
        times = {key: median_ms(functools.partial(f, x, kernel), repeats) for key, f in fns.items()}
        gather = f"{times['gather']:11.2f}" if "gather" in times else f"{'—':>11}"
        line = f"{name + f', b{batch}':<32}{times['convjax']:11.2f}{times['lax.ct']:11.2f}{gather}"
        if torch:
            run = torch_conv_transpose(torch, x, kernel, s, p, a)
            got = np.moveaxis(run().numpy(), 1, -1)
            assert np.abs(got - np.asarray(want)).max() < 1e-3
            t = median_ms(run, repeats)
            line += f"{t:10.2f}{times['lax.ct'] / times['convjax']:16.2f}"
            line += f"{times['convjax'] / t:15.2f}"
        else:
            line += f"{'—':>10}{times['lax.ct'] / times['convjax']:16.2f}{'—':>15}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
