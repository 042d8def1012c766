"""The migration plan: every selected object, what apply would do to it, and why.

Pure: the caller reads both vendors and the ledger, this decides. Each object is ``create``,
``update`` (already migrated, known from the ledger, and the source changed), ``unchanged`` or
``refused`` with a reason code and a sentence; a dependent object names the root cause once
(a policy over a refused schedule says "depends on schedule X", it does not repeat X's reason).
People are matched by email (case and surrounding spaces ignored, ``[users.ACCOUNT]`` first) and
a person missing in the target is listed, never created and never guessed.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from syncd.engine.oncall import Users, identify
from syncd.migrate.convert import (
    MATERIALIZABLE,
    Conversion,
    Refusal,
    ScheduleConversion,
    TargetModel,
    check,
    convert,
    materialize,
)
from syncd.migrate.policy import Policy, PolicyConversion, convert_policy
from syncd.migrate.schedule import Difference, Schedule

SCHEDULE, POLICY = "schedule", "escalation_policy"


class Verb(enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Known:
    """What the ledger remembers of an object migrated before."""

    target_id: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Unmatched:
    user_id: str
    email: str | None
    referenced_by: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "email": self.email,
                "referenced_by": list(self.referenced_by)}


@dataclass(slots=True)
class Item:
    kind: str
    source_id: str
    name: str
    verb: Verb
    conversion: Conversion
    refusal: Refusal | None = None
    losses: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    target_id: str | None = None
    fingerprint: str | None = None
    depends_on: tuple[str, ...] = ()
    differences: list[Difference] = field(default_factory=list)
    verified_by: str | None = None
    steps: tuple[dict[str, Any], ...] = ()
    converted: Schedule | Policy | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "source_id": self.source_id, "name": self.name,
            "action": self.verb.value, "conversion": self.conversion.value,
            "reason": ({"code": self.refusal.code, "sentence": self.refusal.sentence}
                       if self.refusal else None),
            "losses": list(self.losses), "notes": list(self.notes),
            "target_id": self.target_id, "depends_on": list(self.depends_on),
            "differences": [d.as_dict() for d in self.differences],
            "verified_by": self.verified_by, "steps": list(self.steps),
        }


@dataclass(slots=True)
class Plan:
    source: str
    target: str
    generated_at: datetime
    horizon: timedelta
    items: list[Item]
    unmatched: list[Unmatched]

    def item(self, kind: str, source_id: str) -> Item | None:
        return next((i for i in self.items if i.kind == kind and i.source_id == source_id),
                    None)

    def summary(self) -> dict[str, int]:
        counts = {v.value: 0 for v in Verb}
        for i in self.items:
            counts[i.verb.value] += 1
        return counts

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.source, "to": self.target,
            "generated_at": self.generated_at.isoformat(),
            "horizon_days": self.horizon / timedelta(days=1),
            "summary": self.summary(),
            "items": [i.as_dict() for i in self.items],
            "unmatched_people": [u.as_dict() for u in self.unmatched],
        }


@dataclass(frozen=True, slots=True)
class People:
    """Source user id -> target user id, through the person's identity (email)."""

    mapping: Mapping[str, str]
    missing: Mapping[str, str | None]  # source user id -> its email (None when it has none)

    @classmethod
    def match(cls, users: Users, source: str, source_dir: Mapping[str, str | None],
              target: str, target_dir: Mapping[str, str | None]) -> People:
        by_identity: dict[str, str] = {}
        for tid, email in target_dir.items():
            ident = identify(users, target, tid, email)
            if ident:
                by_identity.setdefault(ident, tid)
        mapping: dict[str, str] = {}
        missing: dict[str, str | None] = {}
        for sid, email in source_dir.items():
            ident = identify(users, source, sid, email)
            if ident and ident in by_identity:
                mapping[sid] = by_identity[ident]
            else:
                missing[sid] = email
        return cls(mapping, missing)


# Fields added to the model after objects were migrated, with their defaults: left out of the
# digest while they hold the default, so an upgrade alone plans no update (a rewrite of every
# migrated object in the target) for objects that do not use them.
LATER_FIELDS: Mapping[str, object] = {"unconvertible": None, "round_robin": False,
                                      "rotate_after": None, "fair": False}


def fingerprint(obj: Schedule | Policy) -> str:
    """A stable digest of a converted definition: equal digests = nothing to update."""
    raw = json.dumps(_without_later_defaults(dataclasses.asdict(obj)), sort_keys=True,
                     default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _without_later_defaults(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_later_defaults(v) for k, v in value.items()
                if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
    if isinstance(value, list | tuple):
        return [_without_later_defaults(v) for v in value]
    return value


def build(*, source: str, target: str, model: TargetModel, schedules: Sequence[Schedule],
          policies: Sequence[Policy], people: People, known: Mapping[tuple[str, str], Known],
          now: datetime, horizon: timedelta, overrides: bool = False,
          source_vendor: str | None = None) -> Plan:
    """Decide every object. ``schedules``/``policies`` carry source user ids; the converted
    definitions carry target user ids, so apply writes them as they are. ``overrides``: the
    target can write overrides, so a schedule refused for its shape is materialized instead."""
    items: list[Item] = []
    referenced: dict[str, list[str]] = {}
    for sched in schedules:
        items.append(_schedule_item(sched, model, people, known, now, horizon, referenced,
                                    overrides))
    by_schedule = {i.source_id: i for i in items}
    for pol in policies:
        items.append(_policy_item(pol, model, people, known, by_schedule, referenced,
                                  source_vendor))
    unmatched = [Unmatched(uid, people.missing.get(uid), tuple(sorted(set(refs))))
                 for uid, refs in sorted(referenced.items())]
    return Plan(source, target, now, horizon, items, unmatched)


def _schedule_item(sched: Schedule, model: TargetModel, people: People,
                   known: Mapping[tuple[str, str], Known], now: datetime, horizon: timedelta,
                   referenced: dict[str, list[str]], overrides: bool) -> Item:
    missing = sorted(u for u in sched.people() if u not in people.mapping)
    for uid in missing:
        referenced.setdefault(uid, []).append(f"{SCHEDULE}:{sched.id}")
    if missing:
        return _refused(SCHEDULE, sched, Refusal(
            "unmatched_people",
            f"{len(missing)} on-call people have no user in the target: "
            f"{_names(missing, people)}; create them there or map them in [users.ACCOUNT]"))
    translated = _translate(sched, people.mapping)
    conv = convert(translated, model, now=now)
    if overrides and conv.refusal is not None and conv.refusal.code in MATERIALIZABLE:
        conv = materialize(translated, model, conv.refusal, now=now, horizon=horizon)
    return _decide(SCHEDULE, sched, conv, known, now, horizon)


def _policy_item(pol: Policy, model: TargetModel, people: People,
                 known: Mapping[tuple[str, str], Known], schedules: Mapping[str, Item],
                 referenced: dict[str, list[str]], source_vendor: str | None) -> Item:
    blockers: list[str] = []
    for sid in sorted(pol.schedules()):
        item = schedules.get(sid)
        if item is not None and item.verb == Verb.REFUSED:
            blockers.append(f"schedule {item.name!r} ({sid}) is refused")
        elif item is None and (SCHEDULE, sid) not in known:
            blockers.append(f"schedule {sid} is neither selected nor migrated before")
    missing = sorted(u for u in pol.users() if u not in people.mapping)
    for uid in missing:
        referenced.setdefault(uid, []).append(f"{POLICY}:{pol.id}")
    depends = tuple(f"{SCHEDULE}:{sid}" for sid in sorted(pol.schedules()))
    if blockers:
        return _refused(POLICY, pol, Refusal(
            "depends_on_refused", "depends on " + "; ".join(blockers)), depends)
    if missing:
        return _refused(POLICY, pol, Refusal(
            "unmatched_people", f"targets people with no user in the target: "
                                f"{_names(missing, people)}"), depends)
    # Schedules keep their source ids here; apply swaps in the target ids it created.
    conv = convert_policy(pol, model, schedules={s: s for s in pol.schedules()},
                          users=people.mapping, source_vendor=source_vendor)
    item = _decide(POLICY, pol, conv, known)
    item.depends_on = depends
    return item


def _decide(kind: str, source: Schedule | Policy, conv: ScheduleConversion | PolicyConversion,
            known: Mapping[tuple[str, str], Known], now: datetime | None = None,
            horizon: timedelta | None = None) -> Item:
    if conv.klass == Conversion.REFUSED or conv.target is None:
        assert conv.refusal is not None
        return _refused(kind, source, conv.refusal)
    # A materialized schedule's overrides move with the horizon: its definition is the shell.
    digest = fingerprint(replace(conv.target, overrides=())
                         if conv.klass == Conversion.MATERIALIZED else conv.target)
    before = known.get((kind, source.id))
    verb = (Verb.CREATE if before is None
            else Verb.UNCHANGED if before.fingerprint == digest else Verb.UPDATE)
    item = Item(kind, source.id, source.name, verb, conv.klass, losses=conv.losses,
                target_id=before.target_id if before else None, fingerprint=digest,
                converted=conv.target)
    item.notes = conv.notes
    if isinstance(conv, ScheduleConversion):
        assert now is not None and horizon is not None
        item.differences = check(conv, now, now + horizon)
        item.verified_by = "syncd model"
    else:
        item.steps = tuple({"level": s.level, "conversion": s.klass.value, "loss": s.loss}
                           for s in conv.steps)
    return item


def _refused(kind: str, source: Schedule | Policy, refusal: Refusal,
             depends: tuple[str, ...] = ()) -> Item:
    return Item(kind, source.id, source.name, Verb.REFUSED, Conversion.REFUSED,
                refusal=refusal, depends_on=depends)


def _names(ids: Iterable[str], people: People) -> str:
    return ", ".join(people.missing.get(i) or i for i in ids)


def _translate(sched: Schedule, mapping: Mapping[str, str]) -> Schedule:
    """The schedule with target user ids in place of source ones."""
    rotations = tuple(
        replace(r, users=tuple(None if u is None else mapping[u] for u in r.users))
        for r in sched.rotations
    )
    overrides = tuple(replace(o, user=mapping[o.user]) for o in sched.overrides)
    rendered = tuple(replace(s, users=frozenset(mapping[u] for u in s.users))
                     for s in sched.rendered)
    return replace(sched, rotations=rotations, overrides=overrides, rendered=rendered)

