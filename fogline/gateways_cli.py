"""`fogline cloud gateway add|revoke|list` and `fogline gateway key`: provisioning (issue 9).

Run where the cloud's database, signing key and broker files are:

    fogline cloud gateway add gw1 --db URL --broker-dir /etc/mosquitto/fogline \\
        --reload 'systemctl reload mosquitto' --out gw1-identity.json

copies `gw1-identity.json` to the gateway (its credentials and the cloud's public key),
where `fogline gateway --identity gw1-identity.json` (or the file in `--data-dir`) uses
it. To keep the gateway's private key on the gateway, make it there first
(`fogline gateway key --data-dir DIR` prints its public key) and add it with
`--public-key`.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fogline.clihelp import command

DEFAULT_SIGNING_KEY = "./fogline-cloud.key"


def _subcommands(parser: argparse.ArgumentParser) -> Any:
    """The parser's subcommands, made on first use (the people commands share them)."""
    for action in parser._actions:  # noqa: SLF001 - argparse keeps no public handle
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            return action
    return parser.add_subparsers(dest="cloud_command")


def add_parsers(cloud: argparse.ArgumentParser) -> None:
    sub = _subcommands(cloud)
    gateway = command(
        sub,
        "gateway",
        "provision gateways: add, revoke, list",
        "fogline cloud gateway add gw1 --broker-dir /etc/mosquitto/fogline --out gw1.json",
        description="Provision gateways: each gets its own broker user (confined to its "
        "topics), a registered Ed25519 key and an identity file to copy to it; the cloud "
        "stores only batches signed by a registered key. docs/security.md has the model.",
    )
    sub.metavar = "{" + ",".join(sub.choices) + "}"  # {user,token,gateway}: people's first
    gateways = gateway.add_subparsers(dest="gateway_command", required=True)

    def leaf(name: str, help_: str, example: str) -> argparse.ArgumentParser:
        p = command(gateways, name, help_, example)
        # SUPPRESS: a default here would overwrite `fogline cloud --db URL gateway ...`.
        p.add_argument("--db", default=argparse.SUPPRESS, help="database URL, as for the cloud")
        return p

    def broker(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--broker-dir",
            help="directory of the broker's `passwords` and `acl` files (made if missing); "
            "without it no broker credentials are written",
        )
        p.add_argument(
            "--reload",
            help="command that makes the broker read them again, e.g. "
            "'docker compose kill -s HUP cloud-broker' (default: print what to do)",
        )
        p.add_argument(
            "--broker-owner", help="UID:GID the broker runs as (files stay 0600, its own)"
        )

    add = leaf(
        "add",
        "register a gateway's key, give it broker credentials, write its identity",
        "fogline cloud gateway add gw1 --broker-dir /etc/mosquitto/fogline \\\n"
        "    --reload 'systemctl reload mosquitto' --out gw1.json",
    )
    add.add_argument("id", help="the gateway's id (its --id)")
    add.add_argument("--public-key", help="the gateway's (fogline gateway key); default: make one")
    add.add_argument("--out", help="write the identity file here (default: print it)")
    add.add_argument(
        "--signing-key",
        default=argparse.SUPPRESS,
        help=f"the cloud's signing key (default: {DEFAULT_SIGNING_KEY}, made if missing)",
    )
    broker(add)
    revoke = leaf(
        "revoke",
        "refuse a gateway from now on: its keys and its broker user",
        "fogline cloud gateway revoke gw1 --broker-dir /etc/mosquitto/fogline "
        "--reload 'systemctl reload mosquitto'",
    )
    revoke.add_argument("id", help="the gateway's id")
    revoke.add_argument("--key-id", help="revoke only this key (after a key rotation)")
    broker(revoke)
    leaf(
        "list", "gateways and their keys", "fogline cloud gateway list --db sqlite:///./fogline.db"
    )
    init = command(
        gateways,
        "init",
        "once per deployment: the broker's ACL, the cloud's broker user and key",
        "fogline cloud gateway init --broker-dir /etc/mosquitto/fogline "
        "--password-out cloud-broker-password",
    )
    init.add_argument(
        "--password-out", required=True, help="write the cloud's broker password here (0600)"
    )
    init.add_argument(
        "--signing-key",
        default=argparse.SUPPRESS,
        help=f"the cloud's signing key (default: {DEFAULT_SIGNING_KEY}, made if missing)",
    )
    broker(init)


def add_key_parser(gateway: argparse.ArgumentParser) -> None:
    """`fogline gateway key`: print (making it if needed) the gateway's public key."""
    sub = gateway.add_subparsers(dest="gateway_command")
    key = command(
        sub,
        "key",
        "print this gateway's public key (made on first use)",
        "fogline gateway key --data-dir /var/lib/fogline   # then: cloud gateway add --public-key",
    )
    key.add_argument("--data-dir", default=argparse.SUPPRESS, help="as for the gateway")


def run_key(args: argparse.Namespace) -> int:
    from fogline import signing  # noqa: PLC0415
    from fogline.identity import KEY_FILE  # noqa: PLC0415

    key, _ = signing.load_or_create_key(Path(args.data_dir) / KEY_FILE)
    print(signing.public_text(key))
    return 0


def _broker_files(args: argparse.Namespace) -> Any:
    return broker_files(
        getattr(args, "broker_dir", None),
        getattr(args, "reload", None),
        getattr(args, "broker_owner", None),
    )


def broker_files(directory: str | None, reload: str | None, owner_text: str | None) -> Any:
    """The broker's files from --broker-dir, --reload (or --broker-reload) and
    --broker-owner; None without a directory. ValueError names a bad flag."""
    from cloud.provision import BrokerFiles  # noqa: PLC0415

    if not directory:
        return None
    owner = None
    if owner_text:
        uid, _, gid = owner_text.partition(":")
        if not uid.isdigit() or not gid.isdigit():
            raise ValueError(f"--broker-owner: expected UID:GID, got {owner_text!r}")
        owner = (int(uid), int(gid))
    return BrokerFiles(Path(directory), reload or None, owner)


def run(args: argparse.Namespace) -> int:
    from cloud.db import check_url, make_engine, migrate  # noqa: PLC0415
    from cloud.provision import (  # noqa: PLC0415
        ProvisionError,
        add_gateway,
        list_gateways,
        revoke_gateway,
    )
    from fogline import signing  # noqa: PLC0415
    from fogline.identity import write_identity  # noqa: PLC0415

    where = f"fogline cloud gateway {args.gateway_command}"
    if args.gateway_command == "init":
        return _init(args, where)
    try:
        check_url(args.db)
        files = _broker_files(args)
        engine = make_engine(args.db)
    except ValueError as exc:
        print(f"{where}: {exc}", file=sys.stderr)
        return 2
    try:
        migrate(engine)
        if args.gateway_command == "list":
            for row in list_gateways(engine):
                state = "revoked " + _when(row["revoked_at"]) if row["revoked_at"] else "active"
                added = _when(row["added_at"])
                print(f"{row['gateway']}\tkey {row['key_id']}\tadded {added}\t{state}")
            return 0
        if args.gateway_command == "revoke":
            n = revoke_gateway(engine, args.id, key_id=args.key_id, broker=files)
            if n == 0:
                print(f"{where}: {args.id} has no active key to revoke", file=sys.stderr)
                return 1
            print(f"revoked {n} key(s) of {args.id}; its batches are refused from now on")
            if files is not None:
                try:
                    print(files.apply())
                except ProvisionError as exc:
                    print(
                        f"{where}: {args.id} is revoked, but the broker still lets it connect "
                        f"until it reloads: {exc}",
                        file=sys.stderr,
                    )
                    return 1
            return 0
        cloud_key, made = signing.load_or_create_key(Path(args.signing_key))
        if made:
            print(f"made the cloud's signing key {args.signing_key}", file=sys.stderr)
        identity = add_gateway(engine, args.id, cloud_key, public_key=args.public_key, broker=files)
        if args.out:
            write_identity(Path(args.out), identity)
            print(f"wrote {args.out} (a secret: copy it to the gateway, then delete it here)")
        else:
            sys.stdout.write(identity.to_json().decode())
        if files is None:
            print(
                "no --broker-dir: no broker credentials were written; the identity's "
                "password works only once the broker knows it",
                file=sys.stderr,
            )
        else:
            try:
                print(files.apply(), file=sys.stderr)
            except ProvisionError as exc:
                print(
                    f"{where}: {args.id} is added, but its broker password works only once "
                    f"the broker reloads: {exc}",
                    file=sys.stderr,
                )
                return 1
        return 0  # noqa: TRY300 - every branch returns; `finally` disposes of the engine
    except (ProvisionError, OSError) as exc:
        print(f"{where}: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()


def _init(args: argparse.Namespace, where: str) -> int:
    """The cloud's side of a deployment, kept if it exists: run it on every start."""
    from cloud.provision import cloud_user, write_acl  # noqa: PLC0415
    from fogline import signing  # noqa: PLC0415

    if not getattr(args, "broker_dir", None):
        print(f"{where}: --broker-dir is required", file=sys.stderr)
        return 2
    try:
        files = _broker_files(args)
        if not files.acl.exists():
            write_acl(files.acl)
        out = Path(args.password_out)
        if not out.exists() or "fogline-cloud" not in files.users():
            out.unlink(missing_ok=True)
            signing.write_secret(out, cloud_user(files))
            print(f"made the cloud's broker user fogline-cloud; its password is in {out}")
        signing.load_or_create_key(Path(args.signing_key))
    except (ValueError, OSError) as exc:
        print(f"{where}: {exc}", file=sys.stderr)
        return 1
    return 0


def _when(ts: Any) -> str:
    return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
