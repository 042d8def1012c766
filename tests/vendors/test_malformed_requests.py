"""Malformed writes get the vendor's 4xx, in the vendor's error shape, and change nothing.

For every implemented write operation of every simulator: a valid body (which must succeed, so
the test cannot pass vacuously), then every field replaced by the wrong JSON type (an object,
array or number where a string is documented; a string where anything else is), and an unknown
field injected into every object of the body. Each variant must be refused with a 4xx in the
vendor's error shape (unknown fields with "not simulated: FIELD") and leave the simulator's
state exactly as it was. The issue (19) found 500s from ``TypeError: unhashable``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest

from syncd.simulators import incidentio as ii
from syncd.simulators import pagerduty as pd
from syncd.simulators import spike as sp
from syncd.simulators import victorops as vo
from syncd.simulators.base import Simulator, iso

Json = dict[str, Any]
Write = tuple[str, str, Json]  # method, path, valid body
UNKNOWN = "zz_unmodelled"

# Attributes that change on every request whatever its outcome (clock, counters, limiter
# windows, the request-id generator, caches) and are not account state.
VOLATILE = {"clock", "random", "faults", "calls", "window", "tokens", "app", "_vendor_routes",
            "_list_cache", "rate_limits_enabled", "rate_scale", "inflight", "peak_inflight",
            "inflight_by_route", "write_log"}


def snapshot(sim: Simulator) -> dict[str, str]:
    """The whole account state as text: any change to any record or counter shows."""
    return {k: _dump(v) for k, v in vars(sim).items() if k not in VOLATILE}


def _dump(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_dump(k)}: {_dump(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple, set, frozenset, deque)):
        items = sorted(map(_dump, v)) if isinstance(v, (set, frozenset)) else map(_dump, v)
        return f"{type(v).__name__}[" + ", ".join(items) + "]"
    if not dataclasses.is_dataclass(v) and type(v).__module__.startswith("syncd.") \
            and hasattr(v, "__dict__"):
        return f"{type(v).__name__}({_dump(vars(v))})"  # plain classes have no useful repr
    return repr(v)


def _set(body: Json, path: tuple[Any, ...], value: Any) -> Json:
    out = copy.deepcopy(body)
    node: Any = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return out


def wrong_types(body: Json) -> Iterator[tuple[str, Json]]:
    """(field path, body with that field's type wrong) for every field at every depth."""
    def walk(node: Any, path: tuple[Any, ...]) -> Iterator[tuple[str, Json]]:
        items = node.items() if isinstance(node, dict) else enumerate(node) \
            if isinstance(node, list) else []
        for key, value in items:
            here = (*path, key)
            if isinstance(value, str):
                wrong: list[Any] = [{}, [1], 5]
            elif isinstance(value, dict):
                wrong = ["AAA", [], 5]
            elif isinstance(value, list):
                wrong = ["AAA", {}]
            elif value is None:
                wrong = []
            else:  # bool, int
                wrong = ["AAA", {}]
            for w in wrong:
                yield ".".join(map(str, here)) + f"={w!r}", _set(body, here, w)
            yield from walk(value, here)
    yield from walk(body, ())


def unknown_fields(body: Json) -> Iterator[tuple[str, Json]]:
    """(object path, body with an unknown field added to that object) for every object."""
    def walk(node: Any, path: tuple[Any, ...]) -> Iterator[tuple[str, Json]]:
        if isinstance(node, dict):
            target = copy.deepcopy(body)
            inner: Any = target
            for part in path:
                inner = inner[part]
            inner[UNKNOWN] = "x"
            yield ".".join(map(str, path)) or "(body)", target
            for key, value in node.items():
                yield from walk(value, (*path, key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from walk(value, (*path, i))
    yield from walk(body, ())


@dataclass(frozen=True)
class Vendor:
    make: Callable[[], Simulator]
    headers: dict[str, str]
    setup: Callable[[Simulator, httpx.AsyncClient], Awaitable[dict[str, Any]]]
    writes: dict[str, Callable[[dict[str, Any]], Write]]
    shape: Callable[[httpx.Response], bool]
    read_only: frozenset[str] = frozenset()  # writes-shaped reads (a preview): change nothing


# ------------------------------------------------------------------ PagerDuty

def _pd_shape(r: httpx.Response) -> bool:
    err = r.json().get("error")
    return isinstance(err, dict) and isinstance(err.get("code"), int) \
        and isinstance(err.get("message"), str)


async def _pd_setup(sim: Simulator, http: httpx.AsyncClient) -> dict[str, Any]:
    return {"inc": sim.alert(dedup="pd-a", title="disk full")["incident_id"],
            "start": iso(sim.clock.now() + timedelta(hours=1)),
            "end": iso(sim.clock.now() + timedelta(hours=3))}


def _pd_change(**fields: Any) -> Callable[[dict[str, Any]], Write]:
    return lambda ids: ("PUT", f"/incidents/{ids['inc']}",
                        {"incident": {"type": "incident_reference", **fields}})


PD_USER = {"id": "PUSR002", "type": "user_reference"}
PD_NEW = {"type": "incident", "title": "made by hand",
          "service": {"id": pd.SERVICE_WEB, "type": "service_reference"}}
PD_SCHEDULE = {"schedule": {
    "type": "schedule", "name": "by hand", "time_zone": "America/New_York",
    "description": "made by hand", "teams": [{"id": pd.TEAM_SRE, "type": "team_reference"}],
    "schedule_layers": [{
        "name": "day", "start": "2026-01-05T09:00:00-05:00", "end": None,
        "rotation_virtual_start": "2026-01-05T09:00:00-05:00",
        "rotation_turn_length_seconds": 86400, "users": [{"user": PD_USER}],
        "restrictions": [{"type": "weekly_restriction", "start_time_of_day": "09:00:00",
                          "duration_seconds": 28800, "start_day_of_week": 1},
                         {"type": "daily_restriction", "start_time_of_day": "20:00:00",
                          "duration_seconds": 3600}]}]}}
PD_POLICY = {"escalation_policy": {
    "type": "escalation_policy", "name": "by hand", "description": "made by hand",
    "num_loops": 2, "on_call_handoff_notifications": "always",
    "teams": [{"id": pd.TEAM_SRE, "type": "team_reference"}],
    "escalation_rules": [{"escalation_delay_in_minutes": 10, "targets": [
        PD_USER, {"id": pd.SCHED_PRIMARY, "type": "schedule_reference"}]}]}}
PAGERDUTY = Vendor(
    make=lambda: pd.PagerDutySimulator(seed=1, rate_limits=False),
    headers={"Authorization": f"Token token={pd.TOKEN}", "From": pd.FROM_EMAIL},
    setup=_pd_setup,
    writes={
        "create": lambda ids: ("POST", "/incidents", {"incident": {
            **PD_NEW, "urgency": "low", "incident_key": "hand-1",
            "priority": {"id": "PPRIO02", "type": "priority_reference"},
            "body": {"type": "incident_body", "details": "by hand"}}}),
        "create-assigned": lambda ids: ("POST", "/incidents", {"incident": {
            **PD_NEW, "assignments": [{"assignee": PD_USER}]}}),
        "create-on-policy": lambda ids: ("POST", "/incidents", {"incident": {
            **PD_NEW, "escalation_policy": {"id": pd.EP_DBA,
                                            "type": "escalation_policy_reference"}}}),
        "update": _pd_change(status="acknowledged", title="renamed", urgency="low",
                             priority={"id": "PPRIO01", "type": "priority_reference"}),
        "update-priority-by-name": _pd_change(priority="P3"),
        "reassign": _pd_change(assignments=[{"assignee": PD_USER}]),
        "change-policy": _pd_change(escalation_policy={
            "id": pd.EP_DBA, "type": "escalation_policy_reference"}),
        "escalate": _pd_change(escalation_level=2),
        "resolve": _pd_change(status="resolved", resolution="fixed"),
        "bulk": lambda ids: ("PUT", "/incidents", {"incidents": [
            {"id": ids["inc"], "type": "incident_reference", "status": "acknowledged"}]}),
        "override": lambda ids: ("POST", f"/schedules/{pd.SCHED_PRIMARY}/overrides", {
            "overrides": [{"start": ids["start"], "end": ids["end"], "user": PD_USER,
                           "time_zone": "UTC"}]}),
        "schedule-create": lambda ids: ("POST", "/schedules", PD_SCHEDULE),
        "schedule-update": lambda ids: ("PUT", f"/schedules/{pd.SCHED_BUSINESS}", PD_SCHEDULE),
        "schedule-preview": lambda ids: ("POST", "/schedules/preview", PD_SCHEDULE),
        "policy-create": lambda ids: ("POST", "/escalation_policies", PD_POLICY),
        "policy-update": lambda ids: ("PUT", f"/escalation_policies/{pd.EP_PLATFORM}",
                                      PD_POLICY),
    },
    shape=_pd_shape,
)

# ------------------------------------------------------------------ Splunk On-Call


async def _vo_setup(sim: Simulator, http: httpx.AsyncClient) -> dict[str, Any]:
    assert isinstance(sim, vo.VictorOpsSimulator)
    sim.alert(dedup="vo-a", title="disk full")
    now = sim.clock.now()
    created = await http.post(f"{vo.V1}/overrides", json={
        "username": "alice", "start": iso(now), "end": iso(now + timedelta(hours=4))})
    policy = "pol-pl4tf0rm0000prim"
    return {"paged": sim.incidents[1].paged_users[0], "policy": policy,
            "oncall": sim.oncall_at(policy, 0, now),
            "override": created.json()["schedule"]["publicId"],
            "start": iso(now + timedelta(hours=1)), "end": iso(now + timedelta(hours=2))}


VO_TARGET = {"type": "EscalationPolicy", "slug": "pol-pl4tf0rm0000prim"}
VICTOROPS = Vendor(
    make=lambda: vo.VictorOpsSimulator(seed=1, rate_limits=False),
    headers={"X-VO-Api-Id": vo.VictorOpsSimulator.API_ID,
             "X-VO-Api-Key": vo.VictorOpsSimulator.API_KEY},
    setup=_vo_setup,
    writes={
        "create": lambda ids: ("POST", f"{vo.V1}/incidents", {
            "summary": "by hand", "details": "details", "userName": "alice",
            "targets": [VO_TARGET], "isMultiResponder": False}),
        "ack": lambda ids: ("PATCH", f"{vo.V1}/incidents/ack", {
            "userName": "alice", "incidentNames": ["1"], "message": "on it"}),
        "resolve": lambda ids: ("PATCH", f"{vo.V1}/incidents/resolve", {
            "userName": "alice", "incidentNames": ["1"], "message": "fixed"}),
        "ack-by-user": lambda ids: ("PATCH", f"{vo.V1}/incidents/byUser/ack", {
            "userName": ids["paged"], "message": "on it"}),
        "resolve-by-user": lambda ids: ("PATCH", f"{vo.V1}/incidents/byUser/resolve", {
            "userName": ids["paged"], "message": "fixed"}),
        "reroute": lambda ids: ("POST", f"{vo.V1}/incidents/reroute", {
            "userName": "alice", "reroutes": [{
                "incidentNumber": "1", "targets": [{"type": "User", "slug": "bob"}],
                "addTargets": True}]}),
        "take-on-call": lambda ids: ("PATCH", f"{vo.V1}/policies/{ids['policy']}/oncall/user", {
            "fromUser": ids["oncall"], "toUser": "frank"}),
        "override": lambda ids: ("POST", f"{vo.V1}/overrides", {
            "username": "bob", "timezone": "Etc/UTC", "start": ids["start"],
            "end": ids["end"]}),
        "assign": lambda ids: (
            "PUT", f"{vo.V1}/overrides/{ids['override']}/assignments/{ids['policy']}",
            {"policy": ids["policy"], "username": "carol"}),
    },
    shape=lambda r: set(r.json()) == {"message"} and isinstance(r.json()["message"], str),
)

# ------------------------------------------------------------------ incident.io


async def _ii_setup(sim: Simulator, http: httpx.AsyncClient) -> dict[str, Any]:
    assert isinstance(sim, ii.IncidentIOSimulator)
    sim.alert(dedup="ii-a", title="disk full")
    live = [s.id for s in sorted(sim.statuses.values(), key=lambda s: s.rank)
            if s.category == "live"]
    created = await http.post("/v2/incidents", json={
        "idempotency_key": "setup", "visibility": "public", "name": "live one",
        "severity_id": sim.severities[0].id, "incident_status_id": live[0]})
    sched = next(iter(sim.schedules.values()))
    now = sim.clock.now()
    layer = {"rotation_id": sched.rotation_id, "layer_id": sched.layer_id}
    override = await http.post("/v2/schedule_overrides", json={
        "schedule_id": sched.id, **layer, "start_at": iso(now),
        "end_at": iso(now + timedelta(hours=2)), "user": {"email": "erin@example.com"}})
    return {"inc": created.json()["incident"]["id"], "live": live[1],
            "sev": sim.severities[1].id, "esc": next(iter(sim.escalations)),
            "path": sim.path_id, "user": next(iter(sim.users)), "sched": sched.id,
            "layer": layer, "override": override.json()["override"]["id"],
            "start": iso(now + timedelta(hours=3)), "end": iso(now + timedelta(hours=5)),
            "later": iso(now + timedelta(hours=1)), "platform": ii.ulid("P", 2)}


II_ROTATION = {
    "name": "Days", "users": [{"email": "bob@example.com"}, {"id": ii.ulid("U", 3)}],
    "handover_start_at": "2026-10-05T13:00:00Z", "layers": [{"name": "Layer 1"}],
    "handovers": [{"interval_type": "daily", "interval": 1}, {"interval_type": "hourly",
                                                              "interval": 12}],
    "scheduling_mode": "sequential",
    "working_intervals": [{"weekday": "monday", "start_time": "09:00", "end_time": "17:00"}],
}
II_SCHEDULE = {"schedule": {"name": "By hand", "timezone": "America/New_York",
                            "team_ids": [], "config": {"rotations": [II_ROTATION]}}}


def _ii_path(ids: dict[str, Any]) -> Json:
    return {"name": "By hand", "team_ids": [], "path": [
        {"id": "n1", "type": "level", "level": {
            "targets": [{"type": "schedule", "id": ids["sched"], "urgency": "high",
                         "schedule_mode": "currently_on_call"}],
            "time_to_ack_seconds": 60, "ack_mode": "all"}},
        {"id": "n2", "type": "if_else", "if_else": {
            "conditions": [{"subject": "alert.priority", "operation": "one_of",
                            "param_bindings": [{"array_value": [{"literal": "P1"}],
                                                "value": {"reference": "x"}}]}],
            "then_path": [{"id": "n3", "type": "level", "level": {
                "targets": [{"type": "user", "id": ids["user"], "urgency": "low"}]}}],
            "else_path": []}},
        {"id": "n4", "type": "repeat", "repeat": {"repeat_times": 2, "to_node": "n1"}}]}


INCIDENTIO = Vendor(
    make=lambda: ii.IncidentIOSimulator(seed=1, rate_limits=False),
    headers={"Authorization": f"Bearer {ii.DEFAULT_API_KEY}"},
    setup=_ii_setup,
    writes={
        "create": lambda ids: ("POST", "/v2/incidents", {
            "idempotency_key": "by-hand", "visibility": "private", "name": "by hand",
            "summary": "details", "severity_id": ids["sev"], "incident_status_id": ids["live"],
            "mode": "standard", "incident_type_id": ii.ulid("Y", 1)}),
        "edit": lambda ids: ("POST", f"/v2/incidents/{ids['inc']}/actions/edit", {
            "notify_incident_channel": False, "incident": {
                "name": "renamed", "summary": "more", "severity_id": ids["sev"],
                "incident_status_id": ids["live"]}}),
        "attach": lambda ids: ("POST", "/v1/incident_attachments", {
            "incident_id": ids["inc"], "resource": {
                "resource_type": "arbitrary_url", "url": "https://example.com/x",
                "title": "runbook"}}),
        "escalate-path": lambda ids: ("POST", "/v2/escalations", {
            "idempotency_key": "esc-path", "title": "page", "description": "now",
            "escalation_path_id": ids["path"], "incident_id": ids["inc"]}),
        "escalate-users": lambda ids: ("POST", "/v2/escalations", {
            "idempotency_key": "esc-users", "title": "page", "user_ids": [ids["user"]]}),
        "snooze": lambda ids: (
            "POST", f"/v2/escalations/{ids['esc']}/actions/respond",
            {"response": "snooze", "snooze_details": {"snooze_until": ids["later"],
                                                      "reason": "busy"}}),
        "override": lambda ids: ("POST", "/v2/schedule_overrides", {
            "schedule_id": ids["sched"], **ids["layer"], "start_at": ids["start"],
            "end_at": ids["end"], "user": {"id": ids["user"]}}),
        "override-update": lambda ids: ("PUT", f"/v2/schedule_overrides/{ids['override']}", {
            **ids["layer"], "start_at": ids["later"], "end_at": ids["end"],
            "user": {"email": "erin@example.com"}}),
        "schedule-create": lambda ids: ("POST", "/v2/schedules", II_SCHEDULE),
        "schedule-update": lambda ids: ("PUT", f"/v2/schedules/{ii.ulid('C', 3)}", II_SCHEDULE),
        "schedule-preview": lambda ids: (
            "POST", f"/v2/schedules/{ids['sched']}/actions/preview_entries",
            {**II_SCHEDULE, "entry_window_start": ids["start"], "entry_window_end": ids["end"]}),
        "path-create": lambda ids: ("POST", "/v2/escalation_paths", _ii_path(ids)),
        "path-update": lambda ids: ("PUT", f"/v2/escalation_paths/{ids['platform']}",
                                    _ii_path(ids)),
    },
    read_only=frozenset({"schedule-preview"}),
    shape=lambda r: {"type", "status", "request_id", "errors"} <= set(r.json())
    and r.json()["status"] == r.status_code and all(
        isinstance(e.get("code"), str) and isinstance(e.get("message"), str)
        for e in r.json()["errors"]),
)

# ------------------------------------------------------------------ Spike.sh


async def _spike_setup(sim: Simulator, http: httpx.AsyncClient) -> dict[str, Any]:
    assert isinstance(sim, sp.SpikeSimulator)
    quiet = sim.alert(dedup="disk full", title="details")["incident"]["counterId"]
    # A second incident, acknowledged with a priority and severity, so every action changes
    # at least one of the two.
    busy = sim.alert(dedup="cpu hot", title="details", severity="sev2")["incident"]["counterId"]
    sim.act(busy, "acknowledge")
    sim.act(busy, "severity", severity="p3")
    now = sim.clock.now()
    return {"ids": [quiet, busy], "sched": next(iter(sim.schedules)),
            "user": next(iter(sim.users)), "start": iso(now + timedelta(hours=1)),
            "end": iso(now + timedelta(hours=2))}


def _spike_ids(action: str, method: str = "POST", **extra: str) -> Callable[
        [dict[str, Any]], Write]:
    return lambda ids: (method, f"/incidents/{action}", {"ids": ids["ids"], **extra})


SPIKE = Vendor(
    make=lambda: sp.SpikeSimulator(seed=1, rate_limits=False),
    headers={"x-api-key": sp.DEFAULT_API_KEY, "x-team-id": sp.TEAM_ID},
    setup=_spike_setup,
    writes={
        "create": lambda ids: ("POST", "/incidents/create", {
            "title": "by hand", "escalation": sp.ESCALATION_ID,
            "integration": sp.WEBHOOK_TOKEN, "priority": "p2", "severity": "sev2"}),
        # metadata is left out: a string in [SP-S] and an object in [SP-AE], both accepted.
        "acknowledge": _spike_ids("acknowledge"),
        "unacknowledge": _spike_ids("unacknowledge"),
        "resolve": _spike_ids("resolve"),
        "escalate": _spike_ids("escalate"),
        "priority": _spike_ids("priority", priority="p1"),
        "severity": _spike_ids("severity", severity="sev1"),
        "priority-remove": _spike_ids("priority/remove", "DELETE"),
        "severity-remove": _spike_ids("severity/remove", "DELETE"),
        "public-sharing": lambda ids: ("PATCH", f"/incidents/{ids['ids'][0]}/public-sharing",
                                       {"publicSharing": True}),
        "override-add": lambda ids: ("POST", f"/on-calls/{ids['sched']}/overrides/add", {
            "user": ids["user"], "start": ids["start"], "end": ids["end"],
            "desc": "swap", "timezone": "UTC"}),
    },
    shape=lambda r: set(r.json()) == {"message", "error"},
)

VENDORS = {"pagerduty": PAGERDUTY, "victorops": VICTOROPS, "incidentio": INCIDENTIO,
           "spike": SPIKE}
CASES = [(v, w) for v, vendor in VENDORS.items() for w in vendor.writes]


@pytest.mark.parametrize(("vendor", "write"), CASES, ids=[f"{v}-{w}" for v, w in CASES])
async def test_malformed_writes_are_refused_in_the_vendor_shape_and_change_nothing(
        vendor: str, write: str) -> None:
    spec = VENDORS[vendor]
    sim = spec.make()
    async with sim.client(headers=spec.headers) as http:
        ids = await spec.setup(sim, http)
        method, path, body = spec.writes[write](ids)
        before = snapshot(sim)
        variants = [*wrong_types(body), *unknown_fields(body)]
        for label, bad in variants:
            r = await http.request(method, path, json=bad)
            assert 400 <= r.status_code < 500, (label, r.status_code, r.text)
            assert spec.shape(r), (label, r.text)
            if label in dict(unknown_fields(body)):
                assert "not simulated: " in r.text and UNKNOWN in r.text, (label, r.text)
            assert snapshot(sim) == before, f"{label} changed the simulator's state"
        # The valid body is accepted, so every refusal above came from the broken field.
        r = await http.request(method, path, json=body)
        assert r.status_code < 300, r.text
        if write in spec.read_only:
            assert snapshot(sim) == before, f"the {write} preview changed the simulator"
        else:
            assert snapshot(sim) != before, f"the valid {write} changed nothing: a weak case"


@pytest.mark.parametrize("vendor", list(VENDORS))
async def test_every_operation_with_a_body_has_a_malformed_case(vendor: str) -> None:
    """The cases above reach every operation that declares a body, so none is left out."""
    spec = VENDORS[vendor]
    sim = spec.make()
    async with sim.client(headers=spec.headers) as http:
        ids = await spec.setup(sim, http)
    covered = set()
    for write in spec.writes.values():
        method, path, _body = write(ids)
        scope = {"type": "http", "method": method, "path": path, "root_path": ""}
        covered.add(f"{method} {sim.route_template(scope)}")
    for name, case in INTAKES.items():
        if name.startswith(vendor):
            path = case.path.split("?")[0]
            scope = {"type": "http", "method": "POST", "path": path, "root_path": ""}
            covered.add(f"POST {sim.route_template(scope)}")
    declared = {key for key, op in sim.operations.items() if op.body is not None}
    assert declared <= covered, declared - covered


# ------------------------------------------------------------------ alert intakes

@dataclass(frozen=True)
class IntakeCase:
    make: Callable[[], Simulator]
    path: str
    body: Json
    refused: Callable[[httpx.Response], bool]
    keeps_unknown: bool  # the intake stores whatever fields the monitoring tool sends
    free_form: tuple[str, ...] = ()  # what is documented as any JSON ("x." = inside x)


INTAKES = {
    "pagerduty-events": IntakeCase(
        PAGERDUTY.make, "/v2/enqueue",
        {"routing_key": pd.ROUTING_KEY, "event_action": "trigger", "dedup_key": "ev-1",
         "client": "prom", "links": [{"href": "https://x", "text": "x"}],
         "payload": {"summary": "disk", "source": "db1", "severity": "critical",
                     "class": "disk", "custom_details": {"free": "form"}}},
        lambda r: r.status_code == 400 and r.json()["status"] == "invalid event"
        and isinstance(r.json()["errors"], list), keeps_unknown=False,
        free_form=("payload.custom_details.",)),
    "victorops-rest": IntakeCase(
        VICTOROPS.make, f"/integrations/generic/20131114/alert/{vo.VictorOpsSimulator.REST_KEY}/x",
        {"message_type": "CRITICAL", "entity_id": "e-1", "entity_display_name": "disk",
         "host_name": "db1", "state_start_time": 1700000000},
        lambda r: r.status_code == 400 and r.json()["result"] == "failure", keeps_unknown=True),
    "incidentio-alert-events": IntakeCase(
        INCIDENTIO.make,
        f"/v2/alert_events/http/{ii.ALERT_SOURCE_ID}?token={ii.ALERT_SOURCE_TOKEN}",
        {"title": "disk", "status": "firing", "deduplication_key": "k-1", "description": "d",
         "source_url": "https://x", "metadata": {"severity": "sev1"}},
        lambda r: r.status_code in (400, 422) and INCIDENTIO.shape(r), keeps_unknown=False,
        free_form=("metadata.",)),
    # Spike's webhook documents one failure answer, 500 with an empty object.
    "spike-push-events": IntakeCase(
        SPIKE.make, f"/{sp.WEBHOOK_TOKEN}/push-events",
        {"title": "disk", "body": "details", "severity": "sev1", "priority": "p1"},
        lambda r: r.status_code == 500 and r.json() == {}, keeps_unknown=True,
        free_form=("body",)),
}


@pytest.mark.parametrize("name", list(INTAKES))
async def test_malformed_alert_intake_events_are_refused_and_change_nothing(name: str) -> None:
    case = INTAKES[name]
    sim = case.make()
    async with sim.client() as http:
        before = snapshot(sim)
        for label, bad in wrong_types(case.body):
            if label.split("=")[0].startswith(case.free_form) and case.free_form:
                continue  # free-form fields: any JSON is allowed
            r = await http.post(case.path, json=bad)
            assert case.refused(r), (label, r.status_code, r.text)
            assert snapshot(sim) == before, f"{label} changed the simulator's state"
        for label, bad in unknown_fields(case.body):
            if any(label.startswith(f.rstrip(".")) for f in case.free_form):
                continue
            r = await http.post(case.path, json=bad)
            assert (r.status_code < 300) == case.keeps_unknown, (label, r.text)
            if not case.keeps_unknown:
                assert "not simulated: " in r.text and snapshot(sim) == before, label
        r = await http.post(case.path, json=case.body)
        assert r.status_code < 300, r.text
