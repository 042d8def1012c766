"""Drift and repair planning are pure: entries in, windows and overrides out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from syncd.config import OnCallMapping
from syncd.engine.oncall import (
    DIFFERENT,
    NOBODY,
    compute_drift,
    directory,
    identify,
    plan_repairs,
    state_at,
)
from syncd.ledger.oncall import PushedOverride
from syncd.model import OnCall

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)
MAPPING = OnCallMapping.model_validate({
    "name": "platform", "leader": "pd", "repair": "override",
    "members": [{"account": "pd", "schedule": "P1"}, {"account": "vo", "schedule": "pol-x"}],
})
PD, VO = "pd:P1:1", "vo:pol-x:1"


def shifts(schedule: str, *people: tuple[str, int, int], domain: str = "example.com"
           ) -> list[OnCall]:
    """(user, from hour, to hour) relative to T0."""
    return [OnCall(schedule, 1, user, f"{user}@{domain}", T0 + a * H, T0 + b * H)
            for user, a, b in people]


def rotation(schedule: str) -> list[OnCall]:
    return shifts(schedule, ("alice", 0, 8), ("bob", 8, 16), ("carol", 16, 24))


def test_agreeing_schedules_have_no_drift() -> None:
    d = compute_drift(MAPPING, {PD: rotation("P1"), VO: rotation("pol-x")}, {}, T0, T0 + 24 * H)
    assert d.windows == [] and d.unmatched == [] and d.agree is True
    assert d.now == {PD: ("alice@example.com",), VO: ("alice@example.com",)}


def test_different_shift_cuts_with_the_same_people_are_not_drift() -> None:
    pd = shifts("P1", ("alice", 0, 4), ("alice", 4, 8), ("bob", 8, 24))
    vo = shifts("pol-x", ("alice", 0, 8), ("bob", 8, 12), ("bob", 12, 24))
    assert compute_drift(MAPPING, {PD: pd, VO: vo}, {}, T0, T0 + 24 * H).windows == []


def test_one_sided_override_gives_exactly_its_window() -> None:
    vo = shifts("pol-x", ("alice", 0, 3), ("carol", 3, 5), ("alice", 5, 8), ("bob", 8, 16),
                ("carol", 16, 24))
    d = compute_drift(MAPPING, {PD: rotation("P1"), VO: vo}, {}, T0, T0 + 24 * H)
    assert len(d.windows) == 1
    w = d.windows[0]
    assert (w.start, w.end, w.reason) == (T0 + 3 * H, T0 + 5 * H, DIFFERENT)
    assert w.who == {PD: ("alice@example.com",), VO: ("carol@example.com",)}
    assert not d.drift_now and d.agree is False


def test_override_across_a_handover_splits_by_who_the_leader_has() -> None:
    vo = shifts("pol-x", ("alice", 0, 6), ("dave", 6, 10), ("bob", 10, 16), ("carol", 16, 24))
    d = compute_drift(MAPPING, {PD: rotation("P1"), VO: vo}, {}, T0, T0 + 24 * H)
    assert [(w.start, w.end, w.who[PD]) for w in d.windows] == [
        (T0 + 6 * H, T0 + 8 * H, ("alice@example.com",)),
        (T0 + 8 * H, T0 + 10 * H, ("bob@example.com",)),
    ]


def test_nobody_on_call_is_drift() -> None:
    vo = shifts("pol-x", ("alice", 0, 8), ("carol", 16, 24))
    d = compute_drift(MAPPING, {PD: rotation("P1"), VO: vo}, {}, T0, T0 + 24 * H)
    assert [(w.start, w.end, w.reason) for w in d.windows] == [(T0 + 8 * H, T0 + 16 * H, NOBODY)]
    assert d.windows[0].who[VO] == ()


def test_both_paging_nobody_is_drift_too() -> None:
    d = compute_drift(MAPPING, {PD: [], VO: []}, {}, T0, T0 + H)
    assert [(w.reason, w.start, w.end) for w in d.windows] == [(NOBODY, T0, T0 + H)]
    assert d.drift_now


def test_window_is_clipped_to_the_range_and_open_ended_entries_count() -> None:
    pd = [OnCall("P1", 1, "alice", "alice@example.com", None, None)]
    vo = shifts("pol-x", ("alice", -5, 2), ("bob", 2, 30))
    d = compute_drift(MAPPING, {PD: pd, VO: vo}, {}, T0, T0 + 4 * H)
    assert [(w.start, w.end) for w in d.windows] == [(T0 + 2 * H, T0 + 4 * H)]


def test_unmatched_users_are_reported_not_guessed() -> None:
    pd = rotation("P1")
    vo = [*shifts("pol-x", ("alice", 0, 8), ("bob", 8, 16)),
          OnCall("pol-x", 1, "frank", "frank@example.com", T0 + 16 * H, T0 + 24 * H)]
    d = compute_drift(MAPPING, {PD: pd, VO: vo}, {}, T0, T0 + 24 * H)
    assert {(u.account, u.user_id, u.missing_in) for u in d.unmatched} == {
        ("vo", "frank", ("pd",)), ("pd", "carol", ("vo",))}
    # Drift is still reported for the window; the two are never assumed to be one person.
    assert [(w.start, w.end) for w in d.windows] == [(T0 + 16 * H, T0 + 24 * H)]


def test_a_user_without_email_cannot_match() -> None:
    vo = [OnCall("pol-x", 1, "u123", None, T0, T0 + 24 * H)]
    pd = shifts("P1", ("alice", 0, 24))
    d = compute_drift(MAPPING, {PD: pd, VO: vo}, {}, T0, T0 + 24 * H)
    assert d.windows[0].who[VO] == ("?vo:u123",)
    assert ("vo", "u123") in {(u.account, u.user_id) for u in d.unmatched}


def test_explicit_user_overrides_come_before_email() -> None:
    users = {"vo": {"al": "alice@example.com", "bob@corp.example": "bob@example.com"}}
    assert identify(users, "vo", "al", "alice.old@corp.example") == "alice@example.com"
    assert identify(users, "vo", "bob", "bob@corp.example") == "bob@example.com"
    assert identify(users, "pd", "al", "Alice@Example.com") == "alice@example.com"
    vo = [OnCall("pol-x", 1, "al", "alice.old@corp.example", T0, T0 + 8 * H),
          OnCall("pol-x", 1, "bob", "bob@corp.example", T0 + 8 * H, T0 + 16 * H)]
    pd = shifts("P1", ("alice", 0, 8), ("bob", 8, 16))
    d = compute_drift(MAPPING, {PD: pd, VO: vo}, users, T0, T0 + 16 * H)
    assert d.windows == [] and d.unmatched == []


def test_explicit_email_entries_match_whatever_case_the_vendor_writes() -> None:
    """Emails are case-insensitive everywhere else in matching; an entry (stored lower-cased by
    the config, whatever case it was written in) must still name the user the vendor reports
    as "BOB@CORP.EXAMPLE" (or the entry is silently ignored and bob is compared, and
    overridden, by his old address); the override goes to the vendor's own spelling."""
    users = {"vo": {"bob@corp.example": "bob@example.com"}}
    assert identify(users, "vo", "bob", "bob@corp.example") == "bob@example.com"
    assert identify(users, "vo", "bob", "BOB@CORP.EXAMPLE ") == "bob@example.com"
    vo = shifts("pol-x", ("alice", 0, 8), ("bob", 8, 16), domain="corp.example")
    vo[0] = OnCall("pol-x", 1, "alice", "alice@example.com", T0, T0 + 8 * H)
    pd = shifts("P1", ("alice", 0, 8), ("bob", 8, 16))
    d = compute_drift(MAPPING, {PD: pd, VO: vo}, users, T0, T0 + 16 * H)
    assert d.windows == [] and d.unmatched == []
    assert directory(users, "vo", [("bob", "Bob@Corp.example")])["bob@example.com"] \
        == "Bob@Corp.example"


def test_missing_member_makes_agreement_unknown() -> None:
    d = compute_drift(MAPPING, {PD: rotation("P1")}, {}, T0, T0 + 24 * H)
    assert d.missing == [VO] and d.windows == [] and d.agree is None


def test_state_at_a_past_moment() -> None:
    same = state_at(MAPPING, {PD: ("a@x",), VO: ("a@x",)}, T0)
    assert same.agree is True
    diff = state_at(MAPPING, {PD: ("a@x",), VO: ("b@x",)}, T0)
    assert diff.drift_now and diff.windows[0].reason == DIFFERENT


def _drift_with_override() -> tuple:
    vo = shifts("pol-x", ("alice", 0, 3), ("carol", 3, 5), ("alice", 5, 8), ("bob", 8, 16),
                ("carol", 16, 24), domain="corp.example")
    users = {"vo": {"alice": "alice@example.com", "bob": "bob@example.com",
                    "carol": "carol@example.com"}}
    d = compute_drift(MAPPING, {PD: rotation("P1"), VO: vo}, users, T0, T0 + 24 * H)
    dirs = {"pd": directory(users, "pd", [(e.user_id, e.user_email) for e in rotation("P1")]),
            "vo": directory(users, "vo", [(e.user_id, e.user_email) for e in vo])}
    return d, dirs


def test_repair_plans_one_override_per_window_in_the_followers_own_terms() -> None:
    d, dirs = _drift_with_override()
    [r] = plan_repairs(MAPPING, d, dirs, [])
    assert (r.account, r.schedule_id, r.level, r.status) == ("vo", "pol-x", 1, "planned")
    # The follower knows alice by its own email; the override is asked for in those terms.
    assert (r.person, r.user_email) == ("alice@example.com", "alice@corp.example")
    assert (r.start, r.end, r.replaces) == (T0 + 3 * H, T0 + 5 * H, ("carol@example.com",))


def test_repair_is_never_planned_twice() -> None:
    d, dirs = _drift_with_override()
    pushed = PushedOverride("k", "platform", "vo", "pol-x", 1, "alice@corp.example",
                            T0 + 2 * H, T0 + 5 * H, "done", "ov1", T0)
    [r] = plan_repairs(MAPPING, d, dirs, [pushed])
    assert r.status == "already"
    deferred = PushedOverride("k", "platform", "vo", "pol-x", 1, "alice@corp.example",
                              T0 + 3 * H, T0 + 5 * H, "deferred", None, T0)
    assert plan_repairs(MAPPING, d, dirs, [deferred])[0].status == "planned"


def test_a_later_own_override_for_someone_else_uncovers_the_window() -> None:
    """alice was pushed, then (the leader having changed) bob over the same window: the
    follower pages bob, so alice's push no longer makes a repair back to alice ``already``.
    A later push that created nothing, or another mapping's push, does not count."""
    d, dirs = _drift_with_override()

    def push(email: str, outcome: str, mapping: str = "platform") -> PushedOverride:
        return PushedOverride("k", mapping, "vo", "pol-x", 1, email, T0 + 2 * H, T0 + 5 * H,
                              outcome, None, T0)

    alice = push("alice@corp.example", "done")
    for later, status in ((push("bob@corp.example", "done"), "planned"),
                          (push("bob@corp.example", "unknown"), "planned"),
                          (push("bob@corp.example", "refused"), "already"),
                          (push("bob@corp.example", "done", "other"), "already")):
        assert plan_repairs(MAPPING, d, dirs, [alice, later])[0].status == status, later
        # alice pushed again after bob: covered again, never a third time
        again = [alice, later, alice]
        assert plan_repairs(MAPPING, d, dirs, again)[0].status == "already"


def test_repair_skips_what_it_cannot_do_right() -> None:
    pd = [*shifts("P1", ("alice", 0, 8)),
          OnCall("P1", 1, "zed", "zed@example.com", T0 + 8 * H, T0 + 16 * H)]
    vo = shifts("pol-x", ("alice", 0, 8), ("bob", 8, 16), ("carol", 16, 24))
    d = compute_drift(MAPPING, {PD: pd, VO: vo}, {}, T0, T0 + 24 * H)
    plans = plan_repairs(MAPPING, d, {"vo": directory({}, "vo", [
        (e.user_id, e.user_email) for e in vo])}, [])
    assert [(p.start, p.status, p.reason.split(":")[0]) for p in plans] == [
        (T0 + 8 * H, "skipped", "unmatched"),
        (T0 + 16 * H, "skipped", "the leader pages nobody"),
    ]
    no_repair = MAPPING.model_copy(update={"repair": "none"})
    assert plan_repairs(no_repair, d, {}, []) == []


def test_a_comparison_cut_short_by_a_stale_poll_is_repaired_to_its_end() -> None:
    """A member whose last poll reaches only 4 h past now cuts the comparison there; that end
    does not move with the polls (the poll is old), so the window is repaired up to it, not
    rounded down to the UTC-day grid that keeps a moving horizon end from adding an override
    per poll (which would end the override before it starts, and repair nothing)."""
    pd = shifts("P1", ("alice", 0, 8))
    vo = shifts("pol-x", ("carol", 0, 8))
    d = compute_drift(MAPPING, {PD: pd, VO: vo}, {}, T0, T0 + 4 * H)
    dirs = {"pd": directory({}, "pd", [(e.user_id, e.user_email) for e in pd]),
            "vo": directory({}, "vo", [(e.user_id, e.user_email) for e in vo + pd])}
    [r] = plan_repairs(MAPPING, d, dirs, [])
    assert (r.status, r.start, r.end) == ("planned", T0, T0 + 4 * H)
