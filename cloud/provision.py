"""Provisioning gateways: broker credentials, the registered key, and the identity file.

`fogline cloud gateway add <id>` (or `POST /api/gateways`, see `Provisioner`) does three
things, and `revoke` (`DELETE /api/gateways/<id>`) undoes the first two:

1. **broker credentials**: a random password for user `<id>` in mosquitto's password file
   (PBKDF2-SHA512, mosquitto's own `$7$` format). The ACL file is the same for every
   gateway (`write_acl`): two `pattern` lines with `%u` give user X `fogline/X/up/#` to
   write and `fogline/X/down/#` to read, and only the cloud's user may write `down/`. So
   the broker itself keeps a gateway from publishing as another or reading its acks.
2. **its public key** in `gateway_keys`, which ingest checks every batch against
   (`cloud.trust`); revoking dates the key, so the gateway is refused, not taken for new.
3. **the identity file** the gateway reads (`fogline.identity`): its credentials and the
   cloud's public key (and its own key pair, when none was given with `--public-key`).

Why files and not mosquitto's dynamic-security plugin (docs/architecture.md): the ACL is
two static lines for every gateway (nothing per gateway to drift or to audit), nothing
on the network may change who can publish (dynamic security needs an admin client with
full control on the broker), and a SIGHUP reloads both files, which mosquitto applies to
connected clients too (a revoked gateway is disconnected). The price: provisioning runs
where the broker's files are, and the broker must be told to reload (`--reload`).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import shlex
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, insert, select, update

from cloud.db import writing
from cloud.models import GatewayKey
from fogline import signing
from fogline.identity import Identity

GATEWAY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
CLOUD_USER = "fogline-cloud"
PBKDF2_ITERATIONS = 101_000  # mosquitto_passwd uses 101; the broker reads the count


class ProvisionError(ValueError):
    """Provisioning that cannot go on; the message says what to do. `kind`: the input is
    bad (`invalid`), the state forbids it (`conflict`), or the broker was not told
    (`broker`: the files changed, the reload command failed)."""

    def __init__(
        self, message: str, kind: Literal["invalid", "conflict", "broker"] = "invalid"
    ) -> None:
        super().__init__(message)
        self.kind = kind


def check_gateway_id(gateway: str) -> None:
    """An id that can stand as one topic level and as a broker user name under `%u`."""
    if not GATEWAY_ID.fullmatch(gateway) or gateway == CLOUD_USER:
        raise ProvisionError(
            f"gateway id {gateway!r}: expected 1 to 64 letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit, and not {CLOUD_USER!r}"
        )


def password_hash(password: str, salt: bytes | None = None) -> str:
    """A mosquitto 2 password-file hash (`$7$`: PBKDF2-HMAC-SHA512, 12-byte salt)."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    b = base64.b64encode
    return f"$7${PBKDF2_ITERATIONS}${b(salt).decode()}${b(digest).decode()}"


@dataclass(frozen=True)
class BrokerFiles:
    """Where the broker's password and ACL files are, and how to make it reload them."""

    directory: Path
    reload: str | None = None  # a shell command, e.g. `docker compose kill -s HUP cloud-broker`
    owner: tuple[int, int] | None = None  # uid, gid the broker runs as (mosquitto drops root)

    @property
    def passwords(self) -> Path:
        return self.directory / "passwords"

    @property
    def acl(self) -> Path:
        return self.directory / "acl"

    def users(self) -> dict[str, str]:
        if not self.passwords.exists():
            return {}
        users: dict[str, str] = {}
        for line in self.passwords.read_text().splitlines():
            user, sep, hashed = line.partition(":")
            if sep:
                users[user] = hashed
        return users

    def set_user(self, user: str, password: str | None) -> None:
        """Add or replace a user (None: remove it); the file is replaced in one step."""
        users = self.users()
        if password is None:
            users.pop(user, None)
        else:
            users[user] = password_hash(password)
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.passwords.with_name(".passwords.tmp")
        tmp.unlink(missing_ok=True)
        signing.write_secret(tmp, "".join(f"{u}:{h}\n" for u, h in sorted(users.items())))
        if self.owner is not None:  # 0600, but the broker's: it must read it after a reload
            os.chown(tmp, *self.owner)
        tmp.replace(self.passwords)
        if not self.acl.exists():
            write_acl(self.acl)

    def apply(self) -> str:
        """Run the reload command; what to tell the operator."""
        if not self.reload:
            return (
                f"reload the broker so that it reads {self.passwords}: "
                "kill -HUP <mosquitto's pid> (or pass --reload 'CMD')"
            )
        by_hand = "reload the broker by hand: kill -HUP <mosquitto's pid>"
        try:
            done = subprocess.run(  # noqa: S603 - the operator's own command line
                shlex.split(self.reload), capture_output=True, text=True, check=False, timeout=30
            )
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            reason = (
                exc.strerror
                if isinstance(exc, OSError) and exc.strerror
                else "it did not end within 30 s"
                if isinstance(exc, subprocess.TimeoutExpired)
                else str(exc)
            )
            raise ProvisionError(
                f"--reload {self.reload!r} could not run ({reason}); {by_hand}", "broker"
            ) from None
        if done.returncode != 0:
            said = " ".join((done.stderr.strip() or done.stdout.strip()).split())
            raise ProvisionError(
                f"--reload {self.reload!r} failed (exit {done.returncode}"
                f"{': ' + said if said else ''}); {by_hand}",
                "broker",
            )
        return "the broker reloaded its password file"


ACL = f"""\
# Fogline's broker ACL (written by `fogline cloud gateway add`; the same for every gateway).
# Every user but the cloud is a gateway whose user name is its id: it may write only its
# own uplink and read only its own downlink. Nobody else may write a downlink.

user {CLOUD_USER}
topic read fogline/+/up/#
topic write fogline/+/down/#

pattern write fogline/%u/up/#
pattern read fogline/%u/down/#
"""


def write_acl(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ACL)


def add_gateway(
    engine: Engine,
    gateway: str,
    cloud_key: Ed25519PrivateKey,
    *,
    public_key: str | None = None,
    broker: BrokerFiles | None = None,
    clock: float | None = None,
) -> Identity:
    """Register `gateway` (a new key, or a second one during a rotation) and give it broker
    credentials; returns its identity (with its private key when it made the pair)."""
    check_gateway_id(gateway)
    private = None
    if public_key is None:
        made = Ed25519PrivateKey.generate()
        private, public_key = signing.private_text(made), signing.public_text(made)
    try:
        key = signing.load_public(public_key)
    except ValueError as exc:
        raise ProvisionError(
            f"--public-key: {exc}; print the gateway's with `fogline gateway key --data-dir DIR`"
        ) from None
    now = time.time() if clock is None else clock
    kid = signing.key_id(key)
    with writing(engine) as conn:
        held = conn.execute(
            select(GatewayKey.revoked_at).where(
                GatewayKey.gateway_id == gateway, GatewayKey.key_id == kid
            )
        ).first()
        if held is None:
            conn.execute(
                insert(GatewayKey).values(
                    gateway_id=gateway,
                    key_id=kid,
                    public_key=signing.public_text(key),
                    added_at=now,
                    revoked_at=None,
                )
            )
        elif held[0] is not None:
            raise ProvisionError(
                f"key {kid} of {gateway} was revoked and stays so; make the gateway a new key "
                "(remove its data directory's gateway.key) and add that one",
                "conflict",
            )
    password = secrets.token_urlsafe(24)
    if broker is not None:
        broker.set_user(gateway, password)
    return Identity(
        gateway=gateway,
        username=gateway,
        password=password,
        cloud_public_key=signing.public_text(cloud_key),
        gateway_public_key=signing.public_text(key),
        gateway_private_key=private,
    )


def revoke_gateway(
    engine: Engine,
    gateway: str,
    *,
    key_id: str | None = None,
    broker: BrokerFiles | None = None,
    clock: float | None = None,
) -> int:
    """Revoke every live key of `gateway` (or just `key_id`, after a rotation) and, unless
    only one key goes, its broker user; returns the keys revoked."""
    now = time.time() if clock is None else clock
    where = [GatewayKey.gateway_id == gateway, GatewayKey.revoked_at.is_(None)]
    if key_id is not None:
        where.append(GatewayKey.key_id == key_id)
    with writing(engine) as conn:
        n = conn.execute(update(GatewayKey).where(*where).values(revoked_at=now)).rowcount
    if broker is not None and key_id is None:
        broker.set_user(gateway, None)
    return int(n)


def list_gateways(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                GatewayKey.gateway_id,
                GatewayKey.key_id,
                GatewayKey.added_at,
                GatewayKey.revoked_at,
            ).order_by(GatewayKey.gateway_id, GatewayKey.added_at)
        ).all()
    return [{"gateway": g, "key_id": k, "added_at": a, "revoked_at": r} for g, k, a, r in rows]


API_OFF = (
    "provisioning through the API is off: start the cloud with --broker-dir DIR (the "
    "broker's password and ACL files, shared with the broker) and --broker-reload CMD (how "
    "to make the broker read them), or provision with `fogline cloud gateway add` where the "
    "broker's files are"
)


class Provisioner:
    """`POST /api/gateways` and `DELETE /api/gateways/<id>`, as the CLI does them.

    One change at a time (the password file is rewritten whole), and the cloud's own key
    cache is refreshed at once, so a revoked gateway is refused from the next batch on
    (other replicas within their refresh period)."""

    def __init__(
        self,
        engine: Engine,
        files: BrokerFiles,
        cloud_key: Ed25519PrivateKey | None,
        refresh: Callable[[], None] = lambda: None,
    ) -> None:
        self.engine = engine
        self.files = files
        self.cloud_key = cloud_key
        self._refresh = refresh
        self._lock = threading.Lock()

    def add(self, gateway: str, public_key: str) -> tuple[Identity, str]:
        """The gateway's identity (its broker password: shown this once) and what the
        broker was told; ProvisionError if it cannot be done."""
        if self.cloud_key is None:
            msg = (
                "the cloud has no signing key, so a gateway could not check what it sends: "
                "start the cloud with --signing-key FILE"
            )
            raise ProvisionError(msg, "conflict")
        with self._lock:
            identity = add_gateway(
                self.engine, gateway, self.cloud_key, public_key=public_key, broker=self.files
            )
            self._refresh()
            return identity, self.files.apply()

    def revoke(self, gateway: str) -> tuple[int, str]:
        """Keys revoked (0: none was live), and what the broker was told."""
        with self._lock:
            n = revoke_gateway(self.engine, gateway, broker=self.files)
            self._refresh()
            return n, self.files.apply() if n else ""


def cloud_user(broker: BrokerFiles, password: str | None = None) -> str:
    """Give the cloud its broker user (the only one that may write downlinks); returns
    the password, made when not given."""
    password = password or secrets.token_urlsafe(24)
    broker.set_user(CLOUD_USER, password)
    return password
