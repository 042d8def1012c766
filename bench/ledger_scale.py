"""Ledger scale: a SQLite ledger with 1,000,000 records and 300,000 links. Does a reconcile
pass still cost O(changed records), how fast are observations written, and how big is it?

Seeding is bulk (``Tx.bulk_records`` for records; links, members and agreed values through the
ledger's SQLModel tables in batched inserts, since the ledger has no bulk-link method). Each link
joins one record of each of two accounts, as a two-tool deployment would; the other records are
unlinked history. Then, all through :func:`syncd.engine.observe.observe`, the function every
poll page goes through:

* ``reconcile_100_ms``: a reconcile pass, one page of 100 observations of linked records whose
  state changed (a person acknowledged them), which updates last-known values, agreed values,
  audit and enqueues the pushes for the other account, in one transaction (``--passes`` such
  passes per round, each on 100 other links spread over the key space);
* ``inserts_per_s``: pages of 100 never-seen incidents (new records, each opening a link);
* ``unchanged_per_s``: pages of 100 observations that change nothing (a full resync).

Each figure has a ``raw_`` twin measured in the same run: the same pages through
:mod:`raw_ledger`, the same work written against ``sqlite3`` by hand, on a copy of the seeded
ledger; the ``*_ratio`` figures are syncd's cost over the raw cost (targets: reconcile and inserts
<= 2.0, unchanged <= 1.5). The two sides take the same pages alternately, page by page (and which
goes first alternates), so load from other processes on a shared machine falls on both alike;
each round uses fresh keys, and figures are medians over the rounds (``--rounds``, 5; for the
reconcile pass over rounds x passes, 25). Wall-clock figures are the headline; ``cpu`` repeats
them in thread CPU time, which a busy machine disturbs less. Pages are built before the clock
starts. ``same_outcome`` checks that both sides wrote the same rows (counts of records, links,
members, agreed values, pending actions, audit entries).

What the 100-record pass must not be charged with, on either side (it is short, ~10-20 ms, so
any of these decided a round): a first pass per side runs before the rounds, uncounted (it
compiles and prepares the statements, once per process); before each timed pass both ledgers'
WAL is checkpointed outside the clock (else whichever side's commit crosses SQLite's
1,000-page auto-checkpoint pays for copying back the inserts phase's writes, with two fsyncs);
and the objects of the setup (a million seeded rows went through this process, the imports)
are frozen out of the garbage collector after seeding (else a full collection, ~30 ms here,
lands on whichever side allocates the object that triggers it). Every pass still does all of
its own work, commit included.

``python bench/ledger_scale.py [--records 1000000 --links 300000 --rounds 5 --passes 5]
[--quick]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, machine, peak_rss_mb, quiet_logs, rss_mb
from raw_ledger import RawLedger

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
            "vendor_created_at": now, "vendor_updated_at": now, "vendor_own_updated_at": now,
            "first_seen_at": now,
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


PHASES = ("reconcile", "inserts", "unchanged")


class Side:
    """One way of running the observe path: syncd's ledger, or the raw sqlite3 limit. Keeps,
    per phase and round, the wall and CPU seconds its pages took."""

    def __init__(self, name: str, observe_page: Callable[[str, list[Incident], datetime], Any]
                 ) -> None:
        self.name = name
        self.observe = observe_page
        self.wall: dict[str, list[float]] = {p: [] for p in PHASES}
        self.cpu: dict[str, list[float]] = {p: [] for p in PHASES}
        self.actions = 0

    def page(self, phase: str, account: str, batch: list[Incident], now: datetime) -> Any:
        t0, c0 = time.perf_counter(), time.thread_time()
        result = self.observe(account, batch, now)
        self.wall[phase][-1] += time.perf_counter() - t0
        self.cpu[phase][-1] += time.thread_time() - c0
        return result


def measure(sides: Sequence[Side], phase: str, account: str, pages: list[list[Incident]],
            now: datetime, first: int) -> None:
    """Run the same pages through every side, alternating page by page (and which side goes
    first), so that load from other processes falls on both alike."""
    for side in sides:
        side.wall[phase].append(0.0)
        side.cpu[phase].append(0.0)
    for k, batch in enumerate(pages):
        order = sides if (k + first) % 2 == 0 else list(reversed(sides))
        for side in order:
            result = side.page(phase, account, batch, now)
            if phase == "reconcile":
                side.actions = result["actions"] if isinstance(result, dict) else result.actions


def make_pages(account: str, first: int, count: int, state: State, at: datetime
               ) -> list[list[Incident]]:
    return [[incident(account, n, state, at) for n in range(start, min(first + count,
                                                                        start + PAGE))]
            for start in range(first, first + count, PAGE)]


def reconcile_page(offset: int, links: int, changed: int, now: datetime) -> list[Incident]:
    """``changed`` linked pd records acknowledged, spread over the key space (a different set
    for every ``offset``)."""
    step = max(1, links // changed)
    return [incident("pd", n, State.ACKNOWLEDGED, now)
            for n in range(offset, links, step)][:changed]


def one_round(sides: Sequence[Side], i: int, links: int, per_account: int, changed: int,
              new: int, unchanged: int, base: datetime, passes: int,
              checkpoint: Callable[[], None]) -> None:
    now = datetime.now(UTC)
    for p in range(passes):
        k = i * passes + p
        page = reconcile_page(1 + k, links, changed, now)  # offset 0 was the warm-up pass
        checkpoint()
        measure(sides, "reconcile", "pd", [page], now, k)
    # Observation inserts: never-seen incidents, pages of 100, one transaction each.
    measure(sides, "inserts", "pd", make_pages("pd", per_account + i * new, new,
                                               State.TRIGGERED, now), now, i)
    # Unchanged observations (a full resync of records we already know), pages of 100.
    measure(sides, "unchanged", "vo", make_pages("vo", links + i * unchanged, unchanged,
                                                 State.TRIGGERED, base), now, i)


def figures_of(sides: dict[str, Side], changed: int, new: int, unchanged: int,
               clock: str) -> dict[str, float]:
    """Medians over the rounds; ratios are syncd's cost over the raw cost."""
    out: dict[str, float] = {}
    counts = {"inserts": new, "unchanged": unchanged}
    for phase in PHASES:
        for prefix, side in (("", sides["ledger"]), ("raw_", sides["raw"])):
            median = statistics.median((side.wall if clock == "wall" else side.cpu)[phase])
            if phase == "reconcile":
                out[f"{prefix}reconcile_100_ms"] = round(median * 1000 * 100 / changed, 1)
            else:
                out[f"{prefix}{phase}_per_s"] = round(counts[phase] / median, 1)
    out["reconcile_ratio"] = round(out["reconcile_100_ms"] / out["raw_reconcile_100_ms"], 2)
    out["inserts_ratio"] = round(out["raw_inserts_per_s"] / out["inserts_per_s"], 2)
    out["unchanged_ratio"] = round(out["raw_unchanged_per_s"] / out["unchanged_per_s"], 2)
    return out


def outcome(conn: sqlite3.Connection) -> dict[str, int]:
    """What both sides must have written alike (ids and random keys aside)."""
    queries = {
        "records": "SELECT count(*) FROM record",
        "links": "SELECT count(*) FROM link",
        "members": "SELECT count(*) FROM link_member",
        "agreed_acknowledged": "SELECT count(*) FROM agreed WHERE value = 'acknowledged'",
        "agreed": "SELECT count(*) FROM agreed",
        "outbox_pending": "SELECT count(*) FROM outbox WHERE status = 'pending'",
        "audit": "SELECT count(*) FROM audit",
        "acked_records": "SELECT count(*) FROM record WHERE state = 'acknowledged'",
    }
    return {k: conn.execute(q).fetchone()[0] for k, q in queries.items()}


def run(records: int, links: int, changed: int, new: int, unchanged: int,
        rounds: int, passes: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="syncd-bench-") as tmpdir:
        path = f"{tmpdir}/ledger.db"
        ledger = Ledger.open(f"sqlite:///{path}")
        for a in ACCOUNTS:
            ledger.call(lambda tx, a=a: tx.ensure_account(a, VENDOR[a]))
        capabilities = {a: vendors.load(VENDOR[a]).capabilities for a in ACCOUNTS}
        group = GroupContext.build(
            SyncGroup(name="main", accounts=list(ACCOUNTS), mode="correlate"), capabilities)
        grace = timedelta(seconds=60)
        base = datetime.now(UTC) - timedelta(hours=1)
        seeded = seed(ledger, records, links, base)
        per_account = records // len(ACCOUNTS)

        # The raw side starts from a copy of the seeded ledger: same rows, schema and indexes.
        raw_path = f"{tmpdir}/raw.db"
        with sqlite3.connect(path) as src, sqlite3.connect(raw_path) as dst:
            src.backup(dst)
        raw = RawLedger(raw_path, "main", ACCOUNTS, "dedup", capabilities, group.policy)

        sides = {
            "ledger": Side("ledger", lambda a, b, now: ledger.call(
                lambda tx: observe(tx, a, b, [group], now, grace=grace))),
            "raw": Side("raw", lambda a, b, now: raw.observe(a, b, now, grace)),
        }
        warm = datetime.now(UTC)
        for side in sides.values():
            side.observe("pd", reconcile_page(0, links, changed, warm), warm)
        checkpointer = sqlite3.connect(path, isolation_level=None)

        def checkpoint() -> None:
            checkpointer.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
            raw.checkpoint()

        gc.collect()
        gc.freeze()
        for i in range(rounds):
            one_round(list(sides.values()), i, links, per_account, changed, new, unchanged,
                      base, passes, checkpoint)
        gc.unfreeze()
        checkpointer.close()

        counts = ledger.call(lambda tx: tx.counts())
        size = ledger.size_bytes() or 0
        ledger.dispose()
        raw.close()
        with sqlite3.connect(path) as a, sqlite3.connect(raw_path) as b:
            mine, theirs = outcome(a), outcome(b)
    figures: dict[str, Any] = {
        "bench": "ledger", "records": counts["records"], "links": counts["links"],
        "rounds": rounds, "reconcile_passes": rounds * passes,
        **figures_of(sides, changed, new, unchanged, "wall"),
        "cpu": figures_of(sides, changed, new, unchanged, "cpu"),
        "reconcile_actions": sides["ledger"].actions, "raw_reconcile_actions":
            sides["raw"].actions,
        "same_outcome": mine == theirs,
        "outcome": mine if mine == theirs else {"ledger": mine, "raw": theirs},
        "runs_wall_s": {s.name: {p: [round(x, 4) for x in s.wall[p]] for p in PHASES}
                        for s in sides.values()},
        "rss_mb": round(rss_mb(), 1), "peak_rss_mb": round(peak_rss_mb(), 1),
        "ledger_mb": round(size / 2**20, 1),
        "seed_records_s": round(seeded["records_s"], 1),
        "seed_links_s": round(seeded["links_s"], 1),
        "machine": machine(),
    }
    return figures


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--links", type=int, default=300_000)
    p.add_argument("--changed", type=int, default=100)
    p.add_argument("--new", type=int, default=5_000, help="new observations for the rate")
    p.add_argument("--unchanged", type=int, default=5_000,
                   help="unchanged observations for the rate")
    p.add_argument("--rounds", type=int, default=5,
                   help="alternating ledger/raw rounds; figures are their medians")
    p.add_argument("--passes", type=int, default=5,
                   help="reconcile passes per round (the reconcile figure is their median)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 100,000 records, 30,000 links")
    return p


def main() -> None:
    args = parser().parse_args()
    quiet_logs()
    if args.quick:
        args.records, args.links, args.new, args.unchanged = 100_000, 30_000, 1000, 1000
    if args.links + args.rounds * args.unchanged > args.records // len(ACCOUNTS):
        raise SystemExit("--links + rounds x --unchanged cannot exceed records per account")
    if 1 + args.rounds * args.passes > args.links // args.changed:
        raise SystemExit("1 + rounds x passes cannot exceed --links / --changed (fresh links "
                         "for every pass)")
    emit(run(args.records, args.links, args.changed, args.new, args.unchanged, args.rounds,
             args.passes))


if __name__ == "__main__":
    main()
