"""Nothing lost across outages and crashes: the store-and-forward promises, tested by
killing things. Each test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import signal
import time

from sitekit import Site


def test_uplink_broker_restart_loses_nothing(site: Site) -> None:
    """Including what the broker had acknowledged but not delivered when it stopped."""
    site.start_cloud()
    site.start_gateway()
    site.publish(range(40))
    site.wait(lambda: len(site.stored("event")) == 40, 30, "the first 40 events")
    site.stop_cloud()  # the broker now queues for the cloud's persistent session...
    site.publish(range(40, 80))
    site.wait(lambda: site.processed() == 80, 20, "the gateway to forward 80 readings")
    site.wait(site.committed, 10, "a group commit")
    site.wait(  # ...PUBACKed by the broker, held for the absent cloud
        lambda: (
            site.gateway_metric("fogline_uplink_awaiting_puback", required=True) == 0
            and site.gateway_metric("fogline_uplink_records_sent_total") >= 80
        ),
        20,
        "the broker to take what the gateway sent",
    )
    site.uplink.stop()  # without persistence: those are gone from the broker
    site.publish(range(80, 120))
    site.uplink.start()
    site.start_cloud()
    site.assert_exactly_once_in_order(120)


def test_gateway_sigkill_while_the_uplink_is_down(site: Site) -> None:
    site.uplink.stop()
    site.start_gateway()
    site.publish(range(60))
    site.wait(lambda: site.processed() == 60, 20, "60 readings processed")
    site.wait(site.committed, 10, "the group commit")  # what the SIGKILL must not lose
    site.kill_gateway()
    site.publish(range(60, 100))  # the edge broker keeps these for the gateway's session
    site.start_gateway()
    site.uplink.start()
    site.start_cloud()
    site.assert_exactly_once_in_order(100)


def test_cloud_sigkill_and_restart_while_publishing(site: Site) -> None:
    site.start_cloud()
    site.start_gateway()
    site.publish(range(50))
    site.stop_cloud(sig=signal.SIGKILL)
    site.publish(range(50, 100))
    site.start_cloud()
    site.publish(range(100, 150))
    site.assert_exactly_once_in_order(150)


def test_two_ingest_replicas_split_the_load(site: Site) -> None:
    site.start_cloud("a")
    site.start_cloud("b")
    site.start_gateway()
    for start in range(0, 200, 10):  # many small uplink batches, so both replicas get some
        site.publish(range(start, start + 10))
        time.sleep(0.05)
    site.assert_exactly_once_in_order(200)
    from sqlalchemy import func, select  # noqa: PLC0415

    from cloud.models import Received  # noqa: PLC0415

    with site.engine.connect() as conn:
        seqs = conn.execute(select(func.count(), func.count(func.distinct(Received.seq)))).one()
    assert seqs[0] == seqs[1], "a record stored twice"
    # Both replicas took a share: each stored events first-hand (its own /metrics says so).
    for replica in ("a", "b"):
        stored = site.cloud_metric(replica, 'fogline_cloud_records_stored_total{kind="event"}')
        assert stored > 0, f"replica {replica} stored nothing"


def test_a_full_outbox_evicts_by_class_and_the_cloud_knows(site: Site) -> None:
    site.uplink.stop()
    # Room for about 120 events of ~100 bytes: health goes first, then the oldest events.
    site.start_gateway("--outbox-max-bytes", "12KiB")
    site.publish(range(400), hot_every=20)  # 20 alert transitions, 400 events
    site.wait(lambda: site.processed() == 400, 30, "400 readings processed")
    site.wait(site.committed, 10, "the group commit, which evicts")
    evicted_events = site.gateway_metric('fogline_outbox_evicted{kind="event"}')
    assert evicted_events > 0
    assert site.gateway_metric('fogline_outbox_evicted{kind="alert"}') == 0
    site.uplink.start()
    site.start_cloud()
    site.wait(lambda: len(site.stored("alert")) == 20, 30, "all 20 alert transitions")
    events = site.stored("event")
    # What was evicted is exactly what is missing, and it was the oldest.
    site.wait(lambda: len(site.stored("event")) == 400 - evicted_events, 30, "the surviving events")
    events = site.stored("event")
    numbers = [int(d["n"]) for _, d in events]
    assert numbers == list(range(400 - len(numbers), 400))
    # The cloud heard of the evictions in a health record and labels the gaps: no loss.
    import json  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    def detail() -> dict[str, object]:
        port = _cloud_port(site)
        url = f"http://127.0.0.1:{port}/api/gateways/gw1"
        with urllib.request.urlopen(urllib.request.Request(url, headers=site.auth), timeout=5) as r:
            return dict(json.loads(r.read()))

    site.wait(
        lambda: detail()["unexplained"] == 0 and detail()["evicted"] >= evicted_events,
        30,
        "the cloud to explain every gap by evictions",
    )
    body = detail()
    assert body["received"] + body["evicted"] >= body["max_seq"]
    assert all(g["explained"] == "evicted" for g in body["gaps"])  # type: ignore[union-attr]


def _cloud_port(site: Site) -> int:
    assert site.clouds
    proc = next(iter(site.clouds.values()))
    args = proc.args
    assert isinstance(args, list)
    return int(str(args[args.index("--http") + 1]).rsplit(":", 1)[1])
