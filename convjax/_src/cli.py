"""The ``convjax`` command."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convjax", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("tour", help="walk through every convolution type on real arrays")
    train = commands.add_parser(
        "train", help="train a small conv denoiser with optax on synthetic data"
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
    bench = commands.add_parser(
        "bench", help="time the formulations against Flax and PyTorch, side by side"
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
    if args.command == "tour":
        from convjax._src import tour

        tour.run()
    elif args.command == "bench":
        from convjax._src import bench as benchmarks

        return benchmarks.main(args)
    elif args.command == "train":
        from convjax._src import train as training

        training.train(
            steps=args.steps,
            batch_size=args.batch_size,
            size=args.size,
            width=args.width,
            learning_rate=args.learning_rate,
            impl=args.impl,
            seed=args.seed,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
