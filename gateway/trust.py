"""The gateway's half of the trust model: its signing key, and checks on what comes down.

Acks and model chunks arrive through a broker the gateway does not trust (issue 9: one
forged ack emptied an outbox; chunks published by anyone were run). With a provisioned
identity, each must be signed by the cloud key the gateway was given and name this
gateway; anything else is refused and counted (`fogline_rejects{step="downlink"}`),
never acted on. Without an identity (the library default, for tests and development)
unsigned downlink messages are accepted, and the gateway says so loudly at start; the
`fogline gateway` command refuses to run that way unless told `--insecure-unsigned`.
"""

from __future__ import annotations

import logging

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fogline.signing import SignatureError, verify, verify_chunk
from gateway.metrics import Metrics

log = logging.getLogger("fogline.gateway.trust")

LOG_EVERY = 10.0


class DownlinkTrust:
    """Checks acks and model chunks against the cloud's key(s) before anyone reads them."""

    def __init__(
        self, gateway_id: str, cloud_keys: list[Ed25519PublicKey] | None, metrics: Metrics
    ) -> None:
        self.gateway_id = gateway_id
        self.keys = cloud_keys
        self._metrics = metrics
        self.refused = 0
        self._logged: dict[str, int] = {}
        if cloud_keys is None:
            log.warning(
                "gateway %s has no identity: acks and model chunks are NOT authenticated "
                "(development mode); provision it with `fogline cloud gateway add %s`",
                gateway_id,
                gateway_id,
            )

    def ack(self, payload: bytes) -> bytes | None:
        """The ack if the cloud signed it for this gateway; None (counted) if not."""
        if self.keys is None:
            return payload
        try:
            body = verify(payload, self.keys)
            ack = orjson.loads(body)
        except SignatureError as exc:
            self._refuse("ack", exc.reason, str(exc))
            return None
        except orjson.JSONDecodeError:
            self._refuse("ack", "forged", "signed, but not JSON")
            return None
        if not isinstance(ack, dict) or ack.get("gateway") != self.gateway_id:
            self._refuse("ack", "forged", "a signed ack for another gateway")
            return None
        return payload

    def chunk(self, payload: bytes) -> bytes | None:
        """The model chunk if the cloud signed it for this gateway; None (counted) if not."""
        if self.keys is None or not payload:  # empty: a cleared retained topic
            return payload
        try:
            return verify_chunk(payload, self.gateway_id, self.keys)
        except SignatureError as exc:
            self._refuse("model_chunk", exc.reason, str(exc))
            return None
        except orjson.JSONDecodeError:
            self._refuse("model_chunk", "forged", "signed, but not JSON")
            return None

    def _refuse(self, what: str, reason: str, detail: str) -> None:
        self.refused += 1
        self._metrics.rejects[("downlink", f"{what}_{reason}")] += 1
        n = self._logged.get(what, 0)
        self._logged[what] = n + 1
        if n == 0 or n & (n - 1) == 0:  # 1st, 2nd, 4th, 8th...: loud but bounded
            log.warning(
                "refused a %s on the downlink (%s: %s); %d refused so far",
                what,
                reason,
                detail,
                n + 1,
            )
