"""Sites: what makes one plant or farm differ from another, so detection is judged off-tune.

A `Site` scales the per-device draws of a fleet (speed, load, noise, ambient; soil, line
pressure, flow) and describes its sensors: calibration offsets and gains, slow drift, a
temperature-dependent bias, timestamp jitter, out-of-order and duplicated delivery, the
spread of spike sizes and battery chemistries, stuck sensors that dither by one digit,
bearing resonances outside the reported band, and a 1x vibration estimated from the
spectrum (no keyphasor: the phase of the shaft is not known).

`reference` is the site the demo pipelines were first tuned on (today's simulator, draw for
draw). Named profiles describe typical departures; `seed:N` draws a site at random, so that
an evaluation can use sites nobody tuned for; and either takes overrides, so that a site
engineer can describe their own without editing this file:
`field,noise=1.4,pressure=-0.4,field_capacity=18..24,dither=false`. `site(spec)` reads
every form.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Range = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Site:
    name: str = "reference"
    # Factory: the machines and the hall.
    speed: float = 1.0  # x nominal rpm (a slower line, geared drives)
    load: float = 0.0  # added to each machine's base load (0.6-0.9)
    noise: float = 1.0  # x broadband vibration
    one_x: float = 1.0  # x the healthy 1x (how well balanced the machines are)
    ambient: float = 0.0  # °C added to the hall's ambient
    heating: float = 1.0  # x temperature rise at full load
    resonance: Range | None = None  # Hz, bearing resonances (None: inside the reported band)
    keyphasor: bool = True  # 1x projected on the true shaft phase (else estimated)
    # Farm: soil and lines.
    field_capacity: Range = (30.0, 38.0)  # volumetric %, loam
    wilting: Range = (10.0, 14.0)
    pressure: float = 0.0  # bar added to the static line pressure
    flow: float = 1.0  # x emitter flow
    battery: Range = (3.55, 3.65)  # V when full (chemistry)
    battery_sag: Range = (0.6, 0.6)  # V lost by a failing battery at full severity
    # Sensors, both fleets.
    calibration: float = 0.0  # spread of gains and offsets (1: typical field sensors)
    drift: float = 0.0  # spread of slow drift per hour (1: typical)
    tempco: float = 0.0  # moisture bias with soil temperature (1: typical)
    jitter: float = 0.0  # s, timestamp noise
    disorder: float = 0.0  # share of readings delivered late (after a newer one) or twice
    spikes: Range | None = None  # spike size, x the legacy size (None: legacy sizes)
    dither: bool = False  # a stuck sensor's last digit still flickers


REFERENCE = Site()
# Sensors as they come from the field: every profile but `reference` has them.
FIELD = Site(
    "field",
    keyphasor=False,
    resonance=(350.0, 950.0),
    calibration=1.0,
    drift=1.0,
    tempco=1.0,
    jitter=0.05,
    spikes=(0.3, 1.5),
    dither=True,
)
PROFILES: dict[str, Site] = {
    s.name: s
    for s in (
        REFERENCE,
        FIELD,
        dataclasses.replace(
            FIELD, name="rough-hall", noise=1.5, one_x=1.5, ambient=8.0, heating=1.1
        ),
        dataclasses.replace(FIELD, name="slow-line", speed=0.6, load=-0.1),
        dataclasses.replace(
            FIELD,
            name="sandy",
            field_capacity=(16.0, 22.0),
            wilting=(5.0, 8.0),
            pressure=-0.3,
            flow=0.7,
            battery=(3.3, 3.5),
        ),
        dataclasses.replace(FIELD, name="low-pressure", pressure=-0.3, battery=(3.9, 4.15)),
    )
}
_SEEDED = re.compile(r"^seed:(\d+)$")


def drawn(seed: int) -> Site:
    """A site drawn at random: every knob somewhere in what real sites show."""
    rng = np.random.default_rng([seed, 0x5173])
    u = rng.uniform
    fc = u(16.0, 44.0)
    full = u(3.3, 4.15)
    lo = u(0.2, 0.6)
    return Site(
        f"seed:{seed}",
        speed=float(rng.choice([0.6, 0.8, 1.0, 1.0, 1.2])),
        load=u(-0.15, 0.1),
        noise=u(0.7, 1.6),
        one_x=u(0.6, 1.6),
        ambient=u(-8.0, 10.0),
        heating=u(0.8, 1.2),
        resonance=(350.0, 950.0),
        keyphasor=False,
        field_capacity=(fc - 4, fc + 4),
        wilting=(0.3 * fc - 1, 0.3 * fc + 1),
        pressure=u(-0.5, 0.4),
        flow=u(0.6, 1.3),
        battery=(full - 0.05, full + 0.05),
        battery_sag=(0.3, 0.7),
        calibration=u(0.5, 1.5),
        drift=u(0.5, 1.5),
        tempco=u(0.0, 1.5),
        jitter=u(0.0, 0.15),
        spikes=(lo, u(1.0, 1.8)),
        dither=bool(rng.random() < 0.5),
    )


def site(spec: str) -> Site:
    """A named profile or `seed:N`, then any `field=value` overrides, comma-separated; a
    clear error naming the choices otherwise."""
    name, *overrides = (part.strip() for part in spec.split(","))
    base = _base(name)
    if not overrides:
        return base
    changes = dict(_override(item) for item in overrides)
    return dataclasses.replace(base, name=",".join([name, *overrides]), **changes)


def _base(name: str) -> Site:
    if name in PROFILES:
        return PROFILES[name]
    match = _SEEDED.match(name)
    if match:
        return drawn(int(match[1]))
    close = difflib.get_close_matches(name, PROFILES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(
        f"unknown site {name!r}; expected one of {', '.join(PROFILES)} or seed:N{hint}"
    )


_FIELDS = {f.name: f for f in dataclasses.fields(Site) if f.name != "name"}
# Numbers that must lie in a range, and how an error says it; any finite number otherwise.
_LIMITS: dict[str, tuple[Callable[[float], bool], str]] = {
    **{
        f: (lambda v: v > 0, "a number above 0")
        for f in ("speed", "noise", "one_x", "heating", "flow")
    },
    "disorder": (lambda v: 0 <= v <= 0.5, "a share from 0 to 0.5"),
}


def overridden(spec: str) -> set[str]:
    """The fields a spec sets after its base."""
    return {item.partition("=")[0].strip() for item in spec.split(",")[1:]}


def _override(item: str) -> tuple[str, Any]:
    """One `field=value`: a number, a range `low..high` (or one number for both), true or
    false, `none` where the field allows it."""
    key, sep, text = (part.strip() for part in item.partition("="))
    if key not in _FIELDS:
        close = difflib.get_close_matches(key, _FIELDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown site field {key!r}{hint}; expected {', '.join(_FIELDS)}")
    if not sep or not text:
        raise ValueError(f"site field {key}: expected {key}=VALUE, got {item!r}")
    kind = str(_FIELDS[key].type)
    if text.lower() == "none" and "None" in kind:
        return key, None
    if kind == "bool":
        if text.lower() not in ("true", "false"):
            raise ValueError(f"site field {key}: expected true or false, got {text!r}")
        return key, text.lower() == "true"
    if "Range" in kind:
        low, _, high = text.partition("..")
        pair = (_finite(low), _finite(high or low))
        if pair[0] is None or pair[1] is None or pair[0] > pair[1]:
            expected = "a range LOW..HIGH (or one number)"
            raise ValueError(f"site field {key}: expected {expected}, got {text!r}")
        return key, pair
    within, expected = _LIMITS.get(key, (lambda _: True, "a number"))
    value = _finite(text)
    if value is None or not within(value):
        raise ValueError(f"site field {key}: expected {expected}, got {text!r}")
    return key, value


def _finite(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
