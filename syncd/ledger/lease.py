"""The leader lease: exactly one replica on a PostgreSQL ledger polls, reconciles and pushes.

One ``lease`` row holds the current term: its holder (one id per process), its expiry on the
*database's* clock (replicas on different machines never compare their own clocks) and a
fencing token that grows by one with every new term. A replica takes the lease when the row is
missing or expired, and the holder renews it every ``ttl / 3``::

    standby ──row expired or missing: token + 1──> leader ──renew (same token)──> leader
       ^                                            │
       └──── another holder's term / fenced ────────┘

Two guards keep an ex-leader (paused by a GC, SIGSTOP or a partition) from acting on a lost
lease:

- **Fencing, inside the ledger**: every transaction of the engine checks, inside the same
  transaction, that the row still carries this process's holder and token (:meth:`Lease.fence`,
  reading the row ``FOR SHARE``, so a takeover waits for it to commit or sees it rolled back).
  A stale transaction raises :class:`LeaseLost` and rolls back: its outbox rows and push records
  never land.
- **Before every vendor write** (:meth:`Lease.guard`, called by the HTTP transport right before
  a non-GET request leaves): the lease must be valid by this process's monotonic clock, counted
  from the *start* of the last successful renewal, less a safety margin. The database expiry is
  measured from later than that, so the local deadline always falls before any standby can take
  over. Vendors take no fencing token, so this is the best a client can do: see docs/ha.md for
  the window that remains.

SQLite ledgers need no lease: the file lock allows one syncing process per ledger.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlmodel import select

from syncd.ledger import postgres
from syncd.ledger.tables import Lease as LeaseRow

if TYPE_CHECKING:
    from syncd.ledger.store import Ledger, Tx

LEADER = "leader"


class LeaseLost(Exception):
    """This process does not hold the lease (any more): nothing it was about to write may land.
    Raised inside a transaction (rolled back) or before a vendor write (never sent)."""


@dataclass(frozen=True)
class Term:
    """The lease row as one transaction saw it."""

    holder: str
    token: int
    expires_at: datetime
    now: datetime  # the database's clock when it was read

    @property
    def expired(self) -> bool:
        return self.expires_at <= self.now

    def as_dict(self) -> dict[str, object]:
        return {"holder": self.holder, "token": self.token, "expires_at": self.expires_at,
                "expires_in_s": round((self.expires_at - self.now).total_seconds(), 1)}


def replica_id() -> str:
    """This process's holder id: host and pid for people, a random suffix so a restarted
    process with a recycled pid is never taken for its predecessor."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Lease:
    """This process's side of the lease: its holder id, the token of its term (None while
    standby) and the local deadline for vendor writes."""

    def __init__(self, ttl: float, *, holder: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.holder = holder or replica_id()
        self.margin = max(0.5, ttl * 0.1)
        self.clock = clock
        self.token: int | None = None
        self.valid_until = 0.0
        self.last: Term | None = None  # the row as the last attempt saw it
        self.resigning = threading.Event()
        """Set at a stop, before the release: an attempt the stop abandoned on its thread
        (waiting on the row) then ends this term instead of renewing it or taking over."""

    @property
    def renew_every(self) -> float:
        """The leader renews three times per term; a standby looks as often, at most every
        second, so it takes over within about one second of the expiry."""
        return self.ttl / 3

    @property
    def standby_every(self) -> float:
        return min(1.0, self.ttl / 3)

    def held(self) -> bool:
        return self.token is not None and self.clock() < self.valid_until

    def guard(self) -> None:
        """Raise :class:`LeaseLost` unless a vendor write may be made right now."""
        if not self.held():
            raise LeaseLost(f"{self.holder} does not hold the lease: vendor write not sent")

    def lost(self) -> None:
        """Step down: no vendor write and no fenced transaction until a new term is won."""
        self.token = None
        self.valid_until = 0.0

    # ------------------------------------------------------------------ inside transactions

    def fence(self, tx: Tx) -> None:
        """Raise :class:`LeaseLost` unless the lease row still names this term. Locks the row
        ``FOR SHARE`` until this transaction ends, so no takeover can commit in between."""
        row = tx.session.exec(
            select(LeaseRow).where(LeaseRow.name == LEADER).with_for_update(read=True)
        ).first()
        if self.token is None or row is None or row.holder != self.holder \
                or row.token != self.token:
            held_by = f"{row.holder} (token {row.token})" if row is not None else "nobody"
            raise LeaseLost(f"fenced: the lease is held by {held_by}, this transaction's "
                            f"token is {self.token}; rolled back")

    def attempt(self, tx: Tx) -> Term:
        """Renew this term, or start a new one if the lease is free or expired; otherwise
        leave it to its holder. Returns the row as it is now (within this transaction)."""
        if _postgres(tx):
            # The leader's own engine transactions hold the row FOR SHARE from their first
            # statement to their commit: its renewal waits for one as long as the next renewal
            # is due (waiting costs nothing: the deadline counts from before the attempt). A
            # standby (or a frozen holder's successor) only ever waits a short while.
            postgres.limit_lock_wait(tx.session, postgres.LEASE_LOCK_TIMEOUT
                                     if self.token is None
                                     else max(postgres.LEASE_LOCK_TIMEOUT, self.renew_every))
        now = db_now(tx)
        expires = now + timedelta(seconds=self.ttl)
        seen = tx.session.exec(select(LeaseRow).where(LeaseRow.name == LEADER)).first()
        if seen is not None and seen.holder != self.holder and seen.expires_at > now:
            # Another holder's unexpired term: nothing to take, so nothing to lock. Locking
            # it anyway waited behind every leader transaction (they hold the row FOR SHARE)
            # and, past the short wait, failed as if the database were unreachable.
            return Term(seen.holder, seen.token, seen.expires_at, now)
        row = tx.session.exec(
            select(LeaseRow).where(LeaseRow.name == LEADER).with_for_update()
        ).first()
        if self.resigning.is_set():
            # Abandoned by a stop while it waited for the row: the release gave up meanwhile
            # (its lock wait is shorter), so end the term here rather than renew a process
            # that is leaving (a standby would wait out a whole TTL).
            if row is not None and row.holder == self.holder and row.expires_at > now:
                self._end(tx, row, now)
            if row is None:
                return Term("", 0, now, now)  # nobody's: taking it now would outlive the stop
            return Term(row.holder, row.token, row.expires_at, now)
        if row is None:
            row = LeaseRow(name=LEADER, holder=self.holder, token=1, expires_at=expires,
                           acquired_at=now, renewed_at=now)
            tx.session.add(row)
            tx.audit("lease", outcome="acquired", detail=f"{self.holder} token 1", at=now)
        elif row.holder == self.holder and row.expires_at > now:
            # This process's own term, renewed also after it stepped down locally (token None:
            # its own deadline ran out first). Returning the row unrenewed would let the
            # caller count a local deadline past the database's expiry, and a standby could
            # take over while this process still pushed. The holder id is unique per process.
            row.expires_at, row.renewed_at = expires, now
        elif row.expires_at <= now:
            previous = f"{row.holder} (token {row.token}, expired {row.expires_at:%H:%M:%S})"
            row.token += 1
            row.holder, row.expires_at, row.acquired_at, row.renewed_at = (
                self.holder, expires, now, now)
            tx.audit("lease", outcome="acquired",
                     detail=f"{self.holder} token {row.token}, taking over from {previous}",
                     at=now)
        tx.session.flush()
        return Term(row.holder, row.token, row.expires_at, now)

    def release(self, tx: Tx) -> None:
        """End this term now (a clean shutdown): a standby takes over at its next look
        instead of waiting out the TTL. Waits for the row no longer than an attempt does (a
        long transaction holding it FOR SHARE held the whole stop): if it gives up, the TTL
        ends the term. Goes by holder (unique per process), not by the local token: a term
        committed just before a stop may not have set it yet, or a renewal after a local
        step-down may have extended it. A term not ours is left without taking a lock."""
        if _postgres(tx):
            postgres.limit_lock_wait(tx.session, postgres.LEASE_LOCK_TIMEOUT)
        now = db_now(tx)
        seen = tx.session.exec(select(LeaseRow).where(LeaseRow.name == LEADER)).first()
        if seen is None or seen.holder != self.holder or seen.expires_at <= now:
            return
        row = tx.session.exec(
            select(LeaseRow).where(LeaseRow.name == LEADER).with_for_update()
        ).first()
        if row is not None and row.holder == self.holder:
            self._end(tx, row, now)

    def _end(self, tx: Tx, row: LeaseRow, now: datetime) -> None:
        row.expires_at = now
        tx.audit("lease", outcome="released", detail=f"{self.holder} token {row.token}",
                 at=now)
        tx.session.flush()

    # ------------------------------------------------------------------ from the event loop

    async def maintain(self, ledger: Ledger) -> Term:
        """One renewal or takeover attempt; updates this object after the commit. A failed
        attempt (database down) raises and changes nothing: the local deadline runs out on its
        own, and with it every vendor write. A cancelled attempt (a stop) is abandoned, not
        waited for: its lock wait is up to ttl/3 behind a row another transaction holds, longer
        than a stop may take; this object changes only after the await, so an abandoned
        attempt never extends the local deadline, and once the stop set :attr:`resigning` it
        ends the term when it gets the row instead of renewing it (the release, whose lock
        wait is shorter, gave up meanwhile)."""
        started = self.clock()
        term = await ledger.run_lease(self.attempt, abandon=True)
        self.last = term
        if term.holder == self.holder:
            self.token = term.token
            self.valid_until = started + self.ttl - self.margin
        else:
            self.lost()
        return term


def db_now(tx: Tx) -> datetime:
    """The database's clock (PostgreSQL), or this machine's (SQLite: one machine anyway)."""
    if _postgres(tx):
        return postgres.now(tx.session)
    from syncd.ledger.store import utcnow

    return utcnow()


def current(tx: Tx) -> Term | None:
    """The lease as stored (for ``syncd status`` and ``/status``), or None before any term."""
    row = tx.session.get(LeaseRow, LEADER)
    return None if row is None else Term(row.holder, row.token, row.expires_at, db_now(tx))


def _postgres(tx: Tx) -> bool:
    return tx.session.get_bind().dialect.name == "postgresql"
