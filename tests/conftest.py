"""Fixtures shared by all tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from support import MOSQUITTO, Broker, Collector

from cloud.app import Cloud, CloudOptions
from fogline.urls import parse_broker_url
from gateway.app import GatewayOptions
from gateway.spec import parse_pipeline


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed: apt-get install -y mosquitto (.ci/run does this)")
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def collector_factory(broker: Broker) -> Iterator[Callable[[list[str]], Collector]]:
    made: list[Collector] = []

    def make(topics: list[str]) -> Collector:
        c = Collector(broker.port, topics)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def gateway_options(broker: Broker, tmp_path: Path) -> Callable[..., GatewayOptions]:
    """Options for an in-process gateway on the test broker, its data in tmp_path/<id>."""

    def make(
        pipeline_text: str, gid: str = "gw1", *, file: str = "test.yaml", **kw: object
    ) -> GatewayOptions:
        """`file`: where the text would live (files it names, models, are relative to it)."""
        pipeline = parse_pipeline(pipeline_text, file)
        url = parse_broker_url(broker.url)
        return GatewayOptions(pipeline, url, url, gid, tmp_path / gid, status=False, **kw)  # type: ignore[arg-type]

    return make


@pytest.fixture
def cloud_options(broker: Broker) -> Callable[[Path], CloudOptions]:
    """Options for an in-process cloud on the test broker, storing into SQLite at a path."""

    def make(db: Path) -> CloudOptions:
        return CloudOptions(
            parse_broker_url(broker.url),
            f"sqlite:///{db}",
            http_port=0,
            replica=f"r-{uuid.uuid4().hex[:6]}",
            wait_broker=None,
        )

    return make


@pytest.fixture
async def cloud(
    cloud_options: Callable[[Path], CloudOptions], tmp_path: Path
) -> AsyncIterator[Cloud]:
    """A real cloud in this process on the test broker, storing into SQLite: it acks."""
    async with Cloud(cloud_options(tmp_path / "cloud.db")) as c:
        yield c
