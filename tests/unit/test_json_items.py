"""``json_items`` (a JSON array decoded one element at a time, for Splunk On-Call's unpaginated
incident list) answers exactly what ``json.loads`` + ``require`` answer: the same elements for
every body they accept, and a MalformedResponse with the same message for every body they
refuse; the one difference is a repeated key, which it refuses instead of keeping the last."""

from __future__ import annotations

import json
from typing import Any

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


def both(body: bytes, content_type: str = "application/json") -> tuple[Any, Any]:
    """(what json.loads + require say, what json_items says): a list, or the error message."""
    def response() -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": content_type})
    try:
        old: Any = list(require(parse_json(response(), EP, "a"), "rows", list, endpoint=EP))
    except MalformedResponse as exc:
        old = exc.message
    try:
        new: Any = list(json_items(response(), "rows", EP, "a"))
    except MalformedResponse as exc:
        new = exc.message
    return old, new


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=6), values, max_size=4), st.none() | values,
       st.sampled_from(["", " ", "\n\t ", "\r\n"]), st.integers(0, 10**6))
def test_the_same_answer_as_json_loads(obj: dict, rows: Any, space: str, cut: int) -> None:
    if rows is not None:
        obj["rows"] = rows
    text = json.dumps(obj, indent=1 if cut % 2 else None, ensure_ascii=bool(cut % 3))
    text = space + text.replace(", ", "," + space).replace(": ", space + ":" + space) + space
    old, new = both(text.encode())
    assert old == new
    truncated = text.encode()[:cut % (len(text) + 1)]  # every prefix is refused the same way
    assert both(truncated) == both(truncated)[:1] * 2


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


def test_elements_are_decoded_as_they_are_iterated() -> None:
    """The second element is not decoded before the first is handed out: an error after it
    comes only when iteration reaches it."""
    it = json_items(httpx.Response(200, content=b'{"rows": [{"a": 1}, {"b": ]}'), "rows", EP,
                    "a")
    assert next(it) == {"a": 1}
    with pytest.raises(MalformedResponse, match="invalid JSON"):
        next(it)
