"""`fogline devices {factory,farm}`: run a simulated fleet against a broker or a CoAP server.

Wired into `fogline` with `devices.cli.add_parser(subparsers)` and `devices.cli.run(args)`;
`python -m devices` builds the same parser on its own. Every flag can also come from a
`FOGLINE_<FLAG>` variable (`--sample-rate` from `FOGLINE_SAMPLE_RATE`); a flag on the
command line wins. Values arrive as text either way and are checked here, so an error reads
the same whichever way it was given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from devices.clock import SimClock, SystemClock
from devices.codec import FORMATS, Codec, Format
from devices.factory import FAULTS as FACTORY_FAULTS
from devices.factory import FactoryConfig, FactoryFleet, machine_names
from devices.farm import FAULTS as FARM_FAULTS
from devices.farm import FarmConfig, FarmFleet, plot_names
from devices.faults import FaultKind, FaultSpec, FaultSpecError, parse_faults, seconds
from devices.fleet import Fleet
from devices.labels import labels, write_labels
from devices.runner import Runner, RunStats
from devices.sites import PROFILES, Site, site
from devices.status import Status
from devices.transport import (
    CoapTransport,
    MqttTransport,
    OnCommand,
    StdoutTransport,
    Transport,
    coap_base,
)
from fogline.clihelp import Formatter
from fogline.tls import tls_files, with_password_file
from fogline.urls import parse_broker_url

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
TRUE = {"1", "true", "yes", "on"}
FLEETS: dict[str, dict[str, Any]] = {
    "factory": {
        "help": "rotating machines: vibration waveform features, temperature, current, rpm",
        "rate": "1",
        "format": "json",
        "faults": FACTORY_FAULTS,
        "example": "bearing:m-03@60s+120s,overheating:m-07@30s",
    },
    "farm": {
        "help": "soil plots and irrigation lines: moisture, valve, flow, pressure (SenML)",
        "rate": "0.2",
        "format": "senml",
        "faults": FARM_FAULTS,
        "example": "leak:plot-7@30s,dryout:plot-2@10s+5m",
    },
}


class _Subparsers(Protocol):
    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


class _Arguments(Protocol):  # a parser or an argument group
    def add_argument(self, *names: str, **kwargs: Any) -> argparse.Action: ...


def _env(flag: str) -> str | None:
    return os.environ.get("FOGLINE_" + flag.upper().replace("-", "_"))


def _flag(
    p: _Arguments,
    flag: str,
    help_: str,
    default: str | None = None,
    *,
    metavar: str | None = None,
    switch: bool = False,
) -> None:
    var = "FOGLINE_" + flag.upper().replace("-", "_")
    env = _env(flag)
    if switch:
        on = env is not None and env.strip().lower() in TRUE
        p.add_argument(f"--{flag}", action="store_true", default=on, help=f"{help_} [env {var}]")
        return
    shown = f" (default: {default})" if default else ""
    value = env if env is not None else default
    p.add_argument(f"--{flag}", default=value, metavar=metavar, help=f"{help_} [env {var}]{shown}")


def add_parser(subparsers: _Subparsers) -> None:
    """Add `devices {factory,farm}` to a parser's subcommands."""
    devices = subparsers.add_parser(
        "devices",
        help="simulate a factory or a farm, with fault injection and ground truth",
        description="Simulated fleets for the demo deployments. Deterministic per --seed.",
        epilog="example:\n  fogline devices factory --count 8 --faults overheating:m-03@15s",
        formatter_class=Formatter,
    )
    fleets = devices.add_subparsers(dest="fleet", required=True, metavar="{factory,farm}")
    for name, about in FLEETS.items():
        faults: dict[str, FaultKind] = about["faults"]
        epilog = "faults (--faults FAULT:DEVICE@START[+DURATION][*STRENGTH],...):\n" + "\n".join(
            f"  {k.name:<12} {k.effect}" for k in faults.values()
        )
        epilog += f"\nexample: --faults {about['example']}"
        p = fleets.add_parser(
            name,
            help=about["help"],
            description=about["help"],
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        where = p.add_mutually_exclusive_group()
        _flag(where, "broker", f"MQTT broker URL (default: {DEFAULT_BROKER})", metavar="URL")
        _flag(
            where,
            "coap",
            "POST readings to this CoAP base URL instead, e.g. coap://host:5683",
            metavar="URL",
        )
        _flag(where, "stdout", "print `topic payload` lines instead of sending", switch=True)
        _flag(p, "count", "number of devices", "10", metavar="N")
        _flag(p, "rate", "readings per device per simulated second", about["rate"], metavar="HZ")
        _flag(
            p,
            "duration",
            "how long to run, wall clock (10s, 5m; 0: until Ctrl-C)",
            "0",
            metavar="S",
        )
        _flag(p, "seed", "random seed: same seed, same signals", "1", metavar="N")
        _flag(p, "faults", "fault schedule, e.g. " + about["example"], metavar="SPEC")
        _flag(
            p,
            "site",
            "site profile: " + ", ".join(PROFILES) + ", or seed:N for one drawn at random; "
            "then any FIELD=VALUE overrides (devices/sites.py), e.g. field,noise=1.4",
            "reference",
            metavar="SPEC",
        )
        _flag(
            p,
            "disorder",
            "share of readings delivered late (after a newer one) or twice, 0..0.5 "
            "(default: the site's, 0 but for disorder=SHARE in --site)",
            metavar="SHARE",
        )
        _flag(p, "labels", "write the ground truth (JSON lines) to this file", metavar="FILE")
        _flag(p, "speed", "simulated seconds per real second", "1", metavar="X")
        _flag(p, "ca", "CA file to trust for an mqtts:// broker", metavar="FILE")
        _flag(p, "cert", "client certificate, for a broker that asks (mutual TLS)", metavar="FILE")
        _flag(p, "key", "the client certificate's key", metavar="FILE")
        _flag(p, "broker-password-file", "file holding the broker password", metavar="FILE")
        _flag(p, "format", "payload: " + ", ".join(FORMATS), about["format"], metavar="FORMAT")
        _flag(p, "qos", "MQTT QoS of readings (0 or 1)", "0", metavar="QOS")
        _flag(p, "non-confirmable", "CoAP: send NON requests, do not wait for replies", switch=True)
        _flag(
            p, "client-id", "MQTT client id (default: fogline-devices-<fleet>-<pid>)", metavar="ID"
        )
        _flag(
            p,
            "sim-start",
            "simulated clock start, ISO 8601 or epoch (default: now)",
            metavar="TIME",
        )
        if name == "factory":
            _flag(p, "raw", "also send the raw vibration block and its sample rate", switch=True)
            _flag(p, "sample-rate", "vibration sample rate in Hz", "2000", metavar="HZ")
            _flag(p, "block", "vibration samples per reading", "256", metavar="N")


@dataclass(frozen=True)
class Options:
    fleet: str
    config: FactoryConfig | FarmConfig
    transport: Callable[[OnCommand], Transport]
    format: Format
    rate: float
    duration: float | None
    seed: int
    faults: list[FaultSpec]
    site: Site
    labels: Path | None
    speed: float
    sim_start: float | None


def run(args: argparse.Namespace) -> int:
    """Run `fogline devices ...` from parsed arguments; the exit status."""
    prog = f"fogline devices {args.fleet}"
    try:
        options = _options(args)
    except FaultSpecError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"{prog}: --faults {problem}\n")
        return 2
    except ValueError as exc:
        sys.stderr.write(f"{prog}: {exc}\n")
        return 2
    try:
        return asyncio.run(_main(options))
    except BrokenPipeError:  # `--stdout | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _number(args: argparse.Namespace, flag: str, kind: type[int | float], low: float) -> Any:
    text = getattr(args, flag.replace("-", "_"))
    what = "an integer" if kind is int else "a number"
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise ValueError(f"--{flag}: expected {what}, got {text!r}") from None
    if not math.isfinite(value) or value < low:
        raise ValueError(f"--{flag}: expected {what} of at least {low:g}, got {text!r}")
    return value


def _options(args: argparse.Namespace) -> Options:
    fleet = args.fleet
    count = _number(args, "count", int, 1)
    rate = _number(args, "rate", float, 1e-6)
    speed = _number(args, "speed", float, 1e-6)
    seed = _number(args, "seed", int, 0)
    try:
        duration = seconds(args.duration)
    except ValueError as exc:
        raise ValueError(f"--duration: {exc}") from None
    if args.format not in FORMATS:
        raise ValueError(f"--format: expected one of {', '.join(FORMATS)}, got {args.format!r}")
    fmt: Format = args.format
    config: FactoryConfig | FarmConfig
    if fleet == "factory":
        if args.raw and fmt != "json":
            raise ValueError(f"--raw: the raw block travels only as JSON, not {fmt}")
        sample_rate = _number(args, "sample-rate", float, 1)
        block = _number(args, "block", int, 32)
        try:
            config = FactoryConfig(count, sample_rate=sample_rate, block=block, raw=args.raw)
        except ValueError as exc:
            raise ValueError(f"--sample-rate: {exc}") from None
        names = machine_names(config)[0]
    else:
        config = FarmConfig(count)
        names = plot_names(config)[0]
    faults = parse_faults(args.faults or "", FLEETS[fleet]["faults"], names)
    try:
        chosen = site(args.site)
    except ValueError as exc:
        raise ValueError(f"--site: {exc}") from None
    disorder = chosen.disorder if args.disorder is None else _number(args, "disorder", float, 0)
    if disorder > 0.5:
        raise ValueError(f"--disorder: expected a share of at most 0.5, got {args.disorder!r}")
    path = Path(args.labels) if args.labels else None
    if path is not None and not path.parent.is_dir():
        raise ValueError(f"--labels: expected a file in an existing directory, got {str(path)!r}")
    return Options(
        fleet=fleet,
        config=config,
        transport=_transport(args, fmt),
        format=fmt,
        rate=rate,
        duration=duration or None,
        seed=seed,
        faults=faults,
        site=dataclasses.replace(chosen, disorder=disorder),
        labels=path,
        speed=speed,
        sim_start=_sim_start(args.sim_start),
    )


def _transport(args: argparse.Namespace, fmt: Format) -> Callable[[OnCommand], Transport]:
    """Check the destination now; build the transport later, inside the event loop."""
    command_filter = (
        FactoryFleet.COMMAND_FILTER if args.fleet == "factory" else FarmFleet.COMMAND_FILTER
    )
    if args.stdout:
        return lambda _: StdoutTransport(binary=fmt == "senml-cbor")
    if args.coap:
        try:
            base = coap_base(args.coap)
        except ValueError as exc:
            raise ValueError(f"--coap: {exc}") from None
        content_format = Codec(fmt, {}, {}).content_format
        confirmable = not args.non_confirmable
        return lambda _: CoapTransport(base, content_format, confirmable=confirmable)
    try:
        url = with_password_file(
            parse_broker_url(args.broker or DEFAULT_BROKER), args.broker_password_file
        )
    except ValueError as exc:
        raise ValueError(f"--broker: {exc}") from None
    if args.qos not in {"0", "1"}:
        raise ValueError(f"--qos: expected 0 or 1, got {args.qos!r}")
    qos = int(args.qos)
    client_id = args.client_id or f"fogline-devices-{args.fleet}-{os.getpid()}"
    tls = tls_files(args.ca, args.cert, args.key)
    return lambda on_command: MqttTransport(
        url, client_id, qos=qos, command_filters=[command_filter], on_command=on_command, tls=tls
    )


def _sim_start(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            "--sim-start: expected an ISO 8601 time like 2026-06-01T05:00:00Z or epoch "
            f"seconds, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def build_fleet(options: Options, clock: SimClock) -> Fleet:
    if isinstance(options.config, FactoryConfig):
        return FactoryFleet(options.config, options.seed, clock, options.faults, options.site)
    return FarmFleet(options.config, options.seed, clock, options.faults, options.site)


async def _main(options: Options) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await _simulate(options, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _simulate(options: Options, stop: asyncio.Event) -> int:
    wall = SystemClock()
    fleet = build_fleet(options, SimClock(wall.time(), options.speed, options.sim_start))
    transport = options.transport(fleet.command)
    async with contextlib.AsyncExitStack() as stack:
        connected = await _connect(stack, transport, stop, options.duration)
        if connected is None:
            sys.stderr.write(
                f"fogline devices: could not reach {transport.name} within --duration "
                f"{options.duration:g}s; nothing was sent. Is the broker running?\n"
            )
            return 1
        if not connected:
            return 130
        fleet.start_at(wall.time())  # the first reading is due now, however long that took
        codec = Codec(options.format, fleet.UNITS, fleet.base_names())
        if options.labels is not None:
            write_labels(options.labels, labels(fleet))
        status = Status(fleet, wall, sys.stderr, tty=sys.stderr.isatty())
        runner = Runner(
            fleet,
            transport,
            codec,
            rate=options.rate,
            duration=options.duration,
            clock=wall,
            status=status,
        )
        try:
            stats = await runner.run(stop)
        finally:
            status.close()
            if options.labels is not None:
                write_labels(options.labels, labels(fleet, wall.time()))
    _summary(fleet, transport, stats, options)
    return 0


async def _connect(
    stack: contextlib.AsyncExitStack,
    transport: Transport,
    stop: asyncio.Event,
    within: float | None = None,
) -> bool | None:
    """Enter the transport unless a signal comes first (True), or `within` seconds pass
    first (None: `--duration` bounds the whole run, connecting included); an absent broker
    is retried meanwhile. False: stopped by a signal."""
    entering = asyncio.create_task(stack.enter_async_context(transport), name="devices.connect")
    stopping = asyncio.create_task(stop.wait(), name="devices.stop-wait")
    await asyncio.wait({entering, stopping}, return_when=asyncio.FIRST_COMPLETED, timeout=within)
    stopping.cancel()
    if entering.done():
        entering.result()
        return True
    entering.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await entering
    await transport.__aexit__(None, None, None)
    return False if stop.is_set() else None


def _summary(fleet: Fleet, transport: Transport, stats: RunStats, options: Options) -> None:
    elapsed = max(stats.ended - stats.started, 1e-9)
    text = (
        f"{fleet.name}: {stats.sent:,} readings from {fleet.size} devices to {transport.name} "
        f"in {elapsed:.1f}s ({stats.sent / elapsed:,.0f}/s)"
    )
    if stats.unsent:
        text += f", {stats.unsent:,} unsent"
    if fleet.commands_applied:
        text += f", {fleet.commands_applied} commands applied"
    if options.labels is not None:
        text += f"; labels in {options.labels}"
    sys.stderr.write(text + "\n")


def main(argv: list[str] | None = None) -> int:
    """`python -m devices factory ...`: the same parser as `fogline devices`, standalone.

    The log level comes from FOGLINE_LOG_LEVEL (INFO by default).
    """
    import logging  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m")  # usage: python -m devices factory
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["devices", *(sys.argv[1:] if argv is None else argv)])
    level = (_env("log-level") or "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("gmqtt").setLevel(logging.ERROR)
    try:
        return run(args)
    except KeyboardInterrupt:  # before its own handler is in place: quietly, as `fogline`
        return 130
