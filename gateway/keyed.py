"""Per-key operator state with a cap and an idle expiry.

Keys come from devices, so a step that keeps something per key (a detector's baseline, a
deadband's last value, an alert's episode) would otherwise grow with every id anyone
publishes: 200k distinct device ids took the gateway from 65 MB to 1 GB, never released.
`KeyedState` keeps keys in least-recently-seen order (an `OrderedDict`, one `move_to_end`
per record, O(1)), so both bounds are cheap:

* `max_keys`: a new key beyond the cap evicts the least recently seen one (`max_keys`);
* `idle`: keys not seen for that long (processing time) are dropped at the next timer
  (`idle`), scanning only from the old end, so a timer that finds nothing costs one look.

Every eviction is reported through `evicted(reason, n)`, which the engine counts per step
(`fogline_state_evicted_total{step,reason}`). `keep` spares state that must outlive silence (a
raised alert waiting for its clear) from the idle expiry, never from the cap.

For crash consistency (gateway/state.py) it also notes which keys changed or went since
the last `take_changes`, so a checkpoint writes only those: a value handed out by `get` may
be changed in place, so `get` marks its key changed (one set insert per record). More keys
gone than `max_keys` between two checkpoints (a flood of ids while commits fail) turns
that into "write everything", so the notes stay bounded too.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")
Key = tuple[str, ...]
Evicted = Callable[[str, int], None]


def no_eviction_counter(reason: str, n: int) -> None:
    """The default `evicted` callback: nothing counts (operators built outside an engine)."""


@dataclass(slots=True)
class Changes(Generic[V]):
    """Keys changed with their values, keys gone; or, with `everything`, every key held
    (what was stored before is to be dropped first)."""

    changed: list[tuple[Key, V]]
    gone: list[Key]
    everything: bool = False


class KeyedState(Generic[V]):
    """A bounded mapping of key -> state; see the module docstring."""

    __slots__ = (
        "_changed",
        "_everything",
        "_evicted",
        "_gone",
        "_keep",
        "_seen",
        "_values",
        "idle",
        "max_keys",
    )

    def __init__(
        self,
        max_keys: int,
        idle: float | None,
        evicted: Evicted = no_eviction_counter,
        keep: Callable[[V], bool] | None = None,
    ) -> None:
        self.max_keys = max_keys
        self.idle = idle
        self._evicted = evicted
        self._keep = keep
        self._values: OrderedDict[Key, V] = OrderedDict()
        self._seen: dict[Key, float] = {}
        self._changed: set[Key] = set()
        self._gone: set[Key] = set()
        self._everything = False

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: Key) -> bool:
        return key in self._values

    def __iter__(self) -> Iterator[Key]:
        return iter(self._values)

    def values(self) -> Iterator[V]:
        return iter(self._values.values())

    def get(self, key: Key, now: float, *, changes: bool = True) -> V | None:
        """The state of `key`, marked as seen at `now`; None for a key not held.

        `changes=False`: the caller calls `changed(key)` itself when it changes the value,
        so a checkpoint skips the keys that were only read.
        """
        value = self._values.get(key)
        if value is not None:
            self._values.move_to_end(key)
            self._seen[key] = now
            if changes:
                self._changed.add(key)
        return value

    def changed(self, key: Key) -> None:
        """The value of `key` was changed in place."""
        self._changed.add(key)

    def put(self, key: Key, value: V, now: float) -> None:
        """Hold `value` for `key`; a new key at the cap first evicts the least recently seen."""
        values = self._values
        if key not in values and len(values) >= self.max_keys:
            old, _ = values.popitem(last=False)
            del self._seen[old]
            self._forget(old)
            self._evicted("max_keys", 1)
        values[key] = value
        values.move_to_end(key)
        self._seen[key] = now
        self._changed.add(key)

    def expire(self, now: float) -> int:
        """Drop the keys idle for longer than `idle`; how many went."""
        if self.idle is None or not self._values:
            return 0
        values, seen, keep = self._values, self._seen, self._keep
        horizon = now - self.idle
        dropped = 0
        for _ in range(len(values)):  # each key looked at once at most
            key = next(iter(values))
            if seen[key] > horizon:
                break
            if keep is not None and keep(values[key]):
                values.move_to_end(key)
                seen[key] = now
                continue
            del values[key], seen[key]
            self._forget(key)
            dropped += 1
        if dropped:
            self._evicted("idle", dropped)
        return dropped

    def _forget(self, key: Key) -> None:
        self._changed.discard(key)
        self._gone.add(key)
        if len(self._gone) > self.max_keys:
            self._everything = True
            self._gone.clear()

    def take_changes(self) -> Changes[V]:
        """What changed since the last call (see `Changes`); then forget it."""
        values = self._values
        everything = self._everything
        keys = values if everything else self._changed
        changes = Changes([(key, values[key]) for key in keys], list(self._gone), everything)
        self._changed, self._gone, self._everything = set(), set(), False
        return changes

    def undo_take(self, changes: Changes[V]) -> None:
        """A checkpoint that failed: what it took is still to be written."""
        self._everything |= changes.everything
        self._changed.update(key for key, _ in changes.changed if key in self._values)
        self._gone.update(key for key in changes.gone if key not in self._values)

    def restore(self, key: Key, value: V, now: float) -> None:
        """Put back a key from a checkpoint, seen at `now` (the restart), not changed."""
        self._values[key] = value
        self._seen[key] = now
