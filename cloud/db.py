"""Engines for the two stores we support, and schema migration at start.

SQLite (the default) runs in WAL mode so that API reads never wait for ingest, with
`synchronous=FULL` because an ack promises the record is on disk. sqlite3's own
transaction handling is switched off so that SQLAlchemy emits BEGIN: writers say
`BEGIN IMMEDIATE` and take the write lock up front, so that two replicas on one file
queue on `busy_timeout` instead of failing half-way through a drain. PostgreSQL is
`postgresql+psycopg://...`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry

from fogline.redact import redact

MIGRATIONS = Path(__file__).with_name("migrations")
BUSY_TIMEOUT_S = 30.0
_IMMEDIATE = "fogline_immediate"
# Any fixed number: replicas that start together take turns migrating.
_MIGRATION_LOCK = 0x466F676C


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def check_url(url: str) -> URL:
    """The parsed URL if it names a store we support; ValueError says what would do."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        parsed = None
    if parsed is None or parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(
            "expected a database URL like sqlite:///./fogline.db or "
            f"postgresql+psycopg://user@host/db, got {redact(url)!r}"
        )
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        # Each pooled connection would get its own empty in-memory database.
        raise ValueError(f"expected a SQLite file URL like sqlite:///./fogline.db, got {url!r}")
    return parsed


def db_error(exc: SQLAlchemyError) -> str:
    """The database's own words, on one line and with no password: SQLAlchemy adds its
    statement, parameters and a "(Background on this error at: ...)" line to them."""
    reason = str(exc.orig) if isinstance(exc, DBAPIError) and exc.orig is not None else None
    if reason is None:
        reason = re.sub(r"\s*\(Background on this error at: [^)]*\)", "", str(exc))
    lines = [line.strip() for line in reason.splitlines() if line.strip()]
    return redact("; ".join(lines) or type(exc).__name__)


def make_engine(url: str, connect_args: dict[str, Any] | None = None) -> Engine:
    """An engine for a SQLite file or PostgreSQL, configured for ingest and the API."""
    parsed = check_url(url)
    args = dict(connect_args or {})
    if parsed.get_backend_name() == "sqlite":
        args.setdefault("timeout", BUSY_TIMEOUT_S)
        engine = create_engine(parsed, connect_args=args, json_serializer=_json)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(
        parsed, connect_args=args, json_serializer=_json, pool_pre_ping=True, pool_size=8
    )


def _sqlite_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN (see _sqlite_begin)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get(_IMMEDIATE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextlib.contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """One write transaction; on SQLite it holds the write lock from its first statement."""
    with engine.connect() as conn:
        conn.execution_options(**{_IMMEDIATE: True})
        with conn.begin():
            yield conn


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(engine: Engine) -> None:
    """`alembic upgrade head` on this engine, one replica at a time."""
    with writing(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config = alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
