"""syncd migrate end to end on the simulators: plan, apply, verify, re-run, edit, crash.

The simulators render their schedules from the stored definitions, so verify compares two
vendors' own renderings, not syncd's model with itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event
from world import World, render, threaded_sims

from syncd import config as config_mod
from syncd.ledger import Ledger, utcnow
from syncd.ledger import migrated as store
from syncd.migrate import service
from syncd.migrate.convert import Conversion
from syncd.migrate.plan import POLICY, SCHEDULE, Known, Plan, Verb
from syncd.migrate.schedule import Schedule

NY, HALF_DAY, POLICY_ID = "PSCHNY1", "PSCH12H", "PEPPLT1"
SCHEDULE_WRITES = ("/schedules", "/schedules/{id}", "/schedules/{id}/overrides",
                   "/escalation_policies", "/escalation_policies/{id}")


def writes(sim: object) -> int:
    return sum(sim.call_count(method=m, route=r)  # type: ignore[attr-defined]
               for m in ("POST", "PUT") for r in SCHEDULE_WRITES)


def pair_of(w: World, source: str, target: str) -> service.Pair:
    """The migration's clients on the world's simulators, budgeted as fast as those run their
    limits (x100, as the world's engine): at the documented limits a Splunk On-Call source's
    16th team-schedule read of a minute (2018 table, 15 a minute) waits out the window."""
    return service.open_pair(w.config, w.ledger, source, target,
                             transports={a: s.transport() for a, s in w.sims.items()},
                             budget_scale=100.0)


async def closed(pair: service.Pair) -> None:
    await pair.source_client.aclose()
    await pair.target_client.aclose()


async def apply_then_verify(pair: service.Pair, plan: Plan) -> None:
    """Apply the plan; both tools then page alike over four weeks."""
    await service.apply(pair, plan, now=utcnow())
    checked = await service.verify(pair, now=utcnow(), days=28)
    assert checked and all(v.differences == [] for v in checked), [v.as_dict() for v in checked]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path, {"pd": "pagerduty", "pd2": "pagerduty"}, [])


SELECTION = service.Selection(policies=(POLICY_ID,))
HORIZON = timedelta(days=28)


async def test_plan_apply_verify_rerun_and_edit_in_place(world: World) -> None:
    target = world.sims["pd2"]
    pair = pair_of(world, "pd", "pd2")
    try:
        now = utcnow()
        plan = await service.plan(pair, SELECTION, now=now, horizon=HORIZON)
        kinds = {(i.kind, i.source_id): i for i in plan.items}
        assert set(kinds) >= {(POLICY, POLICY_ID), (SCHEDULE, NY)}  # the policy's schedules
        for item in plan.items:
            assert item.verb == Verb.CREATE, item.as_dict()
            assert item.conversion == Conversion.EXACT, item.as_dict()
            if item.kind == SCHEDULE:
                assert item.verified_by == "target preview"
                assert item.differences == [], item.as_dict()
        assert plan.as_dict()["summary"]["create"] == len(plan.items)

        before = writes(target)
        applied = await service.apply(pair, plan, now=now)
        assert {a.action for a in applied} == {"created"}
        assert writes(target) > before
        ids = {(a.kind, a.source_id): a.target_id for a in applied}

        checked = await service.verify(pair, now=utcnow(), days=28)
        assert checked and all(v.differences == [] for v in checked), [
            v.as_dict() for v in checked if v.differences]
        assert {v.level for v in checked if v.kind == POLICY} == {1, 2, 3}
        config = service.dual_run_config(pair, checked)
        assert f'schedule = "{ids[(SCHEDULE, NY)]}"' in config

        # A second apply changes nothing.
        again = await service.plan(pair, SELECTION, now=utcnow(), horizon=HORIZON)
        assert again.summary()["unchanged"] == len(again.items), again.as_dict()
        quiet = writes(target)
        await service.apply(pair, again, now=utcnow())
        assert writes(target) == quiet

        # An edit in the source (a new member in a layer) updates in place.
        (sched,) = await pair.reader.read_schedules([NY])
        rot = sched.rotations[0]
        edited = replace(sched, rotations=(replace(rot, users=(*rot.users, "PUSR005")),
                                           *sched.rotations[1:]))
        await pair.source_client.update_schedule(NY, edited, "edited by a person")
        changed = await service.plan(pair, SELECTION, now=utcnow(), horizon=HORIZON)
        item = changed.item(SCHEDULE, NY)
        assert item is not None and item.verb == Verb.UPDATE
        result = await service.apply(pair, changed, now=utcnow())
        updated = {(a.kind, a.source_id): (a.action, a.target_id) for a in result}
        assert updated[(SCHEDULE, NY)] == ("updated", ids[(SCHEDULE, NY)])
        checked = await service.verify(pair, now=utcnow(), days=28)
        assert all(v.differences == [] for v in checked)
    finally:
        await closed(pair)
        await world.close()


async def test_a_created_object_is_recorded_in_one_write_unless_overrides_follow(
        world: World) -> None:
    """After its intent, a created object costs one ledger write (its target id and
    fingerprint together); only a schedule with overrides records its target id before them
    and its fingerprint after them, so a failure in between leaves it known (see
    test_a_schedule_whose_overrides_failed_is_verified_and_finished_by_the_rerun)."""
    pair = pair_of(world, "pd", "pd2")
    updates: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith("UPDATE MIGRATED"):
            updates.append(statement)

    event.listen(world.ledger.engine, "before_cursor_execute", seen)
    try:
        plan = await service.plan(pair, SELECTION, now=utcnow(), horizon=HORIZON)
        applied = await service.apply(pair, plan, now=utcnow())
        assert {a.action for a in applied} == {"created"} and len(applied) > 1
        with_overrides = [i for i in plan.items
                          if isinstance(i.converted, Schedule) and i.converted.overrides]
        assert 0 < len(with_overrides) < len(applied)  # both kinds
        assert len(updates) == len(applied) + len(with_overrides)
        known = pair.known()
        for a in applied:
            item = plan.item(a.kind, a.source_id)
            assert item is not None
            assert known[(a.kind, a.source_id)] == Known(a.target_id or "", item.fingerprint or "")
    finally:
        event.remove(world.ledger.engine, "before_cursor_execute", seen)
        await closed(pair)
        await world.close()


async def test_verify_reaches_a_daylight_saving_change_and_catches_a_drifted_target(
        world: World) -> None:
    pair = pair_of(world, "pd", "pd2")
    try:
        plan = await service.plan(pair, service.Selection(schedules=(NY,)), now=utcnow(),
                                  horizon=HORIZON)
        (applied,) = await service.apply(pair, plan, now=utcnow())
        long = await service.verify(pair, now=utcnow(), days=120)  # a DST change is in reach
        assert long[0].differences == []
        # Someone edits the migrated schedule in the target: verify lists the difference.
        (target_sched,) = await pair.writer.read_schedules([applied.target_id])  # type: ignore[union-attr]
        rot = target_sched.rotations[0]
        await pair.target_client.update_schedule(  # type: ignore[attr-defined]
            applied.target_id, replace(target_sched, rotations=(
                replace(rot, users=tuple(reversed(rot.users))), *target_sched.rotations[1:])),
            service.marker("pd", SCHEDULE, NY))
        drifted = await service.verify(pair, now=utcnow(), days=28)
        assert drifted[0].differences
    finally:
        await closed(pair)
        await world.close()


async def test_a_create_whose_commit_was_lost_is_resumed_not_repeated(world: World) -> None:
    """The crash window: the vendor created the schedule, the ledger never heard back."""
    target = world.sims["pd2"]
    pair = pair_of(world, "pd", "pd2")
    try:
        plan = await service.plan(pair, service.Selection(schedules=(NY,)), now=utcnow(),
                                  horizon=HORIZON)
        (item,) = plan.items
        mark = service.marker("pd", SCHEDULE, NY)
        world.ledger.call(store.intend, "pd", "pd2", SCHEDULE, NY, mark, utcnow())
        made = await pair.target_client.create_schedule(item.converted, mark)  # type: ignore[attr-defined]
        count = len(target.schedules)
        (applied,) = await service.apply(pair, plan, now=utcnow())
        assert (applied.action, applied.target_id) == ("resumed", made)
        assert len(target.schedules) == count
    finally:
        await closed(pair)
        await world.close()


async def test_missing_people_are_listed_and_nothing_is_written(world: World) -> None:
    world.config = replace(world.config, users={"pd2": {"PUSR002": "nobody@else.example"}})
    pair = pair_of(world, "pd", "pd2")
    try:
        plan = await service.plan(pair, SELECTION, now=utcnow(), horizon=HORIZON)
        assert plan.unmatched, plan.as_dict()
        refused = [i for i in plan.items if i.verb == Verb.REFUSED]
        assert refused and any(i.refusal and i.refusal.code == "unmatched_people"
                               for i in refused)
    finally:
        await closed(pair)
        await world.close()


async def test_a_target_without_a_schedule_api_refuses_with_no_documented_api(
        tmp_path: Path) -> None:
    world = World(tmp_path, {"pd": "pagerduty", "sp": "spike"}, [])
    pair = pair_of(world, "pd", "sp")
    try:
        plan = await service.plan(pair, SELECTION, now=utcnow(), horizon=HORIZON)
        assert plan.items and all(i.refusal and i.refusal.code == "no_documented_api"
                                  for i in plan.items)
        schedule = next(i for i in plan.items if i.kind == SCHEDULE)
        assert schedule.refusal and "[[oncall]]" in schedule.refusal.sentence  # the offer
    finally:
        await closed(pair)
        await world.close()


@pytest.mark.slow
@pytest.mark.parametrize("vendor", ["pagerduty", "incidentio"])
def test_kill9_mid_apply_then_apply_again_creates_no_duplicate(tmp_path: Path,
                                                               vendor: str) -> None:
    running, tables = threaded_sims({"pd": "pagerduty", "to": vendor}, 1.0)
    target = running["to"].sim
    try:
        config = tmp_path / "syncd.toml"
        config.write_text(render(tables, [], tmp_path / "ledger.db")
                          + '\n[users.pd]\nPUSR006 = "erin@example.com"\n')
        cmd = [sys.executable, "-m", "syncd", "migrate", "apply", "-c", str(config),
               "--from", "pd", "--to", "to", "--escalation-policy", POLICY_ID, "--yes",
               "--json"]
        env = {**os.environ, "SYNCD_LOG_FORMAT": "json"}
        target.faults.latency = 0.4  # slow target: the kill lands between calls
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 60
        route = "/schedules" if vendor == "pagerduty" else "/v2/schedules"
        while target.call_count(method="POST", route=route) < 1:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        target.faults.latency = 0.0
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        applied = json.loads(done.stdout)["applied"]
        # "updated": the kill landed after a create was recorded, before its overrides.
        assert {a["action"] for a in applied} <= {"created", "resumed", "updated", "unchanged"}
        cfg = config_mod.load(config)
        ledger = Ledger.open(cfg.ledger_url)
        mappings = ledger.call(store.mappings, "pd", "to")
        ledger.dispose()
        assert all(m.target_id for m in mappings)
        schedules = sum(m.kind == SCHEDULE for m in mappings)
        created = target.call_count(method="POST", route=route, status=201)
        if vendor == "pagerduty":
            created = target.call_count(method="POST", route=route)
        assert created == schedules  # one create per schedule across both runs
        assert sum(m.kind == POLICY for m in mappings) == 1
        policy_route = ("/escalation_policies" if vendor == "pagerduty"
                        else "/v2/escalation_paths")
        assert target.call_count(method="POST", route=policy_route) == 1
        verify = subprocess.run([*cmd[:4], "verify", *cmd[5:11], "--json"],
                                capture_output=True, text=True, env=env, timeout=120)
        assert verify.returncode == 0, verify.stdout[-2000:] + verify.stderr
    finally:
        for r in running.values():
            r.stop()


CROSS = {"pd": "pagerduty", "ii": "incidentio"}
# incident.io's seeded account has no Frank: the operator maps him to Erin explicitly.
FRANK_IS_ERIN = {"pd": {"PUSR006": "erin@example.com"}}


async def test_pagerduty_to_incidentio_hard_cases_migrate_exactly(tmp_path: Path) -> None:
    world = World(tmp_path, CROSS, [])
    world.config = replace(world.config, users=FRANK_IS_ERIN)
    target = world.sims["ii"]
    pair = pair_of(world, "pd", "ii")
    try:
        plan = await service.plan(pair, SELECTION, now=utcnow(), horizon=HORIZON)
        items = {i.source_id: i for i in plan.items}
        ny = items[NY]
        assert (ny.verb, ny.conversion) == (Verb.CREATE, Conversion.EXACT), ny.as_dict()
        assert ny.verified_by == "target preview" and ny.differences == []
        assert items[POLICY_ID].verb == Verb.CREATE, items[POLICY_ID].as_dict()
        applied = await service.apply(pair, plan, now=utcnow())
        assert {a.action for a in applied} == {"created"}
        ids = {a.source_id: a.target_id for a in applied}
        (created,) = await pair.writer.read_schedules([ids[NY]])  # type: ignore[union-attr]
        assert created.time_zone == "America/New_York"  # the source's zone, not UTC
        checked = await service.verify(pair, now=utcnow(), days=120)  # spans 2027-03-14 DST
        assert checked and all(not v.differences for v in checked), [
            v.as_dict() for v in checked if v.differences]
        again = await service.plan(pair, SELECTION, now=utcnow(), horizon=HORIZON)
        assert again.summary()["unchanged"] == len(again.items)
        quiet = target.writes()
        await service.apply(pair, again, now=utcnow())
        assert target.writes() == quiet  # a second apply writes nothing

        # A new member in a source layer: update in place, same incident.io schedule id.
        (sched,) = await pair.reader.read_schedules([NY])
        rot = sched.rotations[0]
        await pair.source_client.update_schedule(NY, replace(sched, rotations=(  # type: ignore[attr-defined]
            replace(rot, users=(*rot.users, "PUSR005")), *sched.rotations[1:])), "edited")
        changed = await service.plan(pair, SELECTION, now=utcnow(), horizon=HORIZON)
        item = changed.item(SCHEDULE, NY)
        assert item is not None and item.verb == Verb.UPDATE and item.differences == []
        result = {a.source_id: a for a in await service.apply(pair, changed, now=utcnow())}
        assert (result[NY].action, result[NY].target_id) == ("updated", ids[NY])
        checked = await service.verify(pair, now=utcnow(), days=28)
        assert all(not v.differences for v in checked)
    finally:
        await closed(pair)
        await world.close()


async def test_incidentio_to_pagerduty_converts_or_refuses_each_schedule(tmp_path: Path) -> None:
    world = World(tmp_path, CROSS, [])
    pair = pair_of(world, "ii", "pd")
    try:
        plan = await service.plan(pair, service.Selection(), now=utcnow(), horizon=HORIZON)
        by_name = {i.name: i for i in plan.items}
        platform = by_name["Platform (New York)"]
        assert platform.refusal is not None
        assert platform.refusal.code == "concurrent_oncall_into_single_schedule"
        path = by_name["Platform escalation"]
        assert path.refusal is not None and path.refusal.code == "depends_on_refused"
        assert "Platform (New York)" in path.refusal.sentence
        sun = by_name["Follow the sun (New York)"]
        assert (sun.verb, sun.conversion, sun.differences) == (Verb.CREATE, Conversion.EXACT, [])
        await service.apply(pair, plan, now=utcnow())
        checked = await service.verify(pair, now=utcnow(), days=120)  # DST within reach
        assert checked and all(not v.differences for v in checked), [
            v.as_dict() for v in checked if v.differences]
    finally:
        await closed(pair)
        await world.close()


async def test_an_unconvertible_schedule_is_materialized_and_the_dual_run_config_loads(
        tmp_path: Path) -> None:
    """A PagerDuty 90-minute rotation has no incident.io form: it is written out as overrides,
    verified, and the dual-run config verify writes is a valid config the daemon keeps it
    extended with."""
    from syncd.migrate.schedule import Rotation, Schedule

    world = World(tmp_path, CROSS, [])
    pair = pair_of(world, "pd", "ii")
    try:
        odd = Schedule(id="new", name="Ninety minutes", time_zone="Europe/Berlin", rotations=(
            Rotation(id="l1", name="Layer 1", users=("PUSR001", "PUSR002", "PUSR003"),
                     anchor=utcnow().replace(microsecond=0) - timedelta(days=3),
                     handovers=(timedelta(minutes=90),)),))
        source_id = await pair.source_client.create_schedule(  # type: ignore[attr-defined]
            odd, "made by a person")
        plan = await service.plan(pair, service.Selection(schedules=(source_id,)),
                                  now=utcnow(), horizon=HORIZON)
        (item,) = plan.items
        assert (item.verb, item.conversion) == (Verb.CREATE, Conversion.MATERIALIZED), \
            item.as_dict()
        assert item.differences == [] and item.verified_by == "target preview"
        (applied,) = await service.apply(pair, plan, now=utcnow())
        assert applied.overrides_created > 400
        checked = await service.verify(pair, now=utcnow(), days=27)
        assert checked[0].differences == []
        again = await service.plan(pair, service.Selection(schedules=(source_id,)),
                                   now=utcnow(), horizon=HORIZON)
        assert again.items[0].verb == Verb.UNCHANGED  # the shell is unchanged
        snippet = service.dual_run_config(pair, checked)
        text = world.config_path.read_text() + "\n" + snippet
        dual = config_mod.loads(text, world.config_path)
        (mapping,) = dual.oncall
        assert mapping.leader == "pd" and mapping.repair == "override"
        assert [m.schedule for m in mapping.members] == [source_id, applied.target_id]
        assert dual.sync[0].accounts == ["pd", "ii"]
    finally:
        await closed(pair)
        await world.close()


@pytest.mark.parametrize(("source", "vendor", "target", "target_vendor"), [
    ("sp", "spike", "pd", "pagerduty"), ("vo", "victorops", "ii", "incidentio")])
async def test_a_source_without_definitions_is_migrated_materialized(
        tmp_path: Path, source: str, vendor: str, target: str, target_vendor: str) -> None:
    """Splunk On-Call and Spike.sh document on-call, not rotations: their schedules are
    written out as overrides, and both tools then page the same people."""
    world = World(tmp_path, {source: vendor, target: target_vendor}, [])
    world.config = replace(world.config, users={source: {"frank": "erin@example.com"}})
    pair = pair_of(world, source, target)
    try:
        plan = await service.plan(pair, service.Selection(), now=utcnow(), horizon=HORIZON)
        assert plan.items
        for item in plan.items:
            assert item.kind == SCHEDULE  # policies are not readable there
            assert (item.verb, item.conversion) == (Verb.CREATE, Conversion.MATERIALIZED), \
                item.as_dict()
            assert item.losses == () and item.differences == [], item.as_dict()
            assert any("definition_not_readable" in n for n in item.notes)
        applied = await service.apply(pair, plan, now=utcnow())
        assert all(a.action == "created" and a.overrides_created for a in applied)
        checked = await service.verify(pair, now=utcnow(), days=27)
        assert checked and all(not v.differences for v in checked), [
            v.as_dict() for v in checked if v.differences]
    finally:
        await closed(pair)
        await world.close()


@pytest.mark.parametrize(("target", "target_vendor"), [("ii", "incidentio"), ("pd", "pagerduty")])
async def test_a_splunk_oncall_step_paging_several_people_is_refused_not_narrowed(
        tmp_path: Path, target: str, target_vendor: str) -> None:
    """A Splunk On-Call step pages every shift on duty (vendor-notes/migration.md §4). Its
    rendering was narrowed to the person whose id sorts first and materialized with no loss,
    so the target would page one of two people; it is refused, nothing is written for it, and
    the rest still migrates and verifies."""
    from syncd.simulators.oncall import Layer

    world = World(tmp_path, {"vo": "victorops", target: target_vendor}, [])
    world.config = replace(world.config, users={"vo": {"frank": "erin@example.com"}})
    crowded = "pol-pl4tf0rm0000prim"
    world.sims["vo"].add_shift(  # type: ignore[attr-defined]
        "rtg-pl4tf0rm0prim01", "follow the sun", Layer(("carol", "alice"), timedelta(days=1)))
    pair = pair_of(world, "vo", target)
    try:
        plan = await service.plan(pair, service.Selection(), now=utcnow(), horizon=HORIZON)
        by_id = {i.source_id: i for i in plan.items}
        refused = by_id[crowded]
        assert refused.verb == Verb.REFUSED, refused.as_dict()
        assert refused.refusal is not None
        assert refused.refusal.code == "concurrent_oncall_into_single_schedule"
        others = [i for i in plan.items if i.source_id != crowded]
        assert others and all(i.conversion == Conversion.MATERIALIZED for i in others)
        applied = await service.apply(pair, plan, now=utcnow())
        assert crowded not in {a.source_id for a in applied if a.action == "created"}
        checked = await service.verify(pair, now=utcnow(), days=27)
        assert checked and crowded not in {v.source_id for v in checked}
        assert all(not v.differences for v in checked), [v.as_dict() for v in checked]
    finally:
        await closed(pair)
        await world.close()


async def test_a_splunk_oncall_source_is_read_past_its_thirty_day_answers(
        tmp_path: Path) -> None:
    """Splunk On-Call answers at most 30 days of team schedule per read (daysForward "30
    max"): a 60-day plan read one answer and called the other 30 days "the source pages
    nobody", and the materialized schedule paged its placeholder person there."""
    world = World(tmp_path, {"vo": "victorops", "ii": "incidentio"}, [])
    world.config = replace(world.config, users={"vo": {"frank": "erin@example.com"}})
    pair = pair_of(world, "vo", "ii")
    try:
        plan = await service.plan(pair, service.Selection(), now=utcnow(),
                                  horizon=timedelta(days=60))
        assert plan.items
        for item in plan.items:
            assert item.conversion == Conversion.MATERIALIZED, item.as_dict()
            assert item.losses == () and item.differences == [], item.as_dict()
        # Past what can be read, plan and verify say so instead of calling it "nobody".
        with pytest.raises(service.MigrateError, match="--days 119 or less"):
            await service.plan(pair, service.Selection(), now=utcnow(),
                               horizon=timedelta(days=150))
        with pytest.raises(service.MigrateError, match="--days 119 or less"):
            await service.verify(pair, now=utcnow(), days=150)
    finally:
        await closed(pair)
        await world.close()


async def test_team_selection(world: World) -> None:
    from syncd.simulators.pagerduty import TEAM_SRE

    pair = pair_of(world, "pd", "pd2")
    try:
        team = await service.plan(pair, service.Selection(teams=(TEAM_SRE,)), now=utcnow(),
                                  horizon=HORIZON)
        everything = await service.plan(pair, service.Selection(), now=utcnow(),
                                        horizon=HORIZON)
        assert 0 < len(team.items) <= len(everything.items)
        none = await service.plan(pair, service.Selection(teams=("PNOTEAM",)), now=utcnow(),
                                  horizon=HORIZON)
        assert none.items == []
    finally:
        await closed(pair)
        await world.close()


@pytest.mark.slow
def test_the_text_output_of_plan_apply_and_verify(tmp_path: Path) -> None:
    """What an operator reads: the plan table, the applied lines, the dual-run config printed
    literally (rich would take [[oncall]] for markup), a re-plan with nothing to do."""
    running, tables = threaded_sims({"pd": "pagerduty", "ii": "incidentio"}, 1.0)
    try:
        config = tmp_path / "syncd.toml"
        config.write_text(render(tables, [], tmp_path / "ledger.db")
                          + '\n[users.pd]\nPUSR006 = "erin@example.com"\n')
        env = {**os.environ, "COLUMNS": "200"}

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "syncd", "migrate", *args, "-c",
                                   str(config), "--from", "pd", "--to", "ii"],
                                  capture_output=True, text=True, env=env, timeout=120)

        # Before any apply there is no ledger: plan and verify only read it, never create it.
        verify = run("verify")
        assert verify.returncode == 1 and "nothing migrated yet" in verify.stdout, verify.stderr
        plan = run("plan", "--escalation-policy", POLICY_ID)
        assert plan.returncode == 0, plan.stderr
        assert not (tmp_path / "ledger.db").exists()
        assert "syncd migrate plan pd -> ii" in plan.stdout
        assert "Platform business hours" in plan.stdout and "target preview" in plan.stdout
        assert "plan: " in plan.stdout and " create" in plan.stdout
        applied = run("apply", "--escalation-policy", POLICY_ID, "--yes")
        assert applied.returncode == 0, applied.stderr
        assert applied.stdout.count("created") >= 2
        verify = run("verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "[[oncall]]" in verify.stdout and "[[sync]]" in verify.stdout
        again = run("plan", "--escalation-policy", POLICY_ID)
        assert again.returncode == 0 and " unchanged" in again.stdout, again.stdout
    finally:
        for r in running.values():
            r.stop()


async def test_overlapping_pagerduty_overrides_stay_last_wins_in_incidentio_across_reruns(
        tmp_path: Path) -> None:
    """PagerDuty: the last created override wins where two overlap. incident.io overrides never
    overlap on a layer (a new one carves its neighbours), so they must be written flattened;
    written as they are, an update re-run recreated the earlier override over the later one and
    incident.io paged the wrong person for the overlap."""
    from syncd.migrate.schedule import Override, Rotation, Schedule

    world = World(tmp_path, CROSS, [])
    pair = pair_of(world, "pd", "ii")
    try:
        source = pair.source_client
        sid = await source.create_schedule(Schedule(  # type: ignore[attr-defined]
            id="new", name="Overlapping overrides", time_zone="Europe/Berlin", rotations=(
                Rotation(id="l1", name="Layer 1", users=("PUSR001", "PUSR002", "PUSR003"),
                         anchor=utcnow().replace(microsecond=0) - timedelta(days=3),
                         handovers=(timedelta(days=1),)),)), "made by a person")
        t0 = utcnow().replace(minute=0, second=0, microsecond=0) + timedelta(days=2)
        await source.sync_overrides(sid, [  # type: ignore[attr-defined]
            Override(t0, t0 + timedelta(hours=8), "PUSR004"),
            Override(t0 + timedelta(hours=2), t0 + timedelta(hours=4), "PUSR005")])
        selection = service.Selection(schedules=(sid,))
        plan = await service.plan(pair, selection, now=utcnow(), horizon=HORIZON)
        assert plan.items[0].verb == Verb.CREATE and plan.items[0].differences == []
        await apply_then_verify(pair, plan)

        # An edit in the source: the re-run updates in place and re-syncs the overrides.
        (sched,) = await pair.reader.read_schedules([sid])
        rot = sched.rotations[0]
        await source.update_schedule(sid, replace(  # type: ignore[attr-defined]
            sched, rotations=(replace(rot, users=(*rot.users, "PUSR002")),)), "edited")
        changed = await service.plan(pair, selection, now=utcnow(), horizon=HORIZON)
        assert changed.items[0].verb == Verb.UPDATE
        await apply_then_verify(pair, changed)
    finally:
        await closed(pair)
        await world.close()


@pytest.mark.parametrize(("level", "after"), [
    ({"type": "schedule", "schedule_mode": "all_users"}, []),
    ({"type": "schedule", "schedule_mode": "next_on_call"}, []),
    ({"type": "schedule", "schedule_mode": "currently_on_call"},
     [{"id": "again", "type": "repeat", "repeat": {"repeat_times": 2, "to_node": "second"}}]),
    # From the start, but with a level after it: that level runs once, num_loops repeats it.
    ({"type": "schedule", "schedule_mode": "currently_on_call"},
     [{"id": "again", "type": "repeat", "repeat": {"repeat_times": 2, "to_node": "first"}},
      {"id": "third", "type": "level", "level": {"targets": [
          {"type": "schedule", "id": "SUN", "urgency": "high"}], "time_to_ack_seconds": 60}}]),
])
async def test_an_incidentio_path_a_pagerduty_policy_cannot_copy_is_refused(
        tmp_path: Path, level: dict[str, str], after: list[dict[str, object]]) -> None:
    """incident.io can page every user of a schedule or the next person on call, and repeat
    from a later level (openapi.json EscalationPathTargetV2.schedule_mode,
    EscalationPathNodeRepeatV2.to_node); a PagerDuty rule pages whoever is on call and
    num_loops repeats the whole policy. Read as plain levels, the migrated policy paged other
    people than the source: it is refused with the reason instead."""
    from syncd.simulators.incidentio import ulid

    world = World(tmp_path, CROSS, [])
    pair = pair_of(world, "ii", "pd")
    try:
        sim = world.sims["ii"]
        alice = next(iter(sim.users))  # type: ignore[attr-defined]
        sun = ulid("C", 4)  # "Follow the sun (New York)": one rotation, converts exactly
        made = await pair.source_client.http.json(  # type: ignore[attr-defined]
            "POST", "/v2/escalation_paths", json={"name": "Scoped", "path": [
                {"id": "first", "type": "level", "level": {"targets": [
                    {"type": "user", "id": alice, "urgency": "high"}],
                    "time_to_ack_seconds": 300}},
                {"id": "second", "type": "level", "level": {"targets": [
                    {**level, "id": sun, "urgency": "high"}], "time_to_ack_seconds": 300}},
                *json.loads(json.dumps(after).replace('"SUN"', json.dumps(sun)))]})
        pid = made["escalation_path"]["id"]
        plan = await service.plan(pair, service.Selection(policies=(pid,)), now=utcnow(),
                                  horizon=HORIZON)
        item = plan.item(POLICY, pid)
        assert item is not None and item.verb == Verb.REFUSED, item and item.as_dict()
        assert item.refusal is not None
        assert item.refusal.code == "unsupported_escalation_feature"
        assert (level.get("schedule_mode") if not after else "repeats from" if len(after) == 1
                else "repeats before its last step") in item.refusal.sentence
        schedule = plan.item(SCHEDULE, sun)
        assert schedule is not None and schedule.verb == Verb.CREATE  # named once, on the path
        seeded = await service.plan(pair, service.Selection(), now=utcnow(), horizon=HORIZON)
        platform = next(i for i in seeded.items if i.name == "Platform escalation")
        assert platform.refusal is not None  # repeats from its start: not this refusal
        assert platform.refusal.code == "depends_on_refused"
    finally:
        await closed(pair)
        await world.close()


async def test_what_a_pagerduty_rule_cannot_carry_is_a_named_loss(tmp_path: Path) -> None:
    """An incident.io level's low-urgency target, ack mode "all" and retries (openapi.json
    EscalationPathNodeLevelV2, EscalationPathTargetV2.urgency) have no field in a PagerDuty
    escalation rule: the policy still migrates, with each of them named, never dropped."""
    from syncd.simulators.incidentio import ulid
    from syncd.vendors.base import VendorError

    world = World(tmp_path, CROSS, [])
    pair = pair_of(world, "ii", "pd")
    try:
        alice = next(iter(world.sims["ii"].users))  # type: ignore[attr-defined]
        sun = ulid("C", 4)
        http = pair.source_client.http  # type: ignore[attr-defined]
        node = {"targets": [{"type": "user", "id": alice, "urgency": "low"}],
                "time_to_ack_seconds": 300, "ack_mode": "all",
                "retry_config": {"attempts": 3, "interval_seconds": 120}}
        made = await http.json("POST", "/v2/escalation_paths", json={"name": "Quiet", "path": [
            {"id": "first", "type": "level", "level": node},
            {"id": "second", "type": "level", "level": {"targets": [
                {"type": "schedule", "id": sun, "urgency": "high"}],
                "time_to_ack_seconds": 300, "ack_mode": "first"}}]})
        pid = made["escalation_path"]["id"]
        for bad in ({"attempts": 11, "interval_seconds": 120},
                    {"attempts": 3, "interval_seconds": 90}):  # the spec's bounds
            with pytest.raises(VendorError, match="422"):
                await http.json("POST", "/v2/escalation_paths", json={"name": "Bad", "path": [
                    {"id": "first", "type": "level", "level": {**node, "retry_config": bad}}]})
        plan = await service.plan(pair, service.Selection(policies=(pid,)), now=utcnow(),
                                  horizon=HORIZON)
        item = plan.item(POLICY, pid)
        assert item is not None and item.verb == Verb.CREATE, item and item.as_dict()
        assert item.conversion == Conversion.LOSSY
        (lost,) = item.losses
        assert lost.startswith("level 1:")
        for named in ("low urgency", "ack_mode 'all'", "3 times, every 0:02:00"):
            assert named in lost
        assert [s["conversion"] for s in item.steps] == ["lossy", "exact"]
    finally:
        await closed(pair)
        await world.close()


async def test_a_schedule_whose_overrides_failed_is_verified_and_finished_by_the_rerun(
        tmp_path: Path) -> None:
    """Apply created the schedule, then the target refused its overrides: the schedule is live
    in the target without them. Verify must check it (not skip it as never migrated), and the
    re-run must finish it in place."""
    from syncd.migrate.schedule import Override, Rotation, Schedule
    from syncd.vendors.base import VendorError

    world = World(tmp_path, CROSS, [])
    target = world.sims["ii"]
    pair = pair_of(world, "pd", "ii")
    try:
        source = pair.source_client
        sid = await source.create_schedule(Schedule(  # type: ignore[attr-defined]
            id="new", name="With an override", time_zone="America/New_York", rotations=(
                Rotation(id="l1", name="Layer 1", users=("PUSR001", "PUSR002"),
                         anchor=utcnow().replace(microsecond=0) - timedelta(days=3),
                         handovers=(timedelta(days=1),)),)), "made by a person")
        t0 = utcnow().replace(minute=0, second=0, microsecond=0) + timedelta(days=2)
        await source.sync_overrides(  # type: ignore[attr-defined]
            sid, [Override(t0, t0 + timedelta(hours=6), "PUSR004")])
        selection = service.Selection(schedules=(sid,))
        plan = await service.plan(pair, selection, now=utcnow(), horizon=HORIZON)
        target.faults.error_rate, target.faults.error_status = 1.0, 422
        target.faults.routes = ["/v2/schedule_overrides"]
        with pytest.raises(VendorError):
            await service.apply(pair, plan, now=utcnow())
        target.faults.error_rate = 0.0
        count = len(target.schedules)  # type: ignore[attr-defined]

        (half,) = await service.verify(pair, now=utcnow(), days=28)
        assert half.source_id == sid and half.differences  # the missing override shows

        again = await service.plan(pair, selection, now=utcnow(), horizon=HORIZON)
        assert again.items[0].verb == Verb.UPDATE, again.items[0].as_dict()
        (applied,) = await service.apply(pair, again, now=utcnow())
        assert (applied.action, applied.target_id) == ("updated", half.target_id)
        assert applied.overrides_created == 1
        assert len(target.schedules) == count  # type: ignore[attr-defined]
        assert (await service.verify(pair, now=utcnow(), days=28))[0].differences == []
    finally:
        await closed(pair)
        await world.close()


async def test_an_incidentio_rotation_with_a_scheduled_change_migrates_to_pagerduty(
        tmp_path: Path) -> None:
    """A rotation version from a future ``effective_from`` (a member joins next week) is the
    same rotation changing on a date, which PagerDuty expresses as a layer that ends and one
    that starts (migration.md §5 R11: L). It was refused as two rotations on call at once."""
    world = World(tmp_path, CROSS, [])
    pair = pair_of(world, "ii", "pd")
    try:
        alice, bob, carol = list(world.sims["ii"].users)[:3]  # type: ignore[attr-defined]
        now = utcnow().replace(microsecond=0)
        change = (now + timedelta(days=9)).replace(hour=14, minute=0, second=0)

        def version(users: list[str], since: datetime | None) -> dict[str, object]:
            return {"id": "01HSIMROTVERSIONED00000001", "name": "Primary",
                    "users": [{"id": u} for u in users],
                    "handover_start_at": "2026-01-05T14:00:00Z",
                    "handovers": [{"interval": 1, "interval_type": "daily"}],
                    "layers": [{"id": "01HSIMLAYERVERSIONED000001", "name": "Layer 1"}],
                    "scheduling_mode": "sequential",
                    **({"effective_from": since.isoformat()} if since else {})}

        made = await pair.source_client.http.json(  # type: ignore[attr-defined]
            "POST", "/v2/schedules", json={"schedule": {
                "name": "Changing", "timezone": "America/New_York", "config": {"rotations": [
                    version([alice, bob], None), version([alice, bob, carol], change)]}}})
        sid = made["schedule"]["id"]
        plan = await service.plan(pair, service.Selection(schedules=(sid,)), now=utcnow(),
                                  horizon=HORIZON)
        (item,) = plan.items
        assert (item.verb, item.conversion) == (Verb.CREATE, Conversion.EXACT), item.as_dict()
        assert item.differences == [] and item.verified_by == "target preview"
        await apply_then_verify(pair, plan)
    finally:
        await closed(pair)
        await world.close()


@pytest.mark.parametrize("target", ["pd2", "ii"])
async def test_verify_reports_a_delay_repeat_or_round_robin_changed_in_the_target(
        tmp_path: Path, target: str) -> None:
    """Who a level pages can agree while the target waits longer before escalating, loops
    fewer times or pages one target in turn: verify compares delays, repeats and round robin
    too (vendor-notes/migration.md §5 R16, R17, R19), into PagerDuty and into incident.io, and
    a changed one is a mismatch that fails verify like a differing interval."""
    world = World(tmp_path, {"pd": "pagerduty", target: "pagerduty" if target == "pd2"
                             else "incidentio"}, [])
    world.config = replace(world.config, users=FRANK_IS_ERIN)
    pair = pair_of(world, "pd", target)
    try:
        plan = await service.plan(pair, SELECTION, now=utcnow(), horizon=HORIZON)
        applied = {a.source_id: a.target_id for a in await service.apply(pair, plan,
                                                                           now=utcnow())}
        clean = await service.verify(pair, now=utcnow(), days=7)
        assert all(v.disagreements == 0 for v in clean), [v.as_dict() for v in clean]
        tid = applied[POLICY_ID]
        assert tid is not None
        (policy,) = await pair.writer.read_policies([tid])  # type: ignore[union-attr]
        first, second, third = policy.levels
        assert not third.round_robin
        await pair.target_client.update_policy(tid, replace(  # type: ignore[attr-defined]
            policy, repeats=policy.repeats + 1, levels=(
                first, replace(second, delay=second.delay + timedelta(minutes=5)),
                replace(third, round_robin=True))), service.marker("pd", POLICY, POLICY_ID))
        checked = await service.verify(pair, now=utcnow(), days=7)
        found = {v.level: v for v in checked if v.kind == POLICY}
        assert found[1].as_dict()["mismatches"] == [
            f"repeats: source {policy.repeats}, target {policy.repeats + 1}"]
        assert found[2].mismatches == [f"delay: source {second.delay}, target "
                                       f"{second.delay + timedelta(minutes=5)}"]
        assert found[3].mismatches == ["round robin: source off (every target), target on"]
        assert all(not v.differences for v in checked)  # the same people, at other times
    finally:
        await closed(pair)
        await world.close()


async def test_an_incidentio_rotation_with_several_layers_is_refused_alone(
        tmp_path: Path) -> None:
    """A rotation with two layers has two people on call at once in an undocumented
    assignment (openapi.json ScheduleRotationV2.layers). It used to stop the read of the whole
    account; now that one schedule is refused by name and the other schedule migrates."""
    from syncd.simulators.incidentio import ulid

    world = World(tmp_path, CROSS, [])
    pair = pair_of(world, "ii", "pd")
    try:
        people = [{"id": u} for u in list(world.sims["ii"].users)[:3]]  # type: ignore[attr-defined]
        made = await pair.source_client.http.json(  # type: ignore[attr-defined]
            "POST", "/v2/schedules", json={"schedule": {
                "name": "Two at once", "timezone": "Europe/London", "config": {"rotations": [{
                    "name": "Pair", "users": people, "handover_start_at":
                    "2026-11-02T09:00:00Z", "handovers": [{"interval_type": "weekly",
                                                           "interval": 1}],
                    "layers": [{"name": "Primary"}, {"name": "Secondary"}]}]}}})
        crowded, sun = made["schedule"]["id"], ulid("C", 4)
        paging = await pair.source_client.http.json(  # type: ignore[attr-defined]
            "POST", "/v2/escalation_paths", json={"name": "Pages the pair", "path": [
                {"id": "a", "type": "level", "level": {
                    "targets": [{"type": "schedule", "id": crowded, "urgency": "high",
                                 "schedule_mode": "currently_on_call"}],
                    "time_to_ack_seconds": 300}}]})
        crowded_path, primary = paging["escalation_path"]["id"], ulid("P", 1)
        # The simulator renders the two layers (its dealing is ours, not the vendor's): the
        # refusals below are the migration's own, not an answer it could not get.
        assert len(paging["escalation_path"]["current_responders"]) == 2
        plan = await service.plan(pair, service.Selection(schedules=(crowded, sun)),
                                  now=utcnow(), horizon=HORIZON)
        refused, fine = plan.item(SCHEDULE, crowded), plan.item(SCHEDULE, sun)
        assert refused is not None and refused.refusal is not None, plan.as_dict()
        assert refused.refusal.code == "concurrent_layers_unsupported"
        assert "'Pair' has 2 layers" in refused.refusal.sentence
        assert fine is not None and (fine.verb, fine.conversion) == (Verb.CREATE,
                                                                     Conversion.EXACT)
        everything = await service.plan(pair, service.Selection(), now=utcnow(),
                                        horizon=HORIZON)  # the whole account reads too
        assert everything.item(SCHEDULE, crowded) is not None
        # A path paging the refused schedule is refused as its dependent; the account's other
        # paths and schedules migrate.
        dependent = everything.item(POLICY, crowded_path)
        assert dependent is not None and dependent.refusal is not None, everything.as_dict()
        assert dependent.refusal.code == "depends_on_refused"
        assert dependent.depends_on == (f"{SCHEDULE}:{crowded}",)
        other = everything.item(POLICY, primary)
        assert other is not None and other.refusal is None, everything.as_dict()
        assert other.verb == Verb.CREATE
        applied = {a.source_id: a.action for a in await service.apply(pair, plan,
                                                                        now=utcnow())}
        assert applied == {crowded: "refused", sun: "created"}
        rest = {a.source_id: a.action for a in await service.apply(pair, await service.plan(
            pair, service.Selection(), now=utcnow(), horizon=HORIZON), now=utcnow())}
        assert (rest[crowded_path], rest[primary]) == ("refused", "created"), rest
    finally:
        await closed(pair)
        await world.close()


async def test_a_round_robin_level_migrates_as_round_robin_both_ways(tmp_path: Path) -> None:
    """A PagerDuty rule assigned round robin (EscalationRule.escalation_rule_assignment_strategy,
    read with include[]=escalation_rule_assignment_strategies) pages one target per incident;
    read as "everyone" it was migrated to page them all. It becomes incident.io's
    round_robin_config and back, "exact" by inference (a note per level says so); a round robin
    over one target is PagerDuty's ring of one, every incident to it: copied as paging it.
    incident.io's rotation within a level after a time has no PagerDuty field and is a named
    loss."""
    world = World(tmp_path, CROSS, [])
    world.config = replace(world.config, users=FRANK_IS_ERIN)
    forth, back = pair_of(world, "pd", "ii"), pair_of(world, "ii", "pd")
    try:
        made = await forth.source_client.http.json(  # type: ignore[attr-defined]
            "POST", "/escalation_policies", headers={"From": "syncd-bot@example.com"},
            json={"escalation_policy": {"type": "escalation_policy", "name": "Robin",
                                        "escalation_rules": [{
                "escalation_delay_in_minutes": 10,
                "targets": [{"id": "PUSR001", "type": "user_reference"},
                            {"id": "PUSR002", "type": "user_reference"}],
                "escalation_rule_assignment_strategy": {"type": "round_robin"}}, {
                "escalation_delay_in_minutes": 5,
                "targets": [{"id": "PUSR003", "type": "user_reference"}],
                "escalation_rule_assignment_strategy": {"type": "round_robin"}}]}})
        pid = made["escalation_policy"]["id"]
        assert "escalation_rule_assignment_strategy" not in made[  # only when included
            "escalation_policy"]["escalation_rules"][0]
        plan = await service.plan(forth, service.Selection(policies=(pid,)), now=utcnow(),
                                  horizon=HORIZON)
        item = plan.item(POLICY, pid)
        assert item is not None and (item.verb, item.conversion) == (
            Verb.CREATE, Conversion.EXACT), item and item.as_dict()
        assert [n[:40] for n in item.notes] == [
            "level 1: round robin: equivalence inferr",
            "level 2: PagerDuty round robin over one "], item.notes
        (applied,) = await service.apply(forth, plan, now=utcnow())
        path = (await forth.target_client.http.json(  # type: ignore[attr-defined]
            "GET", "/v2/escalation_paths/{id}", path={"id": applied.target_id}))
        levels = [n["level"] for n in path["escalation_path"]["path"] if n["type"] == "level"]
        assert [lvl.get("round_robin_config") for lvl in levels] == [{"enabled": True}, None]
        checked = await service.verify(forth, now=utcnow(), days=7)
        assert all(v.disagreements == 0 for v in checked), [v.as_dict() for v in checked]

        # incident.io -> PagerDuty: round robin stays; rotating after 2 minutes is a loss.
        alice, bob = list(world.sims["ii"].users)[:2]  # type: ignore[attr-defined]
        for rotate, klass in ((None, Conversion.EXACT), (120, Conversion.LOSSY)):
            robin = {"enabled": True} | ({"rotate_after_seconds": rotate} if rotate else {})
            source = await back.source_client.http.json(  # type: ignore[attr-defined]
                "POST", "/v2/escalation_paths", json={"name": f"Robin {rotate}", "path": [
                    {"id": "a", "type": "level", "level": {
                        "targets": [{"type": "user", "id": alice, "urgency": "high"},
                                    {"type": "user", "id": bob, "urgency": "high"}],
                        "time_to_ack_seconds": 300, "round_robin_config": robin}}]})
            sid = source["escalation_path"]["id"]
            plan = await service.plan(back, service.Selection(policies=(sid,)), now=utcnow(),
                                      horizon=HORIZON)
            item = plan.item(POLICY, sid)
            assert item is not None and item.conversion == klass, item and item.as_dict()
            if rotate:
                assert "round robin moves on to the next target after 0:02:00" in \
                    item.losses[0]
            (done,) = await service.apply(back, plan, now=utcnow())
            (copied,) = await back.writer.read_policies([done.target_id])  # type: ignore[union-attr]
            assert copied.levels[0].round_robin
            rule = (await back.target_client.http.json(  # type: ignore[attr-defined]
                "GET", "/escalation_policies/{id}", path={"id": done.target_id}, params={
                    "include[]": ["escalation_rule_assignment_strategies"]}))[
                "escalation_policy"]["escalation_rules"][0]
            assert rule["escalation_rule_assignment_strategy"] == "round_robin"
    finally:
        await closed(forth)
        await closed(back)
        await world.close()


async def test_a_fair_incidentio_rotation_is_refused_not_materialized_in_turn_order(
        tmp_path: Path) -> None:
    """scheduling_mode "fair" balances alternating handovers by duration, in an order
    incident.io does not document (openapi.json ScheduleRotationV2.scheduling_mode). Read as
    sequential, it was materialized into PagerDuty in the wrong people's order; now it is
    refused by name. The same rotation "sequential" materializes, and "fair" with one turn
    length is sequential ("only applies when you have asymmetric handovers") and converts."""
    from syncd.simulators.incidentio import ulid

    world = World(tmp_path, CROSS, [])
    pair = pair_of(world, "ii", "pd")
    try:
        people = [{"id": u} for u in list(world.sims["ii"].users)[:3]]  # type: ignore[attr-defined]
        made = {}
        for mode, lengths in (("fair", (2, 5)), ("sequential", (2, 5)), ("fair", (7,))):
            answer = await pair.source_client.http.json(  # type: ignore[attr-defined]
                "POST", "/v2/schedules", json={"schedule": {
                    "name": f"{mode} {lengths}", "timezone": "Europe/London", "config": {
                        "rotations": [{
                            "name": "Turns", "users": people,
                            "handover_start_at": "2026-11-02T09:00:00Z",
                            "handovers": [{"interval_type": "daily", "interval": n}
                                          for n in lengths],
                            "layers": [{"name": "Layer 1"}], "scheduling_mode": mode}]}}})
            made[mode, lengths] = answer["schedule"]["id"]
        plan = await service.plan(pair, service.Selection(schedules=tuple(made.values())),
                                  now=utcnow(), horizon=HORIZON)
        fair = plan.item(SCHEDULE, made["fair", (2, 5)])
        assert fair is not None and fair.refusal is not None, plan.as_dict()
        assert fair.refusal.code == "fair_scheduling_unsupported"
        sequential = plan.item(SCHEDULE, made["sequential", (2, 5)])
        assert sequential is not None and sequential.conversion == Conversion.MATERIALIZED
        weekly = plan.item(SCHEDULE, made["fair", (7,)])
        assert weekly is not None and (weekly.verb, weekly.conversion) == (
            Verb.CREATE, Conversion.EXACT), weekly.as_dict()
        # A path paging the fair schedule: the simulator lists it without current_responders
        # (it cannot say who the fair order pages), so the whole account's policy read goes
        # through; the path is refused as the schedule's dependent, the others migrate.
        paging = await pair.source_client.http.json(  # type: ignore[attr-defined]
            "POST", "/v2/escalation_paths", json={"name": "Pages the fair turns", "path": [
                {"id": "a", "type": "level", "level": {
                    "targets": [{"type": "schedule", "id": made["fair", (2, 5)],
                                 "urgency": "high", "schedule_mode": "currently_on_call"}],
                    "time_to_ack_seconds": 300}}]})
        assert "current_responders" not in paging["escalation_path"]
        everything = await service.plan(pair, service.Selection(), now=utcnow(),
                                        horizon=HORIZON)
        dependent = everything.item(POLICY, paging["escalation_path"]["id"])
        assert dependent is not None and dependent.refusal is not None, everything.as_dict()
        assert dependent.refusal.code == "depends_on_refused"
        other = everything.item(POLICY, ulid("P", 1))
        assert other is not None and other.refusal is None, everything.as_dict()
    finally:
        await closed(pair)
        await world.close()
