"""``syncd run`` loads only what the daemon runs (issue 16, target 6): no CLI (typer, rich,
pygments, click), no simulator code, no status-server code when it is off, no PostgreSQL driver
for a SQLite ledger, no schedule-migration code; ``syncd run`` command lines are told apart
from the rest. And what the daemon reads from vendors is freed when it is done with it, not at
the next full collection."""

from __future__ import annotations

import gc
import json
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest
from world import World, render, threaded_sims

from syncd.entry import DEFAULT_CONFIG, run_config

# Runs the console script's own entry point, and writes the modules the process had loaded
# when it exited (after SIGTERM: a clean shutdown runs atexit handlers).
SCRIPT = """
import atexit, json, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(
    sorted(k for k, v in sys.modules.items() if v is not None))))
from syncd.entry import main
main()
"""


@pytest.mark.slow
def test_daemon_loads_no_cli_and_no_simulator(tmp_path: Path) -> None:
    vendors = {"pd": "pagerduty", "vo": "victorops", "ii": "incidentio", "sp": "spike"}
    running, tables = threaded_sims(vendors, poll_interval=0.5)
    config = tmp_path / "syncd.toml"
    config.write_text(render(tables, [{"name": "g", "accounts": list(vendors)}],
                             tmp_path / "ledger.db"))
    modules = tmp_path / "modules.json"
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(modules), "run", "-c", str(config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(
                r.sim.call_count(method="GET") >= 2 for r in running.values()):
            time.sleep(0.1)  # every account polled (twice): the daemon is running
        assert all(r.sim.call_count(method="GET") >= 2 for r in running.values())
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err.decode()[-2000:]
    finally:
        for r in running.values():
            r.stop()
    loaded = set(json.loads(modules.read_text()))
    assert {"syncd.daemon", "syncd.engine.dispatcher", "syncd.vendors.incidentio"} <= loaded
    # The status server is off in this config: nothing of uvicorn/starlette either (click
    # comes with uvicorn and with httpx's command-line client); SQLite, so no PostgreSQL driver.
    for top in ("typer", "rich", "pygments", "syncd.cli", "syncd.simulators", "syncd.demo",
                "click", "uvicorn", "starlette", "httpx._main", "syncd.http.guard",
                "psycopg", "sqlalchemy.dialects.postgresql"):
        assert not {m for m in loaded if m == top or m.startswith(top + ".")}, top
    # Schedule migration (``syncd migrate``) is never run by the daemon: the vendor clients'
    # schedule mixins import it inside the methods that use it.
    assert not {m for m in loaded if m.startswith("syncd.migrate.")}


def test_only_plain_run_command_lines_skip_the_cli() -> None:
    assert run_config(["run"]) == Path(DEFAULT_CONFIG)
    assert run_config(["run", "-c", "x.toml"]) == Path("x.toml")
    assert run_config(["run", "--config", "x.toml"]) == Path("x.toml")
    assert run_config(["run", "--config=x.toml"]) == Path("x.toml")
    for other in (["run", "--help"], ["run", "-c"], ["run", "-c", "x", "y"], ["status"], [],
                  ["run", "--config="], ["--version"], ["run", "-c", "--help"]):
        assert run_config(other) is None, other


async def test_a_read_answer_is_freed_without_the_cycle_collector(tmp_path: Path) -> None:
    """httpx binds a response and its stream to each other; the vendor session unbinds them
    once the body is read, so a poll page's body (hundreds of KB with 100 incidents) goes as
    soon as it is parsed instead of waiting for the next full collection."""
    w = World(tmp_path, {"x": "spike", "y": "pagerduty"}, [{"name": "g", "accounts": ["x", "y"]}])
    try:
        for n in range(20):
            w.alert(f"k{n}")
        http = w.engine.clients["x"].http  # type: ignore[attr-defined]
        gc.collect()
        gc.disable()
        try:
            response = await http.request("GET", "/incidents/triggered",
                                          params={"page": 1, "perPage": 100})
            assert len(response.content) > 1000
            read = weakref.ref(response)
            del response
            assert read() is None
        finally:
            gc.enable()
    finally:
        await w.close()
