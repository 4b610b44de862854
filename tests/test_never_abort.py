"""No valid convolution takes the process down: every public path of the strided convolutions
XLA:CPU used to abort on (and of random others) compiles, in a process of its own, so that an
abort fails this test instead of ending the run."""

import os
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).parent / "subprocess" / "sweep_aborts.py"
RANDOM_CASES = 200 if os.environ.get("CONVJAX_HYPOTHESIS_PROFILE") == "thorough" else 6


def test_every_public_path_compiles_without_aborting():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(RANDOM_CASES), "20261201"],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = result.stdout.splitlines()
    last = next((line for line in reversed(lines) if line.startswith("case ")), "no case started")
    assert result.returncode == 0, (
        f"the process ended with status {result.returncode} compiling {last}:\n"
        + result.stderr[-3000:]
    )
    assert lines and lines[-1].startswith("done "), result.stdout[-2000:]
