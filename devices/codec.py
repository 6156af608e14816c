"""Payload encodings: a plain JSON object, a SenML JSON pack, or a SenML CBOR pack.

Fleets produce flat dicts (`{"ts": ..., "moisture": 23.5, ...}`); the codec turns each into
bytes once, right before the transport. SenML (RFC 8428) is what field sensors send: the
first record carries the base name (`urn:dev:<device>:`) and base time, the rest only
`n`/`u`/`v`. CBOR uses SenML's integer labels (section 6), the compact form for CoAP.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

import cbor2
import orjson

Format = Literal["json", "senml", "senml-cbor"]
FORMATS: tuple[str, ...] = get_args(Format)
CONTENT_FORMAT: dict[str, int] = {"json": 50, "senml": 110, "senml-cbor": 112}
_CBOR_LABELS = {"bn": -2, "bt": -3, "n": 0, "u": 1, "v": 2}


class Codec:
    """Encodes one fleet's payloads; `base_names` maps a topic to its device's SenML name."""

    def __init__(
        self, fmt: Format, units: Mapping[str, str], base_names: Mapping[str, str]
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"expected a format among {', '.join(FORMATS)}, got {fmt!r}")
        self.format = fmt
        self.content_format = CONTENT_FORMAT[fmt]
        self._units = units
        self._base_names = base_names

    def encode(self, topic: str, payload: Mapping[str, Any]) -> bytes:
        if self.format == "json":
            return orjson.dumps(payload)
        pack = self.senml(topic, payload)
        if self.format == "senml":
            return orjson.dumps(pack)
        return cbor2.dumps([{_CBOR_LABELS[k]: v for k, v in rec.items()} for rec in pack])

    def senml(self, topic: str, payload: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The SenML records of one reading: numbers only (a raw block is JSON-only)."""
        pack: list[dict[str, Any]] = []
        for name, value in payload.items():
            if name == "ts" or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            unit = self._units.get(name)
            pack.append({"n": name, "u": unit, "v": value} if unit else {"n": name, "v": value})
        if pack:
            head: dict[str, Any] = {}
            if base_name := self._base_names.get(topic):
                head["bn"] = base_name
            if "ts" in payload:
                head["bt"] = payload["ts"]
            pack[0] = head | pack[0]
        return pack
