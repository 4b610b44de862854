"""The ``convjax`` command."""

from __future__ import annotations

import argparse
import sys

from convjax import __version__, viz
from convjax.apps import bench as benchmarks
from convjax.apps import tour
from convjax.apps import train as training

PADDING_NAMES = ("VALID", "SAME", "HALF", "FULL", "CAUSAL")


def _animate_parser(commands) -> None:
    animate = commands.add_parser(
        "animate",
        help="draw any convolution as an animation (.gif, .html) or a frame sheet (.png)",
        description="Draw convjax.conv (or, --transpose, convjax.conv_transpose) for the given "
        "shapes and options, frame by frame, from the index maps convjax computes with.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    animate.add_argument("--input", type=int, nargs="+", required=True, help="spatial sizes")
    animate.add_argument("--kernel", type=int, nargs="+", required=True, help="window sizes")
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
        "--padding-mode", default="zeros", choices=("zeros", "reflect", "replicate", "circular")
    )
    animate.add_argument("--transpose", action="store_true", help="draw conv_transpose")
    animate.add_argument("--output-padding", type=int, nargs="+", default=[0], help="transposed")
    animate.add_argument(
        "--view", choices=("forward", "scatter", "conv"), help="default: forward, or scatter"
    )
    animate.add_argument("--values", action="store_true", help="write numbers in the cells")
    animate.add_argument("--fps", type=float, default=2.0, help="frames per second")
    animate.add_argument("--out", required=True, help="the file: .gif, .html or .png")


def _one_or_many(values: list[int]) -> int | tuple[int, ...]:
    return values[0] if len(values) == 1 else tuple(values)


def _animate(args) -> int:
    if len(args.padding) == 1 and not args.padding[0].lstrip("-").isdigit():
        padding = args.padding[0]
    else:
        try:
            padding = _one_or_many([int(p) for p in args.padding])
        except ValueError:
            raise ValueError(
                f"--padding takes one name or ints, got {' '.join(args.padding)}."
            ) from None
    c_in, c_out = args.channels
    if args.transpose:
        kernel = (*args.kernel, c_out // max(args.groups, 1), c_in)
    else:
        kernel = (*args.kernel, c_in // max(args.groups, 1), c_out)
    anim = viz.animate(
        (*args.input, c_in),
        kernel,
        strides=_one_or_many(args.stride),
        padding=padding,
        dilation=_one_or_many(args.dilation),
        groups=args.groups,
        padding_mode=args.padding_mode,
        transpose=args.transpose,
        output_padding=_one_or_many(args.output_padding),
        view=args.view,
        values=args.values,
    )
    path = anim.save(args.out, fps=args.fps)
    print(f"wrote {path} ({len(anim.steps)} frames)")
    return 0


def _fail(command: str, message: str) -> int:
    message = " ".join(message.split())  # one line
    prefix = f"convjax {command}: "
    print(message if message.startswith(prefix) else prefix + message, file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="convjax",
        description="Every convolution, several ways: walk through them, draw them, train with "
        "them, and time them against Flax and PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"convjax {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    tour_parser = commands.add_parser(
        "tour",
        help="walk through every convolution type on real arrays",
        description="Walk through every convolution type on real arrays, two formulations side "
        "by side; with --out, also write an HTML page of animations in the same order.",
    )
    tour_parser.add_argument(
        "--out", metavar="DIR", help="also write DIR/index.html (needs convjax[viz])"
    )
    _animate_parser(commands)
    train = commands.add_parser(
        "train",
        help="train a small conv denoiser with optax on synthetic data",
        description="Train an encoder-decoder denoiser (strided, dilated, depthwise-separable and "
        "transposed convs) with adam on synthetic images made in code, printing progress.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    train.add_argument(
        "--impl", choices=("auto", "lax", "gather", "taps"), default="auto", help="formulation"
    )
    train.add_argument("--steps", type=int, default=400, help="optimisation steps")
    train.add_argument("--batch-size", type=int, default=16, help="images per step")
    train.add_argument("--size", type=int, default=32, help="image size (a multiple of 4)")
    train.add_argument("--width", type=int, default=16, help="the model's base channels")
    train.add_argument("--learning-rate", type=float, default=3e-3, help="adam's peak rate")
    train.add_argument("--seed", type=int, default=0, help="seeds parameters and data")
    train.add_argument(
        "--out",
        metavar="DIR",
        help="write the parameters, a loss curve and before/after images to DIR",
    )
    bench = commands.add_parser(
        "bench",
        help="time the formulations against Flax and PyTorch, side by side",
        description="Time every formulation, Flax and PyTorch (when installed) on a suite of "
        "convolutions, forward and fwd+bwd, alternating in rounds; print medians and ratios.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    bench.add_argument("--quick", action="store_true", help="3 rounds instead of 9")
    bench.add_argument("--rounds", type=int, help="timed rounds per contender")
    bench.add_argument(
        "--shapes", nargs="+", metavar="TEXT", help="only the cases whose name contains TEXT"
    )
    bench.add_argument(
        "--formulations",
        nargs="+",
        default=["auto", "lax", "gather", "taps", "fft"],
        help="convjax formulations to time",
    )
    bench.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    bench.add_argument("--train", action="store_true", help="also time whole training steps")
    bench.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    bench.add_argument("--no-flax", action="store_true", help="leave Flax out")
    bench.add_argument("--json", metavar="PATH", help="write the results as JSON")
    bench.add_argument("--png", metavar="PATH", help="write a chart of the ratios to PyTorch")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (ValueError, TypeError, ImportError) as error:
        # convjax's own checks explain themselves: say it in one line, as argparse does.
        return _fail(args.command, str(error))


def _run(args) -> int:
    if args.command == "animate":
        return _animate(args)
    if args.command == "tour":
        tour.run(out=args.out)
    elif args.command == "bench":
        return benchmarks.main(args)
    elif args.command == "train":
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
