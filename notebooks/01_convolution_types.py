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
# # Every convolution type, on real arrays
#
# Each type in turn: an animation drawn from the index maps convjax computes with, the classic
# numbers computed live, and every formulation (`lax`, `gather`, `taps`, `fft`, `planes`) checked
# against the others. Differences are printed as *relative* errors, `|a − b| / |b|`, so that float32
# rounding on large values reads as what it is.

# %%
import functools
import io

import IPython.display
import jax
import jax.numpy as jnp
import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import cbook

import convjax
from convjax import viz

rng = np.random.default_rng(0)
# Every named formulation but the two that choose among the others.
FORMULATIONS = tuple(f.name for f in convjax.formulations() if f.name not in ("auto", "autotune"))


def rel(a, b):
    """Relative error of ``a`` against ``b``."""
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def compare(fn, *args, **kwargs):
    """Run ``fn`` on every formulation that accepts the call; print each one's relative error
    against ``lax``; return lax's result."""

    def run(impl):
        return jax.jit(functools.partial(fn, impl=impl, **kwargs))(*args)

    reference = run("lax")
    errors = []
    for impl in FORMULATIONS[1:]:
        try:
            errors.append(f"{impl} {rel(run(impl), reference):.1e}")
        except ValueError:  # e.g. fft refuses strides
            errors.append(f"{impl} refuses")
    print("  relative to lax:", ", ".join(errors))
    return reference


# %% [markdown]
# ## Convolution: kernel size, stride, padding
#
# The classic example: a 5×5 input, a 3×3 kernel, stride 2 and no padding give a 2×2 output.
# Each frame shades the input cells one output reads.

# %%
anim = viz.animate((5, 5, 1), (3, 3, 1, 1), strides=2, values=True)
print("output positions:", [s.output for s in anim.steps])
anim

# %%
x = jnp.asarray(rng.normal(size=(1, 5, 5, 1)), jnp.float32)
k = jnp.asarray(rng.normal(size=(3, 3, 1, 1)), jnp.float32)
print("conv output shape:", compare(convjax.conv, x, k, strides=2).shape)
print("parameters of a 3×3, 16 → 32 layer:", convjax.param_count(convjax.Layer((3, 3, 16, 32))))

# %% [markdown]
# Half padding (`"HALF"`, ⌊k/2⌋ each side) keeps the size at stride 1. Padding modes are index
# remaps: reflect, replicate and circular padding cells name the input cell they copy.

# %%
print("HALF keeps 7×7:", convjax.output_shape((7, 7, 1), (3, 3, 1, 1), padding="HALF"))
viz.animate((4, 4, 1), (3, 3, 1, 1), padding=1, padding_mode="reflect")

# %%
x = jnp.asarray(rng.normal(size=(2, 12, 12, 8)), jnp.float32)
for mode in ("zeros", "reflect", "replicate", "circular"):
    print(mode)
    compare(
        convjax.conv,
        x,
        jnp.asarray(rng.normal(size=(3, 3, 8, 4)), jnp.float32),
        padding=1,
        padding_mode=mode,
    )

# %% [markdown]
# ## Dilated (atrous) convolution
#
# A 3×3 kernel at rate 2 sees a 5×5 field with 9 parameters: a 5×5 kernel with every second row
# and column deleted.

# %%
viz.animate((7, 7, 1), (3, 3, 1, 1), dilation=2)

# %%
x = jnp.asarray(rng.normal(size=(1, 9, 9, 1)), jnp.float32)
k3 = jnp.asarray(rng.normal(size=(3, 3, 1, 1)), jnp.float32)
k5 = jnp.zeros((5, 5, 1, 1), jnp.float32).at[::2, ::2].set(k3)
y = compare(convjax.dilated_conv, x, k3, rate=2)
print("dilated 3×3 vs 5×5 with holes, relative error:", rel(y, convjax.conv(x, k5)))
print("receptive field:", convjax.receptive_field(convjax.Layer((3, 3, 1, 1), dilation=2)).size)

# %% [markdown]
# ## Grouped and depthwise
#
# With `groups=g`, output channel `g·(C_out/groups) + j` reads only input group `g`: the kernel
# has `I·O·K / groups` weights. Depthwise is `groups = C_in`; a depth multiplier `m` gives each
# input channel `m` outputs.

# %%
viz.channels(8, 8, groups=4, labels=("groups=4",))

# %%
x = jnp.asarray(rng.normal(size=(2, 16, 16, 8)), jnp.float32)
for name, kernel_shape, groups in [
    ("dense", (3, 3, 8, 16), 1),
    ("groups=4", (3, 3, 2, 16), 4),
    ("depthwise, m=2", (3, 3, 1, 16), 8),
]:
    kernel = jnp.asarray(rng.normal(size=kernel_shape), jnp.float32)
    print(f"{name}: {kernel.size} weights")
    compare(convjax.conv, x, kernel, groups=groups, padding="SAME")

# %% [markdown]
# ## Transposed convolution
#
# The classic 2×2 back to 5×5: each input cell adds a weighted copy of the kernel into the output
# (notebook 2 shows the other view and the difference from a deconvolution).

# %%
viz.animate((2, 2, 1), (3, 3, 1, 1), strides=2, transpose=True, values=True)

# %% [markdown]
# ## Separable
#
# Sobel is rank 1: two 1-D kernels (6 weights) give the 3×3 kernel's output (9 weights). The
# depthwise-separable version of the 16 → 32 channel 3×3 layer has 656 parameters instead of
# 4608 (notebook 3 counts the rest).

# %%
sobel = jnp.asarray([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
factors = convjax.separable_factors(sobel, rank=1)
image = jnp.asarray(rng.normal(size=(1, 16, 16, 1)), jnp.float32)
two_1d = compare(
    convjax.spatial_separable_conv, image, list(factors.depthwise_kernels()), padding="SAME"
)
print(
    "separable vs the 3×3 conv, relative error:",
    rel(two_1d, convjax.conv(image, sobel.reshape(3, 3, 1, 1), padding="SAME")),
)
print(
    convjax.param_count(convjax.Layer.depthwise_separable((3, 3, 1, 16), (16, 32))),
    "vs",
    convjax.param_count(convjax.Layer((3, 3, 16, 32))),
    "parameters",
)

# %% [markdown]
# ## Deformable convolution
#
# A deformable convolution moves each tap of each output by a learned offset:
# tap `t` of output `o` samples the input at `o·s − lo + t·d + Δ[o, t]`, interpolating
# bilinearly between the four cells around that point (zero outside the input). With
# integer offsets it is a gather; a dilated convolution is the special case
# `Δ = (d − 1)·(t − centre)`, the same for every output:

# %%
photo = matplotlib.image.imread(cbook.get_sample_data("grace_hopper.jpg"))  # 600×512 RGB
face = photo[40:328, 112:400].mean(axis=-1) / 255.0  # her face, grey, 288×288
small = face.reshape(24, 12, 24, 12).mean(axis=(1, 3))  # 24×24, cells large enough to see
x = jnp.asarray(small, jnp.float32)[None, :, :, None]
k = jnp.asarray(rng.normal(size=(3, 3, 1, 4)), jnp.float32)

centred = np.stack(np.meshgrid([-1, 0, 1], [-1, 0, 1], indexing="ij"), -1)  # [3, 3, (row, col)]
as_dilated = jnp.broadcast_to(jnp.asarray(centred.reshape(-1), jnp.float32), (1, 24, 24, 18))
print(
    "deform_conv with offsets (d − 1)·t vs dilated_conv rate 2, largest difference:",
    float(
        jnp.max(
            jnp.abs(
                convjax.deform_conv(x, k, as_dilated, padding=1)
                - convjax.dilated_conv(x, k, rate=2, padding=2)
            )
        )
    ),
)

# %% [markdown]
# The input: Grace Hopper's portrait (matplotlib's sample photograph), grey and averaged down to
# 24×24 cells. The box is the part drawn below, around output (9, 12).

# %%
context, ax = plt.subplots(figsize=(3.2, 3.2))
ax.imshow(small, cmap="gray")
ax.add_patch(plt.Rectangle((4.5, 2.5), 15, 14, fill=False, edgecolor="tab:orange", lw=2))
ax.set_title("input, 24×24", fontsize=10)
ax.axis("off")
picture = io.BytesIO()
context.savefig(picture, format="png", dpi=100, bbox_inches="tight")
plt.close(context)
IPython.display.Image(picture.getvalue())

# %% [markdown]
# Fractional offsets are where it goes beyond any fixed grid. Here every output's 3×3 grid is
# scaled by 2.5 and turned by 30°: `Δ[t] = 2.5·R·c_t − c_t` for the centred tap coordinates
# `c_t` (rows, columns). Hollow circles are the regular grid, filled ones the deformed samples;
# the cells they read are shaded by their bilinear weight.

# %%
angle = np.deg2rad(30.0)
turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
deformed = 2.5 * centred @ turn.T - centred
offsets = jnp.broadcast_to(jnp.asarray(deformed.reshape(-1), jnp.float32), (1, 24, 24, 18))
viz.deform_sampling(x.shape, k.shape, offsets, output_position=(9, 12), image=small, padding=1)

# %% [markdown]
# The offsets are differentiable: from a target made with a displacement of (1.3, −0.6) cells,
# gradient descent on one shared displacement, starting at zero, finds it again.

# %%
import optax  # noqa: E402

true_shift = jnp.asarray([1.3, -0.6], jnp.float32)


def shifted(shift):
    offsets = jnp.broadcast_to(jnp.tile(shift, 9), (1, 24, 24, 18))
    return convjax.deform_conv(x, k, offsets, padding=1)


target = shifted(true_shift)
loss = jax.jit(jax.value_and_grad(lambda shift: jnp.mean((shifted(shift) - target) ** 2)))
shift, optimiser = jnp.zeros(2, jnp.float32), optax.adam(0.05)
state = optimiser.init(shift)
for _ in range(150):
    value, grad = loss(shift)
    updates, state = optimiser.update(grad, state)
    shift = optax.apply_updates(shift, updates)
print(f"recovered displacement {np.round(np.asarray(shift), 3)} (true {np.asarray(true_shift)})")

# %% [markdown]
# ## Locally connected and masked
#
# A locally connected layer (Flax's `ConvLocal`) keeps the convolution's windows but gives every
# output position a kernel of its own: `kernel [*out_spatial, *window, C_in // groups, C_out]`.
# The same kernel at every position is the convolution; the price is a kernel per position.

# %%
image = jnp.asarray(rng.normal(size=(1, 8, 8, 3)), jnp.float32)
shared = jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.float32)
count = convjax.local_layer_count(image.shape, (3, 3), 4, padding="SAME")
everywhere = jnp.broadcast_to(shared, count.kernel_shape)
local = convjax.local_conv(image, everywhere, padding="SAME")
print(
    f"kernel {count.kernel_shape}: {count.params} weights against {shared.size} shared; "
    f"the same kernel everywhere is the conv, largest difference "
    f"{float(jnp.max(jnp.abs(local - convjax.conv(image, shared, padding='SAME')))):.1e}"
)
viz.local_kernels((6, 6), (3, 3), padding=1, strides=2)

# %% [markdown]
# A masked convolution multiplies the kernel by a fixed mask (Flax's `Conv(mask=...)`): PixelCNN's
# type-A mask keeps the taps before the centre in raster order, so an output never reads its own
# pixel or any after it. The modules take `mask=`; its taps get zero gradient.

# %%
mask = convjax.pixelcnn_mask((5, 5), 1, 1, mask_type="A")
print(mask[:, :, 0, 0].astype(int))
causal = jnp.asarray(rng.normal(size=(5, 5, 1, 1)) * mask, jnp.float32)
picture = jnp.asarray(rng.normal(size=(1, 8, 8, 1)), jnp.float32)
later = picture.at[0, 4, 5, 0].add(1.0)  # the pixel after (4, 4)
moved = convjax.conv(later, causal, padding="SAME") - convjax.conv(picture, causal, padding="SAME")
reached = [tuple(o) for o in np.argwhere(np.asarray(moved[0, ..., 0]) != 0).tolist()]
print(f"{len(reached)} outputs moved when pixel (4, 5) changed, every one after it:")
print("  ", all(o > (4, 5) for o in reached), reached)

# %% [markdown]
# ## Causal convolutions, streamed
#
# `padding="CAUSAL"` pads only the past: output `t` reads inputs up to `t`. A WaveNet-style stack
# of causal convs at rates 1, 2, 4, 8 sees 16 frames; run in streaming mode, one frame at a time
# under `lax.scan` with each layer remembering its last `(k − 1)·d` inputs, it gives the offline
# output exactly.

# %%
viz.animate((8, 1), (2, 1, 1), dilation=2, padding="CAUSAL")

# %%
from flax import nnx  # noqa: E402

stack = [
    convjax.nnx.Conv(2, 2, (2,), kernel_dilation=d, padding="CAUSAL", rngs=nnx.Rngs(d))
    for d in (1, 2, 4, 8)
]
print(
    "receptive field:",
    convjax.receptive_field(
        [convjax.Layer((2, 2, 2), dilation=d, padding="CAUSAL") for d in (1, 2, 4, 8)]
    ).size,
)
signal = jnp.asarray(rng.normal(size=(1, 64, 2)), jnp.float32)


def offline(x):
    for layer in stack:
        x = x + jnp.tanh(layer(x))
    return x


def one_frame(states, frame):
    x, new_states = frame[:, None], []
    for layer, state in zip(stack, states, strict=True):
        y, state = layer.stream(state, x)
        x = x + jnp.tanh(y)
        new_states.append(state)
    return new_states, x[:, 0]


states = [layer.init_stream(signal[:, :1]) for layer in stack]
_, frames = jax.lax.scan(one_frame, states, jnp.swapaxes(signal, 0, 1))
print("streamed vs offline, relative error:", rel(jnp.swapaxes(frames, 0, 1), offline(signal)))

# %% [markdown]
# ## Every formulation under `jit`, `vmap` and `grad`
#
# Kernel gradients of a squared-output loss, as relative errors against `lax` (their values are
# in the hundreds: an absolute difference would say nothing).

# %%
x = jnp.asarray(rng.normal(size=(2, 16, 16, 8)), jnp.float32)
dense = jnp.asarray(rng.normal(size=(3, 3, 8, 16)), jnp.float32)


def kernel_grad(impl):
    loss = lambda k: jnp.sum(convjax.conv(x, k, padding="SAME", impl=impl) ** 2)  # noqa: E731
    return jax.jit(jax.grad(loss))(dense)


g_lax = kernel_grad("lax")
print("largest |gradient entry|:", float(jnp.max(jnp.abs(g_lax))))
for impl in FORMULATIONS[1:]:
    print(f"kernel gradient, {impl} vs lax: relative error {rel(kernel_grad(impl), g_lax):.1e}")
batched = jax.vmap(lambda image: convjax.conv(image, dense, padding="SAME"))(x)
print("vmap over the batch, relative error:", rel(batched, convjax.conv(x, dense, padding="SAME")))
