"""Issue 7's scenarios against the simulators: batching, mirrors across crashes, faults,
malformed answers, severity by capability."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from world import World

from syncd.engine.dispatcher import Dispatcher
from syncd.vendors.base import Action

pytestmark = pytest.mark.usefixtures("any_ledger")


def correlate(tmp_path: Path, vendors: dict[str, str], **kw: object) -> World:
    return World(tmp_path, vendors,
                 [{"name": "main", "accounts": list(vendors), "mode": "correlate"}], **kw)


async def test_bulk_ack_is_batched(tmp_path: Path) -> None:
    """500 incidents acknowledged at once in PagerDuty reach Splunk On-Call in
    ceil(500 / batch size) ack calls, not 500."""
    w = correlate(tmp_path, {"src": "pagerduty", "dst": "victorops"})
    try:
        for i in range(500):
            w.alert(f"storm-{i}", accounts=["src", "dst"])
        await w.cycle()
        assert w.ledger.call(lambda tx: tx.counts())["links"] == 500
        sim = w.sims["src"]
        for inc in sim.canonical_incidents():
            sim.act(inc["id"], "acknowledge")
        w.sims["dst"].calls.clear()
        await w.settle()
        dst = w.sims["dst"]
        acked = [i for i in dst.canonical_incidents() if i["state"] == "acknowledged"]
        assert len(acked) == 500
        batch = w.engine.clients["dst"].batch_size[Action.ACKNOWLEDGE]
        ack_calls = dst.call_count(method="PATCH", route="/api-public/v1/incidents/ack")
        assert ack_calls == math.ceil(500 / batch)
    finally:
        await w.close()


async def test_severity_follows_capabilities(tmp_path: Path) -> None:
    """PagerDuty priority -> Spike.sh severity and incident.io severity; Splunk On-Call has no
    severity write, which is recorded as a gap instead of attempted."""
    # PagerDuty records no log entry for every priority change; its full resync (every
    # poll here) is what sees them.
    w = correlate(tmp_path, {"pd": "pagerduty", "sp": "spike", "ii": "incidentio",
                             "vo": "victorops"},
                  account_extra={"pd": {"full_resync_interval": 0.01}})
    try:
        w.alert("cpu", severity="sev1")
        await w.settle()
        w.act("pd", "cpu", "severity", severity="sev3")
        await w.settle()
        assert w.incident("sp", "cpu")["severity"] == "sev3"
        assert w.incident("ii", "cpu")["severity"] == "sev3"
        assert w.incident("vo", "cpu")["severity"] == "sev1"  # read-only severity: a gap
        gaps = w.ledger.call(lambda tx: tx.audit_entries(kind="gap"))
        assert {(g.account, g.field) for g in gaps} == {("vo", "severity")}
    finally:
        await w.close()


class Crash(BaseException):
    """Stands in for the process dying at one exact point."""


async def test_mirror_creates_exactly_once_across_a_crash(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    w = World(tmp_path, {"vo": "victorops", "sp": "spike"},
              [{"name": "mig", "accounts": ["vo", "sp"], "mode": "mirror", "source": "vo"}])
    try:
        await w.cycle()  # first poll: nothing exists yet
        w.alert("new-page", accounts=["vo"])

        def crash(self: Dispatcher, *args: object) -> None:
            raise Crash

        monkeypatch.setattr(Dispatcher, "_created", crash)
        with pytest.raises(BaseExceptionGroup) as info:
            await w.cycle()
        assert info.group_contains(Crash)
        assert len(w.sims["sp"].canonical_incidents()) == 1  # the vendor did create it
        monkeypatch.undo()
        await w.restart()
        await w.settle()
        mirrored = w.sims["sp"].canonical_incidents()
        assert len(mirrored) == 1, mirrored
        links = w.ledger.call(lambda tx: [(k.id, len(tx.members(k.id))) for k in tx.links()])
        assert links == [(1, 2)]
        w.act("sp", mirrored[0]["dedup"], "acknowledge")
        await w.settle()
        assert w.incident("vo", "new-page")["state"] == "acknowledged"
    finally:
        await w.close()


async def test_faults_and_outage_converge_without_loss(tmp_path: Path) -> None:
    w = correlate(tmp_path, {"a": "victorops", "b": "spike"},
                  account_extra={"a": {"max_retries": 1}, "b": {"max_retries": 1,
                                                                 "timeout": 0.2}})
    try:
        for i in range(20):
            w.alert(f"f-{i}")
        await w.cycle()
        w.sims["b"].faults.error_rate = 0.2
        w.sims["b"].faults.drop_rate = 0.05
        w.sims["b"].faults.hang_rate = 0.05  # timeouts: the client gives up after 2 x timeout
        w.sims["b"].faults.hang_seconds = 30
        w.sims["a"].faults.outage_until = w.sims["a"].clock.monotonic() + 60
        for i in range(20):
            w.act("b", f"f-{i}", "acknowledge" if i % 2 else "resolve")
        await w.cycle(3)
        w.sims["a"].clock.advance(61)  # the outage ends
        w.sims["b"].faults.error_rate = w.sims["b"].faults.drop_rate = 0
        w.sims["b"].faults.hang_rate = 0
        await w.settle(30)
        for i in range(20):
            want = "acknowledged" if i % 2 else "resolved"
            assert w.incident("a", f"f-{i}")["state"] == want
        assert w.ledger.call(lambda tx: tx.outbox_depth()).get("parked", 0) == 0
        limited = sum(s.call_count(status=429) for s in w.sims.values())
        assert limited == 0
    finally:
        await w.close()


async def test_malformed_answers_from_one_account_do_not_stop_the_others(tmp_path: Path
                                                                         ) -> None:
    w = correlate(tmp_path, {"a": "spike", "b": "spike", "bad": "victorops"})
    try:
        w.alert("x")
        await w.cycle()
        bad = w.sims["bad"]
        inner = bad.app

        async def html_for_lists(scope, receive, send):  # type: ignore[no-untyped-def]
            if scope["type"] == "http" and scope["path"] == "/api-public/v1/incidents":
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": b'{"incidents": [{"incid'})
                return
            await inner(scope, receive, send)

        bad.app = html_for_lists  # a network-level double: the vendor's bytes are truncated
        w.engine.clients["bad"].http.client._transport = bad.transport()
        w.act("a", "x", "acknowledge")
        result = await w.cycle()
        failed = {p.account: p.error for p in result.polls if not p.ok}
        assert list(failed) == ["bad"] and "MalformedResponse" in (failed["bad"] or "")
        await w.settle()
        assert w.incident("b", "x")["state"] == "acknowledged"
        status = w.ledger.call(lambda tx: {c.account: c.failures for c in tx.cursors()})
        assert status["bad"] >= 1 and status["a"] == 0
    finally:
        await w.close()
