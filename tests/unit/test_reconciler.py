"""The decision table, case by case (pure: no ledger, no vendors)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from syncd.engine.reconciler import (
    SEVERITY,
    STATE,
    AgreedValue,
    Change,
    Member,
    Policy,
    reconcile,
    state_action,
)
from syncd.model import Severity, State
from syncd.vendors.base import Action, Capability

T0 = datetime(2026, 11, 1, tzinfo=UTC)
ALL = Capability.ACK | Capability.RESOLVE | Capability.SEVERITY_WRITE | Capability.UNACK \
    | Capability.REOPEN
NO_SEV = Capability.ACK | Capability.RESOLVE


def m(account: str, rid: int, state: State = State.TRIGGERED, sev: str | None = "sev2",
      caps: Capability = ALL, pending: frozenset[str] = frozenset()) -> Member:
    return Member(account, rid, state, Severity(sev) if sev else None, caps, pending)


def agreed(state: str = "triggered", sev: str | None = "sev2", src: str = "pd",
           at: datetime = T0) -> dict[str, AgreedValue]:
    return {STATE: AgreedValue(state, src, at), SEVERITY: AgreedValue(sev, src, at)}


def test_ack_in_one_member_acks_the_others() -> None:
    members = [m("pd", 1, State.ACKNOWLEDGED), m("vo", 2), m("sp", 3)]
    d = reconcile(agreed(), members, [Change("pd", 1, STATE, "triggered", "acknowledged", T0)],
                  Policy(), T0)
    assert d.agreed[STATE].value == "acknowledged"
    assert {(a.account, a.action) for a in d.actions} == {
        ("vo", Action.ACKNOWLEDGE), ("sp", Action.ACKNOWLEDGE)}
    assert all(a.cause == "pd" for a in d.actions)


def test_unchanged_observation_plans_nothing() -> None:
    d = reconcile(agreed(), [m("pd", 1), m("vo", 2)], [], Policy(), T0)
    assert d.actions == [] and d.agreed == {}


def test_capability_gap_is_noted_not_attempted() -> None:
    members = [m("pd", 1, sev="sev1"), m("vo", 2, caps=NO_SEV)]
    d = reconcile(agreed(), members, [Change("pd", 1, SEVERITY, "sev2", "sev1", T0)], Policy(), T0)
    assert d.actions == []
    assert [n.kind for n in d.notes] == ["gap"]


def test_regression_ignored_by_default_and_not_pushed_back() -> None:
    members = [m("pd", 1, State.TRIGGERED), m("vo", 2, State.ACKNOWLEDGED)]
    d = reconcile(agreed("acknowledged"), members,
                  [Change("pd", 1, STATE, "acknowledged", "triggered", T0)], Policy(), T0)
    assert d.agreed == {} and d.actions == []
    assert d.notes[0].kind == "regression"


def test_regression_followed_unacks_where_possible() -> None:
    members = [m("sp", 1, State.TRIGGERED), m("pd", 2, State.ACKNOWLEDGED, caps=NO_SEV),
               m("sp2", 3, State.ACKNOWLEDGED)]
    d = reconcile(agreed("acknowledged"), members,
                  [Change("sp", 1, STATE, "acknowledged", "triggered", T0)],
                  Policy(regressions="follow"), T0)
    assert d.agreed[STATE].value == "triggered"
    assert [(a.account, a.action) for a in d.actions] == [("sp2", Action.UNACKNOWLEDGE)]
    assert {n.kind for n in d.notes} == {"regression", "gap"}


def test_resolve_wins_over_pending_ack_conflict() -> None:
    members = [m("pd", 1, State.ACKNOWLEDGED),
               m("vo", 2, State.RESOLVED, pending=frozenset({STATE}))]
    d = reconcile(agreed("acknowledged", src="pd"), members,
                  [Change("vo", 2, STATE, "triggered", "resolved", T0)], Policy(), T0)
    assert d.agreed[STATE].value == "resolved"
    assert [(a.account, a.action) for a in d.actions] == [("pd", Action.RESOLVE)]
    assert (2, STATE) in d.cancel


def test_severity_conflict_policies() -> None:
    later = T0 + timedelta(minutes=1)
    members = [m("pd", 1, sev="sev1"), m("vo", 2, sev="sev3", pending=frozenset({SEVERITY}))]
    change = [Change("vo", 2, SEVERITY, "sev2", "sev3", later)]
    latest = reconcile(agreed(sev="sev1"), members, change, Policy(), T0)
    assert latest.agreed[SEVERITY].value == "sev3"
    assert any(n.kind == "conflict" for n in latest.notes)
    highest = reconcile(agreed(sev="sev1"), members, change, Policy(severity_policy="highest"), T0)
    assert SEVERITY not in highest.agreed
    prefer = reconcile(agreed(sev="sev1"), members, change,
                       Policy(severity_policy="prefer:pd"), T0)
    assert SEVERITY not in prefer.agreed


def test_joining_member_is_brought_forward_only_itself() -> None:
    members = [m("pd", 1, State.ACKNOWLEDGED, sev="sev1"), m("vo", 2, State.TRIGGERED, sev="sev3")]
    d = reconcile(agreed("acknowledged", sev="sev1"), members,
                  [Change("vo", 2, STATE, None, "triggered", T0, joined=True),
                   Change("vo", 2, SEVERITY, None, "sev3", T0, joined=True)], Policy(), T0)
    assert d.agreed == {}
    assert {(a.account, a.action, a.value) for a in d.actions} == {
        ("vo", Action.ACKNOWLEDGE, "acknowledged"), ("vo", Action.SET_SEVERITY, "sev1")}


def test_first_member_sets_agreed_values() -> None:
    d = reconcile({}, [m("pd", 1)], [Change("pd", 1, STATE, None, "triggered", T0, joined=True),
                                     Change("pd", 1, SEVERITY, None, "sev2", T0, joined=True)],
                  Policy(), T0)
    assert d.agreed[STATE].value == "triggered" and d.agreed[SEVERITY].value == "sev2"
    assert d.actions == []


def test_one_way_field_ignores_changes_from_the_follower() -> None:
    members = [m("pd", 1), m("vo", 2, State.ACKNOWLEDGED)]
    d = reconcile(agreed(), members, [Change("vo", 2, STATE, "triggered", "acknowledged", T0)],
                  Policy(state_sources=frozenset({"pd"})), T0)
    assert d.agreed == {} and d.actions == []
    assert d.notes[0].kind == "ignored"


def test_state_action_table() -> None:
    assert state_action(State.TRIGGERED, State.ACKNOWLEDGED) == Action.ACKNOWLEDGE
    assert state_action(State.TRIGGERED, State.RESOLVED) == Action.RESOLVE
    assert state_action(State.ACKNOWLEDGED, State.TRIGGERED) == Action.UNACKNOWLEDGE
    assert state_action(State.RESOLVED, State.TRIGGERED) == Action.REOPEN
    assert state_action(State.RESOLVED, State.RESOLVED) is None
