"""Alembic environment: the app hands its own connection in; the `alembic` CLI builds one.

New revision, from the project root:
`alembic -c cloud/migrations/alembic.ini revision --autogenerate -m "what changed"`
(against a database at head; `-x url=...` picks another than ./fogline.db).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from cloud.db import make_engine
from cloud.models import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER much
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    config = context.config
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    if not url:
        raise ValueError("no database: pass -x url=... or set sqlalchemy.url")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


_main()
