"""The evaluation matrix at CI scale: `bench/detection.py --quick` runs every condition.

This checks that the matrix runs end to end and reports what it should; the figures
themselves are recorded in docs/benchmarks.md, not asserted here.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from devices.evaluate import DEMOS
from devices.matrix import CONDITIONS, Condition, on_site, percentile_interval, rate_interval
from devices.sites import REFERENCE

ROOT = Path(__file__).resolve().parents[2]


def cells_of(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def test_conditions_change_what_they_say() -> None:
    by_name = {c.name: c for c in CONDITIONS}
    assert by_name["nominal"].site(101) == REFERENCE
    assert by_name["sites"].site(101) != by_name["sites"].site(102)
    assert by_name["sites"].site(101).name == "seed:1101"
    assert by_name["sites"].site(101).disorder == 0.05
    assert not by_name["faint"].judged
    assert Condition("x", "y").site(3) == REFERENCE
    mine = on_site("rough-hall,pressure=-0.4")  # one site for every seed, judged as `sites`
    assert mine.site(101) == mine.site(102)
    assert (mine.site(101).pressure, mine.site(101).noise, mine.site(101).disorder) == (
        -0.4, 1.5, 0.05
    )  # fmt: skip
    assert (mine.strength, mine.per_device, mine.judged) == ((0.5, 1.0), 2, True)
    assert on_site("field,disorder=0.2").site(1).disorder == 0.2


def test_rate_interval_holds_the_estimate_narrows_with_data_and_doubts_small_samples() -> None:
    lo, hi = rate_interval(18, 20)
    assert lo <= 0.9 <= hi
    wide = hi - lo
    lo, hi = rate_interval(180, 200)
    assert lo <= 0.9 <= hi
    assert hi - lo < wide / 2
    lo, hi = rate_interval(5, 5)  # five out of five is not certainty
    assert hi == 1.0
    assert 0.5 < lo < 0.6


def test_ttd_interval_is_a_bootstrap_around_the_percentile() -> None:
    rng = np.random.default_rng(1)
    values = [float(x) for x in range(1, 101)]
    lo, hi = percentile_interval(values, 95, rng)
    assert lo <= np.percentile(values, 95) <= hi
    assert all(math.isnan(x) for x in percentile_interval([], 95, rng))  # nothing to tell


@pytest.mark.timeout(400)
def test_quick_matrix_reports_every_condition_kind_and_class() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "detection.py"), "--quick", "--no-docs"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=380,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "simulated fleets" in out
    for name, demo in DEMOS.items():
        section = out.split(f"### `pipelines/{name}.yaml`", 1)[1].split("### `pipelines/", 1)[0]
        lines = section.splitlines()
        header = next(line for line in lines if line.startswith("| Fault | nominal"))
        assert cells_of(header)[1:] == [c.name for c in CONDITIONS]
        for kind in demo.detectors:
            row = next(line for line in lines if line.startswith(f"| {kind} | "))
            cells = cells_of(row)[1:]
            assert len(cells) == len(CONDITIONS), row
            for cell in cells:
                numbers = re.findall(r"\d+\.\d+", cell)
                assert all(float(x) >= 0.0 for x in numbers), row
                recall = float(numbers[0]) if numbers else 0.0
                assert 0.0 <= recall <= 1.0, row
        for condition in CONDITIONS:
            assert f"#### {name}, {condition.name}:" in section
        assert "Majority precision" in section


def test_a_site_described_on_the_command_line_is_judged_in_a_column_of_its_own() -> None:
    def detection(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(ROOT / "bench" / "detection.py"), "--quick", *args],
            capture_output=True, text=True, cwd=ROOT, check=False, timeout=300,
        )  # fmt: skip

    docs = (ROOT / "docs" / "benchmarks.md").read_bytes()
    result = detection("--pipeline", "farm", "--conditions", "nominal", "--site", "sandy,flow=0.5")
    assert result.returncode == 0, result.stderr[-2000:]
    header = next(line for line in result.stdout.splitlines() if line.startswith("| Fault |"))
    assert cells_of(header)[1:] == ["nominal", "site sandy,flow=0.5"]
    assert "#### farm, site sandy,flow=0.5: the site `sandy,flow=0.5`" in result.stdout
    assert (ROOT / "docs" / "benchmarks.md").read_bytes() == docs  # not the matrix: left alone
    bad = detection("--site", "sandy,nois=1")
    assert bad.returncode == 2
    assert "--site sandy,nois=1: unknown site field 'nois' (did you mean 'noise'?)" in bad.stderr
