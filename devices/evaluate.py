"""Detection quality: a fleet with scheduled faults, through a real pipeline, scored per fault.

Everything runs in-process and in simulated time. A fleet's `step(t)` produces the readings
due at `t`; they are encoded as the devices send them (`devices.codec`), decoded by the
gateway's own `Decoder` with the pipeline's MQTT source settings, and fed to the gateway's
`Engine`, whose fake clock follows the simulation: `Engine.tick` runs at every `tick` of
the pipeline, so windows close and watermarks move as they would in real time. Alerts are
taken from the streams the pipeline uplinks as `kind: alert`; actions (a machine `stop`, a
valve `open`/`close`) go back to the fleet, as they would over the edge broker, so a fault
plays out as it does in a deployment. Only the broker is missing.

Scoring (`score`) matches alert raises against the fleet's ground truth (`devices.labels`):
a raise of rule R for device D at event time t detects a fault of kind K on D when R is one
of K's detectors and `start <= t <= over + grace`, where `over` is the fault's end or, for a
fault whose state outlasts it (a dried-out plot stays dry until water comes back;
`Fleet.lingering`), the moment the device recovered. Per fault kind:

* recall: faults with at least one matching raise / faults;
* precision: matching raises / raises of K's detector rules, leaving out raises that match
  a fault of another kind the same rule also detects (a shared rule is not wrong there);
* time to detect: first matching raise, as the gateway emitted it, minus the moment the
  fault became detectable (never negative): the first reading whose departure from the
  device's healthy twin (same seed, no fault, open loop) exceeds twice that device's normal
  spread of the field in the 10 minutes before the fault (`detectable_times`); sensor faults
  without a signature field are detectable at onset (dropout) or at the first reading the
  device sends during the fault (stuck: a frozen sensor that is also silent shows nothing).
  A slow fault is so judged from when it shows, not from when it began to grow;
* false alarms per device-hour: the raises that matched nothing / device-hours of the run.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from devices.clock import SimClock
from devices.codec import Codec, Format
from devices.factory import FactoryConfig, FactoryFleet
from devices.farm import FarmConfig, FarmFleet
from devices.faults import FaultSpec
from devices.fleet import Fleet
from devices.labels import labels
from devices.sites import REFERENCE, Site
from gateway.clock import FakeClock
from gateway.decode import Decoder, TopicPatterns
from gateway.engine import Engine, Output
from gateway.metrics import Metrics
from gateway.operators.alert import AlertConfig
from gateway.operators.window import WindowConfig
from gateway.outputs import ActionOutput
from gateway.record import Record
from gateway.spec import (
    ActionOutputConfig,
    MqttSourceConfig,
    Pipeline,
    UplinkOutputConfig,
    load_pipeline,
)

ROOT = Path(__file__).resolve().parents[1]
START = 1_780_279_200.0  # 2026-06-01T02:00:00Z: the farm's night, then its dawn irrigation


# -- ground truth and alerts -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Interval:
    """One fault on one device, in the time base of the payloads (wall epoch seconds)."""

    kind: str
    key: tuple[str, ...]
    start: float
    end: float
    detectable: float | None = None  # when the fault first showed (None: at its start)
    recovered: float | None = None  # when the device left the state it left (None: at end)

    @property
    def shows(self) -> float:
        return self.start if self.detectable is None else self.detectable

    @property
    def over(self) -> float:
        """When the device is itself again: the fault's end, or later if its state lingers
        (`Fleet.lingering`: a dried-out plot stays dry until water comes back)."""
        return self.end if self.recovered is None else max(self.end, self.recovered)


@dataclass(frozen=True, slots=True)
class Raise:
    """One `raised` alert event: `ts` is its event time, `emitted` the gateway clock then."""

    rule: str
    key: tuple[str, ...]
    ts: float
    emitted: float


def intervals_from_labels(
    rows: Iterable[Mapping[str, Any]], key_fields: Sequence[str], stop: float = math.inf
) -> list[Interval]:
    """Label rows (`devices.labels`) to intervals; an open end is `stop`."""
    out = []
    for row in rows:
        end = row["end"]
        key = tuple(str(row["key"][name]) for name in key_fields)
        out.append(Interval(row["fault"], key, float(row["start"]), stop if end is None else end))
    return out


# -- scoring -------------------------------------------------------------------------------


@dataclass
class Score:
    """Detection counts for one fault kind; the rates are computed from them."""

    kind: str
    rules: tuple[str, ...]
    faults: int = 0
    detected: int = 0
    raises: int = 0  # raises of the kind's rules, other kinds' matches left out
    matched: int = 0
    false: int = 0
    device_hours: float = 0.0
    ttd: list[float] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.detected / self.faults if self.faults else math.nan

    @property
    def precision(self) -> float:
        return self.matched / self.raises if self.raises else math.nan

    @property
    def false_per_device_hour(self) -> float:
        return self.false / self.device_hours if self.device_hours else math.nan

    def ttd_percentile(self, q: float) -> float:
        return float(np.percentile(self.ttd, q)) if self.ttd else math.nan

    def __add__(self, other: Score) -> Score:
        if (self.kind, self.rules) != (other.kind, other.rules):
            raise ValueError(f"cannot add scores of {self.kind} and {other.kind}")
        return Score(
            self.kind,
            self.rules,
            self.faults + other.faults,
            self.detected + other.detected,
            self.raises + other.raises,
            self.matched + other.matched,
            self.false + other.false,
            self.device_hours + other.device_hours,
            self.ttd + other.ttd,
        )


def score(
    raises: Sequence[Raise],
    intervals: Sequence[Interval],
    detectors: Mapping[str, Sequence[str]],
    grace: float,
    device_hours: float,
) -> dict[str, Score]:
    """Per fault kind in `detectors` (kind -> the rules that detect it): see the module doc."""
    by_key: defaultdict[tuple[str, ...], list[Interval]] = defaultdict(list)
    for interval in intervals:
        by_key[interval.key].append(interval)
    kinds_of: defaultdict[str, set[str]] = defaultdict(set)  # rule -> the kinds it detects
    for kind, rules in detectors.items():
        for rule in rules:
            kinds_of[rule].add(kind)

    def hits(r: Raise) -> list[Interval]:
        return [i for i in by_key.get(r.key, ()) if i.start <= r.ts <= i.over + grace]

    scores = {}
    for kind, rules in detectors.items():
        s = Score(kind, tuple(rules), device_hours=device_hours)
        mine = [r for r in raises if r.rule in rules]
        for interval in (i for i in intervals if i.kind == kind):
            s.faults += 1
            found = [
                r.emitted
                for r in mine
                if r.key == interval.key and interval.start <= r.ts <= interval.over + grace
            ]
            if found:
                s.detected += 1
                s.ttd.append(max(0.0, min(found) - interval.shows))
        for r in mine:
            matched_kinds = {i.kind for i in hits(r)} & kinds_of[r.rule]
            if kind in matched_kinds:
                s.raises += 1
                s.matched += 1
            elif not matched_kinds:
                s.raises += 1
                s.false += 1
        scores[kind] = s
    return scores


def outcomes(
    raises: Sequence[Raise],
    intervals: Sequence[Interval],
    detectors: Mapping[str, Sequence[str]],
    grace: float,
) -> dict[str, Counter[str]]:
    """Per rule, what its raises hit: `detected` (a fault it is meant for), `during <kind>`
    (another fault on that device, e.g. a spike read as overheating), or `healthy`."""
    meant: defaultdict[str, set[str]] = defaultdict(set)
    for kind, rules in detectors.items():
        for rule in rules:
            meant[rule].add(kind)
    out: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for r in raises:
        kinds = {i.kind for i in intervals if i.key == r.key and i.start <= r.ts <= i.over + grace}
        if kinds & meant[r.rule]:
            out[r.rule]["detected"] += 1
        elif kinds:
            out[r.rule]["during " + "/".join(sorted(kinds))] += 1
        else:
            out[r.rule]["healthy"] += 1
    return dict(out)


def combine(runs: Iterable[Mapping[str, Score]]) -> dict[str, Score]:
    """Pool the scores of several runs (seeds) kind by kind."""
    total: dict[str, Score] = {}
    for scores in runs:
        for kind, s in scores.items():
            total[kind] = total[kind] + s if kind in total else s
    return total


# -- fault schedules -----------------------------------------------------------------------


def random_faults(
    kinds: Sequence[str],
    devices: Sequence[str],
    seed: int,
    *,
    duration: float,
    per_kind: int,
    warmup: float,
    length: tuple[float, float],
    tail: float,
    strength: tuple[float, float] = (1.0, 1.0),
    per_device: int = 1,
) -> list[FaultSpec]:
    """`per_kind` faults of each kind, on devices drawn at random, at random times.

    With `per_device` 1, one fault per device keeps faults from masking each other (a
    machine stopped for overheating has no bearing left to wear); with 2 or more, a device
    may carry several faults of different kinds, overlapping or not, as real machines do
    (never one kind twice at once: a sensor stuck while it is stuck is one fault, and a
    second interval inside the first could never be detected apart from it). Starts are
    continuous, not on window boundaries, and leave `warmup` for the detectors to learn and
    `tail` to see the end. Strengths are drawn log-uniformly from `strength` (incipient to
    full-grown faults).
    """
    need = len(kinds) * per_kind
    if need > len(devices) * per_device:
        raise ValueError(
            f"{need} faults need {-(-need // per_device)} devices, the fleet has {len(devices)}"
        )
    rng = np.random.default_rng([seed, 0xFA17])  # apart from the fleet's own noise
    if per_device == 1:
        chosen = rng.choice(len(devices), size=need, replace=False).tolist()
    else:
        # Each kind on per_kind distinct devices, the least loaded first (ties at random),
        # so the fleet's capacity is enough whatever the draw.
        load, chosen = np.zeros(len(devices), dtype=np.int64), []
        for _ in kinds:
            picked = np.lexsort((rng.random(len(devices)), load))[:per_kind]
            load[picked] += 1
            chosen += picked.tolist()
    specs = []
    for n, index in enumerate(chosen):
        lasting = float(rng.uniform(*length))
        latest = duration - lasting - tail
        if latest <= warmup:
            raise ValueError(f"a {duration:g}s run has no room for a {lasting:.0f}s fault")
        start = float(rng.uniform(warmup, latest))
        lo, hi = strength
        scale = lo if lo == hi else float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        specs.append(FaultSpec(kinds[n // per_kind], devices[index], start, lasting, scale))
    return sorted(specs, key=lambda s: s.start)


# -- the demos -------------------------------------------------------------------------------

FleetFactory = Callable[[int, int, SimClock, Sequence[FaultSpec], Site], Fleet]


def _factory(
    count: int, seed: int, clock: SimClock, faults: Sequence[FaultSpec], site: Site = REFERENCE
) -> Fleet:
    return FactoryFleet(FactoryConfig(count), seed, clock, faults, site)


def _farm(
    count: int, seed: int, clock: SimClock, faults: Sequence[FaultSpec], site: Site = REFERENCE
) -> Fleet:
    return FarmFleet(FarmConfig(count), seed, clock, faults, site)


@dataclass(frozen=True)
class Demo:
    """A demo deployment: its pipeline, its fleet as `fogline devices` runs it, its detectors."""

    name: str
    pipeline: Path
    fleet: FleetFactory
    format: Format
    rate: float  # readings per device per second (`fogline devices`' default)
    detectors: Mapping[str, tuple[str, ...]]  # fault kind -> alert rules that detect it
    signatures: Mapping[str, tuple[str, ...]]  # fault kind -> fields it shows in (none: onset)
    devices: int = 48
    hours: float = 2.0
    per_kind: int = 5
    length: tuple[float, float] = (300.0, 900.0)  # fault durations, seconds
    warmup: float = 600.0
    tail: float = 300.0

    def window(self, pipeline: Pipeline) -> float:
        """The first window's size: the unit of the grace period and of time to detect."""
        sizes = [s.config.size for s in pipeline.steps if isinstance(s.config, WindowConfig)]
        if not sizes:
            raise ValueError(f"{pipeline.file}: no window step")
        return float(sizes[0])


DEMOS: dict[str, Demo] = {
    "factory": Demo(
        "factory",
        ROOT / "pipelines" / "factory.yaml",
        _factory,
        "json",
        1.0,
        {
            "bearing": ("vibration_anomaly", "bearing_fault"),
            "imbalance": ("vibration_anomaly", "imbalance"),
            "overheating": ("critical_temperature", "over_temperature", "temperature_rising"),
            "stuck": ("sensor_stuck",),
            "dropout": ("sensor_gap",),
            "spikes": ("sensor_spikes",),
        },
        {
            "bearing": ("vibration_hf", "vibration_peak", "vibration"),
            "imbalance": ("vibration_1x", "vibration"),
            "overheating": ("temperature",),
            "spikes": ("vibration", "temperature", "current"),
        },
    ),
    "farm": Demo(
        "farm",
        ROOT / "pipelines" / "farm.yaml",
        _farm,
        "senml",
        0.2,
        {
            "leak": ("leak_valve_closed", "pressure_drop", "model_leak"),
            "blocked": ("line_blocked",),
            "dryout": ("dry_soil", "soil_drying_fast", "model_dry_soil"),
            "battery": ("low_battery", "probe_silent"),
            "stuck": ("sensor_stuck",),
            "dropout": ("probe_silent",),
            "spikes": ("sensor_spikes",),
        },
        {
            "leak": ("flow", "pressure"),
            "blocked": ("flow", "pressure"),
            "dryout": ("moisture",),
            "battery": ("battery", "moisture", "flow", "pressure"),
            "spikes": ("moisture", "flow", "pressure"),
        },
        hours=8.0,
        length=(600.0, 1800.0),
    ),
}


# -- one run -------------------------------------------------------------------------------


@dataclass
class Run:
    """What one simulated run produced, with its ground truth."""

    demo: Demo
    seed: int
    seconds: float
    devices: int
    intervals: list[Interval]
    raises: list[Raise]
    readings: int
    commands: int
    metrics: Metrics
    window: float
    tapped: dict[str, list[Record]] = field(default_factory=dict)

    @property
    def device_hours(self) -> float:
        return self.devices * self.seconds / 3600.0

    def score(self, grace_windows: float = 2.0) -> dict[str, Score]:
        grace = grace_windows * self.window
        return score(self.raises, self.intervals, self.demo.detectors, grace, self.device_hours)

    def outcomes(self, grace_windows: float = 2.0) -> dict[str, Counter[str]]:
        grace = grace_windows * self.window
        return outcomes(self.raises, self.intervals, self.demo.detectors, grace)


class _Tap:
    """An output that keeps every record of the streams it reads (for diagnostics)."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def emit(self, records: list[Record]) -> None:
        self.records.extend(records)


class _Alerts:
    """An output that keeps the `raised` events, stamped with the gateway clock."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self.raises: list[Raise] = []

    def emit(self, records: list[Record]) -> None:
        now = self._clock.now()
        for record in records:
            fields = record.fields
            if fields.get("state") == "raised":
                self.raises.append(Raise(fields["rule"], record.key, record.ts, now))


def _check_detectors(demo: Demo, pipeline: Pipeline) -> None:
    rules = {
        rule.name
        for step in pipeline.steps
        if isinstance(step.config, AlertConfig)
        for rule in step.config.rules
    }
    unknown = sorted({r for rs in demo.detectors.values() for r in rs} - rules)
    if unknown:
        raise ValueError(f"{pipeline.file}: no alert rule named {', '.join(unknown)}")


class _Aftermath:
    """When each fault's lingering state ends (`Fleet.lingering`), watched step by step."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        faults = fleet.schedule.faults
        self.watch = {n: f for n, f in enumerate(faults) if fleet.lingering(f.kind) is not None}
        self.recovered: dict[int, float] = {}

    def step(self, t: float) -> None:
        for n, f in list(self.watch.items()):
            if f.end > t:
                continue
            still = self.fleet.lingering(f.kind)
            if still is None or not still[f.index]:
                self.recovered[n] = t
                del self.watch[n]

    def wall(self, n: int, seconds: float) -> float | None:
        """When fault `n`'s device recovered (the run's end if it never did), in wall time;
        None for a kind that leaves nothing behind."""
        t = self.recovered.get(n, seconds if n in self.watch else None)
        return None if t is None else self.fleet.clock.wall(min(t, seconds))


def simulate(
    demo: Demo,
    seed: int,
    faults: Sequence[FaultSpec],
    *,
    seconds: float,
    devices: int | None = None,
    pipeline: Pipeline | None = None,
    close_loop: bool = True,
    taps: Sequence[str] = (),
    site: Site = REFERENCE,
    rate: float | None = None,
    start: float = START,
) -> Run:
    """Run `devices` of the demo's fleet for `seconds` of simulated time through its pipeline.

    `close_loop` hands the pipeline's actions back to the fleet (stop, open, close), as the
    edge broker would; without it the devices never hear from the gateway. `taps` names
    streams (e.g. `windows`) whose records the run keeps, to see what the rules saw.
    `site` is the fleet's site (`devices.sites`); `rate` its readings per device per second
    (default: the demo's); `start` the wall time of the first reading (its offset from a
    window boundary is what a real start leaves to chance).
    """
    pipeline = pipeline or load_pipeline(demo.pipeline)
    _check_detectors(demo, pipeline)
    count = devices or demo.devices
    rate = rate or demo.rate
    sim = SimClock(start, 1.0, START)
    fleet = demo.fleet(count, seed, sim, faults, site)
    clock = FakeClock(start)
    metrics = Metrics()
    alerts = _Alerts(clock)

    def publish(topic: str, payload: bytes, _qos: int, _retain: bool) -> bool:
        fleet.command(topic, payload)
        return True

    outputs: list[tuple[list[str], Output]] = []
    for i, (kind, cfg) in enumerate(pipeline.outputs):
        if isinstance(cfg, UplinkOutputConfig) and cfg.kind == "alert":
            outputs.append((cfg.from_, alerts))
        elif isinstance(cfg, ActionOutputConfig) and close_loop:
            outputs.append((cfg.from_, ActionOutput(cfg, publish, metrics, f"outputs[{i}].{kind}")))
    tapped = {name: _Tap() for name in taps}
    outputs += [([name], tap) for name, tap in tapped.items()]
    engine = Engine(pipeline, clock, metrics, outputs)
    source = next(cfg for kind, cfg in pipeline.sources if isinstance(cfg, MqttSourceConfig))
    decoder = Decoder(
        TopicPatterns(source.topics),
        pipeline.key,
        engine.reject_raw,
        fmt=source.format,
        timestamp=source.timestamp,
        max_payload=source.max_payload,
        max_clock_skew=source.max_clock_skew,
    )
    codec = Codec(demo.format, fleet.UNITS, fleet.base_names())
    tick = float(pipeline.header.tick)
    steps = round(seconds * rate)
    readings = ticks = 0
    aftermath = _Aftermath(fleet)
    for k in range(steps + 1):
        t = k / rate
        now = sim.wall(min(t, seconds))
        # The gateway's ticker runs every `tick` of the clock, readings or not.
        while start + ticks * tick <= now + 1e-9:
            clock.t = start + ticks * tick
            engine.tick(clock.t)
            ticks += 1
        if k == steps:
            break
        clock.t = now
        records: list[Record] = []
        for topic, payload in fleet.step(t):
            decoder.decode(topic, codec.encode(topic, payload), now, records)
        readings += len(records)
        engine.process(records)
        aftermath.step(t)
    stop = sim.wall(seconds)
    truth = intervals_from_labels(labels(fleet, stop), pipeline.key, stop)
    shows = detectable_times(demo, seed, faults, seconds=seconds, count=count, site=site, rate=rate)
    shows = [t - START + start for t in shows]
    faults_run = fleet.schedule.faults
    began = [f for f in faults_run if sim.wall(f.start) < stop]
    truth = [
        dataclasses.replace(i, detectable=shows[n], recovered=aftermath.wall(n, seconds))
        for i, n in zip(truth, (faults_run.index(f) for f in began), strict=True)
    ]
    return Run(
        demo,
        seed,
        seconds,
        count,
        truth,
        alerts.raises,
        readings,
        fleet.commands_applied,
        metrics,
        demo.window(pipeline),
        {name: tap.records for name, tap in tapped.items()},
    )


SPREAD_BEFORE = 600.0  # s of healthy readings that set a device's normal spread
SPREADS = 2.0  # a fault shows when it moves a field by more than this many spreads
SILENCE = frozenset({"dropout"})  # kinds whose effect is silence: they show at onset


def detectable_times(
    demo: Demo,
    seed: int,
    faults: Sequence[FaultSpec],
    *,
    seconds: float,
    count: int,
    site: Site = REFERENCE,
    rate: float | None = None,
) -> list[float]:
    """Per fault of the schedule (in its order), the wall time it first showed.

    Two open-loop fleets, the faulty one and its healthy twin, share every noise draw, so
    their difference is the fault's effect alone. A fault shows at the first reading where
    that effect exceeds `SPREADS` times the twin's standard deviation of the field over the
    `SPREAD_BEFORE` seconds before the fault. Kinds without a signature show at the first
    reading the device sends during the fault (a sensor frozen while it is also silent shows
    nothing), silence (`SILENCE`) at onset.
    """
    rate = rate or demo.rate
    sim = SimClock(START, 1.0, START)
    quiet = dataclasses.replace(site, disorder=0.0)  # delivery is not the fault's effect
    sick = demo.fleet(count, seed, sim, faults, quiet)
    twin = demo.fleet(count, seed, sim, (), quiet)
    fields: list[str] = sorted({f for fs in demo.signatures.values() for f in fs})
    column = {f: j for j, f in enumerate(fields)}
    index = {topic: i for i, topic in enumerate(sick.topics)}
    steps = round(seconds * rate)
    a = np.full((steps, count, len(fields)), np.nan)
    b = np.full((steps, count, len(fields)), np.nan)
    for k in range(steps):
        t = k / rate
        for out, fleet in ((a, sick), (b, twin)):
            for topic, payload in fleet.step(t):
                out[k, index[topic]] = [payload.get(f, np.nan) for f in fields]
    times = np.arange(steps) / rate
    shows = []
    for fault in sick.schedule.faults:
        signature = demo.signatures.get(fault.kind, ())
        at = fault.start
        during = np.flatnonzero((times >= fault.start) & (times < fault.end))
        if signature:
            cols = [column[f] for f in signature]
            before = (times >= fault.start - SPREAD_BEFORE) & (times < fault.start)
            with np.errstate(all="ignore"):
                spread = np.nanstd(b[before][:, fault.index, cols], axis=0)
            spread = np.maximum(np.nan_to_num(spread), 1e-3)
            effect = np.abs(a[during][:, fault.index, cols] - b[during][:, fault.index, cols])
            over = np.flatnonzero(np.nan_to_num(effect > SPREADS * spread).any(axis=1))
            at = float(times[during[over[0]]]) if over.size else math.inf
        elif fault.kind not in SILENCE:  # a frozen sensor shows once it reports again
            heard = np.flatnonzero(~np.isnan(a[during][:, fault.index]).all(axis=1))
            at = float(times[during[heard[0]]]) if heard.size else math.inf
        shows.append(sim.wall(at) if math.isfinite(at) else math.inf)
    return shows


def evaluate(
    demo: Demo,
    seed: int,
    *,
    hours: float | None = None,
    devices: int | None = None,
    pipeline: Pipeline | None = None,
    site: Site = REFERENCE,
    rate: float | None = None,
    strength: tuple[float, float] = (1.0, 1.0),
    per_device: int = 1,
    taps: Sequence[str] = (),
) -> Run:
    """One seed of the benchmark: the demo's fleet with a random fault schedule of its own,
    at `site`, `rate` readings per device a second, faults drawn from `strength`."""
    seconds = 3600.0 * (hours or demo.hours)
    count = devices or demo.devices
    fleet = demo.fleet(count, seed, SimClock(START), (), site)
    faults = random_faults(
        sorted(fleet.FAULTS),  # every kind the fleet has, whatever the pipeline detects
        fleet.devices,
        seed,
        duration=seconds,
        per_kind=demo.per_kind,
        warmup=demo.warmup,
        length=demo.length,
        tail=demo.tail,
        strength=strength,
        per_device=per_device,
    )
    return simulate(
        demo,
        seed,
        faults,
        seconds=seconds,
        devices=count,
        pipeline=pipeline,
        site=site,
        rate=rate,
        taps=taps,
    )
