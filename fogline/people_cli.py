"""`fogline cloud user ...` and `fogline cloud token ...`: people, on the cloud's database.

The first admin is made here, on the machine that runs the cloud: whoever can write its
database already controls everything, so nothing on the network can create users until
an admin exists (no default password, no first-visitor-wins setup page).

Passwords come from `--password-stdin` (one line), else `FOGLINE_PASSWORD`, else a prompt
(twice) when a terminal is attached; never from a flag, which `ps` would show.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fogline.clihelp import command

if TYPE_CHECKING:  # sqlalchemy is imported only when a people command runs
    from sqlalchemy import Engine

ROLES = ("viewer", "operator", "admin")


def add_parsers(cloud: argparse.ArgumentParser) -> None:
    sub = cloud.add_subparsers(dest="cloud_command", metavar="{user,token}")

    def leaf(parent: Any, name: str, help_: str, example: str) -> argparse.ArgumentParser:
        """A command that takes --db after it too (`fogline cloud user add x --db URL`)."""
        p = command(parent, name, help_, example)
        # SUPPRESS: without it the default here would overwrite `fogline cloud --db URL`.
        p.add_argument("--db", default=argparse.SUPPRESS, help="database URL, as for the cloud")
        return p

    user = command(
        sub,
        "user",
        "add, list, change or remove users of the console and API",
        "fogline cloud user add ana --role admin --db sqlite:///./fogline.db",
        description="Users of the console and the API, each with a role: viewer reads, "
        "operator also acts on alerts and silences, admin also sends models and manages "
        "webhooks. The first admin can only be made here, on the cloud's machine.",
    )
    users = user.add_subparsers(dest="user_command", required=True)
    add = leaf(
        users,
        "add",
        "add a user (the first admin too); asks for the password in a terminal",
        "fogline cloud user add ana --role admin --db sqlite:///./fogline.db\n"
        'echo "$PW" | fogline cloud user add night --role operator --password-stdin',
    )
    add.add_argument("name", help="the name they sign in with")
    add.add_argument("--role", choices=ROLES, default="viewer", help="default: viewer")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.add_argument(
        "--no-password", action="store_true", help="a user for API tokens only (no sign-in)"
    )
    leaf(
        users,
        "list",
        "list users and their roles",
        "fogline cloud user list --db sqlite:///./fogline.db",
    )
    passwd = leaf(
        users,
        "passwd",
        "set a user's password (signs them out everywhere)",
        "fogline cloud user passwd ana --db sqlite:///./fogline.db",
    )
    passwd.add_argument("name", help="the user")
    passwd.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    role = leaf(
        users,
        "role",
        "change a user's role",
        "fogline cloud user role night admin --db sqlite:///./fogline.db",
    )
    role.add_argument("name", help="the user")
    role.add_argument("role", choices=ROLES, help="their new role")
    remove = leaf(
        users,
        "remove",
        "remove a user, their tokens and sessions",
        "fogline cloud user remove night --db sqlite:///./fogline.db",
    )
    remove.add_argument("name", help="the user")

    token = command(
        sub,
        "token",
        "API tokens: add (printed once), list, revoke",
        "fogline cloud token add --user ana --name grafana --db sqlite:///./fogline.db",
        description="API tokens (`Authorization: Bearer fgl_...`): each acts as a user, "
        "with that user's role. A token is printed once; only its hash is kept.",
    )
    tokens = token.add_subparsers(dest="token_command", required=True)
    tadd = leaf(
        tokens,
        "add",
        "make an API token for a user; it is printed once",
        "fogline cloud token add --user ana --name grafana --db sqlite:///./fogline.db",
    )
    tadd.add_argument("--user", required=True, help="the user it acts as (and with whose role)")
    tadd.add_argument("--name", default="", help="what it is for, e.g. grafana")
    leaf(
        tokens,
        "list",
        "list tokens (never the secrets)",
        "fogline cloud token list --db sqlite:///./fogline.db",
    )
    revoke = leaf(
        tokens,
        "revoke",
        "revoke a token by id",
        "fogline cloud token revoke 3 --db sqlite:///./fogline.db",
    )
    revoke.add_argument("id", type=int, help="the token's id, from `token list`")


def _password(args: argparse.Namespace) -> str:
    if getattr(args, "password_stdin", False):
        return sys.stdin.readline().rstrip("\r\n")
    if os.environ.get("FOGLINE_PASSWORD"):
        return os.environ["FOGLINE_PASSWORD"]
    if not sys.stdin.isatty():
        raise ValueError(
            "no password: pass --password-stdin (and pipe it in), set FOGLINE_PASSWORD, "
            "or run in a terminal to be asked"
        )
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def _day(epoch: float | None) -> str:
    if epoch is None:
        return "never"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def run(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

    from cloud import people  # noqa: PLC0415
    from cloud.db import check_url, db_error, make_engine, migrate  # noqa: PLC0415

    try:
        check_url(args.db)
    except ValueError as exc:
        print(f"fogline cloud: {exc}", file=sys.stderr)
        return 2
    engine = make_engine(args.db)
    now = time.time()
    try:
        migrate(engine)
        if args.cloud_command == "user":
            return _user(args, engine, now)
        return _token(args, engine, now)
    except (people.PeopleError, ValueError) as exc:
        print(f"fogline cloud {args.cloud_command}: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        shown = engine.url.render_as_string(hide_password=True)
        print(f"fogline cloud: cannot use the database {shown}: {db_error(exc)}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()


def _user(args: argparse.Namespace, engine: Engine, now: float) -> int:
    from cloud import people  # noqa: PLC0415

    command = args.user_command
    if command == "add":
        password = None if args.no_password else _password(args)
        people.add_user(engine, args.name, args.role, password, now)
        print(f"user {args.name} added ({args.role})")
        if password is None:
            print(f"make it a token: fogline cloud token add --user {args.name}")
    elif command == "list":
        for name, role, has_password in people.list_users(engine):
            print(f"{name}\t{role}\t{'password' if has_password else 'tokens only'}")
    elif command == "passwd":
        people.set_password(engine, args.name, _password(args))
        print(f"password of {args.name} changed; their sessions are closed")
    elif command == "role":
        people.set_role(engine, args.name, args.role)
        print(f"{args.name} is now {args.role}")
    elif command == "remove":
        people.remove_user(engine, args.name)
        print(f"user {args.name} removed, with their tokens and sessions")
    return 0


def _token(args: argparse.Namespace, engine: Engine, now: float) -> int:
    from cloud import people  # noqa: PLC0415

    command = args.token_command
    if command == "add":
        token_id, token = people.add_token(engine, args.user, args.name, now)
        print(token)
        print(
            f"token {token_id} for {args.user}: shown this once, only its hash is kept. "
            "Send it as: Authorization: Bearer <token>",
            file=sys.stderr,
        )
    elif command == "list":
        for token_id, user, name, created, used, revoked in people.list_tokens(engine):
            state = "revoked" if revoked else f"last used {_day(used)}"
            print(f"{token_id}\t{user}\t{name or '-'}\tmade {_day(created)}\t{state}")
    elif command == "revoke":
        if not people.revoke_token(engine, args.id, now):
            print(f"no active token {args.id}", file=sys.stderr)
            return 1
        print(f"token {args.id} revoked")
    return 0
