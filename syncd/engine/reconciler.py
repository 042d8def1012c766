"""The sync decision table: given a link's agreed values, its members' last known values and the
changes just observed, decide the new agreed values and the outbox actions. Pure: no I/O, no SQL,
no vendor JSON (vdirsyncer's ``_get_actions`` is the model).

Rules (DESIGN.md, "Sync semantics"):

- A change is a member's observed value differing from its last known value. Echoes of our own
  pushes are not changes, because a confirmed push already updated the last known value.
- State moves forward: a change that moves past the agreed state wins. A change that moves
  *behind* it (ack timeout, un-acknowledge, reopen) is a regression, handled by the group's
  ``regressions`` policy: ``ignore`` keeps the agreed state and pushes nothing back to the vendor
  that regressed; ``follow`` adopts it and pushes it where the targets can take it.
- Severity: a change wins, unless the member changed while we still owed it a push for that field
  (both sides changed since the last agreement). That is a conflict, decided by the policy
  (``latest`` by vendor time, ``highest`` = most severe, ``prefer:ACCOUNT``) and reported.
- A member joining a link (a newly correlated incident) merges in: state forward, severity by
  policy; it receives whatever it lacks.
- Actions are only planned when the agreed value changes (for every member that differs) or when
  a member joins (for that member), so a member whose own changes are ignored (one-way fields,
  ignored regressions) is never pushed back, and the cost is O(changed records).
- A member that already has the target value loses any pending push for that field.
- A mirror link just opened names the accounts it has no record in (``missing``): each gets a
  ``CREATE`` (or a gap note when its vendor cannot create incidents), caused by the change that
  opened the link.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from syncd.model import (
    FIELDS,
    SEVERITY,
    STATE,
    Action,
    Capability,
    Severity,
    State,
    state_action,
)

__all__ = [
    "FIELDS", "SEVERITY", "STATE", "AgreedValue", "Change", "Decision", "Member", "Missing",
    "Note", "Planned", "Policy", "reconcile", "state_action",
]


@dataclass(frozen=True, slots=True)
class Member:
    account: str
    record_id: int
    state: State
    severity: Severity | None
    capabilities: Capability
    pending: frozenset[str] = frozenset()  # fields with a pending outbox action


@dataclass(frozen=True, slots=True)
class Missing:
    """An account a mirror link has no record in yet and asks for a copy in."""

    account: str
    capabilities: Capability


@dataclass(frozen=True, slots=True)
class Change:
    """``old`` None with ``joined`` True means the member just joined the link."""

    account: str
    record_id: int
    field: str
    old: str | None
    new: str | None
    at: datetime
    joined: bool = False


@dataclass(frozen=True, slots=True)
class AgreedValue:
    value: str | None
    source: str | None
    changed_at: datetime


@dataclass(frozen=True, slots=True)
class Policy:
    state_sources: frozenset[str] | None = None  # None = every account
    severity_sources: frozenset[str] | None = None
    severity_policy: str = "latest"
    regressions: str = "ignore"

    def sources(self, name: str) -> frozenset[str] | None:
        return self.state_sources if name == STATE else self.severity_sources


@dataclass(frozen=True, slots=True)
class Planned:
    """One outbox action. ``record_id`` None: a create in ``account``; ``at``: when its cause
    happened, when that is not the agreed value's own time."""

    account: str
    record_id: int | None
    action: Action
    value: str | None
    cause: str | None
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Note:
    """Something the audit log must say: conflict, regression, ignored, gap."""

    kind: str
    account: str
    field: str
    old: str | None
    new: str | None
    detail: str = ""


@dataclass(slots=True)
class Decision:
    agreed: dict[str, AgreedValue] = field(default_factory=dict)  # only fields that changed
    actions: list[Planned] = field(default_factory=list)
    cancel: list[tuple[int, str]] = field(default_factory=list)  # (record_id, field)
    notes: list[Note] = field(default_factory=list)


def _state(value: str | None) -> State | None:
    return None if value is None else State(value)


def _sev(value: str | None) -> Severity | None:
    return None if value is None else Severity(value)


def reconcile(
    agreed: Mapping[str, AgreedValue],
    members: Sequence[Member],
    changes: Sequence[Change],
    policy: Policy,
    now: datetime,
    *,
    missing: Sequence[Missing] = (),
) -> Decision:
    decision = Decision()
    by_record = {m.record_id: m for m in members}
    for name in FIELDS:
        current = agreed.get(name)
        start = current.value if current else None
        joiners: set[int] = set()
        for change in (c for c in changes if c.field == name):
            if change.joined:
                joiners.add(change.record_id)
            current = _apply(name, current, change, by_record.get(change.record_id), policy,
                             decision)
        new_value = current.value if current else None
        changed = current is not None and (new_value != start or agreed.get(name) is None)
        if changed and current is not None:
            decision.agreed[name] = current
        if current is None:
            continue
        targets = members if changed else [m for m in members if m.record_id in joiners]
        for member in targets:
            _plan(name, member, current, decision)
        if changed:
            for member in members:
                if _value(member, name) == new_value and name in member.pending:
                    decision.cancel.append((member.record_id, name))
    if missing and changes:
        _plan_creates(missing, changes[0], decision)
    return decision


def _plan_creates(missing: Sequence[Missing], cause: Change, decision: Decision) -> None:
    for target in missing:
        if not target.capabilities & Action.CREATE.capability:
            decision.notes.append(Note("gap", target.account, "create", None, None,
                                       "vendor cannot create incidents"))
            continue
        decision.actions.append(Planned(target.account, None, Action.CREATE, None,
                                        cause.account, cause.at))


def _apply(
    name: str,
    current: AgreedValue | None,
    change: Change,
    member: Member | None,
    policy: Policy,
    decision: Decision,
) -> AgreedValue | None:
    """Fold one change into the agreed value of field ``name``."""
    sources = policy.sources(name)
    allowed = sources is None or change.account in sources
    if not allowed:
        if not change.joined:
            decision.notes.append(Note("ignored", change.account, name, change.old, change.new,
                                       "changes from this account do not sync for this field"))
        return current
    if change.new is None:
        return current  # a vendor without this field (e.g. no severity) never clears it
    proposed = AgreedValue(change.new, change.account, change.at)
    if current is None or current.value is None:
        return proposed
    if current.value == change.new:
        return current
    if name == STATE:
        new, agreed = State(change.new), State(current.value)
        if new > agreed:
            if member is not None and STATE in member.pending and not change.joined:
                decision.notes.append(Note("conflict", change.account, name, current.value,
                                           change.new, "both sides moved; forward state wins"))
            return proposed
        if change.joined:
            return current  # the newcomer is behind: it will be brought forward
        if policy.regressions == "follow":
            decision.notes.append(Note("regression", change.account, name, current.value,
                                       change.new, "followed (regressions = follow)"))
            return proposed
        decision.notes.append(Note("regression", change.account, name, current.value,
                                   change.new, "ignored (regressions = ignore)"))
        return current
    # severity
    new_sev, agreed_sev = Severity(change.new), Severity(current.value)
    conflict = change.joined or (member is not None and SEVERITY in member.pending)
    if not conflict:
        return proposed
    rule = policy.severity_policy
    if rule == "highest":
        winner = proposed if new_sev < agreed_sev else current
    elif rule.startswith("prefer:"):
        winner = proposed if change.account == rule[7:] else current
    elif change.joined:
        winner = current  # latest: the link's value is what people have been looking at
    else:
        winner = proposed if change.at >= current.changed_at else current
    if not change.joined:
        decision.notes.append(Note("conflict", change.account, name, current.value, change.new,
                                   f"{rule} chose {winner.value}"))
    return winner


def _value(member: Member, name: str) -> str | None:
    if name == STATE:
        return member.state.value
    return member.severity.value if member.severity else None


def _plan(name: str, member: Member, target: AgreedValue, decision: Decision) -> None:
    have = _value(member, name)
    if have == target.value or target.value is None:
        return
    if name == SEVERITY:
        action: Action | None = Action.SET_SEVERITY
    else:
        action = state_action(member.state, State(target.value))
    if action is None:
        return
    if not member.capabilities & action.capability:
        decision.notes.append(Note("gap", member.account, name, have, target.value,
                                   f"vendor cannot {action.value}"))
        return
    decision.actions.append(Planned(member.account, member.record_id, action, target.value,
                                    target.source))
