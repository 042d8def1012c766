"""Creation markers: the format, reading them back exactly, and what a poll does with a marked
record (joins its link only when the marker names the incident that opened it)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from syncd.config import SyncGroup
from syncd.engine.links import join_created
from syncd.engine.observe import GroupContext, observe
from syncd.ledger import Ledger, Tx, pages
from syncd.model import (
    MARKER_MAX_GROUP,
    Incident,
    Marker,
    State,
    joins_by_tag,
    marker_for,
    names_origin,
    origin_tag,
    parse_marker,
    tag_of,
)
from syncd.vendors import pagerduty, spike
from syncd.vendors.base import Capability

T0 = datetime(2026, 11, 1, tzinfo=UTC)
GRACE = timedelta(seconds=60)


def test_a_marker_names_its_link_and_the_incident_that_opened_it() -> None:
    marker = marker_for("mig", 5, "pd", "Q1")
    assert marker == f"syncd-mig-5-{origin_tag('pd', 'Q1')}"
    assert marker == marker_for("mig", 5, "pd", "Q1")  # deterministic: a retry finds it
    tag = marker.rsplit("-", 1)[1]
    assert len(tag) == 17 and tag[0] == "o" and all(c in "0123456789abcdef" for c in tag[1:])
    # The same link id for another incident (a fresh or restored ledger) is another marker.
    assert marker_for("mig", 5, "pd", "Q2") != marker
    assert marker_for("mig", 5, "pd2", "Q1") != marker
    assert parse_marker({"marker": marker}, "mig") == Marker("mig", 5, tag)
    assert parse_marker({"dedup": marker}, "mig") == Marker("mig", 5, tag)
    assert parse_marker({"marker": marker}, "mig").text == marker  # type: ignore[union-attr]


def test_legacy_markers_still_parse_without_a_tag() -> None:
    legacy = parse_marker({"dedup": "syncd-mig-5"}, "mig")
    assert legacy == Marker("mig", 5, None) and legacy.text == "syncd-mig-5"


def test_markers_with_8_digit_tags_still_parse_and_name_their_incident() -> None:
    """Copies made before tags had 16 digits keep their 8: parsed and stored as they are,
    and checked against an incident by the digits they have."""
    short = f"syncd-mig-5-{origin_tag('pd', 'Q1')[:9]}"
    assert parse_marker({"dedup": short}, "mig") == Marker("mig", 5, short[-9:])
    assert tag_of(short) == short[-9:] and not joins_by_tag(tag_of(short))
    assert joins_by_tag(origin_tag("pd", "Q1"))
    assert names_origin(short[-9:], "pd", "Q1") and not names_origin(short[-9:], "pd", "Q2")
    assert names_origin(origin_tag("pd", "Q1"), "pd", "Q1")


@pytest.mark.parametrize("value", [
    "syncd-mig-5x", "syncd-mig-5-", "syncd-mig-5-ab12cd3", "syncd-mig-5-ab12cd345",
    "syncd-mig-5-AB12CD34", "syncd-mig-5-ab12cd34", "syncd-mig-5-oab12cd3", "xsyncd-mig-5",
    "syncd-mig-5 and more", "syncd-mig-5\n", "syncd-mig-5-o0123456789ab",
    "syncd-mig-5-o0123456789abcdef0", "syncd-mig-5-o0123456789ABCDEF",
    "syncd-other-5", "syncd-mig-", "[syncd:syncd-mig-5]",
])
def test_only_a_whole_marker_of_the_group_is_one(value: str) -> None:
    assert parse_marker({"marker": value, "dedup": value}, "mig") is None


def test_a_marker_is_never_read_as_another_links() -> None:
    assert parse_marker({"dedup": "syncd-g-12"}, "g") == Marker("g", 12, None)
    assert parse_marker({"dedup": "syncd-g-1"}, "g") == Marker("g", 1, None)
    # Group names hold dashes and digits: the group decides how the rest is read.
    mine = marker_for("a-1", 5, "pd", "Q1")
    assert parse_marker({"dedup": mine}, "a-1") == Marker("a-1", 5, mine[-17:])
    assert parse_marker({"dedup": mine}, "a") is None
    assert parse_marker({"dedup": "syncd-a-1-5"}, "a") is None
    # A tag is never digits alone, so no tag reads as a link id of a group named "g-5".
    digits = "syncd-g-5-o28167191"
    assert parse_marker({"dedup": digits}, "g") == Marker("g", 5, "o28167191")
    assert parse_marker({"dedup": digits}, "g-5") is None
    assert parse_marker({"dedup": "syncd-g-5-28167191"}, "g-5") == Marker("g-5", 28167191, None)
    assert parse_marker({"dedup": "syncd-g-5-28167191"}, "g") is None


def test_vendor_marker_readers_take_whole_markers_only() -> None:
    tagged, legacy = marker_for("g", 1, "pd", "Q1"), "syncd-g-1"
    assert pagerduty.MARKER.fullmatch(tagged) and pagerduty.MARKER.fullmatch(legacy)
    assert not pagerduty.MARKER.fullmatch(tagged + "0")
    assert not pagerduty.MARKER.fullmatch("syncd-g-1-xyz")
    title = f"disk full [syncd:{legacy}] [syncd:{tagged}]"  # a copy of a copy: ours is last
    assert spike.MARKER.findall(title)[-1] == tagged
    assert spike.MARKER.findall(f"x [syncd:{tagged}]")[-1] == tagged  # not a prefix of it


def test_mirror_group_names_keep_markers_within_pagerduty_limits() -> None:
    SyncGroup(name="g" * MARKER_MAX_GROUP, accounts=["a", "b"], mode="mirror", source="a")
    with pytest.raises(ValueError, match="255"):
        SyncGroup(name="g" * (MARKER_MAX_GROUP + 1), accounts=["a", "b"], mode="mirror",
                  source="a")
    assert len(marker_for("g" * MARKER_MAX_GROUP, 2**63 - 1, "a", "x")) + len("syncd-") <= 255


# --------------------------------------------------------------------------- polls


def mirror(tmp_path: Path, *names: str, url: str | None = None
           ) -> tuple[Ledger, list[GroupContext]]:
    """A ledger (SQLite, or at ``url``) and mirror groups from ``a`` to ``b`` (``g``, or
    ``names``)."""
    ledger = Ledger.open(url or f"sqlite:///{tmp_path / 'l.db'}")
    caps = Capability.ACK | Capability.RESOLVE | Capability.CREATE
    return ledger, [GroupContext.build(SyncGroup(
        name=name, accounts=["a", "b"], mode="mirror", source="a", mirror_existing=True),
        {"a": caps, "b": caps}) for name in names or ("g",)]


def see(ledger: Ledger, groups: list[GroupContext], account: str, *incs: Incident) -> None:
    """A poll of ``account`` that reads ``incs`` (and succeeds, as the poller records)."""

    def poll(tx: Tx) -> None:
        observe(tx, account, list(incs), groups, T0, grace=GRACE)
        tx.cursor(account).last_success_at = T0

    ledger.call(poll)


def copy(ext: str, marker: str, key: str = "marker") -> Incident:
    return Incident(ext, State.TRIGGERED, "copy", keys={key: marker}, updated_at=T0)


def members(ledger: Ledger) -> dict[int, list[str]]:
    return ledger.call(lambda tx: {k.id: sorted(f"{r.account}:{r.external_id}"
                                                for _, r in tx.members(k.id or 0))
                                   for k in tx.links()})


def test_a_marked_copy_joins_only_the_link_of_the_incident_it_mirrors(tmp_path: Path) -> None:
    ledger, groups = mirror(tmp_path)
    see(ledger, groups, "a", Incident("S1", State.TRIGGERED, "src", updated_at=T0))
    mine = marker_for("g", 1, "a", "S1")
    owed = ledger.call(lambda tx: [(o.account, o.action, o.value)
                                   for o in tx.outbox_for_link(1)])
    assert owed == [("b", "create", mine)]
    opened = ledger.call(lambda tx: tx.audit_entries(kind="link"))
    assert mine in (opened[0].detail or "")
    # A copy another ledger made for another incident that had link id 1 there.
    foreign = marker_for("g", 1, "a", "OLD")
    see(ledger, groups, "b", copy("B-old", foreign))
    assert members(ledger) == {1: ["a:S1"]}
    [entry] = ledger.call(lambda tx: tx.audit_entries(kind="unpaired"))
    assert (entry.account, entry.external_id, entry.new) == ("b", "B-old", foreign)
    assert "syncd link" in (entry.detail or "")
    # Its own copy (here found by its dedup key, as PagerDuty and Splunk On-Call report it).
    see(ledger, groups, "b", copy("B-1", mine, key="dedup"))
    assert members(ledger) == {1: ["a:S1", "b:B-1"]}
    assert ledger.call(lambda tx: tx.record("b", "B-1").marker) == mine  # type: ignore[union-attr]


def test_markers_of_links_this_ledger_lacks_join_nothing(tmp_path: Path) -> None:
    ledger, groups = mirror(tmp_path)
    see(ledger, groups, "b", copy("B-1", marker_for("g", 7, "a", "S7")), copy("B-2", "syncd-g-8"))
    assert members(ledger) == {}
    unpaired = ledger.call(lambda tx: tx.audit_entries(kind="unpaired"))
    assert {u.external_id for u in unpaired} == {"B-1", "B-2"}


def test_a_legacy_marker_joins_unchecked(tmp_path: Path) -> None:
    """Copies made before markers named their origin keep pairing with their links (which is
    all an old ledger can tell; docs/security.md says what that means after a restore)."""
    ledger, groups = mirror(tmp_path)
    see(ledger, groups, "a", Incident("S1", State.TRIGGERED, "src", updated_at=T0))
    see(ledger, groups, "b", copy("B-1", "syncd-g-1"))
    assert members(ledger) == {1: ["a:S1", "b:B-1"]}
    assert not ledger.call(lambda tx: tx.audit_entries(kind="unpaired"))


def unpaired_ids(ledger: Ledger) -> set[str | None]:
    return {u.external_id for u in ledger.call(lambda tx: tx.audit_entries(kind="unpaired"))}


def creates(ledger: Ledger, link_id: int) -> list[str]:
    return ledger.call(lambda tx: [o.account for o in tx.outbox_for_link(link_id)
                                   if o.action == "create"])


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest) -> str | None:
    """None (a SQLite file), or a new PostgreSQL database: the lookups by tag on both."""
    return None if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


def test_a_copy_made_under_another_link_id_joins_by_its_origin_tag(
        tmp_path: Path, ledger_url: str | None) -> None:
    """Another ledger mirrored S1 as its link 9: that copy joins S1's link here, whichever of
    the two this ledger sees first, and the link owes ``b`` no create; a copy whose tag names
    another incident joins nothing, even with the link's own id in its marker."""
    ledger, groups = mirror(tmp_path, url=ledger_url)
    see(ledger, groups, "b", copy("B-1", marker_for("g", 9, "a", "S1")))
    assert members(ledger) == {} and unpaired_ids(ledger) == {"B-1"}  # no S1 here yet
    see(ledger, groups, "a", Incident("S1", State.TRIGGERED, "src", updated_at=T0),
        Incident("S2", State.TRIGGERED, "src", updated_at=T0))
    assert members(ledger) == {1: ["a:S1", "b:B-1"], 2: ["a:S2"]}
    assert creates(ledger, 1) == [] and creates(ledger, 2) == ["b"]
    joined = ledger.call(lambda tx: tx.audit_entries(kind="link"))
    assert any(e.external_id == "B-1" and "origin tag" in (e.detail or "") for e in joined)
    see(ledger, groups, "b", copy("B-2", marker_for("g", 7, "a", "S2")),
        copy("B-3", marker_for("g", 1, "a", "S3")))
    assert members(ledger) == {1: ["a:S1", "b:B-1"], 2: ["a:S2", "b:B-2"]}
    assert creates(ledger, 2) == []  # withdrawn: B-2 is S2's copy
    assert unpaired_ids(ledger) == {"B-1", "B-3"}  # B-3 names link 1 (S1's); no S3 here
    # A second copy of S1 does not take B-1's place; it is reported.
    see(ledger, groups, "b", copy("B-4", marker_for("g", 5, "a", "S1")))
    assert members(ledger)[1] == ["a:S1", "b:B-1"]
    assert unpaired_ids(ledger) == {"B-1", "B-3", "B-4"}
    ledger.dispose()


def test_an_unchanged_stray_copy_is_reported_at_first_sight(tmp_path: Path) -> None:
    """A copy no link here mirrors is reported the first time a poll sees it, though it never
    changes again (so no later poll looks at it): not held back for a source poll."""
    ledger, groups = mirror(tmp_path)
    see(ledger, groups, "b", copy("B-1", marker_for("g", 4, "a", "S4")))
    assert unpaired_ids(ledger) == {"B-1"} and members(ledger) == {}
    entries = ledger.call(lambda tx: tx.audit_entries(kind="unpaired"))
    assert "no link here mirrors" in (entries[0].detail or "")


def test_origin_tags_join_copies_of_their_own_group_only(tmp_path: Path) -> None:
    """Two mirror groups copy S1 from the same account: the tag is the same, the group in
    the marker is not, so each link takes its own group's copy."""
    ledger, groups = mirror(tmp_path, "g1", "g2")
    see(ledger, groups, "a")
    see(ledger, groups, "b", copy("B-2", marker_for("g2", 8, "a", "S1")))
    see(ledger, groups, "a", Incident("S1", State.TRIGGERED, "src", updated_at=T0))
    links = ledger.call(lambda tx: {k.group_name: sorted(
        r.external_id for _, r in tx.members(k.id or 0)) for k in tx.links()})
    assert links == {"g1": ["S1"], "g2": ["B-2", "S1"]}
    assert ledger.call(lambda tx: sorted((o.group_name, o.account) for o in tx.due("b", T0)
                                         if o.action == "create")) == [("g1", "b")]


def test_a_create_confirmed_after_another_copy_joined_is_reported(tmp_path: Path) -> None:
    """The race no ledger read can close: a poll joins another ledger's copy while the
    create is in flight. The link keeps the copy it has; the new one is stored and reported."""
    ledger, groups = mirror(tmp_path)
    see(ledger, groups, "a", Incident("S1", State.TRIGGERED, "src", updated_at=T0))
    see(ledger, groups, "b", copy("B-old", marker_for("g", 9, "a", "S1")))
    mine = marker_for("g", 1, "a", "S1")
    made = Incident("B-new", State.TRIGGERED, "copy", keys={"marker": mine}, updated_at=T0)
    ledger.call(lambda tx: join_created(tx, groups[0], 1, "b", made, mine, T0))
    assert members(ledger) == {1: ["a:S1", "b:B-old"]}
    assert unpaired_ids(ledger) == {"B-new"}
    assert ledger.call(lambda tx: tx.record("b", "B-new").tag) == origin_tag("a", "S1")  # type: ignore[union-attr]


def test_colliding_8_digit_tags_never_join_another_link(tmp_path: Path) -> None:
    """Account a's S1174 and S33770 share their 8-digit tag: a copy of S33770 that an older
    syncd made (resolved, never deleted) neither joins S1174's new link when it opens, nor
    later by its tag, nor withdraws the create S1174 owes b. Its own link id still pairs."""
    short = origin_tag("a", "S33770")[:9]
    assert origin_tag("a", "S1174")[:9] == short  # the collision
    ledger, groups = mirror(tmp_path)
    stray = replace(copy("B-old", f"syncd-g-9-{short}"), state=State.RESOLVED)
    see(ledger, groups, "b", stray)
    see(ledger, groups, "a", Incident("S1174", State.TRIGGERED, "src", updated_at=T0))
    assert members(ledger) == {1: ["a:S1174"]} and creates(ledger, 1) == ["b"]
    see(ledger, groups, "b", copy("B-late", f"syncd-g-7-{short}"))
    assert members(ledger) == {1: ["a:S1174"]} and creates(ledger, 1) == ["b"]
    assert unpaired_ids(ledger) == {"B-old", "B-late"}
    # An 8-digit copy naming link 1 pairs with it, as every such copy did before.
    see(ledger, groups, "b", copy("B-1", f"syncd-g-1-{origin_tag('a', 'S1174')[:9]}"))
    assert members(ledger) == {1: ["a:S1174", "b:B-1"]}


def test_a_tag_claimed_twice_joins_nothing(tmp_path: Path) -> None:
    """Even a 16-digit tag picks no link when two copies in one account carry it, or two
    links claim it: every such copy is reported and the creates stay owed."""
    ledger, groups = mirror(tmp_path)
    see(ledger, groups, "b", copy("B-1", marker_for("g", 8, "a", "S1")),
        copy("B-2", marker_for("g", 9, "a", "S1")))
    see(ledger, groups, "a", Incident("S1", State.TRIGGERED, "src", updated_at=T0))
    assert members(ledger) == {1: ["a:S1"]} and creates(ledger, 1) == ["b"]
    adopted = ledger.call(lambda tx: tx.audit_entries(kind="unpaired"))
    assert sum("2 unlinked copies" in (e.detail or "") for e in adopted) == 2
    # Two links claim S2's tag (as a collision would make them): a copy joins neither.
    see(ledger, groups, "a", Incident("S2", State.TRIGGERED, "src", updated_at=T0))
    ledger.call(lambda tx: pages.new_links(tx, "g", [(origin_tag("a", "S2"), "mirror")], T0))
    see(ledger, groups, "b", copy("B-3", marker_for("g", 9, "a", "S2")))
    assert "b:B-3" not in str(members(ledger)) and creates(ledger, 2) == ["b"]
    assert "B-3" in unpaired_ids(ledger)


def test_a_second_copy_under_the_links_own_marker_is_reported(tmp_path: Path) -> None:
    """syncd was killed after its create went out and before it was confirmed, while a poll
    joined the copy another ledger made: the copy it created, seen later under the link's own
    marker, is reported, not ignored."""
    ledger, groups = mirror(tmp_path)
    see(ledger, groups, "a", Incident("S1", State.TRIGGERED, "src", updated_at=T0))
    see(ledger, groups, "b", copy("B-old", marker_for("g", 9, "a", "S1")))
    assert members(ledger) == {1: ["a:S1", "b:B-old"]} and unpaired_ids(ledger) == set()
    see(ledger, groups, "b", copy("B-new", marker_for("g", 1, "a", "S1")))
    assert members(ledger) == {1: ["a:S1", "b:B-old"]}
    assert unpaired_ids(ledger) == {"B-new"}
