"""The ``convjax`` command."""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
import tempfile
from collections.abc import Sequence

import convjax
from convjax import __version__, viz
from convjax._src.tools.viz import MIN_FPS, check_path
from convjax.apps import bench as benchmarks
from convjax.apps import models, tour
from convjax.apps import train as training

PADDING_NAMES = ("VALID", "SAME", "HALF", "FULL", "CAUSAL")


MAX_FRAMES = 100  # steps drawn into one .gif or .html unless --max-frames says otherwise
MAX_SHEET = 16  # frames on a .png sheet
MAX_CELLS = 4096  # cells in one drawn array (64x64): more is not a legible picture


def _animate_parser(commands) -> None:
    animate = commands.add_parser(
        "animate",
        help="draw any convolution as an animation (.gif, .html) or a frame sheet (.png)",
        description="Draw convjax.conv (or, --transpose, convjax.conv_transpose) for the given "
        "shapes and options, frame by frame, from the index maps convjax computes with. With "
        "--channels or --groups, each frame also shows which input channels each output "
        "channel reads.",
        formatter_class=_DefaultsShown,
    )
    animate.add_argument("--input", type=int, nargs="+", required=True, help="spatial sizes")
    animate.add_argument(
        "--kernel", type=int, nargs="+", required=True, help="window sizes, one per --input dim"
    )
    animate.add_argument("--stride", type=int, nargs="+", default=[1], help="one or per dim")
    animate.add_argument(
        "--padding",
        nargs="+",
        default=["VALID"],
        help=f"one of {', '.join(PADDING_NAMES)}, or ints (one or per dim)",
    )
    animate.add_argument("--dilation", type=int, nargs="+", default=[1], help="one or per dim")
    animate.add_argument("--groups", type=int, default=1, help="feature groups")
    animate.add_argument(
        "--channels",
        type=int,
        nargs=2,
        default=[1, 1],
        metavar=("C_IN", "C_OUT"),
        help="input and output channels",
    )
    animate.add_argument(
        "--padding-mode",
        default="zeros",
        choices=("zeros", "reflect", "replicate", "circular"),
        help="what the padding holds: zeros, or the input reflected, repeated or wrapped around",
    )
    animate.add_argument("--transpose", action="store_true", help="draw conv_transpose")
    animate.add_argument(
        "--output-padding",
        type=int,
        nargs="+",
        default=[0],
        help="extra rows on the high side of the transposed output (with --transpose)",
    )
    animate.add_argument(
        "--view",
        choices=("forward", "scatter", "conv"),
        help="what to draw: forward (the default for a conv), or for --transpose scatter (its "
        "default: each input scattered) or conv (the stride-1 conv of the spread input)",
    )
    animate.add_argument("--values", action="store_true", help="write numbers in the cells")
    animate.add_argument("--fps", type=float, default=2.0, help="frames per second")
    animate.add_argument(
        "--max-frames",
        type=int,
        default=MAX_FRAMES,
        help=f"draw at most this many steps, evenly spaced (a .png sheet: at most {MAX_SHEET})",
    )
    animate.add_argument(
        "--max-cells",
        type=int,
        default=MAX_CELLS,
        help="refuse to draw an array of more cells than this (it would not be legible)",
    )
    animate.add_argument(
        "--out", required=True, help="the file: .gif, .html or .png (missing folders are made)"
    )


def _one_or_many(values: list[int]) -> int | tuple[int, ...]:
    return values[0] if len(values) == 1 else tuple(values)


def _shown(values) -> str:
    return " ".join(map(str, values))


def _per_dim(flag: str, values: list[int], ndim: int, minimum: int) -> None:
    """One value, or one per spatial dim, each at least ``minimum``."""
    if len(values) not in (1, ndim):
        raise ValueError(
            f"{flag} takes one value or one per --input dim ({ndim}), got {len(values)}: "
            f"{_shown(values)}."
        )
    if min(values) < minimum:
        raise ValueError(f"{flag} must be >= {minimum}, got {_shown(values)}.")


def _padding(values: list[str]) -> str | int | tuple[int, ...]:
    if len(values) == 1 and not values[0].lstrip("-").isdigit():
        return values[0]
    try:
        return _one_or_many([int(p) for p in values])
    except ValueError:
        raise ValueError(f"--padding takes one name or ints, got {_shown(values)}.") from None


def _check_animate(args) -> None:
    """Every check that needs no drawing, before anything is built: one line each, naming the
    flag, the rule and the values."""
    ndim = len(args.input)
    if ndim not in (1, 2, 3):
        raise ValueError(f"--input takes 1 to 3 spatial sizes, got {ndim}: {_shown(args.input)}.")
    if len(args.kernel) != ndim:
        raise ValueError(
            f"--kernel needs one size per --input dim: --input {_shown(args.input)} is "
            f"{ndim}-d, --kernel {_shown(args.kernel)} is {len(args.kernel)}-d."
        )
    for flag, values in (("--input", args.input), ("--kernel", args.kernel)):
        if min(values) < 1:
            raise ValueError(f"{flag} sizes must be >= 1, got {_shown(values)}.")
    _per_dim("--stride", args.stride, ndim, 1)
    _per_dim("--dilation", args.dilation, ndim, 1)
    _per_dim("--output-padding", args.output_padding, ndim, 0)
    if not isinstance(_padding(args.padding), str) and len(args.padding) not in (1, ndim):
        raise ValueError(
            f"--padding takes one name, or one int or one per --input dim ({ndim}), got "
            f"{len(args.padding)}: {_shown(args.padding)}."
        )
    for flag, value in (("--groups", [args.groups]), ("--channels", args.channels)):
        if min(value) < 1:
            raise ValueError(f"{flag} must be >= 1, got {_shown(value)}.")
    if any(c % args.groups for c in args.channels):
        raise ValueError(
            f"--groups {args.groups} must divide both channel counts, got --channels "
            f"{_shown(args.channels)}; e.g. --channels {args.groups} {args.groups}."
        )
    if not (math.isfinite(args.fps) and args.fps >= MIN_FPS):
        raise ValueError(
            f"--fps must be a number >= {MIN_FPS} (100 s per frame at most), got {args.fps:g}."
        )
    for flag, value in (("--max-frames", args.max_frames), ("--max-cells", args.max_cells)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}.")
    check_path("convjax animate", args.out, "--out")
    cells = math.prod(args.input)
    if cells > args.max_cells:
        raise ValueError(
            f"--input {_shown(args.input)} is {cells:,} cells, more than --max-cells "
            f"{args.max_cells}: a picture that large is not legible (the same rule shows on a "
            f"few cells); draw a smaller input, or raise --max-cells."
        )
    _writable(pathlib.Path(args.out).parent, args.out)  # last: it makes missing folders


def _check_folder(out: str) -> None:
    """``--out DIR``: DIR is a folder, or is in one, and is made and written to before any work
    starts (a run must not end in an error it could have given first)."""
    folder = pathlib.Path(out)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        what = "is a file" if folder == pathlib.Path(out) else f"is in {str(folder)!r}, a file"
        raise ValueError(f"--out must be a folder, but {out!r} {what}.")
    _writable(pathlib.Path(out), out)


def _writable(folder: pathlib.Path, out: str, flag: str = "--out") -> None:
    """Make ``folder`` and write a file in it, or say why ``flag`` cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(
            f"{flag} {out!r} cannot be written: {error.strerror or error} ({str(folder)!r})."
        ) from None


def _check_files(args, flags: Sequence[str]) -> None:
    """Each given ``--flag PATH`` names a file that can be written, checked before any work (a
    benchmark must not run for minutes and then lose its results)."""
    for flag in flags:
        value = getattr(args, flag.removeprefix("--").replace("-", "_"))
        if value is None:
            continue
        if pathlib.Path(value).is_dir():
            raise ValueError(f"{flag} must be a file, but {value!r} is a folder.")
        _writable(pathlib.Path(value).parent, value, flag)


def _progress(total: int):
    """Report drawing on stderr: one updated line on a terminal, else a line every quarter."""
    tty = sys.stderr.isatty()

    def report(done: int, _: int) -> None:
        if tty:
            end = "\n" if done == total else ""
            print(f"\rconvjax animate: drawn {done}/{total}", end=end, file=sys.stderr, flush=True)
        elif done == total or done % max(total // 4, 1) == 0:
            print(f"convjax animate: drawn {done}/{total}", file=sys.stderr, flush=True)

    return report


def _animate(args) -> int:
    _check_animate(args)
    c_in, c_out = args.channels
    if args.transpose:
        kernel = (*args.kernel, c_out // args.groups, c_in)
    else:
        kernel = (*args.kernel, c_in // args.groups, c_out)
    anim = viz.animate(
        (*args.input, c_in),
        kernel,
        strides=_one_or_many(args.stride),
        padding=_padding(args.padding),
        dilation=_one_or_many(args.dilation),
        groups=args.groups,
        padding_mode=args.padding_mode,
        transpose=args.transpose,
        output_padding=_one_or_many(args.output_padding),
        view=args.view,
        values=args.values,
        max_cells=args.max_cells,
    )
    steps = len(anim.steps)
    sheet = pathlib.Path(args.out).suffix.lower() == ".png"
    most = min(args.max_frames, MAX_SHEET) if sheet else args.max_frames
    frames = _spread(steps, most)
    if len(frames) < steps:
        every = "" if sheet else f" (--max-frames {steps} draws every step)"
        print(f"drawing {len(frames)} of {steps} steps, evenly spaced{every}")
    path = anim.save(
        args.out, fps=args.fps, frames=frames, max_frames=steps, progress=_progress(len(frames))
    )
    print(f"wrote {path} ({len(frames)} frames of {steps} steps)")
    return 0


def _spread(n: int, most: int) -> list[int]:
    """``most`` of ``range(n)``, evenly spaced, first and last included."""
    if n <= most:
        return list(range(n))
    if most == 1:
        return [0]
    return sorted({round(i * (n - 1) / (most - 1)) for i in range(most)})


def _fail(command: str, message: str) -> int:
    message = " ".join(message.split())  # one line
    prefix = f"convjax {command}: "
    print(message if message.startswith(prefix) else prefix + message, file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(
        prog="convjax",
        description="Every convolution, several ways: walk through them, draw them, train with "
        "them, and time them against Flax and PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"convjax {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    tour_parser = commands.add_parser(
        "tour",
        help="walk through every convolution type on real arrays",
        description="Walk through every convolution type on real arrays, two formulations side "
        "by side; with --out, also write an HTML page with the same numbers and the animations "
        "of each type, in the same order.",
    )
    tour_parser.add_argument(
        "--out",
        metavar="DIR",
        help="also write DIR/index.html, making DIR if missing (needs convjax[viz])",
    )
    _animate_parser(commands)
    train = commands.add_parser(
        "train",
        help="train a small conv denoiser with optax on synthetic data",
        description="Train an encoder-decoder denoiser (strided, dilated, depthwise-separable and "
        "transposed convs) with adam on synthetic images made in code, printing progress.",
        formatter_class=_DefaultsShown,
    )
    train.add_argument(
        "--impl",
        choices=[f.name for f in convjax.formulations() if f.name != "fft"],
        default="auto",
        help="the formulation every layer runs (not fft: it takes strides 1, and the model's "
        "encoder has stride-2 layers)",
    )
    train.add_argument("--steps", type=int, default=400, help="optimisation steps")
    train.add_argument("--batch-size", type=int, default=16, help="images per step")
    train.add_argument("--size", type=int, default=32, help="image size (a multiple of 4)")
    train.add_argument("--width", type=int, default=16, help="the model's base channels")
    train.add_argument(
        "--learning-rate", type=_positive_float, default=3e-3, help="adam's peak rate"
    )
    train.add_argument(
        "--seed", type=_seed, default=0, help="seeds parameters and data (0 to 2**32 - 1)"
    )
    train.add_argument(
        "--out",
        metavar="DIR",
        help="write the parameters, a loss curve and before/after images to DIR",
    )
    bench = commands.add_parser(
        "bench",
        help="time the formulations against Flax and PyTorch, side by side",
        description="Time every formulation, Flax and PyTorch (when installed) on a suite of "
        "convolutions — forward, and the gradients of a loss of the output as training runs "
        "them — alternating in rounds; print medians and ratios.  With --models, whole "
        "training steps of reference architectures instead.",
        formatter_class=_DefaultsShown,
    )
    bench.add_argument("--quick", action="store_true", help="3 rounds instead of 9")
    bench.add_argument("--rounds", type=_positive_int, help="timed rounds per contender")
    bench.add_argument(
        "--shapes", nargs="+", metavar="TEXT", help="only the cases whose name contains TEXT"
    )
    bench.add_argument(
        "--formulations",
        nargs="+",
        choices=[f.name for f in convjax.formulations()],
        metavar="NAME",
        help="convjax formulations to time (of: "
        + ", ".join(f.name for f in convjax.formulations())
        + "; default: all of them in the layer suite, auto with --models)",
    )
    bench.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16", "float16"),
        help="the inputs' and parameters' dtype",
    )
    bench.add_argument(
        "--models",
        nargs="*",
        metavar="NAME",
        choices=list(models.ARCHITECTURES),
        help="time whole training steps of reference architectures (all, or those named: "
        + ", ".join(models.ARCHITECTURES)
        + ") instead of the layer suite",
    )
    bench.add_argument(
        "--vjp", action="store_true", help="also time a vjp with a random cotangent (diagnostic)"
    )
    bench.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    bench.add_argument("--no-flax", action="store_true", help="leave Flax out")
    bench.add_argument("--json", metavar="PATH", help="write the results as JSON")
    bench.add_argument("--png", metavar="PATH", help="write a chart of the ratios to PyTorch")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (ValueError, TypeError, ImportError, OSError) as error:
        # convjax's own checks explain themselves: say it in one line, as argparse does.
        return _fail(args.command, str(error))
    except KeyboardInterrupt:
        print(file=sys.stderr)
        _fail(args.command, "interrupted.")
        return 130


class _DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default in its help, except where there is none to show (``None``: the
    help says what happens)."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``convjax bench: argument --rounds: …
    (see --help)``) with exit status 2, as every other convjax command error is."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help).\n")


def _positive_int(text: str) -> int:
    """An argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {value}")
    return value


def _seed(text: str) -> int:
    """An argparse type: a random seed, an int from 0 to 2**32 - 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int, got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be from 0 to 2**32 - 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (``nan``, ``inf`` and overflowing ``1e400`` are
    refused: adam would train to nan or overflow on them without a word)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _run(args) -> int:
    if args.command == "animate":
        return _animate(args)
    if args.command == "tour":
        if args.out is not None:
            _check_folder(args.out)
        tour.run(out=args.out)
    elif args.command == "bench":
        _check_files(args, ("--json", "--png"))
        return benchmarks.main(args)
    elif args.command == "train":
        if args.out is not None:
            _check_folder(args.out)
        training.train(
            steps=args.steps,
            batch_size=args.batch_size,
            size=args.size,
            width=args.width,
            learning_rate=args.learning_rate,
            impl=args.impl,
            seed=args.seed,
            save_to=args.out,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
