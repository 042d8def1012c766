"""Propagation latency: people change incidents at random times, how long until every other
tool shows it?

The real daemon (APScheduler poll and dispatch jobs, poll mode, no webhooks) runs in-process
against in-process simulators, one per vendor. N incidents exist in every tool (the same alert
reached all of them, so syncd correlates them by dedup key). Then ``--changes`` times, at random
moments spread over ``--duration`` seconds, a "person" acknowledges or resolves one incident in
one random tool through the simulator's control surface (``POST /_sim/incidents/{id}/act``); a
``--severity-share`` of the changes are PagerDuty priority changes instead (they leave no log
entry at PagerDuty: the hard case for polling). A watcher samples every tool's canonical view
every ``--sample`` seconds and records when each other tool first shows the change. Latency =
shown - made, per (change, target tool); state and severity latency are reported apart.

Time compression: the poll interval is ``--poll-interval`` (1 s); the simulators enforce their
documented limits times ``--scale`` and syncd's budgets use the same scale, so a 1 s poll at
scale 30 is the default 30 s poll against the real limits. The figure that carries over is the
latency divided by the poll interval.

``python bench/propagation.py [--accounts 2 4] [--quick]``; last stdout line is the JSON.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    World,
    call_split,
    emit,
    landed,
    machine,
    percentile,
    quiet_logs,
)

from syncd.model import Capability, State
from syncd.vendors.base import Action

DEFAULT_POLL = 30.0  # the config default poll_interval, in documented seconds


async def scenario(n_accounts: int, *, changes: int, duration: float, poll_interval: float,
                   scale: float, sample: float, seed: int, settle_timeout: float = 60.0,
                   severity_share: float = 0.0) -> dict[str, Any]:
    """One run of the daemon; returns latency and call figures (efficiency uses the same)."""
    vendor_names = landed()[:n_accounts]
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="syncd-bench-") as tmpdir:
        world = World(Path(tmpdir), vendor_names, scale=scale, account_settings={
            "poll_interval": poll_interval, "full_resync_interval": 3600.0,
        })
        keys = [f"prop-{i}" for i in range(changes)]
        world.alert_everywhere(keys)
        ids = {a: {k: inc["id"] for k, inc in world.by_dedup(a).items()} for a in world.sims}
        daemon = world.daemon()
        ledger = daemon.ledger
        results: dict[str, Any] = {}

        async def linked() -> bool:
            counts = await ledger.run(lambda tx: tx.counts())
            depth = await ledger.run(lambda tx: tx.outbox_depth())
            return (counts["links"] >= changes and counts["records"] >= changes * len(world.sims)
                    and not depth.get("pending"))

        async def drive() -> None:
            # 1. Let the daemon link everything and settle the initial severity alignment.
            t0 = time.monotonic()
            while not await linked():
                if time.monotonic() - t0 > settle_timeout:
                    raise RuntimeError("daemon did not link the seeded incidents in time")
                await anyio.sleep(0.2)
            await anyio.sleep(2 * poll_interval)
            results["setup_s"] = round(time.monotonic() - t0, 2)
            world.reset_counters()

            # 2. Changes at random times; the watcher records when targets show them.
            plan = sorted(rng.uniform(0, duration) for _ in range(changes))
            made: list[tuple[float, str, str, State]] = []  # (t, key, source, wanted)
            shown: dict[tuple[int, str], float] = {}
            # PagerDuty priority changes (no log entry at PagerDuty): (t, key, wanted sevN).
            sev_made: list[tuple[float, str, str]] = []
            sev_shown: dict[tuple[int, str], float] = {}
            # Only tools syncd can set a severity in (Splunk On-Call's is read-only).
            sev_targets = [a for a, c in daemon.engine.clients.items() if a != "pagerduty"
                           and Capability.SEVERITY_WRITE in c.capabilities]
            done, finished = anyio.Event(), anyio.Event()

            async def watch() -> None:
                while True:
                    now = time.monotonic()
                    views = {a: world.by_dedup(a) for a in world.sims}
                    for idx, (_t, key, source, wanted) in enumerate(made):
                        for target in world.sims:
                            if target == source or (idx, target) in shown:
                                continue
                            inc = views[target].get(key)
                            if inc is not None and not State(inc["state"]) < wanted:
                                shown[(idx, target)] = now
                    for idx, (_t, key, wanted_sev) in enumerate(sev_made):
                        for target in sev_targets:
                            if (idx, target) in sev_shown:
                                continue
                            inc = views[target].get(key)
                            if inc is not None and inc.get("severity") == wanted_sev:
                                sev_shown[(idx, target)] = now
                    others = len(world.sims) - 1
                    if done.is_set() and len(shown) == len(made) * others \
                            and len(sev_shown) == len(sev_made) * len(sev_targets):
                        finished.set()
                        return
                    await anyio.sleep(sample)

            actions = Counter()
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                clients = {a: s.client() for a, s in world.sims.items()}
                start = time.monotonic()
                for at, key in zip(plan, rng.sample(keys, len(keys)), strict=True):
                    if duration > 0:
                        await anyio.sleep(max(0.0, start + at - time.monotonic()))
                    if "pagerduty" in world.sims and rng.random() < severity_share:
                        pd_id = ids["pagerduty"][key]
                        current = world.by_dedup("pagerduty")[key].get("severity")
                        wanted_sev = rng.choice([v for v in ("sev1", "sev2", "sev3")
                                                 if v != current])
                        if duration <= 0:  # a burst is at once: see below
                            world.sims["pagerduty"].act(pd_id, "severity", severity=wanted_sev)
                        else:
                            r = await clients["pagerduty"].post(
                                f"/_sim/incidents/{pd_id}/act",
                                json={"action": "severity", "severity": wanted_sev})
                            r.raise_for_status()
                        sev_made.append((time.monotonic(), key, wanted_sev))
                        actions[("pagerduty", "severity")] += 1
                        continue
                    source = rng.choice(list(world.sims))
                    action = rng.choice(["acknowledge", "resolve"])
                    if duration <= 0:
                        # A burst is at once (a bulk action in the UI): no request between
                        # two changes, so no poll can fall between them either.
                        world.sims[source].act(ids[source][key], action)
                    else:
                        r = await clients[source].post(
                            f"/_sim/incidents/{ids[source][key]}/act", json={"action": action})
                        r.raise_for_status()
                    made.append((time.monotonic(), key, source,
                                 State.ACKNOWLEDGED if action == "acknowledge"
                                 else State.RESOLVED))
                    actions[(source, action)] += 1
                done.set()
                with anyio.move_on_after(settle_timeout) as scope:
                    await finished.wait()
                results["timed_out"] = scope.cancelled_caught
                tg.cancel_scope.cancel()
                for c in clients.values():
                    await c.aclose()
            results["window_s"] = round(time.monotonic() - start, 2)
            latencies = [shown[(i, tgt)] - made[i][0] for i in range(len(made))
                         for tgt in world.sims if tgt != made[i][2] and (i, tgt) in shown]
            results["latencies"] = latencies
            results["missing"] = len(made) * (len(world.sims) - 1) - len(latencies)
            results["sev_latencies"] = [sev_shown[(i, tgt)] - sev_made[i][0]
                                        for i in range(len(sev_made)) for tgt in sev_targets
                                        if (i, tgt) in sev_shown]
            results["sev_missing"] = len(sev_made) * len(sev_targets) - len(
                results["sev_latencies"])
            results["sev_targets"] = sev_targets
            results["actions"] = actions
            results["calls"] = {a: call_split(s) for a, s in world.sims.items()}
            results["calls_by_route"] = {
                a: {f"{m} {r} {st}": n for (m, r, st), n in s.calls.items()}
                for a, s in world.sims.items()
            }
            daemon.stop()

        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.run)
            tg.start_soon(drive)
        clients = daemon.engine.clients  # closed, but their class data is what we need
        batch = {a: {act.value: n for act, n in c.batch_size.items()} for a, c in clients.items()}

    lat = results.pop("latencies")
    sev = results.pop("sev_latencies")
    actions: Counter[tuple[str, str]] = results.pop("actions")
    # Lower bound on writes: every change needs the same action in each other tool, and one
    # vendor call carries at most batch_size[action] records.
    lower = {}
    for target in vendor_names:
        for action in ("acknowledge", "resolve"):
            need = sum(n for (src, act), n in actions.items() if act == action and src != target)
            size = batch[target].get(Action(action).value, 1)
            lower[f"{target}:{action}"] = {"changes": need, "batch_size": size,
                                           "lower_bound": math.ceil(need / size)}
    return {
        "accounts": len(vendor_names), "vendors": vendor_names, "changes": changes,
        "latency_samples": len(lat), "missing": results["missing"],
        "timed_out": results["timed_out"],
        "p50_s": round(percentile(lat, 50), 3), "p95_s": round(percentile(lat, 95), 3),
        "p99_s": round(percentile(lat, 99), 3), "max_s": round(max(lat), 3) if lat else None,
        "severity": {  # PagerDuty priority changes, reported apart from state changes
            "changes": actions[("pagerduty", "severity")], "targets": results["sev_targets"],
            "samples": len(sev),
            "missing": results["sev_missing"],
            "p50_s": round(percentile(sev, 50), 3) if sev else None,
            "p95_s": round(percentile(sev, 95), 3) if sev else None,
            "max_s": round(max(sev), 3) if sev else None,
            "p50_over_interval": round(percentile(sev, 50) / poll_interval, 3) if sev else None,
            "p95_over_interval": round(percentile(sev, 95) / poll_interval, 3) if sev else None,
        },
        "poll_interval_s": poll_interval,
        "p50_over_interval": round(percentile(lat, 50) / poll_interval, 3),
        "p95_over_interval": round(percentile(lat, 95) / poll_interval, 3),
        "p99_over_interval": round(percentile(lat, 99) / poll_interval, 3),
        "scale": scale, "duration_s": duration, "sample_s": sample,
        "setup_s": results["setup_s"], "window_s": results["window_s"],
        "calls": results["calls"], "calls_by_route": results["calls_by_route"],
        "writes_lower_bound_by_target": lower,
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--accounts", type=int, nargs="+", default=[2, 4],
                   help="account counts to run (capped at the vendors available)")
    p.add_argument("--changes", type=int, default=200)
    p.add_argument("--duration", type=float, default=40.0,
                   help="seconds over which the changes are spread")
    p.add_argument("--poll-interval", type=float, default=1.0)
    p.add_argument("--scale", type=float, default=None,
                   help="rate-limit and budget scale (default: 30 s / poll interval)")
    p.add_argument("--sample", type=float, default=0.02, help="watcher sampling period")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--severity-share", type=float, default=0.25,
                   help="share of changes that are PagerDuty priority changes (reported apart)")
    p.add_argument("--quick", action="store_true", help="40 changes over 10 s")
    return p


def main() -> None:
    args = parser().parse_args()
    quiet_logs()
    if args.quick:
        args.changes, args.duration = 40, 10.0
    scale = args.scale or DEFAULT_POLL / args.poll_interval
    available = len(landed())
    counts = sorted({min(n, available) for n in args.accounts if n >= 2})
    runs = []
    for n in counts:
        run = anyio.run(lambda n=n: scenario(
            n, changes=args.changes, duration=args.duration, poll_interval=args.poll_interval,
            scale=scale, sample=args.sample, seed=args.seed,
            severity_share=args.severity_share))
        run.pop("calls_by_route")
        run.pop("writes_lower_bound_by_target")
        runs.append(run)
        print(f"# propagation {n} accounts: p50 {run['p50_s']} s, p99 {run['p99_s']} s",
              file=sys.stderr)
    main_run = runs[-1]
    keys = ("accounts", "p50_s", "p95_s", "p99_s", "poll_interval_s", "p99_over_interval",
            "p50_over_interval", "p95_over_interval", "missing")
    emit({"bench": "propagation", **{k: main_run[k] for k in keys},
          "state": {k: main_run[k] for k in ("p50_s", "p95_s", "p99_s", "p50_over_interval",
                                             "p95_over_interval", "missing")},
          "severity": main_run["severity"],
          "vendors_available": landed(), "runs": runs, "machine": machine()})


if __name__ == "__main__":
    main()
