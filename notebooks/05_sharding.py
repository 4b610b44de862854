# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Beyond one device: sharded convolutions and their halos
#
# Large images, 3-D volumes and long signals outgrow one accelerator. Split the batch and the
# spatial axes over a mesh of devices and every convjax convolution — each formulation, its
# gradient, the transposed conv, the modules — runs on each device's block plus a **halo**: the
# few border rows of its neighbours that its windows read. Nothing is all-gathered.
#
# This notebook simulates 8 CPU devices, so it runs anywhere; on GPUs or TPUs the code is the
# same.

# %%
import os

# Before JAX starts: 8 simulated CPU devices (on a machine with accelerators, drop this).
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
)

import re

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

import convjax

print(jax.device_count(), "devices")

# %% [markdown]
# ## Batch × spatial: a 2×4 mesh
#
# `jax.make_mesh` gives *explicit* mesh axes: an array's type says how it is split, so convjax
# sees, while tracing, which axes are sharded. Here the batch is split in 2 and the rows in 4.

# %%
mesh = jax.make_mesh((2, 4), ("batch", "rows"))
rng = np.random.default_rng(0)
x = rng.standard_normal((4, 64, 48, 3)).astype(np.float32)  # [N, H, W, C]
k = rng.standard_normal((3, 3, 3, 8)).astype(np.float32)

xs = jax.device_put(x, jax.NamedSharding(mesh, jax.P("batch", "rows")))
conv = jax.jit(lambda x, k: convjax.conv(x, k, padding="SAME"))
y = conv(xs, k)

print("input per device: ", xs.addressable_shards[0].data.shape)
print("output per device:", y.addressable_shards[0].data.shape, "sharded as", y.sharding.spec)
print("equal to one device:", np.allclose(y, convjax.conv(x, k, padding="SAME"), atol=1e-5))

# %% [markdown]
# ## What each device receives
#
# `convjax.halo_plan` reads the exchange off the index map: per sharded axis, the rows each
# device needs from others, sent as one `ppermute` per distance between devices. For a 3×3
# 'SAME' conv each device gets one row from the device above and one from the device below.

# %%
plan = convjax.halo_plan(xs, k.shape, padding="SAME")
axis = plan.axes[0]
devices = mesh.shape["rows"]
for message in axis.messages:
    ahead = message.shift if message.shift <= devices // 2 else message.shift - devices
    where = (
        "the next device" if ahead == 1 else "the device before" if ahead == -1 else f"{ahead:+d}"
    )
    print(f"from {where}: (sender, receiver) {message.pairs}, {message.length} row(s)")
print("each device assembles", axis.window, "rows for its", axis.output_block, "output rows")
print("halo bytes per device:", plan.halo_bytes, "=", 2, "rows ×", 48 * 3 * 4, "bytes × 2 images")

# %% [markdown]
# The compiled program says the same: two collective-permutes of one row each, no all-gather.

# %%
hlo = conv.lower(xs, k).compile().as_text()
print("all-gathers:", hlo.count("all-gather"))
for shape in re.findall(r"= (\w+\[[\d,]*\])\{[^}]*\} collective-permute\(", hlo):
    print("collective-permute", shape)

# %% [markdown]
# ## Drawing the halo
#
# A 1-d signal of 16 samples on 4 devices, a 5-tap window at stride 1, circular padding: each
# device's window is its own 4 samples (blue), 2 from the device before and 2 from the device
# after (orange) — the first and last devices wrap around to each other.


# %%
def draw(plan, title):
    sources = plan.axes[0].sources  # [device, window row]: where each row comes from
    own = np.arange(len(sources))[:, None]
    kind = np.where(sources == own, 0, np.where(sources < 0, 2, 1))  # own, neighbour, padding
    colours = ["#9ecae1", "#fdae6b", "0.9"]  # light: the numbers on them stay readable
    fig, ax = plt.subplots(figsize=(7.5, 2.8), layout="constrained")
    ax.imshow(kind, cmap=plt.matplotlib.colors.ListedColormap(colours), vmin=0, vmax=2)
    for (p, e), source in np.ndenumerate(sources):
        ax.text(e, p, "pad" if source < 0 else source, ha="center", va="center", fontsize=9)
    ax.set_yticks(range(len(sources)), [f"device {p}" for p in range(len(sources))])
    ax.set_xlabel("row of each device's window (the number: the device the row comes from)")
    ax.set_title(title)
    meanings = ["its own rows", "halo: a neighbour's rows", "padding, filled locally"]
    patches = [
        plt.matplotlib.patches.Patch(color=c, label=m)
        for c, m in zip(colours, meanings, strict=True)
    ]
    fig.legend(handles=patches, loc="outside lower center", ncols=3)
    plt.show()


line = jax.make_mesh((4,), ("t",), devices=jax.devices()[:4])
signal = jax.ShapeDtypeStruct(
    (1, 16, 1), "float32", sharding=jax.NamedSharding(line, jax.P(None, "t"))
)
draw(convjax.halo_plan(signal, (5, 1, 1), padding=2, padding_mode="circular"), "circular, k=5")
draw(convjax.halo_plan(signal, (5, 1, 1), padding=2), "zero padding, k=5: filled locally")

# %% [markdown]
# ## Training on a 2×2×2 mesh
#
# Batch × two spatial axes: the corners of each block arrive in two hops (rows first, then
# columns of the already extended block). Modules need nothing special: a sharded input makes a
# sharded forward and backward pass, and the kernels' gradients are summed over the devices.

# %%
cube = jax.make_mesh((2, 2, 2), ("batch", "rows", "cols"))
model = nnx.Sequential(
    convjax.nnx.Conv(3, 16, kernel_size=(3, 3), padding="SAME", rngs=nnx.Rngs(0)),
    nnx.relu,
    convjax.nnx.DepthwiseConv(
        16, kernel_size=(5, 5), padding="SAME", padding_mode="reflect", rngs=nnx.Rngs(1)
    ),
    nnx.relu,
    convjax.nnx.Conv(16, 3, kernel_size=(1, 1), rngs=nnx.Rngs(2)),
)


@nnx.jit
def loss_and_grads(model, x):
    return nnx.value_and_grad(lambda m: jnp.mean((m(x) - x) ** 2))(model)


xc = jax.device_put(x, jax.NamedSharding(cube, jax.P("batch", "rows", "cols")))
loss, grads = loss_and_grads(model, xc)
loss_one, grads_one = loss_and_grads(model, jnp.asarray(x))
print(f"loss on 8 devices {float(loss):.6f}, on one {float(loss_one):.6f}")
leaves = zip(jax.tree.leaves(grads), jax.tree.leaves(grads_one), strict=True)
print("gradients agree:", all(np.allclose(a, b, atol=1e-5) for a, b in leaves))

# %% [markdown]
# ## Sizes the mesh does not divide
#
# JAX splits arrays into equal blocks, so a sharded input always divides. An output may not: a
# 'VALID' 3×3 conv of 64 rows gives 62, which 4 devices cannot share evenly. convjax computes it
# in blocks of 16, crops, and returns that axis whole on each device (the one all-gather, of the
# result); keep sizes divisible ('SAME' padding, strides that divide the block) to stay split.

# %%
valid = jax.jit(lambda x, k: convjax.conv(x, k))(xs, k)
print(valid.shape, valid.sharding.spec)

# %% [markdown]
# ## More than one machine
#
# One process per host, each with its local devices, joined by `jax.distributed.initialize()`
# (on SLURM and TPU pods it finds its peers itself; elsewhere pass `coordinator_address`,
# `num_processes` and `process_id`). Split the batch over hosts and the volume over each host's
# devices, so halos stay on the fast link inside a host and only kernel gradients cross hosts:
#
# ```python
# jax.distributed.initialize()
# mesh = jax.make_mesh((jax.process_count(), jax.local_device_count()), ("hosts", "depth"))
# sharding = jax.NamedSharding(mesh, jax.P("hosts", "depth"))
# x = jax.make_array_from_process_local_data(sharding, my_volumes)  # this host's batch
# loss, grads = train_step(model, x)  # the same jitted code as on one host
# ```
