"""incident.io's alert model (``model = "alert"``, for incident.io On-call paging, notes 9.2): a
syncd record is an incident.io ALERT plus the escalations it triggered.

- alert ``resolved`` -> resolved; ``firing`` with an escalation that is ``acked`` or has an
  ``acked`` event -> acknowledged; otherwise (escalation triggered, or none) -> triggered.
- keys: ``dedup`` = the alert's deduplication_key; ``marker`` when syncd created it (the
  marker URL in ``source_url``, else ``[syncd:...]`` in the description).
- Alerts have no severity (SEVERITY_READ/WRITE are absent from this model's capabilities).
- Change feed: ``GET /v2/alerts?updated_at[gte]`` plus escalations by ``updated_at`` (an ack does
  not bump the alert); full resync = every firing alert.
- Writes: ack = respond on the alert's open escalations (shared with the incident model, in
  :mod:`syncd.vendors.incidentio`); resolve = ``POST /v2/alerts/{id}/actions/resolve``
  (idempotent), then cancel escalations still paging.
- Create: a ``firing`` event on the configured HTTP source with ``deduplication_key`` = the
  marker, then ``GET /v2/alerts?deduplication_key[is]=<marker>`` (also ``find_created``).

The client (:class:`~syncd.vendors.incidentio.IncidentIOClient`) owns the HTTP session, the
escalation reads and acks, the poll loop, on-call and the user directory; this module only says
what an alert record is and how one is read, resolved and created.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from syncd import metrics
from syncd.model import Incident, NewIncident, State
from syncd.vendors._http import require
from syncd.vendors.base import (
    Action,
    AuthError,
    Outcome,
    Page,
    PermanentError,
    Push,
    PushResult,
    Skipped,
    TransientError,
)
from syncd.vendors.client import parse_time as _time
from syncd.vendors.client import stamp
from syncd.vendors.incidentio import (
    INTAKE,
    INTAKE_ENDPOINT,
    MARKER,
    MARKER_URL,
    RecordModel,
    created_of,
    with_escalations,
)

if TYPE_CHECKING:
    from datetime import datetime

ALERT_PAGE = 50  # GET /v2/alerts: page_size is required, at most 50 (notes 3)
# Intake is asynchronous (202 "accepted for processing", notes 7): look for the new alert this
# many times, waiting these seconds in between, before leaving it to the next attempt (ours).
CREATE_LOOKUPS = (0.0, 0.5, 1.0, 2.0)


def _marker_of(source_url: Any, description: Any) -> str | None:
    """syncd's creation marker on an alert: the marker URL in ``source_url``, else the
    ``[syncd:...]`` tag in the description."""
    prefix = MARKER_URL.format(marker="")
    if isinstance(source_url, str) and source_url.startswith(prefix):
        marker = source_url[len(prefix):]
        if MARKER.fullmatch(f"[syncd:{marker}]"):
            return marker
    found = MARKER.search(description) if isinstance(description, str) else None
    return found.group(1) if found else None


class AlertModel(RecordModel):
    """A syncd record is an incident.io alert and its escalations."""

    kind = "alert"

    def _source_ok(self, raw: dict[str, Any]) -> bool:
        wanted = self.settings.alert_sources
        return not wanted or raw.get("alert_source_id") in wanted

    def _parse(self, raw: Any, acked: set[str]) -> Incident:
        """An AlertV2 (or AlertSlimV2: same fields but attributes) as a syncd record."""
        if not isinstance(raw, dict):
            raise TypeError(f"alert is {type(raw).__name__}, not an object")
        aid = raw.get("id")
        if not isinstance(aid, str) or not aid:
            raise ValueError("missing id")
        title = raw.get("title")
        if not isinstance(title, str):
            raise ValueError("missing title")
        status = raw.get("status")
        if status == "resolved":
            state = State.RESOLVED
        elif status == "firing":
            state = State.ACKNOWLEDGED if aid in acked else State.TRIGGERED
        else:
            raise ValueError(f"unknown alert status {status!r}")
        keys: dict[str, str] = {}
        dedup = raw.get("deduplication_key")
        if isinstance(dedup, str) and dedup:
            keys["dedup"] = dedup
        marker = _marker_of(raw.get("source_url"), raw.get("description"))
        if marker:
            keys["marker"] = marker
        return Incident(
            external_id=aid, state=state, title=title, severity=None, keys=keys,
            created_at=_time(raw.get("created_at")), updated_at=_time(raw.get("updated_at")),
            ack_sticky=True,
        )

    async def _build(self, raws: list[Any], endpoint: str
                     ) -> tuple[list[Incident], list[Skipped]]:
        """Parse alerts, with the ack state of the firing ones from their escalations."""
        firing = [r["id"] for r in raws if isinstance(r, dict) and isinstance(r.get("id"), str)
                  and r.get("status") == "firing"]
        esc_changed: dict[str, datetime] = {}
        acked, _ = (await self.client._acked(firing, "alert", esc_changed) if firing
                    else (set(), {}))
        return self._parse_all(raws, endpoint, lambda raw: with_escalations(
            self._parse(raw, acked), esc_changed))

    # ------------------------------------------------------------------ poll

    async def pages(self, since: datetime | None) -> AsyncIterator[Page]:
        """Alerts changed since ``since`` (every firing one when None), one Page per page."""
        endpoint = "GET /v2/alerts"
        params: dict[str, Any] = {"page_size": ALERT_PAGE}
        if self.settings.alert_sources:
            params["alert_source[one_of]"] = list(self.settings.alert_sources)
        if since is None:
            params["status[one_of]"] = ["firing"]
        else:
            # /v2/alerts documents a timestamp here ("poll with updated_at[gte] set to your
            # last sync time"), unlike incidents and escalations, whose filters compare dates.
            params["updated_at[gte]"] = stamp(since, "us")
        async for items in self.client._list("/v2/alerts", "alerts", params):
            items = self.client._fresh(items, since)
            incidents, skipped = await self._build(items, endpoint)
            yield Page(incidents=incidents, skipped=skipped)

    async def related(self, escalations: list[dict[str, Any]], seen: set[str]) -> Page | None:
        """The alerts of changed escalations not read yet (AlertSlimV2 is enough to build a
        record), or None when there are none."""
        extra: dict[str, dict[str, Any]] = {}
        for esc in escalations:
            for rel in esc.get("related_alerts") or []:
                rid = rel.get("id") if isinstance(rel, dict) else None
                if (isinstance(rid, str) and rid not in seen and rid not in extra
                        and self._source_ok(rel)):
                    extra[rid] = rel
        if not extra:
            return None
        incidents, skipped = await self._build(list(extra.values()), "GET /v2/escalations")
        return Page(incidents=incidents, skipped=skipped)

    # ------------------------------------------------------------------ push

    async def resolved_and_created(self, aid: str) -> tuple[bool, datetime | None]:
        raw = await self._show(aid)
        return raw.get("status") == "resolved", created_of(raw)

    async def write(self, action: Action, p: Push) -> PushResult:
        """Resolve: the only write besides acks (``batch_size`` has no severity here)."""
        return await self._resolve(p)

    async def _resolve(self, p: Push) -> PushResult:
        """POST /v2/alerts/{id}/actions/resolve: targets this alert by id, answers with it
        synchronously and is a documented no-op on a resolved alert (notes 7). The alert event
        ``status: "resolved"`` would need the source secret, answers only "accepted" and
        resolves whichever alert is firing under the key, so it is not used for this."""
        endpoint = "POST /v2/alerts/{id}/actions/resolve"
        try:
            data = await self.http.json("POST", "/v2/alerts/{id}/actions/resolve",
                                        path={"id": p.external_id}, idempotent=True)
        except PermanentError as exc:  # 404 (or private), 422 externally resolved sources
            return PushResult(p.external_id, Outcome.REFUSED, exc.message)
        self.client._check_failure(data, endpoint)
        raw = require(data, "alert", dict, endpoint=endpoint, account=self.account)
        message = await self._cancel_escalations(p.external_id)
        return PushResult(p.external_id, Outcome.DONE, message,
                          incident=await self._one(raw, endpoint))

    async def _cancel_escalations(self, aid: str) -> str:
        """Cancel escalations still paging for a resolved alert: routes do it themselves with
        ``auto_cancel_escalations``; otherwise they would keep paging (notes 7, 9.2). Best
        effort: the resolve already happened, so a refusal is reported, not raised."""
        _, ackable = await self.client._acked([aid], "alert", push=True)
        problems = []
        for esc_id in ackable.get(aid, []):
            try:
                # Cancelling a cancelled escalation is a no-op (notes 6): safe to retry.
                await self.http.request("POST", "/v2/escalations/{id}/actions/cancel",
                                        path={"id": esc_id}, idempotent=True)
            except (PermanentError, AuthError) as exc:
                problems.append(f"escalation {esc_id} not cancelled: {exc.message}")
        return "; ".join(problems)

    # ------------------------------------------------------------------ create

    async def _find(self, marker: str) -> dict[str, Any] | None:
        """The alert syncd created with ``marker`` as its deduplication key: ours (marker read
        back) first, then on our source, firing before resolved, newest first."""
        endpoint = "GET /v2/alerts"
        source = self.settings.alert_source_config_id
        found: list[dict[str, Any]] = []
        async for items in self.client._list("/v2/alerts", "alerts", {
                "deduplication_key[is]": marker, "page_size": ALERT_PAGE}):
            for raw in items:
                if (isinstance(raw, dict) and isinstance(raw.get("id"), str)
                        and raw.get("deduplication_key") == marker):
                    found.append(raw)
                else:
                    metrics.MALFORMED.labels(self.account, endpoint).inc()
        if not found:
            return None

        def rank(raw: dict[str, Any]) -> tuple[bool, bool, bool, str]:
            mine = _marker_of(raw.get("source_url"), raw.get("description")) == marker
            created = raw.get("created_at")
            return (mine, raw.get("alert_source_id") == source, raw.get("status") == "firing",
                    created if isinstance(created, str) else "")
        return max(found, key=rank)

    async def find_created(self, marker: str) -> Incident | None:
        raw = await self._find(marker)
        return None if raw is None else await self._one(raw, "GET /v2/alerts")

    async def create(self, new: NewIncident) -> Incident:
        """A ``firing`` event on the configured HTTP source, ``deduplication_key`` = the marker:
        while that alert fires a repeat creates nothing (notes 7), so a retry is safe. Intake
        is asynchronous, so the alert is then looked up by its key; when it does not show up
        in time this raises TransientError and the retry finds it (``find_created``) instead
        of creating a second one."""
        settings = self.settings
        assert settings.alert_source_config_id and settings.alert_source_token  # validated
        existing = await self._find(new.marker)
        if existing is None:
            metadata: dict[str, Any] = {"syncd_marker": new.marker}
            if new.severity is not None:
                metadata["severity"] = new.severity.value  # for routes that map it
            body = {
                "title": new.title, "status": "firing", "deduplication_key": new.marker,
                "description": f"{new.details}\n\n[syncd:{new.marker}]".strip(),
                "source_url": MARKER_URL.format(marker=new.marker), "metadata": metadata,
            }
            token = settings.alert_source_token.get_secret_value()
            data = await self.http.json(
                "POST", INTAKE, path={"alert_source_config_id": settings.alert_source_config_id},
                json=body, headers={"authorization": f"Bearer {token}"}, idempotent=True)
            self.client._check_failure(data, INTAKE_ENDPOINT)
            if not isinstance(data, dict) or data.get("status") != "success":
                raise self.client._malformed(INTAKE_ENDPOINT,
                                             f"event not accepted: {str(data)[:200]}")
            for delay in CREATE_LOOKUPS:
                if delay:
                    await self.client._sleep(delay)
                existing = await self._find(new.marker)
                if existing is not None:
                    break
            else:
                raise TransientError("alert event accepted but the alert is not listed yet",
                                     account=self.account, endpoint="GET /v2/alerts")
        created = await self._one(existing, "GET /v2/alerts")
        if new.state is State.RESOLVED and created.state is not State.RESOLVED:
            result = await self._resolve(Push(created.external_id, Action.RESOLVE, new.marker))
            if result.incident is not None:
                created = result.incident
        return created
