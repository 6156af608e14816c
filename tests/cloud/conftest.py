"""Fixtures for the cloud: a fresh database per test (a SQLite file, or a new PostgreSQL
schema dropped afterwards) and a migrated store on it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cloudkit import Database
from support import POSTGRES, postgres_admin

from cloud.db import make_engine, migrate
from cloud.store import Store


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        yield Database(f"sqlite:///{tmp_path / 'cloud.db'}")
        return
    schema = f"t_{uuid.uuid4().hex}"
    admin = postgres_admin()
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
