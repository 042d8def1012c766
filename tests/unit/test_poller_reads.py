"""Which reads one poll makes (syncd/engine/poller.py ``_reads``)."""

from __future__ import annotations

from syncd.engine.poller import _reads


def test_a_delta_poll_is_one_read_from_the_cursor() -> None:
    assert _reads("c", False) == [("c", False, True)]


def test_a_first_full_read_keeps_its_own_cursor() -> None:
    assert _reads(None, True) == [(None, True, True)]


def test_a_full_read_with_a_cursor_is_followed_by_the_feed_whose_cursor_is_kept() -> None:
    """The open list alone would drop a resolve made since the cursor; the feed comes last so
    that an open list lagging behind it cannot undo the resolve it shows (review finding)."""
    assert _reads("c", True) == [(None, True, False), ("c", False, True)]


def test_a_full_read_that_follows_the_cursor_is_one_read_given_it() -> None:
    assert _reads("c", True, follows=True) == [("c", True, True)]
    assert _reads(None, True, follows=True) == [(None, True, True)]
