"""The ``grnn`` command: one sub-command per module in this package."""

from __future__ import annotations

import argparse
import sys

from grnn_jax.cli import fit_gmm, regimes, sweep, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (fit_gmm, train, regimes, sweep):
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status (2 for bad input)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"grnn {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
