"""Which replica syncs: the lease loop, the role it gives this process, and the guard on every
vendor write (see :mod:`syncd.ledger.lease` for the lease and its fencing).

The daemon runs :meth:`Leadership.run` beside its jobs. As leader it renews the lease every
``ttl / 3`` (start to start); as standby it tries to take it about every second and otherwise
only serves its status server. Jobs ask :attr:`Leadership.leading` before doing anything, every
ledger transaction of the engine checks the fencing token (the ledger's ``fence``), and
:class:`GuardedTransport` refuses a vendor write the moment the lease is not held by this
process's own clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import httpx
import structlog

from syncd import __version__, metrics
from syncd.ledger import Ledger
from syncd.ledger.lease import Lease, LeaseLost, Term, current
from syncd.vendors._http import READ_METHODS

log = structlog.get_logger(__name__)

RESIGN_WAIT = 2.0
"""Seconds a stop waits to release the lease (a renewal in flight first, then the release's
own wait for the row, at most :data:`~syncd.ledger.postgres.LEASE_LOCK_TIMEOUT`)."""


class GuardedTransport(httpx.AsyncBaseTransport):
    """Wraps a vendor client's transport: a write (any method but GET/HEAD/OPTIONS) leaves
    only if ``guard()`` passes right now, at the last moment before the request is sent (after
    any rate-limit wait). A refused write raises :class:`LeaseLost`: nothing was sent, so the
    outbox row stays pending for whoever leads. Writes that left are counted by the client's
    session (:func:`syncd.vendors.base.counting_writes`), not here: one count, led or not."""

    def __init__(self, inner: httpx.AsyncBaseTransport, guard: Callable[[], None],
                 agent: str | None = None) -> None:
        self.inner = inner
        self.guard = guard
        self.agent = agent

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.agent:  # which replica made a call, in the vendor's own logs
            request.headers["User-Agent"] = self.agent
        if request.method not in READ_METHODS:
            self.guard()
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def user_agent(holder: str) -> str:
    return f"syncd/{__version__} (replica {holder})"


class Leadership:
    """This replica's role on a shared (PostgreSQL) ledger."""

    def __init__(self, lease: Lease, ledger: Ledger,
                 on_change: Callable[[bool], None] = lambda leading: None) -> None:
        self.lease = lease
        self.ledger = ledger
        self.on_change = on_change
        self.was_leading = False
        self._failing = False
        ledger.fence = lease.fence  # every engine transaction checks the token from now on
        metrics.LEADER.set(0)

    @property
    def leading(self) -> bool:
        return self.lease.held()

    @property
    def role(self) -> str:
        return "leader" if self.leading else "standby"

    async def run(self) -> None:
        """Renew or try to take the lease until cancelled. The leader's renewals start
        ``ttl / 3`` apart, counted from the previous one's start (at once if it took longer):
        its deadline counts from that start too, so sleeping ``ttl / 3`` after a slow renewal
        ended (up to ``ttl / 3`` waiting for the row, plus the commit) left the next one only
        what that renewal had not used. A renewal that failed (the database restarting, a
        network blip, the row locked) is retried at the standby's pace, also counted from the
        failed attempt's start (a renewal that timed out waiting for the row has used that
        time already), not ``ttl / 3`` later:
        two failed renewals would otherwise put the next attempt past this process's own
        deadline, and the leader would lose a term that a shorter outage than the TTL should
        leave it."""
        while True:
            started = self.lease.clock()
            await self.tick()
            pace = (self.lease.renew_every if self.leading and not self._failing
                    else self.lease.standby_every)
            await anyio.sleep(max(0.0, pace - (self.lease.clock() - started)))

    async def tick(self) -> Term | None:
        """One attempt; notices every change of role (also a lease that ran out locally
        because the database could not be reached)."""
        term: Term | None = None
        try:
            term = await self.lease.maintain(self.ledger)
        except Exception as exc:
            if not self._failing:
                log.error("lease.unreachable", error=f"{type(exc).__name__}: {exc}"[:300],
                          holder=self.lease.holder)
            self._failing = True
        else:
            if self._failing:
                log.info("lease.reachable", holder=self.lease.holder)
            self._failing = False
        self._note_role(term)
        return term

    def stepped_down(self, reason: str) -> None:
        """A fenced transaction or a refused write showed the lease is gone."""
        if self.lease.token is not None:
            self.lease.lost()
            log.warning("lease.fenced", holder=self.lease.holder, reason=reason[:300])
        self._note_role(None)

    def _note_role(self, term: Term | None) -> None:
        leading = self.leading
        if leading == self.was_leading:
            return
        self.was_leading = leading
        metrics.LEADER.set(1 if leading else 0)
        if leading:
            log.info("lease.acquired", holder=self.lease.holder, token=self.lease.token,
                     ttl=self.lease.ttl)
        else:
            log.warning("lease.lost", holder=self.lease.holder,
                        leader=term.holder if term else None)
        self.on_change(leading)

    async def resign(self) -> None:
        """Release the lease at a clean shutdown so a standby takes over at once. Bounded by
        :data:`RESIGN_WAIT`, also the wait for a renewal still on the lease's thread: past
        it the release is abandoned (its thread finishes on its own, its row lock wait is
        bounded too) and the TTL ends the term, as after a crash. No look at the token first:
        an acquisition still on the lease's thread sets it only once it has committed, and
        the release goes by holder. An acquisition or renewal the stop cancelled is abandoned
        (``Lease.maintain``) and frees the lease's thread slot: the row lock orders it with
        this release, and ``Lease.resigning``, set first, makes it end this process's term
        (or take nothing) when it gets the row after the release gave up. Called only at a
        stop: a resigned lease is not used again."""
        error = f"no answer within {RESIGN_WAIT:g} s"
        self.lease.resigning.set()  # a renewal the stop abandoned ends the term, not renews it
        with anyio.move_on_after(RESIGN_WAIT):
            try:
                await self.ledger.run_lease(self.lease.release, abandon=True)
                error = ""
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
        if error:
            log.warning("lease.release_abandoned", error=error, holder=self.lease.holder,
                        ttl=self.lease.ttl)
        self.lease.lost()
        metrics.LEADER.set(0)

    async def describe(self) -> dict[str, Any]:
        """Role and the stored lease, for /readyz, /status and the sd_notify status line."""
        term = await self.ledger.read(current)
        return {"role": self.role, "replica": self.lease.holder,
                "lease": term.as_dict() if term else None}


def fenced_out(exc: BaseException) -> LeaseLost | None:
    """The :class:`LeaseLost` behind ``exc`` (raised directly, or inside an exception group)."""
    if isinstance(exc, LeaseLost):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = fenced_out(inner)
            if found is not None:
                return found
    return None
