"""``syncd demo``: every vendor simulator, the real daemon, a short story and a live view.

Nothing here is staged: the simulators are the same ones the tests use, served over loopback HTTP;
the daemon is :class:`syncd.daemon.Daemon` with ``config/demo.toml`` (only the ports are swapped
for free ones) on a throw-away ledger; the story acts through the simulators' alert intake and
their "person in the UI" control surface, and the daemon does the rest through the vendor APIs.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
from syncd.engine.oncall import OnCallService
from syncd.ledger import oncall as oncall_store
from syncd.simulators.base import Simulator
from syncd.simulators.server import Running, start_in_thread
from syncd.vendors.base import AccountSettings, Capability
from syncd.vendors.spike import SpikeSettings
from syncd.vendors.victorops import VictorOpsSettings

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "demo.toml"
DEMO_LEDGER = '"~/.local/state/syncd/demo.db"'
ALERTS = [("demo-db-latency", "Database latency above 2s"),
          ("demo-api-errors", "API 5xx rate above 5%")]
# What the story leaves behind: the first incident acknowledged (and lowered to sev3 where a
# tool can take a severity), the second resolved.
EXPECTED = {ALERTS[0][0]: "acknowledged", ALERTS[1][0]: "resolved"}
LOWERED = "sev3"
PEOPLE = ("alice@example.com", "bob@example.com", "carol@example.com")  # in every simulator

View = dict[str, dict[str, tuple[str, str | None]]]  # dedup -> account -> (state, severity)


def demo_config_path() -> Path:
    """config/demo.toml in the checkout, or the copy packaged with syncd."""
    if DEMO_CONFIG.exists():
        return DEMO_CONFIG
    return Path(str(resources.files("syncd").joinpath("demo.toml")))


def demo_config_text() -> str:
    return demo_config_path().read_text(encoding="utf-8")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def simulator_for(settings: AccountSettings, *, seed: int = 0) -> Simulator:
    """The simulator standing in for one demo account, holding it to the limits the account
    declares it has (Splunk On-Call's 2018 or 2020 rate-limit table, Spike.sh's per-minute
    limit): a client budgeting for one table against a simulator enforcing another is answered
    with rate-limit 403s. ``syncd demo`` and ``syncd sim all`` both build their simulators here.
    """
    cls: Any = simulators.load(settings.vendor)
    if isinstance(settings, VictorOpsSettings):
        return cls(seed=seed, limit_table=settings.rate_limit_table)  # type: ignore[no-any-return]
    if isinstance(settings, SpikeSettings):
        return cls(seed=seed,  # type: ignore[no-any-return]
                   rate_limit_per_minute=settings.rate_limit_per_minute)
    return cls(seed=seed)  # type: ignore[no-any-return]


@dataclass
class Story:
    """The scripted incidents, and what happened, for the live view and the summary."""

    steps: list[str] = field(default_factory=list)
    done: bool = False
    converged: bool = False
    failed: str | None = None
    tools: View = field(default_factory=dict)  # what the tools showed when last looked at
    oncall: list[str] = field(default_factory=list)  # on-call lines for the summary
    oncall_agrees: bool = False
    graded: list[str] = field(default_factory=list)  # accounts syncd can set a severity in


def build(workdir: Path) -> tuple[config_mod.Config, dict[str, Running]]:
    """Start a simulator per demo account and load the demo config pointed at them."""
    text = demo_config_text()
    base = config_mod.loads(text, workdir / "demo.toml")
    running: dict[str, Running] = {}
    replacements: dict[str, str] = {}
    for account, settings in base.accounts.items():
        running[account] = start_in_thread(simulator_for(settings))
        replacements[settings.base_url] = running[account].base_url
    for old, new in replacements.items():
        text = text.replace(old, new)
    text = text.replace(f"path = {DEMO_LEDGER}", f'path = "{workdir / "demo.db"}"')
    text = text.replace('listen = "127.0.0.1:9797"', f'listen = "127.0.0.1:{_free_port()}"')
    cfg = config_mod.loads(text, workdir / "demo.toml")
    if not cfg.ledger_url.endswith(str(workdir / "demo.db")):
        raise RuntimeError(f"the demo config's ledger path is not {DEMO_LEDGER}")
    return cfg, running


async def play(daemon: Daemon, running: dict[str, Running], story: Story,
               pause: float) -> None:
    """Alerts fire in every tool, a person acks in one, severity changes, one is resolved, an
    on-call override opens a drift window; then the tools and the ledger are compared."""
    accounts = list(running)
    settings = daemon.config.accounts
    graded = [a for a in accounts if vendors.load(settings[a].vendor).capabilities_for(
        settings[a]) & Capability.SEVERITY_WRITE]
    story.graded = graded
    async with httpx.AsyncClient(timeout=10) as http:

        async def act(account: str, dedup: str, action: str, **extra: Any) -> None:
            r = await http.get(f"{running[account].base_url}/_sim/incidents")
            inc = next((i for i in r.json()["incidents"]
                        if _matches(i, dedup) and i["state"] != "resolved"), None)
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
        if graded:
            await act(graded[0], ALERTS[0][0], "severity", severity=LOWERED)
            story.steps.append(f"{graded[0]}: severity of {ALERTS[0][0]!r} lowered to {LOWERED}")
        await anyio.sleep(pause)
        await act(second, ALERTS[1][0], "resolve")
        story.steps.append(f"a person resolved {ALERTS[1][0]!r} in {second}")
        await _oncall_story(daemon, story)

        problems = ["not looked yet"]
        deadline = time.monotonic() + 60
        while problems and time.monotonic() < deadline:
            story.tools = await _observe(running, http)
            problems = _disagreements(story.tools, graded)
            if problems:
                await anyio.sleep(0.5)
        # The tools agree; give the ledger time to record the confirmations and next polls.
        behind = ["not looked yet"]
        settle = time.monotonic() + 20
        while not problems and behind and time.monotonic() < settle:
            links = await daemon.ledger.run(views.links, None, 50, False)
            story.tools = await _observe(running, http)
            problems = _disagreements(story.tools, graded)
            behind = _ledger_behind(links, story.tools)
            if behind:
                await anyio.sleep(0.5)
        story.converged = not problems and not behind and story.oncall_agrees
        if story.converged:
            story.steps.append("every tool agrees on state and severity"
                               + (" (where it has one)" if len(graded) < len(accounts) else "")
                               + ", the ledger matches, and the on-call schedules agree")
        else:
            reasons = problems or behind or ["the on-call schedules do not agree"]
            story.steps.append("NOT converged: " + "; ".join(reasons[:4]))
        story.done = True


def _matches(inc: dict[str, Any], dedup: str) -> bool:
    # Spike.sh has no dedup key: the alert title is the key there.
    return inc.get("dedup") == dedup or dedup in (inc.get("title") or "")


async def _observe(running: dict[str, Running], http: httpx.AsyncClient) -> View:
    """What every tool shows for the demo incidents, read from the simulators themselves."""
    view: View = {dedup: {} for dedup, _ in ALERTS}
    for account, run in running.items():
        r = await http.get(f"{run.base_url}/_sim/incidents")
        for inc in r.json()["incidents"]:
            for dedup in view:
                if _matches(inc, dedup):
                    view[dedup][account] = (inc["state"], inc.get("severity"))
    return view


def _disagreements(view: View, graded: list[str]) -> list[str]:
    """Why the tools do not agree yet (empty when they do): each shows the expected state, and
    every tool syncd can set a severity in shows the same one."""
    out = []
    for dedup, state in EXPECTED.items():
        seen = view.get(dedup, {})
        out += [f"{a} shows {dedup!r} {s}" for a, (s, _) in seen.items() if s != state]
        severities = {a: seen[a][1] for a in graded if a in seen}
        if len(set(severities.values())) > 1 or None in severities.values():
            out.append(f"{dedup!r} severity differs: "
                       + ", ".join(f"{a} {v or '-'}" for a, v in severities.items()))
    return out


def _ledger_behind(links: list[dict[str, Any]], view: View) -> list[str]:
    """Members whose last known value in the ledger is not what their tool shows."""
    out = []
    for link in links:
        for m in link["members"]:
            shown = view.get(link["key"] or "", {}).get(m["account"])
            if shown and shown != (m["state"], m["severity"]):
                out.append(f"ledger has {m['account']} {m['state']}/{m['severity'] or '-'} for "
                           f"{link['key']!r}, the tool shows {shown[0]}/{shown[1] or '-'}")
    return out


def _span(start: datetime, end: datetime) -> str:
    return f"{start:%a %H:%M}-{end:%H:%M} UTC"


async def _oncall_story(daemon: Daemon, story: Story) -> None:
    """A person overrides the leader's schedule for a window ahead; the tools now page different
    people then (a drift window), and the daemon repairs it with an override on the follower."""
    cfg = daemon.config
    mapping = next((m for m in cfg.oncall if m.repair == "override" and m.leader), None)
    if mapping is None:
        story.oncall_agrees = True  # nothing mapped, nothing to check
        return
    clients = daemon.engine.clients
    leader = next(m for m in mapping.members if m.account == mapping.leader)
    followers = [m.account for m in mapping.members if m.account != mapping.leader]
    svc = OnCallService(cfg, daemon.ledger, clients)

    async def live() -> Any:
        drifts, _ = await svc.schedule_view(datetime.now(UTC))
        return next(d for d in drifts if d.mapping == mapping.name)

    def who(people: dict[str, tuple[str, ...]]) -> str:
        return ", ".join(f"{k.split(':')[0]} {'/'.join(v) or 'nobody'}"
                         for k, v in people.items())

    before = await live()
    story.steps.append(f"on-call {mapping.name!r} now: {who(before.now)}"
                       + ("" if before.agree else " (already drifting)"))
    # Two whole hours a few hours ahead, inside one of the leader's shifts (so one person).
    soon = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=3)
    entries = await clients[leader.account].oncall(soon, soon + timedelta(days=1))
    shifts = sorted((e for e in entries if e.schedule_id == leader.schedule
                     and e.level == leader.level and e.start and e.end), key=lambda e: e.start)
    shift = next(e for e in shifts if e.end - max(e.start, soon) >= timedelta(hours=3))
    begins = max(shift.start, soon)
    start = begins.replace(minute=0, second=0, microsecond=0)
    start += timedelta(hours=1) if start < begins else timedelta(0)
    end = start + timedelta(hours=2)
    current = shift.user_email
    other = next(p for p in PEOPLE if p != current)
    since = datetime.now(UTC) - timedelta(minutes=1)
    await clients[leader.account].create_override(leader.schedule, other, start, end)
    story.steps.append(f"a person in {leader.account} put {other} on call {_span(start, end)} "
                       "(a schedule override)")
    drifting = await live()
    for w in drifting.windows:
        line = f"drift window {_span(w.start, w.end)}: {who(dict(w.who))}"
        story.steps.append(line)
        story.oncall.append(line)
    deadline = time.monotonic() + 30
    pushed: list[oncall_store.PushedOverride] = []
    while time.monotonic() < deadline:
        pushed = [p for p in await daemon.ledger.run(oncall_store.pushed_overrides, since)
                  if p.mapping == mapping.name and p.outcome != "pending"]
        if {p.account for p in pushed} >= set(followers):
            break
        await anyio.sleep(0.5)
    for p in pushed:
        line = (f"syncd repaired it: override on {p.account} for {p.user_email} "
                f"{_span(p.start, p.end)}: {p.outcome}")
        story.steps.append(line)
        story.oncall.append(line)
    after = await live()
    story.oncall_agrees = bool(after.agree)
    line = (f"on-call {mapping.name!r}: the tools agree again" if after.agree else
            f"on-call {mapping.name!r} still drifts: " + "; ".join(
                f"{_span(w.start, w.end)} {who(dict(w.who))}" for w in after.windows))
    story.steps.append(line)
    story.oncall.append(line)


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


def _pair(state: str | None, severity: str | None) -> str:
    return f"{state or '-'}/{severity or '-'}"


def render(links: list[dict[str, Any]], daemon: Daemon, story: Story) -> Group:
    table = Table(title="links: what each tool shows / what the ledger believes", expand=True)
    for col in ("link", "key", "agreed", "tool shows / ledger", "pending pushes"):
        table.add_column(col)
    for link in links:
        agreed = link["agreed"]
        shown = story.tools.get(link["key"] or "", {})
        table.add_row(
            str(link["id"]), link["key"] or "",
            _pair(agreed.get("state"), agreed.get("severity")),
            "\n".join(f"{m['account']}: {_pair(*shown.get(m['account'], (None, None)))}"
                      f" / {_pair(m['state'], m['severity'])}" for m in link["members"]),
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
        emitted = [0]

        def flush() -> None:
            """Print the story steps not printed yet (plain output, not a terminal)."""
            for line in story.steps[emitted[0]:]:
                emit(f"demo: {line}")
            emitted[0] = len(story.steps)

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
                while not daemon.health.stopping:
                    flush()
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
        if not interactive:
            flush()
        summary = _summary(cfg, story)
        emit(summary)
        return 0 if story.converged and not story.failed else 1


def _summary(cfg: config_mod.Config, story: Story) -> str:
    """Per link, what each tool showed when last looked at beside what the ledger believes."""
    from syncd.ledger import Ledger

    ledger = Ledger.open(cfg.ledger_url)
    try:
        links = ledger.call(views.links, None, 50, False)
    finally:
        ledger.dispose()
    lines = ["", "demo summary (tool = read from the tool, ledger = what syncd believes):"]
    for link in links:
        agreed = link["agreed"]
        lines.append(f"  link {link['id']} {link['key']}: agreed "
                     f"{_pair(agreed.get('state'), agreed.get('severity'))}")
        shown = story.tools.get(link["key"] or "", {})
        for m in link["members"]:
            tool = _pair(*shown.get(m["account"], ("?", "?")))
            believed = _pair(m["state"], m["severity"])
            notes = [] if tool == believed else ["<- differs"]
            if m["account"] not in story.graded:
                notes.append("(syncd cannot set severity here)")
            lines.append(f"    {m['account']:<11} tool {tool:<18} ledger {believed:<18} "
                         + " ".join(notes))
    lines += [f"  {line}" for line in story.oncall]
    for gap in views.gaps(cfg):
        lines.append(f"  gap: {gap}")
    if story.failed:
        lines.append(f"  story failed: {story.failed}")
    lines.append("  result: " + ("converged: the tools agree and the ledger matches them"
                                  if story.converged else "NOT converged"))
    return "\n".join(line.rstrip() for line in lines)


class SimError(Exception):
    """``syncd sim all`` cannot serve (a port in use, a ledger that is not a ledger)."""


def serve_all(*, latency: float = 0.0, seed: int = 0, seed_incidents: int = 0,
              keep_ledger: bool = False) -> None:
    """``syncd sim all``: a simulator per account of the demo config, on the config's own
    ports and with the limits its accounts declare, until SIGINT/SIGTERM.

    stdout gets one ``syncd sim VENDOR`` JSON line per simulator (plus ``account``); stderr gets
    what to run next. The simulators start empty, so the demo ledger of an earlier run (links
    and cursors for incidents that are gone) is removed unless ``keep_ledger``.
    """
    path = demo_config_path()
    cfg = config_mod.loads(path.read_text(encoding="utf-8"), path)
    ledger = Path(cfg.ledger_url.removeprefix("sqlite:///"))
    running: dict[str, Running] = {}
    stop = threading.Event()
    try:
        for account, settings in cfg.accounts.items():
            url = httpx.URL(settings.base_url)
            sim = simulator_for(settings, seed=seed)
            sim.network_latency = latency
            if seed_incidents:
                sim.seed_incidents(seed_incidents)
            try:
                running[account] = start_in_thread(sim, url.host, url.port or 80)
            except OSError as exc:
                raise SimError(f"cannot serve {account} on {url.host}:{url.port}: "
                               f"{exc.strerror or exc} (another syncd sim running?)") from None
        for account, run in running.items():
            print(json.dumps({**run.describe(), "account": account}), flush=True)
        _say(fresh_ledger(ledger, keep_ledger))
        shown = _shown(path)
        _say(f"try: syncd once -c {shown}; syncd links -c {shown}; syncd oncall -c {shown}; "
             f"syncd run -c {shown} (status on {cfg.status.listen})")
        _say("Ctrl-C stops the simulators; they keep everything in memory only")
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(0.5):
            pass
    finally:
        for run in running.values():  # all at once: each takes up to a second to wind down
            run.server.should_exit = True
        for run in running.values():
            run.stop()


def _say(line: str) -> None:
    print(f"syncd: {line}", file=sys.stderr, flush=True)


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def fresh_ledger(ledger: Path, keep: bool) -> str:
    """Start the demo ledger clean (fresh simulators), or keep it; say which."""
    ledger.parent.mkdir(parents=True, exist_ok=True)
    if not ledger.exists():
        return f"demo ledger: {ledger} (new)"
    if keep:
        return (f"demo ledger: kept {ledger} from an earlier run; its links and cursors name "
                "incidents these fresh simulators do not have (drop --keep-ledger to start "
                "clean)")
    with ledger.open("rb") as f:
        if f.read(16) != b"SQLite format 3\x00":
            raise SimError(f"{ledger} is not an SQLite ledger; not removing it")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{ledger}{suffix}").unlink(missing_ok=True)
    return (f"demo ledger: {ledger} (started clean: removed the one of an earlier run; "
            "--keep-ledger keeps it)")


if __name__ == "__main__":
    sys.exit(main())
