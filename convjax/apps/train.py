"""``convjax train``: a small convolutional denoiser trained with optax, on data made in code.

The model is an encoder–decoder built from every convjax layer kind: a strided conv and a dilated
(atrous) conv on the way down, depthwise-separable residual blocks at the bottom, transposed
convs on the way up, and a skip connection.  It learns to remove Gaussian noise from synthetic
images (random blobs plus random stripes), predicting the noise and subtracting it.  Every layer
takes ``impl``, so the same run can be made on any formulation (``"auto"`` by default).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import sys
import time
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from convjax._src.checks import check_real
from convjax._src.modules import nnx as layers


def make_batch(
    key: jax.Array,
    batch_size: int = 16,
    size: int = 32,
    *,
    noise: float = 0.3,
    dtype: Any = jnp.float32,
) -> tuple[jax.Array, jax.Array]:
    """A synthetic denoising batch: ``(noisy, clean)``, each ``[batch_size, size, size, 1]``.

    A clean image is four Gaussian blobs of random place, width and sign plus a sinusoidal
    grating of random frequency, angle and phase; the noisy one adds ``noise`` times standard
    Gaussian noise.

    >>> import jax
    >>> noisy, clean = make_batch(jax.random.key(0), 2, 8)
    >>> noisy.shape, clean.shape, clean.dtype.name
    ((2, 8, 8, 1), (2, 8, 8, 1), 'float32')
    """
    keys = jax.random.split(key, 8)
    grid = jnp.linspace(0.0, 1.0, size, dtype=dtype)
    yy, xx = grid.reshape(1, 1, size, 1), grid.reshape(1, 1, 1, size)

    def uniform(k, lo, hi, shape=(batch_size, 1, 1, 1)):
        return jax.random.uniform(k, shape, dtype, lo, hi)

    blob = (batch_size, 4, 1, 1)  # four blobs per image
    cy, cx = uniform(keys[0], 0, 1, blob), uniform(keys[1], 0, 1, blob)
    width, amplitude = uniform(keys[2], 0.05, 0.25, blob), uniform(keys[3], -1, 1, blob)
    blobs = amplitude * jnp.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width**2))
    frequency, angle = uniform(keys[4], 1, 4), uniform(keys[5], 0, 2 * math.pi)
    phase = uniform(keys[6], 0, 2 * math.pi)
    stripes = 0.5 * jnp.sin(
        2 * math.pi * frequency * (jnp.cos(angle) * xx + jnp.sin(angle) * yy) + phase
    )
    clean = (jnp.sum(blobs, axis=1) + stripes[:, 0])[..., None]
    noisy = clean + noise * jax.random.normal(keys[7], clean.shape, dtype)
    return noisy, clean


class Denoiser(nnx.Module):
    """Encoder–decoder denoiser for ``[*batch, H, W, channels]`` images, ``H, W`` multiples of 4.

    ``H×W`` → stem conv → strided conv (``H/2``) → strided conv (``H/4``) → dilated conv →
    ``blocks`` residual depthwise-separable convs → transposed conv (``H/2``, plus the skip from
    the way down) → transposed conv (``H``) → head conv; the output is the input minus the
    predicted noise.

    Args:
      channels: image channels.
      width: channels after the stem; doubled at each downsampling.
      blocks: depthwise-separable residual blocks at the bottom.
      impl: every layer's formulation, ``"auto"`` (default) or a name from
        :func:`convjax.formulations`.
      param_dtype: parameter dtype; the computation runs in the promotion of it and the input's.
      rngs: random streams for the initial parameters.

    >>> import jax
    >>> from flax import nnx
    >>> model = nnx.eval_shape(lambda: Denoiser(rngs=nnx.Rngs(0)))  # shapes only, no compute
    >>> sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    110849
    """

    def __init__(
        self,
        channels: int = 1,
        width: int = 16,
        blocks: int = 2,
        *,
        impl: Any = "auto",
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        w = width
        options = dict(impl=impl, param_dtype=param_dtype, rngs=rngs)
        self.stem = layers.Conv(channels, w, (3, 3), padding="SAME", **options)
        self.down1 = layers.Conv(w, 2 * w, (3, 3), strides=2, padding="SAME", **options)
        self.down2 = layers.Conv(2 * w, 4 * w, (3, 3), strides=2, padding="SAME", **options)
        self.context = layers.Conv(
            4 * w, 4 * w, (3, 3), padding="SAME", kernel_dilation=2, **options
        )
        self.blocks = nnx.List(
            [
                layers.DepthwiseSeparableConv(4 * w, 4 * w, (3, 3), padding="SAME", **options)
                for _ in range(blocks)
            ]
        )
        # kernel 4, stride 2, padding 1: 2 (i − 1) + 4 − 2 = 2i, exactly doubling.
        self.up1 = layers.ConvTranspose(4 * w, 2 * w, (4, 4), strides=2, padding=1, **options)
        self.up2 = layers.ConvTranspose(2 * w, w, (4, 4), strides=2, padding=1, **options)
        self.head = layers.Conv(w, channels, (3, 3), padding="SAME", **options)

    def __call__(self, noisy: jax.Array) -> jax.Array:
        """``noisy: [*batch, H, W, channels]`` → the denoised images, same shape."""
        if noisy.ndim < 3 or noisy.shape[-3] % 4 or noisy.shape[-2] % 4:
            raise ValueError(
                f"Denoiser: the input must be [*batch, H, W, channels] with H and W multiples "
                f"of 4 (two stride-2 levels), got shape {tuple(noisy.shape)}."
            )
        return denoise(self, noisy, jax.nn.gelu)


def denoise(model: Any, noisy: Any, act: Any) -> Any:
    """The denoiser's forward pass over ``model``'s layers (``stem``, ``down1``, ``down2``,
    ``context``, ``blocks``, ``up1``, ``up2``, ``head``), whichever library they come from:
    :class:`Denoiser` and its Flax and PyTorch twins in ``convjax bench`` share it."""
    h = act(model.stem(noisy))
    skip = act(model.down1(h))
    h = act(model.context(act(model.down2(skip))))
    for block in model.blocks:
        h = h + act(block(h))
    h = act(model.up1(h)) + skip
    h = act(model.up2(h))
    return noisy - model.head(h)


def loss_fn(model: Any, noisy: jax.Array, clean: jax.Array) -> jax.Array:
    """Mean squared error of the denoised images; ``model`` is any callable.

    >>> import jax
    >>> noisy, clean = make_batch(jax.random.key(0), 2, 8, noise=0.3)
    >>> float(loss_fn(lambda x: x, clean, clean))  # a perfect denoiser
    0.0
    >>> 0.05 < float(loss_fn(lambda x: x, noisy, clean)) < 0.15  # none: about noise² = 0.09
    True
    """
    return jnp.mean((model(noisy) - clean) ** 2)


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
      losses: the training loss at every step, before that step's update.
      seconds: wall time of the whole run, compilation included.
      compile_seconds: wall time of the first step (mostly compilation).
      eval_loss: the trained model's loss on a held-out batch.
      noisy_loss: that batch's loss before denoising (the noise variance).
      model: the trained model.
    """

    losses: np.ndarray
    seconds: float
    compile_seconds: float
    eval_loss: float
    noisy_loss: float
    model: Denoiser

    @property
    def first(self) -> float:
        """The loss of the initial model (step 1)."""
        return float(self.losses[0])

    @property
    def last(self) -> float:
        """The mean loss of the last 10 steps."""
        return float(np.mean(self.losses[-10:]))

    @property
    def ratio(self) -> float:
        """``last / first``."""
        return self.last / self.first


def progress_bar(step: int, total: int, loss: float, seconds: float, width: int = 30) -> str:
    """One line of the text progress bar.

    >>> progress_bar(15, 60, 0.0123, 4.0)
    '[#######.......................] 15/60  loss 0.01230  4.0s'
    """
    filled = width * step // total
    digits = len(str(total))
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {step:>{digits}}/{total}  loss {loss:.5f}  "
        f"{seconds:.1f}s"
    )


def train(
    *,
    steps: int = 400,
    batch_size: int = 16,
    size: int = 32,
    width: int = 16,
    blocks: int = 2,
    learning_rate: float = 3e-3,
    noise: float = 0.3,
    impl: Any = "auto",
    seed: int = 0,
    out: TextIO | None = None,
    quiet: bool = False,
    save_to: str | pathlib.Path | None = None,
) -> TrainResult:
    """Train a :class:`Denoiser` with adam on fresh synthetic batches; print progress.

    Each step draws a new batch inside the jitted step (no data loader), computes the loss and
    its gradient, and applies an adam update with a cosine-decayed learning rate.

    Args:
      steps: optimisation steps.
      batch_size: images per step.
      size: image height and width (a multiple of 4).
      width: the model's base channel count.
      blocks: depthwise-separable blocks at the bottom.
      learning_rate: adam's peak learning rate.
      noise: noise standard deviation.
      impl: every layer's formulation, ``"auto"`` (default) or a name from
        :func:`convjax.formulations`.
      seed: seeds the parameters and the data.
      out: where the progress bar and summary go (default ``sys.stdout``).
      quiet: print nothing.
      save_to: a directory to write the run to (see :func:`save`); :func:`load` reads it back.

    Returns:
      A :class:`TrainResult`.

    Compiling the initialisers and the step takes seconds, so the doc tests skip this example;
    ``tests/test_train.py`` runs the same calls.

    >>> result = train(steps=2, batch_size=1, size=8, width=2, quiet=True)  # doctest: +SKIP
    >>> result.losses.shape  # doctest: +SKIP
    (2,)
    """
    for name, value in (("steps", steps), ("batch_size", batch_size), ("width", width)):
        if value < 1:
            raise ValueError(f"train: {name} must be >= 1, got {value}.")
    if size < 4 or size % 4:
        raise ValueError(
            f"train: size must be a positive multiple of 4 (two stride-2 levels), got {size}."
        )
    # a nan, infinite or non-positive rate trains without complaint to nan or overflow
    if check_real("train", "learning_rate", learning_rate) == 0:
        raise ValueError("train: learning_rate must be > 0, got 0.")
    check_real("train", "noise", noise)
    out = None if quiet else (sys.stdout if out is None else out)
    if out is not None:
        print(
            f"convjax train: impl={impl}, {steps} steps of {batch_size} {size}x{size} images, "
            f"noise {noise}, adam lr {learning_rate} (jax {jax.__version__}, "
            f"{jax.default_backend()})",
            file=out,
        )
    start = time.perf_counter()
    model = Denoiser(1, width, blocks, impl=impl, rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(model)
    schedule = optax.cosine_decay_schedule(learning_rate, steps, alpha=0.05)
    optimizer = optax.adam(schedule)
    opt_state = optimizer.init(params)
    data_key, eval_key = jax.random.split(jax.random.key(seed + 1))

    @jax.jit
    def train_step(params, opt_state, step):
        noisy, clean = make_batch(jax.random.fold_in(data_key, step), batch_size, size, noise=noise)
        loss, grads = jax.value_and_grad(lambda p: loss_fn(nnx.merge(graphdef, p), noisy, clean))(
            params
        )
        # optax relies on standard promotion (python floats against int32 step counts); keep
        # it there even when the caller runs with strict promotion, as convjax's tests do.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
        return params, opt_state, loss

    # On a terminal the bar redraws in place (50 updates); elsewhere it prints 10 lines.
    live = out is not None and out.isatty()
    if out is not None:
        print("compiling the training step (the first step waits for it) ...", file=out, flush=True)
    updates = 50 if live else 10
    losses = np.zeros(steps)
    compile_seconds = 0.0
    shown = 0
    for step in range(steps):
        params, opt_state, loss = train_step(params, opt_state, step)
        losses[step] = float(loss)
        if step == 0:
            compile_seconds = time.perf_counter() - start
        if out is not None and updates * (step + 1) // steps > shown:
            shown = updates * (step + 1) // steps
            line = progress_bar(step + 1, steps, losses[step], time.perf_counter() - start)
            print("\r" + line if live else line, end="" if live else "\n", file=out, flush=True)
    model = nnx.merge(graphdef, params)
    noisy, clean = make_batch(eval_key, 64, size, noise=noise)
    eval_loss = float(jax.jit(loss_fn)(model, noisy, clean))
    noisy_loss = float(jnp.mean((noisy - clean) ** 2))
    result = TrainResult(
        losses, time.perf_counter() - start, compile_seconds, eval_loss, noisy_loss, model
    )
    if out is not None:
        print("\n" + summary(result) if live else summary(result), file=out)
    if save_to is not None:
        config = dict(width=width, blocks=blocks, size=size, noise=noise, impl=impl, seed=seed)
        config |= dict(steps=steps, batch_size=batch_size, learning_rate=learning_rate)
        written = save(result, save_to, config)
        if out is not None:
            print(f"wrote {', '.join(str(p) for p in written)}", file=out)
    return result


def _flat(state) -> dict[str, jax.Array]:
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    return {jax.tree_util.keystr(path): leaf for path, leaf in leaves}


def save(result: TrainResult, directory: str | pathlib.Path, config: dict[str, Any]):
    """Write ``params.npz`` (the trained parameters by their state path), ``config.json`` (what
    :func:`load` needs to rebuild the model, and the run's settings), ``loss.png`` (the loss
    curve) and ``denoised.png`` (noisy, denoised and clean held-out images) to ``directory``;
    return the paths.  The PNGs need matplotlib (``convjax[viz]``); without it only the first
    two are written."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    params = {k: np.asarray(v) for k, v in _flat(nnx.state(result.model, nnx.Param)).items()}
    np.savez(directory / "params.npz", **params)
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    written = [directory / "params.npz", directory / "config.json"]
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return written
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    steps = np.arange(1, result.losses.size + 1)
    ax.semilogy(steps, result.losses, lw=1, label="training batch")
    ax.axhline(result.noisy_loss, color="gray", ls="--", lw=1, label="noisy input (held out)")
    ax.axhline(result.eval_loss, color="black", lw=1, label="denoised (held out)")
    ax.set_xlabel("step")
    ax.set_ylabel("mean squared error")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(directory / "loss.png", dpi=100)
    noisy, clean = make_batch(
        jax.random.key(config["seed"] + 2), 4, config["size"], noise=config["noise"]
    )
    denoised = nnx.jit(lambda model, x: model(x))(result.model, noisy)
    fig = Figure(figsize=(6, 4.5))
    rows = (("noisy", noisy), ("denoised", denoised), ("clean", clean))
    for r, (name, images) in enumerate(rows):
        for c in range(4):
            ax = fig.add_subplot(3, 4, 4 * r + c + 1)
            ax.imshow(np.asarray(images[c, ..., 0]), cmap="gray", vmin=-1.5, vmax=1.5)
            ax.set_axis_off()
            if c == 0:
                ax.set_title(name, fontsize=9, loc="left")
    fig.tight_layout()
    fig.savefig(directory / "denoised.png", dpi=100)
    return [*written, directory / "loss.png", directory / "denoised.png"]


def load(directory: str | pathlib.Path, impl: Any = None) -> Denoiser:
    """The model a :func:`train` run wrote to ``directory`` (``impl``: override the formulation
    it was trained with)."""
    directory = pathlib.Path(directory)
    config = json.loads((directory / "config.json").read_text())
    model = Denoiser(
        1, config["width"], config["blocks"], impl=impl or config["impl"], rngs=nnx.Rngs(0)
    )
    saved = np.load(directory / "params.npz")
    state = nnx.state(model, nnx.Param)
    flat = _flat(state)
    missing, unexpected = set(flat) - set(saved.files), set(saved.files) - set(flat)
    if missing or unexpected:
        raise ValueError(
            f"load: {directory / 'params.npz'} does not hold this model's parameters: missing "
            f"{sorted(missing)}, unexpected {sorted(unexpected)}."
        )
    paths = jax.tree_util.tree_flatten_with_path(state)
    leaves = [jnp.asarray(saved[jax.tree_util.keystr(path)]) for path, _ in paths[0]]
    nnx.update(model, jax.tree_util.tree_unflatten(paths[1], leaves))
    return model


def summary(result: TrainResult) -> str:
    """The loss curve in a few lines: first and last loss, their ratio, the curve in tenths.

    >>> r = TrainResult(np.linspace(1.0, 0.1, 20), 1.0, 0.5, 0.1, 0.09, None)
    >>> print(summary(r))
    loss: first 1.00000  last (mean of last 10) 0.31316  last/first 0.313
    curve (mean of each tenth): 0.976 0.882 0.787 0.692 0.597 0.503 0.408 0.313 0.218 0.124
    held-out batch: denoised 0.10000  noisy input 0.09000  (ratio 1.111)
    20 steps in 1.0s (first step, with compilation, 0.5s)
    """
    tenths = [float(np.mean(part)) for part in np.array_split(result.losses, 10) if part.size]
    return "\n".join(
        [
            f"loss: first {result.first:.5f}  last (mean of last 10) {result.last:.5f}  "
            f"last/first {result.ratio:.3f}",
            "curve (mean of each tenth): " + " ".join(f"{v:.3f}" for v in tenths),
            f"held-out batch: denoised {result.eval_loss:.5f}  noisy input "
            f"{result.noisy_loss:.5f}  (ratio {result.eval_loss / result.noisy_loss:.3f})",
            f"{result.losses.size} steps in {result.seconds:.1f}s (first step, with "
            f"compilation, {result.compile_seconds:.1f}s)",
        ]
    )
