"""Subcommands whose `--help` teaches: what the command does, and an example to copy."""

from __future__ import annotations

import argparse
from typing import Any


class Formatter(argparse.HelpFormatter):
    """Descriptions wrap to the terminal; an example keeps its lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("example:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def command(
    sub: Any, name: str, help_: str, example: str, description: str | None = None
) -> argparse.ArgumentParser:
    """Add `name` to `sub` (an argparse subparsers action); `help_` is its line in the
    parent's list and, unless `description` says more, the first line of its own help."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_,
        description=description or help_[0].upper() + help_[1:] + ".",
        epilog="example:\n  " + example.replace("\n", "\n  "),
        formatter_class=Formatter,
    )
    return parser
