"""Per-account rate budgets: token buckets from the vendor's documented limits.

Every request a vendor client makes takes a token from the account-wide bucket ("*") and, where
the vendor documents per-endpoint limits (Splunk On-Call), from that endpoint's bucket too. Limits
are scaled by ``budget_fraction`` so syncd leaves room for other tools using the same key.

Writes have priority: a read waits while any write is waiting on the same bucket, so a backlog of
pushes is never starved by polls; and a poll's reads (:class:`PollReads`) wait while the
account's pushes are running at all, for a bounded time, so a storm's first pushes get the full
bucket instead of sharing it with a poll that happened to be reading. A 429 (or a vendor's
equivalent) pauses a bucket until the vendor's reset time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass

import anyio

ACCOUNT = "*"
POLL_WAIT_STEP = 0.05
"""Seconds between a waiting poll read's looks at whether the account's pushes are done."""
ROUND_TRIP = 1.0
"""Seconds one vendor call is assumed to take at worst (WAN round trip plus the vendor's own
time): what :meth:`Budget.parallel_calls` sizes the calls in flight by."""
MAX_PARALLEL = 16
"""Most calls one account keeps in flight, however large its budget."""


@dataclass(frozen=True, slots=True)
class Limit:
    """``requests`` per ``seconds``; ``burst`` defaults to the full window's allowance."""

    requests: float
    seconds: float = 60.0
    burst: float | None = None

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


class Bucket:
    """A token bucket with a pause and a write-first queue. Not thread-safe: one event loop."""

    def __init__(
        self, limit: Limit, fraction: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = limit.rate * fraction
        self.capacity = max(1.0, (limit.burst if limit.burst is not None else limit.requests)
                            * fraction)
        self._clock = clock
        self._tokens = self.capacity
        self._stamp = clock()
        self._paused_until = 0.0
        self._writers_waiting = 0
        self.taken = 0

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def delay(self) -> float:
        """Seconds until one token is available (0 when one is available now)."""
        self._refill()
        wait = max(0.0, self._paused_until - self._clock())
        if self._tokens < 1.0:
            wait = max(wait, (1.0 - self._tokens) / self.rate)
        return wait

    def remaining(self) -> float:
        self._refill()
        return 0.0 if self._paused_until > self._clock() else math.floor(self._tokens)

    def take(self) -> None:
        self._refill()
        self._tokens -= 1.0
        self.taken += 1

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))
        self._tokens = min(self._tokens, 0.0)


class PollReads:
    """Marks the reads of one poll (set in :data:`POLL_READS` while the poll runs): they wait
    while the account's pushes run, at most ``patience`` seconds in all for this poll."""

    def __init__(self, patience: float) -> None:
        self.patience = patience
        self.waited = 0.0


POLL_READS: ContextVar[PollReads | None] = ContextVar("syncd_poll_reads", default=None)


class Budget:
    """All buckets of one account. ``acquire`` before every request."""

    def __init__(
        self,
        limits: Mapping[str, Limit],
        fraction: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        scale: float = 1.0,
    ) -> None:
        """``scale`` multiplies every limit; only tests and benchmarks set it, together with
        the simulators' rate-limit override, to run documented limits faster than real time."""
        if not 0 < fraction <= 1:
            raise ValueError("budget_fraction must be in (0, 1]")
        self.fraction = fraction
        self.scale = scale
        self.limits = dict(limits)
        self._clock = clock
        self._buckets = {
            name: Bucket(limit, fraction * scale, clock) for name, limit in limits.items()
        }
        self.pushing = 0
        """Dispatches of this account running now (the dispatcher counts them)."""

    def sibling(self, limits: Mapping[str, Limit]) -> Budget:
        """A budget for another host of the same account with its own documented limit
        (PagerDuty's Events API): same fraction, clock and scale, its own buckets."""
        return Budget(limits, self.fraction, self._clock, scale=self.scale)

    def buckets_for(self, endpoint: str) -> list[Bucket]:
        names = [ACCOUNT, endpoint] if endpoint != ACCOUNT else [ACCOUNT]
        return [self._buckets[n] for n in names if n in self._buckets]

    async def acquire(self, endpoint: str = ACCOUNT, *, write: bool = False) -> float:
        """Wait for a token in every bucket that applies; return the seconds waited."""
        buckets = self.buckets_for(endpoint)
        if not buckets:
            return 0.0
        waited = 0.0
        poll = None if write else POLL_READS.get()
        if write:
            for b in buckets:
                b._writers_waiting += 1
        try:
            while True:
                delay = max(b.delay() for b in buckets)
                if not write and any(b._writers_waiting for b in buckets):
                    delay = max(delay, 0.01)
                if poll is not None and self.pushing and poll.waited < poll.patience:
                    delay = max(delay, POLL_WAIT_STEP)
                    poll.waited += delay
                if delay <= 0:
                    for b in buckets:
                        b.take()
                    return waited
                await anyio.sleep(delay)
                waited += delay
        finally:
            if write:
                for b in buckets:
                    b._writers_waiting -= 1

    def pause(self, endpoint: str, seconds: float) -> None:
        """Stop using ``endpoint`` (and, for the account bucket, everything) for ``seconds``."""
        for bucket in self.buckets_for(endpoint)[-1:]:
            bucket.pause(seconds)

    def _account_buckets(self) -> list[Bucket]:
        """The account-wide bucket, or every bucket where the vendor documents none."""
        bucket = self._buckets.get(ACCOUNT)
        return [bucket] if bucket is not None else list(self._buckets.values())

    def parallel_calls(self, round_trip: float = ROUND_TRIP, most: int = MAX_PARALLEL) -> int:
        """How many calls to keep in flight so the account's rate is used even when each call
        takes ``round_trip`` seconds: its bucket's rate times the round trip, between 1 and
        ``most``. A budget of a few calls a minute stays one call at a time; the buckets, not
        this number, keep the calls within the vendor's limits."""
        buckets = self._account_buckets()
        rate = min((b.rate for b in buckets), default=0.0)
        return max(1, min(most, math.ceil(rate * round_trip)))

    def available(self) -> float:
        """Calls the account could make right now (the tokens of its account bucket)."""
        buckets = self._account_buckets()
        return min((b.remaining() for b in buckets), default=math.inf)

    def writes_waiting(self) -> int:
        """Requests with the writes' priority waiting for a token of the account bucket now
        (pushes short of budget)."""
        return max((b._writers_waiting for b in self._account_buckets()), default=0)

    def headroom(self) -> float:
        """Share of the account bucket still available (1.0 full, 0.0 empty or paused): what
        optional reads (webhook-triggered polls) look at before spending tokens pushes need."""
        buckets = self._account_buckets()
        return min((b.remaining() / b.capacity for b in buckets), default=1.0)

    def snapshot(self) -> dict[str, float]:
        """Tokens left per bucket, for ``syncd status`` and the budget gauge."""
        return {name: b.remaining() for name, b in self._buckets.items()}

    def seconds_for(self, requests: int, endpoint: str = ACCOUNT) -> float:
        """Best-case time the budget allows for ``requests`` more calls (used by benchmarks)."""
        worst = 0.0
        for b in self.buckets_for(endpoint):
            worst = max(worst, max(0.0, requests - b.capacity) / b.rate)
        return worst
