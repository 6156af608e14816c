"""Digests expire after `--retention-days`; alerts, health and the ledger stay.

The ledger (`received`) stays because loss detection and idempotency read it: a digest
that expired was still received. Deletes run in chunks of short transactions, so ingest
on SQLite never waits long for the write lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from cloud.metrics import CloudMetrics
from cloud.store import Store

log = logging.getLogger("fogline.cloud.retention")

DAY = 86_400.0


async def expire_once(store: Store, days: float, now: float, metrics: CloudMetrics) -> int:
    deleted = await asyncio.to_thread(store.expire_digests, now - days * DAY)
    metrics.retention_deleted += deleted
    if deleted:
        log.info("retention: deleted %d digests older than %g days", deleted, days)
    return deleted


async def run_retention(
    store: Store, days: float, every: float, metrics: CloudMetrics, clock: Callable[[], float]
) -> None:
    """Expire now, then every `every` seconds; a failed round is logged and retried later."""
    while True:
        try:
            await expire_once(store, days, clock(), metrics)
        except Exception as exc:  # the database is away: the next round catches up
            log.warning("retention: could not delete old digests (%s)", exc)
        await asyncio.sleep(every)
