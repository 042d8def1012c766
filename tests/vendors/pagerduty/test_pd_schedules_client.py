"""PagerDutyClient as a migration source and target, against the simulator (ASGI, no mocks).

The seeded hard cases are read into syncd's schedule model, and the model's own renderer must
page exactly who PagerDuty's final schedule pages, over 28 days across a daylight-saving change.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from test_pd_client import corrupting

from syncd.migrate.api import ScheduleTarget
from syncd.migrate.policy import Level, Target
from syncd.migrate.schedule import Override, Window, render
from syncd.ratelimit import Budget
from syncd.simulators.pagerduty import (
    EP_PLATFORM,
    SCHED_BUSINESS,
    SCHED_HALF_DAY,
    SCHED_PRIMARY,
    PagerDutySimulator,
)
from syncd.vendors.base import MalformedResponse, NotFound, PermanentError
from syncd.vendors.pagerduty import PagerDutyClient, PagerDutySettings

D = timedelta(days=1)
NY = ZoneInfo("America/New_York")
# US daylight saving ended on 2026-11-01 (and London's on 2026-10-25): both inside this range.
DST_SINCE = datetime(2026, 10, 19, 4, tzinfo=UTC)


def client_for(sim: PagerDutySimulator, app: Any = None) -> PagerDutyClient:
    creds = sim.describe("http://pd.localhost")["credentials"]
    settings = PagerDutySettings.model_validate({
        "vendor": "pagerduty", "base_url": "http://pd.localhost", "token": creds["token"],
        "from_email": creds["from_email"], "budget_fraction": 1.0, "max_retries": 1})

    async def sleep(seconds: float) -> None:
        sim.clock.advance(seconds)

    return PagerDutyClient("pd", settings, transport=httpx.ASGITransport(app=app or sim.app),
                           budget=Budget(PagerDutyClient.limits, 1.0,
                                         clock=sim.clock.monotonic),
                           backoff_base=0.001, sleep=sleep, clock=sim.clock.now)


@pytest.fixture
async def client(sim: PagerDutySimulator) -> AsyncIterator[PagerDutyClient]:
    c = client_for(sim)
    yield c
    await c.aclose()


def next_us_dst_change(after: datetime) -> datetime:
    """The first hour after ``after`` at which New York's UTC offset changes."""
    at = after.replace(minute=0, second=0, microsecond=0)
    offset = at.astimezone(NY).utcoffset()
    while at.astimezone(NY).utcoffset() == offset:
        at += timedelta(hours=1)
    return at


def test_the_client_is_a_schedule_target(client: PagerDutyClient) -> None:
    assert isinstance(client, ScheduleTarget)
    assert client.schedule_model.vendor == "pagerduty"


async def test_hard_cases_read_into_the_model(client: PagerDutyClient,
                                              sim: PagerDutySimulator) -> None:
    business, half = await client.read_schedules([SCHED_BUSINESS, SCHED_HALF_DAY])
    assert business.time_zone == "America/New_York" and business.precedence
    weekly, daytime = business.rotations  # lowest precedence first, although GET lists it last
    assert weekly.name == "Weekly" and weekly.handovers == (7 * D,) and not weekly.windows
    assert daytime.users == ("PUSR001", "PUSR005") and daytime.handovers == (D,)
    assert set(daytime.windows) == {Window(d, time(9), timedelta(hours=8)) for d in range(5)}
    assert daytime.anchor == datetime(2024, 1, 1, 9, tzinfo=NY)
    assert [(o.user, o.end - o.start) for o in business.overrides] == [
        ("PUSR006", timedelta(hours=8))]
    assert half.time_zone == "Europe/London"
    assert half.rotations[0].handovers == (timedelta(hours=12),)


@pytest.mark.parametrize("sid", [SCHED_BUSINESS, SCHED_HALF_DAY, SCHED_PRIMARY])
async def test_model_renders_what_pagerduty_pages_across_dst(client: PagerDutyClient,
                                                             sid: str) -> None:
    (sched,) = await client.read_schedules([sid])
    until = DST_SINCE + 28 * D
    mine = render(sched, DST_SINCE, until)
    assert mine == await client.rendered(sid, DST_SINCE, until)
    assert len({s.start.astimezone(NY).utcoffset() for s in mine}) == 2  # the change is inside


async def test_model_renders_what_pagerduty_pages_with_overrides_ahead(
        client: PagerDutyClient, sim: PagerDutySimulator) -> None:
    """The next US change (at most ~8 months ahead) with an override on each side of it and
    one overlapping another (the last created wins)."""
    change = next_us_dst_change(sim.clock.now())
    since = change - 14 * D
    api = sim.client(base_url="http://pd.localhost", headers={
        "Authorization": f"Token token={sim.token}"})
    async with api:
        r = await api.post(f"/schedules/{SCHED_BUSINESS}/overrides", json={"overrides": [
            {"start": (change - 2 * D).isoformat(), "end": (change + D).isoformat(),
             "user": {"id": "PUSR003", "type": "user_reference"}},
            {"start": (change - 36 * timedelta(hours=1)).isoformat(),
             "end": (change - D).isoformat(),
             "user": {"id": "PUSR001", "type": "user_reference"}}]})
        assert [i["status"] for i in r.json()] == [201, 201]
    (sched,) = await client.read_schedules([SCHED_BUSINESS])
    assert len(sched.overrides) == 3
    for a, b in ((since, since + 28 * D), (sim.clock.now(), sim.clock.now() + 28 * D)):
        assert render(sched, a, b) == await client.rendered(SCHED_BUSINESS, a, b)


async def test_a_utc_read_would_shift_restrictions(client: PagerDutyClient,
                                                   sim: PagerDutySimulator) -> None:
    """Why the client reads in the schedule's zone: the same schedule read with time_zone=UTC
    (as Grafana's migrator does) renders an hour off for half the year."""
    async with sim.client(base_url="http://pd.localhost", headers={
            "Authorization": f"Token token={sim.token}"}) as api:
        utc = (await api.get(f"/schedules/{SCHED_BUSINESS}", params={"time_zone": "UTC"})
               ).json()["schedule"]
    (sched,) = await client.read_schedules([SCHED_BUSINESS])
    hours = {r["start_time_of_day"] for layer in utc["schedule_layers"]
             for r in layer["restrictions"]}
    offset = -sim.clock.now().astimezone(NY).utcoffset().total_seconds() // 3600
    assert hours == {f"{9 + int(offset):02d}:00:00"}
    shifted = replace(sched, time_zone="UTC", rotations=tuple(
        replace(r, windows=tuple(replace(w, start=time(9 + int(offset))) for w in r.windows))
        for r in sched.rotations), overrides=())
    until = DST_SINCE + 28 * D
    assert render(shifted, DST_SINCE, until) != render(replace(sched, overrides=()),
                                                       DST_SINCE, until)


async def test_create_read_back_renders_the_same(client: PagerDutyClient,
                                                 sim: PagerDutySimulator) -> None:
    (source,) = await client.read_schedules([SCHED_BUSINESS])
    definition = replace(source, overrides=())
    new_id = await client.create_schedule(definition, "syncd-mig-1")
    assert new_id not in (SCHED_BUSINESS,) and new_id in sim.schedules
    (back,) = await client.read_schedules([new_id])
    assert back.time_zone == source.time_zone and not back.overrides
    now = sim.clock.now()
    for a, b in ((now, now + 28 * D), (DST_SINCE, DST_SINCE + 28 * D)):
        assert render(back, a, b) == render(definition, a, b) == await client.rendered(
            new_id, a, b)
    assert await client.find_schedule("syncd-mig-1") == new_id
    assert await client.find_schedule("syncd-mig-2") is None


async def test_update_keeps_the_id_and_the_layers(client: PagerDutyClient,
                                                  sim: PagerDutySimulator) -> None:
    (source,) = await client.read_schedules([SCHED_BUSINESS])
    definition = replace(source, overrides=())
    sid = await client.create_schedule(definition, "syncd-mig-up")
    (before,) = await client.read_schedules([sid])
    weekly, daytime = definition.rotations
    edited = replace(definition, rotations=(replace(weekly, users=(*weekly.users, "PUSR006")),
                                            daytime))
    await client.update_schedule(sid, edited, "syncd-mig-up")
    (after,) = await client.read_schedules([sid])
    assert [r.id for r in after.rotations] == [r.id for r in before.rotations]
    assert after.rotations[0].users[-1] == "PUSR006"
    now = sim.clock.now()
    assert render(after, now, now + 28 * D) == render(edited, now, now + 28 * D) \
        == await client.rendered(sid, now, now + 28 * D)
    # One layer fewer: PagerDuty keeps the layer, ended now; nothing it paged is lost before.
    await client.update_schedule(sid, replace(edited, rotations=(weekly,)), "syncd-mig-up")
    (fewer,) = await client.read_schedules([sid])
    assert len(fewer.rotations) == 2 and fewer.rotations[0].end is not None
    assert fewer.rotations[0].end <= sim.clock.now()
    later = now + timedelta(minutes=1)
    assert render(fewer, later, later + 28 * D) == render(
        replace(edited, rotations=(weekly,)), later, later + 28 * D)
    assert sid in sim.schedules and len(sim.schedules) == 6


async def test_sync_overrides_creates_only_the_missing(client: PagerDutyClient,
                                                       sim: PagerDutySimulator) -> None:
    now = sim.clock.now().replace(microsecond=0)
    wanted = [Override(now + D, now + D + timedelta(hours=4), "PUSR002"),
              Override(now + 2 * D, now + 3 * D, "PUSR003"),
              Override(now - 3 * D, now - 2 * D, "PUSR004")]  # over: never written
    assert await client.sync_overrides(SCHED_PRIMARY, wanted) == 2
    assert await client.sync_overrides(SCHED_PRIMARY, wanted) == 0
    assert len(sim.schedules[SCHED_PRIMARY].overrides) == 2
    (sched,) = await client.read_schedules([SCHED_PRIMARY])
    assert {(o.start, o.user) for o in sched.overrides} == {(now + D, "PUSR002"),
                                                           (now + 2 * D, "PUSR003")}
    with pytest.raises(PermanentError, match="refused"):
        await client.sync_overrides(SCHED_PRIMARY, [Override(now + D, now + 2 * D, "NOBODY")])


async def test_preview_renders_without_saving(client: PagerDutyClient,
                                              sim: PagerDutySimulator) -> None:
    (source,) = await client.read_schedules([SCHED_BUSINESS])
    count = len(sim.schedules)
    now = sim.clock.now()
    a, b = now, now + 28 * D
    assert await client.preview(source, a, b) == render(source, a, b)  # overrides on top
    assert await client.preview(source, DST_SINCE, DST_SINCE + 28 * D) == render(
        source, DST_SINCE, DST_SINCE + 28 * D)
    assert len(sim.schedules) == count


async def test_policies_read_create_update_find(client: PagerDutyClient,
                                                sim: PagerDutySimulator) -> None:
    (platform,) = await client.read_policies([EP_PLATFORM])
    assert platform.repeats == 2 and platform.team == "PTEAMSR"
    assert [lvl.delay for lvl in platform.levels] == [timedelta(minutes=m) for m in (15, 20, 10)]
    # A PagerDuty acknowledgement stops everyone's paging: incident.io's ack_mode "first".
    assert {lvl.ack_mode for lvl in platform.levels} == {"first"}
    assert [lvl.targets for lvl in platform.levels] == [
        (Target("schedule", SCHED_BUSINESS),), (Target("schedule", SCHED_HALF_DAY),),
        (Target("user", "PUSR006"),)]
    assert {p.id for p in await client.read_policies()} >= {EP_PLATFORM, "PEPSRE1"}
    new_id = await client.create_policy(platform, "syncd-mig-ep")
    (back,) = await client.read_policies([new_id])
    assert (back.levels, back.repeats) == (platform.levels, platform.repeats)
    assert await client.find_policy("syncd-mig-ep") == new_id
    edited = replace(platform, repeats=0, levels=(*platform.levels, Level(
        (Target("user", "PUSR001"), Target("schedule", SCHED_PRIMARY)), timedelta(minutes=5),
        ack_mode="first")))
    await client.update_policy(new_id, edited, "syncd-mig-ep")
    (after,) = await client.read_policies([new_id])
    assert after.id == new_id and after.levels == edited.levels and after.repeats == 0
    with pytest.raises(PermanentError, match="whole minutes"):
        await client.create_policy(replace(platform, levels=(Level(
            (Target("user", "PUSR001"),), timedelta(seconds=90)),)), "x")
    with pytest.raises(PermanentError):  # the simulator refuses an unknown target
        await client.create_policy(replace(platform, levels=(Level(
            (Target("user", "NOBODY"),), timedelta(minutes=1)),)), "x")
    with pytest.raises(NotFound):
        await client.read_policies(["PNOPE"])


def tapped(sim: PagerDutySimulator, sent: list[tuple[str, dict[str, Any]]],
           inner: Any = None) -> Any:
    """A network tap: the simulator (or ``inner``, an app in front of it) answers as ever;
    each JSON request body is kept."""
    answer = inner or sim.app

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT"):
            await answer(scope, receive, send)
            return
        parts: list[bytes] = []
        while True:
            message = await receive()
            parts.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(parts)
        sent.append((f"{scope['method']} {scope['path']}", json.loads(raw) if raw else {}))
        done = False

        async def replay() -> Any:
            nonlocal done
            if done:
                return await receive()
            done = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await answer(scope, replay, send)
    return app


async def test_the_assignment_strategy_is_sent_only_where_round_robin_is_or_was(
        sim: PagerDutySimulator) -> None:
    """Round robin exists only on some PagerDuty plans (support.pagerduty.com/docs/
    round-robin-scheduling) and how an account without it treats the field is undocumented:
    ``round_robin`` is sent only on a round-robin level, and ``assign_to_everyone`` only on an
    update where the target's rule reads round robin now (to turn it off)."""
    sent: list[tuple[str, dict[str, Any]]] = []
    client = client_for(sim, tapped(sim, sent))
    try:
        (platform,) = await client.read_policies([EP_PLATFORM])

        def strategies() -> list[object]:
            (_, body), = [(r, b) for r, b in sent if r.startswith(("POST /escalation_p",
                                                                     "PUT /escalation_p"))]
            sent.clear()
            return [rule.get("escalation_rule_assignment_strategy", "-")
                    for rule in body["escalation_policy"]["escalation_rules"]]

        robin = replace(platform, levels=(replace(platform.levels[0], round_robin=True),
                                          *platform.levels[1:]))
        new_id = await client.create_policy(robin, "syncd-mig-rr")
        assert strategies() == ["round_robin", "-", "-"]
        await client.update_policy(new_id, platform, "syncd-mig-rr")
        assert strategies() == ["assign_to_everyone", "-", "-"]  # turned off where it was on
        (back,) = await client.read_policies([new_id])
        assert not any(lvl.round_robin for lvl in back.levels)
        await client.update_policy(new_id, platform, "syncd-mig-rr")
        assert strategies() == ["-", "-", "-"]
        plain = await client.create_policy(platform, "syncd-mig-plain")
        assert strategies() == ["-", "-", "-"]
        assert plain != new_id
    finally:
        await client.aclose()


async def test_an_update_turns_off_any_strategy_the_target_rule_has_but_everyone(
        sim: PagerDutySimulator) -> None:
    """A target rule assigned by a strategy syncd does not know (a value the spec lacks, or
    several in the list form) is read as everyone, for the policy's ``unsupported``; the
    update sent nothing for it, so the rule kept paging by that strategy. Now any strategy
    but the default gets ``assign_to_everyone`` on an update to a plain level."""
    sent: list[tuple[str, dict[str, Any]]] = []
    client = client_for(sim, tapped(sim, sent))
    try:
        (platform,) = await client.read_policies([EP_PLATFORM])
        pid = await client.create_policy(platform, "syncd-mig-odd")
    finally:
        await client.aclose()

    def odd(body: bytes) -> tuple[int, str, bytes]:
        data = json.loads(body)
        first, second, _ = data["escalation_policy"]["escalation_rules"]
        first["escalation_rule_assignment_strategy"] = "sometimes"
        second["escalation_rule_assignment_strategy"] = [
            {"type": "round_robin"}, {"type": "assign_to_everyone"}]
        return 200, "application/json", json.dumps(data).encode()
    sent.clear()
    client = client_for(sim, tapped(sim, sent, corrupting(sim, f"/escalation_policies/{pid}",
                                                          odd)))
    try:
        await client.update_policy(pid, platform, "syncd-mig-odd")
        (body,) = [b for r, b in sent if r.startswith("PUT ")]
        assert [rule.get("escalation_rule_assignment_strategy", "-") for rule in
                body["escalation_policy"]["escalation_rules"]] == [
            "assign_to_everyone", "assign_to_everyone", "-"]
    finally:
        await client.aclose()


async def test_a_strategy_syncd_cannot_read_refuses_that_policy_alone(
        sim: PagerDutySimulator) -> None:
    """An unknown ``escalation_rule_assignment_strategy``, or several in the list form of the
    spec's example, stopped the read of every policy (or read as "everyone", paging all):
    now that policy alone carries it in ``unsupported`` (refused by name in the plan)."""
    def edit(body: bytes) -> tuple[int, str, bytes]:
        data = json.loads(body)
        first, second, third = data["escalation_policies"][:3]
        first["escalation_rules"][0]["escalation_rule_assignment_strategy"] = "sometimes"
        second["escalation_rules"][-1]["escalation_rule_assignment_strategy"] = [
            {"type": "round_robin"}, {"type": "assign_to_everyone"}]
        third["escalation_rules"][0]["escalation_rule_assignment_strategy"] = [
            {"type": "round_robin"}]
        return 200, "application/json", json.dumps(data).encode()
    client = client_for(sim, corrupting(sim, "/escalation_policies", edit))
    try:
        policies = await client.read_policies()
        first, second, third = policies  # every policy the account has
        assert first.unsupported == (
            "assigns level 1 by an unknown strategy 'sometimes'",)
        last = len(second.levels)
        assert second.unsupported == (
            f"assigns level {last} by 2 strategies at once ('round_robin', "
            "'assign_to_everyone')",)
        assert third.unsupported == () and third.levels[0].round_robin  # the list of one
    finally:
        await client.aclose()


async def test_unknown_schedule_is_not_found(client: PagerDutyClient) -> None:
    with pytest.raises(NotFound):
        await client.read_schedules(["PNOPE"])


def _editing(edit: Any) -> Any:
    def change(body: bytes) -> tuple[int, str, bytes]:
        data = json.loads(body)
        edit(data["schedule"])
        return 200, "application/json", json.dumps(data).encode()
    return change


@pytest.mark.parametrize("edit,what", [
    (lambda s: s.pop("final_schedule"), "rendered_schedule_entries"),
    (lambda s: s["schedule_layers"][0]["restrictions"][0].update(start_day_of_week=9),
     "start_day_of_week"),
    (lambda s: s["schedule_layers"][0].update(rotation_turn_length_seconds="1d"), "integer"),
    (lambda s: [e.append(e[0]) for e in [s["final_schedule"].get(
        "rendered_schedule_entries")] if e], "overlap"),
])
async def test_unusable_schedule_answers_are_malformed(sim: PagerDutySimulator, edit: Any,
                                                       what: str) -> None:
    client = client_for(sim, corrupting(sim, f"/schedules/{SCHED_BUSINESS}", _editing(edit)))
    with pytest.raises(MalformedResponse, match=what):
        await client.read_schedules([SCHED_BUSINESS])
        await client.rendered(SCHED_BUSINESS, DST_SINCE, DST_SINCE + 28 * D)
    await client.aclose()

