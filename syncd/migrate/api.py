"""What a vendor client offers migration: read definitions, render on-call, write in place.

A client that can be a migration *source* implements :class:`ScheduleSource`; one that can be a
*target* implements :class:`ScheduleTarget` and declares the :class:`TargetModel` of what its
schedule API can express as the class attribute ``schedule_model``. Vendor JSON stays in the
client: these methods speak :mod:`syncd.migrate.schedule` and :mod:`syncd.migrate.policy`.

User references in both directions are the vendor's own user ids; :mod:`syncd.migrate.plan`
translates between accounts by email. Schedule references inside a policy handed to
``create_policy``/``update_policy`` are already the target's schedule ids.

Every object syncd creates carries ``marker`` where the vendor keeps free text (a description),
so ``find_*`` finds it again after a crash between the create call and the ledger commit:
apply never creates twice (the same discipline as mirror creates).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import ClassVar, Protocol, runtime_checkable

from syncd.migrate.convert import TargetModel
from syncd.migrate.policy import Policy
from syncd.migrate.schedule import Override, Schedule, Span


@runtime_checkable
class ScheduleSource(Protocol):
    async def read_schedules(self, ids: Sequence[str] | None = None,
                             teams: Sequence[str] | None = None) -> list[Schedule]:
        """Definitions in each schedule's own time zone, rotations lowest precedence first,
        with future overrides. ``ids``/``teams`` None = all."""
        ...

    async def read_policies(self, ids: Sequence[str] | None = None,
                            teams: Sequence[str] | None = None) -> list[Policy]: ...

    async def user_emails(self) -> dict[str, str]:
        """Vendor user id -> email (the clients' existing user directory)."""
        ...

    async def rendered(self, schedule_id: str, since: datetime, until: datetime) -> list[Span]:
        """The vendor's own final schedule (after overrides) for ``[since, until)``."""
        ...


@runtime_checkable
class ScheduleTarget(ScheduleSource, Protocol):
    schedule_model: ClassVar[TargetModel]

    async def preview(self, schedule: Schedule, since: datetime, until: datetime
                      ) -> list[Span] | None:
        """What the vendor would page if ``schedule`` were saved (PagerDuty
        ``POST /schedules/preview``, incident.io ``preview_entries``); None when it cannot."""
        ...

    async def find_schedule(self, marker: str) -> str | None: ...

    async def create_schedule(self, schedule: Schedule, marker: str) -> str: ...

    async def update_schedule(self, target_id: str, schedule: Schedule, marker: str) -> None:
        """Replace the definition in place: the target id never changes."""
        ...

    async def sync_overrides(self, target_id: str, overrides: Sequence[Override]) -> int:
        """Create the overrides the target lacks (same window and person = present); returns
        how many were created. Never deletes one a person made."""
        ...

    async def find_policy(self, marker: str) -> str | None: ...

    async def create_policy(self, policy: Policy, marker: str) -> str: ...

    async def update_policy(self, target_id: str, policy: Policy, marker: str) -> None: ...
