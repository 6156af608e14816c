"""What the factory and the farm share: names and topics, `step(t)`, commands, sensor faults.

A fleet is pure: `step(t)` advances every device to simulated time `t` in one vectorized
pass and returns the messages due, `(topic, payload dict)`, without touching a network.
Randomness comes from one generator seeded by `seed`, and every step draws the same arrays
in the same order whatever the faults or commands, so a run with a fault and its healthy
twin (same seed, no fault) see identical noise: a test can subtract one from the other.

The site (`devices.sites`) draws from a second generator, so the `reference` site is
today's simulator draw for draw, and any site keeps the healthy-twin property. Its sensors
sit between the physics and the payload: gain, offset and drift per device and field
(`SENSORS`), timestamp jitter, and, with `disorder`, readings held back a step (delivered
after a newer one) or delivered twice.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import orjson

from devices.clock import SimClock
from devices.faults import BoolArray, FaultKind, FaultSchedule, FaultSpec, FloatArray, Freezer
from devices.sites import REFERENCE, Site

Message = tuple[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Sensor:
    """How far a field's sensor strays at a site's `calibration` and `drift` of 1."""

    gain: float = 0.0  # sd of the relative gain error
    offset: float = 0.0  # sd of the zero offset, in the field's unit
    drift: float = 0.0  # sd of the offset's drift per hour, in the field's unit


log = logging.getLogger("fogline.devices")


class Fleet(ABC):
    """Devices named `devices[i]`, grouped (line, farm) as `groups[i]`, one topic each."""

    name: ClassVar[str]
    KEY: ClassVar[tuple[str, str]]  # the pipeline's key fields: (group field, device field)
    FAULTS: ClassVar[Mapping[str, FaultKind]]
    UNITS: ClassVar[Mapping[str, str]]
    COMMAND_FILTER: ClassVar[str]  # what the fleet subscribes to for the gateway's actions
    SENSORS: ClassVar[tuple[Sensor, ...]]  # one per payload field, in order

    def __init__(
        self,
        devices: Sequence[str],
        groups: Sequence[str],
        seed: int,
        clock: SimClock,
        faults: Sequence[FaultSpec] = (),
        site: Site = REFERENCE,
    ) -> None:
        self.devices = list(devices)
        self.groups = list(groups)
        self.size = len(self.devices)
        self.seed = seed
        self.clock = clock
        self.rng = np.random.default_rng(seed)
        self.site = site
        self.site_rng = np.random.default_rng([seed, 0x5173E])
        fields = len(self.SENSORS)
        z = self.site_rng.standard_normal((3, len(self.devices), fields))
        self._gain = 1 + site.calibration * np.array([s.gain for s in self.SENSORS]) * z[0]
        self._offset = site.calibration * np.array([s.offset for s in self.SENSORS]) * z[1]
        self._drift = site.drift * np.array([s.drift for s in self.SENSORS]) * z[2]
        self._held: list[Message] = []
        self._delivery_rng = np.random.default_rng([seed, 0xDE11])  # draws vary with faults
        self.schedule = FaultSchedule.from_specs(faults, self.FAULTS, self.devices, clock.speed)
        self.topics = [self.topic(g, d) for g, d in zip(self.groups, self.devices, strict=True)]
        self._index = {d: i for i, d in enumerate(self.devices)}
        self._command_index = {
            self.command_topic(g, d): i
            for i, (g, d) in enumerate(zip(self.groups, self.devices, strict=True))
        }
        self._t: float | None = None
        self._stuck = Freezer()
        self.commands_applied = 0
        self.commands_ignored = 0

    # naming -------------------------------------------------------------------------------

    @abstractmethod
    def topic(self, group: str, device: str) -> str: ...

    @abstractmethod
    def command_topic(self, group: str, device: str) -> str: ...

    def key(self, index: int) -> dict[str, str]:
        """The pipeline key of a device, as the gateway's alerts will carry it."""
        return {self.KEY[0]: self.groups[index], self.KEY[1]: self.devices[index]}

    def index(self, device: str) -> int:
        return self._index[device]

    def base_names(self) -> dict[str, str]:
        """Topic -> SenML base name."""
        return {t: f"urn:dev:{d}:" for t, d in zip(self.topics, self.devices, strict=True)}

    # time ---------------------------------------------------------------------------------

    def start_at(self, wall0: float) -> None:
        """Move the run's wall-clock start (before the first step): after a slow connect,
        the first reading is due now, not at the moment the fleet was built."""
        if self._t is not None:
            raise RuntimeError("start_at() after the first step would tear the timeline")
        self.clock = dataclasses.replace(self.clock, wall0=wall0)

    def step(self, t: float) -> list[Message]:
        """Advance every device to simulated time `t` and return the readings due."""
        t_prev = -math.inf if self._t is None else self._t
        dt = 0.0 if self._t is None else max(0.0, t - self._t)
        self._t = t
        out = self._step(t, t_prev, dt)
        if self.site.disorder <= 0:
            return out
        # Late and duplicated delivery: the readings held last step arrive after this step's.
        u = self._delivery_rng.random(len(out))
        share = self.site.disorder / 2
        held, self._held = self._held, [m for m, x in zip(out, u, strict=True) if x < share]
        now = [m for m, x in zip(out, u, strict=True) if x >= share]
        twice = [m for m, x in zip(out, u, strict=True) if share <= x < 2 * share]
        return now + held + twice

    @abstractmethod
    def _step(self, t: float, t_prev: float, dt: float) -> list[Message]: ...

    def lingering(self, kind: str) -> BoolArray | None:
        """Devices still in the state a fault of `kind` left them in, after it ended (a plot
        dried out stays dry until water comes back); None: the kind leaves nothing behind."""
        return None

    # commands from the gateway --------------------------------------------------------------

    def command(self, topic: str, payload: bytes) -> bool:
        """Apply one action message (`{"command": ...}`); False if it is not for us or bad."""
        index = self._command_index.get(topic)
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            body = None
        if index is None or not isinstance(body, dict) or not isinstance(body.get("command"), str):
            self.commands_ignored += 1
            log.warning("ignored a command on %s: %r", topic, payload[:200])
            return False
        if self._apply(index, body["command"], body):
            self.commands_applied += 1
            log.info("%s: %s", self.devices[index], body["command"])
            return True
        self.commands_ignored += 1
        log.warning("%s: unknown command %r", self.devices[index], body["command"])
        return False

    @abstractmethod
    def _apply(self, index: int, command: str, body: dict[str, Any]) -> bool: ...

    # output -------------------------------------------------------------------------------

    def _spike_size(self) -> FloatArray:
        """Per device, x the legacy spike size: the site's spikes need not clear any rule."""
        u = self.site_rng.random(self.size)
        if self.site.spikes is None:
            return np.ones(self.size)
        lo, hi = self.site.spikes
        return lo + (hi - lo) * u

    def _sensors(self, t: float, values: FloatArray) -> FloatArray:
        """What the site's sensors make of the true values: gain, offset, drift."""
        if self.site.calibration <= 0 and self.site.drift <= 0:
            return values
        read: FloatArray = values * self._gain + self._offset + self._drift * (t / 3600.0)
        return read

    def _sensor_faults(
        self,
        t: float,
        values: FloatArray,
        decimals: Sequence[int],
        silent: BoolArray | None = None,
    ) -> tuple[FloatArray, BoolArray]:
        """Stuck readings and dropouts, common to all nodes: (values, which devices emit).

        With the site's `dither`, a stuck sensor's last digit still flickers: frozen values
        need not be bit-identical."""
        stuck = self.schedule.active("stuck", t)
        values = self._stuck.apply(stuck, values)
        if self.site.dither:  # whole-number fields (a valve's 0/1) and zeros stay as they are
            digit = np.where(np.array(decimals) > 0, 10.0 ** -np.array(decimals), 0.0)
            flicker = self.site_rng.integers(-1, 2, values.shape) * digit
            flickered = np.where(values > 0, np.maximum(values + flicker, 0.0), values)
            values = np.where(stuck[:, None], flickered, values)
        quiet = self.schedule.active("dropout", t)
        if silent is not None:
            quiet |= silent
        return values, ~quiet

    def _messages(
        self,
        t: float,
        emit: BoolArray,
        names: Sequence[str],
        values: FloatArray,
        decimals: Sequence[int],
    ) -> list[Message]:
        """One payload per emitting device (in device order): `ts`, then the `values` columns.

        Columns go through numpy rounding and `tolist()` once each; per message there is only
        the dict. A column with 0 decimals becomes ints (the valve's 0/1).
        """
        rows = np.flatnonzero(emit)
        ts: Any = round(self.clock.wall(t), 3)
        if self.site.jitter > 0:  # drawn for every device, so a dropout changes no other draw
            z = self.site_rng.standard_normal(self.size)[rows]
            ts = np.round(self.clock.wall(t) + self.site.jitter * z, 3).tolist()
        if rows.size == 0:
            return []
        columns = [
            np.round(values[rows, j], d).tolist()
            if d > 0
            else values[rows, j].round().astype(np.int64).tolist()
            for j, d in enumerate(decimals)
        ]
        topics = self.topics
        out: list[Message] = []
        for k, row in enumerate(zip(*columns, strict=True)):
            stamp = ts[k] if isinstance(ts, list) else ts
            payload: dict[str, Any] = {"ts": stamp, **dict(zip(names, row, strict=True))}
            out.append((topics[rows[k]], payload))
        return out
