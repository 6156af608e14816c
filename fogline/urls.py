"""Broker URLs: `mqtt://[user:pass@]host[:port]` and `mqtts://` (TLS, port 8883)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from fogline.redact import redact, remember

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        auth = f"{self.username}:***@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{auth}{self.host}:{self.port}"

    def __repr__(self) -> str:
        """Never the password: a repr ends up in tracebacks and debug logs."""
        secret = ", password='***'" if self.password else ""
        return (
            f"BrokerUrl(host={self.host!r}, port={self.port}, tls={self.tls}, "
            f"username={self.username!r}{secret})"
        )


def parse_broker_url(url: str) -> BrokerUrl:
    """Parse and check a broker URL; the error says what a good one looks like."""
    parts = urlsplit(url)
    shown = redact(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(
            "expected a broker URL like mqtt://host:1883 or mqtts://user:pass@host:8883, "
            f"got {shown!r}"
        )
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise ValueError(f"expected a port number in {shown!r}") from None
    if not parts.hostname:
        raise ValueError(f"expected a host name in {shown!r}")
    if parts.password:
        remember(unquote(parts.password))
    return BrokerUrl(
        host=parts.hostname,
        port=port,
        tls=parts.scheme == "mqtts",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )
