"""The leader lease on a real PostgreSQL ledger: one holder at a time, takeover after expiry
with a new fencing token, fenced transactions of an ex-leader rolled back, vendor writes refused
once the lease is not held."""

from __future__ import annotations

import itertools
import time
from datetime import timedelta

import anyio
import httpx
import pytest
from sqlalchemy.exc import OperationalError

from syncd.engine.leadership import GuardedTransport, Leadership
from syncd.ledger import Ledger, outbox, utcnow
from syncd.ledger.lease import Lease, LeaseLost, current
from syncd.model import Action


def owe(tx, key: str) -> None:  # type: ignore[no-untyped-def]
    """A fenced write: an outbox row (a create owed to account a)."""
    link = tx.new_link("g", key, "manual")
    outbox.enqueue(tx, group="g", link_id=link.id, record_id=None, account="a",
                   action=Action.CREATE, value=key, key=key, cause=None, caused_at=utcnow(),
                   now=utcnow())


def keys(ledger: Ledger) -> list[str]:
    return ledger.call(lambda tx: sorted(r.idempotency_key for r in tx.due("a", utcnow())),
                       fenced=False)


async def test_one_leader_then_takeover_with_a_new_token(pg_url: str) -> None:
    first, second = Ledger.open(pg_url), Ledger.open(pg_url)
    a, b = Lease(1.0, holder="a"), Lease(1.0, holder="b")
    first.fence, second.fence = a.fence, b.fence
    assert (await a.maintain(first)).holder == "a" and a.held() and a.token == 1
    assert (await b.maintain(second)).holder == "a" and not b.held()
    await first.run(owe, "by-a-1")
    with pytest.raises(LeaseLost):  # a standby's engine transaction never commits
        await second.run(owe, "by-b-0")
    await anyio.sleep(1.1)  # a stops renewing (paused): its term runs out
    assert not a.held()  # by its own clock first, so it writes to no vendor from now on
    term = await b.maintain(second)
    assert (term.holder, term.token) == ("b", 2) and b.held()
    with pytest.raises(LeaseLost):  # a's late transaction is fenced and rolled back
        await first.run(owe, "by-a-2")
    await second.run(owe, "by-b-1")
    assert keys(first) == ["by-a-1", "by-b-1"]
    takeovers = first.call(lambda tx: [e.detail for e in tx.audit_entries(kind="lease")],
                           fenced=False)
    assert any("b token 2, taking over from a (token 1" in d for d in takeovers)
    # a comes back: it sees b's term and stays standby
    assert (await a.maintain(first)).holder == "b" and a.token is None
    first.dispose()
    second.dispose()


async def test_release_hands_over_at_once(pg_url: str) -> None:
    ledger = Ledger.open(pg_url)
    a, b = Lease(30.0, holder="a"), Lease(30.0, holder="b")
    await a.maintain(ledger)
    await ledger.run_lease(a.release)
    started = time.monotonic()
    assert (await b.maintain(ledger)).holder == "b"
    assert time.monotonic() - started < 5
    term = ledger.call(current, fenced=False)
    assert term is not None and term.holder == "b" and term.token == 2
    ledger.dispose()


async def test_a_replica_paused_inside_a_transaction_cannot_block_a_takeover(
        pg_url: str) -> None:
    """A leader paused (SIGSTOP) between the fence check and its commit holds the lease row
    FOR SHARE: the server ends its session after IDLE_IN_TRANSACTION, the standby takes over,
    and the paused transaction never lands."""
    from syncd.ledger import postgres

    first, second = Ledger.open(pg_url), Ledger.open(pg_url)
    a, b = Lease(1.0, holder="a"), Lease(1.0, holder="b")
    first.fence = a.fence
    await a.maintain(first)

    def paused(tx) -> None:  # type: ignore[no-untyped-def]
        owe(tx, "late")
        time.sleep(postgres.IDLE_IN_TRANSACTION + 1.5)

    async def late() -> None:
        with pytest.raises(Exception) as err:
            await first.run(paused)
        assert "idle-in-transaction" in str(err.value) or isinstance(err.value, LeaseLost)

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(late)
        await anyio.sleep(0.3)
        while True:
            assert time.monotonic() - started < postgres.IDLE_IN_TRANSACTION + 5
            try:
                if (await b.maintain(second)).holder == "b":
                    break
            except OperationalError as exc:  # the paused one still holds the row
                assert "lock timeout" in str(exc)
            await anyio.sleep(0.2)
    assert keys(second) == []
    first.dispose()
    second.dispose()


async def test_vendor_writes_need_the_lease(pg_url: str) -> None:
    sent: list[str] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        sent.append(scope["method"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    ledger = Ledger.open(pg_url)
    lease = Lease(1.0, holder="a")
    leadership = Leadership(lease, ledger)
    transport = GuardedTransport(httpx.ASGITransport(app=app), lease.guard)
    async with httpx.AsyncClient(transport=transport, base_url="http://v") as client:
        with pytest.raises(LeaseLost):
            await client.post("/ack")
        assert (await client.get("/list")).status_code == 200  # reads are always fine
        await leadership.tick()
        assert leadership.leading
        assert (await client.post("/ack")).status_code == 200
        await anyio.sleep(1.0)  # not renewed (paused): refused by its own clock
        with pytest.raises(LeaseLost):
            await client.put("/resolve")
    assert sent == ["GET", "POST"]
    ledger.dispose()


def test_once_is_refused_while_a_replica_leads(pg_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    ledger = Ledger.open(pg_url)
    other = Lease(30.0, holder="node-b:42:abc")
    other.token = ledger.call(other.attempt, fenced=False).token
    config = tmp_path / "syncd.toml"
    config.write_text(f'[ledger]\nurl = "{pg_url}"\n')
    proc = subprocess.run([sys.executable, "-m", "syncd", "once", "-c", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "is led by node-b:42:abc" in proc.stderr
    ledger.call(other.release, fenced=False)  # no leader: once takes the lease, gives it back
    proc = subprocess.run([sys.executable, "-m", "syncd", "once", "-c", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    term = ledger.call(current, fenced=False)
    assert term is not None and term.expired and term.token == 2
    ledger.dispose()


async def test_a_leader_that_stepped_down_renews_before_it_writes_again(pg_url: str) -> None:
    """A leader whose own deadline ran out (a slow renewal, a pause) refuses a write and steps
    down, while its row is still its own and unexpired in the database. Its next attempt must
    renew the row before it counts as leader again: taking the unrenewed row for a renewal
    gave it a local deadline past the database's expiry, and a standby took over while the
    ex-leader's guard still let its pushes out (both replicas pushing)."""
    first, second = Ledger.open(pg_url), Ledger.open(pg_url)
    a, b = Lease(2.0, holder="a"), Lease(2.0, holder="b")
    leader, standby = Leadership(a, first), Leadership(b, second)
    await leader.tick()
    assert leader.leading
    await anyio.sleep(a.ttl - a.margin + 0.1)  # past a's own deadline, before the db expiry
    with pytest.raises(LeaseLost) as refused:
        a.guard()  # a push refused by the transport
    leader.stepped_down(str(refused.value))
    await leader.tick()
    if leader.leading:  # its local deadline must fall before the database's expiry
        term = first.call(current, fenced=False)
        assert term is not None and (term.holder, term.token) == ("a", a.token)
        assert term.expires_at - term.now > timedelta(seconds=a.valid_until - a.clock())
    await anyio.sleep(a.margin + 0.1)  # the term as the database had it before has ended
    await standby.tick()
    assert not (leader.leading and standby.leading)
    first.dispose()
    second.dispose()


async def test_a_transaction_longer_than_the_renewal_interval_commits(pg_url: str) -> None:
    """Under load (a slow database, a big poll page) a leader's transaction can outlast
    ``ttl / 3``: its own renewal commits meanwhile. The fence must not turn that into a
    serialization failure (checked at the end, the lease row read FOR SHARE had changed since
    the snapshot: every retry failed the same way and the work never landed)."""
    ledger = Ledger.open(pg_url)
    lease = Lease(1.5, holder="a")
    leadership = Leadership(lease, ledger)
    await leadership.tick()

    def slow(tx, key: str) -> None:  # type: ignore[no-untyped-def]
        tx.due("a", utcnow())  # the transaction's first read
        time.sleep(lease.renew_every + 0.2)
        owe(tx, key)

    async with anyio.create_task_group() as tg:
        tg.start_soon(leadership.run)
        await ledger.run(slow, "slow")
        tg.cancel_scope.cancel()
    assert keys(ledger) == ["slow"]
    assert leadership.leading
    ledger.dispose()


@pytest.mark.slow
async def test_a_leader_keeps_its_term_through_a_database_outage_shorter_than_its_deadline(
        postgres, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL goes away across two renewals (ttl / 3 apart) and is back well before the
    leader's own deadline. A failed renewal is retried about every second, so the leader
    renews as soon as the database answers and keeps its term; retried only at the next
    ttl / 3, the attempt came after the deadline: the leader stopped leading and its term
    ended although the outage was shorter than the TTL (docs/ha.md promises it keeps it)."""
    ledger = Ledger.open(pg_url)
    lease = Lease(12.0, holder="a")  # renewals 4 s apart, deadline 10.8 s after a renewal
    changes: list[bool] = []
    leadership = Leadership(lease, ledger, changes.append)
    async with anyio.create_task_group() as tg:
        tg.start_soon(leadership.run)
        begun = time.monotonic()
        await anyio.sleep(0.5)
        assert leadership.leading
        try:
            await anyio.to_thread.run_sync(postgres.stop)
            await anyio.sleep(begun + 2 * lease.renew_every + 0.3 - time.monotonic())
        finally:
            await anyio.to_thread.run_sync(postgres.start)
        back = time.monotonic() - begun
        await anyio.sleep(begun + lease.ttl + 1.0 - time.monotonic())
        tg.cancel_scope.cancel()
    assert back < lease.ttl - lease.margin - 1.5, f"the server took {back:.1f} s to come back"
    assert changes == [True] and lease.token == 1 and leadership.leading
    ledger.dispose()


async def test_a_renewal_waits_for_the_leaders_own_transaction(pg_url: str) -> None:
    """The leader's transactions hold the lease row FOR SHARE from their first statement: its
    renewal waits for one (up to ttl / 3) instead of failing after the standby's short lock
    wait, which under steady load of such transactions ran the leader out of its lease."""
    ledger = Ledger.open(pg_url)
    lease = Lease(6.0, holder="a")  # renewals 2 s apart
    leadership = Leadership(lease, ledger)
    await leadership.tick()

    def slow(tx) -> None:  # type: ignore[no-untyped-def]
        tx.due("a", utcnow())
        time.sleep(1.6)  # longer than a standby waits for the row, shorter than ttl / 3

    async with anyio.create_task_group() as tg:
        tg.start_soon(ledger.run, slow)
        await anyio.sleep(0.3)
        term = await leadership.tick()
    assert term is not None and term.holder == "a" and term.token == 1
    ledger.dispose()


async def test_a_standby_sees_a_busy_leader_without_waiting_for_its_row(pg_url: str) -> None:
    """The leader's transactions hold the lease row FOR SHARE from their first statement. A
    standby that locked the row FOR UPDATE on every attempt gave up after its 1 s lock wait
    behind any longer leader transaction, and said so as `lease.unreachable` and a ledger
    that is not writable, while the leader was fine. A row held by an unexpired other holder
    is read without a lock: nothing to take, nothing to wait for."""
    leader_ledger, standby_ledger = Ledger.open(pg_url), Ledger.open(pg_url)
    leader = Leadership(Lease(15.0, holder="a"), leader_ledger)
    standby = Leadership(Lease(15.0, holder="b"), standby_ledger)
    await leader.tick()

    def slow(tx) -> None:  # type: ignore[no-untyped-def]
        tx.due("a", utcnow())
        time.sleep(1.6)  # longer than a standby waits for the row

    async with anyio.create_task_group() as tg:
        tg.start_soon(leader_ledger.run, slow)
        await anyio.sleep(0.3)
        term = await standby.tick()
    assert term is not None and term.holder == "a"
    assert not standby._failing and standby_ledger.failure is None
    leader_ledger.dispose()
    standby_ledger.dispose()


async def test_renewals_start_a_third_of_the_ttl_apart_however_long_one_waits(
        pg_url: str) -> None:
    """The deadline counts from a renewal's start, so the next one must start ``ttl / 3``
    after that start, not ``ttl / 3`` after a slow renewal ended: one that waited behind the
    leader's own transaction otherwise took its wait out of the next renewal's budget (at
    6 s, 2 s of waiting + 0.7 s left the next one 0.7 s before the deadline)."""
    ledger = Ledger.open(pg_url)
    lease = Lease(2.4, holder="a")  # renewals 0.8 s apart
    leadership = Leadership(lease, ledger)
    starts: list[float] = []
    leading, third = anyio.Event(), anyio.Event()

    async def watch() -> None:  # each renewal's start, from the deadline it set
        while True:
            began = lease.valid_until - lease.ttl + lease.margin
            if lease.token is not None and (not starts or began != starts[-1]):
                starts.append(began)
                for event, count in ((leading, 1), (third, 3)):
                    if len(starts) == count:
                        event.set()
            await anyio.sleep(0.01)

    def busy(tx) -> None:  # type: ignore[no-untyped-def]
        tx.due("a", utcnow())  # holds the lease row FOR SHARE from here to the commit
        time.sleep(1.3)  # the second renewal (at 0.8 s) waits ~0.5 s for the row

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        tg.start_soon(leadership.run)
        await leading.wait()
        await ledger.run(busy)
        await third.wait()
        tg.cancel_scope.cancel()
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert gaps[1] < lease.renew_every + 0.45, f"renewals started {gaps} s apart"
    ledger.dispose()


async def test_a_stop_during_the_first_acquisition_still_releases_what_it_took(
        pg_url: str) -> None:
    """resign() looked at the token before the acquisition on the lease's thread had
    finished: it returned without releasing, the acquisition then committed, and a standby
    waited a whole TTL. Now the stop marks the lease resigning first: the acquisition that
    gets the row after it takes nothing (the lease stays free for a standby)."""
    import threading

    ledger, other = Ledger.open(pg_url), Ledger.open(pg_url)
    old = Lease(6.0, holder="old")
    await old.maintain(ledger)
    await ledger.run_lease(old.release)  # free to take, once its row is not held
    other.fence = old.fence  # its transactions hold the row FOR SHARE, as a leader's do
    holding, done = threading.Event(), threading.Event()

    def hold(tx) -> None:  # type: ignore[no-untyped-def]
        holding.set()
        done.wait(5)

    leadership = Leadership(Lease(6.0, holder="a"), ledger)
    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.to_thread.run_sync, other.call, hold)
        await anyio.to_thread.run_sync(holding.wait)
        tg.start_soon(leadership.tick)  # the first acquisition waits for the row
        await anyio.sleep(0.2)
        tg.start_soon(leadership.resign)  # a stop now
        await anyio.sleep(0.2)
        done.set()  # the acquisition goes through (within its 1 s lock wait)
    term = ledger.call(current, fenced=False)
    assert term is not None and term.expired, term  # free: nobody waits out a TTL
    assert not leadership.lease.held()
    ledger.dispose()
    other.dispose()
