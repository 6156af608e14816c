"""Fixtures for the cloud: a fresh database per test (a SQLite file, or a new PostgreSQL
schema dropped afterwards) and a migrated store on it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from cloudkit import Database
from sqlalchemy import make_url

from cloud.db import make_engine, migrate
from cloud.store import Store

POSTGRES = os.environ.get(
    "FOGLINE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _conninfo() -> str:
    url = make_url(POSTGRES)
    return (
        f"host={url.host or '127.0.0.1'} port={url.port or 5432} "
        f"user={url.username or 'postgres'} dbname={url.database or 'test'}"
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        yield Database(f"sqlite:///{tmp_path / 'cloud.db'}")
        return
    schema = f"t_{uuid.uuid4().hex}"
    try:
        admin = psycopg.connect(_conninfo(), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES} ({exc}); start one "
            "(apt-get install -y postgresql) or point FOGLINE_TEST_POSTGRES at one"
        )
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield Database(POSTGRES, {"options": f"-csearch_path={schema}"})
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def store(database: Database) -> Iterator[Store]:
    engine = make_engine(database.url, database.connect_args)
    migrate(engine)
    yield Store(engine)
    engine.dispose()
