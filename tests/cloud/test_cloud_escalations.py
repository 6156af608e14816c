"""Cloud decisions on escalations, on real SQLite files and PostgreSQL schemas: the cloud
model decides as records are stored (once), undecidable ones keep their reason, a fault
diagnosis opens an alert episode, and migration 0002 fills in what was stored before it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from cloudkit import NOW, Database, batch
from inferkit import (
    FACTORY,
    FACTORY_LABELS,
    MODELS,
    Clock,
    escalation,
    inputs_for,
    tiny_model,
)
from sqlalchemy import select, text

from cloud.db import alembic_config, make_engine, migrate, writing
from cloud.escalations import DEFAULT_MODELS, CloudModels
from cloud.models import Alert, Escalation
from cloud.store import Store
from fogline.cli import main
from fogline.model import Model, ModelError

FARM_LABELS = ["normal", "leak", "dry_soil"]
FARM_INPUTS = ["moisture_mean", "flow_mean", "pressure_mean"]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def deciding(database: Database, clock: Clock) -> Iterator[Store]:
    """A store whose escalations the tiny cloud models decide."""
    engine = make_engine(database.url, database.connect_args)
    migrate(engine)
    models = CloudModels(
        {
            "factory-vibration": Model(tiny_model()),
            "farm-irrigation": Model(
                tiny_model(FARM_INPUTS, FARM_LABELS, name="farm-irrigation", version="3")
            ),
        }
    )
    yield Store(engine, clock, models)
    engine.dispose()


def rows(store: Store) -> dict[int, Escalation]:
    with store.engine.connect() as conn:
        return {r.seq: r for r in conn.execute(select(Escalation))}  # type: ignore[misc]


def episodes(store: Store) -> list[Alert]:
    with store.engine.connect() as conn:
        return list(conn.execute(select(Alert).order_by(Alert.alert_id)))  # type: ignore[arg-type]


def test_each_new_escalation_is_decided_once_as_it_is_stored(deciding: Store, clock: Clock) -> None:
    records = [
        (1, "line-1/m-03", escalation("normal", inputs_for("imbalance"))),
        (2, "line-1/m-04", escalation("bearing", inputs_for("bearing"), machine="m-04")),
        (3, "line-1/m-05", escalation("normal", inputs_for("normal"), machine="m-05")),
    ]
    report = deciding.write([batch("gw1", "escalation", records)])
    assert report.stored == {"escalation": 3}
    stored = rows(deciding)
    first = stored[1]
    assert (first.cloud_label, first.agree, first.cloud_model_version) == ("imbalance", False, "7")
    assert first.cloud_confidence == pytest.approx(0.9999, abs=1e-4)
    assert set(first.cloud_probabilities or {}) == set(FACTORY_LABELS)
    assert (first.decided_at, first.cloud_reason, first.model) == (
        clock.now,
        None,
        "factory-vibration",
    )
    assert (first.at, first.ts) == (NOW, NOW)
    assert (stored[2].cloud_label, stored[2].agree) == ("bearing", True)
    assert (stored[3].cloud_label, stored[3].agree) == ("normal", True)

    decided_at = clock.now
    clock.now += 60
    again = deciding.write([batch("gw1", "escalation", records)])  # retransmitted
    assert (again.stored, again.duplicates) == ({}, {"escalation": 3})
    assert {s: r.decided_at for s, r in rows(deciding).items()} == dict.fromkeys(
        (1, 2, 3), decided_at
    )


def test_a_fault_diagnosis_opens_one_warning_episode_per_device_and_label(
    deciding: Store, clock: Clock
) -> None:
    deciding.write(
        [
            batch(
                "gw1",
                "escalation",
                [
                    (1, "line-1/m-03", escalation("normal", inputs_for("imbalance"))),
                    (2, "line-1/m-05", escalation("normal", inputs_for("normal"), machine="m-05")),
                ],
            )
        ]
    )
    (episode,) = episodes(deciding)
    assert (episode.alert_id, episode.rule, episode.severity) == (
        "model:imbalance/line-1/m-03",
        "model:imbalance",
        "warning",
    )
    assert (episode.state, episode.raised_seq, episode.raised_at) == ("open", 1, NOW)
    assert episode.message == (
        "line-1/m-03: the cloud model factory-vibration says imbalance (the edge said normal)"
    )
    assert episode.payload["raised"]["escalation"] == {
        "seq": 1,
        "label": "normal",
        "cloud_label": "imbalance",
        "cloud_confidence": pytest.approx(0.9999, abs=1e-4),
    }
    later = escalation("imbalance", inputs_for("imbalance"), window_end=NOW + 60)
    deciding.write([batch("gw1", "escalation", [(7, "line-1/m-03", later)])])
    (episode,) = episodes(deciding)  # the same episode, brought up to date
    assert (episode.raised_seq, episode.raised_at) == (7, NOW + 60)
    assert episode.message == "line-1/m-03: the cloud model factory-vibration says imbalance"


def test_one_drain_of_two_models_decides_every_record_in_its_place(deciding: Store) -> None:
    farm = {"moisture_mean": 0.0, "flow_mean": 0.0, "pressure_mean": 0.0}
    records = []
    expected = {}
    for seq in range(1, 41):
        if seq % 2:
            label = FACTORY_LABELS[seq % 3]
            records.append((seq, f"line-1/m-{seq}", escalation("normal", inputs_for(label))))
        else:
            label = FARM_LABELS[seq % 3]
            inputs = {**farm, FARM_INPUTS[seq % 3]: 2.0}
            data = escalation("normal", inputs, model="farm-irrigation")
            records.append((seq, f"farm/f-{seq}", data))
        expected[seq] = label
    deciding.write([batch("gw1", "escalation", records)])
    stored = rows(deciding)
    assert {s: r.cloud_label for s, r in stored.items()} == expected
    assert {r.cloud_model_version for r in stored.values()} == {"7", "3"}


def test_what_the_cloud_cannot_decide_is_stored_undecided_with_the_reason(
    deciding: Store,
) -> None:
    factory = inputs_for("bearing")
    cases = {
        1: (inputs_for("bearing", vibration_cv=None), "inputs missing: vibration_cv"),
        2: (
            inputs_for("bearing", vibration_cv=None, vibration_1x_rel=None),
            "inputs missing: vibration_1x_rel, vibration_cv",
        ),
        3: (
            inputs_for("bearing", vibration_cv="fast"),
            "input 'vibration_cv': expected a number, got 'fast'",
        ),
        4: (
            inputs_for("bearing", vibration_cv=True),
            "input 'vibration_cv': expected a number, got True",
        ),
        9: (
            inputs_for("bearing", vibration_cv=-1e39),
            "input 'vibration_cv': -1e+39 is out of the model's float32 range",
        ),
    }
    records = [(s, "line-1/m-03", escalation("normal", inputs)) for s, (inputs, _) in cases.items()]
    no_inputs = escalation("normal", factory)
    no_inputs["inputs"] = [1, 2, 3]
    records += [
        (5, "line-1/m-03", escalation("normal", factory, model="pump-cavitation")),
        (6, "line-1/m-03", escalation("normal", factory, model=None)),
        (7, "line-1/m-03", no_inputs),
        # Inputs the cloud model does not read may be missing.
        (8, "line-1/m-03", escalation("normal", inputs_for("bearing", vibration_hf_rel=None))),
    ]
    deciding.write([batch("gw1", "escalation", records)])
    stored = rows(deciding)
    reasons = {s: r.cloud_reason for s, r in stored.items()}
    assert reasons == {
        **{s: reason for s, (_, reason) in cases.items()},
        5: "no cloud model named 'pump-cavitation'",
        6: "the record names no model (field 'model')",
        7: "the record has no 'inputs' object",
        8: None,
    }
    for seq in (*range(1, 8), 9):
        row = stored[seq]
        assert (row.cloud_label, row.agree, row.decided_at, row.cloud_probabilities) == (
            None, None, None, None,
        )  # fmt: skip
    assert (stored[8].cloud_label, stored[6].model) == ("bearing", None)
    assert episodes(deciding)[0].raised_seq == 8  # only the decided one raises


def test_an_escalation_is_placed_in_time_by_window_end_then_ts_then_arrival(
    deciding: Store, clock: Clock
) -> None:
    both = escalation("normal", inputs_for("normal"), window_end=NOW + 5)
    ts_only = {k: v for k, v in both.items() if k not in ("window_start", "window_end")}
    neither = {k: v for k, v in ts_only.items() if k != "ts"}
    records = [(1, "d", both), (2, "d", ts_only), (3, "d", neither)]
    deciding.write([batch("gw1", "escalation", records)])
    assert {s: r.at for s, r in rows(deciding).items()} == {1: NOW + 5, 2: NOW + 5, 3: clock.now}


def test_cloud_models_are_the_cloud_kind_files_of_the_directory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "fogline.cloud.escalations")
    (tmp_path / "a-cloud.tflite").write_bytes(tiny_model())
    (tmp_path / "b-twin.tflite").write_bytes(tiny_model(version="8"))
    (tmp_path / "edge.tflite").write_bytes(FACTORY.read_bytes())
    (tmp_path / "farm.tflite").write_bytes(tiny_model(FARM_INPUTS, FARM_LABELS, name="farm"))
    (tmp_path / "broken.tflite").write_bytes(b"not a model")
    (tmp_path / "mangled.tflite").write_bytes(tiny_model(name="mangled", input_name=b"\xff"))
    (tmp_path / "notes.txt").write_text("not a model either, and not a .tflite")
    models = CloudModels.load(tmp_path)
    assert models.names() == {"factory-vibration": "7", "farm": "7"}
    with pytest.raises(ModelError) as refused:
        Model(b"not a model")
    assert f"cloud models: skipped {tmp_path / 'broken.tflite'}: {refused.value}" in caplog.text
    assert f"cloud models: skipped {tmp_path / 'mangled.tflite'}: " in caplog.text
    assert (
        f"cloud models: {tmp_path / 'a-cloud.tflite'} and {tmp_path / 'b-twin.tflite'} are "
        f"both named 'factory-vibration'; using {tmp_path / 'a-cloud.tflite'}"
    ) in caplog.text
    assert f"cloud models from {tmp_path}: factory-vibration 7, farm 7" in caplog.text
    caplog.clear()
    assert CloudModels.load(tmp_path / "empty").names() == {}
    assert caplog.text.count("no cloud model in") == 1
    assert (
        f"no cloud model in {tmp_path / 'empty'}: escalations are stored undecided" in caplog.text
    )


def test_the_shipped_cloud_models_load_by_default() -> None:
    assert DEFAULT_MODELS == MODELS
    assert set(CloudModels.load(DEFAULT_MODELS).names()) == {"factory-vibration", "farm-irrigation"}


def test_cloud_command_rejects_a_models_path_that_is_no_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "nowhere")
    assert main(["cloud", "--models", missing]) == 2
    assert (
        f"--models: expected a directory of .tflite models, got {missing!r}"
        in capsys.readouterr().err
    )


def test_migration_0002_places_and_names_escalations_stored_before_it(database: Database) -> None:
    engine = make_engine(database.url, database.connect_args)
    try:
        with writing(engine) as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "0001")
        old = [
            (1, {"window_end": NOW + 1, "model": "factory-vibration"}, NOW),
            (2, {"model": 42}, NOW + 2),
            (3, {"window_end": "soon", "model": "m" * 200}, None),
        ]
        with writing(engine) as conn:
            conn.execute(
                text(
                    "INSERT INTO gateways (id, first_seen, last_seen, received, max_seq, evicted,"
                    " expired) VALUES ('gw1', 0, 0, 3, 3, '{}', '{}')"
                )
            )
            for seq, data, ts in old:
                conn.execute(
                    text("INSERT INTO received VALUES ('gw1', :seq, 'escalation', :at)"),
                    {"seq": seq, "at": NOW + 100 + seq},
                )
                conn.execute(
                    Escalation.__table__.insert().values(
                        gateway_id="gw1", seq=seq, device="d", ts=ts, data=data
                    )
                )
        migrate(engine)
        store = Store(engine)
        stored = rows(store)
        assert {s: (r.at, r.model) for s, r in stored.items()} == {
            1: (NOW + 1, "factory-vibration"),
            2: (NOW + 2, None),
            3: (NOW + 103, None),
        }
        assert all(r.decided_at is None and r.cloud_reason is None for r in stored.values())
        with writing(engine) as conn:  # and back, and up again
            config.attributes["connection"] = conn
            command.downgrade(config, "0001")
        migrate(engine)
        assert set(rows(store)) == {1, 2, 3}
    finally:
        engine.dispose()
