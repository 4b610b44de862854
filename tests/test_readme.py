"""The README's Python examples (fenced ``python``) run as written, and its test command is the one
CI runs.  The multi-host recipe, which needs several hosts, is fenced ``py`` and only shown."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index):
    exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), {})


def test_readme_test_command_is_what_ci_runs():
    commands = re.findall(r"```bash\n(.*?)```", README, re.S)[0].splitlines()
    test_command = commands[1].split("#")[0].strip()
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()
