"""SpikeClient against the simulator over ASGI: polling, pushes, create, on-call, limits, faults,
and every malformed-response case (through a tiny response-corrupting ASGI wrapper)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from spike_helpers import make_client, settings
from structlog.testing import capture_logs

from syncd.model import NewIncident, Severity, State
from syncd.ratelimit import Budget, Limit
from syncd.simulators.spike import DEFAULT_API_KEY, SpikeSimulator
from syncd.vendors.base import (
    Action,
    AuthError,
    Capability,
    MalformedResponse,
    Outcome,
    PermanentError,
    Push,
    RateLimited,
    TransientError,
    VendorClient,
)
from syncd.vendors.spike import SpikeClient


def fire(sim: SpikeSimulator, title: str, severity: str | None = None) -> str:
    return sim.alert(dedup=title, title=title, severity=severity)["incident"]["counterId"]


async def collect(client: SpikeClient, cursor: str | None, full: bool = False):
    pages = [p async for p in client.poll(cursor, full=full)]
    assert pages[-1].cursor is not None and all(p.cursor is None for p in pages[:-1])
    return pages, {i.external_id: i for p in pages for i in p.incidents}


def pushes(action: Action, ids: list[str], severity: Severity | None = None) -> list[Push]:
    return [Push(i, action, f"k-{i}", severity) for i in ids]


def test_declarations() -> None:
    assert isinstance(SpikeClient("a", settings(), transport=httpx.MockTransport(
        lambda r: httpx.Response(200))), VendorClient)
    assert Capability.UNACK in SpikeClient.capabilities
    assert Capability.REOPEN not in SpikeClient.capabilities
    with pytest.raises(ValueError):
        settings(unknown_key=1)


async def test_full_poll_reads_every_open_incident(sim: SpikeSimulator,
                                                   client: SpikeClient) -> None:
    sim.seed_incidents(150)  # 30 days old: no time window may hide them
    sim.seed_incidents(120, state="acknowledged")
    sim.seed_incidents(50, state="resolved")
    _pages, seen = await collect(client, None)
    assert len(seen) == 270
    assert sim.call_count(route="/incidents/triggered") == 2
    assert sim.call_count(route="/incidents/acknowledged") == 2
    assert sim.call_count(route="/incidents/all-occurrences") == 0
    inc = seen["sre-101"]
    assert inc.state is State.TRIGGERED and inc.severity is Severity.SEV1
    assert inc.keys == {"dedup": inc.title} and inc.created_at and inc.updated_at
    assert inc.updated_at.tzinfo is not None


async def test_incremental_poll_sees_changes_and_resolves(sim: SpikeSimulator,
                                                          client: SpikeClient) -> None:
    a, b, c = fire(sim, "a", "sev2"), fire(sim, "b"), fire(sim, "c")
    _pages, first = await collect(client, None)
    cursor = _pages[-1].cursor
    assert set(first) == {a, b, c}
    sim.clock.advance(5)
    sim.act(a, "acknowledge")
    sim.act(b, "resolve")
    sim.act(c, "severity", severity="sev1")
    pages, seen = await collect(client, cursor)
    assert seen[a].state is State.ACKNOWLEDGED
    assert seen[b].state is State.RESOLVED
    assert seen[c].severity is Severity.SEV1
    assert sim.call_count(route="/incidents/all-occurrences") == 1
    # the ack-timeout moving ACK back to NACK is seen like any other change
    sim.clock.advance(1801)
    _pages, seen = await collect(client, pages[-1].cursor)
    assert seen[a].state is State.TRIGGERED


async def test_idle_poll_cost_and_why_the_resolve_page_stays(sim: SpikeSimulator,
                                                              client: SpikeClient) -> None:
    """Spike has no updated-since filter: an idle delta poll reads both open lists to their end
    and one page of resolves, ceil(NACK/100) + ceil(ACK/100) + 1 <= ceil(open/100) + 2 calls,
    never a per-incident read. The resolve page is what sees an incident triggered and resolved
    between two polls, which no open list ever shows (docs/vendors/spike.md)."""
    sim.seed_incidents(150)
    sim.seed_incidents(150, state="acknowledged")
    pages, _seen = await collect(client, None)
    cursor = pages[-1].cursor
    sim.calls.clear()
    pages, seen = await collect(client, cursor)
    assert len(seen) == 300  # every open incident, unchanged: the ledger sees no change
    assert sim.call_count() == 2 + 2 + 1 == -(-300 // 100) + 2, sim.calls
    assert not [r for (_m, r, _s) in sim.calls if "{" in r], sim.calls
    sim.clock.advance(5)
    brief = fire(sim, "flap")
    sim.act(brief, "resolve")
    _pages, seen = await collect(client, pages[-1].cursor)
    assert seen[brief].state is State.RESOLVED


async def test_garbage_cursor_means_full_read(sim: SpikeSimulator, client: SpikeClient) -> None:
    fire(sim, "x")
    _pages, seen = await collect(client, "not json")
    assert set(seen) == {"sre-101"}


async def test_push_batches_and_outcomes(sim: SpikeSimulator, client: SpikeClient) -> None:
    ids = sim.seed_incidents(150)
    sim.act(ids[0], "resolve")
    results = await client.push(Action.ACKNOWLEDGE, pushes(Action.ACKNOWLEDGE, ids))
    assert sim.call_count(route="/incidents/acknowledge") == 2  # 100 + 50
    by = {r.external_id: r for r in results}
    assert by[ids[0]].outcome is Outcome.REFUSED and "resolved" in by[ids[0]].message
    assert by[ids[1]].outcome is Outcome.DONE
    assert by[ids[1]].incident is not None and by[ids[1]].incident.state is State.ACKNOWLEDGED
    again = await client.push(Action.ACKNOWLEDGE, pushes(Action.ACKNOWLEDGE, ids[1:3]))
    assert [r.outcome for r in again] == [Outcome.ALREADY, Outcome.ALREADY]
    unack = await client.push(Action.UNACKNOWLEDGE, pushes(Action.UNACKNOWLEDGE, ids[1:2]))
    assert unack[0].outcome is Outcome.DONE and unack[0].incident.state is State.TRIGGERED
    res = await client.push(Action.RESOLVE, pushes(Action.RESOLVE, [ids[1], "sre-99999"]))
    assert [r.outcome for r in res] == [Outcome.DONE, Outcome.REFUSED]
    # a late ack never reopens a resolved incident
    late = await client.push(Action.ACKNOWLEDGE, pushes(Action.ACKNOWLEDGE, ids[1:2]))
    assert late[0].outcome is Outcome.REFUSED
    assert next(i for i in sim.canonical_incidents() if i["id"] == ids[1])["state"] == "resolved"
    with pytest.raises(PermanentError):
        await client.push(Action.REOPEN, pushes(Action.REOPEN, ids[1:2]))


async def test_severity_push_clamps_and_removes(sim: SpikeSimulator, client: SpikeClient) -> None:
    a, b = fire(sim, "a"), fire(sim, "b")
    plan = [Push(a, Action.SET_SEVERITY, "1", Severity.SEV5),
            Push(b, Action.SET_SEVERITY, "2", Severity.SEV2)]
    results = await client.push(Action.SET_SEVERITY, plan)
    assert [r.outcome for r in results] == [Outcome.DONE, Outcome.DONE]
    assert results[0].incident.severity is Severity.SEV3  # sev5 clamps to Spike's sev3
    assert sim.call_count(route="/incidents/severity") == 2  # one call per target value
    cleared = await client.push(Action.SET_SEVERITY, [Push(a, Action.SET_SEVERITY, "3", None)])
    assert cleared[0].outcome is Outcome.DONE
    assert sim.call_count(method="DELETE", route="/incidents/severity/remove") == 1
    assert next(i for i in sim.canonical_incidents() if i["id"] == a)["severity"] is None


async def test_priority_field(sim: SpikeSimulator) -> None:
    client = make_client(sim, severity_field="priority")
    a = fire(sim, "a")
    r = await client.push(Action.SET_SEVERITY, [Push(a, Action.SET_SEVERITY, "1", Severity.SEV4)])
    assert r[0].incident.severity is Severity.SEV4
    assert sim.call_count(route="/incidents/priority") == 1
    _pages, seen = await collect(client, None)
    assert seen[a].severity is Severity.SEV4
    await client.aclose()


async def test_create_api_idempotent_and_find_after_crash(sim: SpikeSimulator,
                                                         client: SpikeClient) -> None:
    new = NewIncident(marker="m-123", title="Mirror of PD#7", severity=Severity.SEV2)
    created = await client.create(new)
    assert created.keys["marker"] == "m-123" and created.severity is Severity.SEV2
    assert created.title == "Mirror of PD#7 [syncd:m-123]"
    again = await client.create(new)  # a retry after a lost answer
    assert again.external_id == created.external_id
    assert len(sim.canonical_incidents()) == 1
    # a fresh client (the daemon restarted) finds it again
    other = make_client(sim)
    found = await other.find_created("m-123")
    assert found is not None and found.external_id == created.external_id
    sim.act(created.external_id, "resolve")
    found = await other.find_created("m-123")  # resolved ones within find_window too
    assert found is not None and found.state is State.RESOLVED
    assert await other.find_created("m-none") is None
    await other.aclose()


async def test_create_via_webhook(sim: SpikeSimulator) -> None:
    client = make_client(sim, create_via="webhook")
    created = await client.create(NewIncident(marker="w-1", title="From webhook",
                                              state=State.ACKNOWLEDGED))
    assert created.keys["marker"] == "w-1" and created.state is State.ACKNOWLEDGED
    assert sim.call_count(route="/{token}/push-events") == 1
    await client.aclose()
    bad = make_client(sim, create_via="api", escalation_id=None)
    with pytest.raises(PermanentError):
        await bad.create(NewIncident(marker="z", title="z"))
    await bad.aclose()


async def test_oncall_and_override(sim: SpikeSimulator, client: SpikeClient) -> None:
    now = sim.clock.now()
    entries = await client.oncall(now, now + timedelta(days=3))
    primary = sim.describe("x")["schedules"]["SRE primary"]
    mine = [e for e in entries if e.schedule_id == primary]
    assert len(mine) in (3, 4)  # daily handovers within three days
    assert all(e.user_email and e.level == 1 and e.schedule_name == "SRE primary" for e in mine)
    assert mine[0].start == now and mine[-1].end == now + timedelta(days=3)
    oid = await client.create_override(primary, "dave@example.com", now, now + timedelta(hours=1))
    assert oid
    entries = await client.oncall(now, now + timedelta(minutes=30))
    assert [e.user_email for e in entries if e.schedule_id == primary] == ["dave@example.com"]
    with pytest.raises(PermanentError):
        await client.create_override(primary, "nobody@example.com", now, now)
    # 10 days needs a second page of the schedule's 7-day shift window
    long = await client.oncall(now, now + timedelta(days=10))
    assert max(e.end for e in long if e.schedule_id == primary) == now + timedelta(days=10)


async def test_auth_errors_never_leak_the_key(sim: SpikeSimulator) -> None:
    bad = make_client(sim, api_key="wrong-key-value")
    with capture_logs() as logs, pytest.raises(AuthError) as err:
        _ = [p async for p in bad.poll(None)]
    assert "wrong-key-value" not in str(err.value) and "GET /incidents/triggered" in str(err.value)
    assert "wrong-key-value" not in json.dumps(logs, default=str)
    assert DEFAULT_API_KEY not in str(err.value)
    await bad.aclose()
    wrong_team = make_client(sim, team_id="")
    with pytest.raises(AuthError):
        _ = [p async for p in wrong_team.poll(None)]
    await wrong_team.aclose()


async def test_rate_limit_429_is_waited_out(sim: SpikeSimulator) -> None:
    sim.rate_limit_per_minute = 2
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        sim.clock.advance(seconds)

    # the budget shares the sim clock, so its 429 pause passes when the sim's time does
    client = SpikeClient("spike-test", settings(), transport=sim.transport(), sleep=sleep,
                         budget=Budget({"*": Limit(6000)}, 1.0, clock=sim.clock.monotonic))
    fire(sim, "x")
    _ = [p async for p in client.poll(None)]
    _ = [p async for p in client.poll(None)]  # 4 calls against 2/min: 429, Retry-After, retry
    assert sim.call_count(status=429) >= 1 and any(w >= 1 for w in waits)
    sim.rate_limit_per_minute = 0.001
    sim.window.reset()
    limited = SpikeClient("spike-test", settings(max_retries=0), transport=sim.transport())
    with pytest.raises(RateLimited) as err:
        _ = [p async for p in limited.poll(None)]
    assert err.value.retry_after >= 1
    await client.aclose()
    await limited.aclose()


async def test_budget_keeps_us_under_the_limit(sim: SpikeSimulator) -> None:
    sim.rate_limit_per_minute = 5
    client = make_client(sim, rate_limit_per_minute=5, budget_fraction=1.0)
    assert client.budget.seconds_for(6) > 0  # a 6th request would have to wait
    fire(sim, "x")
    _ = [p async for p in client.poll(None)]
    _ = [p async for p in client.poll(None)]
    assert sim.call_count(status=429) == 0
    await client.aclose()


async def test_faults_5xx_drop_and_outage(sim: SpikeSimulator, client: SpikeClient) -> None:
    fire(sim, "x")
    sim.faults.error_rate, sim.faults.routes = 1.0, ["/incidents/triggered"]
    with pytest.raises(TransientError):
        _ = [p async for p in client.poll(None)]
    assert sim.call_count(route="/incidents/triggered", status=503) == 4  # 1 + 3 retries
    sim.faults.error_rate, sim.faults.drop_rate = 0.0, 1.0
    with pytest.raises(TransientError):
        _ = [p async for p in client.poll(None)]
    sim.faults.drop_rate = 0.0
    # writes are retried too (set-to-value actions are idempotent)
    sim.faults.error_rate, sim.faults.routes = 0.5, ["/incidents/acknowledge"]
    sim.random.seed(3)
    out = await client.push(Action.ACKNOWLEDGE, pushes(Action.ACKNOWLEDGE, ["sre-101"]))
    assert out[0].outcome in (Outcome.DONE, Outcome.ALREADY)


# --------------------------------------------------------------------------- malformed answers


def corrupting(sim: SpikeSimulator, route: str, make: Callable[[Any], bytes | None],
               status: int = 200, content_type: bytes = b"application/json"
               ) -> httpx.ASGITransport:
    """An ASGI wrapper that replaces the body of ``route`` answers (a network test double)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != route:
            await sim.app(scope, receive, send)
            return
        chunks: list[bytes] = []

        async def grab(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await sim.app(scope, receive, grab)
        original = json.loads(b"".join(chunks) or b"null")
        body = make(original)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type)]})
        await send({"type": "http.response.body", "body": body or b""})

    return httpx.ASGITransport(app=app)


def edit_first(change: Callable[[dict[str, Any]], None]) -> Callable[[Any], bytes]:
    def make(data: Any) -> bytes:
        change(data["incidents"][0])
        return json.dumps(data).encode()
    return make


RECORD_CASES = {
    "missing counterId": edit_first(lambda i: i.pop("counterId")),
    "null status": edit_first(lambda i: i.update(status=None)),
    "unknown status": edit_first(lambda i: i.update(status="SNOOZED")),
    "unknown severity": edit_first(lambda i: i.update(groupedIncident={"severity": "sev9"})),
    "missing title": edit_first(lambda i: (i.pop("message"), i.pop("title"))),
    "bad timestamp": edit_first(lambda i: i.update(createdAt="yesterday")),
    "record is a string": lambda d: json.dumps({**d, "incidents": ["oops", *d["incidents"]]
                                                }).encode(),
}


@pytest.mark.parametrize("case", sorted(RECORD_CASES))
async def test_bad_record_is_skipped_not_fatal(sim: SpikeSimulator, case: str) -> None:
    fire(sim, "a")
    fire(sim, "b")
    client = make_client(sim, corrupting(sim, "/incidents/triggered", RECORD_CASES[case]))
    pages, seen = await collect(client, None)
    skipped = [s for p in pages for s in p.skipped]
    assert len(skipped) == 1 and skipped[0].endpoint == "GET /incidents/triggered"
    assert len(seen) == 1 if case != "record is a string" else len(seen) == 2
    await client.aclose()


WHOLE_CASES: dict[str, tuple[Callable[[Any], bytes | None], int, bytes, type[Exception]]] = {
    "html error page": (lambda d: b"<html><body>Bad gateway</body></html>", 200, b"text/html",
                        MalformedResponse),
    "truncated json": (lambda d: json.dumps(d).encode()[:40], 200, b"application/json",
                       MalformedResponse),
    "missing incidents": (lambda d: b'{"pagination": {}}', 200, b"application/json",
                          MalformedResponse),
    "incidents is null": (lambda d: b'{"incidents": null}', 200, b"application/json",
                          MalformedResponse),
    "200 carrying a failure": (lambda d: b'{"message": "Team not found", "error": "Not Found"}',
                               200, b"application/json", MalformedResponse),
    "html 502": (lambda d: b"<html>502</html>", 502, b"text/html", TransientError),
}


@pytest.mark.parametrize("case", sorted(WHOLE_CASES))
async def test_unusable_list_response_raises(sim: SpikeSimulator, case: str) -> None:
    make, status, kind, error = WHOLE_CASES[case]
    fire(sim, "a")
    client = make_client(sim, corrupting(sim, "/incidents/triggered", make, status, kind))
    with pytest.raises(error) as err:
        _ = [p async for p in client.poll(None)]
    assert "GET /incidents/triggered" in str(err.value)
    await client.aclose()


PUSH_CASES: dict[str, Callable[[Any], bytes | None]] = {
    "html": lambda d: b"<html>oops</html>",
    "truncated": lambda d: json.dumps(d).encode()[:25],
    "failed not a list": lambda d: json.dumps({**d, "failed": "sre-101"}).encode(),
    "200 carrying a failure": lambda d: b'{"success": false, "message": "nope"}',
    "failed entry without id": lambda d: json.dumps({**d, "failed": [{"message": "x"}]}).encode(),
}


@pytest.mark.parametrize("case", sorted(PUSH_CASES))
async def test_malformed_push_answer(sim: SpikeSimulator, case: str) -> None:
    fire(sim, "a")
    client = make_client(sim, corrupting(sim, "/incidents/acknowledge", PUSH_CASES[case]))
    with pytest.raises(MalformedResponse) as err:
        await client.push(Action.ACKNOWLEDGE, pushes(Action.ACKNOWLEDGE, ["sre-101"]))
    assert "POST /incidents/acknowledge" in str(err.value)
    await client.aclose()


async def test_push_tolerates_no_content_and_missing_ids(sim: SpikeSimulator) -> None:
    fire(sim, "a")
    fire(sim, "b")
    empty = make_client(sim, corrupting(sim, "/incidents/acknowledge", lambda d: b""))
    out = await empty.push(Action.ACKNOWLEDGE, pushes(Action.ACKNOWLEDGE, ["sre-101"]))
    assert out[0].outcome is Outcome.DONE  # Spike's documented "No content" answer
    await empty.aclose()

    def drop_b(d: Any) -> bytes:
        d["updated"] = [i for i in d["updated"] if i != "sre-102"]
        return json.dumps(d).encode()

    partial = make_client(sim, corrupting(sim, "/incidents/resolve", drop_b))
    out = await partial.push(Action.RESOLVE, pushes(Action.RESOLVE, ["sre-101", "sre-102"]))
    assert [r.outcome for r in out] == [Outcome.DONE, Outcome.RETRY]
    await partial.aclose()


async def test_tolerates_other_readings(sim: SpikeSimulator) -> None:
    """A bare list envelope and numeric counterIds (the 2022 draft) still parse."""
    fire(sim, "a")

    def bare(d: Any) -> bytes:
        for i in d["incidents"]:
            i["counterId"] = 101
            i.pop("message")
        return json.dumps(d["incidents"]).encode()

    client = make_client(sim, corrupting(sim, "/incidents/triggered", bare))
    _pages, seen = await collect(client, None)
    assert set(seen) == {"101"} and seen["101"].title == "a"
    await client.aclose()
