"""The demo's trust setup: what `fogline cloud gateway add` and an operator would do.

The demo's private mosquitto refuses anonymous clients; every party has its own user: the
cloud (`fogline-cloud`, the only one that may write downlinks), the gateway `demo-gw`
(provisioned like any gateway: its own uplink and downlink only, plus an edge user for the
machines' topics), the simulated machines and the demo's viewer. The gateway signs every
batch and the cloud only stores batches signed by the key it registered for `demo-gw`.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cloud.db import make_engine, migrate
from cloud.provision import ACL, BrokerFiles, add_gateway, cloud_user
from fogline import signing
from fogline.identity import Identity

GATEWAY = "demo-gw"
# Everyone but the cloud and the gateway: the machines, the gateway's edge link, the viewer.
EDGE_ACL = f"""
# The demo's edge side (one broker stands in for the plant's and the cloud's), as in
# deploy/edge-acl: the simulated machines share one connection, so one user that publishes
# readings and reads commands only; the gateway's edge link reads readings and publishes
# commands only.
user demo-devices
topic write factory/+/+/telemetry
topic read factory/+/+/actions

user demo-edge
topic read factory/+/+/telemetry
topic write factory/+/+/actions

user demo-viewer
topic read fogline/{GATEWAY}/up/#
topic read factory/+/+/actions
"""


@dataclass(frozen=True)
class DemoTrust:
    files: BrokerFiles
    identity: Identity
    cloud_key: Path
    passwords: dict[str, str]

    def url(self, user: str, port: int) -> str:
        return f"mqtt://{user}:{self.passwords[user]}@127.0.0.1:{port}"

    def broker_conf(self) -> str:
        # Run as root (make demo on a fresh machine), mosquitto drops to its own user, which
        # could not read the 0600 password file in our private folder: it stays root here,
        # listening on loopback only.
        stay = "user root\n" if os.geteuid() == 0 else ""
        return (
            f"{stay}allow_anonymous false\npassword_file {self.files.passwords}\n"
            f"acl_file {self.files.acl}\n"
        )


def setup(workdir: Path, db_url: str) -> DemoTrust:
    """Broker users and ACL, the cloud's key, and `demo-gw` provisioned in the database."""
    files = BrokerFiles(workdir / "broker")
    files.directory.mkdir(parents=True, exist_ok=True)
    files.acl.write_text(ACL + EDGE_ACL)
    passwords = {"fogline-cloud": cloud_user(files)}
    for user in ("demo-devices", "demo-edge", "demo-viewer"):
        passwords[user] = secrets.token_urlsafe(12)
        files.set_user(user, passwords[user])
    cloud_key = workdir / "cloud.key"
    key, _ = signing.load_or_create_key(cloud_key)
    engine = make_engine(db_url)
    try:
        migrate(engine)
        identity = add_gateway(engine, GATEWAY, key, broker=files)
    finally:
        engine.dispose()
    passwords[GATEWAY] = identity.password
    return DemoTrust(files, identity, cloud_key, passwords)
