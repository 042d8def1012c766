"""A real ``syncd run`` process, killed with SIGKILL at random points while people make 200
changes across vendors; after a final clean run everything has converged, nothing was lost and
nothing was duplicated."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import world
from sqlalchemy import create_engine, text
from world import LANDED, account_table, render

from syncd import simulators
from syncd.model import State
from syncd.simulators.server import Running, start_in_thread

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("any_ledger")]

VENDORS = {"vo": "victorops", "sp": "spike"}
if "pagerduty" in LANDED:
    VENDORS["pd"] = "pagerduty"
KEYS = [f"k9-{i}" for i in range(40)]


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SYNCD_LOG_FORMAT": "json"}
    return subprocess.Popen(
        [sys.executable, "-m", "syncd", "run", "-c", str(config)],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env,
    )


def states(running: dict[str, Running], dedup: str) -> dict[str, list[str]]:
    return {a: [i["state"] for i in r.sim.canonical_incidents() if i["dedup"] == dedup]
            for a, r in running.items()}


def end_dead_term(ledger: Path | dict[str, Any]) -> None:
    """Under PostgreSQL, end the SIGKILLed process's lease term now, as its expiry would: the
    restarted process waits out the dead one's term (at least 6 s, the shortest lease), and
    ten such waits would mostly kill processes still standing by. Waiting for the expiry is
    what tests/scenario/test_ha.py tests; this test is about what a kill leaves behind."""
    if isinstance(ledger, dict):
        engine = create_engine(ledger["url"])
        with engine.begin() as conn:  # no table yet when it was killed before migrating
            if conn.execute(text("SELECT to_regclass('lease')")).scalar() is not None:
                conn.execute(text("UPDATE lease SET expires_at = now()"))
        engine.dispose()


def test_kill_minus_nine_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(7)
    running: dict[str, Running] = {}
    tables = {}
    for account, vendor in VENDORS.items():
        sim = simulators.load(vendor)()
        sim.rate_scale = 100.0
        running[account] = start_in_thread(sim)
        table = account_table(vendor, sim.describe(running[account].base_url))
        table.update({"poll_interval": 0.3, "full_resync_interval": 5, "budget_fraction": 1.0,
                      "max_retries": 2})
        if vendor == "spike":
            table["rate_limit_per_minute"] = 6000
        tables[account] = table
    config = tmp_path / "syncd.toml"
    ledger = world.LEDGER(tmp_path)
    config.write_text(render(tables, [{"name": "all", "accounts": list(VENDORS),
                                       "mode": "correlate"}], ledger))
    log = tmp_path / "daemon.log"
    expected = {k: State.TRIGGERED for k in KEYS}
    changes = 0
    kills = 0
    started_before = 0
    proc = start(config, log)
    try:
        for dedup in KEYS:  # 40 alerts in every vendor
            for r in running.values():
                r.sim.alert(dedup=dedup, title=f"kill9 {dedup}", severity="sev1")
                changes += 1
        deadline_kill = time.monotonic() + rng.uniform(0.5, 1.5)
        while changes < 200 or kills < 10:
            if changes < 200:
                account = rng.choice(list(running))
                dedup = rng.choice(KEYS)
                action = rng.choice(["acknowledge", "acknowledge", "resolve"])
                found = [i for i in running[account].sim.canonical_incidents()
                         if i["dedup"] == dedup]
                try:
                    running[account].sim.act(found[-1]["id"], action)
                except (ValueError, KeyError):
                    pass  # the vendor refused (e.g. ack of a resolved incident): no change
                else:
                    target = State.RESOLVED if action == "resolve" else State.ACKNOWLEDGED
                    expected[dedup] = max(expected[dedup], target)
                changes += 1
                time.sleep(rng.uniform(0.0, 0.03))
            if time.monotonic() >= deadline_kill:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
                end_dead_term(ledger)
                kills += 1
                started_before = log.read_text().count('"daemon.started"')
                proc = start(config, log)
                deadline_kill = time.monotonic() + rng.uniform(0.8, 2.5)
            elif changes >= 200:
                time.sleep(0.05)
        # The final clean run: converge, then SIGTERM must exit 0.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if all({s for v in states(running, k).values() for s in v} == {expected[k].value}
                   for k in KEYS):
                break
            time.sleep(0.5)
        # SIGTERM once the last daemon is up (before that, Python's default handler applies,
        # as for any process killed while starting).
        while log.read_text().count('"daemon.started"') <= started_before:
            assert time.monotonic() < deadline + 30, "the final daemon never started"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        for r in running.values():
            r.stop()
    assert kills >= 10
    for dedup in KEYS:
        seen = states(running, dedup)
        for account, found in seen.items():
            assert len(found) == 1, f"{account} has {len(found)} incidents for {dedup}"
        assert {s for v in seen.values() for s in v} == {expected[dedup].value}, (dedup, seen)
