"""High availability on a real PostgreSQL ledger: two ``syncd run`` replicas, one leading by
lease. The leader is SIGKILLed again and again, paused past its lease (a zombie), and the
database restarted under it; everything converges, no replica writes to a vendor outside its
own term (the simulators' write log), nothing is created twice, and every takeover is audited.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pgserver import PgServer
from replicas import Cluster, converged, person_changes

from syncd.model import State

pytestmark = pytest.mark.slow


def alerts(cluster: Cluster, keys: list[str]) -> int:
    for dedup in keys:
        for sim in cluster.sims.values():
            sim.alert(dedup=dedup, title=f"ha {dedup}", severity="sev1")
    return len(keys) * len(cluster.sims)


def wait_converged(cluster: Cluster, keys: list[str], expected: dict[str, State],
                   timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not converged(cluster, keys, expected):
        assert time.monotonic() < deadline, "did not converge"
        time.sleep(0.3)


def assert_no_duplicates(cluster: Cluster, keys: list[str]) -> None:
    assert cluster.foreign_writes() == []
    for dedup in keys:
        for account, sim in cluster.sims.items():
            found = [i for i in sim.canonical_incidents() if i["dedup"] == dedup]
            assert len(found) == 1, f"{account} has {len(found)} incidents for {dedup}"


def test_leader_killed_five_times_nothing_lost_nothing_twice(
        tmp_path: Path, pg_url: str) -> None:
    rng = random.Random(14)
    keys = [f"ha-{i}" for i in range(30)]
    expected = {k: State.TRIGGERED for k in keys}
    cluster = Cluster(tmp_path, pg_url)
    kills = 0
    try:
        cluster.start_all()
        leader, holder = cluster.wait_leader()
        changes = alerts(cluster, keys)
        next_kill = time.monotonic() + rng.uniform(1.0, 2.5)
        while changes < 200 or kills < 5:
            if changes < 200:
                person_changes(cluster, keys, expected, rng)
                changes += 1
                time.sleep(rng.uniform(0.0, 0.05))
            else:
                time.sleep(0.05)
            if time.monotonic() >= next_kill:
                cluster.procs[leader].send_signal(signal.SIGKILL)
                cluster.procs[leader].wait(timeout=10)
                kills += 1
                if kills > 1:
                    # The first takeover waits out the dead term (the expiry path, as in
                    # production); the others end it now, as it would end after the TTL:
                    # this test is about what the kills leave behind, not about waiting.
                    cluster.end_term(holder)
                cluster.start(leader)  # the killed one comes back, as systemd would restart it
                leader, holder = cluster.wait_leader(not_holder=holder)
                next_kill = time.monotonic() + rng.uniform(1.0, 3.0)
        wait_converged(cluster, keys, expected)
        # Standby and leader as an operator sees them.
        standby = 1 - leader
        code, body = cluster.readyz(standby)
        assert code == 200 and body["role"] == "standby", body
        assert body["lease"]["holder"] == holder
        assert "syncd_leader 0.0" in cluster.metrics(standby)
        assert "syncd_leader 1.0" in cluster.metrics(leader)
        status = subprocess.run(
            [sys.executable, "-m", "syncd", "status", "-c", str(tmp_path / "replica0.toml"),
             "--json"], capture_output=True, text=True, timeout=60)
        assert json.loads(status.stdout)["lease"]["holder"] == holder
        assert_no_duplicates(cluster, keys)
        terms = cluster.terms()
        assert len(terms) >= kills + 1  # the first term and one takeover per kill
        assert len({t.holder for t in terms}) >= kills + 1
    finally:
        cluster.stop()
    assert kills >= 5


def test_zombie_leader_pushes_nothing_after_losing_the_lease(
        tmp_path: Path, pg_url: str) -> None:
    """The leader freezes (SIGSTOP) in the middle of a mirror create: after its marker lookup
    was sent, before its create. The standby takes over and looks the marker up itself; the
    zombie wakes up (SIGCONT) with its own lookup's answer (nothing there) in hand, and its
    create is refused before it leaves (the lease guard). It steps down; the new leader creates
    the mirror once, and the simulators' write log shows no write of the zombie's since it
    froze."""
    mirror = [{"name": "mig", "accounts": ["sp", "vo"], "mode": "mirror", "source": "sp"}]
    # A long request timeout: the frozen lookup's answer is still good when the zombie wakes.
    cluster = Cluster(tmp_path, pg_url, groups=mirror, full_resync_interval=3600,
                      account_extra={"vo": {"timeout": 120}})
    vo = cluster.sims["vo"]
    lookup = "/api-reporting/v2/incidents"  # the create's marker lookup (no poll needs it here)
    try:
        cluster.start_all()
        zombie, old = cluster.wait_leader()
        time.sleep(1.0)  # first full polls done
        vo.faults.latency = 3.0
        vo.faults.routes = [lookup]
        cluster.sims["sp"].alert(dedup="zombie-1", title="zombie-1", severity="sev1")
        deadline = time.monotonic() + 30
        while vo.inflight_by_route[lookup] == 0:
            assert time.monotonic() < deadline, "the leader never looked up the marker"
            time.sleep(0.01)
        cluster.procs[zombie].send_signal(signal.SIGSTOP)
        stopped_at = time.time()
        new, holder = cluster.wait_leader(not_holder=old, timeout=cluster.ttl + 15)
        assert new != zombie
        # Wake the zombie while the new leader's own lookup is in flight: nothing is created
        # yet, so only the lease stops the zombie from creating the mirror a second time.
        deadline = time.monotonic() + 30
        while vo.inflight_by_route[lookup] == 0:
            assert time.monotonic() < deadline, "the new leader never looked up the marker"
            time.sleep(0.01)
        cluster.procs[zombie].send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 60
        while not vo.canonical_incidents():  # the new leader's mirror
            assert time.monotonic() < deadline, "the new leader did not create the mirror"
            time.sleep(0.1)
        vo.faults.latency = 0.0
        # The zombie's guard lapsed while it was frozen: awake, it refuses its create and finds
        # itself a standby at its next lease look. Until then it is given every chance to write.
        log = tmp_path / f"replica{zombie}.log"
        deadline = time.monotonic() + cluster.ttl * 2 + 15
        while not ('"lease.lost"' in log.read_text() or '"lease.fenced"' in log.read_text()):
            assert time.monotonic() < deadline, "the zombie never stepped down"
            time.sleep(0.1)
        time.sleep(1.0)  # and a write it had in flight would have landed by now
        by_zombie = [w for sim in cluster.sims.values() for w in sim.write_log
                     if old in w.agent and w.at > stopped_at]
        assert by_zombie == []
        assert len(vo.canonical_incidents()) == 1
        assert any(holder in w.agent and w.at > stopped_at for w in vo.write_log)
        assert cluster.foreign_writes() == []
        assert cluster.procs[zombie].poll() is None  # alive, as a standby
        code, body = cluster.readyz(zombie)
        assert code == 200 and body["role"] == "standby", body
    finally:
        cluster.stop()


def test_postgres_restart_under_a_running_leader(
        tmp_path: Path, pg_url: str, postgres: PgServer) -> None:
    rng = random.Random(5)
    keys = [f"pg-{i}" for i in range(10)]
    expected = {k: State.TRIGGERED for k in keys}
    cluster = Cluster(tmp_path, pg_url, replicas=1)
    try:
        cluster.start_all()
        cluster.wait_leader()
        alerts(cluster, keys)
        for _ in range(10):
            person_changes(cluster, keys, expected, rng)
        time.sleep(0.5)
        postgres.restart(down_for=3.0)  # every connection drops, the ledger is gone for 3 s
        for _ in range(20):
            person_changes(cluster, keys, expected, rng)
            time.sleep(0.05)
        wait_converged(cluster, keys, expected)
        assert cluster.procs[0].poll() is None  # it rode it out
        cluster.wait_leader()
        assert_no_duplicates(cluster, keys)
        log = (tmp_path / "replica0.log").read_text()
        assert '"lease.unreachable"' in log or '"job.failed"' in log
    finally:
        cluster.stop()
