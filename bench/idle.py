"""Idle cost: 10,000 open incidents per account and nothing changing. What does each poll
cycle cost in vendor calls, and what does the daemon cost in CPU and memory?

Each simulator runs as its own process (``syncd sim VENDOR --seed-incidents N``), so this
process is the daemon alone and its CPU time and RSS are the daemon's. The real daemon runs
(scheduler, poll and dispatch jobs) with ``--poll-interval`` seconds between polls; limits are
compressed by ``--scale`` on both sides as in the other benchmarks. After every account's first
full read (not measured: it happens once), the call counters are cleared and the daemon runs for
``--window`` seconds of steady state.

Figures: vendor calls per poll per account (the target: O(1) pages, not O(open incidents)),
CPU % of one core over the window at the compressed interval, the CPU seconds one poll cycle of
all accounts costs, and that CPU % at the default 30 s poll interval. ``rss_mb`` is the memory
of ``syncd run`` itself: after the measured window the same config runs as its own process
(``python -m syncd run``, the console script's path, documented budgets) against the same
simulators and ledger for ``--rss-window`` seconds of delta polls; ``bench_rss_mb`` is this
process's (the in-process daemon plus the benchmark) at the end of the window.

The backlog is seeded ``--backlog-age-days`` in the past (default 2): open incidents that
nobody touched today, as a real backlog of that size is. That matters for incident.io only:
its ``updated_at[gte]`` filters compare dates (docs/vendors/incidentio.md), so its delta poll
lists everything updated *today*. ``incidentio_updated_today`` is therefore measured too, after
the main run, on its own: the same number of open incidents all updated today, the first full
read, then ``--today-polls`` delta polls through the engine, counted at the simulator.

``python bench/idle.py [--incidents 10000] [--quick]``; last stdout line is the JSON.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    World,
    account_table,
    emit,
    landed,
    machine,
    peak_rss_mb,
    quiet_logs,
    render,
    rss_mb,
)

from syncd import config as config_mod
from syncd import metrics
from syncd.daemon import Daemon
from syncd.engine import Engine
from syncd.ledger import Ledger

DEFAULT_POLL = 30.0


def start_sims(vendor_names: list[str], incidents: int, age_days: float = 0.0
               ) -> dict[str, tuple[Any, dict]]:
    procs = {}
    for vendor in vendor_names:
        proc = subprocess.Popen(
            [sys.executable, "-m", "syncd", "sim", vendor, "--port", "0",
             "--seed-incidents", str(incidents), "--seed-age-days", str(age_days)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs[vendor] = proc
    out = {}
    for vendor, proc in procs.items():
        line = proc.stdout.readline() if proc.stdout else ""
        if not line:
            raise RuntimeError(f"simulator {vendor} did not start")
        out[vendor] = (proc, json.loads(line))
    return out


def polls_done(account: str) -> float:
    return sum(metrics.POLLS.labels(account, kind)._value.get() for kind in ("full", "delta"))


def daemon_rss(config: Path, seconds: float) -> tuple[float, float]:
    """RSS and peak RSS (MB) of ``syncd run -c config`` after ``seconds`` of running."""
    proc = subprocess.Popen([sys.executable, "-m", "syncd", "run", "-c", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(seconds)
        if proc.poll() is not None:
            raise RuntimeError(f"syncd run exited with {proc.returncode}")
        return rss_mb(proc.pid), peak_rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


async def idle(incidents: int, poll_interval: float, scale: float, window: float,
               vendor_names: list[str], limit_s: float, rss_window: float = 20.0,
               age_days: float = 0.0) -> dict[str, Any]:
    sims = start_sims(vendor_names, incidents, age_days)
    try:
        with tempfile.TemporaryDirectory(prefix="syncd-bench-") as tmpdir:
            tmp = Path(tmpdir)
            tables = {}
            http = httpx.AsyncClient(timeout=30)
            for vendor, (_proc, desc) in sims.items():
                table = account_table(vendor, desc)
                table.update({"poll_interval": poll_interval, "full_resync_interval": 86400.0})
                tables[vendor] = table
                r = await http.post(f"{desc['base_url']}/_sim/rate-limits", json={"scale": scale})
                r.raise_for_status()
            groups = [{"name": "main", "accounts": list(sims), "mode": "correlate"}]
            path = tmp / "syncd.toml"
            path.write_text(render(tables, groups, tmp / "ledger.db"))
            config = config_mod.load(path)
            ledger = Ledger.open(config.ledger_url)
            daemon = Daemon(config, ledger, Engine.from_config(config, ledger,
                                                                budget_scale=scale))
            out: dict[str, Any] = {}

            async def calls(desc: dict) -> dict[str, int]:
                r = await http.get(f"{desc['base_url']}/_sim/calls")
                body = r.json()
                return {"total": body["total"], "writes": body["writes"],
                        "by_route": {f"{c['method']} {c['route']} {c['status']}": c["count"]
                                     for c in body["calls"]}}

            async def watch_boundaries(before: dict[str, float]) -> None:
                """(polls done, calls so far) each time an account finishes a poll: calls per
                poll between the first and the last completed poll of the window, so a poll
                still running when the window ends (Spike's take seconds) is not counted as
                calls without a poll. One control request per finished poll."""
                last = dict(before)
                while True:
                    for a, (_p, desc) in sims.items():
                        done = polls_done(a)
                        if done != last[a]:
                            last[a] = done
                            total = (await calls(desc))["total"]
                            boundaries.setdefault(a, []).append((done, total))
                    await anyio.sleep(0.05)

            boundaries: dict[str, list[tuple[float, int]]] = {}

            async def drive() -> None:
                t0 = time.monotonic()
                # Warm-up: the first full read and one delta poll of every account.
                while True:
                    cursors = await ledger.run(lambda tx: [(c.account, c.last_full_at)
                                                           for c in tx.cursors()])
                    full_done = {a for a, at in cursors if at is not None}
                    if full_done >= set(sims):
                        break
                    if time.monotonic() - t0 > limit_s:
                        raise RuntimeError(f"first full polls not done in {limit_s} s")
                    await anyio.sleep(0.5)
                out["first_full_s"] = round(time.monotonic() - t0, 1)
                await anyio.sleep(2 * poll_interval)
                for _vendor, (_p, desc) in sims.items():
                    await http.delete(f"{desc['base_url']}/_sim/calls")
                before = {a: polls_done(a) for a in sims}
                cpu0, wall0 = time.process_time(), time.monotonic()
                with anyio.move_on_after(window):
                    await watch_boundaries(before)
                cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
                polls = {a: polls_done(a) - before[a] for a in sims}
                out["calls"] = {a: await calls(desc) for a, (_p, desc) in sims.items()}
                out["polls"] = polls
                out["boundaries"] = boundaries
                out["cpu_s"], out["wall_s"] = cpu, wall
                out["rss_mb"] = rss_mb()
                out["peak_rss_mb"] = peak_rss_mb()
                out["records"] = (await ledger.run(lambda tx: tx.counts()))["records"]
                daemon.stop()

            async with anyio.create_task_group() as tg:
                tg.start_soon(daemon.run)
                tg.start_soon(drive)
            await http.aclose()
            out["daemon_rss_mb"], out["daemon_peak_rss_mb"] = daemon_rss(path, rss_window)
    finally:
        for proc, _desc in sims.values():
            proc.terminate()
        for proc, _desc in sims.values():
            proc.wait(timeout=10)

    per_account = {}
    for a in out["calls"]:
        n = max(1.0, out["polls"][a])
        per_poll = out["calls"][a]["total"] / n
        marks = out["boundaries"].get(a, [])
        if len(marks) >= 2 and marks[-1][0] > marks[0][0]:
            per_poll = (marks[-1][1] - marks[0][1]) / (marks[-1][0] - marks[0][0])
        per_account[a] = {"polls": int(out["polls"][a]),
                          "calls_per_poll": round(per_poll, 2),
                          "writes": out["calls"][a]["writes"],
                          "calls_by_route": out["calls"][a]["by_route"]}
    cycles = sum(out["polls"].values()) / max(1, len(out["polls"]))
    cpu_percent = 100 * out["cpu_s"] / out["wall_s"]
    cpu_per_cycle = out["cpu_s"] / max(1.0, cycles)
    return {
        "bench": "idle", "open_incidents": incidents, "backlog_age_days": age_days,
        "calls_per_poll": max(p["calls_per_poll"] for p in per_account.values()),
        "cpu_percent": round(cpu_percent, 1), "rss_mb": round(out["daemon_rss_mb"], 1),
        "peak_rss_mb": round(out["daemon_peak_rss_mb"], 1),
        "bench_rss_mb": round(out["rss_mb"], 1),
        "calls_per_poll_by_account": {a: p["calls_per_poll"] for a, p in per_account.items()},
        "cpu_s_per_poll_cycle": round(cpu_per_cycle, 3),
        "cpu_percent_at_default_interval": round(100 * cpu_per_cycle / DEFAULT_POLL, 2),
        "bench_peak_rss_mb": round(out["peak_rss_mb"], 1), "records": out["records"],
        "accounts": list(per_account), "per_account": per_account,
        "poll_interval_s": poll_interval, "scale": scale, "window_s": round(out["wall_s"], 1),
        "first_full_poll_s": out["first_full_s"], "machine": machine(),
    }


async def incidentio_today(incidents: int, scale: float, polls: int) -> dict[str, Any]:
    """incident.io delta polls when every open incident was updated today: what its
    day-granular ``updated_at[gte]`` filter costs (ceil(n/250) incident pages plus the
    escalation feed). In-process simulator, real engine and ledger; nothing changes."""
    with tempfile.TemporaryDirectory(prefix="syncd-bench-today-") as tmpdir:
        # A sync group needs two accounts; the PagerDuty one holds nothing and is not polled.
        world = World(Path(tmpdir), ["incidentio", "pagerduty"], scale=scale,
                      account_settings={"full_resync_interval": 86400.0})
        sim = world.sims["incidentio"]
        sim.seed_incidents(incidents)
        ledger, engine = world.open()
        try:
            t0 = time.monotonic()
            first = await engine.poll("incidentio", full=True)
            first_s = time.monotonic() - t0
            await engine.poll("incidentio", full=False)
            sim.calls.clear()
            changed = 0
            for _ in range(polls):
                result = await engine.poll("incidentio", full=False)
                if not result.ok:
                    raise RuntimeError(f"incident.io delta poll failed: {result.error}")
                changed += result.changed
            by_route = {f"{m} {r} {s}": n for (m, r, s), n in sorted(sim.calls.items())}
            total = sum(sim.calls.values())
        finally:
            await engine.aclose()
            ledger.dispose()
    return {"open_incidents": incidents, "updated_today": first.observed,
            "polls": polls, "calls_per_poll": round(total / max(1, polls), 2),
            "changed": changed, "calls_by_route": by_route,
            "first_full_poll_s": round(first_s, 1)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--incidents", type=int, default=10_000, help="open incidents per account")
    p.add_argument("--poll-interval", type=float, default=1.0)
    p.add_argument("--scale", type=float, default=None,
                   help="rate-limit and budget scale (default: 30 s / poll interval)")
    p.add_argument("--window", type=float, default=20.0, help="measured seconds")
    p.add_argument("--vendors", nargs="+", default=None, help="default: every vendor available")
    p.add_argument("--timeout", type=float, default=240.0)
    p.add_argument("--rss-window", type=float, default=20.0,
                   help="seconds syncd run runs on its own before its RSS is read")
    p.add_argument("--quick", action="store_true", help="1,000 incidents, 8 s window")
    p.add_argument("--backlog-age-days", type=float, default=2.0,
                   help="seed the backlog this many days in the past (0: all updated today)")
    p.add_argument("--today-polls", type=int, default=3,
                   help="delta polls of the incident.io everything-updated-today phase (0: skip)")
    return p


def main() -> None:
    args = parser().parse_args()
    quiet_logs()
    if args.quick:
        args.incidents, args.window = 1000, 8.0
    scale = args.scale or DEFAULT_POLL / args.poll_interval
    vendor_names = args.vendors or landed()
    figures = anyio.run(lambda: idle(args.incidents, args.poll_interval, scale, args.window,
                                     vendor_names, args.timeout, args.rss_window,
                                     args.backlog_age_days))
    if "incidentio" in vendor_names and args.today_polls > 0:
        figures["incidentio_updated_today"] = anyio.run(
            lambda: incidentio_today(args.incidents, scale, args.today_polls))
    emit(figures)


if __name__ == "__main__":
    main()
