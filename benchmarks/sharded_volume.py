"""Per-device memory and step time of a 3-D conv stack on a volume split over 1, 2, 4, 8 devices.

    python benchmarks/sharded_volume.py [--size 64] [--channels 16] [--layers 3] [--rounds 3]

The volume ``[1, D, H, W, C]`` is split along its depth over a mesh of ``n`` devices (simulated
CPU devices unless the machine has accelerators); one step is the loss and its gradient with
respect to every kernel of a stack of 3×3×3 'SAME' convs with ReLUs.  For each mesh size the
script prints what XLA's ``memory_analysis`` says one device holds (arguments, outputs,
temporaries), the halo each device receives per conv (``convjax.halo_plan``, predicted from
the index map) and what the compiled step's collective-permutes move per device (measured from
its HLO: each conv's halo forward, and back again for every conv whose input gradient the step
needs), and the step time (median and min/max over rounds, the meshes alternating within each
round).

Simulated devices share the host's cores, so their times show the overhead of the exchange, not
a speed-up; per-device memory is what falls.
"""

import argparse
import math
import os
import re
import sys
import time

DEVICES = 8
if "jax" in sys.modules:
    raise RuntimeError("import this script before jax: it sets the simulated device count")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={DEVICES}"
)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import convjax  # noqa: E402

MIB = 2**20


def stack_loss(kernels, x):
    for kernel in kernels:
        x = jax.nn.relu(convjax.conv(x, kernel, padding="SAME"))
    return jnp.mean(x * x)


def step_for(n: int, x_shape, kernels):
    """The compiled step on a mesh of ``n`` devices splitting the depth, its input, and the
    halo bytes of one conv."""
    mesh = jax.make_mesh((n,), ("depth",), devices=jax.devices()[:n])
    sharding = jax.NamedSharding(mesh, jax.P(None, "depth"))
    x = jax.device_put(np.random.default_rng(0).standard_normal(x_shape, np.float32), sharding)
    kernels = [jax.device_put(k, jax.NamedSharding(mesh, jax.P())) for k in kernels]
    step = jax.jit(jax.value_and_grad(stack_loss))
    compiled = step.lower(kernels, x).compile()
    halo = convjax.halo_plan(x, kernels[0].shape, padding="SAME").halo_bytes if n > 1 else 0
    return compiled, (kernels, x), halo


HLO_BYTES = {"f64": 8, "f32": 4, "bf16": 2, "f16": 2}


def permuted_bytes(hlo: str) -> int:
    """Bytes one device receives over the compiled program's collective-permutes."""
    total = 0
    for dtype, dims in re.findall(r"= (\w+)\[([\d,]*)\]\{[^}]*\} collective-permute\(", hlo):
        total += math.prod(int(d) for d in dims.split(",") if d) * HLO_BYTES[dtype]
    return total


def settle(fn, args, seconds=0.015):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        jax.block_until_ready(fn(*args))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64, help="the volume's edge (default 64)")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--meshes", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args(argv)
    c, s = args.channels, args.size
    x_shape = (1, s, s, s, c)
    rng = np.random.default_rng(1)
    kernels = [
        (rng.standard_normal((3, 3, 3, c, c)) / np.sqrt(27 * c)).astype(np.float32)
        for _ in range(args.layers)
    ]
    print(
        f"{args.layers} × conv 3×3×3 {c}→{c} 'SAME' + ReLU on [1, {s}, {s}, {s}, {c}] float32 "
        f"({np.prod(x_shape) * 4 / MIB:.0f} MiB per activation), loss and kernel gradients; "
        f"devices: {jax.devices()[0].device_kind} ×{jax.device_count()}"
    )
    runs = {n: step_for(n, x_shape, kernels) for n in args.meshes}
    times = {n: [] for n in args.meshes}
    for _ in range(args.rounds):
        for n, (compiled, operands, _) in runs.items():
            settle(compiled, operands)
            start = time.perf_counter()
            jax.block_until_ready(compiled(*operands))
            times[n].append(time.perf_counter() - start)
    print(
        f"{'devices':>7} {'args MiB':>9} {'temp MiB':>9} {'out MiB':>8} {'total MiB':>10} "
        f"{'halo KiB/conv':>14} {'moved KiB/step':>15} {'step ms (min–max)':>22}"
    )
    for n, (compiled, _, halo) in runs.items():
        memory = compiled.memory_analysis()
        parts = (
            memory.argument_size_in_bytes,
            memory.temp_size_in_bytes,
            memory.output_size_in_bytes,
        )
        t = np.array(times[n]) * 1e3
        print(
            f"{n:>7} {parts[0] / MIB:>9.1f} {parts[1] / MIB:>9.1f} {parts[2] / MIB:>8.1f} "
            f"{sum(parts) / MIB:>10.1f} {halo / 1024:>14.1f} "
            f"{permuted_bytes(compiled.as_text()) / 1024:>15.1f} "
            f"{np.median(t):>9.0f} ({t.min():.0f}–{t.max():.0f})"
        )


if __name__ == "__main__":
    main()
