"""Limits that keep the status port from starving syncing of file descriptors.

Operators expose the status port for webhooks, so anyone may open connections to it. Each one
is a descriptor in the same process that talks to the vendors: 1,100 idle connections against
the default soft limit of 1024 once made every vendor poll fail with ConnectError. So:

- at start the soft ``RLIMIT_NOFILE`` is raised toward the hard limit (under systemd the
  unit's ``LimitNOFILE=`` sets both, since its syscall filter forbids ``setrlimit``), and the
  status server may hold at most a quarter of it, and never more than ``MAX_CONNECTIONS``: the
  rest is vendor traffic's and the ledger's (both in :mod:`syncd.http.descriptors`, which the
  daemon uses without loading uvicorn when the status server is off);
- at the cap a new connection evicts the oldest idle one (no request in flight) instead of being
  refused, so ``/readyz`` and a vendor's delivery still get through a crowd of idle sockets;
  when every held connection is busy the newcomer is closed at once;
- a connection must send a complete request head within :data:`IDLE_TIMEOUT` of opening (and of
  its previous response), and a request may take at most :data:`REQUEST_TIMEOUT`;
- the listen backlog (which is also how many connections asyncio accepts per loop turn) is
  :data:`BACKLOG`, so a connect storm cannot take hundreds of descriptors in one go;
- request heads are capped at :data:`MAX_HEAD_BYTES` (h11) and WebSocket upgrades are off.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.h11_impl import H11Protocol

from syncd.http.descriptors import MAX_CONNECTIONS

IDLE_TIMEOUT = 10.0
"""Seconds a connection may stay without a request in flight before it is closed: the header
timeout for a new connection (uvicorn has none), and a ceiling over keep-alive."""
KEEP_ALIVE = 5.0
REQUEST_TIMEOUT = 30.0
BACKLOG = 128
MAX_HEAD_BYTES = 16 * 1024


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a connection cap, idle eviction and deadlines.

    uvicorn accepts a protocol class as ``Config(http=...)``; the hooks used here
    (``connection_made``, ``connection_lost``, ``handle_events``, ``on_response_complete``,
    ``cycle``, ``connections``) are the ones its own keep-alive handling uses."""

    max_connections: ClassVar[int] = MAX_CONNECTIONS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._busy_since = 0.0
        self._seen_cycle: object = None

    @classmethod
    def capped(cls, limit: int) -> type[GuardedH11Protocol]:
        return type("StatusProtocol", (cls,), {"max_connections": limit})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._idle_since = self._busy_since = self.loop.time()
        self._timer = self.loop.call_later(IDLE_TIMEOUT, self._check)
        if len(self.connections) > self.max_connections:
            victim = self._oldest_idle()
            (victim if victim is not None else self).transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and self.cycle is not self._seen_cycle:
            self._seen_cycle = self.cycle
            self._busy_since = self.loop.time()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._idle_since = self.loop.time()

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _oldest_idle(self) -> GuardedH11Protocol | None:
        idle = [p for p in self.connections
                if p is not self and isinstance(p, GuardedH11Protocol) and p._idle()
                and not p.transport.is_closing()]
        return min(idle, key=lambda p: p._idle_since, default=None)

    def _check(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self._idle():
            deadline = max(self._idle_since, self._busy_since) + IDLE_TIMEOUT
        else:
            deadline = self._busy_since + REQUEST_TIMEOUT
        if now >= deadline:
            self.transport.abort()
        else:
            self._timer = self.loop.call_later(deadline - now, self._check)
