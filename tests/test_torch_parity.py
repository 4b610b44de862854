"""PyTorch parity: a torch layer and the convjax module loaded from its weights agree on outputs
and on input, weight and bias gradients (float32), for random Conv and ConvTranspose configs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import IMPLS, assert_close
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import convjax
from convjax import from_torch
from convjax._src.checks import as_array

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

TORCH_MODES = ("zeros", "reflect", "replicate", "circular")


def torch_class(kind, ndim):
    return getattr(torch.nn, f"{kind}{ndim}d")


def to_numpy_state(layer):
    return {k: v.detach().numpy() for k, v in layer.state_dict().items()}


def channels_last(a):
    return np.moveaxis(np.asarray(a), 1, -1)


def channels_first(a):
    return np.moveaxis(np.asarray(a), -1, 1)


def torch_run(layer, x, cotangent):
    """Output and gradients (input, weight, bias) of a torch layer, NC* layout."""
    xt = torch.tensor(x, requires_grad=True)
    y = layer(xt)
    y.backward(torch.tensor(cotangent))
    bias = None if layer.bias is None else layer.bias.grad.numpy()
    return y.detach().numpy(), xt.grad.numpy(), layer.weight.grad.numpy(), bias


def jax_run(module, x, cotangent):
    """Output and gradients (input, parameters) of a convjax module, channels last."""
    graphdef, state = nnx.split(module)

    @jax.jit
    def run(state, x, cotangent):
        y, vjp = jax.vjp(lambda s, x: nnx.merge(graphdef, s)(x), state, x)
        state_grad, x_grad = vjp(cotangent)
        return y, x_grad, nnx.to_pure_dict(state_grad)

    return run(state, x, cotangent)


def check_parity(torch_layer, module, x, *, transpose):
    """Compare outputs and all gradients, converting layouts and weight orders."""
    rng = np.random.default_rng(0)
    y_t = torch_layer(torch.tensor(x)).detach().numpy()
    cotangent = rng.standard_normal(y_t.shape).astype(np.float32)
    y_t, x_grad_t, w_grad_t, b_grad_t = torch_run(torch_layer, x, cotangent)
    y, x_grad, grads = jax_run(module, channels_last(x), channels_last(cotangent))
    assert y.dtype == jnp.float32
    weight = torch_layer.weight
    window = math.prod(weight.shape[2:])
    fan = window * max(weight.shape[0], weight.shape[1] * torch_layer.groups)
    assert_close(channels_first(y), y_t, np.float32, fan)
    assert_close(channels_first(x_grad), x_grad_t, np.float32, fan)
    convert = from_torch.conv_transpose_kernel if transpose else from_torch.conv_kernel
    terms = math.prod(y_t.shape) // y_t.shape[1] * window  # a weight's gradient sums these
    assert_close(grads["kernel"], convert(w_grad_t), np.float32, terms)
    if b_grad_t is not None:
        assert_close(grads["bias"], b_grad_t, np.float32, terms)
    else:
        assert "bias" not in grads


@st.composite
def conv_configs(draw):
    ndim = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    window = tuple(draw(st.integers(1, 4 if ndim < 3 else 3)) for _ in range(ndim))
    strides = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(ndim))
    mode = draw(st.sampled_from(TORCH_MODES))
    if all(s == 1 for s in strides) and draw(st.booleans()):
        padding = draw(st.sampled_from(["same", "valid"]))
        pads = [(k - 1) * d for k, d in zip(window, dilation)] if padding == "same" else [0] * ndim
    else:
        padding = tuple(draw(st.integers(0, 2)) for _ in range(ndim))
        pads = list(padding)
    spans = [(k - 1) * d + 1 for k, d in zip(window, dilation)]
    sizes = tuple(
        max(span, pad + 1) + draw(st.integers(0, 4 if ndim < 3 else 2))
        for span, pad in zip(spans, pads)
    )
    return dict(
        ndim=ndim,
        in_channels=groups * draw(st.integers(1, 2)),
        out_channels=groups * draw(st.integers(1, 3)),
        kernel_size=window,
        stride=strides,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=draw(st.booleans()),
        padding_mode=mode,
        batch=draw(st.integers(1, 2)),
        sizes=sizes,
    )


@st.composite
def conv_transpose_configs(draw):
    ndim = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    window = tuple(draw(st.integers(1, 4 if ndim < 3 else 3)) for _ in range(ndim))
    strides = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(ndim))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(ndim))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(strides, dilation))
    sizes = tuple(draw(st.integers(1, 5 if ndim < 3 else 3)) for _ in range(ndim))
    out = [
        (i - 1) * s - 2 * p + d * (k - 1) + a + 1
        for i, s, p, d, k, a in zip(sizes, strides, padding, dilation, window, output_padding)
    ]
    assume(all(o >= 1 for o in out))
    return dict(
        ndim=ndim,
        in_channels=groups * draw(st.integers(1, 2)),
        out_channels=groups * draw(st.integers(1, 3)),
        kernel_size=window,
        stride=strides,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        groups=groups,
        bias=draw(st.booleans()),
        batch=draw(st.integers(1, 2)),
        sizes=sizes,
    )


def torch_layer(kind, config, seed=0):
    torch.manual_seed(seed)
    options = {k: v for k, v in config.items() if k not in ("ndim", "batch", "sizes")}
    return torch_class(kind, config["ndim"])(**options)


def torch_input(config, seed=1):
    shape = (config["batch"], config["in_channels"], *config["sizes"])
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def convjax_conv(config, state_dict, impl):
    module = convjax.nnx.Conv(
        config["in_channels"],
        config["out_channels"],
        config["kernel_size"],
        strides=config["stride"],
        padding=from_torch.padding(config["padding"]),
        kernel_dilation=config["dilation"],
        feature_group_count=config["groups"],
        padding_mode=from_torch.padding_mode(config["padding_mode"]),
        use_bias=config["bias"],
        impl=impl,
        rngs=nnx.Rngs(0),
    )
    from_torch.load(module, from_torch.conv_params(state_dict))
    return module


def convjax_conv_transpose(config, state_dict, impl):
    module = convjax.nnx.ConvTranspose(
        config["in_channels"],
        config["out_channels"],
        config["kernel_size"],
        strides=config["stride"],
        padding=from_torch.padding(config["padding"]),
        output_padding=config["output_padding"],
        kernel_dilation=config["dilation"],
        feature_group_count=config["groups"],
        use_bias=config["bias"],
        impl=impl,
        rngs=nnx.Rngs(0),
    )
    from_torch.load(module, from_torch.conv_transpose_params(state_dict))
    return module


@settings(max_examples=12)
@given(config=conv_configs())
def test_random_conv_matches_torch(config):
    layer = torch_layer("Conv", config)
    for impl in IMPLS:
        module = convjax_conv(config, to_numpy_state(layer), impl)
        layer.zero_grad()
        check_parity(layer, module, torch_input(config), transpose=False)


@settings(max_examples=12)
@given(config=conv_transpose_configs())
def test_random_conv_transpose_matches_torch(config):
    layer = torch_layer("ConvTranspose", config)
    for impl in IMPLS:
        module = convjax_conv_transpose(config, to_numpy_state(layer), impl)
        layer.zero_grad()
        check_parity(layer, module, torch_input(config), transpose=True)


CONV_CASES = [
    # Every padding mode PyTorch has, with groups, strides and dilation.
    dict(kernel_size=(3, 3), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2, mode=mode)
    for mode in TORCH_MODES
] + [
    dict(kernel_size=(4, 2), stride=1, padding="same", dilation=(2, 1), groups=1, mode="reflect"),
    dict(kernel_size=(3, 3), stride=1, padding="valid", dilation=1, groups=4, mode="zeros"),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c['mode']}-p{c['padding']}")
def test_conv2d_cases_match_torch(case):
    config = dict(
        ndim=2,
        in_channels=4,
        out_channels=8,
        kernel_size=case["kernel_size"],
        stride=case["stride"],
        padding=case["padding"],
        dilation=case["dilation"],
        groups=case["groups"],
        bias=True,
        padding_mode=case["mode"],
        batch=2,
        sizes=(9, 8),
    )
    layer = torch_layer("Conv", config)
    layer.zero_grad()
    check_parity(
        layer,
        convjax_conv(config, to_numpy_state(layer), "lax"),
        torch_input(config),
        transpose=False,
    )


@pytest.mark.parametrize(
    "stride, padding, output_padding, dilation, groups",
    [(2, 1, 1, 1, 2), (3, (0, 2), (2, 1), 1, 1), (2, 1, (1, 0), 2, 4), (1, 0, 1, 2, 1)],
)
def test_conv_transpose2d_output_padding_groups_dilation_match_torch(
    stride, padding, output_padding, dilation, groups
):
    config = dict(
        ndim=2,
        in_channels=4,
        out_channels=8,
        kernel_size=(3, 4),
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        groups=groups,
        bias=True,
        batch=2,
        sizes=(4, 5),
    )
    layer = torch_layer("ConvTranspose", config)
    for impl in IMPLS:
        layer.zero_grad()
        module = convjax_conv_transpose(config, to_numpy_state(layer), impl)
        check_parity(layer, module, torch_input(config), transpose=True)


def test_conv_transpose_output_shape_matches_torch_output_size():
    layer = torch.nn.ConvTranspose2d(3, 5, 3, stride=2, padding=1)
    x = torch_input(dict(batch=1, in_channels=3, sizes=(4, 4)))
    want = layer(torch.tensor(x), output_size=(8, 8)).detach().numpy()
    module = convjax.nnx.ConvTranspose(
        3, 5, (3, 3), strides=2, padding=1, output_shape=(8, 8), rngs=nnx.Rngs(0)
    )
    from_torch.load(module, from_torch.conv_transpose_params(to_numpy_state(layer)))
    assert_close(channels_first(module(channels_last(x))), want, np.float32, 27)


def test_linen_loads_the_same_weights():
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(3, 6, 3, stride=2, padding=1, padding_mode="circular", groups=3)
    x = torch_input(dict(batch=2, in_channels=3, sizes=(7, 6)))
    want = layer(torch.tensor(x)).detach().numpy()
    module = convjax.linen.Conv(
        6, (3, 3), strides=2, padding=1, padding_mode="circular", feature_group_count=3
    )
    params = from_torch.conv_params(to_numpy_state(layer))
    y = module.apply({"params": params}, as_array(channels_last(x)))
    assert_close(channels_first(y), want, np.float32, 9)


def test_depthwise_and_depthwise_separable_from_torch():
    torch.manual_seed(0)
    depthwise = torch.nn.Conv2d(4, 8, 3, padding=1, groups=4, bias=False)  # multiplier 2
    pointwise = torch.nn.Conv2d(8, 5, 1)
    model = torch.nn.Sequential(depthwise, pointwise)
    x = torch_input(dict(batch=2, in_channels=4, sizes=(6, 7)))
    state = to_numpy_state(model)
    xj = as_array(channels_last(x))

    layer = convjax.nnx.DepthwiseConv(
        4, (3, 3), depth_multiplier=2, padding=1, use_bias=False, rngs=nnx.Rngs(0)
    )
    from_torch.load(layer, from_torch.conv_params(state, prefix="0."))
    assert_close(
        channels_first(layer(xj)), depthwise(torch.tensor(x)).detach().numpy(), np.float32, 9
    )

    separable = convjax.nnx.DepthwiseSeparableConv(
        4, 5, (3, 3), depth_multiplier=2, padding=1, rngs=nnx.Rngs(0)
    )
    from_torch.load(
        separable,
        {
            "depthwise_kernel": from_torch.conv_kernel(state["0.weight"]),
            "pointwise_kernel": from_torch.pointwise_kernel(state["1.weight"]),
            "bias": state["1.bias"],
        },
    )
    want = model(torch.tensor(x)).detach().numpy()
    assert_close(channels_first(separable(xj)), want, np.float32, 72)


def test_from_torch_errors():
    with pytest.raises(ValueError, match=r"from_torch.conv_kernel: a PyTorch conv weight has rank"):
        from_torch.conv_kernel(np.zeros((3, 4)))
    with pytest.raises(KeyError, match=r"state_dict has no 'conv.weight'"):
        from_torch.conv_params({"weight": np.zeros((1, 1, 1))}, prefix="conv.")
    with pytest.raises(ValueError, match=r"padding_mode must be one of .* got 'mirror'"):
        from_torch.padding_mode("mirror")
    with pytest.raises(ValueError, match=r"PyTorch's string paddings are 'same' and 'valid'"):
        from_torch.padding("full")
    with pytest.raises(ValueError, match=r"a pointwise weight has a 1x…x1 window"):
        from_torch.pointwise_kernel(np.zeros((4, 3, 3, 3)))
    module = convjax.nnx.Conv(3, 8, (3, 3), use_bias=False, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"from_torch.load: Conv.kernel has shape \(3, 3, 3, 8\)"):
        from_torch.load(module, {"kernel": np.zeros((3, 3, 8, 3))})
    with pytest.raises(ValueError, match=r"from_torch.load: Conv has no parameter 'bias'"):
        from_torch.load(module, {"kernel": np.zeros((3, 3, 3, 8)), "bias": np.zeros(8)})


# -- one call: from_torch.module / from_torch.modules ----------------------------------------------


@settings(max_examples=6)
@given(config=conv_configs())
def test_module_converts_a_random_conv_layer_in_one_call(config):
    layer = torch_layer("Conv", config)
    module = from_torch.module(layer)
    assert isinstance(module, convjax.nnx.Conv)
    layer.zero_grad()
    check_parity(layer, module, torch_input(config), transpose=False)


@settings(max_examples=6)
@given(config=conv_transpose_configs())
def test_module_converts_a_random_conv_transpose_layer_in_one_call(config):
    layer = torch_layer("ConvTranspose", config)
    module = from_torch.module(layer)
    assert isinstance(module, convjax.nnx.ConvTranspose)
    layer.zero_grad()
    check_parity(layer, module, torch_input(config), transpose=True)


def test_modules_walks_a_model_by_name():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding="same", groups=8, bias=False)),
        torch.nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1),
        torch.nn.Flatten(),
    )
    layers = from_torch.modules(model)
    assert list(layers) == ["0", "2.0", "3"]
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    h = as_array(channels_last(x))
    for name in layers:
        h = layers[name](h)
        if name == "0":
            h = jax.nn.relu(h)
    with torch.no_grad():
        expected = model[:4](torch.tensor(x)).numpy()
    np.testing.assert_allclose(channels_first(h), expected, rtol=1e-4, atol=1e-4)


def test_modules_take_pytorchs_layout_with_channels_first():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ConvTranspose2d(8, 4, 2, 2)
    )
    layers = from_torch.modules(model, data_format="channels_first")
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    y = layers["1"](layers["0"](as_array(x)))  # NCHW in, NCHW out
    with torch.no_grad():
        expected = model(torch.tensor(x)).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"^from_torch.module: data_format must be one of"):
        from_torch.module(model[0], data_format="NCHW")


def test_module_refuses_what_is_not_a_conv():
    with pytest.raises(TypeError, match=r"from_torch.module: converts Conv1d/2d/3d .* got Linear"):
        from_torch.module(torch.nn.Linear(3, 4))


class UserConv2d(torch.nn.Conv2d):
    """A user's subclass (overriding nothing): it converts as the Conv2d it is."""


def test_modules_finds_subclasses_lazy_and_parametrised_convs():
    torch.manual_seed(0)
    lazy = torch.nn.LazyConv2d(6, 3, padding=1)
    normed = torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv2d(6, 5, 3, stride=2))
    with torch.no_grad():  # weight-norm's g away from its initial |v|: the effective weight differs
        normed.parametrizations.weight.original0.mul_(1.5)
    model = torch.nn.Sequential(
        lazy,
        torch.nn.ReLU(),
        UserConv2d(6, 6, 3, padding=1, groups=2),
        normed,
        torch.nn.LazyConvTranspose2d(4, 2, stride=2),
    )
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 9)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.tensor(x)).numpy()  # the first call also sets the lazy shapes
    layers = from_torch.modules(model)
    assert list(layers) == ["0", "2", "3", "4"]
    assert isinstance(layers["4"], convjax.nnx.ConvTranspose)
    plain = normed.parametrizations.weight.original1.detach().numpy()
    assert not np.allclose(layers["3"].kernel[...], from_torch.conv_kernel(plain))
    h = as_array(channels_last(x))
    for name, layer in layers.items():
        h = layer(h)
        if name == "0":
            h = jax.nn.relu(h)
    np.testing.assert_allclose(channels_first(h), expected, rtol=1e-4, atol=1e-4)


def test_an_uninitialised_lazy_conv_is_an_error_naming_it():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.LazyConv2d(8, 3))
    with pytest.raises(
        ValueError,
        match=r"from_torch.modules: layer '1' \(LazyConv2d\) is a lazy conv whose parameters are "
        r"not initialised yet \(in_channels = 0.*run one forward pass first",
    ):
        from_torch.modules(model)
    with pytest.raises(ValueError, match=r"from_torch.module: LazyConvTranspose1d is a lazy conv"):
        from_torch.module(torch.nn.LazyConvTranspose1d(8, 3))


@pytest.mark.parametrize(
    "kind, dtype",
    [("Conv", torch.bfloat16), ("ConvTranspose", torch.bfloat16), ("Conv", torch.float16)],
)
def test_half_precision_layers_keep_their_dtype_and_match_torch(kind, dtype):
    torch.manual_seed(0)
    layer = getattr(torch.nn, f"{kind}2d")(4, 6, 3, stride=2, padding=1, groups=2).to(dtype)
    x = torch.randn(2, 4, 7, 8).to(dtype)
    with torch.no_grad():
        expected = layer(x).float().numpy()
    module = from_torch.module(layer)
    jax_dtype = {torch.bfloat16: jnp.bfloat16, torch.float16: jnp.float16}[dtype]
    assert module.kernel[...].dtype == jax_dtype and module.bias[...].dtype == jax_dtype
    # The weights are torch's exactly (every half-precision value is a float32).
    np.testing.assert_array_equal(
        np.asarray(module.kernel[...], np.float32),
        from_torch.conv_kernel(layer.weight.detach().float().numpy()),
    )
    xj = as_array(channels_last(x.float().numpy()), jax_dtype)
    y = module(xj)
    assert y.dtype == jax_dtype
    assert_close(channels_first(np.asarray(y, np.float32)), expected, np.dtype(jax_dtype), 18)


def test_module_errors_name_the_function_the_layer_and_the_value():
    conv = torch.nn.Conv2d(3, 4, 3)
    conv.padding_mode = "mirror"
    with pytest.raises(
        ValueError,
        match=r"from_torch.modules: layer '1' \(Conv2d\): padding_mode must be one of .* got "
        r"'mirror'",
    ):
        from_torch.modules(torch.nn.Sequential(torch.nn.ReLU(), conv))
    complex_conv = torch.nn.Conv1d(2, 2, 3, bias=False, dtype=torch.complex64)
    with pytest.raises(
        TypeError,
        match=r"from_torch.modules: Conv1d.weight of layer 'enc' must be an array of real numbers, "
        r"got Parameter of dtype complex64",
    ):
        from_torch.modules(torch.nn.ModuleDict({"enc": complex_conv}))
    with pytest.raises(TypeError, match=r"from_torch.modules: torch_model must be a torch.nn.Mod"):
        from_torch.modules([conv])
    with pytest.raises(TypeError, match=r"from_torch.module: converts .* got ScaledLinear"):
        from_torch.module(type("ScaledLinear", (torch.nn.Linear,), {})(3, 4))
