"""Turning a page of observations into ledger state: last known values, then the links they
touch (:mod:`.links` decides and writes the agreed values and outbox actions).

These functions run inside one ledger transaction (see :meth:`syncd.ledger.Ledger.run`), so an
observation, the agreed values it moves and the outbox actions it causes commit together or not
at all: a crash can lose neither the change nor the push it owes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from syncd.engine.links import GroupContext, Seen, Work, link_page, reconcile_links
from syncd.ledger import Tx, outbox, pages, records
from syncd.model import Incident, Severity, State

__all__ = ["GroupContext", "ObserveResult", "observe"]


@dataclass
class ObserveResult:
    changed: int = 0
    stale: int = 0
    actions: int = 0
    linked: int = 0


_RANK = {state.value: state.rank for state in State}  # by the ledger's state strings


def observe(
    tx: Tx,
    account: str,
    incidents: Sequence[Incident],
    groups: Sequence[GroupContext],
    now: datetime,
    *,
    grace: timedelta,
) -> ObserveResult:
    """Record one page of observations of ``account`` and reconcile every link they touch.

    A page at a time: one query reads the page's records, one statement stores the new ones and
    one the changed ones; :func:`.links.link_page` places them in links and
    :func:`.links.reconcile_links` decides every touched link and writes the decisions as one
    batch. (A page that lists an incident twice is taken in parts, each listing it once, so the
    later copy is an observation of the record the earlier one stored.)"""
    result = ObserveResult()
    for part in _parts(incidents):
        _observe(tx, account, part, groups, now, grace, result)
    return result


def _parts(incidents: Sequence[Incident]) -> Iterator[list[Incident]]:
    part: list[Incident] = []
    ids: set[str] = set()
    for inc in incidents:
        if inc.external_id in ids:
            yield part
            part, ids = [], set()
        part.append(inc)
        ids.add(inc.external_id)
    if part:
        yield part


def _observe(tx: Tx, account: str, incidents: Sequence[Incident],
             groups: Sequence[GroupContext], now: datetime, grace: timedelta,
             result: ObserveResult) -> None:
    tx.flush()  # the page's reads are Core: earlier ORM changes must be visible to them
    known = records.load(tx, account, (inc.external_id for inc in incidents))
    order: list[Seen | Incident] = []
    for inc in incidents:
        rec = known.get(inc.external_id)
        if rec is None:
            order.append(inc)
            continue
        if inc.ack_sticky:
            inc = _no_unack(rec, inc)
        if _stale(rec, inc, now, grace):
            result.stale += 1
            continue
        inc = _behind(rec, inc)
        found = records.observe(rec, inc, now)
        if found is None:
            continue
        rec, changes = found
        for name, old, new in changes:
            tx.audit("observed", account=account, external_id=rec.external_id,
                     field=name, old=old, new=new, cause=account, at=now)
        order.append(Seen(rec, inc, fresh=False, changes=changes, dirty=True))
    # What the vendor refused or postponed may work now (issue 20.5: an escalation that
    # appeared late makes a parked incident.io ack possible).
    outbox.retry_on_change(tx, (x.rec.id for x in order if isinstance(x, Seen)), now)
    new = [x for x in order if isinstance(x, Incident)]
    stored = iter(records.add_page(tx, account, new, now))
    seen = [x if isinstance(x, Seen) else Seen(next(stored), x, fresh=True) for x in order]
    result.changed += len(seen)
    if not seen:
        return
    work: list[Work] = []
    agreed: dict[int, dict[str, pages.AgreedRow]] = {}
    for ctx in groups:
        found, joined = link_page(tx, ctx, seen, now, agreed)
        work += found
        result.linked += joined
    records.save(tx, [s.rec for s in seen if s.dirty])  # before members are read back
    if work:
        result.actions += reconcile_links(tx, work, now, agreed=agreed)


def _stale(rec: records.Known, inc: Incident, now: datetime, grace: timedelta) -> bool:
    """An observation that shows the record as it was before something already taken in (list
    lag): it says nothing new, and taken for a change it would undo that change.

    A move forward (a later lifecycle state than the recorded one) is never stale, whatever its
    timestamp: one record's vendor timestamps need not be monotonic (incident.io folds its
    escalations' times into an *open* record's updated_at only, read from a second list that
    can run ahead of the incidents list; the client leaves out the escalations a resolve
    ends, ``syncd.vendors.incidentio.ESC_ENDED_BY_RESOLVE``, but nothing documented orders an
    ack's escalation time against the incident's own). And a dropped move forward is lost for
    good: the feed cursors have passed it, a full resync lists open incidents only (PagerDuty,
    incident.io, Spike's open lists) or shows it again with the same timestamps (Splunk
    On-Call's live list), which this check would drop again.

    Dropped are:

    - a step back (an earlier state than the recorded one) older, by EITHER vendor time,
      than the newest observation already taken in: the incident's own
      (``Incident.own_updated_at`` against ``vendor_own_updated_at``) or the
      escalation-folded one (``updated_at`` against ``vendor_updated_at``); a list lagging
      behind the feed, a lagging replica's page. Taken, it would undo a change in the ledger
      (a resolve looking reopened, an ack looking un-acked), cancel the pushes owed for it
      and, with ``regressions = follow``, reopen the other members. A real step back bumps
      both (incident.io has no un-ack and a reopen always bumps the incident's or alert's
      own ``updated_at``, hence its folded time; the other vendors' two times are equal), so
      older by either one is lag: by the own time, a lagging open listing carrying a later
      escalation's time (an alert's resolve leaves its escalation paging when its route
      does not ``auto_cancel_escalations``, notes 7: the person's ack comes after the
      resolve); by the folded time, a fresh incidents list with a lagging escalations read
      (an ack that bumped no own time, not in it yet, reads as triggered). Older by either
      time is lag, but lag need not be older by either: once the own time moves past an
      ack (a person's severity edit, our confirmed severity push) a lagging escalations read
      shows the record triggered with own time = folded time = the edit's. incident.io's "no
      un-ack" is therefore explicit, not inferred from times: :func:`_no_unack`, before this
      check, takes such a listing as acknowledged (after it, a step back within ``grace`` of
      our ack push was dropped whole, a person's severity edit in it too). A record upgraded
      by ledger script 8 has no own time until its next listing: for that one listing only
      the folded time guards (a known limit, docs/vendors/incidentio.md);
    - after a confirmed push, a step back or a same-state observation older than the vendor's
      timestamp on the confirmation: the record as it was before our push (its old severity
      would read as a person undoing our severity push);
    - after a confirmed push where the confirmation or the observation has no vendor time
      (an incident.io ack push returns no incident; a vendor without timestamps), a step
      back within ``grace`` of the confirmation, by our clock (later, it is a person's move).
    """
    # One rank comparison, none for the common same-state listing: this runs for every
    # observation of a known record (a full resync's unchanged pages, bench/ledger_scale.py).
    back = inc.state.value != rec.state
    if back and inc.state.rank > _RANK[rec.state]:
        return False  # a move forward
    if back and (_older(inc.own_updated_at, rec.vendor_own_updated_at)
                 or _older(inc.updated_at, rec.vendor_updated_at)):
        return True
    if rec.pushed_at is None:
        return False
    if inc.updated_at is not None and rec.pushed_vendor_at is not None:
        return inc.updated_at < rec.pushed_vendor_at
    return back and now - rec.pushed_at < grace


def _no_unack(rec: records.Known, inc: Incident) -> Incident:
    """A triggered listing of an acknowledged record from a vendor with no un-ack
    (``Incident.ack_sticky``) is taken as acknowledged: the ack is simply not in the read yet.

    incident.io has no un-ack (vendor notes 6, "There is no un-ack"; 9.2, capability ``unack``
    no): an ack lives on an escalation, an acked escalation stays acked or counts by its
    ``acked`` event after it ends, so an acknowledged record reads triggered again only when
    the escalations read lags behind the incidents (or alerts) list. :func:`_stale` catches
    that by the folded time while the own time has not moved, but once it has moved past the
    ack (a person's severity or title edit, our confirmed severity push) the listing is older
    by neither time. Not dropped: the rest of it is news (a person's severity edit is taken)
    and the ack owed to the other members stays owed. Not for ``ack_from_live`` incident.io
    accounts: there ``live`` is the ack and a person pausing a live incident reads triggered
    again (a real un-ack, in the incidents list itself)."""
    if inc.ack_sticky and inc.state is State.TRIGGERED and rec.state == State.ACKNOWLEDGED.value:
        return replace(inc, state=State.ACKNOWLEDGED)
    return inc


def _older(seen: datetime | None, newest: datetime | None) -> bool:
    """Whether a vendor time is older than the newest one taken in (unknown: not older)."""
    return seen is not None and newest is not None and seen < newest


def _behind(rec: records.Known, inc: Incident) -> Incident:
    """An observation taken in although its own vendor time is older than the newest already
    taken in (``vendor_own_updated_at``): a move forward, never stale (:func:`_stale`), or a
    same-state listing whose escalation-folded time moved. Its state and folded time are news
    (incident.io: an ack on an escalation, read fresh), its severity is the record as it was
    (the incidents list lagging): a record's own vendor time never goes back, so a listing
    with an older one shows the record from before something already taken in, and a severity
    change made since would come with a newer (or, where the vendor does not bump the time for
    it, the same) own time. Taken whole, the old severity read as a person undoing the newer
    one and went to the other members (or superseded the push of the newer one they were
    owed)."""
    own, newest = inc.own_updated_at, rec.vendor_own_updated_at
    if own is None or newest is None or own >= newest:
        return inc
    return replace(inc, severity=Severity(rec.severity) if rec.severity else None)
