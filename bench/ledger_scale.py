"""Ledger scale: a SQLite ledger with 1,000,000 records and 300,000 links. Does a reconcile
pass still cost O(changed records), how fast are observations written, and how big is it?

Seeding is bulk (``Tx.bulk_records`` for records; links, members and agreed values through the
ledger's SQLModel tables in batched inserts, since the ledger has no bulk-link method). Each link
joins one record of each of two accounts, as a two-tool deployment would; the other records are
unlinked history. Then, all through :func:`syncd.engine.observe.observe`, the function every
poll page goes through:

* ``reconcile_100_ms``: one page of 100 observations of linked records whose state changed
  (a person acknowledged them), which updates last-known values, agreed values, audit and
  enqueues the pushes for the other account, in one transaction;
* ``inserts_per_s``: pages of 100 never-seen incidents (new records, each opening a link);
* ``unchanged_per_s``: pages of 100 observations that change nothing (a full resync).

``python bench/ledger_scale.py [--records 1000000 --links 300000] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, machine, peak_rss_mb, quiet_logs, rss_mb

from syncd import vendors
from syncd.config import SyncGroup
from syncd.engine.observe import GroupContext, observe
from syncd.ledger import Agreed, Ledger, Link, LinkMember, Tx
from syncd.model import Incident, Severity, State

ACCOUNTS = ("pd", "vo")  # two accounts of a two-tool deployment
VENDOR = {"pd": "pagerduty", "vo": "victorops"}
BATCH = 50_000
PAGE = 100


def record_row(account: str, n: int, now: datetime) -> dict[str, Any]:
    key = f"key-{n}"
    return {"account": account, "external_id": f"{account}-{n}", "title": f"Incident {n}",
            "state": "triggered", "severity": "sev2", "dedup": key, "marker": None,
            "keys_json": json.dumps({"dedup": key}), "number": str(n), "url": None,
            "vendor_created_at": now, "vendor_updated_at": now, "first_seen_at": now,
            "observed_at": now, "pushed_at": None, "pushed_vendor_at": None}


def seed(ledger: Ledger, records: int, links: int, now: datetime) -> dict[str, float]:
    """Record n of account pd and record n of account vo share key-n; the first ``links`` keys
    are linked. Records are interleaved, so record ids are 2n+1 (pd) and 2n+2 (vo)."""
    per_account = records // len(ACCOUNTS)
    t0 = time.monotonic()
    for start in range(0, per_account, BATCH // 2):
        rows = [record_row(a, n, now) for n in range(start, min(per_account, start + BATCH // 2))
                for a in ACCOUNTS]
        ledger.call(Tx.bulk_records, rows)
    t_records = time.monotonic() - t0

    def add_links(tx: Tx, first: int, last: int) -> None:
        s = tx.session
        s.execute(Link.__table__.insert(), [  # type: ignore[attr-defined]
            {"id": n + 1, "group_name": "main", "key": f"key-{n}", "origin": "correlate",
             "created_at": now} for n in range(first, last)])
        s.execute(LinkMember.__table__.insert(), [  # type: ignore[attr-defined]
            {"link_id": n + 1, "record_id": 2 * n + 1 + i, "group_name": "main", "account": a}
            for n in range(first, last) for i, a in enumerate(ACCOUNTS)])
        s.execute(Agreed.__table__.insert(), [  # type: ignore[attr-defined]
            {"link_id": n + 1, "field": f, "value": v, "source_account": "pd",
             "changed_at": now}
            for n in range(first, last) for f, v in (("state", "triggered"),
                                                      ("severity", "sev2"))])

    t1 = time.monotonic()
    for start in range(0, links, BATCH):
        ledger.call(add_links, start, min(links, start + BATCH))
    return {"records_s": t_records, "links_s": time.monotonic() - t1}


def incident(account: str, n: int, state: State, at: datetime) -> Incident:
    return Incident(external_id=f"{account}-{n}", state=state, title=f"Incident {n}",
                    severity=Severity.SEV2, keys={"dedup": f"key-{n}"}, created_at=at,
                    updated_at=at, number=str(n))


def run(records: int, links: int, changed: int, new: int, unchanged: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="syncd-bench-") as tmpdir:
        ledger = Ledger.open(f"sqlite:///{tmpdir}/ledger.db")
        for a in ACCOUNTS:
            ledger.call(lambda tx, a=a: tx.ensure_account(a, VENDOR[a]))
        capabilities = {a: vendors.load(VENDOR[a]).capabilities for a in ACCOUNTS}
        group = GroupContext.build(
            SyncGroup(name="main", accounts=list(ACCOUNTS), mode="correlate"), capabilities)
        grace = timedelta(seconds=60)
        base = datetime.now(UTC) - timedelta(hours=1)
        seeded = seed(ledger, records, links, base)
        per_account = records // len(ACCOUNTS)
        now = datetime.now(UTC)

        # One reconcile pass: 100 linked pd records acknowledged, spread over the key space.
        step = max(1, links // changed)
        page = [incident("pd", n, State.ACKNOWLEDGED, now) for n in range(0, links, step)]
        page = page[:changed]
        t0 = time.monotonic()
        result = ledger.call(lambda tx: observe(tx, "pd", page, [group], now, grace=grace))
        reconcile_s = time.monotonic() - t0
        pending = ledger.call(lambda tx: tx.outbox_depth()).get("pending", 0)

        # Observation inserts: never-seen incidents, pages of 100, one transaction each.
        t0 = time.monotonic()
        for start in range(per_account, per_account + new, PAGE):
            batch = [incident("pd", n, State.TRIGGERED, now)
                     for n in range(start, min(per_account + new, start + PAGE))]
            ledger.call(lambda tx, b=batch: observe(tx, "pd", b, [group], now, grace=grace))
        insert_s = time.monotonic() - t0

        # Unchanged observations (a full resync of linked records), pages of 100.
        t0 = time.monotonic()
        for start in range(links, links + unchanged, PAGE):
            batch = [incident("vo", n, State.TRIGGERED, base)
                     for n in range(start, min(links + unchanged, start + PAGE))]
            ledger.call(lambda tx, b=batch: observe(tx, "vo", b, [group], now, grace=grace))
        unchanged_s = time.monotonic() - t0

        counts = ledger.call(lambda tx: tx.counts())
        size = ledger.size_bytes() or 0
        ledger.dispose()
    return {
        "bench": "ledger", "records": counts["records"], "links": counts["links"],
        "reconcile_100_ms": round(reconcile_s * 1000, 1),
        "reconcile_changed": result.changed, "reconcile_actions": result.actions,
        "outbox_pending_after": pending,
        "inserts_per_s": round(new / insert_s, 1),
        "unchanged_per_s": round(unchanged / unchanged_s, 1),
        "rss_mb": round(rss_mb(), 1), "peak_rss_mb": round(peak_rss_mb(), 1),
        "ledger_mb": round(size / 2**20, 1),
        "seed_records_s": round(seeded["records_s"], 1),
        "seed_links_s": round(seeded["links_s"], 1),
        "machine": machine(),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--links", type=int, default=300_000)
    p.add_argument("--changed", type=int, default=100)
    p.add_argument("--new", type=int, default=5_000, help="new observations for the rate")
    p.add_argument("--unchanged", type=int, default=5_000,
                   help="unchanged observations for the rate")
    p.add_argument("--quick", action="store_true", help="100,000 records, 30,000 links")
    return p


def main() -> None:
    args = parser().parse_args()
    quiet_logs()
    if args.quick:
        args.records, args.links, args.new, args.unchanged = 100_000, 30_000, 1000, 1000
    if args.links > args.records // len(ACCOUNTS):
        raise SystemExit("--links cannot exceed records per account")
    emit(run(args.records, args.links, args.changed, args.new, args.unchanged))


if __name__ == "__main__":
    main()
