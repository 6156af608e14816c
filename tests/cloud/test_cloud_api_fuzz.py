"""schemathesis against the authenticated API: every operation of `/openapi.json`, with a
token of each role, on a real uvicorn over a seeded SQLite store. No answer may be a 5xx,
and every answer must conform to the document (status codes, content types, bodies).

Bounded for CI: `EXAMPLES` cases per operation, each sent with every role's token (about 30 s here in all).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from cloudkit import NOW, alert, api_token, batch, digest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection, positive_data_acceptance
from support import Broker

from cloud.app import Cloud, CloudOptions
from cloud.provision import BrokerFiles
from fogline.urls import parse_broker_url

EXAMPLES = 12
ROLES = ("viewer", "operator", "admin")
# Schema-valid requests an operation refuses by a rule the schema cannot state, each
# documented on the operation; only the "valid data is accepted" check is left out there.
BEYOND_SCHEMA = {
    "GET /api/gateways": "a cursor this API did not hand out (400)",
    "GET /api/alerts": "a cursor this API did not hand out (400)",
    "GET /api/digests": "a cursor this API did not hand out (400)",
    "GET /api/escalations": "a cursor this API did not hand out (400)",
    "POST /api/silences": "a silence that ends in the past (422)",
    "POST /api/webhooks": "a port past 65535 (422)",
    "PUT /api/gateways/{gateway_id}/models/{step}": "a step with '+', '#' or NUL (422)",
    "POST /api/alerts/actions": "a false alarm without its reason, or an assign without whom (422)",
    "POST /api/gateways": "a public key that is not an Ed25519 key (422)",
    "DELETE /api/gateways/{gateway_id}": "a gateway with no live key (404)",
}


class Running:
    """A `Cloud` served from its own thread and event loop, for synchronous test code."""

    def __init__(self, options: CloudOptions) -> None:
        self.options = options
        self.loop = asyncio.new_event_loop()
        self.cloud: Cloud | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="fuzz.cloud", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # handed to the test thread by __enter__
            self._error = exc
            self._ready.set()
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with Cloud(self.options) as cloud:
            self.cloud = cloud
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> Cloud:
        self._thread.start()
        if not self._ready.wait(30) or self.cloud is None:
            raise RuntimeError(f"the cloud did not start: {self._error!r}")
        return self.cloud

    def __exit__(self, *_: object) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cloud, dict[str, str]]]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    broker = Broker(tmp)
    broker.start()
    options = CloudOptions(
        broker=parse_broker_url(broker.url),
        db_url=f"sqlite:///{tmp / 'cloud.db'}",
        http_port=0,
        replica="fuzz",
        wait_broker=None,
        signing_key=tmp / "cloud.key",
        broker_files=BrokerFiles(tmp / "broker"),  # POST/DELETE /api/gateways provision
    )
    try:
        with Running(options) as cloud:
            cloud.store.write(
                [
                    batch("gw1", "alert", [(1, "line-1/m-01", alert("hot/1", "raised"))]),
                    batch("gw1", "digest", [(2, "line-1/m-01", digest(NOW, temperature_max=61.0))]),
                    batch("gw1", "health", [(3, "", {"ts": NOW, "version": "0.1.0"})]),
                ]
            )
            tokens = {role: api_token(cloud.engine, role) for role in ROLES}
            yield cloud, tokens
    finally:
        broker.stop()


def fuzz(
    operation: schemathesis.APIOperation, mode: GenerationMode, tokens: dict[str, str]
) -> None:
    """`EXAMPLES` requests for one operation, each sent with every role's token."""
    excluded = [positive_data_acceptance] if operation.label in BEYOND_SCHEMA else []
    if mode is GenerationMode.NEGATIVE:
        # Not "invalid data must be refused": schemathesis 4.32 counts as invalid requests
        # that are valid (a mutated Authorization header that `call_and_validate` replaces
        # with a real token; `since=-0.33` as a "null became number" under `anyOf: [number,
        # null]`), so that check failed on a 200 to a valid request, by chance of the
        # generator. Every negative case must still get no 5xx and a documented answer.
        excluded.append(negative_data_rejection)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        for role in ROLES:  # the same request from each role: 403 for some, never a 5xx
            case.call_and_validate(
                headers={"Authorization": f"Bearer {tokens[role]}"},
                excluded_checks=excluded,
                timeout=10,
            )

    run()


def test_the_api_answers_every_generated_request_as_documented(
    served: tuple[Cloud, dict[str, str]],
) -> None:
    cloud, tokens = served
    base = f"http://127.0.0.1:{cloud.http_port}"
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    schema.config.base_url = base
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()  # an operation the document describes wrongly fails here
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz(operation, mode, tokens)
            except Unsatisfiable:  # no invalid request exists (an operation without inputs)
                assert mode is GenerationMode.NEGATIVE
            except (AssertionError, BaseExceptionGroup) as exc:  # each operation is reported
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert operations >= 15  # every API route is in the document
    assert not failures, "\n\n".join(failures)
