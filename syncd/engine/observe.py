"""Turning observations into ledger state: last known values, links, agreed values, outbox.

These functions run inside one ledger transaction (see :meth:`syncd.ledger.Ledger.run`), so an
observation, the agreed values it moves and the outbox actions it causes commit together or not
at all: a crash can lose neither the change nor the push it owes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from syncd import metrics
from syncd.config import SyncGroup
from syncd.engine.reconciler import (
    SEVERITY,
    STATE,
    AgreedValue,
    Change,
    Decision,
    Member,
    Policy,
    reconcile,
)
from syncd.ledger import PENDING, Agreed, Link, Outbox, Record, Tx
from syncd.ledger.store import STATE_ACTIONS
from syncd.model import Capability, Incident, Severity, State, marker_for, parse_marker

SAME_OCCURRENCE_SLACK = timedelta(seconds=60)
"""Clock skew allowed between vendors when deciding whether an incident predates a resolve."""

@dataclass(frozen=True)
class GroupContext:
    """A sync group plus what the engine knows about its accounts."""

    group: SyncGroup
    capabilities: Mapping[str, Capability]
    policy: Policy

    @classmethod
    def build(cls, group: SyncGroup, capabilities: Mapping[str, Capability]) -> GroupContext:
        policy = Policy(
            state_sources=group.fields.sources(STATE),
            severity_sources=group.fields.sources(SEVERITY),
            severity_policy=group.severity_policy,
            regressions=group.regressions,
        )
        return cls(group, {a: capabilities[a] for a in group.accounts}, policy)


@dataclass
class ObserveResult:
    changed: int = 0
    stale: int = 0
    actions: int = 0
    linked: int = 0


def observe(
    tx: Tx,
    account: str,
    incidents: Sequence[Incident],
    groups: Sequence[GroupContext],
    now: datetime,
    *,
    grace: timedelta,
) -> ObserveResult:
    """Record one page of observations of ``account`` and reconcile every link they touch."""
    result = ObserveResult()
    known = tx.records(account, [inc.external_id for inc in incidents])  # one query per page
    for inc in incidents:
        rec = known.get(inc.external_id)
        changes: list[tuple[str, str | None, str | None]] = []
        if rec is None:
            rec = known[inc.external_id] = tx.add(_new_record(account, inc, now))
            joined_fresh = True
        else:
            joined_fresh = False
            if _stale(rec, inc, now, grace):
                result.stale += 1
                continue
            changes = _diff(rec, inc)
            meta_changed = _refresh(rec, inc)
            if not changes and not meta_changed:
                continue
            rec.observed_at = now
            if changes:
                for name, old, new in changes:
                    tx.audit("observed", account=account, external_id=rec.external_id,
                             field=name, old=old, new=new, cause=account, at=now)
                rec.state = inc.state.value
                rec.severity = inc.severity.value if inc.severity else None
        result.changed += 1
        at = inc.updated_at or now
        for ctx in groups:
            link, joined, created = _link_for(tx, ctx, rec, inc, now, fresh=joined_fresh)
            if link is None:
                continue
            if joined:
                result.linked += 1
                these = [
                    Change(account, rec.id or 0, STATE, None, rec.state, at, joined=True),
                    Change(account, rec.id or 0, SEVERITY, None, rec.severity, at, joined=True),
                ]
            elif joined_fresh:
                continue
            else:
                these = [Change(account, rec.id or 0, n, o, v, at) for n, o, v in changes]
                if not these:
                    continue
            result.actions += apply_changes(tx, ctx, link, these, now,
                                            only=rec if created else None)
    return result


def apply_changes(tx: Tx, ctx: GroupContext, link: Link, changes: Sequence[Change],
                  now: datetime, *, only: Record | None = None) -> int:
    """Reconcile one link and write the decision: agreed values, outbox, cancels, audit.

    ``only``: the link was created in this transaction for this record, so it has no other
    member, no pending action and no agreed value yet: three queries saved per new incident,
    which is most of a first poll or an alert storm."""
    assert link.id is not None
    rows: Sequence[tuple[object, Record]] = [(None, only)] if only else tx.members(link.id)
    pending_by_record = {} if only else tx.pending_for_records(r.id or 0 for _, r in rows)
    members = []
    for _member, record in rows:
        pending = frozenset(
            STATE if row.action in STATE_ACTIONS else SEVERITY
            for row in pending_by_record.get(record.id or 0, ())
            if row.action != "create"
        )
        members.append(Member(
            account=record.account,
            record_id=record.id or 0,
            state=State(record.state),
            severity=_severity(record.severity),
            capabilities=ctx.capabilities.get(record.account, Capability.NONE),
            pending=pending,
        ))
    agreed_rows: Mapping[str, Agreed] = {} if only else tx.agreed(link.id)
    agreed = {
        name: AgreedValue(row.value, row.source_account, row.changed_at)
        for name, row in agreed_rows.items()
    }
    decision = reconcile(agreed, members, changes, ctx.policy, now)
    write_decision(tx, ctx, link, decision, now, agreed_rows)
    return len(decision.actions)


def write_decision(tx: Tx, ctx: GroupContext, link: Link, decision: Decision,
                   now: datetime, agreed_rows: Mapping[str, Agreed] | None = None) -> None:
    assert link.id is not None
    group = ctx.group.name
    for name, value in decision.agreed.items():
        tx.set_agreed(link.id, name, value.value, value.source, value.changed_at,
                      known=agreed_rows)
    for record_id, name in decision.cancel:
        for row in tx.pending_for(record_id):
            if (row.action in STATE_ACTIONS) == (name == STATE) and row.action != "create":
                row.status = "superseded"
                row.last_error = "member already has the agreed value"
                row.updated_at = now
    for planned in decision.actions:
        caused = decision.agreed.get(STATE if planned.action.value in STATE_ACTIONS
                                     else SEVERITY)
        tx.enqueue(Outbox(
            group_name=group,
            link_id=link.id,
            record_id=planned.record_id,
            account=planned.account,
            action=planned.action.value,
            value=planned.value,
            idempotency_key=str(uuid.uuid4()),
            status=PENDING,
            next_attempt_at=now,
            cause_account=planned.cause,
            caused_at=caused.changed_at if caused else now,
            created_at=now,
            updated_at=now,
        ))
    for note in decision.notes:
        if note.kind == "conflict":
            metrics.CONFLICTS.labels(group, note.field).inc()
        tx.audit(note.kind, group_name=group, link_id=link.id, account=note.account,
                 field=note.field, old=note.old, new=note.new, detail=note.detail, at=now)


def _link_for(tx: Tx, ctx: GroupContext, rec: Record, inc: Incident, now: datetime,
              *, fresh: bool) -> tuple[Link | None, bool, bool]:
    """The link this record belongs to in ``ctx``'s group, creating/joining one if the group's
    rules say so. Returns (link, joined_now, created_now)."""
    group = ctx.group
    if rec.account not in group.accounts:
        return None, False, False
    assert rec.id is not None
    link = None if fresh else tx.link_of(group.name, rec.id)  # a new record has no link yet
    if link is not None:
        return link, False, False
    # A marker we wrote into an incident we created wins over every other rule.
    marked = parse_marker(inc.keys)
    if marked and marked[0] == group.name:
        found = tx.link(marked[1])
        if found is not None and found.group_name == group.name and not _has_account(
            tx, found, rec.account
        ):
            tx.add_member(found, rec)
            rec.marker = marker_for(group.name, marked[1])
            tx.audit("link", group_name=group.name, link_id=found.id, account=rec.account,
                     external_id=rec.external_id, detail="joined by creation marker", at=now)
            return found, True, False
    if group.mode == "correlate":
        key = inc.keys.get(group.key_for(rec.account))
        if not key:
            return None, False, False
        link = _open_link_for_key(tx, group.name, key, rec)
        created = link is None
        if link is None:
            link = tx.new_link(group.name, key, "correlate")
            detail = f"new link for key {key!r}"
        else:
            detail = f"correlated by key {key!r}"
        tx.add_member(link, rec)
        tx.audit("link", group_name=group.name, link_id=link.id, account=rec.account,
                 external_id=rec.external_id, detail=detail, at=now)
        return link, True, created
    # mirror: only a record seen for the first time opens a link, so an incident that existed
    # before syncd started is never copied later just because it changed (unless
    # mirror_existing); resolved incidents are never copied.
    if rec.account != group.source or not fresh or inc.state == State.RESOLVED:
        return None, False, False
    if not group.mirror_existing and tx.cursor(rec.account).last_success_at is None:
        return None, False, False
    link = tx.new_link(group.name, None, "mirror")
    assert link.id is not None
    tx.add_member(link, rec)
    marker = marker_for(group.name, link.id)
    for target in group.accounts:
        if target == rec.account:
            continue
        if not ctx.capabilities.get(target, Capability.NONE) & Capability.CREATE:
            tx.audit("gap", group_name=group.name, link_id=link.id, account=target,
                     field="create", detail="vendor cannot create incidents", at=now)
            continue
        tx.enqueue(Outbox(
            group_name=group.name, link_id=link.id, record_id=None, account=target,
            action="create", value=marker, idempotency_key=f"{marker}/{target}",
            status=PENDING, next_attempt_at=now, cause_account=rec.account,
            caused_at=inc.updated_at or now, created_at=now, updated_at=now,
        ))
    tx.audit("link", group_name=group.name, link_id=link.id, account=rec.account,
             external_id=rec.external_id, detail=f"mirror link; creating in other accounts "
             f"with marker {marker}", at=now)
    return link, True, True


def _has_account(tx: Tx, link: Link, account: str) -> bool:
    return any(m.account == account for m, _ in tx.members(link.id or 0))


def _open_link_for_key(tx: Tx, group: str, key: str, rec: Record) -> Link | None:
    """The link to join for a correlation key: the newest one that has no record of this
    account yet. If that link is already resolved, the record joins only when it is the same
    occurrence (it existed before the link was resolved); an alert that fires again after
    everything was resolved is a new incident and gets a new link, as it does when the link
    already has a record of this account."""
    link = tx.link_by_key(group, key)
    if link is None or link.id is None or _has_account(tx, link, rec.account):
        return None
    agreed = tx.agreed(link.id).get(STATE)
    if agreed is not None and agreed.value == State.RESOLVED.value:
        born = rec.vendor_created_at or rec.first_seen_at
        if born > agreed.changed_at + SAME_OCCURRENCE_SLACK:
            return None
    return link


def _new_record(account: str, inc: Incident, now: datetime) -> Record:
    return Record(
        account=account,
        external_id=inc.external_id,
        title=inc.title,
        state=inc.state.value,
        severity=inc.severity.value if inc.severity else None,
        dedup=inc.keys.get("dedup"),
        marker=inc.keys.get("marker"),
        keys_json=json.dumps(dict(inc.keys), sort_keys=True),
        number=inc.number,
        url=inc.url,
        vendor_created_at=inc.created_at,
        vendor_updated_at=inc.updated_at,
        first_seen_at=now,
        observed_at=now,
    )


def _diff(rec: Record, inc: Incident) -> list[tuple[str, str | None, str | None]]:
    out: list[tuple[str, str | None, str | None]] = []
    if rec.state != inc.state.value:
        out.append((STATE, rec.state, inc.state.value))
    severity = inc.severity.value if inc.severity else None
    # A vendor that reports no severity for a record does not clear the last known one.
    if severity is not None and rec.severity != severity:
        out.append((SEVERITY, rec.severity, severity))
    return out


def _refresh(rec: Record, inc: Incident) -> bool:
    """Copy descriptive fields; True when any changed (worth a write, not a reconcile)."""
    keys_json = json.dumps(dict(inc.keys), sort_keys=True)
    new = (inc.title, keys_json, inc.updated_at, inc.url, inc.number)
    old = (rec.title, rec.keys_json, rec.vendor_updated_at, rec.url, rec.number)
    if new == old:
        return False
    rec.title, rec.keys_json, rec.vendor_updated_at, rec.url, rec.number = new
    rec.dedup = inc.keys.get("dedup", rec.dedup)
    rec.marker = inc.keys.get("marker", rec.marker)
    return True


def _stale(rec: Record, inc: Incident, now: datetime, grace: timedelta) -> bool:
    """An observation older than our last confirmed push to this record says nothing new.

    With vendor timestamps on both sides: older than the vendor's timestamp on the
    confirmation. Without them, only a step *back* from the state we confirmed, within ``grace``
    of the confirmation, is taken for list lag; anything else (a resolve right after our ack) is
    news. A real change dropped here is not lost for good: the next full resync reports it.
    """
    if rec.pushed_at is None:
        return False
    if inc.updated_at is not None and rec.pushed_vendor_at is not None:
        return inc.updated_at < rec.pushed_vendor_at
    if now - rec.pushed_at >= grace:
        return False
    return inc.state < State(rec.state)


def _severity(value: str | None) -> Severity | None:
    return None if value is None else Severity(value)
