"""The ``convjax`` command."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convjax", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("tour", help="walk through every convolution type on real arrays")
    args = parser.parse_args(argv)
    if args.command == "tour":
        from convjax._src import tour

        tour.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
