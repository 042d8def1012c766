"""The migration plan: people matching, verbs, refusals with root causes, policy steps."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from test_migrate_schedule import NOW, hard_case

from syncd.migrate.convert import INCIDENTIO, PAGERDUTY, Conversion, TargetModel
from syncd.migrate.plan import POLICY, SCHEDULE, Known, People, Verb, build, fingerprint
from syncd.migrate.policy import Level, Policy, Target, convert_policy

HORIZON = timedelta(days=28)
SOURCE_DIR = {"alice": "Alice@Example.com ", "bob": "bob@example.com",
              "carol": "carol@example.com", "dave": "dave@example.com",
              "erin": "erin@example.com"}
TARGET_DIR = {"U1": "alice@example.com", "U2": "BOB@example.com", "U3": "carol@example.com",
              "U4": "dave@example.com", "U5": "erin@example.com"}


def policy(*schedules: str, delay: timedelta = timedelta(minutes=30), **kw: object) -> Policy:
    levels = [Level((Target("schedule", s),), delay) for s in schedules]
    levels.append(Level((Target("user", "erin"),), timedelta(minutes=15)))
    return Policy(id=str(kw.get("id", "PEP1")), name="Primary EP", repeats=2,
                  levels=tuple(levels))


def people(target_dir: dict[str, str | None] = TARGET_DIR) -> People:  # type: ignore[assignment]
    return People.match({}, "pd", SOURCE_DIR, "ii", target_dir)


def test_people_match_by_email_ignoring_case_and_spaces_and_config_exceptions() -> None:
    p = people()
    assert p.mapping == {"alice": "U1", "bob": "U2", "carol": "U3", "dave": "U4", "erin": "U5"}
    exceptions = {"ii": {"U9": "erin@example.com"}}
    p2 = People.match(exceptions, "pd", {"erin": "erin@example.com"}, "ii",
                      {"U9": "e.smith@corp.example"})
    assert p2.mapping == {"erin": "U9"}


def test_plan_creates_then_is_unchanged_then_updates_in_place() -> None:
    kw = dict(source="pd", target="ii", model=INCIDENTIO, schedules=[hard_case()],
              policies=[policy("PSCHED1")], people=people(), now=NOW, horizon=HORIZON)
    first = build(known={}, **kw)
    sched = first.item(SCHEDULE, "PSCHED1")
    assert sched is not None and sched.verb == Verb.CREATE
    assert sched.conversion == Conversion.EXACT and sched.differences == []
    assert sched.verified_by == "syncd model"
    pol = first.item(POLICY, "PEP1")
    assert pol is not None and pol.verb == Verb.CREATE and pol.depends_on == ("schedule:PSCHED1",)
    known = {(i.kind, i.source_id): Known(f"T-{i.source_id}", i.fingerprint or "")
             for i in first.items}
    again = build(known=known, **kw)
    assert again.summary() == {"create": 0, "update": 0, "unchanged": 2, "refused": 0}
    edited = hard_case()
    rot = edited.rotations[0]
    edited = replace(edited, rotations=(replace(rot, users=(*rot.users, "erin")),
                                        edited.rotations[1]))
    changed = build(known=known, **{**kw, "schedules": [edited]})
    item = changed.item(SCHEDULE, "PSCHED1")
    assert item is not None and item.verb == Verb.UPDATE and item.target_id == "T-PSCHED1"


def test_a_missing_person_is_listed_and_the_dependent_policy_names_the_root_cause() -> None:
    target_dir = {k: v for k, v in TARGET_DIR.items() if k != "U4"}  # dave is not in the target
    plan = build(source="pd", target="ii", model=INCIDENTIO, schedules=[hard_case()],
                 policies=[policy("PSCHED1")], people=people(target_dir), known={}, now=NOW,
                 horizon=HORIZON)
    sched = plan.item(SCHEDULE, "PSCHED1")
    assert sched is not None and sched.verb == Verb.REFUSED
    assert sched.refusal is not None and sched.refusal.code == "unmatched_people"
    assert "dave@example.com" in sched.refusal.sentence
    pol = plan.item(POLICY, "PEP1")
    assert pol is not None and pol.refusal is not None
    assert pol.refusal.code == "depends_on_refused"
    assert "Primary" in pol.refusal.sentence and "dave" not in pol.refusal.sentence
    assert [u.as_dict() for u in plan.unmatched] == [
        {"user_id": "dave", "email": "dave@example.com", "referenced_by": ["schedule:PSCHED1"]}]
    assert plan.as_dict()["summary"]["refused"] == 2


def test_a_policy_over_an_unselected_unmigrated_schedule_is_refused() -> None:
    plan = build(source="pd", target="ii", model=INCIDENTIO, schedules=[],
                 policies=[policy("POTHER")], people=people(), known={}, now=NOW,
                 horizon=HORIZON)
    (item,) = plan.items
    assert item.refusal is not None and item.refusal.code == "depends_on_refused"
    assert "POTHER" in item.refusal.sentence


def test_policy_delays_round_up_to_minutes_for_pagerduty_as_a_named_loss() -> None:
    pol = policy("PSCHED1", delay=timedelta(seconds=90))
    plan = build(source="ii", target="pd", model=PAGERDUTY, schedules=[], policies=[pol],
                 people=people(), known={("schedule", "PSCHED1"): Known("P1", "x")}, now=NOW,
                 horizon=HORIZON)
    (item,) = plan.items
    assert item.conversion == Conversion.LOSSY
    assert item.steps[0] == {"level": 1, "conversion": "lossy",
                             "loss": "delay 0:01:30 rounded up to 0:02:00 (PagerDuty counts "
                                     "whole minutes)"}
    assert item.steps[1]["conversion"] == "exact"


@pytest.mark.parametrize("model", [PAGERDUTY, INCIDENTIO])
def test_conditional_levels_are_refused_for_every_target(model: TargetModel) -> None:
    """incident.io -> incident.io too: the client writes no if/else branch, so a plan that
    said create failed halfway through apply, after the schedules were written."""
    pol = Policy(id="EP", name="hours", levels=(
        Level((Target("user", "erin"),), timedelta(minutes=5), conditional=True),))
    plan = build(source="ii", target="to", model=model, schedules=[], policies=[pol],
                 people=people(), known={}, now=NOW, horizon=HORIZON)
    (item,) = plan.items
    assert item.refusal is not None and item.refusal.code == "conditional_branch_unsupported"


@pytest.mark.parametrize(("model", "low"), [(INCIDENTIO, True), (PAGERDUTY, False)])
def test_policy_targets_get_target_ids_and_keep_urgency_where_the_target_has_it(
        model: TargetModel, low: bool) -> None:
    """Each target is the same target under its id in the target vendor; its low urgency
    carries into incident.io and is dropped (a named loss) for PagerDuty."""
    pol = Policy(id="EP", name="urgent", levels=(Level(
        (Target("user", "erin", low_urgency=True), Target("schedule", "S1")),
        timedelta(minutes=5)),))
    done = convert_policy(pol, model, schedules={"S1": "T-S1"}, users={"erin": "U5"})
    assert done.target is not None
    assert done.target.levels[0].targets == (Target("user", "U5", low_urgency=low),
                                             Target("schedule", "T-S1"))
    assert bool(done.losses) is not low


def test_fingerprint_is_stable_and_sensitive() -> None:
    assert fingerprint(hard_case()) == fingerprint(hard_case())
    assert fingerprint(policy("A")) != fingerprint(policy("B"))


def test_fields_added_later_change_no_fingerprint_while_unused() -> None:
    """The digests of objects migrated before round robin, fair scheduling and unconvertible
    schedules were modelled: an upgrade alone plans no update (a rewrite in the target)."""
    assert fingerprint(hard_case()) == "c0c6d2c784ac5947"
    assert fingerprint(policy("A")) == "0e393eb87830b0b4"
    robin = policy("A")
    robin = replace(robin, levels=(replace(robin.levels[0], round_robin=True),
                                   *robin.levels[1:]))
    assert fingerprint(robin) != fingerprint(policy("A"))  # used: it counts


def test_an_empty_policy_is_refused() -> None:
    plan = build(source="pd", target="ii", model=INCIDENTIO, schedules=[],
                 policies=[Policy(id="EP", name="empty", levels=())], people=people(),
                 known={}, now=NOW, horizon=HORIZON)
    (item,) = plan.items
    assert item.refusal is not None and item.refusal.code == "empty_policy"


def robin_policy(*targets: Target) -> Policy:
    """Level 1 round robin over ``targets``, level 2 erin as :func:`policy` has it."""
    base = policy()
    return replace(base, levels=(Level(targets, timedelta(minutes=5), round_robin=True),
                                 *base.levels))


ERIN, BOB = Target("user", "erin"), Target("user", "bob")
INFERRED = ("level 1: round robin: equivalence inferred; trigger test incidents in both tools "
            "before cut-over")


def test_a_round_robin_level_notes_the_inference_into_either_target() -> None:
    """Round robin is "exact" by inference only (docs/migration.md, Round robin): the plan
    says so for each round-robin level into every target, in its notes (text and JSON), and
    into PagerDuty also that round robin exists only on some plans (support.pagerduty.com/
    docs/round-robin-scheduling), how an account without it treats the rule undocumented."""
    for model in (PAGERDUTY, INCIDENTIO):
        plan = build(source="x", target="y", model=model, schedules=[],
                     policies=[robin_policy(ERIN, BOB)], people=people(), known={}, now=NOW,
                     horizon=HORIZON, source_vendor="pagerduty")
        (item,) = plan.items
        assert (item.verb, item.conversion) == (Verb.CREATE, Conversion.EXACT), item.as_dict()
        assert item.notes[0] == INFERRED, item.as_dict()
        if model is PAGERDUTY:
            assert item.notes[1].startswith("level 1: round robin, which PagerDuty offers")
            assert "round-robin-scheduling" in item.notes[1]
        assert len(item.notes) == (2 if model is PAGERDUTY else 1), item.as_dict()
        assert item.as_dict()["notes"] == list(item.notes)
    plain = build(source="x", target="y", model=PAGERDUTY, schedules=[], policies=[policy()],
                  people=people(), known={}, now=NOW, horizon=HORIZON)
    assert plain.items[0].notes == ()


@pytest.mark.parametrize("model", [PAGERDUTY, INCIDENTIO])
def test_a_pagerduty_round_robin_over_one_target_is_copied_as_paging_it(
        model: TargetModel) -> None:
    """PagerDuty's ring of one target assigns it every incident, as paging everyone does
    (support.pagerduty.com/docs/round-robin-scheduling): the copy has no round robin, which
    into incident.io might take turns over a schedule's people instead. Said in the notes;
    from another source the level is kept round robin (that case is not documented)."""
    for target in (ERIN, Target("schedule", "S1")):
        plan = build(source="x", target="y", model=model, schedules=[],
                     policies=[robin_policy(target)], people=people(), known={(
                         SCHEDULE, "S1"): Known("T-S1", "f")}, now=NOW, horizon=HORIZON,
                     source_vendor="pagerduty")
        (item,) = plan.items
        assert item.conversion == Conversion.EXACT, item.as_dict()
        assert item.converted is not None and not item.converted.levels[0].round_robin
        assert item.notes == ("level 1: PagerDuty round robin over one target assigns it "
                              "every incident, as paging everyone on the rule does: copied "
                              "without round robin",), item.as_dict()
    kept = build(source="x", target="y", model=model, schedules=[],
                 policies=[robin_policy(ERIN)], people=people(), known={}, now=NOW,
                 horizon=HORIZON, source_vendor="incidentio")
    converted = kept.items[0].converted
    assert converted is not None and converted.levels[0].round_robin
    assert kept.items[0].notes[0] == INFERRED


def test_verify_names_a_round_robin_that_moves_on_at_once() -> None:
    """``rotate_after_seconds`` 0 (no minimum in the spec) is a value, not "unset": verify
    said "round robin: source on, target on" for a level that differs only there."""
    from syncd.migrate.service import _escalation_mismatches

    sticky = Policy("P", "p", (Level((Target("user", "a"), Target("user", "b")),
                                     timedelta(minutes=5), round_robin=True),))
    moving = replace(sticky, levels=(replace(sticky.levels[0], rotate_after=timedelta(0)),))
    assert _escalation_mismatches(sticky, moving, 1) == [
        "round robin: source on, target on, next target after 0:00:00"]


def test_the_plan_text_shows_each_policy_note(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """What the operator reads: the notes of a policy (round robin inferred, and into
    PagerDuty the plan limit) are in the plan table's details, not only in --json."""
    from syncd.cli import out
    from syncd.cli_migrate import _show_plan

    monkeypatch.setattr(out, "width", 400)  # one line per detail: no wrapping in the cell
    plan = build(source="ii", target="pd", model=PAGERDUTY, schedules=[],
                 policies=[robin_policy(ERIN, BOB)], people=people(), known={}, now=NOW,
                 horizon=HORIZON)
    (item,) = plan.items
    assert len(item.notes) == 2
    _show_plan(plan)
    text = capsys.readouterr().out
    for note in item.notes:
        assert note in text, text
