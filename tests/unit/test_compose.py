"""docker-compose.yml cannot be run here (no Docker engine), so check what can be checked:
every service's command is a valid `fogline` command line and its fault schedule parses."""

from __future__ import annotations

from pathlib import Path

import yaml

from fogline.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def test_every_compose_command_parses() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    parser = build_parser(with_devices=True)
    commands = {
        name: svc["command"] for name, svc in compose["services"].items() if "command" in svc
    }
    assert set(commands) >= {
        "cloud",
        "factory-gateway",
        "farm-gateway",
        "factory-devices",
        "farm-devices",
    }
    for name, command in commands.items():
        args = parser.parse_args(command)
        assert args.command in {"gateway", "cloud", "devices"}, name


def test_compose_fault_schedules_name_real_faults_and_devices() -> None:
    from devices.factory import FAULTS as FACTORY_FAULTS  # noqa: PLC0415
    from devices.factory import FactoryConfig, machine_names  # noqa: PLC0415
    from devices.farm import FAULTS as FARM_FAULTS  # noqa: PLC0415
    from devices.farm import FarmConfig, plot_names  # noqa: PLC0415
    from devices.faults import parse_faults  # noqa: PLC0415

    fleets = {
        "factory": (FACTORY_FAULTS, lambda n: machine_names(FactoryConfig(count=n))[0]),
        "farm": (FARM_FAULTS, lambda n: plot_names(FarmConfig(count=n))[0]),
    }
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name in ("factory-devices", "farm-devices"):
        command = compose["services"][name]["command"]
        spec = command[command.index("--faults") + 1]
        count = int(command[command.index("--count") + 1])
        kinds, names = fleets[command[1]]
        assert parse_faults(spec, kinds, names(count)), name
