"""Smart agriculture: soil plots that dry in the sun and drink from valve-controlled lines.

Soil moisture (volumetric %, 300 mm root zone) falls with evapotranspiration that follows
the sun (zero at night, peak at solar noon of the simulated clock's UTC day), cloud cover
(a smooth per-farm weather: sums of slow sinusoids, with rain above 85 % cover) and the crop;
plants stress and transpire less as the soil nears wilting point; water above field
capacity drains. An open valve delivers 10-16 l/min, which the plot's soil volume turns
into rising moisture. Each plot irrigates 30 minutes a day at a dawn hour of its own, and
obeys the gateway's `open` (`minutes`, default 20) and `close` commands; a plot already
wetter than 85 % of field capacity skips its dawn cycle. Line pressure is a
static 2.4-2.8 bar that drops by the friction loss while water flows.

Real rates are slow (a few tenths of a percent an hour): use `--speed` to watch days pass.

Faults: `leak` (flow appears with the valve closed and line pressure falls by ~1.4 bar),
`blocked` (the line starts an irrigation cycle but nothing flows; pressure stays high),
`dryout` (moisture relaxes toward 4 % in minutes: below 20 % about two simulated minutes
after onset), `battery` (the probe's voltage sags and its readings grow noisy and biased
over 10 simulated minutes, then it goes silent), and the sensor faults `stuck`, `dropout`,
`spikes`.

    farm/<farm>/<plot>/telemetry (SenML JSON by default)
    [{"bn": "urn:dev:plot-7:", "bt": 1700000000.0, "n": "moisture", "u": "%", "v": 23.5},
     {"n": "valve", "v": 0}, {"n": "flow", "u": "l/min", "v": 0.0},
     {"n": "pressure", "u": "bar", "v": 2.61}, {"n": "battery", "u": "V", "v": 3.61}]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from devices.clock import SimClock
from devices.faults import SENSOR_FAULTS, BoolArray, FaultKind, FaultSpec, FloatArray
from devices.fleet import Fleet, Message, Sensor
from devices.sites import REFERENCE, Site

FIELDS = ("moisture", "valve", "flow", "pressure", "battery")
DECIMALS = (2, 0, 2, 3, 3)
FAULTS = {
    k.name: k
    for k in (
        FaultKind("leak", 120.0, "flow with the valve closed, line pressure falling"),
        FaultKind("blocked", 5.0, "an irrigation cycle starts, nothing flows, pressure stays high"),
        FaultKind("dryout", 10.0, "moisture falls toward 4 %, below 20 % within minutes"),
        FaultKind("battery", 600.0, "readings noisy and biased as the voltage sags, then silence"),
        *SENSOR_FAULTS,
    )
}
FARM_NAMES = ("north", "south", "east", "west")
DAY = 86400.0
ROOT_ZONE_MM = 300.0
ET_PEAK_MM_H = 0.6  # reference evapotranspiration at solar noon under a clear sky
DRYOUT_TARGET, DRYOUT_TAU = 4.0, 240.0
DRAIN_TAU = 6 * 3600.0
SCHEDULE_MINUTES = 30.0
DRY_UNTIL = 2.0  # % below its level before a dry-out: the plot is still dry
COMMAND_MINUTES = 20.0
SPIKE_PROBABILITY = 0.1


@dataclass(frozen=True, slots=True)
class FarmConfig:
    count: int = 10
    per_farm: int = 10

    def __post_init__(self) -> None:
        if self.count < 1 or self.per_farm < 1:
            raise ValueError(f"expected at least 1 plot (and per farm), got {self.count}")


def plot_names(config: FarmConfig) -> tuple[list[str], list[str]]:
    """(plots, farms): `plot-1`.. numbered across farms, so a plot name is unique."""
    plots = [f"plot-{i + 1}" for i in range(config.count)]
    farms = []
    for i in range(config.count):
        f = i // config.per_farm
        farms.append(FARM_NAMES[f] if f < len(FARM_NAMES) else f"farm-{f + 1}")
    return plots, farms


class FarmFleet(Fleet):
    name = "farm"
    KEY = ("farm", "plot")
    FAULTS: ClassVar = FAULTS
    UNITS: ClassVar = {"moisture": "%", "flow": "l/min", "pressure": "bar", "battery": "V"}
    COMMAND_FILTER = "farm/+/+/valve/set"
    # A capacitive probe off by a few % of volume (soil-specific calibration is rare) and
    # creeping as it settles; flow meters within 5 %; pressure transducers within 2 %.
    SENSORS = (
        Sensor(gain=0.05, offset=2.0, drift=0.2),
        Sensor(),
        Sensor(gain=0.05),
        Sensor(gain=0.02, offset=0.05, drift=0.01),
        Sensor(offset=0.02),
    )

    def __init__(
        self,
        config: FarmConfig,
        seed: int,
        clock: SimClock,
        faults: Sequence[FaultSpec] = (),
        site: Site = REFERENCE,
    ) -> None:
        plots, farms = plot_names(config)
        super().__init__(plots, farms, seed, clock, faults, site)
        self.config = config
        n, rng = self.size, self.rng
        self.field_capacity = rng.uniform(*site.field_capacity, n)
        self.wilting = rng.uniform(*site.wilting, n)
        self.crop = rng.uniform(0.8, 1.15, n)  # crop coefficient Kc
        self.area = rng.uniform(20.0, 40.0, n)  # m²
        self.nominal_flow = rng.uniform(10.0, 16.0, n) * site.flow  # l/min with the valve open
        self.static_pressure = rng.uniform(2.4, 2.8, n) + site.pressure  # bar
        self.friction = rng.uniform(0.35, 0.55, n)  # bar lost while water flows
        self.leak_flow = rng.uniform(2.5, 5.0, n)  # l/min at full severity
        self.leak_drop = rng.uniform(1.2, 1.6, n)  # bar at full severity
        self.full_battery = rng.uniform(*site.battery, n)  # V
        self.dawn = rng.uniform(4.5, 7.0, n) * 3600.0  # s after midnight: daily irrigation
        farm_index = np.array([i // config.per_farm for i in range(n)])
        n_farms = int(farm_index.max()) + 1
        periods = np.stack(
            [rng.uniform(1.8, 3.2, n_farms) * DAY, rng.uniform(5.0, 9.0, n_farms) * 3600]
        )
        phases = rng.uniform(0, 2 * math.pi, (2, n_farms))
        self._weather = (periods[:, farm_index], phases[:, farm_index])
        self._supply_phase = rng.uniform(0, 2 * math.pi, n)
        # State.
        # Start between 70 and 95 % of field capacity (24-32 % on the reference loam).
        self.moisture = rng.uniform(24.0, 32.0, n) * (sum(site.field_capacity) / 68.0)
        self.battery_sag = self.site_rng.uniform(*site.battery_sag, n)  # V at full severity
        self.tempco = site.tempco * self.site_rng.uniform(0.5, 1.5, n)  # % at the day's peak
        self.valve_open = np.zeros(n, dtype=np.bool_)
        self.valve_until = np.zeros(n)
        self.before_dryout = self.moisture.copy()  # the soil's moisture when a dry-out began

    def topic(self, group: str, device: str) -> str:
        return f"farm/{group}/{device}/telemetry"

    def command_topic(self, group: str, device: str) -> str:
        return f"farm/{group}/{device}/valve/set"

    def _apply(self, index: int, command: str, body: dict[str, Any]) -> bool:
        now = self._t or 0.0
        if command == "open":
            minutes = body.get("minutes", COMMAND_MINUTES)
            if not isinstance(minutes, int | float) or isinstance(minutes, bool) or minutes <= 0:
                minutes = COMMAND_MINUTES
            self.valve_open[index] = True
            self.valve_until[index] = now + 60.0 * minutes
            return True
        if command == "close":
            self.valve_open[index] = False
            return True
        return False

    def cloud(self, t: float) -> FloatArray:
        """Cloud cover 0..1 per plot (shared by a farm's plots) at simulated offset `t`."""
        epoch = self.clock.sim_epoch(t)
        (p_slow, p_fast), (f_slow, f_fast) = self._weather
        cover: FloatArray = 0.45 + 0.35 * np.sin(2 * math.pi * epoch / p_slow + f_slow)
        cover += 0.25 * np.sin(2 * math.pi * epoch / p_fast + f_fast)
        return np.clip(cover, 0.0, 1.0)

    def sun(self, t: float) -> float:
        """0 at night, 1 at solar noon (UTC of the simulated clock)."""
        hour = (self.clock.sim_epoch(t) % DAY) / 3600.0
        return max(0.0, math.sin(math.pi * (hour - 6.0) / 12.0))

    def _step(self, t: float, t_prev: float, dt: float) -> list[Message]:
        n, rng, sched = self.size, self.rng, self.schedule
        z_moisture, z_flow, z_pressure, z_battery = rng.standard_normal((4, n))
        spike_u, spike_mag = rng.random((2, n))
        spike_field = rng.integers(0, 3, n)

        leak = sched.severity("leak", t)
        blocked = sched.severity("blocked", t)
        dryout = sched.severity("dryout", t)
        began = sched.began("dryout", t_prev, t)
        self.before_dryout = np.where(began, self.moisture, self.before_dryout)
        battery = sched.severity("battery", t)

        self._irrigation(t, t_prev)
        emitters = np.where(self.valve_open, self.nominal_flow * (1 - blocked), 0.0)
        flow = emitters + self.leak_flow * leak

        # Water balance of the root zone, in volumetric % per second.
        cover = self.cloud(t)
        stress = np.clip((self.moisture - self.wilting) / (0.5 * self.field_capacity), 0, 1)
        et_mm_h = ET_PEAK_MM_H * self.sun(t) * (1 - 0.7 * cover) * self.crop * stress + 0.01
        rain_mm_h = 3.0 * np.clip((cover - 0.85) / 0.15, 0, 1)
        soil_litres = self.area * ROOT_ZONE_MM  # m² x mm = litres
        rate = (rain_mm_h * 0.8 - et_mm_h) / ROOT_ZONE_MM * 100 / 3600
        rate += 0.9 * emitters / 60.0 / soil_litres * 100
        rate -= np.maximum(self.moisture - self.field_capacity, 0) / DRAIN_TAU
        self.moisture = self.moisture + rate * dt
        self.moisture += (DRYOUT_TARGET - self.moisture) * -np.expm1(-dt * dryout / DRYOUT_TAU)
        self.moisture = np.clip(self.moisture, 1.0, 60.0)

        supply = 0.05 * np.sin(2 * math.pi * 2 * self.clock.sim_epoch(t) / DAY + self._supply_phase)
        pressure = self.static_pressure + supply
        pressure -= np.where(self.valve_open, self.friction * (1 - blocked) - 0.15 * blocked, 0)
        pressure -= self.leak_drop * leak

        # What the probe reports: its own noise, more of it and a bias as the battery sags.
        moisture = self.moisture + (0.15 + 4 * battery) * z_moisture - 5 * battery
        moisture += self.tempco * self.sun(t)  # the soil warms by day, the probe reads wetter
        flow = flow + np.where(flow > 0, 0.08 + 0.5 * battery, 0.5 * battery) * z_flow
        pressure = pressure + (0.015 + 0.2 * battery) * z_pressure
        volts = self.full_battery - self.battery_sag * battery + 0.003 * z_battery

        size = self._spike_size()
        spiking = sched.active("spikes", t) & (spike_u < SPIKE_PROBABILITY)
        if spiking.any():
            jump = np.where(self.moisture > 50, -1, 1) * (30 + 20 * spike_mag) * size
            moisture = moisture + np.where(spiking & (spike_field == 0), jump, 0)
            flow = flow + np.where(spiking & (spike_field == 1), (20 + 30 * spike_mag) * size, 0)
            pressure = pressure + np.where(
                spiking & (spike_field == 2), (4 + 4 * spike_mag) * size, 0
            )

        values = np.column_stack(
            [
                moisture,
                self.valve_open.astype(np.float64),
                np.maximum(flow, 0),
                np.maximum(pressure, 0),
                np.maximum(volts, 0),
            ]
        )
        values = self._sensors(t, values)
        values[:, 0] = np.clip(values[:, 0], 0, 100)
        values[:, 2:] = np.maximum(values[:, 2:], 0)
        values, emit = self._sensor_faults(t, values, DECIMALS, silent=sched.ramped("battery", t))
        return self._messages(t, emit, FIELDS, values, DECIMALS)

    def lingering(self, kind: str) -> BoolArray | None:
        """A dried-out plot is dry until its soil is back within 2 % (volumetric) of where
        it was when the dry-out began: an irrigation cycle or two, or days of none."""
        if kind != "dryout":
            return None
        dry: BoolArray = self.moisture < self.before_dryout - DRY_UNTIL
        return dry

    def _irrigation(self, t: float, t_prev: float) -> None:
        """Valve timers, the daily dawn cycle, and the cycle a blocked line starts."""
        self.valve_open &= self.valve_until > t
        if math.isfinite(t_prev):
            # Did the plot's dawn hour pass between the two steps?
            before = np.floor((self.clock.sim_epoch(t_prev) - self.dawn) / DAY)
            after = np.floor((self.clock.sim_epoch(t) - self.dawn) / DAY)
            thirsty = self.moisture < 0.85 * self.field_capacity  # a wet plot skips its cycle
            self._open((after > before) & thirsty, t, SCHEDULE_MINUTES)
        self._open(self.schedule.began("blocked", t_prev, t), t, SCHEDULE_MINUTES)

    def _open(self, which: BoolArray, t: float, minutes: float) -> None:
        """Open (or keep open at least `minutes` longer) the valves of `which`."""
        end = t + 60.0 * minutes
        longer = np.where(self.valve_open, np.maximum(self.valve_until, end), end)
        self.valve_until = np.where(which, longer, self.valve_until)
        self.valve_open |= which
