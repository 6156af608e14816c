"""YAML documents that remember where each value came from.

Every problem we report names `file:line:col path`, so loading keeps the position of each
mapping key and sequence item, keyed by its path (`("steps", 2, "window", "size")`).

A pipeline file may come from anywhere, so the loader is bounded: aliases (`*name`) are
refused at their position (502 bytes of nested aliases expanded to 4 GB in `pipeline
check`), and so are a text over `MAX_BYTES` and nesting deeper than `MAX_DEPTH` (the
composer recurses). Without aliases the number of nodes is at most the size of the text.

`${NAME}` and `${NAME:-default}` in a scalar are replaced from the environment passed in
(one pipeline file serves many gateways: each sets its own bind address or topics), before
the scalar is typed, so `port: ${PORT:-5683}` is a number. `$${` is a literal `${`. Each
replacement is recorded with its position (`pipeline check` shows the resolved values);
an unset name without a default is a located problem.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
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
class Substitution:
    """One `${NAME}` replaced: where, and with what (from the environment or the default)."""

    line: int
    col: int
    path: str
    name: str
    value: str
    default: bool

    def __str__(self) -> str:
        source = "default" if self.default else "environment"
        return f"{self.line}:{self.col} {self.path}: ${{{self.name}}} = {self.value!r} ({source})"


@dataclass(frozen=True, slots=True)
class Document:
    """Plain data plus the 1-based (line, column) of every path in it."""

    file: str
    data: Any
    marks: dict[Path, tuple[int, int]] = field(default_factory=dict)
    substitutions: tuple[Substitution, ...] = ()

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


def load(text: str, file: str = "<string>", env: Mapping[str, str] | None = None) -> Document:
    """Parse `text` into a located document; YamlDocumentError names each problem.

    `env` fills `${NAME}` references; None leaves them as they are written."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        message = f"expected at most {MAX_BYTES} bytes of YAML, got {size}"
        raise YamlDocumentError([Problem(file, 1, 1, "", message)])
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)  # the reader checks the characters here already
        node = loader.get_single_node()
        build = _Builder(loader, file, env)
        data = build(node, ()) if node is not None else None
        marks, problems = build.marks, build.problems
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = exc.problem or exc.context or "invalid YAML"
        if mark is not None and text[max(0, mark.index - 1) : mark.index + 1] == "${":
            reason += '; inside [...] or {...} a ${NAME} needs quotes: "${NAME}"'
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
    return Document(file, data, marks, tuple(build.substitutions))


# `$${` (a literal), or `${NAME}` / `${NAME:-default}`, or a `${` that is neither.
_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")


class _Builder:
    """Plain data from the node tree, with marks, problems and substitutions."""

    def __init__(self, loader: yaml.SafeLoader, file: str, env: Mapping[str, str] | None) -> None:
        self.loader = loader
        self.file = file
        self.env = env
        self.marks: dict[Path, tuple[int, int]] = {}
        self.problems: list[Problem] = []
        self.substitutions: list[Substitution] = []

    def __call__(self, node: yaml.Node, path: Path) -> Any:
        loader, marks = self.loader, self.marks
        marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node, deep=True)
                child = (*path, key if isinstance(key, str | int) else str(key))
                where = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                if isinstance(key, dict | list):  # `{}: x` or `[a]: x`: unhashable
                    kind = "mapping" if isinstance(key, dict) else "list"
                    self.problems.append(
                        Problem(
                            self.file,
                            *where,
                            format_path(path),
                            f"a key must be a name or a number, got a {kind}",
                        )
                    )
                    continue
                if key in out:
                    self.problems.append(
                        Problem(
                            self.file, *where, format_path(child), "duplicate key; keep only one"
                        )
                    )
                marks[child] = where
                out[key] = self(value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self(item, (*path, i)) for i, item in enumerate(node.value)]
        if self.env is not None and isinstance(node, yaml.ScalarNode) and "${" in node.value:
            node = self._substitute(node, path, self.env)
        return loader.construct_object(node, deep=True)

    def _substitute(
        self, node: yaml.ScalarNode, path: Path, env: Mapping[str, str]
    ) -> yaml.ScalarNode:
        """The scalar with its references replaced, typed again if it was plain."""
        quoted = 1 if node.style in {"'", '"'} else 0
        line, col = node.start_mark.line + 1, node.start_mark.column + 1 + quoted

        def replace(match: re.Match[str]) -> str:
            text, name, default = match.group(0), match.group(1), match.group(2)
            at = (line, col + match.start())
            if text == "$${":
                return "${"
            if name is None:
                self.problems.append(
                    Problem(self.file, *at, format_path(path),
                            "expected ${NAME} or ${NAME:-default}, got an unclosed '${'")
                )  # fmt: skip
                return text
            value = env.get(name)
            if value is None and default is None:
                self.problems.append(
                    Problem(self.file, *at, format_path(path),
                            f"${{{name}}} is not set: set {name} in the environment, or give "
                            f"a default: ${{{name}:-value}}")
                )  # fmt: skip
                return text
            resolved = value if value is not None else str(default)
            self.substitutions.append(
                Substitution(*at, format_path(path), name, resolved, value is None)
            )
            return resolved

        text = _REFERENCE.sub(replace, node.value)
        tag = node.tag
        if node.style is None:  # plain: `${PORT:-5683}` becomes the number 5683
            tag = self.loader.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
        return yaml.ScalarNode(tag, text, node.start_mark, node.end_mark, node.style)
