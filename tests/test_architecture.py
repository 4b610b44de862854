"""The layers of ``docs/architecture.md`` hold: imports point down, no module imports another in a
cycle, imports inside functions are optional dependencies only; and a formulation and a variant
written here, touching no library file, run through every transformation."""

import ast
import dataclasses
import functools
import pathlib
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference

import convjax
from convjax._src import formulations
from convjax._src.checks import as_array
from convjax._src.formulations import base
from convjax._src.ops.apply import apply
from convjax._src.spec import make_spec

ROOT = pathlib.Path(convjax.__file__).parent
# The layers of docs/architecture.md, bottom first: a module's layer is that of the longest
# prefix of its name listed here.
LAYERS = {
    "convjax._src.shapes": 0,
    "convjax._src.checks": 1,
    "convjax._src.spec": 2,
    "convjax._src.formulations": 3,
    "convjax._src.primitive": 4,
    "convjax._src.halo": 5,
    "convjax._src.ops": 6,
    "convjax._src.modules": 7,
    "convjax._src.tools": 8,
    "convjax": 9,  # the public namespaces
    "convjax.apps": 10,
}
OPTIONAL = {"matplotlib", "PIL", "torch"}  # may be imported where they are used


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(name: str) -> int:
    prefix = max((p for p in LAYERS if name == p or name.startswith(p + ".")), key=len)
    return LAYERS[prefix]


def imports(path: pathlib.Path):
    """``(imported module, at top level)`` for every import in the file."""
    tree = ast.parse(path.read_text())
    package = module_name(path) if path.stem == "__init__" else module_name(path).rpartition(".")[0]
    inside = {  # the imports inside functions (a module's try/if blocks are its top level)
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, id(node) not in inside
        elif isinstance(node, ast.ImportFrom):
            base_name = node.module or ""
            if node.level:
                base_name = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base_name = f"{base_name}.{node.module}" if node.module else base_name
            for alias in node.names:
                candidate = f"{base_name}.{alias.name}"
                where = ROOT.parent / candidate.replace(".", "/")
                is_module = where.with_suffix(".py").exists() or (where / "__init__.py").exists()
                yield (candidate if is_module else base_name), id(node) not in inside


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}
GRAPH = {
    name: {m for m, _ in imports(path) if m.startswith("convjax") and m != name}
    for name, path in MODULES.items()
}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down_the_layers(name):
    upward = [m for m in GRAPH[name] if layer(m) > layer(name)]
    assert not upward, f"{name} (layer {layer(name)}) imports {upward}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_inside_functions_are_optional_dependencies(name):
    inside = [m for m, top in imports(MODULES[name]) if not top]
    assert all(m.split(".")[0] in OPTIONAL for m in inside), f"{name}: {inside}"


def test_no_import_cycles():
    state: dict[str, str] = {}

    def visit(name, path):
        state[name] = "open"
        for target in sorted(GRAPH.get(name, ())):
            if state.get(target) == "open":
                cycle = [*path[path.index(target) :], target]
                raise AssertionError(" -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])


# -- a formulation from outside the library ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ShiftAndAdd(base.AcceptsAll):
    """A toy formulation: for every tap, the whole kernel tap applied to a shifted input."""

    name: str = "shift-and-add"
    accepts: ClassVar[str] = "every convolution"
    description: ClassVar[str] = "a test's own formulation"

    def __call__(self, x, kernel, spec, *, precision=None, preferred_element_type=None):
        padded = base.pad(x, spec)
        window = kernel.shape[: spec.ndim]
        out = spec.output_spatial(x.shape[1:-1], window)
        groups, c = spec.groups, kernel.shape[-2]
        total = 0
        for tap in np.ndindex(*window):
            start = [t * d for t, d in zip(tap, spec.dilation, strict=True)]
            index = tuple(
                slice(b, b + (o - 1) * s + 1, s)
                for b, o, s in zip(start, out, spec.strides, strict=True)
            )
            patch = padded[(slice(None), *index)]
            patch = patch.reshape(*patch.shape[:-1], groups, c)
            weights = kernel[tap].reshape(c, groups, -1)
            total = total + jnp.einsum("...gc,cgj->...gj", patch, weights, precision=precision)
        y = total.reshape(*total.shape[:-2], -1)
        return y.astype(preferred_element_type or x.dtype)


def test_a_formulation_defined_outside_the_library_runs_every_transformation():
    rng = np.random.default_rng(0)
    x = as_array(rng.standard_normal((2, 9, 8, 4)))
    kernel = as_array(rng.standard_normal((3, 2, 2, 6)))
    options = dict(strides=(2, 1), padding="SAME", padding_mode="reflect", groups=2)
    toy = functools.partial(convjax.conv, impl=ShiftAndAdd(), **options)
    lax = functools.partial(convjax.conv, impl="lax", **options)
    np.testing.assert_allclose(toy(x, kernel), lax(x, kernel), rtol=1e-12, atol=1e-12)
    got = jax.jit(jax.grad(lambda x, k: jnp.sum(jnp.sin(toy(x, k))), argnums=(0, 1)))(x, kernel)
    want = jax.grad(lambda x, k: jnp.sum(jnp.sin(lax(x, k))), argnums=(0, 1))(x, kernel)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    got = jax.jvp(toy, (x, kernel), (jnp.cos(x), jnp.sin(kernel)))
    want = jax.jvp(lax, (x, kernel), (jnp.cos(x), jnp.sin(kernel)))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    kernels = jnp.stack([kernel, -2 * kernel])
    np.testing.assert_allclose(
        jax.vmap(toy, in_axes=(None, 0))(x, kernels),
        jax.vmap(lax, in_axes=(None, 0))(x, kernels),
        rtol=1e-12,
        atol=1e-12,
    )
    y = toy(x, kernel)
    np.testing.assert_allclose(
        convjax.conv_transpose(y, kernel, impl=ShiftAndAdd(), output_shape=(9, 8), **options),
        convjax.conv_transpose(y, kernel, impl="lax", output_shape=(9, 8), **options),
        rtol=1e-12,
        atol=1e-12,
    )


def test_an_object_without_the_protocol_is_refused_clearly():
    with pytest.raises(TypeError, match=r"conv: impl must be one of .* or a backend instance"):
        convjax.conv(jnp.ones((5, 1)), jnp.ones((3, 1, 1)), impl=object())


# -- a variant from outside the library ---------------------------------------------------------


def box_filter(x, size: int, *, impl="auto"):
    """A toy variant: the mean over a ``size``-wide window of every channel, 'SAME' size."""
    channels = x.shape[-1]
    kernel = jnp.full((size, size, 1, channels), 1.0 / size**2, x.dtype)
    spec = make_spec("box_filter", x.shape, kernel.shape, padding="SAME", groups=channels)
    return apply(x, kernel, spec, formulations.resolve("box_filter", impl))


@pytest.mark.parametrize("impl", ["auto", "gather", "fft"])
def test_a_variant_is_one_function_on_the_spec_and_apply(impl):
    x = as_array(np.random.default_rng(1).standard_normal((2, 7, 6, 3)))
    kernel = np.full((3, 3, 1, 3), 1 / 9)
    want = reference.conv(x, kernel, (1, 1), [(1, 1), (1, 1)], (1, 1), groups=3)
    np.testing.assert_allclose(box_filter(x, 3, impl=impl), want, rtol=1e-12, atol=1e-12)
    grad = jax.grad(lambda x: jnp.sum(box_filter(x, 3, impl=impl) ** 2))(x)
    assert grad.shape == x.shape
