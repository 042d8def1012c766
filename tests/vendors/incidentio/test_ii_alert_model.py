"""The incident.io client in the alert model (``model = "alert"``): a syncd record is an
incident.io alert plus its escalations. Against the simulator through the ASGI transport."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from ii_helpers import drain, make_client
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from syncd import config
from syncd.config import SyncGroup
from syncd.engine.observe import GroupContext, ObserveResult, observe
from syncd.ledger import Ledger
from syncd.model import Incident, NewIncident, Severity, State
from syncd.simulators.incidentio import (
    ALERT_SOURCE_ID,
    ALERT_SOURCE_TOKEN,
    DEFAULT_API_KEY,
    IncidentIOSimulator,
)
from syncd.vendors.base import (
    Action,
    AuthError,
    Capability,
    Outcome,
    PermanentError,
    Push,
    TransientError,
)
from syncd.vendors.incidentio import IncidentIOClient

ALERT = {"model": "alert", "alert_source_config_id": ALERT_SOURCE_ID,
         "alert_source_token": ALERT_SOURCE_TOKEN}
INTAKE = "/v2/alert_events/http/{alert_source_config_id}"


@pytest.fixture
async def alerts(sim: IncidentIOSimulator) -> AsyncIterator[IncidentIOClient]:
    c = make_client(sim, **ALERT)
    yield c
    await c.aclose()


def push(eid: str, action: Action) -> Push:
    return Push(eid, action, f"k-{eid}-{action.value}")


def alert_id(sim: IncidentIOSimulator, dedup: str) -> str:
    return next(a.id for a in sim.alerts.values() if a.dedup == dedup)


def escalations_of(sim: IncidentIOSimulator, aid: str) -> list[Any]:
    return [e for e in sim.escalations.values() if aid in e.alert_ids]


# --------------------------------------------------------------------------- capabilities, config


async def test_capabilities_are_per_instance(sim: IncidentIOSimulator,
                                             client: IncidentIOClient,
                                             alerts: IncidentIOClient) -> None:
    assert client.capabilities & Capability.SEVERITY_READ
    assert client.capabilities & Capability.SEVERITY_WRITE
    assert not alerts.capabilities & (Capability.SEVERITY_READ | Capability.SEVERITY_WRITE)
    for c in (client, alerts):
        assert c.capabilities & (Capability.ACK | Capability.RESOLVE | Capability.CREATE)
        assert not c.capabilities & (Capability.UNACK | Capability.REOPEN)
    assert IncidentIOClient.capabilities == client.capabilities  # the class keeps the default
    assert Action.SET_SEVERITY not in alerts.batch_size
    with pytest.raises(PermanentError, match="cannot severity"):
        await alerts.push(Action.SET_SEVERITY, [Push("x", Action.SET_SEVERITY, "k",
                                                     Severity.SEV1)])


ACCOUNT = """
[accounts.io]
vendor = "incidentio"
api_key = "env:T_II_KEY"
{extra}
"""


def load(tmp_path: Path, extra: str) -> config.Config:
    path = tmp_path / "syncd.toml"
    path.write_text(ACCOUNT.format(extra=extra))
    return config.load(path)


def problems(tmp_path: Path, extra: str) -> list[str]:
    with pytest.raises(config.ConfigError) as info:
        load(tmp_path, extra)
    return info.value.lines


def test_config_keys_of_the_alert_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    monkeypatch.setenv("T_II_KEY", "inc_key")
    monkeypatch.setenv("T_II_SRC", "source-secret")
    cfg = load(tmp_path, "")
    assert cfg.accounts["io"].model == "incident"
    cfg = load(tmp_path, 'model = "alert"\nalert_source_config_id = "01SRC"\n'
                         'alert_source_token = "env:T_II_SRC"')
    settings = cfg.accounts["io"]
    assert settings.model == "alert" and settings.alert_source_config_id == "01SRC"
    assert settings.alert_source_token.get_secret_value() == "source-secret"
    assert "source-secret" not in repr(settings)

    lines = problems(tmp_path, 'model = "alert"\nalert_source_token = "env:T_II_SRC"')
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "accounts.io" in lines[0] and "alert_source_config_id" in lines[0]
    assert "alert_source_token" not in lines[0]
    lines = problems(tmp_path, 'model = "alert"')
    assert len(lines) == 1
    assert "alert_source_config_id and alert_source_token" in lines[0]
    lines = problems(tmp_path, 'alert_source_config_id = "01SRC"')
    assert len(lines) == 1 and 'only apply with model = "alert"' in lines[0]
    lines = problems(tmp_path, 'model = "alerts"')
    assert len(lines) == 1 and "accounts.io.model" in lines[0]
    lines = problems(tmp_path, 'model = "alert"\nalert_source_config_id = "01SRC"\n'
                               'alert_source_token = "env:T_II_MISSING"')
    assert len(lines) == 1 and "T_II_MISSING" in lines[0]


# --------------------------------------------------------------------------- poll


async def test_full_poll_reads_firing_alerts_with_ack_state(
        sim: IncidentIOSimulator, alerts: IncidentIOClient) -> None:
    for k in ("a", "b", "c", "d"):
        sim.alert(dedup=k, title=f"Alert {k}", severity="sev1")
    sim.act(sim.alerts[alert_id(sim, "a")].incident_id, "acknowledge")
    sim.alert(dedup="c", title="Alert c", action="resolve")
    for esc in escalations_of(sim, alert_id(sim, "d")):
        sim._esc_event(esc, "cancelled", "cancelled")  # firing, nothing paging any more
    sim.seed_incidents(2, state="acknowledged")  # incidents without alerts: not records here
    found, cursor, skipped = await drain(alerts)
    assert cursor and json.loads(cursor)["model"] == "alert" and not skipped
    ids = {k: alert_id(sim, k) for k in "abcd"}
    assert set(found) == {ids["a"], ids["b"], ids["d"]}  # firing ones only
    a, b, d = found[ids["a"]], found[ids["b"]], found[ids["d"]]
    assert a.state is State.ACKNOWLEDGED and a.ack_sticky  # no un-ack (notes 6)
    assert b.state is State.TRIGGERED and d.state is State.TRIGGERED
    assert a.title == "Alert a" and a.keys == {"dedup": "a"}
    assert a.severity is None  # alerts have no severity
    assert a.created_at and a.updated_at and a.number is None


async def test_full_poll_pages_and_filters_by_source(sim: IncidentIOSimulator) -> None:
    for n in range(60):  # more than one page of 50
        sim.alert(dedup=f"k{n}", title=f"t{n}")
    c = make_client(sim, **ALERT)
    other = make_client(sim, **ALERT, alert_sources=["01OTHERSOURCE"])
    try:
        found, _, _ = await drain(c)
        assert len(found) == 60
        assert sim.call_count(route="/v2/alerts", method="GET") == 2
        found, _, _ = await drain(other)
        assert found == {}
    finally:
        await c.aclose()
        await other.aclose()


async def test_alert_feed_reads_since_the_cursor_time_not_its_day(
        sim: IncidentIOSimulator) -> None:
    """GET /v2/alerts documents ``updated_at[gte]=<last sync time>`` (a timestamp), so alerts
    that changed earlier today cost no page; the escalation feed still compares days."""
    now = sim.clock.now()
    noon = now.replace(hour=12, minute=0, second=0, microsecond=0)
    sim.clock.advance(((noon - now).total_seconds()) % 86400)  # no midnight in this test
    for n in range(60):  # more than one page of 50, all updated today
        sim.alert(dedup=f"k{n}", title=f"t{n}")
    c = make_client(sim, **ALERT, change_overlap=60)
    try:
        _, cursor, _ = await drain(c)
        sim.clock.advance(600)
        _, cursor, _ = await drain(c, cursor)
        sim.clock.advance(30)
        sim.calls.clear()
        found, _, _ = await drain(c, cursor)
        assert found == {}
        assert sim.call_count(route="/v2/alerts", method="GET") == 1, sim.calls
        assert sim.call_count(route="/v2/escalations", method="GET") == 2, sim.calls
    finally:
        await c.aclose()
    async with sim.client(headers={"Authorization": f"Bearer {DEFAULT_API_KEY}"}) as http:
        edge = sim.clock.now().date().isoformat()
        by_day = await http.get("/v2/alerts", params={"page_size": 50,
                                                      "updated_at[gte]": edge})
        assert len(by_day.json()["alerts"]) == 50
        later = (sim.clock.now() - timedelta(seconds=1)).isoformat()
        by_time = await http.get("/v2/alerts", params={"page_size": 50,
                                                       "updated_at[gte]": later})
        assert by_time.json()["alerts"] == []
        esc = await http.get("/v2/escalations", params={"page_size": 50,
                                                        "updated_at[gte]": later})
        assert len(esc.json()["escalations"]) == 50  # escalations: the day of the timestamp


async def test_change_feed_sees_resolves_and_acks_that_do_not_bump_the_alert(
        sim: IncidentIOSimulator, alerts: IncidentIOClient) -> None:
    for k in ("a", "b", "c"):
        sim.alert(dedup=k, title=k)
    ids = {k: alert_id(sim, k) for k in "abc"}
    _, cursor, _ = await drain(alerts)
    sim.clock.advance(5)
    sim.alert(dedup="a", title="a", action="resolve")
    # Acks live on escalations; incident.io does not bump the alert for them.
    before = sim.alerts[ids["b"]].updated
    sim._ack(escalations_of(sim, ids["b"])[0], None)
    assert sim.alerts[ids["b"]].updated == before
    sim.calls.clear()
    found, cursor2, skipped = await drain(alerts, cursor)
    assert not skipped
    # c's escalation was written a moment after c: it may be reported again, unchanged.
    assert {ids["a"], ids["b"]} <= set(found) <= set(ids.values())
    assert ids["c"] not in found or found[ids["c"]].state is State.TRIGGERED
    assert found[ids["a"]].state is State.RESOLVED
    assert found[ids["b"]].state is State.ACKNOWLEDGED
    assert sim.call_count(route="/v2/alerts", method="GET") == 1
    assert sim.call_count(route="/v2/incidents", method="GET") == 0
    sim.clock.advance(5)
    found, cursor3, _ = await drain(alerts, cursor2)
    assert found == {}  # nothing changed: nothing reported again
    # An incident-model cursor is not this model's: a full read, never a crash.
    incident_cursor = json.dumps({"v": 1, "since": json.loads(cursor3)["since"]})
    found, _, _ = await drain(alerts, incident_cursor)
    assert set(found) == {ids["b"], ids["c"]}
    found, _, _ = await drain(alerts, "not json")
    assert set(found) == {ids["b"], ids["c"]}


@pytest.mark.parametrize("acked_first", [False, True])
async def test_a_firing_listing_takes_no_time_from_the_escalations_its_resolve_ended(
        sim: IncidentIOSimulator, alerts: IncidentIOClient, acked_first: bool) -> None:
    """An alert's resolve cancels its open escalations and resolves acked ones (route option
    ``auto_cancel_escalations``, notes 7): while the alerts list still shows it firing, the
    fresh escalations read must not stamp that listing with the resolve's time."""
    sim.alert(dedup="a", title="a")
    alert = sim.alerts[alert_id(sim, "a")]
    listed = alert.updated
    if acked_first:
        sim.clock.advance(5)
        sim._ack(escalations_of(sim, alert.id)[0], None)
    sim.clock.advance(5)
    sim.alert(dedup="a", title="a", action="resolve")
    assert {e.status for e in escalations_of(sim, alert.id)} == {
        "resolved" if acked_first else "cancelled"}
    alert.status, alert.updated, alert.resolved_at = "firing", listed, None  # the list lags
    found, _, _ = await drain(alerts)
    assert found[alert.id].state is (State.ACKNOWLEDGED if acked_first else State.TRIGGERED)
    assert found[alert.id].updated_at == listed


async def test_an_ack_after_the_alert_resolved_does_not_reopen_it_through_a_lagging_list(
        tmp_path: Path) -> None:
    """Without ``auto_cancel_escalations`` (notes 7) an alert's resolve leaves its escalation
    paging, and the paged person acks it after the resolve. While the alerts list still shows
    the alert firing with its old time, the fresh escalations read stamps that listing with the
    ack, newer than the resolve: by that time it was taken for a reopen (record resolved ->
    acknowledged). A reopen bumps the alert's own time; list lag does not."""
    sim = IncidentIOSimulator(seed=3, auto_cancel_escalations=False, auto_decline=False)
    alerts = make_client(sim, **ALERT)
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}")
    caps = Capability.ACK | Capability.RESOLVE
    groups = [GroupContext.build(SyncGroup(name="g", accounts=["a", "b"],
                                           regressions="follow"), {"a": caps, "b": caps})]

    def seen(account: str, incidents: list[Incident]) -> ObserveResult:
        now = sim.clock.now()
        return ledger.call(lambda tx: observe(tx, account, incidents, groups, now,
                                              grace=timedelta(seconds=60)))

    try:
        sim.alert(dedup="a", title="a")
        alert = sim.alerts[alert_id(sim, "a")]
        listed = alert.updated
        found, cursor, _ = await drain(alerts)
        seen("a", list(found.values()))
        seen("b", [Incident("9", State.TRIGGERED, "a", keys={"dedup": "a"}, updated_at=listed)])
        sim.clock.advance(5)
        sim.alert(dedup="a", title="a", action="resolve")
        found, _, _ = await drain(alerts, cursor)
        assert found[alert.id].state is State.RESOLVED
        seen("a", [found[alert.id]])
        seen("b", [Incident("9", State.RESOLVED, "a", keys={"dedup": "a"},
                            updated_at=listed + timedelta(seconds=6))])
        sim.clock.advance(5)
        (esc,) = escalations_of(sim, alert.id)
        assert esc.status == "triggered"  # still paging
        assert sim._ack(esc, None)
        alert.status, alert.updated, alert.resolved_at = "firing", listed, None  # the list lags
        found, _, _ = await drain(alerts)
        assert found[alert.id].state is State.ACKNOWLEDGED
        assert found[alert.id].updated_at > alert.updated  # the ack's time, after the resolve
        assert seen("a", [found[alert.id]]).stale == 1
    finally:
        await alerts.aclose()
    rec = ledger.call(lambda tx: tx.record("a", alert.id))
    assert rec is not None and rec.state == "resolved"
    agreed = ledger.call(lambda tx: tx.agreed(1)["state"].value)
    assert agreed == "resolved"


async def test_bad_alert_records_are_skipped(sim: IncidentIOSimulator) -> None:
    for k in ("a", "b", "c"):
        sim.alert(dedup=k, title=k)

    def rewrite(raw: bytes) -> bytes:
        data = json.loads(raw)
        data["alerts"][0]["status"] = "exploded"
        data["alerts"][1].pop("title")
        return json.dumps(data).encode()

    c = make_client(sim, httpx.ASGITransport(app=Rewrite(sim.app, "/v2/alerts", rewrite)),
                    **ALERT)
    try:
        found, cursor, skipped = await drain(c)
    finally:
        await c.aclose()
    assert len(found) == 1 and cursor
    assert sorted(s.reason for s in skipped) == ["missing title",
                                                 "unknown alert status 'exploded'"]


# --------------------------------------------------------------------------- writes


async def test_ack_goes_through_the_alerts_escalations(
        sim: IncidentIOSimulator, alerts: IncidentIOClient) -> None:
    for k in ("a", "b", "c", "d"):
        sim.alert(dedup=k, title=k)
    ids = {k: alert_id(sim, k) for k in "abcd"}
    sim.alert(dedup="c", title="c", action="resolve")
    for esc in escalations_of(sim, ids["d"]):
        sim._esc_event(esc, "cancelled", "cancelled")
    sim.calls.clear()
    res = await alerts.push(Action.ACKNOWLEDGE, [push(ids[k], Action.ACKNOWLEDGE)
                                                 for k in "ab"])
    assert [r.outcome for r in res] == [Outcome.DONE, Outcome.DONE]
    assert sim.call_count(route="/v2/escalations", method="GET") == 1  # one lookup per batch
    assert sim.call_count(route="/v2/escalations/{escalation_id}/actions/respond") == 2
    assert all(e.status == "acked" for k in "ab" for e in escalations_of(sim, ids[k]))
    found = await alerts.find_created("a")
    assert found is not None and found.state is State.ACKNOWLEDGED
    res = await alerts.push(Action.ACKNOWLEDGE, [
        push(ids["a"], Action.ACKNOWLEDGE), push(ids["c"], Action.ACKNOWLEDGE),
        push(ids["d"], Action.ACKNOWLEDGE), push("01HNOPE0000000000000000000",
                                                 Action.ACKNOWLEDGE)])
    assert [r.outcome for r in res] == [Outcome.ALREADY, Outcome.ALREADY, Outcome.REFUSED,
                                        Outcome.REFUSED]
    assert "already resolved" in res[1].message  # a late ack never reopens
    assert "capability gap" in res[2].message  # nothing to ack; never faked
    assert sim.alerts[ids["c"]].status == "resolved"


async def test_resolve_through_the_alert_resolve_action(
        sim: IncidentIOSimulator, alerts: IncidentIOClient) -> None:
    sim.alert(dedup="a", title="a")
    aid = alert_id(sim, "a")
    res = await alerts.push(Action.RESOLVE, [push(aid, Action.RESOLVE)])
    assert res[0].outcome is Outcome.DONE and res[0].incident is not None
    assert res[0].incident.state is State.RESOLVED and res[0].incident.external_id == aid
    assert sim.alerts[aid].status == "resolved"
    assert {e.status for e in escalations_of(sim, aid)} == {"cancelled"}  # route auto-cancel
    assert sim.call_count(route="/v2/escalations/{id}/actions/cancel") == 0
    again = await alerts.push(Action.RESOLVE, [push(aid, Action.RESOLVE)])
    assert again[0].outcome is Outcome.DONE and again[0].incident.state is State.RESOLVED
    missing = await alerts.push(Action.RESOLVE, [push("01HNOPE0000000000000000000",
                                                      Action.RESOLVE)])
    assert missing[0].outcome is Outcome.REFUSED


async def test_resolve_cancels_escalations_the_route_leaves_paging() -> None:
    # Neither route option: the escalation would keep paging after the alert resolves.
    sim = IncidentIOSimulator(seed=2, auto_cancel_escalations=False, auto_decline=False)
    c = make_client(sim, **ALERT)
    try:
        sim.alert(dedup="a", title="a")
        aid = alert_id(sim, "a")
        res = await c.push(Action.RESOLVE, [push(aid, Action.RESOLVE)])
    finally:
        await c.aclose()
    assert res[0].outcome is Outcome.DONE and not res[0].message
    assert {e.status for e in escalations_of(sim, aid)} == {"cancelled"}
    assert sim.call_count(route="/v2/escalations/{id}/actions/cancel") == 1


# --------------------------------------------------------------------------- create


async def test_create_sends_an_alert_event_and_is_found_after_a_crash(
        sim: IncidentIOSimulator, alerts: IncidentIOClient) -> None:
    new = NewIncident(marker="syncd-grp-7", title="Mirrored from PagerDuty",
                      severity=Severity.SEV2, details="from PagerDuty")
    assert await alerts.find_created(new.marker) is None
    first = await alerts.create(new)
    assert first.state is State.TRIGGERED and first.title == new.title
    assert first.keys == {"dedup": new.marker, "marker": new.marker}
    assert first.severity is None
    alert = sim.alerts[first.external_id]
    assert alert.source_id == ALERT_SOURCE_ID and alert.status == "firing"
    assert sim.call_count(route=INTAKE) == 1
    # The route paged someone: the escalation is what an ack will act on.
    assert escalations_of(sim, first.external_id)
    # A crash after the vendor acted but before we stored the answer: a new process.
    fresh = make_client(sim, **ALERT)
    try:
        found = await fresh.find_created(new.marker)
        assert found is not None and found.external_id == first.external_id
        assert found.keys["marker"] == new.marker
        again = await fresh.create(new)
        assert again.external_id == first.external_id
        # Even once resolved, a repeated create finds it instead of firing a second alert.
        sim.alert(dedup=new.marker, title=new.title, action="resolve")
        again = await fresh.create(new)
        assert again.external_id == first.external_id and again.state is State.RESOLVED
    finally:
        await fresh.aclose()
    assert len(sim.alerts) == 1 and sim.call_count(route=INTAKE) == 1
    resolved = await alerts.create(NewIncident(marker="syncd-grp-8", title="t",
                                               state=State.RESOLVED))
    assert resolved.state is State.RESOLVED
    assert sim.alerts[resolved.external_id].status == "resolved"


async def test_crash_between_intake_and_lookup_never_creates_twice(
        sim: IncidentIOSimulator) -> None:
    # The event went out (intake is asynchronous), the alert is not listed yet: create gives
    # up with a transient error, and the retry finds the alert instead of sending again.
    hide = Hide(sim.app)
    c = make_client(sim, httpx.ASGITransport(app=hide), **ALERT)
    new = NewIncident(marker="syncd-grp-9", title="Delayed")
    try:
        with pytest.raises(TransientError, match="not listed yet"):
            await c.create(new)
        assert len(sim.alerts) == 1 and sim.call_count(route=INTAKE) == 1
        hide.active = False
        found = await c.find_created(new.marker)
        assert found is not None and found.keys["marker"] == new.marker
        again = await c.create(new)
        assert again.external_id == found.external_id
    finally:
        await c.aclose()
    assert len(sim.alerts) == 1 and sim.call_count(route=INTAKE) == 1


async def test_create_with_a_wrong_source_token_is_an_auth_error(
        sim: IncidentIOSimulator) -> None:
    c = make_client(sim, **{**ALERT, "alert_source_token": "wrong-token"})
    try:
        with pytest.raises(AuthError) as info:
            await c.create(NewIncident(marker="syncd-grp-1", title="t"))
    finally:
        await c.aclose()
    assert "wrong-token" not in str(info.value)
    assert sim.alerts == {}


# --------------------------------------------------------------------------- test doubles


class Rewrite:
    """An ASGI wrapper that rewrites one route's JSON body: a test double for the network."""

    def __init__(self, app: ASGIApp, path: str, rewrite: Any) -> None:
        self.app, self.path, self.rewrite = app, path, rewrite

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        body = self.rewrite(b"".join(chunks))
        headers = [(k, v) for k, v in start["headers"] if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": start["status"],
                    "headers": headers})
        await send({"type": "http.response.body", "body": body})


class Hide(Rewrite):
    """GET /v2/alerts lists nothing while ``active``: an intake that has not processed yet."""

    def __init__(self, app: ASGIApp) -> None:
        self.active = True
        super().__init__(app, "/v2/alerts", self._hide)

    def _hide(self, raw: bytes) -> bytes:
        if not self.active:
            return raw
        data = json.loads(raw)
        data["alerts"], data["pagination_meta"] = [], {"page_size": 50}
        return json.dumps(data).encode()
