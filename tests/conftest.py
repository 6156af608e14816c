"""Fixtures shared by all tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support import MOSQUITTO, Broker, Collector


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
