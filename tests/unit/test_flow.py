"""The uplink's model of its link: ack timeouts and the byte budget, driven with explicit times."""

from __future__ import annotations

import random

import pytest

from gateway.flow import INITIAL_BUDGET, MAX_BUDGET, MIN_BUDGET, AckTimer, LinkRate


def test_the_ack_timeout_follows_the_round_trip_within_its_bounds() -> None:
    timer = AckTimer(initial=5.0, minimum=1.0, maximum=60.0)
    assert timer.rto == 5.0, "before any sample"
    for _ in range(50):
        timer.sample(0.01)
    assert timer.rto == 1.0, "never below the minimum, however fast the cloud"
    for _ in range(50):
        timer.sample(8.0)
    assert 8.0 < timer.rto < 12.0, timer.rto
    jittery = AckTimer()
    for rtt in [1.0, 3.0] * 20:
        jittery.sample(rtt)
    assert jittery.rto > 2 + 2 * 0.9, "variation widens the timeout"


def test_backoff_doubles_with_jitter_and_stops_at_the_cap() -> None:
    timer = AckTimer(maximum=60.0, rng=random.Random(1))
    waits = [2.0]
    for _ in range(8):
        waits.append(timer.backoff(waits[-1]))
    assert 3.2 <= waits[1] <= 4.8
    assert all(w <= 60.0 * 1.2 for w in waits)
    assert waits[-1] >= 60.0 * 0.8, "it reaches the cap"
    assert len({round(w, 6) for w in waits}) == len(waits), "jittered, not lock-step"


def feed(rate: LinkRate, bytes_per_s: float, rtt: float, seconds: float, size: int = 1000) -> None:
    """A link that carries `bytes_per_s`, kept busy: publish k leaves at k * size/bps and is
    acknowledged one serialization time plus `rtt` later."""
    step = size / bytes_per_s
    events: list[tuple[float, int, int]] = []  # (time, 0 = ack / 1 = send, k)
    n = int(seconds / step)
    for k in range(n):
        events += [(100 + k * step, 1, k), (100 + (k + 1) * step + rtt, 0, k)]
    sent: dict[int, tuple[float, int, float]] = {}
    for t, what, k in sorted(events):
        if what == 1:
            delivered, at = rate.on_send(t, not sent)
            sent[k] = (t, delivered, at)
        else:
            sent_at, delivered, at = sent.pop(k)
            rate.on_ack(t, size, sent_at, delivered, at, False)


def test_the_budget_is_a_second_or_two_of_the_link() -> None:
    slow = LinkRate()
    assert slow.budget == INITIAL_BUDGET
    feed(slow, 250.0, 0.05, 60, size=300)  # 2 kbit/s
    assert slow.bandwidth == pytest.approx(250.0, rel=0.2)
    assert slow.budget == MIN_BUDGET, "an alert waits behind at most ~6 s of a 2 kbit/s link"
    fast = LinkRate()
    feed(fast, 1e6, 0.002, 5)
    assert fast.budget == pytest.approx(1e6, rel=0.2)
    satellite = LinkRate()
    feed(satellite, 125_000.0, 0.6, 30)  # 1 Mbit/s, 600 ms: the budget covers the round trip
    assert satellite.budget == pytest.approx(2 * 125_000 * 0.6, rel=0.2)
    bloated = LinkRate()
    feed(bloated, 250.0, 11.0, 120, size=300)  # a standing queue read as an 11 s round trip
    assert bloated.budget == MIN_BUDGET, "not 2 x 250 B/s x 11 s"
    huge = LinkRate()
    feed(huge, 1e9, 0.0001, 0.2, size=100_000)
    assert huge.budget == MAX_BUDGET


def test_samples_of_an_idle_uplink_do_not_shrink_the_budget() -> None:
    rate = LinkRate()
    feed(rate, 100_000.0, 0.01, 5)
    before = rate.budget
    # An uplink with little to send: slow deliveries, marked app-limited.
    rate.on_ack(200.0, 100, 199.99, rate.delivered, 150.0, True)
    assert rate.budget == before
    # A real slow-down (not app-limited) is believed once the old samples age out.
    rate.on_ack(300.0, 1000, 299.9, rate.delivered, 299.0, False)
    assert rate.budget < before
