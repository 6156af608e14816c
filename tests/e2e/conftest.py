"""Fixtures for the end-to-end tests: a database per test and a site around it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sitekit import Site
from support import POSTGRES, Broker, postgres_admin


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cloud.db'}"
        return
    import uuid  # noqa: PLC0415

    schema = f"t_{uuid.uuid4().hex}"
    with postgres_admin() as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def site(broker: Broker, db_url: str, tmp_path: Path) -> Iterator[Site]:
    up_dir = tmp_path / "uplink-broker"
    up_dir.mkdir()
    uplink = Broker(up_dir)
    uplink.start()
    world = Site(tmp_path, broker, uplink, db_url)
    yield world
    world.close()
    uplink.stop()
