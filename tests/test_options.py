"""Every option is validated: bad values fail at trace time naming the function (or, for modules,
at construction naming the module), NumPy scalars are accepted wherever an int or a float is, and
the errors for common porting mistakes say what to do."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from ops import OPS

import convjax
from convjax import from_torch


def zeros(*shape):
    return jnp.zeros(shape, jnp.float32)


X = zeros(2, 8, 8, 4)
K = zeros(3, 3, 4, 6)

CALLS = {
    op.name: functools.partial(op, X, *op.arrays(4)) for op in OPS if op.preferred_element_type
}  # op(X, *operands, **options)


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"precision": "HIGHEST"}, ValueError, r"precision must be None, a jax.lax.Precision"),
        ({"precision": 3}, ValueError, r"precision must be None.*got 3"),
        ({"precision": ["high"]}, ValueError, r"precision must be None.*got \['high'\]"),
        (
            {"preferred_element_type": jnp.int32},
            TypeError,
            r"preferred_element_type must be a floating \(.*\) dtype or None, got 'int32'",
        ),
        (
            {"preferred_element_type": "bogus"},
            TypeError,
            r"preferred_element_type must be a floating \(.*\) dtype or None, got 'bogus'",
        ),
        (
            {"preferred_element_type": jnp.bfloat16},
            TypeError,
            r"preferred_element_type must not be narrower than the operands' dtype float32, got "
            r"bfloat16",
        ),
    ],
)
def test_precision_and_preferred_element_type_are_checked(name, options, error, match):
    with pytest.raises(error, match=rf"^{name}: {match}"):
        CALLS[name](**options)
    with pytest.raises(error, match=rf"^{name}: {match}"):  # and while tracing
        jax.jit(lambda: CALLS[name](**options)).lower()


@pytest.mark.parametrize("name", CALLS)
def test_good_precisions_are_accepted(name):
    for precision in ("highest", jax.lax.Precision.HIGH, ("high", "highest")):
        CALLS[name](precision=precision)
    assert CALLS[name](preferred_element_type=jnp.float64).dtype == jnp.float64


def test_deconvolve_checks_precision():
    with pytest.raises(ValueError, match=r"^deconvolve: precision must be None"):
        convjax.deconvolve(X, K[..., :4], precision="best")


@pytest.mark.parametrize("fn", [convjax.output_shape, convjax.index_map])
@pytest.mark.parametrize(
    "input_shape, kernel_shape, error, match",
    [
        ((2, 6.0, 6, 3), (3, 3, 3, 4), TypeError, r"input_shape must be an int, got 6.0"),
        ((-1, 6, 6, 3), (3, 3, 3, 4), ValueError, r"input_shape must be >= 0, got -1"),
        ((2, 6, 6, 3), (3, 3, 3, True), TypeError, r"kernel_shape must be an int, got True"),
        ("abc", (3, 3, 3, 4), TypeError, r"input_shape must be a sequence of ints, got 'abc'"),
        ((2, 0, 6, 3), (3, 3, 3, 4), ValueError, r"spatial sizes must be >= 1"),
    ],
)
def test_shape_functions_check_every_entry(fn, input_shape, kernel_shape, error, match):
    with pytest.raises(error, match=rf"^{fn.__name__}: {match}"):
        fn(input_shape, kernel_shape)


def test_numpy_scalars_are_accepted_wherever_python_numbers_are():
    i, f = np.int64, np.float32
    y = convjax.conv(
        X, K, strides=i(2), padding=((i(1), np.int32(1)), i(0)), dilation=(i(1), 1), groups=i(1)
    )
    assert y.shape == (2, 4, 3, 6)
    assert convjax.output_shape(np.array([2, 8, 8, 4]), np.array([3, 3, 4, 6])) == (2, 6, 6, 6)
    back = convjax.conv_transpose(y, K, strides=2, padding=1, output_padding=i(1))
    assert back.shape[1] == 8
    budget = convjax.GatherBackend(memory_budget=i(2**20))
    assert budget == convjax.GatherBackend(memory_budget=2**20) and hash(budget)
    factors = convjax.separable_factors(jnp.ones((3, 3)), rank=i(1), tol=f(1e-3))
    assert int(factors.rank) == 1
    circular = dict(padding="SAME", padding_mode="circular")
    ones = jnp.ones((1, 6, 6, 1))
    for method in ("wiener", "lsq"):
        x = convjax.deconvolve(
            ones,
            jnp.ones((3, 3, 1, 1)) / 9,
            method=method,
            regularization=f(0.1),
            tol=np.float64(1e-6),
            max_iters=np.int32(50),
            **circular,
        )
        assert x.shape == ones.shape
    layer = convjax.Layer((i(3), i(3), i(4), i(6)), strides=i(2), groups=i(2))
    assert convjax.flop_count(layer, np.array([1, 9, 9, 8])) > 0
    assert from_torch.padding(i(1)) == 1 and from_torch.padding((i(1), np.int16(2))) == (1, 2)
    module = convjax.nnx.Conv(i(4), i(6), (i(3), i(3)), strides=i(2), rngs=nnx.Rngs(0))
    assert module(X).shape == (2, 3, 3, 6)


def test_from_torch_errors_name_the_step_that_converts():
    layer = convjax.nnx.Conv(3, 8, (3, 3), rngs=nnx.Rngs(0))
    torch_state = {"weight": np.ones((8, 3, 3, 3)), "bias": np.ones(8)}
    with pytest.raises(ValueError, match=r"has no parameter 'weight' \(it has kernel, bias\)\. "):
        from_torch.load(layer, torch_state)
    with pytest.raises(KeyError, match=r"under prefixes \('conv\.'\): pass prefix='conv\.'"):
        from_torch.conv_params({f"conv.{k}": v for k, v in torch_state.items()})


def test_numpy_booleans_are_booleans_and_ints_are_not():
    assert convjax.Layer((3, 3, 1, 1), bias=np.bool_(True)).bias is True
    assert convjax.flop_count(convjax.Layer((3, 3, 1, 1)), (1, 5, 5, 1), count_padding=np.False_)
    layer = convjax.nnx.DeformableConv(4, 6, (3, 3), modulated=np.bool_(False), rngs=nnx.Rngs(0))
    assert layer.offset_kernel.shape[-1] == 18
    with pytest.raises(TypeError, match=r"^Layer: bias must be a bool, got 1\.$"):
        convjax.Layer((3, 3, 1, 1), bias=1)


def test_zero_dim_numpy_arrays_are_numbers_and_arrays_are_sequences():
    """``np.array(2)`` is a number wherever one is taken (``len()`` of it raised), and a 1-d
    or 2-d array a sequence of entries."""
    a = np.array
    y = convjax.conv(X, K, strides=a(2), padding=a(1), dilation=a(1), groups=a(1))
    assert y.shape == convjax.conv(X, K, strides=2, padding=1).shape
    assert convjax.conv(X, K, padding=a([[1, 0], [0, 1]])).shape == (2, 7, 7, 6)
    back = convjax.conv_transpose(y, K, strides=a(2), padding=a(1), output_padding=a(1))
    assert back.shape == X.shape
    assert convjax.conv_output_size(8, 3, padding=a(1)) == 8
    assert convjax.explain_padding(a(8), a(3)) == convjax.explain_padding(8, 3)
    assert convjax.Layer((3, 3, 4, 6), strides=a(2)).strides == (2, 2)
    assert from_torch.padding(a(1)) == 1
    layer = convjax.nnx.Conv(4, 6, (3, 3), strides=a(2), padding=a(1), rngs=nnx.Rngs(0))
    assert layer(X).shape == y.shape


# -- porting mistakes ---------------------------------------------------------------------------


def test_a_channels_first_input_gets_a_layout_hint():
    nchw = jnp.zeros((2, 4, 8, 8), jnp.float32)
    with pytest.raises(ValueError, match=r"x looks channels-first \(axis 1 has 4 = C_in\).*"):
        convjax.conv(nchw, K)
    with pytest.raises(
        ValueError,
        match=r"^Conv: x has 8 channels, but the layer was built with in_features=4 .* If x is "
        r"channels-first, build the layer with data_format='channels_first' \(or pass "
        r"jnp.moveaxis\(x, 1, -1\)\)\.$",
    ):
        convjax.nnx.Conv(4, 6, (3, 3), rngs=nnx.Rngs(0))(nchw)
    # No hint when the shapes do not look like that.
    with pytest.raises(ValueError) as excinfo:
        convjax.conv(jnp.zeros((2, 8, 8, 5), jnp.float32), K)
    assert "channels-first" not in str(excinfo.value)


def test_an_empty_output_says_which_axes_were_taken_as_spatial():
    """A batch of 2-d images given to a 3-d kernel: the batch axis is read as spatial."""
    with pytest.raises(
        ValueError,
        match=r"conv: the output would be empty: spatial output \(0, 6, 6\) from input "
        r"\(2, 8, 8\) \(axes 0, 1, 2 of shape \(2, 8, 8, 4\), read as \[\*batch, \*spatial, C\]\)",
    ):
        convjax.conv(X, jnp.zeros((3, 3, 3, 4, 6), jnp.float32))


# -- from_torch ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: from_torch.padding(1.5), TypeError, r"from_torch.padding: padding must be an int"),
        (lambda: from_torch.padding(-1), ValueError, r"padding must be >= 0, got -1"),
        (lambda: from_torch.padding((1, True)), TypeError, r"padding must be an int, got True"),
        (lambda: from_torch.padding(None), TypeError, r"padding must be an int, got None"),
        (lambda: from_torch.padding_mode(None), ValueError, r"padding_mode must be one of"),
        (
            lambda: from_torch.conv_kernel(None),
            TypeError,
            r"from_torch.conv_kernel: weight must be an array of real numbers, got NoneType",
        ),
        (
            lambda: from_torch.conv_params({"weight": np.zeros((4, 3, 3, 3)), "bias": "b"}),
            TypeError,
            r"from_torch.conv_params: state_dict\['bias'\] must be an array of real numbers",
        ),
    ],
)
def test_from_torch_checks_its_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_from_torch_takes_tensors_that_require_grad():
    torch = pytest.importorskip("torch")
    layer = torch.nn.Conv2d(3, 8, 3)  # weights require grad
    params = from_torch.conv_params(layer.state_dict(keep_vars=True))
    module = convjax.nnx.Conv(3, 8, (3, 3), rngs=nnx.Rngs(0))
    from_torch.load(module, params)
    np.testing.assert_array_equal(module.bias[...], layer.bias.detach().numpy())
    from_torch.load(module, {"bias": layer.bias})  # a tensor as a parameter value, too


# -- modules: checked at construction -----------------------------------------------------------

BAD_OPTIONS = [
    ({"strides": 0}, ValueError, r"strides must be >= 1 in every dim, got \(0, 0\)"),
    ({"strides": (1, 1, 1)}, ValueError, r"strides needs one entry per spatial dim \(2\), got 3"),
    ({"padding_mode": "zero"}, ValueError, r"padding_mode must be one of .* got 'zero'"),
    ({"padding": "HALVES"}, ValueError, r"padding must be one of \('VALID', 'SAME'"),
    ({"padding": (1, 1, 1)}, ValueError, r"padding needs one entry per spatial dim \(2\), got 3"),
    ({"kernel_dilation": (1, 0)}, ValueError, r"kernel_dilation must be >= 1 in every dim"),
    ({"impl": "cudnn"}, ValueError, r"impl must be one of"),
    (
        {"param_dtype": jnp.int32},
        TypeError,
        r"param_dtype must be a floating \(.*\) or complex \(.*\) dtype, got 'int32'",
    ),
    (
        {"dtype": "int8"},
        TypeError,
        r"dtype must be a floating \(.*\) or complex \(.*\) dtype or None, got 'int8'",
    ),
    ({"precision": "HIGHEST"}, ValueError, r"precision must be None, a jax.lax.Precision"),
    ({"preferred_element_type": jnp.bool_}, TypeError, r"preferred_element_type must be a"),
    ({"use_bias": "yes"}, TypeError, r"use_bias must be a bool, got 'yes'"),
    ({"kernel_init": 0.1}, TypeError, r"kernel_init must be an initialiser"),
    (
        {"strides": 2, "impl": "fft"},
        ValueError,
        r"impl='fft' cannot run this convolution: it needs strides 1, got \(2, 2\)",
    ),
    (
        {"preferred_element_type": jnp.int32},
        TypeError,
        r"preferred_element_type must be a floating \(.*\) dtype or None, got 'int32'",
    ),
]

MODULES = {
    "Conv": ((4, 6, (3, 3)), (6, (3, 3))),
    "ConvTranspose": ((4, 6, (3, 3)), (6, (3, 3))),
    "DepthwiseConv": ((4, (3, 3)), ((3, 3),)),
    "DepthwiseSeparableConv": ((4, 6, (3, 3)), (6, (3, 3))),
    "SpatialSeparableConv": ((4, 6, (3, 3)), (6, (3, 3))),
}


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("options, error, match", BAD_OPTIONS, ids=lambda v: str(v)[:40])
def test_modules_check_options_at_construction(name, options, error, match):
    nnx_args, linen_args = MODULES[name]
    with pytest.raises(error, match=rf"^{name}: {match}"):
        getattr(convjax.nnx, name)(*nnx_args, **options, rngs=nnx.Rngs(0))
    with pytest.raises(error, match=rf"^{name}: {match}"):
        getattr(convjax.linen, name)(*linen_args, **options)


@pytest.mark.parametrize("family", ["nnx", "linen"])
@pytest.mark.parametrize("options", [{"param_dtype": jnp.complex64}, {"dtype": jnp.complex64}])
def test_deformable_layers_refuse_complex_dtypes_at_construction(family, options):
    args = (4, 6, (3, 3)) if family == "nnx" else (6, (3, 3))
    extra = {"rngs": nnx.Rngs(0)} if family == "nnx" else {}
    name = next(iter(options))
    with pytest.raises(TypeError, match=rf"^DeformableConv: {name} must be a floating .*complex64"):
        getattr(convjax, family).DeformableConv(*args, **options, **extra)


@pytest.mark.parametrize(
    "options, match",
    [
        (
            {"strides": 2, "output_padding": 2},
            r"output_padding must be smaller than the stride or the dilation in every dim, got "
            r"output_padding \(2, 2\) with strides \(2, 2\) and kernel_dilation \(1, 1\)",
        ),
        (
            {"strides": 2, "padding": "SAME", "output_padding": 1},
            r"output_padding must be 0 with padding 'SAME'",
        ),
        (
            {"strides": 2, "output_padding": 1, "output_shape": (9, 9)},
            r"pass output_padding or output_shape, not both",
        ),
        ({"output_shape": (9, 9, 9)}, r"output_shape needs one entry per spatial dim \(2\)"),
    ],
)
def test_conv_transpose_modules_check_output_size_options(options, match):
    with pytest.raises(ValueError, match=rf"^ConvTranspose: {match}"):
        convjax.nnx.ConvTranspose(4, 6, (3, 3), **options, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=rf"^ConvTranspose: {match}"):
        convjax.linen.ConvTranspose(6, (3, 3), **options)


def test_linen_modules_inside_a_parent_check_at_construction():
    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            return convjax.linen.DepthwiseConv((3, 3), depth_multiplier=0)(x)

    with pytest.raises(ValueError, match=r"^DepthwiseConv: depth_multiplier must be >= 1, got 0"):
        Model().init(jax.random.key(0), X)


@pytest.mark.parametrize("impl", ["lax", "taps", "gather", "planes"])
def test_circular_padding_many_times_the_input_wraps_like_numpy(impl):
    """Circular padding of 5 on a 2-long axis and 7 on a 1-long one: every padded cell is the
    input's cell at its position modulo the size, as NumPy's ``"wrap"``."""
    x = np.arange(2.0 * 2 * 1 * 3).reshape(2, 2, 1, 3)
    kernel = np.ones((1, 1, 3, 3))
    y = convjax.conv(x, kernel, padding=((5, 4), (7, 6)), padding_mode="circular", impl=impl)
    padded = np.pad(x, ((0, 0), (5, 4), (7, 6), (0, 0)), mode="wrap")
    np.testing.assert_allclose(y, padded @ kernel[0, 0], rtol=1e-6)


def test_a_locally_connected_layer_too_small_for_its_window_names_the_layer():
    with pytest.raises(
        ValueError, match=r"^ConvLocal: the output would be empty.* from input \(2, 2\)"
    ):
        convjax.nnx.ConvLocal(2, 4, (3, 3), in_spatial=(2, 2), rngs=nnx.Rngs(0))


@pytest.mark.parametrize("rngs", [{}, {"rngs": 0}])
def test_nnx_layers_name_themselves_when_rngs_is_missing(rngs):
    with pytest.raises(TypeError, match=r"^Conv: rngs must be an nnx.Rngs .*rngs=nnx.Rngs\(0\)"):
        convjax.nnx.Conv(3, 8, (3, 3), **rngs)
