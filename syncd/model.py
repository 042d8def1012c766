"""The vendor-neutral vocabulary every other module speaks: states, severities, fields, actions,
capabilities, creation markers, incidents, on-call.

No I/O lives here. Vendor clients translate their JSON into these types; the ledger stores them;
the engine compares them. Keeping them small and immutable is what lets the reconciler be a pure
decision table.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import NamedTuple, Protocol, runtime_checkable


@functools.total_ordering
class State(enum.Enum):
    """Incident state, ordered so that moving forward is a comparison: triggered < resolved."""

    TRIGGERED = "triggered"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"

    @property
    def rank(self) -> int:
        return _STATE_RANK[self]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, State):
            return NotImplemented
        return self.rank < other.rank


_STATE_RANK = {State.TRIGGERED: 0, State.ACKNOWLEDGED: 1, State.RESOLVED: 2}


@functools.total_ordering
class Severity(enum.Enum):
    """Canonical severity: sev1 is the worst. "Higher severity" means a smaller number."""

    SEV1 = "sev1"
    SEV2 = "sev2"
    SEV3 = "sev3"
    SEV4 = "sev4"
    SEV5 = "sev5"

    @property
    def level(self) -> int:
        return int(self.value[3:])

    def __lt__(self, other: object) -> bool:
        # Ordered by number, so min() of a set of severities is the most severe one.
        if not isinstance(other, Severity):
            return NotImplemented
        return self.level < other.level

    @classmethod
    def parse(cls, value: str) -> Severity:
        """Accept "sev2", "SEV2" or "2"; raise ValueError naming the bad value otherwise."""
        text = value.strip().lower()
        if text.isdigit():
            text = f"sev{text}"
        try:
            return cls(text)
        except ValueError:
            raise ValueError(f"unknown severity {value!r}: expected sev1..sev5") from None


STATE, SEVERITY = "state", "severity"
FIELDS = (STATE, SEVERITY)
"""The fields a sync group keeps in agreement (the ``agreed`` rows and ``[sync.fields]`` keys)."""


class Capability(enum.Flag):
    """What a vendor lets syncd do. The engine never attempts an action its target lacks."""

    NONE = 0
    ACK = enum.auto()
    UNACK = enum.auto()
    RESOLVE = enum.auto()
    REOPEN = enum.auto()
    SEVERITY_READ = enum.auto()
    SEVERITY_WRITE = enum.auto()
    CREATE = enum.auto()
    ONCALL_READ = enum.auto()
    OVERRIDE_WRITE = enum.auto()


class Action(enum.Enum):
    """An outbox action: a write the dispatcher owes one vendor record (``CREATE``: one account,
    which has no record yet; ``OVERRIDE``: one on-call schedule). The value is what the outbox
    row stores."""

    ACKNOWLEDGE = "acknowledge"
    UNACKNOWLEDGE = "unacknowledge"
    RESOLVE = "resolve"
    REOPEN = "reopen"
    SET_SEVERITY = "severity"
    CREATE = "create"
    OVERRIDE = "override"  # an on-call override owed to a follower's schedule

    @property
    def capability(self) -> Capability:
        return _ACTION_CAPABILITY[self]

    @property
    def field(self) -> str | None:
        """The synced field this action writes; pending actions of one field supersede each
        other. None for ``CREATE`` and ``OVERRIDE``, which write no synced field."""
        return _ACTION_FIELD.get(self)

    @property
    def state(self) -> State | None:
        """The state a confirmed state action leaves the record in. None for ``REOPEN`` (the
        record goes back to whatever the link agreed: triggered or acknowledged) and for
        actions that do not move the state."""
        return _ACTION_STATE.get(self)


_ACTION_CAPABILITY = {
    Action.ACKNOWLEDGE: Capability.ACK,
    Action.UNACKNOWLEDGE: Capability.UNACK,
    Action.RESOLVE: Capability.RESOLVE,
    Action.REOPEN: Capability.REOPEN,
    Action.SET_SEVERITY: Capability.SEVERITY_WRITE,
    Action.CREATE: Capability.CREATE,
    Action.OVERRIDE: Capability.OVERRIDE_WRITE,
}
_ACTION_FIELD = {
    Action.ACKNOWLEDGE: STATE,
    Action.UNACKNOWLEDGE: STATE,
    Action.RESOLVE: STATE,
    Action.REOPEN: STATE,
    Action.SET_SEVERITY: SEVERITY,
}
_ACTION_STATE = {
    Action.ACKNOWLEDGE: State.ACKNOWLEDGED,
    Action.UNACKNOWLEDGE: State.TRIGGERED,
    Action.RESOLVE: State.RESOLVED,
}


def state_action(have: State, want: State) -> Action | None:
    """The single vendor action that takes a record from ``have`` to ``want``."""
    if want == have:
        return None
    if want > have:
        return Action.RESOLVE if want == State.RESOLVED else Action.ACKNOWLEDGE
    if have == State.RESOLVED:
        return Action.REOPEN
    return Action.UNACKNOWLEDGE


TAG_LETTER = "o"
"""What an origin tag starts with (:func:`origin_tag`), before its hex digits."""
TAG_DIGITS = 16
"""Hex digits of an origin tag: collisions out of reach, so a copy may join by its tag alone
(:func:`joins_by_tag`)."""
LEGACY_TAG_DIGITS = 8
"""Hex digits of an origin tag in markers written before :data:`TAG_DIGITS`: too few to tell
incidents apart, so such a copy pairs only with the link id its marker names."""
_TAG = rf"{TAG_LETTER}(?:[0-9a-f]{{{TAG_DIGITS}}}|[0-9a-f]{{{LEGACY_TAG_DIGITS}}})"
"""An origin tag, either length."""
MARKER_SHAPE = rf"syncd-[\w.-]+-\d+(?:-{_TAG})?"
"""What any creation marker looks like (group-agnostic), for clients that tell a marker from
another key: ``syncd-<group>-<link id>-<origin tag>``, or ``syncd-<group>-<link id>`` as written
before origin tags (legacy)."""
MARKER_MAX_GROUP = 200
"""Longest mirror group name: its markers (at most 244 characters with a 19-digit link id) stay
within PagerDuty's 255-character ``dedup_key`` (vendor notes §7), also as incident.io's
``syncd-<marker>`` idempotency key."""


class Marker(NamedTuple):
    """A creation marker read back from an incident. ``tag`` None: a legacy marker, written
    before markers named their origin; it cannot be checked against the link."""

    group: str
    link_id: int
    tag: str | None

    @property
    def text(self) -> str:
        """The marker as written."""
        return f"syncd-{self.group}-{self.link_id}" + (f"-{self.tag}" if self.tag else "")


def origin_tag(account: str, external_id: str) -> str:
    """``o`` and 16 hex digits naming the record that opened a mirror link (its source account
    and incident), so a marker names which incident its copy mirrors, not just a link id: link
    ids are ledger row ids, and a fresh or restored ledger hands the same id to another
    incident. The letter keeps a tag from ever reading as a link id: without it, one tag in 43
    is all digits, and group ``g``'s ``syncd-g-5-28167191`` was also group ``g-5``'s legacy
    marker for link 28167191. Markers written before held 8 hex digits (:func:`joins_by_tag`):
    too few to tell incidents apart (account ``a``'s ``S1174`` and ``S33770`` share
    ``o099126bb``), so those pair only with the link id they name."""
    digest = hashlib.sha256(f"{account}\n{external_id}".encode()).hexdigest()
    return TAG_LETTER + digest[:TAG_DIGITS]


def joins_by_tag(tag: str | None) -> bool:
    """Whether a copy carrying ``tag`` may join a link other than the one its marker names, by
    the tag alone: only a full 16-digit tag, whose collisions are out of reach; an 8-digit one
    collides within tens of thousands of incidents of one account."""
    return tag is not None and len(tag) == len(TAG_LETTER) + TAG_DIGITS


def names_origin(tag: str, account: str, external_id: str) -> bool:
    """Whether ``tag`` (16 or, in an older marker, 8 hex digits) names that incident."""
    full = origin_tag(account, external_id)
    return full == tag or (len(tag) == len(TAG_LETTER) + LEGACY_TAG_DIGITS
                           and full.startswith(tag))


def marker_for(group: str, link_id: int, account: str, external_id: str) -> str:
    """The creation marker a mirror writes into the copies it creates of ``account``'s incident
    ``external_id``, opened as link ``link_id``: deterministic, so a retried create finds its
    first attempt, and different for another incident that gets the same link id in another
    ledger, so that one is never taken for this one's copy."""
    return f"syncd-{group}-{link_id}-{origin_tag(account, external_id)}"


_TAG_OF = re.compile(rf"syncd-[\w.-]+-\d+-({_TAG})")  # MARKER_SHAPE with its tag


def tag_of(marker: str | None) -> str | None:
    """The origin tag of a tagged creation marker, whatever its group (None for anything
    else): what the ledger indexes a copy by, so a copy whose marker names a link id this ledger
    gave to another incident is still found as the copy of the incident it mirrors."""
    m = _TAG_OF.fullmatch(marker) if marker else None
    return m.group(1) if m else None


@functools.lru_cache(maxsize=64)
def _marker_of(group: str) -> re.Pattern[str]:
    return re.compile(rf"syncd-{re.escape(group)}-(\d+)(?:-({_TAG}))?")


def parse_marker(keys: Mapping[str, str], group: str) -> Marker | None:
    """``group``'s marker in an incident's ``marker`` or ``dedup`` key, if the whole value is one.

    Exact match only: a value that merely starts with a marker (``syncd-g-12`` against link 1)
    is not one. The group is given because a name may hold dashes and digits: ``syncd-g-5-12``
    is group ``g-5``'s link 12, not group ``g``'s."""
    pattern = _marker_of(group)
    for key in ("marker", "dedup"):
        value = keys.get(key)
        if value:
            m = pattern.fullmatch(value)
            if m:
                return Marker(group, int(m.group(1)), m.group(2))
    return None


def _frozen(mapping: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True, slots=True)
class Incident:
    """One incident as a vendor showed it at one moment (an observation, not a decision).

    ``keys`` holds the correlation keys the vendor exposes under vendor-neutral names: ``dedup``
    is the alert deduplication key (PagerDuty incident_key, Splunk On-Call entity_id, incident.io
    alert deduplication_key, Spike.sh title) and ``marker`` is syncd's own creation marker when
    the incident was created by a mirror group. ``updated_at`` is the vendor's timestamp of the
    last change the record shows, used to spot changes and to discard stale list results after a
    push. ``own_updated_at`` is the incident's own timestamp, the same unless the record is more
    than one vendor object: incident.io folds its escalations' times into an open record's
    ``updated_at`` (an ack need not bump the incident), while a reopen always bumps the
    incident's (or alert's) own; so a step back is judged by this one. None: ``updated_at``.
    ``ack_sticky``: the vendor has no un-ack (incident.io reading acks from escalations), so a
    listing that shows an acknowledged record triggered is a lagging read, never a person's
    move (``syncd.engine.observe``).
    """

    external_id: str
    state: State
    title: str
    severity: Severity | None = None
    keys: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    url: str | None = None
    number: str | None = None
    own_updated_at: datetime | None = None
    ack_sticky: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", _frozen(self.keys))
        if self.own_updated_at is None:
            object.__setattr__(self, "own_updated_at", self.updated_at)

    def __hash__(self) -> int:
        return hash((self.external_id, self.state, self.severity, self.updated_at))


@dataclass(frozen=True, slots=True)
class OnCall:
    """Who a vendor would page for one schedule/policy at one escalation level, and when.

    ``start``/``end`` of None mean open-ended (PagerDuty reports permanent on-call that way).
    ``user_email`` is how users are matched across vendors; ``user_id`` is the vendor's own id.
    """

    schedule_id: str
    level: int
    user_id: str
    user_email: str | None
    start: datetime | None
    end: datetime | None
    schedule_name: str | None = None
    team: str | None = None


@dataclass(frozen=True, slots=True)
class NewIncident:
    """What a mirror group asks a target vendor to create.

    ``marker`` is deterministic (derived from the link and the incident that opened it), so the
    client can find an incident it created before a crash instead of creating a second one;
    clients treat it as an opaque string and match it exactly.
    """

    marker: str
    title: str
    state: State = State.TRIGGERED
    severity: Severity | None = None
    details: str = ""


@dataclass(frozen=True, slots=True)
class KnownKey:
    """A per-record fact a client looked up once: ``value`` None means "looked, there is none"
    (an incident.io incident without an alert), ``checked_at`` says as of when: the record's
    own vendor timestamp where it has one (incident.io: its ``updated_at``), else our clock."""

    value: str | None
    checked_at: datetime


@runtime_checkable
class KeyCache(Protocol):
    """Lookups a client need not repeat (incident.io: an incident's alert dedup key, or that it
    has none), one account's. The engine hands each client one kept in the ledger, warmed at
    start, so a restart does not look every open incident up again; a client without one
    keeps a :class:`MemoryKeyCache`. Vendor-neutral: the client decides what a key means."""

    def known(self, external_id: str) -> KnownKey | None: ...

    async def remember(self, entries: Mapping[str, KnownKey]) -> None: ...


class MemoryKeyCache:
    """A :class:`KeyCache` that lasts as long as the process (clients built outside an engine)."""

    def __init__(self) -> None:
        self.entries: dict[str, KnownKey] = {}

    def known(self, external_id: str) -> KnownKey | None:
        return self.entries.get(external_id)

    async def remember(self, entries: Mapping[str, KnownKey]) -> None:
        self.entries.update(entries)
