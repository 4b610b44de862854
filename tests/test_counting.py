"""param_count / flop_count / receptive_field: the seed's numbers, XLA's own FLOP count, and
receptive fields found by following the index arithmetic backwards."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cases import configs
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

import convjax
from convjax import Layer
from convjax._src.checks import as_array


def xla_flops(f, *shapes):
    """XLA's own count for ``f`` compiled on these float32 shapes."""
    args = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in shapes]
    cost = jax.jit(f).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return int(cost["flops"])


def layer_of(case):
    o = case["options"]
    return Layer(
        case["kernel_shape"],
        strides=o["strides"],
        padding=o["padding"],
        dilation=o["dilation"],
        groups=o["groups"],
    )


# ---------------------------------------------------------------------------------------------
# the seed's numbers


def test_seed_parameter_counts():
    """I·O·K: 16 -> 32 channels, 3x3: 4608; depthwise separable (m = 1): 16·9 + 16·32 = 656."""
    assert convjax.param_count(Layer((3, 3, 16, 32))) == 16 * 32 * 9 == 4608
    separable = Layer.depthwise_separable((3, 3, 1, 16), (16, 32))
    assert convjax.param_count(separable) == 16 * 9 + 16 * 32 == 656
    assert [layer.kernel_shape for layer in separable] == [(3, 3, 1, 16), (1, 1, 16, 32)]
    assert separable[0].groups == 16


def test_seed_sobel_as_two_1d_kernels_has_6_parameters_and_the_same_field():
    sobel = Layer.spatial_separable([(3, 1, 1), (3, 1, 1)])
    dense = Layer((3, 3, 1, 1))
    assert convjax.param_count(sobel) == 6 and convjax.param_count(dense) == 9
    assert convjax.receptive_field(sobel) == convjax.receptive_field(dense)
    assert convjax.receptive_field(dense) == ((3, 3), (1, 1))
    assert [layer.kernel_shape for layer in sobel] == [(3, 1, 1, 1), (1, 3, 1, 1)]


def test_seed_3x3_at_rate_2_has_a_5x5_field_with_9_parameters():
    layer = Layer((3, 3, 1, 1), dilation=2)
    assert convjax.param_count(layer) == 9
    assert convjax.receptive_field(layer).size == (5, 5)
    # The field as jax sees it: the gradient of one output reaches a 5x5 square of the input.
    x = jnp.zeros((1, 9, 9, 1))
    grad = jax.grad(lambda x: convjax.dilated_conv(x, jnp.ones((3, 3, 1, 1)), rate=2)[0, 2, 2, 0])
    rows, cols = np.nonzero(np.asarray(grad(x))[0, :, :, 0])
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (5, 5)
    assert len(rows) == 9  # 9 taps, every second row and column


# ---------------------------------------------------------------------------------------------
# param_count


@given(case=configs())
def test_param_count_is_the_kernel_size(case):
    """I · O · K / groups, the number of weights of the kernel conv() takes; a bias adds C_out;
    the transposed conv of the same kernel has the same count."""
    layer = layer_of(case)
    i, o = case["x_shape"][-1], case["kernel_shape"][-1]
    k = math.prod(case["kernel_shape"][:-2])
    assert convjax.param_count(layer) == i * o * k // layer.groups == math.prod(layer.kernel_shape)
    assert convjax.param_count(Layer(layer.kernel_shape, groups=layer.groups, bias=True)) == (
        i * o * k // layer.groups + o
    )
    transposed = Layer(layer.kernel_shape, groups=layer.groups, transpose=True, bias=True)
    assert convjax.param_count(transposed) == i * o * k // layer.groups + i  # bias on C_in


def test_param_count_of_every_variant_is_the_size_of_its_arrays():
    rng = np.random.default_rng(0)
    x = as_array(rng.normal(size=(1, 10, 10, 8)))
    dw, pw = jnp.zeros((3, 3, 1, 16)), jnp.zeros((16, 12))  # depth multiplier 2
    a, b = jnp.zeros((5, 8, 4)), jnp.zeros((3, 4, 6))
    counts = {
        "grouped": (Layer((3, 3, 2, 12), groups=4), 3 * 3 * 2 * 12),
        "depthwise": (Layer((3, 3, 1, 16), groups=8), 3 * 3 * 16),
        "depthwise separable": (
            Layer.depthwise_separable(dw.shape, pw.shape, depth_multiplier=2),
            dw.size + pw.size,
        ),
        "spatially separable": (Layer.spatial_separable([a.shape, b.shape]), a.size + b.size),
        "separable with bias": (
            Layer.depthwise_separable(dw.shape, pw.shape, depth_multiplier=2, bias=True),
            dw.size + pw.size + 12,
        ),
    }
    for name, (layers, want) in counts.items():
        assert convjax.param_count(layers) == want, name
    # and those arrays are what the functions take
    assert convjax.depthwise_separable_conv(x, dw, pw).shape == (1, 8, 8, 12)
    assert convjax.spatial_separable_conv(x, [a, b]).shape == (1, 6, 8, 6)


def test_nested_sequences_are_flattened():
    block = Layer.depthwise_separable((3, 3, 1, 16), (16, 32))
    stack = [Layer((3, 3, 3, 16)), block, [block[0], (block[1],)]]
    assert convjax.param_count(stack) == 3 * 3 * 3 * 16 + 2 * 656


# ---------------------------------------------------------------------------------------------
# flop_count against XLA


@given(case=configs())
def test_flop_count_equals_xla_cost_analysis(case):
    """XLA (CPU) counts 2 flops per multiply-add and skips the taps that read zero padding; the
    other padding modes are materialised by jnp.pad, so every tap is counted.  The margin is 0,
    except for degenerate convs that XLA rewrites as a multiply and a reduction (seen for one
    multiply-add per output, and for a window spanning a whole input axis): there it counts the
    K − 1 adds of a K-term sum, exactly one flop per output element less."""
    layer = layer_of(case)
    conv = functools.partial(convjax.conv, impl="lax", **case["options"])
    xla = xla_flops(conv, case["x_shape"], case["kernel_shape"])
    zeros = case["options"]["padding_mode"] == "zeros"
    flops = convjax.flop_count(layer, case["x_shape"], unit="flops", count_padding=not zeros)
    out = convjax.output_shape(case["x_shape"], case["kernel_shape"], **case["options"])
    assert flops - xla in (0, math.prod(out)), (flops, xla)  # 0 unless XLA rewrote the conv
    dense = convjax.flop_count(layer, case["x_shape"])  # MACs, padding taps included
    assert dense == math.prod(out) * math.prod(case["kernel_shape"][:-1])
    # the margin of the dense count over the in-bounds count is exactly the padding taps
    in_bounds = in_bounds_taps(case) * math.prod(case["kernel_shape"][-2:])
    assert convjax.flop_count(layer, case["x_shape"], count_padding=False) == in_bounds
    assert flops == 2 * (in_bounds if zeros else dense)


def in_bounds_taps(case):
    """Brute force over every (output position, tap): those that read inside the input."""
    ndim = len(case["kernel_shape"]) - 2
    sizes = case["x_shape"][-ndim - 1 : -1]
    batch = math.prod(case["x_shape"][: -ndim - 1])
    ref = case["ref"]
    out = convjax.output_shape(case["x_shape"], case["kernel_shape"], **case["options"])
    count = 0
    for o in np.ndindex(*out[-ndim - 1 : -1]):
        for t in np.ndindex(*case["kernel_shape"][:ndim]):
            pos = [
                o[a] * ref["strides"][a] - ref["padding"][a][0] + t[a] * ref["dilation"][a]
                for a in range(ndim)
            ]
            count += all(0 <= p < n for p, n in zip(pos, sizes))
    return batch * count


@pytest.mark.parametrize("bias", [False, True])
def test_every_variant_against_xla(bias):
    x = (2, 12, 11, 8)
    rng = np.random.default_rng(1)

    def biased(f, channels):
        b = as_array(rng.normal(size=channels), jnp.float32).reshape(1, 1, 1, channels)
        return (lambda *a: f(*a) + b) if bias else f

    variants = [
        (
            biased(functools.partial(convjax.conv, strides=2, padding="SAME", impl="lax"), 16),
            [(3, 3, 8, 16)],
            Layer((3, 3, 8, 16), strides=2, padding="SAME", bias=bias),
        ),
        (
            biased(functools.partial(convjax.dilated_conv, rate=(2, 3), padding=2, impl="lax"), 4),
            [(3, 3, 8, 4)],
            Layer((3, 3, 8, 4), dilation=(2, 3), padding=2, bias=bias),
        ),
        (
            biased(functools.partial(convjax.conv, groups=4, padding="CAUSAL", impl="lax"), 12),
            [(2, 3, 2, 12)],
            Layer((2, 3, 2, 12), groups=4, padding="CAUSAL", bias=bias),
        ),
        (
            biased(functools.partial(convjax.depthwise_conv, padding="SAME", impl="lax"), 16),
            [(3, 3, 1, 16)],
            Layer((3, 3, 1, 16), groups=8, padding="SAME", bias=bias),
        ),
        (
            biased(
                functools.partial(
                    convjax.depthwise_separable_conv, strides=2, padding=1, impl="lax"
                ),
                5,
            ),
            [(3, 3, 1, 16), (16, 5)],
            Layer.depthwise_separable(
                (3, 3, 1, 16), (16, 5), depth_multiplier=2, strides=2, padding=1, bias=bias
            ),
        ),
        (
            biased(
                lambda x, a, b: convjax.spatial_separable_conv(
                    x, [a, b], padding="SAME", strides=(1, 2), groups=2, impl="lax"
                ),
                6,
            ),
            [(5, 4, 4), (3, 2, 6)],
            Layer.spatial_separable(
                [(5, 4, 4), (3, 2, 6)], padding="SAME", strides=(1, 2), groups=2, bias=bias
            ),
        ),
    ]
    for f, kernel_shapes, layers in variants:
        xla = xla_flops(f, x, *kernel_shapes)
        assert convjax.flop_count(layers, x, unit="flops", count_padding=False) == xla, layers


@pytest.mark.parametrize(
    "strides, padding, output_padding, dilation",
    [(2, 1, 0, 1), (2, 1, 1, 1), (3, "SAME", 0, 1), (2, "VALID", 1, 2), (1, "FULL", 0, 1)],
)
def test_transposed_counts_the_forward_conv_and_matches_xla(
    strides, padding, output_padding, dilation
):
    """A transposed conv is the adjoint of its forward conv (jax.linear_transpose): the same
    multiply-adds, prod(its input positions) · prod(kernel_shape) of them."""
    kernel_shape, x_shape = (3, 3, 6, 10), (2, 5, 4, 10)  # [*window, C_out // groups, C_in]
    layer = Layer(
        kernel_shape,
        strides=strides,
        padding=padding,
        dilation=dilation,
        transpose=True,
        output_padding=output_padding,
    )
    options = dict(strides=strides, padding=padding, dilation=dilation, impl="lax")

    def transposed(x, kernel):
        return convjax.conv_transpose(x, kernel, output_padding=output_padding, **options)

    out = jax.eval_shape(
        transposed, *(jax.ShapeDtypeStruct(s, jnp.float32) for s in (x_shape, kernel_shape))
    ).shape

    def adjoint(x, kernel):  # by definition, independent of conv_transpose
        forward = functools.partial(convjax.conv, kernel=kernel, **options)
        return jax.linear_transpose(forward, jax.ShapeDtypeStruct(out, jnp.float32))(x)[0]

    macs = convjax.flop_count(layer, x_shape)
    assert macs == math.prod(x_shape[:-1]) * math.prod(kernel_shape)
    forward = Layer(kernel_shape, strides=strides, padding=padding, dilation=dilation)
    assert macs == convjax.flop_count(forward, out)  # the forward conv of the result's shape
    for f in (adjoint, transposed):
        xla = xla_flops(f, x_shape, kernel_shape)
        assert convjax.flop_count(layer, x_shape, unit="flops", count_padding=False) == xla
    # the next layer sees conv_transpose's output shape
    stack = [layer, Layer((1, 1, 6, 2))]
    assert convjax.flop_count(stack, x_shape) == macs + math.prod(out[:-1]) * 6 * 2


def test_stack_counts_flow_through_the_shapes():
    """A small encoder-decoder with biases, against XLA compiling the whole stack."""
    shapes = [(3, 3, 3, 16), (3, 3, 1, 16), (16, 32), (2, 2, 16, 32)]
    stack = [
        Layer((3, 3, 3, 16), strides=2, padding="SAME", bias=True),
        Layer.depthwise_separable((3, 3, 1, 16), (16, 32), padding="SAME", bias=True),
        Layer((2, 2, 16, 32), strides=2, transpose=True),
    ]
    x = (2, 16, 16, 3)

    def net(x, k1, dw, pw, kt):
        y = convjax.conv(x, k1, strides=2, padding="SAME", impl="lax") + 1.0
        y = convjax.depthwise_separable_conv(y, dw, pw, padding="SAME", impl="lax") + 1.0
        return convjax.conv_transpose(y, kt, strides=2, impl="lax")

    xla = xla_flops(net, x, *shapes)
    assert convjax.flop_count(stack, x, unit="flops", count_padding=False) == xla
    macs = convjax.flop_count(stack, x)
    per_layer = [  # batch 2, 8x8 positions after the first layer
        2 * 8 * 8 * 3 * 3 * 3 * 16 + 2 * 8 * 8 * 16,  # conv + bias
        2 * 8 * 8 * 3 * 3 * 16,  # depthwise
        2 * 8 * 8 * 16 * 32 + 2 * 8 * 8 * 32,  # pointwise + bias
        2 * 8 * 8 * 2 * 2 * 16 * 32,  # transposed: its 8x8 inputs times the kernel
    ]
    assert macs == sum(per_layer)
    assert convjax.flop_count(stack, x, unit="flops") == 2 * macs - 2 * 8 * 8 * (16 + 32)


def test_units():
    layer = Layer((3, 3, 4, 8), padding=1)
    macs = convjax.flop_count(layer, (6, 6, 4))
    assert macs == 36 * 3 * 3 * 4 * 8
    assert convjax.flop_count(layer, (6, 6, 4), unit="flops") == 2 * macs
    with_bias = Layer((3, 3, 4, 8), padding=1, bias=True)
    assert convjax.flop_count(with_bias, (6, 6, 4)) == macs + 36 * 8
    assert convjax.flop_count(with_bias, (6, 6, 4), unit="flops") == 2 * macs + 36 * 8


def test_counts_from_traced_shapes_under_jit():
    """Shapes are static under jit, so a layer can be described from the arrays themselves."""

    @jax.jit
    def f(x, kernel):
        layer = Layer(kernel.shape, padding="SAME")
        assert convjax.flop_count(layer, x.shape) == 2 * 7 * 7 * 9 * 3 * 5
        assert convjax.param_count(layer) == kernel.size
        return convjax.conv(x, kernel, padding="SAME")

    f(jnp.zeros((2, 7, 7, 3)), jnp.zeros((3, 3, 3, 5)))


# ---------------------------------------------------------------------------------------------
# receptive_field


def field_1d(layers, output):
    """The input positions one output of a stack of 1-D layers reads: the index arithmetic
    ``i = o·s + t·d`` followed backwards through every layer (no padding, unbounded)."""
    reads = {output}
    for layer in reversed(layers):
        (k,), (s,), (d,) = layer.window, layer.strides, layer.dilation
        if layer.transpose:  # output o' reads input i where o' = i·s + t·d
            reads = {(o - t * d) // s for o in reads for t in range(k) if (o - t * d) % s == 0}
        else:
            reads = {o * s + t * d for o in reads for t in range(k)}
    return reads


layer_1d = st.builds(
    lambda k, s, d: Layer((k, 1, 1), strides=s, dilation=d),
    st.integers(1, 5),
    st.integers(1, 3),
    st.integers(1, 3),
)


@given(layers=st.lists(layer_1d, min_size=1, max_size=4))
def test_receptive_field_of_forward_stacks_by_brute_force(layers):
    field = convjax.receptive_field(layers)
    first, second = field_1d(layers, 10), field_1d(layers, 11)
    assert field.size == (max(first) - min(first) + 1,)
    assert field.jump == (min(second) - min(first),)
    size, jump = 1, 1
    for layer in layers:  # r_out = r_in + (k̂ − 1)·jump_in, jump_out = jump_in·s
        size += (convjax.effective_window(layer.window[0], layer.dilation[0]) - 1) * jump
        jump *= layer.strides[0]
    assert field == ((size,), (jump,))


@given(k=st.integers(1, 6), s=st.integers(1, 4), d=st.integers(1, 3))
def test_receptive_field_of_a_transposed_layer_bounds_its_reads(k, s, d):
    """Through a transposed layer the size is the upsampled span 1 + (k̂ − 1)/s: every output
    reads at most that many inputs, exactly that many when s divides k̂ − 1."""
    layer = Layer((k, 1, 1), strides=s, dilation=d, transpose=True)
    field = convjax.receptive_field(layer)
    span = convjax.effective_window(k, d)
    assert field.jump[0] * s == 1 and field.size[0] * s == s + span - 1
    reads = [field_1d([layer], o) for o in range(s)]  # one output of every phase
    widest = max(max(r) - min(r) + 1 for r in reads if r)
    assert widest <= field.size[0]
    if (span - 1) % s == 0:
        assert widest == field.size[0]


def test_receptive_field_per_dim_and_through_a_decoder():
    encoder = [Layer((3, 5, 1, 1), strides=(2, 1), dilation=(1, 2))] * 2
    field = convjax.receptive_field(encoder)
    assert field == ((1 + 2 + 2 * 2, 1 + 8 + 8), (4, 1))
    decoder = [*encoder, Layer((2, 1, 1, 1), strides=(2, 1), transpose=True)]
    assert convjax.receptive_field(decoder) == ((7 + 2, 17), (2, 1))
    assert all(isinstance(v, int) for v in convjax.receptive_field(decoder).size)


# ---------------------------------------------------------------------------------------------
# Layer and errors


def test_layer_is_normalised_frozen_and_hashable():
    a = Layer((3, 3, 4, 8), strides=2, padding="same", dilation=1)
    b = Layer((3, 3, 4, 8), strides=(2, 2), padding="SAME", dilation=(1, 1))
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert Layer((3, 3, 4, 8), padding=1).padding == ((1, 1), (1, 1))
    assert (a.in_channels, a.out_channels) == (4, 8)
    t = Layer((3, 3, 4, 8), groups=2, transpose=True)
    assert (t.in_channels, t.out_channels) == (8, 8)
    with pytest.raises(AttributeError):
        a.groups = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    "build, error, match",
    [
        (lambda: Layer((3, 3)), ValueError, r"Layer: kernel_shape must have rank >= 3"),
        (lambda: Layer((3, 0, 1, 1)), ValueError, r"kernel_shape must have rank >= 3 .*sizes >= 1"),
        (lambda: Layer(3), TypeError, r"Layer: kernel_shape must be a sequence of ints, got int"),
        (
            lambda: Layer((3, 3, 2, 6), groups=4),
            ValueError,
            r"Layer: groups must divide kernel_shape\[-1\], but 4 does not divide 6",
        ),
        (lambda: Layer((3, 3, 1, 1), strides=0), ValueError, r"Layer: strides must be >= 1"),
        (lambda: Layer((3, 3, 1, 1), padding="HALVES"), ValueError, r"padding must be one of"),
        (lambda: Layer((3, 3, 1, 1), bias=1), TypeError, r"Layer: bias must be a bool, got 1"),
        (
            lambda: Layer((3, 3, 1, 1), strides=2, output_padding=1),
            ValueError,
            r"Layer: output_padding needs transpose=True",
        ),
        (
            lambda: Layer((3, 3, 1, 1), strides=2, output_padding=2, transpose=True),
            ValueError,
            r"output_padding must be smaller than the stride or the dilation",
        ),
        (
            lambda: Layer.depthwise_separable((3, 3, 1, 16), (8, 32)),
            ValueError,
            r"Layer\.depthwise_separable: pointwise_shape must be \[C_in \* depth_multiplier, "
            r"C_out\] with C_in \* depth_multiplier = 16 \(depthwise_shape\[-1\]\), got \(8, 32\)",
        ),
        (
            lambda: Layer.depthwise_separable((3, 3, 2, 16), (16, 32)),
            ValueError,
            r"depthwise_shape must be \[\*window, 1, C_in \* depth_multiplier\]",
        ),
        (
            lambda: Layer.spatial_separable([(3, 1, 4), (3, 2, 4)]),
            ValueError,
            r"Layer\.spatial_separable: the 1-D kernels must chain, kernels\[1\]\.shape\[1\] "
            r"must be C // groups = 4 // 1 = 4",
        ),
        (
            lambda: Layer.spatial_separable([(3, 3, 1, 1)]),
            ValueError,
            r"kernels\[0\] must be a 1-D kernel \[k, C_in // groups, C_out\] of rank 3",
        ),
        (
            lambda: Layer.spatial_separable([]),
            ValueError,
            r"Layer\.spatial_separable: kernels must hold one 1-D kernel",
        ),
        (
            lambda: convjax.flop_count(Layer((3, 3, 4, 8)), (8, 8, 5)),
            ValueError,
            r"flop_count: layers\[0\] takes 4 input channels \(kernel_shape \(3, 3, 4, 8\), "
            r"groups 1\), got an input of shape \(8, 8, 5\)",
        ),
        (
            lambda: convjax.flop_count([Layer((3, 3, 4, 8)), Layer((3, 3, 4, 8))], (8, 8, 4)),
            ValueError,
            r"flop_count: layers\[1\] takes 4 input channels .* got an input of shape \(6, 6, 8\)",
        ),
        (
            lambda: convjax.flop_count(Layer((9, 3, 4, 8)), (8, 8, 4)),
            ValueError,
            r"flop_count: layers\[0\]: the output would be empty",
        ),
        (
            lambda: convjax.flop_count(Layer((3, 3, 4, 8)), (8, 8, 4), unit="gflops"),
            ValueError,
            r"flop_count: unit must be one of \('macs', 'flops'\), got 'gflops'",
        ),
        (
            lambda: convjax.flop_count(Layer((3, 3, 4, 8)), (8, 4)),
            ValueError,
            r"flop_count: the input of layers\[0\] must have rank >= 3",
        ),
        (
            lambda: convjax.param_count([Layer((3, 1, 1)), Layer((3, 3, 1, 1))]),
            ValueError,
            r"param_count: every layer must have the same number of spatial dims, got \[1, 2\]",
        ),
        (lambda: convjax.receptive_field([]), ValueError, r"receptive_field: layers must hold"),
        (
            lambda: convjax.param_count((3, 3, 1, 1)),
            TypeError,
            r"param_count: layers must be a convjax.Layer or a sequence of them, got int\.$",
        ),
        (  # a module is not a shape description: say what is, and how to count a module
            lambda: convjax.param_count(convjax.nnx.Conv(3, 8, (3, 3), rngs=nnx.Rngs(0))),
            TypeError,
            r"got Conv \(describe the layer's shapes with convjax.Layer\(kernel_shape, \.\.\.\); "
            r"a module's own parameters count as sum\(p.size for p in",
        ),
    ],
)
def test_errors(build, error, match):
    with pytest.raises(error, match=match):
        build()
