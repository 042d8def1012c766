"""The incident.io client as a migration source and target, over ASGI against the simulator:
what it reads renders (with syncd's model) exactly as incident.io renders it, across the
2026-11-01 US DST change; what it writes reads back the same; writes are in place and once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from ii_helpers import HEADERS, make_client
from test_ii_client import Corrupt

from syncd.migrate.api import ScheduleTarget
from syncd.migrate.policy import Level, Policy, Target
from syncd.migrate.schedule import Override, Rotation, Schedule, Window, render
from syncd.simulators.incidentio import IncidentIOSimulator, ulid
from syncd.simulators.incidentio_base import Override as SimOverride
from syncd.vendors.base import MalformedResponse, PermanentError
from syncd.vendors.incidentio import IncidentIOClient

NY = ZoneInfo("America/New_York")
START = datetime(2026, 10, 20, tzinfo=UTC)
UNTIL = START + timedelta(days=28)  # spans 2026-11-01, when New York leaves daylight time


@pytest.fixture
def sim() -> IncidentIOSimulator:
    """The seeded organisation plus an override on each New York rotation inside the window
    (the seeded ones lie a few days after the real now)."""
    s = IncidentIOSimulator(seed=1)
    made = s.clock.now()
    for n, (sid, at) in enumerate(((ulid("C", 3), datetime(2026, 10, 30, 15, tzinfo=UTC)),
                                   (ulid("C", 4), datetime(2026, 11, 1, 11, tzinfo=UTC)))):
        rid = s.schedules[sid].rotations[-1].id
        o = SimOverride(ulid("V", 900 + n), sid, rid, s.schedules[sid].layer_ids(rid).pop(),
                     list(s.users)[3], at, at + timedelta(hours=3), made, made)
        s.overrides[o.id] = o
    return s


@pytest.fixture
async def client(sim: IncidentIOSimulator) -> AsyncIterator[IncidentIOClient]:
    """A client whose now is 2026-10-20: overrides ending after it are "future"."""
    c = make_client(sim)
    c._clock = lambda: START
    yield c
    await c.aclose()


def users(sim: IncidentIOSimulator) -> list[str]:
    return list(sim.users)


def hard_case(sim: IncidentIOSimulator) -> Schedule:
    """Alternating 24h/12h turns with a window over midnight, a weekly rotation, overrides."""
    alice, bob, carol, dave = users(sim)[:4]
    anchor = datetime(2026, 10, 5, 9, tzinfo=NY)
    return Schedule("src", "Migrated", "America/New_York", (
        Rotation("r1", "Alternating", (alice, bob, carol), anchor,
                 (timedelta(hours=24), timedelta(hours=12)),
                 (Window(4, time(22), timedelta(hours=5)), Window(1, time(9),
                                                                  timedelta(hours=8)))),
        Rotation("r2", "Weekly", (dave, alice), anchor, (timedelta(weeks=1),)),
    ), precedence=False, overrides=(
        Override(datetime(2026, 10, 30, 10, tzinfo=UTC), datetime(2026, 10, 30, 14, tzinfo=UTC),
                 dave, "r2"),
        Override(datetime(2026, 11, 3, 15, tzinfo=UTC), datetime(2026, 11, 3, 18, tzinfo=UTC),
                 bob, "r1"),
    ))


def test_the_client_is_a_schedule_target(client: IncidentIOClient) -> None:
    assert isinstance(client, ScheduleTarget)
    assert client.schedule_model.vendor == "incidentio"


async def test_seeded_hard_cases_render_like_incidentio_across_dst(
        sim: IncidentIOSimulator, client: IncidentIOClient) -> None:
    read = await client.read_schedules([ulid("C", 3), ulid("C", 4)])
    ny, twelve = read
    assert ny.precedence is False and ny.time_zone == "America/New_York"
    business = ny.rotations[1]
    assert [w.weekday for w in business.windows] == [0, 1, 2, 3, 4]
    assert business.windows[0].start == time(9) and business.windows[0].duration == timedelta(
        hours=8)
    assert twelve.rotations[0].handovers == (timedelta(hours=12),)
    assert len(ny.overrides) == 2 and {o.rotation_id for o in ny.overrides} == {business.id}
    assert len(twelve.overrides) == 2
    for schedule in read:
        ours = render(schedule, START, UNTIL)
        theirs = await client.rendered(schedule.id, START, UNTIL)
        assert ours == theirs, schedule.name
    # The hand-off stays at 09:00 local: 13:00 UTC before the change, 14:00 after.
    starts = {s.start for s in render(ny, START, UNTIL)}
    assert datetime(2026, 10, 30, 13, tzinfo=UTC) in starts
    assert datetime(2026, 11, 2, 14, tzinfo=UTC) in starts


async def test_every_seeded_schedule_reads_and_renders_alike(
        client: IncidentIOClient) -> None:
    for schedule in await client.read_schedules():
        assert render(schedule, START, UNTIL) == await client.rendered(schedule.id, START,
                                                                       UNTIL)


async def test_create_read_back_render_equal_and_preview_agrees(
        sim: IncidentIOSimulator, client: IncidentIOClient) -> None:
    source = hard_case(sim)
    preview = await client.preview(source, START, UNTIL)
    assert preview == render(source, START, UNTIL)
    long = await client.preview(source, START, START + timedelta(days=120))  # two windows
    assert long == render(source, START, START + timedelta(days=120))
    sid = await client.create_schedule(source, "syncd-migrate-test")
    assert await client.sync_overrides(sid, source.overrides) == 2
    back = (await client.read_schedules([sid]))[0]
    assert back.time_zone == "America/New_York" and len(back.rotations) == 2
    assert len(back.overrides) == 2
    assert render(back, START, UNTIL) == render(source, START, UNTIL)
    assert await client.rendered(sid, START, UNTIL) == render(source, START, UNTIL)


async def test_update_in_place_find_by_marker_and_overrides_once(
        sim: IncidentIOSimulator, client: IncidentIOClient) -> None:
    source = hard_case(sim)
    sid = await client.create_schedule(source, "syncd-migrate-abc")
    assert await client.find_schedule("syncd-migrate-abc") == sid
    assert await client.find_schedule("syncd-migrate-other") is None
    assert await client.sync_overrides(sid, source.overrides) == 2
    assert await client.sync_overrides(sid, source.overrides) == 0
    rotation_ids = [r.id for r in sim.schedules[sid].rotations]
    erin = users(sim)[4]
    edited = Schedule(source.id, source.name, source.time_zone, (
        source.rotations[0],
        Rotation("r2", "Weekly", (*source.rotations[1].users, erin),
                 source.rotations[1].anchor, (timedelta(weeks=1),)),
    ), precedence=False, overrides=source.overrides)
    fresh = make_client(sim)  # another run: nothing cached from the create
    try:
        await fresh.update_schedule(sid, edited, "syncd-migrate-abc")
        assert await fresh.sync_overrides(sid, edited.overrides) == 0  # kept their rotations
    finally:
        await fresh.aclose()
    assert [r.id for r in sim.schedules[sid].rotations] == rotation_ids
    back = (await client.read_schedules([sid]))[0]
    assert erin in back.rotations[1].users
    assert render(back, START, UNTIL) == render(edited, START, UNTIL)
    assert await client.find_schedule("syncd-migrate-abc") == sid


async def test_paths_read_write_and_find(sim: IncidentIOSimulator,
                                         client: IncidentIOClient) -> None:
    platform = (await client.read_policies([ulid("P", 2)]))[0]
    assert platform.repeats == 2
    assert [lvl.delay for lvl in platform.levels] == [timedelta(seconds=s)
                                                      for s in (300, 600, 900)]
    assert platform.levels[0].targets == (Target("schedule", ulid("C", 3)),)
    assert platform.levels[2].targets == (Target("user", users(sim)[0]),)
    assert not any(lvl.conditional for lvl in platform.levels)
    policy = Policy("src", "Migrated path", (
        # ack mode, retries and a low-urgency target are written and read back as they are
        Level((Target("schedule", ulid("C", 1)),), timedelta(minutes=5), ack_mode="first",
              retry=(3, timedelta(minutes=5))),
        Level((Target("user", users(sim)[1], low_urgency=True),), timedelta(seconds=90),
              ack_mode="all"),
    ), repeats=2)
    pid = await client.create_policy(policy, "syncd-migrate-p1")
    assert await client.find_policy("syncd-migrate-p1") == pid
    assert await client.find_policy("syncd-migrate-p2") is None
    back = (await client.read_policies([pid]))[0]
    assert back.repeats == 2 and back.levels == policy.levels
    await client.update_policy(pid, Policy("src", "Migrated path", policy.levels[:1], 0),
                               "syncd-migrate-p1")
    again = (await client.read_policies([pid]))[0]
    assert again.repeats == 0 and len(again.levels) == 1 and again.id == pid
    assert len(sim.paths) == 3
    with pytest.raises(PermanentError):
        await client.create_policy(Policy("x", "x", (Level((), timedelta(0), True),)), "m")


async def test_if_else_levels_read_as_conditional(sim: IncidentIOSimulator,
                                                  client: IncidentIOClient) -> None:
    async with sim.client(headers=HEADERS) as http:
        r = await http.post("/v2/escalation_paths", json={"name": "Branchy", "path": [
            {"id": "a", "type": "level", "level": {"targets": [
                {"type": "user", "id": users(sim)[0], "urgency": "high"}],
                "time_to_ack_seconds": 60}},
            {"id": "b", "type": "if_else", "if_else": {
                "conditions": [{"subject": "alert.priority", "operation": "one_of",
                                "param_bindings": [{"array_value": [{"literal": "P1"}]}]}],
                "then_path": [{"id": "c", "type": "level", "level": {"targets": [
                    {"type": "user", "id": users(sim)[1], "urgency": "high"}]}}],
                "else_path": []}}]})
    assert r.status_code == 201, r.text
    read = (await client.read_policies([r.json()["escalation_path"]["id"]]))[0]
    assert [lvl.conditional for lvl in read.levels] == [False, True]


async def test_vendor_refusals_are_typed(sim: IncidentIOSimulator,
                                         client: IncidentIOClient) -> None:
    bad = Schedule("x", "x", "UTC", (Rotation("r", "r", ("01HUNOTAUSER0000000000000",),
                                              START, (timedelta(days=1),)),))
    with pytest.raises(PermanentError):
        await client.create_schedule(bad, "m")
    with pytest.raises(PermanentError):  # a turn that is not whole hours
        await client.create_schedule(Schedule("x", "x", "UTC", (Rotation(
            "r", "r", (users(sim)[0],), START, (timedelta(minutes=90),)),)), "m")


def test_path_parts_a_level_cannot_carry_are_named_not_dropped() -> None:
    """Nodes and targets the simulator refuses to store (it does not simulate channels or
    hand-overs to other paths) but incident.io serves (openapi.json EscalationPathNodeV2,
    EscalationPathTargetV2): each is named, so the plan refuses the path instead of dropping
    the step."""
    from syncd.vendors.incidentio_schedules import _Walk

    walk = _Walk("a")
    repeats = walk.nodes([
        {"id": "a", "type": "level", "level": {"targets": [
            {"type": "user", "id": "U1", "urgency": "high"},
            {"type": "slack_channel", "id": "C1", "urgency": "high"}],
            "round_robin_config": {"enabled": True, "rotate_after_seconds": 120},
            "time_to_ack_seconds": 60}},
        {"id": "b", "type": "notify_channel", "notify_channel": {"targets": []}},
        {"id": "c", "type": "escalation_path", "escalation_path": {"escalation_path_id": "P"}},
        {"id": "d", "type": "repeat", "repeat": {"repeat_times": 1, "to_node": "a"}},
    ], conditional=False)
    assert repeats == 1
    assert [t.id for t in walk.levels[0].targets] == ["U1"]
    # Round robin is read as what it is, not refused (both targets express it).
    assert (walk.levels[0].round_robin, walk.levels[0].rotate_after) == (
        True, timedelta(seconds=120))
    text = " | ".join(walk.unsupported)
    assert "round robin" not in text
    for part in ("slack_channel", "'notify_channel'", "'escalation_path'"):
        assert part in text, text
    assert "repeats from" not in text  # a repeat from the start is num_loops


def _first_level(change: Any) -> Any:
    def rewrite(raw: bytes) -> bytes:
        data = json.loads(raw)
        change(next(n for n in data["escalation_path"]["path"] if n["type"] == "level"))
        return json.dumps(data).encode()
    return rewrite


@pytest.mark.parametrize("change", [
    lambda node: node["level"].update(targets=["a bare string"]),
    lambda node: node["level"].update(round_robin_config="yes"),
    lambda node: node.update(level=["not", "an", "object"]),
])
async def test_unusable_path_answers_are_malformed_not_a_crash(sim: IncidentIOSimulator,
                                                               change: Any) -> None:
    """A path whose parts have the wrong JSON type is a MalformedResponse naming the path, as
    for every other answer; `.get` on a string raised AttributeError past the reader."""
    pid = ulid("P", 2)
    c = make_client(sim, httpx.ASGITransport(app=Corrupt(
        sim.app, f"/v2/escalation_paths/{pid}", _first_level(change))))
    try:
        with pytest.raises(MalformedResponse, match=pid):
            await c.read_policies([pid])
    finally:
        await c.aclose()


async def test_an_unknown_scheduling_mode_refuses_that_schedule_alone(
        sim: IncidentIOSimulator, client: IncidentIOClient) -> None:
    """``scheduling_mode`` is an enum of "fair" and "sequential" (openapi.json
    ``ScheduleRotationV2``); a value added later stopped the read of every schedule of the
    account. With one turn length the mode does not apply ("only applies when you have
    asymmetric handovers") and is ignored; with alternating lengths that one schedule is
    unconvertible by name, and the account's others read on."""
    one, two = ulid("C", 1), ulid("C", 2)
    sim.schedules[one].rotations[0].scheduling_mode = "balanced"  # a mode the spec lacks
    alternating = sim.schedules[two].rotations[0]
    alternating.handovers = [("daily", 2), ("daily", 5)]
    alternating.scheduling_mode = "balanced"
    read = {s.id: s for s in await client.read_schedules()}
    assert len(read) == len(sim.schedules)
    assert read[one].unconvertible is None and read[one].rotations
    assert not read[one].rotations[0].fair
    assert read[two].unconvertible is not None
    code, sentence = read[two].unconvertible
    assert code == "scheduling_mode_unknown"
    assert "'balanced'" in sentence and alternating.name in sentence


async def test_an_unconvertible_schedule_reads_no_overrides(
        sim: IncidentIOSimulator, client: IncidentIOClient) -> None:
    """The plan refuses an unconvertible schedule whatever its overrides are: they are not
    fetched (one request per schedule spent from the account's budget for nothing)."""
    sid = ulid("C", 3)
    sim.schedules[sid].rotations[0].layers.append(("01HLAYERSECOND000000000000", "Second"))
    (read,) = await client.read_schedules([sid])
    assert read.unconvertible is not None
    assert sim.call_count(route="/v2/schedule_overrides") == 0
    (other,) = await client.read_schedules([ulid("C", 4)])
    assert other.overrides and sim.call_count(route="/v2/schedule_overrides") == 1
