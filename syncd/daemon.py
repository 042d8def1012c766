"""The long-running service: scheduler, engine, status server, signals, sd_notify.

APScheduler (3.x, ``AsyncIOScheduler``) runs one poll job per account at its ``poll_interval``
with jitter, never two at once (``max_instances=1``) and coalescing missed runs. Pushes follow
poll rounds: the last poll of a round to finish (no other poll running) dispatches every account
once, so one push batch carries the changes of every source; a dispatch job per account drains
what comes due between rounds (retries, backoffs) every second, but not while a round is landing
(at most :data:`ROUND_WAIT` seconds). A long poll (a storm read in many pages) does not hold
the pushes back until it ends: after each committed page, every account of the polled account's
sync groups whose due actions fill whole pushes sends those (the round's dispatch sends the rest,
so a burst costs no more calls).
While an account's own pushes keep its budget short, its polls wait (:data:`STRETCH_MAX`).
SIGTERM/SIGINT stop new work, let in-flight pushes finish (bounded), close the ledger and exit 0,
well inside systemd's TimeoutStopSec. SIGHUP stops the same way with exit status 129: there is no
reload, and a failure status is what makes systemd (``Restart=on-failure``) start it again with
the config re-read, where death by SIGHUP would count as a clean stop and leave it down.
Stop signals stay handled until the shutdown is over: a second one cuts the drain short (what
is still on the wire stays pending for the next start), and never kills syncd by the signal's
default action.

On a PostgreSQL ledger several replicas may run: :class:`~syncd.engine.leadership.Leadership`
decides which one syncs. The others keep the same jobs scheduled, but each job returns at once
unless this replica leads, and their status servers keep answering (``/readyz`` says standby).
"""

from __future__ import annotations

import asyncio
import contextvars
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import anyio
import httpx
import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from syncd import metrics, sdnotify, secrets
from syncd.config import Config
from syncd.engine import Engine, isolated
from syncd.engine.cadence import STRETCH_MAX, Cadence
from syncd.engine.leadership import Leadership, fenced_out, user_agent
from syncd.engine.observe import ObserveResult
from syncd.ledger import Ledger, Status, ledger_error_in, utcnow
from syncd.ledger.lease import Lease

log = structlog.get_logger(__name__)

_JOB: contextvars.ContextVar[asyncio.Task[Any] | None] = contextvars.ContextVar(
    "syncd_job", default=None)
"""The scheduled job this code runs in (its task), seen by the tasks it starts too: shutdown
must know which running jobs are pushing (a poll round's dispatch runs inside the poll's job)."""


class StartError(Exception):
    """What keeps the daemon from starting, in one line; raised before anything runs."""

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
KEPT_IGNORED = (signal.SIGINT, signal.SIGHUP)
"""Stop signals left ignored when syncd starts with them ignored, as Python leaves SIGINT:
``nohup syncd run &`` ignores SIGHUP and a shell starts background jobs with SIGINT ignored, so
that they outlive the terminal. SIGTERM, systemd's stop, is always handled."""
HANGUP_STATUS = 128 + signal.SIGHUP
"""Exit status after SIGHUP: a failure to systemd, so Restart=on-failure starts syncd again."""
DISPATCH_EVERY = 1.0
COALESCE_PUSHES = 0.25
"""Pause between a round's last poll and its pushes: a poll starting within it joins the round."""
ROUND_WAIT = 2.0
"""Longest a poll round holds back the per-second dispatch job: a slow poll never holds the
other accounts' pushes for longer."""
AUTH_BACKOFF = 300.0
"""Seconds between polls of an account whose credentials were rejected (/readyz says so)."""
STOP_GRACE = 8.0
"""Seconds a push already on the wire at SIGTERM gets to land and be recorded."""
STOP_CANCEL_WAIT = 1.0
"""Seconds the jobs cancelled after the grace get to unwind before the ledger is closed."""
HINT_SPACING = 2.0
"""At most one webhook-triggered poll per account per this many seconds, however many arrive."""
HINT_HEADROOM = 0.5
"""Webhook hints are honoured only while the account's budget is at least this full: a flood of
valid deliveries must never spend the tokens pushes need (the regular poll schedule goes on)."""


@dataclass
class Health:
    """What /readyz and /status report, updated by the jobs."""

    started_at: datetime = field(default_factory=utcnow)
    last_poll: dict[str, datetime] = field(default_factory=dict)
    poll_errors: dict[str, str | None] = field(default_factory=dict)
    auth_failed: dict[str, bool] = field(default_factory=dict)
    auth_problem: dict[str, str] = field(default_factory=dict)  # what /readyz says about it
    stretched: dict[str, int] = field(default_factory=dict)  # polls put off in a row for pushes
    stopping: bool = False


class Daemon:
    def __init__(self, config: Config, ledger: Ledger, engine: Engine,
                 lease: Lease | None = None) -> None:
        self.config = config
        self.ledger = ledger
        self.engine = engine
        self.leadership = None if lease is None else Leadership(lease, ledger, self._role_changed)
        if lease is None:
            metrics.LEADER.set(1)  # alone on its ledger: always the one that syncs
        self.health = Health()
        self.stop_grace = STOP_GRACE
        """Seconds a stop waits for running jobs before abandoning them."""
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self._inflight: set[asyncio.Task[Any]] = set()
        self._pushing: dict[asyncio.Task[Any], int] = {}  # job -> its dispatches running
        self._dispatch_locks: dict[str, anyio.Lock] = {}
        self._auth_failed_at: dict[str, datetime] = {}
        self._hinted_at: dict[str, datetime] = {}
        self._polling: set[str] = set()
        self._round_opened: float | None = None  # monotonic start of the round now landing
        self._push_owed = False  # a poll of the landing round produced actions
        self._rehint: set[str] = set()
        self._again: dict[str, bool] = {}  # account -> a dispatch owed after the running one
        # (True: whole pushes only)
        self._early: set[asyncio.Task[None]] = set()  # dispatches started by a poll's pages
        self._stop = anyio.Event()
        self._hurry = anyio.Event()  # a second stop signal: no grace for pushes on the wire
        self._renewals: anyio.CancelScope | None = None  # the lease's, until the drain ends
        self._renewals_ended = anyio.Event()
        self.exit_code = 0
        """What ``syncd run`` exits with after a clean stop (:data:`HANGUP_STATUS` after SIGHUP)."""

    @classmethod
    def build(cls, config: Config, *,
              transports: Mapping[str, httpx.AsyncBaseTransport] | None = None) -> Daemon:
        # The lock is held until shutdown disposes of the ledger: a second daemon (or `once`)
        # on this ledger is refused instead of pushing every change a second time.
        ledger = Ledger.open(config.ledger_url, busy_timeout=config.ledger.busy_timeout,
                             exclusive=True, password=config.ledger_password)
        # A shared (PostgreSQL) ledger may have other replicas: sync only under the lease.
        # SQLite needs none: one process per ledger file.
        lease = Lease(config.ledger.lease_ttl) if ledger.dialect == "postgresql" else None
        engine = Engine.from_config(config, ledger, transports=transports,
                                    write_guard=lease.guard if lease else None,
                                    agent=user_agent(lease.holder) if lease else None)
        return cls(config, ledger, engine, lease)

    @property
    def leading(self) -> bool:
        return self.leadership is None or self.leadership.leading

    def _role_changed(self, leading: bool) -> None:
        """A new leader starts with a poll of every account (and its dispatchers resume the
        outbox where the last leader left it); a replica that stepped down just stops."""
        if leading and self.scheduler.running:
            for name in self.config.accounts:
                job = self.scheduler.get_job(f"poll:{name}")
                if job is not None:
                    job.modify(next_run_time=utcnow())

    def _guard(self, name: str, fn: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """Wrap a job so shutdown can wait for it and one failure never kills the scheduler.

        While the ledger cannot be written (disk full, locked elsewhere) only housekeeping runs:
        a poll could not record what it read, and a push could not record that it was made.
        Housekeeping's transaction is what notices the ledger writable again."""

        async def job() -> None:
            if self.health.stopping:
                return
            if self.ledger.failure is not None and name != "housekeeping":
                return
            if not self.leading and name != "housekeeping":
                return  # a standby: the leader does this
            task = asyncio.current_task()
            assert task is not None
            self._inflight.add(task)
            _JOB.set(task)
            try:
                await fn()
            except asyncio.CancelledError:
                if not self.health.stopping:
                    raise
                # Abandoned at shutdown: whatever it had not committed stays in the outbox.
                log.info("job.abandoned", job=name)
            except Exception as exc:
                lost = fenced_out(exc)
                if lost is not None and self.leadership is not None:
                    # Nothing of it landed: the new leader redoes it.
                    self.leadership.stepped_down(str(lost))
                elif ledger_error_in(exc) is None:
                    log.exception("job.failed", job=name)
                # else: the ledger logged it once (ledger.write_failed); /readyz names it
            finally:
                self._inflight.discard(task)

        return job

    def schedule(self) -> None:
        for name in self.config.accounts:
            cadence = Cadence.of(self.config, name)
            self.scheduler.add_job(
                self._guard(f"poll:{name}", lambda n=name: self._poll(n)),
                "interval", seconds=cadence.poll_interval, jitter=cadence.jitter,
                id=f"poll:{name}", max_instances=1, coalesce=True,
                misfire_grace_time=cadence.misfire_grace, next_run_time=utcnow(),
            )
            self.scheduler.add_job(
                self._guard(f"dispatch:{name}", lambda n=name: self._dispatch_due(n)),
                "interval", seconds=DISPATCH_EVERY, id=f"dispatch:{name}", max_instances=1,
                coalesce=True, misfire_grace_time=1,
            )
        from syncd.engine.oncall import OnCallService

        self.oncall = OnCallService(self.config, self.ledger, self.engine.clients,
                                    self.engine.dispatchers)
        self.oncall.pushing = self._job_pushing
        for name in self.oncall.clients:
            every = self.config.accounts[name].oncall_interval
            self.scheduler.add_job(
                self._guard(f"oncall:{name}", lambda n=name: self.oncall.tick(n)),
                "interval", seconds=every, jitter=max(0.1, every * 0.1), id=f"oncall:{name}",
                max_instances=1, coalesce=True, misfire_grace_time=max(1, int(every)),
                next_run_time=utcnow(),
            )
        self.scheduler.add_job(
            self._guard("housekeeping", self._housekeeping), "interval", seconds=5,
            id="housekeeping", max_instances=1, coalesce=True, next_run_time=utcnow(),
        )

    def _blocked(self, account: str) -> bool:
        """Rejected credentials and a failed TLS verification do not fix themselves: neither
        polls nor pushes of that account go out again before AUTH_BACKOFF has passed."""
        failed_at = self._auth_failed_at.get(account)
        return failed_at is not None and (utcnow() - failed_at).total_seconds() < AUTH_BACKOFF

    async def _poll(self, account: str) -> None:
        if self._blocked(account):
            return  # do not hammer the vendor (or a host that fails TLS verification)
        if self._stretch(account):
            return
        if self._round_opened is None:
            self._round_opened = time.monotonic()
        self._polling.add(account)
        try:
            result = await self.engine.poll(account,
                                            on_page=partial(self._page_landed, account))
        finally:
            self._polling.discard(account)
            if account in self._rehint:  # a hint came while this poll was already reading
                self._rehint.discard(account)
                self.poll_soon(account)
        self.health.stretched.pop(account, None)
        self.health.poll_errors[account] = result.error
        self.health.auth_failed[account] = result.auth_failed
        self.health.auth_problem[account] = result.auth_problem or ""
        if self.health.auth_failed[account]:
            self._auth_failed_at[account] = utcnow()
        else:
            self._auth_failed_at.pop(account, None)
        if result.ok:
            self.health.last_poll[account] = utcnow()
        if result.actions:
            self._push_owed = True
        await self._close_round()

    def _stretch(self, account: str) -> bool:
        """Whether this poll of ``account`` waits for the next interval: its pushes are
        running and its budget is short (a backlog the poll's reads would only slow down), and
        it has not been put off :data:`STRETCH_MAX` times in a row yet."""
        lock = self._dispatch_locks.get(account)
        client = self.engine.clients.get(account)
        stretched = self.health.stretched.get(account, 0)
        if (lock is None or not lock.locked() or client is None or stretched >= STRETCH_MAX
                or client.budget.headroom() >= HINT_HEADROOM):
            return False
        self.health.stretched[account] = stretched + 1
        metrics.POLLS_STRETCHED.labels(account).inc()
        return True

    async def _close_round(self) -> None:
        """The last poll of a round to finish pushes for every account, once: one push batch
        carries the changes of every source instead of one partial batch per source poll."""
        if self._polling:
            return  # a poll of this round still running closes it
        if self._push_owed:
            await anyio.sleep(COALESCE_PUSHES)
            if self._polling:
                return  # a poll started meanwhile: it joined the round and closes it
        self._round_opened = None
        if self._push_owed:
            self._push_owed = False
            await self._dispatch_all()

    def _page_landed(self, account: str, _page: ObserveResult) -> None:
        """A page of ``account``'s poll still reading owed actions: every account the page can
        owe actions to (:attr:`Engine.peers <syncd.engine.Engine.peers>`) whose due actions
        already fill a whole push starts it now (``whole``: the round's own dispatch still
        sends the rest), so the budget is busy while the rest of the round lands. The other
        accounts' due actions came from other polls: the round's dispatch sends them, or the
        per-second dispatch job once :data:`ROUND_WAIT` has passed."""
        if self.health.stopping:
            return
        loop = asyncio.get_running_loop()
        for name in self.engine.peers.get(account, ()):
            job = self._guard(f"dispatch:{name}",
                              lambda n=name: self._dispatch(n, whole=True))
            task = loop.create_task(job())
            self._early.add(task)  # a reference until it ends (the loop keeps weak ones)
            task.add_done_callback(self._early.discard)

    def _round_landing(self) -> bool:
        """A poll round is still landing (and has not held pushes back for :data:`ROUND_WAIT`
        yet): the per-second dispatch job leaves its fresh actions to the round's dispatch."""
        opened = self._round_opened
        return opened is not None and time.monotonic() - opened < ROUND_WAIT

    def poll_soon(self, account: str) -> str:
        """A verified webhook says something changed at ``account``: poll it soon, at most once
        per :data:`HINT_SPACING` seconds however many deliveries arrive, and only while its
        budget has :data:`HINT_HEADROOM` to spare. Returns what happened, for the metric:
        ``scheduled``, ``coalesced`` (a poll already due soon enough will see the change) or
        ``deferred`` (the regular schedule will)."""
        job = self.scheduler.get_job(f"poll:{account}")
        client = self.engine.clients.get(account)
        if job is None or client is None or self.health.stopping:
            return "deferred"
        if client.budget.headroom() < HINT_HEADROOM:
            return "deferred"
        if account in self._polling:
            # The running poll may already have read past this change; one more after it.
            self._rehint.add(account)
            return "coalesced"
        now = utcnow()
        last = self._hinted_at.get(account)
        due = now if last is None else max(now, last + timedelta(seconds=HINT_SPACING))
        if job.next_run_time is not None and job.next_run_time <= due:
            return "coalesced"
        job.modify(next_run_time=due)
        self._hinted_at[account] = due
        return "scheduled"

    async def _dispatch_all(self) -> None:
        async with anyio.create_task_group() as tg:
            for name in self.engine.clients:
                tg.start_soon(isolated, name, "dispatch", lambda n=name: self._dispatch(n))

    async def _dispatch_due(self, account: str) -> None:
        """The per-second job: what came due between rounds (retries, backoffs)."""
        if not self._round_landing():
            await self._dispatch(account)

    async def _dispatch(self, account: str, *, whole: bool = False) -> None:
        """Push ``account``'s due actions (``whole``: only whole pushes, see
        :meth:`~syncd.engine.dispatcher.Dispatcher.dispatch`). One at a time per account: a
        request while one runs (which read its rows before) makes one more run after it,
        unless that one halted (rate limited, credentials or TLS refused, the vendor failing:
        its retries are scheduled). One that only parked or rescheduled some rows and went
        on does not hold the rows committed meanwhile back."""
        lock = self._dispatch_locks.setdefault(account, anyio.Lock())
        if self._blocked(account) or self.health.stopping:
            return  # credentials or TLS refused; or shutting down: no new pushes
        if lock.locked():
            self._again[account] = whole and self._again.get(account, True)
            return
        with self._job_pushing():
            async with lock:
                while True:
                    result = await self.engine.dispatch(account, whole=whole)
                    again = self._again.pop(account, None)
                    if again is None or result.halted or self.health.stopping:
                        return
                    whole = again

    @contextmanager
    def _job_pushing(self) -> Iterator[None]:
        """The running job pushes meanwhile (a dispatch, an on-call repair's overrides):
        shutdown gives it :data:`STOP_GRACE` to land instead of cancelling it at once."""
        job = _JOB.get()
        if job is not None:
            self._pushing[job] = self._pushing.get(job, 0) + 1
        try:
            yield
        finally:
            if job is not None:
                left = self._pushing.pop(job) - 1
                if left:
                    self._pushing[job] = left

    async def _housekeeping(self) -> None:
        depth, oldest = await self.ledger.read(_outbox_stats)
        for status in Status:
            metrics.OUTBOX_DEPTH.labels(status.value).set(depth.get(status.value, 0))
        metrics.OUTBOX_OLDEST.set((utcnow() - oldest).total_seconds() if oldest else 0)
        for name, client in self.engine.clients.items():
            for bucket, left in client.budget.snapshot().items():
                metrics.BUDGET_REMAINING.labels(name, bucket).set(left)
        role = "" if self.leadership is None else f"{self.leadership.role}; "
        sdnotify.status(
            f"{role}{len(self.engine.clients)} accounts; outbox pending "
            f"{depth.get('pending', 0)}, parked {depth.get('parked', 0)}"
        )

    async def _watchdog(self) -> None:
        interval = sdnotify.watchdog_interval()
        if not interval:
            return
        while not self._stop.is_set():
            sdnotify.watchdog()
            with anyio.move_on_after(interval / 2):
                await self._stop.wait()

    async def _status_server(self, socks: list[socket.socket]) -> None:
        """Serve once this machine's names are known, or after ``LOOKUP_WAIT`` without them:
        getfqdn may ask DNS (a reverse lookup) and wait on a resolver that does not answer,
        and /healthz must not hang behind it. Names found later are allowed from then on."""
        from syncd.http import hosts
        from syncd.http.status import server

        status = self.config.status
        policy = hosts.HostPolicy.of(status.listen, status.allowed_hosts, hosts.short_names())
        known = anyio.Event()

        async def learn() -> None:
            policy.learn(await hosts.look_up_machine_names())
            known.set()
            log.info("status.hosts", allowed=policy.listing())

        async with anyio.create_task_group() as tg:
            tg.start_soon(learn)
            with anyio.move_on_after(hosts.LOOKUP_WAIT):
                await known.wait()
            if not known.is_set():
                log.warning("status.hostname_slow", waited=hosts.LOOKUP_WAIT,
                            allowed=policy.listing(),
                            hint="the machine's full name (getfqdn) is still being looked up")
            srv = server(self, policy)
            try:
                await srv.serve(sockets=socks)
            except (OSError, SystemExit) as exc:
                log.error("status.failed", listen=status.listen, error=str(exc))
            finally:
                srv.should_exit = True
                tg.cancel_scope.cancel()

    def _listen(self) -> list[socket.socket]:
        """The status server's sockets, or StartError before anything runs."""
        from syncd.http.status import bind

        listen = self.config.status.listen
        try:
            return bind(listen)
        except (OSError, UnicodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StartError(f"status.listen {listen}: cannot listen there: {reason}") from None

    def stop(self) -> None:
        self._stop.set()

    async def run(self, *, extra: Callable[[anyio.abc.TaskGroup], None] | None = None,
                  early_signals: Sequence[int] = ()) -> None:
        """Run until SIGTERM/SIGINT (or :meth:`stop`); returns after a clean shutdown.

        ``early_signals`` collects signals that arrived while the daemon was still starting (see
        :func:`catch_early_signals`): systemd may stop a unit at any moment, and a SIGTERM during
        start-up must still end in a clean exit, not in death by the default handler."""
        from syncd.http.descriptors import connection_cap, reserve_descriptors

        soft, _hard = reserve_descriptors()  # vendor traffic must never run out of descriptors
        log.info("daemon.limits", open_files=soft, status_connections=connection_cap(soft))
        try:
            listening = self._listen() if self.config.status.enabled else None
        except StartError:
            await self.engine.aclose()
            self.ledger.dispose()
            raise
        self.schedule()
        self.scheduler.start()
        log.info("daemon.started", accounts=list(self.engine.clients),
                 groups=[g.name for g in self.config.sync],
                 ledger=secrets.safe_url(self.ledger.url),
                 replica=self.leadership.lease.holder if self.leadership else None)
        signals = stop_signals()
        before = {signum: signal.getsignal(signum) for signum in signals}
        try:
            # Stop signals are handled until the shutdown is over: one that came back to its
            # default action mid-drain (a second SIGHUP) killed syncd, which systemd takes for
            # a clean stop and does not restart.
            with anyio.open_signal_receiver(*signals) as received:
                async with anyio.create_task_group() as watch:
                    watch.start_soon(self._signals, received, early_signals)
                    if self.leadership is not None:
                        watch.start_soon(self._lead, self.leadership)
                    try:
                        await self._work(listening, extra)
                    finally:
                        # Shielded: a failure escaping the lease's task cancels this group,
                        # and a cancelled shutdown neither drained, resigned nor closed the
                        # ledger. A second stop signal still cuts the drain short (_drain).
                        with anyio.CancelScope(shield=True):
                            await self._shutdown()
                        watch.cancel_scope.cancel()
        finally:
            for signum, handler in before.items():  # not the default action either
                if handler is not None:
                    signal.signal(signum, handler)

    async def _work(self, listening: list[socket.socket] | None,
                    extra: Callable[[anyio.abc.TaskGroup], None] | None) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watchdog)
            if listening is not None:
                tg.start_soon(self._status_server, listening)
            if extra is not None:
                extra(tg)
            sdnotify.ready()
            await self._stop.wait()
            tg.cancel_scope.cancel()

    async def _lead(self, leadership: Leadership) -> None:
        """Lease renewals, cancelled by the shutdown only once the drain is over: the pushes
        it waits for are written under the lease, which would otherwise run out under them."""
        self._renewals = anyio.CancelScope()
        try:
            with self._renewals:
                await leadership.run()
        finally:
            self._renewals_ended.set()

    async def _signals(self, received: AsyncIterator[int], early: Sequence[int]) -> None:
        for signum in list(early):  # arrived before this receiver replaced the start-up handler
            self._stopping_on(signum)
        async for signum in received:
            self._stopping_on(signum)

    def _stopping_on(self, signum: int) -> None:
        """The first stop signal stops (pushes on the wire get :data:`STOP_GRACE`); another
        one ends the wait at once. Any SIGHUP among them makes the exit status 129."""
        if signum == signal.SIGHUP:
            self.exit_code = HANGUP_STATUS
        if self._stop.is_set():
            self._hurry.set()
            log.info("daemon.stopping_now", signal=signal.Signals(signum).name,
                     hint="a second stop signal: pushes still on the wire are cut off "
                     "(incident pushes stay pending and are sent again at the next start; an "
                     "on-call override not yet sent is planned afresh then, one that may have "
                     "been sent is not repeated)")
            return
        if signum == signal.SIGHUP:
            log.info("daemon.stopping", signal="SIGHUP", exit_status=HANGUP_STATUS,
                     hint="syncd has no reload: it stops, and systemd starts it again with "
                     "the config re-read (Restart=on-failure)")
        else:
            log.info("daemon.stopping", signal=signal.Signals(signum).name)
        self.stop()

    async def _drain(self, jobs: list[asyncio.Task[Any]]) -> None:
        """Wait for ``jobs`` for at most :attr:`stop_grace`, or until a second stop signal.

        asyncio.wait, not gather: cancelled, it leaves the jobs running for the shutdown to
        cancel, and gather cancelled by the scope raised a CancelledError out of the drain
        (exit 1, a traceback) when a job abandoned there swallowed its cancellation (_guard)."""

        async def cut(scope: anyio.CancelScope) -> None:
            await self._hurry.wait()
            scope.cancel()

        with anyio.move_on_after(self.stop_grace):
            async with anyio.create_task_group() as tg:
                tg.start_soon(cut, tg.cancel_scope)
                await asyncio.wait(jobs)
                tg.cancel_scope.cancel()

    async def _shutdown(self) -> None:
        """Polls, on-call reads and housekeeping stop at once (their reads are redone at the
        next start); jobs with a push on the wire get :data:`STOP_GRACE` to land and record it.
        The scheduler is only paused until then: its shutdown cancels every running job."""
        self.health.stopping = True
        sdnotify.stopping()
        for dispatcher in self.engine.dispatchers.values():
            dispatcher.stopping = True  # what is on the wire lands; nothing more starts
        if self.scheduler.running:
            self.scheduler.pause()
        inflight = [t for t in self._inflight if not t.done()]
        if inflight:
            log.info("daemon.draining", jobs=len(inflight), pushing=len(self._pushing))
            for task in inflight:
                if task not in self._pushing:
                    task.cancel()
            await self._drain(inflight)
            late = [t for t in inflight if not t.done()]
            for task in late:
                # An abandoned push stays pending in the outbox and is retried next start.
                task.cancel()
            if late:
                with anyio.move_on_after(STOP_CANCEL_WAIT):
                    await asyncio.wait(late)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self.leadership is not None:
            if self._renewals is not None:
                self._renewals.cancel()
                with anyio.move_on_after(STOP_CANCEL_WAIT):  # a renewal under way ends first
                    await self._renewals_ended.wait()
            await self.leadership.resign()
        await self.engine.aclose()
        self.ledger.dispose()
        log.info("daemon.stopped")


def stop_signals() -> tuple[int, ...]:
    """The stop signals syncd handles: all but those of :data:`KEPT_IGNORED` found ignored."""
    return tuple(signum for signum in STOP_SIGNALS if signum not in KEPT_IGNORED
                 or signal.getsignal(signum) is not signal.SIG_IGN)


def catch_early_signals() -> list[int]:
    """Record the stop signals from now until :meth:`Daemon.run` takes over signal handling,
    and again once it is over (an ignored one stays ignored, see :data:`KEPT_IGNORED`)."""
    received: list[int] = []
    for signum in stop_signals():
        signal.signal(signum, lambda n, _frame: received.append(n))
    return received


def _outbox_stats(tx: Any) -> tuple[dict[str, int], datetime | None]:
    return tx.outbox_depth(), tx.oldest_pending()


async def run(config: Config, *,
              transports: Mapping[str, httpx.AsyncBaseTransport] | None = None) -> None:
    daemon = Daemon.build(config, transports=transports)
    await daemon.run()
