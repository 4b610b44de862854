"""Every ``>>>`` example in the library's docstrings runs and prints what it claims."""

import doctest
import importlib
import pathlib

import pytest

import convjax

SOURCE = pathlib.Path(convjax.__file__).parent
MODULES = sorted(
    ".".join(("convjax", *path.relative_to(SOURCE).with_suffix("").parts))
    for path in SOURCE.rglob("*.py")
    if path.stem not in ("__init__", "cli", "tour")
)
assert len(MODULES) >= 5, MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    if name.endswith("from_torch"):
        pytest.importorskip("torch", reason="from_torch's examples convert PyTorch layers")
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
