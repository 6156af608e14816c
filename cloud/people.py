"""People: users with a role, their API tokens and their browser sessions. One model for
the JSON API and the console.

* **Roles** are ranked: `viewer` reads, `operator` also acts on alerts and silences,
  `admin` also sends models over the air and manages people.
* **Passwords** are hashed with argon2id (`argon2-cffi`, its default parameters: about
  110 ms and 64 MiB per hash here), and re-hashed on sign-in when those parameters change.
  An unknown name costs the same verify, so the answer time does not say which names exist.
* **API tokens** are `fgl_<lookup>_<secret>`: `lookup` finds the row, only sha256 of the
  256-bit random secret is stored. A slow hash protects guessable secrets; this one is not
  guessable, and argon2 on every API request would cost ~110 ms of CPU each (sha256:
  0.4 µs; measured here).
* **Sessions**: a random cookie, stored as its sha256, with its own CSRF token. A session
  ends after `SESSION_IDLE_MINUTES` without a request (a browser left signed in on a shared
  console) and after `SESSION_HOURS` (a shift and a half) whatever the activity.
  `expires_at` holds the nearer of the two ends; a request moves it at most once a minute,
  so reads do not queue on writes. An open live list keeps its stream; its next request
  after the idle time asks to sign in again.

Everything here is synchronous (SQLAlchemy): routers call it from FastAPI's thread pool.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Engine, delete, func, insert, select, update

from cloud.db import writing
from cloud.models import MAX_USER, ROLES, ApiToken, User, WebSession

SESSION_HOURS = 12.0
SESSION_IDLE_MINUTES = 60.0
MIN_PASSWORD = 8
TOKEN_PREFIX = "fgl_"  # noqa: S105 - a prefix, not a secret
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]*")
_HASHER = PasswordHasher()
_DUMMY_HASH = _HASHER.hash("an unknown user still costs one verify")
_TOUCH_EVERY = 60.0  # seconds between writes of a token's last use


class PeopleError(ValueError):
    """A user or token that cannot be made as asked; the message says what would do."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a user, how they proved it, and (for a session) its CSRF token."""

    user_id: int
    name: str
    role: str
    via: str  # "token" or "session"
    csrf: str | None = None

    def can(self, role: str) -> bool:
        return rank(self.role) >= rank(role)


def rank(role: str) -> int:
    return ROLES.index(role)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def check_role(role: str) -> str:
    if role not in ROLES:
        raise PeopleError(f"role: expected one of {', '.join(ROLES)}, got {role!r}")
    return role


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name) or len(name) > MAX_USER:
        raise PeopleError(
            f"user name: letters, digits and . _ @ - (at most {MAX_USER}), got {name!r}"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise PeopleError(f"password: at least {MIN_PASSWORD} characters")
    return password


# -- users -----------------------------------------------------------------------------------


def add_user(engine: Engine, name: str, role: str, password: str | None, now: float) -> int:
    """A new user; `password` None makes a user who can only hold API tokens."""
    check_name(name)
    check_role(role)
    hashed = _HASHER.hash(check_password(password)) if password is not None else None
    with writing(engine) as conn:
        if conn.execute(select(User.id).where(User.name == name)).first() is not None:
            raise PeopleError(f"user {name!r} exists; pick another name")
        return int(
            conn.execute(
                insert(User)
                .values(name=name, role=role, password_hash=hashed, created_at=now)
                .returning(User.id)
            ).scalar_one()
        )


def set_password(engine: Engine, name: str, password: str) -> None:
    hashed = _HASHER.hash(check_password(password))
    with writing(engine) as conn:
        user = conn.execute(select(User.id).where(User.name == name)).scalar_one_or_none()
        if user is None:
            raise PeopleError(f"no user {name!r}")
        conn.execute(update(User).where(User.id == user).values(password_hash=hashed))
        conn.execute(delete(WebSession).where(WebSession.user_id == user))  # sign out everywhere


def set_role(engine: Engine, name: str, role: str) -> None:
    check_role(role)
    with writing(engine) as conn:
        if not conn.execute(update(User).where(User.name == name).values(role=role)).rowcount:
            raise PeopleError(f"no user {name!r}")


def remove_user(engine: Engine, name: str) -> None:
    """Remove a user; their tokens and sessions go with them."""
    with writing(engine) as conn:
        user = conn.execute(select(User.id).where(User.name == name)).scalar_one_or_none()
        if user is None:
            raise PeopleError(f"no user {name!r}")
        conn.execute(delete(ApiToken).where(ApiToken.user_id == user))
        conn.execute(delete(WebSession).where(WebSession.user_id == user))
        conn.execute(delete(User).where(User.id == user))


def list_users(engine: Engine) -> list[tuple[str, str, bool]]:
    """(name, role, has a password), by name."""
    with engine.connect() as conn:
        rows = conn.execute(select(User.name, User.role, User.password_hash).order_by(User.name))
        return [(n, r, h is not None) for n, r, h in rows]


def count_users(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(User)).scalar_one())


def sign_in(engine: Engine, name: str, password: str) -> Principal | None:
    """The user if the password is theirs; re-hashes it when argon2's parameters changed."""
    with engine.connect() as conn:
        row = conn.execute(
            select(User.id, User.name, User.role, User.password_hash).where(User.name == name)
        ).first()
    stored = row.password_hash if row is not None else None
    try:
        _HASHER.verify(stored or _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if row is None or stored is None:
        return None
    if _HASHER.check_needs_rehash(stored):
        with writing(engine) as conn:
            conn.execute(
                update(User).where(User.id == row.id).values(password_hash=_HASHER.hash(password))
            )
    return Principal(row.id, row.name, row.role, "password")


# -- API tokens ------------------------------------------------------------------------------


def add_token(engine: Engine, user: str, name: str, now: float) -> tuple[int, str]:
    """A new token for `user`: its id and the token itself, which is shown only now."""
    lookup = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    with writing(engine) as conn:
        user_id = conn.execute(select(User.id).where(User.name == user)).scalar_one_or_none()
        if user_id is None:
            raise PeopleError(f"no user {user!r}: add one first (fogline cloud user add)")
        token_id = conn.execute(
            insert(ApiToken)
            .values(
                user_id=user_id,
                name=name[:128],
                lookup=lookup,
                secret_hash=_sha256(secret),
                created_at=now,
            )
            .returning(ApiToken.id)
        ).scalar_one()
    return int(token_id), f"{TOKEN_PREFIX}{lookup}_{secret}"


def revoke_token(engine: Engine, token_id: int, now: float) -> bool:
    with writing(engine) as conn:
        return bool(
            conn.execute(
                update(ApiToken)
                .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
                .values(revoked_at=now)
            ).rowcount
        )


def list_tokens(engine: Engine) -> list[tuple[int, str, str, float, float | None, bool]]:
    """(id, user, name, created_at, last_used_at, revoked), oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                ApiToken.id,
                User.name,
                ApiToken.name,
                ApiToken.created_at,
                ApiToken.last_used_at,
                ApiToken.revoked_at,
            )
            .join(User, User.id == ApiToken.user_id)
            .order_by(ApiToken.id)
        )
        return [(i, u, n, c, last, r is not None) for i, u, n, c, last, r in rows]


def token_principal(engine: Engine, token: str, now: float) -> Principal | None:
    """The user behind a bearer token, or None (unknown, malformed or revoked)."""
    body = token.removeprefix(TOKEN_PREFIX)
    lookup, sep, secret = body.partition("_")
    if body == token or not sep or len(lookup) != 16 or not secret:
        return None
    with engine.connect() as conn:
        row = conn.execute(
            select(ApiToken.id, ApiToken.secret_hash, ApiToken.last_used_at, User.id)
            .add_columns(User.name, User.role)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.lookup == lookup, ApiToken.revoked_at.is_(None))
        ).first()
    if row is None or not hmac.compare_digest(row.secret_hash, _sha256(secret)):
        return None
    token_id, _, last_used, user_id, name, role = row
    if last_used is None or now - last_used > _TOUCH_EVERY:
        with writing(engine) as conn:  # at most once a minute: reads must not queue on writes
            conn.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now))
    return Principal(user_id, name, role, "token")


# -- browser sessions ------------------------------------------------------------------------


def open_session(engine: Engine, user_id: int, now: float) -> tuple[str, str]:
    """A new session: the cookie value and its CSRF token. Expired sessions go now."""
    cookie = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    with writing(engine) as conn:
        conn.execute(delete(WebSession).where(WebSession.expires_at <= now))
        conn.execute(
            insert(WebSession).values(
                id_hash=_sha256(cookie),
                user_id=user_id,
                csrf=csrf,
                created_at=now,
                expires_at=_session_end(now, now),
            )
        )
    return cookie, csrf


def _session_end(created: float, now: float) -> float:
    """When a session used at `now` ends: idle time from now, within its lifetime."""
    return min(created + SESSION_HOURS * 3600, now + SESSION_IDLE_MINUTES * 60)


def session_principal(engine: Engine, cookie: str, now: float) -> Principal | None:
    """The session's user, or None when it is unknown, idle too long or too old."""
    key = _sha256(cookie)
    with engine.connect() as conn:
        row = conn.execute(
            select(
                User.id,
                User.name,
                User.role,
                WebSession.csrf,
                WebSession.created_at,
                WebSession.expires_at,
            )
            .join(User, User.id == WebSession.user_id)
            .where(WebSession.id_hash == key, WebSession.expires_at > now)
        ).first()
    if row is None:
        return None
    end = _session_end(row.created_at, now)
    if end - row.expires_at > _TOUCH_EVERY:
        with writing(engine) as conn:
            conn.execute(update(WebSession).where(WebSession.id_hash == key).values(expires_at=end))
    return Principal(row.id, row.name, row.role, "session", row.csrf)


def close_session(engine: Engine, cookie: str) -> None:
    with writing(engine) as conn:
        conn.execute(delete(WebSession).where(WebSession.id_hash == _sha256(cookie)))
