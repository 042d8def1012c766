"""A migration source that exposes who is on call but not how its rotations are defined.

Splunk On-Call's and Spike.sh's documented APIs (the specs syncd holds) give rendered on-call,
not rotation definitions (vendor-notes/migration.md §4-§5), so their schedules can only be
migrated *materialized*: the rendered on-call is written onto the target as overrides and the
dual run keeps it extended. This adapter makes such a client a :class:`ScheduleSource` whose
schedules have no rotations, only the vendor's rendering; :func:`syncd.migrate.convert.convert`
refuses those with ``definition_not_readable`` and the plan materializes them.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from syncd.migrate.policy import Policy
from syncd.migrate.schedule import Schedule, Span
from syncd.model import OnCall
from syncd.vendors.base import VendorClient

READ_AHEAD = timedelta(days=120)


def schedule_key(schedule_id: str, level: int) -> str:
    """One migratable object per schedule and escalation level (Splunk On-Call reports on-call
    per policy step)."""
    return schedule_id if level == 1 else f"{schedule_id}#{level}"


class RenderedSource:
    def __init__(self, client: VendorClient, *, read_ahead: timedelta = READ_AHEAD) -> None:
        self.client = client
        self.read_ahead = read_ahead
        self._entries: list[OnCall] | None = None
        self._since: datetime | None = None

    async def _oncall(self) -> list[OnCall]:
        if self._entries is None:
            # A little before now, so a plan's "now" (taken earlier) is covered too.
            self._since = datetime.now(UTC) - timedelta(minutes=5)
            self._entries = await self.client.oncall(self._since, self._since + self.read_ahead)
        return self._entries

    async def read_schedules(self, ids: Sequence[str] | None = None,
                             teams: Sequence[str] | None = None) -> list[Schedule]:
        grouped: dict[str, list[OnCall]] = defaultdict(list)
        for entry in await self._oncall():
            if teams is not None and entry.team not in teams:
                continue
            grouped[schedule_key(entry.schedule_id, entry.level)].append(entry)
        out = []
        for key, entries in sorted(grouped.items()):
            if ids is not None and key not in ids:
                continue
            read_at = self._since or datetime.now(UTC)
            # A shift on call now started before the read: keep its real start.
            since = min([read_at, *(e.start for e in entries if e.start is not None)])
            # Every span as the vendor renders it, several people where shifts overlap
            # (Splunk On-Call: "several shifts (and rotations) can be on duty at once"), so
            # materializing refuses those rather than paging one of the people.
            spans = tuple(s for s in _spans(entries, since, read_at + self.read_ahead - since)
                          if s.users)
            name = entries[0].schedule_name or entries[0].schedule_id
            level = entries[0].level
            out.append(Schedule(id=key, name=name if level == 1 else f"{name} (level {level})",
                                time_zone="UTC", rotations=(), rendered=spans,
                                team=entries[0].team))
        return out

    async def read_policies(self, ids: Sequence[str] | None = None,
                            teams: Sequence[str] | None = None) -> list[Policy]:
        return []  # no documented definition API: schedules are migrated, policies are not

    async def user_emails(self) -> dict[str, str]:
        return await self.client.user_emails()

    async def rendered(self, schedule_id: str, since: datetime, until: datetime) -> list[Span]:
        entries = [e for e in await self._oncall()
                   if schedule_key(e.schedule_id, e.level) == schedule_id]
        return [s for s in _spans(entries, since, until - since) if s.end > since]


def _spans(entries: Sequence[OnCall], since: datetime, span: timedelta) -> list[Span]:
    """Maximal intervals of unchanged on-call (several people where shifts overlap)."""
    until = since + span
    bounded = [(e.start or since, e.end or until, e.user_id) for e in entries]
    points = sorted({since, until} | {t for a, b, _ in bounded for t in (a, b)
                                      if since < t < until})
    out: list[Span] = []
    for a, b in itertools.pairwise(points):
        users = frozenset(u for s, e, u in bounded if s <= a < e)
        if out and out[-1].users == users and out[-1].end == a:
            out[-1] = Span(out[-1].start, b, users)
        else:
            out.append(Span(a, b, users))
    return out
