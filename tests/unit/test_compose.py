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


FOGLINE_SERVICES = {
    "provision", "cloud", "factory-gateway", "farm-gateway", "factory-devices", "farm-devices",
}  # fmt: skip


def test_one_image_built_once_and_run_unprivileged() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert {compose[name]["image"] for name in FOGLINE_SERVICES} == {"fogline:local"}
    assert [name for name, svc in compose.items() if "build" in svc] == ["provision"]
    dockerfile = (ROOT / "Dockerfile").read_text().splitlines()
    users = [line.split()[1] for line in dockerfile if line.startswith("USER ")]
    assert users == ["fogline"], "the image must not run as root"
    # Only provisioning, which writes the brokers' files as their owner, runs as root.
    assert [name for name, svc in compose.items() if svc.get("user") == "root"] == ["provision"]


def test_services_with_healthz_are_health_checked_on_their_own_port() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    ports = {"cloud": "8080", "factory-gateway": "9108", "farm-gateway": "9109"}
    for name, port in ports.items():
        check = compose[name]["healthcheck"]
        assert f"http://127.0.0.1:{port}/healthz" in " ".join(check["test"]), name
        assert check["retries"] >= 1, name
        env = compose[name]["environment"]
        assert port in (env.get("FOGLINE_HTTP", "") + env.get("FOGLINE_METRICS_PORT", "")), name


def test_no_host_port_clashes_with_a_broker_the_host_runs() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    published = [p.split(":")[-2] for svc in compose.values() for p in svc.get("ports", [])]
    assert "1883" not in published
    assert len(published) == len(set(published))


def test_the_build_context_leaves_out_the_virtualenv_and_history() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "**/__pycache__", "*.db", "tests"} <= set(ignored)
    copied = [line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines()
              if line.startswith("COPY ")]  # fmt: skip
    assert not any(path.split("/")[0] in ignored for path in copied)


def test_the_license_is_an_spdx_expression() -> None:
    import tomllib  # noqa: PLC0415

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
