"""What the benchmarks share: simulators, a real config file, the real engine or daemon.

Every benchmark drives syncd's own code paths (``Engine`` / ``Daemon`` built from a config
loaded by ``syncd.config``) against the shipped simulators. Time is compressed the same way on
both sides: each simulator's documented rate limits are multiplied by ``scale`` (its
``/_sim/rate-limits`` override) and the engine's budgets by the same ``budget_scale``, so a run
at scale k behaves like real time slowed down k times; figures are reported as ratios (or in
"documented" seconds) so that k cancels out.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from syncd import config as config_mod
from syncd import simulators, vendors
from syncd.daemon import Daemon
from syncd.engine import Engine
from syncd.ledger import Ledger
from syncd.simulators.base import Simulator
from syncd.simulators.configs import account_table, render

ORDER = ("pagerduty", "victorops", "incidentio", "spike")
SIM_URL = "http://{account}.sim.localhost"


def landed() -> list[str]:
    """Vendors with both a simulator and a client in this build, PagerDuty first."""
    have = set(simulators.available()) & set(vendors.available())
    return [v for v in ORDER if v in have]


class World:
    """In-process simulators (one per account, named after its vendor) plus a config file.

    ``account_settings`` go into every account table (poll_interval, budget_fraction, ...);
    the simulators start with rate limits enforced at ``scale`` times the documented ones.
    """

    def __init__(self, tmp: Path, vendor_names: Sequence[str], *, scale: float,
                 account_settings: dict[str, Any] | None = None,
                 base_urls: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.scale = scale
        self.sims: dict[str, Simulator] = {}
        for i, vendor in enumerate(vendor_names):
            sim = simulators.load(vendor)(seed=i)
            self.limits(sim, enabled=True)
            self.sims[vendor] = sim
        tables = {}
        for name, sim in self.sims.items():
            url = (base_urls or {}).get(name) or SIM_URL.format(account=name)
            table = account_table(sim.vendor, sim.describe(url))
            if "rate_limit_table" in table:  # Splunk On-Call: hold syncd to the table it uses
                sim.limit_table = table["rate_limit_table"]
            table.update(account_settings or {})
            tables[name] = table
        self.tables = tables
        self.config_path = tmp / "syncd.toml"
        self.write_config()

    def write_config(self, status_listen: str | None = None) -> None:
        """(Re)write and load the config file from ``self.tables``; ``status_listen`` turns the
        status server (and with it the webhook intake) on at that address."""
        groups = [{"name": "main", "accounts": list(self.sims), "mode": "correlate"}]
        text = render(self.tables, groups, self.tmp / "ledger.db")
        if status_listen is not None:
            text = text.replace("[status]\nenabled = false",
                                f'[status]\nenabled = true\nlisten = "{status_listen}"')
        self.config_path.write_text(text)
        self.config = config_mod.load(self.config_path)

    def rescale(self, scale: float, account_settings: dict[str, Any] | None = None, *,
                status_listen: str | None = None) -> None:
        """Every simulator's limits to ``scale`` with full buckets, and the config rewritten
        (``account_settings`` into every account): daemons built after this one use the new
        scale. For a setup run fast whose figures are taken at another scale."""
        self.scale = scale
        for sim in self.sims.values():
            self.limits(sim, enabled=True)
        for table in self.tables.values():
            table.update(account_settings or {})
        self.write_config(status_listen)

    def limits(self, sim: Simulator, *, enabled: bool) -> None:
        """The same effect as ``POST /_sim/rate-limits``, without a request."""
        sim.rate_limits_enabled = enabled
        sim.rate_scale = self.scale
        sim.window.reset()
        sim.tokens.reset()

    def engine(self, ledger: Ledger, *, http: bool = False) -> Engine:
        transports = None if http else {a: s.transport() for a, s in self.sims.items()}
        return Engine.from_config(self.config, ledger, transports=transports,
                                  budget_scale=self.scale)

    def open(self) -> tuple[Ledger, Engine]:
        ledger = Ledger.open(self.config.ledger_url)
        return ledger, self.engine(ledger)

    def daemon(self) -> Daemon:
        """The real daemon (scheduler, jobs) around an engine with scaled budgets.
        ``Daemon.build`` takes no ``budget_scale``, so this does what it does by hand."""
        ledger = Ledger.open(self.config.ledger_url,
                             busy_timeout=self.config.ledger.busy_timeout)
        return Daemon(self.config, ledger, self.engine(ledger))

    def alert_everywhere(self, keys: Sequence[str], severity: str = "sev1") -> None:
        """The same alert reaching every tool: incidents correlated by dedup key. (sev1: a
        Splunk On-Call WARNING opens no incident by default.)"""
        for sim in self.sims.values():
            was = sim.rate_limits_enabled
            sim.rate_limits_enabled = False
            for key in keys:
                sim.alert(dedup=key, title=key, severity=severity)
            sim.rate_limits_enabled = was

    def by_dedup(self, account: str) -> dict[str, dict[str, Any]]:
        return {i["dedup"]: i for i in self.sims[account].canonical_incidents()}

    def reset_counters(self) -> None:
        for sim in self.sims.values():
            sim.calls.clear()


def call_split(sim: Simulator) -> dict[str, int]:
    """Vendor calls seen by a simulator: reads (GET), writes (anything else), rate-limited
    answers (429, and Splunk On-Call's 403 rate-limit answer: auth is right in these runs)."""
    reads = writes = limited = 0
    for (method, _route, status), n in sim.calls.items():
        if method == "GET":
            reads += n
        else:
            writes += n
        if status == 429 or (sim.vendor == "victorops" and status == 403):
            limited += n
    return {"reads": reads, "writes": writes, "rate_limited": limited}


def rss_mb(pid: int | str = "self") -> float:
    return _status_kb("VmRSS", pid) / 1024


def peak_rss_mb(pid: int | str = "self") -> float:
    return _status_kb("VmHWM", pid) / 1024


def _status_kb(key: str, pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    return math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(terse=True)}


def emit(figures: dict[str, Any]) -> None:
    """The benchmark's result: one JSON object, the last line on stdout."""
    print(json.dumps(figures, sort_keys=False), flush=True)


class Stopwatch:
    def __init__(self) -> None:
        self.wall = time.monotonic()
        self.cpu = time.process_time()

    def elapsed(self) -> float:
        return time.monotonic() - self.wall

    def cpu_elapsed(self) -> float:
        return time.process_time() - self.cpu


def quiet_logs() -> None:
    """syncd's logs to stderr at warning level, so stdout holds only the figures."""
    import sys

    from syncd import logs

    logs.configure(level="warning", fmt="console", stream=sys.stderr)
