"""``convjax tour`` runs end to end, every lax/gather comparison it prints agrees, and its page
shows each type's numbers and pictures in order."""

import html
import re

import pytest

from convjax.apps import cli, tour


@pytest.mark.slow
def test_tour_prints_every_section_and_both_paths_agree(capsys, tmp_path):
    assert cli.main(["tour", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    page = (tmp_path / "index.html").read_text()
    titles = [title for title, _, _ in tour.SECTIONS]
    positions = [page.index(f". {html.escape(title)}</h2>") for title in titles]
    assert positions == sorted(positions)  # the page tells the types in the tour's order
    pictures = [p for _, _, section in tour.SECTIONS for p in section]
    still = sum("channels" in options or "figure" in options for _, options in pictures)
    assert page.count("<script>") == len(pictures) - still >= 6
    assert page.count("<img alt=") == still >= 4
    # The page tells the numbers the tour prints, each under its own section: none is empty.
    sections = re.split(r"<h2>\d+\. ", page)[1:]
    printed = re.split(r"\n\d+\. ", out)[1:]
    assert len(sections) == len(printed) == len(titles)
    for section, text in zip(sections, printed, strict=True):
        for line in text.splitlines()[1:]:  # the first line is the title
            if line.strip() and not line.startswith("wrote "):
                assert html.escape(line.strip()) in section, line
    assert "DIFFER" not in out
    assert out.count("(agree)") >= 12
    for fact in [
        "5x5 input, 3x3 kernel, stride 2, no padding -> 2x2",
        "parameters I*O*K = 16*32*9 = 4608",
        "sees a 5x5 field with 9 parameters",
        "conv 5x5 -> 2x2, conv_transpose -> 5x5",
        "6 parameters instead of 9",
        "4608 parameters; depthwise separable (multiplier 1): 656",
        "receptive field 5x5 with 9 parameters",
        "147456 parameters (shared: 576); the same kernel everywhere is the conv: max |diff| = ",
        "a mask of 0.5 (DCN v2) halves it",
        "12 of 25 taps live; output (4, 4) ignores the pixel after it: change 0.0e+00",
    ]:
        assert fact in out, fact
    for claim in (
        "everywhere is the conv: max |diff| = ",
        "zero offsets are the conv, max |diff| = ",
    ):
        assert float(out.split(claim, 1)[1].split()[0].rstrip(";")) < 1e-5, claim
    deconvolved = re.search(
        r"recovered by deconvolve: rel error (\S+) \(Wiener\), (\S+) \(lsq\);"
        r"  by conv_transpose: (\S+)",
        out,
    )
    assert deconvolved, out
    wiener, lsq, transposed = (float(v) for v in deconvolved.groups())
    assert wiener < 1e-3 and lsq < 1e-3 and transposed > 0.1
