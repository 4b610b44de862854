"""The notebooks (kept as jupytext percent scripts) execute top to bottom without error, and
every figure they make shows as a picture."""

import pathlib

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((pathlib.Path(__file__).parents[1] / "notebooks").glob("*.py"))
assert NOTEBOOKS, "no notebooks found"


@pytest.mark.slow
@pytest.mark.parametrize(
    "path",
    # The first notebook runs in every profile, the others in the thorough one (they call the
    # same public functions and pictures the rest of the suite tests).
    [pytest.param(p, marks=() if i == 0 else pytest.mark.deep) for i, p in enumerate(NOTEBOOKS)],
    ids=lambda p: p.stem,
)
def test_notebook_executes_and_shows_its_pictures(path, monkeypatch):
    # Agg, not the inline backend: then nothing renders a bare matplotlib Figure for the
    # notebook, so every figure convjax.viz returns must show itself.
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = jupytext.read(path)
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    outputs = [out for cell in notebook.cells for out in cell.get("outputs", [])]
    errors = [out for out in outputs if out.get("output_type") == "error"]
    assert not errors
    # A figure that shows only its repr ("<Figure size 340x204 with 1 Axes>") is no picture.
    shown_as_text = [
        out["data"]["text/plain"]
        for out in outputs
        if "<Figure size" in out.get("data", {}).get("text/plain", "")
        and not {"image/png", "text/html"} & set(out["data"])
    ]
    assert not shown_as_text
