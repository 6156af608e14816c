"""YAML documents that remember where each value came from.

Every problem we report names `file:line:col path`, so loading keeps the position of each
mapping key and sequence item, keyed by its path (`("steps", 2, "window", "size")`).

A pipeline file may come from anywhere, so the loader is bounded: aliases (`*name`) are
refused at their position (502 bytes of nested aliases expanded to 4 GB in `pipeline
check`), and so are a text over `MAX_BYTES` and nesting deeper than `MAX_DEPTH` (the
composer recurses). Without aliases the number of nodes is at most the size of the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]

MAX_BYTES = 1024 * 1024
"""Largest document read, in bytes (the demo pipelines are about 6 KB)."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and sequences."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases and deep nesting, each at its position."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None,
                None,
                f"aliases are not allowed (*{event.anchor}); write the value out",
                event.start_mark,
            )
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


@dataclass(frozen=True, slots=True)
class Problem:
    """One located problem in a document: `file:line:col path: message`."""

    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f" {self.path}:" if self.path else ""
        return f"{self.file}:{self.line}:{self.col}{where} {self.message}"


class YamlDocumentError(ValueError):
    """The text is not YAML we can read; carries its problems."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Document:
    """Plain data plus the 1-based (line, column) of every path in it."""

    file: str
    data: Any
    marks: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path) -> tuple[int, int]:
        """Position of `path`, or of its nearest located ancestor."""
        for end in range(len(path), -1, -1):
            mark = self.marks.get(path[:end])
            if mark is not None:
                return mark
        return (1, 1)

    def problem(self, path: Path, message: str) -> Problem:
        line, col = self.where(path)
        return Problem(self.file, line, col, format_path(path), message)


def format_path(path: Path) -> str:
    """`steps[2].window.size` from `("steps", 2, "window", "size")`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def load(text: str, file: str = "<string>") -> Document:
    """Parse `text` into a located document; YamlDocumentError names each problem."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        message = f"expected at most {MAX_BYTES} bytes of YAML, got {size}"
        raise YamlDocumentError([Problem(file, 1, 1, "", message)])
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)  # the reader checks the characters here already
        node = loader.get_single_node()
        marks: dict[Path, tuple[int, int]] = {}
        problems: list[Problem] = []
        data = _build(loader, node, (), marks, problems, file) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = exc.problem or exc.context or "invalid YAML"
        raise YamlDocumentError([Problem(file, line, col, "", f"invalid YAML: {reason}")]) from exc
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (found by fuzzing)
        before = text[: exc.position]
        line, col = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        char = exc.character if isinstance(exc.character, str) else chr(exc.character)
        reason = f"character {char!r} is not allowed"
        raise YamlDocumentError([Problem(file, line, col, "", f"invalid YAML: {reason}")]) from exc
    finally:
        if loader is not None:
            loader.dispose()
    if problems:
        raise YamlDocumentError(problems)
    return Document(file, data, marks)


def _build(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: Path,
    marks: dict[Path, tuple[int, int]],
    problems: list[Problem],
    file: str,
) -> Any:
    marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            child = (*path, key if isinstance(key, str | int) else str(key))
            if key in out:
                line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                problems.append(
                    Problem(file, line, col, format_path(child), "duplicate key; keep only one")
                )
            marks[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _build(loader, value_node, child, marks, problems, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(loader, item, (*path, i), marks, problems, file)
            for i, item in enumerate(node.value)
        ]
    return loader.construct_object(node, deep=True)
