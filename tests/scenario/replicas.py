"""Several ``syncd run`` processes on one PostgreSQL ledger, against simulators on loopback:
the high-availability scenarios (tests/scenario/test_ha.py) and bench/failover.py share it.

The replicas differ only in their status server's port (on two machines they would share the
whole file). Who leads is read from the lease row; who *wrote* to a vendor from the simulators'
write log, where each replica names itself in its User-Agent; every term is in the audit log.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from pgserver import free_port

from syncd import simulators
from syncd.config import MIN_LEASE_TTL
from syncd.ledger import Ledger
from syncd.ledger.lease import Lease, current
from syncd.model import State
from syncd.simulators.configs import account_table, render
from syncd.simulators.server import Running, start_in_thread

VENDORS = {"vo": "victorops", "sp": "spike"}
GROUPS = [
    # Alerts fired in both tools, linked by dedup key: acks and resolves cross over.
    {"name": "pair", "accounts": ["vo", "sp"], "mode": "correlate"},
]
IN_FLIGHT = 0.5
"""Seconds a killed leader's last write may still take to land at a simulator."""


@dataclass
class Term:
    holder: str
    since: float  # wall time the term began (database clock, same machine)


@dataclass
class Cluster:
    tmp: Path
    url: str
    replicas: int = 2
    ttl: float = MIN_LEASE_TTL
    poll_interval: float = 0.3
    full_resync_interval: float = 5
    account_extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: list[dict[str, Any]] = field(default_factory=lambda: list(GROUPS))
    running: dict[str, Running] = field(default_factory=dict)
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        tables = {}
        for account, vendor in VENDORS.items():
            sim = simulators.load(vendor)()
            sim.rate_scale = 100.0
            self.running[account] = start_in_thread(sim)
            table = account_table(vendor, sim.describe(self.running[account].base_url))
            table.update({"poll_interval": self.poll_interval, "budget_fraction": 1.0,
                          "full_resync_interval": self.full_resync_interval, "max_retries": 2})
            if vendor == "spike":
                table["rate_limit_per_minute"] = 6000
            table.update(self.account_extra.get(account, {}))
            tables[account] = table
        for i in range(self.replicas):
            self.ports[i] = free_port()
            text = render(tables, self.groups, {"url": self.url, "lease_ttl": self.ttl})
            text = text.replace("[status]\nenabled = false",
                                f'[status]\nenabled = true\nlisten = "127.0.0.1:{self.ports[i]}"')
            (self.tmp / f"replica{i}.toml").write_text(text)
        self.ledger = Ledger.open(self.url)

    @property
    def sims(self) -> dict[str, Any]:
        return {a: r.sim for a, r in self.running.items()}

    # ------------------------------------------------------------------ processes

    def start(self, i: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, "SYNCD_LOG_FORMAT": "json"}
        log = (self.tmp / f"replica{i}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "syncd", "run", "-c", str(self.tmp / f"replica{i}.toml")],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs[i] = proc
        return proc

    def start_all(self) -> None:
        for i in range(self.replicas):
            self.start(i)

    def end_term(self, holder: str) -> None:
        """End ``holder``'s term now (the ledger's own release), as its expiry would after the
        TTL: for a holder that was SIGKILLed, whose term no one else may end early. Only where a
        test is not about waiting out an expiry (a killed process's local deadline died with
        it, so no write of its can land in the next term). A write it sent just before the
        SIGKILL may still be on its way through a simulator that dispatches it late: ended at
        once, the next term could see it land and count it foreign, so the term ends
        :data:`IN_FLIGHT` seconds after the kill (still well inside the TTL)."""
        time.sleep(IN_FLIGHT)
        term = self.ledger.call(current, fenced=False)
        if term is None or term.holder != holder:
            return
        lease = Lease(self.ttl, holder=holder)
        lease.token = term.token
        self.ledger.call(lease.release, fenced=False)

    def index_of(self, pid: int) -> int | None:
        return next((i for i, p in self.procs.items() if p.pid == pid), None)

    def leader(self) -> tuple[int, str] | None:
        """(replica index, holder) of the current, unexpired term of a live replica."""
        term = self.ledger.call(current, fenced=False)
        if term is None or term.expired:
            return None
        i = self.index_of(int(term.holder.split(":")[1]))
        if i is None or self.procs[i].poll() is not None:
            return None
        return i, term.holder

    def wait_leader(self, timeout: float = 30.0, *, not_holder: str | None = None
                    ) -> tuple[int, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.leader()
            if found is not None and found[1] != not_holder:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no new leader within {timeout}s")

    def readyz(self, i: int, timeout: float = 60.0) -> tuple[int, dict[str, Any]]:
        """/readyz of replica ``i``, waiting for its status server (a replica restarted a
        moment ago may still be starting)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{self.ports[i]}/readyz", timeout=5)
                return r.status_code, r.json()
            except httpx.ConnectError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def metrics(self, i: int) -> str:
        return httpx.get(f"http://127.0.0.1:{self.ports[i]}/metrics", timeout=5).text

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait(timeout=10)
        for r in self.running.values():
            r.stop()
        self.ledger.dispose()

    # ------------------------------------------------------------------ what happened

    def terms(self) -> list[Term]:
        """Every term from the audit log, oldest first."""
        entries = self.ledger.call(
            lambda tx: tx.audit_entries(kind="lease", limit=100000), fenced=False)
        out = []
        for e in reversed(entries):
            if e.outcome == "acquired" and e.detail:
                out.append(Term(e.detail.split(" token ")[0], _wall(e.at)))
        return out

    def foreign_writes(self) -> list[tuple[str, Any]]:
        """Vendor writes a replica made while it did not hold the lease: the duplicates a
        split brain would cause. (A push whose confirmation was lost in a crash is pushed again
        by the next leader *under its own term* and answered "already": not counted here.)"""
        terms = self.terms()
        bad = []
        for account, sim in self.sims.items():
            for w in sim.write_log:
                if "(replica " not in w.agent:
                    continue  # a person or an alert source, not syncd
                holder = w.agent.split("(replica ", 1)[1].rstrip(")")
                active = [t for t in terms if t.since <= w.at]
                if not active or active[-1].holder != holder:
                    bad.append((account, w))
        return bad

    def creates(self, account: str, route: str) -> int:
        return sum(1 for w in self.sims[account].write_log
                   if w.route == route and 200 <= w.status < 300 and "(replica " in w.agent)


def _wall(at: datetime) -> float:
    return at.timestamp()


def person_changes(cluster: Cluster, keys: list[str], expected: dict[str, State],
                   rng: random.Random) -> bool:
    """One change by a person in a random tool; returns False when the vendor refused it."""
    account = rng.choice(list(cluster.sims))
    dedup = rng.choice(keys)
    action = rng.choice(["acknowledge", "acknowledge", "resolve"])
    found = [i for i in cluster.sims[account].canonical_incidents() if i["dedup"] == dedup]
    if not found:
        return False
    try:
        cluster.sims[account].act(found[-1]["id"], action)
    except (ValueError, KeyError):
        return False
    target = State.RESOLVED if action == "resolve" else State.ACKNOWLEDGED
    expected[dedup] = max(expected[dedup], target)
    return True


def converged(cluster: Cluster, keys: list[str], expected: dict[str, State]) -> bool:
    for dedup in keys:
        for sim in cluster.sims.values():
            found = [i["state"] for i in sim.canonical_incidents() if i["dedup"] == dedup]
            if found != [expected[dedup].value]:
                return False
    return True
