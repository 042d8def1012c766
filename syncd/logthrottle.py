"""Collapse repeated log lines: the log must not become the outage.

Descriptor exhaustion once wrote 355,493 "socket.accept() out of system resource" lines (180 MB
in 40 s). A line that repeats within :data:`WINDOW` seconds is written :data:`BURST` times; the
rest are counted, and the next line of that kind after the window carries ``repeated=N`` (or,
for stdlib records, "(N similar lines suppressed)"), so nothing is silently lost.

Only warnings and errors are throttled, and stdlib records (asyncio, uvicorn), which are
warnings and up anyway. Info events are one per poll, push or action, so their number is bounded
by the work the budgets allow; warnings can be caused from outside at any rate (a flood of
malformed requests, a vendor failing every call).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, MutableMapping
from typing import Any

import structlog

WINDOW = 10.0
BURST = 5
MAX_KEYS = 1024
THROTTLED_LEVELS = frozenset({"warning", "error", "critical", "exception"})
IDENTITY_FIELDS = ("account", "job", "endpoint")
"""Fields that make two events with the same name different lines (one account failing must
not hide another's failures)."""


class RepeatThrottle:
    """Per-key windows: the first :data:`BURST` lines pass, the rest are counted."""

    def __init__(self, window: float = WINDOW, burst: int = BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.burst = burst
        self._clock = clock
        self._windows: dict[Hashable, list[float]] = {}  # key -> [start, passed, suppressed]

    def admit(self, key: Hashable) -> int | None:
        """None to drop this line; otherwise write it, noting the returned count of lines
        suppressed since the last one written."""
        now = self._clock()
        entry = self._windows.get(key)
        if entry is None or now - entry[0] >= self.window:
            suppressed = int(entry[2]) if entry is not None else 0
            if entry is None and len(self._windows) >= MAX_KEYS:
                self._forget(now)
            self._windows[key] = [now, 1, 0]
            return suppressed
        if entry[1] < self.burst:
            entry[1] += 1
            return 0
        entry[2] += 1
        return None

    def _forget(self, now: float) -> None:
        stale = [k for k, e in self._windows.items() if now - e[0] >= self.window and not e[2]]
        for key in stale or list(self._windows)[: MAX_KEYS // 2]:
            del self._windows[key]

    def processor(self, logger: Any, method: str,
                  event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        """structlog processor (after ``add_log_level``)."""
        level = str(event.get("level", method))
        if level not in THROTTLED_LEVELS:
            return event
        key = (level, event.get("event"), *(str(event.get(f)) for f in IDENTITY_FIELDS))
        suppressed = self.admit(key)
        if suppressed is None:
            raise structlog.DropEvent
        if suppressed:
            event["repeated"] = suppressed
        return event

    def filter(self, record: logging.LogRecord) -> bool:
        """logging filter for stdlib records (asyncio's accept errors, uvicorn's warnings)."""
        suppressed = self.admit((record.name, record.levelno, str(record.msg)))
        if suppressed is None:
            return False
        if suppressed:
            record.msg = f"{record.msg} ({suppressed} similar lines suppressed)"
        return True
