"""What the uplink learns about its link: how long the cloud takes to answer, and how many
bytes the link carries, so that timeouts and the bytes in flight fit the link.

`AckTimer` is TCP's retransmission timer (RFC 6298) over the cloud's acks: a smoothed
round trip plus four deviations, doubled (with jitter) for each timeout in a row, and fed
only by batches sent once (Karn), so a resend never teaches it a wrong round trip.

`LinkRate` is a small cousin of BBR's model: the delivery rate of the recent past (bytes
the broker acknowledged per second, the best sample of the last `window` seconds) and
the smallest round trip. The uplink keeps `budget` bytes unacknowledged by the broker:
what the link carries in `target_delay` (or two round trips, if more, up to twice that).
That keeps the queue in front of an alert short on a 2 kbit/s link (an alert waits
behind a few seconds of digests at most) and a fast link full. Samples taken while the uplink had
nothing more to send cannot lower the estimate: they say how much there was, not how
much the link carries.

A link that suddenly slows (a cellular modem falling back to 2G) would keep the old,
large budget until samples of the new rate arrive, and on a slow link they arrive slowly:
measured across a shaped link that dropped to 2 kbit/s, the budget stayed at megabytes,
the bottleneck's queue overflowed, TCP backed off into long stalls and no alert got
through for minutes. So `stalled()` also bounds the rate from the oldest publish the
broker has not acknowledged: when it has waited well past the round trip, the link
carries at most what was delivered since it left, and the budget follows at once.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

MIN_BUDGET = 1536  # bytes: ~6 s of a 2 kbit/s link, under a 2-packet bottleneck queue
INITIAL_BUDGET = MIN_BUDGET  # until the first sample: it must not overflow a slow link's queue
MAX_BUDGET = 8 * 1024 * 1024


@dataclass
class AckTimer:
    """Retransmission timeout for the cloud's acks (seconds)."""

    initial: float = 5.0
    minimum: float = 1.0
    maximum: float = 60.0
    srtt: float | None = None
    rttvar: float = 0.0
    rng: random.Random = field(default_factory=random.Random)

    def sample(self, rtt: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

    @property
    def rto(self) -> float:
        if self.srtt is None:
            return self.initial
        return min(self.maximum, max(self.minimum, self.srtt + 4 * self.rttvar))

    def backoff(self, previous: float) -> float:
        """The next timeout after `previous` expired: doubled, capped, jittered by ±20%."""
        return min(self.maximum, 2 * previous) * self.rng.uniform(0.8, 1.2)


@dataclass
class LinkRate:
    """Delivery rate and round trip of the link to the broker, and the budget they give."""

    target_delay: float = 1.0  # seconds of link the budget holds (twice that on long links)
    window: float = 10.0  # seconds a rate sample counts
    rtt_window: float = 30.0
    delivered: int = 0  # bytes the broker has acknowledged, ever
    delivered_at: float = 0.0  # monotonic time of the latest acknowledgement
    _rates: deque[tuple[float, float]] = field(default_factory=deque)  # (time, bytes/s)
    _rtts: deque[tuple[float, float]] = field(default_factory=deque)
    _bw: float | None = None
    _rtt: float | None = None

    def on_send(self, now: float, nothing_in_flight: bool) -> tuple[int, float]:
        """What a publish remembers at send: delivered bytes and their time."""
        if nothing_in_flight:
            self.delivered_at = now
        return self.delivered, self.delivered_at

    def on_ack(
        self,
        now: float,
        size: int,
        sent_at: float,
        delivered_then: int,
        delivered_at_then: float,
        app_limited: bool,
    ) -> None:
        self.delivered += size
        self.delivered_at = now
        rtt = now - sent_at
        if rtt > 0:
            self._rtts.append((now, rtt))
            while self._rtts and self._rtts[0][0] < now - self.rtt_window:
                self._rtts.popleft()
            self._rtt = min(r for _, r in self._rtts)
        elapsed = max(now - delivered_at_then, rtt)
        if elapsed <= 0:
            return
        rate = (self.delivered - delivered_then) / elapsed
        if app_limited and self._bw is not None and rate < self._bw:
            return
        self._rates.append((now, rate))
        while len(self._rates) > 1 and self._rates[0][0] < now - self.window:
            self._rates.popleft()
        self._bw = max(r for _, r in self._rates)

    def stalled(self, now: float, sent_at: float, delivered_then: int) -> None:
        """The oldest unacknowledged publish left at `sent_at`: cap the rate if it lingers."""
        age = now - sent_at
        # Past four round trips a publish is queued, not travelling; a low ceiling from an
        # idle moment costs little (the budget never drops below MIN_BUDGET and the next
        # sample restores it), a late one lets a slowed link's queue overflow.
        if age < max(0.5, 4 * (self._rtt or 0.0)):
            return
        ceiling = (self.delivered - delivered_then) / age
        if self._bw is None or ceiling < self._bw:
            self._bw = ceiling
            self._rates.clear()
            self._rates.append((now, ceiling))

    @property
    def bandwidth(self) -> float | None:
        """Bytes per second, or None before the first sample."""
        return self._bw

    @property
    def min_rtt(self) -> float | None:
        return self._rtt

    @property
    def budget(self) -> int:
        """Bytes that may wait unacknowledged by the broker."""
        if self._bw is None:
            return INITIAL_BUDGET
        # The round trip counts only up to `target_delay`: past that it is our own queue
        # (measured: a standing 2 KiB on 2 kbit/s read as an 11 s round trip, and the budget
        # it gave overflowed the link), so the budget stays within two seconds of the link.
        bdp = 2 * self._bw * min(self._rtt or 0.0, self.target_delay)
        return int(min(MAX_BUDGET, max(MIN_BUDGET, self._bw * self.target_delay, bdp)))
