"""The outbox and record state machines (syncd.ledger.outbox, syncd.ledger.records) on a real
SQLite ledger: every status change commits and reads back as stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from syncd.ledger import Ledger, Outbox, Record, Status, Tx, outbox, records
from syncd.model import Action, Incident, State

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def ledger_with_record(tmp_path: Path) -> tuple[Ledger, int, int]:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}")

    def seed(tx: Tx) -> tuple[int, int]:
        rec = records.add(tx, "vo", Incident("7", State.TRIGGERED, "t"), T0)
        link = tx.new_link("g", "k", "correlate")
        tx.add_member(link, rec)
        assert rec.id is not None and link.id is not None
        return link.id, rec.id

    link_id, record_id = ledger.call(seed)
    return ledger, link_id, record_id


def owe(tx: Tx, link_id: int, record_id: int | None, action: Action, key: str,
        value: str | None = None) -> Outbox:
    return outbox.enqueue(tx, group="g", link_id=link_id, record_id=record_id, account="vo",
                          action=action, value=value, key=key, cause="pd", caused_at=T0, now=T0)


def statuses(ledger: Ledger, link_id: int) -> list[tuple[str, str]]:
    return ledger.call(lambda tx: [(r.action, r.status) for r in tx.outbox_for_link(
        link_id, tuple(Status))])


def test_enqueue_supersedes_the_same_field_only(tmp_path: Path) -> None:
    ledger, link_id, rid = ledger_with_record(tmp_path)
    ledger.call(lambda tx: [owe(tx, link_id, rid, a, f"k{i}") for i, a in enumerate(
        (Action.ACKNOWLEDGE, Action.SET_SEVERITY, Action.RESOLVE))])
    assert statuses(ledger, link_id) == [("acknowledge", "superseded"), ("severity", "pending"),
                                         ("resolve", "pending")]
    fields = ledger.call(lambda tx: outbox.Batch(outbox.pending_of(tx, [rid])).fields(rid))
    assert fields == frozenset({"state", "severity"})


def test_a_batch_follows_the_enqueue_rule_with_one_read(tmp_path: Path) -> None:
    """A page's batch supersedes pending rows it read once and rows it owes itself, and
    writes everything with its statements at the end."""
    ledger, link_id, rid = ledger_with_record(tmp_path)
    ledger.call(lambda tx: [owe(tx, link_id, rid, Action.ACKNOWLEDGE, "ack"),
                            owe(tx, link_id, rid, Action.SET_SEVERITY, "sev", "sev1")])

    def page(tx: Tx) -> frozenset[str]:
        loaded = tx.outbox_for_link(link_id)  # ORM copies the batch's writes must keep in step
        batch = outbox.Batch(outbox.pending_of(tx, [rid]))
        kw = dict(group="g", link_id=link_id, record_id=rid, account="vo", cause="pd",
                  caused_at=T0, now=T0)
        batch.owe(action=Action.RESOLVE, value=None, key="res", **kw)
        batch.owe(action=Action.SET_SEVERITY, value="sev2", key="sev2", **kw)
        batch.supersede(rid, "severity", "member already has the agreed value")
        fields = batch.fields(rid)
        batch.write(tx, T0)
        assert [r.status for r in loaded] == ["superseded", "superseded"]
        assert not tx.session.dirty
        return fields

    assert ledger.call(page) == frozenset({"state"})
    assert statuses(ledger, link_id) == [
        ("acknowledge", "superseded"), ("severity", "superseded"), ("resolve", "pending"),
        ("severity", "superseded")]
    reasons = ledger.call(lambda tx: [r.last_error for r in tx.outbox_for_link(
        link_id, tuple(Status))])
    assert reasons == ["superseded by resolve", "superseded by severity", None,
                       "member already has the agreed value"]


def test_a_create_supersedes_nothing(tmp_path: Path) -> None:
    ledger, link_id, rid = ledger_with_record(tmp_path)
    ledger.call(lambda tx: owe(tx, link_id, rid, Action.ACKNOWLEDGE, "ack"))
    ledger.call(lambda tx: owe(tx, link_id, None, Action.CREATE, "syncd-g-1/vo", "syncd-g-1"))
    assert statuses(ledger, link_id) == [("acknowledge", "pending"), ("create", "pending")]


def test_supersede_and_withdraw_say_why(tmp_path: Path) -> None:
    ledger, link_id, rid = ledger_with_record(tmp_path)
    ledger.call(lambda tx: [owe(tx, link_id, rid, Action.ACKNOWLEDGE, "a"),
                            owe(tx, link_id, rid, Action.SET_SEVERITY, "s", "sev1")])
    assert ledger.call(lambda tx: outbox.supersede(tx, rid, "state", "has it", T0)) == 1
    assert ledger.call(lambda tx: outbox.supersede(tx, rid, "state", "has it", T0)) == 0
    ledger.call(lambda tx: tx.remove_member(link_id, rid))
    rows = ledger.call(lambda tx: [(r.action, r.status, r.last_error)
                                   for r in tx.outbox_for_link(link_id, tuple(Status))])
    assert rows == [("acknowledge", "superseded", "has it"),
                    ("severity", "superseded", "unlinked")]


def test_confirm_counts_the_attempt_and_leaves_a_superseded_row_alone(tmp_path: Path) -> None:
    ledger, link_id, rid = ledger_with_record(tmp_path)
    first = ledger.call(lambda tx: owe(tx, link_id, rid, Action.ACKNOWLEDGE, "a")).id
    second = ledger.call(lambda tx: owe(tx, link_id, rid, Action.RESOLVE, "r")).id

    def confirm_both(tx: Tx) -> list[bool]:
        return [outbox.confirm(row, T0) for row in tx.outbox_rows([first, second])]

    assert ledger.call(confirm_both) == [False, True]
    rows = ledger.call(lambda tx: [(r.status, r.attempts) for r in tx.outbox_rows([first,
                                                                                   second])])
    assert rows == [("superseded", 0), ("done", 1)]
    assert ledger.call(lambda tx: tx.due("vo", T0 + timedelta(days=1))) == []


def test_park_keeps_the_reason_and_leaves_the_queue(tmp_path: Path) -> None:
    ledger, link_id, rid = ledger_with_record(tmp_path)
    row_id = ledger.call(lambda tx: owe(tx, link_id, rid, Action.ACKNOWLEDGE, "a")).id
    ledger.call(lambda tx: outbox.park(tx.outbox_rows([row_id])[0], "x" * 900, T0))
    parked = ledger.call(lambda tx: tx.parked())
    assert [(r.id, len(r.last_error or "")) for r in parked] == [(row_id, 500)]
    assert ledger.call(lambda tx: tx.due("vo", T0 + timedelta(days=1))) == []


def test_back_off_grows_then_parks(tmp_path: Path) -> None:
    ledger, link_id, rid = ledger_with_record(tmp_path)
    row_id = ledger.call(lambda tx: owe(tx, link_id, rid, Action.ACKNOWLEDGE, "a")).id

    def fail(tx: Tx) -> tuple[str, int, datetime]:
        row = tx.outbox_rows([row_id])[0]
        outbox.back_off(row, "HTTP 503", T0)
        return row.status, row.attempts, row.next_attempt_at

    status, attempts, when = ledger.call(fail)
    assert (status, attempts) == ("pending", 1)
    assert T0 + timedelta(seconds=0.5) <= when <= T0 + timedelta(seconds=2)
    for _ in range(outbox.MAX_ATTEMPTS - 2):
        ledger.call(fail)
    status, attempts, _when = ledger.call(fail)
    assert (status, attempts) == ("parked", outbox.MAX_ATTEMPTS)
    parked = ledger.call(lambda tx: tx.outbox_rows([row_id])[0])
    assert parked.last_error == f"gave up after {outbox.MAX_ATTEMPTS} attempts: HTTP 503"


def test_reschedule_waits_for_the_vendor_and_skips_settled_rows(tmp_path: Path) -> None:
    ledger, link_id, rid = ledger_with_record(tmp_path)
    a = ledger.call(lambda tx: owe(tx, link_id, rid, Action.ACKNOWLEDGE, "a")).id
    s = ledger.call(lambda tx: owe(tx, link_id, rid, Action.SET_SEVERITY, "s", "sev1")).id
    ledger.call(lambda tx: outbox.confirm(tx.outbox_rows([s])[0], T0))

    def limited(tx: Tx) -> None:
        for row in tx.outbox_rows([a, s]):
            outbox.reschedule(row, "429", T0, after=30.0, count=False)

    ledger.call(limited)
    rows = ledger.call(lambda tx: {r.id: (r.status, r.attempts, r.next_attempt_at, r.last_error)
                                   for r in tx.outbox_rows([a, s])})
    assert rows[a] == ("pending", 0, T0 + timedelta(seconds=30), "429")
    assert rows[s] == ("done", 1, T0, None)
    assert ledger.call(lambda tx: tx.next_due_at("vo")) == T0 + timedelta(seconds=30)


def test_confirmed_push_moves_the_last_known_value_only_to_what_was_pushed(
        tmp_path: Path) -> None:
    ledger, _link_id, _rid = ledger_with_record(tmp_path)

    def push(tx: Tx, action: Action, shown: State | None) -> str:
        rec = tx.record("vo", "7")
        assert rec is not None
        seen = None if shown is None else Incident("7", shown, "t", updated_at=T0)
        records.confirm_push(rec, action, None, seen, T0)
        return rec.state

    assert ledger.call(push, Action.ACKNOWLEDGE, State.RESOLVED) == "triggered"
    assert ledger.call(push, Action.ACKNOWLEDGE, None) == "acknowledged"
    rec: Record | None = ledger.call(lambda tx: tx.record("vo", "7"))
    assert rec is not None and rec.pushed_at == T0 and rec.pushed_vendor_at is None


def test_override_rows_end_done_refused_unknown_or_deferred(tmp_path: Path) -> None:
    from syncd.ledger import oncall as store

    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}")
    outcomes = ("done", "no-op", "refused", "unknown", "deferred")

    def owe(tx: Tx, hour: int) -> int:
        row = store.owe_override(
            tx, mapping="m", account="vo", schedule_id="pol", level=1, user_email="a@x",
            start=T0 + timedelta(hours=hour), end=T0 + timedelta(hours=hour + 1), replaces="b@x",
            cause=None, now=T0)
        assert row.id is not None
        return row.id

    ids = [ledger.call(owe, h) for h in range(len(outcomes) + 1)]
    assert ledger.call(lambda tx: tx.due("vo", T0 + timedelta(days=1))) == []
    for row_id, outcome in zip(ids, outcomes, strict=False):
        vendor_id = "OV1" if outcome == "done" else None
        ledger.call(store.settle_override, row_id, outcome, vendor_id, "why", T0)
    assert ledger.call(store.expire_overrides, T0 + timedelta(minutes=1)) == 1
    ledger.call(store.settle_override, ids[-1], "done", "late", "", T0)  # the word stands
    pushed = ledger.call(lambda tx: store.pushed_overrides(tx, T0 - timedelta(days=1)))
    assert [(p.outcome, p.vendor_id) for p in pushed] == [
        ("done", "OV1"), ("no-op", None), ("refused", None), ("unknown", None),
        ("deferred", None), ("unknown", None)]
    rows = ledger.call(lambda tx: [r.status for r in tx.outbox_rows(ids)])
    assert rows == ["done", "done", "parked", "unknown", "superseded", "unknown"]
    audit = ledger.call(lambda tx: [a.outcome for a in tx.audit_entries(kind="oncall")])
    assert audit.count("pending") == len(ids) and audit.count("done") == 1


def test_a_change_at_the_vendor_retries_only_the_latest_parked_action(tmp_path: Path) -> None:
    """A parked severity that a newer, pushed severity replaced must never go out again; the
    parked ack (the latest state action) goes back to pending, once."""
    ledger, link_id, rid = ledger_with_record(tmp_path)

    def seed(tx: Tx) -> None:
        old = owe(tx, link_id, rid, Action.SET_SEVERITY, "s1", "sev1")
        outbox.park(old, "refused", T0)
        new = owe(tx, link_id, rid, Action.SET_SEVERITY, "s2", "sev2")
        outbox.confirm(new, T0)
        outbox.park(owe(tx, link_id, rid, Action.ACKNOWLEDGE, "a"), "no escalation", T0)

    ledger.call(seed)
    later = T0 + timedelta(minutes=1)
    assert ledger.call(lambda tx: outbox.retry_on_change(tx, [rid], later)) == 1
    assert statuses(ledger, link_id) == [("severity", "parked"), ("severity", "done"),
                                         ("acknowledge", "pending")]
    unparked = ledger.call(lambda tx: [(a.account, a.field) for a in tx.audit_entries(
        kind="unpark")])
    assert unparked == [("vo", "acknowledge")]
