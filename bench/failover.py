"""Failover: two ``syncd run`` replicas on one PostgreSQL ledger, the leader SIGKILLed 10 times
(and restarted, as systemd would) during a steady stream of changes in two vendors.

Takeover time is measured from the kill to the start of the next term (its audit entry, on the
database's clock, same machine). ``duplicate_pushes`` counts vendor writes a replica made
outside its own term (the simulators' write log, each replica naming itself in its User-Agent)
plus incidents that exist twice; ``lost_changes`` counts incidents that did not converge on the
state people left them in. Target: takeover p99 <= lease TTL + one poll interval + 1 s, zero
duplicates, zero lost.

Usage: bench/failover.py [--kills 10] [--ttl 6] [--poll 1] [--url postgresql+psycopg://...]
Without --url it starts a throwaway PostgreSQL server (initdb + pg_ctl, as the tests do).
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "scenario"), str(ROOT / "bench")]

import pgserver  # noqa: E402
from common import emit, machine, percentile  # noqa: E402
from replicas import Cluster, converged, person_changes  # noqa: E402

from syncd.model import State  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--ttl", type=float, default=6.0,
                        help="[ledger] lease_ttl, seconds (at least 6, the config's minimum)")
    parser.add_argument("--poll", type=float, default=1.0, help="poll_interval, seconds")
    parser.add_argument("--keys", type=int, default=40)
    parser.add_argument("--url", help="an empty PostgreSQL database (default: a throwaway one)")
    parser.add_argument("--quick", action="store_true", help="3 kills")
    args = parser.parse_args()
    kills_wanted = 3 if args.quick else args.kills
    if args.url:
        url = args.url
    else:
        reason = pgserver.unavailable_reason()
        if reason:
            sys.exit(reason)
        pg = pgserver.server()
        url = pg.url(pg.new_database("failover"))
    rng = random.Random(16)
    keys = [f"fo-{i}" for i in range(args.keys)]
    expected = {k: State.TRIGGERED for k in keys}
    tmp = Path(tempfile.mkdtemp(prefix="syncd-failover-"))
    cluster = Cluster(tmp, url, ttl=args.ttl, poll_interval=args.poll)
    stop = threading.Event()
    changes = [0]

    def stream() -> None:
        """People acting in both tools, ten changes a second, for the whole run."""
        while not stop.is_set():
            if person_changes(cluster, keys, expected, rng):
                changes[0] += 1
            time.sleep(0.1)

    takeovers: list[float] = []
    try:
        cluster.start_all()
        leader, holder = cluster.wait_leader(60)
        for dedup in keys:
            for sim in cluster.sims.values():
                sim.alert(dedup=dedup, title=f"failover {dedup}", severity="sev1")
        worker = threading.Thread(target=stream, daemon=True)
        worker.start()
        for _ in range(kills_wanted):
            time.sleep(rng.uniform(2.0, 4.0))
            killed_at = time.time()
            cluster.procs[leader].send_signal(signal.SIGKILL)
            cluster.procs[leader].wait(timeout=10)
            cluster.start(leader)
            leader, holder = cluster.wait_leader(args.ttl * 3 + 30, not_holder=holder)
            term = next(t for t in reversed(cluster.terms()) if t.holder == holder)
            takeovers.append(term.since - killed_at)
        stop.set()
        worker.join()
        deadline = time.monotonic() + 120
        while not converged(cluster, keys, expected) and time.monotonic() < deadline:
            time.sleep(0.5)
        lost = 0
        duplicates = len(cluster.foreign_writes())
        for dedup in keys:
            states = []
            for sim in cluster.sims.values():
                found = [i["state"] for i in sim.canonical_incidents() if i["dedup"] == dedup]
                duplicates += max(0, len(found) - 1)
                states += found
            lost += set(states) != {expected[dedup].value}
    finally:
        stop.set()
        cluster.stop()
    emit({
        "bench": "failover", "kills": len(takeovers),
        "takeover_p50_s": round(percentile(takeovers, 50), 2),
        "takeover_p99_s": round(percentile(takeovers, 99), 2),
        "takeover_max_s": round(max(takeovers), 2),
        "target_s": args.ttl + args.poll + 1,
        "lease_ttl_s": args.ttl, "poll_interval_s": args.poll,
        "changes": changes[0] + len(keys) * len(cluster.sims),
        "duplicate_pushes": duplicates, "lost_changes": lost,
        "machine": machine(),
    })


if __name__ == "__main__":
    main()
