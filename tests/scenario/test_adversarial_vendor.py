"""Vendors that answer badly (issue 20, items 5 and 8), against the simulators.

- Answers that lie about themselves (a false ``Content-Encoding: gzip``, JSON nested too deeply,
  a body over the size cap, wrong field types) are counted MalformedResponse errors of that
  account, never failed jobs, and never touch another account.
- A vendor whose certificate fails verification is named as such, not retried in a loop.
- An incident.io ack that arrives before incident.io has created the escalation is retried, not
  parked for good, and a parked action is retried when the record changes at the vendor.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from world import LANDED, World

from syncd import config as config_mod
from syncd import metrics
from syncd.daemon import Daemon
from syncd.engine import Engine
from syncd.simulators.server import Running, start_in_thread
from syncd.vendors._http import MAX_RESPONSE_BYTES
from syncd.vendors.base import Action
from syncd.vendors.incidentio import ESCALATION_GRACE

LIES = ["false_gzip", "deep_json", "oversize", "wrong_types"]
EXPECTED = {
    "false_gzip": "does not decode as its Content-Encoding (gzip) says",
    "deep_json": "JSON nested too deeply",
    "oversize": f"over the {MAX_RESPONSE_BYTES}-byte cap",
}


def correlate(tmp_path: Path, vendors: dict[str, str], **kw: object) -> World:
    return World(tmp_path, vendors,
                 [{"name": "g", "accounts": list(vendors), "mode": "correlate"}], **kw)


def partner(vendor: str) -> str:
    return "victorops" if vendor == "pagerduty" else "pagerduty"


def counted(counter: object, account: str, **labels: str) -> float:
    """Sum of a Prometheus counter's samples for one account (and optional other labels)."""
    total = 0.0
    for family in counter.collect():  # type: ignore[attr-defined]
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("account") == account and all(
                    sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def lie(world: World, account: str, kind: str, **faults: object) -> None:
    world.sims[account].faults.__dict__.update(
        {f"{kind}_rate": 1.0, "oversize_bytes": MAX_RESPONSE_BYTES, **faults})


def no_escape(result: object) -> None:
    """Nothing in a cycle ended as an unexpected exception (those are reported by
    :func:`syncd.engine.isolated` as "unexpected failure")."""
    texts = [p.error or "" for p in result.polls]  # type: ignore[attr-defined]
    texts += [e for d in result.dispatches for e in d.errors]  # type: ignore[attr-defined]
    assert not [t for t in texts if "unexpected failure" in t], texts


@pytest.mark.parametrize("kind", LIES)
@pytest.mark.parametrize("vendor", LANDED)
async def test_a_lying_answer_is_a_counted_malformed_response(tmp_path: Path, vendor: str,
                                                              kind: str) -> None:
    w = correlate(tmp_path, {"x": vendor, "y": partner(vendor)})
    try:
        w.alert("early")
        await w.cycle()
        before = counted(metrics.MALFORMED, "x")
        lie(w, "x", kind)
        w.alert("late")
        w.act("y", "early", "acknowledge")  # owes x a push while x lies
        result = await w.cycle(2)
        no_escape(result)
        assert all(p.ok for p in result.polls if p.account == "y")
        mine = [p for p in result.polls if p.account == "x"]
        if kind in EXPECTED:
            assert all(not p.ok and "MalformedResponse" in (p.error or "") for p in mine)
            assert EXPECTED[kind] in (mine[0].error or "")
        else:  # wrong types: records skipped, or the whole answer refused; both counted
            assert all(p.skipped or "MalformedResponse" in (p.error or "") for p in mine)
        assert counted(metrics.MALFORMED, "x") > before
        w.sims["x"].faults.__dict__.clear()
        w.sims["x"].faults.__init__()  # type: ignore[misc]
        await w.settle()
        assert w.incident("x", "early")["state"] == "acknowledged"
        assert w.ledger.call(lambda tx: tx.outbox_depth()).get("parked", 0) == 0
    finally:
        await w.close()


async def test_an_oversized_answer_is_abandoned_over_real_http(tmp_path: Path) -> None:
    """Over a socket the body really is a stream: reading stops at the cap, well before the
    64 MiB the simulator offers, and the poll fails as malformed."""
    w = correlate(tmp_path, {"x": "spike", "y": "pagerduty"})
    running = start_in_thread(w.sims["x"])
    engine = None
    try:
        w.config_path.write_text(w.config_path.read_text().replace(
            "http://x.sim.localhost", running.base_url))
        config = config_mod.load(w.config_path)
        engine = Engine.from_config(config, w.ledger, transports={
            "y": w.sims["y"].transport()}, budget_scale=100.0)
        assert (await engine.poll("x")).ok
        async with httpx.AsyncClient(base_url=running.base_url) as control:
            answer = await control.post("/_sim/faults", json={
                "oversize_rate": 1.0, "oversize_bytes": 64 * 1024 * 1024})
        assert answer.json()["oversize_rate"] == 1.0
        result = await engine.poll("x")
        assert not result.ok and EXPECTED["oversize"] in (result.error or "")
    finally:
        if engine is not None:
            await engine.aclose()
        running.stop()
        await w.close()


async def test_one_accounts_bad_answer_does_not_fail_anothers_push(tmp_path: Path) -> None:
    """A false gzip header on x's ack endpoint used to raise out of x's dispatch and cancel
    y's dispatch in the same task group; now x backs off and y's ack goes out."""
    w = correlate(tmp_path, {"src": "pagerduty", "x": "victorops", "y": "spike"})
    try:
        w.alert("shared")
        await w.settle()
        lie(w, "x", "false_gzip", routes=["/incidents/ack"])
        w.act("src", "shared", "acknowledge")
        result = await w.cycle()
        no_escape(result)
        assert w.incident("y", "shared")["state"] == "acknowledged"
        errors = [e for d in result.dispatches if d.account == "x" for e in d.errors]
        assert errors and all("MalformedResponse" in e or "Content-Encoding" in e
                              for e in errors)
        assert w.ledger.call(lambda tx: tx.outbox_depth()).get("pending") == 1  # x's, later
        w.sims["x"].faults.__init__()  # type: ignore[misc]
        await w.settle()
        assert w.incident("x", "shared")["state"] == "acknowledged"
        assert not w.ledger.call(lambda tx: tx.outbox_depth()).get("pending")
    finally:
        await w.close()


async def test_an_unexpected_exception_stays_with_its_account(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever escapes one account's push (here an exception no vendor error covers) is
    logged and reported for that account; the cycle and the daemon's dispatch round go on,
    and the other account's push lands."""
    w = correlate(tmp_path, {"src": "pagerduty", "x": "victorops", "y": "spike"})
    try:
        w.alert("shared")
        await w.settle()

        async def broken(action: Action, pushes: object) -> object:
            raise RuntimeError("a bug nobody foresaw")

        monkeypatch.setattr(w.engine.clients["x"], "push", broken)
        w.act("src", "shared", "acknowledge")
        result = await w.cycle()
        assert w.incident("y", "shared")["state"] == "acknowledged"
        mine = [e for d in result.dispatches if d.account == "x" for e in d.errors]
        assert mine and "unexpected failure in dispatch of x" in mine[0]
        w.act("src", "shared", "resolve")
        await w.engine.poll("src")
        daemon = Daemon(w.config, w.ledger, w.engine)
        await daemon._dispatch_all()  # the daemon's shared round: y still gets its resolve
        assert w.incident("y", "shared")["state"] == "resolved"
    finally:
        await w.close()


# --------------------------------------------------------------------------- TLS


@pytest.fixture
def untrusted_tls(tmp_path: Path) -> Iterator[tuple[World, Running]]:
    """Account x is a Spike.sh simulator served over HTTPS with a certificate from a CA the
    client does not trust (made by trustme for this test)."""
    w = correlate(tmp_path, {"x": "spike", "y": "pagerduty"})
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    key_file, cert_file = tmp_path / "key.pem", tmp_path / "cert.pem"
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    running = start_in_thread(w.sims["x"], certfile=str(cert_file), keyfile=str(key_file))
    w.config_path.write_text(w.config_path.read_text().replace(
        "http://x.sim.localhost", running.base_url))
    w.config = config_mod.load(w.config_path)
    w.engine = Engine.from_config(w.config, w.ledger,
                                  transports={"y": w.sims["y"].transport()}, budget_scale=100.0)
    yield w, running
    running.stop()


async def test_tls_verification_failure_is_named_and_backs_off(
        untrusted_tls: tuple[World, Running]) -> None:
    w, _running = untrusted_tls
    try:
        daemon = Daemon(w.config, w.ledger, w.engine)
        before = counted(metrics.VENDOR_REQUESTS, "x", status="tls")
        await daemon._poll("x")
        assert counted(metrics.VENDOR_REQUESTS, "x", status="tls") == before + 1, \
            "a failed certificate check is not retried"
        problem = daemon.health.auth_problem["x"]
        assert daemon.health.auth_failed["x"]
        assert problem.startswith("TLS verification failed for 127.0.0.1: ")
        assert "certificate" in problem
        cursor = w.ledger.call(lambda tx: tx.cursor("x"))
        assert "TLSError" in (cursor.last_error or "")
        assert "TLS verification failed for 127.0.0.1" in (cursor.last_error or "")
        await daemon._poll("x")
        await daemon._dispatch("x")
        assert counted(metrics.VENDOR_REQUESTS, "x", status="tls") == before + 1, \
            "polls and pushes wait out the back-off instead of looping on the handshake"
        await daemon._poll("y")
        assert not daemon.health.auth_failed["y"]

        from syncd.http.status import build_app

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(daemon)),
                                     base_url="http://status.localhost") as http:
            ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert f"x: {problem}" in ready.json()["problems"]
    finally:
        await w.close()


# --------------------------------------------------------------------------- 20.5: late escalations


def outbox(w: World) -> dict[str, int]:
    return w.ledger.call(lambda tx: tx.outbox_depth())


async def test_an_ack_before_incidentio_escalates_waits_for_the_escalation(
        tmp_path: Path) -> None:
    """Acked in PagerDuty while incident.io has not created the escalation yet (it does so
    asynchronously): the ack is retried, not parked, and lands once the escalation exists."""
    w = correlate(tmp_path, {"pd": "pagerduty", "ii": "incidentio"})
    try:
        async with httpx.AsyncClient(transport=w.sims["ii"].transport(),
                                     base_url="http://ii.sim.localhost") as control:
            assert (await control.post("/_sim/escalation-delay", json={"seconds": 20})).is_success
        w.alert("race")
        await w.cycle()
        w.act("pd", "race", "acknowledge")
        await w.cycle()
        assert w.incident("ii", "race")["state"] == "triggered"
        assert outbox(w).get("parked", 0) == 0 and outbox(w).get("pending") == 1
        (row,) = w.ledger.call(lambda tx: tx.outbox_for_link(1))
        assert "yet" in (row.last_error or "")
        w.sims["ii"].clock.advance(21)  # incident.io gets round to the escalation
        await w.settle()
        assert w.incident("ii", "race")["state"] == "acknowledged"
        assert outbox(w).get("parked", 0) == 0 and not outbox(w).get("pending")
    finally:
        await w.close()


async def test_a_parked_ack_is_retried_when_the_escalation_finally_appears(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the waiting window the ack is parked as a capability gap; when a later poll shows
    the record changed (the escalation came after all), the parked ack goes out."""
    w = correlate(tmp_path, {"pd": "pagerduty", "ii": "incidentio"})
    try:
        sim = w.sims["ii"]
        sim.escalation_delay = 600
        monkeypatch.setattr(w.engine.clients["ii"], "_clock", sim.clock.now)
        w.alert("slow")
        await w.cycle()
        w.act("pd", "slow", "acknowledge")
        sim.clock.advance(ESCALATION_GRACE.total_seconds() + 1)
        await w.cycle()
        assert outbox(w).get("parked") == 1
        (row,) = w.ledger.call(lambda tx: tx.outbox_for_link(1))
        assert "capability gap" in (row.last_error or "")
        sim.clock.advance(600)
        await w.settle()
        assert w.incident("ii", "slow")["state"] == "acknowledged"
        assert outbox(w).get("parked", 0) == 0 and not outbox(w).get("pending")
        unparked = w.ledger.call(lambda tx: tx.audit_entries(kind="unpark"))
        assert [(u.account, u.field) for u in unparked] == [("ii", "acknowledge")]
    finally:
        await w.close()
