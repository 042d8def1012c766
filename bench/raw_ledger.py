"""The raw limit for bench/ledger_scale.py: syncd's observe path for a correlate group, written
against ``sqlite3`` directly, on a copy of the same ledger file (same schema, same indexes, same
pragmas, one ``BEGIN IMMEDIATE`` transaction per page).

It does the work :func:`syncd.engine.observe.observe` does for a page, with the lookups a
careful hand-written version would make: one IN query per page for the records, their links,
the keys' newest links, those links' members and agreed state, and (for the links that changed)
members with their records, pending outbox rows and agreed values; then the same writes
(new records, updated last-known values, links, members, agreed values, superseded and new
outbox rows, audit rows), and the one history query syncd makes for changed records (parked
actions a change at the vendor may unblock). Decisions come from the same pure
:func:`syncd.engine.reconciler.reconcile`, so the only difference between the two sides is the
data access. Mirror groups and creation markers are not covered (the benchmark uses a correlate
group).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from syncd.engine.reconciler import AgreedValue, Change, Member, Policy, reconcile
from syncd.model import SEVERITY, STATE, Action, Capability, Incident, Severity, State

SAME_OCCURRENCE_SLACK = timedelta(seconds=60)


RANK = {state.value: state.rank for state in State}


def newest(seen: str | None, recorded: str | None) -> str | None:
    if recorded is None or (seen is not None and seen > recorded):
        return seen
    return recorded


def ts(value: datetime | None) -> str | None:
    """SQLAlchemy's SQLite DATETIME text for an aware datetime (naive UTC), the quickest way
    (ISO text in C, less its "+00:00"; ``strftime`` took twice as long)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(" ", "microseconds")[:-6]


def parse(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def marks(n: int) -> str:
    return ",".join("?" * n)


class RawLedger:
    """One sqlite3 connection on a syncd ledger file, and one correlate group over it."""

    def __init__(self, path: str, group: str, accounts: Sequence[str], key_field: str,
                 capabilities: Mapping[str, Capability], policy: Policy) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                       "busy_timeout=5000"):
            self.conn.execute(f"PRAGMA {pragma}")
        self.group, self.accounts, self.key_field = group, set(accounts), key_field
        self.capabilities, self.policy = capabilities, policy

    def close(self) -> None:
        self.conn.close()

    def checkpoint(self) -> None:
        """Copy the WAL back into the database file now (see ``ledger_scale.checkpoint``)."""
        self.conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()

    def scalar(self, sql: str) -> Any:
        return self.conn.execute(sql).fetchone()[0]

    def observe(self, account: str, incidents: Sequence[Incident], now: datetime,
                grace: timedelta) -> dict[str, int]:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            out = self._observe(c, account, incidents, now, grace)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return out

    def _observe(self, c: sqlite3.Connection, account: str, incidents: Sequence[Incident],
                 now: datetime, grace: timedelta) -> dict[str, int]:
        nows = ts(now)
        ids = [i.external_id for i in incidents]
        known = {row[1]: row for row in c.execute(
            "SELECT id, external_id, title, state, severity, keys_json, vendor_updated_at, url,"
            " number, pushed_at, pushed_vendor_at, vendor_created_at, first_seen_at,"
            " vendor_own_updated_at FROM record"
            f" WHERE account = ? AND external_id IN ({marks(len(ids))})", [account, *ids])}
        audits: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        fresh: list[tuple[int, Incident, str]] = []  # (record id, incident, born)
        changed: list[tuple[int, Incident, list[tuple[str, str | None, str]], str]] = []
        states: dict[int, tuple[str, str | None]] = {}
        for inc in incidents:
            row = known.get(inc.external_id)
            sev = inc.severity.value if inc.severity else None
            updated = ts(inc.updated_at)
            keys_json = json.dumps(dict(inc.keys), sort_keys=True)
            if row is None:
                cur = c.execute(
                    "INSERT INTO record (account, external_id, title, state, severity, dedup,"
                    " marker, keys_json, number, url, vendor_created_at, vendor_updated_at,"
                    " vendor_own_updated_at, first_seen_at, observed_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (account, inc.external_id, inc.title, inc.state.value, sev,
                     inc.keys.get("dedup"), inc.keys.get("marker"), keys_json, inc.number,
                     inc.url, ts(inc.created_at), updated, ts(inc.own_updated_at), nows, nows))
                rid = cur.lastrowid or 0
                states[rid] = (inc.state.value, sev)
                fresh.append((rid, inc, ts(inc.created_at) or nows))
                continue
            (rid, _, title, state, severity, old_keys, old_updated, url, number, pushed_at,
             pushed_vendor_at, created, first, old_own) = row
            own = ts(inc.own_updated_at)
            if self._stale(inc, updated, own, state, old_updated, old_own, pushed_at,
                           pushed_vendor_at, now, grace):
                continue
            if own is not None and old_own is not None and own < old_own:
                sev = severity  # a listing behind the record keeps the recorded severity
            updated, own = newest(updated, old_updated), newest(own, old_own)
            changes = []
            if state != inc.state.value:
                changes.append((STATE, state, inc.state.value))
            if sev is not None and severity != sev:
                changes.append((SEVERITY, severity, sev))
            refreshed = (title, old_keys, old_updated, url, number, old_own) != (
                inc.title, keys_json, updated, inc.url, inc.number, own)
            if not changes and not refreshed:
                continue
            if changes:
                state, severity = inc.state.value, sev
            states[rid] = (state, severity)
            updates.append((inc.title, keys_json, updated, own, inc.url,
                            inc.number, inc.keys.get("dedup"), nows, state, severity, rid))
            for name, old, new in changes:
                audits.append(("observed", None, None, account, inc.external_id, name, old,
                               new, account, None))
            if changes:
                changed.append((rid, inc, changes, created or first))
        if updates:
            # syncd's retry_on_change: the latest action per field of each changed record, to
            # unpark or hurry it (one query; the rare rows to retry would then be updated).
            rids = [u[-1] for u in updates]
            latest: dict[tuple[int, str | None], tuple[Any, ...]] = {}
            for row in c.execute(
                    "SELECT id, record_id, action, status, next_attempt_at, attempts FROM outbox"
                    f" WHERE record_id IN ({marks(len(rids))}) ORDER BY id DESC", rids):
                latest.setdefault((row[1], Action(row[2]).field), row)
            c.executemany(
                "UPDATE record SET title = ?, keys_json = ?, vendor_updated_at = ?,"
                " vendor_own_updated_at = ?, url = ?,"
                " number = ?, dedup = coalesce(?, dedup), observed_at = ?, state = ?,"
                " severity = ? WHERE id = ?", updates)
        actions = 0
        if account in self.accounts and (fresh or changed):
            work = self._link(c, account, fresh, changed, now, audits)
            actions = self._reconcile(c, work, states, now, audits)
        if audits:
            c.executemany(
                "INSERT INTO audit (at, kind, group_name, link_id, account, external_id, field,"
                " old, new, cause, detail) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [(nows, *a) for a in audits])
        return {"changed": len(fresh) + len(updates), "actions": actions}

    @staticmethod
    def _stale(inc: Incident, updated: str | None, own: str | None, state: str,
               old_updated: str | None, old_own: str | None, pushed_at: str | None,
               pushed_vendor_at: str | None, now: datetime, grace: timedelta) -> bool:
        """syncd.engine.observe._stale on the stored text timestamps (ISO text sorts as time)."""
        back = inc.state.value != state
        if back and inc.state.rank > RANK[state]:
            return False  # a move forward
        if back and ((own is not None and old_own is not None and own < old_own)
                     or (updated is not None and old_updated is not None
                         and updated < old_updated)):
            return True
        if pushed_at is None:
            return False
        if updated is not None and pushed_vendor_at is not None:
            return updated < pushed_vendor_at
        return back and now - (parse(pushed_at) or now) < grace

    def _link(self, c: sqlite3.Connection, account: str, fresh: list[tuple[int, Incident, str]],
              changed: list[tuple[int, Incident, list[tuple[str, str | None, str]], str]],
              now: datetime, audits: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Which link each record belongs to; returns (link id, changes, only record id)."""
        work: list[tuple[Any, ...]] = []
        linked: dict[int, int] = {}
        if changed:
            rids = [r for r, *_ in changed]
            linked = dict(c.execute(
                "SELECT record_id, link_id FROM link_member WHERE group_name = ?"
                f" AND record_id IN ({marks(len(rids))})", [self.group, *rids]).fetchall())
        seeking = [(rid, inc, born) for rid, inc, born in fresh]
        for rid, inc, changes, born in changed:
            if rid in linked:
                at = inc.updated_at or now
                work.append((linked[rid], [Change(account, rid, n, o, v, at)
                                           for n, o, v in changes], None))
            else:
                seeking.append((rid, inc, born))
        keyed = [(rid, inc, born, inc.keys.get(self.key_field)) for rid, inc, born in seeking]
        keys = list({k for *_, k in keyed if k})
        if not keys:
            return work
        newest = {k: i for i, k in c.execute(
            "SELECT id, key FROM link WHERE group_name = ?"
            f" AND key IN ({marks(len(keys))}) ORDER BY id", [self.group, *keys])}
        candidates = list(newest.values())
        members: dict[int, set[str]] = {i: set() for i in candidates}
        resolved: dict[int, str] = {}
        if candidates:
            for link_id, acc in c.execute(
                    "SELECT link_id, account FROM link_member"
                    f" WHERE link_id IN ({marks(len(candidates))})", candidates):
                members[link_id].add(acc)
            resolved = dict(c.execute(
                "SELECT link_id, changed_at FROM agreed WHERE field = 'state'"
                f" AND value = 'resolved' AND link_id IN ({marks(len(candidates))})",
                candidates).fetchall())
        for rid, inc, born, key in keyed:
            if not key:
                continue
            link = newest.get(key)
            if link is not None and (account in members[link] or (
                    link in resolved and (parse(born) or now)
                    > (parse(resolved[link]) or now) + SAME_OCCURRENCE_SLACK)):
                link = None
            created = link is None
            if link is None:
                link = c.execute(
                    "INSERT INTO link (group_name, key, origin, created_at) VALUES (?,?,?,?)",
                    (self.group, key, "correlate", ts(now))).lastrowid or 0
                newest[key], members[link] = link, set()
                detail = f"new link for key {key!r}"
            else:
                detail = f"correlated by key {key!r}"
            c.execute("INSERT INTO link_member (link_id, record_id, group_name, account)"
                      " VALUES (?,?,?,?)", (link, rid, self.group, account))
            members[link].add(account)
            audits.append(("link", self.group, link, account, inc.external_id, None, None,
                           None, None, detail))
            at = inc.updated_at or now
            joined = [Change(account, rid, STATE, None, inc.state.value, at, joined=True),
                      Change(account, rid, SEVERITY, None,
                             inc.severity.value if inc.severity else None, at, joined=True)]
            work.append((link, joined, rid if created else None))
        return work

    def _reconcile(self, c: sqlite3.Connection, work: list[tuple[Any, ...]],
                   states: dict[int, tuple[str, str | None]], now: datetime,
                   audits: list[tuple[Any, ...]]) -> int:
        nows = ts(now)
        loaded = [link for link, _, only in work if only is None]
        members: dict[int, list[tuple[int, str, str, str | None]]] = {}
        agreed: dict[int, dict[str, AgreedValue]] = {}
        pending: dict[int, list[tuple[int, str]]] = {}
        if loaded:
            for link_id, rid, acc, state, sev in c.execute(
                    "SELECT m.link_id, r.id, r.account, r.state, r.severity FROM link_member m"
                    f" JOIN record r ON r.id = m.record_id WHERE m.link_id IN"
                    f" ({marks(len(loaded))}) ORDER BY m.account", loaded):
                members.setdefault(link_id, []).append((rid, acc, state, sev))
            rids = [m[0] for ms in members.values() for m in ms]
            for oid, rid, action in c.execute(
                    "SELECT id, record_id, action FROM outbox WHERE status = 'pending'"
                    f" AND record_id IN ({marks(len(rids))})", rids):
                pending.setdefault(rid, []).append((oid, action))
            for link_id, name, value, source, changed_at in c.execute(
                    "SELECT link_id, field, value, source_account, changed_at FROM agreed"
                    f" WHERE link_id IN ({marks(len(loaded))})", loaded):
                agreed.setdefault(link_id, {})[name] = AgreedValue(value, source,
                                                                  parse(changed_at) or now)
        new_agreed, set_agreed, cancel, owed = [], [], [], []
        for link, changes, only in work:
            if only is not None:
                rows = [(only, changes[0].account, *states[only])]
            else:
                rows = [(rid, acc, *states.get(rid, (st, sv)))
                        for rid, acc, st, sv in members.get(link, [])]
            fields = {rid: frozenset(f for _, a in pending.get(rid, [])
                                     if (f := Action(a).field)) for rid, *_ in rows}
            ms = [Member(acc, rid, State(st), None if sv is None else Severity(sv),
                         self.capabilities.get(acc, Capability.NONE), fields[rid])
                  for rid, acc, st, sv in rows]
            known = agreed.get(link, {})
            decision = reconcile(known, ms, changes, self.policy, now)
            for name, value in decision.agreed.items():
                (set_agreed if name in known else new_agreed).append(
                    (value.value, value.source, ts(value.changed_at), link, name))
            targets = list(decision.cancel) + [
                (p.record_id, p.action.field) for p in decision.actions]
            for rid, name in targets:
                for oid, a in pending.get(rid, []):
                    if Action(a).field == name:
                        cancel.append(("superseded", oid))
            for p in decision.actions:
                caused = decision.agreed.get(p.action.field or "")
                owed.append((self.group, link, p.record_id, p.account, p.action.value, p.value,
                             str(uuid.uuid4()), nows, p.cause,
                             ts(p.at or (caused.changed_at if caused else now)), nows, nows))
            for note in decision.notes:
                audits.append((note.kind, self.group, link, note.account, None, note.field,
                               note.old, note.new, None, note.detail))
        if set_agreed:
            c.executemany("UPDATE agreed SET value = ?, source_account = ?, changed_at = ?"
                          " WHERE link_id = ? AND field = ?", set_agreed)
        if new_agreed:
            c.executemany("INSERT INTO agreed (value, source_account, changed_at, link_id, field)"
                          " VALUES (?,?,?,?,?)", new_agreed)
        if cancel:
            c.executemany("UPDATE outbox SET status = 'superseded', last_error = ?,"
                          f" updated_at = '{nows}' WHERE id = ?", cancel)
        if owed:
            c.executemany(
                "INSERT INTO outbox (group_name, link_id, record_id, account, action, value,"
                " idempotency_key, status, attempts, next_attempt_at, cause_account, caused_at,"
                " created_at, updated_at) VALUES (?,?,?,?,?,?,?,'pending',0,?,?,?,?,?)", owed)
        return len(owed)
