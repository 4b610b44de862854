"""The command line: help that reads well, --version, and bad values as one-line errors (exit 2),
never tracebacks."""

import re
import sys

import pytest
from PIL import Image

import convjax
from convjax.apps import cli


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"convjax {convjax.__version__}"


@pytest.mark.parametrize("command", ["tour", "animate", "train", "bench"])
def test_every_subcommand_describes_itself_and_shows_defaults(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = capsys.readouterr().out
    usage, description = text.split("\n\n")[:2]
    assert usage.startswith(f"usage: convjax {command}")
    assert len(description.split()) > 8 and "``" not in text and ":func:" not in text
    if command != "tour":
        assert "(default:" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--steps", "0"], "convjax train: train: steps must be >= 1, got 0."),
        (["train", "--size", "10"], "convjax train: train: size must be a positive multiple of 4"),
        (
            ["bench", "--shapes", "no-such-case", "--no-torch"],
            "convjax bench: no case matches",
        ),
        (
            [
                "animate",
                "--input",
                "5",
                "--kernel",
                "3",
                "--padding",
                "SAME",
                "1",
                "--out",
                "a.gif",
            ],
            "convjax animate: --padding takes one name or ints, got SAME 1.",
        ),
    ],
)
def test_bad_values_exit_2_with_one_line(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and len(err.strip().splitlines()) == 1, err


def test_argparse_errors_exit_2():
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--steps", "many"])
    assert exit_.value.code == 2


def _animate(tmp_path, monkeypatch, *args):
    """``convjax animate`` with ``viz.animate`` made to fail: a refusal must come first."""

    def built(*_, **__):
        raise AssertionError("viz.animate was called")

    monkeypatch.setattr(cli.viz, "animate", built)
    return cli.main(["animate", *args, "--out", str(tmp_path / "a.gif")])


@pytest.mark.parametrize(
    "args, message",
    [
        (
            "--input 5 5 --kernel 3",
            "--kernel needs one size per --input dim: --input 5 5 is 2-d, --kernel 3 is 1-d.",
        ),
        ("--input 5 --kernel 3 3", "--kernel needs one size per --input dim"),
        ("--input 3 3 3 3 --kernel 1 1 1 1", "--input takes 1 to 3 spatial sizes, got 4"),
        *[
            (
                f"--input 3 3 --kernel 2 2 --fps {fps}",
                f"--fps must be a number >= 0.01 (100 s per frame at most), got {fps}.",
            )
            for fps in ("0", "-1", "nan", "0.001")
        ],
        ("--input 5 5 --kernel 3 3 --stride 1 2 3", "--stride takes one value or one per --input"),
        ("--input 5 5 --kernel 3 3 --dilation 0", "--dilation must be >= 1, got 0."),
        ("--input 5 5 --kernel 0 3", "--kernel sizes must be >= 1, got 0 3."),
        ("--input 5 5 --kernel 3 3 --channels 0 1", "--channels must be >= 1, got 0 1."),
        (
            "--input 5 5 --kernel 3 3 --groups 3",
            "--groups 3 must divide both channel counts, got --channels 1 1; e.g. --channels 3 3.",
        ),
        ("--input 5 5 --kernel 3 3 --max-frames 0", "--max-frames must be >= 1, got 0."),
        (
            "--input 3000 3000 --kernel 3 3",
            "--input 3000 3000 is 9,000,000 cells, more than --max-cells 4096",
        ),
    ],
)
def test_animate_refuses_before_building_anything(args, message, tmp_path, monkeypatch, capsys):
    assert _animate(tmp_path, monkeypatch, *args.split()) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"convjax animate: {message}") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a.gif").exists()


def test_animate_refuses_an_unusable_out_before_building_anything(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("")
    for out, message in [
        (tmp_path / "a.jpg", "--out must end in .gif, .html or .png, got"),
        (tmp_path / "file" / "a.gif", "--out must be in a folder, but"),
    ]:
        monkeypatch.setattr(cli.viz, "animate", None)
        argv = ["animate", "--input", "5", "--kernel", "3", "--out", str(out)]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"convjax animate: {message}") and len(err.splitlines()) == 1
    (tmp_path / "tour.html").write_text("")
    assert cli.main(["tour", "--out", str(tmp_path / "tour.html")]) == 2
    assert capsys.readouterr().err.startswith("convjax tour: --out must be a folder, but")


def test_an_unwritable_out_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    def unwritable(**_):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cli.tempfile, "TemporaryFile", unwritable)
    monkeypatch.setattr(cli.viz, "animate", None)  # none of the work may start
    monkeypatch.setattr(cli.tour, "run", None)
    monkeypatch.setattr(cli.training, "train", None)
    out = str(tmp_path / "out")
    for argv in (
        ["animate", "--input", "5", "--kernel", "3", "--out", out + "/a.gif"],
        ["tour", "--out", out],
        ["train", "--out", out],
    ):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"convjax {argv[0]}: --out '{out}") and len(err.splitlines()) == 1
        assert "cannot be written: Permission denied" in err


def test_animate_samples_frames_shows_progress_and_makes_folders(tmp_path, capsys):
    out = tmp_path / "new" / "folder" / "a.gif"
    argv = ["animate", "--input", "12", "--kernel", "3", "--max-frames", "4", "--out", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr()
    assert "drawing 4 of 10 steps, evenly spaced (--max-frames 10 draws every step)" in printed.out
    assert "convjax animate: drawn 4/4" in printed.err
    assert Image.open(out).n_frames == 4


@pytest.mark.parametrize(
    "argv, match",
    [
        (["bench", "--formulations", "bogus"], r"invalid choice: 'bogus'"),
        (["bench", "--rounds", "0"], r"--rounds: must be an int >= 1, got 0"),
        (["bench", "--models", "alexnet"], r"--models: invalid choice: 'alexnet'"),
        (["bench", "--no-torch", "--png", "chart.png"], r"--png .* `pip install torch`"),
        (["bench", "--models", "--shapes", "3x3"], r"--shapes chooses .* leave one of them out"),
        (
            ["bench", "--json", "."],
            r"^convjax bench: --json must be a file, but '\.' is a folder\.$",
        ),
        (
            ["bench", "--png", "/proc/no-such-folder/chart.png"],
            r"^convjax bench: --png '/proc/no-such-folder/chart.png' cannot be written",
        ),
        (["train", "--seed", str(2**63 - 1)], r"--seed: must be from 0 to 2\*\*32 - 1, got 9223"),
        (["train", "--seed", "-1"], r"--seed: must be from 0 to 2\*\*32 - 1, got -1"),
        (["train", "--impl", "fft"], r"--impl: invalid choice: 'fft' \(choose from 'auto'"),
        (["bench", "--models", "tcn", "--vjp"], r"--vjp chooses what to time in the layer suite"),
    ],
)
def test_bench_and_train_refuse_bad_options_in_one_line_before_any_work(argv, match, capsys):
    with pytest.raises(SystemExit) as stopped:
        sys.exit(cli.main(argv))
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert re.search(match, err) and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("rate", ["nan", "inf", "-inf", "-1", "0", "1e400", "fast"])
def test_train_refuses_a_non_finite_or_non_positive_learning_rate(rate, monkeypatch, capsys):
    def trained(**_):
        raise AssertionError("train was called")

    monkeypatch.setattr(cli.training, "train", trained)
    with pytest.raises(SystemExit) as stopped:
        sys.exit(cli.main(["train", f"--learning-rate={rate}"]))  # "-inf" reads as a flag
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "convjax train: argument --learning-rate: must be a finite number > 0, got "
    ), err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    "options, match",
    [
        ({"learning_rate": float("nan")}, r"^train: learning_rate must be finite and >= 0"),
        ({"learning_rate": -1.0}, r"^train: learning_rate must be finite and >= 0, got -1"),
        ({"learning_rate": 0}, r"^train: learning_rate must be > 0, got 0"),
        ({"noise": float("inf")}, r"^train: noise must be finite and >= 0, got inf"),
        ({"noise": -0.1}, r"^train: noise must be finite and >= 0, got -0.1"),
    ],
)
def test_train_function_refuses_non_finite_or_out_of_range_floats_before_any_work(options, match):
    # what the command calls: library callers get the same refusal, before anything compiles
    with pytest.raises(ValueError, match=match):
        cli.training.train(steps=1, batch_size=1, size=8, width=2, quiet=True, **options)
