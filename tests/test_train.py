"""The training run: the loss falls, and the lax and gather backends train the same model."""

import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from convjax.apps import cli, train

SMALL = dict(batch_size=8, size=16, width=8, blocks=1)


@pytest.mark.slow
def test_loss_falls_by_a_clear_margin(tmp_path):
    out = io.StringIO()
    result = train.train(steps=60, learning_rate=1e-2, out=out, save_to=tmp_path, **SMALL)
    assert result.losses.shape == (60,) and np.all(np.isfinite(result.losses))
    assert result.ratio < 0.5, result.losses
    # The trained model denoises: well below the loss of returning the noisy input.
    assert result.eval_loss < 0.5 * result.noisy_loss, (result.eval_loss, result.noisy_loss)
    text = out.getvalue()
    assert "[##############################] 60/60" in text
    assert "last/first" in text and "held-out batch" in text
    assert text.index("compiling") < text.index(" 6/60")  # said before the first step's wait
    # What --out writes reloads as the same model.
    assert {p.name for p in tmp_path.iterdir()} == {
        "params.npz",
        "config.json",
        "loss.png",
        "denoised.png",
    }
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["steps"] == 60 and config["learning_rate"] == 1e-2 and config["batch_size"]
    reloaded = train.load(tmp_path)
    images = train.make_batch(jax.random.key(5), 2, SMALL["size"])[0]
    apply = nnx.jit(lambda model, x: model(x))  # one compilation serves both (same graph)
    np.testing.assert_array_equal(apply(reloaded, images), apply(result.model, images))


def test_lax_and_gather_models_give_the_same_loss_and_gradients_float64():
    # One set of parameters (initialised as in test_loss_falls_by_a_clear_margin, then cast to
    # float64), two model graphs that differ only in their layers' impl.
    model = train.Denoiser(width=8, blocks=1, rngs=nnx.Rngs(0))
    state = jax.tree.map(lambda a: a.astype(jnp.float64), nnx.state(model))
    graphdefs = {
        impl: nnx.graphdef(
            nnx.eval_shape(
                lambda impl=impl: train.Denoiser(width=8, blocks=1, impl=impl, rngs=nnx.Rngs(0))
            )
        )
        for impl in ("lax", "gather")
    }
    assert graphdefs["lax"] != graphdefs["gather"]
    noisy, clean = train.make_batch(jax.random.key(0), 2, 8, dtype=jnp.float64)

    def value_and_grad(graphdef):
        f = lambda s: train.loss_fn(nnx.merge(graphdef, s), noisy, clean)  # noqa: E731
        return jax.jit(jax.value_and_grad(f))(state)

    lax_loss, lax_grads = value_and_grad(graphdefs["lax"])
    gather_loss, gather_grads = value_and_grad(graphdefs["gather"])
    assert lax_loss.dtype == jnp.float64
    with pytest.raises(ValueError, match=r"Denoiser: .*multiples of 4.*got shape \(1, 6, 8, 1\)"):
        model(jnp.ones((1, 6, 8, 1), jnp.float32))
    np.testing.assert_allclose(gather_loss, lax_loss, rtol=1e-12)
    flat_lax, flat_gather = nnx.to_flat_state(lax_grads), nnx.to_flat_state(gather_grads)
    assert [path for path, _ in flat_lax] == [path for path, _ in flat_gather]
    for (path, a), (_, b) in zip(flat_lax, flat_gather):
        assert np.abs(a[...]).max() > 0, path
        np.testing.assert_allclose(b[...], a[...], rtol=1e-10, atol=1e-14, err_msg=str(path))


def test_make_batch_is_deterministic_and_noisy():
    a = train.make_batch(jax.random.key(3), 4, 12, noise=0.5)
    b = train.make_batch(jax.random.key(3), 4, 12, noise=0.5)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    noisy, clean = a
    assert noisy.shape == clean.shape == (4, 12, 12, 1)
    assert 0.2 < float(jnp.mean((noisy - clean) ** 2)) < 0.3


def test_cli_train_with_gather(capsys):
    # The shapes of test_loss_falls_by_a_clear_margin, so the parameter initialisers are cached.
    argv = ["train", "--impl", "gather", "--steps", "2", "--batch-size", "8", "--size", "16"]
    assert cli.main([*argv, "--width", "8"]) == 0
    text = capsys.readouterr().out
    assert "impl=gather" in text and "2/2" in text and "last/first" in text


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(steps=0), r"train: steps must be >= 1, got 0"),
        (dict(size=10), r"train: size must be a positive multiple of 4 .* got 10"),
    ],
)
def test_train_rejects_bad_settings_before_any_work(options, match):
    with pytest.raises(ValueError, match=match):
        train.train(quiet=True, **options)
