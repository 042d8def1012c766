"""Fixtures for the Splunk On-Call simulator and client tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from syncd.ratelimit import Budget
from syncd.simulators.victorops import VictorOpsSimulator
from syncd.vendors.victorops import VictorOpsClient, VictorOpsSettings

ALERT = "/integrations/generic/20131114/alert/{key}/{rk}"


@pytest.fixture
def sim() -> VictorOpsSimulator:
    """Rate limits off by default; the rate-limit tests switch them on."""
    return VictorOpsSimulator(seed=7, rate_limits=False)


@pytest.fixture
async def api(sim: VictorOpsSimulator) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"X-VO-Api-Id": sim.API_ID, "X-VO-Api-Key": sim.API_KEY}
    async with sim.client(headers=headers) as client:
        yield client


@pytest.fixture
def alert_path(sim: VictorOpsSimulator) -> str:
    """The REST endpoint path for routing key "syncd" with the simulator's key."""
    return ALERT.format(key=sim.REST_KEY, rk="syncd")


class Corrupt:
    """A test double for the network: rewrites the simulator's answer on one path."""

    def __init__(self, app: Any, path: str, body: bytes | Callable[[bytes], bytes],
                 status: int = 200, content_type: str = "application/json") -> None:
        self.app, self.path, self.body = app, path, body
        self.status, self.content_type = status, content_type

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []

        async def capture(message: Any) -> None:
            if message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        original = b"".join(chunks)
        body = self.body(original) if callable(self.body) else self.body
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(b"content-type", self.content_type.encode())]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def corrupt() -> type[Corrupt]:
    return Corrupt


@pytest.fixture
async def make_client(sim: VictorOpsSimulator) -> AsyncIterator[Callable[..., VictorOpsClient]]:
    made: list[VictorOpsClient] = []

    def make(*, app: Any = None, budget: Budget | None = None, sleep: Any = None,
             **settings: Any) -> VictorOpsClient:
        opts: dict[str, Any] = {
            "vendor": "victorops", "base_url": "http://sim.localhost", "api_id": sim.API_ID,
            "api_key": sim.API_KEY, "rest_api_key": sim.REST_KEY, "max_retries": 2,
        }
        opts.update(settings)
        kw: dict[str, Any] = {}
        if sleep is not None:
            kw["sleep"] = sleep
        client = VictorOpsClient(
            "vo-test", VictorOpsSettings(**opts),
            transport=httpx.ASGITransport(app=app or sim.app),
            budget=budget if budget is not None else Budget({}),
            backoff_base=0.001, forbidden_backoff=0.01, created_visibility_wait=0.001, **kw,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()
