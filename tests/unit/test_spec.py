"""parse_pipeline: good files parse; every mistake is reported at once, located."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.spec import PipelineError, load_pipeline, parse_pipeline

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"

HEAD = """\
name: t
key: [machine]
sources:
  - mqtt:
      topics: ["plant/{machine}/telemetry"]
"""  # 5 lines: what follows starts on line 6


def problems(text: str) -> list[str]:
    with pytest.raises(PipelineError) as info:
        parse_pipeline(text, "p.yaml")
    found = [str(p) for p in info.value.problems]
    assert str(info.value) == "\n".join(found)
    return found


def test_minimal_pipeline_defaults():
    pipeline = parse_pipeline(
        HEAD
        + """\
steps:
  - validate:
      fields:
        temperature: {type: number}
  - derive:
      fields: {hot: temperature > 80}
  - filter: {when: hot, from: derive}
outputs:
  - uplink: {from: filter, kind: event}
""",
        "p.yaml",
    )
    assert pipeline.name == "t"
    assert pipeline.key == ("machine",)
    assert pipeline.file == "p.yaml"
    assert [(s.id, s.op, s.from_, s.path) for s in pipeline.steps] == [
        ("validate", "validate", "source", "steps[0].validate"),
        ("derive", "derive", "validate", "steps[1].derive"),
        ("filter", "filter", "derive", "steps[2].filter"),
    ]
    assert pipeline.streams["filter"].known == {"machine", "ts", "temperature", "hot"}
    assert pipeline.header.queue.size == 10_000
    assert pipeline.header.tick == 0.1
    [(kind, source)] = pipeline.sources
    assert kind == "mqtt"
    assert source.qos == 1
    assert source.max_payload == 65536


def test_factory_pipeline_from_disk():
    pipeline = load_pipeline(PIPELINES / "factory.yaml")
    assert pipeline.name == "factory"
    assert pipeline.key == ("line", "machine")
    assert [s.id for s in pipeline.steps] == [
        "readings",
        "smoothed",
        "usual",
        "critical",
        "spikes",
        "still",
        "stuck_alerts",
        "windows",
        "rise",
        "normal",
        "load",
        "load_lag",
        "normal_heat",
        "zscore",
        "alerts",
        "liveness",
        "liveness_alerts",
        "features",
        "live",
        "baseline_1x",
        "baseline_hf",
        "shape",
        "baseline_share",
        "baseline_crest",
        "model_inputs",
        "diagnosis",
        "diagnosis_alerts",
    ]
    assert {s.id: s.from_ for s in pipeline.steps}["spikes"] == "readings"
    assert {s.id: s.from_ for s in pipeline.steps}["still"] == "spikes"
    assert {s.id: s.from_ for s in pipeline.steps}["stuck_alerts"] == "still"
    assert {s.id: s.from_ for s in pipeline.steps}["windows"] == "still"
    assert {s.id: s.from_ for s in pipeline.steps}["features"] == "still"
    assert {s.id: s.from_ for s in pipeline.steps}["liveness"] == "readings"
    assert "windows.late" in pipeline.streams
    assert "inputs" in pipeline.streams["diagnosis.escalate"].known
    assert [kind for kind, _ in pipeline.outputs] == ["uplink", "uplink", "uplink", "action"]


@pytest.mark.parametrize("name", ["factory.yaml", "farm.yaml"])
def test_repository_pipelines_parse(name):
    path = PIPELINES / name
    if not path.exists():
        pytest.skip(f"{name} is not in this checkout")
    pipeline = parse_pipeline(path.read_text(encoding="utf-8"), str(path))
    assert pipeline.name == name.removesuffix(".yaml")
    assert pipeline.summary().startswith(f"{path}: pipeline '{pipeline.name}'")


def test_three_mistakes_are_reported_together_each_located():
    text = (
        HEAD
        + """\
steps:
  - validate:
      fields:
        temperature: {type: number}
  - filter:
      when: temprature > 80
  - smooth:
      over: 5
  - window:
      size: 10 seconds
      aggregates:
        temperature: [mean]
outputs:
  - uplink: {from: window, kind: digest}
"""
    )
    assert problems(text) == [
        (
            "p.yaml:12:5 steps[2].smooth: expected one of: absence, alert, baseline, deadband, "
            "derive, ewma, features, filter, frozen, infer, spike, validate, window, zscore; "
            "got unknown step type 'smooth'"
        ),
        (
            "p.yaml:15:7 steps[3].window.size: expected a duration like 10s, 500ms or 5m, "
            "got '10 seconds'"
        ),
        (
            "p.yaml:11:7 steps[1].filter.when: expected fields that stream 'validate' carries "
            "(machine, temperature, ts), got 'temprature' which no step produces; "
            "did you mean 'temperature'?"
        ),
    ]


def test_a_failed_step_does_not_cause_follow_on_errors():
    found = problems(
        HEAD
        + """\
steps:
  - window: {id: w, size: -1s, aggregates: {x: [mean]}}
  - filter: {when: anything_at_all > 1}
outputs:
  - uplink: {from: [w, w.late, filter], kind: digest}
"""
    )
    assert len(found) == 1
    assert found[0].startswith("p.yaml:7:21 steps[0].window.size: expected a duration")


def test_duplicate_yaml_keys():
    text = """\
name: a
key: [machine]
name: b
sources:
  - mqtt: {topics: ["t/{machine}"], qos: 0, qos: 1}
outputs:
  - uplink: {from: source, kind: digest}
"""
    assert problems(text) == [
        "p.yaml:3:1 name: duplicate key; keep only one",
        "p.yaml:5:45 sources[0].mqtt.qos: duplicate key; keep only one",
    ]


def test_invalid_yaml():
    [found] = problems("name: [unclosed\nkey: x\n")
    assert found.startswith("p.yaml:")
    assert "invalid YAML" in found


def test_document_must_be_a_mapping():
    assert problems("- a\n- b\n") == [
        "p.yaml:1:1 expected a mapping with name, key, sources, steps and outputs, got a list"
    ]


def test_missing_header_fields_still_reports_step_problems():
    found = problems("name: t\nsteps:\n  - nope: {}\n")
    assert "p.yaml:1:1 key: expected a value for 'key', got nothing" in found
    assert "p.yaml:1:1 sources: expected a value for 'sources', got nothing" in found
    assert any(p.startswith("p.yaml:3:5 steps[0].nope: expected one of:") for p in found)


def test_duplicate_step_ids():
    found = problems(
        HEAD
        + """\
steps:
  - filter: {id: f, when: "x > 1"}
  - derive: {id: f, fields: {y: "x"}}
outputs:
  - uplink: {from: f, kind: digest}
"""
    )
    assert found == ["p.yaml:8:14 steps[1].derive.id: expected a unique step id, got 'f' twice"]


def test_same_operator_twice_needs_ids():
    found = problems(
        HEAD
        + """\
steps:
  - filter: {when: "x > 1"}
  - filter: {when: "x > 2"}
outputs:
  - uplink: {from: source, kind: digest}
"""
    )
    assert found == [
        (
            "p.yaml:7:5 steps[0].filter: expected an 'id:' for each of the 2 'filter' steps, "
            "got none here"
        ),
        (
            "p.yaml:8:5 steps[1].filter: expected an 'id:' for each of the 2 'filter' steps, "
            "got none here"
        ),
    ]


def test_step_from_an_unknown_stream():
    found = problems(
        HEAD
        + """\
steps:
  - filter: {id: f, when: "x > 1"}
  - derive:
      from: nowhere
      fields: {y: "x"}
outputs:
  - uplink: {from: derive, kind: digest}
"""
    )
    assert found == [
        (
            "p.yaml:9:7 steps[1].derive.from: expected a stream defined above (source, f), "
            "got 'nowhere'"
        )
    ]


def test_a_step_cannot_read_a_stream_defined_below():
    found = problems(
        HEAD
        + """\
steps:
  - filter: {id: a, when: "x > 1", from: b}
  - filter: {id: b, when: "x > 2"}
outputs:
  - uplink: {from: b, kind: digest}
"""
    )
    assert found == [
        "p.yaml:7:36 steps[0].filter.from: expected a stream defined above (source), got 'b'"
    ]


def test_output_from_an_unknown_stream():
    found = problems(
        HEAD
        + """\
steps:
  - filter: {when: "x > 1"}
outputs:
  - uplink: {from: [filter, ghost], kind: digest}
  - uplink: {from: window.late, kind: digest}
"""
    )
    assert found == [
        "p.yaml:9:29 outputs[0].uplink.from[1]: expected a stream (source, filter), got 'ghost'",
        (
            "p.yaml:10:14 outputs[1].uplink.from: expected a stream (source, filter), "
            "got 'window.late'"
        ),
    ]


def test_unknown_key_in_a_step():
    found = problems(
        HEAD
        + """\
steps:
  - deadband:
      fields: {x: 1}
      colour: red
outputs:
  - uplink: {from: deadband, kind: digest}
"""
    )
    assert found == [
        (
            "p.yaml:9:7 steps[0].deadband.colour: expected a known key, got unknown key 'colour' "
            "(check its spelling)"
        )
    ]


def test_invalid_expression_syntax_names_the_column():
    [found] = problems(
        HEAD
        + """\
steps:
  - filter: {when: "rpm > > 2"}
outputs:
  - uplink: {from: filter, kind: digest}
"""
    )
    assert found.startswith(
        "p.yaml:7:14 steps[0].filter.when: expected a valid expression, got 'rpm > > 2': "
        "invalid syntax"
    )
    assert found.endswith("(column 7)")  # the second '>', 1-based


def test_incomplete_expression_points_at_its_end_not_its_start():
    [found] = problems(
        HEAD
        + """\
steps:
  - filter: {when: "rpm >"}
outputs:
  - uplink: {from: filter, kind: digest}
"""
    )
    assert found.startswith("p.yaml:7:14 steps[0].filter.when: expected a valid expression")
    # The operand is missing after 'rpm >', i.e. at 1-based column 6 (the end).
    assert found.endswith("(column 6)")


def test_forbidden_expression_construct():
    [found] = problems(
        HEAD
        + """\
steps:
  - derive: {fields: {y: "x.real"}}
outputs:
  - uplink: {from: derive, kind: digest}
"""
    )
    assert found == (
        "p.yaml:7:23 steps[0].derive.fields.y: expected a valid expression, got 'x.real': "
        "'.' attribute access is not allowed (column 2)"
    )


@pytest.mark.parametrize(
    ("topic", "level"),
    [
        ("plant/{machine/telemetry", "level 2: '{machine'"),
        ("plant/#/telemetry", "level 2: '#'"),
        ("plant/m+/telemetry", "level 2: 'm+'"),
    ],
)
def test_bad_topic_pattern(topic, level):
    text = f"""\
name: t
key: [machine]
sources:
  - mqtt:
      topics: ["{topic}"]
outputs:
  - uplink: {{from: source, kind: digest}}
"""
    assert problems(text) == [
        (
            "p.yaml:5:7 sources[0].mqtt.topics: expected a pattern like "
            f"'factory/{{line}}/{{machine}}/telemetry', got '{topic}' ({level})"
        )
    ]


def test_good_topic_patterns():
    text = """\
name: t
key: [machine]
sources:
  - mqtt:
      topics: ["plant/+/{machine}/#", "#", "plant/{machine}"]
outputs:
  - uplink: {from: source, kind: digest}
"""
    assert parse_pipeline(text).streams["source"].known == {"machine", "ts"}


def test_action_template_naming_an_unknown_field():
    found = problems(
        HEAD
        + """\
steps:
  - validate:
      fields:
        temperature: {type: number}
outputs:
  - action:
      from: validate
      topic: "plant/{machine}/{line}/cmd"
      payload: {msg: "{temp}", nested: ["{machine}", {deep: "{temperature}"}]}
"""
    )
    carries = "expected fields that stream 'validate' carries (machine, temperature, ts)"
    assert found == [
        f"p.yaml:13:7 outputs[0].action.topic: {carries}, got 'line' which no step produces",
        f"p.yaml:14:7 outputs[0].action.payload: {carries}, got 'temp' which no step produces",
    ]


def test_invalid_action_template():
    found = problems(
        HEAD
        + """\
outputs:
  - action:
      from: source
      topic: "plant/{machine.id}/cmd"
"""
    )
    assert len(found) == 1
    assert found[0].startswith("p.yaml:9:7 outputs[0].action.topic: expected a plain field name")


def test_did_you_mean_for_a_misspelt_field():
    found = problems(
        HEAD
        + """\
steps:
  - validate:
      fields:
        vibration: {type: number}
        temperature: {type: number}
  - window:
      size: 10s
      aggregates: {vibration: [rms]}
  - alert:
      rules:
        - name: shaky
          raise: vibraton_rms > 4
outputs:
  - uplink: {from: alert, kind: alert}
"""
    )
    assert found == [
        (
            "p.yaml:17:11 steps[2].alert.rules[0].raise: expected fields that stream 'window' "
            "carries (count, first_ts, last_ts, machine, vibration_rms, window_end, window_start), got 'vibraton_rms' "
            "which no step produces; did you mean 'vibration_rms'?"
        )
    ]


def test_open_stream_accepts_any_field():
    # Before a `validate`, the source stream may carry anything: no field is unknown.
    parse_pipeline(
        HEAD
        + """\
steps:
  - filter: {when: whatever > 1}
outputs:
  - action: {from: filter, topic: "x/{anything}"}
"""
    )


STRUCTURE_AND_SPELLING = """\
key: [machine]
tick: fast
sources:
  - mqtt: {topics: ["f/{machine}/t"]}
steps:
  - validate:
      fields: {temperature: {type: number}}
  - alert:
      rules:
        - {name: hot, raise: temprature > 95, severty: critical}
  - filter: {from: validate, when: temprature > 3}
outputs:
  - uplink: {from: filter, kind: event}
"""


def test_misspelled_fields_are_reported_with_the_structural_errors():
    # A bad header or a misspelled key in the same step used to hide the field mistakes
    # until they were fixed: `pipeline check` promises every problem at once.
    hint = "got 'temprature' which no step produces; did you mean 'temperature'?"
    found = problems(STRUCTURE_AND_SPELLING)
    assert [p.split(": ")[0] for p in found] == [
        "p.yaml:1:1 name",
        "p.yaml:2:1 tick",
        "p.yaml:10:47 steps[1].alert.rules[0].severty",
        "p.yaml:10:23 steps[1].alert.rules[0].raise",
        "p.yaml:11:30 steps[2].filter.when",
    ]
    assert found[3].endswith(hint)
    assert found[4].endswith(hint)


DEPLOYMENT = """\
name: plant
description: "$${not a variable}"
key: [machine]
sources:
  - coap:
      bind: ${COAP_BIND:-127.0.0.1:5683}
      paths: ["${SITE}/{machine}/t"]
steps:
  - validate:
      fields:
        temperature: {type: number, max: "${TMAX:-150}"}
  - alert:
      rules:
        - name: hot
          raise: temperature > ${HOT:-90}
outputs:
  - uplink: {from: alert, kind: alert}
tick: ${TICK:-0.5}
"""


def test_a_variable_in_a_flow_mapping_must_be_quoted_and_the_error_says_so():
    assert problems("name: p\nkey: [m]\nsources: [{mqtt: {topics: [${T}]}}]\n") == [
        (
            "p.yaml:3:29 invalid YAML: expected ',' or ']', but got '{'; inside [...] or {...} "
            'a ${NAME} needs quotes: "${NAME}"'
        )
    ]


def test_variables_are_filled_from_the_environment_or_their_defaults():
    pipeline = parse_pipeline(DEPLOYMENT, "p.yaml", {"SITE": "cell-7", "HOT": "95"})
    (_, coap), = pipeline.sources  # fmt: skip
    assert coap.bind == "127.0.0.1:5683"
    assert coap.paths == ["cell-7/{machine}/t"]
    assert pipeline.header.tick == 0.5  # a plain scalar is typed after the substitution
    assert pipeline.steps[1].config.rules[0].raise_ == "temperature > 95"
    assert pipeline.header.description == "${not a variable}"
    assert [str(v) for v in pipeline.variables] == [
        "6:13 sources[0].coap.bind: ${COAP_BIND} = '127.0.0.1:5683' (default)",
        "7:16 sources[0].coap.paths[0]: ${SITE} = 'cell-7' (environment)",
        "11:43 steps[0].validate.fields.temperature.max: ${TMAX} = '150' (default)",
        "15:32 steps[1].alert.rules[0].raise: ${HOT} = '95' (environment)",
        "18:7 tick: ${TICK} = '0.5' (default)",
    ]
    assert "  var     7:16 sources[0].coap.paths[0]: ${SITE} = 'cell-7'" in pipeline.summary()


def test_an_unset_variable_without_a_default_is_located():
    found = problems(DEPLOYMENT.replace("${TICK:-0.5}", "${TICK"))
    assert found == [
        (
            "p.yaml:7:16 sources[0].coap.paths[0]: ${SITE} is not set: set SITE in the "
            "environment, or give a default: ${SITE:-value}"
        ),
        "p.yaml:18:7 tick: expected ${NAME} or ${NAME:-default}, got an unclosed '${'",
    ]
