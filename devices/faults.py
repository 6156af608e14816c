"""Fault injection: the `--faults` spec, the schedule a fleet consults, and stuck sensors.

A spec is a comma-separated list of `FAULT:DEVICE@START[+DURATION][*STRENGTH]`, e.g.
`bearing:m-03@60s+120s,leak:plot-7@30s,imbalance:m-05@10s*0.2`. START and DURATION are
real (wall-clock) seconds from the run start, like `--duration`; without a duration the
fault lasts to the end. STRENGTH, in (0, 1], scales the fault's full severity (default 1:
an incipient fault is a weak one). The parser reports every bad item at once, each naming
the item and what was expected.

Severity ramps from 0 at onset to the fault's strength after the kind's ramp time
(simulated seconds, capped at 70 % of the fault's duration so a short fault still reaches
full strength): a bearing wears in, a leak widens, a battery sags.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from fogline.units import parse_duration

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
S = TypeVar("S", bound=np.generic)

_ITEM = re.compile(
    r"^(?P<kind>[^:@+*]+):(?P<device>[^:@+*]+)@(?P<start>[^@+*]+)"
    r"(?:\+(?P<dur>[^*]+))?(?:\*(?P<strength>.+))?$"
)
RAMP_SHARE = 0.7


@dataclass(frozen=True, slots=True)
class FaultKind:
    name: str
    ramp: float  # simulated seconds from onset to full severity
    effect: str  # one line for --help


SENSOR_FAULTS = (
    FaultKind("stuck", 0.0, "the node repeats the readings it had at onset"),
    FaultKind("dropout", 0.0, "the node sends nothing"),
    FaultKind("spikes", 0.0, "one reading in ten has a wild value in one field"),
)


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One parsed item; times in wall-clock seconds from the run start."""

    kind: str
    device: str
    start: float
    duration: float | None = None
    strength: float = 1.0


class FaultSpecError(ValueError):
    """Every problem in a `--faults` spec, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def seconds(text: str) -> float:
    """`90`, `90s`, `1.5m`, `500ms` -> seconds (a bare number is seconds)."""
    try:
        value = float(text)
    except ValueError:
        return parse_duration(text.strip())
    return parse_duration(value)


def parse_faults(
    spec: str, kinds: Mapping[str, FaultKind], devices: Sequence[str]
) -> list[FaultSpec]:
    """Parse and check a spec against the fleet's fault kinds and device names."""
    known = set(devices)
    parsed: list[FaultSpec] = []
    problems: list[str] = []
    items = [part.strip() for part in spec.split(",")]
    for n, item in enumerate(items, 1):
        if not item:
            continue
        where = f"item {n} {item!r}"
        match = _ITEM.match(item)
        if match is None:
            problems.append(
                f"{where}: expected FAULT:DEVICE@START[+DURATION][*STRENGTH], "
                "like bearing:m-03@60s+120s"
            )
            continue
        kind, device = match["kind"].strip(), match["device"].strip()
        bad = len(problems)
        if kind not in kinds:
            problems.append(
                f"{where}: unknown fault {kind!r}; expected one of: {', '.join(sorted(kinds))}"
            )
        device = resolve_device(device, devices, known)
        if device not in known:
            problems.append(f"{where}: unknown device {device!r}; {_expected(device, devices)}")
        start = duration = None
        try:
            start = seconds(match["start"])
        except ValueError as exc:
            problems.append(f"{where}: start: {exc}")
        if match["dur"] is not None:
            try:
                duration = seconds(match["dur"])
            except ValueError as exc:
                problems.append(f"{where}: duration: {exc}")
            else:
                if duration == 0:
                    problems.append(
                        f"{where}: duration: expected more than 0s, got {match['dur']!r}"
                    )
        strength = 1.0
        if match["strength"] is not None:
            try:
                strength = float(match["strength"])
            except ValueError:
                strength = math.nan
            if not 0 < strength <= 1:
                problems.append(
                    f"{where}: strength: expected a number in (0, 1], got {match['strength']!r}"
                )
        if len(problems) == bad and start is not None:
            parsed.append(FaultSpec(kind, device, start, duration, strength))
    if problems:
        raise FaultSpecError(problems)
    return parsed


_NUMBERED = re.compile(r"^(?P<prefix>.*?)(?P<number>\d+)$")


def resolve_device(device: str, devices: Sequence[str], known: set[str] | None = None) -> str:
    """The fleet's name for `device`, read by its number: `m-3`, `m-03` and `m-003` are the
    same machine, whatever width the fleet's size gives its names (m-001 .. m-200)."""
    if device in (known if known is not None else set(devices)):
        return device
    wanted = _NUMBERED.match(device)
    if wanted is None:
        return device
    for name in devices:
        have = _NUMBERED.match(name)
        if (
            have is not None
            and have["prefix"] == wanted["prefix"]
            and int(have["number"]) == int(wanted["number"])
        ):
            return name
    return device


def _expected(device: str, devices: Sequence[str]) -> str:
    if not devices:
        return "the fleet has no devices"
    text = (
        f"expected {devices[0]} .. {devices[-1]}" if len(devices) > 1 else f"expected {devices[0]}"
    )
    close = difflib.get_close_matches(device, devices, n=1)
    return f"{text} (did you mean {close[0]!r}?)" if close else text


@dataclass(frozen=True, slots=True)
class Fault:
    """A scheduled fault in simulated seconds since the run start (`end` inf: to the end)."""

    kind: str
    device: str
    index: int
    start: float
    end: float
    ramp: float
    strength: float = 1.0

    def severity(self, t: float) -> float:
        if not self.start <= t < self.end:
            return 0.0
        grown = 1.0 if self.ramp <= 0 else min(1.0, (t - self.start) / self.ramp)
        return grown * self.strength


class FaultSchedule:
    """The faults of one fleet, asked per tick for a per-device severity array."""

    def __init__(self, faults: Sequence[Fault], size: int) -> None:
        self.faults = list(faults)
        self.size = size
        self._by_kind: dict[str, list[Fault]] = {}
        for fault in self.faults:
            self._by_kind.setdefault(fault.kind, []).append(fault)

    @classmethod
    def from_specs(
        cls,
        specs: Sequence[FaultSpec],
        kinds: Mapping[str, FaultKind],
        devices: Sequence[str],
        speed: float = 1.0,
    ) -> FaultSchedule:
        """Wall-clock specs to simulated times: `--speed 10` makes `@60s` simulated 600 s."""
        index = {name: i for i, name in enumerate(devices)}
        faults = []
        for s in specs:
            start = s.start * speed
            end = math.inf if s.duration is None else (s.start + s.duration) * speed
            ramp = kinds[s.kind].ramp
            if math.isfinite(end):
                ramp = min(ramp, RAMP_SHARE * (end - start))
            faults.append(Fault(s.kind, s.device, index[s.device], start, end, ramp, s.strength))
        return cls(faults, len(devices))

    def severity(self, kind: str, t: float) -> FloatArray:
        """Per device: 0 when healthy, rising to 1 over the ramp while the fault lasts."""
        sev = np.zeros(self.size)
        for fault in self._by_kind.get(kind, ()):
            sev[fault.index] = max(sev[fault.index], fault.severity(t))
        return sev

    def active(self, kind: str, t: float) -> BoolArray:
        on = np.zeros(self.size, dtype=np.bool_)
        for fault in self._by_kind.get(kind, ()):
            if fault.start <= t < fault.end:
                on[fault.index] = True
        return on

    def ramped(self, kind: str, t: float) -> BoolArray:
        """Active and past its ramp: the battery is flat, the node goes silent."""
        on = np.zeros(self.size, dtype=np.bool_)
        for fault in self._by_kind.get(kind, ()):
            if fault.start + fault.ramp <= t < fault.end:
                on[fault.index] = True
        return on

    def began(self, kind: str, t_prev: float, t: float) -> BoolArray:
        """Devices whose fault of `kind` started in (t_prev, t]: once-only reactions."""
        on = np.zeros(self.size, dtype=np.bool_)
        for fault in self._by_kind.get(kind, ()):
            if t_prev < fault.start <= t:
                on[fault.index] = True
        return on

    def active_faults(self, t: float) -> list[Fault]:
        return [f for f in self.faults if f.start <= t < f.end]


class Freezer:
    """A stuck sensor: rows that turn active keep the values they had at that moment."""

    def __init__(self) -> None:
        self._held: NDArray[Any] | None = None
        self._holding: BoolArray | None = None

    def apply(self, active: BoolArray, values: NDArray[S]) -> NDArray[S]:
        if self._held is None or self._holding is None or self._held.shape != values.shape:
            self._held = np.zeros_like(values)
            self._holding = np.zeros(values.shape[0], dtype=np.bool_)
        if not active.any():
            self._holding[:] = False
            return values
        onset = active & ~self._holding
        self._held[onset] = values[onset]
        self._holding = active.copy()
        mask = active.reshape((-1,) + (1,) * (values.ndim - 1))
        return np.where(mask, self._held, values)
