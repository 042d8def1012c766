"""Sync-core audit scenarios: echoes of our own pushes, lossy severity mappings, concurrent
opposite changes and refused resolves never loop, drift or drop a page."""

from __future__ import annotations

from pathlib import Path

import pytest
from world import World


def pair(tmp_path: Path, a: str, b: str, **kw: object) -> World:
    return World(tmp_path, {"a": a, "b": b},
                 [{"name": "g", "accounts": ["a", "b"], "mode": "correlate"}], **kw)


def sev(w: World, account: str, dedup: str) -> str | None:
    inc = w.incident(account, dedup)
    extra = w.account_extra.get(account, {})
    if extra.get("severity_field") == "urgency":
        # The client's default map, under the account's overrides (config merges them).
        mapping: dict[str, str] = {"high": "sev2", "low": "sev4",
                                   **extra.get("severity_map", {})}
        return mapping[inc["urgency"]]
    return inc["severity"]


URGENCY = {"b": {"severity_field": "urgency"}}
# Overrides cannot unmap an urgency (they are merged over the defaults): they move them.
URGENCY_MAPPED = {"b": {"severity_field": "urgency",
                        "severity_map": {"high": "sev1", "low": "sev3"}}}


@pytest.mark.parametrize(("va", "vb", "start", "human", "lands", "extra"), [
    ("pagerduty", "spike", "sev1", "sev5", "sev3", {}),  # Spike severity stops at sev3
    ("pagerduty", "spike", "sev1", "sev4", "sev3", {}),
    ("pagerduty", "incidentio", "sev1", "sev5", "sev3", {}),  # three org severities
    ("spike", "pagerduty", "sev3", "sev1", "sev2", URGENCY),  # high = sev2
    ("incidentio", "pagerduty", "sev3", "sev1", "sev2", URGENCY),
    ("incidentio", "pagerduty", "sev3", "sev2", "sev1", URGENCY_MAPPED),  # a tie: high
    ("spike", "pagerduty", "sev1", "sev3", "sev3", URGENCY_MAPPED),
])
async def test_lossy_severity_push_does_not_drift_the_human_value(
        tmp_path: Path, va: str, vb: str, start: str, human: str, lands: str,
        extra: dict[str, dict[str, object]]) -> None:
    """A severity b's scale cannot hold lands on b's closest value; reading that back is our
    own echo, not a person's change: a's value must stay what the person chose."""
    w = pair(tmp_path, va, vb, account_extra=extra)
    try:
        w.alert("db", severity=start)
        await w.settle()
        w.act("a", "db", "severity", severity=human)
        await w.settle()
        assert sev(w, "b", "db") == lands
        before = w.writes()
        await w.cycle(4)
        assert sev(w, "a", "db") == human, "the person's choice drifted"
        assert w.writes() == before, "converged links must cause no further writes"
    finally:
        await w.close()


VENDORS = ["pagerduty", "victorops", "incidentio", "spike"]
ALL_PAIRS = [(a, b) for i, a in enumerate(VENDORS) for b in VENDORS[i + 1:]]


def outbox(w: World) -> dict[str, int]:
    return w.ledger.call(lambda tx: tx.outbox_depth())


async def assert_quiet(w: World) -> None:
    """Nothing pending or parked, and more cycles write nothing."""
    before = w.writes()
    await w.cycle(3)
    assert w.writes() == before, "converged links must cause no further writes"
    depth = outbox(w)
    assert not depth.get("pending") and not depth.get("parked"), depth


async def assert_resolved_and_quiet(w: World) -> None:
    """Both sides resolved, and the link quiet (see :func:`assert_quiet`)."""
    assert w.incident("a", "db")["state"] == "resolved"
    assert w.incident("b", "db")["state"] == "resolved"
    await assert_quiet(w)


@pytest.mark.parametrize(("va", "vb"), ALL_PAIRS + [(b, a) for a, b in ALL_PAIRS])
async def test_ack_in_one_and_resolve_in_the_other_in_one_cycle(
        tmp_path: Path, va: str, vb: str) -> None:
    w = pair(tmp_path, va, vb)
    try:
        w.alert("db")
        await w.settle()
        w.act("a", "db", "acknowledge")
        w.act("b", "db", "resolve")
        await w.settle()
        await assert_resolved_and_quiet(w)
    finally:
        await w.close()


@pytest.mark.parametrize(("va", "vb"), ALL_PAIRS + [(b, a) for a, b in ALL_PAIRS])
async def test_resolve_in_both_in_one_cycle_parks_nothing(
        tmp_path: Path, va: str, vb: str) -> None:
    """Each side's resolve reaches the other already resolved by a person there: an
    "already", never a parked row or a retry loop."""
    w = pair(tmp_path, va, vb)
    try:
        w.alert("db")
        await w.settle()
        w.act("a", "db", "acknowledge")
        await w.settle()
        w.act("a", "db", "resolve")
        w.act("b", "db", "resolve")
        await w.settle()
        await assert_resolved_and_quiet(w)
    finally:
        await w.close()


@pytest.mark.parametrize("action", ["acknowledge", "resolve"])
@pytest.mark.parametrize(("va", "vb"), ALL_PAIRS + [(b, a) for a, b in ALL_PAIRS])
async def test_push_to_an_incident_a_person_resolved_meanwhile(
        tmp_path: Path, va: str, vb: str, action: str) -> None:
    """a's ack or resolve is owed to b when a person resolves b: the push meets a resolved
    incident, which is done (resolved is at least what was asked), never parked or retried
    forever, and a learns of b's resolve."""
    w = pair(tmp_path, va, vb)
    try:
        w.alert("db")
        await w.settle()
        w.act("a", "db", action)
        await w.engine.poll("a")
        w.act("b", "db", "resolve")
        pushed = await w.engine.dispatch("b")
        assert pushed.pushed == 1 and not pushed.parked, pushed
        await w.settle()
        await assert_resolved_and_quiet(w)
    finally:
        await w.close()


# (forward action in a, the person's step back in b, b's vendor, a's vendor that can follow)
BACK = [("acknowledge", "unacknowledge", "spike", "spike"),
        ("resolve", "reopen", "pagerduty", "pagerduty")]


@pytest.mark.parametrize("regressions", ["ignore", "follow"])
@pytest.mark.parametrize("va", ["spike", "pagerduty", "incidentio", "victorops"])
@pytest.mark.parametrize(("forward", "back", "vb", "can_follow"), BACK)
async def test_step_back_right_after_syncd_moved_forward(
        tmp_path: Path, va: str, regressions: str, forward: str, back: str, vb: str,
        can_follow: str) -> None:
    """A person un-acks (Spike) or reopens (PagerDuty) b right after syncd's ack or resolve
    landed there: ``follow`` takes the step back to a where a's vendor can make it,
    ``ignore`` keeps a where it is; nothing loops either way."""
    w = World(tmp_path, {"a": va, "b": vb}, [{"name": "g", "accounts": ["a", "b"],
                                              "mode": "correlate", "regressions": regressions}])
    moved = {"acknowledge": "acknowledged", "resolve": "resolved"}[forward]
    try:
        w.alert("db")
        await w.settle()
        w.act("a", "db", forward)
        await w.settle()
        assert w.incident("b", "db")["state"] == moved
        w.act("b", "db", back)
        await w.settle()
        assert w.incident("b", "db")["state"] == "triggered"
        follows = regressions == "follow" and va == can_follow
        assert w.incident("a", "db")["state"] == ("triggered" if follows else moved)
        await assert_quiet(w)
    finally:
        await w.close()


SEVERITY_VENDORS = ["pagerduty", "incidentio", "spike"]
HUMAN = {"pagerduty": ["sev4", "sev2", "sev5"], "incidentio": ["sev3", "sev1", "sev2"],
         "spike": ["sev3", "sev1", "sev2"]}


@pytest.mark.parametrize(("va", "vb"), [(a, b) for a in SEVERITY_VENDORS
                                        for b in SEVERITY_VENDORS if a != b])
async def test_severity_changes_in_turn_never_ping_pong(tmp_path: Path, va: str, vb: str
                                                       ) -> None:
    """People change the severity in a, then in b, then in a again: each value reaches the
    other side (or its closest value there), the person's own value stays, and nothing is
    written once it has."""
    w = World(tmp_path, {"a": va, "b": vb, "c": "spike" if "spike" not in (va, vb) else
                         "incidentio"},
              [{"name": "g", "accounts": ["a", "b", "c"], "mode": "correlate"}])
    try:
        w.alert("db", severity="sev2")
        await w.settle()
        steps = [("a", HUMAN[va][0]), ("b", HUMAN[vb][1]), ("a", HUMAN[va][2])]
        for who, value in steps:
            w.act(who, "db", "severity", severity=value)
            await w.settle()
            assert sev(w, who, "db") == value, f"{who}'s {value} drifted"
            await assert_quiet(w)
            assert sev(w, who, "db") == value, f"{who}'s {value} drifted"
    finally:
        await w.close()


async def test_mirror_copies_of_a_severity_the_targets_cannot_hold_do_not_drift(
        tmp_path: Path) -> None:
    """A P5 mirrored into Spike and incident.io is created (and later pushed) as their closest
    severity; their copies joining the link and the polls after must leave the P5 alone."""
    w = World(tmp_path, {"src": "pagerduty", "sp": "spike", "ii": "incidentio"},
              [{"name": "m", "accounts": ["src", "sp", "ii"], "mode": "mirror",
                "source": "src"}])
    try:
        await w.settle()
        w.alert("early", accounts=["src"])
        w.act("src", "early", "severity", severity="sev5")  # before the copies exist
        w.alert("late", accounts=["src"])
        await w.settle()
        w.act("src", "late", "severity", severity="sev5")  # pushed to the copies
        await w.settle()
        for account in ("sp", "ii"):
            assert sorted(i["severity"] for i in w.sims[account].canonical_incidents()) == [
                "sev3", "sev3"], account
        await assert_quiet(w)
        assert (sev(w, "src", "early"), sev(w, "src", "late")) == ("sev5", "sev5")
    finally:
        await w.close()


@pytest.mark.parametrize("policy", ["latest", "highest"])
@pytest.mark.parametrize(("va", "vb"), [(a, b) for a in SEVERITY_VENDORS
                                        for b in SEVERITY_VENDORS if a != b])
async def test_opposite_severity_changes_in_one_cycle_converge(
        tmp_path: Path, va: str, vb: str, policy: str) -> None:
    """People set different severities on both sides before syncd polls: one value wins on
    both (or the closest one where a side cannot hold it) and nothing flaps afterwards."""
    w = World(tmp_path, {"a": va, "b": vb}, [{"name": "g", "accounts": ["a", "b"],
                                              "mode": "correlate", "severity_policy": policy}])
    try:
        w.alert("db", severity="sev2")
        await w.settle()
        w.act("a", "db", "severity", severity=HUMAN[va][0])
        w.act("b", "db", "severity", severity="sev1")
        await w.settle()
        first = (sev(w, "a", "db"), sev(w, "b", "db"))
        await assert_quiet(w)
        assert (sev(w, "a", "db"), sev(w, "b", "db")) == first
        if policy == "highest":
            assert first == ("sev1", "sev1")
    finally:
        await w.close()


@pytest.mark.parametrize(("va", "vb"), [("pagerduty", "spike"), ("spike", "victorops"),
                                        ("victorops", "incidentio"), ("spike", "pagerduty")])
async def test_an_alert_firing_again_right_after_a_resolve_is_not_resolved_in_the_other(
        tmp_path: Path, va: str, vb: str) -> None:
    """The first occurrence reached only a and was resolved; seconds later the alert fires
    again and reaches both. b's first incident for that key is the new occurrence, a live page:
    polled before a's, it must not join the resolved link and be resolved by syncd."""
    w = pair(tmp_path, va, vb)
    try:
        w.alert("db", accounts=["a"])
        await w.settle()
        w.act("a", "db", "resolve")
        await w.settle()
        for sim in w.sims.values():
            sim.clock.advance(10)  # past OPEN_OCCURRENCE_SLACK: a re-fire, not a late copy
        w.alert("db")  # fires again, now in both
        await w.engine.poll("b")
        await w.settle()
        assert [i["state"] for i in w.incidents("b", "db")] == ["triggered"]
        assert w.incidents("a", "db")[-1]["state"] == "triggered"
        w.act("a", "db", "acknowledge")  # and the new occurrence is one link across both
        await w.settle()
        assert w.incident("b", "db")["state"] == "acknowledged"
    finally:
        await w.close()


# (b's vendor, syncd's push to b, the person's move in b right after it): every vendor's
# ack push, and a severity push to those that take one (incident.io's edit is confirmed with an
# escalations read that can see the person's resolve, timestamped after the incident's own).
AFTER_PUSH = [(vb, "acknowledge", "resolve") for vb in VENDORS] + [
    (vb, "severity", move) for vb in SEVERITY_VENDORS for move in ("acknowledge", "resolve")]


@pytest.mark.parametrize(("vb", "push", "move"), AFTER_PUSH)
async def test_a_person_moving_forward_right_after_a_push_reaches_the_other_side(
        tmp_path: Path, vb: str, push: str, move: str) -> None:
    """A person acks or resolves b just after syncd's push there was answered (before the
    client's confirming reads): a move forward is news whatever its timestamp says against
    the confirmation's, and a's page is acked or resolved, not dropped for good (a full resync
    reads open incidents only, so it would never come back)."""
    va = "spike" if vb != "spike" else "pagerduty"
    w = pair(tmp_path, va, vb)
    try:
        w.alert("db")
        await w.settle()
        w.sims["b"].after_next_write(lambda: w.act("b", "db", move))
        if push == "severity":
            w.act("a", "db", "severity", severity="sev2")
        else:
            w.act("a", "db", "acknowledge")
        await w.settle()
        await w.engine.cycle(full=True)
        assert not w.sims["b"].after_write_errors
        moved = {"acknowledge": "acknowledged", "resolve": "resolved"}[move]
        assert w.incident("b", "db")["state"] == moved
        assert w.incident("a", "db")["state"] == moved, "the person's move in b was dropped"
        await assert_quiet(w)
    finally:
        await w.close()
