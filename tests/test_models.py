"""The reference CNNs of ``convjax.apps.models``: each architecture, built in convjax, Flax and
PyTorch from the same weights, has the same parameters, loss and gradients in every framework,
and trains.  Tiny sizes: the architectures take their sizes as fields."""

import functools
import io
import math

import jax
import numpy as np
import pytest

from convjax.apps import models

LIMIT = 3.5  # a model's gradient FLOPs over its forward's (a convolution's: about 2 + 1)

TINY = {
    "resnet18": models.ResNet(image=16, widths=(4, 8, 8, 16), batch=2, classes=3),
    "mobilenet_v2": models.MobileNetV2(
        image=16, stem=4, settings=((1, 4, 1, 1), (3, 8, 2, 2)), last=16, batch=2, classes=3
    ),
    "convnext": models.ConvNeXt(image=16, widths=(4, 8), depths=(1, 2), batch=2, classes=3),
    "resnext": models.ResNeXt(
        image=8, stem=8, stages=((32, 32, 1, 1), (64, 32, 1, 2)), batch=2, classes=3
    ),
    "unet": models.UNet(size=8, widths=(4, 8), batch=2, classes=3),
    "deeplab_aspp": models.DeepLabASPP(image=32, backbone=(4, 8), width=4, batch=2, classes=3),
    "tcn": models.TCN(length=32, width=4, dilations=(1, 2, 4), stacks=1, batch=2),
    "unet3d": models.UNet3D(size=4, widths=(2, 4), batch=2, classes=3),
}
assert set(TINY) == set(models.ARCHITECTURES)

# (architecture, framework) pairs compared with convjax; channels_last is PyTorch's 2-d layout.
PAIRS = [
    (name, framework)
    for name, arch in TINY.items()
    for framework in ("flax", "torch NCHW", "torch channels_last")
    if arch.ndim == 2 or framework != "torch channels_last"
]


def framework(name: str) -> models.Framework:
    """The framework called ``name``; a PyTorch one skips the test where torch is missing."""
    if name == "flax":
        return models.FLAX
    torch = pytest.importorskip("torch")
    return models.TorchFramework(torch, channels_last=name == "torch channels_last")


@functools.cache
def convjax_reference(name: str, dtype: str):
    """The convjax network's parameter count, loss and gradients (float64) on its batch."""
    arch, F = TINY[name], models.CONVJAX
    (network,) = models.instantiate(arch, [F], dtype=dtype)
    batch = F.batch(arch, *arch.data(), dtype)
    if dtype == "float64":
        return F.count(network), *F.loss_and_gradients(network, batch)
    return F.count(network), F.loss_value(network, batch), None


# The thorough profile's: test_same_loss_and_gradients_float64 checks the loss and gradients
# themselves, and `convjax bench --models` checks both before it times anything.
@pytest.mark.deep
@pytest.mark.parametrize(("name", "other"), PAIRS)
def test_same_parameter_count_and_step0_loss_float32(name, other):
    arch, F = TINY[name], framework(other)
    (network,) = models.instantiate(arch, [F])
    count, loss, _ = convjax_reference(name, "float32")
    assert count == F.count(network) == arch.parameters
    theirs = F.loss_value(network, F.batch(arch, *arch.data(), "float32"))
    assert math.isfinite(loss) and loss > 0
    assert abs(theirs - loss) <= 1e-5 * loss, (loss, theirs)


@pytest.mark.parametrize("name", ["unet3d", "resnext", "tcn"])
@pytest.mark.parametrize("other", ["flax", "torch NCHW"])
def test_same_loss_and_gradients_float64(name, other):
    arch, F = TINY[name], framework(other)
    (network,) = models.instantiate(arch, [F], dtype="float64")
    _, loss, grads = convjax_reference(name, "float64")
    theirs, their_grads = F.loss_and_gradients(network, F.batch(arch, *arch.data(), "float64"))
    np.testing.assert_allclose(theirs, loss, rtol=1e-12)
    assert grads.keys() == their_grads.keys() == arch.layers().keys()
    for layer, mine in grads.items():
        assert np.any(mine["kernel"]), layer  # the comparison is not of zeros
        for key, grad in mine.items():
            np.testing.assert_allclose(
                their_grads[layer][key], grad, rtol=1e-9, atol=1e-12, err_msg=f"{layer} {key}"
            )


@functools.cache
def convjax_trajectory(name: str, steps: int = 3) -> list[float]:
    """The losses of the convjax network's first training steps, float64."""
    return trajectory(TINY[name], models.CONVJAX, steps)


def trajectory(arch: models.Architecture, F: models.Framework, steps: int) -> list[float]:
    (network,) = models.instantiate(arch, [F], dtype="float64")
    step = F.step(network, F.batch(arch, *arch.data(), "float64"), learning_rate=0.05)
    return [float(step.run()) for _ in range(steps)]


@pytest.mark.parametrize("other", ["flax", "torch NCHW"])
def test_sgd_with_momentum_takes_the_same_steps_in_every_framework_float64(other):
    losses = trajectory(TINY["tcn"], framework(other), 3)
    assert all(math.isfinite(v) for v in losses) and losses[2] != losses[0]
    np.testing.assert_allclose(losses, convjax_trajectory("tcn"), rtol=1e-10)


def test_kernel_layouts_round_trip():
    rng = np.random.default_rng(0)
    torch_shapes = {  # PyTorch's weights: window axes last, then the channel axes swapped
        models.Conv(6, 4, (3, 2), groups=2): (4, 3, 3, 2),
        models.ConvTranspose(6, 4, (2, 3, 2), stride=2): (6, 4, 2, 3, 2),
        models.Linear(6, 4): (4, 6),
    }
    for layer, torch_shape in torch_shapes.items():
        kernel = rng.standard_normal(layer.kernel_shape)
        flax = models.FLAX.kernel(layer, kernel)
        np.testing.assert_array_equal(models.FLAX.kernel(layer, flax), kernel)
        weight = models.TorchFramework.kernel(layer, kernel)
        assert weight.shape == torch_shape
        np.testing.assert_array_equal(models.TorchFramework.canonical_kernel(layer, weight), kernel)


def test_run_times_a_training_step_of_every_framework_and_tabulates_it():
    try:
        import torch
    except ImportError:
        torch = None
    arch = TINY["unet"]
    rows = models.run([arch], torch=torch, rounds=2, out=io.StringIO())
    (row,) = rows
    names = {"auto", "flax"} | ({"torch NCHW", "torch channels_last"} if torch else set())
    assert row["contenders"].keys() == row["loss0"].keys() == names
    assert row["model"] == "unet" and row["mode"] == "step" and row["parameters"] == arch.parameters
    step0 = list(row["loss0"].values())
    assert all(math.isfinite(v) for v in step0)
    np.testing.assert_allclose(step0, step0[0], rtol=1e-5)
    for name in ("auto", "flax"):
        assert row["memory_bytes"][name] > 0 and row["flops"][name] > 0
        assert row["contenders"][name]["min_ms"] <= row["contenders"][name]["median_ms"]
    assert row["speedup_over_flax"].keys() == {"auto"}
    text = models.table(rows)
    assert text.splitlines()[2].startswith("unet ") and "0.00M" in text and arch.title in text
    # The contenders chosen as `convjax bench --models --formulations taps --no-flax` does.
    (row,) = models.run([arch], rounds=1, out=io.StringIO(), formulations=["taps"], flax=False)
    assert row["contenders"].keys() == {"taps"} and not row["speedup_over_flax"]
    assert "flax" not in models.table([row])


def test_sizes_and_names():
    for name, cls in models.ARCHITECTURES.items():
        small, large = models.architecture(name), models.architecture(name, accelerator=True)
        assert type(small) is cls and small.batch == 16
        assert large.parameters > small.parameters
        assert small.title.startswith(f"{name}: ")
    with pytest.raises(ValueError, match=r"models: no architecture is called 'vgg'; .* resnet18"):
        models.architecture("vgg")


def gradient_over_forward(arch: models.Architecture, F: models.Framework) -> float:
    """XLA's FLOPs of the loss's gradient over the loss's, compiled (nothing runs)."""
    (network,) = models.instantiate(arch, [F])
    loss, params = F._loss_of_params(network)
    batch = F.batch(arch, *arch.data(), "float32")
    flops = []
    for fn in (jax.grad(loss), loss):
        cost = jax.jit(fn).lower(params, *batch).compile().cost_analysis()
        flops.append((cost[0] if isinstance(cost, list | tuple) else cost)["flops"])
    return flops[0] / flops[1]


# By default one of the architectures whose layers recomputed their forwards before (the UNet:
# strided and transposed; tests/test_costs checks every formulation and variant layer by
# layer), every architecture in the thorough profile: compiling them is a tenth of the run.
RECOMPUTATION_CHECKED = [
    pytest.param(name, marks=() if name == "unet" else pytest.mark.deep)
    for name in models.ARCHITECTURES
]


@pytest.mark.slow
@pytest.mark.parametrize("name", RECOMPUTATION_CHECKED)
def test_the_gradient_of_a_model_does_not_recompute_its_forward(name):
    """The benchmark's sizes, on the default path: a convolution's two gradients cost about
    twice its forward, so a model's gradient program about 3× its loss; a forward tap sum fused
    into each gradient reduction would multiply that."""
    assert gradient_over_forward(models.architecture(name), models.CONVJAX) <= LIMIT


def peak_bytes(arch: models.Architecture, F: models.Framework) -> int:
    """The peak bytes of a compiled training step (XLA's ``memory_analysis``; nothing runs)."""
    (network,) = models.instantiate(arch, [F])
    return F.step(network, F.batch(arch, *arch.data(), "float32")).memory_bytes


@pytest.mark.slow
def test_a_3d_unet_step_takes_at_most_a_quarter_more_memory_than_flax():
    """The benchmark's 3-D UNet, whose convolutions run on ``planes``: its stacked slabs,
    made in the forward pass and kept for the kernel gradients, took 1.8× Flax's peak bytes."""
    arch = models.architecture("unet3d")
    assert peak_bytes(arch, models.CONVJAX) <= 1.25 * peak_bytes(arch, models.FLAX)


def test_the_model_measure_sees_wasted_work():
    """Flax's depthwise kernel gradient is a dense C × C convolution (C times the work): the
    same measure flags it."""
    assert gradient_over_forward(models.architecture("mobilenet_v2"), models.FLAX) > 3 * LIMIT
