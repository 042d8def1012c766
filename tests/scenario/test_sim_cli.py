"""``syncd sim``: one vendor simulator (its JSON line, ``--latency-ms``), and ``syncd sim all``
serving config/demo.toml's simulators, driven by ``syncd once`` / ``syncd run`` exactly as a
user would after the demo."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd.demo import fresh_ledger

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "demo.toml"
PORTS = {"pagerduty": 8081, "victorops": 8082, "incidentio": 8083, "spike": 8084}


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def syncd(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "syncd", *args], capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.fixture
def sim_all(tmp_path: Path) -> Iterator[tuple[dict[str, dict[str, Any]], dict[str, str]]]:
    """``syncd sim all`` with HOME in tmp_path (the demo ledger lives under ~/.local/state)."""
    busy = [p for p in PORTS.values() if not port_free(p)]
    if busy:
        pytest.skip(f"ports {busy} are in use on this machine")
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "syncd", "sim", "all"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        described = {}
        for _ in PORTS:  # one JSON line per simulator, once all of them accept connections
            desc = json.loads(proc.stdout.readline())
            described[desc["account"]] = desc
        yield described, env
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert proc.stderr is not None
        hints = proc.stderr.read()
        assert "syncd once -c config/demo.toml" in hints and "demo ledger:" in hints


def states(described: dict[str, dict[str, Any]], dedup: str) -> dict[str, set[str]]:
    with httpx.Client(timeout=10) as http:
        return {account: {i["state"] for i in http.get(f"{d['base_url']}/_sim/incidents")
                          .json()["incidents"] if i["dedup"] == dedup}
                for account, d in described.items()}


def test_sim_all_serves_what_demo_toml_expects_and_once_syncs_an_ack(
        sim_all: tuple[dict[str, dict[str, Any]], dict[str, str]]) -> None:
    described, env = sim_all
    accounts = tomllib.loads(DEMO.read_text())["accounts"]
    assert set(described) == set(accounts)
    for account, desc in described.items():
        table = accounts[account]
        assert desc["vendor"] == table["vendor"]
        assert desc["base_url"] == table["base_url"] == f"http://127.0.0.1:{PORTS[desc['vendor']]}"
        assert desc["credentials"] and desc["users"]
        if "rate_limit_table" in table:  # the limits the account budgets for are enforced
            assert desc["options"]["limit_table"] == table["rate_limit_table"]

    with httpx.Client(timeout=10) as http:
        for desc in described.values():
            r = http.post(f"{desc['base_url']}/_sim/alerts",
                          json={"dedup": "cli-1", "title": "cli test", "severity": "sev1"})
            assert r.status_code == 200
    once = syncd("once", "-c", str(DEMO), "--json", env=env)
    assert once.returncode == 0, once.stdout + once.stderr
    links = json.loads(syncd("links", "-c", str(DEMO), "--json", env=env).stdout)["links"]
    assert len(links) == 1 and len(links[0]["members"]) == 4

    with httpx.Client(timeout=10) as http:
        pd = described["pagerduty"]["base_url"]
        inc = next(i for i in http.get(f"{pd}/_sim/incidents").json()["incidents"]
                   if i["dedup"] == "cli-1")
        http.post(f"{pd}/_sim/incidents/{inc['id']}/act", json={"action": "acknowledge"})
    once = syncd("once", "-c", str(DEMO), "--json", env=env)
    assert once.returncode == 0, once.stdout + once.stderr
    assert states(described, "cli-1") == {a: {"acknowledged"} for a in described}

    with httpx.Client(timeout=10) as http:
        for account, desc in described.items():
            calls = http.get(f"{desc['base_url']}/_sim/calls").json()["calls"]
            limited = [c for c in calls if c["status"] in (403, 429)]
            assert limited == [], (account, limited)
    # The ledger is in the user state directory, not in the checkout.
    assert (Path(env["HOME"]) / ".local" / "state" / "syncd" / "demo.db").exists()
    assert not (ROOT / "config" / "demo.db").exists()

    # The daemon takes it from there: a resolve in Splunk On-Call reaches every tool.
    with httpx.Client(timeout=10) as http:
        vo = described["splunk"]["base_url"]
        inc = next(i for i in http.get(f"{vo}/_sim/incidents").json()["incidents"]
                   if i["dedup"] == "cli-1")
        http.post(f"{vo}/_sim/incidents/{inc['id']}/act", json={"action": "resolve"})
    run = subprocess.Popen([sys.executable, "-m", "syncd", "run", "-c", str(DEMO)], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        seen = states(described, "cli-1")
        while time.monotonic() < deadline and set().union(*seen.values()) != {"resolved"}:
            time.sleep(0.5)
            seen = states(described, "cli-1")
        assert seen == {a: {"resolved"} for a in described}
    finally:
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=20) == 0


def testfresh_ledger_starts_clean_unless_kept(tmp_path: Path) -> None:
    ledger = tmp_path / "state" / "demo.db"
    assert "(new)" in fresh_ledger(ledger, keep=False)
    assert ledger.parent.is_dir()
    ledger.write_bytes(b"SQLite format 3\x00" + b"\x00" * 84)
    Path(f"{ledger}-wal").write_bytes(b"")
    assert "kept" in fresh_ledger(ledger, keep=True) and ledger.exists()
    assert "started clean" in fresh_ledger(ledger, keep=False)
    assert not ledger.exists() and not Path(f"{ledger}-wal").exists()


def test_sim_vendor_prints_its_line_and_keeps_a_wan_latency(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "syncd", "sim", "spike", "--latency-ms", "25"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        desc = json.loads(proc.stdout.readline())  # exactly one JSON line once listening
        assert desc["vendor"] == "spike" and desc["credentials"] and desc["users"]
        with httpx.Client(timeout=10) as http:
            faults = f"{desc['base_url']}/_sim/faults"
            assert http.get(faults).json()["network_latency"] == 0.025
            http.delete(faults)
            http.post(f"{desc['base_url']}/_sim/reset")
            assert http.get(faults).json()["network_latency"] == 0.025  # not a fault: it stays
    finally:
        proc.terminate()
        proc.wait(timeout=10)
