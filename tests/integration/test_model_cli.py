"""`fogline model` as users run it: info, labelled data from the simulator, calibration."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOGLINE = [sys.executable, "-m", "fogline.cli"]
EDGE = ROOT / "models" / "farm-irrigation.tflite"
CLOUD = ROOT / "models" / "farm-irrigation-cloud.tflite"


def fogline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FOGLINE, *args], check=False, capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_info_names_the_inputs_in_order_and_the_threshold() -> None:
    result = fogline("model", "info", str(EDGE))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("farm-irrigation version ")
    assert "(int8 inside, " in lines[0]
    assert "  labels     normal, leak, dry_soil" in lines
    assert "    0  moisture_mean_dev" in lines
    assert any(line.startswith("  threshold  0.") for line in lines)


def test_dataset_then_calibrate_prints_the_curve_and_a_threshold(tmp_path: Path) -> None:
    data = tmp_path / "farm.csv"
    made = fogline("model", "dataset", "farm", "--seed", "11", "--hours", "1.5", "--out", str(data))
    assert made.returncode == 0, made.stderr
    assert "simulating 1.5 h of the farm fleet (seed 11, site seed:3011, " in made.stderr
    with data.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) > 1000
    assert {r["label"] for r in rows} == {"normal", "leak", "dry_soil"}
    result = fogline("model", "calibrate", str(EDGE), "--data", str(data), "--cloud", str(CLOUD))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"{len(rows)} windows from {data}; edge alone " in out
    assert "threshold   local  edge acc (local)  joint acc" in out
    assert out.count("<- chosen") == 1
    assert "escalate_above: " in out.splitlines()[-1]
    assert "at the edge with" in out.splitlines()[-1]


def test_calibrate_names_what_is_wrong_with_the_data(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("moisture_mean,label\n20,normal\n")
    result = fogline("model", "calibrate", str(EDGE), "--data", str(bad))
    assert result.returncode == 1
    assert f"fogline model calibrate: {bad}: no column moisture_mean_dev, moisture_slope" in (
        result.stderr
    )
    header = "moisture_mean_dev,moisture_slope,moisture_range,flow_mean,flow_max,pressure_mean_dev,pressure_slope,valve_mean,label"
    bad.write_text(f"{header}\n20,0,1,0,0,2.5,0,0,normal\n20,0,1,0,0,2.5,0,0,flooded\n")
    result = fogline("model", "calibrate", str(EDGE), "--data", str(bad))
    assert result.returncode == 1
    assert f"{bad}:3: label 'flooded' is not one of normal, leak, dry_soil" in result.stderr
    result = fogline("model", "info", str(tmp_path / "missing.tflite"))
    assert result.returncode == 1
    assert "cannot read the model: No such file or directory" in result.stderr
    result = fogline(
        "model", "calibrate", str(EDGE), "--data", str(bad), "--cloud",
        str(ROOT / "models" / "factory-vibration-cloud.tflite"),
    )  # fmt: skip
    assert result.returncode == 1
    assert "the cloud model's labels ['normal', 'imbalance', 'bearing'] differ" in result.stderr
