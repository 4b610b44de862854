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
# # Transposed convolution is not deconvolution
#
# A *transposed* convolution brings a convolution's *shape* back; a *deconvolution* brings its
# *values* back. This notebook shows the transposed convolution both ways it is usually drawn,
# checks that both drawings compute `convjax.conv_transpose`, checks that it is the adjoint of
# `conv`, and then undoes a blur with `deconvolve`, which `conv_transpose` cannot.

# %%
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import convjax
from convjax import viz

rng = np.random.default_rng(0)

# %% [markdown]
# ## The classic example: 5×5 → 2×2 → 5×5
#
# First view, the *scatter*: each input cell adds a weighted copy of the kernel into the output,
# and overlapping copies add up. It is the forward conv's index map read backwards.

# %%
kernel = jnp.arange(9.0).reshape(3, 3, 1, 1) % 3
y = jnp.asarray([[3.0, 2.0], [1.0, 0.0]])[..., None]
back = convjax.conv_transpose(y, kernel, strides=2)
print(
    "conv:",
    convjax.output_shape((5, 5, 1), kernel.shape, strides=2),
    " conv_transpose:",
    back.shape,
)
print(np.asarray(back[..., 0]).astype(int))
viz.animate(
    (2, 2, 1), (3, 3, 1, 1), strides=2, transpose=True, values=(y[..., 0], kernel[..., 0, 0])
)

# %% [markdown]
# Second view, the *zero-insertion* convolution: insert `stride − 1` zeros between input cells,
# pad `k − 1 − padding` zeros around, and run a stride-1 convolution with the kernel flipped.

# %%
viz.animate(
    (2, 2, 1),
    (3, 3, 1, 1),
    strides=2,
    transpose=True,
    view="conv",
    values=(y[..., 0], kernel[..., 0, 0]),
)

# %% [markdown]
# The same thing with plain arrays, for any stride, padding and output padding: it equals
# `conv_transpose` exactly, and so do both drawings' records.


# %%
def zero_insertion(x, kernel, stride, padding, output_padding):
    """conv_transpose of a [H, W, 1] input as a stride-1 conv over inserted zeros."""
    h, w = x.shape[:2]
    k = kernel.shape[0]
    inserted = (
        jnp.zeros(((h - 1) * stride + 1, (w - 1) * stride + 1, 1)).at[::stride, ::stride].set(x)
    )
    lo, hi = k - 1 - padding, k - 1 - padding + output_padding
    flipped = kernel[::-1, ::-1]
    return convjax.conv(inserted, flipped, padding=[(lo, hi), (lo, hi)])


for stride, padding, output_padding in [(2, 0, 0), (2, 1, 1), (3, 1, 2)]:
    x = jnp.asarray(rng.normal(size=(3, 3, 1)))
    k = jnp.asarray(rng.normal(size=(3, 3, 1, 1)))
    options = dict(strides=stride, padding=padding, output_padding=output_padding)
    reference = convjax.conv_transpose(x, k, **options)
    by_hand = zero_insertion(x, k, stride, padding, output_padding)
    drawn = {
        view: viz.animate((3, 3, 1), (3, 3, 1, 1), transpose=True, view=view, **options)
        for view in ("scatter", "conv")
    }
    errors = [float(jnp.max(jnp.abs(by_hand - reference)))] + [
        float(np.max(np.abs(a.evaluate(x[..., 0], k[..., 0, 0]) - reference[..., 0])))
        for a in drawn.values()
    ]
    print(
        f"stride {stride}, padding {padding}, output_padding {output_padding}: "
        f"{reference.shape[:2]}, max |diff| by hand / scatter / conv view: "
        + " / ".join(f"{e:.0e}" for e in errors)
    )

# %% [markdown]
# `output_padding` picks among the sizes a strided conv maps to the same output size; with a
# dilated kernel the extra row is written by taps (hatched cells, when no tap reaches them):

# %%
viz.animate(
    (3, 3, 1), (3, 3, 1, 1), strides=2, dilation=2, padding=1, output_padding=1, transpose=True
)

# %% [markdown]
# ## The adjoint
#
# ⟨conv(x), v⟩ = ⟨x, conv_transpose(v)⟩ for every `x` and `v`. The same random `x` and `v` on
# every formulation, here with reflect padding (the transposed conv folds border contributions
# back onto the cells they copied):

# %%
x = jnp.asarray(rng.normal(size=(9, 9, 2)))
k = jnp.asarray(rng.normal(size=(3, 3, 2, 4)))
options = dict(strides=2, padding=1, padding_mode="reflect")
v = jnp.asarray(rng.normal(size=convjax.output_shape(x.shape, k.shape, **options)))
for impl in ("lax", "gather", "taps"):
    lhs = jnp.vdot(convjax.conv(x, k, impl=impl, **options), v)
    rhs = jnp.vdot(x, convjax.conv_transpose(v, k, output_shape=(9, 9), impl=impl, **options))
    print(
        f"{impl:>6}: <conv(x), v> = {float(lhs):+.6f}   <x, conv_transpose(v)> = {float(rhs):+.6f}"
    )

# %% [markdown]
# ## A real inverse
#
# Blur an image with a kernel whose spectrum has no zeros, add a little noise, and try to undo it.
# `conv_transpose` blurs again; `deconvolve` inverts (Wiener, `λ = 0`, amplifies the noise a
# little; `λ > 0` trades it against detail).

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
