"""Test support for issue 9: a mosquitto that enforces provisioned credentials and ACLs
(optionally over TLS with a CA made in the test), and identities made like the CLI does."""

from __future__ import annotations

import datetime as dt
import os
import signal
import ssl
import subprocess
import threading
import time
import uuid
from pathlib import Path

import orjson
import paho.mqtt.client as paho
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from support import free_port, start_mosquitto

from cloud.provision import BrokerFiles, cloud_user, write_acl
from fogline import chain, signing
from fogline.envelope import encode_batch


class Pki:
    """A throwaway CA, and certificates it signs (P-256), written as PEM files."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fogline test CA")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.ca = directory / "ca.pem"
        self.ca.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, *, server: bool) -> tuple[Path, Path]:
        """(certificate, key) for `name`: a server's for 127.0.0.1/localhost, or a client's."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if server:
            import ipaddress  # noqa: PLC0415

            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            ).add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
        cert = builder.sign(self.key, hashes.SHA256())
        cert_path, key_path = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
        return cert_path, key_path


class SecureBroker:
    """mosquitto with no anonymous access, Fogline's password and ACL files, and an
    optional TLS listener (`tls_port`) with the test CA (`require_certificate` optional)."""

    def __init__(self, workdir: Path, pki: Pki | None = None, *, mutual: bool = False) -> None:
        self.workdir = workdir
        self.files = BrokerFiles(workdir / "broker")
        write_acl(self.files.acl)
        self.cloud_password = cloud_user(self.files)
        self.port = free_port()
        lines = [
            # Tests run as root; mosquitto would drop to its own user, which cannot read
            # the 0600 password file (deployments set BrokerFiles.owner instead).
            *(["user root"] if os.geteuid() == 0 else []),
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {self.files.passwords}",
            f"acl_file {self.files.acl}",
            "persistence false",
            "max_queued_messages 100000",
            f"listener {self.port} 127.0.0.1",
        ]
        self.tls_port: int | None = None
        if pki is not None:
            self.tls_port = free_port()
            cert, key = pki.issue("broker", server=True)
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {pki.ca}",
                f"certfile {cert}",
                f"keyfile {key}",
                f"require_certificate {'true' if mutual else 'false'}",
            ]
        self.conf = workdir / "mosquitto-secure.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = workdir / "mosquitto-secure.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def cloud_url(self) -> str:
        return f"mqtt://fogline-cloud:{self.cloud_password}@127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = start_mosquitto(self.conf, self.log, self.port)

    def reload(self) -> None:
        """SIGHUP: mosquitto reads the password and ACL files again."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


class Client:
    """A paho client as a given user; records what it receives and how it was refused."""

    def __init__(
        self,
        port: int,
        user: str | None,
        password: str | None,
        topics: list[str] = (),  # type: ignore[assignment]
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.connack: paho.ReasonCode | None = None
        self.disconnected = threading.Event()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._topics = list(topics)
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=f"t-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
        )
        if user is not None:
            self.client.username_pw_set(user, password)
        if tls is not None:
            self.client.tls_set_context(tls)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.on_disconnect = lambda *_: self.disconnected.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self._ready.wait(5)

    def _on_connect(
        self, client: paho.Client, _u: object, _f: object, rc: object, *_: object
    ) -> None:
        self.connack = rc  # type: ignore[assignment]
        if getattr(rc, "is_failure", False):
            self._ready.set()
            return
        if self._topics:
            client.subscribe([(t, 1) for t in self._topics])
        else:
            self._ready.set()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload))

    @property
    def refused(self) -> bool:
        return self.connack is not None and bool(getattr(self.connack, "is_failure", False))

    def got(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p in self.messages if t == topic]

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def signed_batch(
    key: Ed25519PrivateKey,
    gid: str,
    records: list[tuple[int, str, dict]],
    prev: tuple[int, bytes] = (0, chain.GENESIS),
) -> bytes:
    """A batch as a gateway holding `key` would sign it (the chain computed honestly,
    the batch's records committed as one group)."""
    seqs, devices, data = zip(*records, strict=True)
    own = chain.link(prev[1], "event", seqs, devices, [orjson.dumps(x) for x in data])
    link = (prev[0], prev[1], records[-1][0], own)
    signer = signing.Signer(key)
    return signer.sign(encode_batch(gid, "event", records, 1.7e9, link, signer.kid))
