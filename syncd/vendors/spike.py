"""Spike.sh client: open-incident lists plus a resolve window when needed, batched ids writes,
on-call.

Spike has no "updated since" filter (vendor-notes part B3), so a poll reads every open incident
(``/incidents/triggered`` + ``/incidents/acknowledged``, paged to the end, 100 per page). Resolves
come from ``/incidents/all-occurrences?status=RES&start=<since>``, read only when it can hold
something: when an incident seen open at the last poll (or created by syncd since) is missing from
this poll's open lists, when the client remembers no open set (first poll after a start or a full
read, a cursor it did not hand out), or every ``resolve_sweep`` seconds for incidents triggered
and resolved between two polls, which no open list ever shows. While the resolve read is skipped
the cursor's ``since`` stays put, so the next one covers the whole gap. Idle cost per poll:
ceil(triggered/100) + ceil(acknowledged/100) (an empty list still costs its one page), plus one
page per ``resolve_sweep`` (docs/vendors/spike.md, "Idle cost").

Absence never resolves anything: offset paging over a live list skips an incident when another
one leaves the list mid-read, so an id missing from the open lists only triggers the resolve
read, and states come from Spike's answers alone.

Writes take lists of counter ids (``{ids: [...]}``, notes B4); ``batch_size`` is our number (100),
Spike documents none. Severity goes to Spike ``severity`` (sev1..sev3; sev4/sev5 clamp to sev3)
or, with ``severity_field = "priority"``, to ``priority`` p1..p5. Creation goes through
``/incidents/create`` or the webhook integration with a title carrying ``[syncd:<marker>]``;
Spike's own title dedupe (no second incident while one with that title is open) makes a retry
safe, and :meth:`find_created` finds it again by that title.
"""

from __future__ import annotations

import json
import re
from array import array
from bisect import bisect_left
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal, Unpack

import httpx
from pydantic import Field

from syncd import metrics
from syncd.configtypes import DAY, Url, bounded
from syncd.model import Incident, NewIncident, OnCall, Severity, State
from syncd.ratelimit import Limit
from syncd.secrets import Secret
from syncd.vendors._http import require, short_body
from syncd.vendors.base import (
    AccountSettings,
    Action,
    AuthError,
    Capability,
    Outcome,
    Page,
    PermanentError,
    Push,
    PushResult,
    Skipped,
    TransientError,
    VendorError,
)
from syncd.vendors.client import ClientBase, ClientOptions, stamp
from syncd.vendors.client import optional_time as _time

STATES = {"NACK": State.TRIGGERED, "ACK": State.ACKNOWLEDGED, "RES": State.RESOLVED}
SEVERITY_VALUES = ("sev1", "sev2", "sev3")
PRIORITY_VALUES = ("p1", "p2", "p3", "p4", "p5")
MARKER = re.compile(r"\[syncd:([\w.:-]+)\]")  # bracketed: a whole marker, never a prefix
PER_PAGE_MAX = 100
MAX_PAGES = 10_000  # a vendor that never stops paging is a malformed vendor
READ_BACKS_PER_BATCH = 5
"""Refused acks read back per batch: a batch refused wholesale (a bulk resolve by a person)
must not spend the 50/min budget on GETs; the refusals past the cap stand, as before."""


def marker_title(new: NewIncident) -> str:
    return f"{new.title} [syncd:{new.marker}]"


def _stamp(dt: datetime) -> str:
    return stamp(dt, "ms")


def _hashes(ids: Iterable[int]) -> array[int]:
    """A sorted array of 64-bit id hashes: 8 bytes an id between polls instead of a string set
    (Python's str hash is stable within a process, and this memory never leaves it)."""
    return array("q", sorted(set(ids)))


def _holds(sorted_hashes: array[int], h: int) -> bool:
    i = bisect_left(sorted_hashes, h)
    return i < len(sorted_hashes) and sorted_hashes[i] == h


@dataclass
class _OpenMemory:
    """The open set one completed delta poll saw, valid only for the cursor it handed out (a
    cursor the engine did not commit, or one from another process, means no memory)."""

    cursor: str
    known: array[int]  # sorted hashes: seen open, plus ``carried``
    carried: array[int]  # missing once and not found resolved: kept one more poll, then dropped


def _read_cursor(cursor: str) -> tuple[datetime | None, datetime | None]:
    """(since, time of the last resolve read); v1 cursors have no read time. Unreadable: None."""
    try:
        data = json.loads(cursor)
        since = _time(data["since"])
        read = _time(data.get("read"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, None  # an unreadable cursor means a full read, never a crash
    return since, read


class SpikeSettings(AccountSettings):
    """``[accounts.NAME]`` keys for a Spike.sh team."""

    vendor: Literal["spike"]
    base_url: Url = "https://api.spike.sh"
    api_key: Secret = Field(description="x-api-key from https://app.spike.sh/api (full access)")
    team_id: str = Field(description="x-team-id: the team _id every incident call is scoped to")
    severity_field: Literal["severity", "priority"] = Field(
        "severity", description="sync canonical severity with Spike severity or priority"
    )
    create_via: Literal["api", "webhook"] = Field(
        "api", description="mirror creation through POST /incidents/create or push-events"
    )
    escalation_id: str | None = Field(None, description="escalation _id for /incidents/create")
    integration_token: Secret | None = Field(
        None, description="integration token for /incidents/create"
    )
    webhook_token: Secret | None = Field(None, description="webhook integration token")
    hooks_url: Url | None = Field(
        None, description="webhook host (https://hooks.spike.sh in production); default base_url"
    )
    rate_limit_per_minute: float = bounded(
        50.0, 1, 6000, "our assumed API limit: Spike publishes none")
    page_size: int = Field(100, ge=1, le=PER_PAGE_MAX, description="perPage for list calls")
    resolve_overlap: float = bounded(
        300.0, 0, DAY, "seconds the resolve window reaches back before the cursor")
    resolve_sweep: float = bounded(
        300.0, 0, DAY, "seconds between resolve reads while no known incident leaves the open "
        "lists (incidents triggered and resolved between two polls); 0 = every poll")
    find_window: float = bounded(
        86400.0, 60, 30 * DAY, "seconds find_created looks back among resolved incidents")


class SpikeClient(ClientBase):
    """One Spike.sh team as a syncd account."""

    vendor: ClassVar[str] = "spike"
    Settings: ClassVar[type[SpikeSettings]] = SpikeSettings
    full_read_follows_cursor: ClassVar[bool] = True  # open lists + the resolve window
    capabilities: ClassVar[Capability] = (
        Capability.ACK
        | Capability.UNACK
        | Capability.RESOLVE
        | Capability.SEVERITY_READ
        | Capability.SEVERITY_WRITE
        | Capability.CREATE
        | Capability.ONCALL_READ
        | Capability.OVERRIDE_WRITE
    )
    # Spike documents no API rate limit (notes B8): 50/min is our conservative assumption
    # (the default of ``rate_limit_per_minute``).
    limits: ClassVar[Mapping[str, Limit]] = {"*": Limit(50, 60.0)}
    batch_size: ClassVar[Mapping[Action, int]] = {
        Action.ACKNOWLEDGE: 100,
        Action.UNACKNOWLEDGE: 100,
        Action.RESOLVE: 100,
        Action.SET_SEVERITY: 100,
    }
    default_severity_map: ClassVar[Mapping[str, Severity]] = {
        "sev1": Severity.SEV1,
        "sev2": Severity.SEV2,
        "sev3": Severity.SEV3,
        "p1": Severity.SEV1,
        "p2": Severity.SEV2,
        "p3": Severity.SEV3,
        "p4": Severity.SEV4,
        "p5": Severity.SEV5,
    }
    settings: SpikeSettings

    @classmethod
    def limits_for(cls, settings: SpikeSettings) -> dict[str, Limit]:
        """The assumed account-wide limit, ``rate_limit_per_minute``."""
        return {"*": Limit(settings.rate_limit_per_minute, 60.0)}

    def __init__(self, account: str, settings: SpikeSettings,
                 **options: Unpack[ClientOptions]) -> None:
        super().__init__(account, settings, **options)
        headers = {
            "x-api-key": settings.api_key.get_secret_value(),
            "x-team-id": settings.team_id,
            "accept": "application/json",
        }
        self.http = self._session(settings.base_url, headers, classify=self._classify)
        # The webhook host takes no API key: the token in the path is the credential.
        self.hooks = self._session(settings.hooks_url or settings.base_url,
                                   {"accept": "application/json"}, classify=self._classify)
        # Between polls (see poll): the open set the last delta poll saw, the ids created since,
        # the ``since`` of the last delta cursor (a full read must not move it) and a serial
        # that makes every cursor distinct.
        self._memory: _OpenMemory | None = None
        self._created: set[int] = set()
        self._floor: datetime | None = None
        self._serial = 0

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.hooks.aclose()

    # ------------------------------------------------------------------ errors

    def _classify(self, response: httpx.Response, endpoint: str) -> VendorError | None:
        """Spike answers errors as ``{message, error}``; a missing team header is a config
        error (400) that retrying cannot fix, so it is an AuthError like a bad key."""
        if response.status_code == 400 and "x-team-id" in short_body(response):
            return AuthError("x-team-id rejected: check team_id", status=400)
        if response.status_code in (401, 403):
            text = short_body(response)
            return AuthError(f"authentication failed: {text}" if text else
                             "authentication failed", status=response.status_code)
        return None

    # ------------------------------------------------------------------ parsing

    def _severity_of(self, raw: dict[str, Any]) -> Severity | None:
        name = self.settings.severity_field
        grouped = raw.get("groupedIncident")
        value = grouped.get(name) if isinstance(grouped, dict) else None
        if value is None:
            value = raw.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or value not in self.severity_map:
            raise ValueError(f"unknown {name} {value!r}")
        return self.severity_map[value]

    def _incident(self, raw: Any) -> Incident:
        """One Spike incident JSON -> Incident; ValueError/KeyError/TypeError when unusable."""
        if not isinstance(raw, dict):
            raise TypeError(f"incident is {type(raw).__name__}, not an object")
        counter = raw.get("counterId")
        if isinstance(counter, int) and not isinstance(counter, bool):
            counter = str(counter)  # the 2022 draft typed it as a number
        if not isinstance(counter, str) or not counter:
            raise ValueError("missing counterId")
        status = raw.get("status")
        if status not in STATES:
            raise ValueError(f"unknown status {status!r}")
        title = raw.get("message")
        if not isinstance(title, str):
            title = raw.get("title")
        if not isinstance(title, str):
            raise ValueError("missing title (message)")
        created = _time(raw.get("createdAt"))
        changes = [_time(raw.get(k)) for k in ("updatedAt", "NACK_at", "ACK_at", "RES_at")]
        updated = max((t for t in [created, *changes] if t is not None), default=None)
        keys = {"dedup": title}
        found = MARKER.findall(title)
        if found:  # the last: ours is appended, a copy of a copy carries both
            keys["marker"] = found[-1]
        return Incident(
            external_id=counter,
            state=STATES[status],
            title=title,
            severity=self._severity_of(raw),
            keys=keys,
            created_at=created,
            updated_at=updated,
            number=counter,
        )

    def _parse_list(self, data: Any, endpoint: str) -> tuple[list[Any], int | None]:
        """Incidents of one page and the total page count when the vendor reports it. Tolerates
        the other readings: a bare list, or ``{result: {incidents}}`` (notes B2)."""
        if isinstance(data, list):
            return data, None
        if isinstance(data, dict) and data.get("error") and "incidents" not in data:
            raise self._malformed(endpoint, f"200 carrying a failure: {str(data)[:200]}")
        if isinstance(data, dict) and "incidents" not in data and isinstance(
            data.get("result"), dict
        ):
            data = data["result"]
        items = require(data, "incidents", list, endpoint=endpoint, account=self.account)
        pages = None
        pagination = data.get("pagination")
        if isinstance(pagination, dict) and isinstance(pagination.get("totalPages"), int):
            pages = pagination["totalPages"]
        return items, pages

    async def _pages(self, route: str, params: dict[str, Any] | None = None
                     ) -> AsyncIterator[tuple[list[Incident], list[Skipped], list[str]]]:
        """Every page of an incident list: (incidents, skipped, counter ids seen)."""
        endpoint = f"GET {route}"
        per_page = self.settings.page_size
        page = 1
        while page <= MAX_PAGES:
            query = {**(params or {}), "page": page, "perPage": per_page}
            data = await self.http.json("GET", route, params=query)
            items, total_pages = self._parse_list(data, endpoint)
            incidents, skipped, seen = [], [], []
            for raw in items:
                try:
                    inc = self._incident(raw)
                except (ValueError, TypeError, KeyError, AttributeError) as exc:
                    rid = raw.get("counterId") if isinstance(raw, dict) else None
                    metrics.MALFORMED.labels(self.account, endpoint).inc()
                    skipped.append(Skipped(endpoint, str(exc), str(rid) if rid else None))
                    continue
                incidents.append(inc)
                seen.append(inc.external_id)
            yield incidents, skipped, seen
            last = total_pages is not None and page >= total_pages
            if last or len(items) < per_page:
                return
            page += 1
        raise self._malformed(endpoint, f"more than {MAX_PAGES} pages")

    # ------------------------------------------------------------------ poll

    async def poll(self, cursor: str | None, *, full: bool = False) -> AsyncIterator[Page]:
        """Both open lists every poll; the resolve window only when :meth:`_resolve_reason`
        finds one. An id missing from the open lists is never taken as resolved (offset paging
        over a live list can skip it): it only makes this poll read the resolves, and a state
        comes only from Spike's answer. Such an id stays known for one more poll, so a skipped
        incident resolved just after is still noticed."""
        since, last_read = _read_cursor(cursor) if cursor else (None, None)
        # A full read with a cursor (the engine's periodic resync) is this same read with the
        # resolve window always read: its open lists are every open incident anyway.
        memory = self._memory if not full and since is not None and self._memory and (
            self._memory.cursor == cursor) else None
        self._memory = None  # a poll that does not complete leaves no memory behind
        if since is not None:
            self._floor = since
        created = set(self._created)
        started = self._clock()
        newest: datetime | None = None
        seen: list[int] = []
        pending: Page | None = None

        def keep(incidents: list[Incident]) -> None:
            nonlocal newest
            for inc in incidents:
                if inc.updated_at and (newest is None or inc.updated_at > newest):
                    newest = inc.updated_at

        for route in ("/incidents/triggered", "/incidents/acknowledged"):
            async for incidents, skipped, ids in self._pages(route):
                keep(incidents)
                # an unparseable record is still there: present, not missing
                seen.extend(hash(i) for i in [*ids, *(k.external_id for k in skipped
                                                      if k.external_id)])
                if pending is not None:
                    yield pending
                pending = Page(incidents=incidents, skipped=skipped)
        open_now = _hashes(seen)
        del seen
        missing = [h for h in ([*memory.known, *created] if memory else created)
                   if not _holds(open_now, h)]
        reason = self._resolve_reason(since, last_read, memory, missing, started)
        found: list[int] = []
        if since is not None and reason is not None:
            params = {"start": _stamp(since), "end": _stamp(started + timedelta(days=1)),
                      "status": "RES"}
            async for incidents, skipped, ids in self._pages("/incidents/all-occurrences",
                                                             params):
                keep(incidents)
                found.extend(hash(i) for i in ids)
                if pending is not None:
                    yield pending
                pending = Page(incidents=incidents, skipped=skipped)
        if since is not None and reason is None:
            next_since, read_at = since, last_read  # skipped: the next read covers the gap
        else:
            # The next resolve window starts at the earlier of our clock and the vendor's newest
            # timestamp, minus an overlap, so clock skew either way cannot hide a resolve.
            edge = min(started, newest) if newest else started
            next_since = edge - timedelta(seconds=self.settings.resolve_overlap)
            if since is not None and next_since < since - timedelta(days=1):
                next_since = since
            if since is None and full and self._floor is not None:
                next_since = min(next_since, self._floor)  # a full read reads no resolves
            read_at = started if since is not None else None
        self._serial += 1
        body: dict[str, Any] = {"v": 2, "since": _stamp(next_since), "n": self._serial}
        if read_at is not None:
            body["read"] = _stamp(read_at)
        new_cursor = json.dumps(body)
        if since is not None:  # a delta poll: remember what it saw (a full read leaves none)
            self._memory = self._remember(new_cursor, open_now, memory, missing, found)
        self._created -= created
        if pending is None:
            pending = Page()
        pending.cursor = new_cursor
        yield pending

    def _resolve_reason(self, since: datetime | None, last_read: datetime | None,
                        memory: _OpenMemory | None, missing: list[int], started: datetime
                        ) -> str | None:
        """Why this poll must read the resolve window, or None to skip it."""
        if since is None:
            return None  # no cursor: open lists only
        if memory is None:
            return "no memory"  # a full read, the first poll after a start, a foreign cursor
        if missing:
            return "missing"  # a known or created incident left the open lists
        if last_read is None or (started - last_read).total_seconds() >= (
                self.settings.resolve_sweep):
            return "sweep"  # triggered and resolved between two polls: in no open list
        return None

    @staticmethod
    def _remember(cursor: str, open_now: array[int], memory: _OpenMemory | None,
                  missing: list[int], found: list[int]) -> _OpenMemory:
        """The next poll's known set: what is open now, plus ids missing now that the resolve
        read did not show resolved (maybe skipped by paging), once: one still missing after
        that is dropped (the periodic sweep remains for it)."""
        resolved = set(found)
        before = memory.carried if memory else array("q")
        carried = _hashes(h for h in missing if h not in resolved and not _holds(before, h))
        known = _hashes([*open_now, *carried]) if carried else open_now
        return _OpenMemory(cursor, known, carried)

    # ------------------------------------------------------------------ push

    def _vendor_value(self, severity: Severity) -> str:
        """Canonical -> the chosen Spike field's value; the closest one when no exact match
        (Spike severity stops at sev3, so sev4/sev5 clamp to sev3)."""
        allowed = SEVERITY_VALUES if self.settings.severity_field == "severity" else (
            PRIORITY_VALUES)
        options = [(v, self.severity_map[v]) for v in allowed if v in self.severity_map]
        exact = [v for v, s in options if s == severity]
        if exact:
            return exact[0]
        return min(options, key=lambda o: (abs(o[1].level - severity.level), o[1].level))[0]

    def severity_lands_as(self, severity: Severity) -> Severity:
        """What Spike holds after a push of ``severity``: its closest value, read back."""
        return self.severity_map[self._vendor_value(severity)]

    async def push(self, action: Action, pushes: Sequence[Push]) -> list[PushResult]:
        if not pushes:
            return []
        if action not in self.batch_size:
            raise PermanentError(f"Spike cannot {action.value}", account=self.account)
        size = self.batch_size[action]
        results: list[PushResult] = []
        if action is Action.SET_SEVERITY:
            groups: dict[Severity | None, list[Push]] = {}
            for p in pushes:
                groups.setdefault(p.severity, []).append(p)
            batches = [g[i:i + size] for g in groups.values() for i in range(0, len(g), size)]
        else:
            batches = [list(pushes[i:i + size]) for i in range(0, len(pushes), size)]
        for batch in batches:
            results.extend(await self._push_batch(action, batch))
        order = {p.external_id: n for n, p in enumerate(pushes)}
        return sorted(results, key=lambda r: order.get(r.external_id, 0))

    async def _push_batch(self, action: Action, batch: list[Push]) -> list[PushResult]:
        ids = list(dict.fromkeys(p.external_id for p in batch))
        field = self.settings.severity_field
        body: dict[str, Any] = {"ids": ids}
        method = "POST"
        if action is Action.SET_SEVERITY:
            target = batch[0].severity
            if target is None:
                method, route = "DELETE", f"/incidents/{field}/remove"
            else:
                route = f"/incidents/{field}"
                body[field] = self._vendor_value(target)
        else:
            route = {
                Action.ACKNOWLEDGE: "/incidents/acknowledge",
                Action.UNACKNOWLEDGE: "/incidents/unacknowledge",
                Action.RESOLVE: "/incidents/resolve",
            }[action]
        endpoint = f"{method} {route}"
        # Every action here is a set-to-value: repeating it is harmless, so retry is safe.
        data = await self.http.json(method, route, json=body, idempotent=True)
        results = self._push_results(action, batch, data, endpoint)
        if action is Action.ACKNOWLEDGE:
            reads = 0
            for n, r in enumerate(results):
                if r.outcome is Outcome.REFUSED and reads < READ_BACKS_PER_BATCH:
                    reads += 1
                    results[n] = await self._past_ack(r)
        return results

    async def _past_ack(self, refused: PushResult) -> PushResult:
        """An ack Spike refused because a person resolved the incident meanwhile: resolved is
        past acknowledged, so the ack is done (clients never move a state backwards), not a
        parked row for an operator to look at. Any other refusal stands.

        A failed read answers for this one id only: raised, it would lose the batch's other
        answers (the dispatcher would push the whole chunk again)."""
        try:
            now = await self._show(refused.external_id)
        except TransientError as exc:  # incl. rate limited: read it again with the retry
            return PushResult(refused.external_id, Outcome.RETRY,
                              f"{refused.message}; read-back failed: {exc}")
        except VendorError:  # gone, unreadable or not allowed: the refusal stands
            return refused
        if now.state == State.RESOLVED:
            return PushResult(refused.external_id, Outcome.ALREADY, "already resolved",
                              incident=now)
        return refused

    def _push_results(self, action: Action, batch: list[Push], data: Any, endpoint: str
                      ) -> list[PushResult]:
        if isinstance(data, dict) and (data.get("error") or data.get("success") is False):
            raise self._malformed(endpoint, f"200 carrying a failure: {str(data)[:200]}")
        if data is None or data == {} or (isinstance(data, dict) and not any(
            k in data for k in ("updated", "unchanged", "failed", "incidents")
        )):
            # Spike documents only "200 Successful response" ("No content" in its example):
            # a bare 2xx means the batch was accepted.
            return [PushResult(p.external_id, Outcome.DONE) for p in batch]
        if not isinstance(data, dict):
            raise self._malformed(endpoint, f"expected an object, got {type(data).__name__}")
        lists = {}
        for key in ("updated", "unchanged", "failed", "incidents"):
            value = data.get(key, [])
            if not isinstance(value, list):
                raise self._malformed(endpoint, f"field {key!r} is not a list")
            lists[key] = value
        failed: dict[str, str] = {}
        for entry in lists["failed"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                raise self._malformed(endpoint, "failed entry without an id")
            failed[entry["id"]] = str(entry.get("message") or entry.get("error") or "refused")
        after: dict[str, Incident] = {}
        for raw in lists["incidents"]:
            try:
                inc = self._incident(raw)
            except (ValueError, TypeError, KeyError):
                metrics.MALFORMED.labels(self.account, endpoint).inc()
                continue
            after[inc.external_id] = inc
        updated = {str(i) for i in lists["updated"]}
        unchanged = {str(i) for i in lists["unchanged"]}
        out = []
        for p in batch:
            eid = p.external_id
            if eid in failed:
                out.append(PushResult(eid, Outcome.REFUSED, failed[eid]))
            elif eid in updated:
                out.append(PushResult(eid, Outcome.DONE, incident=after.get(eid)))
            elif eid in unchanged:
                out.append(PushResult(eid, Outcome.ALREADY, incident=after.get(eid)))
            else:
                out.append(PushResult(eid, Outcome.RETRY, "not reported in the vendor's answer"))
        return out

    # ------------------------------------------------------------------ create

    async def create(self, new: NewIncident) -> Incident:
        """Create once: the title carries the marker and Spike keeps one open incident per
        title, so a retry after a lost answer lands on the same incident."""
        existing = await self.find_created(new.marker, open_only=True)
        if existing is not None:
            return existing
        title = marker_title(new)
        payload: dict[str, Any] = {"title": title}
        if new.severity is not None:
            payload[self.settings.severity_field] = self._vendor_value(new.severity)
        s = self.settings
        if s.create_via == "api":
            if not s.escalation_id or s.integration_token is None:
                raise PermanentError("create_via = \"api\" needs escalation_id and "
                                     "integration_token", account=self.account)
            payload.update(escalation=s.escalation_id,
                           integration=s.integration_token.get_secret_value(),
                           metadata=new.details or "")
            endpoint = "POST /incidents/create"
            data = await self.http.json("POST", "/incidents/create", json=payload,
                                        idempotent=True)
            raw = data.get("incident", data) if isinstance(data, dict) else data
            try:
                created = self._incident(raw)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                raise self._malformed(endpoint, f"created incident unreadable: {exc}") from None
        else:
            if s.webhook_token is None:
                raise PermanentError("create_via = \"webhook\" needs webhook_token",
                                     account=self.account)
            payload["body"] = new.details or new.title
            data = await self.hooks.json(
                "POST", "/{token}/push-events", path={"token": s.webhook_token.get_secret_value()},
                json=payload, idempotent=True,
            )
            if not (isinstance(data, dict) and data.get("Ok") is True):
                raise self._malformed("POST /{token}/push-events", "no {Ok: true} in answer")
            found = await self.find_created(new.marker, open_only=True)
            if found is None:
                raise PermanentError("webhook accepted but no incident appeared (suppressed?)",
                                     account=self.account, endpoint="POST /{token}/push-events")
            created = found
        if new.state is not State.TRIGGERED:
            action = Action.RESOLVE if new.state is State.RESOLVED else Action.ACKNOWLEDGE
            result = await self.push(action, [Push(created.external_id, action, new.marker)])
            if result and result[0].incident is not None:
                created = result[0].incident
            else:  # Spike's documented answer has no content (notes B4): read the incident
                created = await self._show(created.external_id)
        if created.state is not State.RESOLVED:
            # Resolved before the next poll, it would be in no open list and in no remembered
            # set: the next poll must look for it among the resolves.
            self._created.add(hash(created.external_id))
        return created

    async def _show(self, counter_id: str) -> Incident:
        """``GET /incidents/{counterId}``: one incident as it is now ([SP-AE] ``$ref Incident``)."""
        endpoint = "GET /incidents/{counterId}"
        data = await self.http.json("GET", "/incidents/{counterId}", path={"counterId": counter_id})
        try:
            return self._incident(data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise self._malformed(endpoint, f"incident unreadable: {exc}") from None

    async def find_created(self, marker: str, *, open_only: bool = False) -> Incident | None:
        """Open incidents first (the dedupe scope), then recently resolved ones."""
        routes: list[tuple[str, dict[str, Any] | None]] = [
            ("/incidents/triggered", None), ("/incidents/acknowledged", None)]
        if not open_only:
            now = self._clock()
            routes.append(("/incidents/all-occurrences", {
                "start": _stamp(now - timedelta(seconds=self.settings.find_window)),
                "end": _stamp(now + timedelta(days=1)), "status": "RES"}))
        for route, params in routes:
            async for incidents, _skipped, _seen in self._pages(route, params):
                for inc in incidents:
                    if inc.keys.get("marker") == marker:
                        if inc.state is not State.RESOLVED:
                            # found again after a lost answer: as for a create, a resolve
                            # before the next poll must make that poll read the resolves
                            self._created.add(hash(inc.external_id))
                        return inc
        return None

    # ------------------------------------------------------------------ on-call

    async def _read_directory(self) -> dict[str, str]:
        """member _id -> email of everyone in the account (``GET /orgs/members``)."""
        endpoint = "GET /orgs/members"
        data = await self.http.json("GET", "/orgs/members")
        members = data if isinstance(data, list) else require(
            data, "members", list, endpoint=endpoint, account=self.account)
        return {
            m["_id"]: m["email"] for m in members
            if isinstance(m, dict) and isinstance(m.get("_id"), str)
            and isinstance(m.get("email"), str)
        }

    async def oncall(self, since: datetime, until: datetime) -> list[OnCall]:
        """Shifts per schedule in [since, until): GET /on-calls then /on-calls/{id}?from=."""
        endpoint = "GET /on-calls"
        data = await self.http.json("GET", "/on-calls")
        schedules = data if isinstance(data, list) else require(
            data, "oncalls", list, endpoint=endpoint, account=self.account)
        out: list[OnCall] = []
        for sched in schedules:
            if not isinstance(sched, dict) or not isinstance(sched.get("_id"), str):
                metrics.MALFORMED.labels(self.account, endpoint).inc()
                continue
            out.extend(await self._schedule_shifts(sched["_id"], sched.get("name"), since, until))
        return out

    async def _schedule_shifts(self, sid: str, name: Any, since: datetime, until: datetime
                               ) -> list[OnCall]:
        endpoint = "GET /on-calls/{oncallId}"
        out: list[OnCall] = []
        cursor = since
        while cursor < until:
            data = await self.http.json("GET", "/on-calls/{oncallId}", path={"oncallId": sid},
                                        params={"from": _stamp(cursor)})
            shifts = require(data, "shifts", list, endpoint=endpoint, account=self.account)
            furthest = cursor
            for shift in shifts:
                try:
                    user = shift["user"]
                    uid = user["_id"] if isinstance(user, dict) else str(user)
                    start, end = _time(shift["start"]), _time(shift["end"])
                except (KeyError, TypeError, ValueError):
                    metrics.MALFORMED.labels(self.account, endpoint).inc()
                    continue
                if start is None or end is None:
                    metrics.MALFORMED.labels(self.account, endpoint).inc()
                    continue
                furthest = max(furthest, end)
                if end <= since or start >= until:
                    continue
                email = user.get("email") if isinstance(user, dict) else None
                if not isinstance(email, str):
                    email = (await self._directory()).get(uid)
                if out and out[-1].user_id == uid and out[-1].end == start:
                    prev = out.pop()
                    start = prev.start or start
                out.append(OnCall(sid, 1, uid, email, max(start, since), min(end, until),
                                  schedule_name=name if isinstance(name, str) else None))
            if furthest <= cursor:
                break  # no progress: the vendor returned nothing further
            cursor = furthest
        return out

    async def create_override(self, schedule_id: str, user_email: str, start: datetime,
                              end: datetime) -> str:
        users = await self._directory()
        uid = next((u for u, e in users.items() if e.lower() == user_email.lower()), None)
        if uid is None:
            raise PermanentError(f"no Spike user with email {user_email}", account=self.account,
                                 endpoint="POST /on-calls/{oncall_id}/overrides/add")
        endpoint = "POST /on-calls/{oncall_id}/overrides/add"
        # Not idempotent: a retried add would stack a second override, so no blind retries.
        data = await self.http.json(
            "POST", "/on-calls/{oncall_id}/overrides/add", path={"oncall_id": schedule_id},
            json={"user": uid, "start": _stamp(start), "end": _stamp(end),
                  "desc": "syncd on-call drift fix", "timezone": "UTC"},
        )
        override = data.get("override", data) if isinstance(data, dict) else None
        oid = override.get("_id") if isinstance(override, dict) else None
        if not isinstance(oid, str) or not oid:
            raise self._malformed(endpoint, "answer carries no override _id")
        return oid
