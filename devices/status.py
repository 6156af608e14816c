"""What the simulator tells a person: a live status line on a terminal, log lines otherwise.

On a TTY one line is redrawn twice a second (messages sent, rate, simulated time, faults
active). Redirected to a file or a container log, carriage returns would make a mess, so it
logs a plain line every `log_every` seconds and one line when a fault starts or ends.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, TextIO

from devices.clock import WallClock
from devices.fleet import Fleet

if TYPE_CHECKING:  # runner imports status; the stats type is only needed for annotations
    from devices.runner import RunStats

log = logging.getLogger("fogline.devices")
MAX_FAULTS_SHOWN = 4
RATE_WINDOW = 5.0  # seconds the shown rate is averaged over


class Status:
    def __init__(
        self,
        fleet: Fleet,
        clock: WallClock,
        stream: TextIO,
        *,
        tty: bool,
        log_every: float = 10.0,
    ) -> None:
        self.fleet = fleet
        self.clock = clock
        self.stream = stream
        self.tty = tty
        self.every = 0.5 if tty else log_every
        self._last_time = clock.time()
        self._history: deque[tuple[float, int]] = deque([(self._last_time, 0)])
        self._shown = False
        self._faults: set[tuple[str, str]] = set()

    def update(self, stats: RunStats) -> None:
        now = self.clock.time()
        self._fault_events(stats)
        if now - self._last_time < self.every:
            return
        # The rate over the last few seconds: ticks are bursts, one interval would flicker.
        history = self._history
        while len(history) > 1 and now - history[0][0] > RATE_WINDOW:
            history.popleft()
        then, sent_then = history[0]
        rate = (stats.sent - sent_then) / max(now - then, 1e-9)
        history.append((now, stats.sent))
        self._last_time = now
        line = self.line(stats, rate)
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
            self.stream.flush()
            self._shown = True
        else:
            log.info("%s", line)

    def line(self, stats: RunStats, rate: float) -> str:
        fleet = self.fleet
        parts = [
            f"{fleet.name}: {fleet.size} devices",
            f"{stats.sent:,} sent",
            f"{rate:,.0f}/s",
            f"sim {_clock(stats.sim_time)}"
            + (f" (x{fleet.clock.speed:g})" if fleet.clock.speed != 1 else ""),
        ]
        if stats.unsent:
            parts.append(f"{stats.unsent:,} unsent")
        if stats.behind > 1.0:
            parts.append(f"{stats.behind:.1f}s behind")
        if fleet.commands_applied:
            parts.append(f"{fleet.commands_applied} commands")
        active = fleet.schedule.active_faults(stats.sim_time)
        shown = ", ".join(f"{f.kind} {f.device}" for f in active[:MAX_FAULTS_SHOWN])
        more = f" +{len(active) - MAX_FAULTS_SHOWN}" if len(active) > MAX_FAULTS_SHOWN else ""
        parts.append(f"faults: {shown}{more}" if active else "no faults active")
        return " | ".join(parts)

    def _fault_events(self, stats: RunStats) -> None:
        active = {(f.kind, f.device) for f in self.fleet.schedule.active_faults(stats.sim_time)}
        if active == self._faults or self.tty:
            self._faults = active
            return
        for kind, device in sorted(active - self._faults):
            log.info("fault started: %s on %s (sim %s)", kind, device, _clock(stats.sim_time))
        for kind, device in sorted(self._faults - active):
            log.info("fault ended: %s on %s (sim %s)", kind, device, _clock(stats.sim_time))
        self._faults = active

    def close(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    """Simulated offset as [Nd ]HH:MM:SS."""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}d {text}" if days else text
