"""Helpers for the device tests: run a fleet over simulated time, check the pipeline contract."""

from __future__ import annotations

import socket
from collections import defaultdict
from pathlib import Path
from typing import Any

from devices import FactoryConfig, FactoryFleet, FarmConfig, FarmFleet, FaultSpec, SimClock
from devices.fleet import Fleet, Message
from devices.sites import REFERENCE, Site
from gateway.decode import Decoder, TopicPatterns
from gateway.record import Record
from gateway.spec import load_pipeline

ROOT = Path(__file__).resolve().parents[2]
WALL0 = 1_700_000_000.0
MIDNIGHT = 1_780_272_000.0  # 2026-06-01T00:00:00Z, a simulated clock start for the farm


def factory(
    count: int = 4,
    seed: int = 7,
    faults: list[FaultSpec] | None = None,
    site: Site = REFERENCE,
    **kw: Any,
) -> FactoryFleet:
    return FactoryFleet(FactoryConfig(count, **kw), seed, SimClock(WALL0), faults or [], site)


def farm(
    count: int = 4,
    seed: int = 7,
    faults: list[FaultSpec] | None = None,
    sim_epoch0: float = MIDNIGHT,
    site: Site = REFERENCE,
) -> FarmFleet:
    clock = SimClock(WALL0, 1.0, sim_epoch0)
    return FarmFleet(FarmConfig(count), seed, clock, faults or [], site)


def ticks(fleet: Fleet, seconds: float, rate: float = 1.0) -> list[list[Message]]:
    """The messages of every tick from 0 to `seconds` (simulated), at `rate` per second."""
    return [fleet.step(k / rate) for k in range(round(seconds * rate))]


def by_device(fleet: Fleet, seconds: float, rate: float = 1.0) -> dict[str, list[dict[str, Any]]]:
    """Per device, its payloads in order, each with the simulated offset under `t`."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for k in range(round(seconds * rate)):
        t = k / rate
        for topic, payload in fleet.step(t):
            out[topic.split("/")[2]].append({**payload, "t": t})
    return out


def at(series: list[dict[str, Any]], t: float) -> dict[str, Any]:
    return next(p for p in series if p["t"] == t)


def coap_port() -> int:
    """A port free for UDP and TCP alike: an aiocoap server binds CoAP over both."""
    for _ in range(100):
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both UDP and TCP")


def contract(pipeline: str, messages: list[tuple[str, bytes]], now: float) -> list[Record]:
    """Decode as the gateway's source does; every reading must pass the pipeline's `validate`."""
    spec = load_pipeline(ROOT / "pipelines" / pipeline)
    source = next(cfg for kind, cfg in spec.sources if kind == "mqtt")
    rejects: list[tuple[str, ...]] = []
    decoder = Decoder(
        TopicPatterns(source.topics),
        spec.key,
        lambda *args: rejects.append(args),
        fmt=source.format,
        max_clock_skew=None,
    )
    records: list[Record] = []
    for topic, payload in messages:
        decoder.decode(topic, payload, now, records)
    assert rejects == []
    fields = next(step.config.fields for step in spec.steps if step.op == "validate")
    for record in records:
        for name, field in fields.items():
            if name not in record.fields:
                assert not field.required, f"{name} missing in {record}"
                continue
            value = record.fields[name]
            assert isinstance(value, int | float), (name, value)
            assert field.min is None or value >= field.min, (name, value)
            assert field.max is None or value <= field.max, (name, value)
    return records
