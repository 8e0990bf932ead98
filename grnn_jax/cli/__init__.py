"""The ``grnn`` command: one sub-command per ``*_cmd`` module in this package."""

from __future__ import annotations

import argparse
import os
import sys

from grnn_jax._util.allocator import keep_freed_memory_if_asked
from grnn_jax.cli import fit_gmm_cmd, regimes_cmd, sweep_cmd, train_cmd

# What a shell reports for a process ended by SIGPIPE (128 + 13).
EXIT_BROKEN_PIPE = 141


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (fit_gmm_cmd, train_cmd, regimes_cmd, sweep_cmd):
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status (2 for bad input).

    When the reader of standard output goes away (``grnn ... --json | head``),
    the command stops quietly with status 141, as a program ended by SIGPIPE
    does, instead of a ``BrokenPipeError`` traceback; files it writes are
    written atomically, so none is left half-written.
    """
    try:
        args = build_parser().parse_args(argv)
        try:
            status = int(args.func(args) or 0)
        except (ValueError, FileNotFoundError) as err:
            print(f"grnn {args.command}: error: {err}", file=sys.stderr)
            status = 2
        # Flush here, where the error can be caught, not at interpreter exit.
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        # Python would try to flush stdout again at exit and fail once more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def run() -> int:
    """The ``grnn`` executable: :func:`main`, first keeping freed memory for reuse when
    ``GRNN_KEEP_FREED_MEMORY=1`` (:func:`grnn_jax._util.allocator.keep_freed_memory`: faster
    steps for large models), before JAX starts its threads."""
    keep_freed_memory_if_asked()
    return main()


if __name__ == "__main__":
    sys.exit(run())
