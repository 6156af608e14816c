"""Operator state that survives a crash: checkpointed in the outbox's own transactions.

A step's state (open windows, detector baselines, deadband values, alert episodes, the
escalation budget) and the outbox records that state produced are committed together, in
the outbox's group commit (gateway/outbox.py). So after a SIGKILL the gateway restarts from
one consistent point: the state as of the last commit and exactly the records it had
produced. What came in after that point was not yet acknowledged to the broker
(gateway/delivery.py) and is delivered again, into that state. Nothing is counted twice and
nothing is lost, and no input log has to be replayed: the state is the log.

Each checkpoint writes only what changed: per-key state whose key was touched, and for
windows the readings taken in since the last checkpoint (one segment per commit), so its
cost follows the input rate, not the size of the state (docs/benchmarks.md). The table is
a plain rowid table: as WITHOUT ROWID, with window segments of hundreds of KB among small
rows, deleting a small row cost 0.2-1 ms (page rebalancing around the big cells); now 1-9 us.

A step's state is kept only while its definition is unchanged: each step is fingerprinted
(operator, configuration, key fields), and on start a step whose fingerprint differs from the
stored one starts empty. That is reported (a log line and `state_reset` in the health
record), never silent; the state of the other steps is kept.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from gateway.keyed import KeyedState

log = logging.getLogger("fogline.gateway.state")

SCHEMA = """
CREATE TABLE IF NOT EXISTS state (
    step TEXT NOT NULL,
    part TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (step, part)
);
"""

Key = tuple[str, ...]


@dataclass(slots=True)
class StateDelta:
    """What changed in one step's state since its last checkpoint.

    `drop_prefix` removes every part whose name starts so (first), `drop` removes parts,
    `put` writes a part. `undo` runs when the transaction carrying the delta fails, so the
    next checkpoint writes it again.
    """

    put: list[tuple[str, bytes]] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)
    drop_prefix: list[str] = field(default_factory=list)
    undo: Callable[[], None] | None = None

    def __bool__(self) -> bool:
        return bool(self.put or self.drop or self.drop_prefix)


class Stateful(Protocol):
    """A step that keeps state: see `Operator.checkpoint` and `Operator.restore`."""

    def checkpoint(self) -> StateDelta | None: ...

    def restore(self, parts: dict[str, bytes], now: float) -> None: ...


def key_part(key: Key) -> str:
    """A key as a part name (JSON: any string survives, and it reads back exactly)."""
    return orjson.dumps(key).decode()


def part_key(part: str) -> Key:
    return tuple(orjson.loads(part))


def fingerprint(op: str, config: Any, key_fields: tuple[str, ...]) -> str:
    """What a step's state depends on: its operator, its whole configuration, the key."""
    text = orjson.dumps([op, config, list(key_fields)], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(text).hexdigest()[:16]


class StateStore:
    """The `state` table of the outbox database: written inside the outbox's transactions."""

    def __init__(
        self, steps: Mapping[str, tuple[str, Stateful]], version: Callable[[], int]
    ) -> None:
        """`steps`: step id -> (fingerprint, operator), in pipeline order; `version` moves
        whenever their state may have changed (the engine's count of passes)."""
        self._steps = steps
        self._version = version
        self._saved_version = version()
        self._taken: list[StateDelta] = []
        self.reset: list[str] = []  # steps whose stored state did not match: started empty
        self.restored_parts = 0
        self.writes = 0  # rows written by checkpoints, for metrics

    # -- start ------------------------------------------------------------------------------

    def restore(self, db: sqlite3.Connection, meta: dict[str, str], now: float) -> None:
        """Give each step the state stored for it; empty steps whose definition changed.

        Runs in a transaction on the outbox database, after `SCHEMA` (`Outbox.start`).
        """
        stored: dict[str, str] = orjson.loads(meta.get("steps", "{}"))
        current = {sid: fp for sid, (fp, _) in self._steps.items()}
        self.reset = sorted(s for s, fp in stored.items() if current.get(s) not in (None, fp))
        gone = sorted(set(stored) - set(current))
        for sid in [*self.reset, *gone]:
            db.execute("DELETE FROM state WHERE step = ?", (sid,))
        if self.reset:
            log.warning(
                "the pipeline changed: state of step(s) %s does not match it and starts empty; "
                "the state of the other steps is kept",
                ", ".join(self.reset),
            )
        for sid, (fp, op) in self._steps.items():
            if stored.get(sid) != fp:
                continue
            parts: dict[str, bytes] = dict(
                db.execute("SELECT part, data FROM state WHERE step = ? ORDER BY part", (sid,))
            )
            if parts:
                op.restore(parts, now)
                self.restored_parts += len(parts)
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('steps', ?)",
            (orjson.dumps(current).decode(),),
        )

    # -- each group commit ------------------------------------------------------------------

    def pending(self) -> bool:
        return self._version() != self._saved_version

    def write(self, db: sqlite3.Connection) -> None:
        """Inside the outbox transaction: what every step changed since the last commit."""
        self._saved_version = self._version()
        taken: list[StateDelta] = []
        puts: list[tuple[str, str, bytes]] = []
        drops: list[tuple[str, str]] = []
        prefixes: list[tuple[str, str, str]] = []
        self._taken = taken  # before the first take: a failure below undoes what was taken
        for sid, (_, op) in self._steps.items():
            delta = op.checkpoint()
            if not delta:
                continue
            taken.append(delta)
            prefixes += [(sid, p, p + "\U0010ffff") for p in delta.drop_prefix]
            drops += [(sid, part) for part in delta.drop]
            puts += [(sid, part, data) for part, data in delta.put]
        if prefixes:
            db.executemany("DELETE FROM state WHERE step = ? AND part >= ? AND part < ?", prefixes)
        if drops:
            db.executemany("DELETE FROM state WHERE step = ? AND part = ?", drops)
        if puts:
            db.executemany("INSERT OR REPLACE INTO state (step, part, data) VALUES (?, ?, ?)", puts)
        self.writes += len(puts) + len(drops) + len(prefixes)

    def done(self, ok: bool) -> None:
        """After the transaction: on failure, what was taken is written by the next one."""
        if not ok:
            self._saved_version = -1
            for delta in self._taken:
                if delta.undo is not None:
                    delta.undo()
        self._taken = []


def keyed_delta(
    state: KeyedState[Any], encode: Callable[[Any], bytes], prefix: tuple[str, ...] = ()
) -> StateDelta:
    """What changed in per-key state, one part per key (named by `prefix` + key)."""
    changes = state.take_changes()
    head = key_part(prefix)[:-1]  # '["rule"': every part of this state starts so
    return StateDelta(
        put=[(key_part((*prefix, *key)), encode(value)) for key, value in changes.changed],
        drop=[key_part((*prefix, *key)) for key in changes.gone],
        drop_prefix=[head] if changes.everything else [],
        undo=lambda: state.undo_take(changes),
    )


def merge(deltas: Iterable[StateDelta]) -> StateDelta:
    """Several deltas (one per rule, say) as one."""
    out = StateDelta()
    undos = []
    for delta in deltas:
        out.put += delta.put
        out.drop += delta.drop
        out.drop_prefix += delta.drop_prefix
        if delta.undo is not None:
            undos.append(delta.undo)

    def undo() -> None:
        for each in undos:
            each()

    out.undo = undo
    return out


def restored_keys(parts: dict[str, bytes]) -> Iterable[tuple[Key, Any]]:
    """The per-key values `keyed_delta` wrote."""
    for part, data in parts.items():
        if part:
            yield part_key(part), orjson.loads(data)
