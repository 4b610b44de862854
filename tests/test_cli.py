"""The command line: help that reads well, --version, and bad values as one-line errors (exit 2),
never tracebacks."""

import pytest

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
