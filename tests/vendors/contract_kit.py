"""What the shared contract suite (test_contract.py) needs from each vendor: a ``ContractKit``.

Like vdirsyncer running one storage test suite against every backend, the behaviour every
simulator must share (each answer of each implemented operation validates against the official
spec, auth failures, pagination, the rate-limit answer, the /_sim control surface) is tested once,
parametrized over the four vendors. Each vendor directory holds its kit (``<v>_kit.py``): how to
load and patch its spec (its tolerated deviations, each with a reason), how to check one
exchange, a script that calls every implemented operation, and the few facts the shared tests
need (credentials, a paged list, the rate-limit answer). Vendor-specific tests stay beside it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from syncd.simulators.base import Simulator

Exchange = tuple[httpx.Request, httpx.Response]


class Recorder(httpx.AsyncBaseTransport):
    """Passes requests to the simulator and keeps every exchange for validation."""

    def __init__(self, sim: Simulator) -> None:
        self.inner = sim.transport()
        self.exchanges: list[Exchange] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        await response.aread()
        self.exchanges.append((request, response))
        return response


def route_of(sim: Simulator, method: str, path: str) -> tuple[str, dict[str, Any]]:
    """The route template serving ``path`` and its path parameters."""
    scope = {"type": "http", "path": path, "method": method, "root_path": ""}
    for route in sim.routes():
        match, child = route.matches(scope)
        if match.name == "FULL":
            return route.path, dict(child.get("path_params", {}))  # type: ignore[attr-defined]
    raise AssertionError(f"no route for {method} {path}")


def vendor_operations(sim: Simulator) -> set[str]:
    """Every ``METHOD /template`` the simulator serves (HEAD aside)."""
    return {f"{m} {r.path}" for r in sim._vendor_routes  # type: ignore[attr-defined]
            for m in (getattr(r, "methods", None) or ()) if m != "HEAD"}


@dataclass(frozen=True)
class ContractKit:
    """One vendor's answers to the shared contract suite."""

    name: str
    make: Callable[[], Simulator]
    headers: dict[str, str]
    load_spec: Callable[[Path], Any]
    """The patched official spec(s), opaque to the shared suite."""
    check: Callable[[Any, Simulator, httpx.Request, httpx.Response], str | None]
    """Validate one exchange against the spec (raising on a mismatch); the ``METHOD /template``
    it checked, or None for an exchange the spec does not cover (see ``unspecified``)."""
    exercise: Callable[[Simulator, Recorder], Awaitable[None]]
    """Call every implemented operation (through the client and raw HTTP), success and errors."""
    statuses: set[int]
    """Statuses the exercise must have produced (so error answers are checked too)."""
    wrong_body: tuple[str, str, int, Any]
    """(method, path, status, body) the checker must reject: the validation can fail."""
    list_path: str
    """A list every key may read; used for auth and rate-limit answers."""
    auth_failures: list[tuple[dict[str, str], int]]
    """(headers replacing the good ones, expected status) for missing and wrong credentials."""
    page_ids: Callable[[httpx.AsyncClient, int], Awaitable[list[list[str]]]]
    """Walk the incident list ``size`` records at a time; the ids of each page."""
    rate_limited: Callable[[httpx.Response], bool]
    """Whether a refused answer is the vendor's documented rate-limit answer."""
    error_shape: Callable[[httpx.Response], bool]
    unspecified: dict[str, str] = field(default_factory=dict)
    """Operations no spec covers, each with the reason it is not validated."""
    expected: set[str] = field(default_factory=set)
    """``METHOD /template STATUS`` answers the exercise must have produced and checked."""


def rate_limit_header(sim: Simulator, name: str, value: str) -> Any:
    """A network double: every 429 of ``sim`` carries header ``name: value`` instead of its
    own, to try the answers a vendor may send (absurd resets, HTTP-dates) against a client."""
    wanted = name.lower().encode()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        async def rewrite(message: Any) -> None:
            if message["type"] == "http.response.start" and message["status"] == 429:
                message = {**message, "headers": [
                    (k, value.encode() if k.lower() == wanted else v)
                    for k, v in message["headers"]]}
            await send(message)
        await sim.app(scope, receive, rewrite)
    return app
