"""The default profile's covering (``conftest.covering``) runs every value of every argument of a
parametrised test, and whole what ``every_case`` asks for."""

import dataclasses
import itertools

import pytest
from conftest import covering


@dataclasses.dataclass(frozen=True)
class CallSpec:
    params: dict


@dataclasses.dataclass(frozen=True, eq=False)
class Item:
    """What ``covering`` reads of a pytest item."""

    nodeid: str
    callspec: CallSpec | None = None
    marker: pytest.Mark | None = None

    def get_closest_marker(self, name):
        return self.marker if self.marker is not None and self.marker.name == name else None


def items(name, marker=None, **arguments):
    """The cases of ``name`` parametrised over every combination of ``arguments``."""
    names = list(arguments)
    return [
        Item(
            f"t.py::{name}[{'-'.join(map(str, values))}]",
            CallSpec(dict(zip(names, values))),
            marker,
        )
        for values in itertools.product(*arguments.values())
    ]


def test_every_value_of_every_argument_runs_in_fewer_cases():
    cases = items("test_a", formulation=["lax", "gather", "taps", "fft"], kind=list(range(6)))
    kept = covering(cases)
    assert len(kept) < len(cases)
    for argument, values in (("formulation", ["lax", "gather", "taps", "fft"]), ("kind", range(6))):
        assert {item.callspec.params[argument] for item in kept} == set(values)


def test_one_argument_unparametrised_and_every_case_tests_run_whole():
    single = items("test_b", op=["conv", "deform"])
    plain = [Item("t.py::test_c")]
    marked = items("test_d", pytest.mark.every_case.mark, a=[1, 2], b=[3, 4])
    assert covering(single + plain + marked) == set(single + plain + marked)


def test_every_case_with_a_value_crosses_that_value_with_everything():
    mark = pytest.mark.every_case(formulation="auto").mark
    cases = items("test_e", mark, formulation=["auto", "lax", "taps"], kind=list(range(5)))
    kept = covering(cases)
    assert {item for item in cases if item.callspec.params["formulation"] == "auto"} <= kept
    assert {item.callspec.params["formulation"] for item in kept} == {"auto", "lax", "taps"}
    assert len(kept) < len(cases)
