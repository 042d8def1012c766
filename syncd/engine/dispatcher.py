"""Draining one account's outbox: batch, push, record what the vendor confirmed.

- Due actions are grouped by (action, value) and sent in the vendor's largest batches; a
  group's batches go out several at a time (as many as the account's budget can feed while
  each call waits for the vendor, :meth:`~syncd.ratelimit.Budget.parallel_calls`), groups one
  after another, so a record's actions keep their order.
- A confirmed push updates the member's *last known* value in the same transaction that marks the
  action done, so the next poll sees an echo, not a change.
- Transient failures (5xx, timeouts, malformed answers) are retried with exponential backoff and
  full jitter; a rate limit reschedules at the vendor's reset time; permanent refusals are parked
  with their reason; an authentication failure leaves everything pending and stops this round.
- On-call overrides (``Action.OVERRIDE``) are pushed one at a time by :meth:`push_override`,
  right after the on-call service owed them; they are never retried, since a second override
  could stack on the first (see :mod:`syncd.ledger.oncall`).
- A crash between the vendor call and the commit leaves the action pending: it is pushed again,
  and the vendor answers "already" (acks and resolves are idempotent; clients never move a state
  backwards), so nothing is lost and nothing takes effect twice. Creates look for their marker
  before creating, so a crash between create and commit finds the incident instead of creating a
  second one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import anyio
import structlog

from syncd import metrics
from syncd.engine.links import GroupContext, join_created
from syncd.ledger import Ledger, Outbox, Record, Tx, outbox, records, utcnow
from syncd.ledger import oncall as oncall_store
from syncd.ledger.lease import LeaseLost
from syncd.model import SEVERITY, STATE, Action, Incident, NewIncident, Severity, State
from syncd.ratelimit import POLL_READS
from syncd.vendors.base import (
    AuthError,
    Outcome,
    PermanentError,
    Push,
    PushResult,
    RateLimited,
    TransientError,
    VendorClient,
    VendorError,
    counting_writes,
)
from syncd.vendors.guard import vendor_answer

log = structlog.get_logger(__name__)
STOPPING = "not sent: syncd is stopping"
"""Why an override owed but never sent at a stop is deferred (planned afresh at the next start)."""


@dataclass
class DispatchResult:
    """What one dispatch of an account did. ``errors`` holds every vendor error it met,
    including a refused row it parked or a malformed answer it rescheduled and then went on;
    ``halted`` says it stopped working for the account before it went through every due row
    (rate limited, credentials or TLS refused, the vendor failing transiently): the rows it
    left stay pending, and another dispatch right now would only meet the same wall."""

    account: str
    pushed: int = 0
    done: int = 0
    parked: int = 0
    retried: int = 0
    calls: int = 0
    errors: list[str] = field(default_factory=list)
    auth_failed: bool = False
    halted: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors


class Dispatcher:
    def __init__(self, account: str, client: VendorClient, ledger: Ledger,
                 groups: dict[str, GroupContext], *,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.account = account
        self.client = client
        self.ledger = ledger
        self.groups = groups
        self.clock = clock
        self.parallel = client.budget.parallel_calls()
        """Vendor pushes in flight at once for this account, sized by its budget."""
        self.stopping = False
        """Set at shutdown: the pushes on the wire finish, no further one starts (the rest
        stay pending for the next start)."""

    async def dispatch(self, *, limit: int = 5000, whole: bool = False) -> DispatchResult:
        """Push what is due. ``whole``: only whole pushes (:meth:`whole_push` records of one
        group each); the rest, and creates, wait for a full dispatch. A poll round still
        landing can start its pushes this way (the budget gets busy sooner) without costing
        one call more than a dispatch after the round would."""
        result = DispatchResult(self.account)
        now = self.clock()
        if whole and not await self.ledger.run(self._whole_due, now):
            return result  # one grouped count, not the rows: polls ask after every page
        rows = await self.ledger.run(_due, self.account, now, limit)
        if not rows:
            return result
        self.client.budget.pushing += 1  # this account's poll reads wait meanwhile
        # Not a poll's reads, even when a poll's page started this dispatch (a task inherits
        # its creator's context): a push's own reads must never wait for pushes.
        reads = POLL_READS.set(None)
        try:
            result.halted = not await self._dispatch_rows(rows, result, whole)
        finally:
            POLL_READS.reset(reads)
            self.client.budget.pushing -= 1
        return result

    async def _dispatch_rows(self, rows: list[tuple[Outbox, Record | None]],
                             result: DispatchResult, whole: bool) -> bool:
        """Push ``rows``. Returns False when a push or create said this account should stop
        for now (the rest stay pending)."""
        batches: dict[tuple[str, str | None], list[tuple[Outbox, Record]]] = defaultdict(list)
        for row, record in rows:
            if self.stopping:
                return False
            if record is None:  # Action.CREATE: the record does not exist yet
                if not whole and not await self._create(row, result):
                    return False
                continue
            key = (row.action, row.value if row.action == Action.SET_SEVERITY.value else None)
            batches[key].append((row, record))
        for (action_name, _value), items in batches.items():
            if self.stopping:
                return False
            action = Action(action_name)
            if whole:
                items = items[:len(items) - len(items) % self.whole_push(action)]
                if not items:
                    continue
            if not await self._push_group(action, items, result, whole=whole):
                return False
        return True

    def whole_push(self, action: Action) -> int:
        """Records one ``push`` call carries at most: ``batch_size`` per vendor write, or
        ``push_size`` where one lookup serves several single-record writes."""
        batch = max(1, self.client.batch_size.get(action, 1))
        return max(batch, self.client.push_size.get(action, batch))

    def _whole_due(self, tx: Tx, now: datetime) -> bool:
        """Whether any group of due actions fills at least one whole push."""
        groups: dict[tuple[str, str | None], int] = defaultdict(int)
        for (action_name, value), n in tx.due_counts(self.account, now).items():
            if action_name == Action.CREATE.value:
                continue
            groups[(action_name, value if action_name == Action.SET_SEVERITY.value
                    else None)] += n
        return any(n >= self.whole_push(Action(key[0])) for key, n in groups.items())

    def _chunks(self, action: Action, items: list[tuple[Outbox, Record]], *,
                whole: bool = False) -> list[list[tuple[Outbox, Record]]]:
        """One group's items in ``push`` calls of :meth:`whole_push` records. While the budget
        has tokens to spare, a small burst is spread over the calls in flight (more lookups,
        less waiting), unless only whole pushes go out (``whole``); once it binds, every
        lookup serves ``push_size``."""
        batch = max(1, self.client.batch_size.get(action, 1))
        most = self.whole_push(action)
        size = most
        if not whole and self.client.budget.available() >= 2 * len(items):
            size = max(batch, min(most, -(-len(items) // self.parallel)))
        return [items[i:i + size] for i in range(0, len(items), size)]

    async def _push_group(self, action: Action, items: list[tuple[Outbox, Record]],
                          result: DispatchResult, *, whole: bool = False) -> bool:
        """Push one group's chunks, up to :attr:`parallel` at a time, so a budget the vendor
        takes 100-300 ms to answer each call of stays busy. Each row is in exactly one chunk,
        so each is pushed once; once a chunk says stop (rate limit, credentials, vendor
        trouble), no further chunk starts, the ones in flight finish and the rest stay
        pending. Returns False when this account should stop for now."""
        stop = False
        slots = anyio.Semaphore(self.parallel)

        async def one(chunk: list[tuple[Outbox, Record]]) -> None:
            nonlocal stop
            async with slots:
                if stop or self.stopping or not await self._push(action, chunk, result):
                    stop = True

        async with anyio.create_task_group() as tg:
            for chunk in self._chunks(action, items, whole=whole):
                tg.start_soon(one, chunk)
        return not stop

    async def _push(self, action: Action, chunk: Sequence[tuple[Outbox, Record]],
                    result: DispatchResult) -> bool:
        """Push one batch. Returns False when this account should stop for now."""
        pushes = [
            Push(
                external_id=record.external_id,
                action=action,
                idempotency_key=row.idempotency_key,
                severity=Severity(row.value) if action == Action.SET_SEVERITY and row.value
                else None,
            )
            for row, record in chunk
        ]
        result.calls += 1
        result.pushed += len(pushes)
        try:
            with vendor_answer(self.account, f"push {action.value}"):
                answers = await self.client.push(action, pushes)
        except RateLimited as exc:
            await self.ledger.run(self._reschedule, [r.id for r, _ in chunk], str(exc),
                                  exc.retry_after, False)
            result.errors.append(str(exc))
            return False
        except AuthError as exc:
            await self.ledger.run(_note_error, [r.id for r, _ in chunk], str(exc))
            result.errors.append(str(exc))
            result.auth_failed = True
            log.error("push.auth_failed", account=self.account, error=str(exc))
            return False
        except PermanentError as exc:
            if len(chunk) > 1:
                # One bad record must not park its neighbours: retry them one by one.
                for item in chunk:
                    if not await self._push(action, [item], result):
                        return False
                return True
            await self.ledger.run(self._park, [r.id for r, _ in chunk], str(exc))
            result.parked += 1
            result.errors.append(str(exc))
            return True
        except VendorError as exc:
            # Transient or malformed: the write may or may not have happened; pushing it again
            # is safe (idempotent), so reschedule with backoff. A transient failure ends this
            # round for the account: hammering a struggling vendor only makes it worse.
            ids = [r.id for r, _ in chunk]
            await self.ledger.run(self._reschedule, ids, str(exc), None, True)
            result.retried += len(ids)
            result.errors.append(str(exc))
            metrics.PUSH_FAILURES.labels(self.account, action.value, type(exc).__name__).inc()
            return not isinstance(exc, TransientError)
        by_id = {a.external_id: a for a in answers}
        outcome = await self.ledger.run(self._settle, action, list(chunk), by_id)
        result.done += outcome[0]
        result.parked += outcome[1]
        result.retried += outcome[2]
        return True

    def _settle(self, tx: Tx, action: Action, chunk: list[tuple[Outbox, Record]],
                answers: dict[str, PushResult]) -> tuple[int, int, int]:
        now = self.clock()
        done = parked = retried = 0
        rows = {r.id: r for r in tx.outbox_rows(r.id for r, _ in chunk)}
        known = tx.records_by_ids(rec.id for _, rec in chunk if rec.id is not None)
        for stale_row, stale_record in chunk:
            row = rows[stale_row.id]
            record = known.get(stale_record.id or 0, stale_record)
            answer = answers.get(record.external_id)
            if answer is None:
                answer = PushResult(record.external_id, Outcome.RETRY, "no result for record")
            metrics.PUSHES.labels(self.account, action.value, answer.outcome.value).inc()
            if answer.outcome in (Outcome.DONE, Outcome.ALREADY):
                records.confirm_push(record, action, self._landed(action, row.value),
                                     answer.incident, now)
                if not outbox.confirm(row, now):
                    continue  # superseded while in flight: the newer action still goes out
                done += 1
                metrics.PROPAGATION.observe(max(0.0, (now - row.caused_at).total_seconds()))
            elif answer.outcome == Outcome.REFUSED:
                outbox.park(row, answer.message[:500] or "refused by vendor", now)
                parked += 1
            else:
                outbox.back_off(row, answer.message or "retry", now)
                retried += 1
            tx.audit("push", group_name=row.group_name, link_id=row.link_id,
                     account=self.account, external_id=record.external_id,
                     field=STATE if action != Action.SET_SEVERITY else SEVERITY,
                     new=row.value, cause=row.cause_account, outcome=answer.outcome.value,
                     detail=answer.message[:300] or None, at=now)
        return done, parked, retried

    def _landed(self, action: Action, value: str | None) -> str | None:
        """The value a confirmed push left in the vendor: for a severity the vendor's scale
        cannot hold exactly, its closest one. The member's last known value becomes that, so
        the next poll reads back an echo rather than a change that would drift the agreed
        severity (and the person's choice in the other vendors) to the vendor's value."""
        if action is not Action.SET_SEVERITY or not value:
            return value
        return self.client.severity_lands_as(Severity(value)).value

    def _park(self, tx: Tx, ids: list[int], reason: str) -> None:
        now = self.clock()
        for row in tx.outbox_rows(ids):
            outbox.park(row, reason, now)
            tx.audit("park", group_name=row.group_name, link_id=row.link_id,
                     account=row.account, field=row.action, new=row.value,
                     outcome="parked", detail=reason[:300], at=now)

    async def _create(self, row: Outbox, result: DispatchResult) -> bool:
        """Mirror creation: look for the marker first; when it is not there, create unless
        the link has a copy in this account by now (a poll joined one by its origin tag while
        this row waited: the vendor cannot be searched for another ledger's marker). Checked
        right before the create call, so only a join landing during that call is missed (then
        :func:`~syncd.engine.links.join_created` reports the second copy)."""
        marker = row.value or ""
        try:
            with vendor_answer(self.account, "create"):
                incident = await self.client.find_created(marker)
                result.calls += 1
            if incident is None:
                source = await self.ledger.run(_source_record, row.link_id, row.account)
                if not isinstance(source, tuple):
                    await self.ledger.run(self._no_create, row.id, source)
                    if source is None:
                        result.parked += 1
                    else:
                        result.done += 1
                    return True
                agreed_state, agreed_sev, title = source
                with vendor_answer(self.account, "create"):
                    incident = await self.client.create(NewIncident(
                        marker=marker, title=title, state=State(agreed_state),
                        severity=Severity(agreed_sev) if agreed_sev else None,
                        details=f"Mirrored by syncd (group {row.group_name}, "
                                f"link {row.link_id}).",
                    ))
                    result.calls += 1
        except RateLimited as exc:
            await self.ledger.run(self._reschedule, [row.id], str(exc), exc.retry_after, False)
            result.errors.append(str(exc))
            return False
        except AuthError as exc:
            result.errors.append(str(exc))
            result.auth_failed = True
            return False
        except PermanentError as exc:
            await self.ledger.run(self._park, [row.id], str(exc))
            result.errors.append(str(exc))
            result.parked += 1
            return True
        except VendorError as exc:
            await self.ledger.run(self._reschedule, [row.id], str(exc), None, True)
            result.errors.append(str(exc))
            result.retried += 1
            return True
        await self.ledger.run(self._created, row.id, incident)
        result.done += 1
        return True

    async def push_override(self, row: Outbox) -> tuple[str, str | None, str]:
        """Push one owed on-call override and store its outcome. Returns (outcome, vendor id,
        reason) with outcome done, no-op, deferred, refused or unknown.

        An override can take several writes (Splunk On-Call: create, then assign; incident.io:
        one per rotation layer). Refused or deferred after one of them may have landed, it is
        unknown, not retried: planning it afresh would stack a second override on the part
        that exists. The count comes from the client's session, so it holds for every process,
        whether or not a lease guards its writes. Cut off by a stop before anything was sent,
        it is deferred (:meth:`_settle_cut_off_override`)."""
        assert row.id is not None
        o = oncall_store.override_of(row)
        vendor_id: str | None = None
        sent = [0]
        try:
            with vendor_answer(self.account, "create_override"), counting_writes() as sent:
                try:
                    vendor_id = await self.client.create_override(o.schedule_id, o.user_email,
                                                                  o.start, o.end)
                except LeaseLost as exc:
                    await self._settle_refused_override(row.id, sent[0], exc)
                    raise
            outcome, reason = ("done", "") if vendor_id else (
                "no-op", "the vendor created nothing: the person is already the one paged "
                "there throughout the window")
        except (RateLimited, AuthError, PermanentError) as exc:
            if sent[0]:
                outcome, reason = "unknown", _in_part(exc, sent[0])
            else:
                outcome = "refused" if isinstance(exc, PermanentError) else "deferred"
                reason = f"{type(exc).__name__}: {exc}"
        except VendorError as exc:
            outcome, reason = "unknown", (f"{type(exc).__name__}: {exc} (not retried: the "
                                          "override may exist)")
        except anyio.get_cancelled_exc_class():
            if not sent[0]:
                await self._settle_cut_off_override(row.id)
            raise
        await self.ledger.run(oncall_store.settle_override, row.id, outcome, vendor_id or None,
                              reason, self.clock())
        return outcome, vendor_id or None, reason

    async def _settle_cut_off_override(self, row_id: int) -> None:
        """A stop cut the push off before any of its writes may have landed (waiting on its
        budget or on a 429's back-off): deferred, so the next start plans it afresh. Left
        pending, it would cover its window as if pushed and be declared unknown after
        STUCK_AFTER: a drift never repaired. Shielded: it runs while being cancelled. A write
        cancelled on the wire counts as sent (it may have landed): that row stays pending.
        Unfenced, for the reason :meth:`_settle_refused_override` gives: the lease may be gone
        by now (a standby took over during the drain, or after ``resign()``), and a fenced
        settle would fail with LeaseLost and leave the row pending."""
        with anyio.CancelScope(shield=True):
            try:
                await self.ledger.read(oncall_store.settle_override, row_id, "deferred", None,
                                       STOPPING, self.clock())
            except Exception as failed:
                log.warning("override.settle_failed", account=self.account, row=row_id,
                            error=f"{type(failed).__name__}: {failed}"[:300])

    async def _settle_refused_override(self, row_id: int, sent: int, exc: LeaseLost) -> None:
        """The lease guard refused a write of an override: settle its row, which would
        otherwise stay pending ("sent, answer not recorded": the override may exist), so the
        next leader would take it for a repair already made and never push it. Nothing sent:
        deferred (the next run plans it afresh); part of it sent: unknown. Unfenced, since this
        replica no longer leads; the next leader never pushes a pending override row itself,
        and a row no longer pending is left alone. If the ledger cannot be reached either, the
        row stays pending and becomes unknown after STUCK_AFTER, as after a crash."""
        outcome, reason = ("deferred", f"not sent: {exc}") if not sent else (
            "unknown", _in_part(exc, sent))
        try:
            await self.ledger.read(oncall_store.settle_override, row_id, outcome, None, reason,
                                   self.clock())
        except Exception as failed:
            log.warning("override.settle_failed", account=self.account, row=row_id,
                        error=f"{type(failed).__name__}: {failed}"[:300])

    def _created(self, tx: Tx, row_id: int, incident: Incident) -> None:
        now = self.clock()
        row = tx.outbox_rows([row_id])[0]
        join_created(tx, self.groups[row.group_name], row.link_id, self.account, incident,
                     row.value or "", now)
        outbox.confirm(row, now)
        tx.audit("create", group_name=row.group_name, link_id=row.link_id,
                 account=self.account, external_id=incident.external_id, new=row.value,
                 cause=row.cause_account, outcome="done", at=now)

    def _no_create(self, tx: Tx, row_id: int, copy: str | None) -> None:
        """Nothing to create: the link has a member in this account already (``copy``, its
        external id), or none to copy from (None: parked)."""
        if copy is None:
            self._park(tx, [row_id], "mirror source record is gone")
            return
        now = self.clock()
        row = tx.outbox_rows([row_id])[0]
        if outbox.confirm(row, now, note=f"the link has a copy here already ({copy})"):
            tx.audit("create", group_name=row.group_name, link_id=row.link_id,
                     account=self.account, external_id=copy, new=row.value,
                     cause=row.cause_account, outcome="already",
                     detail="the link has a copy in this account already: nothing created",
                     at=now)

    def _reschedule(self, tx: Tx, ids: list[int], error: str, after: float | None,
                    count: bool) -> None:
        now = self.clock()
        for row in tx.outbox_rows(ids):
            outbox.reschedule(row, error, now, after=after, count=count)


def _due(tx: Tx, account: str, now: datetime, limit: int) -> list[tuple[Outbox, Record | None]]:
    rows = tx.due(account, now, limit)
    found = tx.records_by_ids(r.record_id for r in rows if r.record_id is not None)
    return [(r, found.get(r.record_id or -1)) for r in rows
            if r.record_id is None or r.record_id in found]


def _source_record(tx: Tx, link_id: int, account: str
                   ) -> tuple[str, str | None, str] | str | None:
    """What a create in ``account`` copies: the agreed state and severity and the title of
    another member; the external id of the link's member in ``account`` if it has one (no
    create then); None when the link has no other member."""
    members = [record for _member, record in tx.members(link_id)]
    for record in members:
        if record.account == account:
            return record.external_id
    if not members:
        return None
    record, agreed = members[0], tx.agreed(link_id)
    state, sev = agreed.get(STATE), agreed.get(SEVERITY)
    return (state.value if state and state.value else record.state,
            sev.value if sev else record.severity, record.title)


def _in_part(exc: Exception, sent: int) -> str:
    """The reason of an override that failed after ``sent`` of its writes may have landed."""
    return (f"{type(exc).__name__}: {exc} after {sent} write(s) of it left (not retried: the "
            "override may exist in part)")


def _note_error(tx: Tx, ids: list[int], error: str) -> None:
    for row in tx.outbox_rows(ids):
        outbox.note_error(row, error)
