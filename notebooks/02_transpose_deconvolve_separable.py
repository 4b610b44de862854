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
# # Transposed convolution, deconvolution, separable convolutions
#
# The seed warns that a *transposed* convolution is not a *deconvolution*. Here both run on the
# same blurred image, then the two kinds of "separable" convolution are taken apart.

# %%
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import convjax

# %% [markdown]
# ## The seed's example: 5×5 → 2×2 → 5×5
#
# `conv_transpose` is the adjoint of `conv`: it brings the shape back, and every input pixel
# scatters a weighted copy of the kernel (so overlapping copies add up).

# %%
kernel = jnp.ones((3, 3, 1, 1))
y = convjax.conv(jnp.ones((5, 5, 1)), kernel, strides=2)
back = convjax.conv_transpose(jnp.ones((2, 2, 1)), kernel, strides=2)
print("conv:", y.shape, " conv_transpose:", back.shape)
print(np.asarray(back[..., 0]).astype(int))

# %% [markdown]
# The adjoint identity ⟨conv(x), y⟩ = ⟨x, conv_transpose(y)⟩ holds on both paths:

# %%
rng = np.random.default_rng(0)
x = jnp.asarray(rng.normal(size=(9, 9, 2)), jnp.float32)
k = jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)
for impl in ("lax", "gather"):
    ax = convjax.conv(x, k, strides=2, padding=1, padding_mode="reflect", impl=impl)
    v = jnp.asarray(rng.normal(size=ax.shape), jnp.float32)
    atv = convjax.conv_transpose(
        v, k, strides=2, padding=1, padding_mode="reflect", output_shape=(9, 9), impl=impl
    )
    print(impl, float(jnp.vdot(ax, v)), float(jnp.vdot(x, atv)))

# %% [markdown]
# ## A real inverse
#
# Blur an image with a kernel whose spectrum has no zeros, then try to undo it.

# %%
n = 48
rows, cols = np.mgrid[:n, :n]
image = ((rows // 12 + cols // 12) % 2 + 0.5 * np.sin(cols / 2.5)).astype(np.float32)[..., None]
blur = np.array([0.2, 0.6, 0.2], np.float32)
blur_kernel = jnp.asarray(np.multiply.outer(blur, blur)[..., None, None])
options = dict(padding="SAME", padding_mode="circular")
blurred = convjax.conv(jnp.asarray(image), blur_kernel, **options)
noisy = blurred + 0.01 * jnp.asarray(rng.normal(size=blurred.shape), jnp.float32)

estimates = {
    "blurred + noise": noisy,
    "conv_transpose": convjax.conv_transpose(noisy, blur_kernel, **options),
    "deconvolve (λ=0)": convjax.deconvolve(noisy, blur_kernel, **options),
    "deconvolve (λ=1e-2)": convjax.deconvolve(noisy, blur_kernel, regularization=1e-2, **options),
}
fig, axes = plt.subplots(1, 5, figsize=(13, 3))
axes[0].imshow(image[..., 0], cmap="gray")
axes[0].set_title("original")
for ax, (name, est) in zip(axes[1:], estimates.items(), strict=True):
    err = float(jnp.linalg.norm(est - image) / np.linalg.norm(image))
    ax.imshow(np.asarray(est[..., 0]), cmap="gray")
    ax.set_title(f"{name}\nrel err {err:.3f}", fontsize=9)
for ax in axes:
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Spatially separable: Sobel is rank 1
#
# `separable_factors` finds the factors by SVD; two 1-D kernels (6 weights) give the same output
# as the 3×3 kernel (9 weights).

# %%
sobel = jnp.asarray([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
factors = convjax.separable_factors(sobel)
print("numerical rank:", int(factors.rank), " error:", float(factors.error))
print("column factor:", np.round(np.asarray(factors.columns[:, 0]), 3))
print("row factor:   ", np.round(np.asarray(factors.rows[0]), 3))
column = factors.columns[:, 0].reshape(3, 1, 1)
row = factors.rows[0].reshape(3, 1, 1)
img = jnp.asarray(image)
two_1d = convjax.spatial_separable_conv(img, [column, row], padding="SAME")
one_2d = convjax.conv(img, sobel.reshape(3, 3, 1, 1), padding="SAME")
print("max |separable - full| =", float(jnp.max(jnp.abs(two_1d - one_2d))))

# %% [markdown]
# ## Depthwise separable: 4608 → 656 parameters
#
# The seed's 16 → 32 channel 3×3 layer, counted and run.

# %%
dense = convjax.Layer((3, 3, 16, 32))
separable = convjax.Layer.depthwise_separable((3, 3, 1, 16), (16, 32))
print("dense:", convjax.param_count(dense), " depthwise separable:", convjax.param_count(separable))
feature_map = jnp.asarray(rng.normal(size=(1, 16, 16, 16)), jnp.float32)
out = convjax.depthwise_separable_conv(
    feature_map,
    jnp.asarray(rng.normal(size=(3, 3, 1, 16)), jnp.float32),
    jnp.asarray(rng.normal(size=(16, 32)), jnp.float32),
    padding="SAME",
)
print("output:", out.shape)
print(
    "receptive field of three 3×3 convs at rates 1, 2, 4:",
    convjax.receptive_field([convjax.Layer((3, 3, 1, 1), dilation=d) for d in (1, 2, 4)]).size,
)
