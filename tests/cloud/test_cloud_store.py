"""The store on real SQLite files and real PostgreSQL schemas: idempotence, alert
episodes, retention, loss detection, and migrations that match the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cloudkit import NOW, alert, batch, digest
from sqlalchemy import select, text

from cloud.db import migrate
from cloud.gaps import Gap, label_gaps, loss_report
from cloud.metrics import CloudMetrics
from cloud.models import Alert, AlertEvent, Base, Digest, EvictedRange, Gateway, Received
from cloud.retention import expire_once
from cloud.store import Store, merge_ranges


def test_migrations_create_exactly_the_models(store: Store) -> None:
    migrate(store.engine)  # a second start finds the schema at head and changes nothing
    with store.engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
        assert conn.execute(text("SELECT version_num FROM alembic_version")).all() == [("0012",)]
        if conn.dialect.name == "sqlite":
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    assert diff == []


def test_the_same_batch_twice_is_stored_once(store: Store) -> None:
    records = [(s, "line-1/m-01", digest(NOW + s)) for s in range(1, 501)]
    first = store.write([batch("gw1", "digest", records)])
    again = store.write([batch("gw1", "digest", records)])
    assert first.stored == {"digest": 500}
    assert again.stored == {}
    assert again.duplicates == {"digest": 500}
    assert store.count(Digest) == 500
    assert store.count(Received) == 500
    with store.engine.connect() as conn:
        gw = conn.execute(select(Gateway.received, Gateway.max_seq)).one()
    assert tuple(gw) == (500, 500)


def test_a_replayed_batch_does_not_move_last_seen(store: Store) -> None:
    """A hostile broker replaying an old genuine batch must not hide a silent gateway:
    only records the cloud did not hold yet say that the gateway is alive."""
    now = [1000.0]
    timed = Store(store.engine, clock=lambda: now[0])
    records = [(s, "line-1/m-01", digest(NOW + s)) for s in range(1, 4)]
    timed.write([batch("gw1", "digest", records)])
    now[0] = 2000.0
    again = timed.write([batch("gw1", "digest", records)])
    assert again.duplicates == {"digest": 3}

    def row() -> tuple[float, int, int]:
        with store.engine.connect() as conn:
            query = select(Gateway.last_seen, Gateway.received, Gateway.max_seq)
            return tuple(conn.execute(query.where(Gateway.id == "gw1")).one())  # type: ignore[return-value]

    assert row() == (1000.0, 3, 3)
    now[0] = 3000.0  # a replay mixed with one new record: the gateway was heard
    timed.write([batch("gw1", "digest", [*records, (4, "line-1/m-01", digest(NOW + 4))])])
    assert row() == (3000.0, 4, 4)


def test_duplicates_inside_one_drain_and_across_kinds_count_once(store: Store) -> None:
    a = batch("gw1", "digest", [(1, "d", digest()), (2, "d", digest())])
    b = batch("gw1", "digest", [(2, "d", digest()), (3, "d", digest())])
    report = store.write([a, b, a])
    assert report.stored == {"digest": 3}
    assert report.duplicates == {"digest": 3}
    # Same seq from another gateway is another record.
    assert store.write([batch("gw2", "digest", [(1, "d", digest())])]).stored == {"digest": 1}


def test_digest_columns_and_metrics(store: Store) -> None:
    store.write([batch("gw1", "digest", [(7, "line-1/m-01", digest(NOW, vib_rms=0.25))])])
    with store.engine.connect() as conn:
        row = conn.execute(select(Digest)).one()
    assert (row.gateway_id, row.seq, row.device) == ("gw1", 7, "line-1/m-01")
    assert (row.window_start, row.window_end, row.ts) == (NOW - 10, NOW, NOW)
    assert row.metrics["vib_rms"] == 0.25
    assert row.metrics["count"] == 10
    assert "window_end" not in row.metrics


def _episodes(store: Store) -> list[Alert]:
    with store.engine.connect() as conn:
        return list(conn.execute(select(Alert)).all())  # type: ignore[arg-type]


def test_raise_and_clear_make_one_cleared_episode(store: Store) -> None:
    store.write([batch("gw1", "alert", [(1, "line-1/m-01", alert("hot/1", "raised"))])])
    (open_,) = _episodes(store)
    assert (open_.state, open_.raised_seq, open_.cleared_at) == ("open", 1, None)
    clear = alert("hot/1", "cleared", cleared_at=NOW + 30)
    store.write([batch("gw1", "alert", [(2, "line-1/m-01", clear)])])
    store.write([batch("gw1", "alert", [(2, "line-1/m-01", clear)])])  # retransmitted
    (episode,) = _episodes(store)
    assert episode.state == "cleared"  # at the source; resolving is an operator's word
    assert (episode.raised_seq, episode.cleared_seq) == (1, 2)
    assert (episode.raised_at, episode.cleared_at) == (NOW, NOW + 30)
    assert episode.message == "hot raised"
    assert set(episode.payload) == {"raised", "cleared"}
    assert store.count(AlertEvent) == 2


def test_a_clear_before_its_raise_still_pairs(store: Store) -> None:
    clear = alert("hot/1", "cleared", cleared_at=NOW + 30)
    store.write([batch("gw1", "alert", [(2, "line-1/m-01", clear)])])
    (early,) = _episodes(store)
    assert (early.state, early.raised_seq, early.cleared_seq) == ("cleared", None, 2)
    store.write([batch("gw1", "alert", [(1, "line-1/m-01", alert("hot/1", "raised"))])])
    (episode,) = _episodes(store)
    assert (episode.state, episode.raised_seq, episode.cleared_seq) == ("cleared", 1, 2)
    assert episode.message == "hot raised"


def test_raise_and_clear_in_one_drain_and_separate_episodes(store: Store) -> None:
    records = [
        (1, "line-1/m-01", alert("hot/1", "raised")),
        (2, "line-1/m-01", alert("hot/1", "cleared", cleared_at=NOW + 5)),
        (3, "line-1/m-01", alert("hot/2", "raised", raised_at=NOW + 60)),
    ]
    store.write([batch("gw1", "alert", records)])
    states = {e.alert_id: e.state for e in _episodes(store)}
    assert states == {"hot/1": "cleared", "hot/2": "open"}


async def test_retention_deletes_old_digests_only(store: Store) -> None:
    old, recent = NOW - 40 * 86_400, NOW - 86_400
    store.write(
        [
            batch("gw1", "digest", [(s, "d", digest(old + s)) for s in range(1, 7)]),
            batch("gw1", "digest", [(s, "d", digest(recent + s)) for s in range(7, 10)]),
            batch("gw1", "alert", [(10, "d", alert("hot/1", "raised", raised_at=old))]),
        ]
    )
    assert store.expire_digests(NOW - 30 * 86_400, chunk=4) == 6
    with store.engine.connect() as conn:
        kept = sorted(conn.execute(select(Digest.seq)).scalars())
    assert kept == [7, 8, 9]
    assert store.count(Alert) == 1
    assert store.count(Received) == 10  # the ledger remembers what expired
    metrics = CloudMetrics()
    assert await expire_once(store, 30, NOW, metrics) == 0
    assert await expire_once(store, 0.5, NOW, metrics) == 3
    assert metrics.retention_deleted == 3


def _loss(store: Store, gateway: str = "gw1", limit: int = 1000):
    with store.engine.connect() as conn:
        row = conn.execute(select(Gateway).where(Gateway.id == gateway)).one()
        return loss_report(conn, gateway, row.received, row.max_seq, limit)


def _health(evicted_ranges: list[list[int]] | None) -> dict[str, object]:
    outbox: dict[str, object] = {"depth": 0, "bytes": 0, "evicted": {"digest": 4}}
    if evicted_ranges is not None:
        outbox["evicted_ranges"] = evicted_ranges
    return {"ts": NOW, "gateway": "gw1", "version": "0.1.0", "outbox": outbox}


def test_gaps_without_evicted_ranges_are_unexplained(store: Store) -> None:
    seqs = [1, 2, 3, 6, 7, 10]
    store.write([batch("gw1", "digest", [(s, "d", digest()) for s in seqs])])
    loss = _loss(store)
    assert (loss.received, loss.max_seq, loss.missing, loss.unexplained) == (6, 10, 4, 4)
    assert loss.gaps == [Gap(4, 5, None), Gap(8, 9, None)]
    store.write([batch("gw1", "digest", [(s, "d", digest()) for s in (4, 5, 8, 9)])])
    assert _loss(store).gaps == []


def test_a_gap_at_the_start_counts(store: Store) -> None:
    store.write([batch("gw1", "digest", [(s, "d", digest()) for s in (3, 4)])])
    assert _loss(store).gaps == [Gap(1, 2, None)]


def test_gaps_covered_by_evicted_ranges_are_labelled(store: Store) -> None:
    # 3-5 evicted, 6 lost, 8 evicted and 9 lost, 11-12 received although reported evicted.
    received = [1, 2, 7, 10, 11, 12]
    store.write([batch("gw1", "digest", [(s, "d", digest()) for s in received])])
    store.write([batch("gw1", "health", [(13, "", _health([[3, 5], [8, 8], [11, 12]]))])])
    loss = _loss(store)
    assert loss.gaps == [
        Gap(3, 5, "evicted"),
        Gap(6, 6, None),
        Gap(8, 8, "evicted"),
        Gap(9, 9, None),
    ]
    assert (loss.received, loss.max_seq, loss.evicted) == (7, 13, 6)
    assert (loss.missing, loss.unexplained) == (6, 2)


def test_evicted_ranges_accumulate_across_health_records(store: Store) -> None:
    store.write([batch("gw1", "health", [(1, "", _health([[2, 3]]))])])
    store.write([batch("gw1", "health", [(6, "", _health([[4, 5], [2, 3]]))])])
    store.write([batch("gw1", "health", [(7, "", _health(None))])])  # outbox without ranges
    with store.engine.connect() as conn:
        ranges = [tuple(r) for r in conn.execute(select(EvictedRange.lo, EvictedRange.hi))]
        gw = conn.execute(select(Gateway)).one()
    assert ranges == [(2, 5)]
    assert _loss(store).gaps == [Gap(2, 5, "evicted")]
    assert (gw.health_seq, gw.version, gw.evicted) == (7, "0.1.0", {"digest": 4})


def test_an_older_health_record_does_not_replace_a_newer_one(store: Store) -> None:
    store.write([batch("gw1", "health", [(5, "", {"ts": NOW + 5, "version": "2"})])])
    store.write([batch("gw1", "health", [(3, "", {"ts": NOW + 3, "version": "1"})])])
    with store.engine.connect() as conn:
        gw = conn.execute(select(Gateway)).one()
    assert (gw.health_seq, gw.version, gw.health_ts) == (5, "2", NOW + 5)


def test_gap_list_is_truncated_at_the_limit(store: Store) -> None:
    store.write([batch("gw1", "digest", [(s, "d", digest()) for s in range(2, 40, 2)])])
    loss = _loss(store, limit=5)
    assert len(loss.gaps) == 5
    assert loss.truncated
    assert loss.unexplained == 19  # the counts do not depend on the limit


def test_label_gaps_splits_partial_cover() -> None:
    assert label_gaps([(1, 10)], [(3, 4), (6, 7), (9, 12)]) == [
        Gap(1, 2, None),
        Gap(3, 4, "evicted"),
        Gap(5, 5, None),
        Gap(6, 7, "evicted"),
        Gap(8, 8, None),
        Gap(9, 10, "evicted"),
    ]
    assert label_gaps([(5, 6)], [(1, 2)]) == [Gap(5, 6, None)]


def test_merge_ranges() -> None:
    assert merge_ranges([(5, 6), (1, 2), (3, 3), (8, 9), (9, 12)]) == [(1, 3), (5, 6), (8, 12)]
    assert merge_ranges([(1, 2), (3, 4)]) == [(1, 4)]
