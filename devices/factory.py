"""Smart factory: rotating machines whose vibration comes from a synthesized waveform.

Per tick and machine, a block of `block` samples at `sample_rate` (256 at 2 kHz: 128 ms) of
vibration velocity in mm/s is synthesized for all machines at once, shape (machines,
samples): the 1x running-speed sinusoid (imbalance), 2x and 3x harmonics (misalignment,
looseness), broadband noise, and, for a bad bearing, decaying bursts at a structural
resonance in the high band, one per ball pass (a defect frequency of 3 to 5.5 times shaft
speed), amplitude-modulated by the shaft rotation. The message carries features of the
block, as an edge vibration sensor would:

  vibration       RMS velocity, mm/s (what ISO 10816 zones and the pipeline use)
  vibration_peak  largest |velocity| in the block, mm/s
  vibration_hf    RMS of the 500-1000 Hz band (from the spectrum), mm/s: bearings show here
  vibration_1x    RMS of the running-speed component (a windowed projection), mm/s

and, with `raw`, the block itself (`vibration_block`, `sample_rate`). Temperature follows a
first-order lag toward ambient plus a load-dependent rise (time constant 70-110 s);
current follows load; rpm sags with load (slip) and spins down on a stop command.

Faults: `imbalance` (1x grows 4-fold), `bearing` (bursts of up to ~10 mm/s peak in the high
band), `overheating` (the temperature target rises by 90 °C: 95 °C is crossed about a minute
after onset), and the sensor faults `stuck`, `dropout`, `spikes`.

    factory/<line>/<machine>/telemetry
    {"ts": 1700000000.0, "vibration": 2.1, "vibration_peak": 4.4, "vibration_hf": 0.21,
     "vibration_1x": 1.3, "temperature": 58.4, "current": 14.2, "rpm": 1466.3}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from devices.clock import SimClock
from devices.faults import SENSOR_FAULTS, FaultKind, FaultSpec, FloatArray, Freezer
from devices.fleet import Fleet, Message, Sensor
from devices.sites import REFERENCE, Site

FIELDS = (
    "vibration",
    "vibration_peak",
    "vibration_hf",
    "vibration_1x",
    "temperature",
    "current",
    "rpm",
)
DECIMALS = (3, 3, 3, 3, 2, 2, 1)
FAULTS = {
    k.name: k
    for k in (
        FaultKind("imbalance", 30.0, "the 1x running-speed vibration grows 4-fold"),
        FaultKind("bearing", 30.0, "high-band bursts at the bearing defect frequency"),
        FaultKind("overheating", 5.0, "the temperature target rises 90 °C (past 95 °C in ~1 min)"),
        *SENSOR_FAULTS,
    )
}
SPIKE_PROBABILITY = 0.1
OVERHEAT_RISE = 90.0  # °C added to the temperature target at full severity
IMBALANCE_GAIN = 3.0  # 1x amplitude x (1 + gain * severity)
SPIN_TAU = 2.0  # s, rpm lag on stop/start
LOAD_TAU = 120.0  # s, correlation time of the load's random part
NOISE_BANK = 1 << 16
TWO_PI = np.float32(2 * math.pi)
Float32Array = NDArray[np.float32]
IntArray = NDArray[np.int64]


def _col(values: FloatArray) -> Float32Array:
    """Per-machine values as a float32 column, to scale (machines, samples) arrays."""
    return values.astype(np.float32)[:, None]


@dataclass(frozen=True, slots=True)
class FactoryConfig:
    count: int = 10
    per_line: int = 10
    sample_rate: float = 2000.0
    block: int = 256
    raw: bool = False
    hf_band: tuple[float, float] = (500.0, 1000.0)

    def __post_init__(self) -> None:
        if self.count < 1 or self.per_line < 1:
            raise ValueError(f"expected at least 1 machine (and per line), got {self.count}")
        if self.block < 32:
            raise ValueError(f"block: expected at least 32 samples, got {self.block}")
        low = self.hf_band[0]
        if self.sample_rate <= 2 * low:
            raise ValueError(
                f"sample rate: expected more than {2 * low:g} Hz (twice the {low:g} Hz start of "
                f"the high band), got {self.sample_rate:g}"
            )


def machine_names(config: FactoryConfig) -> tuple[list[str], list[str]]:
    """(machines, lines): `m-01`.. (zero-padded to the count's width), `per_line` a line."""
    width = max(2, len(str(config.count)))
    machines = [f"m-{i + 1:0{width}d}" for i in range(config.count)]
    lines = [f"line-{i // config.per_line + 1}" for i in range(config.count)]
    return machines, lines


class FactoryFleet(Fleet):
    name = "factory"
    KEY = ("line", "machine")
    FAULTS: ClassVar = FAULTS
    UNITS: ClassVar = {
        "vibration": "mm/s",
        "vibration_peak": "mm/s",
        "vibration_hf": "mm/s",
        "vibration_1x": "mm/s",
        "temperature": "Cel",
        "current": "A",
        "rpm": "1/min",
    }
    COMMAND_FILTER = "factory/+/+/actions"
    # An accelerometer's sensitivity is within ~5 %; a PT100 in a pocket reads a degree or
    # two off and creeps; a clamp-on current sensor within 2 %.
    _VIBRATION = Sensor(gain=0.05)
    SENSORS = (
        *(_VIBRATION,) * 4,
        Sensor(gain=0.01, offset=1.5, drift=0.3),
        Sensor(gain=0.02),
        Sensor(),
    )

    def __init__(
        self,
        config: FactoryConfig,
        seed: int,
        clock: SimClock,
        faults: Sequence[FaultSpec] = (),
        site: Site = REFERENCE,
    ) -> None:
        machines, lines = machine_names(config)
        super().__init__(machines, lines, seed, clock, faults, site)
        self.config = config
        n, rng = self.size, self.rng
        # Per machine, drawn once: what makes m-03 differ from m-04.
        self.nominal = rng.choice([985.0, 1480.0, 1480.0, 2960.0], n) * rng.uniform(0.995, 1.005, n)
        self.slip = rng.uniform(0.02, 0.04, n)
        self.a1 = rng.uniform(1.2, 2.2, n)  # 1x peak velocity, mm/s
        self.a2 = self.a1 * rng.uniform(0.25, 0.5, n)
        self.a3 = self.a1 * rng.uniform(0.1, 0.2, n)
        self.phase = rng.uniform(0, 2 * math.pi, (3, n))
        self.noise = rng.uniform(0.25, 0.4, n)  # broadband, mm/s rms at full speed
        self.bpf_ratio = rng.uniform(3.0, 5.5, n)  # ball-pass frequency / shaft frequency
        nyquist = config.sample_rate / 2
        low, high = config.hf_band[0], min(config.hf_band[1], nyquist)
        self.resonance = low + rng.uniform(0.2, 0.8, n) * (high - low)
        if site.resonance is not None:  # anywhere, the reported band or not
            top = min(site.resonance[1], 0.95 * nyquist)
            self.resonance = self.site_rng.uniform(site.resonance[0], top, n)
        self.decay = rng.uniform(0.0015, 0.003, n)  # s, ring-down of one impact
        self.bearing_peak = rng.uniform(9.0, 12.0, n)  # mm/s at full severity
        self.ambient = rng.uniform(20.0, 28.0, n)
        self.heating = rng.uniform(40.0, 50.0, n)  # °C above ambient at full load
        self.thermal_tau = rng.uniform(70.0, 110.0, n)
        self.rated_current = rng.uniform(8.0, 30.0, n)
        self.load_base = rng.uniform(0.6, 0.9, n)
        self.load_swing = rng.uniform(0.05, 0.12, n)
        self.load_period = rng.uniform(600.0, 1800.0, n)
        self.load_phase = rng.uniform(0, 2 * math.pi, n)
        # The site: its speeds, loads, balancing, hall and cooling.
        self.nominal *= site.speed
        self.load_base = np.clip(self.load_base + site.load, 0.3, 0.95)
        self.noise *= site.noise
        self.a1 *= site.one_x
        self.ambient += site.ambient
        self.heating *= site.heating
        # State.
        self.running = np.ones(n, dtype=np.bool_)
        self.rpm = np.zeros(n)
        self.temperature = np.zeros(n)
        self._load_noise = np.zeros(n)
        self._tau = (np.arange(config.block) / config.sample_rate).astype(np.float32)
        self._window = np.hanning(config.block).astype(np.float32)
        bank = rng.standard_normal(NOISE_BANK, dtype=np.float32)
        self._noise_bank = sliding_window_view(bank, config.block)
        freqs = np.fft.rfftfreq(config.block, 1 / config.sample_rate)
        weights = np.where((freqs >= low) & (freqs <= high), 2.0, 0.0)
        if config.block % 2 == 0:
            weights[-1] /= 2  # the Nyquist bin has no mirror image
        self._band_weights = weights
        self._block_freezer = Freezer()
        self.last_block: Float32Array = np.zeros((n, config.block), dtype=np.float32)

    def topic(self, group: str, device: str) -> str:
        return f"factory/{group}/{device}/telemetry"

    def command_topic(self, group: str, device: str) -> str:
        return f"factory/{group}/{device}/actions"

    def _apply(self, index: int, command: str, body: dict[str, Any]) -> bool:
        if command in {"stop", "start"}:
            self.running[index] = command == "start"
            return True
        return False

    def _step(self, t: float, t_prev: float, dt: float) -> list[Message]:
        n, rng, cfg, sched = self.size, self.rng, self.config, self.schedule
        # The same draws every step, faults or not (see devices.fleet).
        z_load, z_temp, z_current, z_rpm = rng.standard_normal((4, n))
        noise_at = rng.integers(0, NOISE_BANK - cfg.block, n)
        spike_u, spike_mag = rng.random((2, n))
        spike_field = rng.integers(0, 3, n)

        imbalance = sched.severity("imbalance", t)
        bearing = sched.severity("bearing", t)
        overheating = sched.severity("overheating", t)

        # Load: a slow production cycle plus an Ornstein-Uhlenbeck wander (exact for any dt).
        keep = math.exp(-dt / LOAD_TAU)
        self._load_noise = self._load_noise * keep + 0.03 * math.sqrt(1 - keep**2) * z_load
        cycle = np.sin(2 * math.pi * t / self.load_period + self.load_phase)
        load = np.clip(self.load_base + self.load_swing * cycle + self._load_noise, 0.2, 1.0)

        target_rpm = np.where(self.running, self.nominal * (1 - self.slip * load), 0.0)
        first = math.isinf(t_prev)
        self.rpm = (
            target_rpm
            if first
            else self.rpm + (target_rpm - self.rpm) * (1 - math.exp(-dt / SPIN_TAU))
        )
        self.rpm = np.where(~self.running & (self.rpm < 1.0), 0.0, self.rpm)
        speed = self.rpm / self.nominal

        rise = self.heating * load + OVERHEAT_RISE * overheating + 6 * bearing + 3 * imbalance
        target_temp = self.ambient + rise * speed
        if first:
            self.temperature = target_temp.copy()
        else:
            self.temperature += (target_temp - self.temperature) * -np.expm1(-dt / self.thermal_tau)

        current = self.rated_current * (0.3 + 0.7 * load) * speed
        current *= 1 + 0.05 * imbalance + 0.04 * bearing + 0.1 * overheating
        current = np.maximum(current + 0.05 * z_current, 0.0)
        # A tachometer reads no less than 0: spinning down, noise took it to -0.2 rpm.
        rpm = np.where(self.rpm > 0, np.maximum(self.rpm + 0.5 * z_rpm, 0.0), 0.0)
        temperature = self.temperature + 0.15 * z_temp

        block, s1, c1 = self._vibration(t, speed, imbalance, bearing, noise_at)

        # Sensor spikes: a gain glitch on the vibration channel, or a jump in temperature or
        # current, in one reading of ten while the fault lasts.
        size = self._spike_size()
        spiking = sched.active("spikes", t) & (spike_u < SPIKE_PROBABILITY)
        if spiking.any():
            gain = np.where(spiking & (spike_field == 0), 1 + (3 + 4 * spike_mag) * size, 1.0)
            block *= gain[:, None]
            temperature = temperature + np.where(
                spiking & (spike_field == 1), (30 + 20 * spike_mag) * size, 0
            )
            current = current * np.where(
                spiking & (spike_field == 2), 1 + (1.5 + spike_mag) * size, 1.0
            )

        features = self._features(block, s1, c1, self.rpm)
        values = self._sensors(t, np.column_stack([*features, temperature, current, rpm]))
        values, emit = self._sensor_faults(t, values, DECIMALS)
        if cfg.raw:
            block = self._block_freezer.apply(self.schedule.active("stuck", t), block)
        self.last_block = block
        out = self._messages(t, emit, FIELDS, values, DECIMALS)
        if cfg.raw:
            rows = np.flatnonzero(emit)
            blocks = np.round(block[rows], 3).tolist()
            for (_, payload), samples in zip(out, blocks, strict=True):
                payload["sample_rate"] = cfg.sample_rate
                payload["vibration_block"] = samples
        return out

    def _one_x_from_spectrum(self, weighted: Float32Array, rpm: FloatArray) -> FloatArray:
        """1x RMS as a sensor without a keyphasor estimates it: the largest Hann-windowed
        bin within one bin of running speed (scalloping, leakage from 2x and all)."""
        size = weighted.shape[1]
        spectrum = np.abs(np.fft.rfft(weighted.astype(np.float64), axis=1))
        centre = np.rint(rpm / 60.0 / (self.config.sample_rate / size)).astype(np.int64)
        centre = np.clip(centre, 1, spectrum.shape[1] - 2)
        near = np.take_along_axis(spectrum, centre[:, None] + np.array([[-1, 0, 1]]), axis=1)
        one_x: FloatArray = near.max(axis=1) * 2 / float(self._window.sum()) / math.sqrt(2)
        return one_x

    def _cycles(self, freq: FloatArray, t: float) -> Float32Array:
        """Phase in cycles over the block, (machines, samples), reduced before float32.

        float32 sin/cos run vectorized and are ~50x faster here than float64, but only on
        small arguments: the phase at `t` is reduced modulo one cycle in float64 first.
        """
        start = np.mod(freq * t, 1.0).astype(np.float32)
        return start[:, None] + freq.astype(np.float32)[:, None] * self._tau[None, :]

    def _vibration(
        self,
        t: float,
        speed: FloatArray,
        imbalance: FloatArray,
        bearing: FloatArray,
        noise_at: IntArray,
    ) -> tuple[Float32Array, Float32Array, Float32Array]:
        """The (machines, samples) velocity block, plus sin/cos of the 1x phase."""
        shaft = self.rpm / 60.0
        phase = TWO_PI * self._cycles(shaft, t) + _col(self.phase[0])
        s1, c1 = np.sin(phase), np.cos(phase)
        # Harmonics from the 1x phase by angle identities: products, not more sin() calls.
        s2, c2 = 2 * s1 * c1, c1 * c1 - s1 * s1
        s3, c3 = s1 * (3 - 4 * s1 * s1), c1 * (4 * c1 * c1 - 3)
        sq = speed * speed  # centrifugal forces grow with speed squared
        a1 = self.a1 * (1 + IMBALANCE_GAIN * imbalance) * sq
        p2, p3 = self.phase[1], self.phase[2]
        block = _col(a1) * s1
        block += _col(self.a2 * sq * np.cos(p2)) * s2 + _col(self.a2 * sq * np.sin(p2)) * c2
        block += _col(self.a3 * sq * np.cos(p3)) * s3 + _col(self.a3 * sq * np.sin(p3)) * c3
        # Broadband noise: machine (grows with speed) plus the sensor's floor. Windows into
        # a fixed bank of normals at random offsets: one integer draw per machine, not 256.
        block += _col(self.noise * speed + 0.03) * self._noise_bank[noise_at]
        sick = np.flatnonzero((bearing > 0) & (self.rpm > 1.0))
        if sick.size:
            # One impact per ball pass rings the structure at its resonance and decays.
            defect = self.bpf_ratio[sick] * shaft[sick]
            since = np.mod(self._cycles(defect, t), 1.0) / _col(defect)
            ring = np.exp(-since / _col(self.decay[sick]))
            carrier = np.sin(TWO_PI * self._cycles(self.resonance[sick], t))
            swing = 1 + 0.5 * c1[sick]  # load zone passing: amplitude modulation at 1x
            amp = self.bearing_peak[sick] * bearing[sick] * speed[sick]
            block[sick] += _col(amp) * ring * carrier * swing
        return block, s1, c1

    def _features(
        self, block: Float32Array, s1: Float32Array, c1: Float32Array, rpm: FloatArray
    ) -> list[FloatArray]:
        """RMS, peak, high-band RMS (Parseval on the rfft), 1x RMS (Hann projection)."""
        size = block.shape[1]
        wide = block.astype(np.float64)
        rms = np.sqrt(np.mean(wide * wide, axis=1))
        peak = np.max(np.abs(wide), axis=1)
        spectrum = np.fft.rfft(wide, axis=1)
        power = spectrum.real**2 + spectrum.imag**2
        hf = np.sqrt(power @ self._band_weights) / size
        weighted = block * self._window
        ps = np.sum(weighted * s1, axis=1, dtype=np.float64)
        pc = np.sum(weighted * c1, axis=1, dtype=np.float64)
        one_x = np.sqrt(ps * ps + pc * pc) * 2 / float(self._window.sum()) / math.sqrt(2)
        if not self.site.keyphasor:
            one_x = self._one_x_from_spectrum(weighted, rpm)
        one_x[rpm < 1.0] = 0.0
        return [rms, peak, hf, one_x]
