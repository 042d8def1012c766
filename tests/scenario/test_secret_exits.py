"""Secrets stay out of every output, even when a vendor answers with an error page that echoes the
request headers, credentials included (a debugging proxy, a WAF page, a wrong host): the ledger's
error columns, ``/status``, ``/metrics``, ``syncd status``/``links``/``audit`` (text and JSON),
``syncd once`` (text and JSON), exceptions and both log formats (issue 20.3).

Each vendor takes its turn as the echoing target, through the simulators' generic
``echo_headers_rate`` fault, and every test first proves the echo reached the output it checks
(``[REDACTED]`` is there), so it cannot pass by not exercising the path.
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner
from world import LANDED, World

from syncd import cli, logs, views
from syncd import config as config_mod
from syncd.config import Config
from syncd.daemon import Daemon
from syncd.http.status import build_app
from syncd.simulators import load as load_simulator
from syncd.simulators.base import Faults
from syncd.simulators.configs import account_table, render
from syncd.simulators.server import start_in_thread

REDACTED = "[REDACTED]"


def account_secrets(cfg: Config, account: str) -> list[str]:
    """Every credential value of one account, read from its validated settings."""
    settings = cfg.accounts[account]
    return [getattr(settings, name).get_secret_value() for name in type(settings).model_fields
            if isinstance(getattr(settings, name), SecretStr)]


def ledger_files(directory: Path) -> bytes:
    """The raw bytes of the ledger and its WAL, where a stored key would sit in clear."""
    return b"".join(p.read_bytes() for p in sorted(directory.glob("ledger.db*")))


def leaks(text: str, keys: list[str]) -> list[str]:
    return [key for key in keys if key in text]


@pytest.mark.parametrize("vendor", LANDED)
async def test_echoed_credentials_reach_no_output(tmp_path: Path, vendor: str) -> None:
    source = "spike" if vendor == "victorops" else "victorops"
    w = World(tmp_path, {"src": source, "dst": vendor},
              [{"name": "g", "accounts": ["src", "dst"]}])
    keys = account_secrets(w.config, "dst")
    assert keys
    json_log, console_log = io.StringIO(), io.StringIO()
    try:
        w.alert("echo-1")
        await w.settle()
        w.sims["dst"].faults = Faults(echo_headers_rate=1.0, echo_status=422)
        w.act("src", "echo-1", "resolve")
        logs.configure("info", "json", stream=json_log)
        await w.cycle()
        await w.restart()  # a fresh poller logs its failure again, now to the console format
        logs.configure("info", "console", stream=console_log)
        await w.cycle()
        daemon = Daemon(w.config, w.ledger, w.engine)
        transport = httpx.ASGITransport(app=build_app(daemon))
        async with httpx.AsyncClient(transport=transport, base_url="http://s.localhost") as http:
            status_json = (await http.get("/status")).text
            metrics_text = (await http.get("/metrics")).text
    finally:
        await w.close()

    view = w.ledger.call(views.status, w.config)
    dst = next(a for a in view["accounts"] if a["name"] == "dst")
    assert "Request headers" in dst["last_error"] and REDACTED in dst["last_error"]
    assert any(REDACTED in (p["error"] or "") for p in view["parked"]), view["parked"]
    assert REDACTED in status_json and REDACTED in json_log.getvalue()
    assert REDACTED in console_log.getvalue()

    runner = CliRunner()
    cli_out = ""
    for args in (["status"], ["status", "--json"], ["links", "--json"], ["audit", "--json"],
                 ["links"], ["audit"]):
        result = runner.invoke(cli.app, [*args, "-c", str(w.config_path)])
        assert result.exit_code == 0, result.stderr
        cli_out += result.stdout + result.stderr
    assert REDACTED in cli_out

    ledger_bytes = ledger_files(tmp_path)
    outputs = {"status": status_json, "metrics": metrics_text, "json log": json_log.getvalue(),
               "console log": console_log.getvalue(), "cli": cli_out,
               "ledger": ledger_bytes.decode("latin-1")}
    assert {name: leaks(text, keys) for name, text in outputs.items()} == {
        name: [] for name in outputs}


@pytest.mark.slow
@pytest.mark.parametrize("vendor", LANDED)
def test_once_with_an_echoing_vendor(tmp_path: Path, vendor: str) -> None:
    """``syncd once`` (JSON and text, its logs on stderr) against a real loopback vendor."""
    running = start_in_thread(load_simulator(vendor)(seed=1))
    try:
        running.sim.faults = Faults(echo_headers_rate=1.0, echo_status=422)
        table = {**account_table(vendor, running.describe()), "max_retries": 0}
        config = tmp_path / "syncd.toml"
        config.write_text(render({"acct": table}, [], tmp_path / "ledger.db"))
        keys = account_secrets(config_mod.load(config), "acct")
        assert keys
        for extra in (["--json"], []):
            proc = subprocess.run([sys.executable, "-m", "syncd", "once", "-c", str(config),
                                   *extra], capture_output=True, text=True, timeout=60)
            assert proc.returncode == 1, proc.stderr
            assert REDACTED in proc.stdout, proc.stdout
            assert leaks(proc.stdout + proc.stderr, keys) == []
        out = json.loads(subprocess.run(
            [sys.executable, "-m", "syncd", "status", "--json", "-c", str(config)],
            capture_output=True, text=True, timeout=60).stdout)
        assert REDACTED in out["accounts"][0]["last_error"]
        assert leaks(json.dumps(out), keys) == []
    finally:
        running.stop()


async def test_status_server_logs_through_structlog(tmp_path: Path) -> None:
    """uvicorn's own lines (here: a garbage request) come out in syncd's JSON format, through
    the redacting processors, not through uvicorn's default handler."""
    w = World(tmp_path, {"vo": "victorops", "sp": "spike"},
              [{"name": "g", "accounts": ["vo", "sp"]}], poll_interval=3600)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    w.config_path.write_text(w.config_path.read_text().replace(
        "[status]\nenabled = false", f'[status]\nenabled = true\nlisten = "127.0.0.1:{port}"'))
    await w.restart()
    daemon = Daemon(w.config, w.ledger, w.engine)
    stream = io.StringIO()
    logs.configure("info", "json", stream=stream)

    async def scenario(tg: object) -> None:
        for _ in range(100):
            try:
                conn = await anyio.connect_tcp("127.0.0.1", port)
                break
            except OSError:
                await anyio.sleep(0.05)
        async with conn:
            await conn.send(b"NOT HTTP AT ALL\r\n\r\n")
            with anyio.move_on_after(5):
                try:
                    while await conn.receive():
                        pass
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    pass  # uvicorn answered 400 and closed the connection
        daemon.stop()

    with anyio.fail_after(60):
        await daemon.run(extra=lambda tg: tg.start_soon(scenario, tg))
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert any(e["event"] == "Invalid HTTP request received." for e in events), events
