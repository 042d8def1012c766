"""Mirror markers across a replaced ledger: link ids are ledger row ids, so a fresh ledger (or a
restored backup) hands an id the old ledger used to another incident. The new incident must
get copies of its own in every target, and the old copies must not join its link: otherwise a
page is dropped (the old copy taken for the new one's) and an ack of one incident acks another.

Real simulators, real SQLite files; the ledger is swapped the way docs/security.md tells an
operator to (file moved aside, or a ``.backup`` copy put back)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

from world import World

from syncd import views
from syncd.engine import dispatcher
from syncd.engine.dispatcher import DispatchResult
from syncd.ledger import pages, utcnow
from syncd.model import NewIncident, marker_for, origin_tag
from syncd.simulators.incidentio_base import ALERT_SOURCE_ID, ALERT_SOURCE_TOKEN

SOURCE = "src"
TARGETS = {"vo": "victorops", "sp": "spike", "ii": "incidentio", "ia": "incidentio"}
ACKABLE = ("vo", "sp", "ia")
"""Targets whose copies take an ack (an incident.io incident's ack answers an escalation, and
one created through the API has none: that ack waits, retried, so these tests cycle until the
acks they check are in instead of settling)."""


def mirror_world(tmp_path: Path) -> World:
    vendors = {SOURCE: "pagerduty", **TARGETS}
    return World(tmp_path, vendors,
                 [{"name": "mig", "accounts": list(vendors), "mode": "mirror", "source": SOURCE}],
                 account_extra={"ia": {"model": "alert",
                                       "alert_source_config_id": ALERT_SOURCE_ID,
                                       "alert_source_token": ALERT_SOURCE_TOKEN}})


def copies(w: World, account: str, title: str) -> list[dict[str, Any]]:
    """The copies of the source incident titled ``title`` (Spike's titles carry the marker)."""
    return [i for i in w.sims[account].canonical_incidents() if i["title"].startswith(title)]


def ledger_files(w: World) -> list[Path]:
    db = w.tmp / "ledger.db"
    return [p for p in (db, db.with_name("ledger.db-wal"), db.with_name("ledger.db-shm"))
            if p.exists()]


def backup(w: World, to: Path) -> None:
    """``sqlite3 ledger.db ".backup to"`` while the daemon runs (docs/security.md)."""
    src, dst = sqlite3.connect(w.tmp / "ledger.db"), sqlite3.connect(to)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


async def replace_ledger(w: World, restore: Path | None) -> None:
    """Stop, move the ledger aside, then start on a fresh one or on the restored backup."""
    await w.close()
    aside = w.tmp / "damaged"
    aside.mkdir()
    for path in ledger_files(w):
        path.rename(aside / path.name)
    if restore is not None:
        shutil.copy(restore, w.tmp / "ledger.db")
    w.open()


def mirrored_once(w: World, title: str) -> None:
    for account in TARGETS:
        assert len(copies(w, account, title)) == 1, (account, copies(w, account, title))


async def check_reused_link_gets_its_own_copies(w: World, old: str, new: str,
                                                acked_by_hand: str | None = None) -> None:
    """``new`` (alerted now, unless it is already) opened a link whose id the old ledger gave
    ``old``: it has copies of its own, and acking it acks them, not ``old``'s."""
    if not w.incidents(SOURCE, new):
        w.alert(new, title=new, accounts=[SOURCE])
    await w.settle()
    mirrored_once(w, old)
    mirrored_once(w, new)  # on main: none, the old copy was taken for the new one's
    w.act(SOURCE, new, "acknowledge")
    for _ in range(10):
        await w.cycle()
        if all(copies(w, a, new)[0]["state"] == "acknowledged" for a in ACKABLE):
            break
    await w.cycle(2)  # room for a wrong push, had one been owed
    for account in ACKABLE:
        assert copies(w, account, new)[0]["state"] == "acknowledged", account
        if account != acked_by_hand:
            assert copies(w, account, old)[0]["state"] == "triggered", account  # not silenced


async def test_a_fresh_ledger_does_not_take_old_mirrors_for_new_incidents(
        tmp_path: Path) -> None:
    """Also the poll's half: while page-B's copy in Splunk On-Call is not made yet (its create
    endpoint fails), someone acks page-A's old copy there. Its marker names link 1, which
    here is page-B's: joining it would ack page-B at the source."""
    w = mirror_world(tmp_path)
    try:
        await w.cycle()  # first poll: nothing exists yet
        w.alert("page-A", title="page-A", accounts=[SOURCE])
        await w.settle()
        mirrored_once(w, "page-A")
        await replace_ledger(w, restore=None)
        await w.settle()  # the fresh ledger's first poll reads everything as it is
        vo = w.sims["vo"]
        vo.faults.routes, vo.faults.error_rate = ["/integrations/generic"], 1.0
        w.alert("page-B", title="page-B", accounts=[SOURCE])
        await w.cycle()  # page-B opens link 1 again; its Splunk On-Call create is retried
        assert w.ledger.call(lambda tx: [k.id for k in tx.links()]) == [1]
        old_vo = copies(w, "vo", "page-A")[0]
        vo.act(old_vo["id"], "acknowledge")
        await w.cycle(2)
        assert w.incident(SOURCE, "page-B")["state"] == "triggered"  # main: acknowledged
        unpaired = w.ledger.call(lambda tx: tx.audit_entries(kind="unpaired", limit=100))
        assert ("vo", old_vo["dedup"]) in {(u.account, u.new) for u in unpaired}
        assert all("syncd link" in (u.detail or "") for u in unpaired)
        vo.faults.error_rate = 0.0
        await check_reused_link_gets_its_own_copies(w, "page-A", "page-B", acked_by_hand="vo")
    finally:
        await w.close()


async def test_a_restored_backup_does_not_take_newer_mirrors_for_new_incidents(
        tmp_path: Path) -> None:
    """The backup knows page-A's link; page-B was mirrored after it, then resolved at the
    source while syncd was down. The restored ledger never links page-B (resolved incidents
    are not copied) and gives page-B's link id to page-C."""
    w = mirror_world(tmp_path)
    try:
        await w.cycle()
        w.alert("page-A", title="page-A", accounts=[SOURCE])
        await w.settle()
        saved = tmp_path / "ledger-backup.db"
        backup(w, saved)
        w.alert("page-B", title="page-B", accounts=[SOURCE])
        await w.settle()
        mirrored_once(w, "page-B")
        w.act(SOURCE, "page-B", "resolve")
        await replace_ledger(w, restore=saved)
        await check_reused_link_gets_its_own_copies(w, "page-B", "page-C")
        links = w.ledger.call(lambda tx: [(k.id, len(tx.members(k.id))) for k in tx.links()])
        assert sorted(links) == [(1, 5), (2, 5)]  # page-A's link as before, page-C's on page-B's id
        mirrored_once(w, "page-A")  # page-A's copies kept, no second set
    finally:
        await w.close()


async def test_a_restored_backup_adopts_the_copies_of_the_same_incident(
        tmp_path: Path) -> None:
    """An incident the backup did not know gets the same link id again after the restore:
    same origin, same marker, so its copies are found instead of made twice."""
    w = mirror_world(tmp_path)
    try:
        await w.cycle()
        saved = tmp_path / "ledger-backup.db"
        backup(w, saved)
        w.alert("page-A", title="page-A", accounts=[SOURCE])
        await w.settle()
        await replace_ledger(w, restore=saved)
        await w.settle()
        mirrored_once(w, "page-A")
        links = w.ledger.call(lambda tx: [(k.id, len(tx.members(k.id))) for k in tx.links()])
        assert links == [(1, 5)]
        [shown] = w.ledger.call(views.links, None, 10, False)  # `syncd links --json`
        source = w.incident(SOURCE, "page-A")["id"]
        marker = marker_for("mig", 1, SOURCE, source)
        assert {m["account"]: m["marker"] for m in shown["members"]} == {
            SOURCE: None, **{account: marker for account in TARGETS}}
        assert not w.ledger.call(lambda tx: tx.audit_entries(kind="unpaired"))
    finally:
        await w.close()



async def test_every_client_finds_a_marker_whole_never_a_prefix(tmp_path: Path) -> None:
    """Each target's create/find_created against its simulator: markers that are prefixes of
    each other (legacy, longer link id, tagged) are three incidents, each found as itself."""
    w = mirror_world(tmp_path)
    legacy, longer = "syncd-mig-1", "syncd-mig-12"
    tagged = marker_for("mig", 1, SOURCE, "P1")
    try:
        for account in TARGETS:
            client = w.engine.clients[account]
            made: dict[str, str] = {}
            for marker in (tagged, longer, legacy):  # a prefix match would find an earlier one
                assert await client.find_created(marker) is None, (account, marker)
                made[marker] = (await client.create(NewIncident(
                    marker=marker, title=f"{account} {marker}"))).external_id
            assert len(set(made.values())) == 3, (account, made)
            for marker, external_id in made.items():
                found = await client.find_created(marker)
                assert found is not None and found.external_id == external_id, (account, marker)
                assert found.keys.get("marker") == marker, (account, found.keys)
    finally:
        await w.close()


# --------------------------------------------------------------------------- a restore that
# hands an incident mirrored after the backup another link id


async def restored_with_another_id(tmp_path: Path) -> tuple[World, dict[str, str]]:
    """The backup knows page-A (link 1). After it, page-Y (link 2) and page-X (link 3) were
    mirrored, and page-Y was resolved. The restored ledger reads page-Y resolved (no link) and
    gives page-X link 2, while page-X's copies carry link 3 in their marker. Returns the world
    (restored, nothing polled yet) and page-X's copy per target (its record's external id)."""
    w = mirror_world(tmp_path)
    await w.cycle()
    w.alert("page-A", title="page-A", accounts=[SOURCE])
    await w.settle()
    saved = tmp_path / "ledger-backup.db"
    backup(w, saved)
    for name in ("page-Y", "page-X"):
        w.alert(name, title=name, accounts=[SOURCE])
        await w.settle()
    w.act(SOURCE, "page-Y", "resolve")
    await w.settle()
    mirrored_once(w, "page-X")
    marker = marker_for("mig", 3, SOURCE, w.incident(SOURCE, "page-X")["id"])
    made = w.ledger.call(lambda tx: {r.account: (r.external_id, r.marker)
                                     for _, r in tx.members(3) if r.account in TARGETS})
    assert {a: m for a, (_, m) in made.items()} == {a: marker for a in TARGETS}
    old = {a: external_id for a, (external_id, _) in made.items()}
    await replace_ledger(w, restore=saved)
    # And a copy of some other incident whose marker names link 2, page-X's new id.
    await w.engine.clients["vo"].create(NewIncident(
        marker=marker_for("mig", 2, SOURCE, "elsewhere"), title="page-F"))
    return w, old


async def check_old_copies_joined(w: World, old: dict[str, str], *,
                                  reported: bool = False) -> None:
    """Once settled: page-X has exactly its old copies, joined to its new link (2) by their
    origin tag (each join audited as such), none of them reported unpaired (``reported``: each
    was, when seen before its link opened, and only then), and an ack at the source reaches
    them; page-Y's old copies (their
    marker names link 2, their tag page-Y) and page-F's joined nothing, and page-F's copy is
    not acked with page-X."""
    await w.settle()
    mirrored_once(w, "page-X")  # on main: a second copy in every target
    source = w.incident(SOURCE, "page-X")["id"]

    def members(tx: Any) -> dict[int, dict[str, str]]:
        return {k.id or 0: {r.account: r.external_id for _, r in tx.members(k.id or 0)}
                for k in tx.links()}

    links = w.ledger.call(members)
    assert links[2] == {SOURCE: source, **old}, links  # main: only the source, then new copies
    tag_y = origin_tag(SOURCE, w.incident(SOURCE, "page-Y")["id"])
    y_copies = w.ledger.call(lambda tx: pages.unlinked_copies(tx, "mig", [tag_y]))
    assert sorted(c.account for c in y_copies) == sorted(TARGETS)  # stored, in no link
    [foreign] = copies(w, "vo", "page-F")
    assert foreign["id"] not in {m.get("vo") for m in links.values()}
    unpaired = w.ledger.call(lambda tx: tx.audit_entries(kind="unpaired", limit=1000))
    said = sorted((u.account, u.external_id) for u in unpaired if (u.account, u.external_id)
                  in set(old.items()))
    assert said == (sorted(old.items()) if reported else []), said
    joined = w.ledger.call(lambda tx: tx.audit_entries(kind="link", limit=1000))
    assert {(e.account, e.external_id) for e in joined if e.link_id == 2
            and "joined by origin tag" in (e.detail or "")} == set(old.items())
    w.act(SOURCE, "page-X", "acknowledge")
    for _ in range(10):
        await w.cycle()
        if all(copies(w, a, "page-X")[0]["state"] == "acknowledged" for a in ACKABLE):
            break
    for account in ACKABLE:
        assert copies(w, account, "page-X")[0]["state"] == "acknowledged", account
    assert copies(w, "vo", "page-F")[0]["state"] == "triggered"


async def test_a_restore_joins_old_copies_seen_before_their_incident(tmp_path: Path) -> None:
    """(a) The targets' polls see page-X's old copies before the source's poll reads page-X:
    nothing pairs with them yet, so they are reported unpaired at once; the source's poll
    then opens page-X's link with them (each join audited) and owes no create."""
    w, old = await restored_with_another_id(tmp_path)
    try:
        for account in TARGETS:
            assert (await w.engine.poll(account)).ok
        assert (await w.engine.poll(SOURCE)).ok
        owed = w.ledger.call(lambda tx: [(o.account, o.action) for o in tx.outbox_for_link(2)])
        assert ("create" not in {action for _, action in owed}), owed  # main: one per target
        await check_old_copies_joined(w, old, reported=True)
    finally:
        await w.close()


async def test_a_restore_joins_old_copies_seen_after_their_incident(tmp_path: Path) -> None:
    """(b) The source's poll opens page-X's link first and owes a create per target; the
    targets' polls then join the old copies by their origin tag and withdraw those creates."""
    w, old = await restored_with_another_id(tmp_path)
    try:
        assert (await w.engine.poll(SOURCE)).ok
        owed = w.ledger.call(lambda tx: sorted(o.account for o in tx.outbox_for_link(2)
                                               if o.action == "create"))
        assert owed == sorted(TARGETS)
        for account in TARGETS:
            assert (await w.engine.poll(account)).ok
        owed = w.ledger.call(lambda tx: [o.action for o in tx.outbox_for_link(2)])
        assert "create" not in owed  # main: every create still pending
        await check_old_copies_joined(w, old)
    finally:
        await w.close()


async def test_a_restore_creates_nothing_for_a_copy_joined_while_dispatching(
        tmp_path: Path) -> None:
    """(c) Each target's dispatcher has read its create (it is dispatching) when that target's
    poll joins the old copy: right before the create call it finds the link's copy and
    creates nothing."""
    w, old = await restored_with_another_id(tmp_path)
    try:
        assert (await w.engine.poll(SOURCE)).ok
        taken = {}
        for account in TARGETS:
            rows = await w.ledger.run(dispatcher._due, account, utcnow(), 100)
            assert [r.action for r, _ in rows] == ["create"], account
            taken[account] = rows
        for account in TARGETS:
            assert (await w.engine.poll(account)).ok
        for account, rows in taken.items():
            done = DispatchResult(account)
            await w.engine.dispatchers[account]._dispatch_rows(rows, done, False)
            assert done.ok and done.calls == 1, (account, done)  # the marker search alone
        await check_old_copies_joined(w, old)
    finally:
        await w.close()
