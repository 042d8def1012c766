"""Operator views over the ledger (``syncd status``, ``links``, ``audit``, ``/status``) and the
manual link/unlink operations. Each function takes a :class:`~syncd.ledger.Tx` so it runs in one
read (or write) transaction; none calls a vendor.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from syncd import vendors
from syncd.config import Config
from syncd.engine.observe import GroupContext, apply_changes
from syncd.engine.reconciler import SEVERITY, STATE, Change
from syncd.ledger import Tx, utcnow
from syncd.ledger.store import _safe
from syncd.vendors.base import Action, Capability


def capabilities(cfg: Config) -> dict[str, Capability]:
    """Per account, from its settings (they can change them, e.g. incident.io's account
    model); no client is built."""
    return {name: vendors.load(a.vendor).capabilities_for(a) for name, a in cfg.accounts.items()}


def gaps(cfg: Config) -> list[str]:
    """What each group cannot sync because a member's vendor lacks the capability."""
    caps = capabilities(cfg)
    found = []
    for group in cfg.sync:
        for account in group.accounts:
            missing = [
                verb for a, verb in ((Action.ACKNOWLEDGE, "acknowledge"),
                                     (Action.RESOLVE, "resolve"),
                                     (Action.SET_SEVERITY, "set severity"))
                if not caps[account] & a.capability
            ]
            if missing:
                vendor = cfg.accounts[account].vendor
                found.append(f"{group.name}: {account} ({vendor}) cannot {' or '.join(missing)};"
                             " the others' changes stop there, its own still flow out")
    return found


def status(tx: Tx, cfg: Config) -> dict[str, Any]:
    cursors = {c.account: c for c in tx.cursors()}
    accounts = []
    for name, settings in cfg.accounts.items():
        c = cursors.get(name)
        accounts.append({
            "name": name,
            "vendor": settings.vendor,
            "last_poll_at": c.last_poll_at if c else None,
            "last_success_at": c.last_success_at if c else None,
            "last_full_at": c.last_full_at if c else None,
            "failures": c.failures if c else 0,
            "last_error": c.last_error if c else None,
        })
    depth = tx.outbox_depth()
    oldest = tx.oldest_pending()
    return {
        "ledger": _safe(cfg.ledger_url),
        "accounts": accounts,
        "counts": tx.counts(),
        "outbox": {k: depth.get(k, 0) for k in ("pending", "done", "parked", "superseded")},
        "oldest_pending_age_s": (utcnow() - oldest).total_seconds() if oldest else None,
        "parked": [
            {"id": r.id, "account": r.account, "action": r.action, "value": r.value,
             "error": r.last_error, "link": r.link_id}
            for r in tx.parked()
        ],
        "gaps": gaps(cfg),
        "oncall": oncall(tx, cfg),
    }


def oncall(tx: Tx, cfg: Config) -> list[str]:
    """One line per on-call mapping for ``syncd status``, from the stored polls."""
    from syncd.engine.oncall import evaluate

    lines = []
    for d in evaluate(tx, cfg):
        if d.missing:
            state = f"not polled yet ({', '.join(d.missing)})"
        elif not d.windows:
            state = "agree"
        else:
            first = d.windows[0]
            state = (("DRIFT now" if d.drift_now else "drift ahead")
                     + f" {first.start:%Y-%m-%d %H:%M}..{first.end:%Y-%m-%d %H:%M} ({first.reason}"
                     + ": " + "; ".join(f"{k} {', '.join(v) or 'nobody'}"
                                        for k, v in first.who.items()) + ")"
                     + (f", {len(d.windows) - 1} more window(s)" if len(d.windows) > 1 else ""))
        lines.append(f"{d.mapping}: {state}")
    return lines


def links(tx: Tx, group: str | None, limit: int, open_only: bool) -> list[dict[str, Any]]:
    result = []
    for link in tx.links(group, limit=limit, open_only=open_only):
        assert link.id is not None
        agreed = tx.agreed(link.id)
        result.append({
            "id": link.id,
            "group": link.group_name,
            "key": link.key,
            "origin": link.origin,
            "created_at": link.created_at,
            "agreed": {name: row.value for name, row in agreed.items()},
            "members": [
                {"account": r.account, "external_id": r.external_id, "state": r.state,
                 "severity": r.severity, "title": r.title, "url": r.url}
                for _, r in tx.members(link.id)
            ],
            "pending": [
                {"id": o.id, "account": o.account, "action": o.action, "value": o.value,
                 "status": o.status, "attempts": o.attempts, "error": o.last_error}
                for o in tx.outbox_for_link(link.id)
            ],
        })
    return result


def audit(tx: Tx, account: str | None, kind: str | None, link_id: int | None,
          since: datetime | None, limit: int) -> list[dict[str, Any]]:
    return [
        {k: getattr(r, k) for k in ("id", "at", "kind", "group_name", "link_id", "account",
                                     "external_id", "field", "old", "new", "cause", "outcome",
                                     "detail")}
        for r in tx.audit_entries(limit=limit, account=account, kind=kind, link_id=link_id,
                                  since=since)
    ]


def _group_for(cfg: Config, accounts: Sequence[str], name: str | None) -> GroupContext:
    candidates = [g for g in cfg.sync if (name is None or g.name == name)
                  and all(a in g.accounts for a in accounts)]
    if not candidates:
        raise ValueError(f"no sync group contains all of {', '.join(accounts)}"
                         + (f" named {name!r}" if name else ""))
    if len(candidates) > 1:
        raise ValueError("several sync groups fit; choose one with --group")
    return GroupContext.build(candidates[0], capabilities(cfg))


def link_records(tx: Tx, cfg: Config, refs: Sequence[tuple[str, str]],
                 group: str | None) -> int:
    accounts = [a for a, _ in refs]
    if len(set(accounts)) != len(accounts):
        raise ValueError("a link holds one record per account")
    ctx = _group_for(cfg, accounts, group)
    records = []
    for account, external_id in refs:
        record = tx.record(account, external_id)
        if record is None:
            raise ValueError(f"{account}:{external_id} is not in the ledger (poll it first)")
        records.append(record)
    now = utcnow()
    for record in records:
        old = tx.link_of(ctx.group.name, record.id or 0)
        if old is not None:
            tx.remove_member(old.id or 0, record.id or 0)
    link = tx.new_link(ctx.group.name, None, "manual")
    changes = []
    for record in records:
        tx.add_member(link, record)
        for name, value in ((STATE, record.state), (SEVERITY, record.severity)):
            changes.append(Change(record.account, record.id or 0, name, None, value,
                                  record.vendor_updated_at or now, joined=True))
    apply_changes(tx, ctx, link, changes, now)
    tx.audit("link", group_name=ctx.group.name, link_id=link.id,
             detail="manual link: " + ", ".join(f"{a}:{i}" for a, i in refs), at=now)
    return link.id or 0


def unlink_record(tx: Tx, ref: tuple[str, str], group: str | None) -> int:
    """Take a record out of its links. It gets a link of its own in each of those groups, so
    the next poll does not correlate it straight back."""
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
