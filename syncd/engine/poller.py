"""Polling one account: read pages through its client, commit each page with its cursor.

Each page is one transaction holding the observations, the agreed values they move, the outbox
actions they cause and the cursor to resume from, so a crash mid-poll resumes at the last
committed page and re-reads at most one page. Failures are logged once when they start and once
when they recover (Home Assistant's update coordinator does the same), and an authentication
failure is reported as such so ``/readyz`` and ``syncd status`` can say so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from syncd import metrics
from syncd.engine.links import GroupContext
from syncd.engine.observe import ObserveResult, observe
from syncd.ledger import Ledger, Tx, utcnow
from syncd.ratelimit import POLL_READS, PollReads
from syncd.vendors.base import AuthError, Page, TLSError, VendorClient, VendorError
from syncd.vendors.guard import guarded_pages

log = structlog.get_logger(__name__)

PageHook = Callable[[ObserveResult], None]
"""Called (synchronously: it must not wait) after a committed page that owed actions."""


@dataclass
class PollResult:
    account: str
    ok: bool
    full: bool
    pages: int = 0
    observed: int = 0
    changed: int = 0
    actions: int = 0
    skipped: int = 0
    error: str | None = None
    auth_failed: bool = False  # credentials rejected or TLS verification failed: retrying
    # will not help; ``auth_problem`` is what /readyz tells the operator meanwhile
    auth_problem: str | None = None


class Poller:
    def __init__(self, account: str, client: VendorClient, ledger: Ledger,
                 groups: Sequence[GroupContext], *, full_every: float,
                 grace: timedelta = timedelta(seconds=60), patience: float = 0.0) -> None:
        """``patience``: seconds a poll's reads wait, in all, while the account's pushes run
        (:class:`~syncd.ratelimit.PollReads`)."""
        self.account = account
        self.client = client
        self.ledger = ledger
        self.groups = [g for g in groups if account in g.group.accounts]
        self.full_every = full_every
        self.grace = grace
        self.patience = patience
        self.failing = False

    async def poll(self, *, full: bool | None = None, on_page: PageHook | None = None
                   ) -> PollResult:
        """Read and commit every page. ``on_page`` runs after each committed page that owed
        actions, while the next pages are still to come (the daemon starts pushes there)."""
        state = await self.ledger.run(_cursor_state, self.account)
        cursor, last_full = state
        now = utcnow()
        if full is None:
            full = cursor is None or last_full is None or (
                (now - last_full).total_seconds() >= self.full_every
            )
        result = PollResult(self.account, ok=True, full=full)
        reads = POLL_READS.set(PollReads(self.patience) if self.patience else None)
        try:
            for read_cursor, read_full, keep_cursor in _reads(
                    cursor, full, follows=self.client.full_read_follows_cursor):
                pages = self.client.poll(read_cursor, full=read_full)
                async for page in guarded_pages(self.account, pages):
                    if not keep_cursor:
                        page.cursor = None
                    outcome = await self.ledger.run(self._commit, page)
                    result.pages += 1
                    result.observed += len(page.incidents)
                    result.changed += outcome.changed
                    result.actions += outcome.actions
                    result.skipped += len(page.skipped)
                    if outcome.actions and on_page is not None:
                        on_page(outcome)
                    for skipped in page.skipped:
                        log.warning("poll.skipped_record", account=self.account,
                                    endpoint=skipped.endpoint, reason=skipped.reason,
                                    external_id=skipped.external_id)
        except VendorError as exc:
            result.ok = False
            result.error = f"{type(exc).__name__}: {exc}"
            result.auth_failed = isinstance(exc, AuthError)
            if isinstance(exc, TLSError):
                result.auth_problem = exc.message  # "TLS verification failed for HOST: ..."
            elif result.auth_failed:
                result.auth_problem = "authentication failed"
            metrics.POLL_FAILURES.labels(self.account, type(exc).__name__).inc()
            await self.ledger.run(_record_failure, self.account, result.error)
            if not self.failing:
                log.error("poll.failing", account=self.account, error=result.error,
                          auth=result.auth_failed)
            self.failing = True
            return result
        finally:
            POLL_READS.reset(reads)
        await self.ledger.run(_record_success, self.account, full)
        metrics.POLLS.labels(self.account, "full" if full else "delta").inc()
        metrics.LAST_POLL.labels(self.account).set(utcnow().timestamp())
        if self.failing:
            log.info("poll.recovered", account=self.account)
            self.failing = False
        if result.changed or result.skipped:
            log.info("poll.done", account=self.account, full=full, pages=result.pages,
                     observed=result.observed, changed=result.changed, actions=result.actions,
                     skipped=result.skipped)
        return result

    def _commit(self, tx: Tx, page: Page) -> ObserveResult:
        now = utcnow()
        outcome = observe(tx, self.account, page.incidents, self.groups, now, grace=self.grace)
        if page.cursor is not None:
            tx.cursor(self.account).cursor = page.cursor
        if outcome.changed:
            metrics.CHANGES.labels(self.account, "any").inc(outcome.changed)
        return outcome


def _reads(cursor: str | None, full: bool, *, follows: bool = False
           ) -> list[tuple[str | None, bool, bool]]:
    """The reads one poll makes, in order: ``(cursor, full, keep its cursor)`` each.

    A full read lists open incidents only, so an incident resolved since the last poll is in
    none of its pages: on its own it would drop that resolve (after a downtime longer than
    ``full_resync_interval``, or whenever every poll is a full one). So a full read that has a
    cursor to resume from is followed by the change feed from that cursor, and that read's
    cursor is the one kept. The feed comes second so that its answer, the newer one, is the
    last word: an open list lagging behind the feed cannot undo a resolve the feed showed.
    A poll that fails half-way resumes from the old cursor and does both again. A client
    whose full read takes the cursor and reads both at once (``follows``: Spike, Splunk
    On-Call, whose every poll lists all open incidents anyway) is given it, in one read.
    """
    if not full:
        return [(cursor, False, True)]
    if cursor is None or follows:
        return [(cursor, True, True)]
    return [(None, True, False), (cursor, False, True)]


def _cursor_state(tx: Tx, account: str) -> tuple[str | None, datetime | None]:
    row = tx.cursor(account)
    return row.cursor, row.last_full_at


def _record_success(tx: Tx, account: str, full: bool) -> None:
    row = tx.cursor(account)
    now = utcnow()
    row.last_poll_at = row.last_success_at = now
    if full:
        row.last_full_at = now
    row.failures = 0
    row.last_error = None


def _record_failure(tx: Tx, account: str, error: str) -> None:
    row = tx.cursor(account)
    row.last_poll_at = utcnow()
    row.failures += 1
    row.last_error = error[:500]
