"""``impl="autotune"``: the fastest formulation on this machine, timed once per convolution and
kept in memory and on disk; its results are the chosen formulation's, under every
transformation and in modules; ``enable()`` makes ``auto`` autotune."""

import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import convjax
from convjax._src.checks import as_array
from convjax._src.formulations.autotune import AutotuneBackend

X_SHAPE, K_SHAPE = (2, 9, 8, 4), (3, 3, 1, 8)
OPTIONS = dict(padding="SAME", groups=4)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVJAX_CACHE_DIR", str(tmp_path))
    return tmp_path / "autotune"


def operands(seed=0):
    rng = np.random.default_rng(seed)
    return as_array(rng.normal(size=X_SHAPE)), as_array(rng.normal(size=K_SHAPE))


def chosen(x_shape=X_SHAPE, kernel_shape=K_SHAPE, dtype="float64", **options):
    spec = convjax.make_spec("test", x_shape, kernel_shape, **(OPTIONS | options))
    return AutotuneBackend().choose(spec, x_shape, kernel_shape, dtype).name


def test_results_are_the_chosen_formulations_under_every_transformation(cache):
    x, k = operands()
    name = chosen()
    assert name in ("lax", "gather", "taps", "fft")
    for transform in (
        lambda f: f,
        jax.jit,
        lambda f: jax.grad(lambda x, k: jnp.sum(jnp.sin(f(x, k))), argnums=(0, 1)),
        lambda f: lambda x, k: jax.jvp(f, (x, k), (x, k)),
        lambda f: lambda x, k: jax.vmap(f, in_axes=(None, 0))(x, jnp.stack([k, 2 * k])),
    ):
        got = transform(lambda x, k: convjax.conv(x, k, impl="autotune", **OPTIONS))(x, k)
        want = transform(lambda x, k: convjax.conv(x, k, impl=name, **OPTIONS))(x, k)
        chex.assert_trees_all_equal(got, want)
    layer = convjax.nnx.DepthwiseConv(
        4, (3, 3), depth_multiplier=2, padding="SAME", impl="autotune", rngs=nnx.Rngs(0)
    )
    same = convjax.nnx.DepthwiseConv(
        4, (3, 3), depth_multiplier=2, padding="SAME", impl=name, rngs=nnx.Rngs(0)
    )
    np.testing.assert_array_equal(layer(x), same(x))
    summary = convjax.autotune.summary()
    assert "x (2, 9, 8, 4) kernel (3, 3, 1, 8) float64" in summary and "timed" in summary
    assert "padding ((1, 1), (1, 1)) dilation" in summary  # the convolution, its padding too
    records = [json.loads(p.read_text()) for p in cache.glob("*.json")]
    assert any(r["choice"] == name and set(r["timings_ms"]) >= {"lax", "taps"} for r in records)


def test_a_later_process_reads_the_choice_from_disk(cache):
    chosen((1, 12, 4), (3, 4, 4), groups=1, padding="VALID")
    script = (
        "import jax, jax.numpy as jnp, convjax\n"
        "jax.config.update('jax_enable_x64', True)\n"
        "convjax.conv(jnp.ones((1, 12, 4)), jnp.ones((3, 4, 4)), impl='autotune')\n"
        "print(convjax.autotune.summary())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=os.environ.copy()
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(cache;" in result.stdout, result.stdout


def test_concurrent_processes_leave_one_valid_file(cache):
    script = (
        "import jax.numpy as jnp, convjax\n"
        "convjax.conv(jnp.ones((1, 10, 3)), jnp.ones((2, 3, 5)), impl='autotune')\n"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script], env=os.environ.copy()) for _ in range(2)
    ]
    assert [p.wait() for p in processes] == [0, 0]
    files = list(cache.glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["choice"]
    assert not list(cache.glob("*.tmp"))


def test_enable_makes_auto_autotune():
    x, k = operands(1)
    before = convjax.autotune.summary()
    with convjax.autotune.enable():
        assert convjax.autotune.enabled()
        convjax.conv(x[:, :5], k, impl="auto", **OPTIONS)
    assert not convjax.autotune.enabled()
    assert convjax.autotune.summary() != before
    assert "x (2, 5, 8, 4)" in convjax.autotune.summary()


def test_a_transposed_conv_is_tuned_as_one():
    y = jnp.ones((2, 4, 4, 8))
    back = convjax.conv_transpose(y, jnp.ones((3, 3, 2, 8)), strides=2, impl="autotune")
    assert back.shape == (2, 9, 9, 2)
    assert "transposed x (2, 9, 9, 2) kernel (3, 3, 2, 8)" in convjax.autotune.summary()


def test_integer_convolutions_are_timed_without_gradients(cache):
    """Integers have no gradients: autotune times the convolution (or the transposed one) alone,
    and the result is exact, as every formulation's."""
    rng = np.random.default_rng(4)
    x = as_array(rng.integers(-9, 9, (1, 6, 6, 2)), jnp.int8)
    k = as_array(rng.integers(-9, 9, (3, 3, 2, 3)), jnp.int8)
    wide = dict(preferred_element_type=jnp.int32, padding=1)
    y = convjax.conv(x, k, impl="autotune", **wide)
    np.testing.assert_array_equal(y, convjax.conv(x, k, impl="lax", **wide))
    back = convjax.conv_transpose(y.astype(jnp.int8), k, impl="autotune", **wide)
    np.testing.assert_array_equal(back, convjax.conv_transpose(y.astype(jnp.int8), k, **wide))
    assert back.dtype == jnp.int32
    with convjax.autotune.enable():
        assert convjax.conv(x, k, padding=1).dtype == jnp.int8


@pytest.mark.parametrize(
    "tamper",
    [
        lambda record: record | {"choice": "fft"},  # fft refuses strides: not a candidate
        lambda record: [1, 2, 3],
        lambda record: record | {"timings_ms": "fast"},
        lambda record: record | {"timings_ms": {"taps": "1"}},
    ],
)
def test_a_cache_record_that_does_not_fit_the_case_is_timed_again(cache, monkeypatch, tamper):
    from convjax._src.formulations import autotune

    # Timing is not what this tests: a fixed result, so that no program compiles.
    monkeypatch.setattr(autotune, "_time", lambda *_: {"lax": 1.0, "gather": 3.0, "taps": 2.0})
    monkeypatch.setattr(autotune, "_choices", {})  # "timed" here, written to this cache
    first = chosen(strides=2)
    (path,) = cache.glob("*.json")
    path.write_text(json.dumps(tamper(json.loads(path.read_text()))))
    monkeypatch.setattr(autotune, "_choices", {})  # a new process, as far as memory goes
    again = chosen(strides=2)
    assert first == again == "lax"  # timed again, not the tampered record


def test_a_choice_timed_on_other_code_or_flags_is_timed_again(cache, monkeypatch):
    """The disk's choice holds for the code and XLA flags it was timed with: a formulation
    changed since (another convjax) or other flags time the convolution again."""
    from convjax._src.formulations import autotune

    assert autotune.code_fingerprint.__wrapped__() == autotune.code_fingerprint()  # stable
    timings = iter(
        [{"lax": 1.0, "taps": 2.0}, {"lax": 2.0, "taps": 1.0}, {"lax": 3.0, "taps": 1.0}]
    )
    monkeypatch.setattr(autotune, "_time", lambda *_: next(timings))
    monkeypatch.setattr(autotune, "_choices", {})
    assert chosen(strides=2) == "lax"
    monkeypatch.setattr(autotune, "_choices", {})
    assert chosen(strides=2) == "lax"  # the same code: read from the disk, not timed
    monkeypatch.setattr(autotune, "code_fingerprint", lambda: "edited")
    monkeypatch.setattr(autotune, "_choices", {})
    assert chosen(strides=2) == "taps"  # timed again
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    monkeypatch.setattr(autotune, "_choices", {})
    assert chosen(strides=2) == "taps" and next(timings, None) is None
    assert len(list(cache.glob("*.json"))) == 3


def test_switches_take_bools_only():
    with pytest.raises(TypeError, match=r"^autotune.enable: on must be a bool, got 'no'"):
        convjax.autotune.enable(on="no")
    with pytest.raises(TypeError, match=r"^AutotuneBackend: transposed must be a bool"):
        AutotuneBackend(transposed="yes")
