"""Observations into the ledger: the same record twice in one page, staleness, echo."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import pytest

from syncd.config import SyncGroup
from syncd.engine.links import OPEN_OCCURRENCE_SLACK
from syncd.engine.observe import GroupContext, observe
from syncd.ledger import Ledger, Record, Tx, records
from syncd.model import Action, Incident, Severity, State
from syncd.vendors.base import Capability

CAPS = Capability.ACK | Capability.RESOLVE
T0 = datetime(2026, 11, 1, tzinfo=UTC)
GRACE = timedelta(seconds=60)


def setup(tmp_path: Path) -> tuple[Ledger, list[GroupContext]]:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}")
    group = SyncGroup(name="g", accounts=["a", "b"])
    return ledger, [GroupContext.build(group, {"a": CAPS, "b": CAPS})]


def inc(ext: str, state: State, at: datetime, key: str = "k1") -> Incident:
    return Incident(ext, state, "t", keys={"dedup": key}, updated_at=at)


def assert_still_resolved_and_owed(ledger: Ledger) -> Record:
    """a:1 still resolved in the ledger, and b's resolve still owed: nothing undid it."""
    rec = ledger.call(lambda tx: tx.record("a", "1"))
    assert rec is not None and rec.state == "resolved"
    owed = ledger.call(lambda tx: [(o.account, o.action) for o in tx.outbox_for_link(1)])
    assert owed == [("b", "resolve")]
    return rec

def test_same_record_twice_in_one_page(tmp_path: Path) -> None:
    ledger, groups = setup(tmp_path)
    page = [inc("1", State.TRIGGERED, T0), inc("1", State.ACKNOWLEDGED, T0 + timedelta(seconds=1))]
    result = ledger.call(lambda tx: observe(tx, "a", page, groups, T0, grace=timedelta(seconds=60)))
    assert result.changed == 2
    rec = ledger.call(lambda tx: tx.record("a", "1"))
    assert rec is not None and rec.state == "acknowledged"
    assert ledger.call(lambda tx: tx.counts())["records"] == 1


def test_counterpart_joins_and_receives_the_agreed_state(tmp_path: Path) -> None:
    ledger, groups = setup(tmp_path)
    ledger.call(lambda tx: observe(tx, "a", [inc("1", State.ACKNOWLEDGED, T0)], groups, T0,
                                   grace=timedelta(seconds=60)))
    ledger.call(lambda tx: observe(tx, "b", [inc("9", State.TRIGGERED, T0)], groups, T0,
                                   grace=timedelta(seconds=60)))
    links = ledger.call(lambda tx: [(k.id, len(tx.members(k.id))) for k in tx.links()])
    assert links == [(1, 2)]
    pending = ledger.call(lambda tx: [(o.account, o.action) for o in tx.outbox_for_link(1)])
    assert pending == [("b", "acknowledge")]


def test_alert_firing_again_after_resolve_is_a_new_link(tmp_path: Path) -> None:
    ledger, groups = setup(tmp_path)
    ledger.call(lambda tx: observe(tx, "a", [inc("1", State.RESOLVED, T0)], groups, T0,
                                   grace=timedelta(seconds=60)))
    later = T0 + timedelta(hours=2)
    ledger.call(lambda tx: observe(tx, "a", [inc("2", State.TRIGGERED, later)], groups, later,
                                   grace=timedelta(seconds=60)))
    assert ledger.call(lambda tx: tx.counts())["links"] == 2


def following(tmp_path: Path, state: State) -> tuple[Ledger, list[GroupContext]]:
    """a:1 and b:9 linked in ``state``, in a group whose regressions follow (so a step back
    taken for a change reopens the other side)."""
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}")
    group = SyncGroup(name="g", accounts=["a", "b"], regressions="follow")
    caps = CAPS | Capability.REOPEN | Capability.UNACK
    groups = [GroupContext.build(group, {"a": caps, "b": caps})]
    for account, ext in (("a", "1"), ("b", "9")):
        ledger.call(lambda tx, a=account, e=ext: observe(
            tx, a, [inc(e, state, T0)], groups, T0, grace=GRACE))
    return ledger, groups


def test_a_listing_older_than_what_was_seen_is_not_a_change(tmp_path: Path) -> None:
    """A list lagging behind the feed (or a page of a lagging replica) shows an incident as it
    was before a change already observed: by the vendor's own timestamps that is old news, not
    a person reopening it. Taken for a change, ``regressions = follow`` would reopen (re-page)
    the other side, and the next read would resolve it again."""
    ledger, groups = following(tmp_path, State.ACKNOWLEDGED)
    grace = GRACE
    later = T0 + timedelta(minutes=5)
    ledger.call(lambda tx: observe(tx, "a", [inc("1", State.RESOLVED, later)], groups, later,
                                   grace=grace))
    owed = ledger.call(lambda tx: [(o.account, o.action) for o in tx.outbox_for_link(1)])
    assert owed == [("b", "resolve")]
    lagging = inc("1", State.ACKNOWLEDGED, T0 + timedelta(minutes=1))
    result = ledger.call(lambda tx: observe(tx, "a", [lagging], groups, later, grace=grace))
    assert result.stale == 1 and result.actions == 0
    assert_still_resolved_and_owed(ledger)


def test_a_record_upgraded_without_an_own_time_is_guarded_by_its_folded_one(tmp_path: Path
                                                                             ) -> None:
    """Script 8 leaves an incident.io record's own time NULL (its stored time may be a folded
    escalation time). Until the next listing gives one, a step back older by the folded time
    is still stale, a listing whose own time is older is not mistaken for one behind the
    record (its severity is taken), and that listing's own time is stored."""
    ledger, seen = _with_severity(tmp_path)
    acked = T0 + timedelta(seconds=30)
    seen("a", "1", State.ACKNOWLEDGED, Severity.SEV3, acked)

    def upgraded(tx: Tx) -> None:
        rec = tx.record("a", "1")
        assert rec is not None
        rec.vendor_own_updated_at = None

    ledger.call(upgraded)
    seen("a", "1", State.TRIGGERED, Severity.SEV3, T0, own=T0)
    rec = ledger.call(lambda tx: tx.record("a", "1"))
    assert rec is not None and (rec.state, rec.vendor_own_updated_at) == ("acknowledged", None)
    seen("a", "1", State.ACKNOWLEDGED, Severity.SEV1, acked, own=T0 + timedelta(seconds=10))
    rec = ledger.call(lambda tx: tx.record("a", "1"))
    assert rec is not None and rec.severity == "sev1"
    assert rec.vendor_own_updated_at == T0 + timedelta(seconds=10)


def test_a_newer_own_time_alone_is_stored(tmp_path: Path) -> None:
    """a was acked at T30 (folded; own T0). A listing then moves only its own time (T20: an
    edit syncd does not read, the folded T30 unchanged): nothing else changed, but the own
    time must be stored, or a lagging listing stamped in between (triggered, own T10, the
    folded T30 not older) would not be older than the record by either time and would be
    taken as an un-ack."""
    ledger, seen = _with_severity(tmp_path)
    acked = T0 + timedelta(seconds=30)
    seen("a", "1", State.ACKNOWLEDGED, Severity.SEV3, acked, own=T0)
    seen("a", "1", State.ACKNOWLEDGED, Severity.SEV3, acked, own=T0 + timedelta(seconds=20))
    rec = ledger.call(lambda tx: tx.record("a", "1"))
    assert rec is not None and rec.vendor_own_updated_at == T0 + timedelta(seconds=20)
    seen("a", "1", State.TRIGGERED, Severity.SEV3, acked, own=T0 + timedelta(seconds=10))
    rec = ledger.call(lambda tx: tx.record("a", "1"))
    assert rec is not None and rec.state == "acknowledged"


@pytest.mark.parametrize("regressions", ["ignore", "follow"])
def test_a_lagging_escalations_read_is_not_an_unack(tmp_path: Path, regressions: str) -> None:
    """incident.io: the person acked a's escalation at T0+30s (folded time; the incident's own
    stays T0). A full resync then reads the incidents list fresh (own T0) but the escalations
    read lags (the ack not in it yet): TRIGGERED with the same own time, older by the folded
    one. incident.io has no un-ack: taken, it superseded the ack owed to b and, with
    ``regressions = follow``, un-acked b (Spike paged again)."""
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}")
    caps = CAPS | Capability.UNACK
    group = SyncGroup(name="g", accounts=["a", "b"], regressions=regressions)
    groups = [GroupContext.build(group, {"a": caps, "b": caps})]

    def seen(account: str, ext: str, st: State, at: datetime) -> int:
        i = Incident(ext, st, "t", keys={"dedup": "k1"}, updated_at=at, own_updated_at=T0)
        return ledger.call(lambda tx: observe(tx, account, [i], groups,
                                              at + timedelta(minutes=10), grace=GRACE)).stale

    seen("a", "1", State.TRIGGERED, T0)
    seen("b", "9", State.TRIGGERED, T0)
    seen("a", "1", State.ACKNOWLEDGED, T0 + timedelta(seconds=30))
    assert seen("a", "1", State.TRIGGERED, T0) == 1
    rec = ledger.call(lambda tx: tx.record("a", "1"))
    assert rec is not None and rec.state == "acknowledged"
    owed = ledger.call(lambda tx: sorted((o.account, o.action, o.status)
                                         for o in tx.outbox_for_link(1)))
    assert owed == [("b", "acknowledge", "pending")]


def _sticky(tmp_path: Path, regressions: str) -> tuple[Ledger, _SeenSticky]:
    """a:1 and b:9 linked, triggered at sev3, in a group that syncs severity and can un-ack,
    and how to show an incident.io listing of a (no un-ack: ``ack_sticky``), folded time ``at``
    and own time ``own``."""
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}")
    caps = CAPS | Capability.UNACK | Capability.SEVERITY_READ | Capability.SEVERITY_WRITE
    group = SyncGroup(name="g", accounts=["a", "b"], regressions=regressions)
    groups = [GroupContext.build(group, {"a": caps, "b": caps})]

    def seen(account: str, ext: str, st: State, at: datetime, own: datetime = T0,
             sev: Severity = Severity.SEV3) -> None:
        i = Incident(ext, st, "t", severity=sev, keys={"dedup": "k1"}, updated_at=at,
                     own_updated_at=own, ack_sticky=account == "a")
        ledger.call(lambda tx: observe(tx, account, [i], groups, at + timedelta(minutes=10),
                                       grace=GRACE))

    seen("a", "1", State.TRIGGERED, T0)
    seen("b", "9", State.TRIGGERED, T0)
    seen("a", "1", State.ACKNOWLEDGED, T0 + timedelta(seconds=30))
    return ledger, seen


class _SeenSticky(Protocol):
    def __call__(self, account: str, ext: str, st: State, at: datetime, own: datetime = T0,
                 sev: Severity = Severity.SEV3) -> None: ...


def _owed(ledger: Ledger) -> list[tuple[str, str, str | None, str]]:
    return ledger.call(lambda tx: sorted((o.account, o.action, o.value, o.status)
                                         for o in tx.outbox_for_link(1)))


@pytest.mark.parametrize("regressions", ["ignore", "follow"])
def test_an_edit_after_the_ack_then_a_lagging_escalations_read_is_not_an_unack(
        tmp_path: Path, regressions: str) -> None:
    """incident.io: a was acked at T30 (folded; own T0), then a person set sev1 at T40 (own
    and folded T40). A poll reads the incidents list fresh but its escalations read lags (the
    ack not in it): triggered, sev1, own = folded = T40, older by neither time. incident.io has
    no un-ack: taken as one, it superseded the ack owed to b (with ``regressions = follow``,
    un-acked b). The listing's severity is the person's: taken, and owed to b."""
    ledger, seen = _sticky(tmp_path, regressions)
    edited = T0 + timedelta(seconds=40)
    seen("a", "1", State.TRIGGERED, edited, own=edited, sev=Severity.SEV1)
    rec = ledger.call(lambda tx: tx.record("a", "1"))
    assert rec is not None and (rec.state, rec.severity) == ("acknowledged", "sev1")
    assert _owed(ledger) == [("b", "acknowledge", "acknowledged", "pending"),
                             ("b", "severity", "sev1", "pending")]


@pytest.mark.parametrize("regressions", ["ignore", "follow"])
def test_our_severity_push_after_the_ack_then_a_lagging_escalations_read_is_not_an_unack(
        tmp_path: Path, regressions: str) -> None:
    """incident.io: a was acked at T30 (folded; own T0); our sev1 push to a was confirmed at
    T40 (own T40). The next poll's escalations read lags: triggered, own = folded = T40, older
    by neither time nor than the confirmation. Taken, it was an un-ack incident.io cannot
    have."""
    ledger, seen = _sticky(tmp_path, regressions)
    pushed = T0 + timedelta(seconds=40)

    def confirm(tx: Tx) -> None:
        rec = tx.record("a", "1")
        assert rec is not None
        answer = Incident("1", State.ACKNOWLEDGED, "t", severity=Severity.SEV1,
                          updated_at=pushed)
        records.confirm_push(rec, Action.SET_SEVERITY, "sev1", answer, pushed)

    ledger.call(confirm)
    seen("a", "1", State.TRIGGERED, pushed, own=pushed, sev=Severity.SEV1)
    rec = ledger.call(lambda tx: tx.record("a", "1"))
    assert rec is not None and (rec.state, rec.severity) == ("acknowledged", "sev1")
    assert _owed(ledger) == [("b", "acknowledge", "acknowledged", "pending")]


@pytest.mark.parametrize("regressions", ["ignore", "follow"])
def test_a_persons_edit_within_grace_of_our_ack_push_read_with_lagging_escalations(
        tmp_path: Path, regressions: str) -> None:
    """incident.io: our ack push to a was confirmed at T40 with no incident in the answer (no
    vendor time), a person set sev1 at T50, and a poll 20 s after the push reads the
    escalations behind (triggered). Within the grace of our push a step back is dropped whole,
    the person's sev1 with it (the feed does not deliver it again); the no-un-ack rule comes
    first, so the listing is same-state news and its severity is taken (review of unack)."""
    ledger, _ = _sticky(tmp_path, regressions)
    pushed, edited = T0 + timedelta(seconds=40), T0 + timedelta(seconds=50)

    def confirm(tx: Tx) -> None:
        rec = tx.record("a", "1")
        assert rec is not None
        records.confirm_push(rec, Action.ACKNOWLEDGE, "acknowledged", None, pushed)

    ledger.call(confirm)
    listing = Incident("1", State.TRIGGERED, "t", severity=Severity.SEV1, keys={"dedup": "k1"},
                       updated_at=edited, own_updated_at=edited, ack_sticky=True)
    ledger.call(lambda tx: observe(tx, "a", [listing], [], pushed + timedelta(seconds=20),
                                   grace=GRACE))
    rec = ledger.call(lambda tx: tx.record("a", "1"))
    assert rec is not None and (rec.state, rec.severity) == ("acknowledged", "sev1")


class _Seen(Protocol):
    def __call__(self, account: str, ext: str, st: State, sev: Severity, at: datetime,
                 own: datetime | None = None) -> None: ...


def _with_severity(tmp_path: Path) -> tuple[Ledger, _Seen]:
    """a:1 and b:9 linked at sev3 in a group that syncs severity, and how to show a listing
    (``own``: its own vendor time, when older than the folded ``at``)."""
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}")
    caps = CAPS | Capability.SEVERITY_READ | Capability.SEVERITY_WRITE
    groups = [GroupContext.build(SyncGroup(name="g", accounts=["a", "b"]),
                                 {"a": caps, "b": caps})]

    def seen(account: str, ext: str, st: State, sev: Severity, at: datetime,
             own: datetime | None = None) -> None:
        i = Incident(ext, st, "t", severity=sev, keys={"dedup": "k1"}, updated_at=at,
                     own_updated_at=own)
        ledger.call(lambda tx: observe(tx, account, [i], groups, at, grace=GRACE))

    seen("a", "1", State.TRIGGERED, Severity.SEV3, T0)
    seen("b", "9", State.TRIGGERED, Severity.SEV3, T0)
    return ledger, seen


@pytest.mark.parametrize("state", [State.TRIGGERED, State.ACKNOWLEDGED])
def test_a_listing_behind_the_record_keeps_the_newer_severity(tmp_path: Path,
                                                              state: State) -> None:
    """a's severity went sev3 -> sev1 (own time T1). Then an incident.io incidents list lags
    (sev3, own time T0) while its escalations read is fresh: an escalation appeared, or the
    person acked (``state``), and its time T2 is folded in. That listing is taken (a move
    forward is never stale, a new escalation retries parked acks), but its severity is the
    record before T1: taken, it undid the person's sev1 and superseded the sev1 owed to b."""
    ledger, seen = _with_severity(tmp_path)
    seen("a", "1", State.TRIGGERED, Severity.SEV1, T0 + timedelta(seconds=10))
    seen("a", "1", state, Severity.SEV3, T0 + timedelta(seconds=20), own=T0)
    rec = ledger.call(lambda tx: tx.record("a", "1"))
    assert rec is not None and (rec.state, rec.severity) == (state.value, "sev1")
    owed = ledger.call(lambda tx: sorted((o.account, o.action, o.value)
                                         for o in tx.outbox_for_link(1)))
    assert ("b", "severity", "sev1") in owed
    assert (("b", "acknowledge", "acknowledged") in owed) is (state is State.ACKNOWLEDGED)


def test_a_listing_behind_our_confirmed_severity_push_keeps_it(tmp_path: Path) -> None:
    """b's person set sev1; our push of it to a was confirmed (the answer's own time T20).
    Then a's person acks and the incidents list lags (sev3, own T0) while the escalations read
    is fresh (the ack's time T30 folded in): a move forward, taken, but its severity is the
    record before our push. Without the confirmation's own time in the ledger it read as a
    person undoing our sev1 (the record back to sev3, sev3 owed to b)."""
    ledger, seen = _with_severity(tmp_path)
    seen("b", "9", State.TRIGGERED, Severity.SEV1, T0 + timedelta(seconds=10))
    pushed = T0 + timedelta(seconds=20)

    def confirm(tx: Tx) -> None:
        rec = tx.record("a", "1")
        assert rec is not None
        answer = Incident("1", State.TRIGGERED, "t", severity=Severity.SEV1, updated_at=pushed)
        records.confirm_push(rec, Action.SET_SEVERITY, "sev1", answer, pushed)
        for o in tx.outbox_for_link(1):
            o.status = "done"

    ledger.call(confirm)
    seen("a", "1", State.ACKNOWLEDGED, Severity.SEV3, pushed + timedelta(seconds=10), own=T0)
    rec = ledger.call(lambda tx: tx.record("a", "1"))
    assert rec is not None and (rec.state, rec.severity) == ("acknowledged", "sev1")
    assert rec.vendor_own_updated_at == pushed
    owed = ledger.call(lambda tx: [(o.account, o.action, o.value)
                                   for o in tx.outbox_for_link(1) if o.status == "pending"])
    assert owed == [("b", "acknowledge", "acknowledged")]


def test_a_resolve_older_than_a_folded_escalation_time_is_taken(tmp_path: Path) -> None:
    """incident.io folds escalation times into an open incident's updated_at only, read from
    a second list: the client leaves out escalations a resolve ends, but nothing documented
    orders an escalation's time (T2+eps) against the incident's own resolve (T2). A move
    forward is news whatever its timestamp: dropped, the resolve would be lost for good (the
    feed cursor has passed it)."""
    ledger, groups = setup(tmp_path)
    grace = timedelta(seconds=60)
    for account, ext in (("a", "1"), ("b", "9")):
        ledger.call(lambda tx, a=account, e=ext: observe(
            tx, a, [inc(e, State.TRIGGERED, T0)], groups, T0, grace=grace))
    resolved_at = T0 + timedelta(minutes=5)
    escalated = inc("1", State.TRIGGERED, resolved_at + timedelta(seconds=2))
    ledger.call(lambda tx: observe(tx, "a", [escalated], groups, resolved_at, grace=grace))
    later = resolved_at + timedelta(seconds=30)
    result = ledger.call(lambda tx: observe(tx, "a", [inc("1", State.RESOLVED, resolved_at)],
                                            groups, later, grace=grace))
    assert result.stale == 0
    assert_still_resolved_and_owed(ledger)


def test_a_resolve_taken_with_an_older_time_keeps_the_newest_one_seen(tmp_path: Path
                                                                     ) -> None:
    """The open incident was seen at T2+2s (an escalation ended by the resolve, folded in);
    its resolve, taken, carries its own T2. The step-back check must go on comparing against
    the newest time seen: a lagging listing's open state stamped in between (T2+1s, an
    escalation read before the last one ended) is older than what was seen, not a reopen
    that would cancel b's resolve and, with ``regressions = follow``, page b again."""
    ledger, groups = following(tmp_path, State.TRIGGERED)
    resolved_at = T0 + timedelta(minutes=5)
    folded = inc("1", State.TRIGGERED, resolved_at + timedelta(seconds=2))
    ledger.call(lambda tx: observe(tx, "a", [folded], groups, resolved_at, grace=GRACE))
    later = resolved_at + timedelta(seconds=30)
    ledger.call(lambda tx: observe(tx, "a", [inc("1", State.RESOLVED, resolved_at)], groups,
                                   later, grace=GRACE))
    lagging = inc("1", State.TRIGGERED, resolved_at + timedelta(seconds=1))
    result = ledger.call(lambda tx: observe(tx, "a", [lagging], groups, later, grace=GRACE))
    assert result.stale == 1 and result.actions == 0
    rec = assert_still_resolved_and_owed(ledger)
    assert rec.vendor_updated_at == resolved_at + timedelta(seconds=2)


@pytest.mark.parametrize(("delay", "links", "owed"), [
    (timedelta(seconds=3), 1, [("b", "resolve")]),  # Events API queueing, a skewed clock
    (OPEN_OCCURRENCE_SLACK + timedelta(seconds=1), 2, [])])
def test_an_open_incident_born_just_after_a_resolve_is_the_same_occurrence(
        tmp_path: Path, delay: timedelta, links: int, owed: list[tuple[str, str]]) -> None:
    """b's copy of an occurrence a resolved can be stamped seconds after that resolve (clock
    skew, a vendor's alert processing): within the slack it joins the link and is resolved;
    past it, it is the alert firing again and gets a link of its own, left open."""
    ledger, groups = setup(tmp_path)
    grace = timedelta(seconds=60)
    ledger.call(lambda tx: observe(tx, "a", [inc("1", State.TRIGGERED, T0)], groups, T0,
                                   grace=grace))
    resolved = T0 + timedelta(minutes=1)
    ledger.call(lambda tx: observe(tx, "a", [inc("1", State.RESOLVED, resolved)], groups,
                                   resolved, grace=grace))
    born = resolved + delay
    late = Incident("9", State.TRIGGERED, "t", keys={"dedup": "k1"}, updated_at=born,
                    created_at=born)
    ledger.call(lambda tx: observe(tx, "b", [late], groups, born, grace=grace))
    assert ledger.call(lambda tx: tx.counts())["links"] == links
    assert ledger.call(lambda tx: [(o.account, o.action) for o in tx.outbox_for_link(1)]) == owed



def _pushed(tmp_path: Path, action: Action, value: str, *, answered: bool = True
            ) -> tuple[Ledger, list[GroupContext], datetime]:
    """a:1 and b:9 linked, then our push to a:1 confirmed by the vendor, its answer stamped
    (vendor time) at the returned time; ``answered=False``: confirmed without an answer (an
    incident.io ack returns no incident), so with no vendor time."""
    ledger, groups = setup(tmp_path)
    for account, ext in (("a", "1"), ("b", "9")):
        ledger.call(lambda tx, a=account, e=ext: observe(
            tx, a, [inc(e, State.TRIGGERED, T0)], groups, T0, grace=GRACE))
    pushed = T0 + timedelta(minutes=5)

    def confirm(tx: Tx) -> None:
        rec = tx.record("a", "1")
        assert rec is not None
        state = State(value) if action is not Action.SET_SEVERITY else State(rec.state)
        answer = Incident("1", state, "t", severity=Severity.SEV2, updated_at=pushed)
        records.confirm_push(rec, action, value, answer if answered else None, pushed)

    ledger.call(confirm)
    return ledger, groups, pushed


@pytest.mark.parametrize(("seen", "severity", "stale"), [
    (State.RESOLVED, Severity.SEV2, 0),  # a move forward: news, whatever its time
    (State.TRIGGERED, Severity.SEV1, 1),  # the listing from before our ack: list lag
])
def test_after_a_confirmed_ack_only_a_step_back_older_than_it_is_stale(
        tmp_path: Path, seen: State, severity: Severity, stale: int) -> None:
    ledger, groups, pushed = _pushed(tmp_path, Action.ACKNOWLEDGE, "acknowledged")
    older = Incident("1", seen, "t", severity=severity, keys={"dedup": "k1"},
                     updated_at=pushed - timedelta(seconds=1))
    later = pushed + GRACE * 5  # past grace: only the timestamps decide
    result = ledger.call(lambda tx: observe(tx, "a", [older], groups, later, grace=GRACE))
    assert result.stale == stale
    rec = ledger.call(lambda tx: tx.record("a", "1"))
    assert rec is not None
    assert rec.state == ("acknowledged" if stale else seen.value)


def test_after_a_confirmed_severity_push_the_listing_before_it_is_stale(tmp_path: Path
                                                                       ) -> None:
    """Same state, the old severity, older than our severity push's confirmation: the record
    as it was before the push, not a person undoing it."""
    ledger, groups, pushed = _pushed(tmp_path, Action.SET_SEVERITY, "sev2")
    before = Incident("1", State.TRIGGERED, "t", severity=Severity.SEV1, keys={"dedup": "k1"},
                      updated_at=pushed - timedelta(seconds=1))
    later = pushed + GRACE * 5
    result = ledger.call(lambda tx: observe(tx, "a", [before], groups, later, grace=GRACE))
    assert result.stale == 1
    rec = ledger.call(lambda tx: tx.record("a", "1"))
    assert rec is not None and rec.severity == "sev2"


@pytest.mark.parametrize(("answered", "seen_at"), [
    (False, timedelta(seconds=1)),  # the confirmation has no vendor time
    (True, None),  # the observation has none
])
@pytest.mark.parametrize(("after", "stale"), [(GRACE / 2, 1), (GRACE * 5, 0)])
def test_without_both_vendor_times_a_step_back_is_stale_only_within_grace(
        tmp_path: Path, answered: bool, seen_at: timedelta | None, after: timedelta,
        stale: int) -> None:
    """Where the confirmation or the observation lacks a vendor time, our clock decides: a
    step back within ``grace`` of the confirmation is the listing from before our push, one
    after it a person's move (taken, and the other side follows by ``regressions``)."""
    ledger, groups, pushed = _pushed(tmp_path, Action.ACKNOWLEDGE, "acknowledged",
                                     answered=answered)
    back = Incident("1", State.TRIGGERED, "t", keys={"dedup": "k1"},
                    updated_at=None if seen_at is None else pushed + seen_at)
    result = ledger.call(lambda tx: observe(tx, "a", [back], groups, pushed + after,
                                            grace=GRACE))
    assert result.stale == stale
    rec = ledger.call(lambda tx: tx.record("a", "1"))
    assert rec is not None and rec.state == ("acknowledged" if stale else "triggered")
