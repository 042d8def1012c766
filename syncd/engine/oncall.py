"""On-call state: snapshots, cross-vendor schedule mapping, drift and repair.

Follow the data: ``client.oncall(now, now + horizon)`` -> on-call snapshots in the ledger
(:func:`poll`) -> per ``[[oncall]]`` mapping, the members' entries over the horizon ->
:func:`compute_drift` (pure: the intervals in which the mapped schedules would page different
people, or nobody) -> :func:`plan_repairs` (pure: one override per drift window and follower,
unless one already owed or pushed covers it) -> :func:`execute` (an outbox row per override,
committed before the dispatcher calls ``create_override`` on the follower, so it is never
pushed twice). :class:`OnCallService` runs this for the daemon's on-call jobs and for
``syncd oncall`` alike.

People are matched across vendors by email, with ``[users.ACCOUNT]`` entries ("vendor user id or
email" = "email") taking precedence. A person one vendor has on call who never appears in another
member's vendor is reported as unmatched and never guessed: the vendors share no user list, so the
directory of an account is everyone its on-call data (or the config) ever named.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from syncd import metrics
from syncd.config import Config, OnCallMapping, OnCallMember, user_key
from syncd.engine.dispatcher import STOPPING, Dispatcher
from syncd.ledger import Ledger, Tx, utcnow
from syncd.ledger import oncall as store
from syncd.model import Capability, OnCall
from syncd.vendors.base import AuthError, VendorClient, VendorError
from syncd.vendors.guard import vendor_answer

log = structlog.get_logger(__name__)

DEFAULT_HORIZON_DAYS = 7.0
REPAIRS_PER_RUN = 4  # per follower account and run: Splunk On-Call allows few override calls
STUCK_AFTER = timedelta(minutes=15)
"""An override still pending this long was sent by a process that stopped mid-call."""
NOBODY, DIFFERENT = "nobody", "different"

Users = Mapping[str, Mapping[str, str]]  # Config.users: account -> user id or email -> email
Directory = Mapping[str, str | None]  # identity (email) -> the vendor's own email for that user


# --------------------------------------------------------------------------- values


def label(member: OnCallMember) -> str:
    """How a member is named in output: ``account:schedule:level``."""
    return f"{member.account}:{member.schedule}:{member.level}"


def identify(users: Users, account: str, user_id: str, email: str | None) -> str | None:
    """The person behind a vendor user: an explicit ``[users.ACCOUNT]`` entry first (by user
    id, then by vendor email, in any case: the config stores email keys lower-cased, see
    :func:`~syncd.config.user_key`), else the vendor's email. None = cannot be matched."""
    explicit = users.get(account, {})
    found = explicit.get(user_key(user_id)) or (
        explicit.get(user_key(email)) if email else None) or email
    return found.strip().lower() if found else None


def directory(users: Users, account: str, seen: Iterable[tuple[str, str | None]]) -> dict[
        str, str | None]:
    """identity -> the email the account's vendor knows that person by (what
    ``create_override`` needs), from everyone the account had on call plus the config."""
    found: dict[str, str | None] = {}
    emails: dict[str, str | None] = {}
    for user_id, email in seen:
        emails[user_id] = email
        ident = identify(users, account, user_id, email)
        if ident:
            found.setdefault(ident, email or (user_id if "@" in user_id else None))
    spelled = {e.strip().lower(): e for e in emails.values() if e}
    for vendor_user, ident in users.get(account, {}).items():
        vendor_email = (spelled.get(vendor_user, vendor_user)
                        if "@" in vendor_user else emails.get(vendor_user))
        found[ident.strip().lower()] = vendor_email or found.get(ident.strip().lower())
    return found


@dataclass(frozen=True, slots=True)
class Window:
    """An interval in which the mapped schedules disagree; ``who`` is per member label."""

    start: datetime
    end: datetime
    reason: str  # nobody | different
    who: Mapping[str, tuple[str, ...]]

    def as_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "reason": self.reason,
                "who": {k: list(v) for k, v in self.who.items()}}


@dataclass(frozen=True, slots=True)
class Unmatched:
    """A person on call in ``account`` who cannot be found in ``missing_in``."""

    account: str
    user_id: str
    email: str | None
    missing_in: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"account": self.account, "user_id": self.user_id, "email": self.email,
                "missing_in": list(self.missing_in)}


@dataclass
class MappingDrift:
    """One mapping compared over [start, end): who each member pages at ``start``, the drift
    windows, unmatched people, and members with no data (never polled)."""

    mapping: str
    start: datetime
    end: datetime
    now: dict[str, tuple[str, ...]]
    windows: list[Window] = field(default_factory=list)
    unmatched: list[Unmatched] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def drift_now(self) -> bool:
        return any(w.start <= self.start < w.end or w.start == w.end == self.start
                   for w in self.windows)

    @property
    def agree(self) -> bool | None:
        """None when a member has no data, so "no drift" is never claimed blindly."""
        return None if self.missing else not self.windows

    def as_dict(self) -> dict[str, Any]:
        return {"mapping": self.mapping, "from": self.start, "until": self.end,
                "agree": self.agree, "drift_now": self.drift_now,
                "now": {k: list(v) for k, v in self.now.items()},
                "drift": [w.as_dict() for w in self.windows],
                "unmatched": [u.as_dict() for u in self.unmatched], "missing": self.missing}


# --------------------------------------------------------------------------- drift (pure)


def _covers(entry: OnCall, at: datetime) -> bool:
    return (entry.start is None or entry.start <= at) and (entry.end is None or entry.end > at)


def _who(entries: Sequence[OnCall], users: Users, account: str, at: datetime
         ) -> tuple[str, ...]:
    found = {identify(users, account, e.user_id, e.user_email) or f"?{account}:{e.user_id}"
             for e in entries if _covers(e, at)}
    return tuple(sorted(found))


def compute_drift(mapping: OnCallMapping, entries: Mapping[str, Sequence[OnCall]],
                  users: Users, start: datetime, end: datetime, *,
                  directories: Mapping[str, Directory] | None = None) -> MappingDrift:
    """Compare a mapping's members over [start, end).

    ``entries`` is keyed by member :func:`label`; a member absent from it is reported as
    missing and takes no part. A window is drift when a member pages nobody, or when the members
    page different sets of people; adjacent intervals with the same people are merged, so a
    one-sided override yields exactly its own window. ``directories`` (account -> identities the
    vendor knows) defaults to the people in ``entries``.
    """
    members = [m for m in mapping.members if label(m) in entries]
    result = MappingDrift(mapping.name, start, end, now={},
                          missing=[label(m) for m in mapping.members if label(m) not in entries])
    if directories is None:
        seen: dict[str, list[tuple[str, str | None]]] = {}
        for m in members:
            seen.setdefault(m.account, []).extend(
                (e.user_id, e.user_email) for e in entries[label(m)])
        directories = {a: directory(users, a, s) for a, s in seen.items()}
    cuts = {start, end}
    for m in members:
        for e in entries[label(m)]:
            for edge in (e.start, e.end):
                if edge is not None and start < edge < end:
                    cuts.add(edge)
    windows: list[Window] = []
    for a, b in itertools.pairwise(sorted(cuts)):
        who = {label(m): _who(entries[label(m)], users, m.account, a) for m in members}
        if a == start:
            result.now = dict(who)
        people = set(who.values())
        if len(members) < 2 or (len(people) == 1 and () not in people):
            continue
        reason = NOBODY if () in people else DIFFERENT
        if windows and windows[-1].end == a and windows[-1].who == who:
            windows[-1] = Window(windows[-1].start, b, windows[-1].reason, who)
        else:
            windows.append(Window(a, b, reason, who))
    result.windows = windows
    result.unmatched = _unmatched(members, entries, users, directories, start, end)
    return result


def _unmatched(members: Sequence[OnCallMember], entries: Mapping[str, Sequence[OnCall]],
               users: Users, directories: Mapping[str, Directory], start: datetime,
               end: datetime) -> list[Unmatched]:
    accounts = list(dict.fromkeys(m.account for m in members))
    found: dict[tuple[str, str], Unmatched] = {}
    for m in members:
        for e in entries[label(m)]:
            if (e.end is not None and e.end <= start) or (e.start is not None and e.start >= end):
                continue
            ident = identify(users, m.account, e.user_id, e.user_email)
            missing = tuple(a for a in accounts if a != m.account
                            and (ident is None or ident not in directories.get(a, {})))
            if missing:
                found.setdefault((m.account, e.user_id),
                                 Unmatched(m.account, e.user_id, e.user_email, missing))
    return list(found.values())


def state_at(mapping: OnCallMapping, who: Mapping[str, tuple[str, ...]], at: datetime
             ) -> MappingDrift:
    """A mapping at one instant (``--at`` in the past, from snapshot history)."""
    known = [m for m in mapping.members if label(m) in who]
    result = MappingDrift(mapping.name, at, at, now=dict(who),
                          missing=[label(m) for m in mapping.members if label(m) not in who])
    people = {who[label(m)] for m in known}
    if len(known) >= 2 and (len(people) > 1 or () in people):
        result.windows = [Window(at, at, NOBODY if () in people else DIFFERENT, dict(who))]
    return result


# --------------------------------------------------------------------------- repair (pure)


@dataclass(frozen=True, slots=True)
class Repair:
    """One override for one follower and drift window; ``status`` says what happens to it:
    planned, done, no-op (the vendor created nothing), skipped (with ``reason``), already
    (pushed before), refused, unknown, deferred (retried on a later run), dry-run."""

    mapping: str
    account: str
    schedule_id: str
    level: int
    person: str  # the leader's person (identity)
    user_email: str | None  # that person as the follower's vendor knows them
    start: datetime
    end: datetime
    replaces: tuple[str, ...]
    status: str = "planned"
    reason: str = ""
    vendor_id: str | None = None

    def but(self, **changes: Any) -> Repair:
        values = {k: getattr(self, k) for k in self.__slots__}
        values.update(changes)
        return Repair(**values)

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k in self.__slots__ for v in [getattr(self, k)]}


def plan_repairs(mapping: OnCallMapping, drift: MappingDrift,
                 directories: Mapping[str, Directory], pushed: Sequence[store.PushedOverride],
                 capabilities: Mapping[str, Capability] | None = None) -> list[Repair]:
    """For each drift window, an override on every follower that pages someone else than the
    leader. Windows a pushed override already covers are ``already`` (never pushed twice, even
    when the drift persists: a person must look); the rest are ``planned`` or ``skipped``."""
    if mapping.repair != "override" or mapping.leader is None or drift.missing:
        return []
    leader = next(m for m in mapping.members if m.account == mapping.leader)
    out: list[Repair] = []
    for window in drift.windows:
        want = window.who.get(label(leader), ())
        until = _repair_until(mapping, drift, window)
        for m in mapping.members:
            if m is leader or m.account == leader.account or window.who.get(label(m)) == want:
                continue
            person = want[0] if len(want) == 1 else ""
            email = directories.get(m.account, {}).get(person) if person else None
            base = Repair(mapping.name, m.account, m.schedule, m.level, person, email,
                          window.start, min(window.end, max(until, window.start)),
                          window.who.get(label(m), ()))
            caps = (capabilities or {}).get(m.account)
            if not want:
                out.append(base.but(status="skipped", reason="the leader pages nobody"))
            elif len(want) > 1:
                out.append(base.but(status="skipped", reason="the leader pages several people"))
            elif person.startswith("?"):
                out.append(base.but(status="skipped", reason="the leader's person has no email"))
            elif caps is not None and not caps & Capability.OVERRIDE_WRITE:
                out.append(base.but(status="skipped", reason=f"{m.account} cannot write "
                                    "overrides"))
            elif m.level != 1:
                out.append(base.but(status="skipped", reason="overrides cover level 1 only"))
            elif email is None:
                out.append(base.but(status="skipped",
                                    reason=f"unmatched: {person} has no user in {m.account}"))
            elif until <= window.start:
                out.append(base.but(status="skipped", end=window.end, reason="the drift runs "
                                    f"past the horizon: repaired up to {until + _chunk(mapping)}"
                                    " once the horizon passes it"))
            elif _covered(pushed, base):
                out.append(base.but(status="already", reason="an override pushed before "
                                    "covers this window"))
            else:
                out.append(base)
    return out


GRID_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _chunk(mapping: OnCallMapping) -> timedelta:
    return min(timedelta(days=1), timedelta(days=mapping.horizon_days) / 2)


def _repair_until(mapping: OnCallMapping, drift: MappingDrift, window: Window) -> datetime:
    """Where a window's override ends. A window the comparison's end cuts most likely runs on
    past the horizon, and that end moves with every poll: an override up to it would be
    followed by one more, poll-interval long, on every poll (288 a day per follower). So a
    cut window is repaired up to the last boundary of a fixed grid (whole UTC days, or half
    the horizon when shorter) and the rest waits until the horizon passes the next one. An end
    more than a chunk short of the horizon is a member's stale poll, which does not move:
    that window is repaired up to it."""
    chunk = _chunk(mapping)
    horizon_end = drift.start + timedelta(days=mapping.horizon_days)
    if window.end < drift.end or drift.end <= horizon_end - chunk or chunk <= timedelta(0):
        return window.end
    return GRID_EPOCH + ((window.end - GRID_EPOCH) // chunk) * chunk


MAY_EXIST = ("pending", "done", "unknown")
"""Push outcomes after which the override may be in the vendor's schedule."""


def _covered(pushed: Sequence[store.PushedOverride], r: Repair) -> bool:
    """Whether an override owed or pushed before (``pushed`` is in push order) covers ``r``.

    One that a later push of syncd's own for someone else overlaps no longer does: PagerDuty
    ("the last created override will have priority", notes 5.9), Spike.sh ("if overrides
    overlap, the most recent wins", notes B6) and incident.io (a new override deletes what it
    covers on its layer, notes 5) page that later person, so when the leader's schedule flips
    back (A, then B, then A again) the follower must get A again, not be left on syncd's B.
    Only the same mapping's later pushes count: two mappings that disagree about one follower
    schedule must not take turns overriding it on every run.
    """
    for i, p in enumerate(pushed):
        if _covering(p, r) and not any(
                q.outcome in MAY_EXIST and _same_schedule(q, r) and q.mapping == r.mapping
                and q.user_email.lower() != p.user_email.lower()
                and q.start < r.end and q.end > r.start for q in pushed[i + 1:]):
            return True
    return False


def _same_schedule(p: store.PushedOverride, r: Repair) -> bool:
    return p.account == r.account and p.schedule_id == r.schedule_id and p.level == r.level


def _covering(p: store.PushedOverride, r: Repair) -> bool:
    return (p.outcome != "deferred" and _same_schedule(p, r)
            and p.user_email.lower() == (r.user_email or "").lower()
            and p.start <= r.start and p.end >= r.end)


# --------------------------------------------------------------------------- I/O


@dataclass
class OnCallPoll:
    account: str
    ok: bool
    entries: int = 0
    new: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def horizon(config: Config, account: str) -> timedelta:
    """How far ahead an account is read: the longest horizon of the mappings it is in."""
    days = [m.horizon_days for m in config.oncall if any(x.account == account
                                                         for x in m.members)]
    return timedelta(days=max(days) if days else DEFAULT_HORIZON_DAYS)


def _entry_row(e: OnCall) -> dict[str, Any]:
    return {"schedule_id": e.schedule_id, "level": e.level, "user_id": e.user_id,
            "user_email": e.user_email, "start": e.start, "end": e.end,
            "schedule_name": e.schedule_name}


def _snapshot(row: Any) -> OnCall:
    return OnCall(row.schedule_id, row.level, row.user_id, row.user_email, row.start, row.end,
                  row.schedule_name)


def _directories(tx: Tx, config: Config, accounts: Iterable[str], now: datetime,
                 extra: Mapping[str, Sequence[tuple[str, str | None]]] | None = None
                 ) -> dict[str, Directory]:
    """Who each account's vendor knows: its user list when the client gave one (``extra``),
    plus everyone its on-call data named in the last 90 days, plus the config."""
    out: dict[str, Directory] = {}
    for account in accounts:
        seen = store.people(tx, account, since=now - timedelta(days=90))
        seen += list((extra or {}).get(account, ()))
        out[account] = directory(config.users, account, seen)
    return out


async def _user_list(client: VendorClient) -> list[tuple[str, str | None]] | None:
    """The vendor's user directory (user id -> email). Without it, "unmatched" could only mean
    "never seen on call there", which can name someone who simply was not on call in the
    horizon; a client that cannot list users returns an empty directory."""
    try:
        with vendor_answer(client.account, "user_emails"):
            found = await client.user_emails()
    except (VendorError, AttributeError):
        return None
    return [(str(k), v if isinstance(v, str) else None) for k, v in found.items()] or None


def evaluate(tx: Tx, config: Config, at: datetime | None = None,
             mappings: Sequence[str] | None = None,
             known: Mapping[str, Sequence[tuple[str, str | None]]] | None = None
             ) -> list[MappingDrift]:
    """Drift per mapping from the latest stored polls, over [at, at + horizon) limited to what
    every member's poll covered (a tail one poll did not reach is not "nobody"). A member whose
    latest poll does not reach ``at`` at all (its account failing for longer than the horizon)
    is missing, so the mapping is not said to agree over an empty interval."""
    at = at or utcnow()
    out = []
    for mapping in config.oncall:
        if mappings is not None and mapping.name not in mappings:
            continue
        polled = {m.account: store.last_polled(tx, m.account) for m in mapping.members}
        reach = {a: w for a, w in polled.items()
                 if w is not None and w + horizon(config, a) > at}
        end = at + timedelta(days=mapping.horizon_days)
        for account, when in reach.items():
            end = min(end, when + horizon(config, account))
        end = max(end, at)
        entries = {
            label(m): [_snapshot(r) for r in store.polled_entries(
                tx, m.account, m.schedule, m.level, reach[m.account], at, end)]
            for m in mapping.members if m.account in reach
        }
        dirs = _directories(tx, config, polled, at, known)
        out.append(compute_drift(mapping, entries, config.users, at, end, directories=dirs))
    return out


def history(tx: Tx, config: Config, at: datetime) -> list[MappingDrift]:
    """Who each member had on call at a past moment, from snapshot history. No entry covers
    ``at`` means nobody only within what the account's polls read (from its first poll to its
    last plus the horizon); before or after that the member is unknown (``missing``): a vendor
    that reports whole shifts has rows reaching back before the first poll, one that cuts its
    entries at the poll has none, and that is not a drift."""
    out = []
    for mapping in config.oncall:
        who = {}
        for m in mapping.members:
            rows = tx.oncall_at(m.account, m.schedule, m.level, at)
            first, last = store.first_polled(tx, m.account), store.last_polled(tx, m.account)
            if rows or (first is not None and last is not None
                        and first <= at < last + horizon(config, m.account)):
                who[label(m)] = _who([_snapshot(r) for r in rows], config.users, m.account, at)
        out.append(state_at(mapping, who, at))
    return out


@dataclass
class OnCallReport:
    """What ``syncd oncall`` shows: where the comparison came from (``poll``, ``history`` or
    ``schedule``), the polls made, the drift per mapping and the repairs."""

    at: datetime | None
    source: str
    polls: list[OnCallPoll]
    drifts: list[MappingDrift]
    repairs: list[Repair]


class OnCallService:
    """On-call polling, drift and repair for one config, over the engine's clients; overrides
    are pushed by the accounts' dispatchers (the engine's, or ones built over ``clients``)."""

    def __init__(self, config: Config, ledger: Ledger, clients: Mapping[str, VendorClient],
                 dispatchers: Mapping[str, Dispatcher] | None = None) -> None:
        self.config = config
        self.ledger = ledger
        self.clients = {n: c for n, c in clients.items()
                        if c.capabilities & Capability.ONCALL_READ}
        given = dispatchers or {}
        self.dispatchers = {n: given.get(n) or Dispatcher(n, c, ledger, {})
                            for n, c in self.clients.items()}
        self._failing: set[str] = set()
        self.pushing: Callable[[], contextlib.AbstractContextManager[Any]] = \
            contextlib.nullcontext
        """Held while overrides are owed and pushed: the daemon counts it as a push on the
        wire, which shutdown lets land instead of cancelling it."""
        self._known: dict[str, list[tuple[str, str | None]]] = {}
        self._open: dict[str, dict[tuple[Any, ...], Window]] = {}

    async def poll(self, account: str, now: datetime | None = None) -> OnCallPoll:
        """Read [now, now + horizon) into snapshots; one ledger write per poll."""
        client = self.clients[account]
        now = now or utcnow()
        try:
            until = now + horizon(self.config, account)
            with vendor_answer(account, "oncall"):
                entries = await client.oncall(now, until)
        except VendorError as exc:
            error = f"{type(exc).__name__}: {exc}"
            if account not in self._failing:
                log.error("oncall.poll_failing", account=account, error=error,
                          auth=isinstance(exc, AuthError))
            self._failing.add(account)
            return OnCallPoll(account, ok=False, error=error)
        if account in self._failing:
            log.info("oncall.poll_recovered", account=account)
            self._failing.discard(account)
        if (users := await _user_list(client)) is not None:
            self._known[account] = users
        rows = [_entry_row(e) for e in entries]
        new = await self.ledger.run(lambda tx: tx.record_oncall(account, rows, now, (now, until)))
        return OnCallPoll(account, ok=True, entries=len(rows), new=new)

    async def poll_all(self, accounts: Iterable[str] | None = None) -> list[OnCallPoll]:
        now = utcnow()
        return [await self.poll(a, now) for a in (accounts or self.clients)]

    async def evaluate(self, at: datetime | None = None,
                       mappings: Sequence[str] | None = None) -> list[MappingDrift]:
        return await self.ledger.run(evaluate, self.config, at, mappings, self._known)

    async def schedule_view(self, at: datetime) -> tuple[list[MappingDrift], list[OnCallPoll]]:
        """Drift from ``at`` on, read live from the vendors' schedule views (future moments);
        nothing is stored, so snapshot history stays a record of what was polled."""
        live: dict[str, list[OnCall]] = {}
        polls = []
        for account, client in self.clients.items():
            try:
                live[account] = await client.oncall(at, at + horizon(self.config, account))
                polls.append(OnCallPoll(account, ok=True, entries=len(live[account])))
            except VendorError as exc:
                polls.append(OnCallPoll(account, ok=False, error=f"{type(exc).__name__}: {exc}"))
        for account, client in self.clients.items():
            if (users := await _user_list(client)) is not None:
                self._known[account] = users
        extra = {a: [*self._known.get(a, ()), *((e.user_id, e.user_email) for e in live[a])]
                 for a in live}
        dirs = await self.ledger.run(_directories, self.config, list(self.clients), at, extra)
        out = []
        for mapping in self.config.oncall:
            end = at + timedelta(days=mapping.horizon_days)
            entries = {label(m): [e for e in live[m.account] if e.schedule_id == m.schedule
                                  and e.level == m.level]
                       for m in mapping.members if m.account in live}
            out.append(compute_drift(mapping, entries, self.config.users, at, end,
                                     directories=dirs))
        return out, polls

    async def plan(self, drifts: Sequence[MappingDrift]) -> list[Repair]:
        def read(tx: Tx) -> tuple[dict[str, Directory], list[store.PushedOverride]]:
            now = utcnow()
            store.expire_overrides(tx, now - STUCK_AFTER)
            dirs = _directories(tx, self.config, self.config.accounts, now, self._known)
            return dirs, store.pushed_overrides(tx, store.horizon_start(now))

        dirs, pushed = await self.ledger.run(read)
        caps = {n: c.capabilities for n, c in self.clients.items()}
        by_name = {m.name: m for m in self.config.oncall}
        return [r for d in drifts for r in plan_repairs(by_name[d.mapping], d, dirs, pushed, caps)]

    async def repair(self, drifts: Sequence[MappingDrift], *, dry_run: bool = False
                     ) -> list[Repair]:
        planned = await self.plan(drifts)
        with self.pushing():
            return await execute(self.ledger, self.dispatchers, planned, dry_run=dry_run)

    async def _repair_and_confirm(self, drifts: list[MappingDrift], *, dry_run: bool = False,
                                  mappings: Sequence[str] | None = None
                                  ) -> tuple[list[Repair], list[OnCallPoll], list[MappingDrift]]:
        """Repair, then re-poll the followers that took an override so the fix is confirmed at
        once; returns the repairs, those polls and the drift after them."""
        repairs = await self.repair(drifts, dry_run=dry_run)
        pushed = {r.account for r in repairs if r.status == "done"
                  and not self.dispatchers[r.account].stopping}  # no reads at shutdown
        if not pushed:
            return repairs, [], drifts
        polls = await self.poll_all(pushed)
        return repairs, polls, await self.evaluate(mappings=mappings)

    async def check(self, at: datetime | None = None, *, repair: bool = False,
                    dry_run: bool = False) -> OnCallReport:
        """``syncd oncall``. Without ``at``: poll every account and compare from now. A past
        ``at`` is answered from snapshot history (no vendor calls, no repair); a future one from
        the vendors' schedule views (nothing stored, repair dry-run only)."""
        if at is not None and at <= utcnow():
            drifts = await self.ledger.run(history, self.config, at)
            return OnCallReport(at, "history", [], drifts, [])
        if at is not None:
            drifts, polls = await self.schedule_view(at)
            source = "schedule"
        else:
            polls = await self.poll_all()
            drifts = await self.evaluate()
            source = "poll"
        repairs: list[Repair] = []
        if repair or dry_run:
            repairs, more, drifts = await self._repair_and_confirm(
                drifts, dry_run=dry_run or at is not None)
            polls += more
        return OnCallReport(at or (drifts[0].start if drifts else None), source, polls, drifts,
                            repairs)

    async def tick(self, account: str) -> None:
        """The daemon's on-call job for one account: poll, then re-check (and, where opted in,
        repair) every mapping the account is in; log drift windows as they start and end."""
        result = await self.poll(account)
        if not result.ok:
            return
        names = [m.name for m in self.config.oncall if any(x.account == account
                                                            for x in m.members)]
        if not names:
            return
        drifts = await self.evaluate(mappings=names)
        self.report(drifts)
        if any(m.repair == "override" for m in self.config.oncall if m.name in names):
            _repairs, polls, after = await self._repair_and_confirm(drifts, mappings=names)
            if polls:
                self.report(after)

    def report(self, drifts: Sequence[MappingDrift]) -> None:
        """Metric and ``oncall.drift`` events; a window is known by its end and people, since
        an ongoing window's start moves with every evaluation."""
        for d in drifts:
            if d.missing:
                continue
            metrics.ONCALL_DRIFT.labels(d.mapping).set(1 if d.drift_now else 0)
            before = self._open.get(d.mapping, {})
            now = {(w.end, tuple(sorted(w.who.items()))): w for w in d.windows}
            for key, w in now.items():
                if key not in before:
                    log.warning("oncall.drift", mapping=d.mapping, state="started",
                                start=w.start.isoformat(), end=w.end.isoformat(),
                                reason=w.reason, who={k: list(v) for k, v in w.who.items()})
            for key, w in before.items():
                if key not in now:
                    log.info("oncall.drift", mapping=d.mapping, state="ended",
                             start=w.start.isoformat(), end=w.end.isoformat(),
                             reason=w.reason, who={k: list(v) for k, v in w.who.items()})
            self._open[d.mapping] = now


async def execute(ledger: Ledger, dispatchers: Mapping[str, Dispatcher],
                  repairs: Sequence[Repair], *, dry_run: bool = False) -> list[Repair]:
    """Push planned overrides, at most :data:`REPAIRS_PER_RUN` per account per run.

    Each is an outbox row committed before the vendor call (unless an override owed or pushed
    meanwhile covers it: ``already``), then pushed by the account's dispatcher, which stores the
    outcome: ``done``; ``no-op`` (the vendor created nothing, e.g. Splunk On-Call when the
    person is already the one paged throughout: recorded, not retried); ``refused``;
    ``unknown`` (a transient failure: not retried, since the override may exist and Spike.sh
    would stack a second); ``deferred`` (rate limited or an auth failure:
    nothing was created, the next run plans afresh). Refused or deferred after one of an
    override's several writes may have landed is ``unknown`` (``Dispatcher.push_override``).
    """
    out: list[Repair] = []
    sent: dict[str, int] = {}
    for r in repairs:
        if r.status != "planned":
            out.append(r)
            continue
        if dry_run:
            out.append(r.but(status="dry-run"))
            continue
        if sent.get(r.account, 0) >= REPAIRS_PER_RUN:
            out.append(r.but(status="deferred", reason="per-run override budget used"))
            continue
        dispatcher = dispatchers[r.account]
        if dispatcher.stopping:  # shutting down: the next start plans it afresh
            out.append(r.but(status="deferred", reason=STOPPING))
            continue
        sent[r.account] = sent.get(r.account, 0) + 1
        row = await ledger.run(_owe, r)
        if row is None:
            out.append(r.but(status="already", reason="an override pushed meanwhile covers "
                             "this window"))
            continue
        if dispatcher.stopping:
            # Owed, never sent: a row left pending would cover the window until it is
            # declared unknown, and the drift would never be repaired.
            await ledger.run(store.settle_override, row.id, "deferred", None, STOPPING,
                             utcnow())
            out.append(r.but(status="deferred", reason=STOPPING))
            continue
        outcome, vendor_id, reason = await dispatcher.push_override(row)
        done = r.but(status=outcome, vendor_id=vendor_id, reason=reason)
        log.info("oncall.repair", mapping=r.mapping, account=r.account, schedule=r.schedule_id,
                 user=r.user_email, start=r.start.isoformat(), end=r.end.isoformat(),
                 outcome=done.status, reason=done.reason or None)
        out.append(done)
    return out


def _owe(tx: Tx, r: Repair) -> Any:
    """The outbox row for a planned repair, or None when an override owed or pushed since it
    was planned covers it (two runs planning the same window at once)."""
    assert r.user_email is not None
    now = utcnow()
    if _covered(store.pushed_overrides(tx, store.horizon_start(now)), r):
        return None
    return store.owe_override(tx, mapping=r.mapping, account=r.account,
                              schedule_id=r.schedule_id, level=r.level, user_email=r.user_email,
                              start=r.start, end=r.end, replaces=",".join(r.replaces),
                              cause=None, now=now)
