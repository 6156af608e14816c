"""`fogline pipeline test`: cases run in simulated time; every difference is located."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.pipeline_tests import cases_for, run_file

ROOT = Path(__file__).resolve().parents[2]

PIPELINE = """\
name: hot
key: [machine]
sources:
  - mqtt: {topics: ["plant/{machine}/t"]}
steps:
  - validate:
      id: readings
      fields: {temperature: {type: number}}
  - window: {id: windows, size: 10s, aggregates: {temperature: [max, mean]}}
  - alert:
      id: alerts
      from: readings
      rules:
        - name: hot
          raise: temperature > ${HOT:-90}
          clear: temperature < 80
outputs:
  - uplink: {from: windows, kind: digest}
  - uplink: {from: alerts, kind: alert}
  - action: {from: alerts, when: state == "raised", topic: "plant/{machine}/stop"}
"""


def write(tmp_path: Path, cases: str) -> Path:
    (tmp_path / "hot.yaml").write_text(PIPELINE)
    test = tmp_path / "hot.test.yaml"
    test.write_text(cases)
    return test


@pytest.mark.parametrize("pipeline", sorted((ROOT / "pipelines").glob("*.test.yaml")))
def test_the_demo_pipelines_pass_their_own_tests(pipeline: Path) -> None:
    outcomes, problems = run_file(pipeline)
    assert problems == []
    assert outcomes, "no cases"
    assert {o.name: [str(p) for p in o.problems] for o in outcomes} == {
        o.name: [] for o in outcomes
    }


def test_a_passing_case_with_windows_env_and_rejects(tmp_path: Path) -> None:
    test = write(tmp_path, """\
env: {HOT: "95"}
tests:
  - name: 92 is not hot here; 96 is
    input:
      - {at: 0s, topic: plant/m1/t, payload: {temperature: 92}}
      - {at: 3s, topic: plant/m1/t, payload: {temperature: 96}}
      - {at: 4s, topic: plant/m1/t, payload: {temperature: warm}}
    expect:
      - {output: uplink alert, at: 3s, fields: {rule: hot, state: raised, machine: m1}}
      - {output: action plant/m1/stop, at: 3s}
      - {output: uplink digest, at: 10s, fields: {temperature_max: 96, temperature_mean: 94}}
    absent:
      - {output: uplink alert, at: 0s}
    rejects: {readings/wrong_type: 1}
""")  # fmt: skip
    outcomes, problems = run_file(test)
    assert problems == []
    assert [(o.name, o.problems) for o in outcomes] == [("92 is not hot here; 96 is", [])]


def test_every_difference_is_reported_where_the_expectation_stands(tmp_path: Path) -> None:
    test = write(tmp_path, """\
tests:
  - name: wrong on purpose
    input:
      - {at: 0s, topic: plant/m1/t, payload: {temperature: 92}}
    expect:
      - {output: uplink alert, fields: {state: cleared}}
      - {output: action plant/m2/stop}
    absent:
      - {output: uplink alert, fields: {rule: hot}}
    rejects: {readings/wrong_type: 2}
""")  # fmt: skip
    [outcome], problems = run_file(test)
    assert problems == []
    found = [str(p) for p in outcome.problems]
    assert found[0].startswith(
        f'{test}:6:9 tests[0].expect[0]: expected uplink alert with {{"state":"cleared"}}, '
        "got uplink alert at 0s {"
    )
    assert '"state":"raised"' in found[0]
    assert found[1] == (
        f"{test}:7:9 tests[0].expect[1]: expected action plant/m2/stop, got no action "
        "plant/m2/stop record (emitted: action plant/m1/stop, uplink alert, uplink digest)"
    )
    assert found[2].startswith(
        f'{test}:9:9 tests[0].absent[0]: expected no uplink alert with {{"rule":"hot"}}, got '
    )
    assert found[3] == (
        f"{test}:10:15 tests[0].rejects.readings/wrong_type: expected 2 rejects "
        "readings/wrong_type, got 0 (all: none)"
    )
    assert len(found) == 4


def test_a_bad_test_file_is_located_and_runs_nothing(tmp_path: Path) -> None:
    test = write(tmp_path, """\
tests:
  - name: typo
    input:
      - {at: 1s, topic: plant/m1/t, payload: {}}
      - {at: 0s, topic: plant/m1/t, payload: {}}
    expct: []
""")  # fmt: skip
    outcomes, problems = run_file(test)
    assert outcomes == []
    assert [str(p) for p in problems] == [
        f"{test}:3:5 tests[0].input: expected arrivals in time order, got 0s after 1s",
        f"{test}:6:5 tests[0].expct: Extra inputs are not permitted",
    ]


def test_the_test_file_sits_beside_its_pipeline() -> None:
    assert cases_for(Path("p/factory.yaml")) == Path("p/factory.test.yaml")
    assert cases_for(Path("p/factory.test.yaml")) == Path("p/factory.test.yaml")
