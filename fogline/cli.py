"""The `fogline` command. Every flag can also come from a `FOGLINE_<FLAG>` variable."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from fogline import __version__
from fogline.clihelp import Formatter, command
from fogline.identity import IDENTITY_FILE, Identity, IdentityError, read_identity
from fogline.redact import install as install_redaction
from fogline.redact import redact, remember_url
from fogline.tls import https_files, tls_files, with_password_file
from fogline.units import parse_duration, parse_size
from fogline.urls import parse_broker_url


def _env(flag: str, default: str | None = None) -> str | None:
    return os.environ.get("FOGLINE_" + flag.upper().replace("-", "_"), default)


def _add(p: argparse.ArgumentParser, flag: str, help_: str, default: str | None = None) -> None:
    var = "FOGLINE_" + flag.upper().replace("-", "_")
    shown = f" (default: {default})" if default else ""
    p.add_argument(f"--{flag}", default=_env(flag, default), help=f"{help_} [env {var}]{shown}")


def build_parser(with_devices: bool = False) -> argparse.ArgumentParser:  # noqa: PLR0915
    """The whole command line; `devices` (numpy, aiocoap, cbor2) only when it is asked for,
    so that a gateway's memory holds none of it."""
    parser = argparse.ArgumentParser(
        prog="fogline",
        description="Edge stream analytics for IoT: gateways run declarative pipelines near "
        "the sensors and send digests and exceptions to the cloud. `fogline COMMAND --help` "
        "says more about each command.",
        epilog="example:\n  fogline demo                               # see it all work\n"
        "  fogline pipeline check pipelines/*.yaml    # then docs/tutorial.md",
        formatter_class=Formatter,
    )
    parser.add_argument("--version", action="version", version=f"fogline {__version__}")
    parser.add_argument(
        "--log-level", default=_env("log-level", "INFO"), help="DEBUG, INFO, WARNING"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    gw = command(
        sub,
        "gateway",
        "run a pipeline at the edge",
        "fogline gateway --pipeline pipelines/factory.yaml --id gw1 --identity gw1.json \\\n"
        "    --broker mqtt://127.0.0.1:1883 --uplink mqtts://cloud:8883 --ca ca.pem\n"
        "fogline gateway --pipeline my.yaml --id dev --insecure-unsigned   # trying it out",
        description="Run a pipeline at the edge: take readings from the edge broker (and "
        "CoAP), act on them at once, and send digests, alerts and escalations to the cloud "
        "through a durable outbox in --data-dir. A terminal shows a live status line. "
        "Without a cloud identity (`fogline cloud gateway add`) it runs only with "
        "--insecure-unsigned.",
    )
    _add(gw, "pipeline", "pipeline YAML file")
    _add(gw, "broker", "edge broker URL", "mqtt://127.0.0.1:1883")
    _add(gw, "uplink", "uplink (cloud) broker URL; defaults to the edge broker")
    _add(gw, "id", "gateway id, used in uplink topics", socket.gethostname().split(".")[0])
    _add(gw, "data-dir", "directory for durable state", "./fogline-data")
    _add(gw, "metrics-port", "serve /metrics and /healthz on this port")
    _add(gw, "metrics-host", "address for the metrics server", "127.0.0.1")
    _add(gw, "durability", "outbox sync: normal (survives a crash) or full (power loss)", "normal")
    _add(
        gw,
        "ack-readings",
        "when a QoS 1 reading is acknowledged to the broker: on-commit (once its effect is "
        "durable: a crash loses none) or on-receipt (faster; a crash loses what was not yet "
        "committed)",
        "on-commit",
    )
    _add(gw, "outbox-max-bytes", "outbox bound; beyond it evict by class", "256MiB")
    _add(gw, "outbox-ttl", "per-kind expiry, e.g. digest=7d,health=1d")
    _add(gw, "uplink-max-rate", "records/s cap while a backlog drains")
    _add(
        gw,
        "uplink-keepalive",
        "seconds between pings on a quiet uplink; twice this without a word from the broker "
        "and the link is taken for cut and reconnected",
        "10",
    )
    _trust_flags(gw)
    _add(
        gw,
        "edge-ca",
        "CA file for an mqtts:// edge broker (default: --ca when the links share a broker)",
    )
    _add(gw, "edge-cert", "client certificate for the edge broker (mutual TLS)")
    _add(gw, "edge-key", "its private key")
    _add(gw, "broker-password-file", "file holding the edge broker password (not on `ps`)")
    _add(
        gw,
        "identity",
        "identity file from `fogline cloud gateway add` (default: identity.json in --data-dir)",
    )
    gw.add_argument(
        "--insecure-unsigned",
        action="store_true",
        default=_env("insecure-unsigned") == "1",
        help="development only: run without an identity, accepting unsigned acks and "
        "model chunks [env FOGLINE_INSECURE_UNSIGNED=1]",
    )
    from fogline import gateways_cli  # noqa: PLC0415

    gateways_cli.add_key_parser(gw)

    cloud = command(
        sub,
        "cloud",
        "run the cloud aggregator: ingest, API, retention",
        "fogline cloud --broker mqtt://127.0.0.1:1883 --db sqlite:///./fogline.db "
        "--http 0.0.0.0:8080\n"
        "fogline cloud user add ana --role admin      # the first admin, then sign in at /",
        description="Run the cloud: store what gateways send (SQLite or PostgreSQL), "
        "acknowledge it, decide their escalations, and serve the console at / and the API "
        "under /api/ (reference at /docs). Its subcommands manage users, API tokens and "
        "gateways.",
    )
    _add(cloud, "broker", "broker URL the gateways publish to", "mqtt://127.0.0.1:1883")
    _add(
        cloud,
        "db",
        "database URL (sqlite:///FILE or postgresql+psycopg://...)",
        "sqlite:///./fogline.db",
    )
    _add(cloud, "http", "HOST:PORT for the API, /metrics and /healthz", "127.0.0.1:8080")
    _add(
        cloud,
        "replica",
        "replica name, unique per instance and stable across restarts: the broker keeps "
        "each name's session and queue for --session-expiry after it leaves",
        socket.gethostname().split(".")[0],
    )
    _add(
        cloud,
        "session-expiry",
        "how long the broker keeps this replica's queue while it is away: a restart within "
        "it gets what was sent meanwhile; until it ends, a replica gone for good (renamed, "
        "removed) keeps its share of the gateways' batches, which they resend after an ack "
        "timeout",
        "5m",
    )
    _add(cloud, "public-url", "the console's address as people reach it (links in webhooks)")
    _add(cloud, "retention-days", "days digests are kept", "30")
    _add(
        cloud,
        "silent-after",
        "seconds without a word before a gateway is silent (gateway_silent alert); "
        "default: 3 of each gateway's health periods",
    )
    _add(
        cloud,
        "models",
        "directory of the cloud models (.tflite) that decide escalations "
        "(default: the models/ directory shipped with fogline)",
    )
    _trust_flags(cloud)
    _add(
        cloud,
        "signing-key",
        "the cloud's Ed25519 key for acks and model chunks (made on first use, 0600)",
        gateways_cli.DEFAULT_SIGNING_KEY,
    )
    _add(cloud, "broker-password-file", "file holding the broker password (not on `ps`)")
    _add(
        cloud,
        "broker-dir",
        "the broker's password and ACL files, to provision gateways through the API "
        "(POST/DELETE /api/gateways); without it those answer 409",
    )
    _add(
        cloud,
        "broker-reload",
        "command that makes the broker read its files again after a change, e.g. "
        "'docker compose kill -s HUP cloud-broker'",
    )
    _add(cloud, "broker-owner", "UID:GID the broker runs as (its files stay 0600, its own)")
    _add(cloud, "tls-cert", "serve HTTPS with this certificate (PEM)")
    _add(cloud, "tls-key", "and this private key")
    cloud.add_argument(
        "--allow-unregistered",
        action="store_true",
        default=_env("allow-unregistered") == "1",
        help="development only: store batches of gateways never provisioned, unchecked "
        "[env FOGLINE_ALLOW_UNREGISTERED=1]",
    )
    from fogline import people_cli  # noqa: PLC0415

    people_cli.add_parsers(cloud)
    gateways_cli.add_parsers(cloud)  # after people_cli: the two share `cloud_command`

    pipe = command(
        sub,
        "pipeline",
        "check and test pipelines, or print their schema and reference",
        "fogline pipeline check pipelines/*.yaml && fogline pipeline test pipelines/*.yaml",
    )
    psub = pipe.add_subparsers(dest="pipeline_command", required=True)
    check = command(
        psub,
        "check",
        "validate pipeline files and report every problem",
        "fogline pipeline check pipelines/factory.yaml\n"
        "MAX_BAR=4.5 fogline pipeline check boiler.yaml   # shows what ${MAX_BAR} became",
        description="Validate pipeline files without running them and report every "
        "problem at once, each as `file:line:col path: expected X, got Y`. A valid file "
        "prints how its steps are wired and what each ${VAR} became. Exit 1 on any problem.",
    )
    check.add_argument(
        "files",
        nargs="+",
        type=Path,
        help="pipeline files (`*.test.yaml` files are checked as tests of their pipeline)",
    )
    test = command(
        psub,
        "test",
        "run the tests beside pipeline files (input in, expected output out)",
        "fogline pipeline test pipelines/*.yaml",
        description="Run each pipeline's own test file (factory.yaml -> factory.test.yaml) "
        "through the real engine in simulated time: a 10 s window takes no wall time. "
        "Every expected output that did not come is reported with its file:line:col. "
        "The file format: docs/tutorial.md, section 4.",
    )
    test.add_argument(
        "files", nargs="+", type=Path, help="pipeline files (or their .test.yaml files)"
    )
    command(
        psub,
        "schema",
        "print the pipeline JSON Schema (for an editor's YAML plugin)",
        "fogline pipeline schema > pipeline.schema.json",
    )
    command(
        psub,
        "docs",
        "print the operator reference (Markdown), as in docs/operators.md",
        "fogline pipeline docs | less",
    )

    if with_devices:
        from devices import cli as devices_cli  # noqa: PLC0415

        devices_cli.add_parser(sub)
    else:
        command(
            sub,
            "devices",
            "simulate a factory or a farm fleet, with faults",
            "fogline devices factory --count 8 --faults overheating:m-03@15s",
        )

    from fogline import model_cli  # noqa: PLC0415

    model_cli.add_parser(sub)

    demo = command(
        sub,
        "demo",
        "run the factory demo on a private broker and watch it work",
        "fogline demo                 # until Ctrl-C\nfogline demo --duration 120",
        description="Run the whole platform on this machine: a private mosquitto, the "
        "cloud, a gateway on pipelines/factory.yaml and eight simulated machines, two of "
        "which develop faults. Prints every action, alert and digest, the console's "
        "address with a sign-in, and an API token.",
    )
    _add(demo, "duration", "seconds to run (0: until Ctrl-C)", "0")
    return parser


def _trust_flags(p: argparse.ArgumentParser) -> None:
    _add(p, "ca", "CA file to trust for mqtts:// brokers (default: the system's)")
    _add(p, "cert", "client certificate for mqtts:// brokers that ask for one (mutual TLS)")
    _add(p, "key", "the client certificate's private key")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a reader that stops early (`fogline pipeline schema | head`) ends
    it quietly, as it would a Unix filter, with the shell's status for SIGPIPE. Ctrl-C
    before a command has its own handler in place (while importing, while starting) ends it
    quietly too, with the shell's status for SIGINT."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # Python would report the pipe again while flushing stdout at exit: point it away.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(with_devices="devices" in argv).parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for chatty in ("gmqtt", "alembic", "uvicorn.error"):  # their INFO lines are not for users
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
    for value in vars(args).values():  # passwords in any URL flag are masked from here on
        if isinstance(value, str) and "://" in value:
            remember_url(value)
    install_redaction()
    if args.command == "pipeline":
        return _pipeline(args)
    if args.command == "gateway" and getattr(args, "gateway_command", None) == "key":
        from fogline import gateways_cli  # noqa: PLC0415

        return gateways_cli.run_key(args)
    if args.command == "gateway":
        return _gateway(args)
    if args.command == "cloud" and getattr(args, "cloud_command", None) == "gateway":
        from fogline import gateways_cli  # noqa: PLC0415

        return gateways_cli.run(args)
    if args.command == "cloud" and getattr(args, "cloud_command", None):
        from fogline import people_cli  # noqa: PLC0415

        return people_cli.run(args)
    if args.command == "cloud":
        return _cloud(args)
    if args.command == "devices":
        from devices import cli as devices_cli  # noqa: PLC0415

        return devices_cli.run(args)
    if args.command == "model":
        from fogline import model_cli  # noqa: PLC0415

        return model_cli.run(args)
    if args.command == "demo":
        from fogline.demo import run_demo  # noqa: PLC0415

        return asyncio.run(run_demo(float(args.duration)))
    return 2


def _pipeline(args: argparse.Namespace) -> int:
    from gateway.schema import operators_markdown, pipeline_schema  # noqa: PLC0415
    from gateway.spec import PipelineError, load_pipeline  # noqa: PLC0415

    if args.pipeline_command == "schema":
        print(json.dumps(pipeline_schema(), indent=2, ensure_ascii=False))
        return 0
    if args.pipeline_command == "docs":
        sys.stdout.write(operators_markdown())
        return 0
    if args.pipeline_command == "test":
        return _pipeline_test(args.files)
    from gateway.pipeline_tests import SUFFIX, CaseFileError, load_cases  # noqa: PLC0415

    problems = 0
    for file in args.files:
        try:
            if file.name.endswith(SUFFIX):  # a pipeline's tests: checked, not run
                cases, _, pipeline = load_cases(file)
                print(f"{file}: {len(cases.tests)} tests of pipeline '{pipeline.name}'")
                continue
            pipeline = load_pipeline(file)
        except (PipelineError, CaseFileError) as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            problems += len(exc.problems)
        else:
            print(pipeline.summary())
    if problems:
        print(f"{problems} problem{'s' if problems != 1 else ''} found", file=sys.stderr)
        return 1
    return 0


def _pipeline_test(files: list[Path]) -> int:
    """Each file's cases: `ok`/`FAIL` per case on stdout, each difference located on stderr."""
    from gateway.pipeline_tests import cases_for, run_file  # noqa: PLC0415

    if logging.getLogger().level > logging.DEBUG:  # rejects are what `rejects:` checks
        logging.getLogger("fogline.gateway.engine").setLevel(logging.ERROR)
    passed = failed = 0
    for file in dict.fromkeys(cases_for(f) for f in files):  # once each, in order
        if not file.exists():
            print(f"{file}:1:1 no test file: write one beside the pipeline", file=sys.stderr)
            failed += 1
            continue
        outcomes, problems = run_file(file)
        for problem in problems:
            print(problem, file=sys.stderr)
        failed += bool(problems)
        for outcome in outcomes:
            print(f"{'ok  ' if not outcome.problems else 'FAIL'}  {file}: {outcome.name}")
            for problem in outcome.problems:
                print(f"  {problem}", file=sys.stderr)
            passed += not outcome.problems
            failed += bool(outcome.problems)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def _check_durability(value: str) -> None:
    if value not in {"normal", "full"}:
        raise ValueError(f"--durability: expected normal or full, got {value!r}")


def _ack_readings(value: str) -> Literal["on-commit", "on-receipt"]:
    if value not in {"on-commit", "on-receipt"}:
        raise ValueError(f"--ack-readings: expected on-commit or on-receipt, got {value!r}")
    return "on-commit" if value == "on-commit" else "on-receipt"


def _ttl(spec: str) -> dict[str, float]:
    """`digest=7d,health=1d` -> {"digest": 604800.0, "health": 86400.0}."""
    from gateway.outbox import CLASS  # noqa: PLC0415

    ttl: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        kind, _, duration = item.partition("=")
        if kind not in CLASS or not duration:
            kinds = ", ".join(CLASS)
            raise ValueError(f"--outbox-ttl: expected KIND=DURATION, KIND in {kinds}; got {item!r}")
        ttl[kind] = parse_duration(duration)
    return ttl


def _gateway(args: argparse.Namespace) -> int:
    from gateway.app import GatewayOptions, run_gateway  # noqa: PLC0415
    from gateway.datadir import DataDirError, check_data_dir  # noqa: PLC0415
    from gateway.metrics import ListenError  # noqa: PLC0415
    from gateway.spec import PipelineError, load_pipeline  # noqa: PLC0415

    if not args.pipeline:
        print(
            "fogline gateway: --pipeline FILE is required (or set FOGLINE_PIPELINE)",
            file=sys.stderr,
        )
        return 2
    try:
        pipeline = load_pipeline(args.pipeline)
        broker = with_password_file(parse_broker_url(args.broker), args.broker_password_file)
        uplink = parse_broker_url(args.uplink) if args.uplink else broker
        metrics_port = _port(args.metrics_port, "--metrics-port") if args.metrics_port else None
        _check_durability(args.durability)
        ack_readings = _ack_readings(args.ack_readings)
        max_bytes = parse_size(args.outbox_max_bytes)
        ttl = _ttl(args.outbox_ttl or "")
        max_rate = float(args.uplink_max_rate) if args.uplink_max_rate else None
        keepalive = _seconds(args.uplink_keepalive, "--uplink-keepalive")
        check_data_dir(Path(args.data_dir))  # makes nothing: see there
        uplink_tls = tls_files(args.ca, args.cert, args.key)
        shared = (broker.host, broker.port) == (uplink.host, uplink.port)
        broker_tls = tls_files(
            args.edge_ca or (args.ca if shared else None),
            args.edge_cert or (args.cert if shared else None),
            args.edge_key or (args.key if shared else None),
        )
        identity = _identity(args)
    except PipelineError as exc:
        print(exc, file=sys.stderr)
        print(
            f"fix the pipeline, then check it with: fogline pipeline check {args.pipeline}",
            file=sys.stderr,
        )
        return 1
    except ValueError as exc:
        print(redact(f"fogline gateway: {exc}"), file=sys.stderr)
        return 2
    options = GatewayOptions(
        pipeline=pipeline,
        broker=broker,
        uplink=uplink,
        gateway_id=args.id,
        data_dir=Path(args.data_dir),
        metrics_port=metrics_port,
        metrics_host=args.metrics_host,
        durability=args.durability,
        ack_readings=ack_readings,
        outbox_max_bytes=max_bytes,
        outbox_ttl=ttl,
        uplink_max_rate=max_rate,
        uplink_keepalive=keepalive,
        identity=identity,
        uplink_tls=uplink_tls,
        broker_tls=broker_tls,
    )
    try:
        return asyncio.run(run_gateway(options))
    except DataDirError as exc:
        print(redact(f"fogline gateway: {exc}"), file=sys.stderr)
        return 2
    except (IdentityError, PermissionError) as exc:
        print(redact(f"fogline gateway: {exc}"), file=sys.stderr)
    except ListenError as exc:
        print(
            f"fogline gateway: {exc}; choose another --metrics-port, or a --metrics-host "
            "of this machine",
            file=sys.stderr,
        )
    return 1


def _identity(args: argparse.Namespace) -> Identity | None:
    """The gateway's identity file; without one, only with --insecure-unsigned."""
    path = Path(args.identity) if args.identity else Path(args.data_dir) / IDENTITY_FILE
    if not args.identity and not path.exists() and args.insecure_unsigned:
        return None
    try:
        identity = read_identity(path)
    except IdentityError as exc:
        if args.identity:
            raise ValueError(str(exc)) from None
        raise ValueError(
            f"no identity: {exc}; or, for development only, --insecure-unsigned"
        ) from None
    if identity.gateway != args.id:
        raise ValueError(
            f"--id {args.id!r} but the identity file {path} is for {identity.gateway!r}: "
            f"run with --id {identity.gateway}, or provision {args.id}"
        )
    return identity


def _port(text: str, flag: str) -> int:
    """A TCP port; the error names the flag."""
    if not text.strip().isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{flag}: expected a port number 1-65535, got {text!r}")
    return int(text)


def _seconds(text: str, flag: str) -> int:
    """A whole number of seconds from 1 to 3600; the error names the flag."""
    if not text.isdigit() or not 1 <= int(text) <= 3600:
        raise ValueError(f"{flag}: expected whole seconds from 1 to 3600, got {text!r}")
    return int(text)


def _session_expiry(text: str) -> int:
    """Whole seconds from `5m`, `300` or `0` (the session ends with the connection)."""
    from cloud.ingest import MAX_SESSION_EXPIRY  # noqa: PLC0415

    try:
        seconds = float(text) if text.strip().isdigit() else parse_duration(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= MAX_SESSION_EXPIRY:
        raise ValueError(
            f"--session-expiry: expected a duration like 5m, 1h or 300 (seconds), got {text!r}"
        )
    return round(seconds)


def _cloud(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

    from cloud.app import (  # noqa: PLC0415
        CloudOptions,
        parse_days,
        parse_http,
        parse_seconds,
        run_cloud,
    )
    from cloud.db import check_url, db_error  # noqa: PLC0415
    from cloud.escalations import DEFAULT_MODELS, models_dir  # noqa: PLC0415
    from cloud.ingest import IngestOptions  # noqa: PLC0415
    from fogline import gateways_cli  # noqa: PLC0415

    try:
        broker = with_password_file(parse_broker_url(args.broker), args.broker_password_file)
        host, port = parse_http(args.http)
        check_url(args.db)
        retention_days = parse_days(args.retention_days, "--retention-days")
        silent_after = (
            parse_seconds(args.silent_after, "--silent-after") if args.silent_after else None
        )
        models = models_dir(args.models, "--models") if args.models else DEFAULT_MODELS
        broker_tls = tls_files(args.ca, args.cert, args.key)
        https = https_files(args.tls_cert, args.tls_key)
        session_expiry = _session_expiry(args.session_expiry)
        files = gateways_cli.broker_files(args.broker_dir, args.broker_reload, args.broker_owner)
    except ValueError as exc:
        print(redact(f"fogline cloud: {exc}"), file=sys.stderr)
        return 2
    from cloud.notify import NotifyOptions  # noqa: PLC0415

    options = CloudOptions(
        broker=broker,
        notify=NotifyOptions(public_url=args.public_url or None),
        db_url=args.db,
        http_host=host,
        http_port=port,
        replica=args.replica,
        ingest=IngestOptions(session_expiry=session_expiry),
        retention_days=retention_days,
        models_dir=models,
        silent_after=silent_after,
        signing_key=Path(args.signing_key),
        allow_unregistered=args.allow_unregistered,
        broker_tls=broker_tls,
        https=https,
        broker_files=files,
    )
    try:
        return asyncio.run(run_cloud(options))
    except OSError as exc:
        print(redact(f"fogline cloud: cannot listen on {args.http}: {exc}"), file=sys.stderr)
    except SQLAlchemyError as exc:
        print(
            redact(f"fogline cloud: cannot use the database {args.db}: {db_error(exc)}"),
            file=sys.stderr,
        )
    return 1


if __name__ == "__main__":
    sys.exit(main())
