"""PagerDuty client: log-entry change feed, bulk PUT writes, marker-keyed mirrors, on-call.

Facts are from ../shared/vendor-notes/pagerduty.md ("notes §n"); docs/vendors/pagerduty.md has
the full account.

- **Change feed** (notes §5.6): ``GET /log_entries?since=<cursor - overlap>&include[]=incidents``
  pages every log entry since the cursor; each carries the incident as it is now, so one feed
  read yields the changed incidents. Entries are de-duplicated by id across the overlap.
- **Priority changes** leave no log entry (the LogEntry type enum has none, notes §5.6), and
  ``GET /incidents`` cannot sort or filter by update time (``sort_by`` takes only
  incident_number, created_at, resolved_at, urgency; since/until filter creation, notes §5.1).
  So each delta poll also reads ``sweep_pages`` page(s) of open incidents, newest first, walking
  on by offset from poll to poll: with up to 100 open incidents every poll sees every priority
  (2 calls per poll in all); with more, a change is seen within ceil(open/100) polls, or at
  once when a v3 webhook (``incident.priority_updated``, notes §6) names the incident: its id
  is read on the next poll (:meth:`note_webhook`). Urgency changes do leave a log entry.
- **Full resync** (notes §5.1, §2): every open incident through
  ``date_range=all&statuses[]=triggered&statuses[]=acknowledged`` (never the default one-month
  window). Past 10 000 open incidents the offset cap bites, so the read splits into day-aligned
  creation-time windows until each holds fewer than 10 000.
- **Writes** (notes §5.3): bulk ``PUT /incidents`` in batches of 250 with ``From`` = the bot
  user. A resolved incident that receives ``acknowledged`` is *reopened* by PagerDuty, so every
  batch first reads the current status and never sends a write that moves state backwards. A
  batch refused as a whole is retried one incident at a time to find the refusal.
- **Severity**: priority by name from ``GET /priorities`` (P1..P5 -> sev1..sev5 by default) or,
  with ``severity_field = "urgency"``, urgency high/low.
- **Mirrors** (notes §5.5): ``POST /incidents`` with ``incident_key`` = the marker; PagerDuty
  refuses a second open incident with that key on the service, and
  ``GET /incidents?incident_key=<marker>&date_range=all`` finds it after a crash.
- **On-call** (notes §5.7): ``GET /oncalls`` with users included, per schedule (or escalation
  policy for direct user targets) and escalation level; overrides via
  ``POST /schedules/{id}/overrides``.
- **Migration** (:mod:`syncd.vendors.pagerduty_schedules`): schedules and escalation policies
  read, previewed and written in place for ``syncd migrate``.
- No un-acknowledge: the REST API has none (only the service's ack timeout does it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any, ClassVar, Literal, Unpack

import httpx
import structlog
from pydantic import Field

from syncd import metrics
from syncd.configtypes import DAY, Email, Url, bounded
from syncd.model import MARKER_SHAPE, Incident, NewIncident, OnCall, Severity, State
from syncd.ratelimit import Limit
from syncd.secrets import Secret
from syncd.vendors._http import parse_json, require
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
    Verified,
    note_write_refused,
)
from syncd.vendors.client import ClientBase, ClientOptions
from syncd.vendors.client import optional_time as _time
from syncd.vendors.client import stamp as _stamp
from syncd.vendors.pagerduty_schedules import PagerDutySchedules

log = structlog.get_logger(__name__)

STATES = {"triggered": State.TRIGGERED, "acknowledged": State.ACKNOWLEDGED,
          "resolved": State.RESOLVED}
MARKER = re.compile(MARKER_SHAPE)  # keys["marker"] = incident_key only when all of it is one
PAGE_MAX = 100  # notes §2
OFFSET_CAP = 10_000  # notes §2: offset + limit <= 10000
BULK_MAX = 250  # notes §5.3
MAX_HINTED = 1000  # incident ids remembered from webhooks between polls (ours)
UNLOGGED_EVENTS = frozenset({"incident.priority_updated"})
"""v3 events whose change leaves no log entry (the log entry types have no priority change,
notes §5): only these name an incident for the next poll to read. Every other event's change is
in the log feed the hinted poll reads anyway (a storm of acks must not cost one read each)."""
MIN_LOG_WINDOW = timedelta(seconds=1)  # log-entry windows are split no finer (whole seconds)
MAX_WINDOW = timedelta(days=180)  # since/until may span at most 6 months (notes §5.1)
FROM_CODES = {2016, 1008, 1028}  # missing, unknown or malformed From (notes §1)
EVENT_SEVERITY = {Severity.SEV1: "critical", Severity.SEV2: "error", Severity.SEV3: "warning",
                  Severity.SEV4: "info", Severity.SEV5: "info"}
ACCEPT = "application/vnd.pagerduty+json;version=2"
# The Events API has its own per-integration limit of 120 events per minute (notes §7).
EVENTS_LIMITS = {"*": Limit(120, 60.0)}


class PagerDutySettings(AccountSettings):
    """``[accounts.NAME]`` keys for a PagerDuty account."""

    vendor: Literal["pagerduty"]
    base_url: Url = Field("https://api.pagerduty.com",
                          description="REST API host; https://api.eu.pagerduty.com for EU")
    token: Secret = Field(description="REST API key (account or user key, or an OAuth token)")
    token_type: Literal["token", "bearer"] = Field(
        "token", description="'token' sends 'Token token=KEY'; 'bearer' sends 'Bearer KEY'")
    from_email: Email = Field(description="email of the PagerDuty user syncd acts as (From header)")
    service_id: str | None = Field(None, description="service mirrored incidents are created on")
    severity_field: Literal["priority", "urgency"] = Field(
        "priority", description="sync canonical severity with incident priority or urgency")
    create_via: Literal["rest", "events"] = Field(
        "rest", description="mirror creation through POST /incidents or the Events API v2")
    events_url: Url | None = Field(
        None, description="Events API v2 host (https://events.pagerduty.com); default base_url")
    routing_key: Secret | None = Field(
        None, description="Events API v2 integration key, for create_via = 'events'")
    page_size: int = Field(PAGE_MAX, ge=1, le=PAGE_MAX, description="limit for list calls")
    log_overlap: float = bounded(
        120.0, 0, DAY, "seconds the log-entry feed reaches back before the cursor")
    webhook_secret: Secret | None = Field(
        None, description="v3 webhook subscription secret: signed deliveries to "
        "/webhooks/ACCOUNT trigger an immediate poll")
    sweep_pages: int = Field(
        1, ge=0, le=10, description="pages of open incidents each delta poll reads besides the "
        "log entries, so priority changes (which leave no log entry) are seen within "
        "ceil(open / (page_size * sweep_pages)) polls; 0 = only at full resyncs")


class PagerDutyClient(PagerDutySchedules, ClientBase):
    """One PagerDuty account as a syncd account; also a migration source and target
    (:mod:`syncd.vendors.pagerduty_schedules`)."""

    vendor: ClassVar[str] = "pagerduty"
    Settings: ClassVar[type[PagerDutySettings]] = PagerDutySettings
    capabilities: ClassVar[Capability] = (
        Capability.ACK | Capability.RESOLVE | Capability.REOPEN | Capability.SEVERITY_READ
        | Capability.SEVERITY_WRITE | Capability.CREATE | Capability.ONCALL_READ
        | Capability.OVERRIDE_WRITE
    )
    # 960 requests per minute per key (notes §4). PUT/POST /incidents and GET /oncalls have
    # further unpublished operation limits; a 429 from them pauses the account bucket.
    limits: ClassVar[Mapping[str, Limit]] = {"*": Limit(960, 60.0)}
    batch_size: ClassVar[Mapping[Action, int]] = {
        Action.ACKNOWLEDGE: BULK_MAX, Action.RESOLVE: BULK_MAX, Action.REOPEN: BULK_MAX,
        Action.SET_SEVERITY: BULK_MAX,
    }
    default_severity_map: ClassVar[Mapping[str, Severity]] = {
        "P1": Severity.SEV1, "P2": Severity.SEV2, "P3": Severity.SEV3, "P4": Severity.SEV4,
        "P5": Severity.SEV5, "high": Severity.SEV2, "low": Severity.SEV4,
    }

    settings: PagerDutySettings

    def __init__(self, account: str, settings: PagerDutySettings,
                 **options: Unpack[ClientOptions]) -> None:
        super().__init__(account, settings, **options)
        self._priorities: list[tuple[str, str]] | None = None  # (id, name), most severe first
        key = settings.token.get_secret_value()
        auth = f"Token token={key}" if settings.token_type == "token" else f"Bearer {key}"
        self.http = self._session(settings.base_url, {"Authorization": auth, "Accept": ACCEPT},
                                  classify=self._classify)
        # The Events API takes no auth header (the routing key is in the body) and has its own
        # budget (EVENTS_LIMITS), scaled like the account's.
        self._hinted: set[str] = set()  # incident ids webhooks named since the last poll
        self.events = self._session(settings.events_url or settings.base_url,
                                    {"Accept": "application/json"}, classify=self._classify,
                                    budget=self.budget.sibling(EVENTS_LIMITS))

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> Verified | None:
        """A v3 webhook delivery signed with our subscription secret, or None.

        ``X-PagerDuty-Signature: v1=<hex>[,v1=<hex>...]`` is HMAC-SHA256 of the raw body; any
        signature may match (secret rotation), compared in constant time (notes §6,
        developer-docs ``docs/webhooks/04-Signatures.md``). The header comes from anyone who can
        reach the port, so it is compared as bytes: a non-ASCII, empty or oversized value is a
        mismatch, never an exception."""
        if self.settings.webhook_secret is None:
            return None
        key = self.settings.webhook_secret.get_secret_value().encode()
        if not key:
            return None
        expected = hmac.new(key, body, hashlib.sha256).hexdigest().encode()
        header = headers.get("x-pagerduty-signature") or ""
        # Rotation sends two signatures; more than eight is padding and is not looked at.
        candidates = [p.strip() for p in header.split(",")[:8]]
        signed = any(
            hmac.compare_digest(part[3:].encode("utf-8", "replace"), expected)
            for part in candidates if part.startswith("v1=")
        )
        # Only the body is signed: X-Webhook-Id is not, so it names nothing (intake._digest).
        return Verified() if signed else None

    def note_webhook(self, body: bytes) -> None:
        """A verified v3 delivery of a change the log feed does not carry (a priority,
        :data:`UNLOGGED_EVENTS`) names its incident (``event.data.id``, notes §6): the next
        delta poll reads that incident, so the change is seen at once whatever the number of
        open incidents."""
        try:
            event = json.loads(body).get("event")
            data = event.get("data") if event.get("resource_type") == "incident" else None
            iid = data.get("id") if isinstance(data, dict) else None
            if event.get("event_type") not in UNLOGGED_EVENTS:
                return
        except (ValueError, AttributeError):
            return
        if isinstance(iid, str) and iid.isalnum() and len(iid) <= 32 \
                and len(self._hinted) < MAX_HINTED:
            self._hinted.add(iid)

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.events.aclose()

    # ------------------------------------------------------------------ errors

    def _classify(self, response: httpx.Response, endpoint: str) -> VendorError | None:
        """PagerDuty's error object -> the typed error; a 2xx that carries one is malformed."""
        status = response.status_code
        error = _error_object(response)
        if status < 300:
            if error is not None:
                metrics.MALFORMED.labels(self.account, endpoint).inc()
                return MalformedResponse(f"a {status} answer carrying an error: {error[1]}",
                                         status=status)
            return None
        code, text = error if error is not None else (None, "")
        if status == 429:
            # PagerDuty documents ratelimit-reset, not Retry-After (notes §4).
            reset = _float(response.headers.get("ratelimit-reset"))
            return RateLimited(text or "rate limited", retry_after=5.0 if reset is None else reset,
                               status=429)
        if status == 401:
            return AuthError("authentication failed: check the token and the region's base_url",
                             status=401)
        if status == 403:
            return AuthError(f"access denied (read-only key?): {text}", status=403)
        if status == 400 and code in FROM_CODES:
            return AuthError(f"the From user {self.settings.from_email!r} was refused: {text}",
                             status=400)
        if status == 404:
            return NotFound(text or "not found", status=404)
        if status == 402:
            return PermanentError(f"the account lacks this ability: {text}", status=402)
        if status in (408,) or status >= 500:
            return TransientError(text or "server error", status=status)
        if status < 500 and error is not None:
            return PermanentError(text, status=status)
        return None

    async def _get(self, route: str, params: Any = None, **path: Any) -> dict[str, Any]:
        endpoint = f"GET {route}"
        body = await self.http.json("GET", route, params=params, path=path)
        if not isinstance(body, dict):
            raise self._malformed(endpoint, f"expected a JSON object, got {type(body).__name__}")
        return body

    async def _pages(self, route: str, key: str, params: dict[str, Any], *,
                     start: int = 0) -> AsyncIterator[tuple[list[Any], dict[str, Any]]]:
        """Offset pagination to the end (notes §2): yields (items, envelope) per page. Stops
        before offset+limit passes 10 000; callers that may reach it check ``total`` first."""
        endpoint = f"GET {route}"
        offset = start
        limit = self.settings.page_size
        while True:
            body = await self._get(route, {**params, "limit": limit, "offset": offset})
            items = require(body, key, list, endpoint=endpoint, account=self.account)
            more = body.get("more")
            if not isinstance(more, bool):
                raise self._malformed(endpoint, f"'more' is {type(more).__name__}, not a bool")
            yield items, body
            if not more:
                return
            if not items:
                raise self._malformed(endpoint, "'more' is true on an empty page")
            offset += len(items)
            if offset + limit > OFFSET_CAP:
                raise self._malformed(endpoint, f"more than {OFFSET_CAP} results; narrow the "
                                      "query (offset cap)")

    # ------------------------------------------------------------------ parsing

    def _severity_of(self, raw: dict[str, Any]) -> Severity | None:
        if self.settings.severity_field == "urgency":
            urgency = raw.get("urgency")
            if urgency not in ("high", "low"):
                raise ValueError(f"unknown urgency {urgency!r}")
            return self.severity_map.get(urgency)
        priority = raw.get("priority")
        if priority is None:
            return None
        if not isinstance(priority, dict):
            raise ValueError(f"priority is {type(priority).__name__}")
        name = priority.get("name", priority.get("summary"))
        if not isinstance(name, str):
            raise ValueError("priority without a name")
        # Priority names are per account; a name syncd has no mapping for has no severity.
        return self.severity_map.get(name)

    def _incident(self, raw: Any) -> Incident:
        """One Incident object -> Incident; ValueError/TypeError when it cannot be trusted."""
        if not isinstance(raw, dict):
            raise TypeError(f"incident is {type(raw).__name__}, not an object")
        iid = raw.get("id")
        if not isinstance(iid, str) or not iid:
            raise ValueError("missing id")
        status = raw.get("status")
        if status not in STATES:
            raise ValueError(f"unknown status {status!r}")
        title = raw.get("title")
        if not isinstance(title, str):
            title = raw.get("summary")
        if not isinstance(title, str):
            raise ValueError("missing title")
        created = _time(raw.get("created_at"))
        updated = _time(raw.get("updated_at")) or _time(raw.get("last_status_change_at")) \
            or created
        keys = {}
        key = raw.get("incident_key")
        if isinstance(key, str) and key:
            keys["dedup"] = key
            if MARKER.fullmatch(key):
                keys["marker"] = key
        number = raw.get("incident_number")
        url = raw.get("html_url")
        return Incident(
            external_id=iid, state=STATES[status], title=title, severity=self._severity_of(raw),
            keys=keys, created_at=created, updated_at=updated,
            url=url if isinstance(url, str) else None,
            number=str(number) if isinstance(number, int) else None,
        )

    def _parse_all(self, raws: Sequence[Any], endpoint: str) -> tuple[list[Incident],
                                                                       list[Skipped]]:
        good: list[Incident] = []
        skipped: list[Skipped] = []
        for raw in raws:
            try:
                good.append(self._incident(raw))
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                metrics.MALFORMED.labels(self.account, endpoint).inc()
                rid = raw.get("id") if isinstance(raw, dict) else None
                skipped.append(Skipped(endpoint, str(exc), rid if isinstance(rid, str) else None))
        return good, skipped

    # ------------------------------------------------------------------ polling

    async def poll(self, cursor: str | None, *, full: bool = False) -> AsyncIterator[Page]:
        state = _load_cursor(cursor)
        if state is None or full:
            async for page in self._full():
                yield page
            return
        async for page in self._feed(state):
            yield page

    async def _full(self) -> AsyncIterator[Page]:
        """Every open incident; the last page carries a cursor starting now (minus overlap)."""
        started = self._clock()
        endpoint = "GET /incidents"
        async for raws in self._open_incident_pages():
            incidents, skipped = self._parse_all(raws, endpoint)
            yield Page(incidents, None, skipped)
        yield Page([], _dump_cursor(started, [], 0))

    async def _open_incident_pages(self, *, window: tuple[datetime, datetime] | None = None
                                   ) -> AsyncIterator[list[Any]]:
        """Raw open incidents page by page; windows by creation day past the offset cap."""
        params: dict[str, Any] = {"statuses[]": ["triggered", "acknowledged"],
                                  "total": "true", "sort_by": "created_at:asc"}
        if window is None:
            params["date_range"] = "all"
        else:
            params["since"], params["until"] = _stamp(window[0]), _stamp(window[1])
        first = await self._get("/incidents", {**params, "limit": self.settings.page_size,
                                               "offset": 0})
        items = require(first, "incidents", list, endpoint="GET /incidents",
                        account=self.account)
        total = first.get("total")
        if not isinstance(total, int):
            raise self._malformed("GET /incidents", "'total' missing though total=true")
        more = first.get("more")
        if not isinstance(more, bool):
            raise self._malformed("GET /incidents", f"'more' is {type(more).__name__}, not a "
                                  "bool")
        if total + self.settings.page_size <= OFFSET_CAP:
            yield items
            if more:
                async for more, _env in self._pages("/incidents", "incidents", params,
                                                    start=len(items)):
                    yield more
            return
        # Too many for one offset walk: split by creation time (whole days, since PagerDuty
        # may honour only the date part of since/until, notes §5.1).
        if window is None:
            if not items:
                return
            oldest = _time(items[0].get("created_at")) if isinstance(items[0], dict) else None
            if oldest is None:
                raise self._malformed("GET /incidents", "oldest open incident has no created_at")
            lo = oldest.replace(hour=0, minute=0, second=0, microsecond=0)
            hi = self._clock().replace(hour=0, minute=0, second=0, microsecond=0) \
                + timedelta(days=2)
            windows = []
            while lo < hi:
                windows.append((lo, min(hi, lo + MAX_WINDOW)))
                lo += MAX_WINDOW
        else:
            days = (window[1] - window[0]).days
            if days <= 1:
                log.warning("pagerduty.offset_cap", account=self.account, total=total,
                            since=_stamp(window[0]))
                async for more, _env in self._pages("/incidents", "incidents", params):
                    yield more
                return
            mid = window[0] + timedelta(days=days // 2)
            windows = [(window[0], mid), (mid, window[1])]
        for w in windows:
            async for raws in self._open_incident_pages(window=w):
                yield raws

    async def _feed(self, state: dict[str, Any]) -> AsyncIterator[Page]:
        """Log entries since the cursor, each with its incident as it is now.

        Each page of entries yields the incidents it shows first (or newer than yielded), with
        no cursor, so a storm's first changes reach the ledger (and the pushes) while the
        later pages are still being read; the last page (sweep, hinted reads, what is left)
        carries the cursor, so a crash before it re-reads the feed from the old one."""
        endpoint = "GET /log_entries"
        since = state["since"] - timedelta(seconds=self.settings.log_overlap)
        seen = set(state["seen"])
        newest = state["since"]
        entries: list[tuple[datetime, str]] = []
        latest: dict[str, Incident] = {}
        skipped: list[Skipped] = []
        sent: dict[str, Incident] = {}  # what earlier pages of this read yielded
        try:
            async for items in self._log_pages(since, None):
                for raw in items:
                    try:
                        if not isinstance(raw, dict):
                            raise TypeError(f"log entry is {type(raw).__name__}")
                        eid = raw.get("id")
                        at = _time(raw.get("created_at"))
                        if not isinstance(eid, str) or at is None:
                            raise ValueError("log entry without id or created_at")
                        entries.append((at, eid))
                        newest = max(newest, at)
                        if eid in seen:
                            continue
                        inc = self._incident(raw.get("incident"))
                    except (ValueError, TypeError) as exc:
                        metrics.MALFORMED.labels(self.account, endpoint).inc()
                        rid = raw.get("id") if isinstance(raw, dict) else None
                        skipped.append(Skipped(endpoint, str(exc),
                                               rid if isinstance(rid, str) else None))
                        continue
                    prev = latest.get(inc.external_id)
                    if prev is None or (inc.updated_at or newest) >= (prev.updated_at or newest):
                        latest[inc.external_id] = inc
                early = self._unsent(latest, sent)
                if early:
                    yield Page(early, None)
        except _Unsplittable as exc:
            # More entries than any window we can read holds: the old fallback, a full
            # resync (open incidents only), is all that is left; it is lossy, so say so.
            log.warning("pagerduty.feed_overflow", account=self.account, total=exc.total,
                        since=_stamp(since), action="full resync; resolves in the window are "
                        "not seen")
            async for page in self._full():
                yield page
            return
        sweep = state["sweep"]
        for _ in range(self.settings.sweep_pages):
            raws, sweep = await self._sweep(sweep)
            self._merge(raws, latest, skipped, "GET /incidents", newest)
        hinted, self._hinted = self._hinted, set()
        for iid in sorted(hinted - set(latest)):
            try:
                body = await self._get("/incidents/{id}", id=iid)
            except NotFound:
                continue
            self._merge([body.get("incident")], latest, skipped, "GET /incidents/{id}", newest)
        keep = newest - timedelta(seconds=self.settings.log_overlap)
        cursor = _dump_cursor(newest, sorted(eid for at, eid in entries if at >= keep), sweep)
        yield Page(self._unsent(latest, sent), cursor, skipped)

    async def _log_pages(self, since: datetime, until: datetime | None,
                         skip: set[str] | None = None) -> AsyncIterator[list[Any]]:
        """Log entries in [since, until) (``until`` None: no end) page by page. A window
        holding more entries than the offset cap lets us page through is halved until each half
        fits, as PYPD's ``iter_history`` does (notes §5.6: since/until are under the same
        10 000 cap). A full resync instead would list open incidents only and drop every
        resolve in the window (a long downtime of a busy account). The last window stays
        open-ended, and ends at the newest entry read when the vendor's clock is ahead of ours,
        so that skew loses nothing either. A window that cannot be split (under two seconds:
        stamps are whole seconds) raises :class:`_Unsplittable`. (Unlike ``GET /incidents``,
        notes §5.1, nothing says this endpoint honours only the date part of since/until.)

        Every page's ``total`` counts, not only the first's: a busy account's feed can grow
        past the cap while it is read, and the walk would then fail at the cap with a 400
        (notes §2). The rest of the window, what the pages read so far cannot have covered
        (:func:`_rest_end`), is then read the same way, as a window of its own. Each entry is
        yielded once (``skip``: ids this read has yielded), though entries added meanwhile
        shift the offset pages and the rest re-reads the boundary second."""
        skip = set() if skip is None else skip
        params: dict[str, Any] = {"since": _stamp(since), "include[]": ["incidents"],
                                  "total": "true"}
        if until is not None:
            params["until"] = _stamp(until)
        read: list[list[datetime]] = []  # entry times of each page read, in the vendor's order
        async with aclosing(self._pages("/log_entries", "log_entries", params)) as pages:
            async for items, body in pages:
                total = body.get("total")
                over = isinstance(total, int) and total + self.settings.page_size > OFFSET_CAP
                if over and not read:  # the whole window is too big: halve it
                    async for more in self._halves(since, until, _entry_times(items), total,
                                                   skip):
                        yield more
                    return
                read.append(_entry_times(items))
                fresh = _unseen(items, skip)
                if fresh:
                    yield fresh
                if over:
                    rest = _rest_end(read)
                    log.info("pagerduty.feed_grew", account=self.account, total=total,
                             since=_stamp(since), rest_until=rest and _stamp(rest))
                    if rest is None or (until is not None and rest >= until):
                        # Not read newest first, or the rest is the whole window: halve it.
                        async for more in self._halves(
                                since, until, [t for page in read for t in page], total, skip):
                            yield more
                    else:
                        async for more in self._log_pages(since, rest, skip):
                            yield more
                    return

    async def _halves(self, since: datetime, until: datetime | None, times: list[datetime],
                      total: int, skip: set[str]) -> AsyncIterator[list[Any]]:
        """Read [since, until) as two halves (see :meth:`_log_pages`). ``times``: of the
        entries read in the window; an open window ends at the newest of them when that is
        past our clock."""
        end = until or max([self._clock(), *times])
        if end - since < 2 * MIN_LOG_WINDOW:
            raise _Unsplittable(total)
        mid = (since + (end - since) / 2).replace(microsecond=0)  # whole seconds
        log.info("pagerduty.feed_split", account=self.account, total=total,
                 since=_stamp(since), until=_stamp(mid))
        async for more in self._log_pages(since, mid, skip):
            yield more
        async for more in self._log_pages(mid, until, skip):
            yield more

    @staticmethod
    def _unsent(latest: dict[str, Incident], sent: dict[str, Incident]) -> list[Incident]:
        """The incidents of ``latest`` not yielded yet as they are now; marks them yielded
        (a second read showing the same incident, the sweep's, is not observed twice)."""
        out = [inc for iid, inc in latest.items() if sent.get(iid) != inc]
        for inc in out:
            sent[inc.external_id] = inc
        return out

    async def _sweep(self, offset: int) -> tuple[list[Any], int]:
        """One page of open incidents, newest first, at ``offset``; and where the next page
        starts (0 after the last: the walk starts over)."""
        params = {"date_range": "all", "statuses[]": ["triggered", "acknowledged"],
                  "sort_by": "created_at:desc", "limit": self.settings.page_size}
        if offset + self.settings.page_size > OFFSET_CAP:
            offset = 0
        body = await self._get("/incidents", {**params, "offset": offset})
        items = require(body, "incidents", list, endpoint="GET /incidents", account=self.account)
        more = body.get("more") is True and bool(items)
        return items, offset + len(items) if more else 0

    def _merge(self, raws: Sequence[Any], latest: dict[str, Incident], skipped: list[Skipped],
               endpoint: str, newest: datetime) -> None:
        """Incidents read besides the log entries, kept where newer than the feed's copy."""
        incidents, bad = self._parse_all(raws, endpoint)
        skipped += bad
        for inc in incidents:
            prev = latest.get(inc.external_id)
            if prev is None or (inc.updated_at or newest) >= (prev.updated_at or newest):
                latest[inc.external_id] = inc

    # ------------------------------------------------------------------ writes

    async def push(self, action: Action, pushes: Sequence[Push]) -> list[PushResult]:
        if action == Action.UNACKNOWLEDGE:
            raise PermanentError("PagerDuty's REST API cannot un-acknowledge an incident",
                                 account=self.account, endpoint="PUT /incidents")
        out: list[PushResult] = []
        for start in range(0, len(pushes), BULK_MAX):
            out += await self._push_batch(action, pushes[start:start + BULK_MAX])
        return out

    async def _push_batch(self, action: Action, batch: Sequence[Push]) -> list[PushResult]:
        current = await self._current([p.external_id for p in batch])
        results: dict[str, PushResult] = {}
        send: list[tuple[Push, dict[str, Any]]] = []
        for p in batch:
            cur = current.get(p.external_id)
            if cur is _MISSING:
                results[p.external_id] = PushResult(p.external_id, Outcome.REFUSED,
                                                    "incident not found")
                continue
            decided = await self._decide(action, p, cur)
            if isinstance(decided, PushResult):
                results[p.external_id] = decided
            else:
                send.append((p, decided))
        if send:
            results.update(await self._write(send))
        return [results[p.external_id] for p in batch]

    async def _decide(self, action: Action, p: Push, cur: Any) -> PushResult | dict[str, Any]:
        """The update item for one push, or its result when no write is needed or allowed.
        ``cur`` is the current incident (None = not open, known only to be resolved or gone)."""
        inc = None
        if isinstance(cur, dict):
            try:
                inc = self._incident(cur)
            except (ValueError, TypeError) as exc:
                return PushResult(p.external_id, Outcome.RETRY, f"unreadable incident: {exc}")
        state = inc.state if inc else State.RESOLVED
        item: dict[str, Any] = {"id": p.external_id, "type": "incident_reference"}
        if action == Action.ACKNOWLEDGE:
            if state >= State.ACKNOWLEDGED:
                # Never send: acknowledging a resolved incident reopens it (notes §5.3).
                return PushResult(p.external_id, Outcome.ALREADY, f"already {state.value}",
                                  incident=inc)
            item["status"] = "acknowledged"
        elif action == Action.RESOLVE:
            if state == State.RESOLVED:
                return PushResult(p.external_id, Outcome.ALREADY, "already resolved",
                                  incident=inc)
            item["status"] = "resolved"
        elif action == Action.REOPEN:
            if inc is not None and state < State.RESOLVED:
                return PushResult(p.external_id, Outcome.ALREADY, f"already {state.value}",
                                  incident=inc)
            item["status"] = "triggered"
        elif action == Action.SET_SEVERITY:
            if p.severity is None:
                return PushResult(p.external_id, Outcome.REFUSED, "no severity given")
            if inc is not None and inc.severity == p.severity:
                return PushResult(p.external_id, Outcome.ALREADY, "severity already set",
                                  incident=inc)
            if self.settings.severity_field == "urgency":
                item["urgency"] = self._urgency_for(p.severity)
                if isinstance(cur, dict) and cur.get("urgency") == item["urgency"]:
                    return PushResult(p.external_id, Outcome.ALREADY,
                                      f"urgency already {item['urgency']}", incident=inc)
            else:
                priority = await self._priority_for(p.severity)
                if priority is None:
                    return PushResult(p.external_id, Outcome.REFUSED,
                                      f"no priority in this account maps to {p.severity.value}")
                item["priority"] = {"id": priority, "type": "priority_reference"}
        else:
            return PushResult(p.external_id, Outcome.REFUSED, f"{action.value} not supported")
        return item

    def severity_lands_as(self, severity: Severity) -> Severity:
        """Urgency holds two values (high, low): a push lands on the closest one. A priority
        push is exact or refused (:meth:`_priority_for`)."""
        if self.settings.severity_field == "urgency":
            return self._urgency_severity(self._urgency_for(severity))
        return severity

    def _urgency_for(self, severity: Severity) -> str:
        def distance(u: str) -> int:
            return abs(self._urgency_severity(u).level - severity.level)
        return min(("high", "low"), key=distance)

    def _urgency_severity(self, urgency: str) -> Severity:
        """An urgency's severity when choosing one, and what the push is said to land as: the
        severity the poll reads it as (:meth:`_severity_of`). Config overrides are merged
        over ``default_severity_map``, so both urgencies always map; the sev3 (the middle)
        for an unmapped one only keeps a map built otherwise from failing a push."""
        return self.severity_map.get(urgency, Severity.SEV3)

    async def _priority_for(self, severity: Severity) -> str | None:
        """The most severe account priority whose name maps to ``severity`` (notes §5.8)."""
        if self._priorities is None:
            found = []
            async for items, _env in self._pages("/priorities", "priorities", {}):
                for raw in items:
                    if isinstance(raw, dict) and isinstance(raw.get("id"), str) \
                            and isinstance(raw.get("name"), str):
                        found.append((raw["id"], raw["name"]))
            self._priorities = found
        for pid, name in self._priorities:
            if self.severity_map.get(name) == severity:
                return pid
        return None

    async def _current(self, ids: list[str]) -> dict[str, Any]:
        """Current incident per id: the raw object, or _MISSING (404). Reads the open list when
        that takes fewer calls than one GET per incident, and GETs the rest one by one."""
        wanted = set(ids)
        found: dict[str, Any] = {}
        params = {"date_range": "all", "statuses[]": ["triggered", "acknowledged"],
                  "total": "true"}
        first = await self._get("/incidents", {**params, "limit": PAGE_MAX, "offset": 0})
        items = require(first, "incidents", list, endpoint="GET /incidents",
                        account=self.account)
        total = first.get("total")
        if not isinstance(total, int):
            raise self._malformed("GET /incidents", "'total' missing though total=true")
        for raw in items:
            if isinstance(raw, dict) and raw.get("id") in wanted:
                found[raw["id"]] = raw
        more = first.get("more")
        if not isinstance(more, bool):
            raise self._malformed("GET /incidents", "'more' missing from the open list")
        pages_left = math.ceil(max(0, total - len(items)) / PAGE_MAX)
        rest = [i for i in ids if i not in found]
        if more and rest and pages_left < len(rest) and total + PAGE_MAX <= OFFSET_CAP:
            async for page, _env in self._pages("/incidents", "incidents", params,
                                                start=len(items)):
                for raw in page:
                    if isinstance(raw, dict) and raw.get("id") in wanted:
                        found[raw["id"]] = raw
        # Not open: resolved, or gone. Only a GET tells which (and returns it for the ledger).
        for iid in [i for i in ids if i not in found]:
            try:
                body = await self._get("/incidents/{id}", id=iid)
            except NotFound:
                found[iid] = _MISSING
                continue
            found[iid] = require(body, "incident", dict, endpoint="GET /incidents/{id}",
                                 account=self.account)
        return found

    async def _write(self, send: list[tuple[Push, dict[str, Any]]]) -> dict[str, PushResult]:
        """One bulk PUT; when PagerDuty refuses the whole batch, find the refusal one by one."""
        endpoint = "PUT /incidents"
        headers = {"From": self.settings.from_email}
        try:
            body = await self.http.json("PUT", "/incidents", headers=headers,
                                        json={"incidents": [item for _p, item in send]})
        except AuthError:
            raise
        except PermanentError as exc:
            if len(send) == 1:
                return {send[0][0].external_id: self._refusal(send[0][0], exc)}
            log.info("pagerduty.batch_refused", account=self.account, size=len(send),
                     error=exc.message)
            out = {}
            for p, item in send:
                out.update(await self._write_one(p, item))
            return out
        raws = require(body, "incidents", list, endpoint=endpoint, account=self.account)
        by_id = {r.get("id"): r for r in raws if isinstance(r, dict)}
        out = {}
        for p, _item in send:
            raw = by_id.get(p.external_id)
            try:
                inc = self._incident(raw) if raw is not None else None
            except (ValueError, TypeError):
                metrics.MALFORMED.labels(self.account, endpoint).inc()
                inc = None
            out[p.external_id] = PushResult(p.external_id, Outcome.DONE, incident=inc)
        return out

    async def _write_one(self, p: Push, item: dict[str, Any]) -> dict[str, PushResult]:
        endpoint = "PUT /incidents/{id}"
        try:
            body = await self.http.json("PUT", "/incidents/{id}", path={"id": p.external_id},
                                        headers={"From": self.settings.from_email},
                                        json={"incident": item})
        except AuthError:
            raise
        except PermanentError as exc:
            return {p.external_id: self._refusal(p, exc)}
        except TransientError as exc:
            return {p.external_id: PushResult(p.external_id, Outcome.RETRY, str(exc))}
        raw = require(body, "incident", dict, endpoint=endpoint, account=self.account)
        try:
            inc: Incident | None = self._incident(raw)
        except (ValueError, TypeError):
            inc = None
        return {p.external_id: PushResult(p.external_id, Outcome.DONE, incident=inc)}

    def _refusal(self, p: Push, exc: PermanentError) -> PushResult:
        if p.action == Action.RESOLVE and "Already Resolved" in exc.message:
            return PushResult(p.external_id, Outcome.ALREADY, exc.message)
        return PushResult(p.external_id, Outcome.REFUSED, exc.message)

    # ------------------------------------------------------------------ mirrors

    async def create(self, new: NewIncident) -> Incident:
        """Create once: ``incident_key`` = the marker, which PagerDuty keeps unique among the
        service's open incidents, so a retried POST cannot make a second one (notes §5.5)."""
        if self.settings.create_via == "events":
            return await self._create_by_event(new)
        if not self.settings.service_id:
            raise PermanentError("service_id is not configured: cannot create incidents",
                                 account=self.account, endpoint="POST /incidents")
        item: dict[str, Any] = {
            "type": "incident", "title": new.title[:1024], "incident_key": new.marker,
            "service": {"id": self.settings.service_id, "type": "service_reference"},
        }
        if new.details:
            item["body"] = {"type": "incident_body", "details": new.details}
        if new.severity is not None:
            if self.settings.severity_field == "urgency":
                item["urgency"] = self._urgency_for(new.severity)
            else:
                priority = await self._priority_for(new.severity)
                if priority:
                    item["priority"] = {"id": priority, "type": "priority_reference"}
        try:
            body = await self.http.json("POST", "/incidents", json={"incident": item},
                                        headers={"From": self.settings.from_email},
                                        idempotent=True)
        except PermanentError as exc:
            if exc.status != 400 or isinstance(exc, NotFound):
                raise
            found = await self.find_created(new.marker)
            if found is None or found.state == State.RESOLVED:
                raise
            incident = found
        else:
            raw = require(body, "incident", dict, endpoint="POST /incidents",
                          account=self.account)
            try:
                incident = self._incident(raw)
            except (ValueError, TypeError) as exc:
                raise self._malformed("POST /incidents", f"created incident: {exc}") from None
        return await self._advance(incident, new.state)

    async def _create_by_event(self, new: NewIncident) -> Incident:
        if self.settings.routing_key is None:
            raise PermanentError("create_via = 'events' needs routing_key",
                                 account=self.account, endpoint="POST /v2/enqueue")
        existing = await self.find_created(new.marker)
        if existing is not None and existing.state != State.RESOLVED:
            return await self._advance(existing, new.state)
        body = await self.events.json("POST", "/v2/enqueue", idempotent=True, json={
            "routing_key": self.settings.routing_key.get_secret_value(),
            "event_action": "trigger", "dedup_key": new.marker,
            "payload": {"summary": new.title[:1024], "source": "syncd",
                        "severity": EVENT_SEVERITY.get(new.severity or Severity.SEV1,
                                                       "critical"),
                        "custom_details": {"details": new.details}}})
        if not isinstance(body, dict) or body.get("status") != "success":
            raise self._malformed("POST /v2/enqueue", f"event not accepted: {body!r}"[:200])
        found = await self.find_created(new.marker)
        if found is None or found.state == State.RESOLVED:
            # The Events API is asynchronous (notes §7): the incident may not exist yet.
            raise TransientError(f"event for {new.marker!r} accepted but no incident yet",
                                 account=self.account, endpoint="POST /v2/enqueue")
        return await self._advance(found, new.state)

    async def _advance(self, incident: Incident, state: State) -> Incident:
        """Move a freshly created incident forward to the mirrored state."""
        if state == State.TRIGGERED or incident.state >= state:
            return incident
        action = Action.ACKNOWLEDGE if state == State.ACKNOWLEDGED else Action.RESOLVE
        result = (await self.push(action, [Push(incident.external_id, action, "create")]))[0]
        if result.outcome not in (Outcome.DONE, Outcome.ALREADY):
            raise TransientError(f"created {incident.external_id} but could not {action.value}"
                                 f" it: {result.message}", account=self.account,
                                 endpoint="PUT /incidents")
        return result.incident or incident

    async def find_created(self, marker: str) -> Incident | None:
        """The incident whose incident_key is ``marker``: the open one, else the newest."""
        endpoint = "GET /incidents"
        found: list[Incident] = []
        async for items, _env in self._pages("/incidents", "incidents", {
                "incident_key": marker, "date_range": "all"}):
            good, _skipped = self._parse_all(items, endpoint)
            found += [i for i in good if i.keys.get("dedup") == marker]
        if not found:
            return None
        epoch = datetime.min.replace(tzinfo=UTC)
        return max(found, key=lambda i: (i.state != State.RESOLVED, i.created_at or epoch))

    # ------------------------------------------------------------------ on-call

    async def oncall(self, since: datetime, until: datetime) -> list[OnCall]:
        """``GET /oncalls`` per schedule (or policy for direct user targets) and level."""
        endpoint = "GET /oncalls"
        until = min(until, self._clock() + timedelta(days=89))  # at most 90 days ahead
        params = {"since": _stamp(since), "until": _stamp(max(until, since)),
                  "include[]": ["users"]}
        out: dict[tuple[Any, ...], OnCall] = {}
        async for items, _env in self._pages("/oncalls", "oncalls", params):
            for raw in items:
                try:
                    entry = self._oncall(raw)
                except (ValueError, TypeError, KeyError, AttributeError) as exc:
                    metrics.MALFORMED.labels(self.account, endpoint).inc()
                    log.warning("pagerduty.oncall_skipped", account=self.account,
                                reason=str(exc))
                    continue
                out.setdefault((entry.schedule_id, entry.level, entry.user_id, entry.start,
                                entry.end), entry)
        missing = {o.user_id for o in out.values() if o.user_email is None}
        if missing:
            await self._directory(refresh=True)
        return [o if o.user_email else OnCall(o.schedule_id, o.level, o.user_id,
                                              self._emails.get(o.user_id), o.start, o.end,
                                              o.schedule_name, o.team)
                for o in out.values()]

    def _oncall(self, raw: Any) -> OnCall:
        if not isinstance(raw, dict):
            raise TypeError(f"on-call is {type(raw).__name__}")
        user = raw["user"]
        level = raw["escalation_level"]
        if not isinstance(user, dict) or not isinstance(user.get("id"), str):
            raise ValueError("on-call without a user id")
        if not isinstance(level, int) or level < 1:
            raise ValueError(f"bad escalation_level {level!r}")
        owner = raw.get("schedule") or raw.get("escalation_policy")
        if not isinstance(owner, dict) or not isinstance(owner.get("id"), str):
            raise ValueError("on-call without schedule or escalation policy")
        email = user.get("email")
        if isinstance(email, str):
            self._emails[user["id"]] = email
        name = owner.get("summary") or owner.get("name")
        return OnCall(owner["id"], level, user["id"], email if isinstance(email, str) else None,
                      _time(raw.get("start")), _time(raw.get("end")),
                      schedule_name=name if isinstance(name, str) else None)

    async def _read_directory(self) -> dict[str, str]:
        """user id -> email of every user in the account (``GET /users``)."""
        found = {}
        async for items, _env in self._pages("/users", "users", {}):
            for raw in items:
                if isinstance(raw, dict) and isinstance(raw.get("id"), str) \
                        and isinstance(raw.get("email"), str):
                    found[raw["id"]] = raw["email"]
        return found

    async def create_override(self, schedule_id: str, user_email: str, start: datetime,
                              end: datetime) -> str:
        """``POST /schedules/{id}/overrides``; the answer is a bare multi-status array (notes
        §5.9): 201 for the request, a status per override. An item of status 4xx (a user id
        cached in ``_emails`` for a user deleted since) created nothing, so the write the 201
        counted is taken back (``note_write_refused``): the override is refused, not unknown."""
        endpoint = "POST /schedules/{id}/overrides"
        user_id = await self._user_id(user_email)
        body = await self.http.json("POST", "/schedules/{id}/overrides", path={"id": schedule_id},
                                    json={"overrides": [{
                                        "start": _stamp(start), "end": _stamp(end),
                                        "user": {"id": user_id, "type": "user_reference"},
                                        "time_zone": "UTC"}]})
        if not isinstance(body, list) or len(body) != 1 or not isinstance(body[0], dict):
            raise self._malformed(endpoint, "expected a one-item array of override results")
        item = body[0]
        status = item.get("status")
        if status != 201:
            if isinstance(status, int) and 400 <= status < 500:
                note_write_refused()  # the 201 counted a write; this item made nothing
            raise PermanentError(f"override refused: {item.get('errors')!r}"[:300],
                                 account=self.account, endpoint=endpoint,
                                 status=status if isinstance(status, int) else None)
        override = item.get("override")
        if not isinstance(override, dict) or not isinstance(override.get("id"), str):
            raise self._malformed(endpoint, "created override has no id")
        return override["id"]

    async def _user_id(self, email: str) -> str:
        wanted = email.strip().lower()
        for uid, known in self._emails.items():
            if known.lower() == wanted:
                return uid
        async for items, _env in self._pages("/users", "users", {"query": email}):
            for raw in items:
                if isinstance(raw, dict) and isinstance(raw.get("email"), str) \
                        and isinstance(raw.get("id"), str):
                    self._emails[raw["id"]] = raw["email"]
                    if raw["email"].lower() == wanted:
                        return raw["id"]
        raise PermanentError(f"no PagerDuty user with email {email!r}", account=self.account,
                             endpoint="GET /users")


_MISSING = object()


class _Unsplittable(Exception):
    """A log-entry window over the offset cap that halving cannot shrink."""

    def __init__(self, total: int) -> None:
        super().__init__(f"{total} log entries in a window that cannot be split")
        self.total = total


def _entry_times(items: Sequence[Any]) -> list[datetime]:
    """The readable ``created_at`` of raw log entries (a vendor clock ahead of ours puts the
    end of an open window there, not at our clock)."""
    out = []
    for raw in items:
        try:
            at = _time(raw.get("created_at")) if isinstance(raw, dict) else None
        except ValueError:
            continue
        if at is not None:
            out.append(at)
    return out


def _unseen(items: Sequence[Any], skip: set[str]) -> list[Any]:
    """The log entries of a page not in ``skip`` (ids yielded already), now added to it. An
    entry without a string id is kept: the feed counts it as skipped."""
    out = []
    for raw in items:
        eid = raw.get("id") if isinstance(raw, dict) else None
        if isinstance(eid, str):
            if eid in skip:
                continue
            skip.add(eid)
        out.append(raw)
    return out


def _rest_end(pages: Sequence[Sequence[datetime]]) -> datetime | None:
    """Where the part of a log-entry window its pages have not read ends, or None when that
    cannot be known.

    PagerDuty lists log entries newest first, but does not document it (notes §5.6), so the
    order is checked on the pages read (each page newest first, and they show it at least
    once) rather than assumed. In that order, entries added while the window is read go in
    front and only push older ones to later offsets (they are read twice, never skipped), so
    an entry not read yet is no newer than the last page's oldest: the rest ends one second
    (stamps are whole seconds) after it, its second read again."""
    if not pages or not pages[-1]:
        return None
    steps = [b - a for page in pages for a, b in pairwise(page)]
    if not steps or any(step > timedelta(0) for step in steps) or not any(steps):
        return None
    return min(pages[-1]).replace(microsecond=0) + MIN_LOG_WINDOW


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _error_object(response: httpx.Response) -> tuple[int | None, str] | None:
    """(code, text) of PagerDuty's ``{"error": ...}`` body, or None when there is none."""
    if "json" not in response.headers.get("content-type", ""):
        return None
    try:
        body = parse_json(response, "", "")
    except MalformedResponse:
        return None
    if not isinstance(body, dict) or "error" not in body:
        return None
    error = body["error"]
    if isinstance(error, str):  # GET /users/me with an account key (notes §3)
        return None, error[:300]
    if not isinstance(error, dict):
        return None, str(error)[:300]
    code = error.get("code") if isinstance(error.get("code"), int) else None
    parts = [str(error.get("message") or "error")]
    if code is not None:
        parts.append(f"(code {code})")
    errors = error.get("errors")
    if isinstance(errors, list) and errors:
        parts.append("; ".join(str(e) for e in errors)[:200])
    return code, " ".join(parts)


def _load_cursor(cursor: str | None) -> dict[str, Any] | None:
    """The cursor is ``{"since": iso, "seen": [log entry ids], "sweep": offset}``; anything
    else = resync (a cursor without ``sweep`` starts the walk over)."""
    if not cursor:
        return None
    try:
        data = json.loads(cursor)
        since = _time(data["since"])
        seen = data.get("seen", [])
        sweep = data.get("sweep", 0)
        if since is None or not isinstance(seen, list):
            return None
        return {"since": since, "seen": [s for s in seen if isinstance(s, str)],
                "sweep": sweep if isinstance(sweep, int) and sweep >= 0 else 0}
    except (ValueError, KeyError, TypeError):
        return None


def _dump_cursor(since: datetime, seen: list[str], sweep: int) -> str:
    return json.dumps({"since": _stamp(since), "seen": seen, "sweep": sweep})
