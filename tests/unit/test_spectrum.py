"""Tests for gateway.spectrum: band RMS against sinusoids, Parseval and the device's own sum."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

# Submodules, not `devices`: with tests/ on sys.path, `devices` alone is tests/devices.
from devices.clock import SimClock
from devices.factory import FactoryConfig, FactoryFleet
from devices.faults import FaultSpec
from gateway import spectrum
from gateway.spectrum import band_rms

RATE = 2000.0
N = 256  # 7.8125 Hz bins
BANDS = [(0.0, 100.0), (100.0, 500.0), (500.0, 1000.0)]


def _tone(amplitude: float, freq: float, phase: float = 0.3, n: int = N) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq * np.arange(n) / RATE + phase)


def test_a_sinusoid_is_amplitude_over_root_two_in_its_band_only() -> None:
    blocks = np.array(
        [_tone(3.0, 40 * RATE / N), _tone(0.5, 12 * RATE / N), _tone(2.0, 100 * RATE / N)]
    )
    got = band_rms(blocks, RATE, BANDS)
    assert got.shape == (3, 3)
    want = np.zeros((3, 3))
    want[0, 1], want[1, 0], want[2, 2] = 3.0, 0.5, 2.0
    np.testing.assert_allclose(got, want / math.sqrt(2), atol=1e-12)


def test_dc_and_nyquist_bins_count_once() -> None:
    nyquist = np.where(np.arange(N) % 2 == 0, 1.5, -1.5)  # cos(pi k): RMS 1.5
    got = band_rms(np.array([np.full(N, -2.0), nyquist]), RATE, BANDS)
    np.testing.assert_allclose(got, [[2.0, 0.0, 0.0], [0.0, 0.0, 1.5]], atol=1e-12)


def test_a_bin_on_a_shared_edge_belongs_to_the_upper_band() -> None:
    got = band_rms(_tone(1.0, 500.0)[None, :], RATE, BANDS)  # bin 64 is exactly 500 Hz
    np.testing.assert_allclose(got, [[0.0, 0.0, 1 / math.sqrt(2)]], atol=1e-12)


@pytest.mark.parametrize("n", [N, 255])  # with and without a Nyquist bin
def test_bands_tiling_the_spectrum_add_up_to_the_mean_square(n: int) -> None:
    blocks = np.random.default_rng(3).normal(0.5, 2.0, size=(40, n))
    got = band_rms(blocks, RATE, BANDS)
    np.testing.assert_allclose(np.sum(got**2, axis=1), np.mean(blocks**2, axis=1), rtol=1e-12)


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(1, 300),
    rate=st.floats(1.0, 1e5),
    cuts=st.lists(st.floats(0.001, 0.999), max_size=5),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_parseval_for_any_tiling(
    n: int, rate: float, cuts: list[float], seed: int
) -> None:
    edges = [0.0, *sorted({c * rate / 2 for c in cuts}), rate / 2]
    bands = list(itertools.pairwise(edges))
    blocks = np.random.default_rng(seed).uniform(-5.0, 5.0, size=(3, n))
    got = band_rms(blocks, rate, bands)
    np.testing.assert_allclose(np.sum(got**2, axis=1), np.mean(blocks**2, axis=1), rtol=1e-9)


def test_matches_the_devices_high_band_rms() -> None:
    """The factory's `vibration_hf` is the 500-1000 Hz RMS of the block it sends (raw)."""
    faults = [FaultSpec("bearing", "m-02", 0.0), FaultSpec("imbalance", "m-03", 0.0)]
    fleet = FactoryFleet(FactoryConfig(count=6, raw=True), 7, SimClock(1_700_000_000.0), faults)
    for t in range(40):
        messages = fleet.step(float(t))
        blocks = np.array([payload["vibration_block"] for _, payload in messages])
        hf = np.array([payload["vibration_hf"] for _, payload in messages])
        got = band_rms(blocks, messages[0][1]["sample_rate"], [(500.0, 1000.0)])[:, 0]
        # Both the samples and vibration_hf are sent to 3 decimals.
        np.testing.assert_allclose(got, hf, atol=1e-3)
    assert hf[1] > 5 * max(hf[0], hf[2])  # the bearing fault shows in this band


def test_float32_blocks_and_no_bands() -> None:
    block = _tone(1.0, 40 * RATE / N).astype(np.float32)[None, :]
    got = band_rms(block, RATE, [(200.0, 400.0)])
    assert got.dtype == np.float64
    assert got[0, 0] == pytest.approx(1 / math.sqrt(2), rel=1e-6)
    assert band_rms(block, RATE, []).shape == (1, 0)


def test_weights_are_cached_per_shape_rate_and_bands() -> None:
    bands = tuple(BANDS)
    first = spectrum._weights(N, RATE, bands)
    assert spectrum._weights(N, RATE, bands) is first
    assert spectrum._weights(N + 1, RATE, bands) is not first
    assert not first.flags.writeable  # shared between calls: nobody may change it


@pytest.mark.parametrize(
    ("blocks", "rate", "bands", "message"),
    [
        (np.zeros(N), RATE, BANDS, "2-D"),
        (np.zeros((2, 0)), RATE, BANDS, "2-D"),
        (np.zeros((2, N)), 0.0, BANDS, "sample rate"),
        (np.zeros((2, N)), RATE, [(500.0, 100.0)], r"band \[500, 100\]"),
        (np.zeros((2, N)), RATE, [(-1.0, 100.0)], r"band \[-1, 100\]"),
    ],
)
def test_bad_arguments_rejected(
    blocks: np.ndarray, rate: float, bands: list[tuple[float, float]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        band_rms(blocks, rate, bands)
