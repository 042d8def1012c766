"""The vendor-neutral vocabulary every other module speaks: states, severities, incidents, on-call.

No I/O lives here. Vendor clients translate their JSON into these types; the ledger stores them;
the engine compares them. Keeping them small and immutable is what lets the reconciler be a pure
decision table.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType


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


def _frozen(mapping: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True, slots=True)
class Incident:
    """One incident as a vendor showed it at one moment (an observation, not a decision).

    ``keys`` holds the correlation keys the vendor exposes under vendor-neutral names: ``dedup``
    is the alert deduplication key (PagerDuty incident_key, Splunk On-Call entity_id, incident.io
    alert deduplication_key, Spike.sh title) and ``marker`` is syncd's own creation marker when
    the incident was created by a mirror group. ``updated_at`` is the vendor's own timestamp of the
    last change, used to discard stale list results after a push.
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", _frozen(self.keys))

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

    ``marker`` is deterministic (derived from the link), so the client can find an incident it
    created before a crash instead of creating a second one.
    """

    marker: str
    title: str
    state: State = State.TRIGGERED
    severity: Severity | None = None
    details: str = ""
