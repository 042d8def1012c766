"""The contract every simulator shares, run against all four (as vdirsyncer runs one storage
suite against every backend): every answer of every implemented operation validates against the
vendor's official spec (../shared/vendor-specs, skipped with a reason when absent), auth failures
answer the vendor's codes, lists page through every record exactly once, the rate-limit answer
is the vendor's, and the /_sim control surface behaves the same everywhere. Each vendor's kit
(``<vendor>/<v>_kit.py``, see contract_kit.py) supplies the vendor-specific facts; vendor-only
contract tests live beside their kit."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from contract_kit import ContractKit, Recorder, route_of, vendor_operations
from ii_kit import KIT as INCIDENTIO
from pd_kit import KIT as PAGERDUTY
from spike_kit import KIT as SPIKE
from vo_kit import KIT as VICTOROPS

KITS = {k.name: k for k in (PAGERDUTY, VICTOROPS, INCIDENTIO, SPIKE)}


@pytest.fixture(params=list(KITS))
def kit(request: pytest.FixtureRequest) -> ContractKit:
    return KITS[request.param]


_SPECS: dict[str, Any] = {}


@pytest.fixture
def spec(kit: ContractKit, vendor_specs: Path) -> Any:
    """The kit's patched spec, loaded once per session (the incident.io one is 7.8 MB)."""
    if kit.name not in _SPECS:
        _SPECS[kit.name] = kit.load_spec(vendor_specs)
    return _SPECS[kit.name]


async def test_every_implemented_operation_validates_against_the_official_spec(
        kit: ContractKit, spec: Any) -> None:
    sim = kit.make()
    rec = Recorder(sim)
    await kit.exercise(sim, rec)
    checked: set[str] = set()
    answered: set[str] = set()
    for request, response in rec.exchanges:
        if request.url.path.startswith("/_sim/"):
            continue
        template, _args = route_of(sim, request.method, request.url.path)
        op = f"{request.method} {template}"
        if op in kit.unspecified:
            continue
        done = kit.check(spec, sim, request, response)
        if done is not None:
            checked.add(done)
            answered.add(f"{done} {response.status_code}")
    missing = vendor_operations(sim) - checked - set(kit.unspecified)
    assert not missing, f"not contract-checked: {sorted(missing)}"
    assert kit.statuses <= {int(a.rsplit(" ", 1)[1]) for a in answered}
    assert kit.expected <= answered, sorted(kit.expected - answered)


async def test_the_checker_rejects_a_wrong_body(kit: ContractKit, spec: Any) -> None:
    """The validation can fail: a body that breaks the spec is refused by the kit's check."""
    method, path, status, body = kit.wrong_body
    sim = kit.make()
    request = httpx.Request(method, f"http://sim.localhost{path}", headers=kit.headers)
    response = httpx.Response(status, json=body, request=request)
    with pytest.raises(Exception):  # noqa: B017 - each validator raises its own error type
        kit.check(spec, sim, request, response)


async def test_auth_failures_answer_the_vendor_codes(kit: ContractKit, spec: Any) -> None:
    sim = kit.make()
    sim.alert(dedup="auth", title="auth")
    before = sim.canonical_incidents()
    for headers, status in kit.auth_failures:
        async with sim.client(headers={**kit.headers, **headers}) as http:
            r = await http.get(kit.list_path)
        assert r.status_code == status, (headers, r.status_code, r.text)
        assert kit.error_shape(r), r.text
        kit.check(spec, sim, r.request, r)
    assert sim.canonical_incidents() == before


async def test_lists_page_through_every_record_once(kit: ContractKit) -> None:
    sim = kit.make()
    sim.seed_incidents(7)
    async with sim.client(headers=kit.headers) as http:
        pages = await kit.page_ids(http, 3)
    ids = [i for page in pages for i in page]
    assert len(pages) >= 3 and all(len(p) <= 3 for p in pages)
    assert len(ids) == len(set(ids)) == 7
    assert set(ids) == {i["id"] for i in sim.canonical_incidents()}


async def test_rate_limit_answer_is_the_vendors(kit: ContractKit, spec: Any) -> None:
    sim = kit.make()
    async with sim.client(headers=kit.headers) as http:
        await http.post("/_sim/rate-limits", json={"enabled": True, "scale": 0.0001})
        answers = [await http.get(kit.list_path) for _ in range(3)]
    refused = [r for r in answers if r.status_code >= 400]
    assert refused, [r.status_code for r in answers]
    for r in refused:
        assert kit.rate_limited(r), (r.status_code, dict(r.headers), r.text)
        kit.check(spec, sim, r.request, r)
    assert sim.call_count(status=refused[0].status_code) == len(refused)


async def test_seeded_backlog_can_be_days_old(kit: ContractKit) -> None:
    """``age_days`` seeds a backlog nobody touched lately (bench/idle.py): every seeded
    incident was last updated at least that long ago on the simulator's clock."""
    sim = kit.make()
    async with sim.client(headers=kit.headers) as http:
        refused = await http.post("/_sim/seed", json={"incidents": 1, "age_days": -1})
        assert refused.status_code == 400, refused.text
        seeded = await http.post("/_sim/seed", json={"incidents": 3, "age_days": 2})
        assert seeded.json()["created"] == 3
        incidents = (await http.get("/_sim/incidents")).json()["incidents"]
    edge = sim.clock.now() - timedelta(days=2)
    assert len(incidents) == 3
    assert all(datetime.fromisoformat(i["updated_at"].replace("Z", "+00:00")) <= edge
               for i in incidents), incidents


@pytest.mark.parametrize(("path", "body"), [
    ("/_sim/seed", {"incidents": "many"}),
    ("/_sim/seed", {"incidents": 1, "state": "bogus"}),
    ("/_sim/seed", {"incidents": 1, "age_days": "old"}),
    ("/_sim/clock", {"advance": "soon"}),
    ("/_sim/rate-limits", {"scale": "fast"}),
    ("/_sim/seed", [1]),
])
async def test_control_surface_refuses_bad_input(kit: ContractKit, path: str, body: Any) -> None:
    """Benchmarks and people drive /_sim/ by hand: bad input is a 400 naming it, not a 500."""
    sim = kit.make()
    async with sim.client(headers=kit.headers) as http:
        answer = await http.post(path, json=body)
    assert answer.status_code == 400, answer.text
    assert "bad control request" in answer.json()["error"]


async def test_control_surface(kit: ContractKit) -> None:
    """/_sim/ is the same for every vendor: seed, incidents, act, alerts, clock, faults, calls,
    reset (base.py's table)."""
    sim = kit.make()
    async with sim.client(headers=kit.headers) as http:
        seeded = (await http.post("/_sim/seed", json={"incidents": 2})).json()
        assert seeded["created"] == 2
        fired = await http.post("/_sim/alerts", json={"dedup": "ctl-1", "title": "ctl"})
        assert fired.status_code == 200, fired.text
        incidents = (await http.get("/_sim/incidents")).json()["incidents"]
        assert len(incidents) == 3
        assert {"id", "state", "severity", "dedup", "title", "updated_at"} <= set(incidents[0])
        assert {i["state"] for i in incidents} == {"triggered"}
        target = incidents[0]["id"]
        acked = await http.post(f"/_sim/incidents/{target}/act", json={"action": "resolve"})
        assert acked.status_code == 200, acked.text
        states = {i["id"]: i["state"] for i in (await http.get("/_sim/incidents")).json()[
            "incidents"]}
        assert states[target] == "resolved"
        unknown = await http.post("/_sim/incidents/NOPE-404/act", json={"action": "resolve"})
        assert unknown.status_code == 404
        refused = await http.post(f"/_sim/incidents/{target}/act", json={"action": "dance"})
        assert refused.status_code == 409
        clock = (await http.post("/_sim/clock", json={"advance": 60})).json()
        assert clock["offset"] == 60
        await http.post("/_sim/faults", json={"error_rate": 1.0, "error_status": 502})
        faulted = await http.get(kit.list_path)
        assert faulted.status_code == 502 and faulted.headers["content-type"].startswith(
            "text/html")
        await http.delete("/_sim/faults")
        assert (await http.get(kit.list_path)).status_code == 200
        calls = (await http.get("/_sim/calls")).json()
        assert calls["total"] == 2 and any(c["status"] == 502 for c in calls["calls"])
        await http.post("/_sim/reset")
        assert (await http.get("/_sim/incidents")).json()["incidents"] == []
        assert (await http.get("/_sim/calls")).json()["total"] == 0
