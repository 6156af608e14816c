"""What a provisioned gateway holds: `identity.json`, written by `fogline cloud gateway add`.

    {"v": 1, "gateway": "gw1", "username": "gw1", "password": "...",
     "cloud_public_key": "<base64>", "gateway_public_key": "<base64>"}

* `username`/`password`: its broker credentials on the cloud broker, whose ACL lets this
  user write only `fogline/<gateway>/up/#` and read only `fogline/<gateway>/down/#`.
* `cloud_public_key`: the key acks, commands and model chunks must be signed with.
* `gateway_public_key`: the key the cloud registered for this gateway. The private key
  lives in the gateway's data directory (`gateway.key`, 0600), made on first start; when
  `add` was not given the gateway's public key it made the key pair itself and the file
  also carries `gateway_private_key`, which the gateway moves into its data directory.

The file is a secret (mode 0600): it holds a broker password.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fogline import signing

log = logging.getLogger("fogline.identity")

VERSION = 1
KEY_FILE = "gateway.key"
IDENTITY_FILE = "identity.json"


class IdentityError(ValueError):
    """An identity that cannot be used; the message says how to get a good one."""


@dataclass(frozen=True, slots=True)
class Identity:
    gateway: str
    username: str
    password: str
    cloud_public_key: str
    gateway_public_key: str | None = None
    gateway_private_key: str | None = None

    def __repr__(self) -> str:
        """Never the password nor the private key: a repr ends up in logs."""
        return f"Identity(gateway={self.gateway!r}, username={self.username!r}, password='***')"

    def to_json(self) -> bytes:
        data: dict[str, object] = {
            "v": VERSION,
            "gateway": self.gateway,
            "username": self.username,
            "password": self.password,
            "cloud_public_key": self.cloud_public_key,
        }
        if self.gateway_public_key:
            data["gateway_public_key"] = self.gateway_public_key
        if self.gateway_private_key:
            data["gateway_private_key"] = self.gateway_private_key
        return orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n"

    def cloud_key(self) -> Ed25519PublicKey:
        return signing.load_public(self.cloud_public_key)


def write_identity(path: Path, identity: Identity) -> None:
    """Write (or replace) an identity file, mode 0600 from its first byte."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    signing.write_secret(tmp, identity.to_json().decode())
    tmp.replace(path)


def read_identity(path: Path) -> Identity:
    """An identity file; IdentityError names the file and what is wrong with it."""
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise IdentityError(
            f"no identity file at {path}: provision the gateway on the cloud with "
            "`fogline cloud gateway add <id> --out identity.json` and copy the file here"
        ) from None
    except orjson.JSONDecodeError as exc:
        raise IdentityError(f"{path} is not JSON: {exc}") from None
    except OSError as exc:  # a directory, a file it may not read
        raise IdentityError(f"cannot read the identity file {path}: {exc.strerror}") from None
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise IdentityError(f"{path}: expected an identity file with v={VERSION}")
    fields = ("gateway", "username", "password", "cloud_public_key")
    missing = [f for f in fields if not isinstance(data.get(f), str) or not data[f]]
    if missing:
        raise IdentityError(f"{path}: missing {', '.join(missing)}")
    identity = Identity(
        gateway=data["gateway"],
        username=data["username"],
        password=data["password"],
        cloud_public_key=data["cloud_public_key"],
        gateway_public_key=data.get("gateway_public_key") or None,
        gateway_private_key=data.get("gateway_private_key") or None,
    )
    try:
        identity.cloud_key()
    except ValueError as exc:
        raise IdentityError(f"{path}: cloud_public_key: {exc}") from None
    return identity


def gateway_key(data_dir: Path, identity: Identity | None) -> Ed25519PrivateKey:
    """The gateway's signing key from `data_dir/gateway.key`, made on first start (or
    taken from the identity file when provisioning made it); refuses a key that is not
    the one the cloud registered, and says how to register it."""
    path = data_dir / KEY_FILE
    if identity is not None and identity.gateway_private_key and not path.exists():
        with contextlib.suppress(FileExistsError):
            signing.write_secret(path, identity.gateway_private_key + "\n")
    key, made = signing.load_or_create_key(path)
    if made:
        log.info("made this gateway's signing key %s (key id %s)", path, signing.key_id(key))
    registered = identity.gateway_public_key if identity is not None else None
    if registered and registered != signing.public_text(key):
        gid = identity.gateway if identity is not None else "<id>"
        raise IdentityError(
            f"the signing key in {path} is not the one the cloud registered for "
            f"{gid}; register it with `fogline cloud gateway add {gid} --public-key "
            f"{signing.public_text(key)}` and use the identity file that prints"
        )
    return key
