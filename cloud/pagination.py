"""Opaque keyset cursors: the sort key of the last item sent, base64url JSON.

Keyset (`WHERE (sort, id) < (:sort, :id)`) instead of OFFSET: a page costs the same at
the millionth row as at the first, and rows arriving meanwhile neither repeat nor vanish.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson


def encode_cursor(*key: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


class CursorError(ValueError):
    """A cursor this API did not hand out (the API answers 400)."""

    def __init__(self) -> None:
        super().__init__("invalid cursor: pass back the `next` of the previous page unchanged")


def decode_cursor(cursor: str, *types: type) -> tuple[Any, ...]:
    """The key back, each part checked against `types`."""
    try:
        key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, orjson.JSONDecodeError, ValueError) as exc:
        raise CursorError from exc
    if not isinstance(key, list) or len(key) != len(types):
        raise CursorError
    parts: list[Any] = []
    for value, kind in zip(key, types, strict=True):
        if isinstance(value, bool):
            raise CursorError
        # JSON writes 3.0 as 3.0, but a client may hand back a whole float as an int.
        part = float(value) if kind is float and isinstance(value, int) else value
        if not isinstance(part, kind):
            raise CursorError
        parts.append(part)
    return tuple(parts)
