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
    train.add_argument("--impl", choices=("lax", "gather"), default="lax", help="conv backend")
    train.add_argument("--steps", type=int, default=400, help="optimisation steps")
    train.add_argument("--batch-size", type=int, default=16, help="images per step")
    train.add_argument("--size", type=int, default=32, help="image size (a multiple of 4)")
    train.add_argument("--width", type=int, default=16, help="the model's base channels")
    train.add_argument("--learning-rate", type=float, default=3e-3, help="adam's peak rate")
    train.add_argument("--seed", type=int, default=0, help="seeds parameters and data")
    args = parser.parse_args(argv)
    if args.command == "tour":
        from convjax._src import tour

        tour.run()
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
