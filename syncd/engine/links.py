"""The link hub: which link a record belongs to, and the one path from a link's changes to its
agreed values and outbox actions.

Every way a record joins or leaves a link goes through here: a poll page (:func:`link_page`,
from :mod:`.observe`), the confirmation of a mirror create (:func:`join_created`, from the
dispatcher), and an operator's ``syncd link`` / ``unlink`` (:func:`link_records`,
:func:`unlink_record`). Each then calls :func:`reconcile_links` (a page of links) or
:func:`reconcile_link` (one), which asks the pure :mod:`.reconciler` and hands the ledger the
decisions as one batch (:func:`write_decision`). The engine decides; the ledger's modules
(:mod:`syncd.ledger.pages`, :mod:`~syncd.ledger.outbox`, :mod:`~syncd.ledger.records`) write.
Everything runs inside the caller's ledger transaction, so a change and the pushes it owes
commit together.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from syncd import metrics
from syncd.config import Config, SyncGroup
from syncd.engine.reconciler import (
    AgreedValue,
    Change,
    Decision,
    Member,
    Missing,
    Policy,
    reconcile,
)
from syncd.ledger import Tx, outbox, pages, records, utcnow
from syncd.ledger.records import AnyRecord, RecordRow
from syncd.model import (
    SEVERITY,
    STATE,
    Action,
    Capability,
    Incident,
    Marker,
    Severity,
    State,
    joins_by_tag,
    marker_for,
    names_origin,
    origin_tag,
    parse_marker,
)

log = structlog.get_logger(__name__)

SAME_OCCURRENCE_SLACK = timedelta(seconds=60)
"""Clock skew allowed between vendors when deciding whether a *resolved* incident predates a
link's resolve (joining the resolved link cannot resolve a live page)."""

OPEN_OCCURRENCE_SLACK = timedelta(seconds=5)
"""The same for an *open* incident: born no later than this after a link's resolve, it is the
same occurrence, stamped late by cross-vendor clock skew or the vendor's creation delay
(PagerDuty Events API queueing, incident.io alert processing), and joins the resolved link, so
the resolve reaches it. Later, it is the alert firing again and gets a link of its own. Kept
small because joining resolves a live page: a flapping alert re-fires later than this in
practice (a monitor's evaluation interval, typically a minute, plus the vendor's own delay)."""


@dataclass(frozen=True)
class GroupContext:
    """A sync group plus what the engine knows about its accounts."""

    group: SyncGroup
    capabilities: Mapping[str, Capability]
    policy: Policy

    @classmethod
    def build(cls, group: SyncGroup, capabilities: Mapping[str, Capability]) -> GroupContext:
        policy = Policy(
            state_sources=group.fields.sources(STATE),
            severity_sources=group.fields.sources(SEVERITY),
            severity_policy=group.severity_policy,
            regressions=group.regressions,
        )
        return cls(group, {a: capabilities[a] for a in group.accounts}, policy)


@dataclass
class Work:
    """One link to reconcile: its changes, and what is known of it without a lookup.

    ``only``: the link was opened in this transaction for this record alone, so it has no
    other member, no pending action and no agreed value yet (most links of a first poll or an
    alert storm: three reads saved each). ``missing``: accounts a mirror link just opened asks
    for a copy in, ``marker`` the creation marker its copies carry."""

    ctx: GroupContext
    link_id: int
    changes: list[Change]
    only: AnyRecord | None = None
    missing: list[str] = field(default_factory=list)
    marker: str | None = None


@dataclass
class Seen:
    """A record a poll page touched: first seen now (``fresh``), or known and changed
    (``changes``: the synced fields; empty when only descriptive fields did). ``dirty``: its
    row must be written back."""

    rec: RecordRow
    inc: Incident
    fresh: bool
    changes: list[records.FieldChange] = field(default_factory=list)
    dirty: bool = False


# --------------------------------------------------------------------------- deciding


def reconcile_link(tx: Tx, ctx: GroupContext, link_id: int, changes: Sequence[Change],
                   now: datetime, *, only: AnyRecord | None = None,
                   missing: Sequence[str] = ()) -> int:
    """Reconcile one link (see :func:`reconcile_links`)."""
    return reconcile_links(tx, [Work(ctx, link_id, list(changes), only, list(missing))], now)


def reconcile_links(tx: Tx, work: Sequence[Work], now: datetime, *,
                    agreed: Mapping[int, Mapping[str, pages.AgreedRow]] | None = None) -> int:
    """Reconcile links and hand the ledger their decisions as one batch: agreed values,
    outbox actions, cancels, audit. Returns the number of actions owed.

    The links must be distinct, as a page's are (it holds one account's records, and a link has
    one member per account), so deciding them together is deciding them one by one. Their
    members, the members' pending actions and the agreed values are read with one query each
    for all of them (``agreed``: values the caller already read in this transaction)."""
    tx.flush()  # ORM changes of the caller (a member just added) must be visible
    loaded = [w.link_id for w in work if w.only is None]
    members = pages.members_of(tx, loaded)
    batch = outbox.Batch(outbox.pending_of(
        tx, {m.record_id for rows in members.values() for m in rows}))
    known = dict(agreed or {})
    known |= pages.agreed_of(tx, [i for i in loaded if i not in known])
    writes: list[pages.AgreedWrite] = []
    owed = 0
    for w in work:
        rows = members.get(w.link_id, []) if w.only is None else [pages.MemberRow(
            w.only.id or 0, w.only.account, w.only.state, w.only.severity)]
        current = known.get(w.link_id, {}) if w.only is None else {}
        caps = w.ctx.capabilities
        decision = reconcile(
            {name: AgreedValue(*row) for name, row in current.items()},
            [Member(account=m.account, record_id=m.record_id, state=State(m.state),
                    severity=None if m.severity is None else Severity(m.severity),
                    capabilities=caps.get(m.account, Capability.NONE),
                    pending=batch.fields(m.record_id)) for m in rows],
            w.changes, w.ctx.policy, now,
            missing=[Missing(a, caps.get(a, Capability.NONE)) for a in w.missing])
        write_decision(tx, w.ctx, w.link_id, decision, now, current, batch, writes,
                       marker=w.marker)
        owed += len(decision.actions)
    pages.put_agreed(tx, writes)
    batch.write(tx, now)
    return owed


def write_decision(tx: Tx, ctx: GroupContext, link_id: int, decision: Decision,
                   now: datetime, current: Mapping[str, pages.AgreedRow], batch: outbox.Batch,
                   writes: list[pages.AgreedWrite], *, marker: str | None = None) -> None:
    """Turn what the reconciler decided into ledger writes: agreed values into ``writes``,
    cancels and actions into ``batch`` (written together by the caller), notes into the
    audit log. ``marker``: what a mirror link's creates carry (see :func:`link_page`)."""
    group = ctx.group.name
    for name, value in decision.agreed.items():
        writes.append(pages.AgreedWrite(link_id, name, value.value, value.source,
                                        value.changed_at, exists=name in current))
    for record_id, name in decision.cancel:
        batch.supersede(record_id, name, "member already has the agreed value")
    for planned in decision.actions:
        value, key = planned.value, str(uuid.uuid4())
        if planned.action is Action.CREATE:
            # Deterministic, so the dispatcher finds an incident it created before a crash.
            assert marker is not None, "creates are owed only by a mirror link just opened"
            value = marker
            key = f"{value}/{planned.account}"
        caused = decision.agreed.get(planned.action.field or "")
        batch.owe(
            group=group, link_id=link_id, record_id=planned.record_id,
            account=planned.account, action=planned.action, value=value, key=key,
            cause=planned.cause,
            caused_at=planned.at or (caused.changed_at if caused else now), now=now,
        )
    for note in decision.notes:
        if note.kind == "conflict":
            metrics.CONFLICTS.labels(group, note.field).inc()
        tx.audit(note.kind, group_name=group, link_id=link_id, account=note.account,
                 field=note.field, old=note.old, new=note.new, detail=note.detail, at=now)


def joined_changes(rec: AnyRecord | pages.CopyRow, at: datetime) -> list[Change]:
    """A record entering a link brings its state and severity as changes."""
    return [Change(rec.account, rec.id or 0, name, None, value, at, joined=True)
            for name, value in ((STATE, rec.state), (SEVERITY, rec.severity))]


# --------------------------------------------------------------------------- polls


@dataclass
class _Open:
    """A link as a page's linking sees it; ``id`` None until a link opened now is written."""

    id: int | None
    key: str | None
    origin: str
    accounts: set[str]
    resolved_at: datetime | None = None  # when its agreed state became resolved


@dataclass
class _Join:
    seen: Seen
    link: _Open
    detail: str | None  # None: a mirror link's, which names the link's marker
    created: bool = False
    missing: list[str] = field(default_factory=list)
    copies: list[pages.CopyRow] = field(default_factory=list)  # joining a new mirror link
    by_tag: bool = False  # a copy joining by its origin tag: its link owes it no create


def link_page(tx: Tx, ctx: GroupContext, seen: Sequence[Seen], now: datetime,
              agreed: dict[int, dict[str, pages.AgreedRow]]) -> tuple[list[Work], int]:
    """The links a page's records belong to in ``ctx``'s group, opening or joining links as
    the group's rules say. Returns the links to reconcile and how many records joined one.

    One query finds the links of the records already known; for the others, one query finds
    each correlation key's newest link, one its members' accounts and one its agreed values
    (kept in ``agreed`` for the reconcile); the new links, members and audit entries are
    written with one statement each. Records are placed in page order, each seeing the links
    the earlier ones opened or joined."""
    group = ctx.group
    items = [s for s in seen if s.rec.account in group.accounts]
    if not items:
        return [], 0
    linked = pages.link_ids_of(tx, group.name, (s.rec.id for s in items if not s.fresh))
    work: list[Work] = []
    seeking: list[Seen] = []
    for s in items:
        link_id = linked.get(s.rec.id)
        if link_id is None:
            seeking.append(s)
        elif s.changes:
            at = s.inc.updated_at or now
            work.append(Work(ctx, link_id, [Change(s.rec.account, s.rec.id, n, o, v, at)
                                            for n, o, v in s.changes]))
    if not seeking:
        return work, 0
    opens: dict[int, _Open] = {}
    by_key: dict[str, _Open] = {}
    if group.mode == "correlate":
        keys = {k for s in seeking if (k := s.inc.keys.get(group.key_for(s.rec.account)))}
        records.born(tx, [s.rec for s in seeking if not s.fresh])
        newest = pages.newest_for_keys(tx, group.name, keys)
        _load_opens(tx, opens, newest.values(), agreed)
        by_key = {key: opens[link_id] for key, link_id in newest.items()}
    joins = [j for s in seeking if (j := _place(tx, ctx, s, opens, by_key, now))]
    fresh_links = [j.link for j in joins if j.created]
    for link, link_id in zip(fresh_links, pages.new_links(
            tx, group.name, [(o.key, o.origin) for o in fresh_links], now), strict=True):
        link.id = link_id
    if group.mode == "mirror":
        _adopt_copies(tx, group, [j for j in joins if j.created], now)
    pages.add_members(tx, group.name, [
        *((j.link.id or 0, j.seen.rec.id, j.seen.rec.account) for j in joins),
        *((j.link.id or 0, c.id, c.account) for j in joins for c in j.copies)])
    for j in joins:
        rec, link_id = j.seen.rec, j.link.id or 0
        marker = None if j.detail else marker_for(group.name, link_id, rec.account,
                                                  rec.external_id)
        tx.audit("link", group_name=group.name, link_id=link_id, account=rec.account,
                 external_id=rec.external_id, at=now, detail=j.detail or (
                     f"mirror link; creating in other accounts with marker {marker}"
                     if j.missing else "mirror link; every copy exists already"))
        if j.by_tag:
            outbox.withdraw_create(tx, link_id, rec.account,
                                   "a copy joined the link by its origin tag", now)
        changes = joined_changes(rec, j.seen.inc.updated_at or now)
        for c in j.copies:
            tx.audit("link", group_name=group.name, link_id=link_id, account=c.account,
                     external_id=c.external_id, at=now, detail=_by_tag(c.tag, c.marker))
            changes += joined_changes(c, c.updated_at or now)
        work.append(Work(ctx, link_id, changes, only=rec if j.created and not j.copies
                         else None, missing=j.missing, marker=marker))
    return work, len(joins)


def _by_tag(tag: str, marker: str) -> str:
    return (f"joined by origin tag {tag}: a copy of the incident this link mirrors, made by "
            f"another ledger (its marker {marker} names that ledger's link id)")


def _adopt_copies(tx: Tx, group: SyncGroup, joins: Sequence[_Join], now: datetime) -> None:
    """Copies that already exist of the incidents whose mirror links were just opened: made
    by another ledger (the future of the backup this one was restored from, or one replaced
    by a fresh one), which gave the link another id. Their 16-digit origin tag names the
    incident, so such a copy joins its link, and that account is owed no create: otherwise
    its on-call would be paged twice for one incident. Only when the tag is unambiguous: one
    link of the group claims it and one unlinked copy in that account carries it, and the
    link has no member there; otherwise nothing joins and the copies are reported
    ``unpaired`` (8-digit tags never join here: :func:`~syncd.model.joins_by_tag`). One query
    for the page's copies, one for the links claiming their tags."""
    by_tag = {j.link.key: j for j in joins if j.link.key and joins_by_tag(j.link.key)}
    found: dict[tuple[str, str], list[tuple[pages.CopyRow, Marker]]] = {}
    for copy, marked in _marked_copies(tx, group, by_tag):
        found.setdefault((copy.tag, copy.account), []).append((copy, marked))
    claims = pages.links_for_keys(tx, group.name, {tag for tag, _ in found})
    for (tag, account), copies in found.items():
        j = by_tag[tag]
        why = _ambiguous(len(claims.get(tag, ())), len(copies))
        if why is None and account not in j.missing:
            why = f"link {j.link.id}, which mirrors its incident, has a member in this account"
        if why is not None:
            for copy, marked in copies:
                _unpaired(tx, group.name, copy, marked, now, f"{_ELSEWHERE}, and {why}")
            continue
        j.missing.remove(account)
        j.link.accounts.add(account)
        j.copies.append(copies[0][0])


def _marked_copies(tx: Tx, group: SyncGroup, tags: Iterable[str]
                   ) -> list[tuple[pages.CopyRow, Marker]]:
    """The unlinked copies carrying one of ``tags`` in a marker of ``group`` (not another
    group's marker with the same tag), in the group's accounts, oldest first, each with its
    marker. One query."""
    out = []
    for copy in pages.unlinked_copies(tx, group.name, tags):
        marked = parse_marker({"marker": copy.marker}, group.name)
        if marked is not None and marked.tag == copy.tag and copy.account in group.accounts:
            out.append((copy, marked))
    return out


def _ambiguous(links: int, copies: int) -> str | None:
    """Why an origin tag cannot pick a copy's link (several links or copies claim it)."""
    if links > 1:
        return f"{links} links here claim its origin tag"
    if copies > 1:
        return f"{copies} unlinked copies in this account carry its origin tag"
    return None


def _load_opens(tx: Tx, opens: dict[int, _Open], link_ids: Iterable[int],
                agreed: dict[int, dict[str, pages.AgreedRow]]) -> None:
    ids = [i for i in link_ids if i not in opens]
    accounts = pages.member_accounts(tx, ids)
    agreed |= pages.agreed_of(tx, [i for i in ids if i not in agreed])
    for i in ids:
        state = agreed[i].get(STATE)
        resolved = state is not None and state[0] == State.RESOLVED.value
        opens[i] = _Open(i, None, "", accounts[i], state[2] if resolved and state else None)


def _place(tx: Tx, ctx: GroupContext, s: Seen, opens: dict[int, _Open],
           by_key: dict[str, _Open], now: datetime) -> _Join | None:
    """Where one record goes in the group, or None when it belongs to no link."""
    group, rec, inc = ctx.group, s.rec, s.inc
    # A marker we wrote into an incident we created wins over every other rule.
    marked = parse_marker(inc.keys, group.name)
    found = _marked_link(tx, ctx, s, marked, opens, now) if marked else None
    if marked and found is not None and rec.account in found.accounts and (
            group.mode == "mirror"):
        # A link holds one copy per account: a second one (made while a poll joined another,
        # by its origin tag, or by another ledger) is reported, never dropped in silence.
        _unpaired(tx, group.name, rec, marked, now, f"link {found.id}, which mirrors the "
                  "incident it names, has another copy in this account; resolve the one not "
                  "wanted")
        return None  # a copy: never a link of its own, whatever account it is in
    if marked and found is not None and rec.account not in found.accounts:
        if rec.marker != marked.text:
            records.set_marker(rec, marked.text)
            s.dirty = True
        found.accounts.add(rec.account)
        if found.id != marked.link_id:
            return _Join(s, found, _by_tag(marked.tag or "", marked.text), by_tag=True)
        return _Join(s, found, "joined by creation marker")
    if group.mode == "correlate":
        key = inc.keys.get(group.key_for(rec.account))
        if not key:
            return None
        link = by_key.get(key)
        born = rec.vendor_created_at or rec.first_seen_at or now
        slack = SAME_OCCURRENCE_SLACK if inc.state == State.RESOLVED else OPEN_OCCURRENCE_SLACK
        if link is not None and rec.account not in link.accounts and (
                link.resolved_at is None or born <= link.resolved_at + slack):
            # A resolved link takes a record only of the same occurrence; an alert that fires
            # again after everything was resolved is a new incident and gets a new link, even
            # in an account the first occurrence never reached (its page must not be resolved
            # by the link of the one before).
            link.accounts.add(rec.account)
            return _Join(s, link, f"correlated by key {key!r}")
        link = by_key[key] = _Open(None, key, "correlate", {rec.account})
        return _Join(s, link, f"new link for key {key!r}", created=True)
    # mirror: only a record seen for the first time opens a link, so an incident that existed
    # before syncd started is never copied later just because it changed (unless
    # mirror_existing); resolved incidents are never copied.
    if rec.account != group.source or not s.fresh or inc.state == State.RESOLVED:
        return None
    if not group.mirror_existing and tx.cursor(rec.account).last_success_at is None:
        return None
    return _Join(s, _Open(None, origin_tag(rec.account, rec.external_id), "mirror",
                          {rec.account}), None, created=True,
                 missing=[a for a in group.accounts if a != rec.account])


def _marked_link(tx: Tx, ctx: GroupContext, s: Seen, marked: Marker, opens: dict[int, _Open],
                 now: datetime) -> _Open | None:
    """The link a marked record was created for: the marker's link, if this ledger has it in
    the group and (a tagged marker) it mirrors the incident the tag names; else (a mirror
    group, a 16-digit tag) the one link whose key is that tag, which mirrors the same incident
    under another id.

    A copy made by another ledger (one replaced by a fresh one, or the future of a restored
    backup) names a link id this one may have handed to another incident: it joins only the
    link of the incident its tag names, never the one its link id names here, since acking one
    incident must never ack another; and by its tag alone only when that is unambiguous (one
    link claims it, no other unlinked copy in this account carries it) and 16 digits long (an
    8-digit tag pairs only with its own link id, as it always did). A copy that pairs with no
    link stays unlinked, said at once (audit and log); a link opened later for its incident
    adopts it then (:func:`_adopt_copies`). A legacy marker (no tag) cannot be checked and
    joins as it always did."""
    group = ctx.group
    found = opens.get(marked.link_id)
    if found is None:
        row = tx.link(marked.link_id)
        if row is not None and row.group_name == group.name:
            _load_opens(tx, opens, [marked.link_id], {})
            found = opens[marked.link_id]
    if found is not None and marked.tag is not None:
        origin = pages.member_in(tx, marked.link_id, group.source) if group.source else None
        if origin is None or not names_origin(marked.tag, group.source or "", origin):
            found = None
    if found is not None or not joins_by_tag(marked.tag) or group.mode != "mirror":
        if found is None:
            _unpaired(tx, group.name, s.rec, marked, now, f"{_ELSEWHERE}, and here link "
                      f"{marked.link_id} mirrors another incident or none")
        return found
    tag = marked.tag or ""
    claims = pages.links_for_keys(tx, group.name, [tag]).get(tag, [])
    if not claims:
        _unpaired(tx, group.name, s.rec, marked, now, f"{_ELSEWHERE}, and no link here "
                  "mirrors the incident its origin tag names (yet: a link opened for it later "
                  "adopts it)")
        return None
    others = [c for c, _ in _marked_copies(tx, group, [tag])
              if c.account == s.rec.account and c.id != s.rec.id]
    why = _ambiguous(len(claims), len(others) + 1)
    if why is not None:
        _unpaired(tx, group.name, s.rec, marked, now, f"{_ELSEWHERE}, and {why}")
        return None
    _load_opens(tx, opens, claims, {})
    return opens[claims[0]]


_ELSEWHERE = ("it was made by another ledger (a fresh one, or after the backup this one was "
              "restored from)")


def _unpaired(tx: Tx, group: str, rec: AnyRecord | pages.CopyRow, marked: Marker,
              now: datetime, why: str) -> None:
    """Say, once per sighting, that a copy stays out of every link, and why."""
    detail = (f"the copy carrying marker {marked.text} is not paired: {why}; pair it with "
              "`syncd link` if it belongs to a link")
    tx.audit("unpaired", group_name=group, account=rec.account,
             external_id=rec.external_id, new=marked.text, detail=detail, at=now)
    log.warning("mirror.unpaired", group=group, account=rec.account,
                external_id=rec.external_id, marker=marked.text)


# --------------------------------------------------------------------------- mirror creates


def join_created(tx: Tx, ctx: GroupContext, link_id: int, account: str, incident: Incident,
                 marker: str, now: datetime) -> AnyRecord:
    """A mirror create was confirmed: store the new record (a poll may have stored it first)
    and let it join its link like any newcomer.

    Unless a poll joined another copy to the link in this account while the create was in
    flight (one made by another ledger, found by its origin tag): a link holds one record per
    account, so this second copy stays unlinked and is reported ``unpaired``."""
    link = tx.link(link_id)
    assert link is not None
    record = tx.record(account, incident.external_id)
    if record is None:
        record = records.add(tx, account, incident, now, marker=marker, pushed=True)
    records.set_marker(record, marker)
    if tx.link_of(ctx.group.name, record.id or 0) is not None:
        return record
    tx.flush()
    other = pages.member_in(tx, link_id, account)
    if other is not None:
        marked = parse_marker({"marker": marker}, ctx.group.name)
        assert marked is not None
        _unpaired(tx, ctx.group.name, record, marked, now, f"syncd created it while a poll "
                  f"joined another copy ({other}) to link {link_id} by its origin tag; "
                  "resolve the one not wanted")
        return record
    tx.add_member(link, record)
    reconcile_link(tx, ctx, link_id, joined_changes(record, incident.updated_at or now), now)
    return record


# --------------------------------------------------------------------------- operators


def group_for(cfg: Config, capabilities: Mapping[str, Capability], accounts: Sequence[str],
              name: str | None) -> GroupContext:
    """The one sync group holding every account (``name`` to choose); ValueError otherwise."""
    candidates = [g for g in cfg.sync if (name is None or g.name == name)
                  and all(a in g.accounts for a in accounts)]
    if not candidates:
        raise ValueError(f"no sync group contains all of {', '.join(accounts)}"
                         + (f" named {name!r}" if name else ""))
    if len(candidates) > 1:
        raise ValueError("several sync groups fit; choose one with --group")
    return GroupContext.build(candidates[0], capabilities)


def link_records(tx: Tx, cfg: Config, capabilities: Mapping[str, Capability],
                 refs: Sequence[tuple[str, str]], group: str | None) -> int:
    """``syncd link``: put polled records into one new link (out of their old ones); they merge
    as newcomers do. Returns the new link's id."""
    accounts = [a for a, _ in refs]
    if len(set(accounts)) != len(accounts):
        raise ValueError("a link holds one record per account")
    ctx = group_for(cfg, capabilities, accounts, group)
    found = []
    for account, external_id in refs:
        record = tx.record(account, external_id)
        if record is None:
            raise ValueError(f"{account}:{external_id} is not in the ledger (poll it first)")
        found.append(record)
    now = utcnow()
    for record in found:
        old = tx.link_of(ctx.group.name, record.id or 0)
        if old is not None:
            tx.remove_member(old.id or 0, record.id or 0)
    link = tx.new_link(ctx.group.name, None, "manual")
    changes = []
    for record in found:
        tx.add_member(link, record)
        changes += joined_changes(record, record.vendor_updated_at or now)
    reconcile_link(tx, ctx, link.id or 0, changes, now)
    tx.audit("link", group_name=ctx.group.name, link_id=link.id,
             detail="manual link: " + ", ".join(f"{a}:{i}" for a, i in refs), at=now)
    return link.id or 0


def unlink_record(tx: Tx, ref: tuple[str, str], group: str | None) -> int:
    """``syncd unlink``: take a record out of its links. It gets a link of its own in each of
    those groups, so the next poll does not correlate it straight back."""
    account, external_id = ref
    record = tx.record(account, external_id)
    if record is None:
        raise ValueError(f"{account}:{external_id} is not in the ledger")
    count = 0
    now = utcnow()
    for member, link in tx.links_of_record(record.id or 0):
        if group and link.group_name != group:
            continue
        tx.remove_member(member.link_id, record.id or 0)
        solo = tx.new_link(link.group_name, None, "manual")
        tx.add_member(solo, record)
        for name, value in ((STATE, record.state), (SEVERITY, record.severity)):
            tx.set_agreed(solo.id or 0, name, value, account, now)
        tx.audit("unlink", group_name=link.group_name, link_id=link.id, account=account,
                 external_id=external_id, detail=f"now alone in link {solo.id}", at=now)
        count += 1
    return count
