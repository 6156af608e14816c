"""Sign-in throttling: failed attempts counted per account and per source address.

Past `per_account` failures for one name, or `per_address` from one address, within
`window` seconds, the sign-in form answers 429 without checking the password (argon2 costs
~110 ms of CPU per try, so a refused guess costs the cloud nothing) until the oldest of
those failures is older than the window. The per-address limit is higher: a plant's
shift often signs in from one NAT address. A good password resets its account's count.

Counts live in the process (each replica counts its own attempts, so behind N replicas
an attacker gets at most N times the limit); the number of names and addresses followed
is capped, the oldest forgotten first, so a flood of random names cannot grow memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a sign-in is refused before its password is checked, and for how long."""

    by: str  # "account" or "address"
    retry_after: float  # seconds

    def message(self) -> str:
        minutes = max(1, round(self.retry_after / 60))
        what = "for this name" if self.by == "account" else "from this address"
        return (
            f"Too many failed sign-ins {what}: try again in {minutes} minute"
            f"{'s' if minutes > 1 else ''}, or ask an admin to reset the password."
        )


class _Failures:
    """Failure times per key, within the window, for at most `keys` keys."""

    def __init__(self, limit: int, window: float, keys: int) -> None:
        self.limit, self.window, self.keys = limit, window, keys
        self._times: OrderedDict[str, deque[float]] = OrderedDict()

    def refused_for(self, key: str, now: float) -> float:
        """Seconds until `key` may try again; 0 if it may now."""
        times = self._times.get(key)
        if times is None:
            return 0.0
        while times and now - times[0] >= self.window:
            times.popleft()
        if not times:
            del self._times[key]
            return 0.0
        return times[0] + self.window - now if len(times) >= self.limit else 0.0

    def fail(self, key: str, now: float) -> None:
        times = self._times.setdefault(key, deque(maxlen=self.limit))
        times.append(now)
        self._times.move_to_end(key)
        while len(self._times) > self.keys:
            self._times.popitem(last=False)

    def forget(self, key: str) -> None:
        self._times.pop(key, None)


class SignInThrottle:
    """`check` before verifying a password, `failed` or `succeeded` after (thread-safe:
    the sign-in handler runs in the event loop, tests and tools may call it from threads)."""

    def __init__(
        self,
        per_account: int = 5,
        per_address: int = 30,
        window: float = 900.0,
        keys: int = 10_000,
    ) -> None:
        self._account = _Failures(per_account, window, keys)
        self._address = _Failures(per_address, window, keys)
        self._lock = threading.Lock()

    def check(self, name: str, address: str, now: float) -> Refusal | None:
        with self._lock:
            wait = self._account.refused_for(name, now)
            if wait > 0:
                return Refusal("account", wait)
            wait = self._address.refused_for(address, now)
            return Refusal("address", wait) if wait > 0 else None

    def failed(self, name: str, address: str, now: float) -> None:
        with self._lock:
            self._account.fail(name, now)
            self._address.fail(address, now)

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._account.forget(name)
