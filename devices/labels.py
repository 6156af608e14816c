"""Ground truth: which fault hit which device when, as JSON lines, to score detection against.

One line per fault, written when the run starts (the plan: an open-ended fault has
`"end": null`) and rewritten atomically when it stops (the truth: ends clipped to the stop,
faults that never began left out), so a crashed run still leaves its plan behind.

    {"fault": "bearing", "device": "m-03", "key": {"line": "line-1", "machine": "m-03"},
     "topic": "factory/line-1/m-03/telemetry", "start": 1700000060.0, "end": 1700000180.0,
     "sim_start": 1700000060.0, "sim_end": 1700000180.0}

`start`/`end` are wall-clock epoch seconds, the time base of the payloads' `ts` and so of
the gateway's alerts. `sim_start`/`sim_end` are the same instants on the simulated clock
(epoch seconds; they differ from wall time with `--speed` or `--sim-start`). `key` is the
pipeline key the gateway's alerts carry.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson

from devices.fleet import Fleet


def labels(fleet: Fleet, stopped_at: float | None = None) -> list[dict[str, Any]]:
    """The fleet's faults as label rows; `stopped_at` (wall epoch) clips them to the run."""
    clock = fleet.clock
    stop_sim = math.inf if stopped_at is None else clock.sim(stopped_at)
    rows = []
    for fault in fleet.schedule.faults:
        if fault.start >= stop_sim:
            continue
        end = min(fault.end, stop_sim)
        rows.append(
            {
                "fault": fault.kind,
                "device": fault.device,
                "key": fleet.key(fault.index),
                "topic": fleet.topics[fault.index],
                "start": round(clock.wall(fault.start), 3),
                "end": round(clock.wall(end), 3) if math.isfinite(end) else None,
                "sim_start": round(clock.sim_epoch(fault.start), 3),
                "sim_end": round(clock.sim_epoch(end), 3) if math.isfinite(end) else None,
            }
        )
    return rows


def write_labels(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace `path` in one step: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    tmp.replace(path)
