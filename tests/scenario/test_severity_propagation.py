"""PagerDuty priority changes propagate as fast as states (issue 16, target 3).

A priority change leaves no PagerDuty log entry, so the log feed alone never sees it: the delta
poll's page of open incidents does (poll mode), and a v3 ``incident.priority_updated`` delivery
names the incident so the poll it triggers reads it, however many incidents are open.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx
from test_adversarial_intake import run_daemon, wait_for_port
from test_webhooks import PD_SECRET, free_port, pd_headers
from world import World

from syncd.daemon import Daemon
from syncd.simulators.pagerduty import PagerDutySimulator


def severity(w: World, account: str, dedup: str) -> str | None:
    return w.incident(account, dedup)["severity"]


async def test_priority_change_reaches_the_others_at_the_next_delta_poll(
        tmp_path: Path) -> None:
    w = World(tmp_path, {"pd": "pagerduty", "ii": "incidentio"},
              [{"name": "g", "accounts": ["pd", "ii"]}])
    try:
        w.alert("db", severity="sev3")
        await w.settle()
        assert severity(w, "ii", "db") == "sev3"
        w.act("pd", "db", "severity", severity="sev1")
        result = await w.cycle()  # one round: delta polls (no full resync is due) and pushes
        assert not any(p.full for p in result.polls)
        assert severity(w, "ii", "db") == "sev1"
    finally:
        await w.close()


async def test_priority_webhook_makes_the_next_poll_read_that_incident(tmp_path: Path) -> None:
    """Past one page of open incidents the sweep would take several polls to reach the
    incident (here it is off); the delivery names it, so the poll it triggers reads it."""
    w = World(tmp_path, {"pd": "pagerduty", "ii": "incidentio"},
              [{"name": "g", "accounts": ["pd", "ii"]}], poll_interval=3600,
              account_extra={"pd": {"webhook_secret": PD_SECRET, "sweep_pages": 0}})
    port = free_port()
    w.config_path.write_text(w.config_path.read_text().replace(
        "[status]\nenabled = false", f'[status]\nenabled = true\nlisten = "127.0.0.1:{port}"'))
    pd = w.sims["pd"]
    assert isinstance(pd, PagerDutySimulator)
    pd.seed_incidents(150)
    w.alert("db", severity="sev3")
    await w.restart()
    await w.settle()
    assert severity(w, "ii", "db") == "sev3"
    deliveries: list[dict] = []
    pd.webhook_sink = deliveries.append
    seen: dict[str, object] = {}

    async def scenario() -> None:
        await wait_for_port(port)
        await anyio.sleep(1.0)  # the start polls are done; the next is an hour off
        w.act("pd", "db", "severity", severity="sev1")
        seen["events"] = [d["event"]["event_type"] for d in deliveries]
        body = json.dumps(deliveries[-1]).encode()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            seen["status"] = (await http.post("/webhooks/pd", content=body,
                                              headers=pd_headers(body))).status_code
        for _ in range(100):
            if severity(w, "ii", "db") == "sev1":
                break
            await anyio.sleep(0.1)
        seen["ii"] = severity(w, "ii", "db")

    try:
        await run_daemon(Daemon(w.config, w.ledger, w.engine), scenario, limit=60)
    finally:
        await w.close()
    assert seen["events"] == ["incident.priority_updated"]
    assert seen["status"] == 202
    assert seen["ii"] == "sev1"
