"""Ed25519 signatures on what crosses the broker, so that a hostile broker cannot forge it.

A signed message is the JSON object it would have been, with one more field, last:

    {"v": 1, ..., "sig": "<base64 of 64 bytes>"}

The signature covers the bytes of the object *without* that field: everything before
`,"sig":"` with its closing `}` put back. Signing the exact bytes (not a re-encoding of
parsed values) means no canonical form to agree on; a reader that ignores `sig` still
reads the message. What Ed25519 signs is `fogline-sig-v1\\0 || SHA-256(bytes)`: Ed25519
hashes its message twice with SHA-512, which cost 0.39 ms for a 138 KB batch here, against
0.13 ms for SHA-256 (SHA-NI) and one signature over 47 bytes (docs/benchmarks.md). The
signer's key is named inside the signed part (`kid`, the first 16 hex digits of the
SHA-256 of the raw public key), so rotation can keep two keys valid.

Model chunks carry a JSON header line, then raw bytes (`fogline.ota`); the header is
signed the same way, and as it names the model's size and sha256 and the gateway it is
for, the signature covers the model too.

Keys are files of 32 raw bytes (the Ed25519 seed) in base64, mode 0600, created with
O_EXCL so two processes never write different keys to one path. The crypto is
`cryptography`'s (OpenSSL), nothing of ours.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIG_FIELD = b',"sig":"'
SIG_B64 = 88  # base64 of 64 bytes, padded
TRAILER = len(SIG_FIELD) + SIG_B64 + 2  # ,"sig":"<88>"}


class SignatureError(ValueError):
    """A message that is unsigned, signed by another key, or altered (the text says which)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason  # unsigned | unknown_key | forged


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str, size: int) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"expected base64 of {size} bytes: {exc}") from None
    if len(raw) != size:
        raise ValueError(f"expected base64 of {size} bytes, got {len(raw)}")
    return raw


def public_raw(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes_raw()


def public_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public key as it is written in identity files, the database and the CLI."""
    return b64(public_raw(key))


def load_public(text: str) -> Ed25519PublicKey:
    """A public key from its base64 text; ValueError says what a good one looks like."""
    return Ed25519PublicKey.from_public_bytes(unb64(text.strip(), 32))


def key_id(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    return hashlib.sha256(public_raw(key)).hexdigest()[:16]


def private_text(key: Ed25519PrivateKey) -> str:
    return b64(key.private_bytes_raw())


def load_private(text: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(unb64(text.strip(), 32))


def write_secret(path: Path, text: str) -> None:
    """Create `path` with mode 0600 holding `text`; FileExistsError if it is there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def load_or_create_key(path: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The key in `path`, made (0600) on first use; True when it was just made."""
    try:
        return read_key(path), False
    except FileNotFoundError:
        pass
    key = Ed25519PrivateKey.generate()
    try:
        write_secret(path, private_text(key) + "\n")
    except FileExistsError:  # another process made it first: use theirs
        return read_key(path), False
    return key, True


def read_key(path: Path) -> Ed25519PrivateKey:
    """A private key file; refuses one that others may read, and says how to fix it."""
    mode = path.stat().st_mode & 0o077
    if mode:
        raise PermissionError(
            f"{path} is readable by other users (mode {path.stat().st_mode & 0o777:o}); "
            f"a private key must be private: chmod 600 {path}"
        )
    try:
        return load_private(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} does not hold an Ed25519 key: {exc}") from None


class Signer:
    """Signs JSON objects with one private key (and names it, `kid`)."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.key = key
        self.kid = key_id(key)

    def sign(self, body: bytes) -> bytes:
        """`body` (a JSON object) with its signature appended as the last field."""
        if body[-1:] != b"}" or len(body) < 3:
            raise ValueError("expected a JSON object with at least one field")
        signature = self.key.sign(_digest(body))
        return body[:-1] + SIG_FIELD + base64.b64encode(signature) + b'"}'


def split(payload: bytes) -> tuple[bytes, bytes]:
    """(signed body, signature) of a signed message; SignatureError if there is none."""
    tail = payload[-TRAILER:]
    if len(payload) <= TRAILER or not tail.startswith(SIG_FIELD) or not tail.endswith(b'"}'):
        raise SignatureError("unsigned", "the message carries no signature")
    text = tail[len(SIG_FIELD) : -2]
    try:
        signature = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("forged", "the signature is not base64") from None
    if len(signature) != 64:
        raise SignatureError("forged", "the signature is not 64 bytes")
    if base64.b64encode(signature) != text:
        # The last character carries 4 unused bits that decoding ignores: without this, 16
        # spellings of one signature pass, and an altered message is taken for the original.
        raise SignatureError("forged", "the signature is not in canonical base64")
    return payload[:-TRAILER] + b"}", signature


def verify(payload: bytes, keys: list[Ed25519PublicKey]) -> bytes:
    """The signed body if one of `keys` signed `payload`; SignatureError otherwise."""
    body, signature = split(payload)
    if not keys:
        raise SignatureError("unknown_key", "no key is registered to check the signature")
    digest = _digest(body)
    for key in keys:
        try:
            key.verify(signature, digest)
        except InvalidSignature:
            continue
        return body
    raise SignatureError("forged", "the signature does not match the message and key")


def _digest(body: bytes) -> bytes:
    return b"fogline-sig-v1\0" + hashlib.sha256(body).digest()


def sign_chunk(payload: bytes, gateway: str, signer: Signer) -> bytes:
    """A model chunk (`header\\nbytes`) with its header naming the gateway it is for
    (`for`: a chunk copied to another gateway's topic is refused there) and signed."""
    head, sep, body = payload.partition(b"\n")
    if not sep or head[-1:] != b"}":
        raise ValueError("expected a JSON header line, then the model bytes")
    head = head[:-1] + b',"for":' + orjson.dumps(gateway) + b"}"
    return signer.sign(head) + b"\n" + body


def verify_chunk(payload: bytes, gateway: str, keys: list[Ed25519PublicKey]) -> bytes:
    """The chunk, once its header's signature is checked and it names `gateway` (the
    signature stays in place: the header's reader ignores extra fields)."""
    head, sep, _ = payload.partition(b"\n")
    if not sep:
        raise SignatureError("unsigned", "expected a signed JSON header line")
    header = orjson.loads(verify(head, keys))
    if not isinstance(header, dict) or header.get("for") != gateway:
        raise SignatureError("forged", f"a chunk signed for another gateway, not {gateway!r}")
    return payload
