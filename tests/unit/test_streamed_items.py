"""``VendorHTTP.items`` over a real socket, against a server that misbehaves mid-body (the
simulators' in-process transport hands a body over whole, so they cannot): a dropped connection
before the first element is retried like any transient failure, within the same attempts as a
failed exchange, one after it is not (the caller has seen part of the answer), a body trickled
past the deadline is a TransientError, and a consumer that stops early releases the connection.
Each request is counted once in ``syncd_vendor_requests_total``: under its status when its body
was read, under how it failed (``error``, ``timeout``, ``malformed``) when it was not."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any

import pytest
from prometheus_client import REGISTRY

from syncd.ratelimit import Budget, Limit
from syncd.vendors._http import VendorHTTP
from syncd.vendors.base import MalformedResponse, TransientError

HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        b"transfer-encoding: chunked\r\n\r\n")
Behaviour = Callable[[asyncio.StreamWriter, int], Awaitable[None]]


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def whole(writer: asyncio.StreamWriter, body: bytes) -> None:
    writer.write(HEAD + chunk(body) + b"0\r\n\r\n")
    await writer.drain()


async def dropped(writer: asyncio.StreamWriter, part: bytes) -> None:
    """Headers and part of the body, then the connection goes away."""
    writer.write(HEAD + chunk(part))
    await writer.drain()
    writer.close()


@asynccontextmanager
async def server(behaviour: Behaviour) -> AsyncIterator[tuple[str, list[int], asyncio.Event]]:
    """A loopback HTTP/1.1 server; ``behaviour(writer, n)`` answers the n-th request. Yields its
    URL, the request numbers seen, and an event set when a client closes a connection."""
    seen: list[int] = []
    closed = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        seen.append(len(seen))
        await behaviour(writer, seen[-1])
        try:
            while await reader.read(4096):
                pass
        except ConnectionError:
            pass
        closed.set()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv:
        yield f"http://127.0.0.1:{port}", seen, closed


def session(base_url: str, **kw: Any) -> VendorHTTP:
    async def no_wait(_seconds: float) -> None:
        return None

    return VendorHTTP(account="a", base_url=base_url, headers={},
                      budget=Budget({"*": Limit(6000)}), sleep=no_wait, **kw)


def counted(status: str) -> float:
    """``syncd_vendor_requests_total`` for the test session's list (account "a")."""
    return REGISTRY.get_sample_value("syncd_vendor_requests_total", {
        "account": "a", "endpoint": "GET /list", "status": status}) or 0.0


def counts() -> dict[str, float]:
    return {status: counted(status) for status in ("200", "error", "timeout", "malformed")}


def grown(before: dict[str, float]) -> dict[str, float]:
    """What each outcome's count grew by since ``before`` (outcomes that did not, left out)."""
    return {k: v - before[k] for k, v in counts().items() if v != before[k]}


async def items_until(error: type[Exception], match: str, http: VendorHTTP) -> list[Any]:
    """The elements ``items`` hands out before it raises ``error`` (which it must)."""
    got: list[Any] = []
    try:
        with pytest.raises(error, match=match):
            async for item in http.items("GET", "/list", "rows"):
                got.append(item)
    finally:
        await http.aclose()
    return got


async def items(http: VendorHTTP) -> list[Any]:
    try:
        return [item async for item in http.items("GET", "/list", "rows")]
    finally:
        await http.aclose()


async def test_a_body_dropped_before_the_first_element_is_read_again() -> None:
    async def behaviour(writer: asyncio.StreamWriter, n: int) -> None:
        if n == 0:
            await dropped(writer, b'{"rows": [{"a"')
        else:
            await whole(writer, json.dumps({"rows": [1, 2, 3]}).encode())

    async with server(behaviour) as (url, seen, _closed):
        before = counts()
        assert await items(session(url, max_retries=2)) == [1, 2, 3]
        assert seen == [0, 1]
        assert grown(before) == {"error": 1, "200": 1}


@pytest.mark.parametrize("headers_first", ["always", "every other request"])
async def test_a_body_always_dropped_before_the_first_element_takes_the_attempts_once(
        headers_first: str) -> None:
    """A drop before the first element is one attempt of the request's own count, whether it
    comes before the status line (retried as a failed exchange) or after a 200 (retried as an
    unread list): ``max_retries`` + 1 requests in all, not a retry loop around a retry loop,
    each of them one budget token and one failure in ``syncd_vendor_requests_total``."""
    async def behaviour(writer: asyncio.StreamWriter, n: int) -> None:
        if headers_first == "always" or n % 2:
            await dropped(writer, b'{"rows": [{"a"')
        else:
            writer.close()  # no status line at all

    async with server(behaviour) as (url, seen, _closed):
        before = counts()
        with pytest.raises(TransientError, match="connection failed"):
            await items(session(url, max_retries=2))
        assert len(seen) == 3
        assert grown(before) == {"error": 3}


async def test_a_body_dropped_after_an_element_is_transient_and_not_read_again() -> None:
    async def behaviour(writer: asyncio.StreamWriter, n: int) -> None:
        await dropped(writer, b'{"rows": [1, 2, {"a"')

    async with server(behaviour) as (url, seen, _closed):
        before = counts()
        got = await items_until(TransientError, "connection failed", session(url, max_retries=2))
        assert got == [1, 2] and seen == [0]
        assert grown(before) == {"error": 1}, "counted as the failure, not as its 200"


async def test_an_element_over_the_cap_after_the_first_is_counted_as_malformed() -> None:
    async def behaviour(writer: asyncio.StreamWriter, n: int) -> None:
        await whole(writer, json.dumps({"rows": [1, "x" * 100]}).encode())

    async with server(behaviour) as (url, seen, _closed):
        before = counts()
        got = await items_until(MalformedResponse, "cap", session(url, max_body=50))
        assert got == [1] and seen == [0]
        assert grown(before) == {"malformed": 1}


async def test_a_trickled_body_is_given_the_deadline_of_a_whole_exchange() -> None:
    """Each piece comes well within the per-read timeout, but the body's reads share one
    deadline (twice the timeout): without it the read would go on for the whole trickle."""
    async def behaviour(writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(HEAD + chunk(b'{"rows": [1'))
        for _ in range(60):
            await asyncio.sleep(0.05)
            writer.write(chunk(b" "))
            await writer.drain()
        writer.write(chunk(b"]}") + b"0\r\n\r\n")
        await writer.drain()

    async with server(behaviour) as (url, seen, _closed):
        before = counts()
        with pytest.raises(TransientError, match="timed out"):
            await items(session(url, timeout=0.5, max_retries=0))
        assert seen == [0]
        assert grown(before) == {"timeout": 1}


async def test_a_consumer_that_stops_early_releases_the_connection() -> None:
    rows = json.dumps({"rows": list(range(10_000))}).encode()

    async def behaviour(writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(HEAD + chunk(rows[:100]))  # the rest would come later
        await writer.drain()

    async with server(behaviour) as (url, _seen, closed):
        http = session(url)
        async with aclosing(http.items("GET", "/list", "rows")) as it:
            async for item in it:
                assert item == 0
                break
        await asyncio.wait_for(closed.wait(), 2)
        await http.aclose()
