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
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

V = TypeVar("V")
Key = tuple[str, ...]
Evicted = Callable[[str, int], None]


def no_eviction_counter(reason: str, n: int) -> None:
    """The default `evicted` callback: nothing counts (operators built outside an engine)."""


class KeyedState(Generic[V]):
    """A bounded mapping of key -> state; see the module docstring."""

    __slots__ = ("_evicted", "_keep", "_seen", "_values", "idle", "max_keys")

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

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: Key) -> bool:
        return key in self._values

    def __iter__(self) -> Iterator[Key]:
        return iter(self._values)

    def values(self) -> Iterator[V]:
        return iter(self._values.values())

    def get(self, key: Key, now: float) -> V | None:
        """The state of `key`, marked as seen at `now`; None for a key not held."""
        value = self._values.get(key)
        if value is not None:
            self._values.move_to_end(key)
            self._seen[key] = now
        return value

    def put(self, key: Key, value: V, now: float) -> None:
        """Hold `value` for `key`; a new key at the cap first evicts the least recently seen."""
        values = self._values
        if key not in values and len(values) >= self.max_keys:
            old, _ = values.popitem(last=False)
            del self._seen[old]
            self._evicted("max_keys", 1)
        values[key] = value
        values.move_to_end(key)
        self._seen[key] = now

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
            dropped += 1
        if dropped:
            self._evicted("idle", dropped)
        return dropped
