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
# # Convolution types, on real arrays
#
# Every convolution in convjax exists twice: on `lax.conv_general_dilated` and as an explicit
# gather. This notebook looks inside the gather path — the index map that says which input every
# output reads — and checks each claim of the seed against both paths.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import convjax

rng = np.random.default_rng(0)

# %% [markdown]
# ## Kernel size, stride, padding
#
# A 5×5 input, a 3×3 kernel, stride 2 and no padding give a 2×2 output. The index map shows the
# 3×3 window of input rows and columns each output reads.

# %%
m = convjax.index_map((5, 5, 1), (3, 3, 1, 1), strides=2)
print("output", m.output_spatial, "rows read by output row 0 and 1:", m.axes[0].index.tolist())


def draw_reads(ax, index_map, output_position, title):
    """Shade the input cells one output position reads (taps on zero padding read nothing)."""
    size = index_map.input_spatial
    grid = np.zeros(size)
    for (r, c), valid in index_map.reads(output_position):
        grid[r, c] += valid
    ax.imshow(grid, cmap="Blues", vmin=0, vmax=max(grid.max(), 1))
    ax.set_title(title, fontsize=9)
    ax.set_xticks(range(size[1]))
    ax.set_yticks(range(size[0]))


fig, axes = plt.subplots(1, 4, figsize=(10, 2.8))
for ax, pos in zip(axes, [(0, 0), (0, 1), (1, 0), (1, 1)], strict=True):
    draw_reads(ax, m, pos, f"output {pos}")
fig.suptitle("5×5, k=3, stride 2, no padding → 2×2")
plt.show()

# %%
x = jnp.asarray(rng.normal(size=(1, 5, 5, 1)), jnp.float32)
k = jnp.asarray(rng.normal(size=(3, 3, 1, 1)), jnp.float32)
a = convjax.conv(x, k, strides=2, impl="lax")
b = convjax.conv(x, k, strides=2, impl="gather")
print(a.shape, "max |lax - gather| =", float(jnp.max(jnp.abs(a - b))))

# %% [markdown]
# ## Padding modes are index remaps
#
# With one pixel of padding, the top-left output reads outside the input. Zero padding masks
# those taps; reflect, replicate and circular padding read a real input element instead.

# %%
for mode in ("zeros", "reflect", "replicate", "circular"):
    mm = convjax.index_map((5, 5, 1), (3, 3, 1, 1), padding=1, padding_mode=mode)
    rows = mm.axes[0]
    print(
        f"{mode:>9}: positions {rows.position[0].tolist()} -> rows {rows.index[0].tolist()}, "
        f"valid {rows.valid[0].tolist()}"
    )

# %% [markdown]
# ## Dilated convolution
#
# A 3×3 kernel at rate 2 sees a 5×5 field with 9 parameters, exactly like a 5×5 kernel with every
# second row and column deleted.

# %%
md = convjax.index_map((9, 9, 1), (3, 3, 1, 1), dilation=2)
fig, ax = plt.subplots(figsize=(3, 3))
draw_reads(ax, md, (2, 2), "rate 2: output (2, 2)")
plt.show()

x = jnp.asarray(rng.normal(size=(1, 9, 9, 1)), jnp.float32)
k3 = jnp.asarray(rng.normal(size=(3, 3, 1, 1)), jnp.float32)
k5 = jnp.zeros((5, 5, 1, 1), jnp.float32).at[::2, ::2].set(k3)
diff = jnp.max(jnp.abs(convjax.dilated_conv(x, k3, rate=2) - convjax.conv(x, k5)))
print("dilated 3×3 vs 5×5 with holes:", float(diff))

# %% [markdown]
# ## Grouped and depthwise
#
# With `groups=g`, output channel `g·(C_out/groups) + j` reads only input group `g`: the
# kernel has `I·O·K / groups` weights. Depthwise is `groups = C_in`.

# %%
x = jnp.asarray(rng.normal(size=(2, 16, 16, 8)), jnp.float32)
dense = jnp.asarray(rng.normal(size=(3, 3, 8, 16)), jnp.float32)
grouped = jnp.asarray(rng.normal(size=(3, 3, 2, 16)), jnp.float32)
depthwise = jnp.asarray(rng.normal(size=(3, 3, 1, 16)), jnp.float32)
for name, kernel, fn in [
    ("dense", dense, lambda x, k, **kw: convjax.conv(x, k, **kw)),
    ("groups=4", grouped, lambda x, k, **kw: convjax.conv(x, k, groups=4, **kw)),
    ("depthwise m=2", depthwise, lambda x, k, **kw: convjax.depthwise_conv(x, k, **kw)),
]:
    y_lax, y_gather = fn(x, kernel, impl="lax"), fn(x, kernel, impl="gather")
    print(
        f"{name:>14}: {kernel.size:5d} weights, output {tuple(y_lax.shape)}, "
        f"max |lax - gather| = {float(jnp.max(jnp.abs(y_lax - y_gather))):.1e}"
    )

# %% [markdown]
# ## Both paths under `jit`, `vmap` and `grad`

# %%
f = jax.jit(lambda x, k: jnp.sum(convjax.conv(x, k, padding="SAME", impl="gather") ** 2))
g_gather = jax.grad(f, argnums=1)(x, dense)
g_lax = jax.grad(
    lambda x, k: jnp.sum(convjax.conv(x, k, padding="SAME", impl="lax") ** 2), argnums=1
)(x, dense)
print("kernel gradient, max |lax - gather| =", float(jnp.max(jnp.abs(g_gather - g_lax))))
