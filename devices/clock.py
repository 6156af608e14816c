"""Two clocks: simulated time for the physics, wall time for pacing and timestamps.

A fleet's `step(t)` takes `t`, simulated seconds since the run started; `SimClock` maps it to
the wall-clock epoch stamped into payloads (`ts`) and to the simulated calendar time the
farm's sun follows. Payloads carry wall time, not simulated time, because the gateway
rejects readings more than an hour away from its own clock: with `--speed 600` simulated
time leaves that hour behind within six real seconds.

`WallClock` is what the runner waits on; tests inject `FakeClock`, which moves only when
waited on, so a minute of traffic runs in milliseconds and deterministically.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class SimClock:
    """`wall0` is the epoch of the run start; `speed` simulated seconds pass per real one."""

    wall0: float
    speed: float = 1.0
    sim_epoch0: float | None = None  # simulated calendar time at t=0; wall0 when None

    def wall(self, t: float) -> float:
        """Wall-clock epoch at which simulated offset `t` is due."""
        return self.wall0 + t / self.speed

    def sim(self, wall: float) -> float:
        """Simulated offset reached at wall-clock epoch `wall`."""
        return (wall - self.wall0) * self.speed

    def sim_epoch(self, t: float) -> float:
        """Simulated calendar time (epoch seconds) at offset `t`: the farm's time of day."""
        return (self.wall0 if self.sim_epoch0 is None else self.sim_epoch0) + t


class WallClock(Protocol):
    def time(self) -> float:
        """Epoch seconds now."""
        ...

    async def wait(self, stop: asyncio.Event, seconds: float) -> None:
        """Sleep `seconds`, or less if `stop` is set meanwhile."""
        ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    async def wait(self, stop: asyncio.Event, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)


class FakeClock:
    """Time that jumps ahead when waited on: pacing is exercised without real sleeping."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    async def wait(self, stop: asyncio.Event, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)
