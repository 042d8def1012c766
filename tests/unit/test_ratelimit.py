"""The account budget's own rules (syncd/ratelimit.py), on the real clock with fast limits."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import anyio
import pytest

from syncd.ratelimit import ACCOUNT, POLL_READS, ROUND_TRIP, Budget, Limit, PollReads
from syncd.simulators.base import SimClock, WindowLimiter
from syncd.simulators.pagerduty import RATE_LIMIT as PD_RATE_LIMIT
from syncd.simulators.victorops import LIMIT_TABLES as VO_LIMITS
from syncd.vendors.incidentio import IncidentIOClient
from syncd.vendors.pagerduty import PagerDutyClient
from syncd.vendors.spike import SpikeClient
from syncd.vendors.victorops import ACK, limit_table

ACK_2018 = f"PATCH {ACK}"


def fast_account(rate: float) -> Limit:
    """A fast account limit with a burst of 0.2 s of its rate, so tokens a loaded machine's loop
    lag would cost at a burst of 1 stay in the bucket for the writes (no flaky share asserts)."""
    return Limit(rate, 1.0, burst=rate * 0.2)


@asynccontextmanager
async def backlog(
    budget: Budget, poll: PollReads | None, pushers: int = 2
) -> AsyncIterator[None]:
    """A backlog of pushes that never ends (``pushers`` tasks, a write always waiting for the
    next token) around the body, which reads as ``poll``'s reads (None: outside a poll)."""

    async def push_forever() -> None:
        while True:
            await budget.acquire(write=True)

    reads = POLL_READS.set(poll)
    try:
        async with anyio.create_task_group() as tg:
            for _ in range(pushers):
                tg.start_soon(push_forever)
            await anyio.sleep(0.02)
            with anyio.fail_after(5.0):
                yield
            tg.cancel_scope.cancel()
    finally:
        POLL_READS.reset(reads)


async def test_a_poll_read_is_not_starved_by_a_backlog_of_pushes() -> None:
    """Pushes short of budget for good (a long backlog: a write always waiting for the next
    token) put a poll's reads off for the poll's patience, not for as long as the backlog
    lasts: then the read takes a token too."""
    budget = Budget({ACCOUNT: fast_account(40)})
    account = budget.buckets_for(ACCOUNT)[0]
    async with backlog(budget, PollReads(0.2)):
        before = account.taken
        waited = await budget.acquire()
    assert waited >= 0.2  # it deferred to the writes for the poll's patience first
    assert account.taken - before - 1 > 3  # the pushes had the budget meanwhile (~8)


async def test_an_overdue_read_does_not_wait_for_writes_blocked_on_their_endpoint() -> None:
    """Overdue reads alternate with the writes that can go, not with writes waiting on their own
    slow endpoint (Splunk On-Call's acks, 6 a minute, against 120 a minute for the account):
    those would pace every poll at the ack rate (final read: 1 read in 8 s)."""
    ack = "PATCH /api-public/v1/incidents/ack"
    budget = Budget({ACCOUNT: fast_account(50), ack: Limit(2, 1.0, burst=1)},
                    read_defer_max=0.05)
    reads = 0

    async def push_acks() -> None:
        while True:
            await budget.acquire(ack, write=True)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(push_acks)
        await anyio.sleep(0.02)
        with anyio.move_on_after(1.0):
            while True:
                await budget.acquire()
                reads += 1
        tg.cancel_scope.cancel()
    assert reads > 10, reads  # ~45 at the account's rate; ~2 when paced by the acks


async def test_an_overdue_read_on_a_slow_endpoint_does_not_hold_the_writes() -> None:
    """A poll's read past its patience waiting on a slow per-endpoint bucket (Splunk On-Call's
    GET incidents, 6/min) leaves the account bucket to the writes meanwhile: they go on at about
    the budget, and the read gets its token once its endpoint has one (review of the first fix:
    an overdue read raising its flag on every bucket let 2 writes through instead of ~62)."""
    rate, slow = 100.0, "GET /api-public/v1/incidents"
    budget = Budget({ACCOUNT: fast_account(rate), slow: Limit(1, 0.5, burst=1)})
    budget.buckets_for(slow)[-1].take()  # the endpoint's token is spent: 0.5 s to the next
    account = budget.buckets_for(ACCOUNT)[0]
    async with backlog(budget, PollReads(0.05)):
        await budget.acquire()  # the poll's first read spends its patience
        before, start = account.taken, anyio.current_time()
        await budget.acquire(slow)
        elapsed = anyio.current_time() - start
        writes = account.taken - before - 1
    assert elapsed >= 0.2  # the overdue read did wait on its endpoint
    # About the budget (the first fix let 2 through in ~0.5 s, ~0.04 x rate x elapsed).
    assert writes >= 0.3 * rate * elapsed, (writes, elapsed)


async def test_an_overdue_poll_of_many_pages_leaves_the_writes_half_the_tokens() -> None:
    """A poll past its patience reading 20 pages (a few ms each) while 4 pushers keep a backlog
    of writes: the overdue reads alternate with the writes, at most 1:1, instead of taking the
    next token each time one waits (review: ~20 of ~23 tokens went to the poll meanwhile)."""
    budget = Budget({ACCOUNT: fast_account(40)})
    account = budget.buckets_for(ACCOUNT)[0]
    poll = PollReads(0.0)  # overdue from its first page
    async with backlog(budget, poll, pushers=4):
        before = account.taken
        for _ in range(20):
            await budget.acquire()
            await anyio.sleep(0.002)  # the page's round trip
        taken = account.taken - before
    writes = taken - 20
    assert writes >= 0.4 * taken, (writes, taken)  # ~half: the 1:1 alternation allows 19/39


async def test_a_read_outside_a_poll_defers_to_writes_for_read_defer_max() -> None:
    """A read outside a poll (no patience of its own) defers to a backlog of writes for the
    budget's ``read_defer_max``, then takes the next token ahead of them."""
    budget = Budget({ACCOUNT: fast_account(40)}, read_defer_max=0.2)
    account = budget.buckets_for(ACCOUNT)[0]
    async with backlog(budget, None):
        before = account.taken
        waited = await budget.acquire()
    assert waited >= 0.2  # it deferred to the writes first
    assert account.taken - before - 1 > 3  # the writes had the budget meanwhile (~8)


@pytest.mark.parametrize("fraction", [1.0, 0.75, 0.5, 0.3])
@pytest.mark.parametrize(("limits", "endpoint", "per_minute"), [
    (PagerDutyClient.limits, ACCOUNT, PD_RATE_LIMIT),
    (limit_table("2018"), ACK_2018, VO_LIMITS["2018"][ACK_2018]),
    (SpikeClient.limits, ACCOUNT, 50),
], ids=["pagerduty", "victorops-ack-2018", "spike"])
def test_no_budget_fraction_outruns_a_per_minute_window(
        limits: Mapping[str, Limit], endpoint: str, per_minute: int, fraction: float) -> None:
    """"N per minute" as the simulators hold it (a sliding 60 s window, the vendors' words):
    a client sending as fast as its budget allows, at any ``budget_fraction`` up to 1, is never
    refused, over several windows (a bucket holding a window's allowance and refilling it over
    the window let twice the limit through in the first minute), and still sends its share.
    Each call reaches the vendor up to a round trip after it took its token (seeded, counted by
    the vendor in arrival order): a budget counting its window without that travel is refused."""
    clock = SimClock()
    budget = Budget(limits, fraction, clock=clock.monotonic)
    buckets = budget.buckets_for(endpoint)
    taken: list[float] = []  # seconds from the start at which each call took its tokens
    start = clock.monotonic()
    while clock.monotonic() - start < 300:
        clock.advance(max(b.delay() for b in buckets))
        for b in buckets:
            b.take()
        taken.append(clock.monotonic() - start)
    travel = random.Random(f"{endpoint} {fraction}")
    arrivals = sorted(at + travel.uniform(0, ROUND_TRIP) for at in taken)
    vendor_clock = SimClock()
    window, origin = WindowLimiter(vendor_clock), vendor_clock.monotonic()
    for sent, arrival in enumerate(arrivals):
        vendor_clock.advance(max(0.0, origin + arrival - vendor_clock.monotonic()))
        refused = window.hit("key", endpoint, per_minute, 60.0)
        assert refused is None, (sent, arrival)
    # Its share: the burst plus the rate over 300 s, or the window's N at most (61 s windows).
    assert len(taken) >= 0.85 * min(per_minute * 300 / 61, fraction * per_minute * 6)


@pytest.mark.parametrize(("limits", "fraction", "burst", "then"), [
    (PagerDutyClient.limits, 1.0, 960, 60.0 + ROUND_TRIP),  # its first call leaves the window
    (PagerDutyClient.limits, 0.5, 480, 1 / 8),  # the next token, as before: 8 a second
    (IncidentIOClient.limits, 1.0, 1200, 1 / 20),  # a documented bucket: 20 a second after it
], ids=["pagerduty-1.0", "pagerduty-0.5", "incidentio-1.0"])
def test_a_budget_keeps_its_whole_burst_then_waits_for_token_or_window(
        limits: Mapping[str, Limit], fraction: float, burst: int, then: float) -> None:
    """The whole burst goes at once at any fraction: a daemon's first polls and a push burst
    spend it, and the vendor allows N at once (bounding the burst to what the rate leaves of N
    left one call at a time at budget_fraction=1: ``syncd demo`` went from 6 s to failing, the
    SIGTERM push-burst test failed). Past it a budget waits for its next token or, above 0.5,
    for its first call to leave the vendor's window (and a round trip), whichever is later."""
    now = 1000.0
    budget = Budget(limits, fraction, clock=lambda: now)
    bucket = budget.buckets_for(ACCOUNT)[0]
    for sent in range(burst):
        assert bucket.delay() == 0, sent
        bucket.take()
    assert bucket.delay() == pytest.approx(then)
