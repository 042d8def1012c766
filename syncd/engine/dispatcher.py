"""Draining one account's outbox: batch, push, record what the vendor confirmed.

- Due actions are grouped by (action, value) and sent in the vendor's largest batches.
- A confirmed push updates the member's *last known* value in the same transaction that marks the
  action done, so the next poll sees an echo, not a change.
- Transient failures (5xx, timeouts, malformed answers) are retried with exponential backoff and
  full jitter; a rate limit reschedules at the vendor's reset time; permanent refusals are parked
  with their reason; an authentication failure leaves everything pending and stops this round.
- A crash between the vendor call and the commit leaves the action pending: it is pushed again,
  and the vendor answers "already" (acks and resolves are idempotent; clients never move a state
  backwards), so nothing is lost and nothing takes effect twice. Creates look for their marker
  before creating, so a crash between create and commit finds the incident instead of creating a
  second one.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from syncd import metrics
from syncd.engine.observe import GroupContext, apply_changes
from syncd.engine.reconciler import SEVERITY, STATE, Change
from syncd.ledger import DONE, PARKED, PENDING, Ledger, Outbox, Record, Tx, utcnow
from syncd.model import Incident, NewIncident, Severity, State
from syncd.vendors.base import (
    Action,
    AuthError,
    Outcome,
    PermanentError,
    Push,
    PushResult,
    RateLimited,
    TransientError,
    VendorClient,
    VendorError,
)

log = structlog.get_logger(__name__)

MAX_BACKOFF = 300.0
MAX_ATTEMPTS = 50


@dataclass
class DispatchResult:
    account: str
    pushed: int = 0
    done: int = 0
    parked: int = 0
    retried: int = 0
    calls: int = 0
    errors: list[str] = field(default_factory=list)
    auth_failed: bool = False

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

    async def dispatch(self, *, limit: int = 5000) -> DispatchResult:
        result = DispatchResult(self.account)
        rows = await self.ledger.run(_due, self.account, self.clock(), limit)
        if not rows:
            return result
        batches: dict[tuple[str, str | None], list[tuple[Outbox, Record]]] = defaultdict(list)
        for row, record in rows:
            if row.action == "create":
                if not await self._create(row, result):
                    return result
                continue
            assert record is not None
            key = (row.action, row.value if row.action == Action.SET_SEVERITY.value else None)
            batches[key].append((row, record))
        for (action_name, _value), items in batches.items():
            action = Action(action_name)
            size = max(1, self.client.batch_size.get(action, 1))
            for start in range(0, len(items), size):
                chunk = items[start : start + size]
                if not await self._push(action, chunk, result):
                    return result
        return result

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
            answers = await self.client.push(action, pushes)
        except RateLimited as exc:
            await self.ledger.run(_reschedule, [r.id for r, _ in chunk], exc.retry_after, str(exc),
                                  False)
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
            await self.ledger.run(_reschedule, ids, None, str(exc), True)
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
        records = tx.records_by_ids(rec.id for _, rec in chunk if rec.id is not None)
        for stale_row, stale_record in chunk:
            row = rows[stale_row.id]
            record = records.get(stale_record.id or 0, stale_record)
            answer = answers.get(record.external_id)
            if answer is None:
                answer = PushResult(record.external_id, Outcome.RETRY, "no result for record")
            metrics.PUSHES.labels(self.account, action.value, answer.outcome.value).inc()
            if answer.outcome in (Outcome.DONE, Outcome.ALREADY):
                _confirm(record, action, row.value, answer.incident, now)
                if row.status != PENDING:
                    continue  # superseded while in flight: the newer action still goes out
                row.status = DONE
                row.updated_at = now
                row.attempts += 1
                done += 1
                metrics.PROPAGATION.observe(max(0.0, (now - row.caused_at).total_seconds()))
            elif answer.outcome == Outcome.REFUSED:
                row.status = PARKED
                row.last_error = answer.message[:500] or "refused by vendor"
                row.updated_at = now
                parked += 1
            else:
                _backoff(row, now, answer.message or "retry")
                retried += 1
            tx.audit("push", group_name=row.group_name, link_id=row.link_id,
                     account=self.account, external_id=record.external_id,
                     field=STATE if action != Action.SET_SEVERITY else SEVERITY,
                     new=row.value, cause=row.cause_account, outcome=answer.outcome.value,
                     detail=answer.message[:300] or None, at=now)
        return done, parked, retried

    def _park(self, tx: Tx, ids: list[int], reason: str) -> None:
        now = self.clock()
        for row in tx.outbox_rows(ids):
            row.status = PARKED
            row.last_error = reason[:500]
            row.updated_at = now
            tx.audit("park", group_name=row.group_name, link_id=row.link_id,
                     account=row.account, field=row.action, new=row.value,
                     outcome="parked", detail=reason[:300], at=now)

    async def _create(self, row: Outbox, result: DispatchResult) -> bool:
        """Mirror creation: look for the marker first, create only when it is not there."""
        marker = row.value or ""
        source = await self.ledger.run(_source_record, row.link_id, row.account)
        if source is None:
            await self.ledger.run(self._park, [row.id], "mirror source record is gone")
            return True
        agreed_state, agreed_sev, title = source
        try:
            incident = await self.client.find_created(marker)
            result.calls += 1
            if incident is None:
                incident = await self.client.create(NewIncident(
                    marker=marker, title=title, state=State(agreed_state),
                    severity=Severity(agreed_sev) if agreed_sev else None,
                    details=f"Mirrored by syncd (group {row.group_name}, link {row.link_id}).",
                ))
                result.calls += 1
        except RateLimited as exc:
            await self.ledger.run(_reschedule, [row.id], exc.retry_after, str(exc), False)
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
            await self.ledger.run(_reschedule, [row.id], None, str(exc), True)
            result.errors.append(str(exc))
            result.retried += 1
            return True
        await self.ledger.run(self._created, row.id, incident)
        result.done += 1
        return True

    def _created(self, tx: Tx, row_id: int, incident: Incident) -> None:
        now = self.clock()
        row = tx.outbox_rows([row_id])[0]
        ctx = self.groups[row.group_name]
        link = tx.link(row.link_id)
        assert link is not None
        record = tx.record(self.account, incident.external_id)
        if record is None:
            record = tx.add(Record(
                account=self.account, external_id=incident.external_id, title=incident.title,
                state=incident.state.value,
                severity=incident.severity.value if incident.severity else None,
                dedup=incident.keys.get("dedup"), marker=row.value,
                keys_json="{}", number=incident.number, url=incident.url,
                vendor_created_at=incident.created_at, vendor_updated_at=incident.updated_at,
                first_seen_at=now, observed_at=now, pushed_at=now,
                pushed_vendor_at=incident.updated_at,
            ))
        record.marker = row.value
        if tx.link_of(row.group_name, record.id or 0) is None:
            tx.add_member(link, record)
            at = incident.updated_at or now
            apply_changes(tx, ctx, link, [
                Change(self.account, record.id or 0, STATE, None, record.state, at, joined=True),
                Change(self.account, record.id or 0, SEVERITY, None, record.severity, at,
                       joined=True),
            ], now)
        row.status = DONE
        row.updated_at = now
        row.attempts += 1
        tx.audit("create", group_name=row.group_name, link_id=row.link_id,
                 account=self.account, external_id=incident.external_id, new=row.value,
                 cause=row.cause_account, outcome="done", at=now)


def _due(tx: Tx, account: str, now: datetime, limit: int) -> list[tuple[Outbox, Record | None]]:
    rows = tx.due(account, now, limit)
    records = tx.records_by_ids(r.record_id for r in rows if r.record_id is not None)
    return [(r, records.get(r.record_id or -1)) for r in rows
            if r.action == "create" or r.record_id in records]


def _source_record(tx: Tx, link_id: int, exclude: str) -> tuple[str, str | None, str] | None:
    agreed = tx.agreed(link_id)
    for _member, record in tx.members(link_id):
        if record.account != exclude:
            state = agreed.get(STATE)
            sev = agreed.get(SEVERITY)
            return (state.value if state and state.value else record.state,
                    sev.value if sev else record.severity, record.title)
    return None


def _confirm(record: Record, action: Action, value: str | None,
             incident: Incident | None, now: datetime) -> None:
    """The vendor confirmed: the member's last known value becomes the pushed value.

    Only the pushed value: if the vendor's answer shows something else (a person resolved it
    meanwhile), the last known value stays old so the next poll sees that as a change instead of
    the ledger silently absorbing it.
    """
    if action == Action.SET_SEVERITY:
        if incident is None or incident.severity is None or incident.severity.value == value:
            record.severity = value
    else:
        target = {Action.ACKNOWLEDGE: State.ACKNOWLEDGED.value,
                  Action.RESOLVE: State.RESOLVED.value}.get(action, value)
        if target and (incident is None or incident.state.value == target):
            record.state = target
    record.pushed_at = now
    record.pushed_vendor_at = incident.updated_at if incident is not None else None


def _backoff(row: Outbox, now: datetime, error: str) -> None:
    row.attempts += 1
    if row.attempts >= MAX_ATTEMPTS:
        row.status = PARKED
        row.last_error = f"gave up after {row.attempts} attempts: {error}"[:500]
        row.updated_at = now
        return
    delay = random.uniform(0, min(MAX_BACKOFF, 1.0 * 2 ** min(row.attempts, 10)))
    row.next_attempt_at = now + timedelta(seconds=max(0.5, delay))
    row.last_error = error[:500]
    row.updated_at = now


def _reschedule(tx: Tx, ids: list[int], after: float | None, error: str, count: bool) -> None:
    now = utcnow()
    for row in tx.outbox_rows(ids):
        if row.status != PENDING:
            continue
        if after is None:
            _backoff(row, now, error)
        else:
            row.next_attempt_at = now + timedelta(seconds=after)
            row.last_error = error[:500]
            row.updated_at = now
            if count:
                row.attempts += 1


def _note_error(tx: Tx, ids: list[int], error: str) -> None:
    for row in tx.outbox_rows(ids):
        row.last_error = error[:500]
