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
# # Depthwise, grouped and separable convolutions
#
# What each one connects (channel pictures), what it costs (parameters and multiply-adds from
# `param_count` / `flop_count`, checked against the arrays), and that the factorised forms
# compute what they promise.

# %%
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import convjax
from convjax import viz

rng = np.random.default_rng(0)

# %% [markdown]
# ## Who reads whom
#
# A dense conv connects every input channel to every output channel; `groups=g` splits both into
# `g` blocks; depthwise (`groups = C_in`) gives each input channel its own `m` outputs; a
# depthwise-separable conv is depthwise, then a 1×1 conv across channels.

# %%
viz.channels(8, 8, groups=1, labels=("dense",))

# %%
viz.channels(8, 8, groups=4, labels=("groups=4",))

# %%
viz.channels(8, 16, groups=8, labels=("depthwise, multiplier 2",))

# %%
viz.channels(8, 8, 12, groups=(8, 1), labels=("depthwise", "pointwise"))

# %% [markdown]
# An animation of a grouped conv carries the same picture beside its frames: `groups=2` on a 5×5
# input, 4 channels in and 4 out. Each frame computes every output channel at one position, each
# from its own group's input channels.

# %%
viz.animate((5, 5, 4), (3, 3, 2, 4), groups=2)

# %% [markdown]
# The pictures are the convolution: output channel `o` depends on input channel `i` exactly where
# the Jacobian of a 1×1 conv with random weights is non-zero.

# %%
for c_in, c_out, groups in [(8, 8, 4), (8, 16, 8), (6, 12, 3)]:
    kernel = jnp.asarray(rng.normal(size=(1, c_in // groups, c_out)))
    jac = jax.jacobian(lambda x, k=kernel, g=groups: convjax.conv(x, k, groups=g))(
        jnp.ones((1, c_in))
    )[0, :, 0, :]
    same = np.array_equal(np.asarray(jac != 0), viz.connectivity(c_in, c_out, groups))
    print(f"{c_in} → {c_out}, groups={groups}: picture equals the Jacobian's pattern: {same}")

# %% [markdown]
# ## What they cost
#
# One 3×3 layer from 64 to 128 channels on a 56×56 feature map, in every factorisation.
# Multiply-adds are counted per image; `bias=False` everywhere.

# %%
shape = (1, 56, 56, 64)
layers = {
    "dense 3×3": convjax.Layer((3, 3, 64, 128), padding="SAME"),
    "grouped, g=4": convjax.Layer((3, 3, 16, 128), padding="SAME", groups=4),
    "grouped, g=32": convjax.Layer((3, 3, 2, 128), padding="SAME", groups=32),
    "depthwise m=2": convjax.Layer((3, 3, 1, 128), padding="SAME", groups=64),
    "depthwise-separable": convjax.Layer.depthwise_separable(
        (3, 3, 1, 64), (64, 128), padding="SAME"
    ),
    "depthwise 3×3, m=1": convjax.Layer((3, 3, 1, 64), padding="SAME", groups=64),
    "depthwise 3×1 then 1×3": convjax.Layer.spatial_separable(
        [(3, 1, 64), (3, 1, 64)], padding="SAME", groups=64
    ),
}
dense_params = convjax.param_count(layers["dense 3×3"])
dense_macs = convjax.flop_count(layers["dense 3×3"], shape)
print(f"{'layer':<32}{'parameters':>12}{'× dense':>9}{'MACs':>14}{'× dense':>9}")
for name, layer in layers.items():
    params, macs = convjax.param_count(layer), convjax.flop_count(layer, shape)
    print(
        f"{name:<32}{params:>12,}{params / dense_params:>9.3f}{macs:>14,}{macs / dense_macs:>9.3f}"
    )

# %% [markdown]
# The counts are the arrays' sizes: the kernel sizes match `param_count`, and the multiply-adds of
# a layer are its output size times the weights each output reads.

# %%
for name, module in {
    "grouped, g=4": convjax.nnx.Conv(
        64, 128, (3, 3), feature_group_count=4, padding="SAME", use_bias=False, rngs=nnx.Rngs(0)
    ),
    "depthwise-separable": convjax.nnx.DepthwiseSeparableConv(
        64, 128, (3, 3), padding="SAME", use_bias=False, rngs=nnx.Rngs(0)
    ),
}.items():
    n = sum(p.size for p in jax.tree.leaves(nnx.state(module, nnx.Param)))
    print(
        f"{name}: module holds {n:,} parameters; param_count says "
        f"{convjax.param_count(layers[name]):,}"
    )
out = convjax.output_shape(shape, (3, 3, 16, 128), padding="SAME", groups=4)
print(
    "grouped MACs by hand:",
    int(np.prod(out)) * 3 * 3 * 16,
    " flop_count:",
    convjax.flop_count(layers["grouped, g=4"], shape),
)

# %% [markdown]
# ## Spatially separable: when a kernel factorises
#
# `separable_factors` finds the best rank-r factors by SVD. Sobel is rank 1 (exact); a Gaussian is
# rank 1; a random kernel is not, and its rank-1 error says how much a separable layer would lose.

# %%
sobel = jnp.asarray([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
g = np.exp(-(np.linspace(-1, 1, 5) ** 2))
kernels = {
    "Sobel": sobel,
    "Gaussian 5×5": jnp.asarray(np.outer(g, g)),
    "random 3×3": jnp.asarray(rng.normal(size=(3, 3))),
}
image = jnp.asarray(rng.normal(size=(1, 32, 32, 1)))
for name, kernel in kernels.items():
    f = convjax.separable_factors(kernel, rank=1)
    window = kernel.shape[0]
    full = convjax.conv(image, kernel.reshape(window, window, 1, 1), padding="SAME")
    split = convjax.spatial_separable_conv(image, list(f.depthwise_kernels()), padding="SAME")
    err = float(jnp.linalg.norm(split - full) / jnp.linalg.norm(full))
    print(f"{name:<13} numerical rank {int(f.rank)}, rank-1 output error {err:.1e}")

# %% [markdown]
# ## Depthwise-separable equals depthwise, then 1×1

# %%
x = jnp.asarray(rng.normal(size=(2, 16, 16, 8)))
dw = jnp.asarray(rng.normal(size=(3, 3, 1, 16)))
pw = jnp.asarray(rng.normal(size=(16, 24)))
fused = convjax.depthwise_separable_conv(x, dw, pw, padding="SAME")
staged = convjax.conv(convjax.depthwise_conv(x, dw, padding="SAME"), pw[None, None])
print(
    "output",
    fused.shape,
    " relative difference:",
    float(jnp.linalg.norm(fused - staged) / jnp.linalg.norm(staged)),
)
