"""`features`: a window that also reduces raw sample blocks to condition-monitoring features.

```yaml
- features:
    size: 10s
    lateness: 2s
    aggregates:                  # per-reading values, as in `window`
      temperature: [slope, range, delta]
    blocks:                      # fields holding a block of samples (a list of numbers)
      vibration_block:
        sample_rate: 2000        # Hz
        bands: [[0, 100], [100, 500], [500, 1000]]
        features: [rms, peak_to_peak, crest, kurtosis]
```

Windowing is `window`'s (size, hop, time, lateness, the `<id>.late` side stream), and so is
every field a window emits. Per block field it adds `<field>_<feature>` over all samples
of the key's blocks in the window (`crest`: peak over RMS; `kurtosis`: 3 for Gaussian
noise, higher for impacts such as a bearing defect) and `<field>_band_<lo>_<hi>` per band:
the square root of the mean over the window's blocks of each block's power in [lo, hi) Hz
(a band reaching half the sample rate includes the Nyquist bin).

Per reading the work is one C-level conversion of the block to doubles, copied into each
window it lands in. A block that is not a non-empty list of numbers rejects the whole
reading as `wrong_type`; a reading without the field counts, with no block. At a
boundary, the blocks of all closing windows are transformed together: one FFT per block
length, not per key.
"""

from __future__ import annotations

import reprlib
from array import array
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.aggregates import segment_aggregates
from gateway.operators.base import FieldName, Fields, RelPath, StepContext
from gateway.operators.window import (
    ClosingWindow,
    Window,
    WindowBuffer,
    WindowConfig,
    WrongTypeError,
)
from gateway.record import Record
from gateway.spectrum import band_rms

FloatArray = npt.NDArray[np.float64]
BlockFeature = Literal["rms", "peak_to_peak", "crest", "kurtosis"]
_AGGREGATE: dict[str, str] = {
    "rms": "rms",
    "peak_to_peak": "range",
    "crest": "crest",
    "kurtosis": "kurtosis",
}


class BlockSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sample_rate: float = Field(gt=0, description="Samples per second in a block, Hz.")
    bands: list[tuple[float, float]] = Field(
        default_factory=list,
        description="Frequency bands `[lo, hi]` in Hz, 0 <= lo < hi <= half the sample rate; "
        "each gives `<field>_band_<lo>_<hi>`, the RMS of the bins at lo <= f < hi (at half "
        "the sample rate, the Nyquist bin too).",
    )
    features: list[BlockFeature] = Field(
        default_factory=list,
        description="Features of all the window's samples, each giving `<field>_<feature>`.",
    )

    @model_validator(mode="after")
    def _bands_fit(self) -> BlockSpec:
        nyquist = self.sample_rate / 2
        for lo, hi in self.bands:
            if not 0 <= lo < hi <= nyquist:
                raise ValueError(
                    f"band [{lo:g}, {hi:g}]: expected 0 <= lo < hi <= {nyquist:g} "
                    f"(half the sample rate of {self.sample_rate:g} Hz)"
                )
        if not self.bands and not self.features:
            raise ValueError("expected at least one band or feature, got neither")
        named: dict[str, tuple[float, float]] = {}
        for band in self.bands:
            first = named.setdefault(_band_name(band), band)
            if first is not band:
                raise ValueError(
                    f"expected bands with distinct names, got [{first[0]:g}, {first[1]:g}] and "
                    f"[{band[0]:g}, {band[1]:g}], both `band_{_band_name(band)}`"
                )
        return self

    def outputs(self, field: str) -> list[str]:
        """The fields this block adds to a window, in the order they are computed."""
        return [f"{field}_{feature}" for feature in self.features] + [
            f"{field}_band_{_band_name(band)}" for band in self.bands
        ]


def _band_name(band: tuple[float, float]) -> str:
    return f"{band[0]:g}_{band[1]:g}"


class FeaturesConfig(WindowConfig):
    blocks: dict[FieldName, BlockSpec] = Field(
        default_factory=dict,
        description="Field holding a block of raw samples (a list of numbers) -> "
        "`sample_rate` (Hz), `bands` (`[lo, hi]` pairs in Hz, up to half the sample rate) "
        "and `features` (`rms`, `peak_to_peak`, `crest`, `kurtosis`); none: a `window`.",
    )

    @model_validator(mode="after")
    def _blocks_apart(self) -> FeaturesConfig:
        both = sorted(set(self.blocks) & set(self.aggregates))
        if both:
            raise ValueError(
                f"expected a field under either `aggregates` or `blocks`, got {both} in both"
            )
        return self

    def references(self) -> list[tuple[RelPath, frozenset[str]]]:
        return [*super().references(), (("blocks",), frozenset(self.blocks))]

    def produces(self, fields_in: Fields, key: tuple[str, ...]) -> Fields:
        added = [name for field, spec in self.blocks.items() for name in spec.outputs(field)]
        return super().produces(fields_in, key).with_(added)


class _Blocks:
    """One window's blocks, per block field: every sample, and the length of each block."""

    __slots__ = ("samples", "sizes")

    def __init__(self, n_fields: int) -> None:
        self.samples = [array("d") for _ in range(n_fields)]
        self.sizes = [array("q") for _ in range(n_fields)]


class Features(Window):
    name = "features"
    Config: ClassVar[type[WindowConfig]] = FeaturesConfig  # annotated: not a type alias

    def __init__(self, config: FeaturesConfig, ctx: StepContext) -> None:
        super().__init__(config, ctx)
        self._blocks = list(config.blocks.items())
        self._block_fields = list(config.blocks)

    def admit(self, record: Record) -> list[array[float] | None] | None:
        values = record.fields
        row = [values.get(name) for name in self._block_fields]
        if row.count(None) == len(row):
            return None
        return [
            None if block is None else _samples(name, block)
            for name, block in zip(self._block_fields, row, strict=True)
        ]

    def keep(self, buf: WindowBuffer, extra: list[array[float] | None]) -> None:
        blocks: _Blocks | None = buf.extra
        if blocks is None:
            blocks = buf.extra = _Blocks(len(self._block_fields))
        for i, samples in enumerate(extra):
            if samples is not None:
                blocks.samples[i].extend(samples)  # a memcpy
                blocks.sizes[i].append(len(samples))

    def replay_fields(self, extra: list[array[float] | None]) -> dict[str, Any]:
        return {
            name: samples.tolist()
            for name, samples in zip(self._block_fields, extra, strict=True)
            if samples is not None
        }

    def window_fields(self, windows: list[ClosingWindow], out: list[Record]) -> None:
        super().window_fields(windows, out)
        for i, (name, spec) in enumerate(self._blocks):
            present = [
                j for j, (_, _, buf) in enumerate(windows) if buf.extra and buf.extra.sizes[i]
            ]
            if not present:
                continue
            kept: list[_Blocks] = [windows[j][2].extra for j in present]
            samples = [blocks.samples[i] for blocks in kept]
            columns: dict[str, FloatArray] = {}
            if spec.features:
                results = segment_aggregates(samples, [_AGGREGATE[f] for f in spec.features])
                for feature in spec.features:
                    columns[f"{name}_{feature}"] = results[_AGGREGATE[feature]]
            if spec.bands:
                sizes = [blocks.sizes[i] for blocks in kept]
                rms = _window_band_rms(samples, sizes, spec.sample_rate, spec.bands)
                for b, band in enumerate(spec.bands):
                    columns[f"{name}_band_{_band_name(band)}"] = rms[:, b]
            for label, column in columns.items():
                for j, value in zip(present, column.tolist(), strict=True):
                    out[j].fields[label] = value


def _window_band_rms(
    samples: list[array[float]],
    sizes: list[array[int]],
    sample_rate: float,
    bands: list[tuple[float, float]],
) -> FloatArray:
    """Per window, sqrt of the mean over its blocks of each block's band power, (windows, bands).

    Blocks of every window are grouped by length: one `band_rms` (one FFT) per length.
    """
    flat = np.concatenate([np.frombuffer(s, np.float64) for s in samples])
    size = np.concatenate([np.frombuffer(z, np.int64) for z in sizes])
    per_window = np.fromiter((len(z) for z in sizes), np.intp, count=len(sizes))
    owner = np.repeat(np.arange(len(sizes)), per_window)
    power = np.zeros((len(sizes), len(bands)))
    lengths = np.unique(size)
    if lengths.size == 1:  # fixed-size blocks: a reshape, no gather
        np.add.at(power, owner, band_rms(flat.reshape(-1, lengths[0]), sample_rate, bands) ** 2)
    else:
        offsets = np.cumsum(size) - size
        for n in lengths.tolist():  # loop over block lengths, not windows or keys
            which = np.flatnonzero(size == n)
            rows = flat[offsets[which, None] + np.arange(n)]
            np.add.at(power, owner[which], band_rms(rows, sample_rate, bands) ** 2)
    result: FloatArray = np.sqrt(power / per_window[:, None])
    return result


def _samples(name: str, block: Any) -> array[float]:
    """The block as C doubles, converted in one C loop; `WrongTypeError` if it is no block."""
    if block.__class__ is list and block:
        samples = array("d")
        try:
            samples.fromlist(block)  # ~2.5x faster than extend(); all or nothing
        except (TypeError, OverflowError):
            pass
        else:
            return samples
    raise WrongTypeError(f"field '{name}': expected a list of numbers, got {_describe(block)}")


def _describe(block: Any) -> str:
    """What was there instead of a block, briefly (a block has hundreds of samples)."""
    if block.__class__ is not list:
        return reprlib.repr(block)
    if not block:
        return "an empty list"
    probe = array("d")
    for i, item in enumerate(block):
        try:
            probe.append(item)
        except (TypeError, OverflowError):
            return f"{reprlib.repr(item)} at index {i}"
    return reprlib.repr(block)
