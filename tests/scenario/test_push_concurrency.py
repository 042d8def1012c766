"""Pushes in flight at once (issue 16, target 4): a backlog keeps the vendor's budget busy with
several requests while each one waits for the vendor, yet every action goes out once, every
request takes a budget token, and a record's actions keep their order."""

from __future__ import annotations

import math
from pathlib import Path

import anyio
from world import World

from syncd.daemon import Daemon
from syncd.ratelimit import ACCOUNT, Budget, Limit

RESPOND = "/v2/escalations/{escalation_id}/actions/respond"


async def test_backlog_goes_out_concurrently_and_once(tmp_path: Path) -> None:
    """120 acks from PagerDuty reach incident.io with several requests in flight, one respond
    per escalation (none twice), no rate-limited answer and a budget token for every call."""
    w = World(tmp_path, {"src": "pagerduty", "ii": "incidentio"},
              [{"name": "main", "accounts": ["src", "ii"], "mode": "correlate"}])
    try:
        for i in range(120):
            w.alert(f"storm-{i}")
        await w.settle()
        assert w.ledger.call(lambda tx: tx.counts())["links"] == 120
        src, ii = w.sims["src"], w.sims["ii"]
        for inc in src.canonical_incidents():
            src.act(inc["id"], "acknowledge")
        ii.network_latency = 0.01  # every call waits for the "vendor", as over a WAN
        ii.calls.clear()
        ii.peak_inflight = 0
        client = w.engine.clients["ii"]
        taken = client.budget.buckets_for(ACCOUNT)[0].taken
        await w.settle()

        acked = [i for i in ii.canonical_incidents() if i["state"] == "acknowledged"]
        assert len(acked) == 120
        assert ii.call_count(method="POST", route=RESPOND) == 120  # one each, none twice
        assert ii.call_count(status=429) == 0
        assert client.budget.buckets_for(ACCOUNT)[0].taken - taken == ii.call_count()
        parallel = w.engine.dispatchers["ii"].parallel
        assert parallel > 1
        assert 1 < ii.peak_inflight <= parallel + 1  # pushes in flight, plus at most a poll
        # One escalations lookup serves a whole push call: far fewer lookups than acks.
        lookups = ii.call_count(method="GET", route="/v2/escalations")
        assert lookups < 120 / 2
    finally:
        await w.close()


async def test_concurrent_acquires_never_exceed_the_budget() -> None:
    """40 writers at once on a 5-token bucket refilling 50/s: by any moment, no more tokens
    were handed out than the burst plus what the rate refilled since the start."""
    budget = Budget({ACCOUNT: Limit(50, 1.0, burst=5)})
    clock = budget._clock
    start = clock()
    stamps: list[float] = []

    async def writer() -> None:
        await budget.acquire(write=True)
        stamps.append(clock() - start)

    async with anyio.create_task_group() as tg:
        for _ in range(40):
            tg.start_soon(writer)
    assert len(stamps) == 40
    for n, at in enumerate(sorted(stamps), start=1):
        assert n <= 5 + math.floor(at * 50 + 1e-6) + 1


def test_parallel_calls_follow_the_budget() -> None:
    """A few calls a minute stay one at a time; a large budget is capped."""
    assert Budget({ACCOUNT: Limit(50, 60.0)}, 0.5).parallel_calls() == 1
    assert Budget({ACCOUNT: Limit(1200, 60.0)}, 0.5).parallel_calls() == 10
    assert Budget({ACCOUNT: Limit(1200, 60.0)}, 1.0, scale=100).parallel_calls() == 16


async def test_one_dispatch_per_poll_round(tmp_path: Path) -> None:
    """Acks made at once in two sources reach a third tool in one batch call: the daemon's
    poll jobs push when the round's last poll lands, not once per source poll. (Splunk
    On-Call answers slowly here, so its poll lands well after PagerDuty's.)"""
    w = World(tmp_path, {"pd": "pagerduty", "vo": "victorops", "sp": "spike"},
              [{"name": "main", "accounts": ["pd", "vo", "sp"], "mode": "correlate"}],
              account_extra={"sp": {"rate_limit_per_minute": 6000}})
    try:
        keys = [f"burst-{i}" for i in range(10)]
        for key in keys:
            w.alert(key)
        await w.settle()
        for key in keys[:5]:
            w.act("pd", key, "acknowledge")
        for key in keys[5:]:
            w.act("vo", key, "acknowledge")
        w.sims["vo"].network_latency = 0.6
        for sim in w.sims.values():
            sim.calls.clear()
        daemon = Daemon(w.config, w.ledger, w.engine)
        async with anyio.create_task_group() as tg:  # one poll round, as the scheduler runs it
            for account in w.sims:
                tg.start_soon(daemon._poll, account)
        sp = w.sims["sp"]
        assert all(w.incident("sp", k)["state"] == "acknowledged" for k in keys)
        assert sp.writes() == 1  # one ack call for both sources' changes
        assert w.sims["pd"].writes() == 1 and w.sims["vo"].writes() == 1
    finally:
        await w.close()
