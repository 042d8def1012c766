"""``syncd sim`` servers on the ports config/demo.toml names, driven by ``syncd once`` and
``syncd run`` exactly as a user would."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PORTS = {"pagerduty": 8081, "victorops": 8082, "incidentio": 8083, "spike": 8084}


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_sim_servers_with_demo_config(tmp_path: Path) -> None:
    busy = [p for p in PORTS.values() if not port_free(p)]
    if busy:
        pytest.skip(f"ports {busy} are in use on this machine")
    procs = []
    try:
        described = {}
        for vendor, port in PORTS.items():
            proc = subprocess.Popen(
                [sys.executable, "-m", "syncd", "sim", vendor, "--port", str(port)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            procs.append(proc)
            assert proc.stdout is not None
            line = proc.stdout.readline()  # exactly one JSON line once it accepts connections
            described[vendor] = json.loads(line)
        for vendor, desc in described.items():
            assert desc["vendor"] == vendor
            assert desc["base_url"] == f"http://127.0.0.1:{PORTS[vendor]}"
            assert desc["credentials"] and desc["users"]
        config = tmp_path / "demo.toml"
        shutil.copy(ROOT / "config" / "demo.toml", config)
        with httpx.Client(timeout=10) as http:
            for desc in described.values():
                r = http.post(f"{desc['base_url']}/_sim/alerts",
                              json={"dedup": "cli-1", "title": "cli test", "severity": "sev1"})
                assert r.status_code == 200
        once = subprocess.run([sys.executable, "-m", "syncd", "once", "-c", str(config),
                               "--json"], capture_output=True, text=True, timeout=120)
        assert once.returncode == 0, once.stdout + once.stderr
        links = json.loads(subprocess.run(
            [sys.executable, "-m", "syncd", "links", "-c", str(config), "--json"],
            capture_output=True, text=True, timeout=60).stdout)["links"]
        assert len(links) == 1 and len(links[0]["members"]) == 4
        with httpx.Client(timeout=10) as http:
            pd = described["pagerduty"]["base_url"]
            inc = next(i for i in http.get(f"{pd}/_sim/incidents").json()["incidents"]
                   if i["dedup"] == "cli-1")
            http.post(f"{pd}/_sim/incidents/{inc['id']}/act", json={"action": "acknowledge"})
        run = subprocess.Popen([sys.executable, "-m", "syncd", "run", "-c", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            states: set[str] = set()
            with httpx.Client(timeout=10) as http:
                while time.monotonic() < deadline:
                    states = {i["state"] for d in described.values()
                              for i in http.get(f"{d['base_url']}/_sim/incidents").json()[
                                  "incidents"] if i["dedup"] == "cli-1"}
                    if states == {"acknowledged"}:
                        break
                    time.sleep(0.5)
            assert states == {"acknowledged"}
        finally:
            run.send_signal(signal.SIGTERM)
            assert run.wait(timeout=20) == 0
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
