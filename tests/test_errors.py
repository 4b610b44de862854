"""Bad input raises ValueError / TypeError at trace time, naming op, argument, rule and value."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import pytest

import convjax

X = jnp.zeros((2, 8, 8, 4), jnp.float32)
K = jnp.zeros((3, 3, 4, 6), jnp.float32)


@pytest.mark.parametrize(
    "x, kernel, options, error, match",
    [
        (X, jnp.zeros((3, 4), jnp.float32), {}, ValueError, r"conv: kernel must have rank >= 3"),
        (jnp.zeros((8, 4), jnp.float32), K, {}, ValueError, r"conv: x must have rank >= 3"),
        (
            X,
            jnp.zeros((3, 3, 5, 6), jnp.float32),
            {},
            ValueError,
            r"kernel.shape\[-2\] must be C_in // groups = 4 // 1 = 4, got 5",
        ),
        (
            X,
            jnp.zeros((3, 3, 1, 6), jnp.float32),
            {"groups": 3},
            ValueError,
            r"groups must divide the input channels, but 3 does not divide 4",
        ),
        (
            X,
            jnp.zeros((3, 3, 2, 5), jnp.float32),
            {"groups": 2},
            ValueError,
            r"groups must divide the output channels .* 2 does not divide 5",
        ),
        (X, K, {"groups": 0}, ValueError, r"groups must be >= 1, got 0"),
        (X, K, {"groups": 1.0}, TypeError, r"groups must be an int, got 1.0"),
        (X, K, {"strides": 0}, ValueError, r"strides must be >= 1 in every dim, got \(0, 0\)"),
        (
            X,
            K,
            {"strides": (1, 2, 1)},
            ValueError,
            r"strides needs one entry per spatial dim \(2\), got 3",
        ),
        (X, K, {"dilation": (1, -1)}, ValueError, r"dilation must be >= 1 in every dim"),
        (X, K, {"strides": True}, TypeError, r"strides must be an int, got True"),
        (X, K, {"padding": "HALVES"}, ValueError, r"padding must be one of .*got 'HALVES'"),
        (
            X,
            K,
            {"padding": (1, 1, 1)},
            ValueError,
            r"padding needs one entry per spatial dim \(2\), got 3",
        ),
        (X, K, {"padding": ((1, 2, 3), (0, 0))}, ValueError, r"padding pair must be \(lo, hi\)"),
        (X, K, {"padding": -1}, ValueError, r"padding must be non-negative"),
        (X, K, {"padding": ((0, -2), (0, 0))}, ValueError, r"padding must be non-negative"),
        (
            X,
            K,
            {"padding_mode": "mirror"},
            ValueError,
            r"padding_mode must be one of .*got 'mirror'",
        ),
        (
            X,
            K,
            {"padding": 8, "padding_mode": "reflect"},
            ValueError,
            r"reflect padding must be smaller than the input size.*size 8 and padding \(8, 8\)",
        ),
        (
            X,
            jnp.zeros((9, 3, 4, 6), jnp.float32),
            {},
            ValueError,
            r"conv: the output would be empty: spatial output \(0, 6\)",
        ),
        (X, K, {"dilation": 4}, ValueError, r"output would be empty"),
        (
            X,
            K,
            {"impl": "cudnn"},
            ValueError,
            r"impl must be one of \('auto', 'lax', 'gather', 'taps', 'fft'.*got 'cudnn'",
        ),
        (X, K, {"impl": 3}, TypeError, r"impl must be one of"),
        (
            X.astype(jnp.bool_),
            K.astype(jnp.bool_),
            {},
            TypeError,
            r"x must have a floating \(.*\), complex \(.*\) or integer .*\(.*\) dtype, got bool",
        ),
        (  # sub-byte integers: XLA:CPU refuses some outright
            X.astype(jnp.int4),
            K.astype(jnp.int4),
            {"preferred_element_type": jnp.int32},
            TypeError,
            r"x must have a .* integer of 8 bits or more \(.*\) dtype, got int4",
        ),
        (X.astype(jnp.uint2), K.astype(jnp.uint2), {}, TypeError, r"got uint2"),
        (
            X,
            K.astype(jnp.float16),
            {},
            TypeError,
            r"x and kernel must share a dtype, got x float32 and kernel float16; cast one, e\.g\. "
            r"kernel\.astype\(x\.dtype\)",
        ),
        ([[1.0]], K, {}, TypeError, r"conv: x must be an array, got list"),
    ],
)
def test_conv_errors(x, kernel, options, error, match):
    with pytest.raises(error, match=match):
        convjax.conv(x, kernel, **options)
    if isinstance(x, jax.Array):  # the same error, raised while tracing under jit
        with pytest.raises(error, match=match):
            jax.jit(lambda a, b: convjax.conv(a, b, **options)).lower(x, kernel)


def test_errors_name_the_calling_function():
    with pytest.raises(ValueError, match=r"dilated_conv: rate must be >= 1 in every dim"):
        convjax.dilated_conv(X, K, rate=0)
    with pytest.raises(
        ValueError,
        match=r"depthwise_conv: a depthwise kernel must be "
        r"\[\*window, 1, C_in \* depth_multiplier\].*C_in = 4",
    ):
        convjax.depthwise_conv(X, jnp.zeros((3, 3, 1, 6), jnp.float32))
    with pytest.raises(ValueError, match=r"output_shape: strides must be >= 1"):
        convjax.output_shape((8, 8, 4), (3, 3, 4, 4), strides=0)
    with pytest.raises(ValueError, match=r"GatherBackend: memory_budget must be >= 1"):
        convjax.GatherBackend(memory_budget=0)


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: convjax.output_shape((8, 8, 3), (3, 3, 3, 3, 4)),
            r"^output_shape: input_shape must have rank >= 4 .* got shape \(8, 8, 3\)\.$",
        ),
        (
            lambda: convjax.index_map((2, 0, 8, 3), (3, 3, 3, 4)),
            r"^index_map: spatial sizes must be >= 1, got input_shape spatial \(0, 8\)",
        ),
        (
            lambda: convjax.auto_choice((2, 8, 8, 3), (3, 3, 4, 4)),
            r"^auto_choice: .*\(kernel shape \(3, 3, 4, 4\), input_shape \(2, 8, 8, 3\)\)",
        ),
        (
            lambda: convjax.output_shape((2, 3, 8, 8), (3, 3, 3, 4)),
            r"Likely: input_shape looks channels-first \(axis 1 has 3 = C_in\): convjax is "
            r"channels-last, \[\*batch, \*spatial, C\]; write it \(2, 8, 8, 3\)\.$",
        ),
        (
            lambda: convjax.auto_choice((2, 8, 8, 3), (3, 3, 4, 4), transpose=True),
            r"^auto_choice: kernel.shape\[-1\] must equal the channels of input_shape \(3\)",
        ),
        (
            lambda: convjax.local_layer_count((2, 0, 3), (3,), 4),
            r"^local_layer_count: spatial sizes must be >= 1, got input_shape spatial \(0,\)",
        ),
        (
            lambda: convjax.fold(jnp.ones((2, 6, 6, 27)), (8, 8), (3, 3)),
            r"^fold: input_shape must be \[\*batch, \*spatial, C\] with 2 spatial dims",
        ),
        (  # the layer whose output is empty, with the stack's input shape and axes
            lambda: convjax.flop_count(
                [convjax.Layer((3, 3, 3, 8)), convjax.Layer((5, 5, 8, 8))], (2, 5, 5, 3)
            ),
            r"^flop_count: layers\[1\]: the output would be empty: .* from input \(3, 3\) "
            r"\(axes 1, 2 of shape \(2, 3, 3, 8\)",
        ),
    ],
)
def test_functions_of_shapes_call_the_input_by_its_argument_name(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# -- porting mistakes: the hint names what is actually wrong -------------------------------------


@pytest.mark.parametrize(
    "x_shape, kernel_shape, groups, says, not_says",
    [
        # PyTorch's NCHW input, a convjax kernel: x is what to fix.
        (
            (8, 16, 32, 32),
            (3, 3, 16, 64),
            1,
            r"Likely: x looks channels-first \(axis 1 has 16 = C_in\).*"
            r"data_format='channels_first'.*jnp\.moveaxis\(x, 1, -1\)\.$",
            ("kernel's last two axes", "PyTorch's [C_out"),
        ),
        # A channels-last x, a kernel with in/out swapped (PyTorch's [out, in] moved last).
        (
            (8, 28, 28, 16),
            (3, 3, 32, 16),
            1,
            r"Likely: the kernel's last two axes look swapped, \[\*window, C_out, C_in // groups\] "
            r"\(kernel\.shape\[-1\] = 16 = C_in // groups\).*jnp\.swapaxes\(kernel, -1, -2\)\.$",
            ("x looks channels-first", "PyTorch's [C_out"),
        ),
        (
            (8, 9, 9, 8),
            (3, 3, 6, 4),
            2,
            r"kernel's last two axes look swapped.*kernel\.shape\[-1\] = 4 = C_in // groups",
            ("x looks channels-first",),
        ),
        # A PyTorch-layout kernel [C_out, C_in, kh, kw] with a channels-last x.
        (
            (8, 32, 32, 16),
            (32, 16, 3, 3),
            1,
            r"Likely: the kernel looks like PyTorch's \[C_out, C_in // groups, \*window\] layout "
            r"\(kernel\.shape\[1\] = 16 = C_in // groups\).*from_torch\.conv_kernel\(weight\), "
            r"i\.e\. jnp\.transpose\(kernel, \(2, 3, 1, 0\)\)\.$",
            ("x looks channels-first", "swapped"),
        ),
        # A depthwise PyTorch kernel [C·m, 1, kh, kw]: the window is read as output channels.
        (
            (8, 9, 9, 8),
            (8, 1, 3, 3),
            8,
            r"groups must divide the output channels .* 8 does not divide 3\. Likely: the kernel "
            r"looks like PyTorch's",
            ("x looks channels-first",),
        ),
        # Both in PyTorch's layouts.
        (
            (8, 16, 32, 32),
            (32, 16, 3, 3),
            1,
            r"Likely: x and the kernel both look like PyTorch's layouts \(x axis 1 has 16 = "
            r"kernel\.shape\[1\] \* groups channels.*data_format='channels_first' and convert "
            r"the kernel",
            ("swapped",),
        ),
    ],
)
def test_a_channel_mismatch_hint_names_what_is_wrong(x_shape, kernel_shape, groups, says, not_says):
    x, kernel = jnp.zeros(x_shape, jnp.float32), jnp.zeros(kernel_shape, jnp.float32)
    with pytest.raises(ValueError, match=r"^conv: ") as excinfo:
        convjax.conv(x, kernel, groups=groups)
    message = str(excinfo.value)
    assert re.search(says, message), message
    assert message.count("Likely:") == 1 and "; or " not in message, message
    for phrase in not_says:
        assert phrase not in message, message


@pytest.mark.parametrize(
    "x_shape, kernel_shape, likely, also",
    [
        # 32x32 images of 16 channels and a swapped kernel, or 32x16 images of 32 channels.
        (
            (8, 32, 32, 16),
            (3, 3, 32, 16),
            "the kernel's last two axes look swapped",
            "x looks channels-first (axis 1 has 32 = C_in)",
        ),
        # NCHW RGB 32x32 images, or 3x32 images of 32 channels and a swapped kernel.
        (
            (2, 3, 32, 32),
            (3, 3, 3, 32),
            "x looks channels-first (axis 1 has 3 = C_in)",
            "the kernel's last two axes look swapped",
        ),
    ],
)
def test_a_hint_that_fits_two_mistakes_names_both_square_images_first(
    x_shape, kernel_shape, likely, also
):
    """Both readings explain these shapes: both are said, first the one that makes the images
    square."""
    with pytest.raises(ValueError) as excinfo:
        convjax.conv(jnp.zeros(x_shape), jnp.zeros(kernel_shape))
    hint = str(excinfo.value).split("Likely: ")[1]
    assert hint.startswith(likely) and f"; or {also}" in hint, hint


def test_no_hint_when_no_porting_mistake_fits():
    with pytest.raises(ValueError) as excinfo:
        convjax.conv(jnp.zeros((8, 9, 9, 5)), jnp.zeros((3, 3, 4, 6)))
    assert "Likely" not in str(excinfo.value)
    with pytest.raises(ValueError) as excinfo:
        convjax.conv(jnp.zeros((8, 9, 9, 8)), jnp.zeros((3, 3, 2, 5)), groups=2)
    assert "Likely" not in str(excinfo.value)


def test_a_formulation_class_where_an_instance_belongs_says_so():
    with pytest.raises(
        TypeError,
        match=r"^conv: impl must be .* the class LaxBackend; pass an instance, LaxBackend\(\)\.$",
    ):
        convjax.conv(X, K, impl=convjax.LaxBackend)


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"dtype": "foo"}, TypeError, r"^auto_choice: dtype must be a floating .* got 'foo'\.$"),
        (
            {"foo": 1},
            TypeError,
            r"^auto_choice: unknown option 'foo'; with transpose=False it takes dilation, groups",
        ),
        ({"output_padding": 1}, TypeError, r"^auto_choice: unknown option 'output_padding'"),
    ],
)
def test_auto_choice_names_itself_for_bad_options(options, error, match):
    with pytest.raises(error, match=match):
        convjax.auto_choice(X.shape, K.shape, **options)


def test_a_formulation_returning_the_wrong_shape_is_named():
    """A user's formulation that gets the shape wrong: an error naming it, not XLA's verifier."""

    @dataclasses.dataclass(frozen=True)
    class Cropping(convjax.LaxBackend):
        name: str = dataclasses.field(default="cropping", init=False)

        def __call__(self, x, kernel, spec, **options):
            return super().__call__(x, kernel, spec, **options)[:, 1:]

    with pytest.raises(
        ValueError,
        match=r"^conv: impl='cropping' returned shape \(2, 5, 6, 6\) for the convolution, "
        r"expected \(2, 6, 6, 6\)\.",
    ):
        convjax.conv(X, K, impl=Cropping())


def test_channels_first_errors_show_x_as_passed_and_no_hint_to_pass_it():
    x, kernel = jnp.ones((1, 2, 5, 5)), jnp.ones((7, 7, 2, 4))
    match = r"\(axes 2, 3 of shape \(1, 2, 5, 5\), read as \[\*batch, C, \*spatial\]\)"
    with pytest.raises(ValueError, match=match):
        convjax.conv(x, kernel, data_format="channels_first")
    with pytest.raises(ValueError, match=match):
        convjax.unfold(x, (7, 7), data_format="channels_first")
    with pytest.raises(
        ValueError, match=r"x shape \(1, 6, 6, 2\)\)\. Likely: x looks channels-last"
    ):
        convjax.conv(jnp.ones((1, 6, 6, 2)), jnp.ones((3, 3, 2, 4)), data_format="channels_first")
    with pytest.raises(ValueError) as error:
        convjax.conv(
            jnp.ones((1, 3, 6, 6)), jnp.ones((3, 3, 2, 4)), groups=2, data_format="channels_first"
        )
    assert "data_format" not in str(error.value)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_another_frameworks_tensor_is_refused_by_name(data_format):
    class Tensor:  # a tensor NumPy cannot read the dtype of, like torch.Tensor
        shape, dtype = (1, 5, 5, 3), "torch.float32"

    with pytest.raises(TypeError, match=r"^conv: x must be a JAX or NumPy array, got a .*Tensor"):
        convjax.conv(Tensor(), jnp.ones((3, 3, 3, 4)), data_format=data_format)
    with pytest.raises(TypeError, match=r"^conv: x must be an array, got list"):
        convjax.conv([[1.0]], jnp.ones((3, 3, 3, 4)), data_format=data_format)


def test_layout_hints_fit_the_mistake_and_only_it():
    with pytest.raises(ValueError) as error:  # a convjax kernel with the wrong C_in: no layout
        convjax.conv(jnp.ones((1, 8, 8, 3)), jnp.ones((3, 3, 4, 8)))
    assert "Likely" not in str(error.value)
    with pytest.raises(ValueError, match=r"x looks channels-last .*: drop data_format\.$"):
        convjax.conv(
            jnp.ones((8, 32, 32, 3)), jnp.ones((3, 3, 3, 16)), data_format="channels_first"
        )


def test_an_array_where_a_shape_belongs_is_named_not_printed():
    match = r"^halo_plan: kernel_shape must be a sequence of ints, got an array of shape "
    with pytest.raises(TypeError, match=match + r"\(3, 3, 2, 4\); pass its \.shape\.$"):
        convjax.halo_plan(jnp.ones((1, 8, 8, 2)), jnp.ones((3, 3, 2, 4)))


def test_a_flat_padding_of_pairs_gets_the_pairs_written_out():
    with pytest.raises(
        ValueError, match=r"got 2: \(2, 0\); for \(lo, hi\) pairs write \(\(2, 0\),\)\.$"
    ):
        convjax.conv(jnp.ones((1, 9, 4)), jnp.ones((3, 4, 4)), padding=(2, 0))
    with pytest.raises(
        ValueError, match=r"F\.pad's last-dim-first order, \(\(2, 0\), \(1, 1\)\)\)\.$"
    ):
        convjax.conv(jnp.ones((1, 9, 9, 4)), jnp.ones((3, 3, 4, 4)), padding=(1, 1, 2, 0))


def test_transposed_and_depthwise_layout_hints():
    y = jnp.ones((2, 8, 8, 16))
    with pytest.raises(ValueError, match=r"Likely: the kernel looks like PyTorch's ConvTranspose"):
        convjax.conv_transpose(y, jnp.ones((16, 3, 3, 3)), strides=2)
    with pytest.raises(ValueError, match=r"Likely: x looks channels-first \(axis 1 has 16"):
        convjax.conv_transpose(jnp.ones((2, 16, 8, 8)), jnp.ones((3, 3, 3, 16)), strides=2)
    with pytest.raises(ValueError, match=r"Likely: the kernel's last two axes look swapped"):
        convjax.conv_transpose(jnp.ones((2, 9, 9, 16)), jnp.ones((3, 3, 16, 8)), strides=2)
    with pytest.raises(ValueError, match=r"Likely: the kernel looks like PyTorch's depthwise"):
        convjax.depthwise_conv(jnp.ones((1, 5, 5, 16)), jnp.ones((16, 1, 3, 3)))
    with pytest.raises(ValueError, match=r"Likely: x looks channels-first \(axis 1 has 16"):
        convjax.depthwise_conv(jnp.ones((1, 16, 5, 5)), jnp.ones((3, 3, 1, 16)))
    with pytest.raises(ValueError) as error:  # a plain mismatch: no layout to blame
        convjax.depthwise_conv(jnp.ones((1, 5, 5, 16)), jnp.ones((3, 3, 1, 12)))
    assert "Likely" not in str(error.value)


def test_transposes_jax_takes_refuse_integers_and_booleans_by_name():
    patches = convjax.unfold(jnp.ones((5, 5, 3), bool), (3, 3))
    with pytest.raises(TypeError, match=r"^fold: patches must be a floating .* got 'bool'"):
        convjax.fold(patches, (5, 5, 3), (3, 3))
    x, kernel = jnp.ones((4, 1), jnp.int32), jnp.ones((4, 3, 1, 1), jnp.int32)
    with pytest.raises(TypeError, match=r"^local_conv_transpose: x must have a floating .*int32"):
        convjax.local_conv_transpose(x, kernel)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: convjax.dilated_conv(X, K, dilation=2), r"'dilation' \(convjax calls it rate=\)"),
        (lambda: convjax.conv(X, K, stride=2), r"^conv: .* 'stride' \(convjax calls it strides=\)"),
        (lambda: convjax.conv(X, K, feature_group_count=2), r"\(convjax calls it groups=\)\.$"),
        (lambda: convjax.conv_transpose(X, K, kernel_dilation=2), r"calls it dilation=\)\.$"),
        (lambda: convjax.conv(X, K, paddng=1), r"'paddng' \(did you mean padding=\?\)\.$"),
        (lambda: convjax.conv(X, K, foo=1), r"^conv: got an unexpected keyword argument 'foo'\.$"),
    ],
)
def test_another_librarys_name_for_an_option_gets_convjaxs(call, match):
    with pytest.raises(TypeError, match=match):
        call()
