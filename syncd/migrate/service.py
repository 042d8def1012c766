"""``syncd migrate``: plan, apply and verify, on the same config file, Terraform-style.

Follow the data: source client ``read_*`` -> :func:`syncd.migrate.plan.build` (pure decisions)
-> the target's preview, diffed against the source's own rendering -> :class:`Plan`.
:func:`apply` performs exactly a fresh plan: for each ``create`` it commits an intent carrying
the object's marker before the vendor call and the target id after it, so a crash never
creates twice; ``update`` rewrites in place (target ids never change); nothing is deleted.
:func:`verify` renders both vendors' final on-call per migrated schedule and escalation level
and lists every interval where they would page different people or nobody.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from syncd.config import Config
from syncd.ledger import Ledger
from syncd.ledger import migrated as store
from syncd.migrate.api import ScheduleSource, ScheduleTarget
from syncd.migrate.convert import Conversion, Refusal, TargetModel
from syncd.migrate.plan import (
    POLICY,
    SCHEDULE,
    Item,
    Known,
    People,
    Plan,
    Verb,
    build,
)
from syncd.migrate.policy import Level, Policy, convert_policy
from syncd.migrate.rendered import RenderedSource
from syncd.migrate.schedule import Difference, Schedule, Span, diff, render
from syncd.model import Capability
from syncd.vendors.base import VendorClient

log = structlog.get_logger(__name__)

DEFAULT_DAYS = 28
MAX_DAYS = 366
PREVIEW_DAYS_LIMIT = 91  # incident.io preview_entries answers at most 91 days (its spec)


class MigrateError(Exception):
    """One line for the operator: what cannot be done and what to do instead."""


@dataclass(frozen=True, slots=True)
class Selection:
    schedules: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()


@dataclass(slots=True)
class Pair:
    """The two accounts of one migration and what the plan needs from both."""

    config: Config
    ledger: Ledger | None
    """Where apply records what it made; None for plan and verify before any ledger exists
    (nothing was made yet: they never create one)."""
    source: str
    target: str
    source_client: VendorClient
    target_client: VendorClient
    people: People | None = None
    _reader: ScheduleSource | None = None

    @property
    def reader(self) -> ScheduleSource:
        """The source's definitions, or only its rendered on-call where its API documents no
        definitions (Splunk On-Call, Spike.sh): those schedules are then materialized."""
        if self._reader is None:
            client = self.source_client
            if isinstance(client, ScheduleSource):
                self._reader = client
            elif type(client).capabilities_for(self.config.accounts[self.source]) \
                    & Capability.ONCALL_READ:
                self._reader = RenderedSource(client)
            else:
                vendor = self.config.accounts[self.source].vendor
                raise MigrateError(f"{self.source} ({vendor}) exposes neither schedule "
                                   "definitions nor on-call to migrate")
        return self._reader

    @property
    def target_overrides(self) -> bool:
        """The target takes overrides: what materializing a schedule needs."""
        settings = self.config.accounts[self.target]
        return bool(type(self.target_client).capabilities_for(settings)
                    & Capability.OVERRIDE_WRITE)

    @property
    def writer(self) -> ScheduleTarget | None:
        client = self.target_client
        return client if isinstance(client, ScheduleTarget) else None

    async def match_people(self) -> People:
        if self.people is None:
            source_dir = await self.reader.user_emails()
            target_dir = await self.target_client.user_emails()
            self.people = People.match(self.config.users, self.source, dict(source_dir),
                                       self.target, dict(target_dir))
        return self.people

    @property
    def memory(self) -> Ledger:
        """The ledger apply records in (the CLI always opens one for it)."""
        if self.ledger is None:
            raise MigrateError("apply needs the ledger to record what it makes")
        return self.ledger

    def known(self) -> dict[tuple[str, str], Known]:
        if self.ledger is None:
            return {}
        rows = self.ledger.call(store.mappings, self.source, self.target)
        return {(m.kind, m.source_id): Known(m.target_id, m.fingerprint or "")
                for m in rows if m.target_id is not None}


# --------------------------------------------------------------------------- plan


def _within_reach(pair: Pair, horizon: timedelta) -> None:
    """A source known only by its rendered on-call is read :data:`READ_AHEAD` ahead; past that
    the plan would call the source's people "nobody" and materialize the shell's placeholder
    person there, and verify would list differences that are not there."""
    reader = pair.reader
    if isinstance(reader, RenderedSource) and horizon > reader.read_ahead - timedelta(days=1):
        days = (reader.read_ahead - timedelta(days=1)).days
        raise MigrateError(f"{pair.source}'s on-call can be read {reader.read_ahead.days} days "
                           f"ahead: use --days {days} or less")


async def plan(pair: Pair, selection: Selection, *, now: datetime, horizon: timedelta) -> Plan:
    _within_reach(pair, horizon)
    reader = pair.reader
    schedules, policies = await _read(reader, selection)
    people = await pair.match_people()
    writer = pair.writer
    if writer is None:
        return _no_api(pair, schedules, policies, now, horizon)
    result = build(source=pair.source, target=pair.target, model=writer.schedule_model,
                   schedules=schedules, policies=policies, people=people, known=pair.known(),
                   now=now, horizon=horizon, overrides=pair.target_overrides,
                   source_vendor=pair.source_client.vendor)
    for item in result.items:
        if item.kind == SCHEDULE and item.verb in (Verb.CREATE, Verb.UPDATE):
            await _verify_before_writing(pair, writer, item, now, horizon)
    return result


async def _read(reader: ScheduleSource, selection: Selection
                ) -> tuple[list[Schedule], list[Policy]]:
    """The selected objects; a selected policy brings the schedules it pages (closure), so a
    policy is never planned without them."""
    teams = list(selection.teams) or None
    everything = not selection.schedules and not selection.policies
    policies: list[Policy] = []
    if everything or selection.policies:
        policies = await reader.read_policies(list(selection.policies) or None, teams)
    wanted = set(selection.schedules) | {s for p in policies for s in p.schedules()}
    schedules: list[Schedule] = []
    if everything:
        schedules = await reader.read_schedules(None, teams)
        seen = {s.id for s in schedules}
        missing = sorted(wanted - seen)
        if missing:  # paged by a selected policy but outside the team filter
            schedules += await reader.read_schedules(missing, None)
    elif wanted:
        schedules = await reader.read_schedules(sorted(wanted), None)
    return schedules, policies


def _no_api(pair: Pair, schedules: Sequence[Schedule], policies: Sequence[Policy],
            now: datetime, horizon: timedelta) -> Plan:
    vendor = pair.config.accounts[pair.target].vendor
    offer = (" It can be materialized instead: map the schedule to an existing "
             f"{vendor} schedule with an [[oncall]] mapping and repair = \"override\", and "
             "the daemon writes the source's on-call there as overrides, kept extended."
             if pair.target_overrides else "")
    items = [
        Item(kind, obj.id, obj.name, Verb.REFUSED, Conversion.REFUSED, refusal=Refusal(
            "no_documented_api",
            f"{vendor} has no documented API to create {kind.replace('_', ' ')}s." + (
                offer if kind == SCHEDULE else "")))
        for kind, objs in ((SCHEDULE, schedules), (POLICY, policies)) for obj in objs
    ]
    return Plan(pair.source, pair.target, now, horizon, items, [])


async def _verify_before_writing(pair: Pair, writer: ScheduleTarget, item: Item,
                                 now: datetime, horizon: timedelta) -> None:
    """Diff the source vendor's own rendering against the target's preview of the converted
    schedule (or syncd's rendering of it where the target cannot preview)."""
    converted = item.converted
    assert isinstance(converted, Schedule)
    people = await pair.match_people()
    until = now + min(horizon, timedelta(days=PREVIEW_DAYS_LIMIT))
    source_spans = _relabel(await pair.reader.rendered(item.source_id, now, until),
                            people.mapping)
    preview = await writer.preview(converted, now, until)
    if preview is not None:
        item.differences = diff(source_spans, preview)
        item.verified_by = "target preview"
    else:
        item.differences = diff(source_spans, render(converted, now, until))
        item.verified_by = "syncd model"


def _relabel(spans: Sequence[Span], mapping: Mapping[str, str]) -> list[Span]:
    """Source user ids -> target user ids; an unmatched person stays visibly different."""
    return [replace(s, users=frozenset(mapping.get(u, f"unmatched:{u}") for u in s.users))
            for s in spans]


# --------------------------------------------------------------------------- apply


@dataclass(slots=True)
class Applied:
    kind: str
    source_id: str
    name: str
    action: str  # created | updated | unchanged | refused | resumed
    target_id: str | None = None
    overrides_created: int = 0
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "source_id": self.source_id, "name": self.name,
                "action": self.action, "target_id": self.target_id,
                "overrides_created": self.overrides_created, "detail": self.detail}


def marker(source: str, kind: str, source_id: str) -> str:
    """Deterministic, so a re-run after a crash looks for exactly what the first run made."""
    digest = hashlib.sha256(f"{source}\0{kind}\0{source_id}".encode()).hexdigest()[:12]
    return f"syncd-migrate-{digest}"


async def apply(pair: Pair, result: Plan, *, now: datetime) -> list[Applied]:
    writer = pair.writer
    if writer is None:
        raise MigrateError(f"{pair.target} has no documented API to write schedules")
    done: list[Applied] = []
    schedule_ids = {k[1]: v.target_id for k, v in pair.known().items() if k[0] == SCHEDULE}
    for item in sorted(result.items, key=lambda i: i.kind != SCHEDULE):
        if item.verb == Verb.REFUSED:
            done.append(Applied(item.kind, item.source_id, item.name, "refused",
                                detail=item.refusal.code if item.refusal else None))
            continue
        if item.verb == Verb.UNCHANGED:
            done.append(Applied(item.kind, item.source_id, item.name, "unchanged",
                                item.target_id))
            continue
        obj = item.converted
        if isinstance(obj, Policy):
            obj = _with_target_schedules(obj, schedule_ids)
        applied = await _write(pair, writer, item, obj, now)
        if item.kind == SCHEDULE:
            schedule_ids[item.source_id] = applied.target_id or ""
        done.append(applied)
    return done


async def _write(pair: Pair, writer: ScheduleTarget, item: Item,
                 obj: Schedule | Policy | None, now: datetime) -> Applied:
    assert obj is not None and item.fingerprint is not None
    mark = marker(pair.source, item.kind, item.source_id)
    is_schedule = isinstance(obj, Schedule)
    overrides = obj.overrides if isinstance(obj, Schedule) else ()
    if item.verb == Verb.UPDATE and item.target_id:
        target_id, action = item.target_id, "updated"
        await (writer.update_schedule(target_id, obj, mark) if isinstance(obj, Schedule)
               else writer.update_policy(target_id, obj, mark))
    else:
        intent = pair.memory.call(store.intend, pair.source, pair.target, item.kind,
                                  item.source_id, mark, now)
        found = await (writer.find_schedule(intent.marker) if is_schedule
                       else writer.find_policy(intent.marker))
        if found is not None:  # created before a crash: finish it, never create twice
            target_id, action = found, "resumed"
            await (writer.update_schedule(found, obj, mark) if isinstance(obj, Schedule)
                   else writer.update_policy(found, obj, mark))
        else:
            target_id = await (writer.create_schedule(obj, intent.marker)
                               if isinstance(obj, Schedule)
                               else writer.create_policy(obj, intent.marker))
            action = "created"
        if overrides:
            # The object is live in the target from here on: record its id now, with no
            # fingerprint yet, so a failure below (overrides refused, a crash) leaves a
            # mapping that verify checks and the next plan updates, not an object only the
            # marker knows. Without overrides nothing can fail in between: the write below
            # records the id and the fingerprint together.
            pair.memory.call(store.written, pair.source, pair.target, item.kind,
                             item.source_id, target_id, "", now)
    created = 0
    if overrides:
        created = await writer.sync_overrides(target_id, overrides)
    pair.memory.call(store.written, pair.source, pair.target, item.kind, item.source_id,
                     target_id, item.fingerprint, now)
    log.info("migrate.applied", kind=item.kind, source_id=item.source_id, action=action,
             target_id=target_id, overrides_created=created)
    return Applied(item.kind, item.source_id, item.name, action, target_id, created)


def _with_target_schedules(policy: Policy, schedule_ids: Mapping[str, str]) -> Policy:
    levels = tuple(
        replace(level, targets=tuple(
            replace(t, id=schedule_ids[t.id]) if t.kind == "schedule" else t
            for t in level.targets))
        for level in policy.levels
    )
    return replace(policy, levels=levels)


# --------------------------------------------------------------------------- verify


@dataclass(slots=True)
class Verified:
    """One migrated schedule, or one level of a migrated policy, checked over the horizon.
    ``oncall_levels``: the escalation level at which each side reports the schedule's on-call
    (PagerDuty reports a schedule at the level of the policy that pages it), for the
    ``[[oncall]]`` mapping of the dual run."""

    kind: str
    source_id: str
    target_id: str
    level: int | None
    differences: list[Difference] = field(default_factory=list)
    oncall_levels: tuple[int, int] = (1, 1)
    # How the level escalates, where the target differs from the source's converted form: a
    # delay, round robin, or the policy's repeat count (on level 1). Who is paged can agree
    # while the target waits longer or stops sooner, which pages people at other times.
    mismatches: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "source_id": self.source_id, "target_id": self.target_id,
                "level": self.level, "differences": [d.as_dict() for d in self.differences],
                "mismatches": list(self.mismatches)}

    @property
    def disagreements(self) -> int:
        return len(self.differences) + len(self.mismatches)


async def verify(pair: Pair, *, now: datetime, days: float) -> list[Verified]:
    """Both vendors' final on-call over ``days``, per migrated schedule and policy level."""
    if not 1 <= days <= MAX_DAYS:
        raise MigrateError(f"--days must be between 1 and {MAX_DAYS}")
    _within_reach(pair, timedelta(days=days))
    writer = pair.writer
    if writer is None:
        raise MigrateError(f"{pair.target} has no documented API to read schedules back")
    people = await pair.match_people()
    until = now + timedelta(days=days)
    known = pair.known()
    out: list[Verified] = []
    src_cache: dict[str, list[Span]] = {}
    tgt_cache: dict[str, list[Span]] = {}

    async def source_spans(sid: str) -> list[Span]:
        if sid not in src_cache:
            src_cache[sid] = _relabel(await pair.reader.rendered(sid, now, until),
                                      people.mapping)
        return src_cache[sid]

    async def target_spans(tid: str) -> list[Span]:
        if tid not in tgt_cache:
            tgt_cache[tid] = list(await writer.rendered(tid, now, until))
        return tgt_cache[tid]

    policies = [(sid, k.target_id) for (kind, sid), k in sorted(known.items()) if kind == POLICY]
    sources: dict[str, Policy] = {}
    targets: dict[str, Policy] = {}
    if policies:
        sources = {p.id: p for p in await pair.reader.read_policies([s for s, _ in policies])}
        targets = {p.id: p for p in await writer.read_policies([t for _, t in policies])}
    for (kind, sid), k in sorted(known.items()):
        if kind == SCHEDULE:
            levels = (_level_of(sid, sources.values(), pair.source_client),
                      _level_of(k.target_id, targets.values(), pair.target_client))
            out.append(Verified(kind, sid, k.target_id, None,
                                diff(await source_spans(sid), await target_spans(k.target_id)),
                                levels))
    if policies:
        for sid, tid in policies:
            src, tgt = sources.get(sid), targets.get(tid)
            if src is None or tgt is None:
                out.append(Verified(POLICY, sid, tid, None, [Difference(
                    now, until, frozenset({"policy missing" if src is None else sid}),
                    frozenset({"policy missing" if tgt is None else tid}))]))
                continue
            expected = _expected(src, writer.schedule_model, pair.source_client.vendor)
            for number in range(1, max(len(src.levels), len(tgt.levels)) + 1):
                left = await _level_spans(src, number, source_spans, people.mapping, now, until)
                right = await _level_spans(tgt, number, target_spans, None, now, until)
                out.append(Verified(POLICY, sid, tid, number, diff(left, right),
                                    mismatches=_escalation_mismatches(expected, tgt, number)))
    return out


def _expected(source: Policy, model: TargetModel, source_vendor: str) -> Policy:
    """The source policy as the target should hold it: a conversion's named losses (a delay
    rounded up to PagerDuty's whole minutes, repeats capped at its 9) are expected, not
    mismatches. A source the conversion now refuses is compared as it is."""
    ids = {t.id: t.id for level in source.levels for t in level.targets}
    converted = convert_policy(source, model, schedules=ids, users=ids,
                               source_vendor=source_vendor).target
    return converted if converted is not None else source


def _escalation_mismatches(source: Policy, target: Policy, number: int) -> list[str]:
    """Where level ``number`` escalates differently: its delay, round robin, and on level 1
    the policy's repeat count (vendor-notes/migration.md §5 R16, R17, R19)."""
    out = []
    if number == 1 and source.repeats != target.repeats:
        out.append(f"repeats: source {source.repeats}, target {target.repeats}")
    if number <= min(len(source.levels), len(target.levels)):
        a, b = source.levels[number - 1], target.levels[number - 1]
        if a.delay != b.delay:
            out.append(f"delay: source {a.delay}, target {b.delay}")
        if (a.round_robin, a.rotate_after) != (b.round_robin, b.rotate_after):
            out.append(f"round robin: source {_robin(a)}, target {_robin(b)}")
    return out


def _robin(level: Level) -> str:
    if not level.round_robin:
        return "off (every target)"
    # 0 s (no minimum in the spec) is a value: only None means "stick with one target".
    return "on" + (f", next target after {level.rotate_after}"
                   if level.rotate_after is not None else "")


def _level_of(schedule_id: str, policies: Iterable[Policy], client: VendorClient) -> int:
    """The level at which the vendor reports this schedule's on-call: PagerDuty's /oncalls
    names the escalation level of the policy that pages it; others report schedules at 1."""
    if client.vendor != "pagerduty":
        return 1
    for policy in policies:
        for number, level in enumerate(policy.levels, start=1):
            if any(t.kind == "schedule" and t.id == schedule_id for t in level.targets):
                return number
    return 1


async def _level_spans(policy: Policy, number: int,
                       spans_of: Callable[[str], Awaitable[list[Span]]],
                       users: Mapping[str, str] | None, since: datetime, until: datetime
                       ) -> list[Span]:
    """Who level ``number`` pages over time: its users plus whoever its schedules have on."""
    if number > len(policy.levels):
        return []
    level: Level = policy.levels[number - 1]
    direct = frozenset((users.get(t.id, f"unmatched:{t.id}") if users is not None else t.id)
                       for t in level.targets if t.kind == "user")
    layers = [await spans_of(t.id) for t in level.targets if t.kind == "schedule"]
    points = sorted({since, until} | {p for spans in layers for s in spans
                                      for p in (s.start, s.end) if since < p < until})
    out: list[Span] = []
    for a, b in itertools.pairwise(points):
        on = set(direct)
        for spans in layers:
            on |= next((s.users for s in spans if s.start <= a < s.end), frozenset())
        users_at = frozenset(on)
        if out and out[-1].users == users_at and out[-1].end == a:
            out[-1] = Span(out[-1].start, b, users_at)
        else:
            out.append(Span(a, b, users_at))
    return out


def dual_run_config(pair: Pair, verified: Sequence[Verified]) -> str:
    """The [[oncall]] mappings and the [[sync]] group that keep both tools in step from now on:
    the source leads until cut-over, and drift is repaired on the target by overrides."""
    lines = [
        "# Written by syncd migrate verify: keep incidents and on-call in step while both",
        f"# tools page ({pair.source} leads until cut-over).",
        "[[sync]]",
        f'name = "migrate-{pair.source}-{pair.target}"',
        f'accounts = ["{pair.source}", "{pair.target}"]',
        'mode = "correlate"',
        "",
    ]
    for v in verified:
        if v.kind != SCHEDULE:
            continue
        lines += [
            "[[oncall]]",
            f'name = "migrate-{_slug(v.source_id)}"',
            f'leader = "{pair.source}"',
            'repair = "override"',
            "members = [",
            f'    {{ account = "{pair.source}", schedule = "{v.source_id}", '
            f"level = {v.oncall_levels[0]} }},",
            f'    {{ account = "{pair.target}", schedule = "{v.target_id}", '
            f"level = {v.oncall_levels[1]} }},",
            "]",
            "",
        ]
    return "\n".join(lines)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def open_pair(config: Config, ledger: Ledger | None, source: str, target: str, *,
              transports: Mapping[str, Any] | None = None, budget_scale: float = 1.0) -> Pair:
    """The two clients of one migration, built the way the engine builds them (``budget_scale``
    as the engine's: only tests set it, beside simulators running their limits that much
    faster)."""
    from syncd import vendors
    from syncd.ratelimit import Budget

    for name in (source, target):
        if name not in config.accounts:
            raise MigrateError(f"no [accounts.{name}] in {config.path}")
    if source == target:
        raise MigrateError("--from and --to name the same account")
    clients = []
    for name in (source, target):
        settings = config.accounts[name]
        factory = vendors.load(settings.vendor)
        budget = Budget(factory.limits_for(settings), settings.budget_fraction,
                        scale=budget_scale)
        clients.append(factory(name, settings, budget=budget,
                               transport=(transports or {}).get(name)))
    return Pair(config, ledger, source, target, clients[0], clients[1])
