"""A walk over the public API: every name exported, documented with a runnable example, options
keyword-only, and every convolution operation in the shared registry the cross-cutting tests
iterate (``tests/ops.py``)."""

import inspect

import pytest
from ops import BY_NAME, NOT_OPERATIONS

import convjax

NAMESPACES = {
    "convjax": convjax,
    **{
        name: getattr(convjax, name)
        for name in ("nnx", "linen", "viz", "streaming", "from_torch", "autotune")
    },
}
PUBLIC = [
    (namespace, name, getattr(module, name))
    for namespace, module in NAMESPACES.items()
    for name in module.__all__
    if not inspect.ismodule(getattr(module, name))
]
FUNCTIONS = [(ns, name, obj) for ns, name, obj in PUBLIC if inspect.isfunction(obj)]

# Signatures kept as they are: the one-dimension arithmetic takes its terms positionally, as the
# relationships are written (o(i, k, s, p, d)), and these two take one optional argument that
# reads naturally in place.
POSITIONAL_OPTIONS = {
    ("convjax", "conv_output_size"),
    ("convjax", "conv_transpose_output_size"),
    ("convjax", "output_padding_for"),
    ("viz", "connectivity"),
    ("from_torch", "conv_params"),
    ("from_torch", "conv_transpose_params"),
}


def ids(entries):
    return [f"{ns}.{name}" for ns, name, _ in entries]


def test_all_is_sorted_and_complete():
    for namespace, module in NAMESPACES.items():
        assert list(module.__all__) == sorted(module.__all__), namespace
        for name in module.__all__:
            assert hasattr(module, name), f"{namespace}.{name}"


@pytest.mark.parametrize("namespace, name, obj", PUBLIC, ids=ids(PUBLIC))
def test_documented(namespace, name, obj):
    doc = inspect.getdoc(obj) or ""
    assert len(doc.split()) >= 8, f"{namespace}.{name} needs a docstring"


@pytest.mark.parametrize("namespace, name, fn", FUNCTIONS, ids=ids(FUNCTIONS))
def test_functions_have_a_runnable_example_and_keyword_only_options(namespace, name, fn):
    examples = [
        line.split(">>>", 1)[1].strip()
        for line in (inspect.getdoc(fn) or "").splitlines()
        if line.lstrip().startswith(">>>")
    ]
    assert any(e and not e.startswith("#") for e in examples), f"{namespace}.{name}: no example"
    if (namespace, name) in POSITIONAL_OPTIONS:
        return
    positional_with_default = [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind is p.POSITIONAL_OR_KEYWORD and p.default is not p.empty
    ]
    assert not positional_with_default, f"{namespace}.{name}: {positional_with_default}"


def test_every_operation_is_in_the_shared_registry():
    functions = {name for ns, name, _ in FUNCTIONS if ns == "convjax"}
    unlisted = functions - set(BY_NAME) - NOT_OPERATIONS
    assert not unlisted, f"add these to tests/ops.py: {sorted(unlisted)}"
    assert not (NOT_OPERATIONS - functions), "NOT_OPERATIONS names a function that is gone"


def test_every_layer_has_an_operation_and_both_frameworks():
    layers = {op.layer for op in BY_NAME.values() if op.layer}
    assert layers == set(convjax.nnx.__all__) == set(convjax.linen.__all__)
