"""TLS for MQTT links (`mqtts://`): whose certificates to trust, and ours for mutual TLS.

`--ca FILE` trusts that CA (a private PKI: the usual case for a plant) instead of the
system's; `--cert FILE --key FILE` present a client certificate, for brokers that require
one (`require_certificate true`). Host names are always checked: a certificate for
another host is refused, whatever CA signed it.
"""

from __future__ import annotations

import dataclasses
import ssl
from dataclasses import dataclass
from pathlib import Path

from fogline.urls import BrokerUrl


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("--cert and --key go together (the client certificate and its key)")
        for what, path in (("--ca", self.ca), ("--cert", self.cert), ("--key", self.key)):
            if path is not None and not path.is_file():
                raise ValueError(f"{what}: no such file {path}")


def client_context(files: TlsFiles | None) -> ssl.SSLContext:
    """A client context: TLS 1.2 or later, the server's certificate and name checked."""
    files = files or TlsFiles()
    context = ssl.create_default_context(cafile=str(files.ca) if files.ca is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if files.cert is not None and files.key is not None:
        context.load_cert_chain(str(files.cert), str(files.key))
    return context


def tls_files(ca: str | None, cert: str | None, key: str | None) -> TlsFiles | None:
    """From the command line's strings; None when none is given."""
    if not (ca or cert or key):
        return None
    return TlsFiles(
        Path(ca) if ca else None, Path(cert) if cert else None, Path(key) if key else None
    )


def https_files(cert: str | None, key: str | None) -> tuple[Path, Path] | None:
    """The cloud's `--tls-cert` and `--tls-key`, checked before anything starts: uvicorn
    finds a missing or mismatched file only as it starts, and says so in 44 lines."""
    if bool(cert) != bool(key):
        raise ValueError("--tls-cert and --tls-key go together")
    if not cert or not key:
        return None
    files = Path(cert), Path(key)
    for flag, path, what in zip(
        ("--tls-cert", "--tls-key"), files, ("certificate", "private key"), strict=True
    ):
        if not path.is_file():
            raise ValueError(f"{flag}: no such file {path}; expected the HTTPS {what} (PEM)")
    try:  # an encrypted key would make uvicorn ask for its password on the terminal
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            cert, key, password=lambda: b""
        )
    except (ssl.SSLError, OSError) as exc:
        got = (
            "a key of another certificate"
            if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH"
            else f"files it cannot read as such ({exc.strerror or exc})"
        )
        raise ValueError(
            f"--tls-cert {cert} --tls-key {key}: expected a PEM certificate and its "
            f"unencrypted private key, got {got}"
        ) from None
    return files


def with_password_file(url: BrokerUrl, path: str | None) -> BrokerUrl:
    """The URL with its password read from a file (`--broker-password-file`): a password
    on the command line shows in `ps`, and compose can share a file, not an environment."""
    if not path:
        return url
    try:
        password = Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"--broker-password-file: {exc}") from None
    if not url.username:
        raise ValueError("--broker-password-file: the broker URL names no user (mqtt://USER@...)")
    return dataclasses.replace(url, password=password)
