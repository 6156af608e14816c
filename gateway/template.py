"""`{field}` templates for topics, payloads and messages, checked once at load.

Only plain field names with an optional format spec are allowed (`{machine}`,
`{temperature_max:.1f}`): no attribute or index access, so a template cannot reach
anything but the record's own values.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

_IDENT_CHARS = frozenset(string.ascii_letters + string.digits + "_")


class TemplateError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Template:
    source: str
    parts: tuple[tuple[str, str | None, str], ...]  # (literal, field, format spec)

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(f for _, f, _ in self.parts if f is not None)

    def render(self, values: dict[str, Any]) -> str:
        """Fill in the fields; raises KeyError naming a field the record lacks."""
        out: list[str] = []
        for literal, name, spec in self.parts:
            out.append(literal)
            if name is not None:
                out.append(format(values[name], spec))
        return "".join(out)


def compile_template(source: str) -> Template:
    try:
        parsed = list(string.Formatter().parse(source))
    except ValueError as exc:
        raise TemplateError(
            f"expected a template like 'plant/{{line}}/cmd', got {source!r}: {exc}"
        ) from exc
    parts: list[tuple[str, str | None, str]] = []
    for literal, name, spec, conversion in parsed:
        if name is None:
            parts.append((literal, None, ""))
            continue
        if not name or not set(name) <= _IDENT_CHARS or name[0].isdigit() or conversion:
            raise TemplateError(
                f"expected a plain field name in {{...}}, "
                f"got {{{name}{'!' + conversion if conversion else ''}}} in {source!r}"
            )
        if spec and "{" in spec:
            raise TemplateError(f"nested fields in a format spec are not allowed in {source!r}")
        parts.append((literal, name, spec or ""))
    return Template(source, tuple(parts))
