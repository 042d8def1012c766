"""Repeated warnings are collapsed, counted and reported; nothing else is touched (issue 20)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from syncd import logs
from syncd.logthrottle import BURST, WINDOW, RepeatThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, Clock]]:
    stream, clock = io.StringIO(), Clock()
    logs.configure(fmt="json", stream=stream, throttle=RepeatThrottle(clock=clock))
    yield stream, clock
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


def test_a_repeated_warning_is_written_a_few_times_then_counted(
        captured: tuple[io.StringIO, Clock]) -> None:
    stream, clock = captured
    log = structlog.get_logger("t")
    for _ in range(1000):
        log.warning("status.accept_failed", account="pd")
    log.warning("status.accept_failed", account="ii")  # another account is another line
    assert [e["account"] for e in lines(stream)] == ["pd"] * BURST + ["ii"]
    clock.now += WINDOW + 0.1
    log.warning("status.accept_failed", account="pd")
    last = lines(stream)[-1]
    assert last["account"] == "pd" and last["repeated"] == 1000 - BURST


def test_info_events_are_never_throttled(captured: tuple[io.StringIO, Clock]) -> None:
    stream, _ = captured
    log = structlog.get_logger("t")
    for _ in range(50):
        log.info("push.done", account="pd")
    assert len(lines(stream)) == 50


def test_stdlib_floods_are_collapsed_too(captured: tuple[io.StringIO, Clock]) -> None:
    """asyncio's "socket.accept() out of system resource" once filled 180 MB in 40 s."""
    stream, clock = captured
    logger = logging.getLogger("asyncio")
    for _ in range(1000):
        logger.error("socket.accept() out of system resource")
    assert len(lines(stream)) == BURST
    clock.now += WINDOW + 0.1
    logger.error("socket.accept() out of system resource")
    assert lines(stream)[-1]["event"] == (
        f"socket.accept() out of system resource ({1000 - BURST} similar lines suppressed)")
