"""``syncd migrate plan|apply|verify``: the CLI renders, :mod:`syncd.migrate.service` decides.

Kept beside cli.py so the migration commands read as one unit; ``--json`` shapes are stable.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer
from rich.table import Table

from syncd import secrets
from syncd.cli import (
    DEFAULT_CONFIG,
    ConfigOpt,
    JsonOpt,
    emit,
    fail,
    literal_row,
    load_config,
    open_ledger,
    out,
)
from syncd.config import Config
from syncd.ledger import Ledger, LedgerError, LedgerMissing, utcnow
from syncd.migrate import service
from syncd.migrate.plan import Plan, Verb
from syncd.vendors.base import VendorError

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                  help="Move schedules and escalation policies to another vendor, verified.")

FromOpt = Annotated[str, typer.Option("--from", help="source account")]
ToOpt = Annotated[str, typer.Option("--to", help="target account")]
ScheduleOpt = Annotated[list[str] | None, typer.Option("--schedule", help="source schedule id")]
PolicyOpt = Annotated[list[str] | None, typer.Option("--escalation-policy",
                                                     help="source escalation policy id")]
TeamOpt = Annotated[list[str] | None, typer.Option("--team", help="source team id")]
DaysOpt = Annotated[float, typer.Option("--days", help="horizon in days")]


def _run(config: Path, source: str, target: str, work: Any, *, writes: bool = False) -> Any:
    """``writes`` (apply): the ledger records what is made, created or migrated if need be.
    plan and verify only read what apply made: a ledger that does not exist yet means nothing
    was, and they never create one nor migrate its schema (run as root, or beside an older
    daemon, that would leave files the service user cannot write or a schema it cannot read)."""
    cfg = load_config(config)
    ledger = open_ledger(cfg) if writes else _existing_ledger(cfg)
    try:
        pair = service.open_pair(cfg, ledger, source, target)
    except service.MigrateError as exc:
        if ledger is not None:
            ledger.dispose()
        raise fail(str(exc)) from None

    async def go() -> Any:
        try:
            return await work(pair)
        finally:
            await pair.source_client.aclose()
            await pair.target_client.aclose()

    try:
        return anyio.run(go)
    except (service.MigrateError, VendorError) as exc:
        raise fail(str(exc)) from None
    finally:
        if ledger is not None:
            ledger.dispose()


def _existing_ledger(cfg: Config) -> Ledger | None:
    """The ledger as it is, or None when it does not exist yet; never created or migrated."""
    try:
        return Ledger.open(cfg.ledger_url, busy_timeout=cfg.ledger.busy_timeout,
                           password=cfg.ledger_password, migrate=False)
    except LedgerMissing:
        return None
    except LedgerError as exc:
        raise fail(str(exc)) from None


def say(text: str) -> None:
    """Plain text (rich would take ``[[oncall]]`` for markup), with any secret redacted."""
    print(secrets.redact(text))


def _selection(schedule: list[str] | None, policy: list[str] | None,
               team: list[str] | None) -> service.Selection:
    return service.Selection(tuple(schedule or ()), tuple(policy or ()), tuple(team or ()))


@app.command("plan")
def plan_cmd(source: FromOpt, target: ToOpt, config: ConfigOpt = Path(DEFAULT_CONFIG),
             schedule: ScheduleOpt = None, policy: PolicyOpt = None, team: TeamOpt = None,
             days: DaysOpt = service.DEFAULT_DAYS, json_out: JsonOpt = False) -> None:
    """What apply would do to every selected object, and why; writes nothing."""
    selection = _selection(schedule, policy, team)
    result: Plan = _run(config, source, target, lambda pair: service.plan(
        pair, selection, now=utcnow(), horizon=timedelta(days=days)))
    if json_out:
        emit(result.as_dict())
    else:
        _show_plan(result)


@app.command("apply")
def apply_cmd(source: FromOpt, target: ToOpt, config: ConfigOpt = Path(DEFAULT_CONFIG),
              schedule: ScheduleOpt = None, policy: PolicyOpt = None, team: TeamOpt = None,
              days: DaysOpt = service.DEFAULT_DAYS, json_out: JsonOpt = False,
              yes: Annotated[bool, typer.Option("--yes", help="apply without asking")] = False
              ) -> None:
    """Perform exactly a fresh plan: create once, update in place, never delete."""
    selection = _selection(schedule, policy, team)

    async def work(pair: service.Pair) -> Any:
        now = utcnow()
        result = await service.plan(pair, selection, now=now, horizon=timedelta(days=days))
        if not yes:
            _show_plan(result)
            writes = sum(1 for i in result.items if i.verb in (Verb.CREATE, Verb.UPDATE))
            if not writes:
                return result, []
            if not sys.stdin.isatty():
                raise service.MigrateError("not a terminal: re-run with --yes to apply")
            if not typer.confirm(f"Apply {writes} change(s) to {pair.target}?"):
                raise service.MigrateError("nothing applied")
        return result, await service.apply(pair, result, now=now)

    result, applied = _run(config, source, target, work, writes=True)
    if json_out:
        emit({"plan": result.as_dict(), "applied": [a.as_dict() for a in applied]})
        return
    for a in applied:
        say(f"{a.action:9} {a.kind} {a.source_id} ({a.name}) -> {a.target_id or '-'}"
                  + (f", {a.overrides_created} override(s)" if a.overrides_created else ""))


@app.command("verify")
def verify_cmd(source: FromOpt, target: ToOpt, config: ConfigOpt = Path(DEFAULT_CONFIG),
               days: DaysOpt = service.DEFAULT_DAYS, json_out: JsonOpt = False,
               write_config: Annotated[Path | None, typer.Option(
                   "--write-config", help="write the dual-run [[sync]]/[[oncall]] config")]
               = None) -> None:
    """Both tools' final on-call per migrated schedule and level; exit 0 only if they agree."""

    async def work(pair: service.Pair) -> Any:
        verified = await service.verify(pair, now=utcnow(), days=days)
        return verified, service.dual_run_config(pair, verified)

    verified, snippet = _run(config, source, target, work)
    differing = sum(v.disagreements for v in verified)
    if write_config is not None:
        write_config.write_text(snippet + "\n", encoding="utf-8")
    if json_out:
        emit({"ok": differing == 0, "days": days, "checked": [v.as_dict() for v in verified],
              "config": snippet})
    else:
        table = Table("kind", "source", "target", "level", "differing intervals",
                      "escalation mismatches")
        for v in verified:
            literal_row(table, v.kind, v.source_id, v.target_id, str(v.level or "-"),
                        str(len(v.differences)), str(len(v.mismatches)))
        out.print(table)
        for v in verified:
            for m in v.mismatches:
                say(f"  {v.kind} {v.source_id} level {v.level or '-'}: {m}")
            for d in v.differences:
                say(f"  {v.kind} {v.source_id} level {v.level or '-'}: "
                          f"{d.start.isoformat()} .. {d.end.isoformat()}: source pages "
                          f"{sorted(d.source) or 'nobody'}, target pages "
                          f"{sorted(d.target) or 'nobody'}")
        if not verified:
            say("nothing migrated yet: run syncd migrate apply first")
        say("\n# dual-run configuration" + (f" (written to {write_config})"
                                                  if write_config else "") + ":\n" + snippet)
    raise typer.Exit(0 if differing == 0 and verified else 1)


def _show_plan(result: Plan) -> None:
    table = Table("kind", "source id", "name", "action", "conversion", "details",
                  title=f"syncd migrate plan {result.source} -> {result.target}")
    for item in result.items:
        details: list[str] = []
        if item.refusal:
            details.append(f"{item.refusal.code}: {item.refusal.sentence}")
        details += list(item.losses) + list(item.notes)
        for step in item.steps:
            if step["loss"]:
                details.append(f"level {step['level']}: {step['loss']}")
        if item.verified_by:
            details.append(f"{len(item.differences)} differing interval(s) over "
                           f"{result.horizon.days} days ({item.verified_by})")
        literal_row(table, item.kind, item.source_id, item.name, item.verb.value,
                      item.conversion.value, "\n".join(details) or "-")
    out.print(table)
    for u in result.unmatched:
        say(f"missing in {result.target}: {u.email or u.user_id} "
                  f"(used by {', '.join(u.referenced_by)})")
    summary = ", ".join(f"{n} {verb}" for verb, n in result.summary().items() if n)
    say(f"plan: {summary or 'nothing selected'}")
