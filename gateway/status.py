"""A one-line live status for a terminal; periodic plain log lines otherwise."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from typing import TextIO

from gateway.metrics import Metrics

log = logging.getLogger("fogline.gateway")


def status_line(metrics: Metrics, pending: int, rate_in: float, rate_out: float) -> str:
    """`out` is records: those sent to the cloud and the actions published; never bytes,
    acks, resends or failed actions (`Metrics.total_out`)."""
    return (
        f"in {rate_in:,.0f} msg/s ({metrics.total_in():,}) | "
        f"out {rate_out:,.0f}/s ({metrics.total_out():,}) | "
        f"rejects {metrics.total_rejects():,} | uplink pending {pending:,}"
    )


async def show_status(
    metrics: Metrics,
    pending: Callable[[], int],
    every: float = 1.0,
    log_every: float = 60.0,
    stream: TextIO | None = None,
) -> None:
    """Print msgs/s in, records out and rejects; runs until cancelled."""
    out = stream or sys.stderr
    tty = out.isatty()
    last_in, last_out, elapsed = metrics.total_in(), metrics.total_out(), 0.0
    try:
        while True:
            await asyncio.sleep(every)
            elapsed += every
            total_in, total_out = metrics.total_in(), metrics.total_out()
            line = status_line(
                metrics, pending(), (total_in - last_in) / every, (total_out - last_out) / every
            )
            last_in, last_out = total_in, total_out
            if tty:
                out.write("\r\x1b[2K" + line)
                out.flush()
            elif elapsed >= log_every:
                elapsed = 0.0
                log.info("%s", line)
    finally:
        if tty:
            out.write("\n")
            out.flush()
