"""The engine's side of the vendor boundary: a surprise in a vendor's answer is a typed error.

Clients check what they read field by field and skip a record they cannot parse
(:class:`~syncd.vendors.base.Skipped`). A field of an unexpected type that slips past those checks
(a number where a list was, a list where an object was) would otherwise surface as a TypeError,
AttributeError or KeyError from deep in a client and end as a failed scheduler job. The engine
calls clients through these guards, so such an answer becomes a counted
:class:`~syncd.vendors.base.MalformedResponse` for that account and the engine handles it like any
other malformed answer: the poll fails and is retried next time, the push backs off.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import TypeVar

from syncd import metrics
from syncd.vendors.base import MalformedResponse, VendorError

T = TypeVar("T")

PARSE_ERRORS: tuple[type[Exception], ...] = (
    TypeError, AttributeError, KeyError, IndexError, ValueError, RecursionError,
)
"""What reading a vendor answer of the wrong shape raises in Python."""


@contextmanager
def vendor_answer(account: str, what: str) -> Iterator[None]:
    """Turn a parsing exception raised inside the block into a counted MalformedResponse.

    ``what`` names the client call ("poll", "push acknowledge", ...): the request that carried
    the bad field is not known here, only the call that read it."""
    try:
        yield
    except VendorError:
        raise
    except PARSE_ERRORS as exc:
        metrics.MALFORMED.labels(account, what).inc()
        raise MalformedResponse(
            f"unexpected answer ({type(exc).__name__}: {str(exc)[:200]})",
            account=account, endpoint=what,
        ) from exc


async def guarded_pages(account: str, pages: AsyncIterator[T]) -> AsyncIterator[T]:
    """``pages`` (a client's poll), with parsing exceptions raised while producing a page
    turned into MalformedResponse. Exceptions of the consumer are not touched: they are not
    raised inside the client's generator."""
    iterator = aiter(pages)
    try:
        while True:
            with vendor_answer(account, "poll"):
                try:
                    page = await anext(iterator)
                except StopAsyncIteration:
                    return
            yield page
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()
