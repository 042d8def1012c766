"""Operator views over the ledger (``syncd status``, ``links``, ``audit``, ``/status``): reads
only. Each function takes a :class:`~syncd.ledger.Tx` so it runs in one read transaction; none
calls a vendor. Manual link/unlink write, so they live with the rest of linking in
:mod:`syncd.engine.links`. What they return is redacted (:func:`syncd.secrets.redact`): it
goes to the CLI, ``--json`` and ``/status``, and a ledger written by an older syncd may still hold
a key a vendor echoed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from syncd import secrets, vendors
from syncd.config import Config
from syncd.ledger import Status, Tx, utcnow
from syncd.model import Action, Capability


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
    return secrets.redact({
        "ledger": secrets.safe_url(cfg.ledger_url),
        "accounts": accounts,
        "counts": tx.counts(),
        "outbox": {s.value: depth.get(s.value, 0) for s in Status},
        "oldest_pending_age_s": (utcnow() - oldest).total_seconds() if oldest else None,
        "parked": [
            {"id": r.id, "account": r.account, "action": r.action, "value": r.value,
             "error": r.last_error, "link": r.link_id}
            for r in tx.parked()
        ],
        "gaps": gaps(cfg),
        "oncall": oncall(tx, cfg),
        "lease": _lease(tx),
    })


def _lease(tx: Tx) -> dict[str, Any] | None:
    """Who leads a shared ledger, and until when unless renewed (None: no replica has led)."""
    from syncd.ledger.lease import current

    term = current(tx)
    return None if term is None else term.as_dict()


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
                 "severity": r.severity, "title": r.title, "url": r.url, "marker": r.marker}
                for _, r in tx.members(link.id)
            ],
            "pending": [
                {"id": o.id, "account": o.account, "action": o.action, "value": o.value,
                 "status": o.status, "attempts": o.attempts, "error": o.last_error}
                for o in tx.outbox_for_link(link.id)
            ],
        })
    return secrets.redact(result)


def audit(tx: Tx, account: str | None, kind: str | None, link_id: int | None,
          since: datetime | None, limit: int) -> list[dict[str, Any]]:
    return secrets.redact([
        {k: getattr(r, k) for k in ("id", "at", "kind", "group_name", "link_id", "account",
                                     "external_id", "field", "old", "new", "cause", "outcome",
                                     "detail")}
        for r in tx.audit_entries(limit=limit, account=account, kind=kind, link_id=link_id,
                                  since=since)
    ])
