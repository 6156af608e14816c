"""Every command's --help teaches: a description of what it does and an example to copy."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from fogline.cli import build_parser


def commands(
    parser: argparse.ArgumentParser, path: str = "fogline"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, f"{path} {name}")


def test_every_command_has_a_description_and_an_example() -> None:
    lacking = []
    for path, parser in commands(build_parser(with_devices=True)):
        if not parser.description:
            lacking.append(f"{path}: no description")
        if "example:" not in (parser.epilog or ""):
            lacking.append(f"{path}: no example")
    assert lacking == []


def test_every_argument_says_what_it_is() -> None:
    unexplained = [
        f"{path} {action.dest}"
        for path, parser in commands(build_parser(with_devices=True))
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction | argparse._HelpAction)
        and not action.help
    ]
    assert unexplained == []
