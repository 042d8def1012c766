"""``syncd ...``: the daemon, one-shot cycles, operator views and the simulators.

Text output is for people (rich tables on a terminal); ``--json`` output is a stable interface for
scripts. Errors are one line on stderr and a non-zero exit; secrets never appear in either: every
exit goes through :func:`syncd.secrets.redact` (and an unexpected crash prints a redacted
traceback without local variables).
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from syncd import __version__, secrets
from syncd import config as config_mod
from syncd.entry import DEFAULT_CONFIG, read_config, run_daemon, say_err
from syncd.ledger import Ledger, LedgerError, ledger_error_in

if TYPE_CHECKING:
    from syncd.ledger.lease import Lease

app = typer.Typer(
    add_completion=False, no_args_is_help=True, rich_markup_mode=None,
    # Locals hold resolved keys; main() prints crashes itself, redacted.
    pretty_exceptions_enable=False, pretty_exceptions_show_locals=False,
    help="Keeps incidents and on-call state consistent across paging vendors.",
)
out = Console()


def literal_row(table: Table, *cells: str) -> None:
    """Cells as literal text, secrets redacted: error texts name their account in brackets
    ("[vo] GET ...") and vendor names may hold syncd's ``[marker]``, which rich would take for
    markup (dropping it, or failing on a ``[/...]``)."""
    table.add_row(*(Text(secrets.redact(c)) for c in cells))

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="config file (TOML)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable JSON output")]


def fail(message: str, code: int = 2) -> typer.Exit:
    say_err(message)
    return typer.Exit(code)


def load_config(path: Path) -> config_mod.Config:
    """Load, validate and pre-build (clients, budgets, ledger URL, listen address) a config, so
    a command never starts on a config that cannot run; problems are one line each."""
    cfg = read_config(path)
    if cfg is None:
        raise typer.Exit(2)
    return cfg


def open_ledger(cfg: config_mod.Config, *, exclusive: bool = False,
                creates: bool = True) -> Ledger:
    """``exclusive``: this command syncs (pushes), so it takes the ledger's lock and is refused
    while a daemon or another syncing command holds it. Read-only commands never take it.
    ``creates=False`` (views, link, unlink): a ledger that does not exist yet, or has an older
    schema, is an error rather than created or migrated by whoever runs the command (often
    root, whose file the service user could then not write)."""
    try:
        return Ledger.open(cfg.ledger_url, busy_timeout=cfg.ledger.busy_timeout,
                           exclusive=exclusive, password=cfg.ledger_password, migrate=creates)
    except LedgerError as exc:
        raise fail(str(exc)) from None


@contextmanager
def using_ledger(cfg: config_mod.Config, *, exclusive: bool = False,
                 creates: bool = True) -> Iterator[Ledger]:
    """The ledger for one command, disposed (and its lock released) however the command ends;
    a ledger failure on the way (disk full, locked, damaged) is one line and exit 1."""
    with disposing(open_ledger(cfg, exclusive=exclusive, creates=creates)) as ledger:
        yield ledger


@contextmanager
def disposing(ledger: Ledger) -> Iterator[Ledger]:
    """Dispose of ``ledger`` (releasing its lock) however the block ends; a ledger failure in
    it is one line and exit 1."""
    try:
        yield ledger
    except Exception as exc:
        error = ledger_error_in(exc)
        if error is None:
            raise
        raise fail(str(error), 1) from None
    finally:
        ledger.dispose()


def emit(data: Any) -> None:
    print(json.dumps(secrets.redact(data), indent=2, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def version_callback(value: bool) -> None:
    if value:
        print(f"syncd {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[bool, typer.Option("--version", callback=version_callback,
                                          is_eager=True, help="print the version")] = False,
) -> None:
    """Keeps incidents and on-call state consistent across paging vendors."""


@app.command("check-config")
def check_config(config: ConfigOpt = Path(DEFAULT_CONFIG), json_out: JsonOpt = False) -> None:
    """Validate a config file and resolve its secrets; print OK and a summary."""
    problems: list[str] = []
    cfg = read_config(config, problems)
    if cfg is None:
        if json_out:  # a script reads stdout: refused is JSON too
            emit({"ok": False, "config": str(config), "problems": problems})
        raise typer.Exit(2)
    summary = {
        "ok": True,
        "config": str(cfg.path),
        "ledger": secrets.safe_url(cfg.ledger_url),
        "accounts": {n: a.vendor for n, a in cfg.accounts.items()},
        "sync": [{"name": g.name, "mode": g.mode, "accounts": g.accounts} for g in cfg.sync],
        "oncall": [m.name for m in cfg.oncall],
    }
    if json_out:
        emit(summary)
        return
    print(f"OK: {cfg.path}")
    print(f"  ledger:   {summary['ledger']}")
    for name, account in cfg.accounts.items():
        print(f"  account:  {name} ({account.vendor}, every {account.poll_interval:g}s)")
    for g in cfg.sync:
        print(f"  sync:     {g.name} ({g.mode}: {', '.join(g.accounts)})")
    for m in cfg.oncall:
        print(f"  oncall:   {m.name} ({', '.join(x.account for x in m.members)})")


@app.command()
def once(config: ConfigOpt = Path(DEFAULT_CONFIG), json_out: JsonOpt = False,
         full: Annotated[bool, typer.Option(help="read every open incident")] = False) -> None:
    """One poll, reconcile and push cycle; the exit code says whether anything failed."""
    from syncd.engine import Engine

    cfg = load_config(config)
    with using_ledger(cfg, exclusive=True) as ledger:

        async def go() -> Any:
            lease = await _lease_for_once(cfg, ledger)
            engine = Engine.from_config(cfg, ledger, write_guard=lease.guard if lease else None)
            try:
                return await engine.cycle(full=True if full else None)
            finally:
                await engine.aclose()
                if lease is not None:
                    await _release_after_once(ledger, lease)

        result = anyio.run(go)
    data = {
        "ok": result.ok,
        "polls": [p.__dict__ for p in result.polls],
        "dispatches": [
            {k: v for k, v in d.__dict__.items()} for d in result.dispatches
        ],
    }
    if json_out:
        emit(data)
    else:
        for p in result.polls:
            mark = "ok" if p.ok else f"FAILED: {p.error}"
            print(secrets.redact(f"poll {p.account}: {p.observed} seen, {p.changed} changed, "
                                 f"{p.actions} actions ({mark})"))
        for d in result.dispatches:
            if d.pushed or d.errors:
                print(secrets.redact(
                    f"push {d.account}: {d.done} done, {d.parked} parked, {d.retried} retry"
                    + (f" ({'; '.join(d.errors[:3])})" if d.errors else "")))
    raise typer.Exit(0 if result.ok else 1)


@app.command()
def run(config: ConfigOpt = Path(DEFAULT_CONFIG)) -> None:
    """Run the daemon until SIGTERM/SIGINT."""
    raise typer.Exit(run_daemon(config))


async def _release_after_once(ledger: Ledger, lease: Lease) -> None:
    """Give the lease back after ``once``; a release that fails (its lock wait is bounded) must
    neither hide the cycle's own error nor fail a good cycle: the TTL ends the term anyway."""
    import structlog

    try:
        await ledger.run_lease(lease.release)
    except Exception as exc:
        structlog.get_logger("syncd.cli").warning(
            "lease.release_abandoned", error=f"{type(exc).__name__}: {exc}"[:300],
            holder=lease.holder, ttl=lease.ttl)


async def _lease_for_once(cfg: config_mod.Config, ledger: Ledger) -> Any:
    """On a shared (PostgreSQL) ledger ``once`` syncs only under the lease, like a replica:
    refused while a daemon leads, so the two never push the same change twice."""
    if ledger.dialect != "postgresql":
        return None  # the file lock already made this the only syncing process
    from syncd.ledger.lease import Lease

    lease = Lease(cfg.ledger.lease_ttl)
    term = await lease.maintain(ledger)
    if term.holder != lease.holder:
        raise fail(f"ledger {secrets.safe_url(cfg.ledger_url)} is led by {term.holder} "
                   f"(lease expires in {(term.expires_at - term.now).total_seconds():.0f}s): "
                   "a running replica syncs it; stop it first, or let it do the work", 1)
    ledger.fence = lease.fence
    return lease


@app.command()
def status(config: ConfigOpt = Path(DEFAULT_CONFIG), json_out: JsonOpt = False) -> None:
    """Ledger summary: accounts, links, outbox depth, last poll per account."""
    from syncd import views

    cfg = load_config(config)
    with using_ledger(cfg, creates=False) as ledger:
        data = ledger.call(views.status, cfg)
    if json_out:
        emit(data)
        return
    table = Table(title=Text(f"syncd {__version__} — {data['ledger']}"))
    for col in ("account", "vendor", "last poll", "failures", "last error"):
        table.add_column(col)
    for a in data["accounts"]:
        literal_row(table, a["name"], a["vendor"], _ago(a["last_success_at"]),
                    str(a["failures"]), a["last_error"] or "")
    out.print(table)
    counts, outbox = data["counts"], data["outbox"]
    out.print(f"records {counts['records']}, links {counts['links']}; outbox: "
              + ", ".join(f"{k} {v}" for k, v in outbox.items()), highlight=False)
    for row in data["parked"]:
        out.print(f"parked #{row['id']} {row['account']} {row['action']} {row['value'] or ''}: "
                  f"{row['error']}", markup=False, highlight=False)
    for gap in data["gaps"]:
        out.print(f"gap: {gap}", markup=False, highlight=False)
    for line in data.get("oncall", []):
        out.print(f"oncall: {line}", markup=False, highlight=False)
    lease = data.get("lease")
    if lease:
        left = lease["expires_in_s"]
        until = f"expires in {left:g}s" if left > 0 else f"expired {-left:g}s ago"
        out.print(f"leader: {lease['holder']} (fencing token {lease['token']}), lease {until} "
                  f"(at {lease['expires_at']:%Y-%m-%d %H:%M:%S} UTC)", markup=False,
                  highlight=False)


@app.command()
def links(config: ConfigOpt = Path(DEFAULT_CONFIG), json_out: JsonOpt = False,
          group: Annotated[str | None, typer.Option(help="only this sync group")] = None,
          open_only: Annotated[bool, typer.Option("--open", help="only unresolved")] = False,
          limit: int = 100) -> None:
    """Each link with its members, agreed values and pending actions."""
    from syncd import views

    cfg = load_config(config)
    with using_ledger(cfg, creates=False) as ledger:
        data = ledger.call(views.links, group, limit, open_only)
    if json_out:
        emit({"links": data})
        return
    table = Table()
    for col in ("link", "group", "key", "agreed", "members", "pending"):
        table.add_column(col)
    for link in data:
        agreed = link["agreed"]
        members = "\n".join(
            f"{m['account']}:{m['external_id']} {m['state']} {m['severity'] or ''}"
            for m in link["members"]
        )
        pending = "\n".join(f"{p['account']} {p['action']} {p['value'] or ''} ({p['status']})"
                            for p in link["pending"])
        literal_row(table, str(link["id"]), link["group"], link["key"] or "",
                    f"{agreed.get('state') or ''} {agreed.get('severity') or ''}",
                    members, pending)
    out.print(table)


@app.command()
def audit(config: ConfigOpt = Path(DEFAULT_CONFIG), json_out: JsonOpt = False,
          account: Annotated[str | None, typer.Option(help="only this account")] = None,
          kind: Annotated[str | None, typer.Option(help="observed, push, conflict, ...")] = None,
          link: Annotated[int | None, typer.Option(help="only this link id")] = None,
          since: Annotated[str | None, typer.Option(help="ISO time")] = None,
          limit: int = 100) -> None:
    """The audit log, newest first."""
    from syncd import views

    cfg = load_config(config)
    when = None
    if since:
        try:
            when = datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            raise fail(f"--since {since!r} is not an ISO 8601 time") from None
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
    with using_ledger(cfg, creates=False) as ledger:
        rows = ledger.call(views.audit, account, kind, link, when, limit)
    if json_out:
        emit({"audit": rows})
        return
    table = Table()
    for col in ("at", "kind", "account", "incident", "field", "old", "new", "outcome/detail"):
        table.add_column(col)
    for r in rows:
        literal_row(table, _jsonable(r["at"])[:19], r["kind"], r["account"] or "",
                    r["external_id"] or "", r["field"] or "", r["old"] or "", r["new"] or "",
                    " ".join(x for x in (r["outcome"], r["detail"]) if x))
    out.print(table)


@app.command("link")
def link_cmd(records: Annotated[list[str], typer.Argument(help="ACCOUNT:ID, two or more")],
             config: ConfigOpt = Path(DEFAULT_CONFIG),
             group: Annotated[str | None, typer.Option(help="sync group")] = None) -> None:
    """Link records explicitly (they must have been polled)."""
    from syncd import views
    from syncd.engine import links

    cfg = load_config(config)
    if len(records) < 2:
        raise fail("link needs at least two ACCOUNT:ID records")
    with using_ledger(cfg, creates=False) as ledger:
        try:
            link_id = ledger.call(links.link_records, cfg, views.capabilities(cfg),
                                  _parse_refs(records), group)
        except ValueError as exc:
            raise fail(str(exc)) from None
    print(f"linked as link {link_id}")


@app.command()
def unlink(record: Annotated[str, typer.Argument(help="ACCOUNT:ID")],
           config: ConfigOpt = Path(DEFAULT_CONFIG),
           group: Annotated[str | None, typer.Option(help="sync group")] = None) -> None:
    """Take a record out of its link(s); it will not be re-correlated automatically."""
    from syncd.engine import links

    cfg = load_config(config)
    with using_ledger(cfg, creates=False) as ledger:
        try:
            count = ledger.call(links.unlink_record, _parse_refs([record])[0], group)
        except ValueError as exc:
            raise fail(str(exc)) from None
    print(f"removed from {count} link(s)")


@app.command()
def sim(
    vendor: Annotated[str | None, typer.Argument(
        help="pagerduty, victorops, incidentio or spike; or all: every simulator "
        "config/demo.toml names, on its ports, with the settings it expects")] = None,
    all_sims: Annotated[bool, typer.Option("--all", help="same as VENDOR = all")] = False,
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1 (0 = any free port)")] = 0,
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    seed_incidents: Annotated[int, typer.Option(help="incidents to seed")] = 0,
    seed_age_days: Annotated[float, typer.Option(
        min=0, max=3650, help="seed the incidents this many days in the past (a backlog "
        "nobody touched lately)")] = 0.0,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    latency_ms: Annotated[float, typer.Option(
        "--latency-ms", min=0, help="delay every vendor API call this long (a WAN round trip "
        "on purpose; survives /_sim/reset)")] = 0.0,
    certfile: Annotated[Path | None, typer.Option(help="serve HTTPS with this certificate")]
    = None,
    keyfile: Annotated[Path | None, typer.Option(help="private key for --certfile")] = None,
    keep_ledger: Annotated[bool, typer.Option(
        help="with all: keep the demo ledger of an earlier run instead of starting clean")]
    = False,
) -> None:
    """Serve a vendor simulator; prints one JSON line with its credentials once listening
    (``all``: one line per simulator, then how to try syncd against them on stderr)."""
    from syncd import simulators
    from syncd.simulators.server import serve_forever

    if all_sims or vendor == "all":
        if (vendor not in (None, "all") or port or host != "127.0.0.1" or certfile or keyfile
                or seed_age_days):
            raise fail("all serves every demo simulator on the ports config/demo.toml names: "
                       "no VENDOR, --port, --host, --seed-age-days or TLS options with it")
        from syncd import demo as demo_mod

        try:
            demo_mod.serve_all(latency=latency_ms / 1000, seed=seed,
                               seed_incidents=seed_incidents, keep_ledger=keep_ledger)
        except demo_mod.SimError as exc:
            raise fail(str(exc)) from None
        return
    if vendor is None:
        raise fail("name a VENDOR (pagerduty, victorops, incidentio, spike) or all")
    try:
        cls = simulators.load(vendor)
    except (ValueError, ModuleNotFoundError) as exc:
        raise fail(str(exc)) from None
    if (certfile is None) != (keyfile is None):
        raise fail("--certfile and --keyfile go together")
    for option, path in (("--certfile", certfile), ("--keyfile", keyfile)):
        try:  # the TLS layer's own error names neither file
            if path is not None:
                path.open("rb").close()
        except OSError as exc:
            raise fail(f"{option} {path}: {exc.strerror or exc}") from None
    instance = cls(seed=seed)
    instance.network_latency = latency_ms / 1000
    if seed_incidents:
        instance.seed_incidents(seed_incidents, age_days=seed_age_days)
    try:
        serve_forever(instance, host, port, certfile=str(certfile) if certfile else None,
                      keyfile=str(keyfile) if keyfile else None)
    except OSError as exc:  # the port taken, an address not here, a certificate not found
        raise fail(f"cannot serve {vendor} on {host}:{port}: {exc.strerror or exc}") from None


@app.command()
def demo(
    keep_running: Annotated[bool, typer.Option(help="keep going until Ctrl-C")] = False,
    speed: Annotated[float, typer.Option(help="pause between story steps, seconds")] = 1.5,
) -> None:
    """Simulators plus the daemon on a temporary ledger, with a live view; needs no accounts."""
    from syncd import demo as demo_mod

    code = demo_mod.main(keep_running=keep_running, pause=speed)
    raise typer.Exit(code)



@app.command()
def oncall(
    config: ConfigOpt = Path(DEFAULT_CONFIG), json_out: JsonOpt = False,
    at: Annotated[str | None, typer.Option(
        help="ISO time or now-relative (-2h, +3d): past = snapshot history, future = the "
        "vendors' schedules")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show the overrides repair would "
                                          "push, push nothing")] = False,
    repair: Annotated[bool, typer.Option("--repair", help='push overrides for mappings with '
                                         'repair = "override"')] = False,
) -> None:
    """Mapped on-call schedules side by side: who each tool has on call, drift windows ahead."""
    from syncd.engine import Engine
    from syncd.engine import oncall as oncall_mod

    cfg = load_config(config)
    when = None
    if at:
        try:
            when = _parse_when(at)
        except (ValueError, OverflowError):  # OverflowError: beyond datetime's years
            raise fail(f"--at {at!r} is not an ISO 8601 time or -2h/+3d style offset") from None
    past = when is not None and when <= datetime.now(UTC)
    if past and (repair or dry_run):
        raise fail("--repair and --dry-run act on now and the future, not on a past --at")
    # Only a repair that pushes syncs; looking (and --dry-run) works next to a running daemon,
    # and like the other views never creates or migrates the ledger (often run as root).
    pushes = repair and not dry_run and when is None
    ledger = open_ledger(cfg, exclusive=pushes, creates=pushes)

    async def go() -> oncall_mod.OnCallReport:
        engine = None if past else Engine.from_config(cfg, ledger)
        service = oncall_mod.OnCallService(cfg, ledger, engine.clients if engine else {},
                                           engine.dispatchers if engine else None)
        try:
            return await service.check(when, repair=repair, dry_run=dry_run)
        finally:
            if engine is not None:
                await engine.aclose()

    with disposing(ledger):
        result = anyio.run(go)
    by_name = {m.name: m for m in cfg.oncall}
    data = secrets.redact({
        "at": result.at or datetime.now(UTC), "source": result.source,
        "polls": [p.as_dict() for p in result.polls],
        "mappings": [
            {**d.as_dict(), "leader": by_name[d.mapping].leader,
             "repair": by_name[d.mapping].repair,
             "members": [{"account": m.account, "vendor": cfg.accounts[m.account].vendor,
                          "schedule": m.schedule, "level": m.level,
                          "label": oncall_mod.label(m)} for m in by_name[d.mapping].members]}
            for d in result.drifts
        ],
        "repairs": [r.as_dict() for r in result.repairs],
    })
    failed = [p for p in result.polls if not p.ok]
    if json_out:
        emit(data)
        raise typer.Exit(1 if failed else 0)
    for p in failed:
        say_err(f"on-call poll {p.account} failed: {p.error}")
    table = Table(title=f"on-call at {_jsonable(data['at'])[:19]} ({data['source']})")
    for col in ("mapping", "member", "on call", "drift ahead"):
        table.add_column(col)
    for mapping in data["mappings"]:
        drift = "\n".join(
            f"{_jsonable(w['start'])[:16]} → {_jsonable(w['end'])[:16]} {w['reason']}"
            for w in mapping["drift"][:8]) or ("unknown" if mapping["agree"] is None else "none")
        if len(mapping["drift"]) > 8:
            drift += f"\n… {len(mapping['drift']) - 8} more"
        for i, member in enumerate(mapping["members"]):
            who = mapping["now"].get(member["label"])
            lead = " (leader)" if member["account"] == mapping["leader"] else ""
            literal_row(table, mapping["mapping"] if i == 0 else "", member["label"] + lead,
                        "not polled" if who is None else ", ".join(who) or "nobody",
                        drift if i == 0 else "")
    out.print(table)
    for mapping in data["mappings"]:
        for u in mapping["unmatched"]:
            out.print(f"unmatched: {mapping['mapping']}: {u['account']} user {u['user_id']} "
                      f"({u['email'] or 'no email'}) not found in {', '.join(u['missing_in'])}",
                      markup=False, highlight=False)
    for r in data["repairs"]:
        out.print(f"repair {r['status']}: {r['mapping']} {r['account']}:{r['schedule_id']} "
                  f"{r['user_email'] or r['person']} {_jsonable(r['start'])[:16]} → "
                  f"{_jsonable(r['end'])[:16]}" + (f" ({r['reason']})" if r["reason"] else ""),
                  markup=False, highlight=False)
    raise typer.Exit(1 if failed else 0)


def _parse_when(text: str) -> datetime:
    """An ISO time (UTC when no zone is given) or an offset from now: -2h, +3d, +90m."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[:1] in "+-" and text[-1:] in units:
        seconds = float(text[1:-1]) * units[text[-1]] * (-1 if text[0] == "-" else 1)
        return datetime.now(UTC) + timedelta(seconds=seconds)
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)

def _parse_refs(refs: Sequence[str]) -> list[tuple[str, str]]:
    parsed = []
    for ref in refs:
        account, sep, external_id = ref.partition(":")
        if not sep or not account or not external_id:
            raise fail(f"{ref!r} is not ACCOUNT:ID")
        parsed.append((account, external_id))
    return parsed


def _ago(when: datetime | None) -> str:
    if when is None:
        return "never"
    seconds = (datetime.now(UTC) - when).total_seconds()
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def main() -> None:
    try:
        app()
    except Exception as exc:  # a bug: say so, but never with a key in the traceback
        text = "".join(traceback.format_exception(exc))
        print(secrets.redact(text), file=sys.stderr, end="", flush=True)
        sys.exit(1)


# Last, because the subcommand module reuses this module's helpers.
from syncd.cli_migrate import app as _migrate_app  # noqa: E402

app.add_typer(_migrate_app, name="migrate")
