"""The link hub: which link a record belongs to, and the one path from a link's changes to its
agreed values and outbox actions.

Every way a record joins or leaves a link goes through here: a poll (:func:`link_for`, from
:mod:`.observe`), the confirmation of a mirror create (:func:`join_created`, from the
dispatcher), and an operator's ``syncd link`` / ``unlink`` (:func:`link_records`,
:func:`unlink_record`). Each then calls :func:`reconcile_link`, which asks the pure
:mod:`.reconciler` and writes its decision (:func:`write_decision`). Everything runs inside the
caller's ledger transaction, so a change and the pushes it owes commit together.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from syncd import metrics
from syncd.config import Config, SyncGroup
from syncd.engine.reconciler import (
    AgreedValue,
    Change,
    Decision,
    Member,
    Missing,
    Policy,
    reconcile,
)
from syncd.ledger import Agreed, Link, Record, Tx, outbox, records, utcnow
from syncd.model import (
    SEVERITY,
    STATE,
    Action,
    Capability,
    Incident,
    Severity,
    State,
    marker_for,
    parse_marker,
)

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
class Joined:
    """Where a record stands in one group after :func:`link_for`."""

    link: Link
    joined: bool = False  # the record joined the link now
    created: bool = False  # the link was opened now, for this record alone
    missing: list[str] = field(default_factory=list)  # accounts a mirror link copies it to


# --------------------------------------------------------------------------- deciding


def reconcile_link(tx: Tx, ctx: GroupContext, link: Link, changes: Sequence[Change],
                   now: datetime, *, only: Record | None = None,
                   missing: Sequence[str] = ()) -> int:
    """Reconcile one link and write the decision: agreed values, outbox, cancels, audit.
    Returns the number of actions owed.

    ``only``: the link was created in this transaction for this record, so it has no other
    member, no pending action and no agreed value yet: three queries saved per new incident,
    which is most of a first poll or an alert storm. ``missing``: accounts the link has no
    record in and asks for a copy (a mirror link just opened)."""
    assert link.id is not None
    rows: Sequence[Record] = [only] if only else [r for _, r in tx.members(link.id)]
    pending = {} if only else outbox.pending_fields(tx, (r.id or 0 for r in rows))
    members = [
        Member(
            account=record.account,
            record_id=record.id or 0,
            state=State(record.state),
            severity=None if record.severity is None else Severity(record.severity),
            capabilities=ctx.capabilities.get(record.account, Capability.NONE),
            pending=pending.get(record.id or 0, frozenset()),
        )
        for record in rows
    ]
    agreed_rows: Mapping[str, Agreed] = {} if only else tx.agreed(link.id)
    agreed = {
        name: AgreedValue(row.value, row.source_account, row.changed_at)
        for name, row in agreed_rows.items()
    }
    absent = [Missing(a, ctx.capabilities.get(a, Capability.NONE)) for a in missing]
    decision = reconcile(agreed, members, changes, ctx.policy, now, missing=absent)
    write_decision(tx, ctx, link, decision, now, agreed_rows)
    return len(decision.actions)


def write_decision(tx: Tx, ctx: GroupContext, link: Link, decision: Decision,
                   now: datetime, agreed_rows: Mapping[str, Agreed] | None = None) -> None:
    """Store what the reconciler decided, in the caller's transaction."""
    assert link.id is not None
    group = ctx.group.name
    for name, value in decision.agreed.items():
        tx.set_agreed(link.id, name, value.value, value.source, value.changed_at,
                      known=agreed_rows)
    for record_id, name in decision.cancel:
        outbox.supersede(tx, record_id, name, "member already has the agreed value", now)
    for planned in decision.actions:
        value, key = planned.value, str(uuid.uuid4())
        if planned.action is Action.CREATE:
            # Deterministic, so the dispatcher finds an incident it created before a crash.
            value = marker_for(group, link.id)
            key = f"{value}/{planned.account}"
        caused = decision.agreed.get(planned.action.field or "")
        outbox.enqueue(
            tx, group=group, link_id=link.id, record_id=planned.record_id,
            account=planned.account, action=planned.action, value=value, key=key,
            cause=planned.cause,
            caused_at=planned.at or (caused.changed_at if caused else now), now=now,
        )
    for note in decision.notes:
        if note.kind == "conflict":
            metrics.CONFLICTS.labels(group, note.field).inc()
        tx.audit(note.kind, group_name=group, link_id=link.id, account=note.account,
                 field=note.field, old=note.old, new=note.new, detail=note.detail, at=now)


def joined_changes(rec: Record, at: datetime) -> list[Change]:
    """A record entering a link brings its state and severity as changes."""
    return [Change(rec.account, rec.id or 0, name, None, value, at, joined=True)
            for name, value in ((STATE, rec.state), (SEVERITY, rec.severity))]


# --------------------------------------------------------------------------- polls


def link_for(tx: Tx, ctx: GroupContext, rec: Record, inc: Incident, now: datetime,
             *, fresh: bool) -> Joined | None:
    """The link this record belongs to in ``ctx``'s group, creating/joining one if the group's
    rules say so; None when it belongs to none. ``fresh``: the record was first seen now."""
    group = ctx.group
    if rec.account not in group.accounts:
        return None
    assert rec.id is not None
    link = None if fresh else tx.link_of(group.name, rec.id)  # a new record has no link yet
    if link is not None:
        return Joined(link)
    # A marker we wrote into an incident we created wins over every other rule.
    marked = parse_marker(inc.keys)
    if marked and marked[0] == group.name:
        found = tx.link(marked[1])
        if found is not None and found.group_name == group.name and not _has_account(
            tx, found, rec.account
        ):
            tx.add_member(found, rec)
            records.set_marker(rec, marker_for(group.name, marked[1]))
            tx.audit("link", group_name=group.name, link_id=found.id, account=rec.account,
                     external_id=rec.external_id, detail="joined by creation marker", at=now)
            return Joined(found, joined=True)
    if group.mode == "correlate":
        key = inc.keys.get(group.key_for(rec.account))
        if not key:
            return None
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
        return Joined(link, joined=True, created=created)
    # mirror: only a record seen for the first time opens a link, so an incident that existed
    # before syncd started is never copied later just because it changed (unless
    # mirror_existing); resolved incidents are never copied.
    if rec.account != group.source or not fresh or inc.state == State.RESOLVED:
        return None
    if not group.mirror_existing and tx.cursor(rec.account).last_success_at is None:
        return None
    link = tx.new_link(group.name, None, "mirror")
    assert link.id is not None
    tx.add_member(link, rec)
    tx.audit("link", group_name=group.name, link_id=link.id, account=rec.account,
             external_id=rec.external_id, detail=f"mirror link; creating in other accounts "
             f"with marker {marker_for(group.name, link.id)}", at=now)
    return Joined(link, joined=True, created=True,
                  missing=[a for a in group.accounts if a != rec.account])


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


# --------------------------------------------------------------------------- mirror creates


def join_created(tx: Tx, ctx: GroupContext, link_id: int, account: str, incident: Incident,
                 marker: str, now: datetime) -> Record:
    """A mirror create was confirmed: store the new record (a poll may have stored it first)
    and let it join its link like any newcomer."""
    link = tx.link(link_id)
    assert link is not None
    record = tx.record(account, incident.external_id)
    if record is None:
        record = records.add(tx, account, incident, now, marker=marker, pushed=True)
    records.set_marker(record, marker)
    if tx.link_of(ctx.group.name, record.id or 0) is None:
        tx.add_member(link, record)
        reconcile_link(tx, ctx, link, joined_changes(record, incident.updated_at or now), now)
    return record


# --------------------------------------------------------------------------- operators


def group_for(cfg: Config, capabilities: Mapping[str, Capability], accounts: Sequence[str],
              name: str | None) -> GroupContext:
    """The one sync group holding every account (``name`` to choose); ValueError otherwise."""
    candidates = [g for g in cfg.sync if (name is None or g.name == name)
                  and all(a in g.accounts for a in accounts)]
    if not candidates:
        raise ValueError(f"no sync group contains all of {', '.join(accounts)}"
                         + (f" named {name!r}" if name else ""))
    if len(candidates) > 1:
        raise ValueError("several sync groups fit; choose one with --group")
    return GroupContext.build(candidates[0], capabilities)


def link_records(tx: Tx, cfg: Config, capabilities: Mapping[str, Capability],
                 refs: Sequence[tuple[str, str]], group: str | None) -> int:
    """``syncd link``: put polled records into one new link (out of their old ones); they merge
    as newcomers do. Returns the new link's id."""
    accounts = [a for a, _ in refs]
    if len(set(accounts)) != len(accounts):
        raise ValueError("a link holds one record per account")
    ctx = group_for(cfg, capabilities, accounts, group)
    found = []
    for account, external_id in refs:
        record = tx.record(account, external_id)
        if record is None:
            raise ValueError(f"{account}:{external_id} is not in the ledger (poll it first)")
        found.append(record)
    now = utcnow()
    for record in found:
        old = tx.link_of(ctx.group.name, record.id or 0)
        if old is not None:
            tx.remove_member(old.id or 0, record.id or 0)
    link = tx.new_link(ctx.group.name, None, "manual")
    changes = []
    for record in found:
        tx.add_member(link, record)
        changes += joined_changes(record, record.vendor_updated_at or now)
    reconcile_link(tx, ctx, link, changes, now)
    tx.audit("link", group_name=ctx.group.name, link_id=link.id,
             detail="manual link: " + ", ".join(f"{a}:{i}" for a, i in refs), at=now)
    return link.id or 0


def unlink_record(tx: Tx, ref: tuple[str, str], group: str | None) -> int:
    """``syncd unlink``: take a record out of its links. It gets a link of its own in each of
    those groups, so the next poll does not correlate it straight back."""
    account, external_id = ref
    record = tx.record(account, external_id)
    if record is None:
        raise ValueError(f"{account}:{external_id} is not in the ledger")
    count = 0
    now = utcnow()
    for member, link in tx.links_of_record(record.id or 0):
        if group and link.group_name != group:
            continue
        tx.remove_member(member.link_id, record.id or 0)
        solo = tx.new_link(link.group_name, None, "manual")
        tx.add_member(solo, record)
        for name, value in ((STATE, record.state), (SEVERITY, record.severity)):
            tx.set_agreed(solo.id or 0, name, value, account, now)
        tx.audit("unlink", group_name=link.group_name, link_id=link.id, account=account,
                 external_id=external_id, detail=f"now alone in link {solo.id}", at=now)
        count += 1
    return count
