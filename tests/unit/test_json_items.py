"""``json_items`` (a JSON array read as a stream and decoded one element at a time, for Splunk
On-Call's unpaginated incident list) answers exactly what ``json.loads`` + ``require`` answer,
however the body is cut into chunks: the same elements for every body they accept, and a
MalformedResponse with the same message for every body they refuse; the one difference is a
repeated key, which it refuses instead of keeping the last."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.vendors._http import json_items, parse_json, require
from syncd.vendors.base import MalformedResponse

EP = "GET /x"
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=20)


class Chunks(httpx.AsyncByteStream):
    """A body as the network hands it over: in pieces of ``sizes`` bytes (cycled)."""

    def __init__(self, body: bytes, sizes: list[int]) -> None:
        self.body, self.sizes = body, sizes or [len(body) or 1]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        at, n = 0, 0
        while at < len(self.body):
            size = self.sizes[n % len(self.sizes)]
            yield self.body[at:at + size]
            at, n = at + size, n + 1


def streamed(body: bytes, sizes: list[int] | None = None,
             content_type: str = "application/json") -> httpx.Response:
    return httpx.Response(200, stream=Chunks(body, sizes or []),
                          headers={"content-type": content_type})


def items(response: httpx.Response, **caps: int) -> Any:
    """What json_items hands out for ``response``: a list, or the error message."""
    async def collect() -> list[Any]:
        return [item async for item in json_items(response, "rows", EP, "a", **caps)]
    try:
        return anyio.run(collect)
    except MalformedResponse as exc:
        return exc.message


def both(body: bytes, content_type: str = "application/json", sizes: list[int] | None = None
         ) -> tuple[Any, Any]:
    """(what json.loads + require say, what json_items says): a list, or the error message."""
    response = httpx.Response(200, content=body, headers={"content-type": content_type})
    try:
        old: Any = list(require(parse_json(response, EP, "a"), "rows", list, endpoint=EP))
    except MalformedResponse as exc:
        old = exc.message
    return old, items(streamed(body, sizes, content_type))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=6), values, max_size=4), st.none() | values,
       st.sampled_from(["", " ", "\n\t ", "\r\n"]), st.integers(0, 10**6),
       st.lists(st.integers(1, 40), max_size=5))
def test_the_same_answer_as_json_loads(obj: dict, rows: Any, space: str, cut: int,
                                       sizes: list[int]) -> None:
    if rows is not None:
        obj["rows"] = rows
    text = json.dumps(obj, indent=1 if cut % 2 else None, ensure_ascii=bool(cut % 3))
    text = space + text.replace(", ", "," + space).replace(": ", space + ":" + space) + space
    old, new = both(text.encode(), sizes=sizes)
    assert old == new
    truncated = text.encode()[:cut % (len(text) + 1)]  # every prefix is refused the same way
    assert both(truncated, sizes=sizes) == both(truncated)[:1] * 2


@pytest.mark.parametrize("sizes", [[1], [2], [3], [7]])
def test_numbers_and_characters_cut_between_chunks_decode_whole(sizes: list[int]) -> None:
    """A number at the end of a chunk may go on in the next (``12`` then ``.5e3``); a UTF-8 or
    UTF-16 character may be split in two."""
    body = '{"rows": [12.5e3, -0.25, 1E-2, 7, "\u00e9\u4e2d\U0001f600", true, null]}'
    for encoded in (body.encode(), body.encode("utf-16"), body.encode("utf-32-le")):
        assert both(encoded, sizes=sizes) == ([12500.0, -0.25, 0.01, 7, "\u00e9\u4e2d\U0001f600",
                                               True, None],) * 2


@pytest.mark.parametrize("body", [
    b"", b"   ", b"[]", b'"rows"', b"null", b"{}", b'{"rows": {}}', b'{"rows": 3}',
    b'{"rows": [1, 2,]}', b'{"rows": [1 2]}', b'{"rows": [1], }', b'{"rows": [1]} x',
    b'{"rows" [1]}', b'{, "rows": [1]}', b'{"a": 1 "rows": [1]}', b'{"rows": [1]',
    b'{"rows": [[[' + b"[" * 100_000 + b"]]]}", b"<html>no</html>", b'\xef\xbb\xbf{"rows": []}',
    '{"rows": ["\u00e9"]}'.encode("utf-16"), b'{"rows": ["\xff"]}',
    b'{"a": [1, {"b": 2}], "rows": []}',
])
def test_edge_bodies_answer_the_same(body: bytes) -> None:
    old, new = both(body, "text/html" if body.startswith(b"<") else "application/json")
    assert old == new


def test_a_repeated_key_is_refused_not_silently_overwritten() -> None:
    assert both(b'{"rows": [1], "rows": [2]}') == ([2], "field 'rows' appears twice")


async def test_elements_are_handed_out_as_their_text_arrives() -> None:
    """The first element is handed out before the network has sent the rest, and an error
    after it comes only when iteration reaches it."""
    sent: list[bytes] = []

    class Network(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for part in (b'{"rows": [{"a": 1}, ', b'{"b": ]}'):
                sent.append(part)
                yield part

    it = json_items(httpx.Response(200, stream=Network()), "rows", EP, "a")
    assert await anext(it) == {"a": 1}
    assert len(sent) == 1
    with pytest.raises(MalformedResponse, match="invalid JSON"):
        await anext(it)


def test_a_long_list_is_read_whole_but_no_element_or_stall_over_the_cap() -> None:
    """The caps bound one element (and whitespace a stalling answer sends between elements)
    and the whole answer, not the list: a list 20 times the element cap is read whole."""
    element = {"id": "x" * 50}
    body = json.dumps({"rows": [element] * 400}).encode()  # ~25 KB
    assert items(streamed(body, [512]), gap_cap=1024) == [element] * 400
    big = json.dumps({"rows": [{"id": "x" * 2000}]}).encode()
    assert items(streamed(big, [512]), gap_cap=1024) == (
        "response is over the 1024-byte cap without a complete element (counted in "
        "characters); not read further")
    stall = b'{"rows": [1,' + b" " * 4096 + b"2]}"
    assert "over the 1024-byte cap" in items(streamed(stall, [512]), gap_cap=1024)
    assert items(streamed(body, [512]), total_cap=8192) == (
        "response is over the 8192-byte cap; not read further")
    declared = httpx.Response(200, stream=Chunks(body, [512]),
                              headers={"content-length": str(len(body))})
    assert items(declared, total_cap=8192) == (
        f"response of {len(body)} bytes is over the 8192-byte cap")


@pytest.mark.parametrize("sizes", [[1], [7], [64], [100], [512], [1000]])
@pytest.mark.parametrize("length", [600, 800, 1000])
def test_an_element_under_the_cap_is_accepted_however_the_chunks_fall(sizes: list[int],
                                                                      length: int) -> None:
    """Reading on for an incomplete element stops at the cap: an element between half the cap
    and the cap is not refused just because the read ran into the next ones."""
    rows = [{"id": "x" * (length - 10)}] * 5
    body = json.dumps({"rows": rows}).encode()
    assert items(streamed(body, sizes), gap_cap=1024) == rows
