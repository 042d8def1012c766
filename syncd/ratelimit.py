"""Per-account rate budgets: token buckets from the vendor's documented limits.

Every request a vendor client makes takes a token from the account-wide bucket ("*") and, where
the vendor documents per-endpoint limits (Splunk On-Call), from that endpoint's bucket too. Limits
are scaled by ``budget_fraction`` so syncd leaves room for other tools using the same key.

Writes have priority: a read waits while any write is waiting on the same bucket, so a backlog of
pushes is never starved by polls; and a poll's reads (:class:`PollReads`) wait while the
account's pushes are running at all, so a storm's first pushes get the full bucket instead of
sharing it with a poll that happened to be reading. Both waits are bounded (the poll's patience;
``read_defer_max`` for other reads): a read still waiting for writes after that is overdue and
gets the next token of its first bucket (the account's) ahead of them, so no backlog of pushes,
however long, starves the polls (a read merely let compete would lose every token to the writes
already queued). That priority only holds when the bucket's last token went to a write: while
writes wait, overdue reads and writes alternate at most 1:1, so an overdue poll of many pages
takes at most about half the account's tokens from a backlog of pushes (issue 16 target 4), not
nearly all of them for as long as it reads. It asks for that token only while its other
buckets (a slow per-endpoint limit) have one for it too, so it never holds the account's writes
while it waits on another bucket.
A 429 (or a vendor's equivalent) pauses a bucket until the vendor's reset time.

A limit without a documented burst is the vendor's "N per minute", a sliding window (PagerDuty,
Splunk On-Call, Spike.sh; the simulators hold it so). Its bucket holds and refills
``budget_fraction`` of N per window, so a window can see up to twice that: at a fraction above
0.5 the bucket also counts its calls of the last window (a round trip longer, see
:class:`_Window`) and never lets more than N into one, whatever the fraction. The burst stays
whole: the bucket's capacity, ``budget_fraction`` x N calls (all N only at 1.0), still goes at
once, as the vendor allows.
"""

from __future__ import annotations

import math
import time
from collections import deque
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
READ_DEFER_MAX = 60.0
"""Seconds a read outside a poll (no :class:`PollReads`) defers to waiting writes before it is
overdue and takes its turn: writes first, but no read waits for a backlog as long as it lasts."""
DEFER_STEP = 0.01
"""Seconds a read deferring to writes sleeps between looks (a write held by an overdue read
sleeps a token's time instead: the read takes the next token, the write the one after)."""
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
    """A token bucket with a pause, a write-first queue and, where the tokens alone could outrun
    the vendor's "N per minute", that window (:func:`_window_for`). Not thread-safe: one event
    loop."""

    def __init__(
        self, limit: Limit, fraction: float = 1.0, clock: Callable[[], float] = time.monotonic,
        *, scale: float = 1.0,
    ) -> None:
        """``fraction`` is the account's ``budget_fraction``, ``scale`` the tests' speed-up
        (:class:`Budget`): both multiply the rate and the burst, only ``scale`` the window."""
        self.rate = limit.rate * fraction * scale
        self.capacity = max(1.0, (limit.burst if limit.burst is not None else limit.requests)
                            * fraction * scale)
        self._clock = clock
        self._tokens = self.capacity
        self._stamp = clock()
        self.window = _window_for(limit, self.capacity, self.rate, scale)
        self._paused_until = 0.0
        self._writers_waiting = 0
        self._writers_ready = 0
        """Waiting writes whose other buckets have a token for them (:class:`_Write`)."""
        self._overdue_waiting = 0
        """Overdue reads ready in their other buckets, waiting for this one's next token."""
        self._last_write = False
        """Whether the last token taken went to a write: only then does an overdue read's claim
        hold the writes (at most one overdue read per write while writes wait)."""
        self.taken = 0

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def delay(self) -> float:
        """Seconds until one token is available (0 when one is available now)."""
        self._refill()
        now = self._clock()
        wait = max(0.0, self._paused_until - now)
        if self._tokens < 1.0:
            wait = max(wait, (1.0 - self._tokens) / self.rate)
        if self.window is not None:
            wait = max(wait, self.window.delay(now))
        return wait

    def remaining(self) -> float:
        self._refill()
        now = self._clock()
        if self._paused_until > now:
            return 0.0
        tokens = math.floor(self._tokens)
        return tokens if self.window is None else min(tokens, self.window.remaining(now))

    def take(self, write: bool = False) -> None:
        self._refill()
        self._tokens -= 1.0
        self.taken += 1
        self._last_write = write
        if self.window is not None:
            self.window.take(self._clock())

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))
        self._tokens = min(self._tokens, 0.0)


class _Window:
    """The calls of the last window, at most ``requests`` of them: "N per minute" held as the
    vendors (and the simulators) hold it, a sliding window. Each call is counted for a round
    trip longer than the vendor's window: syncd counts it when it takes its token, the vendor
    when it arrives, up to :data:`ROUND_TRIP` later."""

    def __init__(self, requests: int, seconds: float) -> None:
        self.requests = requests
        self.seconds = seconds + ROUND_TRIP
        self._sent: deque[float] = deque(maxlen=requests)

    def _expire(self, now: float) -> None:
        while self._sent and self._sent[0] <= now - self.seconds:
            self._sent.popleft()

    def delay(self, now: float) -> float:
        """Seconds until the oldest call leaves a full window (0 while it has room)."""
        self._expire(now)
        return 0.0 if len(self._sent) < self.requests else self._sent[0] + self.seconds - now

    def remaining(self, now: float) -> int:
        self._expire(now)
        return self.requests - len(self._sent)

    def take(self, now: float) -> None:
        self._sent.append(now)


def _window_for(limit: Limit, capacity: float, rate: float, scale: float) -> _Window | None:
    """The window a bucket keeps besides its tokens, only where the tokens alone could let more
    than the vendor's N into one window: a limit with no documented burst ("N per minute"), whose
    bucket lets through at most its burst plus a window's refill, ``2 * fraction * N``, so at
    a ``budget_fraction`` above 0.5 only. N is the vendor's number, not ``fraction * N``: the
    fraction stays the long-run share (and the burst), the window is the vendor's refusal line,
    and a budget at 0.5 or less behaves exactly as it did."""
    if limit.burst is not None:
        return None  # a documented bucket (incident.io): the vendor refills it as we do
    allowed = max(1, math.floor(limit.requests * scale))
    if math.floor(capacity + rate * limit.seconds) <= allowed:
        return None
    return _Window(allowed, limit.seconds)


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
        read_defer_max: float = READ_DEFER_MAX,
    ) -> None:
        """``scale`` multiplies every limit; only tests and benchmarks set it, together with
        the simulators' rate-limit override, to run documented limits faster than real time.
        ``read_defer_max``: how long a read outside a poll defers to waiting writes."""
        if not 0 < fraction <= 1:
            raise ValueError("budget_fraction must be in (0, 1]")
        self.fraction = fraction
        self.scale = scale
        self.read_defer_max = read_defer_max
        self.limits = dict(limits)
        self._clock = clock
        self._buckets = {
            name: Bucket(limit, fraction, clock, scale=scale) for name, limit in limits.items()
        }
        self.pushing = 0
        """Dispatches of this account running now (the dispatcher counts them)."""

    def sibling(self, limits: Mapping[str, Limit]) -> Budget:
        """A budget for another host of the same account with its own documented limit
        (PagerDuty's Events API): same fraction, clock and scale, its own buckets."""
        return Budget(limits, self.fraction, self._clock, scale=self.scale,
                      read_defer_max=self.read_defer_max)

    def buckets_for(self, endpoint: str) -> list[Bucket]:
        names = [ACCOUNT, endpoint] if endpoint != ACCOUNT else [ACCOUNT]
        return [self._buckets[n] for n in names if n in self._buckets]

    async def acquire(self, endpoint: str = ACCOUNT, *, write: bool = False) -> float:
        """Wait for a token in every bucket that applies; return the seconds waited."""
        buckets = self.buckets_for(endpoint)
        if not buckets:
            return 0.0
        if not write:
            read = _Read(self, buckets, POLL_READS.get())
            try:
                return await _take_when_ready(buckets, read.delay, write=False)
            finally:
                read.done()
        for b in buckets:
            b._writers_waiting += 1
        turn = _Write(buckets)
        try:
            return await _take_when_ready(buckets, turn.delay, write=True)
        finally:
            turn.done()
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
            if b.window is not None:  # every N more calls wait for a window to pass
                worst = max(worst, (max(0, requests - 1) // b.window.requests)
                            * b.window.seconds)
        return worst


async def _take_when_ready(
    buckets: list[Bucket], delay: Callable[[], float], *, write: bool
) -> float:
    """Sleep until ``delay`` (the buckets' wait and the caller's turn) is 0, then take a token
    of every bucket (for a write or a read: whose turn is next); return the seconds slept."""
    waited = 0.0
    while (wait := delay()) > 0:
        await anyio.sleep(wait)
        waited += wait
    for b in buckets:
        b.take(write)
    return waited


def _write_delay(buckets: list[Bucket]) -> float:
    """A write goes ahead of the reads, except an overdue read ready for the next token of a
    bucket whose last token went to a write: the write then sleeps a token's time (the read takes
    the next one) rather than looking again every few milliseconds."""
    delay = max(b.delay() for b in buckets)
    for b in buckets:
        if b._overdue_waiting and b._last_write:
            delay = max(delay, 1.0 / b.rate)
    return delay


class _Write:
    """One write's turn, flagged on its first bucket (the account's) as *ready* while its other
    buckets (a slow per-endpoint limit) have a token for it: an overdue read yields the
    account's next token only to a write that can take it, not to one blocked on its own
    endpoint (Splunk On-Call's acks, 6 a minute, would otherwise pace the polls)."""

    def __init__(self, buckets: list[Bucket]) -> None:
        self.buckets = buckets
        self.ready = False

    def delay(self) -> float:
        ready = max((b.delay() for b in self.buckets[1:]), default=0.0) <= 0
        if ready != self.ready:
            self.ready = ready
            self.buckets[0]._writers_ready += 1 if ready else -1
        return _write_delay(self.buckets)

    def done(self) -> None:
        if self.ready:
            self.buckets[0]._writers_ready -= 1
            self.ready = False


class _Read:
    """One read's turn: it defers to the writes waiting on its buckets (and a poll's read to the
    account's running pushes) for a bounded time, then is overdue."""

    def __init__(self, budget: Budget, buckets: list[Bucket], poll: PollReads | None) -> None:
        self.budget, self.buckets, self.poll = budget, buckets, poll
        self.deferred = 0.0
        self.overdue = False
        self.flagged = False

    def delay(self) -> float:
        if self.overdue:
            return self._overdue_delay()
        delay = max(b.delay() for b in self.buckets)
        writers = any(b._writers_waiting for b in self.buckets)
        poll, pushing = self.poll, self.budget.pushing
        if poll is not None and poll.waited < poll.patience and (pushing or writers):
            delay = max(delay, POLL_WAIT_STEP if pushing else DEFER_STEP)
            poll.waited += delay
        elif writers and poll is None and self.deferred < self.budget.read_defer_max:
            delay = max(delay, DEFER_STEP)
            self.deferred += delay
        elif writers:
            self.overdue = True
            return self._overdue_delay()
        return delay

    def _overdue_delay(self) -> float:
        """The next token of the read's first bucket (the account's) goes to it ahead of the
        writes, but only while its other buckets have a token for it now: while it waits on one
        of those (a slow per-endpoint limit) the writes keep the account bucket."""
        first, others = self.buckets[0], self.buckets[1:]
        delay = max((b.delay() for b in others), default=0.0)
        if (delay <= 0) != self.flagged:
            self.flagged = not self.flagged
            first._overdue_waiting += 1 if self.flagged else -1
        if delay > 0:
            return delay
        if first._writers_ready and not first._last_write:
            # The last token went to a read: the next is the writes'; look again after it.
            return max(first.delay(), 1.0 / first.rate)
        return first.delay()

    def done(self) -> None:
        if self.flagged:
            self.buckets[0]._overdue_waiting -= 1
            self.flagged = False
