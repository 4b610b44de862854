"""convjax.nnx and convjax.linen: thin wrappers of the pure functions, interchangeable with each
other, transformable (jit / grad / vmap) and serialisable."""

import dataclasses
import inspect
import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx, serialization
from helpers import IMPLS

import convjax
from convjax._src.checks import as_array
from convjax._src.modules import common as modules_common

NAMES = tuple(convjax.nnx.__all__)


def layer(name, x_shape, in_features, out_features=None, **options):
    return dict(
        name=name,
        x_shape=x_shape,
        in_features=in_features,
        out_features=out_features,
        options=options,
    )


LAYERS = [
    layer("Conv", (2, 9, 9, 4), 4, 6, kernel_size=(3, 3), strides=2, padding="SAME"),
    layer(
        "Conv",
        (2, 11, 4),
        4,
        6,
        kernel_size=(3,),
        kernel_dilation=2,
        feature_group_count=2,
        padding=2,
        padding_mode="reflect",
    ),
    layer("Conv", (1, 5, 4, 6, 2), 2, 3, kernel_size=(2, 3, 2), padding_mode="circular", padding=1),
    layer(
        "ConvTranspose",
        (2, 4, 5, 4),
        4,
        6,
        kernel_size=(3, 3),
        strides=2,
        padding=1,
        output_padding=1,
        feature_group_count=2,
    ),
    layer(
        "ConvTranspose", (2, 6, 3), 3, 2, kernel_size=(3,), kernel_dilation=2, output_shape=(10,)
    ),
    layer(
        "DepthwiseConv",
        (2, 8, 7, 3),
        3,
        kernel_size=(3, 3),
        depth_multiplier=2,
        padding="SAME",
        kernel_dilation=(1, 2),
        padding_mode="replicate",
    ),
    layer(
        "DepthwiseSeparableConv",
        (2, 8, 8, 3),
        3,
        5,
        kernel_size=(3, 3),
        depth_multiplier=2,
        strides=2,
        padding="SAME",
    ),
    layer(
        "SpatialSeparableConv",
        (2, 9, 8, 4),
        4,
        6,
        kernel_size=(3, 5),
        feature_group_count=2,
        padding="SAME",
    ),
    layer(
        "DeformableConv",
        (2, 7, 6, 4),
        4,
        6,
        kernel_size=(3, 3),
        strides=2,
        padding=1,
        feature_group_count=2,
        offset_groups=2,
    ),
    layer(
        "ConvLocal",
        (2, 7, 6, 4),
        4,
        6,
        kernel_size=(3, 3),
        in_spatial=(7, 6),
        strides=2,
        padding="SAME",
        feature_group_count=2,
    ),
]


def layer_impl(case, impl):
    """ConvLocal's formulations are its own: where the others run lax it runs taps."""
    return "taps" if case["name"] == "ConvLocal" and impl == "lax" else impl


def layer_id(case):
    options = ",".join(f"{k}={v}" for k, v in case["options"].items() if k != "kernel_size")
    return f"{case['name']}-k{case['options']['kernel_size']}-{options}".replace(" ", "")


def features(case):
    if case["out_features"] is None:
        return (case["in_features"],), ()
    return (case["in_features"], case["out_features"]), (case["out_features"],)


def numpy_init(seed):
    """A random initialiser without JAX random numbers: eager threefry compiles once per shape,
    which would dominate these tests' time.  The Flax defaults are tested on their own below."""

    def init(key, shape, dtype):
        return as_array(np.random.default_rng(seed).uniform(-0.5, 0.5, shape), dtype)

    return init


def nnx_layer(case, impl="lax", seed=0, **extra):
    nnx_args, _ = features(case)
    cls = getattr(convjax.nnx, case["name"])
    inits = dict(kernel_init=numpy_init(seed), bias_init=numpy_init(seed + 1)) | extra
    impl = layer_impl(case, impl)
    return cls(*nnx_args, **case["options"], impl=impl, rngs=nnx.Rngs(seed), **inits)


def linen_layer(case, impl="lax", **extra):
    _, linen_args = features(case)
    inits = dict(kernel_init=numpy_init(2), bias_init=numpy_init(3)) | extra
    impl = layer_impl(case, impl)
    return getattr(convjax.linen, case["name"])(*linen_args, **case["options"], impl=impl, **inits)


def params_of(module):
    return nnx.to_pure_dict(nnx.state(module, nnx.Param))


def inputs(case, dtype=np.float64, seed=1):
    return as_array(np.random.default_rng(seed).uniform(-1, 1, case["x_shape"]), dtype)


def pure(case, x, params, impl):
    """The layer written directly with the pure functions: what the module must compute."""
    o = dict(case["options"])
    o.pop("kernel_size")
    o.pop("depth_multiplier", None)
    o.pop("in_spatial", None)
    if "kernel_dilation" in o:
        o["dilation"] = o.pop("kernel_dilation")
    if "feature_group_count" in o:
        o["groups"] = o.pop("feature_group_count")
    name = case["name"]
    if name == "Conv":
        y = convjax.conv(x, params["kernel"], impl=impl, **o)
    elif name == "ConvTranspose":
        y = convjax.conv_transpose(x, params["kernel"], impl=impl, **o)
    elif name == "DepthwiseConv":
        y = convjax.depthwise_conv(x, params["kernel"], impl=impl, **o)
    elif name == "DeformableConv":
        kernels = params["kernel"], params["offset_kernel"], params["offset_bias"]
        y = convjax.deformable_conv(x, *kernels, impl=impl, **o)
    elif name == "ConvLocal":
        y = convjax.local_conv(x, params["kernel"], impl=layer_impl(case, impl), **o)
    elif name == "DepthwiseSeparableConv":
        y = convjax.depthwise_separable_conv(
            x, params["depthwise_kernel"], params["pointwise_kernel"], impl=impl, **o
        )
    else:
        kernels = [params[f"kernel_{i}"] for i in range(len(case["options"]["kernel_size"]))]
        y = convjax.spatial_separable_conv(x, kernels, impl=impl, **o)
    bias = params["bias"]  # per channel, or per position and channel (ConvLocal)
    return y + bias.reshape((1,) * (y.ndim - bias.ndim) + bias.shape)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", LAYERS, ids=layer_id)
def test_module_is_the_pure_function_plus_bias(case, impl):
    module = nnx_layer(case, impl, param_dtype=jnp.float64)
    x = inputs(case)
    params = params_of(module)
    assert all(v.dtype == jnp.float64 for v in params.values())
    y = module(x)
    np.testing.assert_allclose(y, pure(case, x, params, impl), rtol=1e-12, atol=1e-12)
    linen_y = linen_layer(case, impl).apply({"params": params}, x)
    np.testing.assert_array_equal(linen_y, y)


def counting_layers(case):
    """The same layer described for ``convjax.param_count``, from the case's options alone."""
    o, c_in, c_out = case["options"], case["in_features"], case["out_features"]
    window, groups = tuple(o["kernel_size"]), o.get("feature_group_count", 1)
    m = o.get("depth_multiplier", 1)
    return {
        "Conv": lambda: convjax.Layer((*window, c_in // groups, c_out), groups=groups, bias=True),
        "ConvTranspose": lambda: convjax.Layer(
            (*window, c_out // groups, c_in), groups=groups, transpose=True, bias=True
        ),
        "DepthwiseConv": lambda: convjax.Layer((*window, 1, c_in * m), groups=c_in, bias=True),
        "DeformableConv": lambda: [
            convjax.Layer((*window, c_in // groups, c_out), groups=groups, bias=True),
            convjax.Layer((*window, c_in, o["offset_groups"] * 9 * 3), bias=True),  # the offsets
        ],
        "DepthwiseSeparableConv": lambda: convjax.Layer.depthwise_separable(
            (*window, 1, c_in * m), (c_in * m, c_out), depth_multiplier=m, bias=True
        ),
        "SpatialSeparableConv": lambda: convjax.Layer.spatial_separable(
            [(k, (c_in if i == 0 else c_out) // groups, c_out) for i, k in enumerate(window)],
            groups=groups,
            bias=True,
        ),
    }[case["name"]]()


@pytest.mark.parametrize("case", LAYERS, ids=layer_id)
def test_parameter_count_equals_param_count(case):
    params = params_of(nnx_layer(case))
    counted = sum(math.prod(v.shape) for v in params.values())
    if case["name"] == "ConvLocal":  # a kernel per position: counted on its own
        o = case["options"]
        local = convjax.local_layer_count(
            (*o["in_spatial"], case["in_features"]),
            o["kernel_size"],
            case["out_features"],
            strides=o["strides"],
            padding=o["padding"],
            groups=o["feature_group_count"],
            bias="local",
        )
        assert counted == local.params
    else:
        assert counted == convjax.param_count(counting_layers(case))
    assert counted == modules_common.count(jax.tree.map(jnp.shape, params))
    without_bias = params_of(nnx_layer(case, use_bias=False))
    assert counted - sum(math.prod(v.shape) for v in without_bias.values()) == params["bias"].size


@pytest.mark.parametrize("case", LAYERS, ids=layer_id)
def test_jit_grad_vmap(case):
    module = nnx_layer(case, param_dtype=jnp.float64)
    graphdef, state = nnx.split(module)
    params = params_of(module)
    linen = linen_layer(case)
    x = inputs(case)
    xs = jnp.stack([x, -2 * x])

    def loss(y):
        return jnp.sum(jnp.sin(y))

    @jax.jit
    def everything(state, params, x, xs):
        model = nnx.merge(graphdef, state)
        return dict(
            y=model(x),
            grads=jax.grad(lambda s, x: loss(nnx.merge(graphdef, s)(x)), argnums=(0, 1))(state, x),
            want=jax.grad(lambda p, x: loss(pure(case, x, p, "lax")), argnums=(0, 1))(params, x),
            linen=jax.grad(lambda p: loss(linen.apply({"params": p}, x)))(params),
            vmap=jax.vmap(model)(xs),
            linen_vmap=jax.vmap(lambda x: linen.apply({"params": params}, x))(xs),
        )

    out = everything(state, params, x, xs)
    np.testing.assert_allclose(out["y"], module(x), rtol=1e-12, atol=1e-12)
    (want, want_x), (grads, x_grad) = out["want"], out["grads"]
    assert set(nnx.to_pure_dict(grads)) == set(want)
    np.testing.assert_allclose(x_grad, want_x, rtol=1e-10, atol=1e-12)
    # nnx's own transforms see the same gradients.
    nnx_grads = nnx.jit(nnx.grad(lambda m, x: loss(m(x))))(module, x)
    for name in want:
        for got in (nnx.to_pure_dict(grads), out["linen"], nnx.to_pure_dict(nnx_grads)):
            np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-12)
    # vmap over an extra leading axis equals calling on each element.
    batched = jnp.stack([module(x), module(-2 * x)])
    np.testing.assert_allclose(out["vmap"], batched, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out["linen_vmap"], batched, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", LAYERS, ids=layer_id)
def test_state_round_trips_through_serialization(case):
    module = nnx_layer(case, param_dtype=jnp.bfloat16 if case["name"] == "Conv" else jnp.float64)
    x = inputs(case)
    blob = serialization.to_bytes(nnx.to_pure_dict(nnx.state(module)))
    fresh = nnx_layer(case, seed=7, param_dtype=module.param_dtype)
    assert not np.array_equal(fresh(x), module(x))
    restored = serialization.from_bytes(nnx.to_pure_dict(nnx.state(fresh)), blob)
    nnx.update(fresh, restored)
    for name, value in params_of(module).items():
        assert params_of(fresh)[name].dtype == value.dtype
        np.testing.assert_array_equal(params_of(fresh)[name], value)
    np.testing.assert_array_equal(fresh(x), module(x))
    # nnx.state / nnx.update and split / merge: unchanged.
    graphdef, state = nnx.split(module)
    np.testing.assert_array_equal(nnx.merge(graphdef, state)(x), module(x))
    # Linen: init makes the NNX parameters' names, shapes and dtypes; variables survive
    # msgpack and the state dict form.
    linen = linen_layer(case, param_dtype=module.param_dtype)
    variables = linen.init(jax.random.key(3), x)
    assert set(variables) == {"params"}
    assert jax.tree.map(lambda v: (v.shape, v.dtype), variables["params"]) == jax.tree.map(
        lambda v: (v.shape, v.dtype), params_of(module)
    )
    back = serialization.from_bytes(variables, serialization.to_bytes(variables))
    jax.tree.map(np.testing.assert_array_equal, back, variables)
    state_dict = serialization.to_state_dict(variables)
    back = serialization.from_state_dict(variables, state_dict)
    np.testing.assert_array_equal(linen.apply(back, x), linen.apply(variables, x))


DTYPES = [
    # (param_dtype, x dtype, dtype, result dtype)
    (jnp.float32, jnp.float64, None, jnp.float64),  # promoted, as Flax does
    (jnp.bfloat16, jnp.float32, None, jnp.float32),
    (jnp.float64, jnp.float32, jnp.bfloat16, jnp.bfloat16),  # dtype overrides both
]


@pytest.mark.parametrize(
    "name, param_dtype, x_dtype, dtype, result",
    [(name, *dtypes) for name in NAMES for dtypes in DTYPES],
)
def test_dtype_and_param_dtype(name, param_dtype, x_dtype, dtype, result):
    case = next(c for c in LAYERS if c["name"] == name)
    module = nnx_layer(case, param_dtype=param_dtype, dtype=dtype)
    assert all(v.dtype == param_dtype for v in params_of(module).values())
    x = inputs(case, x_dtype)
    assert module(x).dtype == result
    linen = linen_layer(case, param_dtype=param_dtype, dtype=dtype)
    variables = linen.init(jax.random.key(0), x)
    assert all(v.dtype == param_dtype for v in jax.tree.leaves(variables))
    assert linen.apply(variables, x).dtype == result


def test_preferred_element_type_and_precision_reach_the_function():
    case = LAYERS[0]
    module = nnx_layer(
        case,
        param_dtype=jnp.bfloat16,
        preferred_element_type=jnp.float32,
        precision=jax.lax.Precision.HIGHEST,
    )
    y = module(inputs(case, jnp.bfloat16))
    assert y.dtype == jnp.float32


@pytest.mark.parametrize(
    "name, in_features, out_features, kernel_size, fan_in",
    [
        ("Conv", 64, 32, (3, 3), 9 * 16),  # groups 4
        ("ConvTranspose", 64, 32, (3, 3), 9 * 64),
        ("DepthwiseConv", 256, None, (5, 5), 25),
    ],
)
def test_default_initialisation_is_lecun_normal_and_zero_bias(
    name, in_features, out_features, kernel_size, fan_in
):
    args = (in_features,) if out_features is None else (in_features, out_features)
    groups = {"feature_group_count": 4} if name == "Conv" else {}
    module = getattr(convjax.nnx, name)(*args, kernel_size, **groups, rngs=nnx.Rngs(0))
    std = float(jnp.std(module.kernel[...]))
    assert abs(std * math.sqrt(fan_in) - 1) < 0.1, std
    np.testing.assert_array_equal(module.bias[...], 0)


def test_separable_kernels_have_their_own_fan_in():
    module = convjax.nnx.DepthwiseSeparableConv(
        64, 64, (3, 3), depth_multiplier=2, rngs=nnx.Rngs(0)
    )
    assert abs(float(jnp.std(module.depthwise_kernel[...])) * 3 - 1) < 0.1
    assert abs(float(jnp.std(module.pointwise_kernel[...])) * math.sqrt(128) - 1) < 0.1


@pytest.mark.parametrize("case", LAYERS, ids=layer_id)
def test_use_bias_false_and_custom_initialisers(case):
    module = nnx_layer(case, use_bias=False, kernel_init=nnx.initializers.zeros)
    assert "bias" not in params_of(module) and module.bias is None
    x = inputs(case, np.float32)
    np.testing.assert_array_equal(module(x), 0)
    variables = linen_layer(case, use_bias=False).init(jax.random.key(0), x)
    assert "bias" not in variables["params"]
    ones = nnx_layer(case, kernel_init=nnx.initializers.zeros, bias_init=nnx.initializers.ones)
    np.testing.assert_array_equal(ones(x), 1)


def test_nnx_and_linen_take_the_same_arguments():
    for name in NAMES:
        nnx_args = set(inspect.signature(getattr(convjax.nnx, name).__init__).parameters)
        nnx_args -= {"self", "in_features", "out_features", "rngs"}
        linen_args = {f.name for f in dataclasses.fields(getattr(convjax.linen, name))}
        linen_args -= {"parent", "name", "features"}
        assert nnx_args == linen_args, name
        assert {"kernel_dilation", "padding_mode", "impl", "kernel_init"} <= nnx_args
        if name not in ("DepthwiseConv", "DepthwiseSeparableConv"):
            assert "feature_group_count" in nnx_args
    assert issubclass(convjax.linen.Conv, nn.Module)
    assert issubclass(convjax.nnx.Conv, nnx.Module)


def test_list_options_become_tuples_so_nnx_jit_can_hash_the_graph():
    module = convjax.nnx.Conv(
        3, 4, [3, 3], strides=[2, 1], padding=[[1, 1], (0, 2)], rngs=nnx.Rngs(0)
    )
    assert module.kernel_size == (3, 3) and module.strides == (2, 1)
    assert module.padding == ((1, 1), (0, 2))
    x = jnp.ones((1, 8, 8, 3), jnp.float32)
    np.testing.assert_array_equal(nnx.jit(lambda m, x: m(x))(module, x), module(x))


@pytest.mark.parametrize(
    "make, error, match",
    [
        (
            lambda: convjax.nnx.Conv(3, 8, 3, rngs=nnx.Rngs(0)),
            TypeError,
            r"Conv: kernel_size must be a non-empty sequence of ints, one per spatial dim .*got 3",
        ),
        (
            lambda: convjax.nnx.ConvTranspose(
                4, 6, (3, 3), feature_group_count=3, rngs=nnx.Rngs(0)
            ),
            ValueError,
            r"ConvTranspose: feature_group_count must divide in_features, but 3 does not divide 4",
        ),
        (
            lambda: convjax.nnx.SpatialSeparableConv(
                4, 6, (3, 3), feature_group_count=4, rngs=nnx.Rngs(0)
            ),
            ValueError,
            r"feature_group_count must divide out_features, but 4 does not divide 6",
        ),
        (
            lambda: convjax.nnx.ConvLocal(0, 4, (3, 3), in_spatial=(6, 6), rngs=nnx.Rngs(0)),
            ValueError,
            r"^ConvLocal: in_features must be >= 1, got 0\.$",
        ),
        (
            lambda: convjax.nnx.ConvLocal(2.0, 4, (3, 3), in_spatial=(6, 6), rngs=nnx.Rngs(0)),
            TypeError,
            r"^ConvLocal: in_features must be an int, got 2.0",
        ),
        (
            lambda: convjax.nnx.Conv(2, 4, (3, 3), mask=[[1], [1, 2]], rngs=nnx.Rngs(0)),
            TypeError,
            r"^Conv: mask must be an array of numbers .* nested lists of unequal lengths\.$",
        ),
        (  # a Linen layer knows its output channels when it is made
            lambda: convjax.linen.Conv(4, (3, 3), feature_group_count=3),
            ValueError,
            r"^Conv: feature_group_count must divide features, but 3 does not divide 4\.$",
        ),
        (  # Linen's dataclass constructor too
            lambda: convjax.linen.Conv(4, (3, 3), stride=2, kernel_dilaton=2),
            TypeError,
            r"^Conv: got an unexpected keyword argument 'stride' \(stride= is strides= here; "
            r"did you mean kernel_dilation=\?\)\.$",
        ),
        (
            lambda: convjax.linen.DepthwiseConv((3, 3), foo=1),
            TypeError,
            r"^DepthwiseConv: got an unexpected keyword argument 'foo'\.$",
        ),
        (  # PyTorch's names, a typo, PyTorch's positional options: what to write instead
            lambda: convjax.nnx.Conv(4, 6, (3, 3), stride=2, groups=2, rngs=nnx.Rngs(0)),
            TypeError,
            r"^Conv: got an unexpected keyword argument 'stride' \(stride= is strides= here; "
            r"groups= is feature_group_count= here\)\.$",
        ),
        (
            lambda: convjax.nnx.ConvTranspose(4, 6, (3, 3), kernel_dilaton=2, rngs=nnx.Rngs(0)),
            TypeError,
            r"'kernel_dilaton' \(did you mean kernel_dilation=\?\)\.$",
        ),
        (
            lambda: convjax.nnx.Conv(4, 6, (3, 3), 1, 1, rngs=nnx.Rngs(0)),
            TypeError,
            r"^Conv: too many positional arguments \(only in_features, out_features, kernel_size, "
            r"strides go by position; name the rest\)\.$",
        ),
        (
            lambda: convjax.nnx.DepthwiseConv(4, (3, 3), depth_multiplier=0, rngs=nnx.Rngs(0)),
            ValueError,
            r"DepthwiseConv: depth_multiplier must be >= 1, got 0",
        ),
        (
            lambda: convjax.nnx.Conv(4, 6.0, (3, 3), rngs=nnx.Rngs(0)),
            TypeError,
            r"Conv: out_features must be an int, got 6.0 of type float",
        ),
        (
            lambda: convjax.nnx.Conv(4, 6, (3, 3), dtype=jnp.int32, rngs=nnx.Rngs(0)),
            TypeError,
            r"Conv: dtype must be a floating \(.*\) or complex \(.*\) dtype or None, got 'int32'",
        ),
        (
            lambda: convjax.linen.Conv(6, 3).init(
                jax.random.key(0), jnp.ones((1, 5, 5, 4), jnp.float32)
            ),
            TypeError,
            r"Conv: kernel_size must be a non-empty sequence",
        ),
    ],
)
def test_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize("case", LAYERS, ids=layer_id)
def test_an_input_with_other_channels_is_refused_by_the_module(case):
    """A layer built for (or initialised on) C_in channels refuses another count, naming
    in_features, where a depthwise layer used to run with another depth multiplier."""
    groups = case["options"].get("feature_group_count", 1)
    other = (*case["x_shape"][:-1], case["x_shape"][-1] + groups)  # still divisible
    x = jnp.ones(other)
    name = case["name"]
    with pytest.raises(
        ValueError,
        match=rf"^{name}: x has {other[-1]} channels, but the layer was built with in_features="
        rf"{case['in_features']} \(x shape {re.escape(str(other))}, read as",
    ):
        nnx_layer(case)(x)
    linen = linen_layer(case)
    variables = linen.init(jax.random.key(0), inputs(case))
    with pytest.raises(ValueError, match=rf"^{name}: x has {other[-1]} channels .* does not fit"):
        linen.apply(variables, x)


def test_errors_at_call_time_name_the_module():
    module = convjax.nnx.Conv(4, 6, (5, 5), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"^Conv: the output would be empty"):
        module(jnp.ones((1, 3, 3, 4), jnp.float32))
    linen = convjax.linen.ConvTranspose(6, (3, 3))
    with pytest.raises(ValueError, match=r"^ConvTranspose: x must have rank >= 3"):
        linen.init(jax.random.key(0), jnp.ones((4,), jnp.float32))
    # Outside a module the function names itself again.
    with pytest.raises(ValueError, match=r"^conv: the output would be empty"):
        convjax.conv(jnp.ones((1, 3, 3, 4)), jnp.ones((5, 5, 4, 6)))
