"""The sync itself: pollers read vendors into the ledger, the reconciler decides, the dispatcher
pushes. :class:`Engine` wires one poller and one dispatcher per account from a config.

Follow the data: vendor client -> :mod:`.poller` -> :mod:`.observe` (ledger + :mod:`.reconciler`)
-> outbox -> :mod:`.dispatcher` -> vendor client.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
import httpx
import structlog

from syncd import vendors
from syncd.config import Config
from syncd.engine.cadence import Cadence
from syncd.engine.dispatcher import Dispatcher, DispatchResult
from syncd.engine.leadership import GuardedTransport
from syncd.engine.links import GroupContext
from syncd.engine.poller import PageHook, Poller, PollResult
from syncd.ledger import Ledger
from syncd.ledger.keycache import LedgerKeyCache
from syncd.ratelimit import Budget
from syncd.vendors.base import VendorClient

__all__ = ["CycleResult", "Engine", "isolated"]

log = structlog.get_logger(__name__)
T = TypeVar("T")


@dataclass
class CycleResult:
    polls: list[PollResult] = field(default_factory=list)
    dispatches: list[DispatchResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.polls) and all(d.ok for d in self.dispatches)

    @property
    def pending_work(self) -> int:
        return sum(d.retried for d in self.dispatches)


class Engine:
    def __init__(self, config: Config, ledger: Ledger,
                 clients: Mapping[str, VendorClient]) -> None:
        self.config = config
        self.ledger = ledger
        self.clients = dict(clients)
        for name, client in self.clients.items():
            if getattr(client, "wants_key_cache", False):
                # Warmed from the ledger now: a restart repeats none of the lookups.
                client.key_cache = LedgerKeyCache(ledger, name)  # type: ignore[attr-defined]
        capabilities = {name: c.capabilities for name, c in self.clients.items()}
        self.groups = {g.name: GroupContext.build(g, capabilities) for g in config.sync}
        self.pollers = {
            name: Poller(
                name, client, ledger, list(self.groups.values()),
                full_every=config.accounts[name].full_resync_interval,
                grace=Cadence.of(config, name).echo_grace,
                patience=Cadence.of(config, name).push_patience,
            )
            for name, client in self.clients.items()
        }
        self.dispatchers = {
            name: Dispatcher(name, client, ledger, self.groups)
            for name, client in self.clients.items()
        }
        self.peers = {
            name: [a for a in self.clients
                   if a == name or any(a in ctx.group.accounts for ctx in poller.groups)]
            for name, poller in self.pollers.items()
        }
        """Account -> the accounts a page of its poll can owe actions to: itself (a change
        there retries its own parked actions) and the members of its sync groups. A link holds
        records of its group's accounts only, and an account that left the group has no
        capabilities there, so it is owed nothing."""
        self._account_locks = {name: anyio.Lock() for name in self.clients}
        for name, settings in config.accounts.items():
            ledger.call(lambda tx, n=name, v=settings.vendor: tx.ensure_account(n, v))

    @classmethod
    def from_config(
        cls,
        config: Config,
        ledger: Ledger,
        *,
        transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
        budget_scale: float = 1.0,
        write_guard: Callable[[], None] | None = None,
        agent: str | None = None,
    ) -> Engine:
        """Build the vendor clients the config names. ``transports`` routes an account to an
        in-process simulator; ``budget_scale`` speeds budgets up together with a simulator's
        rate-limit override (tests, demo, benchmarks); ``write_guard`` runs right before every
        vendor write and raises to stop it (a replica's lease, see :mod:`.leadership`), and
        ``agent`` is the User-Agent its requests carry."""
        transports = transports or {}
        clients: dict[str, VendorClient] = {}
        for name, settings in config.accounts.items():
            factory = vendors.load(settings.vendor)
            # The limits can depend on settings (Splunk On-Call's table): the class answers.
            budget = Budget(factory.limits_for(settings), settings.budget_fraction,
                            scale=budget_scale)
            transport = transports.get(name)
            if write_guard is not None:
                transport = GuardedTransport(transport or httpx.AsyncHTTPTransport(),
                                             write_guard, agent)
            clients[name] = factory(name, settings, transport=transport, budget=budget)
        return cls(config, ledger, clients)

    async def poll(self, account: str, *, full: bool | None = None,
                   on_page: PageHook | None = None) -> PollResult:
        """Poll one account; ``on_page`` runs after each committed page that owed actions."""
        async with self._account_locks[account]:
            return await self.pollers[account].poll(full=full, on_page=on_page)

    async def dispatch(self, account: str, *, whole: bool = False) -> DispatchResult:
        return await self.dispatchers[account].dispatch(whole=whole)

    async def cycle(self, *, full: bool | None = None) -> CycleResult:
        """One round: pushes owed first (writes before reads), then polls, then the pushes the
        polls caused. Accounts run concurrently; each is independent of the others' failures."""
        result = CycleResult()

        async def dispatch_all() -> None:
            async def one(name: str) -> None:
                outcome = await isolated(name, "dispatch", lambda: self.dispatch(name))
                result.dispatches.append(outcome if isinstance(outcome, DispatchResult)
                                         else DispatchResult(name, errors=[outcome]))

            async with anyio.create_task_group() as tg:
                for name in self.clients:
                    tg.start_soon(one, name)

        async def poll_one(name: str) -> None:
            outcome = await isolated(name, "poll", lambda: self.poll(name, full=full))
            result.polls.append(outcome if isinstance(outcome, PollResult)
                                else PollResult(name, ok=False, full=bool(full), error=outcome))

        await dispatch_all()
        async with anyio.create_task_group() as tg:
            for name in self.clients:
                tg.start_soon(poll_one, name)
        await dispatch_all()
        return result

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()


async def isolated(account: str, job: str, fn: Callable[[], Awaitable[T]]) -> T | str:
    """Run one account's job so that an unexpected exception stays with that account.

    Accounts share task groups (a cycle, the daemon's dispatch round); an exception escaping one
    account's task would cancel every other account's poll or push. It is logged with its
    traceback and returned as the error text instead; cancellation still propagates."""
    try:
        return await fn()
    except Exception as exc:
        log.exception("account.job_failed", account=account, job=job)
        return f"{type(exc).__name__}: unexpected failure in {job} of {account}: {exc}"[:500]
