"""A storm in poll mode (issue 16, target 4): pushes start while the poll that found the changes
is still reading (only whole pushes, so a burst still costs the fewest calls, target 5), a
dispatch asked for while one runs runs after it, and an account's polls wait while its own
pushes keep its budget short (at most ``STRETCH_MAX`` intervals in a row)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import anyio
import httpx
from world import World

from syncd.daemon import STRETCH_MAX, Daemon
from syncd.engine import Engine
from syncd.engine.cadence import Cadence
from syncd.http.status import build_app
from syncd.ledger import utcnow
from syncd.model import Action
from syncd.ratelimit import ACCOUNT, POLL_READS, Budget, Limit, PollReads

RESPOND = "/v2/escalations/{escalation_id}/actions/respond"
EDIT = "/v2/incidents/{id}/actions/edit"
GROUPS = [{"name": "main", "accounts": ["pd", "ii"], "mode": "correlate"}]


async def until(cond: Callable[[], object], seconds: float = 5.0) -> bool:
    """Wait (polling) until ``cond()`` holds, at most ``seconds``; returns whether it does."""
    for _ in range(int(seconds / 0.005)):
        if cond():
            return True
        await anyio.sleep(0.005)
    return bool(cond())


def responds(w: World) -> int:
    return w.sims["ii"].call_count(method="POST", route=RESPOND)


def pending(w: World) -> int:
    return w.ledger.call(lambda tx: tx.outbox_depth()).get("pending", 0)


async def storm(w: World, incidents: int) -> None:
    for i in range(incidents):
        w.alert(f"storm-{i}")
    await w.settle()
    src = w.sims["pd"]
    for inc in src.canonical_incidents():
        src.act(inc["id"], "acknowledge")
    for sim in w.sims.values():
        sim.calls.clear()


async def test_whole_dispatch_sends_only_whole_pushes(tmp_path: Path) -> None:
    """70 acks owed to incident.io (one escalations lookup serves 50): a whole-push dispatch
    sends 50 with one lookup and leaves 20 for the full dispatch."""
    w = World(tmp_path, {"pd": "pagerduty", "ii": "incidentio"}, GROUPS)
    try:
        await storm(w, 70)
        await w.engine.poll("pd")
        assert pending(w) == 70
        assert w.engine.dispatchers["ii"].whole_push(Action.ACKNOWLEDGE) == 50
        await w.engine.dispatch("ii", whole=True)
        assert responds(w) == 50
        assert w.sims["ii"].call_count(method="GET", route="/v2/escalations") == 1
        assert pending(w) == 20
        await w.engine.dispatch("ii", whole=True)  # 20 fill no whole push: nothing read
        assert responds(w) == 50 and w.sims["ii"].call_count(method="GET") == 1
        await w.engine.dispatch("ii")
        assert responds(w) == 70 and pending(w) == 0
    finally:
        await w.close()


class HoldPages(httpx.AsyncBaseTransport):
    """The source's transport, holding each log-entries page after the first two until
    ``pushed()`` (a few seconds at most), and noting whether it had: shows whether pushes start
    while a poll is still reading. The simulator answers every request."""

    def __init__(self, inner: httpx.AsyncBaseTransport, pushed: Callable[[], bool]) -> None:
        self.inner = inner
        self.pushed = pushed
        self.seen: list[bool] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/log_entries"):
            self.seen.append(len(self.seen) < 2 or await until(self.pushed))
        return await self.inner.handle_async_request(request)


async def test_pushes_start_while_the_poll_still_reads(tmp_path: Path) -> None:
    """PagerDuty's poll reads 100 acks in pages of 25: incident.io gets its first whole push
    (50 acks, one lookup) before PagerDuty's last page is read, and the whole burst still costs
    two lookups (the round's dispatch sends the rest)."""
    w = World(tmp_path, {"pd": "pagerduty", "ii": "incidentio"}, GROUPS,
              account_extra={"pd": {"page_size": 25}})
    try:
        await storm(w, 100)
        hold = HoldPages(w.sims["pd"].transport(), lambda: responds(w) > 0)
        await w.engine.aclose()
        w.engine = Engine.from_config(
            w.config, w.ledger, budget_scale=100.0,
            transports={"pd": hold, "ii": w.sims["ii"].transport()})
        daemon = Daemon(w.config, w.ledger, w.engine)
        await daemon._poll("pd")  # one poll round, as the scheduler runs it
        assert await until(lambda: not daemon._early)
        assert len(hold.seen) > 3
        assert hold.seen[-1], "no push before the poll's last page"
        assert responds(w) == 100 and pending(w) == 0
        assert w.sims["ii"].call_count(method="GET", route="/v2/escalations") == 2
    finally:
        await w.close()


async def test_a_page_starts_pushes_only_in_its_own_groups(tmp_path: Path) -> None:
    """Groups {pd, ii} and {pd2, ii2}; a resolve is owed to ii2 (one edit: a whole push) by an
    earlier poll of pd2 whose round has not dispatched yet. A page of pd's poll owing ii a
    resolve starts ii's push, and leaves ii2's to its own round: a page of pd owes ii2
    nothing."""
    groups = [{"name": "one", "accounts": ["pd", "ii"], "mode": "correlate"},
              {"name": "two", "accounts": ["pd2", "ii2"], "mode": "correlate"}]
    w = World(tmp_path, {"pd": "pagerduty", "ii": "incidentio", "pd2": "pagerduty",
                         "ii2": "incidentio"}, groups)
    try:
        w.alert("one", accounts=["pd", "ii"])
        w.alert("two", accounts=["pd2", "ii2"])
        await w.settle()
        w.act("pd2", "two", "resolve")
        await w.engine.poll("pd2")
        w.act("pd", "one", "resolve")
        for sim in w.sims.values():
            sim.calls.clear()
        daemon = Daemon(w.config, w.ledger, w.engine)
        daemon._polling.add("pd2")  # its round still landing: the round's dispatch waits
        await daemon._poll("pd")
        assert await until(lambda: not daemon._early)
        assert w.sims["ii"].call_count(method="POST", route=EDIT) == 1
        assert w.incident("ii", "one")["state"] == "resolved"
        assert w.sims["ii2"].writes() == 0
        assert w.incident("ii2", "two")["state"] != "resolved" and pending(w) == 1
    finally:
        await w.close()


async def linked(w: World, **faults: object) -> list[str]:
    """20 alerts linked in both accounts; ``faults`` (if any) injected into incident.io."""
    keys = [f"storm-{i}" for i in range(20)]
    for key in keys:
        w.alert(key)
    await w.settle()
    if faults:
        async with w.sims["ii"].client() as control:
            assert (await control.post("/_sim/faults", json={"error_rate": 1.0, **faults})
                    ).is_success
    return keys


async def owed_while_pushing(w: World, keys: list[str]) -> None:
    """Poll PagerDuty and run incident.io's dispatch of what it owes; while that is pushing
    (slowed by network latency), ack ``keys`` in PagerDuty, poll it (the acks owed to
    incident.io are committed after the running dispatch read its rows) and ask for a
    dispatch, as a new page would."""
    await w.engine.poll("pd")
    daemon = Daemon(w.config, w.ledger, w.engine)
    ii = w.sims["ii"]
    ii.network_latency = 0.3
    lock_held = False
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon._dispatch, "ii")
        assert await until(lambda: ii.inflight)
        for key in keys:
            w.act("pd", key, "acknowledge")
        await w.engine.poll("pd")
        lock_held = daemon._dispatch_locks["ii"].locked()
        await daemon._dispatch("ii")  # returns at once: the running one decides what follows
    ii.network_latency = 0.0
    assert lock_held


async def test_a_dispatch_asked_for_while_one_runs_follows_it(tmp_path: Path) -> None:
    """Acks owed while incident.io's dispatch is pushing (it read its rows before them) go out
    right after it, not at some later round."""
    w = World(tmp_path, {"pd": "pagerduty", "ii": "incidentio"}, GROUPS)
    try:
        keys = await linked(w)
        for key in keys[:10]:
            w.act("pd", key, "acknowledge")
        await owed_while_pushing(w, keys[10:])
        assert all(w.incident("ii", k)["state"] == "acknowledged" for k in keys)
        assert pending(w) == 0
    finally:
        await w.close()


async def test_a_parked_row_does_not_hold_back_the_dispatch_asked_for_meanwhile(
        tmp_path: Path) -> None:
    """incident.io refuses one resolve for good (a 400 on the status list it needs) while the
    acks go through: that dispatch parks the resolve and goes on, so it did not stop the
    account, and the acks owed meanwhile still go out right after it."""
    w = World(tmp_path, {"pd": "pagerduty", "ii": "incidentio"}, GROUPS)
    try:
        keys = await linked(w, error_status=400, routes=["/v1/incident_statuses"])
        w.act("pd", keys[0], "resolve")
        for key in keys[1:10]:
            w.act("pd", key, "acknowledge")
        await owed_while_pushing(w, keys[10:])
        assert all(w.incident("ii", k)["state"] == "acknowledged" for k in keys[1:])
        assert w.incident("ii", keys[0])["state"] == "triggered"
        depth = w.ledger.call(lambda tx: tx.outbox_depth())
        assert depth.get("parked") == 1 and depth.get("pending", 0) == 0
    finally:
        await w.close()


async def test_a_dispatch_that_stops_the_account_runs_none_after_it(tmp_path: Path) -> None:
    """incident.io refuses the credentials for its acks (401): that dispatch stops the account,
    so the dispatch asked for meanwhile does not run after it (it would only meet the same
    refusal); the acks owed meanwhile stay pending, never tried."""
    w = World(tmp_path, {"pd": "pagerduty", "ii": "incidentio"}, GROUPS)
    try:
        keys = await linked(w, error_status=401, routes=[RESPOND])
        for key in keys[:10]:
            w.act("pd", key, "acknowledge")
        await owed_while_pushing(w, keys[10:])
        far = utcnow() + timedelta(hours=1)
        rows = w.ledger.call(lambda tx: tx.due("ii", far))
        assert len(rows) == 20
        assert len([r for r in rows if r.last_error is None]) == 10
    finally:
        await w.close()


async def test_polls_wait_while_pushes_keep_the_budget_short(tmp_path: Path) -> None:
    """While incident.io's pushes wait for its budget, its poll is put off STRETCH_MAX times
    in a row, then runs (its reads may still wait for the pushes, up to push_patience); /readyz
    does not call the account stale for polls put off on purpose."""
    w = World(tmp_path, {"pd": "pagerduty", "ii": "incidentio"}, GROUPS)
    try:
        await storm(w, 10)
        await w.engine.poll("pd")
        daemon = Daemon(w.config, w.ledger, w.engine)
        ii = w.sims["ii"]
        budget = w.engine.clients["ii"].budget
        async with anyio.create_task_group() as tg:
            budget.pause(ACCOUNT, 1.0)  # short: the pushes wait for tokens
            tg.start_soon(daemon._dispatch, "ii")
            assert await until(lambda: "ii" in daemon._dispatch_locks
                               and daemon._dispatch_locks["ii"].locked())
            for n in range(1, STRETCH_MAX + 1):
                await daemon._poll("ii")
                assert daemon.health.stretched["ii"] == n
            assert ii.call_count(method="GET", route="/v2/incidents") == 0
            await daemon._poll("ii")  # put off enough: this one reads
        assert ii.call_count(method="GET", route="/v2/incidents") > 0
        assert "ii" not in daemon.health.stretched
        assert all(i["state"] == "acknowledged" for i in ii.canonical_incidents())
        # Without pushes running, a short budget alone never puts a poll off.
        budget.pause(ACCOUNT, 0.2)
        before = ii.call_count(method="GET", route="/v2/incidents")
        await daemon._poll("ii")
        assert ii.call_count(method="GET", route="/v2/incidents") > before
    finally:
        await w.close()


async def test_readyz_allows_for_polls_put_off_on_purpose(tmp_path: Path) -> None:
    """An account whose last poll is half an interval past ``stale_after`` is not ready, unless
    the daemon put a poll of it off for its pushes (one interval more per poll put off)."""
    w = World(tmp_path, {"pd": "pagerduty", "ii": "incidentio"}, GROUPS)
    try:
        daemon = Daemon(w.config, w.ledger, w.engine)
        cadence = Cadence.of(w.config, "ii")
        daemon.health.last_poll = {
            "pd": utcnow(),
            "ii": utcnow() - cadence.stale_after - timedelta(seconds=cadence.poll_interval / 2)}
        transport = httpx.ASGITransport(app=build_app(daemon))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            stale = await http.get("/readyz")
            daemon.health.stretched["ii"] = 1
            put_off = await http.get("/readyz")
            # put off 6 times, then the 7th poll's reads wait up to push_patience for pushes
            daemon.health.stretched["ii"] = STRETCH_MAX
            daemon.health.last_poll["ii"] = utcnow() - cadence.stale_after - timedelta(
                seconds=cadence.poll_interval * (STRETCH_MAX + 0.5))
            waiting = await http.get("/readyz")
            daemon.health.last_poll["ii"] -= timedelta(seconds=cadence.push_patience)
            too_long = await http.get("/readyz")
        assert stale.status_code == 503 and "ii: last successful poll" in stale.text
        assert put_off.status_code == 200, put_off.text
        assert waiting.status_code == 200, waiting.text
        assert too_long.status_code == 503
    finally:
        await w.close()


async def test_a_push_lookup_has_the_writes_priority(tmp_path: Path) -> None:
    """incident.io's escalations lookup is part of an ack push: while it waits for the budget
    it counts as a write waiting, so a poll's reads wait for it (and for the responds)."""
    w = World(tmp_path, {"pd": "pagerduty", "ii": "incidentio"}, GROUPS)
    try:
        await storm(w, 5)
        await w.engine.poll("pd")
        budget = w.engine.clients["ii"].budget
        budget.pause(ACCOUNT, 1.0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.engine.dispatch, "ii")
            waiting = await until(lambda: budget.writes_waiting() > 0, 0.5)
            assert w.sims["ii"].call_count() == 0  # the lookup itself is what waits
        assert waiting
        assert all(i["state"] == "acknowledged" for i in w.sims["ii"].canonical_incidents())
    finally:
        await w.close()


class Order(httpx.AsyncBaseTransport):
    """A simulator's transport noting each request's method and path, in order."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.seen: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(f"{request.method} {request.url.path}")
        return await self.inner.handle_async_request(request)


async def test_a_poll_reads_after_its_accounts_running_pushes(tmp_path: Path) -> None:
    """A poll of incident.io that starts while its pushes are running (budget plentiful)
    reads only once they are done: a storm's first pushes get the whole bucket, not a share
    with a poll that happened to start then."""
    w = World(tmp_path, {"pd": "pagerduty", "ii": "incidentio"}, GROUPS)
    try:
        await storm(w, 20)
        await w.engine.poll("pd")
        order = Order(w.sims["ii"].transport())
        await w.engine.aclose()
        w.engine = Engine.from_config(
            w.config, w.ledger, budget_scale=100.0,
            transports={"pd": w.sims["pd"].transport(), "ii": order})
        w.sims["ii"].network_latency = 0.02
        budget = w.engine.clients["ii"].budget
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.engine.dispatch, "ii")
            assert await until(lambda: budget.pushing > 0)
            tg.start_soon(w.engine.poll, "ii")
        first_read = order.seen.index("GET /v2/incidents")
        responds_seen = [i for i, c in enumerate(order.seen) if c.startswith("POST ")]
        assert len(responds_seen) == 20
        assert max(responds_seen) < first_read, order.seen
    finally:
        await w.close()


async def test_a_poll_read_waits_for_pushes_only_so_long() -> None:
    """Pushes that never end do not starve a poll: its reads wait ``patience`` seconds in all,
    then take tokens as before; reads outside a poll never wait for pushes."""
    budget = Budget({ACCOUNT: Limit(600, 60.0)})
    budget.pushing = 1
    assert await budget.acquire() == 0.0  # not a poll's read: no wait for the pushes
    reads = POLL_READS.set(PollReads(0.2))
    try:
        with anyio.fail_after(10):
            waits = [await budget.acquire() for _ in range(3)]
    finally:
        POLL_READS.reset(reads)
    assert sum(waits) >= 0.2  # the poll's reads did wait, for the patience in all
    assert waits[1:] == [0.0, 0.0]  # and then no more
