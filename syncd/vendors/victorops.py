"""Splunk On-Call (VictorOps) client: live incident view, batched ack/resolve, REST-endpoint
mirrors, on-call from current + team schedules, scheduled overrides.

Vendor facts are cited from ../shared/vendor-notes/victorops-spike.md part A (A1..A8); see
docs/vendors/victorops.md for the full list and the simulator that enforces them.

Why it is shaped this way:

- ``GET /api-public/v1/incidents`` is the only live view (unpaginated: open, acknowledged and
  recently resolved, A2). Every poll reads it and reports only records whose fingerprint changed
  since the cursor. Incidents that were open at the last poll and have dropped out of the list
  were resolved long enough ago to age out; they are looked up in reporting v2 (A3), which allows
  one call a minute, so the lookup waits in the cursor until the budget has a token instead of
  blocking the poll.
- Ack/resolve go out as ``incidentNames`` batches under one service user (A2). A per-incident
  ``cmdAccepted: false`` is classified with one read: the incident already there (or beyond) is
  ALREADY, anything else REFUSED with the vendor's message.
- The API has no severity write, no un-acknowledge and no reopen (A8): not declared.
- Mirrors are created through the REST endpoint with ``entity_id`` = the marker (A6, A8 identity
  recipe), so a retried create attaches to the same incident and a restart finds it by entityId.
- A 403 means "authentication failed or rate-limit reached" (spec). Following A7 it is treated
  as a rate limit once (back off, retry); a second 403 in a row on the same endpoint, of a call
  sent after the first was read, is an AuthError, so a bad key never retries forever (a 403 of
  a call already in flight beside the first is the same rate limit).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal, Unpack
from urllib.parse import urlsplit

import httpx
import structlog
from pydantic import Field

from syncd import metrics
from syncd.configtypes import Url
from syncd.model import Incident, NewIncident, OnCall, Severity, State
from syncd.ratelimit import ACCOUNT, Limit
from syncd.secrets import Secret
from syncd.vendors._http import require
from syncd.vendors.base import (
    AccountSettings,
    Action,
    AuthError,
    Capability,
    MalformedResponse,
    NotFound,
    Outcome,
    Page,
    PermanentError,
    Push,
    PushResult,
    RateLimited,
    Skipped,
    TransientError,
    VendorError,
)
from syncd.vendors.client import ClientBase, ClientOptions, parse_time, stamp

log = structlog.get_logger(__name__)

V1 = "/api-public/v1"
V2 = "/api-public/v2"
INCIDENTS = f"{V1}/incidents"
INCIDENT = f"{V1}/incidents/{{incidentNumber}}"
ACK = f"{V1}/incidents/ack"
RESOLVE = f"{V1}/incidents/resolve"
REPORTING = "/api-reporting/v2/incidents"
ONCALL_CURRENT = f"{V1}/oncall/current"
TEAM_SCHEDULE = f"{V2}/team/{{team}}/oncall/schedule"
POLICIES = f"{V1}/policies"
USERS = f"{V2}/user"
OVERRIDES = f"{V1}/overrides"
ASSIGNMENT = f"{V1}/overrides/{{publicId}}/assignments/{{policySlug}}"
REST_ALERT = "/integrations/generic/20131114/alert/{api_key}/{routing_key}"

# Per-endpoint limits (requests per minute) of the endpoints this client calls, from the 2018
# spec 0.0.2 and the 2020 spec 0.0.3 (A7). Endpoints the 2018 spec lacks take the 2020 figure.
# "*" is the official Go client's 2 requests/second "per VictorOps API guidance" (A7).
_PER_MINUTE_2020 = {
    f"GET {INCIDENTS}": 60, f"GET {INCIDENT}": 60, f"PATCH {ACK}": 60, f"PATCH {RESOLVE}": 60,
    f"GET {REPORTING}": 1, f"GET {ONCALL_CURRENT}": 60, f"GET {TEAM_SCHEDULE}": 60,
    f"GET {POLICIES}": 60, f"GET {USERS}": 60, f"POST {OVERRIDES}": 60,
    f"PUT {ASSIGNMENT}": 60,
}
_PER_MINUTE_2018 = {
    **_PER_MINUTE_2020,
    f"GET {INCIDENTS}": 6, f"PATCH {ACK}": 6, f"PATCH {RESOLVE}": 6,
    f"GET {ONCALL_CURRENT}": 1, f"GET {TEAM_SCHEDULE}": 15, f"GET {POLICIES}": 1,
    f"GET {USERS}": 15,
}


def limit_table(name: str) -> dict[str, Limit]:
    table = {"2018": _PER_MINUTE_2018, "2020": _PER_MINUTE_2020}[name]
    return {ACCOUNT: Limit(120, 60.0), **{k: Limit(v, 60.0) for k, v in table.items()}}


def _sent_at(response: httpx.Response, now: float) -> float:
    """When (monotonic) the call of a read-and-closed ``response`` was sent."""
    try:
        return now - response.elapsed.total_seconds()
    except RuntimeError:  # not closed: no elapsed time; taken as sent now
        return now


_PHASES = {"UNACKED": State.TRIGGERED, "ACKED": State.ACKNOWLEDGED, "RESOLVED": State.RESOLVED}
_ROUTE = {Action.ACKNOWLEDGE: ACK, Action.RESOLVE: RESOLVE}
BATCH = 100  # the spec sets no maximum for incidentNames; 100 keeps one request small


class VictorOpsSettings(AccountSettings):
    """``[accounts.NAME]`` keys for a Splunk On-Call org."""

    vendor: Literal["victorops"]
    base_url: Url = Field("https://api.victorops.com", description="public API base (A1)")
    api_id: Secret = Field(description="X-VO-Api-Id (Integrations > API)")
    api_key: Secret = Field(description="X-VO-Api-Key; a read-only key cannot ack/resolve")
    user_name: str = Field(
        "syncd-bot", description="service user recorded as the actor of ack/resolve (A2)"
    )
    rest_api_key: Secret | None = Field(
        None, description="REST endpoint integration key; needed to create mirror incidents"
    )
    alert_url: Url | None = Field(
        None,
        description="REST endpoint base; default alert.victorops.com for the real API, "
        "else base_url (simulators serve both)",
    )
    routing_key: str = Field("syncd", description="routing key for mirrored incidents")
    monitoring_tool: str = Field(
        "syncd", description="monitoring_tool sent with REST alerts; marks syncd's incidents"
    )
    warning_creates_incidents: bool = Field(
        False, description="the org setting that lets WARNING open incidents (A6)"
    )
    rate_limit_table: Literal["2018", "2020"] = Field(
        "2018", description="per-endpoint limits of the 2018 (stricter) or 2020 spec (A7)"
    )
    oncall_steps: int = Field(2, ge=1, le=4, description="escalation steps read per team")
    org_slug: str | None = Field(None, description="org slug, for incident links in the UI")
    message: str = Field("synced by syncd", description="message attached to ack/resolve")


class VictorOpsClient(ClientBase):
    """One Splunk On-Call org."""

    vendor: ClassVar[str] = "victorops"
    Settings: ClassVar[type[VictorOpsSettings]] = VictorOpsSettings
    capabilities: ClassVar[Capability] = (
        Capability.ACK | Capability.RESOLVE | Capability.SEVERITY_READ | Capability.CREATE
        | Capability.ONCALL_READ | Capability.OVERRIDE_WRITE
    )
    limits: ClassVar[Mapping[str, Limit]] = limit_table("2018")
    full_read_follows_cursor: ClassVar[bool] = True  # the live list, and "gone" from the cursor
    batch_size: ClassVar[Mapping[Action, int]] = {Action.ACKNOWLEDGE: BATCH,
                                                   Action.RESOLVE: BATCH}
    default_severity_map: ClassVar[Mapping[str, Severity]] = {
        "CRITICAL": Severity.SEV1, "WARNING": Severity.SEV2, "INFO": Severity.SEV3,
    }
    settings: VictorOpsSettings

    @classmethod
    def limits_for(cls, settings: VictorOpsSettings) -> dict[str, Limit]:
        """The per-endpoint table the account is held to (``rate_limit_table``, A7)."""
        return limit_table(settings.rate_limit_table)

    def __init__(self, account: str, settings: VictorOpsSettings, *,
                 forbidden_backoff: float = 60.0, created_visibility_wait: float = 1.0,
                 **options: Unpack[ClientOptions]) -> None:
        super().__init__(account, settings, **options)
        self._forbidden_backoff = forbidden_backoff
        # endpoint -> when its first 403 was read (monotonic): a 403 of a call sent after
        # that is the "403 again after backing off"; one of a call already in flight is not.
        self._forbidden: dict[str, float] = {}
        self._visibility_wait = created_visibility_wait
        self._policy_teams: dict[str, str] | None = None
        self.http = self._session(
            settings.base_url,
            {"X-VO-Api-Id": settings.api_id.get_secret_value(),
             "X-VO-Api-Key": settings.api_key.get_secret_value(),
             "Accept": "application/json"},
            classify=self._classify,
        )
        self.alerts = self._session(self._alert_base(), {"Accept": "application/json"})

    def _alert_base(self) -> str:
        if self.settings.alert_url:
            return self.settings.alert_url
        if urlsplit(self.settings.base_url).hostname == "api.victorops.com":
            return "https://alert.victorops.com"
        return self.settings.base_url

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.alerts.aclose()

    # ------------------------------------------------------------------ errors

    def _classify(self, response: httpx.Response, endpoint: str) -> VendorError | None:
        """403 is "authentication failed or rate-limit reached": back off once (A7)."""
        status = response.status_code
        if status != 403:
            # Any other answer ends the 403 spell, a 5xx included: kept, the 403 of a back-off
            # whose retry met a server error was remembered for good, and a rate-limit 403
            # hours later was taken for that retry's and stopped the account as a bad key.
            self._forbidden.pop(endpoint, None)
            return None
        now = time.monotonic()
        first = self._forbidden.get(endpoint)
        sent = _sent_at(response, now)
        # The back-off's retry is sent within one back-off (plus jitter and its own exchange)
        # of the first 403; a 403 of a call sent later is a new spell: the retry then got no
        # answer at all (a timeout, a dropped connection, a cancelled back-off), which would
        # otherwise leave the first 403 remembered for good.
        window = self._forbidden_backoff + 2 * self.http.timeout + 1.0
        if first is not None and sent > first + window:
            del self._forbidden[endpoint]
            first = None
        if first is not None and sent >= first:
            del self._forbidden[endpoint]
            return AuthError(
                "403 again after backing off: authentication failed or the API key is "
                "read-only", status=403,
            )
        self._forbidden.setdefault(endpoint, now)
        return RateLimited(
            "403: rate limit or authentication failure; backing off once",
            retry_after=self._forbidden_backoff, status=403,
        )

    # ------------------------------------------------------------------ parsing

    def _parse(self, raw: Any, endpoint: str) -> Incident:
        """One IncidentInfo/ReportingIncidentInfo; MalformedResponse when it cannot be trusted."""
        number = require(raw, "incidentNumber", (str, int), endpoint=endpoint,
                         account=self.account)
        number = str(number)
        if not number.isdigit():
            raise MalformedResponse(f"incidentNumber {number!r} is not a number",
                                    endpoint=endpoint)
        phase = require(raw, "currentPhase", str, endpoint=endpoint, account=self.account)
        if phase not in _PHASES:
            raise MalformedResponse(f"unknown currentPhase {phase!r}", endpoint=endpoint)
        entity = raw.get("entityId")
        if entity is not None and not isinstance(entity, str):
            raise MalformedResponse("entityId is not a string", endpoint=endpoint)
        title = raw.get("entityDisplayName")
        if not isinstance(title, str) or not title:
            title = entity or f"Incident {number}"
        state = raw.get("entityState")
        severity = self.severity_map.get(state) if isinstance(state, str) else None
        created = _time(raw.get("startTime"), "startTime", endpoint)
        stamps = [created, _time(raw.get("lastAlertTime"), "lastAlertTime", endpoint)]
        transitions = raw.get("transitions") or []
        if not isinstance(transitions, list):
            raise MalformedResponse("transitions is not a list", endpoint=endpoint)
        for t in transitions:
            if isinstance(t, dict):
                stamps.append(_time(t.get("at"), "transitions[].at", endpoint))
        known = [s for s in stamps if s is not None]
        keys = {}
        if entity:
            keys["dedup"] = entity
            if raw.get("monitorName") == self.settings.monitoring_tool:
                keys["marker"] = entity
        url = None
        if self.settings.org_slug:
            url = (f"https://portal.victorops.com/ui/{self.settings.org_slug}"
                   f"/incident/{number}/details")
        return Incident(
            external_id=number, state=_PHASES[phase], title=title, severity=severity,
            keys=keys, created_at=created, updated_at=max(known) if known else None,
            url=url, number=number,
        )

    def _parse_list(self, rows: Iterable[Any], endpoint: str
                    ) -> tuple[list[tuple[Incident, str]], list[Skipped], set[str]]:
        """Parsed incidents with fingerprints, skipped records, numbers of skipped records."""
        skipped: list[Skipped] = []
        bad_numbers: set[str] = set()
        parsed = list(self._parse_rows(rows, endpoint, skipped, bad_numbers))
        return parsed, skipped, bad_numbers

    def _parse_rows(self, rows: Iterable[Any], endpoint: str, skipped: list[Skipped],
                    bad_numbers: set[str]) -> Iterator[tuple[Incident, str]]:
        """:meth:`_parse_list` one row at a time (skips are appended as they are met)."""
        for raw in rows:
            parsed = self._parse_row(raw, endpoint, skipped, bad_numbers)
            if parsed is not None:
                yield parsed

    def _parse_row(self, raw: Any, endpoint: str, skipped: list[Skipped],
                   bad_numbers: set[str]) -> tuple[Incident, str] | None:
        """One row parsed with its fingerprint, or None after noting why it was skipped."""
        try:
            inc = self._parse(raw, endpoint)
        except MalformedResponse as exc:
            number = raw.get("incidentNumber") if isinstance(raw, dict) else None
            metrics.MALFORMED.labels(self.account, endpoint).inc()
            skipped.append(Skipped(endpoint, exc.message,
                                   str(number) if number is not None else None))
            if number is not None:
                bad_numbers.add(str(number))
            return None
        return inc, _fingerprint(inc, raw)

    async def _live(self, skipped: list[Skipped], bad_numbers: set[str], *,
                    write: bool = False) -> AsyncIterator[tuple[Incident, str]]:
        """The live list's incidents with their fingerprints, read from the network and
        decoded one at a time as they are iterated: the list is unpaginated (7.3 MB of JSON
        with 10,000 open incidents) and every poll reads it, so a poll keeps only the
        incidents that changed, never the list (see :meth:`VendorHTTP.items`)."""
        endpoint = f"GET {INCIDENTS}"
        async with aclosing(self.http.items("GET", INCIDENTS, "incidents", write=write)) as rows:
            async for raw in rows:
                parsed = self._parse_row(raw, endpoint, skipped, bad_numbers)
                if parsed is not None:
                    yield parsed

    # ------------------------------------------------------------------ poll

    async def poll(self, cursor: str | None, *, full: bool = False) -> AsyncIterator[Page]:
        """Every poll reads the live list; changed records are reported, and incidents that
        dropped out of it are resolved from reporting v2 when its once-a-minute budget allows.

        Cursor: ``{"v": 1, "seen": {number: fingerprint}, "gone": [numbers]}`` where the
        fingerprint's first letter is the phase (U/A/R).
        """
        state = _load_cursor(cursor)
        everything = full or state is None
        seen: dict[str, str] = state["seen"] if state else {}
        gone: set[str] = set(state["gone"]) if state else set()
        skipped: list[Skipped] = []
        bad: set[str] = set()
        new_seen: dict[str, str] = {}
        changed: list[Incident] = []
        async with aclosing(self._live(skipped, bad)) as live:
            async for inc, fp in live:
                new_seen[inc.external_id] = fp
                if everything or seen.get(inc.external_id) != fp:
                    changed.append(inc)
        for number in bad:  # keep what we knew, so a bad record is not mistaken for "gone"
            if number in seen:
                new_seen[number] = seen[number]
        gone |= {n for n, fp in seen.items() if n not in new_seen and not fp.startswith("R")}
        gone -= set(new_seen)
        yield Page(incidents=changed, skipped=skipped)
        found: list[Incident] = []
        lookup_skipped: list[Skipped] = []
        for chunk in _chunks(sorted(gone, key=int), 100):
            if not self._ready(f"GET {REPORTING}"):
                break  # once a minute: try again next poll rather than block this one
            rows, rep_skipped = await self._reporting(
                {"incidentNumber": ",".join(chunk),
                 "currentPhase": "resolved,triggered,acknowledged"})
            lookup_skipped += rep_skipped
            answered = {inc.external_id: inc for inc in rows}
            found += answered.values()
            for number in chunk:
                gone.discard(number)
                if number not in answered and not any(s.external_id == number
                                                      for s in rep_skipped):
                    lookup_skipped.append(Skipped(
                        f"GET {REPORTING}", "dropped out of the live list and unknown to "
                        "reporting", number))
        new_cursor = json.dumps({"v": 1, "seen": new_seen, "gone": sorted(gone, key=int)},
                                separators=(",", ":"))
        yield Page(incidents=found, cursor=new_cursor, skipped=lookup_skipped)

    def _ready(self, endpoint: str) -> bool:
        return all(b.delay() <= 0 for b in self.budget.buckets_for(endpoint))

    async def _reporting(self, params: dict[str, str]) -> tuple[list[Incident], list[Skipped]]:
        """All pages of one reporting v2 query (limit 100 is the documented maximum, A3)."""
        endpoint = f"GET {REPORTING}"
        out: list[Incident] = []
        skipped: list[Skipped] = []
        offset = 0
        while True:
            data = await self.http.json(
                "GET", REPORTING, params={**params, "offset": offset, "limit": 100})
            rows = require(data, "incidents", list, endpoint=endpoint, account=self.account)
            total = require(data, "total", int, endpoint=endpoint, account=self.account)
            parsed, bad, _numbers = self._parse_list(rows, endpoint)
            out += [inc for inc, _fp in parsed]
            skipped += bad
            offset += len(rows)
            if not rows or offset >= total:
                return out, skipped

    # ------------------------------------------------------------------ push

    async def push(self, action: Action, pushes: Sequence[Push]) -> list[PushResult]:
        if action not in _ROUTE:
            raise PermanentError(f"Splunk On-Call cannot {action.value} incidents (A8)",
                                 account=self.account)
        results: list[PushResult] = []
        for chunk in _chunks(list(pushes), self.batch_size[action]):
            results += await self._push_batch(action, chunk)
        return results

    async def _push_batch(self, action: Action, pushes: Sequence[Push]) -> list[PushResult]:
        route = _ROUTE[action]
        endpoint = f"PATCH {route}"
        names = [p.external_id for p in pushes]
        try:
            data = await self.http.json(
                "PATCH", route,
                json={"userName": self.settings.user_name, "incidentNames": names,
                      "message": self.settings.message},
            )
        except NotFound as exc:
            raise PermanentError(
                f"service user {self.settings.user_name!r} not found in the org (user_name)",
                account=self.account, endpoint=endpoint, status=exc.status,
            ) from None
        rows = require(data, "results", list, endpoint=endpoint, account=self.account)
        by_number: dict[str, dict[str, Any]] = {}
        for row in rows:
            if isinstance(row, dict) and isinstance(row.get("incidentNumber"), str | int):
                by_number[str(row["incidentNumber"])] = row
        results: dict[str, PushResult] = {}
        refused: dict[str, str] = {}
        for name in names:
            row = by_number.get(name)
            if row is None:
                results[name] = PushResult(name, Outcome.RETRY, "no result for this incident")
            elif not isinstance(row.get("cmdAccepted"), bool):
                metrics.MALFORMED.labels(self.account, endpoint).inc()
                results[name] = PushResult(name, Outcome.RETRY, "result without cmdAccepted")
            elif row["cmdAccepted"]:
                results[name] = PushResult(name, Outcome.DONE)
            else:
                refused[name] = str(row.get("message") or "cmdAccepted false")
        if refused:
            assert action.state is not None  # batch_size holds acknowledge and resolve only
            results.update(await self._classify_refusals(action.state, refused))
        return [results[n] for n in names]

    async def _classify_refusals(self, target: State, refused: dict[str, str]
                                 ) -> dict[str, PushResult]:
        """cmdAccepted false: ALREADY when the incident is already at or past the target
        (never moving it backwards), REFUSED with the vendor's message otherwise."""
        current: dict[str, Incident] = {}
        async with aclosing(self._live([], set(), write=True)) as live:
            async for inc, _fp in live:
                if inc.external_id in refused:
                    current[inc.external_id] = inc
        for name in refused:
            if name in current:
                continue
            try:
                data = await self.http.json("GET", INCIDENT, path={"incidentNumber": name},
                                            write=True)
                current[name] = self._parse(data, f"GET {INCIDENT}")
            except NotFound:
                continue
        out = {}
        for name, message in refused.items():
            inc = current.get(name)
            if inc is not None and inc.state >= target:
                out[name] = PushResult(name, Outcome.ALREADY, message, incident=inc)
            else:
                out[name] = PushResult(name, Outcome.REFUSED, message, incident=inc)
        return out

    # ------------------------------------------------------------------ create

    def _message_type(self, severity: Severity | None) -> str:
        if severity is None or severity <= Severity.SEV1:
            return "CRITICAL"
        return "WARNING" if self.settings.warning_creates_incidents else "CRITICAL"

    async def _rest(self, body: dict[str, Any]) -> dict[str, Any]:
        key = self.settings.rest_api_key
        if key is None:
            raise PermanentError("rest_api_key is not configured; cannot create incidents",
                                 account=self.account, endpoint=f"POST {REST_ALERT}")
        endpoint = f"POST {REST_ALERT}"
        data = await self.alerts.json(
            "POST", REST_ALERT, path={"api_key": key.get_secret_value(),
                                      "routing_key": self.settings.routing_key},
            json=body, idempotent=True,  # same entity_id attaches to the same incident
        )
        result = require(data, "result", str, endpoint=endpoint, account=self.account)
        if result != "success":
            raise PermanentError(f"REST endpoint answered {result!r}: "
                                 f"{str(data.get('message', ''))[:200]}",
                                 account=self.account, endpoint=endpoint, status=200)
        return data

    async def create(self, new: NewIncident) -> Incident:
        existing = await self._find_live(new.marker)
        if existing is not None:
            return existing
        await self._rest({
            "message_type": self._message_type(new.severity), "entity_id": new.marker,
            "entity_display_name": new.title, "state_message": new.details[:20480],
            "monitoring_tool": self.settings.monitoring_tool,
        })
        if new.state is not State.TRIGGERED:
            await self._rest({
                "message_type": "RECOVERY" if new.state is State.RESOLVED else "ACKNOWLEDGEMENT",
                "entity_id": new.marker, "monitoring_tool": self.settings.monitoring_tool,
                "ack_author": self.settings.user_name,
            })
        for attempt in range(3):
            found = await self._find_live(new.marker)
            if found is not None:
                return found
            await self._sleep(self._visibility_wait * (attempt + 1))
        raise TransientError(f"incident for marker {new.marker!r} accepted but not yet listed",
                             account=self.account, endpoint=f"GET {INCIDENTS}")

    async def _find_live(self, marker: str) -> Incident | None:
        async with aclosing(self._live([], set())) as live:
            return _latest([inc async for inc, _fp in live if inc.keys.get("dedup") == marker])

    async def find_created(self, marker: str) -> Incident | None:
        found = await self._find_live(marker)
        if found is not None:
            return found
        rows, _skipped = await self._reporting(
            {"entityId": marker, "currentPhase": "resolved,triggered,acknowledged"})
        return _latest(inc for inc in rows if inc.keys.get("dedup") == marker)

    # ------------------------------------------------------------------ on-call

    async def _read_directory(self) -> dict[str, str]:
        """username -> email of everyone in the org (``GET /api-public/v2/user``)."""
        endpoint = f"GET {USERS}"
        data = await self.http.json("GET", USERS)
        users = require(data, "users", list, endpoint=endpoint, account=self.account)
        return {
            u["username"]: u["email"] for u in users
            if isinstance(u, dict) and isinstance(u.get("username"), str)
            and isinstance(u.get("email"), str)
        }

    async def oncall(self, since: datetime, until: datetime) -> list[OnCall]:
        """Per escalation policy and step (level = step + 1): rotation rolls from the v2 team
        schedule with its overrides applied, teams discovered from oncall/current (A4)."""
        endpoint = f"GET {ONCALL_CURRENT}"
        current = await self.http.json("GET", ONCALL_CURRENT)
        teams = require(current, "teamsOnCall", list, endpoint=endpoint, account=self.account)
        emails = await self._directory()
        windows = _day_windows(since, until, datetime.now(UTC))
        out: list[OnCall] = []
        for entry in teams:
            team = entry.get("team") if isinstance(entry, dict) else None
            if not isinstance(team, dict) or not isinstance(team.get("slug"), str):
                raise self._malformed(endpoint, "teamsOnCall[] without team.slug")
            covered: set[str] = set()
            for step in range(self.settings.oncall_steps):
                seen: set[OnCall] = set()
                for skip, forward in windows:
                    got = [o for o in await self._team_step(team, step, skip, forward, since,
                                                            until, emails) if o not in seen]
                    seen.update(got)
                    covered |= {o.schedule_id for o in got}
                    out += got
            out += self._current_only(entry, covered, emails, team)
        return out

    async def _team_step(self, team: dict[str, Any], step: int, skip: int, forward: int,
                         since: datetime, until: datetime, emails: dict[str, str]
                         ) -> list[OnCall]:
        endpoint = f"GET {TEAM_SCHEDULE}"
        data = await self.http.json(
            "GET", TEAM_SCHEDULE, path={"team": team["slug"]},
            params={"daysForward": forward, "daysSkip": skip, "step": step})
        schedules = require(data, "schedules", list, endpoint=endpoint, account=self.account)
        out = []
        for sched in schedules:
            policy = require(sched, "policy", dict, endpoint=endpoint, account=self.account)
            slug = require(policy, "slug", str, endpoint=endpoint, account=self.account)
            overrides = self._overrides_of(sched, endpoint)
            for item in sched.get("schedule") or []:
                rolls = require(item, "rolls", list, endpoint=endpoint, account=self.account)
                for roll in rolls:
                    try:
                        user = _username(roll["onCallUser"])
                        start, end = parse_time(roll["start"]), parse_time(roll["end"])
                    except (KeyError, TypeError, ValueError):
                        raise self._malformed(endpoint, "unparseable roll") from None
                    for who, s, e in _apply_overrides(user, start, end, overrides):
                        s, e = max(s, since), min(e, until)
                        if s < e:
                            out.append(OnCall(
                                schedule_id=slug, level=step + 1, user_id=who,
                                user_email=emails.get(who), start=s, end=e,
                                schedule_name=policy.get("name"), team=team.get("name")))
        return out

    def _overrides_of(self, sched: dict[str, Any], endpoint: str
                      ) -> list[tuple[str, str, datetime, datetime]]:
        """A policy schedule's overrides as (original user, replacement, start, end)."""
        overrides = []
        for ov in sched.get("overrides") or []:
            try:
                overrides.append((_username(ov["origOnCallUser"]),
                                  _username(ov["overrideOnCallUser"]),
                                  parse_time(ov["start"]), parse_time(ov["end"])))
            except (KeyError, TypeError, ValueError):
                raise self._malformed(endpoint, "unparseable override") from None
        return overrides

    def _current_only(self, entry: dict[str, Any], covered: set[str], emails: dict[str, str],
                      team: dict[str, Any]) -> list[OnCall]:
        """Policies with no rotation schedule (e.g. a user step) still page someone now."""
        out = []
        for now_entry in entry.get("onCallNow") or []:
            policy = now_entry.get("escalationPolicy") if isinstance(now_entry, dict) else None
            if not isinstance(policy, dict) or policy.get("slug") in covered:
                continue
            for u in now_entry.get("users") or []:
                try:
                    who = _username(u["onCallUser"])
                except (KeyError, TypeError, ValueError):
                    continue
                out.append(OnCall(schedule_id=str(policy.get("slug")), level=1, user_id=who,
                                  user_email=emails.get(who), start=None, end=None,
                                  schedule_name=policy.get("name"), team=team.get("name")))
        return out

    async def create_override(self, schedule_id: str, user_email: str, start: datetime,
                              end: datetime) -> str:
        """Make ``user_email`` cover escalation policy ``schedule_id`` (level 1) for
        [start, end) with scheduled overrides: one per user the policy pages in that window
        (the rotation's users with the overrides already in place applied), each assigned to
        this policy (A4). Returns the publicIds, comma-separated ("" when the user is already
        the one paged throughout).

        An override replaces its original user only while that user is the one paged, so where
        an earlier override (syncd's own for a leader's previous choice, or a person's) already
        replaced the rotation's user, the user it put there is the one replaced: an override of
        the rotation's user would sit under the earlier one and change nothing."""
        if end <= start:
            raise PermanentError("override end must be after start", account=self.account)
        emails = await self._directory()
        username = next((u for u, e in emails.items() if e.lower() == user_email.lower()), None)
        if username is None:
            raise NotFound(f"no Splunk On-Call user with email {user_email!r}",
                           account=self.account, endpoint=f"GET {USERS}")
        team = (await self._policy_team_map()).get(schedule_id)
        if team is None:
            raise NotFound(f"no escalation policy {schedule_id!r}", account=self.account,
                           endpoint=f"GET {POLICIES}")
        now = datetime.now(UTC)
        skip = min(90, max(0, math.floor((start - now) / timedelta(days=1))))
        forward = min(30, max(1, math.ceil((end - now) / timedelta(days=1)) - skip))
        data = await self.http.json("GET", TEAM_SCHEDULE, path={"team": team},
                                    params={"daysForward": forward, "daysSkip": skip, "step": 0})
        originals: list[str] = []
        endpoint = f"GET {TEAM_SCHEDULE}"
        for sched in data.get("schedules") or [] if isinstance(data, dict) else []:
            if (sched.get("policy") or {}).get("slug") != schedule_id:
                continue
            overrides = self._overrides_of(sched, endpoint)
            for item in sched.get("schedule") or []:
                for roll in item.get("rolls") or []:
                    try:
                        user = _username(roll["onCallUser"])
                        rs, re_ = parse_time(roll["start"]), parse_time(roll["end"])
                    except (KeyError, TypeError, ValueError):
                        raise self._malformed(endpoint, "unparseable roll") from None
                    for who, s, e in _apply_overrides(user, rs, re_, overrides):
                        if s < end and e > start and who != username and who not in originals:
                            originals.append(who)
        ids = []
        for orig in originals:
            created = await self.http.json("POST", OVERRIDES, json={
                "username": orig, "timezone": "Etc/UTC",
                "start": stamp(start), "end": stamp(end)})
            sched = require(created, "schedule", dict, endpoint=f"POST {OVERRIDES}",
                            account=self.account)
            pid = require(sched, "publicId", str, endpoint=f"POST {OVERRIDES}",
                          account=self.account)
            await self.http.json("PUT", ASSIGNMENT, path={"publicId": pid,
                                                          "policySlug": schedule_id},
                                 json={"policy": schedule_id, "username": username})
            ids.append(pid)
        return ",".join(ids)

    async def _policy_team_map(self) -> dict[str, str]:
        if self._policy_teams is None:
            endpoint = f"GET {POLICIES}"
            data = await self.http.json("GET", POLICIES)
            rows = require(data, "policies", list, endpoint=endpoint, account=self.account)
            self._policy_teams = {}
            for row in rows:
                try:
                    self._policy_teams[row["policy"]["slug"]] = row["team"]["slug"]
                except (KeyError, TypeError):
                    raise self._malformed(endpoint, "policy without policy/team slug") from None
        return self._policy_teams


# ---------------------------------------------------------------------- helpers


def _time(value: Any, name: str, endpoint: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedResponse(f"{name} is not a string", endpoint=endpoint)
    try:
        return parse_time(value)
    except ValueError:
        raise MalformedResponse(f"{name} {value[:40]!r} is not a timestamp",
                                endpoint=endpoint) from None


def _username(obj: Any) -> str:
    name = obj["username"]
    if not isinstance(name, str) or not name:
        raise ValueError("username")
    return name


def _apply_overrides(user: str, start: datetime, end: datetime,
                     overrides: list[tuple[str, str, datetime, datetime]]
                     ) -> list[tuple[str, datetime, datetime]]:
    """Split one roll by the overrides that replace its user."""
    pieces = [(user, start, end)]
    for orig, repl, os_, oe in overrides:
        nxt = []
        for who, s, e in pieces:
            if who != orig or oe <= s or os_ >= e:
                nxt.append((who, s, e))
                continue
            if s < os_:
                nxt.append((who, s, os_))
            nxt.append((repl, max(s, os_), min(e, oe)))
            if oe < e:
                nxt.append((who, oe, e))
        pieces = nxt
    return pieces


def _fingerprint(inc: Incident, raw: dict[str, Any]) -> str:
    text = "|".join(str(x) for x in (
        inc.state.value, inc.severity, inc.title, inc.updated_at, raw.get("alertCount")))
    return inc.state.value[0].upper() + hashlib.blake2b(text.encode(), digest_size=5).hexdigest()


def _load_cursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        data = json.loads(cursor)
        if (data.get("v") == 1 and isinstance(data.get("seen"), dict)
                and isinstance(data.get("gone"), list)):
            return data
    except (ValueError, AttributeError):
        pass
    log.warning("victorops.cursor_unreadable", action="full read")
    return None


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _latest(incidents: Any) -> Incident | None:
    best = None
    for inc in incidents:
        if best is None or (inc.state != State.RESOLVED, int(inc.external_id)) > (
                best.state != State.RESOLVED, int(best.external_id)):
            best = inc
    return best


def _day_windows(since: datetime, until: datetime, now: datetime) -> list[tuple[int, int]]:
    """(daysSkip, daysForward) reads that together cover [since, until): the team schedule
    answers at most 30 days forward from at most 90 days ahead (spec: ``daysForward`` "30
    max", ``daysSkip`` 90 max), so one read of a longer window (syncd migrate reads 120 days)
    came back with 30 days and the rest looked like nobody on call. Nothing past 120 days is
    readable."""
    day = timedelta(days=1)
    skip = min(90, max(0, math.floor((since - now) / day)))
    last = math.ceil((until - now) / day)
    windows = [(skip, min(30, max(1, last - skip)))]
    while sum(windows[-1]) < last and windows[-1][0] < 90:
        skip = min(90, sum(windows[-1]))
        windows.append((skip, min(30, last - skip)))
    return windows
