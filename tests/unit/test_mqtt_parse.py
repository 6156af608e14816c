"""The lean QoS 1 PUBLISH parser agrees with MQTT's layout, and leaves the rest to gmqtt."""

from __future__ import annotations

import struct

from fogline.mqtt import lean_qos1_publish


def publish(topic: bytes, packet_id: int, payload: bytes, props: bytes | None = b"") -> bytes:
    """A PUBLISH's variable header and payload (what follows the fixed header)."""
    body = struct.pack("!H", len(topic)) + topic + struct.pack("!H", packet_id)
    if props is not None:  # MQTT 5: a property length (one byte here), then the properties
        body += bytes([len(props)]) + props
    return body + payload


def test_a_plain_qos1_publish_is_read_in_place() -> None:
    raw = publish(b"factory/l-1/m-7/telemetry", 7, b'{"t": 1}')
    assert lean_qos1_publish(0x32, raw, v5=True) == ("factory/l-1/m-7/telemetry", b'{"t": 1}', 7)
    assert lean_qos1_publish(0x3A, raw, v5=True) == ("factory/l-1/m-7/telemetry", b'{"t": 1}', 7)
    raw311 = publish("sensors/é".encode(), 65535, b"", props=None)
    assert lean_qos1_publish(0x32, raw311, v5=False) == ("sensors/é", b"", 65535)


def test_anything_else_goes_to_the_full_parser() -> None:
    alias = b"\x23\x00\x01"  # topic alias 1
    cases = [
        (0x30, publish(b"a/b", 1, b"x")),  # QoS 0
        (0x34, publish(b"a/b", 1, b"x")),  # QoS 2
        (0x32, publish(b"a/b", 1, b"x", props=alias)),
        (0x32, publish(b"", 1, b"x", props=alias)),  # the topic is in the alias
        (0x32, publish(b"\xff\xfe", 1, b"x")),  # not UTF-8
        (0x32, publish(b"a/b", 0, b"x")),  # packet id 0 is not allowed
        (0x32, b"\x00\x09a/b"),  # cut short
        (0x32, b""),
    ]
    for cmd, raw in cases:
        assert lean_qos1_publish(cmd, raw, v5=True) is None, (hex(cmd), raw)
