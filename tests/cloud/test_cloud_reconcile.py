"""Alert episodes a gateway no longer holds, closed from its health records (issue 11):
on SQLite and PostgreSQL, with the seq order that keeps a newer raise open and a stale or
replayed health record harmless."""

from __future__ import annotations

from typing import Any

from alembic import command
from cloudkit import NOW, alert, batch
from sqlalchemy import select, text

from cloud.alerts import GONE_REASON, act
from cloud.db import alembic_config, migrate, writing
from cloud.health import alerts_raised
from cloud.models import Activity, Alert
from cloud.store import Store

DEVICE = "line-1/m-01"


def health(ids: list[str] | None, complete: bool = True, ts: float = NOW) -> dict[str, Any]:
    record: dict[str, Any] = {"ts": ts, "gateway": "gw1", "outbox": {"depth": 0}}
    if ids is not None:
        record["alerts_raised"] = {"ids": ids, "complete": complete}
    return record


def raise_(store: Store, seq: int, alert_id: str) -> None:
    store.write([batch("gw1", "alert", [(seq, DEVICE, alert(alert_id, "raised"))])])


def send_health(store: Store, seq: int, record: dict[str, Any]) -> None:
    store.write([batch("gw1", "health", [(seq, "", record)])])


def episodes(store: Store) -> dict[str, Any]:
    with store.engine.connect() as conn:
        return {row.alert_id: row for row in conn.execute(select(Alert))}


def states(store: Store) -> dict[str, str]:
    return {alert_id: row.state for alert_id, row in episodes(store).items()}


def closings(store: Store) -> list[tuple[str, dict[str, Any]]]:
    with store.engine.connect() as conn:
        return [
            (actor, detail)
            for actor, detail in conn.execute(
                select(Activity.actor, Activity.detail)
                .where(Activity.action == "closed")
                .order_by(Activity.id)
            )
        ]


def test_a_restart_that_lost_an_alert_closes_its_episode_with_a_reason(store: Store) -> None:
    raise_(store, 1, "hot/m-01/1")
    raise_(store, 2, "hot/m-02/2")
    send_health(store, 3, health(["hot/m-01/1", "hot/m-02/2"]))
    assert states(store) == {"hot/m-01/1": "open", "hot/m-02/2": "open"}
    # The gateway restarts and lost m-01's alert; m-02's it still holds.
    send_health(store, 7, health(["hot/m-02/2"], ts=NOW + 70))
    closed = episodes(store)["hot/m-01/1"]
    assert (closed.state, closed.closed_by, closed.close_reason) == (
        "cleared",
        "gateway",
        GONE_REASON,
    )
    assert closed.cleared_at == NOW + 70  # when the gateway said it no longer held it
    assert closed.cleared_seq is None  # no clear was ever sent
    assert states(store)["hot/m-02/2"] == "open"
    assert closings(store) == [
        (
            "gateway gw1",
            {"health_seq": 7, "reason": GONE_REASON, "from": "open", "to": "cleared"},
        )
    ]


def test_a_raise_numbered_after_the_health_record_stays_open(store: Store) -> None:
    # Raised at seq 12, after the gateway listed what it held at seq 10 (without it). The
    # raise arrives first, the health record second: the list is older than the raise.
    raise_(store, 12, "hot/m-01/12")
    send_health(store, 10, health([]))
    assert states(store) == {"hot/m-01/12": "open"}
    # In one drain, in either order, the same.
    store.write(
        [
            batch("gw1", "health", [(20, "", health([]))]),
            batch("gw1", "alert", [(21, DEVICE, alert("hot/m-01/21", "raised"))]),
        ]
    )
    assert states(store)["hot/m-01/21"] == "open"
    assert states(store)["hot/m-01/12"] == "cleared"  # 12 < 20 and not listed at 20
    assert [d["health_seq"] for _, d in closings(store)] == [20]


def test_a_raise_and_its_health_record_in_one_drain_are_folded_in_order(store: Store) -> None:
    store.write(
        [
            batch("gw1", "health", [(6, "", health(["hot/m-01/5"]))]),
            batch("gw1", "alert", [(5, DEVICE, alert("hot/m-01/5", "raised"))]),
        ]
    )
    assert states(store) == {"hot/m-01/5": "open"}
    assert closings(store) == []


def test_a_stale_or_replayed_health_record_closes_nothing(store: Store) -> None:
    send_health(store, 10, health([]))  # nothing raised yet at the cloud
    raise_(store, 3, "hot/m-01/3")  # a raise from before it, late (a backlog, a replica)
    send_health(store, 10, health([]))  # the same record again: a retransmission
    send_health(store, 8, health([]))  # an older one, late
    assert states(store) == {"hot/m-01/3": "open"}
    assert closings(store) == []
    send_health(store, 11, health([]))  # the next one says it again: now it closes
    assert states(store) == {"hot/m-01/3": "cleared"}


def test_a_cut_or_malformed_list_or_an_older_gateway_closes_nothing(store: Store) -> None:
    raise_(store, 1, "hot/m-01/1")
    send_health(store, 2, health([], complete=False))
    send_health(store, 3, health(None))  # a gateway from before the field
    send_health(store, 4, {**health(None), "alerts_raised": {"ids": [7], "complete": True}})
    send_health(store, 5, {**health(None), "alerts_raised": {"ids": "hot", "complete": True}})
    send_health(store, 6, {**health(None), "alerts_raised": ["hot/m-01/1"]})
    assert states(store) == {"hot/m-01/1": "open"}
    assert alerts_raised(health(["a", "b"])) == frozenset({"a", "b"})
    assert alerts_raised(health(["a"], complete=False)) is None
    assert alerts_raised({"alerts_raised": {"ids": ["a"] * 10_001, "complete": True}}) is None


def test_acknowledged_episodes_close_and_resolved_ones_and_cloud_ones_stay(store: Store) -> None:
    for seq, alert_id in enumerate(["hot/a/1", "hot/b/2", "hot/c/3", "model:fault/m-01"], 1):
        raise_(store, seq, alert_id)
    ids = {alert_id: row.id for alert_id, row in episodes(store).items()}
    act(store.engine, [ids["hot/a/1"]], "acknowledge", "ann", NOW)
    act(store.engine, [ids["hot/b/2"]], "resolve", "ann", NOW)
    send_health(store, 9, health([]))
    assert states(store) == {
        "hot/a/1": "cleared",
        "hot/b/2": "resolved",  # an operator's word stands
        "hot/c/3": "cleared",
        "model:fault/m-01": "open",  # the cloud's own diagnosis: no gateway lists it
    }
    assert [d["from"] for _, d in closings(store)] == ["acknowledged", "open"]


def test_a_clear_that_arrives_after_the_close_fills_in_what_happened(store: Store) -> None:
    raise_(store, 1, "hot/m-01/1")
    send_health(store, 5, health([]))  # the clear, seq 4, is still on its way
    clear = alert("hot/m-01/1", "cleared", cleared_at=NOW + 30)
    store.write([batch("gw1", "alert", [(4, DEVICE, clear)])])
    episode = episodes(store)["hot/m-01/1"]
    assert (episode.state, episode.cleared_seq, episode.cleared_at) == ("cleared", 4, NOW + 30)
    assert (episode.closed_by, episode.close_reason) == (None, None)
    assert len(closings(store)) == 1  # the timeline keeps both


def test_migration_0011_keeps_episodes_and_their_timeline_down_and_up(store: Store) -> None:
    raise_(store, 1, "hot/m-01/1")
    send_health(store, 2, health([]))
    with writing(store.engine) as conn:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.downgrade(config, "0010")
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT alert_id, state FROM alerts")).all() == [
            ("hot/m-01/1", "cleared")
        ]
        assert conn.execute(text("SELECT count(*) FROM activity")).scalar_one() == 2
    migrate(store.engine)
    episode = episodes(store)["hot/m-01/1"]
    assert (episode.state, episode.closed_by, episode.close_reason) == ("cleared", None, None)
