"""``counting_writes``: the one count of vendor writes that may have landed, kept by every
client's HTTP session, with or without a lease guard. An override made of several writes that
fails after a counted one may exist in part (``Dispatcher.push_override`` reads the count)."""

from __future__ import annotations

import contextlib

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
from syncd.vendors.base import VendorError, counting_writes


async def answer(request: Request) -> Response:
    """Answers with the status the path names: ``/status/503``."""
    status = int(request.path_params["status"])
    headers = {"Retry-After": "0"} if status == 429 else {}
    return JSONResponse({"status": status}, status_code=status, headers=headers)


APP = Starlette(routes=[Route("/status/{status:int}", answer,
                              methods=["GET", "POST", "PUT", "DELETE"])])


def session(transport: httpx.AsyncBaseTransport | None = None) -> VendorHTTP:
    async def no_wait(_seconds: float) -> None:
        return None

    return VendorHTTP(account="a", base_url="http://vendor.test", headers={},
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


async def test_outside_the_block_nothing_is_counted() -> None:
    http = session()
    try:
        await http.request("POST", "/status/201")
        with counting_writes() as sent:
            pass
        assert sent == [0]
    finally:
        await http.aclose()
