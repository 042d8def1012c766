"""The account budget's own rules (syncd/ratelimit.py), on the real clock with fast limits."""

from __future__ import annotations

from collections.abc import Mapping

import anyio
import pytest

from syncd.ratelimit import ACCOUNT, POLL_READS, Budget, Limit, PollReads
from syncd.simulators.base import SimClock, WindowLimiter
from syncd.simulators.pagerduty import RATE_LIMIT as PD_RATE_LIMIT
from syncd.simulators.victorops import LIMIT_TABLES as VO_LIMITS
from syncd.vendors.pagerduty import PagerDutyClient
from syncd.vendors.spike import SpikeClient
from syncd.vendors.victorops import ACK, limit_table

ACK_2018 = f"PATCH {ACK}"


@pytest.mark.xfail(strict=True, reason=(
    "open defect: a read defers to waiting writes without bound, so a push backlog that keeps "
    "a write queued for every token holds polls for as long as it lasts; the fix tried "
    "(an overdue read goes before the writes) let one overdue read on a slow endpoint bucket "
    "hold every write of the account (review), so it did not land"))
async def test_a_poll_read_is_not_starved_by_a_backlog_of_pushes() -> None:
    """Pushes short of budget for good (a long backlog: a write always waiting for the next
    token) put a poll's reads off for the poll's patience, not for as long as the backlog
    lasts: then the read takes a token too."""
    budget = Budget({ACCOUNT: Limit(40, 1.0, burst=1)})
    pushed = 0

    async def push_forever() -> None:
        nonlocal pushed
        while True:
            await budget.acquire(write=True)
            pushed += 1

    async def poll_read() -> None:
        POLL_READS.set(PollReads(0.2))
        await budget.acquire()

    async with anyio.create_task_group() as tg:
        for _ in range(2):
            tg.start_soon(push_forever)
        await anyio.sleep(0.05)
        with anyio.fail_after(2.0):
            await poll_read()
        tg.cancel_scope.cancel()
    assert pushed > 5  # the pushes had the budget meanwhile


OUTRUNS = pytest.mark.xfail(strict=True, reason=(
    "open defect: a limit without a burst gets a bucket of fraction*N refilling fraction*N "
    "per window, so fraction > 0.5 lets up to 2*fraction*N calls into one window; bounding "
    "the burst (or counting the window) slows daemons run at budget_fraction=1 against the "
    "documented limits (test_demo, test_daemon_ops SIGTERM burst): not landed"))


@pytest.mark.parametrize("fraction", [pytest.param(1.0, marks=OUTRUNS),
                                      pytest.param(0.75, marks=OUTRUNS), 0.5, 0.3])
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
    the window let twice the limit through in the first minute), and still sends its share."""
    clock = SimClock()
    window = WindowLimiter(clock)
    budget = Budget(limits, fraction, clock=clock.monotonic)
    buckets = budget.buckets_for(endpoint)
    sent, start = 0, clock.monotonic()
    while clock.monotonic() - start < 300:
        clock.advance(max(b.delay() for b in buckets))
        for b in buckets:
            b.take()
        refused = window.hit("key", endpoint, per_minute, 60.0)
        assert refused is None, (sent, clock.monotonic() - start)
        sent += 1
    # Its share: the burst plus the rate over 300 s, or the window's N at most (61 s windows).
    assert sent >= 0.85 * min(per_minute * 300 / 61, fraction * per_minute * 6)
