"""Operator views over a real ledger: status, links, audit, link/unlink, once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from world import World


def syncd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "syncd", *args, "-c", str(config)],
                          capture_output=True, text=True, timeout=60)


async def test_status_links_audit_json(tmp_path: Path) -> None:
    w = World(tmp_path, {"vo": "victorops", "sp": "spike"},
              [{"name": "g", "accounts": ["vo", "sp"]}])
    try:
        w.alert("view-1")
        w.alert("view-2")
        await w.cycle()
        w.act("sp", "view-1", "acknowledge")
        await w.settle()
    finally:
        await w.close()
    status = json.loads(syncd(w.config_path, "status", "--json").stdout)
    assert {a["name"]: a["failures"] for a in status["accounts"]} == {"vo": 0, "sp": 0}
    assert status["counts"]["links"] == 2 and status["outbox"]["done"] == 1
    assert any("vo (victorops) cannot set severity" in g for g in status["gaps"])
    links = json.loads(syncd(w.config_path, "links", "--json").stdout)["links"]
    by_key = {link["key"]: link for link in links}
    assert by_key["view-1"]["agreed"]["state"] == "acknowledged"
    assert {m["state"] for m in by_key["view-1"]["members"]} == {"acknowledged"}
    audit = json.loads(syncd(w.config_path, "audit", "--json", "--kind", "push").stdout)
    assert [(a["account"], a["outcome"]) for a in audit["audit"]] == [("vo", "done")]
    text = syncd(w.config_path, "status").stdout
    assert "vo" in text and "outbox" in text


async def test_manual_unlink_and_link(tmp_path: Path) -> None:
    w = World(tmp_path, {"vo": "victorops", "sp": "spike"},
              [{"name": "g", "accounts": ["vo", "sp"]}])
    try:
        w.alert("man-1", accounts=["vo"])
        w.alert("man-2", accounts=["sp"])
        await w.cycle()
        vo_id = w.incident("vo", "man-1")["id"]
        sp_id = w.incident("sp", "man-2")["id"]
    finally:
        await w.close()
    proc = syncd(w.config_path, "link", f"vo:{vo_id}", f"sp:{sp_id}")
    assert proc.returncode == 0, proc.stderr
    w.open()
    try:
        w.act("vo", "man-1", "resolve")
        await w.settle()
        assert w.incident("sp", "man-2")["state"] == "resolved"
    finally:
        await w.close()
    assert syncd(w.config_path, "unlink", f"vo:{vo_id}").stdout.startswith("removed from 1")
    bad = syncd(w.config_path, "link", "vo:nope", f"sp:{sp_id}")
    assert bad.returncode == 2 and "not in the ledger" in bad.stderr


def test_once_exit_code_reports_failures(tmp_path: Path) -> None:
    config = tmp_path / "syncd.toml"
    config.write_text(
        '[ledger]\npath = "l.db"\n[status]\nenabled = false\n'
        '[accounts.vo]\nvendor = "victorops"\nbase_url = "http://127.0.0.1:9"\n'
        'api_id = "env:T_ID"\napi_key = "env:T_KEY"\nmax_retries = 0\ntimeout = 1\n'
    )
    proc = subprocess.run([sys.executable, "-m", "syncd", "once", "-c", str(config), "--json"],
                          capture_output=True, text=True, timeout=60,
                          env={"T_ID": "id-value-1", "T_KEY": "key-value-2", "PATH": "/usr/bin"})
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["ok"] is False and "connection failed" in out["polls"][0]["error"]
    assert "key-value-2" not in proc.stdout + proc.stderr


def test_status_prints_error_text_literally(tmp_path: Path) -> None:
    """A poll error names its account in brackets ("[vo] GET /incidents: ..."); the status
    table must print it as it is, not take "[vo]" for rich markup and drop it."""
    config = tmp_path / "syncd.toml"
    config.write_text(
        '[ledger]\npath = "l.db"\n[status]\nenabled = false\n'
        '[accounts.vo]\nvendor = "victorops"\nbase_url = "http://127.0.0.1:9"\n'
        'api_id = "env:T_ID"\napi_key = "env:T_KEY"\nmax_retries = 0\ntimeout = 1\n'
    )
    env = {"T_ID": "id-value-1", "T_KEY": "key-value-2", "PATH": "/usr/bin", "COLUMNS": "300"}
    for command in ("once", "status"):
        proc = subprocess.run([sys.executable, "-m", "syncd", command, "-c", str(config)],
                              capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "[vo] GET" in proc.stdout, proc.stdout


def test_run_refuses_to_start_when_the_status_port_is_taken(tmp_path: Path) -> None:
    """A status listen address that cannot be bound stops ``syncd run`` before it polls: a
    daemon without /healthz, /readyz and its webhook routes only looked started. The one line
    names the key and the reason."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "syncd.toml"
        config.write_text(
            f'[ledger]\npath = "l.db"\n[status]\nlisten = "127.0.0.1:{port}"\n'
            '[accounts.vo]\nvendor = "victorops"\nbase_url = "http://127.0.0.1:9"\n'
            'api_id = "env:T_ID"\napi_key = "env:T_KEY"\nmax_retries = 0\ntimeout = 1\n'
        )
        proc = subprocess.run([sys.executable, "-m", "syncd", "run", "-c", str(config)],
                              capture_output=True, text=True, timeout=30,
                              env={"T_ID": "id-value-1", "T_KEY": "key-value-2",
                                   "PATH": "/usr/bin"})
    assert proc.returncode == 2, proc.stderr
    assert "daemon.started" not in proc.stderr + proc.stdout
    assert f"status.listen 127.0.0.1:{port}: cannot listen there" in proc.stderr, proc.stderr


def test_a_ledger_that_cannot_be_reached_is_one_line(tmp_path: Path) -> None:
    """libpq's connection error spans two lines ("...Connection refused\\n\\tIs the server
    running..."); the CLI says it in one, without the URL's password."""
    pytest.importorskip("psycopg")
    config = tmp_path / "syncd.toml"
    config.write_text(
        '[ledger]\nurl = "postgresql+psycopg://syncd:pg-pass-4711@127.0.0.1:9/syncd"\n'
        '[status]\nenabled = false\n'
        '[accounts.vo]\nvendor = "victorops"\nbase_url = "http://127.0.0.1:9"\n'
        'api_id = "env:T_ID"\napi_key = "env:T_KEY"\n'
    )
    env = {"T_ID": "id-value-1", "T_KEY": "key-value-2", "PATH": "/usr/bin"}
    for command in ("status", "run"):
        proc = subprocess.run([sys.executable, "-m", "syncd", command, "-c", str(config)],
                              capture_output=True, text=True, timeout=60, env=env)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "Connection refused" in proc.stderr, proc.stderr
        assert "pg-pass-4711" not in proc.stderr + proc.stdout


def test_a_fresh_postgresql_ledger_is_not_there_yet_for_what_only_reads(
        tmp_path: Path, pg_url: str) -> None:
    """A new, empty PostgreSQL database (the ledger before the first ``syncd run``): the views
    and ``migrate plan``/``verify`` said "has schema version 0 ... syncd run migrates it", and
    plan and verify exited 2 where docs/migration.md says plan finds nothing migrated. It is a
    ledger not there yet, as a missing SQLite file is, and nothing is written to it."""
    from sqlalchemy import create_engine, inspect
    from typer.testing import CliRunner

    from syncd import cli
    from syncd import config as config_mod
    from syncd.cli_migrate import _existing_ledger

    config = tmp_path / "syncd.toml"
    config.write_text(
        f'[ledger]\nurl = "{pg_url}"\n[status]\nenabled = false\n'
        '[accounts.vo]\nvendor = "victorops"\nbase_url = "http://127.0.0.1:9"\n'
        'api_id = "vo-id"\napi_key = "vo-key-0001"\n'
    )
    result = CliRunner().invoke(cli.app, ["status", "-c", str(config)])
    assert result.exit_code == 2, result.output
    assert "no syncd tables yet" in result.output and "schema version" not in result.output
    assert _existing_ledger(config_mod.load(config)) is None  # migrate plan/verify: none yet
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert inspect(conn).get_table_names() == []
    finally:
        engine.dispose()


def test_read_only_views_never_create_the_ledger(tmp_path: Path) -> None:
    """``sudo syncd status`` before the service's first start ran as root and created the
    ledger file, root-owned and 0644, in the syncd user's state directory: the service (User=
    syncd) then refused to start ("not readable and writable by this user") until someone
    chowned it. The views only read: a ledger that does not exist yet is one line and exit 2,
    and no file appears."""
    from typer.testing import CliRunner

    from syncd import cli

    config = tmp_path / "syncd.toml"
    config.write_text(
        '[ledger]\npath = "state/ledger.db"\n[status]\nenabled = false\n'
        '[accounts.vo]\nvendor = "victorops"\nbase_url = "http://127.0.0.1:9"\n'
        'api_id = "vo-id"\napi_key = "vo-key-0001"\n'
    )
    (tmp_path / "state").mkdir()
    for args in (["status"], ["links", "--json"], ["audit"], ["unlink", "vo:1"],
                 ["link", "vo:1", "vo:2"], ["oncall", "--at", "-1h"], ["oncall"],
                 ["oncall", "--dry-run"], ["oncall", "--at", "+1h", "--repair"]):
        result = CliRunner().invoke(cli.app, [*args, "-c", str(config)])
        assert result.exit_code == 2, (args, result.output)
        assert "does not exist yet" in result.output, (args, result.output)
        assert list((tmp_path / "state").iterdir()) == [], args
