"""``counting_writes``: the one count of vendor writes that may have landed, kept by every
client's HTTP session, with or without a lease guard: once per write that may have landed,
never for one refused or never sent. An override made of several writes that fails after a
counted one may exist in part (``Dispatcher.push_override`` reads the count)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from syncd.engine.leadership import GuardedTransport
from syncd.ledger.lease import LeaseLost
from syncd.ratelimit import Budget, Limit
from syncd.vendors._http import VendorHTTP
from syncd.vendors.base import MalformedResponse, TransientError, VendorError, counting_writes


async def answer(request: Request) -> Response:
    """Answers with the status the path names: ``/status/503``."""
    status = int(request.path_params["status"])
    headers = {"Retry-After": "0"} if status == 429 else {}
    return JSONResponse({"status": status}, status_code=status, headers=headers)


async def garbled(_request: Request) -> Response:
    """A 201 whose list is not JSON: accepted, then its answer fails to read."""
    return Response(b'{"rows": [}', status_code=201, media_type="application/json")


APP = Starlette(routes=[Route("/status/{status:int}", answer,
                              methods=["GET", "POST", "PUT", "DELETE"]),
                        Route("/garbled", garbled, methods=["POST"])])


def session(transport: httpx.AsyncBaseTransport | None = None, *,
            base_url: str = "http://vendor.test", timeout: float = 15.0) -> VendorHTTP:
    async def no_wait(_seconds: float) -> None:
        return None

    return VendorHTTP(account="a", base_url=base_url, headers={}, timeout=timeout,
                      budget=Budget({"*": Limit(6000)}), sleep=no_wait, max_retries=0,
                      transport=transport or httpx.ASGITransport(app=APP))


@pytest.mark.parametrize(("method", "status", "landed"), [
    ("GET", 200, 0),     # a read changes nothing
    ("GET", 503, 0),
    ("POST", 201, 1),    # accepted
    ("PUT", 200, 1),
    ("POST", 400, 0),    # refused: nothing made
    ("DELETE", 404, 0),
    ("PUT", 403, 0),
    ("POST", 429, 0),    # rate limited: the vendor did not act
    ("POST", 503, 1),    # ambiguous: it may have landed
])
async def test_a_write_counts_when_it_may_have_landed(method: str, status: int,
                                                      landed: int) -> None:
    http = session()
    try:
        with counting_writes() as sent, contextlib.suppress(VendorError):
            await http.request(method, f"/status/{status}")
        assert sent == [landed]
    finally:
        await http.aclose()


async def test_one_count_under_a_lease_guard_and_none_for_a_refused_write() -> None:
    """The guard does not count a second time; a write it stops never left."""
    passed: list[str] = []

    def guard() -> None:
        if passed:
            raise LeaseLost("the lease ran out")
        passed.append("write")

    http = session(GuardedTransport(httpx.ASGITransport(app=APP), guard))
    try:
        with counting_writes() as sent:
            await http.request("POST", "/status/201")
            with pytest.raises(LeaseLost):
                await http.request("PUT", "/status/200")
        assert sent == [1]
    finally:
        await http.aclose()


async def test_a_write_of_another_task_is_not_counted_in_the_block() -> None:
    """The count belongs to the task that opened the block: a write another task makes while
    the block is open (another of the daemon's jobs, through the same session) leaves the
    block's count unchanged; the block's own write is counted."""
    http = session()
    go, done = asyncio.Event(), asyncio.Event()

    async def elsewhere() -> None:
        await go.wait()
        await http.request("POST", "/status/201")
        done.set()

    try:
        other = asyncio.create_task(elsewhere())  # started before the block opens
        with counting_writes() as sent:
            go.set()
            await done.wait()  # the other task's write lands while the block is open
            assert sent == [0]
            await http.request("PUT", "/status/200")
        assert sent == [1]
        await other
    finally:
        await http.aclose()


async def test_a_write_accepted_whose_answer_fails_to_read_counts_once() -> None:
    """Accepted (201), then its streamed answer is refused while read: one write left, so it
    counts once, not once as accepted and again as a failed exchange."""
    http = session()
    try:
        with counting_writes() as sent, pytest.raises(MalformedResponse):
            async for _row in http.items("POST", "/garbled", "rows"):
                pass
        assert sent == [1]
    finally:
        await http.aclose()


async def writes_counted_when_cancelled(work: Coroutine[Any, Any, Any],
                                       reached: asyncio.Event) -> int:
    """Run ``work`` as a task, cancel it (a stop) once ``reached`` is set, and return the
    writes counted as maybe landed."""
    with counting_writes() as sent:
        call = asyncio.create_task(work)
        await reached.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    return sent[0]


async def test_a_write_cancelled_on_the_wire_counts() -> None:
    """A stop that cancels a write while the vendor has it (sent, no answer yet) leaves it
    "maybe landed": counted, so an override cut off there is not settled as never sent."""
    arrived = asyncio.Event()

    async def unanswered(_request: Request) -> Response:
        arrived.set()
        await asyncio.sleep(60)
        return Response(status_code=201)

    http = session(httpx.ASGITransport(app=Starlette(routes=[
        Route("/slow", unanswered, methods=["POST"])])))
    try:
        assert await writes_counted_when_cancelled(http.request("POST", "/slow"), arrived) == 1
    finally:
        await http.aclose()


@contextlib.asynccontextmanager
async def refused_connection() -> AsyncIterator[VendorHTTP]:
    """A loopback port nobody listens on: the connection is refused (ConnectError)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    yield session(httpx.AsyncHTTPTransport(), base_url=f"http://127.0.0.1:{port}")


@contextlib.asynccontextmanager
async def unanswered_connect() -> AsyncIterator[VendorHTTP]:
    """A listener whose accept queue is full (backlog 0, one connection waiting, never
    accepted): the kernel drops the next handshake, so connecting times out (ConnectTimeout)."""
    with socket.socket() as listener, socket.socket() as waiting:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        waiting.connect(listener.getsockname())
        port = listener.getsockname()[1]
        yield session(httpx.AsyncHTTPTransport(), base_url=f"http://127.0.0.1:{port}",
                      timeout=0.2)


@contextlib.asynccontextmanager
async def busy_pool() -> AsyncIterator[VendorHTTP]:
    """A pool of one connection, held by a request the server never answers: the next one
    waits for a free connection until it times out (PoolTimeout)."""
    arrived = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        arrived.set()
        await reader.read()  # never answers; returns when the client goes away
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    http = session(httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=1)),
                   base_url=f"http://127.0.0.1:{port}", timeout=0.2)
    holder = asyncio.create_task(http.client.get("/hold", timeout=30))
    try:
        await arrived.wait()
        yield http
    finally:
        holder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await holder
        server.close()


@pytest.mark.parametrize("way", [refused_connection, unanswered_connect, busy_pool],
                         ids=["ConnectError", "ConnectTimeout", "PoolTimeout"])
async def test_a_write_that_never_left_is_not_counted(
        way: Callable[[], contextlib.AbstractAsyncContextManager[VendorHTTP]]) -> None:
    """No connection made, or none free in time: the request was never sent, so the write
    cannot have landed (a TransientError all the same, retried like any)."""
    async with way() as http:
        try:
            with counting_writes() as sent, pytest.raises(TransientError):
                await http.request("POST", "/status/201")
            assert sent == [0]
        finally:
            await http.aclose()



@contextlib.asynccontextmanager
async def silent_peer(scheme: str) -> AsyncIterator[tuple[VendorHTTP, asyncio.Event]]:
    """A loopback listener that never answers, and an event set once the client reached it:
    over ``https`` the TCP connection is taken and the TLS handshake never answered (nothing of
    the request is sent); over ``http`` the first bytes of the request arrived; as an HTTPS
    ``proxy`` it answers the CONNECT, then never answers the vendor's TLS handshake (the
    CONNECT's headers were sent, nothing of the write)."""
    reached = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if scheme == "http":
            await reader.read(1)
        elif scheme == "proxy":
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await reader.read(1)  # the client hello of the handshake with the vendor
        reached.set()
        await reader.read()  # never answers; returns when the client goes away
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        if scheme == "proxy":
            transport = httpx.AsyncHTTPTransport(proxy=f"http://127.0.0.1:{port}")
            yield session(transport, base_url="https://vendor.test"), reached
        else:
            yield (session(httpx.AsyncHTTPTransport(),
                           base_url=f"{scheme}://127.0.0.1:{port}"), reached)
    finally:
        server.close()


@pytest.mark.parametrize(("scheme", "landed"), [("https", 0), ("http", 1), ("proxy", 0)],
                         ids=["in-the-TLS-handshake", "after-the-headers",
                              "in-the-TLS-handshake-through-a-proxy"])
async def test_a_write_cancelled_counts_only_once_its_headers_started(
        scheme: str, landed: int) -> None:
    """A stop that cancels a write still connecting (TCP, TLS, a pool wait: the 15 s connect
    timeout outlasts the stop grace) sent nothing of it: not counted, so an override cut off
    there is settled as deferred. Once httpcore began to send its headers, it counts."""
    async with silent_peer(scheme) as (http, reached):
        try:
            work = http.request("POST", "/status/201", json={})
            assert await writes_counted_when_cancelled(work, reached) == landed
        finally:
            await http.aclose()


class SlowClose(httpx.AsyncByteStream):
    """A body whose closing waits (a peer gone quiet), and says when it began."""

    def __init__(self, inner: httpx.AsyncByteStream, closing: asyncio.Event) -> None:
        self.inner = inner
        self.closing = closing

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            yield chunk

    async def aclose(self) -> None:
        self.closing.set()
        await asyncio.sleep(60)
        await self.inner.aclose()


class SlowClosing(httpx.AsyncBaseTransport):
    """The simulator's answers, with bodies that are slow to close."""

    def __init__(self, inner: httpx.AsyncBaseTransport, closing: asyncio.Event) -> None:
        self.inner = inner
        self.closing = closing

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(response.status_code, headers=response.headers,
                              stream=SlowClose(response.stream, self.closing),
                              extensions=response.extensions)


async def test_a_write_answered_ambiguously_counts_before_its_answer_is_closed() -> None:
    """A 2xx its vendor reads as garbled (PagerDuty's 2xx carrying an error) may have landed;
    a stop that cancels the session while it closes that answer must not lose the count, or
    an override cut off there is deferred and pushed again."""
    closing = asyncio.Event()

    def garbled_2xx(response: httpx.Response, _endpoint: str) -> VendorError | None:
        return MalformedResponse("a 2xx carrying an error") if response.is_success else None

    http = VendorHTTP(account="a", base_url="http://vendor.test", headers={},
                      budget=Budget({"*": Limit(6000)}), max_retries=0, classify=garbled_2xx,
                      transport=SlowClosing(httpx.ASGITransport(app=APP), closing))

    async def read() -> None:
        async for _row in http.items("POST", "/status/201", "rows"):
            pass

    try:
        assert await writes_counted_when_cancelled(read(), closing) == 1
    finally:
        await http.aclose()
