"""Health that tells the truth, on real SQLite and PostgreSQL with a fake clock: gap labels
that never call a gap lost while the gateway may still hold it, silent gateways raising
and resolving `gateway_silent`, and the new health fields read defensively."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from cloudkit import NOW, Database, alert, batch, bearer, digest
from cloudkit import payload as batch_payload
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from support import Broker, Collector, eventually

from cloud import alerts
from cloud.app import Cloud, CloudOptions
from cloud.db import alembic_config, make_engine, migrate, writing
from cloud.gaps import DEFAULT_GRACE, Gap, LossReport, in_flight_from, loss_report
from cloud.health import backlog, health_every, pending_from
from cloud.metrics import CloudMetrics
from cloud.models import Activity, Alert, Digest, Gateway, Received
from cloud.silence import SilenceWatch, alert_id
from cloud.store import Store
from fogline.envelope import uplink_topic
from fogline.urls import parse_broker_url
from gateway.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def timed(database: Database, clock: FakeClock) -> Iterator[Store]:
    """A store whose `received_at` and `last_seen` come from the fake clock."""
    engine = make_engine(database.url, database.connect_args)
    migrate(engine)
    yield Store(engine, clock.now)
    engine.dispose()


def health(pending: int | None = None, **extra: Any) -> dict[str, Any]:
    outbox: dict[str, Any] = {"depth": 0, "bytes": 0}
    if pending is not None:
        outbox["pending_from"] = pending
    return {"ts": NOW, "gateway": "gw1", "outbox": outbox, **extra}


def digests_at(seqs: range | list[int]) -> list[tuple[int, str, dict[str, Any]]]:
    return [(s, "d", digest(NOW + s)) for s in seqs]


def poll(store: Store, now: float, grace: float = DEFAULT_GRACE, gw: str = "gw1") -> LossReport:
    """What `GET /api/gateways/<gw>` computes."""
    with store.engine.connect() as conn:
        row = conn.execute(select(Gateway).where(Gateway.id == gw)).one()
        horizon = in_flight_from(conn, gw, row.health_seq, row.pending_from, now, grace)
        return loss_report(conn, gw, row.received, row.max_seq, 1000, horizon)


# -- gap labels --------------------------------------------------------------------------------


def test_a_later_record_of_another_kind_first_is_never_unexplained(
    timed: Store, clock: FakeClock
) -> None:
    """The false alarm of issue 14: an alert overtakes a batch of digests under loss."""
    reports = []
    timed.write([batch("gw1", "digest", digests_at(range(1, 11)))])
    timed.write([batch("gw1", "health", [(11, "", health(pending=11))])])
    reports.append(poll(timed, clock.now()))
    # Digests 12-31 are lost on the wire and resent; alert 32 and health 33 arrive first.
    timed.write([batch("gw1", "alert", [(32, "d", alert("a1", "raised"))])])
    clock.advance(5)
    reports.append(poll(timed, clock.now()))
    timed.write([batch("gw1", "health", [(33, "", health(pending=12))])])
    clock.advance(DEFAULT_GRACE * 3)  # long past any grace: pending_from decides
    reports.append(poll(timed, clock.now()))
    timed.write([batch("gw1", "digest", digests_at(range(12, 32)))])
    reports.append(poll(timed, clock.now()))
    assert [r.unexplained for r in reports] == [0, 0, 0, 0]
    assert [r.in_flight for r in reports] == [0, 20, 20, 0]
    assert reports[1].gaps == [Gap(12, 31, "in_flight")]
    assert (reports[2].missing, reports[2].in_flight_from) == (20, 12)
    assert reports[3].gaps == []


def test_a_real_loss_below_pending_from_is_unexplained(timed: Store, clock: FakeClock) -> None:
    """The gateway holds nothing below 21 and evicted only 11-12: 13-15 were lost."""
    timed.write([batch("gw1", "digest", digests_at([*range(1, 11), *range(16, 21)]))])
    record = health(pending=21)
    record["outbox"]["evicted_ranges"] = [[11, 12]]
    timed.write([batch("gw1", "health", [(21, "", record)])])
    loss = poll(timed, clock.now())
    assert loss.gaps == [Gap(11, 12, "evicted"), Gap(13, 15, None)]
    assert (loss.missing, loss.evicted, loss.in_flight, loss.unexplained) == (5, 2, 0, 3)


def test_gaps_straddling_pending_from_split_and_evictions_win(
    timed: Store, clock: FakeClock
) -> None:
    timed.write([batch("gw1", "digest", digests_at([1, 2, 3, 4, 10, 11]))])
    record = health(pending=7)
    record["outbox"]["evicted_ranges"] = [[8, 8]]
    timed.write([batch("gw1", "health", [(12, "", record)])])
    loss = poll(timed, clock.now())
    assert loss.gaps == [
        Gap(5, 6, None),
        Gap(7, 7, "in_flight"),
        Gap(8, 8, "evicted"),
        Gap(9, 9, "in_flight"),
    ]
    assert (loss.missing, loss.evicted, loss.in_flight, loss.unexplained) == (5, 1, 2, 2)
    assert loss.in_flight_from == 7


def test_without_pending_from_gaps_wait_a_grace_period(timed: Store, clock: FakeClock) -> None:
    """Older gateways: a gap is lost once records above it were stored `grace` s ago."""
    timed.write([batch("gw1", "digest", digests_at([1, 2, 3, 7, 8]))])
    timed.write([batch("gw1", "health", [(9, "", health())])])  # no pending_from
    clock.advance(60)
    young = poll(timed, clock.now(), grace=120)
    assert (young.in_flight, young.unexplained, young.gaps) == (3, 0, [Gap(4, 6, "in_flight")])
    timed.write([batch("gw1", "digest", digests_at([12]))])  # 10-11 open 60 s later
    clock.advance(61)
    loss = poll(timed, clock.now(), grace=120)
    assert loss.gaps == [Gap(4, 6, None), Gap(10, 11, "in_flight")]
    assert (loss.in_flight, loss.unexplained, loss.in_flight_from) == (2, 3, 10)
    clock.advance(60)
    assert poll(timed, clock.now(), grace=120).unexplained == 5


def test_a_newer_health_without_pending_from_falls_back_to_the_grace(
    timed: Store, clock: FakeClock
) -> None:
    """A downgraded gateway: its old `pending_from` no longer describes its outbox."""
    timed.write([batch("gw1", "digest", digests_at([1, 5]))])
    timed.write([batch("gw1", "health", [(6, "", health(pending=6))])])
    assert poll(timed, clock.now()).unexplained == 3
    timed.write([batch("gw1", "health", [(9, "", health())])])
    timed.write([batch("gw1", "digest", digests_at([10]))])  # 7-8 just opened
    loss = poll(timed, clock.now(), grace=120)
    assert (loss.in_flight_from, loss.in_flight, loss.unexplained) == (1, 5, 0)
    clock.advance(121)
    loss = poll(timed, clock.now(), grace=120)
    assert (loss.in_flight_from, loss.in_flight, loss.unexplained) == (11, 0, 5)


def test_before_any_health_record_every_gap_is_in_flight(timed: Store, clock: FakeClock) -> None:
    timed.write([batch("gw1", "alert", [(5, "d", alert("a1", "raised"))])])
    clock.advance(DEFAULT_GRACE * 10)
    loss = poll(timed, clock.now())
    assert (loss.in_flight_from, loss.in_flight, loss.unexplained) == (1, 4, 0)


@given(
    st.lists(
        st.tuples(st.sampled_from(["digest", "alert", "health", "send", "send", "ackless"])),
        max_size=60,
    ),
    st.randoms(use_true_random=False),
)
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_property_no_poll_ever_calls_a_gap_lost_when_nothing_is(
    steps: list[tuple[str]], rnd: Any
) -> None:
    """A gateway with an outbox delivers any subset of what it holds, in any order, some
    acks lost (resent later); after every store, a poll finds nothing unexplained."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'p.db'}")
        migrate(engine)
        clock = FakeClock(NOW)
        store = Store(engine, clock.now)
        held: dict[int, tuple[str, dict[str, Any]]] = {}  # the gateway's outbox
        next_seq = 1
        try:
            for (step,) in steps:
                clock.advance(rnd.choice([0.1, 5.0, 500.0]))
                if step in ("digest", "alert", "health"):
                    if step == "digest":
                        data = digest(NOW)
                    elif step == "alert":
                        data = alert(f"a{next_seq}", "raised")
                    else:
                        data = health(pending=min(held, default=next_seq))
                    held[next_seq] = (step, data)
                    next_seq += 1
                    continue
                if not held:
                    continue
                sent = rnd.sample(sorted(held), rnd.randint(1, len(held)))
                for kind in {held[s][0] for s in sent}:
                    records = [(s, "d", held[s][1]) for s in sorted(sent) if held[s][0] == kind]
                    store.write([batch("gw1", kind, records)])
                if step == "send":  # acknowledged: the gateway forgets them
                    for s in sent:
                        del held[s]
                loss = poll(store, clock.now())
                assert loss.unexplained == 0, (loss, sorted(held))
            for kind in {k for k, _ in held.values()}:  # the link heals: everything arrives
                records = [(s, "d", x) for s, (k, x) in sorted(held.items()) if k == kind]
                store.write([batch("gw1", kind, records)])
            with engine.connect() as conn:
                row = conn.execute(select(Gateway)).one_or_none()
            assert row is None or row.received == row.max_seq == next_seq - 1
        finally:
            engine.dispose()


# -- the new health fields, untrusted ------------------------------------------------------------


def test_health_fields_of_the_wrong_type_read_as_unknown() -> None:
    assert health_every({"health_every": 10}) == 10.0
    for bad in (0, -1, True, "10", None, 10**9):
        assert health_every({"health_every": bad}) is None, bad
    assert pending_from({"outbox": {"pending_from": 7}}, 9) == 7
    assert pending_from({"outbox": {"pending_from": 12}}, 9) == 9  # never above its own seq
    for bad in (0, -3, True, 7.0, "7", None, 2**64):
        assert pending_from({"outbox": {"pending_from": bad}}, 9) is None, bad
    assert pending_from({"outbox": [1]}, 9) is None
    known = backlog(
        {
            "uplink": {
                "status": "degraded",
                "reasons": ["no ack for 45 s", 3, "x" * 1000],
                "connected": False,
                "last_ack_age_s": 45.5,
                "backlog_records": 328,
                "backlog_bytes": 41_000,
                "oldest_age_s": 60,
            },
            "outbox": {"depth": 1, "bytes": 2},
        }
    )
    assert (known.records, known.bytes, known.oldest_age_s) == (328, 41_000, 60.0)
    assert (known.uplink_status, known.connected, known.last_ack_age_s) == ("degraded", False, 45.5)
    assert known.reasons == ["no ack for 45 s", "x" * 200]
    assert known.describe() == "328 records, 41.0 kB, oldest 60 s"
    odd = backlog(
        {
            "uplink": {
                "status": "fine",
                "reasons": "all good",
                "connected": 1,
                "last_ack_age_s": -1,
                "backlog_records": -5,
                "backlog_bytes": 1.5,
                "oldest_age_s": "old",
            },
            "outbox": {"depth": 4, "bytes": 400},
        }
    )
    assert (odd.records, odd.bytes) == (4, 400)  # the outbox's numbers, as older gateways
    assert (odd.uplink_status, odd.reasons, odd.connected) == (None, [], None)
    assert (odd.oldest_age_s, odd.last_ack_age_s) == (None, None)
    assert backlog({"uplink": None}).describe() == "unknown"


def test_the_store_keeps_health_every_and_pending_from_of_the_latest_record(
    timed: Store,
) -> None:
    timed.write([batch("gw1", "health", [(5, "", health(pending=3, health_every=10))])])
    timed.write([batch("gw1", "health", [(4, "", health(pending=2, health_every=99))])])
    with timed.engine.connect() as conn:
        row = conn.execute(select(Gateway)).one()
    assert (row.health_seq, row.health_every, row.pending_from) == (5, 10.0, 3)
    timed.write([batch("gw1", "health", [(6, "", health(health_every="often"))])])
    with timed.engine.connect() as conn:
        row = conn.execute(select(Gateway)).one()
    assert (row.health_seq, row.health_every, row.pending_from) == (6, None, None)


def test_migration_0003_keeps_every_row_down_and_up(timed: Store) -> None:
    """SQLite must not recreate `gateways`: dropping it would cascade to everything."""
    timed.write([batch("gw1", "digest", digests_at([1, 2]))])
    timed.write([batch("gw1", "health", [(3, "", health(pending=3, health_every=10))])])
    with writing(timed.engine) as conn:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.downgrade(config, "0002")
    assert (timed.count(Received), timed.count(Digest)) == (3, 2)
    migrate(timed.engine)
    with timed.engine.connect() as conn:
        row = conn.execute(select(Gateway)).one()
    assert (row.received, row.health_every, row.pending_from, row.silent_since) == (
        3, None, None, None
    )  # fmt: skip


def test_migrations_0003_and_c0003_keep_alerts_and_gateways_down_and_up(
    timed: Store, clock: FakeClock
) -> None:
    """The console's migration follows 0003: down to 0003 and up again keeps the rows."""
    watch = SilenceWatch(timed.engine, clock.now)
    timed.write([batch("gw1", "health", [(1, "", silent_health())])])
    clock.advance(31)
    assert watch.check().raised == ["gw1"]
    with writing(timed.engine) as conn:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")
    with timed.engine.connect() as conn:
        assert conn.execute(text("SELECT rule, state FROM alerts")).all() == [
            ("gateway_silent", "open")
        ]
        assert conn.execute(text("SELECT silent_since FROM gateways")).scalar_one() == NOW
    migrate(timed.engine)
    (episode,) = episodes(timed)
    assert (episode.rule, episode.state) == ("gateway_silent", "open")


# -- silent gateways ---------------------------------------------------------------------------------


def silent_health() -> dict[str, Any]:
    return health(
        pending=1,
        health_every=10,
        uplink={"status": "degraded", "backlog_records": 328, "backlog_bytes": 41_000,
                "oldest_age_s": 60},
    )  # fmt: skip


def episodes(store: Store) -> list[Any]:
    with store.engine.connect() as conn:
        return list(conn.execute(select(Alert).order_by(Alert.id)).all())


def test_a_silent_gateway_raises_one_episode_and_clears_it_when_heard(
    timed: Store, clock: FakeClock
) -> None:
    metrics = CloudMetrics()
    watch = SilenceWatch(timed.engine, clock.now, metrics=metrics)
    timed.write([batch("gw1", "health", [(1, "", silent_health())])])  # health_every 10
    since = clock.now()
    clock.advance(29.9)
    assert watch.check().raised == []
    clock.advance(0.2)
    raised_at = clock.now()
    assert watch.check().raised == ["gw1"]
    assert watch.check().raised == []  # once per silence
    other = SilenceWatch(timed.engine, clock.now)  # a second replica, started earlier
    other.started = since
    assert other.check().raised == []
    (episode,) = episodes(timed)
    assert (episode.alert_id, episode.rule, episode.severity) == (
        alert_id(since),
        "gateway_silent",
        "critical",
    )
    assert (episode.device, episode.state, episode.raised_at) == ("", "open", raised_at)
    assert episode.message == (
        "gateway gw1 silent: nothing received since 2023-11-14T22:13:20Z (30 s, silent after "
        "30 s); last known backlog 328 records, 41.0 kB, oldest 60 s, as of 2023-11-14T22:13:20Z"
    )
    assert episode.payload["raised"]["backlog"]["records"] == 328
    with timed.engine.connect() as conn:
        assert conn.execute(select(Gateway.silent_since)).scalar_one() == since

    clock.advance(100)
    heard = clock.now()
    timed.write([batch("gw1", "digest", digests_at([2]))])  # heard again
    assert watch.check().resolved == ["gw1"]
    assert other.check().resolved == []
    (episode,) = episodes(timed)
    assert (episode.state, episode.cleared_at) == ("cleared", heard)  # gone at the source
    assert episode.payload["cleared"]["silent_for_s"] == pytest.approx(130.1)
    with timed.engine.connect() as conn:
        assert conn.execute(select(Gateway.silent_since)).scalar_one() is None
    assert (metrics.silences_raised, metrics.silences_resolved) == (1, 1)

    clock.advance(31)  # silent again: a new episode, the old one stays cleared
    assert watch.check().raised == ["gw1"]
    assert [(e.state, e.alert_id) for e in episodes(timed)] == [
        ("cleared", alert_id(since)),
        ("open", alert_id(heard)),
    ]
    with timed.engine.connect() as conn:
        log = conn.execute(select(Activity.actor, Activity.action).order_by(Activity.id)).all()
    assert log == [("cloud", "raised"), ("cloud", "cleared"), ("cloud", "raised")]


def test_an_episode_an_operator_resolved_stays_resolved_when_the_gateway_is_heard(
    timed: Store, clock: FakeClock
) -> None:
    watch = SilenceWatch(timed.engine, clock.now)
    timed.write([batch("gw1", "health", [(1, "", silent_health())])])
    clock.advance(31)
    assert watch.check().raised == ["gw1"]
    (episode,) = episodes(timed)
    assert alerts.act(timed.engine, [episode.id], "resolve", "ana", clock.now()).changed
    clock.advance(5)
    heard = clock.now()
    timed.write([batch("gw1", "digest", digests_at([2]))])
    assert watch.check().resolved == ["gw1"]
    (episode,) = episodes(timed)
    assert (episode.state, episode.resolved_by, episode.cleared_at) == ("resolved", "ana", heard)


def test_a_silence_on_gateway_silent_marks_the_episode(timed: Store, clock: FakeClock) -> None:
    """Stored and listed all the same; only notifications skip it."""
    watch = SilenceWatch(timed.engine, clock.now)
    timed.write([batch("gw1", "health", [(1, "", silent_health())])])
    silence = alerts.add_silence(
        timed.engine, "gw1", None, "gateway_silent", NOW + 3600, "site visit", "ana", NOW
    )
    clock.advance(31)
    assert watch.check().raised == ["gw1"]
    (episode,) = episodes(timed)
    assert (episode.state, episode.silence_id) == ("open", silence)


def test_silent_after_defaults_to_three_default_periods_and_can_be_set(
    timed: Store, clock: FakeClock
) -> None:
    default = SilenceWatch(timed.engine, clock.now)
    timed.write([batch("gw1", "digest", digests_at([1]))])  # no health: period unknown
    clock.advance(89)
    assert default.check().raised == []
    clock.advance(2)
    assert default.check().raised == ["gw1"]
    (episode,) = episodes(timed)
    assert "silent after 90 s); no health record received, backlog unknown" in (
        episode.message or ""
    )
    timed.write([batch("gw2", "health", [(1, "", silent_health())])])
    strict = SilenceWatch(timed.engine, clock.now, silent_after=5)
    strict.started -= 100
    clock.advance(5.5)
    assert strict.check().raised == ["gw2"]  # its health says 10 s; the cloud says 5
    with pytest.raises(ValueError, match="silent_after: expected a positive number, got 0"):
        SilenceWatch(timed.engine, clock.now, silent_after=0)


def test_a_replica_that_just_started_waits_before_calling_anyone_silent(
    timed: Store, clock: FakeClock
) -> None:
    """The cloud was away for an hour: the broker holds what gateways sent meanwhile."""
    timed.write([batch("gw1", "health", [(1, "", silent_health())])])
    clock.advance(3600)
    watch = SilenceWatch(timed.engine, clock.now)
    assert watch.check().raised == []
    clock.advance(29)
    assert watch.check().raised == []
    clock.advance(2)
    assert watch.check().raised == ["gw1"]


def test_a_replica_cut_off_from_the_broker_calls_nobody_silent(
    timed: Store, clock: FakeClock
) -> None:
    """Deaf is not the same as silent: counting starts again once it hears."""
    connected = [False]
    watch = SilenceWatch(timed.engine, clock.now, hearing=lambda: connected[0])
    timed.write([batch("gw1", "health", [(1, "", silent_health())])])
    clock.advance(100)
    assert watch.check().raised == []
    connected[0] = True
    clock.advance(29)
    assert watch.check().raised == []
    clock.advance(2)
    assert watch.check().raised == ["gw1"]


def test_replicas_checking_at_once_open_one_episode(
    database: Database, timed: Store, clock: FakeClock
) -> None:
    gateways = [f"gw{n}" for n in range(20)]
    for g in gateways:
        timed.write([batch(g, "digest", digests_at([1]))])
    clock.advance(1000)
    engines = [make_engine(database.url, database.connect_args) for _ in range(4)]
    watches = [SilenceWatch(e, clock.now) for e in engines]
    for w in watches:
        w.started -= 1000
    start = threading.Barrier(len(watches))
    raised: list[list[str]] = [[] for _ in watches]

    def run(i: int) -> None:
        start.wait()
        raised[i] = watches[i].check().raised

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(watches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for e in engines:
        e.dispose()
    assert sorted(g for r in raised for g in r) == sorted(gateways)
    assert sorted(e.gateway_id for e in episodes(timed)) == sorted(gateways)


# -- through the cloud process and its API --------------------------------------------------------


@pytest.fixture
async def cloud(broker: Broker, database: Database, clock: FakeClock) -> AsyncIterator[Cloud]:
    options = CloudOptions(
        broker=parse_broker_url(broker.url),
        db_url=database.url,
        db_connect_args=database.connect_args,
        http_port=0,
        replica="health",
        wait_broker=None,
        clock=clock.now,
        silence_every=0.05,
    )
    async with Cloud(options) as c:
        yield c


async def test_the_api_shows_silence_the_last_known_backlog_and_the_alert(
    cloud: Cloud, clock: FakeClock, collector_factory: Callable[[list[str]], Collector]
) -> None:
    record = silent_health()
    record["ts"] = NOW - 5
    record["uplink"].update(connected=False, reasons=["no ack for 45 s"], last_ack_age_s=45.0)
    cloud.store.write([batch("gw1", "health", [(1, "", record)])])
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{cloud.http_port}", headers=bearer(cloud.engine, "viewer")
    ) as http:
        (gw,) = (await http.get("/api/gateways")).json()["items"]
        assert (gw["status"], gw["silent_since"], gw["health_every"]) == ("online", None, 10.0)
        assert gw["last_known_backlog"] == {
            "records": 328, "bytes": 41_000, "oldest_age_s": 60.0, "as_of": NOW - 5,
            "age_s": 5.0, "uplink_status": "degraded", "uplink_reasons": ["no ack for 45 s"],
            "uplink_connected": False, "last_ack_age_s": 45.0,
        }  # fmt: skip
        assert gw["outbox_depth"] == 0  # the old fields stay as they were

        clock.advance(31)
        await eventually(lambda: cloud.metrics.silences_raised == 1, what="gateway_silent")
        gw = (await http.get("/api/gateways/gw1")).json()
        assert (gw["status"], gw["silent_since"]) == ("silent", NOW)
        assert gw["last_known_backlog"]["age_s"] == 36.0
        alerts = (await http.get("/api/alerts", params={"state": "open"})).json()["items"]
        assert [(a["gateway"], a["rule"], a["severity"], a["device"]) for a in alerts] == [
            ("gw1", "gateway_silent", "critical", "")
        ]
        assert "nothing received since 2023-11-14T22:13:20Z" in alerts[0]["message"]

        clock.advance(10)
        watch = collector_factory(["fogline/+/down/ack"])  # heard again, through ingest
        watch.publish(
            uplink_topic("gw1", "digest"),
            batch_payload("gw1", "digest", digests_at([2])),
        )
        await eventually(lambda: cloud.metrics.silences_resolved == 1, what="the resolve")
        gw = (await http.get("/api/gateways/gw1")).json()
        assert (gw["status"], gw["silent_since"]) == ("online", None)
        (episode,) = (await http.get("/api/alerts")).json()["items"]
        assert (episode["state"], episode["cleared_at"]) == ("cleared", NOW + 41)
        metrics = (await http.get("/metrics")).text
        assert "fogline_cloud_silences_raised_total 1" in metrics
