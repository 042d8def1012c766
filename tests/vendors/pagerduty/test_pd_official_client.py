"""PagerDuty's own Python client (PyPI ``pagerduty`` 7.x, on httpx2) against the simulator.

That client refuses non-https base URLs (vendor-notes §8), so the simulator is served over TLS on
loopback with a throw-away certificate authority made by trustme for this test module.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
import uvicorn

from syncd.simulators.pagerduty import (
    FROM_EMAIL,
    ROUTING_KEY,
    SCHED_PRIMARY,
    SERVICE_WEB,
    PagerDutySimulator,
)
from syncd.simulators.server import config

pagerduty = pytest.importorskip("pagerduty")

Served = tuple[PagerDutySimulator, str, ssl.SSLContext]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """(simulator, https base URL, TLS context trusting the test CA) for the module."""
    tmp: Path = tmp_path_factory.mktemp("pd-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    key_file, cert_file, ca_file = tmp / "key.pem", tmp / "cert.pem", tmp / "ca.pem"
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    ca.cert_pem.write_to_path(str(ca_file))
    sim = PagerDutySimulator(seed=3)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(config(sim, sock, ssl_keyfile=str(key_file),
                                   ssl_certfile=str(cert_file)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "TLS simulator did not start"
        time.sleep(0.01)
    yield sim, f"https://127.0.0.1:{sock.getsockname()[1]}", ssl.create_default_context(
        cafile=str(ca_file))
    server.should_exit = True
    thread.join(timeout=5)


@pytest.fixture
def rest(served: Served) -> Iterator[Any]:
    sim, url, ca = served
    client = pagerduty.RestApiV2Client(sim.token, default_from=FROM_EMAIL, base_url=url,
                                       verify=ca)
    yield client
    client.close()


def test_iter_all_pages_through_more_than_250(served: Served,
                                              rest: Any) -> None:
    sim = served[0]
    ids = set(sim.seed_incidents(260))
    seen = [i["id"] for i in rest.iter_all("incidents", params={
        "date_range": "all", "statuses": ["triggered", "acknowledged"]})]
    assert ids <= set(seen) and len(seen) == len(set(seen))


def test_bulk_rput_create_and_oncalls(served: Served,
                                      rest: Any) -> None:
    sim = served[0]
    created = rest.rpost("incidents", json={
        "type": "incident", "title": "Official client", "incident_key": "official-1",
        "service": {"id": SERVICE_WEB, "type": "service_reference"}})
    assert created["status"] == "triggered" and created["incident_key"] == "official-1"
    other = rest.rpost("incidents", json={
        "type": "incident", "title": "Second", "service": {"id": SERVICE_WEB,
                                                           "type": "service_reference"}})
    updated = rest.rput("incidents", json=[
        {"id": created["id"], "type": "incident_reference", "status": "acknowledged"},
        {"id": other["id"], "type": "incident_reference", "status": "resolved"}])
    assert [i["status"] for i in updated] == ["acknowledged", "resolved"]
    assert sim.incidents[created["id"]].status == "acknowledged"
    oncalls = list(rest.iter_all("oncalls", params={"schedule_ids": [SCHED_PRIMARY]}))
    assert oncalls and oncalls[0]["schedule"]["id"] == SCHED_PRIMARY
    now = sim.clock.now()
    result = rest.rpost(f"schedules/{SCHED_PRIMARY}/overrides", json=[{
        "start": now.isoformat(), "end": now.replace(year=now.year + 1).isoformat(),
        "user": {"id": "PUSR003", "type": "user_reference"}}])
    assert result[0]["status"] == 201
    assert rest.rget(f"incidents/{created['id']}")["id"] == created["id"]


def test_4xx_raises_http_error_with_the_error_object(rest: Any) -> None:
    with pytest.raises(pagerduty.HttpError) as info:
        rest.rget("incidents/NOPE")
    assert info.value.response.status_code == 404
    assert info.value.response.json() == {"error": {"message": "Not Found", "code": 2100}}
    with pytest.raises(pagerduty.HttpError) as info:
        rest.rpost("incidents", json={"type": "incident", "title": "no service"})
    assert info.value.response.json()["error"]["code"] in (2001, 2003)


def test_events_client(served: Served) -> None:
    sim, url, ca = served
    events = pagerduty.EventsApiV2Client(ROUTING_KEY, base_url=url, verify=ca)
    dedup = events.trigger("Disk full", "db-1", dedup_key="official-ev-1")
    assert dedup == "official-ev-1"
    assert any(c["dedup"] == "official-ev-1" for c in sim.canonical_incidents())
    events.close()
