"""Vendor webhooks as hints: a verified delivery makes the daemon poll that account at once;
anything unsigned, mis-signed or stale is refused and changes nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
from pathlib import Path

import anyio
import httpx
from prometheus_client import REGISTRY
from world import World

from syncd.daemon import Daemon

PD_SECRET = "pd-webhook-secret-123"
II_SECRET = "whsec_" + base64.b64encode(b"incident-io-signing-key-0001").decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pd_headers(body: bytes, secret: str = PD_SECRET) -> dict[str, str]:
    sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-PagerDuty-Signature": f"v1=0000,v1={sig}", "content-type": "application/json"}


def svix_headers(body: bytes, stamp: int, msg_id: str = "msg_1") -> dict[str, str]:
    key = base64.b64decode(II_SECRET.removeprefix("whsec_"))
    signed = f"{msg_id}.{stamp}.".encode() + body
    sig = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {"webhook-id": msg_id, "webhook-timestamp": str(stamp),
            "webhook-signature": f"v1,bm9wZQ== v1,{sig}"}


async def test_verified_webhooks_trigger_a_poll(tmp_path: Path) -> None:
    w = World(tmp_path, {"pd": "pagerduty", "ii": "incidentio", "vo": "victorops"},
              [{"name": "g", "accounts": ["pd", "ii", "vo"]}], poll_interval=3600,
              account_extra={"pd": {"webhook_secret": PD_SECRET},
                             "ii": {"webhook_secret": II_SECRET}})
    port = free_port()
    text = w.config_path.read_text().replace(
        "[status]\nenabled = false", f'[status]\nenabled = true\nlisten = "127.0.0.1:{port}"')
    w.config_path.write_text(text)
    await w.restart()
    daemon = Daemon(w.config, w.ledger, w.engine)
    seen: dict[str, object] = {}

    rejected = {"account": "pd", "outcome": "rejected"}
    rejected_before = REGISTRY.get_sample_value("syncd_webhooks_total", rejected) or 0

    async def scenario(tg: object) -> None:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            for _ in range(100):
                try:
                    await http.get("/healthz")
                    break
                except httpx.ConnectError:
                    await anyio.sleep(0.05)
            await anyio.sleep(1.0)  # the first polls (at start) are done; the next is an hour off
            w.alert("hooked")  # a change nobody would poll for within the test
            before = w.sims["pd"].call_count(method="GET")
            body = json.dumps({"event": {"event_type": "incident.triggered"}}).encode()
            bad = await http.post("/webhooks/pd", content=body,
                                  headers=pd_headers(body, "wrong-secret"))
            seen["bad"] = bad.status_code
            seen["bad_response"] = bad
            unsigned = await http.post("/webhooks/pd", content=body)
            seen["unsigned"] = unsigned.status_code
            await anyio.sleep(0.5)
            seen["calls_after_rejects"] = w.sims["pd"].call_count(method="GET") - before
            good = await http.post("/webhooks/pd", content=body, headers=pd_headers(body))
            seen["good"] = good.status_code
            for _ in range(50):
                await anyio.sleep(0.1)
                if w.ledger.call(lambda tx: tx.record("pd", w.incident("pd", "hooked")["id"])):
                    break
            seen["pd_seen"] = w.ledger.call(
                lambda tx: tx.record("pd", w.incident("pd", "hooked")["id"])) is not None
            ii_body = json.dumps({"event_type": "public_incident.incident_updated_v2"}).encode()
            stale = await http.post("/webhooks/ii", content=ii_body,
                                    headers=svix_headers(ii_body, int(time.time()) - 600))
            seen["ii_stale"] = stale.status_code
            fresh = await http.post("/webhooks/ii", content=ii_body,
                                    headers=svix_headers(ii_body, int(time.time())))
            seen["ii_fresh"] = fresh.status_code
            seen["vo"] = await http.post("/webhooks/vo", content=b"{}")
            seen["nobody"] = await http.post("/webhooks/nobody", content=b"{}")
            seen["metrics"] = (await http.get("/metrics")).text
        daemon.stop()

    with anyio.fail_after(60):
        await daemon.run(extra=lambda tg: tg.start_soon(scenario, tg))
    assert seen["bad"] == 401 and seen["unsigned"] == 401
    assert seen["calls_after_rejects"] == 0
    assert seen["good"] == 202 and seen["pd_seen"] is True
    assert seen["ii_stale"] == 401 and seen["ii_fresh"] == 202
    # No webhook secret for vo, no account "nobody": both answer exactly like a bad signature,
    # so the port does not tell which accounts exist.
    bad = seen["bad_response"]
    assert isinstance(bad, httpx.Response)
    for response in (seen["vo"], seen["nobody"]):
        assert isinstance(response, httpx.Response)
        assert (response.status_code, response.content) == (bad.status_code, bad.content)
    assert 'syncd_webhooks_total{account="pd",outcome="rejected"}' in str(seen["metrics"])
    assert REGISTRY.get_sample_value("syncd_webhooks_total", rejected) == rejected_before + 2
    assert PD_SECRET not in str(seen["metrics"])
