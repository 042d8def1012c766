"""The neutral schedule model: rendering across DST, precedence, overrides, conversion classes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

import pytest

from syncd.migrate.convert import INCIDENTIO, PAGERDUTY, Conversion, check, convert
from syncd.migrate.schedule import Override, Rotation, Schedule, Span, Window, diff, render

NY = "America/New_York"
H = timedelta(hours=1)
D = timedelta(days=1)
# US daylight saving ends on 2026-11-01: a 28-day horizon from here crosses it.
SINCE = datetime(2026, 10, 19, 4, tzinfo=UTC)
UNTIL = SINCE + 28 * D
NOW = SINCE


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def weekly(users: tuple[str | None, ...], **kw: object) -> Rotation:
    # Monday 2026-01-05 09:00 New York (14:00 UTC, winter time) anchors the phase.
    return Rotation(id=kw.pop("id", "weekly"), name=str(kw.pop("name", "weekly")), users=users,
                    anchor=at(2026, 1, 5, 14), handovers=(7 * D,), **kw)  # type: ignore[arg-type]


def business_hours_daily() -> Rotation:
    return Rotation(id="day", name="business hours", users=("carol", "dave"),
                    anchor=at(2026, 1, 5, 14), handovers=(D,),
                    windows=tuple(Window(d, time(9), 8 * H) for d in range(5)))


def hard_case() -> Schedule:
    """The PagerDuty seed's hard case: two layers, the higher restricted to weekdays 09-17 in a
    DST zone, plus an override."""
    return Schedule(
        id="PSCHED1", name="Primary", time_zone=NY,
        rotations=(weekly(("alice", "bob")), business_hours_daily()),
        overrides=(Override(at(2026, 10, 24, 12), at(2026, 10, 24, 20), "erin"),),
    )


def test_daily_handoff_stays_at_local_nine_across_dst() -> None:
    sched = Schedule(id="s", name="daily", time_zone=NY, rotations=(Rotation(
        id="r", name="daily", users=("a", "b"), anchor=at(2026, 1, 5, 14), handovers=(D,)),))
    spans = render(sched, at(2026, 10, 30, 0), at(2026, 11, 4, 0))
    starts = [s.start for s in spans[1:]]
    assert at(2026, 10, 31, 13) in starts  # 09:00 EDT
    assert at(2026, 11, 2, 14) in starts  # 09:00 EST after the change
    assert all(s.start.astimezone(sched.zone).hour == 9 for s in spans[1:])


def test_twelve_hour_turns() -> None:
    sched = Schedule(id="s", name="12h", time_zone="UTC", rotations=(Rotation(
        id="r", name="12h", users=("a", "b", "c"), anchor=at(2026, 1, 1), handovers=(12 * H,)),))
    spans = render(sched, at(2026, 1, 1), at(2026, 1, 3))
    assert [(s.start.hour, next(iter(s.users))) for s in spans] == [
        (0, "a"), (12, "b"), (0, "c"), (12, "a")]


def test_higher_layer_hides_lower_and_override_wins() -> None:
    sched = hard_case()
    spans = render(sched, at(2026, 10, 19, 0), at(2026, 10, 21, 0))
    assert [(s.start, s.end, set(s.users)) for s in spans] == [
        (at(2026, 10, 19, 0), at(2026, 10, 19, 13), {"alice"}),  # Sunday night, week 41
        (at(2026, 10, 19, 13), at(2026, 10, 19, 21), {"dave"}),  # Mon 09-17 EDT hides bob
        (at(2026, 10, 19, 21), at(2026, 10, 20, 13), {"bob"}),  # weekly hand-off at 09:00
        (at(2026, 10, 20, 13), at(2026, 10, 20, 21), {"carol"}),
        (at(2026, 10, 20, 21), at(2026, 10, 21, 0), {"bob"}),
    ]
    saturday = render(sched, at(2026, 10, 24, 13), at(2026, 10, 24, 14))
    assert saturday[0].users == {"erin"}


def test_concurrent_rotations_page_together_and_rotation_overrides_replace_one() -> None:
    sched = Schedule(id="s", name="c", time_zone="UTC", precedence=False, rotations=(
        Rotation(id="a", name="a", users=("x",), anchor=at(2026, 1, 1), handovers=(D,)),
        Rotation(id="b", name="b", users=("y",), anchor=at(2026, 1, 1), handovers=(D,)),
    ), overrides=(Override(at(2026, 1, 1, 5), at(2026, 1, 1, 6), "z", rotation_id="b"),))
    spans = render(sched, at(2026, 1, 1), at(2026, 1, 1, 8))
    assert [s.users for s in spans] == [{"x", "y"}, {"x", "z"}, {"x", "y"}]


def test_pagerduty_hard_case_converts_exactly_to_incidentio_across_dst() -> None:
    conv = convert(hard_case(), INCIDENTIO, now=NOW)
    assert conv.klass == Conversion.EXACT, conv
    assert conv.target is not None and not conv.target.precedence
    weekly_rot = next(r for r in conv.target.rotations if r.id == "weekly")
    assert weekly_rot.windows  # the weekday 09-17 hours were carved out of the lower layer
    assert all(o.rotation_id for o in conv.target.overrides)
    assert check(conv, SINCE, UNTIL) == []


def test_the_check_is_not_vacuous() -> None:
    """Taking PagerDuty layers as concurrent rotations without flattening pages two people in
    business hours: the check must say so."""
    conv = convert(hard_case(), INCIDENTIO, now=NOW)
    naive = replace(conv, target=replace(hard_case(), precedence=False))
    differences = check(naive, SINCE, UNTIL)
    assert len(differences) == 20  # every weekday's 09-17 over four weeks
    assert all(len(d.target) == 2 for d in differences)


def test_incidentio_disjoint_rotations_convert_exactly_to_pagerduty() -> None:
    source = Schedule(id="s", name="follow the sun", time_zone=NY, precedence=False, rotations=(
        business_hours_daily(),
        Rotation(id="night", name="nights", users=("nina", "omar"), anchor=at(2026, 1, 5, 22),
                 handovers=(D,), windows=tuple(Window(d, time(17), 16 * H) for d in range(5))),
    ), overrides=(Override(at(2026, 10, 20, 23), at(2026, 10, 21, 2), "zoe",
                           rotation_id="night"),))
    conv = convert(source, PAGERDUTY, now=NOW)
    assert conv.klass == Conversion.EXACT
    assert conv.target is not None and all(o.rotation_id is None for o in conv.target.overrides)
    assert check(conv, SINCE, UNTIL) == []


def test_a_rotation_override_reaching_into_another_rotation_is_a_named_loss_for_pagerduty(
) -> None:
    """incident.io pages the override's person and the other rotation's person together
    there; a PagerDuty override pages one. Classed exact, apply wrote it and dropped the
    other rotation's person without a word."""
    nights = Rotation(id="night", name="nights", users=("nina", "omar"),
                      anchor=at(2026, 1, 5, 22), handovers=(D,),
                      windows=tuple(Window(d, time(17), 16 * H) for d in range(5)))
    # 14:00-20:00 New York on Tuesday 2026-10-20: three hours of it in the nights' hours.
    source = Schedule(id="s", name="follow the sun", time_zone=NY, precedence=False,
                      rotations=(business_hours_daily(), nights),
                      overrides=(Override(at(2026, 10, 20, 18), at(2026, 10, 21), "zoe",
                                          rotation_id="day"),))
    conv = convert(source, PAGERDUTY, now=NOW)
    assert conv.klass == Conversion.LOSSY
    assert len(conv.losses) == 1 and "3:00:00 of it falls in another rotation's hours" in \
        conv.losses[0]
    (difference,) = check(conv, SINCE, UNTIL)
    assert difference.end - difference.start == 3 * H and difference.target == {"zoe"}


def test_overlapping_rotations_into_pagerduty_are_refused() -> None:
    source = Schedule(id="s", name="two at once", time_zone="UTC", precedence=False,
                      rotations=(weekly(("a", "b")), weekly(("c",), id="second", name="second")))
    conv = convert(source, PAGERDUTY, now=NOW)
    assert conv.klass == Conversion.REFUSED
    assert conv.refusal is not None
    assert conv.refusal.code == "concurrent_oncall_into_single_schedule"


def test_turn_not_whole_hours_into_incidentio_is_refused() -> None:
    source = Schedule(id="s", name="90 min", time_zone="UTC", rotations=(Rotation(
        id="r", name="odd", users=("a", "b"), anchor=at(2026, 1, 1),
        handovers=(timedelta(minutes=90),)),))
    conv = convert(source, INCIDENTIO, now=NOW)
    assert conv.refusal is not None and conv.refusal.code == "turn_not_whole_hours"
    assert convert(source, PAGERDUTY, now=NOW).klass == Conversion.EXACT


def test_alternating_handovers_into_pagerduty_are_refused() -> None:
    source = Schedule(id="s", name="2+5", time_zone="UTC", precedence=False, rotations=(Rotation(
        id="r", name="2+5", users=("a", "b"), anchor=at(2026, 1, 1),
        handovers=(2 * D, 5 * D)),))
    conv = convert(source, PAGERDUTY, now=NOW)
    assert conv.refusal is not None and conv.refusal.code == "alternating_handovers"


def test_nobody_slot_into_pagerduty_is_refused() -> None:
    source = Schedule(id="s", name="gap", time_zone="UTC", precedence=False,
                      rotations=(weekly(("a", None)),))
    conv = convert(source, PAGERDUTY, now=NOW)
    assert conv.refusal is not None and conv.refusal.code == "nobody_slot_unsupported"


def test_dated_rotation_is_refused_for_incidentio() -> None:
    top = business_hours_daily()
    source = Schedule(id="s", name="dated", time_zone=NY, rotations=(
        weekly(("a", "b")), Rotation(**{**_fields(top), "end": SINCE + 3 * D})))
    conv = convert(source, INCIDENTIO, now=NOW)
    assert conv.refusal is not None and conv.refusal.code == "rotation_dates_unsupported"


def test_dated_layer_with_precedence_is_refused_where_dates_exist_but_precedence_does_not(
        ) -> None:
    """A target with rotation dates but no precedence (a model, not a vendor we ship)."""
    dated_concurrent = replace(INCIDENTIO, dated_rotations=True)
    top = business_hours_daily()
    source = Schedule(id="s", name="dated", time_zone=NY, rotations=(
        weekly(("a", "b")), Rotation(**{**_fields(top), "end": SINCE + 3 * D})))
    conv = convert(source, dated_concurrent, now=NOW)
    assert conv.refusal is not None and conv.refusal.code == "layer_dates_with_precedence"


def test_turn_length_below_the_target_unit_is_refused() -> None:
    minutes_only = replace(PAGERDUTY, turn_unit=timedelta(minutes=1))
    source = Schedule(id="s", name="odd", time_zone="UTC", rotations=(Rotation(
        id="r", name="odd", users=("a",), anchor=at(2026, 1, 1),
        handovers=(timedelta(seconds=3605),)),))
    conv = convert(source, minutes_only, now=NOW)
    assert conv.refusal is not None and conv.refusal.code == "turn_length_unsupported"


def test_ended_layers_are_left_out_and_said() -> None:
    old = Rotation(**{**_fields(business_hours_daily()), "end": SINCE - D})
    source = Schedule(id="s", name="s", time_zone=NY, rotations=(weekly(("a", "b")), old))
    conv = convert(source, INCIDENTIO, now=NOW)
    assert conv.klass == Conversion.EXACT
    assert any("ended" in n for n in conv.notes)
    assert check(conv, SINCE, UNTIL) == []


def test_seconds_in_windows_are_a_named_loss_for_incidentio() -> None:
    source = Schedule(id="s", name="s", time_zone="UTC", rotations=(Rotation(
        id="r", name="odd hours", users=("a",), anchor=at(2026, 1, 1), handovers=(D,),
        windows=(Window(None, time(9, 0, 30), 8 * H),)),))
    conv = convert(source, INCIDENTIO, now=NOW)
    assert conv.klass == Conversion.LOSSY
    assert "odd hours" in conv.losses[0]
    assert check(conv, SINCE, UNTIL)  # and the check shows exactly where


def test_diff_lists_every_disagreement() -> None:
    a = [Span(at(2026, 1, 1), at(2026, 1, 2), frozenset({"x"}))]
    b = [Span(at(2026, 1, 1), at(2026, 1, 1, 12), frozenset({"x"})),
         Span(at(2026, 1, 1, 12), at(2026, 1, 2), frozenset({"y"}))]
    (d,) = diff(a, b)
    assert (d.start, d.end, d.source, d.target) == (at(2026, 1, 1, 12), at(2026, 1, 2),
                                                    {"x"}, {"y"})
    assert diff(a, a) == []


def test_window_validation() -> None:
    with pytest.raises(ValueError):
        Window(None, time(9), 2 * D)
    with pytest.raises(ValueError):
        Rotation(id="r", name="r", users=("a",), anchor=at(2026, 1, 1), handovers=(timedelta(0),))


def _fields(rot: Rotation) -> dict[str, object]:
    return {name: getattr(rot, name) for name in rot.__slots__}  # type: ignore[attr-defined]


def ninety_minutes(windows: tuple[Window, ...] = ()) -> Schedule:
    return Schedule(id="s", name="90 min", time_zone=NY, rotations=(Rotation(
        id="r", name="odd", users=("a", "b", "c"), anchor=at(2026, 1, 1),
        handovers=(timedelta(minutes=90),), windows=windows),))


def test_an_unconvertible_rotation_is_materialized_as_overrides_over_the_horizon() -> None:
    from syncd.migrate.convert import materialize

    conv = convert(ninety_minutes(), INCIDENTIO, now=NOW)
    assert conv.refusal is not None
    mat = materialize(conv.source, INCIDENTIO, conv.refusal, now=NOW, horizon=28 * D)
    assert mat.klass == Conversion.MATERIALIZED and mat.losses == ()
    assert mat.target is not None and len(mat.target.rotations) == 1
    assert len(mat.target.overrides) == 28 * 16  # one per 90-minute turn
    assert all(o.rotation_id == "materialized" for o in mat.target.overrides)
    assert check(mat, NOW, NOW + 28 * D) == []
    assert "materialized because turn_not_whole_hours" in mat.notes[0]


def test_materializing_names_what_overrides_cannot_page() -> None:
    from syncd.migrate.convert import materialize

    source = ninety_minutes(windows=tuple(Window(d, time(9), 8 * H) for d in range(5)))
    conv = convert(source, PAGERDUTY, now=NOW)
    assert conv.klass == Conversion.EXACT  # PagerDuty takes 90-minute turns as they are
    refused = convert(source, INCIDENTIO, now=NOW)
    assert refused.refusal is not None
    mat = materialize(refused.source, PAGERDUTY, refused.refusal, now=NOW, horizon=7 * D)
    assert mat.losses and "pages nobody" in mat.losses[0]
    differences = check(mat, NOW, NOW + 7 * D)
    assert differences and all(not d.source and d.target == {"a"} for d in differences)


def test_a_schedule_whose_layers_all_ended_is_refused() -> None:
    old = Rotation(**{**_fields(business_hours_daily()), "end": SINCE - D})
    conv = convert(Schedule(id="s", name="gone", time_zone=NY, rotations=(old,)), INCIDENTIO,
                   now=NOW)
    assert conv.refusal is not None and conv.refusal.code == "all_layers_ended"


def test_concurrent_rotations_are_not_materialized_even_when_another_refusal_comes_first(
) -> None:
    """Alternating turns are checked before concurrency, so two incident.io rotations on call
    at once, one alternating 2 and 5 days, were materialized for PagerDuty: where both were on
    call no override was written and the shell's own person (who may be neither) was paged.
    Concurrent on-call is never materialized (docs/migration.md)."""
    from syncd.migrate.convert import materialize

    source = Schedule(id="s", name="two at once", time_zone=NY, precedence=False, rotations=(
        weekly(("a", "b")),
        Rotation(id="alt", name="alternating", users=("c", "d"), anchor=at(2026, 1, 5, 14),
                 handovers=(2 * D, 5 * D)),
    ))
    conv = convert(source, PAGERDUTY, now=NOW)
    assert conv.refusal is not None and conv.refusal.code == "alternating_handovers"
    mat = materialize(conv.source, PAGERDUTY, conv.refusal, now=NOW, horizon=28 * D)
    assert mat.klass == Conversion.REFUSED and mat.refusal is not None
    assert mat.refusal.code == "concurrent_oncall_into_single_schedule"


def test_a_rendered_source_paging_two_after_the_horizon_is_not_materialized() -> None:
    """A source known only by its rendering shows more than the plan's horizon (Splunk On-Call
    and Spike.sh are read for 120 days); the materialized schedule is extended past the horizon
    by the dual run, so two people on duty from day 40 of a 28-day plan refuse it too."""
    from syncd.migrate.convert import Refusal, materialize

    source = Schedule(id="s", name="rendered", time_zone="UTC", rotations=(), rendered=(
        Span(NOW, NOW + 40 * D, frozenset({"a"})),
        Span(NOW + 40 * D, NOW + 50 * D, frozenset({"a", "b"})),
    ))
    refusal = Refusal("definition_not_readable", "known only by its rendering")
    mat = materialize(source, PAGERDUTY, refusal, now=NOW, horizon=28 * D)
    assert mat.klass == Conversion.REFUSED and mat.refusal is not None
    assert mat.refusal.code == "concurrent_oncall_into_single_schedule"
