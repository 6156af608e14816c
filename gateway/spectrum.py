"""Band RMS of raw sample blocks: one real FFT over every block at once.

By Parseval the mean square of a block of N samples is sum(w_k |X_k|^2) / N^2 over its
rfft bins X_k, with w = 1 for the DC bin and (N even) the Nyquist bin, which have no
mirror image, and 2 for the others. Summing that over the bins of a band gives the band's
mean square, so a band's RMS is one matrix product with a weight column: the same sum a
sensor (`devices.factory`: `vibration_hf`) computes on the device.

A band [lo, hi) holds the bins with lo <= f < hi, and a band reaching half the sample rate
also holds the Nyquist bin: bands that tile 0 Hz to the Nyquist frequency count every bin
once, so their mean squares add up to the block's.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Band = tuple[float, float]


def band_rms(
    blocks: npt.ArrayLike, sample_rate: float, bands: Sequence[Sequence[float]]
) -> FloatArray:
    """RMS of each band of each block: shape (blocks, bands) from shape (blocks, samples)."""
    wide = np.asarray(blocks, dtype=np.float64)
    if wide.ndim != 2 or wide.shape[1] == 0:
        raise ValueError(f"blocks: expected a 2-D array of (blocks, samples), got {wide.shape}")
    if not sample_rate > 0:
        raise ValueError(f"sample rate: expected more than 0 Hz, got {sample_rate:g}")
    key = tuple((float(lo), float(hi)) for lo, hi in bands)
    for lo, hi in key:
        if not 0 <= lo < hi:
            raise ValueError(f"band [{lo:g}, {hi:g}]: expected 0 <= lo < hi")
    samples = wide.shape[1]
    spectrum = np.fft.rfft(wide, axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    result: FloatArray = np.sqrt(power @ _weights(samples, float(sample_rate), key)) / samples
    return result


@lru_cache(maxsize=64)
def _weights(samples: int, sample_rate: float, bands: tuple[Band, ...]) -> FloatArray:
    """Parseval weight of every rfft bin in every band, (bins, bands); read-only, shared."""
    freqs = np.fft.rfftfreq(samples, 1.0 / sample_rate)
    bin_weight = np.full(freqs.size, 2.0)
    bin_weight[0] = 1.0  # DC
    if samples % 2 == 0:
        bin_weight[-1] = 1.0  # the Nyquist bin
    nyquist = sample_rate / 2
    weights = np.zeros((freqs.size, len(bands)))
    for b, (lo, hi) in enumerate(bands):  # a few bands, once per block shape
        inside = (freqs >= lo) & ((freqs < hi) | (hi >= nyquist))
        weights[inside, b] = bin_weight[inside]
    weights.setflags(write=False)
    return weights
