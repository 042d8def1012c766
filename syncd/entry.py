"""The ``syncd`` console script: ``syncd run`` starts the daemon without loading the CLI.

The daemon is the long-lived process, so it loads only what it runs: no typer, no rich, no
pygments. ``syncd run [-c FILE | --config FILE | --config=FILE]`` is parsed here by hand; every
other command line (``--help``, other commands, anything unexpected) goes to the full CLI in
:mod:`syncd.cli`, which gives the same ``run`` through :func:`run_daemon`.

Some libraries import rich and pygments on their own when they are installed (httpx for its
command-line client, encode/httpx#3547, which also loads click; structlog for pretty tracebacks):
in the daemon they (and httpx's command-line client itself) are marked absent in
``sys.modules`` before anything else loads, a documented import-system rule (a ``None`` entry
makes the import raise ``ImportError``), and both fall back to what they do without them
(structlog prints plain tracebacks).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from syncd.config import Config

DEFAULT_CONFIG = os.environ.get("SYNCD_CONFIG", "/etc/syncd/syncd.toml")
NOT_IN_DAEMON = ("typer", "rich", "pygments", "httpx._main")
"""Modules the daemon never needs: present for the CLI (``httpx._main`` is httpx's command-line
client, which loads click whether or not anything uses it), kept out of the daemon's memory."""


def say_err(message: str) -> None:
    """One line on stderr, whatever the terminal width, with every secret redacted. A message
    of several lines (libpq's connection errors add a tab-indented hint) is joined into one, so
    each problem stays one line for journald and scripts."""
    from syncd import secrets

    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    print(secrets.redact(f"syncd: {line}"), file=sys.stderr, flush=True)


def read_config(path: Path, problems: list[str] | None = None, *,
                log_stream: TextIO | None = None) -> Config | None:
    """The config at ``path``, validated and pre-built (clients, budgets, ledger URL, listen
    address: what accepts also starts), with logging set up from it (on ``log_stream``,
    stderr by default); or None after saying on stderr, one line per problem, why it cannot be
    used (also appended to ``problems``)."""
    from syncd import config as config_mod
    from syncd import logs, secrets

    try:
        cfg = config_mod.load(path)
        config_mod.preflight(cfg)
    except config_mod.ConfigError as exc:
        for line in exc.lines:
            say_err(line)
        if problems is not None:
            problems.extend(secrets.redact(exc.lines))
        return None
    logs.configure(cfg.logging.level, cfg.logging.format, stream=log_stream or sys.stderr)
    for warning in cfg.warnings:
        say_err(f"warning: {warning}")
    return cfg


def run_daemon(path: Path) -> int:
    """Run the daemon from the config at ``path`` until a stop signal; the exit code."""
    import functools
    import signal

    import anyio

    from syncd import daemon
    from syncd.ledger import LedgerError

    early = daemon.catch_early_signals()
    cfg = read_config(path, log_stream=sys.stdout)  # set up once: its warnings said once
    if cfg is None:
        return 2
    try:
        built = daemon.Daemon.build(cfg)
    except LedgerError as exc:
        say_err(str(exc))
        return 2
    try:
        anyio.run(functools.partial(built.run, early_signals=early))
    except daemon.StartError as exc:
        say_err(str(exc))
        return 2
    # ``early`` records again once the run is over: a SIGHUP there still means 129.
    return daemon.HANGUP_STATUS if signal.SIGHUP in early else built.exit_code


def run_config(args: Sequence[str]) -> Path | None:
    """The config path when ``args`` is exactly a ``run`` command line, else None."""
    if not args or args[0] != "run":
        return None
    rest = list(args[1:])
    if not rest:
        return Path(DEFAULT_CONFIG)
    if len(rest) == 2 and rest[0] in ("-c", "--config") and not rest[1].startswith("-"):
        return Path(rest[1])
    if len(rest) == 1 and rest[0].startswith("--config=") and len(rest[0]) > 9:
        return Path(rest[0][9:])
    return None


def main() -> None:
    path = run_config(sys.argv[1:])
    if path is None:
        from syncd.cli import main as cli

        cli()
        return
    for name in NOT_IN_DAEMON:
        sys.modules.setdefault(name, None)  # type: ignore[assignment]
    sys.exit(run_daemon(path))
