"""A test world: in-process simulators, a real config file, a real SQLite ledger, the engine.

Accounts are described by the simulators' own ``describe()`` (the same JSON ``syncd sim``
prints), turned into ``[accounts.NAME]`` tables by :func:`account_table`, so the scenario tests
exercise the real config loader too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from syncd import config as config_mod
from syncd import simulators, vendors
from syncd.engine import CycleResult, Engine
from syncd.ledger import Ledger, utcnow
from syncd.simulators.base import Simulator
from syncd.simulators.configs import account_table, render, toml_value  # noqa: F401  (re-exported for scenario tests)

SIM_URL = "http://{vendor}.sim.localhost"
LANDED = sorted(set(simulators.available()) & set(vendors.available()))
"""Vendors with both a simulator and a client in this build."""

LEDGER: Callable[[Path], Path | dict[str, Any]] = lambda tmp: tmp / "ledger.db"  # noqa: E731
"""The ``[ledger]`` of every new world: a SQLite file in its directory, unless the
``any_ledger`` fixture (tests/scenario/conftest.py) points it at a PostgreSQL database."""


@dataclass
class World:
    tmp: Path
    vendors: dict[str, str]  # account -> vendor
    groups: list[dict[str, Any]]
    account_extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    poll_interval: float = 1.0
    ledger_config: Path | dict[str, Any] | None = None  # default: LEDGER(tmp)
    sims: dict[str, Simulator] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for account, vendor in self.vendors.items():
            sim = simulators.load(vendor)(seed=len(self.sims))
            sim.rate_limits_enabled = True
            sim.rate_scale = 100.0
            self.sims[account] = sim
        self.config_path = self.tmp / "syncd.toml"
        tables = {}
        for account, vendor in self.vendors.items():
            desc = self.sims[account].describe(SIM_URL.format(vendor=account))
            table = account_table(vendor, desc)
            table.update({"poll_interval": self.poll_interval, "full_resync_interval": 3600,
                          "budget_fraction": 1.0})
            table.update(self.account_extra.get(account, {}))
            tables[account] = table
        ledger = self.ledger_config if self.ledger_config is not None else LEDGER(self.tmp)
        self.config_path.write_text(render(tables, self.groups, ledger))
        self.open()

    def open(self) -> None:
        """(Re)open config, ledger and engine, as a restarted daemon would."""
        self.config = config_mod.load(self.config_path)
        self.ledger = Ledger.open(self.config.ledger_url, password=self.config.ledger_password)
        self.engine = Engine.from_config(
            self.config, self.ledger,
            transports={a: s.transport() for a, s in self.sims.items()}, budget_scale=100.0,
        )

    async def close(self) -> None:
        await self.engine.aclose()
        self.ledger.dispose()

    async def restart(self) -> None:
        await self.close()
        self.open()

    async def cycle(self, times: int = 1) -> CycleResult:
        result = CycleResult()
        for _ in range(times):
            one = await self.engine.cycle()
            result.polls += one.polls
            result.dispatches += one.dispatches
        return result

    async def settle(self, max_cycles: int = 10, max_wait: float = 60.0) -> int:
        """Cycle until quiet: a cycle whose polls all succeeded and saw no change, with nothing
        pending after it. Waits (really) for actions backing off, up to ``max_wait`` seconds in
        all. Returns the cycles it took."""
        waited = 0.0
        for n in range(1, max_cycles + 1):
            result = await self.engine.cycle()
            quiet = all(p.ok and not p.changed for p in result.polls)
            if quiet and not self.ledger.call(lambda tx: tx.outbox_depth()).get("pending"):
                return n
            due = min((d for d in (self.ledger.call(lambda tx, a=a: tx.next_due_at(a))
                                   for a in self.sims) if d is not None), default=None)
            if due is not None:
                delay = min(5.0, max(0.0, (due - utcnow()).total_seconds()))
                if waited + delay > max_wait:
                    break
                waited += delay
                await anyio.sleep(delay)
        return max_cycles

    def alert(self, dedup: str, title: str | None = None, accounts: Sequence[str] | None = None,
              severity: str | None = "sev1") -> None:
        for account in accounts or list(self.sims):
            self.sims[account].alert(dedup=dedup, title=title or f"alert {dedup}",
                                     severity=severity)

    def incident(self, account: str, dedup: str) -> dict[str, Any]:
        found = [i for i in self.sims[account].canonical_incidents() if i["dedup"] == dedup]
        assert found, f"{account} has no incident with dedup {dedup!r}"
        return found[-1]

    def incidents(self, account: str, dedup: str) -> list[dict[str, Any]]:
        return [i for i in self.sims[account].canonical_incidents() if i["dedup"] == dedup]

    def act(self, account: str, dedup: str, action: str, **kw: Any) -> None:
        self.sims[account].act(self.incident(account, dedup)["id"], action, **kw)

    def writes(self) -> int:
        return sum(s.writes() for s in self.sims.values())


def threaded_sims(vendors: dict[str, str], poll_interval: float, latency: float = 0.0
                  ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Simulators served on loopback from threads, for a daemon run as a subprocess: the
    running servers by account, and the ``[accounts.NAME]`` tables that point at them."""
    from syncd.simulators.server import start_in_thread

    running: dict[str, Any] = {}
    tables: dict[str, dict[str, Any]] = {}
    for account, vendor in vendors.items():
        sim = simulators.load(vendor)()
        sim.rate_scale = 100.0
        sim.faults.latency = latency
        running[account] = start_in_thread(sim)
        table = account_table(vendor, sim.describe(running[account].base_url))
        table.update({"poll_interval": poll_interval, "budget_fraction": 1.0})
        if vendor == "spike":
            table["rate_limit_per_minute"] = 6000
        tables[account] = table
    return running, tables


def stop_mid_request(daemon: Any, sim: Any, route: str,
                     before_stop: Callable[[], None] = lambda: None) -> Callable[[Any], None]:
    """``extra`` for ``Daemon.run``: stop the daemon once ``sim`` is answering ``route``
    (``before_stop`` runs just before)."""

    async def stop() -> None:
        for _ in range(3000):  # the sim has no event to wait on: look every 10 ms
            if sim.inflight_by_route[route]:
                break
            await anyio.sleep(0.01)
        before_stop()
        daemon.stop()

    return lambda tg: tg.start_soon(stop)
