"""incident.io client: incidents by updated_at plus escalations for acks, edits, on-call.

incident.io incidents have status categories, not an acknowledged state; acknowledgement lives on
escalations (pages) (vendor-notes 9). The canonical reading (the "incident" model of issue 5):

- ``learning``/``closed``/``declined``/``canceled``/``merged`` -> resolved;
- ``triage``/``live``/``paused`` with a related escalation that is ``acked`` or has an ``acked``
  event -> acknowledged (with ``ack_from_live``, ``live`` alone counts too);
- otherwise triggered.

Change feed: ``GET /v2/incidents?updated_at[gte]=<day>`` (the filter compares dates, so the
client filters by ``updated_at`` itself, notes 4.1) plus ``GET /v2/escalations?updated_at[gte]``
for acks that need not bump the incident (notes 9.2); the ack state of changed open incidents
comes from ``GET /v2/escalations?incident[one_of]=...`` and the dedup key from
``GET /v2/incident_alerts`` (cached). A full resync reads every triage/live/paused incident.

Writes: ack = ``respond {"response": "ack"}`` on each open related escalation. With none,
incident.io may simply not have created it yet (escalations are created asynchronously after an
alert or incident is declared): within :data:`ESCALATION_GRACE` of the record's creation the ack
is retried (RETRY); after that it is a capability gap (REFUSED, parked), never faked with status
moves; see :func:`escalation_may_still_come`. resolve = edit to the first
``closed`` (or, by setting, ``learning``) status; severity = edit ``severity_id`` chosen by
rank. incident.io has no batch endpoints, so ``batch_size`` is 1 for every write (one respond
per escalation, one edit per incident); ``push_size`` lets one ``push`` call carry up to 50
acks so that one escalations lookup serves them all before their responds.

The "alert" model (``model = "alert"``, for incident.io On-call paging) reads a syncd record as
an incident.io alert plus its escalations: :mod:`syncd.vendors.incidentio_alert`. The client
here holds what both models share (HTTP, errors, escalation reads and acks, the poll loop,
on-call, the user directory, webhooks); :class:`IncidentModel` and
:class:`~syncd.vendors.incidentio_alert.AlertModel` say what a record is.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal, Self, Unpack

import httpx
from pydantic import Field, model_validator

from syncd import metrics
from syncd.configtypes import DAY, Url, bounded
from syncd.model import Incident, NewIncident, OnCall, Severity, State
from syncd.ratelimit import Limit
from syncd.secrets import Secret
from syncd.vendors._http import require, retry_after_seconds, short_body
from syncd.vendors.base import (
    AccountSettings,
    Action,
    AuthError,
    Capability,
    KnownKey,
    NotFound,
    Outcome,
    Page,
    PermanentError,
    Push,
    PushResult,
    RateLimited,
    Skipped,
    VendorError,
    Verified,
)
from syncd.vendors.client import ClientBase, ClientOptions, stamp
from syncd.vendors.client import parse_time as _time
from syncd.vendors.incidentio_schedules import ScheduleMigration

OPEN = ("triage", "live", "paused")
RESOLVED = ("learning", "closed", "declined", "canceled", "merged")
ALIASES = {"active": "live", "post-incident": "learning"}  # IncidentSlimV2 vocabulary (notes 11)
ESC_ACKABLE = ("pending", "triggered", "snoozed", "delayed", "pending_repeat")
ESC_ENDED_BY_RESOLVE = ("resolved", "cancelled")
"""Statuses that end an escalation, whose times are not folded into an open record's
``updated_at`` (:func:`with_escalations`). A record's own resolve sets them, but not only it:
``resolved``: escalations resolve when their incident or alert resolves (notes 6; there is no
endpoint to resolve one), and in the incident model an alert that resolves while its incident
stays open resolves the alert's acked escalations too (notes 7, ``auto_cancel_escalations``;
the simulator's ``_resolve_alert``); a reassign resolves the original but creates a new
escalation, whose time is folded. ``cancelled``: every cancel, whoever cancels: an alert's
resolve under ``auto_cancel_escalations`` (notes 7, 9.2; again possibly under an open
incident), our resolve of an alert, a person's ``actions/cancel`` while the record stays open.
Leaving out an end that is not the record's resolve is harmless: nothing syncd reads changes
with it (an ack before it still counts, by its ``acked`` event, and there is nothing left to
ack or to retry). Leaving out the ends a resolve sets is the point: when the incidents (or
alerts) list lags behind the escalations read, still showing the record open, its time is the
open record's, not its resolve's, and the step-back check sees that listing as older than the
resolve (taken as a reopen, it cancelled the other side's owed resolve). Folded still:
``acked`` (the change syncd reads, which need not bump the incident), the ackable statuses (an
escalation appearing late makes a parked ack possible) and ``expired`` (a path running out
unacknowledged while the record is open: never set by a resolve, which leaves ended
escalations alone)."""
MARKER = re.compile(r"\[syncd:([\w.:-]+)\]")  # bracketed: a whole marker, never a prefix
WEBHOOK_TOLERANCE = 5 * 60  # seconds; Svix's WEBHOOK_TOLERANCE_IN_SECONDS (notes §8)
MARKER_URL = "https://syncd.invalid/marker/{marker}"
MAX_PAGES = 10_000
ESC_FILTER_IDS = 50
"""Incidents (or alerts) per escalations lookup: the list's page_size maximum (notes 3), so with
k escalations each a lookup takes k pages, never more calls than smaller chunks would (25 ids
cost 2 calls where one escalation each fits one page of 50). The URL stays ~2.5 KB."""
INTAKE = "/v2/alert_events/http/{alert_source_config_id}"
INTAKE_ENDPOINT = f"POST {INTAKE}"

ESCALATION_GRACE = timedelta(minutes=5)
"""How long after an incident or alert is created syncd waits for incident.io to create its
escalation before an ack with nothing to acknowledge counts as a capability gap. incident.io
creates escalations asynchronously after the alert route or an escalation path runs (notes 6, 7),
normally within seconds; five minutes covers a slow or delayed path without leaving a real gap
(an incident with no escalation path at all) retrying for long."""


def escalation_may_still_come(created_at: datetime | None, now: datetime) -> bool:
    """The one rule for "no open escalation": True = not found *yet* (retry with backoff),
    False = a capability gap (park). The window is bounded by the record's creation time at
    incident.io (a record without one is not given a window). A parked ack is retried anyway
    when a later poll shows the record changed at the vendor (an escalation appeared), see
    ``syncd.ledger.outbox.retry_on_change``."""
    return created_at is not None and now - created_at < ESCALATION_GRACE


def created_of(raw: dict[str, Any]) -> datetime | None:
    try:
        return _time(raw.get("created_at"))
    except ValueError:
        return None


def _note_newest(newest: dict[str, datetime], rid: str, esc: dict[str, Any]) -> None:
    """Note that ``rid`` has an escalation, and its time unless a resolve may have set it
    (:data:`ESC_ENDED_BY_RESOLVE`) or it has none: either is still proof that one exists."""
    try:
        when = (None if esc.get("status") in ESC_ENDED_BY_RESOLVE
                else _time(esc.get("updated_at")))
    except ValueError:
        when = None
    if when is None:
        newest.setdefault(rid, datetime.min.replace(tzinfo=UTC))
        return
    if rid not in newest or when > newest[rid]:
        newest[rid] = when


def with_escalations(inc: Incident, esc_changed: Mapping[str, datetime]) -> Incident:
    """The record's ``updated_at`` includes its escalations' changes: a syncd record is the
    incident (or alert) *and* its escalations, and creating or acking an escalation need not
    bump the incident (notes 9.2). So an escalation that appears late is a change the engine
    sees, and retries an ack it had to park or postpone. Only the escalations of open records
    are read, and not those a resolve ends (:data:`ESC_ENDED_BY_RESOLVE`)."""
    when = esc_changed.get(inc.external_id)
    if when is None or (inc.updated_at is not None and inc.updated_at >= when):
        return inc
    return dataclasses.replace(inc, updated_at=when)


BASE_CAPABILITIES = (Capability.ACK | Capability.RESOLVE | Capability.CREATE
                     | Capability.ONCALL_READ | Capability.OVERRIDE_WRITE)
INCIDENT_CAPABILITIES = BASE_CAPABILITIES | Capability.SEVERITY_READ | Capability.SEVERITY_WRITE
ALERT_CAPABILITIES = BASE_CAPABILITIES  # alerts have no severity (notes 7, 9.1)


def _stamp(dt: datetime) -> str:
    return stamp(dt, "us")


class IncidentIOSettings(AccountSettings):
    """``[accounts.NAME]`` keys for an incident.io organisation."""

    vendor: Literal["incidentio"]
    base_url: Url = "https://api.incident.io"
    api_key: Secret = Field(description="API key (Settings -> API keys), sent as Bearer")
    resolve_status: Literal["closed", "learning"] = Field(
        "closed", description="resolve to the first closed status (skips the post-incident "
        "flow; needs post_incident_flow_opt_out) or the first learning status")
    notify_incident_channel: bool = Field(
        False, description="let incident.io post syncd's edits to the incident Slack channel")
    ack_from_live: bool = Field(
        False, description="treat live (Active) incidents as acknowledged, for orgs without "
        "incident.io On-call")
    visibility: Literal["public", "private"] = Field(
        "public", description="visibility of incidents syncd creates")
    page_size: int = Field(250, ge=1, le=250, description="page_size for GET /v2/incidents")
    change_overlap: float = bounded(
        300.0, 0, DAY, "seconds the change feed reaches back before the cursor")
    rate_limit_per_minute: float = bounded(
        1200.0, 1, 12000, "documented: a 1200 token bucket refilling 20/s per key")
    model: Literal["incident", "alert"] = Field(
        "incident", description="what a syncd record is: an incident.io incident (acks from its "
        "escalations) or an alert and its escalations (incident.io On-call paging)")
    alert_source_config_id: str | None = Field(
        None, min_length=1, description='model = "alert": the HTTP alert source syncd creates '
        "alerts through (POST /v2/alert_events/http/{id})")
    alert_source_token: Secret | None = Field(
        None, description='model = "alert": that alert source\'s own secret (not the API key)')
    alert_sources: list[str] = Field(
        default_factory=list, description='model = "alert": alert source ids whose alerts are '
        "read (empty: every source)")
    webhook_secret: Secret | None = Field(
        None, description="webhook endpoint signing secret (Svix, whsec_... or raw): signed "
        "deliveries to /webhooks/ACCOUNT trigger an immediate poll")

    @model_validator(mode="after")
    def _alert_model_keys(self) -> Self:
        keys = ("alert_source_config_id", "alert_source_token")
        if self.model == "alert":
            missing = [k for k in keys if getattr(self, k) is None]
            if missing:
                raise ValueError(f'model = "alert" needs {" and ".join(missing)} (the HTTP '
                                 "alert source syncd creates alerts through)")
        else:
            extra = [k for k in (*keys, "alert_sources") if getattr(self, k)]
            if extra:
                raise ValueError(f'{", ".join(extra)} only apply with model = "alert"')
        return self


class RecordModel:
    """What a syncd record is in an incident.io account (``settings.model``): how records are
    read, found again from changed escalations, written besides acks, and created. The client
    holds one and does everything else itself."""

    kind: ClassVar[str]  # "incident" or "alert": the escalations' related_<kind>s, messages

    def __init__(self, client: IncidentIOClient) -> None:
        self.client = client
        self.http = client.http
        self.settings = client.settings
        self.account = client.account

    async def _show(self, record_id: str) -> dict[str, Any]:
        """One record by id: ``GET /v2/<kind>s/{id}`` answers ``{"<kind>": {...}}``."""
        route = f"/v2/{self.kind}s/{{id}}"
        endpoint = f"GET {route}"
        data = await self.http.json("GET", route, path={"id": record_id})
        self.client._check_failure(data, endpoint)
        return require(data, self.kind, dict, endpoint=endpoint, account=self.account)

    def pages(self, since: datetime | None) -> AsyncIterator[Page]:
        """Records changed since ``since`` (every open one when None), one Page per page."""
        raise NotImplementedError

    async def related(self, escalations: list[dict[str, Any]], seen: set[str]) -> Page | None:
        """The records of changed escalations that ``seen`` lacks (acks need not bump them)."""
        raise NotImplementedError

    async def resolved_and_created(self, external_id: str) -> tuple[bool, datetime | None]:
        """Whether the record is resolved, and when incident.io created it (one read)."""
        raise NotImplementedError

    async def write(self, action: Action, p: Push) -> PushResult:
        """Any action but an acknowledgement (acks are escalation responds, shared)."""
        raise NotImplementedError

    async def create(self, new: NewIncident) -> Incident:
        raise NotImplementedError

    async def find_created(self, marker: str) -> Incident | None:
        raise NotImplementedError

    async def _build(self, raws: list[Any], endpoint: str
                     ) -> tuple[list[Incident], list[Skipped]]:
        """One page of raw records as records, with what the model reads besides them."""
        raise NotImplementedError

    def _parse_all(self, raws: list[Any], endpoint: str, parse: Callable[[Any], Incident]
                   ) -> tuple[list[Incident], list[Skipped]]:
        """Every raw record parsed; one that cannot be trusted is counted and skipped."""
        incidents, skipped = [], []
        for raw in raws:
            try:
                incidents.append(parse(raw))
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                rid = raw.get("id") if isinstance(raw, dict) else None
                metrics.MALFORMED.labels(self.account, endpoint).inc()
                skipped.append(Skipped(endpoint, str(exc), rid if isinstance(rid, str) else None))
        return incidents, skipped

    async def _one(self, raw: dict[str, Any], endpoint: str) -> Incident:
        incidents, skipped = await self._build([raw], endpoint)
        if not incidents:
            raise self.client._malformed(endpoint,
                                         skipped[0].reason if skipped else f"bad {self.kind}")
        return incidents[0]


class IncidentIOClient(ClientBase, ScheduleMigration):
    """One incident.io organisation (one API key) as a syncd account, and a migration source
    and target (:mod:`syncd.vendors.incidentio_schedules`)."""

    vendor: ClassVar[str] = "incidentio"
    Settings: ClassVar[type[IncidentIOSettings]] = IncidentIOSettings
    # The default (incident) model's; ``capabilities_for`` answers per ``settings.model``.
    capabilities: ClassVar[Capability] = INCIDENT_CAPABILITIES
    limits: ClassVar[Mapping[str, Limit]] = {
        "*": Limit(1200, 60.0, burst=1200),
        "POST /v2/escalations": Limit(60, 60.0),
        INTAKE_ENDPOINT: Limit(120, 60.0),  # per alert source (notes 2, 7)
    }
    # The real write granularity: one respond per escalation, one edit per incident.
    batch_size: ClassVar[Mapping[Action, int]] = {
        Action.ACKNOWLEDGE: 1,
        Action.RESOLVE: 1,
        Action.SET_SEVERITY: 1,
    }
    # Acks handed to one ``push``: one escalations lookup for all of them, then their responds.
    push_size: ClassVar[Mapping[Action, int]] = {Action.ACKNOWLEDGE: ESC_FILTER_IDS}
    default_severity_map: ClassVar[Mapping[str, Severity]] = {
        "Critical": Severity.SEV1,
        "Major": Severity.SEV2,
        "Minor": Severity.SEV3,
    }
    settings: IncidentIOSettings
    wants_key_cache: ClassVar[bool] = True  # incidents' alert dedup keys, "no alert" too

    @classmethod
    def limits_for(cls, settings: IncidentIOSettings) -> dict[str, Limit]:
        per_min = settings.rate_limit_per_minute
        return {**cls.limits, "*": Limit(per_min, 60.0, burst=per_min)}

    @classmethod
    def capabilities_for(cls, settings: IncidentIOSettings) -> Capability:
        return ALERT_CAPABILITIES if settings.model == "alert" else INCIDENT_CAPABILITIES

    @classmethod
    def batch_size_for(cls, settings: IncidentIOSettings) -> Mapping[Action, int]:
        if settings.model == "alert":  # alerts have no severity to set
            return {a: n for a, n in cls.batch_size.items() if a is not Action.SET_SEVERITY}
        return cls.batch_size

    def __init__(self, account: str, settings: IncidentIOSettings,
                 **options: Unpack[ClientOptions]) -> None:
        super().__init__(account, settings, **options)
        self._severities: list[dict[str, Any]] | None = None
        self._seen: dict[str, str] = {}  # the cursor's: "[esc:]id" -> updated_at delivered
        self._listed: dict[str, str] = {}  # the same, let through by this poll
        self._statuses: list[dict[str, Any]] | None = None
        self.http = self._session(
            settings.base_url,
            {"authorization": f"Bearer {settings.api_key.get_secret_value()}",
             "accept": "application/json"},
            classify=self._classify,
        )
        self.records: RecordModel
        if settings.model == "alert":
            from syncd.vendors.incidentio_alert import AlertModel  # imports this module

            self.records = AlertModel(self)
        else:
            self.records = IncidentModel(self)

    def verify_webhook(self, headers: Mapping[str, str], body: bytes,
                       now: float | None = None) -> Verified | None:
        """A Svix-signed delivery (notes §8), or None: ``webhook-signature`` holds space-separated
        ``v1,<base64>`` entries, each HMAC-SHA256 over ``"{webhook-id}.{webhook-timestamp}.
        {body}"`` with the base64 secret (``whsec_`` prefix optional); the timestamp must be
        within 5 minutes, Svix's tolerance, so a captured delivery cannot be replayed later.

        Every header comes from anyone who can reach the port: the id must be ASCII, the
        timestamp ASCII digits of a sane length, and signatures are compared as bytes, so no
        header value raises (a non-ASCII one used to end in a TypeError and a 500). The HMAC is
        computed before the headers are judged, so a refusal costs what the intake's refusal of
        an unknown name costs (:mod:`syncd.http.intake`): answer times do not tell which names
        are incident.io accounts.

        The result carries the id the HMAC covered: Svix keeps ``webhook-id`` across retries and
        a new event gets a new one (notes §8), while private-incident events carry only
        ``{"id"}`` (spec ``WebhookPrivateResourceV2``), so the body alone does not tell two
        updates of one incident apart."""
        if self.settings.webhook_secret is None:
            return None
        msg_id = headers.get("webhook-id") or headers.get("svix-id") or ""
        stamp = headers.get("webhook-timestamp") or headers.get("svix-timestamp") or ""
        sigs = headers.get("webhook-signature") or headers.get("svix-signature") or ""
        secret = self.settings.webhook_secret.get_secret_value().removeprefix("whsec_")
        try:
            key = base64.b64decode(secret, validate=True)
        except ValueError:
            key = secret.encode()
        signed = f"{msg_id}.{stamp}.".encode("utf-8", "replace") + body
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
        if not key:
            return None
        if not (msg_id.isascii() and stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
            return None
        if abs((time.time() if now is None else now) - int(stamp)) > WEBHOOK_TOLERANCE:
            return None
        # Rotation sends two signatures; more than eight is padding and is not looked at.
        verified = any(
            hmac.compare_digest(part[3:].encode("utf-8", "replace"), expected)
            for part in sigs.split()[:8] if part.startswith("v1,")
        )
        return Verified(msg_id.encode()) if verified else None

    async def aclose(self) -> None:
        await self.http.aclose()

    # ------------------------------------------------------------------ errors

    def _classify(self, response: httpx.Response, endpoint: str) -> VendorError | None:
        """Read the documented envelope ``{type, status, errors[{code, message}]}``."""
        status = response.status_code
        if status < 400:
            return None
        try:
            body = response.json()
        except ValueError:
            body = None
        errors = body.get("errors") if isinstance(body, dict) else None
        first = errors[0] if isinstance(errors, list) and errors and isinstance(
            errors[0], dict) else {}
        message = str(first.get("message") or short_body(response) or f"HTTP {status}")
        code = first.get("code")
        if code:
            message = f"{code}: {message}"
        if status == 429:
            return RateLimited(message, retry_after=self._retry_after(response, body),
                               status=status)
        if status in (401, 403):
            return AuthError(message, status=status)
        if status == 404:
            return NotFound(message, status=status)
        if 400 <= status < 500 and status != 408:
            return PermanentError(message, status=status)
        return None

    @staticmethod
    def _retry_after(response: httpx.Response, body: Any) -> float:
        """Retry-After seconds (or HTTP-date); else the body's RFC 3339/RFC 1123 retry_after."""
        wait = retry_after_seconds(response.headers.get("retry-after"))
        if wait is not None:
            return wait
        rl = body.get("rate_limit") if isinstance(body, dict) else None
        value = rl.get("retry_after") if isinstance(rl, dict) else None
        if isinstance(value, str):
            try:
                return max(0.0, (_time(value) - datetime.now(UTC)).total_seconds())
            except ValueError:
                wait = retry_after_seconds(value)
                if wait is not None:
                    return wait
        return 1.0

    def _check_failure(self, data: Any, endpoint: str) -> None:
        """A 2xx carrying the error envelope is a failure, not data."""
        if isinstance(data, dict) and "errors" in data and "type" in data:
            raise self._malformed(endpoint, f"2xx carrying an error: {str(data)[:200]}")

    # ------------------------------------------------------------------ catalogues

    async def severities(self) -> list[dict[str, Any]]:
        """GET /v1/severities, cached; ranked worst first (higher rank is worse, notes 4.3)."""
        if self._severities is None:
            endpoint = "GET /v1/severities"
            data = await self.http.json("GET", "/v1/severities")
            self._check_failure(data, endpoint)
            rows = require(data, "severities", list, endpoint=endpoint, account=self.account)
            good = [r for r in rows if isinstance(r, dict) and isinstance(r.get("id"), str)
                    and isinstance(r.get("name"), str) and isinstance(r.get("rank"), int)]
            if not good:
                raise self._malformed(endpoint, "no usable severities")
            self._severities = sorted(good, key=lambda r: -r["rank"])
        return self._severities

    async def statuses(self) -> list[dict[str, Any]]:
        if self._statuses is None:
            endpoint = "GET /v1/incident_statuses"
            data = await self.http.json("GET", "/v1/incident_statuses")
            self._check_failure(data, endpoint)
            rows = require(data, "incident_statuses", list, endpoint=endpoint,
                           account=self.account)
            self._statuses = sorted(
                (r for r in rows if isinstance(r, dict) and isinstance(r.get("id"), str)
                 and isinstance(r.get("category"), str) and isinstance(r.get("rank"), int)),
                key=lambda r: r["rank"])
        return self._statuses

    def _canonical_severity(self, sev: dict[str, Any], ranked: list[dict[str, Any]]
                            ) -> Severity:
        """settings.severity_map (by name or id) first, then the default names, then rank."""
        for key in (sev.get("id"), sev.get("name")):
            if isinstance(key, str) and key in self.settings.severity_map:
                return self.settings.severity_map[key]
        name = sev.get("name")
        if isinstance(name, str) and name in self.default_severity_map:
            return self.default_severity_map[name]
        ids = [r["id"] for r in ranked]
        if sev.get("id") in ids:
            return Severity(f"sev{min(5, ids.index(sev['id']) + 1)}")
        rank = sev.get("rank")
        if isinstance(rank, int):
            position = sum(1 for r in ranked if r["rank"] > rank)
            return Severity(f"sev{min(5, position + 1)}")
        raise ValueError(f"unknown severity {name!r}")

    async def _severity_id(self, target: Severity) -> str:
        """The org severity for a canonical one: exact match, else the closest less severe,
        else the least severe (sev4/sev5 land on Minor with the defaults)."""
        return self._closest_severity(await self.severities(), target)[0]

    def _closest_severity(self, ranked: list[dict[str, Any]], target: Severity
                          ) -> tuple[str, Severity]:
        """The org severity :meth:`_severity_id` picks for ``target``: (id, its canonical)."""
        mapped = [(r["id"], self._canonical_severity(r, ranked)) for r in ranked]
        exact = [m for m in mapped if m[1] == target]
        if exact:
            return exact[0]
        return min(mapped, key=lambda m: (abs(m[1].level - target.level), -m[1].level))

    def severity_lands_as(self, severity: Severity) -> Severity:
        """The canonical of the org severity a push of ``severity`` sets (with the default
        three, sev4/sev5 land on Minor = sev3). The severities are cached by the push itself;
        before any was read, ``severity`` as given."""
        if not self._severities:
            return severity
        return self._closest_severity(self._severities, severity)[1]

    async def _list(self, route: str, key: str, params: dict[str, Any],
                    meta_out: dict[str, Any] | None = None, *, write: bool = False
                    ) -> AsyncIterator[list[Any]]:
        """Every page of a cursor-paged list: stop on no ``after`` or an empty page.
        ``meta_out`` is updated with each page's ``pagination_meta`` before the page is
        yielded (``total_record_count`` lets a caller weigh the pages left). ``write``: the
        read is part of a push and has its budget priority."""
        endpoint = f"GET {route}"
        after: str | None = None
        for _ in range(MAX_PAGES):
            query = dict(params)
            if after:
                query["after"] = after
            data = await self.http.json("GET", route, params=query, write=write)
            self._check_failure(data, endpoint)
            items = require(data, key, list, endpoint=endpoint, account=self.account)
            meta = data.get("pagination_meta")
            if meta_out is not None and isinstance(meta, dict):
                meta_out.update(meta)
            yield items
            nxt = meta.get("after") if isinstance(meta, dict) else None
            if not items or not isinstance(nxt, str) or not nxt or nxt == after:
                return
            after = nxt
        raise self._malformed(endpoint, f"more than {MAX_PAGES} pages")

    async def _acked(self, incident_ids: Sequence[str], by: str = "incident",
                     newest: dict[str, datetime] | None = None, *, push: bool = False
                     ) -> tuple[set[str], dict[str, list[str]]]:
        """Which incidents (``by="alert"``: alerts) have an acked escalation, and each one's
        still-ackable escalations; ``newest`` collects each one's latest escalation change
        but those a resolve sets (:data:`ESC_ENDED_BY_RESOLVE`).
        ``push``: the lookup of an ack push, which has the writes' budget priority (a poll's
        reads wait for it too, or a storm's pushes would stall at every lookup while a poll
        reads)."""
        acked: set[str] = set()
        ackable: dict[str, list[str]] = {}
        endpoint = "GET /v2/escalations"
        for i in range(0, len(incident_ids), ESC_FILTER_IDS):
            chunk = list(incident_ids[i:i + ESC_FILTER_IDS])
            params = {f"{by}[one_of]": chunk, "page_size": 50}
            async for items in self._list("/v2/escalations", "escalations", params,
                                          write=push):
                for esc in items:
                    if not isinstance(esc, dict) or not isinstance(esc.get("id"), str):
                        metrics.MALFORMED.labels(self.account, endpoint).inc()
                        continue
                    related = [r.get("id") for r in esc.get(f"related_{by}s") or []
                               if isinstance(r, dict)]
                    events = esc.get("events") if isinstance(esc.get("events"), list) else []
                    was_acked = esc.get("status") == "acked" or any(
                        isinstance(e, dict) and e.get("event") == "acked" for e in events)
                    for rid in related:
                        if rid not in chunk:
                            continue
                        if newest is not None:
                            _note_newest(newest, rid, esc)
                        if was_acked:
                            acked.add(rid)
                        if esc.get("status") in ESC_ACKABLE:
                            ackable.setdefault(rid, []).append(esc["id"])
        return acked, ackable

    # ------------------------------------------------------------------ poll

    async def poll(self, cursor: str | None, *, full: bool = False) -> AsyncIterator[Page]:
        """Records changed since the cursor, then the records of changed escalations.

        The cursor is ``{"since", "seen"}``: the feeds reach back ``change_overlap`` seconds
        before ``since`` is advanced to (list lag, clock skew), and ``seen`` holds the
        ``updated_at`` of every record and escalation already delivered inside that overlap,
        so a record is delivered (and enriched with lookups) once per change, not once per
        poll. ``since`` advances with our clock whether or not anything changed."""
        since: datetime | None = None
        self._seen = {}
        if cursor and not full:
            try:
                data = json.loads(cursor)
                # A cursor written under the other model means a full read of this one.
                if data.get("model", "incident") == self.settings.model:
                    since = _time(data["since"])
                    seen = data.get("seen", {})
                    if isinstance(seen, dict):
                        self._seen = {k: v for k, v in seen.items() if isinstance(v, str)}
            except (ValueError, KeyError, TypeError, AttributeError):
                since = None  # an unreadable cursor means a full read, never a crash
        started = self._clock()
        self._listed = {}
        pending: Page | None = None
        seen: set[str] = set()
        async for page in self.records.pages(since):
            for inc in page.incidents:
                seen.add(inc.external_id)
            if pending is not None:
                yield pending
            pending = page
        if since is not None:
            # Acks live on escalations and need not bump the incident or alert: a second feed.
            changed = await self._changed_escalations(since)
            page = await self.records.related(changed, seen)
            if page is not None:
                if pending is not None:
                    yield pending
                pending = page
        next_since = started - timedelta(seconds=self.settings.change_overlap)
        if since is not None and next_since < since:
            next_since = since
        if pending is None:
            pending = Page()
        keep = {k: v for k, v in {**self._seen, **self._listed}.items()
                if not self._older({"updated_at": v}, next_since)}
        state: dict[str, Any] = {"v": 2, "since": _stamp(next_since), "seen": keep}
        if self.settings.model != "incident":
            state["model"] = self.settings.model
        pending.cursor = json.dumps(state)
        yield pending

    def _fresh(self, items: list[Any], since: datetime | None, prefix: str = "") -> list[Any]:
        """``items`` without those not changed since ``since`` or already delivered at this
        ``updated_at`` (the cursor's ``seen``); remembers what it let through for the cursor.
        An item without a usable id or timestamp passes: its parser reports it."""
        out = []
        for raw in items:
            if since is not None and self._older(raw, since):
                continue
            rid = raw.get("id") if isinstance(raw, dict) else None
            at = raw.get("updated_at") if isinstance(raw, dict) else None
            if isinstance(rid, str) and isinstance(at, str):
                if self._seen.get(prefix + rid) == at:
                    continue
                self._listed[prefix + rid] = at
            out.append(raw)
        return out

    async def _changed_escalations(self, since: datetime) -> list[dict[str, Any]]:
        """Escalations whose ``updated_at`` is after ``since`` (the filter compares days) and
        that were not delivered at that ``updated_at`` already."""
        changed: list[dict[str, Any]] = []
        esc_params = {"updated_at[gte]": since.date().isoformat(), "page_size": 50}
        async for items in self._list("/v2/escalations", "escalations", esc_params):
            for esc in items:
                if not isinstance(esc, dict):
                    continue
                try:
                    _time(esc.get("updated_at"))
                except ValueError:
                    metrics.MALFORMED.labels(self.account, "GET /v2/escalations").inc()
                    continue
                changed.extend(self._fresh([esc], since, "esc:"))
        return changed

    @staticmethod
    def _older(raw: Any, since: datetime) -> bool:
        try:
            return _time(raw.get("updated_at")) <= since
        except (ValueError, AttributeError):
            return False  # keep it: the model's parser reports it as skipped

    # ------------------------------------------------------------------ push

    async def push(self, action: Action, pushes: Sequence[Push]) -> list[PushResult]:
        if not pushes:
            return []
        if action not in self.batch_size:
            raise PermanentError(f"incident.io cannot {action.value}", account=self.account)
        size = max(self.batch_size[action], self.push_size.get(action, 1))
        results: list[PushResult] = []
        for i in range(0, len(pushes), size):
            batch = list(pushes[i:i + size])
            if action is Action.ACKNOWLEDGE:
                results.extend(await self._ack(batch))
            else:
                for p in batch:
                    results.append(await self.records.write(action, p))
        return results

    async def _ack(self, batch: list[Push]) -> list[PushResult]:
        ids = list(dict.fromkeys(p.external_id for p in batch))
        escalated: dict[str, datetime] = {}
        acked, ackable = await self._acked(ids, self.records.kind, escalated, push=True)
        out = []
        for p in batch:
            eid = p.external_id
            targets = ackable.get(eid, [])
            if not targets:
                if eid in acked:
                    out.append(PushResult(eid, Outcome.ALREADY))
                    continue
                try:
                    out.append(await self._nothing_to_ack(eid, escalated=eid in escalated))
                except NotFound as exc:
                    out.append(PushResult(eid, Outcome.REFUSED, exc.message))
                continue
            outcome, message = Outcome.DONE, ""
            for esc_id in targets:
                try:
                    # Acking is set-to-value: a repeat is harmless, so retrying is safe.
                    await self.http.request(
                        "POST", "/v2/escalations/{escalation_id}/actions/respond",
                        path={"escalation_id": esc_id}, json={"response": "ack"},
                        idempotent=True)
                except (PermanentError, NotFound) as exc:
                    outcome, message = Outcome.REFUSED, exc.message
            if outcome is Outcome.REFUSED and eid in acked:
                outcome = Outcome.ALREADY
            out.append(PushResult(eid, outcome, message))
        return out

    async def _nothing_to_ack(self, eid: str, *, escalated: bool) -> PushResult:
        """An ack for a record without an open escalation: already resolved, not yet
        escalated (retry), or a capability gap (refused): its escalations all ended
        (``escalated``), or none came within :func:`escalation_may_still_come`'s window."""
        what = self.records.kind
        resolved, created = await self.records.resolved_and_created(eid)
        if resolved:
            # Never move a resolved record backwards with a late ack.
            return PushResult(eid, Outcome.ALREADY, f"{what} already resolved")
        if not escalated and escalation_may_still_come(created, self._clock()):
            return PushResult(eid, Outcome.RETRY, f"no escalation for this {what} yet "
                              "(incident.io creates them asynchronously); retrying")
        return PushResult(eid, Outcome.REFUSED,
                          "no open escalation to acknowledge (capability gap)")

    # ------------------------------------------------------------------ create

    async def create(self, new: NewIncident) -> Incident:
        return await self.records.create(new)

    async def find_created(self, marker: str) -> Incident | None:
        return await self.records.find_created(marker)

    # ------------------------------------------------------------------ on-call

    async def oncall(self, since: datetime, until: datetime) -> list[OnCall]:
        """Final schedule entries per schedule (level 1: a schedule has no levels)."""
        out: list[OnCall] = []
        async for items in self._list("/v2/schedules", "schedules", {"page_size": 100}):
            for sched in items:
                if not isinstance(sched, dict) or not isinstance(sched.get("id"), str):
                    metrics.MALFORMED.labels(self.account, "GET /v2/schedules").inc()
                    continue
                name = sched.get("name") if isinstance(sched.get("name"), str) else None
                out.extend(await self._entries(sched["id"], name, since, until))
        return out

    async def _entries(self, sid: str, name: str | None, since: datetime, until: datetime
                       ) -> list[OnCall]:
        out: list[OnCall] = []
        async for page in self._entry_pages(sid, since, until):
            for uid, a, b, user in self._rows(page, "final"):
                email = user.get("email") if isinstance(user.get("email"), str) else None
                if email is None:
                    email = await self._email(uid)
                if out and out[-1].user_id == uid and out[-1].end == a:
                    a = out.pop().start or a
                out.append(OnCall(sid, 1, uid, email, max(a, since), min(b, until),
                                  schedule_name=name))
        return out

    async def _email(self, uid: str) -> str | None:
        if uid not in self._emails:
            try:
                data = await self.http.json("GET", "/v2/users/{id}", path={"id": uid})
            except NotFound:
                return None
            user = data.get("user") if isinstance(data, dict) else None
            email = user.get("email") if isinstance(user, dict) else None
            if not isinstance(email, str):
                return None
            self._emails[uid] = email
        return self._emails[uid]

    async def _read_directory(self) -> dict[str, str]:
        """user id -> email of every active user (``GET /v2/users``, page_size up to 10000,
        notes 5)."""
        endpoint = "GET /v2/users"
        found: dict[str, str] = {}
        after: str | None = None
        for _ in range(MAX_PAGES):
            params: dict[str, Any] = {"page_size": 10000}
            if after:
                params["after"] = after
            data = await self.http.json("GET", "/v2/users", params=params)
            for user in require(data, "users", list, endpoint=endpoint, account=self.account):
                if isinstance(user, dict) and isinstance(user.get("id"), str) \
                        and isinstance(user.get("email"), str):
                    found[user["id"]] = user["email"]
            meta = data.get("pagination_meta")
            after = meta.get("after") if isinstance(meta, dict) else None
            if not after:
                break
        return found

    async def create_override(self, schedule_id: str, user_email: str, start: datetime,
                              end: datetime) -> str:
        """POST /v2/schedule_overrides on every layer of every rotation that has someone else
        on call in [start, end) (else on the first rotation's first layer); the ids
        comma-separated.

        A schedule's rotations page their people side by side ("final" has an entry per
        rotation, notes 5), and a rotation's layers are its concurrent shifts, one person each
        (``ScheduleRotationV2.layers`` "controls how many people are on-call concurrently").
        An override "applies to" one layer of one rotation (``ScheduleOverrideV2.layer_id``)
        and replaces that layer's person only: an override on the first rotation alone, or on
        a rotation's first layer alone, left the others' people paged as well. Entries do not
        say which layer they belong to (``layer_id`` was dropped from ``ScheduleEntryV2``,
        notes 5), so every layer of such a rotation is overridden: on a layer that already
        pages the person the override changes nothing. Only the layers of the rotation's
        versions live in the window (a version applies "from its ``effective_from`` until the
        next version's", spec ``ScheduleRotationV2``): the vendor may refuse a layer of another
        version, after an earlier layer's write landed. The fallback is the first layer of the
        first rotation's version live at ``start``.

        Several writes: one that fails after another landed leaves part of the override live
        (the dispatcher records it unknown, see ``Dispatcher.push_override``)."""
        endpoint = "POST /v2/schedule_overrides"
        data = await self.http.json("GET", "/v2/schedules/{id}", path={"id": schedule_id})
        sched = require(data, "schedule", dict, endpoint="GET /v2/schedules/{id}",
                        account=self.account)
        try:
            layers, fallback = _live_layers(sched["config"]["rotations"], start, end)
        except (KeyError, TypeError, ValueError):
            layers, fallback = {}, None
        if not layers or fallback is None:  # (fallback is set whenever layers are)
            raise PermanentError("schedule has no rotation/layer to override",
                                 account=self.account, endpoint=endpoint)
        others: list[str] = []
        async for page in self._entry_pages(schedule_id, start, end):
            for entry in page.get("final") or []:
                user = entry.get("user") if isinstance(entry, dict) else None
                email = (user.get("email") or self._emails.get(user.get("id"))
                         if isinstance(user, dict) else None)
                rid = entry.get("rotation_id") if isinstance(entry, dict) else None
                if (rid in layers and rid not in others and isinstance(email, str)
                        and email.lower() != user_email.lower()):
                    others.append(rid)
        targets = [(rid, lid) for rid in layers if rid in others for lid in layers[rid]] or [
            fallback]
        ids = []
        for rid, lid in targets:
            # Not idempotent: a blind retry could stack overrides (the layer carve would
            # absorb an identical one, but we do not rely on it).
            data = await self.http.json("POST", "/v2/schedule_overrides", json={
                "schedule_id": schedule_id, "rotation_id": rid, "layer_id": lid,
                "start_at": _stamp(start), "end_at": _stamp(end),
                "user": {"email": user_email}})
            override = data.get("override") if isinstance(data, dict) else None
            oid = override.get("id") if isinstance(override, dict) else None
            if not isinstance(oid, str) or not oid:
                raise self._malformed(endpoint, "answer carries no override id")
            ids.append(oid)
        return ",".join(ids)


def _live_layers(rotations: Any, start: datetime, end: datetime
                 ) -> tuple[dict[str, list[str]], tuple[str, str] | None]:
    """Rotation id -> the layer ids of its versions live in ``[start, end)`` (a rotation is
    listed once per version; each applies from its ``effective_from``, the first from always,
    until the next version's), and the fallback target: the first layer of the version of the
    first rotation live at ``start``. KeyError/TypeError/ValueError for a malformed config."""
    versions: dict[str, list[tuple[datetime | None, list[str]]]] = {}
    for r in rotations:
        since = _time(r["effective_from"]) if r.get("effective_from") else None
        versions.setdefault(r["id"], []).append((since, [lay["id"] for lay in r["layers"]]))
    live: dict[str, list[str]] = {}
    fallback: tuple[str, str] | None = None
    for rid, rows in versions.items():
        rows.sort(key=lambda v: v[0] or datetime.min.replace(tzinfo=UTC))
        for i, (since, ids) in enumerate(rows):
            until = rows[i + 1][0] if i + 1 < len(rows) else None
            if (since is None or since < end) and (until is None or until > start):
                mine = live.setdefault(rid, [])
                mine += [lid for lid in ids if lid not in mine]
            if (fallback is None and ids and (since is None or since <= start)
                    and (until is None or until > start)):
                fallback = (rid, ids[0])
    live = {rid: ids for rid, ids in live.items() if ids}
    if fallback is None and live:  # no version without a date (not as the spec has it)
        fallback = next((rid, ids[0]) for rid, ids in live.items())
    return live, fallback


class IncidentModel(RecordModel):
    """The default model: a syncd record is an incident.io incident, acknowledged through its
    escalations (the reading at the top of this module)."""

    kind = "incident"


    def _parse(self, raw: Any, ranked: list[dict[str, Any]], acked: set[str]) -> Incident:
        if not isinstance(raw, dict):
            raise TypeError(f"incident is {type(raw).__name__}, not an object")
        iid = raw.get("id")
        if not isinstance(iid, str) or not iid:
            raise ValueError("missing id")
        name = raw.get("name")
        if not isinstance(name, str):
            raise ValueError("missing name")
        status = raw.get("incident_status")
        category = status.get("category") if isinstance(status, dict) else None
        category = ALIASES.get(category, category) if isinstance(category, str) else None
        if category in RESOLVED:
            state = State.RESOLVED
        elif category in OPEN:
            live_ack = self.settings.ack_from_live and category == "live"
            state = State.ACKNOWLEDGED if (iid in acked or live_ack) else State.TRIGGERED
        else:
            raise ValueError(f"unknown status category {category!r}")
        sev = raw.get("severity")
        severity = self.client._canonical_severity(sev, ranked) if isinstance(sev, dict) else None
        keys: dict[str, str] = {}
        known = self.client.key_cache.known(iid)
        if known is not None and known.value is not None:
            keys["dedup"] = known.value
        summary = raw.get("summary")
        found = MARKER.search(summary) if isinstance(summary, str) else None
        if found:
            keys["marker"] = found.group(1)
        reference = raw.get("reference")
        permalink = raw.get("permalink")
        return Incident(
            external_id=iid, state=state, title=name, severity=severity, keys=keys,
            created_at=_time(raw.get("created_at")), updated_at=_time(raw.get("updated_at")),
            url=permalink if isinstance(permalink, str) else None,
            number=reference if isinstance(reference, str) else None,
            ack_sticky=not self.settings.ack_from_live,
        )

    async def _dedup_keys(self, raws: Sequence[Any]) -> None:
        """Alert dedup keys via GET /v2/incident_alerts, remembered in the client's key cache
        (the ledger, across restarts): a found key never changes, and "no alert" is remembered
        too, looked up again only once the incident has changed since (an alert may have been
        attached to it). So a full resync of unchanged incidents costs no lookups."""
        endpoint = "GET /v2/incident_alerts"
        cache = self.client.key_cache
        found: dict[str, KnownKey] = {}
        for raw in raws:
            iid = raw.get("id") if isinstance(raw, dict) else None
            if not isinstance(iid, str) or iid in found:
                continue
            known = cache.known(iid)
            if known is not None and (known.value is not None
                                      or not self._changed_since(raw, known.checked_at)):
                continue
            checked_at = self._version(raw)
            key: str | None = None
            async for items in self.client._list("/v2/incident_alerts", "incident_alerts",
                                                 {"incident_id": iid, "page_size": 50}):
                for row in items:
                    alert = row.get("alert") if isinstance(row, dict) else None
                    value = alert.get("deduplication_key") if isinstance(alert, dict) else None
                    if isinstance(value, str) and value:
                        key = key or value
                    else:
                        metrics.MALFORMED.labels(self.account, endpoint).inc()
                if key is not None:
                    break
            found[iid] = KnownKey(key, checked_at)
        await cache.remember(found)

    def _version(self, raw: dict[str, Any]) -> datetime:
        """When a lookup's answer stops being news: the incident's own ``updated_at`` (vendor
        time, so a clock skew between us and incident.io can neither repeat nor hide a lookup);
        our clock only for a record without a readable one."""
        try:
            return _time(raw.get("updated_at"))
        except ValueError:
            return self.client._clock()

    @staticmethod
    def _changed_since(raw: dict[str, Any], when: datetime) -> bool:
        try:
            return _time(raw.get("updated_at")) > when
        except ValueError:
            return True

    async def _build(self, raws: list[Any], endpoint: str) -> tuple[list[Incident], list[Skipped]]:
        """Parse one page, enriching open incidents with ack state and dedup keys."""
        ranked = await self.client.severities()
        ids = [r["id"] for r in raws if isinstance(r, dict) and isinstance(r.get("id"), str)]
        open_ids = []
        for r in raws:
            status = r.get("incident_status") if isinstance(r, dict) else None
            cat = status.get("category") if isinstance(status, dict) else None
            if isinstance(r, dict) and r.get("id") in ids and ALIASES.get(cat, cat) in OPEN:
                open_ids.append(r["id"])
        esc_changed: dict[str, datetime] = {}
        acked, _ = (await self.client._acked(open_ids, newest=esc_changed) if open_ids
                    else (set(), {}))
        await self._dedup_keys(raws)
        return self._parse_all(raws, endpoint, lambda raw: with_escalations(
            self._parse(raw, ranked, acked), esc_changed))

    async def pages(self, since: datetime | None) -> AsyncIterator[Page]:
        """Incidents changed since ``since`` (all open ones when None), one Page per page."""
        endpoint = "GET /v2/incidents"
        if since is None:
            params: dict[str, Any] = {"status_category[one_of]": list(OPEN),
                                      "page_size": self.settings.page_size}
        else:
            params = {"updated_at[gte]": since.date().isoformat(),
                      "page_size": self.settings.page_size}
        async for items in self.client._list("/v2/incidents", "incidents", params):
            items = self.client._fresh(items, since)
            incidents, skipped = await self._build(items, endpoint)
            yield Page(incidents=incidents, skipped=skipped)

    async def related(self, escalations: list[dict[str, Any]], seen: set[str]) -> Page | None:
        """The incidents of changed escalations not read yet, or None when there are none.
        Escalations carry only their incidents' ids and ``GET /v2/incidents`` has no id filter
        (notes 4.1), so they are read by whichever costs fewer calls: one by one, or the open
        incidents' list (250 a page) kept to the wanted ids (:meth:`_wanted_from_list`)."""
        ids: list[str] = []
        for esc in escalations:
            for rel in esc.get("related_incidents") or []:
                rid = rel.get("id") if isinstance(rel, dict) else None
                if isinstance(rid, str) and rid not in seen and rid not in ids:
                    ids.append(rid)
        listed = await self._wanted_from_list(ids) if len(ids) > 1 else []
        got = {r["id"] for r in listed}
        singles = []
        for rid in ids:
            if rid in got:
                continue
            try:
                data = await self.http.json("GET", "/v2/incidents/{id}", path={"id": rid})
            except NotFound:
                continue
            singles.append(data.get("incident") if isinstance(data, dict) else data)
        incidents: list[Incident] = []
        skipped: list[Skipped] = []
        for raws, endpoint in ((listed, "GET /v2/incidents"), (singles, "GET /v2/incidents/{id}")):
            if raws:
                built, bad = await self._build(raws, endpoint)
                incidents += built
                skipped += bad
        if not incidents and not skipped:
            return None
        return Page(incidents=incidents, skipped=skipped)

    async def _wanted_from_list(self, ids: list[str]) -> list[dict[str, Any]]:
        """The wanted open incidents found in the open incidents' list, read page by page only
        while the pages left (from ``total_record_count``) cost fewer calls than reading the
        wanted ids not found yet one by one. Ids it does not find (resolved just now, test
        mode) are left to single reads, so the list never costs more than one page beyond
        the cheaper of the two. ``total_record_count`` is optional ("if known", spec
        ``PaginationMetaResultWithTotalV2``): without it the list stops once it has cost as
        many pages as there are ids still missing, so it never costs more than twice the
        single reads."""
        wanted = set(ids)
        size = self.settings.page_size
        params = {"status_category[one_of]": list(OPEN), "page_size": size}
        meta: dict[str, Any] = {}
        found: list[dict[str, Any]] = []
        read = pages_read = 0
        async with aclosing(self.client._list("/v2/incidents", "incidents", params, meta)) as pages:
            async for items in pages:
                read += len(items)
                pages_read += 1
                for raw in items:
                    if isinstance(raw, dict) and raw.get("id") in wanted:
                        wanted.discard(raw["id"])
                        found.append(raw)
                total = meta.get("total_record_count")
                pages_left = (math.ceil(max(0, total - read) / size) if isinstance(total, int)
                              else pages_read)  # unknown: what the list has cost so far
                if not wanted or pages_left >= len(wanted):
                    break
        return found

    async def resolved_and_created(self, eid: str) -> tuple[bool, datetime | None]:
        raw = await self._show(eid)
        status = raw.get("incident_status")
        cat = status.get("category") if isinstance(status, dict) else None
        return ALIASES.get(cat, cat) in RESOLVED, created_of(raw)

    async def _resolve_target(self) -> str:
        wanted = self.settings.resolve_status
        for status in await self.client.statuses():
            if status["category"] == wanted:
                return status["id"]
        raise PermanentError(f"no {wanted} status in this organisation", account=self.account,
                             endpoint="GET /v1/incident_statuses")

    async def write(self, action: Action, p: Push) -> PushResult:
        """Resolve or set severity: ``POST /v2/incidents/{id}/actions/edit``."""
        endpoint = "POST /v2/incidents/{id}/actions/edit"
        edit: dict[str, Any] = {}
        if action is Action.RESOLVE:
            edit["incident_status_id"] = await self._resolve_target()
        else:
            if p.severity is None:
                return PushResult(p.external_id, Outcome.REFUSED,
                                  "incident.io severity cannot be cleared through the API")
            edit["severity_id"] = await self.client._severity_id(p.severity)
        body = {"incident": edit, "notify_incident_channel": self.settings.notify_incident_channel}
        try:
            data = await self.http.json("POST", "/v2/incidents/{id}/actions/edit",
                                        path={"id": p.external_id}, json=body, idempotent=True)
        except NotFound as exc:
            return PushResult(p.external_id, Outcome.REFUSED, exc.message)
        except PermanentError as exc:
            if action is Action.RESOLVE and exc.status == 422:
                # e.g. closed -> learning is a reopen-like move: check whether it is resolved.
                raw = await self._show(p.external_id)
                cat = (raw.get("incident_status") or {}).get("category")
                if ALIASES.get(cat, cat) in RESOLVED:
                    return PushResult(p.external_id, Outcome.ALREADY,
                                      incident=await self._one(raw, endpoint))
            return PushResult(p.external_id, Outcome.REFUSED, exc.message)
        self.client._check_failure(data, endpoint)
        raw = require(data, "incident", dict, endpoint=endpoint, account=self.account)
        return PushResult(p.external_id, Outcome.DONE, incident=await self._one(raw, endpoint))

    async def create(self, new: NewIncident) -> Incident:
        """POST /v2/incidents with an idempotency key from the marker (a repeat returns the
        first incident), the marker in the summary, and an attachment to find it by."""
        endpoint = "POST /v2/incidents"
        payload: dict[str, Any] = {
            "idempotency_key": f"syncd-{new.marker}",
            "visibility": self.settings.visibility,
            "mode": "standard",
            "name": new.title,
            "summary": f"{new.details}\n\n[syncd:{new.marker}]".strip(),
            "severity_id": await self.client._severity_id(new.severity or Severity.SEV5),
        }
        data = await self.http.json("POST", "/v2/incidents", json=payload, idempotent=True)
        self.client._check_failure(data, endpoint)
        raw = require(data, "incident", dict, endpoint=endpoint, account=self.account)
        created = await self._one(raw, endpoint)
        if await self._attachment(new.marker) is None:
            await self.http.json("POST", "/v1/incident_attachments", json={
                "incident_id": created.external_id,
                "resource": {"resource_type": "arbitrary_url",
                             "url": MARKER_URL.format(marker=new.marker),
                             "title": "Mirrored by syncd"}})
        if new.state is State.RESOLVED:
            result = await self.write(Action.RESOLVE, Push(created.external_id, Action.RESOLVE,
                                                           new.marker))
            if result.incident is not None:
                created = result.incident
        return created

    async def _attachment(self, marker: str) -> str | None:
        """The incident holding the marker's attachment: its URL exactly (the filter is the
        vendor's; a row naming another URL, such as a longer marker's, is not ours)."""
        endpoint = "GET /v1/incident_attachments"
        url = MARKER_URL.format(marker=marker)
        data = await self.http.json("GET", "/v1/incident_attachments", params={
            "resource_type": "arbitrary_url", "external_id": url})
        self.client._check_failure(data, endpoint)
        rows = require(data, "incident_attachments", list, endpoint=endpoint,
                       account=self.account)
        for row in rows:
            if not isinstance(row, dict) or not isinstance(row.get("incident_id"), str):
                continue
            resource = row.get("resource")
            if isinstance(resource, dict) and resource.get("external_id") not in (None, url):
                continue
            return row["incident_id"]
        return None

    async def find_created(self, marker: str) -> Incident | None:
        iid = await self._attachment(marker)
        if iid is None:
            return None
        try:
            raw = await self._show(iid)
        except NotFound:
            return None
        return await self._one(raw, "GET /v2/incidents/{id}")
