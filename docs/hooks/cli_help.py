"""MkDocs hook: writes the ``grnn`` command's help into ``guide/cli.md`` at build time.

The page holds the marker ``<!-- grnn-help -->``; the hook replaces it with the top-level
``grnn --help`` and one section per sub-command with its ``--help``, taken from the parser
that ``grnn_jax.cli.build_parser`` builds. A flag added to or removed from a sub-command
therefore shows up on the next build: the page cannot drift from the command.
"""

from __future__ import annotations

import argparse
import os

PAGE = "guide/cli.md"
MARKER = "<!-- grnn-help -->"
WIDTH = "100"  # argparse wraps help to $COLUMNS; fixed so that the page does not depend on the terminal


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps sub-parsers only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise RuntimeError("the grnn parser has no sub-commands")


def _help_text() -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        from grnn_jax.cli import build_parser

        parser = build_parser()
        blocks = ["## `grnn`", "", "```text", parser.format_help().rstrip(), "```", ""]
        for name, sub in _subcommands(parser).items():
            blocks += [f"## `grnn {name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(blocks)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"{PAGE} lost its {MARKER} marker; the CLI reference would be empty")
    return markdown.replace(MARKER, _help_text())
