"""Secrets never printed: passwords are masked in every message, repr and log line.

Passwords reach us inside URLs (`--db postgresql+psycopg://fogline:S3cretPW@db/fogline`,
`--uplink mqtts://gw:S3cretPW@cloud:8883`), and libraries repeat those URLs in their errors
and tracebacks, or show a connection string (`password=...`). `redact` masks both shapes
and every password registered with `remember` (parsed URLs register theirs), and
`RedactingFilter`, installed on the CLI's log handlers, applies it to each formatted
message and traceback, whoever logged it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

MASK = "***"
_URL_AUTH = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*):[^@\s'\"]*@")
_KEY_VALUE = re.compile(
    r"(?P<head>\bpass(?:word|wd)?\s*[=:]\s*)(?:'[^']*'|\"[^\"]*\"|[^\s,;)]+)", re.IGNORECASE
)
_known: set[str] = set()


def remember(password: str | None) -> None:
    """Mask this password wherever it appears from now on (ignored when too short to matter)."""
    if password and len(password) >= 3:
        _known.add(password)


def remember_url(url: str) -> None:
    """Remember the password a URL carries, if any."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return
    if password:
        remember(password)
        remember(unquote(password))


def redact(text: str) -> str:
    """`text` with URL passwords, `password=...` values and remembered passwords masked."""
    text = _URL_AUTH.sub(rf"\g<head>:{MASK}@", text)
    text = _KEY_VALUE.sub(rf"\g<head>{MASK}", text)
    for secret in sorted(_known, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


_SECRET_KEY = re.compile(r"pass|secret|token", re.IGNORECASE)


def _shown(value: Any) -> str:
    if isinstance(value, Mapping):
        items = (
            f"{k!r}: {MASK!r}"
            if isinstance(k, str) and _SECRET_KEY.search(k)
            else f"{k!r}: {_shown(v)}"
            for k, v in value.items()
        )
        return "{" + ", ".join(items) + "}"
    return redact(repr(value))


def dataclass_repr(obj: Any) -> str:
    """A dataclass's repr with secrets masked: URL passwords, remembered passwords and the
    values of mapping keys that name a password, secret or token (`connect_args`)."""
    shown = ", ".join(
        f"{f.name}={_shown(getattr(obj, f.name))}" for f in dataclasses.fields(obj) if f.repr
    )
    return f"{type(obj).__name__}({shown})"


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message and traceback before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Add a RedactingFilter to every handler of `logger` (default: the root logger)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
