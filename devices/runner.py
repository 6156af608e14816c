"""The loop that paces a fleet in wall-clock time and feeds a transport.

Tick k is simulated time `k / rate` and is due at `clock.wall(k / rate)`: `rate` readings
per device per simulated second, `speed` simulated seconds per real one. Each tick is one
vectorized `fleet.step`, encoded, then published in batches of `batch` spread over the first
half of the tick interval, so a thousand devices do not hit the broker in one burst. When
the loop falls behind (the CPU or the transport is the limit) it does not skip ticks: it
runs them back to back and reports how far behind it is; payloads keep their scheduled
timestamps, so event time stays exact.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

from devices.clock import WallClock
from devices.codec import Codec
from devices.fleet import Fleet
from devices.status import Status
from devices.transport import Transport


@dataclass
class RunStats:
    ticks: int = 0
    generated: int = 0
    sent: int = 0
    unsent: int = 0
    sim_time: float = 0.0  # simulated offset of the last tick
    behind: float = 0.0  # seconds the last tick ran after it was due
    started: float = 0.0  # wall clock (epoch) of the first tick
    ended: float = 0.0
    cpu: dict[str, float] = field(default_factory=lambda: {"step": 0.0, "encode": 0.0})


class Runner:
    def __init__(
        self,
        fleet: Fleet,
        transport: Transport,
        codec: Codec,
        *,
        rate: float,
        duration: float | None,
        clock: WallClock,
        batch: int = 500,
        status: Status | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate: expected more than 0 readings per second, got {rate}")
        self.fleet = fleet
        self.transport = transport
        self.codec = codec
        self.rate = rate
        self.duration = duration or None
        self.clock = clock
        self.batch = max(1, batch)
        self.status = status
        self.stats = RunStats()

    async def run(self, stop: asyncio.Event) -> RunStats:
        """Tick until `duration` (wall seconds) has passed or `stop` is set."""
        fleet, sim, stats = self.fleet, self.fleet.clock, self.stats
        stats.started = sim.wall0
        interval = 1.0 / (self.rate * sim.speed)  # wall seconds between ticks
        k = 0
        while not stop.is_set():
            t = k / self.rate
            if self.duration is not None and t / sim.speed >= self.duration - 1e-9:
                await self._sleep_until(sim.wall0 + self.duration, stop)  # the last interval
                break
            due = sim.wall(t)
            await self._sleep_until(due, stop)
            if stop.is_set():
                break
            stats.behind = max(0.0, self.clock.time() - due)
            started = time.perf_counter()
            messages = fleet.step(t)
            encoded_at = time.perf_counter()
            encode = self.codec.encode
            encoded = [(topic, encode(topic, payload)) for topic, payload in messages]
            stats.cpu["step"] += encoded_at - started
            stats.cpu["encode"] += time.perf_counter() - encoded_at
            stats.generated += len(encoded)
            stats.sim_time = t
            chunks = math.ceil(len(encoded) / self.batch)
            for i in range(chunks):
                if i:
                    await self._sleep_until(due + i * interval / 2 / chunks, stop)
                chunk = encoded[i * self.batch : (i + 1) * self.batch]
                sent = await self.transport.send(chunk)
                stats.sent += sent
                stats.unsent += len(chunk) - sent
            stats.ticks += 1
            k += 1
            if self.status is not None:
                self.status.update(stats)
        stats.ended = self.clock.time()
        return stats

    async def _sleep_until(self, when: float, stop: asyncio.Event) -> None:
        """Wait for `when` in short slices, so the status line stays live; yield at least."""
        while True:
            delay = when - self.clock.time()
            if delay <= 0:
                await asyncio.sleep(0)  # let the transport write and commands arrive
                return
            await self.clock.wait(stop, min(delay, 0.5))
            if stop.is_set():
                return
            if self.status is not None:
                self.status.update(self.stats)
