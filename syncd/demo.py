"""``syncd demo``: every vendor simulator, the real daemon, a short story and a live view.

Nothing here is staged: the simulators are the same ones the tests use, served over loopback HTTP;
the daemon is :class:`syncd.daemon.Daemon` with ``config/demo.toml`` (only the ports are swapped
for free ones) on a throw-away ledger; the story acts through the simulators' alert intake and
their "person in the UI" control surface, and the daemon does the rest through the vendor APIs.
"""

from __future__ import annotations

import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from syncd import config as config_mod
from syncd import logs, simulators, vendors, views
from syncd.daemon import Daemon
from syncd.simulators.server import Running, start_in_thread
from syncd.vendors.base import Capability

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "demo.toml"
ALERTS = [("demo-db-latency", "Database latency above 2s"),
          ("demo-api-errors", "API 5xx rate above 5%")]


def demo_config_text() -> str:
    """config/demo.toml from the checkout, or the copy packaged with syncd."""
    if DEMO_CONFIG.exists():
        return DEMO_CONFIG.read_text(encoding="utf-8")
    return resources.files("syncd").joinpath("demo.toml").read_text(encoding="utf-8")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Story:
    """The scripted incidents, and what happened, for the live view and the summary."""

    steps: list[str] = field(default_factory=list)
    done: bool = False
    converged: bool = False
    failed: str | None = None


def build(workdir: Path) -> tuple[config_mod.Config, dict[str, Running]]:
    """Start every available simulator and load the demo config pointed at them."""
    text = demo_config_text()
    base = config_mod.loads(text, workdir / "demo.toml")
    running: dict[str, Running] = {}
    replacements: dict[str, str] = {}
    for account, settings in base.accounts.items():
        if settings.vendor not in set(simulators.available()) & set(vendors.available()):
            continue
        sim = simulators.load(settings.vendor)()
        running[account] = start_in_thread(sim)
        replacements[settings.base_url] = running[account].base_url
    for old, new in replacements.items():
        text = text.replace(old, new)
    text = text.replace('path = "demo.db"', f'path = "{workdir / "demo.db"}"')
    text = text.replace('listen = "127.0.0.1:9797"', f'listen = "127.0.0.1:{_free_port()}"')
    cfg = config_mod.loads(text, workdir / "demo.toml")
    # Keep only the accounts whose simulator is present in this build.
    if set(running) != set(cfg.accounts):
        raise RuntimeError(
            f"demo needs simulators for {', '.join(sorted(cfg.accounts))}; "
            f"this build has {', '.join(sorted(running))}"
        )
    return cfg, running


async def play(daemon: Daemon, running: dict[str, Running], story: Story,
               pause: float) -> None:
    """Alerts fire in every tool, a person acks in one, severity changes, one is resolved."""
    accounts = list(running)
    async with httpx.AsyncClient(timeout=10) as http:

        async def incidents(account: str) -> list[dict[str, Any]]:
            r = await http.get(f"{running[account].base_url}/_sim/incidents")
            return list(r.json()["incidents"])

        async def find(account: str, dedup: str) -> dict[str, Any] | None:
            for inc in await incidents(account):
                matches = inc.get("dedup") == dedup or dedup in (inc.get("title") or "")
                if matches and inc["state"] != "resolved":
                    return inc
            return None

        async def act(account: str, dedup: str, action: str, **extra: Any) -> None:
            inc = await find(account, dedup)
            if inc is None:
                story.steps.append(f"! {account}: no open incident for {dedup}")
                return
            await http.post(f"{running[account].base_url}/_sim/incidents/{inc['id']}/act",
                            json={"action": action, **extra})

        for dedup, title in ALERTS:
            for account in accounts:
                # sev1: Splunk On-Call opens incidents for CRITICAL alerts only by default.
                await http.post(f"{running[account].base_url}/_sim/alerts",
                                json={"dedup": dedup, "title": title, "severity": "sev1"})
            story.steps.append(f"alert {dedup!r} fired in {', '.join(accounts)}")
            await anyio.sleep(pause)
        await _wait_links(daemon, story, len(ALERTS), within=30)
        first, second = accounts[0], accounts[min(1, len(accounts) - 1)]
        await act(first, ALERTS[0][0], "acknowledge")
        story.steps.append(f"a person acknowledged {ALERTS[0][0]!r} in {first}")
        await anyio.sleep(pause)
        settings = daemon.config.accounts
        writable = [a for a in accounts
                    if vendors.load(settings[a].vendor).capabilities_for(settings[a])
                    & Capability.SEVERITY_WRITE]
        if writable:
            await act(writable[0], ALERTS[0][0], "severity", severity="sev3")
            story.steps.append(f"{writable[0]}: severity of {ALERTS[0][0]!r} lowered to sev3")
        await anyio.sleep(pause)
        await act(second, ALERTS[1][0], "resolve")
        story.steps.append(f"a person resolved {ALERTS[1][0]!r} in {second}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if await _converged(running, http):
                story.converged = True
                break
            await anyio.sleep(0.5)
        # Let the daemon record the confirmations before the summary reads the ledger.
        settle = time.monotonic() + 15
        while time.monotonic() < settle:
            depth = await daemon.ledger.run(lambda tx: tx.outbox_depth())
            if not depth.get("pending"):
                break
            await anyio.sleep(0.3)
        await anyio.sleep(2 * max(a.poll_interval for a in daemon.config.accounts.values()))
        story.steps.append("every tool agrees" if story.converged else "timed out converging")
        story.done = True


async def _wait_links(daemon: Daemon, story: Story, count: int, within: float) -> None:
    accounts = len(daemon.config.accounts)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        links = await daemon.ledger.run(views.links, None, 50, False)
        if sum(1 for link in links if len(link["members"]) == accounts) >= count:
            story.steps.append(f"syncd linked {count} incidents across {accounts} tools")
            return
        await anyio.sleep(0.5)
    story.steps.append("! not every incident was linked in time")


async def _converged(running: dict[str, Running], http: httpx.AsyncClient) -> bool:
    """Both demo incidents agree on state in every tool (severity where the tool has it)."""
    states: dict[str, set[str]] = {dedup: set() for dedup, _ in ALERTS}
    for run in running.values():
        r = await http.get(f"{run.base_url}/_sim/incidents")
        for inc in r.json()["incidents"]:
            for dedup, _ in ALERTS:
                if inc.get("dedup") == dedup or dedup in (inc.get("title") or ""):
                    states[dedup].add(inc["state"])
    return states[ALERTS[0][0]] == {"acknowledged"} and states[ALERTS[1][0]] == {"resolved"}


def render(links: list[dict[str, Any]], daemon: Daemon, story: Story) -> Group:
    table = Table(title="links (syncd ledger)", expand=True)
    for col in ("link", "key", "agreed", "members", "pending pushes"):
        table.add_column(col)
    for link in links:
        agreed = link["agreed"]
        table.add_row(
            str(link["id"]), link["key"] or "",
            f"{agreed.get('state') or ''} {agreed.get('severity') or ''}",
            "\n".join(f"{m['account']}: {m['state']} {m['severity'] or ''}"
                      for m in link["members"]),
            "\n".join(f"{p['account']} {p['action']}" for p in link["pending"]
                      if p["status"] == "pending") or "-",
        )
    budgets = Table(title="rate budgets (tokens left)", expand=True)
    budgets.add_column("account")
    budgets.add_column("buckets")
    for name, client in daemon.engine.clients.items():
        snap = client.budget.snapshot()
        budgets.add_row(name, ", ".join(f"{k} {v:.0f}" for k, v in list(snap.items())[:4]))
    steps = "\n".join(f"• {s}" for s in story.steps) or "starting…"
    return Group(Panel(steps, title="story"), table, budgets)


def main(*, keep_running: bool = False, pause: float = 1.5,
         out: Callable[[str], None] | None = None) -> int:
    console = Console()
    with tempfile.TemporaryDirectory(prefix="syncd-demo-") as tmp:
        workdir = Path(tmp)
        log_path = workdir / "syncd.log"
        log_stream = log_path.open("w", encoding="utf-8")
        logs.configure("info", "json", stream=log_stream)
        cfg, running = build(workdir)
        daemon = Daemon.build(cfg)
        story = Story()
        interactive = console.is_terminal and out is None
        emit = out or (lambda line: print(line, flush=True))

        async def story_task() -> None:
            try:
                await play(daemon, running, story, pause)
            except Exception as exc:  # the demo reports, the daemon keeps its own logs
                story.failed = f"{type(exc).__name__}: {exc}"
                story.done = True
            if not keep_running:
                daemon.stop()

        async def view_task() -> None:
            if interactive:
                with Live(console=console, refresh_per_second=2) as live:
                    while not daemon.health.stopping:
                        links = await daemon.ledger.run(views.links, None, 50, False)
                        live.update(render(links, daemon, story))
                        await anyio.sleep(0.5)
            else:
                shown = 0
                while not daemon.health.stopping:
                    for line in story.steps[shown:]:
                        emit(f"demo: {line}")
                    shown = len(story.steps)
                    await anyio.sleep(0.2)

        def extra(tg: Any) -> None:
            tg.start_soon(story_task)
            tg.start_soon(view_task)

        emit(f"demo: simulators {', '.join(f'{a}={r.base_url}' for a, r in running.items())}")
        try:
            anyio.run(lambda: daemon.run(extra=extra))
        finally:
            for run in running.values():
                run.stop()
            log_stream.close()
        for line in story.steps[len(story.steps) - 1:] if not interactive else []:
            emit(f"demo: {line}")
        summary = _summary(cfg, story)
        emit(summary)
        return 0 if story.converged and not story.failed else 1


def _summary(cfg: config_mod.Config, story: Story) -> str:
    from syncd.ledger import Ledger

    ledger = Ledger.open(cfg.ledger_url)
    try:
        links = ledger.call(views.links, None, 50, False)
    finally:
        ledger.dispose()
    lines = ["", "demo summary:"]
    for link in links:
        members = ", ".join(f"{m['account']}={m['state']}/{m['severity'] or '-'}"
                            for m in link["members"])
        lines.append(f"  link {link['id']} {link['key']}: agreed {link['agreed'].get('state')}"
                     f"/{link['agreed'].get('severity')} — {members}")
    for gap in views.gaps(cfg):
        lines.append(f"  gap: {gap}")
    if story.failed:
        lines.append(f"  story failed: {story.failed}")
    lines.append("  result: " + ("converged: every tool shows the same state"
                                  if story.converged else "NOT converged"))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
